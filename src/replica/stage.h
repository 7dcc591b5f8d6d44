/* Big values staged in the replicated state machine (docs/REPLICATION.md
 * "Big values").
 *
 * A value over KVMUX_STAGE_CHUNK bytes is not replicated as one log entry:
 * the leader proposes it as STAGE commands of at most a chunk each, one
 * entry at a time (the next once the previous has committed), then the
 * SET or CAS as a small command naming the staged value. Small writes of
 * the group commit between the chunks instead of behind 64 MiB, and no
 * single message or disk write is big enough to starve heartbeats.
 *
 * The table holds the values being staged, keyed by a 16-byte id the
 * leader chose (its boot nonce and a counter). It is part of the
 * replicated state: only applying entries changes it, deterministically,
 * and it travels in snapshots, so a replica restored from a snapshot taken
 * between two chunks ends with the same store as the others.
 *
 * Bounds: at most KVMUX_STAGE_MAX_VALUES values and KVMUX_STAGE_MAX_BYTES
 * bytes staged at once (a STAGE over either is refused, and the SET that
 * would use it fails, on every replica alike); a staged value untouched
 * for KVMUX_STAGE_TIMEOUT_MS of replicated clock (its leader died between
 * chunks) is dropped.
 *
 * Thread-safety: one applier at a time (the Raft thread). */
#ifndef KVMUX_STAGE_H
#define KVMUX_STAGE_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_STAGE_ID_LEN 16u
#define KVMUX_STAGE_CHUNK (1u << 20)            /* bytes per STAGE command */
#define KVMUX_STAGE_MAX_VALUES 64u
#define KVMUX_STAGE_MAX_BYTES (1024ull << 20)   /* 1 GiB staged at once */
#define KVMUX_STAGE_TIMEOUT_MS 60000u

typedef struct kvmux_stage_val kvmux_stage_val;

typedef struct kvmux_stage_tab {
    kvmux_stage_val *head;   /* most recently touched first */
    uint32_t count;
    uint64_t bytes;          /* sum of the values' total lengths */
} kvmux_stage_tab;

void kvmux_stage_init(kvmux_stage_tab *t);
/* Free every staged value. */
void kvmux_stage_clear(kvmux_stage_tab *t);

/* Apply one STAGE command: bytes p[0..n) at offset off of the value id,
 * whose whole length is total. Offset 0 starts the value (replacing one of
 * the same id); any other offset must be where the value ends so far.
 * Returns 0, or -1 (refused: a bound, a gap, a length past total, out of
 * memory; the value, if any, is dropped). */
int kvmux_stage_append(kvmux_stage_tab *t, const uint8_t *id, uint32_t off, uint32_t total,
                       const uint8_t *p, uint32_t n, uint64_t now_ms);

/* Take the value id if it is complete with length total: returns its
 * buffer (malloc; the caller frees it) and removes it. NULL: absent,
 * incomplete or of another length (removed too, if present). */
uint8_t *kvmux_stage_take(kvmux_stage_tab *t, const uint8_t *id, uint32_t total);

/* Drop values untouched since now_ms - KVMUX_STAGE_TIMEOUT_MS. */
void kvmux_stage_expire(kvmux_stage_tab *t, uint64_t now_ms);

/* Snapshot: bytes kvmux_stage_encode writes, the encoding, and the
 * decoder (replaces t; returns the bytes used or -1 if malformed, t then
 * empty). */
size_t kvmux_stage_encoded_len(const kvmux_stage_tab *t);
size_t kvmux_stage_encode(const kvmux_stage_tab *t, uint8_t *out);
long kvmux_stage_decode(kvmux_stage_tab *t, const uint8_t *buf, size_t len);

#endif
