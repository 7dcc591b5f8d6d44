/* A peer that sends requests but does not read the responses.
 *
 * Guide lesson 6 ("backpressure bypassed until out of memory"): kvmuxd must
 * bound what it buffers for one connection. A raw client asks for a large
 * value hundreds of times (far more response bytes than the server's
 * --max-output-buffer) without reading:
 *   1. the server stops reading that connection once its output queue is
 *      large (TCP then slows the client down), so its memory stays bounded
 *      (RSS growth measured from /proc) while another client is served
 *      normally; when the raw client finally reads, every response arrives,
 *      intact and exactly once;
 *   2. responses that do not come from reading -- WAITs released all at once
 *      by one SET -- can still overshoot the cap: then the server drops the
 *      slow reader (closes the connection) rather than buffer without bound,
 *      and everyone else carries on.
 *
 * What it is not: a throughput test. Sizes are chosen so a server that
 * buffered everything would need hundreds of MiB.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

#define VALUE_LEN (200u * 1024)
#define NGETS 600               /* 600 x 200 KiB = 120 MiB of responses */
#define NWAITS 100              /* 100 x 200 KiB = 20 MiB released at once */
#define OUTPUT_CAP "1M"
#define RSS_GROWTH_LIMIT_KB (48 * 1024)
#define CALL_TIMEOUT_MS 10000

static test_server g_srv;
static kvmux_client *g_c;

/* Resident set size of pid in KiB, or -1. */
static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* HELLO offering only protocol version 1, then the HELLO_ACK. Pinned to
 * v1 on purpose: v2 adds flow-control windows, under which a client that
 * never grants window is simply not sent more -- a different test.
 * Returns 0 or -1. */
static int raw_hello_v1(int fd) {
    kvmux_session s;
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, NULL);
    uint8_t out[KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 64];
    size_t n = kvmux_session_encode_hello(&s, out, "slow_reader_test");
    out[KVMUX_FRAME_HDR_LEN] = 1; /* extras: [min_version][max_version] */
    out[KVMUX_FRAME_HDR_LEN + 1] = 1;
    if (test_write_all(fd, out, n) != 0) return -1;
    uint8_t in[4096];
    kvmux_frame f;
    if (test_read_frame(fd, in, sizeof in, &f) <= 0) return -1;
    return f.type == KVMUX_FRAME_HELLO_ACK && f.code == 1 ? 0 : -1;
}

/* Encode a v1 REQUEST (extras may be NULL when extras_len is 0). */
static size_t enc_req(uint8_t *out, uint32_t rid, uint8_t op, const uint8_t *extras,
                      uint8_t extras_len, const char *key) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = 1;
    f.type = KVMUX_FRAME_REQUEST;
    f.request_id = rid;
    f.code = op;
    f.extras = extras;
    f.extras_len = extras_len;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)strlen(key);
    return kvmux_frame_encode(out, &f);
}

/* A buffered frame reader (test_read_frame reads one byte per recv, far
 * too slow for 120 MiB). Frames returned point into buf and stay valid
 * until the next call. */
typedef struct reader {
    uint8_t *buf;
    size_t cap, len, off;
} reader;

/* Next frame from fd into *f. Returns its length, or -1 on EOF, error,
 * timeout (the socket's SO_RCVTIMEO) or a protocol error. */
static int read_frame(int fd, reader *r, kvmux_frame *f) {
    for (;;) {
        int n = kvmux_frame_decode(r->buf + r->off, r->len - r->off, (uint32_t)r->cap, f);
        if (n > 0) {
            r->off += (size_t)n;
            return n;
        }
        if (n < 0) return -1;
        if (r->off > 0) {
            memmove(r->buf, r->buf + r->off, r->len - r->off);
            r->len -= r->off;
            r->off = 0;
        }
        if (r->len == r->cap) return -1;
        ssize_t got = recv(fd, r->buf + r->len, r->cap - r->len, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        r->len += (size_t)got;
    }
}

/* The good client is served with normal latency; returns the round trip. */
static int64_t good_round_trip(void) {
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_set(g_c, "sr:small", 8, "x", 1, 0, NULL, CALL_TIMEOUT_MS), 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(g_c, "sr:small", 8, &v, CALL_TIMEOUT_MS), 0);
    kvmux_value_free(v);
    return test_now_ms() - t0;
}

/* A recognisable byte pattern, different per seed. */
static void fill_pattern(uint8_t *p, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 7 + seed);
}

/* Case 1: NGETS GETs of a VALUE_LEN value, nothing read for a while. */
static void test_paused_reader(void) {
    uint8_t *val = malloc(VALUE_LEN);
    REQUIRE(val);
    fill_pattern(val, VALUE_LEN, 1);
    CHECK_EQ(kvmux_set(g_c, "sr:big", 6, val, VALUE_LEN, 0, NULL, CALL_TIMEOUT_MS), 0);

    int fd = test_connect_raw(g_srv.port, 5000);
    REQUIRE(fd >= 0);
    REQUIRE(raw_hello_v1(fd) == 0);
    long rss0 = rss_kb(g_srv.pid);

    /* All requests fit in the socket buffers (~30 bytes each), so this
     * write does not block even though the server stops reading. */
    uint8_t *req = malloc((size_t)NGETS * 32);
    REQUIRE(req);
    size_t n = 0;
    for (uint32_t i = 1; i <= NGETS; i++) n += enc_req(req + n, i, KVMUX_OP_GET, NULL, 0, "sr:big");
    CHECK_EQ(test_write_all(fd, req, n), 0);
    free(req);

    /* Give the server time to do its worst, checking on it meanwhile. */
    long rss_max = rss0;
    int64_t worst_rt = 0;
    for (int i = 0; i < 10; i++) {
        test_sleep_ms(50);
        long r = rss_kb(g_srv.pid);
        if (r > rss_max) rss_max = r;
        int64_t rt = good_round_trip();
        if (rt > worst_rt) worst_rt = rt;
    }
    printf("paused reader: server RSS %ld -> max %ld KiB while %u KiB of responses were owed; "
           "other client's worst round trip %lld ms\n", rss0, rss_max,
           (unsigned)((uint64_t)NGETS * VALUE_LEN / 1024), (long long)worst_rt);
    CHECK(rss0 > 0);
    CHECK(rss_max - rss0 < RSS_GROWTH_LIMIT_KB);
    CHECK(worst_rt < 1000);

    /* Now read: every response, exactly once, intact. */
    reader rd = {malloc(2 * (VALUE_LEN + 1024)), 2 * (VALUE_LEN + 1024), 0, 0};
    REQUIRE(rd.buf);
    static uint8_t seen[NGETS + 1];
    int ok = 0, bad = 0;
    for (int i = 0; i < NGETS; i++) {
        kvmux_frame f;
        if (read_frame(fd, &rd, &f) <= 0) {
            fprintf(stderr, "paused reader: stream ended after %d responses\n", i);
            bad++;
            break;
        }
        int good = f.type == KVMUX_FRAME_RESPONSE && f.code == KVMUX_STATUS_OK &&
                   f.request_id >= 1 && f.request_id <= NGETS && !seen[f.request_id] &&
                   f.value_len == VALUE_LEN && memcmp(f.value, val, VALUE_LEN) == 0;
        if (good) {
            seen[f.request_id] = 1;
            ok++;
        } else {
            bad++;
        }
    }
    CHECK_EQ(ok, NGETS);
    CHECK_EQ(bad, 0);
    /* And the connection is still in business. */
    uint8_t small[64];
    n = enc_req(small, 9999, KVMUX_OP_GET, NULL, 0, "sr:small");
    CHECK_EQ(test_write_all(fd, small, n), 0);
    kvmux_frame f;
    CHECK(read_frame(fd, &rd, &f) > 0);
    CHECK(f.type == KVMUX_FRAME_RESPONSE && f.request_id == 9999 && f.code == KVMUX_STATUS_OK);
    close(fd);
    free(rd.buf);
    free(val);
}

/* Case 2: NWAITS parked WAITs released by one SET of a VALUE_LEN value
 * overshoot the output cap at once: the slow reader is dropped. */
static void test_dropped_reader(void) {
    int fd = test_connect_raw(g_srv.port, 5000);
    REQUIRE(fd >= 0);
    REQUIRE(raw_hello_v1(fd) == 0);
    uint8_t req[NWAITS * 48];
    size_t n = 0;
    uint8_t ex[12];
    kvmux_store_u64be(ex, 0); /* version 0: until the key exists */
    kvmux_store_u32be(ex + 8, 60000);
    for (uint32_t i = 1; i <= NWAITS; i++) n += enc_req(req + n, i, KVMUX_OP_WAIT, ex, 12, "sr:w");
    CHECK_EQ(test_write_all(fd, req, n), 0);
    test_sleep_ms(200); /* let them park */

    uint8_t *val = malloc(VALUE_LEN);
    REQUIRE(val);
    fill_pattern(val, VALUE_LEN, 2);
    long rss0 = rss_kb(g_srv.pid);
    CHECK_EQ(kvmux_set(g_c, "sr:w", 4, val, VALUE_LEN, 0, NULL, CALL_TIMEOUT_MS), 0);
    free(val);
    test_sleep_ms(200);
    long rss1 = rss_kb(g_srv.pid);

    /* Drain what was sent before the drop; then EOF (or a reset). */
    static uint8_t junk[65536];
    size_t got = 0;
    int closed = 0;
    int64_t deadline = test_now_ms() + 5000;
    while (!closed && test_now_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = recv(fd, junk, sizeof junk, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0 || (errno != EAGAIN && errno != EINTR))
            closed = 1;
    }
    printf("released WAITs: %zu of %u KiB arrived before the server dropped the slow reader "
           "(closed %d); RSS %ld -> %ld KiB\n", got / 1024,
           (unsigned)((uint64_t)NWAITS * VALUE_LEN / 1024), closed, rss0, rss1);
    CHECK(closed);
    CHECK(got < (size_t)NWAITS * VALUE_LEN);
    close(fd);
    CHECK(good_round_trip() < 1000);
}

/* One server with a 1 MiB output cap and 200 KiB values; both cases. */
int main(void) {
    const char *const args[] = {"--max-frame", "256K", "--max-value", "200K",
                                "--max-output-buffer", OUTPUT_CAP, NULL};
    REQUIRE(test_server_start(&g_srv, args) == 0);
    REQUIRE(kvmux_connect(&g_c, "127.0.0.1", g_srv.port, NULL) == 0);

    test_paused_reader();
    test_dropped_reader();

    CHECK_EQ(kvmux_connection_error(g_c, NULL, 0), 0);
    kvmux_close(g_c);
    CHECK_EQ(test_server_stop(&g_srv, 10000), 0);
    return test_report();
}
