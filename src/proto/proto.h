/* kvmux sans-IO protocol core: wire constants, frame codec, handshake and
 * per-connection protocol state.
 *
 * This layer never calls read/write/clock_gettime and never allocates: the
 * I/O layers (kvmuxd's event loop, the client's reader/writer threads) own
 * every buffer and feed bytes in / take bytes out. That is what lets the core
 * be unit-tested byte for byte and fuzzed without sockets (the nghttp2 model).
 *
 * The byte layouts here are specified in docs/PROTOCOL.md; names match.
 *
 * Frame header (16 bytes, all integers big-endian):
 *
 *   off size field
 *    0   1   magic        0x6B ('k')
 *    1   1   version      1 for HELLO/HELLO_ACK/ERROR-before-handshake,
 *                         the negotiated version afterwards
 *    2   1   type         KVMUX_FRAME_*
 *    3   1   flags        no flags are defined in v1: must be 0
 *    4   4   request_id   correlation id chosen by the client
 *    8   1   code         opcode (REQUEST), status (RESPONSE),
 *                         error code (ERROR), chosen version (HELLO_ACK), else 0
 *    9   1   extras_len   bytes of fixed per-op fields that follow the header
 *   10   2   key_len
 *   12   4   body_len     extras_len + key_len + value_len
 *
 * Body: extras | key | value.
 */
#ifndef KVMUX_PROTO_H
#define KVMUX_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_MAGIC 0x6B
#define KVMUX_FRAME_HDR_LEN 16
#define KVMUX_PROTO_VERSION_MIN 1 /* lowest version this build speaks */
#define KVMUX_PROTO_VERSION_MAX 1 /* highest version this build speaks */
#define KVMUX_HANDSHAKE_VERSION 1 /* header version of HELLO/HELLO_ACK */

/* Defaults and hard bounds (all configurable within the bounds). */
#define KVMUX_DEFAULT_MAX_FRAME (2u * 1024 * 1024)
#define KVMUX_DEFAULT_MAX_KEY 4096u
#define KVMUX_DEFAULT_MAX_VALUE (1024u * 1024)
#define KVMUX_DEFAULT_MAX_OUTSTANDING 1024u
#define KVMUX_MIN_FRAME 4096u            /* a peer may not advertise less */
#define KVMUX_MAX_KEY_LIMIT 65535u       /* key_len is a u16 */
#define KVMUX_MAX_NAME 255u              /* client/server name in HELLO(_ACK) */
#define KVMUX_MAX_SETTINGS 32u           /* entries per HELLO/HELLO_ACK */
#define KVMUX_MAX_ERROR_MSG 1024u        /* message bytes in an ERROR frame */
#define KVMUX_MAX_STATUS_MSG 256u        /* message bytes in a failed RESPONSE */
#define KVMUX_MAX_EXTRAS 32u

/* Frame types. 8..11 are reserved for a later version (negotiated in HELLO);
 * a v1 peer treats them, and any other unknown type, as a protocol error. */
enum kvmux_frame_type {
    KVMUX_FRAME_HELLO = 1,
    KVMUX_FRAME_HELLO_ACK = 2,
    KVMUX_FRAME_REQUEST = 3,
    KVMUX_FRAME_RESPONSE = 4,
    KVMUX_FRAME_ERROR = 5,
    KVMUX_FRAME_PING = 6,
    KVMUX_FRAME_PONG = 7,
    KVMUX_FRAME_CANCEL = 8,        /* reserved */
    KVMUX_FRAME_GOAWAY = 9,        /* reserved */
    KVMUX_FRAME_WINDOW_UPDATE = 10,/* reserved */
    KVMUX_FRAME_CONTINUATION = 11  /* reserved */
};

/* Opcodes (REQUEST.code). Request extras / response extras:
 *   GET   req: none                         OK: u64 version, value
 *   SET   req: u64 ttl_ms (0 = none), value OK: u64 new version
 *   DEL   req: none                         OK: none
 *   INCR  req: i64 delta                    OK: i64 new value, u64 version
 *   CAS   req: u64 expected, u64 ttl_ms, value
 *                                           OK: u64 new version
 *                                           VERSION_MISMATCH: u64 current
 *   WAIT  req: u64 version, u32 timeout_ms  OK: u64 current version (0 = key
 *                                           now absent), value
 *                                           TIMEOUT: u64 current version
 * A key is required (key_len >= 1) for every opcode. Version 0 means
 * "absent": CAS with expected 0 creates only if absent; WAIT with version 0
 * waits until the key exists. */
enum kvmux_opcode {
    KVMUX_OP_GET = 1,
    KVMUX_OP_SET = 2,
    KVMUX_OP_DEL = 3,
    KVMUX_OP_INCR = 4,
    KVMUX_OP_CAS = 5,
    KVMUX_OP_WAIT = 6
};
#define KVMUX_OP_MAX 6

/* RESPONSE.code. A failed response (other than those with extras listed
 * above) may carry a short UTF-8 message in value (<= KVMUX_MAX_STATUS_MSG). */
enum kvmux_status {
    KVMUX_STATUS_OK = 0,
    KVMUX_STATUS_NOT_FOUND = 1,
    KVMUX_STATUS_VERSION_MISMATCH = 2,
    KVMUX_STATUS_TOO_LARGE = 3,    /* key or value over the limit */
    KVMUX_STATUS_BAD_REQUEST = 4,  /* well-formed frame, invalid request */
    KVMUX_STATUS_BUSY = 5,         /* credits exceeded: not processed, safe to retry */
    KVMUX_STATUS_TIMEOUT = 6,      /* WAIT expired */
    KVMUX_STATUS_INTERNAL = 7,     /* e.g. out of memory on the server */
    KVMUX_STATUS_NOT_INTEGER = 8,  /* INCR on a value that is not a decimal i64 */
    KVMUX_STATUS_OVERFLOW = 9,     /* INCR would overflow i64 */
    KVMUX_STATUS_UNKNOWN_OP = 10,  /* opcode not defined in the negotiated version */
    KVMUX_STATUS_SHUTTING_DOWN = 11/* server draining: not processed, safe to retry */
};

/* ERROR.code: connection-level errors. The sender closes after an ERROR. */
enum kvmux_wire_error {
    KVMUX_ERR_PROTOCOL = 1,        /* generic protocol violation */
    KVMUX_ERR_BAD_MAGIC = 2,
    KVMUX_ERR_BAD_VERSION = 3,     /* header version not the negotiated one */
    KVMUX_ERR_FRAME_TOO_LARGE = 4, /* header + body_len over max frame size */
    KVMUX_ERR_BAD_TYPE = 5,        /* unknown or reserved frame type */
    KVMUX_ERR_BAD_FLAGS = 6,       /* a flag bit not defined for this type */
    KVMUX_ERR_BAD_LENGTH = 7,      /* lengths inconsistent or wrong for type */
    KVMUX_ERR_HANDSHAKE = 8,       /* frame not allowed in this handshake state */
    KVMUX_ERR_UNSUPPORTED_VERSION = 9, /* no common protocol version */
    KVMUX_ERR_INTERNAL = 10,
    KVMUX_ERR_TOO_MANY_CONNECTIONS = 11,
    KVMUX_ERR_SHUTTING_DOWN = 12,
    KVMUX_ERR_TIMEOUT = 13,        /* handshake or idle timeout */
    KVMUX_ERR_UNEXPECTED_FRAME = 14/* e.g. a RESPONSE sent to the server */
};
#define KVMUX_ERR_MAX 14

/* Settings ids carried in HELLO / HELLO_ACK value as (u16 id, u32 value)
 * entries. Unknown ids are ignored, so new settings need no version bump. */
enum kvmux_setting_id {
    KVMUX_SETTING_MAX_FRAME_SIZE = 1,  /* largest frame the sender accepts */
    KVMUX_SETTING_MAX_OUTSTANDING = 2, /* server: the client's credits */
    KVMUX_SETTING_MAX_KEY_SIZE = 3,
    KVMUX_SETTING_MAX_VALUE_SIZE = 4
};
#define KVMUX_SETTING_ENTRY_LEN 6

/* A decoded frame. Pointers borrow from the buffer given to the decoder and
 * are valid only as long as that buffer is. */
typedef struct kvmux_frame {
    uint8_t version;
    uint8_t type;
    uint8_t flags;
    uint8_t code;
    uint32_t request_id;
    const uint8_t *extras;
    uint8_t extras_len;
    const uint8_t *key;
    uint16_t key_len;
    const uint8_t *value;
    uint32_t value_len;
} kvmux_frame;

/* ---- big-endian helpers (never overlay structs on wire bytes) ---- */
static inline uint16_t kvmux_load_u16be(const uint8_t *p) {
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}
static inline uint32_t kvmux_load_u32be(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t kvmux_load_u64be(const uint8_t *p) {
    return (uint64_t)kvmux_load_u32be(p) << 32 | kvmux_load_u32be(p + 4);
}
static inline void kvmux_store_u16be(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v;
}
static inline void kvmux_store_u32be(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);  p[3] = (uint8_t)v;
}
static inline void kvmux_store_u64be(uint8_t *p, uint64_t v) {
    kvmux_store_u32be(p, (uint32_t)(v >> 32));
    kvmux_store_u32be(p + 4, (uint32_t)v);
}

/* ---- codec ---- */

/* Decode one frame from buf[0..len).
 *
 * Incremental and strict in the picohttpparser way: call it again with more
 * bytes when it returns 0. Header fields are validated as soon as their bytes
 * are present (a bad magic is reported after 1 byte, an oversized body_len
 * after 16), so garbage is rejected before the peer can make us wait or
 * buffer. Checks: magic; version in [1, KVMUX_PROTO_VERSION_MAX]; type known
 * and not reserved; flags == 0; extras_len + key_len <= body_len;
 * extras_len <= KVMUX_MAX_EXTRAS; HDR_LEN + body_len <= max_frame; and the
 * per-type shape (HELLO: extras 2; HELLO_ACK: extras 0; both: key (name)
 * <= KVMUX_MAX_NAME and value (settings) a multiple of 6 holding at most
 * KVMUX_MAX_SETTINGS entries; PING/PONG: extras 8, key 0, value 0; ERROR:
 * extras 0, key 0, value <= KVMUX_MAX_ERROR_MSG). Opcode and status values
 * are not checked (request-level: the server answers UNKNOWN_OP).
 *
 * Returns the frame length (> 0) with *out filled (pointers into buf),
 * 0 when more bytes are needed (*out untouched), or -KVMUX_ERR_* on a
 * protocol error. Never reads past buf+len; never allocates. */
int kvmux_frame_decode(const uint8_t *buf, size_t len, uint32_t max_frame,
                       kvmux_frame *out);

/* Total encoded size of f (header + extras + key + value). */
size_t kvmux_frame_size(const kvmux_frame *f);

/* Write the 16-byte header for f (body_len computed from f's lengths) to
 * out. Lets an I/O layer send a large value by writev without copying it. */
void kvmux_frame_encode_header(uint8_t out[KVMUX_FRAME_HDR_LEN],
                               const kvmux_frame *f);

/* Encode f into out, which must hold kvmux_frame_size(f) bytes.
 * Returns the number of bytes written. */
size_t kvmux_frame_encode(uint8_t *out, const kvmux_frame *f);

/* Encode an ERROR frame (version KVMUX_HANDSHAKE_VERSION unless the caller
 * changes it afterwards) with code and message (truncated to
 * KVMUX_MAX_ERROR_MSG). out must hold KVMUX_FRAME_HDR_LEN +
 * KVMUX_MAX_ERROR_MSG bytes. Returns bytes written. */
size_t kvmux_encode_error(uint8_t *out, uint8_t version, uint32_t request_id,
                          uint8_t code, const char *msg);

/* Name of a wire error / status / opcode / frame type, for logs and
 * messages ("FRAME_TOO_LARGE", "NOT_FOUND", "GET", "HELLO"); "?" if unknown. */
const char *kvmux_wire_error_name(int code);
const char *kvmux_status_name(int status);
const char *kvmux_opcode_name(int op);
const char *kvmux_frame_type_name(int type);

/* Required extras length of a request opcode, or -1 for an unknown opcode. */
int kvmux_request_extras_len(uint8_t opcode);

/* ---- settings and handshake ---- */

typedef struct kvmux_settings {
    uint32_t max_frame_size;
    uint32_t max_outstanding;
    uint32_t max_key_size;
    uint32_t max_value_size;
} kvmux_settings;

/* Fill s with the KVMUX_DEFAULT_* values. */
void kvmux_settings_default(kvmux_settings *s);

/* Encode all four settings as entries into out (needs 4 * 6 bytes).
 * Returns bytes written. */
size_t kvmux_settings_encode(uint8_t *out, const kvmux_settings *s);

/* Decode entries from p[0..len) over s (entries absent from p leave s's
 * fields as they were; unknown ids are ignored). Returns 0, or
 * -KVMUX_ERR_BAD_LENGTH if len is not a multiple of 6 or holds more than
 * KVMUX_MAX_SETTINGS entries, or -KVMUX_ERR_PROTOCOL if a value is out of
 * range (max_frame_size < KVMUX_MIN_FRAME, max_outstanding == 0,
 * max_key_size == 0 or > KVMUX_MAX_KEY_LIMIT). On error s is unchanged. */
int kvmux_settings_decode(const uint8_t *p, size_t len, kvmux_settings *s);

/* Highest version in both [cmin,cmax] and [smin,smax], or 0 if none. */
uint8_t kvmux_negotiate_version(uint8_t cmin, uint8_t cmax, uint8_t smin,
                                uint8_t smax);

typedef enum kvmux_role { KVMUX_ROLE_CLIENT = 1, KVMUX_ROLE_SERVER = 2 } kvmux_role;

/* One enum for the connection's protocol state (never a set of booleans). */
typedef enum kvmux_session_state {
    KVMUX_SESSION_AWAIT_HELLO = 1,     /* server: nothing received yet */
    KVMUX_SESSION_AWAIT_HELLO_ACK = 2, /* client: HELLO sent */
    KVMUX_SESSION_OPEN = 3,
    KVMUX_SESSION_CLOSED = 4           /* after an ERROR either way */
} kvmux_session_state;

/* Per-connection protocol state. Plain struct, embedded by the I/O layer,
 * touched by one thread at a time. */
typedef struct kvmux_session {
    kvmux_role role;
    kvmux_session_state state;
    uint8_t version;          /* negotiated; 0 before the handshake */
    kvmux_settings local;     /* what we advertise / enforce */
    kvmux_settings peer;      /* what the peer advertised */
    uint32_t outstanding;     /* server: requests accepted and not answered */
} kvmux_session;

/* Initialise s for role with our own settings. A client starts in
 * AWAIT_HELLO_ACK once it has encoded its HELLO; a server in AWAIT_HELLO. */
void kvmux_session_init(kvmux_session *s, kvmux_role role,
                        const kvmux_settings *local);

/* Check a decoded frame against the session state: before the handshake a
 * server accepts only HELLO and a client only HELLO_ACK or ERROR; once open,
 * frames must carry the negotiated version, a server accepts REQUEST/PING/
 * PONG/ERROR and a client RESPONSE/PING/PONG/ERROR. An ERROR received moves
 * the session to CLOSED (an ERROR may carry the negotiated version or
 * KVMUX_HANDSHAKE_VERSION). Returns 0 or -KVMUX_ERR_* (HANDSHAKE,
 * BAD_VERSION, UNEXPECTED_FRAME; PROTOCOL for a REQUEST/RESPONSE with
 * request_id 0; UNEXPECTED_FRAME for anything once CLOSED). */
int kvmux_session_check_recv(kvmux_session *s, const kvmux_frame *f);

/* Client: encode HELLO (versions MIN..MAX, name, local settings) into out
 * (needs KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 4*6 bytes); state ->
 * AWAIT_HELLO_ACK. name may be NULL. Returns bytes written. */
size_t kvmux_session_encode_hello(kvmux_session *s, uint8_t *out,
                                  const char *name);

/* Client: apply a HELLO_ACK (already passed check_recv): record version and
 * the server's settings; state -> OPEN. Returns 0, or -KVMUX_ERR_* if the
 * chosen version is outside what we proposed or the settings are bad. */
int kvmux_session_on_hello_ack(kvmux_session *s, const kvmux_frame *ack);

/* Server: answer a HELLO (already passed check_recv). On success writes
 * HELLO_ACK (chosen version, name, local settings) into out (needs
 * KVMUX_FRAME_HDR_LEN + KVMUX_MAX_NAME + 4*6 bytes), state -> OPEN, and
 * returns its length. On failure returns -KVMUX_ERR_UNSUPPORTED_VERSION
 * (no common version) or -KVMUX_ERR_BAD_LENGTH/PROTOCOL (bad settings);
 * the caller then sends ERROR and closes. */
int kvmux_session_accept_hello(kvmux_session *s, const kvmux_frame *hello,
                               uint8_t *out, const char *name);

/* Server: take one credit for a REQUEST. Returns 0, or -1 if the client
 * already has local.max_outstanding requests unanswered (answer BUSY). */
int kvmux_session_request_begin(kvmux_session *s);

/* Server: give back the credit of an answered request. */
void kvmux_session_request_end(kvmux_session *s);

#endif /* KVMUX_PROTO_H */
