/* kvmuxd's logger: one event per line, key=value fields (logfmt):
 *
 *   ts=2026-01-02T03:04:05.678Z level=info event=server.start pid=42 port=7878
 *
 * Sinks: stderr (default), a file (--log-file, reopened on SIGHUP so
 * logrotate can move it), or syslog(3) (--syslog; journald collects it).
 * Stdout is reserved for the "listening on" line that tests and
 * supervisors parse. docs/OPERATIONS.md "Logs" lists the events. */
#ifndef KVMUX_LOG_H
#define KVMUX_LOG_H

#include <stddef.h>

enum kvmux_log_level {
    KVMUX_LOG_DEBUG = 0,
    KVMUX_LOG_INFO = 1,
    KVMUX_LOG_WARN = 2,
    KVMUX_LOG_ERROR = 3,
    KVMUX_LOG_OFF = 4
};

/* Set the minimum level written (default INFO). Thread-safe: yes. */
void kvmux_log_set_level(int level);
int kvmux_log_get_level(void);

/* "debug", "info", "warn", "error" -> KVMUX_LOG_*, else -1; and back. */
int kvmux_log_parse_level(const char *s);
const char *kvmux_log_level_name(int level);

/* Send lines to the file at path (appended, created 0640), or back to
 * stderr with path NULL. Returns 0, or -1 with a message in err (the sink
 * is unchanged). Thread-safe: yes (not async-signal-safe). */
int kvmux_log_set_file(const char *path, char *err, size_t errlen);

/* Reopen the log file at its path (after logrotate moved it): the same
 * file descriptor number is pointed at the new file with dup2(2), so a
 * thread writing concurrently writes whole lines to the old or the new
 * file, never to a closed descriptor. No-op returning 0 without a file.
 * Returns -1 with a message in err if the path cannot be opened (lines
 * keep going to the old file). Thread-safe: yes. */
int kvmux_log_reopen(char *err, size_t errlen);

/* Route lines to syslog(3) (facility daemon, ident "kvmuxd") instead of
 * the file or stderr, or back with on = 0. Thread-safe: yes. */
void kvmux_log_set_syslog(int on);

/* Write one event: "ts=... level=... event=EVENT " followed by the fields
 * that fmt formats ("key=value key=value"; quote free text with
 * kvmux_log_quote). One write(2) per line so lines from different threads
 * never interleave; lines beyond 2 KiB end in "...". Thread-safe: yes. */
void kvmux_log_event(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A free-text message as an event: "event=log msg=\"...\"", or, for the
 * "conn N (PEER): text" messages of the connection code, "event=conn
 * conn=N peer=PEER msg=\"text\"". Thread-safe: yes. */
/* Format an error message into err (when err and errlen are non-zero,
 * truncated to errlen) and return -1: the one shape of every
 * "int f(..., char *err, size_t errlen)" failure return. */
int kvmux_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void kvmux_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* s as a logfmt value into buf (cap bytes, always NUL-terminated): as is
 * if it has no space, quote, '=' or control byte, else in double quotes
 * with \" \\ \n \t and \xHH escapes (truncated with "..." to fit).
 * Returns buf. */
const char *kvmux_log_quote(char *buf, size_t cap, const char *s);

/* Like kvmux_log_quote for len bytes of binary data (keys). */
const char *kvmux_log_quote_n(char *buf, size_t cap, const void *p, size_t len);

#define KVMUX_LOG_D(...) kvmux_log(KVMUX_LOG_DEBUG, __VA_ARGS__)
#define KVMUX_LOG_I(...) kvmux_log(KVMUX_LOG_INFO, __VA_ARGS__)
#define KVMUX_LOG_W(...) kvmux_log(KVMUX_LOG_WARN, __VA_ARGS__)
#define KVMUX_LOG_E(...) kvmux_log(KVMUX_LOG_ERROR, __VA_ARGS__)

#endif
