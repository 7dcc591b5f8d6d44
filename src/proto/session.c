/* kvmux session: the per-connection protocol state machine of the sans-IO
 * core. It runs the HELLO / HELLO_ACK handshake (version negotiation and
 * settings exchange), checks every received frame against the state, the
 * negotiated version and the direction of travel, keeps the server's
 * credit count (requests accepted and not yet answered), and, in v2, the
 * connection-wide flow-control windows and the GOAWAY drain sub-state.
 *
 *   client: AWAIT_HELLO_ACK --HELLO_ACK ok--> OPEN --ERROR--> CLOSED
 *   server: AWAIT_HELLO     --HELLO ok-----> OPEN --ERROR--> CLOSED
 *   (a failed handshake, or an ERROR received in any state, -> CLOSED)
 *   v2, while OPEN: drain NONE --GOAWAY sent (server) / received (client)-->
 *   GOAWAY_SENT / GOAWAY_RECEIVED (still OPEN: answers keep flowing)
 *
 * Versions: the client proposes [KVMUX_PROTO_VERSION_MIN, max_version], the
 * server picks the highest version in both that range and its own
 * [MIN, max_version]. max_version defaults to KVMUX_PROTO_VERSION_MAX (2:
 * v3 is offered only by a session that raises it, up to
 * KVMUX_PROTO_CODEC_MAX: the client library, a replicated server) and
 * can be lowered before the handshake, which is how tests (and operators)
 * play a v1 peer with a v2 build. Everything after the handshake must carry
 * the negotiated version, so a v2-only type or flag on a v1 session is
 * refused twice over: the decoder refuses it in a version-1 header, and
 * this file refuses a version-2 header on a v1 session.
 *
 * Design: one enum for the state (never a set of booleans) plus one enum
 * for the orthogonal drain sub-state (so existing "state == OPEN" checks
 * stay true while draining); a plain struct the I/O layer embeds; no I/O,
 * no clock, no allocation. The session does not send anything by itself:
 * the functions that produce frames write them into caller buffers and the
 * caller sends them.
 *
 * What it is not: it does not track request ids (the client's pending table
 * and the server's request slots do, and they embed the per-message
 * kvmux_fragmenter / kvmux_reassembly of fragment.c), does not judge
 * request contents (the server's dispatch does), and does not implement
 * timeouts or rate caps (callers pass time in and own the timers).
 */
#include "proto.h"

#include <string.h>

/* Initialise s. local may be NULL for the defaults. Both sides assume the
 * defaults for the peer until its HELLO / HELLO_ACK says otherwise. A
 * client starts directly in AWAIT_HELLO_ACK: its first act is always to
 * send HELLO (kvmux_session_encode_hello), and nothing may be received
 * before that anyway. */
void kvmux_session_init(kvmux_session *s, kvmux_role role,
                        const kvmux_settings *local) {
    memset(s, 0, sizeof *s);
    s->role = role;
    s->state = role == KVMUX_ROLE_SERVER ? KVMUX_SESSION_AWAIT_HELLO
                                         : KVMUX_SESSION_AWAIT_HELLO_ACK;
    s->version = 0;
    if (local)
        s->local = *local;
    else
        kvmux_settings_default(&s->local);
    /* 0 means "default" for our own windows (v1 callers fill only the four
     * v1 fields); above 2^31-1 the peer would refuse the setting. */
    if (s->local.initial_window == 0)
        s->local.initial_window = KVMUX_DEFAULT_INITIAL_WINDOW;
    if (s->local.initial_window > KVMUX_MAX_WINDOW)
        s->local.initial_window = KVMUX_MAX_WINDOW;
    if (s->local.connection_window == 0)
        s->local.connection_window = KVMUX_DEFAULT_CONNECTION_WINDOW;
    if (s->local.connection_window > KVMUX_MAX_WINDOW)
        s->local.connection_window = KVMUX_MAX_WINDOW;
    kvmux_settings_default(&s->peer);
    s->outstanding = 0;
    s->max_version = KVMUX_PROTO_VERSION_MAX;
    s->drain = KVMUX_DRAIN_NONE;
    s->goaway_last_id = 0;
    /* Windows stay zero until a v2 handshake sets them. */
}

/* The highest version we offer: max_version kept within what this build
 * speaks (a caller may have set it out of range). */
static uint8_t session_max_version(const kvmux_session *s) {
    if (s->max_version < KVMUX_PROTO_VERSION_MIN) return KVMUX_PROTO_VERSION_MIN;
    if (s->max_version > KVMUX_PROTO_CODEC_MAX) return KVMUX_PROTO_CODEC_MAX;
    return s->max_version;
}

/* The handshake completed with version v: open, and in v2 start the
 * connection windows from the settings each side granted the other. */
static void session_open(kvmux_session *s, uint8_t v) {
    s->version = v;
    s->state = KVMUX_SESSION_OPEN;
    if (v >= KVMUX_PROTO_V2) {
        kvmux_window_init(&s->send_window, s->peer.connection_window);
        kvmux_window_init(&s->recv_window, s->local.connection_window);
    }
}

/* An ERROR is accepted in every state, by both sides, in any header
 * version this build can parse: it ends the connection, and answering it
 * (even with BAD_VERSION) would only put a frame on a connection both
 * sides are closing (docs/PROTOCOL.md section 12). */
static int session_check_error(const kvmux_frame *f) {
    if (f->version < 1 || f->version > KVMUX_PROTO_CODEC_MAX) return -KVMUX_ERR_BAD_VERSION;
    return 0;
}

/* Check a frame before the handshake completed. */
static int session_check_handshake(const kvmux_session *s, const kvmux_frame *f) {
    uint8_t want = s->role == KVMUX_ROLE_SERVER ? KVMUX_FRAME_HELLO
                                                : KVMUX_FRAME_HELLO_ACK;
    /* An ERROR is accepted in every state, by both sides: it ends the
     * connection and is never answered with another ERROR. */
    if (f->type == KVMUX_FRAME_ERROR) return session_check_error(f);
    if (f->type == want) {
        /* HELLO, HELLO_ACK and an ERROR refusing a HELLO always use the
         * handshake version, so any future version can still parse them. */
        if (f->version != KVMUX_HANDSHAKE_VERSION) return -KVMUX_ERR_BAD_VERSION;
        return 0;
    }
    return -KVMUX_ERR_HANDSHAKE;
}

/* Check a frame on an open session. */
static int session_check_open(const kvmux_session *s, const kvmux_frame *f) {
    switch (f->type) {
    case KVMUX_FRAME_HELLO:
    case KVMUX_FRAME_HELLO_ACK: {
        /* Direction before state, as for every type: a handshake frame
         * this side never receives (HELLO at a client, HELLO_ACK at a
         * server) is UNEXPECTED_FRAME; the right one a second time is a
         * second handshake. */
        uint8_t mine = s->role == KVMUX_ROLE_SERVER ? KVMUX_FRAME_HELLO
                                                    : KVMUX_FRAME_HELLO_ACK;
        return f->type == mine ? -KVMUX_ERR_HANDSHAKE : -KVMUX_ERR_UNEXPECTED_FRAME;
    }
    case KVMUX_FRAME_ERROR:
        /* Senders use the negotiated version or the handshake version 1
         * (a fault they cannot attribute); any other is still accepted,
         * never answered. */
        return session_check_error(f);
    default:
        break;
    }
    if (f->version != s->version) return -KVMUX_ERR_BAD_VERSION;
    /* The decoder already refused v2 types and flags in a v1 header; these
     * catch frames built by hand (tests, fuzzers, future decoders). */
    if (!kvmux_version_allows_type(s->version, f->type)) return -KVMUX_ERR_BAD_TYPE;
    if ((f->flags & ~kvmux_version_allowed_flags(s->version, f->type)) != 0)
        return -KVMUX_ERR_BAD_FLAGS;
    switch (f->type) {
    case KVMUX_FRAME_PING:
    case KVMUX_FRAME_PONG:
        return 0;
    case KVMUX_FRAME_CANCEL:
        if (s->role != KVMUX_ROLE_SERVER) return -KVMUX_ERR_UNEXPECTED_FRAME;
        if (f->request_id == 0) return -KVMUX_ERR_PROTOCOL;
        return 0;
    case KVMUX_FRAME_GOAWAY:
        if (s->role != KVMUX_ROLE_CLIENT) return -KVMUX_ERR_UNEXPECTED_FRAME;
        if (f->request_id != 0) return -KVMUX_ERR_PROTOCOL; /* connection-level */
        return 0;
    case KVMUX_FRAME_WINDOW_UPDATE:
        return 0; /* both ways; id 0 = the connection window */
    case KVMUX_FRAME_CONTINUATION:
        if (f->request_id == 0) return -KVMUX_ERR_PROTOCOL;
        return 0;
    case KVMUX_FRAME_REQUEST:
        if (s->role != KVMUX_ROLE_SERVER) return -KVMUX_ERR_UNEXPECTED_FRAME;
        /* request_id 0 is reserved for connection-level frames. */
        if (f->request_id == 0) return -KVMUX_ERR_PROTOCOL;
        return 0;
    case KVMUX_FRAME_RESPONSE:
        if (s->role != KVMUX_ROLE_CLIENT) return -KVMUX_ERR_UNEXPECTED_FRAME;
        if (f->request_id == 0) return -KVMUX_ERR_PROTOCOL;
        return 0;
    default:
        return -KVMUX_ERR_UNEXPECTED_FRAME;
    }
}

/* Check a received, decoded frame against the session; contract in
 * proto.h. Additionally: REQUEST/RESPONSE/CANCEL/CONTINUATION with
 * request_id 0 is -KVMUX_ERR_PROTOCOL; anything received on a CLOSED session is
 * -KVMUX_ERR_UNEXPECTED_FRAME. An accepted ERROR moves s to CLOSED; a
 * rejected frame leaves s unchanged (the caller sends ERROR and closes). */
int kvmux_session_check_recv(kvmux_session *s, const kvmux_frame *f) {
    int rc;
    switch (s->state) {
    case KVMUX_SESSION_AWAIT_HELLO:
    case KVMUX_SESSION_AWAIT_HELLO_ACK:
        rc = session_check_handshake(s, f);
        break;
    case KVMUX_SESSION_OPEN:
        rc = session_check_open(s, f);
        break;
    default:
        return -KVMUX_ERR_UNEXPECTED_FRAME;
    }
    if (rc == 0 && f->type == KVMUX_FRAME_ERROR) s->state = KVMUX_SESSION_CLOSED;
    return rc;
}

/* Encode HELLO or HELLO_ACK: header version is always the handshake
 * version; request_id 0 (connection-level). extras may be NULL when
 * extras_len is 0. offer_v2: whether the v2 settings may be sent (a
 * session capped at v1 behaves exactly like a v1 build). */
static size_t session_encode_handshake(const kvmux_session *s, uint8_t *out,
                                       uint8_t type, uint8_t code,
                                       const uint8_t *extras, uint8_t extras_len,
                                       const char *name, int offer_v2) {
    uint8_t settings[KVMUX_SETTINGS_MAX_LEN];
    kvmux_settings adv = s->local;
    if (!offer_v2) {
        adv.initial_window = KVMUX_DEFAULT_INITIAL_WINDOW;
        adv.connection_window = KVMUX_DEFAULT_CONNECTION_WINDOW;
    }
    size_t slen = kvmux_settings_encode(settings, &adv);
    /* The buffer contract (KVMUX_HELLO_MAX_LEN) predates the v2 settings:
     * each extra entry is paid for by cutting the name, which is only
     * informational. */
    size_t extra = slen - 4 * KVMUX_SETTING_ENTRY_LEN;
    size_t nlen = name ? strnlen(name, KVMUX_MAX_NAME - extra) : 0;
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = KVMUX_HANDSHAKE_VERSION;
    f.type = type;
    f.code = code;
    f.request_id = 0;
    f.extras = extras;
    f.extras_len = extras_len;
    f.key = (const uint8_t *)name;
    f.key_len = (uint16_t)nlen;
    f.value = settings;
    f.value_len = (uint32_t)slen;
    return kvmux_frame_encode(out, &f);
}

/* Client: encode HELLO; contract in proto.h. A name longer than
 * KVMUX_MAX_NAME bytes is truncated. */
size_t kvmux_session_encode_hello(kvmux_session *s, uint8_t *out,
                                  const char *name) {
    uint8_t maxv = session_max_version(s);
    uint8_t ext[2] = {KVMUX_PROTO_VERSION_MIN, maxv};
    size_t n = session_encode_handshake(s, out, KVMUX_FRAME_HELLO, 0, ext, 2, name,
                                        maxv >= KVMUX_PROTO_V2);
    s->state = KVMUX_SESSION_AWAIT_HELLO_ACK;
    return n;
}

/* The HELLO's value (settings) is the last part of the frame, so the auth
 * entries are appended after it and body_len grows by as much. */
size_t kvmux_session_encode_hello_auth(kvmux_session *s, uint8_t *out, const char *name,
                                       const uint8_t *token, size_t len) {
    if (len > KVMUX_MAX_AUTH_TOKEN) return 0;
    size_t n = kvmux_session_encode_hello(s, out, name);
    if (!token || len == 0) return n;
    size_t a = kvmux_settings_encode_auth(out + n, token, len);
    kvmux_store_u32be(out + 12, kvmux_load_u32be(out + 12) + (uint32_t)a);
    return n + a;
}

/* Client: apply HELLO_ACK; contract in proto.h. Returns
 * -KVMUX_ERR_HANDSHAKE if s is not a client awaiting HELLO_ACK or ack is
 * not a HELLO_ACK, -KVMUX_ERR_UNSUPPORTED_VERSION if the chosen version is
 * outside [MIN, max_version] (what we proposed), or the settings error. On error s moves to CLOSED
 * (the handshake cannot be resumed); peer settings are unchanged. */
int kvmux_session_on_hello_ack(kvmux_session *s, const kvmux_frame *ack) {
    if (s->role != KVMUX_ROLE_CLIENT || s->state != KVMUX_SESSION_AWAIT_HELLO_ACK ||
        ack->type != KVMUX_FRAME_HELLO_ACK) {
        s->state = KVMUX_SESSION_CLOSED;
        return -KVMUX_ERR_HANDSHAKE;
    }
    if (ack->code < KVMUX_PROTO_VERSION_MIN || ack->code > session_max_version(s)) {
        s->state = KVMUX_SESSION_CLOSED;
        return -KVMUX_ERR_UNSUPPORTED_VERSION;
    }
    int rc = kvmux_settings_decode_version(ack->value, ack->value_len, &s->peer, ack->code);
    if (rc != 0) {
        s->state = KVMUX_SESSION_CLOSED;
        return rc;
    }
    session_open(s, ack->code);
    return 0;
}

/* Server: answer HELLO; contract in proto.h. Also -KVMUX_ERR_HANDSHAKE if
 * s is not a server awaiting HELLO or hello is not a well-shaped HELLO.
 * On error nothing is written to out, s moves to CLOSED and peer settings
 * are unchanged. */
int kvmux_session_accept_hello(kvmux_session *s, const kvmux_frame *hello,
                               uint8_t *out, const char *name) {
    if (s->role != KVMUX_ROLE_SERVER || s->state != KVMUX_SESSION_AWAIT_HELLO ||
        hello->type != KVMUX_FRAME_HELLO || hello->extras_len != 2) {
        s->state = KVMUX_SESSION_CLOSED;
        return -KVMUX_ERR_HANDSHAKE;
    }
    uint8_t v = kvmux_negotiate_version(hello->extras[0], hello->extras[1],
                                        KVMUX_PROTO_VERSION_MIN,
                                        session_max_version(s));
    if (v == 0) {
        s->state = KVMUX_SESSION_CLOSED;
        return -KVMUX_ERR_UNSUPPORTED_VERSION;
    }
    int rc = kvmux_settings_decode_version(hello->value, hello->value_len, &s->peer, v);
    if (rc != 0) {
        s->state = KVMUX_SESSION_CLOSED;
        return rc;
    }
    size_t n = session_encode_handshake(s, out, KVMUX_FRAME_HELLO_ACK, v, NULL, 0,
                                        name, v >= KVMUX_PROTO_V2);
    session_open(s, v);
    return (int)n;
}

/* Server: take a credit; -1 at the limit (answer BUSY, do not process). */
int kvmux_session_request_begin(kvmux_session *s) {
    if (s->outstanding >= s->local.max_outstanding) return -1;
    s->outstanding++;
    return 0;
}

/* Server: return a credit. An unmatched call is ignored rather than
 * wrapping the counter (which would disable the limit). */
void kvmux_session_request_end(kvmux_session *s) {
    if (s->outstanding > 0) s->outstanding--;
}

/* v2: apply a connection WINDOW_UPDATE; contract in proto.h. */
int kvmux_session_on_window_update(kvmux_session *s, const kvmux_frame *f) {
    if (!kvmux_session_is_v2(s) || f->type != KVMUX_FRAME_WINDOW_UPDATE ||
        f->request_id != 0 || f->extras_len != 4)
        return -KVMUX_ERR_PROTOCOL;
    return kvmux_window_grant(&s->send_window, kvmux_window_update_increment(f));
}

/* v2 server: encode GOAWAY and start draining; contract in proto.h. */
size_t kvmux_session_encode_goaway(kvmux_session *s, uint8_t *out,
                                   uint32_t last_request_id, uint32_t error,
                                   const char *msg) {
    if (s->role != KVMUX_ROLE_SERVER || s->state != KVMUX_SESSION_OPEN ||
        !kvmux_session_is_v2(s))
        return 0;
    s->drain = KVMUX_DRAIN_GOAWAY_SENT;
    s->goaway_last_id = last_request_id;
    return kvmux_encode_goaway(out, s->version, last_request_id, error, msg);
}

/* v2 client: apply GOAWAY; contract in proto.h. */
int kvmux_session_on_goaway(kvmux_session *s, const kvmux_frame *f) {
    if (s->role != KVMUX_ROLE_CLIENT || s->state != KVMUX_SESSION_OPEN ||
        !kvmux_session_is_v2(s) || f->type != KVMUX_FRAME_GOAWAY || f->extras_len != 8)
        return -KVMUX_ERR_PROTOCOL;
    s->drain = KVMUX_DRAIN_GOAWAY_RECEIVED;
    s->goaway_last_id = kvmux_goaway_last_id(f);
    return 0;
}
