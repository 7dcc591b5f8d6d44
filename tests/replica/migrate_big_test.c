/* Slot migration step 7 (docs/MIGRATION.md sections 4 and 13): big values
 * move. A real map group, a one-member source group 1, a three-member
 * target group 2 and a one-member group 3 with --max-value 16M.
 *
 * Slots 100-299 of group 1 hold two 24 MiB values and 200 small keys;
 * `kvmux-cli cluster migrate 100-299 2` moves them. Each big value fits
 * no 1 MiB batch: the source sends it alone as one fragmented `import`,
 * group 2's leader stages it in 1 MiB STAGE entries and proposes
 * IMPORT_STAGED. After the commit every key is read from group 2 with its
 * exact bytes and its version, group 1 holds none of the range, and each
 * member of group 2 serves them so from its own store (every replica
 * applied the staged imports alike). While the move runs a client makes small
 * SETs to group 2, one at a time; their p99 is printed beside the p99 of
 * the same client for the same time without a move (figures, no
 * assertion: MIGRATION.md 13 step 7; BENCHMARKS.md).
 *
 * Then a move of the range from group 2 to group 3, whose --max-value
 * (16 MiB) admits no 24 MiB value: the source asks ABORT with the reason
 * (`does not fit one import request`), both sides end the migration, the
 * keys stay in group 2. Then back to group 1, and to group 2 again with
 * group 2's leader killed during the copy (most likely while a big value
 * is staged): the import is resent to the new leader and the move
 * commits with every key intact on every member (from KVMUX_TEST_SCALE
 * 0.25 up: skipped under TSan's 0.1). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "cluster_util.h"
#include "kvmux.h"
#include "migtab.h"
#include "migtest.h"
#include "rgroup.h"
#include "testutil.h"

#define FIRST 100
#define LAST 299
#define NSMALL 200
#define NBIG 2
#define NKEYS (NSMALL + NBIG)
#define BIG (24u << 20)
#define WAIT_MS 60000
/* The small-SET measurement without a move lasts this long. */
#define BASELINE_MS 3000
#define MAX_LAT 200000

static char keys[NKEYS][16];
static uint64_t versions[NKEYS];
static uint8_t *bigv[NBIG];

/* Key i's value: keys 0..NBIG-1 the big patterns, the rest small. */
static size_t value_of(int i, const uint8_t **out, char *small, size_t cap) {
    if (i < NBIG) {
        *out = bigv[i];
        return BIG;
    }
    int n = snprintf(small, cap, "small-%s-%d", keys[i], i);
    *out = (const uint8_t *)small;
    return (size_t)n;
}

static kvmux_client *client_on(const char *eps, int stale) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = eps;
    o.stale_reads = stale;
    o.connect_timeout_ms = 2000;
    o.request_timeout_ms = 60000;
    o.reconnect_min_backoff_ms = 5;
    o.reconnect_max_backoff_ms = 100;
    o.max_value_size = 64u << 20;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0 && c);
    return c;
}

static void endpoints_of(const rgroup *g, char *out, size_t cap) {
    size_t used = 0;
    for (int i = 0; i < g->n; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s127.0.0.1:%u", i ? "," : "",
                                 g->cport[i]);
}

/* Every key of the range read through eps with its bytes and version;
 * with stale, from the one member eps names, whatever its role (a
 * follower's lag is waited for, up to WAIT_MS). */
static void check_keys(const char *eps, int stale, const char *where) {
    kvmux_client *c = client_on(eps, stale);
    int bad = 0;
    char small[64];
    int64_t end = test_now_ms() + WAIT_MS;
    for (int i = 0; i < NKEYS; i++) {
        const uint8_t *want;
        size_t n = value_of(i, &want, small, sizeof small);
        kvmux_value *v = NULL;
        int rc, same;
        for (;;) {
            rc = kvmux_get(c, keys[i], strlen(keys[i]), &v, 30000);
            same = rc == 0 && v->len == n && memcmp(v->data, want, n) == 0 &&
                   v->version == versions[i];
            if (same || !stale || test_now_ms() > end) break;
            kvmux_value_free(v);
            v = NULL;
            test_sleep_ms(50);
        }
        if (!same) {
            if (bad++ < 5)
                fprintf(stderr, "%s: key %s: rc %d, len %zu (want %zu), version %llu (want "
                        "%llu)\n", where, keys[i], rc, v ? v->len : 0, n,
                        (unsigned long long)(v ? v->version : 0),
                        (unsigned long long)versions[i]);
        }
        kvmux_value_free(v);
    }
    CHECK_EQ(bad, 0);
    kvmux_close(c);
}

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Small SETs to one key of group 2's own slots, one at a time, each
 * latency kept, until stop (or MAX_LAT of them). */
typedef struct setter {
    const char *eps;
    char key[16];
    atomic_int stop;
    int64_t lat[MAX_LAT];
    int n, fails;
} setter;

static void *setter_main(void *arg) {
    setter *s = arg;
    kvmux_client *c = client_on(s->eps, 0);
    while (!atomic_load(&s->stop) && s->n < MAX_LAT) {
        int64_t t0 = now_us();
        if (kvmux_set(c, s->key, strlen(s->key), "small", 5, 0, NULL, 30000) != 0) s->fails++;
        else s->lat[s->n++] = now_us() - t0;
    }
    kvmux_close(c);
    return NULL;
}

static int cmp_i64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

static void report(const char *what, setter *s, int64_t ms) {
    qsort(s->lat, (size_t)s->n, sizeof s->lat[0], cmp_i64);
    int n = s->n;
    printf("small SETs to group 2 %s: %d in %lld ms, p50 %.2f ms, p99 %.2f ms, max %.2f ms, "
           "%d failed\n", what, n, (long long)ms, n ? s->lat[n / 2] / 1000.0 : -1.0,
           n ? s->lat[n * 99 / 100] / 1000.0 : -1.0, n ? s->lat[n - 1] / 1000.0 : -1.0,
           s->fails);
    CHECK_EQ(s->fails, 0);
    CHECK(n > 0);
}

static void start_setter(setter *s, pthread_t *th, const char *eps, const char *key) {
    memset(s, 0, sizeof *s);
    s->eps = eps;
    snprintf(s->key, sizeof s->key, "%s", key);
    REQUIRE(pthread_create(th, NULL, setter_main, s) == 0);
}

/* The move 1 -> 2 under the setter, checked end to end. */
static void move_big(rgroup *mg, const char *mapeps, rgroup *g1, rgroup *g2, const char *g2eps,
                     const char *g2key) {
    static setter s;
    pthread_t th;
    char cmd[1024], out[4096];

    start_setter(&s, &th, g2eps, g2key);
    int64_t t0 = test_now_ms();
    test_sleep_ms(BASELINE_MS);
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    report("without a move", &s, test_now_ms() - t0);

    uint64_t e0 = migt_map_epoch(mg);
    uint64_t sent0 = rgroup_stat(g1, 0, "migrate_bytes_sent");
    start_setter(&s, &th, g2eps, g2key);
    t0 = test_now_ms();
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster migrate %d-%d 2 --map %s --timeout 300 2>&1",
             KVMUX_CLI_PATH, FIRST, LAST, mapeps);
    int rc = migt_run(cmd, out, sizeof out);
    int64_t move_ms = test_now_ms() - t0;
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    if (rc != 0) fprintf(stderr, "cli said: %s\n", out);
    CHECK_EQ(rc, 0);
    CHECK(strstr(out, "committed at epoch") != NULL);
    printf("move of %d keys (%d of %u MiB) from group 1 to group 2: %lld ms\n", NKEYS, NBIG,
           BIG >> 20, (long long)move_ms);
    report("during the move", &s, move_ms);

    CHECK_EQ(migt_map_epoch(mg), e0 + 1);
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    CHECK_EQ(migt_record(mg, 1, 1, WAIT_MS, &r), 0);
    CHECK_EQ(r.state, KVMUX_MIG_COMMITTED);
    CHECK_EQ(r.acks, 3);
    /* Both big values crossed (a batch of their own each), nothing was
     * aborted, the old owner purged the range. */
    CHECK(rgroup_stat(g1, 0, "migrate_bytes_sent") >= sent0 + (uint64_t)NBIG * BIG);
    CHECK(rgroup_stat(g1, 0, "migrate_batches_sent") >= NBIG + 1);
    CHECK_EQ(rgroup_stat(g1, 0, "migrate_aborts"), 0);
    long long left = -1;
    for (int64_t end = test_now_ms() + WAIT_MS; test_now_ms() < end; test_sleep_ms(100))
        if ((left = migt_slotkeys(g1->cport[0], FIRST, LAST)) == 0) break;
    CHECK_EQ(left, 0);
    check_keys(g2eps, 0, "after 1 -> 2");
    /* Every member of group 2 applied the staged imports alike: each
     * serves every key with its bytes and version (a STALE read, from
     * its own store). (A digest of 48 MiB per member takes longer than
     * a STATS may under TSan.) */
    for (int i = 0; i < g2->n; i++) {
        char one[32];
        snprintf(one, sizeof one, "127.0.0.1:%u", g2->cport[i]);
        check_keys(one, 1, "after 1 -> 2, one member");
        CHECK_EQ(migt_slotkeys(g2->cport[i], FIRST, LAST), NKEYS);
        CHECK_EQ(rgroup_stat(g2, i, "migrate_import_staged"), NBIG);
    }
}

/* 2 -> 3: group 3's --max-value is below the big values' batches. */
static void move_refused(rgroup *mg, const char *mapeps, rgroup *g2, rgroup *g3,
                         const char *g2eps) {
    char cmd[1024], out[4096];
    uint64_t e0 = migt_map_epoch(mg);
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster migrate %d-%d 3 --map %s --no-wait 2>&1",
             KVMUX_CLI_PATH, FIRST, LAST, mapeps);
    CHECK_EQ(migt_run(cmd, out, sizeof out), 0);
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    CHECK_EQ(migt_record(mg, 2, 1, WAIT_MS, &r), 0);
    CHECK_EQ(r.state, KVMUX_MIG_ABORTED);
    CHECK_EQ(r.acks, 3);
    printf("2 -> 3 aborted: %s\n", r.reason);
    CHECK(strstr(r.reason, "does not fit one import request") != NULL);
    CHECK_EQ(migt_map_epoch(mg), e0);
    long long left = -1;
    for (int64_t end = test_now_ms() + WAIT_MS; test_now_ms() < end; test_sleep_ms(100))
        if ((left = migt_slotkeys(g3->cport[0], FIRST, LAST)) == 0) break;
    CHECK_EQ(left, 0);
    int l = rgroup_leader(g2, 5000);
    REQUIRE(l >= 0);
    CHECK_EQ(migt_slotkeys(g2->cport[l], FIRST, LAST), NKEYS);
    check_keys(g2eps, 0, "after the refused move");
}

/* `kvmux-cli cluster migrate FIRST-LAST dst`, waited for: committed. */
static void move_plain(rgroup *mg, const char *mapeps, int dst, uint32_t id) {
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster migrate %d-%d %d --map %s --timeout 300 2>&1",
             KVMUX_CLI_PATH, FIRST, LAST, dst, mapeps);
    int rc = migt_run(cmd, out, sizeof out);
    if (rc != 0) fprintf(stderr, "cli said: %s\n", out);
    CHECK_EQ(rc, 0);
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    CHECK_EQ(migt_record(mg, id, 1, WAIT_MS, &r), 0);
    CHECK_EQ(r.state, KVMUX_MIG_COMMITTED);
}

/* 1 -> 2 again, group 2's leader killed (SIGKILL) during the copy, most
 * likely while a big value is being staged (staging is most of the
 * copy's time): the import in progress ends NOT_LEADER (or its answer is
 * lost), libkvmux resends it to the new leader, which stages the value
 * again; the migration commits and every member, the restarted one
 * included, serves every key with its bytes and version. */
static void move_leader_killed(rgroup *mg, const char *mapeps, rgroup *g1, rgroup *g2,
                               const char *g2eps, uint32_t id) {
    char cmd[1024], out[4096];
    uint64_t sent0 = rgroup_stat(g1, 0, "migrate_batches_sent");
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster migrate %d-%d 2 --map %s --no-wait 2>&1",
             KVMUX_CLI_PATH, FIRST, LAST, mapeps);
    CHECK_EQ(migt_run(cmd, out, sizeof out), 0);
    int leader = -1;
    int64_t end = test_now_ms() + WAIT_MS;
    while (test_now_ms() < end && leader < 0) {
        int l = rgroup_leader(g2, 5000);
        if (l >= 0 && migt_stat_is(g2, l, "migrate_in_state", "ready")) leader = l;
        else test_sleep_ms(20);
    }
    REQUIRE(leader >= 0);
    test_sleep_ms(500);
    uint64_t sent = rgroup_stat(g1, 0, "migrate_batches_sent");
    rgroup_kill(g2, leader);
    printf("killed group 2's leader (member %d) 500 ms into the copy, %llu batches of it "
           "acknowledged by then\n", leader, (unsigned long long)(sent - sent0));
    REQUIRE(rgroup_stable_leader(g2, 30000) >= 0);
    REQUIRE(rgroup_start_member(g2, leader, 0) == 0);
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    CHECK_EQ(migt_record(mg, id, 1, 2 * WAIT_MS, &r), 0);
    CHECK_EQ(r.state, KVMUX_MIG_COMMITTED);
    CHECK_EQ(rgroup_stat(g1, 0, "migrate_aborts"), 0);
    /* Each member first (the restarted one may still be catching up:
     * until it has applied the new map it answers WRONG_SHARD, which a
     * plain client does not follow), then through the group. */
    for (int i = 0; i < g2->n; i++) {
        char one[32];
        snprintf(one, sizeof one, "127.0.0.1:%u", g2->cport[i]);
        check_keys(one, 1, "after the leader kill, one member");
    }
    check_keys(g2eps, 0, "after the leader kill");
}

int main(void) {
    static const char *const mx[] = {"--cluster-map-group", NULL};
    static char mapeps[64];
    static const char *x1[] = {"--cluster-group", "1", "--cluster-map", mapeps, NULL};
    static const char *x2[] = {"--cluster-group", "2", "--cluster-map", mapeps, NULL};
    static const char *x3[] = {"--cluster-group", "3", "--cluster-map", mapeps,
                               "--max-value", "16M", NULL};
    static rgroup mg, g1, g2, g3;
    REQUIRE(rgroup_start(&mg, 1, mx) == 0);
    REQUIRE(rgroup_leader(&mg, 20000) == 0);
    snprintf(mapeps, sizeof mapeps, "127.0.0.1:%u", mg.cport[0]);
    REQUIRE(rgroup_start(&g1, 1, x1) == 0);
    REQUIRE(rgroup_start(&g2, 3, x2) == 0);
    REQUIRE(rgroup_start(&g3, 1, x3) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    REQUIRE(rgroup_stable_leader(&g2, 20000) >= 0);
    REQUIRE(rgroup_leader(&g3, 20000) == 0);
    static char g1eps[64], g2eps[256];
    endpoints_of(&g1, g1eps, sizeof g1eps);
    endpoints_of(&g2, g2eps, sizeof g2eps);

    char path[256], cmd[1024], out[4096];
    snprintf(path, sizeof path, "%s/map.txt", mg.dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "group 1 127.0.0.1:%u\ngroup 2 127.0.0.1:%u 127.0.0.1:%u 127.0.0.1:%u\n"
            "group 3 127.0.0.1:%u\n"
            "slots 0-8191 1\nslots 8192-15999 2\nslots 16000-16383 3\n",
            g1.cport[0], g2.cport[0], g2.cport[1], g2.cport[2], g3.cport[0]);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster assign %s --map %s 2>&1", KVMUX_CLI_PATH, path,
             mapeps);
    int rc = migt_run(cmd, out, sizeof out);
    if (rc != 0) fprintf(stderr, "assign said: %s\n", out);
    REQUIRE(rc == 0);
    REQUIRE(migt_map_epoch(&mg) == 1);

    /* The keys at group 1, their versions kept. */
    for (int i = 0; i < NBIG; i++) REQUIRE((bigv[i] = test_pattern(BIG, (uint32_t)i + 7)));
    int from = 0;
    kvmux_client *c = client_on(g1eps, 0);
    char small[64];
    for (int i = 0; i < NKEYS; i++) {
        cluster_key_in(FIRST, LAST, &from, keys[i], sizeof keys[i]);
        const uint8_t *v;
        size_t n = value_of(i, &v, small, sizeof small);
        REQUIRE(kvmux_set(c, keys[i], strlen(keys[i]), v, n, 0, &versions[i], 60000) == 0);
    }
    kvmux_close(c);
    CHECK_EQ(migt_slotkeys(g1.cport[0], FIRST, LAST), NKEYS);
    char g2key[16];
    from = 0;
    cluster_key_in(8192, 15999, &from, g2key, sizeof g2key);

    move_big(&mg, mapeps, &g1, &g2, g2eps, g2key);
    move_refused(&mg, mapeps, &g2, &g3, g2eps);
    /* Two more moves of 48 MiB: ~60 s under TSan (KVMUX_TEST_SCALE 0.1
     * in CI), so only from scale 0.25 (Release, ASan). */
    if (test_scale() >= 0.25) {
        move_plain(&mg, mapeps, 1, 3);
        check_keys(g1eps, 0, "after 2 -> 1");
        move_leader_killed(&mg, mapeps, &g1, &g2, g2eps, 4);
    } else {
        printf("KVMUX_TEST_SCALE %.2f < 0.25: the move with a leader kill is skipped\n",
               test_scale());
    }

    for (int i = 0; i < NBIG; i++) free(bigv[i]);
    rgroup_stop(&g3);
    rgroup_stop(&g1);
    rgroup_stop(&g2);
    rgroup_stop(&mg);
    return test_report();
}
