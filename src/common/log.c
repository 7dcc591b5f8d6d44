/* stderr logging for kvmuxd (see log.h).
 *
 * Each line is formatted into a stack buffer and written with a single
 * write(2): no stdio locking, no interleaving between loop threads, and
 * nothing allocated. Lines longer than the buffer are truncated with "...".
 * This is not a structured or rotating logger; run kvmuxd under a supervisor
 * that captures stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = KVMUX_LOG_INFO;

void kvmux_log_set_level(int level) { atomic_store(&log_level, level); }

static const char *level_name(int level) {
    switch (level) {
    case KVMUX_LOG_DEBUG: return "DEBUG";
    case KVMUX_LOG_INFO: return "INFO";
    case KVMUX_LOG_WARN: return "WARN";
    default: return "ERROR";
    }
}

void kvmux_log(int level, const char *fmt, ...) {
    if (level < atomic_load_explicit(&log_level, memory_order_relaxed)) return;
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    time_t secs = tv.tv_sec;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof line,
                     "kvmuxd[%d] %04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s ",
                     (int)getpid(), tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
                     level_name(level));
    if (n < 0) return;
    size_t used = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + used, sizeof line - used, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    if ((size_t)m >= sizeof line - used) {
        used = sizeof line - 5;
        memcpy(line + used, "...", 3);
        used += 3;
    } else {
        used += (size_t)m;
    }
    line[used++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, used);
    (void)w; /* nothing sensible to do if stderr is gone */
}
