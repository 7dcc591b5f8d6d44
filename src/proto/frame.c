/* kvmux frame codec: the incremental, allocation-free decoder and the
 * encoders for the 16-byte-header frame described in proto.h and
 * docs/PROTOCOL.md, for protocol versions 1 and 2.
 *
 * Design: the decoder is picohttpparser-strict. It looks at the bytes it has
 * been given and validates each header field as soon as that field's bytes
 * are present (magic after 1 byte, version after 2, type after 3 -- against
 * the header's version, so a v2-only type in a v1 frame is refused there --,
 * flags after 4 -- against type and version --, every length and the
 * frame-size limit once the 16 header bytes are in), so garbage and
 * oversized frames are refused before the peer can make us wait for, or
 * buffer, a body. Only two checks need the body: a WINDOW_UPDATE increment
 * of 0 or over 2^31-1, and a first fragment whose total_value_len is not
 * larger than its own value. It keeps no state between calls: the caller
 * simply calls again with a longer buffer. It returns "need more" (0),
 * "error" (-KVMUX_ERR_*) or "done, N bytes"; it never reads past buf+len and
 * never allocates. Per-type shape checks that can be made from the header
 * alone are made here too, so the layers above never see a malformed shape.
 *
 * v2 extras prefixes (deadline_ms for DEADLINE, total_value_len for MORE;
 * v3 session_seq for SESSION, in that order) are stripped by the decoder into kvmux_frame fields and written back by
 * the encoder from them, so op-level code sees the same extras in v1 and v2.
 *
 * What it is not: the decoder does not judge request semantics. Opcode and
 * status values, per-opcode extras lengths and key/value limits are left to
 * the server (which answers UNKNOWN_OP / BAD_REQUEST / TOO_LARGE per request)
 * and the client (which treats an unknown status as a protocol error). The
 * handshake, negotiated-version and direction rules live in session.c,
 * window and fragment bookkeeping in window.c and fragment.c. No I/O here.
 */
#include "proto.h"

#include <limits.h>
#include <string.h>

/* Byte offsets of the header fields (see the table in proto.h). */
enum {
    HDR_MAGIC = 0,
    HDR_VERSION = 1,
    HDR_TYPE = 2,
    HDR_FLAGS = 3,
    HDR_REQUEST_ID = 4,
    HDR_CODE = 8,
    HDR_EXTRAS_LEN = 9,
    HDR_KEY_LEN = 10,
    HDR_BODY_LEN = 12
};

/* Types 1..7 exist from v1, 8..11 from v2; nothing else in any version.
 * Contract in proto.h. */
int kvmux_version_allows_type(uint8_t v, uint8_t t) {
    if (v < 1 || v > KVMUX_PROTO_CODEC_MAX) return 0;
    if (t >= KVMUX_FRAME_HELLO && t <= KVMUX_FRAME_PONG) return 1;
    return v >= KVMUX_PROTO_V2 && t >= KVMUX_FRAME_CANCEL &&
           t <= KVMUX_FRAME_CONTINUATION;
}

/* Flag bits per type and version; contract in proto.h. */
uint8_t kvmux_version_allowed_flags(uint8_t v, uint8_t t) {
    if (v < KVMUX_PROTO_V2 || v > KVMUX_PROTO_CODEC_MAX) return 0;
    switch (t) {
    case KVMUX_FRAME_REQUEST:
        return (uint8_t)(KVMUX_FLAG_MORE | KVMUX_FLAG_DEADLINE |
                         (v >= KVMUX_PROTO_V3 ? KVMUX_FLAG_SESSION | KVMUX_FLAG_STALE : 0));
    case KVMUX_FRAME_RESPONSE:
    case KVMUX_FRAME_CONTINUATION: return KVMUX_FLAG_MORE;
    default: return 0;
    }
}

/* The id an ERROR about an undecodable frame carries; contract in proto.h. */
uint32_t kvmux_frame_error_request_id(const uint8_t *buf, size_t len) {
    if (len < 8 || buf[0] != KVMUX_MAGIC || buf[1] < KVMUX_PROTO_VERSION_MIN ||
        buf[1] > KVMUX_PROTO_CODEC_MAX)
        return 0;
    switch (buf[2]) {
    case KVMUX_FRAME_REQUEST:
    case KVMUX_FRAME_RESPONSE:
    case KVMUX_FRAME_ERROR:
    case KVMUX_FRAME_PING:
    case KVMUX_FRAME_PONG:
        break;
    case KVMUX_FRAME_CANCEL:
    case KVMUX_FRAME_WINDOW_UPDATE:
    case KVMUX_FRAME_CONTINUATION:
        if (buf[1] < KVMUX_PROTO_V2) return 0; /* not a type of version 1 */
        break;
    default: /* HELLO, HELLO_ACK, GOAWAY (id always 0), unknown types */
        return 0;
    }
    return kvmux_load_u32be(buf + 4);
}

/* Prefix bytes for a frame of this type with these flags (flags already
 * validated against the type). */
static uint32_t prefix_len(uint8_t type, uint8_t flags) {
    uint32_t n = 0;
    if (type == KVMUX_FRAME_REQUEST && (flags & KVMUX_FLAG_DEADLINE)) n += KVMUX_PREFIX_LEN;
    if ((type == KVMUX_FRAME_REQUEST || type == KVMUX_FRAME_RESPONSE) &&
        (flags & KVMUX_FLAG_MORE))
        n += KVMUX_PREFIX_LEN;
    if (type == KVMUX_FRAME_REQUEST && (flags & KVMUX_FLAG_SESSION))
        n += KVMUX_SESSION_PREFIX_LEN;
    if (type == KVMUX_FRAME_REQUEST && (flags & KVMUX_FLAG_STALE)) n += KVMUX_STALE_PREFIX_LEN;
    return n;
}

/* Prefix bytes f's flags call for; contract in proto.h. */
uint32_t kvmux_frame_prefix_len(const kvmux_frame *f) {
    return prefix_len(f->type, f->flags);
}

/* Per-type shape checks, made from the header alone. Returns 0 or
 * -KVMUX_ERR_BAD_LENGTH. value_len is body_len - extras_len - key_len,
 * already known not to underflow; extras_len is the wire length (prefixes
 * included). */
static int frame_check_shape(uint8_t type, uint8_t flags, uint8_t extras_len,
                             uint16_t key_len, uint32_t value_len) {
    switch (type) {
    case KVMUX_FRAME_HELLO:
    case KVMUX_FRAME_HELLO_ACK:
        /* HELLO: [min_version][max_version] name settings;
         * HELLO_ACK: name settings (the chosen version is in code). */
        if (extras_len != (type == KVMUX_FRAME_HELLO ? 2 : 0))
            return -KVMUX_ERR_BAD_LENGTH;
        if (key_len > KVMUX_MAX_NAME) return -KVMUX_ERR_BAD_LENGTH;
        if (value_len % KVMUX_SETTING_ENTRY_LEN != 0 ||
            value_len / KVMUX_SETTING_ENTRY_LEN > KVMUX_MAX_SETTINGS)
            return -KVMUX_ERR_BAD_LENGTH;
        return 0;
    case KVMUX_FRAME_PING:
    case KVMUX_FRAME_PONG:
        if (extras_len != 8 || key_len != 0 || value_len != 0)
            return -KVMUX_ERR_BAD_LENGTH;
        return 0;
    case KVMUX_FRAME_ERROR:
        if (extras_len != 0 || key_len != 0 || value_len > KVMUX_MAX_ERROR_MSG)
            return -KVMUX_ERR_BAD_LENGTH;
        return 0;
    case KVMUX_FRAME_CANCEL:
        if (extras_len != 0 || key_len != 0 || value_len != 0)
            return -KVMUX_ERR_BAD_LENGTH;
        return 0;
    case KVMUX_FRAME_GOAWAY:
        /* u32 last_request_id, u32 error; value: message. */
        if (extras_len != 8 || key_len != 0 || value_len > KVMUX_MAX_ERROR_MSG)
            return -KVMUX_ERR_BAD_LENGTH;
        return 0;
    case KVMUX_FRAME_WINDOW_UPDATE:
        if (extras_len != 4 || key_len != 0 || value_len != 0)
            return -KVMUX_ERR_BAD_LENGTH;
        return 0;
    case KVMUX_FRAME_CONTINUATION:
        /* An empty chunk would be a frame that moves nothing: refuse it,
         * so a peer cannot spin us with free CONTINUATIONs. */
        if (extras_len != 0 || key_len != 0 || value_len == 0)
            return -KVMUX_ERR_BAD_LENGTH;
        return 0;
    default:
        /* REQUEST / RESPONSE: the extras must hold the prefixes the flags
         * announce; op extras are the server's and client's business. */
        if (extras_len < prefix_len(type, flags)) return -KVMUX_ERR_BAD_LENGTH;
        return 0;
    }
}

/* Decode one frame from buf[0..len). Contract in proto.h. Additionally:
 * HELLO/HELLO_ACK names longer than KVMUX_MAX_NAME and settings blocks that
 * are not whole 6-byte entries or hold more than KVMUX_MAX_SETTINGS entries
 * are -KVMUX_ERR_BAD_LENGTH; a frame whose total length would not fit in an
 * int is -KVMUX_ERR_FRAME_TOO_LARGE whatever max_frame says. When several
 * checks fail in the full header, the first in this order is reported:
 * extras_len > KVMUX_MAX_EXTRAS (BAD_LENGTH), extras_len + key_len >
 * body_len (BAD_LENGTH), size over max_frame (FRAME_TOO_LARGE), per-type
 * shape (BAD_LENGTH). */
int kvmux_frame_decode(const uint8_t *buf, size_t len, uint32_t max_frame,
                       kvmux_frame *out) {
    /* Each field is checked as soon as it is present; every early return
     * of 0 happens only after all bytes we have were validated. */
    if (len < 1) return 0;
    if (buf[HDR_MAGIC] != KVMUX_MAGIC) return -KVMUX_ERR_BAD_MAGIC;
    if (len < 2) return 0;
    uint8_t version = buf[HDR_VERSION];
    if (version < 1 || version > KVMUX_PROTO_CODEC_MAX)
        return -KVMUX_ERR_BAD_VERSION;
    if (len < 3) return 0;
    uint8_t type = buf[HDR_TYPE];
    if (!kvmux_version_allows_type(version, type)) return -KVMUX_ERR_BAD_TYPE;
    if (len < 4) return 0;
    uint8_t flags = buf[HDR_FLAGS];
    if ((flags & ~kvmux_version_allowed_flags(version, type)) != 0)
        return -KVMUX_ERR_BAD_FLAGS;
    if (len < KVMUX_FRAME_HDR_LEN) return 0;

    uint8_t extras_len = buf[HDR_EXTRAS_LEN];
    uint16_t key_len = kvmux_load_u16be(buf + HDR_KEY_LEN);
    uint32_t body_len = kvmux_load_u32be(buf + HDR_BODY_LEN);
    if (extras_len > KVMUX_MAX_EXTRAS) return -KVMUX_ERR_BAD_LENGTH;
    if ((uint32_t)extras_len + key_len > body_len) return -KVMUX_ERR_BAD_LENGTH;

    /* 64-bit sum: HDR_LEN + a u32 body_len cannot wrap. */
    uint64_t total = (uint64_t)KVMUX_FRAME_HDR_LEN + body_len;
    if (total > max_frame || total > (uint64_t)INT_MAX)
        return -KVMUX_ERR_FRAME_TOO_LARGE;

    uint32_t value_len = body_len - extras_len - key_len;
    int rc = frame_check_shape(type, flags, extras_len, key_len, value_len);
    if (rc != 0) return rc;

    if (len < total) return 0;

    /* Checks that need the body (only v2 frames have any). */
    const uint8_t *body = buf + KVMUX_FRAME_HDR_LEN;
    uint32_t deadline_ms = 0, total_value_len = 0;
    uint32_t pre = prefix_len(type, flags);
    const uint8_t *p = body;
    if (type == KVMUX_FRAME_REQUEST && (flags & KVMUX_FLAG_DEADLINE)) {
        deadline_ms = kvmux_load_u32be(p);
        p += KVMUX_PREFIX_LEN;
    }
    if ((type == KVMUX_FRAME_REQUEST || type == KVMUX_FRAME_RESPONSE) &&
        (flags & KVMUX_FLAG_MORE)) {
        total_value_len = kvmux_load_u32be(p);
        /* The first fragment must be strictly shorter than the message,
         * or MORE would announce fragments that cannot exist. */
        if (total_value_len <= value_len) return -KVMUX_ERR_BAD_LENGTH;
        p += KVMUX_PREFIX_LEN;
    }
    /* [u64 seq if SESSION][u64 min_version if STALE], in that order. */
    uint64_t session_seq = 0;
    if (type == KVMUX_FRAME_REQUEST && (flags & KVMUX_FLAG_SESSION)) {
        session_seq = kvmux_load_u64be(p);
        p += KVMUX_SESSION_PREFIX_LEN;
    }
    uint64_t min_version = 0;
    if (type == KVMUX_FRAME_REQUEST && (flags & KVMUX_FLAG_STALE))
        min_version = kvmux_load_u64be(p);
    if (type == KVMUX_FRAME_WINDOW_UPDATE) {
        uint32_t inc = kvmux_load_u32be(body);
        if (inc == 0 || inc > KVMUX_MAX_WINDOW) return -KVMUX_ERR_PROTOCOL;
    }

    out->version = version;
    out->type = type;
    out->flags = flags;
    out->code = buf[HDR_CODE];
    out->request_id = kvmux_load_u32be(buf + HDR_REQUEST_ID);
    out->extras = body + pre;
    out->extras_len = (uint8_t)(extras_len - pre);
    out->key = body + extras_len;
    out->key_len = key_len;
    out->value = body + extras_len + key_len;
    out->value_len = value_len;
    out->deadline_ms = deadline_ms;
    out->total_value_len = total_value_len;
    out->session_seq = session_seq;
    out->min_version = min_version;
    return (int)total;
}

/* Total encoded size of f. The caller keeps the body within u32 (it is bound
 * by max_frame long before that). */
size_t kvmux_frame_size(const kvmux_frame *f) {
    return (size_t)KVMUX_FRAME_HDR_LEN + kvmux_frame_prefix_len(f) + f->extras_len +
           f->key_len + (size_t)f->value_len;
}

/* Write f's 16-byte header; extras_len and body_len are derived from the
 * lengths and the flags' prefixes, so a caller cannot send a header that
 * disagrees with its body. */
void kvmux_frame_encode_header(uint8_t out[KVMUX_FRAME_HDR_LEN],
                               const kvmux_frame *f) {
    uint32_t wire_extras = kvmux_frame_prefix_len(f) + f->extras_len;
    out[HDR_MAGIC] = KVMUX_MAGIC;
    out[HDR_VERSION] = f->version;
    out[HDR_TYPE] = f->type;
    out[HDR_FLAGS] = f->flags;
    kvmux_store_u32be(out + HDR_REQUEST_ID, f->request_id);
    out[HDR_CODE] = f->code;
    out[HDR_EXTRAS_LEN] = (uint8_t)wire_extras;
    kvmux_store_u16be(out + HDR_KEY_LEN, f->key_len);
    kvmux_store_u32be(out + HDR_BODY_LEN, wire_extras + f->key_len + f->value_len);
}

/* Header, prefixes (in wire order: deadline, total, min_version), extras, key.
 * Zero-length parts may have NULL pointers: memcpy with a NULL source is
 * undefined even for 0 bytes, hence the guards. */
size_t kvmux_frame_encode_head(uint8_t *out, const kvmux_frame *f) {
    kvmux_frame_encode_header(out, f);
    size_t off = KVMUX_FRAME_HDR_LEN;
    if (f->type == KVMUX_FRAME_REQUEST && (f->flags & KVMUX_FLAG_DEADLINE)) {
        kvmux_store_u32be(out + off, f->deadline_ms);
        off += KVMUX_PREFIX_LEN;
    }
    if ((f->type == KVMUX_FRAME_REQUEST || f->type == KVMUX_FRAME_RESPONSE) &&
        (f->flags & KVMUX_FLAG_MORE)) {
        kvmux_store_u32be(out + off, f->total_value_len);
        off += KVMUX_PREFIX_LEN;
    }
    if (f->type == KVMUX_FRAME_REQUEST && (f->flags & KVMUX_FLAG_SESSION)) {
        kvmux_store_u64be(out + off, f->session_seq);
        off += KVMUX_SESSION_PREFIX_LEN;
    }
    if (f->type == KVMUX_FRAME_REQUEST && (f->flags & KVMUX_FLAG_STALE)) {
        kvmux_store_u64be(out + off, f->min_version);
        off += KVMUX_STALE_PREFIX_LEN;
    }
    if (f->extras_len) memcpy(out + off, f->extras, f->extras_len);
    off += f->extras_len;
    if (f->key_len) memcpy(out + off, f->key, f->key_len);
    off += f->key_len;
    return off;
}

/* Encode head and value. */
size_t kvmux_frame_encode(uint8_t *out, const kvmux_frame *f) {
    size_t off = kvmux_frame_encode_head(out, f);
    if (f->value_len) memcpy(out + off, f->value, f->value_len);
    off += f->value_len;
    return off;
}

/* Length of msg[0..n) cut to at most max bytes without splitting a UTF-8
 * sequence (so a truncated message stays valid UTF-8 if it was). */
static size_t utf8_truncate(const char *msg, size_t n, size_t max) {
    if (n <= max) return n;
    size_t cut = max;
    /* Back off over continuation bytes (10xxxxxx) to the start of the
     * sequence that straddles the cut; at most 3 steps for valid UTF-8. */
    for (int i = 0; i < 4 && cut > 0 && ((uint8_t)msg[cut] & 0xC0) == 0x80; i++)
        cut--;
    return cut;
}

/* Encode an ERROR frame; contract in proto.h. msg may be NULL (empty). */
size_t kvmux_encode_error(uint8_t *out, uint8_t version, uint32_t request_id,
                          uint8_t code, const char *msg) {
    size_t n = 0;
    if (msg) n = strnlen(msg, KVMUX_MAX_ERROR_MSG + 1);
    n = utf8_truncate(msg ? msg : "", n, KVMUX_MAX_ERROR_MSG);
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = version;
    f.type = KVMUX_FRAME_ERROR;
    f.request_id = request_id;
    f.code = code;
    f.value = (const uint8_t *)msg;
    f.value_len = (uint32_t)n;
    return kvmux_frame_encode(out, &f);
}

/* CANCEL: header only. */
size_t kvmux_encode_cancel(uint8_t *out, uint8_t version, uint32_t request_id) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = version;
    f.type = KVMUX_FRAME_CANCEL;
    f.request_id = request_id;
    return kvmux_frame_encode(out, &f);
}

/* WINDOW_UPDATE: header + u32 increment. The increment is not checked
 * here: window.c never produces 0 or more than KVMUX_MAX_WINDOW. */
size_t kvmux_encode_window_update(uint8_t *out, uint8_t version,
                                  uint32_t request_id, uint32_t increment) {
    uint8_t ext[4];
    kvmux_store_u32be(ext, increment);
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = version;
    f.type = KVMUX_FRAME_WINDOW_UPDATE;
    f.request_id = request_id;
    f.extras = ext;
    f.extras_len = 4;
    return kvmux_frame_encode(out, &f);
}

/* GOAWAY: id 0, extras [last_request_id][error], value message (cut as an
 * ERROR message is). */
size_t kvmux_encode_goaway(uint8_t *out, uint8_t version,
                           uint32_t last_request_id, uint32_t error,
                           const char *msg) {
    size_t n = 0;
    if (msg) n = strnlen(msg, KVMUX_MAX_ERROR_MSG + 1);
    n = utf8_truncate(msg ? msg : "", n, KVMUX_MAX_ERROR_MSG);
    uint8_t ext[8];
    kvmux_store_u32be(ext, last_request_id);
    kvmux_store_u32be(ext + 4, error);
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = version;
    f.type = KVMUX_FRAME_GOAWAY;
    f.extras = ext;
    f.extras_len = 8;
    f.value = (const uint8_t *)msg;
    f.value_len = (uint32_t)n;
    return kvmux_frame_encode(out, &f);
}

/* CONTINUATION header: no extras, no key; the chunk follows. */
void kvmux_encode_continuation_header(uint8_t out[KVMUX_FRAME_HDR_LEN],
                                      uint8_t version, uint32_t request_id,
                                      uint8_t flags, uint32_t value_len) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = version;
    f.type = KVMUX_FRAME_CONTINUATION;
    f.flags = flags;
    f.request_id = request_id;
    f.value_len = value_len;
    kvmux_frame_encode_header(out, &f);
}
