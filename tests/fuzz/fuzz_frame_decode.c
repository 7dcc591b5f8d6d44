/* libFuzzer harness for the kvmux frame decoder (src/proto/frame.c).
 *
 * Feeds the input to kvmux_frame_decode under several max_frame limits and
 * checks the decoder's contract rather than just "does not crash":
 *   - the result is 0, a negative -KVMUX_ERR_* in range, or a length in
 *     [HDR_LEN, min(len, max_frame)];
 *   - every proper prefix of a decoded frame is "need more" (0), and an
 *     error on the full input is reported identically for any longer input
 *     (monotonic: once wrong, always wrong);
 *   - a decoded frame re-encodes to exactly the bytes it was decoded from
 *     (v2 prefixes included: decode strips them into deadline_ms /
 *     total_value_len, encode writes them back);
 *   - v2 rules hold for anything decoded: the type and flags are allowed
 *     for the header version, a first fragment is shorter than its total,
 *     a WINDOW_UPDATE increment is in [1, 2^31-1], a CONTINUATION carries
 *     at least one byte, the v2 shapes (CANCEL, GOAWAY) are respected, and
 *     fields a frame does not carry are 0.
 * The input is copied into a heap buffer of exactly len bytes, so ASan
 * catches any read past the end. Not part of ctest; build with
 *   clang -fsanitize=fuzzer,address,undefined -Isrc/proto \
 *         tests/fuzz/fuzz_frame_decode.c src/proto/[all .c files]
 * and seed it with tests/fuzz/make_corpus.sh (the vectors, one per file).
 * The stateful v2 harness (fragments, windows, CANCEL, GOAWAY over a
 * session) is fuzz_stream_v2.c.
 */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Properties every decoded frame must have (v1 and v2). */
static void check_v2_rules(const kvmux_frame *f) {
    if (!kvmux_version_allows_type(f->version, f->type)) abort();
    if (f->flags & ~kvmux_version_allowed_flags(f->version, f->type)) abort();
    if (f->version < KVMUX_PROTO_V2 && f->flags != 0) abort();
    if (kvmux_frame_has_total(f)) {
        if (f->total_value_len <= f->value_len) abort();
    } else if (f->total_value_len != 0) {
        abort();
    }
    if (!kvmux_frame_has_deadline(f) && f->deadline_ms != 0) abort();
    switch (f->type) {
    case KVMUX_FRAME_WINDOW_UPDATE: {
        if (f->extras_len != 4 || f->key_len != 0 || f->value_len != 0) abort();
        uint32_t inc = kvmux_window_update_increment(f);
        if (inc == 0 || inc > KVMUX_MAX_WINDOW) abort();
        break;
    }
    case KVMUX_FRAME_CONTINUATION:
        if (f->value_len == 0 || f->extras_len != 0 || f->key_len != 0) abort();
        break;
    case KVMUX_FRAME_CANCEL:
        if (f->extras_len || f->key_len || f->value_len) abort();
        break;
    case KVMUX_FRAME_GOAWAY:
        if (f->extras_len != 8 || f->key_len || f->value_len > KVMUX_MAX_ERROR_MSG) abort();
        break;
    default:
        break;
    }
    /* Prefixes plus op extras fit the wire extras_len field limit. */
    if (kvmux_frame_prefix_len(f) + f->extras_len > KVMUX_MAX_EXTRAS) abort();
}

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
    check_v2_rules(&f);
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
