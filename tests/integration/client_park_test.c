/* Out of memory on the async completion path (threaded mode), against the
 * real kvmuxd. A callback request in flight lives only in its pending
 * slot; its result travels to the completion thread in a record from a
 * free list. When that record cannot be allocated (simulated with the
 * internal hook kvmux__test_done_fail):
 *   replies     the slot itself is parked with the reply (value, number
 *               or error) and keeps its credit until the callback has
 *               run: every callback runs exactly once with the right
 *               result, and the credits come back (4 credits, 10
 *               requests: the backlog drains through parked slots);
 *   timeout     (v1, so the server holds the WAIT past the client's
 *               deadline) a deadline that cannot be delivered is retried: no
 *               callback while allocation fails, KVMUX_ETIMEDOUT once it
 *               works again;
 *   cancel      kvmux_cancel still returns 0 (a second one ENOTFOUND);
 *               the callback runs with KVMUX_ECANCELED once a record can
 *               be had -- also when the real answer crosses the cancel
 *               while allocation still fails (then through a parked slot);
 *   close       kvmux_close with requests pending while allocation fails:
 *               each callback runs once with KVMUX_ECLOSED.
 * After each case the connection still works (a PING, a SET). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "async_util.h" /* req_of */
#include "kvmux.h"
#include "testutil.h"

/* src/client/async.c: while positive, completion records fail to
 * allocate (internal to libkvmux, linked statically here). */
extern atomic_int kvmux__test_done_fail;

#define FAIL_ALL (1 << 30)

static test_server g_srv;
static int g_srv_up;

static void kill_server_at_exit(void) {
    atomic_store(&kvmux__test_done_fail, 0);
    if (g_srv_up) test_server_kill(&g_srv);
}

typedef struct tracker {
    atomic_int calls;
    int result;
    int64_t number;
    char value[32];
    size_t value_len;
} tracker;

static void on_reply(kvmux_client *c, int result, kvmux_reply *r, void *ud) {
    (void)c;
    tracker *t = ud;
    t->result = result;
    t->number = r->number;
    t->value_len = r->value_len < sizeof t->value ? r->value_len : sizeof t->value - 1;
    if (r->value) memcpy(t->value, r->value, t->value_len);
    t->value[t->value_len] = 0;
    atomic_fetch_add(&t->calls, 1); /* after the record: the test reads it then */
}

/* credits 0: the server's; version 0: the highest. */
static kvmux_client *connect_credits(uint32_t credits, uint8_t version) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = credits;
    if (version) o.max_protocol_version = version;
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", g_srv.port, &o);
    if (rc != 0) fprintf(stderr, "connect: %s\n", kvmux_strerror(rc));
    REQUIRE(rc == 0 && c != NULL);
    return c;
}

/* A WAIT the server parks (key absent, version 0). */
static kvmux_request wait_req(const char *key) {
    kvmux_request r = req_of(KVMUX_WAIT, key);
    r.version = 0;
    r.wait_ms = 5000;
    return r;
}

/* Wait (bounded) until every tracker of ts[0..n) ran at least once. */
static int wait_calls(tracker *ts, int n, int ms) {
    int64_t end = test_now_ms() + ms;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++) done += atomic_load(&ts[i].calls) > 0;
        if (done == n) return 1;
        if (test_now_ms() >= end) return 0;
        test_sleep_ms(2);
    }
}

static void check_usable(kvmux_client *c) {
    CHECK_EQ(kvmux_ping(c, 3000), 0);
    CHECK_EQ(kvmux_set(c, "pk:usable", 9, "u", 1, 0, NULL, 3000), 0);
}

static void test_parked_replies(void) {
    kvmux_client *c = connect_credits(4, 0);
    char key[16], val[16];
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "pk:%d", i);
        snprintf(val, sizeof val, "value-%d", i);
        REQUIRE(kvmux_set(c, key, strlen(key), val, strlen(val), 0, NULL, 3000) == 0);
    }
    REQUIRE(kvmux_set(c, "pk:n", 4, "41", 2, 0, NULL, 3000) == 0);
    (void)kvmux_del(c, "pk:absent", 9, 3000);

    tracker t[10];
    memset(t, 0, sizeof t);
    atomic_store(&kvmux__test_done_fail, FAIL_ALL);
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "pk:%d", i);
        kvmux_request r = req_of(KVMUX_GET, key);
        CHECK_EQ(kvmux_call_async(c, &r, 5000, on_reply, &t[i]), 0);
    }
    kvmux_request incr = req_of(KVMUX_INCR, "pk:n");
    incr.delta = 1;
    CHECK_EQ(kvmux_call_async(c, &incr, 5000, on_reply, &t[8]), 0);
    kvmux_request absent = req_of(KVMUX_GET, "pk:absent");
    CHECK_EQ(kvmux_call_async(c, &absent, 5000, on_reply, &t[9]), 0);
    /* 4 credits, 10 requests: the last 6 wait in the backlog and are
     * admitted as parked slots run and give their credits back. */
    CHECK(wait_calls(t, 10, 10000));
    CHECK(atomic_load(&kvmux__test_done_fail) > 0); /* every record failed */
    atomic_store(&kvmux__test_done_fail, 0);
    test_sleep_ms(100); /* a second call would show */
    for (int i = 0; i < 8; i++) {
        snprintf(val, sizeof val, "value-%d", i);
        CHECK_EQ(atomic_load(&t[i].calls), 1);
        CHECK_EQ(t[i].result, KVMUX_OK);
        CHECK(strcmp(t[i].value, val) == 0);
    }
    CHECK_EQ(atomic_load(&t[8].calls), 1);
    CHECK_EQ(t[8].result, KVMUX_OK);
    CHECK_EQ(t[8].number, 42);
    CHECK_EQ(atomic_load(&t[9].calls), 1);
    CHECK_EQ(t[9].result, KVMUX_ENOTFOUND);
    check_usable(c);
    kvmux_close(c);
}

static void test_timeout_retried(void) {
    /* v1: no DEADLINE on the wire, so the server holds the WAIT (5 s) and
     * only the client's own deadline can end it. */
    kvmux_client *c = connect_credits(0, 1);
    tracker t;
    memset(&t, 0, sizeof t);
    atomic_store(&kvmux__test_done_fail, FAIL_ALL);
    kvmux_request w = wait_req("pk:never");
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_call_async(c, &w, 200, on_reply, &t), 0);
    test_sleep_ms(500); /* past the deadline: retried, never delivered */
    CHECK_EQ(atomic_load(&t.calls), 0);
    atomic_store(&kvmux__test_done_fail, 0);
    CHECK(wait_calls(&t, 1, 3000));
    CHECK(test_now_ms() - t0 >= 500);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&t.calls), 1);
    CHECK_EQ(t.result, KVMUX_ETIMEDOUT);
    check_usable(c);
    kvmux_close(c);
}

static void test_cancel_retried(void) {
    kvmux_client *c = connect_credits(0, 0);
    kvmux_client *c2 = connect_credits(0, 0);
    /* Plain: cancelled while records fail, delivered when they work. */
    tracker t;
    memset(&t, 0, sizeof t);
    (void)kvmux_del(c, "pk:w1", 5, 3000);
    kvmux_request w = wait_req("pk:w1");
    kvmux_handle h = 0;
    CHECK_EQ(kvmux_call_async_handle(c, &w, 10000, on_reply, &t, &h), 0);
    test_sleep_ms(50); /* parked at the server */
    atomic_store(&kvmux__test_done_fail, FAIL_ALL);
    CHECK_EQ(kvmux_cancel(c, h), 0);
    CHECK_EQ(kvmux_cancel(c, h), KVMUX_ENOTFOUND); /* its callback is due */
    test_sleep_ms(100);
    CHECK_EQ(atomic_load(&t.calls), 0);
    atomic_store(&kvmux__test_done_fail, 0);
    CHECK(wait_calls(&t, 1, 3000));
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&t.calls), 1);
    CHECK_EQ(t.result, KVMUX_ECANCELED);
    check_usable(c);

    /* Crossing: the real answer arrives while records still fail; the
     * callback still says ECANCELED, through a parked slot. */
    tracker x;
    memset(&x, 0, sizeof x);
    (void)kvmux_del(c, "pk:w2", 5, 3000);
    kvmux_request w2 = wait_req("pk:w2");
    h = 0;
    CHECK_EQ(kvmux_call_async_handle(c, &w2, 10000, on_reply, &x, &h), 0);
    test_sleep_ms(50);
    atomic_store(&kvmux__test_done_fail, FAIL_ALL);
    CHECK_EQ(kvmux_cancel(c, h), 0);
    CHECK_EQ(kvmux_set(c2, "pk:w2", 5, "now", 3, 0, NULL, 3000), 0); /* answers the WAIT */
    CHECK(wait_calls(&x, 1, 3000)); /* parked: runs without a record */
    atomic_store(&kvmux__test_done_fail, 0);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&x.calls), 1);
    CHECK_EQ(x.result, KVMUX_ECANCELED);
    CHECK_EQ(x.value_len, 0);
    check_usable(c);
    kvmux_close(c2);
    kvmux_close(c);
}

static void test_close_parked(void) {
    kvmux_client *c = connect_credits(0, 0);
    enum { N = 6 };
    tracker t[N];
    memset(t, 0, sizeof t);
    char key[16];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "pk:c%d", i);
        (void)kvmux_del(c, key, strlen(key), 3000);
        kvmux_request w = wait_req(key);
        CHECK_EQ(kvmux_call_async(c, &w, 10000, on_reply, &t[i]), 0);
    }
    test_sleep_ms(50);
    atomic_store(&kvmux__test_done_fail, FAIL_ALL);
    kvmux_close(c); /* every callback runs before it returns */
    atomic_store(&kvmux__test_done_fail, 0);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(atomic_load(&t[i].calls), 1);
        CHECK_EQ(t[i].result, KVMUX_ECLOSED);
    }
}

int main(void) {
    REQUIRE(test_server_start(&g_srv, NULL) == 0);
    g_srv_up = 1;
    atexit(kill_server_at_exit);
    test_parked_replies();
    test_timeout_retried();
    test_cancel_retried();
    test_close_parked();
    g_srv_up = 0;
    test_server_stop(&g_srv, 5000);
    return test_report();
}
