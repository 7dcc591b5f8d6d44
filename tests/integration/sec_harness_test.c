/* The in-memory server harness (src/server/harness.c) that the
 * fuzz_server_input fuzzer drives: the same connection code as a socket,
 * no socket. Checks that it really answers like the server: a v1 session
 * (HELLO_ACK, SET, GET, STATS), the same bytes cut into 1-byte reads,
 * garbage (ERROR BAD_MAGIC, nothing after it), a v2 fragmented upload, a
 * parked WAIT ended by the end of input (no leak under ASan), and a fresh
 * harness per run starting empty. Labelled unit: no network. */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "log.h"
#include "proto.h"
#include "testutil.h"

static size_t put(uint8_t *out, uint8_t ver, uint8_t type, uint8_t flags, uint32_t id,
                  uint8_t code, const void *ext, uint8_t elen, const char *key,
                  const void *val, uint32_t vlen, uint32_t total) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = ver;
    f.type = type;
    f.flags = flags;
    f.request_id = id;
    f.code = code;
    f.extras = ext;
    f.extras_len = elen;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)(key ? strlen(key) : 0);
    f.value = val;
    f.value_len = vlen;
    f.total_value_len = total;
    return kvmux_frame_encode(out, &f);
}

static size_t hello(uint8_t *out, uint8_t maxv) {
    uint8_t val[64];
    kvmux_settings st;
    kvmux_settings_default(&st);
    size_t n = kvmux_settings_encode(val, &st);
    uint8_t ext[2] = {1, maxv};
    return put(out, 1, KVMUX_FRAME_HELLO, 0, 0, 0, ext, 2, "h", val, (uint32_t)n, 0);
}

/* Decode the harness output into up to max frames; returns the count, or
 * -1 if the bytes are not whole well-formed frames. */
static int frames(kvmux_harness *h, kvmux_frame *fs, int max) {
    size_t len;
    int trunc;
    const uint8_t *p = kvmux__harness_output(h, &len, &trunc);
    size_t off = 0;
    int n = 0;
    while (off < len && n < max) {
        int r = kvmux_frame_decode(p + off, len - off, UINT32_MAX, &fs[n]);
        if (r <= 0) return -1;
        off += (size_t)r;
        n++;
    }
    return off == len ? n : -1;
}

int main(void) {
    kvmux_log_set_level(KVMUX_LOG_OFF);
    kvmux_server_config cfg;
    kvmux_server_config_init(&cfg);
    cfg.port = 0;
    cfg.store_shards = 1;
    char err[256];
    static uint8_t in[8192];
    kvmux_frame fs[16];
    uint8_t ttl[8] = {0};

    /* v1: HELLO, SET, GET, STATS. */
    size_t n = hello(in, 1);
    n += put(in + n, 1, KVMUX_FRAME_REQUEST, 0, 1, KVMUX_OP_SET, ttl, 8, "k", "val", 3, 0);
    n += put(in + n, 1, KVMUX_FRAME_REQUEST, 0, 2, KVMUX_OP_GET, NULL, 0, "k", NULL, 0, 0);
    n += put(in + n, 1, KVMUX_FRAME_REQUEST, 0, 3, KVMUX_OP_STATS, NULL, 0, "keys", NULL, 0, 0);
    for (size_t chunk = 0; chunk <= 1; chunk++) {
        kvmux_harness *h = kvmux__harness_new(&cfg, err, sizeof err);
        REQUIRE(h != NULL);
        CHECK_EQ(kvmux__harness_run(h, in, n, chunk), 0);
        int k = frames(h, fs, 16);
        CHECK_EQ(k, 4);
        if (k == 4) {
            CHECK_EQ(fs[0].type, KVMUX_FRAME_HELLO_ACK);
            CHECK(fs[1].request_id == 1 && fs[1].code == KVMUX_STATUS_OK);
            CHECK(fs[2].request_id == 2 && fs[2].code == KVMUX_STATUS_OK);
            CHECK(fs[2].value_len == 3 && memcmp(fs[2].value, "val", 3) == 0);
            CHECK(fs[3].request_id == 3 && fs[3].code == KVMUX_STATUS_OK);
            CHECK(fs[3].value_len == 7 && memcmp(fs[3].value, "keys:1\n", 7) == 0);
        }
        kvmux_server_stats st;
        kvmux_server_get_stats(kvmux__harness_server(h), &st);
        CHECK_EQ(st.connections_current, 0); /* torn down at end of input */
        CHECK_EQ(st.requests[KVMUX_OP_SET], 1);
        kvmux__harness_free(h);
    }

    /* Garbage: one ERROR, nothing after. */
    kvmux_harness *h = kvmux__harness_new(&cfg, err, sizeof err);
    REQUIRE(h != NULL);
    CHECK_EQ(kvmux__harness_run(h, (const uint8_t *)"GARBAGE GARBAGE!", 16, 0), 0);
    CHECK_EQ(frames(h, fs, 16), 1);
    CHECK(fs[0].type == KVMUX_FRAME_ERROR && fs[0].code == KVMUX_ERR_BAD_MAGIC);
    kvmux__harness_free(h);

    /* v2 fragmented SET of 10 bytes, GET it back; then a parked WAIT that
     * only the end of input ends. */
    n = hello(in, 2);
    uint8_t ext2[12] = {0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0}; /* total 10, ttl 0 */
    n += put(in + n, 2, KVMUX_FRAME_REQUEST, KVMUX_FLAG_MORE, 5, KVMUX_OP_SET, ext2 + 4, 8, "f",
             "0123", 4, 10);
    n += put(in + n, 2, KVMUX_FRAME_CONTINUATION, 0, 5, 0, NULL, 0, NULL, "456789", 6, 0);
    n += put(in + n, 2, KVMUX_FRAME_REQUEST, 0, 6, KVMUX_OP_GET, NULL, 0, "f", NULL, 0, 0);
    uint8_t wext[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x27, 0x10}; /* until "w" exists, 10 s */
    n += put(in + n, 2, KVMUX_FRAME_REQUEST, 0, 7, KVMUX_OP_WAIT, wext, 12, "w", NULL, 0, 0);
    h = kvmux__harness_new(&cfg, err, sizeof err);
    REQUIRE(h != NULL);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux__harness_run(h, in, n, 7), 0);
    CHECK(test_now_ms() - t0 < 2000); /* never waits for the WAIT */
    int k = frames(h, fs, 16);
    CHECK(k >= 3);
    if (k >= 3) {
        CHECK(fs[0].type == KVMUX_FRAME_HELLO_ACK && fs[0].code == 2);
        int set_ok = 0, get_ok = 0;
        for (int i = 1; i < k; i++) {
            if (fs[i].type != KVMUX_FRAME_RESPONSE) continue;
            if (fs[i].request_id == 5 && fs[i].code == KVMUX_STATUS_OK) set_ok = 1;
            if (fs[i].request_id == 6 && fs[i].code == KVMUX_STATUS_OK &&
                fs[i].value_len == 10 && memcmp(fs[i].value, "0123456789", 10) == 0)
                get_ok = 1;
            CHECK(fs[i].request_id != 7); /* the WAIT is never answered OK */
        }
        CHECK(set_ok && get_ok);
    }
    kvmux_server_stats st;
    kvmux_server_get_stats(kvmux__harness_server(h), &st);
    CHECK_EQ(st.waits_parked, 1);
    CHECK_EQ(st.connections_current, 0);
    kvmux__harness_free(h);

    /* A fresh harness starts with an empty store. */
    n = hello(in, 1);
    n += put(in + n, 1, KVMUX_FRAME_REQUEST, 0, 1, KVMUX_OP_GET, NULL, 0, "k", NULL, 0, 0);
    h = kvmux__harness_new(&cfg, err, sizeof err);
    REQUIRE(h != NULL);
    CHECK_EQ(kvmux__harness_run(h, in, n, 0), 0);
    CHECK_EQ(frames(h, fs, 16), 2);
    CHECK_EQ(fs[1].code, KVMUX_STATUS_NOT_FOUND);
    kvmux__harness_free(h);
    return test_report();
}
