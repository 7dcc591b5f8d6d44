/* replica_entry_test: the replicated log entry codec byte for byte
 * (src/replica/entry.c; the vector is the one in docs/REPLICATION.md),
 * decoding that never reads out of bounds (every prefix, random bytes,
 * random mutations), --peers parsing, and the state machine
 * (src/replica/fsm.c): results, versions, snapshot/restore and digests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "entry.h"
#include "fsm.h"
#include "peers.h"
#include "proto.h"
#include "sessions.h"
#include "store.h"
#include "testutil.h"

/* docs/REPLICATION.md "Log entry format", example 1: replica 1, loop 2,
 * nonce 0x0102030405060708, seq 9, clock 1700000000000 ms, one SET of
 * "k" = "v" with no TTL, padded to 56 bytes. */
static const uint8_t VEC1[] = {
    0x4B, 0x56, 0x52, 0x45, 0x01, 0x01, 0x00, 0x02,             /* magic fmt rid loop */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,             /* nonce */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09,             /* seq */
    0x00, 0x00, 0x01, 0x8B, 0xCF, 0xE5, 0x68, 0x00,             /* clock */
    0x00, 0x00, 0x00, 0x01,                                     /* ncmds */
    0x02, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,             /* SET, 8, 1, 1 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,             /* ttl 0 */
    'k', 'v', 0x00, 0x00};                                      /* key value pad */

/* docs/REPLICATION.md "Log entry format", example 2 (format 2, what the
 * encoder writes): the same SET, session limits W 2048, 4096 sessions,
 * timeout 3600000 ms, as write seq 5 of session 0x1122334455667788,
 * padded to 96 bytes. */
static const uint8_t VEC2[] = {
    0x4B, 0x56, 0x52, 0x45, 0x02, 0x01, 0x00, 0x02,             /* magic fmt rid loop */
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,             /* nonce */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09,             /* seq */
    0x00, 0x00, 0x01, 0x8B, 0xCF, 0xE5, 0x68, 0x00,             /* clock */
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x08, 0x00,             /* ncmds, window */
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00,             /* max sessions, pad */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x36, 0xEE, 0x80,             /* session timeout */
    0x02, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,             /* SET, 8, 1, 1 */
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,             /* session id */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05,             /* session seq */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,             /* ttl 0 */
    'k', 'v', 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};              /* key value pad */

static size_t build(uint8_t *buf, const kvmux_entry_hdr *h, const kvmux_entry_cmd *c,
                    uint32_t n) {
    kvmux_entry_encode_hdr(buf, h);
    size_t off = KVMUX_ENTRY_HDR_LEN;
    for (uint32_t i = 0; i < n; i++) off += kvmux_entry_encode_cmd(buf + off, &c[i]);
    size_t padded = kvmux_entry_padded_len(off);
    memset(buf + off, 0, padded - off);
    return padded;
}

static void test_vector(void) {
    uint8_t buf[128];
    uint8_t ttl[8] = {0};
    kvmux_entry_hdr h = {.origin = {.replica = 1, .loop = 2, .nonce = 0x0102030405060708ull,
                                    .seq = 9},
                         .clock_ms = 1700000000000ull, .ncmds = 1, .sess_window = 2048,
                         .sess_max = 4096, .sess_timeout_ms = 3600000};
    kvmux_entry_cmd c = {.op = KVMUX_OP_SET, .extras_len = 8, .key_len = 1, .value_len = 1,
                         .extras = ttl, .key = (const uint8_t *)"k",
                         .value = (const uint8_t *)"v", .session = 0x1122334455667788ull,
                         .seq = 5};
    size_t n = build(buf, &h, &c, 1);
    CHECK_EQ(n, sizeof VEC2);
    CHECK(memcmp(buf, VEC2, sizeof VEC2) == 0);
    kvmux_entry_hdr d;
    kvmux_entry_iter it;
    kvmux_entry_cmd dc;
    REQUIRE(kvmux_entry_decode_hdr(VEC2, sizeof VEC2, &d, &it) == 0);
    CHECK_EQ(d.format, 2);
    CHECK(d.sess_window == 2048 && d.sess_max == 4096 && d.sess_timeout_ms == 3600000);
    CHECK_EQ(kvmux_entry_next(&it, &dc), 1);
    CHECK(dc.session == 0x1122334455667788ull && dc.seq == 5);
    CHECK(dc.key_len == 1 && dc.key[0] == 'k' && dc.value_len == 1 && dc.value[0] == 'v');
    CHECK_EQ(kvmux_entry_next(&it, &dc), 0);
    /* Session limits beyond kvmuxd's option bounds are a damaged header
     * (a window of 2^31 once made a reply ring grow until the test's
     * timeout, from the fuzz loop below). */
    {
        static const struct { uint32_t window, max; int ok; } lims[] = {
            {KVMUX_ENTRY_SESS_WINDOW_MAX, KVMUX_ENTRY_SESS_MAX, 1},
            {KVMUX_ENTRY_SESS_WINDOW_MAX + 1, 4096, 0},
            {0x80000000u, 4096, 0},
            {1, 4096, 0},
            {0, 0, 1},
            {2048, KVMUX_ENTRY_SESS_MAX + 1, 0},
        };
        uint8_t v[sizeof VEC2];
        for (size_t i = 0; i < sizeof lims / sizeof lims[0]; i++) {
            memcpy(v, VEC2, sizeof v);
            kvmux_store_u32be(v + 36, lims[i].window);
            kvmux_store_u32be(v + 40, lims[i].max);
            CHECK_EQ(kvmux_entry_decode_hdr(v, sizeof v, &d, &it) == 0, lims[i].ok);
        }
    }
    for (size_t len = 0; len < sizeof VEC2 - 6; len++) {
        uint8_t *p = malloc(len ? len : 1);
        memcpy(p, VEC2, len);
        int ok = kvmux_entry_decode_hdr(p, len, &d, &it) == 0;
        int rc = 0;
        while (ok && (rc = kvmux_entry_next(&it, &dc)) == 1) {}
        CHECK(!ok || rc < 0);
        free(p);
    }
    /* Format 1 (a log written before sessions) still decodes: no session,
     * no session limits. */
    REQUIRE(kvmux_entry_decode_hdr(VEC1, sizeof VEC1, &d, &it) == 0);
    CHECK(d.format == 1 && d.sess_window == 0);
    CHECK_EQ(d.origin.replica, 1);
    CHECK_EQ(d.origin.loop, 2);
    CHECK(d.origin.nonce == 0x0102030405060708ull);
    CHECK_EQ(d.origin.seq, 9);
    CHECK(d.clock_ms == 1700000000000ull);
    CHECK_EQ(kvmux_entry_next(&it, &dc), 1);
    CHECK_EQ(dc.op, KVMUX_OP_SET);
    CHECK(dc.session == 0 && dc.seq == 0);
    CHECK(dc.key_len == 1 && dc.key[0] == 'k' && dc.value_len == 1 && dc.value[0] == 'v');
    CHECK_EQ(kvmux_entry_next(&it, &dc), 0);
    /* Every proper prefix is refused (short header or a command past the
     * end), never read past. */
    for (size_t len = 0; len < sizeof VEC1 - 2; len++) {
        uint8_t *p = malloc(len ? len : 1); /* exact size: ASan sees overreads */
        memcpy(p, VEC1, len);
        int ok = kvmux_entry_decode_hdr(p, len, &d, &it) == 0;
        int rc = 0;
        while (ok && (rc = kvmux_entry_next(&it, &dc)) == 1) {}
        CHECK(!ok || rc < 0);
        free(p);
    }
    /* Non-zero padding and 8+ bytes of trailing data are refused. */
    uint8_t bad[sizeof VEC1 + 8];
    memcpy(bad, VEC1, sizeof VEC1);
    bad[sizeof VEC1 - 1] = 1;
    REQUIRE(kvmux_entry_decode_hdr(bad, sizeof VEC1, &d, &it) == 0);
    CHECK_EQ(kvmux_entry_next(&it, &dc), 1);
    CHECK_EQ(kvmux_entry_next(&it, &dc), -1);
    memcpy(bad, VEC1, sizeof VEC1);
    memset(bad + sizeof VEC1, 0, 8);
    REQUIRE(kvmux_entry_decode_hdr(bad, sizeof bad, &d, &it) == 0);
    CHECK_EQ(kvmux_entry_next(&it, &dc), 1);
    CHECK_EQ(kvmux_entry_next(&it, &dc), -1);
    /* A command count the buffer cannot hold is refused up front. */
    memcpy(bad, VEC1, sizeof VEC1);
    bad[35] = 200;
    CHECK_EQ(kvmux_entry_decode_hdr(bad, sizeof VEC1, &d, &it), -1);
    bad[0] = 0;
    CHECK_EQ(kvmux_entry_decode_hdr(bad, sizeof VEC1, &d, &it), -1);
}

/* Each store on its own replicated clock, as kvmuxd sets it up. */
static kvmux_fsm_clock clocks[8];
static int nclocks;

static kvmux_store *new_store(void) {
    kvmux_store *s = NULL;
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 4;
    REQUIRE(nclocks < 8);
    o.clock = kvmux_fsm_clock_read;
    o.clock_user_data = &clocks[nclocks++];
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    return s;
}

static void test_fuzz(void) {
    kvmux_store *st = new_store();
    /* With a session table: mutated format 2 entries (session ids, seqs
     * and limits at random) and snapshots with a session section. */
    kvmux_sessions ss;
    kvmux_sessions_init(&ss);
    uint32_t x = 12345;
    int n = (int)(20000 * test_scale()) + 200;
    for (int i = 0; i < n; i++) {
        uint8_t buf[160];
        size_t len;
        const uint8_t *base = i % 4 < 2 ? VEC1 : VEC2;
        size_t blen = i % 4 < 2 ? sizeof VEC1 : sizeof VEC2;
        if (i % 2) {
            memcpy(buf, base, blen);
            len = blen;
            for (int k = 0; k < 3; k++) {
                x = x * 1103515245u + 12345u;
                buf[(x >> 8) % len] = (uint8_t)(x >> 20);
            }
        } else {
            x = x * 1103515245u + 12345u;
            len = (x >> 8) % sizeof buf;
            size_t keep = base == VEC1 ? 40 : 80;
            memcpy(buf, base, len < keep ? len : keep);
            for (size_t k = keep; k < len; k++) {
                x = x * 1103515245u + 12345u;
                buf[k] = (uint8_t)(x >> 16);
            }
        }
        uint8_t *p = malloc(len ? len : 1);
        memcpy(p, buf, len);
        kvmux_fsm_result r[8];
        (void)kvmux_fsm_apply(st, &clocks[0], i % 3 ? &ss : NULL, NULL, NULL, p, len, r, 8);
        (void)kvmux_fsm_restore(st, &clocks[0], i % 3 ? &ss : NULL, NULL, NULL, p, len);
        free(p);
        if (i % 64 == 0) {
            /* A real snapshot with its session table, mutated. */
            uint8_t *snap = NULL;
            size_t slen = 0;
            if (kvmux_fsm_snapshot(st, &clocks[0], &ss, NULL, NULL, realloc, &snap, &slen) == 0) {
                x = x * 1103515245u + 12345u;
                snap[(x >> 8) % slen] ^= (uint8_t)(x >> 20) | 1;
                (void)kvmux_fsm_restore(st, &clocks[0], &ss, NULL, NULL, snap, slen);
                free(snap);
            }
        }
    }
    kvmux_sessions_clear(&ss);
    kvmux_store_free(st);
    CHECK(1);
}

static void test_peers(void) {
    kvmux_peers ps;
    char err[256];
    CHECK_EQ(kvmux_peers_parse("1=127.0.0.1:7001/127.0.0.1:7878,2=h:1/h:2,3=[::1]:9/[::1]:10",
                               &ps, err, sizeof err), 0);
    CHECK_EQ(ps.n, 3);
    CHECK(strcmp(kvmux_peers_find(&ps, 1)->client_addr, "127.0.0.1:7878") == 0);
    CHECK(strcmp(kvmux_peers_find(&ps, 3)->raft_addr, "[::1]:9") == 0);
    CHECK(kvmux_peers_find(&ps, 4) == NULL);
    const char *bad[] = {"", "1=a:1", "0=a:1/b:2", "256=a:1/b:2", "1=a:1/b:2,1=c:3/d:4",
                         "1=a:0/b:2", "1=a:1/b:99999", "1=:1/b:2", "x=a:1/b:2", "1=a/b:2",
                         "1=a:1/b:2,", NULL};
    for (int i = 0; bad[i]; i++) {
        int rc = kvmux_peers_parse(bad[i], &ps, err, sizeof err);
        CHECK_EQ(rc, -1);
        if (rc != -1) fprintf(stderr, "accepted '%s'\n", bad[i]);
    }
}

static size_t load_vec(const char *name, uint8_t *out, size_t cap);

/* The member table codec (peers.h): round trip, and every truncation or
 * corruption is refused rather than misread. */
static void test_peers_table(void) {
    kvmux_peers ps, back;
    char err[256];
    CHECK_EQ(kvmux_peers_parse("1=127.0.0.1:7001/127.0.0.1:7878,200=[::1]:9/h:10", &ps, err,
                               sizeof err), 0);
    uint8_t buf[KVMUX_PEERS_WIRE_MAX];
    size_t n = kvmux_peers_encode(&ps, buf);
    CHECK_EQ(n % 8, 0);
    CHECK(kvmux_peers_is_table(buf, n));
    size_t used = 0;
    CHECK_EQ(kvmux_peers_decode(buf, n, &back, &used), 0);
    CHECK_EQ(used, n);
    CHECK_EQ(back.n, 2);
    CHECK(strcmp(kvmux_peers_find(&back, 200)->raft_addr, "[::1]:9") == 0);
    CHECK(strcmp(kvmux_peers_find(&back, 1)->client_addr, "127.0.0.1:7878") == 0);
    size_t total = 12 + 3 + 14 + 14 + 3 + 7 + 4; /* unpadded */
    for (size_t k = 0; k < total; k++)
        CHECK_EQ(kvmux_peers_decode(buf, k, &back, &used), -1);
    uint8_t bad[KVMUX_PEERS_WIRE_MAX];
    memcpy(bad, buf, n);
    bad[4] = 2; /* unknown format */
    CHECK_EQ(kvmux_peers_decode(bad, n, &back, &used), -1);
    memcpy(bad, buf, n);
    bad[12] = 0; /* id 0 */
    CHECK_EQ(kvmux_peers_decode(bad, n, &back, &used), -1);
    memcpy(bad, buf, n);
    bad[12 + 3 + 14 + 14] = 1; /* duplicate id */
    CHECK_EQ(kvmux_peers_decode(bad, n, &back, &used), -1);
    kvmux_peer p = ps.p[0];
    snprintf(p.client_addr, sizeof p.client_addr, "10.0.0.1:1");
    CHECK_EQ(kvmux_peers_put(&ps, &p), 0);
    CHECK_EQ(ps.n, 2);
    CHECK(strcmp(kvmux_peers_find(&ps, 1)->client_addr, "10.0.0.1:1") == 0);
}

/* GROUP's vectors (PROTOCOL.md 17.3), byte for byte against the encoder. */
static void test_group_vectors(void) {
    static const struct {
        const char *name;
        uint8_t type, code, exl;
        const char *key, *value;
    } v[] = {
        {"req_group_status_v3", KVMUX_FRAME_REQUEST, KVMUX_OP_GROUP, 0, "status", ""},
        {"req_group_add_v3", KVMUX_FRAME_REQUEST, KVMUX_OP_GROUP, 0, "add",
         "4 127.0.0.1:7004 127.0.0.1:7881"},
        {"resp_group_ok_v3", KVMUX_FRAME_RESPONSE, KVMUX_STATUS_OK, 8, "",
         "replica 4 is a voter"},
        {"resp_group_refused_v3", KVMUX_FRAME_RESPONSE, KVMUX_STATUS_BAD_REQUEST, 0, "",
         "replica 4 is already a member"},
    };
    static const uint8_t leader1[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t want[256], got[256];
        size_t wn = load_vec(v[i].name, want, sizeof want);
        CHECK(wn > 0);
        kvmux_frame f;
        memset(&f, 0, sizeof f);
        f.version = 3;
        f.type = v[i].type;
        f.request_id = 9;
        f.code = v[i].code;
        f.extras = leader1;
        f.extras_len = v[i].exl;
        f.key = (const uint8_t *)v[i].key;
        f.key_len = (uint16_t)strlen(v[i].key);
        f.value = (const uint8_t *)v[i].value;
        f.value_len = (uint32_t)strlen(v[i].value);
        size_t gn = kvmux_frame_encode(got, &f);
        CHECK_EQ(gn, wn);
        CHECK(gn == wn && memcmp(got, want, gn) == 0);
        if (gn != wn || memcmp(got, want, gn) != 0) fprintf(stderr, "vector %s differs\n", v[i].name);
    }
    CHECK(strcmp(kvmux_opcode_name(KVMUX_OP_GROUP), "GROUP") == 0);
    CHECK_EQ(kvmux_request_extras_len(KVMUX_OP_GROUP), 0);
}

static size_t cmd_entry(uint8_t *buf, uint64_t seq, uint8_t op, const char *key,
                        const uint8_t *ex, uint8_t exl, const char *val) {
    /* The leader's clock: 1000 ms per sequence number. */
    kvmux_entry_hdr h = {.origin = {.replica = 1, .seq = seq}, .clock_ms = 1000 * seq,
                         .ncmds = 1};
    kvmux_entry_cmd c = {.op = op, .extras_len = exl, .key_len = (uint16_t)strlen(key),
                         .value_len = val ? (uint32_t)strlen(val) : 0, .extras = ex,
                         .key = (const uint8_t *)key, .value = (const uint8_t *)val};
    return build(buf, &h, &c, 1);
}

static void test_fsm(void) {
    kvmux_fsm_clock *clk_a = &clocks[nclocks], *clk_b = &clocks[nclocks + 1];
    kvmux_store *a = new_store(), *b = new_store();
    uint8_t buf[256], ex[16] = {0};
    kvmux_fsm_result r[1];
    size_t n = cmd_entry(buf, 1, KVMUX_OP_SET, "k", ex, 8, "hello");
    CHECK_EQ(kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r[0].extras), 1);
    CHECK_EQ(kvmux_fsm_apply(b, clk_b, NULL, NULL, NULL, buf, n, NULL, 0), 1);
    kvmux_store_u64be(ex, 5);
    n = cmd_entry(buf, 2, KVMUX_OP_INCR, "ctr", ex, 8, NULL);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, r, 1), 1);
        CHECK_EQ(kvmux_fsm_apply(b, clk_b, NULL, NULL, NULL, buf, n, NULL, 0), 1);
    }
    CHECK_EQ(r[0].extras_len, 16);
    CHECK_EQ(kvmux_load_u64be(r[0].extras), 15);
    CHECK_EQ(kvmux_load_u64be(r[0].extras + 8), 4);
    kvmux_store_u64be(ex, 3);
    kvmux_store_u64be(ex + 8, 0);
    n = cmd_entry(buf, 3, KVMUX_OP_CAS, "k", ex, 16, "x");
    CHECK_EQ(kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(kvmux_load_u64be(r[0].extras), 1);
    kvmux_fsm_apply(b, clk_b, NULL, NULL, NULL, buf, n, NULL, 0);
    n = cmd_entry(buf, 4, KVMUX_OP_DEL, "nope", ex, 0, NULL);
    CHECK_EQ(kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_NOT_FOUND);
    kvmux_fsm_apply(b, clk_b, NULL, NULL, NULL, buf, n, NULL, 0);
    /* Same entries, same state: same digest. */
    CHECK(kvmux_fsm_digest(a) == kvmux_fsm_digest(b));
    CHECK(kvmux_fsm_digest(a) != 0);
    /* Snapshot a, restore into a fresh store and into b (which must
     * lose what a lacks). */
    n = cmd_entry(buf, 5, KVMUX_OP_SET, "only-b", ex, 8, "z");
    kvmux_store_u64be(ex, 0);
    n = cmd_entry(buf, 5, KVMUX_OP_SET, "only-b", ex, 8, "z");
    kvmux_fsm_apply(b, clk_b, NULL, NULL, NULL, buf, n, NULL, 0);
    CHECK(kvmux_fsm_digest(a) != kvmux_fsm_digest(b));
    uint8_t *snap = NULL;
    size_t slen = 0;
    REQUIRE(kvmux_fsm_snapshot(a, clk_a, NULL, NULL, NULL, realloc, &snap, &slen) == 0);
    kvmux_fsm_clock *clk_c = &clocks[nclocks];
    kvmux_store *c = new_store();
    CHECK_EQ(kvmux_fsm_restore(c, clk_c, NULL, NULL, NULL, snap, slen), 0);
    CHECK_EQ(kvmux_fsm_restore(b, clk_b, NULL, NULL, NULL, snap, slen), 0);
    CHECK(kvmux_fsm_clock_read(clk_c) == kvmux_fsm_clock_read(clk_a));
    CHECK(kvmux_fsm_digest(c) == kvmux_fsm_digest(a));
    CHECK(kvmux_fsm_digest(b) == kvmux_fsm_digest(a));
    CHECK(kvmux_store_last_version(c) == kvmux_store_last_version(a));
    /* Versions continue identically after a restore. */
    n = cmd_entry(buf, 6, KVMUX_OP_SET, "k2", ex, 8, "w");
    kvmux_fsm_result ra[1], rc[1];
    kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, ra, 1);
    kvmux_fsm_apply(c, clk_c, NULL, NULL, NULL, buf, n, rc, 1);
    CHECK(memcmp(ra[0].extras, rc[0].extras, 8) == 0);
    /* Truncated snapshots are refused. */
    for (size_t len = 0; len < slen; len += 3) CHECK_EQ(kvmux_fsm_restore(c, clk_c, NULL, NULL, NULL, snap, len), -1);
    free(snap);
    kvmux_store_free(a);
    kvmux_store_free(b);
    kvmux_store_free(c);
}

/* Bytes of vector name from tests/vectors/frames.hex (hex digits after the
 * name; spaces, '|' and '-' are layout). Returns the length, 0 if absent. */
static size_t load_vec(const char *name, uint8_t *out, size_t cap) {
    char path[1024], line[4096];
    snprintf(path, sizeof path, "%s/frames.hex", KVMUX_VECTORS_DIR);
    FILE *fp = fopen(path, "r");
    REQUIRE(fp != NULL);
    size_t nl = strlen(name), n = 0;
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, name, nl) != 0 || line[nl] != ' ') continue;
        int hi = -1;
        for (char *p = line + nl; *p && n < cap; p++) {
            int c = (unsigned char)*p, d;
            if (c >= '0' && c <= '9') d = c - '0';
            else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
            else continue;
            if (hi < 0) hi = d;
            else out[n++] = (uint8_t)(hi << 4 | d), hi = -1;
        }
        break;
    }
    fclose(fp);
    return n;
}

/* Section 17.1: the HELLO with a session id and SESSION requests, both
 * ways (encoder bytes, decoder fields), and the flag's refusals. */
static void test_session_vectors(void) {
    uint8_t want[256], got[256];
    size_t wn = load_vec("hello_v3_session", want, sizeof want);
    kvmux_session s;
    kvmux_settings st;
    kvmux_settings_default(&st);
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, &st);
    s.max_version = KVMUX_PROTO_V3;
    size_t gn = kvmux_session_encode_hello(&s, got, "cli");
    gn = kvmux_hello_append_session(got, gn, 0x1122334455667788ull);
    CHECK_EQ(gn, wn);
    CHECK(gn == wn && memcmp(got, want, gn) == 0);
    kvmux_frame f;
    REQUIRE(kvmux_frame_decode(want, wn, 1 << 20, &f) == (int)wn);
    uint64_t sid = 0;
    CHECK_EQ(kvmux_settings_session_id(f.value, f.value_len, &sid), 1);
    CHECK(sid == 0x1122334455667788ull);
    /* One half, a repeated half, id 0: malformed. */
    uint8_t set[24];
    kvmux_settings_encode_session(set, 0x1122334455667788ull);
    CHECK_EQ(kvmux_settings_session_id(set, 6, &sid), -KVMUX_ERR_PROTOCOL);
    memcpy(set + 12, set, 6);
    CHECK_EQ(kvmux_settings_session_id(set, 18, &sid), -KVMUX_ERR_PROTOCOL);
    kvmux_settings_encode_session(set, 0);
    CHECK_EQ(kvmux_settings_session_id(set, 12, &sid), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(kvmux_settings_session_id(set, 0, &sid), 0);

    uint8_t ex[16];
    kvmux_store_u64be(ex, 1);
    memset(&f, 0, sizeof f);
    f.version = 3;
    f.type = KVMUX_FRAME_REQUEST;
    f.flags = KVMUX_FLAG_SESSION;
    f.code = KVMUX_OP_INCR;
    f.request_id = 7;
    f.session_seq = 5;
    f.extras = ex;
    f.extras_len = 8;
    f.key = (const uint8_t *)"ctr";
    f.key_len = 3;
    wn = load_vec("req_incr_session_v3", want, sizeof want);
    gn = kvmux_frame_encode(got, &f);
    CHECK(gn == wn && memcmp(got, want, gn) == 0);
    kvmux_frame d;
    REQUIRE(kvmux_frame_decode(want, wn, 1 << 20, &d) == (int)wn);
    CHECK(kvmux_frame_has_session(&d) && d.session_seq == 5 && d.extras_len == 8);
    CHECK(kvmux_load_u64be(d.extras) == 1);
    /* The flag is unknown on v2 and v1 (BAD_FLAGS), and a frame too
     * short for its seq is BAD_LENGTH. */
    want[1] = 2;
    CHECK_EQ(kvmux_frame_decode(want, wn, 1 << 20, &d), -KVMUX_ERR_BAD_FLAGS);
    want[1] = 1;
    CHECK_EQ(kvmux_frame_decode(want, wn, 1 << 20, &d), -KVMUX_ERR_BAD_FLAGS);
    want[1] = 3;
    want[9] = 4; /* extras_len 4 < the 8-byte seq */
    CHECK_EQ(kvmux_frame_decode(want, wn, 1 << 20, &d), -KVMUX_ERR_BAD_LENGTH);

    kvmux_store_u64be(ex, 0);
    f.flags = KVMUX_FLAG_SESSION | KVMUX_FLAG_DEADLINE;
    f.deadline_ms = 1000;
    f.code = KVMUX_OP_SET;
    f.key = (const uint8_t *)"k";
    f.key_len = 1;
    f.value = (const uint8_t *)"v";
    f.value_len = 1;
    wn = load_vec("req_set_deadline_session_v3", want, sizeof want);
    gn = kvmux_frame_encode(got, &f);
    CHECK(gn == wn && memcmp(got, want, gn) == 0);
    REQUIRE(kvmux_frame_decode(want, wn, 1 << 20, &d) == (int)wn);
    CHECK(d.deadline_ms == 1000 && d.session_seq == 5 && d.extras_len == 8 &&
          d.value_len == 1);
}

/* The v3 vectors of docs/PROTOCOL.md section 17, as the encoder writes the
 * frames replicate.c sends, and the HELLO a v3 session proposes. */
static void test_v3_vectors(void) {
    static const struct {
        const char *name;
        uint8_t version, status;
        const char *value;
    } v[] = {
        {"resp_not_leader_v3", 3, KVMUX_STATUS_NOT_LEADER, "127.0.0.1:7878"},
        {"resp_not_leader_empty_v3", 3, KVMUX_STATUS_NOT_LEADER, ""},
        {"resp_outcome_unknown_v3", 3, KVMUX_STATUS_OUTCOME_UNKNOWN, "outcome unknown"},
        {"resp_not_leader_v2", 2, KVMUX_STATUS_SHUTTING_DOWN,
         "not the leader; the leader is 127.0.0.1:7878"},
        {"resp_outcome_unknown_v2", 2, KVMUX_STATUS_INTERNAL, "outcome unknown"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t want[256], got[256];
        size_t wn = load_vec(v[i].name, want, sizeof want);
        CHECK(wn > 0);
        kvmux_frame f;
        memset(&f, 0, sizeof f);
        f.version = v[i].version;
        f.type = KVMUX_FRAME_RESPONSE;
        f.request_id = 7;
        f.code = v[i].status;
        f.value = (const uint8_t *)v[i].value;
        f.value_len = (uint32_t)strlen(v[i].value);
        size_t gn = kvmux_frame_encode(got, &f);
        CHECK_EQ(gn, wn);
        CHECK(gn == wn && memcmp(got, want, gn) == 0);
        if (gn != wn || memcmp(got, want, gn) != 0) fprintf(stderr, "vector %s differs\n", v[i].name);
    }
    CHECK(strcmp(kvmux_status_name(KVMUX_STATUS_NOT_LEADER), "NOT_LEADER") == 0);
    CHECK(strcmp(kvmux_status_name(KVMUX_STATUS_OUTCOME_UNKNOWN), "OUTCOME_UNKNOWN") == 0);
    uint8_t want[256], got[256];
    size_t wn = load_vec("hello_v3", want, sizeof want);
    kvmux_session s;
    kvmux_settings st;
    kvmux_settings_default(&st);
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, &st);
    s.max_version = KVMUX_PROTO_V3;
    size_t gn = kvmux_session_encode_hello(&s, got, "cli");
    CHECK_EQ(gn, wn);
    CHECK(gn == wn && memcmp(got, want, gn) == 0);
    test_session_vectors();
}

/* Expiry follows the log's clock, not the replica's: the same entries
 * expire the same keys on two stores whatever their wall clocks do. */
static void test_replicated_clock(void) {
    kvmux_fsm_clock *clk_a = &clocks[nclocks], *clk_b = &clocks[nclocks + 1];
    kvmux_store *a = new_store(), *b = new_store();
    uint8_t buf[256], ex[16] = {0};
    kvmux_fsm_result r[1];
    kvmux_store_u64be(ex, 1500); /* TTL 1.5 s at leader time 10 s: expires at 11.5 s */
    size_t n = cmd_entry(buf, 10, KVMUX_OP_SET, "t", ex, 8, "x");
    kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, r, 1);
    kvmux_fsm_apply(b, clk_b, NULL, NULL, NULL, buf, n, NULL, 0);
    CHECK(kvmux_fsm_clock_read(clk_a) == 10000);
    uint64_t v = 0;
    CHECK_EQ(kvmux_store_exists(a, (const uint8_t *)"t", 1, &v), KVMUX_STATUS_OK);
    /* INCR at leader time 11 s: still there (NOT_INTEGER); at 12 s: gone
     * (the INCR creates it): the same outcome on both stores. */
    kvmux_store_u64be(ex, 1);
    n = cmd_entry(buf, 11, KVMUX_OP_INCR, "t", ex, 8, NULL);
    kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, r, 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_NOT_INTEGER);
    kvmux_fsm_apply(b, clk_b, NULL, NULL, NULL, buf, n, NULL, 0);
    n = cmd_entry(buf, 12, KVMUX_OP_INCR, "t", ex, 8, NULL);
    kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, r, 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r[0].extras), 1);
    kvmux_fsm_apply(b, clk_b, NULL, NULL, NULL, buf, n, NULL, 0);
    CHECK(kvmux_fsm_digest(a) == kvmux_fsm_digest(b));
    /* A leader whose clock is behind does not move time backwards. */
    n = cmd_entry(buf, 5, KVMUX_OP_DEL, "none", ex, 0, NULL);
    kvmux_fsm_apply(a, clk_a, NULL, NULL, NULL, buf, n, r, 1);
    CHECK(kvmux_fsm_clock_read(clk_a) == 12000);
    kvmux_store_free(a);
    kvmux_store_free(b);
}

/* One session write as an entry at leader time t ms, limits W 4, 3
 * sessions, timeout 10 s. */
static size_t sess_entry(uint8_t *buf, uint64_t t, uint64_t sid, uint64_t seq, uint8_t op,
                         const char *key, const uint8_t *ex, uint8_t exl) {
    kvmux_entry_hdr h = {.origin = {.replica = 1, .seq = t}, .clock_ms = t, .ncmds = 1,
                         .sess_window = 4, .sess_max = 3, .sess_timeout_ms = 10000};
    kvmux_entry_cmd c = {.op = op, .extras_len = exl, .key_len = (uint16_t)strlen(key),
                         .extras = ex, .key = (const uint8_t *)key, .session = sid,
                         .seq = seq};
    return build(buf, &h, &c, 1);
}

#define R KVMUX_SESS_RETRY

static kvmux_fsm_result sess_incr(kvmux_store *st, kvmux_fsm_clock *clk, kvmux_sessions *ss,
                                  uint64_t t, uint64_t sid, uint64_t seq) {
    uint8_t buf[256], ex[8];
    kvmux_store_u64be(ex, 1);
    size_t n = sess_entry(buf, t, sid, seq, KVMUX_OP_INCR, "ctr", ex, 8);
    kvmux_fsm_result r;
    memset(&r, 0, sizeof r);
    CHECK_EQ(kvmux_fsm_apply(st, clk, ss, NULL, NULL, buf, n, &r, 1), 1);
    return r;
}

static int64_t ctr(kvmux_store *st) {
    int64_t v = 0;
    uint64_t ver;
    /* INCR by 0 reads the counter (its version moves). */
    CHECK_EQ(kvmux_store_incr(st, (const uint8_t *)"ctr", 3, 0, &v, &ver), KVMUX_STATUS_OK);
    return v;
}

/* Exactly-once sessions (sessions.h): a duplicate gets the original reply
 * and is not applied; the window, expiry and eviction refuse with
 * OUTCOME_UNKNOWN; the table survives snapshot/restore identically. */
static void test_sessions(void) {
    kvmux_fsm_clock *clk = &clocks[nclocks], *clk2 = &clocks[nclocks + 1];
    kvmux_store *a = new_store(), *b = new_store();
    kvmux_sessions sa, sb;
    kvmux_sessions_init(&sa);
    kvmux_sessions_init(&sb);
    kvmux_fsm_result r1 = sess_incr(a, clk, &sa, 1000, 7, 1);
    CHECK_EQ(r1.status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r1.extras), 1);
    kvmux_fsm_result r2 = sess_incr(a, clk, &sa, 1001, 7, 2);
    /* seq 1 again: the original reply (value 1, its version), not applied. */
    kvmux_fsm_result d = sess_incr(a, clk, &sa, 1002, 7, 1);
    CHECK(memcmp(&d, &r1, sizeof d) == 0);
    d = sess_incr(a, clk, &sa, 1003, 7, 2);
    CHECK(memcmp(&d, &r2, sizeof d) == 0);
    CHECK_EQ(ctr(a), 2);
    CHECK_EQ(atomic_load(&sa.duplicates), 2);
    /* Out of order inside the window is fine: 4 before 3. */
    CHECK_EQ(kvmux_load_u64be(sess_incr(a, clk, &sa, 1004, 7, 4).extras), 3);
    CHECK_EQ(kvmux_load_u64be(sess_incr(a, clk, &sa, 1005, 7, 3).extras), 4);
    CHECK_EQ(kvmux_load_u64be(sess_incr(a, clk, &sa, 1006, 7, 6).extras), 5);
    /* W = 4, max seq 6: a resend (RETRY) of seq 2 is below the window
     * (refused, not applied), seq 3 is inside it (a duplicate). */
    CHECK_EQ(sess_incr(a, clk, &sa, 1007, 7, 2 | R).status, KVMUX_STATUS_OUTCOME_UNKNOWN);
    CHECK_EQ(kvmux_load_u64be(sess_incr(a, clk, &sa, 1008, 7, 3 | R).extras), 4);
    CHECK_EQ(ctr(a), 5);
    /* A resend of a session the table does not know: refused. */
    CHECK_EQ(sess_incr(a, clk, &sa, 1009, 8, 5 | R).status, KVMUX_STATUS_OUTCOME_UNKNOWN);
    CHECK_EQ(atomic_load(&sa.n), 1);
    CHECK_EQ(ctr(a), 5);
    /* Snapshot/restore: the copy answers duplicates like the original. */
    uint8_t *snap = NULL;
    size_t slen = 0;
    REQUIRE(kvmux_fsm_snapshot(a, clk, &sa, NULL, NULL, realloc, &snap, &slen) == 0);
    REQUIRE(kvmux_fsm_restore(b, clk2, &sb, NULL, NULL, snap, slen) == 0);
    for (size_t len = 0; len < slen; len += 5) CHECK_EQ(kvmux_fsm_restore(b, clk2, &sb, NULL, NULL, snap, len), -1);
    REQUIRE(kvmux_fsm_restore(b, clk2, &sb, NULL, NULL, snap, slen) == 0);
    free(snap);
    CHECK_EQ(atomic_load(&sb.n), 1);
    d = sess_incr(b, clk2, &sb, 1010, 7, 6 | R);
    CHECK_EQ(kvmux_load_u64be(d.extras), 5);
    CHECK_EQ(ctr(b), 5);
    (void)sess_incr(a, clk, &sa, 1010, 7, 6 | R);
    CHECK_EQ(ctr(a), 5); /* the same version bump as ctr(b)'s */
    CHECK(kvmux_fsm_digest(a) == kvmux_fsm_digest(b));
    /* Eviction: max 3 sessions, the least recently active goes (7). */
    (void)sess_incr(a, clk, &sa, 1011, 20, 1);
    (void)sess_incr(a, clk, &sa, 1012, 21, 1);
    (void)sess_incr(a, clk, &sa, 1013, 7, 7);  /* 7 active again */
    (void)sess_incr(a, clk, &sa, 1014, 22, 1); /* evicts 20 */
    CHECK_EQ(atomic_load(&sa.n), 3);
    CHECK_EQ(atomic_load(&sa.expired), 1);
    /* A resend of evicted 20: refused, not applied. */
    int64_t c0 = ctr(a);
    CHECK_EQ(sess_incr(a, clk, &sa, 1015, 20, 1 | R).status, KVMUX_STATUS_OUTCOME_UNKNOWN);
    CHECK_EQ(ctr(a), c0);
    /* Expiry: 10 s idle on the replicated clock; a resend of 7 is then
     * refused, but a first transmission (a handle idle for an hour that
     * writes again) recreates the session and is applied... */
    CHECK_EQ(sess_incr(a, clk, &sa, 1013 + 10000, 7, 8 | R).status,
             KVMUX_STATUS_OUTCOME_UNKNOWN);
    CHECK_EQ(atomic_load(&sa.n), 1);       /* 21 and 7 expired, 22 not yet */
    CHECK_EQ(atomic_load(&sa.expired), 3); /* with 20's eviction */
    CHECK_EQ(kvmux_load_u64be(sess_incr(a, clk, &sa, 11014, 7, 9).extras), c0 + 1);
    CHECK_EQ(atomic_load(&sa.n), 1);
    /* ...and a resend below the seq that recreated it may predate it:
     * refused; one at or above it is answered from the table. */
    CHECK_EQ(sess_incr(a, clk, &sa, 11015, 7, 8 | R).status, KVMUX_STATUS_OUTCOME_UNKNOWN);
    CHECK_EQ(kvmux_load_u64be(sess_incr(a, clk, &sa, 11016, 7, 9 | R).extras), c0 + 1);
    /* A late first transmission below the window is applied (it never
     * was), and nothing is kept for it. */
    (void)sess_incr(a, clk, &sa, 11017, 7, 20);
    CHECK_EQ(kvmux_load_u64be(sess_incr(a, clk, &sa, 11018, 7, 10).extras), c0 + 3);
    CHECK_EQ(ctr(a), c0 + 3);
    /* Without a table (NULL) session writes are applied plainly. */
    int64_t before = ctr(a);
    (void)sess_incr(a, clk, NULL, 30000, 7, 1);
    (void)sess_incr(a, clk, NULL, 30001, 7, 1);
    CHECK_EQ(ctr(a), before + 2);
    /* A big window: the ring grows, every reply in it stays. */
    kvmux_sessions sc;
    kvmux_sessions_init(&sc);
    uint8_t buf[256], ex[8];
    kvmux_store_u64be(ex, 1);
    for (uint64_t q = 1; q <= 300; q++) {
        kvmux_entry_hdr h = {.clock_ms = 40000, .ncmds = 1, .sess_window = 256,
                             .sess_max = 3, .sess_timeout_ms = 10000};
        kvmux_entry_cmd c = {.op = KVMUX_OP_INCR, .extras_len = 8, .key_len = 1,
                             .extras = ex, .key = (const uint8_t *)"z", .session = 99,
                             .seq = q};
        size_t n = build(buf, &h, &c, 1);
        kvmux_fsm_result r;
        kvmux_fsm_apply(a, clk, &sc, NULL, NULL, buf, n, &r, 1);
        if (q == 300) {
            /* 45..300 are in the window: all duplicates now. */
            for (uint64_t k = 45; k <= 300; k += 17) {
                c.seq = k | R;
                n = build(buf, &h, &c, 1);
                kvmux_fsm_apply(a, clk, &sc, NULL, NULL, buf, n, &r, 1);
                CHECK_EQ(kvmux_load_u64be(r.extras), (int64_t)k);
            }
            c.seq = 44 | R;
            n = build(buf, &h, &c, 1);
            kvmux_fsm_apply(a, clk, &sc, NULL, NULL, buf, n, &r, 1);
            CHECK_EQ(r.status, KVMUX_STATUS_OUTCOME_UNKNOWN);
        }
    }
    kvmux_sessions_clear(&sc);
    kvmux_sessions_clear(&sa);
    kvmux_sessions_clear(&sb);
    kvmux_store_free(a);
    kvmux_store_free(b);
}

/* The slot map in the state machine (docs/CLUSTER.md): MAP entries install
 * only newer maps, a write for a slot the applied map does not give this
 * group is refused (WRONG_SHARD, not applied) in the same entry order as
 * the log, and snapshots carry the map (format 4 restores as "no map"). */
static size_t map_of(uint64_t epoch, uint16_t slot_owner_of_k, uint8_t *out, size_t cap) {
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
    for (uint32_t s = 0; s < KVMUX_SLOTS; s++) m->owner[s] = 1;
    m->owner[kvmux_slot("k", 1)] = slot_owner_of_k;
    size_t n = kvmux_map_encode(m, out, cap);
    REQUIRE(n > 0);
    free(m);
    return n;
}

static void test_fsm_cluster(void) {
    static kvmux_fsm_clock clk, clk2;
    kvmux_store *a = NULL, *b = NULL;
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 4;
    o.clock = kvmux_fsm_clock_read;
    o.clock_user_data = &clk;
    REQUIRE(kvmux_store_new(&a, &o) == 0);
    o.clock_user_data = &clk2;
    REQUIRE(kvmux_store_new(&b, &o) == 0);
    kvmux_fsm_cluster cl, cl2;
    kvmux_fsm_cluster_init(&cl, 1);
    kvmux_fsm_cluster_init(&cl2, 1);
    static uint8_t m1[1024], m2[1024], m1b[1024], buf[4096];
    size_t n1 = map_of(1, 1, m1, sizeof m1), n2 = map_of(2, 2, m2, sizeof m2);
    size_t n1b = map_of(1, 2, m1b, sizeof m1b);
    uint8_t ex[8] = {0};
    kvmux_entry_hdr h = {.origin = {.replica = 1, .seq = 1}, .clock_ms = 1000, .ncmds = 4};
    kvmux_entry_cmd c[4] = {
        {.op = KVMUX_OP_SET, .extras_len = 8, .key_len = 1, .value_len = 1, .extras = ex,
         .key = (const uint8_t *)"k", .value = (const uint8_t *)"0"}, /* no map: no check */
        {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n1, .value = m1},
        {.op = KVMUX_OP_SET, .extras_len = 8, .key_len = 1, .value_len = 1, .extras = ex,
         .key = (const uint8_t *)"k", .value = (const uint8_t *)"1"},
        {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n2, .value = m2}};
    kvmux_fsm_result r[6];
    size_t n = build(buf, &h, c, 4);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, NULL, NULL, &cl, buf, n, r, 4), 4);
    CHECK_EQ(r[0].status, KVMUX_STATUS_OK);
    CHECK_EQ(r[1].status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r[1].extras), 1);
    CHECK_EQ(r[2].status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r[2].extras), 2); /* version 2 */
    CHECK_EQ(r[3].status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r[3].extras + 8), 2);
    /* Epoch 2 gives "k" to group 2: the next SET is refused, nothing
     * applied; older or equal epochs with other bytes: VERSION_MISMATCH;
     * the installed bytes again: OK. */
    kvmux_entry_cmd c2[4] = {c[2], c[1], {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n1b,
                                          .value = m1b}, c[3]};
    h.origin.seq = 2;
    n = build(buf, &h, c2, 4);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, NULL, NULL, &cl, buf, n, r, 4), 4);
    CHECK_EQ(r[0].status, KVMUX_STATUS_WRONG_SHARD);
    CHECK_EQ(r[1].status, KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(kvmux_load_u64be(r[1].extras), 1);
    CHECK_EQ(kvmux_load_u64be(r[1].extras + 8), 2);
    CHECK_EQ(r[2].status, KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(r[3].status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_last_version(a), 2);
    uint64_t epoch;
    uint32_t owned;
    kvmux_fsm_cluster_info(&cl, &epoch, &owned);
    CHECK_EQ(epoch, 2);
    CHECK_EQ(owned, KVMUX_SLOTS - 1);
    kvmux_redirect rd;
    CHECK_EQ(kvmux_fsm_cluster_route(&cl, kvmux_slot("k", 1), &rd), KVMUX_ROUTE_WRONG);
    CHECK(rd.group == 2 && rd.epoch == 2 && strcmp(rd.endpoints, "127.0.0.1:7002") == 0);
    CHECK_EQ(kvmux_fsm_cluster_route(&cl, kvmux_slot("x", 1), NULL), KVMUX_ROUTE_OWN);
    /* A malformed map in the log: BAD_REQUEST on every replica. */
    kvmux_entry_cmd bad = {.op = KVMUX_ENTRY_OP_MAP, .value_len = 4,
                           .value = (const uint8_t *)"KVSM"};
    h.ncmds = 1;
    n = build(buf, &h, &bad, 1);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, NULL, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_BAD_REQUEST);

    /* Snapshot -> restore: the same map bytes; every cut is refused. */
    uint8_t *snap;
    size_t slen;
    REQUIRE(kvmux_fsm_snapshot(a, &clk, NULL, NULL, &cl, realloc, &snap, &slen) == 0);
    for (size_t len = 0; len < slen; len += 7)
        CHECK_EQ(kvmux_fsm_restore(b, &clk2, NULL, NULL, &cl2, snap, len), -1);
    CHECK_EQ(kvmux_fsm_restore(b, &clk2, NULL, NULL, &cl2, snap, slen), 0);
    uint8_t *mb = NULL;
    size_t ml = 0;
    CHECK_EQ(kvmux_fsm_cluster_bytes(&cl2, &mb, &ml), 0);
    CHECK(ml == n2 && mb && memcmp(mb, m2, n2) == 0);
    free(mb);
    /* The same snapshot as format 4 (no map field): restores as no map. */
    kvmux_store_u32be(snap + 4, 4);
    CHECK_EQ(kvmux_fsm_restore(b, &clk2, NULL, NULL, &cl2, snap, slen - 4 - n2), 0);
    CHECK_EQ(kvmux_fsm_cluster_bytes(&cl2, &mb, &ml), 1);
    CHECK_EQ(kvmux_fsm_cluster_route(&cl2, 0, &rd), KVMUX_ROUTE_NO_MAP);
    free(snap);

    /* A session write refused WRONG_SHARD consumes no seq: once a newer
     * map gives the slot back, the same seq is applied (not a duplicate). */
    kvmux_sessions sx;
    kvmux_sessions_init(&sx);
    uint8_t zero[8] = {0};
    n = sess_entry(buf, 5000, 77, 1, KVMUX_OP_INCR, "k", zero, 8);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_WRONG_SHARD);
    static uint8_t m3[1024];
    size_t n3 = map_of(3, 1, m3, sizeof m3);
    kvmux_entry_cmd give = {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n3, .value = m3};
    h.ncmds = 1;
    h.origin.seq = 9;
    n = build(buf, &h, &give, 1);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_OK);
    n = sess_entry(buf, 6000, 77, 1, KVMUX_OP_INCR, "k", zero, 8);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r[0].extras + 8), 3); /* version 3: applied */
    /* Its answer lost, the map then moves the slot away (epoch 4): the
     * resend (RETRY) gets the original answer here, nothing applied again
     * (WRONG_SHARD would send it to the new owner: applied twice). A new
     * seq and a first transmission are WRONG_SHARD and consume nothing; a
     * resend this group cannot vouch for (an unknown session) is
     * OUTCOME_UNKNOWN. */
    static uint8_t m4[1024];
    size_t n4 = map_of(4, 2, m4, sizeof m4);
    kvmux_entry_cmd take = {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n4, .value = m4};
    h.origin.seq = 10;
    n = build(buf, &h, &take, 1);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_OK);
    n = sess_entry(buf, 7000, 77, 1 | R, KVMUX_OP_INCR, "k", zero, 8);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_load_u64be(r[0].extras + 8), 3); /* the original answer */
    CHECK_EQ(kvmux_store_last_version(a), 3);         /* not applied again */
    n = sess_entry(buf, 7100, 77, 2, KVMUX_OP_INCR, "k", zero, 8);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_WRONG_SHARD);
    n = sess_entry(buf, 7200, 77, 2 | R, KVMUX_OP_INCR, "k", zero, 8);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_WRONG_SHARD); /* in the window, no reply kept */
    n = sess_entry(buf, 7300, 78, 5 | R, KVMUX_OP_INCR, "k", zero, 8);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_OUTCOME_UNKNOWN);
    n = sess_entry(buf, 7400, 79, 1, KVMUX_OP_INCR, "k", zero, 8);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, &sx, NULL, &cl, buf, n, r, 1), 1);
    CHECK_EQ(r[0].status, KVMUX_STATUS_WRONG_SHARD);
    CHECK_EQ(kvmux_store_last_version(a), 3);
    kvmux_sessions_clear(&sx);
    kvmux_fsm_cluster_clear(&cl);
    kvmux_fsm_cluster_clear(&cl2);
    kvmux_store_free(a);
    kvmux_store_free(b);
}

static void count_installs(void *ud) { (*(int *)ud)++; }

/* The map group's rule (cl->cas): a map installs only at the installed
 * epoch + 1 (the first one at any epoch); the installed bytes again are
 * OK; the hook runs once per installed map. No key is refused at apply
 * time (group 0). */
static void test_fsm_map_group(void) {
    static kvmux_fsm_clock clk;
    kvmux_store *a = NULL;
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.clock = kvmux_fsm_clock_read;
    o.clock_user_data = &clk;
    REQUIRE(kvmux_store_new(&a, &o) == 0);
    kvmux_fsm_cluster cl;
    kvmux_fsm_cluster_init(&cl, 0);
    cl.cas = 1;
    int installs = 0;
    cl.installed = count_installs;
    cl.installed_ud = &installs;
    static uint8_t m5[1024], m7[1024], m6a[1024], m6b[1024], m4[1024], buf[8192];
    size_t n5 = map_of(5, 1, m5, sizeof m5), n7 = map_of(7, 1, m7, sizeof m7);
    size_t n6a = map_of(6, 1, m6a, sizeof m6a), n6b = map_of(6, 2, m6b, sizeof m6b);
    size_t n4 = map_of(4, 1, m4, sizeof m4);
    uint8_t ex[8] = {0};
    kvmux_entry_cmd c[7] = {
        {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n5, .value = m5},   /* seeds: OK */
        {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n7, .value = m7},   /* a gap */
        {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n6a, .value = m6a}, /* next: OK */
        {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n6b, .value = m6b}, /* lost race */
        {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n6a, .value = m6a}, /* again: OK */
        {.op = KVMUX_ENTRY_OP_MAP, .value_len = (uint32_t)n4, .value = m4},   /* older */
        {.op = KVMUX_OP_SET, .extras_len = 8, .key_len = 1, .value_len = 1, .extras = ex,
         .key = (const uint8_t *)"k", .value = (const uint8_t *)"v"}};
    kvmux_entry_hdr h = {.origin = {.replica = 1, .seq = 1}, .clock_ms = 1000, .ncmds = 7};
    kvmux_fsm_result r[7];
    size_t n = build(buf, &h, c, 7);
    CHECK_EQ(kvmux_fsm_apply(a, &clk, NULL, NULL, &cl, buf, n, r, 7), 7);
    static const uint8_t want[7] = {KVMUX_STATUS_OK, KVMUX_STATUS_VERSION_MISMATCH,
                                    KVMUX_STATUS_OK, KVMUX_STATUS_VERSION_MISMATCH,
                                    KVMUX_STATUS_OK, KVMUX_STATUS_VERSION_MISMATCH,
                                    KVMUX_STATUS_OK};
    for (int i = 0; i < 7; i++) CHECK_EQ(r[i].status, want[i]);
    CHECK_EQ(kvmux_load_u64be(r[1].extras), 7);     /* the map's epoch */
    CHECK_EQ(kvmux_load_u64be(r[1].extras + 8), 5); /* the installed one */
    CHECK_EQ(kvmux_load_u64be(r[3].extras + 8), 6);
    CHECK_EQ(installs, 2);
    CHECK_EQ(atomic_load(&cl.epoch), 6);
    uint8_t *mb = NULL;
    size_t ml = 0;
    CHECK_EQ(kvmux_fsm_cluster_bytes(&cl, &mb, &ml), 0);
    CHECK(ml == n6a && mb && memcmp(mb, m6a, n6a) == 0);
    free(mb);
    kvmux_fsm_cluster_clear(&cl);
    CHECK_EQ(installs, 2); /* clearing tells nobody */
    kvmux_store_free(a);
}

int main(void) {
    test_sessions();
    test_vector();
    test_replicated_clock();
    test_v3_vectors();
    test_group_vectors();
    test_peers();
    test_peers_table();
    test_fsm();
    test_fsm_cluster();
    test_fsm_map_group();
    test_fuzz();
    return test_report();
}
