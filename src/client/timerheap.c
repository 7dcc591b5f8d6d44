/* kvmux client timer heap: the deadlines of the async requests waiting in
 * the backlog (those in flight are on their slots' per-timeout FIFO
 * lists, pending.c, which are O(1)).
 *
 * Design: a plain binary min-heap of pointers to timers embedded in the
 * ops they time, each timer knowing its own index, so that a request
 * answered before its deadline is removed in O(log n) without a search
 * (libuv's timer heap and nghttp2's priority queue do the same). With a
 * few thousand requests in flight that is a dozen compares per request; a
 * timer wheel would be O(1) but needs a tick and a granularity, and
 * deadlines here are sparse and mostly equal, so the heap is simpler and
 * exact. The array grows by doubling and is never shrunk: its size is
 * bounded by the async ops a client can have queued at once
 * (queue_limit).
 *
 * Ties (equal deadlines) come out in no particular order; nothing depends
 * on it.
 *
 * What it is not: no locking (the client mutex guards it), no clock (the
 * caller compares deadlines with the time it reads), no callbacks.
 */
#include "timerheap.h"

#include <stdlib.h>

#include "kvmux.h"

void kvmux__theap_init(kvmux__theap *h) {
    h->a = NULL;
    h->n = 0;
    h->cap = 0;
}

void kvmux__theap_deinit(kvmux__theap *h) {
    free(h->a);
    kvmux__theap_init(h);
}

int kvmux__theap_reserve(kvmux__theap *h, uint32_t n) {
    if (n <= h->cap) return 0;
    uint32_t cap = h->cap ? h->cap : 64;
    while (cap < n) {
        if (cap > UINT32_MAX / 2) {
            cap = n;
            break;
        }
        cap *= 2;
    }
    kvmux__timer **a = realloc(h->a, (size_t)cap * sizeof *a);
    if (!a) return KVMUX_ENOMEM;
    h->a = a;
    h->cap = cap;
    return 0;
}

/* Put t at position i and record it there. */
static void theap_set(kvmux__theap *h, uint32_t i, kvmux__timer *t) {
    h->a[i] = t;
    t->idx = i;
}

/* Move the timer at i up while it is earlier than its parent. */
static void theap_up(kvmux__theap *h, uint32_t i) {
    kvmux__timer *t = h->a[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (h->a[p]->deadline <= t->deadline) break;
        theap_set(h, i, h->a[p]);
        i = p;
    }
    theap_set(h, i, t);
}

/* Move the timer at i down while a child is earlier. */
static void theap_down(kvmux__theap *h, uint32_t i) {
    kvmux__timer *t = h->a[i];
    for (;;) {
        uint32_t l = 2 * i + 1;
        if (l >= h->n) break;
        uint32_t m = l;
        if (l + 1 < h->n && h->a[l + 1]->deadline < h->a[l]->deadline) m = l + 1;
        if (t->deadline <= h->a[m]->deadline) break;
        theap_set(h, i, h->a[m]);
        i = m;
    }
    theap_set(h, i, t);
}

int kvmux__theap_push(kvmux__theap *h, kvmux__timer *t) {
    if (h->n == UINT32_MAX - 1) return KVMUX_ENOMEM;
    if (h->n == h->cap && kvmux__theap_reserve(h, h->n + 1) != 0) return KVMUX_ENOMEM;
    theap_set(h, h->n, t);
    h->n++;
    theap_up(h, h->n - 1);
    return 0;
}

void kvmux__theap_remove(kvmux__theap *h, kvmux__timer *t) {
    uint32_t i = t->idx;
    if (i == KVMUX__TIMER_NONE || i >= h->n || h->a[i] != t) return;
    t->idx = KVMUX__TIMER_NONE;
    h->n--;
    if (i == h->n) return; /* it was the last one */
    theap_set(h, i, h->a[h->n]);
    /* The moved timer may belong above or below i. */
    if (i > 0 && h->a[i]->deadline < h->a[(i - 1) / 2]->deadline) theap_up(h, i);
    else theap_down(h, i);
}
