/* Unit tests for the kvmux session (src/proto/session.c): the handshake in
 * both roles through real encoded bytes, version negotiation, frames before
 * the handshake, wrong version and wrong direction once open, ERROR moving
 * the session to CLOSED, and the server's credits with BUSY at the limit.
 * Everything is sans-IO: bytes go from one session's encoder straight into
 * the other's decoder. (The v2 rules -- capped versions, v2 frame types
 * and directions, GOAWAY, windows -- are in session_v2_test.c.) */
#include "proto.h"
#include "proto_testutil.h"
#include "testutil.h"

#include <string.h>

#define HELLO_CAP (KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 4 * 6)
#define ACK_CAP (KVMUX_FRAME_HDR_LEN + KVMUX_MAX_NAME + 4 * 6)

/* A frame with no body, for state checks that need no bytes. */
static kvmux_frame mk(uint8_t type, uint8_t version, uint32_t id) {
    return proto_test_frame(type, version, 0, id);
}

/* Run a full handshake between a fresh client and server. */
static void handshake(kvmux_session *c, kvmux_session *s,
                      const kvmux_settings *cs, const kvmux_settings *ss) {
    uint8_t hello[HELLO_CAP], ack[ACK_CAP];
    kvmux_frame f;
    kvmux_session_init(c, KVMUX_ROLE_CLIENT, cs);
    kvmux_session_init(s, KVMUX_ROLE_SERVER, ss);
    size_t n = kvmux_session_encode_hello(c, hello, "client-1");
    REQUIRE(kvmux_frame_decode(hello, n, s->local.max_frame_size, &f) == (int)n);
    REQUIRE(kvmux_session_check_recv(s, &f) == 0);
    int m = kvmux_session_accept_hello(s, &f, ack, "server-1");
    REQUIRE(m > 0);
    REQUIRE(kvmux_frame_decode(ack, (size_t)m, c->local.max_frame_size, &f) == m);
    REQUIRE(kvmux_session_check_recv(c, &f) == 0);
    REQUIRE(kvmux_session_on_hello_ack(c, &f) == 0);
}

static void test_handshake(void) {
    kvmux_settings cs, ss;
    kvmux_settings_default(&cs);
    kvmux_settings_default(&ss);
    cs.max_frame_size = 65536;
    ss.max_outstanding = 16;
    ss.max_key_size = 200;

    kvmux_session c, s;
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, &cs);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, &ss);
    CHECK_EQ(c.state, KVMUX_SESSION_AWAIT_HELLO_ACK);
    CHECK_EQ(s.state, KVMUX_SESSION_AWAIT_HELLO);
    CHECK_EQ(c.version, 0);
    CHECK_EQ(s.outstanding, 0);

    uint8_t hello[HELLO_CAP];
    size_t n = kvmux_session_encode_hello(&c, hello, "client-1");
    CHECK_EQ(n, KVMUX_FRAME_HDR_LEN + 2 + 8 + 24);
    kvmux_frame f;
    CHECK_EQ(kvmux_frame_decode(hello, n, KVMUX_DEFAULT_MAX_FRAME, &f), (long long)n);
    CHECK_EQ(f.type, KVMUX_FRAME_HELLO);
    CHECK_EQ(f.version, KVMUX_HANDSHAKE_VERSION);
    CHECK_EQ(f.request_id, 0);
    CHECK_EQ(f.extras[0], KVMUX_PROTO_VERSION_MIN);
    CHECK_EQ(f.extras[1], KVMUX_PROTO_VERSION_MAX);
    CHECK(f.key_len == 8 && memcmp(f.key, "client-1", 8) == 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);

    uint8_t ack[ACK_CAP];
    int m = kvmux_session_accept_hello(&s, &f, ack, "server-1");
    CHECK_EQ(m, KVMUX_FRAME_HDR_LEN + 8 + 24);
    CHECK_EQ(s.state, KVMUX_SESSION_OPEN);
    CHECK_EQ(s.version, KVMUX_PROTO_VERSION_MAX);
    CHECK_EQ(s.peer.max_frame_size, 65536); /* the client's advertisement */

    REQUIRE(m > 0);
    CHECK_EQ(kvmux_frame_decode(ack, (size_t)m, KVMUX_DEFAULT_MAX_FRAME, &f), m);
    CHECK_EQ(f.type, KVMUX_FRAME_HELLO_ACK);
    CHECK_EQ(f.version, KVMUX_HANDSHAKE_VERSION);
    CHECK_EQ(f.code, KVMUX_PROTO_VERSION_MAX);
    CHECK(f.key_len == 8 && memcmp(f.key, "server-1", 8) == 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    CHECK_EQ(kvmux_session_on_hello_ack(&c, &f), 0);
    CHECK_EQ(c.state, KVMUX_SESSION_OPEN);
    CHECK_EQ(c.version, KVMUX_PROTO_VERSION_MAX);
    CHECK_EQ(c.peer.max_outstanding, 16);
    CHECK_EQ(c.peer.max_key_size, 200);

    /* NULL names and NULL local settings (defaults). */
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    CHECK_EQ(c.local.max_frame_size, KVMUX_DEFAULT_MAX_FRAME);
    n = kvmux_session_encode_hello(&c, hello, NULL);
    CHECK_EQ(n, KVMUX_FRAME_HDR_LEN + 2 + 24);
    /* A name over KVMUX_MAX_NAME is truncated, and still decodes. */
    char longname[400];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    n = kvmux_session_encode_hello(&c, hello, longname);
    CHECK_EQ(n, HELLO_CAP);
    CHECK_EQ(kvmux_frame_decode(hello, n, KVMUX_DEFAULT_MAX_FRAME, &f), (long long)n);
    CHECK_EQ(f.key_len, KVMUX_MAX_NAME);
}

/* Build a HELLO with an arbitrary version range and settings block. */
static size_t mk_hello(uint8_t *out, uint8_t vmin, uint8_t vmax,
                       const uint8_t *settings, uint32_t slen) {
    uint8_t ext[2] = {vmin, vmax};
    kvmux_frame f = mk(KVMUX_FRAME_HELLO, KVMUX_HANDSHAKE_VERSION, 0);
    f.extras = ext;
    f.extras_len = 2;
    f.value = settings;
    f.value_len = slen;
    return kvmux_frame_encode(out, &f);
}

static void test_negotiation(void) {
    uint8_t buf[256], ack[ACK_CAP];
    kvmux_session s;
    kvmux_frame f;
    int m;

    /* Overlap: a future client offering 1..5 gets this server's highest. */
    size_t n = mk_hello(buf, 1, 5, NULL, 0);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    m = kvmux_session_accept_hello(&s, &f, ack, "srv");
    CHECK(m > 0);
    CHECK_EQ(s.version, KVMUX_PROTO_VERSION_MAX);
    REQUIRE(m > 0);
    CHECK_EQ(kvmux_frame_decode(ack, (size_t)m, KVMUX_DEFAULT_MAX_FRAME, &f), m);
    CHECK_EQ(f.code, KVMUX_PROTO_VERSION_MAX);
    /* Peer settings absent from HELLO stay at the defaults. */
    CHECK_EQ(s.peer.max_frame_size, KVMUX_DEFAULT_MAX_FRAME);

    /* No overlap: UNSUPPORTED_VERSION, nothing written, session closed. */
    n = mk_hello(buf, KVMUX_PROTO_VERSION_MAX + 1, KVMUX_PROTO_VERSION_MAX + 2, NULL, 0);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    memset(ack, 0xEE, sizeof ack);
    CHECK_EQ(kvmux_session_accept_hello(&s, &f, ack, "srv"), -KVMUX_ERR_UNSUPPORTED_VERSION);
    CHECK_EQ(ack[0], 0xEE);
    CHECK_EQ(s.state, KVMUX_SESSION_CLOSED);
    CHECK_EQ(s.version, 0);
    /* Empty range (min > max) and a range of only 0. */
    n = mk_hello(buf, 1, 0, NULL, 0);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    CHECK_EQ(kvmux_session_accept_hello(&s, &f, ack, NULL), -KVMUX_ERR_UNSUPPORTED_VERSION);

    /* Bad settings in HELLO: out-of-range value -> PROTOCOL. */
    uint8_t bad[6] = {0, KVMUX_SETTING_MAX_OUTSTANDING, 0, 0, 0, 0};
    n = mk_hello(buf, 1, 1, bad, 6);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    CHECK_EQ(kvmux_session_accept_hello(&s, &f, ack, NULL), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(s.state, KVMUX_SESSION_CLOSED);
    /* Unknown settings in HELLO are ignored. */
    uint8_t unk[6] = {0x7F, 0x01, 0, 0, 0, 1};
    n = mk_hello(buf, 1, 1, unk, 6);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    CHECK(kvmux_session_accept_hello(&s, &f, ack, NULL) > 0);

    /* Client side: an ACK choosing a version we did not offer. */
    kvmux_session c;
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    kvmux_session_encode_hello(&c, buf, "c");
    kvmux_frame a = mk(KVMUX_FRAME_HELLO_ACK, KVMUX_HANDSHAKE_VERSION, 0);
    a.code = KVMUX_PROTO_VERSION_MAX + 1;
    CHECK_EQ(kvmux_session_check_recv(&c, &a), 0);
    CHECK_EQ(kvmux_session_on_hello_ack(&c, &a), -KVMUX_ERR_UNSUPPORTED_VERSION);
    CHECK_EQ(c.state, KVMUX_SESSION_CLOSED);
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    a.code = 0;
    CHECK_EQ(kvmux_session_on_hello_ack(&c, &a), -KVMUX_ERR_UNSUPPORTED_VERSION);
    /* An ACK with bad settings. */
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    a.code = 1;
    uint8_t smallframe[6] = {0, KVMUX_SETTING_MAX_FRAME_SIZE, 0, 0, 0x0F, 0xFF};
    a.value = smallframe;
    a.value_len = 6;
    CHECK_EQ(kvmux_session_on_hello_ack(&c, &a), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(c.state, KVMUX_SESSION_CLOSED);
    CHECK_EQ(c.peer.max_frame_size, KVMUX_DEFAULT_MAX_FRAME);
    /* A server ERROR refusing our HELLO is accepted and closes. */
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    kvmux_frame e = mk(KVMUX_FRAME_ERROR, KVMUX_HANDSHAKE_VERSION, 0);
    e.code = KVMUX_ERR_UNSUPPORTED_VERSION;
    CHECK_EQ(kvmux_session_check_recv(&c, &e), 0);
    CHECK_EQ(c.state, KVMUX_SESSION_CLOSED);
}

static void test_before_handshake(void) {
    kvmux_session s, c;
    int bad = 0;
    /* Server before HELLO: everything but HELLO and ERROR is a handshake
     * error (PROTOCOL.md section 8: handshake_error_first). */
    for (int t = KVMUX_FRAME_HELLO_ACK; t <= KVMUX_FRAME_PONG; t++) {
        if (t == KVMUX_FRAME_ERROR) continue;
        kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
        kvmux_frame f = mk((uint8_t)t, 1, t == KVMUX_FRAME_REQUEST ? 1 : 0);
        if (kvmux_session_check_recv(&s, &f) != -KVMUX_ERR_HANDSHAKE) bad++;
        if (s.state != KVMUX_SESSION_AWAIT_HELLO) bad++;
    }
    CHECK_EQ(bad, 0);
    /* An ERROR as the very first frame is accepted and closes: it is
     * never answered with an ERROR (section 12). */
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    kvmux_frame e1 = mk(KVMUX_FRAME_ERROR, KVMUX_HANDSHAKE_VERSION, 0);
    e1.code = KVMUX_ERR_INTERNAL;
    CHECK_EQ(kvmux_session_check_recv(&s, &e1), 0);
    CHECK_EQ(s.state, KVMUX_SESSION_CLOSED);
    /* ... in any header version this build parses (never answered). */
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    e1.version = KVMUX_PROTO_V2;
    CHECK_EQ(kvmux_session_check_recv(&s, &e1), 0);
    CHECK_EQ(s.state, KVMUX_SESSION_CLOSED);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    e1.version = KVMUX_PROTO_CODEC_MAX + 1;
    CHECK_EQ(kvmux_session_check_recv(&s, &e1), -KVMUX_ERR_BAD_VERSION);
    /* Client before HELLO_ACK: only HELLO_ACK or ERROR. */
    bad = 0;
    for (int t = KVMUX_FRAME_HELLO; t <= KVMUX_FRAME_PONG; t++) {
        if (t == KVMUX_FRAME_HELLO_ACK || t == KVMUX_FRAME_ERROR) continue;
        kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
        kvmux_frame f = mk((uint8_t)t, 1, t == KVMUX_FRAME_RESPONSE ? 1 : 0);
        if (kvmux_session_check_recv(&c, &f) != -KVMUX_ERR_HANDSHAKE) bad++;
    }
    CHECK_EQ(bad, 0);
    /* Handshake frames must carry the handshake version. */
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    kvmux_frame h = mk(KVMUX_FRAME_HELLO, 2, 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &h), -KVMUX_ERR_BAD_VERSION);
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    kvmux_frame a = mk(KVMUX_FRAME_HELLO_ACK, 2, 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &a), -KVMUX_ERR_BAD_VERSION);
    /* accept_hello / on_hello_ack in the wrong role or state. */
    uint8_t out[ACK_CAP];
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    uint8_t ext[2] = {1, 1};
    h = mk(KVMUX_FRAME_HELLO, 1, 0);
    h.extras = ext;
    h.extras_len = 2;
    CHECK_EQ(kvmux_session_accept_hello(&c, &h, out, NULL), -KVMUX_ERR_HANDSHAKE);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    a = mk(KVMUX_FRAME_HELLO_ACK, 1, 0);
    a.code = 1;
    CHECK_EQ(kvmux_session_on_hello_ack(&s, &a), -KVMUX_ERR_HANDSHAKE);
}

static void test_open_checks(void) {
    kvmux_session c, s;
    handshake(&c, &s, NULL, NULL);
    const uint8_t v = s.version;

    /* Direction: server takes REQUEST/PING/PONG/ERROR, client takes
     * RESPONSE/PING/PONG/ERROR. */
    kvmux_frame f = mk(KVMUX_FRAME_REQUEST, v, 1);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    f = mk(KVMUX_FRAME_RESPONSE, v, 1);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    for (int t = KVMUX_FRAME_PING; t <= KVMUX_FRAME_PONG; t++) {
        f = mk((uint8_t)t, v, 0);
        CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
        CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    }
    /* Unknown / reserved types (never produced by the decoder, but the
     * session does not rely on that). */
    f = mk(KVMUX_FRAME_GOAWAY, v, 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    /* request_id 0 is reserved for connection-level frames. */
    f = mk(KVMUX_FRAME_REQUEST, v, 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_PROTOCOL);
    f = mk(KVMUX_FRAME_RESPONSE, v, 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_PROTOCOL);
    /* A second handshake. */
    f = mk(KVMUX_FRAME_HELLO, 1, 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_HANDSHAKE);
    f = mk(KVMUX_FRAME_HELLO_ACK, 1, 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_HANDSHAKE);
    /* A handshake frame in the wrong direction: direction is checked
     * before state (PROTOCOL.md section 12: open_hello_ack_to_server). */
    f = mk(KVMUX_FRAME_HELLO_ACK, 1, 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    f = mk(KVMUX_FRAME_HELLO, 1, 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    /* Wrong version after the handshake (as if a peer switched); an ERROR
     * may still carry the handshake version 1, the others may not. */
    REQUIRE(v != 1);
    f = mk(KVMUX_FRAME_REQUEST, 1, 1);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_BAD_VERSION);
    f = mk(KVMUX_FRAME_RESPONSE, 1, 1);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_VERSION);
    f = mk(KVMUX_FRAME_PING, 1, 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_VERSION);
    const uint8_t wrong[] = {0, KVMUX_PROTO_CODEC_MAX + 1, KVMUX_PROTO_CODEC_MAX + 2, 255};
    for (size_t i = 0; i < sizeof wrong; i++) {
        f = mk(KVMUX_FRAME_REQUEST, wrong[i], 1);
        CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_BAD_VERSION);
        f = mk(KVMUX_FRAME_RESPONSE, wrong[i], 1);
        CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_VERSION);
        f = mk(KVMUX_FRAME_PING, wrong[i], 0);
        CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_VERSION);
        f = mk(KVMUX_FRAME_ERROR, wrong[i], 0);
        CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_VERSION);
    }
    CHECK_EQ(s.state, KVMUX_SESSION_OPEN);
    CHECK_EQ(c.state, KVMUX_SESSION_OPEN);

    /* The negotiated version (2) differs from the handshake version: frames
     * must carry it; ERROR may carry either. */
    f = mk(KVMUX_FRAME_REQUEST, 2, 1);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    f = mk(KVMUX_FRAME_ERROR, 1, 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    CHECK_EQ(s.state, KVMUX_SESSION_CLOSED);

    /* An ERROR closes; nothing is accepted afterwards. */
    f = mk(KVMUX_FRAME_ERROR, v, 5);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    CHECK_EQ(c.state, KVMUX_SESSION_CLOSED);
    f = mk(KVMUX_FRAME_RESPONSE, v, 1);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    f = mk(KVMUX_FRAME_ERROR, v, 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
}

static void test_credits(void) {
    kvmux_settings ss;
    kvmux_settings_default(&ss);
    ss.max_outstanding = 3;
    kvmux_session c, s;
    handshake(&c, &s, NULL, &ss);
    CHECK_EQ(c.peer.max_outstanding, 3); /* advertised to the client */

    CHECK_EQ(kvmux_session_request_begin(&s), 0);
    CHECK_EQ(kvmux_session_request_begin(&s), 0);
    CHECK_EQ(kvmux_session_request_begin(&s), 0);
    CHECK_EQ(s.outstanding, 3);
    /* At the limit: refused (answer BUSY), count unchanged. */
    CHECK_EQ(kvmux_session_request_begin(&s), -1);
    CHECK_EQ(kvmux_session_request_begin(&s), -1);
    CHECK_EQ(s.outstanding, 3);
    kvmux_session_request_end(&s);
    CHECK_EQ(s.outstanding, 2);
    CHECK_EQ(kvmux_session_request_begin(&s), 0);
    CHECK_EQ(kvmux_session_request_begin(&s), -1);
    for (int i = 0; i < 3; i++) kvmux_session_request_end(&s);
    CHECK_EQ(s.outstanding, 0);
    /* An unmatched end does not wrap the counter (which would disable
     * the limit). */
    kvmux_session_request_end(&s);
    CHECK_EQ(s.outstanding, 0);
    int got = 0;
    for (int i = 0; i < 10; i++)
        if (kvmux_session_request_begin(&s) == 0) got++;
    CHECK_EQ(got, 3);
}

int main(void) {
    test_handshake();
    test_negotiation();
    test_before_handshake();
    test_open_checks();
    test_credits();
    return test_report();
}
