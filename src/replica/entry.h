/* A replicated log entry: a batch of write commands (everything one loop
 * iteration of the leader gathered), sans-IO. No allocation, no clock, no
 * I/O: encoders write into buffers the caller sized with the *_size
 * functions; the decoder reads a buffer and validates every length before
 * use, so any bytes (a corrupt log, a fuzzer) give an error, never a crash.
 *
 * Layout (big-endian; docs/REPLICATION.md "Log entry format"):
 *   0  u32 magic "KVRE"       4  u8 format (2)     5  u8 origin replica id
 *   6  u16 origin loop        8  u64 origin boot nonce
 *  16  u64 origin sequence   24  u64 leader clock (Unix ms at proposal)
 *  32  u32 command count
 *  format 2 only (the leader's session limits, so every replica expires
 *  and evicts sessions alike whatever its own options say):
 *  36  u32 session window    40  u32 max sessions  44  u32 pad (0)
 *  48  u64 session timeout ms
 *  56  commands (format 1: at 36):
 *      u8 opcode, u8 extras_len (<= 16), u16 key_len, u32 value_len,
 *      format 2 only: u64 session id (0 = none), u64 session seq,
 *      extras, key, value
 * The decoder reads formats 1 and 2 (a log written before sessions
 * existed replays: its commands have no session); the encoder writes 2.
 * then 0..7 zero bytes of padding to a multiple of 8 bytes (C-Raft's
 * raft_uv refuses other lengths; kvmux_entry_padded_len). An entry with no
 * commands is a read barrier. */
#ifndef KVMUX_ENTRY_H
#define KVMUX_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_ENTRY_MAGIC 0x4B565245u /* "KVRE" */
#define KVMUX_ENTRY_FORMAT 2u
#define KVMUX_ENTRY_FORMAT1_HDR_LEN 36u
#define KVMUX_ENTRY_FORMAT1_CMD_HDR_LEN 8u
#define KVMUX_ENTRY_HDR_LEN 56u
/* Largest session limits an entry may carry (kvmuxd's --session-window
 * and --max-sessions bounds); a header beyond them is refused as damaged.
 * A window of 0 means no sessions. */
#define KVMUX_ENTRY_SESS_WINDOW_MAX 1048576u
#define KVMUX_ENTRY_SESS_MAX 10000000u
#define KVMUX_ENTRY_CMD_HDR_LEN 24u
#define KVMUX_ENTRY_MAX_EXTRAS 16u
/* Internal opcodes, never on the wire (a client's opcode is < 32): a
 * chunk of a big value being staged, and SET / CAS of a staged value
 * (stage.h; docs/REPLICATION.md "Big values"). */
#define KVMUX_ENTRY_OP_STAGE 0xF0u
#define KVMUX_ENTRY_OP_SET_STAGED 0xF1u
#define KVMUX_ENTRY_OP_CAS_STAGED 0xF2u
/* Install a cluster slot map (docs/CLUSTER.md): the command's value is an
 * encoded map (src/cluster/cluster.h); applied iff its epoch is higher
 * than the installed one. Reserved for issue 11's server side. */
#define KVMUX_ENTRY_OP_MAP 0xF3u
/* Slot migration (docs/MIGRATION.md 10.2): an import batch (value: the
 * batch), a big value's import through STAGE (0xF5: the batch of one PUT
 * whose value is the staged value's id and u32 total), a
 * migration step (extras u32 id, u8 step; steps 1-5 the source's,
 * migout.h, 6-8 the target's, migin.h; value: the step's fields), and a
 * purge of leftover keys (value u16 n, n x (u16 klen, key)). Exempt from
 * the apply-time slot check: each checks its own preconditions. */
#define KVMUX_ENTRY_OP_IMPORT 0xF4u
#define KVMUX_ENTRY_OP_IMPORT_STAGED 0xF5u
#define KVMUX_ENTRY_OP_MIGSTEP 0xF6u
#define KVMUX_ENTRY_OP_PURGE 0xF7u

/* Who proposed an entry: lets the leader tell its own applied entries
 * from anyone else's (a previous boot, another leader). */
typedef struct kvmux_entry_origin {
    uint8_t replica;      /* --replica-id */
    uint16_t loop;        /* the proposing loop */
    uint64_t nonce;       /* random per process start */
    uint64_t seq;         /* per loop, increasing */
} kvmux_entry_origin;

typedef struct kvmux_entry_hdr {
    kvmux_entry_origin origin;
    uint64_t clock_ms;    /* the leader's wall clock at proposal */
    uint32_t ncmds;
    uint8_t format;       /* decoded: 1 or 2 */
    uint32_t sess_window; /* format 2: --session-window (0 in format 1) */
    uint32_t sess_max;    /* format 2: --max-sessions */
    uint64_t sess_timeout_ms; /* format 2: --session-timeout */
} kvmux_entry_hdr;

typedef struct kvmux_entry_cmd {
    uint8_t op;
    uint8_t extras_len;
    uint16_t key_len;
    uint32_t value_len;
    uint64_t session;      /* 0: not a session write */
    uint64_t seq;          /* its number in the session */
    const uint8_t *extras; /* point into the decoded buffer */
    const uint8_t *key;
    const uint8_t *value;
} kvmux_entry_cmd;

/* len rounded up to the padding multiple (8). */
static inline size_t kvmux_entry_padded_len(size_t len) { return (len + 7) & ~(size_t)7; }

/* Bytes one command takes. */
size_t kvmux_entry_cmd_size(uint8_t extras_len, uint16_t key_len, uint32_t value_len);

/* Write the header into out[0..KVMUX_ENTRY_HDR_LEN). */
void kvmux_entry_encode_hdr(uint8_t *out, const kvmux_entry_hdr *h);
/* Overwrite the command count of an encoded header. */
void kvmux_entry_set_ncmds(uint8_t *out, uint32_t ncmds);
/* Write one command into out (kvmux_entry_cmd_size bytes); returns them.
 * extras_len must be <= KVMUX_ENTRY_MAX_EXTRAS (checked by the caller). */
size_t kvmux_entry_encode_cmd(uint8_t *out, const kvmux_entry_cmd *c);

/* Decode state: the header, then commands one at a time. */
typedef struct kvmux_entry_iter {
    const uint8_t *p;
    size_t len, off;
    uint32_t left;
    uint8_t format;
} kvmux_entry_iter;

/* Decode and check the header of buf[0..len). Returns 0, or -1 if the
 * buffer is not an entry of this format (bad magic, format, short). */
int kvmux_entry_decode_hdr(const uint8_t *buf, size_t len, kvmux_entry_hdr *h,
                           kvmux_entry_iter *it);
/* Next command: 1 with *c filled, 0 at the end (every byte consumed), -1
 * if the buffer is malformed (a length past the end, extras over 16,
 * trailing bytes). */
int kvmux_entry_next(kvmux_entry_iter *it, kvmux_entry_cmd *c);

#endif
