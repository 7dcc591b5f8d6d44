/* Slot migration step 8 (docs/MIGRATION.md 8.2): the three outcomes the
 * source's migrator learns from an answer rather than from the table,
 * with real processes: a one-member map group, group 1 of three members
 * (the source), group 2 of one (the target), --migrate-fence-timeout 2000.
 * Both data groups reach the map group through kvmux-faultproxy, whose
 * delay holds their requests and its answers; the test reaches it
 * directly. A writer (the cluster client) rewrites keys of the moving
 * range through every case.
 *
 * - takeover: at the source leader's fence the target is SIGSTOPped and
 *   the leader SIGKILLed, and the proxy (delay 1000: a COMMIT sent in
 *   between is still in it) cuts every connection. The new leader finds
 *   the record FENCED, counts the fence timeout from its takeover (the
 *   record ends >= 1.5 s after the test saw the new leader; counted from
 *   the old fence it would end about when the new leader was seen), asks
 *   ABORT: ABORTED "fence timeout: ...", `migrate_timeouts` and
 *   `migrate_aborts` + 1 on the new leader.
 * - COMMIT answered "was aborted": with delay 500 the COMMIT is held in
 *   the proxy; the test sends the operator's abort (CLUSTER abort ID, as
 *   kvmux-cli cluster migrate --abort does) as soon as the leader's STATS
 *   say fenced. The COMMIT arrives after it and is answered
 *   VERSION_MISMATCH "was aborted": the migrator continues as ABORTED
 *   (its log says so), unfences, no timeout counted.
 * - ABORT answered "is committed": with delay 1300 the COMMIT reaches the
 *   map group (it commits) but its answer comes back after the fence
 *   timeout; the migrator asks ABORT on the same connection, behind the
 *   COMMIT, and is answered VERSION_MISMATCH "migration N is committed
 *   (epoch E)": it continues as COMMITTED (its log says so), pushes the
 *   map, purges; `migrate_timeouts` and `migrate_commits` + 1, no abort.
 *
 * Each case checks 8.5's end state (acks 3, the range's keys at exactly
 * one group, the map's epoch) and every acknowledged write read back
 * through the cluster client. A case can miss its window on a loaded
 * machine (the outcome is then the other one, still consistent and
 * checked): it is tried again, up to TRIES times, and fails if it never
 * hits. Prints one line per case. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_util.h"
#include "fpx.h"
#include "kvmux.h"
#include "migtest.h"
#include "testutil.h"

#define FIRST 100
#define LAST 299
#define NWRITE 100 /* keys the writer rewrites: < 256, no drain round needed */
#define FENCE_MS 2000
#define WAIT_MS 30000
#define TRIES 4

static int nkeys;
static char (*keys)[16];
static char mapeps[64], proxyeps[64], logpath[128];

/* ---- the proxy between the data groups and the map group ---- */

static fpx proxy;

static void proxy_start(uint16_t port) {
    REQUIRE(fpx_start(&proxy, KVMUX_FAULTPROXY_PATH, port) == 0);
    snprintf(proxyeps, sizeof proxyeps, "127.0.0.1:%u", proxy.port);
}

/* A command, its "ok" line awaited (then it is in force). */
static void proxy_cmd(const char *cmd) {
    char line[256];
    REQUIRE(fpx_cmd(&proxy, cmd, line, sizeof line) == 0);
    if (strncmp(line, "ok", 2) != 0) fprintf(stderr, "proxy: %s -> %s", cmd, line);
    REQUIRE(strncmp(line, "ok", 2) == 0);
}

static void proxy_stop(void) { REQUIRE(fpx_stop(&proxy) == 0); }

/* ---- helpers ---- */

/* Whether the source group's log file holds "migration ID: what". */
static int logged(uint32_t id, const char *what) {
    char pat[160];
    snprintf(pat, sizeof pat, "migration %u: %s", id, what);
    FILE *f = fopen(logpath, "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, pat) != NULL;
    fclose(f);
    return found;
}

/* One connection to a member, polled for STATS migrate_out_state as fast
 * as it answers, until it says fenced (1) or the record id is no longer
 * open there (0: ended before the test saw the fence). */
static int await_fence(uint16_t port) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    int seen = 0, fenced = 0;
    for (int64_t end = test_now_ms() + WAIT_MS; test_now_ms() < end;) {
        kvmux_value *v = NULL;
        char st[128] = "";
        if (kvmux_stats(c, "migrate_out_state", &v, 2000) == 0)
            snprintf(st, sizeof st, "%.*s", (int)(v->len < 127 ? v->len : 127),
                     (const char *)v->data);
        kvmux_value_free(v);
        if (strstr(st, ":fenced")) {
            fenced = 1;
            break;
        }
        if (strstr(st, ":copying")) seen = 1;
        else if (seen && strstr(st, ":none")) break;
    }
    kvmux_close(c);
    return fenced;
}

/* A STATS counter of every member of g into v[] (UINT64_MAX: down). */
static void stats_all(const rgroup *g, const char *name, uint64_t *v) {
    for (int i = 0; i < g->n; i++) v[i] = g->up[i] ? rgroup_stat(g, i, name) : UINT64_MAX;
}

/* 8.5's end state of a move of R that ended: acks 3, no outgoing or
 * incoming record left, every key of R at owner and none at the other
 * group (its janitor purged them). */
static void check_end(const rgroup *mg, uint32_t id, int state, rgroup *owner, rgroup *other) {
    kvmux_migrec r;
    CHECK_EQ(migt_record(mg, id, 1, WAIT_MS, &r), 0);
    CHECK_EQ(r.state, state);
    CHECK_EQ(r.acks, 3);
    int lo = rgroup_leader(owner, 20000), lt = rgroup_leader(other, 20000);
    REQUIRE(lo >= 0 && lt >= 0);
    long long k = -1;
    for (int64_t end = test_now_ms() + WAIT_MS; test_now_ms() < end; test_sleep_ms(100))
        if ((k = migt_slotkeys(other->cport[lt], FIRST, LAST)) == 0) break;
    CHECK_EQ(k, 0);
    CHECK_EQ(migt_slotkeys(owner->cport[lo], FIRST, LAST), nkeys);
    CHECK(migt_stat_is(owner, lo, "migrate_out_state", "none"));
    CHECK(migt_stat_is(owner, lo, "migrate_in_state", "none"));
    CHECK(migt_stat_is(other, lt, "migrate_out_state", "none"));
    CHECK(migt_stat_is(other, lt, "migrate_in_state", "none"));
}

/* A plain move of R from src to dst (the proxy passing), committed. */
static void move_plain(rgroup *mg, rgroup *src, rgroup *dst, int dst_id) {
    proxy_cmd("pass");
    uint32_t id = migt_start_move(mg, FIRST, LAST, dst_id);
    kvmux_migrec r = migt_wait_ended(mg, id, WAIT_MS);
    CHECK_EQ(r.state, KVMUX_MIG_COMMITTED);
    check_end(mg, id, KVMUX_MIG_COMMITTED, dst, src);
}

/* ---- the writer ---- */

/* The cluster client rewrites keys 0..NWRITE-1 with unique values; the
 * last acknowledged value of each is kept, a failed write makes the
 * key's state unknown until the next acknowledged one. */
typedef struct writer {
    char seeds[64];
    atomic_int stop;
    long acked, failed;
    char last[NWRITE][48];
    int unknown[NWRITE];
} writer;

static writer w;

static void *writer_main(void *arg) {
    (void)arg;
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = w.seeds;
    o.request_timeout_ms = 20000;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    for (long n = 0; !atomic_load(&w.stop); n++) {
        int i = (int)(n % NWRITE);
        char v[48];
        snprintf(v, sizeof v, "w%ld-%.15s", n, keys[i]);
        if (kvmux_set(c, keys[i], strlen(keys[i]), v, strlen(v), 0, NULL, 20000) == 0) {
            memcpy(w.last[i], v, sizeof v);
            w.unknown[i] = 0;
            w.acked++;
        } else {
            w.unknown[i] = 1;
            w.failed++;
        }
        if (n % 16 == 15) test_sleep_ms(2); /* leaves the machine to the servers */
    }
    kvmux_close(c);
    return NULL;
}

/* Every key read through a cluster client (seeded with seeds): its last
 * acknowledged value; a writer key whose last write failed is skipped.
 * The writer must be stopped. */
static void check_keys(const char *seeds) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seeds;
    o.request_timeout_ms = 10000;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    int bad = 0;
    for (int i = 0; i < nkeys; i++) {
        char want[64];
        if (i < NWRITE && w.unknown[i]) continue;
        if (i < NWRITE && w.last[i][0]) snprintf(want, sizeof want, "%s", w.last[i]);
        else snprintf(want, sizeof want, "v-%.15s-%d", keys[i], i);
        kvmux_value *v = NULL;
        int rc = kvmux_get(c, keys[i], strlen(keys[i]), &v, 10000);
        if (rc != 0 || v->len != strlen(want) || memcmp(v->data, want, v->len) != 0)
            if (bad++ < 5) fprintf(stderr, "key %s: rc %d, want %s\n", keys[i], rc, want);
        kvmux_value_free(v);
    }
    CHECK_EQ(bad, 0);
    kvmux_close(c);
}

/* ---- the cases: each 1 hit, 0 missed (R is back at g1 then) ---- */

/* The source leader killed while fenced, the target stopped: the new
 * leader's fence timer runs from its takeover. */
static int takeover(rgroup *mg, rgroup *g1, rgroup *g2) {
    uint64_t e0 = migt_map_epoch(mg), to0[RGROUP_MAX], ab0[RGROUP_MAX];
    int l = rgroup_stable_leader(g1, 20000);
    REQUIRE(l >= 0);
    stats_all(g1, "migrate_timeouts", to0);
    stats_all(g1, "migrate_aborts", ab0);
    proxy_cmd("delay 1000");
    uint32_t id = migt_start_move(mg, FIRST, LAST, 2);
    int fenced = await_fence(g1->cport[l]);
    int64_t t_kill = test_now_ms();
    if (fenced) {
        migt_sigstop(g2);
        rgroup_kill(g1, l);
        proxy_cmd("cut"); /* a COMMIT held in the proxy never arrives */
    }
    proxy_cmd("pass");
    int nl = rgroup_leader(g1, 20000);
    int64_t t_lead = test_now_ms();
    REQUIRE(nl >= 0);
    kvmux_migrec r = migt_wait_ended(mg, id, WAIT_MS);
    int64_t t_end = test_now_ms();
    if (fenced) {
        migt_sigcont(g2);
        REQUIRE(rgroup_start_member(g1, l, 0) == 0);
    }
    if (!fenced || r.state != KVMUX_MIG_ABORTED) {
        printf("takeover: migration %u ended %s before the test stopped it: again\n", id,
               r.state == KVMUX_MIG_COMMITTED ? "committed" : "otherwise");
        if (r.state == KVMUX_MIG_COMMITTED) {
            check_end(mg, id, KVMUX_MIG_COMMITTED, g2, g1);
            move_plain(mg, g2, g1, 1);
        } else {
            check_end(mg, id, KVMUX_MIG_ABORTED, g1, g2);
        }
        return 0;
    }
    printf("takeover: migration %u: leader %d killed fenced, leader %d seen %lld ms later, "
           "aborted %lld ms after that: %s\n", id, l, nl, (long long)(t_lead - t_kill),
           (long long)(t_end - t_lead), r.reason);
    CHECK(strncmp(r.reason, "fence timeout: ", 15) == 0);
    /* Counted from the takeover (which follows the new leader's election
     * and its first table read), not from the old leader's fence. */
    CHECK(t_end - t_lead >= FENCE_MS - 500);
    CHECK_EQ(rgroup_stat(g1, nl, "migrate_timeouts"), to0[nl] + 1);
    CHECK_EQ(rgroup_stat(g1, nl, "migrate_aborts"), ab0[nl] + 1);
    check_end(mg, id, KVMUX_MIG_ABORTED, g1, g2);
    CHECK_EQ(migt_map_epoch(mg), e0);
    return 1;
}

/* The operator's abort between the final delta and the COMMIT's arrival:
 * the COMMIT is answered "was aborted". */
static int commit_was_aborted(rgroup *mg, rgroup *g1, rgroup *g2) {
    uint64_t e0 = migt_map_epoch(mg);
    int l = rgroup_stable_leader(g1, 20000);
    REQUIRE(l >= 0);
    uint64_t to0 = rgroup_stat(g1, l, "migrate_timeouts");
    uint64_t ab0 = rgroup_stat(g1, l, "migrate_aborts");
    uint64_t co0 = rgroup_stat(g1, l, "migrate_commits");
    proxy_cmd("delay 500");
    uint32_t id = migt_start_move(mg, FIRST, LAST, 2);
    int rc = -1;
    char arg[16], out[256];
    size_t n = 0;
    if (await_fence(g1->cport[l])) {
        snprintf(arg, sizeof arg, "%u", id);
        rc = cluster_call(mg->cport[0], "abort", arg, strlen(arg), (uint8_t *)out,
                          sizeof out - 1, &n);
    }
    kvmux_migrec r = migt_wait_ended(mg, id, WAIT_MS);
    for (int64_t end = test_now_ms() + WAIT_MS; test_now_ms() < end; test_sleep_ms(50))
        if (migt_stat_is(g1, l, "migrate_out_state", "none")) break;
    proxy_cmd("pass");
    int hit = rc == 0 && logged(id, "the COMMIT came after its abort");
    if (!hit) {
        printf("commit after abort: migration %u: abort %s, ended %s, COMMIT %s: again\n", id,
               rc == 0 ? "applied" : "refused or not sent",
               r.state == KVMUX_MIG_COMMITTED ? "committed" : "aborted",
               rc == 0 ? "not answered \"was aborted\"" : "first");
        if (r.state == KVMUX_MIG_COMMITTED) {
            check_end(mg, id, KVMUX_MIG_COMMITTED, g2, g1);
            move_plain(mg, g2, g1, 1);
        } else {
            check_end(mg, id, KVMUX_MIG_ABORTED, g1, g2);
        }
        return 0;
    }
    printf("commit after abort: migration %u aborted by the operator while its COMMIT was on "
           "the way; the source continued as aborted\n", id);
    CHECK_EQ(r.state, KVMUX_MIG_ABORTED);
    CHECK(migt_stat_is(g1, l, "migrate_out_state", "none"));
    CHECK_EQ(rgroup_stat(g1, l, "migrate_timeouts"), to0);
    CHECK_EQ(rgroup_stat(g1, l, "migrate_aborts"), ab0 + 1);
    CHECK_EQ(rgroup_stat(g1, l, "migrate_commits"), co0);
    check_end(mg, id, KVMUX_MIG_ABORTED, g1, g2);
    CHECK_EQ(migt_map_epoch(mg), e0);
    return 1;
}

/* The COMMIT applied, its answer later than the fence timeout: the ABORT
 * asked then is answered "is committed". R ends at g2 on a hit. */
static int abort_is_committed(rgroup *mg, rgroup *g1, rgroup *g2) {
    uint64_t e0 = migt_map_epoch(mg);
    int l = rgroup_stable_leader(g1, 20000);
    REQUIRE(l >= 0);
    uint64_t to0 = rgroup_stat(g1, l, "migrate_timeouts");
    uint64_t ab0 = rgroup_stat(g1, l, "migrate_aborts");
    uint64_t co0 = rgroup_stat(g1, l, "migrate_commits");
    proxy_cmd("delay 1300");
    uint32_t id = migt_start_move(mg, FIRST, LAST, 2);
    kvmux_migrec r = migt_wait_ended(mg, id, WAIT_MS);
    /* The table says COMMITTED once the COMMIT applies; the source learns
     * it from the ABORT's answer about 2 x 1300 ms after its fence timer. */
    int hit = 0;
    for (int64_t end = test_now_ms() + 2 * FENCE_MS + 5000 + 2000;
         r.state == KVMUX_MIG_COMMITTED && !hit && test_now_ms() < end; test_sleep_ms(100))
        hit = logged(id, "it committed before the abort");
    proxy_cmd("pass");
    if (!hit) {
        /* Committed with an answer in time, or aborted: the COMMIT was
         * not sent within the fence timeout. */
        printf("abort after commit: migration %u %s without the path: again\n", id,
               r.state == KVMUX_MIG_COMMITTED ? "committed" : "aborted");
        if (r.state == KVMUX_MIG_COMMITTED) {
            check_end(mg, id, KVMUX_MIG_COMMITTED, g2, g1);
            move_plain(mg, g2, g1, 1);
        } else {
            check_end(mg, id, KVMUX_MIG_ABORTED, g1, g2);
        }
        return 0;
    }
    check_end(mg, id, KVMUX_MIG_COMMITTED, g2, g1);
    printf("abort after commit: migration %u: COMMIT answered after the fence timeout, the "
           "ABORT answered \"is committed (epoch %llu)\": committed\n", id,
           (unsigned long long)r.end_epoch);
    CHECK_EQ(r.end_epoch, e0 + 1);
    CHECK_EQ(migt_map_epoch(mg), e0 + 1);
    CHECK_EQ(rgroup_stat(g1, l, "migrate_timeouts"), to0 + 1);
    CHECK_EQ(rgroup_stat(g1, l, "migrate_commits"), co0 + 1);
    CHECK_EQ(rgroup_stat(g1, l, "migrate_aborts"), ab0);
    return 1;
}

/* Run a case until it hits (TRIES at most); the writer's keys read back
 * after each try through the cluster client. */
static void run_case(const char *name, int (*fn)(rgroup *, rgroup *, rgroup *), rgroup *mg,
                     rgroup *g1, rgroup *g2) {
    int hit = 0, tries = 0;
    while (!hit && tries++ < TRIES) hit = fn(mg, g1, g2);
    if (!hit) fprintf(stderr, "%s: never hit in %d tries\n", name, TRIES);
    CHECK(hit);
}

int main(void) {
    nkeys = (int)(2000 * test_scale());
    if (nkeys < NWRITE) nkeys = NWRITE;
    keys = calloc((size_t)nkeys, sizeof *keys);
    REQUIRE(keys != NULL);
    snprintf(logpath, sizeof logpath, "/tmp/kvmux-migpaths-%d.log", (int)getpid());
    static const char *const mx[] = {"--cluster-map-group", NULL};
    static const char *const x1[] = {"--cluster-group", "1", "--cluster-map", proxyeps,
                                     "--migrate-fence-timeout", "2000", "--log-file", logpath,
                                     NULL};
    static const char *const x2[] = {"--cluster-group", "2", "--cluster-map", proxyeps,
                                     "--migrate-fence-timeout", "2000", NULL};
    static rgroup mg, g1, g2;
    REQUIRE(rgroup_start(&mg, 1, mx) == 0);
    REQUIRE(rgroup_leader(&mg, 20000) == 0);
    snprintf(mapeps, sizeof mapeps, "127.0.0.1:%u", mg.cport[0]);
    proxy_start(mg.cport[0]);
    REQUIRE(rgroup_start(&g1, 3, x1) == 0);
    REQUIRE(rgroup_start(&g2, 1, x2) == 0);
    REQUIRE(rgroup_stable_leader(&g1, 20000) >= 0);
    REQUIRE(rgroup_leader(&g2, 20000) == 0);

    char path[256], cmd[1024], out[8192];
    snprintf(path, sizeof path, "%s/map.txt", mg.dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "group 1 127.0.0.1:%u 127.0.0.1:%u 127.0.0.1:%u\ngroup 2 127.0.0.1:%u\n"
            "slots 0-8191 1\nslots 8192-16383 2\n",
            g1.cport[0], g1.cport[1], g1.cport[2], g2.cport[0]);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster assign %s --map %s 2>&1", KVMUX_CLI_PATH, path,
             mapeps);
    int arc = migt_run(cmd, out, sizeof out);
    if (arc != 0) fprintf(stderr, "%s: %s\n", cmd, out);
    REQUIRE(arc == 0);

    snprintf(w.seeds, sizeof w.seeds, "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u", g1.cport[0],
             g1.cport[1], g1.cport[2]);
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = w.seeds;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    int from = 0;
    for (int i = 0; i < nkeys; i++) {
        char v[64];
        cluster_key_in(FIRST, LAST, &from, keys[i], sizeof keys[i]);
        int n = snprintf(v, sizeof v, "v-%.15s-%d", keys[i], i);
        REQUIRE(kvmux_set(c, keys[i], strlen(keys[i]), v, (size_t)n, 0, NULL, 10000) == 0);
    }
    kvmux_close(c);

    pthread_t wt;
    REQUIRE(pthread_create(&wt, NULL, writer_main, NULL) == 0);
    test_sleep_ms(300);
    run_case("takeover", takeover, &mg, &g1, &g2);
    run_case("commit after abort", commit_was_aborted, &mg, &g1, &g2);
    run_case("abort after commit", abort_is_committed, &mg, &g1, &g2);
    test_sleep_ms(300); /* the writer writes at group 2 now */
    atomic_store(&w.stop, 1);
    pthread_join(wt, NULL);
    printf("writer: %ld acknowledged, %ld failed\n", w.acked, w.failed);
    CHECK(w.acked > 0);
    check_keys(w.seeds);

    /* The outcomes as an operator sees them. */
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster status --map %s 2>&1", KVMUX_CLI_PATH, mapeps);
    CHECK_EQ(migt_run(cmd, out, sizeof out), 0);
    CHECK(strstr(out, "committed") != NULL && strstr(out, "aborted") != NULL);
    CHECK(strstr(out, "fence timeout: ") != NULL);

    rgroup_stop(&g2);
    rgroup_stop(&g1);
    proxy_stop();
    rgroup_stop(&mg);
    free(keys);
    int rc = test_report();
    if (rc == 0) unlink(logpath);
    else fprintf(stderr, "the source group's log: %s\n", logpath);
    return rc;
}
