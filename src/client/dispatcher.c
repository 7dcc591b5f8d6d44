/* kvmux client completion thread (threaded mode): runs every async
 * callback of one client and services its request deadlines.
 *
 * Why a thread of its own rather than the socket reader (the choice the
 * async API documents): (1) all callbacks of a client run on one thread,
 * one at a time and in completion order, like an event loop, so
 * applications need no locking between their callbacks; (2) a slow or
 * blocking callback delays other callbacks but never the reader: replies
 * keep draining, synchronous callers and futures on the same connection
 * keep their latency, and the server never sees a slow reader; (3)
 * deadlines are serviced here, independently of I/O, so a reader blocked
 * in recv() or a writer blocked in send() on a stalled server cannot
 * delay a timeout; (4) a callback may even call the blocking API, since
 * the reader it waits for is another thread. The cost is one handoff per
 * batch, not per reply: the reader appends to the DONE list under the lock
 * it already holds and signals only on this thread's idle -> busy edge
 * (kvmux__disp_kick), and the thread takes and recycles whole batches with
 * one lock round each (kvmux__async_run_done). Futures do not need this
 * thread to complete (the reader marks them done directly), only for
 * their deadlines.
 *
 * The thread starts with the client's first async submit (a client used
 * only synchronously never pays for it), with all signals blocked, and
 * sleeps on disp_cond until the earliest async deadline
 * (kvmux__async_next_deadline), and at most request_timeout_ms (a new deadline earlier than the one it sleeps
 * for wakes it: kvmux__timers_changed; the cap means requests with the
 * default timeout never need that wakeup). It exits when
 * kvmux_close has begun and every callback owed has run. If kvmux_close is
 * called from one of the client's own callbacks, this thread finishes the
 * close itself once the callbacks are drained (it cannot join itself):
 * it waits for callers to leave, joins the reader and writer, frees the
 * client and detaches.
 *
 * What it is not: no I/O, no parsing; completion routing and the callback
 * runner are async.c's.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>

#include "client_internal.h"
#include "clock.h"

/* Sleep on disp_cond until deadline (monotonic ms) or a wakeup (lock
 * held). */
static void disp_sleep(kvmux_client *c, int64_t deadline) {
    c->disp_idle = 1;
    c->disp_wake_at = deadline;
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline / 1000);
    ts.tv_nsec = (long)(deadline % 1000) * 1000000L;
    pthread_cond_timedwait(&c->disp_cond, &c->mu, &ts);
    c->disp_idle = 0;
    c->disp_wake_at = INT64_MAX;
}

/* Finish a kvmux_close that was called from a callback (lock held; every
 * callback has run). Frees c. */
static void disp_finish_close(kvmux_client *c) {
    while (c->active > 0) pthread_cond_wait(&c->idle_cond, &c->mu);
    pthread_mutex_unlock(&c->mu);
    if (c->router) {
        /* A cluster handle has no reader or writer of its own. */
        pthread_detach(pthread_self());
        kvmux__cluster_free(c);
        return;
    }
    if (!c->opts.reconnect) pthread_join(c->writer, NULL); /* else the reader's */
    pthread_join(c->reader, NULL);
    pthread_detach(pthread_self()); /* nobody joins us */
    kvmux__client_free(c);
}

static void *disp_main(void *arg) {
    kvmux_client *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        kvmux__async_expire(c, kvmux__now_ms());
        int owed = kvmux__async_has_done(c);
        if (owed && !c->cb_direct) {
            pthread_mutex_unlock(&c->mu);
            kvmux__async_run_done(c);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        if (c->close_handoff) {
            /* kvmux_close from a cluster handle's callback on a group's
             * completion thread: finished here, as if from ours (it
             * returns with close_deferred set). */
            c->close_handoff = 0;
            pthread_mutex_unlock(&c->mu);
            kvmux__cluster_close(c);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        if (c->close_deferred && !owed) {
            disp_finish_close(c);
            return NULL;
        }
        /* Callbacks owed wait for a cluster handle's callback running on
         * a group's thread (kvmux__op_finish_direct kicks us when it
         * ends); deadlines are still serviced meanwhile. */
        /* A cluster handle's sub-clients, closing, still queue their
         * direct requests' callbacks here. */
        if (c->closing && !owed && kvmux__cluster_may_stop(c)) break; /* kvmux_close joins us */
        /* Never sleep past now + the default request timeout, even with
         * no deadline pending: a request then submitted with the default
         * timeout always expires after our wakeup, so the common submit
         * never has to wake us (kvmux__timers_changed). */
        int64_t until = kvmux__now_ms() + c->opts.request_timeout_ms;
        int64_t next = kvmux__async_next_deadline(c);
        if (next < until) until = next;
        disp_sleep(c, until);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int kvmux__disp_start(kvmux_client *c) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&c->disp, NULL, disp_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return KVMUX_ENOMEM;
    c->disp_started = 1;
    return 0;
}

void kvmux__disp_kick(kvmux_client *c) {
    if (c->drive_waiter) kvmux__waiter_fire(c->drive_waiter);
    if (c->disp_idle) {
        c->disp_idle = 0;
        pthread_cond_signal(&c->disp_cond);
    }
}

int64_t kvmux__disp_drive(kvmux_client *c, int64_t cap) {
    pthread_mutex_lock(&c->mu);
    if (c->kick_deferred) {
        /* Requests submitted from the interrupted batch (the awaited
         * one among them) go now, not at its end. */
        c->kick_deferred = 0;
        kvmux__writer_kick(c);
    }
    kvmux__async_expire(c, kvmux__now_ms());
    int owed = kvmux__async_has_done(c);
    pthread_mutex_unlock(&c->mu);
    if (owed) kvmux__async_run_done(c);
    pthread_mutex_lock(&c->mu);
    int64_t next = kvmux__async_next_deadline(c);
    if (next > cap) next = cap;
    c->drive_wake_at = next;
    pthread_mutex_unlock(&c->mu);
    return next;
}

void kvmux__timers_changed(kvmux_client *c, int64_t deadline) {
    if (c->mode == KVMUX__MODE_LOOP) {
        kvmux__loop_timer_update(c);
        return;
    }
    /* Only an idle thread sleeping past the new deadline needs waking; a
     * busy one recomputes its sleep before it sleeps. */
    if (c->drive_waiter && deadline < c->drive_wake_at) kvmux__waiter_fire(c->drive_waiter);
    if (c->disp_idle && deadline < c->disp_wake_at) {
        c->disp_idle = 0;
        pthread_cond_signal(&c->disp_cond);
    }
}

int kvmux__disp_close(kvmux_client *c) {
    if (!c->disp_started) return 0;
    if (pthread_equal(pthread_self(), c->disp)) {
        c->close_deferred = 1;
        return 1;
    }
    kvmux__disp_kick(c);
    return 0;
}

void kvmux__disp_join(kvmux_client *c) {
    if (c->disp_started) pthread_join(c->disp, NULL);
}
