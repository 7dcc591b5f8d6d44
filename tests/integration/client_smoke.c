/* Smoke test of libkvmux against the real kvmuxd on an ephemeral port.
 *
 * Covers: connect and server info; every operation and its error codes
 * (including the local KVMUX_EINVAL / KVMUX_ETOOBIG checks); WAIT woken by a
 * SET and WAIT expiring; 8 threads x 1000 mixed ops on one connection with
 * every result checked; a call timeout that leaves a tombstone holding the
 * only credit until the late reply (try_call sees KVMUX_EAGAIN meanwhile);
 * ids starting right before the 32-bit wrap; kvmux_close with callers
 * parked; kill -9 of the server with callers parked (all must return a
 * fatal code within 1 s, later calls fail fast); connect failures.
 *
 * Every wait is bounded: threads are joined only after checking, with a
 * deadline, that they have finished. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

static test_server g_srv;

static kvmux_client *connect_opts(const kvmux_options *o) {
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", g_srv.port, o);
    if (rc != 0) {
        char msg[256];
        kvmux_connection_error(NULL, msg, sizeof msg);
        fprintf(stderr, "connect: %s (%s)\n", kvmux_strerror(rc), msg);
    }
    REQUIRE(rc == 0 && c != NULL);
    return c;
}

static void test_ops(void) {
    kvmux_client *c = connect_opts(NULL);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, KVMUX_PROTO_V2); /* a single node offers v2 at most */
    CHECK(info.max_outstanding > 0);
    CHECK(info.max_key_size > 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    CHECK_EQ(kvmux_ping(c, 2000), 0);

    uint64_t v1 = 0, v2 = 0, cur = 0;
    CHECK_EQ(kvmux_set(c, "smoke:a", 7, "hello", 5, 0, &v1, 2000), 0);
    CHECK(v1 > 0);
    kvmux_value *val = NULL;
    CHECK_EQ(kvmux_get(c, "smoke:a", 7, &val, 2000), 0);
    REQUIRE(val != NULL);
    CHECK_EQ(val->len, 5);
    CHECK(memcmp(val->data, "hello", 5) == 0 && val->data[5] == 0);
    CHECK_EQ(val->version, v1);
    kvmux_value_free(val);

    /* CAS: right version succeeds, stale version reports the current one. */
    CHECK_EQ(kvmux_cas(c, "smoke:a", 7, v1, "world", 5, 0, &v2, 2000), 0);
    CHECK(v2 > v1);
    CHECK_EQ(kvmux_cas(c, "smoke:a", 7, v1, "x", 1, 0, &cur, 2000), KVMUX_EVERSION);
    CHECK_EQ(cur, v2);

    /* The generic call with a reply. */
    kvmux_request rq;
    memset(&rq, 0, sizeof rq);
    rq.op = KVMUX_GET;
    rq.key = "smoke:a";
    rq.key_len = 7;
    kvmux_reply rep;
    CHECK_EQ(kvmux_call(c, &rq, &rep, KVMUX_TIMEOUT_DEFAULT), 0);
    CHECK_EQ(rep.value_len, 5);
    CHECK(rep.value && memcmp(rep.value, "world", 5) == 0);
    CHECK_EQ(rep.version, v2);
    kvmux_reply_free(&rep);
    CHECK(rep.value == NULL);

    CHECK_EQ(kvmux_del(c, "smoke:a", 7, 2000), 0);
    CHECK_EQ(kvmux_del(c, "smoke:a", 7, 2000), KVMUX_ENOTFOUND);
    val = (kvmux_value *)1;
    CHECK_EQ(kvmux_get(c, "smoke:a", 7, &val, 2000), KVMUX_ENOTFOUND);
    CHECK(val == NULL);

    int64_t n = 0;
    CHECK_EQ(kvmux_incr(c, "smoke:n", 7, 5, &n, 2000), 0);
    CHECK_EQ(n, 5);
    CHECK_EQ(kvmux_incr(c, "smoke:n", 7, -7, &n, 2000), 0);
    CHECK_EQ(n, -2);
    CHECK_EQ(kvmux_set(c, "smoke:s", 7, "abc", 3, 0, NULL, 2000), 0);
    CHECK_EQ(kvmux_incr(c, "smoke:s", 7, 1, &n, 2000), KVMUX_ENOTINT);
    CHECK_EQ(kvmux_set(c, "smoke:m", 7, "9223372036854775807", 19, 0, NULL, 2000), 0);
    CHECK_EQ(kvmux_incr(c, "smoke:m", 7, 1, &n, 2000), KVMUX_EOVERFLOW);

    /* Local argument checks: nothing is sent, the connection stays fine. */
    CHECK_EQ(kvmux_set(c, NULL, 3, "v", 1, 0, NULL, 2000), KVMUX_EINVAL);
    CHECK_EQ(kvmux_set(c, "k", 0, "v", 1, 0, NULL, 2000), KVMUX_EINVAL);
    size_t big = (size_t)info.max_key_size + 1;
    char *bigkey = malloc(big);
    REQUIRE(bigkey);
    memset(bigkey, 'k', big);
    CHECK_EQ(kvmux_set(c, bigkey, big, "v", 1, 0, NULL, 2000), KVMUX_ETOOBIG);
    free(bigkey);
    size_t bigv = (size_t)info.max_value_size + 1;
    char *bigval = calloc(1, bigv);
    REQUIRE(bigval);
    CHECK_EQ(kvmux_set(c, "k", 1, bigval, bigv, 0, NULL, 2000), KVMUX_ETOOBIG);
    /* A large value that fits goes through and comes back intact. */
    size_t lv = info.max_value_size < 600000 ? info.max_value_size : 600000;
    for (size_t i = 0; i < lv; i++) bigval[i] = (char)(i * 7);
    CHECK_EQ(kvmux_set(c, "smoke:big", 9, bigval, lv, 0, NULL, 5000), 0);
    CHECK_EQ(kvmux_get(c, "smoke:big", 9, &val, 5000), 0);
    CHECK(val && val->len == lv && memcmp(val->data, bigval, lv) == 0);
    kvmux_value_free(val);
    free(bigval);
    rq.op = (kvmux_op)77;
    CHECK_EQ(kvmux_call(c, &rq, NULL, 1000), KVMUX_EINVAL);

    /* WAIT expiring server-side. */
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_wait(c, "smoke:none", 10, 0, 200, &val, KVMUX_TIMEOUT_DEFAULT),
             KVMUX_ETIMEDOUT);
    CHECK(test_now_ms() - t0 >= 150);
    CHECK(val == NULL);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    CHECK_EQ(kvmux_ping(c, 2000), 0);
    kvmux_close(c);

    /* A name that may resolve to ::1 first: every address is tried. */
    kvmux_client *c2 = NULL;
    CHECK_EQ(kvmux_connect(&c2, "localhost", g_srv.port, NULL), 0);
    CHECK_EQ(kvmux_ping(c2, 2000), 0);
    kvmux_close(c2);
}

typedef struct waiter {
    kvmux_client *c;
    const char *key;
    uint64_t version;
    uint32_t wait_ms;
    int rc;
    kvmux_value *val;
    atomic_int done;
    int64_t t_done;
} waiter;

static void *waiter_main(void *arg) {
    waiter *w = arg;
    w->rc = kvmux_wait(w->c, w->key, strlen(w->key), w->version, w->wait_ms, &w->val,
                       KVMUX_TIMEOUT_DEFAULT);
    w->t_done = test_now_ms();
    atomic_store(&w->done, 1);
    return NULL;
}

/* Wait (bounded) until every waiter is done; returns how many are. */
static int await_done(waiter *w, int n, int ms) {
    int64_t end = test_now_ms() + ms;
    int done = 0;
    while (test_now_ms() < end) {
        done = 0;
        for (int i = 0; i < n; i++) done += atomic_load(&w[i].done);
        if (done == n) break;
        test_sleep_ms(5);
    }
    return done;
}

static void test_wait_wakeup(void) {
    kvmux_client *c = connect_opts(NULL);
    waiter w = {c, "smoke:w", 0, 5000, 0, NULL, 0, 0};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, waiter_main, &w) == 0);
    test_sleep_ms(100);
    uint64_t ver = 0;
    CHECK_EQ(kvmux_set(c, "smoke:w", 7, "wake", 4, 0, &ver, 2000), 0);
    REQUIRE(await_done(&w, 1, 3000) == 1);
    pthread_join(th, NULL);
    CHECK_EQ(w.rc, 0);
    CHECK(w.val && w.val->len == 4 && memcmp(w.val->data, "wake", 4) == 0);
    CHECK(w.val && w.val->version == ver);
    kvmux_value_free(w.val);
    kvmux_close(c);
}

#define NTHREADS 8
#define NOPS 1000

typedef struct worker {
    kvmux_client *c;
    int id;
    long errors;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    char key[32], val[32];
    for (int i = 0; i < NOPS; i++) {
        snprintf(key, sizeof key, "smoke:t%d:%d", w->id, i % 50);
        int vl = snprintf(val, sizeof val, "v%d-%d", w->id, i);
        switch (i % 4) {
        case 0: {
            if (kvmux_set(w->c, key, strlen(key), val, (size_t)vl, 0, NULL, 5000) != 0)
                w->errors++;
            kvmux_value *v = NULL;
            if (kvmux_get(w->c, key, strlen(key), &v, 5000) != 0 || v->len != (size_t)vl ||
                memcmp(v->data, val, (size_t)vl) != 0)
                w->errors++;
            kvmux_value_free(v);
            break;
        }
        case 1:
            if (kvmux_incr(w->c, "smoke:counter", 13, 1, NULL, 5000) != 0) w->errors++;
            break;
        case 2:
            if (kvmux_ping(w->c, 5000) != 0) w->errors++;
            break;
        default: {
            int rc = kvmux_del(w->c, key, strlen(key), 5000);
            if (rc != 0 && rc != KVMUX_ENOTFOUND) w->errors++;
            break;
        }
        }
    }
    return NULL;
}

static void test_threads(void) {
    kvmux_client *c = connect_opts(NULL);
    worker w[NTHREADS];
    pthread_t th[NTHREADS];
    int64_t t0 = test_now_ms();
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker){c, i, 0};
        REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    long errors = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        errors += w[i].errors;
    }
    CHECK_EQ(errors, 0);
    int64_t n = 0;
    CHECK_EQ(kvmux_incr(c, "smoke:counter", 13, 0, &n, 2000), 0);
    CHECK_EQ(n, NTHREADS * (NOPS / 4));
    printf("threads: %d x %d ops in %lld ms\n", NTHREADS, NOPS, (long long)(test_now_ms() - t0));
    kvmux_close(c);
}

/* A timed-out call keeps its credit (tombstone) until the late reply. */
/* On v1 the server holds the WAIT its full 600 ms, so the tombstone keeps
 * the credit that long. (On v2 the request carries the caller's 100 ms
 * deadline and the server answers at once when it passes:
 * test_tombstone_deadline.) */
static void test_tombstone_credit(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = 1;
    o.max_protocol_version = 1;
    kvmux_client *c = connect_opts(&o);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.max_outstanding, 1);
    kvmux_value *val = NULL;
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_wait(c, "smoke:tomb", 10, 0, 600, &val, 100), KVMUX_ETIMEDOUT);
    int64_t took = test_now_ms() - t0;
    CHECK(took >= 90 && took < 400);
    /* The only credit is held by the tombstone until the server answers. */
    kvmux_request rq;
    memset(&rq, 0, sizeof rq);
    rq.op = KVMUX_PING;
    CHECK_EQ(kvmux_try_call(c, &rq, NULL, 1000), KVMUX_EAGAIN);
    t0 = test_now_ms();
    /* A blocking call waits for the credit: it comes back when the late
     * WAIT reply (~600 ms) frees the tombstone. */
    CHECK_EQ(kvmux_ping(c, 3000), 0);
    took = test_now_ms() - t0;
    CHECK(took >= 300);
    CHECK_EQ(kvmux_try_call(c, &rq, NULL, 1000), 0);
    /* A blocking call that cannot get the credit in time times out. */
    waiter w = {c, "smoke:tomb2", 0, 500, 0, NULL, 0, 0};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, waiter_main, &w) == 0);
    test_sleep_ms(100);
    t0 = test_now_ms();
    CHECK_EQ(kvmux_ping(c, 100), KVMUX_ETIMEDOUT);
    CHECK(test_now_ms() - t0 < 300);
    REQUIRE(await_done(&w, 1, 3000) == 1);
    pthread_join(th, NULL);
    CHECK_EQ(w.rc, KVMUX_ETIMEDOUT); /* server-side WAIT expiry */
    CHECK_EQ(kvmux_ping(c, 1000), 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

/* Ids start 64 before the 32-bit wrap: calls go on across it. */
/* v2: the WAIT carries the caller's deadline (DEADLINE flag); the server
 * answers TIMEOUT when it passes, so the tombstone -- and the only credit
 * -- comes back about when the caller gave up, not after wait_ms. */
static void test_tombstone_deadline(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = 1;
    kvmux_client *c = connect_opts(&o);
    kvmux_value *val = NULL;
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_wait(c, "smoke:tombd", 11, 0, 3000, &val, 100), KVMUX_ETIMEDOUT);
    CHECK_EQ(kvmux_ping(c, 3000), 0);
    int64_t took = test_now_ms() - t0;
    CHECK(took >= 90 && took < 1500);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

static void test_id_wrap(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = 4;
    o.first_request_id = 0xFFFFFFC0u;
    kvmux_client *c = connect_opts(&o);
    long bad = 0;
    for (int i = 0; i < 300; i++) {
        char v[16];
        int vl = snprintf(v, sizeof v, "%d", i);
        kvmux_value *val = NULL;
        if (kvmux_set(c, "smoke:wrap", 10, v, (size_t)vl, 0, NULL, 2000) != 0) bad++;
        if (kvmux_get(c, "smoke:wrap", 10, &val, 2000) != 0 || val->len != (size_t)vl ||
            memcmp(val->data, v, (size_t)vl) != 0)
            bad++;
        kvmux_value_free(val);
    }
    CHECK_EQ(bad, 0);
    kvmux_close(c);
}

#define NPARK 6

/* kvmux_close while callers are parked in WAIT: all return ECLOSED. */
static void test_close_with_waiters(void) {
    kvmux_client *c = connect_opts(NULL);
    waiter w[NPARK];
    pthread_t th[NPARK];
    for (int i = 0; i < NPARK; i++) {
        w[i] = (waiter){c, "smoke:park", 0, 30000, 0, NULL, 0, 0};
        REQUIRE(pthread_create(&th[i], NULL, waiter_main, &w[i]) == 0);
    }
    /* The waits last 30 s; 300 ms is ample for every thread to be inside. */
    test_sleep_ms(300);
    int64_t t0 = test_now_ms();
    kvmux_close(c);
    int64_t took = test_now_ms() - t0;
    CHECK(took < 1000);
    CHECK_EQ(await_done(w, NPARK, 2000), NPARK);
    for (int i = 0; i < NPARK; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(w[i].rc, KVMUX_ECLOSED);
        CHECK(w[i].val == NULL);
    }
}

/* kill -9 the server with callers parked: fatal code within 1 s. */
static void test_kill9(void) {
    kvmux_client *c = connect_opts(NULL);
    waiter w[NPARK];
    pthread_t th[NPARK];
    for (int i = 0; i < NPARK; i++) {
        w[i] = (waiter){c, "smoke:k9", 0, 30000, 0, NULL, 0, 0};
        REQUIRE(pthread_create(&th[i], NULL, waiter_main, &w[i]) == 0);
    }
    test_sleep_ms(300);
    int64_t t0 = test_now_ms();
    test_server_kill(&g_srv);
    CHECK_EQ(await_done(w, NPARK, 1000), NPARK);
    REQUIRE(await_done(w, NPARK, 5000) == NPARK);
    for (int i = 0; i < NPARK; i++) {
        pthread_join(th[i], NULL);
        CHECK(kvmux_is_fatal(w[i].rc));
        CHECK(w[i].t_done - t0 < 1000);
    }
    char msg[256];
    int fatal = kvmux_connection_error(c, msg, sizeof msg);
    CHECK(kvmux_is_fatal(fatal));
    CHECK(msg[0] != 0);
    t0 = test_now_ms();
    CHECK_EQ(kvmux_ping(c, 2000), fatal); /* fails fast */
    CHECK(test_now_ms() - t0 < 100);
    kvmux_close(c);

    /* Nobody listens now: connect fails with a message. */
    kvmux_client *c2 = NULL;
    CHECK_EQ(kvmux_connect(&c2, "127.0.0.1", g_srv.port, NULL), KVMUX_ECONNECT);
    CHECK(c2 == NULL);
    CHECK_EQ(kvmux_connection_error(NULL, msg, sizeof msg), KVMUX_ECONNECT);
    CHECK(strstr(msg, "connect") != NULL);
    CHECK_EQ(kvmux_connect(&c2, "no-such-host.invalid", 1, NULL), KVMUX_ECONNECT);
    CHECK_EQ(kvmux_connect(&c2, NULL, 1, NULL), KVMUX_EINVAL);
}

static void test_strerror(void) {
    int codes[] = {0, -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12, -13, -14,
                   -101, -102, -103, -104, -105};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = kvmux_strerror(codes[i]);
        CHECK(s && *s && strcmp(s, "unknown error") != 0);
        CHECK_EQ(kvmux_is_fatal(codes[i]), codes[i] <= -100);
    }
    CHECK(strcmp(kvmux_strerror(12345), "unknown error") == 0);
    kvmux_options o;
    kvmux_options_init(&o);
    CHECK_EQ(o.connect_timeout_ms, 5000);
    CHECK_EQ(o.request_timeout_ms, 5000);
    CHECK_EQ(o.queue_limit, 4096);
    CHECK_EQ(o.queue_bytes_limit, 8u << 20);
    CHECK_EQ(o.max_frame_size, 2u << 20);
}

int main(void) {
    test_strerror();
    REQUIRE(test_server_start(&g_srv, NULL) == 0);
    test_ops();
    test_wait_wakeup();
    test_threads();
    test_tombstone_credit();
    test_tombstone_deadline();
    test_id_wrap();
    test_close_with_waiters();
    test_kill9();
    return test_report();
}
