/* A failover scenario that runs against any group of v3 replicas: the
 * fake one of client_failover_test (fake_group.h) today, a real kvmuxd
 * group (kill -9 of the leader) once replication lands -- the scenario
 * only needs the group's endpoints and a way to make its leader go away.
 *
 * Load: writes of unique keys (SET k<i> = v<i>), each followed by nothing
 * else on that key, kept `depth` in flight per client (async callbacks) or
 * issued by `threads` blocking threads; after half of them the leader is
 * failed. Afterwards every write that was acknowledged is read back from
 * the (new) leader. Checked: every request completed exactly once; each
 * outcome is OK, KVMUX_EUNKNOWN (in flight at the failure) or a timeout;
 * no acknowledged write is lost. */
#ifndef KVMUX_TEST_FAILOVER_SCENARIO_H
#define KVMUX_TEST_FAILOVER_SCENARIO_H

typedef struct failover_target {
    const char *endpoints;              /* "host:port,host:port,..." */
    void (*fail_leader)(void *arg);     /* the leader goes away (returns
                                           once it is gone) */
    void *arg;
} failover_target;

typedef struct failover_result {
    int ops;           /* writes submitted (each completed exactly once) */
    int acked;         /* completed OK */
    int unknown;       /* completed KVMUX_EUNKNOWN */
    int other;         /* any other result (a timeout, ...) */
    int other_err;     /* the first such result (0 if none) */
    int lost;          /* acknowledged, not found afterwards (must be 0) */
    int twice;         /* a callback that ran more than once (must be 0) */
} failover_result;

/* Async: one client, `ops` writes, `depth` in flight. */
void failover_run_async(const failover_target *t, int ops, int depth, failover_result *r);
/* Blocking: one client shared by `threads` threads, `ops` writes in all. */
void failover_run_blocking(const failover_target *t, int ops, int threads, failover_result *r);

#endif
