/* Unit tests for the protocol v2 side of the kvmux session
 * (src/proto/session.c, settings.c): version negotiation in every
 * combination of v1 and v2 peers (a v1 peer is a session capped with
 * max_version = 1, which must behave byte for byte like the v1 build),
 * the handshake bytes against the vectors, the v2 settings (windows) and
 * their limits, every v2 feature refused on a v1 session, the v2 direction
 * rules (CANCEL client->server, GOAWAY server->client, WINDOW_UPDATE and
 * CONTINUATION both ways), connection WINDOW_UPDATE accounting and the
 * GOAWAY drain sub-state. Sans-IO: bytes go from one session's encoder
 * straight into the other's decoder. */
#include "proto.h"
#include "proto_testutil.h"
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#define MAX_VEC PROTO_TEST_MAX_VEC

/* Load one named vector from tests/vectors/frames.hex; it must exist. */
static size_t vec(const char *name, uint8_t *out) {
    size_t len = 0;
    REQUIRE(proto_test_load_vec(name, out, &len));
    return len;
}

/* Decode a named vector into f (its bytes live in a static slot per call
 * site; keep buf alive while f is used). */
static void vec_frame(const char *name, uint8_t *buf, kvmux_frame *f) {
    size_t n = vec(name, buf);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, f) == (int)n);
}

/* Full handshake with version caps; returns the negotiated version seen by
 * the client (0 if it failed). */
static int handshake(kvmux_session *c, kvmux_session *s, uint8_t cmax, uint8_t smax,
                     const kvmux_settings *cs, const kvmux_settings *ss) {
    uint8_t hello[KVMUX_HELLO_MAX_LEN], ack[KVMUX_HELLO_ACK_MAX_LEN];
    kvmux_frame f;
    kvmux_session_init(c, KVMUX_ROLE_CLIENT, cs);
    kvmux_session_init(s, KVMUX_ROLE_SERVER, ss);
    c->max_version = cmax;
    s->max_version = smax;
    size_t n = kvmux_session_encode_hello(c, hello, "client");
    REQUIRE(kvmux_frame_decode(hello, n, s->local.max_frame_size, &f) == (int)n);
    REQUIRE(kvmux_session_check_recv(s, &f) == 0);
    int m = kvmux_session_accept_hello(s, &f, ack, "server");
    if (m <= 0) return 0;
    REQUIRE(kvmux_frame_decode(ack, (size_t)m, c->local.max_frame_size, &f) == m);
    REQUIRE(kvmux_session_check_recv(c, &f) == 0);
    if (kvmux_session_on_hello_ack(c, &f) != 0) return 0;
    return c->version;
}

static void test_negotiation_matrix(void) {
    kvmux_session c, s;
    /* v2 <-> v2 */
    CHECK_EQ(handshake(&c, &s, 2, 2, NULL, NULL), 2);
    CHECK_EQ(s.version, 2);
    CHECK(kvmux_session_is_v2(&c) && kvmux_session_is_v2(&s));
    /* v1 client with a v2 server -> 1 */
    CHECK_EQ(handshake(&c, &s, 1, 2, NULL, NULL), 1);
    CHECK_EQ(s.version, 1);
    CHECK(!kvmux_session_is_v2(&c) && !kvmux_session_is_v2(&s));
    /* v2 client with a v1 server -> 1 */
    CHECK_EQ(handshake(&c, &s, 2, 1, NULL, NULL), 1);
    CHECK_EQ(s.version, 1);
    CHECK(!kvmux_session_is_v2(&c) && !kvmux_session_is_v2(&s));
    /* v1 <-> v1 */
    CHECK_EQ(handshake(&c, &s, 1, 1, NULL, NULL), 1);
    /* Out-of-range caps are kept within what the build speaks. */
    CHECK_EQ(handshake(&c, &s, 0, 9, NULL, NULL), 1);
    CHECK_EQ(handshake(&c, &s, 9, 9, NULL, NULL), KVMUX_PROTO_CODEC_MAX);
    /* A v3 client with a server at its default (2, single node) -> 2 */
    CHECK_EQ(handshake(&c, &s, KVMUX_PROTO_V3, KVMUX_PROTO_VERSION_MAX, NULL, NULL), 2);
    /* A v3 client with a v3 server (replicated) -> 3 */
    CHECK_EQ(handshake(&c, &s, KVMUX_PROTO_V3, KVMUX_PROTO_V3, NULL, NULL), 3);
    /* init sets the cap to the build's maximum. */
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    CHECK_EQ(c.max_version, KVMUX_PROTO_V2);
    CHECK_EQ(c.drain, KVMUX_DRAIN_NONE);

    /* A client capped at 1 refuses an ACK choosing 2 (the server chose
     * something we did not propose). */
    uint8_t buf[KVMUX_HELLO_MAX_LEN];
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    c.max_version = 1;
    kvmux_session_encode_hello(&c, buf, "c");
    kvmux_frame a = proto_test_frame(KVMUX_FRAME_HELLO_ACK, 1, 0, 0);
    a.code = 2;
    CHECK_EQ(kvmux_session_on_hello_ack(&c, &a), -KVMUX_ERR_UNSUPPORTED_VERSION);
    CHECK_EQ(c.state, KVMUX_SESSION_CLOSED);
    /* A server capped at 1 meeting a client that only speaks 2. */
    uint8_t h[KVMUX_HELLO_MAX_LEN], ack[KVMUX_HELLO_ACK_MAX_LEN];
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    size_t n = kvmux_session_encode_hello(&c, h, "c");
    h[KVMUX_FRAME_HDR_LEN] = 2; /* min_version 2 */
    kvmux_frame f;
    REQUIRE(kvmux_frame_decode(h, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    s.max_version = 1;
    CHECK_EQ(kvmux_session_accept_hello(&s, &f, ack, "s"), -KVMUX_ERR_UNSUPPORTED_VERSION);
    /* ...while an uncapped server takes it. */
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    CHECK(kvmux_session_accept_hello(&s, &f, ack, "s") > 0);
    CHECK_EQ(s.version, 2);
}

/* The handshake bytes: a default v2 HELLO, a v1-capped HELLO (identical to
 * the v1 build's), a v2 HELLO_ACK with window settings, and a v1-capped
 * HELLO_ACK that leaves the windows out even when they are not default. */
static void test_handshake_bytes(void) {
    uint8_t want[MAX_VEC], out[KVMUX_HELLO_MAX_LEN];
    kvmux_session c, s;
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    size_t n = kvmux_session_encode_hello(&c, out, "cli");
    size_t w = vec("hello_v2", want);
    CHECK(n == w && memcmp(out, want, n) == 0);
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    c.max_version = 1;
    n = kvmux_session_encode_hello(&c, out, "cli");
    w = vec("hello", want);
    CHECK(n == w && memcmp(out, want, n) == 0);

    kvmux_settings ss;
    kvmux_settings_default(&ss);
    ss.max_outstanding = 128;
    ss.max_value_size = KVMUX_DEFAULT_MAX_VALUE_V2;
    ss.initial_window = 65536;
    ss.connection_window = 1048576;
    uint8_t hb[MAX_VEC], ack[KVMUX_HELLO_ACK_MAX_LEN];
    kvmux_frame f;
    vec_frame("hello_v2", hb, &f);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, &ss);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    int m = kvmux_session_accept_hello(&s, &f, ack, "srv");
    w = vec("hello_ack_v2", want);
    CHECK(m == (int)w && memcmp(ack, want, w) == 0);
    /* The client applies it: windows from the server's settings. */
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, NULL);
    kvmux_frame a;
    REQUIRE(kvmux_frame_decode(ack, (size_t)m, KVMUX_DEFAULT_MAX_FRAME, &a) == m);
    CHECK_EQ(kvmux_session_check_recv(&c, &a), 0);
    CHECK_EQ(kvmux_session_on_hello_ack(&c, &a), 0);
    CHECK_EQ(c.version, 2);
    CHECK_EQ(c.peer.initial_window, 65536);
    CHECK_EQ(c.peer.connection_window, 1048576);
    CHECK_EQ(c.peer.max_value_size, KVMUX_DEFAULT_MAX_VALUE_V2);
    CHECK_EQ(c.send_window.avail, 1048576);
    CHECK_EQ(c.recv_window.avail, KVMUX_DEFAULT_CONNECTION_WINDOW);
    /* and the server: its send window is the client's (default) grant. */
    CHECK_EQ(s.send_window.avail, KVMUX_DEFAULT_CONNECTION_WINDOW);
    CHECK_EQ(s.recv_window.avail, 1048576);

    /* Server capped at v1, same settings: the v1 HELLO_ACK of a v1 build
     * (MAX_VALUE_SIZE aside, which v1 sends too). */
    ss.max_value_size = KVMUX_DEFAULT_MAX_VALUE;
    vec_frame("hello", hb, &f);
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, &ss);
    s.max_version = 1;
    m = kvmux_session_accept_hello(&s, &f, ack, "srv");
    w = vec("hello_ack", want);
    CHECK(m == (int)w && memcmp(ack, want, w) == 0);
    /* A v2 server answering a v1 HELLO also picks 1 and sends no windows
     * a v1 client could not use. */
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, &ss);
    m = kvmux_session_accept_hello(&s, &f, ack, "srv");
    CHECK(m == (int)w && memcmp(ack, want, w) == 0);
    CHECK_EQ(s.version, 1);
}

/* Settings: windows 0 in our own settings mean the default (v1 callers
 * fill four fields of a zeroed struct); peers may not send 0 or more than
 * 2^31-1; non-default windows cost name bytes, not buffer bytes. */
static void test_window_settings(void) {
    kvmux_settings z;
    memset(&z, 0, sizeof z);
    z.max_frame_size = KVMUX_DEFAULT_MAX_FRAME;
    z.max_outstanding = KVMUX_DEFAULT_MAX_OUTSTANDING;
    z.max_key_size = KVMUX_DEFAULT_MAX_KEY;
    z.max_value_size = KVMUX_DEFAULT_MAX_VALUE;
    kvmux_session c;
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, &z);
    CHECK_EQ(c.local.initial_window, KVMUX_DEFAULT_INITIAL_WINDOW);
    CHECK_EQ(c.local.connection_window, KVMUX_DEFAULT_CONNECTION_WINDOW);
    uint8_t out[KVMUX_HELLO_MAX_LEN], want[MAX_VEC];
    size_t n = kvmux_session_encode_hello(&c, out, "cli");
    size_t w = vec("hello_v2", want);
    CHECK(n == w && memcmp(out, want, n) == 0);
    uint8_t enc[KVMUX_SETTINGS_MAX_LEN];
    CHECK_EQ(kvmux_settings_encode(enc, &z), 24);
    /* Oversized local windows are clamped. */
    z.initial_window = 0xFFFFFFFFu;
    z.connection_window = 0x90000000u;
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, &z);
    CHECK_EQ(c.local.initial_window, KVMUX_MAX_WINDOW);
    CHECK_EQ(c.local.connection_window, KVMUX_MAX_WINDOW);

    /* Encoding: both windows when non-default, in id order. */
    kvmux_settings t;
    kvmux_settings_default(&t);
    t.initial_window = 1000;
    CHECK_EQ(kvmux_settings_encode(enc, &t), 30);
    CHECK_EQ(kvmux_load_u16be(enc + 24), KVMUX_SETTING_INITIAL_WINDOW);
    CHECK_EQ(kvmux_load_u32be(enc + 26), 1000);
    t.connection_window = 2000;
    CHECK_EQ(kvmux_settings_encode(enc, &t), 36);
    CHECK_EQ(kvmux_load_u16be(enc + 30), KVMUX_SETTING_CONNECTION_WINDOW);
    kvmux_settings d;
    kvmux_settings_default(&d);
    CHECK_EQ(kvmux_settings_decode(enc, 36, &d), 0);
    CHECK(memcmp(&d, &t, sizeof d) == 0);

    /* Decoding limits: 0 and 2^31 refused (nothing applied), 2^31-1 ok. */
    uint8_t e[12];
    kvmux_settings_default(&d);
    kvmux_settings before = d;
    const uint16_t ids[] = {KVMUX_SETTING_INITIAL_WINDOW, KVMUX_SETTING_CONNECTION_WINDOW};
    for (int i = 0; i < 2; i++) {
        kvmux_store_u16be(e, KVMUX_SETTING_MAX_OUTSTANDING);
        kvmux_store_u32be(e + 2, 5);
        kvmux_store_u16be(e + 6, ids[i]);
        kvmux_store_u32be(e + 8, 0);
        CHECK_EQ(kvmux_settings_decode(e, 12, &d), -KVMUX_ERR_PROTOCOL);
        kvmux_store_u32be(e + 8, 0x80000000u);
        CHECK_EQ(kvmux_settings_decode(e, 12, &d), -KVMUX_ERR_PROTOCOL);
        CHECK(memcmp(&d, &before, sizeof d) == 0);
        kvmux_store_u32be(e + 8, 0x7FFFFFFFu);
        CHECK_EQ(kvmux_settings_decode(e, 12, &d), 0);
        d = before;
    }

    /* A long name with both windows non-default: the frame still fits the
     * v1-sized buffer, the name gives way, and it all decodes. */
    kvmux_settings_default(&t);
    t.initial_window = 1000;
    t.connection_window = 2000;
    kvmux_session_init(&c, KVMUX_ROLE_CLIENT, &t);
    char longname[400];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    memset(out, 0, sizeof out);
    n = kvmux_session_encode_hello(&c, out, longname);
    CHECK_EQ(n, KVMUX_HELLO_MAX_LEN);
    kvmux_frame f;
    CHECK_EQ(kvmux_frame_decode(out, n, KVMUX_DEFAULT_MAX_FRAME, &f), (long long)n);
    CHECK_EQ(f.key_len, KVMUX_MAX_NAME - 12);
    CHECK_EQ(f.value_len, 36);
    kvmux_session s;
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, NULL);
    uint8_t ack[KVMUX_HELLO_ACK_MAX_LEN];
    CHECK(kvmux_session_accept_hello(&s, &f, ack, longname) ==
          (int)KVMUX_HELLO_ACK_MAX_LEN);
    CHECK_EQ(s.peer.initial_window, 1000);
    CHECK_EQ(s.peer.connection_window, 2000);
    CHECK_EQ(s.send_window.avail, 2000);
}

/* On a v1 session, every v2 feature is refused: v2 frames arrive with a
 * version-2 header (BAD_VERSION), hand-built v2 types/flags with version 1
 * are BAD_TYPE/BAD_FLAGS, and the v2 helpers refuse to work. */
static void test_v1_session_refuses_v2(void) {
    kvmux_session c, s;
    REQUIRE(handshake(&c, &s, 2, 1, NULL, NULL) == 1);
    const char *to_server[] = {"cancel", "cont_more", "window_update_msg",
                               "req_get_deadline", "req_set_more", "req_get_v2", "ping_v2"};
    const char *to_client[] = {"goaway", "resp_cont_last", "window_update_conn",
                               "resp_get_more", "resp_canceled", "ping_v2"};
    uint8_t buf[MAX_VEC];
    kvmux_frame f;
    for (size_t i = 0; i < sizeof to_server / sizeof *to_server; i++) {
        vec_frame(to_server[i], buf, &f);
        CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_BAD_VERSION);
    }
    for (size_t i = 0; i < sizeof to_client / sizeof *to_client; i++) {
        vec_frame(to_client[i], buf, &f);
        CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_VERSION);
    }
    /* The same with a version-1 header, as a confused peer might send:
     * the decoder refuses it first... */
    size_t n = vec("cancel", buf);
    buf[1] = 1;
    CHECK_EQ(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f), -KVMUX_ERR_BAD_TYPE);
    n = vec("req_get_deadline", buf);
    buf[1] = 1;
    CHECK_EQ(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f), -KVMUX_ERR_BAD_FLAGS);
    /* ...and the session too, for frames that bypass the decoder. */
    for (int t = KVMUX_FRAME_CANCEL; t <= KVMUX_FRAME_CONTINUATION; t++) {
        f = proto_test_frame((uint8_t)t, 1, 0, 1);
        CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_BAD_TYPE);
        CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_TYPE);
    }
    f = proto_test_frame(KVMUX_FRAME_REQUEST, 1, KVMUX_FLAG_MORE, 1);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_BAD_FLAGS);
    f = proto_test_frame(KVMUX_FRAME_REQUEST, 1, KVMUX_FLAG_DEADLINE, 1);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_BAD_FLAGS);
    f = proto_test_frame(KVMUX_FRAME_RESPONSE, 1, KVMUX_FLAG_MORE, 1);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_FLAGS);
    CHECK_EQ(s.state, KVMUX_SESSION_OPEN); /* rejected frames change nothing */
    CHECK_EQ(c.state, KVMUX_SESSION_OPEN);
    /* v1 frames still flow. */
    f = proto_test_frame(KVMUX_FRAME_REQUEST, 1, 0, 1);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);

    /* Helpers: no GOAWAY from a v1 server, no windows, no fragments. */
    uint8_t out[KVMUX_GOAWAY_MAX_LEN];
    CHECK_EQ(kvmux_session_encode_goaway(&s, out, 1, 0, "x"), 0);
    CHECK_EQ(s.drain, KVMUX_DRAIN_NONE);
    vec_frame("window_update_conn", buf, &f);
    CHECK_EQ(kvmux_session_on_window_update(&c, &f), -KVMUX_ERR_PROTOCOL);
    vec_frame("goaway", buf, &f);
    CHECK_EQ(kvmux_session_on_goaway(&c, &f), -KVMUX_ERR_PROTOCOL);
    kvmux_reassembly r;
    memset(&r, 0, sizeof r);
    vec_frame("resp_get_more", buf, &f);
    CHECK_EQ(kvmux_reassembly_begin(&r, &c, &f, 0), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(r.state, KVMUX_REASM_IDLE);
    /* A value too big for one frame cannot be sent on v1 at all; one that
     * fits is a single frame even with a chunk cap. */
    kvmux_frame head = proto_test_frame(KVMUX_FRAME_REQUEST, 1, 0, 9);
    head.code = KVMUX_OP_SET;
    kvmux_fragmenter fr;
    CHECK_EQ(kvmux_fragmenter_init(&fr, &c, &head, c.peer.max_frame_size, 0),
             -KVMUX_ERR_FRAME_TOO_LARGE);
    CHECK_EQ(kvmux_fragmenter_init(&fr, &c, &head, 1000, 10), 0);
    CHECK_EQ(fr.state, KVMUX_FRAG_SINGLE);
}

/* Direction and id rules of the v2 types on a v2 session. */
static void test_v2_directions(void) {
    kvmux_session c, s;
    REQUIRE(handshake(&c, &s, 2, 2, NULL, NULL) == 2);
    kvmux_frame f;
    /* CANCEL: client -> server only; id 0 refused. */
    f = proto_test_frame(KVMUX_FRAME_CANCEL, 2, 0, 6);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    f.request_id = 0;
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_PROTOCOL);
    /* GOAWAY: server -> client only; id must be 0. */
    f = proto_test_frame(KVMUX_FRAME_GOAWAY, 2, 0, 0);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    f.request_id = 3;
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_PROTOCOL);
    /* WINDOW_UPDATE: both ways, connection (0) or message id. */
    for (uint32_t id = 0; id <= 1; id++) {
        f = proto_test_frame(KVMUX_FRAME_WINDOW_UPDATE, 2, 0, id);
        CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
        CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    }
    /* CONTINUATION: both ways, id != 0, MORE allowed. */
    f = proto_test_frame(KVMUX_FRAME_CONTINUATION, 2, KVMUX_FLAG_MORE, 4);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    f.request_id = 0;
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_PROTOCOL);
    /* Flags per type, for hand-built frames. */
    f = proto_test_frame(KVMUX_FRAME_REQUEST, 2, KVMUX_FLAG_MORE | KVMUX_FLAG_DEADLINE, 4);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    f = proto_test_frame(KVMUX_FRAME_RESPONSE, 2, KVMUX_FLAG_DEADLINE, 4);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_BAD_FLAGS);
    f = proto_test_frame(KVMUX_FRAME_CANCEL, 2, KVMUX_FLAG_MORE, 4);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_BAD_FLAGS);
    f = proto_test_frame(KVMUX_FRAME_PING, 2, 0x80, 0);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), -KVMUX_ERR_BAD_FLAGS);
    /* Every v2 vector arrives in its direction through real bytes. */
    const char *to_server[] = {"cancel", "cont_more", "cont_last", "window_update_msg",
                               "window_update_conn", "req_get_deadline", "req_set_deadline",
                               "req_set_more", "req_cas_deadline_more", "req_get_v2", "ping_v2"};
    const char *to_client[] = {"goaway", "goaway_flood", "resp_cont_last", "window_update_conn",
                               "resp_get_more", "resp_canceled", "resp_get_ok_v2", "ping_v2"};
    uint8_t buf[MAX_VEC];
    for (size_t i = 0; i < sizeof to_server / sizeof *to_server; i++) {
        vec_frame(to_server[i], buf, &f);
        CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    }
    for (size_t i = 0; i < sizeof to_client / sizeof *to_client; i++) {
        vec_frame(to_client[i], buf, &f);
        CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    }
    /* ERROR FLOOD in v2 closes like any ERROR. */
    vec_frame("error_flood", buf, &f);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    CHECK_EQ(c.state, KVMUX_SESSION_CLOSED);
    vec_frame("window_update_conn", buf, &f);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
}

/* Connection WINDOW_UPDATE: grants add up to 2^31-1, then overflow is a
 * protocol error that changes nothing. */
static void test_connection_window_update(void) {
    kvmux_session c, s;
    REQUIRE(handshake(&c, &s, 2, 2, NULL, NULL) == 2);
    uint8_t buf[KVMUX_WINDOW_UPDATE_LEN];
    kvmux_frame f;
    CHECK_EQ(c.send_window.avail, KVMUX_DEFAULT_CONNECTION_WINDOW);
    size_t n = kvmux_encode_window_update(buf, 2, 0, 1000);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    CHECK_EQ(kvmux_session_on_window_update(&c, &f), 0);
    CHECK_EQ(c.send_window.avail, KVMUX_DEFAULT_CONNECTION_WINDOW + 1000);
    uint32_t room = KVMUX_MAX_WINDOW - c.send_window.avail;
    n = kvmux_encode_window_update(buf, 2, 0, room);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    CHECK_EQ(kvmux_session_on_window_update(&c, &f), 0);
    CHECK_EQ(c.send_window.avail, KVMUX_MAX_WINDOW);
    n = kvmux_encode_window_update(buf, 2, 0, 1);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    CHECK_EQ(kvmux_session_on_window_update(&c, &f), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(c.send_window.avail, KVMUX_MAX_WINDOW);
    /* A message update is not the session's. */
    n = kvmux_encode_window_update(buf, 2, 5, 1);
    REQUIRE(kvmux_frame_decode(buf, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    CHECK_EQ(kvmux_session_on_window_update(&s, &f), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(s.send_window.avail, KVMUX_DEFAULT_CONNECTION_WINDOW);
}

/* GOAWAY: the server enters GOAWAY_SENT, the client GOAWAY_RECEIVED with
 * the last id; both stay OPEN (answers keep flowing). */
static void test_goaway(void) {
    kvmux_session c, s;
    REQUIRE(handshake(&c, &s, 2, 2, NULL, NULL) == 2);
    uint8_t out[KVMUX_GOAWAY_MAX_LEN], want[MAX_VEC];
    size_t n = kvmux_session_encode_goaway(&s, out, 9, 0, "drain");
    size_t w = vec("goaway", want);
    CHECK(n == w && memcmp(out, want, n) == 0);
    CHECK_EQ(s.drain, KVMUX_DRAIN_GOAWAY_SENT);
    CHECK_EQ(s.goaway_last_id, 9);
    CHECK_EQ(s.state, KVMUX_SESSION_OPEN);
    /* The server keeps receiving (and answers SHUTTING_DOWN itself). */
    kvmux_frame f = proto_test_frame(KVMUX_FRAME_REQUEST, 2, 0, 10);
    CHECK_EQ(kvmux_session_check_recv(&s, &f), 0);
    /* Only a server encodes GOAWAY. */
    CHECK_EQ(kvmux_session_encode_goaway(&c, out, 1, 0, NULL), 0);
    CHECK_EQ(c.drain, KVMUX_DRAIN_NONE);

    REQUIRE(kvmux_frame_decode(out, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    CHECK_EQ(kvmux_session_on_goaway(&c, &f), 0);
    CHECK_EQ(c.drain, KVMUX_DRAIN_GOAWAY_RECEIVED);
    CHECK_EQ(c.goaway_last_id, 9);
    CHECK_EQ(c.state, KVMUX_SESSION_OPEN);
    f = proto_test_frame(KVMUX_FRAME_RESPONSE, 2, 0, 9);
    CHECK_EQ(kvmux_session_check_recv(&c, &f), 0);
    /* A second GOAWAY (drain timeout, with an error) replaces the id. */
    n = kvmux_session_encode_goaway(&s, out, 4, KVMUX_ERR_TIMEOUT, "drain timeout");
    CHECK(n > 0);
    CHECK_EQ(s.goaway_last_id, 4);
    REQUIRE(kvmux_frame_decode(out, n, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)n);
    CHECK_EQ(kvmux_goaway_error(&f), KVMUX_ERR_TIMEOUT);
    CHECK_EQ(kvmux_session_on_goaway(&c, &f), 0);
    CHECK_EQ(c.goaway_last_id, 4);
    /* on_goaway on the wrong role or with the wrong frame. */
    CHECK_EQ(kvmux_session_on_goaway(&s, &f), -KVMUX_ERR_PROTOCOL);
    f = proto_test_frame(KVMUX_FRAME_PING, 2, 0, 0);
    CHECK_EQ(kvmux_session_on_goaway(&c, &f), -KVMUX_ERR_PROTOCOL);
}

/* The rate cap used for CANCEL and PING floods. */
static void test_rate(void) {
    kvmux_rate r;
    kvmux_rate_init(&r, 10, 1000);
    int ok = 0;
    for (int i = 0; i < 20; i++) ok += kvmux_rate_allow(&r, 1000);
    CHECK_EQ(ok, 10); /* a burst of exactly rate */
    CHECK_EQ(kvmux_rate_allow(&r, 1099), 0); /* 99 ms: 0.99 event */
    CHECK_EQ(kvmux_rate_allow(&r, 1100), 1); /* 100 ms: one event back */
    CHECK_EQ(kvmux_rate_allow(&r, 1100), 0);
    /* A long gap refills to full, never above. */
    ok = 0;
    for (int i = 0; i < 20; i++) ok += kvmux_rate_allow(&r, 1000000);
    CHECK_EQ(ok, 10);
    /* A clock going backwards refills nothing and does not wrap. */
    CHECK_EQ(kvmux_rate_allow(&r, 5), 0);
    CHECK_EQ(kvmux_rate_allow(&r, 1000000), 0);
    /* Sustained exactly at the rate: allowed forever; faster: refused. */
    kvmux_rate_init(&r, 1000, 0);
    int refused = 0;
    for (uint64_t t = 0; t < 5000; t++) refused += !kvmux_rate_allow(&r, t);
    CHECK_EQ(refused, 0);
    refused = 0;
    for (int i = 0; i < 3000; i++) refused += !kvmux_rate_allow(&r, 5000 + (uint64_t)i / 2);
    CHECK(refused > 0);
    /* rate 0: unlimited. A huge rate does not overflow. */
    kvmux_rate_init(&r, 0, 0);
    for (int i = 0; i < 100000; i++) REQUIRE(kvmux_rate_allow(&r, 0));
    kvmux_rate_init(&r, 0xFFFFFFFFu, 0);
    CHECK_EQ(kvmux_rate_allow(&r, UINT64_MAX), 1);
}

int main(void) {
    test_negotiation_matrix();
    test_handshake_bytes();
    test_window_settings();
    test_v1_session_refuses_v2();
    test_v2_directions();
    test_connection_window_update();
    test_goaway();
    test_rate();
    return test_report();
}
