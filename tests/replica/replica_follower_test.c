/* replica_follower_test: a 3-member group of real kvmuxd processes.
 *  - a follower answers NOT_LEADER with the leader's client address to a
 *    v3 client and SHUTTING_DOWN to a v2 client, without processing;
 *  - a single node (no --replica-id) still offers protocol 2 at most;
 *  - writes on the leader reach every replica (same applied index, same
 *    store digest), and reads on the leader see them;
 *  - a restart of the whole group recovers from snapshot + log;
 *  - --aof, or --maxmemory-policy allkeys-lru, with --replica-id exits 2. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

/* One raw request on a fresh connection negotiating up to max_version.
 * Returns the response status (value copied into val), or -1. */
static int raw_request(uint16_t port, int max_version, uint8_t op, const char *key,
                       char *val, size_t vcap, int *negotiated) {
    int fd = test_connect_raw(port, 3000);
    if (fd < 0) return -1;
    int rc = -1;
    int v = test_raw_handshake_version(fd, max_version);
    if (negotiated) *negotiated = v;
    uint8_t in[8192];
    kvmux_frame f;
    if (v > 0 && test_send_request(fd, (uint8_t)v, 7, op, NULL, 0, key, NULL, 0) == 0 &&
        test_read_frame(fd, in, sizeof in, &f) > 0 && f.type == KVMUX_FRAME_RESPONSE &&
        f.request_id == 7) {
        rc = f.code;
        if (val && vcap) {
            size_t n = f.value_len < vcap - 1 ? f.value_len : vcap - 1;
            memcpy(val, f.value, n);
            val[n] = '\0';
        }
    }
    close(fd);
    return rc;
}

static kvmux_client *connect_to(uint16_t port) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.request_timeout_ms = 10000;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, "127.0.0.1", port, &o) != 0) return NULL;
    return c;
}

static void check_refusals(rgroup *g, int leader) {
    int f = (leader + 1) % g->n;
    char val[256], want[64];
    int neg = 0;
    snprintf(want, sizeof want, "127.0.0.1:%u", g->cport[leader]);
    int st = raw_request(g->cport[f], 3, KVMUX_OP_GET, "k", val, sizeof val, &neg);
    CHECK_EQ(neg, 3);
    CHECK_EQ(st, KVMUX_STATUS_NOT_LEADER);
    CHECK(strcmp(val, want) == 0);
    if (strcmp(val, want) != 0) fprintf(stderr, "NOT_LEADER value '%s', want '%s'\n", val, want);
    st = raw_request(g->cport[f], 3, KVMUX_OP_DEL, "k", val, sizeof val, &neg);
    CHECK_EQ(st, KVMUX_STATUS_NOT_LEADER);
    st = raw_request(g->cport[f], 2, KVMUX_OP_GET, "k", val, sizeof val, &neg);
    CHECK_EQ(neg, 2);
    CHECK_EQ(st, KVMUX_STATUS_SHUTTING_DOWN);
    st = raw_request(g->cport[f], 1, KVMUX_OP_DEL, "k", val, sizeof val, &neg);
    CHECK_EQ(neg, 1);
    CHECK_EQ(st, KVMUX_STATUS_SHUTTING_DOWN);
    /* STATS is answered locally by every replica. */
    st = raw_request(g->cport[f], 3, KVMUX_OP_STATS, NULL, NULL, 0, &neg);
    CHECK_EQ(st, KVMUX_STATUS_OK);
    /* The leader speaks v3 too, and a read there is served. */
    st = raw_request(g->cport[leader], 3, KVMUX_OP_GET, "absent", val, sizeof val, &neg);
    CHECK_EQ(neg, 3);
    CHECK_EQ(st, KVMUX_STATUS_NOT_FOUND);
    /* The client library maps NOT_LEADER to KVMUX_ENOTLEADER. */
    kvmux_client *c = connect_to(g->cport[f]);
    REQUIRE(c != NULL);
    CHECK_EQ(kvmux_set(c, "x", 1, "1", 1, 0, NULL, 5000), KVMUX_ENOTLEADER);
    kvmux_close(c);
}

/* n writes on the leader: key kI = vI, and counter ctr += 1 each. */
static void write_some(uint16_t port, int from, int n) {
    kvmux_client *c = connect_to(port);
    REQUIRE(c != NULL);
    for (int i = from; i < from + n; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        CHECK_EQ(kvmux_set(c, k, strlen(k), v, strlen(v), 0, NULL, 10000), 0);
        int64_t nv = 0;
        CHECK_EQ(kvmux_incr(c, "ctr", 3, 1, &nv, 10000), 0);
        CHECK_EQ(nv, i + 1);
    }
    kvmux_close(c);
}

static void check_reads(uint16_t port, int n) {
    kvmux_client *c = connect_to(port);
    REQUIRE(c != NULL);
    for (int i = 0; i < n; i += 7) {
        char k[32], v[32];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        kvmux_value *val = NULL;
        int rc = kvmux_get(c, k, strlen(k), &val, 10000);
        CHECK_EQ(rc, 0);
        if (rc == 0) CHECK(val->len == strlen(v) && memcmp(val->data, v, val->len) == 0);
        kvmux_value_free(val);
    }
    kvmux_value *val = NULL;
    CHECK_EQ(kvmux_get(c, "ctr", 3, &val, 10000), 0);
    if (val) CHECK_EQ(atoll((const char *)val->data), n);
    kvmux_value_free(val);
    kvmux_close(c);
}

/* WAIT parked on the leader fires when a replicated SET is applied. */
typedef struct waiter_arg {
    uint16_t port;
    int rc;
    uint64_t version;
} waiter_arg;

static void *waiter(void *p) {
    waiter_arg *w = p;
    kvmux_client *c = connect_to(w->port);
    if (!c) return NULL;
    kvmux_value *v = NULL;
    w->rc = kvmux_wait(c, "w", 1, 0, 10000, &v, 15000);
    if (v) w->version = v->version;
    kvmux_value_free(v);
    kvmux_close(c);
    return NULL;
}

static void check_wait_and_big(uint16_t port) {
    waiter_arg w = {.port = port, .rc = 1};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, waiter, &w) == 0);
    test_sleep_ms(300); /* parked */
    kvmux_client *c = connect_to(port);
    REQUIRE(c != NULL);
    uint64_t ver = 0;
    CHECK_EQ(kvmux_set(c, "w", 1, "go", 2, 0, &ver, 10000), 0);
    pthread_join(th, NULL);
    CHECK_EQ(w.rc, 0);
    CHECK(w.version == ver);
    /* A value far over the frame size: a fragmented upload (v2/v3),
     * replicated as one entry, read back whole. */
    size_t big = 8u << 20;
    uint8_t *val = test_pattern(big, 7);
    CHECK_EQ(kvmux_set(c, "big", 3, val, big, 0, NULL, 30000), 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "big", 3, &v, 30000), 0);
    CHECK(v && v->len == big && memcmp(v->data, val, big) == 0);
    kvmux_value_free(v);
    free(val);
    /* CAS and DEL go through the log too. */
    CHECK_EQ(kvmux_cas(c, "w", 1, ver, "again", 5, 0, NULL, 10000), 0);
    CHECK_EQ(kvmux_cas(c, "w", 1, ver, "stale", 5, 0, NULL, 10000), KVMUX_EVERSION);
    CHECK_EQ(kvmux_del(c, "w", 1, 10000), 0);
    CHECK_EQ(kvmux_del(c, "w", 1, 10000), KVMUX_ENOTFOUND);
    kvmux_close(c);
}

/* --maxmemory is checked on the leader, before a write enters the log;
 * DEL still works over the limit. A one-member group: its own majority. */
static void check_maxmemory(void) {
    static const char *const extra[] = {"--store-shards", "1", "--maxmemory", "256K", NULL};
    rgroup g;
    REQUIRE(rgroup_start(&g, 1, extra) == 0);
    REQUIRE(rgroup_leader(&g, 15000) == 0);
    kvmux_client *c = connect_to(g.cport[0]);
    REQUIRE(c != NULL);
    static char val[4096];
    memset(val, 'm', sizeof val);
    int rc = 0, i;
    for (i = 0; i < 1000 && rc == 0; i++) {
        char k[16];
        snprintf(k, sizeof k, "m%d", i);
        rc = kvmux_set(c, k, strlen(k), val, sizeof val, 0, NULL, 10000);
    }
    CHECK_EQ(rc, KVMUX_EOOM);
    CHECK(i > 1 && i < 1000);
    CHECK_EQ(kvmux_del(c, "m0", 2, 10000), 0);
    kvmux_close(c);
    CHECK_EQ(rgroup_stat(&g, 0, "oom_refused"), 1);
    rgroup_stop(&g);
}

static void check_aof_refused(void) {
    const char *argv[] = {KVMUXD_PATH, "--port", "0", "--replica-id", "1", "--peers",
                          "1=127.0.0.1:1/127.0.0.1:2", "--aof", "/tmp/kvmux-x.aof", NULL};
    char err[1024];
    int rc = test_run(argv, NULL, NULL, NULL, 0, err, sizeof err, 10000);
    CHECK_EQ(rc, 2);
    CHECK(strstr(err, "--aof") != NULL);
    /* Evictions would happen outside the log: refused too. */
    const char *lru[] = {KVMUXD_PATH, "--port", "0", "--replica-id", "1", "--peers",
                         "1=127.0.0.1:1/127.0.0.1:2", "--maxmemory", "1M",
                         "--maxmemory-policy", "allkeys-lru", NULL};
    rc = test_run(lru, NULL, NULL, NULL, 0, err, sizeof err, 10000);
    CHECK_EQ(rc, 2);
    CHECK(strstr(err, "--maxmemory-policy") != NULL);
}

/* The exactly-once session limits: each range, and the window against
 * --max-outstanding, refused with exit 2 naming the option (--check-config:
 * nothing is started). */
static void check_session_options(void) {
    static const struct {
        const char *opt, *val, *opt2, *val2;
        int rc;
    } v[] = {
        {"--session-timeout", "999", NULL, NULL, 2},
        {"--session-timeout", "604800001", NULL, NULL, 2},
        {"--session-timeout", "1000", NULL, NULL, 0},
        {"--max-sessions", "0", NULL, NULL, 2},
        {"--max-sessions", "10000001", NULL, NULL, 2},
        {"--max-sessions", "1", NULL, NULL, 0},
        {"--session-window", "1", NULL, NULL, 2},
        {"--session-window", "1048577", NULL, NULL, 2},
        {"--session-window", "2047", NULL, NULL, 2}, /* < 2 x 1024 */
        {"--session-window", "64", "--max-outstanding", "32", 0},
        {"--session-window", "64", "--max-outstanding", "33", 2},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *argv[] = {KVMUXD_PATH, "--check-config", "--port", "0", "--replica-id", "1",
                              "--peers", "1=127.0.0.1:1/127.0.0.1:2", v[i].opt, v[i].val,
                              v[i].opt2, v[i].val2, NULL};
        char err[1024] = "";
        int rc = test_run(argv, NULL, NULL, NULL, 0, err, sizeof err, 10000);
        CHECK_EQ(rc, v[i].rc);
        if (v[i].rc == 2) CHECK(strstr(err, v[i].opt) != NULL);
        if (rc != v[i].rc) fprintf(stderr, "%s %s: rc %d: %s\n", v[i].opt, v[i].val, rc, err);
    }
}

static void check_single_node_v2(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    int neg = 0;
    int st = raw_request(s.port, 3, KVMUX_OP_GET, "k", NULL, 0, &neg);
    CHECK_EQ(neg, 2);
    CHECK_EQ(st, KVMUX_STATUS_NOT_FOUND);
    test_server_stop(&s, 5000);
}

int main(void) {
    check_aof_refused();
    check_session_options();
    check_single_node_v2();
    check_maxmemory();
    static const char *const extra[] = {"--snapshot-threshold", "32", NULL};
    rgroup g;
    REQUIRE(rgroup_start(&g, 3, extra) == 0);
    int leader = rgroup_stable_leader(&g, 15000);
    REQUIRE(leader >= 0);
    check_refusals(&g, leader);
    check_wait_and_big(g.cport[leader]);

    enum { N = 120 };
    write_some(g.cport[leader], 0, N);
    check_reads(g.cport[leader], N);
    uint64_t idx = 0;
    char d1[64] = "", d2[64] = "";
    CHECK(rgroup_converged(&g, 15000, &idx, d1, sizeof d1) == 0);
    CHECK(idx > 2 * N);
    uint64_t snaps = 0;
    for (int i = 0; i < g.n; i++) snaps += rgroup_stat(&g, i, "replica_snapshots");
    CHECK(snaps > 0); /* 240+ entries over a threshold of 32 */

    /* Restart everything: the store comes back from snapshot + log. */
    for (int i = 0; i < g.n; i++) test_server_stop(&g.srv[i], 10000), g.up[i] = 0;
    for (int i = 0; i < g.n; i++) REQUIRE(rgroup_start_member(&g, i, 0) == 0);
    leader = rgroup_stable_leader(&g, 15000);
    REQUIRE(leader >= 0);
    check_reads(g.cport[leader], N);
    CHECK(rgroup_converged(&g, 15000, NULL, d2, sizeof d2) == 0);
    CHECK(strcmp(d1, d2) == 0);

    /* kill -9 a follower, write on, restart it: it catches up. */
    int f = (leader + 1) % g.n;
    rgroup_kill(&g, f);
    write_some(g.cport[leader], N, 40);
    REQUIRE(rgroup_start_member(&g, f, 0) == 0);
    CHECK(rgroup_converged(&g, 15000, NULL, NULL, 0) == 0);
    check_reads(g.cport[leader], N + 40);
    rgroup_stop(&g);
    return test_report();
}
