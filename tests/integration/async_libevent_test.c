/* The libevent adapter (include/kvmux/adapters/libevent.h) with a real
 * libevent loop and the real kvmuxd: the handshake reported by the
 * status callback, SET / GET / EXISTS / SCAN answered through callbacks
 * (each submitting the next, as real code does), a call timeout served by
 * the adapter's timer (a WAIT the server holds longer than the call's
 * timeout), 200 requests in flight at once, and kvmux_close from inside a
 * reply callback (the adapter is freed as that event returns, which ASan
 * and valgrind would catch if it were touched after), after which the
 * loop must end by itself: nothing of the adapter is left in it. A guard
 * timer bounds the loop (20 s). */
#include <event2/event.h>
#include <signal.h>
#include <string.h>

#include "kvmux.h"
#include "kvmux/adapters/libevent.h"
#include "testutil.h"

static test_server g_srv;
static struct event_base *g_base;
static int g_status = 1;     /* 1 = not reported yet */
static int g_step;
static int g_many_done, g_many_ok;
static int g_closed_in_cb;
static struct event *g_guard; /* bounds the loop; removed once done */
static int g_guard_fired;

static void on_guard(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    (void)arg;
    g_guard_fired = 1;
    event_base_loopbreak(g_base);
}

static void on_status(kvmux_client *c, int status, void *ud) {
    (void)c;
    (void)ud;
    g_status = status;
}

static void next_step(kvmux_client *c);

static void on_step(kvmux_client *c, int result, kvmux_reply *r, void *ud) {
    (void)ud;
    switch (g_step) {
    case 0: /* SET */
        CHECK_EQ(result, 0);
        CHECK(r->version > 0);
        break;
    case 1: /* GET */
        CHECK_EQ(result, 0);
        CHECK(r->value_len == 5 && memcmp(r->value, "hello", 5) == 0);
        break;
    case 2: /* EXISTS */
        CHECK_EQ(result, 0);
        break;
    case 3: { /* SCAN, prefix "le:" */
        CHECK_EQ(result, 0);
        size_t off = 0, kl;
        const uint8_t *k;
        int n = 0;
        while (kvmux_scan_next(r->value, r->value_len, &off, &k, &kl)) n++;
        CHECK(n <= 1); /* one key matches; a step may return none yet */
        break;
    }
    case 4: /* WAIT held by the server for 5 s, call timeout 200 ms */
        CHECK_EQ(result, KVMUX_ETIMEDOUT);
        break;
    default:
        break;
    }
    g_step++;
    next_step(c);
}

static void on_many(kvmux_client *c, int result, kvmux_reply *r, void *ud) {
    (void)r;
    (void)ud;
    g_many_done++;
    if (result == 0) g_many_ok++;
    if (g_many_done == 200) {
        /* Close from inside a callback: the remaining work must not touch
         * the adapter after its cleanup. */
        g_closed_in_cb = 1;
        kvmux_close(c);
        event_del(g_guard); /* now only the adapter could keep the loop alive */
    }
}

static void submit(kvmux_client *c, kvmux_op op, const char *key, int timeout_ms) {
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = op;
    q.key = key;
    q.key_len = key ? strlen(key) : 0;
    if (op == KVMUX_SET) {
        q.value = "hello";
        q.value_len = 5;
    }
    if (op == KVMUX_SCAN) q.count = 1000;
    REQUIRE(kvmux_call_async(c, &q, timeout_ms, on_step, NULL) == 0);
}

static void next_step(kvmux_client *c) {
    switch (g_step) {
    case 1: submit(c, KVMUX_GET, "le:a", 2000); break;
    case 2: submit(c, KVMUX_EXISTS, "le:a", 2000); break;
    case 3: submit(c, KVMUX_SCAN, "le:", 2000); break;
    case 4: {
        /* WAIT on an absent key for version 0 parks on the server. */
        kvmux_request q;
        memset(&q, 0, sizeof q);
        q.op = KVMUX_WAIT;
        q.key = "le:absent";
        q.key_len = 9;
        q.wait_ms = 5000;
        REQUIRE(kvmux_call_async(c, &q, 200, on_step, NULL) == 0);
        break;
    }
    case 5:
        for (int i = 0; i < 200; i++) {
            kvmux_request q;
            memset(&q, 0, sizeof q);
            q.op = i % 2 ? KVMUX_GET : KVMUX_TTL;
            q.key = "le:a";
            q.key_len = 4;
            REQUIRE(kvmux_call_async(c, &q, 5000, on_many, NULL) == 0);
        }
        break;
    default:
        break;
    }
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    REQUIRE(test_server_start(&g_srv, NULL) == 0);
    g_base = event_base_new();
    REQUIRE(g_base);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, "127.0.0.1", g_srv.port, NULL) == 0);
    REQUIRE(kvmux_libevent_attach(c, g_base) == 0);
    CHECK_EQ(kvmux_libevent_attach(c, g_base), KVMUX_EINVAL); /* once only */
    kvmux_async_set_status_cb(c, on_status, NULL);
    submit(c, KVMUX_SET, "le:a", 2000); /* waits in the backlog for the handshake */
    struct timeval limit = {20, 0};
    g_guard = evtimer_new(g_base, on_guard, NULL);
    REQUIRE(g_guard);
    evtimer_add(g_guard, &limit);
    int64_t t0 = test_now_ms();
    event_base_dispatch(g_base);
    int64_t took = test_now_ms() - t0;
    CHECK_EQ(g_status, 0);
    CHECK_EQ(g_step, 5);
    CHECK_EQ(g_many_done, 200);
    CHECK_EQ(g_many_ok, 200);
    CHECK(g_closed_in_cb);
    /* The loop ended because nothing was left to watch (the adapter's
     * events went with the client), long before the 20 s limit. */
    CHECK(!g_guard_fired);
    CHECK(took < 15000);
    printf("libevent loop: 5 steps and 200 requests in %lld ms\n", (long long)took);
    event_free(g_guard);
    event_base_free(g_base);
    CHECK_EQ(test_server_stop(&g_srv, 5000), 0);
    return test_report();
}
