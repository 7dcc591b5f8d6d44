/* kvmuxd's in-memory key-value store: a sharded hash table with versions,
 * TTLs and parked waiters (the machinery behind WAIT).
 *
 * Thread safety: every function is safe to call from any number of threads
 * at once (each shard has its own mutex) unless stated otherwise.
 *
 * Results are KVMUX_STATUS_* values from proto.h (non-negative), so the
 * dispatcher can put them on the wire unchanged; KVMUX_STORE_PARKED is the
 * one extra, internal result. Out of memory is KVMUX_STATUS_INTERNAL with the
 * store left unchanged: the store never aborts. */
#ifndef KVMUX_STORE_H
#define KVMUX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

typedef struct kvmux_store kvmux_store;

/* kvmux_store_wait: not answered now, the waiter was registered. */
#define KVMUX_STORE_PARKED 100

/* A parked WAIT as the store sees it. The caller embeds it in its own
 * struct (container_of) and keeps it alive until the store lets go of it:
 * either kvmux_store_wait_cancel() returned 1, or the fire callback ran.
 * Fields starting with '_' belong to the store and are protected by the
 * shard lock; the caller must not touch them. */
typedef struct kvmux_store_waiter {
    struct kvmux_store_waiter *_prev, *_next; /* the key's waiter list */
    void *_entry;                             /* entry the waiter hangs on */
    uint64_t _hash;                           /* the key's hash */
    int _state;                               /* enum waiter_state in store.c */
    uint64_t key_expires_ms; /* out: the key's expiry (store clock) when the
                                waiter was registered or last polled, 0 =
                                none; a waiter is fired when the key expires,
                                but only if someone looks (see _poll) */
} kvmux_store_waiter;

/* Called when a write (SET/DEL/INCR/CAS or expiry) changes the key a waiter
 * is parked on. The waiter is already unregistered; from this call on it
 * belongs to the caller again. Runs on the writer's thread WITH THE SHARD
 * LOCK HELD: it must be short, must not block, and must not call the store.
 * It runs exactly once per registration that was not cancelled. */
typedef void (*kvmux_store_fire_fn)(kvmux_store_waiter *w, void *user_data);

/* An immutable, reference-counted value buffer. The store holds one
 * reference per entry; anyone else holding one keeps the bytes alive (and
 * unchanged) after the key is overwritten or deleted. */
typedef struct kvmux_store_value kvmux_store_value;

/* Receives a key's current version and value under the shard lock (the
 * value pointer is valid only during the call), so the caller can copy it
 * straight into its output buffer, or keep it by taking a reference with
 * kvmux_store_value_hold(value) (no copy for a value longer than
 * KVMUX_STORE_INLINE_MAX; a small inline one is copied). version 0 with (NULL, 0)
 * means absent; an empty value is (NULL, 0) with a version.
 * Return 0, or a nonzero KVMUX_STATUS_* that the store call then returns
 * (e.g. INTERNAL when the copy could not be allocated). */
typedef int (*kvmux_store_read_fn)(void *user_data, uint64_t version,
                                   const uint8_t *value, size_t len);

typedef uint64_t (*kvmux_store_clock_fn)(void *user_data);

typedef struct kvmux_store_options {
    uint32_t shards;            /* power of two in [1, 65536]; default 256 */
    kvmux_store_clock_fn clock; /* monotonic ms; default kvmux_clock_ms */
    void *clock_user_data;
    kvmux_store_fire_fn fire;   /* NULL: WAIT cannot park (returns INTERNAL) */
    void *fire_user_data;
    const uint8_t *hash_key;    /* 16 bytes of SipHash key; NULL = random */
    /* Allocator for slab blocks, large entries, values and tables (tests
     * inject failures through it); NULL = malloc / free. */
    void *(*alloc)(void *user_data, size_t n);
    void (*dealloc)(void *user_data, void *p);
    void *alloc_user_data;
    int slot_keys;              /* nonzero (cluster mode): keep live keys per
                                   hash slot (kvmux_store_slot_keys), 64 KiB */
} kvmux_store_options;

typedef struct kvmux_store_stats {
    uint64_t keys;              /* live keys (expired-but-unseen included) */
    uint64_t bytes;             /* key + value bytes of live keys */
    uint64_t waiters;           /* parked waiters */
    uint64_t expired;           /* keys removed because their TTL passed */
    uint64_t expired_active;    /* ... of which by the active cycle */
    uint64_t evicted;           /* keys removed by --maxmemory allkeys-lru */
    uint64_t used_memory;       /* accounted bytes: entries (their slab size
                                   class), out-of-line values (malloc
                                   chunk), hash tables */
} kvmux_store_stats;

/* Defaults for o. Thread-safe: yes. */
void kvmux_store_options_init(kvmux_store_options *o);

/* Create a store. opts may be NULL for defaults. On success *out owns it
 * (free with kvmux_store_free). Returns 0, or -1 (out of memory, bad shard
 * count, or no randomness for the hash key); *out untouched on error. */
int kvmux_store_new(kvmux_store **out, const kvmux_store_options *opts);

/* Free the store and every entry. No other thread may be using it, and no
 * waiter may still be registered (they would be forgotten, never fired).
 * s may be NULL. Thread-safe: no. */
void kvmux_store_free(kvmux_store *s);

/* GET: calls read(ud, version, value, len) with the key's current state.
 * Returns OK, NOT_FOUND (read not called), or read's nonzero result. */
int kvmux_store_get(kvmux_store *s, const uint8_t *key, size_t klen,
                    kvmux_store_read_fn read, void *ud);

/* GET for a slot migration's copy: as kvmux_store_get, plus *expire_at
 * (may be NULL) = the key's absolute expiry on the store clock (0 =
 * none), read under the same lock as the value and version. Does not
 * touch the key's LRU time. Returns OK, NOT_FOUND, or read's result. */
int kvmux_store_get_full(kvmux_store *s, const uint8_t *key, size_t klen,
                         kvmux_store_read_fn read, void *ud, uint64_t *expire_at);

/* A new value of len bytes (len > 0, contents undefined) with one
 * reference owned by the caller, from the store's allocator: fill it via
 * kvmux_store_value_data, then give it to kvmux_store_set_value /
 * kvmux_store_cas_value, or drop it with kvmux_store_value_release.
 * NULL when out of memory. The store must outlive the value. */
kvmux_store_value *kvmux_store_value_new(kvmux_store *s, size_t len);
uint8_t *kvmux_store_value_data(kvmux_store_value *v);
size_t kvmux_store_value_len(const kvmux_store_value *v);

/* Values up to this many bytes are stored inline in their key's entry
 * (copied in on write, even when given as a kvmux_store_value); larger
 * ones are kept out of line as a kvmux_store_value, by reference. */
#define KVMUX_STORE_INLINE_MAX 255u

/* Keep the value whose bytes start at value beyond the callback: ONLY a
 * non-NULL value pointer received by a kvmux_store_read_fn, during the
 * callback, on the callback's thread. A value stored out of line (longer
 * than KVMUX_STORE_INLINE_MAX) gets one more reference, without copying; a
 * small inline value is copied into a new kvmux_store_value. Returns the
 * handle (release it with kvmux_store_value_release, from any thread,
 * without any lock), or NULL when the copy could not be allocated. */
kvmux_store_value *kvmux_store_value_hold(const uint8_t *value);

/* Take one more reference to v (any thread, no lock needed: the caller
 * already holds one). Returns v. */
kvmux_store_value *kvmux_store_value_retain(kvmux_store_value *v);

/* Drop one reference (v may be NULL); the last one frees the bytes. */
void kvmux_store_value_release(kvmux_store_value *v);

/* SET: store value (copied) with ttl_ms (0 = no expiry) and a new version,
 * written to *version. Fires waiters on the key. Returns OK or INTERNAL. */
int kvmux_store_set(kvmux_store *s, const uint8_t *key, size_t klen,
                    const uint8_t *value, size_t vlen, uint64_t ttl_ms,
                    uint64_t *version);

/* SET with a value the caller built: consumes the caller's reference to
 * val (NULL = empty value) whatever the result, and installs it without
 * copying if it is longer than KVMUX_STORE_INLINE_MAX (a smaller one is
 * copied inline and the reference dropped). Same results as
 * kvmux_store_set. */
int kvmux_store_set_value(kvmux_store *s, const uint8_t *key, size_t klen,
                          kvmux_store_value *val, uint64_t ttl_ms, uint64_t *version);

/* DEL: remove the key; fires waiters. Returns OK or NOT_FOUND. */
int kvmux_store_del(kvmux_store *s, const uint8_t *key, size_t klen);

/* INCR: add delta to the key's value read as a canonical decimal i64
 * ("0", "-12", no '+', no leading zeros, no spaces); a missing key counts
 * as 0 and is created without expiry; an existing TTL is kept. Writes the
 * new value and version. Returns OK, NOT_INTEGER, OVERFLOW (value
 * unchanged), or INTERNAL. */
int kvmux_store_incr(kvmux_store *s, const uint8_t *key, size_t klen,
                     int64_t delta, int64_t *value, uint64_t *version);

/* CAS: set value (with ttl_ms, 0 = none) only if the key's version is
 * expected; expected 0 means "only if absent". Returns OK (*version = new),
 * NOT_FOUND (absent and expected != 0; *version = 0), VERSION_MISMATCH
 * (*version = current), or INTERNAL. */
int kvmux_store_cas(kvmux_store *s, const uint8_t *key, size_t klen,
                    uint64_t expected, const uint8_t *value, size_t vlen,
                    uint64_t ttl_ms, uint64_t *version);

/* CAS with a value the caller built: consumes the caller's reference to
 * val (NULL = empty) whatever the result. Same results as kvmux_store_cas. */
int kvmux_store_cas_value(kvmux_store *s, const uint8_t *key, size_t klen,
                          uint64_t expected, kvmux_store_value *val, uint64_t ttl_ms,
                          uint64_t *version);

/* WAIT: if the key's current version (0 = absent) differs from version,
 * call read() with the current state and return OK (or read's error).
 * Otherwise register w on the key and return KVMUX_STORE_PARKED: the fire
 * callback runs when the key changes, unless kvmux_store_wait_cancel()
 * removes w first. w must not already be registered. Returns INTERNAL if
 * the placeholder for an absent key cannot be allocated or no fire callback
 * was configured. */
int kvmux_store_wait(kvmux_store *s, const uint8_t *key, size_t klen,
                     uint64_t version, kvmux_store_waiter *w,
                     kvmux_store_read_fn read, void *ud);

/* Unregister w. Returns 1 if w was still parked (now removed; the fire
 * callback will never run for it; *current = the key's version, 0 if
 * absent), or 0 if it has already been fired (the callback has run or is
 * running on another thread: the caller must wait for it to deliver w,
 * and must not free w here). current may be NULL. */
int kvmux_store_wait_cancel(kvmux_store *s, kvmux_store_waiter *w,
                            uint64_t *current);

/* Lazy expiry for parked waiters: if w's key has expired, expire it now,
 * which fires w (and the key's other waiters). Returns 1 if w has been
 * fired (now or before), 0 if it is still parked; w->key_expires_ms is
 * refreshed. Call it when w->key_expires_ms passes. */
int kvmux_store_wait_poll(kvmux_store *s, kvmux_store_waiter *w);

/* ---- key metadata (store_ttl.c) ---- */

/* EXISTS: OK with *version = the key's version (may be NULL), or
 * NOT_FOUND. Does not touch the key's LRU time. */
int kvmux_store_exists(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t *version);

/* TTL: OK with *version and *ttl_left = milliseconds until the key
 * expires (>= 1), 0 if it has no expiry (either pointer may be NULL); or
 * NOT_FOUND. */
int kvmux_store_ttl(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t *version,
                    uint64_t *ttl_left);

/* EXPIRE: give an existing key a new expiry ttl_ms from now (1..
 * KVMUX_MAX_TTL_MS, else BAD_REQUEST), keeping its value. A write: new
 * version in *version, waiters fired, journalled as a SET record with the
 * new expiry. Returns OK, NOT_FOUND, BAD_REQUEST or INTERNAL (out of
 * memory: the key is unchanged). */
int kvmux_store_expire(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t ttl_ms,
                       uint64_t *version);

/* PERSIST: drop an existing key's expiry. With a TTL to drop it is a
 * write as EXPIRE is (new version, waiters fired, journalled); without
 * one nothing changes and *version is the current version. Returns OK,
 * NOT_FOUND or INTERNAL (out of memory: unchanged). */
int kvmux_store_persist(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t *version);

/* ---- SCAN (store_scan.c) ---- */

/* Receives one key of a SCAN under the shard lock (key valid only during
 * the call), and (key NULL, klen 0) each time a bucket is complete: the
 * keys received since the previous such call belong to that bucket. Must
 * not call the store. Return 0; or KVMUX_STORE_SCAN_FULL to refuse the
 * current bucket (the caller drops the keys it received since the last
 * completed bucket; the scan step ends before this bucket, which comes
 * first in the next step; if it was the step's first bucket the step
 * fails with TOO_LARGE); or another nonzero KVMUX_STATUS_* that ends the
 * step with that result. */
typedef int (*kvmux_store_scan_fn)(void *ud, const uint8_t *key, size_t klen);
#define KVMUX_STORE_SCAN_FULL 101

/* One SCAN step from cursor (0 = start): hands fn the live keys starting
 * with prefix[0..plen) of one or more whole home buckets, stopping after
 * the bucket with which count keys (0 = KVMUX_SCAN_DEFAULT_COUNT, capped
 * at KVMUX_SCAN_MAX_COUNT), max_bytes of key list (2 + klen per key) or
 * the work bound was reached, and sets *next (0 = the scan is complete).
 * Every key present from the call with cursor 0 to the call returning 0
 * is handed out at least once, whatever the table does in between (the
 * proof is at the top of store_scan.c). Returns OK, BAD_REQUEST (a cursor
 * naming a shard this store does not have), TOO_LARGE (fn refused the
 * step's first bucket), or fn's other nonzero result. */
int kvmux_store_scan(kvmux_store *s, uint64_t cursor, const uint8_t *prefix, size_t plen,
                     uint32_t count, size_t max_bytes, kvmux_store_scan_fn fn, void *ud,
                     uint64_t *next);

/* kvmux_store_scan restricted to the keys of hash slots first..last
 * (kvmux_slot; last < KVMUX_SLOTS), no prefix. flags: with
 * KVMUX_STORE_SCAN_EXPIRED, keys whose TTL passed but which are not yet
 * removed are handed out too (they are counted in kvmux_store_slot_keys,
 * so a purge must reach them). Same cursor, guarantee and results as
 * kvmux_store_scan; BAD_REQUEST also for first > last or last >= 16384. */
#define KVMUX_STORE_SCAN_EXPIRED 1u
int kvmux_store_scan_slots(kvmux_store *s, uint64_t cursor, uint16_t first, uint16_t last,
                           unsigned flags, uint32_t count, size_t max_bytes,
                           kvmux_store_scan_fn fn, void *ud, uint64_t *next);

/* ---- cluster mode: per-slot counts and imports (store_slots.c;
 * docs/MIGRATION.md sections 2, 4, 6) ---- */

/* The number of keys of hash slot `slot` in the store (expired ones not
 * yet removed included), kept by every insert and delete -- writes,
 * expiry, eviction, restores -- when the store was created with
 * slot_keys; 0 otherwise or for slot >= 16384. Derived state, never
 * persisted. Any thread (a hint while other threads write). */
uint32_t kvmux_store_slot_keys(const kvmux_store *s, uint16_t slot);
/* The sum of kvmux_store_slot_keys over first..last (clipped at 16383). */
uint64_t kvmux_store_range_keys(const kvmux_store *s, uint16_t first, uint16_t last);
/* Whether the store keeps per-slot counts (created with slot_keys). */
int kvmux_store_has_slot_keys(const kvmux_store *s);
/* Count the per-slot keys again from the table (after a snapshot
 * restore). Takes one shard lock at a time; the counts are exact when it
 * returns even if other threads changed keys meanwhile (reads expiring
 * them), partial while it runs. Not concurrent with itself. No-op without
 * slot_keys. */
void kvmux_store_slot_recount(kvmux_store *s);

/* A migration's import of one key (MIGRATION.md "How B applies an
 * IMPORT"): set key = value with exactly `version` (>= 1) and absolute
 * expiry expire_at_ms (store clock, 0 = none) -- unless the store holds
 * the key with a higher version, which is kept (VERSION_MISMATCH,
 * nothing changed). A write: fires waiters, journalled as a SET. The
 * version counter is raised to at least `version` in every case, so
 * later writes here get higher versions. An expiry already passed is the
 * caller's business (an import applies it as a delete). Returns OK,
 * VERSION_MISMATCH, BAD_REQUEST (version 0, empty or > 65535-byte key)
 * or INTERNAL (out of memory: key unchanged). */
int kvmux_store_import_put(kvmux_store *s, const uint8_t *key, size_t klen,
                           const uint8_t *value, size_t vlen, uint64_t version,
                           uint64_t expire_at_ms);

/* ---- persistence hooks (used by aof.c) ---- */

/* One change as the append-only log sees it. op is KVMUX_STORE_REC_SET
 * (key now holds value with version and expiry; INCR and CAS are logged
 * as their resulting SET), KVMUX_STORE_REC_DEL (key removed: DEL or an
 * eviction) or KVMUX_STORE_REC_EXPIRY (EXPIRE or PERSIST: the key keeps
 * its value and gets version and expiry, 0 = none; value is NULL and vlen
 * 0, so a TTL change on a large value logs a few bytes, not the value).
 * expires_ms and now_ms are on the store clock (expires 0 = none), so the
 * log can turn the expiry into wall-clock time. (Op 3 is the log's own
 * VERSION record, aof.h.) */
enum { KVMUX_STORE_REC_SET = 1, KVMUX_STORE_REC_DEL = 2, KVMUX_STORE_REC_EXPIRY = 4 };
typedef struct kvmux_store_record {
    int op;
    const uint8_t *key;
    size_t klen;
    const uint8_t *value;      /* NULL when vlen == 0 */
    size_t vlen;
    uint64_t version;
    uint64_t expires_ms;
    uint64_t now_ms;
} kvmux_store_record;

/* Called after every successful change, WITH THE SHARD LOCK HELD, so the
 * order of records for one key is the order the changes were applied.
 * Must be short and must not call the store. Lazy/active expiry is not
 * journalled (the record carries the absolute expiry). */
typedef void (*kvmux_store_journal_fn)(void *user_data, const kvmux_store_record *r);

/* Install (or remove, with fn NULL) the journal. Thread-safe: no (call
 * before the store is shared, or after every writer stopped). */
void kvmux_store_set_journal(kvmux_store *s, kvmux_store_journal_fn fn, void *ud);

/* Recovery: install key = value with exactly this version and expiry
 * (store clock, 0 = none), without firing waiters or calling the journal;
 * the store-wide version counter is raised to at least version, so new
 * versions resume above every restored one. Returns OK or INTERNAL. */
int kvmux_store_restore(kvmux_store *s, const uint8_t *key, size_t klen,
                        const uint8_t *value, size_t vlen, uint64_t version,
                        uint64_t expires_ms);
/* Recovery: remove key if present (no waiters, no journal). */
void kvmux_store_restore_del(kvmux_store *s, const uint8_t *key, size_t klen);
/* Recovery of an EXPIRY record: key keeps its value and gets exactly this
 * version and expiry (store clock, 0 = none), if it is present -- even
 * with an expiry already passed (a SET restored as expired, see
 * kvmux_store_purge_expired) -- and holds an older version (a record
 * replayed after a compaction's snapshot that already has it changes
 * nothing). No waiters, no journal; the version counter is raised to at
 * least version. Returns OK, NOT_FOUND or INTERNAL (out of memory). */
int kvmux_store_restore_expiry(kvmux_store *s, const uint8_t *key, size_t klen,
                               uint64_t version, uint64_t expires_ms);
/* Recovery: remove every key whose expiry is at or before upto (store
 * clock), without firing waiters or counting them as expired. The loader
 * restores a SET that expired while the server was down with an expiry in
 * the past (so a later EXPIRY record can still revive it) and calls this
 * once the log is replayed. */
void kvmux_store_purge_expired(kvmux_store *s, uint64_t upto);
/* The store clock now (ms; what expires_ms values are measured on). */
uint64_t kvmux_store_now(kvmux_store *s);
/* The last version handed out (compaction records it, so versions of keys
 * deleted before the snapshot are never handed out again after a restart). */
uint64_t kvmux_store_last_version(kvmux_store *s);
/* Raise the version counter to at least v (a DEL record's version). */
void kvmux_store_bump_version(kvmux_store *s, uint64_t v);

/* Visit every live key of one shard under its lock (compaction's snapshot,
 * taken shard by shard). fn gets a SET record; it must not call the store.
 * Returns the number of shards; visits nothing if shard >= that. */
uint32_t kvmux_store_snapshot_shard(kvmux_store *s, uint32_t shard,
                                    kvmux_store_journal_fn fn, void *ud);

/* ---- background snapshots (copy-on-write by key) ----
 *
 * A snapshot of the whole store as it is at one instant, serialized
 * beside the writers: kvmux_store_snap_begin records the instant (the
 * last version handed out, the clock) and marks every shard pending;
 * kvmux_store_snap_shard then hands fn, under the shard's lock, every key
 * of the shard whose version is not newer than the instant's, and clears
 * the mark. Meanwhile, the first change of such a key in a pending shard
 * -- a write, a DEL, a read or expiry cycle expiring it, an eviction --
 * hands fn its record as it was, just before the change (one record
 * copied, under the same lock). So every key of the instant reaches fn
 * exactly once, with its state at the instant, and keys created after
 * it never do. Versions must only grow meanwhile: no kvmux_store_restore*
 * during a snapshot (kvmux_store_import_put, which may write older
 * versions, hands its key's whole shard to the snapshot first). */

/* Gets one live key of shard `shard` (a SET record: its now_ms is the
 * `now` given to begin). Called with that shard's lock held, from
 * whichever thread serializes the shard: must be short, must not call
 * the store; two shards may be handed over at the same time on two
 * threads. */
typedef void (*kvmux_store_snap_fn)(void *ud, uint32_t shard, const kvmux_store_record *r);

/* For each shard, an upper bound on what the next snapshot's fn will
 * receive from it, per_record per key plus key and value bytes (bound
 * has kvmux_store_shards(s) elements). The bounds hold for a snapshot
 * begun later if nothing was added meanwhile (only the caller writes:
 * reads, expiry and eviction only remove). */
void kvmux_store_snap_measure(kvmux_store *s, uint64_t per_record, uint64_t *bound);
/* Start a background snapshot of the store as it is now: keys whose
 * expiry is at or before now (store clock) are left out. Only one at a
 * time: the previous one must be finished (every shard passed to
 * kvmux_store_snap_shard). The instant is exact only if no other thread
 * writes during this call (replicated: the Raft thread, the only writer,
 * calls it; a read expiring a key meanwhile removes one expired at now
 * anyway). Whatever fn's ud points to must be ready before the call. */
void kvmux_store_snap_begin(kvmux_store *s, uint64_t now, kvmux_store_snap_fn fn, void *ud);
/* Serialize shard i now if it is still pending (any thread). Once it has
 * been called for every shard, fn has been called for the last time and
 * everything it wrote is visible to the caller. */
void kvmux_store_snap_shard(kvmux_store *s, uint32_t i);
/* The number of shards (fixed at creation). */
uint32_t kvmux_store_shards(const kvmux_store *s);

/* ---- memory limit and active expiry ---- */

enum kvmux_maxmemory_policy {
    KVMUX_MAXMEMORY_NOEVICTION = 0, /* refuse writes while over the limit */
    KVMUX_MAXMEMORY_ALLKEYS_LRU = 1 /* evict approximately-LRU keys */
};

/* Set the limit on accounted memory (0 = none) and the policy. Thread-
 * safe: yes (takes effect for the next write). */
void kvmux_store_set_maxmemory(kvmux_store *s, uint64_t bytes, int policy);

/* Accounted memory now (an atomic read, cheap). */
uint64_t kvmux_store_used_memory(const kvmux_store *s);

/* What an empty store of `shards` shards already accounts (its hash
 * tables): the floor of used_memory, so a --maxmemory below it would
 * refuse every write. Any thread. */
uint64_t kvmux_store_empty_memory(uint32_t shards);

/* Before a write: 0 if it may run. Under allkeys-lru, first evicts keys
 * (sampling `samples` random keys per eviction and dropping the least
 * recently used; evictions fire waiters and are journalled as DEL) until
 * accounted memory is under the limit, at most max_evictions of them.
 * Returns 1 if memory is still over the limit (noeviction, or nothing
 * left to evict): the write must be refused. */
int kvmux_store_over_limit(kvmux_store *s);

/* One active expiry cycle: for every shard, look at up to `samples` keys
 * from a rotating bucket cursor and expire those whose TTL passed; repeat
 * on a shard while more than a quarter of the keys with a TTL it saw were
 * expired, until budget_ms has been spent. Returns the number expired. */
uint64_t kvmux_store_expire_cycle(kvmux_store *s, uint32_t samples, uint64_t budget_ms);

/* Sum of per-shard counters (each shard locked in turn, so the totals are
 * approximate while writers run). */
void kvmux_store_get_stats(kvmux_store *s, kvmux_store_stats *st);

#endif
