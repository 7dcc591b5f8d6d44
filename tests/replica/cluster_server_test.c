/* Cluster mode, server side (docs/CLUSTER.md), against real kvmuxd
 * processes: a 1-member replicated group started with --cluster-group 1.
 * CLUSTER slot (any node), CLUSTER map before any map is installed
 * (NOT_FOUND), setmap's validation (BAD_REQUEST with the decoder's reason),
 * and kvmux-cli's cluster keyslot / slots; then two 1-member groups with
 * an installed map: setmap, CLUSTER map, WRONG_SHARD (v3 bytes, v2
 * message, libkvmux), epochs, a map moving a slot, and kill -9 + restart;
 * and a 3-member group whose followers answer CLUSTER map with the bytes
 * the leader installed. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "cluster_util.h"
#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

/* Run cmd through sh; its output (stdout + stderr) in out. Returns the
 * exit status (pclose's). */
static int run_cli(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    return pclose(p);
}

/* GET foo on a raw connection of protocol version v (cluster_raw_call). */
static int raw_get(uint16_t port, int v, uint8_t *val, size_t cap, size_t *vlen) {
    return cluster_raw_call(port, v, KVMUX_OP_GET, "foo", NULL, 0, val, cap, vlen);
}

/* ---- two 1-member groups with an installed map ---- */

/* The WRONG_SHARD value: u16 slot | u64 epoch | u16 group | endpoints,
 * written out by hand (not with kvmux_redirect_encode). */
static size_t redirect_bytes(uint16_t slot, uint64_t epoch, uint16_t group, const char *ep,
                             uint8_t *out) {
    out[0] = (uint8_t)(slot >> 8);
    out[1] = (uint8_t)slot;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(epoch >> (56 - 8 * i));
    out[10] = (uint8_t)(group >> 8);
    out[11] = (uint8_t)group;
    memcpy(out + 12, ep, strlen(ep));
    return 12 + strlen(ep);
}

/* CLUSTER setmap of map[0..n) on port over raw v3: status and message. */
static int setmap(uint16_t port, const uint8_t *map, size_t n, char *msg, size_t cap) {
    size_t ml;
    int st = cluster_raw_call(port, 3, KVMUX_OP_CLUSTER, "setmap", map, (uint32_t)n, (uint8_t *)msg,
                      cap, &ml);
    return st;
}

static int sets(uint16_t port, const char *key) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    int rc = kvmux_set(c, key, strlen(key), "v", 1, 0, NULL, 5000);
    kvmux_close(c);
    return rc;
}

/* SCAN the whole key space on port: how many keys, and whether key is
 * among them. */
static size_t scan_all(uint16_t port, const char *key, int *found) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    uint64_t cursor = 0;
    size_t total = 0;
    *found = 0;
    for (int step = 0; step < 10000; step++) {
        kvmux_keys *k = NULL;
        REQUIRE(kvmux_scan(c, cursor, NULL, 0, 100, &k, 5000) == 0);
        total += k->count;
        for (size_t i = 0; i < k->count; i++)
            if (k->keys[i].len == strlen(key) && memcmp(k->keys[i].data, key, k->keys[i].len) == 0)
                *found = 1;
        cursor = k->cursor;
        kvmux_keys_free(k);
        if (cursor == 0) break;
    }
    kvmux_close(c);
    return total;
}

/* kvmux-cli cluster assign: a text map without an epoch gets the node's
 * epoch + 1 and goes to both groups; an explicit older epoch is refused
 * (exit 3, the server's reason); the same map again is OK; a group that
 * cannot be reached makes the exit status nonzero; "-" reads stdin. */
static void cli_assign(const rgroup *g2, uint16_t p1, uint16_t p2, const char *a1,
                       const char *a2) {
    char path[] = "/tmp/kvmux-assign-XXXXXX", cmd[768], out[4096];
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "w");
    REQUIRE(f != NULL);
    fprintf(f, "# all of group 1's old slots back, the rest to group 2\n"
               "group 1 %s\ngroup 2 %s\nslots 0-8191 1\nslots 8192-16383 2\n", a1, a2);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -p %u cluster assign %s 2>&1", KVMUX_CLI_PATH, p1, path);
    CHECK_EQ(run_cli(cmd, out, sizeof out), 0);
    CHECK(strcmp(out, "group 1: epoch 3 installed\ngroup 2: epoch 3 installed\n") == 0);
    if (strcmp(out, "group 1: epoch 3 installed\ngroup 2: epoch 3 installed\n") != 0)
        fprintf(stderr, "cli said: %s\n", out);
    CHECK_EQ(rgroup_stat(g2, 0, "cluster_epoch"), 3);
    CHECK_EQ(sets(p1, "{user1}.a"), 0); /* slot 8106 is group 1's again */
    snprintf(cmd, sizeof cmd, "%s -p %u cluster slots 2>&1", KVMUX_CLI_PATH, p2);
    CHECK_EQ(run_cli(cmd, out, sizeof out), 0);
    CHECK(strstr(out, "epoch 3\n") != NULL && strstr(out, "slots 8192-16383 2\n") != NULL);
    /* Explicit epochs, through stdin. */
    snprintf(cmd, sizeof cmd,
             "(echo epoch 2; cat %s) | %s -p %u cluster assign - 2>&1", path, KVMUX_CLI_PATH,
             p1);
    CHECK(run_cli(cmd, out, sizeof out) != 0);
    CHECK(strstr(out, "group 1: epoch 2 is not newer than the installed epoch 3") != NULL);
    if (!strstr(out, "is not newer")) fprintf(stderr, "cli said: %s\n", out);
    snprintf(cmd, sizeof cmd,
             "(echo epoch 3; cat %s) | %s -p %u cluster assign - 2>&1", path, KVMUX_CLI_PATH,
             p1);
    CHECK_EQ(run_cli(cmd, out, sizeof out), 0); /* the installed bytes again */
    /* A group nobody can reach: the others still get the map. */
    f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "group 1 %s\ngroup 2 %s\ngroup 9 127.0.0.1:1\nslots 0-8191 1\n"
               "slots 8192-16000 2\nslots 16001-16383 9\n", a1, a2);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -t 1000 -p %u cluster assign %s 2>&1", KVMUX_CLI_PATH, p1,
             path);
    CHECK(run_cli(cmd, out, sizeof out) != 0);
    CHECK(strstr(out, "group 1: epoch 4 installed\n") != NULL);
    CHECK(strstr(out, "group 9") != NULL);
    CHECK_EQ(rgroup_stat(g2, 0, "cluster_epoch"), 4);
    /* Not a map: the parser's line number, exit 2. */
    f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "group 1 %s\nslots 0-99999 1\n", a1);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -p %u cluster assign %s 2>&1", KVMUX_CLI_PATH, p1, path);
    CHECK_EQ(run_cli(cmd, out, sizeof out), 2 << 8);
    CHECK(strstr(out, "line 2") != NULL);
    unlink(path);
}

/* A WAIT parked on a key whose slot a new map moves away: answered at
 * once with the redirect, not left to its timeout while the key changes
 * in the other group (waits.c kvmux__waits_recheck_slots). */
typedef struct parked_wait {
    uint16_t port;
    const char *key;
    int rc;
    int64_t ms;
} parked_wait;

static void *park_wait(void *arg) {
    parked_wait *pw = arg;
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", pw->port, &o) == 0);
    kvmux_value *v = NULL;
    REQUIRE(kvmux_get(c, pw->key, strlen(pw->key), &v, 5000) == 0);
    uint64_t version = v->version;
    kvmux_value_free(v);
    v = NULL;
    int64_t t0 = test_now_ms();
    pw->rc = kvmux_wait(c, pw->key, strlen(pw->key), version, 20000, &v, 30000);
    pw->ms = test_now_ms() - t0;
    if (v) kvmux_value_free(v);
    kvmux_close(c);
    return NULL;
}

/* kvmux-cli --cluster scan across a map change: the groups are visited
 * one after another, so a slot moved between two visits may be listed
 * twice or not at all; the CLI says so on stderr (exit status 0). Group
 * 2 is stopped (SIGSTOP) so the CLI is held on it after it read group 1's
 * epoch; group 1 then takes epoch 4. */
typedef struct cli_run {
    char cmd[512];
    char out[4096];
    int rc;
} cli_run;

static void *cli_thread(void *arg) {
    cli_run *r = arg;
    r->rc = run_cli(r->cmd, r->out, sizeof r->out);
    return NULL;
}

static void scan_across_move(rgroup *g2, uint16_t p1, const char *a1, const char *a2) {
    static cli_run r;
    static uint8_t m[2][4096];
    size_t mn[2];
    char text[512], msg[256];
    for (int i = 0; i < 2; i++) { /* epoch 5 (group 9 gone) and epoch 6 */
        snprintf(text, sizeof text, "epoch %d\ngroup 1 %s\ngroup 2 %s\nslots 0-%d 1\n"
                 "slots %d-16383 2\n", 5 + i, a1, a2, 8000 + i, 8001 + i);
        mn[i] = cluster_map_bytes(text, m[i], sizeof m[i]);
    }
    CHECK_EQ(setmap(p1, m[0], mn[0], msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK_EQ(setmap(g2->cport[0], m[0], mn[0], msg, sizeof msg), KVMUX_STATUS_OK);
    snprintf(r.cmd, sizeof r.cmd, "%s --cluster -t 20000 -p %u scan 2>&1 >/dev/null",
             KVMUX_CLI_PATH, p1);
    CHECK_EQ(run_cli(r.cmd, r.out, sizeof r.out), 0);
    CHECK(r.out[0] == '\0'); /* no change, no warning */
    REQUIRE(kill(g2->srv[0].pid, SIGSTOP) == 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, cli_thread, &r) == 0);
    usleep(1500 * 1000); /* the CLI read group 1's epoch and waits on group 2 */
    CHECK_EQ(setmap(p1, m[1], mn[1], msg, sizeof msg), KVMUX_STATUS_OK);
    kill(g2->srv[0].pid, SIGCONT);
    pthread_join(t, NULL);
    CHECK_EQ(r.rc, 0);
    CHECK(strstr(r.out, "map changed during the scan (epoch 5 -> 6)") != NULL);
    if (!strstr(r.out, "map changed")) fprintf(stderr, "cli said: %s\n", r.out);
    CHECK_EQ(setmap(g2->cport[0], m[1], mn[1], msg, sizeof msg), KVMUX_STATUS_OK);
}

/* CLUSTER slotkeys (MIGRATION.md 10.1) after two_groups' restart: group
 * 1 (p1) holds 60 keys of slots 0-8000 ("{user1}.a", slot 8106, was
 * purged when epoch 2 moved its slot); group 2 (p2) holds one key of
 * 8106. The counts survive the restart (recounted from the snapshot and
 * the log). */
static void slotkeys_checks(uint16_t p1, uint16_t p2) {
    static uint8_t out[1 << 16];
    size_t n;
    CHECK_EQ(cluster_call(p1, "slotkeys", "8106", 4, out, sizeof out - 1, &n), 0);
    out[n] = 0;
    CHECK(strcmp((char *)out, "total 0\n") == 0);
    CHECK_EQ(cluster_call(p2, "slotkeys", "8106-8106", 9, out, sizeof out - 1, &n), 0);
    out[n] = 0;
    CHECK(strcmp((char *)out, "8106 1\ntotal 1\n") == 0);
    CHECK_EQ(cluster_call(p1, "slotkeys", "0-16383", 7, out, sizeof out - 1, &n), 0);
    out[n] = 0;
    CHECK(strstr((char *)out, "total 60\n") != NULL);
    /* One line per slot with keys, in slot order, then the total. */
    unsigned prev = 0, slot, cnt, sum = 0, lines = 0;
    for (char *l = (char *)out; sscanf(l, "%u %u", &slot, &cnt) == 2; lines++) {
        CHECK(cnt > 0 && (lines == 0 || slot > prev));
        prev = slot;
        sum += cnt;
        l = strchr(l, '\n') + 1;
    }
    CHECK_EQ(sum, 60);
    CHECK(lines > 0);
    CHECK_EQ(cluster_call(p2, "slotkeys", "0-100", 5, out, sizeof out - 1, &n), 0);
    out[n] = 0;
    CHECK(strcmp((char *)out, "total 0\n") == 0);
    /* Bad ranges: BAD_REQUEST. */
    static const char *const bad[] = {"", "9-8", "abc", "16384", "0-16384", "-5", "5-",
                                      "01", "1-2-3", "0-163830"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(cluster_call(p1, "slotkeys", bad[i], strlen(bad[i]), NULL, 0, &n),
                 KVMUX_EBADREQ);
}

static void two_groups(void) {
    static const char *const x1[] = {"--cluster-group", "1", "--snapshot-threshold", "16",
                                     NULL};
    static const char *const x2[] = {"--cluster-group", "2", NULL};
    static rgroup g1, g2;
    REQUIRE(rgroup_start(&g1, 1, x1) == 0);
    REQUIRE(rgroup_start(&g2, 1, x2) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    REQUIRE(rgroup_leader(&g2, 20000) == 0);
    uint16_t p1 = g1.cport[0], p2 = g2.cport[0];
    char a1[32], a2[32], text[512], msg[512];
    snprintf(a1, sizeof a1, "127.0.0.1:%u", p1);
    snprintf(a2, sizeof a2, "127.0.0.1:%u", p2);

    /* Epoch 1: slots 0-8191 group 1, 8192-16000 group 2, the rest none. */
    static uint8_t m1[4096], m1b[4096], m2[4096], got[8192];
    snprintf(text, sizeof text,
             "epoch 1\ngroup 1 %s\ngroup 2 %s\nslots 0-8191 1\nslots 8192-16000 2\n", a1, a2);
    size_t n1 = cluster_map_bytes(text, m1, sizeof m1);
    CHECK_EQ(setmap(p1, m1, n1, msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "epoch 1 installed") == 0);
    CHECK_EQ(setmap(p2, m1, n1, msg, sizeof msg), KVMUX_STATUS_OK);
    size_t n;
    CHECK_EQ(cluster_call(p1, "map", NULL, 0, got, sizeof got, &n), 0);
    CHECK(n == n1 && memcmp(got, m1, n1) == 0);
    CHECK_EQ(cluster_call(p2, "map", NULL, 0, got, sizeof got, &n), 0);
    CHECK(n == n1 && memcmp(got, m1, n1) == 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_epoch"), 1);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_slots_owned"), 8192);
    CHECK_EQ(rgroup_stat(&g2, 0, "cluster_slots_owned"), 16001 - 8192);

    /* "{user1}.a" is slot 8106: group 1's. */
    CHECK_EQ(sets(p1, "{user1}.a"), 0);
    uint8_t want[128], val[512];
    size_t wn = redirect_bytes(8106, 1, 1, a1, want);
    CHECK_EQ(cluster_raw_call(p2, 3, KVMUX_OP_GET, "{user1}.a", NULL, 0, val, sizeof val, &n),
             KVMUX_STATUS_WRONG_SHARD);
    CHECK(n == wn && memcmp(val, want, wn) == 0);
    CHECK_EQ(cluster_raw_call(p2, 2, KVMUX_OP_GET, "{user1}.a", NULL, 0, val, sizeof val, &n),
             KVMUX_STATUS_SHUTTING_DOWN);
    snprintf(msg, sizeof msg, "wrong shard: slot 8106 is served by group 1 (%s)", a1);
    CHECK(strcmp((char *)val, msg) == 0);
    CHECK_EQ(sets(p2, "{user1}.a"), KVMUX_EWRONGSHARD);
    /* An unassigned slot: group 0, no endpoints. */
    char key[32];
    int from = 0;
    cluster_key_in(16001, 16383, &from, key, sizeof key);
    uint16_t us = kvmux_slot(key, strlen(key));
    wn = redirect_bytes(us, 1, 0, "", want);
    CHECK_EQ(cluster_raw_call(p1, 3, KVMUX_OP_GET, key, NULL, 0, val, sizeof val, &n),
             KVMUX_STATUS_WRONG_SHARD);
    CHECK(n == wn && memcmp(val, want, wn) == 0);
    CHECK_EQ(rgroup_stat(&g2, 0, "cluster_wrong_shard"), 3);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_wrong_shard"), 1);

    /* Epoch 1 again with other bytes: VERSION_MISMATCH; the same bytes: OK. */
    snprintf(text, sizeof text, "epoch 1\ngroup 1 %s\ngroup 2 %s\nslots 0-16383 1\n", a1, a2);
    size_t n1b = cluster_map_bytes(text, m1b, sizeof m1b);
    CHECK_EQ(setmap(p1, m1b, n1b, msg, sizeof msg), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK(strcmp(msg, "epoch 1 is not newer than the installed epoch 1") == 0);
    CHECK_EQ(setmap(p1, m1, n1, msg, sizeof msg), KVMUX_STATUS_OK);

    /* Epoch 2 moves slot 8106 to group 2. */
    snprintf(text, sizeof text,
             "epoch 2\ngroup 1 %s\ngroup 2 %s\nslots 0-8191 1\nslots 8192-16000 2\n"
             "slots 8106 2\n", a1, a2);
    size_t n2 = cluster_map_bytes(text, m2, sizeof m2);
    parked_wait pw = {.port = p1, .key = "{user1}.a", .rc = 1};
    pthread_t wt;
    REQUIRE(pthread_create(&wt, NULL, park_wait, &pw) == 0);
    for (int t = 0; t < 200 && rgroup_stat(&g1, 0, "waits_parked") < 1; t++) usleep(10000);
    CHECK_EQ(rgroup_stat(&g1, 0, "waits_parked"), 1);
    CHECK_EQ(setmap(p1, m2, n2, msg, sizeof msg), KVMUX_STATUS_OK);
    pthread_join(wt, NULL);
    CHECK_EQ(pw.rc, KVMUX_EWRONGSHARD);
    CHECK(pw.ms < 10000);
    CHECK(strcmp(msg, "epoch 2 installed") == 0);
    CHECK_EQ(setmap(p2, m2, n2, msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK_EQ(setmap(p1, m1, n1, msg, sizeof msg), KVMUX_STATUS_VERSION_MISMATCH);
    CHECK(strcmp(msg, "epoch 1 is not newer than the installed epoch 2") == 0);
    wn = redirect_bytes(8106, 2, 2, a2, want);
    CHECK_EQ(cluster_raw_call(p1, 3, KVMUX_OP_GET, "{user1}.a", NULL, 0, val, sizeof val, &n),
             KVMUX_STATUS_WRONG_SHARD);
    CHECK(n == wn && memcmp(val, want, wn) == 0);
    CHECK_EQ(sets(p2, "{user1}.a"), 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_slots_owned"), 8191);

    /* Enough writes for snapshots (--snapshot-threshold 16), then kill -9
     * and restart: the same map, from snapshot + log. */
    from = 0;
    for (int i = 0; i < 60; i++) {
        cluster_key_in(0, 8000, &from, key, sizeof key);
        CHECK_EQ(sets(p1, key), 0);
    }
    CHECK(rgroup_stat(&g1, 0, "replica_snapshots") >= 1);
    /* "{user1}.a" stayed in group 1's store when epoch 2 moved its slot:
     * a leftover, which group 1's janitor purges through its log
     * (docs/MIGRATION.md 8.4). */
    int purged = 0;
    for (int i = 0; i < 250 && !purged; i++) {
        purged = rgroup_stat(&g1, 0, "migrate_purged_keys") == 1;
        if (!purged) usleep(20000);
    }
    CHECK(purged);
    rgroup_kill(&g1, 0);
    REQUIRE(rgroup_start_member(&g1, 0, 0) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    CHECK_EQ(cluster_call(p1, "map", NULL, 0, got, sizeof got, &n), 0);
    CHECK(n == n2 && memcmp(got, m2, n2) == 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_epoch"), 2);
    CHECK_EQ(rgroup_stat(&g1, 0, "keys"), 60);
    /* SCAN lists only the keys of slots the group owns. */
    int found;
    CHECK_EQ(scan_all(p1, "{user1}.a", &found), 60);
    CHECK(!found);
    CHECK_EQ(scan_all(p2, "{user1}.a", &found), 1);
    CHECK(found);
    slotkeys_checks(p1, p2);
    CHECK_EQ(sets(p1, key), 0);
    CHECK_EQ(sets(p1, "{user1}.a"), KVMUX_EWRONGSHARD);
    cli_assign(&g2, p1, p2, a1, a2);
    scan_across_move(&g2, p1, a1, a2);
    rgroup_stop(&g1);
    rgroup_stop(&g2);
}

/* A 3-member group: setmap on a follower is NOT_LEADER; once the leader
 * installed a map, every follower answers CLUSTER map with the same bytes
 * and routes against it. */
static void three_members(void) {
    static const char *const x[] = {"--cluster-group", "3", NULL};
    static rgroup g;
    REQUIRE(rgroup_start(&g, 3, x) == 0);
    int leader = rgroup_stable_leader(&g, 30000);
    REQUIRE(leader >= 0);
    int follower = (leader + 1) % 3;
    char text[512], msg[512], a[3][32];
    for (int i = 0; i < 3; i++) snprintf(a[i], sizeof a[i], "127.0.0.1:%u", g.cport[i]);
    snprintf(text, sizeof text,
             "epoch 5\ngroup 3 %s %s %s\ngroup 4 127.0.0.1:1\nslots 0-9999 3\n"
             "slots 10000-16383 4\n", a[0], a[1], a[2]);
    static uint8_t m[4096], got[8192];
    size_t mn = cluster_map_bytes(text, m, sizeof m), n;
    CHECK_EQ(setmap(g.cport[follower], m, mn, msg, sizeof msg), KVMUX_STATUS_NOT_LEADER);
    CHECK_EQ(setmap(g.cport[leader], m, mn, msg, sizeof msg), KVMUX_STATUS_OK);
    CHECK(strcmp(msg, "epoch 5 installed") == 0);
    for (int i = 0; i < 3; i++) {
        int ok = 0;
        for (int t = 0; t < 200 && !ok; t++) {
            ok = cluster_call(g.cport[i], "map", NULL, 0, got, sizeof got, &n) == 0;
            if (!ok) usleep(25000);
        }
        CHECK(ok && n == mn && memcmp(got, m, mn) == 0);
        CHECK_EQ(rgroup_stat(&g, i, "cluster_epoch"), 5);
        CHECK_EQ(rgroup_stat(&g, i, "cluster_slots_owned"), 10000);
    }
    /* "foo" is slot 12182: group 4's, on the follower too (its own map). */
    uint8_t want[64], val[512];
    size_t wn = redirect_bytes(12182, 5, 4, "127.0.0.1:1", want);
    CHECK_EQ(cluster_raw_call(g.cport[follower], 3, KVMUX_OP_GET, "foo", NULL, 0, val,
                              sizeof val, &n),
             KVMUX_STATUS_WRONG_SHARD);
    CHECK(n == wn && memcmp(val, want, wn) == 0);
    /* CLUSTER slotkeys is answered by any member, a follower too. */
    CHECK_EQ(cluster_call(g.cport[follower], "slotkeys", "0-16383", 7, got, sizeof got - 1,
                          &n), 0);
    got[n] = 0;
    CHECK(n > 0 && got[n - 1] == '\n' && strstr((char *)got, "total ") != NULL);
    /* "{user1}.a" (8106) is group 3's: the follower says NOT_LEADER. */
    CHECK_EQ(cluster_raw_call(g.cport[follower], 3, KVMUX_OP_GET, "{user1}.a", NULL, 0, val,
                      sizeof val, &n), KVMUX_STATUS_NOT_LEADER);
    CHECK_EQ(sets(g.cport[leader], "{user1}.a"), 0);
    rgroup_stop(&g);
}

int main(void) {
    static const char *const extra[] = {"--cluster-group", "1", "--snapshot-threshold", "16",
                                        NULL};
    static rgroup g;
    REQUIRE(rgroup_start(&g, 1, extra) == 0);
    int leader = rgroup_leader(&g, 20000);
    REQUIRE(leader == 0);
    uint16_t port = g.cport[0];
    uint8_t out[256];
    size_t n;

    /* CLUSTER slot: the slot of the value, as kvmux_slot says. */
    CHECK_EQ(cluster_call(port, "slot", "foo", 3, out, sizeof out, &n), 0);
    CHECK_EQ(n, 2);
    if (n == 2) CHECK_EQ(kvmux_load_u16be(out), 12182);
    CHECK_EQ(cluster_call(port, "slot", "{user1}.a", 9, out, sizeof out, &n), 0);
    if (n == 2) CHECK_EQ(kvmux_load_u16be(out), 8106);

    /* No map installed yet. */
    CHECK_EQ(cluster_call(port, "map", NULL, 0, out, sizeof out, &n), KVMUX_ENOTFOUND);
    /* Not a map: the decoder's reason. */
    CHECK(cluster_call(port, "setmap", "junk", 4, out, sizeof out, &n) != 0);
    CHECK(cluster_call(port, "nonsense", NULL, 0, out, sizeof out, &n) != 0);

    /* No map: a keyed request is TRY_AGAIN (u16 slot | u64 epoch 0) on v3,
     * BUSY with a message on v2; libkvmux maps 17 to KVMUX_ETRYAGAIN. */
    static const uint8_t try_again[10] = {0x2F, 0x96, 0, 0, 0, 0, 0, 0, 0, 0}; /* 12182 */
    CHECK_EQ(raw_get(port, 3, out, sizeof out, &n), KVMUX_STATUS_TRY_AGAIN);
    CHECK(n == 10 && memcmp(out, try_again, 10) == 0);
    CHECK_EQ(raw_get(port, 2, out, sizeof out, &n), KVMUX_STATUS_BUSY);
    CHECK(strcmp((char *)out, "slot 12182 is not available here yet; try again") == 0);
    {
        kvmux_client *c = NULL;
        kvmux_options o;
        kvmux_options_init(&o);
        REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
        CHECK_EQ(kvmux_set(c, "foo", 3, "v", 1, 0, NULL, 5000), KVMUX_ETRYAGAIN);
        /* A big value (fragmented upload) is refused the same way, and the
         * connection goes on. */
        size_t big = 3u << 20;
        char *v = calloc(1, big);
        REQUIRE(v != NULL);
        CHECK_EQ(kvmux_set(c, "foo", 3, v, big, 0, NULL, 10000), KVMUX_ETRYAGAIN);
        free(v);
        CHECK_EQ(kvmux_set(c, "bar", 3, "v", 1, 0, NULL, 5000), KVMUX_ETRYAGAIN);
        kvmux_close(c);
    }
    CHECK_EQ(rgroup_stat(&g, 0, "cluster_try_again"), 5);
    CHECK_EQ(rgroup_stat(&g, 0, "keys"), 0);
    CHECK(rgroup_stat(&g, 0, "uploads") >= 1); /* the big SET was fragmented */

    /* STATS: cluster mode lines (no map: epoch 0, no slots). */
    CHECK_EQ(rgroup_stat(&g, 0, "cluster_group"), 1);
    CHECK_EQ(rgroup_stat(&g, 0, "cluster_epoch"), 0);
    CHECK_EQ(rgroup_stat(&g, 0, "cluster_slots_owned"), 0);

    char cmd[512], text[4096];
    snprintf(cmd, sizeof cmd, "%s cluster keyslot foo 2>&1", KVMUX_CLI_PATH);
    CHECK_EQ(run_cli(cmd, text, sizeof text), 0);
    CHECK(strcmp(text, "12182\n") == 0);
    snprintf(cmd, sizeof cmd, "%s -p %u cluster slots 2>&1", KVMUX_CLI_PATH, port);
    CHECK(run_cli(cmd, text, sizeof text) != 0);
    CHECK(strstr(text, "no slot map installed") != NULL);
    if (!strstr(text, "no slot map installed")) fprintf(stderr, "cli said: %s\n", text);
    snprintf(cmd, sizeof cmd, "%s -p %u cluster setmap 2>&1", KVMUX_CLI_PATH, port);
    CHECK(run_cli(cmd, text, sizeof text) != 0); /* not a subcommand of the cli */
    rgroup_stop(&g);

    /* A node that is not in cluster mode: CLUSTER map is BAD_REQUEST,
     * CLUSTER slot still works. */
    static const char *const plain[] = {NULL};
    REQUIRE(rgroup_start(&g, 1, plain) == 0);
    REQUIRE(rgroup_leader(&g, 20000) == 0);
    port = g.cport[0];
    CHECK_EQ(cluster_call(port, "slot", "foo", 3, out, sizeof out, &n), 0);
    CHECK(cluster_call(port, "map", NULL, 0, out, sizeof out, &n) != 0);
    snprintf(cmd, sizeof cmd, "%s -p %u cluster slots 2>&1", KVMUX_CLI_PATH, port);
    CHECK(run_cli(cmd, text, sizeof text) != 0);
    CHECK(strstr(text, "not a cluster node (--cluster-group)") != NULL);
    if (!strstr(text, "not a cluster node")) fprintf(stderr, "cli said: %s\n", text);
    rgroup_stop(&g);
    two_groups();
    three_members();
    return test_report();
}
