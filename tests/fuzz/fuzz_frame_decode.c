/* libFuzzer harness for the kvmux frame decoder (src/proto/frame.c).
 *
 * Feeds the input to kvmux_frame_decode under several max_frame limits and
 * checks the decoder's contract rather than just "does not crash":
 *   - the result is 0, a negative -KVMUX_ERR_* in range, or a length in
 *     [HDR_LEN, min(len, max_frame)];
 *   - every proper prefix of a decoded frame is "need more" (0), and an
 *     error on the full input is reported identically for any longer input
 *     (monotonic: once wrong, always wrong);
 *   - a decoded frame re-encodes to exactly the bytes it was decoded from.
 * The input is copied into a heap buffer of exactly len bytes, so ASan
 * catches any read past the end. Not part of ctest; build with
 *   clang -fsanitize=fuzzer,address,undefined -Isrc/proto \
 *         tests/fuzz/fuzz_frame_decode.c src/proto/[all .c files]
 */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_one(const uint8_t *buf, size_t len, uint32_t max_frame) {
    kvmux_frame f;
    int r = kvmux_frame_decode(buf, len, max_frame, &f);
    if (r < 0) {
        if (-r < 1 || -r > KVMUX_ERR_MAX) abort();
        return;
    }
    if (r == 0) return;
    if ((size_t)r < KVMUX_FRAME_HDR_LEN || (size_t)r > len || (uint32_t)r > max_frame)
        abort();
    if (kvmux_frame_size(&f) != (size_t)r) abort();
    /* Round trip: the encoder must reproduce the input bytes exactly. */
    uint8_t *enc = malloc((size_t)r);
    if (!enc) return;
    if (kvmux_frame_encode(enc, &f) != (size_t)r || memcmp(enc, buf, (size_t)r) != 0)
        abort();
    free(enc);
    /* The first bytes of a frame never decode on their own. A few prefix
     * lengths keep the harness fast on large inputs. */
    size_t probes[] = {0, 1, 2, 3, 4, 15, (size_t)r / 2, (size_t)r - 1};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        kvmux_frame g;
        if (probes[i] < (size_t)r && kvmux_frame_decode(buf, probes[i], max_frame, &g) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Exact-size copy: libFuzzer's own buffer is exact too, but be explicit. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    static const uint32_t limits[] = {0, KVMUX_FRAME_HDR_LEN, 64, KVMUX_MIN_FRAME,
                                      KVMUX_DEFAULT_MAX_FRAME, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
        check_one(buf, size, limits[i]);
    /* Errors are sticky under more input: if a prefix is an error, the full
     * input reports the same error. */
    kvmux_frame f;
    for (size_t k = 1; k <= size && k <= KVMUX_FRAME_HDR_LEN; k++) {
        int rk = kvmux_frame_decode(buf, k, KVMUX_DEFAULT_MAX_FRAME, &f);
        if (rk < 0) {
            if (kvmux_frame_decode(buf, size, KVMUX_DEFAULT_MAX_FRAME, &f) != rk) abort();
            break;
        }
    }
    free(buf);
    return 0;
}
