/* libkvmux over protocol v2, step 3: deadlines and cancellation.
 *
 * Against the real kvmuxd, with one credit (max_outstanding 1), so how
 * soon the credit comes back shows whether the server got the CANCEL:
 *   future       a parked WAIT (5 s) cancelled with kvmux_future_cancel:
 *                KVMUX_ECANCELED at once, the waiter wakes, and the next
 *                call gets the credit long before the WAIT would end
 *   callback     the same through kvmux_call_async_handle / kvmux_cancel;
 *                a second cancel finds nothing; bad handles are refused
 *   queued       a request still in the backlog is dropped unsent
 *   done         cancelling a complete future changes nothing
 *   free         freeing a pending future cancels it on the server too
 *   upload       a 64 MiB SET cancelled while its fragments go out: the
 *                connection stays healthy and the key is never half-written
 *   v1           on a v1 connection a cancel only stops waiting: the
 *                credit comes back when the WAIT ends on its own
 * Against a scripted fake server:
 *   deadline     a v2 request carries DEADLINE with the call's remaining
 *                timeout; a v1 request carries no flags
 *   crossing     the real answer crosses the CANCEL: dropped, and it frees
 *                the tombstone (the next call goes through) */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "client_v2_fake.h"
#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

static test_server g_srv;

static kvmux_client *connect_to(uint16_t port, int credits, int version) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = (uint32_t)credits;
    if (version) o.max_protocol_version = (uint8_t)version;
    return v2_connect(port, &o);
}

static kvmux_request wait_req(const char *key, uint32_t wait_ms) {
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_WAIT;
    r.key = key;
    r.key_len = strlen(key);
    r.version = 0; /* wait until the key exists: it never will */
    r.wait_ms = wait_ms;
    return r;
}

/* ms until a PING gets through (it needs the only credit). */
static int64_t ping_ms(kvmux_client *c) {
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_ping(c, 10000), 0);
    return test_now_ms() - t0;
}

static void *wait_thread(void *p) {
    kvmux_future *f = p;
    CHECK_EQ(kvmux_future_wait(f, 10000), 0);
    return NULL;
}

static void test_future(void) {
    kvmux_client *c = connect_to(g_srv.port, 1, 0);
    kvmux_request r = wait_req("cancel:f", 5000);
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &r, 10000, &f), 0);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, wait_thread, f) == 0);
    test_sleep_ms(100); /* parked on the server, a thread waiting on f */
    CHECK_EQ(kvmux_future_poll(f), 0);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_future_cancel(f), 0);
    pthread_join(th, NULL);
    CHECK(test_now_ms() - t0 < 1000);
    CHECK_EQ(kvmux_future_poll(f), 1);
    CHECK_EQ(kvmux_future_result(f, NULL), KVMUX_ECANCELED);
    CHECK_EQ(kvmux_future_cancel(f), 0); /* again: nothing changes */
    CHECK_EQ(kvmux_future_result(f, NULL), KVMUX_ECANCELED);
    kvmux_future_free(f);
    CHECK(ping_ms(c) < 1500); /* not the 5 s of the WAIT */
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

typedef struct cb_rec {
    atomic_int calls;
    atomic_int result;
} cb_rec;

static void rec_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)reply;
    cb_rec *r = ud;
    atomic_store(&r->result, result);
    atomic_fetch_add(&r->calls, 1);
}

static int await_calls(cb_rec *r, int n, int ms) {
    int64_t end = test_now_ms() + ms;
    while (atomic_load(&r->calls) < n && test_now_ms() < end) test_sleep_ms(1);
    return atomic_load(&r->calls);
}

static void test_callback(void) {
    kvmux_client *c = connect_to(g_srv.port, 1, 0);
    kvmux_request r = wait_req("cancel:cb", 5000);
    cb_rec rec;
    atomic_init(&rec.calls, 0);
    atomic_init(&rec.result, 1);
    kvmux_handle h = 0;
    CHECK_EQ(kvmux_call_async_handle(c, &r, 10000, rec_cb, &rec, NULL), KVMUX_EINVAL);
    CHECK_EQ(kvmux_call_async_handle(c, &r, 10000, rec_cb, &rec, &h), 0);
    CHECK(h != 0);
    test_sleep_ms(100);
    CHECK_EQ(atomic_load(&rec.calls), 0);
    CHECK_EQ(kvmux_cancel(c, h), 0);
    CHECK_EQ(await_calls(&rec, 1, 2000), 1);
    CHECK_EQ(atomic_load(&rec.result), KVMUX_ECANCELED);
    CHECK_EQ(kvmux_cancel(c, h), KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_cancel(c, 0), KVMUX_EINVAL);
    CHECK_EQ(kvmux_cancel(c, h + 1000), KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_cancel(NULL, h), KVMUX_EINVAL);
    CHECK(ping_ms(c) < 1500);
    test_sleep_ms(50);
    CHECK_EQ(atomic_load(&rec.calls), 1); /* exactly once */
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

static void test_queued(void) {
    kvmux_client *c = connect_to(g_srv.port, 1, 0);
    kvmux_request w = wait_req("cancel:q", 5000);
    kvmux_future *a = NULL, *b = NULL;
    CHECK_EQ(kvmux_call_future(c, &w, 10000, &a), 0);
    kvmux_request g = {.op = KVMUX_GET, .key = "cancel:q2", .key_len = 9};
    CHECK_EQ(kvmux_call_future(c, &g, 10000, &b), 0); /* no credit: backlog */
    CHECK_EQ(kvmux_future_cancel(b), 0);
    CHECK_EQ(kvmux_future_wait(b, 0), 0);
    CHECK_EQ(kvmux_future_result(b, NULL), KVMUX_ECANCELED);
    CHECK_EQ(kvmux_future_cancel(a), 0);
    CHECK_EQ(kvmux_future_result(a, NULL), KVMUX_ECANCELED);
    kvmux_future_free(a);
    kvmux_future_free(b);
    CHECK(ping_ms(c) < 1500);

    /* done: a complete future keeps its result. */
    CHECK_EQ(kvmux_set(c, "cancel:d", 8, "v", 1, 0, NULL, 2000), 0);
    kvmux_request gd = {.op = KVMUX_GET, .key = "cancel:d", .key_len = 8};
    kvmux_future *d = NULL;
    CHECK_EQ(kvmux_call_future(c, &gd, 2000, &d), 0);
    CHECK_EQ(kvmux_future_wait(d, 2000), 0);
    CHECK_EQ(kvmux_future_cancel(d), 0);
    kvmux_reply rep;
    CHECK_EQ(kvmux_future_result(d, &rep), 0);
    CHECK(rep.value_len == 1 && rep.value[0] == 'v');
    kvmux_reply_free(&rep);
    kvmux_future_free(d);
    CHECK_EQ(kvmux_future_cancel(NULL), KVMUX_EINVAL);

    /* free: a pending future freed is cancelled on the server. */
    kvmux_future *e = NULL;
    kvmux_request we = wait_req("cancel:e", 5000);
    CHECK_EQ(kvmux_call_future(c, &we, 10000, &e), 0);
    test_sleep_ms(50);
    kvmux_future_free(e);
    CHECK(ping_ms(c) < 1500);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

static void test_upload(void) {
    kvmux_client *c = connect_to(g_srv.port, 1, 0);
    size_t len = 64u * 1024 * 1024;
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    if (len > info.max_value_size) len = info.max_value_size;
    uint8_t *v = malloc(len);
    REQUIRE(v);
    memset(v, 'u', len);
    kvmux_request r = {.op = KVMUX_SET, .key = "cancel:up", .key_len = 9, .value = v,
                       .value_len = len};
    for (int delay = 0; delay <= 20; delay += 10) {
        kvmux_future *f = NULL;
        CHECK_EQ(kvmux_call_future(c, &r, 30000, &f), 0);
        if (delay) test_sleep_ms(delay);
        CHECK_EQ(kvmux_future_cancel(f), 0);
        int rc = kvmux_future_result(f, NULL);
        CHECK(rc == KVMUX_ECANCELED || rc == 0);
        kvmux_future_free(f);
        CHECK(ping_ms(c) < 5000);
        /* Never half-written: absent, or the whole value. */
        kvmux_value *out = NULL;
        rc = kvmux_get(c, "cancel:up", 9, &out, 30000);
        CHECK(rc == KVMUX_ENOTFOUND || (rc == 0 && out && out->len == len));
        kvmux_value_free(out);
    }
    free(v);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

static void test_v1(void) {
    kvmux_client *c = connect_to(g_srv.port, 1, 1);
    kvmux_request r = wait_req("cancel:v1", 400);
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &r, 5000, &f), 0);
    test_sleep_ms(50);
    CHECK_EQ(kvmux_future_cancel(f), 0);
    CHECK_EQ(kvmux_future_result(f, NULL), KVMUX_ECANCELED);
    kvmux_future_free(f);
    int64_t ms = ping_ms(c); /* the credit returns when the WAIT ends */
    CHECK(ms >= 250);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

/* ---- fake server ---- */

static atomic_int g_dl_flags, g_dl_ms, g_cancel_seen;

static void script_deadline(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t buf[4096];
    kvmux_frame fr;
    CHECK(v2fake_read(fd, buf, sizeof buf, &fr) > 0);
    atomic_store(&g_dl_flags, fr.flags);
    atomic_store(&g_dl_ms, (int)fr.deadline_ms);
    v2fake_send(f, fd, KVMUX_FRAME_RESPONSE, 0, fr.request_id, KVMUX_STATUS_NOT_FOUND, NULL, 0,
                NULL, 0, 0);
    CHECK(test_wait_closed(fd, 5000));
}

static void test_deadline(void) {
    for (int version = 2; version >= 1; version--) {
        v2fake f;
        v2fake_start(&f, script_deadline, (uint8_t)version, NULL, NULL);
        kvmux_client *c = connect_to(f.port, 0, 0);
        kvmux_value *out = NULL;
        CHECK_EQ(kvmux_get(c, "k", 1, &out, 2000), KVMUX_ENOTFOUND);
        kvmux_close(c);
        v2fake_join(&f);
        if (version == 2) {
            CHECK_EQ(atomic_load(&g_dl_flags), KVMUX_FLAG_DEADLINE);
            CHECK(atomic_load(&g_dl_ms) > 1000 && atomic_load(&g_dl_ms) <= 2000);
        } else {
            CHECK_EQ(atomic_load(&g_dl_flags), 0);
        }
    }
}

static void script_crossing(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t buf[4096];
    kvmux_frame fr;
    CHECK(v2fake_read(fd, buf, sizeof buf, &fr) > 0);
    CHECK_EQ(fr.type, KVMUX_FRAME_REQUEST);
    uint32_t id = fr.request_id;
    CHECK(v2fake_read(fd, buf, sizeof buf, &fr) > 0);
    if (fr.type == KVMUX_FRAME_CANCEL && fr.request_id == id) atomic_store(&g_cancel_seen, 1);
    /* The real answer, as if it had been sent before the CANCEL arrived. */
    uint8_t ver[8];
    kvmux_store_u64be(ver, 3);
    v2fake_send(f, fd, KVMUX_FRAME_RESPONSE, 0, id, KVMUX_STATUS_OK, ver, 8, "late", 4, 0);
    /* The next request can only come once that freed the tombstone. */
    CHECK(v2fake_read(fd, buf, sizeof buf, &fr) > 0);
    CHECK_EQ(fr.type, KVMUX_FRAME_PING);
    v2fake_send(f, fd, KVMUX_FRAME_PONG, 0, fr.request_id, 0, fr.extras, 8, NULL, 0, 0);
    CHECK(test_wait_closed(fd, 5000));
}

static void test_crossing(void) {
    v2fake f;
    v2fake_start(&f, script_crossing, 2, NULL, NULL);
    kvmux_client *c = connect_to(f.port, 1, 0);
    kvmux_request g = {.op = KVMUX_GET, .key = "k", .key_len = 1};
    kvmux_future *fu = NULL;
    CHECK_EQ(kvmux_call_future(c, &g, 5000, &fu), 0);
    test_sleep_ms(50);
    CHECK_EQ(kvmux_future_cancel(fu), 0);
    CHECK_EQ(kvmux_future_result(fu, NULL), KVMUX_ECANCELED);
    kvmux_future_free(fu);
    CHECK_EQ(kvmux_ping(c, 3000), 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    v2fake_join(&f);
    CHECK_EQ(atomic_load(&g_cancel_seen), 1);
}

int main(void) {
    REQUIRE(test_server_start(&g_srv, NULL) == 0);
    test_future();
    test_callback();
    test_queued();
    test_upload();
    test_v1();
    test_deadline();
    test_crossing();
    CHECK_EQ(test_server_stop(&g_srv, 10000), 0);
    return test_report();
}
