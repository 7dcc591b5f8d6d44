/* kvmuxd --metrics-addr: GET /metrics over a real socket.
 *   - 200 with the Prometheus text content type; every STATS line of the
 *     server has its metric (kvmux_NAME, counters with _total) with HELP
 *     and TYPE; request counters match the requests made;
 *   - the per-operation latency histogram counts exactly the GETs and
 *     SETs made, its buckets are cumulative and end in +Inf = _count;
 *   - `promtool check metrics` (Debian package prometheus) accepts the
 *     body: the test fails if promtool is missing;
 *   - 404 for another path, 405 for POST, 431 for a request head over
 *     4 KiB, and a client that sends nothing does not block a scrape;
 *   - a wrong --metrics-addr is refused at start (exit 2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvmux.h"
#include "ops_util.h"
#include "testutil.h"

static char body[1 << 20];

static long metric(const char *text, const char *name) {
    char want[256];
    snprintf(want, sizeof want, "\n%s ", name);
    const char *p = strstr(text, want);
    return p ? strtol(p + strlen(want), NULL, 10) : -1;
}

static void check_promtool(const char *text, const char *dir) {
    int have = system("command -v promtool >/dev/null 2>&1") == 0;
    if (!have) fprintf(stderr, "promtool not found: install the Debian package 'prometheus'\n");
    REQUIRE(have);
    char path[128], cmd[256];
    snprintf(path, sizeof path, "%s/metrics.txt", dir);
    REQUIRE(ops_write_file(path, text) == 0);
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void) {
    const char *dir = ops_tmpdir();
    REQUIRE(dir);
    test_server s;
    const char *args[] = {"--metrics-addr", "127.0.0.1:0", "--threads", "2", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    ops_kill_at_exit(s.pid);
    long mport = ops_stdout_number(s.stdout_fd, "metrics on port ");
    REQUIRE(mport > 0 && mport < 65536);

    kvmux_options o;
    kvmux_options_init(&o);
    o.request_timeout_ms = 3000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", s.port, &o) == 0);
    const int nset = 25, nget = 40;
    for (int i = 0; i < nset; i++) {
        uint64_t ver;
        CHECK_EQ(kvmux_set(c, "k", 1, "value", 5, 0, &ver, 3000), 0);
    }
    for (int i = 0; i < nget; i++) {
        kvmux_value *v = NULL;
        CHECK_EQ(kvmux_get(c, "k", 1, &v, 3000), 0);
        kvmux_value_free(v);
    }
    kvmux_value *st = NULL;
    REQUIRE(kvmux_stats(c, NULL, &st, 3000) == 0);

    /* A silent HTTP client must not block the scrape (loop 0 is shared). */
    int idle = test_connect_raw((uint16_t)mport, 5000);
    CHECK(idle >= 0);

    const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: kvmux-test\r\n\r\n";
    long n = ops_http((uint16_t)mport, get, sizeof get - 1, body, sizeof body);
    REQUIRE(n > 0);
    CHECK(strncmp(body, "HTTP/1.0 200 OK\r\n", 17) == 0);
    CHECK(strstr(body, "Content-Type: text/plain; version=0.0.4") != NULL);
    char *text = strstr(body, "\r\n\r\n");
    REQUIRE(text);
    text += 3; /* keep one '\n' before the first line for metric() */
    char *clen = strstr(body, "Content-Length: ");
    CHECK(clen && strtol(clen + 16, NULL, 10) == (long)strlen(text + 1));

    /* Every STATS line has its metric, with HELP and TYPE. */
    int lines = 0, found = 0;
    char *stext = strdup((const char *)st->data);
    for (char *line = strtok(stext, "\n"); line; line = strtok(NULL, "\n")) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = 0;
        lines++;
        char a[128], b[128], cc[128], d[128];
        size_t nl = strlen(line);
        snprintf(a, sizeof a, "\n# TYPE kvmux_%s ", line);
        snprintf(b, sizeof b, "\n# TYPE kvmux_%s_total counter", line);
        snprintf(cc, sizeof cc, "\n# TYPE kvmux_%s_info gauge", line);
        snprintf(d, sizeof d, "\n# TYPE kvmux_%.*s_seconds ", (int)(nl > 3 ? nl - 3 : 0), line);
        int ok = strstr(text, a) || strstr(text, b) || strstr(text, cc) ||
                 (nl > 3 && !strcmp(line + nl - 3, "_ms") && strstr(text, d));
        if (!ok) fprintf(stderr, "no metric for STATS %s\n", line);
        found += ok;
    }
    free(stext);
    CHECK(lines > 50);
    CHECK_EQ(found, lines);
    CHECK_EQ(ops_count(text, "# HELP "), ops_count(text, "# TYPE "));
    CHECK_EQ(metric(text, "kvmux_requests_get_total"), nget);
    CHECK_EQ(metric(text, "kvmux_requests_set_total"), nset);
    CHECK_EQ(metric(text, "kvmux_connections_current"), 1);

    /* Histograms: counts match, buckets cumulative, +Inf = count. */
    CHECK_EQ(metric(text, "kvmux_request_duration_seconds_count{op=\"get\"}"), nget);
    CHECK_EQ(metric(text, "kvmux_request_duration_seconds_count{op=\"set\"}"), nset);
    CHECK_EQ(metric(text, "kvmux_request_duration_seconds_bucket{op=\"get\",le=\"+Inf\"}"),
             nget);
    CHECK_EQ(metric(text, "kvmux_request_duration_seconds_count{op=\"del\"}"), 0);
    long prev = -1;
    int buckets = 0, monotone = 1;
    for (const char *p = text; (p = strstr(p, "\nkvmux_request_duration_seconds_bucket{op=\"get\"")); p++) {
        const char *sp = strchr(p, '}');
        long v = strtol(sp + 2, NULL, 10);
        if (v < prev) monotone = 0;
        prev = v;
        buckets++;
    }
    CHECK_EQ(buckets, 17);
    CHECK(monotone);
    check_promtool(text + 1, dir);

    /* Refusals. */
    const char r404[] = "GET /other HTTP/1.0\r\n\r\n";
    CHECK(ops_http((uint16_t)mport, r404, sizeof r404 - 1, body, sizeof body) > 0);
    CHECK(strncmp(body, "HTTP/1.0 404 ", 13) == 0);
    const char r405[] = "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
    CHECK(ops_http((uint16_t)mport, r405, sizeof r405 - 1, body, sizeof body) > 0);
    CHECK(strncmp(body, "HTTP/1.0 405 ", 13) == 0);
    CHECK(strstr(body, "Allow: GET, HEAD") != NULL);
    /* Exactly the 4 KiB limit, no end of head: the server reads it all
     * (so its close sends FIN, not RST, and our read sees the answer). */
    static char big[4096];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET /metrics HTTP/1.0\r\nX: ", 26);
    CHECK(ops_http((uint16_t)mport, big, sizeof big, body, sizeof body) > 0);
    CHECK(strncmp(body, "HTTP/1.0 431 ", 13) == 0);
    const char head[] = "HEAD /metrics HTTP/1.0\r\n\r\n";
    CHECK(ops_http((uint16_t)mport, head, sizeof head - 1, body, sizeof body) > 0);
    CHECK(strncmp(body, "HTTP/1.0 200 ", 13) == 0);
    CHECK(strstr(body, "# TYPE") == NULL);

    if (idle >= 0) close(idle);
    kvmux_value_free(st);
    kvmux_close(c);
    CHECK_EQ(test_server_stop(&s, 10000), 0);

    ops_run r;
    const char *bad[] = {"--metrics-addr", "localhost:x", "--check-config", NULL};
    ops_run_kvmuxd(&r, bad);
    CHECK_EQ(r.status, 2);
    CHECK(strstr(r.err, "--metrics-addr") != NULL);
    return test_report();
}
