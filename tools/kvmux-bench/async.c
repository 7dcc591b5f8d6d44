/* kvmux-bench async mode: one driver per connection keeping --depth
 * requests in flight through the client library's async API.
 *
 * What it is: the thread body of one connection in --mode async, with two
 * drivers sharing one request engine:
 * - loop (default): an event-loop client (kvmux_async_connect) on a tiny
 *   epoll loop of our own. Everything -- submits, completions, the socket,
 *   the timer -- runs on this one thread; the library starts no thread.
 * - callback: a threaded client (kvmux_connect, by the runner) and
 *   kvmux_call_async; completions run on the library's completion thread,
 *   which submits the next request from inside the callback. This thread
 *   only fills the pipeline and waits for it to drain.
 *
 * Design:
 * - depth slots, each a chain: a slot's completion records its latency
 *   (submit to callback: from the clock read at callback entry of the
 *   chain's previous request, or before the first submit, to the one at
 *   callback entry) and submits the slot's next request, so exactly depth
 *   requests are in flight until the chain decides to stop (STOP, -n
 *   exhausted, preload exhausted, or the connection failed). inflight
 *   counts live chains; the driver waits for it to reach 0.
 * - Phases are the runner's: PRELOAD (chains SET this connection's share
 *   of the keyspace, then stop) -> WARMUP/MEASURE (chains run the
 *   workload; a request is measured if it was submitted in MEASURE) ->
 *   STOP (chains stop as their requests complete).
 * - Single writer: the generator, histogram and counters are touched by
 *   one thread at a time -- the loop thread, or in callback mode whoever
 *   holds alk (the filling thread at the start, else the completion
 *   thread; uncontended after the fill).
 * - Every wait is bounded: epoll_wait and condvar waits for at most
 *   POLL_MS, and every request carries --timeout, so a drain ends within
 *   one timeout of STOP.
 *
 * What it is not: not an open-loop generator (a slot submits when its
 * previous request completes), and not a test of the futures API.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "runner_internal.h"

typedef struct aslot {
    worker *w;
    int64_t t0;          /* submit time */
    uint8_t kind;        /* bench_opkind */
    uint8_t measured;    /* submitted in MEASURE */
    uint8_t preload;     /* a preload SET */
} aslot;

/* Loop driver state, on the driver thread's stack. */
typedef struct loopst {
    int ep;
    int fd;
    uint32_t events;     /* EPOLLIN/EPOLLOUT the library wants */
    uint32_t armed;      /* what epoll currently watches */
    int64_t timer_ns;    /* monotonic deadline of the library's timer; -1 off */
    int status;          /* 1 handshake done, <0 failed, 0 connecting */
    int64_t spin_until_ns; /* --busy-poll: poll, not sleep, until then */
} loopst;

int bench__async_init(worker *w)
{
    const bench_config *cfg = w->r->cfg;
    w->slots = calloc(cfg->depth, sizeof *w->slots);
    if (!w->slots)
        return -1;
    for (uint32_t i = 0; i < cfg->depth; i++)
        w->slots[i].w = w;
    w->preload_next = w->id;
    w->use_alk = cfg->driver == BENCH_DRIVER_CALLBACK;
    pthread_mutex_init(&w->alk, NULL);
    atomic_init(&w->inflight, 0);
    return 0;
}

void bench__async_deinit(worker *w)
{
    if (!w->slots)
        return;
    free(w->slots);
    w->slots = NULL;
    pthread_mutex_destroy(&w->alk);
}

static void reply_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud);

/* Account one finished request of slot s (result as kvmux_call returns it;
 * t1 its completion time). */
static void record(worker *w, aslot *s, int result, int64_t t1)
{
    if (s->preload) {
        if (result != 0 && !w->preload_err)
            w->preload_err = result;
        else if (result == 0)
            ctr_inc(&w->preloaded);
    } else if (s->measured) {
        bench_hist_record(&w->hist, t1 - s->t0);
        ctr_inc(&w->ops);
        ctr_inc(&w->op_count[s->kind]);
        if (result == 0)
            ctr_inc(&w->ok);
        else if (result == KVMUX_ENOTFOUND && s->kind == BENCH_OP_GET)
            ctr_inc(&w->misses);
        else {
            ctr_inc(&w->errors);
            ctr_inc(&w->err_count[bench_err_slot(result)]);
        }
        w->last_done_ns = t1;
    } else {
        ctr_inc(&w->warm_ops);
    }
    if (kvmux_is_fatal(result))
        atomic_store(&w->conn->fatal, result);
}

/* Submit slot s's next request. t_start: the request's start time, or
 * -1 to read the clock now. Returns 1 if one is in flight, 0 if the chain
 * ends here (nothing left to do, or the submit failed -- then counted like
 * a completed request with that error). */
static int issue(worker *w, aslot *s, int64_t t_start)
{
    runner *r = w->r;
    const bench_config *cfg = r->cfg;
    int ph = atomic_load_explicit(&r->phase, memory_order_acquire);
    if (ph >= PHASE_STOP || atomic_load_explicit(&w->conn->fatal, memory_order_relaxed))
        return 0;

    char key[BENCH_KEY_LEN];
    kvmux_request req;
    memset(&req, 0, sizeof req);
    req.key = key;
    req.key_len = sizeof key;
    if (ph == PHASE_PRELOAD) {
        if (!cfg->preload || w->preload_err || w->preload_next >= cfg->keyspace)
            return 0;
        bench_format_key(key, (uint32_t)w->preload_next);
        w->preload_next += r->nworkers;
        req.op = KVMUX_SET;
        if (cfg->weight[BENCH_OP_INCR] > 0) {
            req.value = "0";
            req.value_len = 1;
        } else {
            req.value = w->gen.value_buf;
            req.value_len = bench_gen_value_len(&w->gen);
        }
        s->preload = 1;
        s->measured = 0;
        s->kind = BENCH_OP_SET;
    } else {
        const int measured = ph == PHASE_MEASURE;
        if (measured && cfg->requests &&
            atomic_fetch_add_explicit(&r->claimed, 1, memory_order_relaxed) >=
                cfg->requests)
            return 0;
        bench_opkind k = bench_gen_op(&w->gen);
        bench_format_key(key, bench_gen_key_index(&w->gen));
        switch (k) {
        case BENCH_OP_GET:
            req.op = KVMUX_GET;
            break;
        case BENCH_OP_SET:
            req.op = KVMUX_SET;
            req.value = w->gen.value_buf;
            req.value_len = bench_gen_value_len(&w->gen);
            break;
        case BENCH_OP_INCR:
            req.op = KVMUX_INCR;
            req.delta = 1;
            break;
        case BENCH_OP_PING:
        case BENCH_OP_COUNT:
            req.op = KVMUX_PING;
            req.key = NULL;
            req.key_len = 0;
            break;
        }
        s->preload = 0;
        s->measured = (uint8_t)measured;
        s->kind = (uint8_t)k;
    }
    s->t0 = t_start >= 0 ? t_start : now_ns();
    int rc = kvmux_call_async(w->conn->cli, &req, cfg->timeout_ms, reply_cb, s);
    if (rc == 0)
        return 1;
    /* Refused at submit: no callback will come. Count it (a backlog-full
     * KVMUX_EAGAIN means --depth exceeds what the client can park) and end
     * this chain rather than spin on the same refusal. */
    record(w, s, rc, now_ns());
    return 0;
}

/* A chain ended: one fewer request in flight. The driver thread waits on
 * r->cv (callback mode) or checks inflight after each pump (loop mode). */
static void chain_end(worker *w)
{
    if (atomic_fetch_sub(&w->inflight, 1) == 1 && w->use_alk) {
        pthread_mutex_lock(&w->r->lk);
        pthread_cond_broadcast(&w->r->cv);
        pthread_mutex_unlock(&w->r->lk);
    }
}

static void reply_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud)
{
    (void)c;
    (void)reply; /* the library frees reply->value after we return: a GET's
                    value was copied out of the socket buffer all the same */
    int64_t t1 = now_ns();
    aslot *s = ud;
    worker *w = s->w;
    if (w->use_alk)
        pthread_mutex_lock(&w->alk);
    record(w, s, result, t1);
    /* The next request of this chain starts at t1: the completion clock
     * read doubles as the next submit's (one clock read per request, not
     * two; the latency then also counts the ~100 ns of bookkeeping and
     * generation between them, so it errs high, never low). */
    int more = issue(w, s, t1);
    if (w->use_alk)
        pthread_mutex_unlock(&w->alk);
    if (!more)
        chain_end(w);
}

/* Start every slot's chain. */
static void fill(worker *w)
{
    const uint32_t depth = w->r->cfg->depth;
    if (w->use_alk)
        pthread_mutex_lock(&w->alk);
    for (uint32_t i = 0; i < depth; i++) {
        /* Count the chain before submitting: its callback may end it on
         * another thread before issue() returns. */
        atomic_fetch_add(&w->inflight, 1);
        if (!issue(w, &w->slots[i], -1)) {
            atomic_fetch_sub(&w->inflight, 1);
            break; /* the same reason would stop the next slot too */
        }
    }
    if (w->use_alk)
        pthread_mutex_unlock(&w->alk);
}

/* ---- callback driver ---- */

/* Wait (bounded steps) until every chain has ended. Chains end on their
 * own: each request has a deadline, and STOP / -n / fatal stop them. */
static void cb_drain(worker *w)
{
    runner *r = w->r;
    pthread_mutex_lock(&r->lk);
    while (atomic_load(&w->inflight) > 0)
        bench__wait_until(r, now_ns() + (int64_t)POLL_MS * 1000000LL);
    pthread_mutex_unlock(&r->lk);
}

static void cb_main(worker *w)
{
    fill(w); /* PRELOAD: SETs if --preload, else nothing */
    cb_drain(w);
    bench__worker_preload_done(w);
    fill(w);
    cb_drain(w);
}

/* ---- loop driver ---- */

/* The hooks only note what the library wants; pump() tells epoll just
 * before it sleeps, so the add/del write pair of a round that flushed
 * without sleeping costs no syscall (as Redis' ae applies interest changes
 * lazily and writes replies before sleeping). */
static void ep_sync(loopst *L)
{
    if (L->armed == L->events)
        return;
    struct epoll_event ev = {.events = L->events, .data = {.u32 = 1}};
    /* Only fails on a closed fd or exhausted kernel memory; the connection
     * then fails on its own (and the pump's bounded wait still returns). */
    if (epoll_ctl(L->ep, EPOLL_CTL_MOD, L->fd, &ev) == 0)
        L->armed = L->events;
    else if (errno == ENOENT && epoll_ctl(L->ep, EPOLL_CTL_ADD, L->fd, &ev) == 0)
        /* A reconnect (endpoints: the next replica) put a new socket
         * behind the same descriptor number; epoll dropped the old one
         * when it was closed. */
        L->armed = L->events;
}

static void h_add_read(void *d)
{
    loopst *L = d;
    L->events |= EPOLLIN;
}

static void h_del_read(void *d)
{
    loopst *L = d;
    L->events &= ~(uint32_t)EPOLLIN;
}

static void h_add_write(void *d)
{
    loopst *L = d;
    L->events |= EPOLLOUT;
}

static void h_del_write(void *d)
{
    loopst *L = d;
    L->events &= ~(uint32_t)EPOLLOUT;
}

static void h_timer(void *d, int64_t ms)
{
    loopst *L = d;
    L->timer_ns = ms < 0 ? -1 : now_ns() + ms * 1000000LL;
}

static void on_status(kvmux_client *c, int status, void *ud)
{
    (void)c;
    loopst *L = ud;
    L->status = status == 0 ? 1 : status;
}

/* One round of the loop: flush what the callbacks queued, wait (at most
 * POLL_MS, or until the library's timer is due, or a phase change pokes
 * the eventfd) and dispatch. */
static void pump(worker *w, loopst *L)
{
    kvmux_client *c = w->conn->cli;
    /* Write before sleeping: the socket is nearly always writable, so the
     * requests the last round of callbacks submitted go out now, in one
     * send(), instead of after an epoll round trip for EPOLLOUT. If the
     * send would block, the library keeps asking for writability and
     * ep_sync arms it. Not while connecting: there writability is how the
     * library learns that the TCP connect finished. */
    if ((L->events & EPOLLOUT) && L->status == 1)
        kvmux_async_handle_write(c);
    ep_sync(L);
    int64_t now = now_ns();
    int to = POLL_MS;
    if (L->timer_ns >= 0) {
        int64_t left = (L->timer_ns - now + 999999) / 1000000;
        if (left < to)
            to = left < 0 ? 0 : (int)left;
    }
    if (to > 0 && now < L->spin_until_ns)
        to = 0; /* --busy-poll: stay awake for the reply */
    struct epoll_event evs[4];
    int n = epoll_wait(L->ep, evs, 4, to);
    if (n > 0 && w->r->cfg->busy_poll_us)
        L->spin_until_ns = now_ns() + (int64_t)w->r->cfg->busy_poll_us * 1000;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u32 != 1)
            continue; /* the phase eventfd: waking up was the point */
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            kvmux_async_handle_read(c);
        if (evs[i].events & (EPOLLOUT | EPOLLERR))
            kvmux_async_handle_write(c);
    }
    if (L->timer_ns >= 0 && now_ns() >= L->timer_ns) {
        L->timer_ns = -1;
        kvmux_async_handle_timeout(c);
    }
}

static void loop_drain(worker *w, loopst *L)
{
    while (atomic_load_explicit(&w->inflight, memory_order_relaxed) > 0)
        pump(w, L);
}

static void loop_main(worker *w)
{
    runner *r = w->r;
    const bench_config *cfg = r->cfg;
    loopst L = {.ep = -1, .fd = -1, .timer_ns = -1};
    kvmux_options opts;
    kvmux_options_init(&opts);
    opts.request_timeout_ms = cfg->timeout_ms;
    opts.client_name = "kvmux-bench";
    opts.auth_token = cfg->auth;
    opts.stale_reads = cfg->stale;
    if (strchr(cfg->host, ',')) opts.endpoints = cfg->host; /* a group */
    opts.cluster = cfg->cluster; /* one fd: the groups' sockets */

    int rc = kvmux_async_connect(&w->conn->cli, cfg->host, cfg->port, &opts);
    if (rc == 0) {
        L.ep = epoll_create1(EPOLL_CLOEXEC);
        L.fd = kvmux_async_fd(w->conn->cli);
        struct epoll_event ev = {.events = 0, .data = {.u32 = 1}};
        if (L.ep < 0 || epoll_ctl(L.ep, EPOLL_CTL_ADD, L.fd, &ev) != 0)
            rc = KVMUX_ENOMEM;
    }
    if (rc == 0 && r->phase_efd >= 0) {
        /* Edge-triggered and never read: every write is a new edge. */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data = {.u32 = 2}};
        (void)epoll_ctl(L.ep, EPOLL_CTL_ADD, r->phase_efd, &ev);
    }
    if (rc == 0) {
        kvmux_async_set_status_cb(w->conn->cli, on_status, &L);
        kvmux_async_hooks h = {.data = &L,
                               .add_read = h_add_read,
                               .del_read = h_del_read,
                               .add_write = h_add_write,
                               .del_write = h_del_write,
                               .schedule_timer = h_timer,
                               .cleanup = NULL};
        rc = kvmux_async_attach(w->conn->cli, &h);
    }
    /* The handshake: bounded by connect_timeout_ms inside the library
     * (the status callback then reports the failure). */
    /* With endpoints (a group) a failed attempt is not the end: the
     * library moves on to the next endpoint (the status callback reports
     * each failure), so wait up to 10 s for one handshake. */
    int64_t give_up = now_ns() + (int64_t)10 * 1000000000;
    while (rc == 0 && (L.status == 0 || (opts.endpoints && L.status < 0 && now_ns() < give_up)) &&
           atomic_load_explicit(&r->phase, memory_order_acquire) != PHASE_STOP)
        pump(w, &L);
    if (rc == 0 && L.status < 0)
        rc = L.status;
    else if (rc == 0 && L.status == 0)
        rc = KVMUX_ECONNECT; /* stopped while connecting */

    if (rc != 0) {
        w->connect_err = rc;
        bench__worker_preload_done(w);
    } else {
        if (w->id == 0)
            kvmux_get_server_info(w->conn->cli, &r->info);
        fill(w); /* PRELOAD */
        loop_drain(w, &L);
        /* Report in; the wait for the next phase is on r->cv, so the
         * connection is not serviced meanwhile: nothing is in flight. */
        bench__worker_preload_done(w);
        fill(w);
        loop_drain(w, &L);
    }
    /* An event-loop client is closed on its loop thread. */
    kvmux_close(w->conn->cli);
    w->conn->cli = NULL;
    if (L.ep >= 0)
        close(L.ep);
}

void *bench__async_main(void *arg)
{
    worker *w = arg;
    if (w->r->cfg->driver == BENCH_DRIVER_LOOP)
        loop_main(w);
    else
        cb_main(w);
    bench__worker_exited(w);
    return NULL;
}
