/* kvmuxd protocol v2, fault side, over raw sockets: GOAWAY on SIGTERM with
 * requests in flight (accepted ones answered, later ones SHUTTING_DOWN,
 * exit 0; a v1 connection keeps the v1 drain); the drain deadline cutting
 * an unfinished upload and a stalled response; --idle-timeout (idle
 * connections closed with ERROR TIMEOUT, busy ones kept); --write-timeout
 * (a client that stops reading is dropped); PING and CANCEL floods (ERROR
 * FLOOD + close); a client killed in the middle of an upload, a stalled
 * response and a parked WAIT (the server frees everything: under ASan a
 * leak would fail the exit status checked at the end). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

static void skip_nothing(const kvmux_frame *f, void *ud) {
    (void)f;
    (void)ud;
}

/* Store n zero bytes at key with request id 1 on a (the answer must come
 * within 2 s: REQUIRE) and put its status in *status. Returns the value
 * buffer; the caller frees it. */
static uint8_t *set_zeros(v2conn *a, const char *key, uint32_t n, uint8_t *status) {
    kvmux_frame f;
    uint8_t *v = calloc(1, n);
    REQUIRE(v);
    REQUIRE(v2_set(a, 1, key, v, n) == 0);
    REQUIRE(v2_read(a, &f, 2000) == 1);
    *status = f.code;
    return v;
}

static void test_goaway(void) {
    static test_server s;
    const char *const args[] = {"--shutdown-timeout", "3000", NULL};
    v2_start_server(&s, args);
    v2conn a, b;
    kvmux_frame f;
    REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
    REQUIRE(a.version == 2);
    REQUIRE(v2_connect(&b, s.port, 1, NULL) == 0);
    REQUIRE(b.version == 1);
    uint8_t chunk[8192];
    memset(chunk, 'g', sizeof chunk);
    /* In flight on a: a parked WAIT (800 ms), an upload (1/3 sent). */
    REQUIRE(v2_wait(&a, 1, "g:k", 0, 800) == 0);
    REQUIRE(v2_set_first(&a, 2, "g:up", chunk, sizeof chunk, 3 * sizeof chunk, 0, 0) == 0);
    REQUIRE(v2_get(&a, 3, "g:x") == 0);
    int r = v2_read_until(&a, &f, KVMUX_FRAME_RESPONSE, 3, 2000, skip_nothing, NULL);
    REQUIRE(r == 1);
    CHECK_EQ(f.code, KVMUX_STATUS_NOT_FOUND);
    /* In flight on b (v1): a parked WAIT. */
    REQUIRE(v2_wait(&b, 1, "g:k", 0, 800) == 0);
    test_sleep_ms(50);
    int64_t t0 = test_now_ms();
    REQUIRE(kill(s.pid, SIGTERM) == 0);

    r = v2_read_until(&a, &f, KVMUX_FRAME_GOAWAY, 0, 2000, skip_nothing, NULL);
    REQUIRE(r == 1);
    CHECK_EQ(kvmux_goaway_last_id(&f), 3);
    CHECK_EQ(kvmux_goaway_error(&f), 0);
    /* Requests read after GOAWAY: SHUTTING_DOWN, not processed. */
    REQUIRE(v2_set(&a, 4, "g:late", "x", 1) == 0);
    r = v2_read_until(&a, &f, KVMUX_FRAME_RESPONSE, 4, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_SHUTTING_DOWN);
    REQUIRE(v2_set_first(&a, 5, "g:late", chunk, 100, 200, 0, 0) == 0);
    r = v2_read_until(&a, &f, KVMUX_FRAME_RESPONSE, 5, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_SHUTTING_DOWN);
    REQUIRE(v2_continuation(&a, 5, chunk, 100, 0) == 0); /* dropped quietly */
    /* The accepted upload still completes. */
    REQUIRE(v2_continuation(&a, 2, chunk, sizeof chunk, 1) == 0);
    REQUIRE(v2_continuation(&a, 2, chunk, sizeof chunk, 0) == 0);
    r = v2_read_until(&a, &f, KVMUX_FRAME_RESPONSE, 2, 2000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_OK);
    /* The accepted WAIT gets its own answer (its timeout). */
    r = v2_read_until(&a, &f, KVMUX_FRAME_RESPONSE, 1, 3000, skip_nothing, NULL);
    CHECK(r == 1 && f.code == KVMUX_STATUS_TIMEOUT);
    /* Then the connection ends: ERROR SHUTTING_DOWN, close. */
    r = v2_read(&a, &f, 3000);
    CHECK(r == 1 && f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_SHUTTING_DOWN);
    CHECK(test_wait_closed(a.fd, 3000));
    CHECK(test_now_ms() - t0 < 2500); /* did not wait for the deadline */

    /* v1: no GOAWAY; the WAIT's answer, then ERROR SHUTTING_DOWN. */
    r = v2_read(&b, &f, 3000);
    CHECK(r == 1 && f.type == KVMUX_FRAME_RESPONSE && f.request_id == 1 &&
          f.code == KVMUX_STATUS_TIMEOUT);
    r = v2_read(&b, &f, 3000);
    CHECK(r == 1 && f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_SHUTTING_DOWN);
    v2_close(&b, 0);
    v2_close_and_stop(&a, &s, 10000);
}

/* The drain deadline cuts what never finishes: an upload the client
 * abandons and a response the client never grants window for. */
static void test_goaway_deadline(void) {
    static test_server s;
    const char *const args[] = {"--shutdown-timeout", "300", NULL};
    v2_start_server(&s, args);
    v2conn a;
    kvmux_frame f;
    REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
    uint32_t big = 3u * 1024 * 1024;
    uint8_t *v = calloc(1, big);
    REQUIRE(v);
    /* Store a 3 MiB value (window-respecting upload in 512 KiB steps). */
    uint32_t sent = 0, step = 512 * 1024;
    int64_t msg = a.server.initial_window, conn = a.server.connection_window;
    REQUIRE(v2_set_first(&a, 1, "gd:big", v, step, big, 0, 0) == 0);
    sent = step;
    msg -= step;
    conn -= step;
    int done = 0;
    for (int guard = 0; guard < 1000 && !done; guard++) {
        if (sent < big && msg >= step && conn >= step) {
            REQUIRE(v2_continuation(&a, 1, v + sent, step, sent + step < big) == 0);
            sent += step;
            msg -= step;
            conn -= step;
            continue;
        }
        REQUIRE(v2_read(&a, &f, 3000) == 1);
        if (f.type == KVMUX_FRAME_WINDOW_UPDATE) {
            if (f.request_id == 0) conn += kvmux_window_update_increment(&f);
            else msg += kvmux_window_update_increment(&f);
        } else if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == 1) {
            CHECK_EQ(f.code, KVMUX_STATUS_OK);
            done = 1;
        }
    }
    REQUIRE(done);
    /* A GET of it we never grant window for, and an abandoned upload. */
    REQUIRE(v2_get(&a, 2, "gd:big") == 0);
    REQUIRE(v2_set_first(&a, 3, "gd:up", v, 1000, 5000, 0, 0) == 0);
    test_sleep_ms(100);
    REQUIRE(kill(s.pid, SIGTERM) == 0);
    int goaway = 0, up_answer = 0, err = 0, frames = 0, get_final = 0;
    int64_t t0 = test_now_ms();
    for (int guard = 0; guard < 10000; guard++) {
        int r = v2_read(&a, &f, 3000);
        if (r != 1) break;
        frames++;
        if (f.type == KVMUX_FRAME_GOAWAY) goaway = 1;
        if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == 3) {
            up_answer = 1;
            CHECK_EQ(f.code, KVMUX_STATUS_SHUTTING_DOWN);
        }
        /* The stalled response's final RESPONSE (its first fragment,
         * with MORE, came earlier): SHUTTING_DOWN, before the ERROR, so
         * every request gets exactly one final RESPONSE (section 15.5). */
        if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == 2 && !kvmux_frame_has_more(&f)) {
            get_final++;
            CHECK_EQ(f.code, KVMUX_STATUS_SHUTTING_DOWN);
        }
        if (f.type == KVMUX_FRAME_ERROR) {
            err = 1;
            CHECK_EQ(f.code, KVMUX_ERR_SHUTTING_DOWN);
            break;
        }
    }
    CHECK(goaway && up_answer && err);
    CHECK_EQ(get_final, 1);
    int64_t took = test_now_ms() - t0;
    CHECK(took >= 200 && took < 3000);
    CHECK(test_wait_closed(a.fd, 3000));
    free(v);
    v2_close_and_stop(&a, &s, 10000);
}

static void test_idle(void) {
    static test_server s;
    const char *const args[] = {"--idle-timeout", "300", NULL};
    v2_start_server(&s, args);
    v2conn a, b, c;
    kvmux_frame f;
    int64_t t0 = test_now_ms();
    REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
    REQUIRE(v2_connect(&b, s.port, 2, NULL) == 0);
    REQUIRE(v2_connect(&c, s.port, 1, NULL) == 0);
    REQUIRE(v2_wait(&b, 1, "idle:k", 0, 1000) == 0);
    /* c keeps talking: PING every 100 ms for 800 ms. */
    for (int i = 0; i < 8; i++) {
        REQUIRE(v2_ping(&c, (uint32_t)i) == 0);
        REQUIRE(v2_read(&c, &f, 1000) == 1);
        CHECK_EQ(f.type, KVMUX_FRAME_PONG);
        test_sleep_ms(100);
    }
    /* a, idle from the start, was closed at ~300 ms with ERROR TIMEOUT. */
    REQUIRE(v2_read(&a, &f, 100) == 1);
    CHECK(f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_TIMEOUT);
    CHECK(test_wait_closed(a.fd, 1000));
    /* b's parked WAIT keeps it open; answered at ~1 s, closed ~300 ms
     * later. */
    REQUIRE(v2_read(&b, &f, 3000) == 1);
    CHECK(f.type == KVMUX_FRAME_RESPONSE && f.code == KVMUX_STATUS_TIMEOUT);
    CHECK(test_now_ms() - t0 >= 900);
    REQUIRE(v2_read(&b, &f, 3000) == 1);
    CHECK(f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_TIMEOUT);
    CHECK(test_now_ms() - t0 >= 1200);
    /* c (v1) too, once quiet. */
    REQUIRE(v2_read(&c, &f, 3000) == 1);
    CHECK(f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_TIMEOUT);
    v2_close(&b, 0);
    v2_close(&c, 0);
    v2_close_and_stop(&a, &s, 10000);
}

static void test_write_timeout(void) {
    static test_server s;
    const char *const args[] = {"--write-timeout", "300", "--idle-timeout", "0", NULL};
    v2_start_server(&s, args);
    v2conn a;
    REQUIRE(v2_connect(&a, s.port, 1, NULL) == 0);
    int small = 4096;
    setsockopt(a.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    uint32_t n = 1000 * 1000;
    uint8_t st;
    uint8_t *v = set_zeros(&a, "wt:k", n, &st);
    CHECK_EQ(st, KVMUX_STATUS_OK);
    /* 40 MB of responses that we do not read. */
    for (uint32_t i = 0; i < 40; i++) REQUIRE(v2_get(&a, 10 + i, "wt:k") == 0);
    test_sleep_ms(1500);
    /* Now read: the server gave up on us, so the stream ends early. */
    uint64_t got = 0;
    uint8_t buf[65536];
    for (int i = 0; i < 100000; i++) {
        ssize_t r = recv(a.fd, buf, sizeof buf, 0);
        if (r <= 0) break;
        got += (uint64_t)r;
    }
    CHECK(got < 40ull * n);
    v2_close(&a, 0);
    free(v);
    /* The server is fine. */
    REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
    v2_check_get(&a, 1, "nope", KVMUX_STATUS_NOT_FOUND);
    v2_close_and_stop(&a, &s, 10000);
}

static void test_floods(void) {
    static test_server s;
    const char *const args[] = {"--max-ping-rate", "20", "--max-cancel-rate", "20", NULL};
    v2_start_server(&s, args);
    for (int version = 1; version <= 2; version++) {
        v2conn a;
        kvmux_frame f;
        REQUIRE(v2_connect(&a, s.port, version, NULL) == 0);
        for (uint32_t i = 0; i < 200; i++)
            if (v2_ping(&a, i) != 0) break;
        int pongs = 0, err = 0;
        for (int i = 0; i < 300; i++) {
            if (v2_read(&a, &f, 2000) != 1) break;
            if (f.type == KVMUX_FRAME_PONG) pongs++;
            if (f.type == KVMUX_FRAME_ERROR) {
                err = f.code;
                break;
            }
        }
        CHECK(pongs >= 10 && pongs <= 40);
        CHECK_EQ(err, version == 2 ? KVMUX_ERR_FLOOD : KVMUX_ERR_PROTOCOL);
        CHECK(test_wait_closed(a.fd, 2000));
        v2_close(&a, 0);
    }
    /* CANCEL flood (unknown ids: each one still costs a lookup). */
    v2conn a;
    kvmux_frame f;
    REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
    for (uint32_t i = 0; i < 200; i++)
        if (v2_cancel(&a, 1000 + i) != 0) break;
    int r = v2_read(&a, &f, 2000);
    CHECK(r == 1 && f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_FLOOD);
    CHECK(test_wait_closed(a.fd, 2000));
    v2_close(&a, 0);
    /* A moderate rate is fine: 10 CANCELs, 10 PINGs spread over 1 s. */
    REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
    for (uint32_t i = 0; i < 10; i++) {
        REQUIRE(v2_cancel(&a, 5000 + i) == 0);
        REQUIRE(v2_ping(&a, i) == 0);
        REQUIRE(v2_read(&a, &f, 2000) == 1);
        CHECK_EQ(f.type, KVMUX_FRAME_PONG);
        test_sleep_ms(100);
    }
    v2_close_and_stop(&a, &s, 10000);
}

/* The client dies (RST) with an upload half-way, a stalled fragmented
 * response, and a parked WAIT; the server frees them all. */
static void test_kill_mid_upload(void) {
    static test_server s;
    v2_start_server(&s, NULL);
    for (int round = 0; round < 3; round++) {
        v2conn a;
        REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
        /* A 200 KB value, for the stalled download (status not checked). */
        uint8_t st;
        uint8_t *v = set_zeros(&a, "kill:v", 200 * 1000, &st);
        REQUIRE(v2_wait(&a, 2, "kill:w", 0, 60000) == 0);
        /* A fragmented response (200 KB > --fragment-size) not read. */
        REQUIRE(v2_get(&a, 3, "kill:v") == 0);
        /* An upload of 8 MiB, 900 KB of it sent (within the window). */
        REQUIRE(v2_set_first(&a, 4, "kill:up", v, 100000, 8u * 1024 * 1024, 0, 0) == 0);
        for (int i = 0; i < 8; i++) REQUIRE(v2_continuation(&a, 4, v, 100000, 1) == 0);
        test_sleep_ms(100);
        v2_close(&a, 1); /* RST */
        free(v);
    }
    /* Responses stalled on window: a 1.9 MB value (one frame in: single
     * frames are not flow-controlled) read 4 times with our 1 MiB window
     * never granted back, then RST. */
    {
        v2conn a;
        REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
        uint8_t st;
        uint8_t *v = set_zeros(&a, "kill:v2", 1900 * 1000, &st);
        CHECK_EQ(st, KVMUX_STATUS_OK);
        for (uint32_t i = 0; i < 4; i++) REQUIRE(v2_get(&a, 10 + i, "kill:v2") == 0);
        test_sleep_ms(200);
        v2_close(&a, 1);
        free(v);
    }
    /* Still serving. */
    v2conn a;
    REQUIRE(v2_connect(&a, s.port, 2, NULL) == 0);
    v2_check_get(&a, 1, "kill:up", KVMUX_STATUS_NOT_FOUND); /* the upload never landed */
    /* Exit status 0: under ASan/LSan a leak would make it non-zero. */
    v2_close_and_stop(&a, &s, 10000);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    test_goaway();
    test_goaway_deadline();
    test_idle();
    test_write_timeout();
    test_floods();
    test_kill_mid_upload();
    return test_report();
}
