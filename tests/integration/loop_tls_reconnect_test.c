/* Event-loop mode (kvmux_async_connect) with TLS and automatic reconnect,
 * through REAL loops -- libuv (adapters/libuv.h) and libevent
 * (adapters/libevent.h) -- against the real kvmuxd:
 *   - TLS: the handshake and every record driven by the loop's readiness
 *     events: a request submitted before the handshake, a 3 MiB value
 *     (fragmented, many records) written and read back byte for byte, 200
 *     requests in flight; a wrong CA and a plaintext server fail the
 *     connection with KVMUX_ETLS through the status callback;
 *   - reconnect, plaintext and TLS: kvmuxd killed (-9) with a WAIT in
 *     flight -> its callback gets KVMUX_ECLOSED and the status callback the
 *     loss; a request submitted while the server is down waits in the
 *     backlog, attempts fail (connection refused) with backoff, the server
 *     restarts on the same port -> the request succeeds, later ones too,
 *     kvmux_async_fd is the same descriptor and kvmux_reconnect_stats
 *     counts the reconnect; kvmux_close while down fails the backlog with
 *     KVMUX_ECLOSED; a first connect that is refused is retried the same
 *     way until a server appears, and a graceful stop (GOAWAY) too.
 * Every wait is bounded (run_until). Single-threaded: everything runs on
 * this thread, as the event-loop mode requires. */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "kvmux.h"
#include "kvmux/adapters/libevent.h"
#include "kvmux/adapters/libuv.h"
#include "testutil.h"

/* ---- one driver per loop library ---- */

typedef struct driver {
    const char *name;
    uv_loop_t *uv;            /* exactly one of uv / ev */
    struct event_base *ev;
} driver;

static int drv_attach(driver *d, kvmux_client *c) {
    return d->uv ? kvmux_libuv_attach(c, d->uv) : kvmux_libevent_attach(c, d->ev);
}

static void on_uv_slice(uv_timer_t *t) {
    uv_stop(t->loop);
}

static void on_ev_slice(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    event_base_loopbreak((struct event_base *)arg);
}

/* Run d's loop for about ms milliseconds (a guard timer ends it). */
static void drv_run_for(driver *d, int ms) {
    if (d->uv) {
        uv_timer_t t;
        uv_timer_init(d->uv, &t);
        uv_update_time(d->uv);
        uv_timer_start(&t, on_uv_slice, (uint64_t)ms, 0);
        uv_run(d->uv, UV_RUN_DEFAULT);
        uv_timer_stop(&t);
        uv_close((uv_handle_t *)&t, NULL);
        uv_run(d->uv, UV_RUN_NOWAIT); /* let the close finish */
        return;
    }
    struct event *t = evtimer_new(d->ev, on_ev_slice, d->ev);
    REQUIRE(t);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    event_base_dispatch(d->ev);
    event_free(t);
}

/* Run d's loop until *flag is nonzero or ms pass. Returns *flag. */
static int run_until(driver *d, const int *flag, int ms) {
    int64_t end = test_now_ms() + ms;
    while (!*flag && test_now_ms() < end) drv_run_for(d, 20);
    return *flag;
}

/* ---- callbacks ---- */

typedef struct status_log {
    int calls, connected, last;
} status_log;

static void on_status(kvmux_client *c, int status, void *ud) {
    (void)c;
    status_log *s = ud;
    s->calls++;
    s->last = status;
    if (status == 0) s->connected++;
}

typedef struct result {
    int done;
    int rc;
    size_t len;
    uint8_t *value;      /* a copy of a GET's value */
} result;

static void on_reply(kvmux_client *c, int rc, kvmux_reply *r, void *ud) {
    (void)c;
    result *res = ud;
    res->done = 1;
    res->rc = rc;
    if (rc == 0 && r->value) {
        res->value = malloc(r->value_len ? r->value_len : 1);
        REQUIRE(res->value);
        memcpy(res->value, r->value, r->value_len);
        res->len = r->value_len;
    }
}

static void submit(kvmux_client *c, kvmux_op op, const char *key, const void *val,
                   size_t vlen, result *res) {
    memset(res, 0, sizeof *res);
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = op;
    q.key = key;
    q.key_len = strlen(key);
    q.value = val;
    q.value_len = vlen;
    REQUIRE(kvmux_call_async(c, &q, 20000, on_reply, res) == 0);
}

static kvmux_client *connect_to(driver *d, uint16_t port, const kvmux_options *o,
                                status_log *st) {
    kvmux_client *c = NULL;
    REQUIRE(kvmux_async_connect(&c, "127.0.0.1", port, o) == 0);
    REQUIRE(kvmux_async_set_status_cb(c, on_status, st) == 0);
    REQUIRE(drv_attach(d, c) == 0);
    return c;
}

static void close_client(driver *d, kvmux_client *c) {
    kvmux_close(c);
    drv_run_for(d, 30); /* libuv closes the adapter's handles in the loop */
}

/* ---- TLS ---- */

#ifdef KVMUX_TLS_GEN_CERTS
static char pki[256], ca[320], other_ca[320], cert[320], key[320];

static void make_pki(void) {
    snprintf(pki, sizeof pki, "/tmp/kvmux-looptls-XXXXXX");
    REQUIRE(mkdtemp(pki) != NULL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sh '%s' '%s'", KVMUX_TLS_GEN_CERTS, pki);
    REQUIRE(system(cmd) == 0);
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(other_ca, sizeof other_ca, "%s/other-ca.pem", pki);
    snprintf(cert, sizeof cert, "%s/server.pem", pki);
    snprintf(key, sizeof key, "%s/server.key", pki);
}

static void remove_pki(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", pki);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", pki);
}

static void tls_opts(kvmux_options *o, const char *cafile) {
    kvmux_options_init(o);
    o->tls = 1;
    o->tls_ca_file = cafile;
    o->tls_server_name = "localhost";
    o->connect_timeout_ms = 5000;
    o->request_timeout_ms = 20000;
}

/* The connection must fail with KVMUX_ETLS, reported to the status
 * callback, with needle in kvmux_connection_error. */
static void expect_tls_failure(driver *d, uint16_t port, const kvmux_options *o,
                               const char *needle) {
    status_log st = {0, 0, 0};
    kvmux_client *c = connect_to(d, port, o, &st);
    result r;
    submit(c, KVMUX_GET, "x", NULL, 0, &r);
    run_until(d, &r.done, 10000);
    CHECK(r.done);
    CHECK_EQ(st.calls, 1);
    CHECK_EQ(st.connected, 0);
    CHECK_EQ(st.last, KVMUX_ETLS);
    CHECK_EQ(r.rc, KVMUX_ETLS);
    char msg[512];
    CHECK_EQ(kvmux_connection_error(c, msg, sizeof msg), KVMUX_ETLS);
    fprintf(stderr, "%s: expected TLS failure: %s\n", d->name, msg);
    if (!strstr(msg, needle)) {
        fprintf(stderr, "%s: message '%s' lacks '%s'\n", d->name, msg, needle);
        CHECK(0);
    }
    close_client(d, c);
}

static void test_tls(driver *d, uint16_t tls_port, uint16_t plain_port) {
    kvmux_options o;
    tls_opts(&o, ca);
    status_log st = {0, 0, 0};
    kvmux_client *c = connect_to(d, tls_port, &o, &st);
    result r;
    submit(c, KVMUX_SET, "lt:a", "hello", 5, &r); /* waits for both handshakes */
    CHECK(run_until(d, &r.done, 10000));
    CHECK_EQ(r.rc, 0);
    CHECK_EQ(st.connected, 1);

    /* 3 MiB: fragmented on v2, sealed into many records each way. */
    size_t big = 3u << 20;
    uint8_t *pat = test_pattern(big, 7);
    submit(c, KVMUX_SET, "lt:big", pat, big, &r);
    CHECK(run_until(d, &r.done, 30000));
    CHECK_EQ(r.rc, 0);
    submit(c, KVMUX_GET, "lt:big", NULL, 0, &r);
    CHECK(run_until(d, &r.done, 30000));
    CHECK_EQ(r.rc, 0);
    CHECK(r.len == big && r.value && memcmp(r.value, pat, big) == 0);
    free(r.value);
    free(pat);

    enum { N = 200 };
    static result many[N];
    for (int i = 0; i < N; i++) submit(c, KVMUX_GET, "lt:a", NULL, 0, &many[i]);
    int64_t end = test_now_ms() + 20000;
    int done = 0;
    while (done < N && test_now_ms() < end) {
        drv_run_for(d, 20);
        done = 0;
        for (int i = 0; i < N; i++) done += many[i].done;
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        ok += many[i].done && many[i].rc == 0 && many[i].len == 5 &&
              memcmp(many[i].value, "hello", 5) == 0;
        free(many[i].value);
    }
    CHECK_EQ(ok, N);
    close_client(d, c);

    tls_opts(&o, other_ca);
    expect_tls_failure(d, tls_port, &o, "certificate verify failed");
    tls_opts(&o, ca);
    expect_tls_failure(d, plain_port, &o, "does not speak TLS");
}
#endif

/* ---- reconnect ---- */

static void test_reconnect(driver *d, int tls) {
    const char *const *args = NULL;
#ifdef KVMUX_TLS_GEN_CERTS
    const char *targs[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    if (tls) args = targs;
#else
    REQUIRE(!tls);
#endif
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);
    uint16_t port = srv.port;
    kvmux_options o;
#ifdef KVMUX_TLS_GEN_CERTS
    if (tls) tls_opts(&o, ca);
    else kvmux_options_init(&o);
#else
    kvmux_options_init(&o);
#endif
    o.reconnect = 1;
    o.reconnect_min_backoff_ms = 10;
    o.reconnect_max_backoff_ms = 100;
    o.request_timeout_ms = 20000;
    status_log st = {0, 0, 0};
    kvmux_client *c = connect_to(d, port, &o, &st);
    int fd0 = kvmux_async_fd(c);
    result r;
    submit(c, KVMUX_SET, "rc:a", "1", 1, &r);
    CHECK(run_until(d, &r.done, 10000));
    CHECK_EQ(r.rc, 0);
    CHECK_EQ(st.connected, 1);

    /* A WAIT the server parks: in flight when the server dies. */
    result w;
    memset(&w, 0, sizeof w);
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = KVMUX_WAIT;
    q.key = "rc:absent";
    q.key_len = 9;
    q.wait_ms = 15000;
    REQUIRE(kvmux_call_async(c, &q, 20000, on_reply, &w) == 0);
    drv_run_for(d, 200);
    CHECK(!w.done);
    test_server_kill(&srv);
    CHECK(run_until(d, &w.done, 10000));
    CHECK_EQ(w.rc, KVMUX_ECLOSED);
    CHECK(st.calls >= 2 && st.last != 0); /* the loss was reported */

    /* Submitted while down: waits in the backlog, attempts fail. */
    submit(c, KVMUX_SET, "rc:b", "2", 1, &r);
    drv_run_for(d, 400);
    CHECK(!r.done);
    uint64_t attempts = 0, reconnects = 0;
    CHECK_EQ(kvmux_reconnect_stats(c, &attempts, &reconnects), 0);
    CHECK(attempts >= 2);
    CHECK_EQ(reconnects, 0);
    CHECK(kvmux_connection_error(c, NULL, 0) != 0);

    REQUIRE(test_server_start_on_port(&srv, port, args) == 0);
    CHECK(run_until(d, &r.done, 15000));
    CHECK_EQ(r.rc, 0);
    CHECK_EQ(st.connected, 2);
    CHECK_EQ(st.last, 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    submit(c, KVMUX_GET, "rc:b", NULL, 0, &r);
    CHECK(run_until(d, &r.done, 10000));
    CHECK_EQ(r.rc, 0);
    CHECK(r.len == 1 && r.value && r.value[0] == '2');
    free(r.value);
    CHECK_EQ(kvmux_async_fd(c), fd0);
    CHECK_EQ(kvmux_reconnect_stats(c, &attempts, &reconnects), 0);
    CHECK_EQ(reconnects, 1);

    /* Down again, then closed during the backoff: the backlog fails. */
    test_server_kill(&srv);
    int64_t end = test_now_ms() + 10000;
    while (st.last == 0 && test_now_ms() < end) drv_run_for(d, 20);
    CHECK(st.last != 0);
    submit(c, KVMUX_SET, "rc:c", "3", 1, &r);
    drv_run_for(d, 50);
    CHECK(!r.done);
    close_client(d, c);
    CHECK(r.done);
    CHECK_EQ(r.rc, KVMUX_ECLOSED);
    fprintf(stderr, "%s reconnect%s: %llu attempts\n", d->name, tls ? " (TLS)" : "",
            (unsigned long long)attempts);
}

/* With reconnect on, a first connect that is refused is retried like a
 * loss: the request submitted at once waits, and succeeds when a server
 * appears on the port. */
static void test_first_connect_refused(driver *d) {
    test_server srv;
    REQUIRE(test_server_start(&srv, NULL) == 0);
    uint16_t port = srv.port;
    test_server_kill(&srv); /* nothing listens there now */
    kvmux_options o;
    kvmux_options_init(&o);
    o.reconnect = 1;
    o.reconnect_min_backoff_ms = 10;
    o.reconnect_max_backoff_ms = 50;
    status_log st = {0, 0, 0};
    kvmux_client *c = connect_to(d, port, &o, &st);
    result r;
    submit(c, KVMUX_SET, "fc:a", "1", 1, &r);
    drv_run_for(d, 300);
    CHECK(!r.done);
    CHECK(st.calls >= 2);
    CHECK_EQ(st.connected, 0);
    CHECK_EQ(st.last, KVMUX_ECONNECT);
    REQUIRE(test_server_start_on_port(&srv, port, NULL) == 0);
    CHECK(run_until(d, &r.done, 15000));
    CHECK_EQ(r.rc, 0);
    CHECK_EQ(st.connected, 1);
    uint64_t reconnects = 0;
    CHECK_EQ(kvmux_reconnect_stats(c, NULL, &reconnects), 0);
    CHECK_EQ(reconnects, 1);

    /* A graceful stop (SIGTERM: GOAWAY, drain, close) is a loss like any
     * other: reconnected once the server is back. */
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
    int64_t end = test_now_ms() + 10000;
    while (st.last == 0 && test_now_ms() < end) drv_run_for(d, 20);
    CHECK(st.last != 0);
    REQUIRE(test_server_start_on_port(&srv, port, NULL) == 0);
    submit(c, KVMUX_SET, "fc:b", "2", 1, &r);
    CHECK(run_until(d, &r.done, 15000));
    CHECK_EQ(r.rc, 0);
    CHECK_EQ(st.connected, 2);
    close_client(d, c);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t uvl;
    REQUIRE(uv_loop_init(&uvl) == 0);
    struct event_base *base = event_base_new();
    REQUIRE(base);
    driver drivers[2] = {{"libuv", &uvl, NULL}, {"libevent", NULL, base}};
#ifdef KVMUX_TLS_GEN_CERTS
    make_pki();
    test_server tls_srv, plain;
    const char *targs[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    REQUIRE(test_server_start(&tls_srv, targs) == 0);
    REQUIRE(test_server_start(&plain, NULL) == 0);
    for (int i = 0; i < 2; i++) test_tls(&drivers[i], tls_srv.port, plain.port);
    CHECK_EQ(test_server_stop(&tls_srv, 10000), 0);
    CHECK_EQ(test_server_stop(&plain, 10000), 0);
#endif
    for (int i = 0; i < 2; i++) {
        test_first_connect_refused(&drivers[i]);
        test_reconnect(&drivers[i], 0);
#ifdef KVMUX_TLS_GEN_CERTS
        test_reconnect(&drivers[i], 1);
#endif
    }
#ifdef KVMUX_TLS_GEN_CERTS
    remove_pki();
#endif
    drv_run_for(&drivers[0], 10);
    CHECK_EQ(uv_loop_close(&uvl), 0);
    event_base_free(base);
    return test_report();
}
