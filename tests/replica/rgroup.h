/* A replicated kvmuxd group for tests: N real kvmuxd processes on
 * loopback, each with a client port and a Raft port picked free (bind
 * port 0, read it, close), a fresh directory under /tmp, and helpers to
 * find the leader, kill and restart members and read their STATS. Every
 * wait is bounded. */
#ifndef KVMUX_RGROUP_H
#define KVMUX_RGROUP_H

#include <stddef.h>
#include <stdint.h>

#include "testutil.h"

#define RGROUP_MAX 5

typedef struct rgroup {
    int n;
    test_server srv[RGROUP_MAX];
    int up[RGROUP_MAX];
    uint16_t cport[RGROUP_MAX], rport[RGROUP_MAX];
    char dir[128];                      /* parent of r1, r2, ... */
    char peers[RGROUP_MAX * 64];
    const char *const *extra;           /* more kvmuxd arguments (NULL-terminated);
                                           a "--requirepass TOKEN" there is also
                                           sent by rgroup_stats */
    char host[RGROUP_MAX][48];          /* each member's address ("": 127.0.0.1) */
} rgroup;

/* Pick ports, make the directory, start all n members with --bootstrap.
 * Returns 0, or -1 (nothing left running). */
int rgroup_start(rgroup *g, int n, const char *const *extra);
/* rgroup_start with member i's client and Raft address hosts[i] (IPv4
 * literals; NULL or hosts NULL: 127.0.0.1). The members must listen there:
 * e.g. $KVMUX_KVMUXD a wrapper that adds --bind (tests/replica/netns_kvmuxd.sh). */
int rgroup_start_hosts(rgroup *g, int n, const char *const *extra, const char *const *hosts);
/* Member i's address. */
const char *rgroup_host(const rgroup *g, int i);
/* The --election-timeout value members get (KVMUX_ELECTION_TIMEOUT_MS, else
 * "1000"; NULL when it is "default": kvmuxd's own), and it in ms. */
const char *rgroup_election_arg(void);
int rgroup_election_ms(void);
/* (Re)start member i on its ports and directory (bootstrap: first start). */
int rgroup_start_member(rgroup *g, int i, int bootstrap);
/* Start member i (i may be >= n: n grows) as a newcomer to join at run
 * time: ports picked if it has none, an empty directory, no --bootstrap,
 * --peers naming only itself (GROUP "add" makes it a member). */
int rgroup_start_joiner(rgroup *g, int i);
/* SIGKILL member i. */
void rgroup_kill(rgroup *g, int i);
/* Stop member i with SIGTERM (SIGKILL after 10 s). Returns its exit
 * status (128 + signal if a signal ended it; -1: killed after 10 s, or
 * not running). Under AddressSanitizer a leak found at exit makes it
 * nonzero. */
int rgroup_stop_member(rgroup *g, int i);
/* Stop every member (SIGTERM, then SIGKILL) and remove the directory. */
void rgroup_stop(rgroup *g);
/* STATS of member i into buf (NUL-terminated). Returns its length or -1. */
int rgroup_stats(const rgroup *g, int i, char *buf, size_t cap);
/* STATS of member i with key (a name prefix; NULL = all; "replica_digest"
 * also computes the digest) into buf. Returns its length or -1. */
int rgroup_stats_key(const rgroup *g, int i, const char *key, char *buf, size_t cap);
/* A STATS value (decimal), UINT64_MAX if absent or unreachable. */
uint64_t rgroup_stat(const rgroup *g, int i, const char *name);
/* A STATS text value into out; -1 if absent or unreachable. */
int rgroup_stat_str(const rgroup *g, int i, const char *name, char *out, size_t cap);
/* Index of the member that says it is leader (polls up to timeout_ms),
 * or -1. */
int rgroup_leader(const rgroup *g, int timeout_ms);
/* A leader that is still leader 300 ms later (elections at start-up can
 * follow one another), or -1. */
int rgroup_stable_leader(const rgroup *g, int timeout_ms);
/* Wait until every running member reports the same applied index and the
 * same digest (up to timeout_ms). Returns 0 and the index, or -1. */
int rgroup_converged(const rgroup *g, int timeout_ms, uint64_t *index, char *digest,
                     size_t dcap);

#endif
