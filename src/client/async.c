/* kvmux client async requests: the submit path of kvmux_call_async /
 * kvmux_call_future (and their try variants), the bounded backlog of
 * requests waiting for a credit, completion routing, per-request deadlines,
 * and running callbacks.
 *
 * Design. A callback request that gets a credit at once lives only in its
 * pending slot (pending.h: callback, user data, handle, deadline, timer
 * links; 48 bytes per credit, allocated at the handshake): it allocates
 * nothing. A future, or a request that must wait in the backlog, is an
 * op (struct kvmux_future, client_internal.h) from the client's free
 * list; a queued callback request's op goes back to that list when it is
 * admitted and moves into its slot. Under the client mutex a submit
 *   1. fails fast on a dead connection and checks req exactly as kvmux_call
 *      does (kvmux__call_check: same limits, same codes);
 *   2. if a credit is free, the outbound queue has room and nobody waits in
 *      the backlog, takes a pending slot and encodes the frame straight into
 *      the outbound buffer (kvmux__call_encode), like a synchronous call;
 *   3. otherwise (non-try only) copies key and value into the op's own
 *      buffer and appends it to the backlog, a FIFO bounded by queue_limit
 *      requests and queue_bytes_limit bytes; the try variants and a full
 *      backlog say KVMUX_EAGAIN;
 *   4. arms its deadline: in flight, on the slots' timer list of its
 *      timeout (pending.c, O(1)); queued, on the client's timer heap.
 * A submit never sleeps, so an event loop (or a callback) can always
 * submit. The backlog is drained in order by kvmux__async_pump whenever a
 * credit or queue room comes back (a reply, a synchronous caller releasing
 * its slot, the writer finishing a batch, the handshake completing), and it
 * is served before synchronous callers waiting for a slot: they sleep and
 * can take their turn later, the backlog cannot sleep.
 *
 * Completion is one path: the reader (or a connection failure) completes
 * the slot and kvmux__slot_finish frees it at once (the credit returns
 * immediately) after moving the result out: a future gets it and done = 1
 * (release order, so kvmux_future_poll is one atomic load) and its waiting
 * thread, if any, is woken; a callback's result goes into a transient
 * completion record (kvmux__done, from a free list) appended to the DONE
 * list, which the client's completion thread (threaded mode,
 * dispatcher.c) or the event-loop handler (loop.c) runs with
 * kvmux__async_run_done, without the lock, in completion order. Out of
 * memory for that record, the slot itself carries the completion (parked:
 * it keeps its credit until the callback has run), and a deadline or a
 * cancel that cannot get one is retried a little later, so no callback is
 * ever lost or run twice. A deadline
 * that passes first (kvmux__async_expire, run by the same completion
 * thread or the loop's timer) completes the op with KVMUX_ETIMEDOUT; a sent
 * request's slot becomes a TOMBSTONE that keeps its id until the late reply
 * (pending.c), so a late reply can never complete a newer request. Each op
 * is completed exactly once because every path removes it from the one
 * place it was waiting (backlog or slot) under the mutex before completing
 * it.
 *
 * Cancellation (kvmux_future_cancel, kvmux_cancel; freeing a pending
 * future) completes the op at once with KVMUX_ECANCELED and abandons its
 * slot (kvmux__slot_abandon): on v2 a CANCEL goes to the server, which
 * stops a parked WAIT or an upload and answers CANCELED -- or the real
 * answer, if it crossed the CANCEL; either way exactly one reply, which
 * frees the tombstone. Handles are a per-client counter (never 0, never
 * reused; kept in the slot), so a stale handle finds nothing rather than
 * another request; the lookup is a scan of the backlog and the slots
 * (cancels are rare).
 *
 * What it is not: the future API (waiting, results) is future.c, the
 * completion thread dispatcher.c, the event-loop driver loop.c; the
 * encoding and the limits are call.c's.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "clock.h"

/* An op's key/value copy larger than this is freed when the op is
 * recycled, so one burst of large queued values does not pin memory. */
#define ASYNC_BUF_KEEP 4096u
/* Out of memory for a completion record at a deadline (or a cancel): try
 * again this much later. */
#define ASYNC_OOM_RETRY_MS 10

/* Zero n bytes at p through the C library's memset. Every submit
 * clears an op (~260 bytes) and its request record: with the size known
 * at compile time, gcc inlines those as `rep stos`, whose start-up cost
 * on the AMD EPYC of docs/BENCHMARKS.md was ~1.7% of the client's CPU
 * per clear in `perf annotate` (the cluster path made four per request,
 * the plain one two). The volatile size keeps the call; glibc's memset
 * clears it with a few vector stores. */
static void async_zero(void *p, size_t n) {
    volatile size_t vn = n;
    memset(p, 0, vn);
}

/* The op that owns timer t (a QUEUED op's, on the heap). */
static kvmux__op *async_op_of(kvmux__timer *t) {
    return (kvmux__op *)(void *)((char *)t - offsetof(kvmux__op, timer));
}

/* The op whose first member is the completion record d (d->in_op). */
static kvmux__op *async_op_of_done(kvmux__done *d) {
    return (kvmux__op *)(void *)((char *)d - offsetof(kvmux__op, d));
}

/* An op's link on the backlog or the free list: its record's next (an op
 * on either list is not on the DONE list). */
static kvmux__op *op_next(const kvmux__op *op) {
    return op->d.next ? async_op_of_done(op->d.next) : NULL;
}

static void op_set_next(kvmux__op *op, kvmux__op *next) {
    op->d.next = next ? &next->d : NULL;
}

/* A cleared op from the free list, or a new one. NULL on out of memory. */
static kvmux__op *async_op_alloc(kvmux_client *c) {
    kvmux__op *op = c->free_ops;
    if (op) {
        c->free_ops = op_next(op);
        c->free_n--;
    } else {
        op = calloc(1, sizeof *op);
        if (!op) return NULL;
    }
    uint8_t *buf = op->buf;
    size_t bufcap = op->bufcap;
    kvmux__qreq *qspare = op->qspare;
    async_zero(op, sizeof *op);
    op->buf = buf;
    op->bufcap = bufcap;
    op->qspare = qspare;
    op->d.in_op = 1;
    op->timer.idx = KVMUX__TIMER_NONE;
    atomic_init(&op->done, 0);
    c->ops_out++;
    return op;
}

/* Free an op that is on no list. */
static void async_op_destroy(kvmux__op *op) {
    free(op->d.reply.value);
    free(op->buf);
    free(op->q);
    free(op->qspare);
    free(op);
}

/* A request record for op (its recycled one if it has it), on no list,
 * flen and tmo 0; its req is for the caller to fill (every caller copies
 * a whole request into it: async_copy_req, async_adopt_copy). NULL out
 * of memory. */
static kvmux__qreq *async_q_new(kvmux__op *op) {
    kvmux__qreq *q = op->qspare;
    if (!q) return calloc(1, sizeof *q);
    op->qspare = NULL;
    q->prev = NULL;
    q->flen = 0;
    q->tmo = 0;
    return q;
}

void kvmux__op_recycle(kvmux_client *c, kvmux__op *op) {
    free(op->d.reply.value);
    op->d.reply.value = NULL;
    if (op->q && !op->qspare) op->qspare = op->q; /* the next submit's */
    else free(op->q);
    op->q = NULL;
    if (op->bufcap > ASYNC_BUF_KEEP) {
        free(op->buf);
        op->buf = NULL;
        op->bufcap = 0;
    }
    op->state = KVMUX__OP_FREE;
    c->ops_out--;
    /* Keep as many as can wait at once; more would only be idle memory
     * after a burst of futures the caller held on to. */
    uint64_t keep = (uint64_t)c->pending.nslots + c->opts.queue_limit;
    if (c->free_n >= keep) {
        async_op_destroy(op);
        return;
    }
    op_set_next(op, c->free_ops);
    c->free_ops = op;
    c->free_n++;
}

/* ---- completion records ---- */

atomic_int kvmux__test_done_fail;

/* A cleared completion record (not in an op), or NULL on out of memory. */
static kvmux__done *done_alloc(kvmux_client *c) {
    if (atomic_load_explicit(&kvmux__test_done_fail, memory_order_relaxed) > 0) {
        atomic_fetch_sub_explicit(&kvmux__test_done_fail, 1, memory_order_relaxed);
        return NULL; /* simulated out of memory (tests only) */
    }
    kvmux__done *d = c->free_done;
    if (d) {
        c->free_done = d->next;
        c->free_done_n--;
    } else {
        d = malloc(sizeof *d);
        if (!d) return NULL;
    }
    memset(d, 0, sizeof *d);
    return d;
}

/* Queue d's callback to run (threaded: wake the completion thread). */
static void done_push(kvmux_client *c, kvmux__done *d) {
    d->next = NULL;
    if (c->done_tail) c->done_tail->next = d;
    else c->done_head = d;
    c->done_tail = d;
    if (c->mode == KVMUX__MODE_THREADED) kvmux__disp_kick(c);
}

/* After its callback: back to the free list (an op's record: the op). */
static void done_recycle(kvmux_client *c, kvmux__done *d) {
    if (d->in_op) {
        kvmux__op_recycle(c, async_op_of_done(d));
        return;
    }
    free(d->reply.value);
    if (c->free_done_n >= KVMUX_CLIENT_DONE_KEEP) {
        free(d);
        return;
    }
    d->next = c->free_done;
    c->free_done = d;
    c->free_done_n++;
}

/* Free a record on no list (close-time). */
static void done_destroy(kvmux__done *d) {
    if (d->in_op) {
        async_op_destroy(async_op_of_done(d));
        return;
    }
    free(d->reply.value);
    free(d);
}

/* Out of memory for a completion record when slot s (OWNER_CB, WAITING)
 * got its answer: the slot itself carries the completion. It keeps its
 * credit, stores result and reply (compacted: a reply has a value or a
 * number, never both) and goes on the parked list, which the callback
 * runner serves after the DONE list. */
static void slot_park(kvmux_client *c, kvmux__slot *s, int result, const kvmux_reply *r) {
    kvmux__pending_park(&c->pending, s);
    s->result = (int8_t)result; /* every KVMUX_E* fits */
    s->done.version = r->version;
    s->dlen = 0;
    if (r->value) {
        s->flags |= KVMUX__SF_DVAL;
        s->done.value = r->value;
        s->dlen = (uint32_t)r->value_len; /* a frame's value length: u32 */
    } else {
        s->done.number = r->number;
    }
    uint32_t idx = (uint32_t)(s - c->pending.slots);
    if (c->parked_tail == KVMUX__SLOT_NIL) c->parked_head = idx;
    else c->pending.slots[c->parked_tail].tnext = (uint16_t)idx;
    c->parked_tail = idx;
    if (c->mode == KVMUX__MODE_THREADED) kvmux__disp_kick(c);
}

int kvmux__async_has_done(const kvmux_client *c) {
    return c->done_head != NULL || c->parked_head != KVMUX__SLOT_NIL;
}

/* ---- the backlog ---- */

/* Append op to the backlog (flen: its encoded size). */
static void backlog_append(kvmux_client *c, kvmux__op *op, size_t flen) {
    op->state = KVMUX__OP_QUEUED;
    op->q->flen = flen;
    op_set_next(op, NULL);
    op->q->prev = c->backlog_tail;
    if (c->backlog_tail) op_set_next(c->backlog_tail, op);
    else c->backlog_head = op;
    c->backlog_tail = op;
    c->backlog_n++;
    c->backlog_bytes += flen;
}

/* Endpoints mode: put op (its q kept, on no list) back into the backlog
 * right after the ops put back before it (c->requeue_last), i.e. ahead of
 * every request never sent and in the order of the resends. */
static void backlog_requeue(kvmux_client *c, kvmux__op *op) {
    kvmux__op *prev = c->requeue_last;
    kvmux__op *next = prev ? op_next(prev) : c->backlog_head;
    op->state = KVMUX__OP_QUEUED;
    op->q->prev = prev;
    op_set_next(op, next);
    if (prev) op_set_next(prev, op);
    else c->backlog_head = op;
    if (next) next->q->prev = op;
    else c->backlog_tail = op;
    c->backlog_n++;
    c->backlog_bytes += op->q->flen;
    c->requeue_last = op;
}

/* Take op (QUEUED) out of the backlog. */
static void backlog_unlink(kvmux_client *c, kvmux__op *op) {
    kvmux__op *prev = op->q->prev, *next = op_next(op);
    if (c->requeue_last == op) c->requeue_last = prev; /* still a prefix */
    if (prev) op_set_next(prev, next);
    else c->backlog_head = next;
    if (next) next->q->prev = prev;
    else c->backlog_tail = prev;
    op_set_next(op, NULL);
    op->q->prev = NULL;
    c->backlog_n--;
    c->backlog_bytes -= op->q->flen;
}

/* Route a finished op (result and reply set; on no list, holds no slot). */
static void op_complete(kvmux_client *c, kvmux__op *op) {
    if (op->state == KVMUX__OP_ROUTED) kvmux__cluster_unroute(c, op);
    kvmux__theap_remove(&c->timers, &op->timer);
    op->state = KVMUX__OP_DONE;
    if (op->kind == KVMUX__OP_FUTURE) {
        atomic_store_explicit(&op->done, 1, memory_order_release);
        kvmux__waiter *w = op->waiter;
        if (w) kvmux__waiter_fire(w); /* lock order: client mu (held) -> waiter mu */
        return;
    }
    done_push(c, &op->d);
}

/* ---- admission ---- */

/* Take a slot and encode req into c->out as its request (a credit is
 * free, room is reserved). Returns the slot (WAITING, no owner yet), or
 * NULL if the transfer could not be planned (call_check prevents it; big
 * freed, slot released). */
static kvmux__slot *async_encode(kvmux_client *c, const kvmux_request *req, kvmux__bigmsg *big,
                                 int64_t deadline, int64_t now, uint64_t *seq) {
    uint32_t id = 0;
    kvmux__slot *s = kvmux__pending_take(&c->pending, &id);
    if (kvmux__call_encode(c, req, id, big, deadline, now, seq) != 0) {
        kvmux__pending_release(&c->pending, s);
        return NULL;
    }
    s->op = (uint8_t)req->op;
    s->want_value = 0;
    return s;
}

/* Make the writer send what was just encoded. */
static void async_kick(kvmux_client *c) {
    if (c->disp_batching && pthread_equal(pthread_self(), c->disp)) {
        /* Submitted by a callback of this client: one kick when the batch
         * of callbacks ends, so the whole round leaves in one send().
         * (Synchronous calls and future waits from a callback kick at
         * once, which flushes these too.) */
        c->kick_deferred = 1;
        return;
    }
    kvmux__writer_kick(c);
}

/* A callback request moves into its slot: this is all it costs in flight. */
static void slot_attach_cb(kvmux_client *c, kvmux__slot *s, kvmux_reply_cb cb, void *ud,
                           uint64_t handle, int64_t tmo, int64_t deadline) {
    s->owner = KVMUX__OWNER_CB;
    s->u.cb.fn = cb;
    s->u.cb.ud = ud;
    s->live.handle = handle;
    kvmux__pending_arm(&c->pending, s, tmo, deadline);
}

/* A future's request is in flight in slot s. */
static void slot_attach_future(kvmux_client *c, kvmux__slot *s, kvmux__op *op, int64_t tmo) {
    s->owner = KVMUX__OWNER_OP;
    s->u.aop = op;
    op->slot = s;
    op->state = KVMUX__OP_INFLIGHT;
    kvmux__pending_arm(&c->pending, s, tmo, op->timer.deadline);
}

/* Copy req's key and value into op's buffer and point op->q->req (q
 * allocated) at the copies. Returns 0 or KVMUX_ENOMEM. */
static int async_copy_req(kvmux__op *op, const kvmux_request *req) {
    size_t klen = req->op == KVMUX_PING ? 0 : req->key_len;
    size_t vlen = (req->op == KVMUX_SET || req->op == KVMUX_CAS || req->op == KVMUX_GROUP ||
                   req->op == KVMUX_CLUSTER)
                      ? req->value_len
                      : 0;
    size_t need = klen + vlen;
    if (need > op->bufcap) {
        uint8_t *p = realloc(op->buf, need);
        if (!p) return KVMUX_ENOMEM;
        op->buf = p;
        op->bufcap = need;
    }
    kvmux_request *qr = &op->q->req;
    *qr = *req;
    if (klen) memcpy(op->buf, req->key, klen);
    if (vlen) memcpy(op->buf + klen, req->value, vlen);
    qr->key = klen ? op->buf : NULL;
    qr->value = vlen ? op->buf + klen : NULL;
    if (!klen) qr->key_len = 0;
    if (!vlen) qr->value_len = 0;
    return 0;
}

/* Make big's copy (key then value) op's backlog copy and free the rest of
 * big: the value stays copied once. */
static void async_adopt_copy(kvmux__op *op, const kvmux_request *req, kvmux__bigmsg *big) {
    free(op->buf);
    op->buf = big->buf;
    op->bufcap = (size_t)big->key_len + big->value_len;
    big->buf = NULL;
    kvmux__big_free(big);
    op->q->req = *req;
    op->q->req.key = op->buf;
    op->q->req.value = op->buf + req->key_len;
}

/* A submitted future joins c's live futures (under c->mu), so a loss or
 * close can reach it; *fut hands it to the caller. */
static void link_future(kvmux_client *c, kvmux__op *op, kvmux_future **fut) {
    op->lprev = NULL;
    op->lnext = c->live_futures;
    if (op->lnext) op->lnext->lprev = op;
    c->live_futures = op;
    *fut = op;
}

/* A cluster handle's op for req (ROUTED, on no list, lock held): a copy
 * of the request, its deadline and, for a callback, its handle; a future
 * is c's. NULL out of memory. */
static kvmux__op *async_routed_op(kvmux_client *c, const kvmux_request *req,
                                  kvmux__op_kind kind, kvmux_reply_cb cb, void *ud,
                                  uint64_t handle, int64_t deadline, int64_t tmo) {
    kvmux__op *op = async_op_alloc(c);
    if (!op) return NULL;
    if (!(op->q = async_q_new(op)) || async_copy_req(op, req) != 0) {
        kvmux__op_recycle(c, op);
        return NULL;
    }
    op->kind = kind;
    op->q->tmo = tmo;
    if (kind == KVMUX__OP_CALLBACK) {
        op->handle = handle;
        op->d.cb = cb;
        op->d.user_data = ud;
    } else {
        op->c = c;
    }
    op->timer.deadline = deadline;
    op->state = KVMUX__OP_ROUTED;
    return op;
}

/* A cluster handle's submit (cluster.c routes it): the op keeps a copy
 * of the request for every hop. Its deadline is enforced by whoever holds
 * it: the sub-client a hop is on (the hop's deadline is the op's: same
 * clock read), else, parked, c's heap (cluster.c puts it there). Lock not
 * held on entry. */
static int async_submit_routed(kvmux_client *c, const kvmux_request *req, int64_t tmo,
                               kvmux__op_kind kind, kvmux_reply_cb cb, void *user_data,
                               kvmux_future **fut, int try_only, kvmux_handle *handle) {
    pthread_mutex_lock(&c->mu);
    int rc = c->fatal;
    if (rc != 0) goto out;
    size_t flen = 0;
    rc = kvmux__call_check(c, req, &flen);
    if (rc != 0) goto out;
    rc = KVMUX_ENOMEM;
    uint64_t h = 0;
    if (kind == KVMUX__OP_CALLBACK)
        h = ++c->next_handle << KVMUX__CL_HBITS; /* low bits 0: the handle's own */
    int64_t now = kvmux__now_ms(); /* the request's one clock read: hops reuse it */
    kvmux__op *op = async_routed_op(c, req, kind, cb, user_data, h, now + tmo, tmo);
    if (!op) goto out;
    rc = kvmux__cluster_route(c, op, try_only, now);
    if (rc != 0) {
        op->state = KVMUX__OP_FREE;
        kvmux__op_recycle(c, op);
        goto out;
    }
    if (handle) *handle = h;
    if (kind == KVMUX__OP_FUTURE) link_future(c, op, fut);
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* The one submit path; see the file comment. Exactly one of cb / fut is
 * used, according to kind. now: the monotonic ms the deadline counts
 * from, < 0 to read the clock here (a cluster hop passes the time its
 * route was decided at: one clock read per request, not three). borrow:
 * req's key and value stay valid and unchanged until this request
 * completes or is cancelled (a cluster hop: its op's copy), so an
 * endpoints-mode request keeps pointers to them instead of a copy of
 * its own. */
static int async_submit_at(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                           kvmux__op_kind kind, kvmux_reply_cb cb, void *user_data,
                           kvmux_future **fut, int try_only, kvmux_handle *handle,
                           int64_t now, int borrow, const kvmux__xroute *x) {
    if (!c || !req || timeout_ms < KVMUX_TIMEOUT_DEFAULT) return KVMUX_EINVAL;
    if (kind == KVMUX__OP_CALLBACK ? !cb : !fut) return KVMUX_EINVAL;
    int64_t tmo = timeout_ms;
    if (timeout_ms == KVMUX_TIMEOUT_DEFAULT) {
        /* As kvmux_wait: the server may hold a WAIT for wait_ms. */
        tmo = c->opts.request_timeout_ms;
        if (req->op == KVMUX_WAIT) tmo += req->wait_ms;
    }
    if (c->router) {
        /* A callback request whose group is connected goes straight to
         * its sub-client; the rest (futures, a group not connected yet)
         * is routed through an op of the handle's. */
        int rc, taken = 0;
        if (kind == KVMUX__OP_CALLBACK) {
            rc = kvmux__cluster_submit_direct(c, req, tmo, cb, user_data, try_only, handle,
                                              &taken);
            if (taken) return rc;
        }
        return async_submit_routed(c, req, tmo, kind, cb, user_data, fut, try_only, handle);
    }
    if (now < 0) now = kvmux__now_ms();

    /* A value sent fragmented is copied (once) before taking the lock;
     * if the request has to wait in the backlog, that copy is its backlog
     * copy (same layout: key then value). */
    kvmux__bigmsg *big = NULL;
    {
        size_t fl = 0;
        if (kvmux__call_check(c, req, &fl) == 0 && fl > c->peer_max_frame &&
            kvmux__big_prepare(c, req, NULL, &big) != 0)
            return KVMUX_ENOMEM;
    }

    pthread_mutex_lock(&c->mu);
    /* Automatic reconnect: between connections (or draining) a submit
     * goes to the backlog and is sent on the next connection. */
    int between = (c->fatal || c->draining) && kvmux__reconnecting(c);
    int rc = c->fatal;
    if (rc != 0 && !between) goto out;
    rc = KVMUX_ESHUTDOWN; /* GOAWAY received: nothing new on this connection */
    if (c->draining && !between) goto out;
    size_t flen = 0;
    rc = kvmux__call_check(c, req, &flen);
    if (rc != 0) goto out;
    rc = KVMUX_EINVAL; /* a direct request is resent from its copy */
    if (x && !kvmux__failover_on(c)) goto out;
    if (c->mode == KVMUX__MODE_THREADED && !c->disp_started) {
        rc = kvmux__disp_start(c);
        if (rc != 0) goto out;
    }
    int direct = !between && c->backlog_head == NULL && c->pending.nfree > 0 &&
                 !kvmux__queue_full(c, flen);
    /* The early pass above ran without the lock: if a reconnect changed
     * whether req travels fragmented, it waits in the backlog (keeping
     * big's copy) and the pump prepares it under the current limits. */
    if (direct && (big != NULL) != (flen > c->peer_max_frame)) direct = 0;
    if (!direct) {
        rc = KVMUX_EAGAIN;
        if (try_only) goto out;
        if (c->backlog_n >= c->opts.queue_limit) goto out;
        /* An empty backlog admits any single request, as the outbound
         * queue does, so no request is unsubmittable. */
        size_t lim = c->opts.queue_bytes_limit;
        if (c->backlog_n > 0 && (c->backlog_bytes >= lim || flen > lim - c->backlog_bytes))
            goto out;
    }
    /* Endpoints mode: the request keeps a copy in flight (failover.c), so
     * even one admitted at once takes the backlog path and is pumped
     * straight out of it. */
    int pump_now = direct && kvmux__failover_on(c);
    if (pump_now) direct = 0;
    /* Everything that can fail before anything changes. A callback
     * request admitted at once needs no allocation at all: it lives in
     * its slot. */
    rc = KVMUX_ENOMEM;
    if (!direct && kvmux__theap_reserve(&c->timers, c->timers.n + 1) != 0) goto out;
    if (direct && !big && kvmux__out_reserve(c, flen) != 0) goto out;
    kvmux__op *op = NULL;
    if (kind == KVMUX__OP_FUTURE || !direct) {
        op = async_op_alloc(c);
        if (!op) goto out;
        if (!direct && !(op->q = async_q_new(op))) {
            kvmux__op_recycle(c, op);
            goto out;
        }
        if (!direct && big) {
            async_adopt_copy(op, req, big);
            big = NULL;
        } else if (!direct && borrow && kvmux__failover_on(c)) {
            /* Only endpoints mode: it never lends its copy to a transfer
             * (kvmux__async_pump's steal), which would take op->buf. */
            op->q->req = *req;
        } else if (!direct && async_copy_req(op, req) != 0) {
            kvmux__op_recycle(c, op);
            goto out;
        }
        op->kind = kind;
        if (kind == KVMUX__OP_FUTURE) op->c = c; /* it outlives its submit */
    }
    /* The clock is read once per submit (the DEADLINE sent is tmo). */
    int64_t deadline = now + tmo;
    uint64_t h = kind == KVMUX__OP_CALLBACK ? ++c->next_handle : 0;
    if (direct) {
        /* Not endpoints mode (pump_now): no session, no seq. */
        kvmux__slot *s = async_encode(c, req, big, deadline, now, NULL);
        big = NULL; /* started, or freed */
        if (!s) {
            if (op) kvmux__op_recycle(c, op);
            rc = KVMUX_ETOOBIG;
            goto out;
        }
        if (op) {
            op->timer.deadline = deadline; /* for kvmux_future_wait */
            slot_attach_future(c, s, op, tmo);
        } else {
            slot_attach_cb(c, s, cb, user_data, h, tmo, deadline);
        }
        kvmux__timers_changed(c, deadline);
        async_kick(c);
    } else {
        if (kind == KVMUX__OP_CALLBACK) {
            op->handle = h;
            op->d.cb = cb;
            op->d.user_data = user_data;
            if (x) {
                op->xcb = x->cb;
                op->xud = x->ud;
                op->xg = x->g;
                op->d.user_data = op;
            }
        }
        op->q->tmo = tmo;
        op->timer.deadline = deadline;
        kvmux__theap_push(&c->timers, &op->timer); /* room reserved: cannot fail */
        kvmux__timers_changed(c, deadline);
        backlog_append(c, op, flen);
        big = NULL;
        if (pump_now) kvmux__async_pump(c);
    }
    rc = 0;
    if (handle) *handle = h;
    if (kind == KVMUX__OP_FUTURE) link_future(c, op, fut);
out:
    pthread_mutex_unlock(&c->mu);
    kvmux__big_free(big); /* prepared, not used */
    return rc;
}

static int async_submit(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                        kvmux__op_kind kind, kvmux_reply_cb cb, void *user_data,
                        kvmux_future **fut, int try_only, kvmux_handle *handle) {
    return async_submit_at(c, req, timeout_ms, kind, cb, user_data, fut, try_only, handle, -1,
                           0, NULL);
}

int kvmux_call_async(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                     kvmux_reply_cb cb, void *user_data) {
    return async_submit(c, req, timeout_ms, KVMUX__OP_CALLBACK, cb, user_data, NULL, 0, NULL);
}

int kvmux_call_async_handle(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                            kvmux_reply_cb cb, void *user_data, kvmux_handle *handle) {
    if (!handle) return KVMUX_EINVAL;
    return async_submit(c, req, timeout_ms, KVMUX__OP_CALLBACK, cb, user_data, NULL, 0,
                        handle);
}

int kvmux__async_submit_cb(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                           kvmux_reply_cb cb, void *ud, int try_only, kvmux_handle *h,
                           int64_t now, int borrow) {
    return async_submit_at(c, req, timeout_ms, KVMUX__OP_CALLBACK, cb, ud, NULL, try_only, h,
                           now, borrow, NULL);
}

int kvmux__async_submit_x(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                          kvmux_reply_cb cb, const kvmux__xroute *x, int try_only,
                          kvmux_handle *h, int64_t now) {
    return async_submit_at(c, req, timeout_ms, KVMUX__OP_CALLBACK, cb, NULL, NULL, try_only, h,
                           now, 0, x);
}

kvmux__op *kvmux__async_adopt(kvmux_client *c, const kvmux_request *req, kvmux_reply_cb cb,
                              void *ud, uint64_t handle, int64_t deadline, int64_t tmo) {
    return async_routed_op(c, req, KVMUX__OP_CALLBACK, cb, ud, handle, deadline, tmo);
}

int kvmux__done_queue(kvmux_client *c, kvmux_reply_cb cb, void *ud, int result, kvmux_reply *r) {
    kvmux__done *d = done_alloc(c);
    if (!d) return KVMUX_ENOMEM;
    d->cb = cb;
    d->user_data = ud;
    d->result = result;
    d->reply = *r;
    r->value = NULL; /* moved */
    done_push(c, d);
    return 0;
}

void kvmux__op_finish(kvmux_client *c, kvmux__op *op, int result, kvmux_reply *r) {
    op->d.result = result;
    if (r) {
        op->d.reply = *r;
        r->value = NULL; /* moved */
    } else {
        memset(&op->d.reply, 0, sizeof op->d.reply);
    }
    op_complete(c, op);
}

int kvmux__cb_gate_take(kvmux_client *c, kvmux_client *via) {
    /* Only while nothing else of c's is running or owed: callbacks stay
     * one at a time and in completion order. */
    if (c->closing || c->cb_direct || c->cb_running || c->done_head ||
        c->parked_head != KVMUX__SLOT_NIL)
        return 0;
    c->cb_direct = 1;
    c->cb_direct_thread = pthread_self();
    c->cb_direct_via = via;
    return 1;
}

void kvmux__cb_gate_give(kvmux_client *c) {
    c->cb_direct = 0;
    c->cb_direct_via = NULL;
    /* c's completion thread, if callbacks were queued meanwhile (it does
     * not run them while the gate is held). */
    if (kvmux__async_has_done(c)) kvmux__disp_kick(c);
}

int kvmux__op_finish_direct(kvmux_client *c, kvmux__op *op, int result, kvmux_reply *r,
                            kvmux_client *via) {
    if (op->kind != KVMUX__OP_CALLBACK || c->mode != KVMUX__MODE_THREADED ||
        !kvmux__cb_gate_take(c, via))
        return 0;
    if (op->state == KVMUX__OP_ROUTED) kvmux__cluster_unroute(c, op);
    kvmux__theap_remove(&c->timers, &op->timer);
    op->state = KVMUX__OP_DONE;
    pthread_mutex_unlock(&c->mu);
    /* No lock while user code runs: it may submit, wait or close. */
    op->d.cb(c, result, r, op->d.user_data);
    free(r->value);
    r->value = NULL;
    pthread_mutex_lock(&c->mu);
    memset(&op->d.reply, 0, sizeof op->d.reply);
    kvmux__op_recycle(c, op);
    pthread_cond_broadcast(&c->idle_cond);
    kvmux__cb_gate_give(c);
    return 1;
}

int kvmux__cb_direct_here(const kvmux_client *c) {
    return c->cb_direct && pthread_equal(c->cb_direct_thread, pthread_self());
}

kvmux_client *kvmux__cb_direct_via(const kvmux_client *c) {
    return kvmux__cb_direct_here(c) ? c->cb_direct_via : NULL;
}

int kvmux_try_call_async(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                         kvmux_reply_cb cb, void *user_data) {
    return async_submit(c, req, timeout_ms, KVMUX__OP_CALLBACK, cb, user_data, NULL, 1, NULL);
}

int kvmux_call_future(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                      kvmux_future **out) {
    return async_submit(c, req, timeout_ms, KVMUX__OP_FUTURE, NULL, NULL, out, 0, NULL);
}

int kvmux_try_call_future(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                          kvmux_future **out) {
    return async_submit(c, req, timeout_ms, KVMUX__OP_FUTURE, NULL, NULL, out, 1, NULL);
}

void kvmux__slot_finish(kvmux_client *c, kvmux__slot *s, int result, kvmux_reply *r,
                        kvmux_value *v) {
    kvmux_reply none;
    memset(&none, 0, sizeof none);
    if (!r) r = &none;
    int owner = s->owner;
    if (owner == KVMUX__OWNER_CB) {
        if (s->flags & KVMUX__SF_CANCEL) {
            /* Cancelled (while out of memory): that is its result, even
             * if the real answer crossed the cancel. */
            free(r->value);
            r = &none;
            result = KVMUX_ECANCELED;
        }
        free(v); /* a want_value v never comes with an async request */
        kvmux__done *d = done_alloc(c);
        if (!d) {
            slot_park(c, s, result, r); /* keeps the credit until it runs */
            return;
        }
        d->cb = s->u.cb.fn;
        d->user_data = s->u.cb.ud;
        d->result = result;
        d->reply = *r;
        kvmux__pending_release(&c->pending, s); /* the credit returns now */
        done_push(c, d);
        kvmux__slot_freed(c);
        return;
    }
    kvmux__callwait *w = owner == KVMUX__OWNER_CALL ? s->u.w : NULL;
    kvmux__op *op = owner == KVMUX__OWNER_OP ? s->u.aop : NULL;
    kvmux__pending_release(&c->pending, s); /* the credit returns now */
    if (w) {
        /* A blocking caller: the result goes to its stack record; it is
         * woken after the lock is released (kvmux__call_wake_all) and
         * reads it without the lock. Done with the client from here on,
         * unless it must resend on the next connection. */
        w->result = result;
        w->reply = *r;
        w->value = v;
        w->finished = 1;
        w->wnext = c->wake_head;
        c->wake_head = w;
        if (result != KVMUX__ERETRY && result != KVMUX__EREDIRECT) {
            c->active--;
            if (c->closing && c->active == 0) pthread_cond_broadcast(&c->idle_cond);
        }
    } else if (op) {
        op->d.result = result;
        op->d.reply = *r; /* a want_value v never comes with an op */
        op->slot = NULL;
        free(v);
        op_complete(c, op);
    } else {
        free(r->value); /* no owner (cannot happen for a WAITING slot) */
        free(v);
    }
    kvmux__slot_freed(c);
}

void kvmux__slot_freed(kvmux_client *c) {
    kvmux__async_pump(c);
    if (c->slot_waiters > 0 && c->pending.nfree > 0) pthread_cond_signal(&c->slot_cond);
}

void kvmux__async_pump(kvmux_client *c) {
    while (c->backlog_head && c->fatal == 0 && !c->draining && c->pending.nfree > 0) {
        kvmux__op *op = c->backlog_head;
        size_t flen = 0;
        /* Checked again: in event-loop mode the request may have been
         * queued before the server's limits were known. */
        kvmux__qreq *q = op->q;
        int rc = kvmux__call_check(c, &q->req, &flen);
        if (rc == 0 && kvmux__queue_full(c, flen)) break;
        kvmux__bigmsg *big = NULL;
        /* A fragmented value takes over op's copy: copied once only --
         * except in endpoints mode, where the op keeps its copy in flight
         * to be resent (failover.c). */
        int keep = kvmux__failover_on(c);
        if (rc == 0) rc = kvmux__call_prepare(c, &q->req, flen, keep ? NULL : op, &big);
        backlog_unlink(c, op);
        if (!keep) op->q = NULL; /* in flight (or failed): the request is encoded */
        kvmux__slot *s = NULL;
        op->out_round = big ? UINT64_MAX : c->out_rounds; /* failover.c */
        if (rc == 0) {
            /* An op kept for resending (endpoints mode) keeps its seq. */
            s = async_encode(c, &q->req, big, op->timer.deadline, -1, keep ? &op->seq : NULL);
            if (!s) rc = KVMUX_ETOOBIG;
        }
        if (rc != 0) {
            if (!keep) free(q);
            op->d.result = rc;
            op_complete(c, op);
            continue;
        }
        /* Its deadline moves from the heap to the slot's timer list. */
        kvmux__theap_remove(&c->timers, &op->timer);
        if (op->kind == KVMUX__OP_CALLBACK && !keep) {
            /* The request now lives in its slot; the op goes back. */
            slot_attach_cb(c, s, op->d.cb, op->d.user_data, op->handle, q->tmo,
                           op->timer.deadline);
            kvmux__op_recycle(c, op);
        } else {
            /* A future, or (endpoints mode) any op: the slot points to it
             * and completion goes through op_complete. */
            slot_attach_future(c, s, op, q->tmo);
        }
        if (!keep) free(q);
        async_kick(c);
    }
}

void kvmux__async_fail(kvmux_client *c, int code) {
    while (c->backlog_head) {
        kvmux__op *op = c->backlog_head;
        backlog_unlink(c, op);
        op->d.result = code;
        op_complete(c, op);
    }
}

int64_t kvmux__async_next_deadline(const kvmux_client *c) {
    int64_t at = INT64_MAX;
    kvmux__timer *t = kvmux__theap_min(&c->timers);
    if (t) at = t->deadline;
    kvmux__slot *s = kvmux__pending_next_timer(&c->pending);
    if (s && s->live.deadline < at) at = s->live.deadline;
    if (c->router) {
        int64_t r = kvmux__cluster_next(c);
        if (r < at) at = r;
    }
    return at;
}

/* Stop waiting for the request in s, whose owner gives up (its deadline,
 * or a cancel: then always with a CANCEL): the id and credit stay
 * reserved until the late reply. */
static void slot_give_up(kvmux_client *c, kvmux__slot *s, int cancel) {
    kvmux__slot_disown(&c->pending, s);
    /* An upload still in progress stops, with a CANCEL. */
    if (cancel || kvmux__big_sending(c, s->id)) kvmux__slot_abandon(c, s);
    else kvmux__pending_tombstone(&c->pending, s);
}

/* Out of memory for s's completion record: try again in a while (s is
 * OWNER_CB, WAITING, armed). */
static void slot_retry_later(kvmux_client *c, kvmux__slot *s, int64_t at) {
    int64_t tmo = s->tclass != KVMUX__TCLASS_NONE ? c->pending.tc[s->tclass].tmo : 0;
    kvmux__pending_disarm(&c->pending, s);
    kvmux__pending_arm(&c->pending, s, tmo, at);
    kvmux__timers_changed(c, at);
}

/* The deadline of s (armed, WAITING) has passed, or it was cancelled out
 * of memory (KVMUX__SF_CANCEL): complete it. */
static void slot_expire(kvmux_client *c, kvmux__slot *s, int64_t now) {
    int cancel = (s->flags & KVMUX__SF_CANCEL) != 0;
    int result = cancel ? KVMUX_ECANCELED : KVMUX_ETIMEDOUT;
    if (s->owner == KVMUX__OWNER_CB) {
        kvmux__done *d = done_alloc(c);
        if (!d) {
            slot_retry_later(c, s, now + ASYNC_OOM_RETRY_MS);
            return;
        }
        d->cb = s->u.cb.fn;
        d->user_data = s->u.cb.ud;
        d->result = result;
        slot_give_up(c, s, cancel);
        done_push(c, d);
    } else if (s->owner == KVMUX__OWNER_OP) {
        kvmux__op *op = s->u.aop;
        op->slot = NULL;
        slot_give_up(c, s, cancel);
        op->d.result = result;
        op_complete(c, op);
    } else {
        kvmux__pending_disarm(&c->pending, s); /* cannot happen */
    }
}

void kvmux__async_expire(kvmux_client *c, int64_t now) {
    if (c->router) kvmux__cluster_tick(c, now);
    for (;;) {
        kvmux__timer *t = kvmux__theap_min(&c->timers);
        kvmux__slot *s = kvmux__pending_next_timer(&c->pending);
        int64_t tq = t ? t->deadline : INT64_MAX;
        int64_t ts = s ? s->live.deadline : INT64_MAX;
        if (tq <= ts) {
            if (!t || tq > now) break;
            kvmux__op *op = async_op_of(t);
            if (op->state == KVMUX__OP_QUEUED) backlog_unlink(c, op);
            op->d.result = KVMUX_ETIMEDOUT;
            op_complete(c, op); /* removes the timer */
            continue;
        }
        if (ts > now) break;
        slot_expire(c, s, now); /* disarms s (or re-arms it later) */
    }
    /* A write given up on no longer holds a redirect's drain. */
    if (c->redirecting) kvmux__failover_drain_check(c);
}

/* Run one parked slot's callback (lock held on entry and exit; dropped
 * while the callback runs). */
static void async_run_parked(kvmux_client *c) {
    uint32_t idx = c->parked_head;
    kvmux__slot *s = &c->pending.slots[idx];
    c->parked_head = s->tnext;
    if (c->parked_head == KVMUX__SLOT_NIL) c->parked_tail = KVMUX__SLOT_NIL;
    kvmux_reply_cb cb = s->u.cb.fn;
    void *ud = s->u.cb.ud;
    int result = s->result;
    kvmux_reply r;
    memset(&r, 0, sizeof r);
    r.version = s->done.version;
    if (s->flags & KVMUX__SF_DVAL) {
        r.value = s->done.value;
        r.value_len = s->dlen;
        s->flags &= (uint8_t)~KVMUX__SF_DVAL; /* moved to r */
    } else {
        r.number = s->done.number;
    }
    kvmux__pending_release(&c->pending, s);
    kvmux__slot_freed(c);
    pthread_mutex_unlock(&c->mu);
    cb(c, result, &r, ud);
    free(r.value);
    pthread_mutex_lock(&c->mu);
}

void kvmux__async_run_done(kvmux_client *c) {
    pthread_mutex_lock(&c->mu);
    /* A cluster handle's callback running on a group's completion thread
     * (kvmux__op_finish_direct) finishes first: one at a time. The
     * completion thread does not wait here for it but goes back to its
     * loop -- deadlines and retry times stay serviced (that callback may
     * be waiting for one); the callback's end kicks it. */
    if (c->cb_direct) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->cb_running = 1;
    for (;;) {
        if (!c->done_head) {
            if (c->parked_head == KVMUX__SLOT_NIL) break;
            async_run_parked(c);
            continue;
        }
        kvmux__done *batch = c->done_head;
        c->done_head = c->done_tail = NULL;
        /* Threaded mode: writer kicks from these callbacks wait for the end
         * of the batch (kvmux__writer_kick). The loop driver batches by
         * itself: it writes on the next writable event. */
        c->disp_batching = c->mode == KVMUX__MODE_THREADED;
        pthread_mutex_unlock(&c->mu);
        /* A cluster handle's sub-client: the handle's callback gate is
         * taken once for the batch, not twice per answer (a nested batch,
         * from a future waited on in one of these callbacks, finds it
         * held by this thread and does not take it). */
        int outer = c->xgate;
        c->xgate = c->xhandle ? kvmux__cluster_gate_take(c) : 0;
        /* No lock while user code runs: it may submit, wait or close. */
        for (kvmux__done *d = batch; d; d = d->next)
            d->cb(c, d->result, &d->reply, d->user_data);
        if (c->xgate) kvmux__cluster_gate_give(c);
        c->xgate = outer;
        pthread_mutex_lock(&c->mu);
        c->disp_batching = 0;
        if (c->kick_deferred) {
            c->kick_deferred = 0;
            kvmux__writer_kick(c);
        }
        /* One lock round recycles the whole batch. */
        while (batch) {
            kvmux__done *next = batch->next;
            done_recycle(c, batch);
            batch = next;
        }
    }
    c->cb_running = 0;
    pthread_mutex_unlock(&c->mu);
}

void kvmux__async_release_all(kvmux_client *c) {
    for (kvmux__op *f = c->live_futures; f; f = f->lnext) f->detached = 1;
    c->live_futures = NULL;
    /* Defensive: callbacks never run (impossible once the connection has
     * failed and the completion thread has drained) must not leak. */
    while (c->done_head) {
        kvmux__done *d = c->done_head;
        c->done_head = d->next;
        done_destroy(d);
    }
    c->done_tail = NULL;
    while (c->free_done) {
        kvmux__done *d = c->free_done;
        c->free_done = d->next;
        free(d);
    }
    c->free_done_n = 0;
    while (c->free_ops) {
        kvmux__op *op = c->free_ops;
        c->free_ops = op_next(op);
        async_op_destroy(op);
    }
    c->free_n = 0;
}

/* ---- used by future.c ---- */

/* Cancel a pending future's request locally (lock held): see
 * kvmux_future_free. */
void kvmux__future_cancel(kvmux_client *c, kvmux__op *f) {
    if (f->state == KVMUX__OP_QUEUED) {
        backlog_unlink(c, f);
    } else if (f->state == KVMUX__OP_INFLIGHT) {
        kvmux__slot *s = f->slot;
        f->slot = NULL;
        kvmux__slot_abandon(c, s);
    } else if (f->state == KVMUX__OP_ROUTED) {
        kvmux__cluster_unroute(c, f);
    }
    kvmux__theap_remove(&c->timers, &f->timer);
    f->state = KVMUX__OP_DONE;
}

/* ---- cancellation ---- */

/* Queue a CANCEL for id (lock held). Returns 0 or KVMUX_ENOMEM. */
static int cancel_send(kvmux_client *c, uint32_t id) {
    if (kvmux__out_reserve(c, KVMUX_CANCEL_LEN) != 0) return KVMUX_ENOMEM;
    c->out.len += kvmux_encode_cancel(c->out.data + c->out.len, c->version, id);
    c->out.frames++;
    kvmux__writer_kick(c);
    return 0;
}

void kvmux__slot_abandon(kvmux_client *c, kvmux__slot *s) {
    /* Off its timer list; the rest of a fragmented reply is only counted. */
    kvmux__slot_disown(&c->pending, s);
    if (c->version >= KVMUX_PROTO_V2 && c->fatal == 0 &&
        kvmux__out_reserve(c, KVMUX_CANCEL_LEN) == 0 &&
        kvmux_rate_allow(&c->cancel_rate, (uint64_t)kvmux__now_ms())) {
        /* Room for the CANCEL is reserved first: a transfer stopped
         * half-way must be followed by its CANCEL, or the server would
         * wait for the rest of it. */
        int started = kvmux__big_abort(c, s->id);
        if (started == 0) {
            /* Not one byte of it left: the server will never answer. */
            kvmux__pending_release(&c->pending, s);
            kvmux__slot_freed(c);
            return;
        }
        (void)cancel_send(c, s->id); /* room reserved: cannot fail */
    }
    kvmux__pending_tombstone(&c->pending, s);
}

/* Event-loop mode: a cancelled callback runs from the loop's next timer
 * event, not from inside kvmux_cancel. */
static void cancel_schedule(kvmux_client *c) {
    if (c->mode == KVMUX__MODE_LOOP && c->in_handler == 0 && c->attached) {
        c->hooks.schedule_timer(c->hooks.data, 0);
        c->timer_at = kvmux__now_ms();
    }
}

/* Cancel op (QUEUED, or an INFLIGHT future; lock held): it leaves the
 * backlog or its slot (abandoned: CANCEL on v2) and completes with
 * KVMUX_ECANCELED. */
static void op_cancel(kvmux_client *c, kvmux__op *op) {
    if (op->state == KVMUX__OP_QUEUED) {
        backlog_unlink(c, op);
    } else if (op->state == KVMUX__OP_INFLIGHT) {
        kvmux__slot *s = op->slot;
        op->slot = NULL;
        kvmux__slot_abandon(c, s);
    }
    op->d.result = KVMUX_ECANCELED;
    memset(&op->d.reply, 0, sizeof op->d.reply);
    op_complete(c, op);
    if (op->kind == KVMUX__OP_CALLBACK) cancel_schedule(c);
}

/* Cancel the callback request in flight in s (WAITING, OWNER_CB; lock
 * held). Out of memory for its completion record, the cancel is carried
 * out by the deadline pass, due at once (KVMUX__SF_CANCEL): the callback
 * still gets KVMUX_ECANCELED, whatever reply arrives meanwhile. */
static void slot_cancel(kvmux_client *c, kvmux__slot *s) {
    kvmux__done *d = done_alloc(c);
    if (!d) {
        s->flags |= KVMUX__SF_CANCEL;
        slot_retry_later(c, s, kvmux__now_ms());
        return;
    }
    d->cb = s->u.cb.fn;
    d->user_data = s->u.cb.ud;
    d->result = KVMUX_ECANCELED;
    kvmux__slot_abandon(c, s);
    done_push(c, d);
    cancel_schedule(c);
}

int kvmux_future_cancel(kvmux_future *f) {
    if (!f) return KVMUX_EINVAL;
    if (f->detached) return 0; /* complete: its client is gone */
    kvmux_client *c = f->c;
    pthread_mutex_lock(&c->mu);
    if (f->state == KVMUX__OP_QUEUED || f->state == KVMUX__OP_INFLIGHT ||
        f->state == KVMUX__OP_ROUTED)
        op_cancel(c, f); /* ROUTED: op_complete unroutes it */
    /* A write given up on no longer holds a redirect's drain. */
    if (c->redirecting) kvmux__failover_drain_check(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int kvmux_cancel(kvmux_client *c, kvmux_handle h) {
    if (!c || h == 0) return KVMUX_EINVAL;
    pthread_mutex_lock(&c->mu);
    int rc = KVMUX_ENOTFOUND;
    if (c->router) {
        /* A request redirected or parked is the handle's op; one sent
         * directly is its sub-client's (the handle names the group). */
        kvmux__op *o = kvmux__cluster_find_handle(c, h);
        if (o) {
            op_cancel(c, o);
            rc = 0;
        } else {
            rc = kvmux__cluster_cancel_direct(c, h);
        }
    }
    for (kvmux__op *o = c->backlog_head; rc != 0 && o; o = op_next(o)) {
        if (o->kind == KVMUX__OP_CALLBACK && o->handle == h) {
            op_cancel(c, o);
            rc = 0;
            break;
        }
    }
    for (uint32_t i = 0; rc != 0 && i < c->pending.nslots; i++) {
        kvmux__slot *s = &c->pending.slots[i];
        if (s->state == KVMUX__SLOT_WAITING && s->owner == KVMUX__OWNER_CB &&
            s->live.handle == h && !(s->flags & KVMUX__SF_CANCEL)) {
            slot_cancel(c, s);
            rc = 0;
        } else if (s->state == KVMUX__SLOT_WAITING && s->owner == KVMUX__OWNER_OP &&
                   s->u.aop->kind == KVMUX__OP_CALLBACK && s->u.aop->handle == h) {
            op_cancel(c, s->u.aop); /* endpoints mode: the op is in flight */
            rc = 0;
        }
    }
    if (c->redirecting) kvmux__failover_drain_check(c); /* as kvmux_future_cancel */
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* Take f off c's live list (lock held). */
void kvmux__future_unlink(kvmux_client *c, kvmux__op *f) {
    if (f->lprev) f->lprev->lnext = f->lnext;
    else c->live_futures = f->lnext;
    if (f->lnext) f->lnext->lprev = f->lprev;
    f->lnext = f->lprev = NULL;
}

/* Free a detached future (its client is gone). */
void kvmux__future_destroy(kvmux__op *f) {
    async_op_destroy(f);
}

/* ---- endpoints mode: resending (failover.c) ---- */

void kvmux__failover_resend(kvmux_client *c, kvmux__slot *s, int redirected) {
    if (s->owner == KVMUX__OWNER_CALL) {
        /* The blocking caller resends from its own stack (call.c). */
        kvmux__slot_finish(c, s, redirected ? KVMUX__EREDIRECT : KVMUX__ERETRY, NULL, NULL);
        return;
    }
    kvmux__op *op = kvmux__slot_op(s);
    if (!op || !op->q) {
        /* No copy to resend (cannot happen in endpoints mode). */
        kvmux__slot_finish(c, s, redirected ? KVMUX_ENOTLEADER : KVMUX_EUNKNOWN, NULL, NULL);
        return;
    }
    if (redirected && ++op->redirects > KVMUX__MAX_REDIRECTS) {
        kvmux__slot_finish(c, s, KVMUX_ENOTLEADER, NULL, NULL);
        return;
    }
    /* Back on the heap with its deadline: room first, so nothing changes
     * if there is none. */
    if (kvmux__theap_reserve(&c->timers, c->timers.n + 1) != 0) {
        kvmux__slot_finish(c, s, KVMUX_ENOMEM, NULL, NULL);
        return;
    }
    op->slot = NULL;
    kvmux__pending_release(&c->pending, s); /* no reply will come for it */
    kvmux__theap_push(&c->timers, &op->timer);
    backlog_requeue(c, op);
    kvmux__timers_changed(c, op->timer.deadline);
    /* The credit is free again; the connection is failing or draining,
     * so nothing is pumped onto it. */
    kvmux__slot_freed(c);
}
