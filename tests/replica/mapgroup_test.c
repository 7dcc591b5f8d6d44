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
 *          and installs the next epoch. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "cluster_util.h"
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
    static const char *x1[] = {"--cluster-group", "1", "--cluster-map", mapeps, NULL};
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
    rgroup_stop(&g1);
    rgroup_stop(&mg);
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "basic";
    if (strcmp(which, "basic") == 0) basic();
    else if (strcmp(which, "kill") == 0) kill_scenario();
    else if (strcmp(which, "fault") == 0) fault();
    else if (strcmp(which, "ha") == 0) ha();
    else {
        fprintf(stderr, "usage: mapgroup_test basic|kill|fault|ha\n");
        return 2;
    }
    return test_report();
}
