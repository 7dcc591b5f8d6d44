/* Key metadata operations of the store: EXISTS, TTL, EXPIRE, PERSIST
 * (contracts in store.h; wire semantics in docs/PROTOCOL.md section 4.1).
 *
 * Design
 * - EXISTS and TTL are reads: the key is looked up under its shard lock
 *   (an expired key is removed on the way, as every lookup does) and
 *   nothing else changes, not even the LRU access time: asking about a
 *   key's metadata is not a use of its value.
 * - EXPIRE and PERSIST are writes of the key's own value with a new
 *   expiry, so they go through the same put() as SET: a new version from
 *   the store-wide counter and every parked WAIT on the key fired. Their
 *   journal record is an EXPIRY record (key, version, expiry; no value),
 *   so a TTL change on a 1 MiB value logs a few dozen bytes, not the value
 *   again; replay (kvmux_store_restore_expiry) gives the key that version
 *   and expiry. The value is not copied when it is out of line (one more
 *   reference is handed to put); an inline value (<= KVMUX_STORE_INLINE_MAX
 *   bytes) is copied to the stack first, because put may rebuild the
 *   entry in place.
 * - PERSIST on a key without a TTL changes nothing: OK with the current
 *   version, no journal record, no waiter fired. "The version changed"
 *   keeps meaning "the key's state changed".
 *
 * What it is not: no TTL arithmetic beyond saturation; the limit on a
 * TTL (KVMUX_MAX_TTL_MS) is checked by the caller. */
#include "store_internal.h"

#include "monotime.h"

/* The live entry of key (expired keys removed), or NULL; *slot its slot. */
static entry *live_entry(kvmux_store *s, shard *sh, uint64_t hash, const uint8_t *key,
                         size_t klen, uint64_t now, size_t *slot) {
    size_t i = kvmux__store_lookup(s, sh, hash, key, klen, now);
    if (i == NOT_FOUND) return NULL;
    entry *e = slot_entry(sh->slots[i]);
    if (e->version == 0) return NULL; /* a placeholder holding waiters */
    *slot = i;
    return e;
}

int kvmux_store_exists(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t *version) {
    uint64_t hash = kvmux__store_hash(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = kvmux__store_shard(s, hash);
    size_t i;
    pthread_mutex_lock(&sh->mu);
    entry *e = live_entry(s, sh, hash, key, klen, now, &i);
    uint64_t v = e ? e->version : 0;
    pthread_mutex_unlock(&sh->mu);
    if (version) *version = v;
    return e ? KVMUX_STATUS_OK : KVMUX_STATUS_NOT_FOUND;
}

int kvmux_store_ttl(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t *version,
                    uint64_t *ttl_left) {
    uint64_t hash = kvmux__store_hash(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = kvmux__store_shard(s, hash);
    size_t i;
    uint64_t v = 0, left = 0;
    pthread_mutex_lock(&sh->mu);
    entry *e = live_entry(s, sh, hash, key, klen, now, &i);
    if (e) {
        v = e->version;
        /* Not expired, so expires > now: at least 1 ms is left. */
        if (e->flags & F_TTL) left = e_expires(e) - now;
    }
    pthread_mutex_unlock(&sh->mu);
    if (version) *version = v;
    if (ttl_left) *ttl_left = left;
    return e ? KVMUX_STATUS_OK : KVMUX_STATUS_NOT_FOUND;
}

/* Rewrite e (in slot i) with its own value and expiry expires (0 =
 * none), as version (0 = the next one); jop as for kvmux__store_put.
 * Returns the new version, or 0 when out of memory. */
static uint64_t rewrite_expiry(kvmux_store *s, shard *sh, size_t i, uint64_t hash,
                               const uint8_t *key, size_t klen, entry *e, uint64_t expires,
                               uint64_t now, uint64_t version, int jop) {
    uint8_t copy[KVMUX_STORE_INLINE_MAX];
    newval nv = {NULL, NULL, e_vlen(e)};
    if (e->flags & F_OOL) {
        nv.val = kvmux_store_value_retain(e_val(e));
    } else if (nv.len) {
        memcpy(copy, e_vbytes(e), nv.len);
        nv.bytes = copy;
    }
    uint64_t v = kvmux__store_put(s, sh, i, hash, key, klen, &nv, expires, now, version, jop);
    if (v == 0) kvmux_store_value_release(nv.val); /* put took nothing */
    return v;
}

int kvmux_store_expire(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t ttl_ms,
                       uint64_t *version) {
    if (ttl_ms == 0 || ttl_ms > KVMUX_MAX_TTL_MS) return KVMUX_STATUS_BAD_REQUEST;
    uint64_t hash = kvmux__store_hash(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = kvmux__store_shard(s, hash);
    size_t i;
    int rc = KVMUX_STATUS_NOT_FOUND;
    pthread_mutex_lock(&sh->mu);
    entry *e = live_entry(s, sh, hash, key, klen, now, &i);
    if (e) {
        uint64_t v = rewrite_expiry(s, sh, i, hash, key, klen, e,
                                    kvmux_add_sat_u64(now, ttl_ms), now, 0,
                                    KVMUX_STORE_REC_EXPIRY);
        rc = v ? KVMUX_STATUS_OK : KVMUX_STATUS_INTERNAL;
        if (v && version) *version = v;
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int kvmux_store_persist(kvmux_store *s, const uint8_t *key, size_t klen, uint64_t *version) {
    uint64_t hash = kvmux__store_hash(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = kvmux__store_shard(s, hash);
    size_t i;
    int rc = KVMUX_STATUS_NOT_FOUND;
    pthread_mutex_lock(&sh->mu);
    entry *e = live_entry(s, sh, hash, key, klen, now, &i);
    if (e && !(e->flags & F_TTL)) {
        rc = KVMUX_STATUS_OK; /* nothing to drop: no write at all */
        if (version) *version = e->version;
    } else if (e) {
        uint64_t v = rewrite_expiry(s, sh, i, hash, key, klen, e, 0, now, 0,
                                    KVMUX_STORE_REC_EXPIRY);
        rc = v ? KVMUX_STATUS_OK : KVMUX_STATUS_INTERNAL;
        if (v && version) *version = v;
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int kvmux_store_restore_expiry(kvmux_store *s, const uint8_t *key, size_t klen,
                               uint64_t version, uint64_t expires_ms) {
    if (version == 0) return KVMUX_STATUS_INTERNAL;
    uint64_t hash = kvmux__store_hash(s, key, klen), now = s->clock(s->clock_ud);
    shard *sh = kvmux__store_shard(s, hash);
    int rc = KVMUX_STATUS_NOT_FOUND;
    pthread_mutex_lock(&sh->mu);
    /* No expiry check: a SET that expired while the server was down is
     * restored as expired, and this record may give it a new life. */
    size_t i = kvmux__store_find_raw(sh, hash, key, klen);
    entry *e = i == NOT_FOUND ? NULL : slot_entry(sh->slots[i]);
    if (e && e->version != 0) {
        rc = KVMUX_STATUS_OK;
        if (version > e->version &&
            rewrite_expiry(s, sh, i, hash, key, klen, e, expires_ms, now, version, 0) == 0)
            rc = KVMUX_STATUS_INTERNAL;
    }
    pthread_mutex_unlock(&sh->mu);
    if (rc == KVMUX_STATUS_OK) kvmux_store_bump_version(s, version);
    return rc;
}
