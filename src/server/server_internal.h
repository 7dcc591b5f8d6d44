/* kvmuxd internals shared by server.c, loop.c, conn.c, dispatch.c and
 * waits.c. Not installed, not an API: the layout may change freely.
 *
 * Threading model (read this before touching anything):
 * - The server has N loops; each loop is one thread with its own epoll set,
 *   timer heap and connections. A connection, its read/write buffers, its
 *   session and its list of parked WAITs are touched only by its loop's
 *   thread.
 * - The only cross-thread paths are (a) the store (shard mutexes),
 *   (b) a loop's inbox (inbox_mu): new connections handed over by the
 *   accepting loop, and parked WAITs fired by a writer on another loop,
 *   and (c) server-wide atomics (stop flag, connection count, stats).
 * - Anything pushed into an inbox is followed by a write to the loop's
 *   eventfd, but only on the empty -> non-empty edge (inbox_signalled).
 * - Store values are refcounted (store.h): a loop may keep a reference to
 *   a value (a large response being sent) and drop it later without any
 *   lock; the store frees the bytes when the last reference goes.
 *
 * Protocol v2 per connection (all loop-thread state):
 * - uploads (upload.c): fragmented REQUESTs being reassembled, each into a
 *   store value reserved from its total_value_len;
 * - ostreams (sched.c): fragmented RESPONSEs being sent, each holding a
 *   reference to the value; the output scheduler interleaves their
 *   fragments with small frames, within the client's windows.
 * Both hold their request's credit until answered, like a parked WAIT. */
#ifndef KVMUX_SERVER_INTERNAL_H
#define KVMUX_SERVER_INTERNAL_H

#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "aof.h"
#include "fsm.h"
#include "outbuf.h"
#include "proto.h"
#include "server.h"
#include "store.h"
#include "timer.h"
#include "tls.h"

typedef struct kvmux_loop kvmux_loop;
typedef struct kvmux_conn kvmux_conn;
typedef struct kvmux_wait kvmux_wait;
typedef struct kvmux_upload kvmux_upload;
typedef struct kvmux_ostream kvmux_ostream;
typedef struct kvmux_repl kvmux_repl;       /* replicate.c */
typedef struct kvmux_lbatch kvmux_lbatch;   /* replicate.c */
struct kvmux_rbatch;                        /* src/replica/node.h */

/* A write's RESPONSE held until the append-only log's fsync covers it
 * (--fsync always; durable.c). conn is NULL once the connection is gone. */
typedef struct kvmux_held {
    kvmux_conn *conn;
    uint64_t lsn;                  /* kvmux_aof_appended() after the write */
    uint32_t request_id;
    uint8_t status;
    uint8_t extras_len;
    uint8_t extras[16];
} kvmux_held;

/* What an epoll event's data.ptr points at: the first member of each. */
enum kvmux_io_kind { KVMUX_IO_WAKE = 1, KVMUX_IO_LISTEN = 2, KVMUX_IO_CONN = 3,
                     KVMUX_IO_METRICS_LISTEN = 4, KVMUX_IO_METRICS_CONN = 5 /* metrics.c */ };
typedef struct kvmux_io {
    int kind;
    int fd;
} kvmux_io;

#define KVMUX_SCRATCH_LEN (64u * 1024)   /* one read(2) per readable event */

/* Per-loop counters: written by the loop thread, summed by get_stats from
 * any thread, hence relaxed atomics (no contention: one loop per set). */
typedef struct kvmux_loop_stats {
    _Atomic uint64_t accepted, rejected;
    _Atomic uint64_t requests[KVMUX_OP_MAX + 1];
    _Atomic uint64_t pings, busy, protocol_errors, handshake_timeouts;
    _Atomic uint64_t slow_readers, waits_parked, waits_fired, waits_timed_out;
    _Atomic uint64_t bytes_in, bytes_out;
    _Atomic uint64_t idle_timeouts, write_timeouts, floods, cancels, goaways;
    _Atomic uint64_t uploads, streams, deadline_expired;
    _Atomic uint64_t writes_held, aof_refused, oom_refused;
    _Atomic uint64_t auth_failures;
    _Atomic uint64_t tls_handshake_failures, tls_errors;
    _Atomic uint64_t cluster_try_again, cluster_wrong_shard, cluster_try_again_migrating;
    _Atomic uint64_t responses[KVMUX_STATUS_MAX + 1];  /* by status */
    _Atomic uint64_t wire_errors[KVMUX_STATS_ERR_SLOTS]; /* ERRORs sent, by code */
} kvmux_loop_stats;

/* What SIGHUP may change while connections stay up (reload.c): the
 * server's copy is guarded by rt_mu; each loop keeps its own copy, taken
 * when the server's rt_epoch moves past the loop's (checked once per
 * iteration), so the request path reads it without a lock. */
/* Per-connection limits a reload may change (SIGHUP). A connection copies
 * them from its loop's kvmux_rt when it is attached and keeps that copy
 * for its whole life: a reload applies to new connections only, so a
 * client never sees its limits move under requests already in flight
 * (an idle timeout shortened below its current idle time, say). */
typedef struct kvmux_conn_limits {
    uint32_t handshake_timeout_ms; /* --handshake-timeout */
    uint32_t idle_timeout_ms;      /* --idle-timeout, 0 = never */
    uint32_t write_timeout_ms;     /* --write-timeout, 0 = never */
    uint32_t close_linger_ms;      /* --close-linger */
    uint32_t max_wait_ms;          /* --max-wait */
    uint32_t max_ping_rate;        /* --max-ping-rate, 0 = no cap */
    uint32_t max_cancel_rate;      /* --max-cancel-rate, 0 = no cap */
    uint64_t max_upload_buffer;    /* --max-upload-buffer */
} kvmux_conn_limits;

/* The limits of cfg, as a new connection takes them. */
void kvmux__conn_limits_from(kvmux_conn_limits *lim, const kvmux_server_config *cfg);

typedef struct kvmux_rt {
    uint8_t auth[KVMUX_MAX_AUTH_TOKEN]; /* --requirepass token */
    size_t auth_len;               /* 0 = no authentication */
    struct ssl_ctx_st *tls_ctx;    /* --tls-cert (one reference held) */
    kvmux_conn_limits lim;         /* for connections attached from now on */
} kvmux_rt;

#define KVMUX_STAT_ADD(loop, field, n) \
    atomic_fetch_add_explicit(&(loop)->stats.field, (uint64_t)(n), memory_order_relaxed)

/* Shutdown progress of one loop. */
enum kvmux_loop_phase {
    KVMUX_LOOP_RUNNING = 0,
    KVMUX_LOOP_DRAINING = 1, /* not reading; parked WAITs may still finish */
    KVMUX_LOOP_FLUSHING = 2  /* WAITs answered; last bytes going out */
};

struct kvmux_loop {
    kvmux_server *srv;
    uint32_t id;
    int epfd;
    kvmux_io wake;                 /* eventfd */
    pthread_t thread;
    int thread_started;

    /* Membership of conns, and each connection's info.name, guarded by
     * conns_mu: the owner takes it to link, unlink and name a connection;
     * CLIENT_LIST (introspect.c) takes it, from any loop's thread, to
     * read the list. The owner reads its list without it. */
    pthread_mutex_t conns_mu;

    /* Cross-thread inbox, guarded by inbox_mu. */
    pthread_mutex_t inbox_mu;
    kvmux_conn *inbox_conns;       /* handed-over connections (link) */
    kvmux_wait *inbox_waits;       /* fired WAITs (inbox_next) */
    int inbox_signalled;           /* eventfd written since the last drain */
    struct kvmux_rbatch *inbox_rb; /* replicated batches done (replicate.c) */

    /* Loop-thread state. */
    kvmux_timer_heap timers;
    kvmux_conn *conns;             /* all attached connections (prev/next) */
    size_t nconns;
    kvmux_conn *dirty;             /* connections with output to flush */
    kvmux_conn *dead;              /* closed, torn down at end of iteration */
    uint8_t *scratch;              /* KVMUX_SCRATCH_LEN read buffer */
    uint64_t now;                  /* monotonic ms, refreshed per iteration */
    enum kvmux_loop_phase phase;
    kvmux_timer phase_timer;       /* shutdown deadlines */
    kvmux_timer accept_timer;      /* loop 0: resume accept after EMFILE */
    int listening;                 /* loop 0: listener in the epoll set */
    uint32_t next_target;          /* loop 0: round-robin hand-off */
    uint64_t last_reject_log;      /* loop 0: rate limit for reject logs */
    kvmux_held *held;              /* FIFO of held write responses: */
    size_t held_head, held_len, held_cap; /* [head, len) live, lsn ascending */
    kvmux_timer expire_timer;      /* active expiry cycle (expire.c) */
    /* Replicated mode (replicate.c): the batch this iteration gathers, the
     * batches proposed and not yet answered (oldest first), the next
     * sequence number, and "run this read locally" while one is re-run. */
    kvmux_lbatch *rb_cur;
    kvmux_lbatch *rb_flight, *rb_flight_tail;
    uint64_t rb_seq;
    uint64_t rb_last_ms;           /* loop time of the last proposal */
    uint64_t stage_seq;            /* big values staged by this loop */
    uint64_t repl_lease_reads;     /* reads run under the lease since the
                                      last renewal (replicate.c) */
    int repl_local;
    struct kvmux_stale *stale;     /* parked STALE reads (replicate.c) */
    struct kvmux_mwatch *mwatch;   /* parked CLUSTER watches (mapwatch.c) */
    uint64_t waits_map_stamp;      /* map epochs last checked against the
                                      parked WAITs (waits.c) */
    struct kvmux_migt *migt;       /* parked import-begins, the janitor
                                      (migrate_target.c); NULL until used */
    uint64_t waits_fence_stamp;    /* migration fence generation likewise */
    kvmux_rt rt;                   /* this loop's copy (reload.c) */
    uint64_t rt_epoch;             /* of srv->rt when copied */
    struct kvmux_metrics_loop *metrics; /* latency histograms (metrics.c) */
    kvmux_loop_stats stats;
};

/* What CLIENT_LIST reports of a connection (introspect.c), readable from
 * any thread: the owner loop writes the atomics (relaxed: each is exact,
 * the set is not a snapshot) after each read and each flush; name is
 * written once, at the handshake, under loop->conns_mu. */
typedef struct kvmux_conn_info {
    uint64_t created_ms;           /* monotonic; immutable after conn_new */
    _Atomic uint64_t bytes_in, bytes_out;
    _Atomic uint64_t last_input_ms;/* monotonic ms of the last bytes read */
    _Atomic uint32_t in_flight;    /* requests read, not answered */
    _Atomic uint32_t credits;      /* the client's credits left */
    _Atomic uint8_t version;       /* negotiated protocol; 0 before HELLO */
    _Atomic uint8_t tls;
    char name[KVMUX_MAX_NAME + 1]; /* from the HELLO; "" if none */
} kvmux_conn_info;

enum kvmux_conn_state {
    KVMUX_CONN_OPEN = 0,    /* reading and answering */
    KVMUX_CONN_DRAINING,    /* server shutdown: no more reading; parked
                               WAITs may still complete */
    KVMUX_CONN_CLOSING,     /* last frame (ERROR) queued: flushing */
    KVMUX_CONN_LINGER,      /* flushed, write side shut: discarding input
                               until EOF so close() does not RST our ERROR */
    KVMUX_CONN_DEAD         /* on loop->dead, torn down at end of iteration */
};

struct kvmux_conn {
    kvmux_io io;                   /* first member (epoll data.ptr) */
    kvmux_loop *loop;              /* owner; set on attach */
    kvmux_conn *prev, *next;       /* loop->conns */
    kvmux_conn *link;              /* inbox or dead list */
    kvmux_conn *dirty_next;
    int dirty;                     /* on loop->dirty */
    enum kvmux_conn_state state;
    int read_paused;               /* output over the pause watermark */
    int want_write;                /* EPOLLOUT on: output stuck or yielded */
    int out_stalled;               /* the last flush left bytes queued (the
                                      socket is full): --write-timeout runs */
    uint32_t events;               /* epoll mask currently registered */
    kvmux_session sess;
    uint8_t *rbuf;                 /* unprocessed input (NULL when empty) */
    size_t rlen, rcap;
    kvmux_outbuf out;
    kvmux_timer timer;             /* handshake timeout, then idle and
                                      stuck-output checks, then linger */
    uint64_t last_input;           /* loop time of the last bytes read */
    uint64_t last_output;          /* loop time output last moved (or
                                      started waiting on a full socket) */
    kvmux_conn_limits lim;         /* its loop's rt.lim when attached */
    kvmux_rate ping_rate;          /* --max-ping-rate */
    kvmux_rate cancel_rate;        /* --max-cancel-rate */
    uint32_t last_request_id;      /* last REQUEST read: GOAWAY reports it */
    uint64_t session_id;           /* v3 HELLO settings 9/10; 0 = none */
    kvmux_wait *waits;             /* parked WAITs of this connection */
    uint32_t nwaits;
    kvmux_upload *uploads;         /* v2 fragmented requests coming in */
    uint32_t nuploads;
    uint64_t upload_bytes;         /* bytes reserved by uploads */
    kvmux_ostream *ostreams;       /* v2 fragmented responses going out */
    kvmux_ostream *ostream_cursor; /* round-robin position */
    uint32_t nostreams;
    uint32_t nheld;                /* entries in loop->held for this conn */
    uint32_t nrepl;                /* requests waiting for replication */
    uint64_t id;                   /* for logs */
    char peer[INET6_ADDRSTRLEN + 8];
    kvmux_conn_info info;          /* CLIENT_LIST (introspect.c) */
    /* In-memory connection (harness.c; io.fd is -1): output goes to
     * mem_sink instead of a socket, and there is no epoll registration. */
    void (*mem_sink)(void *ud, const uint8_t *p, size_t n);
    void *mem_ud;
    /* TLS (tls.c; all zero on a plaintext connection). */
    struct ssl_st *ssl;            /* NULL: plaintext */
    uint8_t tls_hs;                /* handshake in progress */
    uint8_t tls_want_write;        /* the handshake waits for writability */
    uint8_t tls_read_wants_write;  /* SSL_read waits for writability */
    uint8_t tls_write_wants_read;  /* SSL_write waits for readability */
    uint8_t tls_peeked;            /* first byte checked (not plaintext) */
    uint8_t tls_failed;            /* TLS error: no close_notify */
    uint8_t tls_notified;          /* close_notify sent */
};

/* A parked WAIT. Lifetime rules are in waits.c. */
struct kvmux_wait {
    kvmux_store_waiter sw;         /* store's view; first member */
    kvmux_timer timer;             /* in loop->timers */
    kvmux_loop *loop;              /* owner; immutable */
    kvmux_conn *conn;              /* NULL once orphaned; owner thread only */
    kvmux_wait *cprev, *cnext;     /* conn->waits; owner thread only */
    kvmux_wait *inbox_next;        /* loop inbox; under inbox_mu */
    uint64_t deadline;             /* the WAIT's own timeout (ms) */
    uint64_t version;
    uint32_t request_id;
    uint16_t klen;
    uint8_t key[];
};

struct kvmux_server {
    kvmux_server_config cfg;       /* bind/name point into the copies below */
    char bind_copy[INET6_ADDRSTRLEN];
    char name_copy[KVMUX_MAX_NAME + 1];
    kvmux_settings settings;       /* advertised in HELLO_ACK */
    size_t read_pause_bytes;       /* pause reading above this much output */
    kvmux_store *store;
    kvmux_aof *aof;                /* NULL without --aof */
    kvmux_io listen;               /* listening socket */
    uint16_t port;
    kvmux_loop *loops;
    uint32_t nloops;
    _Atomic int stop_requested;
    _Atomic uint32_t nconns;       /* across loops, for max_connections */
    _Atomic uint64_t next_conn_id;
    int running;
    uint64_t start_ms;             /* monotonic, at creation: uptime */
    /* Run-time values (reload.c). rt.tls_ctx non-NULL: every connection
     * is TLS; rt is written under rt_mu, then rt_epoch is bumped. */
    pthread_mutex_t rt_mu;
    kvmux_rt rt;
    _Atomic uint64_t rt_epoch;
    _Atomic int auth_required;     /* rt.auth_len > 0, for STATS */
    _Atomic uint64_t rt_maxmemory; /* --maxmemory now, for STATS */
    _Atomic uint32_t rt_busy_poll_us; /* --busy-poll now: each loop reads it
                                         once per iteration */
    _Atomic int reload_requested;  /* SIGHUP: loop 0 runs reload_fn */
    kvmux_server_reload_fn reload_fn;
    void *reload_ud;
    struct kvmux_metrics *metrics; /* --metrics-addr, slow log (metrics.c) */
    kvmux_repl *repl;              /* NULL: a single node (replicate.c) */
    struct kvmux_mapw *mapw;       /* --cluster-map watcher (mapwatch.c) */
    struct kvmux_migr *migr;       /* the migrate thread (migrate.c) */
    kvmux_fsm_clock repl_clock;    /* replicated mode: the store's clock */
    _Atomic uint64_t auth_log_ms;  /* rate limit of auth failure logs */
    _Atomic uint64_t auth_log_dropped; /* failures not logged since */
};

/* All functions below run on the loop thread that owns their loop /
 * connection unless marked "any thread". */

/* ---- server.c ---- */
/* kvmux_server_new; listen == 0 opens no socket (in-memory harness). */
int kvmux__server_create(kvmux_server **out, const kvmux_server_config *cfg, int listen,
                         char *err, size_t errlen);

/* ---- loop.c ---- */
/* Create l's epoll set, eventfd and scratch buffer. Returns 0 or -1. */
int kvmux__loop_init(kvmux_loop *l, kvmux_server *srv, uint32_t id);
/* Free everything of l, including connections and orphaned WAITs still
 * in its inbox. Only after every loop thread has been joined. */
void kvmux__loop_deinit(kvmux_loop *l);
/* Thread body: run l until shutdown completes. arg is the kvmux_loop. */
void *kvmux__loop_main(void *arg);
/* Wake l's epoll_wait. Any thread; async-signal-safe. */
void kvmux__loop_wake(kvmux_loop *l);
/* Hand c (not yet attached) to l. Any thread; l owns c afterwards. */
void kvmux__loop_push_conn(kvmux_loop *l, kvmux_conn *c);
/* Post a fired WAIT to its owner loop. Any thread (called under a store
 * shard lock); the caller must not touch w afterwards. */
void kvmux__loop_push_wait(kvmux_loop *l, kvmux_wait *w);
/* Put c on its loop's flush list (idempotent). */
void kvmux__loop_mark_dirty(kvmux_conn *c);
/* One iteration of l's loop body: wait up to timeout_ms (0: poll) for
 * events, then inbox, timers, held write acks, flushes, teardown. Used by
 * the loop thread and by the in-memory harness (no loop thread). Returns
 * the number of epoll events handled (0: the wait timed out). */
int kvmux__loop_run_once(kvmux_loop *l, int timeout_ms);

/* ---- replicate.c: the request path in replicated mode ---- */
/* Start replication if --replica-id is set (server creation, after the
 * loops exist). Returns 0 or -1 with a message. */
int kvmux__repl_start(kvmux_server *s, char *err, size_t errlen);
/* Stop the Raft node: every batch in flight comes back (failed) to its
 * loop's inbox. After the loop threads stopped, before they are freed. */
void kvmux__repl_stop(kvmux_server *s);
/* Free what l still holds of replication (loop deinit). */
void kvmux__repl_loop_deinit(kvmux_loop *l);
/* Free the replication state (server free, after the loops'). */
void kvmux__repl_free(kvmux_server *s);
/* A valid REQUEST in replicated mode: -1 = not for replication, run it
 * here (STATS, SLOWLOG, CLIENT_LIST, or a read being re-run); 0 =
 * answered (NOT_LEADER, refused); 1 = queued for the next entry, the
 * credit is kept until the answer. */
int kvmux__repl_request(kvmux_conn *c, const kvmux_frame *f);
/* End the leader's read lease now (before a leadership transfer, whose
 * TimeoutNow lets a follower win a vote while others still know this
 * leader): reads go back to barriers until entries proposed after this
 * call commit. Any thread. */
void kvmux__repl_lease_revoke(kvmux_server *s);
/* A completed upload (SET/CAS of val) in replicated mode: as above; val
 * is given up in every case. */
int kvmux__repl_upload(kvmux_conn *c, uint32_t id, uint8_t op, const uint8_t *extras,
                       uint64_t seq,
                       const uint8_t *key, uint16_t klen, kvmux_store_value *val);
/* End of a loop iteration: propose what it gathered; answer the batches
 * that came back. */
void kvmux__repl_iterate(kvmux_loop *l);
/* Any thread: post a finished batch to its loop. */
void kvmux__repl_post(kvmux_loop *l, struct kvmux_rbatch *b);
/* c is going away: forget its waiting requests. */
void kvmux__repl_forget(kvmux_conn *c);
/* Whether c has request_id waiting for replication. */
int kvmux__repl_holds(const kvmux_conn *c, uint32_t request_id);
/* STATS lines of replication (none on a single node). want_digest: also
 * replica_digest and replica_digest_index (a walk of the whole store:
 * only for a STATS whose key is "replica_digest"). */
void kvmux__repl_stats(kvmux_server *s, void *o, int want_digest,
                       void (*u64line)(void *o, const char *name, uint64_t v),
                       void (*strline)(void *o, const char *name, const char *v));
/* Run a read request locally (dispatch.c), for a read whose barrier was
 * applied. Returns 1 if it keeps its credit (a parked WAIT, a stream). */
int kvmux__run_read(kvmux_conn *c, const kvmux_frame *f);

/* ---- reload.c ---- */
/* Copy srv->rt into l->rt if it changed since the last copy. l's thread
 * (or before the loops run). */
void kvmux__loop_refresh_rt(kvmux_loop *l);
/* Loop 0: run the reload hook if a reload was requested. */
void kvmux__server_maybe_reload(kvmux_server *s);
/* Drop l's references (loop deinit). */
void kvmux__loop_rt_deinit(kvmux_loop *l);

/* ---- accept.c ---- */
/* Accept a batch of connections from the listener (loop 0). */
void kvmux__accept(kvmux_loop *l);
/* accept_timer callback: put the listener back after an EMFILE pause. */
void kvmux__accept_resume(kvmux_timer *t, uint64_t now);

/* ---- conn.c ---- */
struct sockaddr;
/* Allocate a connection for an accepted, non-blocking fd (peer may be
 * NULL). Not attached to any loop yet. NULL when out of memory (fd is then
 * still the caller's). */
kvmux_conn *kvmux__conn_new(kvmux_server *srv, int fd, const struct sockaddr *peer);
/* Register c with l (epoll, handshake timer). If l is shutting down or
 * registration fails, c is refused with an ERROR and freed. */
void kvmux__conn_attach(kvmux_loop *l, kvmux_conn *c);
/* Handle epoll events for c. */
void kvmux__conn_on_event(kvmux_conn *c, uint32_t events);
/* Write queued output; resume a paused reader; move CLOSING -> LINGER. */
void kvmux__conn_flush(kvmux_conn *c);
/* Bring c's epoll mask in line with its state. */
void kvmux__conn_update_events(kvmux_conn *c);
/* Queue frame f (copied) and mark c dirty. Returns 0, or -1 if nothing
 * can be sent any more (closing, or out of memory / over the output cap,
 * in which case c has just been closed). Safe under a store shard lock:
 * it never touches the store and never frees c. */
int kvmux__conn_send(kvmux_conn *c, const kvmux_frame *f);
/* Queue a RESPONSE with status, optional extras, and msg (NULL for none;
 * truncated to KVMUX_MAX_STATUS_MSG) as its value. As kvmux__conn_send. */
int kvmux__conn_respond(kvmux_conn *c, uint32_t request_id, uint8_t status,
                        const uint8_t *extras, uint8_t extras_len,
                        const char *msg);
/* Queue a RESPONSE with status, no extras, and value[0..value_len) as its
 * (binary) value: CLUSTER answers. The caller checked value_len against
 * what the client accepts. As kvmux__conn_send. */
int kvmux__conn_respond_bytes(kvmux_conn *c, uint32_t request_id, uint8_t status,
                              const uint8_t *value, size_t value_len);
/* A valid CLUSTER request (v3; docs/CLUSTER.md): slot and map answered
 * at once; setmap proposed through the log on the leader. Returns 1 if the
 * request keeps its credit (a setmap waiting for its entry), else 0. */
int kvmux__cluster_request(kvmux_conn *c, const kvmux_frame *f);
/* CLUSTER slotkeys (migrate_target.c): value ASCII FIRST-LAST or SLOT;
 * OK with one "SLOT COUNT" line per slot holding keys, then "total N";
 * BAD_REQUEST (syntax, or a node without per-slot counts), TOO_LARGE
 * (the text exceeds the connection's frame limit). Answers at once. */
void kvmux__cluster_slotkeys(kvmux_conn *c, const kvmux_frame *f);
/* CLUSTER migration (any member of a replicated data group): OK, text
 * "in:ID F-L from G state=purging|ready term=T bseq=N" or "none". */
void kvmux__cluster_migration(kvmux_conn *c, const kvmux_frame *f);
/* CLUSTER import-begin / import (docs/MIGRATION.md 10.1), on a data
 * group's leader: checked, then proposed (MIGSTEP IN_BEGIN / IMPORT) and
 * answered after apply through kvmux__migt_done. Return 1 when the
 * request keeps its credit (proposed), 0 when answered. */
int kvmux__cluster_import_begin(kvmux_conn *c, const kvmux_frame *f);
int kvmux__cluster_import(kvmux_conn *c, const kvmux_frame *f);
/* CLUSTER import whose batch arrived as a fragmented upload: val holds the
 * value (reference given up). As kvmux__cluster_import. */
int kvmux__cluster_import_value(kvmux_conn *c, const kvmux_frame *f, kvmux_store_value *val);
/* CLUSTER import-abort (value u32 id), leader: MIGSTEP IN_ABORT; OK, or
 * NOT_FOUND when another migration is importing. As above. */
int kvmux__cluster_import_abort(kvmux_conn *c, const kvmux_frame *f);
struct kvmux_fsm_result;
/* The applied result res of a migration request proposed with tag (the
 * bytes given to kvmux__repl_propose_cmd): answers it, or parks an
 * import-begin whose record is still PURGING. Returns 1 if parked (the
 * request keeps its credit; c->nrepl counts it), else 0. */
int kvmux__migt_done(kvmux_conn *c, uint32_t request_id, uint8_t op, const uint8_t *tag,
                     const struct kvmux_fsm_result *res);
/* Each loop iteration (replicated mode): answer parked import-begins that
 * are done; on loop 0 of a data group's leader, the janitor's round when
 * due. */
void kvmux__migt_iterate(kvmux_loop *l);
/* When l next needs an iteration for the above (ms, kvmux_clock_ms), or
 * UINT64_MAX. */
uint64_t kvmux__migt_next_ms(const kvmux_loop *l);
/* c is closing: its parked import-begins are dropped unanswered. */
void kvmux__migt_forget(kvmux_conn *c);
/* Whether (c, request_id) is a parked import-begin. */
int kvmux__migt_holds(const kvmux_conn *c, uint32_t request_id);
/* Free l's parked requests and janitor state. */
void kvmux__migt_loop_deinit(kvmux_loop *l);
/* STATS lines of the incoming migration (MIGRATION.md 10.4). */
void kvmux__migt_stats(kvmux_server *s, void *o,
                       void (*u64line)(void *o, const char *name, uint64_t v),
                       void (*strline)(void *o, const char *name, const char *v));
/* Parse ASCII "FIRST-LAST" or "SLOT" (decimal, < 16384, no sign or
 * leading zeros, FIRST <= LAST) from p[0..n). Returns 0, or -1. */
int kvmux__parse_slot_range(const uint8_t *p, size_t n, uint16_t *first, uint16_t *last);
/* A keyed request on a cluster node whose slot this node cannot serve
 * under its applied map: answers it (no map: TRY_AGAIN on v3, BUSY on
 * v1/v2; another group's slot or an unassigned one: WRONG_SHARD on v3,
 * SHUTTING_DOWN on v1/v2) and returns 1; otherwise 0 and the request runs. */
int kvmux__cluster_refuse(kvmux_conn *c, const kvmux_frame *f);
/* Answer request id about slot, refused because an outgoing migration
 * fenced it (docs/MIGRATION.md 5; the FSM's TRY_AGAIN): TRY_AGAIN
 * (slot, applied epoch) on v3, BUSY "slot S is being migrated; try
 * again" on v1/v2; counted in cluster_try_again_migrating. */
void kvmux__cluster_try_again_migrating(kvmux_conn *c, uint32_t id, uint16_t slot);
/* Whether slot is fenced by this replica's applied outgoing migration.
 * Any thread; 0 on a node without cluster state. */
int kvmux__cluster_migrating(kvmux_server *s, uint16_t slot);
/* The fence generation of the applied outgoing migration (moves on every
 * fence or unfence; 0 without cluster state), for parked WAITs. */
uint64_t kvmux__cluster_fence_gen(kvmux_server *s);
/* STATS lines migrate_out_id, migrate_out_state, migrate_dirty_keys,
 * migrate_dirty_bytes of a data group (its applied state). */
void kvmux__cluster_migrate_stats(kvmux_server *s, void *o,
                                  void (*u64line)(void *o, const char *name, uint64_t v),
                                  void (*strline)(void *o, const char *name, const char *v));
/* Answer request id about slot, refused at apply time (the FSM's
 * WRONG_SHARD): WRONG_SHARD from the applied map as kvmux__cluster_refuse
 * does, or TRY_AGAIN if the map applied since gives the slot back. */
void kvmux__cluster_wrong_shard(kvmux_conn *c, uint32_t id, uint16_t slot);
/* Answer a setmap whose entry was applied: status OK / VERSION_MISMATCH
 * (fsm.h), epoch = the proposed map's, cur = the one installed after. */
void kvmux__cluster_setmap_done(kvmux_conn *c, uint32_t id, uint8_t status, uint64_t epoch,
                                uint64_t cur);
/* The applied map's epoch (0: none) and the slots it gives this group
 * (STATS). Any thread. */
void kvmux__cluster_info(kvmux_server *s, uint64_t *epoch, uint32_t *owned);
/* Answer request id with this replica's applied map: OK + its bytes, or
 * NOT_FOUND "no slot map installed" (CLUSTER map). */
void kvmux__cluster_respond_map(kvmux_conn *c, uint32_t id);

struct kvmux_entry_cmd;  /* src/replica/entry.h */
struct kvmux_fsm_result; /* src/replica/fsm.h */
/* ---- migreq.c: the map group's migration requests (docs/MIGRATION.md
 * 10.1) ---- */
/* CLUSTER migrate, migrations, mwatch, abort, migrate-commit,
 * migrate-ack (f's key names one: kvmux__migreq_is_sub). Answered at once
 * (returns 0) or proposed as entry op 0xF8 MIGREC / parked (returns 1). */
int kvmux__migreq_request(kvmux_conn *c, const kvmux_frame *f);
/* Whether f's subcommand is one of kvmux__migreq_request's. */
int kvmux__migreq_is_sub(const kvmux_frame *f);
/* Answer a MIGREC write whose entry was applied, from its result. */
void kvmux__migreq_done(kvmux_conn *c, uint32_t id, const struct kvmux_fsm_result *res);
/* Answer request id with the applied table (OK + KVMG bytes). */
void kvmux__migreq_respond_table(kvmux_conn *c, uint32_t id);
/* The applied table's mgen (0: none). Any thread. */
uint64_t kvmux__migreq_mgen(kvmux_server *s);
/* STATS lines cluster_mgen, cluster_migrations_* (map group). */
void kvmux__migreq_stats(kvmux_server *s, void *o,
                         void (*u64line)(void *o, const char *name, uint64_t v));
/* Propose cmd through the group's log for request id of c (leader only:
 * otherwise NOT_LEADER). Returns 1 when queued (answered after apply
 * through respond_result), 0 when answered now (replicate.c). */
int kvmux__repl_propose(kvmux_conn *c, uint32_t id, const struct kvmux_entry_cmd *cmd);

/* ---- mapwatch.c: the map group's watches, a data group's watcher ---- */
/* CLUSTER watch f (docs/PROTOCOL.md 18.4): answered at once (bad value,
 * not the leader, the applied epoch already above the one given), or
 * parked on c's loop until it is or its wait ends. Returns 1 if parked
 * (the request keeps its credit; c->nrepl counts it), else 0. */
int kvmux__mapwatch_request(kvmux_conn *c, const kvmux_frame *f);
/* The same for CLUSTER mwatch (mgen 1): parked until the migration
 * table's mgen exceeds the u64 given, answered with the table. */
int kvmux__mapwatch_park(kvmux_conn *c, const kvmux_frame *f, int mgen);
/* Each iteration of l: answer the parked watches whose epoch was passed
 * or whose wait ended (all of them while l drains); on loop 0 of a
 * data group's leader, propose the map the watcher brought (if any). */
void kvmux__mapwatch_iterate(kvmux_loop *l);
/* The loop-clock ms of l's earliest watch end, UINT64_MAX if none. */
uint64_t kvmux__mapwatch_next_ms(const kvmux_loop *l);
/* c is going away: its parked watches are dropped unanswered. */
void kvmux__mapwatch_forget(kvmux_conn *c);
/* Whether c has request_id parked as a watch. */
int kvmux__mapwatch_holds(const kvmux_conn *c, uint32_t request_id);
/* Free l's parked watches (loop deinit). */
void kvmux__mapwatch_loop_deinit(kvmux_loop *l);
/* Start the watcher thread of a data group given cfg->cluster_map
 * (endpoints; NULL: nothing to do) and the --cluster-map-tls options
 * (copied), after replication and auth are set up.
 * Returns 0 or -1 with err. */
int kvmux__mapwatch_start(kvmux_server *s, const kvmux_server_config *cfg, char *err,
                          size_t errlen);
/* The fence of a data group's leader: 1 if the watcher has seen a map
 * newer than the applied one that does not give slot to this group (the
 * slot is being handed over: answer TRY_AGAIN), else 0. Any thread. */
int kvmux__mapwatch_fenced(kvmux_server *s, uint16_t slot);
struct kvmux_client; /* libkvmux (mapclient.h) */
/* Open a libkvmux endpoints-mode client (mapclient.h) named name on
 * endpoints (NULL: the map group), with the watcher's token and
 * --cluster-map-tls settings (the cluster's groups share one token and
 * one CA). Returns 0 with *out, a KVMUX_E* code (< 0), or -1 without a
 * watcher. Any thread. */
int kvmux__mapwatch_connect(kvmux_server *s, const char *endpoints, const char *name,
                            struct kvmux_client **out);
/* The epoch of the newest map the watcher has seen from the map group (0:
 * none, or no watcher). Any thread. */
uint64_t kvmux__mapwatch_seen_epoch(kvmux_server *s);
/* Stop and free the watcher (before replication stops). Idempotent. */
void kvmux__mapwatch_stop(kvmux_server *s);
/* STATS lines cluster_map_* of a data group with --cluster-map. */
void kvmux__mapwatch_stats(kvmux_server *s, void *o,
                           void (*u64line)(void *o, const char *name, uint64_t v));
/* Whether this replica is its group's leader now (replicate.c). */
int kvmux__repl_is_leader(kvmux_server *s);
/* This replica's current Raft term (0 without replication). Any thread. */
uint64_t kvmux__repl_term(kvmux_server *s);

/* ---- migrate.c: the migrate thread (docs/MIGRATION.md sections 3-5,
 * 8.1): on a data group's leader, drives the migrations the map group's
 * table names this group in ---- */
/* Start the thread of a data group with --cluster-map (after the
 * watcher: it uses the watcher's connection settings) unless
 * cfg->migrate_thread is 0. Returns 0 or -1 with err. */
int kvmux__migrate_start(kvmux_server *s, const kvmux_server_config *cfg, char *err,
                         size_t errlen);
/* Stop and free it (before the watcher and replication). Idempotent. */
void kvmux__migrate_stop(kvmux_server *s);
/* Loop 0 of the leader, each iteration: propose the MIGSTEP or MAP the
 * thread handed over (if any). */
void kvmux__migrate_iterate(kvmux_loop *l);
/* STATS lines migrate_rounds, migrate_keys_sent, migrate_bytes_sent,
 * migrate_batches_sent, migrate_restarts, migrate_fence_ms_last,
 * migrate_fence_ms_max, migrate_commits, migrate_aborts, migrate_timeouts
 * (stall and fence timeouts that asked ABORT; 0 without the
 * thread). */
void kvmux__migrate_stats(kvmux_server *s, void *o,
                          void (*u64line)(void *o, const char *name, uint64_t v));
/* NOT_LEADER (v3) / SHUTTING_DOWN (v1/v2) to request id (replicate.c). */
void kvmux__repl_respond_not_leader(kvmux_conn *c, uint32_t id);
/* On loop l of the leader: append a MAP command (the encoded map
 * p[0..n)) to this iteration's entry, answered to nobody (the watcher
 * sees the applied epoch). Returns 0, or -1 (not the leader, out of
 * memory). */
int kvmux__repl_propose_map(kvmux_loop *l, const uint8_t *p, size_t n);
/* On loop l of the leader: append a MIGSTEP command (entry op 0xF6,
 * extras u32 id, u8 step; value v[0..n), built with migout.h's
 * kvmux_migout_step_value) to this iteration's entry, answered to nobody:
 * the migrate thread (MIGRATION.md 3) learns the outcome from the applied
 * state (kvmux_migout_get_info), every step being idempotent. Returns 0,
 * or -1 (not the leader, out of memory, n over 64). */
int kvmux__repl_propose_migstep(kvmux_loop *l, uint32_t id, uint8_t step, const uint8_t *v,
                                size_t n);

struct kvmux_entry_cmd;
/* On the leader: put cmd (an internal op) in this iteration's entry for
 * request (c, id), answered after apply (migration ops through
 * kvmux__migt_done, which gets tag[0..taglen), taglen <= 16). Not the
 * leader: NOT_LEADER. Returns 1 (queued) or 0 (answered). */
int kvmux__repl_propose_cmd(kvmux_conn *c, uint32_t id, const struct kvmux_entry_cmd *cmd,
                            const uint8_t *tag, uint8_t taglen);
/* On the leader: an import batch of one big PUT (docs/MIGRATION.md 4):
 * stage val's bytes [voff, voff + vlen) as a big value (STAGE entries of
 * 1 MiB, one in flight), then propose batch[0..batch_len) -- the same
 * batch with the PUT's value field 20 bytes long, the last 20 bytes of
 * batch, which this fills with the staged id and u32 total -- as
 * IMPORT_STAGED, answered through kvmux__migt_done with tag (taglen <=
 * 16). Leadership lost between chunks: NOT_LEADER (nothing proposed that
 * imports); a chunk refused: INTERNAL. Takes val and batch (malloc).
 * Returns 1 (queued) or 0 (answered). */
int kvmux__repl_import_staged(kvmux_conn *c, uint32_t id, kvmux_store_value *val, size_t voff,
                              uint32_t vlen, uint8_t *batch, uint32_t batch_len,
                              const uint8_t *tag, uint8_t taglen);
/* On the leader (the caller checked): propose cmd at once in an entry of
 * its own, nobody to answer. Returns the entry's sequence number for
 * kvmux__repl_seq_in_flight, or 0 when it could not be proposed. */
uint64_t kvmux__repl_propose_internal(kvmux_loop *l, const struct kvmux_entry_cmd *cmd);
/* Whether l's entry of sequence seq is still being replicated. */
int kvmux__repl_seq_in_flight(const kvmux_loop *l, uint64_t seq);
/* The group's cluster state (fsm.h), NULL without replication. */
struct kvmux_fsm_cluster *kvmux__repl_cluster(kvmux_server *s);
/* Propose setmap request f (a valid encoded map) as a MAP entry: on the
 * leader queued (returns 1: keeps its credit, answered through
 * kvmux__cluster_setmap_done), elsewhere answered NOT_LEADER (returns 0). */
int kvmux__repl_setmap(kvmux_conn *c, const kvmux_frame *f);
/* Queue an OK RESPONSE whose extras are one u64 (a version, a cursor, a
 * count) and whose value is value[0..value_len) (may be empty), the shape
 * of GET, WAIT, SCAN, SLOWLOG and CLIENT_LIST answers. The caller checked
 * value_len against what the client accepts. As kvmux__conn_send. */
int kvmux__conn_respond_u64(kvmux_conn *c, uint32_t request_id, uint64_t extra,
                            const uint8_t *value, size_t value_len);
/* The handshake is done: start the idle / stuck-output checks. */
void kvmux__conn_start_checks(kvmux_conn *c);
/* Connection-level error: queue ERROR(code, message) as the last frame,
 * stop reading, and close once it is written (bounded by close_linger).
 * No-op if c is already closing. */
void kvmux__conn_fail(kvmux_conn *c, uint32_t request_id, uint8_t code,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Mark c dead; it is torn down at the end of the loop iteration. Never
 * frees c, never touches the store; idempotent. */
void kvmux__conn_close(kvmux_conn *c, const char *why);
/* Tear down a dead connection: release its WAITs, close the fd, free c. */
void kvmux__conn_destroy(kvmux_conn *c);
/* Shutdown: refuse buffered requests, stop reading, close when idle. */
void kvmux__conn_begin_drain(kvmux_conn *c);
/* A draining connection that owes nothing more gets its final ERROR. */
void kvmux__conn_maybe_finish_drain(kvmux_conn *c);
/* Best-effort ERROR on a raw fd that never became a connection, then
 * close it. */
void kvmux__conn_reject(int fd, uint8_t code, const char *msg);
/* Largest frame c accepts now: KVMUX_MIN_FRAME before the handshake. */
uint32_t kvmux__conn_max_frame(const kvmux_conn *c);

/* True while the connection reads and answers (v2 included while it
 * drains after GOAWAY). */
static inline int kvmux__conn_is_open(const kvmux_conn *c) {
    return c->state == KVMUX_CONN_OPEN;
}
/* Anything in flight: credits taken, uploads or responses in progress,
 * output queued. An idle connection has none of these. */
int kvmux__conn_busy(const kvmux_conn *c);
/* Queue raw bytes (an encoded frame) as kvmux__conn_send does. */
int kvmux__conn_send_bytes(kvmux_conn *c, const uint8_t *p, size_t n);
/* v2: queue WINDOW_UPDATEs for the increments in g (request_id for the
 * message part). */
void kvmux__conn_send_grant(kvmux_conn *c, uint32_t request_id, const kvmux_grant *g);
/* Stop: the phase deadline of a draining connection passed; answer what
 * it still owes SHUTTING_DOWN where possible and close it. */
void kvmux__conn_drain_deadline(kvmux_conn *c);

/* In-memory input (harness.c): process p[0..n) as if read(2) had returned
 * it, in reads of at most the usual size; n == 0 is end of input (EOF).
 * Output is drained to c->mem_sink whenever reading would pause. */
void kvmux__conn_feed(kvmux_conn *c, const uint8_t *p, size_t n);

/* ---- sched.c: output scheduler and fragmented responses ---- */
/* Send an OK response carrying (version, value) for request_id, where
 * val is a reference the caller gives up (NULL for an empty value) and
 * len its length. Small values have been copied by the caller already;
 * this is the by-reference path: one frame whose value is queued without
 * copying, or (v2) a fragmented response streamed by the scheduler.
 * Returns 1 if a stream was started (it keeps the request's credit and
 * returns it when its last fragment is queued), 0 if answered (including
 * TOO_LARGE when the client cannot take the value), -1 if the connection
 * is closed. */
int kvmux__sched_send_value(kvmux_conn *c, uint32_t request_id, uint64_t version,
                            kvmux_store_value *val, size_t len);
/* Queue the next fragment of the next stream with window, round-robin.
 * Returns 1 if something was queued, 0 if no stream can send now. */
int kvmux__sched_fill(kvmux_conn *c);
/* WINDOW_UPDATE from the client (already passed check_recv). */
void kvmux__sched_on_window_update(kvmux_conn *c, const kvmux_frame *f);
/* CANCEL of an outgoing stream: returns 1 if request_id was one (now
 * answered CANCELED), else 0. */
int kvmux__sched_cancel(kvmux_conn *c, uint32_t request_id);
/* Whether request_id is a response still being streamed. */
int kvmux__sched_has(kvmux_conn *c, uint32_t request_id);
/* Drop every stream (connection teardown or forced drain). Credits are
 * returned when give_back_credits. */
void kvmux__sched_release(kvmux_conn *c, int give_back_credits);
/* Drain deadline: end every stream with RESPONSE SHUTTING_DOWN (its final
 * response; fragments already sent are dropped by the client) and give
 * back its credit. */
void kvmux__sched_shutdown(kvmux_conn *c);

/* ---- upload.c: fragmented requests ---- */
/* A REQUEST with MORE (already passed check_recv): start reassembly or
 * refuse it (the rest of it is then read and dropped). */
void kvmux__upload_begin(kvmux_conn *c, const kvmux_frame *f);
/* A CONTINUATION (already passed check_recv). */
void kvmux__upload_continue(kvmux_conn *c, const kvmux_frame *f);
/* CANCEL of an upload: returns 1 if request_id was one, else 0. */
int kvmux__upload_cancel(kvmux_conn *c, uint32_t request_id);
/* Whether request_id is a fragmented request still open (being received,
 * or answered early and its remaining fragments still to come). */
int kvmux__upload_has(kvmux_conn *c, uint32_t request_id);
/* Free every upload (teardown). */
void kvmux__uploads_release(kvmux_conn *c);
/* Drain deadline: answer uploads still in progress SHUTTING_DOWN. */
void kvmux__uploads_shutdown(kvmux_conn *c);

/* ---- dispatch.c ---- */
/* A REQUEST (single-frame or the first of a fragmented one) whose id is
 * still in use on c: a parked WAIT, a write held for the fsync, a response
 * being streamed, or a fragmented request still open. Answering it would
 * put two RESPONSEs with one id on the wire, which the client cannot tell
 * apart: ERROR PROTOCOL with that id, and the connection closes
 * (docs/PROTOCOL.md section 9). Returns 1 if so (c is closing), else 0.
 * Costs one test of four counters when nothing is held on c. */
int kvmux__refuse_id_in_use(kvmux_conn *c, uint32_t request_id);
/* Act on one decoded frame from c: session check, handshake, PING,
 * requests. f's pointers are only valid during the call. */
void kvmux__dispatch_frame(kvmux_conn *c, const kvmux_frame *f);

/* kvmux_store_read_fn that answers OK with (u64 version, value): GET and
 * WAIT. ud is a kvmux_reply_ctx. */
typedef struct kvmux_reply_ctx {
    kvmux_conn *conn;
    uint32_t request_id;
    size_t too_large;              /* out: value length refused */
    kvmux_store_value *held;       /* out: large value kept by reference */
    uint64_t version;              /* out: with held */
    size_t len;                    /* out: with held */
    uint32_t fence_slot;           /* in: slot + 1 to refuse (TRY_AGAIN, not
                                      sent) if an outgoing migration fenced
                                      it; 0: no check */
} kvmux_reply_ctx;
int kvmux__reply_value(void *ud, uint64_t version, const uint8_t *value, size_t len);
/* Answer a failed kvmux__reply_value (TOO_LARGE / INTERNAL). */
void kvmux__reply_value_failed(kvmux_reply_ctx *ctx, int status);
/* After a store call that returned OK: send the value kvmux__reply_value
 * kept by reference, if any (outside the shard lock). Returns 1 if a
 * fragmented response now holds the request's credit, else 0. */
int kvmux__reply_value_finish(kvmux_reply_ctx *ctx);
/* Request-level validation of a REQUEST whose value is value_len bytes
 * (total_value_len for a fragmented one). Returns 0 if it may run, else
 * it has been answered. */
int kvmux__check_request(kvmux_conn *c, const kvmux_frame *f, uint32_t value_len);
/* Run a complete fragmented request whose value is val (reference given
 * up): SET/CAS as kvmux__run_store_value, CLUSTER (an import batch with
 * a big value, or any subcommand) and GROUP as if it had come in one
 * frame. Returns 1 if it keeps its credit, else 0 (answered). */
int kvmux__run_uploaded(kvmux_conn *c, uint32_t request_id, uint8_t op, const uint8_t *extras,
                        uint64_t seq, const uint8_t *key, uint16_t klen, kvmux_store_value *val);
/* Run a complete SET/CAS whose value is val (reference given up; NULL for
 * an empty value) and answer it. Used by uploads. Returns 1 if the answer
 * is held for the log's fsync (the request keeps its credit, released by
 * durable.c), else 0 (answered: the caller ends the request). */
int kvmux__run_store_value(kvmux_conn *c, uint32_t request_id, uint8_t op,
                            const uint8_t *extras, uint64_t seq, const uint8_t *key, uint16_t klen,
                            kvmux_store_value *val);

/* ---- durable.c: write acknowledgments and the append-only log ---- */
/* Before running a write: if the log has failed, or (unless the write
 * frees_memory: DEL) the store is over --maxmemory after any eviction,
 * answer it (INTERNAL / BUSY) and return 1: the write must not run. */
int kvmux__durable_refuse(kvmux_conn *c, uint32_t request_id, int frees_memory);
/* Answer a successful write (status, extras). Under --fsync always the
 * answer is held until the log's fsync covers the write: returns 1 and the
 * request keeps its credit (given back when the answer is released).
 * Else answers now and returns 0. */
int kvmux__durable_respond(kvmux_conn *c, uint32_t request_id, uint8_t status,
                           const uint8_t *extras, uint8_t extras_len);
/* Release every held answer the log's durable point now covers (or fail
 * them INTERNAL if the log failed). Once per loop iteration. */
void kvmux__durable_release(kvmux_loop *l);
/* Connection teardown: forget its held answers. */
void kvmux__durable_forget(kvmux_conn *c);
/* Whether c has a write answer for request_id held for the fsync. */
int kvmux__durable_holds(const kvmux_conn *c, uint32_t request_id);
/* Loop teardown: free the held FIFO. */
void kvmux__durable_deinit(kvmux_loop *l);
/* The log's notify callback: wake every loop (any thread). */
void kvmux__durable_notify(void *srv);

/* ---- scan.c: the SCAN reply ---- */

/* Answer a valid SCAN request f: one store step, the key list as the OK
 * value (bounded by KVMUX_SCAN_REPLY_BYTES and by what the client
 * accepts), TOO_LARGE if one bucket's keys cannot fit the client's
 * frame, BAD_REQUEST for a cursor this server never made. */
void kvmux__scan_respond(kvmux_conn *c, const kvmux_frame *f);

/* ---- introspect.c: SLOWLOG and CLIENT_LIST ---- */
/* Answer a validated SLOWLOG request (credit taken; answered now). */
void kvmux__slowlog_respond(kvmux_conn *c, const kvmux_frame *f);
/* Answer a validated CLIENT_LIST request: every loop's connections. */
void kvmux__client_list_respond(kvmux_conn *c, const kvmux_frame *f);
/* Refresh c's CLIENT_LIST counters from its loop-thread state. */
void kvmux__conn_info_update(kvmux_conn *c);
/* The handshake of c is done: record its version and name (HELLO key). */
void kvmux__conn_info_hello(kvmux_conn *c, const uint8_t *name, size_t len);

/* ---- auth.c: --requirepass ---- */
/* Load the token from cfg (requirepass or requirepass_file) into rt
 * (auth_len 0 without one). Returns 0, or -1 with a message in err and rt
 * unchanged. */
int kvmux__auth_load(kvmux_rt *rt, const kvmux_server_config *cfg, char *err,
                     size_t errlen);
/* Server with a token: check the HELLO f of c. Returns 0 if it may go on,
 * else c has been failed with ERROR AUTH (counted, logged rate-limited). */
int kvmux__auth_check_hello(kvmux_conn *c, const kvmux_frame *f);

/* ---- stats.c: the STATS operation ---- */
/* Format the server's counters as "name:value\n" lines, keeping only the
 * names starting with prefix[0..plen) (plen 0: all), into buf[0..cap).
 * Returns the length, or 0 if cap is too small. Any thread. */
size_t kvmux__stats_format(kvmux_server *s, const uint8_t *prefix, size_t plen, char *buf,
                           size_t cap);
/* Answer a validated STATS request (credit taken; always answered now). */
void kvmux__stats_respond(kvmux_conn *c, const kvmux_frame *f);
/* Count a RESPONSE (status) or ERROR (code) frame about to be queued: the
 * header bytes p[0..KVMUX_FRAME_HDR_LEN). */
void kvmux__stats_count_sent(kvmux_loop *l, const uint8_t *hdr);

/* ---- expire.c: active expiry ---- */
/* Arm the loop's periodic expiry cycle (loop 0 only does the work). */
void kvmux__expire_start(kvmux_loop *l);

/* ---- waits.c ---- */
/* Store fire callback (any thread, under the shard lock). */
void kvmux__wait_fire(kvmux_store_waiter *sw, void *ud);
/* Run a validated WAIT whose credit is taken. Returns 1 if parked (the
 * credit is then returned when it is answered), 0 if answered now, -1 if
 * answered INTERNAL. */
int kvmux__wait_park(kvmux_conn *c, const kvmux_frame *f, uint64_t version,
                     uint32_t timeout_ms);
/* CANCEL of a parked WAIT: returns 1 if request_id was one that could
 * still be stopped (now answered CANCELED), else 0 (unknown, or already
 * fired: its real answer is on the way). */
int kvmux__wait_cancel(kvmux_conn *c, uint32_t request_id);
/* Inbox delivery of a fired WAIT: answer it, or free it if orphaned. */
void kvmux__wait_deliver(kvmux_loop *l, kvmux_wait *w);
/* Connection teardown: cancel or orphan every parked WAIT of c. */
void kvmux__waits_release(kvmux_conn *c);
/* Shutdown deadline: answer c's parked WAITs SHUTTING_DOWN. */
void kvmux__waits_shutdown(kvmux_conn *c);
/* Free a WAIT left in an inbox at teardown (always an orphan). */
void kvmux__wait_free_orphan(kvmux_wait *w);

/* Cluster mode: when a newer map has been applied (or, on a leader, seen
 * from the map group) since the last call, answer every WAIT parked on
 * this loop whose key's slot this group no longer serves, WRONG_SHARD or
 * TRY_AGAIN as a new request would get: it would otherwise sit until its
 * timeout while the key changes in another group. Loop thread; cheap
 * (two atomic loads) when no map changed. */
void kvmux__waits_recheck_slots(kvmux_loop *l);

#endif
