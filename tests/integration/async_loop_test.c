/* The event-loop mode of libkvmux with the libuv adapter
 * (include/kvmux/adapters/libuv.h) on a real uv_loop_t, against the real
 * kvmuxd.
 *
 * Covers: the non-blocking connect and handshake (status callback with 0),
 * requests submitted before the handshake has finished (they wait in the
 * backlog); every callback on the loop thread, exactly once; server errors;
 * a WAIT resolved out of order while thousands of GETs proceed on the same
 * connection, then woken by a SET submitted from a callback; client-side
 * timeouts through the loop timer; the try variant's KVMUX_EAGAIN; futures
 * polled from the loop (and the blocking wait refused); the blocking API
 * refused on a loop client; async depth 64 x 100,000 ops on one connection
 * with every reply checked; kvmux_close from inside a callback (deferred)
 * and kvmux_close with thousands pending (every callback runs with
 * KVMUX_ECLOSED before it returns, the adapter's handles are released so
 * uv_run returns); kill -9 of the server (status callback and every
 * callback with a fatal code); a connect to a closed port.
 *
 * Every uv_run is bounded by a watchdog timer that stops the loop, so a
 * bug fails the checks instead of hanging the test. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>
#include <uv.h>

#include "async_util.h"
#include "kvmux.h"
#include "kvmux/adapters/libuv.h"
#include "loop_util.h"
#include "testutil.h"

static test_server g_srv;
static pthread_t g_loop_thread;



/* ---- trackers ---- */

typedef struct tracker {
    int calls;
    int result;
    uint64_t version;
    int64_t number;
    char value[64];
    int on_loop_thread;
    long seq;                /* completion order */
    uv_loop_t *stop_loop;    /* uv_stop this loop when it runs */
} tracker;

static long g_seq;

static void on_track(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    tracker *t = ud;
    t->calls++;
    t->result = result;
    t->version = reply->version;
    t->number = reply->number;
    t->value[0] = 0;
    if (reply->value) snprintf(t->value, sizeof t->value, "%s", (char *)reply->value);
    t->on_loop_thread = pthread_equal(pthread_self(), g_loop_thread) != 0;
    t->seq = ++g_seq;
    if (t->stop_loop) uv_stop(t->stop_loop);
}

/* ---- connect, basics, errors, futures ---- */

static void test_basics(uv_loop_t *loop) {
    status_rec st;
    memset(&st, 0, sizeof st);
    kvmux_client *c = loop_attach(loop, g_srv.port, NULL, &st);
    CHECK(kvmux_libuv_attach(c, loop) != 0); /* once (libuv: the fd is watched) */
    CHECK(kvmux_async_fd(c) >= 0);

    /* Submitted before the handshake: they wait in the backlog. The try
     * variant cannot go yet (no credit before HELLO_ACK). */
    tracker t[8];
    memset(t, 0, sizeof t);
    kvmux_request set = req_of(KVMUX_SET, "al:basic");
    set.value = "hello";
    set.value_len = 5;
    CHECK_EQ(kvmux_call_async(c, &set, 2000, on_track, &t[0]), 0);
    kvmux_request get = req_of(KVMUX_GET, "al:basic");
    CHECK_EQ(kvmux_call_async(c, &get, 2000, on_track, &t[1]), 0);
    CHECK_EQ(kvmux_try_call_async(c, &get, 2000, on_track, &t[7]), KVMUX_EAGAIN);
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &get, 2000, &f), 0);
    REQUIRE(f != NULL);
    /* The blocking API and blocking future waits are refused here. */
    CHECK_EQ(kvmux_ping(c, 100), KVMUX_EINVAL);
    CHECK_EQ(kvmux_future_wait(f, 100), KVMUX_EINVAL);
    CHECK_EQ(kvmux_future_wait(f, 0), KVMUX_ETIMEDOUT);
    t[1].stop_loop = loop;
    CHECK_EQ(run_loop(loop, 5000), 0);
    CHECK_EQ(st.connected, 1);
    CHECK_EQ(t[0].calls, 1);
    CHECK_EQ(t[0].result, 0);
    CHECK_EQ(t[1].calls, 1);
    CHECK_EQ(t[1].result, 0);
    CHECK(strcmp(t[1].value, "hello") == 0);
    CHECK(t[0].on_loop_thread && t[1].on_loop_thread);
    CHECK(t[0].seq < t[1].seq);
    /* The future completed in the same round (same batch of replies). */
    CHECK_EQ(kvmux_future_poll(f), 1);
    kvmux_reply r;
    CHECK_EQ(kvmux_future_result(f, &r), 0);
    CHECK(r.value && strcmp((char *)r.value, "hello") == 0);
    kvmux_reply_free(&r);
    kvmux_future_free(f);

    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK(info.max_outstanding > 0);

    /* Server errors. */
    kvmux_request miss = req_of(KVMUX_GET, "al:missing");
    CHECK_EQ(kvmux_call_async(c, &miss, 2000, on_track, &t[2]), 0);
    kvmux_request cas = req_of(KVMUX_CAS, "al:basic");
    cas.version = t[0].version + 50;
    cas.value = "x";
    cas.value_len = 1;
    CHECK_EQ(kvmux_call_async(c, &cas, 2000, on_track, &t[3]), 0);
    kvmux_request ping = req_of(KVMUX_PING, NULL);
    t[4].stop_loop = loop;
    CHECK_EQ(kvmux_try_call_async(c, &ping, 2000, on_track, &t[4]), 0);
    CHECK_EQ(run_loop(loop, 5000), 0);
    CHECK_EQ(t[2].result, KVMUX_ENOTFOUND);
    CHECK_EQ(t[3].result, KVMUX_EVERSION);
    CHECK_EQ(t[3].version, t[0].version);
    CHECK_EQ(t[4].result, 0);
    CHECK(t[2].calls == 1 && t[3].calls == 1 && t[4].calls == 1);
    CHECK_EQ(t[7].calls, 0);

    /* A client-side timeout through the loop timer: a WAIT the server
     * holds for 5 s gives up at 100 ms. */
    kvmux_request w = req_of(KVMUX_WAIT, "al:tw");
    w.wait_ms = 5000;
    t[5].stop_loop = loop;
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_call_async(c, &w, 100, on_track, &t[5]), 0);
    CHECK_EQ(run_loop(loop, 3000), 0);
    int64_t el = test_now_ms() - t0;
    CHECK_EQ(t[5].result, KVMUX_ETIMEDOUT);
    CHECK(el >= 99 && el < 1000);
    CHECK_EQ(t[5].calls, 1);

    /* Close with one request pending: its callback runs inside
     * kvmux_close; then the adapter's handles close and uv_run returns. */
    CHECK_EQ(kvmux_call_async(c, &w, 5000, on_track, &t[6]), 0);
    kvmux_close(c);
    CHECK_EQ(t[6].calls, 1);
    CHECK_EQ(t[6].result, KVMUX_ECLOSED);
    CHECK_EQ(st.calls, 1); /* no status report for kvmux_close */
    CHECK_EQ(run_loop(loop, 2000), 0); /* returns: no handle left */
    CHECK_EQ(uv_loop_alive(loop), 0);
}

/* ---- WAIT out of order while GETs proceed ---- */

typedef struct ooo {
    kvmux_client *c;
    int gets_total;
    int gets_submitted;
    int gets_done;
    int gets_bad;
    int gets_after_wait;
    int wait_calls;
    int wait_result;
    char wait_value[16];
    int set_done;
    uv_loop_t *loop;
} ooo;

static void ooo_submit_gets(ooo *o);

static void on_ooo_set(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)reply;
    ooo *o = ud;
    if (result == 0) o->set_done = 1;
}

static void on_ooo_get(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    ooo *o = ud;
    o->gets_done++;
    if (result != 0 || !reply->value || strcmp((char *)reply->value, "g") != 0) o->gets_bad++;
    if (o->wait_calls) o->gets_after_wait++;
    if (o->gets_done == o->gets_total) {
        /* Every GET is back while the WAIT is still parked: now wake it,
         * from this callback. */
        kvmux_request s = req_of(KVMUX_SET, "al:ooo");
        s.value = "w";
        s.value_len = 1;
        if (kvmux_call_async(c, &s, 2000, on_ooo_set, o) != 0) o->gets_bad++;
    } else {
        ooo_submit_gets(o);
    }
}

static void on_ooo_wait(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    ooo *o = ud;
    o->wait_calls++;
    o->wait_result = result;
    if (reply->value) snprintf(o->wait_value, sizeof o->wait_value, "%s", (char *)reply->value);
    uv_stop(o->loop);
}

/* Keep up to 256 GETs in flight. */
static void ooo_submit_gets(ooo *o) {
    kvmux_request g = req_of(KVMUX_GET, "al:ooo-g");
    while (o->gets_submitted < o->gets_total && o->gets_submitted - o->gets_done < 256) {
        if (kvmux_call_async(o->c, &g, 5000, on_ooo_get, o) != 0) {
            o->gets_bad++;
            break;
        }
        o->gets_submitted++;
    }
}

static void on_ooo_prep(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)reply;
    ooo *o = ud;
    if (result != 0) o->gets_bad++;
    kvmux_request w = req_of(KVMUX_WAIT, "al:ooo");
    w.wait_ms = 10000;
    w.version = 0;
    if (kvmux_call_async(c, &w, KVMUX_TIMEOUT_DEFAULT, on_ooo_wait, o) != 0) o->gets_bad++;
    ooo_submit_gets(o);
}

static void on_ignore(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)result;
    (void)reply;
    (void)ud;
}

static void test_wait_out_of_order(uv_loop_t *loop) {
    kvmux_client *c = loop_attach(loop, g_srv.port, NULL, NULL);
    ooo o;
    memset(&o, 0, sizeof o);
    o.c = c;
    o.loop = loop;
    o.gets_total = scaled(5000);
    kvmux_request d = req_of(KVMUX_DEL, "al:ooo");
    CHECK_EQ(kvmux_call_async(c, &d, 2000, on_ignore, NULL), 0);
    kvmux_request s = req_of(KVMUX_SET, "al:ooo-g");
    s.value = "g";
    s.value_len = 1;
    CHECK_EQ(kvmux_call_async(c, &s, 2000, on_ooo_prep, &o), 0);
    CHECK_EQ(run_loop(loop, 20000), 0);
    CHECK_EQ(o.gets_done, o.gets_total);
    CHECK_EQ(o.gets_bad, 0);
    CHECK_EQ(o.gets_after_wait, 0); /* the WAIT finished after every GET */
    CHECK_EQ(o.set_done, 1);
    CHECK_EQ(o.wait_calls, 1);
    CHECK_EQ(o.wait_result, 0);
    CHECK(strcmp(o.wait_value, "w") == 0);
    kvmux_close(c);
    CHECK_EQ(run_loop(loop, 2000), 0);
}

/* ---- depth 64 ---- */

/* A lane (async_util.h) that, once it stops, counts itself in finished
 * and stops loop when all lanes have. */
typedef struct lane {
    async_lane core;
    int *finished;
    int lanes;
    uv_loop_t *loop;
} lane;

static void lane_next(kvmux_client *c, lane *l);

static void on_lane(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    lane *l = ud;
    if (async_lane_complete(&l->core, result, reply)) {
        lane_next(c, l);
    } else if (++*l->finished == l->lanes) {
        uv_stop(l->loop);
    }
}

static void lane_next(kvmux_client *c, lane *l) {
    kvmux_request r = async_lane_request(&l->core);
    if (kvmux_call_async(c, &r, 10000, on_lane, l) != 0) {
        l->core.errors++;
        if (++*l->finished == l->lanes) uv_stop(l->loop);
    }
}

static void test_depth64(uv_loop_t *loop) {
    status_rec st;
    memset(&st, 0, sizeof st);
    st.stop_loop = loop;
    kvmux_client *c = loop_attach(loop, g_srv.port, NULL, &st);
    CHECK_EQ(run_loop(loop, 5000), 0); /* until connected */
    CHECK_EQ(st.connected, 1);
    st.stop_loop = NULL;
    enum { DEPTH = 64 };
    int total = scaled(100000);
    lane lanes[DEPTH];
    int finished = 0;
    for (int i = 0; i < DEPTH; i++) {
        memset(&lanes[i], 0, sizeof lanes[i]);
        lanes[i].core.id = i;
        lanes[i].core.ops = total / DEPTH + (i < total % DEPTH);
        snprintf(lanes[i].core.key, sizeof lanes[i].core.key, "al:d64:k%d", i);
        snprintf(lanes[i].core.ctr, sizeof lanes[i].core.ctr, "al:d64:c%d", i);
        lanes[i].finished = &finished;
        lanes[i].lanes = DEPTH;
        lanes[i].loop = loop;
        kvmux_request d = req_of(KVMUX_DEL, lanes[i].core.ctr);
        CHECK_EQ(kvmux_call_async(c, &d, 2000, on_ignore, NULL), 0);
    }
    /* The DELs go first on the same connection: the server runs one
     * connection's requests in order for these ops. */
    int64_t t0 = test_now_ms();
    for (int i = 0; i < DEPTH; i++) lane_next(c, &lanes[i]);
    CHECK_EQ(run_loop(loop, 120000), 0);
    int64_t el = test_now_ms() - t0;
    CHECK_EQ(finished, DEPTH);
    long errors = 0, done = 0;
    for (int i = 0; i < DEPTH; i++) {
        errors += lanes[i].core.errors;
        done += lanes[i].core.n;
    }
    CHECK_EQ(errors, 0);
    CHECK_EQ(done, total);
    fprintf(stderr, "loop depth64: %d ops in %lld ms (%.0f ops/s)\n", total, (long long)el,
            el > 0 ? total * 1000.0 / el : 0.0);
    kvmux_close(c);
    CHECK_EQ(run_loop(loop, 2000), 0);
}

/* ---- close from a callback; close with thousands pending ---- */

typedef struct closer {
    int calls;
    int closed;
    int resubmit_rc;
    kvmux_client *c;
} closer;

static void on_close_me(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)reply;
    closer *k = ud;
    if (k->calls++ == 0 && result == 0) {
        kvmux_close(c); /* deferred until the handler unwinds */
        kvmux_request p = req_of(KVMUX_PING, NULL);
        k->resubmit_rc = kvmux_call_async(c, &p, 1000, on_close_me, k);
    } else if (result == KVMUX_ECLOSED) {
        k->closed++;
    }
}

static void test_close(uv_loop_t *loop) {
    /* From a callback: a PING's callback closes; the WAITs get ECLOSED. */
    kvmux_client *c = loop_attach(loop, g_srv.port, NULL, NULL);
    closer k;
    memset(&k, 0, sizeof k);
    kvmux_request w = req_of(KVMUX_WAIT, "al:close");
    w.wait_ms = 10000;
    kvmux_request d = req_of(KVMUX_DEL, "al:close");
    CHECK_EQ(kvmux_call_async(c, &d, 2000, on_ignore, NULL), 0);
    for (int i = 0; i < 5; i++) CHECK_EQ(kvmux_call_async(c, &w, 20000, on_close_me, &k), 0);
    kvmux_request p = req_of(KVMUX_PING, NULL);
    CHECK_EQ(kvmux_call_async(c, &p, 2000, on_close_me, &k), 0);
    CHECK_EQ(run_loop(loop, 5000), 0); /* ends when the client's handles are gone */
    CHECK_EQ(k.calls, 6);
    CHECK_EQ(k.closed, 5);
    CHECK_EQ(k.resubmit_rc, KVMUX_ECLOSED);
    CHECK_EQ(uv_loop_alive(loop), 0);

    /* With thousands pending (credits + backlog). */
    status_rec st;
    memset(&st, 0, sizeof st);
    st.stop_loop = loop;
    c = loop_attach(loop, g_srv.port, NULL, &st);
    CHECK_EQ(run_loop(loop, 5000), 0);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    int n = (int)info.max_outstanding + 2000;
    tracker *t = calloc((size_t)n, sizeof *t);
    REQUIRE(t != NULL);
    CHECK_EQ(kvmux_call_async(c, &d, 2000, on_ignore, NULL), 0);
    int sub = 0;
    for (int i = 0; i < n; i++) sub += kvmux_call_async(c, &w, 30000, on_track, &t[i]) == 0;
    CHECK_EQ(sub, n);
    /* Let them go out and park; stop after 200 ms. */
    uv_timer_t tm;
    uv_timer_init(loop, &tm);
    uv_timer_start(&tm, on_watchdog, 200, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&tm, NULL);
    int early = 0;
    for (int i = 0; i < n; i++) early += t[i].calls;
    CHECK_EQ(early, 0);
    kvmux_close(c);
    int once = 0, closed = 0;
    for (int i = 0; i < n; i++) {
        once += t[i].calls == 1;
        closed += t[i].result == KVMUX_ECLOSED;
    }
    CHECK_EQ(once, n);
    CHECK_EQ(closed, n);
    CHECK_EQ(run_loop(loop, 2000), 0);
    CHECK_EQ(uv_loop_alive(loop), 0);
    free(t);
}

/* ---- kill -9; connect refused ---- */

static void test_kill9(uv_loop_t *loop) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    status_rec st;
    memset(&st, 0, sizeof st);
    st.stop_loop = loop;
    kvmux_client *c = loop_attach(loop, s.port, NULL, &st);
    CHECK_EQ(run_loop(loop, 5000), 0);
    CHECK_EQ(st.connected, 1);
    enum { N = 1500 };
    tracker *t = calloc(N, sizeof *t);
    REQUIRE(t != NULL);
    kvmux_request w = req_of(KVMUX_WAIT, "al:k9");
    w.wait_ms = 20000;
    for (int i = 0; i < N; i++) CHECK_EQ(kvmux_call_async(c, &w, 30000, on_track, &t[i]), 0);
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &w, 30000, &f), 0);
    /* Flush them, then kill the server; the status callback stops the
     * loop, after which the failed requests' callbacks have run too. */
    uv_timer_t tm;
    uv_timer_init(loop, &tm);
    uv_timer_start(&tm, on_watchdog, 100, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&tm, NULL);
    int64_t t0 = test_now_ms();
    test_server_kill(&s);
    CHECK_EQ(run_loop(loop, 3000), 0);
    CHECK(test_now_ms() - t0 < 1500);
    CHECK_EQ(st.calls, 2);
    CHECK(kvmux_is_fatal(st.last));
    int fatal = 0;
    for (int i = 0; i < N; i++) fatal += t[i].calls == 1 && kvmux_is_fatal(t[i].result);
    CHECK_EQ(fatal, N);
    CHECK_EQ(kvmux_future_poll(f), 1);
    CHECK(kvmux_is_fatal(kvmux_future_result(f, NULL)));
    kvmux_future_free(f);
    tracker late;
    memset(&late, 0, sizeof late);
    CHECK(kvmux_is_fatal(kvmux_call_async(c, &w, 1000, on_track, &late)));
    kvmux_close(c);
    CHECK_EQ(late.calls, 0);
    CHECK_EQ(run_loop(loop, 2000), 0);
    free(t);
}

static void test_connect_refused(uv_loop_t *loop) {
    /* A port nobody listens on: bind one, note it, close it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    uint16_t port = ntohs(a.sin_port);
    close(fd);

    status_rec st;
    memset(&st, 0, sizeof st);
    st.stop_loop = loop;
    kvmux_client *c = loop_attach(loop, port, NULL, &st);
    tracker t;
    memset(&t, 0, sizeof t);
    kvmux_request p = req_of(KVMUX_PING, NULL);
    CHECK_EQ(kvmux_call_async(c, &p, 2000, on_track, &t), 0);
    CHECK_EQ(run_loop(loop, 3000), 0);
    CHECK_EQ(st.calls, 1);
    CHECK_EQ(st.last, KVMUX_ECONNECT);
    CHECK_EQ(t.calls, 1);
    CHECK_EQ(t.result, KVMUX_ECONNECT);
    char msg[256];
    CHECK_EQ(kvmux_connection_error(c, msg, sizeof msg), KVMUX_ECONNECT);
    CHECK(strstr(msg, "connect") != NULL);
    kvmux_close(c);
    CHECK_EQ(run_loop(loop, 2000), 0);

    /* Argument errors. */
    CHECK_EQ(kvmux_async_connect(&c, NULL, 1, NULL), KVMUX_EINVAL);
    CHECK_EQ(kvmux_async_connect(&c, "127.0.0.1", 0, NULL), KVMUX_EINVAL);
}

int main(void) {
    g_loop_thread = pthread_self();
    async_server_start(&g_srv);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    test_basics(&loop);
    test_wait_out_of_order(&loop);
    test_depth64(&loop);
    test_close(&loop);
    test_kill9(&loop);
    test_connect_refused(&loop);
    CHECK_EQ(uv_loop_close(&loop), 0);
    async_server_stop(&g_srv);
    return test_report();
}
