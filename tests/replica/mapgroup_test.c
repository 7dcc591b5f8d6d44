/* The map group (docs/CLUSTER.md "The map group"), against real kvmuxd
 * processes. One scenario per run (argv[1]), each its own ctest entry:
 *
 *   basic  a 1-member map group and two 1-member data groups watching it:
 *          the map group refuses keys and bad watches; kvmux-cli cluster
 *          assign --map installs on both within its bound; two racing
 *          CAS assigns of the same epoch: exactly one wins; an identical
 *          resubmission is idempotent; a watch parks until a newer epoch
 *          or its wait; a slot moved away is WRONG_SHARD at the new epoch.
 *   kill   the map group's member kill -9'ed: the data groups keep
 *          serving with their maps, count watch errors; restarted, the
 *          next epoch arrives; a 3-member data group's leader kill -9'ed:
 *          the new leader installs the next epoch.
 *   fault  a data group whose map group is not there: keyed requests are
 *          TRY_AGAIN, watch errors grow, a pushed map is served.
 *   ha     a 3-member map group: a follower refuses watches (NOT_LEADER);
 *          its leader kill -9'ed, the data group follows the new leader
 *          and installs the next epoch; a migration recorded, the leader
 *          kill -9'ed again: the next one has the same table.
 *   tls    a map group whose client port is TLS and requires client
 *          certificates: a data group with --cluster-map-tls and the
 *          cluster's CA installs its maps; one trusting another CA
 *          installs nothing and counts watch errors.
 *   migrate the migration table (docs/MIGRATION.md step 3): CREATE and its
 *          refusals and limits, the setmap guard, mwatch, COMMIT installing
 *          epoch + 1 with the moved owner (the data groups' watchers get
 *          it), ABORT, idempotent resends, ACKs, kvmux-cli cluster migrate
 *          --no-wait / --abort / --timeout / waiting, cluster status --map,
 *          STATS, GROUP status features; the table survives kill -9 of the
 *          map group's leader and a restart from its snapshot. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "cluster_util.h"
#include "migtab.h"
#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run cmd through sh; its output (stdout + stderr) in out. Returns the
 * exit status (0..255), or -1. */
static int run_cli(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return st < 0 ? -1 : (st >> 8) & 0xff;
}

/* One request on a raw v3 connection: the status; the value (NUL-
 * terminated) in val, its length in *vlen. */
static int raw_call(uint16_t port, uint8_t op, const char *key, const void *value, uint32_t vl,
                    uint8_t *val, size_t cap, size_t *vlen) {
    return cluster_raw_call(port, 3, op, key, value, vl, val, cap, vlen);
}

/* CLUSTER watch epoch [wait] on a raw connection: the status, the epoch of
 * the map answered (0: none) and how long the answer took. */
static int watch(uint16_t port, uint64_t epoch, int wait_ms, uint64_t *got, long long *took) {
    uint8_t v[12], out[8192];
    size_t n;
    for (int i = 0; i < 8; i++) v[i] = (uint8_t)(epoch >> (56 - 8 * i));
    for (int i = 0; i < 4; i++) v[8 + i] = (uint8_t)((uint32_t)wait_ms >> (24 - 8 * i));
    long long t0 = now_ms();
    int st = raw_call(port, KVMUX_OP_CLUSTER, "watch", v, wait_ms >= 0 ? 12 : 8, out,
                      sizeof out, &n);
    *took = now_ms() - t0;
    *got = 0;
    kvmux_map *m = malloc(sizeof *m);
    REQUIRE(m != NULL);
    if (st == KVMUX_STATUS_OK && kvmux_map_decode(m, out, n, NULL, 0) == 0) *got = m->epoch;
    free(m);
    return st;
}

/* A key "k<i>" whose slot is in [lo, hi] (the first such). */
static void key_in(int lo, int hi, char *key, size_t cap) {
    int from = 0;
    cluster_key_in(lo, hi, &from, key, cap);
}

/* SET key on port (libkvmux, plain client): its result. */
static int set_on(uint16_t port, const char *key) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    if (kvmux_connect(&c, "127.0.0.1", port, &o) != 0) return KVMUX_ECONNECT;
    int rc = kvmux_set(c, key, strlen(key), "v", 1, 0, NULL, 5000);
    kvmux_close(c);
    return rc;
}

/* Write a map text file: epoch (0: none), groups 1 and 2 with their
 * addresses, slots [0, split) to group 1 and the rest to group 2. */
static void map_file(const char *path, uint64_t epoch, const char *g1, const char *g2,
                     int split) {
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    if (epoch) fprintf(f, "epoch %llu\n", (unsigned long long)epoch);
    fprintf(f, "group 1 %s\ngroup 2 %s\nslots 0-%d 1\nslots %d-16383 2\n", g1, g2, split - 1,
            split);
    fclose(f);
}

static void addr_list(const rgroup *g, char *out, size_t cap) {
    size_t off = 0;
    for (int i = 0; i < g->n; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s127.0.0.1:%u", i ? " " : "",
                                g->cport[i]);
}

/* Assign through the map group: kvmux-cli's exit status, its output. */
static int assign(const char *mapeps, const char *path, char *out, size_t cap) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -t 3000 cluster assign %s --map %s 2>&1", KVMUX_CLI_PATH,
             path, mapeps);
    int rc = run_cli(cmd, out, cap);
    if (rc != 0) fprintf(stderr, "cli (%d) said: %s\n", rc, out);
    return rc;
}

/* Wait until member i of g reports cluster_epoch >= e. */
static int wait_epoch(const rgroup *g, int i, uint64_t e, int timeout_ms) {
    long long end = now_ms() + timeout_ms;
    do {
        uint64_t v = rgroup_stat(g, i, "cluster_epoch");
        if (v != UINT64_MAX && v >= e) return 0;
        sleep_ms(50);
    } while (now_ms() < end);
    return -1;
}

/* ---- basic ---- */

typedef struct racer {
    char cmd[1024];
    char out[2048];
    int rc;
} racer;

static void *race_main(void *arg) {
    racer *r = arg;
    r->rc = run_cli(r->cmd, r->out, sizeof r->out);
    return NULL;
}

/* The basic and kill scenarios' cluster: a 1-member map group mg
 * (--cluster-map-group) and two data groups watching it, g1 of 1 member
 * (--cluster-group 1) and g2 of n2 (--cluster-group 2); waits for mg's and
 * g1's leader, not g2's. Returns the map group's endpoint
 * "127.0.0.1:PORT": static, as are the members' arguments that point at
 * it (rgroup keeps them for restarts), so one call per process. */
static const char *start_cluster(rgroup *mg, rgroup *g1, rgroup *g2, int n2) {
    static const char *const mx[] = {"--cluster-map-group", NULL};
    static char mapeps[64];
    static const char *x1[] = {"--cluster-group", "1", "--cluster-map", mapeps, NULL};
    static const char *x2[] = {"--cluster-group", "2", "--cluster-map", mapeps, NULL};
    REQUIRE(rgroup_start(mg, 1, mx) == 0);
    REQUIRE(rgroup_leader(mg, 20000) == 0);
    snprintf(mapeps, sizeof mapeps, "127.0.0.1:%u", mg->cport[0]);
    REQUIRE(rgroup_start(g1, 1, x1) == 0);
    REQUIRE(rgroup_start(g2, n2, x2) == 0);
    REQUIRE(rgroup_leader(g1, 20000) == 0);
    return mapeps;
}

static void basic(void) {
    static rgroup mg, g1, g2;
    const char *mapeps = start_cluster(&mg, &g1, &g2, 1);
    REQUIRE(rgroup_leader(&g2, 20000) == 0);
    uint8_t out[512];
    size_t n;

    /* The map group serves no keys, and says so. */
    CHECK_EQ(raw_call(mg.cport[0], KVMUX_OP_GET, "foo", NULL, 0, out, sizeof out, &n),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK(strstr((char *)out, "map group") != NULL);
    CHECK_EQ(set_on(mg.cport[0], "foo"), KVMUX_EBADREQ); /* libkvmux */
    CHECK_EQ(raw_call(mg.cport[0], KVMUX_OP_CLUSTER, "watch", "abc", 3, out, sizeof out, &n),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_map_group"), 1);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_epoch"), 0);
    /* No map anywhere yet: a watch ends at its wait with NOT_FOUND. */
    uint64_t got;
    long long took;
    CHECK_EQ(watch(mg.cport[0], 0, 200, &got, &took), KVMUX_STATUS_NOT_FOUND);
    CHECK(took >= 150);

    char a1[64], a2[64], text[4096];
    addr_list(&g1, a1, sizeof a1);
    addr_list(&g2, a2, sizeof a2);
    char path[256], p2a[256], p2b[256];
    snprintf(path, sizeof path, "%s/map.txt", mg.dir);
    snprintf(p2a, sizeof p2a, "%s/map2a.txt", mg.dir);
    snprintf(p2b, sizeof p2b, "%s/map2b.txt", mg.dir);

    /* Epoch 1 through the map group: the cli returns once both installed. */
    map_file(path, 0, a1, a2, 8192);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 0);
    CHECK(strstr(text, "map group: epoch 1 installed") != NULL);
    CHECK(strstr(text, "group 1: epoch 1 installed") != NULL);
    CHECK(strstr(text, "group 2: epoch 1 installed") != NULL);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_epoch"), 1);
    CHECK_EQ(rgroup_stat(&g2, 0, "cluster_epoch"), 1);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_map_watching"), 1);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_map_epoch"), 1);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_map_lag_epochs"), 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_map_watch_errors"), 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_map_installs"), 1);

    /* A watch below the epoch answers at once; at it, after its wait. */
    CHECK_EQ(watch(mg.cport[0], 0, 5000, &got, &took), KVMUX_STATUS_OK);
    CHECK_EQ(got, 1);
    CHECK(took < 2000);
    CHECK_EQ(watch(mg.cport[0], 1, 300, &got, &took), KVMUX_STATUS_OK);
    CHECK_EQ(got, 1);
    CHECK(took >= 250);

    /* Two operators race for epoch 2 with different maps: one wins. */
    map_file(p2a, 2, a1, a2, 4096);
    map_file(p2b, 2, a1, a2, 12288);
    racer r[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        snprintf(r[i].cmd, sizeof r[i].cmd, "%s -t 3000 cluster assign %s --map %s 2>&1",
                 KVMUX_CLI_PATH, i ? p2b : p2a, mapeps);
        REQUIRE(pthread_create(&th[i], NULL, race_main, &r[i]) == 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK((r[0].rc == 0) != (r[1].rc == 0));
    int winner = r[0].rc == 0 ? 0 : 1;
    CHECK_EQ(r[1 - winner].rc, 3);
    CHECK(strstr(r[1 - winner].out, "epoch 2 is not newer than the installed epoch 2") != NULL);
    if (r[winner].rc != 0 || r[1 - winner].rc != 3)
        fprintf(stderr, "racers said:\n%s\n%s\n", r[0].out, r[1].out);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_epoch"), 2);
    CHECK_EQ(rgroup_stat(&g2, 0, "cluster_epoch"), 2);
    int split = winner ? 12288 : 4096;
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_slots_owned"), (uint64_t)split);
    /* The winner's map again: idempotent. A gap: refused. */
    CHECK_EQ(assign(mapeps, winner ? p2b : p2a, text, sizeof text), 0);
    map_file(path, 4, a1, a2, 8192);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 3);
    CHECK(strstr(text, "is not the next epoch") != NULL);

    /* Epoch 3 moves the slots of a key from group 1 to group 2: group 1
     * answers WRONG_SHARD at epoch 3 once the cli says it is installed. */
    char key[32];
    key_in(1, 4095, key, sizeof key);
    CHECK_EQ(set_on(g1.cport[0], key), 0);
    map_file(path, 0, a1, a2, 0 + 1);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 0);
    CHECK(strstr(text, "group 1: epoch 3 installed") != NULL);
    CHECK_EQ(raw_call(g1.cport[0], KVMUX_OP_GET, key, NULL, 0, out, sizeof out, &n),
             KVMUX_STATUS_WRONG_SHARD);
    kvmux_redirect rd;
    CHECK(kvmux_redirect_decode(&rd, out, n) == 0 && rd.epoch == 3 && rd.group == 2);
    CHECK_EQ(set_on(g1.cport[0], key), KVMUX_EWRONGSHARD);
    CHECK_EQ(set_on(g2.cport[0], key), 0);
    CHECK_EQ(rgroup_stat(&g2, 0, "cluster_map_installs"), 3);
    rgroup_stop(&g1);
    rgroup_stop(&g2);
    rgroup_stop(&mg);
}

/* ---- kill ---- */

static void kill_scenario(void) {
    static rgroup mg, g1, g2;
    const char *mapeps = start_cluster(&mg, &g1, &g2, 3);
    int l2 = rgroup_stable_leader(&g2, 30000);
    REQUIRE(l2 >= 0);
    char a1[64], a2[128], text[4096], path[256], k1[32], k2[32];
    addr_list(&g1, a1, sizeof a1);
    addr_list(&g2, a2, sizeof a2);
    snprintf(path, sizeof path, "%s/map.txt", mg.dir);
    key_in(0, 8191, k1, sizeof k1);
    key_in(8192, 16383, k2, sizeof k2);
    map_file(path, 0, a1, a2, 8192);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 0);
    CHECK(strstr(text, "group 2: epoch 1 installed") != NULL);

    /* The map group goes: the data groups serve on with epoch 1, and
     * count the failed watches. */
    uint64_t e0 = rgroup_stat(&g1, 0, "cluster_map_watch_errors");
    rgroup_kill(&mg, 0);
    CHECK_EQ(set_on(g1.cport[0], k1), 0);
    CHECK_EQ(set_on(g2.cport[l2], k2), 0);
    long long end = now_ms() + 10000;
    while (rgroup_stat(&g1, 0, "cluster_map_watch_errors") <= e0 && now_ms() < end)
        sleep_ms(100);
    CHECK(rgroup_stat(&g1, 0, "cluster_map_watch_errors") > e0);
    CHECK(rgroup_stat(&g1, 0, "cluster_map_contact_age_ms") > 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_epoch"), 1);
    CHECK_EQ(set_on(g1.cport[0], k1), 0);

    /* Back (its map in its log): the next epoch reaches both groups. */
    REQUIRE(rgroup_start_member(&mg, 0, 0) == 0);
    REQUIRE(rgroup_leader(&mg, 20000) == 0);
    map_file(path, 0, a1, a2, 4096);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 0);
    CHECK(strstr(text, "map group: epoch 2 installed") != NULL);
    CHECK(strstr(text, "group 1: epoch 2 installed") != NULL);
    CHECK(strstr(text, "group 2: epoch 2 installed") != NULL);

    /* Group 2's leader goes: the new leader watches and installs epoch 3
     * (every member applies it from the log). */
    rgroup_kill(&g2, l2);
    int nl = -1;
    end = now_ms() + 30000;
    while (nl < 0 && now_ms() < end) {
        int l = rgroup_leader(&g2, 1000);
        if (l >= 0 && l != l2) nl = l;
    }
    REQUIRE(nl >= 0);
    map_file(path, 0, a1, a2, 8192);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 0);
    CHECK(strstr(text, "group 2: epoch 3 installed") != NULL);
    CHECK_EQ(rgroup_stat(&g2, nl, "cluster_epoch"), 3);
    CHECK_EQ(rgroup_stat(&g2, nl, "cluster_map_watching"), 1);
    for (int i = 0; i < 3; i++)
        if (i != l2) CHECK_EQ(wait_epoch(&g2, i, 3, 5000), 0);
    /* The old leader comes back as a follower and catches up. */
    REQUIRE(rgroup_start_member(&g2, l2, 0) == 0);
    CHECK_EQ(wait_epoch(&g2, l2, 3, 20000), 0);
    /* Slots 4096-8191 came back to group 1 at epoch 3. */
    char k3[32];
    key_in(4096, 8191, k3, sizeof k3);
    CHECK_EQ(set_on(g1.cport[0], k3), 0);
    rgroup_stop(&g1);
    rgroup_stop(&g2);
    rgroup_stop(&mg);
}

/* ---- fault ---- */

static void fault(void) {
    /* A port nobody listens on (bound, read, closed by rgroup's picker:
     * the map group's own ports, never started). */
    static rgroup dead, g1;
    static const char *const mx[] = {"--cluster-map-group", NULL};
    REQUIRE(rgroup_start(&dead, 1, mx) == 0);
    static char mapeps[64];
    snprintf(mapeps, sizeof mapeps, "127.0.0.1:%u", dead.cport[0]);
    rgroup_stop(&dead);
    static const char *x1[] = {"--cluster-group", "1", "--cluster-map", mapeps, NULL};
    REQUIRE(rgroup_start(&g1, 1, x1) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    long long end = now_ms() + 10000;
    while (rgroup_stat(&g1, 0, "cluster_map_watch_errors") < 2 && now_ms() < end)
        sleep_ms(100);
    CHECK(rgroup_stat(&g1, 0, "cluster_map_watch_errors") >= 2);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_map_watching"), 1);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_map_epoch"), 0);
    CHECK_EQ(set_on(g1.cport[0], "foo"), KVMUX_ETRYAGAIN);
    /* A map pushed directly is served, map group or not. */
    char a1[64], text[4096], path[256], cmd[1024];
    addr_list(&g1, a1, sizeof a1);
    snprintf(path, sizeof path, "%s/map.txt", g1.dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "group 1 %s\nslots 0-16383 1\n", a1);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -p %u cluster assign %s 2>&1", KVMUX_CLI_PATH, g1.cport[0],
             path);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 0);
    CHECK_EQ(set_on(g1.cport[0], "foo"), 0);
    /* Assign through a map group that is not there: a clear failure. */
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 4);
    CHECK(strstr(text, "map group") != NULL);
    rgroup_stop(&g1);
}

/* ---- ha ---- */

static void ha_migrations(rgroup *mg, int alive, int dead);

static void ha(void) {
    static const char *const mx[] = {"--cluster-map-group", NULL};
    static rgroup mg, g1;
    REQUIRE(rgroup_start(&mg, 3, mx) == 0);
    int ml = rgroup_stable_leader(&mg, 30000);
    REQUIRE(ml >= 0);
    static char mapeps[128];
    addr_list(&mg, mapeps, sizeof mapeps);
    for (char *p = mapeps; *p; p++)
        if (*p == ' ') *p = ','; /* an endpoint list */
    /* ha_migrations records migrations nobody moves: no migrate thread. */
    static const char *x1[] = {"--cluster-group", "1", "--cluster-map", mapeps,
                               "--migrate-thread", "no", NULL};
    REQUIRE(rgroup_start(&g1, 1, x1) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    uint64_t got;
    long long took;
    CHECK_EQ(watch(mg.cport[(ml + 1) % 3], 0, 100, &got, &took), KVMUX_STATUS_NOT_LEADER);

    char a1[64], a2[64], text[4096], path[256];
    addr_list(&g1, a1, sizeof a1);
    snprintf(a2, sizeof a2, "127.0.0.1:1"); /* a group 2 nobody runs */
    snprintf(path, sizeof path, "%s/map.txt", mg.dir);
    /* Only group 1 is waited for: group 2 is listed but not running. */
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "group 1 %s\nslots 0-16383 1\n", a1);
    fclose(f);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 0);
    CHECK(strstr(text, "group 1: epoch 1 installed") != NULL);

    rgroup_kill(&mg, ml);
    int nl = -1;
    long long end = now_ms() + 30000;
    while (nl < 0 && now_ms() < end) {
        int l = rgroup_leader(&mg, 1000);
        if (l >= 0 && l != ml) nl = l;
    }
    REQUIRE(nl >= 0);
    f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "group 1 %s\ngroup 2 %s\nslots 0-99 2\nslots 100-16383 1\n", a1, a2);
    fclose(f);
    /* The cli waits for group 2 too, which never answers: exit 3, but the
     * map group took epoch 2 and group 1 installed it. */
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 3);
    CHECK(strstr(text, "map group: epoch 2 installed") != NULL);
    CHECK(strstr(text, "group 1: epoch 2 installed") != NULL);
    CHECK(strstr(text, "group 2: not reachable") != NULL);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_epoch"), 2);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_slots_owned"), KVMUX_SLOTS - 100);
    ha_migrations(&mg, nl, ml);
    rgroup_stop(&g1);
    rgroup_stop(&mg);
}


/* ---- migrate ---- */

/* CLUSTER sub value on port: the status; the answer's text in msg. */
static int mcall(uint16_t port, const char *sub, const void *v, size_t vl, char *msg, size_t cap) {
    uint8_t out[4096];
    size_t n = 0;
    int st = raw_call(port, KVMUX_OP_CLUSTER, sub, v, (uint32_t)vl, out, sizeof out, &n);
    snprintf(msg, cap, "%.*s", (int)n, (const char *)out);
    return st;
}

static int mtext(uint16_t port, const char *sub, const char *v, char *msg, size_t cap) {
    return mcall(port, sub, v, strlen(v), msg, cap);
}

static int mcommit(uint16_t port, uint32_t id, char *msg, size_t cap) {
    uint8_t v[4];
    kvmux_store_u32be(v, id);
    return mcall(port, "migrate-commit", v, 4, msg, cap);
}

static int mack(uint16_t port, uint32_t id, uint16_t g, char *msg, size_t cap) {
    uint8_t v[6];
    kvmux_store_u32be(v, id);
    kvmux_store_u16be(v + 4, g);
    return mcall(port, "migrate-ack", v, 6, msg, cap);
}

/* The table from "migrations" (or mwatch with mgen >= 0): status; the raw
 * bytes in raw (cap 8192) when not NULL. */
static int mtable(uint16_t port, long long mgen, int wait_ms, kvmux_migtab *t, uint8_t *raw,
                  size_t *rawlen) {
    static uint8_t out[65536];
    size_t n = 0;
    uint8_t v[12];
    int st;
    if (mgen < 0) {
        st = raw_call(port, KVMUX_OP_CLUSTER, "migrations", NULL, 0, out, sizeof out, &n);
    } else {
        kvmux_store_u64be(v, (uint64_t)mgen);
        kvmux_store_u32be(v + 8, (uint32_t)wait_ms);
        st = raw_call(port, KVMUX_OP_CLUSTER, "mwatch", v, 12, out, sizeof out, &n);
    }
    if (st == KVMUX_STATUS_OK) CHECK_EQ(kvmux_migtab_decode(t, out, n, NULL, 0), 0);
    if (raw) {
        memcpy(raw, out, n < 8192 ? n : 8192);
        *rawlen = n;
    }
    return st;
}

/* ha, continued: a migration recorded on leader `alive` (member `dead`
 * down); dead restarted, alive kill -9'ed: the next leader has the same
 * table and goes on from it. */
static void ha_migrations(rgroup *mg, int alive, int dead) {
    char msg[512];
    kvmux_migtab *t = malloc(sizeof *t);
    REQUIRE(t != NULL);
    CHECK_EQ(mtext(mg->cport[alive], "migrate", "100-199 2", msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "migration 1: slots 100-199 from group 1 to group 2") == 0);
    /* A follower: changes go to the leader, the table is read anywhere. */
    int fo = 3 - alive - dead;
    CHECK_EQ(mtext(mg->cport[fo], "migrate", "300 2", msg, sizeof msg), KVMUX_STATUS_NOT_LEADER);
    long long e0 = now_ms() + 10000;
    while (now_ms() < e0 && !(mtable(mg->cport[fo], -1, 0, t, NULL, NULL) == 0 && t->n == 1))
        sleep_ms(50);
    CHECK_EQ(t->n, 1);
    uint8_t before[8192], after[8192];
    size_t lb = 0, la = 0;
    CHECK_EQ(mtable(mg->cport[alive], -1, 0, t, before, &lb), KVMUX_STATUS_OK);
    REQUIRE(rgroup_start_member(mg, dead, 0) == 0);
    long long end = now_ms() + 20000;
    while (now_ms() < end && !(mtable(mg->cport[dead], -1, 0, t, NULL, NULL) == 0 && t->n == 1))
        sleep_ms(100);
    rgroup_kill(mg, alive);
    int nl = -1;
    end = now_ms() + 30000;
    while (nl < 0 && now_ms() < end) {
        int l = rgroup_leader(mg, 1000);
        if (l >= 0 && l != alive) nl = l;
    }
    REQUIRE(nl >= 0);
    CHECK_EQ(mtable(mg->cport[nl], -1, 0, t, after, &la), KVMUX_STATUS_OK);
    CHECK(la == lb && memcmp(before, after, la) == 0);
    CHECK_EQ(mtext(mg->cport[nl], "migrate", "200 2", msg, sizeof msg), KVMUX_STATUS_BUSY);
    CHECK_EQ(mtext(mg->cport[nl], "abort", "1", msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK_EQ(mtext(mg->cport[nl], "migrate", "200 2", msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "migration 2: slots 200-200 from group 1 to group 2") == 0);
    free(t);
}

static void migrate_scenario(void) {
    static const char *const mx[] = {"--cluster-map-group", "--snapshot-threshold", "8", NULL};
    static char mapeps[64];
    /* The migrations here are driven by hand (committed, aborted and
     * acknowledged by the test): no migrate thread. */
    static const char *x1[] = {"--cluster-group", "1", "--cluster-map", mapeps,
                               "--migrate-thread", "no", NULL};
    static const char *x2[] = {"--cluster-group", "2", "--cluster-map", mapeps,
                               "--migrate-thread", "no", NULL};
    static rgroup mg, g1, g2;
    REQUIRE(rgroup_start(&mg, 1, mx) == 0);
    REQUIRE(rgroup_leader(&mg, 20000) == 0);
    snprintf(mapeps, sizeof mapeps, "127.0.0.1:%u", mg.cport[0]);
    REQUIRE(rgroup_start(&g1, 1, x1) == 0);
    REQUIRE(rgroup_start(&g2, 1, x2) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    REQUIRE(rgroup_leader(&g2, 20000) == 0);
    uint16_t mp = mg.cport[0];
    char msg[4096], a1[64], a2[64], path[256], text[8192], cmd[1024];
    kvmux_migtab *t = malloc(sizeof *t);
    REQUIRE(t != NULL);

    /* No map yet; not on a data group; bad syntax. */
    CHECK_EQ(mtext(mp, "migrate", "100-199 2", msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strstr(msg, "no slot map installed") != NULL);
    CHECK_EQ(mtext(g1.cport[0], "migrate", "100-199 2", msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strstr(msg, "map group") != NULL);
    const char *bad[] = {"", "abc", "100-199", "100-99 2", "16384 2", "1 0", "1 2 3", "01 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(mtext(mp, "migrate", bad[i], msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(mtable(mp, -1, 0, t, NULL, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(t->n, 0);
    CHECK_EQ(t->mgen, 0);

    addr_list(&g1, a1, sizeof a1);
    addr_list(&g2, a2, sizeof a2);
    snprintf(path, sizeof path, "%s/map.txt", mg.dir);
    map_file(path, 0, a1, a2, 8192);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 0);

    /* CREATE 1: slots 100-199 from group 1 to group 2. */
    CHECK_EQ(mtext(mp, "migrate", "100-199 2", msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "migration 1: slots 100-199 from group 1 to group 2") == 0);
    CHECK_EQ(mtext(mp, "migrate", "5000 2", msg, sizeof msg), KVMUX_STATUS_BUSY);
    CHECK(strcmp(msg, "group 1 is already the source of migration 1") == 0);
    CHECK_EQ(mtext(mp, "migrate", "8000-8300 2", msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strcmp(msg, "slots 8000-8300 are not served by one group") == 0);
    CHECK_EQ(mtext(mp, "migrate", "9000 2", msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strcmp(msg, "slots 9000-9000 are already group 2's") == 0);
    CHECK_EQ(mtext(mp, "migrate", "9000 3", msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strcmp(msg, "group 3 is not in the map") == 0);
    CHECK_EQ(mtable(mp, -1, 0, t, NULL, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(t->n, 1);
    CHECK_EQ(t->mgen, 1);
    CHECK_EQ(t->next_id, 2);
    CHECK(t->rec[0].state == KVMUX_MIG_OPEN && t->rec[0].src == 1 && t->rec[0].dst == 2 &&
          t->rec[0].start_epoch == 1 && t->rec[0].created_ms > 0);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_mgen"), 1);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_migrations_open"), 1);

    /* mwatch: below the mgen at once; at it, parked for its wait. */
    long long t0 = now_ms();
    CHECK_EQ(mtable(mp, 0, 5000, t, NULL, NULL), KVMUX_STATUS_OK);
    CHECK(now_ms() - t0 < 2000);
    t0 = now_ms();
    CHECK_EQ(mtable(mp, 1, 300, t, NULL, NULL), KVMUX_STATUS_OK);
    CHECK(now_ms() - t0 >= 250);
    CHECK_EQ(mtext(mp, "mwatch", "abc", msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    /* A parked mwatch is answered when the table changes (migration 2,
     * created by a cli in another thread, then aborted). */
    racer wr;
    pthread_t wt;
    snprintf(wr.cmd, sizeof wr.cmd, "sleep 0.3; %s -t 3000 cluster migrate 9000 1 --map %s "
             "--no-wait 2>&1", KVMUX_CLI_PATH, mapeps);
    REQUIRE(pthread_create(&wt, NULL, race_main, &wr) == 0);
    t0 = now_ms();
    CHECK_EQ(mtable(mp, 1, 10000, t, NULL, NULL), KVMUX_STATUS_OK);
    CHECK(now_ms() - t0 < 8000);
    CHECK_EQ(t->mgen, 2);
    pthread_join(wt, NULL);
    CHECK_EQ(wr.rc, 0);
    CHECK(strstr(wr.out, "migration 2: slots 9000-9000 from group 2 to group 1") != NULL);
    CHECK_EQ(mtext(mp, "abort", "2 done watching", msg, sizeof msg), KVMUX_STATUS_OK);

    /* The setmap guard: a map that keeps 100-199 with group 1 installs,
     * one that moves them is refused with the record named. */
    map_file(path, 0, a1, a2, 4096);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 0);
    map_file(path, 0, a1, a2, 150);
    CHECK_EQ(assign(mapeps, path, text, sizeof text), 3);
    CHECK(strstr(text, "slots 100-199 are migrating (migration 1): abort it or wait for it") != NULL);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_epoch"), 2);

    /* COMMIT installs epoch 3 with slots 100-199 = group 2, which the data
     * groups' watchers bring to them. */
    char key[32];
    key_in(100, 199, key, sizeof key);
    CHECK_EQ(set_on(g1.cport[0], key), 0);
    CHECK_EQ(mcommit(mp, 1, msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "migration 1 committed at epoch 3") == 0);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_epoch"), 3);
    CHECK_EQ(wait_epoch(&g1, 0, 3, 10000), 0);
    CHECK_EQ(wait_epoch(&g2, 0, 3, 10000), 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_slots_owned"), 4096 - 100);
    CHECK_EQ(rgroup_stat(&g2, 0, "cluster_slots_owned"), KVMUX_SLOTS - 4096 + 100);
    uint8_t out[512];
    size_t n;
    CHECK_EQ(raw_call(g1.cport[0], KVMUX_OP_GET, key, NULL, 0, out, sizeof out, &n),
             KVMUX_STATUS_WRONG_SHARD);
    kvmux_redirect rd;
    CHECK(kvmux_redirect_decode(&rd, out, n) == 0 && rd.epoch == 3 && rd.group == 2);
    /* Resent COMMIT: the same answer; ABORT now: refused. */
    CHECK_EQ(mcommit(mp, 1, msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "migration 1 committed at epoch 3") == 0);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_epoch"), 3);
    CHECK_EQ(mtext(mp, "abort", "1", msg, sizeof msg), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK(strcmp(msg, "migration 1 is committed (epoch 3)") == 0);
    CHECK_EQ(mcommit(mp, 77, msg, sizeof msg), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(mtext(mp, "abort", "77", msg, sizeof msg), KVMUX_STATUS_NOT_FOUND);
    CHECK(strcmp(msg, "no migration 77") == 0);
    CHECK_EQ(mcall(mp, "migrate-commit", "ab", 2, msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);

    /* Bad aborts; the cli against no map group (exit 4). */
    CHECK_EQ(mtext(mp, "abort", "", msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(mtext(mp, "abort", "x", msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    char longr[300];
    memset(longr, 'r', sizeof longr);
    memcpy(longr, "1 ", 2);
    longr[2 + 201] = '\0';
    CHECK_EQ(mtext(mp, "abort", longr, msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strcmp(msg, "the reason is over 200 bytes") == 0);
    snprintf(cmd, sizeof cmd, "%s -t 1000 cluster migrate 1 2 --map 127.0.0.1:1 --no-wait 2>&1",
             KVMUX_CLI_PATH);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 4);
    snprintf(cmd, sizeof cmd, "%s -t 1000 cluster status --map 127.0.0.1:1 2>&1", KVMUX_CLI_PATH);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 4);

    /* kvmux-cli: --no-wait, --abort (twice: idempotent), --abort of a
     * committed one (exit 3), --timeout (exit 5, the record stays open). */
    snprintf(cmd, sizeof cmd, "%s -t 3000 cluster migrate 300-399 2 --map %s --no-wait 2>&1",
             KVMUX_CLI_PATH, mapeps);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 0);
    CHECK(strstr(text, "migration 3: slots 300-399 from group 1 to group 2") != NULL);
    snprintf(cmd, sizeof cmd, "%s -t 3000 cluster migrate --abort 3 --map %s 2>&1",
             KVMUX_CLI_PATH, mapeps);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 0);
    CHECK(strstr(text, "migration 3 aborted") != NULL);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 0);
    CHECK_EQ(mcommit(mp, 3, msg, sizeof msg), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK(strcmp(msg, "migration 3 was aborted: ") == 0);
    snprintf(cmd, sizeof cmd, "%s -t 3000 cluster migrate --abort 1 --map %s 2>&1",
             KVMUX_CLI_PATH, mapeps);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 3);
    CHECK(strstr(text, "is committed (epoch 3)") != NULL);
    snprintf(cmd, sizeof cmd, "%s -t 3000 cluster migrate 400-499 2 --map %s --timeout 1 2>&1",
             KVMUX_CLI_PATH, mapeps);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 5);
    CHECK(strstr(text, "migration 4: slots 400-499") != NULL);
    snprintf(cmd, sizeof cmd, "%s -t 3000 cluster migrate 400-499 2 2>&1", KVMUX_CLI_PATH);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 2);
    CHECK(strstr(text, "slot migration needs a map group (--map)") != NULL);
    /* Waiting: the cli polls until the record ends; aborted -> exit 3. */
    CHECK_EQ(mtext(mp, "abort", "4 making room", msg, sizeof msg), KVMUX_STATUS_OK);
    racer r;
    pthread_t th;
    snprintf(r.cmd, sizeof r.cmd, "%s -t 3000 cluster migrate 500-599 2 --map %s 2>&1",
             KVMUX_CLI_PATH, mapeps);
    REQUIRE(pthread_create(&th, NULL, race_main, &r) == 0);
    long long end = now_ms() + 10000;
    while (now_ms() < end && !(mtable(mp, -1, 0, t, NULL, NULL) == 0 && kvmux_migtab_find(t, 5)))
        sleep_ms(50);
    CHECK_EQ(mtext(mp, "abort", "5 stopped by the test", msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "migration 5 aborted") == 0);
    pthread_join(th, NULL);
    CHECK_EQ(r.rc, 3);
    CHECK(strstr(r.out, "migration 5 aborted: stopped by the test") != NULL);
    if (r.rc != 3) fprintf(stderr, "cli said: %s\n", r.out);

    /* ACKs. */
    CHECK_EQ(mtext(mp, "migrate", "600-699 2", msg, sizeof msg), KVMUX_STATUS_OK); /* 6 */
    CHECK_EQ(mack(mp, 6, 1, msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strcmp(msg, "migration 6 has not ended") == 0);
    CHECK_EQ(mack(mp, 1, 3, msg, sizeof msg), KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(mack(mp, 99, 1, msg, sizeof msg), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(mack(mp, 1, 1, msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK_EQ(mack(mp, 1, 2, msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK_EQ(mack(mp, 1, 2, msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK_EQ(mtable(mp, -1, 0, t, NULL, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_migtab_find(t, 1)->acks, 3); /* kept: not 32 newer ended */
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_migrations_committed"), 1);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_migrations_aborted"), 4);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_migrations_open"), 1);

    /* cluster status --map. */
    snprintf(cmd, sizeof cmd, "%s -t 3000 cluster status --map %s 2>&1", KVMUX_CLI_PATH, mapeps);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 0);
    CHECK(strstr(text, "epoch 3  mgen ") != NULL);
    CHECK(strstr(text, "group 1  slots 3996  keys ") != NULL);
    CHECK(strstr(text, "group 2  slots 12388  keys ") != NULL);
    CHECK(strstr(text, "ID  SLOTS") != NULL);
    CHECK(strstr(text, "1   100-199     1     2   committed") != NULL);
    CHECK(strstr(text, "acks src,dst") != NULL);
    CHECK(strstr(text, "5   500-599     1     2   aborted") != NULL);
    CHECK(strstr(text, "6   600-699     1     2   open") != NULL);
    /* An 11-character range still has a space before FROM. */
    CHECK(strstr(text, "ID  SLOTS       FROM  TO  STATE") != NULL);
    if (!strstr(text, "committed")) fprintf(stderr, "status said: %s\n", text);
    /* GROUP status shows the feature. */
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", g1.cport[0], &o) == 0);
    kvmux_request rq;
    kvmux_reply rep;
    memset(&rq, 0, sizeof rq);
    rq.op = KVMUX_GROUP;
    rq.key = "status";
    rq.key_len = 6;
    CHECK_EQ(kvmux_call(c, &rq, &rep, 5000), 0);
    CHECK(rep.value && memmem(rep.value, rep.value_len, "features: migrate1", 18) != NULL);
    kvmux_reply_free(&rep);
    kvmux_close(c);

    /* kill -9 of the map group's leader, restarted from its snapshot and
     * log: the same table, and it goes on from there. */
    CHECK(rgroup_stat(&mg, 0, "replica_snapshots") > 0);
    uint8_t before[8192], after[8192];
    size_t lb = 0, la = 0;
    CHECK_EQ(mtable(mp, -1, 0, t, before, &lb), KVMUX_STATUS_OK);
    rgroup_kill(&mg, 0);
    REQUIRE(rgroup_start_member(&mg, 0, 0) == 0);
    REQUIRE(rgroup_leader(&mg, 20000) == 0);
    mp = mg.cport[0];
    CHECK_EQ(mtable(mp, -1, 0, t, after, &la), KVMUX_STATUS_OK);
    CHECK(la == lb && memcmp(before, after, la) == 0);
    CHECK_EQ(mtext(mp, "abort", "6", msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK_EQ(mtext(mp, "migrate", "700 2", msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "migration 7: slots 700-700 from group 1 to group 2") == 0);
    CHECK_EQ(rgroup_stat(&mg, 0, "cluster_epoch"), 3);
    free(t);
    rgroup_stop(&g1);
    rgroup_stop(&g2);
    rgroup_stop(&mg);
}

/* ---- tls ---- */

#ifdef KVMUX_PEER_GEN_CERTS
/* CLUSTER setmap on the TLS map group at port (libkvmux, with the
 * cluster's CA and a client certificate). Returns the call's status. */
static int tls_setmap(uint16_t port, const char *dir, const uint8_t *map, size_t n) {
    char ca[256], cert[256], key[256];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/peer3.pem", dir);
    snprintf(key, sizeof key, "%s/peer3.key", dir);
    kvmux_options o;
    kvmux_options_init(&o);
    o.tls = 1;
    o.tls_ca_file = ca;
    o.tls_cert_file = cert;
    o.tls_key_file = key;
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", port, &o);
    if (rc != 0) return rc;
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_CLUSTER;
    r.key = "setmap";
    r.key_len = 6;
    r.value = map;
    r.value_len = n;
    kvmux_reply rep;
    rc = kvmux_call(c, &r, &rep, 5000);
    if (rc == 0) kvmux_reply_free(&rep);
    kvmux_close(c);
    return rc;
}

static void tls_scenario(void) {
    static char dir[64], mcert[256], mkey[256], ca[256], dcert[256], dkey[256], other[256];
    static char mapeps[64];
    snprintf(dir, sizeof dir, "/tmp/kvmux-mtls-XXXXXX");
    REQUIRE(mkdtemp(dir) != NULL);
    const char *gen[] = {"/bin/sh", KVMUX_PEER_GEN_CERTS, dir, NULL};
    char err[1024] = "";
    REQUIRE(test_run(gen, NULL, NULL, NULL, 0, err, sizeof err, 60000) == 0);
    snprintf(mcert, sizeof mcert, "%s/peer1.pem", dir);
    snprintf(mkey, sizeof mkey, "%s/peer1.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(dcert, sizeof dcert, "%s/peer2.pem", dir);
    snprintf(dkey, sizeof dkey, "%s/peer2.key", dir);
    snprintf(other, sizeof other, "%s/other-ca.pem", dir);
    static const char *mx[] = {"--cluster-map-group", "--tls-cert", mcert, "--tls-key", mkey,
                               "--tls-ca", ca, NULL};
    static const char *x1[] = {"--cluster-group", "1", "--cluster-map", mapeps,
                               "--cluster-map-tls", "yes", "--cluster-map-tls-ca", ca,
                               "--cluster-map-tls-cert", dcert, "--cluster-map-tls-key", dkey,
                               NULL};
    static const char *x2[] = {"--cluster-group", "2", "--cluster-map", mapeps,
                               "--cluster-map-tls", "yes", "--cluster-map-tls-ca", other,
                               "--cluster-map-tls-cert", dcert, "--cluster-map-tls-key", dkey,
                               NULL};
    static rgroup mg, g1, g2;
    REQUIRE(rgroup_start(&mg, 1, mx) == 0);
    snprintf(mapeps, sizeof mapeps, "127.0.0.1:%u", mg.cport[0]);
    REQUIRE(rgroup_start(&g1, 1, x1) == 0);
    REQUIRE(rgroup_start(&g2, 1, x2) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    REQUIRE(rgroup_leader(&g2, 20000) == 0);
    char a1[64], a2[64], text[512];
    addr_list(&g1, a1, sizeof a1);
    addr_list(&g2, a2, sizeof a2);
    snprintf(text, sizeof text, "epoch 1\ngroup 1 %s\ngroup 2 %s\nslots 0-8191 1\n"
             "slots 8192-16383 2\n", a1, a2);
    static uint8_t m[4096];
    size_t n = cluster_map_bytes(text, m, sizeof m);
    /* The map group's own election takes a moment: retry the setmap. */
    int rc = -1;
    for (int t = 0; t < 100 && rc != 0; t++) {
        rc = tls_setmap(mg.cport[0], dir, m, n);
        if (rc != 0) sleep_ms(200);
    }
    CHECK_EQ(rc, 0);
    CHECK_EQ(wait_epoch(&g1, 0, 1, 15000), 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_map_installs"), 1);
    /* Another CA: the handshake fails every time; nothing is installed. */
    long long end = now_ms() + 15000;
    while (rgroup_stat(&g2, 0, "cluster_map_watch_errors") < 2 && now_ms() < end) sleep_ms(100);
    CHECK(rgroup_stat(&g2, 0, "cluster_map_watch_errors") >= 2);
    CHECK_EQ(rgroup_stat(&g2, 0, "cluster_epoch"), 0);
    CHECK_EQ(rgroup_stat(&g2, 0, "cluster_map_installs"), 0);
    rgroup_stop(&g1);
    rgroup_stop(&g2);
    rgroup_stop(&mg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}
#endif

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "basic";
    if (strcmp(which, "basic") == 0) basic();
    else if (strcmp(which, "kill") == 0) kill_scenario();
    else if (strcmp(which, "fault") == 0) fault();
    else if (strcmp(which, "ha") == 0) ha();
#ifdef KVMUX_PEER_GEN_CERTS
    else if (strcmp(which, "tls") == 0) tls_scenario();
#endif
    else if (strcmp(which, "migrate") == 0) migrate_scenario();
    else {
        fprintf(stderr, "usage: mapgroup_test basic|kill|fault|ha|tls|migrate\n");
        return 2;
    }
    return test_report();
}
