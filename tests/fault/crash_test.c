/* Crash test for the append-only log: what kvmuxd acknowledged under
 * --fsync always survives kill -9, every time.
 *
 * Each cycle: start kvmuxd on the same log (which replays it), check that
 * every write acknowledged in the previous cycle is there with its value,
 * then let WRITERS threads (one connection each, up to INFLIGHT requests
 * in flight on it) SET unique keys and record each one answered OK, and
 * SIGKILL the server at a random moment (KILL_MIN_MS..KILL_MAX_MS) while
 * requests are in flight. After the last cycle every key acknowledged in
 * any cycle is checked once more. Prints
 * "acknowledged N present N lost 0" (lost must be 0).
 *
 * Then the same with --fsync everysec for a few cycles, reported only: an
 * acknowledged write there may still be in the log's memory buffer when
 * the process dies (kill -9 keeps the page cache, so only that buffer is
 * at risk; a power loss would also lose up to ~1 s of written data).
 *
 * Raw protocol-v2 sockets (server_v2_util.h), so the test does not depend
 * on the client library. Every wait is bounded. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

#define WRITERS 4
#define INFLIGHT 32
#define KILL_MIN_MS 20
#define KILL_MAX_MS 150
#define MAX_ACKS_PER_WRITER 200000

static char logpath[300];

typedef struct writer {
    uint16_t port;
    int cycle, id;
    uint32_t *acked;     /* sequence numbers answered OK */
    size_t nacked;
    _Atomic int *stop;
} writer;

static void key_for(char *out, size_t n, int cycle, int t, uint32_t seq) {
    snprintf(out, n, "c%d:t%d:%u", cycle, t, seq);
}

static void *writer_main(void *p) {
    writer *w = p;
    v2conn c;
    if (v2_connect(&c, w->port, KVMUX_PROTO_VERSION_MAX, NULL) < 0) return NULL;
    uint8_t ttl[8] = {0};
    uint32_t next = 0;
    int inflight = 0;
    while (!atomic_load(w->stop) || inflight > 0) {
        while (!atomic_load(w->stop) && inflight < INFLIGHT && next < MAX_ACKS_PER_WRITER) {
            char k[48];
            key_for(k, sizeof k, w->cycle, w->id, next);
            /* request_id = seq + 1; value = key. */
            if (v2_send(&c, KVMUX_FRAME_REQUEST, 0, next + 1, KVMUX_OP_SET, ttl, 8, k,
                        (uint16_t)strlen(k), k, (uint32_t)strlen(k), 0, 0) != 0)
                goto out;
            next++;
            inflight++;
        }
        if (inflight == 0) break;
        kvmux_frame f;
        int r = v2_read(&c, &f, 5000);
        if (r != 1) goto out; /* killed: EOF / reset */
        if (f.type != KVMUX_FRAME_RESPONSE) continue;
        inflight--;
        if (f.code == KVMUX_STATUS_OK && f.request_id >= 1)
            w->acked[w->nacked++] = f.request_id - 1;
    }
out:
    v2_close(&c, 1);
    return NULL;
}

/* GET every acknowledged key of writers ws[0..n) pipelined; returns the
 * number present with the right value. */
static size_t verify(uint16_t port, writer *ws, int n) {
    v2conn c;
    if (v2_connect(&c, port, KVMUX_PROTO_VERSION_MAX, NULL) < 0) return 0;
    size_t present = 0;
    int reported = 0;
    for (int t = 0; t < n; t++) {
        writer *w = &ws[t];
        size_t sent = 0, got = 0;
        while (got < w->nacked) {
            while (sent < w->nacked && sent - got < 256) {
                char k[48];
                key_for(k, sizeof k, w->cycle, w->id, w->acked[sent]);
                if (v2_get(&c, (uint32_t)sent + 1, k) != 0) goto out;
                sent++;
            }
            kvmux_frame f;
            if (v2_read(&c, &f, 5000) != 1) goto out;
            if (f.type != KVMUX_FRAME_RESPONSE) continue;
            size_t idx = f.request_id - 1;
            got++;
            if (idx >= w->nacked) continue;
            char k[48];
            key_for(k, sizeof k, w->cycle, w->id, w->acked[idx]);
            if (f.code == KVMUX_STATUS_OK && f.value_len == strlen(k) &&
                memcmp(f.value, k, f.value_len) == 0)
                present++;
            else if (++reported <= 3)
                fprintf(stderr, "lost: %s (status %u)\n", k, f.code);
        }
    }
out:
    v2_close(&c, 0);
    return present;
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

/* Run `cycles` kill -9 cycles with the given --fsync policy. Returns lost
 * writes; *acked_out / *present_out get the totals. */
static size_t run(const char *policy, int cycles, size_t *acked_out, size_t *present_out,
                  double *writes_per_s) {
    unlink(logpath);
    writer *all = calloc((size_t)cycles * WRITERS, sizeof *all);
    REQUIRE(all);
    size_t acked = 0, present = 0;
    uint64_t total_ms = 0;
    const char *args[] = {"--aof", logpath, "--fsync", policy, NULL};
    for (int cy = 0; cy <= cycles; cy++) {
        test_server s;
        REQUIRE(test_server_start(&s, args) == 0);
        v2_track_server(&s);
        if (cy > 0) {
            writer *prev = &all[(size_t)(cy - 1) * WRITERS];
            size_t a = 0;
            for (int t = 0; t < WRITERS; t++) a += prev[t].nacked;
            size_t p = verify(s.port, prev, WRITERS);
            acked += a;
            present += p;
            if (p != a)
                fprintf(stderr, "cycle %d (%s): acknowledged %zu present %zu\n", cy - 1,
                        policy, a, p);
        }
        if (cy == cycles) {
            /* Everything from every cycle, once more, after all the crashes. */
            size_t p = verify(s.port, all, cycles * WRITERS);
            if (p != present)
                fprintf(stderr, "final check (%s): %zu present now, %zu at their restart\n",
                        policy, p, present);
            if (p < present) present = p;
            CHECK_EQ(test_server_stop(&s, 10000), 0);
            break;
        }
        _Atomic int stop = 0;
        pthread_t th[WRITERS];
        writer *ws = &all[(size_t)cy * WRITERS];
        for (int t = 0; t < WRITERS; t++) {
            ws[t] = (writer){s.port, cy, t, malloc(MAX_ACKS_PER_WRITER * sizeof(uint32_t)), 0,
                             &stop};
            REQUIRE(ws[t].acked);
            REQUIRE(pthread_create(&th[t], NULL, writer_main, &ws[t]) == 0);
        }
        int ms = KILL_MIN_MS + rand() % (KILL_MAX_MS - KILL_MIN_MS + 1);
        test_sleep_ms(ms);
        total_ms += (uint64_t)ms;
        /* Kill with requests in flight; the writers see EOF and stop. */
        kill(s.pid, SIGKILL);
        atomic_store(&stop, 1);
        for (int t = 0; t < WRITERS; t++) pthread_join(th[t], NULL);
        test_server_kill(&s); /* reap */
    }
    for (size_t i = 0; i < (size_t)cycles * WRITERS; i++) free(all[i].acked);
    free(all);
    *acked_out = acked;
    *present_out = present;
    *writes_per_s = total_ms ? (double)acked * 1000.0 / (double)total_ms : 0;
    return acked - present;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    char dir[] = "/tmp/kvmux-crash-XXXXXX";
    REQUIRE(mkdtemp(dir));
    snprintf(logpath, sizeof logpath, "%s/crash.aof", dir);
    unsigned seed = (unsigned)env_int("KVMUX_CRASH_SEED", (int)getpid());
    srand(seed);
    int cycles = env_int("KVMUX_CRASH_CYCLES", 100);
    int ev_cycles = env_int("KVMUX_CRASH_EVERYSEC_CYCLES", 10);
    int64_t t0 = test_now_ms();

    size_t acked, present;
    double rate;
    size_t lost = run("always", cycles, &acked, &present, &rate);
    printf("fsync always, %d kill -9 cycles (seed %u, %lld ms): acknowledged %zu present "
           "%zu lost %zu (%.0f acknowledged writes/s under load)\n",
           cycles, seed, (long long)(test_now_ms() - t0), acked, present, lost, rate);
    CHECK_EQ(lost, 0);
    CHECK(acked > 0);

    if (ev_cycles > 0) {
        size_t lost_ev = run("everysec", ev_cycles, &acked, &present, &rate);
        printf("fsync everysec, %d kill -9 cycles: acknowledged %zu present %zu lost %zu "
               "(%.0f writes/s; loss window ~= %.2f ms of writes)\n",
               ev_cycles, acked, present, lost_ev, rate,
               rate > 0 ? (double)lost_ev / (double)ev_cycles * 1000.0 / rate : 0.0);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_report();
}
