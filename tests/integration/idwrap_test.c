/* Request-id wrap-around and late replies.
 *
 * Guide lessons 3 and 8: a late reply must never reach the wrong caller, and
 * ids must survive wrapping the u32 space. kvmux_options.first_request_id
 * starts a client's ids just below the wrap so the test crosses it within a
 * few hundred requests.
 *
 * Phase 1: several clients starting at 0xFFFFFF00, 0xFFFFFFFE and
 *   0xFFFFFFFF run thousands of SET/GET pairs across the wrap from
 *   concurrent threads; every GET must return exactly the value its thread
 *   last SET on its own key.
 * Phase 2: the same near the wrap, mixed with calls that time out on the
 *   client while the server still owes an answer: kvmux_wait with a client
 *   timeout shorter than wait_ms. Then the answer is provoked (a SET on the
 *   waited key makes the server reply OK with a recognisable "LATE" value,
 *   or the WAIT simply expires server-side and replies TIMEOUT) while the
 *   same threads run many new calls. Any misrouted late reply shows up as a
 *   GET returning a LATE value, a foreign value, or KVMUX_ETIMEDOUT.
 *   The connection must stay healthy (unknown-id replies are dropped).
 *   Phase 2 runs twice: against the default 1024 credits and against a
 *   server granting only 4, where slots (and so ids) are reused at once.
 */
#include <pthread.h>
#include <string.h>

#include "kvmux.h"
#include "testutil.h"

#define CALL_TIMEOUT_MS 20000
#define NTHREADS 8
#define MAX_REPORTS 20

static atomic_int reports;


/* Count a failure and describe it (at most MAX_REPORTS times). */
static void fail(const char *what, int tid, long i, int rc, const kvmux_value *v) {
    atomic_fetch_add(&test_failed, 1);
    if (atomic_fetch_add(&reports, 1) < MAX_REPORTS)
        fprintf(stderr, "thread %d step %ld: %s: rc %d (%s) value '%s'\n", tid, i, what, rc,
                kvmux_strerror(rc), v ? (const char *)v->data : "(none)");
}

/* SET key to a unique value, GET it back; returns 0 if both were right. */
static int set_get(kvmux_client *c, int tid, long i, const char *key) {
    char val[64];
    snprintf(val, sizeof val, "own-%d-%ld", tid, i);
    uint64_t ver = 0;
    int rc = kvmux_set(c, key, strlen(key), val, strlen(val), 0, &ver, CALL_TIMEOUT_MS);
    if (rc != 0) {
        fail("SET", tid, i, rc, NULL);
        return -1;
    }
    kvmux_value *v = NULL;
    rc = kvmux_get(c, key, strlen(key), &v, CALL_TIMEOUT_MS);
    int ok = rc == 0 && v->len == strlen(val) && memcmp(v->data, val, v->len) == 0 &&
             v->version == ver;
    if (!ok) fail("GET own value", tid, i, rc, v);
    kvmux_value_free(v);
    if (ok) atomic_fetch_add(&test_passed, 1);
    return ok ? 0 : -1;
}

/* ---- phase 1 ---- */

typedef struct p1_arg {
    kvmux_client *c;
    int tid;
    long n;
} p1_arg;

/* Thread body for phase 1: n SET/GET pairs on its own key. */
static void *p1_main(void *arg) {
    p1_arg *a = arg;
    char key[32];
    snprintf(key, sizeof key, "iw:p1:%d", a->tid);
    for (long i = 0; i < a->n; i++)
        if (set_get(a->c, a->tid, i, key) != 0 && atomic_load(&reports) > MAX_REPORTS) break;
    return NULL;
}

/* Phase 1: three clients starting just below the wrap. */
static void phase1(uint16_t port) {
    const uint32_t starts[] = {0xFFFFFF00u, 0xFFFFFFFEu, 0xFFFFFFFFu};
    long n = (long)(600 * test_scale());
    if (n < 200) n = 200; /* 8 threads x 2 calls x 200 always crosses the wrap */
    for (size_t s = 0; s < sizeof starts / sizeof starts[0]; s++) {
        kvmux_options o;
        kvmux_options_init(&o);
        o.first_request_id = starts[s];
        kvmux_client *c;
        REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
        pthread_t th[NTHREADS];
        p1_arg args[NTHREADS];
        for (int i = 0; i < NTHREADS; i++) {
            args[i] = (p1_arg){c, (int)s * 100 + i, n};
            REQUIRE(pthread_create(&th[i], NULL, p1_main, &args[i]) == 0);
        }
        for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
        CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
        CHECK_EQ(kvmux_ping(c, CALL_TIMEOUT_MS), 0);
        kvmux_close(c);
    }
    printf("phase 1: 3 clients x %d threads x %ld SET/GET pairs across the id wrap\n", NTHREADS, n);
}

/* ---- phase 2 ---- */

typedef struct p2_arg {
    kvmux_client *c;   /* the client under test (ids near the wrap) */
    kvmux_client *ctl; /* a second client that provokes the late replies */
    int tid;
    int rounds;
    long timed_out;
} p2_arg;

/* Thread body for phase 2: per round, a WAIT that times out on the
 * client, the late reply provoked (even rounds) or left to expire (odd
 * rounds), then 40 checked SET/GET pairs on its own key. */
static void *p2_main(void *arg) {
    p2_arg *a = arg;
    char own[32], late[48];
    snprintf(own, sizeof own, "iw:p2:own:%d", a->tid);
    for (int r = 0; r < a->rounds; r++) {
        snprintf(late, sizeof late, "iw:p2:late:%d:%d", a->tid, r);
        int late_ok = (r & 1) == 0; /* even: OK reply with a LATE value; odd: TIMEOUT */
        uint32_t wait_ms = late_ok ? 10000 : 60;
        kvmux_value *v = NULL;
        int rc = kvmux_wait(a->c, late, strlen(late), 0, wait_ms, &v, 20);
        if (rc != KVMUX_ETIMEDOUT) fail("WAIT should time out on the client", a->tid, r, rc, v);
        else a->timed_out++;
        kvmux_value_free(v);
        if (late_ok) {
            char lv[64];
            snprintf(lv, sizeof lv, "LATE-%d-%d", a->tid, r);
            rc = kvmux_set(a->ctl, late, strlen(late), lv, strlen(lv), 0, NULL, CALL_TIMEOUT_MS);
            if (rc != 0) fail("provoking SET", a->tid, r, rc, NULL);
        }
        /* New calls while the late reply is (about to be) on its way. */
        for (long i = 0; i < 40; i++) set_get(a->c, a->tid, r * 1000L + i, own);
    }
    return NULL;
}

/* Phase 2 against the server on port: timeouts and late replies across
 * the id wrap; afterwards the connection must be healthy. */
static void phase2(uint16_t port) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.first_request_id = 0xFFFFFFF0u;
    kvmux_client *c, *ctl;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    REQUIRE(kvmux_connect(&ctl, "127.0.0.1", port, NULL) == 0);
    int rounds = (int)(24 * test_scale());
    if (rounds < 4) rounds = 4;
    pthread_t th[NTHREADS];
    p2_arg args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (p2_arg){c, ctl, 500 + i, rounds, 0};
        REQUIRE(pthread_create(&th[i], NULL, p2_main, &args[i]) == 0);
    }
    long timed_out = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        timed_out += args[i].timed_out;
    }
    CHECK_EQ(timed_out, (long)NTHREADS * rounds);
    /* Let the last server-side WAIT expiries (60 ms) arrive and be dropped. */
    test_sleep_ms(200);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    CHECK_EQ(kvmux_ping(c, CALL_TIMEOUT_MS), 0);
    for (int i = 0; i < NTHREADS; i++) {
        char own[32];
        snprintf(own, sizeof own, "iw:p2:own:%d", 500 + i);
        set_get(c, 500 + i, 999999, own);
    }
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    printf("phase 2 (%u credits): %d threads x %d rounds: %ld timed-out WAITs with late "
           "replies, %ld new calls each checked\n", info.max_outstanding, NTHREADS, rounds,
           timed_out, (long)NTHREADS * rounds * 80);
    kvmux_close(c);
    kvmux_close(ctl);
}

/* Phase 1, then phase 2 with 1024 and with 4 credits. */
int main(void) {
    test_server srv, small;
    REQUIRE(test_server_start(&srv, NULL) == 0);
    phase1(srv.port);
    phase2(srv.port);
    /* With only 4 credits the client has only 4 ids' worth of slots, so an
     * id (or slot) freed too early would be handed to a new call within a
     * few requests -- right when the late reply for the old one arrives.
     * With 1024 credits that reuse is rare and a misrouting bug can hide. */
    const char *const args[] = {"--max-outstanding", "4", NULL};
    REQUIRE(test_server_start(&small, args) == 0);
    phase2(small.port);
    CHECK_EQ(test_server_stop(&small, 10000), 0);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
    return test_report();
}
