/* Minimal leveled logging to stderr for kvmuxd: one line per event,
 * "kvmuxd[pid] 2024-01-02T03:04:05.678Z LEVEL message". Stdout is reserved
 * for the "listening on" line that tests and supervisors parse. */
#ifndef KVMUX_LOG_H
#define KVMUX_LOG_H

enum kvmux_log_level {
    KVMUX_LOG_DEBUG = 0,
    KVMUX_LOG_INFO = 1,
    KVMUX_LOG_WARN = 2,
    KVMUX_LOG_ERROR = 3,
    KVMUX_LOG_OFF = 4
};

/* Set the minimum level printed (default INFO). Thread-safe: yes. */
void kvmux_log_set_level(int level);

/* printf-style log line at level, if enabled. One write(2) per line so
 * lines from different threads never interleave. Thread-safe: yes. */
void kvmux_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define KVMUX_LOG_D(...) kvmux_log(KVMUX_LOG_DEBUG, __VA_ARGS__)
#define KVMUX_LOG_I(...) kvmux_log(KVMUX_LOG_INFO, __VA_ARGS__)
#define KVMUX_LOG_W(...) kvmux_log(KVMUX_LOG_WARN, __VA_ARGS__)
#define KVMUX_LOG_E(...) kvmux_log(KVMUX_LOG_ERROR, __VA_ARGS__)

#endif
