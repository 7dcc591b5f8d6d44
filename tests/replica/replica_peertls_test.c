/* replica_peertls_test: peer TLS on the Raft port (docs/REPLICATION.md
 * "Peer security"), with real kvmuxd processes on loopback and a group PKI
 * made by gen_peer_certs.sh (openssl CLI):
 *  - a 3-member group with --peer-tls elects a leader, replicates (same
 *    digest everywhere, an 8 MiB value included: the pump's backpressure),
 *    and survives a kill -9 of its leader;
 *  - on a member's Raft port, a plain-TCP C-Raft peer, a garbage sender and
 *    a silent socket are cut (the silent one after the handshake bound)
 *    and counted in replica_peer_refused; 70 silent sockets at once (over
 *    the 64 handshakes allowed) do not stop the group committing;
 *  - a member restarted with a certificate from another CA cannot join or
 *    vote: the others keep committing, count it, keep equal digests, and
 *    the term does not move; back with a good certificate it catches up;
 *  - --requirepass holds on the leader and a follower of a TLS group;
 *    protected mode refuses a replica bound to 0.0.0.0 without a token;
 *  - half a peer TLS configuration, and an unreadable certificate, exit
 *    with a message naming what is wrong. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

static char dir[64];
static char ca[128], cert[128], key[128], rogue_cert[128], rogue_key[128];
static const char *good[16], *rogue[16], *authed[16];

static void make_args(const char **a, const char *c, const char *k) {
    int n = 0;
    a[n++] = "--peer-tls";
    a[n++] = "yes";
    a[n++] = "--peer-tls-cert";
    a[n++] = c;
    a[n++] = "--peer-tls-key";
    a[n++] = k;
    a[n++] = "--peer-tls-ca";
    a[n++] = ca;
    a[n++] = "--peer-tls-handshake-timeout";
    a[n++] = "500";
    /* An 8 MiB entry holds the heartbeats behind it on the stream: with
     * the default 1 s a loaded or sanitized run can lose the leader while
     * it crosses (check_big_value). */
    a[n++] = "--election-timeout";
    a[n++] = "3000";
    a[n] = NULL;
}

static void gen_certs(void) {
    snprintf(dir, sizeof dir, "/tmp/kvmux-ptls-XXXXXX");
    REQUIRE(mkdtemp(dir) != NULL);
    const char *argv[] = {"/bin/sh", KVMUX_PEER_GEN_CERTS, dir, NULL};
    char err[1024] = "";
    int rc = test_run(argv, NULL, NULL, NULL, 0, err, sizeof err, 60000);
    if (rc != 0) fprintf(stderr, "gen_peer_certs: %s\n", err);
    REQUIRE(rc == 0);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/peer1.pem", dir);
    snprintf(key, sizeof key, "%s/peer1.key", dir);
    snprintf(rogue_cert, sizeof rogue_cert, "%s/rogue.pem", dir);
    snprintf(rogue_key, sizeof rogue_key, "%s/rogue.key", dir);
    make_args(good, cert, key);
    make_args(rogue, rogue_cert, rogue_key);
    make_args(authed, cert, key);
    authed[12] = "--requirepass";
    authed[13] = "s3cret";
    authed[14] = NULL;
}

static kvmux_client *connect_to(uint16_t port, const char *token) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.request_timeout_ms = 10000;
    o.auth_token = token;
    kvmux_client *c = NULL;
    return kvmux_connect(&c, "127.0.0.1", port, &o) == 0 ? c : NULL;
}

/* n SETs and INCRs on port; returns how many succeeded. */
static int write_some(uint16_t port, int from, int n) {
    kvmux_client *c = connect_to(port, NULL);
    if (!c) return 0;
    int ok = 0;
    for (int i = from; i < from + n; i++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        int64_t nv = 0;
        if (kvmux_set(c, k, strlen(k), v, strlen(v), 0, NULL, 10000) == 0 &&
            kvmux_incr(c, "ctr", 3, 1, &nv, 10000) == 0)
            ok++;
    }
    kvmux_close(c);
    return ok;
}

/* Connect to a Raft port, send data, and wait up to wait_ms for the
 * close. Returns the milliseconds it took, or -1 (never closed). */
static int probe(uint16_t port, const void *data, size_t n, int wait_ms) {
    int fd = test_connect_raw(port, wait_ms);
    if (fd < 0) return -1;
    int64_t t0 = test_now_ms();
    if (n) CHECK_EQ(test_write_all(fd, data, n), 0);
    int closed = test_wait_closed(fd, wait_ms);
    int ms = (int)(test_now_ms() - t0);
    close(fd);
    return closed ? ms : -1;
}

/* Wait (<= 10 s) until member i's refused count reaches want. */
static uint64_t refused_at_least(const rgroup *g, int i, uint64_t want) {
    uint64_t v = 0;
    for (int k = 0; k < 200; k++) {
        v = rgroup_stat(g, i, "replica_peer_refused");
        if (v != UINT64_MAX && v >= want) break;
        test_sleep_ms(50);
    }
    return v;
}

static void check_raft_port_probes(rgroup *g, int leader) {
    int f = (leader + 1) % g->n;
    uint64_t before = rgroup_stat(g, f, "replica_peer_refused");
    CHECK_EQ(before, 0);
    /* C-Raft's own TCP handshake in the clear: protocol 1, id 9, an
     * address buffer of 16 bytes. */
    uint8_t plain[40] = {1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 16};
    memcpy(plain + 24, "127.0.0.1:9", 11);
    int ms = probe(g->rport[f], plain, sizeof plain, 3000);
    CHECK(ms >= 0 && ms < 1000);
    const char garbage[] = "GET / HTTP/1.0\r\n\r\n";
    ms = probe(g->rport[f], garbage, sizeof garbage - 1, 3000);
    CHECK(ms >= 0 && ms < 1000);
    /* Silent: cut at the 500 ms bound. */
    ms = probe(g->rport[f], NULL, 0, 5000);
    printf("stalled handshake cut after %d ms (bound 500)\n", ms);
    CHECK(ms >= 400 && ms < 3000);
    CHECK_EQ(refused_at_least(g, f, before + 3), before + 3);

    /* 70 silent sockets on the leader: over the 64 handshakes allowed, the
     * rest are cut at once; the group still commits meanwhile. */
    int fds[70];
    for (int i = 0; i < 70; i++) fds[i] = test_connect_raw(g->rport[leader], 3000);
    CHECK_EQ(write_some(g->cport[leader], 1000, 10), 10);
    uint64_t r = refused_at_least(g, leader, 70);
    CHECK(r >= 70);
    for (int i = 0; i < 70; i++)
        if (fds[i] >= 0) close(fds[i]);
}

static void check_digests_equal(const rgroup *g, int a, int b) {
    char da[64] = "", db[64] = "";
    for (int k = 0; k < 100; k++) { /* <= 5 s to apply the same entries */
        rgroup_stat_str(g, a, "replica_digest", da, sizeof da);
        rgroup_stat_str(g, b, "replica_digest", db, sizeof db);
        if (da[0] && strcmp(da, db) == 0 &&
            rgroup_stat(g, a, "replica_applied_index") == rgroup_stat(g, b, "replica_applied_index"))
            break;
        test_sleep_ms(50);
    }
    CHECK(da[0] && strcmp(da, db) == 0);
}

static void check_rogue(rgroup *g, int leader) {
    int f = (leader + 1) % g->n, o = (leader + 2) % g->n;
    uint64_t term = rgroup_stat(g, leader, "replica_term");
    uint64_t r0 = rgroup_stat(g, leader, "replica_peer_refused");
    rgroup_kill(g, f);
    g->extra = rogue;
    REQUIRE(rgroup_start_member(g, f, 0) == 0);
    g->extra = good;
    CHECK_EQ(write_some(g->cport[leader], 2000, 30), 30);
    CHECK(refused_at_least(g, leader, r0 + 1) > r0); /* its heartbeats to the rogue */
    /* The rogue stands for election after 1-2 election timeouts (3-6 s):
     * its vote requests reach the other follower, which refuses them. */
    CHECK(refused_at_least(g, o, 1) >= 1);
    CHECK_EQ(write_some(g->cport[leader], 2030, 10), 10);
    CHECK_EQ(rgroup_leader(g, 1000), leader);
    CHECK_EQ(rgroup_stat(g, leader, "replica_term"), term);
    char role[32] = "";
    rgroup_stat_str(g, f, "replica_role", role, sizeof role);
    CHECK(strcmp(role, "leader") != 0);
    check_digests_equal(g, leader, o);
    CHECK(rgroup_stat(g, f, "replica_applied_index") <
          rgroup_stat(g, leader, "replica_applied_index"));
    /* Back with the group's certificate: it catches up. */
    rgroup_kill(g, f);
    REQUIRE(rgroup_start_member(g, f, 0) == 0);
    uint64_t idx = 0;
    CHECK(rgroup_converged(g, 20000, &idx, NULL, 0) == 0);
}

/* An 8 MiB value: one Raft entry twice the transport's per-direction
 * queue (KVMUX_PTLS_MAX_QUEUE), so the pump pauses and resumes reading
 * while it crosses; it must arrive whole (the caller compares digests).
 * (16 MiB loses the leadership on this machine with plain TCP too: the
 * big-value work of issue 10 section 2, not the transport.) */
static void check_big_value(uint16_t port) {
    kvmux_client *c = connect_to(port, NULL);
    REQUIRE(c != NULL);
    size_t big = 8u << 20;
    uint8_t *val = test_pattern(big, 11);
    CHECK_EQ(kvmux_set(c, "big", 3, val, big, 0, NULL, 60000), 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "big", 3, &v, 60000), 0);
    CHECK(v && v->len == big && memcmp(v->data, val, big) == 0);
    kvmux_value_free(v);
    free(val);
    kvmux_close(c);
}

static void check_group(void) {
    rgroup g;
    REQUIRE(rgroup_start(&g, 3, good) == 0);
    int leader = rgroup_stable_leader(&g, 15000);
    REQUIRE(leader >= 0);
    CHECK_EQ(write_some(g.cport[leader], 0, 50), 50);
    check_big_value(g.cport[leader]);
    uint64_t idx = 0;
    CHECK(rgroup_converged(&g, 15000, &idx, NULL, 0) == 0);
    check_raft_port_probes(&g, leader);
    check_rogue(&g, leader);

    /* kill -9 of the leader: the other two elect one and go on. */
    leader = rgroup_stable_leader(&g, 15000);
    REQUIRE(leader >= 0);
    rgroup_kill(&g, leader);
    int nl = rgroup_stable_leader(&g, 15000);
    REQUIRE(nl >= 0 && nl != leader);
    CHECK_EQ(write_some(g.cport[nl], 3000, 30), 30);
    REQUIRE(rgroup_start_member(&g, leader, 0) == 0);
    CHECK(rgroup_converged(&g, 20000, &idx, NULL, 0) == 0);
    kvmux_client *c = connect_to(g.cport[nl], NULL);
    REQUIRE(c != NULL);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "ctr", 3, &v, 10000), 0);
    if (v) CHECK_EQ(atoll((const char *)v->data), 50 + 10 + 40 + 30);
    kvmux_value_free(v);
    kvmux_close(c);
    rgroup_stop(&g);
}

/* A raw HELLO without a token gets no HELLO_ACK; libkvmux without one
 * fails to connect (KVMUX_EAUTH). */
static void expect_auth_refused(uint16_t port) {
    int fd = test_connect_raw(port, 3000);
    REQUIRE(fd >= 0);
    CHECK(test_raw_handshake(fd) != 0);
    close(fd);
    kvmux_options o;
    kvmux_options_init(&o);
    kvmux_client *c = NULL;
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", port, &o), KVMUX_EAUTH);
    if (c) kvmux_close(c);
}

static void check_auth(void) {
    rgroup g;
    REQUIRE(rgroup_start(&g, 3, authed) == 0);
    int leader = rgroup_stable_leader(&g, 15000);
    REQUIRE(leader >= 0);
    int f = (leader + 1) % g.n;
    expect_auth_refused(g.cport[leader]);
    expect_auth_refused(g.cport[f]);
    kvmux_client *c = connect_to(g.cport[leader], "s3cret");
    REQUIRE(c != NULL);
    CHECK_EQ(kvmux_set(c, "a", 1, "1", 1, 0, NULL, 10000), 0);
    kvmux_close(c);
    c = connect_to(g.cport[f], "s3cret");
    REQUIRE(c != NULL);
    CHECK_EQ(kvmux_set(c, "a", 1, "2", 1, 0, NULL, 10000), KVMUX_ENOTLEADER);
    kvmux_close(c);
    rgroup_stop(&g);
}

static const char *peers_arg = "1=127.0.0.1:1/127.0.0.1:2";

static int run_kvmuxd(const char *const *extra, char *err, size_t cap) {
    const char *argv[32] = {KVMUXD_PATH, "--port", "0", "--replica-id", "1", "--replica-dir",
                            dir, "--peers", peers_arg};
    int n = 9;
    for (int k = 0; extra[k] && n < 31; k++) argv[n++] = extra[k];
    argv[n] = NULL;
    return test_run(argv, NULL, NULL, NULL, 0, err, cap, 10000);
}

static void check_refused_configs(void) {
    char err[2048];
    const char *prot[] = {"--bind", "0.0.0.0", "--peer-tls", "yes", "--peer-tls-cert", cert,
                          "--peer-tls-key", key, "--peer-tls-ca", ca, NULL};
    CHECK_EQ(run_kvmuxd(prot, err, sizeof err), 2);
    CHECK(strstr(err, "protected mode") != NULL);
    const char *noca[] = {"--peer-tls", "yes", "--peer-tls-cert", cert, "--peer-tls-key", key,
                          NULL};
    CHECK_EQ(run_kvmuxd(noca, err, sizeof err), 2);
    CHECK(strstr(err, "missing: CA") != NULL);
    const char *half[] = {"--peer-tls-ca", ca, NULL};
    CHECK_EQ(run_kvmuxd(half, err, sizeof err), 2);
    CHECK(strstr(err, "--peer-tls is no") != NULL);
    const char *bad[] = {"--peer-tls", "yes", "--peer-tls-cert", "/nonexistent/peer.pem",
                         "--peer-tls-key", key, "--peer-tls-ca", ca, NULL};
    CHECK(run_kvmuxd(bad, err, sizeof err) != 0);
    CHECK(strstr(err, "/nonexistent/peer.pem") != NULL);
    const char *range[] = {"--peer-tls", "yes", "--tls-cert", cert, "--tls-key", key,
                           "--tls-ca", ca, "--peer-tls-handshake-timeout", "5", NULL};
    CHECK_EQ(run_kvmuxd(range, err, sizeof err), 2);
    CHECK(strstr(err, "--peer-tls-handshake-timeout") != NULL);
    /* The Raft port taken: the start fails cleanly (the transport is
     * released without ever listening; ASan checks the teardown). */
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof a;
    REQUIRE(busy >= 0 && bind(busy, (struct sockaddr *)&a, sizeof a) == 0 && listen(busy, 1) == 0 &&
            getsockname(busy, (struct sockaddr *)&a, &sl) == 0);
    char peers[64];
    snprintf(peers, sizeof peers, "1=127.0.0.1:%u/127.0.0.1:2", ntohs(a.sin_port));
    peers_arg = peers;
    const char *taken[] = {"--peer-tls", "yes", "--peer-tls-cert", cert, "--peer-tls-key", key,
                           "--peer-tls-ca", ca, NULL};
    CHECK(run_kvmuxd(taken, err, sizeof err) > 0);
    CHECK(strstr(err, "listen") != NULL);
    if (!strstr(err, "listen")) fprintf(stderr, "busy Raft port: %s\n", err);
    peers_arg = "1=127.0.0.1:1/127.0.0.1:2";
    close(busy);

    /* The options from a configuration file (every long option is). */
    char conf[160];
    snprintf(conf, sizeof conf, "%s/kvmuxd.conf", dir);
    FILE *fp = fopen(conf, "w");
    REQUIRE(fp != NULL);
    fprintf(fp, "peer-tls yes\npeer-tls-cert %s\npeer-tls-key %s\npeer-tls-ca %s\n"
                "peer-tls-handshake-timeout 1500\n", cert, key, ca);
    fclose(fp);
    const char *fromfile[] = {"--config", conf, "--check-config", NULL};
    CHECK_EQ(run_kvmuxd(fromfile, err, sizeof err), 0);
    const char *override[] = {"--config", conf, "--check-config", "--peer-tls", "no", NULL};
    CHECK_EQ(run_kvmuxd(override, err, sizeof err), 2); /* paths left without --peer-tls */
    CHECK(strstr(err, "--peer-tls is no") != NULL);
}

int main(void) {
    gen_certs();
    check_refused_configs();
    check_group();
    check_auth();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_report();
}
