/* Monotonic time in milliseconds: the one clock kvmuxd uses for deadlines,
 * timers and key expiry (never the wall clock, which can jump). */
#ifndef KVMUX_MONOTIME_H
#define KVMUX_MONOTIME_H

#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC. Thread-safe: yes. */
uint64_t kvmux_clock_ms(void);

/* Nanoseconds of CLOCK_MONOTONIC (busy-poll windows). Thread-safe: yes. */
uint64_t kvmux_clock_ns(void);

/* a + b, saturating at UINT64_MAX (deadlines from huge timeouts). */
static inline uint64_t kvmux_add_sat_u64(uint64_t a, uint64_t b) {
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

#endif
