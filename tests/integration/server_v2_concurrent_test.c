/* kvmuxd protocol v2 with several client threads against a two-loop
 * server: each thread owns a v2 connection and repeatedly uploads a large
 * value in fragments to ONE shared key, then reads it back fragmented,
 * sometimes cancelling the read half-way. Every value read must be whole
 * and one of the values written (never a mix): a response in progress
 * holds a reference to the value it started with, even when another loop
 * thread overwrites the key meanwhile. WAITs parked by one thread are
 * fired by writes of the others (cross-loop delivery). Labels: concurrent,
 * so it also runs against a TSan-built server. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

#define NTHREADS 4
#define ROUNDS 25
#define VLEN (600u * 1000)
#define CHUNK (64u * 1024)

static uint16_t g_port;

/* Value for (seed): 8-byte seed header, then bytes derived from it. */
static void fill(uint8_t *p, uint64_t seed) {
    kvmux_store_u64be(p, seed);
    for (uint32_t i = 8; i < VLEN; i++) p[i] = (uint8_t)(seed * 2654435761u + i * 31 + (i >> 11));
}

static int check_value(const uint8_t *p, uint32_t len) {
    if (len != VLEN) return 0;
    uint64_t seed = kvmux_load_u64be(p);
    for (uint32_t i = 8; i < VLEN; i++)
        if (p[i] != (uint8_t)(seed * 2654435761u + i * 31 + (i >> 11))) return 0;
    return 1;
}

typedef struct worker {
    int idx;
    long ok, bad, canceled, waits_fired;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    v2conn c;
    if (v2_connect(&c, g_port, 2, NULL) != 0 || c.version != 2) {
        w->bad++;
        return NULL;
    }
    uint8_t *val = malloc(VLEN);
    if (!val) {
        w->bad++;
        v2_close(&c, 0);
        return NULL;
    }
    uint32_t id = 1;
    kvmux_frame f;
    for (int round = 0; round < ROUNDS; round++) {
        /* Park a WAIT on a key the next thread writes. */
        char wkey[32], mykey[32];
        snprintf(wkey, sizeof wkey, "cc:w%d", (w->idx + 1) % NTHREADS);
        snprintf(mykey, sizeof mykey, "cc:w%d", w->idx);
        uint32_t wait_id = id++;
        v2_wait(&c, wait_id, wkey, 0, 5000); /* version 0: until it exists */

        /* Upload (600 KB < the 1 MiB window: no need to wait for grants). */
        fill(val, ((uint64_t)w->idx << 32) | (uint64_t)round);
        uint32_t set_id = id++;
        int rc = v2_set_first(&c, set_id, "cc:shared", val, CHUNK, VLEN, 0, 0);
        for (uint32_t off = CHUNK; rc == 0 && off < VLEN; off += CHUNK) {
            uint32_t n = VLEN - off < CHUNK ? VLEN - off : CHUNK;
            rc = v2_continuation(&c, set_id, val + off, n, off + n < VLEN);
        }
        rc |= v2_set(&c, id++, mykey, "x", 1); /* fires the neighbour's WAIT */
        uint32_t get_id = id++;
        rc |= v2_get(&c, get_id, "cc:shared");
        int cancel = round % 5 == 4;
        if (cancel) rc |= v2_cancel(&c, get_id);
        if (rc != 0) {
            w->bad++;
            break;
        }
        /* Read until the GET and the WAIT are both answered. */
        v2_rx rx = {.id = get_id, .grant = 1};
        int set_done = 0, wait_done = 0;
        for (int guard = 0; guard < 1000 && !(rx.done && set_done && wait_done); guard++) {
            if (v2_read(&c, &f, 10000) != 1) {
                w->bad++;
                goto out;
            }
            if (v2_rx_feed(&c, &rx, &f) < 0) w->bad++;
            if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == set_id) {
                set_done = 1;
                if (f.code != KVMUX_STATUS_OK) w->bad++;
            }
            if (f.type == KVMUX_FRAME_RESPONSE && f.request_id == wait_id) {
                wait_done = 1;
                if (f.code == KVMUX_STATUS_OK) w->waits_fired++;
                else if (f.code != KVMUX_STATUS_TIMEOUT) w->bad++;
            }
        }
        if (!rx.done) {
            w->bad++;
        } else if (rx.canceled || rx.status == KVMUX_STATUS_CANCELED) {
            w->canceled++;
        } else if (rx.status == KVMUX_STATUS_OK && check_value(rx.data, rx.got)) {
            w->ok++;
        } else {
            w->bad++;
        }
        free(rx.data);
        /* Delete my WAIT key so the neighbour's next WAIT parks again. */
        v2_send(&c, KVMUX_FRAME_REQUEST, 0, id++, KVMUX_OP_DEL, NULL, 0, mykey,
                (uint16_t)strlen(mykey), NULL, 0, 0, 0);
    }
out:
    free(val);
    v2_close(&c, 0);
    return NULL;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    static test_server s;
    const char *const args[] = {"--threads", "2", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    v2_track_server(&s);
    g_port = s.port;
    pthread_t th[NTHREADS];
    worker w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker){.idx = i};
        REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    long ok = 0, bad = 0, canceled = 0, fired = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
        bad += w[i].bad;
        canceled += w[i].canceled;
        fired += w[i].waits_fired;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(ok + canceled, NTHREADS * ROUNDS); /* every read whole and untorn */
    CHECK(ok >= NTHREADS * ROUNDS * 4 / 5);     /* only every 5th is cancelled */
    CHECK(fired > 0);
    printf("%ld whole values read, %ld cancelled (or answered first), %ld WAITs fired\n", ok,
           canceled, fired);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    return test_report();
}
