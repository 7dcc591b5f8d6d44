/* wakeup_cost: what one blocking hand-off between threads costs on this
 * machine: the floor under blocking callers (64 blocking threads on one
 * connection vs the async API).
 *
 * A blocking call parks its thread until the reply arrives, and with more
 * caller threads than CPUs (64 on 2 here) the CPU must run some other
 * thread meanwhile: every call costs at least one futex wait, one futex
 * wake by whoever completes it, and one context switch. The async API
 * pays none of these per request. This program measures exactly that
 * hand-off, without kvmux, two ways:
 *
 *   same CPU    two threads pinned to one CPU pass a token through futex
 *               words (wake the other, wait for your turn): each pass is
 *               one wake + one wait + one context switch. This is the
 *               cheapest case, a CPU that never goes idle.
 *   cross CPU   the same with the threads on different CPUs: each pass
 *               also wakes an idle CPU (on a VM whose idle vCPUs halt,
 *               an IPI and a VM exit/entry).
 *   cross CPU,  the same, while a SCHED_IDLE thread spins on each of the
 *   kept busy   two CPUs (it runs only when nothing else wants the CPU):
 *               the CPUs never go idle, so a pass costs the IPI and the
 *               pre-emption but no wake-up from halt. The difference to
 *               "cross CPU" is what a halted vCPU costs, the thing busy
 *               polling (kvmuxd --busy-poll) avoids.
 *
 * From the same-CPU cost it prints the ceiling it implies for N blocking
 * callers on C CPUs: C / (pass cost), before any request processing at
 * all, next to which the async figure can be put.
 *
 * Usage: wakeup_cost [-n PASSES] [-r ROUNDS]   (default 200000, 5; the
 * median round is reported). Prints figures; not part of the test suite.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct pingpong {
    _Atomic uint32_t turn; /* whose turn: 0 or 1 */
    long passes;           /* total passes to make (both threads) */
    int cpu[2];            /* CPU per thread, -1: not pinned */
} pingpong;

typedef struct player {
    pingpong *pp;
    uint32_t me;
} player;

static void futex_wait(_Atomic uint32_t *w, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *play(void *arg) {
    player *p = arg;
    pingpong *pp = p->pp;
    pin(pp->cpu[p->me]);
    for (long i = p->me; i < pp->passes; i += 2) {
        /* Wait for my turn, then hand it over and wake the other. */
        uint32_t t;
        while ((t = atomic_load_explicit(&pp->turn, memory_order_acquire)) != p->me)
            futex_wait(&pp->turn, t);
        atomic_store_explicit(&pp->turn, 1 - p->me, memory_order_release);
        futex_wake(&pp->turn);
    }
    return NULL;
}

/* A SCHED_IDLE spinner pinned to one CPU: keeps it from going idle
 * without taking time from any normal thread. */
static atomic_int spin_stop;

static void *idle_spin(void *arg) {
    pin((int)(intptr_t)arg);
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp) != 0) return NULL;
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed)) {
    }
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Nanoseconds per pass for one round. */
static double round_ns(long passes, int cpu0, int cpu1) {
    pingpong pp = {.passes = passes, .cpu = {cpu0, cpu1}};
    atomic_init(&pp.turn, 0);
    player a = {&pp, 0}, b = {&pp, 1};
    pthread_t ta, tb;
    double t0 = now_s();
    if (pthread_create(&ta, NULL, play, &a) != 0 || pthread_create(&tb, NULL, play, &b) != 0) {
        fprintf(stderr, "wakeup_cost: pthread_create failed\n");
        exit(1);
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    return (now_s() - t0) * 1e9 / (double)passes;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_ns(long passes, int rounds, int cpu0, int cpu1) {
    double v[64];
    if (rounds > 64) rounds = 64;
    for (int i = 0; i < rounds; i++) v[i] = round_ns(passes, cpu0, cpu1);
    qsort(v, (size_t)rounds, sizeof v[0], cmp_double);
    return v[rounds / 2];
}

int main(int argc, char **argv) {
    long passes = 200000;
    int rounds = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) passes = atol(argv[++i]);
        else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: wakeup_cost [-n PASSES] [-r ROUNDS]\n");
            return 2;
        }
    }
    if (passes < 2 || rounds < 1) {
        fprintf(stderr, "wakeup_cost: -n >= 2, -r >= 1\n");
        return 2;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double same = median_ns(passes, rounds, 0, 0);
    printf("same CPU:  %.0f ns per hand-off (futex wake + wait + context switch)\n", same);
    if (ncpu >= 2) {
        double cross = median_ns(passes / 4 > 2 ? passes / 4 : 2, rounds, 0, 1);
        printf("cross CPU: %.0f ns per hand-off (adds waking an idle CPU)\n", cross);
        pthread_t sp[2];
        int nsp = 0;
        for (int i = 0; i < 2; i++)
            if (pthread_create(&sp[nsp], NULL, idle_spin, (void *)(intptr_t)i) == 0) nsp++;
        double busy = median_ns(passes / 4 > 2 ? passes / 4 : 2, rounds, 0, 1);
        atomic_store(&spin_stop, 1);
        for (int i = 0; i < nsp; i++) pthread_join(sp[i], NULL);
        printf("cross CPU, kept busy: %.0f ns per hand-off (IPI and pre-emption, no halt)\n",
               busy);
    }
    printf("ceiling for blocking callers on %ld CPUs, hand-offs alone: %.0f calls/s\n", ncpu,
           (double)ncpu * 1e9 / same);
    return 0;
}
