/* A slot migration's target side through a real group (docs/MIGRATION.md
 * section 12 "migrate_import_test"): one 1-member data group (group 2)
 * driven by hand with crafted CLUSTER import-begin / import /
 * import-abort requests, as a source's migrator would send them (no
 * source group exists: group 1 is an address nobody listens on).
 * Checks: leftovers of R purged by the janitor before import-begin
 * answers (READY); the term and bseq refusals; version skips; ABSENT and
 * an expiry already past; B's version counter raised past imported
 * versions; keys outside R refused; the same rules after kill -9 and a
 * restart from a snapshot; IN_ABORT then the imported keys purged; a map
 * giving R to group 2 ends the record and serves the imported keys with
 * A's versions. STATS migrate_* and CLUSTER slotkeys / migration. Then
 * a target over --maxmemory: OUT_OF_MEMORY before proposing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "cluster.h"
#include "cluster_util.h"
#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

#define R_LAST 99      /* R = slots 0-99, group 1's in the map */
#define MIG 7

static uint16_t port;
static uint8_t reply[1 << 16];
static size_t rlen;

/* A CLUSTER request on a raw v3 connection: the wire status; the value
 * (NUL-terminated) in reply[0..rlen). */
static int call(const char *sub, const void *v, size_t n) {
    return cluster_raw_call(port, 3, KVMUX_OP_CLUSTER, sub, v, (uint32_t)n, reply,
                            sizeof reply, &rlen);
}

static int setmap(uint64_t epoch, uint16_t owner_r) {
    char text[256];
    static uint8_t m[4096];
    snprintf(text, sizeof text,
             "epoch %llu\ngroup 1 127.0.0.1:1\ngroup 2 127.0.0.1:%u\nslots 0-16383 2\n%s",
             (unsigned long long)epoch, port, owner_r == 1 ? "slots 0-99 1\n" : "");
    size_t n = cluster_map_bytes(text, m, sizeof m);
    return call("setmap", m, n);
}

static int begin(uint32_t id, uint64_t term) {
    uint8_t v[18];
    kvmux_store_u32be(v, id);
    kvmux_store_u16be(v + 4, 0);
    kvmux_store_u16be(v + 6, R_LAST);
    kvmux_store_u16be(v + 8, 1);
    kvmux_store_u64be(v + 10, term);
    return call("import-begin", v, sizeof v);
}

typedef struct batch {
    uint8_t b[65536];
    size_t n;
    uint16_t nrec;
} batch;

static void bstart(batch *x, uint32_t id, uint64_t term, uint32_t bseq) {
    kvmux_store_u32be(x->b, id);
    kvmux_store_u64be(x->b + 4, term);
    kvmux_store_u32be(x->b + 12, bseq);
    x->n = 18;
    x->nrec = 0;
}
static void brec(batch *x, int kind, const char *k, const char *v, uint64_t ver,
                 uint64_t exp) {
    size_t kl = strlen(k);
    x->b[x->n] = (uint8_t)kind;
    kvmux_store_u16be(x->b + x->n + 1, (uint16_t)kl);
    memcpy(x->b + x->n + 3, k, kl);
    x->n += 3 + kl;
    if (kind == 1) {
        size_t vl = strlen(v);
        kvmux_store_u64be(x->b + x->n, ver);
        kvmux_store_u64be(x->b + x->n + 8, exp);
        kvmux_store_u32be(x->b + x->n + 16, (uint32_t)vl);
        memcpy(x->b + x->n + 20, v, vl);
        x->n += 20 + vl;
    }
    kvmux_store_u16be(x->b + 16, ++x->nrec);
}
static int import(const batch *x) { return call("import", x->b, x->n); }

static uint64_t now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* Keys of group 2's store counted in R (CLUSTER slotkeys 0-99). */
static long r_keys(void) {
    if (call("slotkeys", "0-99", 4) != KVMUX_STATUS_OK) return -1;
    const char *t = strstr((char *)reply, "total ");
    return t ? atol(t + 6) : -1;
}

/* Wait (bounded) until R holds want keys. */
static int wait_r_keys(long want) {
    for (int i = 0; i < 500; i++) {
        if (r_keys() == want) return 0;
        usleep(20000);
    }
    return -1;
}

static kvmux_client *client(void) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    return c;
}

static char kr[8][32]; /* keys of R */

/* The import rules with the record at min_term 5 and last batch bseq0:
 * stale bseq / term refused, another id BUSY, the next batch applied. */
static void rules(uint32_t bseq0, const char *key, uint64_t ver) {
    batch x;
    bstart(&x, MIG, 5, bseq0);
    brec(&x, 1, key, "stale", ver, 0);
    CHECK_EQ(import(&x), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK(strstr((char *)reply, "stale batch") != NULL);
    bstart(&x, MIG, 4, bseq0 + 1);
    brec(&x, 1, key, "zombie", ver, 0);
    CHECK_EQ(import(&x), KVMUX_STATUS_VERSION_MISMATCH);
    bstart(&x, MIG + 1, 5, bseq0 + 1);
    brec(&x, 1, key, "other", ver, 0);
    CHECK_EQ(import(&x), KVMUX_STATUS_BUSY);
    bstart(&x, MIG, 5, bseq0 + 1);
    brec(&x, 1, key, "next", ver, 0);
    CHECK_EQ(import(&x), KVMUX_STATUS_OK);
    CHECK(rlen == 8 && kvmux_load_u32be(reply) == 1 && kvmux_load_u32be(reply + 4) == 0);
}

/* 2500 keys imported in 3 batches, then the migration aborted: the
 * janitor needs several PURGE entries (1024 keys at most each: the
 * state machine refuses a bigger one, so this would never finish) and
 * removes every key. */
static void bulk_abort(void) {
    static batch b;
    static char keys[2500][24];
    int from = 0;
    for (int i = 0; i < 2500; i++) cluster_key_in(0, R_LAST, &from, keys[i], sizeof keys[i]);
    CHECK_EQ(begin(10, 3), KVMUX_STATUS_OK);
    for (int bs = 0; bs < 3; bs++) {
        bstart(&b, 10, 3, (uint32_t)bs + 1);
        for (int i = bs * 1000; i < 2500 && i < (bs + 1) * 1000; i++)
            brec(&b, 1, keys[i], "bulk", 7000 + (uint64_t)i, 0);
        CHECK_EQ(import(&b), KVMUX_STATUS_OK);
    }
    CHECK_EQ(r_keys(), 2500);
    uint8_t idb[4];
    kvmux_store_u32be(idb, 10);
    CHECK_EQ(call("import-abort", idb, 4), KVMUX_STATUS_OK);
    CHECK_EQ(wait_r_keys(0), 0);
}

/* --maxmemory: a full target refuses an import before proposing it
 * (OUT_OF_MEMORY: the migrator retries), never a replica at apply. */
static void full_target(void) {
    static const char *const x[] = {"--cluster-group", "2", "--store-shards", "1",
                                    "--maxmemory", "256K", NULL};
    static rgroup g;
    REQUIRE(rgroup_start(&g, 1, x) == 0);
    REQUIRE(rgroup_leader(&g, 20000) == 0);
    uint16_t saved = port;
    port = g.cport[0];
    CHECK_EQ(setmap(1, 1), KVMUX_STATUS_OK);
    CHECK_EQ(begin(5, 1), KVMUX_STATUS_OK); /* no leftovers: READY in one round */
    kvmux_client *c = client();
    static char val[4096];
    memset(val, 'm', sizeof val);
    int rc = 0, i, from = 0;
    char k[64], tag[32];
    cluster_key_in(R_LAST + 1, KVMUX_SLOTS - 1, &from, tag, sizeof tag); /* group 2's */
    for (i = 0; i < 1000 && rc == 0; i++) {
        snprintf(k, sizeof k, "{%s}fill-%d", tag, i);
        rc = kvmux_set(c, k, strlen(k), val, sizeof val, 0, NULL, 10000);
    }
    CHECK_EQ(rc, KVMUX_EOOM);
    batch b;
    bstart(&b, 5, 1, 1);
    brec(&b, 1, kr[0], "a", 100, 0);
    CHECK_EQ(import(&b), KVMUX_STATUS_OUT_OF_MEMORY);
    CHECK_EQ(rgroup_stat(&g, 0, "migrate_import_batches"), 0);
    CHECK_EQ(r_keys(), 0);
    for (int j = 0; j < i; j++) { /* room again */
        snprintf(k, sizeof k, "{%s}fill-%d", tag, j);
        kvmux_del(c, k, strlen(k), 10000);
    }
    CHECK_EQ(import(&b), KVMUX_STATUS_OK);
    CHECK_EQ(r_keys(), 1);
    kvmux_close(c);
    rgroup_stop(&g);
    port = saved;
}

int main(void) {
    static const char *const x[] = {"--cluster-group", "2", "--snapshot-threshold", "16",
                                    NULL};
    static rgroup g;
    REQUIRE(rgroup_start(&g, 1, x) == 0);
    REQUIRE(rgroup_leader(&g, 20000) == 0);
    port = g.cport[0];
    int from = 0;
    for (int i = 0; i < 8; i++) cluster_key_in(0, R_LAST, &from, kr[i], sizeof kr[i]);

    /* Epoch 1: everything is group 2's; three keys of R written. */
    CHECK_EQ(setmap(1, 2), KVMUX_STATUS_OK);
    kvmux_client *c = client();
    uint64_t ver = 0;
    for (int i = 5; i < 8; i++)
        CHECK_EQ(kvmux_set(c, kr[i], strlen(kr[i]), "old", 3, 0, NULL, 5000), 0);
    CHECK_EQ(r_keys(), 3);
    /* Before any IN_BEGIN: imports are refused (BUSY), nothing applied. */
    batch b;
    bstart(&b, MIG, 5, 1);
    brec(&b, 1, kr[0], "a", 100, 0);
    CHECK_EQ(import(&b), KVMUX_STATUS_BUSY);
    CHECK_EQ(rgroup_stat(&g, 0, "migrate_import_refused"), 1);
    /* Epoch 2 gives R to group 1: the three are leftovers. import-begin
     * answers once the janitor purged them (READY). */
    CHECK_EQ(setmap(2, 1), KVMUX_STATUS_OK);
    CHECK_EQ(begin(MIG, 5), KVMUX_STATUS_OK);
    CHECK(rlen == 12 && kvmux_load_u64be(reply) == 5 && kvmux_load_u32be(reply + 8) == 0);
    CHECK_EQ(r_keys(), 0);
    CHECK_EQ(rgroup_stat(&g, 0, "migrate_purged_keys"), 3);
    CHECK_EQ(rgroup_stat(&g, 0, "migrate_in_id"), MIG);
    char st[32];
    CHECK_EQ(rgroup_stat_str(&g, 0, "migrate_in_state", st, sizeof st), 0);
    CHECK(strcmp(st, "ready") == 0);
    CHECK_EQ(call("migration", NULL, 0), KVMUX_STATUS_OK);
    CHECK(strcmp((char *)reply, "in:7 0-99 from 1 state=ready term=5 bseq=0\n") == 0);
    /* Another migration while 7 is open; bad requests. */
    CHECK_EQ(begin(MIG + 1, 5), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strcmp((char *)reply, "another migration (7) is importing here") == 0);
    CHECK_EQ(call("import-begin", "short", 5), KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(call("import", "short", 5), KVMUX_STATUS_BAD_REQUEST);

    /* Batch 1: PUTs keep A's versions; an expiry already past is ABSENT;
     * ABSENT of an absent key is fine. */
    uint64_t far = now_ms() + 3600000;
    bstart(&b, MIG, 5, 1);
    brec(&b, 1, kr[0], "a", 100, 0);
    brec(&b, 1, kr[1], "b", 900, far);
    brec(&b, 1, kr[2], "expired", 300, 1000);
    brec(&b, 2, kr[3], NULL, 0, 0);
    CHECK_EQ(import(&b), KVMUX_STATUS_OK);
    CHECK(rlen == 8 && kvmux_load_u32be(reply) == 4 && kvmux_load_u32be(reply + 4) == 0);
    CHECK_EQ(r_keys(), 2);
    /* B's counter passed 900: its next write has a higher version. */
    CHECK_EQ(kvmux_set(c, "own-key", 7, "x", 1, 0, &ver, 5000), 0);
    CHECK(ver > 900);
    /* Batch 2: an older version than held is skipped; a key outside R
     * refuses the whole batch. */
    bstart(&b, MIG, 5, 2);
    brec(&b, 1, kr[0], "older", 50, 0);
    brec(&b, 1, kr[4], "c", 2000, 0);
    CHECK_EQ(import(&b), KVMUX_STATUS_OK);
    CHECK(rlen == 8 && kvmux_load_u32be(reply) == 1 && kvmux_load_u32be(reply + 4) == 1);
    bstart(&b, MIG, 5, 3);
    brec(&b, 1, "own-key", "z", 10, 0);
    CHECK_EQ(import(&b), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strstr((char *)reply, "outside 0-99") != NULL);
    rules(2, kr[5], 10); /* applies (5, 3) */
    CHECK_EQ(rgroup_stat(&g, 0, "migrate_import_batches"), 3);
    CHECK_EQ(rgroup_stat(&g, 0, "migrate_import_skipped"), 1);
    /* import-begin again: same term OK at once with last_bseq 3; lower
     * term VERSION_MISMATCH. */
    CHECK_EQ(begin(MIG, 5), KVMUX_STATUS_OK);
    CHECK(rlen == 12 && kvmux_load_u64be(reply) == 5 && kvmux_load_u32be(reply + 8) == 3);
    CHECK_EQ(begin(MIG, 4), KVMUX_STATUS_VERSION_MISMATCH);

    /* Snapshots (--snapshot-threshold 16), kill -9, restart: the record,
     * the counts and the rules are back. */
    char k[32];
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof k, "own-%d", i);
        CHECK_EQ(kvmux_set(c, k, strlen(k), "v", 1, 0, NULL, 5000), 0);
    }
    CHECK(rgroup_stat(&g, 0, "replica_snapshots") >= 1);
    kvmux_close(c);
    rgroup_kill(&g, 0);
    REQUIRE(rgroup_start_member(&g, 0, 0) == 0);
    REQUIRE(rgroup_leader(&g, 20000) == 0);
    CHECK_EQ(r_keys(), 4);
    CHECK_EQ(call("migration", NULL, 0), KVMUX_STATUS_OK);
    CHECK(strcmp((char *)reply, "in:7 0-99 from 1 state=ready term=5 bseq=3\n") == 0);
    rules(3, kr[6], 11); /* applies (5, 4) */
    c = client();
    CHECK_EQ(kvmux_set(c, "own-key", 7, "y", 1, 0, &ver, 5000), 0);
    CHECK(ver > 2000);
    /* A new source leader (term 9): keys kept, term 5 fenced. */
    CHECK_EQ(begin(MIG, 9), KVMUX_STATUS_OK);
    CHECK(rlen == 12 && kvmux_load_u64be(reply) == 9 && kvmux_load_u32be(reply + 8) == 0);
    bstart(&b, MIG, 5, 7);
    brec(&b, 1, kr[7], "zombie", 5, 0);
    CHECK_EQ(import(&b), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK_EQ(r_keys(), 5);

    /* IN_ABORT: the record goes, the janitor purges the imported keys. */
    uint32_t id = MIG + 1;
    uint8_t idb[4];
    kvmux_store_u32be(idb, id);
    CHECK_EQ(call("import-abort", idb, 4), KVMUX_STATUS_NOT_FOUND);
    kvmux_store_u32be(idb, MIG);
    CHECK_EQ(call("import-abort", idb, 4), KVMUX_STATUS_OK);
    CHECK_EQ(wait_r_keys(0), 0);
    CHECK_EQ(call("migration", NULL, 0), KVMUX_STATUS_OK);
    CHECK(strcmp((char *)reply, "none\n") == 0);
    CHECK_EQ(call("import-abort", idb, 4), KVMUX_STATUS_OK); /* a resend */
    CHECK_EQ(import(&b), KVMUX_STATUS_BUSY);

    bulk_abort();

    /* A new migration, committed by a map giving R to group 2: the record
     * ends and the keys are served with A's versions. */
    CHECK_EQ(begin(11, 3), KVMUX_STATUS_OK);
    bstart(&b, 11, 3, 1);
    brec(&b, 1, kr[0], "moved", 5000, 0);
    CHECK_EQ(import(&b), KVMUX_STATUS_OK);
    CHECK_EQ(setmap(3, 2), KVMUX_STATUS_OK);
    CHECK_EQ(call("migration", NULL, 0), KVMUX_STATUS_OK);
    CHECK(strcmp((char *)reply, "none\n") == 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, kr[0], strlen(kr[0]), &v, 5000), 0);
    CHECK(v && v->version == 5000 && v->len == 5 && memcmp(v->data, "moved", 5) == 0);
    kvmux_value_free(v);
    CHECK_EQ(kvmux_set(c, kr[0], strlen(kr[0]), "w", 1, 0, &ver, 5000), 0);
    CHECK(ver > 5000);
    kvmux_close(c);
    printf("migrate_import: purged=%llu imported=%llu skipped=%llu refused=%llu\n",
           (unsigned long long)rgroup_stat(&g, 0, "migrate_purged_keys"),
           (unsigned long long)rgroup_stat(&g, 0, "migrate_import_keys"),
           (unsigned long long)rgroup_stat(&g, 0, "migrate_import_skipped"),
           (unsigned long long)rgroup_stat(&g, 0, "migrate_import_refused"));
    rgroup_stop(&g);
    full_target();
    return test_report();
}
