/* Slot migration step 8 (docs/MIGRATION.md 8.1, 8.3, 8.5, 12): moves under
 * load with kill -9 of a leader at a random phase.
 *
 * A map group and two data groups of KVMUX_MIGFAULT_REPLICAS members each
 * (default 3; 1 for a quick run on a busy machine), real processes. A
 * writer thread, one cluster-mode handle (sessions: exactly-once), keeps
 * SETting unique values on keys of the moving range R and INCRing
 * counters there, recording which writes were acknowledged. Each of
 * KVMUX_MIGFAULT_CYCLES cycles (default 4; RNG seed KVMUX_MIGFAULT_SEED,
 * printed) asks the map group to move R to the other group, picks a
 * victim (the source's, the target's or the map group's leader, or every
 * member of the target group, then down for longer than the source's
 * stall and fence timeouts) and a phase (copying or fenced, from the source leader's STATS
 * migrate_out_state; committed, from the table), SIGKILLs the victim
 * there and restarts it, then waits for the record to end with both
 * acks (8.5).
 *
 * At the end: every group's leader has no outgoing or incoming record,
 * the group not owning R holds no key of it, and every key is read back
 * through the cluster client. A SET key must hold its last acknowledged
 * value or one written after it whose outcome is unknown (else: lost); a
 * counter must be at least its acknowledged INCRs (else: lost) and at
 * most those plus the unknown ones (else: applied twice). Prints
 *   migrate: kills=K migrations=M committed=C aborted=A acknowledged=N
 *            present=P lost=L applied_twice=D
 * and fails unless L = 0 and D = 0. Every write and the final reads also
 * go to an in-process lincheck history (tests/replica/tools/lincheck.h),
 * which must be linearizable: versions never go back across the moves,
 * no write is applied twice or lost.
 *
 * KVMUX_MIGFAULT_MODE=netns (migrate_netns_test, step 9: run inside
 * `tests/replica/tools/netns.sh session 9` by migrate_netns_test.sh, kvmuxd
 * through netns_kvmuxd.sh): every member in a network namespace of its
 * own (map group nodes 1-3, group 1 nodes 4-6, group 2 nodes 7-9; the test
 * process is the host, in no partition group), 12,000 bulk values of
 * 3,000 bytes (--maxmemory 128M), and instead of the cycles seven scenarios, one migration
 * each, partitions instead of kills (netns_run and the scen_ functions
 * say what each asserts): a zombie source leader (refused by B's term
 * fence), A split from B past the stall timeout (ABORTED before the
 * heal) and within it (resumes), the map group isolated while copying
 * (the source fences and stays fenced past its fence timeout; R not
 * served), and that with A also split from B (the record ends once the
 * map group is back, R served while A and B are still split), B's leader
 * isolated (B elects another; the record ends, committed or aborted,
 * while the old one is still cut off) and a ring partition of A (its
 * leader and one follower cut from each other only: A keeps a leader,
 * the record ends during the ring). After each scenario the writer
 * stops, and the end state, the read-back (the summary line,
 * "partitions=" for "kills=") and lincheck over the history so far are
 * checked; after 6 and 7 also that every data group's members converge
 * on one digest. KVMUX_MIGFAULT_SCENARIOS (e.g. "6,7") runs some only. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster_util.h"
#include "kvmux.h"
#include "lincheck.h"
#include "migtest.h"
#include "testutil.h"

#define FIRST 100
#define LAST 299
#define NBULK 4000   /* loaded before the cycles: the copy takes a while */
#define NETNS_BULK 12000 /* netns mode: 12,000 values of 3,000 bytes (36 MB): the copy
                            (~2.5 s) outlasts a `netns.sh split` (up to ~1 s on a
                            loaded machine), so the partition lands in it */
#define NETNS_VSIZE 3000
#define MAX_BULK NETNS_BULK
#define NSET 300     /* keys the writer SETs */
#define NCTR 16      /* counters it INCRs */
#define MAX_UNKNOWN 64
#define END_WAIT_MS 60000
#define PHASE_WAIT_MS 30000
#define NETNS_SCENARIOS 7 /* netns mode: scenarios 1..7 (netns_run) */
#define STALL_MS 5000 /* the data groups' --migrate-stall-timeout (fence: 5000) */

static char bulk[MAX_BULK][16], skeys[NSET][16], ckeys[NCTR][16];
static int nbulk = NBULK;
static size_t bulk_vsize;               /* 0: bulk values are their tags */
static char seeds[256], mapeps[256];
static uint64_t rng;
/* KVMUX_MIGFAULT_MODE=netns (migrate_netns_test): partitions instead of
 * kills, each member in a network namespace of its own. */
static int netns_mode;

/* The history: the loader, then the writer thread, then the final reads,
 * never two at once. */
static lincheck_history *H;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Record a SET of value to key (process p) that returned rc. */
static void hist_set(uint32_t p, uint64_t inv, const char *key, const char *value, int rc,
                     uint64_t version) {
    lincheck_op op = {.process = p, .invoke_ns = inv, .complete_ns = now_ns(),
                      .op = LINCHECK_SET, .outcome = rc == 0 ? LINCHECK_OK : LINCHECK_INFO,
                      .key = key, .value = value, .version = version};
    REQUIRE(lincheck_add(H, &op) == 0);
}

static uint32_t rnd(uint32_t n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* Bulk key i's value into out (cap > bulk_vsize): its tag "b<i>", then,
 * when bulk_vsize is set, ':' and a fill up to bulk_vsize bytes. The
 * history records the tag only (read_key cuts a value at ':'). */
static size_t bulk_value(int i, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "b%d", i);
    if (bulk_vsize > n && bulk_vsize < cap) {
        out[n] = ':';
        memset(out + n + 1, 'x', bulk_vsize - n - 1);
        n = bulk_vsize;
        out[n] = '\0';
    }
    return n;
}

/* ---- the writer ---- */

typedef struct skey_state {
    uint64_t acked;                     /* the last acknowledged value's n (0: none) */
    uint64_t unknown[MAX_UNKNOWN];      /* n's sent after it, outcome unknown */
    int nunknown, overflow;
} skey_state;

typedef struct writer {
    atomic_int stop;
    skey_state s[NSET];
    int64_t ctr_acked[NCTR], ctr_unknown[NCTR];
    long acked, unknown;
    atomic_long acks;                   /* acked, readable while it runs */
    atomic_llong max_wait_ms;           /* the longest op since last reset */
    uint64_t n, x;                      /* the last value's n, the RNG: a restarted
                                           writer goes on with both */
} writer;

/* One op of the writer done: its wait into max_wait_ms. */
static void op_done(writer *w, uint64_t inv, int rc) {
    long long ms = (long long)((now_ns() - inv) / 1000000u);
    if (ms > atomic_load(&w->max_wait_ms)) atomic_store(&w->max_wait_ms, ms);
    if (rc == 0) atomic_fetch_add(&w->acks, 1);
}

static void *writer_main(void *arg) {
    writer *w = arg;
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seeds;
    o.request_timeout_ms = 30000;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    if (!w->x) w->x = 0x9e3779b97f4a7c15ull;
    while (!atomic_load(&w->stop)) {
        uint64_t n = ++w->n, x = w->x;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        w->x = x;
        if (x % 5 == 0) {
            int j = (int)(x / 5 % NCTR);
            kvmux_request rq = {.op = KVMUX_INCR, .key = ckeys[j], .key_len = strlen(ckeys[j]),
                                .delta = 1};
            kvmux_reply rp = {0};
            uint64_t inv = now_ns();
            int rc = kvmux_call(c, &rq, &rp, 30000);
            lincheck_op op = {.process = 0, .invoke_ns = inv, .complete_ns = now_ns(),
                              .op = LINCHECK_INCR,
                              .outcome = rc == 0 ? LINCHECK_OK : LINCHECK_INFO,
                              .key = ckeys[j], .delta = 1, .number = rp.number,
                              .version = rp.version};
            REQUIRE(lincheck_add(H, &op) == 0);
            kvmux_reply_free(&rp);
            op_done(w, inv, rc);
            if (rc == 0) w->ctr_acked[j]++, w->acked++;
            else w->ctr_unknown[j]++, w->unknown++;
            continue;
        }
        int i = (int)(x / 5 % NSET);
        char v[32];
        snprintf(v, sizeof v, "s%llu", (unsigned long long)n);
        skey_state *s = &w->s[i];
        uint64_t inv = now_ns(), ver = 0;
        int rc = kvmux_set(c, skeys[i], strlen(skeys[i]), v, strlen(v), 0, &ver, 30000);
        hist_set(0, inv, skeys[i], v, rc, ver);
        op_done(w, inv, rc);
        if (rc == 0) {
            s->acked = n;
            s->nunknown = 0;
            w->acked++;
        } else {
            if (s->nunknown < MAX_UNKNOWN) s->unknown[s->nunknown++] = n;
            else s->overflow = 1;
            w->unknown++;
        }
    }
    kvmux_close(c);
    return NULL;
}

/* ---- the cluster ---- */

typedef struct cluster {
    rgroup mg, g[2];
    int owner;                          /* index in g of R's owner */
    int kills, migrations, committed, aborted;
} cluster;

/* CLUSTER sub on whichever member of mg answers OK (the leader). */
static int map_call(cluster *cl, const char *sub, const char *arg, char *out, size_t cap) {
    for (int64_t end = test_now_ms() + 20000; test_now_ms() < end; test_sleep_ms(100))
        for (int i = 0; i < cl->mg.n; i++) {
            size_t n = 0;
            if (!cl->mg.up[i]) continue;
            int rc = cluster_call_at(rgroup_host(&cl->mg, i), cl->mg.cport[i], sub, arg,
                                     strlen(arg), (uint8_t *)out, cap - 1, &n);
            out[n] = '\0';
            if (rc == 0) return 0;
            if (rc != KVMUX_ENOTLEADER && rc != KVMUX_ESHUTDOWN && rc != KVMUX_ECONNECT &&
                rc != KVMUX_ETIMEDOUT && rc != KVMUX_ECLOSED && rc != KVMUX_EUNKNOWN)
                fprintf(stderr, "CLUSTER %s %s: %d %s\n", sub, arg, rc, out);
        }
    return -1;
}

/* Poll the source leader's STATS migrate_out_state for want ("copying" or
 * "fenced"). 1 reached, 0 the migration got past it first. */
static int wait_out_state(const rgroup *g, int leader, const char *want) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    if (kvmux_connect(&c, rgroup_host(g, leader), g->cport[leader], &o) != 0) return 0;
    int hit = 0, seen = 0;
    char pat[32];
    snprintf(pat, sizeof pat, ":%s", want);
    for (int64_t end = test_now_ms() + PHASE_WAIT_MS; test_now_ms() < end;) {
        kvmux_value *v = NULL;
        char st[128] = "";
        if (kvmux_stats(c, "migrate_out_state", &v, 2000) == 0)
            snprintf(st, sizeof st, "%.*s", (int)(v->len < 127 ? v->len : 127),
                     (const char *)v->data);
        kvmux_value_free(v);
        if (strstr(st, pat)) {
            hit = 1;
            break;
        }
        if (strstr(st, ":copying") || strstr(st, ":fenced")) seen = 1;
        else if (seen || !st[0]) break; /* ended, or the leader is gone */
    }
    kvmux_close(c);
    return hit;
}

/* Poll the table until record id is COMMITTED: 1, or 0 (ended otherwise). */
static int wait_committed(cluster *cl, uint32_t id) {
    kvmux_migrec r;
    for (int64_t end = test_now_ms() + PHASE_WAIT_MS; test_now_ms() < end; test_sleep_ms(10)) {
        if (migt_record(&cl->mg, id, 0, 1000, &r) != 0) continue;
        if (r.state == KVMUX_MIG_COMMITTED) return 1;
        if (r.state == KVMUX_MIG_ABORTED) return 0;
    }
    return 0;
}

static const char *const victims[] = {"source", "target", "map group"};
static const char *const phases[] = {"copying", "fenced", "committed"};

/* Ask the map group to move R to the group not owning it: the record's
 * id. */
static uint32_t move_start(cluster *cl) {
    char arg[32], out[512];
    snprintf(arg, sizeof arg, "%d-%d %d", FIRST, LAST, 2 - cl->owner);
    REQUIRE(map_call(cl, "migrate", arg, out, sizeof out) == 0);
    REQUIRE(strncmp(out, "migration ", 10) == 0);
    cl->migrations++;
    return (uint32_t)strtoul(out + 10, NULL, 10);
}

/* Wait up to END_WAIT_MS for record id to end with both acks (8.5) into
 * *r; count it, R's owner follows a commit. Never returns with the record
 * open. */
static void move_end(cluster *cl, uint32_t id, kvmux_migrec *r) {
    memset(r, 0, sizeof *r);
    int ended = migt_record(&cl->mg, id, 1, END_WAIT_MS, r) == 0;
    CHECK(ended);
    if (r->state == KVMUX_MIG_COMMITTED) cl->committed++, cl->owner = 1 - cl->owner;
    if (r->state == KVMUX_MIG_ABORTED) cl->aborted++;
    REQUIRE(r->state != KVMUX_MIG_OPEN);
}

static const char *state_name(const kvmux_migrec *r) {
    return r->state == KVMUX_MIG_COMMITTED ? "committed"
           : r->state == KVMUX_MIG_ABORTED ? "aborted" : "still open";
}

/* Victim 3: every member of g killed, restarted after longer than the
 * stall and fence timeouts (8.3 "every replica of a group killed"): a
 * move before its commit is then aborted by the source's timer. */
static int kill_group(rgroup *g) {
    for (int i = 0; i < g->n; i++) rgroup_kill(g, i);
    test_sleep_ms(STALL_MS + 1500);
    for (int i = 0; i < g->n; i++) REQUIRE(rgroup_start_member(g, i, 0) == 0);
    return g->n;
}

/* One cycle: move R to the other group, kill a leader (or a whole
 * group) at a phase, restart it, wait for the record's end with both
 * acks. */
static void cycle(cluster *cl, int k) {
    int src = cl->owner, dst = 1 - src;
    int victim = (int)rnd(4), phase = (int)rnd(3);
    rgroup *vg = victim == 0 ? &cl->g[src] : victim == 2 ? &cl->mg : &cl->g[dst];
    int sl = rgroup_leader(&cl->g[src], 20000);
    REQUIRE(sl >= 0);
    uint32_t id = move_start(cl);
    int hit = phase == 2 ? wait_committed(cl, id) : wait_out_state(&cl->g[src], sl, phases[phase]);
    int vl = victim == 3 ? -1 : rgroup_leader(vg, 5000);
    if (victim == 3) {
        cl->kills += kill_group(vg);
    } else if (vl >= 0) {
        rgroup_kill(vg, vl);
        cl->kills++;
        test_sleep_ms(200 + (int)rnd(800));
        REQUIRE(rgroup_start_member(vg, vl, 0) == 0);
    }
    kvmux_migrec r;
    move_end(cl, id, &r);
    char who[64];
    if (victim == 3) snprintf(who, sizeof who, "every member of the target group");
    else snprintf(who, sizeof who, "the %s leader (member %d)", victims[victim], vl + 1);
    printf("cycle %d: migration %u group %d -> %d, killed %s %s %s: %s%s%s\n", k, id, src + 1,
           dst + 1, who,
           hit ? "while" : "after (missed)", phases[phase], state_name(&r),
           r.reason[0] ? ": " : "", r.reason);
}

/* 8.5's end state: no record left on any leader, no key of R at the
 * group that does not own it. 0, or -1 after END_WAIT_MS. */
static int end_state(cluster *cl) {
    for (int64_t end = test_now_ms() + END_WAIT_MS; test_now_ms() < end; test_sleep_ms(200)) {
        int ok = 1;
        for (int gi = 0; gi < 2 && ok; gi++) {
            int l = rgroup_leader(&cl->g[gi], 2000);
            ok = l >= 0 && migt_stat_is(&cl->g[gi], l, "migrate_out_state", "none") &&
                 migt_stat_is(&cl->g[gi], l, "migrate_in_state", "none") &&
                 (gi == cl->owner ||
                  migt_slotkeys_at(rgroup_host(&cl->g[gi], l), cl->g[gi].cport[l], FIRST, LAST) ==
                      0);
        }
        if (ok) return 0;
    }
    return -1;
}

/* GET key through c, recorded (process 1): 0 with *v, KVMUX_ENOTFOUND, or
 * another failure (not recorded). */
static int read_key(kvmux_client *c, const char *key, kvmux_value **v) {
    uint64_t inv = now_ns();
    int rc = kvmux_get(c, key, strlen(key), v, 10000);
    char buf[64];
    lincheck_op op = {.process = 1, .invoke_ns = inv, .complete_ns = now_ns(),
                      .op = LINCHECK_GET, .key = key};
    if (rc == 0) {
        const void *colon = memchr((*v)->data, ':', (*v)->len);
        size_t tl = colon ? (size_t)((const uint8_t *)colon - (const uint8_t *)(*v)->data)
                          : (*v)->len;
        snprintf(buf, sizeof buf, "%.*s", (int)(tl < 63 ? tl : 63), (const char *)(*v)->data);
        op.outcome = LINCHECK_OK;
        op.value = buf;
        op.version = (*v)->version;
    } else if (rc == KVMUX_ENOTFOUND) {
        op.outcome = LINCHECK_FAIL;
        op.observed = LINCHECK_SAW_NOTFOUND;
    }
    if (rc == 0 || rc == KVMUX_ENOTFOUND) REQUIRE(lincheck_add(H, &op) == 0);
    return rc;
}

/* Every key read back; the summary's figures. */
static void check_all(cluster *cl, writer *w) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seeds;
    o.request_timeout_ms = 10000;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    long present = 0, lost = 0, twice = 0;
    for (int i = 0; i < nbulk; i++) {
        kvmux_value *v = NULL;
        char want[NETNS_VSIZE + 32];
        bulk_value(i, want, sizeof want);
        if (read_key(c, bulk[i], &v) == 0 && v->len == strlen(want) &&
            memcmp(v->data, want, v->len) == 0)
            present++;
        else if (lost++ < 5)
            fprintf(stderr, "bulk key %s lost\n", bulk[i]);
        kvmux_value_free(v);
    }
    for (int i = 0; i < NSET; i++) {
        const skey_state *s = &w->s[i];
        kvmux_value *v = NULL;
        int rc = read_key(c, skeys[i], &v);
        uint64_t n = rc == 0 && v->len > 1 && v->data[0] == 's'
                         ? strtoull((const char *)v->data + 1, NULL, 10) : 0;
        kvmux_value_free(v);
        int ok = n == s->acked && (n != 0 || rc == KVMUX_ENOTFOUND);
        for (int k = 0; k < s->nunknown && !ok; k++) ok = n == s->unknown[k];
        if (!ok && s->overflow && n > s->acked) ok = 1;
        if (s->acked && ok) present++;
        if (!ok && lost++ < 5)
            fprintf(stderr, "key %s: read rc %d n %llu, last acknowledged %llu\n", skeys[i], rc,
                    (unsigned long long)n, (unsigned long long)s->acked);
    }
    for (int j = 0; j < NCTR; j++) {
        int64_t val = 0;
        kvmux_value *v = NULL;
        int rc = read_key(c, ckeys[j], &v);
        if (rc == 0) val = strtoll((const char *)v->data, NULL, 10);
        kvmux_value_free(v);
        if (val < w->ctr_acked[j]) lost++;
        else if (val > w->ctr_acked[j] + w->ctr_unknown[j]) twice++;
        else present++;
        if (val < w->ctr_acked[j] || val > w->ctr_acked[j] + w->ctr_unknown[j])
            fprintf(stderr, "counter %s: %lld, acknowledged %lld, unknown %lld\n", ckeys[j],
                    (long long)val, (long long)w->ctr_acked[j], (long long)w->ctr_unknown[j]);
    }
    kvmux_close(c);
    printf("migrate: %s=%d migrations=%d committed=%d aborted=%d acknowledged=%ld present=%ld "
           "lost=%ld applied_twice=%ld\n", netns_mode ? "partitions" : "kills", cl->kills, cl->migrations, cl->committed, cl->aborted,
           w->acked + nbulk, present, lost, twice);
    CHECK_EQ(lost, 0);
    CHECK_EQ(twice, 0);
    lincheck_result res;
    int lc = lincheck_check(H, &res, stderr, 20);
    printf("lincheck: ops=%llu keys=%llu ok=%llu unknown=%llu violations=%llu: %s\n",
           (unsigned long long)res.ops, (unsigned long long)res.keys,
           (unsigned long long)res.ok, (unsigned long long)res.unknown,
           (unsigned long long)res.violations, lc == 0 ? "linearizable" : "NOT linearizable");
    CHECK_EQ(lc, 0);
}

static int env_int(const char *name, int def, int lo, int hi) {
    const char *e = getenv(name);
    int v = e && *e ? atoi(e) : def;
    return v < lo ? lo : v > hi ? hi : v;
}

/* netns mode: the node (netns.sh) of member i of group g (-1: the map
 * group, nodes 1-3; then data groups 1 and 2, nodes 4-6 and 7-9). */
static int node_of(int g, int i) { return (g + 1) * 3 + i + 1; }

/* The members' addresses of group g (as node_of) into hosts: the nodes'
 * in netns mode, else none (127.0.0.1). */
static const char *const *group_hosts(int g, const char *hosts[3]) {
    if (!netns_mode) return NULL;
    for (int i = 0; i < 3; i++) {
        char var[32];
        snprintf(var, sizeof var, "NETNS_ADDR_%d", node_of(g, i));
        hosts[i] = getenv(var);
        REQUIRE(hosts[i] != NULL);
    }
    return hosts;
}

/* The groups, the map (R in group 1) and the keys. */
static void setup(cluster *cl, int reps) {
    static const char *const mx[] = {"--cluster-map-group", NULL};
    static const char *x[2][16];
    const char *hosts[3];
    REQUIRE(rgroup_start_hosts(&cl->mg, reps, mx, group_hosts(-1, hosts)) == 0);
    REQUIRE(rgroup_stable_leader(&cl->mg, 20000) >= 0);
    size_t off = 0;
    for (int i = 0; i < reps; i++)
        off += (size_t)snprintf(mapeps + off, sizeof mapeps - off, "%s%s:%u", i ? "," : "",
                                rgroup_host(&cl->mg, i), cl->mg.cport[i]);
    for (int gi = 0; gi < 2; gi++) {
        const char *a[] = {"--cluster-group", gi ? "2" : "1", "--cluster-map", mapeps,
                           "--maxmemory", netns_mode ? "128M" : "32M",
                           "--migrate-stall-timeout", "5000",
                           "--migrate-fence-timeout", "5000", NULL};
        memcpy(x[gi], a, sizeof a);
        REQUIRE(rgroup_start_hosts(&cl->g[gi], reps, x[gi], group_hosts(gi, hosts)) == 0);
        REQUIRE(rgroup_stable_leader(&cl->g[gi], 20000) >= 0);
    }
    char path[256], cmd[1024], out[4096], line[2][256];
    for (int gi = 0; gi < 2; gi++) {
        off = (size_t)snprintf(line[gi], sizeof line[gi], "group %d", gi + 1);
        for (int i = 0; i < reps; i++)
            off += (size_t)snprintf(line[gi] + off, sizeof line[gi] - off, " %s:%u",
                                    rgroup_host(&cl->g[gi], i), cl->g[gi].cport[i]);
    }
    snprintf(path, sizeof path, "%s/map.txt", cl->mg.dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "%s\n%s\nslots 0-8191 1\nslots 8192-16383 2\n", line[0], line[1]);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster assign %s --map %s 2>&1", KVMUX_CLI_PATH, path,
             mapeps);
    int rc = migt_run(cmd, out, sizeof out);
    if (rc != 0) fprintf(stderr, "assign: %s\n", out);
    REQUIRE(rc == 0);
    snprintf(seeds, sizeof seeds, "%s:%u,%s:%u", rgroup_host(&cl->g[0], 0), cl->g[0].cport[0],
             rgroup_host(&cl->g[1], 0), cl->g[1].cport[0]);
    int from = 0;
    for (int i = 0; i < nbulk; i++) cluster_key_in(FIRST, LAST, &from, bulk[i], sizeof bulk[i]);
    for (int i = 0; i < NSET; i++) cluster_key_in(FIRST, LAST, &from, skeys[i], sizeof skeys[i]);
    for (int i = 0; i < NCTR; i++) cluster_key_in(FIRST, LAST, &from, ckeys[i], sizeof ckeys[i]);
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seeds;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    for (int i = 0; i < nbulk; i++) {
        char v[NETNS_VSIZE + 32], tag[32];
        size_t n = bulk_value(i, v, sizeof v);
        snprintf(tag, sizeof tag, "b%d", i);
        uint64_t inv = now_ns(), ver = 0;
        REQUIRE(kvmux_set(c, bulk[i], strlen(bulk[i]), v, n, 0, &ver, 10000) == 0);
        hist_set(2, inv, bulk[i], tag, 0, ver);
    }
    kvmux_close(c);
}

/* ---- netns mode (KVMUX_MIGFAULT_MODE=netns, inside `netns.sh session 9`) ----
 *
 * Each member in a network namespace of its own (node_of; the test
 * itself, the host, is in no partition group, so it always reaches every
 * member), partitions instead of kills, one scenario per migration. After
 * each: the end state of 8.5, every key read back (the summary line),
 * lincheck over the history so far; the writer is stopped meanwhile (the
 * checks need its writes settled) and restarted. */

/* "$NETNS_SH ARGS"; the test ends if it fails. */
static void netns(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void netns(const char *fmt, ...) {
    char args[128], cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s", getenv("NETNS_SH"), args);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "netns: '%s' failed (%d)\n", cmd, rc);
    REQUIRE(rc == 0);
}

/* Group g's nodes (node_of) as "a,b,c" in buf. */
static const char *nodes(int g, char *buf, size_t cap) {
    snprintf(buf, cap, "%d,%d,%d", node_of(g, 0), node_of(g, 1), node_of(g, 2));
    return buf;
}

/* A member of g other than old that says it is leader, polled up to ms;
 * -1. */
static int other_leader(const rgroup *g, int old, int ms) {
    for (int64_t end = test_now_ms() + ms; test_now_ms() < end; test_sleep_ms(50))
        for (int i = 0; i < g->n; i++)
            if (i != old && migt_stat_is(g, i, "replica_role", "leader")) return i;
    return -1;
}

/* The largest STATS name over g's members (0: none answered). */
static uint64_t stat_max(const rgroup *g, const char *name) {
    uint64_t m = 0;
    for (int i = 0; i < g->n; i++) {
        uint64_t v = rgroup_stat(g, i, name);
        if (v != UINT64_MAX && v > m) m = v;
    }
    return m;
}

/* Up to ms for member l of g to say STATS name = want: 1, or 0. */
static int wait_stat(const rgroup *g, int l, const char *name, const char *want, int ms) {
    for (int64_t end = test_now_ms() + ms; test_now_ms() < end; test_sleep_ms(20))
        if (migt_stat_is(g, l, name, want)) return 1;
    return 0;
}

/* One GET of a key of R through a new cluster client, deadline ms: its
 * status (not in the history: a read that may not finish says nothing). */
static int probe_get(int ms) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seeds;
    o.request_timeout_ms = ms;
    if (kvmux_connect(&c, NULL, 0, &o) != 0) return KVMUX_ECONNECT;
    kvmux_value *v = NULL;
    int rc = kvmux_get(c, skeys[0], strlen(skeys[0]), &v, ms);
    kvmux_value_free(v);
    kvmux_close(c);
    return rc;
}

/* What a scenario prints besides its own words. */
static void scenario_end(cluster *cl, writer *w, int k, const char *name, uint32_t id, int src,
                         const char *what) {
    kvmux_migrec r;
    move_end(cl, id, &r);
    printf("scenario %d (%s): migration %u group %d -> %d: %s; %s%s%s; longest write wait %lld "
           "ms\n", k, name, id, src + 1, 2 - src, what, state_name(&r), r.reason[0] ? ": " : "",
           r.reason, (long long)atomic_load(&w->max_wait_ms));
}

#define ZOMBIE_ELECTION_MS "20000"
#define ZOMBIE_STALL_MS "60000"
#define ZOMBIE_REFUSE_WAIT_MS 15000

/* Make member z of g its leader, restarted with a 20 s election timeout
 * (the others keep 1 s) and a 60 s stall timeout: a C-Raft leader steps
 * down only after an election timeout without a majority, so cut off it
 * keeps believing it leads for 20 s while the others elect a leader
 * within a few seconds, and its migrate thread keeps the import it had in
 * flight (TCP retransmits it once B is reachable again, up to seconds
 * later: the retransmission timer backs off while packets are dropped)
 * instead of giving up at the group's 5 s stall timeout: a zombie whose
 * batch reaches B after the new leader's pass began there. (Mixed
 * timeouts are a test device: such a leader's lease would outlive a new
 * leader's election; the writer only writes meanwhile.) Returns z's
 * index, or -1. */
static int make_zombie_leader(rgroup *g) {
    int l = rgroup_stable_leader(g, 20000);
    REQUIRE(l >= 0);
    int z = (l + 1) % g->n;
    static const char *zx[24];
    int n = 0;
    for (; g->extra[n] && n < 20; n++) zx[n] = g->extra[n];
    zx[n++] = "--election-timeout";
    zx[n++] = ZOMBIE_ELECTION_MS;
    zx[n++] = "--migrate-stall-timeout";
    zx[n++] = ZOMBIE_STALL_MS;
    zx[n] = NULL;
    const char *const *keep = g->extra;
    rgroup_kill(g, z);
    g->extra = zx;
    REQUIRE(rgroup_start_member(g, z, 0) == 0);
    g->extra = keep;
    for (int t = 0; t < 20; t++) {
        char cmd[512], out[1024];
        l = rgroup_leader(g, 5000);
        if (l == z && rgroup_stable_leader(g, 5000) == z) return z;
        if (l >= 0) {
            snprintf(cmd, sizeof cmd, "%s -h %s -p %u -t 5000 cluster transfer %d 2>&1",
                     KVMUX_CLI_PATH, rgroup_host(g, l), g->cport[l], z + 1);
            migt_run(cmd, out, sizeof out);
        }
        test_sleep_ms(500);
    }
    return -1;
}

/* 1. A zombie source: A's leader L (make_zombie_leader) cut from its
 * followers and from B while copying (the host and the map group still
 * reach it); A elects another leader, which takes the migration over with
 * a new term and sends its first batch to B; then L reaches B again,
 * still cut from its followers and still leader in its own eyes (the
 * zombie partition of 8.3): what it sends carries the old term, below
 * B's min_term, and is refused; heal. */
static void scen_zombie(cluster *cl, writer *w, int k) {
    int src = cl->owner;
    rgroup *a = &cl->g[src], *b = &cl->g[1 - src];
    char nb[48];
    int sl = make_zombie_leader(a);
    REQUIRE(sl >= 0);
    int f1 = (sl + 1) % 3, f2 = (sl + 2) % 3;
    uint64_t ref0 = stat_max(b, "migrate_import_refused");
    uint32_t id = move_start(cl);
    int hit = wait_out_state(a, sl, "copying");
    int64_t t0 = test_now_ms();
    netns("split '%d|%d,%d,%s'", node_of(src, sl), node_of(src, f1), node_of(src, f2),
          nodes(1 - src, nb, sizeof nb));
    cl->kills++;
    int nl = other_leader(a, sl, 15000);
    int64_t t1 = test_now_ms();
    /* The new leader's pass has begun at B once it sent a batch. */
    int sent = 0;
    for (int64_t end = test_now_ms() + 15000; nl >= 0 && !sent && test_now_ms() < end;
         test_sleep_ms(50)) {
        uint64_t v = rgroup_stat(a, nl, "migrate_batches_sent");
        sent = v != UINT64_MAX && v > 0;
    }
    netns("split '%d|%d,%d'", node_of(src, sl), node_of(src, f1), node_of(src, f2));
    int64_t t2 = test_now_ms();
    uint64_t refused = 0;
    while (refused == 0 && test_now_ms() - t2 < ZOMBIE_REFUSE_WAIT_MS) {
        test_sleep_ms(100);
        refused = stat_max(b, "migrate_import_refused") - ref0;
    }
    int64_t t3 = test_now_ms();
    int zombie = migt_stat_is(a, sl, "replica_role", "leader");
    netns("heal");
    refused = stat_max(b, "migrate_import_refused") - ref0;
    CHECK(nl >= 0);
    /* The zombie still led when it reached B again: B refused it. */
    if (hit && sent) CHECK(refused > 0);
    char what[320];
    snprintf(what, sizeof what, "A's leader (member %d) cut from its followers and B %s "
             "copying, member %d elected after %lld ms and %s; the old leader reached B again "
             "(first refusal after %lld ms; it then %s leader); B refused %llu import batches",
             sl + 1, hit ? "while" : "after (missed)", nl + 1, (long long)(t1 - t0),
             sent ? "sent B a batch" : "sent B NO batch in 15 s", (long long)(t3 - t2), zombie ? "still said it was" : "no longer said it was",
             (unsigned long long)refused);
    scenario_end(cl, w, k, "zombie source", id, src, what);
    /* The old leader back to the group's own timeouts (its 60 s stall
     * timeout would hold a later scenario's copy past the test's wait). */
    rgroup_kill(a, sl);
    REQUIRE(rgroup_start_member(a, sl, 0) == 0);
    REQUIRE(rgroup_stable_leader(a, 20000) >= 0);
}

/* 2. A split from B while copying for hold_ms: longer than the stall
 * timeout, the source asks ABORT (the map group is reachable) before the
 * heal; shorter, the copy resumes after it. */
static void scen_split(cluster *cl, writer *w, int k, int hold_ms) {
    int src = cl->owner;
    char na[48], nb[48];
    int sl = rgroup_stable_leader(&cl->g[src], 20000);
    REQUIRE(sl >= 0);
    uint32_t id = move_start(cl);
    int hit = wait_out_state(&cl->g[src], sl, "copying");
    netns("split '%s|%s'", nodes(src, na, sizeof na), nodes(1 - src, nb, sizeof nb));
    cl->kills++;
    test_sleep_ms(hold_ms);
    kvmux_migrec r;
    int ended = migt_record(&cl->mg, id, 0, 2000, &r) == 0 && r.state != KVMUX_MIG_OPEN;
    netns("heal");
    /* Past the stall timeout the record must end without the heal. */
    if (hit && hold_ms > STALL_MS) CHECK(ended);
    char what[256];
    snprintf(what, sizeof what, "A split from B %s copying for %d ms (stall timeout %d ms; "
             "record %s before the heal)", hit ? "while" : "after (missed)", hold_ms,
             STALL_MS, ended ? "ended" : "open");
    scenario_end(cl, w, k, hold_ms > STALL_MS ? "A split from B, long" : "A split from B, short",
                 id, src, what);
}

/* 3. The map group isolated from both data groups while copying: the
 * source fences, cannot COMMIT, and must stay fenced past its fence
 * timeout (I3: it never unfences on its own; R answers TRY_AGAIN), its
 * ABORT unanswered too. With split_ab, A is then also split from B (A
 * fenced, B unreachable), and the map group healed first: the fence
 * timeout has fired, so the source's ABORT goes through, and R must be
 * served again (by A) while B is still cut off. Then heal; the record
 * ends. */
static void scen_map(cluster *cl, writer *w, int k, int split_ab) {
    int src = cl->owner;
    rgroup *a = &cl->g[src];
    char nm[48], n1[48], n2[48];
    int sl = rgroup_stable_leader(a, 20000);
    REQUIRE(sl >= 0);
    uint32_t id = move_start(cl);
    int hit = wait_out_state(a, sl, "copying");
    netns("split '%s|%s,%s'", nodes(-1, nm, sizeof nm), nodes(0, n1, sizeof n1),
          nodes(1, n2, sizeof n2));
    cl->kills++;
    int fenced = wait_stat(a, sl, "migrate_out_state", "fenced", 15000);
    int64_t t0 = test_now_ms();
    if (split_ab)
        netns("split '%s|%s|%s'", nodes(-1, nm, sizeof nm), nodes(0, n1, sizeof n1),
              nodes(1, n2, sizeof n2));
    test_sleep_ms(STALL_MS + 1000);
    int still = migt_stat_is(a, sl, "migrate_out_state", "fenced");
    int prc = probe_get(1000);
    int64_t t1 = test_now_ms();
    char what[400];
    int n = snprintf(what, sizeof what, "the map group isolated %s copying; the source %s, "
                     "still fenced %lld ms later%s: %s, a GET of R then: %s",
                     hit ? "while" : "after (missed)", fenced ? "fenced" : "did not fence",
                     (long long)(t1 - t0), split_ab ? " (A also split from B)" : "",
                     still ? "yes" : "no", prc == 0 ? "OK" : kvmux_strerror(prc));
    if (hit && fenced) {
        CHECK(still);                   /* never unfenced without the map group */
        CHECK(prc != 0);                /* R not served meanwhile */
    }
    if (split_ab) {
        /* The fence timeout fired while the map group was away: the
         * source asks ABORT; its COMMIT, sent before, may still reach the
         * map group first (it was waiting in a TCP buffer): either ends
         * the record without A and B talking, and R is then served (by A
         * unfenced, or by B) while they are still split. */
        netns("split '%s|%s'", nodes(0, n1, sizeof n1), nodes(1, n2, sizeof n2));
        kvmux_migrec r;
        int ended = migt_record(&cl->mg, id, 1, 30000, &r) == 0;
        int prc2 = ended ? probe_get(10000) : -1;
        snprintf(what + n, sizeof what - (size_t)n, "; map group healed, A and B still split: "
                 "record %s with both acks, a GET of R %s", ended ? state_name(&r) : "NOT ended",
                 prc2 == 0 ? "served" : "NOT served");
        if (hit && fenced) {
            CHECK(ended);
            CHECK(prc2 == 0);
        }
    }
    netns("heal");
    scenario_end(cl, w, k, split_ab ? "A fenced, split from B and the map group"
                                    : "map group isolated", id, src, what);
}


/* Every node of the session but n (1..9), as "a,b,..." in buf: with n
 * alone in the other group of a split, n is cut from every member and the
 * host (0, in no group) still reaches it. */
static const char *all_but(int n, char *buf, size_t cap) {
    size_t off = 0;
    buf[0] = '\0';
    for (int j = 1; j <= 9; j++)
        if (j != n) off += (size_t)snprintf(buf + off, cap - off, "%s%d", off ? "," : "", j);
    return buf;
}

/* The keys of R at member i of g (CLUSTER slotkeys), -1 if it does not
 * answer. */
static long long keys_at(const rgroup *g, int i) {
    return migt_slotkeys_at(rgroup_host(g, i), g->cport[i], FIRST, LAST);
}

/* 6. B's leader isolated while copying (from its followers, A and the map
 * group; the host still reaches it): B's two others elect a leader, and
 * the record must end with both acks while the old leader is still cut
 * off: committed if the source's thread finds B's new leader before its
 * stall timeout, else aborted ("stalled"); both are correct, what matters
 * is that the record ends without the old leader. Then R must be served,
 * by B's new leader holding every bulk key if committed, and, healed, the
 * old leader must rejoin as a follower (after the writer stops
 * netns_run checks that B's members converge on one digest: nothing the
 * old leader had is applied twice). */
static void scen_b_leader(cluster *cl, writer *w, int k) {
    int src = cl->owner, dst = 1 - src;
    rgroup *a = &cl->g[src], *b = &cl->g[dst];
    char others[48];
    int sl = rgroup_stable_leader(a, 20000), bl = rgroup_stable_leader(b, 20000);
    REQUIRE(sl >= 0 && bl >= 0);
    uint32_t id = move_start(cl);
    int hit = wait_out_state(a, sl, "copying");
    int64_t t0 = test_now_ms();
    netns("split '%d|%s'", node_of(dst, bl), all_but(node_of(dst, bl), others, sizeof others));
    cl->kills++;
    int nl = other_leader(b, bl, 15000);
    int64_t t1 = test_now_ms();
    kvmux_migrec r;
    int ended = nl >= 0 && migt_record(&cl->mg, id, 1, 30000, &r) == 0;
    int64_t t2 = test_now_ms();
    int prc = ended ? probe_get(10000) : -1;
    int committed = ended && r.state == KVMUX_MIG_COMMITTED;
    long long bkeys = committed ? keys_at(b, nl) : -1;
    netns("heal");
    int back = wait_stat(b, bl, "replica_role", "follower", 15000);
    CHECK(nl >= 0);
    if (hit) CHECK(ended);              /* ended without B's old leader */
    if (ended) CHECK(prc == 0);
    if (committed) CHECK(bkeys >= nbulk);
    CHECK(back);
    char what[400];
    snprintf(what, sizeof what, "B's leader (member %d) isolated %s copying, member %d elected "
             "after %lld ms; record %s %lld ms after the cut, still isolated%s; a GET of R: %s%s; "
             "healed, the old leader %s a follower", bl + 1, hit ? "while" : "after (missed)",
             nl + 1, (long long)(t1 - t0), ended ? state_name(&r) : "NOT ended",
             (long long)(t2 - t0), ended ? " (both acks)" : "",
             prc == 0 ? "served" : prc == -1 ? "not tried" : kvmux_strerror(prc),
             committed ? (bkeys >= nbulk ? " (B holds R)" : " (B MISSES keys of R)") : "",
             back ? "is again" : "is NOT");
    scenario_end(cl, w, k, "B's leader isolated", id, src, what);
}

#define RING_MIN_MS 6000                /* several election timeouts of the cut follower */
#define RING_MAX_MS 30000

/* 7. A ring partition of A while copying: A's leader L and one follower F
 * cut from each other only; the third member bridges them and everyone
 * else reaches all three. L keeps a majority (with the bridge), F hears
 * no leader: with pre-vote (node.c) its candidacy should find no vote
 * while the bridge hears L, so no term churn; without it F's higher term
 * would depose L again and again. Held for RING_MIN_MS at least, up to
 * RING_MAX_MS until the record ends, polling who leads; A must have a
 * leader at the end and, found copying, the record must end during the
 * ring. Prints the terms and the leaders seen. */
static void scen_ring(cluster *cl, writer *w, int k) {
    int src = cl->owner;
    rgroup *a = &cl->g[src];
    int sl = rgroup_stable_leader(a, 20000);
    REQUIRE(sl >= 0);
    int f = (sl + 1) % 3;
    uint64_t term0 = stat_max(a, "replica_term");
    uint32_t id = move_start(cl);
    int hit = wait_out_state(a, sl, "copying");
    int64_t t0 = test_now_ms();
    netns("split '%d|%d'", node_of(src, sl), node_of(src, f));
    cl->kills++;
    int last = sl, changes = 0, ended = 0;
    kvmux_migrec r;
    while (test_now_ms() - t0 < RING_MAX_MS && !(ended && test_now_ms() - t0 >= RING_MIN_MS)) {
        for (int i = 0; i < a->n; i++)
            if (i != last && migt_stat_is(a, i, "replica_role", "leader")) last = i, changes++;
        if (!ended) ended = migt_record(&cl->mg, id, 1, 1, &r) == 0;
        test_sleep_ms(100);
    }
    int64_t held = test_now_ms() - t0;
    int lead = rgroup_leader(a, 5000);
    uint64_t term1 = stat_max(a, "replica_term");
    netns("heal");
    CHECK(lead >= 0);                   /* a majority reaches it: A keeps a leader */
    if (hit) CHECK(ended);
    char what[400];
    snprintf(what, sizeof what, "A's leader (member %d) and member %d cut from each other %s "
             "copying (member %d the bridge) for %lld ms: record %s during the ring; A's term "
             "%llu -> %llu, %d leader change%s, leader at the end: member %d", sl + 1, f + 1,
             hit ? "while" : "after (missed)", (sl + 2) % 3 + 1, (long long)held,
             ended ? "ended" : "NOT ended", (unsigned long long)term0,
             (unsigned long long)term1, changes, changes == 1 ? "" : "s", lead + 1);
    scenario_end(cl, w, k, "ring partition of A", id, src, what);
}
/* Every member of both data groups on one applied index with one digest
 * (the writer stopped): a member that was cut off and healed applied
 * exactly what the others did, nothing twice. */
static void check_converged(cluster *cl) {
    for (int gi = 0; gi < 2; gi++) {
        uint64_t idx = 0;
        int rc = rgroup_converged(&cl->g[gi], 30000, &idx, NULL, 0);
        printf("converged: group %d %s (index %llu)\n", gi + 1,
               rc == 0 ? "yes, one digest on every member" : "NO",
               (unsigned long long)idx);
        CHECK_EQ(rc, 0);
    }
}

/* The scenarios, each followed by the checks; KVMUX_MIGFAULT_SCENARIOS
 * (e.g. "6,7"; default all) runs some only, for a quicker run while
 * working on one. */
static void netns_run(cluster *cl, writer *w) {
    const char *only = getenv("KVMUX_MIGFAULT_SCENARIOS");
    for (int k = 1; k <= NETNS_SCENARIOS && atomic_load(&test_failed) == 0; k++) {
        char d[2] = {(char)('0' + k), '\0'};
        if (only && *only && !strstr(only, d)) continue;
        pthread_t wt;
        atomic_store(&w->stop, 0);
        REQUIRE(pthread_create(&wt, NULL, writer_main, w) == 0);
        test_sleep_ms(500);
        atomic_store(&w->max_wait_ms, 0);
        if (k == 1) scen_zombie(cl, w, k);
        else if (k == 2) scen_split(cl, w, k, STALL_MS + 2000);
        else if (k == 3) scen_split(cl, w, k, 2000);
        else if (k <= 5) scen_map(cl, w, k, k == 5);
        else if (k == 6) scen_b_leader(cl, w, k);
        else scen_ring(cl, w, k);
        int es = end_state(cl);
        CHECK_EQ(es, 0);
        atomic_store(&w->stop, 1);
        pthread_join(wt, NULL);
        check_all(cl, w);
        if (k >= 6) check_converged(cl);
    }
}

int main(void) {
    int reps = env_int("KVMUX_MIGFAULT_REPLICAS", 3, 1, 3);
    int cycles = env_int("KVMUX_MIGFAULT_CYCLES", 4, 1, 1000);
    const char *se = getenv("KVMUX_MIGFAULT_SEED");
    rng = se && *se ? strtoull(se, NULL, 10) : (uint64_t)test_now_ms();
    if (!rng) rng = 1;
    const char *mode = getenv("KVMUX_MIGFAULT_MODE");
    netns_mode = mode && strcmp(mode, "netns") == 0;
    if (netns_mode) {
        reps = 3;                       /* the zombie needs a majority without it */
        nbulk = NETNS_BULK;
        bulk_vsize = NETNS_VSIZE;
        REQUIRE(getenv("NETNS_SH") != NULL);
    }
    printf("migrate_fault_test: %s, seed %llu, %d cycles, groups of %d\n",
           netns_mode ? "netns mode (7 partition scenarios)" : "kill mode",
           (unsigned long long)rng, netns_mode ? 0 : cycles, reps);
    static cluster cl;
    static writer w;
    REQUIRE((H = lincheck_new()) != NULL);
    setup(&cl, reps);
    if (netns_mode) {
        netns_run(&cl, &w);
        rgroup_stop(&cl.g[0]);
        rgroup_stop(&cl.g[1]);
        rgroup_stop(&cl.mg);
        lincheck_free(H);
        return test_report();
    }
    pthread_t wt;
    REQUIRE(pthread_create(&wt, NULL, writer_main, &w) == 0);
    for (int k = 1; k <= cycles && atomic_load(&test_failed) == 0; k++) cycle(&cl, k);
    int es = end_state(&cl);
    CHECK_EQ(es, 0);
    atomic_store(&w.stop, 1);
    pthread_join(wt, NULL);
    check_all(&cl, &w);
    rgroup_stop(&cl.g[0]);
    rgroup_stop(&cl.g[1]);
    rgroup_stop(&cl.mg);
    lincheck_free(H);
    return test_report();
}
