/* replica_snap_test: background snapshots (src/replica/fsm.c
 * kvmux_fsm_snap_*, src/server/store.c copy-on-write shards). A snapshot
 * begun at one instant and serialized on another thread while entries
 * keep being applied -- overwriting, deleting and adding keys in shards
 * already serialized and in shards not yet, moving the clock past TTLs
 * and reading and actively expiring the keys that then expire -- must be
 * byte for byte the synchronous snapshot of that instant, restore to its
 * digest and version counter, and leave the store free for the next one. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "fsm.h"
#include "proto.h"
#include "sessions.h"
#include "store.h"
#include "testutil.h"

static kvmux_fsm_clock clocks[4];
static int nclocks;

static kvmux_store *new_store(kvmux_fsm_clock **clk) {
    kvmux_store *s = NULL;
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 16;
    REQUIRE(nclocks < 4);
    *clk = &clocks[nclocks++];
    o.clock = kvmux_fsm_clock_read;
    o.clock_user_data = *clk;
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    return s;
}

static uint64_t entry_seq;

/* Apply one entry of one command at clock ms (ttl: SET's TTL, ms). */
static void apply1(kvmux_store *st, kvmux_fsm_clock *clk, kvmux_sessions *ss, uint64_t ms,
                   uint8_t op, const char *key, uint64_t ttl, const char *val) {
    uint8_t buf[512], ex[8];
    kvmux_store_u64be(ex, ttl);
    kvmux_entry_hdr h = {.origin = {.replica = 1, .seq = ++entry_seq}, .clock_ms = ms,
                         .ncmds = 1};
    kvmux_entry_cmd c = {.op = op, .extras_len = op == KVMUX_OP_SET ? 8 : 0,
                         .key_len = (uint16_t)strlen(key),
                         .value_len = val ? (uint32_t)strlen(val) : 0, .extras = ex,
                         .key = (const uint8_t *)key, .value = (const uint8_t *)val};
    kvmux_entry_encode_hdr(buf, &h);
    size_t off = KVMUX_ENTRY_HDR_LEN;
    off += kvmux_entry_encode_cmd(buf + off, &c);
    size_t padded = kvmux_entry_padded_len(off);
    memset(buf + off, 0, padded - off);
    REQUIRE(kvmux_fsm_apply(st, clk, ss, NULL, NULL, buf, padded, NULL, 0) == 1);
}

static void *run_thread(void *arg) {
    *(int *)((void **)arg)[1] = kvmux_fsm_snap_run(((void **)arg)[0]);
    return NULL;
}

/* The snapshot as one buffer (what raft_uv writes: body then tail). */
static uint8_t *joined(kvmux_fsm_snap *sn, size_t *len) {
    uint8_t *body, *tail;
    size_t bl, tl;
    kvmux_fsm_snap_take(sn, &body, &bl, &tail, &tl);
    uint8_t *p = realloc(body, bl + tl);
    REQUIRE(p != NULL);
    memcpy(p + bl, tail, tl);
    free(tail);
    *len = bl + tl;
    return p;
}

/* One round: fill, begin, mutate while another thread runs (mode 0),
 * before it runs (1: every shard copied by a writer) or after (2). */
static void round_trip(int mode, unsigned seed) {
    kvmux_fsm_clock *clk, *clk2;
    kvmux_store *st = new_store(&clk);
    kvmux_sessions ss;
    kvmux_sessions_init(&ss);
    char key[32], val[64];
    uint64_t ms = 1000000;
    int nkeys = (int)(2000 * test_scale()) + 200;
    for (int i = 0; i < nkeys; i++) {
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "v%d-%u", i, seed);
        /* Every 5th key expires 50 ms after the instant, every 7th
         * already did (skipped by the snapshot). */
        uint64_t ttl = i % 5 == 0 ? 50 + (uint64_t)(nkeys - i) : i % 7 == 0 ? 1 : 0;
        apply1(st, clk, &ss, ms, KVMUX_OP_SET, key, ttl, val);
        if (i == nkeys / 2) ms += 10; /* the 1 ms TTLs so far pass */
    }
    apply1(st, clk, &ss, ms, KVMUX_OP_SET, "instant", 0, "x");
    /* The instant: what a synchronous snapshot gives, and its digest. */
    uint8_t *want;
    size_t wlen;
    REQUIRE(kvmux_fsm_snapshot(st, clk, &ss, NULL, NULL, realloc, &want, &wlen) == 0);
    uint64_t digest = kvmux_fsm_digest(st), last = kvmux_store_last_version(st);
    kvmux_fsm_snap *sn;
    REQUIRE(kvmux_fsm_snap_begin(st, clk, &ss, NULL, NULL, realloc, &sn) == 0);
    pthread_t th;
    int rc = -2;
    void *args[2] = {sn, &rc};
    if (mode == 0) REQUIRE(pthread_create(&th, NULL, run_thread, args) == 0);
    /* Writes after the instant, all over the shards: overwrite, delete,
     * add, expire (the clock passes the 50 ms TTLs; reads and an active
     * cycle remove them). */
    unsigned x = seed;
    for (int i = 0; i < nkeys; i++) {
        x = x * 1103515245u + 12345u;
        snprintf(key, sizeof key, "k%u", (x >> 8) % (unsigned)nkeys);
        if (i % 3 == 0) apply1(st, clk, &ss, ms, KVMUX_OP_DEL, key, 0, NULL);
        else apply1(st, clk, &ss, ms, KVMUX_OP_SET, key, 0, "after");
        snprintf(key, sizeof key, "new%d", i);
        apply1(st, clk, &ss, ms, KVMUX_OP_SET, key, 0, "added");
        if (i == nkeys / 4) ms += 100000;
        if (i > nkeys / 4 && i % 5 == 0) {
            snprintf(key, sizeof key, "k%d", i);
            (void)kvmux_store_get(st, (const uint8_t *)key, strlen(key), NULL, NULL);
        }
    }
    (void)kvmux_store_expire_cycle(st, 1000, 1000);
    if (mode == 0) REQUIRE(pthread_join(th, NULL) == 0);
    else rc = kvmux_fsm_snap_run(sn);
    CHECK_EQ(rc, 0);
    size_t glen;
    uint8_t *got = joined(sn, &glen);
    kvmux_fsm_snap_free(sn);
    CHECK_EQ(glen, wlen);
    CHECK(glen == wlen && memcmp(got, want, wlen) == 0);
    /* It restores to the instant's state. */
    kvmux_store *c = new_store(&clk2);
    kvmux_sessions ss2;
    kvmux_sessions_init(&ss2);
    CHECK_EQ(kvmux_fsm_restore(c, clk2, &ss2, NULL, NULL, got, glen), 0);
    CHECK(kvmux_fsm_digest(c) == digest);
    CHECK(kvmux_store_last_version(c) == last);
    CHECK(kvmux_fsm_digest(st) != digest); /* the writes did change st */
    /* The store is free for the next snapshot, which sees the writes. */
    uint8_t *again;
    size_t alen;
    REQUIRE(kvmux_fsm_snapshot(st, clk, &ss, NULL, NULL, realloc, &again, &alen) == 0);
    CHECK_EQ(kvmux_fsm_restore(c, clk2, &ss2, NULL, NULL, again, alen), 0);
    CHECK(kvmux_fsm_digest(c) == kvmux_fsm_digest(st));
    free(again);
    free(got);
    free(want);
    kvmux_sessions_clear(&ss);
    kvmux_sessions_clear(&ss2);
    kvmux_store_free(st);
    kvmux_store_free(c);
    nclocks = 0;
}

/* An empty store: a snapshot of no keys (every region empty). */
static void test_empty(void) {
    kvmux_fsm_clock *clk, *clk2;
    kvmux_store *st = new_store(&clk), *c = new_store(&clk2);
    kvmux_fsm_snap *sn;
    REQUIRE(kvmux_fsm_snap_begin(st, clk, NULL, NULL, NULL, realloc, &sn) == 0);
    CHECK_EQ(kvmux_fsm_snap_run(sn), 0);
    size_t len;
    uint8_t *p = joined(sn, &len);
    kvmux_fsm_snap_free(sn);
    CHECK_EQ(kvmux_fsm_restore(c, clk2, NULL, NULL, NULL, p, len), 0);
    CHECK(kvmux_fsm_digest(c) == 0);
    free(p);
    kvmux_store_free(st);
    kvmux_store_free(c);
    nclocks = 0;
}

int main(void) {
    test_empty();
    for (unsigned seed = 1; seed <= 3; seed++)
        for (int mode = 0; mode < 3; mode++) round_trip(mode, seed);
    return test_report();
}
