/* TLS between the real kvmuxd and libkvmux / kvmux-cli, over loopback.
 *
 * The test makes its own PKI (tests/tls/gen_certs.sh, openssl CLI) in a
 * temporary directory, removed at the end, and starts kvmuxd with
 * --tls-cert/--tls-key on port 0. Checked:
 *   - sync round trips (set/get/incr/cas/del/ping) with the name verified
 *     ("localhost" against the certificate) and an IP literal as host;
 *   - an 8 MiB value both ways (fragmented over v2, many TLS records);
 *   - wrong CA, wrong name -> KVMUX_ETLS with the precise reason, quickly;
 *   - a plaintext client on the TLS port -> KVMUX_EPROTO "requires TLS";
 *     a TLS client on a plaintext port -> KVMUX_ETLS "does not speak TLS";
 *     the server goes on serving others;
 *   - a connection that stalls mid-handshake (half a ClientHello) is closed
 *     by --handshake-timeout, and counted; an HTTP request at once;
 *   - keepalive PINGs over TLS (the reader's poll path);
 *   - a server started with --tls-ca refuses a client without a
 *     certificate (KVMUX_ETLS) and accepts one with;
 *   - automatic reconnect redoes the TLS handshake;
 *   - kvmux-cli --cacert/--sni round trip, and its exit code 4 on a bad CA.
 * Built as tls_concurrent_test (TLS_CONCURRENT) it runs only the load part:
 * 16 threads sharing one TLS connection (reader and writer threads on one
 * SSL object), sync and async calls mixed -- the one run under TSan. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvmux.h"
#include "testutil.h"

static char dir[256];
static char ca[320], other_ca[320], cert[320], key[320], ccert[320], ckey[320];

static void make_pki(void) {
    snprintf(dir, sizeof dir, "/tmp/kvmux-tls-XXXXXX");
    REQUIRE(mkdtemp(dir) != NULL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sh '%s' '%s'", KVMUX_TLS_GEN_CERTS, dir);
    REQUIRE(system(cmd) == 0);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(other_ca, sizeof other_ca, "%s/other-ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ccert, sizeof ccert, "%s/client.pem", dir);
    snprintf(ckey, sizeof ckey, "%s/client.key", dir);
}

static void remove_pki(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void tls_opts(kvmux_options *o, const char *cafile, const char *name) {
    kvmux_options_init(o);
    o->tls = 1;
    o->tls_ca_file = cafile;
    o->tls_server_name = name;
    o->connect_timeout_ms = 3000;
    o->request_timeout_ms = 10000;
}

/* Connect expecting failure code want, with msg containing needle. */
__attribute__((unused)) static void expect_fail(uint16_t port, const kvmux_options *o, int want, const char *needle) {
    kvmux_client *c = NULL;
    int64_t t0 = test_now_ms();
    int rc = kvmux_connect(&c, "127.0.0.1", port, o);
    int64_t took = test_now_ms() - t0;
    CHECK_EQ(rc, want);
    char msg[512] = "";
    kvmux_connection_error(NULL, msg, sizeof msg);
    if (!strstr(msg, needle)) fprintf(stderr, "message '%s' lacks '%s'\n", msg, needle);
    CHECK(strstr(msg, needle) != NULL);
    CHECK(took < 2500); /* a clear failure, not the connect timeout */
    if (rc == 0) kvmux_close(c);
}

__attribute__((unused)) static void check_round_trips(kvmux_client *c) {
    uint64_t v1 = 0, v2 = 0;
    CHECK_EQ(kvmux_set(c, "k", 1, "hello", 5, 0, &v1, -1), 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "k", 1, &v, -1), 0);
    if (v) {
        CHECK(v->len == 5 && memcmp(v->data, "hello", 5) == 0);
        CHECK_EQ(v->version, v1);
        kvmux_value_free(v);
    }
    CHECK_EQ(kvmux_cas(c, "k", 1, v1, "world", 5, 0, &v2, -1), 0);
    CHECK(v2 > v1);
    int64_t n = 0;
    CHECK_EQ(kvmux_incr(c, "n", 1, 41, &n, -1), 0);
    CHECK_EQ(kvmux_incr(c, "n", 1, 1, &n, -1), 0);
    CHECK_EQ(n, 42);
    CHECK_EQ(kvmux_del(c, "n", 1, -1), 0);
    CHECK_EQ(kvmux_del(c, "k", 1, -1), 0);
    CHECK_EQ(kvmux_get(c, "k", 1, &v, -1), KVMUX_ENOTFOUND);
    CHECK_EQ(kvmux_ping(c, -1), 0);
}

/* ---- 16 threads on one TLS connection ---- */

typedef struct worker {
    kvmux_client *c;
    int id;
    int ops;
    int errors;
} worker;

typedef struct async_tally {
    pthread_mutex_t mu;
    int done, ok;
} async_tally;

static void on_reply(kvmux_client *c, int result, kvmux_reply *r, void *ud) {
    (void)c, (void)r;
    async_tally *t = ud;
    pthread_mutex_lock(&t->mu);
    t->done++;
    if (result == 0 || result == KVMUX_ENOTFOUND) t->ok++;
    pthread_mutex_unlock(&t->mu);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    char k[32], val[200];
    async_tally tally = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
    int async_sent = 0;
    for (int i = 0; i < w->ops; i++) {
        int kl = snprintf(k, sizeof k, "w%d-%d", w->id, i % 50);
        int vl = snprintf(val, sizeof val, "value-%d-%d-%0*d", w->id, i, (i * 7) % 150, 0);
        if (i % 4 == 3) {
            kvmux_request rq;
            memset(&rq, 0, sizeof rq);
            rq.op = KVMUX_GET;
            rq.key = k;
            rq.key_len = (size_t)kl;
            if (kvmux_call_async(w->c, &rq, -1, on_reply, &tally) == 0) async_sent++;
            else w->errors++;
            continue;
        }
        if (kvmux_set(w->c, k, (size_t)kl, val, (size_t)vl, 0, NULL, -1) != 0) {
            w->errors++;
            continue;
        }
        kvmux_value *v = NULL;
        if (kvmux_get(w->c, k, (size_t)kl, &v, -1) != 0 || v->len != (size_t)vl ||
            memcmp(v->data, val, (size_t)vl) != 0)
            w->errors++;
        kvmux_value_free(v);
    }
    for (int spin = 0; spin < 10000; spin++) {
        pthread_mutex_lock(&tally.mu);
        int done = tally.done;
        pthread_mutex_unlock(&tally.mu);
        if (done == async_sent) break;
        test_sleep_ms(1);
    }
    pthread_mutex_lock(&tally.mu);
    if (tally.done != async_sent || tally.ok != async_sent) w->errors++;
    pthread_mutex_unlock(&tally.mu);
    return NULL;
}

static void test_concurrent(uint16_t port) {
    kvmux_options o;
    tls_opts(&o, ca, "localhost");
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    enum { NT = 16 };
    pthread_t th[NT];
    worker w[NT];
    int ops = (int)(2000 * test_scale());
    if (ops < 50) ops = 50;
    for (int i = 0; i < NT; i++) {
        w[i] = (worker){c, i, ops, 0};
        REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    int errors = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        errors += w[i].errors;
    }
    CHECK_EQ(errors, 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

#ifndef TLS_CONCURRENT

static void test_large_value(uint16_t port) {
    kvmux_options o;
    tls_opts(&o, ca, "localhost");
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    size_t len = 8u << 20;
    uint8_t *big = malloc(len);
    REQUIRE(big != NULL);
    for (size_t i = 0; i < len; i++) big[i] = (uint8_t)(i * 2654435761u >> 13);
    CHECK_EQ(kvmux_set(c, "big", 3, big, len, 0, NULL, 30000), 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "big", 3, &v, 30000), 0);
    if (v) {
        CHECK_EQ(v->len, len);
        CHECK(v->len == len && memcmp(v->data, big, len) == 0);
        kvmux_value_free(v);
    }
    CHECK_EQ(kvmux_ping(c, -1), 0); /* small frames still flow */
    free(big);
    kvmux_close(c);
}

/* Half a ClientHello, then silence: the handshake timeout closes it. */
static void test_stalled_handshake(uint16_t port) {
    int fd = test_connect_raw(port, 3000);
    REQUIRE(fd >= 0);
    static const uint8_t partial[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00};
    CHECK_EQ(test_write_all(fd, partial, sizeof partial), 0);
    int64_t t0 = test_now_ms();
    CHECK_EQ(test_wait_closed(fd, 4000), 1);
    int64_t took = test_now_ms() - t0;
    CHECK(took >= 300); /* the timeout is 500 ms: not closed at once */
    close(fd);
    /* Nothing at all sent: same. */
    fd = test_connect_raw(port, 3000);
    REQUIRE(fd >= 0);
    CHECK_EQ(test_wait_closed(fd, 4000), 1);
    close(fd);
}

/* Not TLS and not kvmux (an HTTP request): the handshake fails at once,
 * well before the handshake timeout. */
static void test_garbage(uint16_t port) {
    int fd = test_connect_raw(port, 3000);
    REQUIRE(fd >= 0);
    static const char req[] = "GET / HTTP/1.0\r\n\r\n";
    CHECK_EQ(test_write_all(fd, req, sizeof req - 1), 0);
    int64_t t0 = test_now_ms();
    CHECK_EQ(test_wait_closed(fd, 4000), 1);
    CHECK(test_now_ms() - t0 < 400);
    close(fd);
}

/* Keepalive on: the reader waits in poll(2) between reads, so bytes
 * OpenSSL already holds must not be left waiting for the socket. */
static void test_keepalive(uint16_t port) {
    kvmux_options o;
    tls_opts(&o, ca, "localhost");
    o.keepalive_interval_ms = 50;
    o.keepalive_timeout_ms = 2000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(kvmux_set(c, "ka", 2, "v", 1, 0, NULL, 2000), 0);
        test_sleep_ms(120); /* keepalive PINGs go out meanwhile */
    }
    check_round_trips(c);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
}

static uint64_t stat_value(kvmux_client *c, const char *name) {
    kvmux_value *v = NULL;
    if (kvmux_stats(c, name, &v, -1) != 0) return UINT64_MAX;
    uint64_t n = UINT64_MAX;
    const char *p = strstr((const char *)v->data, name);
    if (p && p[strlen(name)] == ':') n = strtoull(p + strlen(name) + 1, NULL, 10);
    kvmux_value_free(v);
    return n;
}

static int run_cli(uint16_t port, const char *args, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' -h 127.0.0.1 -p %u %s 2>&1", KVMUX_CLI_PATH,
             (unsigned)port, args);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(uint16_t port) {
    char args[1024], out[2048];
    snprintf(args, sizeof args, "--cacert '%s' --sni localhost set clikey clival", ca);
    CHECK_EQ(run_cli(port, args, out, sizeof out), 0);
    CHECK(strncmp(out, "OK version=", 11) == 0);
    snprintf(args, sizeof args, "--cacert '%s' --sni localhost get clikey", ca);
    CHECK_EQ(run_cli(port, args, out, sizeof out), 0);
    CHECK(strcmp(out, "clival\n") == 0);
    snprintf(args, sizeof args, "--cacert '%s' --sni localhost get clikey", other_ca);
    CHECK_EQ(run_cli(port, args, out, sizeof out), 4);
    CHECK(strstr(out, "certificate verify failed") != NULL);
    CHECK_EQ(run_cli(port, "get clikey", out, sizeof out), 4); /* plaintext */
    CHECK(strstr(out, "requires TLS") != NULL);
}

static void test_client_certs(void) {
    test_server s;
    const char *args[] = {"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    kvmux_options o;
    tls_opts(&o, ca, "localhost");
    /* TLS 1.3: the server's refusal arrives after our side finished. */
    expect_fail(s.port, &o, KVMUX_ETLS, "certificate required");
    o.tls_cert_file = ccert;
    o.tls_key_file = ckey;
    kvmux_client *c = NULL;
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", s.port, &o), 0);
    if (c) {
        CHECK_EQ(kvmux_ping(c, -1), 0);
        kvmux_close(c);
    }
    CHECK_EQ(test_server_stop(&s, 5000), 0);
}

static void test_reconnect(void) {
    test_server s;
    const char *args[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    kvmux_options o;
    tls_opts(&o, ca, "localhost");
    o.reconnect = 1;
    o.reconnect_min_backoff_ms = 10;
    o.reconnect_max_backoff_ms = 100;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", s.port, &o) == 0);
    CHECK_EQ(kvmux_set(c, "r", 1, "1", 1, 0, NULL, -1), 0);
    uint16_t port = s.port;
    test_server_kill(&s);
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%u", (unsigned)port);
    const char *args2[] = {"--tls-cert", cert, "--tls-key", key, "--port", portbuf, NULL};
    REQUIRE(test_server_start(&s, args2) == 0);
    int rc = KVMUX_ECLOSED;
    for (int i = 0; i < 100 && rc != 0; i++) {
        rc = kvmux_set(c, "r", 1, "2", 1, 0, NULL, 1000);
        if (rc != 0) test_sleep_ms(20);
    }
    CHECK_EQ(rc, 0);
    uint64_t reconnects = 0;
    kvmux_reconnect_stats(c, NULL, &reconnects);
    CHECK(reconnects >= 1);
    kvmux_close(c);
    CHECK_EQ(test_server_stop(&s, 5000), 0);
}

#endif /* !TLS_CONCURRENT */

int main(void) {
    make_pki();
    test_server tls_srv;
    const char *args[] = {"--tls-cert", cert, "--tls-key", key, "--handshake-timeout", "500",
                          NULL};
    REQUIRE(test_server_start(&tls_srv, args) == 0);

#ifdef TLS_CONCURRENT
    test_concurrent(tls_srv.port);
#else
    test_server plain;
    REQUIRE(test_server_start(&plain, NULL) == 0);

    kvmux_options o;
    tls_opts(&o, ca, "localhost");
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", tls_srv.port, &o) == 0);
    check_round_trips(c);

    /* The certificate carries IP:127.0.0.1 as well: the host itself. */
    kvmux_client *c2 = NULL;
    tls_opts(&o, ca, NULL);
    CHECK_EQ(kvmux_connect(&c2, "127.0.0.1", tls_srv.port, &o), 0);
    if (c2) {
        CHECK_EQ(kvmux_ping(c2, -1), 0);
        kvmux_close(c2);
    }

    test_large_value(tls_srv.port);
    test_concurrent(tls_srv.port);

    tls_opts(&o, other_ca, "localhost");
    expect_fail(tls_srv.port, &o, KVMUX_ETLS, "certificate verify failed");
    tls_opts(&o, ca, "wrong.example");
    expect_fail(tls_srv.port, &o, KVMUX_ETLS, "hostname mismatch");
    kvmux_options plain_o;
    kvmux_options_init(&plain_o);
    plain_o.connect_timeout_ms = 3000;
    expect_fail(tls_srv.port, &plain_o, KVMUX_EPROTO, "requires TLS");
    tls_opts(&o, ca, "localhost");
    expect_fail(plain.port, &o, KVMUX_ETLS, "does not speak TLS");
    tls_opts(&o, ca, "localhost");
    o.tls_verify = 0; /* encrypted, not authenticated: any CA */
    o.tls_ca_file = other_ca;
    kvmux_client *c3 = NULL;
    CHECK_EQ(kvmux_connect(&c3, "127.0.0.1", tls_srv.port, &o), 0);
    if (c3) kvmux_close(c3);

    /* The event-loop mode takes TLS too (its traffic is tested through
     * real loops in tests/integration/loop_tls_reconnect_test.c); a client
     * never attached to a loop closes cleanly. */
    tls_opts(&o, ca, "localhost");
    kvmux_client *c4 = NULL;
    CHECK_EQ(kvmux_async_connect(&c4, "127.0.0.1", tls_srv.port, &o), 0);
    kvmux_close(c4);

    uint64_t before = stat_value(c, "handshake_timeouts");
    test_stalled_handshake(tls_srv.port);
    CHECK_EQ(stat_value(c, "handshake_timeouts"), before + 2);
    uint64_t failures = stat_value(c, "tls_handshake_failures");
    CHECK(failures >= 3);
    test_garbage(tls_srv.port);
    CHECK_EQ(stat_value(c, "tls_handshake_failures"), failures + 1);
    test_keepalive(tls_srv.port);

    /* After all that, the first connection still works, and the plain
     * server still serves plaintext clients. */
    check_round_trips(c);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    kvmux_close(c);
    kvmux_client *p = NULL;
    CHECK_EQ(kvmux_connect(&p, "127.0.0.1", plain.port, &plain_o), 0);
    if (p) {
        CHECK_EQ(kvmux_ping(p, -1), 0);
        kvmux_close(p);
    }

    test_cli(tls_srv.port);
    test_client_certs();
    test_reconnect();
    CHECK_EQ(test_server_stop(&plain, 5000), 0);
#endif
    CHECK_EQ(test_server_stop(&tls_srv, 5000), 0);
    remove_pki();
    return test_report();
}
