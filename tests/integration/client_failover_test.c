/* Client failover across a replicated group (kvmux_options.endpoints,
 * protocol v3) against a FAKE group over real sockets (fake_group.h): the
 * test decides which replica leads, what followers answer and what is in
 * flight when a leader's connection is reset.
 *
 * Covers, in blocking, async (callbacks and futures) and event-loop
 * (libuv) modes: NOT_LEADER with the leader's address (redirect, request
 * resent, applied once); NOT_LEADER without an address (next endpoint);
 * the redirect bound (16 redirects followed to replicas that redirect again,
 * then KVMUX_ENOTLEADER);
 * OUTCOME_UNKNOWN -> KVMUX_EUNKNOWN; the leader's connection reset with
 * writes, reads and a WAIT in flight (writes KVMUX_EUNKNOWN and never
 * applied, or resent with resend_writes; reads and the WAIT resent and
 * answered by the new leader), requests submitted during the outage sent
 * once to the new leader; writes still in the outbound queue behind a
 * blocked writer resent, not KVMUX_EUNKNOWN; a redirect's drain ended by a
 * write's timeout or cancel; deadlines and kvmux_cancel across a redirect
 * (threaded and loop); NOT_LEADER to a client without endpoints; the
 * group-agnostic load scenario (failover_scenario.h); every request
 * completing exactly once; and endpoints mode against a real single-node
 * kvmuxd (protocol 2) behind a dead first endpoint.
 *
 * A real group (the repl branch) can drive the same scenarios: they only
 * use g.endpoints, role changes and fg_applied. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "failover_scenario.h"
#include "fake_group.h"
#include "kvmux.h"
#include "kvmux/adapters/libuv.h"
#include "loop_util.h"
#include "testutil.h"

/* ---- helpers ---- */

/* One async request's outcome: calls counts completions (must end at 1). */
typedef struct rec {
    atomic_int calls;
    atomic_int result;
    char val[64];
    uv_loop_t *stop_loop;
} rec;

static void on_rec(kvmux_client *c, int result, kvmux_reply *r, void *ud) {
    (void)c;
    rec *x = ud;
    if (r && r->value) {
        size_t n = r->value_len < sizeof x->val - 1 ? r->value_len : sizeof x->val - 1;
        memcpy(x->val, r->value, n);
        x->val[n] = 0;
    }
    atomic_store(&x->result, result);
    atomic_fetch_add(&x->calls, 1); /* last: the waiter reads val after it */
}

/* Wait (<= ms) until every one of recs[0..n) completed once. */
static int wait_recs(rec *recs, int n, int ms) {
    int64_t end = test_now_ms() + ms;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++) done += atomic_load(&recs[i].calls) > 0;
        if (done == n) return 1;
        if (test_now_ms() >= end) return 0;
        test_sleep_ms(2);
    }
}

static void opts_fast(kvmux_options *o, const char *endpoints) {
    kvmux_options_init(o);
    o->endpoints = endpoints;
    /* The fake group keeps no session table (it would apply a resent
     * write twice): these scenarios pin the contract without sessions;
     * tests/replica/client_group_test.c checks sessions on a real group. */
    o->no_sessions = 1;
    o->reconnect_min_backoff_ms = 5;
    o->reconnect_max_backoff_ms = 50;
    o->connect_timeout_ms = 2000;
    o->request_timeout_ms = 10000;
}

static kvmux_client *fo_connect(const kvmux_options *o) {
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, NULL, 0, o);
    if (rc != 0) {
        char msg[256];
        kvmux_connection_error(NULL, msg, sizeof msg);
        fprintf(stderr, "connect: %s (%s)\n", kvmux_strerror(rc), msg);
    }
    REQUIRE(rc == 0 && c);
    return c;
}

static kvmux_request req_of(kvmux_op op, const char *key, const char *val) {
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.key = key;
    r.key_len = strlen(key);
    if (val) {
        r.value = val;
        r.value_len = strlen(val);
    }
    return r;
}

static int get_str(kvmux_client *c, const char *key, char *out, size_t cap) {
    kvmux_value *v = NULL;
    int rc = kvmux_get(c, key, strlen(key), &v, 5000);
    if (rc == 0) {
        size_t n = v->len < cap - 1 ? v->len : cap - 1;
        memcpy(out, v->data, n);
        out[n] = 0;
        kvmux_value_free(v);
    }
    return rc;
}

static int total_not_leader(fake_group *g) {
    int n = 0;
    for (int i = 0; i < g->n; i++) n += atomic_load(&g->r[i].not_leader);
    return n;
}

/* ---- NOT_LEADER with and without an address ---- */

static void test_redirect_blocking(void) {
    fake_group g;
    fg_start(&g, 3);
    fg_set_role(&g, 0, FG_FOLLOWER, 2);
    fg_set_role(&g, 1, FG_FOLLOWER, 2);
    fg_set_role(&g, 2, FG_LEADER, 0);
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = fo_connect(&o);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, 3);
    CHECK_EQ(kvmux_set(c, "a", 1, "1", 1, 0, NULL, 5000), 0);
    CHECK_EQ(fg_applied(&g, "a"), 1);
    CHECK_EQ(atomic_load(&g.r[0].not_leader), 1); /* one answer, then the leader */
    char buf[64];
    CHECK_EQ(get_str(c, "a", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "1") == 0);
    int64_t n = 0;
    CHECK_EQ(kvmux_incr(c, "n", 1, 5, &n, 5000), 0);
    CHECK_EQ(n, 5);
    CHECK_EQ(fg_applied(&g, "n"), 1);
    CHECK_EQ(kvmux_ping(c, 5000), 0);
    CHECK_EQ(atomic_load(&g.r[1].conns), 0); /* never needed */
    kvmux_close(c);
    fg_stop(&g);
}

/* Async requests submitted before the client knows the leader: all of
 * them reach the follower, are answered NOT_LEADER and resent, each
 * applied once and completed once. */
static void test_redirect_async(void) {
    enum { N = 24 };
    fake_group g;
    fg_start(&g, 3);
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    fg_set_role(&g, 1, FG_LEADER, 0);
    fg_set_role(&g, 2, FG_FOLLOWER, 1);
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = fo_connect(&o);
    static rec recs[N];
    memset(recs, 0, sizeof recs);
    char keys[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        kvmux_request r = req_of(KVMUX_SET, keys[i], keys[i]);
        CHECK_EQ(kvmux_call_async(c, &r, KVMUX_TIMEOUT_DEFAULT, on_rec, &recs[i]), 0);
    }
    kvmux_request gr = req_of(KVMUX_GET, "k0", NULL);
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &gr, KVMUX_TIMEOUT_DEFAULT, &f), 0);
    CHECK(wait_recs(recs, N, 10000));
    CHECK_EQ(kvmux_future_wait(f, 10000), 0);
    kvmux_reply rep;
    int frc = kvmux_future_result(f, &rep);
    /* The GET may pass the SETs on the way (it is resent too): found or not. */
    CHECK(frc == 0 || frc == KVMUX_ENOTFOUND);
    kvmux_reply_free(&rep);
    kvmux_future_free(f);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(atomic_load(&recs[i].calls), 1);
        CHECK_EQ(atomic_load(&recs[i].result), 0);
        CHECK_EQ(fg_applied(&g, keys[i]), 1);
    }
    CHECK(atomic_load(&g.r[0].not_leader) >= 1);
    kvmux_close(c);
    fg_stop(&g);
}

static void test_no_leader_address(void) {
    fake_group g;
    fg_start(&g, 3);
    fg_set_role(&g, 0, FG_FOLLOWER, -1); /* leader unknown */
    fg_set_role(&g, 1, FG_LEADER, 0);
    fg_set_role(&g, 2, FG_FOLLOWER, 1);
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = fo_connect(&o);
    CHECK_EQ(kvmux_set(c, "x", 1, "y", 1, 0, NULL, 5000), 0);
    CHECK_EQ(fg_applied(&g, "x"), 1);
    CHECK_EQ(atomic_load(&g.r[0].not_leader), 1);
    CHECK(atomic_load(&g.r[1].conns) >= 1);
    /* An address that is not host:port is treated as unknown. */
    fg_set_follower_addr(&g, 1, "not an address");
    fg_set_role(&g, 2, FG_LEADER, 0);
    CHECK_EQ(kvmux_set(c, "x", 1, "z", 1, 0, NULL, 5000), 0);
    CHECK_EQ(fg_applied(&g, "x"), 2);
    kvmux_close(c);
    fg_stop(&g);
}

/* Two followers naming each other: the first answer comes from an endpoint
 * of the list, then 17 from replicas the group named (a loop: redirects
 * 1..16 followed, the 17th not), and the request completes
 * KVMUX_ENOTLEADER, unprocessed. */
static void test_redirect_bound(void) {
    fake_group g;
    fg_start(&g, 3);
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    fg_set_role(&g, 1, FG_FOLLOWER, 0);
    fg_set_role(&g, 2, FG_FOLLOWER, 0);
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = fo_connect(&o);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_set(c, "b", 1, "1", 1, 0, NULL, 20000), KVMUX_ENOTLEADER);
    CHECK(test_now_ms() - t0 < 10000);
    CHECK_EQ(total_not_leader(&g), 18);
    CHECK_EQ(fg_applied(&g, "b"), 0);
    /* The same for an async request. */
    int before = total_not_leader(&g);
    rec r1;
    memset(&r1, 0, sizeof r1);
    kvmux_request r = req_of(KVMUX_GET, "b", NULL);
    CHECK_EQ(kvmux_call_async(c, &r, 20000, on_rec, &r1), 0);
    CHECK(wait_recs(&r1, 1, 15000));
    CHECK_EQ(atomic_load(&r1.result), KVMUX_ENOTLEADER);
    /* 17 here: the connection it starts on was itself reached by a
     * redirect, so its first answer counts too. */
    CHECK_EQ(total_not_leader(&g) - before, 17);
    test_sleep_ms(20);
    CHECK_EQ(atomic_load(&r1.calls), 1);
    CHECK(strcmp(kvmux_strerror(KVMUX_ENOTLEADER), "unknown error") != 0);
    kvmux_close(c);
    fg_stop(&g);
}

static void test_outcome_unknown(void) {
    fake_group g;
    fg_start(&g, 1);
    fg_set_role(&g, 0, FG_LEADER, 0);
    atomic_store(&g.r[0].outcome_unknown, 1);
    fg_store_set(&g, "seed", "s");
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = fo_connect(&o);
    CHECK_EQ(kvmux_set(c, "w", 1, "1", 1, 0, NULL, 5000), KVMUX_EUNKNOWN);
    CHECK_EQ(kvmux_incr(c, "i", 1, 1, NULL, 5000), KVMUX_EUNKNOWN);
    char buf[16];
    CHECK_EQ(get_str(c, "seed", buf, sizeof buf), 0);
    rec r1;
    memset(&r1, 0, sizeof r1);
    kvmux_request r = req_of(KVMUX_DEL, "seed", NULL);
    CHECK_EQ(kvmux_call_async(c, &r, KVMUX_TIMEOUT_DEFAULT, on_rec, &r1), 0);
    CHECK(wait_recs(&r1, 1, 5000));
    CHECK_EQ(atomic_load(&r1.result), KVMUX_EUNKNOWN);
    CHECK(strcmp(kvmux_strerror(KVMUX_EUNKNOWN), "unknown error") != 0);
    /* Not a connection failure: the client stays connected. */
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    fg_stop(&g);
}

/* Without endpoints a follower's NOT_LEADER is an answer like any other:
 * KVMUX_ENOTLEADER, the connection stays. */
static void test_not_leader_without_endpoints(void) {
    fake_group g;
    fg_start(&g, 1);
    fg_set_role(&g, 0, FG_FOLLOWER, 0);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", g.r[0].port, NULL) == 0);
    CHECK_EQ(kvmux_set(c, "a", 1, "1", 1, 0, NULL, 5000), KVMUX_ENOTLEADER);
    rec r1;
    memset(&r1, 0, sizeof r1);
    kvmux_request r = req_of(KVMUX_GET, "a", NULL);
    CHECK_EQ(kvmux_call_async(c, &r, 5000, on_rec, &r1), 0);
    CHECK(wait_recs(&r1, 1, 5000));
    CHECK_EQ(atomic_load(&r1.result), KVMUX_ENOTLEADER);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    CHECK_EQ(atomic_load(&g.r[0].conns), 1);
    kvmux_close(c);
    fg_stop(&g);
}

/* ---- the leader's connection reset with requests in flight ---- */

typedef struct blk {
    kvmux_client *c;
    int write;
    int rc;
    char val[32];
} blk;

static void *blk_main(void *arg) {
    blk *b = arg;
    if (b->write) b->rc = kvmux_set(b->c, "bw", 2, "v", 1, 0, NULL, 10000);
    else b->rc = get_str(b->c, "r0", b->val, sizeof b->val);
    return NULL;
}

static void test_cut_in_flight(int resend_writes) {
    enum { N = 8 };
    fake_group g;
    fg_start(&g, 3);
    fg_set_role(&g, 0, FG_HOLD, 0);      /* the leader, about to die */
    fg_set_role(&g, 1, FG_FOLLOWER, 0);
    fg_set_role(&g, 2, FG_FOLLOWER, 0);
    char rk[N][8], rv[N][8], wk[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(rk[i], sizeof rk[i], "r%d", i);
        snprintf(rv[i], sizeof rv[i], "v%d", i);
        snprintf(wk[i], sizeof wk[i], "w%d", i);
        fg_store_set(&g, rk[i], rv[i]);
    }
    fg_store_set(&g, "wk", "waited");
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    o.resend_writes = resend_writes;
    kvmux_client *c = fo_connect(&o);
    static rec wr[N], rd[N];
    memset(wr, 0, sizeof wr);
    memset(rd, 0, sizeof rd);
    for (int i = 0; i < N; i++) {
        kvmux_request w = req_of(KVMUX_SET, wk[i], "x");
        CHECK_EQ(kvmux_call_async(c, &w, KVMUX_TIMEOUT_DEFAULT, on_rec, &wr[i]), 0);
        kvmux_request r = req_of(KVMUX_GET, rk[i], NULL);
        CHECK_EQ(kvmux_call_async(c, &r, KVMUX_TIMEOUT_DEFAULT, on_rec, &rd[i]), 0);
    }
    kvmux_request wq = req_of(KVMUX_WAIT, "wk", NULL);
    wq.version = 0; /* any version: answered as soon as it is processed */
    wq.wait_ms = 5000;
    kvmux_future *wf = NULL;
    CHECK_EQ(kvmux_call_future(c, &wq, KVMUX_TIMEOUT_DEFAULT, &wf), 0);
    blk bw = {c, 1, 0, ""}, br = {c, 0, 0, ""};
    pthread_t tw, tr;
    REQUIRE(pthread_create(&tw, NULL, blk_main, &bw) == 0);
    REQUIRE(pthread_create(&tr, NULL, blk_main, &br) == 0);
    CHECK(fg_wait_held(&g, 0, 2 * N + 3, 10000));
    /* The leader dies; replica 1 takes over. */
    fg_set_role(&g, 1, FG_LEADER, 0);
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    fg_set_role(&g, 2, FG_FOLLOWER, 1);
    fg_cut(&g, 0);
    /* Once the client has seen the loss (or already reconnected): a
     * request submitted before that could still be written to the dead
     * connection and rightly come back KVMUX_EUNKNOWN. */
    int64_t seen_by = test_now_ms() + 5000;
    for (;;) {
        uint64_t attempts = 0, reconnects = 0;
        kvmux_reconnect_stats(c, &attempts, &reconnects);
        if (kvmux_connection_error(c, NULL, 0) != 0 || reconnects > 0) break;
        REQUIRE(test_now_ms() < seen_by);
        test_sleep_ms(1);
    }
    /* Submitted during the outage: never sent before, sent once. */
    static rec q[4];
    memset(q, 0, sizeof q);
    const char *qk[4] = {"q0", "q1", "q2", "q3"};
    for (int i = 0; i < 4; i++) {
        kvmux_request w = req_of(KVMUX_SET, qk[i], "q");
        CHECK_EQ(kvmux_call_async(c, &w, KVMUX_TIMEOUT_DEFAULT, on_rec, &q[i]), 0);
    }
    CHECK(wait_recs(wr, N, 10000));
    CHECK(wait_recs(rd, N, 10000));
    CHECK(wait_recs(q, 4, 10000));
    CHECK_EQ(kvmux_future_wait(wf, 10000), 0);
    pthread_join(tw, NULL);
    pthread_join(tr, NULL);
    int want_w = resend_writes ? 0 : KVMUX_EUNKNOWN;
    for (int i = 0; i < N; i++) {
        CHECK_EQ(atomic_load(&wr[i].result), want_w);
        CHECK_EQ(fg_applied(&g, wk[i]), resend_writes ? 1 : 0);
        CHECK_EQ(atomic_load(&rd[i].result), 0);
        CHECK(strcmp(rd[i].val, rv[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(atomic_load(&q[i].result), 0);
        CHECK_EQ(fg_applied(&g, qk[i]), 1);
    }
    kvmux_reply rep;
    CHECK_EQ(kvmux_future_result(wf, &rep), 0);
    CHECK(rep.value && rep.value_len == 6 && memcmp(rep.value, "waited", 6) == 0);
    kvmux_reply_free(&rep);
    kvmux_future_free(wf);
    CHECK_EQ(bw.rc, want_w);
    CHECK_EQ(br.rc, 0);
    CHECK(strcmp(br.val, "v0") == 0);
    /* Still exactly once, a while later. */
    test_sleep_ms(30);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(atomic_load(&wr[i].calls), 1);
        CHECK_EQ(atomic_load(&rd[i].calls), 1);
    }
    CHECK_EQ(kvmux_set(c, "after", 5, "1", 1, 0, NULL, 5000), 0);
    CHECK_EQ(fg_applied(&g, "after"), 1);
    kvmux_close(c);
    fg_stop(&g);
}

/* Writes still in the outbound queue at the loss -- queued behind a
 * writer blocked on a leader that stopped reading -- never left: they are
 * resent to the new leader and applied once; those the writer had taken
 * complete KVMUX_EUNKNOWN. */
static void test_unsent_writes(void) {
    enum { BIG = 80, SMALL = 10, VLEN = 60000 };
    fake_group g;
    fg_start_ex(&g, 2, 16384);
    fg_set_role(&g, 0, FG_LEADER, 0);
    fg_set_role(&g, 1, FG_FOLLOWER, 0);
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = fo_connect(&o);
    CHECK_EQ(kvmux_ping(c, 5000), 0); /* connected to replica 0 */
    fg_set_role(&g, 0, FG_STALL, 0);
    char *big = malloc(VLEN);
    REQUIRE(big);
    memset(big, 'b', VLEN);
    static rec rb[BIG], rs[SMALL];
    memset(rb, 0, sizeof rb);
    memset(rs, 0, sizeof rs);
    char bk[BIG][8], sk[SMALL][8];
    for (int i = 0; i < BIG; i++) {
        snprintf(bk[i], sizeof bk[i], "b%d", i);
        kvmux_request w = req_of(KVMUX_SET, bk[i], NULL);
        w.value = big;
        w.value_len = VLEN;
        CHECK_EQ(kvmux_call_async(c, &w, KVMUX_TIMEOUT_DEFAULT, on_rec, &rb[i]), 0);
    }
    test_sleep_ms(300); /* the writer fills the socket and blocks */
    for (int i = 0; i < SMALL; i++) {
        snprintf(sk[i], sizeof sk[i], "s%d", i);
        kvmux_request w = req_of(KVMUX_SET, sk[i], "s");
        CHECK_EQ(kvmux_call_async(c, &w, KVMUX_TIMEOUT_DEFAULT, on_rec, &rs[i]), 0);
    }
    fg_set_role(&g, 1, FG_LEADER, 0);
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    fg_cut(&g, 0);
    CHECK(wait_recs(rb, BIG, 15000));
    CHECK(wait_recs(rs, SMALL, 15000));
    int unknown = 0;
    for (int i = 0; i < BIG; i++) {
        int res = atomic_load(&rb[i].result);
        CHECK(res == 0 || res == KVMUX_EUNKNOWN);
        CHECK_EQ(fg_applied(&g, bk[i]), res == 0 ? 1 : 0);
        unknown += res == KVMUX_EUNKNOWN;
    }
    CHECK(unknown > 0); /* the writer had taken some */
    for (int i = 0; i < SMALL; i++) {
        CHECK_EQ(atomic_load(&rs[i].result), 0);
        CHECK_EQ(fg_applied(&g, sk[i]), 1);
    }
    test_sleep_ms(20);
    for (int i = 0; i < BIG; i++) CHECK_EQ(atomic_load(&rb[i].calls), 1);
    for (int i = 0; i < SMALL; i++) CHECK_EQ(atomic_load(&rs[i].calls), 1);
    kvmux_close(c);
    free(big);
    fg_stop(&g);
}

/* A write the old leader never answers holds a redirect's drain only
 * until its caller gives up (timeout, cancel): the redirected read then
 * follows at once instead of waiting out its own deadline. */
typedef struct held_set {
    kvmux_client *c;
    int rc;
} held_set;

static void *held_set_main(void *arg) {
    held_set *h = arg;
    h->rc = kvmux_set(h->c, "hw", 2, "1", 1, 0, NULL, 300);
    return NULL;
}

static void test_drain_bounded(void) {
    fake_group g;
    fg_start(&g, 2);
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    atomic_store(&g.r[0].hold_writes, 1);
    fg_set_role(&g, 1, FG_LEADER, 0);
    fg_store_set(&g, "rk", "r");
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = fo_connect(&o);
    /* Blocking write, given up by timeout. */
    held_set h = {c, 0};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, held_set_main, &h) == 0);
    CHECK(fg_wait_held(&g, 0, 1, 5000));
    int64_t t0 = test_now_ms();
    char buf[8];
    CHECK_EQ(get_str(c, "rk", buf, sizeof buf), 0);
    int64_t el = test_now_ms() - t0;
    CHECK(el < 3000);
    pthread_join(th, NULL);
    CHECK_EQ(h.rc, KVMUX_ETIMEDOUT);
    CHECK_EQ(fg_applied(&g, "hw"), 0);
    kvmux_close(c);
    /* Async write, given up by kvmux_cancel. */
    atomic_store(&g.r[0].held, 0);
    c = fo_connect(&o);
    rec w, r;
    memset(&w, 0, sizeof w);
    memset(&r, 0, sizeof r);
    kvmux_request wq = req_of(KVMUX_SET, "hw", "1");
    kvmux_handle hd = 0;
    CHECK_EQ(kvmux_call_async_handle(c, &wq, 10000, on_rec, &w, &hd), 0);
    CHECK(fg_wait_held(&g, 0, 1, 5000));
    kvmux_request rq = req_of(KVMUX_GET, "rk", NULL);
    CHECK_EQ(kvmux_call_async(c, &rq, 10000, on_rec, &r), 0);
    int64_t by = test_now_ms() + 5000; /* the GET's NOT_LEADER: draining */
    while (atomic_load(&g.r[0].not_leader) < 2 && test_now_ms() < by) test_sleep_ms(1);
    CHECK(atomic_load(&g.r[0].not_leader) >= 2);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&r.calls), 0); /* draining: the held write is owed */
    t0 = test_now_ms();
    CHECK_EQ(kvmux_cancel(c, hd), 0);
    CHECK(wait_recs(&r, 1, 5000));
    CHECK(test_now_ms() - t0 < 3000);
    CHECK_EQ(atomic_load(&r.result), 0);
    CHECK(strcmp(r.val, "r") == 0);
    CHECK(wait_recs(&w, 1, 5000));
    CHECK_EQ(atomic_load(&w.result), KVMUX_ECANCELED);
    kvmux_close(c);
    fg_stop(&g);
}

/* ---- deadlines and cancel across a redirect ---- */

static void test_deadline_cancel(void) {
    fake_group g;
    fg_start(&g, 2);
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    fg_set_role(&g, 1, FG_HOLD, 0); /* the "leader" never answers */
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = fo_connect(&o);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_set(c, "d", 1, "1", 1, 0, NULL, 300), KVMUX_ETIMEDOUT);
    int64_t el = test_now_ms() - t0;
    CHECK(el >= 250 && el < 3000);
    rec r1, r2;
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    kvmux_request r = req_of(KVMUX_GET, "d", NULL);
    t0 = test_now_ms();
    CHECK_EQ(kvmux_call_async(c, &r, 300, on_rec, &r1), 0);
    kvmux_handle h = 0;
    CHECK_EQ(kvmux_call_async_handle(c, &r, 10000, on_rec, &r2, &h), 0);
    CHECK(wait_recs(&r1, 1, 5000));
    CHECK_EQ(atomic_load(&r1.result), KVMUX_ETIMEDOUT);
    el = test_now_ms() - t0;
    CHECK(el >= 250 && el < 3000);
    CHECK_EQ(kvmux_cancel(c, h), 0);
    CHECK(wait_recs(&r2, 1, 5000));
    CHECK_EQ(atomic_load(&r2.result), KVMUX_ECANCELED);
    test_sleep_ms(30);
    CHECK_EQ(atomic_load(&r1.calls), 1);
    CHECK_EQ(atomic_load(&r2.calls), 1);
    /* Closing with requests in flight completes them once. */
    rec r3;
    memset(&r3, 0, sizeof r3);
    CHECK_EQ(kvmux_call_async(c, &r, 10000, on_rec, &r3), 0);
    kvmux_close(c);
    CHECK_EQ(atomic_load(&r3.calls), 1);
    CHECK(kvmux_is_fatal(atomic_load(&r3.result)));
    fg_stop(&g);
}

/* ---- event-loop mode ---- */

static int loop_until(uv_loop_t *loop, rec *recs, int n, int ms) {
    int64_t end = test_now_ms() + ms;
    while (!wait_recs(recs, n, 0)) {
        if (test_now_ms() >= end) return 0;
        run_loop(loop, 5);
    }
    return 1;
}

static void test_loop(void) {
    fake_group g;
    fg_start(&g, 3);
    fg_set_role(&g, 0, FG_FOLLOWER, 2);
    fg_set_role(&g, 1, FG_FOLLOWER, -1);
    fg_set_role(&g, 2, FG_LEADER, 0);
    fg_store_set(&g, "wk", "w");
    fg_store_set(&g, "rk", "r");
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, NULL, 0, &o) == 0);
    REQUIRE(kvmux_libuv_attach(c, &loop) == 0);
    /* Redirect: submitted before the handshake, resent to the leader. */
    rec a[3];
    memset(a, 0, sizeof a);
    kvmux_request s1 = req_of(KVMUX_SET, "l1", "1");
    kvmux_request s2 = req_of(KVMUX_INCR, "l2", NULL);
    s2.delta = 3;
    kvmux_request s3 = req_of(KVMUX_GET, "rk", NULL);
    CHECK_EQ(kvmux_call_async(c, &s1, KVMUX_TIMEOUT_DEFAULT, on_rec, &a[0]), 0);
    CHECK_EQ(kvmux_call_async(c, &s2, KVMUX_TIMEOUT_DEFAULT, on_rec, &a[1]), 0);
    CHECK_EQ(kvmux_call_async(c, &s3, KVMUX_TIMEOUT_DEFAULT, on_rec, &a[2]), 0);
    CHECK(loop_until(&loop, a, 3, 10000));
    for (int i = 0; i < 3; i++) CHECK_EQ(atomic_load(&a[i].result), 0);
    CHECK(strcmp(a[2].val, "r") == 0);
    CHECK_EQ(fg_applied(&g, "l1"), 1);
    CHECK_EQ(fg_applied(&g, "l2"), 1);
    CHECK(atomic_load(&g.r[0].not_leader) >= 1);
    /* The leader holds a write, a read and a WAIT, then dies. */
    fg_set_role(&g, 2, FG_HOLD, 0);
    rec b[3];
    memset(b, 0, sizeof b);
    kvmux_request w = req_of(KVMUX_SET, "lw", "x");
    kvmux_request wt = req_of(KVMUX_WAIT, "wk", NULL);
    wt.wait_ms = 5000;
    CHECK_EQ(kvmux_call_async(c, &w, KVMUX_TIMEOUT_DEFAULT, on_rec, &b[0]), 0);
    CHECK_EQ(kvmux_call_async(c, &s3, KVMUX_TIMEOUT_DEFAULT, on_rec, &b[1]), 0);
    CHECK_EQ(kvmux_call_async(c, &wt, KVMUX_TIMEOUT_DEFAULT, on_rec, &b[2]), 0);
    int64_t end = test_now_ms() + 10000;
    while (atomic_load(&g.r[2].held) < 3 && test_now_ms() < end) run_loop(&loop, 5);
    CHECK_EQ(atomic_load(&g.r[2].held), 3);
    fg_set_role(&g, 1, FG_LEADER, 0);
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    fg_set_role(&g, 2, FG_FOLLOWER, 1);
    fg_cut(&g, 2);
    CHECK(loop_until(&loop, b, 3, 10000));
    CHECK_EQ(atomic_load(&b[0].result), KVMUX_EUNKNOWN);
    CHECK_EQ(fg_applied(&g, "lw"), 0);
    CHECK_EQ(atomic_load(&b[1].result), 0);
    CHECK(strcmp(b[1].val, "r") == 0);
    CHECK_EQ(atomic_load(&b[2].result), 0);
    CHECK(strcmp(b[2].val, "w") == 0);
    /* The redirect bound holds in this mode too. */
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    fg_set_role(&g, 1, FG_FOLLOWER, 0);
    fg_set_role(&g, 2, FG_FOLLOWER, 0);
    rec d;
    memset(&d, 0, sizeof d);
    CHECK_EQ(kvmux_call_async(c, &s1, 20000, on_rec, &d), 0);
    CHECK(loop_until(&loop, &d, 1, 15000));
    CHECK_EQ(atomic_load(&d.result), KVMUX_ENOTLEADER);
    run_loop(&loop, 20);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(atomic_load(&a[i].calls), 1);
        CHECK_EQ(atomic_load(&b[i].calls), 1);
    }
    CHECK_EQ(atomic_load(&d.calls), 1);
    kvmux_close(c);
    run_loop(&loop, 100);
    CHECK_EQ(uv_loop_close(&loop), 0);
    fg_stop(&g);
}

static uint16_t closed_port(void);

/* ---- the group-agnostic scenario (failover_scenario.h) on the fake ---- */

typedef struct fake_target {
    fake_group *g;
    int leader;
} fake_target;

/* The leader's connection is reset and the next replica leads; the old
 * one (if the client comes back) names the new leader. */
static void fake_fail_leader(void *arg) {
    fake_target *ft = arg;
    int old = ft->leader, next = (old + 1) % ft->g->n;
    fg_set_role(ft->g, next, FG_LEADER, 0);
    for (int i = 0; i < ft->g->n; i++)
        if (i != next) fg_set_role(ft->g, i, FG_FOLLOWER, next);
    fg_cut(ft->g, old);
    ft->leader = next;
}

static void test_scenario(void) {
    fake_group g;
    fg_start(&g, 3);
    fg_set_role(&g, 0, FG_LEADER, 0);
    fg_set_role(&g, 1, FG_FOLLOWER, 0);
    fg_set_role(&g, 2, FG_FOLLOWER, 0);
    fake_target ft = {&g, 0};
    failover_target t = {g.endpoints, fake_fail_leader, &ft};
    int ops = (int)(4000 * test_scale());
    if (ops < 400) ops = 400;
    failover_result r;
    failover_run_async(&t, ops, 64, &r);
    printf("failover async: ops=%d acked=%d unknown=%d other=%d lost=%d twice=%d\n", r.ops,
           r.acked, r.unknown, r.other, r.lost, r.twice);
    CHECK_EQ(r.acked + r.unknown, r.ops);
    CHECK(r.unknown <= 64);
    CHECK(r.acked >= r.ops - 64);
    failover_run_blocking(&t, ops / 2, 8, &r);
    printf("failover blocking: ops=%d acked=%d unknown=%d other=%d lost=%d twice=%d\n", r.ops,
           r.acked, r.unknown, r.other, r.lost, r.twice);
    CHECK_EQ(r.acked + r.unknown, r.ops);
    CHECK(r.unknown <= 8);
    fg_stop(&g);
}

/* Event-loop mode whose first endpoint refuses: the status callback
 * reports the failed attempt, the next endpoint is tried. */
static void test_loop_dead_first(void) {
    fake_group g;
    fg_start(&g, 1);
    fg_set_role(&g, 0, FG_LEADER, 0);
    char eps[sizeof g.endpoints + 32];
    snprintf(eps, sizeof eps, "127.0.0.1:%u,%s", (unsigned)closed_port(), g.endpoints);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    kvmux_options o;
    opts_fast(&o, eps);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, NULL, 0, &o) == 0);
    status_rec st;
    memset(&st, 0, sizeof st);
    CHECK_EQ(kvmux_async_set_status_cb(c, on_status, &st), 0);
    REQUIRE(kvmux_libuv_attach(c, &loop) == 0);
    rec a;
    memset(&a, 0, sizeof a);
    kvmux_request s1 = req_of(KVMUX_SET, "d1", "1");
    CHECK_EQ(kvmux_call_async(c, &s1, KVMUX_TIMEOUT_DEFAULT, on_rec, &a), 0);
    CHECK(loop_until(&loop, &a, 1, 10000));
    CHECK_EQ(atomic_load(&a.result), 0);
    CHECK_EQ(fg_applied(&g, "d1"), 1);
    CHECK(st.connected >= 1);
    kvmux_close(c);
    run_loop(&loop, 100);
    CHECK_EQ(uv_loop_close(&loop), 0);
    fg_stop(&g);
}

/* Event-loop mode: a deadline and a cancel hold across a redirect to a
 * leader that never answers. */
static void test_loop_deadline_cancel(void) {
    fake_group g;
    fg_start(&g, 2);
    fg_set_role(&g, 0, FG_FOLLOWER, 1);
    fg_set_role(&g, 1, FG_HOLD, 0);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    kvmux_options o;
    opts_fast(&o, g.endpoints);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, NULL, 0, &o) == 0);
    REQUIRE(kvmux_libuv_attach(c, &loop) == 0);
    rec a[2];
    memset(a, 0, sizeof a);
    kvmux_request s1 = req_of(KVMUX_SET, "t", "1");
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_call_async(c, &s1, 300, on_rec, &a[0]), 0);
    kvmux_handle h = 0;
    CHECK_EQ(kvmux_call_async_handle(c, &s1, 20000, on_rec, &a[1], &h), 0);
    CHECK(loop_until(&loop, &a[0], 1, 5000));
    int64_t el = test_now_ms() - t0;
    CHECK_EQ(atomic_load(&a[0].result), KVMUX_ETIMEDOUT);
    CHECK(el >= 250 && el < 3000);
    int64_t by = test_now_ms() + 5000;
    while (atomic_load(&g.r[1].held) < 1 && test_now_ms() < by) run_loop(&loop, 5);
    CHECK_EQ(kvmux_cancel(c, h), 0);
    CHECK(loop_until(&loop, &a[1], 1, 5000));
    CHECK_EQ(atomic_load(&a[1].result), KVMUX_ECANCELED);
    run_loop(&loop, 20);
    CHECK_EQ(atomic_load(&a[0].calls), 1);
    CHECK_EQ(atomic_load(&a[1].calls), 1);
    kvmux_close(c);
    run_loop(&loop, 100);
    CHECK_EQ(uv_loop_close(&loop), 0);
    fg_stop(&g);
}

/* ---- against a real single-node kvmuxd (protocol 2) ---- */

static uint16_t closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t al = sizeof a;
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    close(fd); /* nobody listens there now */
    return ntohs(a.sin_port);
}

static void test_real_single_node(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    char eps[64];
    snprintf(eps, sizeof eps, "127.0.0.1:%u, 127.0.0.1:%u", (unsigned)closed_port(),
             (unsigned)s.port);
    kvmux_options o;
    opts_fast(&o, eps);
    kvmux_client *c = fo_connect(&o);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, 2); /* a single node offers 2 */
    CHECK_EQ(kvmux_set(c, "k", 1, "v", 1, 0, NULL, 5000), 0);
    char buf[8];
    CHECK_EQ(get_str(c, "k", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "v") == 0);
    kvmux_close(c);
    /* Bad lists are refused before connecting. */
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:1,", ",127.0.0.1:1",
                         "::1:80", "[::1]80", "h:99999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        opts_fast(&o, bad[i]);
        c = NULL;
        CHECK_EQ(kvmux_connect(&c, NULL, 0, &o), KVMUX_EINVAL);
        CHECK(c == NULL);
    }
    CHECK_EQ(test_server_stop(&s, 5000), 0);
}

int main(void) {
    test_redirect_blocking();
    test_redirect_async();
    test_no_leader_address();
    test_redirect_bound();
    test_outcome_unknown();
    test_not_leader_without_endpoints();
    test_cut_in_flight(0);
    test_cut_in_flight(1);
    test_unsent_writes();
    test_drain_bounded();
    test_deadline_cancel();
    test_loop();
    test_loop_dead_first();
    test_loop_deadline_cancel();
    test_scenario();
    test_real_single_node();
    return test_report();
}
