/* kvmuxd's store: a sharded, open-addressing hash table with versions,
 * TTLs and parked waiters (see store.h for the contract).
 *
 * Design
 * - Keys are hashed with SipHash-2-4 under a random per-process key, so a
 *   client cannot choose keys that all land in one probe run. Bits 32..47
 *   pick one of N shards (default 256), the low bits the home slot, and
 *   bits 48..63 are a 16-bit tag kept in the slot next to the entry
 *   pointer, so shard, slot and tag are independent.
 * - Each shard is a mutex plus a linear-probing table of 8-byte slots:
 *   (tag << 48) | entry address (user-space addresses fit in 48 bits; an
 *   allocation above that is treated as out of memory). A probe compares
 *   tags first and dereferences an entry only on a tag match (1 in 65536
 *   for a foreign key), so a lookup touches one or two cache lines of the
 *   table and the entry itself. Deleted slots become tombstones, reused by
 *   inserts; the table is rebuilt (doubled, or at the same size when it is
 *   mostly tombstones) when live + tombstones pass 7/8. A rebuild
 *   rehashes one shard (1/N of the keys: ~4000 at 1M keys, ~0.1 ms) under
 *   its lock; if the bigger table cannot be allocated the shard keeps
 *   working at a higher load, and only an insert that would leave no empty
 *   slot fails (INTERNAL, nothing changed).
 * - Entries are compact: a 16-byte header (version, 32-bit access time,
 *   key length, flags, inline value length), then optional 8-byte words
 *   present only when a flag says so -- an out-of-line value pointer, the
 *   expiry time, the head of the parked waiters -- then the key, then a
 *   small value (<= KVMUX_STORE_INLINE_MAX bytes) inline. A key with a
 *   3-byte value and no TTL is one 40-byte slot. Entries come from a
 *   per-shard size-class slab allocator (server/slab.c: 8-byte classes, no
 *   per-object header); larger ones from the allocator hook directly.
 * - An entry's size depends on its value, TTL and waiters, so a write may
 *   move it to a new slot (allocated before anything changes, so OOM
 *   leaves the key as it was). Waiters point at their entry: the ones that
 *   survive a move (recovery only; every write fires them all) are
 *   re-pointed by the move.
 * - Versions come from one store-wide atomic counter, so a version is never
 *   reused, even by a key that is deleted and created again. That is what
 *   makes CAS and WAIT safe against ABA.
 * - Expiry is lazy: an expired key is removed when an operation touches it
 *   (or when a parked waiter polls it, see kvmux_store_wait_poll), and
 *   active: kvmux_store_expire_cycle walks each shard from a rotating
 *   slot cursor (driven every 100 ms by server/expire.c), so keys nobody
 *   touches are freed too.
 * - Memory: every entry slot (its size class, i.e. what it really takes
 *   from its slab), out-of-line value (as a malloc chunk) and table is
 *   accounted in one store-wide atomic, cheap to read before each write.
 *   Free slots inside slab blocks are fragmentation, not counted (like
 *   Redis's used_memory). Under a limit, kvmux_store_over_limit either
 *   says "refuse" (noeviction) or evicts approximately-LRU keys: each entry
 *   keeps its last access time (ms, modulo 2^32: ages are exact up to 49
 *   days), and an eviction samples a few keys in a few random shards and
 *   drops the oldest, as Redis does.
 * - Persistence hooks: an optional journal callback sees every change
 *   under the shard lock (so per-key order is the apply order), and
 *   restore / snapshot entry points serve recovery and compaction
 *   (server/aof*.c).
 * - Waiters hang on the entry of their key. A WAIT on an absent key creates
 *   a placeholder entry (version 0, invisible to GET) that exists only to
 *   hold waiters and is freed with its last waiter. Every successful write
 *   changes the version, so a write fires and unlinks *all* the key's
 *   waiters; each waiter is either fired (once) or cancelled (once), decided
 *   under the shard lock, which is what lets the server resolve the race
 *   between a notify and a connection close (see server/waits.c).
 * - Large values are immutable, reference-counted buffers
 *   (kvmux_store_value). The entry holds one reference; a reader that needs
 *   the bytes after the shard lock is released (a large GET answered in
 *   fragments over many loop iterations) takes another with
 *   kvmux_store_value_hold inside its read callback, so the value is
 *   neither copied nor torn by a later SET. Small values live inline in the
 *   entry: holding one makes a private copy (the store knows, per thread,
 *   which inline bytes the current callback was given). A writer may also
 *   fill a fresh value itself (kvmux_store_value_new: a fragmented upload
 *   is reassembled straight into it) and hand it to the store, which keeps
 *   it without copying when it is large, and copies it inline when small.
 * - Every allocation for entries, slab blocks, values and tables goes
 *   through an optional allocator hook, so tests fail the Nth allocation
 *   and check that each operation returns INTERNAL with the key unchanged
 *   and nothing leaked. Large values are copied before the lock is taken.
 *
 * This is not a general cache: eviction is approximate, and only under
 * --maxmemory allkeys-lru. */
#include "store_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "monotime.h"
#include "siphash.h"
#include "slab.h"


static void *mem_alloc(const kvmux_store *s, size_t n) {
    return s->alloc ? s->alloc(s->alloc_ud, n) : malloc(n);
}

static void mem_free(const kvmux_store *s, void *p) {
    if (!p) return;
    if (s->dealloc) s->dealloc(s->alloc_ud, p);
    else free(p);
}

static void *pool_alloc(void *ud, size_t n) { return mem_alloc(ud, n); }
static void pool_free(void *ud, void *p) { mem_free(ud, p); }

static uint64_t default_clock(void *ud) {
    (void)ud;
    return kvmux_clock_ms();
}

void kvmux_store_options_init(kvmux_store_options *o) {
    memset(o, 0, sizeof *o);
    o->shards = 256;
    o->clock = default_clock;
}

/* glibc's chunk for a malloc of n bytes (8-byte header, 16-byte steps,
 * 32 minimum): what an out-of-line allocation really costs. */
static uint64_t malloc_chunk(size_t n) {
    uint64_t c = ((uint64_t)n + 8 + 15) & ~(uint64_t)15;
    return c < 32 ? 32 : c;
}

static void mem_account(const kvmux_store *s, int64_t delta) {
    atomic_fetch_add_explicit(&((kvmux_store *)(uintptr_t)s)->used, (uint64_t)delta,
                              memory_order_relaxed);
}

int kvmux_store_new(kvmux_store **out, const kvmux_store_options *opts) {
    kvmux_store_options defaults;
    if (!opts) {
        kvmux_store_options_init(&defaults);
        opts = &defaults;
    }
    uint32_t n = opts->shards;
    if (n == 0 || n > 65536 || (n & (n - 1)) != 0) return -1;

    kvmux_store *s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->nshards = n;
    s->clock = opts->clock ? opts->clock : default_clock;
    s->clock_ud = opts->clock_user_data;
    s->fire = opts->fire;
    s->fire_ud = opts->fire_user_data;
    s->alloc = opts->alloc;
    s->dealloc = opts->dealloc;
    s->alloc_ud = opts->alloc_user_data;
    atomic_init(&s->last_version, 0);
    if (opts->slot_keys && !(s->slot_keys = calloc(KVMUX_SLOTS, sizeof *s->slot_keys))) {
        free(s);
        return -1;
    }
    if (opts->hash_key) {
        memcpy(s->hash_key, opts->hash_key, sizeof s->hash_key);
    } else if (kvmux_random_bytes(s->hash_key, sizeof s->hash_key) != 0) {
        free((void *)s->slot_keys);
        free(s);
        return -1;
    }
    s->shards = aligned_alloc(64, sizeof(shard) * n);
    if (!s->shards) {
        free((void *)s->slot_keys);
        free(s);
        return -1;
    }
    memset(s->shards, 0, sizeof(shard) * n);
    for (uint32_t i = 0; i < n; i++) {
        shard *sh = &s->shards[i];
        sh->slots = mem_alloc(s, INITIAL_SLOTS * sizeof *sh->slots);
        if (!sh->slots || pthread_mutex_init(&sh->mu, NULL) != 0) {
            mem_free(s, sh->slots);
            for (uint32_t j = 0; j < i; j++) {
                pthread_mutex_destroy(&s->shards[j].mu);
                mem_free(s, s->shards[j].slots);
            }
            free(s->shards);
            free((void *)s->slot_keys);
            free(s);
            return -1;
        }
        memset(sh->slots, 0, INITIAL_SLOTS * sizeof *sh->slots);
        sh->cap = INITIAL_SLOTS;
        kvmux_slab_init(&sh->slab, pool_alloc, pool_free, s);
        mem_account(s, INITIAL_SLOTS * sizeof *sh->slots);
    }
    *out = s;
    return 0;
}

/* ---- values ---- */

/* The inline value handed to the read callback running on this thread
 * (so kvmux_store_value_hold can tell it needs a copy), or NULL. */
static _Thread_local struct {
    const uint8_t *bytes;
    size_t len;
    kvmux_store *store;
} tls_inline;

kvmux_store_value *kvmux_store_value_new(kvmux_store *s, size_t len) {
    if (len == 0 || len > SIZE_MAX - sizeof(kvmux_store_value) - 32) return NULL;
    kvmux_store_value *v = mem_alloc(s, sizeof *v + len);
    if (!v) return NULL;
    atomic_init(&v->refs, 1);
    v->store = s;
    v->len = len;
    return v;
}

uint8_t *kvmux_store_value_data(kvmux_store_value *v) { return v->data; }

size_t kvmux_store_value_len(const kvmux_store_value *v) { return v->len; }

kvmux_store_value *kvmux_store_value_hold(const uint8_t *value) {
    if (tls_inline.bytes && value == tls_inline.bytes) {
        /* Inline bytes move with their entry: hand out a private copy. */
        kvmux_store_value *c = kvmux_store_value_new(tls_inline.store, tls_inline.len);
        if (c) memcpy(c->data, value, tls_inline.len);
        return c;
    }
    kvmux_store_value *v =
        (kvmux_store_value *)(void *)((uint8_t *)(uintptr_t)value -
                                      offsetof(kvmux_store_value, data));
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

kvmux_store_value *kvmux_store_value_retain(kvmux_store_value *v) {
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

void kvmux_store_value_release(kvmux_store_value *v) {
    if (!v) return;
    /* acq_rel: the last holder must see every other holder's reads done
     * before it frees (the classic refcount pairing). */
    if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        mem_free(v->store, v);
}

static uint64_t value_mem(const kvmux_store_value *v) {
    return v ? malloc_chunk(sizeof *v + v->len) : 0;
}

/* ---- entry layout ---- */

/* What an entry of size bytes really takes: its slab class, or a malloc
 * chunk when too big for the slabs. */
static uint64_t entry_footprint(size_t size) {
    return size <= KVMUX_SLAB_MAX ? kvmux_slab_class_size(size) : malloc_chunk(size);
}

/* Build an entry in mem (layout_size(flags, klen, ivlen) bytes). The value
 * is val (F_OOL) or ival/ivlen inline. */
static entry *entry_build(void *mem, unsigned flags, uint64_t version, uint32_t atime,
                          const uint8_t *key, size_t klen, kvmux_store_value *val,
                          const uint8_t *ival, size_t ivlen, uint64_t expires,
                          kvmux_store_waiter *waiters) {
    entry *e = mem;
    e->version = version;
    e->atime = atime;
    e->klen = (uint16_t)klen;
    e->flags = (uint8_t)flags;
    e->ivlen = (uint8_t)ivlen;
    if (flags & F_OOL) memcpy(e->tail, &val, sizeof val);
    if (flags & F_TTL) memcpy(e->tail + off_ttl(flags), &expires, sizeof expires);
    if (flags & F_WAIT) memcpy(e->tail + off_wait(flags), &waiters, sizeof waiters);
    uint8_t *k = e_key(e);
    memmove(k, key, klen);
    if (ivlen) memcpy(k + klen, ival, ivlen);
    return e;
}

/* A slot for an entry of size bytes, accounted; NULL when out of memory. */
static entry *entry_alloc(const kvmux_store *s, shard *sh, size_t size) {
    void *p = size <= KVMUX_SLAB_MAX ? kvmux_slab_alloc(&sh->slab, size) : mem_alloc(s, size);
    if (!p) return NULL;
    if (((uintptr_t)p & TAG_MASK) != 0) { /* no room for the tag: treat as OOM */
        if (size <= KVMUX_SLAB_MAX) kvmux_slab_free(&sh->slab, p, size);
        else mem_free(s, p);
        return NULL;
    }
    mem_account(s, (int64_t)entry_footprint(size));
    return p;
}

/* Free e's slot (not its value). */
static void entry_dealloc(const kvmux_store *s, shard *sh, entry *e) {
    size_t size = entry_size(e);
    mem_account(s, -(int64_t)entry_footprint(size));
    if (size <= KVMUX_SLAB_MAX) kvmux_slab_free(&sh->slab, e, size);
    else mem_free(s, e);
}

static uint64_t slot_make(uint64_t hash, const entry *e) {
    return (hash & TAG_MASK) | (uint64_t)(uintptr_t)e;
}

void kvmux_store_free(kvmux_store *s) {
    if (!s) return;
    for (uint32_t i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        for (size_t b = 0; b < sh->cap; b++) {
            if (!slot_used(sh->slots[b])) continue;
            entry *e = slot_entry(sh->slots[b]);
            kvmux_store_value_release(e_val(e));
            if (entry_size(e) > KVMUX_SLAB_MAX) mem_free(s, e);
        }
        kvmux_slab_destroy(&sh->slab);
        mem_free(s, sh->slots);
        pthread_mutex_destroy(&sh->mu);
    }
    free(s->shards);
    free((void *)s->slot_keys);
    free(s);
}

/* ---- internals (all called with the shard lock held) ---- */

static uint64_t hash_key(const kvmux_store *s, const uint8_t *key, size_t klen) {
    return kvmux_siphash24(s->hash_key, key, klen);
}

static shard *shard_for(kvmux_store *s, uint64_t hash) {
    return &s->shards[(hash >> 32) & (s->nshards - 1)];
}

static uint64_t next_version(kvmux_store *s) {
    return atomic_fetch_add_explicit(&s->last_version, 1, memory_order_relaxed) + 1;
}

static uint32_t clock32(uint64_t now) { return (uint32_t)now; }

/* The slot holding key, or NOT_FOUND. */
static size_t find_slot(const shard *sh, uint64_t hash, const uint8_t *key, size_t klen) {
    size_t mask = sh->cap - 1, i = (size_t)hash & mask;
    uint64_t tag = hash & TAG_MASK;
    for (;;) {
        uint64_t x = sh->slots[i];
        if (x == 0) return NOT_FOUND;
        if ((x & TAG_MASK) == tag && slot_used(x)) {
            const entry *e = slot_entry(x);
            if (e->klen == klen && memcmp(e_key(e), key, klen) == 0) return i;
        }
        i = (i + 1) & mask;
    }
}

/* The slot holding e (which is in the table; hash is its key's). */
static size_t find_entry(const shard *sh, uint64_t hash, const entry *e) {
    size_t mask = sh->cap - 1, i = (size_t)hash & mask;
    while (slot_entry(sh->slots[i]) != e) i = (i + 1) & mask;
    return i;
}

/* Rebuild the table with ncap slots (drops tombstones). Returns 0, or -1
 * (table unchanged) when out of memory. */
static int rehash(const kvmux_store *s, shard *sh, size_t ncap) {
    uint64_t *ns = mem_alloc(s, ncap * sizeof *ns);
    if (!ns) return -1;
    memset(ns, 0, ncap * sizeof *ns);
    for (size_t b = 0; b < sh->cap; b++) {
        uint64_t x = sh->slots[b];
        if (!slot_used(x)) continue;
        const entry *e = slot_entry(x);
        size_t i = (size_t)hash_key(s, e_key(e), e->klen) & (ncap - 1);
        while (ns[i]) i = (i + 1) & (ncap - 1);
        ns[i] = x;
    }
    mem_free(s, sh->slots);
    mem_account(s, ((int64_t)ncap - (int64_t)sh->cap) * (int64_t)sizeof *ns);
    sh->slots = ns;
    sh->cap = ncap;
    sh->tombs = 0;
    sh->expire_cursor = 0;
    return 0;
}

/* Before inserting one new entry: keep live + tombstones <= 7/8 of the
 * table (double it when live keys pass 7/16, else just sweep tombstones).
 * Returns 0, or -1 when the table is full and cannot grow. */
static int make_room(const kvmux_store *s, shard *sh) {
    if ((sh->count + sh->tombs + 1) * 8 <= sh->cap * 7) return 0;
    size_t ncap = sh->cap;
    if ((sh->count + 1) * 16 > sh->cap * 7 && sh->cap <= (SIZE_MAX / sizeof(uint64_t)) / 2)
        ncap *= 2;
    if (rehash(s, sh, ncap) == 0) return 0;
    /* No memory: go on at a higher load while an empty slot remains. */
    return sh->count + sh->tombs + 2 <= sh->cap ? 0 : -1;
}

/* Put e (a key known to be absent) in the table; make_room came first. */
static void table_insert(shard *sh, uint64_t hash, entry *e) {
    size_t mask = sh->cap - 1, i = (size_t)hash & mask;
    while (sh->slots[i] > TOMB) i = (i + 1) & mask;
    if (sh->slots[i] == TOMB) sh->tombs--;
    sh->slots[i] = slot_make(hash, e);
    sh->count++;
}

/* Unlink every waiter of the list at w and hand each to the fire callback.
 * Reads the next pointer first: once fired, a waiter may be freed. */
static void fire_list(kvmux_store *s, shard *sh, kvmux_store_waiter *w) {
    while (w) {
        kvmux_store_waiter *next = w->_next;
        w->_prev = w->_next = NULL;
        w->_entry = NULL;
        w->_state = WAITER_FIRED;
        sh->waiters--;
        s->fire(w, s->fire_ud);
        w = next;
    }
}

static void fire_waiters(kvmux_store *s, shard *sh, entry *e) {
    kvmux_store_waiter *w = e_waiters(e);
    if (!w) return;
    e_set_waiters(e, NULL);
    fire_list(s, sh, w);
}

/* Remove the entry in slot i and free it with its value. */
static void remove_at(const kvmux_store *s, shard *sh, size_t i) {
    entry *e = slot_entry(sh->slots[i]);
    snap_keep(s, sh, e);
    /* A tombstone is needed only if a probe may run past this slot. */
    if (sh->slots[(i + 1) & (sh->cap - 1)] == 0) {
        sh->slots[i] = 0;
    } else {
        sh->slots[i] = TOMB;
        sh->tombs++;
    }
    sh->count--;
    kvmux_store_value *v = e_val(e);
    if (e->version != 0) {
        sh->live--;
        sh->bytes -= e->klen + e_vlen(e);
        kvmux__store_slot_count((kvmux_store *)(uintptr_t)s, sh, e_key(e), e->klen, -1);
    }
    mem_account(s, -(int64_t)value_mem(v));
    kvmux_store_value_release(v);
    entry_dealloc(s, sh, e);
}


static void expire_at(kvmux_store *s, shard *sh, size_t i) {
    fire_waiters(s, sh, slot_entry(sh->slots[i]));
    sh->expired++;
    remove_at(s, sh, i);
}

/* Find key's slot, expiring it first if its TTL has passed. Returns the
 * slot or NOT_FOUND. Placeholders are found too: callers check version. */
static size_t lookup(kvmux_store *s, shard *sh, uint64_t hash, const uint8_t *key,
                     size_t klen, uint64_t now) {
    size_t i = find_slot(sh, hash, key, klen);
    if (i != NOT_FOUND && is_expired(slot_entry(sh->slots[i]), now)) {
        expire_at(s, sh, i);
        return NOT_FOUND;
    }
    return i;
}

/* Call read with e's state; marks inline bytes so that
 * kvmux_store_value_hold copies them. */
static int call_read(kvmux_store *s, kvmux_store_read_fn read, void *ud, const entry *e) {
    if (!read) return 0;
    const uint8_t *b = e_vbytes(e);
    size_t n = e_vlen(e);
    if (b && !(e->flags & F_OOL)) {
        tls_inline.bytes = b;
        tls_inline.len = n;
        tls_inline.store = s;
    }
    int rc = read(ud, e->version, b, n);
    tls_inline.bytes = NULL;
    return rc;
}


/* The newval for a caller-built value: large ones are kept as they are,
 * small ones copied inline (the caller then drops its reference). */
static newval newval_of(kvmux_store_value *val) {
    newval nv = {NULL, NULL, 0};
    if (!val) return nv;
    nv.len = val->len;
    if (val->len > KVMUX_STORE_INLINE_MAX) nv.val = val;
    else nv.bytes = val->data;
    return nv;
}

/* Write nv under key with expiry expires, in slot i (the live entry or
 * placeholder) or a new entry (i == NOT_FOUND). version 0 = the next one.
 * notify: nonzero fires the old waiters and journals the change with
 * notify as the record's op (KVMUX_STORE_REC_SET, or _EXPIRY); 0, for
 * recovery, leaves waiters and logs nothing. Takes the reference in
 * nv->val on success only. Returns the new version, or 0 when out of
 * memory (nothing changed). */
static uint64_t put(kvmux_store *s, shard *sh, size_t i, uint64_t hash, const uint8_t *key,
                    size_t klen, const newval *nv, uint64_t expires, uint64_t now,
                    uint64_t version, int notify) {
    if (klen > UINT16_MAX) return 0;
    entry *old = i == NOT_FOUND ? NULL : slot_entry(sh->slots[i]);
    kvmux_store_waiter *keep = old && !notify ? e_waiters(old) : NULL;
    kvmux_store_waiter *tofire = old && notify ? e_waiters(old) : NULL;
    unsigned flags = (nv->val ? F_OOL : 0u) | (expires ? F_TTL : 0u) | (keep ? F_WAIT : 0u);
    size_t ivlen = nv->val ? 0 : nv->len;
    size_t size = layout_size(flags, klen, ivlen);
    kvmux_store_value *oldv = old ? e_val(old) : NULL;
    size_t oldvlen = old ? e_vlen(old) : 0;
    uint64_t oldver = old ? old->version : 0;
    entry *e;
    if (old && old->flags == flags &&
        (size <= KVMUX_SLAB_MAX
             ? entry_size(old) <= KVMUX_SLAB_MAX &&
                   kvmux_slab_class_size(size) == kvmux_slab_class_size(entry_size(old))
             : entry_size(old) == size)) {
        e = old; /* same slot size: rewrite in place, key stays where it is */
    } else {
        if (!old && make_room(s, sh) != 0) return 0;
        e = entry_alloc(s, sh, size);
        if (!e) return 0;
    }
    if (old) snap_keep(s, sh, old); /* the change happens: no failure below */
    uint64_t ver = version ? version : next_version(s);
    if (e == old) {
        entry_build(e, flags, ver, clock32(now), e_key(old), klen, nv->val, nv->bytes, ivlen,
                    expires, keep);
    } else {
        entry_build(e, flags, ver, clock32(now), key, klen, nv->val, nv->bytes, ivlen, expires,
                    keep);
        for (kvmux_store_waiter *w = keep; w; w = w->_next) w->_entry = e;
        if (old) sh->slots[i] = (sh->slots[i] & TAG_MASK) | (uint64_t)(uintptr_t)e;
        else table_insert(sh, hash, e);
    }
    if (oldver != 0) {
        sh->bytes -= klen + oldvlen;
    } else {
        sh->live++;
        kvmux__store_slot_count(s, sh, key, klen, 1);
    }
    sh->bytes += klen + nv->len;
    mem_account(s, (int64_t)value_mem(nv->val) - (int64_t)value_mem(oldv));
    if (notify && s->journal) {
        /* notify is the record's op: a SET, or an EXPIRY without the value */
        int full = notify != KVMUX_STORE_REC_EXPIRY;
        kvmux_store_record r = {notify, e_key(e), klen, full ? e_vbytes(e) : NULL,
                                full ? nv->len : 0, ver, expires, now};
        s->journal(s->journal_ud, &r);
    }
    if (old && old != e) entry_dealloc(s, sh, old);
    kvmux_store_value_release(oldv);
    fire_list(s, sh, tofire);
    return ver;
}

static uint64_t expiry_for(uint64_t now, uint64_t ttl_ms) {
    return ttl_ms == 0 ? 0 : kvmux_add_sat_u64(now, ttl_ms);
}

/* Copy value into a fresh value buffer (NULL for an empty value).
 * Returns 0, -1 when out of memory. */
static int dup_value(kvmux_store *s, const uint8_t *value, size_t vlen,
                     kvmux_store_value **out) {
    *out = NULL;
    if (vlen == 0) return 0;
    kvmux_store_value *v = kvmux_store_value_new(s, vlen);
    if (!v) return -1;
    memcpy(v->data, value, vlen);
    *out = v;
    return 0;
}

/* ---- operations ---- */

int kvmux_store_get(kvmux_store *s, const uint8_t *key, size_t klen,
                    kvmux_store_read_fn read, void *ud) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc = KVMUX_STATUS_NOT_FOUND;
    pthread_mutex_lock(&sh->mu);
    size_t i = lookup(s, sh, hash, key, klen, now);
    if (i != NOT_FOUND) {
        entry *e = slot_entry(sh->slots[i]);
        if (e->version != 0) {
            e->atime = clock32(now);
            rc = call_read(s, read, ud, e);
            if (rc == 0) rc = KVMUX_STATUS_OK;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int kvmux_store_get_full(kvmux_store *s, const uint8_t *key, size_t klen,
                         kvmux_store_read_fn read, void *ud, uint64_t *expire_at) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc = KVMUX_STATUS_NOT_FOUND;
    pthread_mutex_lock(&sh->mu);
    size_t i = lookup(s, sh, hash, key, klen, now);
    if (i != NOT_FOUND) {
        entry *e = slot_entry(sh->slots[i]);
        if (e->version != 0) {
            /* No atime update: a migration's copy is not a client's use. */
            if (expire_at) *expire_at = e_expires(e);
            rc = call_read(s, read, ud, e);
            if (rc == 0) rc = KVMUX_STATUS_OK;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

/* SET of nv; the caller owns whatever put did not take. */
static int set_nv(kvmux_store *s, const uint8_t *key, size_t klen, const newval *nv,
                  uint64_t ttl_ms, uint64_t *version) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    pthread_mutex_lock(&sh->mu);
    size_t i = lookup(s, sh, hash, key, klen, now);
    uint64_t v = put(s, sh, i, hash, key, klen, nv, expiry_for(now, ttl_ms), now, 0, 1);
    pthread_mutex_unlock(&sh->mu);
    if (v == 0) return KVMUX_STATUS_INTERNAL;
    if (version) *version = v;
    return KVMUX_STATUS_OK;
}

int kvmux_store_set(kvmux_store *s, const uint8_t *key, size_t klen,
                    const uint8_t *value, size_t vlen, uint64_t ttl_ms,
                    uint64_t *version) {
    if (vlen <= KVMUX_STORE_INLINE_MAX) {
        newval nv = {NULL, value, vlen};
        return set_nv(s, key, klen, &nv, ttl_ms, version);
    }
    kvmux_store_value *val;
    /* Copy outside the lock: large values must not stall the shard. */
    if (dup_value(s, value, vlen, &val) != 0) return KVMUX_STATUS_INTERNAL;
    return kvmux_store_set_value(s, key, klen, val, ttl_ms, version);
}

int kvmux_store_set_value(kvmux_store *s, const uint8_t *key, size_t klen,
                          kvmux_store_value *val, uint64_t ttl_ms, uint64_t *version) {
    newval nv = newval_of(val);
    int rc = set_nv(s, key, klen, &nv, ttl_ms, version);
    if (rc != KVMUX_STATUS_OK || !nv.val) kvmux_store_value_release(val);
    return rc;
}

int kvmux_store_del(kvmux_store *s, const uint8_t *key, size_t klen) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc = KVMUX_STATUS_NOT_FOUND;
    pthread_mutex_lock(&sh->mu);
    size_t i = lookup(s, sh, hash, key, klen, now);
    entry *e = i != NOT_FOUND ? slot_entry(sh->slots[i]) : NULL;
    if (e && e->version != 0) {
        /* Waiters on a live key all wait on its current version: a delete
         * changes it (to "absent"), so every one of them fires. */
        fire_waiters(s, sh, e);
        if (s->journal) {
            kvmux_store_record r = {KVMUX_STORE_REC_DEL, key, klen, NULL, 0, e->version, 0, now};
            s->journal(s->journal_ud, &r);
        }
        remove_at(s, sh, i);
        rc = KVMUX_STATUS_OK;
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

/* Parse a canonical decimal i64 (Redis string2ll rules). Returns 0 or -1. */
static int parse_i64(const uint8_t *p, size_t n, int64_t *out) {
    if (n == 0 || n > 20) return -1;
    size_t i = 0;
    int neg = 0;
    if (p[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1) return -1;
    }
    if (p[i] == '0' && (n - i > 1 || neg)) return -1; /* "007", "-0" */
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t acc = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (acc > (limit - d) / 10) return -1;
        acc = acc * 10 + d;
    }
    if (neg) {
        *out = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
    } else {
        *out = (int64_t)acc;
    }
    return 0;
}

/* Format v in decimal into buf (>= 21 bytes). Returns the length. */
static size_t format_i64(int64_t v, char *buf) {
    char tmp[21];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    if (v < 0) buf[len++] = '-';
    while (n) buf[len++] = tmp[--n];
    return len;
}

int kvmux_store_incr(kvmux_store *s, const uint8_t *key, size_t klen,
                     int64_t delta, int64_t *value, uint64_t *version) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc = KVMUX_STATUS_OK;
    pthread_mutex_lock(&sh->mu);
    size_t i = lookup(s, sh, hash, key, klen, now);
    entry *e = i != NOT_FOUND ? slot_entry(sh->slots[i]) : NULL;
    int64_t cur = 0, next;
    uint64_t expires = 0;
    if (e && e->version != 0) {
        if (parse_i64(e_vbytes(e), e_vlen(e), &cur) != 0) {
            rc = KVMUX_STATUS_NOT_INTEGER;
            goto out;
        }
        expires = e_expires(e); /* INCR keeps the TTL, like Redis */
    }
    if (__builtin_add_overflow(cur, delta, &next)) {
        rc = KVMUX_STATUS_OVERFLOW;
        goto out;
    }
    char buf[21];
    newval nv = {NULL, (const uint8_t *)buf, format_i64(next, buf)};
    uint64_t v = put(s, sh, i, hash, key, klen, &nv, expires, now, 0, 1);
    if (v == 0) {
        rc = KVMUX_STATUS_INTERNAL;
        goto out;
    }
    if (value) *value = next;
    if (version) *version = v;
out:
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

/* CAS of nv; the caller owns whatever put did not take (*taken says). */
static int cas_nv(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t expected,
                  const newval *nv, uint64_t ttl_ms, uint64_t *version) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc = KVMUX_STATUS_OK;
    uint64_t out_version = 0;
    pthread_mutex_lock(&sh->mu);
    size_t i = lookup(s, sh, hash, key, klen, now);
    uint64_t cur = i != NOT_FOUND ? slot_entry(sh->slots[i])->version : 0;
    if (cur == 0 && expected != 0) {
        rc = KVMUX_STATUS_NOT_FOUND;
    } else if (cur != expected) {
        rc = KVMUX_STATUS_VERSION_MISMATCH;
        out_version = cur;
    } else {
        out_version = put(s, sh, i, hash, key, klen, nv, expiry_for(now, ttl_ms), now, 0, 1);
        if (out_version == 0) rc = KVMUX_STATUS_INTERNAL;
    }
    pthread_mutex_unlock(&sh->mu);
    if (version) *version = out_version;
    return rc;
}

int kvmux_store_cas(kvmux_store *s, const uint8_t *key, size_t klen,
                    uint64_t expected, const uint8_t *value, size_t vlen,
                    uint64_t ttl_ms, uint64_t *version) {
    if (vlen <= KVMUX_STORE_INLINE_MAX) {
        newval nv = {NULL, value, vlen};
        return cas_nv(s, key, klen, expected, &nv, ttl_ms, version);
    }
    kvmux_store_value *val;
    if (dup_value(s, value, vlen, &val) != 0) return KVMUX_STATUS_INTERNAL;
    return kvmux_store_cas_value(s, key, klen, expected, val, ttl_ms, version);
}

int kvmux_store_cas_value(kvmux_store *s, const uint8_t *key, size_t klen,
                          uint64_t expected, kvmux_store_value *val, uint64_t ttl_ms,
                          uint64_t *version) {
    newval nv = newval_of(val);
    int rc = cas_nv(s, key, klen, expected, &nv, ttl_ms, version);
    if (rc != KVMUX_STATUS_OK || !nv.val) kvmux_store_value_release(val);
    return rc;
}

int kvmux_store_wait(kvmux_store *s, const uint8_t *key, size_t klen,
                     uint64_t version, kvmux_store_waiter *w,
                     kvmux_store_read_fn read, void *ud) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc;
    pthread_mutex_lock(&sh->mu);
    size_t i = lookup(s, sh, hash, key, klen, now);
    entry *e = i != NOT_FOUND ? slot_entry(sh->slots[i]) : NULL;
    uint64_t cur = e ? e->version : 0;
    if (cur != version) {
        if (cur) rc = call_read(s, read, ud, e);
        else rc = read ? read(ud, 0, NULL, 0) : 0;
        if (rc == 0) rc = KVMUX_STATUS_OK;
        goto out;
    }
    if (!s->fire) {
        rc = KVMUX_STATUS_INTERNAL;
        goto out;
    }
    if (!e) {
        /* Placeholder: version 0, just a key and a waiter list. */
        if (klen > UINT16_MAX || make_room(s, sh) != 0 ||
            !(e = entry_alloc(s, sh, layout_size(F_WAIT, klen, 0)))) {
            rc = KVMUX_STATUS_INTERNAL;
            goto out;
        }
        entry_build(e, F_WAIT, 0, clock32(now), key, klen, NULL, NULL, 0, 0, NULL);
        table_insert(sh, hash, e);
    } else if (!(e->flags & F_WAIT)) {
        /* First waiter on a live key: move it to a slot with a list head. */
        unsigned flags = e->flags | F_WAIT;
        entry *n = entry_alloc(s, sh, layout_size(flags, e->klen, e->ivlen));
        if (!n) {
            rc = KVMUX_STATUS_INTERNAL;
            goto out;
        }
        entry_build(n, flags, e->version, e->atime, e_key(e), e->klen, e_val(e),
                    e_key(e) + e->klen, e->ivlen, e_expires(e), NULL);
        sh->slots[i] = (sh->slots[i] & TAG_MASK) | (uint64_t)(uintptr_t)n;
        entry_dealloc(s, sh, e);
        e = n;
    }
    kvmux_store_waiter *head = e_waiters(e);
    w->_entry = e;
    w->_hash = hash;
    w->_state = WAITER_REGISTERED;
    w->_prev = NULL;
    w->_next = head;
    if (head) head->_prev = w;
    e_set_waiters(e, w);
    w->key_expires_ms = e_expires(e);
    sh->waiters++;
    rc = KVMUX_STORE_PARKED;
out:
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int kvmux_store_wait_cancel(kvmux_store *s, kvmux_store_waiter *w,
                            uint64_t *current) {
    shard *sh = shard_for(s, w->_hash);
    pthread_mutex_lock(&sh->mu);
    if (w->_state != WAITER_REGISTERED) {
        pthread_mutex_unlock(&sh->mu);
        return 0;
    }
    entry *e = w->_entry;
    if (w->_prev) w->_prev->_next = w->_next;
    else e_set_waiters(e, w->_next);
    if (w->_next) w->_next->_prev = w->_prev;
    w->_prev = w->_next = NULL;
    w->_entry = NULL;
    w->_state = WAITER_CANCELLED;
    sh->waiters--;
    /* The version is reported as stored even if the TTL just passed: the
     * caller answers TIMEOUT, and the next access expires the key. */
    if (current) *current = e->version;
    if (e->version == 0 && !e_waiters(e)) /* last waiter of a placeholder */
        remove_at(s, sh, find_entry(sh, w->_hash, e));
    pthread_mutex_unlock(&sh->mu);
    return 1;
}

int kvmux_store_wait_poll(kvmux_store *s, kvmux_store_waiter *w) {
    uint64_t now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, w->_hash);
    int fired;
    pthread_mutex_lock(&sh->mu);
    if (w->_state != WAITER_REGISTERED) {
        fired = 1;
    } else {
        entry *e = w->_entry;
        if (is_expired(e, now)) {
            expire_at(s, sh, find_entry(sh, w->_hash, e));
            fired = 1;
        } else {
            w->key_expires_ms = e_expires(e);
            fired = 0;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return fired;
}

void kvmux_store_get_stats(kvmux_store *s, kvmux_store_stats *st) {
    memset(st, 0, sizeof *st);
    for (uint32_t i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        st->keys += sh->live;
        st->bytes += sh->bytes;
        st->waiters += sh->waiters;
        st->expired += sh->expired;
        st->expired_active += sh->expired_active;
        st->evicted += sh->evicted;
        pthread_mutex_unlock(&sh->mu);
    }
    st->used_memory = kvmux_store_used_memory(s);
}

/* ---- persistence hooks ---- */

void kvmux_store_set_journal(kvmux_store *s, kvmux_store_journal_fn fn, void *ud) {
    s->journal = fn;
    s->journal_ud = ud;
}

uint64_t kvmux_store_now(kvmux_store *s) { return s->clock(s->clock_ud); }

uint64_t kvmux_store_last_version(kvmux_store *s) {
    return atomic_load_explicit(&s->last_version, memory_order_relaxed);
}

void kvmux_store_bump_version(kvmux_store *s, uint64_t v) {
    uint64_t cur = atomic_load_explicit(&s->last_version, memory_order_relaxed);
    while (cur < v && !atomic_compare_exchange_weak_explicit(
                          &s->last_version, &cur, v, memory_order_relaxed,
                          memory_order_relaxed)) {
    }
}

int kvmux_store_restore(kvmux_store *s, const uint8_t *key, size_t klen,
                        const uint8_t *value, size_t vlen, uint64_t version,
                        uint64_t expires_ms) {
    if (version == 0) return KVMUX_STATUS_INTERNAL;
    newval nv = {NULL, value, vlen};
    if (vlen > KVMUX_STORE_INLINE_MAX) {
        if (dup_value(s, value, vlen, &nv.val) != 0) return KVMUX_STATUS_INTERNAL;
        nv.bytes = NULL;
    }
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    pthread_mutex_lock(&sh->mu);
    size_t i = find_slot(sh, hash, key, klen);
    uint64_t v = put(s, sh, i, hash, key, klen, &nv, expires_ms, now, version, 0);
    pthread_mutex_unlock(&sh->mu);
    if (v == 0) {
        kvmux_store_value_release(nv.val);
        return KVMUX_STATUS_INTERNAL;
    }
    kvmux_store_bump_version(s, version);
    return KVMUX_STATUS_OK;
}

void kvmux_store_restore_del(kvmux_store *s, const uint8_t *key, size_t klen) {
    uint64_t hash = hash_key(s, key, klen);
    shard *sh = shard_for(s, hash);
    pthread_mutex_lock(&sh->mu);
    size_t i = find_slot(sh, hash, key, klen);
    if (i != NOT_FOUND) {
        entry *e = slot_entry(sh->slots[i]);
        if (e->version != 0 && !e_waiters(e)) remove_at(s, sh, i);
    }
    pthread_mutex_unlock(&sh->mu);
}

uint32_t kvmux_store_snapshot_shard(kvmux_store *s, uint32_t i, kvmux_store_journal_fn fn,
                                    void *ud) {
    if (i >= s->nshards) return s->nshards;
    shard *sh = &s->shards[i];
    uint64_t now = s->clock(s->clock_ud);
    pthread_mutex_lock(&sh->mu);
    for (size_t b = 0; b < sh->cap; b++) {
        if (!slot_used(sh->slots[b])) continue;
        const entry *e = slot_entry(sh->slots[b]);
        if (e->version == 0 || is_expired(e, now)) continue;
        kvmux_store_record r = {KVMUX_STORE_REC_SET, e_key(e), e->klen, e_vbytes(e),
                                e_vlen(e), e->version, e_expires(e), now};
        fn(ud, &r);
    }
    pthread_mutex_unlock(&sh->mu);
    return s->nshards;
}

/* ---- background snapshots ---- */

/* A SET record of e as the snapshot sees it (now_ms its instant), unless
 * e had expired by then. */
static void snap_emit(const kvmux_store *s, const shard *sh, const entry *e) {
    if (is_expired(e, s->snap_now)) return;
    kvmux_store_record r = {KVMUX_STORE_REC_SET, e_key(e), e->klen, e_vbytes(e),
                            e_vlen(e), e->version, e_expires(e), s->snap_now};
    s->snap_fn(s->snap_ud, (uint32_t)(sh - s->shards), &r);
}

void kvmux__store_snap_keep(const kvmux_store *s, const shard *sh, const entry *e) {
    snap_emit(s, sh, e);
}

void kvmux_store_snap_measure(kvmux_store *s, uint64_t per_record, uint64_t *bound) {
    for (uint32_t i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        bound[i] = sh->live * per_record + sh->bytes;
        pthread_mutex_unlock(&sh->mu);
    }
}

void kvmux_store_snap_begin(kvmux_store *s, uint64_t now, kvmux_store_snap_fn fn, void *ud) {
    s->snap_fn = fn;
    s->snap_ud = ud;
    s->snap_now = now;
    s->snap_last = kvmux_store_last_version(s);
    for (uint32_t i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        sh->snap_pending = 1;
        pthread_mutex_unlock(&sh->mu);
    }
}

void kvmux__store_snap_flush(const kvmux_store *s, shard *sh) {
    /* Keys unchanged since the instant; the others were kept as they were
     * when they first changed (snap_keep), or did not exist then. */
    for (size_t b = 0; sh->snap_pending && b < sh->cap; b++) {
        if (!slot_used(sh->slots[b])) continue;
        const entry *e = slot_entry(sh->slots[b]);
        if (e->version != 0 && e->version <= s->snap_last) snap_emit(s, sh, e);
    }
    sh->snap_pending = 0;
}

void kvmux_store_snap_shard(kvmux_store *s, uint32_t i) {
    if (i >= s->nshards) return;
    shard *sh = &s->shards[i];
    pthread_mutex_lock(&sh->mu);
    kvmux__store_snap_flush(s, sh);
    pthread_mutex_unlock(&sh->mu);
}

uint32_t kvmux_store_shards(const kvmux_store *s) { return s->nshards; }

/* ---- memory limit, eviction and active expiry ---- */

void kvmux_store_set_maxmemory(kvmux_store *s, uint64_t bytes, int policy) {
    atomic_store(&s->maxmemory, bytes);
    atomic_store(&s->policy, policy);
}

uint64_t kvmux_store_empty_memory(uint32_t shards) {
    return (uint64_t)shards * INITIAL_SLOTS * sizeof(((shard *)0)->slots[0]);
}

uint64_t kvmux_store_used_memory(const kvmux_store *s) {
    return atomic_load_explicit(&((kvmux_store *)(uintptr_t)s)->used, memory_order_relaxed);
}

/* xorshift64 over a shared atomic state: racing callers may draw the same
 * number, which only makes two samples alike. */
static uint64_t rand64(kvmux_store *s) {
    uint64_t x = atomic_load_explicit(&s->rng, memory_order_relaxed);
    if (x == 0) x = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    atomic_store_explicit(&s->rng, x, memory_order_relaxed);
    return x;
}

#define EVICT_SAMPLES 5        /* keys compared per eviction (Redis default) */
#define EVICT_MAX_PER_WRITE 64 /* bound on the work one write can trigger */
#define EVICT_SLOT_TRIES 64    /* random slots looked at for the samples */
#define EVICT_SHARDS 5         /* shards compared per eviction */

/* With sh locked: the slot of the least recently used (largest age at
 * now32) of up to EVICT_SAMPLES live keys found in random slots, or
 * NOT_FOUND; *age_out = its age. */
static size_t sample_oldest(kvmux_store *s, shard *sh, uint32_t now32, uint32_t *age_out) {
    size_t best = NOT_FOUND;
    uint32_t best_age = 0;
    int found = 0;
    for (uint32_t t = 0; t < EVICT_SLOT_TRIES && found < EVICT_SAMPLES; t++) {
        size_t i = (size_t)rand64(s) & (sh->cap - 1);
        if (!slot_used(sh->slots[i])) continue;
        const entry *e = slot_entry(sh->slots[i]);
        if (e->version == 0) continue;
        found++;
        uint32_t age = now32 - e->atime;
        if (best == NOT_FOUND || age > best_age) {
            best = i;
            best_age = age;
        }
    }
    /* A sparse shard (few keys in a big table): the first live key. */
    for (size_t b = 0; best == NOT_FOUND && sh->live && b < sh->cap; b++) {
        if (slot_used(sh->slots[b]) && slot_entry(sh->slots[b])->version != 0) {
            best = b;
            best_age = now32 - slot_entry(sh->slots[b])->atime;
        }
    }
    *age_out = best_age;
    return best;
}

/* The next shard holding live keys from a random start, or -1. */
static int64_t random_live_shard(kvmux_store *s) {
    uint32_t start = (uint32_t)(rand64(s) & (s->nshards - 1));
    for (uint32_t k = 0; k < s->nshards; k++) {
        uint32_t i = (start + k) & (s->nshards - 1);
        shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        uint64_t live = sh->live; /* a hint: the caller locks again */
        pthread_mutex_unlock(&sh->mu);
        if (live) return i;
    }
    return -1;
}

/* Evict one approximately-LRU key: sample EVICT_SAMPLES keys in each of
 * EVICT_SHARDS random non-empty shards, then evict the oldest sample of
 * the shard whose sample was oldest (re-sampled under its lock: close
 * enough, and no shard lock is held while another is taken). Returns 1 if
 * a key was evicted. */
static int evict_one(kvmux_store *s) {
    int64_t best_shard = -1;
    uint32_t best_age = 0;
    uint64_t now = s->clock(s->clock_ud);
    uint32_t now32 = clock32(now);
    for (int k = 0; k < EVICT_SHARDS; k++) {
        int64_t i = random_live_shard(s);
        if (i < 0) return 0;
        shard *sh = &s->shards[i];
        uint32_t age;
        pthread_mutex_lock(&sh->mu);
        size_t slot = sample_oldest(s, sh, now32, &age);
        if (slot != NOT_FOUND && (best_shard < 0 || age > best_age)) {
            best_age = age;
            best_shard = i;
        }
        pthread_mutex_unlock(&sh->mu);
    }
    if (best_shard < 0) return 0;
    shard *sh = &s->shards[best_shard];
    uint32_t age;
    pthread_mutex_lock(&sh->mu);
    size_t best = sample_oldest(s, sh, now32, &age);
    if (best != NOT_FOUND) {
        entry *e = slot_entry(sh->slots[best]);
        fire_waiters(s, sh, e);
        if (s->journal) {
            kvmux_store_record r = {KVMUX_STORE_REC_DEL, e_key(e), e->klen, NULL, 0,
                                    e->version, 0, now};
            s->journal(s->journal_ud, &r);
        }
        sh->evicted++;
        remove_at(s, sh, best);
    }
    pthread_mutex_unlock(&sh->mu);
    return best != NOT_FOUND;
}

int kvmux_store_over_limit(kvmux_store *s) {
    uint64_t max = atomic_load_explicit(&s->maxmemory, memory_order_relaxed);
    if (max == 0 || kvmux_store_used_memory(s) <= max) return 0;
    if (atomic_load_explicit(&s->policy, memory_order_relaxed) != KVMUX_MAXMEMORY_ALLKEYS_LRU)
        return 1;
    for (int i = 0; i < EVICT_MAX_PER_WRITE && kvmux_store_used_memory(s) > max; i++)
        if (!evict_one(s)) break;
    return kvmux_store_used_memory(s) > max;
}

uint64_t kvmux_store_expire_cycle(kvmux_store *s, uint32_t samples, uint64_t budget_ms) {
    uint64_t start = s->clock(s->clock_ud), total = 0;
    for (uint32_t i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        for (;;) {
            uint64_t now = s->clock(s->clock_ud);
            if (now - start > budget_ms) return total;
            uint32_t seen = 0, with_ttl = 0, expired = 0;
            pthread_mutex_lock(&sh->mu);
            if (sh->live == 0) {
                pthread_mutex_unlock(&sh->mu);
                break;
            }
            /* Walk slots from the cursor until `samples` keys were seen or
             * every slot was visited once. Removal leaves a tombstone or
             * an empty slot in place, so the walk never skips a key. */
            for (size_t b = 0; b < sh->cap && seen < samples; b++) {
                size_t idx = sh->expire_cursor++ & (sh->cap - 1);
                if (!slot_used(sh->slots[idx])) continue;
                const entry *e = slot_entry(sh->slots[idx]);
                if (e->version == 0) continue;
                seen++;
                if (e->flags & F_TTL) with_ttl++;
                if (is_expired(e, now)) {
                    expire_at(s, sh, idx);
                    sh->expired_active++;
                    expired++;
                }
            }
            pthread_mutex_unlock(&sh->mu);
            total += expired;
            /* Like Redis: go on while more than 25% of what we saw expired. */
            if (with_ttl == 0 || expired * 4 <= with_ttl) break;
        }
    }
    return total;
}

/* ---- internals shared with store_ttl.c and store_scan.c ---- */

uint64_t kvmux__store_hash(const kvmux_store *s, const uint8_t *key, size_t klen) {
    return hash_key(s, key, klen);
}

shard *kvmux__store_shard(kvmux_store *s, uint64_t hash) { return shard_for(s, hash); }

size_t kvmux__store_lookup(kvmux_store *s, shard *sh, uint64_t hash, const uint8_t *key,
                           size_t klen, uint64_t now) {
    return lookup(s, sh, hash, key, klen, now);
}

uint64_t kvmux__store_put(kvmux_store *s, shard *sh, size_t i, uint64_t hash,
                          const uint8_t *key, size_t klen, const newval *nv,
                          uint64_t expires, uint64_t now, uint64_t version, int jop) {
    return put(s, sh, i, hash, key, klen, nv, expires, now, version, jop);
}

size_t kvmux__store_find_raw(shard *sh, uint64_t hash, const uint8_t *key, size_t klen) {
    return find_slot(sh, hash, key, klen);
}

void kvmux_store_purge_expired(kvmux_store *s, uint64_t upto) {
    for (uint32_t n = 0; n < s->nshards; n++) {
        shard *sh = &s->shards[n];
        pthread_mutex_lock(&sh->mu);
        for (size_t i = 0; i < sh->cap; i++) {
            uint64_t sl = sh->slots[i];
            if (sl == 0 || sl == TOMB) continue;
            entry *e = slot_entry(sl);
            if (e->version != 0 && (e->flags & F_TTL) && e_expires(e) <= upto && !e_waiters(e))
                remove_at(s, sh, i); /* tombstones: nothing moves */
        }
        pthread_mutex_unlock(&sh->mu);
    }
}
