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
 * no write is applied twice or lost. */
#include <pthread.h>
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
#define NSET 300     /* keys the writer SETs */
#define NCTR 16      /* counters it INCRs */
#define MAX_UNKNOWN 64
#define END_WAIT_MS 60000
#define PHASE_WAIT_MS 30000
#define STALL_MS 5000 /* the data groups' --migrate-stall-timeout (fence: 5000) */

static char bulk[NBULK][16], skeys[NSET][16], ckeys[NCTR][16];
static char seeds[256], mapeps[256];
static uint64_t rng;

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
} writer;

static void *writer_main(void *arg) {
    writer *w = arg;
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seeds;
    o.request_timeout_ms = 30000;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint64_t n = 1; !atomic_load(&w->stop); n++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
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
            int rc = cluster_call(cl->mg.cport[i], sub, arg, strlen(arg), (uint8_t *)out, cap - 1,
                                  &n);
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
    if (kvmux_connect(&c, "127.0.0.1", g->cport[leader], &o) != 0) return 0;
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
    char arg[32], out[512];
    snprintf(arg, sizeof arg, "%d-%d %d", FIRST, LAST, dst + 1);
    REQUIRE(map_call(cl, "migrate", arg, out, sizeof out) == 0);
    REQUIRE(strncmp(out, "migration ", 10) == 0);
    uint32_t id = (uint32_t)strtoul(out + 10, NULL, 10);
    cl->migrations++;
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
    memset(&r, 0, sizeof r);
    int ended = migt_record(&cl->mg, id, 1, END_WAIT_MS, &r) == 0;
    char who[64];
    if (victim == 3) snprintf(who, sizeof who, "every member of the target group");
    else snprintf(who, sizeof who, "the %s leader (member %d)", victims[victim], vl + 1);
    printf("cycle %d: migration %u group %d -> %d, killed %s %s %s: %s%s%s\n", k, id, src + 1,
           dst + 1, who,
           hit ? "while" : "after (missed)", phases[phase],
           r.state == KVMUX_MIG_COMMITTED ? "committed" : r.state == KVMUX_MIG_ABORTED
                                                              ? "aborted" : "still open",
           r.reason[0] ? ": " : "", r.reason);
    CHECK(ended);
    if (r.state == KVMUX_MIG_COMMITTED) cl->committed++, cl->owner = dst;
    if (r.state == KVMUX_MIG_ABORTED) cl->aborted++;
    REQUIRE(r.state != KVMUX_MIG_OPEN);
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
                 (gi == cl->owner || migt_slotkeys(cl->g[gi].cport[l], FIRST, LAST) == 0);
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
        snprintf(buf, sizeof buf, "%.*s", (int)((*v)->len < 63 ? (*v)->len : 63),
                 (const char *)(*v)->data);
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
    for (int i = 0; i < NBULK; i++) {
        kvmux_value *v = NULL;
        char want[32];
        snprintf(want, sizeof want, "b%d", i);
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
    printf("migrate: kills=%d migrations=%d committed=%d aborted=%d acknowledged=%ld present=%ld "
           "lost=%ld applied_twice=%ld\n", cl->kills, cl->migrations, cl->committed, cl->aborted,
           w->acked + NBULK, present, lost, twice);
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

/* The groups, the map (R in group 1) and the keys. */
static void setup(cluster *cl, int reps) {
    static const char *const mx[] = {"--cluster-map-group", NULL};
    static const char *x[2][16];
    REQUIRE(rgroup_start(&cl->mg, reps, mx) == 0);
    REQUIRE(rgroup_stable_leader(&cl->mg, 20000) >= 0);
    size_t off = 0;
    for (int i = 0; i < reps; i++)
        off += (size_t)snprintf(mapeps + off, sizeof mapeps - off, "%s127.0.0.1:%u",
                                i ? "," : "", cl->mg.cport[i]);
    for (int gi = 0; gi < 2; gi++) {
        const char *a[] = {"--cluster-group", gi ? "2" : "1", "--cluster-map", mapeps,
                           "--maxmemory", "32M", "--migrate-stall-timeout", "5000",
                           "--migrate-fence-timeout", "5000", NULL};
        memcpy(x[gi], a, sizeof a);
        REQUIRE(rgroup_start(&cl->g[gi], reps, x[gi]) == 0);
        REQUIRE(rgroup_stable_leader(&cl->g[gi], 20000) >= 0);
    }
    char path[256], cmd[1024], out[4096], line[2][256];
    for (int gi = 0; gi < 2; gi++) {
        off = (size_t)snprintf(line[gi], sizeof line[gi], "group %d", gi + 1);
        for (int i = 0; i < reps; i++)
            off += (size_t)snprintf(line[gi] + off, sizeof line[gi] - off, " 127.0.0.1:%u",
                                    cl->g[gi].cport[i]);
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
    snprintf(seeds, sizeof seeds, "127.0.0.1:%u,127.0.0.1:%u", cl->g[0].cport[0],
             cl->g[1].cport[0]);
    int from = 0;
    for (int i = 0; i < NBULK; i++) cluster_key_in(FIRST, LAST, &from, bulk[i], sizeof bulk[i]);
    for (int i = 0; i < NSET; i++) cluster_key_in(FIRST, LAST, &from, skeys[i], sizeof skeys[i]);
    for (int i = 0; i < NCTR; i++) cluster_key_in(FIRST, LAST, &from, ckeys[i], sizeof ckeys[i]);
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seeds;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    for (int i = 0; i < NBULK; i++) {
        char v[128];
        int n = snprintf(v, sizeof v, "b%d", i);
        uint64_t inv = now_ns(), ver = 0;
        REQUIRE(kvmux_set(c, bulk[i], strlen(bulk[i]), v, (size_t)n, 0, &ver, 10000) == 0);
        hist_set(2, inv, bulk[i], v, 0, ver);
    }
    kvmux_close(c);
}

int main(void) {
    int reps = env_int("KVMUX_MIGFAULT_REPLICAS", 3, 1, 3);
    int cycles = env_int("KVMUX_MIGFAULT_CYCLES", 4, 1, 1000);
    const char *se = getenv("KVMUX_MIGFAULT_SEED");
    rng = se && *se ? strtoull(se, NULL, 10) : (uint64_t)test_now_ms();
    if (!rng) rng = 1;
    printf("migrate_fault_test: seed %llu, %d cycles, groups of %d\n", (unsigned long long)rng,
           cycles, reps);
    static cluster cl;
    static writer w;
    REQUIRE((H = lincheck_new()) != NULL);
    setup(&cl, reps);
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
