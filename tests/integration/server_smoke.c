/* Smoke test of kvmuxd over raw sockets, driving the wire protocol by hand
 * (so it does not depend on the client library): handshake; GET / SET /
 * DEL / INCR / CAS / WAIT round trips; a WAIT answered after a GET sent
 * later (out of order); WAIT timeout and expiry; a WAIT fired from another
 * loop thread; PING; BUSY beyond the credits; request-level errors that
 * keep the connection; connection-level errors that close it; handshake
 * timeout; connection limit; pipelining; big values; SIGTERM with a parked
 * WAIT (SHUTTING_DOWN, exit 0); bad options, v2 ones included (exit 2).
 * (The v2 protocol has its own tests: server_v2_*.c.) */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "testutil.h"

#define BUF (2u * 1024 * 1024 + 64)
static uint8_t rbuf[BUF];

static int send_frame(int fd, uint8_t type, uint32_t id, uint8_t code, const void *extras,
                      uint8_t elen, const void *key, uint16_t klen, const void *val,
                      uint32_t vlen) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = 1;
    f.type = type;
    f.request_id = id;
    f.code = code;
    f.extras = extras;
    f.extras_len = elen;
    f.key = key;
    f.key_len = klen;
    f.value = val;
    f.value_len = vlen;
    size_t n = kvmux_frame_size(&f);
    uint8_t *buf = malloc(n);
    kvmux_frame_encode(buf, &f);
    int rc = test_write_all(fd, buf, n);
    free(buf);
    return rc;
}

static int req(int fd, uint32_t id, uint8_t op, const void *extras, uint8_t elen,
               const char *key, const void *val, uint32_t vlen) {
    return send_frame(fd, KVMUX_FRAME_REQUEST, id, op, extras, elen, key,
                      (uint16_t)(key ? strlen(key) : 0), val, vlen);
}

static int get(int fd, uint32_t id, const char *key) {
    return req(fd, id, KVMUX_OP_GET, NULL, 0, key, NULL, 0);
}
static int set(int fd, uint32_t id, const char *key, const char *val, uint64_t ttl) {
    uint8_t e[8];
    kvmux_store_u64be(e, ttl);
    return req(fd, id, KVMUX_OP_SET, e, 8, key, val, (uint32_t)strlen(val));
}
static int wait_req(int fd, uint32_t id, const char *key, uint64_t version, uint32_t ms) {
    uint8_t e[12];
    kvmux_store_u64be(e, version);
    kvmux_store_u32be(e + 8, ms);
    return req(fd, id, KVMUX_OP_WAIT, e, 12, key, NULL, 0);
}

/* Read exactly n bytes (large reads: test_read_frame goes byte by byte,
 * too slow for tens of MiB). Returns 0, or -1 on EOF/error/timeout. */
static int read_exact(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Read one frame into rbuf. Returns its length, or -1 (EOF, timeout, or
 * undecodable). */
static int read_frame_fast(int fd, kvmux_frame *f) {
    if (read_exact(fd, rbuf, KVMUX_FRAME_HDR_LEN) != 0) return -1;
    size_t body = kvmux_load_u32be(rbuf + 12);
    if (body > BUF - KVMUX_FRAME_HDR_LEN) return -1;
    if (read_exact(fd, rbuf + KVMUX_FRAME_HDR_LEN, body) != 0) return -1;
    int r = kvmux_frame_decode(rbuf, KVMUX_FRAME_HDR_LEN + body, BUF, f);
    return r > 0 ? r : -1;
}

/* Read one frame; REQUIRE it is there. */
static kvmux_frame rd(int fd) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    int r = read_frame_fast(fd, &f);
    if (r <= 0) fprintf(stderr, "expected a frame, got %d\n", r);
    REQUIRE(r > 0);
    return f;
}

static uint64_t ext_u64(const kvmux_frame *f, size_t off) {
    return f->extras_len >= off + 8 ? kvmux_load_u64be(f->extras + off) : 0;
}

static int value_is(const kvmux_frame *f, const char *s) {
    return f->value_len == strlen(s) && memcmp(f->value, s, f->value_len) == 0;
}

static int connect_open(uint16_t port) {
    int fd = test_connect_raw(port, 5000);
    REQUIRE(fd >= 0);
    REQUIRE(test_raw_handshake(fd) == 0);
    return fd;
}

static void test_basic_ops(uint16_t port) {
    int fd = connect_open(port);
    kvmux_frame f;

    REQUIRE(get(fd, 1, "missing") == 0);
    f = rd(fd);
    CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
    CHECK_EQ(f.request_id, 1);
    CHECK_EQ(f.code, KVMUX_STATUS_NOT_FOUND);

    REQUIRE(set(fd, 2, "k", "hello", 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK_EQ(f.extras_len, 8);
    uint64_t v1 = ext_u64(&f, 0);
    CHECK(v1 > 0);

    REQUIRE(get(fd, 3, "k") == 0);
    f = rd(fd);
    CHECK_EQ(f.request_id, 3);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK_EQ(ext_u64(&f, 0), v1);
    CHECK(value_is(&f, "hello"));

    /* INCR: missing key starts at 0; non-integer; overflow. */
    uint8_t e[16];
    kvmux_store_u64be(e, (uint64_t)-5);
    REQUIRE(req(fd, 4, KVMUX_OP_INCR, e, 8, "ctr", NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK_EQ(f.extras_len, 16);
    CHECK_EQ((int64_t)ext_u64(&f, 0), -5);
    CHECK(ext_u64(&f, 8) > v1);
    REQUIRE(get(fd, 5, "ctr") == 0);
    f = rd(fd);
    CHECK(value_is(&f, "-5"));
    REQUIRE(req(fd, 6, KVMUX_OP_INCR, e, 8, "k", NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_NOT_INTEGER);
    REQUIRE(set(fd, 7, "big", "9223372036854775807", 0) == 0);
    rd(fd);
    kvmux_store_u64be(e, 1);
    REQUIRE(req(fd, 8, KVMUX_OP_INCR, e, 8, "big", NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OVERFLOW);

    /* CAS: create-only, mismatch reports current, match updates. */
    kvmux_store_u64be(e, 0);
    kvmux_store_u64be(e + 8, 0);
    REQUIRE(req(fd, 9, KVMUX_OP_CAS, e, 16, "k", "x", 1) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(ext_u64(&f, 0), v1);
    kvmux_store_u64be(e, 12345678);
    REQUIRE(req(fd, 10, KVMUX_OP_CAS, e, 16, "nokey", "x", 1) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_NOT_FOUND);
    kvmux_store_u64be(e, v1);
    REQUIRE(req(fd, 11, KVMUX_OP_CAS, e, 16, "k", "new", 3) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    uint64_t v2 = ext_u64(&f, 0);
    CHECK(v2 > v1);
    REQUIRE(get(fd, 12, "k") == 0);
    f = rd(fd);
    CHECK(value_is(&f, "new"));
    CHECK_EQ(ext_u64(&f, 0), v2);

    /* DEL twice. */
    REQUIRE(req(fd, 13, KVMUX_OP_DEL, NULL, 0, "k", NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    REQUIRE(req(fd, 14, KVMUX_OP_DEL, NULL, 0, "k", NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_NOT_FOUND);

    /* TTL: gone after it passes. */
    REQUIRE(set(fd, 15, "ttl", "v", 50) == 0);
    rd(fd);
    test_sleep_ms(120);
    REQUIRE(get(fd, 16, "ttl") == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_NOT_FOUND);

    /* PING echoes extras and id. */
    REQUIRE(send_frame(fd, KVMUX_FRAME_PING, 17, 0, "ABCDEFGH", 8, NULL, 0, NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.type, KVMUX_FRAME_PONG);
    CHECK_EQ(f.request_id, 17);
    CHECK(f.extras_len == 8 && memcmp(f.extras, "ABCDEFGH", 8) == 0);
    close(fd);
}

static void test_request_errors(uint16_t port) {
    int fd = connect_open(port);
    kvmux_frame f;
    REQUIRE(req(fd, 1, 99, NULL, 0, "k", NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_UNKNOWN_OP);
    REQUIRE(req(fd, 2, KVMUX_OP_GET, "12345678", 8, "k", NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_BAD_REQUEST);
    REQUIRE(req(fd, 3, KVMUX_OP_GET, NULL, 0, "", NULL, 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_BAD_REQUEST);
    CHECK(value_is(&f, "empty key"));
    char key[5000];
    memset(key, 'a', sizeof key - 1);
    key[sizeof key - 1] = 0;
    REQUIRE(get(fd, 4, key) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_TOO_LARGE);
    CHECK(value_is(&f, "key of 4999 bytes exceeds max key size 4096"));
    /* Still usable. */
    REQUIRE(set(fd, 5, "after", "ok", 0) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);

    /* A value over 1 MiB but within the frame: TOO_LARGE, not a close. */
    size_t vlen = 1024 * 1024 + 1;
    char *val = malloc(vlen);
    memset(val, 'v', vlen);
    uint8_t e[8] = {0};
    REQUIRE(req(fd, 6, KVMUX_OP_SET, e, 8, "huge", val, (uint32_t)vlen) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_TOO_LARGE);
    /* Exactly 1 MiB is fine, and comes back intact. */
    val[0] = 'X';
    REQUIRE(req(fd, 7, KVMUX_OP_SET, e, 8, "huge", val, (uint32_t)(vlen - 1)) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    REQUIRE(get(fd, 8, "huge") == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK(f.value_len == vlen - 1 && memcmp(f.value, val, vlen - 1) == 0);
    free(val);
    close(fd);
}

static void expect_error_close(int fd, uint8_t code, const char *msg) {
    kvmux_frame f = rd(fd);
    CHECK_EQ(f.type, KVMUX_FRAME_ERROR);
    CHECK_EQ(f.code, code);
    if (msg && !value_is(&f, msg))
        fprintf(stderr, "message was '%.*s'\n", (int)f.value_len, (const char *)f.value);
    if (msg) CHECK(value_is(&f, msg));
    CHECK(test_wait_closed(fd, 3000));
    close(fd);
}

static void test_protocol_errors(uint16_t port) {
    /* Oversized frame: rejected from the header, before the body. */
    int fd = connect_open(port);
    uint8_t h[16] = {0x6b, 1, KVMUX_FRAME_REQUEST, 0, 0, 0, 0, 9, KVMUX_OP_GET, 0, 0, 1};
    kvmux_store_u32be(h + 12, 9999999 - 16);
    REQUIRE(test_write_all(fd, h, sizeof h) == 0);
    expect_error_close(fd, KVMUX_ERR_FRAME_TOO_LARGE,
                       "frame of 9999999 bytes exceeds max frame size 2097152");

    fd = connect_open(port);
    REQUIRE(test_write_all(fd, "GET foo\r\n", 9) == 0);
    expect_error_close(fd, KVMUX_ERR_BAD_MAGIC, "bad magic byte 0x47 (expected 0x6b)");

    /* REQUEST before HELLO. */
    fd = test_connect_raw(port, 5000);
    REQUIRE(fd >= 0);
    REQUIRE(get(fd, 1, "k") == 0);
    expect_error_close(fd, KVMUX_ERR_HANDSHAKE, "expected HELLO, got REQUEST");

    /* A RESPONSE sent to the server; the other connection is unaffected. */
    int other = connect_open(port);
    fd = connect_open(port);
    REQUIRE(send_frame(fd, KVMUX_FRAME_RESPONSE, 5, 0, NULL, 0, NULL, 0, NULL, 0) == 0);
    expect_error_close(fd, KVMUX_ERR_UNEXPECTED_FRAME, NULL);
    REQUIRE(get(other, 1, "k") == 0);
    kvmux_frame f = rd(other);
    CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
    close(other);

    /* Reserved frame type. */
    fd = connect_open(port);
    REQUIRE(send_frame(fd, KVMUX_FRAME_CANCEL, 5, 0, NULL, 0, NULL, 0, NULL, 0) == 0);
    expect_error_close(fd, KVMUX_ERR_BAD_TYPE, NULL);

    /* Garbage that starts like a frame and lies about lengths. */
    fd = connect_open(port);
    uint8_t bad[16] = {0x6b, 1, KVMUX_FRAME_REQUEST, 0, 0, 0, 0, 1, 1, 8, 0, 9};
    kvmux_store_u32be(bad + 12, 4);
    REQUIRE(test_write_all(fd, bad, sizeof bad) == 0);
    expect_error_close(fd, KVMUX_ERR_BAD_LENGTH, "extras_len 8 + key_len 9 exceed body_len 4");
}

static void test_pipeline(uint16_t port) {
    int fd = connect_open(port);
    enum { N = 1000 };
    /* One write carrying N SETs; all N answered, ids intact. */
    size_t per = 16 + 8 + 6 + 1;
    uint8_t *buf = malloc(per * N);
    for (int i = 0; i < N; i++) {
        kvmux_frame f;
        memset(&f, 0, sizeof f);
        uint8_t e[8] = {0};
        char key[7];
        snprintf(key, sizeof key, "p%05d", i);
        f.version = 1;
        f.type = KVMUX_FRAME_REQUEST;
        f.request_id = (uint32_t)i + 1;
        f.code = KVMUX_OP_SET;
        f.extras = e;
        f.extras_len = 8;
        f.key = (const uint8_t *)key;
        f.key_len = 6;
        f.value = (const uint8_t *)"v";
        f.value_len = 1;
        kvmux_frame_encode(buf + per * (size_t)i, &f);
    }
    REQUIRE(test_write_all(fd, buf, per * N) == 0);
    int ok = 0, ids = 0;
    for (int i = 0; i < N; i++) {
        kvmux_frame f = rd(fd);
        if (f.code == KVMUX_STATUS_OK) ok++;
        if (f.request_id == (uint32_t)i + 1) ids++;
    }
    CHECK_EQ(ok, N);
    CHECK_EQ(ids, N); /* no WAITs: same order */
    free(buf);
    close(fd);
}

static void test_wait(uint16_t port) {
    int a = connect_open(port), b = connect_open(port);
    kvmux_frame f;
    REQUIRE(set(a, 1, "wk", "v1", 0) == 0);
    f = rd(a);
    uint64_t v1 = ext_u64(&f, 0);

    /* Version differs: answered at once with the current state. */
    REQUIRE(wait_req(a, 2, "wk", v1 - 1, 5000) == 0);
    f = rd(a);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK_EQ(ext_u64(&f, 0), v1);
    CHECK(value_is(&f, "v1"));

    /* Parked WAIT, then a GET on the same connection: the GET comes back
     * first; then a SET from another connection completes the WAIT. */
    REQUIRE(wait_req(a, 3, "wk", v1, 10000) == 0);
    REQUIRE(get(a, 4, "wk") == 0);
    f = rd(a);
    CHECK_EQ(f.request_id, 4);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    int64_t t0 = test_now_ms();
    REQUIRE(set(b, 1, "wk", "v2", 0) == 0);
    f = rd(b);
    uint64_t v2 = ext_u64(&f, 0);
    f = rd(a);
    CHECK_EQ(f.request_id, 3);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK_EQ(ext_u64(&f, 0), v2);
    CHECK(value_is(&f, "v2"));
    CHECK(test_now_ms() - t0 < 2000);

    /* Timeout: TIMEOUT with the current version, after about the time. */
    t0 = test_now_ms();
    REQUIRE(wait_req(a, 5, "wk", v2, 150) == 0);
    f = rd(a);
    int64_t took = test_now_ms() - t0;
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT);
    CHECK_EQ(ext_u64(&f, 0), v2);
    CHECK(took >= 140 && took < 3000);

    /* Waiting for an absent key to appear (version 0), and a delete. */
    REQUIRE(wait_req(a, 6, "nk", 0, 10000) == 0);
    REQUIRE(set(b, 2, "nk", "born", 0) == 0);
    rd(b);
    f = rd(a);
    CHECK_EQ(f.request_id, 6);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK(value_is(&f, "born"));
    REQUIRE(wait_req(a, 7, "nk", ext_u64(&f, 0), 10000) == 0);
    REQUIRE(req(b, 3, KVMUX_OP_DEL, NULL, 0, "nk", NULL, 0) == 0);
    rd(b);
    f = rd(a);
    CHECK_EQ(f.request_id, 7);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK_EQ(ext_u64(&f, 0), 0);

    /* TTL expiry wakes a WAIT without anyone touching the key. */
    REQUIRE(set(a, 8, "ek", "x", 200) == 0);
    f = rd(a);
    t0 = test_now_ms();
    REQUIRE(wait_req(a, 9, "ek", ext_u64(&f, 0), 10000) == 0);
    f = rd(a);
    took = test_now_ms() - t0;
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    CHECK_EQ(ext_u64(&f, 0), 0);
    CHECK(took >= 100 && took < 3000);

    /* Closing a connection with parked WAITs, then writing the key. */
    int c = connect_open(port);
    for (uint32_t i = 0; i < 50; i++) REQUIRE(wait_req(c, i + 1, "ck", 0, 10000) == 0);
    REQUIRE(get(c, 100, "ck") == 0);
    rd(c); /* all 50 parked by now */
    close(c);
    REQUIRE(set(b, 4, "ck", "x", 0) == 0);
    f = rd(b);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    close(a);
    close(b);
}

static void test_busy(void) {
    test_server s;
    const char *args[] = {"--max-outstanding", "4", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    int fd = connect_open(s.port);
    for (uint32_t i = 1; i <= 20; i++) REQUIRE(wait_req(fd, i, "bk", 0, 10000) == 0);
    int busy = 0;
    for (int i = 0; i < 16; i++) {
        kvmux_frame f = rd(fd);
        if (f.code == KVMUX_STATUS_BUSY && f.request_id > 4) busy++;
    }
    CHECK_EQ(busy, 16);
    /* Credits are held by the 4 parked WAITs; releasing them frees credits. */
    int w = connect_open(s.port);
    REQUIRE(set(w, 1, "bk", "go", 0) == 0);
    rd(w);
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        kvmux_frame f = rd(fd);
        if (f.code == KVMUX_STATUS_OK && f.request_id <= 4) ok++;
    }
    CHECK_EQ(ok, 4);
    REQUIRE(get(fd, 21, "bk") == 0);
    kvmux_frame f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    close(fd);
    close(w);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

static void test_limits(void) {
    test_server s;
    const char *args[] = {"--handshake-timeout", "200", "--max-connections", "2", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    int a = test_connect_raw(s.port, 5000);
    REQUIRE(a >= 0);
    int64_t t0 = test_now_ms();
    expect_error_close(a, KVMUX_ERR_TIMEOUT, "handshake not completed within 200 ms");
    CHECK(test_now_ms() - t0 < 3000);

    int b = connect_open(s.port), c = connect_open(s.port);
    int d = test_connect_raw(s.port, 5000);
    REQUIRE(d >= 0);
    expect_error_close(d, KVMUX_ERR_TOO_MANY_CONNECTIONS,
                       "server has reached its connection limit (2)");
    close(b);
    close(c);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

static void test_threads(void) {
    test_server s;
    const char *args[] = {"--threads", "3", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    int fds[6];
    for (int i = 0; i < 6; i++) fds[i] = connect_open(s.port);
    /* Connections land on loops round-robin: WAITs on every connection,
     * one SET fires them all across threads. */
    for (int i = 0; i < 6; i++) REQUIRE(wait_req(fds[i], 1, "tk", 0, 10000) == 0);
    REQUIRE(get(fds[0], 2, "tk") == 0);
    rd(fds[0]);
    for (int i = 1; i < 6; i++) {
        REQUIRE(get(fds[i], 2, "tk") == 0);
        kvmux_frame f = rd(fds[i]);
        CHECK_EQ(f.request_id, 2);
    }
    REQUIRE(set(fds[5], 3, "tk", "all", 0) == 0);
    int ok = 0;
    for (int i = 0; i < 6; i++) {
        for (int k = 0; k < (i == 5 ? 2 : 1); k++) {
            kvmux_frame f = rd(fds[i]);
            if (f.request_id == 1 && f.code == KVMUX_STATUS_OK && value_is(&f, "all")) ok++;
        }
    }
    CHECK_EQ(ok, 6);
    for (int i = 0; i < 6; i++) close(fds[i]);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

static void test_shutdown(void) {
    test_server s;
    const char *args[] = {"--shutdown-timeout", "300", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    int fd = connect_open(s.port);
    REQUIRE(wait_req(fd, 1, "sk", 0, 60000) == 0);
    REQUIRE(get(fd, 2, "sk") == 0);
    rd(fd);
    int64_t t0 = test_now_ms();
    kill(s.pid, SIGTERM);
    kvmux_frame f = rd(fd);
    CHECK_EQ(f.request_id, 1);
    CHECK_EQ(f.code, KVMUX_STATUS_SHUTTING_DOWN);
    int64_t took = test_now_ms() - t0;
    CHECK(took >= 250 && took < 3000);
    expect_error_close(fd, KVMUX_ERR_SHUTTING_DOWN, "server shutting down");
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

/* A client that pipelines far more output than --max-output-buffer
 * without reading is slowed (reading pauses), not dropped, and gets every
 * answer once it reads. Output that cannot be paused (WAITs firing) beyond
 * the cap disconnects it as a slow reader. */
static void test_backpressure(void) {
    test_server s;
    const char *args[] = {"--max-output-buffer", "4M", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    int fd = connect_open(s.port);
    size_t vlen = 1024 * 1024;
    char *val = malloc(vlen);
    for (size_t i = 0; i < vlen; i++) val[i] = (char)('a' + i % 26);
    uint8_t e[8] = {0};
    REQUIRE(req(fd, 1, KVMUX_OP_SET, e, 8, "big", val, (uint32_t)vlen) == 0);
    kvmux_frame f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    enum { N = 40 };                  /* 40 MiB of answers, 10x the cap */
    for (uint32_t i = 0; i < N; i++) REQUIRE(get(fd, 100 + i, "big") == 0);
    test_sleep_ms(300);               /* let the server hit its limits */
    int ok = 0;
    for (uint32_t i = 0; i < N; i++) {
        f = rd(fd);
        if (f.request_id == 100 + i && f.code == KVMUX_STATUS_OK && f.value_len == vlen &&
            memcmp(f.value, val, vlen) == 0)
            ok++;
    }
    CHECK_EQ(ok, N);

    /* 10 parked WAITs on a 1 MiB key fire at once: 10 MiB > 4 MiB. */
    int w = connect_open(s.port);
    for (uint32_t i = 0; i < 10; i++) REQUIRE(wait_req(w, i + 1, "big2", 0, 10000) == 0);
    REQUIRE(get(w, 50, "nothing") == 0);
    rd(w);
    REQUIRE(req(fd, 2, KVMUX_OP_SET, e, 8, "big2", val, (uint32_t)vlen) == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    test_sleep_ms(100);
    int got = 0;
    for (;;) {
        int r = read_frame_fast(w, &f);
        if (r <= 0) break;
        got++;
    }
    CHECK(got < 10); /* cut off as a slow reader */
    close(w);
    /* The server and the other connection carry on. */
    REQUIRE(get(fd, 3, "big2") == 0);
    f = rd(fd);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    free(val);
    close(fd);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

/* Frames split at every awkward point: inside the header, inside a big
 * body, and many frames per write. */
static void test_partial_frames(uint16_t port) {
    int fd = connect_open(port);
    size_t vlen = 200000;
    char *val = malloc(vlen);
    memset(val, 'z', vlen);
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    uint8_t e[8] = {0};
    f.version = 1;
    f.type = KVMUX_FRAME_REQUEST;
    f.request_id = 1;
    f.code = KVMUX_OP_SET;
    f.extras = e;
    f.extras_len = 8;
    f.key = (const uint8_t *)"part";
    f.key_len = 4;
    f.value = (const uint8_t *)val;
    f.value_len = (uint32_t)vlen;
    size_t n = kvmux_frame_size(&f);
    uint8_t *buf = malloc(n + 64);
    kvmux_frame_encode(buf, &f);
    /* Plus a GET right behind it. */
    kvmux_frame g;
    memset(&g, 0, sizeof g);
    g.version = 1;
    g.type = KVMUX_FRAME_REQUEST;
    g.request_id = 2;
    g.code = KVMUX_OP_GET;
    g.key = (const uint8_t *)"part";
    g.key_len = 4;
    size_t gn = kvmux_frame_encode(buf + n, &g);
    size_t cuts[] = {0, 3, 10, 16, 20, 70000, 140000, n - 1, n + 5, n + gn};
    for (size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; i++) {
        REQUIRE(test_write_all(fd, buf + cuts[i], cuts[i + 1] - cuts[i]) == 0);
        test_sleep_ms(20);
    }
    kvmux_frame r1 = rd(fd);
    CHECK_EQ(r1.request_id, 1);
    CHECK_EQ(r1.code, KVMUX_STATUS_OK);
    kvmux_frame r2 = rd(fd);
    CHECK_EQ(r2.request_id, 2);
    CHECK(r2.value_len == vlen && memcmp(r2.value, val, vlen) == 0);
    free(buf);
    free(val);
    close(fd);

    /* Before the handshake, frames are capped at 4 KiB. */
    fd = test_connect_raw(port, 5000);
    REQUIRE(fd >= 0);
    uint8_t h[16] = {0x6b, 1, KVMUX_FRAME_HELLO, 0, 0, 0, 0, 0, 0, 2, 0, 0};
    kvmux_store_u32be(h + 12, 5000);
    REQUIRE(test_write_all(fd, h, sizeof h) == 0);
    expect_error_close(fd, KVMUX_ERR_FRAME_TOO_LARGE,
                       "frame of 5016 bytes exceeds max frame size 4096");
}

static int run_exit_code(const char *const *args) {
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execv(KVMUXD_PATH, (char *const *)args);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_options(void) {
    const char *a1[] = {KVMUXD_PATH, "--max-key", "70000", NULL};
    CHECK_EQ(run_exit_code(a1), 2);
    const char *a2[] = {KVMUXD_PATH, "--port", "x", NULL};
    CHECK_EQ(run_exit_code(a2), 2);
    const char *a3[] = {KVMUXD_PATH, "--max-frame", "4096", NULL};
    CHECK_EQ(run_exit_code(a3), 2);
    const char *a4[] = {KVMUXD_PATH, "--help", NULL};
    CHECK_EQ(run_exit_code(a4), 0);
    /* v2 options: ranges and cross-limits. */
    const char *b1[] = {KVMUXD_PATH, "--max-value", "600M", NULL};  /* > 512 MiB */
    CHECK_EQ(run_exit_code(b1), 2);
    const char *b2[] = {KVMUXD_PATH, "--max-protocol", "4", NULL}; /* 3: replicated servers */
    CHECK_EQ(run_exit_code(b2), 2);
    const char *b3[] = {KVMUXD_PATH, "--max-upload-buffer", "1M", NULL}; /* < max-value */
    CHECK_EQ(run_exit_code(b3), 2);
    const char *b4[] = {KVMUXD_PATH, "--fragment-size", "2M", NULL}; /* > max-frame */
    CHECK_EQ(run_exit_code(b4), 2);
    const char *b5[] = {KVMUXD_PATH, "--initial-window", "100", NULL};
    CHECK_EQ(run_exit_code(b5), 2);
    const char *b6[] = {KVMUXD_PATH, "--max-value-v1", "2M", NULL}; /* frame too small */
    CHECK_EQ(run_exit_code(b6), 2);
    const char *b7[] = {KVMUXD_PATH, "--idle-timeout", "x", NULL};
    CHECK_EQ(run_exit_code(b7), 2);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    test_basic_ops(s.port);
    test_request_errors(s.port);
    test_protocol_errors(s.port);
    test_pipeline(s.port);
    test_partial_frames(s.port);
    test_wait(s.port);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    test_busy();
    test_backpressure();
    test_limits();
    test_threads();
    test_shutdown();
    test_options();
    return test_report();
}
