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
 *   (or when a parked waiter polls it, see kvmux_store_wait_poll). Expired
 *   keys nobody touches keep their memory until then; an active sweep is
 *   future work.
 * - Waiters hang on the entry of their key. A WAIT on an absent key creates
 *   a placeholder entry (version 0, invisible to GET) that exists only to
 *   hold waiters and is freed with its last waiter. Every successful write
 *   changes the version, so a write fires and unlinks *all* the key's
 *   waiters; each waiter is either fired (once) or cancelled (once), decided
 *   under the shard lock, which is what lets the server resolve the race
 *   between a notify and a connection close (see server/waits.c).
 * - Entries keep their address for life (the value is a separate buffer), so
 *   a waiter can point at its entry across rehashes and value updates.
 *
 * - Every allocation for entries, values and bucket arrays goes through an
 *   optional allocator hook, so tests fail the Nth allocation and check that
 *   each operation returns INTERNAL with the key unchanged and nothing
 *   leaked. Values are copied before the lock is taken, so a failure leaves
 *   nothing half-done under it.
 *
 * This is not an LRU cache: there is no memory limit or eviction yet. */
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

typedef struct entry {
    struct entry *next;          /* bucket chain */
    uint64_t hash;
    uint64_t version;            /* 0 = placeholder holding waiters only */
    uint64_t expires_ms;         /* 0 = never (store clock) */
    uint8_t *val;                /* NULL iff vlen == 0 */
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

static void entry_free(const kvmux_store *s, entry *e) {
    mem_free(s, e->val);
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
    maybe_grow(s, sh);
}

/* Copy value into a fresh buffer (NULL for an empty value). Returns 0, -1
 * when out of memory. */
static int dup_value(const kvmux_store *s, const uint8_t *value, size_t vlen,
                     uint8_t **out) {
    *out = NULL;
    if (vlen == 0) return 0;
    uint8_t *v = mem_alloc(s, vlen);
    if (!v) return -1;
    memcpy(v, value, vlen);
    *out = v;
    return 0;
}

/* Install a new value and version in e (a live entry or a placeholder)
 * and fire its waiters. Takes ownership of val. */
static uint64_t entry_assign(kvmux_store *s, shard *sh, entry *e, uint8_t *val,
                             size_t vlen, uint64_t expires_ms) {
    if (e->version != 0) {
        sh->bytes -= e->klen + e->vlen;
    } else {
        sh->live++;
    }
    mem_free(s, e->val);
    e->val = val;
    e->vlen = vlen;
    e->expires_ms = expires_ms;
    e->version = next_version(s);
    sh->bytes += e->klen + vlen;
    fire_waiters(s, sh, e);
    return e->version;
}

/* Write (val, vlen) under key: reuse the entry (live or placeholder) at
 * link, or create one. Takes ownership of val on success only. Returns the
 * new version, or 0 when out of memory. */
static uint64_t put(kvmux_store *s, shard *sh, entry **link, uint64_t hash,
                    const uint8_t *key, size_t klen, uint8_t *val, size_t vlen,
                    uint64_t expires_ms) {
    if (link) return entry_assign(s, sh, *link, val, vlen, expires_ms);
    entry *e = entry_new(s, hash, key, klen);
    if (!e) return 0;
    insert(s, sh, e);
    return entry_assign(s, sh, e, val, vlen, expires_ms);
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
        rc = read ? read(ud, e->version, e->val, e->vlen) : 0;
        if (rc == 0) rc = KVMUX_STATUS_OK;
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int kvmux_store_set(kvmux_store *s, const uint8_t *key, size_t klen,
                    const uint8_t *value, size_t vlen, uint64_t ttl_ms,
                    uint64_t *version) {
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    uint8_t *val;
    /* Copy outside the lock: large values must not stall the shard. */
    if (dup_value(s, value, vlen, &val) != 0) return KVMUX_STATUS_INTERNAL;
    pthread_mutex_lock(&sh->mu);
    entry **link = lookup(s, sh, hash, key, klen, now);
    uint64_t v = put(s, sh, link, hash, key, klen, val, vlen, expiry_for(now, ttl_ms));
    pthread_mutex_unlock(&sh->mu);
    if (v == 0) {
        mem_free(s, val);
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
        if (parse_i64((*link)->val, (*link)->vlen, &cur) != 0) {
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
    uint8_t *val;
    if (dup_value(s, (const uint8_t *)buf, len, &val) != 0) {
        rc = KVMUX_STATUS_INTERNAL;
        goto out;
    }
    uint64_t v = put(s, sh, link, hash, key, klen, val, len, expires);
    if (v == 0) {
        mem_free(s, val);
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
    uint64_t hash = hash_key(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = shard_for(s, hash);
    uint8_t *val;
    if (dup_value(s, value, vlen, &val) != 0) return KVMUX_STATUS_INTERNAL;
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
        out_version = put(s, sh, link, hash, key, klen, val, vlen, expiry_for(now, ttl_ms));
        if (out_version == 0) rc = KVMUX_STATUS_INTERNAL;
        else val = NULL; /* owned by the entry now */
    }
    pthread_mutex_unlock(&sh->mu);
    mem_free(s, val);
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
        rc = read ? read(ud, cur, cur ? e->val : NULL, cur ? e->vlen : 0) : 0;
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
        pthread_mutex_unlock(&sh->mu);
    }
}
