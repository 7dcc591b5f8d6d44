/* libFuzzer harness for kvmuxd's input path: the bytes a client sends go
 * through the server's real connection code (decode -> session -> dispatch
 * -> store -> output queue -> fragment scheduler) via the in-memory
 * harness (src/server/harness.c), and the bytes the server answers come
 * back. No socket, no thread.
 *
 * Input: byte 0 is the control byte: bits 0..5 pick the read size the
 * input is cut into (0: one read; n: reads of 1 + n*n bytes, so the fuzzer
 * reaches frames split across reads), bit 6 prepends a valid v2 HELLO and
 * bit 7 a valid v1 HELLO (both: v1 first, and the v2 one is then a
 * protocol error), so mutations past the handshake are cheap to find. The
 * rest is the client's byte stream.
 *
 * Oracle, beyond "no crash, no leak, no UB": the server's output must be a
 * sequence of well-formed frames (kvmux_frame_decode accepts each one with
 * the largest frame the server can send), possibly cut at the end only
 * when the harness's output cap truncated it; and nothing but a HELLO_ACK
 * or ERROR may come first.
 *
 * A fresh server per input keeps runs independent (a crash reproduces from
 * its input alone). Not part of ctest: .ci/run and tests/fuzz/run_fuzz.sh
 * build it with clang -fsanitize=fuzzer,address,undefined. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "log.h"
#include "proto.h"
#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The vectors' "hello" / "hello_v2" (tests/vectors/frames.hex). */
static const uint8_t HELLO_V1[] = {
    0x6b, 0x01, 0x01, 0x00, 0, 0, 0, 0, 0x00, 0x02, 0x00, 0x03, 0, 0, 0, 0x1d,
    0x01, 0x01, 'c', 'l', 'i',
    0x00, 0x01, 0x00, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x04, 0x00,
    0x00, 0x03, 0x00, 0x00, 0x10, 0x00, 0x00, 0x04, 0x00, 0x10, 0x00, 0x00};
static const uint8_t HELLO_V2[] = {
    0x6b, 0x01, 0x01, 0x00, 0, 0, 0, 0, 0x00, 0x02, 0x00, 0x03, 0, 0, 0, 0x1d,
    0x01, 0x02, 'c', 'l', 'i',
    0x00, 0x01, 0x00, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x04, 0x00,
    0x00, 0x03, 0x00, 0x00, 0x10, 0x00, 0x00, 0x04, 0x00, 0x10, 0x00, 0x00};

static kvmux_server_config cfg;

/* Small limits so the fuzzer reaches them: frames of 64 KiB, values of
 * 256 KiB, 16 credits, small windows, and no timeouts that could depend on
 * wall-clock time within one run. */
static void setup(void) {
    kvmux_log_set_level(KVMUX_LOG_OFF);
    kvmux_server_config_init(&cfg);
    cfg.port = 0;
    cfg.store_shards = 1;
    cfg.max_frame = 64 * 1024;
    cfg.max_key = 256;
    cfg.max_value = 256 * 1024;
    cfg.max_value_v1 = 32 * 1024;
    cfg.max_outstanding = 16;
    cfg.max_output_buffer = 4 * 1024 * 1024;
    cfg.max_upload_buffer = 512 * 1024;
    cfg.initial_window = 16 * 1024;
    cfg.connection_window = 64 * 1024;
    cfg.fragment_size = 4 * 1024;
    cfg.max_wait_ms = 50;
    cfg.close_linger_ms = 0;
}

static void check_output(const uint8_t *p, size_t n, int truncated) {
    size_t off = 0;
    int first = 1;
    while (off < n) {
        kvmux_frame f;
        int r = kvmux_frame_decode(p + off, n - off, UINT32_MAX, &f);
        if (r == 0) {
            if (truncated) return;
            abort(); /* the server wrote half a frame */
        }
        if (r < 0) abort(); /* the server wrote a malformed frame */
        if (first && f.type != KVMUX_FRAME_HELLO_ACK && f.type != KVMUX_FRAME_ERROR) abort();
        first = 0;
        off += (size_t)r;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1) return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    size_t pre = ((ctl & 0x80) ? sizeof HELLO_V1 : 0) + ((ctl & 0x40) ? sizeof HELLO_V2 : 0);
    uint8_t *in = malloc(pre + size + 1);
    if (!in) return 0;
    size_t n = 0;
    if (ctl & 0x80) {
        memcpy(in, HELLO_V1, sizeof HELLO_V1);
        n += sizeof HELLO_V1;
    }
    if (ctl & 0x40) {
        memcpy(in + n, HELLO_V2, sizeof HELLO_V2);
        n += sizeof HELLO_V2;
    }
    if (size) memcpy(in + n, data, size);
    n += size;
    size_t bits = ctl & 0x3f;
    size_t chunk = bits ? 1 + bits * bits : 0;

    char err[256];
    kvmux_harness *h = kvmux__harness_new(&cfg, err, sizeof err);
    if (!h) abort(); /* the config above is valid: only OOM gets here */
    if (kvmux__harness_run(h, in, n, chunk) == 0) {
        size_t olen;
        int trunc;
        const uint8_t *out = kvmux__harness_output(h, &olen, &trunc);
        check_output(out, olen, trunc);
    }
    kvmux__harness_free(h);
    free(in);
    return 0;
}
