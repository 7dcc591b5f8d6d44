/* A binary min-heap of timers keyed by deadline (see timer.h).
 *
 * Each timer stores its own slot index, so cancel and re-arm are
 * O(log n) without searching. One heap per event loop, touched only by that
 * loop's thread: no locking. The loop sleeps in epoll_wait until the
 * earliest deadline. This is the libuv / Redis ae style; a timer wheel would
 * beat it only with far more timers than kvmuxd has (one per connection in
 * handshake, one per parked WAIT). */
#include "timer.h"

#include <stdlib.h>

void kvmux__timer_heap_init(kvmux_timer_heap *h) {
    h->items = NULL;
    h->len = h->cap = 0;
}

void kvmux__timer_heap_deinit(kvmux_timer_heap *h) {
    for (size_t i = 0; i < h->len; i++) h->items[i]->idx = KVMUX_TIMER_IDLE;
    free(h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}

static void place(kvmux_timer_heap *h, size_t i, kvmux_timer *t) {
    h->items[i] = t;
    t->idx = i;
}

static void sift_up(kvmux_timer_heap *h, size_t i) {
    kvmux_timer *t = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->items[parent]->deadline <= t->deadline) break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(kvmux_timer_heap *h, size_t i) {
    kvmux_timer *t = h->items[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t best = t->deadline;
        if (l < h->len && h->items[l]->deadline < best) {
            m = l;
            best = h->items[l]->deadline;
        }
        if (r < h->len && h->items[r]->deadline < best) m = r;
        if (m == i) break;
        place(h, i, h->items[m]);
        i = m;
    }
    place(h, i, t);
}

int kvmux__timer_arm(kvmux_timer_heap *h, kvmux_timer *t, uint64_t deadline) {
    if (kvmux_timer_armed(t)) {
        uint64_t old = t->deadline;
        t->deadline = deadline;
        if (deadline < old) sift_up(h, t->idx);
        else sift_down(h, t->idx);
        return 0;
    }
    if (h->len == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 64;
        kvmux_timer **n = realloc(h->items, ncap * sizeof *n);
        if (!n) return -1;
        h->items = n;
        h->cap = ncap;
    }
    t->deadline = deadline;
    place(h, h->len++, t);
    sift_up(h, t->idx);
    return 0;
}

void kvmux__timer_cancel(kvmux_timer_heap *h, kvmux_timer *t) {
    if (!kvmux_timer_armed(t)) return;
    size_t i = t->idx;
    t->idx = KVMUX_TIMER_IDLE;
    kvmux_timer *last = h->items[--h->len];
    if (i == h->len) return; /* it was the last slot */
    place(h, i, last);
    if (i > 0 && h->items[(i - 1) / 2]->deadline > last->deadline) sift_up(h, i);
    else sift_down(h, i);
}

uint64_t kvmux__timer_next(const kvmux_timer_heap *h) {
    return h->len ? h->items[0]->deadline : UINT64_MAX;
}

size_t kvmux__timer_run(kvmux_timer_heap *h, uint64_t now, size_t max_fires) {
    size_t fired = 0;
    while (h->len && h->items[0]->deadline <= now && fired < max_fires) {
        kvmux_timer *t = h->items[0];
        kvmux__timer_cancel(h, t);
        fired++;
        t->fn(t, now);
    }
    return fired;
}
