/* kvmuxd against the corner cases docs/PROTOCOL.md decides (section 16,
 * "Corner cases"), over raw sockets, one scenario per rule, each checking
 * the exact outcome the spec states: the frame type, the status or ERROR
 * code, the request_id it carries, and whether the connection closes.
 *
 *   Q1  a client PING with request_id 0: PONG with id 0 and the same bytes
 *   Q2  HELLO with request_id 7 and code 3; CONTINUATION with code 5: ignored
 *   Q3  AUTH_TOKEN_LEN 0 to a server without a token: ignored (HELLO_ACK);
 *       to a server with one: ERROR AUTH
 *   Q4  INITIAL_WINDOW 0 in a HELLO offering 1..1: ignored (v1 HELLO_ACK);
 *       offering 1..2: ERROR PROTOCOL
 *   Q5  MAX_OUTSTANDING 0 then 16: ERROR PROTOCOL, id 0, closed
 *   Q6  an ERROR as the very first frame: closed, no frame back
 *   Q7  HELLO_ACK sent to the server after the handshake: UNEXPECTED_FRAME;
 *       a second HELLO: HANDSHAKE
 *   Q8  a 4097-byte frame before the handshake: FRAME_TOO_LARGE from the
 *       header (its body is never sent)
 *   Q9  other settings between AUTH_TOKEN_LEN and AUTH_TOKEN: accepted
 *   Q10 a REQUEST reusing the id of a parked WAIT (v1) or of an open
 *       upload (v2): ERROR PROTOCOL with that id, closed, and never two
 *       RESPONSEs with one id; reuse after the answer is fine
 *   Q11 INCR of "-0": NOT_INTEGER
 *   Q13 an upload answered early (DEADLINE 0): finishing it or CANCELing
 *       it both work, its window comes back (no deadlock), exactly one
 *       RESPONSE; after CANCEL the id is free again
 *   Q14 GOAWAY with request_id 5 sent to the server: UNEXPECTED_FRAME
 *   and: a PING's code is ignored and the PONG's is 0; an ERROR in the
 *   wrong header version is not answered either
 * (Q12 is the status table; Q15 is limits_test's PING flood; Q16 is
 * server_v2_fault_test's drain deadline.) */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

#define IO_MS 3000

static uint8_t g_buf[1 << 16];

static size_t put_setting(uint8_t *p, uint16_t id, uint32_t v) {
    kvmux_store_u16be(p, id);
    kvmux_store_u32be(p + 2, v);
    return KVMUX_SETTING_ENTRY_LEN;
}

/* The four v1 settings at their defaults. */
static size_t default_settings(uint8_t *p) {
    size_t n = 0;
    n += put_setting(p + n, KVMUX_SETTING_MAX_FRAME_SIZE, KVMUX_DEFAULT_MAX_FRAME);
    n += put_setting(p + n, KVMUX_SETTING_MAX_OUTSTANDING, KVMUX_DEFAULT_MAX_OUTSTANDING);
    n += put_setting(p + n, KVMUX_SETTING_MAX_KEY_SIZE, KVMUX_DEFAULT_MAX_KEY);
    n += put_setting(p + n, KVMUX_SETTING_MAX_VALUE_SIZE, KVMUX_DEFAULT_MAX_VALUE);
    return n;
}

/* Connect and send a HELLO built by hand; returns the fd. */
static int hello_raw(uint16_t port, uint32_t rid, uint8_t code, uint8_t minv, uint8_t maxv,
                     const uint8_t *settings, size_t slen) {
    int fd = test_connect_raw(port, IO_MS);
    REQUIRE(fd >= 0);
    REQUIRE(test_send_hello(fd, rid, code, minv, maxv, "cli", settings, slen) == 0);
    return fd;
}

/* Read the server's answer to a handshake: returns the frame type, or 0
 * on EOF, -1 on timeout. */
static int read_raw(int fd, kvmux_frame *f) {
    int r = test_read_frame(fd, g_buf, sizeof g_buf, f);
    if (r > 0) return f->type;
    return r;
}

static void expect_error_close(int fd, uint8_t code, uint32_t id, const char *what) {
    kvmux_frame f;
    int t = read_raw(fd, &f);
    if (t != KVMUX_FRAME_ERROR || f.code != code || f.request_id != id)
        fprintf(stderr, "%s: got type %d code %u id %u, want ERROR %s id %u\n", what, t,
                t > 0 ? f.code : 0, t > 0 ? f.request_id : 0, kvmux_wire_error_name(code), id);
    CHECK_EQ(t, KVMUX_FRAME_ERROR);
    if (t == KVMUX_FRAME_ERROR) {
        CHECK_EQ(f.code, code);
        CHECK_EQ(f.request_id, id);
    }
    CHECK(test_wait_closed(fd, IO_MS));
}

static void test_handshake_rules(uint16_t port) {
    uint8_t st[32 * KVMUX_SETTING_ENTRY_LEN];
    kvmux_frame f;
    size_t n;
    int fd;

    /* Q2: reserved request_id and code of a HELLO are ignored. */
    n = default_settings(st);
    fd = hello_raw(port, 7, 3, 1, 1, st, n);
    CHECK_EQ(read_raw(fd, &f), KVMUX_FRAME_HELLO_ACK);
    CHECK_EQ(f.code, 1);
    close(fd);

    /* Q3: AUTH_TOKEN_LEN 0 to a server without a token: ignored. */
    n = default_settings(st);
    n += put_setting(st + n, KVMUX_SETTING_AUTH_TOKEN_LEN, 0);
    fd = hello_raw(port, 0, 0, 1, 1, st, n);
    CHECK_EQ(read_raw(fd, &f), KVMUX_FRAME_HELLO_ACK);
    close(fd);
    n = default_settings(st);
    n += put_setting(st + n, KVMUX_SETTING_AUTH_TOKEN_LEN, KVMUX_MAX_AUTH_TOKEN + 1);
    fd = hello_raw(port, 0, 0, 1, 2, st, n);
    CHECK_EQ(read_raw(fd, &f), KVMUX_FRAME_HELLO_ACK);
    close(fd);

    /* Q4: a v2 setting out of range is ignored on a v1 connection ... */
    n = default_settings(st);
    n += put_setting(st + n, KVMUX_SETTING_INITIAL_WINDOW, 0);
    fd = hello_raw(port, 0, 0, 1, 1, st, n);
    CHECK_EQ(read_raw(fd, &f), KVMUX_FRAME_HELLO_ACK);
    CHECK_EQ(f.code, 1);
    close(fd);
    n = default_settings(st);
    n += put_setting(st + n, KVMUX_SETTING_CONNECTION_WINDOW, 0x80000000u);
    fd = hello_raw(port, 0, 0, 1, 1, st, n);
    CHECK_EQ(read_raw(fd, &f), KVMUX_FRAME_HELLO_ACK);
    close(fd);
    /* ... and PROTOCOL on a v2 one. */
    n = default_settings(st);
    n += put_setting(st + n, KVMUX_SETTING_INITIAL_WINDOW, 0);
    fd = hello_raw(port, 0, 0, 1, 2, st, n);
    expect_error_close(fd, KVMUX_ERR_PROTOCOL, 0, "Q4 v2");
    close(fd);

    /* Q5: the first of two MAX_OUTSTANDING entries is out of range. */
    n = put_setting(st, KVMUX_SETTING_MAX_OUTSTANDING, 0);
    n += put_setting(st + n, KVMUX_SETTING_MAX_OUTSTANDING, 16);
    fd = hello_raw(port, 0, 0, 1, 1, st, n);
    expect_error_close(fd, KVMUX_ERR_PROTOCOL, 0, "Q5");
    close(fd);
    /* The reverse order is fine (the last valid value counts). */
    n = put_setting(st, KVMUX_SETTING_MAX_OUTSTANDING, 16);
    n += put_setting(st + n, KVMUX_SETTING_MAX_OUTSTANDING, 32);
    fd = hello_raw(port, 0, 0, 1, 1, st, n);
    CHECK_EQ(read_raw(fd, &f), KVMUX_FRAME_HELLO_ACK);
    close(fd);

    /* Q6: an ERROR as the very first frame: closed without a frame. */
    fd = test_connect_raw(port, IO_MS);
    REQUIRE(fd >= 0);
    uint8_t eb[KVMUX_FRAME_HDR_LEN + 16];
    size_t en = kvmux_encode_error(eb, KVMUX_HANDSHAKE_VERSION, 0, KVMUX_ERR_INTERNAL, "bye");
    REQUIRE(test_write_all(fd, eb, en) == 0);
    CHECK_EQ(read_raw(fd, &f), 0); /* EOF, no ERROR answering the ERROR */
    close(fd);

    /* Q8: before the handshake the frame limit is 4096 bytes: a header
     * announcing 4097 is refused at once (the body is never sent). */
    fd = test_connect_raw(port, IO_MS);
    REQUIRE(fd >= 0);
    uint8_t h[KVMUX_FRAME_HDR_LEN] = {KVMUX_MAGIC, 1, KVMUX_FRAME_HELLO, 0, 0, 0, 0, 0,
                                      0, 2, 0, 3, 0, 0, 0, 0};
    kvmux_store_u32be(h + 12, KVMUX_MIN_FRAME + 1 - KVMUX_FRAME_HDR_LEN);
    REQUIRE(test_write_all(fd, h, sizeof h) == 0);
    int t = read_raw(fd, &f);
    CHECK_EQ(t, KVMUX_FRAME_ERROR);
    if (t == KVMUX_FRAME_ERROR) {
        CHECK_EQ(f.code, KVMUX_ERR_FRAME_TOO_LARGE);
        CHECK_EQ(f.version, KVMUX_HANDSHAKE_VERSION);
    }
    close(fd);
    /* 4096 exactly passes the size check (and fails the HELLO's shape:
     * a settings block that long is more than 32 entries). */
    fd = test_connect_raw(port, IO_MS);
    REQUIRE(fd >= 0);
    kvmux_store_u32be(h + 12, KVMUX_MIN_FRAME - KVMUX_FRAME_HDR_LEN);
    REQUIRE(test_write_all(fd, h, sizeof h) == 0);
    expect_error_close(fd, KVMUX_ERR_BAD_LENGTH, 0, "Q8 4096");
    close(fd);
}

static void test_auth_rules(void) {
    static test_server s;
    const char *const args[] = {"--requirepass", "s3cret", NULL};
    v2_start_server(&s, args);
    uint8_t st[32 * KVMUX_SETTING_ENTRY_LEN];
    kvmux_frame f;
    /* Q9: a setting between AUTH_TOKEN_LEN and the AUTH_TOKEN entries. */
    size_t n = put_setting(st, KVMUX_SETTING_AUTH_TOKEN_LEN, 6);
    n += put_setting(st + n, KVMUX_SETTING_MAX_OUTSTANDING, 64);
    n += put_setting(st + n, KVMUX_SETTING_AUTH_TOKEN, 0x73336372u);
    n += put_setting(st + n, KVMUX_SETTING_AUTH_TOKEN, 0x65740000u);
    int fd = hello_raw(s.port, 0, 0, 1, 1, st, n);
    CHECK_EQ(read_raw(fd, &f), KVMUX_FRAME_HELLO_ACK);
    close(fd);
    /* Q3 with a token configured: AUTH_TOKEN_LEN 0 is a malformed token. */
    n = default_settings(st);
    n += put_setting(st + n, KVMUX_SETTING_AUTH_TOKEN_LEN, 0);
    fd = hello_raw(s.port, 0, 0, 1, 1, st, n);
    expect_error_close(fd, KVMUX_ERR_AUTH, 0, "Q3 with a token");
    close(fd);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

static void test_open_rules(uint16_t port) {
    v2conn c;
    kvmux_frame f;
    /* Q1: a client PING with request_id 0 gets its PONG (v1 and v2). */
    for (int v = 1; v <= 2; v++) {
        REQUIRE(v2_connect(&c, port, v, NULL) == 0);
        uint8_t op[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        REQUIRE(v2_send(&c, KVMUX_FRAME_PING, 0, 0, 0, op, 8, NULL, 0, NULL, 0, 0, 0) == 0);
        REQUIRE(v2_read(&c, &f, IO_MS) == 1);
        CHECK_EQ(f.type, KVMUX_FRAME_PONG);
        CHECK_EQ(f.request_id, 0);
        CHECK(f.extras_len == 8 && memcmp(f.extras, op, 8) == 0);
        v2_check_get(&c, 1, "cf:none", KVMUX_STATUS_NOT_FOUND); /* still open */
        /* A PING's reserved code is ignored; the PONG's is 0. */
        REQUIRE(v2_send(&c, KVMUX_FRAME_PING, 0, 5, 7, op, 8, NULL, 0, NULL, 0, 0, 0) == 0);
        REQUIRE(v2_read(&c, &f, IO_MS) == 1);
        CHECK(f.type == KVMUX_FRAME_PONG && f.request_id == 5 && f.code == 0);
        v2_close(&c, 0);
    }

    /* An ERROR is never answered, even one in the wrong header version
     * (2 on a v1 connection): the server just closes. */
    REQUIRE(v2_connect(&c, port, 1, NULL) == 0);
    c.version = 2;
    REQUIRE(v2_send(&c, KVMUX_FRAME_ERROR, 0, 0, KVMUX_ERR_INTERNAL, NULL, 0, NULL, 0, "x", 1,
                    0, 0) == 0);
    CHECK_EQ(v2_read(&c, &f, IO_MS), 0); /* EOF, no frame */
    v2_close(&c, 0);

    /* Q7: HELLO_ACK to the server after the handshake: UNEXPECTED_FRAME
     * (direction before state); a second HELLO: HANDSHAKE. */
    uint8_t st[64];
    size_t n = default_settings(st);
    REQUIRE(v2_connect(&c, port, 1, NULL) == 0);
    c.version = KVMUX_HANDSHAKE_VERSION;
    REQUIRE(v2_send(&c, KVMUX_FRAME_HELLO_ACK, 0, 0, 1, NULL, 0, "x", 1, st, (uint32_t)n, 0,
                    0) == 0);
    expect_error_close(c.fd, KVMUX_ERR_UNEXPECTED_FRAME, 0, "Q7 HELLO_ACK");
    v2_close(&c, 0);
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    uint8_t ext[2] = {1, 2};
    c.version = KVMUX_HANDSHAKE_VERSION;
    REQUIRE(v2_send(&c, KVMUX_FRAME_HELLO, 0, 0, 0, ext, 2, "x", 1, st, (uint32_t)n, 0, 0) ==
            0);
    expect_error_close(c.fd, KVMUX_ERR_HANDSHAKE, 0, "Q7 HELLO");
    v2_close(&c, 0);

    /* Q14: GOAWAY with request_id 5 sent to the server: UNEXPECTED_FRAME
     * (direction before the id rule). */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    uint8_t ge[8] = {0};
    REQUIRE(v2_send(&c, KVMUX_FRAME_GOAWAY, 0, 5, 0, ge, 8, NULL, 0, NULL, 0, 0, 0) == 0);
    REQUIRE(v2_read(&c, &f, IO_MS) == 1);
    CHECK(f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_UNEXPECTED_FRAME);
    CHECK(test_wait_closed(c.fd, IO_MS));
    v2_close(&c, 0);

    /* Q2: a CONTINUATION's code is ignored. */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    REQUIRE(v2_set_first(&c, 1, "cf:cont", "ab", 2, 4, 0, 0) == 0);
    REQUIRE(v2_send(&c, KVMUX_FRAME_CONTINUATION, 0, 1, 5, NULL, 0, NULL, 0, "cd", 2, 0, 0) ==
            0);
    REQUIRE(v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 1, IO_MS, NULL, NULL) == 1);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    v2_close(&c, 0);

    /* Q11: "-0" is not a canonical integer. */
    REQUIRE(v2_connect(&c, port, 1, NULL) == 0);
    REQUIRE(v2_set(&c, 1, "cf:neg0", "-0", 2) == 0);
    REQUIRE(v2_read(&c, &f, IO_MS) == 1);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    uint8_t d[8];
    kvmux_store_u64be(d, 1);
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, 0, 2, KVMUX_OP_INCR, d, 8, "cf:neg0", 7, NULL, 0,
                    0, 0) == 0);
    REQUIRE(v2_read(&c, &f, IO_MS) == 1);
    CHECK(f.request_id == 2 && f.code == KVMUX_STATUS_NOT_INTEGER);
    v2_close(&c, 0);
}

/* Q10: reusing the id of a request the server has not answered. */
static void test_id_reuse(uint16_t port) {
    v2conn c;
    kvmux_frame f;
    /* Reuse after the answer is fine: the same id twice in a row. */
    REQUIRE(v2_connect(&c, port, 1, NULL) == 0);
    v2_check_get(&c, 9, "cf:reuse", KVMUX_STATUS_NOT_FOUND);
    v2_check_get(&c, 9, "cf:reuse", KVMUX_STATUS_NOT_FOUND);
    /* v1: a parked WAIT holds id 6; a GET with id 6 is a connection error,
     * and no RESPONSE 6 comes first. */
    uint8_t w[12];
    kvmux_store_u64be(w, 0); /* absent: parks until it exists */
    kvmux_store_u32be(w + 8, 10000);
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, 0, 6, KVMUX_OP_WAIT, w, 12, "cf:reuse", 8, NULL, 0,
                    0, 0) == 0);
    v2_check_get(&c, 7, "cf:reuse", KVMUX_STATUS_NOT_FOUND); /* the WAIT is parked */
    REQUIRE(v2_get(&c, 6, "cf:reuse") == 0);
    expect_error_close(c.fd, KVMUX_ERR_PROTOCOL, 6, "Q10 v1 WAIT");
    v2_close(&c, 0);

    /* v2: an upload answered early (DEADLINE 0) whose rest has not been
     * sent keeps its id in use: a GET with it is a connection error. */
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    uint8_t chunk[1000];
    memset(chunk, 'r', sizeof chunk);
    REQUIRE(v2_set_first(&c, 3, "cf:up", chunk, sizeof chunk, 3000, KVMUX_FLAG_DEADLINE, 0) ==
            0);
    REQUIRE(v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 3, IO_MS, NULL, NULL) == 1);
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT);
    REQUIRE(v2_get(&c, 3, "cf:up") == 0);
    int r, responses = 0, err = 0;
    while ((r = v2_read(&c, &f, IO_MS)) == 1) {
        if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == 3) responses++;
        if (f.type == KVMUX_FRAME_ERROR) {
            CHECK(f.code == KVMUX_ERR_PROTOCOL && f.request_id == 3);
            err = 1;
            break;
        }
    }
    CHECK(err && responses == 0);
    CHECK(test_wait_closed(c.fd, IO_MS));
    v2_close(&c, 0);
}

/* Frames that are not the one awaited: track the windows the server
 * grants back. */
typedef struct win {
    int64_t conn_granted;
    int responses_2;
} win;

static void on_skip(const kvmux_frame *f, void *ud) {
    win *w = ud;
    if (f->type == KVMUX_FRAME_WINDOW_UPDATE && f->request_id == 0)
        w->conn_granted += kvmux_window_update_increment(f);
    if (f->type == KVMUX_FRAME_RESPONSE && f->request_id == 2) w->responses_2++;
}

/* Q13: the window of an upload answered early comes back, whether the
 * client finishes the message or CANCELs it. Server windows: 64 KiB per
 * message and per connection, so an unreturned byte would stall the
 * next upload for good. */
static void test_early_answer_windows(void) {
    static test_server s;
    const char *const args[] = {"--initial-window", "65536", "--connection-window", "65536",
                                NULL};
    v2_start_server(&s, args);
    v2conn c;
    kvmux_frame f;
    REQUIRE(v2_connect(&c, s.port, 2, NULL) == 0);
    REQUIRE(c.server.initial_window == 65536 && c.server.connection_window == 65536);
    static uint8_t v[65536];
    memset(v, 'w', sizeof v);
    win w = {0, 0};
    int64_t sent = 0;
    /* Upload 1, answered early, finished: 64 KiB announced, 32 KiB sent
     * before the answer, the rest after it. */
    REQUIRE(v2_set_first(&c, 1, "cf:win", v, 32768, 65536, KVMUX_FLAG_DEADLINE, 0) == 0);
    sent += 32768;
    REQUIRE(v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 1, IO_MS, on_skip, &w) == 1);
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT);
    REQUIRE(v2_continuation(&c, 1, v, 32768, 0) == 0);
    sent += 32768;
    /* Upload 2, answered early, then CANCELed instead of finished: one
     * RESPONSE only (the TIMEOUT), and the id is free again after. */
    REQUIRE(v2_ping(&c, 1) == 0); /* barrier: upload 1's grants are out */
    REQUIRE(v2_read_until(&c, &f, KVMUX_FRAME_PONG, 0, IO_MS, on_skip, &w) == 1);
    int64_t avail = 65536 - sent + w.conn_granted;
    CHECK(avail > 32768); /* less than half a window is ever withheld */
    REQUIRE(avail >= 16384);
    REQUIRE(v2_set_first(&c, 2, "cf:win", v, 16384, 65536, KVMUX_FLAG_DEADLINE, 0) == 0);
    sent += 16384;
    REQUIRE(v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 2, IO_MS, on_skip, &w) == 1);
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT);
    REQUIRE(v2_cancel(&c, 2) == 0);
    REQUIRE(v2_ping(&c, 2) == 0);
    REQUIRE(v2_read_until(&c, &f, KVMUX_FRAME_PONG, 0, IO_MS, on_skip, &w) == 1);
    CHECK_EQ(w.responses_2, 0); /* no second RESPONSE for the canceled id */
    avail = 65536 - sent + w.conn_granted;
    CHECK(avail > 32768);
    /* The id is free: a GET with it is answered normally. */
    v2_check_get(&c, 2, "cf:win", KVMUX_STATUS_NOT_FOUND);
    /* And a whole-window upload still goes through: nothing was lost. */
    int64_t msg = 65536;
    uint32_t off = 0, total = 65536;
    uint32_t first = (uint32_t)(avail < 32768 ? avail : 32768);
    REQUIRE(v2_set_first(&c, 4, "cf:win", v, first, total, 0, 0) == 0);
    off = first;
    msg -= first;
    avail -= first;
    int done = 0;
    for (int guard = 0; guard < 1000 && !done; guard++) {
        uint32_t can = (uint32_t)(msg < avail ? msg : avail);
        if (off < total && can > 0) {
            uint32_t k = total - off < can ? total - off : can;
            REQUIRE(v2_continuation(&c, 4, v + off, k, off + k < total) == 0);
            off += k;
            msg -= k;
            avail -= k;
            continue;
        }
        REQUIRE(v2_read(&c, &f, IO_MS) == 1);
        if (f.type == KVMUX_FRAME_WINDOW_UPDATE) {
            if (f.request_id == 0) avail += kvmux_window_update_increment(&f);
            else msg += kvmux_window_update_increment(&f);
        } else if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == 4) {
            CHECK_EQ(f.code, KVMUX_STATUS_OK);
            done = 1;
        }
    }
    CHECK(done);
    v2_close_and_stop(&c, &s, 10000);
}

int main(void) {
    static test_server s;
    v2_start_server(&s, NULL);
    test_handshake_rules(s.port);
    test_open_rules(s.port);
    test_id_reuse(s.port);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    test_auth_rules();
    test_early_answer_windows();
    return test_report();
}
