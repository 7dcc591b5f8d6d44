/* replica_snap_group_test: background snapshots in a real 3-member group
 * (docs/REPLICATION.md "Snapshots"). With --snapshot-threshold 256 the
 * replicas snapshot a store of 200k keys (KVMUX_TEST_SCALE scales it)
 * again and again while it is being loaded with 64 writes in flight; a
 * follower is killed with SIGKILL mid-load and restarted (it recovers
 * from its own snapshot plus log, or the leader's snapshot), then the
 * leader is killed and restarted. Every member must end with the same
 * store digest at the same applied index, and the keys must read back. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmux.h"
#include "rgroup.h"
#include "testutil.h"

#define INFLIGHT 64

typedef struct loader {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inflight;
    _Atomic int failed;
} loader;

static void on_set(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)reply;
    loader *l = ud;
    if (result != 0) {
        if (atomic_fetch_add(&l->failed, 1) < 5) fprintf(stderr, "SET failed: %d\n", result);
    }
    pthread_mutex_lock(&l->mu);
    l->inflight--;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static kvmux_client *connect_to(uint16_t port) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.request_timeout_ms = 20000;
    kvmux_client *c = NULL;
    return kvmux_connect(&c, "127.0.0.1", port, &o) == 0 ? c : NULL;
}

static void value_of(int i, int round, char *v, size_t cap) {
    snprintf(v, cap, "value-%d-round-%d-padding-to-40-bytes", i, round);
}

/* SET k<i> for i in [from, to) on port, INFLIGHT at a time; every 10th
 * key with a TTL of an hour (snapshots carry the time left). Returns the
 * number of failed SETs. */
static int load(uint16_t port, int from, int to, int round) {
    kvmux_client *c = connect_to(port);
    if (!c) return to - from;
    loader l = {.inflight = 0};
    pthread_mutex_init(&l.mu, NULL);
    pthread_cond_init(&l.cv, NULL);
    atomic_init(&l.failed, 0);
    for (int i = from; i < to; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "k%d", i);
        value_of(i, round, v, sizeof v);
        kvmux_request q = {.op = KVMUX_SET, .key = k, .key_len = strlen(k), .value = v,
                           .value_len = strlen(v), .ttl_ms = i % 10 == 0 ? 3600000 : 0};
        pthread_mutex_lock(&l.mu);
        while (l.inflight >= INFLIGHT) pthread_cond_wait(&l.cv, &l.mu);
        l.inflight++;
        pthread_mutex_unlock(&l.mu);
        if (kvmux_call_async(c, &q, KVMUX_TIMEOUT_DEFAULT, on_set, &l) != 0) {
            atomic_fetch_add(&l.failed, 1);
            pthread_mutex_lock(&l.mu);
            l.inflight--;
            pthread_mutex_unlock(&l.mu);
        }
    }
    pthread_mutex_lock(&l.mu);
    while (l.inflight > 0) pthread_cond_wait(&l.cv, &l.mu);
    pthread_mutex_unlock(&l.mu);
    kvmux_close(c);
    pthread_cond_destroy(&l.cv);
    pthread_mutex_destroy(&l.mu);
    return atomic_load(&l.failed);
}

/* Every 997th key of [0, n) reads back with round's value. */
static void check_sample(uint16_t port, int n, int round) {
    kvmux_client *c = connect_to(port);
    REQUIRE(c != NULL);
    int bad = 0;
    for (int i = 0; i < n; i += 997) {
        char k[32], v[64];
        snprintf(k, sizeof k, "k%d", i);
        value_of(i, round, v, sizeof v);
        kvmux_value *val = NULL;
        int rc = kvmux_get(c, k, strlen(k), &val, 20000);
        if (rc != 0 || val->len != strlen(v) || memcmp(val->data, v, val->len) != 0) bad++;
        kvmux_value_free(val);
    }
    CHECK_EQ(bad, 0);
    kvmux_close(c);
}

static void check_converged(rgroup *g) {
    uint64_t index = 0;
    char digest[64] = "";
    int rc = rgroup_converged(g, 60000, &index, digest, sizeof digest);
    CHECK_EQ(rc, 0);
    if (rc == 0) fprintf(stderr, "converged at index %llu, digest %s\n",
                         (unsigned long long)index, digest);
}

int main(void) {
    int n = (int)(200000 * test_scale());
    if (n < 5000) n = 5000;
    static const char *const extra[] = {"--snapshot-threshold", "256", NULL};
    rgroup g;
    REQUIRE(rgroup_start(&g, 3, extra) == 0);
    int leader = rgroup_stable_leader(&g, 20000);
    REQUIRE(leader >= 0);
    int f = (leader + 1) % 3;
    /* Load the first half, kill a follower, load the rest on the two
     * left, restart it: it catches up from a snapshot. */
    CHECK_EQ(load(g.cport[leader], 0, n / 2, 1), 0);
    rgroup_kill(&g, f);
    CHECK_EQ(load(g.cport[leader], n / 2, n, 1), 0);
    REQUIRE(rgroup_start_member(&g, f, 0) == 0);
    check_converged(&g);
    uint64_t snaps = rgroup_stat(&g, leader, "replica_snapshots");
    fprintf(stderr, "leader snapshots: %llu\n", (unsigned long long)snaps);
    CHECK(snaps != UINT64_MAX && snaps >= 2);
    /* Overwrite a tenth while snapshots go on, then kill the leader and
     * restart it: it recovers from its own snapshot plus log. */
    CHECK_EQ(load(g.cport[leader], 0, n / 10, 2), 0);
    rgroup_kill(&g, leader);
    int nl = rgroup_stable_leader(&g, 30000);
    REQUIRE(nl >= 0);
    REQUIRE(rgroup_start_member(&g, leader, 0) == 0);
    CHECK_EQ(load(g.cport[nl], n / 10, n / 5, 2), 0);
    check_converged(&g);
    check_sample(g.cport[nl], n / 5, 2);
    /* Keys past n / 5 still hold round 1: shift the sample's base. */
    kvmux_client *c = connect_to(g.cport[nl]);
    REQUIRE(c != NULL);
    char k[32], v[64];
    snprintf(k, sizeof k, "k%d", n - 1);
    value_of(n - 1, 1, v, sizeof v);
    kvmux_value *val = NULL;
    CHECK_EQ(kvmux_get(c, k, strlen(k), &val, 20000), 0);
    CHECK(val && val->len == strlen(v) && memcmp(val->data, v, val->len) == 0);
    kvmux_value_free(val);
    kvmux_close(c);
    rgroup_stop(&g);
    return test_report();
}
