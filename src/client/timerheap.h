/* A binary min-heap of deadlines: the per-request timers of the async API.
 * See timerheap.c for the design. Internal to libkvmux. */
#ifndef KVMUX_CLIENT_TIMERHEAP_H
#define KVMUX_CLIENT_TIMERHEAP_H

#include <stddef.h>
#include <stdint.h>

/* A timer, embedded in the object it times (an async op). Invariant: idx
 * is the timer's position in the heap while it is in one, and
 * KVMUX__TIMER_NONE otherwise. */
typedef struct kvmux__timer {
    int64_t deadline;      /* monotonic ms (kvmux__now_ms) */
    uint32_t idx;          /* heap position, or KVMUX__TIMER_NONE */
} kvmux__timer;

#define KVMUX__TIMER_NONE UINT32_MAX

typedef struct kvmux__theap {
    kvmux__timer **a;      /* a[0] has the earliest deadline */
    uint32_t n;            /* timers in the heap */
    uint32_t cap;          /* room in a */
} kvmux__theap;

/* An empty heap (no allocation until the first push). */
void kvmux__theap_init(kvmux__theap *h);
void kvmux__theap_deinit(kvmux__theap *h);

/* Make room for n timers in all, so that that many pushes cannot fail.
 * Returns 0 or KVMUX_ENOMEM (heap unchanged). */
int kvmux__theap_reserve(kvmux__theap *h, uint32_t n);

/* Add t (not in a heap) with t->deadline. Returns 0 or KVMUX_ENOMEM
 * (heap unchanged, t->idx stays NONE). O(log n). */
int kvmux__theap_push(kvmux__theap *h, kvmux__timer *t);

/* Remove t if it is in h (no-op otherwise). O(log n). */
void kvmux__theap_remove(kvmux__theap *h, kvmux__timer *t);

/* The earliest timer, or NULL if h is empty. O(1). */
static inline kvmux__timer *kvmux__theap_min(const kvmux__theap *h) {
    return h->n ? h->a[0] : NULL;
}

#endif /* KVMUX_CLIENT_TIMERHEAP_H */
