/* Mixed-operation model test: one kvmux_client shared by many threads, every
 * result checked against an exact model.
 *
 * Design: concurrency makes a single global model ambiguous, so each thread
 * owns a private key range ("t<tid>:k<n>", KEYS_PER_THREAD keys) whose model
 * it alone updates: every GET/SET/DEL/INCR/CAS reply on those keys has
 * exactly one right answer (value, version, status). On top of that a few
 * shared counter keys are INCRed by every thread with positive deltas; the
 * checks there are the ones that survive interleaving: each thread sees its
 * own INCR results strictly increase, and the final value equals the sum of
 * all deltas. Versions come from one store-wide counter (docs/DESIGN.md), so
 * for every key each write's version must exceed every version seen before
 * for that key, across DEL and re-create too (no ABA).
 *
 * Scale: 64 threads x 10,000 ops by default; KVMUX_TEST_SCALE multiplies
 * the op count (a TSan build defaults to 0.1). KVMUX_TEST_SEED fixes the
 * PRNG seed, which is printed at the start.
 *
 * What it is not: a protocol conformance test (raw frames live in the fault
 * tests) or a benchmark (the ops/s line is informational).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>

#include "kvmux.h"
#include "testutil.h"

#define NTHREADS 64
#define OPS_PER_THREAD 10000
#define KEYS_PER_THREAD 16
#define NSHARED 4
#define MAX_VAL 300
#define CALL_TIMEOUT_MS 30000
#define MAX_REPORTS 40

/* The model of one private key. Invariant: exists == 0 implies len == 0
 * and version == 0. last_version is the highest version ever seen for the
 * key (kept across DEL to check that versions never repeat). */
typedef struct mkey {
    int exists;
    uint64_t version;
    uint64_t last_version;
    size_t len;
    uint8_t val[MAX_VAL];
} mkey;

typedef struct worker {
    int tid;
    uint64_t rng;
    long ops;
    kvmux_client *c;
    mkey keys[KEYS_PER_THREAD];
    int64_t shared_last[NSHARED];   /* last INCR result seen per shared key */
    uint64_t shared_lastv[NSHARED]; /* last version seen per shared key */
    long counts[8];                 /* ops done by kind, for the summary */
} worker;

static atomic_llong shared_sum[NSHARED];
static atomic_int reports;
static kvmux_client *g_client;
static pthread_barrier_t g_start;

/* Record one check; on failure print a formatted explanation (at most
 * MAX_REPORTS of them, so a systematic bug does not flood the log). */
static void mcheck(int ok, const worker *w, const char *fmt, ...) {
    if (ok) {
        atomic_fetch_add(&test_passed, 1);
        return;
    }
    atomic_fetch_add(&test_failed, 1);
    if (atomic_fetch_add(&reports, 1) >= MAX_REPORTS) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "thread %d op %ld: ", w ? w->tid : -1, w ? w->ops : -1L);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* xorshift64*: cheap, per-thread, reproducible from the seed. */
static uint64_t rnd(worker *w) {
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 2685821657736338717ULL;
}

/* Uniform-enough integer in [0, n) for n > 0. */
static unsigned rnd_below(worker *w, unsigned n) { return (unsigned)(rnd(w) % n); }


/* The name of thread tid's private key k ("t<tid>:k<k>") into buf. */
static int keyname(char *buf, size_t cap, int tid, int k) {
    return snprintf(buf, cap, "t%d:k%d", tid, k);
}

/* Fill m with a fresh value: usually random text (never a valid integer:
 * it starts with 'v'), sometimes a canonical decimal integer so INCR has
 * something to work on, rarely a number close to INT64_MAX. */
static void make_value(worker *w, uint8_t *out, size_t *len) {
    unsigned kind = rnd_below(w, 10);
    if (kind < 3) {
        long long n = (long long)(rnd(w) % 2000000) - 1000000;
        *len = (size_t)snprintf((char *)out, MAX_VAL, "%lld", n);
    } else if (kind == 3) {
        long long n = INT64_MAX - (long long)rnd_below(w, 50);
        *len = (size_t)snprintf((char *)out, MAX_VAL, "%lld", n);
    } else {
        size_t n = 1 + rnd_below(w, kind == 9 ? MAX_VAL - 1 : 40);
        out[0] = 'v';
        for (size_t i = 1; i < n; i++) out[i] = (uint8_t)('a' + rnd_below(w, 26));
        *len = n;
    }
}

/* Parse a canonical decimal i64 ("-12", "0", "345"): the only form make_value
 * and INCR produce. Returns 1 and *out on success. */
static int parse_i64(const uint8_t *p, size_t len, int64_t *out) {
    char buf[32];
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, p, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != 0) return 0;
    char canon[32];
    snprintf(canon, sizeof canon, "%lld", v);
    if (strcmp(canon, buf) != 0) return 0;
    *out = v;
    return 1;
}

/* A write to key k returned version v: it must exceed every version seen
 * for k so far. */
static void note_write(worker *w, int k, uint64_t v, const char *op) {
    mkey *m = &w->keys[k];
    mcheck(v > m->last_version, w, "%s t%d:k%d: version %" PRIu64
           " not above previous %" PRIu64, op, w->tid, k, v, m->last_version);
    if (v > m->last_version) m->last_version = v;
    m->version = v;
    m->exists = 1;
}

/* GET private key k: NOT_FOUND if the model says absent, else exactly
 * the model's value and version (and a NUL after the value). */
static void op_get(worker *w, int k, const char *key) {
    kvmux_value *v = NULL;
    int rc = kvmux_get(w->c, key, strlen(key), &v, CALL_TIMEOUT_MS);
    mkey *m = &w->keys[k];
    if (!m->exists) {
        mcheck(rc == KVMUX_ENOTFOUND, w, "GET %s: want ENOTFOUND, got %d (%s)",
               key, rc, kvmux_strerror(rc));
    } else {
        mcheck(rc == 0, w, "GET %s: want OK, got %d (%s)", key, rc, kvmux_strerror(rc));
        if (rc == 0) {
            mcheck(v && v->len == m->len && memcmp(v->data, m->val, m->len) == 0,
                   w, "GET %s: value mismatch (len %zu vs model %zu)", key,
                   v ? v->len : 0, m->len);
            mcheck(v && v->version == m->version, w,
                   "GET %s: version %" PRIu64 " vs model %" PRIu64, key,
                   v ? v->version : 0, m->version);
            mcheck(v && v->data[v->len] == 0, w, "GET %s: value not NUL-terminated", key);
        }
    }
    kvmux_value_free(v);
}

/* SET private key k to a fresh value; the version must be new. */
static void op_set(worker *w, int k, const char *key) {
    uint8_t val[MAX_VAL];
    size_t len;
    make_value(w, val, &len);
    uint64_t ver = 0;
    int rc = kvmux_set(w->c, key, strlen(key), val, len, 0, &ver, CALL_TIMEOUT_MS);
    mcheck(rc == 0, w, "SET %s: got %d (%s)", key, rc, kvmux_strerror(rc));
    if (rc != 0) return;
    mkey *m = &w->keys[k];
    note_write(w, k, ver, "SET");
    memcpy(m->val, val, len);
    m->len = len;
}

/* DEL private key k: OK if it exists, NOT_FOUND if not. */
static void op_del(worker *w, int k, const char *key) {
    int rc = kvmux_del(w->c, key, strlen(key), CALL_TIMEOUT_MS);
    mkey *m = &w->keys[k];
    if (m->exists) {
        mcheck(rc == 0, w, "DEL %s (exists): got %d (%s)", key, rc, kvmux_strerror(rc));
    } else {
        mcheck(rc == KVMUX_ENOTFOUND, w, "DEL %s (absent): want ENOTFOUND, got %d (%s)",
               key, rc, kvmux_strerror(rc));
    }
    m->exists = 0;
    m->version = 0;
    m->len = 0;
}

/* INCR private key k by a random delta (either sign): NOT_INTEGER on
 * text, OVERFLOW past i64 (value unchanged), else the exact sum. */
static void op_incr(worker *w, int k, const char *key) {
    mkey *m = &w->keys[k];
    int64_t delta = (int64_t)rnd_below(w, 2001) - 1000;
    int64_t result = 0;
    int rc = kvmux_incr(w->c, key, strlen(key), delta, &result, CALL_TIMEOUT_MS);
    int64_t cur = 0;
    if (m->exists && !parse_i64(m->val, m->len, &cur)) {
        mcheck(rc == KVMUX_ENOTINT, w, "INCR %s on '%.*s': want ENOTINT, got %d (%s)",
               key, (int)(m->len > 20 ? 20 : m->len), (const char *)m->val, rc,
               kvmux_strerror(rc));
        return;
    }
    /* Absent keys count as 0 (and INCR creates them). */
    int overflow = (delta > 0 && cur > INT64_MAX - delta) ||
                   (delta < 0 && cur < INT64_MIN - delta);
    if (overflow) {
        mcheck(rc == KVMUX_EOVERFLOW, w, "INCR %s %lld by %lld: want EOVERFLOW, got %d (%s)",
               key, (long long)cur, (long long)delta, rc, kvmux_strerror(rc));
        return;
    }
    mcheck(rc == 0, w, "INCR %s: got %d (%s)", key, rc, kvmux_strerror(rc));
    if (rc != 0) return;
    mcheck(result == cur + delta, w, "INCR %s: %lld + %lld gave %lld", key,
           (long long)cur, (long long)delta, (long long)result);
    m->len = (size_t)snprintf((char *)m->val, MAX_VAL, "%lld", (long long)(cur + delta));
    /* kvmux_incr does not return the version: learn it through a GET, which
     * also proves the stored text is the canonical decimal. */
    kvmux_value *v = NULL;
    rc = kvmux_get(w->c, key, strlen(key), &v, CALL_TIMEOUT_MS);
    mcheck(rc == 0 && v && v->len == m->len && memcmp(v->data, m->val, m->len) == 0, w,
           "GET after INCR %s: rc %d, value '%s' vs model '%.*s'", key, rc,
           v ? (const char *)v->data : "(null)", (int)m->len, (const char *)m->val);
    if (rc == 0 && v) note_write(w, k, v->version, "INCR");
    kvmux_value_free(v);
}

/* INCR through kvmux_call, which also reports the new version. */
static void op_incr_via_call(worker *w, int k, const char *key) {
    /* Same as op_incr but through kvmux_call, which reports the version. */
    mkey *m = &w->keys[k];
    int64_t cur = 0;
    int64_t delta = (int64_t)rnd_below(w, 100) + 1;
    if ((m->exists && !parse_i64(m->val, m->len, &cur)) || cur > INT64_MAX - delta) {
        op_incr(w, k, key); /* the error paths are op_incr's business */
        return;
    }
    kvmux_request rq = {.op = KVMUX_INCR, .key = key, .key_len = strlen(key), .delta = delta};
    kvmux_reply rp;
    int rc = kvmux_call(w->c, &rq, &rp, CALL_TIMEOUT_MS);
    mcheck(rc == 0, w, "call INCR %s: got %d (%s)", key, rc, kvmux_strerror(rc));
    if (rc != 0) return;
    mcheck(rp.number == cur + delta, w, "call INCR %s: %lld + %lld gave %lld", key,
           (long long)cur, (long long)delta, (long long)rp.number);
    m->len = (size_t)snprintf((char *)m->val, MAX_VAL, "%lld", (long long)(cur + delta));
    note_write(w, k, rp.version, "INCR(call)");
    kvmux_reply_free(&rp);
}

/* CAS private key k with the right version (applies, new version) or a
 * wrong one (VERSION_MISMATCH with the current version; NOT_FOUND when the
 * key is absent and expected != 0). */
static void op_cas(worker *w, int k, const char *key) {
    mkey *m = &w->keys[k];
    uint8_t val[MAX_VAL];
    size_t len;
    make_value(w, val, &len);
    int right = rnd_below(w, 3) != 0;
    uint64_t expected = right ? m->version : (m->exists ? m->version + 1 + rnd_below(w, 1000) : 0);
    if (!right && !m->exists) {
        /* Wrong version for an absent key: any non-zero version. */
        expected = 1 + rnd_below(w, 1000000);
    }
    if (!right && m->exists && rnd_below(w, 2) == 0) expected = 0; /* "create if absent" */
    uint64_t ver = 0;
    int rc = kvmux_cas(w->c, key, strlen(key), expected, val, len, 0, &ver, CALL_TIMEOUT_MS);
    if (right) {
        mcheck(rc == 0, w, "CAS %s expected %" PRIu64 " (right): got %d (%s)", key,
               expected, rc, kvmux_strerror(rc));
        if (rc != 0) return;
        note_write(w, k, ver, "CAS");
        memcpy(m->val, val, len);
        m->len = len;
    } else if (m->exists) {
        mcheck(rc == KVMUX_EVERSION, w, "CAS %s expected %" PRIu64 " (wrong, current %"
               PRIu64 "): got %d (%s)", key, expected, m->version, rc, kvmux_strerror(rc));
        mcheck(rc != KVMUX_EVERSION || ver == m->version, w,
               "CAS %s mismatch reported current %" PRIu64 ", model %" PRIu64, key, ver,
               m->version);
    } else {
        /* Absent key, non-zero expected version: NOT_FOUND (the store's
         * contract, src/server/store.h). */
        mcheck(rc == KVMUX_ENOTFOUND, w,
               "CAS %s (absent) expected %" PRIu64 ": want ENOTFOUND, got %d (%s)",
               key, expected, rc, kvmux_strerror(rc));
    }
}

/* INCR a shared counter by a positive delta and record it in the global
 * sum; this thread's successive results and versions must increase. */
static void op_shared(worker *w) {
    int s = (int)rnd_below(w, NSHARED);
    char key[32];
    snprintf(key, sizeof key, "shared:c%d", s);
    int64_t delta = (int64_t)rnd_below(w, 100) + 1;
    kvmux_request rq = {.op = KVMUX_INCR, .key = key, .key_len = strlen(key), .delta = delta};
    kvmux_reply rp;
    int rc = kvmux_call(w->c, &rq, &rp, CALL_TIMEOUT_MS);
    mcheck(rc == 0, w, "shared INCR %s: got %d (%s)", key, rc, kvmux_strerror(rc));
    if (rc != 0) return;
    atomic_fetch_add(&shared_sum[s], delta);
    mcheck(rp.number >= w->shared_last[s] + delta, w,
           "shared INCR %s: result %lld, but this thread saw %lld before (+%lld)", key,
           (long long)rp.number, (long long)w->shared_last[s], (long long)delta);
    mcheck(rp.version > w->shared_lastv[s], w,
           "shared INCR %s: version %" PRIu64 " not above %" PRIu64, key, rp.version,
           w->shared_lastv[s]);
    w->shared_last[s] = rp.number;
    w->shared_lastv[s] = rp.version;
    kvmux_reply_free(&rp);
}

static long g_ops;

/* One thread: g_ops random operations, then a final check of every
 * private key against the model. */
static void *worker_main(void *arg) {
    worker *w = arg;
    pthread_barrier_wait(&g_start);
    char key[64];
    for (w->ops = 0; w->ops < g_ops; w->ops++) {
        int k = (int)rnd_below(w, KEYS_PER_THREAD);
        keyname(key, sizeof key, w->tid, k);
        unsigned r = rnd_below(w, 100);
        int kind;
        if (r < 28) kind = 0, op_get(w, k, key);
        else if (r < 50) kind = 1, op_set(w, k, key);
        else if (r < 60) kind = 2, op_del(w, k, key);
        else if (r < 72) kind = 3, op_incr(w, k, key);
        else if (r < 78) kind = 4, op_incr_via_call(w, k, key);
        else if (r < 93) kind = 5, op_cas(w, k, key);
        else kind = 6, op_shared(w);
        w->counts[kind]++;
    }
    /* Final sweep: every private key matches the model. */
    for (int k = 0; k < KEYS_PER_THREAD; k++) {
        keyname(key, sizeof key, w->tid, k);
        op_get(w, k, key);
    }
    return NULL;
}

/* Start kvmuxd, run NTHREADS workers on one client, check the shared
 * counters against the sum of all deltas, stop the server cleanly. */
int main(void) {
    double scale = test_scale();
    g_ops = (long)(OPS_PER_THREAD * scale);
    if (g_ops < 10) g_ops = 10;
    const char *seed_s = getenv("KVMUX_TEST_SEED");
    uint64_t seed = seed_s ? strtoull(seed_s, NULL, 0) : (uint64_t)test_now_ms();
    printf("mixed_model_test: %d threads x %ld ops, seed %" PRIu64 "\n", NTHREADS, g_ops, seed);

    test_server srv;
    REQUIRE(test_server_start(&srv, NULL) == 0);
    kvmux_options o;
    kvmux_options_init(&o);
    o.client_name = "mixed_model_test";
    REQUIRE(kvmux_connect(&g_client, "127.0.0.1", srv.port, &o) == 0);

    /* Shared counters start from a known state. */
    for (int s = 0; s < NSHARED; s++) {
        char key[32];
        snprintf(key, sizeof key, "shared:c%d", s);
        CHECK(kvmux_set(g_client, key, strlen(key), "0", 1, 0, NULL, CALL_TIMEOUT_MS) == 0);
    }

    static worker ws[NTHREADS];
    pthread_t th[NTHREADS];
    REQUIRE(pthread_barrier_init(&g_start, NULL, NTHREADS + 1) == 0);
    for (int i = 0; i < NTHREADS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].tid = i;
        ws[i].c = g_client;
        ws[i].rng = (seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1))) | 1;
        REQUIRE(pthread_create(&th[i], NULL, worker_main, &ws[i]) == 0);
    }
    int64_t t0 = test_now_ms();
    pthread_barrier_wait(&g_start);
    /* Each call is bounded by CALL_TIMEOUT_MS, so the joins are bounded. */
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
    int64_t dt = test_now_ms() - t0;
    pthread_barrier_destroy(&g_start);

    long total = 0, kinds[8] = {0};
    for (int i = 0; i < NTHREADS; i++)
        for (int k = 0; k < 7; k++) kinds[k] += ws[i].counts[k], total += ws[i].counts[k];
    printf("ops: %ld in %lld ms (%.0f ops/s); get %ld set %ld del %ld incr %ld "
           "incr(call) %ld cas %ld shared %ld\n", total, (long long)dt,
           dt > 0 ? total * 1000.0 / (double)dt : 0.0, kinds[0], kinds[1], kinds[2],
           kinds[3], kinds[4], kinds[5], kinds[6]);

    for (int s = 0; s < NSHARED; s++) {
        char key[32];
        snprintf(key, sizeof key, "shared:c%d", s);
        kvmux_value *v = NULL;
        int rc = kvmux_get(g_client, key, strlen(key), &v, CALL_TIMEOUT_MS);
        CHECK_EQ(rc, 0);
        int64_t got = 0;
        CHECK(rc == 0 && parse_i64(v->data, v->len, &got));
        CHECK_EQ(got, atomic_load(&shared_sum[s]));
        kvmux_value_free(v);
    }
    CHECK_EQ(kvmux_connection_error(g_client, NULL, 0), 0);

    kvmux_close(g_client);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
    return test_report();
}
