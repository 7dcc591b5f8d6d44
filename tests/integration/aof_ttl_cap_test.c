/* The TTL cap (KVMUX_MAX_TTL_MS = 2^53-1 ms) end to end with a real
 * kvmuxd --aof and a real log file:
 *
 * - the client library refuses SET/CAS/EXPIRE with ttl_ms above the cap
 *   with KVMUX_EINVAL before anything is sent (kvmux_set, kvmux_cas,
 *   kvmux_expire, kvmux_call, kvmux_try_call, kvmux_call_async,
 *   kvmux_call_future; the server counts no EXPIRE), and accepts the cap
 *   itself;
 * - over raw protocol-v2 frames, SET with ttl 0, 1 and the cap is accepted
 *   and the cap-TTL key reads back; SET with cap+1, 2^63 and 2^64-1 and CAS
 *   with cap+1 are answered BAD_REQUEST and leave no key (or the old value);
 * - after a graceful stop (SIGTERM), after kill -9 and after a log
 *   compaction plus restart, the ttl-0 and cap-TTL keys are still there
 *   with their values, the ttl-1 key and the refused keys are not. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

static char dir[256];
static char logpath[300];
static uint32_t next_id = 1;

typedef v2_resp resp;

/* One request, one response (skipping anything else). Returns 0 or -1. */
static int call(v2conn *c, uint8_t op, const char *key, const void *extras, uint8_t elen,
                const void *val, uint32_t vlen, resp *r) {
    return v2_call(c, &next_id, op, key, extras, elen, val, vlen, r);
}

/* SET key=key with ttl; returns the status (255 on a transport failure). */
static uint8_t set_ttl(v2conn *c, const char *key, uint64_t ttl) {
    uint8_t e[8];
    kvmux_store_u64be(e, ttl);
    resp r;
    if (call(c, KVMUX_OP_SET, key, e, 8, key, (uint32_t)strlen(key), &r) != 0) return 255;
    return r.status;
}

/* GET: returns the status and copies the value into val (if OK). */
static uint8_t get(v2conn *c, const char *key, char *val, size_t cap) {
    resp r;
    if (call(c, KVMUX_OP_GET, key, NULL, 0, NULL, 0, &r) != 0) return 255;
    if (val) snprintf(val, cap, "%s", r.val);
    return r.status;
}

/* One STATS counter (the prefix filter returns "name value" lines). */
static uint64_t stat_u64(v2conn *c, const char *name) {
    resp r;
    if (call(c, KVMUX_OP_STATS, name, NULL, 0, NULL, 0, &r) != 0) return UINT64_MAX;
    const char *p = strstr(r.val, name);
    if (!p) return UINT64_MAX;
    p += strlen(name);
    while (*p == ' ' || *p == ':' || *p == '=' || *p == '\t') p++;
    return strtoull(p, NULL, 10);
}

static const char *const fsync_always[] = {"--fsync", "always", NULL};

static void start(test_server *s, v2conn *c, const char *const *extra) {
    const char *args[24];
    int n = 0;
    args[n++] = "--aof";
    args[n++] = logpath;
    for (int i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    v2_start_server(s, args);
    REQUIRE(v2_connect(c, s->port, KVMUX_PROTO_VERSION_MAX, NULL) >= 0);
}

static const uint64_t over[] = {KVMUX_MAX_TTL_MS + 1, (uint64_t)1 << 63, UINT64_MAX};
static const char *const over_keys[] = {"over:max+1", "over:2^63", "over:2^64-1"};

/* What every restart must show. when: the phase, for the log. */
static void check_state(v2conn *c, const char *when) {
    char v[512];
    int bad = 0;
    if (get(c, "ttl:0", v, sizeof v) != KVMUX_STATUS_OK || strcmp(v, "ttl:0") != 0) bad |= 1;
    if (get(c, "ttl:max", v, sizeof v) != KVMUX_STATUS_OK || strcmp(v, "ttl:max") != 0) bad |= 2;
    if (get(c, "ttl:1", NULL, 0) != KVMUX_STATUS_NOT_FOUND) bad |= 4;
    for (int i = 0; i < 3; i++)
        if (get(c, over_keys[i], NULL, 0) != KVMUX_STATUS_NOT_FOUND) bad |= 8;
    if (get(c, "cas", v, sizeof v) != KVMUX_STATUS_OK || strcmp(v, "old") != 0) bad |= 16;
    if (get(c, "cas:new", NULL, 0) != KVMUX_STATUS_NOT_FOUND) bad |= 32;
    if (bad) fprintf(stderr, "state wrong %s: mask %d\n", when, bad);
    CHECK_EQ(bad, 0);
}

static int never_called;
static void never_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c, (void)result, (void)reply, (void)ud;
    never_called++;
}

/* The server's requests_expire counter, read through the library. */
static uint64_t expire_requests(kvmux_client *k) {
    kvmux_value *v = NULL;
    if (kvmux_stats(k, "requests_expire", &v, 5000) != 0) return UINT64_MAX;
    uint64_t n = test_stat_value(v->data, v->len, "requests_expire");
    kvmux_value_free(v);
    return n;
}

/* The client library refuses over-cap TTLs locally (every entry point);
 * the cap itself goes. */
static void test_library(uint16_t port) {
    kvmux_client *k = NULL;
    REQUIRE(kvmux_connect(&k, "127.0.0.1", port, NULL) == 0);
    uint64_t ver = 0;
    CHECK_EQ(kvmux_set(k, "lib:exp", 7, "v", 1, 0, &ver, 5000), 0);
    uint64_t expires_before = expire_requests(k);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(kvmux_set(k, "lib:over", 8, "v", 1, over[i], &ver, 5000), KVMUX_EINVAL);
        CHECK_EQ(kvmux_cas(k, "lib:over", 8, 0, "v", 1, over[i], &ver, 5000), KVMUX_EINVAL);
        ver = 77;
        CHECK_EQ(kvmux_expire(k, "lib:exp", 7, over[i], &ver, 5000), KVMUX_EINVAL);
        CHECK_EQ(ver, 0);
    }
    /* The request forms agree: sync, try, callback and future submits. */
    static const kvmux_op ops[] = {KVMUX_SET, KVMUX_CAS, KVMUX_EXPIRE};
    for (int i = 0; i < 3; i++) {
        for (int op = 0; op < 3; op++) {
            kvmux_request rq = {.op = ops[op], .key = op == 2 ? "lib:exp" : "lib:over",
                                .key_len = 8, .value = "v", .value_len = 1,
                                .ttl_ms = over[i]};
            kvmux_reply rep;
            CHECK_EQ(kvmux_call(k, &rq, &rep, 5000), KVMUX_EINVAL);
            CHECK_EQ(kvmux_try_call(k, &rq, &rep, 5000), KVMUX_EINVAL);
            CHECK_EQ(kvmux_call_async(k, &rq, 5000, never_cb, NULL), KVMUX_EINVAL);
            kvmux_future *fu = NULL;
            CHECK_EQ(kvmux_call_future(k, &rq, 5000, &fu), KVMUX_EINVAL);
            CHECK(fu == NULL);
        }
    }
    CHECK_EQ(never_called, 0);
    CHECK_EQ(expire_requests(k), expires_before); /* none reached the server */
    int64_t left = 0;
    CHECK_EQ(kvmux_ttl(k, "lib:exp", 7, &left, 5000), 0);
    CHECK_EQ(left, -1); /* no expiry was set */
    CHECK_EQ(kvmux_expire(k, "lib:exp", 7, KVMUX_MAX_TTL_MS, &ver, 5000), 0);
    CHECK_EQ(kvmux_expire(k, "lib:exp", 7, 0, &ver, 5000), KVMUX_EBADREQ); /* the server's */
    kvmux_value *val = NULL;
    CHECK_EQ(kvmux_get(k, "lib:over", 8, &val, 5000), KVMUX_ENOTFOUND);
    kvmux_value_free(val);
    CHECK_EQ(kvmux_set(k, "lib:max", 7, "v", 1, KVMUX_MAX_TTL_MS, &ver, 5000), 0);
    val = NULL;
    CHECK_EQ(kvmux_get(k, "lib:max", 7, &val, 5000), 0);
    kvmux_value_free(val);
    kvmux_close(k);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "/tmp/kvmux-ttlcap-XXXXXX");
    REQUIRE(mkdtemp(dir));
    snprintf(logpath, sizeof logpath, "%s/kvmux.aof", dir);

    test_server s;
    v2conn c;
    start(&s, &c, fsync_always);
    test_library(s.port);

    CHECK_EQ(set_ttl(&c, "ttl:0", 0), KVMUX_STATUS_OK);
    CHECK_EQ(set_ttl(&c, "ttl:1", 1), KVMUX_STATUS_OK);
    CHECK_EQ(set_ttl(&c, "ttl:max", KVMUX_MAX_TTL_MS), KVMUX_STATUS_OK);
    char v[512];
    CHECK(get(&c, "ttl:max", v, sizeof v) == KVMUX_STATUS_OK && strcmp(v, "ttl:max") == 0);
    CHECK(get(&c, "ttl:0", v, sizeof v) == KVMUX_STATUS_OK && strcmp(v, "ttl:0") == 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(set_ttl(&c, over_keys[i], over[i]), KVMUX_STATUS_BAD_REQUEST);
        CHECK_EQ(get(&c, over_keys[i], NULL, 0), KVMUX_STATUS_NOT_FOUND);
    }
    /* CAS with cap+1: refused, the value and version stay. */
    resp r;
    uint8_t e[8] = {0};
    REQUIRE(call(&c, KVMUX_OP_SET, "cas", e, 8, "old", 3, &r) == 0);
    CHECK_EQ(r.status, KVMUX_STATUS_OK);
    uint64_t cas_ver = r.version;
    uint8_t ce[16];
    kvmux_store_u64be(ce, cas_ver);
    kvmux_store_u64be(ce + 8, KVMUX_MAX_TTL_MS + 1);
    CHECK(call(&c, KVMUX_OP_CAS, "cas", ce, 16, "new", 3, &r) == 0 &&
          r.status == KVMUX_STATUS_BAD_REQUEST);
    kvmux_store_u64be(ce, 0); /* "create if absent", also refused */
    CHECK(call(&c, KVMUX_OP_CAS, "cas:new", ce, 16, "new", 3, &r) == 0 &&
          r.status == KVMUX_STATUS_BAD_REQUEST);
    CHECK(get(&c, "cas", v, sizeof v) == KVMUX_STATUS_OK && strcmp(v, "old") == 0);
    test_sleep_ms(20); /* ttl:1 has expired */
    check_state(&c, "before any restart");

    /* Graceful stop and start. */
    v2_close_and_stop(&c, &s, 5000);
    start(&s, &c, fsync_always);
    check_state(&c, "after SIGTERM and restart");

    /* The cap-TTL write is the last thing acknowledged before kill -9. */
    CHECK_EQ(set_ttl(&c, "ttl:max", KVMUX_MAX_TTL_MS), KVMUX_STATUS_OK);
    v2_close(&c, 1);
    test_server_kill(&s);
    start(&s, &c, fsync_always);
    check_state(&c, "after kill -9 and restart");

    /* Compaction: a small --aof-rewrite-min and overwrites until the log
     * has been rewritten (aof_rewrites counts finished compactions). */
    v2_close_and_stop(&c, &s, 5000);
    const char *const compact[] = {"--fsync", "always", "--aof-rewrite-min", "4096", NULL};
    start(&s, &c, compact);
    uint64_t rewrites = 0;
    static char filler[200];
    memset(filler, 'f', sizeof filler - 1);
    int64_t deadline = test_now_ms() + 20000;
    for (int i = 0; test_now_ms() < deadline; i++) {
        uint8_t z[8] = {0};
        REQUIRE(call(&c, KVMUX_OP_SET, "filler", z, 8, filler, sizeof filler - 1, &r) == 0);
        if (i % 20 == 19) {
            rewrites = stat_u64(&c, "aof_rewrites");
            if (rewrites >= 1 && rewrites != UINT64_MAX &&
                stat_u64(&c, "aof_rewriting") == 0)
                break;
        }
    }
    fprintf(stderr, "aof_rewrites after overwrites: %llu\n", (unsigned long long)rewrites);
    CHECK(rewrites >= 1 && rewrites != UINT64_MAX);
    check_state(&c, "after compaction, same process");
    v2_close_and_stop(&c, &s, 5000);
    start(&s, &c, fsync_always);
    check_state(&c, "after compaction and restart");
    v2_close(&c, 1);
    test_server_kill(&s);
    start(&s, &c, fsync_always);
    check_state(&c, "after compaction and kill -9");
    v2_close_and_stop(&c, &s, 5000);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_report();
}
