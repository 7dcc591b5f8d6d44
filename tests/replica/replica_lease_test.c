/* replica_lease_test: the leader's read lease (docs/REPLICATION.md "Reads
 * in detail") with real kvmuxd processes.
 *  - Under load a leader in the default --read-mode lease serves reads
 *    without a barrier (STATS replica_lease_reads grows, barrier reads
 *    stay few); --read-mode barrier serves every read behind a barrier.
 *  - A deposed leader never answers a stale read: the leader is frozen
 *    (SIGSTOP) with a connection already open on it, the others elect a
 *    new leader which acknowledges a new value, a GET is queued on the
 *    frozen leader's connection and the leader resumes (SIGCONT): the
 *    answer is NOT_LEADER or the new value, never the old one. In both
 *    read modes.
 *  - A replica restarted with Raft state waits one election timeout
 *    before it joins elections (its log says so); a fresh one does not.
 *  - --read-mode with a bad value exits 2. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

static kvmux_client *connect_to(uint16_t port) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.request_timeout_ms = 10000;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, "127.0.0.1", port, &o) != 0) return NULL;
    return c;
}

static int set_value(uint16_t port, const char *key, const char *val) {
    kvmux_client *c = connect_to(port);
    if (!c) return -1;
    uint64_t ver = 0;
    int rc = kvmux_set(c, key, strlen(key), val, strlen(val), 0, &ver, 10000);
    kvmux_close(c);
    return rc;
}

/* A raw v3 connection, handshake done. */
static int open_v3(uint16_t port) {
    int fd = test_connect_raw(port, 8000);
    if (fd < 0) return -1;
    if (test_raw_handshake_version(fd, 3) != 3) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Many GETs on the leader: counts how they were served. */
static void check_lease_counts(rgroup *g, int leader, int lease) {
    REQUIRE(set_value(g->cport[leader], "lk", "v") == 0);
    uint64_t lr0 = rgroup_stat(g, leader, "replica_lease_reads");
    uint64_t br0 = rgroup_stat(g, leader, "replica_barrier_reads");
    kvmux_client *c = connect_to(g->cport[leader]);
    REQUIRE(c != NULL);
    enum { N = 400 };
    int ok = 0;
    for (int i = 0; i < N; i++) {
        kvmux_value *v = NULL;
        if (kvmux_get(c, "lk", 2, &v, 10000) == 0 && v->len == 1) ok++;
        kvmux_value_free(v);
    }
    kvmux_close(c);
    CHECK_EQ(ok, N);
    uint64_t lr = rgroup_stat(g, leader, "replica_lease_reads") - lr0;
    uint64_t br = rgroup_stat(g, leader, "replica_barrier_reads") - br0;
    char mode[16] = "";
    CHECK(rgroup_stat_str(g, leader, "replica_read_mode", mode, sizeof mode) == 0);
    CHECK(strcmp(mode, lease ? "lease" : "barrier") == 0);
    fprintf(stderr, "read mode %s: %llu lease reads, %llu barrier reads of %d\n", mode,
            (unsigned long long)lr, (unsigned long long)br, N);
    if (lease) {
        CHECK(lr >= N * 9 / 10);
    } else {
        CHECK_EQ(lr, 0);
        CHECK(br >= N);
    }
}

/* Freeze the leader, let the others move on, then ask the old leader. */
static void check_deposed_leader(rgroup *g, int leader) {
    REQUIRE(set_value(g->cport[leader], "dk", "old") == 0);
    int fd = open_v3(g->cport[leader]);
    REQUIRE(fd >= 0);
    REQUIRE(kill(g->srv[leader].pid, SIGSTOP) == 0);
    g->up[leader] = 0; /* rgroup_leader must not poll a frozen process */
    int nl = rgroup_leader(g, 15000);
    REQUIRE(nl >= 0 && nl != leader);
    int64_t end = test_now_ms() + 15000;
    int rc = -1;
    while (rc != 0 && test_now_ms() < end)
        if ((rc = set_value(g->cport[nl], "dk", "new")) != 0) test_sleep_ms(100);
    CHECK_EQ(rc, 0);
    REQUIRE(test_send_request(fd, 3, 9, KVMUX_OP_GET, NULL, 0, "dk", NULL, 0) == 0);
    REQUIRE(kill(g->srv[leader].pid, SIGCONT) == 0);
    g->up[leader] = 1;
    uint8_t in[4096];
    kvmux_frame f;
    int n = test_read_frame(fd, in, sizeof in, &f);
    CHECK(n > 0);
    if (n > 0) {
        CHECK_EQ(f.request_id, 9);
        int fresh = f.code == KVMUX_STATUS_OK && f.value_len == 3 && memcmp(f.value, "new", 3) == 0;
        fprintf(stderr, "deposed leader answered status %u (%.*s)\n", f.code,
                (int)f.value_len, (const char *)f.value);
        CHECK(f.code == KVMUX_STATUS_NOT_LEADER || fresh);
    }
    close(fd);
}

static void run_mode(int lease) {
    static const char *const lease_args[] = {"--read-mode", "lease", NULL};
    static const char *const barrier_args[] = {"--read-mode", "barrier", NULL};
    rgroup g;
    REQUIRE(rgroup_start(&g, 3, lease ? lease_args : barrier_args) == 0);
    int leader = rgroup_stable_leader(&g, 15000);
    REQUIRE(leader >= 0);
    check_lease_counts(&g, leader, lease);
    check_deposed_leader(&g, leader);
    if (lease) {
        /* A restart with state waits an election timeout before Raft. */
        int f = (leader + 1) % g.n;
        rgroup_kill(&g, f);
        int64_t t0 = test_now_ms();
        REQUIRE(rgroup_start_member(&g, f, 0) == 0);
        CHECK(rgroup_converged(&g, 20000, NULL, NULL, 0) == 0);
        fprintf(stderr, "restarted follower converged after %lld ms\n",
                (long long)(test_now_ms() - t0));
        CHECK(test_now_ms() - t0 >= rgroup_election_ms());
    }
    rgroup_stop(&g);
}

static void check_bad_mode(void) {
    const char *argv[] = {KVMUXD_PATH, "--port", "0", "--read-mode", "sometimes", NULL};
    char err[4096];
    int rc = test_run(argv, NULL, NULL, NULL, 0, err, sizeof err, 10000);
    CHECK_EQ(rc, 2);
    CHECK(strstr(err, "lease or barrier") != NULL);
}

int main(void) {
    check_bad_mode();
    run_mode(1);
    run_mode(0);
    return test_report();
}
