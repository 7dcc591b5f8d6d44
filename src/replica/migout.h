/* Slot migration, the source group's replicated state (docs/MIGRATION.md
 * sections 2 and 5): at most one outgoing record {id, R = first..last,
 * dst, start_epoch, state COPYING or FENCED, gen, overflow} and its dirty
 * set (key -> gen). Only the applier changes it (entry op 0xF6 MIGSTEP
 * steps 1-5, every write applied for a slot of R, a map that takes R
 * away); loops, STATS and the migrate thread read it.
 *
 * Locking: mu guards the record and the dirty set; the applier (the only
 * writer) takes it for each change, readers for each read. The fence word
 * is an atomic so a loop can poll it for every keyed request without the
 * lock. */
#ifndef KVMUX_MIGOUT_H
#define KVMUX_MIGOUT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct kvmux_map;        /* src/cluster/cluster.h */
struct kvmux_entry_cmd;  /* entry.h */
struct kvmux_fsm_result; /* fsm.h */

/* Dirty set caps (MIGRATION.md 5): a write past them is applied and sets
 * the record's overflow flag instead of adding its key. */
#define KVMUX_MIG_DIRTY_MAX_KEYS 262144u
#define KVMUX_MIG_DIRTY_MAX_BYTES (16u * 1024u * 1024u)

/* MIGSTEP (0xF6) extras: u32 id, u8 step. Steps 6-8 are the target's
 * (migin.c). */
#define KVMUX_MIGSTEP_EXTRAS_LEN 5u
enum {
    KVMUX_MIGSTEP_OUT_BEGIN = 1,   /* value: u16 first, u16 last, u16 dst, u64 start_epoch */
    KVMUX_MIGSTEP_OUT_CUT = 2,     /* value: u32 n */
    KVMUX_MIGSTEP_OUT_DRAINED = 3, /* value: u32 n */
    KVMUX_MIGSTEP_OUT_FENCE = 4,   /* no value */
    KVMUX_MIGSTEP_OUT_ABORT = 5,   /* no value */
};

enum { KVMUX_MIGOUT_NONE = 0, KVMUX_MIGOUT_COPYING = 1, KVMUX_MIGOUT_FENCED = 2 };

typedef struct kvmux_migout_key kvmux_migout_key; /* one dirty key */

typedef struct kvmux_migout {
    pthread_mutex_t mu;
    /* Lock-free view for loops: 0 when not fenced, else 1 << 32 | first
     * << 16 | last. Set and cleared by the applier. */
    _Atomic uint64_t fence;
    /* Grows on every fence change (set or cleared): parked WAITs are
     * re-checked when it moves (waits.c). */
    _Atomic uint64_t fence_gen;
    /* The record, under mu. state NONE: no record, fields 0. */
    int state;
    uint32_t id;
    uint16_t first, last, dst;
    uint64_t start_epoch;
    uint32_t gen;       /* current generation, from 1 */
    int overflow;       /* a key was not added: the set is incomplete */
    /* The dirty set: chained hash table, under mu. */
    kvmux_migout_key **buckets;
    size_t nbuckets;
    uint32_t nkeys;
    uint64_t kbytes;    /* sum of key lengths */
} kvmux_migout;

/* Empty (no record). */
void kvmux_migout_init(kvmux_migout *mo);
/* Free the record and set; mo may be init'ed again. */
void kvmux_migout_clear(kvmux_migout *mo);
/* Remove the record and set (unfencing), e.g. restoring a snapshot of a
 * format without migrations. Applier thread. */
void kvmux_migout_reset(kvmux_migout *mo);

/* Apply one MIGSTEP command of a source step (1..5) for a group whose
 * applied map is map (NULL: none) and id group. Results (r may be NULL):
 *  OUT_BEGIN: OK (record created COPYING, gen 1, empty set; or the same
 *    id again: OK, unchanged); BUSY (another record exists); BAD_REQUEST
 *    (malformed, first > last, last >= 16384, no map, or R not entirely
 *    ours); INTERNAL (out of memory, nothing changed).
 *  OUT_CUT n: OK with extras u64 gen after it (applied iff n == gen, so a
 *    resent cut is a no-op OK).
 *  OUT_DRAINED n: OK with extras u64 keys left, removing the keys whose
 *    gen <= n, iff n < gen; VERSION_MISMATCH otherwise (nothing removed).
 *  OUT_FENCE: OK (state FENCED; idempotent).
 *  OUT_ABORT: OK; the record is removed iff its id matches.
 *  CUT, DRAINED, FENCE for no record or another id: BAD_REQUEST.
 *  Any other step: BAD_REQUEST (the caller routes 6..8 elsewhere).
 * Applier thread only. */
void kvmux_migout_apply(kvmux_migout *mo, const struct kvmux_map *map, uint16_t group,
                        const struct kvmux_entry_cmd *c, struct kvmux_fsm_result *r);

/* The value of OUT_BEGIN (14 bytes: u16 first, u16 last, u16 dst, u64
 * start_epoch) into out; returns 14. */
size_t kvmux_migout_begin_value(uint8_t *out, uint16_t first, uint16_t last, uint16_t dst,
                                uint64_t start_epoch);
/* The value of OUT_CUT / OUT_DRAINED (u32 n) into out; returns 4. */
size_t kvmux_migout_n_value(uint8_t *out, uint32_t n);

/* The step of a well-formed MIGSTEP command (extras u32 id, u8 step), or
 * 0 when its extras are not 5 bytes. */
int kvmux_migout_step(const struct kvmux_entry_cmd *c);

/* Whether op is a write the dirty set tracks (SET, DEL, INCR, CAS, EXPIRE,
 * PERSIST, SET_STAGED, CAS_STAGED). */
int kvmux_migout_is_write(uint8_t op);

/* A write to key (in slot) was processed by the applier, whatever its
 * result: adds key -> gen when a COPYING record covers slot; past the caps
 * sets overflow instead. Applier thread only. */
void kvmux_migout_note_write(kvmux_migout *mo, const uint8_t *key, size_t klen, uint16_t slot);

/* Whether slot is fenced (lock-free; any thread). */
int kvmux_migout_fenced(const kvmux_migout *mo, uint16_t slot);

/* A map was installed (or restored) as map (NULL: none): the record is
 * removed unless map gives every slot of R to group. Applier thread. */
void kvmux_migout_map_applied(kvmux_migout *mo, const struct kvmux_map *map, uint16_t group);

/* A snapshot of the record for STATS and the migrate thread. */
typedef struct kvmux_migout_info {
    int state;          /* KVMUX_MIGOUT_* */
    uint32_t id;
    uint16_t first, last, dst;
    uint64_t start_epoch;
    uint32_t gen;
    int overflow;
    uint32_t dirty_keys;
    uint64_t dirty_bytes;
} kvmux_migout_info;
/* Any thread. */
void kvmux_migout_get_info(kvmux_migout *mo, kvmux_migout_info *out);

/* One dirty key's current state in the store: present (value, version,
 * absolute expiry in store-clock ms, 0: none) or absent (present 0, the
 * rest 0). value is valid during the call only. Return nonzero to stop. */
typedef int (*kvmux_migout_key_fn)(void *ud, const uint8_t *key, size_t klen, uint32_t gen,
                                   int present, const uint8_t *value, size_t vlen,
                                   uint64_t version, uint64_t expire_at);

/* For the migrate thread: call fn for each key of the set with gen <= upto
 * (upto 0: every key, as after the fence), with the key's state read from
 * st at the call. The set is copied under mu first, then each key is read
 * under its store shard lock with its version and expiry from the same
 * instant (a key changed meanwhile is in the set again with a newer gen).
 * Returns the number of keys visited, -1 when id is not the record's (or
 * none), -2 out of memory. Any thread but the applier's may run it
 * concurrently with applies. */
long kvmux_migout_collect(kvmux_migout *mo, kvmux_store *st, uint32_t id, uint32_t upto,
                          kvmux_migout_key_fn fn, void *ud);

/* Snapshot (format 6) part: `u8 has_out` [u32 id, u16 first, u16 last,
 * u16 dst, u64 start_epoch, u8 state, u32 gen, u8 overflow, u32 n, n x
 * (u16 klen, key, u32 gen)]. encoded_len then encode into out (that many
 * bytes); applier thread (writers quiescent). */
size_t kvmux_migout_encoded_len(kvmux_migout *mo);
size_t kvmux_migout_encode(kvmux_migout *mo, uint8_t *out);
/* Replace mo's contents by the part at buf[0..len): bytes used, or -1 if
 * malformed or out of memory (mo is then empty). */
long kvmux_migout_decode(kvmux_migout *mo, const uint8_t *buf, size_t len);

#endif
