/* replica_stage_test: big values staged in the replicated state machine
 * (src/replica/stage.c, docs/REPLICATION.md "Big values"), unit level:
 *  - the table: chunks appended in order assemble the value; a gap, a
 *    length past the total, a wrong total, an incomplete take are refused
 *    and drop the value; the bounds (values at once) hold; idle values
 *    expire on the replicated clock; encode/decode round-trips, and every
 *    truncation or corruption of an encoding is refused without a leak;
 *  - the FSM: STAGE entries then SET_STAGED / CAS_STAGED give the same
 *    store (digest, value, version) on replicas that applied everything,
 *    and on one restored from a snapshot taken between two chunks; a
 *    SET_STAGED of an incomplete value is INTERNAL and changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "fsm.h"
#include "proto.h"
#include "stage.h"
#include "store.h"
#include "testutil.h"

static kvmux_fsm_clock clocks[8];
static int nclocks;

static kvmux_store *new_store(kvmux_fsm_clock **clk) {
    kvmux_store *s = NULL;
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 4;
    REQUIRE(nclocks < 8);
    *clk = &clocks[nclocks];
    o.clock = kvmux_fsm_clock_read;
    o.clock_user_data = &clocks[nclocks++];
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    return s;
}

static void id_of(uint8_t *id, int n) {
    memset(id, 0, KVMUX_STAGE_ID_LEN);
    id[15] = (uint8_t)n;
    id[14] = (uint8_t)(n >> 8);
}

static void test_table(void) {
    kvmux_stage_tab t;
    kvmux_stage_init(&t);
    uint8_t id[KVMUX_STAGE_ID_LEN];
    id_of(id, 1);
    uint8_t *pat = test_pattern(3000, 7);
    CHECK_EQ(kvmux_stage_append(&t, id, 0, 3000, pat, 1000, 10), 0);
    CHECK_EQ(kvmux_stage_append(&t, id, 1000, 3000, pat + 1000, 1000, 11), 0);
    CHECK(kvmux_stage_take(&t, id, 3000) == NULL); /* incomplete: dropped */
    CHECK_EQ(t.count, 0);
    CHECK_EQ(kvmux_stage_append(&t, id, 1000, 3000, pat, 10, 12), -1); /* no start */
    CHECK_EQ(kvmux_stage_append(&t, id, 0, 3000, pat, 1000, 10), 0);
    CHECK_EQ(kvmux_stage_append(&t, id, 1500, 3000, pat, 10, 12), -1); /* a gap */
    CHECK_EQ(t.count, 0);
    CHECK_EQ(kvmux_stage_append(&t, id, 0, 3000, pat, 1000, 10), 0);
    CHECK_EQ(kvmux_stage_append(&t, id, 1000, 2999, pat, 10, 12), -1); /* other total */
    CHECK_EQ(kvmux_stage_append(&t, id, 0, 10, pat, 11, 10), -1);      /* past total */
    /* Whole value in three chunks. */
    for (uint32_t off = 0; off < 3000; off += 1000)
        CHECK_EQ(kvmux_stage_append(&t, id, off, 3000, pat + off, 1000, 20), 0);
    CHECK(kvmux_stage_take(&t, id, 2999) == NULL); /* wrong length: dropped */
    for (uint32_t off = 0; off < 3000; off += 1000)
        CHECK_EQ(kvmux_stage_append(&t, id, off, 3000, pat + off, 1000, 20), 0);
    uint8_t *v = kvmux_stage_take(&t, id, 3000);
    CHECK(v && memcmp(v, pat, 3000) == 0);
    free(v);
    CHECK_EQ(t.count, 0);
    CHECK_EQ(t.bytes, 0);
    /* Bounds: at most KVMUX_STAGE_MAX_VALUES at once. */
    for (int i = 0; i < (int)KVMUX_STAGE_MAX_VALUES; i++) {
        id_of(id, 100 + i);
        CHECK_EQ(kvmux_stage_append(&t, id, 0, 100, pat, 50, 1000 + (uint64_t)i), 0);
    }
    id_of(id, 99);
    CHECK_EQ(kvmux_stage_append(&t, id, 0, 100, pat, 50, 5000), -1);
    /* Expiry on the replicated clock: the first half are older. */
    kvmux_stage_expire(&t, 1000 + KVMUX_STAGE_TIMEOUT_MS + 32); /* touched < 1032: i = 0..31 */
    CHECK_EQ(t.count, KVMUX_STAGE_MAX_VALUES - 32);
    /* Encode / decode, then every truncation and some corruption. */
    size_t n = kvmux_stage_encoded_len(&t);
    uint8_t *enc = malloc(n);
    REQUIRE(enc != NULL);
    CHECK_EQ(kvmux_stage_encode(&t, enc), n);
    kvmux_stage_tab u;
    kvmux_stage_init(&u);
    CHECK_EQ(kvmux_stage_decode(&u, enc, n), (long)n);
    CHECK_EQ(u.count, t.count);
    CHECK_EQ(u.bytes, t.bytes);
    id_of(id, 100 + 40);
    CHECK_EQ(kvmux_stage_append(&u, id, 50, 100, pat + 50, 50, 9000), 0);
    v = kvmux_stage_take(&u, id, 100);
    CHECK(v && memcmp(v, pat, 100) == 0);
    free(v);
    for (size_t len = 0; len < n; len += 7) CHECK(kvmux_stage_decode(&u, enc, len) < 0 || len >= n);
    CHECK_EQ(u.count, 0);
    uint32_t x = 99;
    for (int i = 0; i < 2000; i++) {
        uint8_t *m = malloc(n);
        REQUIRE(m != NULL);
        memcpy(m, enc, n);
        x = x * 1103515245u + 12345u;
        m[(x >> 8) % n] ^= (uint8_t)(1u << (x % 8));
        (void)kvmux_stage_decode(&u, m, n); /* any result, never a crash */
        free(m);
    }
    kvmux_stage_clear(&u);
    free(enc);
    kvmux_stage_clear(&t);
    free(pat);
}

static size_t entry(uint8_t *buf, uint64_t seq, const kvmux_entry_cmd *c) {
    kvmux_entry_hdr h = {.origin = {.replica = 1, .seq = seq}, .clock_ms = 1000 * seq,
                         .ncmds = 1};
    kvmux_entry_encode_hdr(buf, &h);
    size_t off = KVMUX_ENTRY_HDR_LEN + kvmux_entry_encode_cmd(buf + KVMUX_ENTRY_HDR_LEN, c);
    size_t padded = kvmux_entry_padded_len(off);
    memset(buf + off, 0, padded - off);
    return padded;
}

static size_t chunk_entry(uint8_t *buf, uint64_t seq, const uint8_t *id, uint32_t off,
                          uint32_t total, const uint8_t *p, uint32_t n) {
    uint8_t ex[8];
    kvmux_store_u32be(ex, off);
    kvmux_store_u32be(ex + 4, total);
    kvmux_entry_cmd c = {.op = KVMUX_ENTRY_OP_STAGE, .extras_len = 8,
                         .key_len = KVMUX_STAGE_ID_LEN, .value_len = n, .extras = ex,
                         .key = id, .value = p};
    return entry(buf, seq, &c);
}

static size_t staged_entry(uint8_t *buf, uint64_t seq, uint8_t op, const char *key,
                           const uint8_t *ex, uint8_t exl, const uint8_t *id, uint32_t total) {
    uint8_t ref[KVMUX_STAGE_ID_LEN + 4];
    memcpy(ref, id, KVMUX_STAGE_ID_LEN);
    kvmux_store_u32be(ref + 16, total);
    kvmux_entry_cmd c = {.op = op, .extras_len = exl, .key_len = (uint16_t)strlen(key),
                         .value_len = sizeof ref, .extras = ex, .key = (const uint8_t *)key,
                         .value = ref};
    return entry(buf, seq, &c);
}

typedef struct got {
    uint64_t version;
    size_t len;
    int same;
    const uint8_t *want;
} got;

static int read_cb(void *ud, uint64_t version, const uint8_t *v, size_t len) {
    got *g = ud;
    g->version = version;
    g->len = len;
    g->same = len && memcmp(v, g->want, len) == 0;
    return 0;
}

static void test_fsm(void) {
    enum { TOTAL = 3 * 4096 + 100, CH = 4096 };
    kvmux_fsm_clock *ca, *cb, *cc;
    kvmux_store *a = new_store(&ca), *b = new_store(&cb), *c = new_store(&cc);
    kvmux_stage_tab ta, tb, tc;
    kvmux_stage_init(&ta), kvmux_stage_init(&tb), kvmux_stage_init(&tc);
    uint8_t *pat = test_pattern(TOTAL, 3);
    uint8_t *buf = malloc(TOTAL + 256);
    REQUIRE(buf != NULL);
    uint8_t id[KVMUX_STAGE_ID_LEN];
    id_of(id, 7);
    kvmux_fsm_result r;
    uint64_t seq = 1;
    /* First two chunks on a and b. */
    for (uint32_t off = 0; off < 2 * CH; off += CH) {
        size_t n = chunk_entry(buf, seq++, id, off, TOTAL, pat + off, CH);
        CHECK_EQ(kvmux_fsm_apply(a, ca, NULL, &ta, NULL, buf, n, &r, 1), 1);
        CHECK_EQ(r.status, KVMUX_STATUS_OK);
        CHECK_EQ(kvmux_fsm_apply(b, cb, NULL, &tb, NULL, buf, n, NULL, 0), 1);
    }
    /* c restores a's snapshot taken between two chunks. */
    uint8_t *snap = NULL;
    size_t slen = 0;
    REQUIRE(kvmux_fsm_snapshot(a, ca, NULL, &ta, NULL, realloc, &snap, &slen) == 0);
    CHECK_EQ(kvmux_fsm_restore(c, cc, NULL, &tc, NULL, snap, slen), 0);
    CHECK_EQ(tc.count, 1);
    for (size_t len = 0; len < slen; len += 97) CHECK_EQ(kvmux_fsm_restore(c, cc, NULL, &tc, NULL, snap, len), -1);
    CHECK_EQ(kvmux_fsm_restore(c, cc, NULL, &tc, NULL, snap, slen), 0);
    free(snap);
    /* A SET of it now: incomplete, INTERNAL, nothing applied anywhere.
     * (The value is dropped by the take: stage it again.) */
    uint8_t ttl[8] = {0};
    size_t n = staged_entry(buf, seq++, KVMUX_ENTRY_OP_SET_STAGED, "big", ttl, 8, id, TOTAL);
    kvmux_store *all[3] = {a, b, c};
    kvmux_fsm_clock *clks[3] = {ca, cb, cc};
    kvmux_stage_tab *tabs[3] = {&ta, &tb, &tc};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(kvmux_fsm_apply(all[i], clks[i], NULL, tabs[i], NULL, buf, n, &r, 1), 1);
        CHECK_EQ(r.status, KVMUX_STATUS_INTERNAL);
        CHECK_EQ(tabs[i]->count, 0);
    }
    /* Stage it whole, with a snapshot of a into c half-way again. */
    for (uint32_t off = 0; off < TOTAL; off += CH) {
        uint32_t len = TOTAL - off < CH ? TOTAL - off : CH;
        n = chunk_entry(buf, seq++, id, off, TOTAL, pat + off, len);
        for (int i = 0; i < 3; i++) CHECK_EQ(kvmux_fsm_apply(all[i], clks[i], NULL, tabs[i], NULL, buf, n, NULL, 0), 1);
        if (off == CH) {
            REQUIRE(kvmux_fsm_snapshot(a, ca, NULL, &ta, NULL, realloc, &snap, &slen) == 0);
            CHECK_EQ(kvmux_fsm_restore(c, cc, NULL, &tc, NULL, snap, slen), 0);
            free(snap);
        }
    }
    n = staged_entry(buf, seq++, KVMUX_ENTRY_OP_SET_STAGED, "big", ttl, 8, id, TOTAL);
    uint64_t version = 0;
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(kvmux_fsm_apply(all[i], clks[i], NULL, tabs[i], NULL, buf, n, &r, 1), 1);
        CHECK_EQ(r.status, KVMUX_STATUS_OK);
        CHECK_EQ(tabs[i]->count, 0);
        got g = {.want = pat};
        CHECK_EQ(kvmux_store_get(all[i], (const uint8_t *)"big", 3, read_cb, &g), KVMUX_STATUS_OK);
        CHECK(g.len == TOTAL && g.same);
        if (i == 0) version = g.version;
        CHECK_EQ(g.version, version);
    }
    /* CAS of a staged value against that version. */
    uint8_t cex[16] = {0};
    kvmux_store_u64be(cex, version);
    id_of(id, 8);
    n = chunk_entry(buf, seq++, id, 0, CH + 1, pat, CH);
    for (int i = 0; i < 3; i++) kvmux_fsm_apply(all[i], clks[i], NULL, tabs[i], NULL, buf, n, NULL, 0);
    n = chunk_entry(buf, seq++, id, CH, CH + 1, pat + CH, 1);
    for (int i = 0; i < 3; i++) kvmux_fsm_apply(all[i], clks[i], NULL, tabs[i], NULL, buf, n, NULL, 0);
    n = staged_entry(buf, seq++, KVMUX_ENTRY_OP_CAS_STAGED, "big", cex, 16, id, CH + 1);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(kvmux_fsm_apply(all[i], clks[i], NULL, tabs[i], NULL, buf, n, &r, 1), 1);
        CHECK_EQ(r.status, KVMUX_STATUS_OK);
        got g = {.want = pat};
        kvmux_store_get(all[i], (const uint8_t *)"big", 3, read_cb, &g);
        CHECK(g.len == CH + 1 && g.same);
    }
    CHECK_EQ(kvmux_fsm_digest(a), kvmux_fsm_digest(b));
    CHECK_EQ(kvmux_fsm_digest(a), kvmux_fsm_digest(c));
    /* Without a table (NULL) a STAGE is refused alike. */
    n = chunk_entry(buf, seq++, id, 0, 10, pat, 10);
    CHECK_EQ(kvmux_fsm_apply(a, ca, NULL, NULL, NULL, buf, n, &r, 1), 1);
    CHECK_EQ(r.status, KVMUX_STATUS_INTERNAL);
    for (int i = 0; i < 3; i++) {
        kvmux_stage_clear(tabs[i]);
        kvmux_store_free(all[i]);
    }
    free(buf);
    free(pat);
}

int main(void) {
    test_table();
    test_fsm();
    return test_report();
}
