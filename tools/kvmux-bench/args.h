/* kvmux-bench command line: the run's configuration. See args.c. */
#ifndef KVMUX_BENCH_ARGS_H
#define KVMUX_BENCH_ARGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Hard limits on the command line, so one typo cannot ask for a million
 * threads or a terabyte buffer. */
#define BENCH_MAX_CONNECTIONS 256
#define BENCH_MAX_THREADS_PER_CONN 1024
#define BENCH_MAX_WORKERS 2048          /* connections * threads */
#define BENCH_MAX_VALUE_SIZE (64u << 20) /* the server enforces its own */
#define BENCH_MAX_DURATION_S 86400.0
#define BENCH_MAX_DEPTH 65536

typedef enum bench_mode {
    BENCH_MODE_SERIAL = 0, /* one caller per connection, one request at a time */
    BENCH_MODE_SYNC,       /* -t blocking threads per connection */
    BENCH_MODE_ASYNC       /* --depth requests in flight per connection via the
                              async API (see async.c) */
} bench_mode;

/* How async mode drives a connection (--driver). */
typedef enum bench_driver {
    BENCH_DRIVER_LOOP = 0, /* event-loop client on the bench's own epoll
                              loop: one thread per connection, no library
                              threads (default: the faster here) */
    BENCH_DRIVER_CALLBACK  /* threaded client, kvmux_call_async; the
                              completion thread resubmits */
} bench_driver;

/* The operations a run can issue; the index into bench_config.weight and
 * into the per-op counters. */
typedef enum bench_opkind {
    BENCH_OP_GET = 0,
    BENCH_OP_SET,
    BENCH_OP_INCR,
    BENCH_OP_PING,
    BENCH_OP_COUNT
} bench_opkind;

typedef struct bench_config {
    const char *host;          /* -h; default 127.0.0.1 */
    uint16_t port;             /* -p; default 7878 */
    uint32_t connections;      /* -c; default 1 */
    uint32_t threads;          /* -t callers per connection; default 1 */
    bench_mode mode;           /* --mode; default serial (sync if -t > 1) */
    uint32_t depth;            /* --depth (async only); default 1 */
    bench_driver driver;       /* --driver (async only); default loop */
    uint64_t requests;         /* -n; 0 when -d is used */
    double duration_s;         /* -d; 0 when -n is used */
    double warmup_s;           /* --warmup; default 0 */
    uint32_t weight[BENCH_OP_COUNT]; /* --ratio / --op; default get 1 */
    uint32_t keyspace;         /* -k; default 100000 */
    size_t value_min;          /* -s N or MIN-MAX; default 100 */
    size_t value_max;
    int preload;               /* --preload */
    int json;                  /* --json */
    int tls;                   /* --tls: connect with TLS (threaded
                                  clients only: not --driver loop) */
    const char *tls_ca;        /* --cacert FILE (implies --tls); without
                                  it the server is not verified */
    const char *auth;          /* -a/--auth TOKEN, default $KVMUX_AUTH
                                  (kvmux_options.auth_token); NULL = none */
    int quiet;                 /* -q: no progress lines */
    int timeout_ms;            /* --timeout per request; default 5000 */
    uint32_t busy_poll_us;     /* --busy-poll: loop driver spins this long
                                  after I/O before sleeping; 0 = off */
    uint64_t seed;             /* --seed; default 1 (runs are repeatable) */
    int cluster;               /* --cluster: -h/-p (or -h's list) are seeds
                                  of a sharded cluster (kvmux_options
                                  .cluster; every mode and driver) */
    int stale;                 /* --stale: reads carry the STALE flag
                                  (kvmux_options.stale_reads) */
} bench_config;

/* Parse argv into *cfg (defaults first).
 * Returns 0 to run, 1 if --help was printed (exit 0), or -1 after printing
 * a message on err (exit 2). Thread-safe: no (getopt). */
int bench_args_parse(bench_config *cfg, int argc, char **argv, FILE *err);

/* One-line usage plus the option list. */
void bench_args_usage(FILE *out);

/* "serial", "sync", "async"; "loop", "callback"; "get", "set", ... */
const char *bench_mode_name(bench_mode m);
const char *bench_driver_name(bench_driver d);
const char *bench_op_name(bench_opkind k);

#endif /* KVMUX_BENCH_ARGS_H */
