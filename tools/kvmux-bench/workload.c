/* kvmux-bench workload generation.
 *
 * What it is: the per-thread source of "which operation, which key, how big
 * a value". Keys are "key:%010u" with the index uniform over the keyspace
 * (what redis-benchmark -r and memtier's uniform pattern do); operations are
 * drawn from the --ratio / --op weights; values are slices of one buffer of
 * pseudo-random printable bytes filled once, so the hot path never fills
 * memory and never allocates.
 *
 * Design: splitmix64 per thread, seeded from --seed and the thread number,
 * so a run is repeatable and threads do not share any state. Modulo bias
 * from a 64-bit generator into a 32-bit range is below 2^-32: irrelevant.
 *
 * What it is not: no Zipf or Gaussian key patterns yet (memtier has them);
 * they would slot into bench_gen_key_index.
 */
#include "workload.h"

#include <stdlib.h>
#include <string.h>

uint64_t bench_gen_next(bench_gen *g)
{
    uint64_t z = (g->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int bench_gen_init(bench_gen *g, const bench_config *cfg, uint32_t worker_id)
{
    memset(g, 0, sizeof *g);
    /* Distinct, well-mixed streams: run the seed and the id through the
     * mixer once rather than using them raw. */
    g->rng = cfg->seed ^ ((uint64_t)worker_id * 0xD1B54A32D192ED03ull);
    (void)bench_gen_next(g);
    g->keyspace = cfg->keyspace ? cfg->keyspace : 1;
    for (int k = 0; k < BENCH_OP_COUNT; k++) {
        g->weight[k] = cfg->weight[k];
        g->weight_total += cfg->weight[k];
    }
    if (g->weight_total == 0) {
        g->weight[BENCH_OP_GET] = 1;
        g->weight_total = 1;
    }
    g->value_min = cfg->value_min;
    g->value_max = cfg->value_max;
    size_t cap = g->value_max ? g->value_max : 1;
    g->value_buf = malloc(cap);
    if (!g->value_buf)
        return -1;
    static const char alphabet[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (size_t i = 0; i < cap; i++)
        g->value_buf[i] = (uint8_t)alphabet[bench_gen_next(g) % (sizeof alphabet - 1)];
    return 0;
}

void bench_gen_deinit(bench_gen *g)
{
    free(g->value_buf);
    g->value_buf = NULL;
}

bench_opkind bench_gen_op(bench_gen *g)
{
    if (g->weight_total == g->weight[BENCH_OP_GET])
        return BENCH_OP_GET; /* the common single-op case: no draw */
    uint32_t r = (uint32_t)(bench_gen_next(g) % g->weight_total);
    for (int k = 0; k < BENCH_OP_COUNT; k++) {
        if (r < g->weight[k])
            return (bench_opkind)k;
        r -= g->weight[k];
    }
    return BENCH_OP_GET; /* unreachable: the weights sum to weight_total */
}

uint32_t bench_gen_key_index(bench_gen *g)
{
    return (uint32_t)(bench_gen_next(g) % g->keyspace);
}

void bench_format_key(char out[BENCH_KEY_LEN], uint32_t idx)
{
    memcpy(out, "key:", 4);
    for (int i = BENCH_KEY_LEN - 1; i >= 4; i--) {
        out[i] = (char)('0' + idx % 10);
        idx /= 10;
    }
}

size_t bench_gen_value_len(bench_gen *g)
{
    if (g->value_min == g->value_max)
        return g->value_min;
    uint64_t span = (uint64_t)(g->value_max - g->value_min) + 1;
    return g->value_min + (size_t)(bench_gen_next(g) % span);
}
