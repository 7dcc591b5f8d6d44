/* kvmux-bench latency histogram.
 *
 * What it is: a fixed-size, log-linear histogram of non-negative integers
 * (kvmux-bench records nanoseconds), with the bucket layout of HdrHistogram.
 * Values are split into power-of-two "buckets"; each bucket is divided into
 * sub_bucket_half_count linear "sub-buckets". With sig_digits = 2 there are
 * 256 sub-buckets per bucket, so any value is stored with a relative error
 * under 1%, and 1 ns .. 60 s fits in about 3.7k cells (30 KiB). Percentiles
 * are read off the cells; min, max, count and sum are kept exactly.
 *
 * Design: every benchmark thread owns one histogram and is its only writer,
 * so recording is two shifts, a count-leading-zeros and an increment, with
 * no lock and no read-modify-write instruction (the cells are relaxed
 * atomics written as load+store, which is what lets the progress thread read
 * them concurrently without a data race). At the end the threads'
 * histograms are merged with bench_hist_add.
 *
 * What it is not: not a general HdrHistogram port (no auto-resize, no
 * coordinated-omission correction, no serialisation), and not thread-safe
 * for several writers.
 */
#include "hist.h"

#include <stdlib.h>

/* Single-writer increment: a plain load and store, no lock prefix. Only the
 * owning thread writes, so no update is lost. */
static inline void cell_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t cell_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

/* Number of bits needed to hold v (0 for 0). */
static int bit_length(uint64_t v)
{
    return v == 0 ? 0 : 64 - __builtin_clzll(v);
}

/* HdrHistogram's get_bucket_index: which power-of-two bucket v falls in.
 * OR-ing the mask makes every value below the first bucket's top land in
 * bucket 0. */
static int32_t bucket_index(const bench_hist *h, int64_t v)
{
    int pow2ceiling = bit_length((uint64_t)v | (uint64_t)h->sub_bucket_mask);
    return pow2ceiling - h->unit_magnitude -
           (h->sub_bucket_half_count_magnitude + 1);
}

static int32_t sub_bucket_index(const bench_hist *h, int64_t v, int32_t b)
{
    return (int32_t)((uint64_t)v >> (b + h->unit_magnitude));
}

static int32_t counts_index(const bench_hist *h, int32_t b, int32_t sb)
{
    /* Bucket 0 uses all its sub-buckets; later buckets only their upper
     * half (the lower half would duplicate the previous bucket). */
    int32_t base = (b + 1) << h->sub_bucket_half_count_magnitude;
    return base + (sb - h->sub_bucket_half_count);
}

static int32_t index_for(const bench_hist *h, int64_t v)
{
    int32_t b = bucket_index(h, v);
    return counts_index(h, b, sub_bucket_index(h, v, b));
}

static int64_t value_from_index(const bench_hist *h, int32_t b, int32_t sb)
{
    return (int64_t)((uint64_t)sb << (b + h->unit_magnitude));
}

/* Lowest value held in cell i (inverse of index_for). */
static int64_t value_at_index(const bench_hist *h, int32_t i)
{
    int32_t b = (i >> h->sub_bucket_half_count_magnitude) - 1;
    int32_t sb = (i & (h->sub_bucket_half_count - 1)) + h->sub_bucket_half_count;
    if (b < 0) {
        sb -= h->sub_bucket_half_count;
        b = 0;
    }
    return value_from_index(h, b, sb);
}

static int64_t equivalent_range(const bench_hist *h, int64_t v)
{
    int32_t b = bucket_index(h, v);
    int32_t sb = sub_bucket_index(h, v, b);
    int32_t adjusted = sb >= h->sub_bucket_count ? b + 1 : b;
    return (int64_t)1 << (h->unit_magnitude + adjusted);
}

int64_t bench_hist_lowest_equivalent(const bench_hist *h, int64_t v)
{
    int32_t b = bucket_index(h, v);
    return value_from_index(h, b, sub_bucket_index(h, v, b));
}

int64_t bench_hist_highest_equivalent(const bench_hist *h, int64_t v)
{
    return bench_hist_lowest_equivalent(h, v) + equivalent_range(h, v) - 1;
}

int bench_hist_init(bench_hist *h, int64_t lowest, int64_t highest,
                    int sig_digits)
{
    bench_hist z = {0};
    *h = z;
    if (lowest < 1 || sig_digits < 1 || sig_digits > 5 || highest < 2 * lowest ||
        highest > INT64_MAX / 4)
        return -1;

    int64_t largest_single_unit = 2;
    for (int i = 0; i < sig_digits; i++)
        largest_single_unit *= 10;
    int sub_bucket_count_magnitude = bit_length((uint64_t)largest_single_unit - 1);

    h->lowest = lowest;
    h->highest = highest;
    h->sig_digits = sig_digits;
    h->unit_magnitude = bit_length((uint64_t)lowest) - 1;
    h->sub_bucket_half_count_magnitude =
        (sub_bucket_count_magnitude > 1 ? sub_bucket_count_magnitude : 1) - 1;
    h->sub_bucket_count = (int32_t)1 << (h->sub_bucket_half_count_magnitude + 1);
    h->sub_bucket_half_count = h->sub_bucket_count / 2;
    h->sub_bucket_mask = ((int64_t)h->sub_bucket_count - 1) << h->unit_magnitude;

    /* Buckets needed so that the top of the last bucket exceeds highest. */
    int64_t smallest_untrackable = (int64_t)h->sub_bucket_count << h->unit_magnitude;
    int32_t buckets = 1;
    while (smallest_untrackable <= highest) {
        smallest_untrackable <<= 1;
        buckets++;
    }
    h->bucket_count = buckets;
    h->counts_len = (buckets + 1) * h->sub_bucket_half_count;

    h->counts = calloc((size_t)h->counts_len, sizeof(*h->counts));
    if (!h->counts)
        return -1;
    bench_hist_reset(h);
    return 0;
}

void bench_hist_deinit(bench_hist *h)
{
    free(h->counts);
    h->counts = NULL;
    h->counts_len = 0;
}

void bench_hist_reset(bench_hist *h)
{
    for (int32_t i = 0; i < h->counts_len; i++)
        atomic_store_explicit(&h->counts[i], 0, memory_order_relaxed);
    atomic_store_explicit(&h->total, 0, memory_order_relaxed);
    atomic_store_explicit(&h->clamped, 0, memory_order_relaxed);
    atomic_store_explicit(&h->min, INT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&h->max, 0, memory_order_relaxed);
    atomic_store_explicit(&h->sum, 0, memory_order_relaxed);
}

void bench_hist_record(bench_hist *h, int64_t value)
{
    if (value < 0)
        value = 0;
    int64_t v = value;
    if (v > h->highest) {
        v = h->highest;
        cell_add(&h->clamped, 1);
    }
    cell_add(&h->counts[index_for(h, v)], 1);
    cell_add(&h->total, 1);
    cell_add(&h->sum, (uint64_t)value);
    if (value < atomic_load_explicit(&h->min, memory_order_relaxed))
        atomic_store_explicit(&h->min, value, memory_order_relaxed);
    if (value > atomic_load_explicit(&h->max, memory_order_relaxed))
        atomic_store_explicit(&h->max, value, memory_order_relaxed);
}

static int same_config(const bench_hist *a, const bench_hist *b)
{
    return a->lowest == b->lowest && a->highest == b->highest &&
           a->sig_digits == b->sig_digits && a->counts_len == b->counts_len;
}

int bench_hist_add(bench_hist *dst, const bench_hist *src)
{
    if (!same_config(dst, src))
        return -1;
    /* Sum the cells first and derive the total from them, so a snapshot of
     * a live histogram is self-consistent (total == sum of cells) even
     * though the writer keeps going while we read. */
    uint64_t n = 0;
    for (int32_t i = 0; i < src->counts_len; i++) {
        uint64_t c = cell_get(&src->counts[i]);
        if (c) {
            cell_add(&dst->counts[i], c);
            n += c;
        }
    }
    cell_add(&dst->total, n);
    cell_add(&dst->clamped, cell_get(&src->clamped));
    cell_add(&dst->sum, cell_get(&src->sum));
    int64_t smin = atomic_load_explicit((_Atomic int64_t *)&src->min, memory_order_relaxed);
    int64_t smax = atomic_load_explicit((_Atomic int64_t *)&src->max, memory_order_relaxed);
    if (smin < atomic_load_explicit(&dst->min, memory_order_relaxed))
        atomic_store_explicit(&dst->min, smin, memory_order_relaxed);
    if (smax > atomic_load_explicit(&dst->max, memory_order_relaxed))
        atomic_store_explicit(&dst->max, smax, memory_order_relaxed);
    return 0;
}

int bench_hist_sub(bench_hist *dst, const bench_hist *src)
{
    if (!same_config(dst, src))
        return -1;
    uint64_t n = 0;
    int32_t first = -1, last = -1;
    for (int32_t i = 0; i < dst->counts_len; i++) {
        uint64_t d = cell_get(&dst->counts[i]);
        uint64_t s = cell_get(&src->counts[i]);
        uint64_t r = d > s ? d - s : 0;
        atomic_store_explicit(&dst->counts[i], r, memory_order_relaxed);
        n += r;
        if (r) {
            if (first < 0)
                first = i;
            last = i;
        }
    }
    /* The exact extremes of the interval are unknowable; the bounds of its
     * first and last non-empty cells are the best we have, within the
     * histogram's precision. */
    if (first < 0) {
        atomic_store_explicit(&dst->min, INT64_MAX, memory_order_relaxed);
        atomic_store_explicit(&dst->max, 0, memory_order_relaxed);
    } else {
        atomic_store_explicit(&dst->min, value_at_index(dst, first), memory_order_relaxed);
        atomic_store_explicit(&dst->max,
                              bench_hist_highest_equivalent(dst, value_at_index(dst, last)),
                              memory_order_relaxed);
    }
    uint64_t dsum = cell_get(&dst->sum), ssum = cell_get(&src->sum);
    uint64_t dcl = cell_get(&dst->clamped), scl = cell_get(&src->clamped);
    atomic_store_explicit(&dst->total, n, memory_order_relaxed);
    atomic_store_explicit(&dst->sum, dsum > ssum ? dsum - ssum : 0, memory_order_relaxed);
    atomic_store_explicit(&dst->clamped, dcl > scl ? dcl - scl : 0, memory_order_relaxed);
    return 0;
}

uint64_t bench_hist_count(const bench_hist *h)
{
    return cell_get(&h->total);
}

int64_t bench_hist_percentile(const bench_hist *h, double p)
{
    uint64_t total = 0;
    for (int32_t i = 0; i < h->counts_len; i++)
        total += cell_get(&h->counts[i]);
    if (total == 0)
        return 0;
    if (p > 100.0)
        p = 100.0;
    if (p < 0.0)
        p = 0.0;
    /* ceil(p/100 * total), at least 1: the rank of the value we want. */
    double want_d = p / 100.0 * (double)total;
    uint64_t want = (uint64_t)want_d;
    if ((double)want < want_d)
        want++;
    if (want < 1)
        want = 1;
    if (want > total)
        want = total;

    int64_t mn = atomic_load_explicit((_Atomic int64_t *)&h->min, memory_order_relaxed);
    int64_t mx = atomic_load_explicit((_Atomic int64_t *)&h->max, memory_order_relaxed);
    /* The last rank is the exact max, even when it was clamped into the
     * top cell. */
    if (want == total)
        return mx;
    uint64_t seen = 0;
    for (int32_t i = 0; i < h->counts_len; i++) {
        seen += cell_get(&h->counts[i]);
        if (seen >= want) {
            int64_t v = bench_hist_highest_equivalent(h, value_at_index(h, i));
            /* The exact extremes are known; never report past them. */
            if (v > mx)
                v = mx;
            if (v < mn)
                v = mn;
            return v;
        }
    }
    return mx;
}

double bench_hist_mean(const bench_hist *h)
{
    uint64_t n = cell_get(&h->total);
    if (n == 0)
        return 0.0;
    return (double)cell_get(&h->sum) / (double)n;
}

size_t bench_hist_memory(const bench_hist *h)
{
    return (size_t)h->counts_len * sizeof(*h->counts);
}
