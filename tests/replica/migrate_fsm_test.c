/* migrate_fsm_test (docs/MIGRATION.md section 12), the MIGREC part: the
 * map group's migration table in in-process state machines (entry op
 * 0xF8 applied through kvmux_fsm_apply on two replicas, which must end
 * byte-identical): CREATE's checks and limits, COMMIT / ABORT exclusive
 * and idempotent, COMMIT installing map epoch + 1, ACK retention, the
 * setmap guard; snapshot format 6 round trip and format 5 restore; the
 * KVMG codec against a vector, its refusals, and a bounded fuzz loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "entry.h"
#include "fsm.h"
#include "migrec.h"
#include "migtab.h"
#include "proto.h"
#include "store.h"
#include "testutil.h"
#include "../unit/proto/proto_testutil.h"

#define NGROUPS 40u

static kvmux_fsm_clock clocks[4];
static int nclocks;

static kvmux_store *new_store(void) {
    kvmux_store *s = NULL;
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 2;
    REQUIRE(nclocks < 4);
    o.clock = kvmux_fsm_clock_read;
    o.clock_user_data = &clocks[nclocks++];
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    return s;
}

/* Two replicas of the map group: every entry goes to both. */
typedef struct rep {
    kvmux_store *st;
    kvmux_fsm_clock *clk;
    kvmux_fsm_cluster cl;
} rep;
static rep R[2];
static uint64_t clock_ms = 1700000000000ull;

/* One entry of one command on both replicas; the first's result. */
static kvmux_fsm_result apply1(const kvmux_entry_cmd *c) {
    static uint8_t buf[KVMUX_ENTRY_HDR_LEN + 32 + KVMUX_MAP_WIRE_MAX];
    kvmux_entry_hdr h = {.origin = {.replica = 1, .loop = 0, .nonce = 7, .seq = 1},
                         .clock_ms = clock_ms += 10, .ncmds = 1};
    kvmux_entry_encode_hdr(buf, &h);
    size_t off = KVMUX_ENTRY_HDR_LEN + kvmux_entry_encode_cmd(buf + KVMUX_ENTRY_HDR_LEN, c);
    size_t padded = kvmux_entry_padded_len(off);
    memset(buf + off, 0, padded - off);
    kvmux_fsm_result r[2];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(kvmux_fsm_apply(R[i].st, R[i].clk, NULL, NULL, &R[i].cl, buf, padded, &r[i], 1), 1);
    CHECK_EQ(r[0].status, r[1].status);
    CHECK(memcmp(r[0].extras, r[1].extras, 16) == 0);
    return r[0];
}

/* A map of NGROUPS groups; group g owns slots [100 (g - 1), 100 g) for g
 * <= 30, the rest of the slots are group 1's; groups 31..40 own none. */
static kvmux_map *base_map(uint64_t epoch) {
    kvmux_map *m = malloc(sizeof *m);
    REQUIRE(m != NULL);
    kvmux_map_init(m);
    m->epoch = epoch;
    m->ngroups = NGROUPS;
    for (uint16_t i = 0; i < NGROUPS; i++) {
        m->groups[i].id = (uint16_t)(i + 1);
        m->groups[i].n = 1;
        snprintf(m->groups[i].addr[0], KVMUX_MAP_ADDR_MAX, "127.0.0.1:%u", 7001u + i);
    }
    for (uint32_t s = 0; s < KVMUX_SLOTS; s++) m->owner[s] = s < 3000 ? (uint16_t)(s / 100 + 1) : 1;
    return m;
}

static kvmux_fsm_result setmap(const kvmux_map *m) {
    static uint8_t wire[KVMUX_MAP_WIRE_MAX];
    size_t n = kvmux_map_encode(m, wire, sizeof wire);
    REQUIRE(n > 0);
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n, .value = wire};
    return apply1(&c);
}

static kvmux_migres step(uint8_t st, const uint8_t *v, uint32_t n) {
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_MIGREC, .extras_len = 1, .extras = &st,
                         .value_len = n, .value = v};
    kvmux_fsm_result r = apply1(&c);
    kvmux_migres m;
    memset(&m, 0, sizeof m);
    CHECK_EQ(kvmux_migrec_result_get(&r, &m), 0);
    return m;
}

static kvmux_migres create(uint16_t first, uint16_t last, uint16_t dst) {
    uint8_t v[6];
    kvmux_store_u16be(v, first);
    kvmux_store_u16be(v + 2, last);
    kvmux_store_u16be(v + 4, dst);
    return step(KVMUX_MIGREC_CREATE, v, 6);
}
static kvmux_migres commit(uint32_t id) {
    uint8_t v[4];
    kvmux_store_u32be(v, id);
    return step(KVMUX_MIGREC_COMMIT, v, 4);
}
static kvmux_migres abort_(uint32_t id, const char *reason) {
    uint8_t v[4 + 256];
    kvmux_store_u32be(v, id);
    memcpy(v + 4, reason, strlen(reason));
    return step(KVMUX_MIGREC_ABORT, v, (uint32_t)(4 + strlen(reason)));
}
static kvmux_migres ack(uint32_t id, uint16_t g) {
    uint8_t v[6];
    kvmux_store_u32be(v, id);
    kvmux_store_u16be(v + 4, g);
    return step(KVMUX_MIGREC_ACK, v, 6);
}

/* Both replicas' tables encode to the same bytes; returns mgen. */
static uint64_t same_tables(void) {
    uint8_t *a, *b;
    size_t la, lb;
    uint64_t ga, gb;
    REQUIRE(kvmux_migrec_table_bytes(&R[0].cl, &a, &la, &ga) == 0);
    REQUIRE(kvmux_migrec_table_bytes(&R[1].cl, &b, &lb, &gb) == 0);
    CHECK(la == lb && memcmp(a, b, la) == 0);
    free(a);
    free(b);
    return ga;
}

static void setup(void) {
    for (int i = 0; i < 2; i++) {
        R[i].st = new_store();
        R[i].clk = &clocks[nclocks - 1];
        kvmux_fsm_cluster_init(&R[i].cl, 0);
        R[i].cl.cas = 1;
    }
}

static void teardown(void) {
    for (int i = 0; i < 2; i++) {
        kvmux_fsm_cluster_clear(&R[i].cl);
        kvmux_store_free(R[i].st);
    }
}

static void test_create_rules(void) {
    kvmux_migres m = create(0, 99, 2);
    CHECK_EQ(m.status, KVMUX_STATUS_BAD_REQUEST); /* no map yet */
    CHECK_EQ(m.why, KVMUX_MIGR_NO_MAP);
    kvmux_map *map = base_map(1);
    CHECK_EQ(setmap(map).status, KVMUX_STATUS_OK);
    CHECK_EQ(same_tables(), 0);
    m = create(50, 150, 3); /* groups 1 and 2 */
    CHECK_EQ(m.why, KVMUX_MIGR_NOT_ONE_GROUP);
    char msg[256];
    kvmux_migrec_message(&R[0].cl, &m, msg, sizeof msg);
    CHECK(strcmp(msg, "slots 50-150 are not served by one group") == 0);
    CHECK_EQ(create(0, 99, 41).why, KVMUX_MIGR_DST_NOT_IN_MAP);
    CHECK_EQ(create(0, 99, 1).why, KVMUX_MIGR_ALREADY_DST);
    CHECK_EQ(create(99, 0, 2).why, KVMUX_MIGR_BAD_RANGE);
    CHECK_EQ(create(0, 16384, 2).why, KVMUX_MIGR_BAD_RANGE);
    CHECK_EQ(step(KVMUX_MIGREC_CREATE, (const uint8_t *)"abc", 3).why, KVMUX_MIGR_MALFORMED);
    CHECK_EQ(step(9, (const uint8_t *)"abcdef", 6).why, KVMUX_MIGR_MALFORMED);
    CHECK_EQ(same_tables(), 0); /* refusals change nothing */

    m = create(0, 99, 31); /* group 1 -> 31: id 1 */
    CHECK_EQ(m.status, KVMUX_STATUS_OK);
    CHECK_EQ(m.id, 1);
    kvmux_migrec_message(&R[0].cl, &m, msg, sizeof msg);
    CHECK(strcmp(msg, "migration 1: slots 0-99 from group 1 to group 31") == 0);
    CHECK_EQ(same_tables(), 1);
    m = create(5000, 5001, 32); /* group 1 again as a source */
    CHECK_EQ(m.status, KVMUX_STATUS_BUSY);
    CHECK_EQ(m.why, KVMUX_MIGR_SRC_BUSY);
    CHECK_EQ(m.id, 1);
    m = create(100, 199, 31); /* group 31 again as a target */
    CHECK_EQ(m.why, KVMUX_MIGR_DST_BUSY);
    kvmux_migrec_message(&R[0].cl, &m, msg, sizeof msg);
    CHECK(strcmp(msg, "group 31 is already the target of migration 1") == 0);
    /* Up to 16 OPEN: groups 2..16 -> 32..40 and 17..22 -> 23..28. */
    uint32_t id = 1;
    for (uint16_t g = 2; g <= 16; g++) {
        uint16_t dst = g <= 10 ? (uint16_t)(g + 30) : (uint16_t)(g + 12);
        m = create((uint16_t)((g - 1) * 100), (uint16_t)((g - 1) * 100 + 99), dst);
        CHECK_EQ(m.status, KVMUX_STATUS_OK);
        CHECK_EQ(m.id, ++id);
    }
    CHECK_EQ(kvmux_migtab_count(R[0].cl.mig, KVMUX_MIG_OPEN), 16);
    m = create(2900, 2999, 29); /* 30 -> 29: both free, but 16 are open */
    CHECK_EQ(m.status, KVMUX_STATUS_BUSY);
    CHECK_EQ(m.why, KVMUX_MIGR_OPEN_FULL);
    CHECK_EQ(same_tables(), 16);
    free(map);
}

static void test_guard_commit_abort(void) {
    /* Migration 1 (slots 0-99, 1 -> 31) is OPEN: a map moving slot 50 or
     * dropping group 31 is refused; one moving slot 200 is not. */
    kvmux_map *m = base_map(2);
    m->owner[50] = 2;
    kvmux_fsm_result r = setmap(m);
    CHECK_EQ(r.status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(r.extras_len, 16);
    CHECK_EQ(kvmux_load_u32be(r.extras + 8), 1);
    CHECK_EQ(kvmux_load_u16be(r.extras + 12), 0);
    CHECK_EQ(kvmux_load_u16be(r.extras + 14), 99);
    m->owner[50] = 1;
    m->ngroups = 30; /* drops 31..40 */
    CHECK_EQ(setmap(m).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(atomic_load(&R[0].cl.epoch), 1);
    free(m);
    m = base_map(2);
    m->owner[15000] = 2;
    CHECK_EQ(setmap(m).status, KVMUX_STATUS_OK);
    CHECK_EQ(atomic_load(&R[1].cl.epoch), 2);
    free(m);

    /* COMMIT 1: map 3 with slots 0-99 = group 31, in the same entry. */
    uint64_t mgen = same_tables();
    kvmux_migres c = commit(1);
    CHECK_EQ(c.status, KVMUX_STATUS_OK);
    CHECK_EQ(c.epoch, 3);
    CHECK_EQ(same_tables(), mgen + 1);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(atomic_load(&R[i].cl.epoch), 3);
        CHECK_EQ(R[i].cl.map->owner[0], 31);
        CHECK_EQ(R[i].cl.map->owner[99], 31);
        CHECK_EQ(R[i].cl.map->owner[100], 2);
        CHECK_EQ(R[i].cl.map->owner[15000], 2);
    }
    const kvmux_migrec *rec = kvmux_migtab_find(R[0].cl.mig, 1);
    REQUIRE(rec != NULL);
    CHECK_EQ(rec->state, KVMUX_MIG_COMMITTED);
    CHECK_EQ(rec->end_epoch, 3);
    CHECK_EQ(rec->start_epoch, 1);
    CHECK(rec->ended_ms > rec->created_ms);
    /* Resent: OK, nothing changes; ABORT now: VERSION_MISMATCH. */
    c = commit(1);
    CHECK_EQ(c.status, KVMUX_STATUS_OK);
    CHECK_EQ(c.epoch, 3);
    c = abort_(1, "late");
    CHECK_EQ(c.status, KVMUX_STATUS_VERSION_MISMATCH);
    char msg[256];
    kvmux_migrec_message(&R[0].cl, &c, msg, sizeof msg);
    CHECK(strcmp(msg, "migration 1 is committed (epoch 3)") == 0);
    CHECK_EQ(same_tables(), mgen + 1);
    CHECK_EQ(atomic_load(&R[0].cl.epoch), 3);
    /* ABORT 2, then COMMIT 2 refused, ABORT 2 again OK. */
    c = abort_(2, "operator said so");
    CHECK_EQ(c.status, KVMUX_STATUS_OK);
    c = commit(2);
    CHECK_EQ(c.status, KVMUX_STATUS_VERSION_MISMATCH);
    kvmux_migrec_message(&R[0].cl, &c, msg, sizeof msg);
    CHECK(strcmp(msg, "migration 2 was aborted: operator said so") == 0);
    CHECK_EQ(abort_(2, "again").status, KVMUX_STATUS_OK);
    CHECK(strcmp(kvmux_migtab_find(R[0].cl.mig, 2)->reason, "operator said so") == 0);
    CHECK_EQ(abort_(99, "").status, KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(commit(99).status, KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(abort_(3, "bad\x01").why, KVMUX_MIGR_MALFORMED); /* not printable */
    CHECK_EQ(same_tables(), mgen + 2);
    /* Group 1 is free as a source again; 31 as a target. */
    CHECK_EQ(create(5000, 5001, 31).status, KVMUX_STATUS_OK); /* id 17 */
}

static void test_acks_retention(void) {
    /* ACK rules. */
    CHECK_EQ(ack(3, 3).why, KVMUX_MIGR_NOT_ENDED); /* 3 is OPEN */
    CHECK_EQ(ack(1, 5).why, KVMUX_MIGR_NOT_SIDE);
    CHECK_EQ(ack(1000, 1).status, KVMUX_STATUS_NOT_FOUND);
    uint64_t mgen = same_tables();
    CHECK_EQ(ack(1, 1).status, KVMUX_STATUS_OK);
    CHECK_EQ(ack(1, 1).status, KVMUX_STATUS_OK); /* again: no change */
    CHECK_EQ(same_tables(), mgen + 1);
    CHECK_EQ(ack(1, 31).status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_migtab_find(R[0].cl.mig, 1)->acks, 3);
    /* End every OPEN record: 3..17 aborted; 17 records ended. */
    for (uint32_t id = 3; id <= 17; id++) CHECK_EQ(abort_(id, "t").status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_migtab_count(R[0].cl.mig, KVMUX_MIG_OPEN), 0);
    /* Fill up to 64 ended awaiting acks: create + abort one migration at a
     * time (2 -> 31). 16 unacked now (2..17). */
    uint32_t id = 17;
    while (kvmux_migtab_unacked(R[0].cl.mig) < KVMUX_MIG_MAX_UNACKED) {
        kvmux_migres m = create(100, 199, 31);
        REQUIRE(m.status == KVMUX_STATUS_OK);
        id = m.id;
        CHECK_EQ(abort_(id, "fill").status, KVMUX_STATUS_OK);
        /* Ended after record 1: 2..id, i.e. id - 1 of them. */
        CHECK_EQ(kvmux_migtab_find(R[0].cl.mig, 1) != NULL, id - 1 < KVMUX_MIG_KEEP_ENDED);
    }
    kvmux_migres m = create(100, 199, 31);
    CHECK_EQ(m.status, KVMUX_STATUS_BUSY);
    CHECK_EQ(m.why, KVMUX_MIGR_UNACKED_FULL);
    /* Record 1 (both acks) went when its 32nd newer record ended. */
    CHECK(kvmux_migtab_find(R[0].cl.mig, 1) == NULL);
    CHECK_EQ(ack(2, 2).status, KVMUX_STATUS_OK);
    CHECK(kvmux_migtab_find(R[0].cl.mig, 2) != NULL); /* one ack only */
    CHECK_EQ(ack(2, 32).status, KVMUX_STATUS_OK);
    CHECK(kvmux_migtab_find(R[0].cl.mig, 2) == NULL);
    /* Ack everything: the newest 32 ended stay, the rest go. */
    for (uint32_t i = 3; i <= id; i++) {
        const kvmux_migrec *r = kvmux_migtab_find(R[0].cl.mig, i);
        if (!r) continue;
        uint16_t s = r->src, d = r->dst;
        CHECK_EQ(ack(i, s).status, KVMUX_STATUS_OK);
        CHECK_EQ(ack(i, d).status, KVMUX_STATUS_OK);
    }
    CHECK_EQ(R[0].cl.mig->n, KVMUX_MIG_KEEP_ENDED);
    CHECK(kvmux_migtab_find(R[0].cl.mig, id) != NULL);
    CHECK(kvmux_migtab_find(R[0].cl.mig, id - 31) != NULL);
    CHECK(kvmux_migtab_find(R[0].cl.mig, id - 32) == NULL);
    CHECK_EQ(kvmux_migtab_unacked(R[0].cl.mig), 0);
    m = create(100, 199, 31);
    CHECK_EQ(m.status, KVMUX_STATUS_OK);
    CHECK_EQ(m.id, id + 1);
    same_tables();
}

static void *ra(void *p, size_t n) {
    if (n == 0) {
        free(p);
        return NULL;
    }
    return realloc(p, n);
}

static void test_snapshot(void) {
    /* Format 6 round trip: a third state machine restores the table. */
    uint8_t *snap;
    size_t len;
    REQUIRE(kvmux_fsm_snapshot(R[0].st, R[0].clk, NULL, NULL, &R[0].cl, ra, &snap, &len) == 0);
    CHECK_EQ(kvmux_load_u32be(snap + 4), 6);
    kvmux_store *st = new_store();
    kvmux_fsm_cluster cl;
    kvmux_fsm_cluster_init(&cl, 0);
    cl.cas = 1;
    CHECK_EQ(kvmux_fsm_restore(st, &clocks[nclocks - 1], NULL, NULL, &cl, snap, len), 0);
    uint8_t *a, *b;
    size_t la, lb;
    uint64_t ga, gb;
    REQUIRE(kvmux_migrec_table_bytes(&R[0].cl, &a, &la, &ga) == 0);
    REQUIRE(kvmux_migrec_table_bytes(&cl, &b, &lb, &gb) == 0);
    CHECK(la == lb && memcmp(a, b, la) == 0);
    CHECK(la > KVMUX_MIG_HDR_LEN);
    CHECK_EQ(atomic_load(&cl.epoch), atomic_load(&R[0].cl.epoch));
    free(a);
    free(b);
    /* Damage: has_out 1 (not before step 4), a truncated table. */
    snap[len - 2] = 1;
    CHECK_EQ(kvmux_fsm_restore(st, &clocks[nclocks - 1], NULL, NULL, &cl, snap, len), -1);
    snap[len - 2] = 0;
    CHECK_EQ(kvmux_fsm_restore(st, &clocks[nclocks - 1], NULL, NULL, &cl, snap, len - 3), -1);
    /* Format 5: the same bytes without the migration section restore with
     * an empty table. */
    size_t tl = kvmux_migtab_encoded_size(R[0].cl.mig);
    kvmux_store_u32be(snap + 4, 5);
    CHECK_EQ(kvmux_fsm_restore(st, &clocks[nclocks - 1], NULL, NULL, &cl, snap, len - 4 - tl - 2), 0);
    CHECK(cl.mig == NULL);
    CHECK_EQ(atomic_load(&cl.epoch), atomic_load(&R[0].cl.epoch));
    /* A data group (no table): table_len 0. */
    free(snap);
    kvmux_fsm_cluster dg;
    kvmux_fsm_cluster_init(&dg, 1);
    REQUIRE(kvmux_fsm_snapshot(st, &clocks[nclocks - 1], NULL, NULL, &dg, ra, &snap, &len) == 0);
    CHECK_EQ(len >= 6 ? kvmux_load_u32be(snap + len - 6) : 1, 0);
    CHECK_EQ(kvmux_fsm_restore(st, &clocks[nclocks - 1], NULL, NULL, &dg, snap, len), 0);
    free(snap);
    kvmux_fsm_cluster_clear(&dg);
    kvmux_fsm_cluster_clear(&cl);
    kvmux_store_free(st);
}

/* ---- the KVMG codec ---- */

/* A table of one ABORTED record, by hand (docs/PROTOCOL.md 18.6). */
static const char VEC_HEX[] =
    "4b564d47" "01" "0000000000000005" "00000008" "0001"
    "00000007" "0064" "00c7" "0001" "0002" "03" "01"
    "0000000000000009" "0000000000000000" "0000018bcfe56800" "0000018bcfe56bb8"
    "02" "6f70";

static size_t unhex(const char *h, uint8_t *out) {
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        REQUIRE(sscanf(h, "%2x", &v) == 1);
        out[n++] = (uint8_t)v;
    }
    return n;
}

static void test_codec(void) {
    uint8_t v[256], enc[256];
    size_t n = unhex(VEC_HEX, v);
    CHECK_EQ(n, KVMUX_MIG_HDR_LEN + KVMUX_MIG_REC_FIXED + 2);
    /* The same bytes are the value of frames.hex's migrations answer. */
    uint8_t frame[PROTO_TEST_MAX_VEC];
    size_t flen = 0;
    REQUIRE(proto_test_load_vec("resp_cluster_migrations_v3", frame, &flen));
    CHECK(flen == 16 + n && memcmp(frame + 16, v, n) == 0);
    kvmux_migtab *t = malloc(sizeof *t);
    REQUIRE(t != NULL);
    char err[128];
    CHECK_EQ(kvmux_migtab_decode(t, v, n, err, sizeof err), 0);
    CHECK_EQ(t->mgen, 5);
    CHECK_EQ(t->next_id, 8);
    CHECK_EQ(t->n, 1);
    CHECK_EQ(t->rec[0].id, 7);
    CHECK_EQ(t->rec[0].first, 100);
    CHECK_EQ(t->rec[0].last, 199);
    CHECK_EQ(t->rec[0].state, KVMUX_MIG_ABORTED);
    CHECK_EQ(t->rec[0].acks, 1);
    CHECK_EQ(t->rec[0].start_epoch, 9);
    CHECK(strcmp(t->rec[0].reason, "op") == 0);
    CHECK_EQ(kvmux_migtab_encode(t, enc, sizeof enc), n);
    CHECK(memcmp(enc, v, n) == 0);
    CHECK_EQ(kvmux_migtab_encode(t, enc, n - 1), 0);
    /* Each refusal of MIGRATION.md 10.2, from the vector. */
    /* Record offsets: id 19, first 23, last 25, src 27, dst 29, state 31,
     * acks 32, end_epoch 41, reason_len 65, reason 66. */
    struct { size_t off; uint8_t val; const char *why; } bad[] = {
        {0, 'X', "bad magic"}, {4, 2, "unknown format"}, {22, 0, "id 0"},
        {24, 0xC8, "first slot after last"}, {25, 0x40, "slot out of range"},
        {28, 0x02, "source and target are the same group"}, {30, 0x00, "group 0"},
        {31, 4, "bad state"}, {31, 0, "bad state"}, {32, 4, "bad acks"},
        {48, 1, "end epoch on a record not committed"},
        {65, 0xC9, "reason over 200 bytes"}, {66, 0x07, "reason not printable"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t w[256];
        memcpy(w, v, n);
        w[bad[i].off] = bad[i].val;
        err[0] = '\0';
        CHECK_EQ(kvmux_migtab_decode(t, w, n, err, sizeof err), -1);
        if (!strstr(err, bad[i].why)) fprintf(stderr, "case %zu: %s\n", i, err);
    }
    /* Truncation at every length, trailing bytes. */
    for (size_t k = 0; k < n; k++) CHECK_EQ(kvmux_migtab_decode(t, v, k, NULL, 0), -1);
    memcpy(enc, v, n);
    enc[n] = 0;
    CHECK_EQ(kvmux_migtab_decode(t, enc, n + 1, err, sizeof err), -1);
    CHECK(strstr(err, "trailing") != NULL);
    /* Unordered ids: the same record twice. */
    uint8_t two[512];
    memcpy(two, v, n);
    memcpy(two + n, v + KVMUX_MIG_HDR_LEN, n - KVMUX_MIG_HDR_LEN);
    two[18] = 2;
    CHECK_EQ(kvmux_migtab_decode(t, two, 2 * n - KVMUX_MIG_HDR_LEN, err, sizeof err), -1);
    CHECK(strstr(err, "ascending") != NULL);
    two[n + 3] = 8; /* second id 8: fine */
    CHECK_EQ(kvmux_migtab_decode(t, two, 2 * n - KVMUX_MIG_HDR_LEN, err, sizeof err), 0);
    /* Over 112 records. */
    memcpy(enc, v, KVMUX_MIG_HDR_LEN);
    kvmux_store_u16be(enc + 17, KVMUX_MIG_MAX_RECORDS + 1);
    CHECK_EQ(kvmux_migtab_decode(t, enc, KVMUX_MIG_HDR_LEN, err, sizeof err), -1);
    CHECK(strstr(err, "too many") != NULL);
    free(t);
}

/* Bounded fuzz: random mutations of valid encodings never crash the
 * decoder, and whatever it accepts re-encodes to the same bytes
 * (canonical). */
static void test_fuzz(void) {
    kvmux_migtab *t = malloc(sizeof *t);
    REQUIRE(t != NULL);
    uint8_t seed[512], buf[512], out[512];
    size_t n = unhex(VEC_HEX, seed);
    memcpy(seed + n, seed + KVMUX_MIG_HDR_LEN, n - KVMUX_MIG_HDR_LEN);
    seed[18] = 2;
    seed[n + 3] = 9;
    size_t sn = 2 * n - KVMUX_MIG_HDR_LEN;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    long accepted = 0;
    for (int iter = 0; iter < 200000; iter++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t len = sn;
        memcpy(buf, seed, sn);
        int flips = (int)(x % 4) + 1;
        for (int k = 0; k < flips; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[(x >> 8) % sn] = (uint8_t)(x >> 32);
        }
        if (x % 5 == 0) len = (size_t)((x >> 16) % (sn + 1));
        if (kvmux_migtab_decode(t, buf, len, NULL, 0) == 0) {
            accepted++;
            CHECK_EQ(kvmux_migtab_encode(t, out, sizeof out), len);
            if (memcmp(out, buf, len) != 0) CHECK(0);
        }
    }
    CHECK(accepted > 0);
    free(t);
}

/* The source side's cases (outgoing record, dirty set, fence):
 * migrate_fsm_out.c. */
void migrate_fsm_out(void);

int main(void) {
    migrate_fsm_out();
    test_codec();
    test_fuzz();
    setup();
    test_create_rules();
    test_guard_commit_abort();
    test_acks_retention();
    test_snapshot();
    teardown();
    return test_report();
}
