/* WAIT fan-out across connections and server loop threads.
 *
 * kvmuxd runs several event loops (--threads 3); a SET handled on one loop
 * must release WAITs parked by connections owned by the others, each answer
 * leaving on its own connection's loop. That hand-off between threads is
 * where races hide, so this test (also run under TSan, where the server
 * itself is TSan-built and a race makes it exit non-zero) drives it hard:
 *
 *   NKEYS keys, each written by exactly one setter thread (on its own
 *   client) with values "seq:1" ... "seq:N"; NCLIENTS waiter clients with
 *   NWAITERS threads each follow one key with back-to-back WAITs, always
 *   passing the last version they saw.
 *
 * Every waiter must observe strictly increasing versions and sequence
 * numbers (it may skip writes, never go back or repeat), must reach the
 * final value, and must never sit out a whole wait_ms while writes go on.
 * KVMUX_TEST_SCALE scales N (a TSan build defaults to 0.1).
 */
#include <inttypes.h>
#include <pthread.h>
#include <string.h>

#include "kvmux.h"
#include "testutil.h"

#define NKEYS 4
#define NCLIENTS 6
#define NWAITERS 4
#define NSETS_FULL 2000
#define WAIT_MS 3000
#define MAX_REPORTS 20


static long g_nsets;
static atomic_int reports;

typedef struct setter {
    kvmux_client *c;
    int key;
    int failures;
} setter;

typedef struct waiter {
    kvmux_client *c;
    int id;
    int key;
    long wakeups;       /* WAITs answered OK */
    long last_seq;      /* highest sequence number seen */
    int failures;
} waiter;

/* Print one failure description (at most MAX_REPORTS in all). */
static void report(const char *fmt, long a, long b, long c) {
    if (atomic_fetch_add(&reports, 1) < MAX_REPORTS) {
        fprintf(stderr, fmt, a, b, c);
        fputc('\n', stderr);
    }
}

/* Setter thread: write seq:1..g_nsets to its key, about one per 0.5 ms. */
static void *setter_main(void *arg) {
    setter *s = arg;
    char key[16], val[32];
    snprintf(key, sizeof key, "wf:k%d", s->key);
    for (long n = 1; n <= g_nsets; n++) {
        snprintf(val, sizeof val, "seq:%ld", n);
        int rc = kvmux_set(s->c, key, strlen(key), val, strlen(val), 0, NULL, 10000);
        if (rc != 0) {
            s->failures++;
            report("setter %ld: SET seq %ld failed: %ld", s->key, n, rc);
        }
        if (n % 4 == 0) test_sleep_ms(2);
    }
    return NULL;
}

/* Waiter thread: follow the key until it shows the final sequence number.
 * Bounded: every successful WAIT moves last_seq up (at most g_nsets times)
 * and at most 3 expiries are tolerated in a row before giving up. */
static void *waiter_main(void *arg) {
    waiter *w = arg;
    char key[16];
    snprintf(key, sizeof key, "wf:k%d", w->key);
    uint64_t last_ver = 0;
    int expiries = 0;
    while (w->last_seq < g_nsets && expiries < 3) {
        kvmux_value *v = NULL;
        int rc = kvmux_wait(w->c, key, strlen(key), last_ver, WAIT_MS, &v, KVMUX_TIMEOUT_DEFAULT);
        if (rc == KVMUX_ETIMEDOUT) {
            expiries++;
            continue;
        }
        expiries = 0;
        if (rc != 0) {
            w->failures++;
            report("waiter %ld: WAIT failed: %ld (after seq %ld)", w->id, rc, w->last_seq);
            break;
        }
        long seq = -1;
        if (v->len > 4 && memcmp(v->data, "seq:", 4) == 0) seq = strtol((char *)v->data + 4, NULL, 10);
        if (v->version <= last_ver || seq <= w->last_seq) {
            w->failures++;
            report("waiter %ld: went back: seq %ld after %ld", w->id, seq, w->last_seq);
        }
        if (v->version > last_ver) last_ver = v->version;
        if (seq > w->last_seq) w->last_seq = seq;
        w->wakeups++;
        kvmux_value_free(v);
    }
    return NULL;
}

/* Start a 3-loop server, the setters and the waiters; check that every
 * waiter followed its key to the end. */
int main(void) {
    g_nsets = (long)(NSETS_FULL * test_scale());
    if (g_nsets < 40) g_nsets = 40;
    const char *const args[] = {"--threads", "3", NULL};
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);

    kvmux_client *wc[NCLIENTS], *sc[NKEYS];
    for (int i = 0; i < NCLIENTS; i++) REQUIRE(kvmux_connect(&wc[i], "127.0.0.1", srv.port, NULL) == 0);
    for (int i = 0; i < NKEYS; i++) REQUIRE(kvmux_connect(&sc[i], "127.0.0.1", srv.port, NULL) == 0);

    static waiter ws[NCLIENTS * NWAITERS];
    static setter ss[NKEYS];
    pthread_t wt[NCLIENTS * NWAITERS], st[NKEYS];
    for (int i = 0; i < NCLIENTS * NWAITERS; i++) {
        ws[i] = (waiter){.c = wc[i / NWAITERS], .id = i, .key = i % NKEYS};
        REQUIRE(pthread_create(&wt[i], NULL, waiter_main, &ws[i]) == 0);
    }
    test_sleep_ms(100); /* most waiters park on the absent keys first */
    int64_t t0 = test_now_ms();
    for (int k = 0; k < NKEYS; k++) {
        ss[k] = (setter){.c = sc[k], .key = k};
        REQUIRE(pthread_create(&st[k], NULL, setter_main, &ss[k]) == 0);
    }
    for (int k = 0; k < NKEYS; k++) pthread_join(st[k], NULL);
    /* Bounded: see waiter_main. */
    for (int i = 0; i < NCLIENTS * NWAITERS; i++) pthread_join(wt[i], NULL);
    int64_t dt = test_now_ms() - t0;

    long wakeups = 0;
    int reached = 0, failures = 0;
    for (int k = 0; k < NKEYS; k++) failures += ss[k].failures;
    for (int i = 0; i < NCLIENTS * NWAITERS; i++) {
        wakeups += ws[i].wakeups;
        failures += ws[i].failures;
        if (ws[i].last_seq == g_nsets) reached++;
        else report("waiter %ld stopped at seq %ld of %ld", i, ws[i].last_seq, g_nsets);
    }
    printf("%d keys x %ld writes, %d waiters on %d connections over 3 loops: %ld wakeups in "
           "%lld ms\n", NKEYS, g_nsets, NCLIENTS * NWAITERS, NCLIENTS, wakeups, (long long)dt);
    CHECK_EQ(failures, 0);
    CHECK_EQ(reached, NCLIENTS * NWAITERS);
    CHECK(wakeups >= NCLIENTS * NWAITERS);

    for (int k = 0; k < NKEYS; k++) {
        char key[16], want[32];
        snprintf(key, sizeof key, "wf:k%d", k);
        snprintf(want, sizeof want, "seq:%ld", g_nsets);
        kvmux_value *v = NULL;
        CHECK_EQ(kvmux_get(sc[k], key, strlen(key), &v, 5000), 0);
        CHECK(v && strcmp((char *)v->data, want) == 0);
        kvmux_value_free(v);
    }
    for (int i = 0; i < NCLIENTS; i++) {
        CHECK_EQ(kvmux_connection_error(wc[i], NULL, 0), 0);
        kvmux_close(wc[i]);
    }
    for (int i = 0; i < NKEYS; i++) kvmux_close(sc[i]);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
    return test_report();
}
