/* Unit test for the client timer heap (src/client/timerheap.c): the
 * deadlines of pending async requests.
 *
 * What it checks: timers come out earliest first; removing any timer
 * (first, last, middle, absent) keeps the heap order and every timer's
 * index right; a random mix of pushes and removes over thousands of timers
 * agrees with a brute-force model at every step; equal deadlines are fine;
 * reserve makes later pushes infallible. No sockets, no threads. */
#include <stdlib.h>
#include <string.h>

#include "kvmux.h"
#include "timerheap.h"
#include "testutil.h"

/* 1 if h is a valid min-heap whose timers know their own indices. */
static int heap_valid(const kvmux__theap *h) {
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->a[i]->idx != i) return 0;
        if (i > 0 && h->a[(i - 1) / 2]->deadline > h->a[i]->deadline) return 0;
    }
    return 1;
}

static void test_order(void) {
    kvmux__theap h;
    kvmux__theap_init(&h);
    CHECK(kvmux__theap_min(&h) == NULL);
    enum { N = 200 };
    kvmux__timer t[N];
    for (int i = 0; i < N; i++) {
        t[i].deadline = (i * 7919) % N; /* a permutation of 0..N-1 */
        t[i].idx = KVMUX__TIMER_NONE;
        REQUIRE(kvmux__theap_push(&h, &t[i]) == 0);
    }
    CHECK(heap_valid(&h));
    CHECK_EQ(h.n, N);
    int ok = 1;
    for (int want = 0; want < N; want++) {
        kvmux__timer *m = kvmux__theap_min(&h);
        if (!m || m->deadline != want) ok = 0;
        if (m) kvmux__theap_remove(&h, m);
        if (m && m->idx != KVMUX__TIMER_NONE) ok = 0;
        if (!heap_valid(&h)) ok = 0;
    }
    CHECK(ok);
    CHECK_EQ(h.n, 0);
    CHECK(kvmux__theap_min(&h) == NULL);
    kvmux__theap_deinit(&h);
}

static void test_remove_any(void) {
    kvmux__theap h;
    kvmux__theap_init(&h);
    kvmux__timer t[10];
    for (int i = 0; i < 10; i++) {
        t[i].deadline = 100 - i * 10; /* pushed latest first */
        t[i].idx = KVMUX__TIMER_NONE;
        REQUIRE(kvmux__theap_push(&h, &t[i]) == 0);
    }
    kvmux__theap_remove(&h, &t[9]); /* the minimum */
    CHECK(heap_valid(&h));
    CHECK_EQ(kvmux__theap_min(&h)->deadline, 20);
    kvmux__theap_remove(&h, &t[0]); /* the maximum */
    kvmux__theap_remove(&h, &t[4]); /* somewhere inside */
    CHECK(heap_valid(&h));
    CHECK_EQ(h.n, 7);
    kvmux__theap_remove(&h, &t[4]); /* absent: no-op */
    CHECK_EQ(h.n, 7);
    kvmux__timer loose = {5, KVMUX__TIMER_NONE};
    kvmux__theap_remove(&h, &loose);
    CHECK_EQ(h.n, 7);
    /* Equal deadlines. */
    kvmux__timer eq[5];
    for (int i = 0; i < 5; i++) {
        eq[i].deadline = 20;
        eq[i].idx = KVMUX__TIMER_NONE;
        REQUIRE(kvmux__theap_push(&h, &eq[i]) == 0);
    }
    CHECK(heap_valid(&h));
    int n20 = 0;
    while (kvmux__theap_min(&h) && kvmux__theap_min(&h)->deadline == 20) {
        kvmux__theap_remove(&h, kvmux__theap_min(&h));
        n20++;
    }
    CHECK_EQ(n20, 6); /* t[8] and the five */
    CHECK(heap_valid(&h));
    kvmux__theap_deinit(&h);
}

static void test_random_model(void) {
    enum { N = 4000, STEPS = 60000 };
    kvmux__timer *t = calloc(N, sizeof *t);
    REQUIRE(t != NULL);
    kvmux__theap h;
    kvmux__theap_init(&h);
    REQUIRE(kvmux__theap_reserve(&h, N) == 0);
    CHECK(h.cap >= N);
    for (int i = 0; i < N; i++) t[i].idx = KVMUX__TIMER_NONE;
    unsigned seed = 12345;
    int bad = 0;
    for (int step = 0; step < STEPS; step++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % N);
        if (t[i].idx == KVMUX__TIMER_NONE) {
            t[i].deadline = (int64_t)((seed >> 4) % 1000);
            if (kvmux__theap_push(&h, &t[i]) != 0) bad++;
        } else {
            kvmux__theap_remove(&h, &t[i]);
        }
        if (step % 97 == 0) {
            /* The model: the minimum over timers in the heap. */
            int64_t min = INT64_MAX;
            uint32_t in = 0;
            for (int j = 0; j < N; j++)
                if (t[j].idx != KVMUX__TIMER_NONE) {
                    in++;
                    if (t[j].deadline < min) min = t[j].deadline;
                }
            if (in != h.n || !heap_valid(&h)) bad++;
            if (in && kvmux__theap_min(&h)->deadline != min) bad++;
        }
    }
    CHECK_EQ(bad, 0);
    kvmux__theap_deinit(&h);
    free(t);
}

int main(void) {
    test_order();
    test_remove_any();
    test_random_model();
    return test_report();
}
