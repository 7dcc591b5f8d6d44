/* kvmux-bench runner internals shared by runner.c (phases, threads,
 * reporting, the serial/sync callers) and async.c (the async drivers).
 * Not an interface: only these two files include it. */
#ifndef KVMUX_BENCH_RUNNER_INTERNAL_H
#define KVMUX_BENCH_RUNNER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "kvmux.h"
#include "runner.h"
#include "workload.h"

enum { PHASE_PRELOAD = 0, PHASE_WARMUP, PHASE_MEASURE, PHASE_STOP };

#define TICK_NS 1000000000LL
#define POLL_MS 100

typedef struct conn {
    kvmux_client *cli;
    _Atomic int fatal;            /* first fatal error seen, 0 while healthy */
} conn;

struct runner;
struct aslot;

/* One caller thread (serial/sync), or one connection's driver (async).
 * The counters are written only by the thread itself -- in async callback
 * mode by whichever thread holds alk, one at a time. */
typedef struct worker {
    struct runner *r;
    uint32_t id;
    conn *conn;
    pthread_t tid;
    int started;
    bench_gen gen;
    bench_hist hist;
    _Atomic uint64_t ops;         /* measured, any outcome */
    _Atomic uint64_t ok;
    _Atomic uint64_t misses;
    _Atomic uint64_t errors;
    _Atomic uint64_t warm_ops;
    _Atomic uint64_t preloaded;
    _Atomic uint64_t err_count[BENCH_ERR_SLOTS];
    _Atomic uint64_t op_count[BENCH_OP_COUNT];
    int64_t last_done_ns;         /* last measured completion; read after join */
    int preload_err;              /* first preload error; read after join or
                                     under r->lk */
    int connect_err;              /* async loop driver: connect failed (read
                                     as preload_err) */
    /* async mode only (async.c) */
    struct aslot *slots;          /* cfg->depth request slots */
    _Atomic uint32_t inflight;    /* slots with a request submitted */
    uint64_t preload_next;        /* next key index to preload */
    pthread_mutex_t alk;          /* callback driver: serialises the filling
                                     thread and the completion thread */
    int use_alk;
} worker;

typedef struct runner {
    const bench_config *cfg;
    conn *conns;
    worker *workers;
    uint32_t nworkers;
    _Atomic int phase;
    _Atomic uint64_t claimed;     /* -n mode: requests handed out */
    pthread_mutex_t lk;
    pthread_cond_t cv;            /* CLOCK_MONOTONIC */
    uint32_t preload_done;        /* under lk */
    uint32_t exited;              /* under lk */
    int phase_efd;                /* eventfd poked on each phase change, so
                                     loop drivers wake at once; -1 if none */
    kvmux_server_info info;       /* loop driver: filled by worker 0 before
                                     it reports preload done */
} runner;

/* Single-writer counter bump: no lock prefix. */
static inline void ctr_inc(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static inline uint64_t ctr_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* runner.c: the worker's end-of-preload handshake (report in, then wait
 * for the main thread to leave PRELOAD, bounded steps) and its exit
 * report. */
void bench__worker_preload_done(worker *w);
void bench__worker_exited(worker *w);
/* Wait on r->cv until deadline_ns at the latest and at most POLL_MS. Call
 * with r->lk held. */
void bench__wait_until(runner *r, int64_t deadline_ns);

/* async.c: the thread body of one connection's async driver (callback or
 * loop, from cfg->driver). Contract as worker_main in runner.c: preload,
 * report, run until STOP / -n / fatal, drain, report exit. */
void *bench__async_main(void *arg);
/* async.c: per-worker async state (slots, lock); 0 or -1 (out of memory).
 * The deinit is safe on a worker never initialised (zeroed). */
int bench__async_init(worker *w);
void bench__async_deinit(worker *w);

#endif /* KVMUX_BENCH_RUNNER_INTERNAL_H */
