/* EXISTS, TTL, EXPIRE, PERSIST and SCAN through libkvmux against the real
 * kvmuxd on an ephemeral port, on protocol v1 and v2 connections:
 * - every operation's results and errors (blocking calls), the TTL seen
 *   counting down and the key expiring on its new schedule, EXPIRE's
 *   bounds (BAD_REQUEST for 0 and 2^53);
 * - a WAIT parked on a key wakes with the new version when EXPIRE or
 *   PERSIST change its TTL, and does not when PERSIST changes nothing;
 * - the async API (callbacks and futures) for each operation;
 * - SCAN with and without a prefix returns exactly the keys stored, over
 *   many steps, also while another connection inserts keys (growing the
 *   tables) between steps;
 * - with --aof: EXPIRE and PERSIST survive kill -9 (with --fsync always)
 *   and a compaction of the log, versions and TTLs intact.
 * Every wait is bounded. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "testutil.h"

#define T 5000
#define KS(s) (s), strlen(s)

static test_server g_srv;

static kvmux_client *connect_v(uint16_t port, int version) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_protocol_version = (uint8_t)version;
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", port, &o);
    if (rc != 0) fprintf(stderr, "connect: %s\n", kvmux_strerror(rc));
    REQUIRE(rc == 0 && c);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, version);
    return c;
}

static void test_ops(int version) {
    kvmux_client *c = connect_v(g_srv.port, version);
    char k[32];
    snprintf(k, sizeof k, "ops%d", version);
    uint64_t v0 = 0, v = 0, v2 = 0;
    int64_t ttl = 0;
    CHECK_EQ(kvmux_exists(c, KS(k), &v, T), KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_ttl(c, KS(k), &ttl, T), KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_expire(c, KS(k), 1000, &v, T), KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_persist(c, KS(k), &v, T), KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_set(c, KS(k), "value", 5, 0, &v0, T), 0);
    CHECK_EQ(kvmux_exists(c, KS(k), &v, T), 0);
    CHECK_EQ(v, v0);
    CHECK_EQ(kvmux_ttl(c, KS(k), &ttl, T), 0);
    CHECK_EQ(ttl, -1);
    CHECK_EQ(kvmux_expire(c, KS(k), 0, &v, T), KVMUX_EBADREQ);
    /* Over the cap: refused by the library before sending (as SET). */
    CHECK_EQ(kvmux_expire(c, KS(k), UINT64_C(1) << 53, &v, T), KVMUX_EINVAL);
    CHECK_EQ(kvmux_expire(c, KS(k), 100000, &v, T), 0);
    CHECK(v > v0);
    CHECK_EQ(kvmux_ttl(c, KS(k), &ttl, T), 0);
    CHECK(ttl > 90000 && ttl <= 100000);
    CHECK_EQ(kvmux_persist(c, KS(k), &v2, T), 0);
    CHECK(v2 > v);
    CHECK_EQ(kvmux_ttl(c, KS(k), &ttl, T), 0);
    CHECK_EQ(ttl, -1);
    CHECK_EQ(kvmux_persist(c, KS(k), &v, T), 0);
    CHECK_EQ(v, v2); /* nothing to drop: no write */
    kvmux_value *val = NULL;
    CHECK_EQ(kvmux_get(c, KS(k), &val, T), 0);
    REQUIRE(val);
    CHECK(val->len == 5 && memcmp(val->data, "value", 5) == 0);
    CHECK_EQ(val->version, v2);
    kvmux_value_free(val);
    /* The key now expires on EXPIRE's schedule. */
    CHECK_EQ(kvmux_expire(c, KS(k), 200, NULL, T), 0);
    test_sleep_ms(300);
    CHECK_EQ(kvmux_exists(c, KS(k), NULL, T), KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_get(c, KS(k), &val, T), KVMUX_ENOTFOUND);
    /* Bad arguments stay local. */
    CHECK_EQ(kvmux_exists(c, NULL, 0, NULL, T), KVMUX_EINVAL);
    kvmux_keys *keys = NULL;
    CHECK_EQ(kvmux_scan(c, 0, NULL, 0, 10, NULL, T), KVMUX_EINVAL);
    /* A cursor naming a shard the server does not have. */
    CHECK_EQ(kvmux_scan(c, UINT64_C(0xFFFF) << 48, NULL, 0, 10, &keys, T), KVMUX_EBADREQ);
    CHECK(keys == NULL);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

/* A WAIT parked on the key, from another thread. */
typedef struct waiter {
    kvmux_client *c;
    const char *key;
    uint64_t version;
    int rc;
    uint64_t got;
    atomic_int done;
} waiter;

static void *wait_main(void *p) {
    waiter *w = p;
    kvmux_value *val = NULL;
    w->rc = kvmux_wait(w->c, KS(w->key), w->version, 3000, &val, T);
    if (val) w->got = val->version;
    kvmux_value_free(val);
    atomic_store(&w->done, 1);
    return NULL;
}

static int wait_done(waiter *w, int ms) {
    int64_t end = test_now_ms() + ms;
    while (!atomic_load(&w->done) && test_now_ms() < end) test_sleep_ms(5);
    return atomic_load(&w->done);
}

static void test_wait_sees_ttl_change(int version) {
    kvmux_client *c = connect_v(g_srv.port, version);
    const char *k = version == 1 ? "w1" : "w2";
    uint64_t v0 = 0, v1 = 0;
    CHECK_EQ(kvmux_set(c, KS(k), "x", 1, 0, &v0, T), 0);
    for (int step = 0; step < 3; step++) {
        waiter w = {c, k, v0, 0, 0, 0};
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, wait_main, &w) == 0);
        test_sleep_ms(100); /* let it park */
        if (step == 0) {
            CHECK_EQ(kvmux_expire(c, KS(k), 60000, &v1, T), 0);
        } else if (step == 1) {
            CHECK_EQ(kvmux_persist(c, KS(k), &v1, T), 0);
        } else {
            /* PERSIST without a TTL changes nothing: WAIT stays parked
             * until its own 3 s timeout. */
            CHECK_EQ(kvmux_persist(c, KS(k), &v1, T), 0);
            CHECK_EQ(v1, v0);
            test_sleep_ms(300);
            CHECK(!atomic_load(&w.done));
        }
        REQUIRE(wait_done(&w, 5000));
        pthread_join(t, NULL);
        if (step < 2) {
            CHECK_EQ(w.rc, 0);
            CHECK_EQ(w.got, v1);
            CHECK(v1 > v0);
            v0 = v1;
        } else {
            CHECK_EQ(w.rc, KVMUX_ETIMEDOUT);
        }
    }
    kvmux_close(c);
}

/* ---- async ---- */

typedef struct cbres {
    atomic_int done;
    int rc;
    uint64_t version;
    int64_t number;
    size_t value_len;
} cbres;

static void on_reply(kvmux_client *c, int result, kvmux_reply *r, void *ud) {
    (void)c;
    cbres *x = ud;
    x->rc = result;
    x->version = r->version;
    x->number = r->number;
    x->value_len = r->value_len;
    atomic_store(&x->done, 1);
}

static int async_run(kvmux_client *c, const kvmux_request *req, cbres *x) {
    memset(x, 0, sizeof *x);
    REQUIRE(kvmux_call_async(c, req, T, on_reply, x) == 0);
    int64_t end = test_now_ms() + T;
    while (!atomic_load(&x->done) && test_now_ms() < end) test_sleep_ms(1);
    REQUIRE(atomic_load(&x->done));
    return x->rc;
}

static void test_async(int version) {
    kvmux_client *c = connect_v(g_srv.port, version);
    const char *k = version == 1 ? "as1" : "as2";
    uint64_t v0 = 0;
    CHECK_EQ(kvmux_set(c, KS(k), "x", 1, 5000, &v0, T), 0);
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.key = k;
    q.key_len = strlen(k);
    cbres x;
    q.op = KVMUX_EXISTS;
    CHECK_EQ(async_run(c, &q, &x), 0);
    CHECK_EQ(x.version, v0);
    q.op = KVMUX_TTL;
    CHECK_EQ(async_run(c, &q, &x), 0);
    CHECK(x.number > 4000 && x.number <= 5000);
    q.op = KVMUX_PERSIST;
    CHECK_EQ(async_run(c, &q, &x), 0);
    CHECK(x.version > v0);
    q.op = KVMUX_TTL;
    CHECK_EQ(async_run(c, &q, &x), 0);
    CHECK_EQ(x.number, -1);
    q.op = KVMUX_EXPIRE;
    q.ttl_ms = 0;
    CHECK_EQ(async_run(c, &q, &x), KVMUX_EBADREQ);
    q.ttl_ms = 7000;
    CHECK_EQ(async_run(c, &q, &x), 0);
    /* Futures, and SCAN's key list through the generic reply. */
    q.op = KVMUX_TTL;
    kvmux_future *f = NULL;
    REQUIRE(kvmux_call_future(c, &q, T, &f) == 0);
    CHECK_EQ(kvmux_future_wait(f, T), 0);
    kvmux_reply r;
    CHECK_EQ(kvmux_future_result(f, &r), 0);
    CHECK(r.number > 6000 && r.number <= 7000);
    kvmux_future_free(f);
    memset(&q, 0, sizeof q);
    q.op = KVMUX_SCAN;
    q.key = k;
    q.key_len = strlen(k); /* prefix = the key itself */
    q.count = 1000;
    int found = 0;
    do {
        REQUIRE(kvmux_call_future(c, &q, T, &f) == 0);
        CHECK_EQ(kvmux_future_wait(f, T), 0);
        REQUIRE(kvmux_future_result(f, &r) == 0);
        size_t off = 0, kl;
        const uint8_t *key;
        while (kvmux_scan_next(r.value, r.value_len, &off, &key, &kl)) {
            CHECK(kl == strlen(k) && memcmp(key, k, kl) == 0);
            found++;
        }
        q.cursor = r.version;
        kvmux_reply_free(&r);
        kvmux_future_free(f);
    } while (q.cursor != 0);
    CHECK_EQ(found, 1);
    kvmux_close(c);
}

/* ---- SCAN ---- */

/* Scan everything under prefix; seen[i] counts key "<prefix><i>". */
static int scan_all(kvmux_client *c, const char *prefix, uint32_t count, uint32_t *seen,
                    uint32_t n, uint32_t *foreign, void (*between)(void *), void *arg) {
    uint64_t cur = 0;
    int steps = 0;
    size_t plen = prefix ? strlen(prefix) : 0;
    do {
        kvmux_keys *ks = NULL;
        int rc = kvmux_scan(c, cur, prefix, plen, count, &ks, T);
        CHECK_EQ(rc, 0);
        if (rc != 0) return -1;
        for (size_t i = 0; i < ks->count; i++) {
            char buf[64];
            size_t kl = ks->keys[i].len;
            if (kl < plen || kl - plen >= sizeof buf ||
                memcmp(ks->keys[i].data, prefix, plen) != 0) {
                (*foreign)++;
                continue;
            }
            memcpy(buf, ks->keys[i].data + plen, kl - plen);
            buf[kl - plen] = 0;
            char *end;
            unsigned long x = strtoul(buf, &end, 10);
            if (*end || x >= n) (*foreign)++;
            else seen[x]++;
        }
        cur = ks->cursor;
        kvmux_keys_free(ks);
        if (between) between(arg);
    } while (cur != 0 && ++steps < 100000);
    return steps + 1;
}

typedef struct grower {
    kvmux_client *c;
    unsigned long next;
} grower;

static void grow_some(void *p) {
    grower *g = p;
    for (int i = 0; i < 200; i++) {
        char k[32];
        int n = snprintf(k, sizeof k, "grow:%lu", g->next++);
        kvmux_set(g->c, k, (size_t)n, "g", 1, 0, NULL, T);
    }
}

static void test_scan(int version) {
    kvmux_client *c = connect_v(g_srv.port, version);
    char prefix[16];
    snprintf(prefix, sizeof prefix, "scan%d:", version);
    const uint32_t n = 3000;
    for (uint32_t i = 0; i < n; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "%s%u", prefix, i);
        REQUIRE(kvmux_set(c, k, (size_t)kl, "v", 1, 0, NULL, T) == 0);
    }
    uint32_t *seen = calloc(n, sizeof *seen), foreign = 0;
    REQUIRE(seen);
    int steps = scan_all(c, prefix, 100, seen, n, &foreign, NULL, NULL);
    uint32_t missing = 0, dup = 0;
    for (uint32_t i = 0; i < n; i++) {
        missing += seen[i] == 0;
        dup += seen[i] > 1;
    }
    CHECK_EQ(missing, 0);
    CHECK_EQ(dup, 0);
    CHECK_EQ(foreign, 0);
    printf("v%d scan, prefix %s: %u keys in %d steps of count 100\n", version, prefix, n, steps);

    /* No prefix, while another connection grows the store between steps:
     * every one of our keys still comes back. */
    memset(seen, 0, n * sizeof *seen);
    grower g = {connect_v(g_srv.port, 2), (unsigned long)version * 1000000ul};
    foreign = 0;
    steps = scan_all(c, prefix, 50, seen, n, &foreign, grow_some, &g);
    missing = 0;
    for (uint32_t i = 0; i < n; i++) missing += seen[i] == 0;
    CHECK_EQ(missing, 0);
    printf("v%d scan while growing: %d steps, %lu keys added meanwhile, %u missing\n", version,
           steps, g.next - (unsigned long)version * 1000000ul, missing);
    kvmux_close(g.c);

    /* A client whose frames are small still gets whole replies. */
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_frame_size = 4096;
    o.max_protocol_version = (uint8_t)version;
    kvmux_client *small = NULL;
    REQUIRE(kvmux_connect(&small, "127.0.0.1", g_srv.port, &o) == 0);
    memset(seen, 0, n * sizeof *seen);
    foreign = 0;
    steps = scan_all(small, prefix, 1000, seen, n, &foreign, NULL, NULL);
    missing = 0;
    for (uint32_t i = 0; i < n; i++) missing += seen[i] == 0;
    CHECK_EQ(missing, 0);
    CHECK(steps > 3000 * 10 / 4096); /* the 4 KiB frames split it up */
    kvmux_close(small);
    free(seen);
    kvmux_close(c);
}

/* ---- persistence ---- */

static char logpath[300];

static void aof_start(test_server *s, uint16_t port) {
    const char *args[] = {"--aof", logpath, "--fsync", "always", "--aof-rewrite-min", "16K", NULL};
    if (port) REQUIRE(test_server_start_on_port(s, port, args) == 0);
    else REQUIRE(test_server_start(s, args) == 0);
}

static uint64_t stat_of(kvmux_client *c, const char *name) {
    kvmux_value *v = NULL;
    if (kvmux_stats(c, "aof_", &v, T) != 0) return UINT64_MAX;
    uint64_t x = test_stat_value(v->data, v->len, name);
    kvmux_value_free(v);
    return x;
}

static void test_aof(void) {
    test_server s;
    unlink(logpath);
    aof_start(&s, 0);
    kvmux_client *c = connect_v(s.port, 2);
    uint64_t va = 0, vb = 0, vc = 0;
    CHECK_EQ(kvmux_set(c, KS("a"), "A", 1, 0, NULL, T), 0);
    CHECK_EQ(kvmux_set(c, KS("b"), "B", 1, 3600000, NULL, T), 0);
    CHECK_EQ(kvmux_set(c, KS("c"), "C", 1, 3600000, NULL, T), 0);
    CHECK_EQ(kvmux_expire(c, KS("a"), 7200000, &va, T), 0);
    CHECK_EQ(kvmux_persist(c, KS("b"), &vb, T), 0);
    CHECK_EQ(kvmux_expire(c, KS("c"), 300, &vc, T), 0);
    /* kill -9 right after the acknowledgements (--fsync always). */
    uint16_t port = s.port;
    kvmux_close(c);
    test_server_kill(&s);
    aof_start(&s, port);
    c = connect_v(s.port, 2);
    int64_t ttl = 0;
    uint64_t v = 0;
    CHECK_EQ(kvmux_ttl(c, KS("a"), &ttl, T), 0);
    CHECK(ttl > 7100000 && ttl <= 7200000);
    CHECK_EQ(kvmux_exists(c, KS("a"), &v, T), 0);
    CHECK_EQ(v, va);
    CHECK_EQ(kvmux_ttl(c, KS("b"), &ttl, T), 0);
    CHECK_EQ(ttl, -1);
    CHECK_EQ(kvmux_exists(c, KS("b"), &v, T), 0);
    CHECK_EQ(v, vb);
    test_sleep_ms(400); /* c's 300 ms are over (time runs while it is down too) */
    CHECK_EQ(kvmux_exists(c, KS("c"), NULL, T), KVMUX_ENOTFOUND);

    /* Compaction: enough writes to pass 16K and double, then the TTLs
     * must be what the snapshot says after another kill -9. */
    uint64_t rewrites0 = stat_of(c, "aof_rewrites");
    CHECK_EQ(kvmux_expire(c, KS("b"), 5400000, &vb, T), 0);
    CHECK_EQ(kvmux_persist(c, KS("a"), &va, T), 0);
    char filler[200];
    memset(filler, 'f', sizeof filler);
    int64_t end = test_now_ms() + 20000;
    for (int i = 0; stat_of(c, "aof_rewrites") == rewrites0 && test_now_ms() < end; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "fill%d", i % 50);
        CHECK_EQ(kvmux_set(c, k, (size_t)kl, filler, sizeof filler, 0, NULL, T), 0);
        if (i % 100 == 99) test_sleep_ms(10);
    }
    CHECK(stat_of(c, "aof_rewrites") > rewrites0);
    while (stat_of(c, "aof_rewriting") == 1 && test_now_ms() < end) test_sleep_ms(10);
    kvmux_close(c);
    test_server_kill(&s);
    aof_start(&s, port);
    c = connect_v(s.port, 1);
    CHECK_EQ(kvmux_ttl(c, KS("a"), &ttl, T), 0);
    CHECK_EQ(ttl, -1);
    CHECK_EQ(kvmux_exists(c, KS("a"), &v, T), 0);
    CHECK_EQ(v, va);
    CHECK_EQ(kvmux_ttl(c, KS("b"), &ttl, T), 0);
    CHECK(ttl > 5300000 && ttl <= 5400000);
    CHECK_EQ(kvmux_exists(c, KS("b"), &v, T), 0);
    CHECK_EQ(v, vb);
    kvmux_close(c);
    CHECK_EQ(test_server_stop(&s, 5000), 0);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    REQUIRE(test_server_start(&g_srv, NULL) == 0);
    for (int v = 1; v <= 2; v++) {
        test_ops(v);
        test_wait_sees_ttl_change(v);
        test_async(v);
        test_scan(v);
    }
    CHECK_EQ(test_server_stop(&g_srv, 5000), 0);
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/kvmux-keys-it-XXXXXX");
    REQUIRE(mkdtemp(dir));
    snprintf(logpath, sizeof logpath, "%s/kvmux.aof", dir);
    test_aof();
    unlink(logpath);
    char rw[320];
    snprintf(rw, sizeof rw, "%s.rewrite", logpath);
    unlink(rw);
    rmdir(dir);
    return test_report();
}
