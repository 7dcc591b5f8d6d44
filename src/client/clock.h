/* Monotonic deadlines for the client's bounded waits. Every condition
 * variable in libkvmux waits on CLOCK_MONOTONIC, so a wall-clock jump can
 * neither stretch nor cut a timeout. Internal to libkvmux. */
#ifndef KVMUX_CLIENT_CLOCK_H
#define KVMUX_CLIENT_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Initialise cv to time its waits on CLOCK_MONOTONIC. Returns 0 or an
 * errno value from pthread. */
static inline int kvmux__cond_init(pthread_cond_t *cv) {
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc != 0) return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

/* Monotonic milliseconds. */
static inline int64_t kvmux__now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The absolute CLOCK_MONOTONIC time ms (>= 0) from now, for
 * pthread_cond_timedwait. */
static inline struct timespec kvmux__deadline(int64_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

#endif /* KVMUX_CLIENT_CLOCK_H */
