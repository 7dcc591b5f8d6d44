/* Unit test of kvmux-bench's latency histogram (tools/kvmux-bench/hist.c).
 *
 * Known distributions go in; the percentiles that come out must match the
 * exact order statistics within the histogram's stated precision (a cell is
 * never wider than value / 10^sig_digits, so with 2 digits the error is
 * under 1%). Also: cell boundaries are consistent with the index math,
 * merging equals recording everything in one histogram, snapshot
 * subtraction, clamping above the top, and bad parameters. */
#include "hist.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#define NS_PER_US 1000LL
#define SIXTY_S (60LL * 1000 * 1000 * 1000)

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Exact p-th percentile of a sorted array with the same rank rule the
 * histogram uses: the ceil(p/100 * n)-th smallest value. */
static int64_t exact_pct(const int64_t *sorted, size_t n, double p)
{
    double r = p / 100.0 * (double)n;
    size_t rank = (size_t)r;
    if ((double)rank < r)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

/* |got - want| must fit inside want's cell: got is the highest equivalent
 * of the cell holding want, so got >= want and got - want < want / 100. */
static int within_precision(const bench_hist *h, int64_t got, int64_t want)
{
    return got >= bench_hist_lowest_equivalent(h, want) &&
           got <= bench_hist_highest_equivalent(h, want);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void)
{
    /* splitmix64: deterministic, so failures reproduce. */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void check_distribution(const char *name, int64_t *vals, size_t n)
{
    bench_hist h;
    REQUIRE(bench_hist_init(&h, 1, SIXTY_S, 2) == 0);
    for (size_t i = 0; i < n; i++)
        bench_hist_record(&h, vals[i]);
    qsort(vals, n, sizeof(*vals), cmp_i64);
    CHECK_EQ(bench_hist_count(&h), n);

    static const double ps[] = {1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        int64_t want = exact_pct(vals, n, ps[i]);
        int64_t got = bench_hist_percentile(&h, ps[i]);
        int ok = within_precision(&h, got, want);
        if (!ok)
            fprintf(stderr, "%s p%g: got %lld want %lld\n", name, ps[i],
                    (long long)got, (long long)want);
        CHECK(ok);
        /* The documented bound, stated independently of the cell math. */
        CHECK(got >= want && (double)(got - want) <= (double)want / 100.0 + 1.0);
    }
    CHECK_EQ(bench_hist_percentile(&h, 100), vals[n - 1]);
    CHECK_EQ(atomic_load(&h.min), vals[0]);
    CHECK_EQ(atomic_load(&h.max), vals[n - 1]);

    long double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (long double)vals[i];
    double mean = (double)(sum / (long double)n);
    CHECK(bench_hist_mean(&h) > mean - 0.001 && bench_hist_mean(&h) < mean + 0.001);
    bench_hist_deinit(&h);
}

static void test_layout(void)
{
    bench_hist h;
    REQUIRE(bench_hist_init(&h, 1, SIXTY_S, 2) == 0);
    /* 2 digits -> 256 sub-buckets; 60 s in ns needs 36 bits. */
    CHECK_EQ(h.sub_bucket_count, 256);
    CHECK_EQ(h.sub_bucket_half_count, 128);
    CHECK(bench_hist_memory(&h) < 64 * 1024);

    /* Small values are exact. */
    for (int64_t v = 0; v < 256; v++) {
        CHECK_EQ(bench_hist_lowest_equivalent(&h, v), v);
        CHECK_EQ(bench_hist_highest_equivalent(&h, v), v);
    }
    /* Everywhere: v lies in its own cell, the cell is narrow enough, and
     * cells tile the line (the next cell starts right after this one). */
    int bad = 0;
    for (int64_t v = 1; v < SIXTY_S; v = v + 1 + v / 37) {
        int64_t lo = bench_hist_lowest_equivalent(&h, v);
        int64_t hi = bench_hist_highest_equivalent(&h, v);
        if (!(lo <= v && v <= hi))
            bad++;
        if ((double)(hi - lo + 1) > (double)v / 100.0 + 1.0)
            bad++;
        if (bench_hist_lowest_equivalent(&h, hi + 1) != hi + 1)
            bad++;
    }
    CHECK_EQ(bad, 0);

    /* A non-unit lowest value: cells start at multiples of 2^9 = 512. */
    bench_hist u;
    REQUIRE(bench_hist_init(&u, 1000, SIXTY_S, 2) == 0);
    CHECK_EQ(u.unit_magnitude, 9);
    CHECK_EQ(bench_hist_lowest_equivalent(&u, 1000), 512);
    CHECK(bench_hist_memory(&u) < bench_hist_memory(&h));
    bench_hist_deinit(&u);
    bench_hist_deinit(&h);
}

static void test_bad_params(void)
{
    bench_hist h;
    CHECK(bench_hist_init(&h, 0, 1000, 2) == -1);
    CHECK(bench_hist_init(&h, 1, 1, 2) == -1);
    CHECK(bench_hist_init(&h, 1, 1000, 0) == -1);
    CHECK(bench_hist_init(&h, 1, 1000, 6) == -1);
    CHECK(h.counts == NULL);
    bench_hist_deinit(&h); /* safe on a failed init */
}

static void test_empty_and_single(void)
{
    bench_hist h;
    REQUIRE(bench_hist_init(&h, 1, SIXTY_S, 2) == 0);
    CHECK_EQ(bench_hist_count(&h), 0);
    CHECK_EQ(bench_hist_percentile(&h, 50), 0);
    CHECK(bench_hist_mean(&h) == 0.0);

    bench_hist_record(&h, 123456);
    /* One value: every percentile is that value exactly (min/max clamp). */
    CHECK_EQ(bench_hist_percentile(&h, 0.001), 123456);
    CHECK_EQ(bench_hist_percentile(&h, 50), 123456);
    CHECK_EQ(bench_hist_percentile(&h, 100), 123456);

    bench_hist_reset(&h);
    CHECK_EQ(bench_hist_count(&h), 0);
    bench_hist_record(&h, -5); /* negative counts as 0 */
    CHECK_EQ(bench_hist_percentile(&h, 50), 0);
    bench_hist_deinit(&h);
}

static void test_clamp(void)
{
    bench_hist h;
    REQUIRE(bench_hist_init(&h, 1, 1000000, 2) == 0);
    for (int i = 0; i < 98; i++)
        bench_hist_record(&h, 100);
    bench_hist_record(&h, 5000000);   /* above highest */
    bench_hist_record(&h, 7000000);
    CHECK_EQ(bench_hist_count(&h), 100);
    CHECK_EQ(atomic_load(&h.clamped), 2);
    CHECK_EQ(bench_hist_percentile(&h, 50), 100);
    /* p99 lands in the clamped top cell: reported at the top of the range,
     * not beyond it; p100 is the exact max. */
    int64_t p99 = bench_hist_percentile(&h, 99);
    CHECK(p99 >= 1000000 && p99 <= bench_hist_highest_equivalent(&h, 1000000));
    CHECK_EQ(bench_hist_percentile(&h, 100), 7000000);
    bench_hist_deinit(&h);
}

static void test_merge_and_sub(void)
{
    bench_hist a, b, all, merged, snap;
    REQUIRE(bench_hist_init(&a, 1, SIXTY_S, 2) == 0);
    REQUIRE(bench_hist_init(&b, 1, SIXTY_S, 2) == 0);
    REQUIRE(bench_hist_init(&all, 1, SIXTY_S, 2) == 0);
    REQUIRE(bench_hist_init(&merged, 1, SIXTY_S, 2) == 0);
    REQUIRE(bench_hist_init(&snap, 1, SIXTY_S, 2) == 0);

    for (int i = 0; i < 20000; i++) {
        int64_t v = (int64_t)(rng_next() % 5000000);
        bench_hist_record(i % 3 ? &a : &b, v);
        bench_hist_record(&all, v);
    }
    CHECK_EQ(bench_hist_add(&merged, &a), 0);
    CHECK_EQ(bench_hist_add(&merged, &b), 0);
    CHECK_EQ(bench_hist_count(&merged), bench_hist_count(&all));
    CHECK(memcmp(merged.counts, all.counts, bench_hist_memory(&all)) == 0);
    CHECK_EQ(atomic_load(&merged.min), atomic_load(&all.min));
    CHECK_EQ(atomic_load(&merged.max), atomic_load(&all.max));
    CHECK_EQ(atomic_load(&merged.sum), atomic_load(&all.sum));
    CHECK_EQ(bench_hist_percentile(&merged, 99), bench_hist_percentile(&all, 99));

    /* Snapshot now, add 1000 more values all equal to 42 us, and the
     * difference holds exactly those. */
    CHECK_EQ(bench_hist_add(&snap, &all), 0);
    for (int i = 0; i < 1000; i++)
        bench_hist_record(&all, 42 * NS_PER_US);
    bench_hist diff;
    REQUIRE(bench_hist_init(&diff, 1, SIXTY_S, 2) == 0);
    CHECK_EQ(bench_hist_add(&diff, &all), 0);
    CHECK_EQ(bench_hist_sub(&diff, &snap), 0);
    CHECK_EQ(bench_hist_count(&diff), 1000);
    CHECK(within_precision(&diff, bench_hist_percentile(&diff, 50), 42 * NS_PER_US));
    CHECK(within_precision(&diff, bench_hist_percentile(&diff, 99.9), 42 * NS_PER_US));

    /* Mismatched configurations are refused and leave dst unchanged. */
    bench_hist other;
    REQUIRE(bench_hist_init(&other, 1, 1000000, 3) == 0);
    bench_hist_record(&other, 5);
    CHECK_EQ(bench_hist_add(&merged, &other), -1);
    CHECK_EQ(bench_hist_count(&merged), 20000);
    CHECK_EQ(bench_hist_sub(&merged, &other), -1);

    bench_hist_deinit(&other);
    bench_hist_deinit(&diff);
    bench_hist_deinit(&a);
    bench_hist_deinit(&b);
    bench_hist_deinit(&all);
    bench_hist_deinit(&merged);
    bench_hist_deinit(&snap);
}

int main(void)
{
    test_layout();
    test_bad_params();
    test_empty_and_single();
    test_clamp();
    test_merge_and_sub();

    enum { N = 200000 };
    int64_t *vals = malloc(N * sizeof(*vals));
    REQUIRE(vals != NULL);

    /* Uniform 1 us .. 100 ms. */
    for (size_t i = 0; i < N; i++)
        vals[i] = NS_PER_US + (int64_t)(rng_next() % (100000 * NS_PER_US));
    check_distribution("uniform", vals, N);

    /* Constant: every percentile is the value itself. */
    for (size_t i = 0; i < N; i++)
        vals[i] = 37 * NS_PER_US;
    check_distribution("constant", vals, N);

    /* Bimodal: 95% at ~20 us, 5% at ~5 ms, so p90 and p99 sit in different
     * modes, the shape of a fast path with occasional stalls. */
    for (size_t i = 0; i < N; i++) {
        int slow = rng_next() % 100 < 5;
        vals[i] = slow ? 5000 * NS_PER_US + (int64_t)(rng_next() % 1000000)
                       : 20 * NS_PER_US + (int64_t)(rng_next() % 2000);
    }
    check_distribution("bimodal", vals, N);

    /* Long tail: value = 2^k ns for random k in 0..35 (1 ns .. ~34 s), the
     * full range of the histogram. */
    for (size_t i = 0; i < N; i++)
        vals[i] = (int64_t)1 << (rng_next() % 36);
    check_distribution("powers-of-two", vals, N);

    free(vals);
    return test_report();
}
