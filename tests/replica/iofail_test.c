/* iofail_test: replicas whose durable log writes fail never let a write be
 * acknowledged on their account. Every replica of a 3-replica group runs
 * with the kvmux-iofail.so preload (tools/iofail.c: while DIR/fail.<pid>
 * exists, each completed AIO write of that process reports EIO, the way
 * raft_uv learns that a write could not be made durable). Phases:
 *   A  one follower's writes fail: the group goes on (writes acknowledged),
 *      and the fault fired in that process (DIR/fired.<pid>);
 *   B  the healthy follower is stopped (SIGSTOP): only the leader and the
 *      failing follower are left, so no write may be acknowledged: the
 *      failing follower does not count toward commit;
 *   C  the healthy follower resumes and its writes fail too (2 of 3): no
 *      write may be acknowledged;
 *   D  the faults are off (replicas that died are restarted): writes are
 *      acknowledged again, every replica converges to one digest, and every
 *      write acknowledged in A and D reads back.
 * Writes in B and C may end in a timeout, OUTCOME_UNKNOWN or an error;
 * the test requires only that none ends OK. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvmux.h"
#include "rgroup.h"
#include "testutil.h"

static rgroup g;
static char dir[160];
static char acked_keys[4096][24];
static int nacked;

static void set_fault(int i, int on) {
    char path[256];
    snprintf(path, sizeof path, "%s/fail.%ld", dir, (long)g.srv[i].pid);
    if (on) {
        FILE *f = fopen(path, "w");
        REQUIRE(f != NULL);
        fclose(f);
    } else {
        unlink(path);
    }
}

static int fired(int i) {
    char path[256];
    struct stat st;
    snprintf(path, sizeof path, "%s/fired.%ld", dir, (long)g.srv[i].pid);
    return stat(path, &st) == 0 && st.st_size > 0;
}

/* n writes of fresh keys to member i, each with timeout_ms. Returns how
 * many were acknowledged (their keys are remembered when keep). */
static int writes(int i, const char *tag, int n, int timeout_ms, int keep) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 1000;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, "127.0.0.1", g.cport[i], &o) != 0) return 0;
    int ok = 0;
    for (int k = 0; k < n; k++) {
        char key[24];
        snprintf(key, sizeof key, "%s%d", tag, k);
        if (kvmux_set(c, key, strlen(key), "v", 1, 0, NULL, timeout_ms) == 0) {
            ok++;
            if (keep && nacked < 4096) snprintf(acked_keys[nacked++], sizeof acked_keys[0], "%s", key);
        }
    }
    kvmux_close(c);
    return ok;
}

static int alive(int i) { return kill(g.srv[i].pid, 0) == 0; }

/* A REQUIRE failure exits: stop the group anyway (a SIGSTOPped member
 * included: rgroup_stop ends with SIGKILL). */
static int started;
static void cleanup(void) {
    if (!started) return;
    started = 0;
    rgroup_stop(&g);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/kvmux-iofail-%ld", (long)getpid());
    REQUIRE(mkdir(dir, 0755) == 0);
    /* Every member gets the preload (inert until its fail file exists). */
    const char *asan = getenv("ASAN_OPTIONS");
    char asan_opts[512];
    snprintf(asan_opts, sizeof asan_opts, "%s%sverify_asan_link_order=0", asan ? asan : "",
             asan && *asan ? ":" : "");
    setenv("LD_PRELOAD", KVMUX_IOFAIL_PATH, 1);
    setenv("KVMUX_IOFAIL_DIR", dir, 1);
    setenv("ASAN_OPTIONS", asan_opts, 1);
    REQUIRE(rgroup_start(&g, 3, NULL) == 0);
    started = 1;
    atexit(cleanup);
    int leader = rgroup_stable_leader(&g, 20000);
    REQUIRE(leader >= 0);
    int bad = (leader + 1) % 3, good = (leader + 2) % 3;

    /* A: one follower's writes fail; the group goes on. */
    set_fault(bad, 1);
    int a = writes(leader, "a", 200, 5000, 1);
    printf("iofail A (1 of 3 failing): acknowledged %d/200, fault fired: %s, failing replica %s\n",
           a, fired(bad) ? "yes" : "no", alive(bad) ? "alive" : "exited");
    CHECK_EQ(a, 200);
    CHECK(fired(bad));

    /* B: the healthy follower stopped: the failing one must not count. */
    REQUIRE(kill(g.srv[good].pid, SIGSTOP) == 0);
    int b = writes(leader, "b", 10, 1500, 0);
    printf("iofail B (leader + failing follower): acknowledged %d/10\n", b);
    CHECK_EQ(b, 0);

    /* C: 2 of 3 failing. */
    set_fault(good, 1);
    REQUIRE(kill(g.srv[good].pid, SIGCONT) == 0);
    test_sleep_ms(500);
    int l2 = rgroup_leader(&g, 5000);
    int cc = writes(l2 >= 0 ? l2 : leader, "c", 10, 1500, 0);
    printf("iofail C (2 of 3 failing): acknowledged %d/10, fault fired on the second: %s\n", cc,
           fired(good) ? "yes" : "no");
    CHECK_EQ(cc, 0);
    CHECK(fired(good));

    /* D: faults off; the group recovers. raft_uv stops all I/O of a
     * replica after a failed write (it acknowledges nothing more), so the
     * two replicas whose writes failed are restarted, as an operator
     * would once the disk is fixed. */
    set_fault(bad, 0);
    set_fault(good, 0);
    int faulted[2] = {bad, good};
    for (int k = 0; k < 2; k++) {
        int i = faulted[k];
        printf("iofail D: replica %d %s; restarting it\n", i + 1,
               alive(i) ? "alive" : "exited under the fault");
        rgroup_kill(&g, i);
        REQUIRE(rgroup_start_member(&g, i, 0) == 0);
    }
    int l3 = rgroup_stable_leader(&g, 30000);
    REQUIRE(l3 >= 0);
    int d = 0;
    for (int tries = 0; tries < 20 && d == 0; tries++) {
        d = writes(l3, "d", 50, 5000, 1);
        if (d == 0) test_sleep_ms(500);
    }
    printf("iofail D (faults off): acknowledged %d/50\n", d);
    CHECK(d > 0);
    CHECK_EQ(rgroup_converged(&g, 30000, NULL, NULL, 0), 0);
    kvmux_options o;
    kvmux_options_init(&o);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", g.cport[l3], &o) == 0);
    int present = 0;
    for (int k = 0; k < nacked; k++) {
        kvmux_value *v = NULL;
        if (kvmux_get(c, acked_keys[k], strlen(acked_keys[k]), &v, 5000) == 0) present++;
        kvmux_value_free(v);
    }
    kvmux_close(c);
    printf("iofail: acknowledged %d, present %d\n", nacked, present);
    CHECK_EQ(present, nacked);
    cleanup();
    return test_report();
}
