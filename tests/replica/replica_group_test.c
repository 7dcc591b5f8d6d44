/* replica_group_test: 3 replicas under load, the leader killed with
 * SIGKILL K times (K = 5 x KVMUX_TEST_SCALE, at least 1) and restarted.
 * W client threads (2) keep 64 requests in flight each (64 logical
 * callers per connection) of SET / GET on 8 registers and INCR on one
 * counter; on a refusal or a lost connection a thread reconnects to the
 * leader by hand (the client library has no endpoint list here). Every op
 * goes into one history, checked by the linearizability checker
 * (tests/replica/tools/lincheck.h). Prints
 *   failover: kills=K acknowledged=N lost=L applied_twice=D
 *   failover_ms_p50=X failover_ms_p99=Y failover_ms_max=Z linearizable=yes|no
 * and requires lost 0, applied twice 0, linearizable, the counter within
 * [acknowledged INCRs, + unknown ones], and every replica's digest equal
 * at the same applied index. Failover time: from the kill to the first
 * acknowledged write invoked after it.
 *
 * applied_twice is measured with exactly-once sessions on: besides the
 * workers (plain connections, whose INCR counter can only be bounded), a
 * session client (endpoints mode, sessions on, 64 INCRs in flight on its
 * own counter "sctr") runs through every kill; its counter must end
 * exactly at its acknowledged INCRs (more: applied twice; fewer: lost)
 * with 0 KVMUX_EUNKNOWN. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvmux.h"
#include "lincheck.h"
#include "rgroup.h"
#include "testutil.h"

#define WORKERS 2
#define PROCS 64
#define REGS 8

static rgroup g;
static atomic_int leader_hint;
static atomic_int stopping;
static pthread_mutex_t hmu = PTHREAD_MUTEX_INITIALIZER;
static lincheck_history *H;
static atomic_uint_fast64_t kill_ns, first_ack_ns;
static atomic_uint_fast64_t acked, acked_incr, unknown_incr;
/* The session client's INCRs (see the header). */
static atomic_uint_fast64_t s_acked, s_unknown, s_other;
static atomic_int s_inflight;
static char s_endpoints[256];

typedef struct worker worker;
typedef struct proc {
    worker *w;
    uint32_t id;
    uint64_t seq, inv;
    uint32_t rng;
    lincheck_opcode op;
    char key[16], val[48];
} proc;

struct worker {
    int idx;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kvmux_client *c;
    int inflight, broken;
    proc p[PROCS];
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_reply(kvmux_client *c, int result, kvmux_reply *reply, void *ud);

/* Submit p's next op. Returns 0 or a kvmux error. */
static int submit(proc *p) {
    p->rng = p->rng * 1103515245u + 12345u;
    uint32_t r = (p->rng >> 8) % 10;
    kvmux_request q;
    memset(&q, 0, sizeof q);
    if (r < 2) {
        p->op = LINCHECK_INCR;
        snprintf(p->key, sizeof p->key, "ctr");
        q.op = KVMUX_INCR;
        q.delta = 1;
    } else {
        snprintf(p->key, sizeof p->key, "k%u", (p->rng >> 4) % REGS);
        if (r < 6) {
            p->op = LINCHECK_SET;
            snprintf(p->val, sizeof p->val, "w%dp%us%llu", p->w->idx, p->id,
                     (unsigned long long)++p->seq);
            q.op = KVMUX_SET;
            q.value = p->val;
            q.value_len = strlen(p->val);
        } else {
            p->op = LINCHECK_GET;
            q.op = KVMUX_GET;
        }
    }
    q.key = p->key;
    q.key_len = strlen(p->key);
    p->inv = now_ns();
    return kvmux_call_async(p->w->c, &q, 5000, on_reply, p);
}

static void record(proc *p, int result, const kvmux_reply *reply, uint64_t done) {
    lincheck_op op;
    memset(&op, 0, sizeof op);
    char rval[64] = "";
    op.process = p->id;
    op.invoke_ns = p->inv;
    op.complete_ns = done;
    op.op = p->op;
    op.key = p->key;
    op.delta = 1;
    if (p->op == LINCHECK_SET) op.value = p->val;
    if (result == 0) {
        op.outcome = LINCHECK_OK;
        op.version = reply->version;
        op.number = reply->number;
        if (p->op == LINCHECK_GET) {
            size_t n = reply->value_len < sizeof rval - 1 ? reply->value_len : sizeof rval - 1;
            if (n) memcpy(rval, reply->value, n);
            rval[n] = '\0';
            op.value = rval;
        }
    } else if (result == KVMUX_ENOTFOUND && p->op == LINCHECK_GET) {
        op.outcome = LINCHECK_FAIL;
        op.observed = LINCHECK_SAW_NOTFOUND;
    } else if (result == KVMUX_ENOTLEADER || result == KVMUX_ESHUTDOWN ||
               result == KVMUX_EBUSY || p->op == LINCHECK_GET) {
        op.outcome = LINCHECK_FAIL; /* not processed (or a read: no effect) */
    } else {
        op.outcome = LINCHECK_INFO;
    }
    if (op.outcome == LINCHECK_OK && p->op != LINCHECK_GET) {
        atomic_fetch_add(&acked, 1);
        if (p->op == LINCHECK_INCR) atomic_fetch_add(&acked_incr, 1);
        uint64_t k = atomic_load(&kill_ns), zero = 0;
        if (k && p->inv > k) atomic_compare_exchange_strong(&first_ack_ns, &zero, done);
    }
    if (op.outcome == LINCHECK_INFO && p->op == LINCHECK_INCR) atomic_fetch_add(&unknown_incr, 1);
    pthread_mutex_lock(&hmu);
    int rc = lincheck_add(H, &op);
    pthread_mutex_unlock(&hmu);
    if (rc != 0) fprintf(stderr, "lincheck_add failed: %d\n", rc);
}

static void on_reply(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    proc *p = ud;
    worker *w = p->w;
    record(p, result, reply, now_ns());
    int bad = result != 0 && result != KVMUX_ENOTFOUND;
    pthread_mutex_lock(&w->mu);
    if (bad) w->broken = 1;
    int again = !w->broken && !atomic_load(&stopping);
    pthread_mutex_unlock(&w->mu);
    if (again && submit(p) == 0) return;
    pthread_mutex_lock(&w->mu);
    if (again) w->broken = 1;
    if (--w->inflight == 0) pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    int ep = atomic_load(&leader_hint), last_hint = ep;
    while (!atomic_load(&stopping)) {
        kvmux_options o;
        kvmux_options_init(&o);
        o.request_timeout_ms = 5000;
        o.connect_timeout_ms = 1000;
        if (kvmux_connect(&w->c, "127.0.0.1", g.cport[ep], &o) != 0) {
            w->c = NULL;
            test_sleep_ms(50);
            int h = atomic_load(&leader_hint);
            ep = h != last_hint ? h : (ep + 1) % g.n;
            last_hint = h;
            continue;
        }
        pthread_mutex_lock(&w->mu);
        w->broken = 0;
        w->inflight = PROCS;
        pthread_mutex_unlock(&w->mu);
        for (int i = 0; i < PROCS; i++) {
            if (submit(&w->p[i]) == 0) continue;
            pthread_mutex_lock(&w->mu);
            w->broken = 1;
            w->inflight--;
            pthread_mutex_unlock(&w->mu);
        }
        pthread_mutex_lock(&w->mu);
        while (w->inflight > 0) pthread_cond_wait(&w->cv, &w->mu);
        int broken = w->broken;
        pthread_mutex_unlock(&w->mu);
        kvmux_close(w->c);
        w->c = NULL;
        if (broken) {
            test_sleep_ms(20);
            int h = atomic_load(&leader_hint);
            ep = h != last_hint ? h : (ep + 1) % g.n;
            last_hint = h;
        }
    }
    return NULL;
}

static void s_on_incr(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c, (void)reply, (void)ud;
    if (result == 0) atomic_fetch_add(&s_acked, 1);
    else if (result == KVMUX_EUNKNOWN) atomic_fetch_add(&s_unknown, 1);
    else atomic_fetch_add(&s_other, 1);
    atomic_fetch_sub(&s_inflight, 1);
}

/* The session client: INCR sctr, 64 in flight, until stopping. */
static void *session_main(void *arg) {
    (void)arg;
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = s_endpoints;
    o.reconnect_min_backoff_ms = 5;
    o.reconnect_max_backoff_ms = 100;
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 30000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = KVMUX_INCR;
    q.key = "sctr";
    q.key_len = 4;
    q.delta = 1;
    while (!atomic_load(&stopping)) {
        if (atomic_load(&s_inflight) >= PROCS) {
            test_sleep_ms(1);
            continue;
        }
        atomic_fetch_add(&s_inflight, 1);
        if (kvmux_call_async(c, &q, KVMUX_TIMEOUT_DEFAULT, s_on_incr, NULL) != 0) {
            atomic_fetch_sub(&s_inflight, 1);
            test_sleep_ms(5);
        }
    }
    int64_t end = test_now_ms() + 60000;
    while (atomic_load(&s_inflight) > 0 && test_now_ms() < end) test_sleep_ms(5);
    CHECK_EQ(atomic_load(&s_inflight), 0);
    kvmux_close(c);
    return NULL;
}

/* The session counter's value on the leader (0 if absent). */
static int64_t read_sctr(int leader) {
    kvmux_options o;
    kvmux_options_init(&o);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", g.cport[leader], &o) == 0);
    kvmux_value *v = NULL;
    int64_t n = 0;
    int rc = kvmux_get(c, "sctr", 4, &v, 10000);
    if (rc == 0) {
        char buf[32] = "";
        memcpy(buf, v->data, v->len < sizeof buf - 1 ? v->len : sizeof buf - 1);
        n = atoll(buf);
    } else {
        CHECK_EQ(rc, KVMUX_ENOTFOUND);
    }
    kvmux_value_free(v);
    kvmux_close(c);
    return n;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Final state: one GET of every key, after all load stopped. */
static int64_t final_reads(int leader) {
    kvmux_options o;
    kvmux_options_init(&o);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", g.cport[leader], &o) == 0);
    int64_t ctr = -1;
    for (int i = 0; i <= REGS; i++) {
        char key[16], val[64] = "";
        if (i == REGS) snprintf(key, sizeof key, "ctr");
        else snprintf(key, sizeof key, "k%d", i);
        kvmux_value *v = NULL;
        uint64_t inv = now_ns();
        int rc = kvmux_get(c, key, strlen(key), &v, 10000);
        lincheck_op op;
        memset(&op, 0, sizeof op);
        op.process = 1000000;
        op.invoke_ns = inv;
        op.complete_ns = now_ns();
        op.op = LINCHECK_GET;
        op.key = key;
        if (rc == 0) {
            size_t n = v->len < sizeof val - 1 ? v->len : sizeof val - 1;
            memcpy(val, v->data, n);
            op.outcome = LINCHECK_OK;
            op.version = v->version;
            op.value = val;
            if (i == REGS) ctr = atoll(val);
        } else {
            CHECK_EQ(rc, KVMUX_ENOTFOUND);
            op.outcome = LINCHECK_FAIL;
            op.observed = LINCHECK_SAW_NOTFOUND;
            if (i == REGS) ctr = 0;
        }
        kvmux_value_free(v);
        lincheck_add(H, &op);
    }
    kvmux_close(c);
    return ctr;
}

int main(void) {
    int kills = (int)(5 * test_scale() + 0.5);
    if (kills < 1) kills = 1;
    H = lincheck_new();
    REQUIRE(H != NULL);
    /* bench/failover.sh -e: the election timeout under test
     * (KVMUX_ELECTION_TIMEOUT_MS, read by rgroup). */
    REQUIRE(rgroup_start(&g, 3, NULL) == 0);
    int leader = rgroup_leader(&g, 20000);
    REQUIRE(leader >= 0);
    atomic_store(&leader_hint, leader);
    static worker ws[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        ws[i].idx = i;
        pthread_mutex_init(&ws[i].mu, NULL);
        pthread_cond_init(&ws[i].cv, NULL);
        for (int k = 0; k < PROCS; k++) {
            ws[i].p[k].w = &ws[i];
            ws[i].p[k].id = (uint32_t)(i * PROCS + k);
            ws[i].p[k].rng = (uint32_t)(i * 7919 + k * 104729 + 1);
        }
        REQUIRE(pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) == 0);
    }
    snprintf(s_endpoints, sizeof s_endpoints, "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u",
             g.cport[0], g.cport[1], g.cport[2]);
    pthread_t sth;
    REQUIRE(pthread_create(&sth, NULL, session_main, NULL) == 0);
    uint64_t fo[64];
    int nfo = 0;
    test_sleep_ms(1500);
    for (int k = 0; k < kills && k < 64; k++) {
        leader = rgroup_leader(&g, 20000);
        REQUIRE(leader >= 0);
        atomic_store(&leader_hint, leader);
        test_sleep_ms(1000);
        atomic_store(&first_ack_ns, 0);
        atomic_store(&kill_ns, 0);
        rgroup_kill(&g, leader); /* SIGKILL and reaped: it acks nothing after */
        atomic_store(&kill_ns, now_ns());
        int next = rgroup_leader(&g, 20000);
        REQUIRE(next >= 0);
        atomic_store(&leader_hint, next);
        int64_t end = test_now_ms() + 20000;
        while (atomic_load(&first_ack_ns) == 0 && test_now_ms() < end) test_sleep_ms(10);
        uint64_t f = atomic_load(&first_ack_ns);
        CHECK(f != 0);
        if (f) fo[nfo++] = (f - atomic_load(&kill_ns)) / 1000000u;
        REQUIRE(rgroup_start_member(&g, leader, 0) == 0);
        test_sleep_ms(1000);
    }
    atomic_store(&stopping, 1);
    for (int i = 0; i < WORKERS; i++) pthread_join(ws[i].th, NULL);
    pthread_join(sth, NULL);

    uint64_t index = 0;
    char digest[64] = "";
    int conv = rgroup_converged(&g, 20000, &index, digest, sizeof digest);
    CHECK_EQ(conv, 0);
    leader = rgroup_leader(&g, 20000);
    REQUIRE(leader >= 0);
    int64_t ctr = final_reads(leader);
    uint64_t a = atomic_load(&acked_incr), u = atomic_load(&unknown_incr);
    uint64_t lost_ctr = (uint64_t)ctr < a ? a - (uint64_t)ctr : 0;
    uint64_t twice_ctr = (uint64_t)ctr > a + u ? (uint64_t)ctr - a - u : 0;

    lincheck_result res;
    int lin = lincheck_check(H, &res, stderr, 20);
    uint64_t lost = lost_ctr + res.by_kind[LINCHECK_V_LOST_WRITE];
    uint64_t twice = twice_ctr + res.by_kind[LINCHECK_V_DUPLICATE];
    /* Sessions: exact. */
    int64_t sctr = read_sctr(leader);
    uint64_t sa = atomic_load(&s_acked), so = atomic_load(&s_other);
    /* An INCR that ended otherwise (a timeout) may or may not count. */
    if ((uint64_t)sctr > sa + so) twice += (uint64_t)sctr - sa - so;
    if ((uint64_t)sctr < sa) lost += sa - (uint64_t)sctr;
    qsort(fo, (size_t)nfo, sizeof fo[0], cmp_u64);
    uint64_t p50 = nfo ? fo[(nfo - 1) / 2] : 0;
    uint64_t p99 = nfo ? fo[(size_t)((nfo - 1) * 0.99 + 0.5)] : 0;
    uint64_t mx = nfo ? fo[nfo - 1] : 0;
    printf("failover: kills=%d acknowledged=%llu lost=%llu applied_twice=%llu "
           "failover_ms_p50=%llu failover_ms_p99=%llu failover_ms_max=%llu linearizable=%s\n",
           kills, (unsigned long long)atomic_load(&acked), (unsigned long long)lost,
           (unsigned long long)twice, (unsigned long long)p50, (unsigned long long)p99,
           (unsigned long long)mx, lin == 0 ? "yes" : "no");
    printf("history: ops=%llu ok=%llu failed=%llu unknown=%llu counter=%lld acked_incr=%llu "
           "unknown_incr=%llu applied_index=%llu digest=%s\n",
           (unsigned long long)res.ops, (unsigned long long)res.ok,
           (unsigned long long)res.failed, (unsigned long long)res.unknown, (long long)ctr,
           (unsigned long long)a, (unsigned long long)u, (unsigned long long)index, digest);
    printf("sessions: incr_acknowledged=%llu unknown=%llu other=%llu counter=%lld\n",
           (unsigned long long)sa, (unsigned long long)atomic_load(&s_unknown),
           (unsigned long long)atomic_load(&s_other), (long long)sctr);
    CHECK(sa > 0);
    CHECK_EQ(atomic_load(&s_unknown), 0);
    CHECK_EQ(lost, 0);
    CHECK_EQ(twice, 0);
    CHECK_EQ(lin, 0);
    CHECK(atomic_load(&acked) > 0);
    CHECK(ctr >= 0 && (uint64_t)ctr >= a && (uint64_t)ctr <= a + u);
    if (getenv("KVMUX_HISTORY_OUT")) {
        FILE *f = fopen(getenv("KVMUX_HISTORY_OUT"), "w");
        if (f) {
            lincheck_save(H, f);
            fclose(f);
        }
    }
    lincheck_free(H);
    rgroup_stop(&g);
    return test_report();
}
