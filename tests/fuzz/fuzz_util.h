/* What the decoder harnesses share (header-only: each harness is built as
 * one program by run_fuzz.sh). The contract every decoder harness checks is
 * the same: run on an exact-size heap copy of the input (so ASan catches a
 * read one byte past the end), an accepted input re-encodes to exactly the
 * same bytes (only canonical encodings are accepted), and a refusal names
 * its reason. */
#ifndef KVMUX_FUZZ_UTIL_H
#define KVMUX_FUZZ_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A malloc'ed copy of exactly len bytes (1 byte when len is 0, so that
 * malloc's result is never NULL for a valid size); NULL when out of memory.
 * The caller frees it. */
static inline uint8_t *fuzz_exact_copy(const uint8_t *data, size_t len) {
    uint8_t *p = malloc(len ? len : 1);
    if (p && len) memcpy(p, data, len);
    return p;
}

/* Aborts (a finding) unless the re-encoding out[0..n) equals the accepted
 * input in[0..len). */
static inline void fuzz_same_bytes(const uint8_t *out, size_t n, const uint8_t *in, size_t len) {
    if (n != len || memcmp(out, in, len) != 0) abort();
}

/* Aborts unless a decoder's refusal filled in its reason. */
static inline void fuzz_refusal_has_reason(const char *err) {
    if (err[0] == '\0') abort();
}

#endif
