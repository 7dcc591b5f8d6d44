/* chaos_test: a 3-replica group under load while random replicas (leader
 * or follower, drawn from a seeded generator) are killed with SIGKILL and
 * restarted after a random delay, K cycles (KVMUX_CHAOS_CYCLES, default
 * 15 x KVMUX_TEST_SCALE, at least 3). Load: C clients (3) in endpoints mode
 * (libkvmux finds the leader and follows NOT_LEADER redirects by itself),
 * each with 64 callers keeping one request in flight each (64 in flight
 * per client): SET / GET on 8 registers, INCR on a counter, and SET of
 * unique keys. Every op goes into one history checked by the
 * linearizability checker (lincheck.h); every acknowledged unique key is
 * read back at the end. Prints
 *   chaos: cycles=K seed=S leader_kills=L replica_crashes=C acknowledged=N
 *          present=P lost=X applied_twice=D violations=V
 * (one line) and requires lost 0, applied twice 0, violations 0, the
 * counter within [acknowledged INCRs, + unknown ones], and every replica
 * at the same applied index with the same digest once the load stops. A
 * replica that died on its own (a crash, not this test's kill) is named
 * on stderr, counted in replica_crashes and restarted before that check
 * (so the data checks still run), and fails the test: a crash is a bug.
 * KVMUX_CHAOS_MODE=partition (partition_test, inside netns.sh): partitions
 * instead of kills (partition_phases), summary line "partition: ...".
 * KVMUX_CHAOS_SEED picks the schedule (default 1); KVMUX_HISTORY_OUT=FILE
 * keeps the history for kvmux-lincheck. bench/chaos.sh runs it with more
 * cycles. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "kvmux.h"
#include "lincheck.h"
#include "rgroup.h"
#include "testutil.h"

#define CLIENTS 3
#define PROCS 64
#define REGS 8
#define MAX_UNIQUE 1000000

static rgroup g;
static char endpoints[256];
static atomic_int stopping;
static pthread_mutex_t hmu = PTHREAD_MUTEX_INITIALIZER;
static lincheck_history *H;
static atomic_uint_fast64_t acked, acked_incr, unknown_incr;

/* Acknowledged unique keys (read back at the end). */
static char (*ukeys)[32];
static atomic_uint nukeys;

typedef struct client client;
typedef struct proc {
    client *c;
    uint32_t id;
    uint64_t seq, inv;
    uint32_t rng;
    atomic_int busy;                 /* a request in flight */
    lincheck_opcode op;
    int unique;
    char key[32], val[48];
} proc;

struct client {
    int idx;
    kvmux_client *kc;
    proc p[PROCS];
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_reply(kvmux_client *kc, int result, kvmux_reply *reply, void *ud);

/* Submit p's next op. Returns 0 or a kvmux error. */
static int submit(proc *p) {
    p->rng = p->rng * 1103515245u + 12345u;
    uint32_t r = (p->rng >> 8) % 20;
    kvmux_request q;
    memset(&q, 0, sizeof q);
    p->unique = 0;
    if (r < 3) {
        p->op = LINCHECK_INCR;
        snprintf(p->key, sizeof p->key, "ctr");
        q.op = KVMUX_INCR;
        q.delta = 1;
    } else if (r < 4) {
        p->op = LINCHECK_SET;
        p->unique = 1;
        snprintf(p->key, sizeof p->key, "u%d.%u.%llu", p->c->idx, p->id,
                 (unsigned long long)++p->seq);
        snprintf(p->val, sizeof p->val, "x");
        q.op = KVMUX_SET;
        q.value = p->val;
        q.value_len = 1;
    } else {
        snprintf(p->key, sizeof p->key, "k%u", (p->rng >> 4) % REGS);
        if (r < 13) {
            p->op = LINCHECK_SET;
            snprintf(p->val, sizeof p->val, "c%dp%us%llu", p->c->idx, p->id,
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
    return kvmux_call_async(p->c->kc, &q, 5000, on_reply, p);
}

/* Map a result to the checker's outcome: OK; FAIL when the request was
 * certainly not applied (refused, or a read: no effect); INFO otherwise
 * (EUNKNOWN, a timeout, a lost connection: maybe applied). */
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
        op.outcome = LINCHECK_FAIL;
    } else {
        op.outcome = LINCHECK_INFO;
    }
    if (op.outcome == LINCHECK_OK && p->op != LINCHECK_GET) {
        atomic_fetch_add(&acked, 1);
        if (p->op == LINCHECK_INCR) atomic_fetch_add(&acked_incr, 1);
        if (p->unique) {
            unsigned k = atomic_fetch_add(&nukeys, 1);
            if (k < MAX_UNIQUE) snprintf(ukeys[k], sizeof ukeys[k], "%s", p->key);
        }
    }
    if (op.outcome == LINCHECK_INFO && p->op == LINCHECK_INCR) atomic_fetch_add(&unknown_incr, 1);
    /* Unique keys are checked by reading them back, not by lincheck (one
     * register each would only slow it down). */
    if (p->unique) return;
    pthread_mutex_lock(&hmu);
    int rc = lincheck_add(H, &op);
    pthread_mutex_unlock(&hmu);
    if (rc != 0) fprintf(stderr, "lincheck_add failed: %d\n", rc);
}

/* A success goes straight on; after an error the caller rests until the
 * pump (main thread) submits it again, so a leaderless moment does not
 * spin. */
static void on_reply(kvmux_client *kc, int result, kvmux_reply *reply, void *ud) {
    (void)kc;
    proc *p = ud;
    record(p, result, reply, now_ns());
    int ok = result == 0 || result == KVMUX_ENOTFOUND;
    if (ok && !atomic_load(&stopping) && submit(p) == 0) return;
    atomic_store(&p->busy, 0);
}

static void pump(client *cs) {
    for (int c = 0; c < CLIENTS; c++)
        for (int i = 0; i < PROCS; i++) {
            proc *p = &cs[c].p[i];
            if (atomic_load(&stopping) || atomic_load(&p->busy)) continue;
            atomic_store(&p->busy, 1);
            if (submit(p) != 0) atomic_store(&p->busy, 0);
        }
}

static int idle(client *cs) {
    for (int c = 0; c < CLIENTS; c++)
        for (int i = 0; i < PROCS; i++)
            if (atomic_load(&cs[c].p[i].busy)) return 0;
    return 1;
}

/* Run the load for ms milliseconds, pumping resting callers. */
static void load_for(client *cs, int64_t ms) {
    int64_t end = test_now_ms() + ms;
    while (test_now_ms() < end) {
        pump(cs);
        test_sleep_ms(20);
    }
}

static uint32_t rng_next(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static kvmux_client *connect_group(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = endpoints;
    o.request_timeout_ms = 5000;
    o.connect_timeout_ms = 1000;
    kvmux_client *kc = NULL;
    for (int tries = 0; tries < 100; tries++) {
        if (kvmux_connect(&kc, NULL, 0, &o) == 0) return kc;
        test_sleep_ms(100);
    }
    return NULL;
}

/* Final state of the registers and the counter (one GET each, into the
 * history) and the unique keys (each must be there). */
static int64_t final_reads(unsigned *present) {
    kvmux_client *kc = connect_group();
    REQUIRE(kc != NULL);
    int64_t ctr = -1;
    for (int i = 0; i <= REGS; i++) {
        char key[16], val[64] = "";
        if (i == REGS) snprintf(key, sizeof key, "ctr");
        else snprintf(key, sizeof key, "k%d", i);
        kvmux_value *v = NULL;
        uint64_t inv = now_ns();
        int rc = kvmux_get(kc, key, strlen(key), &v, 10000);
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
    unsigned n = atomic_load(&nukeys);
    if (n > MAX_UNIQUE) n = MAX_UNIQUE;
    *present = 0;
    for (unsigned k = 0; k < n; k++) {
        kvmux_value *v = NULL;
        int rc = kvmux_get(kc, ukeys[k], strlen(ukeys[k]), &v, 10000);
        if (rc == 0) (*present)++;
        else fprintf(stderr, "chaos: acknowledged key %s: %s\n", ukeys[k], kvmux_strerror(rc));
        kvmux_value_free(v);
    }
    kvmux_close(kc);
    return ctr;
}

/* ---- partition mode (KVMUX_CHAOS_MODE=partition, inside netns.sh) ---- */

/* Run "$NETNS_SH ARGS"; returns its exit status. */
static int netns(const char *args) {
    const char *sh = getenv("NETNS_SH");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' %s", sh ? sh : "netns.sh", args);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "partition: '%s' failed (%d)\n", cmd, rc);
    return rc;
}

/* n writes sent straight to member l (no endpoints, no redirects), each
 * with a 1.5 s deadline. Returns how many were acknowledged. */
static int direct_writes(int l, int n) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 1500;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, rgroup_host(&g, l), g.cport[l], &o) != 0) return 0;
    int ok = 0;
    for (int k = 0; k < n; k++) {
        char key[32];
        snprintf(key, sizeof key, "minority.%d", k);
        int rc = kvmux_set(c, key, strlen(key), "v", 1, 0, NULL, 1500);
        fprintf(stderr, "partition: write %d to the minority's old leader: %s\n", k,
                rc == 0 ? "OK" : kvmux_strerror(rc));
        if (rc == 0) ok++;
    }
    kvmux_close(c);
    return ok;
}

typedef struct flapper {
    pthread_t th;
    char args[64];
    atomic_int done;
    int rc;
} flapper;

static void *flap_main(void *arg) {
    flapper *f = arg;
    f->rc = netns(f->args);
    atomic_store(&f->done, 1);
    return NULL;
}

/* Isolate the leader (a new one must be elected on the other side); split
 * it into a minority of one with the host still reaching it (writes sent
 * to it must not be acknowledged); flap the leader's links `flaps` times.
 * Load runs throughout. Returns the minority's acknowledged writes. */
static int partition_phases(client *cs, int flaps) {
    char args[64];
    int l = rgroup_stable_leader(&g, 20000);
    REQUIRE(l >= 0);
    snprintf(args, sizeof args, "isolate %d", l + 1);
    REQUIRE(netns(args) == 0);
    load_for(cs, 4000);
    int nl = rgroup_leader(&g, 10000);
    fprintf(stderr, "partition: leader %d isolated, new leader %d\n", l + 1, nl + 1);
    CHECK(nl >= 0 && nl != l);
    REQUIRE(netns("heal") == 0);
    REQUIRE(rgroup_stable_leader(&g, 20000) >= 0);
    load_for(cs, 1000);

    l = rgroup_stable_leader(&g, 20000);
    REQUIRE(l >= 0);
    snprintf(args, sizeof args, "split '%d|%d,%d'", l + 1, (l + 1) % 3 + 1, (l + 2) % 3 + 1);
    REQUIRE(netns(args) == 0);
    int minority = direct_writes(l, 5);
    load_for(cs, 1000);
    REQUIRE(netns("heal") == 0);
    REQUIRE(rgroup_stable_leader(&g, 20000) >= 0);
    load_for(cs, 1000);

    l = rgroup_stable_leader(&g, 20000);
    REQUIRE(l >= 0);
    static flapper f;
    snprintf(f.args, sizeof f.args, "flap %d %d 1000", l + 1, flaps);
    REQUIRE(pthread_create(&f.th, NULL, flap_main, &f) == 0);
    int64_t end = test_now_ms() + (int64_t)flaps * 1000 + 30000;
    while (!atomic_load(&f.done) && test_now_ms() < end) load_for(cs, 200);
    pthread_join(f.th, NULL);
    CHECK_EQ(f.rc, 0);
    REQUIRE(netns("heal") == 0);
    REQUIRE(rgroup_stable_leader(&g, 20000) >= 0);
    load_for(cs, 1500);
    return minority;
}

static unsigned long env_ul(const char *name, unsigned long def) {
    const char *v = getenv(name);
    return v && *v ? strtoul(v, NULL, 10) : def;
}

int main(void) {
    int cycles = (int)env_ul("KVMUX_CHAOS_CYCLES", (unsigned long)(15 * test_scale() + 0.5));
    if (cycles < 3) cycles = 3;
    uint32_t seed = (uint32_t)env_ul("KVMUX_CHAOS_SEED", 1), rng = seed * 2654435761u | 1;
    H = lincheck_new();
    ukeys = calloc(MAX_UNIQUE, sizeof *ukeys);
    REQUIRE(H != NULL && ukeys != NULL);
    /* Partition mode: each replica in its own network namespace (run
     * inside `netns.sh session 3`, kvmuxd through netns_kvmuxd.sh). */
    const char *mode = getenv("KVMUX_CHAOS_MODE");
    int part = mode && strcmp(mode, "partition") == 0;
    const char *hosts[3] = {NULL, NULL, NULL};
    if (part) {
        hosts[0] = getenv("NETNS_ADDR_1");
        hosts[1] = getenv("NETNS_ADDR_2");
        hosts[2] = getenv("NETNS_ADDR_3");
        REQUIRE(hosts[0] && hosts[1] && hosts[2] && getenv("NETNS_SH"));
    }
    REQUIRE(rgroup_start_hosts(&g, 3, NULL, hosts) == 0);
    REQUIRE(rgroup_stable_leader(&g, 20000) >= 0);
    snprintf(endpoints, sizeof endpoints, "%s:%u,%s:%u,%s:%u", rgroup_host(&g, 0), g.cport[0],
             rgroup_host(&g, 1), g.cport[1], rgroup_host(&g, 2), g.cport[2]);
    static client cs[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
        cs[c].idx = c;
        cs[c].kc = connect_group();
        REQUIRE(cs[c].kc != NULL);
        for (int i = 0; i < PROCS; i++) {
            proc *p = &cs[c].p[i];
            p->c = &cs[c];
            p->id = (uint32_t)(c * PROCS + i);
            p->rng = seed * 7919u + (uint32_t)p->id * 104729u + 1;
        }
    }
    load_for(cs, 1500);
    int leader_kills = 0, minority = 0;
    int flaps = (int)env_ul("KVMUX_PARTITION_FLAPS", 20);
    if (part) {
        minority = partition_phases(cs, flaps);
        cycles = 0;
    }
    for (int k = 0; k < cycles; k++) {
        int victim = (int)(rng_next(&rng) % 3);
        int leader = rgroup_leader(&g, 5000);
        if (victim == leader) leader_kills++;
        uint64_t before = atomic_load(&acked);
        rgroup_kill(&g, victim);
        load_for(cs, 100 + rng_next(&rng) % 1500);
        REQUIRE(rgroup_start_member(&g, victim, 0) == 0);
        int stable = rgroup_stable_leader(&g, 20000);
        CHECK(stable >= 0);
        load_for(cs, 300 + rng_next(&rng) % 1200);
        fprintf(stderr, "chaos: cycle %d: killed %d (%s), acknowledged +%llu\n", k + 1, victim + 1,
                victim == leader ? "leader" : "follower",
                (unsigned long long)(atomic_load(&acked) - before));
    }
    atomic_store(&stopping, 1);
    int64_t end = test_now_ms() + 20000;
    while (!idle(cs) && test_now_ms() < end) test_sleep_ms(20);
    CHECK(idle(cs));
    for (int c = 0; c < CLIENTS; c++) kvmux_close(cs[c].kc);
    /* A replica that died on its own (not killed by this test: a crash) is
     * reported, restarted, and must then catch up like any other. */
    int crashes = 0;
    for (int i = 0; i < 3; i++) {
        int st = 0;
        if (!g.up[i] || waitpid(g.srv[i].pid, &st, WNOHANG) != g.srv[i].pid) continue;
        crashes++;
        fprintf(stderr, "chaos: replica %d CRASHED (%s %d); restarting it\n", i + 1,
                WIFSIGNALED(st) ? "signal" : "exit status",
                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        g.up[i] = 0;
        REQUIRE(rgroup_start_member(&g, i, 0) == 0);
    }

    uint64_t index = 0;
    char digest[64] = "";
    CHECK_EQ(rgroup_converged(&g, 30000, &index, digest, sizeof digest), 0);
    unsigned present = 0;
    int64_t ctr = final_reads(&present);
    unsigned nu = atomic_load(&nukeys);
    if (nu > MAX_UNIQUE) nu = MAX_UNIQUE;
    uint64_t a = atomic_load(&acked_incr), u = atomic_load(&unknown_incr);
    uint64_t lost_ctr = ctr >= 0 && (uint64_t)ctr < a ? a - (uint64_t)ctr : 0;
    uint64_t twice_ctr = ctr >= 0 && (uint64_t)ctr > a + u ? (uint64_t)ctr - a - u : 0;
    lincheck_result res;
    int lin = lincheck_check(H, &res, stderr, 20);
    uint64_t lost = (nu - present) + lost_ctr + res.by_kind[LINCHECK_V_LOST_WRITE];
    uint64_t twice = twice_ctr + res.by_kind[LINCHECK_V_DUPLICATE];
    if (part)
        printf("partition: isolated_leader=1 minority_acked=%d flaps=%d replica_crashes=%d "
               "acknowledged=%llu present=%u lost=%llu applied_twice=%llu violations=%llu\n",
               minority, flaps, crashes, (unsigned long long)atomic_load(&acked), present,
               (unsigned long long)lost, (unsigned long long)twice,
               (unsigned long long)(lin < 0 ? 1 : res.violations));
    else
        printf("chaos: cycles=%d seed=%u leader_kills=%d replica_crashes=%d acknowledged=%llu "
               "present=%u lost=%llu applied_twice=%llu violations=%llu\n",
               cycles, seed, leader_kills, crashes, (unsigned long long)atomic_load(&acked), present,
               (unsigned long long)lost, (unsigned long long)twice,
               (unsigned long long)(lin < 0 ? 1 : res.violations));
    CHECK_EQ(minority, 0);
    CHECK_EQ(crashes, 0);
    printf("history: ops=%llu ok=%llu failed=%llu unknown=%llu counter=%lld acked_incr=%llu "
           "unknown_incr=%llu unique_acked=%u applied_index=%llu digest=%s\n",
           (unsigned long long)res.ops, (unsigned long long)res.ok,
           (unsigned long long)res.failed, (unsigned long long)res.unknown, (long long)ctr,
           (unsigned long long)a, (unsigned long long)u, nu, (unsigned long long)index, digest);
    CHECK(atomic_load(&nukeys) <= MAX_UNIQUE);
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
    free(ukeys);
    rgroup_stop(&g);
    return test_report();
}
