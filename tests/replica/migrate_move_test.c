/* Slot migration step 5 (docs/MIGRATION.md section 13), the source side
 * "offline": a real map group and three real one-member data groups, the
 * migrate threads of the leaders doing everything after `kvmux-cli
 * cluster migrate` (OUT_BEGIN, import-begin, the bulk pass, the fence,
 * the final delta, migrate-commit, the pushes, the purge, both acks).
 *
 * 2,000 keys with known values (one of them 300 KiB: a batch of its own)
 * in slots 100-299 of group 1 are moved to group 2 and then back. After
 * each move: every key is read from the new owner with its value and its
 * version (versions are preserved); the old owner holds no key of the
 * range (CLUSTER slotkeys, after its janitor's purge) and answers
 * WRONG_SHARD for them; the map group's epoch moved by exactly one; the
 * record is COMMITTED with both acks; the STATS counters moved. During
 * the first move one writer thread overwrites keys at group 1 until it
 * is refused: every write it had acknowledged must arrive (the dirty set
 * and the final delta). A key written at group 2 between the moves comes
 * back with its newer version. Then a move to group 3, which cannot take
 * the keys (over --maxmemory), is aborted: both sides reach their end
 * states and acknowledge (kvmux-cli, waiting for it with --timeout,
 * prints a progress line and exits 5). Then a move outpaced by writes
 * of big values for 8 drain rounds is aborted, and a move whose dirty set
 * overflows (16 MiB of key bytes written while the target is stopped)
 * is aborted with that reason, every key kept at the source. And the
 * argument limits of CLUSTER import and import-begin. The model test
 * under load is step 6's. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "cluster_util.h"
#include "kvmux.h"
#include "migtab.h"
#include "migtest.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

#define NKEYS 2000
#define FIRST 100
#define LAST 299
#define BIG_INDEX 7            /* the key with a 300 KiB value */
#define BIG_LEN (300 * 1024)
#define WAIT_MS 20000

static char keys[NKEYS][16];
static uint64_t versions[NKEYS];
/* Values rewritten by the writer thread during the first move. */
static char written[NKEYS][48];

/* Key i's value: the writer's last acknowledged one, else its name and
 * index, padded to a length that varies. */
static size_t value_of(int i, char *out, size_t cap) {
    if (written[i][0]) {
        size_t n = strlen(written[i]);
        memcpy(out, written[i], n < cap ? n : cap);
        return n < cap ? n : cap;
    }
    if (i == BIG_INDEX) {
        size_t n = BIG_LEN < cap ? BIG_LEN : cap;
        for (size_t k = 0; k < n; k++) out[k] = (char)('a' + (k * 7 + (size_t)i) % 26);
        return n;
    }
    int n = snprintf(out, cap, "value-%s-%d-", keys[i], i);
    size_t len = (size_t)n + (size_t)(i % 97);
    for (size_t k = (size_t)n; k < len && k < cap; k++) out[k] = (char)('0' + k % 10);
    return len < cap ? len : cap;
}

static kvmux_client *connect_to(uint16_t port) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    return c;
}

static long long wait_slotkeys_zero(uint16_t port) {
    long long k = -1;
    for (int64_t end = test_now_ms() + WAIT_MS; test_now_ms() < end; test_sleep_ms(100))
        if ((k = migt_slotkeys(port, FIRST, LAST)) == 0) break;
    return k;
}

/* The table's record id; with ended, waited for up to WAIT_MS to be
 * ended with both acks. */
static int wait_record(uint16_t mport, uint32_t id, int ended, kvmux_migrec *out) {
    static uint8_t buf[65536];
    kvmux_migtab *t = malloc(sizeof *t);
    REQUIRE(t != NULL);
    int rc = -1;
    for (int64_t end = test_now_ms() + WAIT_MS; test_now_ms() < end; test_sleep_ms(100)) {
        size_t n = 0;
        if (cluster_call(mport, "migrations", NULL, 0, buf, sizeof buf, &n) != 0 ||
            kvmux_migtab_decode(t, buf, n, NULL, 0) != 0)
            continue;
        const kvmux_migrec *r = kvmux_migtab_find(t, id);
        if (!r) continue;
        *out = *r;
        rc = 0;
        if (!ended || (r->state != KVMUX_MIG_OPEN && r->acks == 3)) break;
    }
    free(t);
    return rc;
}

/* Every key read from port with its value and the version in versions[]. */
static void check_keys(uint16_t port, const char *where) {
    static char want[BIG_LEN + 64];
    kvmux_client *c = connect_to(port);
    int bad = 0;
    for (int i = 0; i < NKEYS; i++) {
        kvmux_value *v = NULL;
        size_t n = value_of(i, want, sizeof want);
        int rc = kvmux_get(c, keys[i], strlen(keys[i]), &v, 5000);
        if (rc != 0 || v->len != n || memcmp(v->data, want, n) != 0 ||
            v->version != versions[i]) {
            if (bad++ < 5)
                fprintf(stderr, "%s: key %s: rc %d, len %zu (want %zu), version %llu (want "
                        "%llu)\n", where, keys[i], rc, v ? v->len : 0, n,
                        (unsigned long long)(v ? v->version : 0),
                        (unsigned long long)versions[i]);
        }
        kvmux_value_free(v);
    }
    CHECK_EQ(bad, 0);
    kvmux_close(c);
}

static uint64_t map_epoch(const rgroup *mg) { return rgroup_stat(mg, 0, "cluster_epoch"); }

/* `kvmux-cli cluster migrate FIRST-LAST dst`, checked end to end. */
static void move(rgroup *mg, const char *mapeps, rgroup *from, rgroup *to, int dst, uint32_t id) {
    char cmd[1024], out[4096];
    uint64_t e0 = map_epoch(mg);
    uint64_t sent0 = rgroup_stat(from, 0, "migrate_keys_sent");
    uint64_t commits0 = rgroup_stat(from, 0, "migrate_commits");
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster migrate %d-%d %d --map %s --timeout 60 2>&1",
             KVMUX_CLI_PATH, FIRST, LAST, dst, mapeps);
    int rc = migt_run(cmd, out, sizeof out);
    CHECK_EQ(rc, 0);
    if (rc != 0) fprintf(stderr, "cli said: %s\n", out);
    CHECK(strstr(out, "committed at epoch") != NULL);
    CHECK_EQ(map_epoch(mg), e0 + 1);
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    REQUIRE(wait_record(mg->cport[0], id, 1, &r) == 0);
    CHECK_EQ(r.state, KVMUX_MIG_COMMITTED);
    CHECK_EQ(r.acks, 3);
    CHECK_EQ(r.end_epoch, e0 + 1);
    CHECK_EQ(r.dst, dst);
    /* The old owner's janitor purged the range (its ack waited for it). */
    CHECK_EQ(wait_slotkeys_zero(from->cport[0]), 0);
    CHECK_EQ(migt_slotkeys(to->cport[0], FIRST, LAST), NKEYS);
    CHECK(rgroup_stat(from, 0, "migrate_keys_sent") >= sent0 + NKEYS);
    CHECK(rgroup_stat(from, 0, "migrate_batches_sent") >= 2); /* the big value went alone */
    CHECK_EQ(rgroup_stat(from, 0, "migrate_commits"), commits0 + 1);
    CHECK(rgroup_stat(from, 0, "migrate_fence_ms_last") < 60000);
    CHECK_EQ(rgroup_stat(from, 0, "migrate_aborts"), 0);
    char st[32];
    CHECK(rgroup_stat_str(from, 0, "migrate_out_state", st, sizeof st) == 0 &&
          strcmp(st, "none") == 0);
    CHECK(rgroup_stat_str(to, 0, "migrate_in_state", st, sizeof st) == 0 &&
          strcmp(st, "none") == 0);
    CHECK(rgroup_stat(to, 0, "migrate_import_keys") >= NKEYS);
    /* The old owner redirects to the new one. */
    uint8_t val[512];
    size_t n = 0;
    CHECK_EQ(cluster_raw_call(from->cport[0], 3, KVMUX_OP_GET, keys[0], NULL, 0, val, sizeof val,
                              &n),
             KVMUX_STATUS_WRONG_SHARD);
}

/* The writer: overwrites keys 100..1099 at group 1 in turn, one SET at a
 * time, until group 1 refuses one (TRY_AGAIN at the fence, then
 * WRONG_SHARD: not applied) or it is told to stop; every acknowledged
 * write's value and version are kept, and must be what group 2 serves
 * after the move (MIGRATION.md G1: the dirty set and the final delta). */
typedef struct writer {
    uint16_t port;
    atomic_int stop;
    long acked;
    int last_rc;
} writer;

static void *writer_main(void *arg) {
    writer *w = arg;
    kvmux_client *c = connect_to(w->port);
    for (long n = 0; !atomic_load(&w->stop); n++) {
        int i = 100 + (int)(n % 1000);
        char v[48];
        snprintf(v, sizeof v, "w%ld-%s", n, keys[i]);
        uint64_t ver = 0;
        int rc = kvmux_set(c, keys[i], strlen(keys[i]), v, strlen(v), 0, &ver, 5000);
        if (rc != 0) {
            w->last_rc = rc;
            break;
        }
        memcpy(written[i], v, sizeof v);
        versions[i] = ver;
        w->acked++;
    }
    kvmux_close(c);
    return NULL;
}

/* docs/PROTOCOL.md 18.7: CLUSTER import takes a batch of up to
 * 1,142,802 bytes (KVMUX_MIG_BATCH_WIRE_MAX, migin.h: header, 4096
 * records' fixed fields, 1 MiB of keys and values), or one record up to
 * --max-value (migrate_big_test moves such values); every other CLUSTER
 * argument at most KVMUX_MAP_WIRE_MAX. At and past the batch limit the
 * batch is parsed (and this one refused as malformed); a map argument
 * one byte over its limit is TOO_LARGE unparsed. */
#define IMPORT_ARG_MAX (18u + 4096u * 23u + 1048576u)

static void arg_limits(uint16_t port) {
    uint8_t *big = calloc(1, IMPORT_ARG_MAX + 1);
    size_t n = 0;
    REQUIRE(big != NULL);
    CHECK_EQ(cluster_call(port, "import", big, IMPORT_ARG_MAX, NULL, 0, &n), KVMUX_EBADREQ);
    CHECK_EQ(cluster_call(port, "import", big, IMPORT_ARG_MAX + 1, NULL, 0, &n), KVMUX_EBADREQ);
    CHECK_EQ(cluster_call(port, "import-begin", big, KVMUX_MAP_WIRE_MAX + 1, NULL, 0, &n),
             KVMUX_ETOOBIG);
    CHECK_EQ(cluster_call(port, "import-begin", big, KVMUX_MAP_WIRE_MAX, NULL, 0, &n),
             KVMUX_EBADREQ);
    free(big);
}

/* A migration that cannot finish (the target, group 3, is over its
 * --maxmemory: imports answered OUT_OF_MEMORY, retried), aborted with
 * kvmux-cli: the source unfences and keeps every key, the target drops
 * its incoming record and purges what it imported, both acknowledge, the
 * map does not change. */
static void abort_stalled(rgroup *mg, const char *mapeps, rgroup *g1, rgroup *g3, uint32_t id) {
    char cmd[1024], out[4096], st[32];
    uint64_t e0 = map_epoch(mg);
    /* The target over its 256K first, with a 300 KiB value in a slot of
     * its own: every import is then refused. Left to the moved keys, it
     * went over only once the big one had arrived, and if that came in
     * the last batch (the scan order follows the source's random hash
     * key) nothing was refused and the move committed. */
    static char fill[BIG_LEN];
    char fkey[16];
    int ffrom = 0;
    cluster_key_in(16000, 16383, &ffrom, fkey, sizeof fkey);
    memset(fill, 'f', sizeof fill);
    kvmux_client *fc = connect_to(g3->cport[0]);
    CHECK_EQ(kvmux_set(fc, fkey, strlen(fkey), fill, sizeof fill, 0, NULL, 5000), 0);
    kvmux_close(fc);
    /* The CLI waits 7 s (exit 5: still open, it goes on) and meanwhile
     * prints a progress line (at 5 s) with the range's keys at each side. */
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster migrate %d-%d 3 --map %s --timeout 7 2>&1",
             KVMUX_CLI_PATH, FIRST, LAST, mapeps);
    CHECK_EQ(migt_run(cmd, out, sizeof out), 5);
    char want[128];
    snprintf(want, sizeof want, "migration %u: open for 5 s; slots %d-%d: %d keys at group 1 "
             "(source), ", id, FIRST, LAST, NKEYS);
    CHECK(strstr(out, want) != NULL);
    CHECK(strstr(out, " at group 3 (target)\n") != NULL);
    CHECK(strstr(out, "still open after 7 s") != NULL);
    if (!strstr(out, want)) fprintf(stderr, "cli said: %s\n", out);
    /* Stalled: the target is READY and has refused a batch for lack of
     * memory (the source's attempts go on). */
    int64_t end = test_now_ms() + WAIT_MS;
    while (test_now_ms() < end &&
           !(rgroup_stat_str(g3, 0, "migrate_in_state", st, sizeof st) == 0 &&
             strcmp(st, "ready") == 0 && rgroup_stat(g3, 0, "oom_refused") > 0))
        test_sleep_ms(50);
    CHECK(strcmp(st, "ready") == 0);
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    CHECK(wait_record(mg->cport[0], id, 0, &r) == 0 && r.state == KVMUX_MIG_OPEN);
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster migrate --abort %u --map %s 2>&1",
             KVMUX_CLI_PATH, id, mapeps);
    CHECK_EQ(migt_run(cmd, out, sizeof out), 0);
    REQUIRE(wait_record(mg->cport[0], id, 1, &r) == 0);
    CHECK_EQ(r.state, KVMUX_MIG_ABORTED);
    CHECK_EQ(r.acks, 3);
    CHECK_EQ(map_epoch(mg), e0);
    CHECK_EQ(rgroup_stat(g1, 0, "migrate_aborts"), 1);
    CHECK(rgroup_stat_str(g1, 0, "migrate_out_state", st, sizeof st) == 0 &&
          strcmp(st, "none") == 0);
    CHECK(rgroup_stat_str(g3, 0, "migrate_in_state", st, sizeof st) == 0 &&
          strcmp(st, "none") == 0);
    CHECK_EQ(wait_slotkeys_zero(g3->cport[0]), 0);
    CHECK_EQ(migt_slotkeys(g1->cport[0], FIRST, LAST), NKEYS);
    check_keys(g1->cport[0], "after the abort");
}

/* Writes that outpace the drain rounds: OUTP_KEYS keys of R with
 * OUTP_KEY_LEN-byte names (their key bytes alone pass the fence's 256 KiB)
 * and OUTP_VAL_LEN-byte values are rewritten by OUTP_DEPTH pipelined SETs
 * while the move runs, so after 8 rounds the final delta would still send
 * more than 16 MiB: the source asks ABORT "writes to slots ... outpace the
 * copy", unfences, keeps every key; the target purges, both acknowledge. */
#define OUTP_KEYS 200
#define OUTP_KEY_LEN 3000
#define OUTP_VAL_LEN (128 * 1024)
#define OUTP_DEPTH 32

typedef struct outpacer {
    uint16_t port;
    atomic_int stop;
    atomic_long acked, failed; /* read by the test while the thread runs */
} outpacer;

static void outp_key(int i, char *out) {
    int from = 7000000 + i * 7;
    char tag[16];
    cluster_key_in(FIRST, LAST, &from, tag, sizeof tag);
    int n = snprintf(out, OUTP_KEY_LEN + 1, "{%s}o%d-", tag, i);
    memset(out + n, 'o', (size_t)(OUTP_KEY_LEN - n));
    out[OUTP_KEY_LEN] = '\0';
}

static void *outpacer_main(void *arg) {
    outpacer *w = arg;
    kvmux_client *c = connect_to(w->port);
    static char keys_o[OUTP_KEYS][OUTP_KEY_LEN + 1], val[OUTP_VAL_LEN];
    kvmux_future *fs[OUTP_DEPTH] = {0};
    for (int i = 0; i < OUTP_KEYS; i++) outp_key(i, keys_o[i]);
    long stop_at = -1;
    for (long i = 0;; i++) {
        int s = (int)(i % OUTP_DEPTH);
        if (fs[s]) {
            if (kvmux_future_wait(fs[s], 20000) == 0 && kvmux_future_result(fs[s], NULL) == 0)
                atomic_fetch_add(&w->acked, 1);
            else
                atomic_fetch_add(&w->failed, 1);
            kvmux_future_free(fs[s]);
            fs[s] = NULL;
        }
        if (stop_at < 0 && atomic_load(&w->stop)) stop_at = i;
        if (stop_at >= 0) {
            if (i - stop_at == OUTP_DEPTH - 1) break; /* every slot waited for */
            continue;
        }
        memset(val, 'a' + (int)(i % 26), sizeof val);
        kvmux_request rq = {.op = KVMUX_SET, .key = keys_o[i % OUTP_KEYS],
                            .key_len = OUTP_KEY_LEN, .value = val, .value_len = sizeof val};
        if (kvmux_call_future(c, &rq, 20000, &fs[s]) != 0) atomic_fetch_add(&w->failed, 1);
    }
    kvmux_close(c);
    return NULL;
}

static void outpaced(rgroup *mg, rgroup *g1, rgroup *g2, uint32_t id) {
    uint64_t rounds0 = rgroup_stat(g1, 0, "migrate_rounds");
    uint64_t aborts0 = rgroup_stat(g1, 0, "migrate_aborts");
    static outpacer w;
    w.port = g1->cport[0];
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, outpacer_main, &w) == 0);
    while (atomic_load(&w.acked) < OUTP_KEYS && !atomic_load(&w.failed))
        test_sleep_ms(10); /* every key written once */
    int64_t t0 = test_now_ms();
    REQUIRE(migt_start_move(mg, FIRST, LAST, 2) == id);
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    CHECK_EQ(migt_record(mg, id, 1, 120000, &r), 0);
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    uint64_t rounds = rgroup_stat(g1, 0, "migrate_rounds") - rounds0;
    printf("outpaced: %ld SETs of %d-byte values acknowledged (%ld failed), %llu drain rounds, "
           "ended in %lld ms: %s\n", atomic_load(&w.acked), OUTP_VAL_LEN, atomic_load(&w.failed),
           (unsigned long long)rounds,
           (long long)(test_now_ms() - t0), r.reason);
    CHECK_EQ(r.state, KVMUX_MIG_ABORTED);
    CHECK(strstr(r.reason, "outpace the copy") != NULL && strstr(r.reason, "after 8 rounds"));
    CHECK(rounds >= 8);
    CHECK_EQ(atomic_load(&w.failed), 0);
    CHECK_EQ(rgroup_stat(g1, 0, "migrate_aborts"), aborts0 + 1);
    CHECK_EQ(wait_slotkeys_zero(g2->cport[0]), 0);
    CHECK_EQ(migt_slotkeys(g1->cport[0], FIRST, LAST), NKEYS + OUTP_KEYS);
    check_keys(g1->cport[0], "after the outpaced move");
}

/* Writes to R while the copy cannot finish overflow the source's dirty
 * set (KVMUX_MIG_DIRTY_MAX_BYTES: 16 MiB of key bytes): the target is
 * SIGSTOPped before the move is recorded, so the bulk pass waits, and
 * OVF_KEYS SETs of OVF_KEY_LEN-byte keys land in R meanwhile. Once the
 * target runs again the first drain round finds the overflow: the source
 * asks ABORT "dirty set overflow: ...", keeps every key, the target drops
 * what it received and both acknowledge. */
#define OVF_KEYS 4400
#define OVF_KEY_LEN 4000

static void ovf_key(int i, char *out) {
    int from = 5000000 + i * 7;
    char tag[16];
    cluster_key_in(FIRST, LAST, &from, tag, sizeof tag);
    int n = snprintf(out, OVF_KEY_LEN + 1, "{%s}%d-", tag, i);
    memset(out + n, 'k', (size_t)(OVF_KEY_LEN - n));
    out[OVF_KEY_LEN] = '\0';
}

static void ovf_req(int i, int slot, void *ud, kvmux_request *rq) {
    static char k[MIGT_FILL_DEPTH][OVF_KEY_LEN + 1];
    (void)ud;
    ovf_key(i, k[slot]);
    rq->op = KVMUX_SET;
    rq->key = k[slot];
    rq->key_len = OVF_KEY_LEN;
    rq->value = "v";
    rq->value_len = 1;
}

static void dirty_overflow(rgroup *mg, rgroup *g1, rgroup *g2, uint32_t id) {
    uint64_t aborts0 = rgroup_stat(g1, 0, "migrate_aborts");
    REQUIRE(kill(g2->srv[0].pid, SIGSTOP) == 0);
    g2->up[0] = 0; /* rgroup_stat would wait for it */
    REQUIRE(migt_start_move(mg, FIRST, LAST, 2) == id);
    int64_t end = test_now_ms() + WAIT_MS;
    while (test_now_ms() < end && !migt_stat_is(g1, 0, "migrate_out_state", "copying"))
        test_sleep_ms(20);
    CHECK(migt_stat_is(g1, 0, "migrate_out_state", "copying"));
    int64_t t0 = test_now_ms();
    migt_fill(g1->cport[0], OVF_KEYS, ovf_req, NULL);
    uint64_t dirty = rgroup_stat(g1, 0, "migrate_dirty_bytes");
    printf("overflow: %d keys of %d bytes written in %lld ms, dirty set %llu key bytes\n",
           OVF_KEYS, OVF_KEY_LEN, (long long)(test_now_ms() - t0), (unsigned long long)dirty);
    CHECK(dirty > 15u * 1024 * 1024 && dirty <= 16u * 1024 * 1024);
    REQUIRE(kill(g2->srv[0].pid, SIGCONT) == 0);
    g2->up[0] = 1;
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    CHECK_EQ(migt_record(mg, id, 1, 60000, &r), 0);
    CHECK_EQ(r.state, KVMUX_MIG_ABORTED);
    CHECK(strncmp(r.reason, "dirty set overflow: ", 20) == 0);
    if (strncmp(r.reason, "dirty set overflow: ", 20) != 0) fprintf(stderr, "reason: %s\n", r.reason);
    CHECK_EQ(rgroup_stat(g1, 0, "migrate_aborts"), aborts0 + 1);
    CHECK_EQ(wait_slotkeys_zero(g2->cport[0]), 0);
    CHECK_EQ(migt_slotkeys(g1->cport[0], FIRST, LAST), NKEYS + OUTP_KEYS + OVF_KEYS);
    check_keys(g1->cport[0], "after the overflow");
    kvmux_client *c = connect_to(g1->cport[0]);
    char k[OVF_KEY_LEN + 1];
    int found = 0;
    for (int i = 0; i < OVF_KEYS; i += 97) {
        ovf_key(i, k);
        kvmux_reply rep;
        kvmux_request rq = {.op = KVMUX_GET, .key = k, .key_len = OVF_KEY_LEN};
        found += kvmux_call(c, &rq, &rep, 5000) == 0 && rep.value_len == 1;
        kvmux_reply_free(&rep);
    }
    CHECK_EQ(found, (OVF_KEYS + 96) / 97);
    kvmux_close(c);
}

int main(void) {
    static const char *const mx[] = {"--cluster-map-group", NULL};
    static char mapeps[64];
    static const char *x1[] = {"--cluster-group", "1", "--cluster-map", mapeps, NULL};
    static const char *x2[] = {"--cluster-group", "2", "--cluster-map", mapeps, NULL};
    static const char *x3[] = {"--cluster-group", "3", "--cluster-map", mapeps,
                               "--store-shards", "1", "--maxmemory", "256K", NULL};
    static rgroup mg, g1, g2, g3;
    REQUIRE(rgroup_start(&mg, 1, mx) == 0);
    REQUIRE(rgroup_leader(&mg, 20000) == 0);
    snprintf(mapeps, sizeof mapeps, "127.0.0.1:%u", mg.cport[0]);
    REQUIRE(rgroup_start(&g1, 1, x1) == 0);
    REQUIRE(rgroup_start(&g2, 1, x2) == 0);
    REQUIRE(rgroup_start(&g3, 1, x3) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    REQUIRE(rgroup_leader(&g2, 20000) == 0);
    REQUIRE(rgroup_leader(&g3, 20000) == 0);

    /* Map: slots 0-8191 to group 1, 8192-15999 to group 2, the rest to
     * group 3. */
    char path[256], cmd[1024], out[4096];
    snprintf(path, sizeof path, "%s/map.txt", mg.dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "group 1 127.0.0.1:%u\ngroup 2 127.0.0.1:%u\ngroup 3 127.0.0.1:%u\n"
            "slots 0-8191 1\nslots 8192-15999 2\nslots 16000-16383 3\n",
            g1.cport[0], g2.cport[0], g3.cport[0]);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -t 5000 cluster assign %s --map %s 2>&1", KVMUX_CLI_PATH, path,
             mapeps);
    int rc = migt_run(cmd, out, sizeof out);
    if (rc != 0) fprintf(stderr, "assign said: %s\n", out);
    REQUIRE(rc == 0);
    REQUIRE(map_epoch(&mg) == 1);

    arg_limits(g2.cport[0]);

    /* The keys, written at group 1; their versions kept. */
    static char val[BIG_LEN + 64];
    int from = 0;
    kvmux_client *c = connect_to(g1.cport[0]);
    for (int i = 0; i < NKEYS; i++) {
        cluster_key_in(FIRST, LAST, &from, keys[i], sizeof keys[i]);
        size_t n = value_of(i, val, sizeof val);
        REQUIRE(kvmux_set(c, keys[i], strlen(keys[i]), val, n, 0, &versions[i], 5000) == 0);
    }
    kvmux_close(c);
    CHECK_EQ(migt_slotkeys(g1.cport[0], FIRST, LAST), NKEYS);

    /* 1 -> 2, with the writer overwriting keys at group 1 meanwhile. */
    static writer w;
    w.port = g1.cport[0];
    pthread_t wt;
    REQUIRE(pthread_create(&wt, NULL, writer_main, &w) == 0);
    test_sleep_ms(200);
    move(&mg, mapeps, &g1, &g2, 2, 1);
    atomic_store(&w.stop, 1);
    pthread_join(wt, NULL);
    printf("writer: %ld writes acknowledged by group 1 during the move, stopped by %d\n",
           w.acked, w.last_rc);
    CHECK(w.acked > 0);
    CHECK(w.last_rc == KVMUX_ETRYAGAIN || w.last_rc == KVMUX_EWRONGSHARD);
    check_keys(g2.cport[0], "after 1 -> 2");

    /* A write at the new owner: a version above every imported one. */
    c = connect_to(g2.cport[0]);
    size_t n = value_of(0, val, sizeof val);
    uint64_t v2 = 0;
    CHECK_EQ(kvmux_set(c, keys[0], strlen(keys[0]), val, n, 0, &v2, 5000), 0);
    uint64_t maxv = 0;
    for (int i = 0; i < NKEYS; i++)
        if (versions[i] > maxv) maxv = versions[i];
    CHECK(v2 > maxv);
    versions[0] = v2;
    kvmux_close(c);

    /* 2 -> 1: the same keys back, the rewritten one at its new version. */
    move(&mg, mapeps, &g2, &g1, 1, 2);
    check_keys(g1.cport[0], "after 2 -> 1");

    /* 1 -> 3, stalled, aborted. */
    abort_stalled(&mg, mapeps, &g1, &g3, 3);

    /* 1 -> 2 again, outpaced by writes for 8 rounds, aborted. */
    outpaced(&mg, &g1, &g2, 4);

    /* 1 -> 2 again, its dirty set overflowed, aborted. */
    dirty_overflow(&mg, &g1, &g2, 5);

    rgroup_stop(&g3);
    rgroup_stop(&g1);
    rgroup_stop(&g2);
    rgroup_stop(&mg);
    return test_report();
}
