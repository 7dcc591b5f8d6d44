/* kvmux sans-IO protocol core: wire constants, frame codec, handshake and
 * per-connection protocol state, and (v2) the flow-control and
 * fragmentation bookkeeping.
 *
 * This layer never calls read/write/clock_gettime and never allocates: the
 * I/O layers (kvmuxd's event loop, the client's reader/writer threads) own
 * every buffer and feed bytes in / take bytes out, and pass time in where a
 * helper needs it. That is what lets the core be unit-tested byte for byte
 * and fuzzed without sockets (the nghttp2 model).
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
 *    3   1   flags        v1: must be 0. v2: KVMUX_FLAG_* (per type)
 *    4   4   request_id   correlation id chosen by the client
 *    8   1   code         opcode (REQUEST), status (RESPONSE),
 *                         error code (ERROR), chosen version (HELLO_ACK), else 0
 *    9   1   extras_len   bytes of fixed fields that follow the header
 *                         (on the wire: v2 prefixes + op extras)
 *   10   2   key_len
 *   12   4   body_len     extras_len + key_len + value_len
 *
 * Body: extras | key | value. In v2 the extras of a REQUEST are
 * [u32 deadline_ms if DEADLINE][u32 total_value_len if MORE]
 * [u64 seq if SESSION (v3)][op extras],
 * of a RESPONSE [u32 total_value_len if MORE][status extras]. The decoder
 * strips these prefixes into kvmux_frame.deadline_ms / total_value_len /
 * session_seq and
 * leaves kvmux_frame.extras/extras_len describing the op extras only; the
 * encoder writes them back from the same fields. A v1 frame (flags 0) has
 * no prefix, so v1 code that never sets flags sees no difference.
 */
#ifndef KVMUX_PROTO_H
#define KVMUX_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_MAGIC 0x6B
#define KVMUX_FRAME_HDR_LEN 16
#define KVMUX_PROTO_VERSION_MIN 1 /* lowest version this build speaks */
#define KVMUX_PROTO_VERSION_MAX 2 /* highest version offered by default (a
                                     single-node server, a session that
                                     does not raise max_version) */
#define KVMUX_PROTO_V3 3          /* v2 frames plus the replication statuses
                                     NOT_LEADER and OUTCOME_UNKNOWN */
#define KVMUX_PROTO_CODEC_MAX 3   /* highest version this build's codec
                                     parses and encodes: a session may raise
                                     max_version up to it (the client does;
                                     a replicated server does) */
#define KVMUX_PROTO_V2 2          /* first version with flags, fragments,
                                     windows, CANCEL, GOAWAY */
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
#define KVMUX_MAX_ERROR_MSG 1024u        /* message bytes in an ERROR/GOAWAY */
#define KVMUX_MAX_STATUS_MSG 256u        /* message bytes in a failed RESPONSE */
#define KVMUX_MAX_EXTRAS 32u             /* wire extras_len, prefixes included */

/* v2 defaults and bounds. A v2 server may raise MAX_VALUE_SIZE up to
 * KVMUX_MAX_VALUE_LIMIT (values above the frame size travel fragmented);
 * on a v1 connection a value is still bounded by the frame size. */
#define KVMUX_DEFAULT_MAX_VALUE_V2 (64u * 1024 * 1024)
#define KVMUX_MAX_VALUE_LIMIT (512u * 1024 * 1024)
#define KVMUX_DEFAULT_INITIAL_WINDOW (1024u * 1024)          /* per message */
#define KVMUX_DEFAULT_CONNECTION_WINDOW (16u * 1024 * 1024)  /* per connection */
#define KVMUX_MAX_WINDOW 0x7FFFFFFFu     /* 2^31-1: larger is a protocol error */
#define KVMUX_PREFIX_LEN 4u              /* each v2 extras prefix is a u32 */
#define KVMUX_DEFAULT_MAX_CANCEL_RATE 1000u /* CANCELs per second (server) */

/* Frame types. 8..11 exist from v2 on: in a frame whose header version is
 * 1 (and on a v1 session) they are a protocol error (BAD_TYPE), like any
 * other unknown type. */
enum kvmux_frame_type {
    KVMUX_FRAME_HELLO = 1,
    KVMUX_FRAME_HELLO_ACK = 2,
    KVMUX_FRAME_REQUEST = 3,
    KVMUX_FRAME_RESPONSE = 4,
    KVMUX_FRAME_ERROR = 5,
    KVMUX_FRAME_PING = 6,
    KVMUX_FRAME_PONG = 7,
    KVMUX_FRAME_CANCEL = 8,        /* v2: client -> server, no body */
    KVMUX_FRAME_GOAWAY = 9,        /* v2: server -> client, id 0, extras
                                      u32 last_request_id, u32 error; value msg */
    KVMUX_FRAME_WINDOW_UPDATE = 10,/* v2: both ways, id = message or 0 for the
                                      connection; extras u32 increment (> 0) */
    KVMUX_FRAME_CONTINUATION = 11  /* v2: both ways, next value chunk of a
                                      fragmented message; key 0, extras 0 */
};
#define KVMUX_FRAME_TYPE_MAX 11

/* Frame flags (v2 only; a v1 frame has flags == 0). Any bit not listed for
 * a type is a protocol error (BAD_FLAGS).
 *   MORE      REQUEST, RESPONSE, CONTINUATION: more fragments of this
 *             message follow in CONTINUATION frames. On REQUEST/RESPONSE it
 *             also adds the u32 total_value_len extras prefix.
 *   DEADLINE  REQUEST: extras start with u32 deadline_ms, a relative budget
 *             from when the server receives the frame (0 = already expired). */
#define KVMUX_FLAG_MORE 0x01u
#define KVMUX_FLAG_DEADLINE 0x02u
/*   SESSION   v3 REQUEST of a write (SET, DEL, INCR, CAS, EXPIRE, PERSIST)
 *             on a connection whose HELLO carried a session id: extras
 *             carry u64 seq, the write's number in its session, after the
 *             DEADLINE and MORE prefixes (docs/PROTOCOL.md section 17.1).
 *             Unknown (BAD_FLAGS) on v1/v2. */
#define KVMUX_FLAG_SESSION 0x10u
#define KVMUX_SESSION_PREFIX_LEN 8u      /* the u64 seq */
/* Bit 63 of the seq: RETRY, the same write was sent before (a resend);
 * bits 0..62: the write's number, from 1. */
#define KVMUX_SESSION_RETRY (1ull << 63)
/*   STALE     v3 REQUEST only (docs/PROTOCOL.md section 17.2): a read (GET,
 *             EXISTS, TTL, WAIT, SCAN) any replica may answer from its
 *             applied state, once its store's version counter reaches
 *             min_version: extras carry u64 min_version after the other
 *             prefixes ([deadline][total_value_len][min_version]). */
#define KVMUX_FLAG_STALE 0x20u
#define KVMUX_STALE_PREFIX_LEN 8u

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
 *   STATS req: none; key optional (a name  OK: none, value = text lines
 *         prefix filter, "" = all)                  "name:value\n"
 * A key is required (key_len >= 1) for every opcode but STATS. Version 0 means
 * "absent": CAS with expected 0 creates only if absent; WAIT with version 0
 * waits until the key exists. */
/* The largest TTL a SET or CAS may carry: 2^53 - 1 ms (~285,000 years;
 * exact in a double; now + this never overflows u64 or i64 ms). A request
 * above it is answered BAD_REQUEST and changes nothing. 0 = no expiry. */
#define KVMUX_MAX_TTL_MS ((uint64_t)9007199254740991u)

/* 1 if ttl_ms is a TTL the protocol accepts (0 included). Every op that
 * takes a TTL checks it with this. */
static inline int kvmux_ttl_valid(uint64_t ttl_ms) { return ttl_ms <= KVMUX_MAX_TTL_MS; }

enum kvmux_opcode {
    KVMUX_OP_GET = 1,
    KVMUX_OP_SET = 2,
    KVMUX_OP_DEL = 3,
    KVMUX_OP_INCR = 4,
    KVMUX_OP_CAS = 5,
    KVMUX_OP_WAIT = 6
};
/* Server statistics (docs/PROTOCOL.md section 4, docs/OPERATIONS.md). A
 * macro rather than an enum member for the same reason as
 * KVMUX_STATUS_CANCELED; defined in v1 and v2 (an older server answers
 * UNKNOWN_OP). */
#define KVMUX_OP_STATS 7
/* Key-space operations (docs/PROTOCOL.md section 4.1), v1 and v2; an older
 * server answers UNKNOWN_OP. Macros for the same reason as STATS.
 *   EXISTS  req: none                  OK: u64 version; NOT_FOUND
 *   TTL     req: none                  OK: u64 version, u64 ttl_ms left
 *                                      (0 = no expiry); NOT_FOUND
 *   EXPIRE  req: u64 ttl_ms (1..KVMUX_MAX_TTL_MS)
 *                                      OK: u64 new version; NOT_FOUND
 *   PERSIST req: none                  OK: u64 version (new if a TTL was
 *                                      dropped, else unchanged); NOT_FOUND
 *   SCAN    req: u64 cursor, u32 count; key = prefix (optional)
 *                                      OK: u64 next cursor (0 = done),
 *                                      value = ([u16 key_len][key])* */
#define KVMUX_OP_EXISTS 8
#define KVMUX_OP_TTL 9
#define KVMUX_OP_EXPIRE 10
#define KVMUX_OP_PERSIST 11
#define KVMUX_OP_SCAN 12
/* Introspection (docs/PROTOCOL.md section 4.2), v1 and v2; an older
 * server answers UNKNOWN_OP. No key, no value. Macros as for STATS.
 *   SLOWLOG     req: u32 subcommand, u32 count
 *               GET (0): OK: u64 entries in the log, value = the newest
 *                 count entries (0 = all), newest first, one text line
 *                 each (as many as fit the client's limits)
 *               LEN (1): OK: u64 entries in the log, no value
 *               RESET (2): OK: u64 entries dropped, no value
 *               another subcommand: BAD_REQUEST
 *   CLIENT_LIST req: none
 *               OK: u64 connections, value = one text line each (as many
 *               as fit the client's limits) */
#define KVMUX_OP_SLOWLOG 13
#define KVMUX_OP_CLIENT_LIST 14
/* Membership and group status (docs/PROTOCOL.md section 17.3), v3 only
 * (UNKNOWN_OP on v1/v2 connections and on a single node, which never
 * negotiates v3). No extras; key = subcommand ("status", "add", "remove",
 * "transfer"); value = its ASCII arguments (at most
 * KVMUX_GROUP_ARGS_MAX bytes). OK: value = text. */
#define KVMUX_OP_GROUP 15
/* Sharded cluster (docs/PROTOCOL.md section 18.4), v3 only. No extras;
 * key = subcommand ("slot", "map", "setmap"); value = its argument (a key,
 * nothing, an encoded slot map: src/cluster/cluster.h). Macro as for STATS. */
#define KVMUX_OP_CLUSTER 16
#define KVMUX_OP_MAX 16
#define KVMUX_GROUP_ARGS_MAX 256u

#define KVMUX_SLOWLOG_GET 0u
#define KVMUX_SLOWLOG_LEN 1u
#define KVMUX_SLOWLOG_RESET 2u


/* SCAN limits: count 0 asks for KVMUX_SCAN_DEFAULT_COUNT; larger than
 * KVMUX_SCAN_MAX_COUNT is clamped. A reply stops taking buckets once it
 * holds count keys or KVMUX_SCAN_REPLY_BYTES of key list (a bucket is
 * never split, so one bucket may carry it past either). */
#define KVMUX_SCAN_DEFAULT_COUNT 10u
#define KVMUX_SCAN_MAX_COUNT 1000u
#define KVMUX_SCAN_REPLY_BYTES (64u * 1024)
#define KVMUX_SCAN_ENTRY_HDR 2u /* u16 key_len before each key */

/* RESPONSE.code. A failed response (other than those with extras listed
 * above) may carry a short UTF-8 message in value (<= KVMUX_MAX_STATUS_MSG). */
enum kvmux_status {
    KVMUX_STATUS_OK = 0,
    KVMUX_STATUS_NOT_FOUND = 1,
    KVMUX_STATUS_VERSION_MISMATCH = 2,
    KVMUX_STATUS_TOO_LARGE = 3,    /* key or value over the limit */
    KVMUX_STATUS_BAD_REQUEST = 4,  /* well-formed frame, invalid request */
    KVMUX_STATUS_BUSY = 5,         /* credits exceeded: not processed, safe to retry */
    KVMUX_STATUS_TIMEOUT = 6,      /* WAIT expired, or (v2) the deadline passed */
    KVMUX_STATUS_INTERNAL = 7,     /* e.g. out of memory on the server */
    KVMUX_STATUS_NOT_INTEGER = 8,  /* INCR on a value that is not a decimal i64 */
    KVMUX_STATUS_OVERFLOW = 9,     /* INCR would overflow i64 */
    KVMUX_STATUS_UNKNOWN_OP = 10,  /* opcode not defined in the negotiated version */
    KVMUX_STATUS_SHUTTING_DOWN = 11/* server draining: not processed, safe to retry */
};
/* v2: the client CANCELed this request (never sent for an applied write).
 * A macro rather than an enum member so v1 code with an exhaustive
 * `switch ((enum kvmux_status)x)` still compiles under -Wswitch -Werror;
 * such code must handle 12 as an unknown status until it learns v2. */
#define KVMUX_STATUS_CANCELED 12
/* v2: a write refused because the server is out of memory (over
 * --maxmemory under noeviction, or an allocation failed): not processed,
 * the store is unchanged; safe to retry once memory is freed. Sent only on
 * v2 connections: a v1 peer gets BUSY (over --maxmemory) or INTERNAL (an
 * allocation failed) instead, since a v1 decoder treats an unknown status
 * as a broken connection. A macro for the same reason as CANCELED. */
#define KVMUX_STATUS_OUT_OF_MEMORY 13
/* v3 (replication): the request was NOT processed because this replica
 * is not the leader. Value = the leader's client address as ASCII
 * "host:port" (no NUL), or empty when no leader is known. Sent only on v3
 * connections (a v1/v2 peer gets SHUTTING_DOWN). Macro as for CANCELED. */
#define KVMUX_STATUS_NOT_LEADER 14
/* v3: a write that was in flight when leadership was lost: it may or may
 * not have been applied. A v1/v2 peer gets INTERNAL "outcome unknown". */
#define KVMUX_STATUS_OUTCOME_UNKNOWN 15
/* v3, cluster mode (docs/PROTOCOL.md section 18.3): the request was NOT
 * processed because another group serves the key's slot. Value = u16 slot |
 * u64 epoch | u16 group | endpoints ("host:port,..." ASCII, no NUL, may be
 * empty): kvmux_redirect_decode. A v1/v2 peer gets SHUTTING_DOWN "wrong
 * shard: ...". Macro as for CANCELED. */
#define KVMUX_STATUS_WRONG_SHARD 16
/* v3, cluster mode: NOT processed, the node has no slot map yet (or the
 * slot is being handed over); retry shortly. Value = u16 slot | u64 epoch
 * (kvmux_try_again_decode). A v1/v2 peer gets BUSY. Macro as for CANCELED. */
#define KVMUX_STATUS_TRY_AGAIN 17
#define KVMUX_STATUS_MAX 17

/* ERROR.code (and GOAWAY's error field): connection-level errors. The
 * sender closes after an ERROR. */
enum kvmux_wire_error {
    KVMUX_ERR_PROTOCOL = 1,        /* generic protocol violation */
    KVMUX_ERR_BAD_MAGIC = 2,
    KVMUX_ERR_BAD_VERSION = 3,     /* header version not the negotiated one */
    KVMUX_ERR_FRAME_TOO_LARGE = 4, /* header + body_len over max frame size,
                                      or (v2) total_value_len over MAX_VALUE_SIZE */
    KVMUX_ERR_BAD_TYPE = 5,        /* unknown type, or v2 type in a v1 frame */
    KVMUX_ERR_BAD_FLAGS = 6,       /* a flag bit not defined for this type/version */
    KVMUX_ERR_BAD_LENGTH = 7,      /* lengths inconsistent or wrong for type */
    KVMUX_ERR_HANDSHAKE = 8,       /* frame not allowed in this handshake state */
    KVMUX_ERR_UNSUPPORTED_VERSION = 9, /* no common protocol version */
    KVMUX_ERR_INTERNAL = 10,
    KVMUX_ERR_TOO_MANY_CONNECTIONS = 11,
    KVMUX_ERR_SHUTTING_DOWN = 12,
    KVMUX_ERR_TIMEOUT = 13,        /* handshake or idle timeout */
    KVMUX_ERR_UNEXPECTED_FRAME = 14/* e.g. a RESPONSE sent to the server */
};
/* v2: too many CANCEL/PING per second. A macro for the same reason as
 * KVMUX_STATUS_CANCELED. */
#define KVMUX_ERR_FLOOD 15
/* The server requires an auth token (--requirepass) and the HELLO carried
 * none or a wrong one (docs/PROTOCOL.md section 8.1). Sent with header
 * version 1 (handshake framing) in reply to HELLO, then the server closes.
 * v1 and v2. A macro for the same reason as KVMUX_ERR_FLOOD. */
#define KVMUX_ERR_AUTH 16
#define KVMUX_ERR_MAX 16

/* Settings ids carried in HELLO / HELLO_ACK value as (u16 id, u32 value)
 * entries. Unknown ids are ignored, so new settings need no version bump
 * (a v1 peer ignores 5 and 6). */
enum kvmux_setting_id {
    KVMUX_SETTING_MAX_FRAME_SIZE = 1,  /* largest frame the sender accepts */
    KVMUX_SETTING_MAX_OUTSTANDING = 2, /* server: the client's credits */
    KVMUX_SETTING_MAX_KEY_SIZE = 3,
    KVMUX_SETTING_MAX_VALUE_SIZE = 4,  /* largest value the sender accepts */
    KVMUX_SETTING_INITIAL_WINDOW = 5,  /* v2: per-message window the sender of
                                          this setting grants its peer */
    KVMUX_SETTING_CONNECTION_WINDOW = 6/* v2: connection-wide window, same */
};
/* Auth token in HELLO (docs/PROTOCOL.md section 8.1), as settings entries
 * so servers without auth ignore it: AUTH_TOKEN_LEN = the token's length
 * in bytes (1..KVMUX_MAX_AUTH_TOKEN), then ceil(len / 4) AUTH_TOKEN entries
 * whose values, big-endian, are the token's bytes in order (the last one
 * padded with zero bytes). Macros, not enum members, as for new codes. */
#define KVMUX_SETTING_AUTH_TOKEN_LEN 7
#define KVMUX_SETTING_AUTH_TOKEN 8
/* v3 session id (docs/PROTOCOL.md section 17.1): a nonzero u64 the client
 * draws at random per handle, as two entries (high 32 bits, low 32 bits),
 * both or neither. Unknown ids on v1/v2. */
#define KVMUX_SETTING_SESSION_ID_HI 9
#define KVMUX_SETTING_SESSION_ID_LO 10
#define KVMUX_SESSION_SETTINGS_LEN 12u
#define KVMUX_MAX_AUTH_TOKEN 64u
/* Bytes the auth entries add to a HELLO value: 6 * (1 + ceil(64 / 4)). */
#define KVMUX_AUTH_SETTINGS_MAX_LEN (6u * (1u + KVMUX_MAX_AUTH_TOKEN / 4u))
#define KVMUX_SETTING_ENTRY_LEN 6
#define KVMUX_SETTINGS_MAX_LEN (6 * KVMUX_SETTING_ENTRY_LEN) /* what we encode */

/* Buffer sizes for the handshake encoders. Unchanged from v1: when the v2
 * window settings have to be sent (non-default values) the name is cut
 * so the frame still fits. */
#define KVMUX_HELLO_MAX_LEN \
    (KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 4 * KVMUX_SETTING_ENTRY_LEN)
#define KVMUX_HELLO_ACK_MAX_LEN \
    (KVMUX_FRAME_HDR_LEN + KVMUX_MAX_NAME + 4 * KVMUX_SETTING_ENTRY_LEN)

/* Encoded sizes of the fixed-size v2 frames. */
#define KVMUX_CANCEL_LEN KVMUX_FRAME_HDR_LEN
#define KVMUX_WINDOW_UPDATE_LEN (KVMUX_FRAME_HDR_LEN + 4)
#define KVMUX_GOAWAY_MAX_LEN (KVMUX_FRAME_HDR_LEN + 8 + KVMUX_MAX_ERROR_MSG)
/* Largest "head" (everything but the value) kvmux_frame_encode_head
 * writes for a frame with a key of key_len bytes. */
#define KVMUX_FRAME_HEAD_MAX(key_len) \
    (KVMUX_FRAME_HDR_LEN + KVMUX_MAX_EXTRAS + (size_t)(key_len))

/* A decoded frame. Pointers borrow from the buffer given to the decoder and
 * are valid only as long as that buffer is.
 *
 * extras/extras_len are the op/status extras only; the v2 prefixes live in
 * deadline_ms (meaningful iff flags & KVMUX_FLAG_DEADLINE) and
 * total_value_len (meaningful iff flags & KVMUX_FLAG_MORE on a REQUEST or
 * RESPONSE). The flag bits are the "has" markers: see
 * kvmux_frame_has_deadline / kvmux_frame_has_total. A zero-initialised
 * frame is a valid v1 frame template. */
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
    uint32_t deadline_ms;     /* v2, REQUEST with DEADLINE */
    uint32_t total_value_len; /* v2, first frame (REQUEST/RESPONSE) with MORE */
    uint64_t session_seq;     /* v3, REQUEST with SESSION */
    uint64_t min_version;     /* v3, REQUEST with STALE */
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

/* ---- frame accessors (v2) ---- */

/* 1 if f carries a deadline_ms (REQUEST with DEADLINE). */
static inline int kvmux_frame_has_deadline(const kvmux_frame *f) {
    return f->type == KVMUX_FRAME_REQUEST && (f->flags & KVMUX_FLAG_DEADLINE) != 0;
}
/* 1 if f carries a session_seq (v3 REQUEST with SESSION). */
static inline int kvmux_frame_has_session(const kvmux_frame *f) {
    return f->type == KVMUX_FRAME_REQUEST && (f->flags & KVMUX_FLAG_SESSION) != 0;
}
/* 1 if f is the first frame of a fragmented message (REQUEST or RESPONSE
 * with MORE) and so carries total_value_len. */
static inline int kvmux_frame_has_total(const kvmux_frame *f) {
    return (f->type == KVMUX_FRAME_REQUEST || f->type == KVMUX_FRAME_RESPONSE) &&
           (f->flags & KVMUX_FLAG_MORE) != 0;
}
/* 1 if more fragments of f's message follow (any type with MORE). */
static inline int kvmux_frame_has_more(const kvmux_frame *f) {
    return (f->flags & KVMUX_FLAG_MORE) != 0;
}
/* WINDOW_UPDATE increment (the decoder guarantees extras_len 4, > 0). */
static inline uint32_t kvmux_window_update_increment(const kvmux_frame *f) {
    return kvmux_load_u32be(f->extras);
}
/* GOAWAY fields (the decoder guarantees extras_len 8). */
static inline uint32_t kvmux_goaway_last_id(const kvmux_frame *f) {
    return kvmux_load_u32be(f->extras);
}
static inline uint32_t kvmux_goaway_error(const kvmux_frame *f) {
    return kvmux_load_u32be(f->extras + 4);
}

/* ---- versions and features ---- */

/* 1 if frame type t may appear in a frame whose header version is v
 * (1..7 from v1, 8..11 from v2); 0 otherwise. */
int kvmux_version_allows_type(uint8_t v, uint8_t t);

/* The flag bits allowed on type t in version v (0 in v1; REQUEST:
 * MORE|DEADLINE, RESPONSE and CONTINUATION: MORE in v2; REQUEST also
 * SESSION in v3; 0 for others). */
uint8_t kvmux_version_allowed_flags(uint8_t v, uint8_t t);

/* ---- codec ---- */

/* Decode one frame from buf[0..len).
 *
 * Incremental and strict in the picohttpparser way: call it again with more
 * bytes when it returns 0. Header fields are validated as soon as their bytes
 * are present (a bad magic is reported after 1 byte, an oversized body_len
 * after 16), so garbage is rejected before the peer can make us wait or
 * buffer. Checks: magic; version in [1, KVMUX_PROTO_CODEC_MAX]; type known
 * for the header version (BAD_TYPE); flags allowed for type and header
 * version (BAD_FLAGS); extras_len + key_len <= body_len; extras_len <=
 * KVMUX_MAX_EXTRAS; HDR_LEN + body_len <= max_frame; and the per-type shape
 * (HELLO: extras 2; HELLO_ACK: extras 0; both: key (name) <= KVMUX_MAX_NAME
 * and value (settings) a multiple of 6 holding at most KVMUX_MAX_SETTINGS
 * entries; PING/PONG: extras 8, key 0, value 0; ERROR: extras 0, key 0,
 * value <= KVMUX_MAX_ERROR_MSG; v2: CANCEL: extras 0, key 0, value 0;
 * GOAWAY: extras 8, key 0, value <= KVMUX_MAX_ERROR_MSG; WINDOW_UPDATE:
 * extras 4, key 0, value 0, and once the body is in: increment in
 * [1, KVMUX_MAX_WINDOW] (PROTOCOL); CONTINUATION: extras 0, key 0, value
 * >= 1; REQUEST/RESPONSE: extras_len >= the prefixes the flags announce,
 * and with MORE, once the body is in, total_value_len > value_len (the
 * first fragment is strictly shorter than the message)). Opcode and status
 * values are not checked (request-level: the server answers UNKNOWN_OP).
 *
 * Returns the frame length (> 0) with *out filled (pointers into buf,
 * prefixes stripped into deadline_ms / total_value_len, fields not carried
 * set to 0), 0 when more bytes are needed (*out untouched), or
 * -KVMUX_ERR_* on a protocol error. Never reads past buf+len; never
 * allocates. Thread-safe: yes (no state). */
int kvmux_frame_decode(const uint8_t *buf, size_t len, uint32_t max_frame,
                       kvmux_frame *out);

/* The request_id an ERROR about the undecodable frame at buf[0..len)
 * should carry (section 3: the offending request's id when there is one):
 * the header's id for a frame type whose id names a request in that header
 * version (REQUEST, RESPONSE, ERROR, PING, PONG; in v2 also CANCEL,
 * WINDOW_UPDATE, CONTINUATION), else 0: fewer than 8 bytes, a bad magic
 * byte or version, an unknown type, or a type whose id is always 0 (HELLO,
 * HELLO_ACK, GOAWAY). Reads at most 8 bytes. Thread-safe: yes. */
uint32_t kvmux_frame_error_request_id(const uint8_t *buf, size_t len);

/* Bytes of extras prefix f's flags call for (0, 4, 8, 12 or 16). */
uint32_t kvmux_frame_prefix_len(const kvmux_frame *f);

/* Total encoded size of f (header + prefixes + extras + key + value). */
size_t kvmux_frame_size(const kvmux_frame *f);

/* Write the 16-byte header for f (extras_len and body_len computed from
 * f's lengths plus the prefixes its flags call for) to out. Lets an I/O
 * layer send a large value by writev without copying it; when f has flags
 * the prefixes must follow the header: use kvmux_frame_encode_head. */
void kvmux_frame_encode_header(uint8_t out[KVMUX_FRAME_HDR_LEN],
                               const kvmux_frame *f);

/* Write everything but the value (header, prefixes, extras, key) to out,
 * which must hold KVMUX_FRAME_HEAD_MAX(f->key_len) bytes; returns bytes
 * written. The value (f->value_len bytes) is sent after it, e.g. by
 * writev, without being copied. */
size_t kvmux_frame_encode_head(uint8_t *out, const kvmux_frame *f);

/* Encode f into out, which must hold kvmux_frame_size(f) bytes.
 * Returns the number of bytes written. */
size_t kvmux_frame_encode(uint8_t *out, const kvmux_frame *f);

/* Encode an ERROR frame (version KVMUX_HANDSHAKE_VERSION unless the caller
 * changes it afterwards) with code and message (truncated to
 * KVMUX_MAX_ERROR_MSG). out must hold KVMUX_FRAME_HDR_LEN +
 * KVMUX_MAX_ERROR_MSG bytes. Returns bytes written. */
size_t kvmux_encode_error(uint8_t *out, uint8_t version, uint32_t request_id,
                          uint8_t code, const char *msg);

/* v2 encoders. version is the negotiated version (>= KVMUX_PROTO_V2; the
 * caller checks kvmux_session_is_v2 first). Each returns bytes written. */

/* CANCEL for request_id (client -> server). out: KVMUX_CANCEL_LEN bytes. */
size_t kvmux_encode_cancel(uint8_t *out, uint8_t version, uint32_t request_id);

/* WINDOW_UPDATE granting increment (1..KVMUX_MAX_WINDOW) value bytes for
 * request_id, or for the connection when request_id is 0. out:
 * KVMUX_WINDOW_UPDATE_LEN bytes. */
size_t kvmux_encode_window_update(uint8_t *out, uint8_t version,
                                  uint32_t request_id, uint32_t increment);

/* GOAWAY (server -> client, request_id 0): last_request_id is the last
 * request read and accepted, error 0 for a graceful drain or a
 * KVMUX_ERR_*; msg may be NULL, cut to KVMUX_MAX_ERROR_MSG bytes. out:
 * KVMUX_GOAWAY_MAX_LEN bytes. */
size_t kvmux_encode_goaway(uint8_t *out, uint8_t version,
                           uint32_t last_request_id, uint32_t error,
                           const char *msg);

/* Header of a CONTINUATION carrying value_len (>= 1) bytes of request_id's
 * value; flags is KVMUX_FLAG_MORE or 0. The chunk follows the 16 bytes
 * (no extras, no key), e.g. by writev. */
void kvmux_encode_continuation_header(uint8_t out[KVMUX_FRAME_HDR_LEN],
                                      uint8_t version, uint32_t request_id,
                                      uint8_t flags, uint32_t value_len);

/* Name of a wire error / status / opcode / frame type, for logs and
 * messages ("FRAME_TOO_LARGE", "NOT_FOUND", "GET", "HELLO"); "?" if unknown. */
const char *kvmux_wire_error_name(int code);
const char *kvmux_status_name(int status);
const char *kvmux_opcode_name(int op);
const char *kvmux_frame_type_name(int type);

/* Required extras length of a request opcode, or -1 for an unknown opcode.
 * (Op extras only: the v2 prefixes are not included.) */
int kvmux_request_extras_len(uint8_t opcode);

/* 1 if a request opcode requires a key (key_len >= 1), 0 if the key is
 * optional (STATS, SCAN: a name or key prefix). Unknown opcodes: 1.
 * Thread-safe: yes. */
int kvmux_request_key_required(uint8_t opcode);

/* ---- SCAN reply value: a list of ([u16 key_len][key]) entries ---- */

/* Append one entry for key[0..klen) (klen <= KVMUX_MAX_KEY_LIMIT) at
 * out + *off, which must have KVMUX_SCAN_ENTRY_HDR + klen bytes of room;
 * *off advances. */
void kvmux_scan_put_key(uint8_t *out, size_t *off, const uint8_t *key, uint16_t klen);

/* Iterate a SCAN reply value buf[0..len): on each call, the entry at *off
 * is returned in *key / *klen (pointing into buf) and *off advances.
 * Returns 1 with an entry, 0 at the end (*off == len), or
 * -KVMUX_ERR_BAD_LENGTH if an entry runs past the end (a malformed
 * reply). Never reads past buf + len. Thread-safe: yes. */
int kvmux_scan_next_key(const uint8_t *buf, size_t len, size_t *off, const uint8_t **key,
                        uint16_t *klen);

/* Count the entries of a SCAN reply value, checking it whole: the count,
 * or -KVMUX_ERR_BAD_LENGTH. */
long kvmux_scan_count_keys(const uint8_t *buf, size_t len);


/* Encode the auth entries for token[0..len) (1 <= len <=
 * KVMUX_MAX_AUTH_TOKEN) at out (room for KVMUX_AUTH_SETTINGS_MAX_LEN): a
 * client appends them to its HELLO's settings block (the value). Returns
 * the bytes written, or 0 if len is out of range. Thread-safe: yes. */
size_t kvmux_settings_encode_auth(uint8_t *out, const uint8_t *token, size_t len);

/* Server: extract the auth token from a HELLO settings block p[0..len)
 * into out[0..KVMUX_MAX_AUTH_TOKEN). Returns the token length, 0 if the
 * block has no auth entries, or -KVMUX_ERR_PROTOCOL if they are malformed
 * (length out of range, AUTH_TOKEN entries missing, extra, or before the
 * length). Thread-safe: yes. */
int kvmux_settings_auth_token(const uint8_t *p, size_t len, uint8_t *out);

/* Write the two session id entries for sid (nonzero) at out
 * (KVMUX_SESSION_SETTINGS_LEN bytes); returns that length. */
size_t kvmux_settings_encode_session(uint8_t *out, uint64_t sid);
/* Find the session id in the settings p[0..len): 1 with *sid set, 0 if
 * there is none, -KVMUX_ERR_PROTOCOL if only one half is there, a half is
 * repeated or the id is 0, -KVMUX_ERR_BAD_LENGTH if len is not whole
 * entries. */
int kvmux_settings_session_id(const uint8_t *p, size_t len, uint64_t *sid);
/* Append the session id entries to an encoded HELLO frame[0..n) (its
 * buffer has KVMUX_SESSION_SETTINGS_LEN more bytes), fixing its body
 * length. Returns the new length. sid 0: nothing appended. */
size_t kvmux_hello_append_session(uint8_t *frame, size_t n, uint64_t sid);

/* ---- settings and handshake ---- */

typedef struct kvmux_settings {
    uint32_t max_frame_size;
    uint32_t max_outstanding;
    uint32_t max_key_size;
    uint32_t max_value_size;
    uint32_t initial_window;    /* v2: per-message window granted to the peer */
    uint32_t connection_window; /* v2: connection window granted to the peer */
} kvmux_settings;
/* In our own (local) settings a window of 0 means the default, so v1 code
 * that fills the four v1 fields of a zeroed struct keeps working;
 * kvmux_session_init replaces 0 by the default and clamps to
 * KVMUX_MAX_WINDOW. A peer may not send 0 (see kvmux_settings_decode). */

/* Fill s with the KVMUX_DEFAULT_* values (windows included). */
void kvmux_settings_default(kvmux_settings *s);

/* Encode the settings into out (needs KVMUX_SETTINGS_MAX_LEN bytes): the
 * four v1 entries always, then INITIAL_WINDOW and CONNECTION_WINDOW only
 * when they are neither 0 nor the default (absent = default, so a default
 * HELLO is byte-identical to v1's). Returns bytes written (24..36). */
size_t kvmux_settings_encode(uint8_t *out, const kvmux_settings *s);

/* Decode entries from p[0..len) over s (entries absent from p leave s's
 * fields as they were; unknown ids are ignored). Returns 0, or
 * -KVMUX_ERR_BAD_LENGTH if len is not a multiple of 6 or holds more than
 * KVMUX_MAX_SETTINGS entries, or -KVMUX_ERR_PROTOCOL if a value is out of
 * range (max_frame_size < KVMUX_MIN_FRAME, max_outstanding == 0,
 * max_key_size == 0 or > KVMUX_MAX_KEY_LIMIT, a window 0 or >
 * KVMUX_MAX_WINDOW). On error s is unchanged. */
int kvmux_settings_decode(const uint8_t *p, size_t len, kvmux_settings *s);
/* Same, for a connection of the given protocol version: settings defined
 * by a later version (INITIAL_WINDOW and CONNECTION_WINDOW on version 1)
 * are unknown there, so ignored whatever their value. kvmux_settings_decode
 * is this with KVMUX_PROTO_VERSION_MAX. */
int kvmux_settings_decode_version(const uint8_t *p, size_t len, kvmux_settings *s,
                                  uint8_t version);

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

/* v2 drain sub-state of an OPEN session (kept apart from the main state so
 * a draining connection is still OPEN for everything else). */
typedef enum kvmux_drain_state {
    KVMUX_DRAIN_NONE = 0,
    KVMUX_DRAIN_GOAWAY_SENT = 1,     /* server: answer new requests SHUTTING_DOWN */
    KVMUX_DRAIN_GOAWAY_RECEIVED = 2  /* client: send nothing new */
} kvmux_drain_state;

/* Window accounting, one per direction per scope (message or connection).
 *
 * Sender side (we send value bytes to the peer): avail is what we may still
 * send; kvmux_window_consume when we send, kvmux_window_grant when a
 * WINDOW_UPDATE arrives.
 * Receiver side (the peer sends to us): avail is what the peer may still
 * send; kvmux_window_consume when bytes arrive (over avail = the peer broke
 * the window: protocol error), kvmux_window_release when we have consumed
 * them, which says when to send a WINDOW_UPDATE (once released reaches half
 * of size, as HTTP/2 implementations do).
 * Invariants: avail <= KVMUX_MAX_WINDOW; released <= KVMUX_MAX_WINDOW. */
typedef struct kvmux_window {
    uint32_t size;     /* initial window: base of the update threshold */
    uint32_t avail;    /* value bytes that may still be sent */
    uint32_t released; /* receiver: consumed, not yet granted back */
} kvmux_window;

/* Per-connection protocol state. Plain struct, embedded by the I/O layer,
 * touched by one thread at a time. */
typedef struct kvmux_session {
    kvmux_role role;
    kvmux_session_state state;
    uint8_t version;          /* negotiated; 0 before the handshake */
    kvmux_settings local;     /* what we advertise / enforce */
    kvmux_settings peer;      /* what the peer advertised */
    uint32_t outstanding;     /* server: requests accepted and not answered */
    /* v2 */
    uint8_t max_version;      /* highest version we propose (client) or
                                 accept (server); set by init to
                                 KVMUX_PROTO_VERSION_MAX, may be lowered
                                 (>= 1) before the handshake, e.g. to play a
                                 v1 peer, or raised up to
                                 KVMUX_PROTO_CODEC_MAX (v3) */
    kvmux_drain_state drain;
    uint32_t goaway_last_id;  /* last_request_id of the GOAWAY sent/received */
    kvmux_window send_window; /* connection: value bytes we may send (v2) */
    kvmux_window recv_window; /* connection: value bytes the peer may send */
} kvmux_session;

/* Initialise s for role with our own settings (NULL = defaults);
 * max_version = KVMUX_PROTO_VERSION_MAX. A client starts in
 * AWAIT_HELLO_ACK once it has encoded its HELLO; a server in AWAIT_HELLO. */
void kvmux_session_init(kvmux_session *s, kvmux_role role,
                        const kvmux_settings *local);

/* 1 if the session is open with a negotiated version >= 2, i.e. flags,
 * fragments, windows, CANCEL and GOAWAY may be used; 0 otherwise. */
static inline int kvmux_session_is_v2(const kvmux_session *s) {
    return s->version >= KVMUX_PROTO_V2;
}

/* Check a decoded frame against the session state: before the handshake a
 * server accepts only HELLO and a client only HELLO_ACK or ERROR; once open,
 * frames must carry the negotiated version (so v2 types and flags are
 * refused on a v1 session: BAD_VERSION, or BAD_TYPE/BAD_FLAGS for a frame
 * that was not produced by the decoder), a server accepts REQUEST/PING/PONG/
 * ERROR and (v2) CANCEL/WINDOW_UPDATE/CONTINUATION, a client RESPONSE/PING/
 * PONG/ERROR and (v2) GOAWAY/WINDOW_UPDATE/CONTINUATION. An ERROR received
 * moves the session to CLOSED (an ERROR may carry the negotiated version or
 * KVMUX_HANDSHAKE_VERSION). Returns 0 or -KVMUX_ERR_* (HANDSHAKE,
 * BAD_VERSION, BAD_TYPE, BAD_FLAGS, UNEXPECTED_FRAME; PROTOCOL for a
 * REQUEST/RESPONSE/CANCEL/CONTINUATION with request_id 0 or a GOAWAY with
 * request_id != 0; UNEXPECTED_FRAME for anything once CLOSED). It does not
 * apply WINDOW_UPDATE or GOAWAY: see kvmux_session_on_window_update /
 * kvmux_session_on_goaway. Thread-safe: no (one thread per session). */
int kvmux_session_check_recv(kvmux_session *s, const kvmux_frame *f);

/* Client: encode HELLO (versions MIN..max_version, name, local settings)
 * into out (needs KVMUX_HELLO_MAX_LEN bytes); state -> AWAIT_HELLO_ACK.
 * name may be NULL. Returns bytes written. */
size_t kvmux_session_encode_hello(kvmux_session *s, uint8_t *out,
                                  const char *name);

/* Buffer for a HELLO carrying an auth token. */
#define KVMUX_HELLO_AUTH_MAX_LEN \
    (KVMUX_HELLO_MAX_LEN + KVMUX_AUTH_SETTINGS_MAX_LEN + KVMUX_SESSION_SETTINGS_LEN)

/* Client: kvmux_session_encode_hello plus the auth token token[0..len)
 * (1..KVMUX_MAX_AUTH_TOKEN bytes; section 8.1) appended to the settings
 * block; out needs KVMUX_HELLO_AUTH_MAX_LEN bytes. len 0 (or token NULL)
 * encodes a plain HELLO. Returns bytes written, or 0 if len is over the
 * maximum (nothing written, state unchanged). */
size_t kvmux_session_encode_hello_auth(kvmux_session *s, uint8_t *out, const char *name,
                                       const uint8_t *token, size_t len);

/* Client: apply a HELLO_ACK (already passed check_recv): record version and
 * the server's settings; state -> OPEN; (v2) connection windows set from
 * peer.connection_window (send) and local.connection_window (recv).
 * Returns 0, or -KVMUX_ERR_* if the chosen version is outside what we
 * proposed or the settings are bad. */
int kvmux_session_on_hello_ack(kvmux_session *s, const kvmux_frame *ack);

/* Server: answer a HELLO (already passed check_recv). On success writes
 * HELLO_ACK (chosen version: the highest in both the client's range and
 * [MIN, max_version], name, local settings) into out (needs
 * KVMUX_HELLO_ACK_MAX_LEN bytes), state -> OPEN, windows set as for the
 * client, and returns its length. On failure returns
 * -KVMUX_ERR_UNSUPPORTED_VERSION (no common version) or
 * -KVMUX_ERR_BAD_LENGTH/PROTOCOL (bad settings); the caller then sends
 * ERROR and closes. */
int kvmux_session_accept_hello(kvmux_session *s, const kvmux_frame *hello,
                               uint8_t *out, const char *name);

/* Server: take one credit for a REQUEST. Returns 0, or -1 if the client
 * already has local.max_outstanding requests unanswered (answer BUSY). */
int kvmux_session_request_begin(kvmux_session *s);

/* Server: give back the credit of an answered request. */
void kvmux_session_request_end(kvmux_session *s);

/* v2: apply a WINDOW_UPDATE with request_id 0 (already passed check_recv)
 * to s->send_window. Returns 0, or -KVMUX_ERR_PROTOCOL if the window would
 * pass KVMUX_MAX_WINDOW (the caller sends ERROR and closes) or f is not a
 * connection WINDOW_UPDATE. Updates with request_id != 0 belong to the
 * message's kvmux_fragmenter (kvmux_fragmenter_on_window_update); an id
 * with no fragmented message being sent is ignored (it may have just
 * finished). */
int kvmux_session_on_window_update(kvmux_session *s, const kvmux_frame *f);

/* v2 server: encode GOAWAY (last_request_id, error, msg) into out (needs
 * KVMUX_GOAWAY_MAX_LEN bytes), enter KVMUX_DRAIN_GOAWAY_SENT and record
 * last_request_id. Returns bytes written, or 0 (nothing written) if s is
 * not an open v2 server session. It may be called again (e.g. a second
 * GOAWAY with an error when the drain timeout fires); the last call's id
 * is recorded. Request ids are client-chosen and may wrap, so ids are not
 * compared numerically anywhere: the client maps last_request_id to its
 * own send order. */
size_t kvmux_session_encode_goaway(kvmux_session *s, uint8_t *out,
                                   uint32_t last_request_id, uint32_t error,
                                   const char *msg);

/* v2 client: apply a GOAWAY (already passed check_recv): enter
 * KVMUX_DRAIN_GOAWAY_RECEIVED and record last_request_id (a later GOAWAY
 * replaces it). From now on the client sends no new REQUEST (CANCEL,
 * WINDOW_UPDATE, CONTINUATION of messages already started and PING/PONG
 * are still fine); every request already sent still gets exactly one
 * RESPONSE (requests the server read after its GOAWAY get SHUTTING_DOWN,
 * safe to retry). Returns 0, or -KVMUX_ERR_PROTOCOL if s is not an open
 * v2 client session or f is not a GOAWAY. */
int kvmux_session_on_goaway(kvmux_session *s, const kvmux_frame *f);

/* ---- v2 flow control ---- */

/* Set w to an initial window of size bytes (clamped to KVMUX_MAX_WINDOW). */
void kvmux_window_init(kvmux_window *w, uint32_t size);

/* Account n value bytes sent (sender) or received (receiver). Returns 0, or
 * -KVMUX_ERR_PROTOCOL if n > w->avail (receiver: the peer broke the window;
 * sender: a caller bug); w is unchanged on error. */
int kvmux_window_consume(kvmux_window *w, uint32_t n);

/* Sender: apply a WINDOW_UPDATE increment. Returns 0, or
 * -KVMUX_ERR_PROTOCOL if increment is 0 or avail + increment would pass
 * KVMUX_MAX_WINDOW; w is unchanged on error. */
int kvmux_window_grant(kvmux_window *w, uint32_t increment);

/* Receiver: n received bytes have been consumed (copied out). Returns the
 * increment to send in a WINDOW_UPDATE now (and adds it to avail), or 0
 * while fewer than half the window's size bytes are released (batched). */
uint32_t kvmux_window_release(kvmux_window *w, uint32_t n);

/* Bytes a sender may send now on a message: min(msg->avail, conn->avail). */
uint32_t kvmux_window_sendable(const kvmux_window *msg, const kvmux_window *conn);

/* WINDOW_UPDATE increments owed after a release; 0 = send nothing. */
typedef struct kvmux_grant {
    uint32_t message;    /* for the message's request_id */
    uint32_t connection; /* for request_id 0 */
} kvmux_grant;

/* ---- v2 fragmentation: receiver side ---- */

typedef enum kvmux_reassembly_state {
    KVMUX_REASM_IDLE = 0,     /* no fragmented message */
    KVMUX_REASM_OPEN = 1,     /* first frame seen, CONTINUATIONs expected */
    KVMUX_REASM_COMPLETE = 2  /* last fragment seen */
} kvmux_reassembly_state;

/* The receiver side of one fragmented message. The I/O layer keeps one per
 * message being received (in its pending entry / request slot), finds it
 * by request_id for each CONTINUATION (a CONTINUATION for an id without an
 * OPEN reassembly is -KVMUX_ERR_PROTOCOL: the I/O layer reports that), and
 * copies each fragment's bytes to buffer + offset itself: this struct only
 * counts. Invariant: received <= total; released <= received. */
typedef struct kvmux_reassembly {
    kvmux_reassembly_state state;
    uint32_t request_id;
    uint32_t total;      /* total_value_len announced by the first frame */
    uint32_t received;   /* value bytes received so far (next offset) */
    uint32_t released;   /* value bytes the caller has released */
    kvmux_window window; /* per-message receive window (our INITIAL_WINDOW) */
} kvmux_reassembly;

/* Start reassembling the message whose first frame is first (a REQUEST or
 * RESPONSE with MORE, already passed check_recv), on session s: checks
 * total_value_len <= the limit (s->local.max_value_size, the one we
 * advertised, or max_value when that is lower and not 0;
 * -KVMUX_ERR_FRAME_TOO_LARGE) and that the first fragment fits both the
 * message window (s->local.initial_window) and s->recv_window
 * (-KVMUX_ERR_PROTOCOL), and consumes them. The caller then reserves
 * first->total_value_len bytes and copies first->value to offset 0.
 * Returns 0, or -KVMUX_ERR_* (also PROTOCOL if first has no MORE or s is
 * not v2); on error r and s are unchanged and the caller sends ERROR. */
int kvmux_reassembly_begin(kvmux_reassembly *r, kvmux_session *s,
                           const kvmux_frame *first, uint32_t max_value);

/* Account a CONTINUATION (already passed check_recv) for r: same
 * request_id (else PROTOCOL), r OPEN (else PROTOCOL), value_len <= bytes
 * still missing (else BAD_LENGTH), MORE set iff bytes are still missing
 * after it (a last fragment that ends short, or MORE on the fragment that
 * completes the message: BAD_LENGTH), and within both windows (else
 * PROTOCOL). *offset (may be NULL) receives where the chunk goes in the
 * value buffer. Returns 0 if more fragments are expected, 1 if the message
 * is now complete, or -KVMUX_ERR_*; on error r and s are unchanged. */
int kvmux_reassembly_continue(kvmux_reassembly *r, kvmux_session *s,
                              const kvmux_frame *cont, uint32_t *offset);

/* The caller has consumed n more received bytes of r's message. Fills *g
 * with the WINDOW_UPDATE increments to send now (message increment only
 * while the message is still OPEN: a complete message needs no more
 * window). n is clamped to received - released. */
void kvmux_reassembly_release(kvmux_reassembly *r, kvmux_session *s, uint32_t n,
                              kvmux_grant *g);

/* Drop r's message (CANCEL, or a RESPONSE CANCELED ending a fragmented
 * response early): bytes received but not released are released to the
 * connection window, so dropping never leaks window; *g says what to
 * grant (message increment always 0). r returns to IDLE. */
void kvmux_reassembly_abort(kvmux_reassembly *r, kvmux_session *s, kvmux_grant *g);

/* ---- v2 fragmentation: sender side ---- */

typedef enum kvmux_fragmenter_state {
    KVMUX_FRAG_SINGLE = 1,  /* fits one frame: not fragmented, not flow-controlled */
    KVMUX_FRAG_FIRST = 2,   /* fragmented, first frame not yet sent */
    KVMUX_FRAG_CONT = 3,    /* fragmented, CONTINUATIONs to send */
    KVMUX_FRAG_DONE = 4     /* every byte handed out */
} kvmux_fragmenter_state;

/* What to send next: value bytes [offset, offset + len) in a frame with
 * these flags. first: 1 = the REQUEST/RESPONSE itself (OR flags into the
 * template's flags; set total_value_len when flags has MORE), 0 = a
 * CONTINUATION (kvmux_encode_continuation_header). */
typedef struct kvmux_fragment {
    uint32_t offset;
    uint32_t len;
    uint8_t flags;
    uint8_t first;
} kvmux_fragment;

/* The sender side of one message's value. */
typedef struct kvmux_fragmenter {
    kvmux_fragmenter_state state;
    uint32_t request_id;
    uint32_t total;      /* value bytes of the whole message */
    uint32_t sent;       /* value bytes handed out so far */
    uint32_t first_room; /* value bytes that fit in the first frame */
    uint32_t cont_room;  /* value bytes that fit in one CONTINUATION */
    kvmux_window window; /* per-message send window (peer's INITIAL_WINDOW) */
} kvmux_fragmenter;

/* Plan sending the value of the message whose first frame is head (a
 * REQUEST or RESPONSE template: flags may hold DEADLINE, extras and key
 * set; its value fields and MORE are ignored) with total_value_len value
 * bytes on session s. If the whole frame fits s->peer.max_frame_size (and
 * max_chunk, when not 0, is >= total_value_len) the message is SINGLE.
 * Otherwise it is fragmented into frames of at most peer.max_frame_size
 * bytes carrying at most max_chunk (0 = no cap) value bytes each. Returns
 * 0, or -KVMUX_ERR_FRAME_TOO_LARGE if it does not fit one frame and s is
 * not v2, if total_value_len > s->peer.max_value_size, or if not even the
 * head of the first frame fits peer.max_frame_size. On error f is
 * unchanged. */
int kvmux_fragmenter_init(kvmux_fragmenter *f, const kvmux_session *s,
                          const kvmux_frame *head, uint32_t total_value_len,
                          uint32_t max_chunk);

/* The next fragment to send, consuming message and connection window
 * (s->send_window). A SINGLE message is handed out whole at once,
 * windows untouched. The first frame of a fragmented message is handed out
 * even with no window (carrying 0 value bytes then) so the receiver can
 * reserve its buffer; a CONTINUATION needs at least 1 byte of window.
 * Returns 1 with *out filled, 0 if blocked on window (wait for a
 * WINDOW_UPDATE; other messages keep flowing), or -1 once DONE. */
int kvmux_fragmenter_next(kvmux_fragmenter *f, kvmux_session *s,
                          kvmux_fragment *out);

/* Apply a WINDOW_UPDATE for f's request_id. Returns 0 or
 * -KVMUX_ERR_PROTOCOL (overflow past KVMUX_MAX_WINDOW). */
int kvmux_fragmenter_on_window_update(kvmux_fragmenter *f, const kvmux_frame *wu);

/* 1 once every byte has been handed out. */
static inline int kvmux_fragmenter_done(const kvmux_fragmenter *f) {
    return f->state == KVMUX_FRAG_DONE;
}

/* ---- v2 flood caps ---- */

/* A token bucket for per-connection frame-rate caps (CANCEL, PING): at most
 * rate events per second on average, bursts up to rate. Time is passed in
 * (milliseconds from any monotonic origin). */
typedef struct kvmux_rate {
    uint32_t rate;      /* events per second; 0 = unlimited */
    uint64_t tokens_ms; /* budget in event-milliseconds (rate * 1000 = full) */
    uint64_t last_ms;   /* time of the last refill */
} kvmux_rate;

/* Start a bucket full at time now_ms. */
void kvmux_rate_init(kvmux_rate *r, uint32_t rate, uint64_t now_ms);

/* Take one event at now_ms. Returns 1 if allowed, 0 if over the cap (send
 * ERROR FLOOD and close). A clock that goes backwards refills nothing. */
int kvmux_rate_allow(kvmux_rate *r, uint64_t now_ms);

#endif /* KVMUX_PROTO_H */
