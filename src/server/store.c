/* kvmuxd's store: a sharded, chained hash table with versions, TTLs and
 * parked waiters (see store.h for the contract).
 *
 * Design
 * - Keys are hashed with SipHash-2-4 under a random per-process key, so a
 *   client cannot choose keys that all land in one chain. The high 32 bits
 *   pick one of N shards (default 256), the low bits the bucket, so shard
 *   and bucket choices are independent.
 * - Each shard is a mutex plus a chained table that doubles when it holds
 *   more entries than buckets. A shard holds 1/N of the data, so a full
 *   rehash under its lock is short; if the bigger bucket array cannot be
 *   allocated the table simply stays at its size (longer chains, no error).
 * - Versions come from one store-wide atomic counter, so a version is never
 *   reused, even by a key that is deleted and created again. That is what
 *   makes CAS and WAIT safe against ABA.
 * - Expiry is lazy: an expired key is removed when an operation touches it
 *   (or when a parked waiter polls it, see kvmux_store_wait_poll), and
 *   active: kvmux_store_expire_cycle walks each shard from a rotating
 *   bucket cursor (driven every 100 ms by server/expire.c), so keys nobody
 *   touches are freed too.
 * - Memory: every entry and value is accounted in one store-wide atomic
 *   (entry_mem + value_mem), cheap to read before each write. Under a
 *   limit, kvmux_store_over_limit either says "refuse" (noeviction) or
 *   evicts approximately-LRU keys: each entry keeps its last access time,
 *   and an eviction samples a few keys in a few random shards and drops
 *   the oldest, as Redis does (exact LRU would need a global list touched,
 *   under one lock, by every read).
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
 * - Entries keep their address for life (the value is a separate buffer), so
 *   a waiter can point at its entry across rehashes and value updates.
 * - Values are immutable, reference-counted buffers (kvmux_store_value).
 *   The entry holds one reference; a reader that needs the bytes after the
 *   shard lock is released (a large GET answered in fragments over many
 *   loop iterations) takes another with kvmux_store_value_hold inside its
 *   read callback, so the value is neither copied nor torn by a later SET:
 *   the overwritten buffer lives on until its last reader lets go. A writer
 *   may also fill a fresh value itself (kvmux_store_value_new: a fragmented
 *   upload is reassembled straight into it) and hand it to the store, which
 *   then installs it without copying.
 *
 * - Every allocation for entries, values and bucket arrays goes through an
 *   optional allocator hook, so tests fail the Nth allocation and check that
 *   each operation returns INTERNAL with the key unchanged and nothing
 *   leaked. Values are copied before the lock is taken, so a failure leaves
 *   nothing half-done under it.
 *
 * This is not a general cache: eviction is approximate, and only under
 * --maxmemory allkeys-lru. */
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "monotime.h"
#include "siphash.h"

enum waiter_state {
    WAITER_IDLE = 0,       /* not known to the store */
    WAITER_REGISTERED = 1, /* on an entry's list */
    WAITER_FIRED = 2,      /* unlinked by a write; fire callback called */
    WAITER_CANCELLED = 3   /* unlinked by kvmux_store_wait_cancel */
};

#define INITIAL_BUCKETS 16u

/* Refcounted immutable value bytes. refs is atomic: references are taken
 * under a shard lock but dropped by loop threads without it. */
struct kvmux_store_value {
    _Atomic uint32_t refs;
    const kvmux_store *store;    /* whose allocator freed it */
    size_t len;
    _Alignas(16) uint8_t data[];
};

typedef struct entry {
    struct entry *next;          /* bucket chain */
    uint64_t atime;              /* last access (store clock): for LRU */
    uint64_t hash;
    uint64_t version;            /* 0 = placeholder holding waiters only */
    uint64_t expires_ms;         /* 0 = never (store clock) */
    kvmux_store_value *val;      /* one reference; NULL iff vlen == 0 */
    size_t vlen;
    kvmux_store_waiter *waiters; /* doubly linked, head */
    uint16_t klen;
    uint8_t key[];
} entry;

/* One lock domain. Invariants: count = entries in the chains (placeholders
 * included); live/bytes cover entries with version != 0 only. Aligned to a
 * cache line so neighbouring shards' locks do not false-share. */
typedef struct shard {
    _Alignas(64) pthread_mutex_t mu;
    entry **buckets;
    size_t nbuckets;             /* power of two */
    size_t count;
    uint64_t live;
    uint64_t bytes;
    uint64_t waiters;
    uint64_t expired;
    uint64_t expired_active;
    uint64_t evicted;
    size_t expire_cursor;        /* next bucket for the active cycle */
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
    _Atomic uint64_t used;         /* accounted memory, see entry_mem */
    _Atomic uint64_t maxmemory;    /* 0 = no limit */
    _Atomic int policy;            /* enum kvmux_maxmemory_policy */
    _Atomic uint64_t rng;          /* eviction sampling */
    void *(*alloc)(void *ud, size_t n);
    void (*dealloc)(void *ud, void *p);
    void *alloc_ud;
};

static void *mem_alloc(const kvmux_store *s, size_t n) {
    return s->alloc ? s->alloc(s->alloc_ud, n) : malloc(n);
}

static void mem_free(const kvmux_store *s, void *p) {
    if (!p) return;
    if (s->dealloc) s->dealloc(s->alloc_ud, p);
    else free(p);
}

static void *mem_zalloc(const kvmux_store *s, size_t n) {
    void *p = mem_alloc(s, n);
    if (p) memset(p, 0, n);
    return p;
}

static uint64_t default_clock(void *ud) {
    (void)ud;
    return kvmux_clock_ms();
}

void kvmux_store_options_init(kvmux_store_options *o) {
    memset(o, 0, sizeof *o);
    o->shards = 256;
    o->clock = default_clock;
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
    if (opts->hash_key) {
        memcpy(s->hash_key, opts->hash_key, sizeof s->hash_key);
    } else if (kvmux_random_bytes(s->hash_key, sizeof s->hash_key) != 0) {
        free(s);
        return -1;
    }
    s->shards = aligned_alloc(64, sizeof(shard) * n);
    if (!s->shards) {
        free(s);
        return -1;
    }
    memset(s->shards, 0, sizeof(shard) * n);
    for (uint32_t i = 0; i < n; i++) {
        shard *sh = &s->shards[i];
        sh->buckets = mem_zalloc(s, INITIAL_BUCKETS * sizeof(entry *));
        if (!sh->buckets || pthread_mutex_init(&sh->mu, NULL) != 0) {
            mem_free(s, sh->buckets);
            for (uint32_t j = 0; j < i; j++) {
                pthread_mutex_destroy(&s->shards[j].mu);
                mem_free(s, s->shards[j].buckets);
            }
            free(s->shards);
            free(s);
            return -1;
        }
        sh->nbuckets = INITIAL_BUCKETS;
    }
    *out = s;
    return 0;
}

/* ---- values ---- */

kvmux_store_value *kvmux_store_value_new(kvmux_store *s, size_t len) {
    if (len == 0 || len > SIZE_MAX - sizeof(kvmux_store_value)) return NULL;
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

/* Accounted bytes of an entry without its value, and of a value. */
static uint64_t entry_mem(size_t klen) { return sizeof(entry) + klen + sizeof(entry *); }
static uint64_t value_mem(size_t vlen) {
    return vlen ? sizeof(kvmux_store_value) + vlen : 0;
}
static void mem_account(const kvmux_store *s, int64_t delta) {
    atomic_fetch_add_explicit(&((kvmux_store *)(uintptr_t)s)->used, (uint64_t)delta,
                              memory_order_relaxed);
}

static void entry_free(const kvmux_store *s, entry *e) {
    kvmux_store_value_release(e->val);
    mem_free(s, e);
}

void kvmux_store_free(kvmux_store *s) {
    if (!s) return;
    for (uint32_t i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        for (size_t b = 0; b < sh->nbuckets; b++) {
            entry *e = sh->buckets[b];
            while (e) {
                entry *next = e->next;
                entry_free(s, e);
                e = next;
            }
        }
        mem_free(s, sh->buckets);
        pthread_mutex_destroy(&sh->mu);
    }
    free(s->shards);
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

static entry **find_link(shard *sh, uint64_t hash, const uint8_t *key, size_t klen) {
    entry **link = &sh->buckets[hash & (sh->nbuckets - 1)];
    for (; *link; link = &(*link)->next) {
        entry *e = *link;
        if (e->hash == hash && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return link;
    }
    return NULL;
}

/* Unlink every waiter of e and hand each to the fire callback. Reads the
 * next pointer first: once fired, a waiter may be freed by its owner. */
static void fire_waiters(kvmux_store *s, shard *sh, entry *e) {
    kvmux_store_waiter *w = e->waiters;
    e->waiters = NULL;
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

static void unlink_and_free(const kvmux_store *s, shard *sh, entry **link) {
    entry *e = *link;
    *link = e->next;
    sh->count--;
    mem_account(s, -(int64_t)(entry_mem(e->klen) + value_mem(e->vlen)));
    if (e->version != 0) {
        sh->live--;
        sh->bytes -= e->klen + e->vlen;
    }
    entry_free(s, e);
}

static int is_expired(const entry *e, uint64_t now) {
    return e->version != 0 && e->expires_ms != 0 && now >= e->expires_ms;
}

/* Find a live entry, expiring it first if its TTL has passed. Returns the
 * link (for unlinking) or NULL. Placeholders are returned too: callers
 * check version. */
static entry **lookup(kvmux_store *s, shard *sh, uint64_t hash,
                      const uint8_t *key, size_t klen, uint64_t now) {
    entry **link = find_link(sh, hash, key, klen);
    if (link && is_expired(*link, now)) {
        fire_waiters(s, sh, *link);
        sh->expired++;
        unlink_and_free(s, sh, link);
        return NULL;
    }
    return link;
}

/* Double the bucket array if the load factor passed 1. Best effort. */
static void maybe_grow(const kvmux_store *s, shard *sh) {
    if (sh->count <= sh->nbuckets || sh->nbuckets > (SIZE_MAX / sizeof(entry *)) / 2)
        return;
    size_t nb = sh->nbuckets * 2;
    entry **nbk = mem_zalloc(s, nb * sizeof *nbk);
    if (!nbk) return; /* keep working with longer chains */
    for (size_t b = 0; b < sh->nbuckets; b++) {
        entry *e = sh->buckets[b];
        while (e) {
            entry *next = e->next;
            entry **slot = &nbk[e->hash & (nb - 1)];
            e->next = *slot;
            *slot = e;
            e = next;
        }
    }
    mem_free(s, sh->buckets);
    sh->buckets = nbk;
    sh->nbuckets = nb;
}

static entry *entry_new(const kvmux_store *s, uint64_t hash, const uint8_t *key,
                        size_t klen) {
    entry *e = mem_alloc(s, sizeof *e + klen);
    if (!e) return NULL;
    memset(e, 0, sizeof *e);
    e->hash = hash;
    e->klen = (uint16_t)klen;
    memcpy(e->key, key, klen);
    return e;
}

static void insert(const kvmux_store *s, shard *sh, entry *e) {
    entry **slot = &sh->buckets[e->hash & (sh->nbuckets - 1)];
    e->next = *slot;
    *slot = e;
    sh->count++;
    mem_account(s, (int64_t)entry_mem(e->klen));
    maybe_grow(s, sh);
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

static const uint8_t *value_bytes(const kvmux_store_value *v) { return v ? v->data : NULL; }

/* Install a new value and version in e (a live entry or a placeholder)
 * and fire its waiters. Takes ownership of val. */
static uint64_t entry_assign(kvmux_store *s, shard *sh, entry *e,
                             kvmux_store_value *val, size_t vlen, uint64_t expires_ms,
                             uint64_t now) {
    if (e->version != 0) {
        sh->bytes -= e->klen + e->vlen;
    } else {
        sh->live++;
    }
    mem_account(s, (int64_t)value_mem(vlen) - (int64_t)value_mem(e->vlen));
    kvmux_store_value_release(e->val);
    e->val = val;
    e->vlen = vlen;
    e->expires_ms = expires_ms;
    e->atime = now;
    e->version = next_version(s);
    sh->bytes += e->klen + vlen;
    if (s->journal) {
        kvmux_store_record r = {KVMUX_STORE_REC_SET, e->key, e->klen, value_bytes(val),
                                vlen, e->version, expires_ms, now};
        s->journal(s->journal_ud, &r);
    }
    fire_waiters(s, sh, e);
    return e->version;
}

/* Write (val, vlen) under key: reuse the entry (live or placeholder) at
 * link, or create one. Takes ownership of val on success only. Returns the
 * new version, or 0 when out of memory. */
static uint64_t put(kvmux_store *s, shard *sh, entry **link, uint64_t hash,
                    const uint8_t *key, size_t klen, kvmux_store_value *val,
                    size_t vlen, uint64_t expires_ms, uint64_t now) {
    if (link) return entry_assign(s, sh, *link, val, vlen, expires_ms, now);
    entry *e = entry_new(s, hash, key, klen);
    if (!e) return 0;
    insert(s, sh, e);
    return entry_assign(s, sh, e, val, vlen, expires_ms, now);
}

static uint64_t expiry_for(uint64_t now, uint64_t ttl_ms) {
    return ttl_ms == 0 ? 0 : kvmux_add_sat_u64(now, ttl_ms);
}

/* ---- operations ---- */

int kvmux_store_get(kvmux_store *s, const uint8_t *key, size_t klen,
                    kvmux_store_read_fn read, void *ud) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc = KVMUX_STATUS_NOT_FOUND;
    pthread_mutex_lock(&sh->mu);
    entry **link = lookup(s, sh, hash, key, klen, now);
    if (link && (*link)->version != 0) {
        entry *e = *link;
        e->atime = now;
        rc = read ? read(ud, e->version, value_bytes(e->val), e->vlen) : 0;
        if (rc == 0) rc = KVMUX_STATUS_OK;
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int kvmux_store_set(kvmux_store *s, const uint8_t *key, size_t klen,
                    const uint8_t *value, size_t vlen, uint64_t ttl_ms,
                    uint64_t *version) {
    kvmux_store_value *val;
    /* Copy outside the lock: large values must not stall the shard. */
    if (dup_value(s, value, vlen, &val) != 0) return KVMUX_STATUS_INTERNAL;
    return kvmux_store_set_value(s, key, klen, val, ttl_ms, version);
}

int kvmux_store_set_value(kvmux_store *s, const uint8_t *key, size_t klen,
                          kvmux_store_value *val, uint64_t ttl_ms, uint64_t *version) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    size_t vlen = val ? val->len : 0;
    pthread_mutex_lock(&sh->mu);
    entry **link = lookup(s, sh, hash, key, klen, now);
    uint64_t v = put(s, sh, link, hash, key, klen, val, vlen, expiry_for(now, ttl_ms), now);
    pthread_mutex_unlock(&sh->mu);
    if (v == 0) {
        kvmux_store_value_release(val);
        return KVMUX_STATUS_INTERNAL;
    }
    if (version) *version = v;
    return KVMUX_STATUS_OK;
}

int kvmux_store_del(kvmux_store *s, const uint8_t *key, size_t klen) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc = KVMUX_STATUS_NOT_FOUND;
    pthread_mutex_lock(&sh->mu);
    entry **link = lookup(s, sh, hash, key, klen, now);
    if (link && (*link)->version != 0) {
        /* Waiters on a live key all wait on its current version: a delete
         * changes it (to "absent"), so every one of them fires. */
        fire_waiters(s, sh, *link);
        if (s->journal) {
            kvmux_store_record r = {KVMUX_STORE_REC_DEL, key, klen, NULL, 0,
                                    (*link)->version, 0, now};
            s->journal(s->journal_ud, &r);
        }
        unlink_and_free(s, sh, link);
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
    entry **link = lookup(s, sh, hash, key, klen, now);
    int64_t cur = 0, next;
    uint64_t expires = 0;
    if (link && (*link)->version != 0) {
        if (parse_i64(value_bytes((*link)->val), (*link)->vlen, &cur) != 0) {
            rc = KVMUX_STATUS_NOT_INTEGER;
            goto out;
        }
        expires = (*link)->expires_ms; /* INCR keeps the TTL, like Redis */
    }
    if (__builtin_add_overflow(cur, delta, &next)) {
        rc = KVMUX_STATUS_OVERFLOW;
        goto out;
    }
    char buf[21];
    size_t len = format_i64(next, buf);
    kvmux_store_value *val;
    if (dup_value(s, (const uint8_t *)buf, len, &val) != 0) {
        rc = KVMUX_STATUS_INTERNAL;
        goto out;
    }
    uint64_t v = put(s, sh, link, hash, key, klen, val, len, expires, now);
    if (v == 0) {
        kvmux_store_value_release(val);
        rc = KVMUX_STATUS_INTERNAL;
        goto out;
    }
    if (value) *value = next;
    if (version) *version = v;
out:
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int kvmux_store_cas(kvmux_store *s, const uint8_t *key, size_t klen,
                    uint64_t expected, const uint8_t *value, size_t vlen,
                    uint64_t ttl_ms, uint64_t *version) {
    kvmux_store_value *val;
    if (dup_value(s, value, vlen, &val) != 0) return KVMUX_STATUS_INTERNAL;
    return kvmux_store_cas_value(s, key, klen, expected, val, ttl_ms, version);
}

int kvmux_store_cas_value(kvmux_store *s, const uint8_t *key, size_t klen,
                          uint64_t expected, kvmux_store_value *val, uint64_t ttl_ms,
                          uint64_t *version) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    size_t vlen = val ? val->len : 0;
    int rc = KVMUX_STATUS_OK;
    uint64_t out_version = 0;
    pthread_mutex_lock(&sh->mu);
    entry **link = lookup(s, sh, hash, key, klen, now);
    uint64_t cur = link ? (*link)->version : 0;
    if (cur == 0 && expected != 0) {
        rc = KVMUX_STATUS_NOT_FOUND;
    } else if (cur != expected) {
        rc = KVMUX_STATUS_VERSION_MISMATCH;
        out_version = cur;
    } else {
        out_version = put(s, sh, link, hash, key, klen, val, vlen, expiry_for(now, ttl_ms), now);
        if (out_version == 0) rc = KVMUX_STATUS_INTERNAL;
        else val = NULL; /* owned by the entry now */
    }
    pthread_mutex_unlock(&sh->mu);
    kvmux_store_value_release(val);
    if (version) *version = out_version;
    return rc;
}

int kvmux_store_wait(kvmux_store *s, const uint8_t *key, size_t klen,
                     uint64_t version, kvmux_store_waiter *w,
                     kvmux_store_read_fn read, void *ud) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    int rc;
    pthread_mutex_lock(&sh->mu);
    entry **link = lookup(s, sh, hash, key, klen, now);
    entry *e = link ? *link : NULL;
    uint64_t cur = e ? e->version : 0;
    if (cur != version) {
        rc = read ? read(ud, cur, cur ? value_bytes(e->val) : NULL, cur ? e->vlen : 0) : 0;
        if (rc == 0) rc = KVMUX_STATUS_OK;
        goto out;
    }
    if (!s->fire) {
        rc = KVMUX_STATUS_INTERNAL;
        goto out;
    }
    if (!e) {
        e = entry_new(s, hash, key, klen); /* placeholder: version 0 */
        if (!e) {
            rc = KVMUX_STATUS_INTERNAL;
            goto out;
        }
        insert(s, sh, e);
    }
    w->_entry = e;
    w->_hash = hash;
    w->_state = WAITER_REGISTERED;
    w->_prev = NULL;
    w->_next = e->waiters;
    if (e->waiters) e->waiters->_prev = w;
    e->waiters = w;
    w->key_expires_ms = e->expires_ms;
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
    else e->waiters = w->_next;
    if (w->_next) w->_next->_prev = w->_prev;
    w->_prev = w->_next = NULL;
    w->_entry = NULL;
    w->_state = WAITER_CANCELLED;
    sh->waiters--;
    /* The version is reported as stored even if the TTL just passed: the
     * caller answers TIMEOUT, and the next access expires the key. */
    if (current) *current = e->version;
    if (e->version == 0 && !e->waiters) {
        /* Last waiter of a placeholder: free it. */
        entry **link = &sh->buckets[e->hash & (sh->nbuckets - 1)];
        while (*link != e) link = &(*link)->next;
        unlink_and_free(s, sh, link);
    }
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
            entry **link = &sh->buckets[e->hash & (sh->nbuckets - 1)];
            while (*link != e) link = &(*link)->next;
            fire_waiters(s, sh, e);
            sh->expired++;
            unlink_and_free(s, sh, link);
            fired = 1;
        } else {
            w->key_expires_ms = e->expires_ms;
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
    kvmux_store_value *val;
    if (version == 0 || dup_value(s, value, vlen, &val) != 0) return KVMUX_STATUS_INTERNAL;
    uint64_t hash = hash_key(s, key, klen);
    shard *sh = shard_for(s, hash);
    pthread_mutex_lock(&sh->mu);
    entry **link = find_link(sh, hash, key, klen);
    entry *e = link ? *link : NULL;
    if (!e) {
        e = entry_new(s, hash, key, klen);
        if (!e) {
            pthread_mutex_unlock(&sh->mu);
            kvmux_store_value_release(val);
            return KVMUX_STATUS_INTERNAL;
        }
        insert(s, sh, e);
    }
    if (e->version != 0) sh->bytes -= e->klen + e->vlen;
    else sh->live++;
    mem_account(s, (int64_t)value_mem(vlen) - (int64_t)value_mem(e->vlen));
    kvmux_store_value_release(e->val);
    e->val = val;
    e->vlen = vlen;
    e->expires_ms = expires_ms;
    e->version = version;
    sh->bytes += e->klen + vlen;
    pthread_mutex_unlock(&sh->mu);
    kvmux_store_bump_version(s, version);
    return KVMUX_STATUS_OK;
}

void kvmux_store_restore_del(kvmux_store *s, const uint8_t *key, size_t klen) {
    uint64_t hash = hash_key(s, key, klen);
    shard *sh = shard_for(s, hash);
    pthread_mutex_lock(&sh->mu);
    entry **link = find_link(sh, hash, key, klen);
    if (link && (*link)->version != 0 && !(*link)->waiters) unlink_and_free(s, sh, link);
    pthread_mutex_unlock(&sh->mu);
}

uint32_t kvmux_store_snapshot_shard(kvmux_store *s, uint32_t i, kvmux_store_journal_fn fn,
                                    void *ud) {
    if (i >= s->nshards) return s->nshards;
    shard *sh = &s->shards[i];
    uint64_t now = s->clock(s->clock_ud);
    pthread_mutex_lock(&sh->mu);
    for (size_t b = 0; b < sh->nbuckets; b++) {
        for (entry *e = sh->buckets[b]; e; e = e->next) {
            if (e->version == 0 || is_expired(e, now)) continue;
            kvmux_store_record r = {KVMUX_STORE_REC_SET, e->key, e->klen, value_bytes(e->val),
                                    e->vlen, e->version, e->expires_ms, now};
            fn(ud, &r);
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return s->nshards;
}

/* ---- memory limit, eviction and active expiry ---- */

void kvmux_store_set_maxmemory(kvmux_store *s, uint64_t bytes, int policy) {
    atomic_store(&s->maxmemory, bytes);
    atomic_store(&s->policy, policy);
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
#define EVICT_BUCKET_TRIES 32  /* empty buckets skipped looking for a sample */

#define EVICT_SHARDS 5         /* shards compared per eviction */

/* With sh locked: the link of the least recently used of up to
 * EVICT_SAMPLES live keys found in random buckets, or NULL. */
static entry **sample_oldest(kvmux_store *s, shard *sh) {
    entry **best = NULL;
    int found = 0;
    for (uint32_t t = 0; t < EVICT_BUCKET_TRIES && found < EVICT_SAMPLES; t++) {
        entry **link = &sh->buckets[rand64(s) & (sh->nbuckets - 1)];
        for (; *link && found < EVICT_SAMPLES; link = &(*link)->next) {
            if ((*link)->version == 0) continue;
            found++;
            if (!best || (*link)->atime < (*best)->atime) best = link;
        }
    }
    /* A sparse shard (few keys, many empty buckets): walk it in order. */
    for (size_t b = 0; !best && sh->live && b < sh->nbuckets; b++) {
        for (entry **link = &sh->buckets[b]; *link; link = &(*link)->next) {
            if ((*link)->version == 0) continue;
            if (!best || (*link)->atime < (*best)->atime) best = link;
        }
    }
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
    uint64_t best_atime = UINT64_MAX;
    for (int k = 0; k < EVICT_SHARDS; k++) {
        int64_t i = random_live_shard(s);
        if (i < 0) return 0;
        shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        entry **e = sample_oldest(s, sh);
        if (e && (*e)->atime < best_atime) {
            best_atime = (*e)->atime;
            best_shard = i;
        }
        pthread_mutex_unlock(&sh->mu);
    }
    if (best_shard < 0) return 0;
    shard *sh = &s->shards[best_shard];
    pthread_mutex_lock(&sh->mu);
    entry **best = sample_oldest(s, sh);
    if (best) {
        entry *e = *best;
        fire_waiters(s, sh, e);
        if (s->journal) {
            kvmux_store_record r = {KVMUX_STORE_REC_DEL, e->key, e->klen, NULL, 0,
                                    e->version, 0, s->clock(s->clock_ud)};
            s->journal(s->journal_ud, &r);
        }
        sh->evicted++;
        unlink_and_free(s, sh, best);
    }
    pthread_mutex_unlock(&sh->mu);
    return best != NULL;
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
            /* Walk whole buckets from the cursor until `samples` keys were
             * seen or every bucket was visited once. */
            for (size_t b = 0; b < sh->nbuckets && seen < samples; b++) {
                size_t idx = sh->expire_cursor++ & (sh->nbuckets - 1);
                entry **link = &sh->buckets[idx];
                while (*link) {
                    entry *e = *link;
                    if (e->version != 0) seen++;
                    if (e->version != 0 && e->expires_ms != 0) with_ttl++;
                    if (is_expired(e, now)) {
                        fire_waiters(s, sh, e);
                        sh->expired++;
                        sh->expired_active++;
                        expired++;
                        unlink_and_free(s, sh, link);
                    } else {
                        link = &e->next;
                    }
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
