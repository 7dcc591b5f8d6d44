/* The inside of a kvmux_client, shared by the files of src/client/.
 * Internal to libkvmux: nothing here is part of the public API.
 *
 * Locking: one mutex (mu) guards everything below it in the struct. The
 * fields above it are set during kvmux_connect, before any thread starts,
 * and are read-only afterwards (pthread_create orders them for the threads;
 * callers only see the handle after kvmux_connect returns). The receive
 * buffer and the session belong to the reader thread alone; the buffer being
 * written belongs to the writer thread alone between its two lock sections.
 *
 * Two modes share everything but the driver (who does the I/O and runs the
 * callbacks): THREADED (kvmux_connect: reader, writer and, from the first
 * async submit, a completion thread) and LOOP (kvmux_async_connect: the
 * application's event loop calls loop.c; no thread, the mutex is then
 * uncontended and kept only so the shared code is one implementation). */
#ifndef KVMUX_CLIENT_INTERNAL_H
#define KVMUX_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <stdatomic.h>

#include "kvmux.h"
#include "pending.h"
#include "proto.h"
#include "timerheap.h"
#include "tls.h"

/* Initial receive buffer: big enough that one recv drains many replies. It
 * grows only to hold one frame larger than itself, never past the
 * negotiated max frame size. */
#define KVMUX_CLIENT_RBUF 65536u
/* An outbound buffer larger than this is freed after its batch is written,
 * so one burst of large values does not pin memory for the connection's
 * lifetime. */
#define KVMUX_CLIENT_OUT_KEEP (256u * 1024)
/* v2: CANCELs per second we send at most, below kvmuxd's default flood
 * cap (1000/s) so cancelling never gets the connection closed; a cancel
 * over it only stops waiting (the request runs, its reply is dropped). */
#define KVMUX_CLIENT_CANCEL_RATE 500u
/* v2: value bytes per fragment of a fragmented request (bigsend.c): the
 * most a small frame waits behind a large value is one such fragment. */
#define KVMUX_CLIENT_FRAGMENT (64u * 1024)
/* Room kept for the fatal error's description. */
#define KVMUX_CLIENT_MSG_MAX (KVMUX_MAX_ERROR_MSG + 128)

/* An outbound byte buffer: whole encoded frames, in order. */
typedef struct kvmux__outbuf {
    uint8_t *data;
    size_t len;            /* bytes queued */
    size_t cap;
    uint32_t frames;       /* frames queued */
} kvmux__outbuf;

/* v2: one request value being sent fragmented (bigsend.c). Guarded by
 * the client mutex, except that the writer reads hdr and buf outside it
 * while the transfer is c->wr_big (nobody frees it meanwhile). */
typedef struct kvmux__bigmsg {
    struct kvmux__bigmsg *next;    /* c's transfer list, round-robin order */
    kvmux_fragmenter frag;         /* sizing and windows (proto.h) */
    kvmux_frame tmpl;              /* the REQUEST, value fields unused */
    uint8_t ext[16];               /* its op extras */
    uint32_t id;
    uint16_t key_len;
    uint32_t value_len;
    uint8_t *buf;                  /* key, then value: the one copy */
    uint8_t *hdr;                  /* head of the fragment being written */
    int64_t deadline;              /* the call's (monotonic ms), for DEADLINE */
    int aborted;                   /* stop; freed by the writer */
} kvmux__bigmsg;

/* ---- failover across a replicated group (failover.c) ---- */

/* The highest protocol version the client proposes by default (v3: the
 * replication statuses; a single-node server answers 2). */
#define KVMUX__CLIENT_PROTO_MAX KVMUX_PROTO_V3
/* kvmux_options.endpoints: entries at most, and a host name's length. */
#define KVMUX__MAX_ENDPOINTS 64u
#define KVMUX__HOST_MAX 255u
/* NOT_LEADER redirects one request may follow before it completes with
 * KVMUX_ENOTLEADER: a group that keeps naming another leader (an
 * election storm, a misconfigured address) cannot hold a request forever
 * within its deadline's resends. */
#define KVMUX__MAX_REDIRECTS 16u
/* Cap on the backoff between endpoints in endpoints mode (also bounded
 * by reconnect_max_backoff_ms): an election takes about a second, so a
 * longer pause only adds to the failover time. */
#define KVMUX__FAILOVER_MAX_BACKOFF_MS 400

/* One endpoint of kvmux_options.endpoints. */
typedef struct kvmux__endpoint {
    char host[KVMUX__HOST_MAX + 1];
    uint16_t port;
    struct sockaddr_storage ss;    /* event-loop mode: resolved once */
    socklen_t sslen;               /* 0: not resolved */
} kvmux__endpoint;

/* Who drives a client's I/O. */
typedef enum kvmux__mode {
    KVMUX__MODE_THREADED = 0,      /* kvmux_connect: our own threads */
    KVMUX__MODE_LOOP = 1           /* kvmux_async_connect: the app's loop */
} kvmux__mode;

/* An event-loop client's connection progress (loop.c):
 *   CONNECTING -> [TLS ->] HANDSHAKE -> OPEN
 * and, with kvmux_options.reconnect, any failure -> DOWN -> (backoff timer)
 * CONNECTING on a new socket (reconnect.c). */
typedef enum kvmux__lstate {
    KVMUX__L_CONNECTING = 0,       /* TCP connect in progress */
    KVMUX__L_HANDSHAKE = 1,        /* HELLO queued, waiting for HELLO_ACK */
    KVMUX__L_OPEN = 2,             /* requests flow (or c->fatal is set) */
    KVMUX__L_TLS = 3,              /* TLS handshake in progress (HELLO waits) */
    KVMUX__L_DOWN = 4              /* reconnect: disconnected until retry_at */
} kvmux__lstate;

/* One async op's life (one enum, never flags). An op is a future, or a
 * queued request of either kind (a callback request admitted to a slot
 * lives there, and its op is recycled at admission):
 *   FREE --submit--> QUEUED --credit+room--> INFLIGHT --reply--> DONE
 *   FREE --submit (credit+room free)-------> INFLIGHT
 *   QUEUED/INFLIGHT --timeout, connection loss--> DONE
 *   DONE --callback returned / kvmux_future_free--> FREE
 *   QUEUED/INFLIGHT --kvmux_future_free--> FREE (a sent request leaves a
 *                                          tombstone in the pending table) */
typedef enum kvmux__op_state {
    KVMUX__OP_FREE = 0,            /* on the client's free list (or loose) */
    KVMUX__OP_QUEUED = 1,          /* in the backlog: a copy of the request */
    KVMUX__OP_INFLIGHT = 2,        /* encoded; holds a pending slot */
    KVMUX__OP_DONE = 3,            /* result final */
    KVMUX__OP_ROUTED = 4           /* cluster handle (cluster.c): a
                                      sub-client holds its request, or
                                      it waits for a retry or a group's
                                      connect; its deadline is the
                                      hop's on the sub-client, or,
                                      parked, on the cluster handle's
                                      timer heap */
} kvmux__op_state;

typedef enum kvmux__op_kind {
    KVMUX__OP_CALLBACK = 0,        /* completes by running cb */
    KVMUX__OP_FUTURE = 1           /* completes by setting done */
} kvmux__op_kind;

/* A thread blocked in kvmux_future_wait(_any): lives on its stack. A
 * completer sets fired under mu (while holding the future's client mutex:
 * lock order client mu -> waiter mu, never the reverse). */
typedef struct kvmux__waiter {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int fired;
} kvmux__waiter;

/* Wake w (the caller holds the mutex of the client w is registered
 * with: lock order client mu -> waiter mu). */
static inline void kvmux__waiter_fire(kvmux__waiter *w) {
    pthread_mutex_lock(&w->mu);
    w->fired = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

/* A blocking call's wait record (call.c): lives on the caller's stack
 * from admission to return. The completer (the reader, or a connection
 * failure) writes the result here under the client mutex, frees the slot
 * at once and sets finished; the wake itself -- word := DONE, then a
 * futex wake if the caller sleeps -- comes after the reader has released
 * the mutex (c->wake_head), so a woken caller never queues on the mutex
 * the reader still holds. After word is DONE the caller reads its result
 * without any lock and never touches the client again.
 * Word values: KVMUX__CW_PENDING, KVMUX__CW_SLEEPING (the caller is, or
 * is about to be, in futex wait), KVMUX__CW_DONE. */
typedef struct kvmux__callwait {
    atomic_uint word;              /* the futex word */
    int finished;                  /* guarded by mu: result final, queued
                                      for its wake */
    int result;                    /* 0 or KVMUX_E* (or KVMUX__ERETRY) */
    kvmux_reply reply;             /* value is a heap copy for the caller */
    kvmux_value *value;            /* want_value: the single-allocation value */
    struct kvmux__callwait *wnext; /* c->wake_head list; then the next
                                      caller of the chain to wake */
    int cpu;                       /* the CPU its caller ran on when it
                                      queued the request (-1: unknown):
                                      picks its wake chain */
    int chain_tail;                /* last of a wake chain: flushes the
                                      chain's requests (still counted in
                                      active for that) */
    uint64_t out_round;            /* c->out_rounds when its frame was
                                      queued (UINT64_MAX: fragmented):
                                      equal at a loss = never sent */
    uint64_t seq;                  /* session seq of a write (0: none) */
    unsigned unknowns;             /* OUTCOME_UNKNOWN answers resent */
} kvmux__callwait;

#define KVMUX__CW_PENDING 0u
#define KVMUX__CW_DONE 1u
#define KVMUX__CW_SLEEPING 2u

/* What only a QUEUED op needs (async.c): allocated when it enters the
 * backlog, freed when it is admitted or recycled, so an op in flight does
 * not carry it. */
typedef struct kvmux__qreq {
    struct kvmux_future *prev;     /* backlog (doubly linked; next is op's) */
    kvmux_request req;             /* key/value point into the op's buf */
    size_t flen;                   /* encoded size (0: check again) */
    int64_t tmo;                   /* its timeout (ms): its timer class once
                                      admitted */
} kvmux__qreq;

/* A completed callback on its way to the thread that runs it (the
 * completion thread, or the event loop): transient, from the client's
 * free list of them (at most KVMUX_CLIENT_DONE_KEEP kept), so a callback
 * request in flight owns none -- it lives in its slot. in_op: this record
 * is the first member of a queued op (a request completed before it was
 * admitted), which is recycled as an op after its callback. */
typedef struct kvmux__done {
    struct kvmux__done *next;      /* c's DONE list / free list */
    kvmux_reply_cb cb;
    void *user_data;
    kvmux_reply reply;             /* value is a heap copy */
    int result;                    /* 0 or KVMUX_E* */
    uint8_t in_op;
} kvmux__done;

/* Test hook: while positive, each completion-record allocation fails as
 * if out of memory and the count drops by one, so tests can drive the
 * out-of-memory paths (parked slots, retried deadlines and cancels:
 * tests/integration/client_park_test.c). One relaxed load per
 * completion. */
extern atomic_int kvmux__test_done_fail;

/* Completion records kept on the free list beyond a batch. */
#define KVMUX_CLIENT_DONE_KEEP 256u

/* An async request that is not simply in its slot: a future (the public
 * kvmux_future, held by the user, which outlives the request), or a
 * request of either kind waiting in the backlog for a credit. A callback
 * request admitted to a slot moves its callback, user data, handle and
 * deadline there and its op is recycled at once. Ops are recycled through
 * the client's free list. Everything but done is guarded by c's mutex
 * while the op is attached (not detached); once done is set the result
 * fields belong to whoever completes it (the callback runner, or the
 * future's owner). */
struct kvmux_future {
    kvmux__done d;                 /* next: DONE list, or backlog / free
                                      list (async.c op_next); cb,
                                      user_data: CALLBACK; reply, result:
                                      DONE */
    kvmux__slot *slot;             /* INFLIGHT (a future): the slot it holds */
    kvmux__qreq *q;                /* QUEUED: the request (else NULL) */
    kvmux__qreq *qspare;           /* a q kept by the recycle for the next
                                      submit (a calloc and a free less per
                                      request); never read as a request */
    uint8_t *buf;                  /* QUEUED: copy of key and value (kept
                                      for reuse, up to ASYNC_BUF_KEEP) */
    size_t bufcap;
    union {
        uint64_t handle;           /* CALLBACK: kvmux_handle (never 0,
                                      never reused) */
        struct kvmux__waiter *waiter; /* FUTURE: the thread waiting, if any */
    };
    kvmux_client *c;               /* FUTURE: owner; meaningless once detached */
    struct kvmux_future *lnext;    /* FUTURE: c's live list, until freed */
    struct kvmux_future *lprev;
    kvmux__timer timer;            /* QUEUED: its deadline on the heap; the
                                      deadline is kept for futures' waits */
    atomic_int done;               /* FUTURE: release-stored 1 when DONE */
    uint8_t state;                 /* kvmux__op_state */
    uint8_t kind;                  /* kvmux__op_kind */
    uint8_t detached;              /* future outlived its client */
    uint8_t redirects;             /* endpoints mode: NOT_LEADER redirects
                                      followed (KVMUX__MAX_REDIRECTS) */
    uint64_t out_round;            /* INFLIGHT: as kvmux__callwait's */
    uint64_t seq;                  /* session seq of a write (0: none yet) */
    uint8_t unknowns;              /* OUTCOME_UNKNOWN answers resent */
    /* ROUTED (cluster.c, guarded by the cluster handle's mutex) */
    struct kvmux__hop *hop;        /* the sub-request outstanding, or NULL */
    struct kvmux_future *rnext;    /* the router's list of ROUTED ops */
    struct kvmux_future *rprev;
    struct kvmux__cgroup *rwait;   /* parked: waiting for this group's connect */
    int64_t retry_at;              /* parked (rwait NULL): dispatch again then */
    uint16_t rgroup;               /* 0: route by the map; else this group
                                      (a WRONG_SHARD named it) */
    uint16_t backoff_ms;           /* TRY_AGAIN: the last backoff */
    uint64_t repoch;               /* newest epoch a WRONG_SHARD carried */
    uint8_t rparked;               /* 1: no sub-request outstanding */
    /* A cluster handle's request sent straight to a group's sub-client
     * (cluster.c, "direct"): set on the sub-client's op, whose callback
     * is the router's and whose user_data is the op itself; the
     * application's callback and data, and the group (its handle is
     * xg's). NULL xcb: an ordinary op. */
    kvmux_reply_cb xcb;
    void *xud;
    struct kvmux__cgroup *xg;
};
typedef struct kvmux_future kvmux__op;

/* The TLS transport's state (tls.c; guarded by its own mutex). */
typedef struct kvmux__tls kvmux__tls;

struct kvmux_client {
    /* ---- immutable after kvmux_connect (but see the limits) ---- */
    int fd;
    kvmux_options opts;            /* client_name, auth_token not kept (NULL) */
    char auth[KVMUX_MAX_AUTH_TOKEN]; /* copy of opts.auth_token, for every HELLO */
    size_t auth_len;               /* 0: no token */
    /* The negotiated limits. Not immutable: kvmux__handshake_reply
     * writes them (and info) under mu, at connect and again on every
     * reconnect, when a restarted server may advertise different ones.
     * info is read under mu only (kvmux_get_server_info). The four
     * atomics are read under mu by admission, which is authoritative, and
     * also WITHOUT it by the early argument pass of a call or submit
     * (kvmux__call_check before the lock, to fail fast and to copy a
     * fragmented value outside the lock). That pass loads them relaxed:
     * it needs no ordering with anything, only a value the field really
     * held (old or new), and admission checks again under mu against the
     * current ones (call.c, async.c). A relaxed load is a plain load on
     * the usual targets, so the uncontended fast path costs nothing. */
    kvmux_server_info info;        /* from HELLO_ACK */
    _Atomic uint32_t max_key;      /* negotiated request limits */
    _Atomic uint32_t max_value;
    _Atomic uint32_t peer_max_frame; /* largest frame the server accepts */
    _Atomic uint8_t version;       /* negotiated protocol version */
    _Atomic uint64_t stale_min;    /* stale_reads: highest version this
                                      handle's writes got (read-your-writes) */
    kvmux__mode mode;
    pthread_t reader;
    pthread_t writer;
    kvmux__tls *tls;               /* NULL: plaintext; else TLS (tls.h) */

    /* ---- reader thread only ---- */
    kvmux_session session;
    int64_t ka_last_rx;            /* keepalive: when bytes last arrived */
    int ka_pinged;                 /* a keepalive PING is out since then */
    int64_t ka_pinged_at;
    uint8_t *rbuf;
    size_t rlen;                   /* bytes held in rbuf */
    size_t rcap;

    /* ---- writer thread only (between lock sections) ---- */
    kvmux__outbuf wbuf;            /* the batch being sent */

    /* ---- guarded by mu ---- */
    pthread_mutex_t mu;
    int fatal;                     /* 0 while healthy, then a fatal KVMUX_E* */
    char fatal_msg[KVMUX_CLIENT_MSG_MAX];
    int closing;                   /* kvmux_close has begun */
    kvmux__pending pending;
    kvmux__outbuf out;             /* callers append frames here */
    size_t wr_bytes;               /* bytes in the writer's hands */
    uint32_t wr_frames;            /* frames in the writer's hands */
    int writer_idle;               /* writer sleeps on writer_cond */
    pthread_cond_t writer_cond;
    pthread_cond_t slot_cond;      /* callers waiting for a free slot */
    uint32_t slot_waiters;
    pthread_cond_t queue_cond;     /* callers waiting for queue room */
    uint32_t queue_waiters;
    pthread_cond_t idle_cond;      /* kvmux_close waits for active == 0 */
    uint32_t active;               /* callers inside the library (a
                                      blocking caller leaves when its
                                      slot completes) */
    kvmux__callwait *wake_head;    /* completed blocking calls not yet
                                      woken (kvmux__call_wake_all) */
    uint32_t chains;               /* wake chains running: callers they
                                      woke leave the writer kick to the
                                      chain's tail (call.c) */
    int wake_chains;               /* chains a batch of completed calls
                                      is dealt into: the online CPUs,
                                      1..KVMUX__MAX_WAKE_CHAINS (immutable) */
    uint64_t dropped_replies;      /* late (tombstoned) or unknown ids */
    int draining;                  /* v2: GOAWAY received; no new requests */
    kvmux__bigmsg *big_head;       /* v2: fragmented requests being sent */
    kvmux__bigmsg *big_tail;
    size_t big_bytes;              /* their value bytes */
    uint32_t big_n;
    kvmux__bigmsg *wr_big;         /* the one the writer is writing, or NULL */
    kvmux_rate cancel_rate;        /* v2: our own cap on CANCELs sent */
    uint64_t next_handle;          /* kvmux_handle of the next async op */

    /* ---- async requests (async.c), guarded by mu ---- */
    kvmux__theap timers;           /* deadlines of QUEUED ops (in-flight
                                      ones: the slots' timer lists) */
    kvmux__op *backlog_head;       /* QUEUED ops, FIFO */
    kvmux__op *backlog_tail;
    uint32_t backlog_n;
    size_t backlog_bytes;          /* encoded sizes of the QUEUED ops */
    kvmux__done *done_head;        /* callbacks due, in completion order */
    kvmux__done *done_tail;
    kvmux__done *free_done;        /* recycled completion records */
    uint32_t free_done_n;
    uint32_t parked_head;          /* DONE slots (no record could be
                                      allocated), KVMUX__SLOT_NIL none */
    uint32_t parked_tail;
    kvmux__op *free_ops;           /* recycled ops */
    uint32_t free_n;
    kvmux__op *live_futures;       /* futures not yet kvmux_future_free'd */
    uint32_t ops_out;              /* ops allocated and not on free_ops */
    /* the completion thread (dispatcher.c), threaded mode */
    int disp_started;
    pthread_t disp;
    pthread_cond_t disp_cond;
    int disp_idle;                 /* sleeps on disp_cond */
    int64_t disp_wake_at;          /* while idle: its timer, INT64_MAX none */
    int close_deferred;            /* kvmux_close ran inside a callback */
    int disp_batching;             /* running a batch of callbacks */
    int kick_deferred;             /* a writer kick waits for the batch end */
    /* cluster handle: a callback run on a group's completion thread
     * (kvmux__op_finish_direct), and on which thread; the completion
     * thread running callbacks (kvmux__async_run_done) */
    int cb_direct;
    pthread_t cb_direct_thread;
    kvmux_client *cb_direct_via;   /* the group's sub-client it runs on */
    /* A threaded cluster handle's sub-client: the handle (set before the
     * sub-client is published, then immutable; NULL otherwise), and, for
     * the thread running a batch of its callbacks (kvmux__async_run_done),
     * whether it holds the handle's callback gate for the whole batch
     * (cluster.c, kvmux__cluster_gate_take): read and written by that
     * thread only. */
    kvmux_client *xhandle;
    int xgate;
    /* threaded: a callback running on our completion thread waits for a
     * future (future.c) and drives our completions meanwhile; what would
     * wake this thread (a completion queued, a deadline before
     * drive_wake_at) wakes that waiter instead */
    struct kvmux__waiter *drive_waiter;
    int64_t drive_wake_at;
    int cb_running;
    int close_handoff;             /* kvmux_close from a direct callback:
                                      the completion thread finishes it */

    /* ---- event-loop mode (loop.c); the loop thread only ---- */
    kvmux__lstate lstate;
    int attached;                  /* hooks set */
    kvmux_async_hooks hooks;
    int read_armed;
    int write_armed;
    int64_t timer_at;              /* deadline the loop timer is armed for,
                                      INT64_MAX none */
    int64_t connect_deadline;      /* handshake must finish by then */
    uint32_t in_handler;           /* depth of handle_* / callbacks */
    kvmux_status_cb status_cb;
    void *status_ud;
    int status_due;                /* 1: report status_code after unlock */
    int status_code;
    struct iovec lw_iov[3];        /* the send round being written: the */
    int lw_niov;                   /* pieces left (0: none in progress), */
    kvmux__bigmsg *lw_big;         /* and its fragment's transfer */
    /* automatic reconnect in loop mode (reconnect.c): the address
     * resolved once by kvmux_async_connect (no DNS in the loop thread) */
    struct sockaddr_storage raddr;
    socklen_t raddr_len;
    int64_t retry_at;              /* DOWN: when the next attempt starts */
    uint32_t retry_n;              /* attempts since the connection was lost */
    uint64_t retry_seed;           /* backoff jitter (xorshift64, never 0) */
    int down_code;                 /* guarded by mu: the loss an attempt in
                                      progress follows (fatal is 0 then, so
                                      the loop drives it); 0 once connected */

    /* ---- automatic reconnect (reconnect.c), threaded mode ---- */
    char *host;                    /* immutable: where to reconnect */
    uint16_t port;
    pthread_cond_t conn_cond;      /* guarded by mu: callers waiting for a
                                      new connection; the backoff sleep */
    uint64_t reconnects;           /* guarded by mu: connections re-made */
    uint64_t reconnect_attempts;   /* guarded by mu: attempts started */
    int writer_running;            /* reader thread only (reconnect mode):
                                      c->writer must be joined */

    /* ---- failover (failover.c): endpoints mode; guarded by mu ----
     * Async requests keep their copy (op->q, op->buf) while in flight so
     * they can be resent; host (above, owned, KVMUX__HOST_MAX + 1 bytes)
     * and port name the target of the next threaded attempt, raddr the
     * event-loop one. */
    kvmux__endpoint *eps;          /* NULL: off; replaced under mu by
                                      kvmux__failover_set_endpoints */
    uint32_t neps;
    uint64_t session_id;           /* exactly-once session (failover.c);
                                      immutable after connect; 0: off */
    uint64_t next_seq;             /* under mu: the next write's seq */
    uint32_t ep_cur;               /* the endpoint tried last / next */
    int redir_set;                 /* the next attempt goes to redir_* */
    int via_redirect;              /* the current connection's target was
                                      named by a NOT_LEADER (not taken from
                                      the endpoint list) */
    char redir_host[KVMUX__HOST_MAX + 1];
    uint16_t redir_port;
    struct sockaddr_storage redir_ss; /* event-loop mode: resolved numerically */
    socklen_t redir_sslen;
    int redirecting;               /* NOT_LEADER seen: draining this
                                      connection before following it */
    kvmux__op *requeue_last;       /* last op put back at the backlog's
                                      head (resends keep their order) */
    uint64_t out_rounds;           /* send rounds begun (kvmux__round_begin
                                      takes all of c->out): a frame queued
                                      in the current one has not left */

    /* ---- cluster mode (cluster.c): NULL on every other client ---- */
    struct kvmux__router *router;  /* immutable after connect */
};

/* Internal call result: a GET/PING cut off by a lost connection that the
 * caller resends on the next one (retry_reads). Never returned. */
/* Cap on kvmux_options.busy_poll_us: one second. */
#define KVMUX__MAX_BUSY_POLL_US 1000000u

#define KVMUX__ERETRY (-1000)
/* Internal call result: the request was answered NOT_LEADER (not
 * processed); the caller resends it to the leader and counts a redirect
 * (endpoints mode). Never returned. */
#define KVMUX__EREDIRECT (-1001)

/* ---- failover (failover.c; endpoints mode) ---- */

/* Parse "host:port" (IPv6: "[addr]:port"), p[0..len), blanks around it
 * ignored, into host (KVMUX__HOST_MAX + 1 bytes, NUL-terminated) and
 * *port (1..65535). Returns 0 or -1 (malformed: nothing promised about
 * the outputs). Pure. */
int kvmux__hostport_parse(const char *p, size_t len, char *host, uint16_t *port);
/* Parse kvmux_options.endpoints: comma-separated host:port entries, 1 to
 * KVMUX__MAX_ENDPOINTS of them, none empty. *out is a new array of *n
 * entries (free() it; ss not resolved). Returns 0, KVMUX_EINVAL (message
 * recorded for kvmux_connection_error(NULL, ...)) or KVMUX_ENOMEM. */
int kvmux__endpoints_parse(const char *s, kvmux__endpoint **out, uint32_t *n);
/* 1 if c is in endpoints mode. */
static inline int kvmux__failover_on(const kvmux_client *c) {
    return c->eps != NULL;
}
/* A write of op is numbered in c's session on the current connection (v3
 * negotiated, sessions on): its frame carries SESSION and a seq. Any
 * thread (c->version is an atomic). */
int kvmux__session_on(const kvmux_client *c, int op);
/* A session write's seq as kept with its request: the number, plus
 * KVMUX__SEQ_SENT (an earlier transmission may have reached a server) and
 * KVMUX__SEQ_CUR (the latest one may have). 0: not numbered yet. */
#define KVMUX__SEQ_SENT (1ull << 63)
#define KVMUX__SEQ_CUR (1ull << 62)
/* The seq for the next transmission of a write (lock held): numbers it
 * if new; RETRY on the wire if an earlier transmission may have left. */
uint64_t kvmux__session_wire_seq(kvmux_client *c, uint64_t *seq);
/* Endpoints mode: draw c's session id unless sessions are off (connect). */
void kvmux__session_init(kvmux_client *c);
/* OUTCOME_UNKNOWN answered a session write (lock held): resend it (1,
 * done), or 0: the caller completes it with KVMUX_EUNKNOWN. */
int kvmux__session_unknown(kvmux_client *c, kvmux__slot *s);
/* Most OUTCOME_UNKNOWN answers one session write is resent after. */
#define KVMUX__MAX_UNKNOWN_RESENDS 3u
/* 1 if op is a read (resent after a lost connection): GET, EXISTS, TTL,
 * SCAN, WAIT, STATS, SLOWLOG, CLIENT_LIST, PING. */
int kvmux__op_is_read(int op);
/* Lock held, endpoints mode: a RESPONSE NOT_LEADER (value addr[0..len):
 * the leader's "host:port", or empty) for WAITING slot s. The first one on
 * a connection sets the redirect target and starts draining it (nothing
 * new is sent on it); s's request is resent (kvmux__failover_resend,
 * counting a redirect); once no write is still owed an answer the
 * connection is closed and the reconnect follows the target. */
void kvmux__failover_not_leader(kvmux_client *c, kvmux__slot *s, const uint8_t *addr,
                                size_t len);
/* Lock held: while draining for a redirect, close the connection once
 * no WAITING slot holds a write (reads in flight are resent). */
void kvmux__failover_drain_check(kvmux_client *c);
/* Lock held, from kvmux__client_fail in endpoints mode: the connection is
 * lost; the next attempt goes to the redirect target if one is set, else
 * to the next endpoint. */
void kvmux__failover_lost(kvmux_client *c);
/* Lock held: a reconnect attempt failed: the next goes to the next
 * endpoint. */
void kvmux__failover_attempt_failed(kvmux_client *c);
/* Lock NOT held, endpoints mode (else KVMUX_EINVAL): replace c's endpoint
 * list with list (kvmux_options.endpoints syntax), e.g. the members a
 * newer cluster map names for the group. The connection in use is kept
 * (its server may still serve; if it goes, the reconnect walks the new
 * list); the next attempt after a loss takes the entry after the current
 * target if it is listed, else the first. Event-loop mode: every entry
 * must be a numeric address (never a resolver on the loop), else
 * KVMUX_EINVAL. On any error the old list stays. Returns 0, KVMUX_EINVAL
 * or KVMUX_ENOMEM. Takes c->mu (callers may hold a cluster handle's lock,
 * which is always taken before a sub-client's). */
int kvmux__failover_set_endpoints(kvmux_client *c, const char *list);
/* Lock held: choose the next attempt's target: c->host / c->port
 * (threaded) or c->raddr (event-loop), the redirect target if set (then
 * consumed), else endpoint ep_cur. */
void kvmux__failover_pick(kvmux_client *c);
/* Lock held (async.c), endpoints mode: WAITING slot s's request was not
 * answered and is to be sent again: a blocking caller gets
 * KVMUX__EREDIRECT (redirected) or KVMUX__ERETRY; an async op goes back to
 * the head of the backlog (after the ones put back before it), with its
 * deadline; redirected past KVMUX__MAX_REDIRECTS: KVMUX_ENOTLEADER. */
void kvmux__failover_resend(kvmux_client *c, kvmux__slot *s, int redirected);
/* Lock held, endpoints mode, the connection failed: s's request is resent
 * if it is a read (or resend_writes), else completes KVMUX_EUNKNOWN. */
void kvmux__failover_slot_lost(kvmux_client *c, kvmux__slot *s);

/* ---- cluster mode (cluster.c); docs/DESIGN.md "Cluster client" ----
 * A cluster handle is a kvmux_client without a connection of its own
 * (fd -1, no reader or writer): its router holds the slot map and one
 * endpoints-mode sub-client per group. Its async machinery (ops, timer
 * heap, completion thread, futures) is the ordinary one; an op it routes
 * is ROUTED and carries a copy of its request (op->q) for the hops. */

/* kvmux_connect with opts->cluster = 1 (opts imported and checked). */
int kvmux__cluster_connect(kvmux_client **out, const char *host, uint16_t port,
                           const kvmux_options *o);
/* Route op (ROUTED, request copied, op->timer.deadline set, not on c's
 * heap; lock held): send it to its group's sub-client (the hop's deadline
 * is op's), or park it (group connecting: then on c's heap). Returns 0
 * (routed: it completes exactly once), or an error without having routed
 * it (KVMUX_EAGAIN: the sub-client's queue is full, or too many ops wait
 * for a connect; try_only: no credit right now; KVMUX_ENOMEM). now:
 * the monotonic ms op's deadline was computed from (the hop's timeout
 * counts from it: no second clock read). */
int kvmux__cluster_route(kvmux_client *c, kvmux__op *op, int try_only, int64_t now);
/* op (ROUTED) is completing (lock held): leave the router's lists; a
 * sub-request still outstanding is cancelled and its answer dropped. */
void kvmux__cluster_unroute(kvmux_client *c, kvmux__op *op);
/* The ROUTED callback op with handle h, or NULL (lock held). */
kvmux__op *kvmux__cluster_find_handle(kvmux_client *c, uint64_t h);
/* Dispatch parked ops whose retry time has come (lock held, c's
 * completion thread); and the earliest such time, or INT64_MAX. */
void kvmux__cluster_tick(kvmux_client *c, int64_t now);
int64_t kvmux__cluster_next(const kvmux_client *c);
/* The blocking call path (call.c) with both outputs: reply (may be NULL)
 * gets the version, number, and any value not given as *vout -- a
 * WRONG_SHARD or TRY_AGAIN's always; vout (may be NULL) a GET or WAIT
 * value as one kvmux_value. */
int kvmux__call_run(kvmux_client *c, const kvmux_request *req, kvmux_reply *reply,
                    kvmux_value **vout, int timeout_ms, int try_only);
/* A blocking call on a cluster handle: a future, waited on. */
int kvmux__cluster_call(kvmux_client *c, const kvmux_request *req, kvmux_reply *reply,
                        kvmux_value **vout, int timeout_ms, int try_only);
/* kvmux_async_connect with opts->cluster = 1: the map is loaded here
 * (blocking, as the threaded connect), then the handle is an event-loop
 * client whose fd is an epoll set of its sub-clients' sockets. */
int kvmux__cluster_async_connect(kvmux_client **out, const char *host, uint16_t port,
                                 const kvmux_options *o);
/* Event-loop cluster handle (loop thread, lock not held): run the
 * sub-clients whose sockets are ready; fire the sub-clients' timers due
 * at now; kvmux_close's first part (ops failed, sub-clients closed). */
void kvmux__cluster_loop_read(kvmux_client *c);
void kvmux__cluster_loop_timers(kvmux_client *c, int64_t now);
/* Event-loop cluster handle, at the end of a handler (loop thread, lock
 * not held): write what the handle's callbacks just submitted to the
 * sub-clients now, instead of on the next round of the application's
 * loop (its writability event on the set). */
void kvmux__cluster_loop_flush(kvmux_client *c);
/* Event-loop cluster handle, when its outermost handler ends (loop
 * thread): put the sub-clients' wishes noted meanwhile into the epoll
 * set. */
void kvmux__cluster_loop_sync(kvmux_client *c);
void kvmux__cluster_loop_shutdown(kvmux_client *c);
/* loop.c: every handler's epilogue (status, callbacks due, deferred
 * close). */
void kvmux__loop_leave(kvmux_client *c);
/* kvmux_close of a cluster handle. */
void kvmux__cluster_close(kvmux_client *c);
/* 1 unless c is a cluster handle whose close has not yet closed its
 * sub-clients (lock held): c's completion thread may then stop. */
int kvmux__cluster_may_stop(const kvmux_client *c);
/* Free a cluster handle whose close has run (no thread left but the
 * caller). */
void kvmux__cluster_free(kvmux_client *c);
/* Complete op (lock held) with result and *r (value moved; r may be
 * NULL), from wherever it waits (async.c). */
void kvmux__op_finish(kvmux_client *c, kvmux__op *op, int result, kvmux_reply *r);
/* As kvmux__op_finish, but the callback runs here and now (lock held on
 * entry and exit, dropped while it runs) -- a cluster handle's hop answer
 * on its group's completion thread, saving the hand-off to c's own. Only
 * for a callback op of a threaded client with no callback of c running
 * or queued (order and one-at-a-time kept; c's completion thread waits
 * for it). via: the sub-client whose completion thread this is (a future
 * wait in the callback drives via's completions, kvmux__disp_drive).
 * Returns 1 if it did (r's value consumed, op recycled), else 0 with
 * nothing changed: the caller uses kvmux__op_finish. c may be closing
 * when it returns 1 (check c->close_handoff). */
int kvmux__op_finish_direct(kvmux_client *c, kvmux__op *op, int result, kvmux_reply *r,
                            kvmux_client *via);
/* A cluster handle's callback gate (lock held): take it for the calling
 * thread, which then runs c's callbacks on via's completion thread, if
 * none of c's callbacks runs or is owed and c is not closing (1), else 0.
 * Callbacks stay one at a time and in completion order. give: release it
 * (and wake c's completion thread if callbacks were queued meanwhile). */
int kvmux__cb_gate_take(kvmux_client *c, kvmux_client *via);
void kvmux__cb_gate_give(kvmux_client *c);
/* 1 if the calling thread is running one of c's callbacks through
 * kvmux__op_finish_direct (lock held). */
int kvmux__cb_direct_here(const kvmux_client *c);
/* If the calling thread runs one of c's callbacks through
 * kvmux__op_finish_direct: the sub-client whose completion thread it is
 * (its completions wait for that callback); else NULL. Lock held. */
kvmux_client *kvmux__cb_direct_via(const kvmux_client *c);
/* Submit a callback request, try_only as kvmux_try_call_async, *h its
 * handle (async.c). Its deadline is now + timeout_ms (now: monotonic ms,
 * < 0 to read the clock). borrow (endpoints mode; ignored otherwise):
 * req's key and value stay valid and unchanged until the request's
 * callback runs or kvmux_cancel(c, *h) has returned, so c keeps no copy
 * of its own (a cluster hop lends its op's). */
int kvmux__async_submit_cb(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                           kvmux_reply_cb cb, void *ud, int try_only, kvmux_handle *h,
                           int64_t now, int borrow);
/* A cluster handle's request sent straight to a group's sub-client: the
 * application's callback and data, and the group (cluster.c). */
typedef struct kvmux__xroute {
    kvmux_reply_cb cb;
    void *ud;
    struct kvmux__cgroup *g;
} kvmux__xroute;
/* Bits of a cluster handle's kvmux_handle that name the group a request
 * was sent to directly (1 + its index; 0: the handle's own op, whose
 * handle is a count shifted past them); the rest is the sub-client's
 * handle. */
#define KVMUX__CL_HBITS 10u
#define KVMUX__CL_HMASK ((1u << KVMUX__CL_HBITS) - 1u)
/* As kvmux__async_submit_cb, for a direct request of a cluster handle (c
 * in endpoints mode: the request keeps its copy, to be resent or
 * rerouted): the op's callback is cb with the op itself as user_data, and
 * it carries x (op->xcb, xud, xg). No borrow. */
int kvmux__async_submit_x(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                          kvmux_reply_cb cb, const kvmux__xroute *x, int try_only,
                          kvmux_handle *h, int64_t now);
/* A callback op of c (a cluster handle) holding a copy of req, state
 * ROUTED, deadline and handle as given, on no list: a direct request
 * taken back from its sub-client to be routed again (lock held). NULL out
 * of memory. */
kvmux__op *kvmux__async_adopt(kvmux_client *c, const kvmux_request *req, kvmux_reply_cb cb,
                              void *ud, uint64_t handle, int64_t deadline, int64_t tmo);
/* Queue a callback on c's completion path (lock held): it runs on c's
 * completion thread (or the loop's next handler end) like any other;
 * r's value is moved. Returns 0 or KVMUX_ENOMEM (nothing queued, r
 * untouched). */
int kvmux__done_queue(kvmux_client *c, kvmux_reply_cb cb, void *ud, int result, kvmux_reply *r);
/* A cluster handle's callback submit (lock not held): if the request's
 * group is connected, sent straight to its sub-client (*taken 1, the
 * result returned, *handle as for kvmux_call_async_handle); else *taken
 * 0 and nothing done -- the caller routes it through an op. */
int kvmux__cluster_submit_direct(kvmux_client *c, const kvmux_request *req, int64_t tmo,
                                 kvmux_reply_cb cb, void *ud, int try_only,
                                 kvmux_handle *handle, int *taken);
/* The thread about to run a batch of sub's callbacks (sub's lock not
 * held) takes sub->xhandle's callback gate for the batch, if free: 1 (the
 * batch's direct answers run their callbacks without the handle's mutex;
 * kvmux__cluster_gate_give after it), else 0. */
int kvmux__cluster_gate_take(kvmux_client *sub);
void kvmux__cluster_gate_give(kvmux_client *sub);
/* kvmux_cancel of a direct request (lock held): 0 or KVMUX_ENOTFOUND. */
int kvmux__cluster_cancel_direct(kvmux_client *c, uint64_t h);
/* Close-time: fail c for good (closing, KVMUX_ECLOSED) and wake every
 * caller blocked on it, without freeing anything: a cluster handle does
 * this to its sub-clients before waiting for its own callers (client.c). */
void kvmux__client_shutdown(kvmux_client *c);

/* ---- automatic reconnect (reconnect.c) ---- */

/* 1 if c reconnects automatically and is not closing (lock held): a fatal
 * code then means "disconnected for now", not "dead". */
int kvmux__reconnecting(const kvmux_client *c);
/* Reader thread, reconnect mode, after the connection failed: join the
 * writer, reset the per-connection state, and reconnect with backoff.
 * Returns 1 with a new connection (writer running; the reader resumes),
 * 0 if the client is closing (writer joined). */
int kvmux__reconnect_run(kvmux_client *c);
/* Send HELLO and apply HELLO_ACK on c->fd (client.c). */
int kvmux__connect_handshake(kvmux_client *c, const char *name, int64_t deadline);
/* Start the writer thread with every signal blocked. Returns 0 or errno. */
int kvmux__writer_start(kvmux_client *c);
/* Attempt n's backoff (ms): uniform in [0, min(max_backoff, min_backoff
 * << n)]; *seed is the xorshift64 state (never 0). */
int64_t kvmux__reconnect_backoff(const kvmux_client *c, uint32_t n, uint64_t *seed);
/* Loop mode, lock held, from kvmux__loop_on_fail: the connection is lost
 * and will be re-made: state DOWN, the next attempt due after a backoff
 * (the loop's timer is armed for it). */
void kvmux__loop_reconnect_schedule(kvmux_client *c);
/* Loop mode, lock held, state DOWN and retry_at reached (the timer
 * handler): drop the dead connection and start a non-blocking connect to
 * the cached address on the same descriptor number (the adapter keeps
 * watching kvmux_async_fd). On a failure to even start, schedules the
 * next attempt. */
void kvmux__loop_reconnect_start(kvmux_client *c);

/* errno as text, thread-safely (GNU strerror_r, _GNU_SOURCE is defined
 * build-wide). buf holds at least 64 bytes. */
static inline const char *kvmux__errstr(int err, char *buf, size_t len) {
    return strerror_r(err, buf, len);
}

/* Fail the connection (lock held): the first call records code and msg
 * (printf-style), completes every WAITING slot with code, wakes every
 * waiter and the writer, and shuts the socket down so both threads leave
 * their blocking calls. Later calls do nothing. */
void kvmux__client_fail(kvmux_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Make sure c->out can take n more bytes (lock held). Returns 0 or
 * KVMUX_ENOMEM (out unchanged). */
int kvmux__out_reserve(kvmux_client *c, size_t n);

/* Wake the writer if it sleeps (lock held). The signal is sent only on the
 * idle -> busy edge, so a burst of callers costs one wakeup. */
void kvmux__writer_kick(kvmux_client *c);

/* v2: apply a WINDOW_UPDATE for one of our fragmented requests (lock
 * held). Returns 0 (also for an id with no transfer: it may have just
 * finished) or -KVMUX_ERR_PROTOCOL (window overflow). */
int kvmux__writer_on_window_update(kvmux_client *c, const kvmux_frame *f);

/* ---- v2 fragmented requests (bigsend.c); lock held ---- */

/* Allocate the transfer of req (a SET/CAS too large for one frame) and
 * copy its key and value once -- or take over steal->buf (a backlogged
 * op's copy: key then value) when steal is not NULL. Returns 0 or
 * KVMUX_ENOMEM. */
int kvmux__big_prepare(kvmux_client *c, const kvmux_request *req, struct kvmux_future *steal,
                       kvmux__bigmsg **out);
/* Free a transfer never started. */
void kvmux__big_free(kvmux__bigmsg *m);
/* Start m as the REQUEST tmpl (id, op, extras set; key and value are m's):
 * plan its fragments and queue it for the writer. Returns 0 or
 * -KVMUX_ERR_* (then m is not queued: free it). */
int kvmux__big_start(kvmux_client *c, kvmux__bigmsg *m, const kvmux_frame *tmpl);
/* The next transfer with a fragment to send (round robin), its fragment
 * in *fr (window consumed), or NULL. */
kvmux__bigmsg *kvmux__big_pick(kvmux_client *c, kvmux_fragment *fr);
/* 1 if some transfer could send a fragment now. */
int kvmux__big_ready(kvmux_client *c);
/* Encode the frame head of fragment fr of m into m->hdr; returns its
 * length (the value bytes follow from m->buf). */
size_t kvmux__big_encode_head(kvmux_client *c, kvmux__bigmsg *m, const kvmux_fragment *fr);
/* The writer finished writing m's fragment: free m if done or aborted. */
void kvmux__big_written(kvmux_client *c, kvmux__bigmsg *m);
/* Stop sending request id's value (CANCEL). Returns 1 if some of it was
 * sent (the server knows the request), 0 if nothing was (the request
 * never left: no reply will come), -1 if no transfer has that id (sent
 * completely, or not fragmented). */
int kvmux__big_abort(kvmux_client *c, uint32_t id);
/* Close-time: free every transfer (no writer running). */
void kvmux__big_free_all(kvmux_client *c);
/* 1 if request id has a transfer with value bytes still to send (not
 * aborted): stopping to wait for it should stop the upload too. */
int kvmux__big_sending(const kvmux_client *c, uint32_t id);

/* ---- send rounds, shared by writer.c and loop.c (bigsend.c) ---- */

/* Start one round (lock held; c->out non-empty or kvmux__big_ready): the
 * whole outbound queue becomes the batch (c->wbuf; its bytes still count
 * against the queue limits), plus at most one fragment of the next
 * transfer (*mp, then c->wr_big; NULL if none). Fills iov with the
 * round's non-empty pieces and returns their number. The caller writes
 * them all, then calls kvmux__round_end. */
int kvmux__round_begin(kvmux_client *c, struct iovec iov[3], kvmux__bigmsg **mp);
/* The round is written, or abandoned because the connection failed (lock
 * held): recycle the batch buffer, release the queue accounting and free
 * the transfer m if it is done or was aborted meanwhile. */
void kvmux__round_end(kvmux_client *c, kvmux__bigmsg *m);

/* Thread bodies; arg is the kvmux_client. */
void *kvmux__writer_main(void *arg);
void *kvmux__reader_main(void *arg);

/* Handle the frames in c->rbuf[0..c->rlen) (lock held): returns bytes
 * consumed; on a protocol error the connection has been failed. Exposed
 * for the reader loop only. */
size_t kvmux__reader_process(kvmux_client *c);

/* ---- shared request path (call.c) ---- */

/* Check req against the negotiated limits; *flen = its frame size.
 * Returns 0, KVMUX_EINVAL or KVMUX_ETOOBIG. */
int kvmux__call_check(const kvmux_client *c, const kvmux_request *req, size_t *flen);

/* Reserve what encoding req (frame size flen, from kvmux__call_check)
 * needs: room in c->out, or, for a value sent fragmented, its transfer
 * (*big; steal as for kvmux__big_prepare). *big is NULL for a
 * single-frame request. Returns 0 or KVMUX_ENOMEM. */
int kvmux__call_prepare(kvmux_client *c, const kvmux_request *req, size_t flen,
                        struct kvmux_future *steal, kvmux__bigmsg **big);

/* Encode req as request id at the end of c->out (room reserved), or start
 * its transfer big (from kvmux__call_prepare). now: the monotonic ms the
 * caller just read (one clock read per async submit), or -1 to read the
 * clock here if a DEADLINE needs it. Returns 0, or KVMUX_ETOOBIG if the
 * transfer could not be planned (big freed). */
/* 1 if a request op on a connection of this version carries STALE
 * (opts.stale_reads, v3, a read). */
int kvmux__stale_applies(const kvmux_client *c, int op, uint8_t version);
int kvmux__call_encode(kvmux_client *c, const kvmux_request *req, uint32_t id,
                       kvmux__bigmsg *big, int64_t deadline, int64_t now, uint64_t *seq);

/* The DEADLINE value (ms left, >= 1) for a monotonic-ms deadline, at
 * now (monotonic ms; -1: read the clock). */
uint32_t kvmux__deadline_left(int64_t deadline, int64_t now);

/* ---- cancellation (async.c); lock held ---- */

/* Stop waiting for the request in slot s (WAITING, no caller attached any
 * more: its caller gave up or cancelled). On v2, and within the client's
 * own CANCEL rate (KVMUX_CLIENT_CANCEL_RATE), a CANCEL is queued and the
 * request's fragmented upload, if any, stops; a request none of which
 * has left yet is dropped and its slot freed at once (no reply will come).
 * Otherwise the slot becomes a TOMBSTONE until the server's one reply. */
void kvmux__slot_abandon(kvmux_client *c, kvmux__slot *s);

/* 1 if a frame of flen bytes does not fit in the outbound queue now. */
int kvmux__queue_full(const kvmux_client *c, size_t flen);

/* ---- async requests (async.c); lock held unless said otherwise ---- */

/* Slot s (WAITING) has its result: result, *r (version, number, value)
 * and, for a want_value call, v -- the value buffers move to the owner
 * (freed if it cannot take them). The slot is freed at once; a blocking
 * caller is queued on c->wake_head (woken by kvmux__call_wake_all) and
 * leaves the active count unless result is KVMUX__ERETRY; an async op is
 * completed (op_complete). r may be NULL (nothing but a result). */
void kvmux__slot_finish(kvmux_client *c, kvmux__slot *s, int result, kvmux_reply *r,
                        kvmux_value *v);

/* Wake every blocking caller on the list w (taken off c->wake_head under
 * the lock): each word becomes DONE, then a futex wake if its caller
 * sleeps. Lock held or not; the records must not be touched after their
 * word is DONE, so the list is read ahead. */
void kvmux__call_wake_all(kvmux__callwait *w);
/* The reader's alternative (lock held; the wakes happen when it is
 * released): deal the list into up to c->wake_chains chains by the CPU
 * each caller last ran on, and wake only the first caller of each; each
 * woken caller wakes the next one of its chain (call.c), so the reader
 * goes back to the socket at once and the wakes run on the callers'
 * threads, one chain per CPU in parallel. The last record of a chain of two or more is its tail: it
 * stays counted in active and, once woken, kicks the writer for every
 * request queued meanwhile (c->chains > 0: those callers did not kick),
 * so a round of replies comes back as one batch of requests. Fills heads
 * (room for KVMUX__MAX_WAKE_CHAINS) with the records to wake with
 * kvmux__call_wake_first after unlocking; returns how many. */
#define KVMUX__MAX_WAKE_CHAINS 16
int kvmux__call_chain_prepare(kvmux_client *c, kvmux__callwait *w, kvmux__callwait **heads);
void kvmux__call_wake_first(kvmux__callwait *w);

/* A slot became FREE: admit backlogged ops, then wake a synchronous caller
 * waiting for a slot if one is still free. */
void kvmux__slot_freed(kvmux_client *c);

/* Admit backlogged ops while credits and queue room allow (no-op once the
 * connection has failed). */
void kvmux__async_pump(kvmux_client *c);

/* Connection failure: complete every QUEUED op with code (INFLIGHT ones
 * are completed through their slots). */
void kvmux__async_fail(kvmux_client *c, int code);

/* Complete every op whose deadline has passed (now, monotonic ms) with
 * KVMUX_ETIMEDOUT. */
void kvmux__async_expire(kvmux_client *c, int64_t now);
/* The earliest async deadline (queued or in flight), or INT64_MAX. */
int64_t kvmux__async_next_deadline(const kvmux_client *c);
/* 1 if callbacks are due (the DONE list or parked slots). */
int kvmux__async_has_done(const kvmux_client *c);

/* Run the callbacks of the DONE list until it is empty; lock NOT held on
 * entry or exit. Used by the completion thread and the loop driver. */
void kvmux__async_run_done(kvmux_client *c);

/* Return op (DONE, or never submitted) to the free list: its reply value,
 * if still there, is freed. */
void kvmux__op_recycle(kvmux_client *c, kvmux__op *op);

/* Close-time: mark every live future detached (they outlive c), and free
 * the free list. Every op must be DONE or FREE. */
void kvmux__async_release_all(kvmux_client *c);

/* Futures (future.c uses these async.c internals; lock held). Cancel a
 * pending future's request locally (a queued one leaves the backlog, a
 * sent one leaves a tombstone), take f off c's live list; destroy a
 * detached one (no lock: its client is gone). */
void kvmux__future_cancel(kvmux_client *c, kvmux__op *f);
void kvmux__future_unlink(kvmux_client *c, kvmux__op *f);
void kvmux__future_destroy(kvmux__op *f);

/* Threaded mode: start the completion thread (lock held; once). Returns 0
 * or KVMUX_ENOMEM. The thread body and its wakeups are in dispatcher.c. */
int kvmux__disp_start(kvmux_client *c);
/* Wake the completion thread if it sleeps (new DONE op). */
void kvmux__disp_kick(kvmux_client *c);
/* Do one round of c's completion thread's work from that very thread
 * while it is held in a callback it runs (a cluster handle's callback
 * waiting for a future whose answer c must deliver; future.c): expire
 * c's deadlines, run c's owed callbacks (nested: they may run before the
 * rest of the interrupted batch). No lock held on entry. Returns the
 * earlier of c's next deadline and cap, which is also c->drive_wake_at
 * from then on (a new deadline before it fires c->drive_waiter). */
int64_t kvmux__disp_drive(kvmux_client *c, int64_t cap);
/* A new deadline: wake the completion thread (threaded) or re-arm the
 * loop's timer (loop mode) if it is earlier than the one awaited. */
void kvmux__timers_changed(kvmux_client *c, int64_t deadline);
/* kvmux_close's part for the completion thread: lock held, connection
 * already failed. Returns 1 if the caller is that thread (inside a
 * callback): the thread then finishes the close itself, and the caller
 * must unlock and return at once. Otherwise wakes it to drain and exit
 * and returns 0; join it with kvmux__disp_join after unlocking. */
int kvmux__disp_close(kvmux_client *c);
void kvmux__disp_join(kvmux_client *c);

/* ---- event-loop mode (loop.c) ---- */

/* Loop mode counterpart of a writer wakeup: make sure the loop watches
 * for writability. */
void kvmux__loop_want_write(kvmux_client *c);
/* Arm the loop's timer for the earliest deadline (a request's, or the
 * handshake's) if it is earlier than the armed one (lock held). */
void kvmux__loop_timer_update(kvmux_client *c);
/* The connection failed (lock held): stop watching the fd, disarm the
 * timer, and arrange for the status callback. */
void kvmux__loop_on_fail(kvmux_client *c);
/* kvmux_close for a loop client (all of it). */
void kvmux__loop_close(kvmux_client *c);

/* ---- lifecycle pieces shared by both connects (client.c) ---- */

/* Resolve host:port (getaddrinfo, may block) to its first address.
 * Returns 0 or KVMUX_ECONNECT / KVMUX_ENOMEM (message recorded). */
int kvmux__resolve_first(const char *host, uint16_t port, struct sockaddr_storage *ss,
                         socklen_t *len);
/* host:port to its first address without a resolver (AI_NUMERICHOST:
 * never blocks; a name is refused). Records nothing. Returns 0, or -1 if
 * host is not a numeric address. */
int kvmux__resolve_numeric(const char *host, uint16_t port, struct sockaddr_storage *ss,
                           socklen_t *len);
/* A non-blocking TCP socket (CLOEXEC, TCP_NODELAY) with a connect to ss
 * started. Never blocks. Returns the fd, or KVMUX_ECONNECT (message
 * recorded). */
int kvmux__connect_addr(const struct sockaddr_storage *ss, socklen_t len);

/* A new client with options o (validated), mutex, condition variables and
 * receive buffer; fd -1. Returns NULL on out of memory (message recorded
 * for kvmux_connection_error(NULL, ...)). */
kvmux_client *kvmux__client_new(const kvmux_options *o);
/* Free c's memory and socket. No thread may be running. */
void kvmux__client_free(kvmux_client *c);
/* Validate options. Returns 0 or KVMUX_EINVAL (message recorded). */
int kvmux__check_opts(const kvmux_options *o);
/* Copy the caller's options (NULL: defaults) into dst, a full-size struct:
 * only the caller's struct_size bytes are read, later fields keep their
 * defaults (docs/ABI.md). Returns 0 or KVMUX_EINVAL (struct_size 0 or
 * larger than this library's kvmux_options), recorded for
 * kvmux_connection_error(NULL, ...). */
int kvmux__options_import(kvmux_options *dst, const kvmux_options *src);
/* Record a connect failure for kvmux_connection_error(NULL, ...) and
 * return code. */
int kvmux__connect_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The calling thread's last connect failure message, and its reset (a
 * connect starting). */
const char *kvmux__connect_msg(void);
void kvmux__connect_reset(void);
/* Initialise the session and encode HELLO into out (KVMUX_HELLO_MAX_LEN
 * bytes). Returns its length. */
size_t kvmux__hello_encode(kvmux_client *c, const char *name, uint8_t *out);
/* Apply the handshake reply f (already decoded): HELLO_ACK -> settings,
 * server info, pending table; ERROR or anything else -> a failure.
 * Returns 0, or a KVMUX_E* with the message recorded (connect_fail). */
int kvmux__handshake_reply(kvmux_client *c, const kvmux_frame *f);
/* Resolve host and open a non-blocking TCP socket; connect() is started.
 * If deadline >= 0 wait (poll) until connected or deadline (monotonic ms),
 * trying each address; if deadline < 0 return at once with the connect in
 * progress (first address only). Returns the fd or a KVMUX_E* (message
 * recorded). */
int kvmux__connect_socket(const char *host, uint16_t port, int64_t deadline);

/* ---- keepalive (keepalive.c) ---- */

/* 1 if keepalive is on (keepalive_interval_ms > 0). */
int kvmux__keepalive_on(const kvmux_client *c);
/* When kvmux__keepalive_tick has something to do (monotonic ms), or
 * INT64_MAX. Reader thread / loop thread. */
int64_t kvmux__keepalive_due(const kvmux_client *c);
/* Bytes arrived at now. Reader thread / loop thread, lock not needed. */
void kvmux__keepalive_rx(kvmux_client *c, int64_t now);
/* At or after the due time (lock held): queue a PING, or fail the
 * connection with KVMUX_EKEEPALIVE if one went unanswered. */
void kvmux__keepalive_tick(kvmux_client *c, int64_t now);

/* ---- reader pieces shared by both drivers (reader.c), lock not held ---- */

/* Make room in c->rbuf for more bytes. Returns 0 or -1 (out of memory;
 * the connection has been failed). */
int kvmux__reader_make_room(kvmux_client *c);
/* Drop the first used bytes of c->rbuf (processed frames). */
void kvmux__reader_consume(kvmux_client *c, size_t used);

/* Map a RESPONSE status to a kvmux_error. Returns 0 and sets *err, or -1
 * for a status this version does not define (a protocol error). */
int kvmux__status_to_error(uint8_t status, int *err);

#endif /* KVMUX_CLIENT_INTERNAL_H */
