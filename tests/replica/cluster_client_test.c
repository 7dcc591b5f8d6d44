/* The cluster client (kvmux_options.cluster = 1; docs/CLUSTER.md "The
 * cluster client") against real kvmuxd processes. One executable, one
 * scenario per argument (each its own ctest entry, each well under a
 * minute):
 *   route     3 groups (one of 3 members, two of 1), the client given ONE
 *             seed: N keys over all slots set and read back through the
 *             handle (blocking, futures, callbacks) against a model, each
 *             key found on the group that owns its slot (asked directly);
 *             every op, big values, keyless requests, the group API,
 *             stats, and connect failures (KVMUX_ECLUSTERMAP).
 *   reassign  3 groups; 8 threads x async depth 32 while `kvmux-cli
 *             cluster assign` moves slots 3 times: every request completes
 *             exactly once, redirects are followed, map refreshes are
 *             bounded by the epochs seen.
 *   faults    a redirect loop (two groups with inconsistent maps) ends in
 *             KVMUX_EREDIRECTS within the deadline; TRY_AGAIN from a group
 *             without a map ends in KVMUX_ETRYAGAIN within the deadline
 *             (also when the deadline passes during a backoff: an
 *             event-loop handle stopped across it, a blocking caller's
 *             sleep overrun by a signal) and succeeds once the
 *             map is installed; cancels and futures on
 *             parked and redirected requests; an unassigned slot
 *             (KVMUX_EWRONGSHARD); kill -9 of a group: its
 *             requests fail within their deadline, the others' succeed;
 *             kvmux_close with requests parked; a callback waiting for a
 *             future (and a blocking call) of its own handle.
 *   members   a connected group's member list follows the map: the
 *             leader the first map named is killed, the members a later
 *             map named take over (threaded, then event-loop mode).
 *   loop      event-loop mode through the libuv adapter: the routing test
 *             on the handle's one fd, a group leader killed, a new map
 *             (redirects, one refresh), futures, cancel, close, a group
 *             listed by name only (never resolved on the loop). */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "cluster_util.h"
#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"
#ifdef KVMUX_TEST_LIBUV
#include "kvmux/adapters/libuv.h"
#include "loop_util.h"
#endif

/* ---- scaffolding ---- */

/* Start n groups; group i+1 has members[i] members. */
static void groups_start(rgroup *g, int n, const int *members) {
    static char ids[8][8];
    static const char *extra[8][3];
    for (int i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "%d", i + 1);
        extra[i][0] = "--cluster-group";
        extra[i][1] = ids[i];
        extra[i][2] = NULL;
        REQUIRE(rgroup_start(&g[i], members[i], extra[i]) == 0);
    }
    for (int i = 0; i < n; i++) REQUIRE(rgroup_stable_leader(&g[i], 30000) >= 0);
}

/* "group I a b c" lines for the n groups. */
static void group_lines(const rgroup *g, int n, char *out, size_t cap) {
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        off += (size_t)snprintf(out + off, cap - off, "group %d", i + 1);
        for (int m = 0; m < g[i].n; m++)
            off += (size_t)snprintf(out + off, cap - off, " 127.0.0.1:%u", g[i].cport[m]);
        off += (size_t)snprintf(out + off, cap - off, "\n");
    }
}

/* kvmux-cli cluster assign of a whole text map, through the node on
 * port, to every group it lists (NOT_LEADER followed). Returns the exit
 * status. */
static int assign_text(uint16_t port, const char *text) {
    char path[] = "/tmp/kvmux-cassign-XXXXXX", cmd[512], out[4096];
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -p %u cluster assign %s 2>&1", KVMUX_CLI_PATH, port, path);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    size_t k = fread(out, 1, sizeof out - 1, p);
    out[k] = 0;
    int st = pclose(p);
    if (st != 0) fprintf(stderr, "cluster assign: %s\n", out);
    unlink(path);
    return st;
}

/* kvmux-cli cluster assign of epoch E with these slot lines to every
 * group. Returns the exit status. */
static int assign(const rgroup *g, int n, uint64_t epoch, const char *slots) {
    char lines[2048], text[4096];
    group_lines(g, n, lines, sizeof lines);
    snprintf(text, sizeof text, "epoch %llu\n%s%s", (unsigned long long)epoch, lines, slots);
    /* Through a node that is up (a test may have killed member 0). */
    for (int i = 0; i < g[n - 1].n; i++)
        if (g[n - 1].up[i]) return assign_text(g[n - 1].cport[i], text);
    return -1;
}

/* CLUSTER setmap straight to one 1-member group (libkvmux, plain). */
static int setmap(uint16_t port, const char *text) {
    static uint8_t buf[65536];
    size_t n = cluster_map_bytes(text, buf, sizeof buf), ol;
    return cluster_call(port, "setmap", buf, n, NULL, 0, &ol);
}

/* A cluster handle seeded with seeds. */
static int cluster_open(kvmux_client **c, const char *seeds, int timeout_ms) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seeds;
    o.request_timeout_ms = timeout_ms;
    return kvmux_connect(c, NULL, 0, &o);
}

static kvmux_cluster_info cstats(kvmux_client *c) {
    kvmux_cluster_info s;
    REQUIRE(kvmux_cluster_stats(c, &s, sizeof s) == 0);
    return s;
}

/* Run cmd through sh: its exit status; stdout + stderr in out. */
static int run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    while (fgetc(p) != EOF) {
    }
    return pclose(p);
}

/* kvmux-cli and kvmux-bench --cluster given one node of group 3: keys
 * land on their groups, scan and stats cover every group. nkeys: the keys
 * in the cluster so far. */
static void route_tools(const rgroup *g, int nkeys) {
    static char out[1 << 20];
    char cmd[512];
    uint16_t p3 = g[2].cport[0];
    snprintf(cmd, sizeof cmd, "%s --cluster -p %u set cli:1 hello 2>&1", KVMUX_CLI_PATH, p3);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "%s --cluster -p %u --raw get cli:1 2>&1", KVMUX_CLI_PATH, p3);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 0);
    CHECK(strcmp(out, "hello") == 0);
    /* Without --cluster a key of another group is refused. */
    int other = kvmux_slot("cli:1", 5) <= 10922;
    snprintf(cmd, sizeof cmd, "%s -p %u get cli:1 2>&1", KVMUX_CLI_PATH, p3);
    CHECK(other == (run_cmd(cmd, out, sizeof out) != 0));
    snprintf(cmd, sizeof cmd, "%s --cluster -p %u scan 2>&1 | wc -l", KVMUX_CLI_PATH, p3);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 0);
    CHECK_EQ(atoi(out), nkeys + 1);
    snprintf(cmd, sizeof cmd, "%s --cluster -p %u stats cluster_group 2>&1", KVMUX_CLI_PATH, p3);
    CHECK_EQ(run_cmd(cmd, out, sizeof out), 0);
    CHECK(strcmp(out, "# group 1\ncluster_group:1\n\n# group 2\ncluster_group:2\n\n"
                      "# group 3\ncluster_group:3\n") == 0);
    if (strncmp(out, "# group 1", 9) != 0) fprintf(stderr, "cli stats: %s\n", out);
    snprintf(cmd, sizeof cmd,
             "%s --cluster -h 127.0.0.1 -p %u -t 4 -n 3000 --ratio 1:1 -k 500 -q 2>&1",
             KVMUX_BENCH_PATH, p3);
    int st = run_cmd(cmd, out, sizeof out);
    CHECK_EQ(st, 0);
    if (st != 0) fprintf(stderr, "bench: %s\n", out);
    /* The loop driver: the cluster handle's one fd on the bench's epoll. */
    snprintf(cmd, sizeof cmd,
             "%s --cluster -h 127.0.0.1 -p %u --mode async --depth 16 -n 3000 --ratio 1:1 "
             "-k 500 -q 2>&1",
             KVMUX_BENCH_PATH, p3);
    st = run_cmd(cmd, out, sizeof out);
    CHECK_EQ(st, 0);
    if (st != 0) fprintf(stderr, "bench (loop driver): %s\n", out);
}

/* ---- route ---- */

#define ROUTE_KEYS_MAX 10000

static void model_key(int i, char *k, size_t cap) {
    snprintf(k, cap, "key:%d", i);
}

static void model_val(int i, char *v, size_t cap) {
    snprintf(v, cap, "value-%d-%d", i, (i * 7919) % 1000);
}

/* GET callbacks check against the model. */
static atomic_int route_done, route_bad;

static void route_get_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    int i = (int)(intptr_t)ud;
    char v[64];
    model_val(i, v, sizeof v);
    if (result != 0 || reply->value_len != strlen(v) || memcmp(reply->value, v, strlen(v)) != 0)
        atomic_fetch_add(&route_bad, 1);
    atomic_fetch_add(&route_done, 1);
}

/* Every key SCAN lists on group id is one of its slots under the map
 * (epoch 1 thirds) and one of the model's; returns how many. */
static int route_scan_group(kvmux_client *c, uint16_t id) {
    int total = 0;
    uint64_t cursor = 0;
    for (int step = 0; step < 100000; step++) {
        kvmux_request r;
        memset(&r, 0, sizeof r);
        r.op = KVMUX_SCAN;
        r.cursor = cursor;
        r.count = 1000;
        kvmux_reply rep;
        int rc = kvmux_cluster_group_call(c, id, &r, &rep, 5000);
        CHECK_EQ(rc, 0);
        if (rc != 0) return -1;
        size_t off = 0;
        const uint8_t *k;
        size_t kl;
        while (kvmux_scan_next(rep.value, rep.value_len, &off, &k, &kl)) {
            uint16_t s = kvmux_slot(k, kl);
            uint16_t owner = s <= 5460 ? 1 : s <= 10922 ? 2 : 3;
            if (owner != id) CHECK_EQ(owner, id);
            total++;
        }
        cursor = rep.version;
        kvmux_reply_free(&rep);
        if (cursor == 0) break;
    }
    return total;
}

/* Each op once through the handle, on keys of the three groups. */
static void route_ops(kvmux_client *c) {
    int from = 0;
    char k[32];
    for (int g = 0; g < 3; g++) {
        cluster_key_in(g * 5461, g == 2 ? 16383 : g * 5461 + 5460, &from, k, sizeof k);
        uint64_t v1 = 0, v2 = 0;
        int64_t n = 0;
        CHECK_EQ(kvmux_set(c, k, strlen(k), "1", 1, 0, &v1, -1), 0);
        CHECK_EQ(kvmux_incr(c, k, strlen(k), 41, &n, -1), 0);
        CHECK_EQ(n, 42);
        CHECK_EQ(kvmux_exists(c, k, strlen(k), &v2, -1), 0);
        CHECK(v2 > v1);
        CHECK_EQ(kvmux_cas(c, k, strlen(k), v1, "x", 1, 0, NULL, -1), KVMUX_EVERSION);
        CHECK_EQ(kvmux_cas(c, k, strlen(k), v2, "x", 1, 0, &v1, -1), 0);
        CHECK_EQ(kvmux_expire(c, k, strlen(k), 100000, NULL, -1), 0);
        int64_t ttl = 0;
        CHECK_EQ(kvmux_ttl(c, k, strlen(k), &ttl, -1), 0);
        CHECK(ttl > 0 && ttl <= 100000);
        CHECK_EQ(kvmux_persist(c, k, strlen(k), &v2, -1), 0);
        kvmux_value *val = NULL;
        CHECK_EQ(kvmux_wait(c, k, strlen(k), 1, 1000, &val, -1), 0); /* version != 1 */
        CHECK(val && val->len == 1 && val->data[0] == 'x');
        kvmux_value_free(val);
        CHECK_EQ(kvmux_del(c, k, strlen(k), -1), 0);
        CHECK_EQ(kvmux_get(c, k, strlen(k), &val, -1), KVMUX_ENOTFOUND);
    }
    /* A big value (fragmented) through the handle. */
    size_t big = (size_t)3 << 20;
    uint8_t *bv = test_pattern(big, 7);
    cluster_key_in(10923, 16383, &from, k, sizeof k);
    CHECK_EQ(kvmux_set(c, k, strlen(k), bv, big, 0, NULL, 10000), 0);
    kvmux_value *val = NULL;
    CHECK_EQ(kvmux_get(c, k, strlen(k), &val, 10000), 0);
    CHECK(val && val->len == big && memcmp(val->data, bv, big) == 0);
    kvmux_value_free(val);
    free(bv);
}

static void scenario_route(void) {
    static rgroup g[3];
    static const int members[3] = {3, 1, 1};
    groups_start(g, 3, members);
    REQUIRE(assign(g, 3, 1, "slots 0-5460 1\nslots 5461-10922 2\nslots 10923-16383 3\n") == 0);

    /* Connect failures: nothing listening; a node that is not a cluster
     * node (a plain kvmuxd). */
    kvmux_client *c = NULL;
    char msg[512];
    CHECK_EQ(cluster_open(&c, "127.0.0.1:1", 5000), KVMUX_ECLUSTERMAP);
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "no usable slot map") != NULL);
    test_server plain;
    REQUIRE(test_server_start(&plain, NULL) == 0);
    char seeds[512];
    snprintf(seeds, sizeof seeds, "127.0.0.1:%u", plain.port);
    CHECK_EQ(cluster_open(&c, seeds, 5000), KVMUX_ECLUSTERMAP);
    /* The seeds are tried in order: a bad one first is fine. */
    snprintf(seeds, sizeof seeds, "127.0.0.1:%u,127.0.0.1:%u", plain.port, g[1].cport[0]);
    REQUIRE(cluster_open(&c, seeds, 5000) == 0);
    test_server_stop(&plain, 5000);

    kvmux_cluster_info s = cstats(c);
    CHECK_EQ(s.epoch, 1);
    CHECK_EQ(s.seed_group, 2);
    CHECK_EQ(s.subclients, 0); /* made lazily */
    uint16_t ids[8];
    size_t n = 0;
    CHECK_EQ(kvmux_cluster_groups(c, ids, 8, &n), 0);
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 2 && ids[2] == 3);

    int nkeys = (int)(ROUTE_KEYS_MAX * test_scale());
    if (nkeys < 600) nkeys = 600;
    char k[32], v[64];
    /* The first tenth blocking, the rest through futures, 128 at a time. */
    int i = 0;
    for (; i < nkeys / 10; i++) {
        model_key(i, k, sizeof k);
        model_val(i, v, sizeof v);
        CHECK_EQ(kvmux_set(c, k, strlen(k), v, strlen(v), 0, NULL, 5000), 0);
    }
    static kvmux_future *fs[128];
    while (i < nkeys) {
        int b = 0;
        for (; b < 128 && i < nkeys; b++, i++) {
            model_key(i, k, sizeof k);
            model_val(i, v, sizeof v);
            kvmux_request r;
            memset(&r, 0, sizeof r);
            r.op = KVMUX_SET;
            r.key = k;
            r.key_len = strlen(k);
            r.value = v;
            r.value_len = strlen(v);
            REQUIRE(kvmux_call_future(c, &r, 10000, &fs[b]) == 0);
        }
        for (int j = 0; j < b; j++) {
            CHECK_EQ(kvmux_future_wait(fs[j], -1), 0);
            CHECK_EQ(kvmux_future_result(fs[j], NULL), 0);
            kvmux_future_free(fs[j]);
        }
    }
    /* Read back: callbacks, 256 in flight; a sample blocking. */
    for (i = 0; i < nkeys; i++) {
        while (i - atomic_load(&route_done) >= 256) test_sleep_ms(1);
        model_key(i, k, sizeof k);
        kvmux_request r;
        memset(&r, 0, sizeof r);
        r.op = KVMUX_GET;
        r.key = k;
        r.key_len = strlen(k);
        REQUIRE(kvmux_call_async(c, &r, 10000, route_get_cb, (void *)(intptr_t)i) == 0);
    }
    for (int w = 0; w < 30000 && atomic_load(&route_done) < nkeys; w++) test_sleep_ms(1);
    CHECK_EQ(atomic_load(&route_done), nkeys);
    CHECK_EQ(atomic_load(&route_bad), 0);
    for (i = 0; i < nkeys; i += 97) {
        model_key(i, k, sizeof k);
        model_val(i, v, sizeof v);
        kvmux_value *val = NULL;
        CHECK_EQ(kvmux_get(c, k, strlen(k), &val, 5000), 0);
        CHECK(val && val->len == strlen(v) && memcmp(val->data, v, val->len) == 0);
        kvmux_value_free(val);
    }
    /* Each key on its own group, asked directly (SCAN on each group). */
    int total = 0;
    for (uint16_t id = 1; id <= 3; id++) {
        int t = route_scan_group(c, id);
        CHECK(t > nkeys / 5); /* about a third each */
        total += t;
    }
    CHECK_EQ(total, nkeys);
    s = cstats(c);
    CHECK_EQ(s.subclients, 3);
    CHECK_EQ(s.redirects, 0);
    CHECK_EQ(s.refreshes, 0);

    /* Keyless: the seed's group. */
    CHECK_EQ(kvmux_ping(c, 5000), 0);
    kvmux_value *st = NULL;
    CHECK_EQ(kvmux_stats(c, "cluster_group", &st, 5000), 0);
    CHECK(st && strstr((char *)st->data, "cluster_group:2") != NULL);
    kvmux_value_free(st);
    kvmux_request pr;
    memset(&pr, 0, sizeof pr);
    pr.op = KVMUX_PING;
    CHECK_EQ(kvmux_cluster_group_call(c, 3, &pr, NULL, 5000), 0);
    CHECK_EQ(kvmux_cluster_group_call(c, 9, &pr, NULL, 5000), KVMUX_ENOTFOUND);
    route_tools(g, nkeys);
    route_ops(c);
    /* Bad arguments are refused before routing. */
    CHECK_EQ(kvmux_get(c, "", 0, NULL, 1000), KVMUX_EINVAL);
    kvmux_close(c);
    for (int j = 0; j < 3; j++) rgroup_stop(&g[j]);
}

/* ---- reassign ---- */

#define RA_THREADS 8
#define RA_DEPTH 32
#define RA_MAX (1 << 21)

static atomic_uchar ra_done[RA_MAX];
static atomic_int ra_next, ra_bad, ra_stop;
static atomic_int ra_inflight[RA_THREADS];
static kvmux_client *ra_c;

static void ra_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)reply;
    uintptr_t x = (uintptr_t)ud;
    int idx = (int)(x >> 4), t = (int)(x & 15);
    if (result != 0 && result != KVMUX_ENOTFOUND) {
        if (atomic_fetch_add(&ra_bad, 1) < 5)
            fprintf(stderr, "reassign: request %d: %s\n", idx, kvmux_strerror(result));
    }
    atomic_fetch_add(&ra_done[idx], 1);
    atomic_fetch_sub(&ra_inflight[t], 1);
}

static void *ra_thread(void *arg) {
    int t = (int)(intptr_t)arg;
    uint32_t seed = 12345u + (uint32_t)t;
    char k[32];
    while (!atomic_load(&ra_stop)) {
        if (atomic_load(&ra_inflight[t]) >= RA_DEPTH) {
            usleep(200);
            continue;
        }
        int idx = atomic_fetch_add(&ra_next, 1);
        if (idx >= RA_MAX) break;
        seed = seed * 1103515245u + 12345u;
        snprintf(k, sizeof k, "ra:%u", (seed >> 8) % 4000);
        kvmux_request r;
        memset(&r, 0, sizeof r);
        r.op = (seed >> 4) & 1 ? KVMUX_SET : KVMUX_GET;
        r.key = k;
        r.key_len = strlen(k);
        r.value = "v";
        r.value_len = 1;
        atomic_fetch_add(&ra_inflight[t], 1);
        int rc = kvmux_call_async(ra_c, &r, 10000, ra_cb,
                                  (void *)(((uintptr_t)idx << 4) | (uintptr_t)t));
        if (rc != 0) {
            /* Never submitted: it must never complete. */
            atomic_fetch_sub(&ra_inflight[t], 1);
            atomic_fetch_add(&ra_done[idx], 100);
            if (rc != KVMUX_EAGAIN) atomic_fetch_add(&ra_bad, 1);
        }
    }
    return NULL;
}

static void scenario_reassign(void) {
    static rgroup g[3];
    static const int members[3] = {1, 1, 1};
    groups_start(g, 3, members);
    REQUIRE(assign(g, 3, 1, "slots 0-5460 1\nslots 5461-10922 2\nslots 10923-16383 3\n") == 0);
    char seed[64];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[0].cport[0]);
    REQUIRE(cluster_open(&ra_c, seed, 10000) == 0);
    pthread_t th[RA_THREADS];
    for (int t = 0; t < RA_THREADS; t++)
        REQUIRE(pthread_create(&th[t], NULL, ra_thread, (void *)(intptr_t)t) == 0);
    /* Rotate the thirds, then move single ranges: 3 epoch changes. */
    static const char *const maps[] = {
        "slots 0-5460 2\nslots 5461-10922 3\nslots 10923-16383 1\n",
        "slots 0-5460 3\nslots 5461-10922 1\nslots 10923-16383 2\n",
        "slots 0-8000 1\nslots 8001-12000 2\nslots 12001-16383 3\n",
    };
    for (int e = 0; e < 3; e++) {
        test_sleep_ms(400);
        CHECK_EQ(assign(g, 3, (uint64_t)e + 2, maps[e]), 0);
    }
    test_sleep_ms(400);
    atomic_store(&ra_stop, 1);
    for (int t = 0; t < RA_THREADS; t++) pthread_join(th[t], NULL);
    for (int w = 0; w < 15000; w++) {
        int busy = 0;
        for (int t = 0; t < RA_THREADS; t++) busy += atomic_load(&ra_inflight[t]);
        if (busy == 0) break;
        test_sleep_ms(1);
    }
    kvmux_cluster_info s = cstats(ra_c);
    kvmux_close(ra_c);
    int n = atomic_load(&ra_next);
    if (n > RA_MAX) n = RA_MAX;
    int once = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        int d = atomic_load(&ra_done[i]);
        if (d == 1 || d == 100) once++;
        else if (bad++ < 5) fprintf(stderr, "request %d completed %d times\n", i, d);
    }
    fprintf(stderr, "reassign: %d requests, %llu redirects, %llu stale, %llu refreshes, "
                    "epoch %llu\n", n, (unsigned long long)s.redirects,
            (unsigned long long)s.stale, (unsigned long long)s.refreshes,
            (unsigned long long)s.epoch);
    CHECK(n > 1000);
    CHECK_EQ(once, n);
    CHECK_EQ(atomic_load(&ra_bad), 0);
    CHECK(s.redirects > 0);
    /* One refresh per epoch change seen (3), plus a small slack: never a
     * storm however many requests were redirected. */
    CHECK(s.refreshes >= 1 && s.refreshes <= 3 + 2);
    CHECK(s.epoch >= 2);
    for (int j = 0; j < 3; j++) rgroup_stop(&g[j]);
}

/* ---- faults ---- */

static atomic_int fl_calls, fl_result;
static _Atomic int64_t fl_at; /* when the last fl_cb ran (test_now_ms) */

static void fl_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)reply;
    (void)ud;
    atomic_store(&fl_result, result);
    atomic_store(&fl_at, test_now_ms());
    atomic_fetch_add(&fl_calls, 1);
}

static int fl_wait_calls(int n, int ms) {
    for (int w = 0; w < ms && atomic_load(&fl_calls) < n; w++) test_sleep_ms(1);
    return atomic_load(&fl_calls);
}

/* A redirect loop: group 1 says group 2 serves the upper half, group 2
 * says group 1 does. */
static void faults_loop(const rgroup *g, const char *lines) {
    char text[2048];
    snprintf(text, sizeof text, "epoch 5\n%sslots 0-8191 1\nslots 8192-16383 2\n", lines);
    CHECK_EQ(setmap(g[0].cport[0], text), 0);
    snprintf(text, sizeof text, "epoch 5\n%sslots 0-8191 2\nslots 8192-16383 1\n", lines);
    CHECK_EQ(setmap(g[1].cport[0], text), 0);
    char seed[64], k[32];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[0].cport[0]);
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, seed, 3000) == 0);
    int from = 0;
    cluster_key_in(0, 8191, &from, k, sizeof k);
    CHECK_EQ(kvmux_set(c, k, strlen(k), "v", 1, 0, NULL, 3000), 0); /* group 1 agrees */
    cluster_key_in(8192, 16383, &from, k, sizeof k);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_set(c, k, strlen(k), "v", 1, 0, NULL, 3000), KVMUX_EREDIRECTS);
    CHECK(test_now_ms() - t0 < 3000);
    kvmux_cluster_info s = cstats(c);
    CHECK_EQ(s.redirects, 6); /* 5 followed, the 6th refused */
    CHECK_EQ(s.refreshes, 0); /* epoch 5 everywhere: nothing newer */
    /* Async and futures end the same way, once. */
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = k;
    r.key_len = strlen(k);
    atomic_store(&fl_calls, 0);
    CHECK_EQ(kvmux_call_async(c, &r, 3000, fl_cb, NULL), 0);
    CHECK_EQ(fl_wait_calls(1, 5000), 1);
    CHECK_EQ(atomic_load(&fl_result), KVMUX_EREDIRECTS);
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &r, 3000, &f), 0);
    CHECK_EQ(kvmux_future_wait(f, -1), 0);
    CHECK_EQ(kvmux_future_result(f, NULL), KVMUX_EREDIRECTS);
    kvmux_future_free(f);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&fl_calls), 1);
    kvmux_close(c);
}

/* A threaded cluster handle seeded with group 2, a key of group 3's slots
 * in k, and group 3's sub-client made first (a PING: keyless, served
 * without a map): on a loaded machine its connect could take much of the
 * deadline of the TRY_AGAIN rounds that follow. */
static kvmux_client *open_on_group3(const rgroup *g, char *k, size_t cap) {
    char seed[64];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[1].cport[0]);
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, seed, 3000) == 0);
    int from = 0;
    cluster_key_in(10923, 16383, &from, k, cap);
    kvmux_request ping;
    memset(&ping, 0, sizeof ping);
    ping.op = KVMUX_PING;
    CHECK_EQ(kvmux_cluster_group_call(c, 3, &ping, NULL, 10000), 0);
    return c;
}

static void faults_backoff_late(const rgroup *g);
static void faults_backoff_late_blocking(const rgroup *g);

/* Group 3 has no map: TRY_AGAIN until the deadline; cancels of parked
 * requests; success once its map is installed. */
static void faults_try_again(const rgroup *g, const char *lines) {
    char text[2048], k[32];
    snprintf(text, sizeof text,
             "epoch 6\n%sslots 0-5460 1\nslots 5461-10922 2\nslots 10923-16383 3\n", lines);
    CHECK_EQ(setmap(g[0].cport[0], text), 0);
    CHECK_EQ(setmap(g[1].cport[0], text), 0);
    kvmux_client *c = open_on_group3(g, k, sizeof k);
    /* 1 s: several TRY_AGAIN rounds even on a loaded machine. A backoff
     * that overruns the deadline (the sleep came back late) still ends
     * KVMUX_ETRYAGAIN: nothing was in flight. One case is a real timeout:
     * the last retry sent with little time left and its answer later
     * than the deadline (the group may have had a map by then: the
     * outcome is unknown). A loaded machine can do that; not three times
     * in a row (never before the deadline). */
    int rc = KVMUX_ETIMEDOUT;
    int64_t t0 = 0, took = 0;
    for (int a = 0; a < 3 && rc == KVMUX_ETIMEDOUT; a++) {
        t0 = test_now_ms();
        rc = kvmux_set(c, k, strlen(k), "v", 1, 0, NULL, 1000);
        took = test_now_ms() - t0;
        if (rc == KVMUX_ETIMEDOUT) {
            fprintf(stderr, "TRY_AGAIN: the last retry unanswered at the deadline (%lld ms)\n",
                    (long long)took);
            CHECK(took >= 1000 - 1); /* a timeout is never early */
        }
    }
    CHECK_EQ(rc, KVMUX_ETRYAGAIN);
    CHECK(took >= 500 && took <= 1000 + 1500); /* slack for a loaded CI machine */
    CHECK(cstats(c).try_agains >= 3);
    faults_backoff_late(g);
    faults_backoff_late_blocking(g);

    /* Cancel a parked request (callback), a pending future, and free one. */
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_SET;
    r.key = k;
    r.key_len = strlen(k);
    r.value = "w";
    r.value_len = 1;
    kvmux_handle h = 0;
    atomic_store(&fl_calls, 0);
    CHECK_EQ(kvmux_call_async_handle(c, &r, 5000, fl_cb, NULL, &h), 0);
    test_sleep_ms(30);
    CHECK_EQ(kvmux_cancel(c, h), 0);
    CHECK_EQ(fl_wait_calls(1, 2000), 1);
    CHECK_EQ(atomic_load(&fl_result), KVMUX_ECANCELED);
    CHECK_EQ(kvmux_cancel(c, h), KVMUX_ENOTFOUND);
    kvmux_future *f = NULL, *f2 = NULL;
    CHECK_EQ(kvmux_call_future(c, &r, 5000, &f), 0);
    CHECK_EQ(kvmux_call_future(c, &r, 5000, &f2), 0);
    test_sleep_ms(30);
    CHECK_EQ(kvmux_future_poll(f), 0);
    CHECK_EQ(kvmux_future_cancel(f), 0);
    CHECK_EQ(kvmux_future_wait(f, 0), 0);
    CHECK_EQ(kvmux_future_result(f, NULL), KVMUX_ECANCELED);
    kvmux_future_free(f);
    kvmux_future_free(f2); /* pending: cancelled by the free */

    /* In flight while group 3 gets its map: it succeeds, same deadline. */
    CHECK_EQ(kvmux_call_future(c, &r, 5000, &f), 0);
    test_sleep_ms(100);
    CHECK_EQ(setmap(g[2].cport[0], text), 0);
    CHECK_EQ(kvmux_future_wait(f, -1), 0);
    CHECK_EQ(kvmux_future_result(f, NULL), 0);
    kvmux_future_free(f);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, k, strlen(k), &v, 3000), 0);
    CHECK(v && v->len == 1 && v->data[0] == 'w');
    kvmux_value_free(v);
    CHECK_EQ(fl_wait_calls(2, 100), 1); /* the cancelled callback ran once */

    /* Cancel a request a sub-client holds: a WAIT parked on the server. */
    memset(&r, 0, sizeof r);
    r.op = KVMUX_WAIT;
    r.key = k;
    r.key_len = strlen(k);
    r.version = 1; /* not its version: WAIT would return at once */
    CHECK_EQ(kvmux_exists(c, k, strlen(k), &r.version, 3000), 0);
    r.wait_ms = 5000;
    atomic_store(&fl_calls, 0);
    CHECK_EQ(kvmux_call_async_handle(c, &r, -1, fl_cb, NULL, &h), 0);
    test_sleep_ms(50);
    CHECK_EQ(kvmux_cancel(c, h), 0);
    CHECK_EQ(fl_wait_calls(1, 2000), 1);
    CHECK_EQ(atomic_load(&fl_result), KVMUX_ECANCELED);
    CHECK_EQ(kvmux_cancel(c, h), KVMUX_ENOTFOUND); /* once */
    CHECK_EQ(fl_wait_calls(2, 100), 1); /* its callback ran once */
    kvmux_close(c);
}

/* A deadline that passes while a request waits out a TRY_AGAIN backoff
 * ends KVMUX_ETRYAGAIN, not KVMUX_ETIMEDOUT: nothing was in flight. On a
 * loaded machine the retry's wakeup comes late; here, deterministically,
 * an event-loop handle driven by hand (poll on its fd, no adapter) whose
 * loop stops right after the first TRY_AGAIN is read (the request is
 * then parked for its backoff) and runs again past the deadline. Group 3
 * has no map yet. */
static int64_t bo_timer_at = -1;
static int bo_done, bo_result;

static void bo_nop(void *data) {
    (void)data;
}

static void bo_timer(void *data, int64_t ms) {
    (void)data;
    bo_timer_at = ms < 0 ? -1 : test_now_ms() + ms;
}

static void bo_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)reply;
    (void)ud;
    bo_done++;
    bo_result = result;
}

/* The handle's timer, if it is due. */
static void bo_timers(kvmux_client *c) {
    if (bo_timer_at >= 0 && test_now_ms() >= bo_timer_at) {
        bo_timer_at = -1;
        kvmux_async_handle_timeout(c);
    }
}

static void faults_backoff_late(const rgroup *g) {
    char seed[64], k[32];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[1].cport[0]);
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seed;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, NULL, 0, &o) == 0);
    kvmux_async_hooks h = {.add_read = bo_nop, .del_read = bo_nop, .add_write = bo_nop,
                           .del_write = bo_nop, .schedule_timer = bo_timer};
    bo_timer_at = -1;
    REQUIRE(kvmux_async_attach(c, &h) == 0);
    int from = 0;
    cluster_key_in(10923, 16383, &from, k, sizeof k);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = k;
    r.key_len = strlen(k);
    bo_done = 0;
    /* 1.5 s: room for group 3's connect on a loaded machine. */
    const int tmo = 1500;
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_call_async(c, &r, tmo, bo_cb, NULL), 0);
    int fd = kvmux_async_fd(c);
    for (int i = 0; i < 5000 && !bo_done && cstats(c).try_agains == 0; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2) > 0) kvmux_async_handle_read(c);
        if (cstats(c).try_agains == 0) bo_timers(c); /* else: parked, stop */
    }
    CHECK(cstats(c).try_agains >= 1);
    /* The loop stands still past the deadline: the retry time and the
     * deadline both pass. */
    while (test_now_ms() < t0 + tmo + 100) test_sleep_ms(10);
    kvmux_async_handle_timeout(c);
    for (int i = 0; i < 1000 && !bo_done; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2) > 0) kvmux_async_handle_read(c);
        bo_timers(c);
    }
    CHECK_EQ(bo_done, 1);
    CHECK_EQ(bo_result, KVMUX_ETRYAGAIN);
    kvmux_close(c);
}

/* The same for a blocking call, whose backoff is a sleep in the caller's
 * thread. A loaded machine wakes it late; here the main thread waits
 * until the caller is in that sleep (its syscall, read from /proc, is
 * clock_nanosleep or nanosleep, after a few TRY_AGAIN rounds: backoffs
 * of 8 ms and more) and sends it a signal whose handler sleeps until
 * past the deadline. Nothing is in flight during a backoff, so the call
 * must end KVMUX_ETRYAGAIN (it ended KVMUX_ETIMEDOUT before the fix). */
static atomic_llong bl_until; /* test_now_ms() the handler sleeps to */
static atomic_int bl_tid, bl_rc;
static kvmux_client *bl_c;
static char bl_key[32];

static void bl_handler(int sig) {
    (void)sig;
    long long left; /* test_now_ms is clock_gettime only: async-signal-safe */
    while ((left = atomic_load(&bl_until) - test_now_ms()) > 0) {
        struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* async-signal-safe */
    }
}

static void *bl_caller(void *arg) {
    int tmo = *(const int *)arg;
    atomic_store(&bl_tid, (int)syscall(SYS_gettid));
    atomic_store(&bl_rc, kvmux_set(bl_c, bl_key, strlen(bl_key), "v", 1, 0, NULL, tmo));
    return NULL;
}

/* 1 if thread tid of this process is in a sleep syscall now. */
static int bl_in_sleep(int tid) {
    char path[64], line[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    long nr = ok ? strtol(line, NULL, 10) : -1;
#ifdef SYS_nanosleep /* not on every architecture (arm64 has only the clock_ one) */
    if (nr == SYS_nanosleep) return 1;
#endif
    return nr == SYS_clock_nanosleep;
}

static void faults_backoff_late_blocking(const rgroup *g) {
    bl_c = open_on_group3(g, bl_key, sizeof bl_key);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = bl_handler;
    sigemptyset(&sa.sa_mask);
    struct sigaction old;
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    atomic_store(&bl_tid, 0);
    atomic_store(&bl_rc, 1);
    static int tmo = 3000;
    long long t0 = test_now_ms();
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, bl_caller, &tmo) == 0);
    /* Bounded: 3 TRY_AGAIN rounds take ~15 ms; then catch it asleep. */
    int asleep = 0;
    for (int i = 0; i < 20000 && !asleep && test_now_ms() < t0 + tmo - 500; i++) {
        int tid = atomic_load(&bl_tid);
        asleep = tid && cstats(bl_c).try_agains >= 3 && bl_in_sleep(tid);
        if (!asleep) usleep(100);
    }
    CHECK(asleep);
    if (asleep) {
        atomic_store(&bl_until, t0 + tmo + 200);
        pthread_kill(t, SIGUSR1);
    }
    pthread_join(t, NULL);
    long long took = test_now_ms() - t0;
    printf("cluster_client_test: blocking call stopped in its backoff past its %d ms "
           "deadline: %s after %lld ms\n", tmo, kvmux_strerror(atomic_load(&bl_rc)), took);
    if (asleep) {
        CHECK_EQ(atomic_load(&bl_rc), KVMUX_ETRYAGAIN);
        CHECK(took >= tmo);
    }
    sigaction(SIGUSR1, &old, NULL);
    kvmux_close(bl_c);
    bl_c = NULL;
}

/* An unassigned slot: KVMUX_EWRONGSHARD at once (group 0 named by the
 * seed's group, which the router asks for a slot its map leaves
 * unassigned). */
static void faults_unassigned(const rgroup *g, const char *lines) {
    char text[2048], seed[64], k[32];
    snprintf(text, sizeof text,
             "epoch 7\n%sslots 0-5460 1\nslots 5461-10922 2\nslots 10923-15999 3\n", lines);
    for (int i = 0; i < 3; i++) CHECK_EQ(setmap(g[i].cport[0], text), 0);
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[2].cport[0]);
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, seed, 3000) == 0);
    int from = 0;
    cluster_key_in(16000, 16383, &from, k, sizeof k);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_set(c, k, strlen(k), "v", 1, 0, NULL, 3000), KVMUX_EWRONGSHARD);
    CHECK(test_now_ms() - t0 < 3000);
    kvmux_cluster_info s = cstats(c);
    CHECK_EQ(s.redirects, 0);
    CHECK_EQ(s.epoch, 7);
    cluster_key_in(10923, 15999, &from, k, sizeof k);
    CHECK_EQ(kvmux_set(c, k, strlen(k), "v", 1, 0, NULL, 3000), 0);
    kvmux_close(c);
}

/* A request redirected by a newer map (the handle still has epoch 7),
 * then cancelled where it waits (a WAIT parked on its new group): one
 * completion, KVMUX_ECANCELED; a future likewise; one refresh. */
static void faults_redirected_cancel(const rgroup *g, const char *lines) {
    char seed[64], text[2048], k1[32], k2[32];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[0].cport[0]);
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, seed, 5000) == 0);
    CHECK_EQ(cstats(c).epoch, 7);
    int from = 0;
    cluster_key_in(0, 5460, &from, k1, sizeof k1);
    cluster_key_in(0, 5460, &from, k2, sizeof k2);
    CHECK_EQ(kvmux_set(c, k1, strlen(k1), "a", 1, 0, NULL, 3000), 0); /* group 1 */
    /* Epoch 8 gives group 1's slots to group 2 (static: k1 stays in 1). */
    snprintf(text, sizeof text,
             "epoch 8\n%sslots 0-10922 2\nslots 10923-15999 3\n", lines);
    for (int i = 0; i < 3; i++) CHECK_EQ(setmap(g[i].cport[0], text), 0);
    /* The first request after the push: a WAIT on k2 (absent: it parks
     * while absent), sent to group 1, redirected to group 2, parked
     * there, then cancelled. */
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_WAIT;
    r.key = k2;
    r.key_len = strlen(k2);
    r.version = 0;
    r.wait_ms = 5000;
    kvmux_handle h = 0;
    atomic_store(&fl_calls, 0);
    CHECK_EQ(kvmux_call_async_handle(c, &r, -1, fl_cb, NULL, &h), 0);
    kvmux_cluster_info s = cstats(c);
    for (int w = 0; w < 2000 && s.redirects == 0; w++) {
        test_sleep_ms(1);
        s = cstats(c);
    }
    CHECK_EQ(s.redirects, 1);
    test_sleep_ms(50); /* parked on group 2 by now */
    CHECK_EQ(kvmux_cancel(c, h), 0);
    CHECK_EQ(fl_wait_calls(1, 2000), 1);
    CHECK_EQ(atomic_load(&fl_result), KVMUX_ECANCELED);
    uint64_t v = 0;
    CHECK_EQ(kvmux_set(c, k2, strlen(k2), "b", 1, 0, &v, 3000), 0);
    r.key = k2;
    r.key_len = strlen(k2);
    r.version = v; /* its current version: parks */
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &r, -1, &f), 0);
    test_sleep_ms(100);
    CHECK_EQ(kvmux_future_poll(f), 0);
    CHECK_EQ(kvmux_future_cancel(f), 0);
    CHECK_EQ(kvmux_future_result(f, NULL), KVMUX_ECANCELED);
    kvmux_future_free(f);
    s = cstats(c);
    for (int w = 0; w < 2000 && s.epoch != 8; w++) {
        test_sleep_ms(1);
        s = cstats(c);
    }
    CHECK_EQ(s.epoch, 8);
    CHECK_EQ(s.refreshes, 1);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&fl_calls), 1);
    kvmux_close(c);
}

/* kill -9 group 3: its requests fail within their deadline, the others
 * are served; kvmux_close with requests outstanding completes them. */
static void faults_kill(rgroup *g) {
    char seed[64], k1[32], k3[32];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[0].cport[0]);
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, seed, 3000) == 0);
    int from = 0;
    cluster_key_in(0, 10922, &from, k1, sizeof k1);
    cluster_key_in(10923, 15999, &from, k3, sizeof k3);
    CHECK_EQ(kvmux_set(c, k3, strlen(k3), "v", 1, 0, NULL, 3000), 0);
    rgroup_kill(&g[2], 0);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = k3;
    r.key_len = strlen(k3);
    atomic_store(&fl_calls, 0);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_call_async(c, &r, 500, fl_cb, NULL), 0);
    /* Meanwhile group 1 serves (its deadline generous: a SET is a Raft
     * commit, a disk write, and one took over 2 s on a loaded machine;
     * what is checked is that each succeeds while group 3 is dead). */
    for (int i = 0; i < 50; i++) CHECK_EQ(kvmux_set(c, k1, strlen(k1), "v", 1, 0, NULL, 10000), 0);
    CHECK_EQ(fl_wait_calls(1, 3000), 1);
    CHECK(atomic_load(&fl_result) != 0);
    /* When the callback ran, not now: the 50 SETs above take their own
     * time (on a loaded machine, seconds). */
    CHECK(atomic_load(&fl_at) - t0 <= 500 + 1500);
    t0 = test_now_ms();
    kvmux_value *v = NULL;
    int rc = kvmux_get(c, k3, strlen(k3), &v, 400);
    CHECK(rc != 0 && rc != KVMUX_EINVAL && v == NULL);
    CHECK(test_now_ms() - t0 <= 400 + 1500);
    fprintf(stderr, "killed group: %s / %s\n", kvmux_strerror(atomic_load(&fl_result)),
            kvmux_strerror(rc));
    /* Requests still waiting at close complete once, KVMUX_ECLOSED. */
    atomic_store(&fl_calls, 0);
    for (int i = 0; i < 10; i++) CHECK_EQ(kvmux_call_async(c, &r, 5000, fl_cb, NULL), 0);
    kvmux_close(c);
    CHECK_EQ(atomic_load(&fl_calls), 10);
}

/* kvmux_close from one of the handle's own callbacks (threaded): the
 * close finishes after it, every other callback runs once. */
static atomic_int cb_close_calls;

static void close_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)reply;
    (void)result;
    atomic_fetch_add(&cb_close_calls, 1);
    if (ud) kvmux_close(c);
}

static void faults_close_in_callback(const rgroup *g) {
    char seed[64];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[0].cport[0]);
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, seed, 3000) == 0);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = "cb-close";
    r.key_len = 8;
    atomic_store(&cb_close_calls, 0);
    CHECK_EQ(kvmux_call_async(c, &r, 3000, close_cb, (void *)1), 0);
    for (int i = 0; i < 20; i++) CHECK_EQ(kvmux_call_async(c, &r, 3000, close_cb, NULL), 0);
    for (int w = 0; w < 5000 && atomic_load(&cb_close_calls) < 21; w++) test_sleep_ms(1);
    CHECK_EQ(atomic_load(&cb_close_calls), 21);
    test_sleep_ms(100); /* the completion thread frees the handle */
}

/* Callbacks of one handle never overlap, whichever group answers (they
 * run on the groups' completion threads, one at a time), each runs once,
 * and a callback may submit to its own handle (no lock it holds is one a
 * submit needs); then a close from a callback with other groups'
 * requests in flight. */
static atomic_int ser_inside, ser_overlap, ser_calls, ser_resubmits, ser_closes, ser_submitted;

static void serial_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)reply;
    (void)result;
    if (atomic_fetch_add(&ser_inside, 1) != 0) atomic_fetch_add(&ser_overlap, 1);
    for (volatile int i = 0; i < 2000; i++) {
    } /* widen the window another group's answer could overlap */
    if (ud == (void *)1 && atomic_load(&ser_resubmits) < 100) {
        kvmux_request r;
        memset(&r, 0, sizeof r);
        r.op = KVMUX_GET;
        r.key = "resubmit";
        r.key_len = 8;
        if (kvmux_call_async(c, &r, 3000, serial_cb, NULL) == 0)
            atomic_fetch_add(&ser_resubmits, 1);
    }
    atomic_fetch_sub(&ser_inside, 1);
    if (ud == (void *)2 && atomic_fetch_add(&ser_closes, 1) == 0) {
        /* No call may start on c after kvmux_close (kvmux.h): the close
         * waits for the submitting thread to finish -- on a loaded machine
         * the first answers come back while it is still submitting (it
         * then got KVMUX_ECLOSED, and used a handle being freed). Other
         * groups' requests are still in flight or owed meanwhile. */
        for (int w = 0; w < 20000 && !atomic_load(&ser_submitted); w++) test_sleep_ms(1);
        kvmux_close(c);
    }
    atomic_fetch_add(&ser_calls, 1);
}

static void faults_callbacks_serial(const rgroup *g, void *tag, int n) {
    char seed[64], k[32];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[0].cport[0]);
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, seed, 3000) == 0);
    atomic_store(&ser_inside, 0);
    atomic_store(&ser_overlap, 0);
    atomic_store(&ser_calls, 0);
    atomic_store(&ser_resubmits, 0);
    atomic_store(&ser_closes, 0);
    atomic_store(&ser_submitted, 0);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = k;
    int ok = 0;
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "k%d", i); /* slots all over: every group */
        r.key_len = strlen(k);
        int rc = kvmux_call_async(c, &r, 3000, serial_cb, tag);
        if (rc == 0) ok++;
        else fprintf(stderr, "callbacks serial: submit %d: %s\n", i, kvmux_strerror(rc));
    }
    atomic_store(&ser_submitted, 1);
    CHECK_EQ(ok, n);
    for (int w = 0; w < 10000 && atomic_load(&ser_calls) < ok + atomic_load(&ser_resubmits);
         w++)
        test_sleep_ms(1);
    test_sleep_ms(50); /* nothing more arrives */
    CHECK_EQ(atomic_load(&ser_calls), ok + atomic_load(&ser_resubmits));
    CHECK_EQ(atomic_load(&ser_overlap), 0);
    if (tag == (void *)2) {
        CHECK_EQ(atomic_load(&ser_closes), n);
        test_sleep_ms(100); /* the completion thread frees the handle */
    } else {
        kvmux_close(c);
    }
}

/* A callback that waits for a future of its own handle (same key, so the
 * same group: its answer is due on the group's completion thread, which
 * may be the one running the callback). The wait must end with the
 * future's answer, not its deadline; and a callback's blocking call on
 * the handle works too. Rounds one at a time, so that the callback runs
 * on a group's thread (nothing else of the handle's queued). */
static atomic_int fw_calls, fw_bad;

static void future_wait_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)reply;
    (void)ud;
    if (result != 0 && result != KVMUX_ENOTFOUND) atomic_fetch_add(&fw_bad, 1);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = "fwait";
    r.key_len = 5;
    kvmux_future *f = NULL;
    if (kvmux_call_future(c, &r, 4000, &f) != 0) {
        atomic_fetch_add(&fw_bad, 1);
    } else {
        /* Well inside the future's deadline: a stalled wait times out. */
        int rc = kvmux_future_wait(f, 2000);
        int res = rc == 0 ? kvmux_future_result(f, NULL) : rc;
        if (res != 0 && res != KVMUX_ENOTFOUND) {
            fprintf(stderr, "future wait in callback: wait %d result %d\n", rc, res);
            atomic_fetch_add(&fw_bad, 1);
        }
        kvmux_future_free(f);
    }
    kvmux_reply rep;
    int rc = kvmux_call(c, &r, &rep, 2000);
    if (rc != 0 && rc != KVMUX_ENOTFOUND) atomic_fetch_add(&fw_bad, 1);
    if (rc == 0) kvmux_reply_free(&rep);
    atomic_fetch_add(&fw_calls, 1);
}

static void faults_future_wait_in_callback(const rgroup *g) {
    char seed[64];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[0].cport[0]);
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, seed, 3000) == 0);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = "fwait";
    r.key_len = 5;
    atomic_store(&fw_calls, 0);
    atomic_store(&fw_bad, 0);
    for (int i = 0; i < 5 && atomic_load(&fw_bad) == 0; i++) {
        CHECK_EQ(kvmux_call_async(c, &r, 8000, future_wait_cb, NULL), 0);
        for (int w = 0; w < 10000 && atomic_load(&fw_calls) <= i; w++) test_sleep_ms(1);
        CHECK_EQ(atomic_load(&fw_calls), i + 1);
    }
    CHECK_EQ(atomic_load(&fw_bad), 0);
    kvmux_close(c);
}

static void scenario_faults(void) {
    static rgroup g[3];
    static const int members[3] = {1, 1, 1};
    groups_start(g, 3, members);
    char lines[1024];
    group_lines(g, 3, lines, sizeof lines);
    faults_loop(g, lines);
    faults_try_again(g, lines);
    faults_unassigned(g, lines);
    faults_redirected_cancel(g, lines);
    faults_close_in_callback(g);
    faults_future_wait_in_callback(g);
    faults_callbacks_serial(g, (void *)1, 300);
    faults_callbacks_serial(g, (void *)2, 300);
    faults_kill(g);
    for (int j = 0; j < 3; j++) rgroup_stop(&g[j]);
}

/* ---- members: a connected group's member list follows the map ---- */

#ifdef KVMUX_TEST_LIBUV
static void members_loop(rgroup *g);
#endif

/* The two maps of a members case at epochs e and e + 1, group 2 being
 * g[1]: epoch e names only group 1's leader `lead` and gives it slots
 * 0..split1-1; epoch e + 1 names only its two other members and gives it
 * 0..split2-1 (split2 < split1). The first map is installed; the second
 * is returned in next. k1 is a key group 1 keeps, k2 one that moves. */
typedef struct members_case {
    char next[512], seed[64], k1[32], k2[32];
} members_case;

static void members_setup(const rgroup *g, int lead, unsigned e, int split1, int split2,
                          members_case *mc) {
    int f1 = (lead + 1) % 3, f2 = (lead + 2) % 3;
    char first[512];
    snprintf(first, sizeof first,
             "epoch %u\ngroup 1 127.0.0.1:%u\ngroup 2 127.0.0.1:%u\n"
             "slots 0-%d 1\nslots %d-16383 2\n",
             e, g[0].cport[lead], g[1].cport[0], split1 - 1, split1);
    snprintf(mc->next, sizeof mc->next,
             "epoch %u\ngroup 1 127.0.0.1:%u 127.0.0.1:%u\ngroup 2 127.0.0.1:%u\n"
             "slots 0-%d 1\nslots %d-16383 2\n",
             e + 1, g[0].cport[f1], g[0].cport[f2], g[1].cport[0], split2 - 1, split2);
    REQUIRE(assign_text(g[1].cport[0], first) == 0);
    snprintf(mc->seed, sizeof mc->seed, "127.0.0.1:%u", g[1].cport[0]);
    int from = 0;
    cluster_key_in(0, split2 - 1, &from, mc->k1, sizeof mc->k1);
    from = 0;
    cluster_key_in(split2, split1 - 1, &from, mc->k2, sizeof mc->k2);
}

/* Group 1 has 3 members but map epoch 1 names only its leader L; epoch 2
 * names only the two others (and moves slots 4096-8191 to group 2). The
 * handle, connected to L, learns epoch 2 from a WRONG_SHARD; then L is
 * killed: group 1's requests must reach the new leader through the
 * members epoch 2 named. A handle that kept its connect-time list would
 * retry the dead L until every deadline. */
static void scenario_members(void) {
    static rgroup g[2];
    static const int members[2] = {3, 1};
    groups_start(g, 2, members);
    int lead = rgroup_stable_leader(&g[0], 30000);
    REQUIRE(lead >= 0);
    members_case mc;
    members_setup(g, lead, 1, 8192, 4096, &mc);
    const char *k1 = mc.k1, *k2 = mc.k2;
    kvmux_client *c = NULL;
    REQUIRE(cluster_open(&c, mc.seed, 3000) == 0);
    CHECK_EQ(kvmux_set(c, k1, strlen(k1), "a", 1, 0, NULL, 3000), 0);
    CHECK_EQ(kvmux_set(c, k2, strlen(k2), "a", 1, 0, NULL, 3000), 0);
    REQUIRE(assign_text(g[1].cport[0], mc.next) == 0);
    /* k2 is group 2's now: WRONG_SHARD from group 1, one refresh. */
    CHECK_EQ(kvmux_set(c, k2, strlen(k2), "b", 1, 0, NULL, 3000), 0);
    CHECK_EQ(cstats(c).epoch, 2u);
    CHECK_EQ(cstats(c).member_updates, 1u);
    rgroup_kill(&g[0], lead);
    /* The election (about a second) and the reconnect to a listed member
     * fit in the deadline. */
    int64_t t0 = test_now_ms();
    int rc = kvmux_set(c, k1, strlen(k1), "b", 1, 0, NULL, 15000);
    fprintf(stderr, "members: SET after the listed leader's kill: %s in %lld ms\n",
            kvmux_strerror(rc), (long long)(test_now_ms() - t0));
    CHECK_EQ(rc, 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, k1, strlen(k1), &v, 3000), 0);
    CHECK(v && v->len == 1 && memcmp(v->data, "b", 1) == 0);
    kvmux_value_free(v);
    kvmux_close(c);
#ifdef KVMUX_TEST_LIBUV
    REQUIRE(rgroup_start_member(&g[0], lead, 0) == 0);
    members_loop(g);

#endif
    for (int j = 0; j < 2; j++) rgroup_stop(&g[j]);
}

/* ---- loop: event-loop mode on one fd (libuv) ---- */

#ifdef KVMUX_TEST_LIBUV
static int lp_done, lp_bad, lp_last, lp_check;

static void lp_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    lp_last = result;
    const char *want = ud;
    if (result != 0 && !(want == NULL && result == KVMUX_ENOTFOUND) && lp_bad++ < 3 &&
        lp_check)
        fprintf(stderr, "loop: %s\n", kvmux_strerror(result));
    if (want && result == 0 &&
        (reply->value_len != strlen(want) || memcmp(reply->value, want, reply->value_len) != 0))
        lp_bad++;
    lp_done++;
}

/* n requests (GET if vals, else SET key=value "v") at depth 64, the loop
 * run in between; every key is "lp:<i>". */
static void lp_run(uv_loop_t *loop, kvmux_client *c, int n, int get) {
    static char keys[4096][16];
    lp_done = lp_bad = 0;
    lp_check = 1;
    int sub = 0;
    int64_t end = test_now_ms() + 30000;
    while (lp_done < n && test_now_ms() < end) {
        while (sub < n && sub - lp_done < 64) {
            snprintf(keys[sub % 4096], sizeof keys[0], "lp:%d", sub);
            kvmux_request r;
            memset(&r, 0, sizeof r);
            r.op = get ? KVMUX_GET : KVMUX_SET;
            r.key = keys[sub % 4096];
            r.key_len = strlen(r.key);
            r.value = "v";
            r.value_len = 1;
            REQUIRE(kvmux_call_async(c, &r, 10000, lp_cb, get ? (void *)"v" : NULL) == 0);
            sub++;
        }
        run_loop(loop, 5);
    }
    CHECK_EQ(lp_done, n);
    CHECK_EQ(lp_bad, 0);
    lp_check = 0;
}

static void scenario_loop(void) {
    static rgroup g[3];
    static const int members[3] = {3, 1, 1};
    groups_start(g, 3, members);
    REQUIRE(assign(g, 3, 1, "slots 0-5460 1\nslots 5461-10922 2\nslots 10923-16383 3\n") == 0);
    char seed[64];
    snprintf(seed, sizeof seed, "127.0.0.1:%u", g[1].cport[0]);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seed;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, NULL, 0, &o) == 0);
    int fd = kvmux_async_fd(c);
    CHECK(fd >= 0);
    REQUIRE(kvmux_libuv_attach(c, &loop) == 0);
    CHECK_EQ(kvmux_get(c, "x", 1, NULL, 100), KVMUX_EINVAL); /* no blocking call */

    int n = (int)(3000 * test_scale());
    if (n < 300) n = 300;
    lp_run(&loop, c, n, 0);
    lp_run(&loop, c, n, 1);
    CHECK_EQ(kvmux_async_fd(c), fd); /* one fd for every group */
    kvmux_cluster_info s = cstats(c);
    CHECK_EQ(s.subclients, 3);
    CHECK_EQ(s.redirects, 0);

    /* Each key on the group owning its slot: a threaded handle asks each
     * group (SCAN) directly. */
    kvmux_client *t = NULL;
    REQUIRE(cluster_open(&t, seed, 5000) == 0);
    int total = 0;
    for (uint16_t id = 1; id <= 3; id++) {
        int k = route_scan_group(t, id);
        CHECK(k > 0);
        total += k;
    }
    CHECK_EQ(total, n);

    /* Group 1 loses its leader: its sub-client reconnects to the next
     * one (a new socket behind the same descriptor, re-added to the
     * handle's epoll set); writes resume once a leader is elected. */
    int leader = rgroup_leader(&g[0], 5000);
    REQUIRE(leader >= 0);
    rgroup_kill(&g[0], leader);
    lp_run(&loop, c, n, 0);
    lp_run(&loop, c, n, 1);

    /* A new map (static: the data stays where it was): the writes are
     * redirected, one refresh, on the same fd; then read back. */
    CHECK_EQ(assign(g, 3, 2, "slots 0-5460 2\nslots 5461-10922 3\nslots 10923-16383 1\n"), 0);
    lp_run(&loop, c, n, 0);
    lp_run(&loop, c, n, 1);
    s = cstats(c);
    CHECK(s.redirects > 0);
    CHECK(s.refreshes >= 1 && s.refreshes <= 1 + 2);
    CHECK_EQ(s.epoch, 2);

    /* A future, polled while the loop runs; a cancelled WAIT. */
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = "lp:1";
    r.key_len = 4;
    kvmux_future *f = NULL;
    REQUIRE(kvmux_call_future(c, &r, 5000, &f) == 0);
    for (int i = 0; i < 1000 && !kvmux_future_poll(f); i++) run_loop(&loop, 5);
    CHECK_EQ(kvmux_future_result(f, NULL), 0);
    kvmux_future_free(f);
    uint64_t ver = 0;
    CHECK_EQ(kvmux_exists(t, "lp:1", 4, &ver, 3000), 0);
    r.op = KVMUX_WAIT;
    r.version = ver;
    r.wait_ms = 5000;
    kvmux_handle h = 0;
    lp_done = lp_bad = 0;
    REQUIRE(kvmux_call_async_handle(c, &r, -1, lp_cb, NULL, &h) == 0);
    run_loop(&loop, 50);
    CHECK_EQ(kvmux_cancel(c, h), 0);
    for (int i = 0; i < 200 && lp_done == 0; i++) run_loop(&loop, 5);
    CHECK_EQ(lp_done, 1);
    CHECK_EQ(lp_last, KVMUX_ECANCELED);

    /* close with requests outstanding: each completes once. */
    lp_done = 0;
    r.op = KVMUX_GET;
    for (int i = 0; i < 10; i++) REQUIRE(kvmux_call_async(c, &r, 5000, lp_cb, NULL) == 0);
    kvmux_close(c);
    CHECK_EQ(lp_done, 10);
    CHECK_EQ(lp_last, KVMUX_ECLOSED);
    run_loop(&loop, 100);

    /* A group listed by name only: the loop never resolves it; its
     * requests fail with KVMUX_ECONNECT, the other groups are served. */
    char lines[1024], text[2048];
    group_lines(g, 2, lines, sizeof lines);
    snprintf(text, sizeof text,
             "epoch 3\n%sgroup 3 localhost:%u\n"
             "slots 0-5460 1\nslots 5461-10922 2\nslots 10923-16383 3\n",
             lines, g[2].cport[0]);
    CHECK_EQ(assign_text(g[1].cport[0], text), 0);
    REQUIRE(kvmux_async_connect(&c, NULL, 0, &o) == 0);
    REQUIRE(kvmux_libuv_attach(c, &loop) == 0);
    char k[32];
    int from = 0;
    cluster_key_in(10923, 16383, &from, k, sizeof k);
    r.key = k;
    r.key_len = strlen(k);
    lp_done = 0;
    REQUIRE(kvmux_call_async(c, &r, 2000, lp_cb, NULL) == KVMUX_ECONNECT ||
            (run_loop(&loop, 50), lp_done == 1 && lp_last == KVMUX_ECONNECT));
    cluster_key_in(0, 5460, &from, k, sizeof k);
    r.key_len = strlen(k);
    lp_done = 0;
    REQUIRE(kvmux_call_async(c, &r, 2000, lp_cb, NULL) == 0);
    for (int i = 0; i < 400 && lp_done == 0; i++) run_loop(&loop, 5);
    CHECK_EQ(lp_done, 1);
    CHECK_EQ(lp_last, KVMUX_ENOTFOUND);
    kvmux_close(c);
    kvmux_close(t);
    run_loop(&loop, 100);
    CHECK_EQ(uv_loop_close(&loop), 0);
    for (int j = 0; j < 3; j++) rgroup_stop(&g[j]);
}

/* A cluster handle in event-loop mode on loop (libuv), seeded with seed. */
static kvmux_client *lp_cluster_open(uv_loop_t *loop, const char *seed) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.cluster = 1;
    o.endpoints = seed;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, NULL, 0, &o) == 0);
    REQUIRE(kvmux_libuv_attach(c, loop) == 0);
    return c;
}

/* One request through an event-loop handle, the loop run until it
 * completes (at most timeout_ms + 2 s). Returns its result. */
static int lp_one(uv_loop_t *loop, kvmux_client *c, int op, const char *key, const char *val,
                  int timeout_ms) {
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.key = key;
    r.key_len = strlen(key);
    r.value = val;
    r.value_len = val ? strlen(val) : 0;
    lp_done = 0;
    int rc = kvmux_call_async(c, &r, timeout_ms, lp_cb, NULL);
    if (rc != 0) return rc;
    for (int i = 0; i < (timeout_ms + 2000) / 5 && lp_done == 0; i++) run_loop(loop, 5);
    return lp_done == 1 ? lp_last : KVMUX_ETIMEDOUT;
}

/* scenario_members again in event-loop mode (libuv), on the same groups
 * (group 1's three members up again): epoch 3 names group 1's leader
 * only, epoch 4 the two others; the leader is killed once the handle has
 * epoch 4. */
static void members_loop(rgroup *g) {
    int lead = rgroup_stable_leader(&g[0], 30000);
    REQUIRE(lead >= 0);
    members_case mc;
    members_setup(g, lead, 3, 4096, 2048, &mc);
    const char *k1 = mc.k1, *k2 = mc.k2;
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    kvmux_client *c = lp_cluster_open(&loop, mc.seed);
    CHECK_EQ(lp_one(&loop, c, KVMUX_SET, k1, "c", 3000), 0);
    CHECK_EQ(lp_one(&loop, c, KVMUX_SET, k2, "c", 3000), 0);
    REQUIRE(assign_text(g[1].cport[0], mc.next) == 0);
    CHECK_EQ(lp_one(&loop, c, KVMUX_SET, k2, "d", 3000), 0);
    CHECK_EQ(cstats(c).epoch, 4u);
    CHECK_EQ(cstats(c).member_updates, 1u);
    rgroup_kill(&g[0], lead);
    int64_t t0 = test_now_ms();
    int rc = lp_one(&loop, c, KVMUX_SET, k1, "d", 15000);
    fprintf(stderr, "members (loop): SET after the listed leader's kill: %s in %lld ms\n",
            kvmux_strerror(rc), (long long)(test_now_ms() - t0));
    CHECK_EQ(rc, 0);
    kvmux_close(c);
    run_loop(&loop, 100);
    CHECK_EQ(uv_loop_close(&loop), 0);
}
#endif

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "route";
    if (strcmp(which, "route") == 0) scenario_route();
    else if (strcmp(which, "reassign") == 0) scenario_reassign();
    else if (strcmp(which, "faults") == 0) scenario_faults();
    else if (strcmp(which, "members") == 0) scenario_members();
#ifdef KVMUX_TEST_LIBUV
    else if (strcmp(which, "loop") == 0) scenario_loop();
#endif
    else {
        fprintf(stderr, "usage: cluster_client_test [route|reassign|faults|members|loop]\n");
        return 2;
    }
    return test_report();
}
