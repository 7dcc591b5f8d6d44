/* The replicated state machine's operations on the store, independent of
 * Raft (node.c wires them into a raft_fsm): apply one log entry, encode
 * and restore a snapshot, digest the store. Deterministic: given the same
 * store state and the same entry, every replica makes the same change and
 * hands out the same versions (the store's version counter moves only
 * here in replicated mode). The one input that is not in the log is the
 * wall clock, used only to turn a TTL into an expiry (REPLICATION.md). */
#ifndef KVMUX_FSM_H
#define KVMUX_FSM_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* One command's outcome, as the leader answers it: status (a
 * KVMUX_STATUS_*) and extras (the version, INCR's value and version, a
 * CAS mismatch's current version). */
typedef struct kvmux_fsm_result {
    uint8_t status;
    uint8_t extras_len;
    uint8_t extras[16];
} kvmux_fsm_result;

/* Apply the entry buf[0..len) to st. If out is not NULL it receives one
 * result per command (nout of them at most). now_unix_ms is this
 * replica's wall clock, compared with the entry's leader clock to age the
 * TTLs. Returns the number of commands applied, or -1 if the entry is
 * malformed (nothing applied). Thread-safety: one applier at a time. */
int kvmux_fsm_apply(kvmux_store *st, const uint8_t *buf, size_t len, uint64_t now_unix_ms,
                    kvmux_fsm_result *out, uint32_t nout);

/* Allocator for snapshots (Raft frees them with its own raft_free). */
typedef void *(*kvmux_fsm_realloc_fn)(void *p, size_t n);

/* Serialize st (every live key with its version and remaining TTL, and the
 * version counter) into a buffer from ra. Returns 0 with *out, *outlen, or
 * -1 (out of memory). Writers must be quiescent (the apply thread calls
 * it); readers may run. */
int kvmux_fsm_snapshot(kvmux_store *st, uint64_t now_unix_ms, kvmux_fsm_realloc_fn ra,
                       uint8_t **out, size_t *outlen);

/* Replace st's contents by the snapshot buf[0..len). Returns 0, or -1 if
 * the snapshot is malformed (the store is then partially restored: the
 * caller must not go on). */
int kvmux_fsm_restore(kvmux_store *st, const uint8_t *buf, size_t len, uint64_t now_unix_ms);

/* Order-independent digest of every live key, value and version (and not
 * the TTLs, whose store-clock values differ per replica). Any thread. */
uint64_t kvmux_fsm_digest(kvmux_store *st);

#endif
