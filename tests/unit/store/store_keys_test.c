/* Unit tests for src/server/store_ttl.c and store_scan.c: EXISTS, TTL,
 * EXPIRE and PERSIST (statuses, versions, waiters fired or not, the
 * journal records that make them durable, values kept byte for byte,
 * out of memory), and SCAN: complete over a quiet store, bounded replies,
 * prefixes, bad cursors, and the guarantee -- every key present for the
 * whole scan is returned -- while the tables grow and keys come and go
 * between steps (seeded, many rounds) and from another thread during the
 * scan (for TSan). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "testutil.h"

static _Atomic uint64_t fake_now = 1000;
static uint64_t fake_clock(void *ud) {
    (void)ud;
    return atomic_load(&fake_now);
}

static int nfired;
static void on_fire(kvmux_store_waiter *w, void *ud) {
    (void)w;
    (void)ud;
    nfired++;
}

/* Journal records seen (the store calls this under its shard lock). */
static int njournal;
static kvmux_store_record last_rec;
static void on_journal(void *ud, const kvmux_store_record *r) {
    (void)ud;
    njournal++;
    last_rec = *r;
}

static int fail_alloc_at; /* 0 = never; else fail the Nth allocation */
static int alloc_count;
static void *test_alloc(void *ud, size_t n) {
    (void)ud;
    if (fail_alloc_at && ++alloc_count >= fail_alloc_at) return NULL;
    return malloc(n);
}
static void test_dealloc(void *ud, void *p) {
    (void)ud;
    free(p);
}

#define K(s) (const uint8_t *)(s), strlen(s)

/* The stores' SipHash key. Bucket layouts, and so how many keys one home
 * bucket holds, follow from it, so a fixed key makes every run the same
 * run (a random one once made test_scan_full's 40-byte reply too small
 * for a 7-key bucket, 2 keys in 3,000 tried). KVMUX_TEST_SEED=random
 * draws a fresh key per store, to explore other layouts, and prints
 * each one before the checks that use it. */
static uint8_t hash_key[16] = "kvmux-store-keys";
static int random_keys;

static kvmux_store *new_store(uint32_t shards) {
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    if (random_keys) {
        printf("store hash key:");
        for (size_t i = 0; i < sizeof hash_key; i++) {
            hash_key[i] = (uint8_t)rand();
            printf(" %02x", hash_key[i]);
        }
        printf("\n");
    }
    o.hash_key = hash_key;
    o.shards = shards;
    o.clock = fake_clock;
    o.fire = on_fire;
    o.alloc = test_alloc;
    o.dealloc = test_dealloc;
    kvmux_store *s = NULL;
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    return s;
}

typedef struct readbuf {
    uint8_t data[1024];
    size_t len;
} readbuf;
static int read_into(void *ud, uint64_t version, const uint8_t *v, size_t len) {
    (void)version;
    readbuf *rb = ud;
    if (len > sizeof rb->data) return KVMUX_STATUS_TOO_LARGE;
    if (len) memcpy(rb->data, v, len);
    rb->len = len;
    return 0;
}

static void test_exists_ttl(void) {
    kvmux_store *s = new_store(4);
    uint64_t v = 0, v1 = 0, left = 99;
    CHECK_EQ(kvmux_store_exists(s, K("a"), &v), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_ttl(s, K("a"), &v, &left), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_set(s, K("a"), K("x"), 0, &v1), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_exists(s, K("a"), &v), KVMUX_STATUS_OK);
    CHECK_EQ(v, v1);
    CHECK_EQ(kvmux_store_ttl(s, K("a"), &v, &left), KVMUX_STATUS_OK);
    CHECK_EQ(left, 0); /* no expiry */
    CHECK_EQ(kvmux_store_set(s, K("b"), K("y"), 1500, &v1), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_ttl(s, K("b"), &v, &left), KVMUX_STATUS_OK);
    CHECK_EQ(left, 1500);
    CHECK_EQ(v, v1);
    atomic_fetch_add(&fake_now, 1499);
    CHECK_EQ(kvmux_store_ttl(s, K("b"), NULL, &left), KVMUX_STATUS_OK);
    CHECK_EQ(left, 1);
    atomic_fetch_add(&fake_now, 1);
    CHECK_EQ(kvmux_store_ttl(s, K("b"), NULL, &left), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_exists(s, K("b"), NULL), KVMUX_STATUS_NOT_FOUND);
    /* A WAIT placeholder for an absent key is not a key. */
    kvmux_store_waiter w;
    memset(&w, 0, sizeof w);
    CHECK_EQ(kvmux_store_wait(s, K("c"), 0, &w, NULL, NULL), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_exists(s, K("c"), NULL), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_expire(s, K("c"), 10, NULL), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_wait_cancel(s, &w, NULL), 1);
    kvmux_store_free(s);
}

static void test_expire_persist(void) {
    kvmux_store *s = new_store(4);
    kvmux_store_set_journal(s, on_journal, NULL);
    uint64_t v0 = 0, v = 0, left = 0;
    CHECK_EQ(kvmux_store_expire(s, K("k"), 100, &v), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_persist(s, K("k"), &v), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_set(s, K("k"), K("hello"), 0, &v0), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_expire(s, K("k"), 0, &v), KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(kvmux_store_expire(s, K("k"), KVMUX_MAX_TTL_MS + 1, &v), KVMUX_STATUS_BAD_REQUEST);

    /* EXPIRE is a write: new version, waiters fired, one EXPIRY record
     * (key, version, expiry: no value, so the log does not repeat it). */
    kvmux_store_waiter w;
    memset(&w, 0, sizeof w);
    CHECK_EQ(kvmux_store_wait(s, K("k"), v0, &w, NULL, NULL), KVMUX_STORE_PARKED);
    int fired0 = nfired, j0 = njournal;
    uint64_t now = atomic_load(&fake_now);
    CHECK_EQ(kvmux_store_expire(s, K("k"), 500, &v), KVMUX_STATUS_OK);
    CHECK(v > v0);
    CHECK_EQ(nfired, fired0 + 1);
    CHECK_EQ(njournal, j0 + 1);
    CHECK_EQ(last_rec.op, KVMUX_STORE_REC_EXPIRY);
    CHECK_EQ(last_rec.version, v);
    CHECK_EQ(last_rec.expires_ms, now + 500);
    CHECK(last_rec.vlen == 0 && last_rec.value == NULL);
    CHECK(last_rec.klen == 1 && memcmp(last_rec.key, "k", 1) == 0);
    CHECK_EQ(kvmux_store_ttl(s, K("k"), NULL, &left), KVMUX_STATUS_OK);
    CHECK_EQ(left, 500);
    readbuf rb;
    CHECK_EQ(kvmux_store_get(s, K("k"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == 5 && memcmp(rb.data, "hello", 5) == 0);

    /* EXPIRE again (same entry layout: rewritten in place). */
    uint64_t v2 = 0;
    CHECK_EQ(kvmux_store_expire(s, K("k"), 300, &v2), KVMUX_STATUS_OK);
    CHECK(v2 > v);
    CHECK_EQ(kvmux_store_get(s, K("k"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == 5 && memcmp(rb.data, "hello", 5) == 0);

    /* PERSIST drops the TTL: a write again. */
    j0 = njournal;
    uint64_t v3 = 0;
    CHECK_EQ(kvmux_store_persist(s, K("k"), &v3), KVMUX_STATUS_OK);
    CHECK(v3 > v2);
    CHECK_EQ(njournal, j0 + 1);
    CHECK_EQ(last_rec.op, KVMUX_STORE_REC_EXPIRY);
    CHECK_EQ(last_rec.version, v3);
    CHECK_EQ(last_rec.expires_ms, 0);
    CHECK_EQ(kvmux_store_ttl(s, K("k"), NULL, &left), KVMUX_STATUS_OK);
    CHECK_EQ(left, 0);
    atomic_fetch_add(&fake_now, 10000);
    CHECK_EQ(kvmux_store_exists(s, K("k"), NULL), KVMUX_STATUS_OK);

    /* PERSIST without a TTL: nothing changes at all. */
    memset(&w, 0, sizeof w);
    CHECK_EQ(kvmux_store_wait(s, K("k"), v3, &w, NULL, NULL), KVMUX_STORE_PARKED);
    fired0 = nfired;
    j0 = njournal;
    uint64_t v4 = 0;
    CHECK_EQ(kvmux_store_persist(s, K("k"), &v4), KVMUX_STATUS_OK);
    CHECK_EQ(v4, v3);
    CHECK_EQ(nfired, fired0);
    CHECK_EQ(njournal, j0);
    CHECK_EQ(kvmux_store_wait_cancel(s, &w, NULL), 1);

    /* The key expires on its new schedule. */
    CHECK_EQ(kvmux_store_expire(s, K("k"), 50, NULL), KVMUX_STATUS_OK);
    atomic_fetch_add(&fake_now, 50);
    CHECK_EQ(kvmux_store_exists(s, K("k"), NULL), KVMUX_STATUS_NOT_FOUND);

    /* A large (out-of-line) value keeps its bytes through EXPIRE and
     * PERSIST; the maximum TTL is accepted. */
    uint8_t big[600];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
    CHECK_EQ(kvmux_store_set(s, K("big"), big, sizeof big, 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_expire(s, K("big"), KVMUX_MAX_TTL_MS, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_ttl(s, K("big"), NULL, &left), KVMUX_STATUS_OK);
    CHECK_EQ(left, KVMUX_MAX_TTL_MS);
    CHECK_EQ(kvmux_store_get(s, K("big"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == sizeof big && memcmp(rb.data, big, sizeof big) == 0);
    CHECK_EQ(kvmux_store_persist(s, K("big"), NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get(s, K("big"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == sizeof big && memcmp(rb.data, big, sizeof big) == 0);

    /* Out of memory: the entry grows by the TTL word, so EXPIRE on a key
     * without one needs an allocation; failing it leaves the key as it
     * was and logs nothing. */
    /* (A 500-byte key: the entry is past the slab classes, so its new
     * layout is a fresh allocation from the hook.) */
    uint8_t mkey[500];
    memset(mkey, 'm', sizeof mkey);
    CHECK_EQ(kvmux_store_set(s, mkey, sizeof mkey, K("v"), 0, &v0), KVMUX_STATUS_OK);
    j0 = njournal;
    alloc_count = 0;
    fail_alloc_at = 1;
    CHECK_EQ(kvmux_store_expire(s, mkey, sizeof mkey, 100, &v), KVMUX_STATUS_INTERNAL);
    fail_alloc_at = 0;
    CHECK_EQ(njournal, j0);
    CHECK_EQ(kvmux_store_ttl(s, mkey, sizeof mkey, &v, &left), KVMUX_STATUS_OK);
    CHECK_EQ(v, v0);
    CHECK_EQ(left, 0);
    kvmux_store_free(s);
}

/* ---- SCAN ---- */

/* Keys "k<i>" for i < n; seen[i] counts how often key i was returned. */
typedef struct scan_acc {
    uint32_t *seen;
    uint32_t n;
    uint32_t keys;    /* this step */
    size_t bytes;     /* this step */
    uint32_t foreign; /* keys outside 0..n-1 (extra keys) */
    uint32_t bad;     /* keys not matching the prefix asked for */
    const char *prefix;
} scan_acc;

static int scan_collect(void *ud, const uint8_t *key, size_t klen) {
    scan_acc *a = ud;
    if (!key) return 0; /* end of a bucket */
    a->keys++;
    a->bytes += 2 + klen;
    size_t pl = a->prefix ? strlen(a->prefix) : 0;
    if (pl && (klen < pl || memcmp(key, a->prefix, pl) != 0)) a->bad++;
    char buf[32];
    if (klen < 2 || klen >= sizeof buf || key[0] != 'k') {
        a->foreign++;
        return 0;
    }
    memcpy(buf, key + 1, klen - 1);
    buf[klen - 1] = 0;
    char *end;
    unsigned long i = strtoul(buf, &end, 10);
    if (*end != 0 || i >= a->n) a->foreign++;
    else a->seen[i]++;
    return 0;
}

static void put_key(kvmux_store *s, const char *fmt, unsigned long i) {
    char k[32];
    int n = snprintf(k, sizeof k, fmt, i);
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)k, (size_t)n, K("v"), 0, NULL),
             KVMUX_STATUS_OK);
}

static void del_key(kvmux_store *s, const char *fmt, unsigned long i) {
    char k[32];
    int n = snprintf(k, sizeof k, fmt, i);
    kvmux_store_del(s, (const uint8_t *)k, (size_t)n);
}

static void test_scan_basic(void) {
    kvmux_store *s = new_store(8);
    uint64_t next = 99;
    scan_acc a = {0};
    uint32_t n = 2000;
    a.seen = calloc(n, sizeof *a.seen);
    a.n = n;
    REQUIRE(a.seen);
    /* Empty store: a few steps (every bucket of every shard is looked at,
     * bounded per step), then 0, and nothing returned. */
    uint64_t cur = 0;
    int steps = 0;
    do {
        CHECK_EQ(kvmux_store_scan(s, cur, NULL, 0, 10, 1 << 16, scan_collect, &a, &next),
                 KVMUX_STATUS_OK);
        cur = next;
    } while (cur != 0 && ++steps < 1000);
    CHECK_EQ(cur, 0);
    CHECK_EQ(a.keys, 0);

    for (uint32_t i = 0; i < n; i++) put_key(s, "k%lu", i);
    put_key(s, "other%lu", 1);
    /* An expired key is skipped. */
    CHECK_EQ(kvmux_store_set(s, K("kexp"), K("v"), 5, NULL), KVMUX_STATUS_OK);
    atomic_fetch_add(&fake_now, 5);

    /* Whole scan, count 7: every key exactly once (no resize happened),
     * each step within count plus one bucket. */
    cur = 0;
    steps = 0;
    uint32_t max_step = 0, total = 0;
    do {
        a.keys = 0;
        CHECK_EQ(kvmux_store_scan(s, cur, NULL, 0, 7, 1 << 16, scan_collect, &a, &next),
                 KVMUX_STATUS_OK);
        if (a.keys > max_step) max_step = a.keys;
        total += a.keys;
        cur = next;
    } while (cur != 0 && ++steps < 100000);
    CHECK_EQ(cur, 0);
    CHECK_EQ(total, n + 1); /* + "other1", not the expired key */
    CHECK_EQ(a.foreign, 1);
    uint32_t missing = 0, dup = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (a.seen[i] == 0) missing++;
        if (a.seen[i] > 1) dup++;
    }
    CHECK_EQ(missing, 0);
    CHECK_EQ(dup, 0);
    CHECK(max_step >= 7 && max_step < 7 + 16);
    printf("scan basic: %u keys in %d steps of count 7, largest step %u keys\n", total,
           steps + 1, max_step);

    /* Prefix: only matching keys; the byte budget bounds a step. */
    memset(a.seen, 0, n * sizeof *a.seen);
    a.prefix = "k1";
    a.foreign = 0;
    cur = 0;
    total = 0;
    steps = 0;
    do {
        a.keys = 0;
        CHECK_EQ(kvmux_store_scan(s, cur, K("k1"), 1000, 1 << 16, scan_collect, &a, &next),
                 KVMUX_STATUS_OK);
        total += a.keys;
        cur = next;
    } while (cur != 0 && ++steps < 100000);
    CHECK_EQ(a.bad, 0);
    CHECK_EQ(total, 1111); /* k1, k10..k19, k100..k199, k1000..k1999 */
    a.prefix = NULL;
    a.keys = 0;
    a.bytes = 0;
    CHECK_EQ(kvmux_store_scan(s, 0, NULL, 0, 1000, 60, scan_collect, &a, &next),
             KVMUX_STATUS_OK);
    CHECK(a.bytes >= 60 || next == 0);
    CHECK(a.keys < 60 / 4 + 16); /* stopped by bytes, not by count */
    CHECK(next != 0);

    /* A cursor naming a shard the store does not have. */
    CHECK_EQ(kvmux_store_scan(s, (uint64_t)8 << 48, NULL, 0, 10, 1000, scan_collect, &a, &next),
             KVMUX_STATUS_BAD_REQUEST);
    /* count 0 means the default, huge counts are capped. */
    a.keys = 0;
    CHECK_EQ(kvmux_store_scan(s, 0, NULL, 0, 0, 1 << 20, scan_collect, &a, &next),
             KVMUX_STATUS_OK);
    CHECK(a.keys >= KVMUX_SCAN_DEFAULT_COUNT && a.keys < KVMUX_SCAN_DEFAULT_COUNT + 16);
    a.keys = 0;
    CHECK_EQ(kvmux_store_scan(s, 0, NULL, 0, UINT32_MAX, 1 << 30, scan_collect, &a, &next),
             KVMUX_STATUS_OK);
    CHECK(a.keys >= KVMUX_SCAN_MAX_COUNT && a.keys < KVMUX_SCAN_MAX_COUNT + 16);
    free(a.seen);
    kvmux_store_free(s);
}

/* A collector with a hard cap, as the server's reply buffer: it refuses
 * the bucket that would pass cap, keeping only completed buckets. */
typedef struct capped {
    scan_acc *a;
    size_t cap, len, committed;
    uint32_t pending[64]; /* keys of the open bucket (indexes) */
    int npending;
    uint32_t refusals;
} capped;

static int capped_collect(void *ud, const uint8_t *key, size_t klen) {
    capped *c = ud;
    if (!key) {
        for (int i = 0; i < c->npending; i++) c->a->seen[c->pending[i]]++;
        c->npending = 0;
        c->committed = c->len;
        return 0;
    }
    if (c->len + 2 + klen > c->cap) {
        c->len = c->committed;
        c->npending = 0;
        c->refusals++;
        return KVMUX_STORE_SCAN_FULL;
    }
    c->len += 2 + klen;
    char buf[32];
    memcpy(buf, key + 1, klen - 1);
    buf[klen - 1] = 0;
    if (c->npending < 64) c->pending[c->npending++] = (uint32_t)strtoul(buf, NULL, 10);
    return 0;
}

/* A reply that fills up mid-bucket drops that bucket and resumes with
 * it: over a whole scan every key still comes back exactly once; a
 * bucket that fits no reply at all is TOO_LARGE. */
static void test_scan_full(void) {
    kvmux_store *s = new_store(2);
    uint32_t n = 500;
    scan_acc a = {0};
    a.seen = calloc(n, sizeof *a.seen);
    a.n = n;
    REQUIRE(a.seen);
    for (uint32_t i = 0; i < n; i++) put_key(s, "k%lu", i);
    capped c = {.a = &a, .cap = 40};
    uint64_t cur = 0, next = 0;
    int steps = 0;
    do {
        c.len = c.committed = 0;
        CHECK_EQ(kvmux_store_scan(s, cur, NULL, 0, 1000, 1 << 20, capped_collect, &c, &next),
                 KVMUX_STATUS_OK);
        CHECK(c.len <= c.cap);
        cur = next;
    } while (cur != 0 && ++steps < 100000);
    uint32_t missing = 0, dup = 0;
    for (uint32_t i = 0; i < n; i++) {
        missing += a.seen[i] == 0;
        dup += a.seen[i] > 1;
    }
    CHECK_EQ(missing, 0);
    CHECK_EQ(dup, 0);
    CHECK(c.refusals > 0);
    /* Room for less than one key: the first bucket with a key fails. */
    c.cap = 3;
    int rc = KVMUX_STATUS_OK;
    cur = 0;
    for (int i = 0; i < 1000 && rc == KVMUX_STATUS_OK; i++) {
        c.len = c.committed = 0;
        rc = kvmux_store_scan(s, cur, NULL, 0, 10, 1 << 20, capped_collect, &c, &next);
        cur = next;
    }
    CHECK_EQ(rc, KVMUX_STATUS_TOO_LARGE);
    free(a.seen);
    kvmux_store_free(s);
}

/* xorshift64*: the property test's rounds are reproducible from a seed. */
static uint64_t rnd(uint64_t *x) {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * UINT64_C(2685821657736338717);
}

/* The guarantee under growth and churn, between steps: per round, a store
 * with `base` keys that stay, a scan with a random count, and between
 * every two steps a random batch of extra keys inserted (the tables
 * double several times during the scan) and some deleted. Every base key
 * must come back. */
static void test_scan_property(void) {
    uint64_t x = 0x9E3779B97F4A7C15u;
    const int rounds = 40;
    uint32_t total_missing = 0, total_dup = 0, total_steps = 0;
    for (int r = 0; r < rounds; r++) {
        kvmux_store *s = new_store(1u << (rnd(&x) % 4)); /* 1..8 shards */
        uint32_t base = 50 + (uint32_t)(rnd(&x) % 400);
        scan_acc a = {0};
        a.seen = calloc(base, sizeof *a.seen);
        a.n = base;
        REQUIRE(a.seen);
        for (uint32_t i = 0; i < base; i++) put_key(s, "k%lu", i);
        uint32_t count = 1 + (uint32_t)(rnd(&x) % 40);
        unsigned long extra = 0, extra_del = 0;
        uint64_t cur = 0, next = 0;
        int steps = 0;
        do {
            CHECK_EQ(kvmux_store_scan(s, cur, NULL, 0, count, 1 << 16, scan_collect, &a, &next),
                     KVMUX_STATUS_OK);
            cur = next;
            /* Churn: insert up to half the base per step until the
             * extras reach 16x the base (the tables double about four
             * times mid-scan), then as many deletes as inserts. */
            uint32_t add = (uint32_t)(rnd(&x) % (base / 2 + 1));
            for (uint32_t i = 0; i < add; i++) put_key(s, "x%lu", extra++);
            uint32_t del = extra - extra_del > 16ul * base ? add : (uint32_t)(rnd(&x) % (add / 2 + 1));
            for (uint32_t i = 0; i < del && extra_del < extra; i++) del_key(s, "x%lu", extra_del++);
        } while (cur != 0 && ++steps < 1000000);
        CHECK_EQ(cur, 0);
        for (uint32_t i = 0; i < base; i++) {
            if (a.seen[i] == 0) total_missing++;
            if (a.seen[i] > 1) total_dup++;
        }
        total_steps += (uint32_t)steps + 1;
        free(a.seen);
        kvmux_store_free(s);
    }
    CHECK_EQ(total_missing, 0);
    /* Tables only grow (or are swept at the same size), and in
     * reverse-binary order a doubled table's halves of a visited bucket
     * are both behind the cursor: no base key comes back twice either.
     * (A plain increasing cursor returns thousands twice here.) */
    CHECK_EQ(total_dup, 0);
    printf("scan property: %d rounds, %u steps, base keys missing %u, returned twice %u\n",
           rounds, total_steps, total_missing, total_dup);
}

/* The same from another thread: a writer inserts and deletes extra keys
 * (forcing resizes) while the main thread scans; base keys never move. */
typedef struct churn_arg {
    kvmux_store *s;
    atomic_int stop;
    atomic_ulong progress;   /* keys inserted so far */
    unsigned long inserted;
} churn_arg;

static void *churn_main(void *p) {
    churn_arg *c = p;
    unsigned long i = 0, d = 0;
    /* Grow to ~60k live extras, then churn at a constant size. */
    while (!atomic_load(&c->stop) && i < 2000000) {
        put_key(c->s, "x%lu", i++);
        if (i % 3 == 0 || i - d > 60000) del_key(c->s, "x%lu", d++);
        atomic_store(&c->progress, i);
    }
    c->inserted = i;
    return NULL;
}

static void test_scan_concurrent(void) {
    uint32_t base = 3000, missing = 0, dup = 0;
    for (int round = 0; round < 3; round++) {
        /* A fresh store each round, so the tables start small and grow
         * while the scan runs. */
        kvmux_store *s = new_store(4);
        for (uint32_t i = 0; i < base; i++) put_key(s, "k%lu", i);
        scan_acc a = {0};
        a.seen = calloc(base, sizeof *a.seen);
        a.n = base;
        REQUIRE(a.seen);
        churn_arg c = {.s = s};
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, churn_main, &c) == 0);
        /* Scan while the writer is at work (bounded wait: it inserts
         * thousands of keys per millisecond). */
        for (int w = 0; w < 5000 && atomic_load(&c.progress) < 200; w++) usleep(1000);
        uint64_t cur = 0, next = 0;
        int steps = 0;
        do {
            CHECK_EQ(kvmux_store_scan(s, cur, NULL, 0, 5, 1 << 16, scan_collect, &a, &next),
                     KVMUX_STATUS_OK);
            cur = next;
        } while (cur != 0 && ++steps < 10000000);
        atomic_store(&c.stop, 1);
        pthread_join(t, NULL);
        for (uint32_t i = 0; i < base; i++) {
            if (a.seen[i] == 0) missing++;
            if (a.seen[i] > 1) dup++;
        }
        printf("scan concurrent round %d: %d steps while %lu keys were inserted\n", round,
               steps + 1, c.inserted);
        free(a.seen);
        kvmux_store_free(s);
    }
    CHECK_EQ(missing, 0);
    CHECK_EQ(dup, 0);
}

int main(void) {
    const char *seed = getenv("KVMUX_TEST_SEED");
    if (seed && strcmp(seed, "random") == 0) {
        random_keys = 1;
        srand((unsigned)time(NULL) ^ (unsigned)getpid());
    }
    test_exists_ttl();
    test_expire_persist();
    test_scan_basic();
    test_scan_full();
    test_scan_property();
    test_scan_concurrent();
    return test_report();
}
