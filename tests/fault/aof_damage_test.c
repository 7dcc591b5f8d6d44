/* A damaged append-only log never loses an acknowledged record silently.
 *
 * A 1000-record log is written through the real writer (kvmux_aof_open,
 * store writes, the writer thread), then:
 * - every bit of every record-header field of every record is flipped in
 *   turn and the log loaded in-process: each case must be refused with
 *   the damaged record's offset, and the file left byte-identical;
 * - the log is cut at every byte of its last 3 records: each case must
 *   load the exact prefix of whole records (count, keys, values,
 *   versions) and leave the file cut at the last whole record;
 * - a few of those cases go through a real kvmuxd: exit 1, the offset in
 *   the message, the file byte-identical; a torn one starts.
 * A load that succeeds without every record it should hold is counted as
 * a silent loss; the test requires 0. The counts are printed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aof.h"
#include "store.h"
#include "testutil.h"

#define NREC 1000
#define TORN_RECS 3

static char dir[256];
static char logpath[300];
static uint8_t *orig;       /* the intact log */
static size_t orig_len;
static uint64_t offs[NREC + 1]; /* record i starts at offs[i]; offs[NREC] = EOF */

static void key_of(int i, char *k, size_t n) { snprintf(k, n, "dmg:%04d", i); }
/* Values of varied length (0..40 bytes), so records differ in size. */
static size_t val_of(int i, char *v, size_t n) {
    size_t len = (size_t)(i * 7 % 41);
    for (size_t j = 0; j < len && j < n; j++) v[j] = (char)('a' + (i + j) % 26);
    return len;
}

static uint8_t *read_file(const char *p, size_t *len) {
    FILE *f = fopen(p, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    REQUIRE(b);
    REQUIRE(fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void write_file(const char *p, const uint8_t *b, size_t len) {
    FILE *f = fopen(p, "wb");
    REQUIRE(f);
    REQUIRE(fwrite(b, 1, len, f) == len);
    fclose(f);
}

/* 1 if p holds exactly b[0..len). */
static int file_is(const char *p, const uint8_t *b, size_t len) {
    size_t n;
    uint8_t *c = read_file(p, &n);
    int same = n == len && memcmp(c, b, len) == 0;
    free(c);
    return same;
}

/* Write the log with the real writer: NREC SETs of distinct keys. Runs
 * in a child process, so this one stays single-threaded: a munmap in a
 * process whose threads ran on several CPUs costs TLB-shootdown IPIs. */
static void write_log_child(void) {
    kvmux_store *s = NULL;
    REQUIRE(kvmux_store_new(&s, NULL) == 0);
    kvmux_aof_options o;
    kvmux_aof_options_init(&o);
    o.path = logpath;
    o.fsync = KVMUX_FSYNC_NO; /* the test is about the format, not fsync */
    kvmux_aof *a = NULL;
    char err[512];
    REQUIRE(kvmux_aof_open(&a, &o, s, err, sizeof err) == 0);
    for (int i = 0; i < NREC; i++) {
        char k[32], v[64];
        key_of(i, k, sizeof k);
        size_t vl = val_of(i, v, sizeof v);
        uint64_t ver = 0;
        REQUIRE(kvmux_store_set(s, (const uint8_t *)k, strlen(k), (const uint8_t *)v, vl, 0,
                                &ver) == KVMUX_STATUS_OK);
        REQUIRE(ver == (uint64_t)i + 1);
    }
    kvmux_aof_close(a);
    kvmux_store_free(s);
}

static void build_log(void) {
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        write_log_child();
        _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    orig = read_file(logpath, &orig_len);
    /* Record boundaries, from the format (aof.h): a record is a header
     * whose first field is the body length, then the body. */
    uint64_t off = KVMUX_AOF_MAGIC_LEN;
    for (int i = 0; i < NREC; i++) {
        REQUIRE(off + KVMUX_AOF_REC_HDR <= orig_len);
        offs[i] = off;
        uint32_t blen = (uint32_t)orig[off] | (uint32_t)orig[off + 1] << 8 |
                        (uint32_t)orig[off + 2] << 16 | (uint32_t)orig[off + 3] << 24;
        off += KVMUX_AOF_REC_HDR + blen;
    }
    REQUIRE(off == orig_len);
    offs[NREC] = off;
    printf("log: %d records, %zu bytes, header %u bytes\n", NREC, orig_len,
           (unsigned)KVMUX_AOF_REC_HDR);
}

typedef struct got {
    uint64_t version;
    size_t len;
    char val[64];
} got;

static int read_cb(void *ud, uint64_t version, const uint8_t *v, size_t len) {
    got *g = ud;
    g->version = version;
    g->len = len < sizeof g->val ? len : sizeof g->val;
    if (len) memcpy(g->val, v, g->len);
    return 0;
}

/* 1 if s holds exactly records 0..n-1: those keys with their values and
 * versions, and none of the others. */
static int holds_prefix(kvmux_store *s, int n) {
    kvmux_store_stats st;
    kvmux_store_get_stats(s, &st);
    if (st.keys != (uint64_t)n) return 0;
    for (int i = 0; i < NREC; i++) {
        char k[32], v[64];
        key_of(i, k, sizeof k);
        size_t vl = val_of(i, v, sizeof v);
        got g = {0, 0, {0}};
        int rc = kvmux_store_get(s, (const uint8_t *)k, strlen(k), read_cb, &g);
        if (i < n && (rc != KVMUX_STATUS_OK || g.version != (uint64_t)i + 1 || g.len != vl ||
                      memcmp(g.val, v, vl) != 0))
            return 0;
        if (i >= n && rc != KVMUX_STATUS_NOT_FOUND) return 0;
    }
    return 1;
}

static kvmux_store *small_store(void) {
    kvmux_store_options so;
    kvmux_store_options_init(&so);
    so.shards = 4; /* thousands of loads: keep each store cheap */
    kvmux_store *s = NULL;
    REQUIRE(kvmux_store_new(&s, &so) == 0);
    return s;
}

static struct {
    uint64_t tried, refused, refused_wrong_offset, loaded_complete, silent_loss, modified;
    uint64_t torn_tried, torn_recovered, torn_wrong;
} n;

/* Every bit of every header field of every record, flipped in place. */
static void flip_all(void) {
    write_file(logpath, orig, orig_len);
    uint8_t *want = malloc(orig_len);
    REQUIRE(want);
    memcpy(want, orig, orig_len);
    int fd = open(logpath, O_RDWR);
    REQUIRE(fd >= 0);
    /* Loads are deterministic: a refused one may run on a store that
     * earlier loads filled (what it holds is never looked at), a load
     * that succeeds is repeated on a fresh store to see what it kept. */
    kvmux_store *scratch = small_store();
    for (int i = 0; i < NREC; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "offset %llu ", (unsigned long long)offs[i]);
        for (unsigned bit = 0; bit < KVMUX_AOF_REC_HDR * 8; bit++) {
            uint64_t at = offs[i] + bit / 8;
            want[at] ^= (uint8_t)(1u << (bit % 8));
            REQUIRE(pwrite(fd, want + at, 1, (off_t)at) == 1);
            kvmux_aof_load_info info;
            char err[1024] = "";
            int rc = kvmux_aof_load(logpath, scratch, 0, &info, err, sizeof err);
            kvmux_store *s = NULL;
            if (rc == 0) {
                s = small_store();
                rc = kvmux_aof_load(logpath, s, 0, &info, err, sizeof err);
            }
            n.tried++;
            if (rc != 0) {
                if (strstr(err, needle)) {
                    n.refused++;
                } else {
                    n.refused_wrong_offset++;
                    if (n.refused_wrong_offset <= 3)
                        fprintf(stderr, "record %d bit %u: refused at the wrong place: %s\n",
                                i, bit, err);
                }
            } else if (info.records == NREC && holds_prefix(s, NREC)) {
                n.loaded_complete++;
            } else {
                n.silent_loss++;
                if (n.silent_loss <= 3)
                    fprintf(stderr, "record %d bit %u: SILENT LOSS: loaded %llu of %d "
                            "records, %llu bytes dropped\n", i, bit,
                            (unsigned long long)info.records, NREC,
                            (unsigned long long)info.dropped_bytes);
            }
            if (s) kvmux_store_free(s);
            struct stat sb;
            REQUIRE(fstat(fd, &sb) == 0);
            /* Byte-identical: the size, and the one byte a load could
             * have rewritten is still the flipped one (a full compare
             * runs every 97th case and at the end). */
            uint8_t b = 0;
            int same = (size_t)sb.st_size == orig_len && pread(fd, &b, 1, (off_t)at) == 1 &&
                       b == want[at];
            if (same && n.tried % 97 == 0) same = file_is(logpath, want, orig_len);
            if (!same) {
                n.modified++;
                write_file(logpath, want, orig_len); /* fd still names the file */
            }
            want[at] ^= (uint8_t)(1u << (bit % 8));
            REQUIRE(pwrite(fd, want + at, 1, (off_t)at) == 1);
        }
    }
    close(fd);
    kvmux_store_free(scratch);
    CHECK(file_is(logpath, orig, orig_len));
    free(want);
}

/* Cut the log at every byte of its last TORN_RECS records. */
static void truncate_all(void) {
    for (int r = NREC - TORN_RECS; r < NREC; r++) {
        for (uint64_t cut = offs[r]; cut < offs[r + 1]; cut++) {
            write_file(logpath, orig, (size_t)cut);
            kvmux_store *s = small_store();
            kvmux_aof_load_info info;
            char err[1024] = "";
            int rc = kvmux_aof_load(logpath, s, 0, &info, err, sizeof err);
            struct stat sb;
            REQUIRE(stat(logpath, &sb) == 0);
            n.torn_tried++;
            /* Records 0..r-1 are whole; r is cut (or absent, at cut ==
             * offs[r]): the exact prefix, and the file ends after r-1. */
            if (rc == 0 && info.records == (uint64_t)r && holds_prefix(s, r) &&
                (uint64_t)sb.st_size == offs[r] && info.dropped_bytes == cut - offs[r]) {
                n.torn_recovered++;
            } else {
                n.torn_wrong++;
                if (n.torn_wrong <= 3)
                    fprintf(stderr, "cut at %llu (record %d): rc %d, %llu records, size %lld: "
                            "%s\n", (unsigned long long)cut, r, rc,
                            (unsigned long long)info.records, (long long)sb.st_size, err);
            }
            kvmux_store_free(s);
        }
    }
}

/* Run kvmuxd on the log expecting it to exit; its exit status (-1 if it
 * had to be killed) and its stderr in out. */
static int run_kvmuxd(char *out, size_t cap) {
    const char *argv[] = {KVMUXD_PATH, "--bind", "127.0.0.1", "--port", "0", "--aof",
                          logpath, NULL};
    return test_run(argv, NULL, NULL, NULL, 0, out, cap, 10000);
}

/* A few damaged logs through a real kvmuxd: exit 1, the offset in the
 * message, the file byte-identical. */
static void through_kvmuxd(void) {
    /* (record, bit of the header) pairs: the length of the first record
     * (bit 20: byte 10 bit 4 of the file, the length now points past the
     * end), a length bit in the middle, the last record's two checksums. */
    static const struct { int rec; unsigned bit; } cases[] = {
        {0, 20}, {NREC / 2, 3}, {NREC - 1, 40}, {NREC - 1, KVMUX_AOF_REC_HDR * 8 - 1},
    };
    uint8_t *bad = malloc(orig_len);
    REQUIRE(bad);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(bad, orig, orig_len);
        uint64_t at = offs[cases[c].rec] + cases[c].bit / 8;
        bad[at] ^= (uint8_t)(1u << (cases[c].bit % 8));
        write_file(logpath, bad, orig_len);
        char out[8192], want[96];
        int st = run_kvmuxd(out, sizeof out);
        snprintf(want, sizeof want, "corrupt record at offset %llu ",
                 (unsigned long long)offs[cases[c].rec]);
        CHECK_EQ(st, 1);
        CHECK(strstr(out, want) != NULL);
        CHECK(file_is(logpath, bad, orig_len));
        if (st != 1 || !strstr(out, want))
            fprintf(stderr, "kvmuxd (record %d bit %u) exited %d: %s\n", cases[c].rec,
                    cases[c].bit, st, out);
        else if (c == 0)
            printf("kvmuxd refused: %.*s\n", (int)strcspn(out, "\n"), out);
    }
    /* A torn last record: kvmuxd starts, the file ends at the last whole
     * record. */
    uint64_t cut = offs[NREC - 1] + 5;
    write_file(logpath, orig, (size_t)cut);
    const char *args[] = {"--aof", logpath, NULL};
    test_server s;
    REQUIRE(test_server_start(&s, args) == 0);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    CHECK(file_is(logpath, orig, (size_t)offs[NREC - 1]));
    free(bad);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/kvmux-aof-damage-XXXXXX");
    REQUIRE(mkdtemp(dir));
    snprintf(logpath, sizeof logpath, "%s/log.aof", dir);
    int64_t t0 = test_now_ms();
    build_log();
    flip_all();
    truncate_all();
    int64_t t1 = test_now_ms();
    printf("header bit flips: %llu cases tried, %llu refused with their offset, "
           "%llu refused at a wrong offset, %llu loaded complete, %llu SILENT LOSSES, "
           "%llu files modified\n", (unsigned long long)n.tried,
           (unsigned long long)n.refused, (unsigned long long)n.refused_wrong_offset,
           (unsigned long long)n.loaded_complete, (unsigned long long)n.silent_loss,
           (unsigned long long)n.modified);
    printf("truncations in the last %d records: %llu cases tried, %llu recovered to the "
           "exact prefix, %llu not\n", TORN_RECS, (unsigned long long)n.torn_tried,
           (unsigned long long)n.torn_recovered, (unsigned long long)n.torn_wrong);
    printf("in-process part: %lld ms\n", (long long)(t1 - t0));
    CHECK_EQ(n.tried, (uint64_t)NREC * KVMUX_AOF_REC_HDR * 8);
    CHECK_EQ(n.silent_loss, 0);
    CHECK_EQ(n.refused_wrong_offset, 0);
    CHECK_EQ(n.modified, 0);
    CHECK_EQ(n.refused, n.tried); /* every header bit is covered by a checksum */
    CHECK_EQ(n.torn_wrong, 0);
    CHECK_EQ(n.torn_recovered, n.torn_tried);
    CHECK(n.torn_tried == offs[NREC] - offs[NREC - TORN_RECS]);
    through_kvmuxd();
    free(orig);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_report();
}
