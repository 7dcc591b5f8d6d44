/* libkvmux against a real replicated group: 3 kvmuxd replicas on loopback
 * (rgroup.h), the client given all three client addresses
 * (kvmux_options.endpoints), and the leader killed with SIGKILL in the
 * middle of the load -- the scenario of client_failover_test
 * (failover_scenario.h), which runs it against a fake group, now with real
 * elections, a real Raft log and a real process death.
 *
 * Checked for the async client (64 in flight) and for 8 blocking threads
 * sharing one client: every request completes exactly once, each outcome
 * is OK or KVMUX_EUNKNOWN (a write in flight when the leader died), no
 * acknowledged write is lost (each read back from the new leader), and
 * the client reaches the new leader by itself. Between the two runs the
 * killed replica restarts and catches up, so the second kill leaves a
 * majority too. */
#include <stdio.h>
#include <string.h>

#include "failover_scenario.h"
#include "kvmux.h"
#include "rgroup.h"
#include "testutil.h"

typedef struct kill_ctx {
    rgroup *g;
    int killed;       /* member index, or -1 */
    int64_t kill_ms;  /* when */
} kill_ctx;

static void kill_leader(void *arg) {
    kill_ctx *k = arg;
    int l = rgroup_leader(k->g, 10000);
    REQUIRE(l >= 0);
    k->kill_ms = test_now_ms();
    rgroup_kill(k->g, l);
    k->killed = l;
}

static void report(const char *mode, const failover_result *r) {
    printf("client_group %s: ops=%d acknowledged=%d unknown=%d other=%d (%s) lost=%d twice=%d\n",
           mode, r->ops, r->acked, r->unknown, r->other,
           r->other ? kvmux_strerror(r->other_err) : "-", r->lost, r->twice);
    CHECK(r->acked > 0);
    CHECK_EQ(r->lost, 0);
    CHECK_EQ(r->twice, 0);
    CHECK_EQ(r->acked + r->unknown + r->other, r->ops);
}

/* Restart the killed member and wait until the group has a stable leader
 * and all three agree again. */
static void heal(rgroup *g, kill_ctx *k) {
    if (k->killed < 0) return;
    REQUIRE(rgroup_start_member(g, k->killed, 0) == 0);
    k->killed = -1;
    CHECK(rgroup_stable_leader(g, 20000) >= 0);
    CHECK(rgroup_converged(g, 30000, NULL, NULL, 0) == 0);
}

int main(void) {
    rgroup g;
    REQUIRE(rgroup_start(&g, 3, NULL) == 0);
    REQUIRE(rgroup_stable_leader(&g, 20000) >= 0);
    char endpoints[256];
    snprintf(endpoints, sizeof endpoints, "127.0.0.1:%u,127.0.0.1:%u,127.0.0.1:%u",
             g.cport[0], g.cport[1], g.cport[2]);
    kill_ctx k = {&g, -1, 0};
    failover_target t = {endpoints, kill_leader, &k};
    int ops = (int)(4000 * test_scale());
    if (ops < 400) ops = 400;

    failover_result r;
    memset(&r, 0, sizeof r);
    failover_run_async(&t, ops, 64, &r);
    report("async depth 64", &r);
    heal(&g, &k);

    memset(&r, 0, sizeof r);
    failover_run_blocking(&t, ops / 2, 8, &r);
    report("blocking 8 threads", &r);
    heal(&g, &k);

    rgroup_stop(&g);
    return test_report();
}
