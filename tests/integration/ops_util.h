/* Helpers for the operations tests (config file, reload, metrics,
 * notify): run kvmuxd to completion, small file helpers, bounded waits on
 * a log file, one HTTP exchange over a raw socket. Every wait is bounded. */
#ifndef KVMUX_OPS_UTIL_H
#define KVMUX_OPS_UTIL_H

#include <stddef.h>
#include <stdint.h>

typedef struct ops_run {
    int status;        /* exit status, or -1 (signal / timeout) */
    char out[65536];
    char err[65536];
} ops_run;

/* Run KVMUXD_PATH with args (NULL-terminated) to completion (<= 10 s). */
void ops_run_kvmuxd(ops_run *r, const char *const *args);

/* A fresh temporary directory (mkdtemp); the path is static storage. */
const char *ops_tmpdir(void);
/* Write text to path (truncating). Returns 0 or -1. */
int ops_write_file(const char *path, const char *text);
/* Read up to cap-1 bytes of path, NUL-terminated. Returns bytes or -1. */
long ops_read_file(const char *path, char *buf, size_t cap);
/* Poll path (every 20 ms, up to timeout_ms) until it contains needle
 * count times or more. Returns 1 if so, 0 on timeout. */
int ops_wait_file_count(const char *path, const char *needle, int count, int timeout_ms);
/* Occurrences of needle in s. */
int ops_count(const char *s, const char *needle);

/* Send req to 127.0.0.1:port, read the answer until the server closes
 * (<= 5 s) into buf (NUL-terminated). Returns its length or -1. */
long ops_http(uint16_t port, const char *req, size_t reqlen, char *buf, size_t cap);

/* Read the server's remaining stdout (after "listening on") until a line
 * starting with prefix arrives (<= 5 s); returns the number after it, or
 * -1. */
long ops_stdout_number(int fd, const char *prefix);

/* SIGKILL pid when the test exits (a failed REQUIRE calls exit), so a
 * failing test never leaves a server behind holding ctest's pipe. */
void ops_kill_at_exit(int pid);

#endif
