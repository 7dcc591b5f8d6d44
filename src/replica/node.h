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

/* A membership change (kvmux_node_admin_*), carried by a kvmux_rbatch
 * instead of an entry. The proposer fills op, id and peer; the node
 * fills status (a KVMUX_STATUS_*) and msg before done. */
enum { KVMUX_ADMIN_ADD = 1, KVMUX_ADMIN_REMOVE = 2, KVMUX_ADMIN_TRANSFER = 3 };
#define KVMUX_ADMIN_MSG_MAX 160u
typedef struct kvmux_node_admin {
    int op;
    uint32_t id;                 /* the member; TRANSFER: 0 = any voter */
    kvmux_peer peer;             /* ADD: its addresses (peer.id == id) */
    uint8_t status;              /* node */
    char msg[KVMUX_ADMIN_MSG_MAX]; /* node: what happened, for the reply */
} kvmux_node_admin;

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
    kvmux_node_admin *admin;     /* not NULL: a membership change, no
                                    entry (buf NULL); status 0 then means
                                    "answered in admin", RAFT_NOTLEADER
                                    "not processed" */
    void *priv;                  /* node: its request record */
    void *owner;                 /* proposer's own state */
} kvmux_rbatch;

/* kvmuxd's exit status when the disk watchdog fires (EX_IOERR): a write
 * of the Raft log or a snapshot stayed pending past disk_timeout_ms. */
#define KVMUX_NODE_DISK_EXIT 74

typedef void (*kvmux_node_done_fn)(void *ud, kvmux_rbatch *b);

typedef struct kvmux_node_config {
    uint32_t id;                 /* this replica's id in peers */
    const char *dir;             /* Raft log and snapshots (created if missing) */
    const kvmux_peers *peers;
    int bootstrap;               /* write the initial configuration if new */
    unsigned election_ms, heartbeat_ms, snapshot_threshold;
    /* The disk watchdog: a log append or snapshot write pending longer
     * than this (ms) ends the process with KVMUX_NODE_DISK_EXIT after one
     * log line (node.c "disk watchdog"); 0 = no watchdog. */
    unsigned disk_timeout_ms;
    uint64_t nonce;              /* this process's boot nonce (entry origin) */
    /* Peer TLS (transport.h): cert NULL = plain TCP (C-Raft's own
     * transport); else mutual TLS 1.3 with key, and ca as the group CA
     * (needs a build with TLS). */
    const char *ptls_cert, *ptls_key, *ptls_ca;
    unsigned ptls_handshake_ms;
    kvmux_store *store;
    kvmux_fsm_clock *clock;      /* the store's clock (fsm.h) */
    struct kvmux_sessions *sessions; /* exactly-once table (sessions.h) */
    struct kvmux_stage_tab *stage;   /* big values being staged (stage.h) */
    kvmux_fsm_cluster *cluster;      /* the slot map (fsm.h); NULL: none */
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
} kvmux_node_status;

/* A member of the configuration this replica knows (the latest one,
 * committed or not). */
enum { KVMUX_MEMBER_VOTER = 1, KVMUX_MEMBER_STANDBY = 2, KVMUX_MEMBER_SPARE = 3 };
typedef struct kvmux_node_member {
    uint32_t id;
    int role;                    /* KVMUX_MEMBER_* */
    uint64_t lag;                /* on the leader: entries its log lacks
                                    behind the commit index; UINT64_MAX =
                                    unknown (not the leader, or itself) */
    char raft_addr[KVMUX_PEER_ADDR_MAX];
    char client_addr[KVMUX_PEER_ADDR_MAX]; /* "" if not known here */
} kvmux_node_member;

typedef struct kvmux_node kvmux_node;

/* Start the node (its thread runs until kvmux_node_stop). Returns 0, or
 * -1 with a message in err. */
int kvmux_node_start(kvmux_node **out, const kvmux_node_config *cfg, char *err, size_t errlen);
/* Queue b for replication. Any thread. done(b) follows exactly once. */
void kvmux_node_propose(kvmux_node *n, kvmux_rbatch *b);
/* Any thread. */
void kvmux_node_get_status(kvmux_node *n, kvmux_node_status *st);
/* The store's version counter as of the last entry (or snapshot) fully
 * applied here: every write with a version up to it is visible in the
 * store (release/acquire), so a stale read may run once this reaches its
 * min_version. Any thread. */
uint64_t kvmux_node_applied_version(kvmux_node *n);
/* The members (at most max) into out; returns how many. Any thread. */
uint32_t kvmux_node_members(kvmux_node *n, kvmux_node_member *out, uint32_t max);
/* The client address of member id into out (cap bytes); 0, or -1 if not
 * known here (out = ""). Any thread. The addresses come from --peers and
 * from member tables replicated through the log and snapshots. */
int kvmux_node_client_addr(kvmux_node *n, uint32_t id, char *out, size_t cap);
/* Stop: every batch still queued or in flight gets done (failed) first;
 * joins the thread and frees n. Not from the Raft thread. */
void kvmux_node_stop(kvmux_node *n);

#endif
