/* Garbage, malformed and truncated input on raw sockets.
 *
 * Each case opens a raw TCP connection to a real kvmuxd, sends something a
 * correct peer never sends, and asserts the server's documented reaction:
 * an ERROR frame with the precise kvmux_wire_error code, then a close of
 * that connection only. Between cases a separate, well-behaved kvmux_client
 * connection must keep being served (a SET and a GET succeed) and the
 * server process must still be running: one bad peer never costs the
 * others anything.
 *
 * Also covered: an oversized body_len is refused from the header alone
 * (the body is never sent, so a server that waited for it would time the
 * test out), a half-sent frame followed by shutdown(SHUT_WR) is closed
 * cleanly, a silent or slowloris client is dropped with ERROR TIMEOUT after
 * --handshake-timeout, a valid frame dribbled byte by byte is still served,
 * and request-level errors (unknown opcode, empty key, wrong extras, value
 * or key over the limit) get a RESPONSE status without closing the
 * connection. A background thread keeps SET/GET traffic on the good
 * connection for the whole run and must see no error at all.
 *
 * What it is not: a fuzzer (tests/fuzz does that without sockets).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

#define IO_TIMEOUT_MS 3000
#define CLOSE_TIMEOUT_MS 3000
#define HANDSHAKE_MS 500
/* The server's limits, passed explicitly (see main). */
#define SRV_MAX_FRAME (2u * 1024 * 1024)
#define SRV_MAX_VALUE (1024u * 1024)
#define SRV_MAX_KEY 4096u

static test_server g_srv;
static kvmux_client *g_c;
static int g_case;


/* A well-formed GET frame for key with the given header overrides applied
 * afterwards by the caller. Returns its length. */
static size_t make_get(uint8_t *out, uint32_t rid, const char *key) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = 1;
    f.type = KVMUX_FRAME_REQUEST;
    f.request_id = rid;
    f.code = KVMUX_OP_GET;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)strlen(key);
    return kvmux_frame_encode(out, &f);
}

/* Background load on the good connection for the whole test: a bad peer
 * must never disturb it, not even briefly. */
static atomic_int bg_stop;
static atomic_long bg_ok, bg_bad;

/* Thread body: SET/GET on the good connection until bg_stop. */
static void *bg_main(void *arg) {
    (void)arg;
    char val[32];
    for (long i = 0; i < 100000000L && !atomic_load(&bg_stop); i++) {
        snprintf(val, sizeof val, "bg-%ld", i);
        int rc = kvmux_set(g_c, "garbage:bg", 10, val, strlen(val), 0, NULL, 5000);
        kvmux_value *v = NULL;
        if (rc == 0) rc = kvmux_get(g_c, "garbage:bg", 10, &v, 5000);
        if (rc == 0 && v->len == strlen(val) && memcmp(v->data, val, v->len) == 0) {
            atomic_fetch_add(&bg_ok, 1);
        } else if (atomic_fetch_add(&bg_bad, 1) < 5) {
            fprintf(stderr, "background load: %s\n", rc ? kvmux_strerror(rc) : "wrong value");
        }
        kvmux_value_free(v);
        test_sleep_ms(1);
    }
    return NULL;
}

/* The well-behaved client is still served and the server is still alive. */
static void check_others_served(const char *label) {
    char key[64], val[64];
    snprintf(key, sizeof key, "garbage:alive:%d", g_case);
    snprintf(val, sizeof val, "after %s", label);
    int rc = kvmux_set(g_c, key, strlen(key), val, strlen(val), 0, NULL, 5000);
    if (rc != 0) fprintf(stderr, "[%s] SET on the good connection: %s\n", label, kvmux_strerror(rc));
    CHECK_EQ(rc, 0);
    kvmux_value *v = NULL;
    rc = kvmux_get(g_c, key, strlen(key), &v, 5000);
    CHECK_EQ(rc, 0);
    CHECK(rc == 0 && v->len == strlen(val) && memcmp(v->data, val, v->len) == 0);
    kvmux_value_free(v);
    int st;
    pid_t r = waitpid(g_srv.pid, &st, WNOHANG);
    if (r != 0) {
        fprintf(stderr, "[%s] kvmuxd is gone (waitpid %d, status 0x%x)\n", label, (int)r, st);
        g_srv.pid = 0;
    }
    REQUIRE(r == 0);
}

/* Read one frame and check it is an ERROR with the wanted code (or, when
 * want is 0, any defined code); then the server must close. */
static void expect_error_then_close(int fd, int want, const char *label) {
    uint8_t buf[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG + 64];
    kvmux_frame f;
    int n = test_read_frame(fd, buf, sizeof buf, &f);
    if (n <= 0) {
        fprintf(stderr, "[%s] no ERROR frame (test_read_frame %d, errno %d)\n", label, n, errno);
        CHECK(n > 0);
    } else {
        if (f.type != KVMUX_FRAME_ERROR || (want && f.code != want) ||
            (!want && (f.code < 1 || f.code > KVMUX_ERR_MAX)))
            fprintf(stderr, "[%s] got frame type %d code %d (%s) '%.*s', want ERROR %d (%s)\n",
                    label, f.type, f.code, kvmux_wire_error_name(f.code), (int)f.value_len,
                    (const char *)f.value, want, kvmux_wire_error_name(want));
        CHECK_EQ(f.type, KVMUX_FRAME_ERROR);
        if (want)
            CHECK_EQ(f.code, want);
        else
            CHECK(f.code >= 1 && f.code <= KVMUX_ERR_MAX);
    }
    int closed = test_wait_closed(fd, CLOSE_TIMEOUT_MS);
    if (!closed) fprintf(stderr, "[%s] server did not close the connection\n", label);
    CHECK(closed);
}

/* HELLO offering protocol versions [vmin, vmax] (default settings), then
 * read the HELLO_ACK. Returns the version the server chose, or -1. */
static int raw_hello(int fd, uint8_t vmin, uint8_t vmax) {
    kvmux_session s;
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, NULL);
    uint8_t out[KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 64];
    size_t n = kvmux_session_encode_hello(&s, out, "garbage_test");
    out[KVMUX_FRAME_HDR_LEN] = vmin; /* extras: [min_version][max_version] */
    out[KVMUX_FRAME_HDR_LEN + 1] = vmax;
    if (test_write_all(fd, out, n) != 0) return -1;
    uint8_t in[4096];
    kvmux_frame f;
    if (test_read_frame(fd, in, sizeof in, &f) <= 0 || f.type != KVMUX_FRAME_HELLO_ACK) return -1;
    return f.code;
}

/* A raw connection to the server; with handshake != 0, after a handshake
 * pinned to protocol version 1, so every case below is judged by v1's rules
 * (in v2 some of these bytes mean something: types 8..11, flag 0x01) and
 * frames carry header version 1. Stops the test if that fails. */
static int open_raw(int handshake) {
    int fd = test_connect_raw(g_srv.port, IO_TIMEOUT_MS);
    REQUIRE(fd >= 0);
    if (handshake) REQUIRE(raw_hello(fd, 1, 1) == 1);
    return fd;
}

/* Send buf on a fresh connection (after a handshake if asked) and expect
 * ERROR want then a close; then check the good connection. */
static void run_case(const char *label, int handshake, const uint8_t *buf, size_t len, int want) {
    g_case++;
    int fd = open_raw(handshake);
    CHECK_EQ(test_write_all(fd, buf, len), 0);
    expect_error_then_close(fd, want, label);
    close(fd);
    check_others_served(label);
}

static uint64_t rng = 0x1234567887654321ULL;
/* Deterministic xorshift bytes, so a failure reproduces. */
static uint8_t rnd8(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint8_t)(rng >> 24);
}

/* Random bytes before and after the handshake: BAD_MAGIC (or some
 * ERROR when the garbage happens to start with the magic). */
static void case_random_garbage(void) {
    for (int round = 0; round < 4; round++) {
        uint8_t junk[64];
        for (size_t i = 0; i < sizeof junk; i++) junk[i] = rnd8();
        if (junk[0] == KVMUX_MAGIC) junk[0] ^= 0xFF;
        run_case("random garbage (pre-handshake)", 0, junk, sizeof junk, KVMUX_ERR_BAD_MAGIC);
        run_case("random garbage (open)", 1, junk, sizeof junk, KVMUX_ERR_BAD_MAGIC);
        /* Plausible start, garbage after: some ERROR, whatever it is. */
        junk[0] = KVMUX_MAGIC;
        run_case("garbage after magic", round & 1, junk, sizeof junk, 0);
    }
}

/* body_len over the max frame: FRAME_TOO_LARGE from the header alone. */
static void case_oversized(void) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    /* Far over any limit; only the header is ever sent. */
    test_put_header(h, KVMUX_MAGIC, 1, KVMUX_FRAME_REQUEST, 0, 7, KVMUX_OP_SET, 8, 3, 0x7FFFFFF0u);
    int64_t t0 = test_now_ms();
    run_case("oversized body_len (open)", 1, h, sizeof h, KVMUX_ERR_FRAME_TOO_LARGE);
    CHECK(test_now_ms() - t0 < 2000);
    /* One byte over the 2 MiB max frame. */
    test_put_header(h, KVMUX_MAGIC, 1, KVMUX_FRAME_REQUEST, 0, 8, KVMUX_OP_SET, 8, 3,
            SRV_MAX_FRAME - KVMUX_FRAME_HDR_LEN + 1);
    run_case("body_len one over max frame", 1, h, sizeof h, KVMUX_ERR_FRAME_TOO_LARGE);
    /* A HELLO that claims a huge body before any handshake. */
    test_put_header(h, KVMUX_MAGIC, 1, KVMUX_FRAME_HELLO, 0, 0, 0, 2, 0, 0xFFFFFFFFu);
    run_case("oversized HELLO", 0, h, sizeof h, KVMUX_ERR_FRAME_TOO_LARGE);
}

/* Send part of a frame, half-close, and expect the server to close (an
 * ERROR before the close is allowed but not required: the peer is gone). */
static void truncated(const char *label, int handshake, size_t cut) {
    g_case++;
    int fd = open_raw(handshake);
    uint8_t buf[64];
    size_t n = make_get(buf, 9, "truncated-key-0123456789");
    REQUIRE(cut < n);
    CHECK_EQ(test_write_all(fd, buf, cut), 0);
    test_sleep_ms(20);
    CHECK_EQ(shutdown(fd, SHUT_WR), 0);
    int closed = test_wait_closed(fd, CLOSE_TIMEOUT_MS);
    if (!closed) fprintf(stderr, "[%s] server did not close after SHUT_WR\n", label);
    CHECK(closed);
    close(fd);
    check_others_served(label);
}

/* Half frames followed by a half-close: the server closes cleanly. */
static void case_truncated(void) {
    truncated("truncated body + SHUT_WR", 1, 20);
    truncated("truncated header + SHUT_WR", 1, 7);
    truncated("1 byte + SHUT_WR", 1, 1);
    truncated("nothing but SHUT_WR before HELLO", 0, 0);
    /* Half a HELLO, then half-close. */
    g_case++;
    int fd = open_raw(0);
    kvmux_session s;
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, NULL);
    uint8_t hello[KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 64];
    size_t n = kvmux_session_encode_hello(&s, hello, "half");
    CHECK_EQ(test_write_all(fd, hello, n / 2), 0);
    CHECK_EQ(shutdown(fd, SHUT_WR), 0);
    CHECK(test_wait_closed(fd, CLOSE_TIMEOUT_MS));
    close(fd);
    check_others_served("half HELLO + SHUT_WR");
}

/* One bad header field at a time: version, magic, type, flags,
 * inconsistent lengths. */
static void case_header_fields(void) {
    uint8_t buf[64];
    size_t n;

    n = make_get(buf, 11, "k");
    buf[1] = 2;
    run_case("bad version 2 (open)", 1, buf, n, KVMUX_ERR_BAD_VERSION);
    buf[1] = 0;
    run_case("bad version 0 (open)", 1, buf, n, KVMUX_ERR_BAD_VERSION);

    n = make_get(buf, 12, "k");
    buf[0] = 0x00;
    run_case("bad magic (open)", 1, buf, n, KVMUX_ERR_BAD_MAGIC);
    buf[0] = 'K';
    run_case("bad magic 'K' (pre-handshake)", 0, buf, n, KVMUX_ERR_BAD_MAGIC);

    const uint8_t types[] = {KVMUX_FRAME_CANCEL, KVMUX_FRAME_GOAWAY, KVMUX_FRAME_WINDOW_UPDATE,
                             KVMUX_FRAME_CONTINUATION, 0, 99, 255};
    for (size_t i = 0; i < sizeof types; i++) {
        n = make_get(buf, 13, "k");
        buf[2] = types[i];
        char label[64];
        snprintf(label, sizeof label, "reserved/unknown type %u", types[i]);
        run_case(label, 1, buf, n, KVMUX_ERR_BAD_TYPE);
    }

    const uint8_t flags[] = {0x01, 0x80};
    for (size_t i = 0; i < sizeof flags; i++) {
        n = make_get(buf, 14, "k");
        buf[3] = flags[i];
        run_case("non-zero flags", 1, buf, n, KVMUX_ERR_BAD_FLAGS);
    }

    /* extras_len + key_len > body_len. */
    uint8_t h[KVMUX_FRAME_HDR_LEN + 8];
    test_put_header(h, KVMUX_MAGIC, 1, KVMUX_FRAME_REQUEST, 0, 15, KVMUX_OP_GET, 0, 8, 4);
    memset(h + KVMUX_FRAME_HDR_LEN, 'x', 8);
    run_case("key_len over body_len", 1, h, KVMUX_FRAME_HDR_LEN + 4, KVMUX_ERR_BAD_LENGTH);
}

/* Handshake and direction rules: REQUEST before HELLO, no common
 * version, bad HELLO header version, second HELLO, RESPONSE to the server,
 * request_id 0. */
static void case_handshake(void) {
    uint8_t buf[64];
    size_t n = make_get(buf, 21, "k");
    run_case("REQUEST before HELLO", 0, buf, n, KVMUX_ERR_HANDSHAKE);

    kvmux_session s;
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, NULL);
    uint8_t hello[KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 64];
    n = kvmux_session_encode_hello(&s, hello, "from-the-future");
    REQUIRE(hello[9] == 2); /* extras: [min_version][max_version] */
    hello[KVMUX_FRAME_HDR_LEN] = 9;
    hello[KVMUX_FRAME_HDR_LEN + 1] = 9;
    run_case("HELLO min=max=9", 0, hello, n, KVMUX_ERR_UNSUPPORTED_VERSION);

    /* A HELLO whose header itself claims version 2: the handshake frame
     * must use the handshake version (1), whatever versions exist. */
    n = kvmux_session_encode_hello(&s, hello, "v2-header");
    hello[1] = 2;
    run_case("HELLO with header version 2", 0, hello, n, KVMUX_ERR_BAD_VERSION);

    /* A second HELLO on an open connection. */
    n = kvmux_session_encode_hello(&s, hello, "again");
    run_case("second HELLO", 1, hello, n, KVMUX_ERR_HANDSHAKE);

    /* A RESPONSE sent to the server. */
    n = make_get(buf, 22, "k");
    buf[2] = KVMUX_FRAME_RESPONSE;
    buf[8] = KVMUX_STATUS_OK;
    run_case("RESPONSE sent to the server", 1, buf, n, KVMUX_ERR_UNEXPECTED_FRAME);

    /* request_id 0 is reserved for connection-level frames. */
    n = make_get(buf, 0, "k");
    run_case("REQUEST with request_id 0", 1, buf, n, KVMUX_ERR_PROTOCOL);
}

/* Request-level errors: a RESPONSE with a status, connection stays open. */
static void case_request_level(void) {
    g_case++;
    int fd = open_raw(1);
    uint8_t buf[64], in[4096];
    kvmux_frame f;

    size_t n = make_get(buf, 31, "k");
    buf[8] = 77; /* unknown opcode */
    CHECK_EQ(test_write_all(fd, buf, n), 0);
    CHECK(test_read_frame(fd, in, sizeof in, &f) > 0);
    CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
    CHECK_EQ(f.request_id, 31);
    CHECK_EQ(f.code, KVMUX_STATUS_UNKNOWN_OP);

    kvmux_frame g;
    memset(&g, 0, sizeof g);
    g.version = 1;
    g.type = KVMUX_FRAME_REQUEST;
    g.request_id = 32;
    g.code = KVMUX_OP_GET; /* empty key */
    n = kvmux_frame_encode(buf, &g);
    CHECK_EQ(test_write_all(fd, buf, n), 0);
    CHECK(test_read_frame(fd, in, sizeof in, &f) > 0);
    CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
    CHECK_EQ(f.request_id, 32);
    CHECK_EQ(f.code, KVMUX_STATUS_BAD_REQUEST);

    /* GET with extras it should not have. */
    uint8_t ext[8] = {0};
    g.request_id = 33;
    g.extras = ext;
    g.extras_len = 8;
    g.key = (const uint8_t *)"k";
    g.key_len = 1;
    n = kvmux_frame_encode(buf, &g);
    CHECK_EQ(test_write_all(fd, buf, n), 0);
    CHECK(test_read_frame(fd, in, sizeof in, &f) > 0);
    CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
    CHECK_EQ(f.request_id, 33);
    CHECK_EQ(f.code, KVMUX_STATUS_BAD_REQUEST);

    /* Value one byte over --max-value (1 MiB here), frame within the max
     * frame: request-level TOO_LARGE. Likewise a key over --max-key. */
    {
        size_t vlen = SRV_MAX_VALUE + 1;
        uint8_t *big = malloc(KVMUX_FRAME_HDR_LEN + 8 + 16 + vlen);
        REQUIRE(big);
        uint8_t *val = calloc(1, vlen);
        REQUIRE(val);
        uint8_t ttl[8] = {0};
        kvmux_frame b;
        memset(&b, 0, sizeof b);
        b.version = 1;
        b.type = KVMUX_FRAME_REQUEST;
        b.request_id = 35;
        b.code = KVMUX_OP_SET;
        b.extras = ttl;
        b.extras_len = 8;
        b.key = (const uint8_t *)"garbage:big";
        b.key_len = 11;
        b.value = val;
        b.value_len = (uint32_t)vlen;
        n = kvmux_frame_encode(big, &b);
        CHECK_EQ(test_write_all(fd, big, n), 0);
        CHECK(test_read_frame(fd, in, sizeof in, &f) > 0);
        CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
        CHECK_EQ(f.request_id, 35);
        CHECK_EQ(f.code, KVMUX_STATUS_TOO_LARGE);

        b.request_id = 36;
        b.key = val; /* zeros: any bytes make a key */
        b.key_len = SRV_MAX_KEY + 1;
        b.value_len = 1;
        n = kvmux_frame_encode(big, &b);
        CHECK_EQ(test_write_all(fd, big, n), 0);
        CHECK(test_read_frame(fd, in, sizeof in, &f) > 0);
        CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
        CHECK_EQ(f.request_id, 36);
        CHECK_EQ(f.code, KVMUX_STATUS_TOO_LARGE);
        free(val);
        free(big);
    }

    /* Still open: a proper GET is answered (NOT_FOUND). */
    n = make_get(buf, 34, "garbage:no-such-key");
    CHECK_EQ(test_write_all(fd, buf, n), 0);
    CHECK(test_read_frame(fd, in, sizeof in, &f) > 0);
    CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
    CHECK_EQ(f.request_id, 34);
    CHECK_EQ(f.code, KVMUX_STATUS_NOT_FOUND);
    close(fd);
    check_others_served("request-level errors");
}

/* A connection that never says HELLO is closed with ERROR TIMEOUT after
 * --handshake-timeout (HANDSHAKE_MS here), and so is one that sends half a
 * HELLO and stops (slowloris). */
static void case_handshake_timeout(void) {
    g_case++;
    int fd = open_raw(0);
    int64_t t0 = test_now_ms();
    expect_error_then_close(fd, KVMUX_ERR_TIMEOUT, "silent client");
    int64_t dt = test_now_ms() - t0;
    printf("silent client closed after %lld ms (handshake timeout %d)\n", (long long)dt,
           HANDSHAKE_MS);
    CHECK(dt >= HANDSHAKE_MS - 50 && dt < HANDSHAKE_MS + 2000);
    close(fd);
    check_others_served("silent client");

    g_case++;
    fd = open_raw(0);
    kvmux_session s;
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, NULL);
    uint8_t hello[KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 64];
    size_t n = kvmux_session_encode_hello(&s, hello, "slowloris");
    CHECK_EQ(test_write_all(fd, hello, n - 3), 0);
    expect_error_then_close(fd, KVMUX_ERR_TIMEOUT, "slowloris HELLO");
    close(fd);
    check_others_served("slowloris HELLO");
}

/* A valid frame dribbled one byte per write is still decoded and answered:
 * the server's decoder is incremental. */
static void case_dribble(void) {
    g_case++;
    int fd = open_raw(1);
    uint8_t buf[64], in[4096];
    kvmux_frame f;
    size_t n = make_get(buf, 41, "garbage:alive:1");
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(test_write_all(fd, buf + i, 1), 0);
        test_sleep_ms(2);
    }
    CHECK(test_read_frame(fd, in, sizeof in, &f) > 0);
    CHECK_EQ(f.type, KVMUX_FRAME_RESPONSE);
    CHECK_EQ(f.request_id, 41);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    close(fd);
    check_others_served("dribbled frame");
}

/* On a session of the highest version both sides speak (v2 once the
 * server has it), the version-independent header rules: a frame must carry
 * the negotiated version (not 1 on a v2 session, never one above the
 * highest), unknown types and undefined flag bits are errors. */
static void case_latest_version(void) {
    int fd = test_connect_raw(g_srv.port, IO_TIMEOUT_MS);
    REQUIRE(fd >= 0);
    int v = raw_hello(fd, KVMUX_PROTO_VERSION_MIN, KVMUX_PROTO_VERSION_MAX);
    close(fd);
    printf("latest common protocol version: %d\n", v);
    CHECK(v >= 1 && v <= KVMUX_PROTO_VERSION_MAX);
    if (v < 1) return;

    struct {
        const char *label;
        int off, val, want;
    } cases[] = {
        {"latest: header version above the highest", 1, KVMUX_PROTO_VERSION_MAX + 1,
         KVMUX_ERR_BAD_VERSION},
        {"latest: header version 0", 1, 0, KVMUX_ERR_BAD_VERSION},
        {"latest: header version 1 on a newer session", 1, 1, KVMUX_ERR_BAD_VERSION},
        {"latest: unknown type 99", 2, 99, KVMUX_ERR_BAD_TYPE},
        {"latest: unknown type 0", 2, 0, KVMUX_ERR_BAD_TYPE},
        {"latest: undefined flag 0x80", 3, 0x80, KVMUX_ERR_BAD_FLAGS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].off == 1 && cases[i].val == 1 && v == 1) continue; /* valid on v1 */
        g_case++;
        fd = test_connect_raw(g_srv.port, IO_TIMEOUT_MS);
        REQUIRE(fd >= 0);
        REQUIRE(raw_hello(fd, KVMUX_PROTO_VERSION_MIN, KVMUX_PROTO_VERSION_MAX) == v);
        uint8_t buf[64];
        size_t n = make_get(buf, 51, "k");
        buf[1] = (uint8_t)v;
        buf[cases[i].off] = (uint8_t)cases[i].val;
        CHECK_EQ(test_write_all(fd, buf, n), 0);
        expect_error_then_close(fd, cases[i].want, cases[i].label);
        close(fd);
        check_others_served(cases[i].label);
    }
}

/* One server (short handshake timeout), one good client with background
 * load, every case in turn. */
int main(void) {
    char hs[16];
    snprintf(hs, sizeof hs, "%d", HANDSHAKE_MS);
    /* Limits spelled out: the request-level TOO_LARGE cases depend on them. */
    const char *const args[] = {"--handshake-timeout", hs, "--max-frame", "2M", "--max-value", "1M",
                                "--max-key", "4096", NULL};
    REQUIRE(test_server_start(&g_srv, args) == 0);
    kvmux_options o;
    kvmux_options_init(&o);
    o.client_name = "garbage_test";
    REQUIRE(kvmux_connect(&g_c, "127.0.0.1", g_srv.port, &o) == 0);
    check_others_served("start");
    pthread_t bg;
    REQUIRE(pthread_create(&bg, NULL, bg_main, NULL) == 0);

    case_random_garbage();
    case_oversized();
    case_truncated();
    case_header_fields();
    case_handshake();
    case_request_level();
    case_dribble();
    case_handshake_timeout();
    case_latest_version();

    atomic_store(&bg_stop, 1);
    pthread_join(bg, NULL); /* bounded: each call has a 5 s deadline */
    printf("background load: %ld good rounds, %ld bad during the whole test\n",
           atomic_load(&bg_ok), atomic_load(&bg_bad));
    CHECK(atomic_load(&bg_ok) > 0);
    CHECK_EQ(atomic_load(&bg_bad), 0);

    CHECK_EQ(kvmux_connection_error(g_c, NULL, 0), 0);
    kvmux_close(g_c);
    CHECK_EQ(test_server_stop(&g_srv, 10000), 0);
    return test_report();
}
