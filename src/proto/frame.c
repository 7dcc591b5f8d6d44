/* kvmux frame codec: the incremental, allocation-free decoder and the
 * encoders for the 16-byte-header frame described in proto.h and
 * docs/PROTOCOL.md.
 *
 * Design: the decoder is picohttpparser-strict. It looks at the bytes it has
 * been given and validates each header field as soon as that field's bytes
 * are present (magic after 1 byte, version after 2, type after 3, flags after
 * 4, every length and the frame-size limit once the 16 header bytes are in),
 * so garbage and oversized frames are refused before the peer can make us
 * wait for, or buffer, a body. It keeps no state between calls: the caller
 * simply calls again with a longer buffer. It returns "need more" (0), "error"
 * (-KVMUX_ERR_*) or "done, N bytes"; it never reads past buf+len and never
 * allocates. Per-type shape checks that can be made from the header alone
 * (HELLO extras/name/settings lengths, PING/PONG sizes, ERROR sizes) are
 * made here too, so the layers above never see a malformed shape.
 *
 * What it is not: the decoder does not judge request semantics. Opcode and
 * status values, per-opcode extras lengths and key/value limits are left to
 * the server (which answers UNKNOWN_OP / BAD_REQUEST / TOO_LARGE per request)
 * and the client (which treats an unknown status as a protocol error). The
 * handshake and direction rules live in session.c. No I/O here.
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

/* 1 if t is a frame type defined in v1 (1..7); the reserved 8..11 and every
 * other value are not. */
static int frame_type_known(uint8_t t) {
    return t >= KVMUX_FRAME_HELLO && t <= KVMUX_FRAME_PONG;
}

/* Per-type shape checks, made from the header alone. Returns 0 or
 * -KVMUX_ERR_BAD_LENGTH. value_len is body_len - extras_len - key_len,
 * already known not to underflow. */
static int frame_check_shape(uint8_t type, uint8_t extras_len, uint16_t key_len,
                             uint32_t value_len) {
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
    default:
        /* REQUEST / RESPONSE: only the generic checks apply here. */
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
    if (buf[HDR_VERSION] < 1 || buf[HDR_VERSION] > KVMUX_PROTO_VERSION_MAX)
        return -KVMUX_ERR_BAD_VERSION;
    if (len < 3) return 0;
    if (!frame_type_known(buf[HDR_TYPE])) return -KVMUX_ERR_BAD_TYPE;
    if (len < 4) return 0;
    if (buf[HDR_FLAGS] != 0) return -KVMUX_ERR_BAD_FLAGS;
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
    int rc = frame_check_shape(buf[HDR_TYPE], extras_len, key_len, value_len);
    if (rc != 0) return rc;

    if (len < total) return 0;

    const uint8_t *body = buf + KVMUX_FRAME_HDR_LEN;
    out->version = buf[HDR_VERSION];
    out->type = buf[HDR_TYPE];
    out->flags = buf[HDR_FLAGS];
    out->code = buf[HDR_CODE];
    out->request_id = kvmux_load_u32be(buf + HDR_REQUEST_ID);
    out->extras = body;
    out->extras_len = extras_len;
    out->key = body + extras_len;
    out->key_len = key_len;
    out->value = body + extras_len + key_len;
    out->value_len = value_len;
    return (int)total;
}

/* Total encoded size of f. The caller keeps the body within u32 (it is bound
 * by max_frame long before that). */
size_t kvmux_frame_size(const kvmux_frame *f) {
    return (size_t)KVMUX_FRAME_HDR_LEN + f->extras_len + f->key_len +
           (size_t)f->value_len;
}

/* Write f's 16-byte header; body_len is derived from the three lengths, so
 * a caller cannot send a header that disagrees with its body. */
void kvmux_frame_encode_header(uint8_t out[KVMUX_FRAME_HDR_LEN],
                               const kvmux_frame *f) {
    out[HDR_MAGIC] = KVMUX_MAGIC;
    out[HDR_VERSION] = f->version;
    out[HDR_TYPE] = f->type;
    out[HDR_FLAGS] = f->flags;
    kvmux_store_u32be(out + HDR_REQUEST_ID, f->request_id);
    out[HDR_CODE] = f->code;
    out[HDR_EXTRAS_LEN] = f->extras_len;
    kvmux_store_u16be(out + HDR_KEY_LEN, f->key_len);
    kvmux_store_u32be(out + HDR_BODY_LEN,
                      (uint32_t)f->extras_len + f->key_len + f->value_len);
}

/* Encode header and body. Zero-length parts may have NULL pointers: memcpy
 * with a NULL source is undefined even for 0 bytes, hence the guards. */
size_t kvmux_frame_encode(uint8_t *out, const kvmux_frame *f) {
    kvmux_frame_encode_header(out, f);
    size_t off = KVMUX_FRAME_HDR_LEN;
    if (f->extras_len) memcpy(out + off, f->extras, f->extras_len);
    off += f->extras_len;
    if (f->key_len) memcpy(out + off, f->key, f->key_len);
    off += f->key_len;
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
