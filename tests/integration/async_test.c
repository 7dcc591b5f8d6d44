/* The async API of libkvmux (threaded mode) against the real kvmuxd.
 *
 * Covers: callbacks exactly once for success, server errors (NOT_FOUND,
 * VERSION_MISMATCH with the current version, NOT_INTEGER), client-side
 * timeouts (a WAIT the server holds; requests timing out in the backlog),
 * kill -9 of the server and kvmux_close with thousands pending; reply
 * ownership (a callback steals the value); every callback on the one
 * completion thread; resubmission from inside callbacks (a chain of 1000);
 * kvmux_close from inside a callback; futures: poll / wait / wait_any
 * (across two clients) / result twice / free while pending / futures that
 * outlive their client; backpressure: the try variants say KVMUX_EAGAIN
 * when no credit is free, the backlog queues up to queue_limit and then
 * says KVMUX_EAGAIN, and drains in order when credits come back; a WAIT
 * resolved out of order while GETs proceed; async depth 64 x 100,000 ops
 * on one connection (callbacks) and depth 64 with futures and wait_any,
 * every reply checked against the expected value.
 *
 * Every count is "exactly once": each request has its own tracker whose
 * call counter must end at 1, checked after a bounded wait and again
 * after a pause (a second call would show). KVMUX_TEST_SCALE (a multiplier)
 * shrinks the big loops under TSan. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "async_util.h"
#include "kvmux.h"
#include "testutil.h"

static test_server g_srv;


static kvmux_client *connect_opts(uint16_t port, const kvmux_options *o) {
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", port, o);
    if (rc != 0) fprintf(stderr, "connect: %s\n", kvmux_strerror(rc));
    REQUIRE(rc == 0 && c != NULL);
    return c;
}


/* One request's record: how often its callback ran and with what. */
typedef struct tracker {
    atomic_int calls;
    int result;
    uint64_t version;
    int64_t number;
    char value[64];
    size_t value_len;
    int steal;               /* take reply->value */
    uint8_t *stolen;
    pthread_t thread;        /* the thread the callback ran on */
    int64_t at_ms;           /* when it ran */
    atomic_long *counter;    /* bumped after the record is written */
} tracker;

static void on_track(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    tracker *t = ud;
    t->result = result;
    t->version = reply->version;
    t->number = reply->number;
    t->value_len = reply->value_len;
    if (reply->value) {
        size_t n = reply->value_len < sizeof t->value - 1 ? reply->value_len : sizeof t->value - 1;
        memcpy(t->value, reply->value, n);
        t->value[n] = 0;
        if (t->steal) {
            t->stolen = reply->value;
            reply->value = NULL;
        }
    }
    t->thread = pthread_self();
    t->at_ms = test_now_ms();
    atomic_fetch_add(&t->calls, 1);
    if (t->counter) atomic_fetch_add(t->counter, 1);
}

/* Wait (bounded) until *n reaches target. Returns 1 if it did. */
static int wait_count(atomic_long *n, long target, int timeout_ms) {
    int64_t end = test_now_ms() + timeout_ms;
    while (atomic_load(n) < target) {
        if (test_now_ms() > end) return 0;
        test_sleep_ms(1);
    }
    return 1;
}

/* 1 if every tracker ran exactly once. */
static int all_once(tracker *t, int n) {
    for (int i = 0; i < n; i++)
        if (atomic_load(&t[i].calls) != 1) return 0;
    return 1;
}

/* ---- basic callbacks and ownership ---- */

static void test_callbacks_basic(void) {
    kvmux_client *c = connect_opts(g_srv.port, NULL);
    atomic_long done = 0;
    tracker t[8];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 8; i++) t[i].counter = &done;

    kvmux_request set = req_of(KVMUX_SET, "as:basic");
    set.value = "hello";
    set.value_len = 5;
    CHECK_EQ(kvmux_call_async(c, &set, 2000, on_track, &t[0]), 0);
    REQUIRE(wait_count(&done, 1, 3000));
    CHECK_EQ(t[0].result, 0);
    CHECK(t[0].version > 0);
    uint64_t v1 = t[0].version;

    kvmux_request get = req_of(KVMUX_GET, "as:basic");
    t[1].steal = 1;
    CHECK_EQ(kvmux_call_async(c, &get, 2000, on_track, &t[1]), 0);
    kvmux_request miss = req_of(KVMUX_GET, "as:missing");
    CHECK_EQ(kvmux_call_async(c, &miss, 2000, on_track, &t[2]), 0);
    kvmux_request cas = req_of(KVMUX_CAS, "as:basic");
    cas.version = v1 + 100;
    cas.value = "x";
    cas.value_len = 1;
    CHECK_EQ(kvmux_call_async(c, &cas, 2000, on_track, &t[3]), 0);
    kvmux_request incr = req_of(KVMUX_INCR, "as:basic");
    incr.delta = 1;
    CHECK_EQ(kvmux_call_async(c, &incr, 2000, on_track, &t[4]), 0);
    kvmux_request ping = req_of(KVMUX_PING, NULL);
    CHECK_EQ(kvmux_call_async(c, &ping, 2000, on_track, &t[5]), 0);
    kvmux_request ctr = req_of(KVMUX_INCR, "as:ctr");
    ctr.delta = 42;
    kvmux_del(c, "as:ctr", 6, 2000);
    CHECK_EQ(kvmux_call_async(c, &ctr, 2000, on_track, &t[6]), 0);
    REQUIRE(wait_count(&done, 7, 3000));

    CHECK_EQ(t[1].result, 0);
    CHECK_EQ(t[1].value_len, 5);
    CHECK(strcmp(t[1].value, "hello") == 0);
    CHECK_EQ(t[1].version, v1);
    REQUIRE(t[1].stolen != NULL);            /* the callback owns it now */
    CHECK(memcmp(t[1].stolen, "hello", 6) == 0); /* NUL-terminated */
    free(t[1].stolen);
    CHECK_EQ(t[2].result, KVMUX_ENOTFOUND);
    CHECK_EQ(t[2].value_len, 0);
    CHECK_EQ(t[3].result, KVMUX_EVERSION);
    CHECK_EQ(t[3].version, v1);              /* the current version */
    CHECK_EQ(t[4].result, KVMUX_ENOTINT);
    CHECK_EQ(t[5].result, 0);
    CHECK_EQ(t[6].result, 0);
    CHECK_EQ(t[6].number, 42);

    /* Every callback ran on the same thread (the completion thread), and
     * not on this one. */
    int same = 1;
    for (int i = 1; i < 7; i++) same &= pthread_equal(t[i].thread, t[0].thread) != 0;
    CHECK(same);
    CHECK(!pthread_equal(t[0].thread, pthread_self()));

    /* Errors at submit: no callback, ever. */
    kvmux_request bad = req_of(KVMUX_GET, "");
    CHECK_EQ(kvmux_call_async(c, &bad, 2000, on_track, &t[7]), KVMUX_EINVAL);
    CHECK_EQ(kvmux_call_async(c, &get, 2000, NULL, &t[7]), KVMUX_EINVAL);
    CHECK_EQ(kvmux_call_async(NULL, &get, 2000, on_track, &t[7]), KVMUX_EINVAL);
    CHECK_EQ(kvmux_call_async(c, &get, -5, on_track, &t[7]), KVMUX_EINVAL);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    char *big = calloc(1, (size_t)info.max_value_size + 1);
    REQUIRE(big != NULL);
    kvmux_request huge = req_of(KVMUX_SET, "as:huge");
    huge.value = big;
    huge.value_len = (size_t)info.max_value_size + 1;
    CHECK_EQ(kvmux_call_async(c, &huge, 2000, on_track, &t[7]), KVMUX_ETOOBIG);
    free(big);
    kvmux_future *f = (kvmux_future *)&t[7];
    CHECK_EQ(kvmux_call_future(c, &bad, 2000, &f), KVMUX_EINVAL);
    CHECK(f == (kvmux_future *)&t[7]); /* untouched on error */

    test_sleep_ms(50);
    CHECK(all_once(t, 7));
    CHECK_EQ(atomic_load(&t[7].calls), 0);
    kvmux_close(c);
}

/* ---- timeouts ---- */

static void test_timeouts(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = 2;
    /* v1: the server holds the WAITs their full 5 s. (On v2 they carry the
     * 150 ms deadline and the server answers TIMEOUT when it passes, which
     * frees the tombstones at once: client_v2_cancel_test, client_smoke.) */
    o.max_protocol_version = 1;
    kvmux_client *c = connect_opts(g_srv.port, &o);
    atomic_long done = 0;
    enum { N = 100 };
    tracker *t = calloc(N + 4, sizeof *t);
    REQUIRE(t != NULL);
    for (int i = 0; i < N + 4; i++) t[i].counter = &done;

    /* A WAIT the server holds for 5 s, timing out at 150 ms on our side:
     * no byte moves on the socket, the timer alone completes it. */
    kvmux_del(c, "as:tw", 5, 2000);
    kvmux_request w = req_of(KVMUX_WAIT, "as:tw");
    w.version = 0;
    w.wait_ms = 5000;
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_call_async(c, &w, 150, on_track, &t[0]), 0);
    CHECK_EQ(kvmux_call_async(c, &w, 150, on_track, &t[1]), 0);
    /* Both credits are held: these wait in the backlog and time out there. */
    kvmux_request g = req_of(KVMUX_GET, "as:tw");
    for (int i = 2; i < N; i++) CHECK_EQ(kvmux_call_async(c, &g, 100, on_track, &t[i]), 0);
    REQUIRE(wait_count(&done, N, 3000));
    int64_t el = test_now_ms() - t0;
    CHECK(el >= 100 && el < 1500);
    int timedout = 0;
    for (int i = 0; i < N; i++) timedout += t[i].result == KVMUX_ETIMEDOUT;
    CHECK_EQ(timedout, N);
    CHECK(t[0].at_ms - t0 >= 150 - 1);

    /* The WAITs' ids stay reserved (tombstones hold both credits) until
     * the late replies: a SET wakes them, they are dropped, and the
     * credits come back for new requests. */
    kvmux_request sv = req_of(KVMUX_SET, "as:tw");
    sv.value = "v";
    sv.value_len = 1;
    CHECK_EQ(kvmux_try_call(c, &sv, NULL, 2000), KVMUX_EAGAIN); /* no credit */
    kvmux_client *c2 = connect_opts(g_srv.port, NULL);
    CHECK_EQ(kvmux_set(c2, "as:tw", 5, "v", 1, 0, NULL, 2000), 0);
    kvmux_close(c2);
    CHECK_EQ(kvmux_call_async(c, &g, 2000, on_track, &t[N]), 0);
    REQUIRE(wait_count(&done, N + 1, 3000));
    CHECK_EQ(t[N].result, 0);
    CHECK(strcmp(t[N].value, "v") == 0);
    test_sleep_ms(50);
    CHECK(all_once(t, N + 1));
    kvmux_close(c);
    free(t);
}

/* ---- backpressure ---- */

static void test_backpressure(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = 2;
    o.queue_limit = 8;
    kvmux_client *c = connect_opts(g_srv.port, &o);
    atomic_long done = 0;
    tracker t[16];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 16; i++) t[i].counter = &done;
    kvmux_del(c, "as:bp", 5, 2000);

    kvmux_request w = req_of(KVMUX_WAIT, "as:bp");
    w.wait_ms = 5000;
    CHECK_EQ(kvmux_try_call_async(c, &w, 10000, on_track, &t[0]), 0);
    kvmux_future *fw = NULL;
    CHECK_EQ(kvmux_try_call_future(c, &w, 10000, &fw), 0);
    REQUIRE(fw != NULL);
    /* No credit left: the try variants refuse, and nothing runs later. */
    kvmux_request g = req_of(KVMUX_GET, "as:bp");
    CHECK_EQ(kvmux_try_call_async(c, &g, 2000, on_track, &t[15]), KVMUX_EAGAIN);
    kvmux_future *fx = NULL;
    CHECK_EQ(kvmux_try_call_future(c, &g, 2000, &fx), KVMUX_EAGAIN);
    CHECK(fx == NULL);
    /* The non-try variant queues up to queue_limit (8), then refuses. */
    for (int i = 1; i <= 8; i++) CHECK_EQ(kvmux_call_async(c, &g, 10000, on_track, &t[i]), 0);
    CHECK_EQ(kvmux_call_async(c, &g, 10000, on_track, &t[9]), KVMUX_EAGAIN);
    CHECK_EQ(kvmux_call_future(c, &g, 10000, &fx), KVMUX_EAGAIN);
    /* A try variant never jumps the queue. */
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&done), 0);

    /* Wake the WAITs: credits return, the backlog drains in order. */
    kvmux_client *c2 = connect_opts(g_srv.port, NULL);
    CHECK_EQ(kvmux_set(c2, "as:bp", 5, "go", 2, 0, NULL, 2000), 0);
    kvmux_close(c2);
    REQUIRE(wait_count(&done, 9, 3000));
    CHECK_EQ(kvmux_future_wait(fw, 3000), 0);
    kvmux_reply r;
    CHECK_EQ(kvmux_future_result(fw, &r), 0);
    CHECK(r.value && strcmp((char *)r.value, "go") == 0);
    kvmux_reply_free(&r);
    kvmux_future_free(fw);
    CHECK_EQ(t[0].result, 0);
    int ok = 0;
    for (int i = 1; i <= 8; i++) ok += t[i].result == 0 && strcmp(t[i].value, "go") == 0;
    CHECK_EQ(ok, 8);
    /* In order: each backlogged request completed no earlier than the one
     * queued before it (same connection, FIFO admission). */
    int ordered = 1;
    for (int i = 2; i <= 8; i++) ordered &= t[i].at_ms >= t[i - 1].at_ms;
    CHECK(ordered);
    test_sleep_ms(50);
    CHECK(all_once(t, 9));
    CHECK_EQ(atomic_load(&t[9].calls), 0);
    CHECK_EQ(atomic_load(&t[15].calls), 0);
    kvmux_close(c);
}

/* ---- resubmission from callbacks; close from a callback ---- */

typedef struct chain {
    atomic_long steps;
    atomic_long errors;
    int64_t last;
    int target;
    atomic_int finished;
} chain;

static void on_chain(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    chain *ch = ud;
    if (result != 0 || reply->number != ch->last + 1) atomic_fetch_add(&ch->errors, 1);
    ch->last = reply->number;
    long n = atomic_fetch_add(&ch->steps, 1) + 1;
    if (n < ch->target) {
        kvmux_request r = req_of(KVMUX_INCR, "as:chain");
        r.delta = 1;
        if (kvmux_call_async(c, &r, 2000, on_chain, ch) != 0) atomic_fetch_add(&ch->errors, 1);
    } else {
        atomic_store(&ch->finished, 1);
    }
}

typedef struct closer {
    atomic_int calls;
    atomic_int closed_results;
    atomic_int resubmit_rc;
} closer;

static void on_close_me(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)reply;
    closer *k = ud;
    if (atomic_fetch_add(&k->calls, 1) == 0 && result == 0) {
        kvmux_close(c); /* finishes after this callback returns */
        kvmux_request p = req_of(KVMUX_PING, NULL);
        atomic_store(&k->resubmit_rc, kvmux_call_async(c, &p, 1000, on_close_me, k));
    } else if (result == KVMUX_ECLOSED) {
        atomic_fetch_add(&k->closed_results, 1);
    }
}

/* A callback that blocks on the API (allowed, though it stalls the
 * client's other callbacks): a future submitted and waited for in the
 * callback, and a synchronous GET. Both must be served promptly. */
typedef struct blocker {
    int future_rc;
    int result_rc;
    int sync_rc;
    int64_t took_ms;
    atomic_int done;
} blocker;

static void on_block(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)reply;
    blocker *b = ud;
    int64_t t0 = test_now_ms();
    kvmux_request g = req_of(KVMUX_GET, "as:chain");
    kvmux_future *f = NULL;
    b->future_rc = result == 0 ? kvmux_call_future(c, &g, 2000, &f) : result;
    if (f) {
        b->future_rc = kvmux_future_wait(f, 2000);
        b->result_rc = kvmux_future_result(f, NULL);
        kvmux_future_free(f);
    }
    kvmux_value *v = NULL;
    b->sync_rc = kvmux_get(c, "as:chain", 8, &v, 2000);
    kvmux_value_free(v);
    b->took_ms = test_now_ms() - t0;
    atomic_store(&b->done, 1);
}

static void test_resubmit(void) {
    kvmux_client *c = connect_opts(g_srv.port, NULL);
    kvmux_del(c, "as:chain", 8, 2000);
    chain ch;
    memset(&ch, 0, sizeof ch);
    ch.target = 1000;
    kvmux_request r = req_of(KVMUX_INCR, "as:chain");
    r.delta = 1;
    CHECK_EQ(kvmux_call_async(c, &r, 2000, on_chain, &ch), 0);
    int64_t end = test_now_ms() + 10000;
    while (!atomic_load(&ch.finished) && test_now_ms() < end) test_sleep_ms(1);
    CHECK(atomic_load(&ch.finished));
    CHECK_EQ(atomic_load(&ch.steps), 1000);
    CHECK_EQ(atomic_load(&ch.errors), 0);
    CHECK_EQ(ch.last, 1000);
    int64_t v = 0;
    CHECK_EQ(kvmux_incr(c, "as:chain", 8, 0, &v, 2000), 0);
    CHECK_EQ(v, 1000);

    blocker b;
    memset(&b, 0, sizeof b);
    kvmux_request p0 = req_of(KVMUX_PING, NULL);
    CHECK_EQ(kvmux_call_async(c, &p0, 2000, on_block, &b), 0);
    end = test_now_ms() + 5000;
    while (!atomic_load(&b.done) && test_now_ms() < end) test_sleep_ms(1);
    CHECK(atomic_load(&b.done));
    CHECK_EQ(b.future_rc, 0);
    CHECK_EQ(b.result_rc, 0);
    CHECK_EQ(b.sync_rc, 0);
    CHECK(b.took_ms < 500);

    /* kvmux_close from inside a callback: a PING completes first, its
     * callback closes; the WAITs still pending get KVMUX_ECLOSED, a
     * submit after the close fails without a callback. */
    closer k;
    memset(&k, 0, sizeof k);
    kvmux_del(c, "as:cl", 5, 2000);
    kvmux_request w = req_of(KVMUX_WAIT, "as:cl");
    w.wait_ms = 10000;
    for (int i = 0; i < 5; i++) CHECK_EQ(kvmux_call_async(c, &w, 20000, on_close_me, &k), 0);
    test_sleep_ms(20); /* the WAITs are parked on the server */
    kvmux_request p = req_of(KVMUX_PING, NULL);
    CHECK_EQ(kvmux_call_async(c, &p, 2000, on_close_me, &k), 0);
    end = test_now_ms() + 3000;
    while (atomic_load(&k.calls) < 6 && test_now_ms() < end) test_sleep_ms(1);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&k.calls), 6);
    CHECK_EQ(atomic_load(&k.closed_results), 5);
    CHECK_EQ(atomic_load(&k.resubmit_rc), KVMUX_ECLOSED);
    /* c is gone (freed by its completion thread). */
}

/* ---- futures ---- */

static void test_futures(void) {
    kvmux_client *a = connect_opts(g_srv.port, NULL);
    kvmux_client *b = connect_opts(g_srv.port, NULL);
    kvmux_del(a, "as:fa", 5, 2000);
    kvmux_del(a, "as:fb", 5, 2000);

    kvmux_request s = req_of(KVMUX_SET, "as:f1");
    s.value = "one";
    s.value_len = 3;
    kvmux_future *f1 = NULL;
    CHECK_EQ(kvmux_call_future(a, &s, 2000, &f1), 0);
    REQUIRE(f1 != NULL);
    CHECK_EQ(kvmux_future_wait(f1, 2000), 0);
    CHECK_EQ(kvmux_future_poll(f1), 1);
    kvmux_reply r;
    CHECK_EQ(kvmux_future_result(f1, &r), 0);
    CHECK(r.version > 0);
    kvmux_future_free(f1);

    kvmux_request g = req_of(KVMUX_GET, "as:f1");
    kvmux_future *f2 = NULL;
    CHECK_EQ(kvmux_call_future(b, &g, 2000, &f2), 0);
    CHECK_EQ(kvmux_future_wait(f2, KVMUX_TIMEOUT_DEFAULT), 0);
    CHECK_EQ(kvmux_future_result(f2, &r), 0);
    CHECK(r.value && r.value_len == 3 && memcmp(r.value, "one", 4) == 0);
    kvmux_reply_free(&r);
    /* A second result: same code, the value has moved out. */
    CHECK_EQ(kvmux_future_result(f2, &r), 0);
    CHECK(r.value == NULL);
    CHECK(r.version > 0);
    kvmux_future_free(f2);

    /* wait_any across two clients: two WAITs (one per client) and a NULL
     * entry; neither is done; a SET through a third client wakes the one
     * on b (index 2). */
    kvmux_request wa = req_of(KVMUX_WAIT, "as:fa");
    wa.wait_ms = 5000;
    kvmux_request wb = req_of(KVMUX_WAIT, "as:fb");
    wb.wait_ms = 5000;
    kvmux_future *fs[3] = {NULL, NULL, NULL};
    CHECK_EQ(kvmux_call_future(a, &wa, KVMUX_TIMEOUT_DEFAULT, &fs[0]), 0);
    CHECK_EQ(kvmux_call_future(b, &wb, KVMUX_TIMEOUT_DEFAULT, &fs[2]), 0);
    size_t idx = 99;
    CHECK_EQ(kvmux_future_wait_any(fs, 3, 0, &idx), KVMUX_ETIMEDOUT);
    CHECK_EQ(kvmux_future_wait_any(fs, 3, 100, &idx), KVMUX_ETIMEDOUT);
    CHECK_EQ(kvmux_future_poll(fs[0]), 0);
    CHECK_EQ(kvmux_future_result(fs[0], &r), KVMUX_EAGAIN);
    kvmux_client *c3 = connect_opts(g_srv.port, NULL);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_set(c3, "as:fb", 5, "bee", 3, 0, NULL, 2000), 0);
    CHECK_EQ(kvmux_future_wait_any(fs, 3, 3000, &idx), 0);
    CHECK_EQ(idx, 2);
    CHECK(test_now_ms() - t0 < 1000);
    CHECK_EQ(kvmux_future_result(fs[2], &r), 0);
    CHECK(r.value && strcmp((char *)r.value, "bee") == 0);
    kvmux_reply_free(&r);
    kvmux_future_free(fs[2]);
    fs[2] = NULL;
    /* Free the other while it is still pending: its reply, when the SET
     * below triggers it, is discarded and the client carries on. */
    CHECK_EQ(kvmux_future_poll(fs[0]), 0);
    kvmux_future_free(fs[0]);
    fs[0] = NULL;
    CHECK_EQ(kvmux_future_wait_any(fs, 3, 10, &idx), KVMUX_EINVAL); /* all NULL */
    CHECK_EQ(kvmux_set(c3, "as:fa", 5, "a", 1, 0, NULL, 2000), 0);
    CHECK_EQ(kvmux_ping(a, 2000), 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(a, "as:fa", 5, &v, 2000), 0);
    CHECK(v && v->len == 1);
    kvmux_value_free(v);
    kvmux_close(c3);

    /* A future whose request times out completes with KVMUX_ETIMEDOUT. */
    kvmux_del(a, "as:ft", 5, 2000);
    kvmux_request wt = req_of(KVMUX_WAIT, "as:ft");
    wt.wait_ms = 5000;
    kvmux_future *ft = NULL;
    CHECK_EQ(kvmux_call_future(a, &wt, 100, &ft), 0);
    t0 = test_now_ms();
    CHECK_EQ(kvmux_future_wait(ft, KVMUX_TIMEOUT_DEFAULT), 0);
    CHECK(test_now_ms() - t0 < 1000);
    CHECK_EQ(kvmux_future_result(ft, NULL), KVMUX_ETIMEDOUT);
    kvmux_future_free(ft);

    /* Futures outlive their client: pending ones complete with
     * KVMUX_ECLOSED at close, a complete one keeps its result. */
    kvmux_future *done_f = NULL, *pend[3] = {NULL, NULL, NULL};
    CHECK_EQ(kvmux_call_future(b, &g, 2000, &done_f), 0);
    CHECK_EQ(kvmux_future_wait(done_f, 2000), 0);
    kvmux_del(b, "as:fz", 5, 2000);
    kvmux_request wz = req_of(KVMUX_WAIT, "as:fz");
    wz.wait_ms = 5000;
    for (int i = 0; i < 3; i++) CHECK_EQ(kvmux_call_future(b, &wz, 10000, &pend[i]), 0);
    kvmux_close(b);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(kvmux_future_poll(pend[i]), 1);
        CHECK_EQ(kvmux_future_result(pend[i], NULL), KVMUX_ECLOSED);
        kvmux_future_free(pend[i]);
    }
    CHECK_EQ(kvmux_future_result(done_f, &r), 0);
    CHECK(r.value && strcmp((char *)r.value, "one") == 0);
    kvmux_reply_free(&r);
    kvmux_future_free(done_f);
    kvmux_close(a);
}

/* A thread blocked in wait_any is woken by kvmux_close of the client. */
typedef struct waiter_arg {
    kvmux_future *f;
    int rc;
    atomic_int done;
} waiter_arg;

static void *waiter_main(void *p) {
    waiter_arg *w = p;
    w->rc = kvmux_future_wait(w->f, 10000);
    atomic_store(&w->done, 1);
    return NULL;
}

static void test_wait_woken_by_close(void) {
    kvmux_client *c = connect_opts(g_srv.port, NULL);
    kvmux_del(c, "as:wc", 5, 2000);
    kvmux_request w = req_of(KVMUX_WAIT, "as:wc");
    w.wait_ms = 8000;
    waiter_arg wa;
    memset(&wa, 0, sizeof wa);
    CHECK_EQ(kvmux_call_future(c, &w, 9000, &wa.f), 0);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, waiter_main, &wa) == 0);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&wa.done), 0);
    int64_t t0 = test_now_ms();
    kvmux_close(c);
    int64_t end = test_now_ms() + 3000;
    while (!atomic_load(&wa.done) && test_now_ms() < end) test_sleep_ms(1);
    REQUIRE(atomic_load(&wa.done));
    pthread_join(th, NULL);
    CHECK(test_now_ms() - t0 < 1000);
    CHECK_EQ(wa.rc, 0);
    CHECK_EQ(kvmux_future_result(wa.f, NULL), KVMUX_ECLOSED);
    kvmux_future_free(wa.f);
}

/* ---- WAIT out of order while GETs proceed ---- */

static void test_wait_out_of_order(void) {
    kvmux_client *c = connect_opts(g_srv.port, NULL);
    kvmux_del(c, "as:ooo", 6, 2000);
    CHECK_EQ(kvmux_set(c, "as:ooo-g", 8, "g", 1, 0, NULL, 2000), 0);
    enum { N = 2000 };
    tracker *t = calloc(N + 1, sizeof *t);
    REQUIRE(t != NULL);
    atomic_long gets = 0, waits = 0;
    kvmux_request w = req_of(KVMUX_WAIT, "as:ooo");
    w.wait_ms = 5000;
    t[N].counter = &waits;
    CHECK_EQ(kvmux_call_async(c, &w, KVMUX_TIMEOUT_DEFAULT, on_track, &t[N]), 0);
    kvmux_request g = req_of(KVMUX_GET, "as:ooo-g");
    for (int i = 0; i < N; i++) {
        t[i].counter = &gets;
        int rc;
        while ((rc = kvmux_call_async(c, &g, 5000, on_track, &t[i])) == KVMUX_EAGAIN)
            test_sleep_ms(1);
        CHECK_EQ(rc, 0);
    }
    CHECK(wait_count(&gets, N, 5000));
    CHECK_EQ(atomic_load(&waits), 0); /* the WAIT is still parked */
    int64_t last_get = 0;
    int ok = 0;
    for (int i = 0; i < N; i++) {
        ok += t[i].result == 0 && strcmp(t[i].value, "g") == 0;
        if (t[i].at_ms > last_get) last_get = t[i].at_ms;
    }
    CHECK_EQ(ok, N);
    CHECK_EQ(kvmux_set(c, "as:ooo", 6, "w", 1, 0, NULL, 2000), 0);
    CHECK(wait_count(&waits, 1, 3000));
    CHECK_EQ(t[N].result, 0);
    CHECK(strcmp(t[N].value, "w") == 0);
    CHECK(t[N].at_ms >= last_get);
    test_sleep_ms(20);
    CHECK(all_once(t, N + 1));
    kvmux_close(c);
    free(t);
}

/* ---- depth 64 on one connection ---- */

/* A lane (async_util.h) whose completions are counted in total and, once
 * it stops, in finished. */
typedef struct lane {
    async_lane core;
    atomic_long *finished;
    atomic_long *total;
} lane;

static void lane_next(kvmux_client *c, lane *l);

static void on_lane(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    lane *l = ud;
    int more = async_lane_complete(&l->core, result, reply);
    atomic_fetch_add(l->total, 1);
    if (more) lane_next(c, l);
    else atomic_fetch_add(l->finished, 1);
}

static void lane_next(kvmux_client *c, lane *l) {
    kvmux_request r = async_lane_request(&l->core);
    int rc = kvmux_call_async(c, &r, 10000, on_lane, l);
    if (rc != 0) {
        l->core.errors++;
        atomic_fetch_add(l->finished, 1); /* the lane stops */
    }
}

static void test_depth64(void) {
    kvmux_client *c = connect_opts(g_srv.port, NULL);
    enum { DEPTH = 64 };
    int total_ops = scaled(100000);
    lane lanes[DEPTH];
    atomic_long finished = 0, total = 0;
    for (int i = 0; i < DEPTH; i++) {
        memset(&lanes[i], 0, sizeof lanes[i]);
        lanes[i].core.id = i;
        lanes[i].core.ops = total_ops / DEPTH + (i < total_ops % DEPTH);
        snprintf(lanes[i].core.key, sizeof lanes[i].core.key, "as:d64:k%d", i);
        snprintf(lanes[i].core.ctr, sizeof lanes[i].core.ctr, "as:d64:c%d", i);
        kvmux_del(c, lanes[i].core.ctr, strlen(lanes[i].core.ctr), 2000);
        lanes[i].finished = &finished;
        lanes[i].total = &total;
    }
    int64_t t0 = test_now_ms();
    for (int i = 0; i < DEPTH; i++) lane_next(c, &lanes[i]);
    CHECK(wait_count(&finished, DEPTH, 120000));
    int64_t el = test_now_ms() - t0;
    long errors = 0;
    for (int i = 0; i < DEPTH; i++) errors += lanes[i].core.errors;
    CHECK_EQ(errors, 0);
    CHECK_EQ(atomic_load(&total), total_ops);
    fprintf(stderr, "depth64 callbacks: %d ops in %lld ms (%.0f ops/s)\n", total_ops,
            (long long)el, el > 0 ? total_ops * 1000.0 / el : 0.0);
    /* Final state matches: every counter equals its lane's INCR count. */
    int ctr_ok = 0;
    for (int i = 0; i < DEPTH; i++) {
        int64_t v = -1;
        kvmux_incr(c, lanes[i].core.ctr, strlen(lanes[i].core.ctr), 0, &v, 2000);
        ctr_ok += v == lanes[i].core.ops / 3;
    }
    CHECK_EQ(ctr_ok, DEPTH);
    kvmux_close(c);
}

/* Depth 64 with futures: keep 64 in flight, wait_any, check, resubmit. */
static void test_depth64_futures(void) {
    kvmux_client *c = connect_opts(g_srv.port, NULL);
    enum { DEPTH = 64 };
    int total_ops = scaled(30000);
    kvmux_future *fs[DEPTH];
    int64_t expect[DEPTH];
    char keys[DEPTH][32];
    for (int i = 0; i < DEPTH; i++) {
        snprintf(keys[i], sizeof keys[i], "as:d64f:%d", i);
        kvmux_del(c, keys[i], strlen(keys[i]), 2000);
        expect[i] = 0;
        fs[i] = NULL;
    }
    int submitted = 0, completed = 0, errors = 0;
    for (int i = 0; i < DEPTH && submitted < total_ops; i++) {
        kvmux_request r = req_of(KVMUX_INCR, keys[i]);
        r.delta = i + 1;
        CHECK_EQ(kvmux_call_future(c, &r, 10000, &fs[i]), 0);
        submitted++;
    }
    int64_t t0 = test_now_ms();
    while (completed < total_ops) {
        size_t idx;
        int rc = kvmux_future_wait_any(fs, DEPTH, 5000, &idx);
        if (rc != 0) {
            errors++;
            break;
        }
        kvmux_reply r;
        rc = kvmux_future_result(fs[idx], &r);
        expect[idx] += (int64_t)idx + 1;
        if (rc != 0 || r.number != expect[idx]) errors++;
        kvmux_future_free(fs[idx]);
        fs[idx] = NULL;
        completed++;
        if (submitted < total_ops) {
            kvmux_request q = req_of(KVMUX_INCR, keys[idx]);
            q.delta = (int64_t)idx + 1;
            if (kvmux_call_future(c, &q, 10000, &fs[idx]) != 0) errors++;
            submitted++;
        }
    }
    int64_t el = test_now_ms() - t0;
    CHECK_EQ(errors, 0);
    CHECK_EQ(completed, total_ops);
    fprintf(stderr, "depth64 futures: %d ops in %lld ms (%.0f ops/s)\n", total_ops,
            (long long)el, el > 0 ? total_ops * 1000.0 / el : 0.0);
    for (int i = 0; i < DEPTH; i++) kvmux_future_free(fs[i]);
    kvmux_close(c);
}

/* ---- connection loss and close with thousands pending ---- */

static void test_close_many(void) {
    kvmux_client *c = connect_opts(g_srv.port, NULL);
    kvmux_del(c, "as:many", 7, 2000);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    /* More than the credits: the rest wait in the backlog. */
    int n = (int)info.max_outstanding + 2000;
    tracker *t = calloc((size_t)n, sizeof *t);
    REQUIRE(t != NULL);
    atomic_long done = 0;
    kvmux_request w = req_of(KVMUX_WAIT, "as:many");
    w.wait_ms = 20000;
    int submitted = 0;
    for (int i = 0; i < n; i++) {
        t[i].counter = &done;
        if (kvmux_call_async(c, &w, 30000, on_track, &t[i]) == 0) submitted++;
    }
    CHECK_EQ(submitted, n);
    kvmux_future *f = NULL;
    kvmux_request g = req_of(KVMUX_GET, "as:many");
    CHECK_EQ(kvmux_call_future(c, &g, 30000, &f), 0); /* behind the backlog */
    test_sleep_ms(100);
    CHECK_EQ(atomic_load(&done), 0);
    int64_t t0 = test_now_ms();
    kvmux_close(c);
    /* Every callback ran before kvmux_close returned. */
    CHECK_EQ(atomic_load(&done), n);
    CHECK(test_now_ms() - t0 < 2000);
    int closed = 0;
    for (int i = 0; i < n; i++) closed += t[i].result == KVMUX_ECLOSED;
    CHECK_EQ(closed, n);
    CHECK(all_once(t, n));
    CHECK_EQ(kvmux_future_result(f, NULL), KVMUX_ECLOSED);
    kvmux_future_free(f);
    free(t);
}

static void test_kill9(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    kvmux_client *c = connect_opts(s.port, NULL);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    int n = (int)info.max_outstanding + 1000;
    tracker *t = calloc((size_t)n, sizeof *t);
    REQUIRE(t != NULL);
    atomic_long done = 0;
    kvmux_request w = req_of(KVMUX_WAIT, "as:k9");
    w.wait_ms = 20000;
    for (int i = 0; i < n; i++) {
        t[i].counter = &done;
        CHECK_EQ(kvmux_call_async(c, &w, 30000, on_track, &t[i]), 0);
    }
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &w, 30000, &f), 0);
    CHECK_EQ(kvmux_ping(c, 200), KVMUX_ETIMEDOUT); /* no credit: all WAITs */
    int64_t t0 = test_now_ms();
    test_server_kill(&s);
    CHECK(wait_count(&done, n, 3000));
    CHECK(test_now_ms() - t0 < 1500);
    int fatal = 0;
    for (int i = 0; i < n; i++) fatal += kvmux_is_fatal(t[i].result);
    CHECK_EQ(fatal, n);
    CHECK_EQ(kvmux_future_wait(f, 2000), 0);
    CHECK(kvmux_is_fatal(kvmux_future_result(f, NULL)));
    kvmux_future_free(f);
    /* Later submits fail fast with the connection's code, no callback. */
    tracker late;
    memset(&late, 0, sizeof late);
    int rc = kvmux_call_async(c, &w, 1000, on_track, &late);
    CHECK(kvmux_is_fatal(rc));
    CHECK_EQ(rc, kvmux_connection_error(c, NULL, 0));
    test_sleep_ms(50);
    CHECK(all_once(t, n));
    CHECK_EQ(atomic_load(&late.calls), 0);
    kvmux_close(c);
    free(t);
}

/* ---- submits from many threads at once ---- */

typedef struct mt_arg {
    kvmux_client *c;
    int id;
    int n;
    tracker *t;
} mt_arg;

static void *mt_main(void *p) {
    mt_arg *a = p;
    char key[32];
    snprintf(key, sizeof key, "as:mt%d", a->id);
    kvmux_request r = req_of(KVMUX_INCR, key);
    r.delta = 1;
    for (int i = 0; i < a->n; i++) {
        int rc;
        while ((rc = kvmux_call_async(a->c, &r, 10000, on_track, &a->t[i])) == KVMUX_EAGAIN)
            test_sleep_ms(1);
        if (rc != 0) a->t[i].result = rc;
    }
    return NULL;
}

static void test_threads(void) {
    kvmux_client *c = connect_opts(g_srv.port, NULL);
    enum { T = 8 };
    int per = scaled(5000);
    mt_arg args[T];
    pthread_t th[T];
    atomic_long done = 0;
    for (int i = 0; i < T; i++) {
        char key[32];
        snprintf(key, sizeof key, "as:mt%d", i);
        kvmux_del(c, key, strlen(key), 2000);
        args[i].c = c;
        args[i].id = i;
        args[i].n = per;
        args[i].t = calloc((size_t)per, sizeof(tracker));
        REQUIRE(args[i].t != NULL);
        for (int j = 0; j < per; j++) args[i].t[j].counter = &done;
    }
    for (int i = 0; i < T; i++) REQUIRE(pthread_create(&th[i], NULL, mt_main, &args[i]) == 0);
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    CHECK(wait_count(&done, (long)T * per, 60000));
    for (int i = 0; i < T; i++) {
        /* Replies to one thread's INCRs: each value 1..per exactly once. */
        char *seen = calloc((size_t)per + 1, 1);
        int ok = 1;
        for (int j = 0; j < per; j++) {
            tracker *t = &args[i].t[j];
            if (t->result != 0 || t->number < 1 || t->number > per || seen[t->number]) ok = 0;
            else seen[t->number] = 1;
        }
        CHECK(ok);
        CHECK(all_once(args[i].t, per));
        free(seen);
        free(args[i].t);
    }
    kvmux_close(c);
}

int main(void) {
    async_server_start(&g_srv);
    test_callbacks_basic();
    test_timeouts();
    test_backpressure();
    test_resubmit();
    test_futures();
    test_wait_woken_by_close();
    test_wait_out_of_order();
    test_depth64();
    test_depth64_futures();
    test_threads();
    test_close_many();
    test_kill9();
    async_server_stop(&g_srv);
    return test_report();
}
