/* Exactly-once client sessions in the replicated state machine
 * (docs/REPLICATION.md "Exactly-once sessions"; Raft dissertation §6.3).
 *
 * A client names itself with a random 64-bit session id (HELLO) and
 * numbers its writes 1, 2, 3, ... (the SESSION request flag). For each
 * session the table keeps the replies of the recent seqs, so a write sent
 * again after a failover gets its ORIGINAL reply and is not applied a
 * second time. The table is part of the replicated state: only applying
 * entries changes it, deterministically (same entries, same table on
 * every replica), and it travels in snapshots.
 *
 * Bounds (the leader stamps them in every entry, so all replicas agree):
 * - window W: a client never has more than W writes of its session
 *   unanswered, so replies of seq <= max_seq - W are never asked for again
 *   and are dropped; a resend with such a seq is refused (OUTCOME_UNKNOWN).
 * - timeout: a session whose last write is older (replicated clock) than
 *   this is forgotten; max: at most this many sessions, the least recently
 *   active one is evicted to make room.
 * A first transmission (no RETRY bit) was never applied, so it is always
 * applied: it (re)creates its session if needed. A resend (RETRY) the
 * table cannot vouch for -- its session unknown (forgotten), its seq below
 * the window or below the seq that recreated the session -- is refused
 * with OUTCOME_UNKNOWN, never applied blindly.
 *
 * Memory: per session about 96 bytes plus a ring of 32-byte replies that
 * grows (doubling from 8) only when two seqs still in the window would
 * share a slot, so to at most the window rounded up to a power of two
 * (W = 2048: 64 KiB for a session with that many writes in its window).
 * A snapshot is trusted input (it comes from the leader, like the log),
 * but its decoder still checks every length before allocating.
 *
 * Thread-safety: one applier at a time (the Raft thread); the counters
 * are atomics, read by STATS from any thread. */
#ifndef KVMUX_SESSIONS_H
#define KVMUX_SESSIONS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fsm.h"

typedef struct kvmux_sess kvmux_sess;

/* Bit 63 of a wire seq: RETRY, this write was sent before (a resend);
 * bits 0..62 are the number (docs/PROTOCOL.md section 17.1). */
#define KVMUX_SESS_RETRY (1ull << 63)

typedef struct kvmux_sessions {
    kvmux_sess **buckets;
    uint32_t nbuckets;             /* power of two (or 0 before the first) */
    uint32_t count;
    kvmux_sess *oldest, *newest;   /* by last activity: the eviction order */
    _Atomic uint64_t n;            /* = count, for STATS */
    _Atomic uint64_t duplicates;   /* writes answered from the table */
    _Atomic uint64_t expired;      /* sessions expired or evicted */
    _Atomic uint64_t refused;      /* writes refused OUTCOME_UNKNOWN */
} kvmux_sessions;

/* The bounds an entry carries. */
typedef struct kvmux_sess_limits {
    uint32_t window;
    uint32_t max_sessions;
    uint64_t timeout_ms;
} kvmux_sess_limits;

/* What to do with a session write. */
enum kvmux_sess_verdict {
    KVMUX_SESS_APPLY = 0,     /* new: apply it, then kvmux_sessions_record */
    KVMUX_SESS_DUPLICATE = 1, /* applied before: *out is the original reply */
    KVMUX_SESS_REFUSE = 2     /* forgotten or below the window: OUTCOME_UNKNOWN */
};

/* Empty table. */
void kvmux_sessions_init(kvmux_sessions *t);
/* Free everything (t is then empty, reusable). */
void kvmux_sessions_clear(kvmux_sessions *t);

/* Forget the sessions idle for lim->timeout_ms or more at now_ms (called
 * once per entry, before its commands). */
void kvmux_sessions_expire(kvmux_sessions *t, const kvmux_sess_limits *lim, uint64_t now_ms);

/* Look up (sid, wire_seq: the number with the RETRY bit) at now_ms.
 * APPLY: *sp is the session to record the reply into (created if new;
 * NULL if out of memory: the write is then applied untracked). DUPLICATE:
 * *out filled. REFUSE: nothing changes. */
int kvmux_sessions_check(kvmux_sessions *t, const kvmux_sess_limits *lim, uint64_t now_ms,
                         uint64_t sid, uint64_t wire_seq, kvmux_fsm_result *out,
                         kvmux_sess **sp);

/* What kvmux_sessions_check would say of (sid, wire_seq), changing
 * nothing (no session created or touched, no counter): DUPLICATE with
 * *out = the reply kept for it (it was applied here), REFUSE (a resend
 * this table cannot vouch for: it may have been applied here), or APPLY
 * (not applied here: a first transmission, or a resend inside the window
 * with no reply kept). For a write the group no longer owns the slot of
 * (fsm.c): only APPLY may be redirected to another group. */
int kvmux_sessions_peek(const kvmux_sessions *t, const kvmux_sess_limits *lim, uint64_t sid,
                        uint64_t wire_seq, kvmux_fsm_result *out);

/* Remember the reply r of seq (the RETRY bit ignored) in s (from
 * kvmux_sessions_check). */
void kvmux_sessions_record(kvmux_sessions *t, const kvmux_sess_limits *lim, kvmux_sess *s,
                           uint64_t seq, const kvmux_fsm_result *r);

/* Bytes kvmux_sessions_encode writes. */
size_t kvmux_sessions_encoded_len(const kvmux_sessions *t);
/* Serialize the table at out (kvmux_sessions_encoded_len bytes), oldest
 * first; returns the bytes written. */
size_t kvmux_sessions_encode(const kvmux_sessions *t, uint8_t *out);
/* Replace t by the table encoded at buf[0..len). Returns the bytes used, or
 * -1 if malformed or out of memory (t is then empty). */
long kvmux_sessions_decode(kvmux_sessions *t, const uint8_t *buf, size_t len);

#endif
