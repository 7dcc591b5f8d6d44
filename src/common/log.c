/* kvmuxd's logger (see log.h): logfmt lines, one event per line, to
 * stderr, a reopenable file, or syslog(3).
 *
 * Each line is formatted into a stack buffer and written with a single
 * write(2): no stdio locking, no interleaving between loop threads, and
 * nothing allocated. The file sink keeps one descriptor number for its
 * whole life: kvmux_log_reopen opens the path again and dup2()s the new
 * file onto that number, so writers never need a lock and never write to
 * a closed descriptor. Why syslog(3) rather than sd_journal: it needs no
 * library, journald collects it under systemd, and rsyslog elsewhere; the
 * fields stay in the message text, which journalctl shows as is.
 *
 * Not here: rotation by size (logrotate moves the file, SIGHUP reopens). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 2048

static atomic_int log_level = KVMUX_LOG_INFO;
static atomic_int log_fd = STDERR_FILENO;  /* the file sink, or stderr */
static atomic_int log_syslog = 0;
static pthread_mutex_t file_mu = PTHREAD_MUTEX_INITIALIZER; /* guards file_path */
static char file_path[PATH_MAX];           /* "" = stderr */

void kvmux_log_set_level(int level) { atomic_store(&log_level, level); }
int kvmux_log_get_level(void) { return atomic_load(&log_level); }

int kvmux_log_parse_level(const char *s) {
    if (!s) return -1;
    if (strcmp(s, "debug") == 0) return KVMUX_LOG_DEBUG;
    if (strcmp(s, "info") == 0) return KVMUX_LOG_INFO;
    if (strcmp(s, "warn") == 0) return KVMUX_LOG_WARN;
    if (strcmp(s, "error") == 0) return KVMUX_LOG_ERROR;
    return -1;
}

const char *kvmux_log_level_name(int level) {
    switch (level) {
    case KVMUX_LOG_DEBUG: return "debug";
    case KVMUX_LOG_INFO: return "info";
    case KVMUX_LOG_WARN: return "warn";
    default: return "error";
    }
}

static int open_path(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0 && err && errlen)
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
    return fd;
}

int kvmux_log_set_file(const char *path, char *err, size_t errlen) {
    pthread_mutex_lock(&file_mu);
    int rc = 0;
    int cur = atomic_load(&log_fd);
    if (!path) {
        if (cur != STDERR_FILENO) {
            atomic_store(&log_fd, STDERR_FILENO);
            close(cur); /* racing writers get EBADF at worst: lines to stderr next */
        }
        file_path[0] = 0;
    } else if (strlen(path) >= sizeof file_path) {
        if (err && errlen) snprintf(err, errlen, "log file path too long");
        rc = -1;
    } else {
        int fd = open_path(path, err, errlen);
        if (fd < 0) {
            rc = -1;
        } else if (cur != STDERR_FILENO) {
            dup2(fd, cur); /* keep the number (see the file comment) */
            close(fd);
        } else {
            atomic_store(&log_fd, fd);
        }
        if (rc == 0) snprintf(file_path, sizeof file_path, "%s", path);
    }
    pthread_mutex_unlock(&file_mu);
    return rc;
}

int kvmux_log_reopen(char *err, size_t errlen) {
    pthread_mutex_lock(&file_mu);
    int rc = 0;
    int cur = atomic_load(&log_fd);
    if (file_path[0] && cur != STDERR_FILENO) {
        int fd = open_path(file_path, err, errlen);
        if (fd < 0) {
            rc = -1;
        } else {
            if (dup2(fd, cur) < 0) {
                if (err && errlen) snprintf(err, errlen, "dup2: %s", strerror(errno));
                rc = -1;
            }
            close(fd);
        }
    }
    pthread_mutex_unlock(&file_mu);
    return rc;
}

void kvmux_log_set_syslog(int on) {
    if (on) openlog("kvmuxd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    atomic_store(&log_syslog, on ? 1 : 0);
}

static int needs_quotes(const unsigned char *p, size_t n) {
    if (n == 0) return 1;
    for (size_t i = 0; i < n; i++)
        if (p[i] <= ' ' || p[i] == '"' || p[i] == '=' || p[i] == '\\' || p[i] >= 0x7f)
            return 1;
    return 0;
}

const char *kvmux_log_quote_n(char *buf, size_t cap, const void *src, size_t len) {
    const unsigned char *p = src;
    if (cap == 0) return buf;
    if (!needs_quotes(p, len) && len < cap) {
        memcpy(buf, p, len);
        buf[len] = 0;
        return buf;
    }
    size_t o = 0;
    if (cap < 8) {
        buf[0] = 0;
        return buf;
    }
    buf[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        char esc[5];
        size_t el;
        unsigned char ch = p[i];
        if (ch == '"' || ch == '\\') { esc[0] = '\\'; esc[1] = (char)ch; el = 2; }
        else if (ch == '\n') { memcpy(esc, "\\n", 2); el = 2; }
        else if (ch == '\t') { memcpy(esc, "\\t", 2); el = 2; }
        else if (ch < ' ' || ch >= 0x7f) { snprintf(esc, sizeof esc, "\\x%02x", ch); el = 4; }
        else { esc[0] = (char)ch; el = 1; }
        if (o + el + 5 > cap) { /* room for ...", NUL */
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(buf + o, esc, el);
        o += el;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

const char *kvmux_log_quote(char *buf, size_t cap, const char *s) {
    return kvmux_log_quote_n(buf, cap, s ? s : "", s ? strlen(s) : 0);
}

static void emit(int level, char *line, size_t used, size_t body) {
    if (atomic_load_explicit(&log_syslog, memory_order_relaxed)) {
        static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
        line[used] = 0;
        /* syslog stamps its own time: skip "ts=... ". */
        syslog(prio[level < 0 ? 0 : level > 3 ? 3 : level], "%s", line + body);
        return;
    }
    line[used++] = '\n';
    ssize_t w = write(atomic_load_explicit(&log_fd, memory_order_relaxed), line, used);
    (void)w; /* nothing sensible to do if the sink is gone */
}

/* "ts=... level=... event=EVENT " into line; returns its length and the
 * offset of "level=" in *body. */
static size_t head(char *line, size_t cap, int level, const char *event, size_t *body) {
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    time_t secs = tv.tv_sec;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, cap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000));
    *body = (size_t)n;
    int m = snprintf(line + n, cap - (size_t)n, "level=%s event=%s", kvmux_log_level_name(level),
                     event);
    return (size_t)n + (size_t)m;
}

/* Append vsnprintf output at line[used], truncating with "...": returns
 * the new length (always < cap - 1, leaving room for '\n'). */
static size_t append_v(char *line, size_t cap, size_t used, const char *fmt, va_list ap) {
    if (used >= cap - 2) return used;
    int m = vsnprintf(line + used, cap - 1 - used, fmt, ap);
    if (m < 0) return used;
    if ((size_t)m >= cap - 1 - used) {
        used = cap - 5;
        memcpy(line + used, "...", 3);
        return used + 3;
    }
    return used + (size_t)m;
}

static size_t append(char *line, size_t cap, size_t used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t append(char *line, size_t cap, size_t used, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    used = append_v(line, cap, used, fmt, ap);
    va_end(ap);
    return used;
}

void kvmux_log_event(int level, const char *event, const char *fmt, ...) {
    if (level < atomic_load_explicit(&log_level, memory_order_relaxed)) return;
    char line[LINE_MAX_BYTES + 1];
    size_t body;
    size_t used = head(line, LINE_MAX_BYTES, level, event, &body);
    if (fmt && fmt[0]) {
        line[used++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        used = append_v(line, LINE_MAX_BYTES, used, fmt, ap);
        va_end(ap);
    }
    emit(level, line, used, body);
}

void kvmux_log(int level, const char *fmt, ...) {
    if (level < atomic_load_explicit(&log_level, memory_order_relaxed)) return;
    char msg[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    char line[LINE_MAX_BYTES + 1], q[LINE_MAX_BYTES], peer[96];
    size_t body, used;
    unsigned long long id;
    int off = 0;
    /* The connection code's "conn N (PEER): text" becomes fields. */
    if (sscanf(msg, "conn %llu (%95[^)]): %n", &id, peer, &off) == 2 && off > 0) {
        used = head(line, LINE_MAX_BYTES, level, "conn", &body);
        char qp[128];
        used = append(line, LINE_MAX_BYTES, used, " conn=%llu peer=%s msg=%s", id,
                      kvmux_log_quote(qp, sizeof qp, peer),
                      kvmux_log_quote(q, sizeof q, msg + off));
    } else {
        used = head(line, LINE_MAX_BYTES, level, "log", &body);
        used = append(line, LINE_MAX_BYTES, used, " msg=%s", kvmux_log_quote(q, sizeof q, msg));
    }
    emit(level, line, used, body);
}

int kvmux_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}
