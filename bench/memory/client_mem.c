/* client_mem: libkvmux heap bytes per in-flight request (client half
 * of the memory goal: <= 64 B per in-flight request), measured with glibc's mallinfo2() (uordblks + hblkhd:
 * bytes in use by malloc, mmapped chunks included) rather than RSS, so page granularity,
 * thread stacks and the allocator's free lists do not blur the figure.
 *
 * Requests are held in flight with WAIT on a key that does not exist
 * (version 0: the server parks each one until the key appears, up to
 * wait_ms), so exactly D requests hold a credit each while we measure.
 *
 *   per credit   heap of a connected client with max_outstanding = D,
 *                minus one with max_outstanding = 1, over D - 1: the
 *                pending table (slot + free-ring entry), allocated at the
 *                handshake whether used or not
 *   async        heap with D callback requests in flight minus heap with
 *                1 in flight, over D - 1 (nothing but the slot since a
 *                callback request in flight lives there: ~0; the
 *                completion thread was started by the first). Futures,
 *                user-held objects, cost a heap object each on top
 *                (docs/DESIGN.md); this figure is the callback API's.
 *   sync         D threads blocked in kvmux_wait, minus the same D threads
 *                alive before their call, over D (the library's heap per
 *                blocking call; its wait record is on the caller's stack)
 * The totals add the per-credit figure (a request in flight holds one).
 *
 * Submissions go in rounds of 32 with a short pause so the writer keeps
 * up: the outbound buffer then stays at its initial size, as in a steady
 * state; a burst of D at once would also count the encoded frames waiting
 * to be written (about 60 bytes each here), which is queue, not
 * per-request state.
 *
 * Usage: client_mem -p PORT [-h HOST] [-D DEPTH]   (DEPTH <= the server's
 * credits, default 1024). Not part of the test suite: it prints figures.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mallinfo2 */
#endif
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvmux.h"

static const char KEY[] = "client_mem:absent-key";
#define WAIT_MS 20000u

static size_t heap_used(void) {
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd; /* large arrays are mmapped chunks */
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static kvmux_client *connect_with(const char *host, uint16_t port, uint32_t credits) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_outstanding = credits;
    o.request_timeout_ms = 5000;
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, host, port, &o);
    if (rc != 0) {
        fprintf(stderr, "client_mem: connect: %s\n", kvmux_strerror(rc));
        exit(1);
    }
    return c;
}

static void noop_cb(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)result;
    (void)reply;
    (void)ud;
}

static void submit_wait(kvmux_client *c) {
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_WAIT;
    r.key = KEY;
    r.key_len = sizeof KEY - 1;
    r.version = 0;
    r.wait_ms = WAIT_MS;
    int rc = kvmux_call_async(c, &r, WAIT_MS + 5000, noop_cb, NULL);
    if (rc != 0) {
        fprintf(stderr, "client_mem: submit: %s\n", kvmux_strerror(rc));
        exit(1);
    }
}

/* ---- sync: D threads, each blocked in one kvmux_wait ---- */
typedef struct sync_arg {
    kvmux_client *c;
    pthread_barrier_t *go;
    uint32_t i;
} sync_arg;

static void *sync_main(void *p) {
    sync_arg *a = p;
    pthread_barrier_wait(a->go);
    sleep_ms(2 * (long)(a->i / 32)); /* rounds of 32, as for async */
    kvmux_value *v = NULL;
    int rc = kvmux_wait(a->c, KEY, sizeof KEY - 1, 0, WAIT_MS, &v, WAIT_MS + 5000);
    if (rc == KVMUX_OK) kvmux_value_free(v);
    return NULL;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    long port = 0, depth = 1024;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:D:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = strtol(optarg, NULL, 10); break;
        case 'D': depth = strtol(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: client_mem -p PORT [-h HOST] [-D DEPTH]\n");
            return 2;
        }
    }
    if (port <= 0 || port > 65535 || depth < 2 || depth > 65536) {
        fprintf(stderr, "usage: client_mem -p PORT [-h HOST] [-D DEPTH >= 2]\n");
        return 2;
    }
    uint32_t d = (uint32_t)depth;

    /* Per credit: the pending table, sized at the handshake. */
    size_t h0 = heap_used();
    kvmux_client *c1 = connect_with(host, (uint16_t)port, 1);
    size_t h1 = heap_used();
    kvmux_close(c1);
    size_t h2 = heap_used();
    kvmux_client *cd = connect_with(host, (uint16_t)port, d);
    size_t h3 = heap_used();
    kvmux_close(cd);
    double per_credit = ((double)(h3 - h2) - (double)(h1 - h0)) / (double)(d - 1);

    /* Async: D callback requests parked at the server. */
    kvmux_client *c = connect_with(host, (uint16_t)port, d);
    submit_wait(c);
    sleep_ms(200);
    size_t a1 = heap_used();
    for (uint32_t i = 1; i < d; i++) {
        submit_wait(c);
        if (i % 32 == 0) sleep_ms(2);
    }
    sleep_ms(300);
    size_t ad = heap_used();
    kvmux_close(c); /* every callback runs with KVMUX_ECLOSED */
    double per_async = ((double)ad - (double)a1) / (double)(d - 1);

    /* Sync: D blocked callers, against D idle threads. */
    c = connect_with(host, (uint16_t)port, d);
    pthread_t *th = calloc(d, sizeof *th);
    sync_arg *args = calloc(d, sizeof *args);
    pthread_barrier_t go;
    if (!th || !args || pthread_barrier_init(&go, NULL, d + 1) != 0) return 1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (uint32_t i = 0; i < d; i++) {
        args[i].c = c;
        args[i].go = &go;
        args[i].i = i;
        if (pthread_create(&th[i], &attr, sync_main, &args[i]) != 0) {
            fprintf(stderr, "client_mem: pthread_create failed at %u\n", i);
            return 1;
        }
    }
    sleep_ms(300);
    size_t s0 = heap_used(); /* threads alive, no call yet */
    pthread_barrier_wait(&go);
    sleep_ms(500 + 2 * (long)(d / 32));
    size_t sd = heap_used();
    kvmux_close(c); /* every blocked call returns KVMUX_ECLOSED */
    for (uint32_t i = 0; i < d; i++) pthread_join(th[i], NULL);
    double per_sync = ((double)sd - (double)s0) / (double)d;

    printf("client heap per credit (pending table, allocated at handshake): %.1f B\n",
           per_credit);
    printf("client heap per in-flight async request: %.1f B (+ credit = %.1f B; goal <= 64)\n",
           per_async, per_async + per_credit);
    printf("client heap per in-flight blocking call: %.1f B (+ credit = %.1f B; goal <= 64)\n",
           per_sync, per_sync + per_credit);
    printf("(depth %u; mallinfo2 uordblks+hblkhd; see bench/memory/client_mem.c)\n", d);
    free(th);
    free(args);
    pthread_attr_destroy(&attr);
    pthread_barrier_destroy(&go);
    return 0;
}
