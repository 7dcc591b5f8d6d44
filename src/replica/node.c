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
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#include "entry.h"
#include "log.h"
#include "monotime.h"
#ifdef KVMUX_HAVE_TLS
#include "transport.h"
#endif

typedef struct node_req {
    struct raft_apply req;
    kvmux_rbatch *b;
} node_req;

struct kvmux_node {
    kvmux_node_config cfg;
    kvmux_peers peers;
    char dir[4096];
    uv_loop_t loop;
    uv_async_t async;
    uv_prepare_t prepare;
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
    int closing;                 /* raft_close called */
    int tcp_ok, io_ok, raft_ok;  /* what init_raft got to (for stop) */
    int ptls;                    /* the transport is ours (transport.h) */
    uint32_t last_leader;
    uint64_t leaderless_since;   /* monotonic ms; 0 = a leader is known */
    uint64_t settle_since;       /* monotonic ms of the start or the last
                                    leader change (fsm_snapshot) */

    /* Published for any thread. */
    _Atomic int role;
    _Atomic uint32_t leader;
    _Atomic uint64_t term, commit_index, applied_index;
    _Atomic uint64_t elections, snapshots, last_failover_ms;
    _Atomic uint64_t peer_refused;
    _Atomic uint64_t lag[KVMUX_PEERS_MAX];
};

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
    kvmux_entry_hdr h;
    kvmux_entry_iter it;
    kvmux_rbatch *b = NULL;
    if (kvmux_entry_decode_hdr(buf->base, buf->len, &h, &it) == 0 &&
        h.origin.replica == n->cfg.id && h.origin.nonce == n->cfg.nonce)
        b = find_inflight(n, h.origin.loop, h.origin.seq);
    int rc = kvmux_fsm_apply(n->cfg.store, n->cfg.clock, buf->base, buf->len,
                             b ? b->results : NULL, b ? b->ncmds : 0);
    if (rc < 0) {
        /* Every replica skips the same corrupt entry: still deterministic. */
        KVMUX_LOG_E("replica: skipping a malformed log entry of %zu bytes", buf->len);
        return 0;
    }
    if (b) b->applied = 1;
    return 0;
}

/* How long a follower holds back its own snapshots after the start or a
 * leader change: the window in which the leader may send it a snapshot. */
#define SETTLE_ELECTIONS 10u

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
    uint8_t *p;
    size_t len;
    if (kvmux_fsm_snapshot(n->cfg.store, n->cfg.clock, ra_realloc, &p, &len) != 0)
        return RAFT_NOMEM;
    *bufs = raft_malloc(sizeof **bufs);
    if (!*bufs) {
        raft_free(p);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = p;
    (*bufs)[0].len = len;
    *n_bufs = 1;
    atomic_fetch_add(&n->snapshots, 1);
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf) {
    kvmux_node *n = fsm->data;
    int rc = kvmux_fsm_restore(n->cfg.store, n->cfg.clock, buf->base, buf->len);
    if (rc != 0) return RAFT_MALFORMED;
    raft_free(buf->base); /* ours once restored (C-Raft's contract) */
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

static void on_applied(struct raft_apply *req, int status, void *result) {
    (void)result;
    node_req *r = (node_req *)req;
    kvmux_rbatch *b = r->b;
    kvmux_node *n = req->data;
    free(r);
    b->priv = NULL;
    unlink_inflight(n, b);
    /* Success means committed and applied here: applied is then set. */
    batch_done(n, b, status == 0 && !b->applied ? RAFT_LEADERSHIPLOST : status);
}

static void submit(kvmux_node *n, kvmux_rbatch *b) {
    b->accepted = 0;
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
    b->priv = r;
    b->applied = 0;
    b->accepted = 1;
    b->next = n->inflight;
    n->inflight = b;
    int rc = raft_apply(&n->raft, &r->req, &rb, 1, on_applied);
    if (rc != 0) {
        /* C-Raft released copy itself on failure. */
        KVMUX_LOG_D("replica: raft_apply: %s", raft_strerror(rc));
        b->accepted = 0;
        unlink_inflight(n, b);
        free(r);
        b->priv = NULL;
        batch_done(n, b, rc);
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
    raft_uv_close(&n->io);
    transport_release(n);
    uv_close((uv_handle_t *)&n->async, NULL);
    uv_close((uv_handle_t *)&n->prepare, NULL);
}

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
    if (stop && !n->closing) {
        publish(n);
        n->closing = 1;
        atomic_store(&n->role, 0);
        if (n->raft_ok) {
            raft_close(&n->raft, on_closed);
        } else {
            /* init_raft failed part way: close what it opened. */
            if (n->io_ok) raft_uv_close(&n->io);
            if (n->tcp_ok) transport_release(n);
            uv_close((uv_handle_t *)&n->async, NULL);
            uv_close((uv_handle_t *)&n->prepare, NULL);
        }
    }
}

/* ---- status ---- */

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
    uint64_t commit = (uint64_t)raft_commit_index(r);
    for (uint32_t i = 0; i < n->peers.n; i++) {
        raft_index m = 0;
        uint64_t lag = UINT64_MAX;
        if (st == RAFT_LEADER && n->peers.p[i].id != n->cfg.id &&
            raft_match_index(r, n->peers.p[i].id, &m) == 0)
            lag = commit > (uint64_t)m ? commit - (uint64_t)m : 0;
        atomic_store(&n->lag[i], lag);
    }
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
    for (uint32_t i = 0; i < KVMUX_PEERS_MAX; i++) atomic_init(&n->lag[i], UINT64_MAX);
    n->cfg.peers = &n->peers;
    snprintf(n->dir, sizeof n->dir, "%s", cfg->dir);
    n->cfg.dir = n->dir;
    n->settle_since = kvmux_clock_ms();
    pthread_mutex_init(&n->mu, NULL);
    if (make_dir(n->dir, err, errlen) != 0 || uv_loop_init(&n->loop) != 0) {
        pthread_mutex_destroy(&n->mu);
        free(n);
        return -1;
    }
    uv_async_init(&n->loop, &n->async, on_async);
    n->async.data = n;
    uv_prepare_init(&n->loop, &n->prepare);
    n->prepare.data = n;
    uv_prepare_start(&n->prepare, on_prepare);
    if (init_raft(n, err, errlen) != 0) {
        /* Nothing ran yet: close what libuv holds and give up (the
         * process exits on this error). */
        kvmux_node_stop(n);
        return -1;
    }
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
    for (uint32_t i = 0; i < KVMUX_PEERS_MAX; i++)
        st->lag[i] = i < n->peers.n ? atomic_load(&n->lag[i]) : UINT64_MAX;
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
    pthread_mutex_destroy(&n->mu);
    free(n);
}
