/* libFuzzer harness for the slot map decoder and the redirect values
 * (src/cluster, docs/PROTOCOL.md 18.2 and 18.3).
 *
 * Checks the contract, not just "does not crash":
 *   - kvmux_map_decode accepts only canonical encodings: an accepted input
 *     passes kvmux_map_check and re-encodes to exactly the same bytes;
 *   - an accepted map's text form parses back to the same map;
 *   - a refusal always comes with a reason;
 *   - the WRONG_SHARD / TRY_AGAIN decoders never read past the input and
 *     what they accept re-encodes to the same bytes;
 *   - the text parser, on the same bytes as text, either gives a map that
 *     passes kvmux_map_check (when it has an epoch) or "line N: ...".
 * The input is copied into a heap buffer of exactly len bytes, so ASan
 * catches any read past the end. Not part of ctest (cluster_test runs a
 * bounded mutation loop in every build); build with
 *   clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
 *         -Isrc/proto -Isrc/cluster tests/fuzz/fuzz_map_decode.c \
 *         src/cluster/[all .c files] src/proto/[all .c files]
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "fuzz_util.h"

static kvmux_map m, back;
static uint8_t out[KVMUX_MAP_WIRE_MAX];
static char text[1 << 20];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
    uint8_t *p = fuzz_exact_copy(data, len);
    if (!p) return 0;
    char err[256];
    err[0] = '\0';
    if (kvmux_map_decode(&m, p, len, err, sizeof err) == 0) {
        if (kvmux_map_check(&m, NULL, 0) != 0) abort();
        size_t n = kvmux_map_encode(&m, out, sizeof out);
        fuzz_same_bytes(out, n, p, len);
        size_t tl = kvmux_map_format_text(&m, text, sizeof text);
        if (tl >= sizeof text) abort();
        if (kvmux_map_parse_text(&back, text, err, sizeof err) != 0) abort();
        if (memcmp(&m, &back, sizeof m) != 0) abort();
    } else {
        fuzz_refusal_has_reason(err);
    }
    kvmux_redirect r;
    if (kvmux_redirect_decode(&r, p, len) == 0) {
        size_t n = kvmux_redirect_encode(&r, out, sizeof out);
        fuzz_same_bytes(out, n, p, len);
    }
    uint16_t slot;
    uint64_t epoch;
    if (kvmux_try_again_decode(p, len, &slot, &epoch) == 0) {
        if (kvmux_try_again_encode(slot, epoch, out, sizeof out) != 10 || memcmp(out, p, 10))
            abort();
    }
    /* The text parser on the same bytes, NUL-terminated at the first NUL. */
    char *t = malloc(len + 1);
    if (t) {
        memcpy(t, data, len);
        t[len] = '\0';
        if (kvmux_map_parse_text(&back, t, err, sizeof err) == 0) {
            if (back.epoch != 0 && kvmux_map_check(&back, NULL, 0) != 0) abort();
        } else if (strncmp(err, "line ", 5) != 0) {
            abort();
        }
        free(t);
    }
    free(p);
    return 0;
}
