/* Unit tests for the kvmux frame codec (src/proto/frame.c, names.c,
 * settings.c): byte-exact vectors from tests/vectors/frames.hex checked in
 * both directions, incremental decoding at every split point, a PROT_NONE
 * guard page behind the input to prove the decoder never over-reads, every
 * malformed-header case, and the settings / names / negotiation helpers.
 *
 * The expected field values below are written out independently of the
 * hex file (which was produced by a separate encoder), so an error in
 * either shows up as a mismatch. */
#include "proto.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- vectors: expected fields ---- */

#define U64(v)                                                               \
    (uint8_t)((uint64_t)(v) >> 56), (uint8_t)((uint64_t)(v) >> 48),          \
        (uint8_t)((uint64_t)(v) >> 40), (uint8_t)((uint64_t)(v) >> 32),      \
        (uint8_t)((uint64_t)(v) >> 24), (uint8_t)((uint64_t)(v) >> 16),      \
        (uint8_t)((uint64_t)(v) >> 8), (uint8_t)(uint64_t)(v)
#define U32(v) (uint8_t)((v) >> 24), (uint8_t)((v) >> 16), (uint8_t)((v) >> 8), (uint8_t)(v)
#define SETTING(id, v) 0, id, U32(v)

typedef struct vec {
    const char *name;
    uint8_t type;
    uint32_t request_id;
    uint8_t code;
    uint8_t extras[32];
    uint8_t extras_len;
    const char *key;
    uint8_t value[160];
    uint32_t value_len;
    /* v2 fields (V1 for the v1 vectors) */
    uint8_t version;
    uint8_t flags;
    uint32_t deadline_ms;
    uint32_t total_value_len;
} vec;
/* Every SESSION vector carries seq 5 (section 17.1). */
#define VEC_SESSION_SEQ 5u

/* v3 STALE's min_version, for the vectors that carry it (by name: the
 * table above has no column for it). */
static uint64_t vec_min_version(const char *name) {
    return strcmp(name, "req_get_stale_v3") == 0 ? 42 : 0;
}

/* The v2 fields of a v1 vector: header version 1, no flags. */
#define V1 1, 0, 0, 0

static const vec VECS[] = {
    {"hello", KVMUX_FRAME_HELLO, 0, 0, {1, 1}, 2, "cli",
     {SETTING(1, 2097152u), SETTING(2, 1024u), SETTING(3, 4096u), SETTING(4, 1048576u)}, 24, V1},
    {"hello_ack", KVMUX_FRAME_HELLO_ACK, 0, 1, {0}, 0, "srv",
     {SETTING(1, 2097152u), SETTING(2, 128u), SETTING(3, 4096u), SETTING(4, 1048576u)}, 24, V1},
    {"req_get", KVMUX_FRAME_REQUEST, 1, KVMUX_OP_GET, {0}, 0, "foo", {0}, 0, V1},
    {"req_set", KVMUX_FRAME_REQUEST, 2, KVMUX_OP_SET, {U64(60000)}, 8, "foo", "bar", 3, V1},
    {"req_del", KVMUX_FRAME_REQUEST, 3, KVMUX_OP_DEL, {0}, 0, "foo", {0}, 0, V1},
    {"req_incr", KVMUX_FRAME_REQUEST, 4, KVMUX_OP_INCR, {U64(-5)}, 8, "ctr", {0}, 0, V1},
    {"req_cas", KVMUX_FRAME_REQUEST, 5, KVMUX_OP_CAS, {U64(7), U64(0)}, 16, "foo", "baz", 3, V1},
    {"req_wait", KVMUX_FRAME_REQUEST, 6, KVMUX_OP_WAIT, {U64(7), U32(1000u)}, 12, "foo", {0}, 0, V1},
    {"resp_get_ok", KVMUX_FRAME_RESPONSE, 1, KVMUX_STATUS_OK, {U64(7)}, 8, "", "bar", 3, V1},
    {"resp_set_ok", KVMUX_FRAME_RESPONSE, 2, KVMUX_STATUS_OK, {U64(8)}, 8, "", {0}, 0, V1},
    {"resp_del_ok", KVMUX_FRAME_RESPONSE, 3, KVMUX_STATUS_OK, {0}, 0, "", {0}, 0, V1},
    {"resp_incr_ok", KVMUX_FRAME_RESPONSE, 4, KVMUX_STATUS_OK, {U64(-5), U64(9)}, 16, "", {0}, 0, V1},
    {"resp_cas_ok", KVMUX_FRAME_RESPONSE, 5, KVMUX_STATUS_OK, {U64(10)}, 8, "", {0}, 0, V1},
    {"resp_wait_ok", KVMUX_FRAME_RESPONSE, 6, KVMUX_STATUS_OK, {U64(11)}, 8, "", "qux", 3, V1},
    {"resp_get_not_found", KVMUX_FRAME_RESPONSE, 1, KVMUX_STATUS_NOT_FOUND, {0}, 0, "", {0}, 0, V1},
    {"resp_cas_mismatch", KVMUX_FRAME_RESPONSE, 5, KVMUX_STATUS_VERSION_MISMATCH, {U64(8)}, 8, "", {0}, 0, V1},
    {"resp_set_too_large", KVMUX_FRAME_RESPONSE, 2, KVMUX_STATUS_TOO_LARGE, {0}, 0, "",
     "value too large", 15, V1},
    {"resp_bad_request", KVMUX_FRAME_RESPONSE, 12, KVMUX_STATUS_BAD_REQUEST, {0}, 0, "", "bad extras", 10, V1},
    {"resp_busy", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_BUSY, {0}, 0, "", {0}, 0, V1},
    {"resp_wait_timeout", KVMUX_FRAME_RESPONSE, 6, KVMUX_STATUS_TIMEOUT, {U64(7)}, 8, "", {0}, 0, V1},
    {"resp_internal", KVMUX_FRAME_RESPONSE, 13, KVMUX_STATUS_INTERNAL, {0}, 0, "", {0}, 0, V1},
    {"resp_incr_not_integer", KVMUX_FRAME_RESPONSE, 4, KVMUX_STATUS_NOT_INTEGER, {0}, 0, "", {0}, 0, V1},
    {"resp_incr_overflow", KVMUX_FRAME_RESPONSE, 4, KVMUX_STATUS_OVERFLOW, {0}, 0, "", {0}, 0, V1},
    {"resp_unknown_op", KVMUX_FRAME_RESPONSE, 8, KVMUX_STATUS_UNKNOWN_OP, {0}, 0, "", {0}, 0, V1},
    {"resp_shutting_down", KVMUX_FRAME_RESPONSE, 9, KVMUX_STATUS_SHUTTING_DOWN, {0}, 0, "", {0}, 0, V1},
    {"error_unsupported_version", KVMUX_FRAME_ERROR, 0, KVMUX_ERR_UNSUPPORTED_VERSION, {0}, 0, "",
     "no common version", 17, V1},
    {"error_bad_length", KVMUX_FRAME_ERROR, 10, KVMUX_ERR_BAD_LENGTH, {0}, 0, "", "bad length", 10, V1},
    {"ping", KVMUX_FRAME_PING, 0, 0, {1, 2, 3, 4, 5, 6, 7, 8}, 8, "", {0}, 0, V1},
    {"pong", KVMUX_FRAME_PONG, 0, 0, {1, 2, 3, 4, 5, 6, 7, 8}, 8, "", {0}, 0, V1},
    /* ---- v2 ---- */
    {"hello_v2", KVMUX_FRAME_HELLO, 0, 0, {1, 2}, 2, "cli",
     {SETTING(1, 2097152u), SETTING(2, 1024u), SETTING(3, 4096u), SETTING(4, 1048576u)}, 24,
     1, 0, 0, 0},
    {"hello_ack_v2", KVMUX_FRAME_HELLO_ACK, 0, 2, {0}, 0, "srv",
     {SETTING(1, 2097152u), SETTING(2, 128u), SETTING(3, 4096u), SETTING(4, 67108864u),
      SETTING(5, 65536u), SETTING(6, 1048576u)}, 36, 1, 0, 0, 0},
    {"req_get_v2", KVMUX_FRAME_REQUEST, 1, KVMUX_OP_GET, {0}, 0, "foo", {0}, 0, 2, 0, 0, 0},
    {"req_get_deadline", KVMUX_FRAME_REQUEST, 1, KVMUX_OP_GET, {0}, 0, "foo", {0}, 0,
     2, KVMUX_FLAG_DEADLINE, 250, 0},
    {"req_set_deadline", KVMUX_FRAME_REQUEST, 2, KVMUX_OP_SET, {U64(60000)}, 8, "foo", "bar", 3,
     2, KVMUX_FLAG_DEADLINE, 0, 0},
    {"req_set_more", KVMUX_FRAME_REQUEST, 2, KVMUX_OP_SET, {U64(0)}, 8, "foo", "0123", 4,
     2, KVMUX_FLAG_MORE, 0, 10},
    {"cont_more", KVMUX_FRAME_CONTINUATION, 2, 0, {0}, 0, "", "4567", 4, 2, KVMUX_FLAG_MORE, 0, 0},
    {"cont_last", KVMUX_FRAME_CONTINUATION, 2, 0, {0}, 0, "", "89", 2, 2, 0, 0, 0},
    {"req_cas_deadline_more", KVMUX_FRAME_REQUEST, 3, KVMUX_OP_CAS, {U64(7), U64(0)}, 16, "foo",
     "ab", 2, 2, KVMUX_FLAG_DEADLINE | KVMUX_FLAG_MORE, 5000, 6},
    {"resp_get_more", KVMUX_FRAME_RESPONSE, 1, KVMUX_STATUS_OK, {U64(7)}, 8, "", "abc", 3,
     2, KVMUX_FLAG_MORE, 0, 8},
    {"resp_cont_last", KVMUX_FRAME_CONTINUATION, 1, 0, {0}, 0, "", "defgh", 5, 2, 0, 0, 0},
    {"resp_get_ok_v2", KVMUX_FRAME_RESPONSE, 1, KVMUX_STATUS_OK, {U64(7)}, 8, "", "bar", 3,
     2, 0, 0, 0},
    {"resp_canceled", KVMUX_FRAME_RESPONSE, 6, KVMUX_STATUS_CANCELED, {0}, 0, "", {0}, 0,
     2, 0, 0, 0},
    {"cancel", KVMUX_FRAME_CANCEL, 6, 0, {0}, 0, "", {0}, 0, 2, 0, 0, 0},
    {"window_update_conn", KVMUX_FRAME_WINDOW_UPDATE, 0, 0, {U32(524288u)}, 4, "", {0}, 0,
     2, 0, 0, 0},
    {"window_update_msg", KVMUX_FRAME_WINDOW_UPDATE, 2, 0, {U32(32768u)}, 4, "", {0}, 0,
     2, 0, 0, 0},
    {"goaway", KVMUX_FRAME_GOAWAY, 0, 0, {U32(9u), U32(0u)}, 8, "", "drain", 5, 2, 0, 0, 0},
    {"goaway_flood", KVMUX_FRAME_GOAWAY, 0, 0, {U32(0u), U32(15u)}, 8, "", "cancel flood", 12,
     2, 0, 0, 0},
    {"error_flood", KVMUX_FRAME_ERROR, 0, KVMUX_ERR_FLOOD, {0}, 0, "", "flood", 5, 2, 0, 0, 0},
    {"ping_v2", KVMUX_FRAME_PING, 0, 0, {1, 2, 3, 4, 5, 6, 7, 8}, 8, "", {0}, 0, 2, 0, 0, 0},
    {"resp_out_of_memory", KVMUX_FRAME_RESPONSE, 2, KVMUX_STATUS_OUT_OF_MEMORY, {0}, 0, "",
     "out of memory", 13, 2, 0, 0, 0},
    /* ---- STATS ---- */
    {"req_stats", KVMUX_FRAME_REQUEST, 14, KVMUX_OP_STATS, {0}, 0, "", {0}, 0, V1},
    {"req_stats_prefix", KVMUX_FRAME_REQUEST, 15, KVMUX_OP_STATS, {0}, 0, "aof_", {0}, 0, V1},
    {"resp_stats_ok", KVMUX_FRAME_RESPONSE, 14, KVMUX_STATUS_OK, {0}, 0, "", "keys:3\n", 7, V1},
    /* ---- auth ---- */
    {"hello_auth", KVMUX_FRAME_HELLO, 0, 0, {1, 1}, 2, "cli",
     {SETTING(1, 2097152u), SETTING(2, 1024u), SETTING(3, 4096u), SETTING(4, 1048576u),
      SETTING(7, 6u), SETTING(8, 0x73336372u), SETTING(8, 0x65740000u)}, 42, V1},
    {"error_auth", KVMUX_FRAME_ERROR, 0, KVMUX_ERR_AUTH, {0}, 0, "", "invalid token", 13, V1},
    /* ---- key space (PROTOCOL.md 4.1) ---- */
    {"req_exists", KVMUX_FRAME_REQUEST, 0x10, KVMUX_OP_EXISTS, {0}, 0, "foo", {0}, 0, V1},
    {"resp_exists_ok", KVMUX_FRAME_RESPONSE, 0x10, KVMUX_STATUS_OK, {U64(7)}, 8, "", {0}, 0, V1},
    {"req_ttl", KVMUX_FRAME_REQUEST, 0x11, KVMUX_OP_TTL, {0}, 0, "foo", {0}, 0, V1},
    {"resp_ttl_ok", KVMUX_FRAME_RESPONSE, 0x11, KVMUX_STATUS_OK, {U64(7), U64(1500)}, 16, "",
     {0}, 0, V1},
    {"resp_ttl_none", KVMUX_FRAME_RESPONSE, 0x11, KVMUX_STATUS_OK, {U64(7), U64(0)}, 16, "",
     {0}, 0, V1},
    {"req_expire", KVMUX_FRAME_REQUEST, 0x12, KVMUX_OP_EXPIRE, {U64(60000)}, 8, "foo", {0}, 0,
     V1},
    {"resp_expire_ok", KVMUX_FRAME_RESPONSE, 0x12, KVMUX_STATUS_OK, {U64(8)}, 8, "", {0}, 0, V1},
    {"req_persist", KVMUX_FRAME_REQUEST, 0x13, KVMUX_OP_PERSIST, {0}, 0, "foo", {0}, 0, V1},
    {"resp_persist_not_found", KVMUX_FRAME_RESPONSE, 0x13, KVMUX_STATUS_NOT_FOUND, {0}, 0, "",
     {0}, 0, V1},
    {"req_scan", KVMUX_FRAME_REQUEST, 0x14, KVMUX_OP_SCAN, {U64(0), U32(10u)}, 12, "", {0}, 0,
     V1},
    {"req_scan_prefix", KVMUX_FRAME_REQUEST, 0x15, KVMUX_OP_SCAN,
     {U64(UINT64_C(0x0003000000000005)), U32(100u)}, 12, "user:", {0}, 0, V1},
    {"resp_scan_ok", KVMUX_FRAME_RESPONSE, 0x14, KVMUX_STATUS_OK,
     {U64(UINT64_C(0x0001000000000000))}, 8, "", {0, 3, 'f', 'o', 'o', 0, 3, 'b', 'a', 'r'}, 10,
     V1},
    {"resp_scan_done", KVMUX_FRAME_RESPONSE, 0x15, KVMUX_STATUS_OK, {U64(0)}, 8, "", {0}, 0, V1},
    {"req_expire_deadline", KVMUX_FRAME_REQUEST, 0x12, KVMUX_OP_EXPIRE, {U64(60000)}, 8, "foo",
     {0}, 0, 2, KVMUX_FLAG_DEADLINE, 100, 0},
    /* ---- introspection (PROTOCOL.md section 4.2) ---- */
    {"req_slowlog_get", KVMUX_FRAME_REQUEST, 0x16, KVMUX_OP_SLOWLOG,
     {U32(KVMUX_SLOWLOG_GET), U32(10u)}, 8, "", {0}, 0, V1},
    {"req_slowlog_len", KVMUX_FRAME_REQUEST, 0x17, KVMUX_OP_SLOWLOG,
     {U32(KVMUX_SLOWLOG_LEN), U32(0u)}, 8, "", {0}, 0, V1},
    {"req_slowlog_reset", KVMUX_FRAME_REQUEST, 0x18, KVMUX_OP_SLOWLOG,
     {U32(KVMUX_SLOWLOG_RESET), U32(0u)}, 8, "", {0}, 0, V1},
    {"resp_slowlog_get_ok", KVMUX_FRAME_RESPONSE, 0x16, KVMUX_STATUS_OK, {U64(3)}, 8, "",
     "id=7 time_ms=1796457991471 duration_us=15020 op=GET client=127.0.0.1:51032 key=foo\n",
     83, V1},
    {"resp_slowlog_len_ok", KVMUX_FRAME_RESPONSE, 0x17, KVMUX_STATUS_OK, {U64(3)}, 8, "", {0}, 0,
     V1},
    {"resp_slowlog_reset_ok", KVMUX_FRAME_RESPONSE, 0x18, KVMUX_STATUS_OK, {U64(3)}, 8, "", {0},
     0, V1},
    {"req_slowlog_bad_sub", KVMUX_FRAME_REQUEST, 0x1b, KVMUX_OP_SLOWLOG, {U32(9u), U32(0u)}, 8,
     "", {0}, 0, V1},
    {"req_client_list", KVMUX_FRAME_REQUEST, 0x19, KVMUX_OP_CLIENT_LIST, {0}, 0, "", {0}, 0, V1},
    {"resp_client_list_ok", KVMUX_FRAME_RESPONSE, 0x19, KVMUX_STATUS_OK, {U64(1)}, 8, "",
     "id=3 addr=127.0.0.1:51092 proto=2 in_flight=1 credits=1023 bytes_in=71 bytes_out=52 "
     "age_ms=1500 idle_ms=0 tls=0 loop=0 name=kvmux-cli\n",
     134, V1},
    {"req_client_list_deadline", KVMUX_FRAME_REQUEST, 0x1a, KVMUX_OP_CLIENT_LIST, {0}, 0, "",
     {0}, 0, 2, KVMUX_FLAG_DEADLINE, 1000, 0},
    /* ---- conformance (PROTOCOL.md section 14, "Conformance vectors") ---- */
    {"hello_reserved_nonzero", KVMUX_FRAME_HELLO, 7, 3, {1, 1}, 2, "cli",
     {SETTING(1, 2097152u), SETTING(2, 1024u), SETTING(3, 4096u), SETTING(4, 1048576u)}, 24, V1},
    {"cont_code_nonzero", KVMUX_FRAME_CONTINUATION, 2, 5, {0}, 0, "", "89", 2, 2, 0, 0, 0},
    {"hello_auth_len_zero", KVMUX_FRAME_HELLO, 0, 0, {1, 1}, 2, "cli",
     {SETTING(1, 2097152u), SETTING(2, 1024u), SETTING(3, 4096u), SETTING(4, 1048576u),
      SETTING(7, 0u)}, 30, V1},
    {"hello_v1_bad_window", KVMUX_FRAME_HELLO, 0, 0, {1, 1}, 2, "cli",
     {SETTING(1, 2097152u), SETTING(2, 1024u), SETTING(3, 4096u), SETTING(4, 1048576u),
      SETTING(5, 0u)}, 30, V1},
    {"hello_repeat_bad_first", KVMUX_FRAME_HELLO, 0, 0, {1, 1}, 2, "cli",
     {SETTING(2, 0u), SETTING(2, 16u)}, 12, V1},
    {"hello_auth_split", KVMUX_FRAME_HELLO, 0, 0, {1, 1}, 2, "cli",
     {SETTING(7, 6u), SETTING(2, 64u), SETTING(8, 0x73336372u), SETTING(8, 0x65740000u)}, 24, V1},
    {"error_id_in_use", KVMUX_FRAME_ERROR, 6, KVMUX_ERR_PROTOCOL, {0}, 0, "", "id in use", 9, V1},
    {"error_unexpected_frame", KVMUX_FRAME_ERROR, 0, KVMUX_ERR_UNEXPECTED_FRAME, {0}, 0, "",
     "unexpected", 10, V1},
    {"goaway_to_server", KVMUX_FRAME_GOAWAY, 5, 0, {U32(0u), U32(0u)}, 8, "", {0}, 0, 2, 0, 0, 0},
    {"resp_shutting_down_v2", KVMUX_FRAME_RESPONSE, 2, KVMUX_STATUS_SHUTTING_DOWN, {0}, 0, "",
     {0}, 0, 2, 0, 0, 0},
    /* v3 (docs/PROTOCOL.md section 17) */
    {"hello_v3", KVMUX_FRAME_HELLO, 0, 0, {1, 3}, 2, "cli",
     {SETTING(1, 2097152u), SETTING(2, 1024u), SETTING(3, 4096u), SETTING(4, 1048576u)}, 24,
     1, 0, 0, 0},
    {"resp_not_leader_v3", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_NOT_LEADER, {0}, 0, "",
     "127.0.0.1:7878", 14, 3, 0, 0, 0},
    {"resp_not_leader_empty_v3", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_NOT_LEADER, {0}, 0, "",
     {0}, 0, 3, 0, 0, 0},
    {"resp_outcome_unknown_v3", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_OUTCOME_UNKNOWN, {0}, 0,
     "", "outcome unknown", 15, 3, 0, 0, 0},
    {"resp_not_leader_v2", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_SHUTTING_DOWN, {0}, 0, "",
     "not the leader; the leader is 127.0.0.1:7878", 44, 2, 0, 0, 0},
    {"resp_outcome_unknown_v2", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_INTERNAL, {0}, 0, "",
     "outcome unknown", 15, 2, 0, 0, 0},
    /* v3 sessions (section 17.1) */
    {"hello_v3_session", KVMUX_FRAME_HELLO, 0, 0, {1, 3}, 2, "cli",
     {SETTING(1, 2097152u), SETTING(2, 1024u), SETTING(3, 4096u), SETTING(4, 1048576u),
      SETTING(9, 0x11223344u), SETTING(10, 0x55667788u)}, 36, 1, 0, 0, 0},
    {"req_incr_session_v3", KVMUX_FRAME_REQUEST, 7, KVMUX_OP_INCR, {U64(1)}, 8, "ctr", {0}, 0,
     3, KVMUX_FLAG_SESSION, 0, 0},
    {"req_set_deadline_session_v3", KVMUX_FRAME_REQUEST, 7, KVMUX_OP_SET, {U64(0)}, 8, "k", "v",
     1, 3, KVMUX_FLAG_SESSION | KVMUX_FLAG_DEADLINE, 1000, 0},
    /* v3 GROUP (docs/PROTOCOL.md section 17.3) */
    {"req_group_status_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_GROUP, {0}, 0, "status", {0}, 0,
     3, 0, 0, 0},
    {"req_group_add_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_GROUP, {0}, 0, "add",
     "4 127.0.0.1:7004 127.0.0.1:7881", 31, 3, 0, 0, 0},
    {"resp_group_ok_v3", KVMUX_FRAME_RESPONSE, 9, KVMUX_STATUS_OK, {U64(1)}, 8, "",
     "replica 4 is a voter", 20, 3, 0, 0, 0},
    {"req_get_stale_v3", KVMUX_FRAME_REQUEST, 1, KVMUX_OP_GET, {0}, 0, "foo", {0}, 0, 3,
     KVMUX_FLAG_DEADLINE | KVMUX_FLAG_STALE, 250, 0},
    {"resp_group_refused_v3", KVMUX_FRAME_RESPONSE, 9, KVMUX_STATUS_BAD_REQUEST, {0}, 0, "",
     "replica 4 is already a member", 29, 3, 0, 0, 0},
    /* v3 sharded cluster (docs/PROTOCOL.md section 18; the values are
     * checked field by field in tests/unit/cluster_test.c) */
    {"resp_wrong_shard_v3", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_WRONG_SHARD, {0}, 0, "",
     {0x2f, 0x96, U64(7), 0, 2, '1', '2', '7', '.', '0', '.', '0', '.', '1', ':', '7', '1', '0',
      '1', ',', '1', '2', '7', '.', '0', '.', '0', '.', '1', ':', '7', '1', '0', '2'},
     41, 3, 0, 0, 0},
    {"resp_wrong_shard_unassigned_v3", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_WRONG_SHARD, {0}, 0,
     "", {0, 42, U64(7), 0, 0}, 12, 3, 0, 0, 0},
    {"resp_try_again_v3", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_TRY_AGAIN, {0}, 0, "",
     {0x2f, 0x96, U64(0)}, 10, 3, 0, 0, 0},
    {"resp_wrong_shard_v2", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_SHUTTING_DOWN, {0}, 0, "",
     "wrong shard: slot 12182 is served by group 2 (127.0.0.1:7101,127.0.0.1:7102)", 76, 2, 0,
     0, 0},
    {"resp_try_again_v2", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_BUSY, {0}, 0, "",
     "slot 12182 is not available here yet; try again", 47, 2, 0, 0, 0},
    {"req_cluster_slot_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_CLUSTER, {0}, 0, "slot", "foo", 3,
     3, 0, 0, 0},
    {"resp_cluster_slot_v3", KVMUX_FRAME_RESPONSE, 9, KVMUX_STATUS_OK, {0}, 0, "", {0x2f, 0x96},
     2, 3, 0, 0, 0},
    {"req_cluster_map_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_CLUSTER, {0}, 0, "map", {0}, 0, 3, 0,
     0, 0},
    /* the map group (docs/PROTOCOL.md section 18.5) */
    {"req_cluster_watch_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_CLUSTER, {0}, 0, "watch",
     {U64(7), 0, 0, 0x13, 0x88}, 12, 3, 0, 0, 0},
    {"resp_cluster_setmap_gap_v3", KVMUX_FRAME_RESPONSE, 9, KVMUX_STATUS_VERSION_MISMATCH, {0}, 0,
     "", "epoch 9 is not the next epoch: the installed epoch is 7, so the next map must have "
     "epoch 8", 90, 3, 0, 0, 0},
    {"resp_map_group_keyed_v3", KVMUX_FRAME_RESPONSE, 7, KVMUX_STATUS_BAD_REQUEST, {0}, 0, "",
     "this is the cluster's map group: it holds the slot map and serves no keys", 73, 3, 0, 0, 0},
    /* Slot migration, the map group's table (PROTOCOL.md 18.6). */
    {"req_cluster_migrate_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_CLUSTER, {0}, 0, "migrate",
     "100-199 2", 9, 3, 0, 0, 0},
    {"req_cluster_mwatch_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_CLUSTER, {0}, 0, "mwatch",
     {U64(5), 0, 0, 0x13, 0x88}, 12, 3, 0, 0, 0},
    {"req_cluster_migrate_commit_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_CLUSTER, {0}, 0, "migrate-commit",
     {U32(7)}, 4, 3, 0, 0, 0},
    {"req_cluster_migrate_ack_v3", KVMUX_FRAME_REQUEST, 9, KVMUX_OP_CLUSTER, {0}, 0, "migrate-ack",
     {U32(7), 0, 2}, 6, 3, 0, 0, 0},
    {"resp_cluster_migrations_v3", KVMUX_FRAME_RESPONSE, 9, KVMUX_STATUS_OK, {0}, 0, "",
     {0x4b, 0x56, 0x4d, 0x47, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00,
      0x00, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x07, 0x00, 0x64, 0x00, 0xc7, 0x00, 0x01, 0x00,
      0x02, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x00, 0x00, 0x01,
      0x8b, 0xcf, 0xe5, 0x6b, 0xb8, 0x02, 0x6f, 0x70}, 68, 3, 0, 0, 0},
    {"resp_cluster_migrate_busy_v3", KVMUX_FRAME_RESPONSE, 9, KVMUX_STATUS_BUSY, {0}, 0, "",
     "group 1 is already the source of migration 7", 44, 3, 0, 0, 0},
};
#define NVECS (sizeof VECS / sizeof VECS[0])

static kvmux_frame vec_frame(const vec *v) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = v->version;
    f.type = v->type;
    f.flags = v->flags;
    f.deadline_ms = v->deadline_ms;
    if (v->type == KVMUX_FRAME_REQUEST && (v->flags & KVMUX_FLAG_SESSION))
        f.session_seq = VEC_SESSION_SEQ;
    f.total_value_len = v->total_value_len;
    f.min_version = vec_min_version(v->name);
    f.request_id = v->request_id;
    f.code = v->code;
    f.extras = v->extras;
    f.extras_len = v->extras_len;
    f.key = (const uint8_t *)v->key;
    f.key_len = (uint16_t)strlen(v->key);
    f.value = v->value;
    f.value_len = v->value_len;
    return f;
}

/* ---- vectors: the hex file ---- */

#define MAX_FILE_VECS 160
#define MAX_VEC_BYTES 256
typedef struct hexvec {
    char name[64];
    uint8_t bytes[MAX_VEC_BYTES];
    size_t len;
} hexvec;
static hexvec FILEVECS[MAX_FILE_VECS];
static size_t NFILEVECS;

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parse KVMUX_VECTORS_DIR/frames.hex: "name hex..." per line; only hex
 * digits after the name count. */
static void load_vectors(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/frames.hex", KVMUX_VECTORS_DIR);
    FILE *fp = fopen(path, "r");
    REQUIRE(fp != NULL);
    char line[2048];
    while (fgets(line, sizeof line, fp)) {
        if (line[0] == '#' || line[0] == '\n' || line[0] == '\0') continue;
        REQUIRE(NFILEVECS < MAX_FILE_VECS);
        hexvec *h = &FILEVECS[NFILEVECS++];
        char *sp = strchr(line, ' ');
        REQUIRE(sp != NULL && (size_t)(sp - line) < sizeof h->name);
        memcpy(h->name, line, (size_t)(sp - line));
        h->name[sp - line] = '\0';
        int hi = -1;
        for (char *p = sp; *p; p++) {
            int d = hexval((unsigned char)*p);
            if (d < 0) continue;
            if (hi < 0) {
                hi = d;
            } else {
                REQUIRE(h->len < MAX_VEC_BYTES);
                h->bytes[h->len++] = (uint8_t)(hi << 4 | d);
                hi = -1;
            }
        }
        REQUIRE(hi < 0); /* an odd digit count is a typo in the file */
    }
    fclose(fp);
}

static const hexvec *find_vec(const char *name) {
    for (size_t i = 0; i < NFILEVECS; i++)
        if (strcmp(FILEVECS[i].name, name) == 0) return &FILEVECS[i];
    return NULL;
}

static int frames_equal(const kvmux_frame *a, const kvmux_frame *b) {
    return a->version == b->version && a->type == b->type && a->flags == b->flags &&
           a->code == b->code && a->request_id == b->request_id &&
           a->extras_len == b->extras_len && a->key_len == b->key_len &&
           a->value_len == b->value_len && a->deadline_ms == b->deadline_ms &&
           a->total_value_len == b->total_value_len && a->session_seq == b->session_seq &&
           a->min_version == b->min_version &&
           (a->extras_len == 0 || memcmp(a->extras, b->extras, a->extras_len) == 0) &&
           (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0) &&
           (a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0);
}

/* Every vector: encode == bytes, decode(bytes) == fields, every proper
 * prefix (one byte at a time) needs more, and frame_size agrees. */
static void test_vectors_both_ways(void) {
    CHECK_EQ(NFILEVECS, NVECS);
    for (size_t i = 0; i < NVECS; i++) {
        const vec *v = &VECS[i];
        const hexvec *h = find_vec(v->name);
        if (!h) {
            fprintf(stderr, "vector %s missing from frames.hex\n", v->name);
            CHECK(h != NULL);
            continue;
        }
        kvmux_frame f = vec_frame(v);
        uint8_t enc[MAX_VEC_BYTES];
        CHECK_EQ(kvmux_frame_size(&f), h->len);
        size_t n = kvmux_frame_encode(enc, &f);
        CHECK_EQ(n, h->len);
        if (n != h->len || memcmp(enc, h->bytes, n) != 0) {
            fprintf(stderr, "vector %s: encode mismatch\n", v->name);
            CHECK(0);
        } else {
            CHECK(1);
        }
        uint8_t hdr[KVMUX_FRAME_HDR_LEN];
        kvmux_frame_encode_header(hdr, &f);
        CHECK(memcmp(hdr, h->bytes, KVMUX_FRAME_HDR_LEN) == 0);
        /* The head (all but the value) is the vector minus its value. */
        uint8_t head[KVMUX_FRAME_HEAD_MAX(64)];
        size_t hn = kvmux_frame_encode_head(head, &f);
        CHECK_EQ(hn, h->len - v->value_len);
        CHECK(memcmp(head, h->bytes, hn) == 0);

        kvmux_frame d;
        memset(&d, 0xA5, sizeof d);
        int r = kvmux_frame_decode(h->bytes, h->len, KVMUX_DEFAULT_MAX_FRAME, &d);
        CHECK_EQ(r, (long long)h->len);
        if (!frames_equal(&d, &f)) {
            fprintf(stderr, "vector %s: decode mismatch\n", v->name);
            CHECK(0);
        }
        /* Pointers point into the input buffer, not elsewhere; extras
         * start after the v2 prefixes. */
        CHECK(d.extras == h->bytes + KVMUX_FRAME_HDR_LEN + kvmux_frame_prefix_len(&f));
        CHECK(d.value + d.value_len == h->bytes + h->len);

        /* One byte at a time: every prefix is "need more" and leaves *out
         * untouched. */
        int bad = 0;
        for (size_t k = 0; k < h->len; k++) {
            kvmux_frame u;
            memset(&u, 0x5A, sizeof u);
            kvmux_frame before = u;
            if (kvmux_frame_decode(h->bytes, k, KVMUX_DEFAULT_MAX_FRAME, &u) != 0 ||
                memcmp(&u, &before, sizeof u) != 0)
                bad++;
        }
        CHECK_EQ(bad, 0);
        /* Extra trailing bytes are not consumed. */
        uint8_t two[2 * MAX_VEC_BYTES];
        memcpy(two, h->bytes, h->len);
        memcpy(two + h->len, h->bytes, h->len);
        CHECK_EQ(kvmux_frame_decode(two, 2 * h->len, KVMUX_DEFAULT_MAX_FRAME, &d),
                 (long long)h->len);
    }
}

/* The whole vector set as one stream, delivered to a reader in two chunks
 * split at every possible point (and also one byte at a time): the reader
 * must recover exactly the sequence of frames. Models an I/O layer that
 * appends to a buffer and decodes while frames are complete. */
static int stream_reader(const uint8_t *stream, size_t total, size_t split,
                         size_t step) {
    static uint8_t buf[NVECS * MAX_VEC_BYTES];
    size_t have = 0, start = 0, fed = 0, nframes = 0;
    while (fed < total) {
        size_t chunk = step ? step : (fed < split ? split - fed : total - fed);
        if (chunk > total - fed) chunk = total - fed;
        memcpy(buf + have, stream + fed, chunk);
        have += chunk;
        fed += chunk;
        for (;;) {
            kvmux_frame f;
            int r = kvmux_frame_decode(buf + start, have - start,
                                       KVMUX_DEFAULT_MAX_FRAME, &f);
            if (r < 0) return -1;
            if (r == 0) break;
            if (nframes >= NVECS) return -1;
            kvmux_frame want = vec_frame(&VECS[nframes]);
            if (!frames_equal(&f, &want)) return -1;
            nframes++;
            start += (size_t)r;
        }
    }
    return start == total && nframes == NVECS ? 0 : -1;
}

static void test_stream_split_points(void) {
    static uint8_t stream[NVECS * MAX_VEC_BYTES];
    size_t total = 0;
    for (size_t i = 0; i < NVECS; i++) {
        kvmux_frame f = vec_frame(&VECS[i]);
        total += kvmux_frame_encode(stream + total, &f);
    }
    int bad = 0;
    for (size_t split = 0; split <= total; split++)
        if (stream_reader(stream, total, split, 0) != 0) bad++;
    CHECK_EQ(bad, 0);
    CHECK_EQ(stream_reader(stream, total, 0, 1), 0);
    CHECK_EQ(stream_reader(stream, total, 0, 7), 0);
}

/* docs/PROTOCOL.md lists the same vectors (section 14): each as
 * "**name**: ..." then a fenced line of hex. Catch the two drifting apart. */
static void test_doc_matches_vectors(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/../../docs/PROTOCOL.md", KVMUX_VECTORS_DIR);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "cannot open %s\n", path);
        CHECK(fp != NULL);
        return;
    }
    static char doc[256 * 1024];
    size_t n = fread(doc, 1, sizeof doc - 1, fp);
    fclose(fp);
    doc[n] = '\0';
    size_t found = 0;
    for (size_t i = 0; i < NFILEVECS; i++) {
        const hexvec *h = &FILEVECS[i];
        char tag[80];
        snprintf(tag, sizeof tag, "**%.64s**:", h->name);
        const char *p = strstr(doc, tag);
        const char *fence = p ? strstr(p, "```\n") : NULL;
        if (!fence) {
            fprintf(stderr, "vector %s missing from PROTOCOL.md\n", h->name);
            continue;
        }
        uint8_t bytes[MAX_VEC_BYTES];
        size_t len = 0;
        int hi = -1;
        for (const char *q = fence + 4; *q && *q != '\n' && len < MAX_VEC_BYTES; q++) {
            int d = hexval((unsigned char)*q);
            if (d < 0) continue;
            if (hi < 0) {
                hi = d;
            } else {
                bytes[len++] = (uint8_t)(hi << 4 | d);
                hi = -1;
            }
        }
        if (len == h->len && memcmp(bytes, h->bytes, len) == 0)
            found++;
        else
            fprintf(stderr, "vector %s differs in PROTOCOL.md\n", h->name);
    }
    CHECK_EQ(found, NFILEVECS);
}

/* The server session's answer to a conformance vector's HELLO: the
 * HELLO_ACK length (> 0) or the negative wire error. max_version caps the
 * server as a v1 or v2 build. */
static int accept_vector(const char *name, uint8_t max_version, kvmux_session *s) {
    const hexvec *h = find_vec(name);
    if (!h) {
        fprintf(stderr, "vector %s missing\n", name);
        return -1000;
    }
    kvmux_frame f;
    if (kvmux_frame_decode(h->bytes, h->len, KVMUX_MIN_FRAME, &f) != (int)h->len) return -1001;
    kvmux_session_init(s, KVMUX_ROLE_SERVER, NULL);
    s->max_version = max_version;
    int rc = kvmux_session_check_recv(s, &f);
    if (rc < 0) return rc;
    uint8_t ack[KVMUX_HELLO_ACK_MAX_LEN];
    return kvmux_session_accept_hello(s, &f, ack, "srv");
}

/* The corner cases PROTOCOL.md decides (section 14, "Conformance"), at
 * the session and settings level; kvmuxd's side is in
 * tests/integration/conformance_test.c. */
static void test_conformance_vectors(void) {
    kvmux_session s;
    /* Reserved request_id and code of a HELLO are ignored. */
    CHECK(accept_vector("hello_reserved_nonzero", KVMUX_PROTO_VERSION_MAX, &s) > 0);
    /* AUTH_TOKEN_LEN out of range: not a setting the session knows, so
     * ignored (only a server with a token judges it, section 8.1). */
    CHECK(accept_vector("hello_auth_len_zero", KVMUX_PROTO_VERSION_MAX, &s) > 0);
    uint8_t tok[KVMUX_MAX_AUTH_TOKEN];
    const hexvec *h = find_vec("hello_auth_len_zero");
    kvmux_frame f;
    REQUIRE(h && kvmux_frame_decode(h->bytes, h->len, KVMUX_MIN_FRAME, &f) == (int)h->len);
    CHECK_EQ(kvmux_settings_auth_token(f.value, f.value_len, tok), -KVMUX_ERR_PROTOCOL);
    /* A v2 setting out of range in a HELLO offering only v1: ignored, by
     * a v2 build exactly as by a v1 build. */
    CHECK(accept_vector("hello_v1_bad_window", KVMUX_PROTO_VERSION_MAX, &s) > 0);
    CHECK_EQ(s.version, 1);
    CHECK(accept_vector("hello_v1_bad_window", 1, &s) > 0);
    /* ... but on a v2 connection it is PROTOCOL. */
    {
        kvmux_settings st;
        kvmux_settings_default(&st);
        uint8_t blk[6] = {0, KVMUX_SETTING_INITIAL_WINDOW, 0, 0, 0, 0};
        CHECK_EQ(kvmux_settings_decode_version(blk, 6, &st, 1), 0);
        CHECK_EQ(st.initial_window, KVMUX_DEFAULT_INITIAL_WINDOW);
        CHECK_EQ(kvmux_settings_decode_version(blk, 6, &st, 2), -KVMUX_ERR_PROTOCOL);
        blk[1] = KVMUX_SETTING_CONNECTION_WINDOW;
        CHECK_EQ(kvmux_settings_decode_version(blk, 6, &st, 1), 0);
        CHECK_EQ(kvmux_settings_decode_version(blk, 6, &st, 2), -KVMUX_ERR_PROTOCOL);
    }
    /* A repeated id: every entry is range-checked, the last valid one
     * does not excuse an earlier bad one. */
    CHECK_EQ(accept_vector("hello_repeat_bad_first", KVMUX_PROTO_VERSION_MAX, &s),
             -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(s.state, KVMUX_SESSION_CLOSED);
    /* Other settings between AUTH_TOKEN_LEN and the AUTH_TOKEN entries. */
    h = find_vec("hello_auth_split");
    REQUIRE(h && kvmux_frame_decode(h->bytes, h->len, KVMUX_MIN_FRAME, &f) == (int)h->len);
    CHECK_EQ(kvmux_settings_auth_token(f.value, f.value_len, tok), 6);
    CHECK(memcmp(tok, "s3cret", 6) == 0);
    CHECK(accept_vector("hello_auth_split", KVMUX_PROTO_VERSION_MAX, &s) > 0);
    CHECK_EQ(s.peer.max_outstanding, 64);
    /* A CONTINUATION's code is ignored: the session accepts it. */
    kvmux_session v2;
    REQUIRE(accept_vector("hello_reserved_nonzero", KVMUX_PROTO_VERSION_MAX, &v2) > 0);
    h = find_vec("cont_code_nonzero");
    REQUIRE(h && kvmux_frame_decode(h->bytes, h->len, KVMUX_MIN_FRAME, &f) == (int)h->len);
    CHECK_EQ(f.code, 5);
    v2.version = 2; /* as if v2 had been negotiated */
    CHECK_EQ(kvmux_session_check_recv(&v2, &f), 0);
    /* GOAWAY with an id, sent to a server: direction first. */
    h = find_vec("goaway_to_server");
    REQUIRE(h && kvmux_frame_decode(h->bytes, h->len, KVMUX_MIN_FRAME, &f) == (int)h->len);
    CHECK_EQ(kvmux_session_check_recv(&v2, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    /* A HELLO_ACK sent to a server after the handshake: direction first. */
    h = find_vec("hello_ack");
    REQUIRE(h && kvmux_frame_decode(h->bytes, h->len, KVMUX_MIN_FRAME, &f) == (int)h->len);
    CHECK_EQ(kvmux_session_check_recv(&v2, &f), -KVMUX_ERR_UNEXPECTED_FRAME);
    /* A client PING with id 0 is a valid PING (the ping vector). */
    h = find_vec("ping");
    REQUIRE(h && kvmux_frame_decode(h->bytes, h->len, KVMUX_MIN_FRAME, &f) == (int)h->len);
    CHECK_EQ(f.request_id, 0);
    kvmux_session one;
    REQUIRE(accept_vector("hello", KVMUX_PROTO_VERSION_MAX, &one) > 0);
    CHECK_EQ(kvmux_session_check_recv(&one, &f), 0);
    /* Every legal handshake frame fits the 4096 bytes that apply before
     * the handshake (section 8): the largest HELLO and ERROR. */
    CHECK(KVMUX_HELLO_AUTH_MAX_LEN <= KVMUX_MIN_FRAME);
    CHECK(KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG <= KVMUX_MIN_FRAME);
}

/* The auth entries (PROTOCOL.md 8.1): encode/extract round trip for every
 * length, the vector, and each malformed shape. */
static void test_auth_settings(void) {
    uint8_t tok[KVMUX_MAX_AUTH_TOKEN], got[KVMUX_MAX_AUTH_TOKEN];
    uint8_t blk[24 + KVMUX_AUTH_SETTINGS_MAX_LEN];
    for (size_t i = 0; i < sizeof tok; i++) tok[i] = (uint8_t)(0xA0 + i);
    int ok = 1;
    for (size_t len = 1; len <= KVMUX_MAX_AUTH_TOKEN; len++) {
        kvmux_settings s;
        kvmux_settings_default(&s);
        size_t n = kvmux_settings_encode(blk, &s);
        size_t a = kvmux_settings_encode_auth(blk + n, tok, len);
        if (a != 6 * (1 + (len + 3) / 4) || a > KVMUX_AUTH_SETTINGS_MAX_LEN) ok = 0;
        memset(got, 0, sizeof got);
        if (kvmux_settings_auth_token(blk, n + a, got) != (int)len) ok = 0;
        if (memcmp(got, tok, len) != 0) ok = 0;
        /* Servers without auth ignore the entries. */
        kvmux_settings t;
        kvmux_settings_default(&t);
        if (kvmux_settings_decode(blk, n + a, &t) != 0 || t.max_frame_size != s.max_frame_size)
            ok = 0;
    }
    CHECK(ok);
    CHECK_EQ(kvmux_settings_encode_auth(blk, tok, 0), 0);
    /* The session encoder: a v2 HELLO with a 64-byte token decodes, keeps
     * its settings, and carries the token. */
    {
        kvmux_session cs;
        kvmux_settings st;
        kvmux_settings_default(&st);
        st.initial_window = 65536; /* non-default windows: the longest block */
        st.connection_window = 1u << 20;
        kvmux_session_init(&cs, KVMUX_ROLE_CLIENT, &st);
        uint8_t hb[KVMUX_HELLO_AUTH_MAX_LEN];
        char name[KVMUX_MAX_NAME + 1];
        memset(name, 'n', KVMUX_MAX_NAME);
        name[KVMUX_MAX_NAME] = '\0';
        size_t hn = kvmux_session_encode_hello_auth(&cs, hb, name, tok, KVMUX_MAX_AUTH_TOKEN);
        CHECK(hn > 0 && hn <= sizeof hb);
        kvmux_frame hf;
        CHECK_EQ(kvmux_frame_decode(hb, hn, KVMUX_DEFAULT_MAX_FRAME, &hf), (int)hn);
        CHECK_EQ(kvmux_settings_auth_token(hf.value, hf.value_len, got), (int)KVMUX_MAX_AUTH_TOKEN);
        CHECK(memcmp(got, tok, KVMUX_MAX_AUTH_TOKEN) == 0);
        kvmux_settings t;
        kvmux_settings_default(&t);
        CHECK_EQ(kvmux_settings_decode(hf.value, hf.value_len, &t), 0);
        CHECK_EQ(t.initial_window, 65536);
        kvmux_session_init(&cs, KVMUX_ROLE_CLIENT, &st);
        CHECK_EQ(kvmux_session_encode_hello_auth(&cs, hb, "c", tok, KVMUX_MAX_AUTH_TOKEN + 1), 0);
    }
    CHECK_EQ(kvmux_settings_encode_auth(blk, tok, KVMUX_MAX_AUTH_TOKEN + 1), 0);
    const hexvec *h = find_vec("hello_auth");
    REQUIRE(h != NULL);
    kvmux_frame f;
    REQUIRE(kvmux_frame_decode(h->bytes, h->len, KVMUX_DEFAULT_MAX_FRAME, &f) == (int)h->len);
    CHECK_EQ(kvmux_settings_auth_token(f.value, f.value_len, got), 6);
    CHECK(memcmp(got, "s3cret", 6) == 0);
    /* No entries: 0. */
    CHECK_EQ(kvmux_settings_auth_token(f.value, 24, got), 0);
    /* Malformed: token entry before the length, a short token, a second
     * length, non-zero padding, a length over the maximum. */
    uint8_t bad[5][18] = {
        {0, 8, 1, 2, 3, 4, 0, 7, 0, 0, 0, 4, 0, 8, 1, 2, 3, 4},
        {0, 7, 0, 0, 0, 5, 0, 8, 1, 2, 3, 4, 0, 9, 0, 0, 0, 0},
        {0, 7, 0, 0, 0, 4, 0, 7, 0, 0, 0, 4, 0, 8, 1, 2, 3, 4},
        {0, 7, 0, 0, 0, 3, 0, 8, 1, 2, 3, 4, 0, 9, 0, 0, 0, 0},
        {0, 7, 0, 0, 0, 65, 0, 8, 1, 2, 3, 4, 0, 9, 0, 0, 0, 0},
    };
    for (int i = 0; i < 5; i++) CHECK_EQ(kvmux_settings_auth_token(bad[i], 18, got), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(kvmux_settings_auth_token(bad[0], 17, got), -KVMUX_ERR_BAD_LENGTH);
}

/* ---- guard page ---- */

typedef struct guard {
    uint8_t *base;
    size_t page;
} guard;

static void guard_init(guard *g) {
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, 2 * g->page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
    g->base = p;
    REQUIRE(mprotect(g->base + g->page, g->page, PROT_NONE) == 0);
}

/* Copy src[0..n) so that it ends exactly at the guard page; return it. */
static uint8_t *guard_place(guard *g, const uint8_t *src, size_t n) {
    uint8_t *dst = g->base + g->page - n;
    if (n) memcpy(dst, src, n);
    return dst;
}

/* Every prefix of every vector, and of malformed inputs, ends at a
 * PROT_NONE page: an over-read would SIGSEGV. */
static void test_guard_page(void) {
    guard g;
    guard_init(&g);
    int bad = 0;
    for (size_t i = 0; i < NFILEVECS; i++) {
        const hexvec *h = &FILEVECS[i];
        for (size_t k = 0; k <= h->len; k++) {
            kvmux_frame f;
            uint8_t *p = guard_place(&g, h->bytes, k);
            int r = kvmux_frame_decode(p, k, KVMUX_DEFAULT_MAX_FRAME, &f);
            if (r != (k == h->len ? (int)h->len : 0)) bad++;
        }
    }
    CHECK_EQ(bad, 0);
    /* A zero-length input right at the guard. */
    kvmux_frame f;
    CHECK_EQ(kvmux_frame_decode(g.base + g.page, 0, KVMUX_DEFAULT_MAX_FRAME, &f), 0);
    /* A header claiming a body that is not there: need more, no read. */
    const hexvec *h = find_vec("req_set");
    REQUIRE(h);
    uint8_t *p = guard_place(&g, h->bytes, KVMUX_FRAME_HDR_LEN);
    CHECK_EQ(kvmux_frame_decode(p, KVMUX_FRAME_HDR_LEN, KVMUX_DEFAULT_MAX_FRAME, &f), 0);
    /* Malformed single bytes at the guard. */
    uint8_t one = 0x00;
    p = guard_place(&g, &one, 1);
    CHECK_EQ(kvmux_frame_decode(p, 1, KVMUX_DEFAULT_MAX_FRAME, &f), -KVMUX_ERR_BAD_MAGIC);
    munmap(g.base, 2 * g.page);
}

/* ---- malformed headers ---- */

/* A valid REQUEST header (GET, key 3, no body yet) to mutate. */
static void base_header(uint8_t h[KVMUX_FRAME_HDR_LEN], uint8_t type, uint8_t extras,
                        uint16_t key, uint32_t body) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = 1;
    f.type = type;
    f.request_id = 42;
    f.code = KVMUX_OP_GET;
    kvmux_frame_encode_header(h, &f);
    h[9] = extras;
    kvmux_store_u16be(h + 10, key);
    kvmux_store_u32be(h + 12, body);
}

/* Decode h with exactly n bytes available, rest guarded. */
static int decode_n(const uint8_t *h, size_t n, uint32_t max_frame) {
    static guard g;
    if (!g.base) guard_init(&g);
    kvmux_frame f;
    return kvmux_frame_decode(guard_place(&g, h, n), n, max_frame, &f);
}

static void test_bad_magic(void) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, 3);
    for (int m = 0; m < 256; m++) {
        if (m == KVMUX_MAGIC) continue;
        h[0] = (uint8_t)m;
        /* Reported after the first byte, and with any longer prefix. */
        if (decode_n(h, 1, KVMUX_DEFAULT_MAX_FRAME) != -KVMUX_ERR_BAD_MAGIC ||
            decode_n(h, KVMUX_FRAME_HDR_LEN, KVMUX_DEFAULT_MAX_FRAME) != -KVMUX_ERR_BAD_MAGIC) {
            CHECK_EQ(m, -1);
            return;
        }
    }
    CHECK(1);
    h[0] = KVMUX_MAGIC;
    CHECK_EQ(decode_n(h, 1, KVMUX_DEFAULT_MAX_FRAME), 0);
}

static void test_bad_version(void) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, 3);
    int bad = 0;
    for (int v = 0; v < 256; v++) {
        h[1] = (uint8_t)v;
        int ok = v >= 1 && v <= KVMUX_PROTO_CODEC_MAX;
        int want = ok ? 0 : -KVMUX_ERR_BAD_VERSION;
        if (decode_n(h, 2, KVMUX_DEFAULT_MAX_FRAME) != want) bad++;
        if (!ok && decode_n(h, KVMUX_FRAME_HDR_LEN, KVMUX_DEFAULT_MAX_FRAME) != want) bad++;
    }
    CHECK_EQ(bad, 0);
    h[1] = 0;
    CHECK_EQ(decode_n(h, 2, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_VERSION);
    h[1] = 2;
    CHECK_EQ(decode_n(h, 2, KVMUX_DEFAULT_MAX_FRAME), 0); /* v2 is spoken */
    h[1] = KVMUX_PROTO_V3;
    CHECK_EQ(decode_n(h, 2, KVMUX_DEFAULT_MAX_FRAME), 0); /* v3 = v2 frames */
    h[1] = KVMUX_PROTO_CODEC_MAX + 1;
    CHECK_EQ(decode_n(h, 2, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_VERSION);
    h[1] = 255;
    CHECK_EQ(decode_n(h, 2, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_VERSION);
}

static void test_bad_type(void) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, 3);
    /* Each v2-only type explicitly, in a version-1 header. */
    for (int t = KVMUX_FRAME_CANCEL; t <= KVMUX_FRAME_CONTINUATION; t++) {
        h[2] = (uint8_t)t;
        CHECK_EQ(decode_n(h, 3, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_TYPE);
        CHECK_EQ(decode_n(h, KVMUX_FRAME_HDR_LEN, KVMUX_DEFAULT_MAX_FRAME),
                 -KVMUX_ERR_BAD_TYPE);
    }
    h[2] = 0;
    CHECK_EQ(decode_n(h, 3, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_TYPE);
    int bad = 0;
    for (int t = 12; t < 256; t++) {
        h[2] = (uint8_t)t;
        if (decode_n(h, 3, KVMUX_DEFAULT_MAX_FRAME) != -KVMUX_ERR_BAD_TYPE) bad++;
    }
    CHECK_EQ(bad, 0);
    for (int t = 1; t <= 7; t++) {
        h[2] = (uint8_t)t;
        CHECK_EQ(decode_n(h, 3, KVMUX_DEFAULT_MAX_FRAME), 0);
    }
}

static void test_bad_flags(void) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    for (int type = KVMUX_FRAME_HELLO; type <= KVMUX_FRAME_PONG; type++) {
        base_header(h, (uint8_t)type, 0, 0, 0);
        for (int bit = 0; bit < 8; bit++) {
            h[3] = (uint8_t)(1u << bit);
            CHECK_EQ(decode_n(h, 4, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_FLAGS);
            CHECK_EQ(decode_n(h, KVMUX_FRAME_HDR_LEN, KVMUX_DEFAULT_MAX_FRAME),
                     -KVMUX_ERR_BAD_FLAGS);
        }
        h[3] = 0xFF;
        CHECK_EQ(decode_n(h, 4, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_FLAGS);
    }
}

/* Length errors are reported once the 16 header bytes are in, before any
 * body byte: the caller never has to buffer a bad frame's body. */
static void test_bad_lengths(void) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    /* extras_len + key_len > body_len */
    base_header(h, KVMUX_FRAME_REQUEST, 8, 3, 10);
    CHECK_EQ(decode_n(h, 15, KVMUX_DEFAULT_MAX_FRAME), 0);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_RESPONSE, 0, 1, 0);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_REQUEST, 0, 65535, 65534);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_REQUEST, 8, 3, 11);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0); /* exactly fits */

    /* extras over KVMUX_MAX_EXTRAS, on REQUEST and RESPONSE */
    base_header(h, KVMUX_FRAME_REQUEST, KVMUX_MAX_EXTRAS + 1, 0, 100);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_RESPONSE, 255, 0, 1000);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_RESPONSE, KVMUX_MAX_EXTRAS, 0, KVMUX_MAX_EXTRAS);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0);

    /* body over max_frame, from the header alone */
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, KVMUX_DEFAULT_MAX_FRAME);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_FRAME_TOO_LARGE);
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, KVMUX_DEFAULT_MAX_FRAME - KVMUX_FRAME_HDR_LEN);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0); /* exactly max: ok */
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, KVMUX_DEFAULT_MAX_FRAME - KVMUX_FRAME_HDR_LEN + 1);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_FRAME_TOO_LARGE);
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, 0xFFFFFFFFu); /* no u32 wrap */
    CHECK_EQ(decode_n(h, 16, 0xFFFFFFFFu), -KVMUX_ERR_FRAME_TOO_LARGE);
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, 0xFFFFFFF0u); /* 2^32 total */
    CHECK_EQ(decode_n(h, 16, 0xFFFFFFFFu), -KVMUX_ERR_FRAME_TOO_LARGE);
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, 100);
    CHECK_EQ(decode_n(h, 16, 64), -KVMUX_ERR_FRAME_TOO_LARGE);
    CHECK_EQ(decode_n(h, 16, 116), 0);
}

static void test_bad_shapes(void) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    /* HELLO: extras must be 2. */
    base_header(h, KVMUX_FRAME_HELLO, 0, 0, 0);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_HELLO, 3, 0, 3);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_HELLO, 2, 0, 2);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0);
    /* HELLO_ACK: extras must be 0. */
    base_header(h, KVMUX_FRAME_HELLO_ACK, 2, 0, 2);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_HELLO_ACK, 0, 0, 0);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 16); /* complete, empty */
    /* Name over KVMUX_MAX_NAME. */
    base_header(h, KVMUX_FRAME_HELLO, 2, KVMUX_MAX_NAME + 1, 2 + KVMUX_MAX_NAME + 1);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_HELLO_ACK, 0, KVMUX_MAX_NAME + 1, KVMUX_MAX_NAME + 1);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_HELLO_ACK, 0, KVMUX_MAX_NAME, KVMUX_MAX_NAME);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0);
    /* Settings not whole entries, or too many. */
    for (uint32_t v = 1; v < KVMUX_SETTING_ENTRY_LEN; v++) {
        base_header(h, KVMUX_FRAME_HELLO, 2, 0, 2 + 6 + v);
        CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
        base_header(h, KVMUX_FRAME_HELLO_ACK, 0, 0, v);
        CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    }
    base_header(h, KVMUX_FRAME_HELLO, 2, 3, 2 + 3 + 6 * (KVMUX_MAX_SETTINGS + 1));
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_HELLO_ACK, 0, 3, 3 + 6 * (KVMUX_MAX_SETTINGS + 1));
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_HELLO, 2, 3, 2 + 3 + 6 * KVMUX_MAX_SETTINGS);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0);
    /* PING / PONG: extras exactly 8, nothing else. */
    for (int t = KVMUX_FRAME_PING; t <= KVMUX_FRAME_PONG; t++) {
        base_header(h, (uint8_t)t, 7, 0, 7);
        CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
        base_header(h, (uint8_t)t, 9, 0, 9);
        CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
        base_header(h, (uint8_t)t, 8, 1, 9);
        CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
        base_header(h, (uint8_t)t, 8, 0, 9);
        CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
        base_header(h, (uint8_t)t, 8, 0, 8);
        CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0);
    }
    /* ERROR: no extras, no key, message <= KVMUX_MAX_ERROR_MSG. */
    base_header(h, KVMUX_FRAME_ERROR, 1, 0, 1);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_ERROR, 0, 1, 1);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_ERROR, 0, 0, KVMUX_MAX_ERROR_MSG + 1);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
    base_header(h, KVMUX_FRAME_ERROR, 0, 0, KVMUX_MAX_ERROR_MSG);
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0);
    /* REQUEST / RESPONSE: opcode and status values are not the decoder's
     * business (the server answers UNKNOWN_OP; the client decides). */
    base_header(h, KVMUX_FRAME_REQUEST, 0, 3, 3);
    h[8] = 200;
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 0);
    base_header(h, KVMUX_FRAME_RESPONSE, 0, 0, 0);
    h[8] = 200;
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), 16);
}

/* Header fields are checked in byte order: with several bad fields, the
 * first one present is the one reported. */
static void test_check_order(void) {
    uint8_t h[KVMUX_FRAME_HDR_LEN] = {0x00, 0x00, 0x00, 0xFF};
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_MAGIC);
    h[0] = KVMUX_MAGIC;
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_VERSION);
    h[1] = 1;
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_TYPE);
    h[2] = KVMUX_FRAME_PING;
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_FLAGS);
    h[3] = 0;
    CHECK_EQ(decode_n(h, 16, KVMUX_DEFAULT_MAX_FRAME), -KVMUX_ERR_BAD_LENGTH);
}

/* ---- error encoder, names, settings ---- */

static void test_encode_error(void) {
    uint8_t out[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG];
    kvmux_frame f;
    size_t n = kvmux_encode_error(out, 1, 10, KVMUX_ERR_BAD_LENGTH, "bad length");
    const hexvec *h = find_vec("error_bad_length");
    REQUIRE(h);
    CHECK(n == h->len && memcmp(out, h->bytes, n) == 0);

    n = kvmux_encode_error(out, 1, 0, KVMUX_ERR_INTERNAL, NULL);
    CHECK_EQ(n, KVMUX_FRAME_HDR_LEN);
    CHECK_EQ(kvmux_frame_decode(out, n, KVMUX_DEFAULT_MAX_FRAME, &f), (long long)n);
    CHECK_EQ(f.value_len, 0);

    /* Truncated to the limit, and the result still decodes. */
    static char big[3000];
    memset(big, 'x', sizeof big - 1);
    n = kvmux_encode_error(out, 1, 7, KVMUX_ERR_PROTOCOL, big);
    CHECK_EQ(n, KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG);
    CHECK_EQ(kvmux_frame_decode(out, n, KVMUX_DEFAULT_MAX_FRAME, &f), (long long)n);
    CHECK_EQ(f.request_id, 7);
    CHECK_EQ(f.code, KVMUX_ERR_PROTOCOL);

    /* Truncation does not split a UTF-8 sequence: a 2-byte char straddling
     * the limit is dropped whole. */
    memset(big, 'x', sizeof big);
    big[KVMUX_MAX_ERROR_MSG - 1] = (char)0xC3;
    big[KVMUX_MAX_ERROR_MSG] = (char)0xA9;
    big[KVMUX_MAX_ERROR_MSG + 1] = '\0';
    n = kvmux_encode_error(out, 1, 0, KVMUX_ERR_PROTOCOL, big);
    CHECK_EQ(n, KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG - 1);
    /* ...but one ending exactly at the limit is kept. */
    big[KVMUX_MAX_ERROR_MSG - 2] = (char)0xC3;
    big[KVMUX_MAX_ERROR_MSG - 1] = (char)0xA9;
    big[KVMUX_MAX_ERROR_MSG] = 'x';
    n = kvmux_encode_error(out, 1, 0, KVMUX_ERR_PROTOCOL, big);
    CHECK_EQ(n, KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG);
}

static void test_names(void) {
    CHECK(strcmp(kvmux_wire_error_name(KVMUX_ERR_FRAME_TOO_LARGE), "FRAME_TOO_LARGE") == 0);
    CHECK(strcmp(kvmux_wire_error_name(-KVMUX_ERR_BAD_MAGIC), "BAD_MAGIC") == 0);
    CHECK(strcmp(kvmux_wire_error_name(0), "?") == 0);
    CHECK(strcmp(kvmux_wire_error_name(KVMUX_ERR_MAX + 1), "?") == 0);
    for (int c = 1; c <= KVMUX_ERR_MAX; c++) CHECK(strcmp(kvmux_wire_error_name(c), "?") != 0);
    CHECK(strcmp(kvmux_status_name(KVMUX_STATUS_NOT_FOUND), "NOT_FOUND") == 0);
    for (int c = 0; c <= KVMUX_STATUS_MAX; c++)
        CHECK(strcmp(kvmux_status_name(c), "?") != 0);
    CHECK(strcmp(kvmux_status_name(99), "?") == 0);
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_GET), "GET") == 0);
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_WAIT), "WAIT") == 0);
    CHECK(strcmp(kvmux_opcode_name(0), "?") == 0);
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_MAX + 1), "?") == 0);
    CHECK(strcmp(kvmux_frame_type_name(KVMUX_FRAME_HELLO), "HELLO") == 0);
    CHECK(strcmp(kvmux_frame_type_name(KVMUX_FRAME_GOAWAY), "GOAWAY") == 0);
    CHECK(strcmp(kvmux_frame_type_name(12), "?") == 0);

    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_GET), 0);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_SET), 8);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_DEL), 0);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_INCR), 8);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_CAS), 16);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_WAIT), 12);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_STATS), 0);
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_STATS), "STATS") == 0);
    CHECK_EQ(kvmux_request_key_required(KVMUX_OP_STATS), 0);
    CHECK_EQ(kvmux_request_key_required(KVMUX_OP_GET), 1);
    CHECK(strcmp(kvmux_wire_error_name(KVMUX_ERR_AUTH), "AUTH") == 0);
    CHECK_EQ(kvmux_request_extras_len(0), -1);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_EXISTS), 0);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_TTL), 0);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_EXPIRE), 8);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_PERSIST), 0);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_SCAN), 12);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_MAX + 1), -1);
    CHECK_EQ(kvmux_request_key_required(KVMUX_OP_SCAN), 0);
    CHECK_EQ(kvmux_request_key_required(KVMUX_OP_EXPIRE), 1);
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_SCAN), "SCAN") == 0);
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_PERSIST), "PERSIST") == 0);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_SLOWLOG), 8);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_CLIENT_LIST), 0);
    CHECK_EQ(kvmux_request_key_required(KVMUX_OP_SLOWLOG), 0);
    CHECK_EQ(kvmux_request_key_required(KVMUX_OP_CLIENT_LIST), 0);
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_SLOWLOG), "SLOWLOG") == 0);
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_CLIENT_LIST), "CLIENT_LIST") == 0);
    /* Every vector's request extras agree with the table. */
    for (size_t i = 0; i < NVECS; i++)
        if (VECS[i].type == KVMUX_FRAME_REQUEST)
            CHECK_EQ(kvmux_request_extras_len(VECS[i].code), VECS[i].extras_len);
}

/* The SCAN key list: the resp_scan_ok vector's value walks to its two
 * keys; every truncation of it is refused, never read past. */
static void test_scan_key_list(void) {
    uint8_t buf[64];
    size_t off = 0;
    kvmux_scan_put_key(buf, &off, (const uint8_t *)"foo", 3);
    kvmux_scan_put_key(buf, &off, (const uint8_t *)"bar", 3);
    CHECK_EQ(off, 10);
    CHECK(memcmp(buf, "\x00\x03" "foo" "\x00\x03" "bar", 10) == 0);
    CHECK_EQ(kvmux_scan_count_keys(buf, 10), 2);
    size_t o = 0;
    const uint8_t *k;
    uint16_t kl;
    CHECK_EQ(kvmux_scan_next_key(buf, 10, &o, &k, &kl), 1);
    CHECK(kl == 3 && memcmp(k, "foo", 3) == 0);
    CHECK_EQ(kvmux_scan_next_key(buf, 10, &o, &k, &kl), 1);
    CHECK(kl == 3 && memcmp(k, "bar", 3) == 0);
    CHECK_EQ(kvmux_scan_next_key(buf, 10, &o, &k, &kl), 0);
    CHECK_EQ(kvmux_scan_count_keys(buf, 0), 0);
    for (size_t cut = 1; cut < 10; cut++)
        CHECK_EQ(kvmux_scan_count_keys(buf, cut),
                 cut == 5 ? 1 : -KVMUX_ERR_BAD_LENGTH);
    /* An empty key is a valid entry (the store never has one, but the
     * list format does not care). */
    off = 0;
    kvmux_scan_put_key(buf, &off, NULL, 0);
    CHECK_EQ(kvmux_scan_count_keys(buf, off), 1);
}

static void test_settings(void) {
    kvmux_settings s, t;
    kvmux_settings_default(&s);
    CHECK_EQ(s.max_frame_size, KVMUX_DEFAULT_MAX_FRAME);
    CHECK_EQ(s.max_outstanding, KVMUX_DEFAULT_MAX_OUTSTANDING);
    CHECK_EQ(s.max_key_size, KVMUX_DEFAULT_MAX_KEY);
    CHECK_EQ(s.max_value_size, KVMUX_DEFAULT_MAX_VALUE);

    uint8_t buf[6 * (KVMUX_MAX_SETTINGS + 1)];
    s.max_frame_size = 8192;
    s.max_outstanding = 3;
    s.max_key_size = 100;
    s.max_value_size = 7;
    size_t n = kvmux_settings_encode(buf, &s);
    CHECK_EQ(n, 24);
    kvmux_settings_default(&t);
    CHECK_EQ(kvmux_settings_decode(buf, n, &t), 0);
    CHECK(memcmp(&s, &t, sizeof s) == 0);

    /* Absent entries keep their value; unknown ids are ignored; a repeated
     * id takes the last value. */
    uint8_t some[18] = {0, 2, U32(5u), 0x12, 0x34, U32(99u), 0, 2, U32(6u)};
    kvmux_settings_default(&t);
    CHECK_EQ(kvmux_settings_decode(some, sizeof some, &t), 0);
    CHECK_EQ(t.max_outstanding, 6);
    CHECK_EQ(t.max_frame_size, KVMUX_DEFAULT_MAX_FRAME);
    CHECK_EQ(kvmux_settings_decode(some, 0, &t), 0);

    /* Bad lengths and too many entries; t unchanged. */
    kvmux_settings_default(&t);
    kvmux_settings before = t;
    for (size_t len = 1; len < 6; len++)
        CHECK_EQ(kvmux_settings_decode(buf, len, &t), -KVMUX_ERR_BAD_LENGTH);
    CHECK_EQ(kvmux_settings_decode(buf, 25, &t), -KVMUX_ERR_BAD_LENGTH);
    memset(buf, 0, sizeof buf); /* id 0: unknown, ignored */
    CHECK_EQ(kvmux_settings_decode(buf, 6 * KVMUX_MAX_SETTINGS, &t), 0);
    CHECK_EQ(kvmux_settings_decode(buf, 6 * (KVMUX_MAX_SETTINGS + 1), &t),
             -KVMUX_ERR_BAD_LENGTH);
    CHECK(memcmp(&t, &before, sizeof t) == 0);

    /* Out-of-range values, with a good entry first: nothing applied. */
    uint8_t r1[12] = {0, 2, U32(9u), 0, 1, U32(KVMUX_MIN_FRAME - 1)};
    CHECK_EQ(kvmux_settings_decode(r1, 12, &t), -KVMUX_ERR_PROTOCOL);
    uint8_t r2[6] = {0, 2, U32(0u)};
    CHECK_EQ(kvmux_settings_decode(r2, 6, &t), -KVMUX_ERR_PROTOCOL);
    uint8_t r3[6] = {0, 3, U32(0u)};
    CHECK_EQ(kvmux_settings_decode(r3, 6, &t), -KVMUX_ERR_PROTOCOL);
    uint8_t r4[6] = {0, 3, U32(65536u)};
    CHECK_EQ(kvmux_settings_decode(r4, 6, &t), -KVMUX_ERR_PROTOCOL);
    CHECK(memcmp(&t, &before, sizeof t) == 0);
    uint8_t ok[12] = {0, 1, U32(KVMUX_MIN_FRAME), 0, 3, U32(65535u)};
    CHECK_EQ(kvmux_settings_decode(ok, 12, &t), 0);
    CHECK_EQ(t.max_frame_size, KVMUX_MIN_FRAME);
    CHECK_EQ(t.max_key_size, 65535);
}

static void test_negotiate(void) {
    CHECK_EQ(kvmux_negotiate_version(1, 1, 1, 1), 1);
    CHECK_EQ(kvmux_negotiate_version(1, 5, 1, 1), 1);
    CHECK_EQ(kvmux_negotiate_version(1, 5, 2, 3), 3);
    CHECK_EQ(kvmux_negotiate_version(3, 5, 1, 4), 4);
    CHECK_EQ(kvmux_negotiate_version(2, 3, 1, 1), 0);
    CHECK_EQ(kvmux_negotiate_version(1, 1, 2, 3), 0);
    CHECK_EQ(kvmux_negotiate_version(3, 2, 1, 5), 0); /* empty client range */
    CHECK_EQ(kvmux_negotiate_version(0, 0, 0, 5), 0); /* 0 is not a version */
    CHECK_EQ(kvmux_negotiate_version(0, 1, 1, 1), 1);
}

int main(void) {
    load_vectors();
    test_vectors_both_ways();
    test_stream_split_points();
    test_doc_matches_vectors();
    test_auth_settings();
    test_conformance_vectors();
    test_guard_page();
    test_bad_magic();
    test_bad_version();
    test_bad_type();
    test_bad_flags();
    test_bad_lengths();
    test_bad_shapes();
    test_check_order();
    test_encode_error();
    test_names();
    test_settings();
    test_scan_key_list();
    test_negotiate();
    return test_report();
}
