/* The store's cluster-mode additions (docs/MIGRATION.md sections 2 and
 * 4): live keys per hash slot, and the target side's import of a key at
 * the version it had in its source group. Contract in store.h. */
#include "store_internal.h"

#include <stdlib.h>

#include "cluster.h"

static void slot_add(kvmux_store *s, const uint8_t *key, size_t klen, int delta) {
    /* relaxed: the count is a statistic of the shard-locked changes, read
     * by the applier (which made them) or as a hint by anyone else. */
    atomic_fetch_add_explicit(&s->slot_keys[kvmux_slot(key, klen)], (uint32_t)delta,
                              memory_order_relaxed);
}

void kvmux__store_slot_count(kvmux_store *s, const shard *sh, const uint8_t *key, size_t klen,
                             int delta) {
    if (!s->slot_keys || sh->slot_uncounted) return;
    slot_add(s, key, klen, delta);
}

uint32_t kvmux_store_slot_keys(const kvmux_store *s, uint16_t slot) {
    if (!s->slot_keys || slot >= KVMUX_SLOTS) return 0;
    return atomic_load_explicit(&s->slot_keys[slot], memory_order_relaxed);
}

int kvmux_store_has_slot_keys(const kvmux_store *s) { return s->slot_keys != NULL; }

uint64_t kvmux_store_range_keys(const kvmux_store *s, uint16_t first, uint16_t last) {
    uint64_t n = 0;
    for (uint32_t i = first; i <= last && i < KVMUX_SLOTS; i++)
        n += kvmux_store_slot_keys(s, (uint16_t)i);
    return n;
}

void kvmux_store_slot_recount(kvmux_store *s) {
    if (!s->slot_keys) return;
    /* One shard lock at a time (holding all 256 would stall every reader
     * for the whole walk, and TSan aborts a thread holding 64 mutexes).
     * Exact all the same: once every shard is marked uncounted, no change
     * moves a count, so the counts can be zeroed; then each shard adds
     * its live keys and is unmarked under its lock, after which its
     * changes move the counts again. Between the two, counts are partial:
     * only the caller (the applier, after a restore) needs them exact. */
    for (uint32_t i = 0; i < s->nshards; i++) {
        pthread_mutex_lock(&s->shards[i].mu);
        s->shards[i].slot_uncounted = 1;
        pthread_mutex_unlock(&s->shards[i].mu);
    }
    for (uint32_t k = 0; k < KVMUX_SLOTS; k++)
        atomic_store_explicit(&s->slot_keys[k], 0, memory_order_relaxed);
    for (uint32_t i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        for (size_t b = 0; b < sh->cap; b++) {
            if (!slot_used(sh->slots[b])) continue;
            const entry *e = slot_entry(sh->slots[b]);
            if (e->version != 0) slot_add(s, e_key(e), e->klen, 1);
        }
        sh->slot_uncounted = 0;
        pthread_mutex_unlock(&sh->mu);
    }
}

int kvmux_store_import_put(kvmux_store *s, const uint8_t *key, size_t klen,
                           const uint8_t *value, size_t vlen, uint64_t version,
                           uint64_t expire_at_ms) {
    if (version == 0 || klen == 0 || klen > UINT16_MAX) return KVMUX_STATUS_BAD_REQUEST;
    /* Every later write here must get a higher version than any imported
     * one, skipped or not (MIGRATION.md section 6). */
    kvmux_store_bump_version(s, version);
    newval nv = {NULL, value, vlen};
    if (vlen > KVMUX_STORE_INLINE_MAX) {
        /* Copied before the lock: a large value must not stall the shard. */
        if (!(nv.val = kvmux_store_value_new(s, vlen))) return KVMUX_STATUS_INTERNAL;
        memcpy(kvmux_store_value_data(nv.val), value, vlen);
        nv.bytes = NULL;
    }
    uint64_t hash = kvmux__store_hash(s, key, klen), now = kvmux_store_now(s);
    shard *sh = kvmux__store_shard(s, hash);
    int rc = KVMUX_STATUS_OK;
    pthread_mutex_lock(&sh->mu);
    /* An imported version may be older than a background snapshot's
     * instant: the snapshot would take the new entry for one of the
     * instant's. The shard goes to the snapshot first, as it is. */
    if (sh->snap_pending && version <= s->snap_last) kvmux__store_snap_flush(s, sh);
    size_t i = kvmux__store_lookup(s, sh, hash, key, klen, now);
    const entry *old = i != NOT_FOUND ? slot_entry(sh->slots[i]) : NULL;
    if (old && old->version > version) {
        rc = KVMUX_STATUS_VERSION_MISMATCH; /* a newer state is here: kept */
    } else if (kvmux__store_put(s, sh, i, hash, key, klen, &nv, expire_at_ms, now, version,
                                KVMUX_STORE_REC_SET) == 0) {
        rc = KVMUX_STATUS_INTERNAL;
    } else {
        nv.val = NULL; /* taken by the entry */
    }
    pthread_mutex_unlock(&sh->mu);
    kvmux_store_value_release(nv.val);
    return rc;
}
