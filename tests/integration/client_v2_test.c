/* libkvmux over protocol v2, step 1: fragmented replies, GOAWAY, the new
 * statuses, and version negotiation in both directions.
 *
 * Against the real kvmuxd (v2 by default):
 *   big_get      a value near the 2 MiB frame size, GET through every API
 *                (kvmux_get, kvmux_call, a future, WAIT): the server sends
 *                it in 64 KiB fragments over a 1 MiB message window, so the
 *                client must reassemble and grant WINDOW_UPDATEs, or stall
 *   concurrent   4 threads of big GETs and one of small GETs on one
 *                connection: fragments of different replies interleave
 *   versions     a v1-capped client against the v2 server, and the v2
 *                client against a server started with --max-protocol 1
 * Against a scripted fake server (client_v2_fake.c):
 *   goaway       two requests in flight, then GOAWAY: new calls (sync and
 *                async) fail fast with KVMUX_ESHUTDOWN and send nothing;
 *                the two in flight keep their answers (one OK, one
 *                SHUTTING_DOWN -> KVMUX_ESHUTDOWN)
 *   canceled     RESPONSE CANCELED -> KVMUX_ECANCELED
 *   tombstone    a caller times out in the middle of a fragmented reply: the
 *                rest is still counted (and a WINDOW_UPDATE granted for it),
 *                the credit comes back, the next call works
 *   badfrag      a fragmented reply to a SET -> KVMUX_EPROTO */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "client_v2_fake.h"
#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

static test_server g_srv;

#define BIG (2u * 1024 * 1024 - 4096) /* one request frame, many reply fragments */

/* A value whose every byte depends on seed and position. */
static uint8_t *pattern(size_t len, unsigned seed) {
    uint8_t *p = malloc(len);
    REQUIRE(p);
    for (size_t i = 0; i < len; i++) p[i] = (uint8_t)(i * 31u + seed * 7u + (i >> 12));
    return p;
}

static void test_big_get(void) {
    kvmux_client *c = v2_connect(g_srv.port, NULL);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, 2);
    CHECK(info.max_value_size >= 64u * 1024 * 1024);
    uint8_t *v = pattern(BIG, 1);
    uint64_t ver = 0;
    CHECK_EQ(kvmux_set(c, "big", 3, v, BIG, 0, &ver, 5000), 0);
    for (int i = 0; i < 3; i++) {
        kvmux_value *out = NULL;
        CHECK_EQ(kvmux_get(c, "big", 3, &out, 5000), 0);
        CHECK(out && out->len == BIG && memcmp(out->data, v, BIG) == 0);
        CHECK(out && out->version == ver && out->data[BIG] == 0);
        kvmux_value_free(out);
    }
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GET;
    r.key = "big";
    r.key_len = 3;
    kvmux_reply rep;
    CHECK_EQ(kvmux_call(c, &r, &rep, 5000), 0);
    CHECK(rep.value_len == BIG && memcmp(rep.value, v, BIG) == 0);
    kvmux_reply_free(&rep);
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &r, 5000, &f), 0);
    CHECK_EQ(kvmux_future_wait(f, 10000), 0);
    CHECK_EQ(kvmux_future_result(f, &rep), 0);
    CHECK(rep.value_len == BIG && memcmp(rep.value, v, BIG) == 0);
    kvmux_reply_free(&rep);
    kvmux_future_free(f);
    /* WAIT with a stale version answers at once, with the big value. */
    kvmux_value *w = NULL;
    CHECK_EQ(kvmux_wait(c, "big", 3, ver - 1, 1000, &w, 5000), 0);
    CHECK(w && w->len == BIG && memcmp(w->data, v, BIG) == 0);
    kvmux_value_free(w);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    free(v);
}

typedef struct big_arg {
    kvmux_client *c;
    int idx;
    atomic_int *bad;
} big_arg;

static void *big_reader(void *p) {
    big_arg *a = p;
    char key[16];
    snprintf(key, sizeof key, "bigc%d", a->idx);
    uint8_t *v = pattern(BIG, (unsigned)(10 + a->idx));
    for (int i = 0; i < 4; i++) {
        kvmux_value *out = NULL;
        int rc = kvmux_get(a->c, key, strlen(key), &out, 10000);
        if (rc != 0 || !out || out->len != BIG || memcmp(out->data, v, BIG) != 0)
            atomic_fetch_add(a->bad, 1);
        kvmux_value_free(out);
    }
    free(v);
    return NULL;
}

static void *small_reader(void *p) {
    big_arg *a = p;
    for (int i = 0; i < 300; i++) {
        kvmux_value *out = NULL;
        int rc = kvmux_get(a->c, "small", 5, &out, 10000);
        if (rc != 0 || !out || out->len != 5 || memcmp(out->data, "tiny!", 5) != 0)
            atomic_fetch_add(a->bad, 1);
        kvmux_value_free(out);
    }
    return NULL;
}

static void test_concurrent(void) {
    kvmux_client *c = v2_connect(g_srv.port, NULL);
    atomic_int bad = 0;
    for (int i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "bigc%d", i);
        uint8_t *v = pattern(BIG, (unsigned)(10 + i));
        CHECK_EQ(kvmux_set(c, key, strlen(key), v, BIG, 0, NULL, 5000), 0);
        free(v);
    }
    CHECK_EQ(kvmux_set(c, "small", 5, "tiny!", 5, 0, NULL, 5000), 0);
    pthread_t th[5];
    big_arg args[5];
    for (int i = 0; i < 5; i++) {
        args[i] = (big_arg){c, i, &bad};
        REQUIRE(pthread_create(&th[i], NULL, i < 4 ? big_reader : small_reader, &args[i]) == 0);
    }
    for (int i = 0; i < 5; i++) pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&bad), 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

static void test_versions(void) {
    /* v1-capped client, v2 server. */
    kvmux_options o;
    kvmux_options_init(&o);
    CHECK_EQ(o.max_protocol_version, 3); /* v3 offered; a single node picks 2 */
    o.max_protocol_version = 1;
    kvmux_client *c = v2_connect(g_srv.port, &o);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, 1);
    uint8_t *v = pattern(512 * 1024, 3);
    CHECK_EQ(kvmux_set(c, "v1k", 3, v, 512 * 1024, 0, NULL, 5000), 0);
    kvmux_value *out = NULL;
    CHECK_EQ(kvmux_get(c, "v1k", 3, &out, 5000), 0);
    CHECK(out && out->len == 512 * 1024 && memcmp(out->data, v, out->len) == 0);
    kvmux_value_free(out);
    /* On v1 a value is bounded by the frame (and the server's v1 limit). */
    uint8_t *b = pattern(BIG, 4);
    CHECK_EQ(kvmux_set(c, "v1big", 5, b, BIG, 0, NULL, 5000), KVMUX_ETOOBIG);
    CHECK_EQ(kvmux_ping(c, 2000), 0);
    kvmux_close(c);

    /* v2 client, server capped at v1. */
    test_server s1;
    const char *args[] = {"--max-protocol", "1", NULL};
    REQUIRE(test_server_start(&s1, args) == 0);
    c = v2_connect(s1.port, NULL);
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.protocol_version, 1);
    CHECK_EQ(kvmux_set(c, "k", 1, v, 512 * 1024, 0, NULL, 5000), 0);
    CHECK_EQ(kvmux_get(c, "k", 1, &out, 5000), 0);
    CHECK(out && out->len == 512 * 1024 && memcmp(out->data, v, out->len) == 0);
    kvmux_value_free(out);
    int64_t n = 0;
    CHECK_EQ(kvmux_incr(c, "n", 1, 5, &n, 2000), 0);
    CHECK_EQ(n, 5);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    CHECK_EQ(test_server_stop(&s1, 5000), 0);
    free(v);
    free(b);

    /* Bad option values are refused. */
    kvmux_options_init(&o);
    o.max_protocol_version = 4;
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", g_srv.port, &o), KVMUX_EINVAL);
    kvmux_options_init(&o);
    o.max_value_size = KVMUX_MAX_VALUE_LIMIT + 1u;
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", g_srv.port, &o), KVMUX_EINVAL);
}

/* ---- fake-server scenarios ---- */

static atomic_int g_goaway_sent, g_answer_now, g_requests_after;

static void script_goaway(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    CHECK_EQ(f->version, 2);
    uint8_t buf[2][4096];
    kvmux_frame fr[2];
    for (int i = 0; i < 2; i++) {
        CHECK(v2fake_read(fd, buf[i], sizeof buf[i], &fr[i]) > 0);
        CHECK_EQ(fr[i].type, KVMUX_FRAME_REQUEST);
    }
    uint8_t ext[8];
    kvmux_store_u32be(ext, fr[1].request_id);
    kvmux_store_u32be(ext + 4, 0);
    v2fake_send(f, fd, KVMUX_FRAME_GOAWAY, 0, 0, 0, ext, 8, "draining", 8, 0);
    /* A PING after it: the client handles frames in order, so once its
     * PONG is back the GOAWAY has been applied. */
    v2fake_send(f, fd, KVMUX_FRAME_PING, 0, 0, 0, "goawayok", 8, NULL, 0, 0);
    uint8_t pb[256];
    kvmux_frame pf;
    int got_pong = 0;
    for (int i = 0; i < 8 && !got_pong; i++) {
        CHECK(v2fake_read(fd, pb, sizeof pb, &pf) > 0);
        got_pong = pf.type == KVMUX_FRAME_PONG;
    }
    CHECK(got_pong);
    atomic_store(&g_goaway_sent, 1);
    int64_t end = test_now_ms() + 5000;
    while (!atomic_load(&g_answer_now) && test_now_ms() < end) test_sleep_ms(2);
    /* The one with key "a" gets its value, the other SHUTTING_DOWN. */
    for (int i = 0; i < 2; i++) {
        uint8_t ver[8];
        kvmux_store_u64be(ver, 7);
        if (fr[i].key[0] == 'a')
            v2fake_send(f, fd, KVMUX_FRAME_RESPONSE, 0, fr[i].request_id, KVMUX_STATUS_OK, ver,
                        8, "va", 2, 0);
        else
            v2fake_send(f, fd, KVMUX_FRAME_RESPONSE, 0, fr[i].request_id,
                        KVMUX_STATUS_SHUTTING_DOWN, NULL, 0, NULL, 0, 0);
    }
    /* Count what the client sends until it closes: no REQUEST allowed. */
    uint8_t b[4096];
    kvmux_frame x;
    while (v2fake_read(fd, b, sizeof b, &x) > 0)
        if (x.type == KVMUX_FRAME_REQUEST) atomic_fetch_add(&g_requests_after, 1);
}

typedef struct get_arg {
    kvmux_client *c;
    const char *key;
    int rc;
    kvmux_value *out;
} get_arg;

static void *getter(void *p) {
    get_arg *a = p;
    a->rc = kvmux_get(a->c, a->key, strlen(a->key), &a->out, 10000);
    return NULL;
}

static void cb_never(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c; (void)result; (void)reply;
    atomic_fetch_add((atomic_int *)ud, 1);
}

static void test_goaway(void) {
    v2fake f;
    v2fake_start(&f, script_goaway, 2, NULL, NULL);
    kvmux_client *c = v2_connect(f.port, NULL);
    get_arg ga = {c, "a", 1, NULL}, gb = {c, "b", 1, NULL};
    pthread_t ta, tb;
    REQUIRE(pthread_create(&ta, NULL, getter, &ga) == 0);
    REQUIRE(pthread_create(&tb, NULL, getter, &gb) == 0);
    int64_t end = test_now_ms() + 5000;
    while (!atomic_load(&g_goaway_sent) && test_now_ms() < end) test_sleep_ms(2);
    REQUIRE(atomic_load(&g_goaway_sent));
    /* The GOAWAY has been applied (the fake saw our PONG): new calls fail
     * fast and send nothing. */
    CHECK_EQ(kvmux_try_call(c, &(kvmux_request){.op = KVMUX_DEL, .key = "z", .key_len = 1},
                            NULL, 1000),
             KVMUX_ESHUTDOWN);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_set(c, "c", 1, "x", 1, 0, NULL, 3000), KVMUX_ESHUTDOWN);
    CHECK_EQ(kvmux_ping(c, 3000), KVMUX_ESHUTDOWN);
    CHECK(test_now_ms() - t0 < 1000);
    atomic_int cbs = 0;
    kvmux_request r = {.op = KVMUX_GET, .key = "d", .key_len = 1};
    CHECK_EQ(kvmux_call_async(c, &r, 1000, cb_never, &cbs), KVMUX_ESHUTDOWN);
    CHECK(!kvmux_is_fatal(KVMUX_ESHUTDOWN));
    atomic_store(&g_answer_now, 1);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK_EQ(ga.rc, 0);
    CHECK(ga.out && ga.out->len == 2 && memcmp(ga.out->data, "va", 2) == 0);
    CHECK_EQ(gb.rc, KVMUX_ESHUTDOWN);
    kvmux_value_free(ga.out);
    kvmux_value_free(gb.out);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    v2fake_join(&f);
    CHECK_EQ(atomic_load(&g_requests_after), 0);
    CHECK_EQ(atomic_load(&cbs), 0);
}

static void script_canceled(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t buf[4096];
    kvmux_frame fr;
    CHECK(v2fake_read(fd, buf, sizeof buf, &fr) > 0);
    v2fake_send(f, fd, KVMUX_FRAME_RESPONSE, 0, fr.request_id, KVMUX_STATUS_CANCELED, NULL, 0,
                "cancelled", 9, 0);
    CHECK(test_wait_closed(fd, 5000));
}

static void test_canceled(void) {
    v2fake f;
    v2fake_start(&f, script_canceled, 2, NULL, NULL);
    kvmux_client *c = v2_connect(f.port, NULL);
    kvmux_value *out = NULL;
    CHECK_EQ(kvmux_get(c, "k", 1, &out, 3000), KVMUX_ECANCELED);
    CHECK(out == NULL);
    CHECK(!kvmux_is_fatal(KVMUX_ECANCELED));
    CHECK(strcmp(kvmux_strerror(KVMUX_ECANCELED), "unknown error") != 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    v2fake_join(&f);
}

#define TOMB_TOTAL (600u * 1024)
#define TOMB_CHUNK (64u * 1024)

static atomic_int g_tomb_wu;

static void script_tombstone(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t buf[4096];
    kvmux_frame fr;
    CHECK(v2fake_read(fd, buf, sizeof buf, &fr) > 0);
    uint32_t id = fr.request_id;
    uint8_t *v = pattern(TOMB_TOTAL, 5);
    uint8_t ver[8];
    kvmux_store_u64be(ver, 9);
    v2fake_send(f, fd, KVMUX_FRAME_RESPONSE, KVMUX_FLAG_MORE, id, KVMUX_STATUS_OK, ver, 8, v,
                TOMB_CHUNK, TOMB_TOTAL);
    test_sleep_ms(600); /* the caller (timeout 200 ms) gives up meanwhile */
    for (uint32_t off = TOMB_CHUNK; off < TOMB_TOTAL; off += TOMB_CHUNK) {
        uint32_t n = TOMB_TOTAL - off < TOMB_CHUNK ? TOMB_TOTAL - off : TOMB_CHUNK;
        v2fake_send_cont(f, fd, id, off + n < TOMB_TOTAL, v + off, n);
    }
    free(v);
    /* The client granted window for what it consumed (half of the 1 MiB
     * message window passed while the message was open), then sends the
     * next request. */
    for (int i = 0; i < 4; i++) {
        CHECK(v2fake_read(fd, buf, sizeof buf, &fr) > 0);
        if (fr.type == KVMUX_FRAME_WINDOW_UPDATE) {
            if (fr.request_id == id && kvmux_window_update_increment(&fr) >= 512u * 1024)
                atomic_fetch_add(&g_tomb_wu, 1);
            continue;
        }
        CHECK_EQ(fr.type, KVMUX_FRAME_REQUEST);
        kvmux_store_u64be(ver, 10);
        v2fake_send(f, fd, KVMUX_FRAME_RESPONSE, 0, fr.request_id, KVMUX_STATUS_OK, ver, 8,
                    "next", 4, 0);
        break;
    }
    CHECK(test_wait_closed(fd, 5000));
}

static void test_tombstone(void) {
    v2fake f;
    v2fake_start(&f, script_tombstone, 2, NULL, NULL);
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = 1; /* the next call needs the tombstone's credit */
    kvmux_client *c = v2_connect(f.port, &o);
    kvmux_value *out = NULL;
    CHECK_EQ(kvmux_get(c, "k", 1, &out, 200), KVMUX_ETIMEDOUT);
    CHECK_EQ(kvmux_get(c, "k2", 2, &out, 5000), 0);
    CHECK(out && out->len == 4 && memcmp(out->data, "next", 4) == 0 && out->version == 10);
    kvmux_value_free(out);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    v2fake_join(&f);
    CHECK_EQ(atomic_load(&g_tomb_wu), 1);
}

static void script_badfrag(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t buf[4096];
    kvmux_frame fr;
    CHECK(v2fake_read(fd, buf, sizeof buf, &fr) > 0);
    uint8_t ver[8] = {0};
    uint8_t chunk[100] = {0};
    v2fake_send(f, fd, KVMUX_FRAME_RESPONSE, KVMUX_FLAG_MORE, fr.request_id, KVMUX_STATUS_OK,
                ver, 8, chunk, sizeof chunk, 1000);
    CHECK(test_wait_closed(fd, 5000));
}

static void test_badfrag(void) {
    v2fake f;
    v2fake_start(&f, script_badfrag, 2, NULL, NULL);
    kvmux_client *c = v2_connect(f.port, NULL);
    CHECK_EQ(kvmux_set(c, "k", 1, "v", 1, 0, NULL, 3000), KVMUX_EPROTO);
    CHECK_EQ(kvmux_ping(c, 1000), KVMUX_EPROTO);
    kvmux_close(c);
    v2fake_join(&f);
}

int main(void) {
    REQUIRE(test_server_start(&g_srv, NULL) == 0);
    test_big_get();
    test_concurrent();
    test_versions();
    test_goaway();
    test_canceled();
    test_tombstone();
    test_badfrag();
    CHECK_EQ(test_server_stop(&g_srv, 5000), 0);
    return test_report();
}
