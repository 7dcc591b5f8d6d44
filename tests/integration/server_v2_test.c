/* kvmuxd protocol v2 over raw sockets: negotiation (a v1 client still
 * works against the v2 server, a --max-protocol 1 server refuses v2
 * frames); fragmented uploads interleaved with small requests that are
 * answered before the upload completes; fragmented responses interleaved
 * with small responses; a client that never grants window (its large
 * response stalls alone, small requests still answered); CANCEL of a WAIT,
 * of a stalled response and of an upload (CANCELED, credit returned); a
 * CANCEL crossing its response (ignored, no second response); DEADLINE
 * (already spent -> TIMEOUT, a WAIT capped by it, an upload that misses it
 * -> TIMEOUT and its remaining fragments dropped); limits (total over
 * --max-value, CONTINUATION without a message, window violations). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

#define CHUNK (64u * 1024)
#define BIG (8u * 1024 * 1024)

static uint8_t *pattern(size_t n, unsigned seed) {
    uint8_t *p = malloc(n);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 131 + seed + (i >> 16));
    return p;
}

/* Window bookkeeping of a test upload: what the server let us send, and
 * the upload's answer when it comes. */
typedef struct upwin {
    uint32_t id;
    int64_t msg, conn;
    int answered;
    uint8_t code;
    uint64_t version;
} upwin;

static void apply_update(upwin *w, const kvmux_frame *f) {
    if (f->type == KVMUX_FRAME_RESPONSE && f->request_id == w->id) {
        w->answered++;
        w->code = f->code;
        w->version = f->extras_len == 8 ? kvmux_load_u64be(f->extras) : 0;
    }
    if (f->type != KVMUX_FRAME_WINDOW_UPDATE) return;
    uint32_t inc = kvmux_window_update_increment(f);
    if (f->request_id == 0) w->conn += inc;
    else if (f->request_id == w->id) w->msg += inc;
}

static void skip_apply(const kvmux_frame *f, void *ud) { apply_update(ud, f); }

/* 1. A v1 client against the v2 server, and a v2 client against a
 * --max-protocol 1 server. */
static void test_negotiation(uint16_t port) {
    v2conn c;
    kvmux_frame f;
    REQUIRE(v2_connect(&c, port, 1, NULL) == 0);
    CHECK_EQ(c.version, 1);
    /* The v1 value limit is advertised (default 1 MiB), not --max-value. */
    CHECK_EQ(c.server.max_value_size, 1024 * 1024);
    CHECK_EQ(v2_set(&c, 1, "neg:k", "hello", 5), 0);
    CHECK_EQ(v2_read(&c, &f, 2000), 1);
    CHECK(f.type == KVMUX_FRAME_RESPONSE && f.request_id == 1 && f.code == KVMUX_STATUS_OK);
    CHECK_EQ(v2_get(&c, 2, "neg:k"), 0);
    CHECK_EQ(v2_read(&c, &f, 2000), 1);
    CHECK(f.code == KVMUX_STATUS_OK && f.value_len == 5 && memcmp(f.value, "hello", 5) == 0);
    /* A v1 value over the v1 limit that still fits the frame: TOO_LARGE. */
    {
        uint32_t n = 1024 * 1024 + 1;
        uint8_t *v = calloc(1, n);
        REQUIRE(v);
        CHECK_EQ(v2_set(&c, 3, "neg:big", v, n), 0);
        CHECK_EQ(v2_read(&c, &f, 5000), 1);
        CHECK(f.request_id == 3 && f.code == KVMUX_STATUS_TOO_LARGE);
        free(v);
    }
    /* v2 features on a v1 session are protocol errors. */
    CHECK_EQ(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 4, KVMUX_OP_GET, NULL, 0,
                     "neg:k", 5, NULL, 0, 100, 0), 0);
    CHECK_EQ(v2_read(&c, &f, 2000), 1);
    CHECK(f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_BAD_FLAGS);
    CHECK(test_wait_closed(c.fd, 3000));
    v2_close(&c, 0);

    REQUIRE(v2_connect(&c, port, 1, NULL) == 0);
    CHECK_EQ(v2_cancel(&c, 9), 0); /* header version 1: type 8 unknown in v1 */
    CHECK_EQ(v2_read(&c, &f, 2000), 1);
    CHECK(f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_BAD_TYPE);
    v2_close(&c, 0);

    /* The v2 client sees --max-value on a v2 connection. */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    CHECK_EQ(c.version, 2);
    CHECK_EQ(c.server.max_value_size, 32 * 1024 * 1024);
    v2_close(&c, 0);

    /* A server capped at version 1. */
    static test_server s1;
    const char *const a1[] = {"--max-protocol", "1", NULL};
    REQUIRE(test_server_start(&s1, a1) == 0);
    v2_track_server(&s1);
    REQUIRE(v2_connect(&c, s1.port, 2, NULL) == 0);
    CHECK_EQ(c.version, 1);
    CHECK_EQ(v2_get(&c, 1, "x"), 0);
    CHECK_EQ(v2_read(&c, &f, 2000), 1);
    CHECK(f.request_id == 1 && f.code == KVMUX_STATUS_NOT_FOUND);
    /* It refuses v2 frames: a v2 header version is BAD_VERSION. */
    c.version = 2;
    CHECK_EQ(v2_cancel(&c, 1), 0);
    c.version = 1;
    CHECK_EQ(v2_read(&c, &f, 2000), 1);
    CHECK(f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_BAD_VERSION);
    v2_close(&c, 0);
    CHECK_EQ(test_server_stop(&s1, 10000), 0);
}

/* Send an 8 MiB value in 64 KiB CONTINUATIONs, within the windows the
 * server grants, with a small GET after every fragment; every GET must be
 * answered before the upload's response. Returns the SET's version. */
static uint64_t upload_big(v2conn *c, uint32_t id, const char *key, const uint8_t *val,
                           uint32_t total, int *small_before) {
    kvmux_frame f;
    upwin w = {id, c->server.initial_window, c->server.connection_window, 0, 0, 0};
    uint32_t sent = 0, small_id = 100000 + id;
    *small_before = 0;
    /* First frame: a full chunk. */
    CHECK_EQ(v2_set_first(c, id, key, val, CHUNK, total, 0, 0), 0);
    sent = CHUNK;
    w.msg -= CHUNK;
    w.conn -= CHUNK;
    for (int guard = 0; guard < 100000 && !w.answered; guard++) {
        if (sent < total && w.msg >= CHUNK && w.conn >= CHUNK) {
            uint32_t n = total - sent < CHUNK ? total - sent : CHUNK;
            REQUIRE(v2_continuation(c, id, val + sent, n, sent + n < total) == 0);
            sent += n;
            w.msg -= n;
            w.conn -= n;
            /* A small request between fragments. */
            REQUIRE(v2_get(c, ++small_id, "up:small") == 0);
            int r = v2_read_until(c, &f, KVMUX_FRAME_RESPONSE, small_id, 5000, skip_apply, &w);
            REQUIRE(r == 1);
            CHECK(f.code == KVMUX_STATUS_OK && f.value_len == 3);
            if (sent < total) (*small_before)++;
            continue;
        }
        /* Blocked on window, or done: read what comes. */
        int r = v2_read(c, &f, 5000);
        REQUIRE(r == 1);
        apply_update(&w, &f);
    }
    CHECK_EQ(w.answered, 1);
    CHECK_EQ(w.code, KVMUX_STATUS_OK);
    CHECK_EQ(sent, total);
    CHECK(w.msg >= 0 && w.conn >= 0); /* we never overran a window */
    return w.version;
}

static void skip_nothing(const kvmux_frame *f, void *ud) {
    (void)f;
    (void)ud;
}

/* 2 + 3. Fragmented upload interleaved with small GETs; fragmented
 * download interleaved with small responses; value intact both ways. */
static void test_fragmented(uint16_t port) {
    v2conn c;
    kvmux_frame f;
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    REQUIRE(c.version == 2);
    REQUIRE(v2_set(&c, 1, "up:small", "abc", 3) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    uint8_t *val = pattern(BIG, 7);
    REQUIRE(val);
    int small_before = 0;
    uint64_t ver = upload_big(&c, 2, "up:big", val, BIG, &small_before);
    CHECK(ver > 0);
    /* A small GET after each of the 127 CONTINUATIONs; all but the one
     * after the last were answered while the upload was incomplete. */
    CHECK_EQ(small_before, BIG / CHUNK - 2);

    /* Download: a GET of the big value, then small GETs right behind it.
     * The small responses must not wait for the 8 MiB. */
    v2_rx rx = {.id = 10, .grant = 1};
    REQUIRE(v2_get(&c, 10, "up:big") == 0);
    for (uint32_t i = 0; i < 20; i++) REQUIRE(v2_get(&c, 20 + i, "up:small") == 0);
    int small_seen = 0, small_before_big_done = 0, frames_big = 0;
    for (int guard = 0; guard < 10000 && !(rx.done && small_seen == 20); guard++) {
        int r = v2_read(&c, &f, 5000);
        REQUIRE(r == 1);
        int fed = v2_rx_feed(&c, &rx, &f);
        CHECK(fed >= 0);
        if (fed == 1) {
            frames_big++;
            continue;
        }
        if (f.type == KVMUX_FRAME_RESPONSE && f.request_id >= 20 && f.request_id < 40) {
            CHECK(f.code == KVMUX_STATUS_OK && f.value_len == 3);
            small_seen++;
            if (!rx.done) small_before_big_done++;
        }
    }
    CHECK(rx.done);
    CHECK_EQ(rx.status, KVMUX_STATUS_OK);
    CHECK_EQ(rx.version, ver);
    CHECK_EQ(rx.total, BIG);
    CHECK(rx.data && memcmp(rx.data, val, BIG) == 0);
    CHECK(frames_big > 64);            /* it was fragmented */
    CHECK_EQ(small_seen, 20);
    CHECK_EQ(small_before_big_done, 20); /* none waited for the big one */
    free(rx.data);

    /* Two large responses at once interleave (round-robin). */
    v2_rx a = {.id = 50, .grant = 1}, b = {.id = 51, .grant = 1};
    REQUIRE(v2_get(&c, 50, "up:big") == 0);
    REQUIRE(v2_get(&c, 51, "up:big") == 0);
    int switches = 0, last = 0;
    for (int guard = 0; guard < 20000 && !(a.done && b.done); guard++) {
        REQUIRE(v2_read(&c, &f, 5000) == 1);
        int which = v2_rx_feed(&c, &a, &f) == 1 ? 1 : v2_rx_feed(&c, &b, &f) == 1 ? 2 : 0;
        if (which && last && which != last) switches++;
        if (which) last = which;
    }
    CHECK(a.done && b.done);
    CHECK(a.data && memcmp(a.data, val, BIG) == 0);
    CHECK(b.data && memcmp(b.data, val, BIG) == 0);
    CHECK(switches > 10);
    free(a.data);
    free(b.data);
    free(val);
    v2_close(&c, 0);
}

/* 4 + 5. A client that never grants window: its large response stalls
 * after the initial window, small GETs on the same connection are still
 * answered; CANCEL then ends it with CANCELED and returns the credit. */
static void test_no_window(uint16_t port) {
    v2conn c;
    kvmux_frame f;
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    uint8_t *val = pattern(4u * 1024 * 1024, 3);
    REQUIRE(val);
    int sb;
    uint64_t ver = upload_big(&c, 1, "nw:big", val, 4u * 1024 * 1024, &sb);
    CHECK(ver > 0);
    REQUIRE(v2_set(&c, 2, "nw:small", "xyz", 3) == 0);
    REQUIRE(v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 2, 2000, skip_nothing, NULL) == 1);

    v2_rx rx = {.id = 10, .grant = 0};
    REQUIRE(v2_get(&c, 10, "nw:big") == 0);
    /* Read until the stream stalls: nothing for 300 ms. */
    for (;;) {
        int r = v2_read(&c, &f, 300);
        if (r == -1) break;
        REQUIRE(r == 1);
        CHECK(v2_rx_feed(&c, &rx, &f) == 1);
    }
    CHECK(rx.started && !rx.done);
    CHECK_EQ(rx.got, KVMUX_DEFAULT_INITIAL_WINDOW); /* our (default) window */
    /* Small requests still flow. */
    for (uint32_t i = 0; i < 50; i++) {
        REQUIRE(v2_get(&c, 100 + i, "nw:small") == 0);
        REQUIRE(v2_read(&c, &f, 2000) == 1);
        CHECK(f.type == KVMUX_FRAME_RESPONSE && f.request_id == 100 + i &&
              f.code == KVMUX_STATUS_OK);
    }
    /* One WINDOW_UPDATE for the message moves exactly that much. */
    REQUIRE(v2_window_update(&c, 10, 100000) == 0);
    uint32_t before = rx.got;
    for (;;) {
        int r = v2_read(&c, &f, 300);
        if (r == -1) break;
        REQUIRE(r == 1);
        CHECK(v2_rx_feed(&c, &rx, &f) == 1);
    }
    CHECK_EQ(rx.got - before, 100000);
    /* CANCEL: the stream ends with RESPONSE CANCELED. */
    REQUIRE(v2_cancel(&c, 10) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.type == KVMUX_FRAME_RESPONSE && f.request_id == 10 &&
          f.code == KVMUX_STATUS_CANCELED);
    free(rx.data);
    free(val);
    v2_close(&c, 0);
}

/* Connection with --max-outstanding 2 (server s2): CANCEL returns credit. */
static void test_cancel(uint16_t port2) {
    v2conn c;
    kvmux_frame f;
    REQUIRE(v2_connect(&c, port2, 2, NULL) == 0);
    CHECK_EQ(c.server.max_outstanding, 2);
    REQUIRE(v2_wait(&c, 1, "cw:k", 0, 30000) == 0);
    REQUIRE(v2_wait(&c, 2, "cw:k", 0, 30000) == 0);
    REQUIRE(v2_get(&c, 3, "cw:k") == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.request_id == 3 && f.code == KVMUX_STATUS_BUSY); /* credits full */
    REQUIRE(v2_cancel(&c, 1) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.type == KVMUX_FRAME_RESPONSE && f.request_id == 1 &&
          f.code == KVMUX_STATUS_CANCELED);
    /* The credit is back: a new request runs. */
    REQUIRE(v2_get(&c, 4, "cw:k") == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.request_id == 4 && f.code == KVMUX_STATUS_NOT_FOUND);
    /* CANCEL of an unknown id and of an answered one: ignored. */
    REQUIRE(v2_cancel(&c, 4) == 0);
    REQUIRE(v2_cancel(&c, 777) == 0);
    REQUIRE(v2_cancel(&c, 1) == 0); /* already canceled */
    REQUIRE(v2_ping(&c, 42) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.type == KVMUX_FRAME_PONG); /* nothing came before the PONG */
    /* Cancel crossing a response: fire WAIT 2, cancel it right behind. */
    REQUIRE(v2_set(&c, 5, "cw:k", "v", 1) == 0);
    REQUIRE(v2_cancel(&c, 2) == 0);
    REQUIRE(v2_ping(&c, 43) == 0);
    int answers2 = 0, got5 = 0, pong = 0;
    for (int i = 0; i < 10 && !(pong && answers2); i++) {
        REQUIRE(v2_read(&c, &f, 2000) == 1);
        if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == 2) {
            answers2++;
            CHECK(f.code == KVMUX_STATUS_OK || f.code == KVMUX_STATUS_CANCELED);
        }
        if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == 5) got5 = 1;
        if (f.type == KVMUX_FRAME_PONG) pong = 1;
    }
    CHECK(pong && got5);
    /* Nothing more for 2: the next frame is the next PONG. */
    REQUIRE(v2_ping(&c, 44) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK_EQ(f.type, KVMUX_FRAME_PONG);
    CHECK_EQ(answers2, 1); /* exactly one answer, whichever won */
    /* Both credits free again. */
    REQUIRE(v2_wait(&c, 6, "cw:k2", 0, 30000) == 0);
    REQUIRE(v2_get(&c, 7, "cw:k2") == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.request_id == 7 && f.code == KVMUX_STATUS_NOT_FOUND);

    /* Free WAIT 6's credit, then CANCEL an upload in progress:
     * CANCELED, and the id is free for a new request. */
    uint8_t chunk[4096] = {1};
    REQUIRE(v2_cancel(&c, 6) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.request_id == 6 && f.code == KVMUX_STATUS_CANCELED);
    REQUIRE(v2_set_first(&c, 8, "cw:up", chunk, sizeof chunk, 100000, 0, 0) == 0);
    REQUIRE(v2_continuation(&c, 8, chunk, sizeof chunk, 1) == 0);
    REQUIRE(v2_cancel(&c, 8) == 0);
    int r = v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 8, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_CANCELED);
    REQUIRE(v2_get(&c, 8, "cw:up") == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 8, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_NOT_FOUND);
    /* A CONTINUATION after the CANCEL is for no open message: error. */
    REQUIRE(v2_continuation(&c, 8, chunk, 10, 1) == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_ERROR, 8, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_ERR_PROTOCOL);
    v2_close(&c, 0);
}

/* 6. DEADLINE. */
static void test_deadline(uint16_t port) {
    v2conn c;
    kvmux_frame f;
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    /* Already spent: TIMEOUT, not run (the SET does not happen). */
    uint8_t ttl[8] = {0};
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 1, KVMUX_OP_SET, ttl, 8,
                    "dl:k", 4, "v", 1, 0, 0) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.request_id == 1 && f.code == KVMUX_STATUS_TIMEOUT);
    REQUIRE(v2_get(&c, 2, "dl:k") == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.request_id == 2 && f.code == KVMUX_STATUS_NOT_FOUND);
    /* A generous deadline runs normally. */
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 3, KVMUX_OP_SET, ttl, 8,
                    "dl:k", 4, "v", 1, 5000, 0) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.request_id == 3 && f.code == KVMUX_STATUS_OK);
    /* A WAIT of 10 s with a deadline of 150 ms times out at ~150 ms.
     * First learn the key's version (a WAIT on another version answers
     * at once). */
    uint8_t e[12];
    kvmux_store_u64be(e, 999999);
    kvmux_store_u32be(e + 8, 10000);
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 4, KVMUX_OP_WAIT, e, 12,
                    "dl:k", 4, NULL, 0, 150, 0) == 0);
    REQUIRE(v2_read(&c, &f, 2000) == 1);
    CHECK(f.request_id == 4 && f.code == KVMUX_STATUS_OK);
    uint64_t cur = kvmux_load_u64be(f.extras);
    kvmux_store_u64be(e, cur);
    int64_t t0 = test_now_ms();
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 5, KVMUX_OP_WAIT, e, 12,
                    "dl:k", 4, NULL, 0, 150, 0) == 0);
    REQUIRE(v2_read(&c, &f, 5000) == 1);
    int64_t took = test_now_ms() - t0;
    CHECK(f.request_id == 5 && f.code == KVMUX_STATUS_TIMEOUT);
    CHECK(took >= 120 && took < 3000);

    /* An upload that misses its deadline: TIMEOUT, its late fragments are
     * dropped without error, and nothing was stored. */
    uint8_t chunk[8192];
    memset(chunk, 'u', sizeof chunk);
    t0 = test_now_ms();
    REQUIRE(v2_set_first(&c, 6, "dl:up", chunk, sizeof chunk, 3 * sizeof chunk,
                         KVMUX_FLAG_DEADLINE, 200) == 0);
    int r = v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 6, 5000, skip_nothing, NULL);
    took = test_now_ms() - t0;
    CHECK(r == 1 && f.code == KVMUX_STATUS_TIMEOUT);
    CHECK(took >= 150 && took < 3000);
    REQUIRE(v2_continuation(&c, 6, chunk, sizeof chunk, 1) == 0);
    REQUIRE(v2_continuation(&c, 6, chunk, sizeof chunk, 0) == 0);
    REQUIRE(v2_get(&c, 7, "dl:up") == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 7, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_NOT_FOUND);
    /* And an upload with DEADLINE 0 is refused at once, rest dropped. */
    REQUIRE(v2_set_first(&c, 8, "dl:up", chunk, sizeof chunk, 2 * sizeof chunk,
                         KVMUX_FLAG_DEADLINE, 0) == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 8, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_TIMEOUT);
    REQUIRE(v2_continuation(&c, 8, chunk, sizeof chunk, 0) == 0);
    REQUIRE(v2_ping(&c, 1) == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_PONG, 0, 2000, skip_nothing, NULL);
    CHECK_EQ(r, 1);
    v2_close(&c, 0);
}

/* 7. Limits and violations: each is a connection error. */
static void test_violations(uint16_t port) {
    v2conn c;
    kvmux_frame f;
    uint8_t chunk[1024] = {0};
    /* total over --max-value (32 MiB here). */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    REQUIRE(v2_set_first(&c, 1, "vi:k", chunk, sizeof chunk, 33u * 1024 * 1024, 0, 0) == 0);
    int r = v2_read_until(&c, &f, KVMUX_FRAME_ERROR, 1, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_ERR_FRAME_TOO_LARGE);
    v2_close(&c, 0);
    /* CONTINUATION for nothing. */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    REQUIRE(v2_continuation(&c, 5, chunk, sizeof chunk, 0) == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_ERROR, 5, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_ERR_PROTOCOL);
    v2_close(&c, 0);
    /* One fragment larger than the message window (1 MiB). */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    uint8_t *v = calloc(1, 1536 * 1024);
    REQUIRE(v);
    REQUIRE(v2_set_first(&c, 2, "vi:k", v, 1024, 4u * 1024 * 1024, 0, 0) == 0);
    v2_continuation(&c, 2, v, 1536 * 1024, 1); /* may fail: the server closes */
    r = v2_read_until(&c, &f, KVMUX_FRAME_ERROR, 2, 3000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_ERR_PROTOCOL);
    free(v);
    v2_close(&c, 0);
    /* A last fragment short of the total. */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    REQUIRE(v2_set_first(&c, 3, "vi:k", chunk, 100, 300, 0, 0) == 0);
    REQUIRE(v2_continuation(&c, 3, chunk, 100, 0) == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_ERROR, 3, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_ERR_BAD_LENGTH);
    v2_close(&c, 0);
    /* A GET with a value (MORE on a GET): BAD_REQUEST, rest dropped, the
     * connection goes on. */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_MORE, 4, KVMUX_OP_GET, NULL, 0,
                    "vi:k", 4, chunk, 10, 0, 20) == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 4, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_BAD_REQUEST);
    REQUIRE(v2_continuation(&c, 4, chunk, 10, 0) == 0);
    REQUIRE(v2_get(&c, 5, "vi:k") == 0);
    r = v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 5, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_NOT_FOUND);
    v2_close(&c, 0);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    static test_server s, s2; /* static: tracked for cleanup at exit */
    const char *const args[] = {"--max-value", "32M", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    v2_track_server(&s);
    const char *const args2[] = {"--max-outstanding", "2", NULL};
    REQUIRE(test_server_start(&s2, args2) == 0);
    v2_track_server(&s2);
    test_negotiation(s.port);
    test_fragmented(s.port);
    test_no_window(s.port);
    test_cancel(s2.port);
    test_deadline(s.port);
    test_violations(s.port);
    CHECK_EQ(test_server_stop(&s2, 10000), 0);
    CHECK_EQ(test_server_stop(&s, 15000), 0);
    return test_report();
}
