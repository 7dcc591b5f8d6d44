/* Helpers shared by the protocol unit tests (frame_v2_test, session_test,
 * session_v2_test): the byte vectors of tests/vectors/frames.hex by name,
 * and a bodyless frame for state checks. Sans-IO apart from reading the
 * vector file; failures stop the test (REQUIRE). */
#ifndef KVMUX_PROTO_TESTUTIL_H
#define KVMUX_PROTO_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Bytes of the longest vector any of these tests loads. */
#define PROTO_TEST_MAX_VEC 256

/* Load the vector called name (a line "name hex..." of
 * KVMUX_VECTORS_DIR/frames.hex; only hex digits after the name count)
 * into out, which holds PROTO_TEST_MAX_VEC bytes. Returns 1 with *len set,
 * or 0 if there is no such line (*len untouched). A missing file or a
 * vector over PROTO_TEST_MAX_VEC bytes fails the test (REQUIRE). */
int proto_test_load_vec(const char *name, uint8_t *out, size_t *len);

/* A frame with no body: type, version, flags and request_id set, every
 * other field zero. */
kvmux_frame proto_test_frame(uint8_t type, uint8_t version, uint8_t flags, uint32_t id);

#endif
