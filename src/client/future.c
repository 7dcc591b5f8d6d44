/* kvmux client futures: kvmux_future_poll, _wait, _wait_any, _result and
 * _free.
 *
 * Design. A future is an async op (client_internal.h) handed to the
 * caller. Its completion sets an atomic done flag with release order after
 * the result is written, so polling, and the first pass of every wait, is
 * a lock-free load: under load (many futures in flight, replies streaming
 * in) wait_any usually finds a complete future without taking any lock.
 *
 * Only when none is complete does a wait block, and it does so on a
 * waiter of its own (a mutex, a condition variable and a flag on its
 * stack), which it registers in each future, under each future's client
 * mutex (one lock round per run of futures of the same client). The
 * completer, holding the client mutex, sets the flag under the waiter's
 * mutex and signals it. That is what lets one thread wait on futures of
 * several clients at once without a global lock: the lock order is always
 * client mutex -> waiter mutex, and the waiter never holds its own mutex
 * while taking a client's. While registered, the waiter counts as a caller
 * inside the client (active), so kvmux_close, which completes every future
 * with KVMUX_ECLOSED and so wakes the waiter, also waits for it to
 * unregister before freeing the client.
 *
 * Lifetime: kvmux_future_free on a pending future cancels it locally
 * (async.c: a queued request leaves the backlog, a sent one leaves a
 * tombstone that swallows the late reply) and recycles it at once. Futures
 * still held when their client closes are marked detached by the close;
 * they are complete, and kvmux_future_free then frees them on their own.
 *
 * What it is not: completion itself (async.c, reader.c), the submit path
 * (async.c).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "clock.h"

/* How long past the latest request deadline a KVMUX_TIMEOUT_DEFAULT wait
 * keeps waiting for the completion thread to deliver the timeout. */
#define FUTURE_GRACE_MS 1000

static int future_done(const kvmux__op *f) {
    return atomic_load_explicit((atomic_int *)&f->done, memory_order_acquire);
}

int kvmux_future_poll(const kvmux_future *f) {
    return f ? future_done(f) : 0;
}

/* The lowest index of a complete future in fs[0..n), or n. */
static size_t future_first_done(kvmux_future *const *fs, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (fs[i] && future_done(fs[i])) return i;
    return n;
}

/* Sleep on w until it fires or until (monotonic ms). */
static void future_sleep(kvmux__waiter *w, int64_t until) {
    struct timespec ts;
    ts.tv_sec = (time_t)(until / 1000);
    ts.tv_nsec = (long)(until % 1000) * 1000000L;
    pthread_mutex_lock(&w->mu);
    while (!w->fired) {
        if (pthread_cond_timedwait(&w->cond, &w->mu, &ts) == ETIMEDOUT) break;
    }
    w->fired = 0;
    pthread_mutex_unlock(&w->mu);
}

/* The wait of a cluster handle's callback that runs on via's completion
 * thread (via: one of its groups' sub-clients, kvmux__op_finish_direct).
 * That thread's own work -- among it the hop answers that complete these
 * futures -- would wait for the callback, so the wait does it: via's
 * completions and deadlines run here until a future of fs is complete or
 * until deadline. w (registered with the futures) is also what via's
 * kicks fire meanwhile, so nothing is slept through. */
static void future_drive_wait(kvmux_future *const *fs, size_t n, kvmux_client *via,
                              kvmux__waiter *w, int64_t deadline) {
    pthread_mutex_lock(&via->mu);
    kvmux__waiter *outer = via->drive_waiter; /* none: nothing nests here */
    int64_t outer_at = via->drive_wake_at;
    via->drive_waiter = w;
    pthread_mutex_unlock(&via->mu);
    for (;;) {
        int64_t until = kvmux__disp_drive(via, deadline);
        if (future_first_done(fs, n) < n || kvmux__now_ms() >= deadline) break;
        future_sleep(w, until);
    }
    pthread_mutex_lock(&via->mu);
    via->drive_waiter = outer;
    via->drive_wake_at = outer_at;
    pthread_mutex_unlock(&via->mu);
}

/* Unregister w from fs[0..end): every future whose waiter is w. */
static void future_unregister(kvmux_future *const *fs, size_t end, kvmux__waiter *w) {
    kvmux_client *locked = NULL;
    for (size_t i = 0; i < end; i++) {
        kvmux__op *f = fs[i];
        if (!f || f->detached) continue;
        if (f->c != locked) {
            if (locked) pthread_mutex_unlock(&locked->mu);
            locked = f->c;
            pthread_mutex_lock(&locked->mu);
        }
        if (f->waiter != w) continue;
        f->waiter = NULL;
        locked->active--;
        if (locked->closing && locked->active == 0) pthread_cond_broadcast(&locked->idle_cond);
    }
    /* After this unlock, a closing client may be freed: not touched again. */
    if (locked) pthread_mutex_unlock(&locked->mu);
}

int kvmux_future_wait_any(kvmux_future *const *fs, size_t n, int timeout_ms, size_t *index) {
    if (!fs || !index || timeout_ms < KVMUX_TIMEOUT_DEFAULT) return KVMUX_EINVAL;
    size_t i = future_first_done(fs, n);
    if (i < n) {
        *index = i;
        return 0;
    }
    size_t live = 0;
    for (i = 0; i < n; i++) {
        if (!fs[i]) continue;
        live++;
        /* Not done, so not detached: its client is alive. A blocking wait
         * on a loop client would stop the loop that completes it. */
        if (timeout_ms != 0 && fs[i]->c->mode == KVMUX__MODE_LOOP) return KVMUX_EINVAL;
    }
    if (live == 0) return KVMUX_EINVAL;
    if (timeout_ms == 0) return KVMUX_ETIMEDOUT;

    kvmux__waiter w;
    w.fired = 0;
    if (pthread_mutex_init(&w.mu, NULL) != 0) return KVMUX_ENOMEM;
    if (kvmux__cond_init(&w.cond) != 0) {
        pthread_mutex_destroy(&w.mu);
        return KVMUX_ENOMEM;
    }

    /* Register, one lock round per run of same-client futures. A future
     * completed meanwhile ends registration: no need to sleep. */
    int rc = 0, found = 0;
    int64_t latest = 0;
    kvmux_client *locked = NULL, *via = NULL;
    size_t end = 0;
    for (; end < n; end++) {
        kvmux__op *f = fs[end];
        if (!f) continue;
        if (f->c != locked) {
            if (locked) pthread_mutex_unlock(&locked->mu);
            locked = f->c;
            pthread_mutex_lock(&locked->mu);
            if (!via) via = kvmux__cb_direct_via(locked);
        }
        if (future_done(f)) {
            found = 1;
            break;
        }
        if (locked->kick_deferred) {
            /* Waiting from inside a callback on a request that callback
             * round submitted: send it now, not at the end of the round. */
            locked->kick_deferred = 0;
            kvmux__writer_kick(locked);
        }
        if (f->waiter == &w) continue; /* listed twice */
        if (f->waiter) {
            rc = KVMUX_EINVAL; /* another thread waits on it */
            break;
        }
        f->waiter = &w;
        locked->active++;
        if (f->timer.deadline > latest) latest = f->timer.deadline;
    }
    if (locked) pthread_mutex_unlock(&locked->mu);

    if (!found && rc == 0) {
        int64_t deadline = timeout_ms == KVMUX_TIMEOUT_DEFAULT
                               ? latest + FUTURE_GRACE_MS
                               : kvmux__now_ms() + timeout_ms;
        if (via) future_drive_wait(fs, n, via, &w, deadline);
        else future_sleep(&w, deadline);
    }
    future_unregister(fs, end, &w);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mu);
    if (rc != 0) return rc;
    i = future_first_done(fs, n);
    if (i < n) {
        *index = i;
        return 0;
    }
    return KVMUX_ETIMEDOUT;
}

int kvmux_future_wait(kvmux_future *f, int timeout_ms) {
    if (!f) return KVMUX_EINVAL;
    size_t idx;
    return kvmux_future_wait_any(&f, 1, timeout_ms, &idx);
}

int kvmux_future_result(kvmux_future *f, kvmux_reply *reply) {
    if (reply) memset(reply, 0, sizeof *reply);
    if (!f) return KVMUX_EINVAL;
    if (!future_done(f)) return KVMUX_EAGAIN;
    int rc = f->d.result;
    if (reply && (rc == KVMUX_OK || rc == KVMUX_EVERSION)) {
        *reply = f->d.reply;
        /* The value moves to the caller; later calls see none. */
        f->d.reply.value = NULL;
        f->d.reply.value_len = 0;
    }
    return rc;
}

void kvmux_future_free(kvmux_future *f) {
    if (!f) return;
    if (f->detached) {
        kvmux__future_destroy(f);
        return;
    }
    kvmux_client *c = f->c;
    pthread_mutex_lock(&c->mu);
    kvmux__future_unlink(c, f);
    if (f->state != KVMUX__OP_DONE) kvmux__future_cancel(c, f);
    kvmux__op_recycle(c, f);
    /* A write given up on no longer holds a redirect's drain. */
    if (c->redirecting) kvmux__failover_drain_check(c);
    pthread_mutex_unlock(&c->mu);
}
