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

/* Receives a key's current version and value under the shard lock (the
 * value pointer is valid only during the call), so the caller can copy it
 * straight into its output buffer. version 0 with (NULL, 0) means absent.
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
    /* Allocator for entries, values and bucket arrays (tests inject
     * failures through it); NULL = malloc / free. */
    void *(*alloc)(void *user_data, size_t n);
    void (*dealloc)(void *user_data, void *p);
    void *alloc_user_data;
} kvmux_store_options;

typedef struct kvmux_store_stats {
    uint64_t keys;              /* live keys (expired-but-unseen included) */
    uint64_t bytes;             /* key + value bytes of live keys */
    uint64_t waiters;           /* parked waiters */
    uint64_t expired;           /* keys removed because their TTL passed */
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

/* SET: store value (copied) with ttl_ms (0 = no expiry) and a new version,
 * written to *version. Fires waiters on the key. Returns OK or INTERNAL. */
int kvmux_store_set(kvmux_store *s, const uint8_t *key, size_t klen,
                    const uint8_t *value, size_t vlen, uint64_t ttl_ms,
                    uint64_t *version);

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

/* Sum of per-shard counters (each shard locked in turn, so the totals are
 * approximate while writers run). */
void kvmux_store_get_stats(kvmux_store *s, kvmux_store_stats *st);

#endif
