/* lincheck_test: the linearizability checker (tests/replica/tools/lincheck.h)
 * on hand-made histories, each written in the checker's text format: bad
 * ones must be caught with the right kind (stale read, lost write, real-time
 * order, a write applied twice, an unknown-outcome write taken both ways,
 * ...), good ones (overlapping ops, unknown outcomes either way, DEL and
 * re-create, counters) must pass. Then a generated 100k-op history from a
 * simulated linearizable store with 64 processes, unknown outcomes and final
 * reads must pass (its check time is printed as a figure), and the same
 * history with one final read made stale must fail. No sockets. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"
#include "testutil.h"

/* Load text, check; returns lincheck_check's code (or 100 + line on a load
 * error) and fills *res. */
static int run(const char *text, lincheck_result *res, int verbose) {
    lincheck_history *h = lincheck_new();
    REQUIRE(h);
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    REQUIRE(f);
    char err[200];
    int rc = lincheck_load(h, f, err, sizeof err);
    fclose(f);
    if (rc != 0) {
        if (verbose) fprintf(stderr, "load: line %d: %s\n", rc, err);
        lincheck_free(h);
        memset(res, 0, sizeof *res);
        return 100 + rc;
    }
    rc = lincheck_check(h, res, verbose ? stderr : NULL, 10);
    lincheck_free(h);
    return rc;
}

static void expect_good(const char *name, const char *text) {
    lincheck_result r;
    int rc = run(text, &r, 1);
    if (rc != 0) fprintf(stderr, "good history '%s' rejected (rc %d)\n", name, rc);
    CHECK_EQ(rc, 0);
    CHECK_EQ(r.violations, 0);
}

static void expect_bad(const char *name, const char *text, lincheck_kind kind) {
    lincheck_result r;
    int rc = run(text, &r, 0);
    if (rc != 1 || r.by_kind[kind] == 0) {
        fprintf(stderr, "bad history '%s': rc %d, %" PRIu64 " %s (want > 0); report:\n", name, rc,
                r.by_kind[kind], lincheck_kind_name(kind));
        run(text, &r, 1);
    }
    CHECK_EQ(rc, 1);
    CHECK(r.by_kind[kind] > 0);
}

/* ---- bad histories ---- */

static void test_bad(void) {
    /* A read that began after v2 was acknowledged returns v1; a later write
     * follows, so this is not the final state: a stale read. */
    expect_bad("stale read",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "1 inv 300 set k b\n1 ok 400 set k 2\n"
               "2 inv 500 get k\n2 ok 600 get k 1 a\n"
               "1 inv 700 set k c\n1 ok 800 set k 3\n",
               LINCHECK_V_STALE_READ);
    /* Reads are monotonic too: once a read returned v2, a later read may
     * not return v1, even while the write of v2 is still in flight. */
    expect_bad("non-monotonic reads",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "1 inv 300 set k b\n"
               "2 inv 310 get k\n2 ok 320 get k 2 b\n"
               "3 inv 330 get k\n3 ok 340 get k 1 a\n"
               "1 ok 400 set k 2\n1 inv 500 set k c\n1 ok 600 set k 3\n",
               LINCHECK_V_STALE_READ);
    /* Acknowledged v2, and the final read (after every write ended) shows
     * v1: the write was lost (e.g. a failover discarded it). */
    expect_bad("lost write (older final state)",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "2 inv 150 set k b\n2 ok 400 set k 2\n"
               "3 inv 500 get k\n3 ok 600 get k 1 a\n",
               LINCHECK_V_LOST_WRITE);
    expect_bad("lost write (key gone, no DEL)",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "3 inv 500 get k\n3 fail 600 get k notfound\n",
               LINCHECK_V_LOST_WRITE);
    /* A write that began after another write was acknowledged got a lower
     * version: the server ordered them against real time. */
    expect_bad("real-time order",
               "1 inv 100 set k a\n1 ok 200 set k 5\n"
               "2 inv 300 set k b\n2 ok 400 set k 3\n",
               LINCHECK_V_REALTIME);
    /* The write of "a" (acknowledged at v1) is seen again at v3 after b
     * replaced it: applied twice (a retry that was not de-duplicated). */
    expect_bad("duplicate application (SET retried)",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "2 inv 300 set k b\n2 ok 400 set k 2\n"
               "3 inv 500 get k\n3 ok 600 get k 3 a\n",
               LINCHECK_V_DUPLICATE);
    expect_bad("duplicate version",
               "1 inv 100 set k a\n1 ok 200 set k 7\n"
               "2 inv 100 set k b\n2 ok 200 set k 7\n",
               LINCHECK_V_DUPLICATE);
    /* Two acknowledged INCRs of 1 and a final value of 3: one was applied
     * twice. Caught by the counter bound and by the INCR arithmetic. */
    expect_bad("duplicate application (INCR counted twice)",
               "1 inv 100 incr c 1\n1 ok 200 incr c 1 1\n"
               "1 inv 300 incr c 1\n1 ok 400 incr c 3 3\n"
               "2 inv 500 get c\n2 ok 600 get c 3 3\n",
               LINCHECK_V_COUNTER);
    expect_bad("INCR arithmetic",
               "1 inv 100 incr c 1\n1 ok 200 incr c 1 1\n"
               "1 inv 300 incr c 1\n1 ok 400 incr c 3 3\n",
               LINCHECK_V_INCR_VALUE);
    /* Even with an INCR of unknown outcome, 3 acknowledged + 1 unknown
     * cannot give 6 (lost and counted twice hide behind unknowns no more). */
    expect_bad("counter with unknowns",
               "1 inv 100 incr c 1\n1 ok 200 incr c 1 1\n"
               "1 inv 300 incr c 1\n1 ok 400 incr c 2 2\n"
               "1 inv 500 incr c 1\n1 ok 600 incr c 3 3\n"
               "2 inv 150 incr c 1\n2 info 700 incr c timeout\n"
               "3 inv 800 get c\n3 ok 900 get c 9 6\n",
               LINCHECK_V_COUNTER);
    expect_bad("counter lost INCR",
               "1 inv 100 incr c 1\n1 ok 200 incr c 1 1\n"
               "1 inv 300 incr c 1\n1 ok 400 incr c 2 2\n"
               "3 inv 800 get c\n3 ok 900 get c 1 1\n",
               LINCHECK_V_LOST_WRITE);
    /* An unknown-outcome write taken both ways: one read sees it applied
     * (v2), a later read sees the state before it (v1). */
    expect_bad("unknown write seen applied, then not",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "2 inv 300 set k x\n2 info 400 set k connection-lost\n"
               "3 inv 500 get k\n3 ok 600 get k 2 x\n"
               "4 inv 700 get k\n4 ok 800 get k 1 a\n"
               "1 inv 900 set k b\n1 ok 950 set k 3\n",
               LINCHECK_V_STALE_READ);
    expect_bad("unknown write applied at two versions",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "2 inv 300 set k x\n2 info 400 set k outcome-unknown\n"
               "3 inv 500 get k\n3 ok 600 get k 2 x\n"
               "1 inv 610 set k b\n1 ok 620 set k 3\n"
               "4 inv 700 get k\n4 ok 800 get k 4 x\n",
               LINCHECK_V_DUPLICATE);
    expect_bad("wrong value",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "2 inv 300 get k\n2 ok 400 get k 1 b\n",
               LINCHECK_V_WRONG_VALUE);
    expect_bad("phantom read",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "2 inv 300 get k\n2 ok 400 get k 2 zz\n",
               LINCHECK_V_PHANTOM_READ);
    expect_bad("failed write observed",
               "1 inv 100 set k a\n1 fail 200 set k not-leader\n"
               "2 inv 300 get k\n2 ok 400 get k 2 a\n",
               LINCHECK_V_PHANTOM_READ);
    expect_bad("CAS over a newer version",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "1 inv 300 set k b\n1 ok 400 set k 2\n"
               "2 inv 500 cas k 1 c\n2 ok 600 cas k 3\n",
               LINCHECK_V_CAS_ORDER);
    expect_bad("double delete",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "1 inv 300 del k\n1 ok 400 del k\n"
               "1 inv 500 del k\n1 ok 600 del k\n",
               LINCHECK_V_DOUBLE_DELETE);
    expect_bad("absent without DEL",
               "1 inv 100 set k a\n1 ok 200 set k 1\n"
               "2 inv 300 get k\n2 fail 400 get k notfound\n"
               "1 inv 500 set k b\n1 ok 600 set k 2\n",
               LINCHECK_V_ABSENT_READ);
}

/* ---- good histories ---- */

static void test_good(void) {
    /* Reads overlapping a write may see either side; each read's order is
     * fixed by its version. */
    expect_good("overlapping reads and writes",
                "1 inv 100 set k a\n1 ok 200 set k 1\n"
                "1 inv 300 set k b\n"
                "2 inv 310 get k\n"
                "3 inv 315 get k\n"
                "2 ok 320 get k 2 b\n"
                "3 ok 340 get k 1 a\n"
                "1 ok 400 set k 2\n"
                "4 inv 350 set k c\n4 ok 450 set k 3\n"
                "5 inv 500 get k\n5 ok 510 get k 3 c\n");
    /* Two concurrent writes may be ordered either way. */
    expect_good("concurrent writes, later one first",
                "1 inv 100 set k a\n2 inv 110 set k b\n"
                "2 ok 300 set k 4\n1 ok 310 set k 5\n"
                "3 inv 400 get k\n3 ok 410 get k 5 a\n");
    /* Unknown outcome, applied (a read sees it) or not (nobody does). */
    expect_good("unknown write applied",
                "1 inv 100 set k a\n1 ok 200 set k 1\n"
                "2 inv 300 set k x\n2 info 400 set k timeout\n"
                "3 inv 1000 get k\n3 ok 1100 get k 2 x\n");
    expect_good("unknown write applied late",
                "1 inv 100 set k a\n1 ok 200 set k 1\n"
                "2 inv 300 set k x\n2 info 400 set k timeout\n"
                "3 inv 500 get k\n3 ok 600 get k 1 a\n"
                "3 inv 700 get k\n3 ok 800 get k 2 x\n");
    expect_good("unknown write not applied",
                "1 inv 100 set k a\n1 ok 200 set k 1\n"
                "2 inv 300 set k x\n2 info 400 set k connection-lost\n"
                "3 inv 500 get k\n3 ok 600 get k 1 a\n");
    expect_good("invocation never completed",
                "1 inv 100 set k a\n1 ok 200 set k 1\n"
                "2 inv 300 set k x\n"
                "3 inv 500 get k\n3 ok 600 get k 2 x\n");
    expect_good("CAS, DEL, absent reads, re-create",
                "1 inv 100 cas k 0 a\n1 ok 200 cas k 1\n"
                "2 inv 300 cas k 0 b\n2 fail 350 cas k mismatch 1\n"
                "2 inv 400 cas k 1 c\n2 ok 450 cas k 2\n"
                "1 inv 500 del k\n1 ok 600 del k\n"
                "3 inv 550 get k\n3 ok 580 get k 2 c\n"
                "3 inv 700 get k\n3 fail 710 get k notfound\n"
                "3 inv 720 del k\n3 fail 730 del k notfound\n"
                "3 inv 740 cas k 2 d\n3 fail 750 cas k notfound\n"
                "1 inv 800 cas k 0 e\n1 ok 900 cas k 5\n"
                "1 inv 1000 get k\n1 ok 1100 get k 5 e\n");
    expect_good("absent read overlapping a DEL",
                "1 inv 100 set k a\n1 ok 200 set k 1\n"
                "1 inv 300 del k\n"
                "2 inv 310 get k\n2 fail 320 get k notfound\n"
                "1 ok 400 del k\n");
    expect_good("DEL of unknown outcome explains absence",
                "1 inv 100 set k a\n1 ok 200 set k 1\n"
                "1 inv 300 del k\n1 info 400 del k timeout\n"
                "2 inv 500 get k\n2 fail 600 get k notfound\n");
    expect_good("counter with unknown INCRs",
                "1 inv 100 incr c 1\n1 ok 200 incr c 1 1\n"
                "2 inv 150 incr c 1\n2 info 250 incr c timeout\n"
                "1 inv 300 incr c 1\n1 ok 400 incr c 3 4\n"
                "1 inv 500 incr c 5\n1 ok 600 incr c 8 9\n"
                "3 inv 700 get c\n3 ok 800 get c 9 8\n");
    expect_good("counter, unknown INCR not applied",
                "1 inv 100 incr c 1\n1 ok 200 incr c 1 1\n"
                "2 inv 150 incr c 1\n2 info 250 incr c timeout\n"
                "1 inv 300 incr c 1\n1 ok 400 incr c 2 4\n"
                "3 inv 700 get c\n3 ok 800 get c 4 2\n");
    expect_good("empty history", "# nothing\n");
}

static void test_format(void) {
    lincheck_result r;
    CHECK_EQ(run("1 inv 100 set k\n", &r, 0), 101);
    CHECK_EQ(run("1 inv 100 get k\n1 ok 90 get k 1 a\n", &r, 0), 102);
    CHECK_EQ(run("1 ok 100 get k 1 a\n", &r, 0), 101);
    CHECK_EQ(run("1 inv 100 get k\n1 ok 200 set k 1\n", &r, 0), 102);
    CHECK_EQ(run("1 inv 100 get k\n1 inv 150 get k\n", &r, 0), 102);
    CHECK_EQ(run("x inv 100 get k\n", &r, 0), 101);
    CHECK_EQ(run("1 inv 100 frob k\n", &r, 0), 101);
    CHECK_EQ(run("1 inv 100 cas k 1 v\n1 fail 200 cas k mismatch\n", &r, 0), 102);
    /* Values identify writes, so a repeated value is a history error. */
    CHECK_EQ(run("1 inv 100 set k a\n1 ok 200 set k 1\n1 inv 300 set k a\n1 ok 400 set k 2\n",
                 &r, 0), -1);
}

/* ---- a large generated history ---- */

typedef struct kstate { int present; uint64_t ver; char val[24]; int64_t num; } kstate;

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

#define NKEYS 1000
#define NCOUNTERS 200
#define NPROC 64

/* A simulated linearizable store: op i takes effect at time 100*i, is
 * invoked up to 40 ns before and completes up to 40 ns after (so ops of
 * different processes overlap and each process has one op at a time).
 * About 2% of writes end unknown; half of those are applied. Every key
 * gets a final read. Returns the history; *stale_key gets a key whose final
 * read can be made stale (v_prev, val_prev). */
static lincheck_history *gen(size_t nops, char *stale_key, uint64_t *prev_ver, char *prev_val) {
    lincheck_history *h = lincheck_new();
    REQUIRE(h);
    kstate *ks = calloc(NKEYS, sizeof *ks);
    REQUIRE(ks);
    uint64_t gver = 0, t = 1000;
    uint64_t last_prev_ver[NKEYS] = {0};
    char last_prev_val[NKEYS][24];
    for (size_t i = 0; i < nops; i++) {
        t += 100;
        uint32_t k = (uint32_t)(rnd() % NKEYS);
        kstate *s = &ks[k];
        char key[16], val[24];
        snprintf(key, sizeof key, "k%u", k);
        lincheck_op o = {.process = (uint32_t)(i % NPROC), .key = key};
        o.invoke_ns = t - rnd() % 40;
        o.complete_ns = t + rnd() % 40;
        o.outcome = LINCHECK_OK;
        int unknown = rnd() % 50 == 0, applies = !unknown || rnd() % 2;
        unsigned pick = (unsigned)(rnd() % 100);
        if (k < NCOUNTERS) {
            if (pick < 50) {
                o.op = LINCHECK_GET;
                if (!s->present) {
                    o.outcome = LINCHECK_FAIL;
                    o.observed = LINCHECK_SAW_NOTFOUND;
                } else {
                    snprintf(val, sizeof val, "%" PRId64, s->num);
                    o.value = val;
                    o.version = s->ver;
                }
            } else {
                o.op = LINCHECK_INCR;
                o.delta = (int64_t)(rnd() % 5) - 1;
                if (applies) {
                    s->present = 1;
                    s->num += o.delta;
                    s->ver = ++gver;
                    o.number = s->num;
                    o.version = s->ver;
                }
                if (unknown) o.outcome = LINCHECK_INFO;
            }
        } else if (pick < 45) {
            o.op = LINCHECK_GET;
            if (!s->present) {
                o.outcome = LINCHECK_FAIL;
                o.observed = LINCHECK_SAW_NOTFOUND;
            } else {
                o.value = s->val;
                o.version = s->ver;
            }
        } else if (pick < 80 || pick >= 95) {
            int cas = pick >= 95;
            snprintf(val, sizeof val, "v%zu", i);
            o.op = cas ? LINCHECK_CAS : LINCHECK_SET;
            o.value = val;
            o.expected = cas ? (rnd() % 4 ? s->ver : s->ver + 1) : 0;
            int mismatch = cas && o.expected != s->ver;
            if (mismatch && !unknown) {
                o.outcome = LINCHECK_FAIL;
                o.observed = s->present ? LINCHECK_SAW_MISMATCH : LINCHECK_SAW_NOTFOUND;
                o.version = s->present ? s->ver : 0;
            } else {
                if (applies && !mismatch) {
                    last_prev_ver[k] = s->ver;
                    memcpy(last_prev_val[k], s->val, sizeof s->val);
                    s->present = 1;
                    s->ver = ++gver;
                    memcpy(s->val, val, sizeof val);
                    o.version = s->ver;
                }
                if (unknown) o.outcome = LINCHECK_INFO;
            }
        } else {
            o.op = LINCHECK_DEL;
            if (!s->present && !unknown) {
                o.outcome = LINCHECK_FAIL;
                o.observed = LINCHECK_SAW_NOTFOUND;
            } else {
                if (applies) s->present = 0;
                if (unknown) o.outcome = LINCHECK_INFO;
            }
        }
        REQUIRE(lincheck_add(h, &o) == 0);
    }
    /* Final reads, after every op (ops of unknown outcome took effect at
     * their point, so they are settled too). */
    stale_key[0] = 0;
    for (uint32_t k = 0; k < NKEYS; k++) {
        t += 100;
        kstate *s = &ks[k];
        char key[16], val[24];
        snprintf(key, sizeof key, "k%u", k);
        lincheck_op o = {.process = k % NPROC, .key = key, .op = LINCHECK_GET,
                         .invoke_ns = t, .complete_ns = t + 10, .outcome = LINCHECK_OK};
        if (!s->present) {
            o.outcome = LINCHECK_FAIL;
            o.observed = LINCHECK_SAW_NOTFOUND;
        } else if (k < NCOUNTERS) {
            snprintf(val, sizeof val, "%" PRId64, s->num);
            o.value = val;
            o.version = s->ver;
        } else {
            o.value = s->val;
            o.version = s->ver;
            if (!stale_key[0] && last_prev_ver[k] && s->ver > 0) {
                strcpy(stale_key, key);
                *prev_ver = last_prev_ver[k];
                strcpy(prev_val, last_prev_val[k]);
            }
        }
        REQUIRE(lincheck_add(h, &o) == 0);
    }
    free(ks);
    return h;
}

static double now_ms(void) {
    return (double)test_now_ms();
}

static void test_large(void) {
    size_t n = (size_t)(100000 * (test_scale() < 1 ? 1 : test_scale()));
    char stale_key[16];
    uint64_t pv = 0;
    char pval[24];
    lincheck_history *h = gen(n, stale_key, &pv, pval);
    lincheck_result r;
    double t0 = now_ms();
    int rc = lincheck_check(h, &r, stderr, 10);
    double ms = now_ms() - t0;
    printf("lincheck_test: generated history: %" PRIu64 " ops, %" PRIu64 " keys, %" PRIu64
           " unknown (%" PRIu64 " placed by reads), checked in %.0f ms\n",
           r.ops, r.keys, r.unknown, r.unknown_applied, ms);
    CHECK_EQ(rc, 0);
    CHECK(r.unknown > 500);
    CHECK(r.unknown_applied > 50);

    /* Round trip through the text format: same verdict. */
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    REQUIRE(f);
    CHECK_EQ(lincheck_save(h, f), 0);
    fclose(f);
    lincheck_history *h2 = lincheck_new();
    f = fmemopen(buf, blen, "r");
    REQUIRE(f && h2);
    char err[200] = "";
    rc = lincheck_load(h2, f, err, sizeof err);
    if (rc) fprintf(stderr, "reload: line %d: %s\n", rc, err);
    CHECK_EQ(rc, 0);
    fclose(f);
    lincheck_result r2;
    t0 = now_ms();
    CHECK_EQ(lincheck_check(h2, &r2, stderr, 10), 0);
    printf("lincheck_test: saved (%zu bytes) and reloaded: %" PRIu64 " ops checked in %.0f ms\n",
           blen, r2.ops, now_ms() - t0);
    CHECK_EQ(r2.ops, r.ops);
    CHECK_EQ(r2.unknown_applied, r.unknown_applied);
    lincheck_free(h2);
    free(buf);

    /* The same history plus one more final read that returns an older
     * version: a lost write, found among 100k ops. */
    REQUIRE(stale_key[0]);
    lincheck_op o = {.process = 1, .key = stale_key, .op = LINCHECK_GET,
                     .invoke_ns = UINT64_MAX / 2, .complete_ns = UINT64_MAX / 2 + 5,
                     .outcome = LINCHECK_OK, .value = pval, .version = pv};
    REQUIRE(lincheck_add(h, &o) == 0);
    CHECK_EQ(lincheck_check(h, &r, NULL, 0), 1);
    CHECK_EQ(r.violations, 1);
    CHECK_EQ(r.by_kind[LINCHECK_V_LOST_WRITE], 1);
    lincheck_free(h);
}

int main(void) {
    test_bad();
    test_good();
    test_format();
    test_large();
    return test_report();
}
