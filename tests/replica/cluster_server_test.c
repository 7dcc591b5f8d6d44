/* Cluster mode, server side (docs/CLUSTER.md), against real kvmuxd
 * processes: a 1-member replicated group started with --cluster-group 1.
 * CLUSTER slot (any node), CLUSTER map before any map is installed
 * (NOT_FOUND), setmap's validation (BAD_REQUEST with the decoder's reason),
 * and kvmux-cli's cluster keyslot / slots. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
