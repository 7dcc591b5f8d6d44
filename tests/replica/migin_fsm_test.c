/* State machine rules of a slot migration's target side (docs/MIGRATION.md
 * sections 2, 4, 8.4; src/replica/migin.c), through kvmux_fsm_apply on
 * in-process stores, no Raft: IN_BEGIN / IN_READY / IN_ABORT; IMPORT's
 * rules (no READY record: BUSY; min_term and (term, bseq) order:
 * VERSION_MISMATCH; version skip; ABSENT; a PUT already expired applied
 * as ABSENT; the version counter raised; keys outside R refused); PURGE's
 * predicate (owned and READY-importing slots kept); a map giving R to the
 * group ends the record; snapshot format 6 round trip (the rules hold
 * again after restore), malformed records refused; IMPORT_STAGED (0xF5:
 * a big value staged first) under the same rules, an incomplete staged
 * value failing with nothing applied, refused batches dropping their
 * staged value, a value half staged across a snapshot; the batch codec
 * with a vector, the one-record exception to 1 MiB, and a bounded fuzz
 * loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "entry.h"
#include "fsm.h"
#include "migin.h"
#include "stage.h"
#include "store.h"
#include "testutil.h"

#define GROUP 2       /* this group: B */
#define SRC 1         /* the source: A */
#define R_FIRST 0
#define R_LAST 99

/* Field by field: kvmux_migin has padding, which memcmp would read. */
static int same_in(const kvmux_migin *a, const kvmux_migin *b) {
    return a->id == b->id && a->first == b->first && a->last == b->last && a->src == b->src &&
           a->state == b->state && a->min_term == b->min_term && a->last_term == b->last_term &&
           a->last_bseq == b->last_bseq;
}

static kvmux_fsm_clock clk;
static uint8_t buf[1 << 16];
static uint64_t seq;
static kvmux_stage_tab *stage_tab; /* the staged values apply1 passes (NULL: none) */

/* The map of epoch: slots 0-99 go to owner_r, the rest to GROUP. */
static size_t map_of(uint64_t epoch, uint16_t owner_r, uint8_t *out, size_t cap) {
    kvmux_map *m = malloc(sizeof *m);
    REQUIRE(m != NULL);
    kvmux_map_init(m);
    m->epoch = epoch;
    m->ngroups = 2;
    for (uint16_t i = 0; i < 2; i++) {
        m->groups[i].id = (uint16_t)(i + 1);
        m->groups[i].n = 1;
        snprintf(m->groups[i].addr[0], KVMUX_MAP_ADDR_MAX, "127.0.0.1:%u", 7001u + i);
    }
    for (uint32_t s = 0; s < KVMUX_SLOTS; s++) m->owner[s] = s <= R_LAST ? owner_r : GROUP;
    size_t n = kvmux_map_encode(m, out, cap);
    REQUIRE(n > 0);
    free(m);
    return n;
}

/* Apply the one command c at leader clock ms; its result. */
static kvmux_fsm_result apply1(kvmux_store *st, kvmux_fsm_cluster *cl, uint64_t ms,
                               const kvmux_entry_cmd *c) {
    kvmux_entry_hdr h = {.origin = {.replica = 1, .seq = ++seq}, .clock_ms = ms, .ncmds = 1};
    kvmux_entry_encode_hdr(buf, &h);
    size_t off = KVMUX_ENTRY_HDR_LEN + kvmux_entry_encode_cmd(buf + KVMUX_ENTRY_HDR_LEN, c);
    size_t padded = kvmux_entry_padded_len(off);
    memset(buf + off, 0, padded - off);
    kvmux_fsm_result r;
    memset(&r, 0xEE, sizeof r);
    CHECK_EQ(kvmux_fsm_apply(st, &clk, NULL, stage_tab, cl, buf, padded, &r, 1), 1);
    return r;
}

static kvmux_fsm_result step(kvmux_store *st, kvmux_fsm_cluster *cl, uint32_t id, uint8_t stp,
                             const uint8_t *v, uint32_t vlen) {
    uint8_t ex[5];
    kvmux_store_u32be(ex, id);
    ex[4] = stp;
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_MIGSTEP, .extras_len = 5, .extras = ex,
                         .value = v, .value_len = vlen};
    return apply1(st, cl, 2000, &c);
}

static kvmux_fsm_result begin(kvmux_store *st, kvmux_fsm_cluster *cl, uint32_t id,
                              uint16_t first, uint16_t last, uint16_t src, uint64_t term) {
    uint8_t v[14];
    kvmux_store_u16be(v, first);
    kvmux_store_u16be(v + 2, last);
    kvmux_store_u16be(v + 4, src);
    kvmux_store_u64be(v + 6, term);
    return step(st, cl, id, KVMUX_MIG_IN_BEGIN, v, sizeof v);
}

/* A batch under construction. */
typedef struct batch {
    uint8_t b[1 << 15];
    size_t n;
    uint16_t nrec;
} batch;

static void batch_start(batch *x, uint32_t id, uint64_t term, uint32_t bseq) {
    x->n = kvmux_mig_batch_encode_hdr(x->b, id, term, bseq, 0);
    x->nrec = 0;
}
static void batch_put(batch *x, const char *k, const char *v, uint64_t ver, uint64_t exp) {
    kvmux_mig_rec r = {.kind = KVMUX_MIG_REC_PUT, .klen = (uint16_t)strlen(k),
                       .key = (const uint8_t *)k, .version = ver, .expire_at = exp,
                       .vlen = (uint32_t)strlen(v), .value = (const uint8_t *)v};
    x->n += kvmux_mig_rec_encode(x->b + x->n, &r);
    kvmux_store_u16be(x->b + 16, ++x->nrec);
}
static void batch_absent(batch *x, const char *k) {
    kvmux_mig_rec r = {.kind = KVMUX_MIG_REC_ABSENT, .klen = (uint16_t)strlen(k),
                       .key = (const uint8_t *)k};
    x->n += kvmux_mig_rec_encode(x->b + x->n, &r);
    kvmux_store_u16be(x->b + 16, ++x->nrec);
}
static kvmux_fsm_result import(kvmux_store *st, kvmux_fsm_cluster *cl, uint64_t ms,
                               const batch *x) {
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_IMPORT, .value = x->b,
                         .value_len = (uint32_t)x->n};
    return apply1(st, cl, ms, &c);
}

/* A PURGE of the NUL-separated keys in list (n of them). */
static kvmux_fsm_result purge(kvmux_store *st, kvmux_fsm_cluster *cl, const char *const *keys,
                              int n) {
    static uint8_t v[4096];
    size_t off = 2;
    kvmux_store_u16be(v, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        size_t k = strlen(keys[i]);
        kvmux_store_u16be(v + off, (uint16_t)k);
        memcpy(v + off + 2, keys[i], k);
        off += 2 + k;
    }
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_PURGE, .value = v, .value_len = (uint32_t)off};
    return apply1(st, cl, 2000, &c);
}

/* key_r[i]: keys whose slots are in R; key_b: one of GROUP's own slots. */
static char key_r[8][16], key_b[16];
static void pick_keys(void) {
    int got = 0, gotb = 0;
    for (int i = 0; got < 8 || !gotb; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        uint16_t s = kvmux_slot(k, strlen(k));
        if (s <= R_LAST && got < 8) memcpy(key_r[got++], k, sizeof k);
        else if (s > R_LAST && !gotb) memcpy(key_b, k, sizeof k), gotb = 1;
    }
}

static uint64_t version_of(kvmux_store *st, const char *k) {
    uint64_t v = 0;
    if (kvmux_store_exists(st, (const uint8_t *)k, strlen(k), &v) != KVMUX_STATUS_OK) return 0;
    return v;
}

static kvmux_store *new_store(void) {
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 4;
    o.clock = kvmux_fsm_clock_read;
    o.clock_user_data = &clk;
    o.slot_keys = 1;
    kvmux_store *st = NULL;
    REQUIRE(kvmux_store_new(&st, &o) == 0);
    return st;
}

static void install_map(kvmux_store *st, kvmux_fsm_cluster *cl, uint64_t epoch, uint16_t own) {
    static uint8_t m[2048];
    size_t n = map_of(epoch, own, m, sizeof m);
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_MAP, .value = m, .value_len = (uint32_t)n};
    CHECK_EQ(apply1(st, cl, 1000, &c).status, KVMUX_STATUS_OK);
}

/* The rules of IMPORT after a record is READY at term 5 (run on a fresh
 * store, and again on a store restored from its snapshot). */
static void check_import_rules(kvmux_store *st, kvmux_fsm_cluster *cl, uint32_t bseq0,
                               const char *key) {
    batch x;
    kvmux_fsm_result r;
    /* A stale bseq (the last applied) and a stale term: refused. */
    batch_start(&x, 7, 5, bseq0);
    batch_put(&x, key, "v", 10, 0);
    CHECK_EQ(import(st, cl, 3000, &x).status, KVMUX_STATUS_VERSION_MISMATCH);
    batch_start(&x, 7, 4, bseq0 + 1);
    batch_put(&x, key, "v", 10, 0);
    CHECK_EQ(import(st, cl, 3000, &x).status, KVMUX_STATUS_VERSION_MISMATCH);
    /* A higher term than min_term (no IN_BEGIN raised it): refused too. */
    batch_start(&x, 7, 6, 1);
    batch_put(&x, key, "v", 10, 0);
    CHECK_EQ(import(st, cl, 3000, &x).status, KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(version_of(st, key), 0);
    /* Another id: BUSY. */
    batch_start(&x, 8, 5, bseq0 + 1);
    batch_put(&x, key, "v", 10, 0);
    CHECK_EQ(import(st, cl, 3000, &x).status, KVMUX_STATUS_BUSY);
    /* The next bseq: applied. A gap in bseq is fine (order, not density). */
    batch_start(&x, 7, 5, bseq0 + 2);
    batch_put(&x, key, "v5", 10, 0);
    r = import(st, cl, 3000, &x);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u32be(r.extras), 1);
    CHECK_EQ(version_of(st, key), 10);
    CHECK_EQ(cl->in.last_bseq, bseq0 + 2);
}

static void test_rules(void) {
    kvmux_store *st = new_store();
    kvmux_fsm_cluster cl;
    kvmux_fsm_cluster_init(&cl, GROUP);
    install_map(st, &cl, 1, SRC);
    batch x;
    kvmux_fsm_result r;

    /* Before any IN_BEGIN: BUSY, nothing applied. */
    batch_start(&x, 7, 5, 1);
    batch_put(&x, key_r[0], "a", 100, 0);
    CHECK_EQ(import(st, &cl, 2000, &x).status, KVMUX_STATUS_BUSY);
    CHECK_EQ(version_of(st, key_r[0]), 0);

    /* A leftover of R (an older move) and a key of B's own. */
    CHECK_EQ(kvmux_store_set(st, (const uint8_t *)key_r[7], strlen(key_r[7]),
                             (const uint8_t *)"old", 3, 0, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(st, (const uint8_t *)key_b, strlen(key_b),
                             (const uint8_t *)"mine", 4, 0, NULL), KVMUX_STATUS_OK);

    /* Malformed IN_BEGINs: BAD_REQUEST, no record. */
    CHECK_EQ(begin(st, &cl, 7, 50, 40, SRC, 5).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(begin(st, &cl, 7, 0, KVMUX_SLOTS, SRC, 5).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(begin(st, &cl, 7, 0, 99, GROUP, 5).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(begin(st, &cl, 7, 0, 99, 0, 5).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(begin(st, &cl, 0, 0, 99, SRC, 5).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(step(st, &cl, 7, KVMUX_MIG_IN_BEGIN, (const uint8_t *)"short", 5).status,
             KVMUX_STATUS_BAD_REQUEST);
    /* The source's steps (migout.c) never touch the incoming record. */
    for (uint8_t s = KVMUX_MIG_OUT_BEGIN; s <= KVMUX_MIG_OUT_ABORT; s++)
        (void)step(st, &cl, 7, s, NULL, 0);
    CHECK_EQ(step(st, &cl, 7, 9, NULL, 0).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(cl.in.state, KVMUX_MIGIN_NONE);

    /* IN_BEGIN: PURGING, OK min_term 5, last_bseq 0. */
    r = begin(st, &cl, 7, R_FIRST, R_LAST, SRC, 5);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(r.extras_len, 12);
    CHECK_EQ(kvmux_load_u64be(r.extras), 5);
    CHECK_EQ(kvmux_load_u32be(r.extras + 8), 0);
    CHECK_EQ(cl.in.state, KVMUX_MIGIN_PURGING);
    /* Another migration while this one is open: BUSY with its id. */
    r = begin(st, &cl, 8, 200, 300, SRC, 5);
    CHECK_EQ(r.status, KVMUX_STATUS_BUSY);
    CHECK_EQ(kvmux_load_u32be(r.extras), 7);
    /* While PURGING, imports are refused. */
    CHECK_EQ(import(st, &cl, 2000, &x).status, KVMUX_STATUS_BUSY);
    CHECK_EQ(atomic_load(&cl.in_stats.import_refused), 2);

    /* PURGE: the leftover of R goes (R is neither owned nor READY), B's
     * own key stays, an absent key counts nothing. */
    const char *pk[] = {key_r[7], key_b, "absent-key"};
    CHECK_EQ(kvmux_store_range_keys(st, R_FIRST, R_LAST), 1);
    r = purge(st, &cl, pk, 3);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u32be(r.extras), 1);
    CHECK_EQ(version_of(st, key_r[7]), 0);
    CHECK(version_of(st, key_b) != 0);
    CHECK_EQ(kvmux_store_range_keys(st, R_FIRST, R_LAST), 0);
    CHECK_EQ(atomic_load(&cl.in_stats.purged_keys), 1);
    /* Malformed PURGEs. */
    kvmux_entry_cmd bad = {.op = KVMUX_ENTRY_OP_PURGE, .value = (const uint8_t *)"\0\0",
                           .value_len = 2};
    CHECK_EQ(apply1(st, &cl, 2000, &bad).status, KVMUX_STATUS_BAD_REQUEST);
    bad.value = (const uint8_t *)"\0\1\0\5ab";
    bad.value_len = 6;
    CHECK_EQ(apply1(st, &cl, 2000, &bad).status, KVMUX_STATUS_BAD_REQUEST);

    /* IN_READY: READY (again: OK); another id: NOT_FOUND. */
    CHECK_EQ(step(st, &cl, 7, KVMUX_MIG_IN_READY, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(step(st, &cl, 7, KVMUX_MIG_IN_READY, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(step(st, &cl, 9, KVMUX_MIG_IN_READY, NULL, 0).status, KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(cl.in.state, KVMUX_MIGIN_READY);

    /* Batch 1: PUTs keep A's versions; a PUT expired at B's clock (3000)
     * is applied as ABSENT; ABSENT deletes. The counter passes 900. */
    CHECK_EQ(kvmux_store_set(st, (const uint8_t *)key_b, strlen(key_b),
                             (const uint8_t *)"x", 1, 0, NULL), KVMUX_STATUS_OK);
    batch_start(&x, 7, 5, 1);
    batch_put(&x, key_r[0], "a", 100, 0);
    batch_put(&x, key_r[1], "b", 900, 999999);
    batch_put(&x, key_r[2], "gone", 300, 3000);
    batch_absent(&x, key_r[3]);
    r = import(st, &cl, 3000, &x);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u32be(r.extras), 4);
    CHECK_EQ(kvmux_load_u32be(r.extras + 4), 0);
    CHECK_EQ(version_of(st, key_r[0]), 100);
    CHECK_EQ(version_of(st, key_r[1]), 900);
    CHECK_EQ(version_of(st, key_r[2]), 0);
    CHECK(kvmux_store_last_version(st) >= 900);
    uint64_t ver;
    CHECK_EQ(kvmux_store_set(st, (const uint8_t *)key_b, strlen(key_b), (const uint8_t *)"y",
                             1, 0, &ver), KVMUX_STATUS_OK);
    CHECK(ver > 900);
    uint64_t exp = 0;
    CHECK_EQ(kvmux_store_get_full(st, (const uint8_t *)key_r[1], strlen(key_r[1]), NULL, NULL,
                                  &exp), KVMUX_STATUS_OK);
    CHECK_EQ(exp, 999999); /* absolute expiry kept */
    /* A READY range is not purged. */
    const char *pr[] = {key_r[0]};
    r = purge(st, &cl, pr, 1);
    CHECK_EQ(kvmux_load_u32be(r.extras), 0);
    CHECK_EQ(version_of(st, key_r[0]), 100);

    /* Batch 2: a lower version than held is skipped; ABSENT of a key we
     * hold deletes it; the counter is raised even by skipped records. */
    batch_start(&x, 7, 5, 2);
    batch_put(&x, key_r[0], "older", 50, 0);
    batch_put(&x, key_r[4], "c", 2000, 0);
    batch_absent(&x, key_r[1]);
    r = import(st, &cl, 3000, &x);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u32be(r.extras), 2);
    CHECK_EQ(kvmux_load_u32be(r.extras + 4), 1);
    CHECK_EQ(version_of(st, key_r[0]), 100);
    CHECK_EQ(version_of(st, key_r[1]), 0);
    CHECK_EQ(atomic_load(&cl.in_stats.import_batches), 2);
    CHECK_EQ(atomic_load(&cl.in_stats.import_keys), 6);
    CHECK_EQ(atomic_load(&cl.in_stats.import_skipped), 1);

    /* A key outside R, a malformed batch: BAD_REQUEST, nothing applied. */
    batch_start(&x, 7, 5, 3);
    batch_put(&x, key_r[6], "z", 10, 0);
    batch_put(&x, key_b, "z", 10, 0);
    CHECK_EQ(import(st, &cl, 3000, &x).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(version_of(st, key_r[6]), 0);
    CHECK_EQ(cl.in.last_bseq, 2);

    /* IN_BEGIN again: equal term OK (min_term 5, last_bseq 2: go on at
     * 3); lower term VERSION_MISMATCH; another range BAD_REQUEST. */
    r = begin(st, &cl, 7, R_FIRST, R_LAST, SRC, 5);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r.extras), 5);
    CHECK_EQ(kvmux_load_u32be(r.extras + 8), 2);
    CHECK_EQ(begin(st, &cl, 7, R_FIRST, R_LAST, SRC, 4).status, KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(begin(st, &cl, 7, R_FIRST, 50, SRC, 5).status, KVMUX_STATUS_BAD_REQUEST);
    check_import_rules(st, &cl, 2, key_r[5]); /* applies (5, 4) */

    /* Snapshot, restore into another store: the record and the rules. */
    uint8_t *snap;
    size_t slen;
    REQUIRE(kvmux_fsm_snapshot(st, &clk, NULL, NULL, &cl, realloc, &snap, &slen) == 0);
    kvmux_store *st2 = new_store();
    kvmux_fsm_cluster cl2;
    kvmux_fsm_cluster_init(&cl2, GROUP);
    for (size_t len = 0; len < slen; len += 5) /* every cut refused */
        CHECK_EQ(kvmux_fsm_restore(st2, &clk, NULL, NULL, &cl2, snap, len), -1);
    CHECK_EQ(kvmux_fsm_restore(st2, &clk, NULL, NULL, &cl2, snap, slen), 0);
    CHECK(same_in(&cl.in, &cl2.in));
    CHECK_EQ(kvmux_fsm_digest(st2), kvmux_fsm_digest(st));
    CHECK_EQ(kvmux_store_range_keys(st2, R_FIRST, R_LAST),
             kvmux_store_range_keys(st, R_FIRST, R_LAST));
    check_import_rules(st2, &cl2, 4, key_r[6]);
    /* A damaged record (state 3) is refused; format 5 restores none. */
    uint8_t *bad_snap = malloc(slen);
    REQUIRE(bad_snap);
    memcpy(bad_snap, snap, slen);
    bad_snap[slen - KVMUX_MIGIN_ENCODED_LEN + 10] = 3;
    CHECK_EQ(kvmux_fsm_restore(st2, &clk, NULL, NULL, &cl2, bad_snap, slen), -1);
    kvmux_store_u32be(bad_snap + 4, 5);
    CHECK_EQ(kvmux_fsm_restore(st2, &clk, NULL, NULL, &cl2, bad_snap,
                               slen - 6 - KVMUX_MIGIN_ENCODED_LEN), 0);
    CHECK_EQ(cl2.in.state, KVMUX_MIGIN_NONE);
    free(bad_snap);
    free(snap);

    /* A new source leader: IN_BEGIN term 9 keeps the keys, fences term 5. */
    r = begin(st, &cl, 7, R_FIRST, R_LAST, SRC, 9);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r.extras), 9);
    CHECK_EQ(kvmux_load_u32be(r.extras + 8), 0);
    CHECK_EQ(cl.in.state, KVMUX_MIGIN_READY);
    CHECK_EQ(version_of(st, key_r[0]), 100);
    batch_start(&x, 7, 5, 99);
    batch_put(&x, key_r[6], "zombie", 10, 0);
    CHECK_EQ(import(st, &cl, 3000, &x).status, KVMUX_STATUS_VERSION_MISMATCH);
    batch_start(&x, 7, 9, 1);
    batch_put(&x, key_r[6], "new", 20, 0);
    CHECK_EQ(import(st, &cl, 3000, &x).status, KVMUX_STATUS_OK);

    /* IN_ABORT: the record goes, the imported keys become leftovers the
     * next PURGE removes; a resent IN_ABORT is OK; IN_READY NOT_FOUND. */
    CHECK_EQ(step(st, &cl, 8, KVMUX_MIG_IN_ABORT, NULL, 0).status, KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(step(st, &cl, 7, KVMUX_MIG_IN_ABORT, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(cl.in.state, KVMUX_MIGIN_NONE);
    CHECK_EQ(step(st, &cl, 7, KVMUX_MIG_IN_ABORT, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(step(st, &cl, 7, KVMUX_MIG_IN_READY, NULL, 0).status, KVMUX_STATUS_NOT_FOUND);
    const char *all[] = {key_r[0], key_r[4], key_r[5], key_r[6]};
    r = purge(st, &cl, all, 4);
    CHECK_EQ(kvmux_load_u32be(r.extras), 4);
    CHECK_EQ(kvmux_store_range_keys(st, R_FIRST, R_LAST), 0);

    /* Commit: a map giving R to this group ends the record; the keys are
     * owned from then on (PURGE keeps them). */
    CHECK_EQ(begin(st, &cl, 11, R_FIRST, R_LAST, SRC, 9).status, KVMUX_STATUS_OK);
    CHECK_EQ(step(st, &cl, 11, KVMUX_MIG_IN_READY, NULL, 0).status, KVMUX_STATUS_OK);
    batch_start(&x, 11, 9, 1);
    batch_put(&x, key_r[0], "moved", 3000, 0);
    CHECK_EQ(import(st, &cl, 3000, &x).status, KVMUX_STATUS_OK);
    install_map(st, &cl, 2, GROUP);
    CHECK_EQ(cl.in.state, KVMUX_MIGIN_NONE);
    r = purge(st, &cl, all, 1);
    CHECK_EQ(kvmux_load_u32be(r.extras), 0);
    CHECK_EQ(version_of(st, key_r[0]), 3000);
    CHECK_EQ(import(st, &cl, 3000, &x).status, KVMUX_STATUS_BUSY);

    /* Not a data group (no --cluster-group): refused. */
    kvmux_fsm_cluster none;
    kvmux_fsm_cluster_init(&none, 0);
    CHECK_EQ(begin(st, &none, 12, 0, 5, SRC, 1).status, KVMUX_STATUS_BAD_REQUEST);
    kvmux_fsm_cluster_clear(&none);

    kvmux_fsm_cluster_clear(&cl);
    kvmux_fsm_cluster_clear(&cl2);
    kvmux_store_free(st);
    kvmux_store_free(st2);
}

/* ---- IMPORT_STAGED (0xF5) ---- */

#define SVAL 3000u /* a staged value (any size stages; big ones in practice) */

static uint8_t sval[SVAL];

/* STAGE bytes [off, off + n) of sval as value id (tag) of total bytes. */
static kvmux_fsm_result stage(kvmux_store *st, kvmux_fsm_cluster *cl, uint32_t tag,
                              uint32_t off, uint32_t n, uint32_t total) {
    uint8_t id[KVMUX_STAGE_ID_LEN] = {0}, ex[8];
    kvmux_store_u32be(id + 12, tag);
    kvmux_store_u32be(ex, off);
    kvmux_store_u32be(ex + 4, total);
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_STAGE, .extras_len = 8, .extras = ex,
                         .key_len = KVMUX_STAGE_ID_LEN, .key = id, .value = sval + off,
                         .value_len = n};
    return apply1(st, cl, 3000, &c);
}

/* The IMPORT_STAGED batch (id, term, bseq): one PUT of key at ver / exp
 * naming staged value tag of total bytes. */
static kvmux_fsm_result import_staged(kvmux_store *st, kvmux_fsm_cluster *cl, uint32_t id,
                                      uint64_t term, uint32_t bseq, const char *key,
                                      uint64_t ver, uint64_t exp, uint32_t tag, uint32_t total) {
    batch x;
    uint8_t ref[KVMUX_STAGE_ID_LEN + 4] = {0};
    kvmux_store_u32be(ref + 12, tag);
    kvmux_store_u32be(ref + KVMUX_STAGE_ID_LEN, total);
    batch_start(&x, id, term, bseq);
    kvmux_mig_rec r = {.kind = KVMUX_MIG_REC_PUT, .klen = (uint16_t)strlen(key),
                       .key = (const uint8_t *)key, .version = ver, .expire_at = exp,
                       .vlen = sizeof ref, .value = ref};
    x.n += kvmux_mig_rec_encode(x.b + x.n, &r);
    kvmux_store_u16be(x.b + 16, ++x.nrec);
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_IMPORT_STAGED, .value = x.b,
                         .value_len = (uint32_t)x.n};
    return apply1(st, cl, 3000, &c);
}

/* The whole of sval staged as value tag, in two chunks. */
static void stage_all(kvmux_store *st, kvmux_fsm_cluster *cl, uint32_t tag) {
    CHECK_EQ(stage(st, cl, tag, 0, SVAL / 2, SVAL).status, KVMUX_STATUS_OK);
    CHECK_EQ(stage(st, cl, tag, SVAL / 2, SVAL - SVAL / 2, SVAL).status, KVMUX_STATUS_OK);
}

static int is_sval(void *ud, uint64_t version, const uint8_t *value, size_t len) {
    (void)version;
    *(int *)ud = len == SVAL && memcmp(value, sval, SVAL) == 0;
    return 0;
}

static int holds_sval(kvmux_store *st, const char *key) {
    int same = 0;
    return kvmux_store_get(st, (const uint8_t *)key, strlen(key), is_sval, &same) ==
               KVMUX_STATUS_OK &&
           same;
}

static void test_staged(void) {
    for (uint32_t i = 0; i < SVAL; i++) sval[i] = (uint8_t)(i * 31 + 7);
    kvmux_store *st = new_store();
    kvmux_fsm_cluster cl;
    kvmux_fsm_cluster_init(&cl, GROUP);
    kvmux_stage_tab sg;
    kvmux_stage_init(&sg);
    stage_tab = &sg;
    install_map(st, &cl, 1, SRC);
    kvmux_fsm_result r;
    const char *k = key_r[0], *k2 = key_r[1];

    /* No record yet: BUSY, and the staged value is dropped. */
    stage_all(st, &cl, 1);
    CHECK_EQ(sg.count, 1);
    CHECK_EQ(import_staged(st, &cl, 7, 5, 1, k, 40, 0, 1, SVAL).status, KVMUX_STATUS_BUSY);
    CHECK_EQ(sg.count, 0);
    CHECK_EQ(begin(st, &cl, 7, R_FIRST, R_LAST, SRC, 5).status, KVMUX_STATUS_OK);
    CHECK_EQ(step(st, &cl, 7, KVMUX_MIG_IN_READY, NULL, 0).status, KVMUX_STATUS_OK);

    /* Malformed: two records, a value field not 20 bytes, total 0. */
    batch x;
    batch_start(&x, 7, 5, 1);
    batch_put(&x, k, "01234567890123456789", 40, 0);
    batch_put(&x, k2, "01234567890123456789", 40, 0);
    kvmux_entry_cmd bad = {.op = KVMUX_ENTRY_OP_IMPORT_STAGED, .value = x.b,
                           .value_len = (uint32_t)x.n};
    CHECK_EQ(apply1(st, &cl, 3000, &bad).status, KVMUX_STATUS_BAD_REQUEST);
    batch_start(&x, 7, 5, 1);
    batch_put(&x, k, "short", 40, 0);
    bad.value_len = (uint32_t)x.n;
    CHECK_EQ(apply1(st, &cl, 3000, &bad).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(import_staged(st, &cl, 7, 5, 1, k, 40, 0, 1, 0).status, KVMUX_STATUS_BAD_REQUEST);

    /* Incomplete (one chunk of two), or never staged: INTERNAL, nothing
     * applied, (last_term, last_bseq) unchanged so the resend of bseq 1
     * is applied later; the half-staged value is gone. */
    CHECK_EQ(stage(st, &cl, 2, 0, SVAL / 2, SVAL).status, KVMUX_STATUS_OK);
    CHECK_EQ(import_staged(st, &cl, 7, 5, 1, k, 40, 0, 2, SVAL).status, KVMUX_STATUS_INTERNAL);
    CHECK_EQ(import_staged(st, &cl, 7, 5, 1, k, 40, 0, 99, SVAL).status, KVMUX_STATUS_INTERNAL);
    CHECK_EQ(version_of(st, k), 0);
    CHECK_EQ(cl.in.last_bseq, 0);
    CHECK_EQ(sg.count, 0);
    /* A total not the staged one's: INTERNAL too (the value is dropped). */
    stage_all(st, &cl, 3);
    CHECK_EQ(import_staged(st, &cl, 7, 5, 1, k, 40, 0, 3, SVAL - 1).status,
             KVMUX_STATUS_INTERNAL);
    CHECK_EQ(sg.count, 0);

    /* Complete: applied with IMPORT's rules -- version and absolute
     * expiry kept, the counter raised, (term, bseq) recorded. */
    uint64_t batches0 = atomic_load(&cl.in_stats.import_batches);
    stage_all(st, &cl, 4);
    r = import_staged(st, &cl, 7, 5, 1, k, 40, 999999, 4, SVAL);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u32be(r.extras), 1);
    CHECK_EQ(kvmux_load_u32be(r.extras + 4), 0);
    CHECK(holds_sval(st, k));
    CHECK_EQ(version_of(st, k), 40);
    uint64_t exp = 0;
    CHECK_EQ(kvmux_store_get_full(st, (const uint8_t *)k, strlen(k), NULL, NULL, &exp),
             KVMUX_STATUS_OK);
    CHECK_EQ(exp, 999999);
    CHECK(kvmux_store_last_version(st) >= 40);
    CHECK_EQ(cl.in.last_bseq, 1);
    CHECK_EQ(sg.count, 0);
    CHECK_EQ(atomic_load(&cl.in_stats.import_batches), batches0 + 1);
    CHECK_EQ(atomic_load(&cl.in_stats.import_staged), 1);

    /* Fencing: the same bseq again (a resend), a stale term, a term above
     * min_term, another id -- refused, nothing applied, the staged value
     * dropped each time. */
    uint64_t refused0 = atomic_load(&cl.in_stats.import_refused);
    stage_all(st, &cl, 5);
    CHECK_EQ(import_staged(st, &cl, 7, 5, 1, k2, 50, 0, 5, SVAL).status,
             KVMUX_STATUS_VERSION_MISMATCH);
    stage_all(st, &cl, 6);
    CHECK_EQ(import_staged(st, &cl, 7, 4, 2, k2, 50, 0, 6, SVAL).status,
             KVMUX_STATUS_VERSION_MISMATCH);
    stage_all(st, &cl, 7);
    CHECK_EQ(import_staged(st, &cl, 7, 6, 1, k2, 50, 0, 7, SVAL).status,
             KVMUX_STATUS_VERSION_MISMATCH);
    stage_all(st, &cl, 8);
    CHECK_EQ(import_staged(st, &cl, 8, 5, 2, k2, 50, 0, 8, SVAL).status, KVMUX_STATUS_BUSY);
    CHECK_EQ(version_of(st, k2), 0);
    CHECK_EQ(sg.count, 0);
    CHECK_EQ(atomic_load(&cl.in_stats.import_refused), refused0 + 4);

    /* A lower version than held: skipped (counted), the value kept; an
     * expiry already passed at B's clock (3000): deleted, as ABSENT. */
    stage_all(st, &cl, 9);
    r = import_staged(st, &cl, 7, 5, 2, k, 30, 0, 9, SVAL);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u32be(r.extras + 4), 1);
    CHECK_EQ(version_of(st, k), 40);
    stage_all(st, &cl, 10);
    CHECK_EQ(import_staged(st, &cl, 7, 5, 3, k, 60, 3000, 10, SVAL).status, KVMUX_STATUS_OK);
    CHECK_EQ(version_of(st, k), 0);
    CHECK_EQ(sg.count, 0);

    /* Half staged across a snapshot: the restored replica finishes the
     * value and applies the import exactly as this one does. */
    CHECK_EQ(stage(st, &cl, 11, 0, SVAL / 2, SVAL).status, KVMUX_STATUS_OK);
    uint8_t *snap;
    size_t slen;
    REQUIRE(kvmux_fsm_snapshot(st, &clk, NULL, &sg, &cl, realloc, &snap, &slen) == 0);
    kvmux_store *st2 = new_store();
    kvmux_fsm_cluster cl2;
    kvmux_fsm_cluster_init(&cl2, GROUP);
    kvmux_stage_tab sg2;
    kvmux_stage_init(&sg2);
    CHECK_EQ(kvmux_fsm_restore(st2, &clk, NULL, &sg2, &cl2, snap, slen), 0);
    free(snap);
    CHECK_EQ(sg2.count, 1);
    kvmux_store *sts[2] = {st, st2};
    kvmux_fsm_cluster *cls[2] = {&cl, &cl2};
    kvmux_stage_tab *sgs[2] = {&sg, &sg2};
    for (int i = 0; i < 2; i++) {
        stage_tab = sgs[i];
        CHECK_EQ(stage(sts[i], cls[i], 11, SVAL / 2, SVAL - SVAL / 2, SVAL).status,
                 KVMUX_STATUS_OK);
        CHECK_EQ(import_staged(sts[i], cls[i], 7, 5, 4, k2, 70, 0, 11, SVAL).status,
                 KVMUX_STATUS_OK);
        CHECK(holds_sval(sts[i], k2));
        CHECK_EQ(sgs[i]->count, 0);
    }
    CHECK_EQ(kvmux_fsm_digest(st2), kvmux_fsm_digest(st));
    CHECK(same_in(&cl.in, &cl2.in));

    /* No staged values table at all: INTERNAL, nothing applied. */
    stage_tab = NULL;
    CHECK_EQ(import_staged(st, &cl, 7, 5, 5, key_r[2], 80, 0, 12, SVAL).status,
             KVMUX_STATUS_INTERNAL);
    CHECK_EQ(version_of(st, key_r[2]), 0);
    CHECK_EQ(cl.in.last_bseq, 4);

    kvmux_stage_clear(&sg);
    kvmux_stage_clear(&sg2);
    kvmux_fsm_cluster_clear(&cl);
    kvmux_fsm_cluster_clear(&cl2);
    kvmux_store_free(st);
    kvmux_store_free(st2);
}

/* The batch of docs/PROTOCOL.md 18.6 (also in tests/vectors/frames.hex):
 * id 7, term 5, bseq 1, a PUT of "k" = "v" at version 2 without expiry,
 * an ABSENT of "gone". */
static const uint8_t VEC_BATCH[] = {
    0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x02,
    0x01, 0x00, 0x01, 'k', 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 'v',
    0x02, 0x00, 0x04, 'g', 'o', 'n', 'e'};

static void test_codec(void) {
    batch x;
    batch_start(&x, 7, 5, 1);
    batch_put(&x, "k", "v", 2, 0);
    batch_absent(&x, "gone");
    CHECK_EQ(x.n, sizeof VEC_BATCH);
    CHECK(memcmp(x.b, VEC_BATCH, sizeof VEC_BATCH) == 0);
    kvmux_mig_batch b;
    char err[256];
    CHECK_EQ(kvmux_mig_batch_parse(VEC_BATCH, sizeof VEC_BATCH, 1024, 1, 0, &b, err, sizeof err),
             0);
    CHECK(b.id == 7 && b.term == 5 && b.bseq == 1 && b.nrec == 2);
    size_t off = 0;
    kvmux_mig_rec r;
    kvmux_mig_batch_next(&b, &off, &r);
    CHECK(r.kind == KVMUX_MIG_REC_PUT && r.klen == 1 && r.version == 2 && r.vlen == 1 &&
          r.value[0] == 'v');
    kvmux_mig_batch_next(&b, &off, &r);
    CHECK(r.kind == KVMUX_MIG_REC_ABSENT && r.klen == 4 && memcmp(r.key, "gone", 4) == 0);
    CHECK_EQ(off, b.recs_len);
    /* Every truncation, trailing bytes, and the field checks. */
    for (size_t n = 0; n < sizeof VEC_BATCH; n++)
        CHECK_EQ(kvmux_mig_batch_parse(VEC_BATCH, n, 1024, 1, 0, &b, NULL, 0), -1);
    uint8_t t[sizeof VEC_BATCH + 1];
    memcpy(t, VEC_BATCH, sizeof VEC_BATCH);
    t[sizeof VEC_BATCH] = 0;
    CHECK_EQ(kvmux_mig_batch_parse(t, sizeof t, 1024, 1, 0, &b, err, sizeof err), -1);
    CHECK(strstr(err, "after the last record") != NULL);
    memcpy(t, VEC_BATCH, sizeof VEC_BATCH);
    t[18] = 3; /* kind */
    CHECK_EQ(kvmux_mig_batch_parse(t, sizeof VEC_BATCH, 1024, 1, 0, &b, err, sizeof err), -1);
    memcpy(t, VEC_BATCH, sizeof VEC_BATCH);
    t[29] = 0; /* version 0 */
    CHECK_EQ(kvmux_mig_batch_parse(t, sizeof VEC_BATCH, 1024, 1, 0, &b, err, sizeof err), -1);
    CHECK(strstr(err, "version 0") != NULL);
    CHECK_EQ(kvmux_mig_batch_parse(VEC_BATCH, sizeof VEC_BATCH, 3, 1, 0, &b, err, sizeof err),
             -1); /* "gone" over a max key of 3 */
    uint16_t sk = kvmux_slot("k", 1);
    CHECK_EQ(kvmux_mig_batch_parse(VEC_BATCH, sizeof VEC_BATCH, 1024, sk, sk, &b, err,
                                   sizeof err), -1); /* "gone" outside k's slot */
    CHECK(strstr(err, "outside") != NULL);
    /* nrec 0 and 4097, id 0, bseq 0. */
    memcpy(t, VEC_BATCH, sizeof VEC_BATCH);
    t[16] = 0, t[17] = 0;
    CHECK_EQ(kvmux_mig_batch_parse(t, sizeof VEC_BATCH, 1024, 1, 0, &b, NULL, 0), -1);
    t[16] = 0x10, t[17] = 0x01;
    CHECK_EQ(kvmux_mig_batch_parse(t, sizeof VEC_BATCH, 1024, 1, 0, &b, NULL, 0), -1);
    memcpy(t, VEC_BATCH, sizeof VEC_BATCH);
    t[3] = 0;
    CHECK_EQ(kvmux_mig_batch_parse(t, sizeof VEC_BATCH, 1024, 1, 0, &b, NULL, 0), -1);
    memcpy(t, VEC_BATCH, sizeof VEC_BATCH);
    t[15] = 0;
    CHECK_EQ(kvmux_mig_batch_parse(t, sizeof VEC_BATCH, 1024, 1, 0, &b, NULL, 0), -1);
    /* Bounded fuzz: random mutations never crash; an accepted batch's
     * records all lie inside it. */
    uint64_t rng = 42;
    for (int i = 0; i < 20000; i++) {
        memcpy(t, VEC_BATCH, sizeof VEC_BATCH);
        for (int k = 0; k < 3; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            t[(rng >> 33) % sizeof VEC_BATCH] = (uint8_t)(rng >> 17);
        }
        size_t n = (size_t)((rng >> 40) % (sizeof VEC_BATCH + 1));
        if (kvmux_mig_batch_parse(t, n, 1024, 1, 0, &b, NULL, 0) == 0) {
            size_t o = 0;
            for (uint32_t k = 0; k < b.nrec; k++) kvmux_mig_batch_next(&b, &o, &r);
            CHECK_EQ(o, b.recs_len);
        }
    }
}

/* The 1 MiB bound of a batch's keys and values holds for batches of
 * several records; a batch of one record may be bigger (a big value
 * travels alone: the server bounds it by --max-value). */
static void test_big_batch(void) {
    size_t vlen = KVMUX_MIG_BATCH_BYTES + 1, cap = 2 * (vlen + 64);
    uint8_t *p = calloc(1, cap), *v = calloc(1, vlen);
    REQUIRE(p && v);
    size_t n = kvmux_mig_batch_encode_hdr(p, 7, 5, 1, 1);
    kvmux_mig_rec r = {.kind = KVMUX_MIG_REC_PUT, .klen = 1, .key = (const uint8_t *)"k",
                       .version = 2, .vlen = (uint32_t)vlen, .value = v};
    n += kvmux_mig_rec_encode(p + n, &r);
    kvmux_mig_batch b;
    char err[160];
    CHECK_EQ(kvmux_mig_batch_parse(p, n, 1024, 1, 0, &b, err, sizeof err), 0);
    /* A second record, even a small one: over 1 MiB in a batch of two. */
    kvmux_mig_rec r2 = {.kind = KVMUX_MIG_REC_ABSENT, .klen = 1, .key = (const uint8_t *)"g"};
    n += kvmux_mig_rec_encode(p + n, &r2);
    kvmux_store_u16be(p + 16, 2);
    CHECK_EQ(kvmux_mig_batch_parse(p, n, 1024, 1, 0, &b, err, sizeof err), -1);
    CHECK(strstr(err, "only a batch of one record may be bigger") != NULL);
    /* Two records of half a MiB each and a byte: refused likewise. */
    n = kvmux_mig_batch_encode_hdr(p, 7, 5, 1, 2);
    r.vlen = KVMUX_MIG_BATCH_BYTES / 2;
    n += kvmux_mig_rec_encode(p + n, &r);
    n += kvmux_mig_rec_encode(p + n, &r);
    CHECK_EQ(kvmux_mig_batch_parse(p, n, 1024, 1, 0, &b, err, sizeof err), -1);
    free(p);
    free(v);
}

int main(void) {
    pick_keys();
    test_big_batch();
    test_codec();
    test_rules();
    test_staged();
    return test_report();
}
