/* kvmux-bench runner: connections, caller threads, phases, measurement.
 * See runner.c. */
#ifndef KVMUX_BENCH_RUNNER_H
#define KVMUX_BENCH_RUNNER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "args.h"
#include "hist.h"

/* Error kinds are counted in slots: KVMUX codes -1..-14 -> slots 1..14,
 * -101..-105 -> 15..19, anything else -> BENCH_ERR_OTHER. */
#define BENCH_ERR_SLOTS 21
#define BENCH_ERR_OTHER 20
int bench_err_slot(int code);
/* The KVMUX code a slot stands for (0 for BENCH_ERR_OTHER). */
int bench_err_code(int slot);

/* Histogram parameters: nanoseconds, 1 ns .. 60 s, 2 significant digits
 * (<1% error; about 30 KiB per thread). */
#define BENCH_HIST_LOWEST 1
#define BENCH_HIST_HIGHEST (60LL * 1000 * 1000 * 1000)
#define BENCH_HIST_DIGITS 2

typedef struct bench_result {
    uint64_t ops;            /* measured requests completed, any outcome */
    uint64_t ok;             /* of those, status OK */
    uint64_t misses;         /* GET answered "key not found" (not an error) */
    uint64_t errors;         /* everything else */
    uint64_t err_count[BENCH_ERR_SLOTS];
    uint64_t op_count[BENCH_OP_COUNT];
    double duration_s;       /* measure start .. last measured completion */
    bench_hist hist;         /* latency of every measured request, in ns */
    uint64_t warmup_ops;
    uint64_t preloaded;      /* keys SET by --preload */
    double preload_s;
    int interrupted;         /* stopped early by SIGINT/SIGTERM */
    uint32_t connections_lost; /* connections that failed fatally */
    char server_name[256];   /* from HELLO_ACK of the first connection */
    uint32_t server_credits; /* max_outstanding granted per connection */
    /* This process (load generator + libkvmux) over the measured phase,
     * from getrusage(RUSAGE_SELF): where the client's CPU goes per request
     * and how often its threads were switched out, figures that noisy
     * machines distort far less than ops/s. */
    double cpu_s;            /* user + system CPU seconds */
    uint64_t vol_switches;   /* voluntary context switches (blocking) */
    uint64_t invol_switches; /* involuntary ones (pre-emption) */
} bench_result;

/* Set from a signal handler to stop the run early (the summary is still
 * printed). Polled by the runner's main loop at least every 100 ms. */
extern volatile sig_atomic_t bench_stop_requested;

enum {
    BENCH_RUN_OK = 0,
    BENCH_RUN_FAILED = 1,      /* connect / preload failed, or out of memory;
                                  a message was printed on err */
    BENCH_RUN_UNSUPPORTED = 3  /* the mode needs an API this build lacks */
};

/* Run the benchmark described by cfg. Progress lines go to progress once a
 * second (NULL or cfg->quiet for none); failures are described on err.
 * On BENCH_RUN_OK *res holds the merged results; release it with
 * bench_result_deinit. On any other return *res needs no release.
 * Bounded: a run ends after -n requests or -d seconds (plus at most one
 * request timeout per thread), or on a stop request, or when every
 * connection has failed. Thread-safe: no (one run per process). */
int bench_run(const bench_config *cfg, bench_result *res, FILE *progress,
              FILE *err);

void bench_result_deinit(bench_result *res);

#endif /* KVMUX_BENCH_RUNNER_H */
