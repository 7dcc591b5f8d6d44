/* See ops_util.h. */
#include "ops_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

void ops_run_kvmuxd(ops_run *r, const char *const *args) {
    const char *argv[64];
    size_t n = 0;
    argv[n++] = KVMUXD_PATH;
    for (size_t i = 0; args && args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    r->status = test_run(argv, NULL, NULL, r->out, sizeof r->out, r->err, sizeof r->err, 10000);
}

const char *ops_tmpdir(void) {
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/kvmux_opsXXXXXX");
    return mkdtemp(dir);
}

int ops_write_file(const char *path, const char *text) {
    FILE *fp = fopen(path, "w");
    if (!fp) return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, fp) == n;
    return (fclose(fp) == 0 && ok) ? 0 : -1;
}

long ops_read_file(const char *path, char *buf, size_t cap) {
    FILE *fp = fopen(path, "r");
    if (!fp) {
        buf[0] = 0;
        return -1;
    }
    size_t n = fread(buf, 1, cap - 1, fp);
    fclose(fp);
    buf[n] = 0;
    return (long)n;
}

int ops_count(const char *s, const char *needle) {
    int c = 0;
    size_t nl = strlen(needle);
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += nl) c++;
    return c;
}

int ops_wait_file_count(const char *path, const char *needle, int count, int timeout_ms) {
    static char buf[1 << 20];
    int64_t end = test_now_ms() + timeout_ms;
    do {
        if (ops_read_file(path, buf, sizeof buf) >= 0 && ops_count(buf, needle) >= count)
            return 1;
        test_sleep_ms(20);
    } while (test_now_ms() < end);
    return 0;
}

long ops_http(uint16_t port, const char *req, size_t reqlen, char *buf, size_t cap) {
    int fd = test_connect_raw(port, 5000);
    if (fd < 0) return -1;
    if (test_write_all(fd, req, reqlen) != 0) {
        close(fd);
        return -1;
    }
    size_t len = 0;
    int64_t end = test_now_ms() + 5000;
    while (len + 1 < cap && test_now_ms() < end) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r == 0) break;
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == ECONNRESET) break;
            close(fd);
            return -1;
        }
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    return (long)len;
}

long ops_stdout_number(int fd, const char *prefix) {
    char line[256];
    size_t len = 0;
    int64_t end = test_now_ms() + 5000;
    while (test_now_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        char ch;
        if (read(fd, &ch, 1) != 1) return -1;
        if (ch != '\n') {
            if (len + 1 < sizeof line) line[len++] = ch;
            continue;
        }
        line[len] = 0;
        len = 0;
        size_t pl = strlen(prefix);
        if (strncmp(line, prefix, pl) == 0) return strtol(line + pl, NULL, 10);
    }
    return -1;
}

static int kill_pids[8];
static int nkill;

static void kill_all(void) {
    /* Only a child not reaped yet: a reaped pid may belong to anyone now. */
    for (int i = 0; i < nkill; i++) {
        int st;
        if (kill_pids[i] > 0 && waitpid(kill_pids[i], &st, WNOHANG) == 0) {
            kill(kill_pids[i], SIGKILL);
            waitpid(kill_pids[i], &st, 0);
        }
    }
}

void ops_kill_at_exit(int pid) {
    if (nkill == 0) atexit(kill_all);
    if (nkill < 8) kill_pids[nkill++] = pid;
}
