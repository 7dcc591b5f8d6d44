/* kvmux-cli end to end: start the real kvmuxd on an ephemeral port, run the
 * real kvmux-cli binary (KVMUX_CLI_PATH) as a child process for every
 * command, and check its stdout, stderr and exit code byte for byte.
 *
 * The child runs with its stdin, stdout and stderr on pipes, so the same
 * helper drives one-shot commands, a background "wait", and the interactive
 * prompt fed line by line. Every wait is bounded: reading stops at a
 * deadline, and a child still alive after it is SIGKILLed (by its pid) and
 * counted as a failure. */
#include "kvmux.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define OUT_CAP 65536
#define MAX_ARGV 32

/* One kvmux-cli child. */
typedef struct cli_proc {
    pid_t pid;
    int in_fd, out_fd, err_fd;  /* -1 once closed */
    char out[OUT_CAP + 1];      /* stdout so far, NUL-terminated */
    size_t out_len;
    char err[OUT_CAP + 1];      /* stderr so far, NUL-terminated */
    size_t err_len;
    int64_t started_ms;
    int64_t ended_ms;           /* when it was reaped */
} cli_proc;

static uint16_t g_port; /* the shared server */

/* Start KVMUX_CLI_PATH [-h 127.0.0.1 -p port] args... (args NULL-terminated).
 * port 0 leaves -h/-p out (for --help and the like). Returns 0 or -1. */
static int cli_start(cli_proc *p, uint16_t port, const char *const *args) {
    memset(p, 0, sizeof *p);
    p->in_fd = p->out_fd = p->err_fd = -1;
    char portbuf[16];
    const char *argv[MAX_ARGV + 6];
    int n = 0;
    argv[n++] = KVMUX_CLI_PATH;
    if (port) {
        snprintf(portbuf, sizeof portbuf, "%u", (unsigned)port);
        argv[n++] = "-h";
        argv[n++] = "127.0.0.1";
        argv[n++] = "-p";
        argv[n++] = portbuf;
    }
    for (int i = 0; args && args[i] && i < MAX_ARGV; i++) argv[n++] = args[i];
    argv[n] = NULL;

    /* O_CLOEXEC: a later child must not inherit this one's pipe ends, or
     * closing our stdin end would never give this child EOF. */
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) != 0) return -1;
    if (pipe2(out, O_CLOEXEC) != 0) return -1;
    if (pipe2(err, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    p->pid = pid;
    p->in_fd = in[1];
    p->out_fd = out[0];
    p->err_fd = err[0];
    p->started_ms = test_now_ms();
    return 0;
}

/* Write all of s to the child's stdin (a pipe, so not test_write_all,
 * which uses send). */
static void cli_write(cli_proc *p, const char *s) {
    size_t len = strlen(s);
    while (p->in_fd >= 0 && len > 0) {
        ssize_t w = write(p->in_fd, s, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            CHECK(!"write to kvmux-cli stdin");
            return;
        }
        s += w;
        len -= (size_t)w;
    }
}

static void cli_close_stdin(cli_proc *p) {
    if (p->in_fd >= 0) close(p->in_fd);
    p->in_fd = -1;
}

/* Read whatever stdout/stderr have, waiting at most timeout_ms for the
 * first byte. Returns 1 once both are at EOF. */
static int cli_pump(cli_proc *p, int timeout_ms) {
    struct pollfd fds[2];
    int nf = 0;
    if (p->out_fd >= 0) fds[nf++] = (struct pollfd){p->out_fd, POLLIN, 0};
    if (p->err_fd >= 0) fds[nf++] = (struct pollfd){p->err_fd, POLLIN, 0};
    if (nf == 0) return 1;
    if (poll(fds, (nfds_t)nf, timeout_ms) <= 0) return 0;
    for (int i = 0; i < nf; i++) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        int is_out = fds[i].fd == p->out_fd;
        char *buf = is_out ? p->out : p->err;
        size_t *len = is_out ? &p->out_len : &p->err_len;
        char tmp[4096];
        ssize_t got = read(fds[i].fd, tmp, sizeof tmp);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            close(fds[i].fd);
            if (is_out)
                p->out_fd = -1;
            else
                p->err_fd = -1;
            continue;
        }
        size_t room = OUT_CAP - *len;
        size_t take = (size_t)got < room ? (size_t)got : room;
        memcpy(buf + *len, tmp, take);
        *len += take;
        buf[*len] = '\0';
    }
    return p->out_fd < 0 && p->err_fd < 0;
}

/* Pump until needle shows up in stdout (where = 1) or stderr (where = 2),
 * or timeout_ms passes. Returns 1 if it showed up. */
static int cli_wait_for(cli_proc *p, const char *needle, int where,
                        int timeout_ms) {
    int64_t deadline = test_now_ms() + timeout_ms;
    const char *hay = where == 1 ? p->out : p->err;
    for (;;) {
        if (strstr(hay, needle)) return 1;
        int64_t left = deadline - test_now_ms();
        if (left <= 0) return 0;
        if (cli_pump(p, (int)(left < 50 ? left : 50))) /* both at EOF */
            return strstr(hay, needle) != NULL;
    }
}

/* Close stdin, collect output until EOF, reap. Returns the exit code, 128+
 * signal, or -1 if the child had to be killed after timeout_ms. */
static int cli_finish(cli_proc *p, int timeout_ms) {
    cli_close_stdin(p);
    int64_t deadline = test_now_ms() + timeout_ms;
    while (!cli_pump(p, 50) && test_now_ms() < deadline) {
    }
    int status = 0;
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) break;
        if (r < 0 || test_now_ms() >= deadline) {
            fprintf(stderr, "kvmux-cli (pid %d) did not finish in %d ms\n",
                    (int)p->pid, timeout_ms);
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            p->pid = 0;
            if (p->out_fd >= 0) close(p->out_fd);
            if (p->err_fd >= 0) close(p->err_fd);
            p->out_fd = p->err_fd = -1;
            return -1;
        }
        test_sleep_ms(5);
    }
    p->ended_ms = test_now_ms();
    p->pid = 0;
    if (p->out_fd >= 0) close(p->out_fd);
    if (p->err_fd >= 0) close(p->err_fd);
    p->out_fd = p->err_fd = -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

/* Run one kvmux-cli to completion with stdin_data (may be NULL) on stdin.
 * Returns its exit code (see cli_finish). */
static int run_argv(cli_proc *p, uint16_t port, const char *stdin_data,
                    const char *const *args) {
    if (cli_start(p, port, args) != 0) {
        CHECK(!"fork/exec kvmux-cli");
        return -1;
    }
    if (stdin_data) cli_write(p, stdin_data);
    return cli_finish(p, 30000);
}

#define RUN(p, port, in, ...) \
    run_argv((p), (port), (in), (const char *const[]){__VA_ARGS__, NULL})
/* The interactive prompt: no command arguments, script on stdin. */
#define RUN_PROMPT(p, port, in) run_argv((p), (port), (in), NULL)

/* Print what a child wrote; used when a check fails to show why. */
static void dump(const char *what, const cli_proc *p) {
    fprintf(stderr, "--- %s: stdout (%zu bytes):\n%s\n--- stderr:\n%s---\n",
            what, p->out_len, p->out, p->err);
}

#define CHECK_RUN(p, cond, what)   \
    do {                           \
        int ok_ = (cond);          \
        CHECK(ok_);                \
        if (!ok_) dump(what, p);   \
    } while (0)

/* Parse "OK version=N\n" (the whole stdout). Returns N or 0. */
static unsigned long long ok_version(const cli_proc *p) {
    unsigned long long v = 0;
    int used = 0;
    if (sscanf(p->out, "OK version=%llu\n%n", &v, &used) != 1) return 0;
    if ((size_t)used != p->out_len) return 0;
    return v;
}

/* ---- tests ---- */

static void test_help_and_version(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, 0, NULL, "--help"), 0);
    CHECK(strstr(p.out, "usage: kvmux-cli") != NULL);
    CHECK(strstr(p.out, "Exit codes") != NULL);
    CHECK(strstr(p.out, "cas KEY VERSION VALUE") != NULL);
    CHECK_EQ(p.err_len, 0);

    CHECK_EQ(RUN(&p, 0, NULL, "-V"), 0);
    CHECK(strcmp(p.out, "kvmux-cli " KVMUX_VERSION_STRING "\n") == 0);
}

/* Every malformed command line exits 2 with a message on stderr and
 * nothing on stdout; none of them reaches the server. */
static void test_usage_errors(void) {
    static const char *const cases[][6] = {
        {"get", NULL},
        {"frobnicate", "k", NULL},
        {"set", "k", NULL},
        {"get", "a", "b", NULL},
        {"get", "", NULL},
        {"incr", "k", "12abc", NULL},
        {"incr", "k", "99999999999999999999", NULL},
        {"incr", "k", " 5", NULL},
        {"set", "k", "v", "--ttl", "-5", NULL},
        {"set", "k", "v", "--ttl", NULL},
        {"set", "k", "v", "--ttl=x", NULL},
        {"cas", "k", "-1", "v", NULL},
        {"cas", "k", "0x10", "v", NULL},
        {"wait", "k", "1", "4294967296", NULL},
        {"wait", "k", "1", NULL},
        {"del", "k", "extra", NULL},
        {"ping", "extra", NULL},
        {"-X", "ping", NULL},
        {"-p", "70000", "ping", NULL},
        {"-p", "0", "ping", NULL},
        {"-p", "12ab", "ping", NULL},
        {"-t", "0", "ping", NULL},
        {"-t", "-5", "ping", NULL},
        {"-p", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_proc p;
        int rc = run_argv(&p, g_port, NULL, cases[i]);
        char what[128];
        snprintf(what, sizeof what, "usage case %zu (%s)", i, cases[i][0]);
        CHECK_RUN(&p, rc == 2, what);
        CHECK_RUN(&p, p.out_len == 0, what);
        CHECK_RUN(&p, strncmp(p.err, "kvmux-cli: ", 11) == 0, what);
    }
}

static void test_ping(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "ping"), 0);
    double ms = -1;
    CHECK_RUN(&p, sscanf(p.out, "PONG %lf ms\n", &ms) == 1 && ms >= 0, "ping");
    CHECK(p.out_len > 0 && p.out[p.out_len - 1] == '\n');
    CHECK_EQ(p.err_len, 0);
}

static void test_set_get(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "k1", "hello"), 0);
    unsigned long long v1 = ok_version(&p);
    CHECK_RUN(&p, v1 > 0, "set k1");

    CHECK_EQ(RUN(&p, g_port, NULL, "get", "k1"), 0);
    CHECK_RUN(&p, strcmp(p.out, "hello\n") == 0, "get k1");
    CHECK_EQ(p.err_len, 0);

    char expect[64];
    snprintf(expect, sizeof expect, "version=%llu\nhello\n", v1);
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "-v", "k1"), 0);
    CHECK_RUN(&p, strcmp(p.out, expect) == 0, "get -v k1");
    CHECK_EQ(RUN(&p, g_port, NULL, "-v", "get", "k1"), 0);
    CHECK_RUN(&p, strcmp(p.out, expect) == 0, "-v get k1");

    CHECK_EQ(RUN(&p, g_port, NULL, "--raw", "get", "k1"), 0);
    CHECK_RUN(&p, p.out_len == 5 && memcmp(p.out, "hello", 5) == 0, "--raw get");

    /* Overwrite: the version moves on. */
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "k1", "again"), 0);
    unsigned long long v2 = ok_version(&p);
    CHECK(v2 > 0 && v2 != v1);

    /* Spaces, newlines and a leading dash survive argv untouched. */
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "k 2", "-a b\nc"), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "k 2"), 0);
    CHECK_RUN(&p, strcmp(p.out, "-a b\nc\n") == 0, "get 'k 2'");

    /* "--" ends options: the key "-v" is reachable. */
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "--", "-v", "dash"), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "--", "-v"), 0);
    CHECK_RUN(&p, strcmp(p.out, "dash\n") == 0, "get -- -v");

    /* Empty value. */
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "empty", ""), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "empty"), 0);
    CHECK_RUN(&p, strcmp(p.out, "\n") == 0, "get empty");
}

static void test_not_found_and_del(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "nosuchkey"), 1);
    CHECK_EQ(p.out_len, 0);
    CHECK_RUN(&p, strncmp(p.err, "kvmux-cli: get nosuchkey: ", 26) == 0 &&
                      strstr(p.err, "not found") != NULL,
              "get missing");

    CHECK_EQ(RUN(&p, g_port, NULL, "set", "d1", "x"), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "del", "d1"), 0);
    CHECK_RUN(&p, strcmp(p.out, "OK\n") == 0, "del d1");
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "d1"), 1);
    /* Deleting a missing key is "not found" (exit 1), not success. */
    CHECK_EQ(RUN(&p, g_port, NULL, "del", "d1"), 1);
    CHECK_RUN(&p, strstr(p.err, "kvmux-cli: del d1: ") != NULL, "del again");
}

static void test_incr(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "incr", "n"), 0);
    CHECK_RUN(&p, strcmp(p.out, "1\n") == 0, "incr n");
    CHECK_EQ(RUN(&p, g_port, NULL, "incr", "n", "41"), 0);
    CHECK_RUN(&p, strcmp(p.out, "42\n") == 0, "incr n 41");
    /* A negative delta is an argument, not an option. */
    CHECK_EQ(RUN(&p, g_port, NULL, "incr", "n", "-50"), 0);
    CHECK_RUN(&p, strcmp(p.out, "-8\n") == 0, "incr n -50");
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "n"), 0);
    CHECK_RUN(&p, strcmp(p.out, "-8\n") == 0, "get n");

    /* The extremes parse; going past them is the server's overflow. */
    CHECK_EQ(RUN(&p, g_port, NULL, "incr", "big", "9223372036854775807"), 0);
    CHECK_RUN(&p, strcmp(p.out, "9223372036854775807\n") == 0, "incr max");
    CHECK_EQ(RUN(&p, g_port, NULL, "incr", "big"), 3);
    CHECK_EQ(p.out_len, 0);
    CHECK_RUN(&p, strncmp(p.err, "kvmux-cli: incr big: ", 21) == 0, "overflow");
    CHECK_EQ(RUN(&p, g_port, NULL, "incr", "small", "-9223372036854775808"), 0);
    CHECK_RUN(&p, strcmp(p.out, "-9223372036854775808\n") == 0, "incr min");
    CHECK_EQ(RUN(&p, g_port, NULL, "incr", "small", "-1"), 3);

    CHECK_EQ(RUN(&p, g_port, NULL, "set", "s", "abc"), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "incr", "s"), 3);
    CHECK_EQ(p.out_len, 0);
    CHECK_RUN(&p, strncmp(p.err, "kvmux-cli: incr s: ", 19) == 0, "not int");
    /* The failed incr left the value alone. */
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "s"), 0);
    CHECK_RUN(&p, strcmp(p.out, "abc\n") == 0, "get s");
}

static void test_cas(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "c", "v1"), 0);
    unsigned long long v1 = ok_version(&p);
    REQUIRE(v1 > 0);
    char v1s[32];
    snprintf(v1s, sizeof v1s, "%llu", v1);

    CHECK_EQ(RUN(&p, g_port, NULL, "cas", "c", v1s, "v2"), 0);
    unsigned long long v2 = ok_version(&p);
    CHECK_RUN(&p, v2 > 0 && v2 != v1, "cas c v1");

    /* Same expected version again: mismatch, exit 3, current version named. */
    CHECK_EQ(RUN(&p, g_port, NULL, "cas", "c", v1s, "v3"), 3);
    CHECK_EQ(p.out_len, 0);
    char cur[64];
    snprintf(cur, sizeof cur, "current version %llu", v2);
    CHECK_RUN(&p, strncmp(p.err, "kvmux-cli: cas c: ", 18) == 0 &&
                      strstr(p.err, cur) != NULL,
              "cas mismatch");
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "c"), 0);
    CHECK_RUN(&p, strcmp(p.out, "v2\n") == 0, "get c after cas");

    /* Version 0: create only if absent. */
    CHECK_EQ(RUN(&p, g_port, NULL, "cas", "cnew", "0", "first"), 0);
    CHECK(ok_version(&p) > 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "cas", "cnew", "0", "second"), 3);
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "cnew"), 0);
    CHECK_RUN(&p, strcmp(p.out, "first\n") == 0, "get cnew");
}

static void test_ttl(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "t1", "v", "--ttl", "300"), 0);
    CHECK(ok_version(&p) > 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "t2", "v", "--ttl=300"), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "t3", "v", "--ttl", "0"), 0);
    test_sleep_ms(700);
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "t1"), 1);
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "t2"), 1);
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "t3"), 0); /* 0 = never expires */
}

/* exists, ttl, expire, persist, scan: output and exit codes. */
static void test_key_space(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "ks:a", "1"), 0);
    unsigned long long va = ok_version(&p);
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "ks:b", "2", "--ttl", "60000"), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "exists", "ks:a"), 0);
    CHECK_RUN(&p, strcmp(p.out, "1\n") == 0, "exists ks:a");
    CHECK_EQ(RUN(&p, g_port, NULL, "exists", "-v", "ks:a"), 0);
    char want[64];
    snprintf(want, sizeof want, "1 version=%llu\n", va);
    CHECK_RUN(&p, strcmp(p.out, want) == 0, "exists -v ks:a");
    CHECK_EQ(RUN(&p, g_port, NULL, "exists", "ks:none"), 0);
    CHECK_RUN(&p, strcmp(p.out, "0\n") == 0, "exists ks:none");
    CHECK_EQ(RUN(&p, g_port, NULL, "ttl", "ks:a"), 0);
    CHECK_RUN(&p, strcmp(p.out, "-1\n") == 0, "ttl ks:a");
    CHECK_EQ(RUN(&p, g_port, NULL, "ttl", "ks:b"), 0);
    long long ttl = atoll(p.out);
    CHECK(ttl > 50000 && ttl <= 60000);
    CHECK_EQ(RUN(&p, g_port, NULL, "ttl", "ks:none"), 1);
    CHECK(strstr(p.err, "ks:none: key not found") != NULL);
    CHECK_EQ(RUN(&p, g_port, NULL, "expire", "ks:a", "90000"), 0);
    CHECK(ok_version(&p) > va);
    CHECK_EQ(RUN(&p, g_port, NULL, "ttl", "ks:a"), 0);
    ttl = atoll(p.out);
    CHECK(ttl > 80000 && ttl <= 90000);
    CHECK_EQ(RUN(&p, g_port, NULL, "expire", "ks:a", "0"), 2);
    CHECK_EQ(RUN(&p, g_port, NULL, "expire", "ks:none", "10"), 1);
    CHECK_EQ(RUN(&p, g_port, NULL, "persist", "ks:b"), 0);
    CHECK(ok_version(&p) > 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "ttl", "ks:b"), 0);
    CHECK_RUN(&p, strcmp(p.out, "-1\n") == 0, "ttl ks:b after persist");
    CHECK_EQ(RUN(&p, g_port, NULL, "scan", "ks:", "--count", "1"), 0);
    CHECK_RUN(&p, strcmp(p.out, "ks:a\nks:b\n") == 0 || strcmp(p.out, "ks:b\nks:a\n") == 0,
              "scan ks:");
    CHECK_EQ(RUN(&p, g_port, NULL, "scan", "ks:", "--count", "1001"), 2);
}

static void test_wait(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "w", "a"), 0);
    unsigned long long v1 = ok_version(&p);
    REQUIRE(v1 > 0);
    char v1s[32];
    snprintf(v1s, sizeof v1s, "%llu", v1);

    /* Nothing changes: "(timeout)" after about the asked time, exit 3. */
    CHECK_EQ(RUN(&p, g_port, NULL, "wait", "w", v1s, "300"), 3);
    CHECK_RUN(&p, strcmp(p.out, "(timeout)\n") == 0, "wait timeout");
    int64_t took = p.ended_ms - p.started_ms;
    CHECK(took >= 250);
    CHECK(took < 10000);

    /* Already different: answers at once with the current value. */
    char expect[64];
    snprintf(expect, sizeof expect, "version=%llu\na\n", v1);
    CHECK_EQ(RUN(&p, g_port, NULL, "wait", "w", "0", "5000"), 0);
    CHECK_RUN(&p, strcmp(p.out, expect) == 0, "wait differs");
    CHECK(p.ended_ms - p.started_ms < 4000);

    /* Released by a concurrent set from another kvmux-cli. */
    cli_proc waiter;
    REQUIRE(cli_start(&waiter, g_port,
                      (const char *const[]){"wait", "w", v1s, "20000", NULL}) == 0);
    test_sleep_ms(300); /* let it register; if not yet, it sees the new version */
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "w", "b"), 0);
    unsigned long long v2 = ok_version(&p);
    CHECK(v2 > 0 && v2 != v1);
    int rc = cli_finish(&waiter, 15000);
    CHECK_EQ(rc, 0);
    snprintf(expect, sizeof expect, "version=%llu\nb\n", v2);
    CHECK_RUN(&waiter, strcmp(waiter.out, expect) == 0, "released waiter");
    /* Released by the set, well before its own 20 s. */
    CHECK(waiter.ended_ms - waiter.started_ms < 10000);

    /* A wait released by a delete reports it. */
    char v2s[32];
    snprintf(v2s, sizeof v2s, "%llu", v2);
    REQUIRE(cli_start(&waiter, g_port,
                      (const char *const[]){"wait", "w", v2s, "20000", NULL}) == 0);
    test_sleep_ms(300);
    CHECK_EQ(RUN(&p, g_port, NULL, "del", "w"), 0);
    CHECK_EQ(cli_finish(&waiter, 15000), 0);
    CHECK_RUN(&waiter, strcmp(waiter.out, "version=0 (deleted)\n") == 0,
              "waiter released by del");
}

/* --json and --csv: every command's result as one document / record;
 * conflicting modes are a usage error. */
static void test_output_modes(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "set", "fmt", "a\"b\\c\n"), 0);
    unsigned long long v = ok_version(&p);
    REQUIRE(v > 0);
    char want[128];

    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "get", "fmt"), 0);
    CHECK_RUN(&p, strcmp(p.out, "\"a\\\"b\\\\c\\n\"\n") == 0, "--json get");
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "get", "-v", "fmt"), 0);
    snprintf(want, sizeof want, "{\"version\":%llu,\"value\":\"a\\\"b\\\\c\\n\"}\n", v);
    CHECK_RUN(&p, strcmp(p.out, want) == 0, "--json get -v");
    CHECK_EQ(RUN(&p, g_port, NULL, "--csv", "get", "-v", "fmt"), 0);
    snprintf(want, sizeof want, "%llu,\"a\"\"b\\c\n\"\n", v);
    CHECK_RUN(&p, strcmp(p.out, want) == 0, "--csv get -v");

    /* Binary bytes: \u00XX in JSON, so the code points are the bytes. */
    CHECK_EQ(RUN_PROMPT(&p, g_port, "set fbin \"\\x00\\xff\\x7f\"\n"), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "get", "fbin"), 0);
    CHECK_RUN(&p, strcmp(p.out, "\"\\u0000\\u00ff\\u007f\"\n") == 0, "--json binary");

    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "set", "fmt2", "x"), 0);
    unsigned long long v2 = 0;
    CHECK_RUN(&p, sscanf(p.out, "{\"version\":%llu}\n", &v2) == 1 && v2 > v, "--json set");
    CHECK_EQ(RUN(&p, g_port, NULL, "--csv", "set", "fmt2", "y"), 0);
    CHECK_RUN(&p, strtoull(p.out, NULL, 10) > v2 && p.out[p.out_len - 1] == '\n', "--csv set");
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "del", "fmt2"), 0);
    CHECK_RUN(&p, strcmp(p.out, "\"OK\"\n") == 0, "--json del");
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "incr", "fmtn", "7"), 0);
    CHECK_RUN(&p, strcmp(p.out, "7\n") == 0, "--json incr");
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "exists", "-v", "fmt"), 0);
    snprintf(want, sizeof want, "{\"exists\":1,\"version\":%llu}\n", v);
    CHECK_RUN(&p, strcmp(p.out, want) == 0, "--json exists -v");
    CHECK_EQ(RUN(&p, g_port, NULL, "--csv", "exists", "-v", "fmt"), 0);
    snprintf(want, sizeof want, "1,%llu\n", v);
    CHECK_RUN(&p, strcmp(p.out, want) == 0, "--csv exists -v");
    char vs[32];
    snprintf(vs, sizeof vs, "%llu", v);
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "wait", "fmt", vs, "50"), 3);
    CHECK_RUN(&p, strcmp(p.out, "null\n") == 0, "--json wait timeout");
    CHECK_EQ(RUN(&p, g_port, NULL, "--csv", "wait", "fmt", vs, "50"), 3);
    CHECK_RUN(&p, strcmp(p.out, "NULL\n") == 0, "--csv wait timeout");

    CHECK_EQ(RUN(&p, g_port, NULL, "set", "fs:1", "a"), 0);
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "scan", "fs:"), 0);
    CHECK_RUN(&p, strcmp(p.out, "[\"fs:1\"]\n") == 0, "--json scan");
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "scan", "fs:none"), 0);
    CHECK_RUN(&p, strcmp(p.out, "[]\n") == 0, "--json scan empty");
    CHECK_EQ(RUN(&p, g_port, NULL, "--csv", "scan", "fs:"), 0);
    CHECK_RUN(&p, strcmp(p.out, "\"fs:1\"\n") == 0, "--csv scan");

    /* STATS: an object of numbers (the version is a string). */
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "stats"), 0);
    CHECK_RUN(&p, p.out[0] == '{' && strstr(p.out, "\"version\":\"") != NULL &&
                      strstr(p.out, ",\"keys\":") != NULL && strcmp(p.out + p.out_len - 2, "}\n") == 0,
              "--json stats");
    CHECK_EQ(RUN(&p, g_port, NULL, "--csv", "stats", "keys"), 0);
    CHECK_RUN(&p, strncmp(p.out, "\"keys\",", 7) == 0, "--csv stats keys");
    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "ping"), 0);
    double ms = -1;
    CHECK_RUN(&p, sscanf(p.out, "{\"reply\":\"PONG\",\"rtt_ms\":%lf}", &ms) == 1 && ms >= 0,
              "--json ping");

    CHECK_EQ(RUN(&p, g_port, NULL, "--json", "--csv", "ping"), 2);
    CHECK_EQ(RUN(&p, g_port, NULL, "--raw", "--json", "ping"), 2);
    CHECK_EQ(p.out_len, 0);
}

/* -r N repeats, -i SEC spaces the runs; the exit code is the last
 * failing run's. */
static void test_repeat(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "-r", "3", "incr", "rep"), 0);
    CHECK_RUN(&p, strcmp(p.out, "1\n2\n3\n") == 0, "-r 3 incr");
    CHECK_EQ(RUN(&p, g_port, NULL, "-r", "3", "-i", "0.2", "incr", "rep"), 0);
    CHECK_RUN(&p, strcmp(p.out, "4\n5\n6\n") == 0, "-r 3 -i 0.2 incr");
    int64_t took = p.ended_ms - p.started_ms;
    CHECK(took >= 380);
    CHECK(took < 20000);
    CHECK_EQ(RUN(&p, g_port, NULL, "-r", "2", "get", "rep:none"), 1);
    CHECK_EQ(p.out_len, 0);
    const char *first = strstr(p.err, "not found");
    CHECK_RUN(&p, first && strstr(first + 1, "not found") != NULL,
              "-r 2 get missing reports twice");
    static const char *const bad[][5] = {
        {"-r", "0", "ping", NULL},      {"-r", "-2", "ping", NULL},
        {"-r", "x", "ping", NULL},      {"-i", "-1", "ping", NULL},
        {"-i", "1s", "ping", NULL},     {"-r", "2", NULL},
        {"-x", NULL},                   {"--stat", "ping", NULL},
        {"--stat", "-i", "0", NULL},    {"--stat", "--latency", NULL},
        {"-x", "--latency", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "bad repeat/mode case %zu", i);
        CHECK_RUN(&p, run_argv(&p, g_port, "", bad[i]) == 2 && p.out_len == 0, what);
    }
}

/* -x: the last argument from stdin, binary safe, up to the server's
 * 64 MiB value limit (the interactive line limit is 8 MiB). */
static void test_stdin_arg(void) {
    const size_t big = 64u * 1024 * 1024;
    uint8_t *val = test_pattern(big + 1, 77);
    cli_proc p;
    REQUIRE(cli_start(&p, g_port, (const char *const[]){"-x", "set", "xbig", NULL}) == 0);
    size_t off = 0;
    while (off < big) { /* cli_write stops at a NUL: write by length */
        ssize_t w = write(p.in_fd, val + off, big - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    CHECK_EQ(off, big);
    CHECK_EQ(cli_finish(&p, 60000), 0);
    CHECK_RUN(&p, ok_version(&p) > 0, "-x set 64 MiB");

    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", g_port, NULL) == 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(c, "xbig", 4, &v, 30000), 0);
    CHECK(v && v->len == big && memcmp(v->data, val, big) == 0);
    kvmux_value_free(v);

    /* One byte over the limit: the server's "too large", exit 3. */
    REQUIRE(cli_start(&p, g_port, (const char *const[]){"-x", "set", "xbig2", NULL}) == 0);
    off = 0;
    while (off < big + 1) {
        ssize_t w = write(p.in_fd, val + off, big + 1 - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    CHECK_EQ(cli_finish(&p, 60000), 3);
    CHECK_RUN(&p, strstr(p.err, "kvmux-cli: set xbig2: ") != NULL, "-x set too large");
    free(val);

    /* Empty stdin: an empty value. */
    CHECK_EQ(run_argv(&p, g_port, "", (const char *const[]){"-x", "set", "xe", NULL}), 0);
    v = NULL;
    CHECK_EQ(kvmux_get(c, "xe", 2, &v, 5000), 0);
    CHECK(v && v->len == 0);
    kvmux_value_free(v);
    kvmux_close(c);
}

/* --stat and --latency stop by themselves after -r lines. */
static void test_watch_modes(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, g_port, NULL, "--stat", "-r", "2", "-i", "0.2"), 0);
    char hdr[64];
    unsigned long long keys = 0, clients = 0, ops = 0, reqs = 0;
    char mem[32];
    CHECK_RUN(&p, sscanf(p.out, "%63s", hdr) == 1 && strcmp(hdr, "keys") == 0, "--stat header");
    const char *l2 = strchr(p.out, '\n');
    CHECK_RUN(&p, l2 && sscanf(l2 + 1, "%llu %31s %llu %llu %llu", &keys, mem, &clients, &ops,
                               &reqs) == 5 && keys > 0 && clients >= 1 && reqs > 0,
              "--stat line");
    int lines = 0;
    for (size_t i = 0; i < p.out_len; i++) lines += p.out[i] == '\n';
    CHECK_EQ(lines, 3);
    CHECK(p.ended_ms - p.started_ms >= 380);

    CHECK_EQ(RUN(&p, g_port, NULL, "--latency", "-r", "2", "-i", "0.3"), 0);
    double mn[2], av[2], mx[2];
    long n[2];
    const char *o = p.out;
    for (int i = 0; i < 2; i++) {
        int ok = o && sscanf(o, "min: %lf ms, avg: %lf ms, max: %lf ms (%ld samples)", &mn[i],
                             &av[i], &mx[i], &n[i]) == 4;
        CHECK_RUN(&p, ok && mn[i] <= av[i] && av[i] <= mx[i] && n[i] > 0, "--latency line");
        if (!ok) return;
        o = strchr(o, '\n');
        if (o) o++;
    }
    CHECK(n[1] > n[0]);
    CHECK(o && *o == '\0');
    CHECK(p.ended_ms - p.started_ms >= 550);
}

/* help CMD for every command help lists: the synopsis, then a line of
 * description. */
static void test_help_command(void) {
    cli_proc p;
    CHECK_EQ(RUN(&p, 0, NULL, "help"), 0);
    char list[OUT_CAP + 1];
    memcpy(list, p.out, p.out_len + 1);
    int seen = 0;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char name[32];
        if (sscanf(line, " %31[a-z]", name) != 1) continue;
        cli_proc h;
        CHECK_EQ(RUN(&h, 0, NULL, "help", name), 0);
        size_t nl = strlen(name);
        char *desc = strchr(h.out, '\n');
        CHECK_RUN(&h, strncmp(h.out, name, nl) == 0 && (h.out[nl] == ' ' || h.out[nl] == '\n') &&
                          desc && strncmp(desc + 1, "    ", 4) == 0 && strlen(desc + 5) > 2,
                  name);
        seen++;
    }
    CHECK(seen >= 15);
    CHECK_EQ(RUN(&p, 0, NULL, "help", "set"), 0);
    CHECK_RUN(&p, strncmp(p.out, "set KEY VALUE [--ttl MS]\n    ", 29) == 0, "help set");
    CHECK_EQ(RUN(&p, 0, NULL, "help", "nosuch"), 2);
    CHECK(strstr(p.err, "unknown command 'nosuch'") != NULL);
}

/* A port with a bound socket that does not listen: connecting is refused,
 * and holding the socket keeps anyone else from taking the port. */
static int closed_port(uint16_t *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_connect_error(void) {
    uint16_t port = 0;
    int fd = closed_port(&port);
    REQUIRE(fd >= 0);
    cli_proc p;
    CHECK_EQ(RUN(&p, port, NULL, "ping"), 4);
    CHECK_EQ(p.out_len, 0);
    char expect[64];
    snprintf(expect, sizeof expect, "kvmux-cli: cannot connect to 127.0.0.1:%u: ",
             (unsigned)port);
    CHECK_RUN(&p, strncmp(p.err, expect, strlen(expect)) == 0, "connect refused");
    /* The reason, as redis-cli gives it. */
    CHECK_RUN(&p, strcmp(p.err + strlen(expect), "Connection refused\n") == 0, "refused reason");
    CHECK_EQ(RUN(&p, port, NULL, "get", "k"), 4);

    /* Interactive: each command reports it, the prompt goes on, exit 0. */
    CHECK_EQ(RUN_PROMPT(&p, port, "ping\nhelp\nquit\n"), 0);
    CHECK(strstr(p.out, "get [-v] KEY") != NULL);
    CHECK(strstr(p.err, "cannot connect") != NULL);
    close(fd);
}

/* -h HOST:PORT,HOST:PORT: a replicated group's endpoints. Against one
 * kvmuxd behind a dead first endpoint: the library moves on to the next
 * (a single node never answers NOT_LEADER). */
static void test_endpoints(void) {
    uint16_t dead = 0;
    int fd = closed_port(&dead);
    REQUIRE(fd >= 0);
    char list[64];
    snprintf(list, sizeof list, "127.0.0.1:%u,127.0.0.1:%u", (unsigned)dead, (unsigned)g_port);
    cli_proc p;
    CHECK_EQ(RUN(&p, 0, NULL, "-h", list, "set", "ep", "group"), 0);
    CHECK_RUN(&p, ok_version(&p) > 0, "set via endpoints");
    CHECK_EQ(RUN(&p, 0, NULL, "-h", list, "get", "ep"), 0);
    CHECK_RUN(&p, strcmp(p.out, "group\n") == 0, "get via endpoints");
    /* A malformed list is refused with the library's reason. */
    CHECK(RUN(&p, 0, NULL, "-h", "127.0.0.1,127.0.0.1:1", "ping") != 0);
    CHECK_RUN(&p, strstr(p.err, "endpoints") != NULL, "bad endpoint list");
    close(fd);
}

static void test_interactive(void) {
    cli_proc p;
    /* The brief's example, byte for byte (no prompt on a pipe). */
    CHECK_EQ(RUN_PROMPT(&p, g_port, "set a 1\nget a\nquit\n"), 0);
    unsigned long long v = 0;
    int used = 0;
    CHECK_RUN(&p, sscanf(p.out, "OK version=%llu\n1\n%n", &v, &used) == 1 &&
                      v > 0 && (size_t)used == p.out_len,
              "interactive set/get");
    CHECK_EQ(p.err_len, 0);

    /* Quoting and escapes; EOF without quit ends cleanly. */
    CHECK_EQ(RUN_PROMPT(&p, g_port,
                 "set \"sp ace\" \"x\\ty\\x21\\\"\"\n"
                 "get 'sp ace'\n"
                 "  GET   sp\\ ace  \n"
                 "\n"
                 "set z \"a\\x00b\"\n"
                 "set q 'it\\'s'\n"
                 "get q\n"),
             0);
    const char *o = p.out;
    CHECK(strncmp(o, "OK version=", 11) == 0);
    o = strchr(o, '\n');
    REQUIRE(o != NULL);
    o++;
    const char *want = "x\ty!\"\nx\ty!\"\nOK version=";
    CHECK_RUN(&p, strncmp(o, want, strlen(want)) == 0, "quotes");
    CHECK(strstr(p.out, "\nit's\n") != NULL);
    CHECK_EQ(p.err_len, 0);
    /* The NUL byte went over the wire intact. */
    CHECK_EQ(RUN(&p, g_port, NULL, "get", "z"), 0);
    CHECK_RUN(&p, p.out_len == 4 && memcmp(p.out, "a\0b\n", 4) == 0, "get z");

    /* Errors print and the prompt goes on; exit is still 0. */
    CHECK_EQ(RUN_PROMPT(&p, g_port,
                 "bogus\n"
                 "get\n"
                 "set q \"unterminated\n"
                 "get nosuch\n"
                 "incr n abc\n"
                 "get a\n"
                 "exit\n"
                 "get a\n"),
             0);
    CHECK_RUN(&p, strcmp(p.out, "1\n") == 0, "interactive errors stdout");
    CHECK(strstr(p.err, "unknown command 'bogus'") != NULL);
    CHECK(strstr(p.err, "unbalanced quotes") != NULL);
    CHECK(strstr(p.err, "kvmux-cli: get nosuch: ") != NULL);
    CHECK(strstr(p.err, "invalid DELTA 'abc'") != NULL);
    CHECK(strstr(p.err, "kvmux-cli: get: missing arguments") != NULL);
}

/* Kill the server under a running prompt: the next command says the
 * connection is gone and that it will reconnect; the prompt survives. */
static void test_interactive_server_loss(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    cli_proc p;
    REQUIRE(cli_start(&p, s.port, NULL) == 0);
    cli_write(&p, "set d 1\n");
    CHECK_RUN(&p, cli_wait_for(&p, "OK version=", 1, 10000), "set before loss");
    test_server_kill(&s);

    cli_write(&p, "get d\n");
    CHECK_RUN(&p, cli_wait_for(&p, "will reconnect", 2, 10000), "loss reported");
    CHECK(strstr(p.err, "kvmux-cli: get d: ") != NULL);
    /* The reconnect attempt on the next command fails visibly. */
    cli_write(&p, "ping\n");
    CHECK_RUN(&p, cli_wait_for(&p, "cannot connect", 2, 10000), "reconnect");
    cli_write(&p, "help\nquit\n");
    CHECK_EQ(cli_finish(&p, 15000), 0);
    CHECK(strstr(p.out, "ping") != NULL);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    g_port = s.port;

    test_help_and_version();
    test_usage_errors();
    test_ping();
    test_set_get();
    test_not_found_and_del();
    test_incr();
    test_cas();
    test_ttl();
    test_key_space();
    test_wait();
    test_output_modes();
    test_repeat();
    test_stdin_arg();
    test_watch_modes();
    test_help_command();
    test_connect_error();
    test_endpoints();
    test_interactive();
    test_interactive_server_loss();

    CHECK_EQ(test_server_stop(&s, 5000), 0);
    return test_report();
}
