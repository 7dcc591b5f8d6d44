/* Cluster mode, server side (docs/CLUSTER.md), against real kvmuxd
 * processes: a 1-member replicated group started with --cluster-group 1.
 * CLUSTER slot (any node), CLUSTER map before any map is installed
 * (NOT_FOUND), setmap's validation (BAD_REQUEST with the decoder's reason),
 * and kvmux-cli's cluster keyslot / slots. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* CLUSTER sub value on port: the status (as libkvmux maps it) and the
 * reply's value in out (when there is one). */
static int cluster_call(uint16_t port, const char *sub, const void *val, size_t vlen,
                        uint8_t *out, size_t cap, size_t *outlen) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_CLUSTER;
    r.key = sub;
    r.key_len = strlen(sub);
    r.value = val;
    r.value_len = vlen;
    kvmux_reply rep;
    int rc = kvmux_call(c, &r, &rep, 5000);
    *outlen = 0;
    if (rep.value_len <= cap) {
        if (rep.value_len) memcpy(out, rep.value, rep.value_len);
        *outlen = rep.value_len;
    }
    kvmux_reply_free(&rep);
    kvmux_close(c);
    return rc;
}

/* GET foo on a raw connection of protocol version v: the response's status
 * and value (copied into val, NUL-terminated; its length in *vlen). */
static int raw_get(uint16_t port, int v, uint8_t *val, size_t cap, size_t *vlen) {
    int fd = test_connect_raw(port, 5000);
    REQUIRE(fd >= 0);
    REQUIRE(test_raw_handshake_version(fd, v) == v);
    REQUIRE(test_send_request(fd, (uint8_t)v, 7, KVMUX_OP_GET, NULL, 0, "foo", NULL, 0) == 0);
    uint8_t buf[4096];
    kvmux_frame f;
    REQUIRE(test_read_frame(fd, buf, sizeof buf, &f) > 0);
    close(fd);
    *vlen = f.value_len < cap ? f.value_len : cap - 1;
    memcpy(val, f.value, *vlen);
    val[*vlen] = '\0';
    return f.code;
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
    return test_report();
}
