/* A Raft replica: C-Raft with its stock libuv I/O (raft_uv: segmented log
 * files and TCP transport) running a libuv loop in a thread of its own.
 * Loops hand it batches (kvmux_node_propose, any thread: a mutex-guarded
 * queue plus uv_async_send); it hands each batch back exactly once through
 * the done callback (called on the Raft thread), applied or failed. The
 * store is changed only by the state machine on the Raft thread. */
#ifndef KVMUX_NODE_H
#define KVMUX_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "fsm.h"
#include "peers.h"
#include "store.h"

/* One proposal: an encoded entry (entry.h) and room for its results. The
 * proposer owns it before kvmux_node_propose and after done; in between
 * the node touches only the fields marked "node". */
typedef struct kvmux_rbatch {
    struct kvmux_rbatch *next;   /* node queue, then the proposer's inbox */
    uint8_t *buf;                /* entry (malloc); the node takes it */
    size_t len;
    uint16_t loop;               /* origin loop and sequence, as encoded */
    uint64_t seq;
    uint32_t ncmds;
    kvmux_fsm_result *results;   /* ncmds of them, filled when applied (node) */
    int applied;                 /* node: the entry was applied here */
    int accepted;                /* node: appended to the leader's log (a
                                    failure after this is "outcome unknown";
                                    before it, "not processed") */
    int status;                  /* node: 0 = committed and applied; else a
                                    RAFT_* error (not leader, leadership
                                    lost, shutdown) */
    void *priv;                  /* node: its request record */
    void *owner;                 /* proposer's own state */
} kvmux_rbatch;

typedef void (*kvmux_node_done_fn)(void *ud, kvmux_rbatch *b);

typedef struct kvmux_node_config {
    uint32_t id;                 /* this replica's id in peers */
    const char *dir;             /* Raft log and snapshots (created if missing) */
    const kvmux_peers *peers;
    int bootstrap;               /* write the initial configuration if new */
    unsigned election_ms, heartbeat_ms, snapshot_threshold;
    uint64_t nonce;              /* this process's boot nonce (entry origin) */
    /* Peer TLS (transport.h): cert NULL = plain TCP (C-Raft's own
     * transport); else mutual TLS 1.3 with key, and ca as the group CA
     * (needs a build with TLS). */
    const char *ptls_cert, *ptls_key, *ptls_ca;
    unsigned ptls_handshake_ms;
    kvmux_store *store;
    kvmux_fsm_clock *clock;      /* the store's clock (fsm.h) */
    kvmux_node_done_fn done;
    void *done_ud;
} kvmux_node_config;

/* What STATS reports; any thread (published by the Raft thread once per
 * libuv iteration). */
typedef struct kvmux_node_status {
    int role;                    /* 0 unavailable, 1 follower, 2 candidate, 3 leader */
    uint32_t leader;             /* leader's id, 0 = unknown */
    uint64_t term, commit_index, applied_index;
    uint64_t elections;          /* times a new leader was seen */
    uint64_t snapshots;          /* taken or installed */
    uint64_t last_failover_ms;   /* last leaderless stretch */
    uint64_t peer_refused;       /* Raft connections refused (peer TLS) */
    /* On the leader: per member (peers order), entries it lacks behind
     * the commit index; UINT64_MAX = unknown (not the leader, or itself). */
    uint64_t lag[KVMUX_PEERS_MAX];
} kvmux_node_status;

typedef struct kvmux_node kvmux_node;

/* Start the node (its thread runs until kvmux_node_stop). Returns 0, or
 * -1 with a message in err. */
int kvmux_node_start(kvmux_node **out, const kvmux_node_config *cfg, char *err, size_t errlen);
/* Queue b for replication. Any thread. done(b) follows exactly once. */
void kvmux_node_propose(kvmux_node *n, kvmux_rbatch *b);
/* Any thread. */
void kvmux_node_get_status(kvmux_node *n, kvmux_node_status *st);
/* Stop: every batch still queued or in flight gets done (failed) first;
 * joins the thread and frees n. Not from the Raft thread. */
void kvmux_node_stop(kvmux_node *n);

#endif
