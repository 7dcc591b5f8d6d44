/* A FAKE replicated kvmuxd group for the client failover tests: n
 * replicas on 127.0.0.1 ephemeral ports, each a thread that accepts
 * connections one at a time, speaks protocol v3 (handshake and frames by
 * the real proto library) and answers requests according to a role the
 * test sets at any moment:
 *   LEADER    applies requests to a store shared by the group (as a
 *             replicated store would be: a new leader sees what the old
 *             one applied) and counts how often each key was written;
 *   FOLLOWER  answers every request NOT_LEADER with the address of the
 *             replica named as leader (or an empty / arbitrary string);
 *   HOLD      reads requests and answers none (counted): requests stay in
 *             flight until the test cuts the connection;
 *   STALL     reads nothing at all: the client's socket buffers fill and
 *             its writer blocks (with fg_start_ex's small rcvbuf).
 * A LEADER acknowledges a SET whose value is too large for its store
 * (256 bytes) without keeping the value (applied is still counted).
 * fg_cut resets the replica's current connection (RST), which is what a
 * client sees when a leader dies. The test, not timing, decides what is in
 * flight when. Every wait is bounded. A real group (repl branch) plugs into
 * the same scenarios through the endpoints string and role changes. */
#ifndef KVMUX_TEST_FAKE_GROUP_H
#define KVMUX_TEST_FAKE_GROUP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define FG_MAX 5
#define FG_KEYS 16384 /* store capacity (open addressing): a power of 2 */

typedef enum fg_role { FG_LEADER = 0, FG_FOLLOWER = 1, FG_HOLD = 2, FG_STALL = 3 } fg_role;

typedef struct fake_group fake_group;

typedef struct fg_replica {
    fake_group *g;
    int idx;
    int lfd;
    uint16_t port;
    pthread_t th;
    atomic_int role;               /* fg_role */
    atomic_int outcome_unknown;    /* LEADER: writes answered OUTCOME_UNKNOWN */
    atomic_int hold_writes;        /* FOLLOWER: writes held (counted), not
                                      answered; reads still NOT_LEADER */
    atomic_int cut;                /* 1: reset the current connection */
    atomic_int conns;              /* connections accepted */
    atomic_int requests;           /* requests received (any role) */
    atomic_int not_leader;         /* NOT_LEADER answers sent */
    atomic_int held;               /* requests held (HOLD) on the current
                                      connection */
    atomic_int connected;          /* a connection is open now */
    char leader_addr[300];         /* FOLLOWER's answer; guarded by g->mu */
} fg_replica;

typedef struct fg_key {
    char key[64];
    uint8_t klen;
    uint8_t present;
    uint8_t val[256];
    uint32_t vlen;
    uint64_t version;
    uint32_t applied;              /* writes applied to this key */
} fg_key;

struct fake_group {
    int n;
    fg_replica r[FG_MAX];
    pthread_mutex_t mu;            /* the store and leader_addr */
    fg_key *keys;                  /* FG_KEYS entries (heap) */
    uint64_t next_version;
    atomic_int stop;
    char endpoints[FG_MAX * 24];   /* "127.0.0.1:p0,127.0.0.1:p1,..." */
};

/* Start n (1..FG_MAX) replicas, all FOLLOWER with no leader known. */
void fg_start(fake_group *g, int n);
/* fg_start with the listeners' SO_RCVBUF set to rcvbuf (0: default), so
 * a STALLed replica stops the client's writes soon. */
void fg_start_ex(fake_group *g, int n, int rcvbuf);
/* Stop and join every replica (<= 10 s). */
void fg_stop(fake_group *g);
/* Set replica i's role. FOLLOWER: leader is the replica it names (its
 * address "127.0.0.1:port"), -1 for an empty address. */
void fg_set_role(fake_group *g, int i, fg_role role, int leader);
/* FOLLOWER with an arbitrary leader address string. */
void fg_set_follower_addr(fake_group *g, int i, const char *addr);
/* Reset replica i's current connection (if any) and wait (<= 5 s) until it
 * is gone. */
void fg_cut(fake_group *g, int i);
/* Wait (<= ms) until replica i holds at least n requests. Returns 1 if so. */
int fg_wait_held(fake_group *g, int i, int n, int ms);
/* Writes applied to key (0: never). */
uint32_t fg_applied(fake_group *g, const char *key);
/* Put key=val in the store directly (as if written earlier). */
void fg_store_set(fake_group *g, const char *key, const char *val);

#endif
