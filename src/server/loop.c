/* kvmuxd event loop: one thread, one epoll set, one timer heap, and an
 * inbox other threads can post to.
 *
 * Why epoll directly (like Redis ae_epoll.c) and not libuv/libevent: no
 * dependency, and the edge cases that matter here (fairness per read,
 * EPOLLOUT only while a queue is blocked, EMFILE on accept, the wake-up
 * protocol of the inbox, deferred frees) are in a few hundred lines we
 * control and test. Level-triggered: one read per readable connection per
 * iteration, so a busy client cannot starve the others.
 *
 * One iteration: epoll_wait (sleeping until the earliest timer) -> handle
 * events (accept, read, write) -> drain the inbox (new connections, fired
 * WAITs) -> run due timers -> release write acknowledgments the log's
 * fsync now covers (durable.c) -> flush every connection with new output (one
 * sendmsg per connection per iteration, however many responses) -> tear
 * down connections closed during the iteration (deferred, so nothing
 * above ever touches freed memory).
 *
 * Shutdown (kvmux_server_stop sets a flag and wakes every loop): loop 0
 * closes the listener; every loop stops reading v1 connections (refusing
 * requests it had read but not run) and sends GOAWAY to v2 ones (which keep
 * reading, answer new requests SHUTTING_DOWN and finish what they
 * accepted), and closes connections as soon as they owe nothing; what is
 * in flight gets --shutdown-timeout, then is answered SHUTTING_DOWN;
 * after a final --close-linger everything left is closed and the thread
 * returns. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "monotime.h"
#include "server_internal.h"

#define MAX_EVENTS 256
#define MAX_TIMERS_PER_ITER 4096

#define LOOP_OF(t, field) ((kvmux_loop *)((char *)(t) - offsetof(kvmux_loop, field)))

static void loop_on_phase_timer(kvmux_timer *t, uint64_t now);

int kvmux__loop_init(kvmux_loop *l, kvmux_server *srv, uint32_t id) {
    memset(l, 0, sizeof *l);
    l->srv = srv;
    l->id = id;
    l->epfd = -1;
    l->wake.kind = KVMUX_IO_WAKE;
    l->wake.fd = -1;
    kvmux__timer_heap_init(&l->timers);
    kvmux_timer_init(&l->phase_timer, loop_on_phase_timer);
    kvmux_timer_init(&l->accept_timer, kvmux__accept_resume);
    if (pthread_mutex_init(&l->conns_mu, NULL) != 0) return -1;
    if (pthread_mutex_init(&l->inbox_mu, NULL) != 0) {
        pthread_mutex_destroy(&l->conns_mu);
        return -1;
    }
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->scratch = malloc(KVMUX_SCRATCH_LEN);
    if (l->epfd < 0 || l->wake.fd < 0 || !l->scratch) goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->wake};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake.fd, &ev) != 0) goto fail;
    return 0;
fail:
    if (l->epfd >= 0) close(l->epfd);
    if (l->wake.fd >= 0) close(l->wake.fd);
    free(l->scratch);
    pthread_mutex_destroy(&l->inbox_mu);
    pthread_mutex_destroy(&l->conns_mu);
    l->epfd = l->wake.fd = -1;
    l->scratch = NULL;
    return -1;
}

void kvmux__loop_deinit(kvmux_loop *l) {
    if (!l->srv) return; /* never initialised */
    /* Normally empty; left over only if the thread stopped early. */
    while (l->conns) kvmux__conn_destroy(l->conns);
    /* What reached the inbox after the thread finished: connections
     * handed over too late, and orphaned WAITs fired while their
     * connection closed (see waits.c). All threads are joined now. */
    kvmux_conn *c = l->inbox_conns;
    while (c) {
        kvmux_conn *next = c->link;
        kvmux__conn_reject(c->io.fd, KVMUX_ERR_SHUTTING_DOWN, "server shutting down");
        atomic_fetch_sub(&l->srv->nconns, 1);
        kvmux__outbuf_deinit(&c->out);
        free(c->rbuf);
        free(c);
        c = next;
    }
    kvmux_wait *w = l->inbox_waits;
    while (w) {
        kvmux_wait *next = w->inbox_next;
        kvmux__wait_free_orphan(w);
        w = next;
    }
    l->inbox_conns = NULL;
    l->inbox_waits = NULL;
    kvmux__durable_deinit(l);
    kvmux__repl_loop_deinit(l);
    kvmux__loop_rt_deinit(l);
    kvmux__timer_heap_deinit(&l->timers);
    if (l->epfd >= 0) close(l->epfd);
    if (l->wake.fd >= 0) close(l->wake.fd);
    free(l->scratch);
    pthread_mutex_destroy(&l->inbox_mu);
    pthread_mutex_destroy(&l->conns_mu);
    l->srv = NULL;
}

void kvmux__loop_wake(kvmux_loop *l) {
    uint64_t one = 1;
    ssize_t w = write(l->wake.fd, &one, sizeof one);
    (void)w; /* EAGAIN means the counter is already non-zero: awake anyway */
}

void kvmux__loop_push_conn(kvmux_loop *l, kvmux_conn *c) {
    pthread_mutex_lock(&l->inbox_mu);
    c->link = l->inbox_conns;
    l->inbox_conns = c;
    int signal = !l->inbox_signalled;
    l->inbox_signalled = 1;
    pthread_mutex_unlock(&l->inbox_mu);
    if (signal) kvmux__loop_wake(l);
}

void kvmux__loop_push_wait(kvmux_loop *l, kvmux_wait *w) {
    pthread_mutex_lock(&l->inbox_mu);
    w->inbox_next = l->inbox_waits;
    l->inbox_waits = w;
    int signal = !l->inbox_signalled;
    l->inbox_signalled = 1;
    pthread_mutex_unlock(&l->inbox_mu);
    /* w may be freed by its owner from here on: do not touch it. */
    if (signal) kvmux__loop_wake(l);
}

void kvmux__loop_mark_dirty(kvmux_conn *c) {
    if (c->dirty) return;
    c->dirty = 1;
    c->dirty_next = c->loop->dirty;
    c->loop->dirty = c;
}

static void drain_inbox(kvmux_loop *l) {
    /* Reset the eventfd BEFORE taking the lists: a push that lands after
     * the swap sees inbox_signalled == 0 and writes the eventfd again, so
     * no wake-up is lost. */
    uint64_t v;
    ssize_t r = read(l->wake.fd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&l->inbox_mu);
    kvmux_conn *conns = l->inbox_conns;
    kvmux_wait *waits = l->inbox_waits;
    l->inbox_conns = NULL;
    l->inbox_waits = NULL;
    l->inbox_signalled = 0;
    pthread_mutex_unlock(&l->inbox_mu);
    while (conns) {
        kvmux_conn *next = conns->link;
        conns->link = NULL;
        kvmux__conn_attach(l, conns);
        conns = next;
    }
    while (waits) {
        kvmux_wait *next = waits->inbox_next;
        kvmux__wait_deliver(l, waits);
        waits = next;
    }
}

static void flush_dirty(kvmux_loop *l) {
    kvmux_conn *c;
    while ((c = l->dirty) != NULL) {
        l->dirty = c->dirty_next;
        c->dirty = 0;
        c->dirty_next = NULL;
        kvmux__conn_flush(c);
    }
}

static void destroy_dead(kvmux_loop *l) {
    kvmux_conn *c;
    while ((c = l->dead) != NULL) {
        l->dead = c->link;
        kvmux__conn_destroy(c);
    }
}

static void close_listener(kvmux_loop *l) {
    kvmux_server *srv = l->srv;
    kvmux__timer_cancel(&l->timers, &l->accept_timer);
    if (srv->listen.fd < 0) return;
    if (l->listening) epoll_ctl(l->epfd, EPOLL_CTL_DEL, srv->listen.fd, NULL);
    l->listening = 0;
    close(srv->listen.fd);
    srv->listen.fd = -1;
}

static void begin_shutdown(kvmux_loop *l) {
    kvmux_server *srv = l->srv;
    l->phase = KVMUX_LOOP_DRAINING;
    if (l->id == 0) {
        close_listener(l);
        kvmux__metrics_loop_stop(l);
        kvmux_log_event(KVMUX_LOG_INFO, "server.drain", "grace_ms=%u",
                        srv->cfg.shutdown_timeout_ms);
    }
    for (kvmux_conn *c = l->conns; c; c = c->next) kvmux__conn_begin_drain(c);
    if (kvmux__timer_arm(&l->timers, &l->phase_timer, l->now + srv->cfg.shutdown_timeout_ms) != 0) {
        /* No memory for one timer: skip the grace period. */
        for (kvmux_conn *c = l->conns; c; c = c->next) kvmux__conn_close(c, "shutdown");
    }
}

static void loop_on_phase_timer(kvmux_timer *t, uint64_t now) {
    kvmux_loop *l = LOOP_OF(t, phase_timer);
    if (l->phase == KVMUX_LOOP_DRAINING) {
        l->phase = KVMUX_LOOP_FLUSHING;
        for (kvmux_conn *c = l->conns; c; c = c->next)
            kvmux__conn_drain_deadline(c);
        /* The final bound: a little over one linger (as configured now:
         * a connection made before a reload that lengthened or shortened
         * it may be cut at this bound instead of its own), then close all. */
        if (kvmux__timer_arm(&l->timers, &l->phase_timer,
                             now + l->rt.lim.close_linger_ms + 10) == 0)
            return;
    }
    for (kvmux_conn *c = l->conns; c; c = c->next) kvmux__conn_close(c, "shutdown deadline");
}

/* How often parked STALE reads look at the applied version (the Raft
 * thread does not wake loops when it applies an entry). */
#define STALE_POLL_MS 2u

static int next_timeout(const kvmux_loop *l) {
    uint64_t next = kvmux__timer_next(&l->timers);
    if (l->stale) {
        uint64_t poll = kvmux_clock_ms() + STALE_POLL_MS;
        if (next > poll) next = poll;
    }
    uint64_t watch = kvmux__mapwatch_next_ms(l); /* a CLUSTER watch's end */
    if (next > watch) next = watch;
    uint64_t mig = kvmux__migt_next_ms(l); /* the janitor, parked import-begins */
    if (next > mig) next = mig;
    if (next == UINT64_MAX) return -1;
    uint64_t now = kvmux_clock_ms();
    if (next <= now) return 0;
    uint64_t d = next - now;
    return d > INT_MAX ? INT_MAX : (int)d;
}

int kvmux__loop_run_once(kvmux_loop *l, int timeout_ms) {
    kvmux_server *srv = l->srv;
    struct epoll_event evs[MAX_EVENTS];
    kvmux__loop_refresh_rt(l); /* a reload's new token / certificate */
    int n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout_ms);
    if (n < 0) {
        if (errno != EINTR) {
            KVMUX_LOG_E("loop %u: epoll_wait: %s; stopping the server", l->id,
                        strerror(errno));
            kvmux_server_stop(srv);
        }
        n = 0;
    }
    l->now = kvmux_clock_ms();
    int woke = 0;
    for (int i = 0; i < n; i++) {
        kvmux_io *io = evs[i].data.ptr;
        switch (io->kind) {
        case KVMUX_IO_WAKE:
            woke = 1;
            break;
        case KVMUX_IO_LISTEN:
            if (l->listening) kvmux__accept(l);
            break;
        case KVMUX_IO_METRICS_LISTEN:
        case KVMUX_IO_METRICS_CONN:
            kvmux__metrics_on_event(l, io, evs[i].events);
            break;
        default:
            kvmux__conn_on_event((kvmux_conn *)io, evs[i].events);
            break;
        }
    }
    if (woke) drain_inbox(l);
    kvmux__timer_run(&l->timers, l->now, MAX_TIMERS_PER_ITER);
    kvmux__durable_release(l); /* write acks the log's fsync now covers */
    kvmux__repl_iterate(l);    /* replicated: answer, then propose (group commit) */
    flush_dirty(l);
    destroy_dead(l);
    return n;
}

/* Busy polling (--busy-poll USEC). Sleeping in epoll_wait costs a
 * wake-up when the next request arrives; on a virtual machine whose idle
 * vCPUs halt (no guest halt polling), that wake-up is a VM exit and entry
 * and dominates a pipelined round trip (docs/BENCHMARKS.md, "Busy
 * polling": ~3x on this project's 2-vCPU machines). After an iteration
 * that handled I/O the loop keeps polling with a zero timeout for up to
 * USEC, so a client that answers quickly finds it awake; after USEC
 * without I/O it sleeps as usual, so an idle server costs nothing. The
 * spin does not sched_yield(): that hands the CPU to whatever else is
 * runnable (a batch job, for a whole time slice) exactly when the reply
 * is due; the scheduler's tick keeps it fair. Off by default: it trades
 * CPU time (up to one core per busy loop thread) for latency, which is
 * the operator's call. */
static int busy_poll_timeout(int timeout_ms, uint64_t spin_until_ns) {
    if (timeout_ms == 0 || spin_until_ns == 0) return timeout_ms;
    return kvmux_clock_ns() < spin_until_ns ? 0 : timeout_ms;
}

void *kvmux__loop_main(void *arg) {
    kvmux_loop *l = arg;
    kvmux_server *srv = l->srv;
    l->now = kvmux_clock_ms();
    if (l->id == 0 && srv->listen.fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->listen};
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, srv->listen.fd, &ev) == 0) l->listening = 1;
        else KVMUX_LOG_E("cannot watch the listening socket: %s", strerror(errno));
    }
    if (l->id == 0) kvmux__metrics_loop_start(l);
    kvmux__expire_start(l);
    uint64_t spin_until_ns = 0; /* 0: not spinning */
    for (;;) {
        /* --busy-poll applies at once after a reload: one relaxed load. */
        const uint64_t busy_ns = (uint64_t)atomic_load_explicit(
            &srv->rt_busy_poll_us, memory_order_relaxed) * 1000u;
        if (busy_ns == 0) spin_until_ns = 0;
        if (l->id == 0 && l->phase == KVMUX_LOOP_RUNNING) kvmux__server_maybe_reload(srv);
        if (l->phase == KVMUX_LOOP_RUNNING &&
            atomic_load_explicit(&srv->stop_requested, memory_order_acquire))
            begin_shutdown(l);
        /* Loop 0 closed the listener when its shutdown began. */
        if (l->phase != KVMUX_LOOP_RUNNING && l->nconns == 0) break;

        int timeout_ms = busy_poll_timeout(next_timeout(l), spin_until_ns);
        int nevents = kvmux__loop_run_once(l, timeout_ms);
        if (busy_ns == 0) continue;
        if (nevents > 0) spin_until_ns = kvmux_clock_ns() + busy_ns;
    }
    return NULL;
}
