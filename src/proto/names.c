/* kvmux protocol names and per-opcode tables: the strings used in logs and
 * error messages for wire errors, statuses, opcodes and frame types, and the
 * fixed request extras length of each opcode.
 *
 * Design: plain switch statements over the enums in proto.h, so adding an
 * enum value without a name is easy to spot in review and the compiler
 * warns about nothing silently. Names are spelled as in docs/PROTOCOL.md
 * without the KVMUX_ prefix. Unknown values map to "?" (never NULL), since
 * these are fed peer-controlled numbers.
 *
 * What it is not: no validation policy lives here; the decoder and the
 * server decide what an unknown value means.
 */
#include "proto.h"

/* Name of a wire error code (ERROR.code); "?" if unknown. Accepts the
 * positive code or the negative -KVMUX_ERR_* returned by the codec. */
const char *kvmux_wire_error_name(int code) {
    if (code < 0) code = -code;
    switch (code) {
    case KVMUX_ERR_PROTOCOL: return "PROTOCOL";
    case KVMUX_ERR_BAD_MAGIC: return "BAD_MAGIC";
    case KVMUX_ERR_BAD_VERSION: return "BAD_VERSION";
    case KVMUX_ERR_FRAME_TOO_LARGE: return "FRAME_TOO_LARGE";
    case KVMUX_ERR_BAD_TYPE: return "BAD_TYPE";
    case KVMUX_ERR_BAD_FLAGS: return "BAD_FLAGS";
    case KVMUX_ERR_BAD_LENGTH: return "BAD_LENGTH";
    case KVMUX_ERR_HANDSHAKE: return "HANDSHAKE";
    case KVMUX_ERR_UNSUPPORTED_VERSION: return "UNSUPPORTED_VERSION";
    case KVMUX_ERR_INTERNAL: return "INTERNAL";
    case KVMUX_ERR_TOO_MANY_CONNECTIONS: return "TOO_MANY_CONNECTIONS";
    case KVMUX_ERR_SHUTTING_DOWN: return "SHUTTING_DOWN";
    case KVMUX_ERR_TIMEOUT: return "TIMEOUT";
    case KVMUX_ERR_UNEXPECTED_FRAME: return "UNEXPECTED_FRAME";
    case KVMUX_ERR_FLOOD: return "FLOOD";
    case KVMUX_ERR_AUTH: return "AUTH";
    default: return "?";
    }
}

/* Name of a RESPONSE status; "?" if unknown. */
const char *kvmux_status_name(int status) {
    switch (status) {
    case KVMUX_STATUS_OK: return "OK";
    case KVMUX_STATUS_NOT_FOUND: return "NOT_FOUND";
    case KVMUX_STATUS_VERSION_MISMATCH: return "VERSION_MISMATCH";
    case KVMUX_STATUS_TOO_LARGE: return "TOO_LARGE";
    case KVMUX_STATUS_BAD_REQUEST: return "BAD_REQUEST";
    case KVMUX_STATUS_BUSY: return "BUSY";
    case KVMUX_STATUS_TIMEOUT: return "TIMEOUT";
    case KVMUX_STATUS_INTERNAL: return "INTERNAL";
    case KVMUX_STATUS_NOT_INTEGER: return "NOT_INTEGER";
    case KVMUX_STATUS_OVERFLOW: return "OVERFLOW";
    case KVMUX_STATUS_UNKNOWN_OP: return "UNKNOWN_OP";
    case KVMUX_STATUS_SHUTTING_DOWN: return "SHUTTING_DOWN";
    case KVMUX_STATUS_CANCELED: return "CANCELED";
    case KVMUX_STATUS_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case KVMUX_STATUS_NOT_LEADER: return "NOT_LEADER";
    case KVMUX_STATUS_OUTCOME_UNKNOWN: return "OUTCOME_UNKNOWN";
    case KVMUX_STATUS_WRONG_SHARD: return "WRONG_SHARD";
    case KVMUX_STATUS_TRY_AGAIN: return "TRY_AGAIN";
    default: return "?";
    }
}

/* Name of a request opcode; "?" if unknown. */
const char *kvmux_opcode_name(int op) {
    switch (op) {
    case KVMUX_OP_GET: return "GET";
    case KVMUX_OP_SET: return "SET";
    case KVMUX_OP_DEL: return "DEL";
    case KVMUX_OP_INCR: return "INCR";
    case KVMUX_OP_CAS: return "CAS";
    case KVMUX_OP_WAIT: return "WAIT";
    case KVMUX_OP_STATS: return "STATS";
    case KVMUX_OP_EXISTS: return "EXISTS";
    case KVMUX_OP_TTL: return "TTL";
    case KVMUX_OP_EXPIRE: return "EXPIRE";
    case KVMUX_OP_PERSIST: return "PERSIST";
    case KVMUX_OP_SCAN: return "SCAN";
    case KVMUX_OP_SLOWLOG: return "SLOWLOG";
    case KVMUX_OP_CLIENT_LIST: return "CLIENT_LIST";
    case KVMUX_OP_GROUP: return "GROUP";
    case KVMUX_OP_CLUSTER: return "CLUSTER";
    default: return "?";
    }
}

/* Name of a frame type, including the v2-only ones (named so logs say
 * "type GOAWAY not allowed in version 1" rather than a bare number); "?"
 * if unknown. */
const char *kvmux_frame_type_name(int type) {
    switch (type) {
    case KVMUX_FRAME_HELLO: return "HELLO";
    case KVMUX_FRAME_HELLO_ACK: return "HELLO_ACK";
    case KVMUX_FRAME_REQUEST: return "REQUEST";
    case KVMUX_FRAME_RESPONSE: return "RESPONSE";
    case KVMUX_FRAME_ERROR: return "ERROR";
    case KVMUX_FRAME_PING: return "PING";
    case KVMUX_FRAME_PONG: return "PONG";
    case KVMUX_FRAME_CANCEL: return "CANCEL";
    case KVMUX_FRAME_GOAWAY: return "GOAWAY";
    case KVMUX_FRAME_WINDOW_UPDATE: return "WINDOW_UPDATE";
    case KVMUX_FRAME_CONTINUATION: return "CONTINUATION";
    default: return "?";
    }
}

/* Required REQUEST extras length per opcode (see the table in proto.h):
 * SET u64 ttl; INCR i64 delta; CAS u64 expected + u64 ttl; WAIT u64
 * version + u32 timeout. -1 for an opcode v1 does not define. */
int kvmux_request_extras_len(uint8_t opcode) {
    switch (opcode) {
    case KVMUX_OP_GET: return 0;
    case KVMUX_OP_SET: return 8;
    case KVMUX_OP_DEL: return 0;
    case KVMUX_OP_INCR: return 8;
    case KVMUX_OP_CAS: return 16;
    case KVMUX_OP_WAIT: return 12;
    case KVMUX_OP_STATS: return 0;
    case KVMUX_OP_EXISTS: return 0;
    case KVMUX_OP_TTL: return 0;
    case KVMUX_OP_EXPIRE: return 8;
    case KVMUX_OP_PERSIST: return 0;
    case KVMUX_OP_SCAN: return 12;
    case KVMUX_OP_SLOWLOG: return 8;
    case KVMUX_OP_CLIENT_LIST: return 0;
    case KVMUX_OP_GROUP: return 0;
    case KVMUX_OP_CLUSTER: return 0; /* v3 only: the server checks the version */
    default: return -1;
    }
}

int kvmux_request_key_required(uint8_t opcode) {
    return opcode != KVMUX_OP_STATS && opcode != KVMUX_OP_SCAN &&
           opcode != KVMUX_OP_SLOWLOG && opcode != KVMUX_OP_CLIENT_LIST;
}
