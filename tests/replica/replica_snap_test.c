/* replica_snap_test: background snapshots (src/replica/fsm.c
 * kvmux_fsm_snap_*, src/server/store.c copy-on-write by key). A snapshot
 * begun at one instant and serialized on another thread while entries
 * keep being applied -- overwriting, deleting and adding keys in shards
 * already serialized and in shards not yet, moving the clock past TTLs
 * and reading and actively expiring the keys that then expire -- must
 * hold the same records (key, value, version, TTL left) as the
 * synchronous snapshot of that instant, in whatever order, with the same
 * header and tail; restore to its digest and version counter; and leave
 * the store free for the next one. */
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

/* A snapshot's records in a canonical order. */
typedef struct rec {
    const uint8_t *p;
    size_t len;
} rec;

static int rec_cmp(const void *a, const void *b) {
    const rec *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return memcmp(x->p, y->p, x->len);
}

/* The records of snapshot p[0..len) sorted into *out (malloc'ed), their
 * number, and where the tail starts; -1 if malformed. */
static long records(const uint8_t *p, size_t len, rec **out, size_t *tail) {
    if (len < 32) return -1;
    uint64_t n = kvmux_load_u64be(p + 16);
    rec *r = calloc(n ? n : 1, sizeof *r);
    REQUIRE(r != NULL);
    size_t off = 32;
    for (uint64_t i = 0; i < n; i++) {
        if (len - off < 22) {
            free(r);
            return -1;
        }
        size_t kl = (size_t)p[off] << 8 | p[off + 1];
        size_t vl = kvmux_load_u32be(p + off + 2);
        r[i].p = p + off;
        r[i].len = 22 + kl + vl;
        off += r[i].len;
    }
    qsort(r, n, sizeof *r, rec_cmp);
    *out = r;
    *tail = off;
    return (long)n;
}

/* got and want: the same header, records and tail. */
static void check_same(const uint8_t *got, size_t glen, const uint8_t *want, size_t wlen) {
    rec *g = NULL, *w = NULL;
    size_t gt = 0, wt = 0;
    long gn = records(got, glen, &g, &gt), wn = records(want, wlen, &w, &wt);
    CHECK(gn >= 0 && gn == wn);
    CHECK(glen == wlen && memcmp(got, want, 32) == 0);
    int same = gn == wn && gn >= 0;
    for (long i = 0; same && i < gn; i++)
        same = g[i].len == w[i].len && memcmp(g[i].p, w[i].p, g[i].len) == 0;
    CHECK(same);
    CHECK(glen - gt == wlen - wt && memcmp(got + gt, want + wt, glen - gt) == 0);
    free(g);
    free(w);
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
 * before it runs (1: every changed key kept by the writer) or after (2:
 * nothing to keep). */
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
    check_same(got, glen, want, wlen);
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
