/* Automatic reconnect to a server restarted with DIFFERENT limits while
 * several threads keep calling: the negotiated limits a call
 * checks its arguments against are replaced by the reconnect, and must be
 * read without a data race (run under TSan: label concurrent) and applied
 * from then on.
 *
 * Server A: max value 1 MiB, max key 64 bytes, max frame 2 MiB.
 * Server B (same port): max value 8 MiB, max key 200 bytes, max frame
 * 256 KiB. Each of the threads loops over three calls:
 *   mid    SET of a 2 MiB value (between A's and B's limit): KVMUX_ETOOBIG
 *          on A, OK on B (fragmented: over B's frame);
 *   key    SET with a 100-byte key: KVMUX_ETOOBIG on A, OK on B;
 *   small  SET of 512 KiB: OK on both (one frame on A, fragmented on B --
 *          a call whose early check saw A's frame size but is admitted on
 *          B must be re-planned, or B refuses the frame and closes).
 * A call started once the main thread has seen the reconnect must see B's
 * limits; a call overlapping the switch may see either (or KVMUX_ECLOSED
 * if it was in flight when A died), nothing else. Exactly one reconnect
 * and no protocol error on B: nothing was sent under A's frame size. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmux.h"
#include "testutil.h"

#define KiB 1024u
#define MiB (1024u * 1024)
#define NTHREADS 4

/* 0: A up, 1: switching, 2: the main thread has seen the reconnect. */
static atomic_int g_phase;
static atomic_int g_stop;
static uint8_t *g_value; /* 2 MiB */

typedef struct worker {
    kvmux_client *c;
    int idx;
    pthread_t th;
    int bad;                       /* results not allowed in their phase */
    int ok_a[3], toobig_a[3];      /* per kind, phase 0 */
    int ok_b[3], toobig_b[3];      /* per kind, started in phase 2 */
    int overlap;                   /* calls overlapping the switch */
    atomic_int kinds_a;            /* bit k: kind k done within phase 0 */
    atomic_int kinds_b;            /* ... within phase 2 */
} worker;

enum { K_MID = 0, K_KEY = 1, K_SMALL = 2 };
static const char *kind_name[3] = {"mid", "key", "small"};

static void *worker_main(void *p) {
    worker *w = p;
    char key[128];
    int kind = 0;
    while (!atomic_load(&g_stop)) {
        int ph0 = atomic_load(&g_phase);
        size_t len = 0, klen = 0;
        switch (kind) {
        case K_MID:
            len = 2 * MiB;
            klen = (size_t)snprintf(key, sizeof key, "rl:mid:%d", w->idx);
            break;
        case K_KEY:
            len = 16;
            memset(key, 'k', 100);
            key[0] = (char)('0' + w->idx);
            klen = 100;
            break;
        default:
            len = 512 * KiB;
            klen = (size_t)snprintf(key, sizeof key, "rl:small:%d", w->idx);
            break;
        }
        int rc = kvmux_set(w->c, key, klen, g_value, len, 0, NULL, 20000);
        int ph1 = atomic_load(&g_phase);
        if (ph0 == 0 && ph1 == 0) {
            int want = kind == K_SMALL ? 0 : KVMUX_ETOOBIG;
            if (rc != want) {
                w->bad++;
                fprintf(stderr, "worker %d: %s on A: %s\n", w->idx, kind_name[kind],
                        kvmux_strerror(rc));
            }
            if (rc == 0) w->ok_a[kind]++;
            if (rc == KVMUX_ETOOBIG) w->toobig_a[kind]++;
            atomic_fetch_or(&w->kinds_a, 1 << kind);
        } else if (ph0 == 2) {
            if (rc != 0) {
                w->bad++;
                fprintf(stderr, "worker %d: %s after the reconnect: %s\n", w->idx,
                        kind_name[kind], kvmux_strerror(rc));
            }
            if (rc == 0) w->ok_b[kind]++;
            if (rc == KVMUX_ETOOBIG) w->toobig_b[kind]++;
            atomic_fetch_or(&w->kinds_b, 1 << kind);
        } else {
            w->overlap++;
            int allowed = rc == 0 || rc == KVMUX_ECLOSED ||
                          (rc == KVMUX_ETOOBIG && kind != K_SMALL);
            if (!allowed) {
                w->bad++;
                fprintf(stderr, "worker %d: %s across the switch: %s\n", w->idx,
                        kind_name[kind], kvmux_strerror(rc));
            }
        }
        kind = (kind + 1) % 3;
    }
    return NULL;
}

static uint64_t stat_of(kvmux_client *c, const char *name) {
    kvmux_value *out = NULL;
    CHECK_EQ(kvmux_stats(c, name, &out, 5000), 0);
    uint64_t v = out ? test_stat_value(out->data, out->len, name) : UINT64_MAX;
    kvmux_value_free(out);
    return v;
}

/* Wait (<= ms) until every worker has finished one call of every kind
 * in phase which (0 = A, 2 = B): the workers publish it in an atomic
 * bitmask, so the wait is bounded by the work, not by a guessed time
 * (a fixed sleep was too short on a loaded machine under TSan). */
static void wait_kinds(worker *w, int which, int ms) {
    int64_t end = test_now_ms() + ms;
    for (int i = 0; i < NTHREADS; i++)
        while (atomic_load(which == 0 ? &w[i].kinds_a : &w[i].kinds_b) != 7 &&
               test_now_ms() < end)
            test_sleep_ms(5);
}

/* 1 if every worker's counters (read after the join) show every kind in
 * phase which. */
static int all_kinds_seen(worker *w, int which) {
    for (int i = 0; i < NTHREADS; i++)
        for (int k = 0; k < 3; k++) {
            int n = which == 0 ? w[i].ok_a[k] + w[i].toobig_a[k] : w[i].ok_b[k] + w[i].toobig_b[k];
            if (n == 0) return 0;
        }
    return 1;
}

int main(void) {
    g_value = malloc(2 * MiB);
    REQUIRE(g_value != NULL);
    for (size_t i = 0; i < 2 * MiB; i++) g_value[i] = (uint8_t)(i * 31 + 7);

    test_server a, b;
    const char *args_a[] = {"--max-value", "1048576", "--max-key", "64", "--max-frame", "2097152",
                            NULL};
    REQUIRE(test_server_start(&a, args_a) == 0);
    uint16_t port = a.port;
    kvmux_options o;
    kvmux_options_init(&o);
    o.reconnect = 1;
    o.reconnect_wait = 1;
    o.reconnect_min_backoff_ms = 20;
    o.reconnect_max_backoff_ms = 200;
    o.connect_timeout_ms = 2000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.max_value_size, 1 * MiB);
    CHECK_EQ(info.max_key_size, 64);
    CHECK_EQ(info.max_frame_size, 2 * MiB);

    worker w[NTHREADS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < NTHREADS; i++) {
        w[i].c = c;
        w[i].idx = i;
        REQUIRE(pthread_create(&w[i].th, NULL, worker_main, &w[i]) == 0);
    }
    /* Phase 0 until every thread has done each kind on A (bounded; the
     * counters themselves are checked after the join). */
    wait_kinds(w, 0, 20000);

    atomic_store(&g_phase, 1);
    test_server_kill(&a);
    const char *args_b[] = {"--max-value", "8388608", "--max-key", "200", "--max-frame", "262144",
                            "--max-value-v1", "65536", NULL};
    REQUIRE(test_server_start_on_port(&b, port, args_b) == 0);
    uint64_t reconnects = 0;
    int64_t end = test_now_ms() + 15000;
    while (test_now_ms() < end) {
        REQUIRE(kvmux_reconnect_stats(c, NULL, &reconnects) == 0);
        if (reconnects >= 1) break;
        test_sleep_ms(5);
    }
    CHECK_EQ(reconnects, 1);
    atomic_store(&g_phase, 2);
    /* Calls from now on must see B's limits. */
    kvmux_get_server_info(c, &info);
    CHECK_EQ(info.max_value_size, 8 * MiB);
    CHECK_EQ(info.max_key_size, 200);
    CHECK_EQ(info.max_frame_size, 256 * KiB);
    CHECK_EQ(kvmux_set(c, "rl:main", 7, g_value, 2 * MiB, 0, NULL, 20000), 0);
    kvmux_value *out = NULL;
    CHECK_EQ(kvmux_get(c, "rl:main", 7, &out, 20000), 0);
    CHECK(out && out->len == 2 * MiB && memcmp(out->data, g_value, 2 * MiB) == 0);
    kvmux_value_free(out);
    uint8_t *over = calloc(1, 8 * MiB + 1);
    REQUIRE(over != NULL);
    CHECK_EQ(kvmux_set(c, "rl:over", 7, over, 8 * MiB + 1, 0, NULL, 1000), KVMUX_ETOOBIG);
    free(over);
    wait_kinds(w, 2, 20000);
    atomic_store(&g_stop, 1);
    for (int i = 0; i < NTHREADS; i++) pthread_join(w[i].th, NULL);

    int bad = 0, overlap = 0;
    for (int i = 0; i < NTHREADS; i++) {
        bad += w[i].bad;
        overlap += w[i].overlap;
    }
    CHECK_EQ(bad, 0);
    CHECK(all_kinds_seen(w, 0));
    CHECK(all_kinds_seen(w, 2));
    for (int i = 0; i < NTHREADS; i++)
        for (int k = 0; k < 3; k++) {
            CHECK_EQ(w[i].toobig_b[k], 0);
            if (k != K_SMALL) CHECK_EQ(w[i].ok_a[k], 0);
        }
    /* Exactly one reconnect (nothing made B close the connection), no
     * protocol error on B, the connection healthy. */
    REQUIRE(kvmux_reconnect_stats(c, NULL, &reconnects) == 0);
    CHECK_EQ(reconnects, 1);
    CHECK_EQ(stat_of(c, "protocol_errors"), 0);
    CHECK_EQ(kvmux_connection_error(c, NULL, 0), 0);
    int mid_b = 0, key_b = 0, small_b = 0;
    for (int i = 0; i < NTHREADS; i++) {
        mid_b += w[i].ok_b[K_MID];
        key_b += w[i].ok_b[K_KEY];
        small_b += w[i].ok_b[K_SMALL];
    }
    printf("reconnect to new limits: %d threads; after it %d mid, %d long-key, %d small SETs OK; "
           "%d calls overlapped the switch\n",
           NTHREADS, mid_b, key_b, small_b, overlap);
    kvmux_close(c);
    test_server_stop(&b, 5000);
    free(g_value);
    return test_report();
}
