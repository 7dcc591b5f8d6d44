/* bench/hol/hol_common.h: the pieces both head-of-line benchmarks share
 * (hol_kvmux.c, hol_redis.c), so that the two measure exactly the same
 * thing: the clock, the 64 MiB value's byte pattern, the latency log and
 * its percentiles, argument parsing and the one output line per phase.
 *
 * Design: header-only static helpers (each program is one translation
 * unit compiled by bench/hol.sh with plain cc). A phase's latencies are
 * kept raw in a bounded array (HOL_MAX_SAMPLES) and sorted at the end:
 * exact percentiles, no histogram rounding.
 * What it is not: a general benchmark library (tools/kvmux-bench is). */
#ifndef KVMUX_BENCH_HOL_COMMON_H
#define KVMUX_BENCH_HOL_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HOL_MiB (1024u * 1024u)
#define HOL_MAX_SAMPLES 2000000 /* per phase; a phase stops taking samples past it */

/* Monotonic microseconds. */
static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A malloc'ed len-byte pattern (never all-equal, so a misplaced fragment
 * shows up in the memcmp), or NULL. */
static uint8_t *pattern(size_t len) {
    uint8_t *p = malloc(len);
    if (!p) return NULL;
    for (size_t i = 0; i < len; i++) p[i] = (uint8_t)(i * 13u + 7u + (i >> 16));
    return p;
}

/* A latency log: at most HOL_MAX_SAMPLES round trips, microseconds. */
typedef struct lat_log {
    int64_t *us;
    size_t n;
} lat_log;

/* Allocate an empty log; 0 or -1 (out of memory). */
static int lat_init(lat_log *l) {
    l->n = 0;
    l->us = malloc(HOL_MAX_SAMPLES * sizeof *l->us);
    return l->us ? 0 : -1;
}

/* Append one sample; returns 0, or -1 when the log is full. */
static int lat_add(lat_log *l, int64_t us) {
    if (l->n >= HOL_MAX_SAMPLES) return -1;
    l->us[l->n++] = us;
    return 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0 < q <= 1) of a sorted log in milliseconds, nearest
 * rank (the smallest sample with at least q of the samples at or below
 * it); 0 for an empty log. */
static double quantile_ms(const lat_log *l, double q) {
    if (l->n == 0) return 0.0;
    size_t rank = (size_t)(q * (double)l->n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > l->n) rank = l->n;
    return (double)l->us[rank - 1] / 1000.0;
}

/* Sort l and print the phase's line, tab-separated, as bench/hol.sh reads
 * it: system phase n p50 p99 p99.9 max set_ms get_ms (ms; "-" when the
 * phase had no big transfer). */
static void report(const char *sys, const char *phase, lat_log *l, double set_ms,
                   double get_ms) {
    qsort(l->us, l->n, sizeof *l->us, cmp_i64);
    printf("RESULT\t%s\t%s\t%zu\t%.3f\t%.3f\t%.3f\t%.3f\t", sys, phase, l->n,
           quantile_ms(l, 0.50), quantile_ms(l, 0.99), quantile_ms(l, 0.999),
           quantile_ms(l, 1.0));
    if (set_ms < 0)
        printf("-\t-\n");
    else
        printf("%.1f\t%.1f\n", set_ms, get_ms);
    fflush(stdout);
}

/* Command line shared by both programs. */
typedef struct hol_args {
    const char *host;
    unsigned port;
    double idle_s;   /* phase 1 length */
    unsigned rounds; /* phase 2: big SET + big GET this many times */
    size_t big;      /* bytes of the big value */
    int small_writes;    /* -w 1: the small requests are SETs, not GETs */
    const char *endpoints; /* -E: a replicated group (kvmux only), or NULL */
} hol_args;

/* Parse "-p PORT | -E ENDPOINTS [-d IDLE_SECONDS] [-r ROUNDS] [-s MIB] [-w 0|1]"; exits 2 on a
 * bad command line. */
static void parse_args(int argc, char **argv, hol_args *a) {
    a->host = "127.0.0.1";
    a->port = 0;
    a->idle_s = 3.0;
    a->rounds = 10;
    a->big = 64 * (size_t)HOL_MiB;
    a->small_writes = 0;
    a->endpoints = NULL;
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(argv[i], "-p")) a->port = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(argv[i], "-d")) a->idle_s = strtod(v, NULL);
        else if (!strcmp(argv[i], "-r")) a->rounds = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(argv[i], "-s")) a->big = (size_t)strtoul(v, NULL, 10) * HOL_MiB;
        else if (!strcmp(argv[i], "-w")) a->small_writes = atoi(v) != 0;
        else if (!strcmp(argv[i], "-E")) a->endpoints = v, a->port = 1;
        else goto usage;
    }
    if (a->port == 0 || a->port > 65535 || a->idle_s <= 0 || a->idle_s > 3600 ||
        a->rounds < 1 || a->rounds > 100 || a->big == 0 || a->big > 512 * (size_t)HOL_MiB)
        goto usage;
    return;
usage:
    fprintf(stderr, "usage: %s -p PORT | -E HOST:PORT,... [-d IDLE_SECONDS (3)] [-r ROUNDS (10)] "
                    "[-s MIB (64)] [-w 0|1 (small SETs)]\n", argv[0]);
    exit(2);
}

#endif /* KVMUX_BENCH_HOL_COMMON_H */
