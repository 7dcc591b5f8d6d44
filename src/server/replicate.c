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
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "monotime.h"
#include "server_internal.h"

#ifdef KVMUX_HAVE_RAFT
#include "entry.h"
#include "fsm.h"
#include "node.h"
#include "peers.h"
#include "sessions.h"
#include "stage.h"
#include "../cluster/cluster.h"
#include "migrec.h"

/* A batch over this many bytes is proposed before the next command joins
 * it, so one 64 MiB value does not drag every small write of the
 * iteration into its replication time. */
#define BATCH_SOFT_MAX (1u << 20)
/* An idle leader proposes an empty entry this often, so the replicated
 * clock (the store's time) moves and TTLs expire without traffic. */
#define TICK_MS 1000u

/* Leader lease (docs/REPLICATION.md "Reads in detail"): a write or barrier
 * entry proposed at monotonic time t0 and committed means a majority
 * heard from this leader after t0; C-Raft's followers refuse to vote while
 * they know a leader and start an election only after an election timeout
 * without one, so no other leader can exist before t0 + election timeout.
 * Reads arriving before t0 + LEASE_FRACTION x election timeout run at once
 * from this leader's store. The fraction leaves room for clocks that run
 * at different rates (25 %) and a pause between the check and the read. */
#define LEASE_NUM 3u
#define LEASE_DEN 4u

struct kvmux_repl {
    kvmux_node *node;
    kvmux_sessions sessions;   /* the Raft thread's (fsm.c); STATS reads counters */
    kvmux_stage_tab stage;     /* the Raft thread's (fsm.c): big values staged */
    kvmux_fsm_cluster cluster; /* the applied slot map (fsm.h): written by the
                                  Raft thread, read by loops */
    kvmux_peers peers;
    uint32_t id;
    uint64_t nonce;
    int lease_on;                    /* --read-mode lease */
    uint64_t lease_us;               /* LEASE_NUM/DEN of the election timeout */
    _Atomic uint64_t lease_until_us; /* monotonic; 0 = none */
    _Atomic uint64_t lease_gen;      /* bumped by kvmux__repl_lease_revoke */
    _Atomic uint64_t lease_reads;    /* reads run under the lease (STATS) */
    _Atomic uint64_t barrier_reads;  /* reads that waited for a barrier */
};

/* A big value being staged (stage.h): its request, the value (a
 * reference held until the last chunk is proposed) and how far it got.
 * Either a SET / CAS, or a slot migration's import batch of one big PUT
 * (import != NULL: proposed as IMPORT_STAGED at the end). */
typedef struct stage_job {
    uint32_t request_id;
    uint8_t op, extras_len;    /* SET or CAS, and its extras; an import:
                                  its answer's tag (migrate_target.c) */
    uint8_t extras[16];
    uint16_t klen;
    uint8_t *key;              /* malloc */
    uint64_t session, seq;
    kvmux_store_value *val;
    uint32_t base;             /* the value's first byte in val */
    uint32_t total, off;       /* bytes of the value, bytes proposed */
    uint8_t id[KVMUX_STAGE_ID_LEN];
    uint8_t *import;           /* malloc: the IMPORT_STAGED batch, its last
                                  20 bytes for the staged reference */
    uint32_t import_len;
} stage_job;

/* A request waiting for its batch. */
typedef struct pend {
    stage_job *job;            /* a chunk of this staged value, or NULL */
    kvmux_conn *conn;          /* NULL once the connection is gone */
    uint32_t request_id;
    int32_t cmd;               /* its command in the entry; -1: a read */
    uint16_t slot;             /* a write's key's slot (WRONG_SHARD answers) */
    uint8_t op, extras_len;    /* a write: its entry op */
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
    uint64_t t0_us;            /* monotonic time of the proposal */
    uint64_t lease_gen;        /* repl->lease_gen then */
};

/* A STALE read waiting for this replica's applied version to reach its
 * min_version. It keeps its credit; c->nrepl counts it. */
struct kvmux_stale {
    struct kvmux_stale *next;
    uint64_t min_version;
    uint64_t deadline;         /* loop ms */
    pend p;                    /* what to run (p.key: a copy) */
};

static void stale_free(struct kvmux_stale *s) {
    free(s->p.key);
    free(s);
}

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_us(void) { return kvmux_clock_ns() / 1000u; }

/* A replica that restarts with Raft state may have acknowledged entries
 * that granted the leader its lease just before it died; C-Raft would let
 * it vote as soon as it is back (it knows no leader yet). Waiting one
 * election timeout before starting Raft keeps it out of any election while
 * a lease it helped grant may still run. A fresh directory granted nothing. */
static void lease_restart_wait(const char *dir, uint32_t election_ms) {
    char path[600];
    int has_state = 0;
    for (int i = 1; i <= 2 && !has_state; i++) {
        snprintf(path, sizeof path, "%s/metadata%d", dir, i);
        has_state = access(path, F_OK) == 0;
    }
    if (!has_state) return;
    KVMUX_LOG_I("replication: restart: waiting %u ms before joining elections (read lease)",
                election_ms);
    struct timespec ts = {.tv_sec = election_ms / 1000u,
                          .tv_nsec = (long)(election_ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* An applied batch of this leader's own proposed at t0 extends the lease
 * to t0 + lease_us, unless a revoke came in between. */
static void lease_extend(kvmux_repl *r, const kvmux_lbatch *lb) {
    if (!r->lease_on || lb->lease_gen != atomic_load(&r->lease_gen)) return;
    uint64_t until = lb->t0_us + r->lease_us;
    uint64_t cur = atomic_load(&r->lease_until_us);
    while (cur < until && !atomic_compare_exchange_weak(&r->lease_until_us, &cur, until)) {}
}

static int lease_valid(kvmux_repl *r) {
    return r->lease_on && mono_us() < atomic_load(&r->lease_until_us);
}

void kvmux__repl_lease_revoke(kvmux_server *s) {
    if (!s->repl) return;
    atomic_fetch_add(&s->repl->lease_gen, 1);
    atomic_store(&s->repl->lease_until_us, 0);
}

/* Whether the host of "host:port" (IPv6 in brackets) is a loopback
 * literal or "localhost". */
static int raft_addr_is_loopback(const char *addr) {
    char host[KVMUX_PEER_ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
    if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') addr++, n -= 2;
    if (n >= sizeof host) return 0;
    memcpy(host, addr, n);
    host[n] = '\0';
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0) return 1;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The applier installed a map (fsm.h, Raft thread). */
static void map_installed(void *ud) {
    kvmux_server *s = ud;
    for (uint32_t i = 0; i < s->nloops; i++) kvmux__loop_wake(&s->loops[i]);
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
    r->lease_on = cfg->read_mode == KVMUX_READ_LEASE;
    r->lease_us = (uint64_t)cfg->election_timeout_ms * 1000u * LEASE_NUM / LEASE_DEN;
    if (r->lease_on) lease_restart_wait(dir, cfg->election_timeout_ms);
    kvmux_node_config nc = {
        .id = r->id, .dir = dir, .peers = &r->peers, .bootstrap = (int)cfg->bootstrap,
        .election_ms = cfg->election_timeout_ms, .heartbeat_ms = cfg->heartbeat_timeout_ms,
        .snapshot_threshold = cfg->snapshot_threshold, .nonce = r->nonce,
        .disk_timeout_ms = cfg->replica_disk_timeout_ms,
        .store = s->store, .clock = &s->repl_clock, .sessions = &r->sessions,
        .stage = &r->stage, .cluster = &r->cluster, .done = node_done, .done_ud = s};
    kvmux_sessions_init(&r->sessions);
    kvmux_stage_init(&r->stage);
    kvmux_fsm_cluster_init(&r->cluster, (uint16_t)cfg->cluster_group);
    r->cluster.cas = cfg->cluster_map_group != 0;
    /* Parked CLUSTER watches (mapwatch.c) wait for a newer map: wake the
     * loops when one is applied rather than have them poll. */
    r->cluster.installed = map_installed;
    r->cluster.installed_ud = s;
    if (cfg->peer_tls) {
        nc.ptls_cert = cfg->peer_tls_cert ? cfg->peer_tls_cert : cfg->tls_cert;
        nc.ptls_key = cfg->peer_tls_key ? cfg->peer_tls_key : cfg->tls_key;
        nc.ptls_ca = cfg->peer_tls_ca ? cfg->peer_tls_ca : cfg->tls_ca;
        nc.ptls_handshake_ms = cfg->peer_tls_handshake_timeout_ms;
    }
    /* Not refused (a private network may be what the operator relies
     * on), but said at every start: anyone reaching this port can speak
     * for a replica. */
    const kvmux_peer *self = kvmux_peers_find(&r->peers, r->id);
    if (!cfg->peer_tls && self && !raft_addr_is_loopback(self->raft_addr))
        KVMUX_LOG_W("replication: the Raft port %s is plain TCP without authentication; "
                    "across machines use --peer-tls yes (docs/REPLICATION.md \"Peer security\")",
                    self->raft_addr);
    if (kvmux_node_start(&r->node, &nc, err, errlen) != 0) {
        kvmux_sessions_clear(&r->sessions); /* a snapshot may have filled it */
        kvmux_stage_clear(&r->stage);
        kvmux_fsm_cluster_clear(&r->cluster);
        free(r);
        return -1;
    }
    s->repl = r;
    KVMUX_LOG_I("replication: replica %u of %u, dir %s, peer transport %s", r->id, r->peers.n,
                dir, cfg->peer_tls ? "TLS 1.3" : "plain TCP");
    return 0;
}

void kvmux__repl_stop(kvmux_server *s) {
    if (!s->repl) return;
    kvmux_node_stop(s->repl->node);
    s->repl->node = NULL;
}

static void job_free(stage_job *j) {
    if (!j) return;
    if (j->val) kvmux_store_value_release(j->val);
    free(j->key);
    free(j->import);
    free(j);
}

static void batch_free(kvmux_lbatch *lb) {
    for (uint32_t i = 0; i < lb->np; i++) {
        free(lb->p[i].key);
        job_free(lb->p[i].job);
    }
    free(lb->p);
    free(lb->rb.buf);
    free(lb->rb.results);
    free(lb->rb.admin);
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
    kvmux__mapwatch_loop_deinit(l);
    kvmux__migt_loop_deinit(l);
    while (l->stale) {
        struct kvmux_stale *s = l->stale;
        l->stale = s->next;
        stale_free(s);
    }
}

void kvmux__repl_free(kvmux_server *s) {
    if (s->repl) kvmux_sessions_clear(&s->repl->sessions);
    if (s->repl) kvmux_stage_clear(&s->repl->stage);
    if (s->repl) kvmux_fsm_cluster_clear(&s->repl->cluster);
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
    /* The leader's client address: from --peers, or from the member
     * table replicated through the log (members added at run time). */
    char addr[KVMUX_PEER_ADDR_MAX] = "";
    if (st.leader && st.leader != r->id)
        kvmux_node_client_addr(r->node, st.leader, addr, sizeof addr);
    if (c->sess.version >= KVMUX_PROTO_V3) {
        kvmux__conn_respond(c, id, KVMUX_STATUS_NOT_LEADER, NULL, 0, addr[0] ? addr : NULL);
        return;
    }
    char msg[KVMUX_MAX_STATUS_MSG];
    if (addr[0]) snprintf(msg, sizeof msg, "not the leader; the leader is %s", addr);
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
static void respond_result(kvmux_conn *c, const pend *p, const kvmux_fsm_result *res) {
    uint32_t id = p->request_id;
    int st = res->status;
    if (p->op == KVMUX_ENTRY_OP_MIGREC) {
        kvmux__migreq_done(c, id, res);
        return;
    }
    if (p->op == KVMUX_ENTRY_OP_MAP && res->extras_len == 16) {
        kvmux__cluster_setmap_done(c, id, res->status, kvmux_load_u64be(res->extras),
                                   kvmux_load_u64be(res->extras + 8));
        return;
    }
    if (st == KVMUX_STATUS_WRONG_SHARD) { /* refused at apply time (fsm.c) */
        kvmux__cluster_wrong_shard(c, id, p->slot);
        return;
    }
    if (st == KVMUX_STATUS_TRY_AGAIN) { /* a fenced slot (fsm.c, migout.h) */
        kvmux__cluster_try_again_migrating(c, id, p->slot);
        return;
    }
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

static void stage_done(kvmux_loop *l, pend *p, const kvmux_rbatch *b);

static uint32_t leader_id(kvmux_server *s) {
    kvmux_node_status st;
    kvmux_node_get_status(s->repl->node, &st);
    return st.leader;
}

/* A membership change's outcome: OK (u64 leader id, value = what
 * happened) or the node's status with its message. */
static void respond_admin(kvmux_conn *c, uint32_t id, const kvmux_node_admin *a) {
    if (a->status == KVMUX_STATUS_OK)
        kvmux__conn_respond_u64(c, id, leader_id(c->loop->srv), (const uint8_t *)a->msg,
                                strlen(a->msg));
    else
        kvmux__conn_respond(c, id, a->status, NULL, 0, a->msg);
}

/* A slot migration's request (migrate_target.c answers it). */
static int is_mig_op(uint8_t op) {
    return op == KVMUX_ENTRY_OP_MIGSTEP || op == KVMUX_ENTRY_OP_IMPORT ||
           op == KVMUX_ENTRY_OP_IMPORT_STAGED;
}

static void answer(kvmux_loop *l, kvmux_lbatch *lb, kvmux_repl *r) {
    kvmux_rbatch *b = &lb->rb;
    if (b->status == 0) lease_extend(r, lb);
    for (uint32_t i = 0; i < lb->np; i++) {
        pend *p = &lb->p[i];
        kvmux_conn *c = p->conn;
        if (p->job) {
            stage_done(l, p, b);
            continue;
        }
        if (!c) continue;
        c->nrepl--;
        int kept = 0;
        if (b->admin && b->status == 0) {
            respond_admin(c, p->request_id, b->admin);
        } else if (b->admin) {
            respond_not_leader(c, p->request_id); /* not processed */
        } else if (b->status == 0 && p->cmd >= 0 && is_mig_op(p->op)) {
            kept = kvmux__migt_done(c, p->request_id, p->op, p->extras, &b->results[p->cmd]);
        } else if (b->status == 0 && p->cmd >= 0) {
            respond_result(c, p, &b->results[p->cmd]);
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


/* ---- STALE reads (docs/REPLICATION.md "Stale reads") ---- */


/* Copy what run_read needs from f into p (key malloc'd). 0, or -1. */
static int pend_copy(pend *p, kvmux_conn *c, const kvmux_frame *f) {
    p->conn = c;
    p->request_id = f->request_id;
    p->cmd = -1;
    p->op = f->code;
    p->extras_len = f->extras_len;
    memcpy(p->extras, f->extras, f->extras_len);
    p->klen = f->key_len;
    p->key = NULL;
    if (f->key_len && !(p->key = malloc(f->key_len))) return -1;
    if (f->key_len) memcpy(p->key, f->key, f->key_len);
    return 0;
}

/* A STALE read: run it here now if this replica has applied min_version
 * (returns -1: dispatch runs it locally, no barrier, leader or not), else
 * park it until it has or until min(its deadline, --max-wait) passes
 * (TIMEOUT). Returns 1 (parked) or 0 (answered). */
static int stale_read(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_loop *l = c->loop;
    if (kvmux_node_applied_version(l->srv->repl->node) >= f->min_version) return -1;
    uint32_t wait = c->lim.max_wait_ms;
    if (kvmux_frame_has_deadline(f) && f->deadline_ms < wait) wait = f->deadline_ms;
    struct kvmux_stale *s = calloc(1, sizeof *s);
    if (!s || f->extras_len > sizeof s->p.extras || pend_copy(&s->p, c, f) != 0) {
        if (s) stale_free(s);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    if (f->code == KVMUX_OP_WAIT && kvmux_frame_has_deadline(f) &&
        f->deadline_ms < kvmux_load_u32be(s->p.extras + 8))
        kvmux_store_u32be(s->p.extras + 8, f->deadline_ms); /* as for leader reads */
    s->min_version = f->min_version;
    s->deadline = l->now + wait;
    s->next = l->stale;
    l->stale = s;
    c->nrepl++;
    return 1;
}

/* Each loop iteration (and every STALE_POLL_MS while any is parked):
 * run the parked reads whose version has been applied, time out the
 * others whose deadline passed. */
static void stale_check(kvmux_loop *l) {
    if (!l->stale) return;
    uint64_t applied = kvmux_node_applied_version(l->srv->repl->node);
    struct kvmux_stale **pp = &l->stale;
    while (*pp) {
        struct kvmux_stale *s = *pp;
        kvmux_conn *c = s->p.conn;
        int ready = applied >= s->min_version;
        if (c && !ready && l->now < s->deadline) {
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        if (c) {
            c->nrepl--;
            int kept = 0;
            if (ready)
                kept = run_read(c, &s->p);
            else
                kvmux__conn_respond(c, s->p.request_id, KVMUX_STATUS_TIMEOUT, NULL, 0,
                                    "min_version not applied on this replica in time");
            if (!kept) kvmux_session_request_end(&c->sess);
            kvmux__conn_maybe_finish_drain(c);
        }
        stale_free(s);
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
    if (cmd) {
        p->op = cmd->op;
        p->slot = kvmux_slot(cmd->key, cmd->key_len);
    }
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


/* ---- GROUP (opcode 15): status and membership changes ---- */

/* Append printf output to buf (cap bytes, *len used); silently stops at
 * the end (the status text is bounded: KVMUX_PEERS_MAX lines). */
static void sb(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void sb(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n > 0) *len = (size_t)n < cap - *len ? *len + (size_t)n : cap - 1;
}

static const char *role_name(int role);

static const char *member_role(int role) {
    return role == KVMUX_MEMBER_VOTER ? "voter" : role == KVMUX_MEMBER_STANDBY ? "standby"
                                                                               : "spare";
}

/* "status": this replica's view of the group, "name:value" lines like
 * STATS (docs/PROTOCOL.md 17.3). Any replica answers. */
static void group_status(kvmux_conn *c, uint32_t id) {
    kvmux_repl *r = c->loop->srv->repl;
    kvmux_node_status st;
    kvmux_node_get_status(r->node, &st);
    kvmux_node_member m[KVMUX_PEERS_MAX];
    uint32_t k = kvmux_node_members(r->node, m, KVMUX_PEERS_MAX);
    char buf[4096], laddr[KVMUX_PEER_ADDR_MAX] = "";
    size_t len = 0;
    if (st.leader) kvmux_node_client_addr(r->node, st.leader, laddr, sizeof laddr);
    sb(buf, sizeof buf, &len, "id:%u\nrole:%s\nterm:%llu\nleader:%u\nleader_addr:%s\n", r->id,
       role_name(st.role), (unsigned long long)st.term, st.leader, laddr);
    sb(buf, sizeof buf, &len,
       "commit_index:%llu\napplied_index:%llu\nelections:%llu\nsnapshots:%llu\n"
       "last_failover_ms:%llu\nmembers:%u\n",
       (unsigned long long)st.commit_index, (unsigned long long)st.applied_index,
       (unsigned long long)st.elections, (unsigned long long)st.snapshots,
       (unsigned long long)st.last_failover_ms, k);
    /* What this build's state machine applies beyond the base ops: a
     * migration needs every replica of its groups to show migrate1
     * (docs/MIGRATION.md 10.2). */
    sb(buf, sizeof buf, &len, "features: migrate1\n");
    for (uint32_t i = 0; i < k; i++) {
        char lag[24] = "-";
        if (m[i].lag != UINT64_MAX) snprintf(lag, sizeof lag, "%llu", (unsigned long long)m[i].lag);
        sb(buf, sizeof buf, &len, "member_%u:%s raft=%s client=%s lag=%s%s\n", m[i].id,
           member_role(m[i].role), m[i].raft_addr, m[i].client_addr[0] ? m[i].client_addr : "-",
           lag, m[i].id == st.leader ? " leader" : "");
    }
    kvmux__conn_respond_u64(c, id, st.leader, (const uint8_t *)buf, len);
}

/* Decimal id 1..255 from s[0..n). Returns it, or 0. */
static uint32_t parse_id(const char *s, size_t n) {
    uint32_t v = 0;
    if (n == 0 || n > 3) return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    return v <= 255 ? v : 0;
}

/* Split args (NUL-terminated, modified) on spaces into at most max
 * words; returns how many there were (may exceed max). */
static int split_words(char *args, char **w, int max) {
    int k = 0;
    char *save = NULL;
    for (char *t = strtok_r(args, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (k < max) w[k] = t;
        k++;
    }
    return k;
}

/* Parse a change into a; 0, or -1 with msg set. */
static int parse_change(const kvmux_frame *f, kvmux_node_admin *a, char *msg, size_t cap) {
    char args[KVMUX_GROUP_ARGS_MAX + 1];
    memcpy(args, f->value, f->value_len);
    args[f->value_len] = '\0';
    char *w[4];
    int k = split_words(args, w, 4);
    if (f->key_len == 3 && memcmp(f->key, "add", 3) == 0) {
        a->op = KVMUX_ADMIN_ADD;
        if (k != 3) return snprintf(msg, cap, "usage: add ID RAFTHOST:PORT CLIENTHOST:PORT"), -1;
        char spec[3 * KVMUX_PEER_ADDR_MAX];
        kvmux_peers one;
        snprintf(spec, sizeof spec, "%s=%s/%s", w[0], w[1], w[2]);
        if (kvmux_peers_parse(spec, &one, msg, cap) != 0) return -1;
        a->id = one.p[0].id;
        a->peer = one.p[0];
        return 0;
    }
    int rm = f->key_len == 6 && memcmp(f->key, "remove", 6) == 0;
    int tr = f->key_len == 8 && memcmp(f->key, "transfer", 8) == 0;
    if (!rm && !tr)
        return snprintf(msg, cap, "unknown GROUP subcommand '%.*s' (status, add, remove, "
                        "transfer)", (int)(f->key_len > 32 ? 32 : f->key_len), f->key), -1;
    a->op = rm ? KVMUX_ADMIN_REMOVE : KVMUX_ADMIN_TRANSFER;
    if (rm ? k != 1 : k > 1)
        return snprintf(msg, cap, rm ? "usage: remove ID" : "usage: transfer [ID]"), -1;
    if (k == 1 && !(a->id = parse_id(w[0], strlen(w[0]))))
        return snprintf(msg, cap, "bad replica id '%.16s' (1..255)", w[0]), -1;
    return 0;
}

/* GROUP: status here; changes on the leader, through the Raft thread. */
static int group_request(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_loop *l = c->loop;
    if (f->key_len == 6 && memcmp(f->key, "status", 6) == 0) {
        if (f->value_len)
            kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                                "status takes no arguments");
        else group_status(c, f->request_id);
        return 0;
    }
    char msg[KVMUX_MAX_STATUS_MSG];
    kvmux_node_admin *a = calloc(1, sizeof *a);
    if (!a) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    if (parse_change(f, a, msg, sizeof msg) != 0) {
        free(a);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, msg);
        return 0;
    }
    if (!is_leader(l->srv)) {
        free(a);
        respond_not_leader(c, f->request_id);
        return 0;
    }
    /* A transfer's TimeoutNow lets the chosen follower win a vote while
     * the others still know this leader: the read lease must end first. */
    if (a->op == KVMUX_ADMIN_TRANSFER) kvmux__repl_lease_revoke(l->srv);
    /* A batch of its own (not the iteration's entry): one pending request,
     * no entry, the change in rb.admin. */
    kvmux_lbatch *lb = calloc(1, sizeof *lb);
    pend *p = lb ? add_pend(lb) : NULL;
    if (!p) {
        if (lb) free(lb->p);
        free(lb);
        free(a);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    p->conn = c;
    p->request_id = f->request_id;
    p->cmd = -2;
    lb->np = 1;
    lb->rb.admin = a;
    lb->rb.owner = lb;
    lb->rb.loop = (uint16_t)l->id;
    c->nrepl++;
    if (l->rb_flight_tail) l->rb_flight_tail->lnext = lb;
    else l->rb_flight = lb;
    l->rb_flight_tail = lb;
    kvmux_node_propose(l->srv->repl->node, &lb->rb);
    return 1; /* keeps its credit until answered */
}

int kvmux__repl_request(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_loop *l = c->loop;
    kvmux_server *s = l->srv;
    if (!s->repl || l->repl_local || f->code == KVMUX_OP_STATS ||
        f->code == KVMUX_OP_SLOWLOG || f->code == KVMUX_OP_CLIENT_LIST)
        return -1;
    if (f->code == KVMUX_OP_GROUP) return group_request(c, f);
    if (f->flags & KVMUX_FLAG_STALE) return stale_read(c, f); /* a read: checked */
    if (!is_leader(s)) {
        respond_not_leader(c, f->request_id);
        return 0;
    }
    if (!is_write(f->code)) {
        if (f->extras_len > 16) return -1; /* no such read: checked before */
        /* Under a valid lease every write acknowledged anywhere is in this
         * store: run it now (the caller does). */
        if (lease_valid(s->repl)) {
            l->repl_lease_reads++;
            atomic_fetch_add_explicit(&s->repl->lease_reads, 1, memory_order_relaxed);
            return -1;
        }
        atomic_fetch_add_explicit(&s->repl->barrier_reads, 1, memory_order_relaxed);
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

struct kvmux_fsm_cluster *kvmux__repl_cluster(kvmux_server *s) {
    return s->repl ? &s->repl->cluster : NULL;
}

int kvmux__repl_is_leader(kvmux_server *s) { return s->repl && is_leader(s); }

uint64_t kvmux__repl_term(kvmux_server *s) {
    if (!s->repl) return 0;
    kvmux_node_status st;
    kvmux_node_get_status(s->repl->node, &st);
    return st.term;
}

void kvmux__repl_respond_not_leader(kvmux_conn *c, uint32_t id) { respond_not_leader(c, id); }

int kvmux__repl_propose_map(kvmux_loop *l, const uint8_t *p, size_t n) {
    if (!l->srv->repl || !is_leader(l->srv)) return -1;
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n, .value = p};
    kvmux_lbatch *lb = cur_batch(l);
    /* No pend: nobody is answered; the batch is proposed this iteration. */
    return lb && add_cmd(l, &lb, &cmd) >= 0 ? 0 : -1;
}

int kvmux__repl_propose_migstep(kvmux_loop *l, uint32_t id, uint8_t step, const uint8_t *v,
                                size_t n) {
    if (!l->srv->repl || !is_leader(l->srv) || n > 64) return -1;
    uint8_t ex[KVMUX_MIGSTEP_EXTRAS_LEN];
    kvmux_store_u32be(ex, id);
    ex[4] = step;
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_MIGSTEP, .extras_len = sizeof ex, .extras = ex,
                           .value_len = (uint32_t)n, .value = v};
    kvmux_lbatch *lb = cur_batch(l);
    return lb && add_cmd(l, &lb, &cmd) >= 0 ? 0 : -1;
}

int kvmux__repl_propose(kvmux_conn *c, uint32_t id, const kvmux_entry_cmd *cmd) {
    if (!is_leader(c->loop->srv)) {
        respond_not_leader(c, id);
        return 0;
    }
    return enqueue(c, id, cmd, NULL);
}

int kvmux__repl_propose_cmd(kvmux_conn *c, uint32_t id, const kvmux_entry_cmd *cmd,
                            const uint8_t *tag, uint8_t taglen) {
    kvmux_loop *l = c->loop;
    if (!is_leader(l->srv)) {
        respond_not_leader(c, id);
        return 0;
    }
    if (!enqueue(c, id, cmd, NULL)) return 0;
    pend *p = &l->rb_cur->p[l->rb_cur->np - 1]; /* enqueue's, in the current batch */
    p->extras_len = taglen;
    memcpy(p->extras, tag, taglen);
    return 1;
}

uint64_t kvmux__repl_propose_internal(kvmux_loop *l, const kvmux_entry_cmd *cmd) {
    propose(l); /* what the iteration gathered goes first, in its own entry */
    kvmux_lbatch *lb = cur_batch(l);
    if (!lb || add_cmd(l, &lb, cmd) < 0) return 0;
    propose(l);
    return l->rb_seq;
}

int kvmux__repl_seq_in_flight(const kvmux_loop *l, uint64_t seq) {
    for (const kvmux_lbatch *lb = l->rb_flight; lb; lb = lb->lnext)
        if (lb->rb.seq == seq) return 1;
    return 0;
}

int kvmux__repl_setmap(kvmux_conn *c, const kvmux_frame *f) {
    if (!is_leader(c->loop->srv)) {
        respond_not_leader(c, f->request_id);
        return 0;
    }
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_MAP, .value_len = f->value_len,
                           .value = f->value};
    return enqueue(c, f->request_id, &cmd, NULL);
}

/* ---- big values: staged in chunks (stage.h) ---- */

/* The request of job j ends without its write being proposed: not
 * processed (NOT_LEADER when leadership went), or refused. */
static void stage_fail(kvmux_conn *c, stage_job *j, int not_leader) {
    if (not_leader) respond_not_leader(c, j->request_id);
    else kvmux__conn_respond(c, j->request_id, KVMUX_STATUS_INTERNAL, NULL, 0,
                             "staging the value failed");
    kvmux_session_request_end(&c->sess);
    kvmux__conn_maybe_finish_drain(c);
    job_free(j);
}

/* Propose the next chunk of j as an entry of its own (what this iteration
 * gathered so far goes first, in its own entry): one chunk in flight per
 * value, so the group's small writes commit between two chunks. */
static void stage_chunk(kvmux_loop *l, kvmux_conn *c, stage_job *j) {
    propose(l);
    uint32_t n = j->total - j->off < KVMUX_STAGE_CHUNK ? j->total - j->off : KVMUX_STAGE_CHUNK;
    uint8_t ex[8];
    kvmux_store_u32be(ex, j->off);
    kvmux_store_u32be(ex + 4, j->total);
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_STAGE, .extras_len = 8,
                           .key_len = KVMUX_STAGE_ID_LEN, .value_len = n, .extras = ex,
                           .key = j->id,
                           .value = (const uint8_t *)kvmux_store_value_data(j->val) + j->base +
                                    j->off};
    kvmux_lbatch *lb = cur_batch(l);
    int32_t idx = lb ? add_cmd(l, &lb, &cmd) : -1;
    pend *p = idx >= 0 ? add_pend(lb) : NULL;
    if (!p) {
        stage_fail(c, j, 0);
        return;
    }
    p->conn = c;
    p->request_id = j->request_id;
    p->cmd = idx;
    p->job = j;
    j->off += n;
    lb->np++;
    c->nrepl++;
    propose(l);
}

/* The SET/CAS naming the staged value: a small write like any other; or
 * the import batch naming it (IMPORT_STAGED, answered by
 * kvmux__migt_done with the job's tag). */
static void stage_finish(kvmux_conn *c, stage_job *j) {
    uint8_t ref[KVMUX_STAGE_ID_LEN + 4];
    memcpy(ref, j->id, KVMUX_STAGE_ID_LEN);
    kvmux_store_u32be(ref + KVMUX_STAGE_ID_LEN, j->total);
    if (j->import) {
        memcpy(j->import + j->import_len - sizeof ref, ref, sizeof ref);
        kvmux_entry_cmd ic = {.op = KVMUX_ENTRY_OP_IMPORT_STAGED, .value = j->import,
                              .value_len = j->import_len};
        if (!kvmux__repl_propose_cmd(c, j->request_id, &ic, j->extras, j->extras_len))
            kvmux_session_request_end(&c->sess);
        job_free(j);
        return;
    }
    kvmux_entry_cmd cmd = {.op = j->op == KVMUX_OP_CAS ? KVMUX_ENTRY_OP_CAS_STAGED
                                                       : KVMUX_ENTRY_OP_SET_STAGED,
                           .extras_len = j->extras_len, .key_len = j->klen,
                           .value_len = sizeof ref, .extras = j->extras, .key = j->key,
                           .value = ref, .session = j->session, .seq = j->seq};
    enqueue(c, j->request_id, &cmd, NULL);
    job_free(j);
}

/* A chunk's entry is done: next chunk, the final write, or the end. */
static void stage_done(kvmux_loop *l, pend *p, const kvmux_rbatch *b) {
    stage_job *j = p->job;
    kvmux_conn *c = p->conn;
    p->job = NULL;
    if (!c) { /* the connection went: the staged chunks expire (stage.h) */
        job_free(j);
        return;
    }
    c->nrepl--;
    if (b->status != 0) {
        stage_fail(c, j, 1);
    } else if (b->results[p->cmd].status != KVMUX_STATUS_OK) {
        stage_fail(c, j, 0);
    } else if (j->off < j->total) {
        stage_chunk(l, c, j);
    } else {
        stage_finish(c, j);
        kvmux__conn_maybe_finish_drain(c);
    }
}

/* Name the job's staged value and propose its first chunk (the caller
 * checked leadership and memory). */
static void stage_begin(kvmux_conn *c, stage_job *j) {
    kvmux_loop *l = c->loop;
    /* Unique for this process's life: its boot nonce, the loop, a count. */
    uint64_t tag = (uint64_t)l->id << 48 | (++l->stage_seq & 0xFFFFFFFFFFFFull);
    kvmux_store_u64be(j->id, l->srv->repl->nonce);
    kvmux_store_u64be(j->id + 8, tag);
    stage_chunk(l, c, j);
}

/* Start staging a value over one chunk (the caller checked leadership and
 * memory). Takes val. Returns 1 (queued) or 0 (answered). */
static int stage_start(kvmux_conn *c, uint32_t id, uint8_t op, const uint8_t *extras,
                       uint64_t seq, const uint8_t *key, uint16_t klen, kvmux_store_value *val) {
    stage_job *j = calloc(1, sizeof *j);
    if (j) j->key = malloc(klen ? klen : 1);
    if (!j || !j->key) {
        free(j);
        kvmux_store_value_release(val);
        kvmux__conn_respond(c, id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    j->request_id = id;
    j->op = op;
    j->extras_len = op == KVMUX_OP_CAS ? 16 : 8;
    memcpy(j->extras, extras, j->extras_len);
    memcpy(j->key, key, klen);
    j->klen = klen;
    j->session = seq ? c->session_id : 0;
    j->seq = seq;
    j->val = val;
    j->total = (uint32_t)kvmux_store_value_len(val);
    stage_begin(c, j);
    return 1;
}

int kvmux__repl_import_staged(kvmux_conn *c, uint32_t id, kvmux_store_value *val, size_t voff,
                              uint32_t vlen, uint8_t *batch, uint32_t batch_len,
                              const uint8_t *tag, uint8_t taglen) {
    stage_job *j = NULL;
    if (!is_leader(c->loop->srv)) {
        respond_not_leader(c, id);
    } else if (!(j = calloc(1, sizeof *j))) {
        kvmux__conn_respond(c, id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
    }
    if (!j) {
        kvmux_store_value_release(val);
        free(batch);
        return 0;
    }
    j->request_id = id;
    j->op = KVMUX_ENTRY_OP_IMPORT_STAGED;
    j->extras_len = taglen;
    memcpy(j->extras, tag, taglen);
    j->val = val;
    j->base = (uint32_t)voff;
    j->total = vlen;
    j->import = batch;
    j->import_len = batch_len;
    stage_begin(c, j);
    return 1;
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
    } else if (kvmux_store_value_len(val) > KVMUX_STAGE_CHUNK) {
        return stage_start(c, id, op, extras, seq, key, klen, val);
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
    lb->t0_us = mono_us();
    lb->lease_gen = atomic_load(&r->lease_gen);
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
    stale_check(l);
    kvmux__mapwatch_iterate(l); /* may add a MAP command to this iteration's entry */
    kvmux__migrate_iterate(l);  /* may add a MIGSTEP or MAP command (the migrate thread's) */
    kvmux__waits_recheck_slots(l);
    kvmux__migt_iterate(l);     /* may propose a PURGE or IN_READY entry */
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
        answer(l, lb, l->srv->repl);
        batch_free(lb);
        rev = next;
    }
    /* Loop 0 of an idle leader: a tick for the replicated clock. */
    if (!l->rb_cur && l->id == 0 && l->now - l->rb_last_ms >= TICK_MS &&
        is_leader(l->srv))
        cur_batch(l);
    /* Reads served under the lease and no proposal in flight: renew it
     * with an empty entry once half of it has run, so a read-only load
     * never falls back to a barrier per batch. */
    kvmux_repl *r = l->srv->repl;
    if (!l->rb_cur && !l->rb_flight && l->repl_lease_reads && r->lease_on &&
        mono_us() + r->lease_us / 2 >= atomic_load(&r->lease_until_us) && is_leader(l->srv)) {
        l->repl_lease_reads = 0;
        cur_batch(l);
    }
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
    for (struct kvmux_stale *s = l->stale; s; s = s->next)
        if (s->p.conn == c) s->p.conn = NULL;
    kvmux__mapwatch_forget(c);
    kvmux__migt_forget(c);
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
    for (const struct kvmux_stale *s = l->stale; s; s = s->next)
        if (s->p.conn == c && s->p.request_id == request_id) return 1;
    if (kvmux__mapwatch_holds(c, request_id)) return 1;
    if (kvmux__migt_holds(c, request_id)) return 1;
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

void kvmux__repl_stats(kvmux_server *s, void *o, int want_digest,
                       void (*u64line)(void *o, const char *name, uint64_t v),
                       void (*strline)(void *o, const char *name, const char *v)) {
    kvmux_repl *r = s->repl;
    if (!r || !r->node) return;
    kvmux_node_status st;
    kvmux_node_get_status(r->node, &st);
    u64line(o, "replica_id", r->id);
    strline(o, "replica_role", role_name(st.role));
    u64line(o, "replica_term", st.term);
    u64line(o, "replica_leader", st.leader);
    u64line(o, "replica_commit_index", st.commit_index);
    u64line(o, "replica_applied_index", st.applied_index);
    u64line(o, "replica_elections", st.elections);
    u64line(o, "replica_snapshots", st.snapshots);
    u64line(o, "replica_last_failover_ms", st.last_failover_ms);
    u64line(o, "replica_peer_refused", st.peer_refused);
    strline(o, "replica_read_mode", r->lease_on ? "lease" : "barrier");
    u64line(o, "replica_lease_reads", atomic_load(&r->lease_reads));
    u64line(o, "replica_barrier_reads", atomic_load(&r->barrier_reads));
    u64line(o, "session_count", atomic_load(&r->sessions.n));
    u64line(o, "session_duplicates", atomic_load(&r->sessions.duplicates));
    u64line(o, "session_expired", atomic_load(&r->sessions.expired));
    u64line(o, "session_refused", atomic_load(&r->sessions.refused));
    kvmux_node_member m[KVMUX_PEERS_MAX];
    uint32_t k = kvmux_node_members(r->node, m, KVMUX_PEERS_MAX);
    u64line(o, "replica_members", k);
    /* On the leader: how far each follower's log is behind the commit. */
    for (uint32_t i = 0; i < k; i++) {
        if (m[i].lag == UINT64_MAX) continue;
        char nm[32];
        snprintf(nm, sizeof nm, "replica_lag_%u", m[i].id);
        u64line(o, nm, m[i].lag);
    }
    if (!want_digest) return;
    /* The digest walks the whole store on this loop's thread (~50 ms per
     * million keys), so only a STATS asking for it by name pays it, never
     * a plain STATS or a /metrics scrape. It is taken between two reads
     * of the applied index; a stable index means the digest is the
     * store's at that index (the store changes only by applying entries).
     * Bounded retries. */
    uint64_t digest = 0, applied = 0;
    for (int i = 0; i < 5; i++) {
        kvmux_node_get_status(r->node, &st);
        applied = st.applied_index;
        digest = kvmux_fsm_digest(s->store);
        kvmux_node_get_status(r->node, &st);
        if (st.applied_index == applied) break;
    }
    char hex[24];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)digest);
    strline(o, "replica_digest", hex);
    u64line(o, "replica_digest_index", applied);
}

#else /* !KVMUX_HAVE_RAFT: a single node only; config.c refuses --replica-id */

int kvmux__repl_start(kvmux_server *s, char *err, size_t errlen) {
    (void)err, (void)errlen;
    s->repl = NULL;
    return 0;
}
void kvmux__repl_stop(kvmux_server *s) { (void)s; }
struct kvmux_fsm_cluster *kvmux__repl_cluster(kvmux_server *s) {
    (void)s;
    return NULL;
}
int kvmux__repl_setmap(kvmux_conn *c, const kvmux_frame *f) {
    kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                        "built without replication");
    return 0;
}
int kvmux__repl_propose(kvmux_conn *c, uint32_t id, const struct kvmux_entry_cmd *cmd) {
    (void)cmd;
    kvmux__conn_respond(c, id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, "built without replication");
    return 0;
}
int kvmux__repl_is_leader(kvmux_server *s) {
    (void)s;
    return 0;
}
uint64_t kvmux__repl_term(kvmux_server *s) {
    (void)s;
    return 0;
}
void kvmux__repl_respond_not_leader(kvmux_conn *c, uint32_t id) {
    kvmux__conn_respond(c, id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0, "not the leader");
}
int kvmux__repl_propose_map(kvmux_loop *l, const uint8_t *p, size_t n) {
    (void)l, (void)p, (void)n;
    return -1;
}
int kvmux__repl_propose_migstep(kvmux_loop *l, uint32_t id, uint8_t step, const uint8_t *v,
                                size_t n) {
    (void)l, (void)id, (void)step, (void)v, (void)n;
    return -1;
}
void kvmux__repl_loop_deinit(kvmux_loop *l) { (void)l; }
int kvmux__repl_propose_cmd(kvmux_conn *c, uint32_t id, const struct kvmux_entry_cmd *cmd,
                            const uint8_t *tag, uint8_t taglen) {
    (void)cmd, (void)tag, (void)taglen;
    kvmux__conn_respond(c, id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, "built without replication");
    return 0;
}
int kvmux__repl_import_staged(kvmux_conn *c, uint32_t id, kvmux_store_value *val, size_t voff,
                              uint32_t vlen, uint8_t *batch, uint32_t batch_len,
                              const uint8_t *tag, uint8_t taglen) {
    (void)voff, (void)vlen, (void)batch_len, (void)tag, (void)taglen;
    kvmux_store_value_release(val);
    free(batch);
    kvmux__conn_respond(c, id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, "built without replication");
    return 0;
}
uint64_t kvmux__repl_propose_internal(kvmux_loop *l, const struct kvmux_entry_cmd *cmd) {
    (void)l, (void)cmd;
    return 0;
}
int kvmux__repl_seq_in_flight(const kvmux_loop *l, uint64_t seq) {
    (void)l, (void)seq;
    return 0;
}
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
void kvmux__repl_lease_revoke(kvmux_server *s) { (void)s; }
void kvmux__repl_post(kvmux_loop *l, struct kvmux_rbatch *b) { (void)l, (void)b; }
void kvmux__repl_forget(kvmux_conn *c) { (void)c; }
int kvmux__repl_holds(const kvmux_conn *c, uint32_t request_id) {
    (void)c, (void)request_id;
    return 0;
}
void kvmux__repl_stats(kvmux_server *s, void *o, int want_digest,
                       void (*u64line)(void *o, const char *name, uint64_t v),
                       void (*strline)(void *o, const char *name, const char *v)) {
    (void)s, (void)o, (void)want_digest, (void)u64line, (void)strline;
}

#endif
