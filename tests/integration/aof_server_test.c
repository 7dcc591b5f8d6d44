/* kvmuxd persistence and memory limits, end to end: a real kvmuxd child,
 * raw protocol-v2 sockets (server_v2_util.h), a real log file.
 *
 * - SET / INCR / CAS / DEL / TTL survive a graceful stop and a kill -9,
 *   with the same versions; new versions resume above the log's.
 * - A pipelined burst under --fsync always is fully acknowledged and
 *   fully present after kill -9 (one connection, many requests in flight).
 * - A corrupt record stops the start with its offset; --aof-repair starts.
 * - --maxmemory noeviction answers OUT_OF_MEMORY "OOM ..." (v2); allkeys-lru evicts and
 *   keeps accepting; DEL is allowed while over the limit.
 * - Active expiry: keys with a TTL nobody reads disappear: a server full
 *   under noeviction accepts writes again without any read. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

static char dir[256];
static char logpath[300];

typedef v2_resp resp;

static uint32_t next_id = 1;

/* One request, one response (skipping anything else). Returns 0 or -1. */
static int call(v2conn *c, uint8_t op, const char *key, const void *extras, uint8_t elen,
                const void *val, uint32_t vlen, resp *r) {
    return v2_call(c, &next_id, op, key, extras, elen, val, vlen, r);
}

static int set_ttl(v2conn *c, const char *key, const char *val, uint64_t ttl, resp *r) {
    uint8_t e[8];
    kvmux_store_u64be(e, ttl);
    return call(c, KVMUX_OP_SET, key, e, 8, val, (uint32_t)strlen(val), r);
}
static int set(v2conn *c, const char *key, const char *val, resp *r) {
    return set_ttl(c, key, val, 0, r);
}
static int get(v2conn *c, const char *key, resp *r) {
    return call(c, KVMUX_OP_GET, key, NULL, 0, NULL, 0, r);
}

static void start(test_server *s, const char *const *extra) {
    const char *args[24];
    int n = 0;
    args[n++] = "--aof";
    args[n++] = logpath;
    for (int i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    v2_start_server(s, args);
}

static void connect_to(v2conn *c, const test_server *s) {
    REQUIRE(v2_connect(c, s->port, KVMUX_PROTO_VERSION_MAX, NULL) >= 0);
}

/* Start kvmuxd on the log (start) and connect c to it. */
static void start_connected(test_server *s, v2conn *c, const char *const *extra) {
    start(s, extra);
    connect_to(c, s);
}

/* start_connected on an empty log (the previous scenario's removed). */
static void start_fresh(test_server *s, v2conn *c, const char *const *extra) {
    unlink(logpath);
    start_connected(s, c, extra);
}

/* --maxmemory 200K under the default policy (noeviction), --fsync no. */
static const char *const noeviction_200k[] = {"--maxmemory", "200K", "--fsync", "no", NULL};

/* kill -9 with c aborted (RST), then the same as start_connected: what
 * the restarted server holds is what the log held at the kill. */
static void kill_and_restart(test_server *s, v2conn *c, const char *const *extra) {
    v2_close(c, 1);
    test_server_kill(s);
    start_connected(s, c, extra);
}

/* How many of the keys "<prefix>0" .. "<prefix>n-1" GET answers OK (and,
 * when value_is_key, with the key as its value). */
static int count_present(v2conn *c, const char *prefix, int n, int value_is_key) {
    int present = 0;
    resp r;
    for (int i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof k, "%s%d", prefix, i);
        if (get(c, k, &r) == 0 && r.status == KVMUX_STATUS_OK &&
            (!value_is_key || strcmp(r.val, k) == 0))
            present++;
    }
    return present;
}

/* Run kvmuxd expecting it to exit; returns the exit status and its stderr. */
static int run_expect_exit(const char *const *extra, char *out, size_t cap) {
    const char *argv[24] = {KVMUXD_PATH, "--port", "0", "--aof", logpath};
    int n = 5;
    for (int i = 0; extra && extra[i] && n < 23; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    return test_run(argv, NULL, NULL, NULL, 0, out, cap, 10000);
}

static void test_restart(void) {
    test_server s;
    v2conn c;
    start_fresh(&s, &c, NULL);
    resp r, a1, n1, cas, t1;
    REQUIRE(set(&c, "a", "hello", &a1) == 0);
    CHECK_EQ(a1.status, KVMUX_STATUS_OK);
    uint8_t d[8];
    kvmux_store_u64be(d, 5);
    CHECK(call(&c, KVMUX_OP_INCR, "n", d, 8, NULL, 0, &r) == 0 && r.num == 5);
    CHECK(call(&c, KVMUX_OP_INCR, "n", d, 8, NULL, 0, &n1) == 0 && n1.num == 10);
    REQUIRE(set(&c, "c", "old", &r) == 0);
    uint8_t ce[16];
    kvmux_store_u64be(ce, r.version);
    kvmux_store_u64be(ce + 8, 0);
    CHECK(call(&c, KVMUX_OP_CAS, "c", ce, 16, "new", 3, &cas) == 0);
    CHECK_EQ(cas.status, KVMUX_STATUS_OK);
    REQUIRE(set_ttl(&c, "t", "ttl", 3600000, &t1) == 0);
    REQUIRE(set_ttl(&c, "short", "x", 300, &r) == 0);
    REQUIRE(set(&c, "x", "doomed", &r) == 0);
    CHECK(call(&c, KVMUX_OP_DEL, "x", NULL, 0, NULL, 0, &r) == 0 && r.status == KVMUX_STATUS_OK);
    uint64_t maxv = r.version > t1.version ? r.version : t1.version;
    v2_close_and_stop(&c, &s, 5000);

    test_sleep_ms(350); /* "short" expires while the server is down */
    start_connected(&s, &c, NULL);
    CHECK(get(&c, "a", &r) == 0 && r.status == KVMUX_STATUS_OK && strcmp(r.val, "hello") == 0);
    CHECK_EQ(r.version, a1.version);
    CHECK(get(&c, "n", &r) == 0 && strcmp(r.val, "10") == 0);
    CHECK_EQ(r.version, n1.version);
    CHECK(get(&c, "c", &r) == 0 && strcmp(r.val, "new") == 0);
    CHECK_EQ(r.version, cas.version);
    CHECK(get(&c, "t", &r) == 0 && r.status == KVMUX_STATUS_OK);
    CHECK(get(&c, "short", &r) == 0 && r.status == KVMUX_STATUS_NOT_FOUND);
    CHECK(get(&c, "x", &r) == 0 && r.status == KVMUX_STATUS_NOT_FOUND);
    /* Versions resume above the log. */
    CHECK(set(&c, "fresh", "1", &r) == 0);
    CHECK(r.version > maxv);
    CHECK(r.version > cas.version);

    /* kill -9 right after acknowledged writes: all present. */
    for (int i = 0; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof k, "k9:%d", i);
        CHECK(set(&c, k, k, &r) == 0 && r.status == KVMUX_STATUS_OK);
    }
    kill_and_restart(&s, &c, NULL);
    CHECK_EQ(count_present(&c, "k9:", 50, 1), 50);
    CHECK(get(&c, "a", &r) == 0 && strcmp(r.val, "hello") == 0);
    v2_close_and_stop(&c, &s, 5000);
}

/* Many SETs in flight on one connection: all acknowledged (in some
 * order), all there after kill -9. */
static void test_pipelined_burst(const char *policy) {
    test_server s;
    const char *extra[] = {"--fsync", policy, NULL};
    v2conn c;
    start_fresh(&s, &c, extra);
    enum { N = 500 };
    uint8_t ttl[8] = {0};
    int64_t t0 = test_now_ms();
    for (int i = 0; i < N; i++) {
        char k[32];
        snprintf(k, sizeof k, "burst:%d", i);
        REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, 0, 10000 + (uint32_t)i, KVMUX_OP_SET, ttl, 8,
                        k, (uint16_t)strlen(k), k, (uint32_t)strlen(k), 0, 0) == 0);
    }
    int acked = 0;
    for (int i = 0; i < 4 * N && acked < N; i++) {
        kvmux_frame f;
        if (v2_read(&c, &f, 10000) != 1) break;
        if (f.type == KVMUX_FRAME_RESPONSE && f.code == KVMUX_STATUS_OK) acked++;
    }
    CHECK_EQ(acked, N);
    int64_t ms = test_now_ms() - t0;
    /* always: kill at once, the acks promise the disk. everysec: acks
     * came before the log write; the writer thread writes at once, so
     * after a moment everything is in the file (page cache). */
    if (strcmp(policy, "always") != 0) test_sleep_ms(100);
    fprintf(stderr, "fsync %s: %d pipelined SETs acknowledged in %lld ms\n", policy, N,
            (long long)ms);
    kill_and_restart(&s, &c, extra);
    /* kill -9 keeps the page cache: what was written survives. */
    CHECK_EQ(count_present(&c, "burst:", N, 0), N);
    v2_close_and_stop(&c, &s, 5000);
}

static void test_corrupt_start(void) {
    test_server s;
    v2conn c;
    start_fresh(&s, &c, NULL);
    resp r;
    for (int i = 0; i < 10; i++) {
        char k[32];
        snprintf(k, sizeof k, "cor:%d", i);
        CHECK(set(&c, k, "0123456789", &r) == 0);
    }
    v2_close_and_stop(&c, &s, 5000);
    struct stat sb;
    REQUIRE(stat(logpath, &sb) == 0);
    /* Records are 12 + 23 + 5 + 10 = 50 bytes after the 8-byte magic:
     * damage the value of the 4th (index 3). */
    off_t rec = 8 + 3 * 50;
    int fd = open(logpath, O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, "X", 1, rec + 40) == 1);
    close(fd);
    char out[8192];
    int st = run_expect_exit(NULL, out, sizeof out);
    CHECK(st != 0);
    char want[64];
    snprintf(want, sizeof want, "corrupt record at offset %lld", (long long)rec);
    CHECK(strstr(out, want) != NULL);
    if (!strstr(out, want)) fprintf(stderr, "kvmuxd said: %s\n", out);
    struct stat sb2;
    CHECK(stat(logpath, &sb2) == 0 && sb2.st_size == sb.st_size); /* untouched */

    const char *repair[] = {"--aof-repair", NULL};
    start_connected(&s, &c, repair);
    CHECK(get(&c, "cor:2", &r) == 0 && r.status == KVMUX_STATUS_OK);
    CHECK(get(&c, "cor:3", &r) == 0 && r.status == KVMUX_STATUS_NOT_FOUND);
    CHECK(get(&c, "cor:9", &r) == 0 && r.status == KVMUX_STATUS_NOT_FOUND);
    v2_close_and_stop(&c, &s, 5000);

    /* A torn tail is truncated and the server starts. */
    REQUIRE(stat(logpath, &sb) == 0);
    fd = open(logpath, O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "\x2e\0\0\0\1\2\3\4abc", 11) == 11);
    close(fd);
    start(&s, NULL);
    CHECK_EQ(test_server_stop(&s, 5000), 0);
    REQUIRE(stat(logpath, &sb2) == 0);
    CHECK_EQ(sb2.st_size, sb.st_size);

    const char *bad[] = {"--fsync", "sometimes", NULL};
    CHECK_EQ(run_expect_exit(bad, out, sizeof out), 2);
    CHECK(strstr(out, "--fsync") != NULL);
}

static void test_maxmemory(void) {
    test_server s;
    v2conn c;
    start_fresh(&s, &c, noeviction_200k);
    static char big[1001];
    memset(big, 'v', 1000);
    resp r;
    int i = 0, refused = 0;
    for (; i < 1000; i++) {
        char k[32];
        snprintf(k, sizeof k, "mem:%d", i);
        REQUIRE(set(&c, k, big, &r) == 0);
        if (r.status != KVMUX_STATUS_OK) {
            refused = 1;
            break;
        }
    }
    CHECK(refused);
    CHECK(i > 150 && i < 210);
    CHECK_EQ(r.status, KVMUX_STATUS_OUT_OF_MEMORY);
    CHECK(strstr(r.val, "OOM") != NULL);
    /* Reads go on; DEL is allowed and makes room. */
    CHECK(get(&c, "mem:0", &r) == 0 && r.status == KVMUX_STATUS_OK);
    for (int k = 0; k < 5; k++) {
        char key[32];
        snprintf(key, sizeof key, "mem:%d", k);
        CHECK(call(&c, KVMUX_OP_DEL, key, NULL, 0, NULL, 0, &r) == 0 &&
              r.status == KVMUX_STATUS_OK);
    }
    CHECK(set(&c, "after-del", big, &r) == 0 && r.status == KVMUX_STATUS_OK);
    v2_close_and_stop(&c, &s, 5000);

    const char *lru[] = {"--maxmemory", "200K", "--maxmemory-policy", "allkeys-lru",
                         "--fsync", "no", NULL};
    start_fresh(&s, &c, lru);
    int ok = 0;
    for (i = 0; i < 1000; i++) {
        char k[32];
        snprintf(k, sizeof k, "lru:%d", i);
        if (set(&c, k, big, &r) == 0 && r.status == KVMUX_STATUS_OK) ok++;
        else if (ok + 1 == i) fprintf(stderr, "lru refused at %d: %u %s\n", i, r.status, r.val);
    }
    CHECK_EQ(ok, 1000);
    int present = count_present(&c, "lru:", 1000, 0);
    CHECK(present > 100 && present < 210);
    CHECK(get(&c, "lru:999", &r) == 0 && r.status == KVMUX_STATUS_OK);
    v2_close(&c, 1);
    /* Evictions are logged as DEL: after kill -9 the same keys are gone
     * (--fsync no: give the writer thread a moment to write the log). */
    test_sleep_ms(100);
    test_server_kill(&s);
    start_connected(&s, &c, lru);
    int present2 = count_present(&c, "lru:", 1000, 0);
    CHECK(present2 <= present);
    CHECK(present2 >= present - 5);
    fprintf(stderr, "allkeys-lru: 1000 x 1 KB under 200K: %d kept, %d after restart\n",
            present, present2);
    v2_close_and_stop(&c, &s, 5000);
}

/* Active expiry: with noeviction at a limit, keys with a short TTL that
 * nobody reads are removed by the cycle, so writes are accepted again
 * without any read touching them. */
static void test_active_expiry(void) {
    test_server s;
    v2conn c;
    start_fresh(&s, &c, noeviction_200k);
    static char big[1001];
    memset(big, 'e', 1000);
    resp r;
    int i;
    for (i = 0; i < 1000; i++) {
        char k[32];
        snprintf(k, sizeof k, "exp:%d", i);
        REQUIRE(set_ttl(&c, k, big, 200, &r) == 0);
        if (r.status != KVMUX_STATUS_OK) break;
    }
    CHECK_EQ(r.status, KVMUX_STATUS_OUT_OF_MEMORY);
    int64_t t0 = test_now_ms();
    int accepted = 0;
    while (test_now_ms() - t0 < 3000) {
        test_sleep_ms(50);
        if (set(&c, "probe", "1", &r) == 0 && r.status == KVMUX_STATUS_OK) {
            accepted = 1;
            break;
        }
    }
    CHECK(accepted);
    fprintf(stderr, "active expiry freed memory %lld ms after the write was refused\n",
            (long long)(test_now_ms() - t0));
    v2_close_and_stop(&c, &s, 5000);
}

/* The log's disk fills up (RLIMIT_FSIZE, inherited by kvmuxd, makes its
 * write fail with EFBIG; SIGXFSZ ignored is inherited too): from the first
 * failure on, writes are answered INTERNAL and never acknowledged; reads
 * go on; after a restart every write acknowledged OK is there. */
static void test_io_error(void) {
    unlink(logpath);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    test_server s;
    start(&s, NULL);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    v2conn c;
    connect_to(&c, &s);
    static char val[1001];
    memset(val, 'f', 1000);
    resp r;
    int ok = 0, internal = 0, other = 0;
    for (int i = 0; i < 200; i++) {
        char k[32];
        snprintf(k, sizeof k, "io:%d", i);
        REQUIRE(set(&c, k, val, &r) == 0);
        if (r.status == KVMUX_STATUS_OK) {
            if (internal) other++; /* an ack after a failure: never allowed */
            else ok++;
        } else if (r.status == KVMUX_STATUS_INTERNAL) {
            internal++;
        } else {
            other++;
        }
    }
    fprintf(stderr, "log write failure: %d writes acknowledged, then %d refused INTERNAL\n",
            ok, internal);
    CHECK(ok > 30 && ok < 70);
    CHECK(internal > 100);
    CHECK_EQ(other, 0);
    CHECK(strstr(r.val, "append-only log") != NULL);
    CHECK(get(&c, "io:0", &r) == 0 && r.status == KVMUX_STATUS_OK); /* reads work */
    v2_close(&c, 0);
    test_server_stop(&s, 5000);
    signal(SIGXFSZ, SIG_DFL);
    /* Restart with no limit: every acknowledged write is there. */
    start_connected(&s, &c, NULL);
    CHECK_EQ(count_present(&c, "io:", ok, 0), ok);
    v2_close_and_stop(&c, &s, 5000);
}

/* SIGTERM with writes in flight (v1: DRAINING; v2: GOAWAY): every answer
 * is OK or SHUTTING_DOWN (not processed), and every OK is there after the
 * restart. Held acknowledgments are released before the connection ends. */
static void test_sigterm_inflight(int version) {
    unlink(logpath);
    test_server s;
    start(&s, NULL);
    v2conn c;
    REQUIRE(v2_connect(&c, s.port, version, NULL) >= 0);
    enum { N = 300 };
    uint8_t ttl[8] = {0};
    for (int i = 0; i < N; i++) {
        char k[32];
        snprintf(k, sizeof k, "term:%d", i);
        REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, 0, 1 + (uint32_t)i, KVMUX_OP_SET, ttl, 8, k,
                        (uint16_t)strlen(k), k, (uint32_t)strlen(k), 0, 0) == 0);
    }
    kill(s.pid, SIGTERM);
    static uint8_t ok[N + 1];
    memset(ok, 0, sizeof ok);
    int nok = 0, nshut = 0, nother = 0, responses = 0;
    for (int i = 0; i < 4 * N; i++) {
        kvmux_frame f;
        if (v2_read(&c, &f, 5000) != 1) break;
        if (f.type != KVMUX_FRAME_RESPONSE) continue;
        responses++;
        if (f.code == KVMUX_STATUS_OK && f.request_id >= 1 && f.request_id <= N) {
            ok[f.request_id] = 1;
            nok++;
        } else if (f.code == KVMUX_STATUS_SHUTTING_DOWN) {
            nshut++;
        } else {
            nother++;
        }
    }
    v2_close_and_stop(&c, &s, 10000);
    fprintf(stderr, "SIGTERM with %d SETs in flight (v%d): %d OK, %d SHUTTING_DOWN, "
            "%d other, %d unanswered\n", N, version, nok, nshut, nother, N - responses);
    CHECK_EQ(nother, 0);
    /* (Requests the server had not read when it stopped reading are
     * unanswered: the connection ends with ERROR SHUTTING_DOWN.) */
    start_connected(&s, &c, NULL);
    int present = 0;
    resp r;
    for (int i = 1; i <= N; i++) {
        if (!ok[i]) continue;
        char k[32];
        snprintf(k, sizeof k, "term:%d", i - 1);
        if (get(&c, k, &r) == 0 && r.status == KVMUX_STATUS_OK) present++;
    }
    CHECK_EQ(present, nok);
    v2_close_and_stop(&c, &s, 5000);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "/tmp/kvmux-aof-it-XXXXXX");
    REQUIRE(mkdtemp(dir));
    snprintf(logpath, sizeof logpath, "%s/kvmux.aof", dir);
    test_restart();
    test_pipelined_burst("always");
    test_pipelined_burst("everysec");
    test_corrupt_start();
    test_maxmemory();
    test_active_expiry();
    test_io_error();
    test_sigterm_inflight(1);
    test_sigterm_inflight(2);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_report();
}
