/* libkvmux against a scripted fake server running in a thread of this
 * process: the cases a correct kvmuxd never produces.
 *
 * Each scenario starts a listener on 127.0.0.1 port 0 and a thread that
 * accepts one connection and plays a script with raw frames (encoded with
 * the proto library), while the main thread drives the real client:
 *   refuse     HELLO answered by ERROR UNSUPPORTED_VERSION -> KVMUX_ENOVERSION
 *              and the server's message via kvmux_connection_error(NULL)
 *   silent     HELLO never answered -> KVMUX_ETIMEDOUT after connect_timeout
 *   reorder    replies in reverse order, a reply for an unknown id (dropped,
 *              not fatal), a PING from the server (answered with PONG)
 *   badstatus  unknown status -> KVMUX_EPROTO, later calls fail fast
 *   error      ERROR frame mid-call -> KVMUX_EPROTO with its message
 *   badextras  GET OK without its version -> KVMUX_EPROTO
 *   mismatch   VERSION_MISMATCH to a GET (only CAS may get it) -> KVMUX_EPROTO
 *   stall      server never reads: the bounded queue fills (try_call gets
 *              KVMUX_EAGAIN, blocking calls time out), then kvmux_close
 *              returns promptly although the writer is stuck in send()
 * Every wait is bounded (socket timeouts, deadlines on joins). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "client_v2_fake.h"
#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

/* The fake server is the shared one of client_v2_fake.c, played as a v1
 * server (max_version 1, name "fake") since these scripts speak v1 frames;
 * credits is the max_outstanding it advertises, rcvbuf its SO_RCVBUF
 * (0: the default). */
static void fake_start(v2fake *f, void (*script)(v2fake *, int), uint32_t credits, int rcvbuf) {
    kvmux_settings st;
    kvmux_settings_default(&st);
    st.max_outstanding = credits;
    v2fake_start_ex(f, script, 1, &st, NULL, rcvbuf, "fake");
}

/* A v1 frame without flags (the negotiated version is 1). */
static void fake_send(v2fake *f, int fd, uint8_t type, uint32_t id, uint8_t code,
                      const void *ext, uint8_t elen, const void *val, uint32_t vlen) {
    v2fake_send(f, fd, type, 0, id, code, ext, elen, val, vlen, 0);
}

/* ---- scenarios: server scripts ---- */

static void script_refuse(v2fake *f, int fd) {
    (void)f;
    uint8_t buf[4096], out[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG];
    kvmux_frame fr;
    CHECK(test_read_frame(fd, buf, sizeof buf, &fr) > 0);
    CHECK_EQ(fr.type, KVMUX_FRAME_HELLO);
    size_t n = kvmux_encode_error(out, 1, 0, KVMUX_ERR_UNSUPPORTED_VERSION,
                                  "server speaks 7..9");
    CHECK_EQ(test_write_all(fd, out, n), 0);
}

static void script_silent(v2fake *f, int fd) {
    (void)f;
    uint8_t buf[4096];
    kvmux_frame fr;
    CHECK(test_read_frame(fd, buf, sizeof buf, &fr) > 0);
    CHECK(test_wait_closed(fd, 5000));
}

static void script_reorder(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t buf[3][4096];
    kvmux_frame fr[3];
    for (int i = 0; i < 3; i++) {
        CHECK(test_read_frame(fd, buf[i], sizeof buf[i], &fr[i]) > 0);
        CHECK_EQ(fr[i].type, KVMUX_FRAME_REQUEST);
        CHECK_EQ(fr[i].code, KVMUX_OP_GET);
    }
    /* A reply nobody asked for: dropped and counted, not fatal. */
    uint8_t ver[8];
    kvmux_store_u64be(ver, 42);
    fake_send(f, fd, KVMUX_FRAME_RESPONSE, 0x7FFFFFF1u, KVMUX_STATUS_OK, ver, 8, "x", 1);
    /* The server pings; the client must answer with the same payload. */
    fake_send(f, fd, KVMUX_FRAME_PING, 0, 0, "12345678", 8, NULL, 0);
    uint8_t pb[64];
    kvmux_frame pong;
    CHECK(test_read_frame(fd, pb, sizeof pb, &pong) > 0);
    CHECK_EQ(pong.type, KVMUX_FRAME_PONG);
    CHECK(pong.extras_len == 8 && memcmp(pong.extras, "12345678", 8) == 0);
    /* Answer in reverse order; the value is the key, so a mix-up shows. */
    for (int i = 2; i >= 0; i--) {
        /* version 100 + the key's digit: checks value and version agree */
        kvmux_store_u64be(ver, 100 + (uint64_t)(fr[i].key[fr[i].key_len - 1] - '0'));
        fake_send(f, fd, KVMUX_FRAME_RESPONSE, fr[i].request_id, KVMUX_STATUS_OK, ver, 8,
                  fr[i].key, fr[i].key_len);
    }
    /* Then a client PING. */
    kvmux_frame p;
    CHECK(test_read_frame(fd, pb, sizeof pb, &p) > 0);
    CHECK_EQ(p.type, KVMUX_FRAME_PING);
    fake_send(f, fd, KVMUX_FRAME_PONG, p.request_id, 0, p.extras, 8, NULL, 0);
    CHECK(test_wait_closed(fd, 5000));
}

/* Read one request, answer it with the reply chosen by g_bad_kind, then
 * wait for the client to go. */
static int g_bad_kind;
enum { BAD_STATUS = 1, BAD_ERROR = 2, BAD_EXTRAS = 3, BAD_MISMATCH = 4 };

static void script_bad(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t buf[4096];
    kvmux_frame fr;
    CHECK(test_read_frame(fd, buf, sizeof buf, &fr) > 0);
    if (g_bad_kind == BAD_STATUS) {
        fake_send(f, fd, KVMUX_FRAME_RESPONSE, fr.request_id, 99, NULL, 0, NULL, 0);
    } else if (g_bad_kind == BAD_ERROR) {
        uint8_t out[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG];
        size_t n = kvmux_encode_error(out, 1, 0, KVMUX_ERR_PROTOCOL, "go away now");
        CHECK_EQ(test_write_all(fd, out, n), 0);
    } else if (g_bad_kind == BAD_MISMATCH) {
        /* Well-formed for a CAS, but this is a GET: no version precondition. */
        uint8_t ver[8] = {0, 0, 0, 0, 0, 0, 0, 7};
        fake_send(f, fd, KVMUX_FRAME_RESPONSE, fr.request_id, KVMUX_STATUS_VERSION_MISMATCH, ver, 8,
                  NULL, 0);
    } else {
        fake_send(f, fd, KVMUX_FRAME_RESPONSE, fr.request_id, KVMUX_STATUS_OK, NULL, 0, "v", 1);
    }
    CHECK(test_wait_closed(fd, 5000));
}

static atomic_int g_stall_release;

static void script_stall(v2fake *f, int fd) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    /* Read nothing until the client has given up and closed. */
    int64_t end = test_now_ms() + 20000;
    while (!atomic_load(&g_stall_release) && test_now_ms() < end) test_sleep_ms(5);
    CHECK(test_wait_closed(fd, 10000));
}

/* ---- client side ---- */

static kvmux_client *fake_connect(v2fake *f, const kvmux_options *o) {
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", f->port, o);
    CHECK_EQ(rc, 0);
    REQUIRE(c != NULL);
    return c;
}

static void test_refuse(void) {
    v2fake f;
    fake_start(&f, script_refuse, 16, 0);
    kvmux_client *c = NULL;
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", f.port, NULL), KVMUX_ENOVERSION);
    CHECK(c == NULL);
    char msg[256];
    CHECK_EQ(kvmux_connection_error(NULL, msg, sizeof msg), KVMUX_ENOVERSION);
    CHECK(strstr(msg, "7..9") != NULL);
    v2fake_join(&f);
}

static void test_silent(void) {
    v2fake f;
    fake_start(&f, script_silent, 16, 0);
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 200;
    kvmux_client *c = NULL;
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", f.port, &o), KVMUX_ETIMEDOUT);
    int64_t took = test_now_ms() - t0;
    CHECK(took >= 150 && took < 1500);
    v2fake_join(&f);
}

typedef struct getter {
    kvmux_client *c;
    char key[8];
    int rc;
    kvmux_value *v;
} getter;

static void *getter_main(void *arg) {
    getter *g = arg;
    g->rc = kvmux_get(g->c, g->key, strlen(g->key), &g->v, 5000);
    return NULL;
}

static void test_reorder(void) {
    v2fake f;
    fake_start(&f, script_reorder, 16, 0);
    kvmux_client *c = fake_connect(&f, NULL);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK(strcmp(info.server_name, "fake") == 0);
    CHECK_EQ(info.max_outstanding, 16);
    getter g[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        memset(&g[i], 0, sizeof g[i]);
        g[i].c = c;
        snprintf(g[i].key, sizeof g[i].key, "key%d", i);
        REQUIRE(pthread_create(&th[i], NULL, getter_main, &g[i]) == 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL); /* bounded: 5 s call timeout */
        CHECK_EQ(g[i].rc, 0);
        CHECK(g[i].v && g[i].v->len == 4 && memcmp(g[i].v->data, g[i].key, 4) == 0);
        CHECK(g[i].v && g[i].v->version == 100u + (unsigned)i);
        kvmux_value_free(g[i].v);
    }
    CHECK_EQ(kvmux_ping(c, 3000), 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    v2fake_join(&f);
}

static void test_bad(int kind, const char *needle) {
    v2fake f;
    g_bad_kind = kind;
    fake_start(&f, script_bad, 16, 0);
    kvmux_client *c = fake_connect(&f, NULL);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "k", 1, &v, 3000), KVMUX_EPROTO);
    CHECK(v == NULL);
    char msg[512];
    CHECK_EQ(kvmux_connection_error(c, msg, sizeof msg), KVMUX_EPROTO);
    if (!strstr(msg, needle)) fprintf(stderr, "message '%s' lacks '%s'\n", msg, needle);
    CHECK(strstr(msg, needle) != NULL);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_ping(c, 3000), KVMUX_EPROTO);
    CHECK(test_now_ms() - t0 < 100);
    kvmux_close(c);
    v2fake_join(&f);
}

typedef struct setter {
    kvmux_client *c;
    const uint8_t *val;
    size_t len;
    int rc;
    atomic_int done;
} setter;

static void *setter_main(void *arg) {
    setter *s = arg;
    s->rc = kvmux_set(s->c, "big", 3, s->val, s->len, 0, NULL, 20000);
    atomic_store(&s->done, 1);
    return NULL;
}

static void test_stall(void) {
    v2fake f;
    atomic_store(&g_stall_release, 0);
    fake_start(&f, script_stall, 1024, 4096);
    kvmux_options o;
    kvmux_options_init(&o);
    o.queue_bytes_limit = 256 * 1024;
    kvmux_client *c = fake_connect(&f, &o);
    size_t len = 512 * 1024;
    uint8_t *val = calloc(1, len);
    REQUIRE(val);
    kvmux_request rq;
    memset(&rq, 0, sizeof rq);
    rq.op = KVMUX_SET;
    rq.key = "big";
    rq.key_len = 3;
    rq.value = val;
    rq.value_len = len;
    /* Each admitted SET times out (no replies); once the socket buffers
     * are full the queue stays full and try_call says EAGAIN. */
    int saw_again = 0, other = 0;
    for (int i = 0; i < 200 && !saw_again; i++) {
        int rc = kvmux_try_call(c, &rq, NULL, 20);
        if (rc == KVMUX_EAGAIN) saw_again = 1;
        else if (rc != KVMUX_ETIMEDOUT) other++;
    }
    CHECK(saw_again);
    CHECK_EQ(other, 0);
    /* A blocking call waits for queue room up to its timeout. */
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_call(c, &rq, NULL, 200), KVMUX_ETIMEDOUT);
    int64_t took = test_now_ms() - t0;
    CHECK(took >= 150 && took < 1000);
    /* Park a caller waiting for room, then close: close must not wait for
     * the stuck writer, and the parked caller gets ECLOSED. */
    setter s = {c, val, len, 0, 0};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, setter_main, &s) == 0);
    test_sleep_ms(200);
    CHECK_EQ(atomic_load(&s.done), 0);
    t0 = test_now_ms();
    kvmux_close(c);
    CHECK(test_now_ms() - t0 < 1000);
    int64_t end = test_now_ms() + 2000;
    while (!atomic_load(&s.done) && test_now_ms() < end) test_sleep_ms(5);
    REQUIRE(atomic_load(&s.done));
    pthread_join(th, NULL);
    CHECK_EQ(s.rc, KVMUX_ECLOSED);
    atomic_store(&g_stall_release, 1);
    v2fake_join(&f);
    free(val);
}

int main(void) {
    test_refuse();
    test_silent();
    test_reorder();
    test_bad(BAD_STATUS, "unknown status");
    test_bad(BAD_ERROR, "go away now");
    test_bad(BAD_EXTRAS, "malformed");
    test_bad(BAD_MISMATCH, "only CAS");
    test_stall();
    return test_report();
}
