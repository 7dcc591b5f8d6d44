/* kvmux-bench runner: connections, caller threads, phases and measurement.
 *
 * What it is: the part of kvmux-bench that drives the server. It opens -c
 * kvmux_client connections and starts the caller threads ("workers") on
 * them: one per connection in serial mode, -t per connection in sync mode,
 * each issuing blocking kvmux_call()s back to back; in async mode one
 * driver per connection that keeps --depth requests in flight (async.c).
 * The main thread only steers and reports.
 *
 * Design:
 * - A run goes through phases, published in one atomic the workers read
 *   before each request: PRELOAD (each worker SETs its share of the
 *   keyspace) -> WARMUP (requests run but are not measured) -> MEASURE ->
 *   STOP. A request is measured if it *started* in MEASURE; the measured
 *   duration runs from the moment MEASURE was published to the last
 *   measured completion, so the few requests in flight across either edge
 *   shift the window by at most one latency.
 * - No lock on the hot path. Each worker owns its histogram and counters
 *   and is their only writer (relaxed atomic load+store, a plain mov, so the
 *   main thread may read them for the progress line without a data race).
 *   With -n, workers claim requests from one shared atomic counter: one
 *   uncontended-ish fetch_add per request, far below a network round trip.
 * - The one mutex/condvar pair is used only at phase changes and when a
 *   worker exits; the main thread waits on it with a 100 ms bound.
 * - Every request has a timeout (--timeout), so every worker finishes
 *   within one timeout of STOP; a fatal error ends that worker at once.
 *
 * What it is not: not an open-loop (fixed-rate) generator, so like
 * redis-benchmark it does not correct for coordinated omission.
 */
#include "runner.h"

#include <sys/resource.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "kvmux.h"
#include "runner_internal.h"
#include "workload.h"

volatile sig_atomic_t bench_stop_requested;

int bench_err_slot(int code)
{
    if (code <= -1 && code >= -14)
        return -code;
    if (code <= -101 && code >= -105)
        return 14 + (-code - 100);
    return BENCH_ERR_OTHER;
}

int bench_err_code(int slot)
{
    if (slot >= 1 && slot <= 14)
        return -slot;
    if (slot >= 15 && slot <= 19)
        return -(slot - 14 + 100);
    return 0;
}

/* Issue one request of kind k. Returns the KVMUX code. */
static int do_request(worker *w, bench_opkind k, uint32_t key_idx)
{
    const bench_config *cfg = w->r->cfg;
    char key[BENCH_KEY_LEN];
    kvmux_request req;
    memset(&req, 0, sizeof req);
    switch (k) {
    case BENCH_OP_GET: {
        bench_format_key(key, key_idx);
        req.op = KVMUX_GET;
        req.key = key;
        req.key_len = sizeof key;
        /* Take the value back (and free it) as a real reader would: the
         * copy out of the client is part of the cost being measured. */
        kvmux_reply rep;
        memset(&rep, 0, sizeof rep);
        int rc = kvmux_call(w->conn->cli, &req, &rep, cfg->timeout_ms);
        kvmux_reply_free(&rep);
        return rc;
    }
    case BENCH_OP_SET:
        bench_format_key(key, key_idx);
        req.op = KVMUX_SET;
        req.key = key;
        req.key_len = sizeof key;
        req.value = w->gen.value_buf;
        req.value_len = bench_gen_value_len(&w->gen);
        return kvmux_call(w->conn->cli, &req, NULL, cfg->timeout_ms);
    case BENCH_OP_INCR:
        bench_format_key(key, key_idx);
        req.op = KVMUX_INCR;
        req.key = key;
        req.key_len = sizeof key;
        req.delta = 1;
        return kvmux_call(w->conn->cli, &req, NULL, cfg->timeout_ms);
    case BENCH_OP_PING:
    case BENCH_OP_COUNT:
        break;
    }
    return kvmux_ping(w->conn->cli, cfg->timeout_ms);
}

/* SET this worker's share of the keyspace (every nworkers-th key). With
 * INCR in the mix the preloaded value is "0", so INCRs find integers.
 * Stops at the first error (recorded in preload_err) or on STOP. */
static void worker_preload(worker *w)
{
    runner *r = w->r;
    const bench_config *cfg = r->cfg;
    const int for_incr = cfg->weight[BENCH_OP_INCR] > 0;
    char key[BENCH_KEY_LEN];
    for (uint64_t i = w->id; i < cfg->keyspace; i += r->nworkers) {
        if (atomic_load_explicit(&r->phase, memory_order_acquire) == PHASE_STOP)
            return;
        bench_format_key(key, (uint32_t)i);
        kvmux_request req;
        memset(&req, 0, sizeof req);
        req.op = KVMUX_SET;
        req.key = key;
        req.key_len = sizeof key;
        if (for_incr) {
            req.value = "0";
            req.value_len = 1;
        } else {
            req.value = w->gen.value_buf;
            req.value_len = bench_gen_value_len(&w->gen);
        }
        int rc = kvmux_call(w->conn->cli, &req, NULL, cfg->timeout_ms);
        if (rc != 0) {
            w->preload_err = rc;
            if (kvmux_is_fatal(rc))
                atomic_store(&w->conn->fatal, rc);
            return;
        }
        ctr_inc(&w->preloaded);
    }
}

/* Report preload done, then wait for the main thread to leave PRELOAD
 * (bounded steps; the main thread always moves on or stops). */
void bench__worker_preload_done(worker *w)
{
    runner *r = w->r;
    pthread_mutex_lock(&r->lk);
    r->preload_done++;
    pthread_cond_broadcast(&r->cv);
    while (atomic_load(&r->phase) == PHASE_PRELOAD) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->lk, &ts);
    }
    pthread_mutex_unlock(&r->lk);
}

/* Tell the main thread this worker is done. */
void bench__worker_exited(worker *w)
{
    runner *r = w->r;
    pthread_mutex_lock(&r->lk);
    r->exited++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->lk);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    runner *r = w->r;
    const bench_config *cfg = r->cfg;

    if (cfg->preload)
        worker_preload(w);

    bench__worker_preload_done(w);

    for (;;) {
        int ph = atomic_load_explicit(&r->phase, memory_order_acquire);
        if (ph >= PHASE_STOP)
            break;
        if (atomic_load_explicit(&w->conn->fatal, memory_order_relaxed))
            break;
        const int measured = ph == PHASE_MEASURE;
        if (measured && cfg->requests &&
            atomic_fetch_add_explicit(&r->claimed, 1, memory_order_relaxed) >=
                cfg->requests)
            break;

        bench_opkind k = bench_gen_op(&w->gen);
        uint32_t key_idx = bench_gen_key_index(&w->gen);
        int64_t t0 = now_ns();
        int rc = do_request(w, k, key_idx);
        int64_t t1 = now_ns();

        if (measured) {
            bench_hist_record(&w->hist, t1 - t0);
            ctr_inc(&w->ops);
            ctr_inc(&w->op_count[k]);
            if (rc == 0)
                ctr_inc(&w->ok);
            else if (rc == KVMUX_ENOTFOUND && k == BENCH_OP_GET)
                ctr_inc(&w->misses);
            else {
                ctr_inc(&w->errors);
                ctr_inc(&w->err_count[bench_err_slot(rc)]);
            }
            w->last_done_ns = t1;
        } else {
            ctr_inc(&w->warm_ops);
        }
        if (kvmux_is_fatal(rc)) {
            /* The connection is gone; every later call would fail fast with
             * the same code, which would only inflate the error count. */
            atomic_store(&w->conn->fatal, rc);
            break;
        }
    }

    bench__worker_exited(w);
    return NULL;
}

/* Publish a phase: condvar waiters and (through the eventfd) the epoll
 * loops of async loop drivers wake at once. */
static void set_phase(runner *r, int ph)
{
    pthread_mutex_lock(&r->lk);
    atomic_store_explicit(&r->phase, ph, memory_order_release);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->lk);
    if (r->phase_efd >= 0) {
        uint64_t one = 1;
        /* A full counter (never, at 2^64-2) would only cost the 100 ms
         * fallback poll; nothing to handle. */
        ssize_t n = write(r->phase_efd, &one, sizeof one);
        (void)n;
    }
}

/* Wait on r->cv until deadline_ns (monotonic) at the latest, and at most
 * POLL_MS so signals are noticed. Call with r->lk held. */
void bench__wait_until(runner *r, int64_t deadline_ns)
{
    int64_t now = now_ns();
    int64_t until = now + (int64_t)POLL_MS * 1000000LL;
    if (deadline_ns < until)
        until = deadline_ns;
    if (until <= now)
        return;
    struct timespec ts = {.tv_sec = (time_t)(until / 1000000000LL),
                          .tv_nsec = (long)(until % 1000000000LL)};
    pthread_cond_timedwait(&r->cv, &r->lk, &ts);
}

/* Snapshot of the live counters for progress lines. */
typedef struct snapshot {
    int64_t at_ns;
    uint64_t ops;
    uint64_t warm_ops;
    uint64_t errors;
    uint64_t preloaded;
} snapshot;

static void take_snapshot(runner *r, snapshot *s, bench_hist *cum)
{
    memset(s, 0, sizeof *s);
    s->at_ns = now_ns();
    if (cum)
        bench_hist_reset(cum);
    for (uint32_t i = 0; i < r->nworkers; i++) {
        worker *w = &r->workers[i];
        s->ops += ctr_get(&w->ops);
        s->warm_ops += ctr_get(&w->warm_ops);
        s->errors += ctr_get(&w->errors);
        s->preloaded += ctr_get(&w->preloaded);
        if (cum)
            bench_hist_add(cum, &w->hist);
    }
}

/* Progress state: cumulative histogram snapshots one tick apart, so the
 * line shows the p99 of the last second as well as the running p99. */
typedef struct progress {
    FILE *out;
    int64_t t0_ns;               /* start of the run (connect done) */
    snapshot prev;
    bench_hist cum, prev_cum, diff;
    int ok;                      /* histograms allocated */
} progress;

static void progress_line(runner *r, progress *p, int phase)
{
    snapshot cur;
    take_snapshot(r, &cur, p->ok ? &p->cum : NULL);
    double dt = (double)(cur.at_ns - p->prev.at_ns) / 1e9;
    double t = (double)(cur.at_ns - p->t0_ns) / 1e9;
    if (dt <= 0)
        dt = 1e-9;
    if (phase == PHASE_PRELOAD) {
        fprintf(p->out, "[%6.1fs] preload  %llu/%u keys  %.0f sets/s\n", t,
                (unsigned long long)cur.preloaded, r->cfg->keyspace,
                (double)(cur.preloaded - p->prev.preloaded) / dt);
    } else if (phase == PHASE_WARMUP) {
        fprintf(p->out, "[%6.1fs] warmup   %.0f ops/s\n", t,
                (double)(cur.warm_ops - p->prev.warm_ops) / dt);
    } else if (p->ok) {
        bench_hist_reset(&p->diff);
        bench_hist_add(&p->diff, &p->cum);
        bench_hist_sub(&p->diff, &p->prev_cum);
        fprintf(p->out,
                "[%6.1fs] measure  %.0f ops/s  p99(1s) %.1f us  p99 %.1f us  "
                "ops %llu  errors %llu\n",
                t, (double)(cur.ops - p->prev.ops) / dt,
                (double)bench_hist_percentile(&p->diff, 99.0) / 1e3,
                (double)bench_hist_percentile(&p->cum, 99.0) / 1e3,
                (unsigned long long)cur.ops, (unsigned long long)cur.errors);
        bench_hist_reset(&p->prev_cum);
        bench_hist_add(&p->prev_cum, &p->cum);
    }
    fflush(p->out);
    p->prev = cur;
}

static void runner_teardown(runner *r)
{
    /* Clients first: a close completes whatever an async driver still has
     * owed (none after a drain, but a close never leaves a callback
     * pointing at freed slots). */
    if (r->conns) {
        for (uint32_t i = 0; i < r->cfg->connections; i++)
            kvmux_close(r->conns[i].cli);
        free(r->conns);
    }
    if (r->workers) {
        for (uint32_t i = 0; i < r->nworkers; i++) {
            bench_gen_deinit(&r->workers[i].gen);
            bench_hist_deinit(&r->workers[i].hist);
            bench__async_deinit(&r->workers[i]);
        }
        free(r->workers);
    }
    if (r->phase_efd >= 0)
        close(r->phase_efd);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->lk);
}

static double tv_s(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* Stop every worker and join them. Bounded: each is at most one request
 * (one --timeout) away from noticing STOP; an async driver drains its
 * in-flight requests, each bounded by its own --timeout. */
static void stop_and_join(runner *r)
{
    set_phase(r, PHASE_STOP);
    for (uint32_t i = 0; i < r->nworkers; i++)
        if (r->workers[i].started)
            pthread_join(r->workers[i].tid, NULL);
}

static int merge_results(runner *r, bench_result *res, int64_t measure_start)
{
    if (bench_hist_init(&res->hist, BENCH_HIST_LOWEST, BENCH_HIST_HIGHEST,
                        BENCH_HIST_DIGITS))
        return -1;
    int64_t last = measure_start;
    for (uint32_t i = 0; i < r->nworkers; i++) {
        worker *w = &r->workers[i];
        res->ops += ctr_get(&w->ops);
        res->ok += ctr_get(&w->ok);
        res->misses += ctr_get(&w->misses);
        res->errors += ctr_get(&w->errors);
        res->warmup_ops += ctr_get(&w->warm_ops);
        res->preloaded += ctr_get(&w->preloaded);
        for (int s = 0; s < BENCH_ERR_SLOTS; s++)
            res->err_count[s] += ctr_get(&w->err_count[s]);
        for (int k = 0; k < BENCH_OP_COUNT; k++)
            res->op_count[k] += ctr_get(&w->op_count[k]);
        bench_hist_add(&res->hist, &w->hist);
        if (ctr_get(&w->ops) && w->last_done_ns > last)
            last = w->last_done_ns;
    }
    res->duration_s = (double)(last - measure_start) / 1e9;
    for (uint32_t i = 0; i < r->cfg->connections; i++)
        if (atomic_load(&r->conns[i].fatal))
            res->connections_lost++;
    return 0;
}

int bench_run(const bench_config *cfg, bench_result *res, FILE *progress_out,
              FILE *err)
{
    memset(res, 0, sizeof *res);
    runner r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.phase_efd = -1;
    pthread_mutex_init(&r.lk, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&r.phase, PHASE_PRELOAD);
    atomic_init(&r.claimed, 0);

    const int async = cfg->mode == BENCH_MODE_ASYNC;
    const int loop_driver = async && cfg->driver == BENCH_DRIVER_LOOP;
    /* Async mode: one driver per connection, cfg->depth requests each. */
    const uint32_t per_conn = cfg->mode == BENCH_MODE_SYNC ? cfg->threads : 1;
    r.nworkers = cfg->connections * per_conn;
    r.conns = calloc(cfg->connections, sizeof *r.conns);
    r.workers = calloc(r.nworkers, sizeof *r.workers);
    if (!r.conns || !r.workers) {
        fprintf(err, "kvmux-bench: out of memory\n");
        runner_teardown(&r);
        return BENCH_RUN_FAILED;
    }

    kvmux_options opts;
    kvmux_options_init(&opts);
    opts.request_timeout_ms = cfg->timeout_ms;
    opts.busy_poll_us = cfg->busy_poll_us; /* the reader thread's spin */
    opts.client_name = "kvmux-bench";
    opts.stale_reads = cfg->stale;
    opts.auth_token = cfg->auth;
    opts.tls = cfg->tls;
    opts.tls_ca_file = cfg->tls_ca;
    opts.tls_verify = cfg->tls_ca != NULL;
    opts.cluster = cfg->cluster;
    if (loop_driver) {
        /* Without it the loop drivers still notice phases within POLL_MS. */
        r.phase_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
    /* The loop drivers connect on their own threads (an event-loop client
     * lives on its loop thread); everyone else connects here. */
    /* -h a:p1,b:p2: a replicated group (kvmux_options.endpoints). */
    if (strchr(cfg->host, ',')) opts.endpoints = cfg->host;
    for (uint32_t i = 0; i < cfg->connections && !loop_driver; i++) {
        int rc = kvmux_connect(&r.conns[i].cli, cfg->host, cfg->port, &opts);
        if (rc != 0) {
            if (opts.endpoints)
                fprintf(err, "kvmux-bench: cannot connect to %s: %s\n", cfg->host,
                        kvmux_strerror(rc));
            else
                fprintf(err, "kvmux-bench: cannot connect to %s:%u: %s\n", cfg->host,
                        (unsigned)cfg->port, kvmux_strerror(rc));
            runner_teardown(&r);
            return BENCH_RUN_FAILED;
        }
    }
    if (!loop_driver) {
        kvmux_server_info info;
        memset(&info, 0, sizeof info);
        kvmux_get_server_info(r.conns[0].cli, &info);
        snprintf(res->server_name, sizeof res->server_name, "%s", info.server_name);
        res->server_credits = info.max_outstanding;
    }

    for (uint32_t i = 0; i < r.nworkers; i++) {
        worker *w = &r.workers[i];
        w->r = &r;
        w->id = i;
        w->conn = &r.conns[i / per_conn];
        if (bench_gen_init(&w->gen, cfg, i) ||
            bench_hist_init(&w->hist, BENCH_HIST_LOWEST, BENCH_HIST_HIGHEST,
                            BENCH_HIST_DIGITS) ||
            (async && bench__async_init(w))) {
            fprintf(err, "kvmux-bench: out of memory\n");
            runner_teardown(&r);
            return BENCH_RUN_FAILED;
        }
    }

    progress p;
    memset(&p, 0, sizeof p);
    p.out = cfg->quiet ? NULL : progress_out;
    p.t0_ns = now_ns();
    if (p.out) {
        p.ok = !bench_hist_init(&p.cum, BENCH_HIST_LOWEST, BENCH_HIST_HIGHEST, BENCH_HIST_DIGITS) &&
               !bench_hist_init(&p.prev_cum, BENCH_HIST_LOWEST, BENCH_HIST_HIGHEST, BENCH_HIST_DIGITS) &&
               !bench_hist_init(&p.diff, BENCH_HIST_LOWEST, BENCH_HIST_HIGHEST, BENCH_HIST_DIGITS);
        take_snapshot(&r, &p.prev, NULL);
    }

    int rc_run = BENCH_RUN_OK;
    for (uint32_t i = 0; i < r.nworkers; i++) {
        if (pthread_create(&r.workers[i].tid, NULL, async ? bench__async_main : worker_main,
                           &r.workers[i]) != 0) {
            fprintf(err, "kvmux-bench: cannot start thread %u of %u\n", i, r.nworkers);
            rc_run = BENCH_RUN_FAILED;
            break;
        }
        r.workers[i].started = 1;
    }
    uint32_t started = 0;
    for (uint32_t i = 0; i < r.nworkers; i++)
        started += (uint32_t)r.workers[i].started;

    /* PRELOAD: wait for every worker to report in. */
    int64_t t_preload = now_ns();
    int64_t next_tick = t_preload + TICK_NS;
    pthread_mutex_lock(&r.lk);
    while (rc_run == BENCH_RUN_OK && r.preload_done < started && !bench_stop_requested) {
        bench__wait_until(&r, next_tick);
        if (now_ns() >= next_tick && p.out && cfg->preload) {
            pthread_mutex_unlock(&r.lk);
            progress_line(&r, &p, PHASE_PRELOAD);
            pthread_mutex_lock(&r.lk);
            next_tick += TICK_NS;
        } else if (now_ns() >= next_tick) {
            next_tick += TICK_NS;
        }
    }
    /* Only when every worker has reported in are their preload results
     * ours to read (the mutex orders their writes before our reads). */
    const int all_ready = r.preload_done >= started;
    pthread_mutex_unlock(&r.lk);
    res->preload_s = (double)(now_ns() - t_preload) / 1e9;
    if (rc_run == BENCH_RUN_OK && all_ready) {
        for (uint32_t i = 0; i < r.nworkers; i++) {
            if (r.workers[i].connect_err) {
                if (strchr(cfg->host, ','))
                    fprintf(err, "kvmux-bench: cannot connect to %s: %s\n", cfg->host,
                            kvmux_strerror(r.workers[i].connect_err));
                else
                    fprintf(err, "kvmux-bench: cannot connect to %s:%u: %s\n", cfg->host,
                            (unsigned)cfg->port, kvmux_strerror(r.workers[i].connect_err));
                rc_run = BENCH_RUN_FAILED;
                break;
            }
            if (cfg->preload && r.workers[i].preload_err) {
                fprintf(err, "kvmux-bench: preload failed: %s\n",
                        kvmux_strerror(r.workers[i].preload_err));
                rc_run = BENCH_RUN_FAILED;
                break;
            }
        }
    }
    if (rc_run != BENCH_RUN_OK) {
        stop_and_join(&r);
        goto out;
    }
    if (loop_driver && all_ready) {
        /* Worker 0 filled r.info before it reported in (ordered by lk). */
        snprintf(res->server_name, sizeof res->server_name, "%s", r.info.server_name);
        res->server_credits = r.info.max_outstanding;
    }

    /* WARMUP. */
    if (cfg->warmup_s > 0 && !bench_stop_requested) {
        set_phase(&r, PHASE_WARMUP);
        int64_t end = now_ns() + (int64_t)(cfg->warmup_s * 1e9);
        if (p.out)
            take_snapshot(&r, &p.prev, NULL);
        next_tick = now_ns() + TICK_NS;
        pthread_mutex_lock(&r.lk);
        while (now_ns() < end && r.exited < started && !bench_stop_requested) {
            bench__wait_until(&r, next_tick < end ? next_tick : end);
            if (now_ns() >= next_tick) {
                next_tick += TICK_NS;
                if (p.out) {
                    pthread_mutex_unlock(&r.lk);
                    progress_line(&r, &p, PHASE_WARMUP);
                    pthread_mutex_lock(&r.lk);
                }
            }
        }
        pthread_mutex_unlock(&r.lk);
    }

    /* MEASURE. */
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t measure_start = now_ns();
    set_phase(&r, PHASE_MEASURE);
    if (p.out)
        take_snapshot(&r, &p.prev, NULL);
    const int64_t deadline = cfg->duration_s > 0
                                 ? measure_start + (int64_t)(cfg->duration_s * 1e9)
                                 : INT64_MAX;
    next_tick = measure_start + TICK_NS;
    pthread_mutex_lock(&r.lk);
    while (r.exited < started && !bench_stop_requested && now_ns() < deadline) {
        bench__wait_until(&r, next_tick < deadline ? next_tick : deadline);
        if (now_ns() >= next_tick) {
            next_tick += TICK_NS;
            if (p.out) {
                pthread_mutex_unlock(&r.lk);
                progress_line(&r, &p, PHASE_MEASURE);
                pthread_mutex_lock(&r.lk);
            }
        }
    }
    pthread_mutex_unlock(&r.lk);
    res->interrupted = bench_stop_requested != 0;
    stop_and_join(&r);
    getrusage(RUSAGE_SELF, &ru1);
    res->cpu_s = tv_s(&ru1.ru_utime) + tv_s(&ru1.ru_stime) - tv_s(&ru0.ru_utime) -
                 tv_s(&ru0.ru_stime);
    res->vol_switches = (uint64_t)(ru1.ru_nvcsw - ru0.ru_nvcsw);
    res->invol_switches = (uint64_t)(ru1.ru_nivcsw - ru0.ru_nivcsw);
    if (merge_results(&r, res, measure_start)) {
        fprintf(err, "kvmux-bench: out of memory\n");
        rc_run = BENCH_RUN_FAILED;
    }

out:
    bench_hist_deinit(&p.cum); /* all safe when never initialised */
    bench_hist_deinit(&p.prev_cum);
    bench_hist_deinit(&p.diff);
    runner_teardown(&r);
    if (rc_run != BENCH_RUN_OK)
        bench_result_deinit(res);
    return rc_run;
}

void bench_result_deinit(bench_result *res)
{
    bench_hist_deinit(&res->hist);
}
