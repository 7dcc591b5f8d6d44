/* kvmux-bench workload generation: what each request is. See workload.c. */
#ifndef KVMUX_BENCH_WORKLOAD_H
#define KVMUX_BENCH_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "args.h"

/* "key:" + 10 digits; the format is "key:%010u". */
#define BENCH_KEY_LEN 14

/* Per-thread generator state. Invariants: value_buf holds value_max bytes
 * (at least 1), weight_total > 0. Owned and used by one thread. */
typedef struct bench_gen {
    uint64_t rng;              /* splitmix64 state */
    uint32_t keyspace;
    uint32_t weight[BENCH_OP_COUNT];
    uint32_t weight_total;
    size_t value_min, value_max;
    uint8_t *value_buf;        /* owned; pseudo-random printable bytes */
} bench_gen;

/* Set up g from cfg for the thread numbered worker_id (each thread gets
 * its own stream from cfg->seed). Returns 0 or -1 on out-of-memory. */
int bench_gen_init(bench_gen *g, const bench_config *cfg, uint32_t worker_id);
void bench_gen_deinit(bench_gen *g);

/* Next pseudo-random 64-bit number (splitmix64). */
uint64_t bench_gen_next(bench_gen *g);

/* Pick the next operation according to the weights. */
bench_opkind bench_gen_op(bench_gen *g);

/* Uniform key index in [0, keyspace). */
uint32_t bench_gen_key_index(bench_gen *g);

/* Write "key:%010u" for idx into out[0..BENCH_KEY_LEN) (no NUL). */
void bench_format_key(char out[BENCH_KEY_LEN], uint32_t idx);

/* Length of the next SET value, uniform in [value_min, value_max]. The
 * bytes are value_buf[0..len). */
size_t bench_gen_value_len(bench_gen *g);

#endif /* KVMUX_BENCH_WORKLOAD_H */
