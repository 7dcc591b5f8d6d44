/* Unit tests for src/server/store.c: every operation's statuses and
 * versions, INCR parsing and overflow, TTL expiry with an injected clock,
 * WAIT registration / fire / cancel (including placeholders for absent
 * keys), growth to many keys, writers on 4 threads (versions unique,
 * INCR exact), and refcounted values: installed without copying, kept
 * whole by a reader's reference across overwrites, dropped exactly once
 * (also by threads racing writers, for TSan). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "siphash.h"
#include "store.h"
#include "testutil.h"

static _Atomic uint64_t fake_now = 1000;
static uint64_t fake_clock(void *ud) {
    (void)ud;
    return atomic_load(&fake_now);
}

/* Records fired waiters (the store calls this under its shard lock). */
#define MAX_FIRED 64
static kvmux_store_waiter *fired[MAX_FIRED];
static int nfired;
static void on_fire(kvmux_store_waiter *w, void *ud) {
    (void)ud;
    if (nfired < MAX_FIRED) fired[nfired++] = w;
}

typedef struct readbuf {
    uint64_t version;
    uint8_t data[1024];
    size_t len;
    int calls;
} readbuf;

static int read_into(void *ud, uint64_t version, const uint8_t *v, size_t len) {
    readbuf *rb = ud;
    rb->version = version;
    rb->calls++;
    if (len > sizeof rb->data) return KVMUX_STATUS_TOO_LARGE;
    if (len) memcpy(rb->data, v, len);
    rb->len = len;
    return 0;
}

#define K(s) (const uint8_t *)(s), strlen(s)

static kvmux_store *new_store(uint32_t shards) {
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = shards;
    o.clock = fake_clock;
    o.fire = on_fire;
    kvmux_store *s = NULL;
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    return s;
}

/* SipHash-2-4 reference vectors (Aumasson & Bernstein, key 00..0f,
 * message 00..len-1). */
static void test_siphash(void) {
    uint8_t k[16], m[64];
    for (int i = 0; i < 16; i++) k[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++) m[i] = (uint8_t)i;
    CHECK(kvmux_siphash24(k, m, 0) == 0x726fdb47dd0e0e31ULL);
    CHECK(kvmux_siphash24(k, m, 1) == 0x74f839c593dc67fdULL);
    CHECK(kvmux_siphash24(k, m, 8) == 0x93f5f5799a932462ULL);
    CHECK(kvmux_siphash24(k, m, 15) == 0xa129ca6149be45e5ULL);
    CHECK(kvmux_siphash24(k, m, 63) == 0x958a324ceb064572ULL);
    uint8_t r1[16], r2[16];
    CHECK_EQ(kvmux_random_bytes(r1, sizeof r1), 0);
    CHECK_EQ(kvmux_random_bytes(r2, sizeof r2), 0);
    CHECK(memcmp(r1, r2, sizeof r1) != 0);
}

static void test_options(void) {
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    kvmux_store *s = NULL;
    o.shards = 3;
    CHECK_EQ(kvmux_store_new(&s, &o), -1);
    CHECK(s == NULL);
    o.shards = 0;
    CHECK_EQ(kvmux_store_new(&s, &o), -1);
    o.shards = 1;
    CHECK_EQ(kvmux_store_new(&s, &o), 0);
    kvmux_store_free(s);
    kvmux_store_free(NULL);
}

static void test_get_set_del(void) {
    kvmux_store *s = new_store(4);
    readbuf rb = {0};
    uint64_t v1 = 0, v2 = 0;
    CHECK_EQ(kvmux_store_get(s, K("a"), read_into, &rb), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(rb.calls, 0);
    CHECK_EQ(kvmux_store_set(s, K("a"), K("hello"), 0, &v1), KVMUX_STATUS_OK);
    CHECK(v1 > 0);
    CHECK_EQ(kvmux_store_get(s, K("a"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK_EQ(rb.version, v1);
    CHECK(rb.len == 5 && memcmp(rb.data, "hello", 5) == 0);
    CHECK_EQ(kvmux_store_set(s, K("a"), K("world!"), 0, &v2), KVMUX_STATUS_OK);
    CHECK(v2 > v1);
    CHECK_EQ(kvmux_store_get(s, K("a"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == 6 && memcmp(rb.data, "world!", 6) == 0);
    /* Empty values are values. */
    CHECK_EQ(kvmux_store_set(s, K("e"), NULL, 0, 0, &v1), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get(s, K("e"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK_EQ(rb.len, 0);
    /* The read callback's error is passed through. */
    uint8_t big[1500] = {0};
    CHECK_EQ(kvmux_store_set(s, K("big"), big, sizeof big, 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get(s, K("big"), read_into, &rb), KVMUX_STATUS_TOO_LARGE);
    /* Binary keys with NULs and keys that differ only in length. */
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"x\0y", 3, K("3"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get(s, (const uint8_t *)"x\0y", 2, read_into, &rb), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_del(s, K("a")), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_del(s, K("a")), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_get(s, K("a"), read_into, &rb), KVMUX_STATUS_NOT_FOUND);
    /* Recreated key: a brand-new version, never an old one. */
    uint64_t v3 = 0;
    CHECK_EQ(kvmux_store_set(s, K("a"), K("again"), 0, &v3), KVMUX_STATUS_OK);
    CHECK(v3 > v2);
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.keys, 4);
    CHECK_EQ(st.bytes, 1 + 0 + 3 + 1500 + 3 + 1 + 1 + 5);
    kvmux_store_free(s);
}

static void test_cas(void) {
    kvmux_store *s = new_store(4);
    uint64_t v = 99, v1, v2;
    CHECK_EQ(kvmux_store_cas(s, K("c"), 5, K("x"), 0, &v), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(v, 0);
    CHECK_EQ(kvmux_store_cas(s, K("c"), 0, K("x"), 0, &v1), KVMUX_STATUS_OK); /* create */
    CHECK(v1 > 0);
    CHECK_EQ(kvmux_store_cas(s, K("c"), 0, K("y"), 0, &v), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(v, v1);
    CHECK_EQ(kvmux_store_cas(s, K("c"), v1 + 1000, K("y"), 0, &v), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(v, v1);
    CHECK_EQ(kvmux_store_cas(s, K("c"), v1, K("y"), 0, &v2), KVMUX_STATUS_OK);
    CHECK(v2 > v1);
    readbuf rb = {0};
    CHECK_EQ(kvmux_store_get(s, K("c"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == 1 && rb.data[0] == 'y' && rb.version == v2);
    /* Stale version after delete + recreate must not match (no ABA). */
    CHECK_EQ(kvmux_store_del(s, K("c")), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_cas(s, K("c"), v2, K("z"), 0, &v), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_set(s, K("c"), K("w"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_cas(s, K("c"), v2, K("z"), 0, &v), KVMUX_STATUS_VERSION_MISMATCH);
    kvmux_store_free(s);
}

static void test_incr(void) {
    kvmux_store *s = new_store(4);
    int64_t val = 0;
    uint64_t v = 0, vprev;
    readbuf rb = {0};
    CHECK_EQ(kvmux_store_incr(s, K("n"), 5, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, 5);
    vprev = v;
    CHECK_EQ(kvmux_store_incr(s, K("n"), -7, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, -2);
    CHECK(v > vprev);
    CHECK_EQ(kvmux_store_get(s, K("n"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == 2 && memcmp(rb.data, "-2", 2) == 0);
    CHECK_EQ(kvmux_store_incr(s, K("n"), 0, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, -2);

    CHECK_EQ(kvmux_store_set(s, K("max"), K("9223372036854775807"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_incr(s, K("max"), 1, &val, &v), KVMUX_STATUS_OVERFLOW);
    CHECK_EQ(kvmux_store_incr(s, K("max"), -1, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, INT64_MAX - 1);
    CHECK_EQ(kvmux_store_set(s, K("min"), K("-9223372036854775808"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_incr(s, K("min"), -1, &val, &v), KVMUX_STATUS_OVERFLOW);
    CHECK_EQ(kvmux_store_incr(s, K("min"), 0, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, INT64_MIN);
    CHECK_EQ(kvmux_store_get(s, K("min"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == 20 && memcmp(rb.data, "-9223372036854775808", 20) == 0);
    CHECK_EQ(kvmux_store_incr(s, K("fresh"), INT64_MIN, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, INT64_MIN);

    /* Values that are not canonical decimal i64 are refused, unchanged. */
    const char *bad[] = {"", "abc", "12a", " 1", "1 ", "+1", "-", "007", "-0",
                         "9223372036854775808", "-9223372036854775809",
                         "99999999999999999999", "1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t sv = 0;
        CHECK_EQ(kvmux_store_set(s, K("bad"), K(bad[i]), 0, &sv), KVMUX_STATUS_OK);
        v = 0;
        int rc = kvmux_store_incr(s, K("bad"), 1, &val, &v);
        if (rc != KVMUX_STATUS_NOT_INTEGER) fprintf(stderr, "value '%s'\n", bad[i]);
        CHECK_EQ(rc, KVMUX_STATUS_NOT_INTEGER);
        CHECK_EQ(kvmux_store_get(s, K("bad"), read_into, &rb), KVMUX_STATUS_OK);
        CHECK_EQ(rb.version, sv);
    }
    CHECK_EQ(kvmux_store_set(s, K("zero"), K("0"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_incr(s, K("zero"), 3, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, 3);
    kvmux_store_free(s);
}

static void test_ttl(void) {
    kvmux_store *s = new_store(4);
    readbuf rb = {0};
    int64_t val;
    uint64_t v;
    atomic_store(&fake_now, 1000);
    CHECK_EQ(kvmux_store_set(s, K("t"), K("5"), 100, NULL), KVMUX_STATUS_OK);
    atomic_store(&fake_now, 1099);
    CHECK_EQ(kvmux_store_get(s, K("t"), read_into, &rb), KVMUX_STATUS_OK);
    /* INCR keeps the TTL. */
    CHECK_EQ(kvmux_store_incr(s, K("t"), 1, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, 6);
    atomic_store(&fake_now, 1100);
    CHECK_EQ(kvmux_store_get(s, K("t"), read_into, &rb), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_del(s, K("t")), KVMUX_STATUS_NOT_FOUND);
    /* Expired key counts as absent for INCR (restarts at 0, no TTL). */
    CHECK_EQ(kvmux_store_set(s, K("t"), K("41"), 10, NULL), KVMUX_STATUS_OK);
    atomic_store(&fake_now, 2000);
    CHECK_EQ(kvmux_store_incr(s, K("t"), 1, &val, &v), KVMUX_STATUS_OK);
    CHECK_EQ(val, 1);
    atomic_store(&fake_now, 1000000);
    CHECK_EQ(kvmux_store_get(s, K("t"), read_into, &rb), KVMUX_STATUS_OK);
    /* SET without TTL clears it; CAS takes its own; huge TTL saturates. */
    CHECK_EQ(kvmux_store_set(s, K("u"), K("x"), 5, &v), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_cas(s, K("u"), v, K("y"), 0, &v), KVMUX_STATUS_OK);
    atomic_store(&fake_now, 2000000);
    CHECK_EQ(kvmux_store_get(s, K("u"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(s, K("h"), K("x"), UINT64_MAX, NULL), KVMUX_STATUS_OK);
    atomic_store(&fake_now, UINT64_MAX - 1);
    CHECK_EQ(kvmux_store_get(s, K("h"), read_into, &rb), KVMUX_STATUS_OK);
    /* Expired key and CAS: expected 0 creates again. */
    atomic_store(&fake_now, 5000);
    CHECK_EQ(kvmux_store_set(s, K("c"), K("x"), 10, &v), KVMUX_STATUS_OK);
    atomic_store(&fake_now, 6000);
    CHECK_EQ(kvmux_store_cas(s, K("c"), v, K("y"), 0, &v), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_cas(s, K("c"), 0, K("y"), 0, &v), KVMUX_STATUS_OK);
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.expired, 3);
    kvmux_store_free(s);
}

static void test_wait(void) {
    kvmux_store *s = new_store(2);
    readbuf rb = {0};
    kvmux_store_waiter w1, w2, w3;
    memset(&w1, 0, sizeof w1);
    memset(&w2, 0, sizeof w2);
    memset(&w3, 0, sizeof w3);
    uint64_t v = 0, cur = 0;
    nfired = 0;
    atomic_store(&fake_now, 1000);

    /* Absent key, waiting for version 5: differs -> answered at once. */
    CHECK_EQ(kvmux_store_wait(s, K("w"), 5, &w1, read_into, &rb), KVMUX_STATUS_OK);
    CHECK_EQ(rb.version, 0);
    /* Absent key, version 0: parks on a placeholder invisible to GET. */
    CHECK_EQ(kvmux_store_wait(s, K("w"), 0, &w1, read_into, &rb), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_wait(s, K("w"), 0, &w2, read_into, &rb), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_get(s, K("w"), read_into, &rb), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_del(s, K("w")), KVMUX_STATUS_NOT_FOUND);
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.keys, 0);
    CHECK_EQ(st.waiters, 2);
    /* Creating the key fires both, once. */
    CHECK_EQ(kvmux_store_set(s, K("w"), K("v1"), 0, &v), KVMUX_STATUS_OK);
    CHECK_EQ(nfired, 2);
    CHECK((fired[0] == &w1 && fired[1] == &w2) || (fired[0] == &w2 && fired[1] == &w1));
    CHECK_EQ(kvmux_store_wait_cancel(s, &w1, &cur), 0); /* already fired */
    CHECK_EQ(kvmux_store_wait_poll(s, &w2), 1);
    /* Now wait on the current version; a newer one answers at once. */
    CHECK_EQ(kvmux_store_wait(s, K("w"), v - 1, &w1, read_into, &rb), KVMUX_STATUS_OK);
    CHECK_EQ(rb.version, v);
    CHECK(rb.len == 2 && memcmp(rb.data, "v1", 2) == 0);
    nfired = 0;
    memset(&w1, 0, sizeof w1);
    CHECK_EQ(kvmux_store_wait(s, K("w"), v, &w1, read_into, &rb), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_wait(s, K("w"), v, &w2, read_into, &rb), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_wait(s, K("w"), v, &w3, read_into, &rb), KVMUX_STORE_PARKED);
    /* Cancel the middle one: the others stay. */
    CHECK_EQ(kvmux_store_wait_cancel(s, &w2, &cur), 1);
    CHECK_EQ(cur, v);
    CHECK_EQ(kvmux_store_wait_cancel(s, &w2, &cur), 0);
    /* Failed writes do not fire. */
    int64_t iv;
    CHECK_EQ(kvmux_store_incr(s, K("w"), 1, &iv, NULL), KVMUX_STATUS_NOT_INTEGER);
    CHECK_EQ(kvmux_store_cas(s, K("w"), v + 77, K("x"), 0, NULL), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(nfired, 0);
    CHECK_EQ(kvmux_store_del(s, K("w")), KVMUX_STATUS_OK);
    CHECK_EQ(nfired, 2);
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.waiters, 0);

    /* Cancelling the last waiter of a placeholder frees it (a later CAS
     * with expected 0 still works and nothing fires). */
    nfired = 0;
    memset(&w1, 0, sizeof w1);
    CHECK_EQ(kvmux_store_wait(s, K("p"), 0, &w1, NULL, NULL), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_wait_cancel(s, &w1, &cur), 1);
    CHECK_EQ(cur, 0);
    CHECK_EQ(kvmux_store_cas(s, K("p"), 0, K("x"), 0, &v), KVMUX_STATUS_OK);
    CHECK_EQ(nfired, 0);

    /* Expiry fires waiters when polled after the TTL. */
    memset(&w1, 0, sizeof w1);
    CHECK_EQ(kvmux_store_set(s, K("x"), K("1"), 50, &v), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_wait(s, K("x"), v, &w1, NULL, NULL), KVMUX_STORE_PARKED);
    CHECK_EQ(w1.key_expires_ms, 1050);
    CHECK_EQ(kvmux_store_wait_poll(s, &w1), 0);
    atomic_store(&fake_now, 1050);
    CHECK_EQ(kvmux_store_wait_poll(s, &w1), 1);
    CHECK_EQ(nfired, 1);
    CHECK(fired[0] == &w1);
    /* ... or when another operation touches the expired key. */
    nfired = 0;
    memset(&w1, 0, sizeof w1);
    CHECK_EQ(kvmux_store_set(s, K("x"), K("1"), 50, &v), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_wait(s, K("x"), v, &w1, NULL, NULL), KVMUX_STORE_PARKED);
    atomic_store(&fake_now, 2000);
    CHECK_EQ(kvmux_store_get(s, K("x"), read_into, &rb), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(nfired, 1);

    /* A store without a fire callback cannot park. */
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    kvmux_store *s2 = NULL;
    REQUIRE(kvmux_store_new(&s2, &o) == 0);
    memset(&w1, 0, sizeof w1);
    CHECK_EQ(kvmux_store_wait(s2, K("k"), 0, &w1, NULL, NULL), KVMUX_STATUS_INTERNAL);
    kvmux_store_free(s2);
    kvmux_store_free(s);
}

static void test_many_keys(void) {
    kvmux_store *s = new_store(8);
    char key[32];
    enum { N = 50000 };
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "key:%d", i);
        CHECK_EQ(kvmux_store_set(s, (uint8_t *)key, (size_t)n, (uint8_t *)key, (size_t)n, 0, NULL),
                 KVMUX_STATUS_OK);
    }
    int bad = 0;
    readbuf rb;
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "key:%d", i);
        if (kvmux_store_get(s, (uint8_t *)key, (size_t)n, read_into, &rb) != KVMUX_STATUS_OK ||
            rb.len != (size_t)n || memcmp(rb.data, key, (size_t)n) != 0)
            bad++;
    }
    CHECK_EQ(bad, 0);
    for (int i = 0; i < N; i += 2) {
        int n = snprintf(key, sizeof key, "key:%d", i);
        CHECK_EQ(kvmux_store_del(s, (uint8_t *)key, (size_t)n), KVMUX_STATUS_OK);
    }
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.keys, N / 2);
    bad = 0;
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "key:%d", i);
        int rc = kvmux_store_get(s, (uint8_t *)key, (size_t)n, NULL, NULL);
        if (rc != (i % 2 ? KVMUX_STATUS_OK : KVMUX_STATUS_NOT_FOUND)) bad++;
    }
    CHECK_EQ(bad, 0);
    kvmux_store_free(s);
}

/* ---- out of memory: fail the Nth allocation, for every N ---- */

static long fail_at = -1; /* allocations left before the failing one */
static int failures;
static void *failing_alloc(void *ud, size_t n) {
    (void)ud;
    if (fail_at == 0) {
        fail_at = -1;
        failures++;
        return NULL;
    }
    if (fail_at > 0) fail_at--;
    return malloc(n);
}
static void plain_free(void *ud, void *p) {
    (void)ud;
    free(p);
}

/* Current (version, value) of key, or version 0 if absent. */
static uint64_t state(kvmux_store *s, const char *key, readbuf *rb) {
    memset(rb, 0, sizeof *rb);
    int rc = kvmux_store_get(s, (const uint8_t *)key, strlen(key), read_into, rb);
    return rc == KVMUX_STATUS_OK ? rb->version : 0;
}

/* After each call: OK, or INTERNAL with the key exactly as before. */
#define OOM_STEP(key, call)                                                    \
    do {                                                                       \
        readbuf before_, after_;                                               \
        uint64_t oom_vb = state(s, key, &before_);                                \
        int rc_ = (call);                                                      \
        uint64_t oom_va = state(s, key, &after_);                                 \
        if (rc_ == KVMUX_STATUS_INTERNAL) {                                    \
            internal++;                                                        \
            CHECK(oom_va == oom_vb && after_.len == before_.len &&                   \
                  memcmp(after_.data, before_.data, after_.len) == 0);         \
        } else {                                                               \
            CHECK_EQ(rc_, KVMUX_STATUS_OK);                                    \
        }                                                                      \
    } while (0)

/* One pass of writes that each allocate differently: new keys (slab
 * block, table growth), overwrites that change the entry's class (inline
 * <-> out of line at the threshold, TTL added / dropped), INCR, CAS, a
 * WAIT on an absent key (placeholder) and on a live one (the entry moves
 * to make room for its waiter list), restore. Every call must return OK or
 * INTERNAL with the key as it was. */
static int oom_script(kvmux_store *s) {
    int internal = 0;
    int64_t iv;
    uint64_t v;
    static uint8_t val[600];
    memset(val, 'v', sizeof val);
    OOM_STEP("b", kvmux_store_set(s, K("b"), K("bee"), 0, &v));
    OOM_STEP("a", kvmux_store_set(s, K("a"), K("2"), 0, &v));
    OOM_STEP("a", kvmux_store_incr(s, K("a"), 5, &iv, &v));
    OOM_STEP("n", kvmux_store_incr(s, K("n"), 5, &iv, &v));
    OOM_STEP("c", kvmux_store_cas(s, K("c"), 0, K("new"), 0, &v));
    readbuf rb;
    uint64_t cur = state(s, "a", &rb);
    OOM_STEP("a", kvmux_store_cas(s, K("a"), cur, K("7"), 0, &v));
    /* Class changes: inline max, one past it (out of line), back, TTL. */
    OOM_STEP("a", kvmux_store_set(s, K("a"), val, KVMUX_STORE_INLINE_MAX, 0, &v));
    OOM_STEP("a", kvmux_store_set(s, K("a"), val, KVMUX_STORE_INLINE_MAX + 1, 0, &v));
    OOM_STEP("a", kvmux_store_set(s, K("a"), val, 40, 0, &v));
    OOM_STEP("a", kvmux_store_set(s, K("a"), val, 40, 100000, &v));
    OOM_STEP("a", kvmux_store_set(s, K("a"), val, 600, 100000, &v));
    OOM_STEP("a", kvmux_store_set(s, K("a"), val, 3, 0, &v));
    OOM_STEP("d", kvmux_store_restore(s, K("d"), val, 300, 5, 0));
    OOM_STEP("d", kvmux_store_restore(s, K("d"), val, 30, 6, 0));
    kvmux_store_value *bv = kvmux_store_value_new(s, 400);
    if (bv) {
        memset(kvmux_store_value_data(bv), 'b', 400);
        OOM_STEP("e", kvmux_store_set_value(s, K("e"), bv, 0, &v));
    } else {
        internal++;
    }
    kvmux_store_waiter w;
    memset(&w, 0, sizeof w);
    int rc = kvmux_store_wait(s, K("absent"), 0, &w, NULL, NULL);
    CHECK(rc == KVMUX_STORE_PARKED || rc == KVMUX_STATUS_INTERNAL);
    if (rc == KVMUX_STORE_PARKED) CHECK_EQ(kvmux_store_wait_cancel(s, &w, NULL), 1);
    else internal++;
    /* A waiter on a live key: the entry moves; the key must not change. */
    uint64_t vb = state(s, "b", &rb);
    memset(&w, 0, sizeof w);
    rc = kvmux_store_wait(s, K("b"), vb, &w, NULL, NULL);
    CHECK(rc == KVMUX_STORE_PARKED || rc == KVMUX_STATUS_INTERNAL);
    CHECK_EQ(state(s, "b", &rb), vb);
    if (vb) CHECK(rb.len == 3 && memcmp(rb.data, "bee", 3) == 0);
    if (rc == KVMUX_STORE_PARKED) CHECK_EQ(kvmux_store_wait_cancel(s, &w, NULL), 1);
    else internal++;
    /* Growth past the first tables: a failed rehash is silent until the
     * table is really full. */
    char key[16];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "g%d", i);
        OOM_STEP(key, kvmux_store_set(s, (uint8_t *)key, strlen(key), K("x"), 0, NULL));
    }
    return internal;
}

static long allocs_seen;
static void *counting_alloc(void *ud, size_t n) {
    (void)ud;
    allocs_seen++;
    return malloc(n);
}

static void test_out_of_memory(void) {
    /* Dry run: how many allocations the script makes. */
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 1;
    o.clock = fake_clock;
    o.fire = on_fire;
    o.alloc = counting_alloc;
    o.dealloc = plain_free;
    kvmux_store *s = NULL;
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    REQUIRE(kvmux_store_set(s, K("a"), K("1"), 0, NULL) == KVMUX_STATUS_OK);
    allocs_seen = 0;
    CHECK_EQ(oom_script(s), 0);
    long total = allocs_seen;
    kvmux_store_free(s);
    CHECK(total >= 15); /* slab blocks, values, tables: the script allocates */
    /* Then fail each of them in turn. */
    int internal = 0;
    for (long n = 0; n < total; n++) {
        o.alloc = failing_alloc;
        s = NULL;
        fail_at = -1;
        REQUIRE(kvmux_store_new(&s, &o) == 0);
        REQUIRE(kvmux_store_set(s, K("a"), K("1"), 0, NULL) == KVMUX_STATUS_OK);
        failures = 0;
        fail_at = n;
        internal += oom_script(s);
        CHECK_EQ(failures, 1); /* the injection really happened */
        fail_at = -1;
        kvmux_store_free(s); /* ASan: nothing leaked on any path */
    }
    CHECK(internal > 0);
    fprintf(stderr, "out of memory: %ld allocations failed in turn, %d calls answered INTERNAL\n",
            total, internal);
}

/* ---- 4 concurrent writers ---- */

enum { THREADS = 4, OPS = 20000 };
typedef struct worker {
    kvmux_store *s;
    int id;
    uint64_t versions[OPS];
    int errors;
} worker;

static void *writer(void *arg) {
    worker *w = arg;
    char key[32];
    for (int i = 0; i < OPS; i++) {
        uint64_t v = 0;
        int64_t val;
        int rc;
        switch (i % 4) {
        case 0: {
            int n = snprintf(key, sizeof key, "t%d:%d", w->id, i % 100);
            rc = kvmux_store_set(w->s, (uint8_t *)key, (size_t)n, (uint8_t *)"x", 1, 0, &v);
            break;
        }
        case 1:
            rc = kvmux_store_incr(w->s, K("shared-counter"), 1, &val, &v);
            break;
        case 2:
            rc = kvmux_store_set(w->s, K("shared-key"), (uint8_t *)&i, sizeof i, 0, &v);
            break;
        default: {
            /* Read-modify-write with CAS: no increment may be lost. */
            for (;;) {
                readbuf rb = {0};
                uint64_t cur = 0;
                int64_t n = 0;
                if (kvmux_store_get(w->s, K("cas-key"), read_into, &rb) == KVMUX_STATUS_OK) {
                    cur = rb.version;
                    char tmp[32] = {0};
                    memcpy(tmp, rb.data, rb.len < 31 ? rb.len : 31);
                    n = atoll(tmp);
                }
                char out[32];
                int len = snprintf(out, sizeof out, "%lld", (long long)(n + 1));
                rc = kvmux_store_cas(w->s, K("cas-key"), cur, (uint8_t *)out, (size_t)len, 0, &v);
                if (rc == KVMUX_STATUS_OK) break;
                if (rc != KVMUX_STATUS_VERSION_MISMATCH) break;
            }
        }
        }
        if (rc != KVMUX_STATUS_OK) w->errors++;
        w->versions[i] = v;
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_concurrent(void) {
    kvmux_store *s = new_store(256);
    static worker ws[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ws[i].s = s;
        ws[i].id = i;
        ws[i].errors = 0;
        REQUIRE(pthread_create(&th[i], NULL, writer, &ws[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    int errors = 0;
    static uint64_t all[THREADS * OPS];
    for (int i = 0; i < THREADS; i++) {
        errors += ws[i].errors;
        memcpy(all + (size_t)i * OPS, ws[i].versions, sizeof ws[i].versions);
    }
    CHECK_EQ(errors, 0);
    qsort(all, THREADS * OPS, sizeof all[0], cmp_u64);
    int dups = 0, zeros = 0;
    for (size_t i = 0; i < THREADS * OPS; i++) {
        if (all[i] == 0) zeros++;
        if (i && all[i] == all[i - 1]) dups++;
    }
    CHECK_EQ(zeros, 0);
    CHECK_EQ(dups, 0); /* one store-wide counter: versions never repeat */
    readbuf rb = {0};
    CHECK_EQ(kvmux_store_get(s, K("shared-counter"), read_into, &rb), KVMUX_STATUS_OK);
    char expect[32];
    int n = snprintf(expect, sizeof expect, "%d", THREADS * OPS / 4);
    CHECK(rb.len == (size_t)n && memcmp(rb.data, expect, (size_t)n) == 0);
    CHECK_EQ(kvmux_store_get(s, K("cas-key"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == (size_t)n && memcmp(rb.data, expect, (size_t)n) == 0);
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.keys, THREADS * 25 + 3);
    kvmux_store_free(s);
}

/* ---- refcounted values ---- */

typedef struct holdbuf {
    kvmux_store_value *held;
    const uint8_t *ptr;
    uint64_t version;
} holdbuf;

static int read_hold(void *ud, uint64_t version, const uint8_t *v, size_t len) {
    holdbuf *hb = ud;
    hb->version = version;
    hb->ptr = v;
    hb->held = len ? kvmux_store_value_hold(v) : NULL;
    return 0;
}

static void test_values(void) {
    kvmux_store *s = new_store(4);
    /* A caller-built value is installed as is: GET sees the same bytes. */
    /* (longer than KVMUX_STORE_INLINE_MAX: kept out of line, by reference) */
    kvmux_store_value *v = kvmux_store_value_new(s, 300);
    REQUIRE(v);
    CHECK_EQ(kvmux_store_value_len(v), 300);
    memset(kvmux_store_value_data(v), '.', 300);
    memcpy(kvmux_store_value_data(v), "hello", 5);
    const uint8_t *where = kvmux_store_value_data(v);
    uint64_t ver = 0;
    CHECK_EQ(kvmux_store_set_value(s, K("v:k"), v, 0, &ver), KVMUX_STATUS_OK);
    holdbuf hb = {0};
    CHECK_EQ(kvmux_store_get(s, K("v:k"), read_hold, &hb), KVMUX_STATUS_OK);
    CHECK(hb.ptr == where); /* not copied */
    CHECK_EQ(hb.version, ver);
    /* The held reference keeps the old bytes after an overwrite and a
     * delete. */
    CHECK_EQ(kvmux_store_set(s, K("v:k"), (const uint8_t *)"world", 5, 0, NULL),
             KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_del(s, K("v:k")), KVMUX_STATUS_OK);
    CHECK(memcmp(kvmux_store_value_data(hb.held), "hello", 5) == 0);
    kvmux_store_value *again = kvmux_store_value_retain(hb.held);
    CHECK(again == hb.held);
    kvmux_store_value_release(hb.held);
    CHECK(memcmp(kvmux_store_value_data(again), "hello", 5) == 0);
    kvmux_store_value_release(again); /* last one: freed (ASan checks) */
    kvmux_store_value_release(NULL);
    /* An empty value: NULL. */
    CHECK_EQ(kvmux_store_set_value(s, K("v:e"), NULL, 0, NULL), KVMUX_STATUS_OK);
    readbuf rb = {0};
    CHECK_EQ(kvmux_store_get(s, K("v:e"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK_EQ(rb.len, 0);
    CHECK(kvmux_store_value_new(s, 0) == NULL);
    /* CAS with a built value: consumed on every result. */
    v = kvmux_store_value_new(s, 3);
    REQUIRE(v);
    memcpy(kvmux_store_value_data(v), "abc", 3);
    CHECK_EQ(kvmux_store_cas_value(s, K("v:c"), 12345, v, 0, &ver), KVMUX_STATUS_NOT_FOUND);
    v = kvmux_store_value_new(s, 3);
    REQUIRE(v);
    memcpy(kvmux_store_value_data(v), "abc", 3);
    CHECK_EQ(kvmux_store_cas_value(s, K("v:c"), 0, v, 0, &ver), KVMUX_STATUS_OK);
    v = kvmux_store_value_new(s, 3);
    REQUIRE(v);
    CHECK_EQ(kvmux_store_cas_value(s, K("v:c"), ver + 1000, v, 0, NULL),
             KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(kvmux_store_get(s, K("v:c"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.len == 3 && memcmp(rb.data, "abc", 3) == 0);
    /* INCR reads a value built by hand. */
    v = kvmux_store_value_new(s, 2);
    REQUIRE(v);
    memcpy(kvmux_store_value_data(v), "41", 2);
    CHECK_EQ(kvmux_store_set_value(s, K("v:n"), v, 0, NULL), KVMUX_STATUS_OK);
    int64_t n = 0;
    CHECK_EQ(kvmux_store_incr(s, K("v:n"), 1, &n, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(n, 42);
    kvmux_store_free(s);
}

/* Readers holding values on some threads while writers overwrite the key
 * on others: every held value is whole, every reference dropped once. */
static kvmux_store *g_vs;
static _Atomic int g_torn;

static void *value_writer(void *arg) {
    uint8_t buf[4096];
    for (int i = 0; i < 2000; i++) {
        memset(buf, (int)((uintptr_t)arg * 64 + (unsigned)i % 64), sizeof buf);
        kvmux_store_set(g_vs, K("v:shared"), buf, sizeof buf, 0, NULL);
    }
    return NULL;
}

static void *value_reader(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        holdbuf hb = {0};
        if (kvmux_store_get(g_vs, K("v:shared"), read_hold, &hb) != KVMUX_STATUS_OK) continue;
        const uint8_t *p = kvmux_store_value_data(hb.held);
        for (size_t j = 1; j < kvmux_store_value_len(hb.held); j++)
            if (p[j] != p[0]) {
                atomic_fetch_add(&g_torn, 1);
                break;
            }
        kvmux_store_value_release(hb.held);
    }
    return NULL;
}

static void test_values_concurrent(void) {
    g_vs = new_store(1);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 2; i++) REQUIRE(pthread_create(&t[i], NULL, value_writer, (void *)i) == 0);
    for (int i = 2; i < 4; i++) REQUIRE(pthread_create(&t[i], NULL, value_reader, NULL) == 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    CHECK_EQ(atomic_load(&g_torn), 0);
    kvmux_store_free(g_vs);
}

/* ---- entry layout: inline vs out-of-line values, moves, tombstones ---- */

static void check_value(kvmux_store *s, const char *key, const uint8_t *want, size_t n) {
    readbuf rb = {0};
    CHECK_EQ(kvmux_store_get(s, (const uint8_t *)key, strlen(key), read_into, &rb),
             KVMUX_STATUS_OK);
    CHECK_EQ(rb.len, n);
    CHECK(rb.len == n && (n == 0 || memcmp(rb.data, want, n) == 0));
}

static void test_layout(void) {
    kvmux_store *s = new_store(1);
    uint64_t base = kvmux_store_used_memory(s);
    static uint8_t val[600];
    for (size_t i = 0; i < sizeof val; i++) val[i] = (uint8_t)('a' + i % 26);
    atomic_store(&fake_now, 5000);
    /* Overwrites that change the entry's class each time: sizes around
     * the inline threshold, with and without TTL, and empty. */
    const size_t sizes[] = {3, KVMUX_STORE_INLINE_MAX, KVMUX_STORE_INLINE_MAX + 1, 0, 600, 1,
                            KVMUX_STORE_INLINE_MAX + 1, KVMUX_STORE_INLINE_MAX, 17};
    uint64_t prev = 0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        for (int ttl = 0; ttl < 2; ttl++) {
            uint64_t v = 0;
            CHECK_EQ(kvmux_store_set(s, K("lay"), val, sizes[k], ttl ? 1000 : 0, &v),
                     KVMUX_STATUS_OK);
            CHECK(v > prev);
            prev = v;
            check_value(s, "lay", val, sizes[k]);
            kvmux_store_stats st;
            kvmux_store_get_stats(s, &st);
            CHECK_EQ(st.keys, 1);
            CHECK_EQ(st.bytes, 3 + sizes[k]);
        }
    }
    /* INCR keeps the TTL of an inline value, and the TTL still expires it. */
    CHECK_EQ(kvmux_store_set(s, K("lay"), K("41"), 100, NULL), KVMUX_STATUS_OK);
    int64_t n = 0;
    CHECK_EQ(kvmux_store_incr(s, K("lay"), 1, &n, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(n, 42);
    atomic_store(&fake_now, 5099);
    check_value(s, "lay", (const uint8_t *)"42", 2);
    atomic_store(&fake_now, 5100);
    CHECK_EQ(kvmux_store_get(s, K("lay"), NULL, NULL), KVMUX_STATUS_NOT_FOUND);
    /* Out-of-line value with TTL expires too, and frees everything. */
    CHECK_EQ(kvmux_store_set(s, K("big"), val, 600, 10, NULL), KVMUX_STATUS_OK);
    atomic_store(&fake_now, 5110);
    CHECK_EQ(kvmux_store_get(s, K("big"), NULL, NULL), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_used_memory(s), base);

    /* hold: zero-copy for an out-of-line value, a private copy for an
     * inline one; both outlive an overwrite and a delete. */
    holdbuf hb = {0};
    CHECK_EQ(kvmux_store_set(s, K("h1"), val, KVMUX_STORE_INLINE_MAX, 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get(s, K("h1"), read_hold, &hb), KVMUX_STATUS_OK);
    REQUIRE(hb.held);
    CHECK(kvmux_store_value_data(hb.held) != hb.ptr); /* copied */
    CHECK_EQ(kvmux_store_value_len(hb.held), KVMUX_STORE_INLINE_MAX);
    CHECK_EQ(kvmux_store_set(s, K("h1"), K("zz"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_del(s, K("h1")), KVMUX_STATUS_OK);
    CHECK(memcmp(kvmux_store_value_data(hb.held), val, KVMUX_STORE_INLINE_MAX) == 0);
    kvmux_store_value_release(hb.held);
    CHECK_EQ(kvmux_store_set(s, K("h2"), val, KVMUX_STORE_INLINE_MAX + 1, 0, NULL),
             KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get(s, K("h2"), read_hold, &hb), KVMUX_STATUS_OK);
    REQUIRE(hb.held);
    CHECK(kvmux_store_value_data(hb.held) == hb.ptr); /* by reference */
    CHECK_EQ(kvmux_store_del(s, K("h2")), KVMUX_STATUS_OK);
    CHECK(memcmp(kvmux_store_value_data(hb.held), val, KVMUX_STORE_INLINE_MAX + 1) == 0);
    kvmux_store_value_release(hb.held);
    /* A small caller-built value is copied inline (and its reference
     * dropped: ASan would report the leak). */
    kvmux_store_value *bv = kvmux_store_value_new(s, 4);
    REQUIRE(bv);
    memcpy(kvmux_store_value_data(bv), "tiny", 4);
    CHECK_EQ(kvmux_store_set_value(s, K("h3"), bv, 0, NULL), KVMUX_STATUS_OK);
    check_value(s, "h3", (const uint8_t *)"tiny", 4);
    CHECK_EQ(kvmux_store_get(s, K("h3"), read_hold, &hb), KVMUX_STATUS_OK);
    CHECK(hb.held && kvmux_store_value_data(hb.held) != hb.ptr);
    kvmux_store_value_release(hb.held);
    CHECK_EQ(kvmux_store_del(s, K("h3")), KVMUX_STATUS_OK);

    /* Waiters on a live inline key: the first one moves the entry (room
     * for the list); the value, version and TTL are unchanged; a write
     * fires them all and the key reads as written. */
    nfired = 0;
    uint64_t v = 0, cur = 0;
    CHECK_EQ(kvmux_store_set(s, K("wk"), K("abc"), 500, &v), KVMUX_STATUS_OK);
    kvmux_store_waiter w1, w2, w3;
    memset(&w1, 0, sizeof w1);
    memset(&w2, 0, sizeof w2);
    memset(&w3, 0, sizeof w3);
    CHECK_EQ(kvmux_store_wait(s, K("wk"), v, &w1, NULL, NULL), KVMUX_STORE_PARKED);
    CHECK_EQ(w1.key_expires_ms, 5110 + 500);
    CHECK_EQ(kvmux_store_wait(s, K("wk"), v, &w2, NULL, NULL), KVMUX_STORE_PARKED);
    readbuf rb = {0};
    CHECK_EQ(kvmux_store_get(s, K("wk"), read_into, &rb), KVMUX_STATUS_OK);
    CHECK(rb.version == v && rb.len == 3 && memcmp(rb.data, "abc", 3) == 0);
    CHECK_EQ(kvmux_store_wait_cancel(s, &w1, &cur), 1);
    CHECK_EQ(cur, v);
    /* Recovery (restore) keeps parked waiters, re-pointed at the moved
     * entry: the remaining one is still cancellable afterwards. */
    CHECK_EQ(kvmux_store_wait(s, K("wk"), v, &w3, NULL, NULL), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_restore(s, K("wk"), val, 400, v + 1000, 0), KVMUX_STATUS_OK);
    CHECK_EQ(nfired, 0);
    CHECK_EQ(kvmux_store_wait_cancel(s, &w3, &cur), 1);
    CHECK_EQ(cur, v + 1000);
    /* A write fires the last one; the entry sheds its list. */
    CHECK_EQ(kvmux_store_set(s, K("wk"), K("new"), 0, &v), KVMUX_STATUS_OK);
    CHECK_EQ(nfired, 1);
    CHECK(fired[0] == &w2);
    CHECK_EQ(kvmux_store_wait_cancel(s, &w2, NULL), 0);
    check_value(s, "wk", (const uint8_t *)"new", 3);
    /* Expiry fires a waiter parked on an inline key with a TTL (poll). */
    nfired = 0;
    CHECK_EQ(kvmux_store_set(s, K("wt"), K("x"), 50, &v), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_wait(s, K("wt"), v, &w1, NULL, NULL), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_wait_poll(s, &w1), 0);
    atomic_store(&fake_now, 5110 + 50);
    CHECK_EQ(kvmux_store_wait_poll(s, &w1), 1);
    CHECK_EQ(nfired, 1);
    CHECK_EQ(kvmux_store_get(s, K("wt"), NULL, NULL), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_del(s, K("wk")), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_used_memory(s), base); /* every entry and value given back */
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.keys, 0);
    CHECK_EQ(st.waiters, 0);
    CHECK_EQ(st.bytes, 0);
    kvmux_store_free(s);
}

/* Churn in one shard: keys created and deleted in a sliding window leave
 * tombstones; they are reused and swept, so the table stays small and
 * every live key stays reachable. */
static void test_tombstones(void) {
    kvmux_store *s = new_store(1);
    char key[32];
    enum { WINDOW = 100, ROUNDS = 50000 };
    for (int i = 0; i < ROUNDS; i++) {
        snprintf(key, sizeof key, "t%d", i);
        CHECK_EQ(kvmux_store_set(s, (uint8_t *)key, strlen(key), K("v"), 0, NULL),
                 KVMUX_STATUS_OK);
        if (i >= WINDOW) {
            snprintf(key, sizeof key, "t%d", i - WINDOW);
            CHECK_EQ(kvmux_store_del(s, (uint8_t *)key, strlen(key)), KVMUX_STATUS_OK);
        }
    }
    int missing = 0;
    for (int i = ROUNDS - WINDOW; i < ROUNDS; i++) {
        snprintf(key, sizeof key, "t%d", i);
        missing += kvmux_store_get(s, (uint8_t *)key, strlen(key), NULL, NULL) != KVMUX_STATUS_OK;
    }
    CHECK_EQ(missing, 0);
    snprintf(key, sizeof key, "t%d", ROUNDS - WINDOW - 1);
    CHECK_EQ(kvmux_store_get(s, (uint8_t *)key, strlen(key), NULL, NULL), KVMUX_STATUS_NOT_FOUND);
    /* 100 live keys: the table never grew past 512 slots (4 KiB). */
    CHECK(kvmux_store_used_memory(s) < 4096 + WINDOW * 32);
    kvmux_store_free(s);
}

/* Resizes under concurrent access: one shard (so the single table is
 * rebuilt many times) with writers adding keys while readers look up keys
 * already written; every lookup must find its key. */
enum { RZ_WRITERS = 2, RZ_READERS = 2, RZ_KEYS = 30000 };
static kvmux_store *g_rz;
static _Atomic int g_rz_written[RZ_WRITERS];
static _Atomic int g_rz_missed;

static void *rz_writer(void *arg) {
    int id = (int)(intptr_t)arg;
    char key[32];
    for (int i = 0; i < RZ_KEYS; i++) {
        snprintf(key, sizeof key, "rz%d:%d", id, i);
        if (kvmux_store_set(g_rz, (uint8_t *)key, strlen(key), (const uint8_t *)key,
                            strlen(key), 0, NULL) != KVMUX_STATUS_OK)
            atomic_fetch_add(&g_rz_missed, 1);
        atomic_store(&g_rz_written[id], i + 1);
    }
    return NULL;
}

static void *rz_reader(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
    char key[32];
    for (int done = 0; !done;) {
        done = 1;
        for (int id = 0; id < RZ_WRITERS; id++) {
            int n = atomic_load(&g_rz_written[id]);
            if (n < RZ_KEYS) done = 0;
            if (n == 0) continue;
            seed = seed * 1103515245u + 12345u;
            int i = (int)((seed >> 8) % (unsigned)n);
            snprintf(key, sizeof key, "rz%d:%d", id, i);
            readbuf rb = {0};
            if (kvmux_store_get(g_rz, (uint8_t *)key, strlen(key), read_into, &rb) !=
                    KVMUX_STATUS_OK ||
                rb.len != strlen(key) || memcmp(rb.data, key, rb.len) != 0)
                atomic_fetch_add(&g_rz_missed, 1);
        }
    }
    return NULL;
}

static void test_resize_concurrent(void) {
    g_rz = new_store(1);
    pthread_t th[RZ_WRITERS + RZ_READERS];
    for (int i = 0; i < RZ_WRITERS; i++)
        REQUIRE(pthread_create(&th[i], NULL, rz_writer, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < RZ_READERS; i++)
        REQUIRE(pthread_create(&th[RZ_WRITERS + i], NULL, rz_reader, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < RZ_WRITERS + RZ_READERS; i++) pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&g_rz_missed), 0);
    kvmux_store_stats st;
    kvmux_store_get_stats(g_rz, &st);
    CHECK_EQ(st.keys, RZ_WRITERS * RZ_KEYS);
    kvmux_store_free(g_rz);
}

/* hold on an inline value whose copy cannot be allocated: NULL, and the
 * store is unchanged. */
static void test_hold_oom(void) {
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 1;
    o.alloc = failing_alloc;
    o.dealloc = plain_free;
    kvmux_store *s = NULL;
    fail_at = -1;
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    REQUIRE(kvmux_store_set(s, K("k"), K("small"), 0, NULL) == KVMUX_STATUS_OK);
    holdbuf hb = {0};
    failures = 0;
    fail_at = 0;
    CHECK_EQ(kvmux_store_get(s, K("k"), read_hold, &hb), KVMUX_STATUS_OK);
    CHECK_EQ(failures, 1);
    CHECK(hb.held == NULL);
    check_value(s, "k", (const uint8_t *)"small", 5);
    kvmux_store_free(s);
}

int main(void) {
    test_siphash();
    test_options();
    test_get_set_del();
    test_cas();
    test_incr();
    test_ttl();
    test_wait();
    test_many_keys();
    test_out_of_memory();
    test_concurrent();
    test_values();
    test_values_concurrent();
    test_layout();
    test_tombstones();
    test_resize_concurrent();
    test_hold_oom();
    return test_report();
}
