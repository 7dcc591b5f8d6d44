/* Scaffolding shared by the cluster-mode tests (cluster_server_test,
 * cluster_client_test, mapgroup_test): a map's wire bytes from its text
 * form, one CLUSTER request through libkvmux, and one request on a fresh
 * raw connection. A setup failure (no connection, a bad map text, a frame
 * that cannot be read) ends the test through REQUIRE; what the server
 * answers is returned for the test to check. */
#ifndef KVMUX_CLUSTER_UTIL_H
#define KVMUX_CLUSTER_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Parse the text form of a map (docs/CLUSTER.md) and encode it into
 * out[0..cap). Returns the encoded length (> 0). */
size_t cluster_map_bytes(const char *text, uint8_t *out, size_t cap);

/* CLUSTER sub with value val[0..vlen) on a new libkvmux connection to
 * 127.0.0.1:port (5 s deadline). Returns kvmux_call's status; the reply's
 * value is copied to out when it fits in cap (out may be NULL with cap 0),
 * its length in *outlen (0 when not copied). */
int cluster_call(uint16_t port, const char *sub, const void *val, size_t vlen, uint8_t *out,
                 size_t cap, size_t *outlen);
/* cluster_call to host (an IPv4 literal) instead of 127.0.0.1: a member
 * in a network namespace of its own (tests/replica/tools/netns.sh). */
int cluster_call_at(const char *host, uint16_t port, const char *sub, const void *val,
                    size_t vlen, uint8_t *out, size_t cap, size_t *outlen);

/* A key "k<i>" (NUL-terminated in key[0..cap)) whose slot is in [lo, hi]:
 * the first such with i >= *from; *from is then i + 1, so calls in a row
 * give distinct keys. Ends the test if none is found below i = 10^7. */
void cluster_key_in(int lo, int hi, int *from, char *key, size_t cap);

/* One request (op, key, value[0..vl), no extras) on a new raw connection
 * of protocol version v to 127.0.0.1:port. Returns the response's status
 * code; its value, cut to cap - 1 bytes and NUL-terminated, in val (cap
 * >= 1), the copied length in *vlen. Responses up to 64 KiB. */
int cluster_raw_call(uint16_t port, int v, uint8_t op, const char *key, const void *value,
                     uint32_t vl, uint8_t *val, size_t cap, size_t *vlen);

#endif
