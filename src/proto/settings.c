/* kvmux handshake settings and version negotiation.
 *
 * Settings travel in the value of HELLO / HELLO_ACK as a list of 6-byte
 * entries (u16 id, u32 value, big-endian). Design, as in HTTP/2 SETTINGS:
 * entries are applied in order over the receiver's current view (so an
 * absent setting keeps its default and a repeated id takes its last value),
 * and unknown ids are ignored, which lets later versions add settings with
 * no version bump. Every value this build understands is range-checked
 * before anything is applied, so a bad block leaves the output untouched.
 *
 * What it is not: this file does not decide which settings a side enforces;
 * the session (session.c) stores ours and the peer's, and the I/O layers
 * apply them.
 */
#include "proto.h"


/* Fill s with the KVMUX_DEFAULT_* values. */
void kvmux_settings_default(kvmux_settings *s) {
    s->max_frame_size = KVMUX_DEFAULT_MAX_FRAME;
    s->max_outstanding = KVMUX_DEFAULT_MAX_OUTSTANDING;
    s->max_key_size = KVMUX_DEFAULT_MAX_KEY;
    s->max_value_size = KVMUX_DEFAULT_MAX_VALUE;
    s->initial_window = KVMUX_DEFAULT_INITIAL_WINDOW;
    s->connection_window = KVMUX_DEFAULT_CONNECTION_WINDOW;
}

static uint8_t *settings_put(uint8_t *p, uint16_t id, uint32_t v) {
    kvmux_store_u16be(p, id);
    kvmux_store_u32be(p + 2, v);
    return p + KVMUX_SETTING_ENTRY_LEN;
}

/* Encode the settings in id order: the four v1 ones always (24 bytes),
 * the v2 windows only when not the default (an absent setting means the
 * default, and this keeps a default HELLO byte-identical to v1's and
 * within the v1 buffer sizes). Returns 24, 30 or 36. A window above
 * KVMUX_MAX_WINDOW is sent as is (the peer refuses it): the session
 * clamps its own before encoding. */
size_t kvmux_settings_encode(uint8_t *out, const kvmux_settings *s) {
    uint8_t *p = out;
    p = settings_put(p, KVMUX_SETTING_MAX_FRAME_SIZE, s->max_frame_size);
    p = settings_put(p, KVMUX_SETTING_MAX_OUTSTANDING, s->max_outstanding);
    p = settings_put(p, KVMUX_SETTING_MAX_KEY_SIZE, s->max_key_size);
    p = settings_put(p, KVMUX_SETTING_MAX_VALUE_SIZE, s->max_value_size);
    /* 0 also means "default" here: v1 code filling the four v1 fields of
     * a zeroed struct by hand must not advertise a zero window. */
    if (s->initial_window != 0 && s->initial_window != KVMUX_DEFAULT_INITIAL_WINDOW)
        p = settings_put(p, KVMUX_SETTING_INITIAL_WINDOW, s->initial_window);
    if (s->connection_window != 0 &&
        s->connection_window != KVMUX_DEFAULT_CONNECTION_WINDOW)
        p = settings_put(p, KVMUX_SETTING_CONNECTION_WINDOW, s->connection_window);
    return (size_t)(p - out);
}

/* Decode entries over s; contract in proto.h. Range rules (all
 * -KVMUX_ERR_PROTOCOL): MAX_FRAME_SIZE >= KVMUX_MIN_FRAME; MAX_OUTSTANDING
 * >= 1; MAX_KEY_SIZE in [1, KVMUX_MAX_KEY_LIMIT] (a key is at least one
 * byte and key_len is a u16); INITIAL_WINDOW and CONNECTION_WINDOW in
 * [1, KVMUX_MAX_WINDOW] (a zero window could never open, and windows are
 * signed 31-bit quantities as in HTTP/2). MAX_VALUE_SIZE may be any u32
 * (the server bounds what it advertises). On any error s
 * is unchanged: we decode into a copy and commit at the end. */
int kvmux_settings_decode(const uint8_t *p, size_t len, kvmux_settings *s) {
    return kvmux_settings_decode_version(p, len, s, KVMUX_PROTO_CODEC_MAX);
}

/* The settings a version defines are interpreted (and range-checked) only
 * on a connection of that version or later; below it they are unknown ids
 * and ignored, so a v2 build that negotiated v1 reads a HELLO exactly as a
 * v1 build does (docs/PROTOCOL.md section 7). */
int kvmux_settings_decode_version(const uint8_t *p, size_t len, kvmux_settings *s,
                                  uint8_t version) {
    if (len % KVMUX_SETTING_ENTRY_LEN != 0 ||
        len / KVMUX_SETTING_ENTRY_LEN > KVMUX_MAX_SETTINGS)
        return -KVMUX_ERR_BAD_LENGTH;
    kvmux_settings t = *s;
    for (size_t off = 0; off < len; off += KVMUX_SETTING_ENTRY_LEN) {
        uint16_t id = kvmux_load_u16be(p + off);
        uint32_t v = kvmux_load_u32be(p + off + 2);
        switch (id) {
        case KVMUX_SETTING_MAX_FRAME_SIZE:
            if (v < KVMUX_MIN_FRAME) return -KVMUX_ERR_PROTOCOL;
            t.max_frame_size = v;
            break;
        case KVMUX_SETTING_MAX_OUTSTANDING:
            if (v == 0) return -KVMUX_ERR_PROTOCOL;
            t.max_outstanding = v;
            break;
        case KVMUX_SETTING_MAX_KEY_SIZE:
            if (v == 0 || v > KVMUX_MAX_KEY_LIMIT) return -KVMUX_ERR_PROTOCOL;
            t.max_key_size = v;
            break;
        case KVMUX_SETTING_MAX_VALUE_SIZE:
            t.max_value_size = v;
            break;
        case KVMUX_SETTING_INITIAL_WINDOW:
            if (version < KVMUX_PROTO_V2) break; /* a v1 connection: unknown */
            if (v == 0 || v > KVMUX_MAX_WINDOW) return -KVMUX_ERR_PROTOCOL;
            t.initial_window = v;
            break;
        case KVMUX_SETTING_CONNECTION_WINDOW:
            if (version < KVMUX_PROTO_V2) break; /* a v1 connection: unknown */
            if (v == 0 || v > KVMUX_MAX_WINDOW) return -KVMUX_ERR_PROTOCOL;
            t.connection_window = v;
            break;
        default:
            /* Unknown ids are ignored: that is how settings grow. */
            break;
        }
    }
    *s = t;
    return 0;
}

/* Highest version in both ranges, or 0. An empty range (min > max) or a
 * range containing only 0 (not a version) yields 0. */
uint8_t kvmux_negotiate_version(uint8_t cmin, uint8_t cmax, uint8_t smin,
                                uint8_t smax) {
    uint8_t lo = cmin > smin ? cmin : smin;
    uint8_t hi = cmax < smax ? cmax : smax;
    if (lo < 1) lo = 1;
    if (hi < lo) return 0;
    return hi;
}

size_t kvmux_settings_encode_auth(uint8_t *out, const uint8_t *token, size_t len) {
    if (len == 0 || len > KVMUX_MAX_AUTH_TOKEN) return 0;
    uint8_t *p = settings_put(out, KVMUX_SETTING_AUTH_TOKEN_LEN, (uint32_t)len);
    for (size_t i = 0; i < len; i += 4) {
        uint8_t w[4] = {0, 0, 0, 0};
        for (size_t j = 0; j < 4 && i + j < len; j++) w[j] = token[i + j];
        p = settings_put(p, KVMUX_SETTING_AUTH_TOKEN, kvmux_load_u32be(w));
    }
    return (size_t)(p - out);
}

/* The token's entries are collected in order; the length must come first
 * so a reader never has to guess how many bytes of padding the last entry
 * carries. A repeated AUTH_TOKEN_LEN is malformed (no "last one wins" for
 * credentials: it would make two readers disagree). */
int kvmux_settings_auth_token(const uint8_t *p, size_t len, uint8_t *out) {
    if (len % KVMUX_SETTING_ENTRY_LEN != 0) return -KVMUX_ERR_BAD_LENGTH;
    uint32_t tlen = 0;
    size_t got = 0;
    int seen_len = 0;
    for (size_t off = 0; off < len; off += KVMUX_SETTING_ENTRY_LEN) {
        uint16_t id = kvmux_load_u16be(p + off);
        uint32_t v = kvmux_load_u32be(p + off + 2);
        if (id == KVMUX_SETTING_AUTH_TOKEN_LEN) {
            if (seen_len || v == 0 || v > KVMUX_MAX_AUTH_TOKEN) return -KVMUX_ERR_PROTOCOL;
            seen_len = 1;
            tlen = v;
        } else if (id == KVMUX_SETTING_AUTH_TOKEN) {
            if (!seen_len || got >= tlen) return -KVMUX_ERR_PROTOCOL;
            uint8_t w[4];
            kvmux_store_u32be(w, v);
            for (size_t j = 0; j < 4; j++) {
                if (got + j < tlen) out[got + j] = w[j];
                else if (w[j] != 0) return -KVMUX_ERR_PROTOCOL; /* padding is zero */
            }
            got += 4;
        }
    }
    if (!seen_len) return 0;
    if (got < tlen) return -KVMUX_ERR_PROTOCOL;
    return (int)tlen;
}

size_t kvmux_settings_encode_session(uint8_t *out, uint64_t sid) {
    uint8_t *p = settings_put(out, KVMUX_SETTING_SESSION_ID_HI, (uint32_t)(sid >> 32));
    p = settings_put(p, KVMUX_SETTING_SESSION_ID_LO, (uint32_t)sid);
    return (size_t)(p - out);
}

/* Both halves exactly once: like the token, a repeated half would let two
 * readers disagree on who the client is. */
int kvmux_settings_session_id(const uint8_t *p, size_t len, uint64_t *sid) {
    if (len % KVMUX_SETTING_ENTRY_LEN != 0) return -KVMUX_ERR_BAD_LENGTH;
    uint64_t hi = 0, lo = 0;
    int seen_hi = 0, seen_lo = 0;
    for (size_t off = 0; off < len; off += KVMUX_SETTING_ENTRY_LEN) {
        uint16_t id = kvmux_load_u16be(p + off);
        uint32_t v = kvmux_load_u32be(p + off + 2);
        if (id == KVMUX_SETTING_SESSION_ID_HI) {
            if (seen_hi++) return -KVMUX_ERR_PROTOCOL;
            hi = v;
        } else if (id == KVMUX_SETTING_SESSION_ID_LO) {
            if (seen_lo++) return -KVMUX_ERR_PROTOCOL;
            lo = v;
        }
    }
    if (!seen_hi && !seen_lo) return 0;
    if (!seen_hi || !seen_lo || (hi == 0 && lo == 0)) return -KVMUX_ERR_PROTOCOL;
    *sid = hi << 32 | lo;
    return 1;
}

/* HELLO's settings are the last part of the frame (as for the token). */
size_t kvmux_hello_append_session(uint8_t *frame, size_t n, uint64_t sid) {
    if (sid == 0) return n;
    size_t a = kvmux_settings_encode_session(frame + n, sid);
    kvmux_store_u32be(frame + 12, kvmux_load_u32be(frame + 12) + (uint32_t)a);
    return n + a;
}
