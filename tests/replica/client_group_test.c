/* libkvmux against a real replicated group: 3 kvmuxd replicas on loopback
 * (rgroup.h), the client given all three client addresses
 * (kvmux_options.endpoints), and the leader killed with SIGKILL in the
 * middle of the load -- the scenario of client_failover_test
 * (failover_scenario.h), which runs it against a fake group, now with real
 * elections, a real Raft log and a real process death.
 *
 * Checked for the async client (64 in flight) and for 8 blocking threads
 * sharing one client: every request completes exactly once, each outcome
 * is OK or KVMUX_EUNKNOWN (a write in flight when the leader died), no
 * acknowledged write is lost (each read back from the new leader), and
 * the client reaches the new leader by itself. Between the two runs the
 * killed replica restarts and catches up, so the second kill leaves a
 * majority too.
 *
 * Exactly-once sessions (docs/REPLICATION.md): INCRs of one counter, 64
 * in flight (async) and from 16 blocking threads, with the leader killed
 * 3 times (2 under KVMUX_TEST_SCALE < 1): the counter equals the INCRs
 * acknowledged, 0 KVMUX_EUNKNOWN, distinct returned values; and a
 * hand-made duplicate on a raw socket (the same session and seq twice,
 * and again on the next leader after a kill -9) gets the original reply
 * and is applied once. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failover_scenario.h"
#include "kvmux.h"
#ifdef KVMUX_TEST_LIBUV
#include <uv.h>

#include "kvmux/adapters/libuv.h"
#include "loop_util.h"
#endif
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

typedef struct kill_ctx {
    rgroup *g;
    int killed;       /* member index, or -1 */
    int64_t kill_ms;  /* when */
} kill_ctx;

static void kill_leader(void *arg) {
    kill_ctx *k = arg;
    int l = rgroup_leader(k->g, 10000);
    REQUIRE(l >= 0);
    k->kill_ms = test_now_ms();
    rgroup_kill(k->g, l);
    k->killed = l;
}

static void report(const char *mode, const failover_result *r) {
    printf("client_group %s: ops=%d acknowledged=%d unknown=%d other=%d (%s) lost=%d twice=%d\n",
           mode, r->ops, r->acked, r->unknown, r->other,
           r->other ? kvmux_strerror(r->other_err) : "-", r->lost, r->twice);
    CHECK(r->acked > 0);
    CHECK_EQ(r->lost, 0);
    CHECK_EQ(r->twice, 0);
    CHECK_EQ(r->acked + r->unknown + r->other, r->ops);
}

/* Restart the killed member and wait until the group has a stable leader
 * and all three agree again. */
static void heal(rgroup *g, kill_ctx *k) {
    if (k->killed < 0) return;
    REQUIRE(rgroup_start_member(g, k->killed, 0) == 0);
    k->killed = -1;
    CHECK(rgroup_stable_leader(g, 20000) >= 0);
    CHECK(rgroup_converged(g, 30000, NULL, NULL, 0) == 0);
}

/* ---- exactly-once sessions (docs/REPLICATION.md) ----
 * INCRs of one counter with the leader killed again and again: with
 * sessions (the default) every INCR the client resends after the kill is
 * applied at most once, so the counter ends EXACTLY at the number of
 * INCRs acknowledged, none ends KVMUX_EUNKNOWN, and the values returned
 * are distinct (each the counter right after its own increment). */

typedef struct incr_op {
    atomic_int calls;
    atomic_int result;
    atomic_llong value;
} incr_op;

typedef struct incr_run {
    rgroup *g;
    kill_ctx *k;
    kvmux_client *c;
    const char *key;
    incr_op *ops;
    int n, kills;
    atomic_int next;  /* blocking: the next index */
} incr_run;

static void on_incr(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    incr_op *op = ud;
    if (result == 0) atomic_store(&op->value, reply->number);
    atomic_store(&op->result, result);
    atomic_fetch_add(&op->calls, 1);
}

static kvmux_client *sess_connect(const char *endpoints) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = endpoints;
    o.reconnect_min_backoff_ms = 5;
    o.reconnect_max_backoff_ms = 100;
    o.connect_timeout_ms = 2000;
    o.request_timeout_ms = 30000; /* several elections in a row */
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0 && c);
    return c;
}

static int completed(const incr_run *r, int upto) {
    int n = 0;
    for (int i = 0; i < upto; i++) n += atomic_load(&r->ops[i].calls) > 0;
    return n;
}

/* The next kill once `done` passes its threshold: restart the member
 * killed last time (so a majority survives this kill), then kill the
 * leader. Returns the kills made so far. */
static int maybe_kill(incr_run *r, int done, int made) {
    if (made >= r->kills || done < (made + 1) * r->n / (r->kills + 1)) return made;
    if (r->k->killed >= 0) {
        REQUIRE(rgroup_start_member(r->g, r->k->killed, 0) == 0);
        r->k->killed = -1;
        CHECK(rgroup_converged(r->g, 30000, NULL, NULL, 0) == 0);
    }
    kill_leader(r->k);
    return made + 1;
}

/* Tally: every op completed once; the counter equals the acknowledged
 * INCRs; the values returned are distinct and within 1..counter. */
static void incr_check(incr_run *r, const char *mode) {
    int acked = 0, unknown = 0, other = 0, other_err = 0, twice = 0;
    char *seen = calloc((size_t)r->n + 1, 1);
    REQUIRE(seen);
    int dup_values = 0;
    for (int i = 0; i < r->n; i++) {
        int calls = atomic_load(&r->ops[i].calls);
        twice += calls > 1;
        CHECK_EQ(calls, 1);
        int res = atomic_load(&r->ops[i].result);
        if (res == 0) {
            acked++;
            long long v = atomic_load(&r->ops[i].value);
            if (v >= 1 && v <= r->n) dup_values += seen[v]++ != 0;
            else dup_values++;
        } else if (res == KVMUX_EUNKNOWN) {
            unknown++;
        } else {
            other++;
            if (!other_err) other_err = res;
        }
    }
    int64_t counter = -1;
    CHECK_EQ(kvmux_incr(r->c, r->key, strlen(r->key), 0, &counter, 30000), 0);
    /* Resends the group answered from its table (the members up now;
     * a killed leader's count went with it). */
    uint64_t dups = 0;
    for (int i = 0; i < r->g->n; i++)
        if (r->g->up[i]) dups += rgroup_stat(r->g, i, "session_duplicates");
    printf("sessions %s: kills=%d ops=%d acknowledged=%d unknown=%d other=%d (%s) "
           "counter=%lld applied_twice=%lld duplicate_values=%d session_duplicates=%llu\n",
           mode, r->kills, r->n, acked, unknown, other,
           other ? kvmux_strerror(other_err) : "-", (long long)counter,
           (long long)(counter - acked), dup_values, (unsigned long long)dups);
    CHECK_EQ(twice, 0);
    CHECK_EQ(unknown, 0);
    CHECK_EQ(other, 0);
    CHECK_EQ(counter, acked);
    CHECK_EQ(dup_values, 0);
    free(seen);
}

static void incr_async(rgroup *g, kill_ctx *k, const char *endpoints, int n, int kills) {
    incr_run r;
    memset(&r, 0, sizeof r);
    r.g = g;
    r.k = k;
    r.key = "sess-async";
    r.n = n;
    r.kills = kills;
    r.ops = calloc((size_t)n, sizeof *r.ops);
    REQUIRE(r.ops);
    r.c = sess_connect(endpoints);
    int submitted = 0, made = 0;
    int64_t end = test_now_ms() + 120000;
    while (submitted < n && test_now_ms() < end) {
        int done = completed(&r, submitted);
        made = maybe_kill(&r, done, made);
        if (submitted - done >= 64) {
            test_sleep_ms(1);
            continue;
        }
        kvmux_request q;
        memset(&q, 0, sizeof q);
        q.op = KVMUX_INCR;
        q.key = r.key;
        q.key_len = strlen(r.key);
        q.delta = 1;
        REQUIRE(kvmux_call_async(r.c, &q, KVMUX_TIMEOUT_DEFAULT, on_incr, &r.ops[submitted]) == 0);
        submitted++;
    }
    CHECK_EQ(submitted, n);
    while (completed(&r, submitted) < submitted && test_now_ms() < end) test_sleep_ms(5);
    CHECK_EQ(completed(&r, submitted), n);
    incr_check(&r, "async depth 64");
    kvmux_close(r.c);
    free(r.ops);
}

static void *incr_thread(void *arg) {
    incr_run *r = arg;
    for (;;) {
        int i = atomic_fetch_add(&r->next, 1);
        if (i >= r->n) return NULL;
        int64_t v = 0;
        int rc = kvmux_incr(r->c, r->key, strlen(r->key), 1, &v, KVMUX_TIMEOUT_DEFAULT);
        if (rc == 0) atomic_store(&r->ops[i].value, v);
        atomic_store(&r->ops[i].result, rc);
        atomic_fetch_add(&r->ops[i].calls, 1);
    }
}

static void incr_blocking(rgroup *g, kill_ctx *k, const char *endpoints, int n, int kills) {
    enum { THREADS = 16 };
    incr_run r;
    memset(&r, 0, sizeof r);
    r.g = g;
    r.k = k;
    r.key = "sess-blocking";
    r.n = n;
    r.kills = kills;
    r.ops = calloc((size_t)n, sizeof *r.ops);
    REQUIRE(r.ops);
    r.c = sess_connect(endpoints);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) REQUIRE(pthread_create(&th[i], NULL, incr_thread, &r) == 0);
    int made = 0;
    int64_t end = test_now_ms() + 120000;
    while (completed(&r, n) < n && test_now_ms() < end) {
        made = maybe_kill(&r, completed(&r, n), made);
        test_sleep_ms(2);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    incr_check(&r, "blocking 16 threads");
    kvmux_close(r.c);
    free(r.ops);
}

#ifdef KVMUX_TEST_LIBUV
/* Event-loop mode (libuv): the same INCR run, the loop driven from this
 * thread between submits and kills. */
static void incr_loop(rgroup *g, kill_ctx *k, const char *endpoints, int n, int kills) {
    incr_run r;
    memset(&r, 0, sizeof r);
    r.g = g;
    r.k = k;
    r.key = "sess-loop";
    r.n = n;
    r.kills = kills;
    r.ops = calloc((size_t)n, sizeof *r.ops);
    REQUIRE(r.ops);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = endpoints;
    o.reconnect_min_backoff_ms = 5;
    o.reconnect_max_backoff_ms = 100;
    o.connect_timeout_ms = 2000;
    o.request_timeout_ms = 30000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, NULL, 0, &o) == 0);
    REQUIRE(kvmux_libuv_attach(c, &loop) == 0);
    int submitted = 0, made = 0;
    int64_t end = test_now_ms() + 120000;
    while (test_now_ms() < end) {
        int done = completed(&r, submitted);
        if (done == n) break;
        made = maybe_kill(&r, done, made);
        while (submitted < n && submitted - done < 64) {
            kvmux_request q;
            memset(&q, 0, sizeof q);
            q.op = KVMUX_INCR;
            q.key = r.key;
            q.key_len = strlen(r.key);
            q.delta = 1;
            REQUIRE(kvmux_call_async(c, &q, KVMUX_TIMEOUT_DEFAULT, on_incr, &r.ops[submitted]) == 0);
            submitted++;
        }
        run_loop(&loop, 5);
    }
    CHECK_EQ(completed(&r, submitted), n);
    /* The final read from a blocking client (the loop client cannot block). */
    r.c = sess_connect(endpoints);
    incr_check(&r, "event loop depth 64");
    kvmux_close(r.c);
    kvmux_close(c);
    run_loop(&loop, 100); /* the adapter's handles close */
    CHECK_EQ(uv_loop_close(&loop), 0);
    free(r.ops);
}
#endif

/* A raw v3 connection to port with session id sid. Returns the fd or -1. */
static int raw_session(uint16_t port, uint64_t sid) {
    int fd = test_connect_raw(port, 3000);
    if (fd < 0) return -1;
    kvmux_session s;
    kvmux_settings st;
    kvmux_settings_default(&st);
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, &st);
    s.max_version = KVMUX_PROTO_V3;
    uint8_t out[KVMUX_HELLO_AUTH_MAX_LEN], in[8192];
    size_t n = kvmux_session_encode_hello(&s, out, "raw");
    n = kvmux_hello_append_session(out, n, sid);
    kvmux_frame f;
    if (test_write_all(fd, out, n) != 0 || test_read_frame(fd, in, sizeof in, &f) <= 0 ||
        f.type != KVMUX_FRAME_HELLO_ACK || f.code != KVMUX_PROTO_V3) {
        close(fd);
        return -1;
    }
    return fd;
}

/* INCR key by 1 as seq of the session on fd: the status, *value and
 * *version from an OK reply. -1: no reply. */
static int raw_incr(int fd, uint32_t id, uint64_t seq, const char *key, int64_t *value,
                    uint64_t *version) {
    uint8_t ex[8], out[256], in[8192];
    kvmux_store_u64be(ex, 1);
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = KVMUX_PROTO_V3;
    f.type = KVMUX_FRAME_REQUEST;
    f.flags = KVMUX_FLAG_SESSION;
    f.code = KVMUX_OP_INCR;
    f.request_id = id;
    f.session_seq = seq;
    f.extras = ex;
    f.extras_len = 8;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)strlen(key);
    size_t n = kvmux_frame_encode(out, &f);
    if (test_write_all(fd, out, n) != 0) return -1;
    if (test_read_frame(fd, in, sizeof in, &f) <= 0 || f.request_id != id) return -1;
    if (f.code == KVMUX_STATUS_OK && f.extras_len == 16) {
        *value = (int64_t)kvmux_load_u64be(f.extras);
        *version = kvmux_load_u64be(f.extras + 8);
    }
    return f.code;
}

/* The same (session, seq) sent twice (the second with RETRY), then again
 * to the next leader after a kill -9: the same reply each time, applied
 * once. Also the refusals: SESSION on a read or without a session id
 * (BAD_REQUEST), a resend the table cannot vouch for (OUTCOME_UNKNOWN, not
 * applied). */
static void raw_duplicates(rgroup *g, kill_ctx *k) {
    const char *key = "sess-raw";
    const uint64_t sid = 0x5e55104e0001ull;
    int l = rgroup_stable_leader(g, 20000);
    REQUIRE(l >= 0);
    int fd = raw_session(g->cport[l], sid);
    REQUIRE(fd >= 0);
    int64_t v1 = 0, v2 = 0;
    uint64_t ver1 = 0, ver2 = 0;
    CHECK_EQ(raw_incr(fd, 1, 1, key, &v1, &ver1), KVMUX_STATUS_OK);
    CHECK_EQ(raw_incr(fd, 2, 1 | KVMUX_SESSION_RETRY, key, &v2, &ver2), KVMUX_STATUS_OK);
    CHECK(v1 == 1 && v2 == 1 && ver1 == ver2);
    CHECK_EQ(raw_incr(fd, 3, 2, key, &v2, &ver2), KVMUX_STATUS_OK);
    CHECK_EQ(v2, 2);
    /* SESSION on a GET: BAD_REQUEST. */
    uint8_t out[128], in[8192];
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = KVMUX_PROTO_V3;
    f.type = KVMUX_FRAME_REQUEST;
    f.flags = KVMUX_FLAG_SESSION;
    f.code = KVMUX_OP_GET;
    f.request_id = 4;
    f.session_seq = 3;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)strlen(key);
    CHECK_EQ(test_write_all(fd, out, kvmux_frame_encode(out, &f)), 0);
    CHECK(test_read_frame(fd, in, sizeof in, &f) > 0 && f.code == KVMUX_STATUS_BAD_REQUEST);
    close(fd);
    uint64_t dups = rgroup_stat(g, l, "session_duplicates");
    CHECK(dups >= 1);

    /* kill -9 the leader; the new one answers seq 1 and 2 as before. */
    kill_leader(k);
    int nl = rgroup_stable_leader(g, 20000);
    REQUIRE(nl >= 0 && nl != k->killed);
    fd = raw_session(g->cport[nl], sid);
    REQUIRE(fd >= 0);
    int64_t v3 = 0;
    uint64_t ver3 = 0;
    CHECK_EQ(raw_incr(fd, 1, 1 | KVMUX_SESSION_RETRY, key, &v3, &ver3), KVMUX_STATUS_OK);
    CHECK(v3 == 1 && ver3 == ver1);
    CHECK_EQ(raw_incr(fd, 2, 2 | KVMUX_SESSION_RETRY, key, &v3, &ver3), KVMUX_STATUS_OK);
    CHECK_EQ(v3, 2);
    CHECK_EQ(raw_incr(fd, 3, 3, key, &v3, &ver3), KVMUX_STATUS_OK);
    CHECK_EQ(v3, 3);
    /* A resend (RETRY) of a session nobody has seen (as if forgotten):
     * OUTCOME_UNKNOWN and not applied; a first transmission, whatever its
     * number (a handle idle past --session-timeout), is applied. */
    close(fd);
    fd = raw_session(g->cport[nl], sid + 1);
    REQUIRE(fd >= 0);
    CHECK_EQ(raw_incr(fd, 1, 1000000 | KVMUX_SESSION_RETRY, key, &v3, &ver3),
             KVMUX_STATUS_OUTCOME_UNKNOWN);
    CHECK_EQ(raw_incr(fd, 2, 1000000, key, &v3, &ver3), KVMUX_STATUS_OK);
    CHECK_EQ(v3, 4);
    close(fd);
    /* Without a session id in HELLO, SESSION is BAD_REQUEST. */
    fd = test_connect_raw(g->cport[nl], 3000);
    REQUIRE(fd >= 0);
    CHECK_EQ(test_raw_handshake_version(fd, 3), 3);
    CHECK_EQ(raw_incr(fd, 1, 1, key, &v3, &ver3), KVMUX_STATUS_BAD_REQUEST);
    close(fd);
    CHECK(rgroup_stat(g, nl, "session_count") >= 2);
    CHECK(rgroup_stat(g, nl, "session_refused") >= 1);
    printf("sessions raw: duplicates answered with the original reply, across a kill too\n");
}

/* --session-timeout on the replicated clock (a one-member group, 1 s):
 * after the session idles past it, a RETRY is refused (not applied) and
 * a first transmission starts it again; and a libkvmux handle idle that
 * long keeps writing. */
static void session_expiry(void) {
    static const char *const extra[] = {"--session-timeout", "1000", NULL};
    rgroup g1;
    REQUIRE(rgroup_start(&g1, 1, extra) == 0);
    REQUIRE(rgroup_leader(&g1, 15000) == 0);
    const char *key = "sess-exp";
    int fd = raw_session(g1.cport[0], 0xe1);
    REQUIRE(fd >= 0);
    int64_t v = 0;
    uint64_t ver = 0;
    CHECK_EQ(raw_incr(fd, 1, 1, key, &v, &ver), KVMUX_STATUS_OK);
    CHECK_EQ(raw_incr(fd, 2, 1 | KVMUX_SESSION_RETRY, key, &v, &ver), KVMUX_STATUS_OK);
    CHECK_EQ(v, 1);
    char ep[32];
    snprintf(ep, sizeof ep, "127.0.0.1:%u", g1.cport[0]);
    kvmux_client *c = sess_connect(ep);
    int64_t cv = 0;
    CHECK_EQ(kvmux_incr(c, key, strlen(key), 1, &cv, 10000), 0);
    CHECK_EQ(cv, 2);
    /* The idle leader ticks the replicated clock every second. */
    int64_t end = test_now_ms() + 15000;
    while (rgroup_stat(&g1, 0, "session_expired") < 2 && test_now_ms() < end) test_sleep_ms(100);
    CHECK(rgroup_stat(&g1, 0, "session_expired") >= 2);
    CHECK_EQ(raw_incr(fd, 3, 1 | KVMUX_SESSION_RETRY, key, &v, &ver),
             KVMUX_STATUS_OUTCOME_UNKNOWN);
    CHECK_EQ(raw_incr(fd, 4, 2, key, &v, &ver), KVMUX_STATUS_OK);
    CHECK_EQ(v, 3);
    CHECK_EQ(kvmux_incr(c, key, strlen(key), 1, &cv, 10000), 0);
    CHECK_EQ(cv, 4);
    close(fd);
    kvmux_close(c);
    rgroup_stop(&g1);
    printf("sessions expiry: a RETRY after --session-timeout refused, first transmissions applied\n");
}

int main(void) {
    session_expiry();
    rgroup g;
    REQUIRE(rgroup_start(&g, 3, NULL) == 0);
    REQUIRE(rgroup_stable_leader(&g, 20000) >= 0);
    char endpoints[256];
    snprintf(endpoints, sizeof endpoints, "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u",
             g.cport[0], g.cport[1], g.cport[2]);
    kill_ctx k = {&g, -1, 0};
    failover_target t = {endpoints, kill_leader, &k};
    int ops = (int)(4000 * test_scale());
    if (ops < 400) ops = 400;

    failover_result r;
    memset(&r, 0, sizeof r);
    failover_run_async(&t, ops, 64, &r);
    report("async depth 64", &r);
    heal(&g, &k);

    memset(&r, 0, sizeof r);
    failover_run_blocking(&t, ops / 2, 8, &r);
    report("blocking 8 threads", &r);
    heal(&g, &k);

    /* Exactly-once sessions: INCRs across repeated kills of the leader. */
    int kills = test_scale() >= 1 ? 3 : 2;
    incr_async(&g, &k, endpoints, ops, kills);
    heal(&g, &k);
    incr_blocking(&g, &k, endpoints, ops / 2, kills);
    heal(&g, &k);
#ifdef KVMUX_TEST_LIBUV
    incr_loop(&g, &k, endpoints, ops / 2, kills);
    heal(&g, &k);
#endif
    raw_duplicates(&g, &k);
    heal(&g, &k);

    rgroup_stop(&g);
    return test_report();
}
