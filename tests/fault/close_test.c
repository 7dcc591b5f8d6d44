/* Closing with callers inside: kvmux_close, refused connections, and a
 * server SIGTERM while WAITs are parked.
 *
 * 1. kvmux_close while 32 threads are blocked in calls on the client (8
 *    parked server-side holding every credit, 24 queued waiting for one):
 *    every call returns KVMUX_ECLOSED promptly, kvmux_close itself returns
 *    promptly and only after the callers have left the library. Leaks are
 *    LeakSanitizer's job in the ASan build.
 * 2. kvmux_connect failures are prompt and leave *out untouched: a port
 *    nobody listens on (KVMUX_ECONNECT), a listener that never answers
 *    HELLO (KVMUX_ETIMEDOUT after connect_timeout_ms), a peer that refuses
 *    the version (KVMUX_ENOVERSION), a peer that hangs up (an error, fast),
 *    bad arguments (KVMUX_EINVAL).
 * 3. SIGTERM with WAITs parked: kvmuxd exits 0 within its shutdown timeout
 *    and every caller gets a definite answer (KVMUX_ESHUTDOWN for
 *    SHUTTING_DOWN, or KVMUX_ECLOSED / KVMUX_EIO when the connection goes,
 *    or KVMUX_EPROTO carrying the server's ERROR SHUTTING_DOWN; never an
 *    EPROTO of the client's own making), never a hang.
 * 4. --max-connections: the connection over the limit is refused with
 *    ERROR TOO_MANY_CONNECTIONS (kvmux_connect fails promptly), the others
 *    carry on, and a closed connection makes room.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

#define NBLOCKED 32
#define LONG_WAIT_MS 60000
#define PROMPT_MS 1000
#define SHUTDOWN_TIMEOUT_MS 500

typedef struct caller {
    kvmux_client *c;
    int id;
    atomic_int started;
    atomic_int done;
    int rc;
    int64_t t_done;
} caller;

/* Thread body: one long WAIT; result and completion time into w. */
static void *waiter_main(void *arg) {
    caller *w = arg;
    char key[32];
    snprintf(key, sizeof key, "close:w%d", w->id);
    kvmux_value *v = NULL;
    atomic_store(&w->started, 1);
    w->rc = kvmux_wait(w->c, key, strlen(key), 0, LONG_WAIT_MS, &v, KVMUX_TIMEOUT_DEFAULT);
    w->t_done = test_now_ms();
    kvmux_value_free(v);
    atomic_store(&w->done, 1);
    return NULL;
}

/* How many of the n callers have returned. */
static int count_done(caller *cs, int n) {
    int d = 0;
    for (int i = 0; i < n; i++) d += atomic_load(&cs[i].done);
    return d;
}

/* Start n waiters on c and give them time to block. */
static void start_waiters(caller *cs, pthread_t *th, int n, kvmux_client *c, int base) {
    for (int i = 0; i < n; i++) {
        cs[i].c = c;
        cs[i].id = base + i;
        REQUIRE(pthread_create(&th[i], NULL, waiter_main, &cs[i]) == 0);
    }
    int64_t deadline = test_now_ms() + 5000;
    for (int i = 0; i < n; i++)
        while (!atomic_load(&cs[i].started) && test_now_ms() < deadline) test_sleep_ms(1);
    test_sleep_ms(300);
}

/* Join the callers if they all finished by deadline; otherwise report and
 * stop the test (a blocked thread would otherwise hang the process). */
static void join_or_die(caller *cs, pthread_t *th, int n, int64_t deadline, const char *what) {
    while (count_done(cs, n) < n && test_now_ms() < deadline) test_sleep_ms(1);
    int d = count_done(cs, n);
    CHECK_EQ(d, n);
    if (d != n) {
        fprintf(stderr, "[%s] %d callers still blocked\n", what, n - d);
        test_report();
        exit(1);
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

/* Case 1: kvmux_close with NBLOCKED callers inside (8 parked, 24
 * waiting for a credit). */
static void test_close_with_blocked_callers(void) {
    const char *const args[] = {"--max-outstanding", "8", NULL};
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);
    kvmux_client *c;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", srv.port, NULL) == 0);

    static caller cs[NBLOCKED];
    pthread_t th[NBLOCKED];
    start_waiters(cs, th, NBLOCKED, c, 0);
    CHECK_EQ(count_done(cs, NBLOCKED), 0);

    int64_t t0 = test_now_ms();
    kvmux_close(c);
    int64_t t_closed = test_now_ms();
    /* kvmux_close returns after the callers left the library; they set
     * their flag right after, so allow a moment. */
    join_or_die(cs, th, NBLOCKED, t_closed + 2000, "kvmux_close");
    int64_t max_lat = 0;
    int closed = 0;
    for (int i = 0; i < NBLOCKED; i++) {
        if (cs[i].t_done - t0 > max_lat) max_lat = cs[i].t_done - t0;
        if (cs[i].rc == KVMUX_ECLOSED)
            closed++;
        else
            fprintf(stderr, "caller %d: %d (%s)\n", i, cs[i].rc, kvmux_strerror(cs[i].rc));
    }
    printf("kvmux_close with %d blocked callers: close took %lld ms, max caller latency %lld ms\n",
           NBLOCKED, (long long)(t_closed - t0), (long long)max_lat);
    CHECK_EQ(closed, NBLOCKED);
    CHECK(t_closed - t0 < PROMPT_MS);
    CHECK(max_lat < PROMPT_MS);

    /* The server is fine and serves a new client. */
    REQUIRE(kvmux_connect(&c, "127.0.0.1", srv.port, NULL) == 0);
    CHECK_EQ(kvmux_set(c, "close:after", 11, "x", 1, 0, NULL, 5000), 0);
    kvmux_close(c);
    kvmux_close(NULL); /* allowed, no-op */
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

/* A listening socket on an ephemeral port; returns fd and sets *port. */
static int listen_ephemeral(uint16_t *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t al = sizeof a;
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    REQUIRE(listen(fd, 8) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

typedef struct fake_peer {
    int lfd;
    int mode; /* 0: refuse the version; 1: hang up at once */
} fake_peer;

/* Thread body: accept one connection, then refuse its HELLO (mode 0) or
 * hang up at once (mode 1). Bounded by 5 s socket timeouts. */
static void *fake_peer_main(void *arg) {
    fake_peer *p = arg;
    struct timeval tv = {5, 0};
    setsockopt(p->lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int fd = accept(p->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (p->mode == 0) {
        uint8_t in[4096];
        kvmux_frame f;
        if (test_read_frame(fd, in, sizeof in, &f) > 0 && f.type == KVMUX_FRAME_HELLO) {
            uint8_t out[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG];
            size_t n = kvmux_encode_error(out, KVMUX_HANDSHAKE_VERSION, 0,
                                          KVMUX_ERR_UNSUPPORTED_VERSION,
                                          "server speaks 7..9, client 1..1");
            test_write_all(fd, out, n);
        }
    }
    close(fd);
    return NULL;
}

/* Case 2: kvmux_connect failures. */
static void test_connect_failures(void) {
    kvmux_client *const sentinel = (kvmux_client *)(uintptr_t)0x1234;
    kvmux_client *c = sentinel;
    uint16_t port;

    /* Nobody listening. */
    int fd = listen_ephemeral(&port);
    close(fd);
    int64_t t0 = test_now_ms();
    int rc = kvmux_connect(&c, "127.0.0.1", port, NULL);
    CHECK_EQ(rc, KVMUX_ECONNECT);
    CHECK(c == sentinel);
    CHECK(test_now_ms() - t0 < PROMPT_MS);

    /* Listening but never answering HELLO: the connect timeout applies. */
    fd = listen_ephemeral(&port);
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 300;
    t0 = test_now_ms();
    rc = kvmux_connect(&c, "127.0.0.1", port, &o);
    int64_t dt = test_now_ms() - t0;
    printf("silent peer: %s after %lld ms (connect timeout 300)\n", kvmux_strerror(rc),
           (long long)dt);
    CHECK_EQ(rc, KVMUX_ETIMEDOUT);
    CHECK(c == sentinel);
    CHECK(dt >= 250 && dt < 2000);
    close(fd);

    /* A peer refusing our version, and a peer hanging up. */
    for (int mode = 0; mode < 2; mode++) {
        fake_peer p = {listen_ephemeral(&port), mode};
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, fake_peer_main, &p) == 0);
        t0 = test_now_ms();
        rc = kvmux_connect(&c, "127.0.0.1", port, NULL);
        dt = test_now_ms() - t0;
        printf("fake peer mode %d: %s after %lld ms\n", mode, kvmux_strerror(rc), (long long)dt);
        if (mode == 0)
            CHECK_EQ(rc, KVMUX_ENOVERSION);
        else
            CHECK(rc != 0);
        CHECK(c == sentinel);
        CHECK(dt < PROMPT_MS);
        pthread_join(t, NULL); /* bounded by the peer's 5 s accept/read timeouts */
        close(p.lfd);
    }

    CHECK_EQ(kvmux_connect(&c, NULL, 1, NULL), KVMUX_EINVAL);
    CHECK_EQ(kvmux_connect(NULL, "127.0.0.1", 1, NULL), KVMUX_EINVAL);
    CHECK(c == sentinel);
}

/* Loader for case 3: SET/GET until the connection is gone. Every answer
 * must be definite: OK, SHUTTING_DOWN (not processed) or a fatal error --
 * never a timeout. */
typedef struct loader {
    kvmux_client *c;
    int id;
    atomic_int done;
    long ok, shut, other;
    int last_rc;
    int64_t t_done;
} loader;

/* Thread body: the loop described above; counts into l. */
static void *loader_main(void *arg) {
    loader *l = arg;
    char key[32];
    snprintf(key, sizeof key, "close:l%d", l->id);
    for (long i = 0; i < 100000000L; i++) {
        int rc = kvmux_set(l->c, key, strlen(key), "v", 1, 0, NULL, 5000);
        l->last_rc = rc;
        if (rc == 0)
            l->ok++;
        else if (rc == KVMUX_ESHUTDOWN)
            l->shut++;
        else if (kvmux_is_fatal(rc))
            break;
        else
            l->other++;
    }
    l->t_done = test_now_ms();
    atomic_store(&l->done, 1);
    return NULL;
}

/* Case 3: SIGTERM with parked WAITs (and a few loaders in full flow). */
static void test_sigterm_with_parked_waits(void) {
    char st[32];
    snprintf(st, sizeof st, "%d", SHUTDOWN_TIMEOUT_MS);
    const char *const args[] = {"--shutdown-timeout", st, NULL};
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);
    kvmux_client *c;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", srv.port, NULL) == 0);

    enum { N = 16 };
    static caller cs[N];
    pthread_t th[N];
    enum { NL = 4 };
    static loader ls[NL];
    pthread_t lt[NL];
    for (int i = 0; i < NL; i++) {
        ls[i].c = c;
        ls[i].id = i;
        REQUIRE(pthread_create(&lt[i], NULL, loader_main, &ls[i]) == 0);
    }
    start_waiters(cs, th, N, c, 100);
    CHECK_EQ(count_done(cs, N), 0);

    int64_t t0 = test_now_ms();
    int status = test_server_stop(&srv, SHUTDOWN_TIMEOUT_MS + 5000);
    int64_t dt = test_now_ms() - t0;
    printf("SIGTERM with %d parked WAITs: exit status %d after %lld ms (shutdown timeout %d)\n",
           N, status, (long long)dt, SHUTDOWN_TIMEOUT_MS);
    CHECK_EQ(status, 0);
    CHECK(dt < SHUTDOWN_TIMEOUT_MS + 2000);

    join_or_die(cs, th, N, test_now_ms() + 3000, "SIGTERM");
    /* The server ends a drained connection with ERROR SHUTTING_DOWN, which
     * the client reports as KVMUX_EPROTO ("reported by the server") to the
     * calls it never read. That EPROTO is accepted when the connection's
     * error names the shutdown; any other EPROTO is the client misreading
     * the drain. */
    char cmsg[512] = "";
    int cerr = kvmux_connection_error(c, cmsg, sizeof cmsg);
    int drain_eproto = cerr == KVMUX_EPROTO && strcasestr(cmsg, "shutting") != NULL;
    printf("connection error after SIGTERM: %s '%s'\n", kvmux_strerror(cerr), cmsg);
    int definite = 0, shut = 0;
    for (int i = 0; i < N; i++) {
        if (cs[i].rc == KVMUX_ESHUTDOWN) shut++;
        if (cs[i].rc == KVMUX_ESHUTDOWN || cs[i].rc == KVMUX_ECLOSED || cs[i].rc == KVMUX_EIO ||
            (cs[i].rc == KVMUX_EPROTO && drain_eproto))
            definite++;
        else
            fprintf(stderr, "caller %d: %d (%s)\n", i, cs[i].rc, kvmux_strerror(cs[i].rc));
        CHECK(cs[i].t_done - t0 < SHUTDOWN_TIMEOUT_MS + 2000);
    }
    printf("callers: %d of %d definite (%d SHUTTING_DOWN, the rest the connection's end)\n",
           definite, N, shut);
    CHECK_EQ(definite, N);

    int64_t deadline = test_now_ms() + 3000;
    long ok = 0, lshut = 0, other = 0;
    for (int i = 0; i < NL; i++) {
        while (!atomic_load(&ls[i].done) && test_now_ms() < deadline) test_sleep_ms(1);
        CHECK(atomic_load(&ls[i].done));
        if (!atomic_load(&ls[i].done)) {
            test_report();
            exit(1);
        }
        pthread_join(lt[i], NULL);
        ok += ls[i].ok;
        lshut += ls[i].shut;
        other += ls[i].other;
        int fine = ls[i].last_rc == KVMUX_ECLOSED || ls[i].last_rc == KVMUX_EIO ||
                   (ls[i].last_rc == KVMUX_EPROTO && drain_eproto);
        CHECK(fine);
        if (!fine)
            fprintf(stderr, "loader %d ended with %d (%s)\n", i, ls[i].last_rc,
                    kvmux_strerror(ls[i].last_rc));
        CHECK(ls[i].t_done - t0 < SHUTDOWN_TIMEOUT_MS + 2000);
    }
    printf("loaders: %ld OK, %ld SHUTTING_DOWN, %ld other before the connection closed\n", ok,
           lshut, other);
    CHECK(ok > 0);
    CHECK_EQ(other, 0);

    /* Afterwards the connection is gone and calls fail fast. */
    kvmux_value *v = NULL;
    int64_t t1 = test_now_ms();
    int rc = kvmux_get(c, "close:x", 7, &v, 5000);
    kvmux_value_free(v);
    CHECK(kvmux_is_fatal(rc));
    CHECK(test_now_ms() - t1 < PROMPT_MS);
    t1 = test_now_ms();
    kvmux_close(c);
    CHECK(test_now_ms() - t1 < PROMPT_MS);
}

/* Case 4: --max-connections. Over the limit, a raw connection gets ERROR
 * TOO_MANY_CONNECTIONS and a close, kvmux_connect fails promptly, and the
 * connections already open are untouched; closing one makes room again. */
static void test_connection_limit(void) {
    const char *const args[] = {"--max-connections", "2", NULL};
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);
    kvmux_client *a, *b;
    REQUIRE(kvmux_connect(&a, "127.0.0.1", srv.port, NULL) == 0);
    REQUIRE(kvmux_connect(&b, "127.0.0.1", srv.port, NULL) == 0);

    int fd = test_connect_raw(srv.port, 3000);
    REQUIRE(fd >= 0);
    uint8_t in[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG + 64];
    kvmux_frame f;
    int n = test_read_frame(fd, in, sizeof in, &f);
    CHECK(n > 0);
    CHECK(n > 0 && f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_TOO_MANY_CONNECTIONS);
    CHECK(test_wait_closed(fd, 3000));
    close(fd);

    kvmux_client *const sentinel = (kvmux_client *)(uintptr_t)0x5678;
    kvmux_client *c = sentinel;
    int64_t t0 = test_now_ms();
    int rc = kvmux_connect(&c, "127.0.0.1", srv.port, NULL);
    int64_t dt = test_now_ms() - t0;
    char msg[256] = "";
    printf("connect over --max-connections: %s after %lld ms\n", kvmux_strerror(rc),
           (long long)dt);
    CHECK(rc == KVMUX_EPROTO || rc == KVMUX_ECONNECT || rc == KVMUX_ECLOSED);
    CHECK(c == sentinel);
    CHECK(dt < PROMPT_MS);

    CHECK_EQ(kvmux_set(a, "close:a", 7, "1", 1, 0, NULL, 5000), 0);
    CHECK_EQ(kvmux_set(b, "close:b", 7, "2", 1, 0, NULL, 5000), 0);
    kvmux_close(b);
    /* The server notices the close asynchronously: retry, boundedly. */
    rc = -1;
    for (int i = 0; i < 100 && rc != 0; i++) {
        rc = kvmux_connect(&c, "127.0.0.1", srv.port, NULL);
        if (rc != 0) test_sleep_ms(20);
    }
    CHECK_EQ(rc, 0);
    if (rc == 0) {
        kvmux_value *v = NULL;
        CHECK_EQ(kvmux_get(c, "close:a", 7, &v, 5000), 0);
        kvmux_value_free(v);
        kvmux_close(c);
    }
    CHECK_EQ(kvmux_connection_error(a, msg, sizeof msg), 0);
    kvmux_close(a);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

/* The four cases in order. */
int main(void) {
    test_close_with_blocked_callers();
    test_connect_failures();
    test_sigterm_with_parked_waits();
    test_connection_limit();
    return test_report();
}
