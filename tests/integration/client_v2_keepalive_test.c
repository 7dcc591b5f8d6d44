/* libkvmux keepalive (step 4): keepalive_interval_ms / keepalive_timeout_ms.
 *
 *   silent     a fake server completes the handshake, then reads and never
 *              answers: the client PINGs after the interval, and when
 *              nothing comes back within the timeout every pending call
 *              (sync and async, with 10 s timeouts of their own) fails with
 *              KVMUX_EKEEPALIVE in bounded time; later calls fail fast
 *   loop       the same through the event-loop mode (a hand-rolled poll
 *              loop standing in for libuv), the loop timer driving it
 *   healthy    the real kvmuxd with a short interval: an idle connection
 *              stays up (the server answers the PINGs), calls still work
 *   options    invalid combinations are refused */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "client_v2_fake.h"
#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

static atomic_int g_pings, g_stop;

/* Handshake, then swallow everything, counting PINGs, until the client
 * goes away (or the test says stop). */
static void script_silent(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t buf[4096];
    kvmux_frame fr;
    int64_t end = test_now_ms() + 15000;
    while (!atomic_load(&g_stop) && test_now_ms() < end) {
        int n = v2fake_read(fd, buf, sizeof buf, &fr);
        if (n == 0) break;
        if (n < 0) continue; /* read timeout: keep being silent */
        if (fr.type == KVMUX_FRAME_PING) atomic_fetch_add(&g_pings, 1);
    }
}

typedef struct call_arg {
    kvmux_client *c;
    int rc;
    int64_t ms;
} call_arg;

static void *blocked_get(void *p) {
    call_arg *a = p;
    int64_t t0 = test_now_ms();
    kvmux_value *v = NULL;
    a->rc = kvmux_get(a->c, "k", 1, &v, 10000);
    a->ms = test_now_ms() - t0;
    kvmux_value_free(v);
    return NULL;
}

static atomic_int g_cb_rc, g_cb_calls;

static void on_done(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)reply;
    (void)ud;
    atomic_store(&g_cb_rc, result);
    atomic_fetch_add(&g_cb_calls, 1);
}

static atomic_int g_status;

/* The start of a scenario against the silent fake (script_silent): the
 * counters cleared, the fake listening, and *o with a keepalive PING
 * after 100 ms of silence and 200 ms for its answer. */
static void silent_start(v2fake *f, kvmux_options *o) {
    atomic_store(&g_pings, 0);
    atomic_store(&g_stop, 0);
    atomic_store(&g_cb_calls, 0);
    atomic_store(&g_status, 0);
    v2fake_start(f, script_silent, 2, NULL, NULL);
    kvmux_options_init(o);
    o->keepalive_interval_ms = 100;
    o->keepalive_timeout_ms = 200;
}

/* The end of it: close c, let the fake go, and CHECK that it saw at least
 * one keepalive PING (one check). */
static void silent_finish(v2fake *f, kvmux_client *c) {
    kvmux_close(c);
    atomic_store(&g_stop, 1);
    v2fake_join(f);
    CHECK(atomic_load(&g_pings) >= 1);
}

static void test_silent(void) {
    v2fake f;
    kvmux_options o;
    silent_start(&f, &o);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", f.port, &o) == 0);
    call_arg a = {c, 0, 0};
    pthread_t th;
    int64_t t0 = test_now_ms();
    REQUIRE(pthread_create(&th, NULL, blocked_get, &a) == 0);
    kvmux_request r = {.op = KVMUX_GET, .key = "k2", .key_len = 2};
    CHECK_EQ(kvmux_call_async(c, &r, 10000, on_done, NULL), 0);
    pthread_join(th, NULL);
    int64_t took = test_now_ms() - t0;
    CHECK_EQ(a.rc, KVMUX_EKEEPALIVE);
    CHECK(kvmux_is_fatal(KVMUX_EKEEPALIVE));
    /* Silent since the handshake: PING at ~100 ms, dead at ~300 ms. */
    CHECK(took >= 250 && took < 3000);
    int64_t end = test_now_ms() + 3000;
    while (atomic_load(&g_cb_calls) == 0 && test_now_ms() < end) test_sleep_ms(2);
    CHECK_EQ(atomic_load(&g_cb_calls), 1);
    CHECK_EQ(atomic_load(&g_cb_rc), KVMUX_EKEEPALIVE);
    char msg[256];
    CHECK_EQ(kvmux_connection_error(c, msg, sizeof msg), KVMUX_EKEEPALIVE);
    CHECK(strstr(msg, "keepalive") != NULL);
    t0 = test_now_ms();
    CHECK_EQ(kvmux_ping(c, 5000), KVMUX_EKEEPALIVE); /* fails fast */
    CHECK(test_now_ms() - t0 < 100);
    silent_finish(&f, c);
}

/* ---- event-loop mode with a minimal poll loop ---- */

typedef struct mini_loop {
    int want_read, want_write;
    int64_t timer_at; /* INT64_MAX: disarmed */
} mini_loop;

static void ml_add_read(void *d) { ((mini_loop *)d)->want_read = 1; }
static void ml_del_read(void *d) { ((mini_loop *)d)->want_read = 0; }
static void ml_add_write(void *d) { ((mini_loop *)d)->want_write = 1; }
static void ml_del_write(void *d) { ((mini_loop *)d)->want_write = 0; }
static void ml_timer(void *d, int64_t ms) {
    ((mini_loop *)d)->timer_at = ms < 0 ? INT64_MAX : test_now_ms() + ms;
}

static void on_status(kvmux_client *c, int status, void *ud) {
    (void)c;
    (void)ud;
    if (status != 0) atomic_store(&g_status, status);
}

static void test_loop(void) {
    v2fake f;
    kvmux_options o;
    silent_start(&f, &o);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, "127.0.0.1", f.port, &o) == 0);
    mini_loop ml = {0, 0, INT64_MAX};
    kvmux_async_hooks h = {&ml, ml_add_read, ml_del_read, ml_add_write, ml_del_write, ml_timer,
                           NULL};
    REQUIRE(kvmux_async_set_status_cb(c, on_status, NULL) == 0);
    REQUIRE(kvmux_async_attach(c, &h) == 0);
    kvmux_request r = {.op = KVMUX_GET, .key = "k", .key_len = 1};
    CHECK_EQ(kvmux_call_async(c, &r, 10000, on_done, NULL), 0);
    int64_t t0 = test_now_ms(), end = t0 + 5000;
    int fd = kvmux_async_fd(c);
    while (atomic_load(&g_cb_calls) == 0 && test_now_ms() < end) {
        struct pollfd p = {fd, (short)((ml.want_read ? POLLIN : 0) | (ml.want_write ? POLLOUT : 0)),
                           0};
        int64_t now = test_now_ms();
        int tmo = ml.timer_at == INT64_MAX ? 50 : (int)(ml.timer_at > now ? ml.timer_at - now : 0);
        if (tmo > 50) tmo = 50;
        int n = poll(&p, 1, tmo);
        if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) kvmux_async_handle_read(c);
        if (n > 0 && (p.revents & POLLOUT)) kvmux_async_handle_write(c);
        if (ml.timer_at != INT64_MAX && test_now_ms() >= ml.timer_at) {
            ml.timer_at = INT64_MAX;
            kvmux_async_handle_timeout(c);
        }
    }
    int64_t took = test_now_ms() - t0;
    CHECK_EQ(atomic_load(&g_cb_calls), 1);
    CHECK_EQ(atomic_load(&g_cb_rc), KVMUX_EKEEPALIVE);
    CHECK_EQ(atomic_load(&g_status), KVMUX_EKEEPALIVE);
    CHECK(took >= 250 && took < 3000);
    silent_finish(&f, c);
}

static void test_healthy(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    kvmux_options o;
    kvmux_options_init(&o);
    o.keepalive_interval_ms = 30;
    o.keepalive_timeout_ms = 500;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", s.port, &o) == 0);
    test_sleep_ms(400); /* idle: ~10 keepalive round trips */
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    CHECK_EQ(kvmux_set(c, "ka", 2, "v", 1, 0, NULL, 2000), 0);
    test_sleep_ms(200);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "ka", 2, &v, 2000), 0);
    CHECK(v && v->len == 1);
    kvmux_value_free(v);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    CHECK_EQ(test_server_stop(&s, 5000), 0);
}

static void test_options(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    CHECK_EQ(o.keepalive_interval_ms, 0);
    CHECK_EQ(o.keepalive_timeout_ms, 0);
    kvmux_client *c = NULL;
    o.keepalive_timeout_ms = 100; /* a timeout without an interval */
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", 1, &o), KVMUX_EINVAL);
    kvmux_options_init(&o);
    o.keepalive_interval_ms = -1;
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", 1, &o), KVMUX_EINVAL);
    CHECK(c == NULL);
}

int main(void) {
    test_options();
    test_silent();
    test_loop();
    test_healthy();
    return test_report();
}
