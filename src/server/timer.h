/* Per-loop timers: a binary min-heap of intrusive timer handles. */
#ifndef KVMUX_SERVER_TIMER_H
#define KVMUX_SERVER_TIMER_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_TIMER_IDLE SIZE_MAX

typedef struct kvmux_timer kvmux_timer;
typedef void (*kvmux_timer_fn)(kvmux_timer *t, uint64_t now);

/* Embedded in the object it times (a connection, a parked WAIT). */
struct kvmux_timer {
    uint64_t deadline;   /* monotonic ms */
    size_t idx;          /* heap slot, KVMUX_TIMER_IDLE when not armed */
    kvmux_timer_fn fn;   /* called when due, after removal from the heap */
};

typedef struct kvmux_timer_heap {
    kvmux_timer **items;
    size_t len, cap;
} kvmux_timer_heap;

/* Prepare t (not armed) with its callback. */
static inline void kvmux_timer_init(kvmux_timer *t, kvmux_timer_fn fn) {
    t->deadline = 0;
    t->idx = KVMUX_TIMER_IDLE;
    t->fn = fn;
}

static inline int kvmux_timer_armed(const kvmux_timer *t) {
    return t->idx != KVMUX_TIMER_IDLE;
}

void kvmux__timer_heap_init(kvmux_timer_heap *h);
void kvmux__timer_heap_deinit(kvmux_timer_heap *h);

/* Arm t at deadline (re-arming moves it). Returns 0, or -1 if the heap
 * could not grow (t is then not armed). */
int kvmux__timer_arm(kvmux_timer_heap *h, kvmux_timer *t, uint64_t deadline);

/* Disarm t if armed. Never fails. */
void kvmux__timer_cancel(kvmux_timer_heap *h, kvmux_timer *t);

/* Earliest deadline, or UINT64_MAX if none. */
uint64_t kvmux__timer_next(const kvmux_timer_heap *h);

/* Fire every timer due at now (each removed before its callback runs, so
 * callbacks may re-arm or free it). Timers armed by callbacks for a time
 * <= now fire in the same call; at most max_fires run (a bound so a
 * callback re-arming at "now" cannot spin forever). Returns the count. */
size_t kvmux__timer_run(kvmux_timer_heap *h, uint64_t now, size_t max_fires);

#endif
