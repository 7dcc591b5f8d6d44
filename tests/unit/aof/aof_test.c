/* Unit tests for the append-only log (src/server/aof*.c): the format,
 * recovery rules (torn tail truncated and reported, corruption refused
 * with its offset, --aof-repair), versions resuming above the log, the
 * journal + writer thread, and compaction while other threads write; the
 * format-3 EXPIRY record (EXPIRE/PERSIST without the value): its size,
 * replay rules, format policy and compaction. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aof.h"
#include "store.h"
#include "testutil.h"

static char dir[256];

static void path_for(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", dir, name);
}

static kvmux_store *new_store(void) {
    kvmux_store *s = NULL;
    REQUIRE(kvmux_store_new(&s, NULL) == 0);
    return s;
}

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Write magic + the given records to path; offsets of each record in offs. */
static void write_log(const char *path, int n, uint64_t *offs) {
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fwrite(KVMUX_AOF_MAGIC, 1, KVMUX_AOF_MAGIC_LEN, f);
    uint64_t off = KVMUX_AOF_MAGIC_LEN;
    uint8_t rec[256];
    for (int i = 0; i < n; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "value-%d", i);
        size_t len = kvmux_aof_encode(rec, KVMUX_STORE_REC_SET, 100 + (uint64_t)i, 0,
                                      (const uint8_t *)key, (uint16_t)strlen(key),
                                      (const uint8_t *)val, (uint32_t)strlen(val));
        if (offs) offs[i] = off;
        fwrite(rec, 1, len, f);
        off += len;
    }
    fclose(f);
}

static uint64_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

typedef struct got {
    uint64_t version;
    char val[64];
} got;

static int read_cb(void *ud, uint64_t version, const uint8_t *v, size_t len) {
    got *g = ud;
    g->version = version;
    snprintf(g->val, sizeof g->val, "%.*s", (int)len, v ? (const char *)v : "");
    return 0;
}

static int get(kvmux_store *s, const char *key, got *g) {
    memset(g, 0, sizeof *g);
    return kvmux_store_get(s, (const uint8_t *)key, strlen(key), read_cb, g);
}

static void test_crc(void) {
    CHECK_EQ(kvmux_crc32c(0, "123456789", 9), 0xE3069283u);
    /* Incremental equals one-shot (hardware and table paths agree). */
    CHECK_EQ(kvmux_crc32c(kvmux_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
    CHECK_EQ(kvmux_crc32c(0, "", 0), 0);
}

static void test_replay(void) {
    char p[300];
    path_for(p, sizeof p, "replay.aof");
    FILE *f = fopen(p, "wb");
    REQUIRE(f);
    fwrite(KVMUX_AOF_MAGIC, 1, KVMUX_AOF_MAGIC_LEN, f);
    uint8_t rec[256];
    size_t n;
    n = kvmux_aof_encode(rec, KVMUX_STORE_REC_SET, 5, 0, (const uint8_t *)"a", 1,
                         (const uint8_t *)"one", 3);
    fwrite(rec, 1, n, f);
    n = kvmux_aof_encode(rec, KVMUX_STORE_REC_SET, 9, 0, (const uint8_t *)"a", 1,
                         (const uint8_t *)"two", 3);
    fwrite(rec, 1, n, f);
    n = kvmux_aof_encode(rec, KVMUX_STORE_REC_SET, 6, 0, (const uint8_t *)"b", 1, NULL, 0);
    fwrite(rec, 1, n, f);
    n = kvmux_aof_encode(rec, KVMUX_STORE_REC_SET, 7, 0, (const uint8_t *)"c", 1,
                         (const uint8_t *)"x", 1);
    fwrite(rec, 1, n, f);
    n = kvmux_aof_encode(rec, KVMUX_STORE_REC_DEL, 12, 0, (const uint8_t *)"c", 1, NULL, 0);
    fwrite(rec, 1, n, f);
    /* Expired one second ago by the wall clock: dropped on load. */
    n = kvmux_aof_encode(rec, KVMUX_STORE_REC_SET, 10, wall_ms() - 1000,
                         (const uint8_t *)"gone", 4, (const uint8_t *)"x", 1);
    fwrite(rec, 1, n, f);
    /* Expires in an hour: kept with its TTL. */
    n = kvmux_aof_encode(rec, KVMUX_STORE_REC_SET, 11, wall_ms() + 3600000,
                         (const uint8_t *)"ttl", 3, (const uint8_t *)"y", 1);
    fwrite(rec, 1, n, f);
    fclose(f);

    kvmux_store *s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.records, 7);
    CHECK_EQ(info.dropped_bytes, 0);
    CHECK_EQ(info.max_version, 12);
    got g;
    CHECK_EQ(get(s, "a", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, 9);
    CHECK(strcmp(g.val, "two") == 0);
    CHECK_EQ(get(s, "b", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, 6);
    CHECK(g.val[0] == 0);
    CHECK_EQ(get(s, "c", &g), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(get(s, "gone", &g), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(get(s, "ttl", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, 11);
    /* The version counter resumes above everything in the log (12, a DEL). */
    uint64_t v = 0;
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"new", 3, (const uint8_t *)"z", 1, 0, &v),
             KVMUX_STATUS_OK);
    CHECK_EQ(v, 13);
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.keys, 4); /* a, b, ttl, new */
    kvmux_store_free(s);
}

static void test_torn_tail(void) {
    char p[300];
    path_for(p, sizeof p, "torn.aof");
    uint64_t offs[3];
    write_log(p, 3, offs);
    uint64_t full = file_size(p);
    /* Cut the last record in the middle. */
    REQUIRE(truncate(p, (off_t)(full - 5)) == 0);
    kvmux_store *s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.records, 2);
    CHECK_EQ(info.truncated_at, offs[2]);
    CHECK_EQ(info.dropped_bytes, full - 5 - offs[2]);
    CHECK_EQ(file_size(p), offs[2]);
    got g;
    CHECK_EQ(get(s, "k1", &g), KVMUX_STATUS_OK);
    CHECK_EQ(get(s, "k2", &g), KVMUX_STATUS_NOT_FOUND);
    kvmux_store_free(s);

    /* A tail of zero bytes (power loss on some file systems) is torn too. */
    write_log(p, 2, offs);
    FILE *f = fopen(p, "ab");
    REQUIRE(f);
    static const uint8_t zeros[100];
    fwrite(zeros, 1, sizeof zeros, f);
    fclose(f);
    s = new_store();
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.records, 2);
    CHECK_EQ(info.dropped_bytes, 100);
    kvmux_store_free(s);

    /* Only the 8-byte header of a record made it. */
    write_log(p, 1, offs);
    f = fopen(p, "ab");
    REQUIRE(f);
    fwrite("\x30\0\0\0\x11\x22", 1, 6, f);
    fclose(f);
    s = new_store();
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.records, 1);
    CHECK_EQ(info.dropped_bytes, 6);
    kvmux_store_free(s);
}

static void test_corrupt(void) {
    char p[300];
    path_for(p, sizeof p, "corrupt.aof");
    uint64_t offs[4];
    write_log(p, 4, offs);
    uint64_t full = file_size(p);
    /* Flip one value byte of record 1 (not the tail). */
    int fd = open(p, O_RDWR);
    REQUIRE(fd >= 0);
    uint8_t b;
    off_t at = (off_t)(offs[2] - 2);
    REQUIRE(pread(fd, &b, 1, at) == 1);
    b ^= 0x40;
    REQUIRE(pwrite(fd, &b, 1, at) == 1);
    close(fd);

    kvmux_store *s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "", want[64];
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), -1);
    snprintf(want, sizeof want, "offset %llu", (unsigned long long)offs[1]);
    CHECK(strstr(err, want) != NULL);
    CHECK(strstr(err, "checksum") != NULL);
    CHECK(strstr(err, "--aof-repair") != NULL);
    CHECK_EQ(file_size(p), full); /* never touched without --aof-repair */
    fprintf(stderr, "corrupt log refused: %s\n", err);
    kvmux_store_free(s);

    /* With repair: truncated at the bad record, earlier ones kept. */
    s = new_store();
    CHECK_EQ(kvmux_aof_load(p, s, 1, &info, err, sizeof err), 0);
    CHECK_EQ(info.records, 1);
    CHECK_EQ(info.repaired, 1);
    CHECK_EQ(info.truncated_at, offs[1]);
    CHECK_EQ(file_size(p), offs[1]);
    got g;
    CHECK_EQ(get(s, "k0", &g), KVMUX_STATUS_OK);
    CHECK_EQ(get(s, "k1", &g), KVMUX_STATUS_NOT_FOUND);
    kvmux_store_free(s);

    /* A garbage length in the middle is corruption as well. */
    write_log(p, 3, offs);
    fd = open(p, O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, "\xff\xff\xff\x7f", 4, (off_t)offs[1]) == 4);
    close(fd);
    s = new_store();
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), -1);
    CHECK(strstr(err, "header checksum") != NULL);
    CHECK(strstr(err, "1 intact records after it") != NULL);
    kvmux_store_free(s);

    /* Not a log at all. */
    path_for(p, sizeof p, "notalog.aof");
    FILE *f = fopen(p, "wb");
    REQUIRE(f);
    fputs("hello world, not a log", f);
    fclose(f);
    s = new_store();
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), -1);
    CHECK(strstr(err, "magic") != NULL);
    kvmux_store_free(s);
}

/* ---- journal + writer thread + compaction ---- */

static kvmux_aof *open_log(const char *p, kvmux_store *s, int policy, uint64_t rewrite_min) {
    kvmux_aof_options o;
    kvmux_aof_options_init(&o);
    o.path = p;
    o.fsync = policy;
    o.rewrite_min_size = rewrite_min;
    kvmux_aof *a = NULL;
    char err[512] = "";
    if (kvmux_aof_open(&a, &o, s, err, sizeof err) != 0) fprintf(stderr, "open: %s\n", err);
    REQUIRE(a);
    return a;
}

static void wait_durable(kvmux_aof *a) {
    uint64_t want = kvmux_aof_appended(a);
    for (int i = 0; i < 500 && kvmux_aof_durable(a) < want; i++) test_sleep_ms(10);
}

static void test_journal_roundtrip(void) {
    char p[300];
    path_for(p, sizeof p, "journal.aof");
    unlink(p);
    kvmux_store *s = new_store();
    kvmux_aof *a = open_log(p, s, KVMUX_FSYNC_ALWAYS, 0);
    uint64_t v1, v2, v3;
    int64_t n;
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"s", 1, (const uint8_t *)"hello", 5, 0, &v1),
             KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_incr(s, (const uint8_t *)"n", 1, 41, &n, &v2), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_incr(s, (const uint8_t *)"n", 1, 1, &n, &v2), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_cas(s, (const uint8_t *)"s", 1, v1, (const uint8_t *)"cas", 3, 0, &v3),
             KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"d", 1, (const uint8_t *)"x", 1, 0, NULL),
             KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_del(s, (const uint8_t *)"d", 1), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"t", 1, (const uint8_t *)"x", 1, 3600000,
                             NULL), KVMUX_STATUS_OK);
    wait_durable(a);
    CHECK(kvmux_aof_durable(a) == kvmux_aof_appended(a));
    kvmux_aof_stats st;
    kvmux_aof_get_stats(a, &st);
    CHECK(st.fsyncs >= 1);
    CHECK(st.fsyncs <= 7);
    kvmux_aof_close(a);
    kvmux_store_free(s);

    s = new_store();
    kvmux_aof_load_info info;
    char err[512];
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.records, 7);
    got g;
    CHECK_EQ(get(s, "s", &g), KVMUX_STATUS_OK);
    CHECK(strcmp(g.val, "cas") == 0);
    CHECK_EQ(g.version, v3);
    CHECK_EQ(get(s, "n", &g), KVMUX_STATUS_OK);
    CHECK(strcmp(g.val, "42") == 0);
    CHECK_EQ(g.version, v2);
    CHECK_EQ(get(s, "d", &g), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(get(s, "t", &g), KVMUX_STATUS_OK);
    kvmux_store_free(s);
}

typedef struct writer_arg {
    kvmux_store *s;
    int id;
    int n;
} writer_arg;

static void *writer(void *p) {
    writer_arg *w = p;
    for (int i = 0; i < w->n; i++) {
        char key[32], val[64];
        /* Each thread overwrites a small key set many times (so the log
         * has garbage to compact) and keeps a unique final value. */
        snprintf(key, sizeof key, "w%d:%d", w->id, i % 50);
        snprintf(val, sizeof val, "%d:%d:padding-padding-padding", w->id, i);
        kvmux_store_set(w->s, (const uint8_t *)key, strlen(key), (const uint8_t *)val,
                        strlen(val), 0, NULL);
    }
    return NULL;
}

static void test_compaction(void) {
    char p[300];
    path_for(p, sizeof p, "compact.aof");
    unlink(p);
    kvmux_store *s = new_store();
    /* everysec: the test is about the rewrite, not fsync latency. */
    kvmux_aof *a = open_log(p, s, KVMUX_FSYNC_EVERYSEC, 0);
    enum { THREADS = 4, N = 20000 };
    pthread_t th[THREADS];
    writer_arg wa[THREADS];
    for (int i = 0; i < THREADS; i++) {
        wa[i] = (writer_arg){s, i, N};
        REQUIRE(pthread_create(&th[i], NULL, writer, &wa[i]) == 0);
    }
    test_sleep_ms(20);
    int started = kvmux_aof_rewrite(a) == 0; /* while the writers run */
    CHECK(started);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    kvmux_aof_stats st;
    for (int i = 0; i < 500; i++) {
        kvmux_aof_get_stats(a, &st);
        if (st.rewrites >= 1 && !st.rewriting) break;
        test_sleep_ms(10);
    }
    CHECK_EQ(st.rewrites, 1);
    CHECK_EQ(st.rewrite_failures, 0);
    /* The newest version belongs to a deleted key: after compaction it is
     * in no record, yet must never be handed out again. */
    uint64_t vdel = 0;
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"tmp", 3, (const uint8_t *)"1", 1, 0, &vdel),
             KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_del(s, (const uint8_t *)"tmp", 3), KVMUX_STATUS_OK);
    /* A second compaction with no writer running leaves only live data
     * (200 keys of ~60 bytes). */
    CHECK_EQ(kvmux_aof_rewrite(a), 0);
    for (int i = 0; i < 500; i++) {
        kvmux_aof_get_stats(a, &st);
        if (st.rewrites >= 2 && !st.rewriting) break;
        test_sleep_ms(10);
    }
    CHECK_EQ(st.rewrites, 2);
    /* Writes after the compaction go to the new file. */
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"after", 5, (const uint8_t *)"1", 1, 0, NULL),
             KVMUX_STATUS_OK);
    uint64_t appended = kvmux_aof_appended(a);
    kvmux_aof_close(a);
    uint64_t size = file_size(p);
    fprintf(stderr, "compaction: %llu bytes appended in all, file now %llu bytes\n",
            (unsigned long long)appended, (unsigned long long)size);
    CHECK(size < 30000);
    CHECK(appended > 1000000);

    kvmux_store *r = new_store();
    kvmux_aof_load_info info;
    char err[512];
    CHECK_EQ(kvmux_aof_load(p, r, 0, &info, err, sizeof err), 0);
    kvmux_store_stats a_st, r_st;
    kvmux_store_get_stats(s, &a_st);
    kvmux_store_get_stats(r, &r_st);
    CHECK_EQ(r_st.keys, a_st.keys);
    CHECK_EQ(r_st.keys, THREADS * 50 + 1);
    uint64_t vnew = 0;
    CHECK_EQ(kvmux_store_set(r, (const uint8_t *)"n", 1, (const uint8_t *)"1", 1, 0, &vnew),
             KVMUX_STATUS_OK);
    CHECK(vnew > vdel);
    /* Every key has the same value and version as before the restart. */
    int same = 0;
    for (int t = 0; t < THREADS; t++) {
        for (int k = 0; k < 50; k++) {
            char key[32];
            snprintf(key, sizeof key, "w%d:%d", t, k);
            got g1, g2;
            get(s, key, &g1);
            get(r, key, &g2);
            if (g1.version == g2.version && strcmp(g1.val, g2.val) == 0 && g1.version) same++;
        }
    }
    CHECK_EQ(same, THREADS * 50);
    kvmux_store_free(s);
    kvmux_store_free(r);
}

/* ---- version-1 logs (KVMXAOF1: no header checksum) ---- */

/* Write a version-1 log of n SETs k<i> = value-<i>, version 100+i, plus a
 * TTL'd key (an hour ahead) as the last record when with_ttl. */
static void write_log_v1(const char *path, int n, uint64_t *offs, int with_ttl) {
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fwrite(KVMUX_AOF_MAGIC_V1, 1, KVMUX_AOF_MAGIC_LEN, f);
    uint64_t off = KVMUX_AOF_MAGIC_LEN;
    uint8_t rec[256];
    for (int i = 0; i < n + (with_ttl ? 1 : 0); i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, i < n ? "k%d" : "ttl", i);
        snprintf(val, sizeof val, "value-%d", i);
        size_t len = kvmux_aof_encode_v1(rec, KVMUX_STORE_REC_SET, 100 + (uint64_t)i,
                                         i < n ? 0 : wall_ms() + 3600000,
                                         (const uint8_t *)key, (uint16_t)strlen(key),
                                         (const uint8_t *)val, (uint32_t)strlen(val));
        if (offs) offs[i] = off;
        fwrite(rec, 1, len, f);
        off += len;
    }
    fclose(f);
}

static int magic_is(const char *path, const char *magic) {
    char m[KVMUX_AOF_MAGIC_LEN];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(m, 1, sizeof m, f);
    fclose(f);
    return n == sizeof m && memcmp(m, magic, sizeof m) == 0;
}

/* k0..k<n-1> with value-<i> at version 100+i, in s. Returns how many match. */
static int count_v1_keys(kvmux_store *s, int n) {
    int ok = 0;
    for (int i = 0; i < n; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "value-%d", i);
        got g;
        if (get(s, key, &g) == KVMUX_STATUS_OK && g.version == 100 + (uint64_t)i &&
            strcmp(g.val, val) == 0)
            ok++;
    }
    return ok;
}

static void test_v1_load(void) {
    char p[300];
    path_for(p, sizeof p, "v1.aof");
    write_log_v1(p, 5, NULL, 1);
    uint64_t full = file_size(p);
    kvmux_store *s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.format, 1);
    CHECK_EQ(info.records, 6);
    CHECK_EQ(info.dropped_bytes, 0);
    CHECK_EQ(info.max_version, 105);
    CHECK_EQ(count_v1_keys(s, 5), 5);
    got g;
    CHECK_EQ(get(s, "ttl", &g), KVMUX_STATUS_OK);
    CHECK_EQ(file_size(p), full); /* loading alone does not convert */
    CHECK(magic_is(p, KVMUX_AOF_MAGIC_V1));
    kvmux_store_free(s);
}

/* A v1 length pointing past the end (with more than a header left) cannot
 * be told from a damaged length: refused with its offset, file untouched. */
static void test_v1_length_past_eof(void) {
    char p[300];
    path_for(p, sizeof p, "v1-past.aof");
    uint64_t offs[4];
    write_log_v1(p, 4, offs, 0);
    uint64_t full = file_size(p);
    REQUIRE(truncate(p, (off_t)(full - 3)) == 0); /* last record's body short */
    kvmux_store *s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "", want[64];
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), -1);
    snprintf(want, sizeof want, "corrupt record at offset %llu", (unsigned long long)offs[3]);
    CHECK(strstr(err, want) != NULL);
    if (!strstr(err, want)) fprintf(stderr, "v1 past eof: %s\n", err);
    CHECK_EQ(file_size(p), full - 3);
    CHECK(magic_is(p, KVMUX_AOF_MAGIC_V1));
    CHECK_EQ(get(s, "k0", &(got){0}), KVMUX_STATUS_NOT_FOUND); /* store not touched */
    kvmux_store_free(s);

    /* In the middle too: a length of record 1 bumped past the end. */
    write_log_v1(p, 4, offs, 0);
    full = file_size(p);
    int fd = open(p, O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, "\x00\x10\x00\x00", 4, (off_t)offs[1]) == 4); /* 4096 bytes */
    close(fd);
    s = new_store();
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), -1);
    snprintf(want, sizeof want, "corrupt record at offset %llu", (unsigned long long)offs[1]);
    CHECK(strstr(err, want) != NULL);
    CHECK_EQ(file_size(p), full);
    kvmux_store_free(s);
}

/* OPERATIONS.md: in version 1 only rule (a) applies (fewer bytes than a
 * header left): the load succeeds and reports the short tail, but the file
 * is not cut; opening it converts to version 3 without the tail. */
static void test_v1_short_tail(void) {
    char p[300];
    path_for(p, sizeof p, "v1-short.aof");
    uint64_t offs[3];
    write_log_v1(p, 3, offs, 0);
    uint64_t full = file_size(p);
    FILE *f = fopen(p, "ab");
    REQUIRE(f);
    fwrite("\x30\0\0\0\x11", 1, 5, f); /* 5 < KVMUX_AOF_REC_HDR_V1 */
    fclose(f);
    kvmux_store *s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.records, 3);
    CHECK_EQ(info.truncated_at, full);
    CHECK_EQ(info.dropped_bytes, 5);
    CHECK_EQ(file_size(p), full + 5); /* not cut */
    CHECK(magic_is(p, KVMUX_AOF_MAGIC_V1));
    CHECK_EQ(count_v1_keys(s, 3), 3);
    kvmux_store_free(s);
}

/* Opening a v1 log rewrites it as v3 with the same contents; a reload of
 * the converted file gives the same keys, values, versions and TTL. */
static void test_v1_convert(void) {
    char p[300];
    path_for(p, sizeof p, "v1-conv.aof");
    write_log_v1(p, 20, NULL, 1);
    FILE *f = fopen(p, "ab");
    REQUIRE(f);
    fwrite("\x30\0\0", 1, 3, f); /* a short tail: left out by the conversion */
    fclose(f);
    kvmux_store *s = new_store();
    kvmux_aof *a = open_log(p, s, KVMUX_FSYNC_ALWAYS, 0);
    CHECK(magic_is(p, KVMUX_AOF_MAGIC));
    CHECK_EQ(count_v1_keys(s, 20), 20);
    /* Appends after the conversion are version 3 records. */
    uint64_t v = 0;
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"after", 5, (const uint8_t *)"z", 1, 0, &v),
             KVMUX_STATUS_OK);
    CHECK(v > 120);
    wait_durable(a);
    kvmux_aof_close(a);
    kvmux_store_free(s);

    kvmux_store *r = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, r, 0, &info, err, sizeof err), 0);
    if (err[0]) fprintf(stderr, "reload: %s\n", err);
    CHECK_EQ(info.format, 3);
    CHECK_EQ(info.dropped_bytes, 0);
    CHECK_EQ(count_v1_keys(r, 20), 20);
    got g;
    CHECK_EQ(get(r, "ttl", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, 120);
    CHECK(strcmp(g.val, "value-20") == 0);
    CHECK_EQ(get(r, "after", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, v);
    kvmux_store_free(r);
}

/* ---- format 3: the EXPIRY record (EXPIRE / PERSIST) ---- */

static uint64_t ttl_of(kvmux_store *s, const char *key) {
    uint64_t left = UINT64_MAX;
    if (kvmux_store_ttl(s, (const uint8_t *)key, strlen(key), NULL, &left) != KVMUX_STATUS_OK)
        return UINT64_MAX;
    return left;
}

/* EXPIRE and PERSIST of a 1 MiB value append a few dozen bytes each (not
 * the value), and a reload gives the value, the version and the TTL. */
static void test_expiry_journal(void) {
    char p[300];
    path_for(p, sizeof p, "expiry.aof");
    unlink(p);
    kvmux_store *s = new_store();
    kvmux_aof *a = open_log(p, s, KVMUX_FSYNC_ALWAYS, 0);
    CHECK(magic_is(p, KVMUX_AOF_MAGIC));
    size_t big = 1u << 20;
    uint8_t *val = test_pattern(big, 3);
    uint64_t v = 0;
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"big", 3, val, big, 0, &v), KVMUX_STATUS_OK);
    uint64_t before = kvmux_aof_appended(a);
    CHECK_EQ(kvmux_store_expire(s, (const uint8_t *)"big", 3, 3600000, &v), KVMUX_STATUS_OK);
    uint64_t expire_bytes = kvmux_aof_appended(a) - before;
    CHECK_EQ(expire_bytes, KVMUX_AOF_REC_HDR + KVMUX_AOF_BODY_FIXED + 3);
    before = kvmux_aof_appended(a);
    CHECK_EQ(kvmux_store_persist(s, (const uint8_t *)"big", 3, &v), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_aof_appended(a) - before, KVMUX_AOF_REC_HDR + KVMUX_AOF_BODY_FIXED + 3);
    uint64_t vp = 0; /* PERSIST again: nothing to drop, nothing logged */
    before = kvmux_aof_appended(a);
    CHECK_EQ(kvmux_store_persist(s, (const uint8_t *)"big", 3, &vp), KVMUX_STATUS_OK);
    CHECK_EQ(vp, v);
    CHECK_EQ(kvmux_aof_appended(a), before);
    uint64_t vbig = 0;
    CHECK_EQ(kvmux_store_expire(s, (const uint8_t *)"big", 3, 7200000, &vbig), KVMUX_STATUS_OK);
    uint64_t vs = 0;
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"p", 1, (const uint8_t *)"x", 1, 3600000,
                             NULL), KVMUX_STATUS_OK);
    CHECK_EQ(kvmux_store_persist(s, (const uint8_t *)"p", 1, &vs), KVMUX_STATUS_OK);
    wait_durable(a);
    kvmux_aof_close(a);
    kvmux_store_free(s);
    fprintf(stderr, "expiry: EXPIRE of a 1 MiB value appended %llu bytes\n",
            (unsigned long long)expire_bytes);

    s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.format, 3);
    CHECK_EQ(info.records, 6);
    CHECK_EQ(info.max_version, vs);
    uint64_t left = ttl_of(s, "big");
    CHECK(left > 7100000 && left <= 7200000);
    got g;
    CHECK_EQ(get(s, "p", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, vs);
    CHECK_EQ(ttl_of(s, "p"), 0);
    /* The value, byte for byte, with EXPIRE's version. */
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.keys, 2);
    uint64_t vv = 0;
    CHECK_EQ(kvmux_store_exists(s, (const uint8_t *)"big", 3, &vv), KVMUX_STATUS_OK);
    CHECK_EQ(vv, vbig);
    kvmux_store_free(s);
    free(val);
}

static void put_rec(FILE *f, int op, uint64_t version, uint64_t wexp, const char *key,
                    const char *val) {
    uint8_t rec[256];
    size_t n = kvmux_aof_encode(rec, op, version, wexp, (const uint8_t *)key,
                                (uint16_t)strlen(key), (const uint8_t *)val,
                                val ? (uint32_t)strlen(val) : 0);
    fwrite(rec, 1, n, f);
}

/* Replay of EXPIRY records: a key whose SET expired while the server was
 * down but whose EXPIRY extended it comes back with its value; one still
 * expired stays gone (and is not counted); an EXPIRY older than the key's
 * version changes nothing (a record replayed after a compaction's
 * snapshot); an EXPIRY of an absent key only raises the version. */
static void test_expiry_replay(void) {
    char p[300];
    path_for(p, sizeof p, "expiry-replay.aof");
    FILE *f = fopen(p, "wb");
    REQUIRE(f);
    fwrite(KVMUX_AOF_MAGIC, 1, KVMUX_AOF_MAGIC_LEN, f);
    uint64_t now = wall_ms();
    put_rec(f, KVMUX_STORE_REC_SET, 10, now - 5000, "revived", "alive");
    put_rec(f, KVMUX_STORE_REC_EXPIRY, 11, now + 3600000, "revived", NULL);
    put_rec(f, KVMUX_STORE_REC_SET, 12, now - 5000, "dead", "x");
    put_rec(f, KVMUX_STORE_REC_EXPIRY, 13, now - 1000, "dead", NULL);
    put_rec(f, KVMUX_STORE_REC_SET, 20, 0, "newer", "v20");
    put_rec(f, KVMUX_STORE_REC_EXPIRY, 19, now + 3600000, "newer", NULL);
    put_rec(f, KVMUX_STORE_REC_SET, 14, now + 3600000, "persisted", "y");
    put_rec(f, KVMUX_STORE_REC_EXPIRY, 15, 0, "persisted", NULL);
    put_rec(f, KVMUX_STORE_REC_EXPIRY, 30, now + 3600000, "absent", NULL);
    fclose(f);
    kvmux_store *s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    if (err[0]) fprintf(stderr, "expiry replay: %s\n", err);
    CHECK_EQ(info.records, 9);
    CHECK_EQ(info.max_version, 30);
    got g;
    CHECK_EQ(get(s, "revived", &g), KVMUX_STATUS_OK);
    CHECK(strcmp(g.val, "alive") == 0);
    CHECK_EQ(g.version, 11);
    CHECK(ttl_of(s, "revived") > 3500000);
    CHECK_EQ(get(s, "dead", &g), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(get(s, "newer", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, 20);
    CHECK_EQ(ttl_of(s, "newer"), 0);
    CHECK_EQ(get(s, "persisted", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, 15);
    CHECK_EQ(ttl_of(s, "persisted"), 0);
    CHECK_EQ(get(s, "absent", &g), KVMUX_STATUS_NOT_FOUND);
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    CHECK_EQ(st.keys, 3); /* revived, newer, persisted: "dead" was purged */
    CHECK_EQ(st.expired, 0);
    uint64_t v = 0;
    CHECK_EQ(kvmux_store_set(s, (const uint8_t *)"n", 1, (const uint8_t *)"z", 1, 0, &v),
             KVMUX_STATUS_OK);
    CHECK_EQ(v, 31);
    kvmux_store_free(s);
}

/* The format policy: an EXPIRY record in a version-2 file is corrupt
 * (version 2 has no such op); a magic from a newer format is refused by
 * name, file untouched; a version-2 log is upgraded to version 3 in place
 * when opened, its records kept. */
static void test_expiry_format(void) {
    char p[300];
    path_for(p, sizeof p, "v2-with-expiry.aof");
    FILE *f = fopen(p, "wb");
    REQUIRE(f);
    fwrite(KVMUX_AOF_MAGIC_V2, 1, KVMUX_AOF_MAGIC_LEN, f);
    put_rec(f, KVMUX_STORE_REC_SET, 5, 0, "a", "1");
    put_rec(f, KVMUX_STORE_REC_EXPIRY, 6, wall_ms() + 60000, "a", NULL);
    fclose(f);
    kvmux_store *s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), -1);
    CHECK(strstr(err, "does not parse") != NULL);
    kvmux_store_free(s);

    path_for(p, sizeof p, "future.aof");
    f = fopen(p, "wb");
    REQUIRE(f);
    fwrite("KVMXAOF9", 1, KVMUX_AOF_MAGIC_LEN, f);
    put_rec(f, KVMUX_STORE_REC_SET, 5, 0, "a", "1");
    fclose(f);
    uint64_t size = file_size(p);
    s = new_store();
    err[0] = 0;
    CHECK_EQ(kvmux_aof_load(p, s, 1, &info, err, sizeof err), -1); /* even with repair */
    CHECK(strstr(err, "log format '9'") != NULL);
    CHECK_EQ(file_size(p), size);
    CHECK(magic_is(p, "KVMXAOF9"));
    kvmux_store_free(s);

    path_for(p, sizeof p, "v2-upgrade.aof");
    f = fopen(p, "wb");
    REQUIRE(f);
    fwrite(KVMUX_AOF_MAGIC_V2, 1, KVMUX_AOF_MAGIC_LEN, f);
    put_rec(f, KVMUX_STORE_REC_SET, 5, wall_ms() + 60000, "a", "1");
    fclose(f);
    s = new_store();
    kvmux_aof *a = open_log(p, s, KVMUX_FSYNC_ALWAYS, 0);
    CHECK(magic_is(p, KVMUX_AOF_MAGIC));
    uint64_t v = 0;
    CHECK_EQ(kvmux_store_persist(s, (const uint8_t *)"a", 1, &v), KVMUX_STATUS_OK);
    wait_durable(a);
    kvmux_aof_close(a);
    kvmux_store_free(s);
    s = new_store();
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    CHECK_EQ(info.format, 3);
    CHECK_EQ(info.records, 2);
    got g;
    CHECK_EQ(get(s, "a", &g), KVMUX_STATUS_OK);
    CHECK_EQ(g.version, v);
    CHECK_EQ(ttl_of(s, "a"), 0);
    kvmux_store_free(s);
}

/* A compaction while EXPIRE and PERSIST run: the snapshot's SET records
 * and the EXPIRY records logged after it replay to the same TTLs. */
static void test_expiry_compaction(void) {
    char p[300];
    path_for(p, sizeof p, "expiry-compact.aof");
    unlink(p);
    kvmux_store *s = new_store();
    kvmux_aof *a = open_log(p, s, KVMUX_FSYNC_NO, 0);
    for (int i = 0; i < 200; i++) {
        char key[16];
        snprintf(key, sizeof key, "c%d", i);
        kvmux_store_set(s, (const uint8_t *)key, strlen(key), (const uint8_t *)"v", 1, 0, NULL);
    }
    CHECK_EQ(kvmux_aof_rewrite(a), 0);
    for (int i = 0; i < 200; i++) { /* during and after the snapshot */
        char key[16];
        snprintf(key, sizeof key, "c%d", i);
        /* 1 ms only where it must expire: a slow run (TSan) must not
         * expire a key before its PERSIST. */
        uint64_t ttl = i % 4 == 2 ? 1 : 3600000;
        kvmux_store_expire(s, (const uint8_t *)key, strlen(key), ttl, NULL);
        if (i % 4 == 0) kvmux_store_persist(s, (const uint8_t *)key, strlen(key), NULL);
    }
    kvmux_aof_stats st;
    for (int i = 0; i < 500; i++) {
        kvmux_aof_get_stats(a, &st);
        if (st.rewrites >= 1 && !st.rewriting) break;
        test_sleep_ms(10);
    }
    CHECK_EQ(st.rewrites, 1);
    wait_durable(a);
    kvmux_aof_close(a);
    kvmux_store_free(s);
    test_sleep_ms(5); /* the 1 ms TTLs that were not persisted have passed */
    s = new_store();
    kvmux_aof_load_info info;
    char err[512] = "";
    CHECK_EQ(kvmux_aof_load(p, s, 0, &info, err, sizeof err), 0);
    int ok = 0;
    for (int i = 0; i < 200; i++) {
        char key[16];
        snprintf(key, sizeof key, "c%d", i);
        uint64_t left = ttl_of(s, key);
        if (i % 4 == 0) ok += left == 0;                        /* persisted */
        else if (i % 2) ok += left > 3500000 && left != UINT64_MAX; /* 1 h */
        else ok += left == UINT64_MAX;                          /* expired */
    }
    CHECK_EQ(ok, 200);
    kvmux_store_free(s);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/kvmux-aof-test-XXXXXX");
    REQUIRE(mkdtemp(dir));
    test_crc();
    test_replay();
    test_torn_tail();
    test_corrupt();
    test_journal_roundtrip();
    test_compaction();
    test_v1_load();
    test_v1_length_past_eof();
    test_v1_short_tail();
    test_v1_convert();
    test_expiry_journal();
    test_expiry_replay();
    test_expiry_format();
    test_expiry_compaction();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_report();
}
