/* kvmux-bench smoke test: the real kvmux-bench binary (KVMUX_BENCH_PATH) run
 * as a child process against the real kvmuxd on an ephemeral port.
 *
 * Not a performance test (benchmarks never decide pass/fail): it checks that
 * a short run does real work and reports it sanely. The --json summary and
 * the text summary both parse, report > 0 ops and 0 errors, percentiles are
 * ordered, the per-op counts add up, -n is honoured exactly, preload makes
 * every GET hit, async mode (both drivers) keeps requests in flight and
 * accounts for each, a missing server and bad usage give the documented
 * exit codes, a server's token (-a, $KVMUX_AUTH) is sent, and a server
 * killed mid-run (sync and async) ends the run by itself with the
 * connection loss reported.
 *
 * Every wait is bounded: a child still alive at its deadline is SIGKILLed
 * (by pid) and counted as a failure. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define OUT_CAP 65536
#define MAX_ARGS 40

typedef struct bench_proc {
    char out[OUT_CAP + 1];
    size_t out_len;
    char err[OUT_CAP + 1];
    size_t err_len;
    int status;        /* exit code, 128+sig if signalled, -1 if timed out */
    int64_t ms;        /* wall time */
} bench_proc;

static uint16_t g_port;

static void append(char *buf, size_t *len, const char *src, size_t n)
{
    if (n > OUT_CAP - *len)
        n = OUT_CAP - *len;
    memcpy(buf + *len, src, n);
    *len += n;
    buf[*len] = '\0';
}

/* Run KVMUX_BENCH_PATH [-h 127.0.0.1 -p port] args... and collect its
 * output. kill_server (pid > 0) is SIGKILLed kill_after_ms after the start,
 * for the connection-loss case. Returns 0, or -1 if it could not start. */
static int bench_run_child(bench_proc *p, uint16_t port, const char *const *args,
                           int timeout_ms, pid_t kill_server, int kill_after_ms)
{
    memset(p, 0, sizeof *p);
    const char *argv[MAX_ARGS + 6];
    char portbuf[16];
    int n = 0;
    argv[n++] = KVMUX_BENCH_PATH;
    if (port) {
        snprintf(portbuf, sizeof portbuf, "%u", (unsigned)port);
        argv[n++] = "-h";
        argv[n++] = "127.0.0.1";
        argv[n++] = "-p";
        argv[n++] = portbuf;
    }
    for (int i = 0; args[i] && i < MAX_ARGS; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
        return -1;
    int64_t t0 = test_now_ms();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);

    int fds[2] = {out[0], err[0]};
    int64_t deadline = t0 + timeout_ms;
    int killed_server = 0;
    while ((fds[0] >= 0 || fds[1] >= 0) && test_now_ms() < deadline) {
        if (kill_server > 0 && !killed_server && test_now_ms() - t0 >= kill_after_ms) {
            kill(kill_server, SIGKILL);
            killed_server = 1;
        }
        struct pollfd pf[2];
        int nf = 0;
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0)
                pf[nf++] = (struct pollfd){fds[i], POLLIN, 0};
        if (poll(pf, (nfds_t)nf, 50) <= 0)
            continue;
        for (int i = 0; i < nf; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char tmp[4096];
            ssize_t got = read(pf[i].fd, tmp, sizeof tmp);
            if (got < 0 && errno == EINTR)
                continue;
            int is_out = pf[i].fd == fds[0];
            if (got <= 0) {
                close(pf[i].fd);
                fds[is_out ? 0 : 1] = -1;
                continue;
            }
            if (is_out)
                append(p->out, &p->out_len, tmp, (size_t)got);
            else
                append(p->err, &p->err_len, tmp, (size_t)got);
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);

    int st = 0;
    pid_t w = 0;
    while (test_now_ms() < deadline && (w = waitpid(pid, &st, WNOHANG)) == 0)
        test_sleep_ms(10);
    if (w != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        p->status = -1;
        fprintf(stderr, "kvmux-bench did not finish within %d ms\n", timeout_ms);
    } else {
        p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    p->ms = test_now_ms() - t0;
    if (p->status != 0 && getenv("BENCH_SMOKE_VERBOSE"))
        fprintf(stderr, "--- stdout\n%s--- stderr\n%s---\n", p->out, p->err);
    return 0;
}

/* The number after "key" in s (e.g. key = "\"ops\":" or "ops: "), or -1. */
static double field(const char *s, const char *key)
{
    const char *at = strstr(s, key);
    if (!at)
        return -1;
    at += strlen(key);
    char *end = NULL;
    double v = strtod(at, &end);
    return end == at ? -1 : v;
}

/* Structural sanity of a one-line JSON object: starts with '{', ends with
 * "}\n", braces and brackets balance outside strings, nothing else on
 * stdout. */
static int json_balanced(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || s[0] != '{' || s[n - 1] != '\n' || s[n - 2] != '}')
        return 0;
    int depth = 0, in_str = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"')
            in_str = 1;
        else if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']') {
            if (--depth < 0)
                return 0;
            if (depth == 0 && i != n - 2)
                return 0;
        } else if (c == '\n')
            return 0;
    }
    return depth == 0 && !in_str;
}

/* ~1.2 s of sync load, 4 threads on one connection, 9:1 GET:SET over a
 * preloaded keyspace, JSON summary. */
static void test_json_sync_duration(void)
{
    const char *args[] = {"--mode", "sync", "-t", "4", "-d", "1.2", "--ratio", "9:1",
                          "-k", "1000", "--preload", "-s", "3-100", "--json", NULL};
    bench_proc p;
    REQUIRE(bench_run_child(&p, g_port, args, 20000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    CHECK(json_balanced(p.out));
    double ops = field(p.out, "\"ops\":");
    double ok = field(p.out, "\"ok\":");
    double errors = field(p.out, "\"errors\":");
    double misses = field(p.out, "\"misses\":");
    double dur = field(p.out, "\"duration_s\":");
    double rate = field(p.out, "\"ops_per_sec\":");
    double p50 = field(p.out, "\"p50\":");
    double p90 = field(p.out, "\"p90\":");
    double p99 = field(p.out, "\"p99\":");
    double p999 = field(p.out, "\"p99_9\":");
    double mx = field(p.out, "\"max\":");
    double mn = field(p.out, "\"min\":");
    double gets = field(p.out, "\"get\":"); /* first "get" is the ratio */
    double preloaded = field(p.out, "\"preloaded\":");
    const char *by_type = strstr(p.out, "\"ops_by_type\":");
    CHECK(by_type != NULL);
    double n_get = by_type ? field(by_type, "\"get\":") : -1;
    double n_set = by_type ? field(by_type, "\"set\":") : -1;

    CHECK(ops > 0);
    CHECK_EQ(errors, 0);
    CHECK_EQ(misses, 0);       /* preloaded: every GET hits */
    CHECK_EQ(ok, ops);
    CHECK_EQ(preloaded, 1000);
    CHECK_EQ(gets, 9);
    CHECK_EQ(n_get + n_set, ops);
    CHECK(n_set > 0 && n_get > n_set);
    CHECK(dur > 1.0 && dur < 5.0);
    CHECK(rate > 0 && rate > ops / dur * 0.99 && rate < ops / dur * 1.01);
    CHECK(mn > 0 && mn <= p50);
    CHECK(p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= mx);
    CHECK(strstr(p.out, "\"mode\":\"sync\"") != NULL);
    CHECK(strstr(p.out, "\"threads_per_connection\":4") != NULL);
    CHECK(strstr(p.out, "\"errors_by_kind\":[]") != NULL);
    /* Progress goes to stderr, once a second. */
    CHECK(strstr(p.err, "ops/s") != NULL);
    CHECK(strstr(p.out, "ops/s") == NULL);
    /* Bounded: the duration plus preload, not more. */
    CHECK(p.ms < 10000);
}

/* Serial SETs, exactly -n of them, text summary. */
static void test_text_serial_count(void)
{
    const char *args[] = {"-n", "2000", "--op", "set", "-s", "3", "-k", "50", "-q", NULL};
    bench_proc p;
    REQUIRE(bench_run_child(&p, g_port, args, 30000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    CHECK(strstr(p.out, "== kvmux-bench summary ==") != NULL);
    CHECK_EQ(field(p.out, "\nops: "), 2000);
    CHECK_EQ(field(p.out, "\nok: "), 2000);
    CHECK_EQ(field(p.out, "\nerrors: "), 0);
    CHECK(field(p.out, "\nops_per_sec: ") > 0);
    CHECK(strstr(p.out, "mode: serial") != NULL);
    CHECK(strstr(p.out, "\nerror: ") == NULL);
    double p50 = field(p.out, " p50="), p99 = field(p.out, " p99="), mx = field(p.out, " max=");
    CHECK(p50 > 0 && p50 <= p99 && p99 <= mx);
    CHECK_EQ(p.err_len, 0); /* -q: nothing on stderr */
}

/* -h HOST:PORT,HOST:PORT (a replicated group's endpoints) behind a dead
 * first endpoint, in serial and in async (loop driver) mode. */
static void test_endpoints(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0); /* bound, never listening */
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    char list[64];
    snprintf(list, sizeof list, "127.0.0.1:%u,127.0.0.1:%u", (unsigned)ntohs(a.sin_port),
             (unsigned)g_port);
    const char *modes[][2] = {{"--mode", "serial"}, {"--mode", "async"}};
    for (int m = 0; m < 2; m++) {
        const char *args[] = {"-h", list, "-n", "500", "--op", "set", modes[m][0], modes[m][1],
                              "-q", NULL};
        bench_proc p;
        REQUIRE(bench_run_child(&p, 0, args, 30000, 0, 0) == 0);
        CHECK_EQ(p.status, 0);
        CHECK_EQ(field(p.out, "\nok: "), 500);
        CHECK_EQ(field(p.out, "\nerrors: "), 0);
        if (p.status != 0) fprintf(stderr, "kvmux-bench -h list: %s\n", p.err);
    }
    close(fd);
}

/* GETs of keys never written are misses, not errors. */
static void test_misses_not_errors(void)
{
    const char *args[] = {"-n", "300", "--op", "get", "-k", "1000000", "--seed", "7",
                          "--json", "-q", NULL};
    bench_proc p;
    REQUIRE(bench_run_child(&p, g_port, args, 30000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    CHECK_EQ(field(p.out, "\"ops\":"), 300);
    CHECK_EQ(field(p.out, "\"errors\":"), 0);
    /* The key space is mostly empty (the other tests wrote < 1100 keys). */
    CHECK(field(p.out, "\"misses\":") > 250);
}

/* --stale is accepted by every driver; on a single node (protocol v2) the
 * reads are plain ones. */
static void test_stale_flag(void)
{
    const char *drivers[][4] = {{"--mode", "serial", "--driver", NULL},
                                {"--mode", "async", "--driver", "loop"},
                                {"--mode", "async", "--driver", "callback"}};
    for (int d = 0; d < 3; d++) {
        const char *args[] = {"-n", "300", "--op", "get", "--stale", "-k", "100", "--json", "-q",
                              drivers[d][0], drivers[d][1], drivers[d][3] ? drivers[d][2] : NULL,
                              drivers[d][3], NULL};
        bench_proc p;
        REQUIRE(bench_run_child(&p, g_port, args, 30000, 0, 0) == 0);
        CHECK_EQ(p.status, 0);
        CHECK_EQ(field(p.out, "\"ops\":"), 300);
        CHECK_EQ(field(p.out, "\"errors\":"), 0);
    }
}

/* INCR after --preload: preload writes "0" so every INCR succeeds. */
static void test_incr_preload(void)
{
    const char *args[] = {"-n", "500", "--op", "incr", "-k", "10", "--preload",
                          "-c", "2", "--json", "-q", NULL};
    bench_proc p;
    REQUIRE(bench_run_child(&p, g_port, args, 30000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    CHECK_EQ(field(p.out, "\"ops\":"), 500);
    CHECK_EQ(field(p.out, "\"errors\":"), 0);
    CHECK(strstr(p.out, "\"connections\":2") != NULL);
}

/* ~1 s of async load per driver: 2 connections x depth 16, 1:1 GET:SET
 * over a preloaded keyspace (every GET hits), then an exact -n run. */
static void test_async(const char *driver)
{
    const char *args[] = {"--mode", "async", "--driver", driver, "--depth", "16", "-c", "2",
                          "-d", "1", "--ratio", "1:1", "-k", "500", "--preload", "-s", "3-100",
                          "--json", NULL};
    bench_proc p;
    REQUIRE(bench_run_child(&p, g_port, args, 30000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    CHECK(json_balanced(p.out));
    double ops = field(p.out, "\"ops\":");
    CHECK(ops > 0);
    CHECK_EQ(field(p.out, "\"errors\":"), 0);
    CHECK_EQ(field(p.out, "\"misses\":"), 0);
    CHECK_EQ(field(p.out, "\"ok\":"), ops);
    CHECK_EQ(field(p.out, "\"preloaded\":"), 500);
    CHECK_EQ(field(p.out, "\"depth\":"), 16);
    const char *by_type = strstr(p.out, "\"ops_by_type\":");
    CHECK(by_type != NULL);
    if (by_type) {
        double n_get = field(by_type, "\"get\":"), n_set = field(by_type, "\"set\":");
        CHECK_EQ(n_get + n_set, ops);
        CHECK(n_get > 0 && n_set > 0);
    }
    double p50 = field(p.out, "\"p50\":"), p99 = field(p.out, "\"p99\":");
    CHECK(p50 > 0 && p50 <= p99);
    char want[64];
    snprintf(want, sizeof want, "\"driver\":\"%s\"", driver);
    CHECK(strstr(p.out, want) != NULL);
    CHECK(strstr(p.out, "\"mode\":\"async\"") != NULL);
    CHECK(strstr(p.out, "\"connections_lost\":0") != NULL);
    CHECK(strstr(p.err, "ops/s") != NULL); /* progress lines */
    CHECK(p.ms < 15000);

    /* -n is exact even with 3 x 64 requests in flight at the end. */
    const char *a2[] = {"--mode", "async", "--driver", driver, "--depth", "64", "-c", "3",
                        "-n", "5000", "--op", "set", "-k", "500", "--json", "-q", NULL};
    REQUIRE(bench_run_child(&p, g_port, a2, 30000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    CHECK_EQ(field(p.out, "\"ops\":"), 5000);
    CHECK_EQ(field(p.out, "\"ok\":"), 5000);
    CHECK_EQ(field(p.out, "\"errors\":"), 0);
}

/* Documented exit codes: 1 no server (either async driver too), 2 bad
 * usage (including -t or --driver where they do not apply). */
static void test_exit_codes(void)
{
    bench_proc p;
    /* A port nobody listens on: the server's, after it is stopped, is not
     * guaranteed free, so use a fresh server and stop it first. */
    test_server s2;
    REQUIRE(test_server_start(&s2, NULL) == 0);
    uint16_t dead_port = s2.port;
    test_server_stop(&s2, 5000);
    const char *a1[] = {"-n", "10", NULL};
    REQUIRE(bench_run_child(&p, dead_port, a1, 20000, 0, 0) == 0);
    CHECK_EQ(p.status, 1);
    CHECK_EQ(p.out_len, 0);
    CHECK(strstr(p.err, "cannot connect") != NULL);

    const char *a2[] = {"-n", "10", "-d", "1", NULL};
    REQUIRE(bench_run_child(&p, g_port, a2, 10000, 0, 0) == 0);
    CHECK_EQ(p.status, 2);

    const char *a3[] = {"--mode", "async", "--depth", "8", "-t", "4", "-n", "10", NULL};
    REQUIRE(bench_run_child(&p, g_port, a3, 10000, 0, 0) == 0);
    CHECK_EQ(p.status, 2);
    CHECK(strstr(p.err, "--depth") != NULL);
    CHECK_EQ(p.out_len, 0);

    const char *a4[] = {"--mode", "sync", "--driver", "loop", "-n", "10", NULL};
    REQUIRE(bench_run_child(&p, g_port, a4, 10000, 0, 0) == 0);
    CHECK_EQ(p.status, 2);

    for (int d = 0; d < 2; d++) {
        const char *a5[] = {"--mode", "async", "--driver", d ? "callback" : "loop",
                            "--depth", "4", "-n", "10", NULL};
        REQUIRE(bench_run_child(&p, dead_port, a5, 20000, 0, 0) == 0);
        CHECK_EQ(p.status, 1);
        CHECK_EQ(p.out_len, 0);
        CHECK(strstr(p.err, "cannot connect") != NULL);
    }
}

/* A server killed mid-run: the run ends by itself long before -d, reports
 * the lost connection and the error kind, and exits 1. mode: "sync", or an
 * async driver name. */
static void test_server_killed(const char *mode)
{
    test_server s2;
    REQUIRE(test_server_start(&s2, NULL) == 0);
    const int sync = !strcmp(mode, "sync");
    const char *args[] = {"--mode", sync ? "sync" : "async", "-d", "30", "--json", "-q",
                          "--timeout", "2000", sync ? "-t" : "--driver", sync ? "8" : mode,
                          sync ? NULL : "--depth", "32", NULL};
    bench_proc p;
    REQUIRE(bench_run_child(&p, s2.port, args, 20000, s2.pid, 1000) == 0);
    int st;
    waitpid(s2.pid, &st, 0); /* reap the killed server */
    CHECK_EQ(p.status, 1);
    CHECK(p.ms < 10000);
    CHECK(json_balanced(p.out));
    CHECK(field(p.out, "\"connections_lost\":") == 1);
    CHECK(field(p.out, "\"errors\":") >= 1);
    CHECK(strstr(p.out, "\"errors_by_kind\":[{") != NULL);
    CHECK(strstr(p.err, "connection(s) lost") != NULL);
}

/* A server started with --requirepass: -a TOKEN (both client kinds:
 * threaded and the loop driver), $KVMUX_AUTH, none, a wrong one. */
static void test_auth(void)
{
    test_server s2;
    const char *const extra[] = {"--requirepass", "bench-token-1", NULL};
    REQUIRE(test_server_start(&s2, extra) == 0);
    bench_proc p;
    const char *ok[] = {"-a", "bench-token-1", "-n", "50", "--json", NULL};
    REQUIRE(bench_run_child(&p, s2.port, ok, 20000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    CHECK(field(p.out, "\"errors\":") == 0);
    const char *loop[] = {"--auth", "bench-token-1", "--mode", "async", "--driver", "loop",
                          "--depth", "4", "-n", "50", "--json", NULL};
    REQUIRE(bench_run_child(&p, s2.port, loop, 20000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    const char *none[] = {"-n", "50", NULL};
    REQUIRE(bench_run_child(&p, s2.port, none, 20000, 0, 0) == 0);
    CHECK_EQ(p.status, 1);
    CHECK(strstr(p.err, "authentication failed") != NULL);
    const char *bad[] = {"-a", "wrong", "-n", "50", NULL};
    REQUIRE(bench_run_child(&p, s2.port, bad, 20000, 0, 0) == 0);
    CHECK_EQ(p.status, 1);
    setenv("KVMUX_AUTH", "bench-token-1", 1);
    REQUIRE(bench_run_child(&p, s2.port, none, 20000, 0, 0) == 0);
    CHECK_EQ(p.status, 0);
    unsetenv("KVMUX_AUTH");
    const char *empty[] = {"-a", "", "-n", "50", NULL};
    REQUIRE(bench_run_child(&p, s2.port, empty, 20000, 0, 0) == 0);
    CHECK_EQ(p.status, 2);
    test_server_stop(&s2, 5000);
}

int main(void)
{
    unsetenv("KVMUX_AUTH"); /* the runs without -a must send none */
    signal(SIGPIPE, SIG_IGN);
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    g_port = s.port;

    test_json_sync_duration();
    test_text_serial_count();
    test_endpoints();
    test_misses_not_errors();
    test_stale_flag();
    test_incr_preload();
    test_async("loop");
    test_async("callback");
    test_exit_codes();
    test_auth();
    test_server_killed("sync");
    test_server_killed("loop");
    test_server_killed("callback");

    CHECK_EQ(test_server_stop(&s, 5000), 0);
    return test_report();
}
