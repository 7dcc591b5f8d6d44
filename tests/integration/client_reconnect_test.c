/* Automatic reconnect (kvmux_options.reconnect) over
 * real sockets against the real kvmuxd: the server is SIGSTOPped so
 * requests sit in flight, SIGKILLed, and a new kvmuxd is started on the
 * SAME port (kvmuxd sets SO_REUSEADDR; the bind is retried a few times
 * anyway).
 *
 * Covered: in-flight calls get KVMUX_ECLOSED; calls made during the
 * outage wait and succeed after the restart (reconnect_wait = 1) or fail
 * fast (reconnect_wait = 0); an async request submitted during the outage
 * is sent after it; backoff grows and is capped (attempt counts against a
 * port with nothing listening); kvmux_close during backoff returns in
 * < 1 s; retry_reads resends an in-flight GET and PING but never a SET;
 * INCR under kill -9 with an AOF: never applied twice.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "testutil.h"

/* Start kvmuxd on exactly port (aof may be NULL), retrying the bind. */
static int start_on_port(test_server *s, uint16_t port, const char *aof) {
    const char *args[] = {"--aof", aof, NULL};
    return test_server_start_on_port(s, port, aof ? args : NULL);
}

static kvmux_options ropts(int wait, int retry, int minb, int maxb) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.reconnect = 1;
    o.reconnect_wait = wait;
    o.retry_reads = retry;
    o.reconnect_min_backoff_ms = minb;
    o.reconnect_max_backoff_ms = maxb;
    o.connect_timeout_ms = 2000;
    return o;
}

/* One blocking call in a thread. */
typedef struct job {
    kvmux_client *c;
    kvmux_op op;
    const char *key;
    int timeout_ms;
    int rc;
    int64_t ms;            /* how long the call took */
    pthread_t t;
} job;

static void *job_main(void *arg) {
    job *j = arg;
    int64_t t0 = test_now_ms();
    switch (j->op) {
    case KVMUX_GET: {
        kvmux_value *v = NULL;
        j->rc = kvmux_get(j->c, j->key, strlen(j->key), &v, j->timeout_ms);
        kvmux_value_free(v);
        break;
    }
    case KVMUX_SET:
        j->rc = kvmux_set(j->c, j->key, strlen(j->key), "x", 1, 0, NULL, j->timeout_ms);
        break;
    case KVMUX_PING:
        j->rc = kvmux_ping(j->c, j->timeout_ms);
        break;
    default:
        j->rc = 1;
    }
    j->ms = test_now_ms() - t0;
    return NULL;
}

static void job_start(job *j, kvmux_client *c, kvmux_op op, const char *key, int tmo) {
    memset(j, 0, sizeof *j);
    j->c = c;
    j->op = op;
    j->key = key;
    j->timeout_ms = tmo;
    REQUIRE(pthread_create(&j->t, NULL, job_main, j) == 0);
}

static void job_join(job *j) {
    pthread_join(j->t, NULL);
}

/* In-flight calls fail with ECLOSED; calls during the outage wait and
 * succeed on the restarted server; an async submit during the outage is
 * sent after it. */
static void test_inflight_and_wait(void) {
    test_server a, b, d;
    REQUIRE(test_server_start(&a, NULL) == 0);
    uint16_t port = a.port;
    kvmux_options o = ropts(1, 0, 20, 200);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    CHECK_EQ(kvmux_set(c, "k", 1, "v", 1, 0, NULL, 2000), 0);

    kill(a.pid, SIGSTOP); /* requests now sit unanswered */
    job g, s;
    job_start(&g, c, KVMUX_GET, "k", 10000);
    job_start(&s, c, KVMUX_SET, "k", 10000);
    test_sleep_ms(200);
    test_server_kill(&a);
    job_join(&g);
    job_join(&s);
    CHECK_EQ(g.rc, KVMUX_ECLOSED);
    CHECK_EQ(s.rc, KVMUX_ECLOSED);
    CHECK(g.ms < 3000);

    /* Outage: a call waits for the next connection. */
    job w;
    job_start(&w, c, KVMUX_SET, "o", 8000);
    test_sleep_ms(300);
    REQUIRE(start_on_port(&b, port, NULL) == 0);
    job_join(&w);
    CHECK_EQ(w.rc, 0);
    CHECK(w.ms >= 250);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "o", 1, &v, 2000), 0);
    CHECK(v && v->len == 1 && v->data[0] == 'x');
    kvmux_value_free(v);
    uint64_t att = 0, rec = 0;
    CHECK_EQ(kvmux_reconnect_stats(c, &att, &rec), 0);
    CHECK_EQ(rec, 1);
    CHECK(att >= 1);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);

    /* Async during the outage: backlogged, sent after the restart. */
    test_server_kill(&b);
    test_sleep_ms(100);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_SET;
    r.key = "a";
    r.key_len = 1;
    r.value = "async";
    r.value_len = 5;
    kvmux_future *f = NULL;
    CHECK_EQ(kvmux_call_future(c, &r, 8000, &f), 0);
    test_sleep_ms(200);
    CHECK(f && !kvmux_future_poll(f));
    REQUIRE(start_on_port(&d, port, NULL) == 0);
    if (f) {
        CHECK_EQ(kvmux_future_wait(f, 9000), 0);
        CHECK_EQ(kvmux_future_result(f, NULL), 0);
        kvmux_future_free(f);
    }
    v = NULL;
    CHECK_EQ(kvmux_get(c, "a", 1, &v, 2000), 0);
    CHECK(v && v->len == 5 && memcmp(v->data, "async", 5) == 0);
    kvmux_value_free(v);
    kvmux_close(c);
    test_server_stop(&d, 5000);
}

/* reconnect_wait = 0: calls during the outage fail fast with ECLOSED; the
 * client comes back by itself once the server does. */
static void test_fail_fast(void) {
    test_server a, b;
    REQUIRE(test_server_start(&a, NULL) == 0);
    uint16_t port = a.port;
    kvmux_options o = ropts(0, 0, 20, 100);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    CHECK_EQ(kvmux_ping(c, 2000), 0);
    test_server_kill(&a);
    int rc = 0;
    for (int i = 0; i < 100 && rc != KVMUX_ECLOSED; i++) {
        rc = kvmux_ping(c, 2000);
        if (rc != KVMUX_ECLOSED) test_sleep_ms(10);
    }
    CHECK_EQ(rc, KVMUX_ECLOSED);
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_set(c, "k", 1, "v", 1, 0, NULL, 5000), KVMUX_ECLOSED);
    CHECK(test_now_ms() - t0 < 100);
    CHECK(kvmux_connection_error(c, NULL, 0) != 0);
    REQUIRE(start_on_port(&b, port, NULL) == 0);
    rc = KVMUX_ECLOSED;
    for (int i = 0; i < 500 && rc != 0; i++) {
        rc = kvmux_ping(c, 2000);
        if (rc != 0) test_sleep_ms(10);
    }
    CHECK_EQ(rc, 0);
    kvmux_close(c);
    test_server_stop(&b, 5000);
}

/* Backoff against a port with nothing listening: uncapped it grows
 * (few attempts in 2 s), capped at 100 ms it keeps trying at that pace
 * (but does not spin); kvmux_close during the backoff returns in < 1 s. */
static void test_backoff(void) {
    test_server a;
    REQUIRE(test_server_start(&a, NULL) == 0);
    kvmux_options o1 = ropts(1, 0, 20, 60000);
    kvmux_options o2 = ropts(1, 0, 20, 100);
    kvmux_client *c1 = NULL, *c2 = NULL;
    REQUIRE(kvmux_connect(&c1, "127.0.0.1", a.port, &o1) == 0);
    REQUIRE(kvmux_connect(&c2, "127.0.0.1", a.port, &o2) == 0);
    test_server_kill(&a);
    test_sleep_ms(2000);
    uint64_t a1 = 0, a2 = 0, r1 = 9, r2 = 9;
    kvmux_reconnect_stats(c1, &a1, &r1);
    kvmux_reconnect_stats(c2, &a2, &r2);
    printf("backoff: uncapped %llu attempts, capped(100 ms) %llu attempts in 2 s\n",
           (unsigned long long)a1, (unsigned long long)a2);
    CHECK_EQ(r1, 0);
    CHECK_EQ(r2, 0);
    /* Uncapped, attempt n waits U[0, 20 * 2^n] ms: about 8 fit in 2 s. */
    CHECK(a1 >= 2 && a1 <= 15);
    /* Capped: each wait <= 100 ms, so >= ~19 attempts; about 40 expected. */
    CHECK(a2 >= 12 && a2 <= 200);
    CHECK(a2 > a1);
    int64_t t0 = test_now_ms();
    kvmux_close(c1);
    int64_t d1 = test_now_ms() - t0;
    t0 = test_now_ms();
    kvmux_close(c2);
    int64_t d2 = test_now_ms() - t0;
    CHECK(d1 < 1000);
    CHECK(d2 < 1000);
}

/* retry_reads: an in-flight GET and PING are resent on the new
 * connection; an in-flight SET is not; without the option a GET is not. */
static void test_retry_reads(void) {
    test_server a, b;
    REQUIRE(test_server_start(&a, NULL) == 0);
    uint16_t port = a.port;
    kvmux_options or = ropts(1, 1, 20, 100);
    kvmux_options on = ropts(1, 0, 20, 100);
    kvmux_client *cr = NULL, *cn = NULL;
    REQUIRE(kvmux_connect(&cr, "127.0.0.1", port, &or) == 0);
    REQUIRE(kvmux_connect(&cn, "127.0.0.1", port, &on) == 0);
    CHECK_EQ(kvmux_set(cr, "k", 1, "v", 1, 0, NULL, 2000), 0);
    kill(a.pid, SIGSTOP);
    job g, p, s, gn;
    job_start(&g, cr, KVMUX_GET, "k", 10000);
    job_start(&p, cr, KVMUX_PING, NULL, 10000);
    job_start(&s, cr, KVMUX_SET, "k2", 10000);
    job_start(&gn, cn, KVMUX_GET, "k", 10000);
    test_sleep_ms(200);
    test_server_kill(&a);
    test_sleep_ms(100);
    REQUIRE(start_on_port(&b, port, NULL) == 0);
    job_join(&g);
    job_join(&p);
    job_join(&s);
    job_join(&gn);
    /* The new server is empty: NOTFOUND is its answer to the resent GET. */
    CHECK_EQ(g.rc, KVMUX_ENOTFOUND);
    CHECK_EQ(p.rc, 0);
    CHECK_EQ(s.rc, KVMUX_ECLOSED);
    CHECK_EQ(gn.rc, KVMUX_ECLOSED);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(cr, "k2", 2, &v, 2000), KVMUX_ENOTFOUND); /* never resent */
    kvmux_value_free(v);
    kvmux_close(cr);
    kvmux_close(cn);
    test_server_stop(&b, 5000);
}

/* INCR under kill -9 with a durable AOF (--fsync always by default):
 * every acknowledged INCR is in the counter, and no INCR is applied
 * twice (an ECLOSED one may or may not have been applied once). */
#define INCR_THREADS 4
#define INCR_ACKS 60
typedef struct incr_job {
    kvmux_client *c;
    int acked, closed, other;
    pthread_t t;
} incr_job;

static void *incr_main(void *arg) {
    incr_job *j = arg;
    for (int i = 0; i < 100000 && j->acked < INCR_ACKS; i++) {
        int64_t n = 0;
        int rc = kvmux_incr(j->c, "ctr", 3, 1, &n, 10000);
        if (rc == 0) j->acked++;
        else if (rc == KVMUX_ECLOSED) j->closed++;
        else {
            j->other++;
            test_sleep_ms(5);
        }
        test_sleep_ms(1);
    }
    return NULL;
}

static void test_incr_once(void) {
    char dir[] = "/tmp/kvmux_reconnect_XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char aof[256];
    snprintf(aof, sizeof aof, "%s/aof", dir);
    const char *args[] = {"--aof", aof, NULL};
    test_server a, b;
    REQUIRE(test_server_start(&a, args) == 0);
    uint16_t port = a.port;
    kvmux_options o = ropts(1, 1, 20, 100);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    incr_job js[INCR_THREADS];
    memset(js, 0, sizeof js);
    for (int i = 0; i < INCR_THREADS; i++) {
        js[i].c = c;
        REQUIRE(pthread_create(&js[i].t, NULL, incr_main, &js[i]) == 0);
    }
    test_sleep_ms(60);
    test_server_kill(&a);
    test_sleep_ms(100);
    REQUIRE(start_on_port(&b, port, aof) == 0);
    int acked = 0, closed = 0, other = 0;
    for (int i = 0; i < INCR_THREADS; i++) {
        pthread_join(js[i].t, NULL);
        acked += js[i].acked;
        closed += js[i].closed;
        other += js[i].other;
    }
    kvmux_value *v = NULL;
    long long ctr = -1;
    CHECK_EQ(kvmux_get(c, "ctr", 3, &v, 2000), 0);
    if (v) {
        char buf[32];
        size_t n = v->len < sizeof buf - 1 ? v->len : sizeof buf - 1;
        memcpy(buf, v->data, n);
        buf[n] = 0;
        ctr = atoll(buf);
    }
    kvmux_value_free(v);
    printf("incr: acked %d, closed %d, other %d, counter %lld\n", acked, closed, other, ctr);
    CHECK_EQ(acked, INCR_THREADS * INCR_ACKS);
    CHECK_EQ(other, 0);
    CHECK(ctr >= acked);
    CHECK(ctr <= acked + closed);
    uint64_t rec = 0;
    kvmux_reconnect_stats(c, NULL, &rec);
    CHECK_EQ(rec, 1);
    kvmux_close(c);
    test_server_stop(&b, 5000);
    unlink(aof);
    rmdir(dir);
}

/* After a GOAWAY (SIGTERM) new calls wait for the next connection instead
 * of failing with ESHUTDOWN; a request the server accepted before it is
 * answered by it (not ECLOSED). */
typedef struct wait_job {
    kvmux_client *c;
    uint64_t version;      /* wait while the key's version is this */
    int rc;
    int64_t ms;
    pthread_t t;
} wait_job;

static void *wait_main(void *arg) {
    wait_job *j = arg;
    kvmux_value *v = NULL;
    int64_t t0 = test_now_ms();
    j->rc = kvmux_wait(j->c, "wk", 2, j->version, 3000, &v, 8000);
    j->ms = test_now_ms() - t0;
    kvmux_value_free(v);
    return NULL;
}

static void test_goaway(void) {
    test_server a, b;
    const char *args[] = {"--shutdown-timeout", "1500", NULL};
    REQUIRE(test_server_start(&a, args) == 0);
    uint16_t port = a.port;
    kvmux_options o = ropts(1, 0, 20, 100);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    CHECK_EQ(kvmux_set(c, "wk", 2, "v", 1, 0, NULL, 2000), 0);
    kvmux_value *v = NULL;
    REQUIRE(kvmux_get(c, "wk", 2, &v, 2000) == 0);
    uint64_t ver = v->version;
    kvmux_value_free(v);
    wait_job w;
    memset(&w, 0, sizeof w);
    w.c = c;
    w.version = ver;
    REQUIRE(pthread_create(&w.t, NULL, wait_main, &w) == 0);
    test_sleep_ms(100);
    kill(a.pid, SIGTERM); /* GOAWAY, drain the parked WAIT, exit */
    test_sleep_ms(100);
    job s;
    job_start(&s, c, KVMUX_SET, "after", 8000);
    test_server_stop(&a, 5000);
    test_sleep_ms(100);
    REQUIRE(start_on_port(&b, port, NULL) == 0);
    job_join(&s);
    pthread_join(w.t, NULL);
    CHECK_EQ(s.rc, 0);
    /* Parked when the GOAWAY came: answered by the draining server. */
    CHECK(w.rc != KVMUX_ECLOSED && w.rc != 0);
    CHECK(w.ms >= 150);
    v = NULL;
    CHECK_EQ(kvmux_get(c, "after", 5, &v, 2000), 0);
    kvmux_value_free(v);
    kvmux_close(c);
    test_server_stop(&b, 5000);
}

/* A keepalive failure (server stopped) reconnects too: the in-flight call
 * gets ECLOSED, kvmux_close during the stuck handshake of a reconnect
 * attempt returns in < 1 s, and once the server runs again the other
 * client is back. */
static void test_keepalive_reconnect(void) {
    test_server a;
    REQUIRE(test_server_start(&a, NULL) == 0);
    kvmux_options o = ropts(1, 0, 20, 100);
    o.keepalive_interval_ms = 100;
    o.keepalive_timeout_ms = 200;
    kvmux_client *c1 = NULL, *c2 = NULL;
    REQUIRE(kvmux_connect(&c1, "127.0.0.1", a.port, &o) == 0);
    REQUIRE(kvmux_connect(&c2, "127.0.0.1", a.port, &o) == 0);
    kill(a.pid, SIGSTOP);
    job p1, p2;
    job_start(&p1, c1, KVMUX_PING, NULL, 5000);
    job_start(&p2, c2, KVMUX_PING, NULL, 5000);
    job_join(&p1);
    job_join(&p2);
    CHECK_EQ(p1.rc, KVMUX_ECLOSED);
    CHECK_EQ(p2.rc, KVMUX_ECLOSED);
    CHECK(p1.ms < 2000);
    test_sleep_ms(300); /* reconnect attempts: TCP accepted, no HELLO_ACK */
    int64_t t0 = test_now_ms();
    kvmux_close(c1);
    CHECK(test_now_ms() - t0 < 1000);
    kill(a.pid, SIGCONT);
    int rc = 1;
    for (int i = 0; i < 100 && rc != 0; i++) {
        rc = kvmux_ping(c2, 3000);
        if (rc != 0) test_sleep_ms(20);
    }
    CHECK_EQ(rc, 0);
    uint64_t rec = 0;
    kvmux_reconnect_stats(c2, NULL, &rec);
    CHECK(rec >= 1);
    kvmux_close(c2);
    test_server_stop(&a, 5000);
}

int main(void) {
    test_inflight_and_wait();
    test_fail_fast();
    test_backoff();
    test_retry_reads();
    test_incr_once();
    test_goaway();
    test_keepalive_reconnect();
    return test_report();
}
