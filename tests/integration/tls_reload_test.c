/* SIGHUP renews kvmuxd's TLS certificate and key without dropping a
 * connection (real kvmuxd, two throwaway PKIs from tests/tls/gen_certs.sh):
 *   - started with PKI A: a client trusting CA A connects;
 *   - the config file now names PKI B's certificate and key, SIGHUP: a new
 *     client trusting only CA B connects, one trusting only CA A is
 *     refused (so new handshakes use the new certificate), and the
 *     connection made before the reload keeps working;
 *   - a key that does not match its certificate: event=reload.failed, and
 *     the server keeps serving PKI B. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmux.h"
#include "ops_util.h"
#include "testutil.h"

static kvmux_client *tls_connect(uint16_t port, const char *ca, int *rc) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 3000;
    o.request_timeout_ms = 3000;
    o.tls = 1;
    o.tls_ca_file = ca;
    o.tls_server_name = "localhost";
    kvmux_client *c = NULL;
    *rc = kvmux_connect(&c, "127.0.0.1", port, &o);
    return *rc == 0 ? c : NULL;
}

static int works(kvmux_client *c) {
    uint64_t ver;
    return kvmux_set(c, "k", 1, "v", 1, 0, &ver, 3000) == 0;
}

int main(void) {
    const char *d = ops_tmpdir();
    REQUIRE(d);
    char dir[64], a[96], b[96], cmd[1024], cfg[160], logp[160], text[1024];
    snprintf(dir, sizeof dir, "%s", d);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s %s && sh %s %s && sh %s %s", a, b,
             KVMUX_TLS_GEN_CERTS, a, KVMUX_TLS_GEN_CERTS, b);
    REQUIRE(system(cmd) == 0);
    snprintf(cfg, sizeof cfg, "%s/kvmuxd.conf", dir);
    snprintf(logp, sizeof logp, "%s/kvmuxd.log", dir);
    snprintf(text, sizeof text, "tls-cert %s/server.pem\ntls-key %s/server.key\n", a, a);
    REQUIRE(ops_write_file(cfg, text) == 0);

    test_server s;
    const char *args[] = {"--config", cfg, "--log-file", logp, "--threads", "2", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    ops_kill_at_exit(s.pid);
    char ca_a[160], ca_b[160];
    snprintf(ca_a, sizeof ca_a, "%s/ca.pem", a);
    snprintf(ca_b, sizeof ca_b, "%s/ca.pem", b);
    int rc;
    kvmux_client *old = tls_connect(s.port, ca_a, &rc);
    REQUIRE(old != NULL);
    CHECK(works(old));
    kvmux_client *x = tls_connect(s.port, ca_b, &rc);
    CHECK(x == NULL); /* before: only CA A verifies */
    if (x) kvmux_close(x);

    snprintf(text, sizeof text, "tls-cert %s/server.pem\ntls-key %s/server.key\n", b, b);
    REQUIRE(ops_write_file(cfg, text) == 0);
    CHECK_EQ(kill(s.pid, SIGHUP), 0);
    CHECK(ops_wait_file_count(logp, "event=reload.done", 1, 5000));
    for (int i = 0; i < 4; i++) { /* both loops take the new context */
        kvmux_client *nb = tls_connect(s.port, ca_b, &rc);
        CHECK_EQ(rc, 0);
        if (nb) {
            CHECK(works(nb));
            kvmux_close(nb);
        }
        kvmux_client *na = tls_connect(s.port, ca_a, &rc);
        CHECK(na == NULL);
        if (na) kvmux_close(na);
    }
    CHECK(works(old)); /* made with the old certificate, still up */

    /* A mismatched key: nothing changes. */
    snprintf(text, sizeof text, "tls-cert %s/server.pem\ntls-key %s/server.key\n", a, b);
    REQUIRE(ops_write_file(cfg, text) == 0);
    CHECK_EQ(kill(s.pid, SIGHUP), 0);
    CHECK(ops_wait_file_count(logp, "event=reload.failed", 1, 5000));
    kvmux_client *nb = tls_connect(s.port, ca_b, &rc);
    CHECK_EQ(rc, 0);
    if (nb) kvmux_close(nb);
    CHECK(works(old));

    kvmux_close(old);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    return test_report();
}
