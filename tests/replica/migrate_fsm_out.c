/* migrate_fsm_test, the source side's part (migrate_fsm_out): slot migration in the replicated
 * state machine (src/replica/migout.c; docs/MIGRATION.md 2, 5, 7, 10.2),
 * on in-process FSMs:
 *  - OUT_BEGIN's preconditions (map, R ours, one record) and resends;
 *  - the dirty set: every write kind for R, whatever its result, gets the
 *    current gen; OUT_CUT moves the gen (a resent cut is a no-op);
 *    OUT_DRAINED removes gen <= n only; the migrate thread's read gives
 *    the keys with gen <= n (or all) with their current state;
 *  - the caps (keys, key bytes): past them the write is applied and the
 *    overflow flag set;
 *  - the fence: writes for R refused TRY_AGAIN after the session lookup
 *    (no seq consumed; a RETRY duplicate gets its recorded answer),
 *    writes outside R applied;
 *  - the record removed by a map moving R and by OUT_ABORT (not by a map
 *    keeping R nor an abort of another id);
 *  - snapshot format 6 round trip of the record and the set, every
 *    truncation refused, format 5 restoring with no record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "entry.h"
#include "fsm.h"
#include "migout.h"
#include "proto.h"
#include "sessions.h"
#include "store.h"
#include "testutil.h"

#define RETRY KVMUX_SESS_RETRY
#define FIRST 0u
#define LAST 8191u /* R = 0..8191: about half of all keys */

static kvmux_fsm_clock clocks[16];
static int nclocks;
static uint64_t now_ms = 1000;

static kvmux_store *new_store(kvmux_fsm_clock **clk) {
    kvmux_store *s = NULL;
    kvmux_store_options o;
    kvmux_store_options_init(&o);
    o.shards = 4;
    REQUIRE(nclocks < 16);
    *clk = &clocks[nclocks];
    o.clock = kvmux_fsm_clock_read;
    o.clock_user_data = &clocks[nclocks++];
    REQUIRE(kvmux_store_new(&s, &o) == 0);
    return s;
}

/* One replica of group 1: store, clock, sessions, cluster state. */
typedef struct rep {
    kvmux_store *st;
    kvmux_fsm_clock *clk;
    kvmux_sessions ss;
    kvmux_fsm_cluster cl;
} rep;

static void rep_init(rep *r) {
    r->st = new_store(&r->clk);
    kvmux_sessions_init(&r->ss);
    kvmux_fsm_cluster_init(&r->cl, 1);
}

static void rep_free(rep *r) {
    kvmux_fsm_cluster_clear(&r->cl);
    kvmux_sessions_clear(&r->ss);
    kvmux_store_free(r->st);
}

/* Apply n commands as one entry (session limits W 16, 8 sessions); the
 * first result. */
static kvmux_fsm_result apply_n(rep *r, const kvmux_entry_cmd *c, uint32_t n) {
    static uint8_t buf[1 << 22];
    uint64_t t = now_ms++;
    kvmux_entry_hdr h = {.origin = {.replica = 1, .seq = t}, .clock_ms = t,
                         .ncmds = n, .sess_window = 16, .sess_max = 8,
                         .sess_timeout_ms = 3600000};
    kvmux_entry_encode_hdr(buf, &h);
    size_t off = KVMUX_ENTRY_HDR_LEN;
    for (uint32_t i = 0; i < n; i++) {
        REQUIRE(off + kvmux_entry_cmd_size(c[i].extras_len, c[i].key_len, c[i].value_len) + 8 <
                sizeof buf);
        off += kvmux_entry_encode_cmd(buf + off, &c[i]);
    }
    size_t padded = kvmux_entry_padded_len(off);
    memset(buf + off, 0, padded - off);
    kvmux_fsm_result res;
    memset(&res, 0, sizeof res);
    REQUIRE(kvmux_fsm_apply(r->st, r->clk, &r->ss, NULL, &r->cl, buf, padded, &res, 1) ==
            (int)n);
    return res;
}

static kvmux_fsm_result apply1(rep *r, kvmux_entry_cmd c) { return apply_n(r, &c, 1); }

static kvmux_fsm_result migstep(rep *r, uint32_t id, uint8_t step, const uint8_t *v,
                                uint32_t vlen) {
    uint8_t ex[5];
    kvmux_store_u32be(ex, id);
    ex[4] = step;
    return apply1(r, (kvmux_entry_cmd){.op = KVMUX_ENTRY_OP_MIGSTEP, .extras_len = 5,
                                       .extras = ex, .value = v, .value_len = vlen});
}

static kvmux_fsm_result begin(rep *r, uint32_t id, uint16_t first, uint16_t last) {
    uint8_t v[14], w[14];
    kvmux_store_u16be(v, first);
    kvmux_store_u16be(v + 2, last);
    kvmux_store_u16be(v + 4, 2);
    kvmux_store_u64be(v + 6, 1);
    /* The builder the migrate thread uses gives the same bytes. */
    CHECK_EQ(kvmux_migout_begin_value(w, first, last, 2, 1), 14);
    CHECK(memcmp(v, w, 14) == 0);
    return migstep(r, id, KVMUX_MIGSTEP_OUT_BEGIN, v, sizeof v);
}

static kvmux_fsm_result step_n(rep *r, uint32_t id, uint8_t step, uint32_t n) {
    uint8_t v[4];
    CHECK_EQ(kvmux_migout_n_value(v, n), 4);
    return migstep(r, id, step, v, 4);
}

/* Map `epoch`: slots first..last to owner_r, the rest to group 1. */
static kvmux_fsm_result install_map(rep *r, uint64_t epoch, uint16_t owner_r) {
    static uint8_t out[1 << 16];
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
    for (uint32_t s = 0; s < KVMUX_SLOTS; s++) m->owner[s] = s <= LAST ? owner_r : 1;
    size_t n = kvmux_map_encode(m, out, sizeof out);
    REQUIRE(n > 0);
    free(m);
    return apply1(r, (kvmux_entry_cmd){.op = KVMUX_ENTRY_OP_MAP, .value = out,
                                       .value_len = (uint32_t)n});
}

/* The i-th key whose slot is in R (in_r) or outside it. */
static const char *key_of(int in_r, int i, char *buf, size_t cap) {
    for (int j = 0;; j++) {
        snprintf(buf, cap, "key:%d", j);
        uint16_t s = kvmux_slot(buf, strlen(buf));
        if ((s <= LAST) == (in_r != 0) && i-- == 0) return buf;
    }
}

static kvmux_entry_cmd cmd(uint8_t op, const char *key, const uint8_t *ex, uint8_t exl,
                           const char *val) {
    return (kvmux_entry_cmd){.op = op, .extras_len = exl, .extras = ex,
                             .key = (const uint8_t *)key, .key_len = (uint16_t)strlen(key),
                             .value = (const uint8_t *)val,
                             .value_len = val ? (uint32_t)strlen(val) : 0};
}

static const uint8_t ZERO16[16];

static kvmux_fsm_result set(rep *r, const char *key, const char *val, uint64_t sid,
                            uint64_t seq) {
    kvmux_entry_cmd c = cmd(KVMUX_OP_SET, key, ZERO16, 8, val);
    c.session = sid;
    c.seq = seq;
    return apply1(r, c);
}

static kvmux_migout_info info(rep *r) {
    kvmux_migout_info i;
    kvmux_migout_get_info(&r->cl.out, &i);
    return i;
}

/* What kvmux_migout_collect hands out, as "key=gen:present:version:value"
 * lines sorted by nothing (checked by lookup). */
typedef struct seen {
    char lines[64][128];
    int n;
} seen;

static int seen_fn(void *ud, const uint8_t *key, size_t klen, uint32_t gen, int present,
                   const uint8_t *value, size_t vlen, uint64_t version, uint64_t expire_at) {
    seen *s = ud;
    (void)expire_at;
    if (s->n < 64)
        snprintf(s->lines[s->n++], 128, "%.*s=%u:%d:%llu:%.*s", (int)klen, (const char *)key,
                 gen, present, (unsigned long long)version, (int)vlen,
                 value ? (const char *)value : "");
    return 0;
}

static int seen_has(const seen *s, const char *prefix) {
    for (int i = 0; i < s->n; i++)
        if (strncmp(s->lines[i], prefix, strlen(prefix)) == 0) return 1;
    return 0;
}

static void test_begin(void) {
    rep a;
    rep_init(&a);
    CHECK_EQ(begin(&a, 1, FIRST, LAST).status, KVMUX_STATUS_BAD_REQUEST); /* no map */
    CHECK_EQ(install_map(&a, 1, 2).status, KVMUX_STATUS_OK);
    CHECK_EQ(begin(&a, 1, FIRST, LAST).status, KVMUX_STATUS_BAD_REQUEST); /* R not ours */
    CHECK_EQ(install_map(&a, 2, 1).status, KVMUX_STATUS_OK);
    CHECK_EQ(begin(&a, 1, 10, 5).status, KVMUX_STATUS_BAD_REQUEST);       /* first > last */
    CHECK_EQ(begin(&a, 1, 0, KVMUX_SLOTS).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(begin(&a, 0, FIRST, LAST).status, KVMUX_STATUS_BAD_REQUEST); /* id 0 */
    CHECK_EQ(migstep(&a, 1, KVMUX_MIGSTEP_OUT_BEGIN, ZERO16, 13).status,
             KVMUX_STATUS_BAD_REQUEST);                                   /* short */
    CHECK_EQ(step_n(&a, 1, KVMUX_MIGSTEP_OUT_CUT, 1).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(info(&a).state, KVMUX_MIGOUT_NONE);
    CHECK_EQ(begin(&a, 7, FIRST, LAST).status, KVMUX_STATUS_OK);
    kvmux_migout_info i = info(&a);
    CHECK(i.state == KVMUX_MIGOUT_COPYING && i.id == 7 && i.gen == 1 && i.first == FIRST &&
          i.last == LAST && i.dst == 2 && i.start_epoch == 1 && i.dirty_keys == 0);
    CHECK_EQ(begin(&a, 7, FIRST, LAST).status, KVMUX_STATUS_OK);   /* resent */
    CHECK_EQ(begin(&a, 8, FIRST, LAST).status, KVMUX_STATUS_BUSY); /* one at a time */
    CHECK_EQ(step_n(&a, 8, KVMUX_MIGSTEP_OUT_CUT, 1).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(migstep(&a, 8, KVMUX_MIGSTEP_OUT_FENCE, NULL, 0).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(migstep(&a, 7, KVMUX_MIGSTEP_OUT_FENCE, ZERO16, 1).status,
             KVMUX_STATUS_BAD_REQUEST); /* FENCE takes no value */
    /* The target's steps are not handled here; a bad extras length either. */
    CHECK_EQ(migstep(&a, 7, 6, NULL, 0).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(migstep(&a, 7, 0, NULL, 0).status, KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(apply1(&a, (kvmux_entry_cmd){.op = KVMUX_ENTRY_OP_MIGSTEP, .extras_len = 4,
                                          .extras = ZERO16}).status,
             KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(info(&a).id, 7);
    rep_free(&a);
}

static void test_dirty_gens(void) {
    rep a;
    rep_init(&a);
    CHECK_EQ(install_map(&a, 1, 1).status, KVMUX_STATUS_OK);
    char k[8][32], out0[32];
    for (int i = 0; i < 8; i++) key_of(1, i, k[i], sizeof k[i]);
    key_of(0, 0, out0, sizeof out0);
    CHECK_EQ(set(&a, k[0], "before", 0, 0).status, KVMUX_STATUS_OK); /* before BEGIN: not tracked */
    CHECK_EQ(begin(&a, 3, FIRST, LAST).status, KVMUX_STATUS_OK);
    CHECK_EQ(info(&a).dirty_keys, 0);
    uint8_t ex[16];
    memset(ex, 0, sizeof ex);
    CHECK_EQ(set(&a, k[1], "v1", 0, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(apply1(&a, cmd(KVMUX_OP_DEL, k[2], NULL, 0, NULL)).status,
             KVMUX_STATUS_NOT_FOUND); /* absent: tracked all the same */
    kvmux_store_u64be(ex, 99);        /* expected version 99: mismatch */
    CHECK_EQ(apply1(&a, cmd(KVMUX_OP_CAS, k[3], ex, 16, "x")).status != KVMUX_STATUS_OK, 1);
    kvmux_store_u64be(ex, 5);
    CHECK_EQ(apply1(&a, cmd(KVMUX_OP_INCR, k[4], ex, 8, NULL)).status, KVMUX_STATUS_OK);
    kvmux_store_u64be(ex, 60000);
    CHECK_EQ(apply1(&a, cmd(KVMUX_OP_EXPIRE, k[5], ex, 8, NULL)).status,
             KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(apply1(&a, cmd(KVMUX_OP_PERSIST, k[6], NULL, 0, NULL)).status,
             KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(set(&a, out0, "outside", 0, 0).status, KVMUX_STATUS_OK); /* not in R */
    kvmux_migout_info i = info(&a);
    CHECK_EQ(i.dirty_keys, 6);
    CHECK_EQ(i.dirty_bytes, strlen(k[1]) + strlen(k[2]) + strlen(k[3]) + strlen(k[4]) +
                                strlen(k[5]) + strlen(k[6]));
    /* Cut 1: new writes get gen 2; a resent cut changes nothing. */
    kvmux_fsm_result r = step_n(&a, 3, KVMUX_MIGSTEP_OUT_CUT, 1);
    CHECK(r.status == KVMUX_STATUS_OK && kvmux_load_u64be(r.extras) == 2);
    r = step_n(&a, 3, KVMUX_MIGSTEP_OUT_CUT, 1);
    CHECK(r.status == KVMUX_STATUS_OK && kvmux_load_u64be(r.extras) == 2);
    CHECK_EQ(info(&a).gen, 2);
    CHECK_EQ(set(&a, k[1], "v2", 0, 0).status, KVMUX_STATUS_OK); /* k1 now gen 2 */
    CHECK_EQ(set(&a, k[7], "v7", 0, 0).status, KVMUX_STATUS_OK); /* new, gen 2 */
    /* The migrate thread's view: gen <= 1, then all, with current state. */
    seen s = {0};
    CHECK_EQ(kvmux_migout_collect(&a.cl.out, a.st, 3, 1, seen_fn, &s), 5);
    char want[96];
    snprintf(want, sizeof want, "%s=1:0:", k[2]); /* DEL'ed absent key: ABSENT */
    CHECK(seen_has(&s, want));
    snprintf(want, sizeof want, "%s=1:1:", k[4]); /* INCR'ed: present */
    CHECK(seen_has(&s, want));
    snprintf(want, sizeof want, "%s=", k[1]);
    CHECK(!seen_has(&s, want)); /* gen 2 now */
    memset(&s, 0, sizeof s);
    CHECK_EQ(kvmux_migout_collect(&a.cl.out, a.st, 3, 0, seen_fn, &s), 7);
    uint64_t ver = 0;
    CHECK_EQ(kvmux_store_exists(a.st, (const uint8_t *)k[1], strlen(k[1]), &ver),
             KVMUX_STATUS_OK);
    snprintf(want, sizeof want, "%s=2:1:%llu:v2", k[1], (unsigned long long)ver);
    CHECK(seen_has(&s, want));
    CHECK_EQ(kvmux_migout_collect(&a.cl.out, a.st, 4, 0, seen_fn, &s), -1); /* other id */
    /* Drained 1: gen 1 keys go, k1 and k7 (gen 2) stay. */
    r = step_n(&a, 3, KVMUX_MIGSTEP_OUT_DRAINED, 1);
    CHECK(r.status == KVMUX_STATUS_OK && kvmux_load_u64be(r.extras) == 2);
    CHECK_EQ(info(&a).dirty_keys, 2);
    CHECK_EQ(info(&a).dirty_bytes, strlen(k[1]) + strlen(k[7]));
    /* Drained at or past the current gen: refused, nothing removed. */
    CHECK_EQ(step_n(&a, 3, KVMUX_MIGSTEP_OUT_DRAINED, 2).status, KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(info(&a).dirty_keys, 2);
    CHECK_EQ(step_n(&a, 3, KVMUX_MIGSTEP_OUT_CUT, 2).status, KVMUX_STATUS_OK);
    CHECK_EQ(step_n(&a, 3, KVMUX_MIGSTEP_OUT_DRAINED, 2).status, KVMUX_STATUS_OK);
    CHECK_EQ(info(&a).dirty_keys, 0);
    CHECK_EQ(info(&a).dirty_bytes, 0);
    rep_free(&a);
}

/* Caps: KVMUX_MIG_DIRTY_MAX_KEYS keys (DELs of absent keys, so the store
 * stays empty), then KVMUX_MIG_DIRTY_MAX_BYTES of key bytes; past either
 * the write is applied and overflow set. */
static void test_caps(void) {
    rep a;
    rep_init(&a);
    CHECK_EQ(install_map(&a, 1, 1).status, KVMUX_STATUS_OK);
    CHECK_EQ(begin(&a, 1, 0, KVMUX_SLOTS - 1).status, KVMUX_STATUS_OK);
    enum { PER = 4096 };
    static char keys[PER][16];
    static kvmux_entry_cmd c[PER];
    uint32_t done = 0;
    for (uint32_t base = 0; done < KVMUX_MIG_DIRTY_MAX_KEYS; base += PER) {
        uint32_t n = 0;
        for (; n < PER && done < KVMUX_MIG_DIRTY_MAX_KEYS; n++, done++) {
            snprintf(keys[n], sizeof keys[n], "d%u", base + n);
            c[n] = cmd(KVMUX_OP_DEL, keys[n], NULL, 0, NULL);
        }
        apply_n(&a, c, n);
    }
    kvmux_migout_info i = info(&a);
    CHECK_EQ(i.dirty_keys, KVMUX_MIG_DIRTY_MAX_KEYS);
    CHECK_EQ(i.overflow, 0);
    CHECK_EQ(set(&a, "d0", "again", 0, 0).status, KVMUX_STATUS_OK); /* known key: no new room */
    CHECK_EQ(info(&a).overflow, 0);
    CHECK_EQ(set(&a, "one-more", "v", 0, 0).status, KVMUX_STATUS_OK);
    i = info(&a);
    CHECK(i.overflow == 1 && i.dirty_keys == KVMUX_MIG_DIRTY_MAX_KEYS);
    CHECK_EQ(kvmux_store_exists(a.st, (const uint8_t *)"one-more", 8, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(migstep(&a, 1, KVMUX_MIGSTEP_OUT_ABORT, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(info(&a).state, KVMUX_MIGOUT_NONE);
    CHECK_EQ(info(&a).dirty_keys, 0);
    /* Key bytes: 4000-byte keys, 4194 of them fill 16 MiB (16776000). */
    CHECK_EQ(begin(&a, 2, 0, KVMUX_SLOTS - 1).status, KVMUX_STATUS_OK);
    static char big[64][4000];
    uint32_t nbig = 0;
    while (info(&a).overflow == 0 && nbig < 5000) {
        uint32_t n = 0;
        for (; n < 64; n++, nbig++) {
            memset(big[n], 'b', sizeof big[n]);
            snprintf(big[n], 16, "%u:", nbig);
            big[n][strlen(big[n])] = 'b';
            c[n] = (kvmux_entry_cmd){.op = KVMUX_OP_DEL, .key = (const uint8_t *)big[n],
                                     .key_len = sizeof big[n]};
        }
        apply_n(&a, c, n);
    }
    i = info(&a);
    CHECK_EQ(i.overflow, 1);
    CHECK_EQ(i.dirty_keys, KVMUX_MIG_DIRTY_MAX_BYTES / 4000);
    CHECK(i.dirty_bytes <= KVMUX_MIG_DIRTY_MAX_BYTES &&
          i.dirty_bytes + 4000 > KVMUX_MIG_DIRTY_MAX_BYTES);
    rep_free(&a);
}

static void test_fence(void) {
    rep a;
    rep_init(&a);
    CHECK_EQ(install_map(&a, 1, 1).status, KVMUX_STATUS_OK);
    char k[32], k2[32], out0[32];
    key_of(1, 0, k, sizeof k);
    key_of(1, 1, k2, sizeof k2);
    key_of(0, 0, out0, sizeof out0);
    CHECK_EQ(begin(&a, 5, FIRST, LAST).status, KVMUX_STATUS_OK);
    kvmux_fsm_result w1 = set(&a, k, "w1", 77, 1); /* session 77 seq 1 */
    CHECK_EQ(w1.status, KVMUX_STATUS_OK);
    uint64_t fg = atomic_load(&a.cl.out.fence_gen);
    CHECK(!kvmux_migout_fenced(&a.cl.out, kvmux_slot(k, strlen(k))));
    CHECK_EQ(migstep(&a, 5, KVMUX_MIGSTEP_OUT_FENCE, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(migstep(&a, 5, KVMUX_MIGSTEP_OUT_FENCE, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(info(&a).state, KVMUX_MIGOUT_FENCED);
    CHECK_EQ(atomic_load(&a.cl.out.fence_gen), fg + 1);
    CHECK(kvmux_migout_fenced(&a.cl.out, kvmux_slot(k, strlen(k))));
    CHECK(kvmux_migout_fenced(&a.cl.out, LAST) && !kvmux_migout_fenced(&a.cl.out, LAST + 1));
    uint32_t dirty = info(&a).dirty_keys;
    /* Writes for R: TRY_AGAIN, not applied, not tracked. */
    CHECK_EQ(set(&a, k2, "x", 0, 0).status, KVMUX_STATUS_TRY_AGAIN);
    CHECK_EQ(kvmux_store_exists(a.st, (const uint8_t *)k2, strlen(k2), NULL),
             KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(apply1(&a, cmd(KVMUX_OP_DEL, k, NULL, 0, NULL)).status, KVMUX_STATUS_TRY_AGAIN);
    CHECK_EQ(kvmux_store_exists(a.st, (const uint8_t *)k, strlen(k), NULL), KVMUX_STATUS_OK);
    /* A session write: TRY_AGAIN, and its seq not consumed; the RETRY
     * resend of seq 1 (applied before the fence) gets its recorded answer. */
    CHECK_EQ(set(&a, k, "w2", 77, 2).status, KVMUX_STATUS_TRY_AGAIN);
    kvmux_fsm_result d = set(&a, k, "w1", 77, 1 | RETRY);
    CHECK(memcmp(&d, &w1, sizeof d) == 0);
    /* A session the table does not know, resent: OUTCOME_UNKNOWN (it
     * cannot vouch), never TRY_AGAIN. */
    CHECK_EQ(set(&a, k, "z", 78, 3 | RETRY).status, KVMUX_STATUS_OUTCOME_UNKNOWN);
    CHECK_EQ(info(&a).dirty_keys, dirty);
    /* Outside R: served. */
    CHECK_EQ(set(&a, out0, "o", 77, 3).status, KVMUX_STATUS_OK);
    /* Abort (unfence): seq 2, never consumed, now applies. */
    CHECK_EQ(migstep(&a, 6, KVMUX_MIGSTEP_OUT_ABORT, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(info(&a).state, KVMUX_MIGOUT_FENCED); /* another id: kept */
    CHECK_EQ(migstep(&a, 5, KVMUX_MIGSTEP_OUT_ABORT, NULL, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(info(&a).state, KVMUX_MIGOUT_NONE);
    CHECK(!kvmux_migout_fenced(&a.cl.out, kvmux_slot(k, strlen(k))));
    CHECK_EQ(atomic_load(&a.cl.out.fence_gen), fg + 2);
    kvmux_fsm_result w2 = set(&a, k, "w2", 77, 2);
    CHECK(w2.status == KVMUX_STATUS_OK && kvmux_load_u64be(w2.extras) > kvmux_load_u64be(w1.extras));
    CHECK_EQ(migstep(&a, 5, KVMUX_MIGSTEP_OUT_ABORT, NULL, 0).status, KVMUX_STATUS_OK); /* resent */
    rep_free(&a);
}

static void test_map_removes(void) {
    rep a;
    rep_init(&a);
    CHECK_EQ(install_map(&a, 1, 1).status, KVMUX_STATUS_OK);
    char k[32];
    key_of(1, 0, k, sizeof k);
    CHECK_EQ(begin(&a, 9, FIRST, LAST).status, KVMUX_STATUS_OK);
    CHECK_EQ(set(&a, k, "v", 0, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(migstep(&a, 9, KVMUX_MIGSTEP_OUT_FENCE, NULL, 0).status, KVMUX_STATUS_OK);
    /* A newer map that still gives R to us: the record stays. */
    CHECK_EQ(install_map(&a, 2, 1).status, KVMUX_STATUS_OK);
    CHECK_EQ(info(&a).state, KVMUX_MIGOUT_FENCED);
    /* The commit's map (R to group 2): record and set gone, and R's writes
     * are WRONG_SHARD from now on. */
    CHECK_EQ(install_map(&a, 3, 2).status, KVMUX_STATUS_OK);
    kvmux_migout_info i = info(&a);
    CHECK(i.state == KVMUX_MIGOUT_NONE && i.dirty_keys == 0 && i.dirty_bytes == 0);
    CHECK(!kvmux_migout_fenced(&a.cl.out, 0));
    CHECK_EQ(set(&a, k, "v", 0, 0).status, KVMUX_STATUS_WRONG_SHARD);
    rep_free(&a);
}

/* Snapshot of a with a fenced record and a set over two gens; restored
 * into b (which had another record); every truncation refused; format 5
 * (the same bytes without the migration part) restores with no record. */
static void test_snapshot(void) {
    rep a, b;
    rep_init(&a);
    rep_init(&b);
    CHECK_EQ(install_map(&a, 1, 1).status, KVMUX_STATUS_OK);
    CHECK_EQ(install_map(&b, 1, 1).status, KVMUX_STATUS_OK);
    CHECK_EQ(begin(&b, 99, 5, 6).status, KVMUX_STATUS_OK);
    char k[6][32];
    for (int i = 0; i < 6; i++) key_of(1, i, k[i], sizeof k[i]);
    CHECK_EQ(begin(&a, 4, FIRST, LAST).status, KVMUX_STATUS_OK);
    for (int i = 0; i < 3; i++) CHECK_EQ(set(&a, k[i], "g1", 0, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(step_n(&a, 4, KVMUX_MIGSTEP_OUT_CUT, 1).status, KVMUX_STATUS_OK);
    for (int i = 2; i < 6; i++) CHECK_EQ(set(&a, k[i], "g2", 0, 0).status, KVMUX_STATUS_OK);
    CHECK_EQ(migstep(&a, 4, KVMUX_MIGSTEP_OUT_FENCE, NULL, 0).status, KVMUX_STATUS_OK);
    uint8_t *snap = NULL;
    size_t slen = 0;
    REQUIRE(kvmux_fsm_snapshot(a.st, a.clk, &a.ss, NULL, &a.cl, realloc, &snap, &slen) == 0);
    CHECK_EQ(kvmux_load_u32be(snap + 4), 6);
    REQUIRE(kvmux_fsm_restore(b.st, b.clk, &b.ss, NULL, &b.cl, snap, slen) == 0);
    kvmux_migout_info ia = info(&a), ib = info(&b);
    /* Field by field: the struct has padding, which memcmp would read. */
    CHECK_EQ(ia.state, ib.state);
    CHECK_EQ(ia.id, ib.id);
    CHECK(ia.first == ib.first && ia.last == ib.last && ia.dst == ib.dst);
    CHECK_EQ(ia.start_epoch, ib.start_epoch);
    CHECK_EQ(ia.gen, ib.gen);
    CHECK_EQ(ia.overflow, ib.overflow);
    CHECK_EQ(ia.dirty_keys, ib.dirty_keys);
    CHECK_EQ(ia.dirty_bytes, ib.dirty_bytes);
    CHECK(kvmux_migout_fenced(&b.cl.out, FIRST));
    seen sa = {0}, sb = {0};
    CHECK_EQ(kvmux_migout_collect(&b.cl.out, b.st, 4, 1, seen_fn, &sb), 2); /* k0, k1 gen 1 */
    CHECK_EQ(kvmux_migout_collect(&a.cl.out, a.st, 4, 0, seen_fn, &sa), 6);
    memset(&sb, 0, sizeof sb);
    CHECK_EQ(kvmux_migout_collect(&b.cl.out, b.st, 4, 0, seen_fn, &sb), 6);
    for (int i = 0; i < sa.n; i++) CHECK(seen_has(&sb, sa.lines[i]));
    CHECK_EQ(set(&b, k[0], "x", 0, 0).status, KVMUX_STATUS_TRY_AGAIN); /* fenced there too */
    /* Every truncation and a trailing byte are refused. */
    int bad = 0;
    for (size_t len = 0; len < slen; len++)
        bad += kvmux_fsm_restore(b.st, b.clk, &b.ss, NULL, &b.cl, snap, len) == -1;
    CHECK_EQ(bad, (long long)slen);
    uint8_t *longer = malloc(slen + 1);
    REQUIRE(longer != NULL);
    memcpy(longer, snap, slen);
    longer[slen] = 0;
    CHECK_EQ(kvmux_fsm_restore(b.st, b.clk, &b.ss, NULL, &b.cl, longer, slen + 1), -1);
    free(longer);
    /* Abort on a, snapshot (has_out 0): the format 6 tail is
     * table_len 0, has_out 0, has_in 0. Format 5 = the same without
     * those 6 bytes; b (restored with a record) restores it with none. */
    REQUIRE(kvmux_fsm_restore(b.st, b.clk, &b.ss, NULL, &b.cl, snap, slen) == 0);
    free(snap);
    CHECK_EQ(migstep(&a, 4, KVMUX_MIGSTEP_OUT_ABORT, NULL, 0).status, KVMUX_STATUS_OK);
    REQUIRE(kvmux_fsm_snapshot(a.st, a.clk, &a.ss, NULL, &a.cl, realloc, &snap, &slen) == 0);
    REQUIRE(slen > 6);
    CHECK(memcmp(snap + slen - 6, "\0\0\0\0\0\0", 6) == 0);
    kvmux_store_u32be(snap + 4, 5);
    CHECK_EQ(info(&b).state, KVMUX_MIGOUT_FENCED);
    CHECK_EQ(kvmux_fsm_restore(b.st, b.clk, &b.ss, NULL, &b.cl, snap, slen), -1); /* 6 extra bytes */
    REQUIRE(kvmux_fsm_restore(b.st, b.clk, &b.ss, NULL, &b.cl, snap, slen - 6) == 0);
    CHECK_EQ(info(&b).state, KVMUX_MIGOUT_NONE);
    CHECK(!kvmux_migout_fenced(&b.cl.out, FIRST));
    CHECK_EQ(set(&b, k[0], "x", 0, 0).status, KVMUX_STATUS_OK);
    uint64_t e = 0;
    uint32_t owned = 0;
    kvmux_fsm_cluster_info(&b.cl, &e, &owned);
    CHECK_EQ(e, 1); /* the map came back */
    free(snap);
    rep_free(&a);
    rep_free(&b);
}

/* Malformed migration parts: bounded random corruption of a snapshot's
 * tail never crashes or leaks; the decoder refuses bad fields. */
static void test_decode_fuzz(void) {
    rep a, b;
    rep_init(&a);
    rep_init(&b);
    CHECK_EQ(install_map(&a, 1, 1).status, KVMUX_STATUS_OK);
    CHECK_EQ(begin(&a, 4, FIRST, LAST).status, KVMUX_STATUS_OK);
    char k[32];
    for (int i = 0; i < 4; i++) CHECK_EQ(set(&a, key_of(1, i, k, sizeof k), "v", 0, 0).status,
                                         KVMUX_STATUS_OK);
    size_t n = kvmux_migout_encoded_len(&a.cl.out);
    uint8_t *p = malloc(n);
    REQUIRE(p != NULL);
    CHECK_EQ(kvmux_migout_encode(&a.cl.out, p), n);
    CHECK_EQ(kvmux_migout_decode(&b.cl.out, p, n), (long long)n);
    uint32_t seed = 12345;
    for (int it = 0; it < 20000; it++) {
        uint8_t *q = malloc(n);
        REQUIRE(q != NULL);
        memcpy(q, p, n);
        seed = seed * 1103515245u + 12345u;
        q[(seed >> 8) % n] ^= (uint8_t)(1u << ((seed >> 4) & 7));
        long used = kvmux_migout_decode(&b.cl.out, q, n);
        if (used < 0) CHECK_EQ(info(&b).state, KVMUX_MIGOUT_NONE);
        free(q);
    }
    p[19] = 9; /* state outside 1..2 */
    CHECK_EQ(kvmux_migout_decode(&b.cl.out, p, n), -1);
    free(p);
    rep_free(&a);
    rep_free(&b);
}

void migrate_fsm_out(void);
/* Every case of the source side; called by migrate_fsm_test's main. */
void migrate_fsm_out(void) {
    test_begin();
    test_dirty_gens();
    test_caps();
    test_fence();
    test_map_removes();
    test_snapshot();
    test_decode_fuzz();
}
