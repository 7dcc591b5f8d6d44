/* SCAN: walk the key space with a cursor (contract in store.h, wire
 * format in docs/PROTOCOL.md section 4.1).
 *
 * The guarantee (Redis's): every key present for the whole scan, from the
 * call with cursor 0 to the call that returns 0, is returned at least
 * once, even while shards grow or sweep tombstones between calls. A key
 * added or removed during the scan may or may not be returned. Because
 * kvmux's tables never shrink, a key present throughout is in fact
 * returned exactly once (see below), but clients should not rely on it:
 * a key deleted and re-created mid-scan can come back twice.
 *
 * How
 * - The cursor names a shard (bits 63..48) and a position in that shard's
 *   table (bits 47..0). Shards are visited in order; a key never changes
 *   shard (the shard comes from hash bits 32..47 and the shard count is
 *   fixed for the process's life), so the guarantee reduces to one table.
 * - Within a shard the unit is the *home bucket*: the set of keys whose
 *   hash & (cap - 1) is b. Under linear probing those keys sit in the run
 *   of non-empty slots (tombstones included) that starts at slot b, so a
 *   bucket is read by walking from b to the first empty slot and keeping
 *   the entries whose hash maps to b. A bucket is never split between
 *   two replies: the cursor only ever points at bucket boundaries.
 * - Buckets are visited in reverse-binary order (Redis's dictScan, by
 *   Pieter Noordhuis): the cursor's low bits are incremented from the top
 *   bit down. When a table of 2^n slots doubles, bucket b splits into b
 *   and b + 2^n, both of which share b's low n bits; in reverse-binary
 *   order every bucket already visited at size 2^n has both its halves
 *   before the cursor at size 2^(n+1), and every bucket not yet visited
 *   has both halves after it. So a table that grows between two calls
 *   loses nothing and repeats nothing, and a same-size
 *   sweep of tombstones (the only other rebuild; tables never shrink)
 *   moves no key to another home bucket. Each call runs under the shard
 *   lock, so no table changes during a call.
 * - A call stops after the bucket with which it reached `count` keys, the
 *   byte budget, or its work bound. The caller may also refuse a bucket
 *   half-way (KVMUX_STORE_SCAN_FULL: its reply frame is full); it then
 *   drops that bucket's keys, and the returned cursor names that bucket,
 *   so the next step starts with it. (Its work bound (count * 100 slots examined, so a
 *   prefix that matches nothing still returns promptly, possibly with no
 *   keys and a non-zero cursor, as Redis's SCAN with MATCH does).
 * - Expired keys and WAIT placeholders (version 0) are skipped, not
 *   removed: the walk never changes the table.
 *
 * Cost: one SipHash per entry in a visited run (the table keeps only a
 * 16-bit tag of the hash; the home bucket needs the low bits). */
#include "store_internal.h"

#include "cluster.h"

#define SHARD_SHIFT 48
#define POS_MASK ((UINT64_C(1) << SHARD_SHIFT) - 1)
#define WORK_PER_KEY 100u

static uint64_t rev64(uint64_t v) {
    v = ((v >> 1) & UINT64_C(0x5555555555555555)) | ((v & UINT64_C(0x5555555555555555)) << 1);
    v = ((v >> 2) & UINT64_C(0x3333333333333333)) | ((v & UINT64_C(0x3333333333333333)) << 2);
    v = ((v >> 4) & UINT64_C(0x0F0F0F0F0F0F0F0F)) | ((v & UINT64_C(0x0F0F0F0F0F0F0F0F)) << 4);
    v = ((v >> 8) & UINT64_C(0x00FF00FF00FF00FF)) | ((v & UINT64_C(0x00FF00FF00FF00FF)) << 8);
    v = ((v >> 16) & UINT64_C(0x0000FFFF0000FFFF)) | ((v & UINT64_C(0x0000FFFF0000FFFF)) << 16);
    return (v >> 32) | (v << 32);
}

/* The bucket after pos in reverse-binary order for a table with mask m;
 * 0 once every bucket has been visited. */
static uint64_t next_pos(uint64_t pos, uint64_t m) {
    pos |= ~m;
    pos = rev64(pos);
    pos++;
    return rev64(pos);
}

typedef struct scan_state {
    const uint8_t *prefix;
    size_t plen;
    uint32_t count;             /* keys wanted */
    size_t max_bytes;           /* key list budget */
    uint64_t work_left;         /* slots still to examine */
    uint32_t keys;              /* keys returned so far */
    size_t bytes;               /* key list bytes so far */
    kvmux_store_scan_fn fn;
    void *ud;
    int by_slot;                /* keep only keys of slots first..last */
    uint16_t first, last;
    int expired_too;            /* KVMUX_STORE_SCAN_EXPIRED */
} scan_state;

static int budget_spent(const scan_state *st) {
    return st->keys >= st->count || st->bytes >= st->max_bytes || st->work_left == 0;
}

/* Hand every live key of home bucket b (of sh, lock held) to st->fn.
 * Returns 0 or fn's nonzero result. */
static int visit_bucket(kvmux_store *s, shard *sh, size_t b, uint64_t now, scan_state *st) {
    size_t mask = sh->cap - 1;
    for (size_t i = b;; i = (i + 1) & mask) {
        uint64_t x = sh->slots[i];
        if (st->work_left) st->work_left--;
        if (x == 0) return 0;
        if (!slot_used(x)) continue;
        const entry *e = slot_entry(x);
        if (e->version == 0 || (!st->expired_too && is_expired(e, now))) continue;
        const uint8_t *k = e_key(e);
        if ((kvmux__store_hash(s, k, e->klen) & mask) != b) continue;
        if (st->plen && (e->klen < st->plen || memcmp(k, st->prefix, st->plen) != 0)) continue;
        if (st->by_slot) {
            uint16_t slot = kvmux_slot(k, e->klen);
            if (slot < st->first || slot > st->last) continue;
        }
        int rc = st->fn(st->ud, k, e->klen);
        if (rc != 0) return rc;
        st->keys++;
        st->bytes += KVMUX_SCAN_ENTRY_HDR + e->klen;
    }
}

/* Visit bucket b and tell fn it is complete (key NULL): the caller's
 * commit point. Returns 0 or fn's nonzero result. */
static int visit_whole_bucket(kvmux_store *s, shard *sh, size_t b, uint64_t now,
                              scan_state *st) {
    int rc = visit_bucket(s, sh, b, now, st);
    return rc != 0 ? rc : st->fn(st->ud, NULL, 0);
}

/* One step with st's filters set (count, work bound and the counters
 * are filled in here). */
static int scan_step(kvmux_store *s, uint64_t cursor, scan_state *stp, uint32_t count,
                     uint64_t *next) {
    uint64_t si = cursor >> SHARD_SHIFT, pos = cursor & POS_MASK;
    if (si >= s->nshards) return KVMUX_STATUS_BAD_REQUEST;
    if (count == 0) count = KVMUX_SCAN_DEFAULT_COUNT;
    if (count > KVMUX_SCAN_MAX_COUNT) count = KVMUX_SCAN_MAX_COUNT;
    scan_state st = *stp;
    st.count = count;
    st.work_left = (uint64_t)count * WORK_PER_KEY;
    st.keys = 0;
    st.bytes = 0;
    uint64_t now = s->clock(s->clock_ud);
    int rc = 0, buckets = 0;
    while (rc == 0 && !budget_spent(&st)) {
        shard *sh = &s->shards[si];
        pthread_mutex_lock(&sh->mu);
        uint64_t m = sh->cap - 1;
        /* A position past this table (a forged cursor: tables never
         * shrink) is reduced like Redis does: the low bits name the
         * bucket, the increment below clears the rest. */
        do {
            rc = visit_whole_bucket(s, sh, (size_t)(pos & m), now, &st);
            if (rc != 0) break; /* pos still names the unfinished bucket */
            buckets++;
            pos = next_pos(pos, m);
        } while (pos != 0 && !budget_spent(&st));
        pthread_mutex_unlock(&sh->mu);
        if (rc == 0 && pos == 0) {
            if (++si == s->nshards) break; /* the whole store is done */
        }
    }
    /* The caller had no room for a bucket: it drops that bucket's keys
     * and the next step starts with it, unless it was the first. */
    if (rc == KVMUX_STORE_SCAN_FULL) rc = buckets ? 0 : KVMUX_STATUS_TOO_LARGE;
    if (rc != 0) return rc;
    *next = si == s->nshards ? 0 : si << SHARD_SHIFT | pos;
    return KVMUX_STATUS_OK;
}

int kvmux_store_scan(kvmux_store *s, uint64_t cursor, const uint8_t *prefix, size_t plen,
                     uint32_t count, size_t max_bytes, kvmux_store_scan_fn fn, void *ud,
                     uint64_t *next) {
    scan_state st = {.prefix = prefix, .plen = plen, .max_bytes = max_bytes, .fn = fn,
                     .ud = ud};
    return scan_step(s, cursor, &st, count, next);
}

int kvmux_store_scan_slots(kvmux_store *s, uint64_t cursor, uint16_t first, uint16_t last,
                           unsigned flags, uint32_t count, size_t max_bytes,
                           kvmux_store_scan_fn fn, void *ud, uint64_t *next) {
    if (first > last || last >= KVMUX_SLOTS) return KVMUX_STATUS_BAD_REQUEST;
    scan_state st = {.max_bytes = max_bytes, .fn = fn, .ud = ud, .by_slot = 1,
                     .first = first, .last = last,
                     .expired_too = (flags & KVMUX_STORE_SCAN_EXPIRED) != 0};
    return scan_step(s, cursor, &st, count, next);
}
