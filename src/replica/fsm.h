/* The replicated state machine's operations on the store, independent of
 * Raft (node.c wires them into a raft_fsm): apply one log entry, encode
 * and restore a snapshot, digest the store. Deterministic: given the same
 * store state and the same entry, every replica makes the same change and
 * hands out the same versions (the store's version counter moves only
 * here in replicated mode).
 *
 * Time is replicated too: in replicated mode the store's clock is a
 * kvmux_fsm_clock, which only applying an entry moves (to the leader's
 * wall clock stamped in the entry, never backwards). So a TTL becomes the
 * same absolute expiry on every replica, and whether a key has expired
 * when a write or read reaches it is decided by the log, not by each
 * replica's clock (docs/REPLICATION.md "Expiry"). */
#ifndef KVMUX_FSM_H
#define KVMUX_FSM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct kvmux_sessions; /* sessions.h */
struct kvmux_stage_tab; /* stage.h */

/* One command's outcome, as the leader answers it: status (a
 * KVMUX_STATUS_*) and extras (the version, INCR's value and version, a
 * CAS mismatch's current version). */
typedef struct kvmux_fsm_result {
    uint8_t status;
    uint8_t extras_len;
    uint8_t extras[16];
} kvmux_fsm_result;

/* The replicated clock (ms; Unix time as the leaders stamped it). Written
 * by the applier, read by any thread. */
typedef struct kvmux_fsm_clock {
    _Atomic uint64_t ms;
} kvmux_fsm_clock;

/* kvmux_store_clock_fn over a kvmux_fsm_clock (ud). Any thread. */
uint64_t kvmux_fsm_clock_read(void *ud);

/* Apply the entry buf[0..len) to st, whose clock is clk: clk first moves
 * to the entry's leader clock (if that is later). ss (NULL: no sessions)
 * is the session table: a command of a session that already applied its
 * seq gets the original result and is not applied again, one of a
 * forgotten session (or below its window) gets OUTCOME_UNKNOWN
 * (sessions.h). sg (NULL: none) is the table of big values being staged
 * (stage.h): STAGE commands fill it, SET/CAS_STAGED take from it. If out is not NULL it receives one result per command
 * (nout of them at most). Returns the number of commands applied, or -1
 * if the entry is malformed (nothing applied, clock unchanged).
 * Thread-safety: one applier at a time. */
int kvmux_fsm_apply(kvmux_store *st, kvmux_fsm_clock *clk, struct kvmux_sessions *ss,
                    struct kvmux_stage_tab *sg, const uint8_t *buf, size_t len, kvmux_fsm_result *out, uint32_t nout);

/* Allocator for snapshots (Raft frees them with its own raft_free). */
typedef void *(*kvmux_fsm_realloc_fn)(void *p, size_t n);

/* Serialize st (every live key with its version and remaining TTL, the
 * version counter and the clock) and the session table ss (NULL: none)
 * into a buffer from ra. Returns 0 with *out, *outlen, or -1 (out of
 * memory). Writers must be quiescent (the apply thread calls it);
 * readers may run. */
int kvmux_fsm_snapshot(kvmux_store *st, kvmux_fsm_clock *clk, struct kvmux_sessions *ss,
                       struct kvmux_stage_tab *sg, kvmux_fsm_realloc_fn ra, uint8_t **out, size_t *outlen);

/* Replace st's contents and the session table ss (NULL: ignored) by the
 * snapshot buf[0..len) (clk moves to the snapshot's clock if that is
 * later). Snapshots of format 2 (before sessions) restore with an empty
 * table. Returns 0, or -1 if the snapshot is malformed (the store is then
 * partially restored: the caller must not go on). */
int kvmux_fsm_restore(kvmux_store *st, kvmux_fsm_clock *clk, struct kvmux_sessions *ss,
                      struct kvmux_stage_tab *sg, const uint8_t *buf, size_t len);

/* Order-independent digest of every live key, value and version (and not
 * the TTLs, whose store-clock values differ per replica). Any thread. */
uint64_t kvmux_fsm_digest(kvmux_store *st);

#endif
