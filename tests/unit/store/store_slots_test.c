/* Unit tests for src/server/store_slots.c and the slot predicate of
 * store_scan.c (docs/MIGRATION.md section 13 step 2): per-slot key counts
 * kept by every insert and delete (SET, DEL, overwrite, INCR, lazy and
 * active expiry, eviction, restores) and recounted from the table;
 * kvmux_store_scan_slots (range only, expired keys with the flag, bad
 * ranges); kvmux_store_get_full's absolute expiry; kvmux_store_import_put
 * (version kept, counter raised, a newer version kept, waiters fired, bad
 * input); a recount racing inserts, deletes and expiries; and a store
 * without slot_keys counting nothing. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "store.h"
#include "testutil.h"

static _Atomic uint64_t fake_now = 1000;
static uint64_t fake_clock(void *ud) {
    (void)ud;
    return atomic_load(&fake_now);
}

static int nfired;
static void on_fire(kvmux_store_waiter *w, void *ud) {
    (void)w;
    (void)ud;
    nfired++;
}

#define K(s) (const uint8_t *)(s), strlen(s)

static kvmux_store *new_store(uint32_t shards, int slot_keys) {
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = shards;
    o.clock = fake_clock;
    o.fire = on_fire;
    o.slot_keys = slot_keys;
    kvmux_store *s = NULL;
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    return s;
}

static uint16_t slot_of(const char *k) { return kvmux_slot(k, strlen(k)); }

/* The counts of every slot, summed, equal the store's live keys, and a
 * recount changes nothing. */
static void check_consistent(kvmux_store *s) {
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(kvmux_store_range_keys(s, 0, KVMUX_SLOTS - 1), st.keys);
    uint32_t *before = malloc(KVMUX_SLOTS * sizeof *before);
    REQUIRE(before);
    for (uint32_t i = 0; i < KVMUX_SLOTS; i++) before[i] = kvmux_store_slot_keys(s, (uint16_t)i);
    kvmux_store_slot_recount(s);
    int same = 1;
    for (uint32_t i = 0; i < KVMUX_SLOTS; i++)
        same &= before[i] == kvmux_store_slot_keys(s, (uint16_t)i);
    CHECK(same);
    free(before);
}

static void test_counts(void) {
    kvmux_store *s = new_store(8, 1);
    CHECK(kvmux_store_has_slot_keys(s));
    uint16_t a = slot_of("a"), b = slot_of("b");
    CHECK(a != b);
    /* Hash tags: "{a}x" is in a's slot. */
    CHECK_EQ(kvmux_store_set(s, K("{a}1"), K("v"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(s, K("{a}2"), K("v"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(s, K("{b}1"), K("v"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_slot_keys(s, a), 2);
    CHECK_EQ(kvmux_store_slot_keys(s, b), 1);
    /* An overwrite (in place, or moved to a bigger entry) is no new key. */
    CHECK_EQ(kvmux_store_set(s, K("{a}1"), K("w"), 0, NULL), KVMUX_STATUS_OK);
    char big[600];
    memset(big, 'x', sizeof big);
    CHECK_EQ(kvmux_store_set(s, K("{a}1"), (const uint8_t *)big, sizeof big, 50, NULL),
             KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_slot_keys(s, a), 2);
    /* INCR creates one; DEL removes; DEL of an absent key changes nothing. */
    int64_t v;
    CHECK_EQ(kvmux_store_incr(s, K("{b}n"), 1, &v, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_slot_keys(s, b), 2);
    CHECK_EQ(kvmux_store_del(s, K("{b}1")), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_del(s, K("{b}1")), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_slot_keys(s, b), 1);
    /* Lazy expiry ({a}1 had a 50 ms TTL) counts the key out. */
    atomic_fetch_add(&fake_now, 50);
    CHECK_EQ(kvmux_store_slot_keys(s, a), 2); /* not reclaimed yet: still counted */
    CHECK_EQ(kvmux_store_get(s, K("{a}1"), NULL, NULL), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_slot_keys(s, a), 1);
    /* Active expiry too. */
    CHECK_EQ(kvmux_store_set(s, K("{b}t"), K("v"), 10, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_slot_keys(s, b), 2);
    atomic_fetch_add(&fake_now, 10);
    CHECK_EQ(kvmux_store_expire_cycle(s, 100, 1000), 1);
    CHECK_EQ(kvmux_store_slot_keys(s, b), 1);
    /* Restores (snapshot and log replay) count as inserts and deletes. */
    CHECK_EQ(kvmux_store_restore(s, K("{b}r"), K("v"), 77, 0), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_slot_keys(s, b), 2);
    kvmux_store_restore_del(s, K("{b}r"));
    CHECK_EQ(kvmux_store_slot_keys(s, b), 1);
    /* A WAIT placeholder is no key. */
    kvmux_store_waiter w;
    memset(&w, 0, sizeof w);
    CHECK_EQ(kvmux_store_wait(s, K("{b}w"), 0, &w, NULL, NULL), KVMUX_STORE_PARKED);
    CHECK_EQ(kvmux_store_slot_keys(s, b), 1);
    CHECK_EQ(kvmux_store_set(s, K("{b}w"), K("v"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_slot_keys(s, b), 2);
    /* Out of range slots read as 0; ranges sum. */
    CHECK_EQ(kvmux_store_slot_keys(s, KVMUX_SLOTS), 0);
    CHECK_EQ(kvmux_store_range_keys(s, 0, KVMUX_SLOTS - 1), 3);
    check_consistent(s);
    kvmux_store_free(s);
}

/* Many keys over many slots, random deletes, evictions: the counts stay
 * exact. */
static void test_counts_bulk(void) {
    kvmux_store *s = new_store(16, 1);
    char k[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        CHECK_EQ(kvmux_store_set(s, K(k), K("value"), (i % 7) ? 0 : 5, NULL), KVMUX_STATUS_OK);
    }
    for (int i = 0; i < 20000; i += 3) {
        snprintf(k, sizeof k, "key:%d", i);
        kvmux_store_del(s, K(k));
    }
    atomic_fetch_add(&fake_now, 5); /* a seventh expire; some reclaimed */
    kvmux_store_expire_cycle(s, 50, 1000);
    check_consistent(s);
    /* Eviction: a limit just under what is used evicts some keys. */
    kvmux_store_set_maxmemory(s, kvmux_store_used_memory(s) - 4096,
                              KVMUX_MAXMEMORY_ALLKEYS_LRU);
    int over = 1;
    for (int i = 0; i < 100 && over; i++) over = kvmux_store_over_limit(s); /* 64 per call */
    CHECK_EQ(over, 0);
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK(st.evicted > 0);
    check_consistent(s);
    kvmux_store_free(s);
}

/* A recount while other threads insert, delete, read expired keys away
 * and overwrite: the counts are exact once it has returned and they
 * stop. 256 shards, the server's default (one lock at a time: TSan
 * aborts a thread holding 64 mutexes, as the old recount did). */
typedef struct {
    kvmux_store *s;
    int id;
    _Atomic int *done;
} churn_arg;

static void *churn(void *ud) {
    churn_arg *a = ud;
    char k[32];
    for (int r = 0; r < 20000; r++) {
        int i = (r * 7919 + a->id * 104729) % 5000;
        snprintf(k, sizeof k, "key:%d", i);
        switch ((r + a->id) % 4) {
        case 0: kvmux_store_set(a->s, K(k), K("v"), (i % 3) ? 0 : 1, NULL); break;
        case 1: kvmux_store_del(a->s, K(k)); break;
        default: kvmux_store_get(a->s, K(k), NULL, NULL); break; /* may expire it */
        }
        if (r % 500 == 0) atomic_fetch_add(&fake_now, 1);
    }
    atomic_fetch_add(a->done, 1);
    return NULL;
}

static void recount_round(void) {
    kvmux_store *s = new_store(256, 1);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        CHECK_EQ(kvmux_store_set(s, K(k), K("v"), (i % 3) ? 0 : 1, NULL), KVMUX_STATUS_OK);
    }
    pthread_t th[3];
    churn_arg args[3];
    _Atomic int done = 0;
    for (int i = 0; i < 3; i++) {
        args[i] = (churn_arg){s, i, &done};
        REQUIRE(pthread_create(&th[i], NULL, churn, &args[i]) == 0);
    }
    /* Recount for as long as the churn runs (bounded: it ends). */
    while (atomic_load(&done) < 3) kvmux_store_slot_recount(s);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    /* The last recount may have ended before the churn did: the counts
     * must have followed every change since. */
    check_consistent(s);
    kvmux_store_free(s);
}

/* A miscount shows only when the churn ends inside a recount: rounds. */
static void test_recount_concurrent(void) {
    for (int i = 0; i < 10; i++) recount_round();
}

static void test_no_counts(void) {
    kvmux_store *s = new_store(4, 0);
    CHECK(!kvmux_store_has_slot_keys(s));
    CHECK_EQ(kvmux_store_set(s, K("a"), K("v"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_slot_keys(s, slot_of("a")), 0);
    kvmux_store_slot_recount(s); /* a no-op */
    CHECK_EQ(kvmux_store_del(s, K("a")), KVMUX_STATUS_OK);
    kvmux_store_free(s);
}

typedef struct keyset {
    int n;
    int bad; /* a key outside the range */
    uint16_t first, last;
} keyset;
static int collect(void *ud, const uint8_t *key, size_t klen) {
    keyset *ks = ud;
    if (!key) return 0;
    uint16_t sl = kvmux_slot(key, klen);
    if (sl < ks->first || sl > ks->last) ks->bad++;
    ks->n++;
    return 0;
}

/* Whole scan of first..last with flags: keys handed out. */
static int scan_all(kvmux_store *s, uint16_t first, uint16_t last, unsigned flags, keyset *ks) {
    memset(ks, 0, sizeof *ks);
    ks->first = first;
    ks->last = last;
    uint64_t cur = 0, next = 0;
    int steps = 0;
    do {
        int rc = kvmux_store_scan_slots(s, cur, first, last, flags, 50, 1 << 20, collect, ks,
                                        &next);
        if (rc != KVMUX_STATUS_OK) return rc;
        cur = next;
    } while (cur != 0 && ++steps < 100000);
    CHECK_EQ(cur, 0);
    return KVMUX_STATUS_OK;
}

static void test_scan_slots(void) {
    kvmux_store *s = new_store(8, 1);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "k%d", i);
        CHECK_EQ(kvmux_store_set(s, K(k), K("v"), 0, NULL), KVMUX_STATUS_OK);
    }
    /* Keys of slot a only, two of them expiring. */
    uint16_t a = slot_of("a");
    CHECK_EQ(kvmux_store_set(s, K("{a}x"), K("v"), 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(s, K("{a}e1"), K("v"), 5, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(s, K("{a}e2"), K("v"), 5, NULL), KVMUX_STATUS_OK);
    atomic_fetch_add(&fake_now, 5);
    uint32_t in_a = kvmux_store_slot_keys(s, a);
    keyset ks;
    CHECK_EQ(scan_all(s, a, a, 0, &ks), KVMUX_STATUS_OK);
    CHECK_EQ(ks.n, (int)in_a - 2); /* expired ones skipped */
    CHECK_EQ(ks.bad, 0);
    CHECK_EQ(scan_all(s, a, a, KVMUX_STORE_SCAN_EXPIRED, &ks), KVMUX_STATUS_OK);
    CHECK_EQ(ks.n, (int)in_a); /* ... and handed out with the flag */
    /* A range: exactly its count; the whole space: every key. */
    CHECK_EQ(scan_all(s, 100, 8000, 0, &ks), KVMUX_STATUS_OK);
    CHECK_EQ((uint64_t)ks.n, kvmux_store_range_keys(s, 100, 8000) -
                                 (a >= 100 && a <= 8000 ? 2 : 0));
    CHECK_EQ(ks.bad, 0);
    CHECK_EQ(scan_all(s, 0, KVMUX_SLOTS - 1, KVMUX_STORE_SCAN_EXPIRED, &ks), KVMUX_STATUS_OK);
    CHECK_EQ(ks.n, 5003);
    /* Bad ranges and cursors. */
    uint64_t next;
    CHECK_EQ(kvmux_store_scan_slots(s, 0, 9, 8, 0, 10, 1000, collect, &ks, &next),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(kvmux_store_scan_slots(s, 0, 0, KVMUX_SLOTS, 0, 10, 1000, collect, &ks, &next),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(kvmux_store_scan_slots(s, (uint64_t)8 << 48, 0, 5, 0, 10, 1000, collect, &ks,
                                    &next),
             KVMUX_STATUS_BAD_REQUEST);
    kvmux_store_free(s);
}

typedef struct got {
    uint64_t version;
    char v[700];
    size_t len;
} got;
static int read_got(void *ud, uint64_t version, const uint8_t *v, size_t len) {
    got *g = ud;
    g->version = version;
    g->len = len;
    if (len) memcpy(g->v, v, len < sizeof g->v ? len : sizeof g->v);
    return 0;
}

static void test_get_full(void) {
    kvmux_store *s = new_store(4, 1);
    uint64_t ver, exp = 99;
    got g;
    CHECK_EQ(kvmux_store_get_full(s, K("nope"), read_got, &g, &exp), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(kvmux_store_set(s, K("a"), K("hello"), 0, &ver), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get_full(s, K("a"), read_got, &g, &exp), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, ver);
    CHECK_EQ(exp, 0);
    CHECK(g.len == 5 && memcmp(g.v, "hello", 5) == 0);
    uint64_t now = atomic_load(&fake_now);
    CHECK_EQ(kvmux_store_set(s, K("t"), K("x"), 250, &ver), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get_full(s, K("t"), read_got, &g, &exp), KVMUX_STATUS_OK);
    CHECK_EQ(exp, now + 250); /* absolute, on the store clock */
    CHECK_EQ(kvmux_store_get_full(s, K("t"), NULL, NULL, NULL), KVMUX_STATUS_OK);
    atomic_fetch_add(&fake_now, 250);
    CHECK_EQ(kvmux_store_get_full(s, K("t"), read_got, &g, &exp), KVMUX_STATUS_NOT_FOUND);
    kvmux_store_free(s);
}

static void test_import_put(void) {
    kvmux_store *s = new_store(4, 1);
    uint64_t ver;
    got g;
    /* A key imported at version 500 keeps it; the counter passes it. */
    CHECK_EQ(kvmux_store_import_put(s, K("{a}k"), K("v500"), 500, 0), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get(s, K("{a}k"), read_got, &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, 500);
    CHECK_EQ(kvmux_store_slot_keys(s, slot_of("a")), 1);
    CHECK(kvmux_store_last_version(s) >= 500);
    CHECK_EQ(kvmux_store_set(s, K("other"), K("x"), 0, &ver), KVMUX_STATUS_OK);
    CHECK(ver > 500);
    /* An older import is skipped and changes nothing, but still raises the
     * counter; an equal one is applied (a resend); a newer one too. */
    CHECK_EQ(kvmux_store_import_put(s, K("{a}k"), K("old"), 400, 0),
             KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(kvmux_store_get(s, K("{a}k"), read_got, &g), KVMUX_STATUS_OK);
    CHECK(g.version == 500 && g.len == 4 && memcmp(g.v, "v500", 4) == 0);
    CHECK_EQ(kvmux_store_import_put(s, K("{a}k"), K("v500"), 500, 0), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_import_put(s, K("skip"), K("x"), 900, 0), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_import_put(s, K("skip"), K("x"), 800, 0),
             KVMUX_STATUS_VERSION_MISMATCH);
    CHECK(kvmux_store_last_version(s) >= 900);
    /* A large value with an absolute expiry. */
    char big[600];
    memset(big, 'b', sizeof big);
    uint64_t now = atomic_load(&fake_now), exp = 0;
    CHECK_EQ(kvmux_store_import_put(s, K("{a}k"), (const uint8_t *)big, sizeof big, 2000,
                                    now + 40),
             KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_get_full(s, K("{a}k"), read_got, &g, &exp), KVMUX_STATUS_OK);
    CHECK(g.version == 2000 && g.len == sizeof big && exp == now + 40);
    CHECK_EQ(kvmux_store_slot_keys(s, slot_of("a")), 1);
    CHECK_EQ(kvmux_store_set(s, K("other"), K("y"), 0, &ver), KVMUX_STATUS_OK);
    CHECK(ver > 2000);
    /* An import is a write: a waiter on the key fires. */
    kvmux_store_waiter w;
    memset(&w, 0, sizeof w);
    CHECK_EQ(kvmux_store_wait(s, K("{a}k"), 2000, &w, NULL, NULL), KVMUX_STORE_PARKED);
    int fired = nfired;
    CHECK_EQ(kvmux_store_import_put(s, K("{a}k"), K("z"), 3000, 0), KVMUX_STATUS_OK);
    CHECK_EQ(nfired, fired + 1);
    /* Bad input. */
    CHECK_EQ(kvmux_store_import_put(s, K("k"), K("v"), 0, 0), KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(kvmux_store_import_put(s, (const uint8_t *)"", 0, K("v"), 5, 0),
             KVMUX_STATUS_BAD_REQUEST);
    check_consistent(s);
    kvmux_store_free(s);
}

/* Records a background snapshot handed over: key -> version. */
typedef struct snaprec {
    int n;
    char key[16][16];
    uint64_t version[16];
} snaprec;
static void on_snap(void *ud, uint32_t shard, const kvmux_store_record *r) {
    (void)shard;
    snaprec *sr = ud;
    if (sr->n == 16 || r->klen >= 16) return;
    memcpy(sr->key[sr->n], r->key, r->klen);
    sr->key[sr->n][r->klen] = 0;
    sr->version[sr->n++] = r->version;
}
static uint64_t snap_version(const snaprec *sr, const char *k, int *count) {
    uint64_t v = 0;
    *count = 0;
    for (int i = 0; i < sr->n; i++)
        if (strcmp(sr->key[i], k) == 0) v = sr->version[i], (*count)++;
    return v;
}

/* An import during a background snapshot writes versions older than the
 * snapshot's instant: the snapshot still gets exactly the instant (the
 * shard is handed over first), neither the imported key nor a second
 * record of the overwritten one. */
static void test_import_during_snapshot(void) {
    kvmux_store *s = new_store(1, 1);
    uint64_t va;
    CHECK_EQ(kvmux_store_set(s, K("a"), K("1"), 0, &va), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_import_put(s, K("b"), K("old"), 50, 0), KVMUX_STATUS_OK);
    snaprec sr = {0};
    kvmux_store_snap_begin(s, kvmux_store_now(s), on_snap, &sr); /* instant: last >= 50 */
    CHECK_EQ(kvmux_store_import_put(s, K("new"), K("x"), 3, 0), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_import_put(s, K("b"), K("newer"), 60, 0), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(s, K("a"), K("2"), 0, NULL), KVMUX_STATUS_OK);
    kvmux_store_snap_shard(s, 0);
    int cnt;
    CHECK_EQ(snap_version(&sr, "a", &cnt), va);
    CHECK_EQ(cnt, 1);
    CHECK_EQ(snap_version(&sr, "b", &cnt), 50);
    CHECK_EQ(cnt, 1);
    snap_version(&sr, "new", &cnt);
    CHECK_EQ(cnt, 0);
    CHECK_EQ(sr.n, 2);
    kvmux_store_free(s);
}

int main(void) {
    test_counts();
    test_counts_bulk();
    test_recount_concurrent();
    test_no_counts();
    test_scan_slots();
    test_get_full();
    test_import_put();
    test_import_during_snapshot();
    return test_report();
}
