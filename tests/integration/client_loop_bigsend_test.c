/* Event-loop mode (kvmux_async_connect, libuv adapter) sending request
 * values larger than one frame fragmented, against the real kvmuxd (issue
 * 3, flow control):
 *   roundtrip  SET of 8 MiB and of 64 MiB, each read back with GET and
 *              compared byte for byte (the GET reply comes back fragmented
 *              too);
 *   hol        small GETs submitted one after the other (each from the
 *              previous one's callback) while a 64 MiB SET is uploading:
 *              all of them complete before the SET does (without
 *              interleaving the first GET would wait for the whole
 *              upload);
 *   cancel     kvmux_cancel of a 64 MiB SET in the middle of its upload:
 *              the callback runs once with KVMUX_ECANCELED, the server
 *              counts the CANCEL, the connection stays usable;
 *   timeout    a 64 MiB SET under a server with small windows and a short
 *              timeout: the callback runs once with KVMUX_ETIMEDOUT, the
 *              server counts the CANCEL, the connection stays usable;
 *   kill       kill -9 of the server in the middle of a 64 MiB upload: the
 *              callback runs once with a fatal code, and everything is
 *              freed (checked by ASan's leak check in the sanitizer build);
 *   v1         on a protocol v1 server a value over the frame size is
 *              still KVMUX_ETOOBIG.
 * Every uv_run is bounded by a watchdog timer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "async_util.h" /* req_of */
#include "kvmux.h"
#include "kvmux/adapters/libuv.h"
#include "loop_util.h"
#include "testutil.h"

#define MiB (1024u * 1024)

static test_server g_srv;
static int g_srv_up;

static void kill_server_at_exit(void) {
    if (g_srv_up) test_server_kill(&g_srv);
}

/* ---- helpers ---- */

typedef struct tracker {
    int calls;
    int result;
    long seq;               /* completion order */
    uint8_t *value;         /* GET: the value, taken over */
    size_t len;
    uv_loop_t *stop_loop;   /* uv_stop it when this one completes */
} tracker;

static long g_seq;

static void on_track(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    tracker *t = ud;
    t->calls++;
    t->result = result;
    t->seq = ++g_seq;
    if (reply->value) {
        free(t->value);
        t->value = reply->value; /* ours now */
        t->len = reply->value_len;
        reply->value = NULL;
        reply->value_len = 0;
    }
    if (t->stop_loop) uv_stop(t->stop_loop);
}

/* Connect and run the loop until the handshake is done. */
static kvmux_client *loop_connect(uv_loop_t *loop, uint16_t port, status_rec *st) {
    memset(st, 0, sizeof *st);
    st->stop_loop = loop;
    kvmux_client *c = loop_attach(loop, port, NULL, st);
    CHECK_EQ(run_loop(loop, 5000), 0);
    REQUIRE(st->connected == 1);
    st->stop_loop = NULL;
    return c;
}

/* SET key = v (len) and GET it back; compare. */
static void roundtrip(uv_loop_t *loop, kvmux_client *c, const char *key, size_t len,
                      uint32_t seed) {
    uint8_t *v = test_pattern(len, seed);
    tracker ts, tg;
    memset(&ts, 0, sizeof ts);
    memset(&tg, 0, sizeof tg);
    kvmux_request set = req_of(KVMUX_SET, key);
    set.value = v;
    set.value_len = len;
    CHECK_EQ(kvmux_call_async(c, &set, 60000, on_track, &ts), 0);
    /* The submit copied the value: scribbling on ours changes nothing. */
    memset(v, 0, 16);
    uint8_t *expect = test_pattern(len, seed);
    ts.stop_loop = loop;
    CHECK_EQ(run_loop(loop, 60000), 0);
    CHECK_EQ(ts.calls, 1);
    CHECK_EQ(ts.result, 0);
    kvmux_request get = req_of(KVMUX_GET, key);
    tg.stop_loop = loop;
    CHECK_EQ(kvmux_call_async(c, &get, 60000, on_track, &tg), 0);
    CHECK_EQ(run_loop(loop, 60000), 0);
    CHECK_EQ(tg.calls, 1);
    CHECK_EQ(tg.result, 0);
    CHECK_EQ(tg.len, len);
    CHECK(tg.value && tg.len == len && memcmp(tg.value, expect, len) == 0);
    printf("roundtrip: %zu MiB SET + GET, %s\n", len / MiB,
           tg.value && tg.len == len && memcmp(tg.value, expect, len) == 0 ? "equal" : "DIFFER");
    free(tg.value);
    free(expect);
    free(v);
}

/* Submitting r fails at once with KVMUX_ETOOBIG and its callback never
 * runs, not even when c is closed (which this does). */
static void check_toobig(uv_loop_t *loop, kvmux_client *c, const kvmux_request *r) {
    tracker t;
    memset(&t, 0, sizeof t);
    CHECK_EQ(kvmux_call_async(c, r, 1000, on_track, &t), KVMUX_ETOOBIG);
    kvmux_close(c);
    CHECK_EQ(run_loop(loop, 2000), 0);
    CHECK_EQ(t.calls, 0);
}

static void test_roundtrip(uv_loop_t *loop) {
    status_rec st;
    kvmux_client *c = loop_connect(loop, g_srv.port, &st);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, 2);
    CHECK(info.max_value_size >= 64 * MiB);
    CHECK(info.max_frame_size < 8 * MiB); /* so both values travel fragmented */
    roundtrip(loop, c, "lb:8", 8 * MiB, 8);
    roundtrip(loop, c, "lb:64", 64 * MiB, 64);
    /* The limit itself: the negotiated max value, not one byte more. */
    kvmux_request over = req_of(KVMUX_SET, "lb:over");
    uint8_t one = 0;
    over.value = &one; /* never read: refused on its length */
    over.value_len = (size_t)info.max_value_size + 1;
    check_toobig(loop, c, &over);
}

/* ---- small GETs while a large upload is in progress ---- */

enum { HOL_GETS = 20 };

typedef struct hol_state {
    kvmux_client *c;
    tracker set;
    int gets_done;          /* GETs answered OK */
    int gets_before_set;    /* of them, before the 64 MiB SET completed */
    int gets_failed;
    uv_loop_t *loop;
} hol_state;

/* SET lb:small = "small" (what the GETs below read) and run the loop
 * until it is answered. Returns its result. */
static int set_small(uv_loop_t *loop, kvmux_client *c) {
    tracker ts;
    memset(&ts, 0, sizeof ts);
    ts.stop_loop = loop;
    kvmux_request small = req_of(KVMUX_SET, "lb:small");
    small.value = "small";
    small.value_len = 5;
    CHECK_EQ(kvmux_call_async(c, &small, 5000, on_track, &ts), 0);
    CHECK_EQ(run_loop(loop, 5000), 0);
    return ts.result;
}

static void hol_on_get(kvmux_client *c, int result, kvmux_reply *reply, void *ud);

static void hol_submit(hol_state *h) {
    kvmux_request get = req_of(KVMUX_GET, "lb:small");
    CHECK_EQ(kvmux_call_async(h->c, &get, 30000, hol_on_get, h), 0);
}

static void hol_on_get(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    hol_state *h = ud;
    if (result == 0 && reply->value_len == 5 && memcmp(reply->value, "small", 5) == 0) {
        h->gets_done++;
        if (h->set.calls == 0) h->gets_before_set++;
    } else {
        h->gets_failed++;
    }
    if (h->gets_done + h->gets_failed < HOL_GETS) hol_submit(h);
    else if (h->set.calls) uv_stop(h->loop);
}

static void test_hol(uv_loop_t *loop) {
    status_rec st;
    kvmux_client *c = loop_connect(loop, g_srv.port, &st);
    CHECK_EQ(set_small(loop, c), 0);

    size_t len = 64 * MiB;
    uint8_t *v = test_pattern(len, 7);
    hol_state h;
    memset(&h, 0, sizeof h);
    h.c = c;
    h.loop = loop;
    kvmux_request set = req_of(KVMUX_SET, "lb:hol");
    set.value = v;
    set.value_len = len;
    h.set.stop_loop = loop; /* in case the GETs are all done first */
    CHECK_EQ(kvmux_call_async(c, &set, 60000, on_track, &h.set), 0);
    /* The first GET is submitted after the SET, and each next one only
     * once the previous one was answered. */
    hol_submit(&h);
    CHECK_EQ(run_loop(loop, 60000), 0);
    CHECK_EQ(h.set.calls, 1);
    CHECK_EQ(h.set.result, 0);
    CHECK_EQ(h.gets_failed, 0);
    CHECK_EQ(h.gets_done, HOL_GETS);
    /* The point: every small GET was answered while the 64 MiB upload
     * was still in progress (each submitted only after the previous one
     * was answered). */
    CHECK_EQ(h.gets_before_set, HOL_GETS);
    printf("hol: %d/%d chained GETs completed before the 64 MiB SET\n", h.gets_before_set,
           HOL_GETS);
    /* The value arrived intact. */
    tracker tg;
    memset(&tg, 0, sizeof tg);
    tg.stop_loop = loop;
    kvmux_request get = req_of(KVMUX_GET, "lb:hol");
    CHECK_EQ(kvmux_call_async(c, &get, 30000, on_track, &tg), 0);
    CHECK_EQ(run_loop(loop, 30000), 0);
    CHECK(tg.result == 0 && tg.len == len && memcmp(tg.value, v, len) == 0);
    free(tg.value);
    kvmux_close(c);
    CHECK_EQ(run_loop(loop, 2000), 0);
    free(v);
}

/* ---- cancel / timeout / kill in the middle of an upload ---- */

/* The server's counter name in STATS, via a loop GET-like request. */
static uint64_t stat_of(uv_loop_t *loop, kvmux_client *c, const char *name) {
    tracker t;
    memset(&t, 0, sizeof t);
    t.stop_loop = loop;
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_STATS;
    r.key = name;
    r.key_len = strlen(name);
    CHECK_EQ(kvmux_call_async(c, &r, 5000, on_track, &t), 0);
    CHECK_EQ(run_loop(loop, 5000), 0);
    CHECK_EQ(t.result, 0);
    uint64_t v = test_stat_value(t.value, t.len, name);
    free(t.value);
    return v;
}

typedef struct mid_state {
    kvmux_client *c;
    kvmux_handle set_handle;
    tracker set;
    int gets;
    int action;             /* 0 cancel, 1 kill */
    test_server *srv;
    uv_loop_t *loop;
} mid_state;

static void mid_on_get(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)reply;
    mid_state *m = ud;
    m->gets++;
    if (m->gets == 1) {
        /* One round trip behind the first fragments: the upload is in
         * progress (64 MiB take many more rounds). */
        CHECK_EQ(result, 0);
        CHECK_EQ(m->set.calls, 0);
        if (m->action == 0) {
            CHECK_EQ(kvmux_cancel(c, m->set_handle), 0);
            CHECK_EQ(m->set.calls, 0); /* completes from the loop, not inside */
        } else {
            test_server_kill(m->srv);
        }
    }
}

static void mid_start(mid_state *m, const uint8_t *v, size_t len) {
    kvmux_request set = req_of(KVMUX_SET, "lb:mid");
    set.value = v;
    set.value_len = len;
    m->set.stop_loop = m->loop;
    CHECK_EQ(kvmux_call_async_handle(m->c, &set, 60000, on_track, &m->set, &m->set_handle), 0);
    kvmux_request get = req_of(KVMUX_GET, "lb:small");
    CHECK_EQ(kvmux_call_async(m->c, &get, 30000, mid_on_get, m), 0);
}

static void test_cancel(uv_loop_t *loop, const uint8_t *v, size_t len) {
    status_rec st;
    kvmux_client *c = loop_connect(loop, g_srv.port, &st);
    uint64_t cancels0 = stat_of(loop, c, "cancels");
    mid_state m;
    memset(&m, 0, sizeof m);
    m.c = c;
    m.loop = loop;
    m.action = 0;
    mid_start(&m, v, len);
    CHECK_EQ(run_loop(loop, 30000), 0);
    CHECK_EQ(m.set.calls, 1);
    CHECK_EQ(m.set.result, KVMUX_ECANCELED);
    /* Still usable, and the server saw the CANCEL (the STATS request goes
     * after it on the wire). */
    uint64_t cancels1 = stat_of(loop, c, "cancels");
    CHECK_EQ(cancels1, cancels0 + 1);
    printf("cancel: callback %s, server cancels %llu -> %llu\n", kvmux_strerror(m.set.result),
           (unsigned long long)cancels0, (unsigned long long)cancels1);
    run_loop(loop, 200); /* the server's CANCELED reply frees the tombstone */
    CHECK_EQ(m.set.calls, 1);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    CHECK_EQ(run_loop(loop, 2000), 0);
}

static void test_timeout(uv_loop_t *loop, const uint8_t *v, size_t len) {
    /* Small windows: the upload needs a round trip per KiB (seconds for
     * 64 MiB), so it is normally still running when a 300 ms timeout
     * fires. */
    test_server s;
    const char *args[] = {"--initial-window", "1024", "--connection-window", "1024", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    /* The server enforces the same deadline (DEADLINE): when its timer
     * wins the race it answers TIMEOUT itself and there is nothing to
     * cancel (the rest of that upload still goes out). And when the
     * deadline passes before the first fragment left (copying 64 MiB
     * under TSan takes longer than 300 ms), nothing reached the server:
     * nothing to cancel either, and the next attempt doubles the
     * deadline. Each attempt is on a new connection; bounded. */
    status_rec st;
    kvmux_client *c = NULL;
    tracker t;
    uint64_t cancels = 0, expired = 0;
    int attempts = 0, tmo = 300;
    for (; attempts < 12 && cancels == 0; attempts++) {
        if (c) {
            kvmux_close(c);
            CHECK_EQ(run_loop(loop, 2000), 0);
        }
        c = loop_connect(loop, s.port, &st);
        uint64_t c0 = stat_of(loop, c, "cancels");
        uint64_t e0 = stat_of(loop, c, "deadline_expired");
        memset(&t, 0, sizeof t);
        t.stop_loop = loop;
        kvmux_request set = req_of(KVMUX_SET, "lb:tmo");
        set.value = v;
        set.value_len = len;
        CHECK_EQ(kvmux_call_async(c, &set, tmo, on_track, &t), 0);
        CHECK_EQ(run_loop(loop, 20000 + tmo), 0);
        CHECK_EQ(t.calls, 1);
        if (t.result == 0) {
            printf("timeout: attempt %d: the upload finished first\n", attempts + 1);
            continue;
        }
        CHECK_EQ(t.result, KVMUX_ETIMEDOUT);
        /* A CANCEL stopped the upload: the server counted it (the STATS
         * request goes after it on the wire). */
        cancels = stat_of(loop, c, "cancels") - c0;
        CHECK(cancels <= 1);
        /* Or the server's own timer (the same deadline) ended it first:
         * answered TIMEOUT and counted there, nothing left to cancel. */
        uint64_t e = stat_of(loop, c, "deadline_expired") - e0;
        expired += e;
        if (cancels == 0 && e == 0) {
            printf("timeout: attempt %d: %d ms passed before the upload began\n",
                   attempts + 1, tmo);
            if (tmo < 8000) tmo *= 2;
        }
    }
    /* Which timer wins depends on the machine's state (under TSan on an
     * idle machine the server's won every attempt): the request must have
     * been ended by exactly one of them, never left running. */
    CHECK(cancels == 1 || expired >= 1);
    if (cancels == 0) printf("timeout: the server's deadline won every attempt (%llu)\n",
                             (unsigned long long)expired);
    tracker tp;
    memset(&tp, 0, sizeof tp);
    tp.stop_loop = loop;
    kvmux_request ping;
    memset(&ping, 0, sizeof ping);
    ping.op = KVMUX_PING;
    CHECK_EQ(kvmux_call_async(c, &ping, 5000, on_track, &tp), 0);
    CHECK_EQ(run_loop(loop, 5000), 0);
    CHECK_EQ(tp.result, 0);
    CHECK_EQ(t.calls, 1);
    printf("timeout: callback %s, CANCEL counted by the server (attempt %d)\n",
           kvmux_strerror(t.result), attempts);
    kvmux_close(c);
    CHECK_EQ(run_loop(loop, 2000), 0);
    test_server_stop(&s, 5000);
}

static void test_kill(uv_loop_t *loop, const uint8_t *v, size_t len) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    status_rec st;
    kvmux_client *c = loop_connect(loop, s.port, &st);
    set_small(loop, c);
    mid_state m;
    memset(&m, 0, sizeof m);
    m.c = c;
    m.loop = loop;
    m.action = 1;
    m.srv = &s;
    mid_start(&m, v, len);
    CHECK_EQ(run_loop(loop, 30000), 0);
    CHECK_EQ(m.set.calls, 1);
    CHECK(kvmux_is_fatal(m.set.result));
    CHECK(st.calls == 2 && kvmux_is_fatal(st.last));
    printf("kill: upload callback %s (once), status %s\n", kvmux_strerror(m.set.result),
           kvmux_strerror(st.last));
    run_loop(loop, 100);
    CHECK_EQ(m.set.calls, 1);
    kvmux_close(c);
    CHECK_EQ(run_loop(loop, 2000), 0);
    CHECK_EQ(m.set.calls, 1);
}

/* ---- a v1 server ---- */

static void test_v1(uv_loop_t *loop) {
    test_server s;
    const char *args[] = {"--max-protocol", "1", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    status_rec st;
    kvmux_client *c = loop_connect(loop, s.port, &st);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, 1);
    size_t len = (size_t)info.max_frame_size + 1;
    uint8_t *v = test_pattern(len, 1);
    kvmux_request set = req_of(KVMUX_SET, "lb:v1");
    set.value = v;
    set.value_len = len;
    check_toobig(loop, c, &set);
    free(v);
    test_server_stop(&s, 5000);
}

int main(void) {
    REQUIRE(test_server_start(&g_srv, NULL) == 0);
    g_srv_up = 1;
    atexit(kill_server_at_exit);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    test_roundtrip(&loop);
    test_hol(&loop);
    size_t len = 64 * MiB;
    uint8_t *v = test_pattern(len, 3);
    test_cancel(&loop, v, len);
    test_timeout(&loop, v, len);
    test_kill(&loop, v, len);
    free(v);
    test_v1(&loop);
    CHECK_EQ(uv_loop_close(&loop), 0);
    g_srv_up = 0;
    test_server_stop(&g_srv, 5000);
    return test_report();
}
