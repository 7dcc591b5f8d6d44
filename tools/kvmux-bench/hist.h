/* kvmux-bench latency histogram: log-linear buckets in constant memory, in
 * the manner of HdrHistogram (Gil Tene). See hist.c for the design. */
#ifndef KVMUX_BENCH_HIST_H
#define KVMUX_BENCH_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Invariants (after a successful bench_hist_init):
 * - counts has counts_len cells; every recorded value lands in exactly one
 *   cell, so total == sum(counts) once writers are quiescent.
 * - A cell covers [lowest_equivalent(v), highest_equivalent(v)], a range no
 *   wider than v / 10^sig_digits (relative error bound).
 * - Single writer: only the owning thread records. The cells are atomics
 *   updated with relaxed load + store (a plain mov on x86, no lock prefix),
 *   so another thread may read a consistent-enough snapshot for progress
 *   output without a data race. */
typedef struct bench_hist {
    int64_t lowest;             /* lowest discernible value (>= 1) */
    int64_t highest;            /* highest trackable value; larger clamp */
    int sig_digits;             /* 1..5 significant decimal digits */
    int unit_magnitude;         /* floor(log2(lowest)) */
    int sub_bucket_half_count_magnitude;
    int32_t sub_bucket_count;   /* power of two >= 2 * 10^sig_digits */
    int32_t sub_bucket_half_count;
    int64_t sub_bucket_mask;
    int32_t bucket_count;
    int32_t counts_len;
    _Atomic uint64_t *counts;   /* owned; counts_len cells */
    _Atomic uint64_t total;     /* values recorded */
    _Atomic uint64_t clamped;   /* of those, values above highest */
    _Atomic int64_t min;        /* exact; INT64_MAX while empty */
    _Atomic int64_t max;        /* exact (before clamping); 0 while empty */
    _Atomic uint64_t sum;       /* exact sum of recorded values (after
                                   clamping negatives to 0; wraps only
                                   past 1.8e19) */
} bench_hist;

/* Prepare h to record values in [lowest, highest] with sig_digits
 * significant digits (HdrHistogram's parameters). Allocates the counts
 * once; recording never allocates.
 * Returns 0, or -1 if a parameter is out of range (lowest < 1, highest <
 * 2 * lowest, sig_digits outside 1..5) or memory is short (h is then left
 * with counts == NULL and must not be used). Thread-safe: no. */
int bench_hist_init(bench_hist *h, int64_t lowest, int64_t highest,
                    int sig_digits);

/* Free the counts. h may be zeroed or already deinitialised. */
void bench_hist_deinit(bench_hist *h);

/* Clear every count (same configuration). Thread-safe: no. */
void bench_hist_reset(bench_hist *h);

/* Record one value. Values below lowest land in the first cell (their exact
 * value still updates min); values above highest are counted in the last
 * cell and in `clamped` (max keeps the exact value). Negative values count
 * as 0. Never allocates, never locks. Thread-safe: single writer; readers
 * (bench_hist_add from another thread) see a slightly stale snapshot. */
void bench_hist_record(bench_hist *h, int64_t value);

/* dst += src. Both must have been initialised with the same parameters.
 * Returns 0, or -1 if the configurations differ (dst unchanged).
 * Thread-safe: dst single-writer (the caller), src may be live. */
int bench_hist_add(bench_hist *dst, const bench_hist *src);

/* dst -= src, cell by cell, for "what happened since the last snapshot".
 * Requires src <= dst in every cell (src an earlier snapshot of the same
 * stream); cells that would go negative become 0. min/max cannot be
 * un-merged, so they become the bounds of the first and last non-empty
 * cells (exact within the precision). Returns 0 or -1 on a config
 * mismatch. */
int bench_hist_sub(bench_hist *dst, const bench_hist *src);

/* Number of values recorded. */
uint64_t bench_hist_count(const bench_hist *h);

/* The value at percentile p (0 < p <= 100): the highest value equivalent to
 * the cell holding the ceil(p/100 * count)-th smallest recorded value,
 * clamped to [min, max] so p100 is the exact max. 0 when empty. */
int64_t bench_hist_percentile(const bench_hist *h, double p);

/* Mean of the recorded values (exact, from the running sum); 0 when empty. */
double bench_hist_mean(const bench_hist *h);

/* Smallest and largest values that share v's cell. Exposed for tests and
 * for callers who want to print the precision. */
int64_t bench_hist_lowest_equivalent(const bench_hist *h, int64_t v);
int64_t bench_hist_highest_equivalent(const bench_hist *h, int64_t v);

/* Bytes of counts memory this histogram holds. */
size_t bench_hist_memory(const bench_hist *h);

#endif /* KVMUX_BENCH_HIST_H */
