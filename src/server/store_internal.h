/* The store's internals, shared by the files that implement it:
 * store.c (the table, entries, reads and writes), store_ttl.c (EXISTS,
 * TTL, EXPIRE, PERSIST) and store_scan.c (SCAN). Nothing outside
 * src/server/store*.c includes this; the contract is store.h. */
#ifndef KVMUX_STORE_INTERNAL_H
#define KVMUX_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "siphash.h"
#include "slab.h"
#include "store.h"

_Static_assert(sizeof(uintptr_t) == 8, "slots pack a 48-bit address with a 16-bit tag");

enum waiter_state {
    WAITER_IDLE = 0,       /* not known to the store */
    WAITER_REGISTERED = 1, /* on an entry's list */
    WAITER_FIRED = 2,      /* unlinked by a write; fire callback called */
    WAITER_CANCELLED = 3   /* unlinked by kvmux_store_wait_cancel */
};

#define INITIAL_SLOTS 16u

/* Refcounted immutable value bytes. refs is atomic: references are taken
 * under a shard lock but dropped by loop threads without it. */
struct kvmux_store_value {
    _Atomic uint32_t refs;
    const kvmux_store *store;    /* whose allocator freed it */
    size_t len;
    _Alignas(16) uint8_t data[];
};

/* Optional words after the header, in this order, each present iff its
 * flag is set. */
#define F_OOL 1u  /* kvmux_store_value *: the value, out of line */
#define F_TTL 2u  /* uint64_t: expiry (store clock ms) */
#define F_WAIT 4u /* kvmux_store_waiter *: head of the parked waiters */

typedef struct entry {
    uint64_t version;            /* 0 = placeholder holding waiters only */
    uint32_t atime;              /* last access (store clock ms mod 2^32): LRU */
    uint16_t klen;
    uint8_t flags;               /* F_* */
    uint8_t ivlen;               /* inline value length (0 with F_OOL) */
    uint8_t tail[];              /* [words] key [inline value] */
} entry;

/* Slot encoding: 0 = empty, TOMB = deleted, else tag | address. */
#define TOMB ((uint64_t)1)
#define ADDR_MASK ((UINT64_C(1) << 48) - 1)
#define TAG_MASK (~ADDR_MASK)
#define NOT_FOUND SIZE_MAX

/* One lock domain. Invariants: count = entries in the table (placeholders
 * included); live/bytes cover entries with version != 0 only; count +
 * tombs < cap (an empty slot always ends a probe). Aligned to a cache line
 * so neighbouring shards' locks do not false-share. */
typedef struct shard {
    _Alignas(64) pthread_mutex_t mu;
    uint64_t *slots;
    size_t cap;                  /* power of two */
    size_t count;
    size_t tombs;
    uint64_t live;
    uint64_t bytes;
    uint64_t waiters;
    uint64_t expired;
    uint64_t expired_active;
    uint64_t evicted;
    size_t expire_cursor;        /* next slot for the active cycle */
    kvmux_slab_pool slab;        /* this shard's entries */
    int snap_pending;            /* a background snapshot has yet to
                                    serialize this shard (store.h
                                    "Background snapshots"); under mu */
    int slot_uncounted;          /* a recount (kvmux_store_slot_recount)
                                    has yet to count this shard: its
                                    changes move no slot count; under mu */
} shard;

struct kvmux_store {
    shard *shards;
    uint32_t nshards;
    kvmux_store_clock_fn clock;
    void *clock_ud;
    kvmux_store_fire_fn fire;
    void *fire_ud;
    uint8_t hash_key[KVMUX_SIPHASH_KEY_LEN];
    _Atomic uint64_t last_version; /* versions handed out so far */
    kvmux_store_journal_fn journal; /* NULL: nothing logged */
    void *journal_ud;
    _Atomic uint64_t used;         /* accounted memory, see entry_footprint */
    _Atomic uint64_t maxmemory;    /* 0 = no limit */
    _Atomic int policy;            /* enum kvmux_maxmemory_policy */
    _Atomic uint64_t rng;          /* eviction sampling */
    void *(*alloc)(void *ud, size_t n);
    void (*dealloc)(void *ud, void *p);
    void *alloc_ud;
    /* The background snapshot under way (kvmux_store_snap_begin): set
     * before any shard is marked pending, read under a pending shard's
     * lock (the lock orders the two). */
    kvmux_store_snap_fn snap_fn;
    void *snap_ud;
    uint64_t snap_now;             /* keys expired at it are left out */
    uint64_t snap_last;            /* the last version at the instant */
    /* Cluster mode (kvmux_store_options.slot_keys): live keys per hash
     * slot, KVMUX_SLOTS counters; NULL otherwise. Changed under the key's
     * shard lock, but one slot's keys span every shard: atomic. */
    _Atomic uint32_t *slot_keys;
};

/* Count one key of key[0..klen), held in shard sh (whose lock the caller
 * holds), more (delta 1) or less (-1) in its slot, in cluster mode. */
void kvmux__store_slot_count(kvmux_store *s, const shard *sh, const uint8_t *key, size_t klen,
                             int delta);

/* ---- entry layout ---- */

static inline size_t nwords(unsigned flags) {
    return (flags & F_OOL ? 1u : 0u) + (flags & F_TTL ? 1u : 0u) + (flags & F_WAIT ? 1u : 0u);
}

static inline size_t layout_size(unsigned flags, size_t klen, size_t ivlen) {
    return sizeof(entry) + 8 * nwords(flags) + klen + ivlen;
}

static inline size_t entry_size(const entry *e) { return layout_size(e->flags, e->klen, e->ivlen); }

static inline size_t off_ttl(unsigned flags) { return flags & F_OOL ? 8 : 0; }
static inline size_t off_wait(unsigned flags) { return off_ttl(flags) + (flags & F_TTL ? 8 : 0); }

static inline uint8_t *e_key(const entry *e) {
    return (uint8_t *)(uintptr_t)e->tail + 8 * nwords(e->flags);
}

static inline kvmux_store_value *e_val(const entry *e) {
    kvmux_store_value *v = NULL;
    if (e->flags & F_OOL) memcpy(&v, e->tail, sizeof v);
    return v;
}

static inline uint64_t e_expires(const entry *e) {
    uint64_t t = 0;
    if (e->flags & F_TTL) memcpy(&t, e->tail + off_ttl(e->flags), sizeof t);
    return t;
}

static inline kvmux_store_waiter *e_waiters(const entry *e) {
    kvmux_store_waiter *w = NULL;
    if (e->flags & F_WAIT) memcpy(&w, e->tail + off_wait(e->flags), sizeof w);
    return w;
}

/* Only for an entry with F_WAIT. */
static inline void e_set_waiters(entry *e, kvmux_store_waiter *w) {
    memcpy(e->tail + off_wait(e->flags), &w, sizeof w);
}

static inline const uint8_t *e_vbytes(const entry *e) {
    if (e->flags & F_OOL) return e_val(e)->data;
    return e->ivlen ? e_key(e) + e->klen : NULL;
}

static inline size_t e_vlen(const entry *e) {
    return e->flags & F_OOL ? e_val(e)->len : e->ivlen;
}

static inline entry *slot_entry(uint64_t x) { return (entry *)(uintptr_t)(x & ADDR_MASK); }
static inline int slot_used(uint64_t x) { return x > TOMB; }

static inline int is_expired(const entry *e, uint64_t now) {
    return e->version != 0 && (e->flags & F_TTL) && now >= e_expires(e);
}

/* A value to write: val (one reference, kept out of line) or len bytes at
 * bytes, copied inline (len <= KVMUX_STORE_INLINE_MAX). */
typedef struct newval {
    kvmux_store_value *val;
    const uint8_t *bytes;
    size_t len;
} newval;

/* Hand e's record to the background snapshot (kvmux__store_snap_keep's
 * caller checked that the snapshot wants it). */
void kvmux__store_snap_keep(const kvmux_store *s, const shard *sh, const entry *e);

/* Serialize sh (lock held) for the background snapshot now if it is
 * still pending: every key as it was at the instant, then the shard is
 * no longer pending. For a change that copy-on-write by key cannot
 * handle: one writing a version not newer than the instant's
 * (kvmux_store_import_put), which the shard's walk would take for a key
 * of the instant. */
void kvmux__store_snap_flush(const kvmux_store *s, shard *sh);

/* Call right before e (in sh, lock held) is changed or removed: if a
 * background snapshot has yet to serialize sh and e is as it was at the
 * snapshot's instant (its version is not newer), its record goes to the
 * snapshot now (copy-on-write by key: store.h "Background snapshots"). */
static inline void snap_keep(const kvmux_store *s, const shard *sh, const entry *e) {
    if (sh->snap_pending && e->version != 0 && e->version <= s->snap_last)
        kvmux__store_snap_keep(s, sh, e);
}

/* ---- shared with store_ttl.c and store_scan.c (shard lock held where
 * a shard is passed) ---- */

/* The key's hash and its shard. */
uint64_t kvmux__store_hash(const kvmux_store *s, const uint8_t *key, size_t klen);
shard *kvmux__store_shard(kvmux_store *s, uint64_t hash);
/* The key's slot (expiring it first if its TTL passed), or NOT_FOUND;
 * placeholders (version 0) are found too. */
size_t kvmux__store_lookup(kvmux_store *s, shard *sh, uint64_t hash, const uint8_t *key,
                           size_t klen, uint64_t now);
/* Write nv under key with expiry expires (0 = none) in slot i (or a new
 * entry, i == NOT_FOUND) with version (0 = the next one). jop: the
 * journal record of the change (KVMUX_STORE_REC_SET, or _EXPIRY for a
 * change of expiry only), which also fires the key's waiters; 0 for
 * recovery (waiters stay, nothing logged). Takes nv->val's reference on
 * success only. Returns the new version, or 0 when out of memory
 * (nothing changed). */
uint64_t kvmux__store_put(kvmux_store *s, shard *sh, size_t i, uint64_t hash,
                          const uint8_t *key, size_t klen, const newval *nv,
                          uint64_t expires, uint64_t now, uint64_t version, int jop);
/* The key's slot, expired or not (no expiry check), or NOT_FOUND. */
size_t kvmux__store_find_raw(shard *sh, uint64_t hash, const uint8_t *key, size_t klen);

#endif
