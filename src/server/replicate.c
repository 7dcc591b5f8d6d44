/* The request path in replicated mode (docs/REPLICATION.md).
 *
 * Writes. A write on the leader is not run: it is encoded into the loop's
 * current batch (src/replica/entry.h) and its request waits, keeping its
 * credit. At the end of the loop iteration the batch is proposed as ONE
 * Raft entry (group commit: 64 requests in flight on a connection cost one
 * replication round). The Raft thread applies committed entries to the
 * store (src/replica/fsm.c: versions are assigned there, identically on
 * every replica) and hands the batch back with one result per command
 * only if the applied entry is this process's own (origin tag: replica
 * id, boot nonce, loop, sequence). Only then is a write acknowledged. A
 * batch that fails after it was proposed (leadership lost, shutdown) is
 * answered OUTCOME_UNKNOWN (v3) / INTERNAL "outcome unknown" (v1/v2): the
 * entry may still be committed by the next leader.
 *
 * Reads. A read (GET, EXISTS, TTL, SCAN, WAIT) on the leader waits for the
 * same batch: the entry proposed after its arrival is a barrier, and once
 * it is applied here every write acknowledged anywhere before the read
 * arrived is in the store; the read then runs locally. An iteration with
 * reads and no writes proposes an empty entry: one barrier for all of them.
 *
 * Followers answer every request but STATS, SLOWLOG and CLIENT_LIST with
 * NOT_LEADER (v3: value = the leader's client address) or SHUTTING_DOWN
 * (v1/v2), unprocessed.
 *
 * Threads: everything here runs on the loop's thread except
 * kvmux__repl_post (the Raft thread) and the STATS reader (any loop). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "server_internal.h"

#ifdef KVMUX_HAVE_RAFT
#include "entry.h"
#include "fsm.h"
#include "node.h"
#include "peers.h"
#include "sessions.h"

/* A batch over this many bytes is proposed before the next command joins
 * it, so one 64 MiB value does not drag every small write of the
 * iteration into its replication time. */
#define BATCH_SOFT_MAX (1u << 20)
/* An idle leader proposes an empty entry this often, so the replicated
 * clock (the store's time) moves and TTLs expire without traffic. */
#define TICK_MS 1000u

struct kvmux_repl {
    kvmux_node *node;
    kvmux_sessions sessions;   /* the Raft thread's (fsm.c); STATS reads counters */
    kvmux_peers peers;
    uint32_t id;
    uint64_t nonce;
};

/* A request waiting for its batch. */
typedef struct pend {
    kvmux_conn *conn;          /* NULL once the connection is gone */
    uint32_t request_id;
    int32_t cmd;               /* its command in the entry; -1: a read */
    uint8_t op, extras_len;
    uint16_t klen;
    uint8_t extras[16];
    uint8_t *key;              /* reads: a copy of the key (malloc) */
} pend;

struct kvmux_lbatch {
    struct kvmux_rbatch rb;    /* what the node sees; rb.owner = this */
    kvmux_lbatch *lnext;       /* loop->rb_flight */
    pend *p;
    uint32_t np, pcap;
    size_t cap;                /* of rb.buf */
};

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void node_done(void *ud, kvmux_rbatch *b) {
    kvmux_server *s = ud;
    kvmux__repl_post(&s->loops[b->loop], b);
}

int kvmux__repl_start(kvmux_server *s, char *err, size_t errlen) {
    const kvmux_server_config *cfg = &s->cfg;
    if (cfg->replica_id == 0) return 0;
    kvmux_repl *r = calloc(1, sizeof *r);
    if (!r) return snprintf(err, errlen, "out of memory"), -1;
    if (kvmux_peers_parse(cfg->peers, &r->peers, err, errlen) != 0) {
        free(r);
        return -1;
    }
    r->id = cfg->replica_id;
    /* Boot nonce: tells this life's entries from a previous one's. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->nonce = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^
               ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
    char dir[512];
    if (cfg->replica_dir) snprintf(dir, sizeof dir, "%s", cfg->replica_dir);
    else snprintf(dir, sizeof dir, "./kvmux-replica-%u", cfg->replica_id);
    kvmux_node_config nc = {
        .id = r->id, .dir = dir, .peers = &r->peers, .bootstrap = (int)cfg->bootstrap,
        .election_ms = cfg->election_timeout_ms, .heartbeat_ms = cfg->heartbeat_timeout_ms,
        .snapshot_threshold = cfg->snapshot_threshold, .nonce = r->nonce,
        .store = s->store, .clock = &s->repl_clock, .sessions = &r->sessions,
        .done = node_done, .done_ud = s};
    kvmux_sessions_init(&r->sessions);
    if (kvmux_node_start(&r->node, &nc, err, errlen) != 0) {
        kvmux_sessions_clear(&r->sessions); /* a snapshot may have filled it */
        free(r);
        return -1;
    }
    s->repl = r;
    KVMUX_LOG_I("replication: replica %u of %u, dir %s", r->id, r->peers.n, dir);
    return 0;
}

void kvmux__repl_stop(kvmux_server *s) {
    if (!s->repl) return;
    kvmux_node_stop(s->repl->node);
    s->repl->node = NULL;
}

static void batch_free(kvmux_lbatch *lb) {
    for (uint32_t i = 0; i < lb->np; i++) free(lb->p[i].key);
    free(lb->p);
    free(lb->rb.buf);
    free(lb->rb.results);
    free(lb);
}

void kvmux__repl_loop_deinit(kvmux_loop *l) {
    /* Every batch done or never proposed: the node has stopped. */
    while (l->rb_flight) {
        kvmux_lbatch *lb = l->rb_flight;
        l->rb_flight = lb->lnext;
        batch_free(lb);
    }
    l->rb_flight_tail = NULL;
    if (l->rb_cur) batch_free(l->rb_cur);
    l->rb_cur = NULL;
    l->inbox_rb = NULL; /* the same batches as rb_flight */
}

void kvmux__repl_free(kvmux_server *s) {
    if (s->repl) kvmux_sessions_clear(&s->repl->sessions);
    free(s->repl);
    s->repl = NULL;
}

/* ---- answers ---- */

/* NOT_LEADER to v3, SHUTTING_DOWN to v1/v2 (COMMON contract): not
 * processed, retry on the leader. */
static void respond_not_leader(kvmux_conn *c, uint32_t id) {
    kvmux_repl *r = c->loop->srv->repl;
    kvmux_node_status st;
    kvmux_node_get_status(r->node, &st);
    const kvmux_peer *p = st.leader && st.leader != r->id ? kvmux_peers_find(&r->peers, st.leader)
                                                          : NULL;
    if (c->sess.version >= KVMUX_PROTO_V3) {
        kvmux__conn_respond(c, id, KVMUX_STATUS_NOT_LEADER, NULL, 0, p ? p->client_addr : NULL);
        return;
    }
    char msg[KVMUX_MAX_STATUS_MSG];
    if (p) snprintf(msg, sizeof msg, "not the leader; the leader is %s", p->client_addr);
    else snprintf(msg, sizeof msg, "not the leader; no leader known");
    kvmux__conn_respond(c, id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0, msg);
}

static void respond_unknown(kvmux_conn *c, uint32_t id) {
    if (c->sess.version >= KVMUX_PROTO_V3)
        kvmux__conn_respond(c, id, KVMUX_STATUS_OUTCOME_UNKNOWN, NULL, 0, "outcome unknown");
    else
        kvmux__conn_respond(c, id, KVMUX_STATUS_INTERNAL, NULL, 0, "outcome unknown");
}

/* A write's applied result, in the shapes dispatch.c gives them. */
static void respond_result(kvmux_conn *c, uint32_t id, const kvmux_fsm_result *res) {
    int st = res->status;
    if (st == KVMUX_STATUS_OK || st == KVMUX_STATUS_VERSION_MISMATCH) {
        kvmux__conn_respond(c, id, (uint8_t)st, res->extras, res->extras_len, NULL);
        return;
    }
    if (st == KVMUX_STATUS_INTERNAL && kvmux_session_is_v2(&c->sess))
        st = KVMUX_STATUS_OUT_OF_MEMORY;
    kvmux__conn_respond(c, id, (uint8_t)st, NULL, 0,
                        st == KVMUX_STATUS_INTERNAL || st == KVMUX_STATUS_OUT_OF_MEMORY
                            ? "out of memory"
                            : NULL);
}

/* Run a read whose barrier was applied. Returns 1 if it keeps its credit. */
static int run_read(kvmux_conn *c, const pend *p) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = c->sess.version;
    f.type = KVMUX_FRAME_REQUEST;
    f.code = p->op;
    f.request_id = p->request_id;
    f.extras = p->extras;
    f.extras_len = p->extras_len;
    f.key = p->key;
    f.key_len = p->klen;
    c->loop->repl_local = 1;
    int kept = kvmux__run_read(c, &f);
    c->loop->repl_local = 0;
    return kept;
}

static void answer(kvmux_lbatch *lb) {
    kvmux_rbatch *b = &lb->rb;
    for (uint32_t i = 0; i < lb->np; i++) {
        pend *p = &lb->p[i];
        kvmux_conn *c = p->conn;
        if (!c) continue;
        c->nrepl--;
        int kept = 0;
        if (b->status == 0 && p->cmd >= 0) {
            respond_result(c, p->request_id, &b->results[p->cmd]);
        } else if (b->status == 0) {
            kept = run_read(c, p);
        } else if (p->cmd >= 0 && b->accepted) {
            respond_unknown(c, p->request_id);
        } else {
            respond_not_leader(c, p->request_id);
        }
        if (!kept) kvmux_session_request_end(&c->sess);
        kvmux__conn_maybe_finish_drain(c);
    }
}

/* ---- gathering ---- */

static int is_write(uint8_t op) {
    return op == KVMUX_OP_SET || op == KVMUX_OP_DEL || op == KVMUX_OP_INCR ||
           op == KVMUX_OP_CAS || op == KVMUX_OP_EXPIRE || op == KVMUX_OP_PERSIST;
}

static int is_leader(kvmux_server *s) {
    kvmux_node_status st;
    kvmux_node_get_status(s->repl->node, &st);
    return st.role == 3;
}

static void propose(kvmux_loop *l);

/* The batch for this iteration, created on demand. NULL: out of memory. */
static kvmux_lbatch *cur_batch(kvmux_loop *l) {
    if (l->rb_cur) return l->rb_cur;
    kvmux_lbatch *lb = calloc(1, sizeof *lb);
    if (!lb) return NULL;
    lb->cap = 4096;
    lb->rb.buf = malloc(lb->cap);
    if (!lb->rb.buf) {
        free(lb);
        return NULL;
    }
    lb->rb.len = KVMUX_ENTRY_HDR_LEN;
    lb->rb.owner = lb;
    lb->rb.loop = (uint16_t)l->id;
    l->rb_cur = lb;
    return lb;
}

static pend *add_pend(kvmux_lbatch *lb) {
    if (lb->np == lb->pcap) {
        uint32_t cap = lb->pcap ? lb->pcap * 2 : 16;
        pend *p = realloc(lb->p, cap * sizeof *p);
        if (!p) return NULL;
        lb->p = p;
        lb->pcap = cap;
    }
    pend *p = &lb->p[lb->np];
    memset(p, 0, sizeof *p);
    return p;
}

/* Append one write command; returns its index or -1 (out of memory). */
static int32_t add_cmd(kvmux_loop *l, kvmux_lbatch **lbp, const kvmux_entry_cmd *cmd) {
    kvmux_lbatch *lb = *lbp;
    size_t n = kvmux_entry_cmd_size(cmd->extras_len, cmd->key_len, cmd->value_len);
    if (lb->rb.ncmds > 0 && lb->rb.len + n > BATCH_SOFT_MAX) {
        propose(l);
        if (!(lb = *lbp = cur_batch(l))) return -1;
    }
    if (lb->rb.len + n > lb->cap) {
        size_t cap = lb->cap;
        while (cap < lb->rb.len + n) cap *= 2;
        uint8_t *b = realloc(lb->rb.buf, cap);
        if (!b) return -1;
        lb->rb.buf = b;
        lb->cap = cap;
    }
    lb->rb.len += kvmux_entry_encode_cmd(lb->rb.buf + lb->rb.len, cmd);
    return (int32_t)lb->rb.ncmds++;
}

/* Queue request (c, id) on the current batch: a write with its command,
 * or a read (cmd NULL) with a copy of what it needs to run later. Returns
 * 1 (queued), or 0 after answering INTERNAL (out of memory). */
static int enqueue(kvmux_conn *c, uint32_t id, const kvmux_entry_cmd *cmd, const kvmux_frame *rf) {
    kvmux_loop *l = c->loop;
    kvmux_lbatch *lb = cur_batch(l);
    int32_t idx = -1;
    if (lb && cmd) idx = add_cmd(l, &lb, cmd);
    pend *p = lb && (!cmd || idx >= 0) ? add_pend(lb) : NULL;
    if (p && rf && rf->key_len) {
        p->key = malloc(rf->key_len);
        if (!p->key) p = NULL;
    }
    if (!p) {
        /* A write already encoded stays in the entry (it will be applied)
         * but nobody can be told: say so rather than guess. */
        if (idx >= 0) respond_unknown(c, id);
        else kvmux__conn_respond(c, id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    p->conn = c;
    p->request_id = id;
    p->cmd = idx;
    if (rf) {
        p->op = rf->code;
        p->extras_len = rf->extras_len;
        memcpy(p->extras, rf->extras, rf->extras_len);
        p->klen = rf->key_len;
        if (rf->key_len) memcpy(p->key, rf->key, rf->key_len);
    }
    lb->np++;
    c->nrepl++;
    return 1;
}

int kvmux__repl_request(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_loop *l = c->loop;
    kvmux_server *s = l->srv;
    if (!s->repl || l->repl_local || f->code == KVMUX_OP_STATS ||
        f->code == KVMUX_OP_SLOWLOG || f->code == KVMUX_OP_CLIENT_LIST)
        return -1;
    if (!is_leader(s)) {
        respond_not_leader(c, f->request_id);
        return 0;
    }
    if (!is_write(f->code)) {
        if (f->extras_len > 16) return -1; /* no such read: checked before */
        kvmux_frame rf = *f;
        if (f->code == KVMUX_OP_WAIT && kvmux_frame_has_deadline(f)) {
            /* The deadline caps the WAIT's timeout: fold it in now. */
            uint8_t ex[16];
            memcpy(ex, f->extras, f->extras_len);
            if (f->deadline_ms < kvmux_load_u32be(ex + 8))
                kvmux_store_u32be(ex + 8, f->deadline_ms);
            rf.extras = ex;
            return enqueue(c, f->request_id, NULL, &rf);
        }
        return enqueue(c, f->request_id, NULL, &rf);
    }
    int frees = f->code == KVMUX_OP_DEL || f->code == KVMUX_OP_EXPIRE ||
                f->code == KVMUX_OP_PERSIST;
    if (kvmux__durable_refuse(c, f->request_id, frees)) return 0; /* --maxmemory */
    kvmux_entry_cmd cmd = {.op = f->code, .extras_len = f->extras_len, .key_len = f->key_len,
                           .value_len = f->value_len, .extras = f->extras, .key = f->key,
                           .value = f->value,
                           .session = kvmux_frame_has_session(f) ? c->session_id : 0,
                           .seq = f->session_seq};
    return enqueue(c, f->request_id, &cmd, NULL);
}

int kvmux__repl_upload(kvmux_conn *c, uint32_t id, uint8_t op, const uint8_t *extras,
                       uint64_t seq, const uint8_t *key, uint16_t klen, kvmux_store_value *val) {
    kvmux_server *s = c->loop->srv;
    int rc;
    if (!is_leader(s)) {
        respond_not_leader(c, id);
        rc = 0;
    } else if (kvmux__durable_refuse(c, id, 0)) {
        rc = 0;
    } else {
        kvmux_entry_cmd cmd = {.op = op, .extras_len = op == KVMUX_OP_CAS ? 16 : 8,
                               .key_len = klen,
                               .value_len = (uint32_t)kvmux_store_value_len(val),
                               .extras = extras, .key = key,
                               .value = kvmux_store_value_data(val),
                               .session = seq ? c->session_id : 0, .seq = seq};
        rc = enqueue(c, id, &cmd, NULL);
    }
    kvmux_store_value_release(val);
    return rc;
}

/* ---- proposing and completing ---- */

static void propose(kvmux_loop *l) {
    kvmux_lbatch *lb = l->rb_cur;
    if (!lb) return;
    l->rb_cur = NULL;
    kvmux_repl *r = l->srv->repl;
    kvmux_entry_hdr h = {.origin = {.replica = (uint8_t)r->id, .loop = (uint16_t)l->id,
                                    .nonce = r->nonce, .seq = ++l->rb_seq},
                         .clock_ms = wall_ms(), .ncmds = lb->rb.ncmds,
                         .sess_window = l->srv->cfg.session_window,
                         .sess_max = l->srv->cfg.max_sessions,
                         .sess_timeout_ms = l->srv->cfg.session_timeout_ms};
    kvmux_entry_encode_hdr(lb->rb.buf, &h);
    lb->rb.seq = h.origin.seq;
    l->rb_last_ms = l->now;
    lb->rb.results = calloc(lb->rb.ncmds ? lb->rb.ncmds : 1, sizeof *lb->rb.results);
    lb->lnext = NULL;
    if (l->rb_flight_tail) l->rb_flight_tail->lnext = lb;
    else l->rb_flight = lb;
    l->rb_flight_tail = lb;
    if (!lb->rb.results) {
        /* Not proposed: answered as failed right here. */
        lb->rb.status = -1;
        lb->rb.accepted = 0;
        kvmux__repl_post(l, &lb->rb);
        return;
    }
    kvmux_node_propose(r->node, &lb->rb);
}

void kvmux__repl_post(kvmux_loop *l, kvmux_rbatch *b) {
    pthread_mutex_lock(&l->inbox_mu);
    b->next = l->inbox_rb;
    l->inbox_rb = b;
    int signal = !l->inbox_signalled;
    l->inbox_signalled = 1;
    pthread_mutex_unlock(&l->inbox_mu);
    if (signal) kvmux__loop_wake(l);
}

static void unlink_flight(kvmux_loop *l, kvmux_lbatch *lb) {
    kvmux_lbatch *prev = NULL;
    for (kvmux_lbatch *x = l->rb_flight; x; prev = x, x = x->lnext) {
        if (x != lb) continue;
        if (prev) prev->lnext = x->lnext;
        else l->rb_flight = x->lnext;
        if (l->rb_flight_tail == x) l->rb_flight_tail = prev;
        return;
    }
}

void kvmux__repl_iterate(kvmux_loop *l) {
    if (!l->srv->repl) return;
    pthread_mutex_lock(&l->inbox_mu);
    kvmux_rbatch *done = l->inbox_rb;
    l->inbox_rb = NULL;
    pthread_mutex_unlock(&l->inbox_mu);
    /* Pushed newest first: answer oldest first (FIFO per connection is
     * not promised, but it is kinder to readers of the logs). */
    kvmux_rbatch *rev = NULL;
    while (done) {
        kvmux_rbatch *next = done->next;
        done->next = rev;
        rev = done;
        done = next;
    }
    while (rev) {
        kvmux_rbatch *next = rev->next;
        kvmux_lbatch *lb = rev->owner;
        unlink_flight(l, lb);
        answer(lb);
        batch_free(lb);
        rev = next;
    }
    /* Loop 0 of an idle leader: a tick for the replicated clock. */
    if (!l->rb_cur && l->id == 0 && l->now - l->rb_last_ms >= TICK_MS &&
        is_leader(l->srv))
        cur_batch(l);
    propose(l);
}

void kvmux__repl_forget(kvmux_conn *c) {
    kvmux_loop *l = c->loop;
    if (!c->nrepl) return;
    for (kvmux_lbatch *lb = l->rb_flight; lb; lb = lb->lnext)
        for (uint32_t i = 0; i < lb->np; i++)
            if (lb->p[i].conn == c) lb->p[i].conn = NULL;
    if (l->rb_cur)
        for (uint32_t i = 0; i < l->rb_cur->np; i++)
            if (l->rb_cur->p[i].conn == c) l->rb_cur->p[i].conn = NULL;
    c->nrepl = 0;
}

static int holds_in(const kvmux_lbatch *lb, const kvmux_conn *c, uint32_t id) {
    for (uint32_t i = 0; lb && i < lb->np; i++)
        if (lb->p[i].conn == c && lb->p[i].request_id == id) return 1;
    return 0;
}

int kvmux__repl_holds(const kvmux_conn *c, uint32_t request_id) {
    const kvmux_loop *l = c->loop;
    if (!c->nrepl) return 0;
    for (const kvmux_lbatch *lb = l->rb_flight; lb; lb = lb->lnext)
        if (holds_in(lb, c, request_id)) return 1;
    return holds_in(l->rb_cur, c, request_id);
}

/* ---- STATS ---- */

static const char *role_name(int role) {
    switch (role) {
    case 3: return "leader";
    case 2: return "candidate";
    case 1: return "follower";
    default: return "unavailable";
    }
}

void kvmux__repl_stats(kvmux_server *s, void *o,
                       void (*u64line)(void *o, const char *name, uint64_t v),
                       void (*strline)(void *o, const char *name, const char *v)) {
    kvmux_repl *r = s->repl;
    if (!r || !r->node) return;
    kvmux_node_status st;
    kvmux_node_get_status(r->node, &st);
    /* The digest is taken between two reads of the applied index; a
     * stable index means the digest is the store's at that index (the
     * store changes only by applying entries). Bounded retries: each is
     * one walk of the store on this loop's thread (~50 ms per million
     * keys), paid by every STATS and /metrics scrape of a replica. */
    uint64_t digest = 0, applied = st.applied_index;
    for (int i = 0; i < 5; i++) {
        kvmux_node_get_status(r->node, &st);
        applied = st.applied_index;
        digest = kvmux_fsm_digest(s->store);
        kvmux_node_get_status(r->node, &st);
        if (st.applied_index == applied) break;
    }
    u64line(o, "replica_id", r->id);
    strline(o, "replica_role", role_name(st.role));
    u64line(o, "replica_term", st.term);
    u64line(o, "replica_leader", st.leader);
    u64line(o, "replica_commit_index", st.commit_index);
    u64line(o, "replica_applied_index", applied);
    u64line(o, "replica_elections", st.elections);
    u64line(o, "replica_snapshots", st.snapshots);
    u64line(o, "replica_last_failover_ms", st.last_failover_ms);
    u64line(o, "session_count", atomic_load(&r->sessions.n));
    u64line(o, "session_duplicates", atomic_load(&r->sessions.duplicates));
    u64line(o, "session_expired", atomic_load(&r->sessions.expired));
    u64line(o, "session_refused", atomic_load(&r->sessions.refused));
    char hex[24];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)digest);
    strline(o, "replica_digest", hex);
    /* On the leader: how far each follower's log is behind the commit. */
    for (uint32_t i = 0; i < r->peers.n; i++) {
        if (st.lag[i] == UINT64_MAX) continue;
        char nm[32];
        snprintf(nm, sizeof nm, "replica_lag_%u", r->peers.p[i].id);
        u64line(o, nm, st.lag[i]);
    }
}

#else /* !KVMUX_HAVE_RAFT: a single node only; config.c refuses --replica-id */

int kvmux__repl_start(kvmux_server *s, char *err, size_t errlen) {
    (void)err, (void)errlen;
    s->repl = NULL;
    return 0;
}
void kvmux__repl_stop(kvmux_server *s) { (void)s; }
void kvmux__repl_loop_deinit(kvmux_loop *l) { (void)l; }
void kvmux__repl_free(kvmux_server *s) { (void)s; }
int kvmux__repl_request(kvmux_conn *c, const kvmux_frame *f) {
    (void)c, (void)f;
    return -1;
}
int kvmux__repl_upload(kvmux_conn *c, uint32_t id, uint8_t op, const uint8_t *extras,
                       uint64_t seq, const uint8_t *key, uint16_t klen, kvmux_store_value *val) {
    (void)c, (void)id, (void)op, (void)extras, (void)seq, (void)key, (void)klen, (void)val;
    return -1;
}
void kvmux__repl_iterate(kvmux_loop *l) { (void)l; }
void kvmux__repl_post(kvmux_loop *l, struct kvmux_rbatch *b) { (void)l, (void)b; }
void kvmux__repl_forget(kvmux_conn *c) { (void)c; }
int kvmux__repl_holds(const kvmux_conn *c, uint32_t request_id) {
    (void)c, (void)request_id;
    return 0;
}
void kvmux__repl_stats(kvmux_server *s, void *o,
                       void (*u64line)(void *o, const char *name, uint64_t v),
                       void (*strline)(void *o, const char *name, const char *v)) {
    (void)s, (void)o, (void)u64line, (void)strline;
}

#endif
