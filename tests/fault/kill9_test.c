/* kill -9 the server while callers wait: nobody may hang.
 *
 * Guide lesson 1 ("callers hang when the connection drops"): every pending
 * entry completes exactly once, and connection loss is one of the ways. Here
 * 64 threads sit in kvmux_wait (parked server-side, long wait_ms) on one
 * client; the server is SIGKILLed (no ERROR, no GOAWAY, just a reset or
 * EOF). Every thread must come back with a fatal code (kvmux_is_fatal:
 * KVMUX_ECLOSED or KVMUX_EIO) within 1 s of the kill; the worst latency is
 * printed. Afterwards new calls fail fast with a fatal code, and kvmux_close
 * returns promptly. A second round does the same while 32 threads hammer
 * GET/SET (requests in every stage: queued, written, being answered). A
 * third stalls the server with SIGSTOP: calls time out on their own
 * deadlines without costing the connection, late replies after SIGCONT are
 * dropped, and a kill -9 of the stopped server still fails everyone fast.
 *
 * Bounds: threads report through atomics and the main thread waits for them
 * with a deadline, so a client bug shows up as a failed check, not a hung
 * test; stuck threads are then reported and the process exits.
 */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "testutil.h"

#define NWAITERS 64
#define NLOADERS 32
#define LONG_WAIT_MS 60000
#define MAX_LATENCY_MS 1000
#define FAST_MS 200
#define CLOSE_MS 1000

static kvmux_client *g_c;

typedef struct caller {
    int id;
    atomic_int started;
    atomic_int done;
    int rc;          /* last (terminal) result */
    long ok_calls;   /* loaders: successful calls before the kill */
    int64_t t_done;
} caller;

/* Thread body: one long WAIT on a key nobody writes; result into w. */
static void *waiter_main(void *arg) {
    caller *w = arg;
    char key[32];
    snprintf(key, sizeof key, "kill9:w%d", w->id);
    atomic_store(&w->started, 1);
    kvmux_value *v = NULL;
    w->rc = kvmux_wait(g_c, key, strlen(key), 0, LONG_WAIT_MS, &v, KVMUX_TIMEOUT_DEFAULT);
    w->t_done = test_now_ms();
    kvmux_value_free(v);
    atomic_store(&w->done, 1);
    return NULL;
}

/* Loader: SET/GET its own key until a call fails (expected: the kill). A
 * failure before the kill is a test failure: the main thread checks that no
 * loader is done just before it kills the server. */
static void *loader_main(void *arg) {
    caller *w = arg;
    char key[32], val[32];
    snprintf(key, sizeof key, "kill9:l%d", w->id);
    atomic_store(&w->started, 1);
    int rc = 0;
    for (long i = 0; i < 100000000L; i++) {
        snprintf(val, sizeof val, "%ld", i);
        if (i & 1) {
            kvmux_value *v = NULL;
            rc = kvmux_get(g_c, key, strlen(key), &v, 10000);
            kvmux_value_free(v);
        } else {
            rc = kvmux_set(g_c, key, strlen(key), val, strlen(val), 0, NULL, 10000);
        }
        if (rc != 0) break;
        w->ok_calls++;
    }
    w->t_done = test_now_ms();
    w->rc = rc;
    atomic_store(&w->done, 1);
    return NULL;
}

/* Wait until every caller is done or the deadline passes; returns how many
 * finished. */
static int wait_all(caller *cs, int n, int64_t deadline) {
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++) done += atomic_load(&cs[i].done);
        if (done == n || test_now_ms() >= deadline) return done;
        test_sleep_ms(1);
    }
}

/* Common tail: later calls fail fast, close is prompt. */
static void check_after_loss(const char *round) {
    int64_t t0 = test_now_ms();
    kvmux_value *v = NULL;
    int rc = kvmux_get(g_c, "kill9:x", 7, &v, 5000);
    kvmux_value_free(v);
    int64_t dt = test_now_ms() - t0;
    printf("[%s] call after loss: %s in %lld ms\n", round, kvmux_strerror(rc), (long long)dt);
    CHECK(kvmux_is_fatal(rc));
    CHECK(dt < FAST_MS);
    t0 = test_now_ms();
    rc = kvmux_ping(g_c, 5000);
    CHECK(kvmux_is_fatal(rc));
    CHECK(test_now_ms() - t0 < FAST_MS);
    int cerr = kvmux_connection_error(g_c, NULL, 0);
    CHECK(kvmux_is_fatal(cerr));
    CHECK(cerr == KVMUX_ECLOSED || cerr == KVMUX_EIO);

    t0 = test_now_ms();
    kvmux_close(g_c);
    g_c = NULL;
    dt = test_now_ms() - t0;
    printf("[%s] kvmux_close took %lld ms\n", round, (long long)dt);
    CHECK(dt < CLOSE_MS);
}

/* Round 1: kill -9 with NWAITERS parked WAITs. */
static void round_waiters(void) {
    test_server srv;
    REQUIRE(test_server_start(&srv, NULL) == 0);
    REQUIRE(kvmux_connect(&g_c, "127.0.0.1", srv.port, NULL) == 0);

    static caller ws[NWAITERS];
    pthread_t th[NWAITERS];
    for (int i = 0; i < NWAITERS; i++) {
        ws[i].id = i;
        REQUIRE(pthread_create(&th[i], NULL, waiter_main, &ws[i]) == 0);
    }
    int64_t deadline = test_now_ms() + 5000;
    for (int i = 0; i < NWAITERS; i++)
        while (!atomic_load(&ws[i].started) && test_now_ms() < deadline) test_sleep_ms(1);
    /* Give the WAITs time to be written and parked; a PING answered after
     * them shows the connection is healthy at the moment of the kill. */
    test_sleep_ms(300);
    CHECK_EQ(kvmux_ping(g_c, 5000), 0);
    int early = wait_all(ws, NWAITERS, test_now_ms());
    CHECK_EQ(early, 0);

    int64_t t_kill = test_now_ms();
    kill(srv.pid, SIGKILL);
    int done = wait_all(ws, NWAITERS, t_kill + 5000);
    test_server_kill(&srv); /* reap */
    CHECK_EQ(done, NWAITERS);

    int64_t max_lat = 0;
    int fatal = 0;
    for (int i = 0; i < NWAITERS; i++) {
        if (!atomic_load(&ws[i].done)) continue;
        int64_t lat = ws[i].t_done - t_kill;
        if (lat > max_lat) max_lat = lat;
        if (kvmux_is_fatal(ws[i].rc) && (ws[i].rc == KVMUX_ECLOSED || ws[i].rc == KVMUX_EIO))
            fatal++;
        else
            fprintf(stderr, "waiter %d returned %d (%s)\n", i, ws[i].rc, kvmux_strerror(ws[i].rc));
    }
    printf("[waiters] %d/%d returned a fatal error; max latency after kill %lld ms\n", fatal,
           NWAITERS, (long long)max_lat);
    CHECK_EQ(fatal, NWAITERS);
    CHECK(max_lat <= MAX_LATENCY_MS);
    if (done != NWAITERS) {
        fprintf(stderr, "%d waiters still blocked 5 s after kill -9\n", NWAITERS - done);
        test_report();
        exit(1);
    }
    for (int i = 0; i < NWAITERS; i++) pthread_join(th[i], NULL);
    check_after_loss("waiters");
}

/* Round 2: kill -9 under GET/SET load plus some parked WAITs. */
static void round_under_load(void) {
    test_server srv;
    REQUIRE(test_server_start(&srv, NULL) == 0);
    REQUIRE(kvmux_connect(&g_c, "127.0.0.1", srv.port, NULL) == 0);

    static caller ls[NLOADERS], ws[NWAITERS / 4];
    pthread_t lt[NLOADERS], wt[NWAITERS / 4];
    for (int i = 0; i < NWAITERS / 4; i++) {
        ws[i].id = 1000 + i;
        REQUIRE(pthread_create(&wt[i], NULL, waiter_main, &ws[i]) == 0);
    }
    for (int i = 0; i < NLOADERS; i++) {
        ls[i].id = i;
        REQUIRE(pthread_create(&lt[i], NULL, loader_main, &ls[i]) == 0);
    }
    test_sleep_ms(500);
    int early = wait_all(ls, NLOADERS, test_now_ms()) + wait_all(ws, NWAITERS / 4, test_now_ms());
    CHECK_EQ(early, 0); /* nobody failed before the kill */

    int64_t t_kill = test_now_ms();
    kill(srv.pid, SIGKILL);
    int done = wait_all(ls, NLOADERS, t_kill + 5000) + wait_all(ws, NWAITERS / 4, t_kill + 5000);
    test_server_kill(&srv);
    CHECK_EQ(done, NLOADERS + NWAITERS / 4);

    int64_t max_lat = 0;
    long calls = 0;
    int fatal = 0;
    for (int i = 0; i < NLOADERS + NWAITERS / 4; i++) {
        caller *c = i < NLOADERS ? &ls[i] : &ws[i - NLOADERS];
        if (!atomic_load(&c->done)) continue;
        calls += c->ok_calls;
        int64_t lat = c->t_done - t_kill;
        if (lat > max_lat) max_lat = lat;
        if (c->rc == KVMUX_ECLOSED || c->rc == KVMUX_EIO)
            fatal++;
        else
            fprintf(stderr, "caller %d returned %d (%s)\n", c->id, c->rc, kvmux_strerror(c->rc));
    }
    printf("[load] %ld calls before the kill; %d/%d callers fatal; max latency %lld ms\n", calls,
           fatal, NLOADERS + NWAITERS / 4, (long long)max_lat);
    CHECK(calls > 0);
    CHECK_EQ(fatal, NLOADERS + NWAITERS / 4);
    CHECK(max_lat <= MAX_LATENCY_MS);
    if (done != NLOADERS + NWAITERS / 4) {
        fprintf(stderr, "callers still blocked 5 s after kill -9\n");
        test_report();
        exit(1);
    }
    for (int i = 0; i < NLOADERS; i++) pthread_join(lt[i], NULL);
    for (int i = 0; i < NWAITERS / 4; i++) pthread_join(wt[i], NULL);
    check_after_loss("load");
}

/* A stalled server (SIGSTOP): calls time out on their own deadlines while
 * the connection stays healthy (a timeout never tears it down); after
 * SIGCONT the late replies are dropped and new calls get their own answers.
 * Then kill -9 while still holding tombstones: everyone fails fast. */
typedef struct stall_arg {
    int id;
    int rc;
    int64_t dt;
} stall_arg;

/* Thread body: one GET with a 300 ms deadline; result and time into a. */
static void *stall_main(void *arg) {
    stall_arg *a = arg;
    char key[32];
    snprintf(key, sizeof key, "kill9:s%d", a->id);
    kvmux_value *v = NULL;
    int64_t t0 = test_now_ms();
    a->rc = kvmux_get(g_c, key, strlen(key), &v, 300);
    a->dt = test_now_ms() - t0;
    kvmux_value_free(v);
    return NULL;
}

/* Round 3: SIGSTOP / SIGCONT, then kill -9 of the stopped server. */
static void round_stall(void) {
    enum { N = 16 };
    test_server srv;
    REQUIRE(test_server_start(&srv, NULL) == 0);
    REQUIRE(kvmux_connect(&g_c, "127.0.0.1", srv.port, NULL) == 0);
    for (int i = 0; i < N; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "kill9:s%d", i);
        snprintf(val, sizeof val, "stall-%d", i);
        CHECK_EQ(kvmux_set(g_c, key, strlen(key), val, strlen(val), 0, NULL, 5000), 0);
    }

    REQUIRE(kill(srv.pid, SIGSTOP) == 0);
    stall_arg args[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        args[i] = (stall_arg){i, 0, 0};
        REQUIRE(pthread_create(&th[i], NULL, stall_main, &args[i]) == 0);
    }
    /* Bounded: each call has a 300 ms deadline. */
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    int64_t max_dt = 0;
    int timed_out = 0;
    for (int i = 0; i < N; i++) {
        if (args[i].rc == KVMUX_ETIMEDOUT) timed_out++;
        if (args[i].dt > max_dt) max_dt = args[i].dt;
        CHECK(args[i].dt >= 250);
    }
    printf("[stall] %d/%d calls timed out against a stopped server; slowest %lld ms (timeout 300)\n",
           timed_out, N, (long long)max_dt);
    CHECK_EQ(timed_out, N);
    CHECK(max_dt < 1500);
    CHECK_EQ(kvmux_connection_error(g_c, NULL, 0), 0);

    REQUIRE(kill(srv.pid, SIGCONT) == 0);
    /* The late replies (values "stall-i") must not answer these GETs. */
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) {
            char key[32], want[32];
            snprintf(key, sizeof key, "kill9:s%d", (i + round) % N);
            snprintf(want, sizeof want, "stall-%d", (i + round) % N);
            kvmux_value *v = NULL;
            int rc = kvmux_get(g_c, key, strlen(key), &v, 5000);
            CHECK(rc == 0 && v->len == strlen(want) && memcmp(v->data, want, v->len) == 0);
            kvmux_value_free(v);
        }
    }
    CHECK_EQ(kvmux_connection_error(g_c, NULL, 0), 0);

    /* Stop it again with calls pending, then kill -9: prompt fatal errors. */
    REQUIRE(kill(srv.pid, SIGSTOP) == 0);
    static caller ws[N];
    pthread_t wt[N];
    for (int i = 0; i < N; i++) {
        ws[i].id = 2000 + i;
        REQUIRE(pthread_create(&wt[i], NULL, waiter_main, &ws[i]) == 0);
    }
    test_sleep_ms(200);
    CHECK_EQ(wait_all(ws, N, test_now_ms()), 0);
    int64_t t_kill = test_now_ms();
    kill(srv.pid, SIGKILL);
    int done = wait_all(ws, N, t_kill + 5000);
    test_server_kill(&srv);
    CHECK_EQ(done, N);
    if (done != N) {
        test_report();
        exit(1);
    }
    int64_t max_lat = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(wt[i], NULL);
        CHECK(ws[i].rc == KVMUX_ECLOSED || ws[i].rc == KVMUX_EIO);
        if (ws[i].t_done - t_kill > max_lat) max_lat = ws[i].t_done - t_kill;
    }
    printf("[stall] kill -9 of a stopped server: %d callers failed, max latency %lld ms\n", N,
           (long long)max_lat);
    CHECK(max_lat <= MAX_LATENCY_MS);
    check_after_loss("stall");
}

/* The three rounds, each with its own server and client. */
int main(void) {
    /* SIGPIPE is left at its default on purpose: the library must never
     * raise it (MSG_NOSIGNAL), or this test dies. */
    round_waiters();
    round_under_load();
    round_stall();
    return test_report();
}
