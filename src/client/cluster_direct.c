/* kvmux client, cluster mode: direct requests (the submit, the answer,
 * the callback gate per batch, cancel). The router itself -- routing by
 * the map, hops, redirects, backoff, connect, close -- is cluster.c;
 * what both read is router.h.
 *
 * A callback request whose group is connected is not the handle's op at
 * all: it is submitted straight to the group's sub-client, carrying the
 * application's callback (op->xcb, xud, xg), and its answer comes to
 * cl_direct_cb. That saves, per request, the handle's op (allocation,
 * copy, list, hop record) in front of the sub-client's: the sub-client
 * keeps the one copy (endpoints mode keeps one anyway, to resend). Its
 * deadline, cancel (the handle names the group and the sub-client's
 * handle: KVMUX__CL_HBITS) and failure at close are the sub-client's.
 * Only an answer the router must act on -- WRONG_SHARD, TRY_AGAIN -- is
 * taken back: the request becomes the handle's op (a copy, its handle and
 * deadline kept) and is routed as any other from there on. Callbacks
 * stay one at a time per handle: one runs on the sub-client's thread only
 * when none of c's runs or is owed, else it is queued to c's completion
 * thread (kvmux__cb_gate_take). */
#include <stdint.h>
#include <time.h>

#include "client_internal.h"
#include "router.h"

/* Run cb for a direct request (lock held on entry, released on return). */
static void cl_direct_finish(kvmux_client *c, kvmux_reply_cb cb, void *ud, int result,
                             kvmux_reply *reply, kvmux_client *via) {
    if (c->mode == KVMUX__MODE_LOOP) {
        /* The loop thread, inside one of c's handlers (a close from cb is
         * deferred to the outermost one) -- or c's close, whose callbacks
         * run after it has closed the sub-clients (queued; out of memory
         * for the record, here). */
        if (!c->closing || kvmux__done_queue(c, cb, ud, result, reply) != 0) {
            pthread_mutex_unlock(&c->mu);
            cb(c, result, reply, ud);
            return;
        }
        pthread_mutex_unlock(&c->mu);
        return;
    }
    for (;;) {
        if (kvmux__cb_gate_take(c, via)) {
            pthread_mutex_unlock(&c->mu);
            /* No lock while user code runs: it may submit, wait or close
             * (a close is handed to c's completion thread). */
            cb(c, result, reply, ud);
            pthread_mutex_lock(&c->mu);
            kvmux__cb_gate_give(c);
            pthread_mutex_unlock(&c->mu);
            return;
        }
        if (kvmux__done_queue(c, cb, ud, result, reply) == 0) break; /* c's thread runs it */
        if (c->closing) {
            /* Out of memory at close: c's completion thread waits for
             * this sub-client's close, so nothing of c's runs now. */
            pthread_mutex_unlock(&c->mu);
            cb(c, result, reply, ud);
            return;
        }
        /* Out of memory for the record: wait for c's callbacks to end,
         * then run it here (a millisecond at a time: nothing signals). */
        pthread_mutex_unlock(&c->mu);
        struct timespec ms = {0, 1000000L};
        nanosleep(&ms, NULL);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Take a direct request back to route it again (lock held): WRONG_SHARD
 * or TRY_AGAIN from group g. Returns 1 if the handle's op now carries it,
 * 0 if it could not be made (out of memory: the answer stands). */
static int cl_direct_reroute(kvmux_client *c, kvmux__op *so, kvmux__cgroup *g, int result,
                             kvmux_reply *reply) {
    if (!so->q) return 0;
    uint64_t h = (so->handle << KVMUX__CL_HBITS) | (uint64_t)(g->idx + 1u);
    kvmux__op *op =
        kvmux__async_adopt(c, &so->q->req, so->xcb, so->xud, h, so->timer.deadline, so->q->tmo);
    if (!op) return 0;
    if (kvmux__cl_take_back(c, op, g, result, reply) != 0) {
        op->state = KVMUX__OP_FREE;
        kvmux__op_recycle(c, op);
        return 0;
    }
    return 1;
}

/* A direct request's one answer (the sub-client's completion thread, or
 * the loop thread). ud is the sub-client's op, valid until we return. */
static void cl_direct_cb(kvmux_client *sub, int result, kvmux_reply *reply, void *ud) {
    kvmux__op *so = ud;
    kvmux__cgroup *g = so->xg;
    kvmux_client *c = g->c;
    if (sub->xgate && result != KVMUX_EWRONGSHARD && result != KVMUX_ETRYAGAIN) {
        /* This thread holds c's callback gate for the batch this answer
         * is in (kvmux__cluster_gate_take). */
        so->xcb(c, result, reply, so->xud);
        return;
    }
    if (c->mode == KVMUX__MODE_LOOP && !c->closing && result != KVMUX_EWRONGSHARD &&
        result != KVMUX_ETRYAGAIN) {
        /* The loop thread, inside one of c's handlers: the only thread
         * that closes c (closing is written here) or runs its callbacks,
         * so no lock (a close from cb is deferred to the outermost
         * handler). */
        so->xcb(c, result, reply, so->xud);
        return;
    }
    pthread_mutex_lock(&c->mu);
    if ((result == KVMUX_EWRONGSHARD || result == KVMUX_ETRYAGAIN) && !c->router->closing &&
        cl_direct_reroute(c, so, g, result, reply)) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    cl_direct_finish(c, so->xcb, so->xud, result, reply, sub);
}

int kvmux__cluster_submit_direct(kvmux_client *c, const kvmux_request *req, int64_t tmo,
                                 kvmux_reply_cb cb, void *ud, int try_only,
                                 kvmux_handle *handle, int *taken) {
    /* Only what the slot hash needs is checked here; the sub-client
     * checks the rest as it would any request. A request this does not
     * take (keyless, a key it refuses) gets the full check, and its
     * precise error, on the handle's path. */
    if (!kvmux__cl_keyed(req->op) || !req->key || req->key_len == 0 ||
        req->key_len > atomic_load_explicit(&c->max_key, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&c->mu);
    int rc = c->fatal;
    kvmux__cgroup *g = rc == 0 ? kvmux__cl_target(c, req, 0) : NULL;
    if (rc == 0 && (!g || g->state != CG_READY || g->idx + 1u > KVMUX__CL_HMASK)) {
        pthread_mutex_unlock(&c->mu); /* the handle's op routes it */
        return 0;
    }
    *taken = 1;
    if (rc == 0) {
        kvmux__xroute x = {cb, ud, g};
        kvmux_handle sh = 0;
        int t = tmo > INT32_MAX ? INT32_MAX : (int)tmo;
        /* Lock order: the handle's mutex, then the sub-client's. */
        rc = kvmux__async_submit_x(g->sub, req, t, cl_direct_cb, &x, try_only, &sh, -1);
        if (rc == 0 && handle) *handle = (sh << KVMUX__CL_HBITS) | (uint64_t)(g->idx + 1u);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int kvmux__cluster_gate_take(kvmux_client *sub) {
    kvmux_client *c = sub->xhandle;
    /* cl_direct_finish's gate, held for the batch: the handle's callbacks
     * from other threads queue meanwhile; a close from one of the batch's
     * callbacks is handed to c's completion thread, which closes (joins)
     * this sub-client after the batch. */
    pthread_mutex_lock(&c->mu);
    int ok = kvmux__cb_gate_take(c, sub);
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void kvmux__cluster_gate_give(kvmux_client *sub) {
    kvmux_client *c = sub->xhandle;
    pthread_mutex_lock(&c->mu);
    kvmux__cb_gate_give(c);
    pthread_mutex_unlock(&c->mu);
}

int kvmux__cluster_cancel_direct(kvmux_client *c, uint64_t h) {
    kvmux__router *r = c->router;
    uint32_t gi = (uint32_t)(h & KVMUX__CL_HMASK);
    if (gi == 0 || gi > r->ngroups) return KVMUX_ENOTFOUND;
    kvmux__cgroup *g = r->groups[gi - 1u];
    if (g->state != CG_READY || !g->sub) return KVMUX_ENOTFOUND;
    /* Its callback, if cancelled, runs later on the sub-client's thread
     * (or the loop's next event), never inside this call. */
    return kvmux_cancel(g->sub, h >> KVMUX__CL_HBITS);
}

