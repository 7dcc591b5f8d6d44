/* The Raft thread (node.h).
 *
 * Why a thread of its own: C-Raft's stock backend (raft_uv) is written for
 * a libuv loop, and kvmuxd's loops are epoll loops of their own. Running
 * libuv in one more thread keeps both unchanged; what crosses is a queue
 * of batches in (mutex + uv_async_send, once per loop iteration at most)
 * and one callback per batch out (the server posts it to the proposing
 * loop's inbox and writes its eventfd). docs/DESIGN.md "Replication".
 *
 * Everything below except kvmux_node_propose, kvmux_node_get_status and
 * kvmux_node_stop runs on the Raft thread. */
#include "node.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "entry.h"
#include "proto.h"
#include "log.h"
#include "raftfix.h"
#include "monotime.h"
#ifdef KVMUX_HAVE_TLS
#include "transport.h"
#endif

/* A log append or snapshot write raft_uv has not completed yet, for the
 * disk watchdog; linked oldest first (node.c "disk watchdog"). */
typedef struct io_wait {
    struct io_wait *prev, *next;
    uint64_t since;              /* the watchdog's clock when submitted */
} io_wait;

/* A raft_apply request. C-Raft 0.22.1 does not always call it back: a
 * leader that is deposed while it still has entries in flight (seen with
 * a zombie leader that healed, and after a transfer) can keep some of
 * them queued, unanswered, until raft_close, and can lose others for
 * good. So the node answers its batches itself (sweep_lost) and keeps
 * every request C-Raft may still hold on n->reqs until C-Raft calls it
 * back or is closed (on_closed frees the rest). */
typedef struct node_req {
    struct raft_apply req;       /* first: on_applied casts back */
    kvmux_rbatch *b;             /* NULL once answered by sweep_lost */
    struct node_req *prev, *next; /* n->reqs */
    raft_term term;              /* the leader's term when proposed */
} node_req;

struct kvmux_node {
    kvmux_node_config cfg;
    kvmux_peers peers;
    char dir[4096];
    uv_loop_t loop;
    uv_async_t async;
    uv_prepare_t prepare;
    uv_timer_t watchdog;         /* the disk watchdog's check */
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    pthread_t thread;
    int thread_started;

    pthread_mutex_t mu;          /* guards the queue and stopping */
    kvmux_rbatch *q_head, *q_tail;
    int stopping;

    /* Raft thread only. */
    kvmux_rbatch *inflight;      /* proposed, not yet done (next links) */
    node_req *reqs;              /* raft_apply requests C-Raft may hold */
    int closing;                 /* raft_close called */
    int tcp_ok, io_ok, raft_ok;  /* what init_raft got to (for stop) */
    int ptls;                    /* the transport is ours (transport.h) */
    uint32_t last_leader;
    uint64_t leaderless_since;   /* monotonic ms; 0 = a leader is known */
    uint64_t settle_since;       /* monotonic ms of the start or the last
                                    leader change (fsm_snapshot) */

    kvmux_rbatch *admin;         /* the membership change under way */
    struct admin_req *admin_req;

    /* Member tables, for any thread under mmu; written by the Raft thread
     * (which reads table without the lock). */
    pthread_mutex_t mmu;
    kvmux_peers table;           /* client addresses: --peers + the log */
    kvmux_node_member pub[KVMUX_PEERS_MAX]; /* the configuration, published */
    uint32_t npub;

    /* Published for any thread. */
    _Atomic int role;
    _Atomic uint32_t leader;
    _Atomic uint64_t term, commit_index, applied_index;
    _Atomic uint64_t elections, snapshots, last_failover_ms;
    _Atomic uint64_t applied_version; /* kvmux_node_applied_version */
    _Atomic uint64_t peer_refused;

    /* raft_io wrappers around three C-Raft 0.22.1 crashes (io_fix_*) and for
     * the disk watchdog (wd_append, fix_snapshot_put): the
     * raft_uv functions they call, and their state. Raft thread only. */
    int (*io_load)(struct raft_io *, raft_term *, raft_id *, struct raft_snapshot **,
                   raft_index *, struct raft_entry *[], size_t *);
    int (*io_start)(struct raft_io *, unsigned, raft_io_tick_cb, raft_io_recv_cb);
    raft_io_recv_cb io_recv;
    int (*io_snapshot_put)(struct raft_io *, unsigned, struct raft_io_snapshot_put *,
                           const struct raft_snapshot *, raft_io_snapshot_put_cb);
    int (*io_snapshot_get)(struct raft_io *, struct raft_io_snapshot_get *,
                           raft_io_snapshot_get_cb);
    int (*io_send)(struct raft_io *, struct raft_io_send *, const struct raft_message *,
                   raft_io_send_cb);
    int (*io_append)(struct raft_io *, struct raft_io_append *, const struct raft_entry[],
                     unsigned, raft_io_append_cb);
    io_wait *wait_head, *wait_tail; /* pending writes, oldest first */
    uint64_t wd_clock;           /* ms the Raft loop ran (on_watchdog) */
    uint64_t wd_last;            /* monotonic ms of the last check */
    uint64_t wd_every;           /* ms between checks */
    unsigned own_puts;           /* own snapshots being serialized or written */
    kvmux_fsm_snap *snap;        /* begun by fsm_snapshot, not yet handed to
                                    the pool (fix_snapshot_put) */
    struct snap_work *snap_work; /* the snapshot being serialized */
    raft_index loaded_index;     /* the snapshot io_snapshot_get last loaded */
    raft_term loaded_term;
    raft_index snap_index;       /* the latest snapshot stored here (fix 3) */
    raft_term snap_term;
};

/* A membership change's C-Raft request: one at a time (n->admin). */
typedef struct admin_req {
    union {
        struct raft_apply apply;
        struct raft_change change;
        struct raft_transfer transfer;
    } u;                         /* first: the callbacks cast back */
    kvmux_node *n;
} admin_req;

static void table_merge(kvmux_node *n, const kvmux_peers *t) {
    pthread_mutex_lock(&n->mmu);
    for (uint32_t i = 0; i < t->n; i++) kvmux_peers_put(&n->table, &t->p[i]);
    pthread_mutex_unlock(&n->mmu);
}

static void *ra_realloc(void *p, size_t n) {
    if (n == 0) {
        raft_free(p);
        return NULL;
    }
    return raft_realloc(p, n);
}

/* ---- the state machine, as C-Raft sees it ---- */

static kvmux_rbatch *find_inflight(kvmux_node *n, uint16_t loop, uint64_t seq) {
    for (kvmux_rbatch *b = n->inflight; b; b = b->next)
        if (b->loop == loop && b->seq == seq) return b;
    return NULL;
}

/* Apply one committed entry. The results go to the batch only if this
 * process proposed the entry (same replica, same boot nonce) and the batch
 * is still waiting: so a leader acknowledges exactly what it applied, and
 * an entry from a previous life or another leader answers nobody. *result
 * is never set: C-Raft would leak it for entries no request waits for. */
static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result) {
    kvmux_node *n = fsm->data;
    *result = NULL;
    if (kvmux_peers_is_table(buf->base, buf->len)) {
        /* A member table (an "add" wrote it): addresses only, no store
         * change, so digests are unaffected. */
        kvmux_peers t;
        size_t used;
        if (kvmux_peers_decode(buf->base, buf->len, &t, &used) == 0) table_merge(n, &t);
        else KVMUX_LOG_E("replica: skipping a malformed member table entry");
        return 0;
    }
    kvmux_entry_hdr h;
    kvmux_entry_iter it;
    kvmux_rbatch *b = NULL;
    if (kvmux_entry_decode_hdr(buf->base, buf->len, &h, &it) == 0 &&
        h.origin.replica == n->cfg.id && h.origin.nonce == n->cfg.nonce)
        b = find_inflight(n, h.origin.loop, h.origin.seq);
    int rc = kvmux_fsm_apply(n->cfg.store, n->cfg.clock, n->cfg.sessions, n->cfg.stage, n->cfg.cluster,
                             buf->base, buf->len,
                             b ? b->results : NULL, b ? b->ncmds : 0);
    if (rc < 0) {
        /* Every replica skips the same corrupt entry: still deterministic. */
        KVMUX_LOG_E("replica: skipping a malformed log entry of %zu bytes", buf->len);
        return 0;
    }
    if (b) b->applied = 1;
    /* Published after the whole entry is in the store. */
    atomic_store_explicit(&n->applied_version, kvmux_store_last_version(n->cfg.store),
                          memory_order_release);
    return 0;
}

/* How long a follower holds back its own snapshots after the start or a
 * leader change: the window in which the leader may send it a snapshot. */
#define SETTLE_ELECTIONS 10u

/* Our own snapshot, in two steps (docs/DESIGN.md "Snapshots beside the
 * applies"): here, on the Raft thread between two applies, the instant is
 * fixed (kvmux_fsm_snap_begin: small tables copied, the store marked
 * copy-on-write by key) and the buffers are left empty; fix_snapshot_put, which
 * C-Raft calls next, has the store serialized on libuv's thread pool and
 * hands the snapshot to raft_uv when that is done. C-Raft 0.22.1's own
 * fsm->snapshot_async cannot do it: legacy.c calls it right after
 * fsm->snapshot, on the Raft thread. */
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs) {
    kvmux_node *n = fsm->data;
    /* Work around C-Raft 0.22.1 (and upstream at the time of writing):
     * when a snapshot of ours is being written and the leader's
     * InstallSnapshot arrives, takeSnapshotCb (legacy.c) clears
     * snapshot_pending and then passes it, NULL, to
     * legacyPersistSnapshotStart: a crash (replica_follower_test hit it
     * on a killed follower's restart). InstallSnapshot comes to followers
     * that were away: right after a start or a leader change. Refusing a
     * snapshot is allowed (C-Raft retries after the next applied entry),
     * so a follower takes none in that window; its log grows meanwhile. */
    if (raft_state(&n->raft) != RAFT_LEADER &&
        kvmux_clock_ms() - n->settle_since < SETTLE_ELECTIONS * n->cfg.election_ms)
        return RAFT_BUSY;
    if (n->snap) {
        /* Begun but never handed to raft_uv (cannot happen with 0.22.1:
         * put follows snapshot): finish it so the store is free. */
        (void)kvmux_fsm_snap_run(n->snap);
        kvmux_fsm_snap_free(n->snap);
        n->snap = NULL;
    }
    /* The member table first (so a replica that joins from this snapshot
     * learns every member's client address), then the store: the header
     * and keys, then sessions, staged values and map. */
    uint8_t *t = raft_malloc(KVMUX_PEERS_WIRE_MAX);
    *bufs = t ? raft_calloc(3, sizeof **bufs) : NULL;
    if (!*bufs || kvmux_fsm_snap_begin(n->cfg.store, n->cfg.clock, n->cfg.sessions,
                                       n->cfg.stage, n->cfg.cluster, ra_realloc,
                                       &n->snap) != 0) {
        raft_free(*bufs);
        raft_free(t);
        n->snap = NULL;
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = t;
    (*bufs)[0].len = kvmux_peers_encode(&n->table, t);
    *n_bufs = 3;
    atomic_fetch_add(&n->snapshots, 1);
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf) {
    kvmux_node *n = fsm->data;
    const uint8_t *p = buf->base;
    size_t len = buf->len, used = 0;
    if (kvmux_peers_is_table(p, len)) {
        /* Snapshots before membership (no table) restore as they are. */
        kvmux_peers t;
        if (kvmux_peers_decode(p, len, &t, &used) != 0) return RAFT_MALFORMED;
        table_merge(n, &t);
    }
    int rc = kvmux_fsm_restore(n->cfg.store, n->cfg.clock, n->cfg.sessions, n->cfg.stage,
                               n->cfg.cluster, p + used, len - used);
    if (rc != 0) return RAFT_MALFORMED;
    raft_free(buf->base); /* ours once restored (C-Raft's contract) */
    atomic_store_explicit(&n->applied_version, kvmux_store_last_version(n->cfg.store),
                          memory_order_release);
    atomic_fetch_add(&n->snapshots, 1);
    return 0;
}

/* ---- proposals ---- */

static void batch_done(kvmux_node *n, kvmux_rbatch *b, int status) {
    b->status = status;
    n->cfg.done(n->cfg.done_ud, b);
}

static void unlink_inflight(kvmux_node *n, kvmux_rbatch *b) {
    for (kvmux_rbatch **pp = &n->inflight; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            b->next = NULL;
            return;
        }
    }
}

static void req_unlink(kvmux_node *n, node_req *r) {
    if (r->prev) r->prev->next = r->next;
    else n->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Answer r's batch now; r stays for C-Raft's callback (or on_closed). A
 * batch applied here was committed: it succeeded whatever status says. */
static void req_answer(kvmux_node *n, node_req *r, int status) {
    kvmux_rbatch *b = r->b;
    r->b = NULL;
    b->priv = NULL;
    unlink_inflight(n, b);
    batch_done(n, b, b->applied ? 0 : status);
}

static void on_applied(struct raft_apply *req, int status, void *result) {
    (void)result;
    node_req *r = (node_req *)req;
    kvmux_node *n = req->data;
    /* Success means committed and applied here: applied is then set. */
    if (r->b) req_answer(n, r, status == 0 ? RAFT_LEADERSHIPLOST : status);
    req_unlink(n, r);
    free(r);
}

/* Answer the batches C-Raft will not answer in time (node_req): once this
 * replica is not the leader of the term it proposed in, or the entry's
 * index was applied with another entry, the batch failed
 * (RAFT_LEADERSHIPLOST: outcome unknown, the next leader may still
 * commit it); one applied here succeeded. Runs once per loop iteration
 * (publish), so no batch waits longer than the iteration after the fact. */
static void sweep_lost(kvmux_node *n, int st) {
    raft_term term = raft_current_term(&n->raft);
    raft_index applied = raft_last_applied(&n->raft);
    for (node_req *r = n->reqs; r; r = r->next) {
        if (!r->b) continue;
        if (r->b->applied || st != RAFT_LEADER || term != r->term || applied >= r->req.index)
            req_answer(n, r, RAFT_LEADERSHIPLOST);
    }
}

static void admin_start(kvmux_node *n, kvmux_rbatch *b);

static void submit(kvmux_node *n, kvmux_rbatch *b) {
    b->accepted = 0;
    if (b->admin && !n->closing) {
        admin_start(n, b);
        return;
    }
    if (n->closing) {
        free(b->buf);
        b->buf = NULL;
        batch_done(n, b, RAFT_SHUTDOWN);
        return;
    }
    node_req *r = calloc(1, sizeof *r);
    size_t plen = kvmux_entry_padded_len(b->len);
    uint8_t *copy = r ? raft_malloc(plen) : NULL;
    if (!copy) {
        if (r) free(r);
        free(b->buf);
        b->buf = NULL;
        batch_done(n, b, RAFT_NOMEM);
        return;
    }
    /* C-Raft frees entry buffers with raft_free: hand it its own copy. */
    memcpy(copy, b->buf, b->len);
    memset(copy + b->len, 0, plen - b->len);
    free(b->buf);
    b->buf = NULL;
    struct raft_buffer rb = {copy, plen};
    r->b = b;
    r->req.data = n;
    r->term = raft_current_term(&n->raft);
    b->priv = r;
    b->applied = 0;
    b->accepted = 1;
    b->next = n->inflight;
    n->inflight = b;
    r->next = n->reqs; /* linked first: whatever C-Raft calls back is listed */
    if (n->reqs) n->reqs->prev = r;
    n->reqs = r;
    raft_index last = raft_last_index(&n->raft);
    int rc = raft_apply(&n->raft, &r->req, &rb, 1, on_applied);
    if (rc != 0) {
        /* C-Raft 0.22.1 does not free the entry when its RAFT_SUBMIT step
         * refuses it (client.c ClientSubmit: not the leader, a transfer
         * under way, no space, no memory): the buffer is still ours, and
         * then the log (C-Raft's trail) did not grow. Once the step took
         * the entry, a later failure (I/O, memory) may have freed it:
         * left to C-Raft, a leak at worst. */
        if (raft_last_index(&n->raft) == last) raft_free(copy);
        KVMUX_LOG_D("replica: raft_apply: %s", raft_strerror(rc));
        b->accepted = 0;
        unlink_inflight(n, b);
        req_unlink(n, r);
        free(r);
        b->priv = NULL;
        batch_done(n, b, rc);
    }
}


/* ---- membership changes (one at a time; docs/REPLICATION.md) ---- */

static int admin_done(kvmux_node *n, kvmux_rbatch *b, uint8_t status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int admin_done(kvmux_node *n, kvmux_rbatch *b, uint8_t status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->admin->msg, sizeof b->admin->msg, fmt, ap);
    va_end(ap);
    b->admin->status = status;
    if (n->admin == b) {
        n->admin = NULL;
        free(n->admin_req);
        n->admin_req = NULL;
    }
    batch_done(n, b, 0);
    return 0;
}

/* Finish the change under way after a C-Raft error. Returns 0. */
static int admin_fail(kvmux_node *n, const char *what, int rc) {
    kvmux_rbatch *b = n->admin;
    if (rc == RAFT_CANTCHANGE)
        return admin_done(n, b, KVMUX_STATUS_BUSY, "a membership change is already in progress");
    if (rc == RAFT_NOTLEADER || rc == RAFT_LEADERSHIPLOST)
        return admin_done(n, b, KVMUX_STATUS_OUTCOME_UNKNOWN,
                   "%s: leadership lost during the change (check 'status')", what);
    return admin_done(n, b, KVMUX_STATUS_INTERNAL, "%s: %s", what, raft_strerror(rc));
}

static const struct raft_server *conf_find(kvmux_node *n, uint32_t id) {
    const struct raft_configuration *c = &n->raft.configuration;
    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id) return &c->servers[i];
    return NULL;
}

static void on_promoted(struct raft_change *req, int status) {
    kvmux_node *n = ((admin_req *)req)->n;
    uint32_t id = n->admin->admin->id;
    if (status != 0) {
        admin_fail(n, "promoting to voter", status);
        return;
    }
    admin_done(n, n->admin, KVMUX_STATUS_OK, "replica %u is a voter", id);
}

/* Step 3 of ADD: C-Raft catches the member up (log or snapshot) before it
 * appends the configuration that makes it a voter. */
static int add_promote(kvmux_node *n) {
    kvmux_node_admin *a = n->admin->admin;
    int rc = raft_assign(&n->raft, &n->admin_req->u.change, a->id, RAFT_VOTER, on_promoted);
    return rc != 0 ? admin_fail(n, "promoting to voter", rc) : 0;
}

static void on_added(struct raft_change *req, int status) {
    kvmux_node *n = ((admin_req *)req)->n;
    if (status != 0) admin_fail(n, "adding the member", status);
    else add_promote(n);
}

/* Step 2 of ADD: the member enters the configuration as a spare. */
static void on_table(struct raft_apply *req, int status, void *result) {
    (void)result;
    kvmux_node *n = ((admin_req *)req)->n;
    kvmux_node_admin *a = n->admin->admin;
    if (status != 0) {
        admin_fail(n, "replicating the member table", status);
        return;
    }
    int rc = raft_add(&n->raft, &n->admin_req->u.change, a->id, a->peer.raft_addr, on_added);
    if (rc != 0) admin_fail(n, "adding the member", rc);
}

static int admin_add(kvmux_node *n) {
    kvmux_node_admin *a = n->admin->admin;
    const struct raft_server *s = conf_find(n, a->id);
    if (s && s->role == RAFT_VOTER)
        return admin_done(n, n->admin, KVMUX_STATUS_BAD_REQUEST,
                          "replica %u is already a member", a->id);
    if (s) return add_promote(n); /* a spare or standby: retrying an add */
    const struct raft_configuration *c = &n->raft.configuration;
    for (unsigned i = 0; i < c->n; i++)
        if (strcmp(c->servers[i].address, a->peer.raft_addr) == 0)
            return admin_done(n, n->admin, KVMUX_STATUS_BAD_REQUEST,
                              "raft address %s is already replica %llu's", a->peer.raft_addr,
                              (unsigned long long)c->servers[i].id);
    if (c->n >= KVMUX_PEERS_MAX)
        return admin_done(n, n->admin, KVMUX_STATUS_BAD_REQUEST,
                          "the group is full (%u members)", KVMUX_PEERS_MAX);
    /* Step 1: the whole member table (with the newcomer's client
     * address) goes through the log first, so every replica, the
     * newcomer included, can name any leader's client address. */
    kvmux_peers t = n->table;
    if (kvmux_peers_put(&t, &a->peer) != 0)
        return admin_done(n, n->admin, KVMUX_STATUS_BAD_REQUEST, "the member table is full");
    uint8_t *buf = raft_malloc(KVMUX_PEERS_WIRE_MAX);
    if (!buf) return admin_fail(n, "member table", RAFT_NOMEM);
    struct raft_buffer rb = {buf, kvmux_peers_encode(&t, buf)};
    int rc = raft_apply(&n->raft, &n->admin_req->u.apply, &rb, 1, on_table);
    return rc != 0 ? admin_fail(n, "replicating the member table", rc) : 0;
}

static void on_removed(struct raft_change *req, int status) {
    kvmux_node *n = ((admin_req *)req)->n;
    uint32_t id = n->admin->admin->id;
    if (status != 0) {
        admin_fail(n, "removing the member", status);
        return;
    }
    admin_done(n, n->admin, KVMUX_STATUS_OK, "replica %u removed", id);
}

static int admin_remove(kvmux_node *n) {
    kvmux_node_admin *a = n->admin->admin;
    const struct raft_server *s = conf_find(n, a->id);
    if (!s)
        return admin_done(n, n->admin, KVMUX_STATUS_NOT_FOUND, "replica %u is not a member",
                          a->id);
    unsigned voters = 0;
    const struct raft_configuration *c = &n->raft.configuration;
    for (unsigned i = 0; i < c->n; i++) voters += c->servers[i].role == RAFT_VOTER;
    if (s->role == RAFT_VOTER && voters == 1)
        return admin_done(n, n->admin, KVMUX_STATUS_BAD_REQUEST,
                          "replica %u is the last voter", a->id);
    int rc = raft_remove(&n->raft, &n->admin_req->u.change, a->id, on_removed);
    return rc != 0 ? admin_fail(n, "removing the member", rc) : 0;
}

static void on_transferred(struct raft_transfer *req) {
    kvmux_node *n = ((admin_req *)req)->n;
    raft_id lid = 0;
    const char *addr = NULL;
    raft_leader(&n->raft, &lid, &addr);
    uint32_t want = (uint32_t)req->id;
    if (lid != 0 && lid != n->cfg.id && (want == 0 || lid == want))
        admin_done(n, n->admin, KVMUX_STATUS_OK, "replica %llu is the leader",
                   (unsigned long long)lid);
    else
        admin_done(n, n->admin, KVMUX_STATUS_TIMEOUT,
                   "replica %u did not take over within the election timeout", want);
}

static int admin_transfer(kvmux_node *n) {
    kvmux_node_admin *a = n->admin->admin;
    if (a->id != 0) {
        const struct raft_server *s = conf_find(n, a->id);
        if (!s)
            return admin_done(n, n->admin, KVMUX_STATUS_NOT_FOUND,
                              "replica %u is not a member", a->id);
        if (a->id == n->cfg.id)
            return admin_done(n, n->admin, KVMUX_STATUS_BAD_REQUEST,
                              "replica %u is already the leader", a->id);
        if (s->role != RAFT_VOTER)
            return admin_done(n, n->admin, KVMUX_STATUS_BAD_REQUEST,
                              "replica %u is not a voter", a->id);
    }
    int rc = raft_transfer(&n->raft, &n->admin_req->u.transfer, a->id, on_transferred);
    if (rc == RAFT_NOTFOUND)
        return admin_done(n, n->admin, KVMUX_STATUS_BAD_REQUEST,
                          "no other voter to transfer to");
    return rc != 0 ? admin_fail(n, "transfer", rc) : 0;
}

static void admin_start(kvmux_node *n, kvmux_rbatch *b) {
    if (raft_state(&n->raft) != RAFT_LEADER) {
        batch_done(n, b, RAFT_NOTLEADER); /* not processed: NOT_LEADER */
        return;
    }
    if (n->admin || raft_transferee(&n->raft) != 0 ||
        n->raft.configuration_uncommitted_index != 0) {
        b->admin->status = KVMUX_STATUS_BUSY;
        snprintf(b->admin->msg, sizeof b->admin->msg,
                 "a membership change is already in progress");
        batch_done(n, b, 0);
        return;
    }
    admin_req *r = calloc(1, sizeof *r);
    if (!r) {
        b->admin->status = KVMUX_STATUS_INTERNAL;
        snprintf(b->admin->msg, sizeof b->admin->msg, "out of memory");
        batch_done(n, b, 0);
        return;
    }
    r->n = n;
    n->admin = b;
    n->admin_req = r;
    switch (b->admin->op) {
    case KVMUX_ADMIN_ADD: admin_add(n); break;
    case KVMUX_ADMIN_REMOVE: admin_remove(n); break;
    default: admin_transfer(n); break;
    }
}

static void publish(kvmux_node *n);

/* Release the transport, whichever init_raft made. */
static void transport_release(kvmux_node *n) {
#ifdef KVMUX_HAVE_TLS
    if (n->ptls) {
        kvmux_ptls_release(&n->transport);
        return;
    }
#endif
    raft_uv_tcp_close(&n->transport);
}

static void on_closed(struct raft *r) {
    kvmux_node *n = r->data;
    /* C-Raft is done: the requests it never called back are ours. */
    while (n->reqs) {
        node_req *q = n->reqs;
        if (q->b) req_answer(n, q, RAFT_SHUTDOWN);
        req_unlink(n, q);
        free(q);
    }
    raft_uv_close(&n->io);
    transport_release(n);
    uv_close((uv_handle_t *)&n->async, NULL);
    uv_close((uv_handle_t *)&n->prepare, NULL);
    uv_close((uv_handle_t *)&n->watchdog, NULL);
}

static void node_close(kvmux_node *n);

static void on_async(uv_async_t *a) {
    kvmux_node *n = a->data;
    pthread_mutex_lock(&n->mu);
    kvmux_rbatch *q = n->q_head;
    n->q_head = n->q_tail = NULL;
    int stop = n->stopping;
    pthread_mutex_unlock(&n->mu);
    while (q) {
        kvmux_rbatch *next = q->next;
        q->next = NULL;
        submit(n, q);
        q = next;
    }
    if (stop) node_close(n);
}

/* Close once stopping, after the snapshot being serialized is written
 * (C-Raft, unaware of it, would otherwise be gone by then). */
static void node_close(kvmux_node *n) {
    pthread_mutex_lock(&n->mu);
    int stop = n->stopping;
    pthread_mutex_unlock(&n->mu);
    if (stop && !n->closing && !n->snap_work) {
        publish(n);
        n->closing = 1;
        atomic_store(&n->role, 0);
        if (n->raft_ok) {
            raft_close(&n->raft, on_closed);
            /* raft_close failed what it still held; answer the rest now
             * (their records stay until on_closed). */
            for (node_req *r = n->reqs; r; r = r->next)
                if (r->b) req_answer(n, r, RAFT_SHUTDOWN);
        } else {
            /* init_raft failed part way: close what it opened. */
            if (n->io_ok) raft_uv_close(&n->io);
            if (n->tcp_ok) transport_release(n);
            uv_close((uv_handle_t *)&n->async, NULL);
            uv_close((uv_handle_t *)&n->prepare, NULL);
            uv_close((uv_handle_t *)&n->watchdog, NULL);
        }
    }
}

/* ---- status ---- */

/* The configuration as other threads see it: ids, roles, addresses and
 * (on the leader) each member's lag. At most KVMUX_PEERS_MAX members (an
 * ADD refuses more). */
static void publish_members(kvmux_node *n, int st) {
    struct raft *r = &n->raft;
    const struct raft_configuration *c = &r->configuration;
    uint64_t commit = (uint64_t)raft_commit_index(r);
    pthread_mutex_lock(&n->mmu);
    n->npub = 0;
    for (unsigned i = 0; i < c->n && n->npub < KVMUX_PEERS_MAX; i++) {
        const struct raft_server *s = &c->servers[i];
        kvmux_node_member *m = &n->pub[n->npub++];
        m->id = (uint32_t)s->id;
        m->role = s->role == RAFT_VOTER     ? KVMUX_MEMBER_VOTER
                  : s->role == RAFT_STANDBY ? KVMUX_MEMBER_STANDBY
                                            : KVMUX_MEMBER_SPARE;
        snprintf(m->raft_addr, sizeof m->raft_addr, "%s", s->address);
        const kvmux_peer *p = kvmux_peers_find(&n->table, m->id);
        snprintf(m->client_addr, sizeof m->client_addr, "%s", p ? p->client_addr : "");
        raft_index mi = 0;
        m->lag = UINT64_MAX;
        if (st == RAFT_LEADER && s->id != n->cfg.id && raft_match_index(r, s->id, &mi) == 0)
            m->lag = commit > (uint64_t)mi ? commit - (uint64_t)mi : 0;
    }
    pthread_mutex_unlock(&n->mmu);
}

static void publish(kvmux_node *n) {
    if (n->closing || !n->raft_ok) return;
    struct raft *r = &n->raft;
    raft_id lid = 0;
    const char *laddr = NULL;
    raft_leader(r, &lid, &laddr);
    int st = raft_state(r);
    atomic_store(&n->role, st == RAFT_LEADER ? 3 : st == RAFT_CANDIDATE ? 2
                                                : st == RAFT_FOLLOWER ? 1 : 0);
    atomic_store(&n->leader, (uint32_t)lid);
    atomic_store(&n->term, (uint64_t)raft_current_term(r));
    atomic_store(&n->commit_index, (uint64_t)raft_commit_index(r));
    atomic_store(&n->applied_index, (uint64_t)raft_last_applied(r));
    uint64_t now = kvmux_clock_ms();
    if (lid == 0 && n->leaderless_since == 0) n->leaderless_since = now;
    if (lid != 0 && lid != n->last_leader) {
        n->settle_since = now;
        atomic_fetch_add(&n->elections, 1);
        if (n->leaderless_since) atomic_store(&n->last_failover_ms, now - n->leaderless_since);
        n->last_leader = (uint32_t)lid;
    }
    if (lid != 0) n->leaderless_since = 0;
    publish_members(n, st);
    sweep_lost(n, st);
}

static void on_prepare(uv_prepare_t *p) { publish(p->data); }

static void *node_main(void *arg) {
    kvmux_node *n = arg;
    uv_run(&n->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- lifecycle ---- */

static int nerr(char *err, size_t errlen, const char *what, int rc, kvmux_node *n) {
    snprintf(err, errlen, "replication: %s: %s", what,
             n && n->raft.data ? raft_errmsg(&n->raft) : raft_strerror(rc));
    return -1;
}

static int make_dir(const char *d, char *err, size_t errlen) {
    if (mkdir(d, 0700) == 0 || errno == EEXIST) return 0;
    snprintf(err, errlen, "replication: cannot create --replica-dir %s: %s", d,
             strerror(errno));
    return -1;
}

static int bootstrap(kvmux_node *n, char *err, size_t errlen) {
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rc = 0;
    for (uint32_t i = 0; i < n->peers.n && rc == 0; i++)
        rc = raft_configuration_add(&conf, n->peers.p[i].id, n->peers.p[i].raft_addr,
                                    RAFT_VOTER);
    if (rc == 0) rc = raft_bootstrap(&n->raft, &conf);
    raft_configuration_close(&conf);
    if (rc == RAFT_CANTBOOTSTRAP) return 0; /* not new: the log has a configuration */
    return rc == 0 ? 0 : nerr(err, errlen, "bootstrap", rc, NULL);
}

/* C-Raft's plain TCP transport, or ours with TLS (transport.h). */
static int init_transport(kvmux_node *n, char *err, size_t errlen) {
    if (n->cfg.ptls_cert) {
#ifdef KVMUX_HAVE_TLS
        kvmux_ptls_config pc = {.cert = n->cfg.ptls_cert, .key = n->cfg.ptls_key,
                                .ca = n->cfg.ptls_ca, .handshake_ms = n->cfg.ptls_handshake_ms,
                                .refused = &n->peer_refused};
        n->ptls = 1; /* cfg's strings are borrowed: read only in this call */
        return kvmux_ptls_init(&n->transport, &n->loop, &pc, err, errlen);
#else
        return kvmux_errf(err, errlen, "--peer-tls: kvmuxd was built without TLS");
#endif
    }
    int rc = raft_uv_tcp_init(&n->transport, &n->loop);
    return rc == 0 ? 0 : nerr(err, errlen, "transport", rc, NULL);
}

/* ---- raft_io wrappers: three C-Raft 0.22.1 crashes ----
 *
 * Found by tests/replica/sim_test.c (TESTING.md "Deterministic
 * simulation"), which applies the same fixes to its in-memory raft_io:
 * 1. legacy.c takeSnapshotCb: an InstallSnapshot arriving while this
 *    replica writes its own snapshot is parked, then dereferenced after
 *    being cleared (NULL). The settle window in fsm_snapshot narrows it;
 *    a follower slower than the leader's trailing entries still gets
 *    InstallSnapshot at any time. Fix: while an own snapshot is being
 *    written, drop an arriving InstallSnapshot like a lost message (the
 *    leader sends it again).
 * 2. legacy.c legacyLoadSnapshotCb: when the snapshot loaded to send to a
 *    lagging follower is newer than the one meant, the InstallSnapshot
 *    gets the new index but the old term, the follower installs it under
 *    the wrong term and later aborts. Fix: remember the loaded snapshot's
 *    term and put it into the InstallSnapshot that carries its index.
 * 3. replication.c: a follower rejects an AppendEntries whose previous
 *    entry it compacted behind its own snapshot, and when the leader steps
 *    back to index 1 it appends the resent entries after its last one and
 *    reads past the message (a crash; raftfix.h). Possible here, not seen
 *    in kvmuxd's tests: a leader restarted while raft_uv's first closed
 *    segment is still on disk holds entry 1 again, and a follower whose
 *    answers were lost is probed from far behind. Fix: remember the latest
 *    snapshot stored here (load, snapshot_put) and rewrite such an
 *    AppendEntries to start at it. */

static void note_snapshot(kvmux_node *n, raft_index index, raft_term term) {
    if (index > n->snap_index) { /* committed, so the leader's too */
        n->snap_index = index;
        n->snap_term = term;
    }
}

static kvmux_node *node_of(struct raft_io *io) {
    return (kvmux_node *)(void *)((char *)io - offsetof(kvmux_node, io));
}

/* ---- the disk watchdog ----
 *
 * raft_uv 0.22.1 never reports a failed log write to C-Raft: it holds the
 * write (and every append and snapshot put after it) and writes the same
 * blocks again after its disk retry delay, and that retry is broken (it
 * starts one timer with its state on another, then writes through a
 * pointer that is not a segment: REPLICATION.md "A replica whose disk
 * fails"). A raft_io wrapper cannot see the failure, only that the write
 * stays pending. So the retry is pushed out of reach (DISK_RETRY_MS, set
 * in init_raft) and the wrappers below note when each append and put was
 * submitted; a write pending longer than --replica-disk-timeout ends the
 * process (fail-stop, as etcd and PostgreSQL do after a failed fsync: the
 * state of a page the disk refused is unknown). A supervisor restarts the
 * replica, which replays its log and catches up from the leader. A disk
 * that is only slow past the timeout ends the same way: nothing
 * acknowledged depends on this replica's pending writes. The check runs
 * on the Raft loop, so a write that blocks the loop itself (a synchronous
 * submission to a hung disk) stops the watchdog too. */

/* raft_uv's retry of a failed write: a day, far beyond the longest
 * --replica-disk-timeout (600000), so the watchdog always fires first. */
#define DISK_RETRY_MS 86400000u

/* The watchdog's clock now: as of the last check, plus the time since
 * (capped as on_watchdog caps it). */
static uint64_t wd_now(kvmux_node *n) {
    uint64_t gap = kvmux_clock_ms() - n->wd_last;
    return n->wd_clock + (gap < 2 * n->wd_every ? gap : 2 * n->wd_every);
}

static void wait_add(kvmux_node *n, io_wait *w) {
    w->since = wd_now(n);
    w->next = NULL;
    w->prev = n->wait_tail;
    if (n->wait_tail) n->wait_tail->next = w;
    else n->wait_head = w;
    n->wait_tail = w;
}

static void wait_del(kvmux_node *n, io_wait *w) {
    if (w->prev) w->prev->next = w->next;
    else n->wait_head = w->next;
    if (w->next) w->next->prev = w->prev;
    else n->wait_tail = w->prev;
}

/* Exit without atexit handlers or stdio flushing, which could touch the
 * Raft thread's state or block on the failed disk: the log line is one
 * write(2) (log.h), already out. */
static void disk_failed(kvmux_node *n, uint64_t age) {
    KVMUX_LOG_E("raft log write pending for %llu ms: the disk failed or stalled; exiting "
                "so a supervisor restarts this replica (--replica-dir %s, "
                "--replica-disk-timeout %u, exit status %d)",
                (unsigned long long)age, n->dir, n->cfg.disk_timeout_ms, KVMUX_NODE_DISK_EXIT);
    _exit(KVMUX_NODE_DISK_EXIT);
}

/* A write's age counts only the time the Raft loop ran: a check that
 * comes late (the loop was busy, e.g. serializing a big snapshot in
 * fsm_snapshot, or the process was stopped) advances the clock by two
 * intervals at most. Else the first check after such a pause, which libuv
 * runs before it polls for the completions that came meanwhile, would
 * find healthy writes old. */
static void on_watchdog(uv_timer_t *t) {
    kvmux_node *n = t->data;
    uint64_t now = kvmux_clock_ms(), gap = now - n->wd_last;
    n->wd_last = now;
    n->wd_clock += gap < 2 * n->wd_every ? gap : 2 * n->wd_every;
    if (!n->wait_head) return;
    uint64_t age = n->wd_clock - n->wait_head->since;
    if (age >= n->cfg.disk_timeout_ms) disk_failed(n, age);
}

/* Check about 4 times per timeout, at most every 250 ms: the process
 * exits within timeout + 250 ms of a write that stays pending. */
static void watchdog_start(kvmux_node *n) {
    if (n->cfg.disk_timeout_ms == 0) return;
    n->wd_every = n->cfg.disk_timeout_ms / 4;
    if (n->wd_every > 250) n->wd_every = 250;
    if (n->wd_every == 0) n->wd_every = 1;
    n->wd_last = kvmux_clock_ms();
    uv_timer_start(&n->watchdog, on_watchdog, n->wd_every, n->wd_every);
}

typedef struct append_shim {
    struct raft_io_append req; /* first: the callback casts back */
    io_wait wait;
    struct raft_io_append *orig;
    raft_io_append_cb cb;
    kvmux_node *n;
} append_shim;

static void wd_append_done(struct raft_io_append *req, int status) {
    append_shim *sh = (append_shim *)(void *)req;
    wait_del(sh->n, &sh->wait);
    raft_io_append_cb cb = sh->cb;
    struct raft_io_append *orig = sh->orig;
    free(sh);
    cb(orig, status);
}

static int wd_append(struct raft_io *io, struct raft_io_append *req,
                     const struct raft_entry entries[], unsigned n_entries,
                     raft_io_append_cb cb) {
    kvmux_node *n = node_of(io);
    append_shim *sh = calloc(1, sizeof *sh);
    if (!sh) return RAFT_NOMEM;
    sh->orig = req;
    sh->cb = cb;
    sh->n = n;
    sh->req.data = req->data;
    wait_add(n, &sh->wait); /* before: a callback may come from inside */
    int rc = n->io_append(io, &sh->req, entries, n_entries, wd_append_done);
    if (rc != 0) {
        wait_del(n, &sh->wait);
        free(sh);
    }
    return rc;
}

/* Snapshot puts: watched like appends (raft_uv queues them behind a held
 * write); own ones (trailing != 0) are also counted for fix 1. */
typedef struct put_shim {
    struct raft_io_snapshot_put req; /* first: the callback casts back */
    io_wait wait;
    struct raft_io_snapshot_put *orig;
    raft_io_snapshot_put_cb cb;
    kvmux_node *n;
    int own;
} put_shim;

static void fix_put_done(struct raft_io_snapshot_put *req, int status) {
    put_shim *sh = (put_shim *)(void *)req;
    if (sh->own) sh->n->own_puts--;
    wait_del(sh->n, &sh->wait);
    raft_io_snapshot_put_cb cb = sh->cb;
    struct raft_io_snapshot_put *orig = sh->orig;
    free(sh);
    cb(orig, status);
}

static void fix_recv(struct raft_io *io, struct raft_message *m) {
    kvmux_node *n = node_of(io);
    kvmux_raftfix_trim_append(m, n->snap_index, n->snap_term);
    if (m->type == RAFT_INSTALL_SNAPSHOT && n->own_puts) {
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
        return;
    }
    n->io_recv(io, m);
}

static int fix_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                    struct raft_snapshot **snapshot, raft_index *start_index,
                    struct raft_entry *entries[], size_t *n_entries) {
    kvmux_node *n = node_of(io);
    int rc = n->io_load(io, term, voted_for, snapshot, start_index, entries, n_entries);
    if (rc == 0 && *snapshot) note_snapshot(n, (*snapshot)->index, (*snapshot)->term);
    return rc;
}

static int fix_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                     raft_io_recv_cb recv) {
    kvmux_node *n = node_of(io);
    n->io_recv = recv;
    return n->io_start(io, msecs, tick, fix_recv);
}

/* A snapshot being serialized on libuv's thread pool, then written.
 * snap_mu orders the hand-over both ways where ThreadSanitizer can see it
 * (libuv's own queue is uninstrumented and suppressed there:
 * tests/replica/tsan.supp); static, so no thread initializes it. */
static pthread_mutex_t snap_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct snap_work {
    uv_work_t work; /* first: the pool thread finds the rest without a read */
    kvmux_node *n;
    put_shim *sh;
    unsigned trailing;
    const struct raft_snapshot *snapshot; /* C-Raft's; bufs[1..2] filled here */
    kvmux_fsm_snap *sn;
    int rc;
} snap_work;

static void snap_work_run(uv_work_t *w) { /* a pool thread */
    snap_work *sw = (snap_work *)(void *)w;
    pthread_mutex_lock(&snap_mu);
    kvmux_fsm_snap *sn = sw->sn;
    pthread_mutex_unlock(&snap_mu);
    int rc = kvmux_fsm_snap_run(sn);
    pthread_mutex_lock(&snap_mu);
    sw->rc = rc;
    pthread_mutex_unlock(&snap_mu);
}

static void snap_work_done(uv_work_t *w, int status) {
    snap_work *sw = w->data;
    kvmux_node *n = sw->n;
    (void)status; /* never cancelled: uv_cancel is not called */
    pthread_mutex_lock(&snap_mu);
    int failed = sw->rc != 0;
    pthread_mutex_unlock(&snap_mu);
    if (failed) {
        /* A shard grew past its measured bound: a bug that would write a
         * snapshot missing keys; better stop here than truncate the log
         * behind it (a restart recovers from the previous one). */
        KVMUX_LOG_E("replica: snapshot serialization overflowed its buffer; exiting");
        abort();
    }
    struct raft_buffer *b = sw->snapshot->bufs; /* ours, from fsm_snapshot */
    uint8_t *body, *tail;
    kvmux_fsm_snap_take(sw->sn, &body, &b[1].len, &tail, &b[2].len);
    b[1].base = body;
    b[2].base = tail;
    kvmux_fsm_snap_free(sw->sn);
    n->snap_work = NULL;
    /* The watchdog times the write, not the serialization (CPU work). */
    wait_add(n, &sw->sh->wait);
    int rc = n->io_snapshot_put(&n->io, sw->trailing, &sw->sh->req, sw->snapshot, fix_put_done);
    if (rc != 0) {
        KVMUX_LOG_E("replica: cannot write a snapshot: %s", raft_strerror(rc));
        fix_put_done(&sw->sh->req, rc);
    }
    free(sw);
    node_close(n); /* if a stop waited for this */
}

/* Own snapshots: serialized on the pool first (fsm_snapshot), written
 * after. Installed ones (trailing 0) go straight through. */
static int fix_snapshot_put(struct raft_io *io, unsigned trailing,
                            struct raft_io_snapshot_put *req,
                            const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb) {
    kvmux_node *n = node_of(io);
    note_snapshot(n, snapshot->index, snapshot->term);
    put_shim *sh = calloc(1, sizeof *sh);
    snap_work *sw = n->snap ? calloc(1, sizeof *sw) : NULL;
    if (!sh || (n->snap && !sw)) {
        free(sh);
        free(sw);
        if (n->snap) { /* release the store's marks now */
            (void)kvmux_fsm_snap_run(n->snap);
            kvmux_fsm_snap_free(n->snap);
            n->snap = NULL;
        }
        return RAFT_NOMEM; /* C-Raft frees the (empty) buffers */
    }
    sh->orig = req;
    sh->cb = cb;
    sh->n = n;
    sh->req.data = req->data;
    if (!sw) { /* an installed snapshot (trailing 0): written as is */
        sh->own = trailing != 0;
        if (sh->own) n->own_puts++; /* before: a callback may come from inside */
        wait_add(n, &sh->wait);
        int rc = n->io_snapshot_put(io, trailing, &sh->req, snapshot, fix_put_done);
        if (rc != 0) {
            if (sh->own) n->own_puts--;
            wait_del(n, &sh->wait);
            free(sh);
        }
        return rc;
    }
    sh->own = 1; /* counted from now: serialized, then written */
    *sw = (snap_work){.n = n, .sh = sh, .trailing = trailing, .snapshot = snapshot,
                      .sn = n->snap};
    sw->work.data = sw;
    pthread_mutex_lock(&snap_mu); /* publishes sw and the begun snapshot */
    pthread_mutex_unlock(&snap_mu);
    n->snap = NULL;
    n->snap_work = sw;
    n->own_puts++;
    if (uv_queue_work(&n->loop, &sw->work, snap_work_run, snap_work_done) != 0) {
        snap_work_run(&sw->work); /* cannot fail with these arguments */
        snap_work_done(&sw->work, 0);
    }
    return 0;
}

typedef struct get_shim {
    struct raft_io_snapshot_get req; /* first: the callback casts back */
    struct raft_io_snapshot_get *orig;
    raft_io_snapshot_get_cb cb;
    kvmux_node *n;
} get_shim;

static void fix_get_done(struct raft_io_snapshot_get *req, struct raft_snapshot *snap,
                         int status) {
    get_shim *sh = (get_shim *)(void *)req;
    if (status == 0 && snap) {
        sh->n->loaded_index = snap->index;
        sh->n->loaded_term = snap->term;
    }
    raft_io_snapshot_get_cb cb = sh->cb;
    struct raft_io_snapshot_get *orig = sh->orig;
    free(sh);
    cb(orig, snap, status);
}

static int fix_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                            raft_io_snapshot_get_cb cb) {
    kvmux_node *n = node_of(io);
    get_shim *sh = calloc(1, sizeof *sh);
    if (!sh) return RAFT_NOMEM;
    sh->orig = req;
    sh->cb = cb;
    sh->n = n;
    int rc = n->io_snapshot_get(io, &sh->req, fix_get_done);
    if (rc != 0) free(sh);
    return rc;
}

static int fix_send(struct raft_io *io, struct raft_io_send *req, const struct raft_message *m,
                    raft_io_send_cb cb) {
    kvmux_node *n = node_of(io);
    if (m->type != RAFT_INSTALL_SNAPSHOT || m->install_snapshot.last_index != n->loaded_index)
        return n->io_send(io, req, m, cb);
    struct raft_message fixed = *m; /* raft_uv encodes it before returning */
    fixed.install_snapshot.last_term = n->loaded_term;
    return n->io_send(io, req, &fixed, cb);
}

static void io_fix_install(kvmux_node *n) {
    n->io_load = n->io.load;
    n->io.load = fix_load;
    n->io_start = n->io.start;
    n->io_snapshot_put = n->io.snapshot_put;
    n->io_snapshot_get = n->io.snapshot_get;
    n->io_send = n->io.send;
    n->io_append = n->io.append;
    n->io.append = wd_append;
    n->io.start = fix_start;
    n->io.snapshot_put = fix_snapshot_put;
    n->io.snapshot_get = fix_snapshot_get;
    n->io.send = fix_send;
}

static int init_raft(kvmux_node *n, char *err, size_t errlen) {
    const kvmux_peer *self = kvmux_peers_find(&n->peers, n->cfg.id);
    n->transport.version = 1; /* the struct version we implement (raft/uv.h) */
    if (init_transport(n, err, errlen) != 0) return -1;
    n->tcp_ok = 1;
    int rc = raft_uv_init(&n->io, &n->loop, n->dir, &n->transport);
    if (rc != 0) {
        snprintf(err, errlen, "replication: raft_uv_init(%s): %s", n->dir, n->io.errmsg);
        return -1;
    }
    n->io_ok = 1;
    raft_uv_set_disk_retry(&n->io, DISK_RETRY_MS); /* the disk watchdog */
    io_fix_install(n);
    n->fsm.version = 1;
    n->fsm.data = n;
    n->fsm.apply = fsm_apply;
    n->fsm.snapshot = fsm_snapshot;
    n->fsm.restore = fsm_restore;
    rc = raft_init(&n->raft, &n->io, &n->fsm, n->cfg.id, self->raft_addr);
    if (rc != 0) return nerr(err, errlen, "raft_init", rc, NULL);
    n->raft_ok = 1;
    n->raft.data = n;
    raft_set_election_timeout(&n->raft, n->cfg.election_ms);
    raft_set_heartbeat_timeout(&n->raft, n->cfg.heartbeat_ms);
    /* Pre-vote (Raft thesis 9.6): a candidate first asks whether it could
     * win, without raising its term. Without it, after the leader dies
     * the two survivors of a 3-group each refuse the other's vote until
     * their own timer fires (C-Raft rejects votes while it still knows a
     * leader), then both stand in the same term and split the vote: the
     * measured failover p50 went from ~3 s to under 2 s (BENCHMARKS.md). */
    raft_set_pre_vote(&n->raft, true);
    raft_set_snapshot_threshold(&n->raft, n->cfg.snapshot_threshold);
    raft_set_snapshot_trailing(&n->raft, n->cfg.snapshot_threshold / 2 + 1);
    if (n->cfg.bootstrap && bootstrap(n, err, errlen) != 0) return -1;
    rc = raft_start(&n->raft);
    if (rc != 0) {
        /* raft_start may leave its own message empty and drop the
         * transport's (a Raft port that cannot be bound, for one). */
        const char *m = raft_errmsg(&n->raft);
        if (!m || !m[0]) m = n->transport.errmsg[0] ? n->transport.errmsg : raft_strerror(rc);
        return kvmux_errf(err, errlen, "replication: start (Raft address %s): %s",
                          self->raft_addr, m);
    }
    return 0;
}

int kvmux_node_start(kvmux_node **out, const kvmux_node_config *cfg, char *err, size_t errlen) {
    kvmux_node *n = calloc(1, sizeof *n);
    if (!n) return snprintf(err, errlen, "out of memory"), -1;
    n->cfg = *cfg;
    n->peers = *cfg->peers;
    n->table = *cfg->peers;
    n->cfg.peers = &n->peers;
    snprintf(n->dir, sizeof n->dir, "%s", cfg->dir);
    n->cfg.dir = n->dir;
    n->settle_since = kvmux_clock_ms();
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->mmu, NULL);
    if (make_dir(n->dir, err, errlen) != 0 || uv_loop_init(&n->loop) != 0) {
        pthread_mutex_destroy(&n->mu);
        pthread_mutex_destroy(&n->mmu);
        free(n);
        return -1;
    }
    uv_async_init(&n->loop, &n->async, on_async);
    n->async.data = n;
    uv_prepare_init(&n->loop, &n->prepare);
    n->prepare.data = n;
    uv_prepare_start(&n->prepare, on_prepare);
    uv_timer_init(&n->loop, &n->watchdog);
    n->watchdog.data = n;
    if (init_raft(n, err, errlen) != 0) {
        /* Nothing ran yet: close what libuv holds and give up (the
         * process exits on this error). */
        kvmux_node_stop(n);
        return -1;
    }
    watchdog_start(n);
    if (pthread_create(&n->thread, NULL, node_main, n) != 0) {
        snprintf(err, errlen, "replication: cannot start the Raft thread");
        kvmux_node_stop(n);
        return -1;
    }
    n->thread_started = 1;
    *out = n;
    return 0;
}

void kvmux_node_propose(kvmux_node *n, kvmux_rbatch *b) {
    b->next = NULL;
    pthread_mutex_lock(&n->mu);
    if (n->q_tail) n->q_tail->next = b;
    else n->q_head = b;
    n->q_tail = b;
    pthread_mutex_unlock(&n->mu);
    uv_async_send(&n->async);
}

void kvmux_node_get_status(kvmux_node *n, kvmux_node_status *st) {
    st->role = atomic_load(&n->role);
    st->leader = atomic_load(&n->leader);
    st->term = atomic_load(&n->term);
    st->commit_index = atomic_load(&n->commit_index);
    st->applied_index = atomic_load(&n->applied_index);
    st->elections = atomic_load(&n->elections);
    st->snapshots = atomic_load(&n->snapshots);
    st->last_failover_ms = atomic_load(&n->last_failover_ms);
    st->peer_refused = atomic_load(&n->peer_refused);
}

uint64_t kvmux_node_applied_version(kvmux_node *n) {
    return atomic_load_explicit(&n->applied_version, memory_order_acquire);
}

uint32_t kvmux_node_members(kvmux_node *n, kvmux_node_member *out, uint32_t max) {
    pthread_mutex_lock(&n->mmu);
    uint32_t k = n->npub < max ? n->npub : max;
    memcpy(out, n->pub, k * sizeof *out);
    pthread_mutex_unlock(&n->mmu);
    return k;
}

int kvmux_node_client_addr(kvmux_node *n, uint32_t id, char *out, size_t cap) {
    pthread_mutex_lock(&n->mmu);
    const kvmux_peer *p = kvmux_peers_find(&n->table, id);
    snprintf(out, cap, "%s", p ? p->client_addr : "");
    pthread_mutex_unlock(&n->mmu);
    return p ? 0 : -1;
}

void kvmux_node_stop(kvmux_node *n) {
    if (!n) return;
    pthread_mutex_lock(&n->mu);
    n->stopping = 1;
    pthread_mutex_unlock(&n->mu);
    uv_async_send(&n->async);
    if (n->thread_started) {
        pthread_join(n->thread, NULL);
    } else {
        /* Start failed before the thread: run the loop here to close. */
        uv_run(&n->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&n->loop);
    /* A change C-Raft never called back about (its batch is freed with
     * the loop's in-flight list). */
    free(n->admin_req);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->mmu);
    free(n);
}
