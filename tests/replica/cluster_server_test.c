/* Cluster mode, server side (docs/CLUSTER.md), against real kvmuxd
 * processes: a 1-member replicated group started with --cluster-group 1.
 * CLUSTER slot (any node), CLUSTER map before any map is installed
 * (NOT_FOUND), setmap's validation (BAD_REQUEST with the decoder's reason),
 * and kvmux-cli's cluster keyslot / slots; then two 1-member groups with
 * an installed map: setmap, CLUSTER map, WRONG_SHARD (v3 bytes, v2
 * message, libkvmux), epochs, a map moving a slot, and kill -9 + restart;
 * and a 3-member group whose followers answer CLUSTER map with the bytes
 * the leader installed. */
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
    CHECK_EQ(setmap(p1, m2, n2, msg, sizeof msg), KVMUX_STATUS_OK);
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
    rgroup_kill(&g1, 0);
    REQUIRE(rgroup_start_member(&g1, 0, 0) == 0);
    REQUIRE(rgroup_leader(&g1, 20000) == 0);
    CHECK_EQ(cluster_call(p1, "map", NULL, 0, got, sizeof got, &n), 0);
    CHECK(n == n2 && memcmp(got, m2, n2) == 0);
    CHECK_EQ(rgroup_stat(&g1, 0, "cluster_epoch"), 2);
    CHECK_EQ(rgroup_stat(&g1, 0, "keys"), 61);
    /* SCAN lists only the keys of slots the group owns: "{user1}.a" is
     * still in group 1's store, but slot 8106 is group 2's now. */
    int found;
    CHECK_EQ(scan_all(p1, "{user1}.a", &found), 60);
    CHECK(!found);
    CHECK_EQ(scan_all(p2, "{user1}.a", &found), 1);
    CHECK(found);
    CHECK_EQ(sets(p1, key), 0);
    CHECK_EQ(sets(p1, "{user1}.a"), KVMUX_EWRONGSHARD);
    cli_assign(&g2, p1, p2, a1, a2);
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
