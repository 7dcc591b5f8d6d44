/* The blocking-call wake path (call.c): callers wait on a futex word in a
 * record on their own stack, the reader completes the record under the
 * client mutex and wakes the first caller of the batch after unlocking,
 * each woken caller wakes the next (a chain), and the chain's tail kicks
 * the writer for the requests the chain queued.
 *
 * Against the real kvmuxd, one connection:
 *   chain:    64 threads, each SET/GET pairs on its own key: every GET
 *             returns exactly its thread's last value (a record never gets
 *             another call's result, however the chain runs), and every
 *             call returns (the tail's kick is never lost).
 *   race:     32 threads whose calls time out at the very moment their
 *             answer arrives: WAIT with the client timeout equal to the
 *             server's wait_ms, and GETs with a 1 ms timeout. A WAIT
 *             may only end with KVMUX_ETIMEDOUT (from either side); a GET
 *             with OK and its own value, or KVMUX_ETIMEDOUT; and the
 *             long-timeout GET after each must return its own value (a
 *             late reply never reaches a newer call).
 *   close:    64 threads blocked in a WAIT the server parks; kvmux_close
 *             returns and every call ends with KVMUX_ECLOSED (the failure
 *             wakes every record at once).
 *   kill:     64 threads running GETs while the server is killed: every
 *             thread's last call fails promptly with a fatal code, none
 *             hangs, and kvmux_close returns.
 */
#include <pthread.h>
#include <string.h>

#include "kvmux.h"
#include "testutil.h"

#define LONG_MS 20000
#define MAX_REPORTS 20

static atomic_int reports;
static kvmux_client *client;
static test_server srv;

static void fail(const char *what, int tid, long i, int rc) {
    atomic_fetch_add(&test_failed, 1);
    if (atomic_fetch_add(&reports, 1) < MAX_REPORTS)
        fprintf(stderr, "thread %d step %ld: %s: rc %d (%s)\n", tid, i, what, rc,
                kvmux_strerror(rc));
}

/* GET key and compare with want (NULL: any). Returns the call's code. */
static int get_check(int tid, long i, const char *key, const char *want, int timeout_ms) {
    kvmux_value *v = NULL;
    int rc = kvmux_get(client, key, strlen(key), &v, timeout_ms);
    if (rc == 0 && want && (v->len != strlen(want) || memcmp(v->data, want, v->len) != 0))
        fail("GET returned another value", tid, i, rc);
    kvmux_value_free(v);
    return rc;
}

/* ---- chain ---- */

typedef struct targ {
    int tid;
    long n;
    int last_rc;
    int64_t returned_at;
} targ;

static void *chain_main(void *p) {
    targ *a = p;
    char key[32], val[48];
    snprintf(key, sizeof key, "wake:c:%d", a->tid);
    for (long i = 0; i < a->n; i++) {
        snprintf(val, sizeof val, "v-%d-%ld", a->tid, i);
        int rc = kvmux_set(client, key, strlen(key), val, strlen(val), 0, NULL, LONG_MS);
        if (rc != 0) {
            fail("SET", a->tid, i, rc);
            return NULL;
        }
        rc = get_check(a->tid, i, key, val, LONG_MS);
        if (rc != 0) {
            fail("GET", a->tid, i, rc);
            return NULL;
        }
    }
    return NULL;
}

static void run_threads(int n, void *(*fn)(void *), targ *args, long per) {
    pthread_t th[64];
    for (int i = 0; i < n; i++) {
        args[i].tid = i;
        args[i].n = per;
        args[i].last_rc = 0;
        REQUIRE(pthread_create(&th[i], NULL, fn, &args[i]) == 0);
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

/* ---- race ---- */

static atomic_long wait_timeouts, get_ok, get_timeouts;

static void *race_main(void *p) {
    targ *a = p;
    char key[32], val[48];
    snprintf(key, sizeof key, "wake:r:%d", a->tid);
    snprintf(val, sizeof val, "r-%d", a->tid);
    uint64_t ver = 0;
    int rc = kvmux_set(client, key, strlen(key), val, strlen(val), 0, &ver, LONG_MS);
    if (rc != 0) {
        fail("SET", a->tid, -1, rc);
        return NULL;
    }
    for (long i = 0; i < a->n; i++) {
        /* The key does not change: the server answers TIMEOUT after
         * wait_ms, just as the client's own deadline passes. */
        int ms = 1 + (int)(i % 4);
        kvmux_value *v = NULL;
        rc = kvmux_wait(client, key, strlen(key), ver, (uint32_t)ms, &v, ms);
        kvmux_value_free(v);
        if (rc == KVMUX_ETIMEDOUT) atomic_fetch_add(&wait_timeouts, 1);
        else fail("WAIT on an unchanged key", a->tid, i, rc);
        rc = get_check(a->tid, i, key, val, 1);
        if (rc == 0) atomic_fetch_add(&get_ok, 1);
        else if (rc == KVMUX_ETIMEDOUT) atomic_fetch_add(&get_timeouts, 1);
        else fail("GET with a 1 ms timeout", a->tid, i, rc);
        /* A late reply to either call must not reach this one. */
        rc = get_check(a->tid, i, key, val, LONG_MS);
        if (rc != 0) fail("GET after a timeout", a->tid, i, rc);
        else atomic_fetch_add(&test_passed, 1);
    }
    return NULL;
}

/* ---- close and kill ---- */

static void *park_main(void *p) {
    targ *a = p;
    kvmux_value *v = NULL;
    a->last_rc = kvmux_wait(client, "wake:absent", 11, 0, 30000, &v, LONG_MS);
    kvmux_value_free(v);
    a->returned_at = test_now_ms();
    return NULL;
}

static void *loop_main(void *p) {
    targ *a = p;
    char key[32];
    snprintf(key, sizeof key, "wake:c:%d", a->tid % 8);
    for (long i = 0;; i++) {
        int rc = get_check(a->tid, i, key, NULL, LONG_MS);
        if (rc != 0 && rc != KVMUX_ENOTFOUND) {
            a->last_rc = rc;
            a->returned_at = test_now_ms();
            return NULL;
        }
    }
}

static kvmux_client *connect_client(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", srv.port, &o);
    REQUIRE(rc == 0);
    return c;
}

int main(void) {
    REQUIRE(test_server_start(&srv, NULL) == 0);
    client = connect_client();
    static targ args[64];
    double sc = test_scale();

    /* chain */
    long per = (long)(400 * sc);
    if (per < 10) per = 10;
    int64_t t0 = test_now_ms();
    run_threads(64, chain_main, args, per);
    CHECK_EQ(atomic_load(&reports), 0);
    fprintf(stderr, "chain: 64 threads x %ld SET/GET pairs in %lld ms\n", per,
            (long long)(test_now_ms() - t0));

    /* race */
    per = (long)(300 * sc);
    if (per < 20) per = 20;
    run_threads(32, race_main, args, per);
    fprintf(stderr, "race: WAIT timeouts %ld, 1 ms GETs ok %ld / timed out %ld\n",
            atomic_load(&wait_timeouts), atomic_load(&get_ok), atomic_load(&get_timeouts));
    CHECK_EQ(atomic_load(&wait_timeouts), 32 * per);
    /* The connection is still healthy and in step. */
    CHECK_EQ(kvmux_ping(client, LONG_MS), 0);

    /* close: every parked call ends with KVMUX_ECLOSED */
    pthread_t th[64];
    for (int i = 0; i < 64; i++) {
        args[i].tid = i;
        args[i].last_rc = 1;
        REQUIRE(pthread_create(&th[i], NULL, park_main, &args[i]) == 0);
    }
    test_sleep_ms(300);
    int64_t tc = test_now_ms();
    kvmux_close(client);
    int64_t closed_in = test_now_ms() - tc;
    for (int i = 0; i < 64; i++) pthread_join(th[i], NULL);
    int eclosed = 0;
    for (int i = 0; i < 64; i++) eclosed += args[i].last_rc == KVMUX_ECLOSED;
    CHECK_EQ(eclosed, 64);
    CHECK(closed_in < 5000);

    /* kill: connection loss fails every caller at once */
    client = connect_client();
    for (int i = 0; i < 64; i++) {
        args[i].tid = i;
        args[i].last_rc = 0;
        REQUIRE(pthread_create(&th[i], NULL, loop_main, &args[i]) == 0);
    }
    test_sleep_ms(300);
    test_server_kill(&srv);
    int64_t tk = test_now_ms();
    for (int i = 0; i < 64; i++) pthread_join(th[i], NULL);
    int fatal = 0;
    for (int i = 0; i < 64; i++) {
        fatal += args[i].last_rc == KVMUX_ECLOSED || args[i].last_rc == KVMUX_EIO;
        CHECK(args[i].returned_at - tk < 5000);
    }
    CHECK_EQ(fatal, 64);
    kvmux_close(client);
    return test_report();
}
