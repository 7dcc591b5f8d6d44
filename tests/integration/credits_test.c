/* Credits (max outstanding requests) and client backpressure.
 *
 * (a) A raw peer that ignores its credits: kvmuxd --max-outstanding 8, a
 *     raw socket sends 8 long WAITs and then 5 GETs without reading. The 8
 *     WAITs hold every credit, so each GET must be answered RESPONSE BUSY
 *     ("not processed, safe to retry") and nothing else may break: the
 *     WAITs are still released by a SET, a later GET on the same socket is
 *     served, and other connections are served throughout.
 * (b) The real client respects credits: 64 threads on a server with
 *     --max-outstanding 4 never see KVMUX_EBUSY, and
 *     kvmux_get_server_info reports the 4 credits.
 * (c) Backpressure: with all credits held by WAITs, kvmux_try_call answers
 *     KVMUX_EAGAIN at once and kvmux_call with a short timeout answers
 *     KVMUX_ETIMEDOUT; with the (small) queue full as well, the same; once
 *     the WAITs are released the queued calls complete and the client is
 *     healthy.
 * (d) Exact credit accounting, seen from the wire: a fake server (a thread
 *     of this process) advertising 3 credits holds its replies back until
 *     the client has 3 requests unanswered, then answers them newest first;
 *     then again with 16 credits and the client's max_outstanding = 2.
 * (e) Queue limits of one frame and one byte slow the client down but never
 *     deadlock it (a frame larger than the byte limit goes alone).
 *     32 threads of GETs must all get their own answer, the client must
 *     reach the cap and never pass it, never send id 0, never reuse an id
 *     still unanswered, and wrap its ids (it starts at 0xFFFFFFF0).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

#define CALL_TIMEOUT_MS 20000
#define LONG_WAIT_MS 30000


/* Header version of the raw frames: the version the raw session
 * negotiated (frames without flags have the same layout in v1 and v2). */
static uint8_t g_raw_version = 1;

/* HELLO offering protocol versions [vmin, vmax] (default settings), then
 * read the HELLO_ACK. Returns the version the server chose, or -1. */
static int raw_hello(int fd, uint8_t vmin, uint8_t vmax) {
    kvmux_session s;
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, NULL);
    uint8_t out[KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 64];
    size_t n = kvmux_session_encode_hello(&s, out, "credits_test");
    out[KVMUX_FRAME_HDR_LEN] = vmin; /* extras: [min_version][max_version] */
    out[KVMUX_FRAME_HDR_LEN + 1] = vmax;
    if (test_write_all(fd, out, n) != 0) return -1;
    uint8_t in[4096];
    kvmux_frame f;
    if (test_read_frame(fd, in, sizeof in, &f) <= 0 || f.type != KVMUX_FRAME_HELLO_ACK) return -1;
    return f.code;
}

/* Encode a REQUEST with header version g_raw_version. extras may be NULL
 * when extras_len is 0. */
static size_t enc_req(uint8_t *out, uint32_t rid, uint8_t op, const uint8_t *extras,
                      uint8_t extras_len, const char *key) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = g_raw_version;
    f.type = KVMUX_FRAME_REQUEST;
    f.request_id = rid;
    f.code = op;
    f.extras = extras;
    f.extras_len = extras_len;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)strlen(key);
    return kvmux_frame_encode(out, &f);
}

/* Encode a WAIT request (extras: u64 version, u32 timeout_ms). */
static size_t enc_wait(uint8_t *out, uint32_t rid, const char *key, uint64_t version,
                       uint32_t wait_ms) {
    uint8_t ex[12];
    kvmux_store_u64be(ex, version);
    kvmux_store_u32be(ex + 8, wait_ms);
    return enc_req(out, rid, KVMUX_OP_WAIT, ex, sizeof ex, key);
}

/* ---- (a) ---- */

/* (a) on a raw session offering versions [vmin, vmax]. */
static void test_raw_busy(uint8_t vmin, uint8_t vmax) {
    const char *const args[] = {"--max-outstanding", "8", NULL};
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);
    kvmux_client *good;
    REQUIRE(kvmux_connect(&good, "127.0.0.1", srv.port, NULL) == 0);

    int fd = test_connect_raw(srv.port, 5000);
    REQUIRE(fd >= 0);
    int v = raw_hello(fd, vmin, vmax);
    REQUIRE(v >= vmin && v <= vmax);
    g_raw_version = (uint8_t)v;
    printf("(a) raw session version %d\n", v);

    uint8_t out[4096];
    size_t n = 0;
    for (uint32_t i = 1; i <= 8; i++) n += enc_wait(out + n, i, "cr:a:w", 0, LONG_WAIT_MS);
    for (uint32_t i = 101; i <= 105; i++) n += enc_req(out + n, i, KVMUX_OP_GET, NULL, 0, "cr:a:g");
    REQUIRE(test_write_all(fd, out, n) == 0);

    uint8_t in[4096];
    kvmux_frame f;
    int busy_seen[5] = {0};
    for (int i = 0; i < 5; i++) {
        int r = test_read_frame(fd, in, sizeof in, &f);
        CHECK(r > 0);
        if (r <= 0) break;
        CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
        CHECK(f.request_id >= 101 && f.request_id <= 105);
        CHECK_EQ(f.code, KVMUX_STATUS_BUSY);
        if (f.request_id >= 101 && f.request_id <= 105) busy_seen[f.request_id - 101]++;
    }
    for (int i = 0; i < 5; i++) CHECK_EQ(busy_seen[i], 1);

    /* Other connections are unaffected. */
    CHECK_EQ(kvmux_set(good, "cr:a:other", 10, "x", 1, 0, NULL, CALL_TIMEOUT_MS), 0);

    /* Release the 8 WAITs; each answers OK with the new version and value. */
    uint64_t ver = 0;
    CHECK_EQ(kvmux_set(good, "cr:a:w", 6, "go", 2, 0, &ver, CALL_TIMEOUT_MS), 0);
    int wait_seen[8] = {0};
    for (int i = 0; i < 8; i++) {
        int r = test_read_frame(fd, in, sizeof in, &f);
        CHECK(r > 0);
        if (r <= 0) break;
        CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
        CHECK_EQ(f.code, KVMUX_STATUS_OK);
        CHECK(f.request_id >= 1 && f.request_id <= 8);
        if (f.request_id >= 1 && f.request_id <= 8) wait_seen[f.request_id - 1]++;
        CHECK_EQ(f.extras_len, 8);
        if (f.extras_len == 8) CHECK_EQ(kvmux_load_u64be(f.extras), ver);
        CHECK(f.value_len == 2 && memcmp(f.value, "go", 2) == 0);
    }
    for (int i = 0; i < 8; i++) CHECK_EQ(wait_seen[i], 1);

    /* Credits came back: the same socket is served again, 8 at a time. */
    n = 0;
    for (uint32_t i = 201; i <= 208; i++) n += enc_req(out + n, i, KVMUX_OP_GET, NULL, 0, "cr:a:w");
    REQUIRE(test_write_all(fd, out, n) == 0);
    for (int i = 0; i < 8; i++) {
        int r = test_read_frame(fd, in, sizeof in, &f);
        CHECK(r > 0);
        if (r <= 0) break;
        CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
        CHECK_EQ(f.code, KVMUX_STATUS_OK);
        CHECK(f.request_id >= 201 && f.request_id <= 208);
    }
    close(fd);
    CHECK_EQ(kvmux_connection_error(good, NULL, 0), 0);
    kvmux_close(good);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

/* ---- (b) ---- */

#define B_THREADS 64

static kvmux_client *g_b;
static long g_b_ops;
static atomic_long b_ok, b_busy, b_other;

/* Thread body for (b): SET/GET its own key, plus short WAITs that hold
 * credits; counts OK, BUSY and anything else. */
static void *b_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    char key[32], val[32];
    snprintf(key, sizeof key, "cr:b:%d", id);
    snprintf(val, sizeof val, "initial");
    if (kvmux_set(g_b, key, strlen(key), val, strlen(val), 0, NULL, CALL_TIMEOUT_MS) != 0)
        atomic_fetch_add(&b_other, 1);
    for (long i = 0; i < g_b_ops; i++) {
        int rc;
        if (id % 8 == 0 && i % 10 == 0) {
            /* Short WAITs hold credits for a while; they expire server-side. */
            kvmux_value *v = NULL;
            rc = kvmux_wait(g_b, "cr:b:never", 10, 0, 20, &v, KVMUX_TIMEOUT_DEFAULT);
            kvmux_value_free(v);
            if (rc == KVMUX_ETIMEDOUT) rc = 0; /* the expected answer */
            else if (rc == 0) rc = KVMUX_ESERVER; /* the key never exists */
        } else if (i & 1) {
            kvmux_value *v = NULL;
            rc = kvmux_get(g_b, key, strlen(key), &v, CALL_TIMEOUT_MS);
            if (rc == 0 && (v->len != strlen(val) || memcmp(v->data, val, v->len) != 0))
                rc = KVMUX_ESERVER; /* wrong value: count as "other" */
            kvmux_value_free(v);
        } else {
            snprintf(val, sizeof val, "v%ld", i);
            rc = kvmux_set(g_b, key, strlen(key), val, strlen(val), 0, NULL, CALL_TIMEOUT_MS);
        }
        if (rc == 0)
            atomic_fetch_add(&b_ok, 1);
        else if (rc == KVMUX_EBUSY)
            atomic_fetch_add(&b_busy, 1);
        else if (atomic_fetch_add(&b_other, 1) < 5)
            fprintf(stderr, "(b) thread %d op %ld: %s\n", id, i, kvmux_strerror(rc));
    }
    return NULL;
}

/* (b): 64 threads on 4 credits, no BUSY ever. */
static void test_client_respects_credits(void) {
    const char *const args[] = {"--max-outstanding", "4", NULL};
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);
    REQUIRE(kvmux_connect(&g_b, "127.0.0.1", srv.port, NULL) == 0);
    kvmux_server_info info;
    memset(&info, 0, sizeof info);
    kvmux_get_server_info(g_b, &info);
    CHECK_EQ(info.max_outstanding, 4);
    CHECK(info.protocol_version >= 1 && info.protocol_version <= KVMUX_PROTO_VERSION_MAX);

    g_b_ops = (long)(400 * test_scale());
    if (g_b_ops < 20) g_b_ops = 20;
    pthread_t th[B_THREADS];
    int64_t t0 = test_now_ms();
    for (int i = 0; i < B_THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, b_worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < B_THREADS; i++) pthread_join(th[i], NULL);
    printf("(b) %ld ok, %ld busy, %ld other in %lld ms with 4 credits\n", atomic_load(&b_ok),
           atomic_load(&b_busy), atomic_load(&b_other), (long long)(test_now_ms() - t0));
    CHECK_EQ(atomic_load(&b_ok), (long)B_THREADS * g_b_ops);
    CHECK_EQ(atomic_load(&b_busy), 0);
    CHECK_EQ(atomic_load(&b_other), 0);
    CHECK_EQ(kvmux_connection_error(g_b, NULL, 0), 0);
    kvmux_close(g_b);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

/* ---- (c) ---- */

typedef struct bg_call {
    kvmux_client *c;
    int is_wait;
    atomic_int started;
    atomic_int done;
    int rc;
} bg_call;

/* Thread body for (c): one long WAIT or one GET, result into b. */
static void *bg_main(void *arg) {
    bg_call *b = arg;
    atomic_store(&b->started, 1);
    if (b->is_wait) {
        kvmux_value *v = NULL;
        b->rc = kvmux_wait(b->c, "cr:c:w", 6, 0, LONG_WAIT_MS, &v, KVMUX_TIMEOUT_DEFAULT);
        kvmux_value_free(v);
    } else {
        kvmux_value *v = NULL;
        b->rc = kvmux_get(b->c, "cr:c:absent", 11, &v, CALL_TIMEOUT_MS);
        kvmux_value_free(v);
    }
    atomic_store(&b->done, 1);
    return NULL;
}

/* Poll b->done for up to timeout_ms; returns it. */
static int bg_wait_done(bg_call *b, int timeout_ms) {
    int64_t deadline = test_now_ms() + timeout_ms;
    while (!atomic_load(&b->done) && test_now_ms() < deadline) test_sleep_ms(2);
    return atomic_load(&b->done);
}

/* (c): try_call -> EAGAIN and call -> ETIMEDOUT while all credits are
 * held (and then the queue is full too); all recover after the release. */
static void test_backpressure(void) {
    const char *const args[] = {"--max-outstanding", "4", NULL};
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);
    kvmux_options o;
    kvmux_options_init(&o);
    o.queue_limit = 2;
    kvmux_client *c, *other;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", srv.port, &o) == 0);
    REQUIRE(kvmux_connect(&other, "127.0.0.1", srv.port, NULL) == 0);

    static bg_call waits[4], queued[2];
    pthread_t wt[4], qt[2];
    for (int i = 0; i < 4; i++) {
        waits[i].c = c;
        waits[i].is_wait = 1;
        REQUIRE(pthread_create(&wt[i], NULL, bg_main, &waits[i]) == 0);
    }
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2500 && !atomic_load(&waits[i].started); k++) test_sleep_ms(2);
    test_sleep_ms(100);

    /* All 4 credits are held by WAITs: try_call refuses at once. Poll a
     * little in case a WAIT thread had not been admitted yet (a GET that
     * slips through just answers NOT_FOUND). */
    kvmux_request get = {.op = KVMUX_GET, .key = "cr:c:absent", .key_len = 11};
    kvmux_reply rp;
    int rc = 0;
    for (int i = 0; i < 100; i++) {
        int64_t t0 = test_now_ms();
        rc = kvmux_try_call(c, &get, &rp, 1000);
        kvmux_reply_free(&rp);
        if (rc == KVMUX_EAGAIN) {
            CHECK(test_now_ms() - t0 < 100);
            break;
        }
        test_sleep_ms(20);
    }
    CHECK_EQ(rc, KVMUX_EAGAIN);

    int64_t t0 = test_now_ms();
    rc = kvmux_call(c, &get, &rp, 300);
    int64_t dt = test_now_ms() - t0;
    kvmux_reply_free(&rp);
    printf("(c) call with no credit: %s after %lld ms (timeout 300)\n", kvmux_strerror(rc),
           (long long)dt);
    CHECK_EQ(rc, KVMUX_ETIMEDOUT);
    CHECK(dt >= 250 && dt < 2000);

    /* Fill the queue (limit 2) with calls that wait for a credit. */
    for (int i = 0; i < 2; i++) {
        queued[i].c = c;
        REQUIRE(pthread_create(&qt[i], NULL, bg_main, &queued[i]) == 0);
    }
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2500 && !atomic_load(&queued[i].started); k++) test_sleep_ms(2);
    test_sleep_ms(100);
    CHECK_EQ(atomic_load(&queued[0].done) + atomic_load(&queued[1].done), 0);
    t0 = test_now_ms();
    rc = kvmux_try_call(c, &get, &rp, 1000);
    kvmux_reply_free(&rp);
    CHECK_EQ(rc, KVMUX_EAGAIN);
    CHECK(test_now_ms() - t0 < 100);
    t0 = test_now_ms();
    kvmux_value *v = NULL;
    rc = kvmux_get(c, "cr:c:absent", 11, &v, 300);
    kvmux_value_free(v);
    dt = test_now_ms() - t0;
    CHECK_EQ(rc, KVMUX_ETIMEDOUT);
    CHECK(dt >= 250 && dt < 2000);

    /* Release: the WAITs answer, credits return, the queued GETs run. */
    uint64_t ver = 0;
    CHECK_EQ(kvmux_set(other, "cr:c:w", 6, "go", 2, 0, &ver, CALL_TIMEOUT_MS), 0);
    for (int i = 0; i < 4; i++) {
        CHECK(bg_wait_done(&waits[i], 5000));
        if (atomic_load(&waits[i].done)) {
            pthread_join(wt[i], NULL);
            CHECK_EQ(waits[i].rc, 0);
        } else {
            pthread_detach(wt[i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        CHECK(bg_wait_done(&queued[i], 5000));
        if (atomic_load(&queued[i].done)) {
            pthread_join(qt[i], NULL);
            CHECK_EQ(queued[i].rc, KVMUX_ENOTFOUND);
        } else {
            pthread_detach(qt[i]);
        }
    }
    /* Healthy again: try_call is admitted. */
    rc = kvmux_try_call(c, &get, &rp, CALL_TIMEOUT_MS);
    kvmux_reply_free(&rp);
    CHECK_EQ(rc, KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_set(c, "cr:c:k", 6, "v", 1, 0, NULL, CALL_TIMEOUT_MS), 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);

    kvmux_close(c);
    kvmux_close(other);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

/* ---- (d) ---- */

/* A fake server advertising `advertise` credits that holds replies back
 * until the client has `cap` requests unanswered (cap = the smaller of the
 * credits and the client's own max_outstanding option), or goes quiet for a
 * moment, then answers
 * the held requests in reverse order. It records the largest number of
 * requests the client ever had unanswered, and every id rule violation:
 * id 0, or an id reused while still unanswered. GETs are answered with the
 * key itself as the value, so a misrouted reply is visible to the caller. */
#define D_THREADS 32
#define D_CALLS 40 /* per thread */

typedef struct fake_srv {
    int lfd;
    uint32_t advertise;       /* MAX_OUTSTANDING sent in HELLO_ACK */
    uint32_t cap;             /* what the client may use */
    uint32_t max_seen;        /* most requests unanswered at once */
    uint32_t over_credit;     /* requests beyond cap */
    uint32_t id_zero;
    uint32_t id_dup;          /* id reused while unanswered */
    uint32_t requests;
    int saw_high, saw_wrap;   /* ids >= 0xFFFFFF00, then a small id after */
    uint32_t last_id;
    uint32_t id_backwards;    /* informational: ids below the previous one
                                 (not counting the wrap); PROTOCOL.md says
                                 ids are allocated increasingly */
    int handshake_ok;
} fake_srv;

typedef struct held {
    uint32_t id;
    uint8_t op;
    char key[64];
    uint16_t klen;
} held;

static uint8_t g_fake_version = 1; /* the fake session's negotiated version */

/* Answer held request h: OK, version 1, value = its key. */
static void fake_answer(int fd, held *h) {
    uint8_t out[KVMUX_FRAME_HDR_LEN + 8 + 64];
    uint8_t ext[8];
    kvmux_store_u64be(ext, 1);
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = g_fake_version;
    f.type = KVMUX_FRAME_RESPONSE;
    f.request_id = h->id;
    f.code = KVMUX_STATUS_OK;
    f.extras = ext;
    f.extras_len = 8;
    f.value = (const uint8_t *)h->key;
    f.value_len = h->klen;
    test_write_all(fd, out, kvmux_frame_encode(out, &f));
}

/* The fake server thread: handshake advertising fs->advertise, then hold
 * and answer requests as described above until EOF (bounded: 60 s). */
static void *fake_main(void *arg) {
    fake_srv *fs = arg;
    struct timeval tv = {10, 0};
    setsockopt(fs->lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int fd = accept(fs->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t in[4096];
    kvmux_frame f;
    kvmux_settings st;
    kvmux_settings_default(&st);
    st.max_outstanding = fs->advertise;
    kvmux_session sess;
    kvmux_session_init(&sess, KVMUX_ROLE_SERVER, &st);
    if (test_read_frame(fd, in, sizeof in, &f) <= 0 || kvmux_session_check_recv(&sess, &f) != 0) {
        close(fd);
        return NULL;
    }
    uint8_t ack[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_NAME + 64];
    int an = kvmux_session_accept_hello(&sess, &f, ack, "fake-credits");
    if (an <= 0 || test_write_all(fd, ack, (size_t)an) != 0) {
        close(fd);
        return NULL;
    }
    fs->handshake_ok = 1;
    g_fake_version = sess.version;

    held hs[64];
    uint32_t nheld = 0;
    int64_t deadline = test_now_ms() + 60000;
    while (test_now_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 2);
        if (r == 0 || nheld >= fs->cap) {
            /* Quiet, or the client used every credit: answer, newest first. */
            while (nheld > 0) fake_answer(fd, &hs[--nheld]);
            if (r == 0) continue;
        }
        if (r < 0) break;
        int n = test_read_frame(fd, in, sizeof in, &f);
        if (n <= 0) break; /* EOF: the client closed */
        if (f.type == KVMUX_FRAME_PING) {
            uint8_t pong[KVMUX_FRAME_HDR_LEN + 8];
            kvmux_frame pf = f;
            pf.type = KVMUX_FRAME_PONG;
            test_write_all(fd, pong, kvmux_frame_encode(pong, &pf));
            continue;
        }
        if (f.type != KVMUX_FRAME_REQUEST) continue;
        fs->requests++;
        if (f.request_id == 0) fs->id_zero++;
        if (f.request_id >= 0xFFFFFF00u) fs->saw_high = 1;
        if (fs->saw_high && f.request_id < 0x100u) fs->saw_wrap = 1;
        if (f.request_id < fs->last_id && !(fs->last_id >= 0xFFFFFF00u && f.request_id < 0x100u))
            fs->id_backwards++;
        fs->last_id = f.request_id;
        for (uint32_t i = 0; i < nheld; i++)
            if (hs[i].id == f.request_id) fs->id_dup++;
        if (nheld >= sizeof hs / sizeof hs[0]) {
            fs->over_credit++;
            continue;
        }
        held *h = &hs[nheld++];
        if (nheld > fs->max_seen) fs->max_seen = nheld;
        if (nheld > fs->cap) fs->over_credit++;
        h->id = f.request_id;
        h->op = f.code;
        h->klen = f.key_len < sizeof h->key ? f.key_len : (uint16_t)(sizeof h->key);
        memcpy(h->key, f.key, h->klen);
    }
    close(fd);
    return NULL;
}

static atomic_long d_ok, d_bad;
static kvmux_client *g_d;

/* Thread body for (d): D_CALLS GETs whose answer must be their own key. */
static void *d_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < D_CALLS; i++) {
        char key[48];
        snprintf(key, sizeof key, "cr:d:%d:%d", id, i);
        kvmux_value *v = NULL;
        int rc = kvmux_get(g_d, key, strlen(key), &v, CALL_TIMEOUT_MS);
        if (rc == 0 && v->len == strlen(key) && memcmp(v->data, key, v->len) == 0)
            atomic_fetch_add(&d_ok, 1);
        else if (atomic_fetch_add(&d_bad, 1) < 5)
            fprintf(stderr, "(d) GET %s: %s, value '%s'\n", key, kvmux_strerror(rc),
                    v ? (const char *)v->data : "(none)");
        kvmux_value_free(v);
    }
    return NULL;
}

/* (d): run the fake server and the client; check what the fake saw. */
static void test_fake_server_counts_credits(uint32_t advertise, uint32_t client_cap) {
    fake_srv fs;
    memset(&fs, 0, sizeof fs);
    fs.advertise = advertise;
    fs.cap = client_cap && client_cap < advertise ? client_cap : advertise;
    atomic_store(&d_ok, 0);
    atomic_store(&d_bad, 0);
    fs.lfd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fs.lfd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fs.lfd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t al = sizeof a;
    REQUIRE(getsockname(fs.lfd, (struct sockaddr *)&a, &al) == 0);
    REQUIRE(listen(fs.lfd, 4) == 0);
    pthread_t ft;
    REQUIRE(pthread_create(&ft, NULL, fake_main, &fs) == 0);

    kvmux_options o;
    kvmux_options_init(&o);
    o.first_request_id = 0xFFFFFFF0u;
    o.max_outstanding = client_cap;
    REQUIRE(kvmux_connect(&g_d, "127.0.0.1", ntohs(a.sin_port), &o) == 0);
    kvmux_server_info info;
    kvmux_get_server_info(g_d, &info);
    /* kvmux.h calls this "the settings the server granted" and "the
     * client's credits": with a client cap those differ, and both readings
     * are accepted (the library currently reports the effective cap). */
    CHECK(info.max_outstanding == advertise || info.max_outstanding == fs.cap);
    CHECK(strcmp(info.server_name, "fake-credits") == 0);

    pthread_t th[D_THREADS];
    for (int i = 0; i < D_THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, d_worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < D_THREADS; i++) pthread_join(th[i], NULL);
    CHECK_EQ(kvmux_connection_error(g_d, NULL, 0), 0);
    kvmux_close(g_d);
    pthread_join(ft, NULL); /* the fake ends on EOF, or after its 60 s bound */
    close(fs.lfd);

    printf("(d) fake server: %u requests, at most %u unanswered (credits %u, client cap %u), "
           "%u over, %u id 0, %u ids reused while pending, wrap seen %d, %u ids below the "
           "previous one\n", fs.requests, fs.max_seen, advertise, client_cap, fs.over_credit,
           fs.id_zero, fs.id_dup, fs.saw_wrap, fs.id_backwards);
    CHECK(fs.handshake_ok);
    CHECK_EQ(atomic_load(&d_ok), D_THREADS * D_CALLS);
    CHECK_EQ(atomic_load(&d_bad), 0);
    CHECK_EQ(fs.requests, D_THREADS * D_CALLS);
    CHECK_EQ(fs.max_seen, fs.cap); /* the cap was reached, never passed */
    CHECK_EQ(fs.over_credit, 0);
    CHECK_EQ(fs.id_zero, 0);
    CHECK_EQ(fs.id_dup, 0);
    CHECK(fs.saw_wrap);
}

/* ---- (e) ---- */

/* Tiny queue limits (1 frame, 1 byte) never deadlock: every frame is
 * admitted alone once the queue drains, so 16 threads of SET/GET with
 * 4 KiB values all complete, just one frame at a time. */
#define E_THREADS 16
#define E_VALUE 4096
static kvmux_client *g_e;
static atomic_long e_ok, e_bad;

/* Thread body for (e): SET a 4 KiB value, GET it back, check it. */
static void *e_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    char key[32];
    snprintf(key, sizeof key, "cr:e:%d", id);
    static _Thread_local uint8_t val[E_VALUE];
    for (int i = 0; i < 50; i++) {
        memset(val, 'a' + (id + i) % 26, sizeof val);
        int rc = kvmux_set(g_e, key, strlen(key), val, sizeof val, 0, NULL, CALL_TIMEOUT_MS);
        kvmux_value *v = NULL;
        if (rc == 0) rc = kvmux_get(g_e, key, strlen(key), &v, CALL_TIMEOUT_MS);
        if (rc == 0 && v->len == sizeof val && memcmp(v->data, val, sizeof val) == 0)
            atomic_fetch_add(&e_ok, 1);
        else if (atomic_fetch_add(&e_bad, 1) < 5)
            fprintf(stderr, "(e) thread %d: %s\n", id, rc ? kvmux_strerror(rc) : "wrong value");
        kvmux_value_free(v);
    }
    return NULL;
}

/* (e): E_THREADS workers on a client whose queue holds one frame, one byte. */
static void test_tiny_queue(void) {
    test_server srv;
    REQUIRE(test_server_start(&srv, NULL) == 0);
    kvmux_options o;
    kvmux_options_init(&o);
    o.queue_limit = 1;
    o.queue_bytes_limit = 1;
    REQUIRE(kvmux_connect(&g_e, "127.0.0.1", srv.port, &o) == 0);
    pthread_t th[E_THREADS];
    int64_t t0 = test_now_ms();
    for (int i = 0; i < E_THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, e_worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < E_THREADS; i++) pthread_join(th[i], NULL);
    printf("(e) queue limit 1 frame / 1 byte: %ld ok, %ld bad in %lld ms\n", atomic_load(&e_ok),
           atomic_load(&e_bad), (long long)(test_now_ms() - t0));
    CHECK_EQ(atomic_load(&e_ok), E_THREADS * 50);
    CHECK_EQ(atomic_load(&e_bad), 0);
    CHECK_EQ(kvmux_connection_error(g_e, NULL, 0), 0);
    kvmux_close(g_e);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

/* Cases (a) to (e), each with its own server. */
int main(void) {
    test_raw_busy(1, 1);
    /* Again on the newest version both sides speak, if that is not v1. */
    test_raw_busy(KVMUX_PROTO_VERSION_MIN, KVMUX_PROTO_VERSION_MAX);
    test_client_respects_credits();
    test_backpressure();
    test_fake_server_counts_credits(3, 0);
    test_fake_server_counts_credits(16, 2); /* the client's own cap binds */
    test_tiny_queue();
    return test_report();
}
