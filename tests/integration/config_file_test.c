/* kvmuxd --config FILE and --check-config, over the real binary:
 *   - a file with comments, blank lines, indentation, a value with blanks
 *     and flags (yes/no) is valid (exit 0) and is applied: the token from
 *     the file is required, max-connections from the file shows in STATS;
 *   - the command line overrides the file whichever comes first;
 *   - an unknown name, a malformed value, a value out of range, a missing
 *     value, a command-line-only option in the file, and a missing file
 *     exit 2 with "FILE:LINE:" (or "FILE:") and the reason on stderr;
 *   - dist/kvmuxd.conf names every option of kvmuxd --help, is valid as
 *     shipped, and still valid with every option line uncommented (so
 *     each documented default parses). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "ops_util.h"
#include "testutil.h"

static char dir[64];

static void path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", dir, name);
}

static void expect_bad(const char *text, const char *needle) {
    char p[128];
    path(p, sizeof p, "bad.conf");
    REQUIRE(ops_write_file(p, text) == 0);
    ops_run r;
    const char *args[] = {"--config", p, "--check-config", NULL};
    ops_run_kvmuxd(&r, args);
    CHECK_EQ(r.status, 2);
    char want[256];
    snprintf(want, sizeof want, "%s:%s", p, needle);
    if (!strstr(r.err, want)) fprintf(stderr, "want '%s' in stderr: %s\n", want, r.err);
    CHECK(strstr(r.err, want) != NULL);
}

static long stat_of(uint16_t port, const char *tok, const char *name) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 3000;
    o.request_timeout_ms = 3000;
    o.auth_token = tok;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, "127.0.0.1", port, &o) != 0) return -2;
    kvmux_value *v = NULL;
    long r = -1;
    if (kvmux_stats(c, name, &v, 3000) == 0) {
        r = (long)test_stat_value(v->data, v->len, name);
        kvmux_value_free(v);
    }
    kvmux_close(c);
    return r;
}

static void test_valid_and_applied(void) {
    char p[128];
    path(p, sizeof p, "good.conf");
    REQUIRE(ops_write_file(p,
        "# kvmuxd test configuration\n"
        "\n"
        "   # indented comment\n"
        "max-connections 50\n"
        "\trequirepass   s3cret with spaces#not-a-comment   \n"
        "aof-repair no\n"
        "log-level warn\n"
        "max-value 1M\n") == 0);
    ops_run r;
    const char *chk[] = {"--config", p, "--check-config", NULL};
    ops_run_kvmuxd(&r, chk);
    CHECK_EQ(r.status, 0);
    CHECK(strstr(r.out, "is valid") != NULL);

    test_server s;
    const char *a1[] = {"--config", p, NULL};
    REQUIRE(test_server_start(&s, a1) == 0);
    CHECK_EQ(stat_of(s.port, "s3cret with spaces#not-a-comment", "connections_max"), 50);
    CHECK_EQ(stat_of(s.port, NULL, "connections_max"), -2); /* token required */
    CHECK_EQ(test_server_stop(&s, 5000), 0);

    /* The command line wins, before or after --config. */
    const char *a2[] = {"--max-connections", "70", "--config", p, NULL};
    REQUIRE(test_server_start(&s, a2) == 0);
    CHECK_EQ(stat_of(s.port, "s3cret with spaces#not-a-comment", "connections_max"), 70);
    CHECK_EQ(test_server_stop(&s, 5000), 0);
    const char *a3[] = {"--config", p, "--max-connections", "71", "--requirepass", "other",
                        NULL};
    REQUIRE(test_server_start(&s, a3) == 0);
    CHECK_EQ(stat_of(s.port, "other", "connections_max"), 71);
    CHECK_EQ(test_server_stop(&s, 5000), 0);

    /* A file value out of range, fixed on the command line: valid. */
    char q[128];
    path(q, sizeof q, "range.conf");
    REQUIRE(ops_write_file(q, "max-key 999999\n") == 0);
    const char *a4[] = {"--check-config", "--config", q, "--max-key", "100", NULL};
    ops_run_kvmuxd(&r, a4);
    CHECK_EQ(r.status, 0);
}

static void test_errors(void) {
    expect_bad("port 0\nbogus 1\n", "2: unknown option 'bogus'");
    expect_bad("# c\n\nmax-key 12x\n", "3: invalid value for --max-key: '12x'");
    expect_bad("max-key 999999\n", "1: --max-key 999999 is out of range (1..65535)");
    expect_bad("threads\n", "1: 'threads' needs a value");
    expect_bad("config /etc/x\n", "1: 'config' is a command-line option only");
    expect_bad("aof-repair maybe\n", "1: invalid value for --aof-repair: 'maybe'");
    expect_bad("--port 1\n", "1: unknown option '--port'");
    /* Cross-limits name no single line: the message, without a line. */
    char p[128];
    path(p, sizeof p, "cross.conf");
    REQUIRE(ops_write_file(p, "max-frame 64K\n") == 0);
    ops_run r;
    const char *a[] = {"--config", p, "--check-config", NULL};
    ops_run_kvmuxd(&r, a);
    CHECK_EQ(r.status, 2);
    CHECK(strstr(r.err, "max-frame") != NULL);
    /* A missing file. */
    const char *m[] = {"--config", "/nonexistent/kvmuxd.conf", "--check-config", NULL};
    ops_run_kvmuxd(&r, m);
    CHECK_EQ(r.status, 2);
    CHECK(strstr(r.err, "/nonexistent/kvmuxd.conf: No such file") != NULL);
    /* A bad option on the command line is still exit 2. */
    const char *b[] = {"--check-config", "--nope", NULL};
    ops_run_kvmuxd(&r, b);
    CHECK_EQ(r.status, 2);
}

/* Option names ("--bind") from kvmuxd --help. */
static int help_options(char names[][48], int max) {
    ops_run r;
    const char *h[] = {"--help", NULL};
    ops_run_kvmuxd(&r, h);
    CHECK_EQ(r.status, 0);
    int n = 0;
    for (char *line = strtok(r.out, "\n"); line && n < max; line = strtok(NULL, "\n")) {
        if (strncmp(line, "  --", 4) != 0) continue;
        size_t len = strcspn(line + 2, " ");
        if (len >= 48) continue;
        memcpy(names[n], line + 2, len);
        names[n][len] = 0;
        n++;
    }
    return n;
}

static void test_example(void) {
    static char text[65536];
    REQUIRE(ops_read_file(KVMUX_SOURCE_DIR "/dist/kvmuxd.conf", text, sizeof text) > 0);
    static char names[128][48];
    int n = help_options(names, 128);
    CHECK(n >= 40);
    for (int i = 0; i < n; i++) {
        const char *nm = names[i] + 2;
        if (!strcmp(nm, "help") || !strcmp(nm, "version") || !strcmp(nm, "config") ||
            !strcmp(nm, "check-config"))
            continue;
        char want[64];
        snprintf(want, sizeof want, "\n# %s ", nm);
        if (!strstr(text, want)) fprintf(stderr, "dist/kvmuxd.conf lacks '# %s'\n", nm);
        CHECK(strstr(text, want) != NULL);
    }
    ops_run r;
    const char *a[] = {"--config", KVMUX_SOURCE_DIR "/dist/kvmuxd.conf", "--check-config", NULL};
    ops_run_kvmuxd(&r, a);
    CHECK_EQ(r.status, 0);

    /* Uncomment every "# <option> <value>" line (but requirepass-file,
     * exclusive with requirepass): every documented value must parse. */
    static char out[65536];
    size_t o = 0;
    int uncommented = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        const char *use = line;
        if (strncmp(line, "# ", 2) == 0) {
            for (int i = 0; i < n; i++) {
                size_t nl = strlen(names[i] + 2);
                if (strncmp(line + 2, names[i] + 2, nl) == 0 && line[2 + nl] == ' ' &&
                    strcmp(names[i], "--requirepass-file") != 0) {
                    use = line + 2;
                    uncommented++;
                    break;
                }
            }
        }
        o += (size_t)snprintf(out + o, sizeof out - o, "%s\n", use);
    }
    CHECK(uncommented >= n - 5);
    char p[128];
    path(p, sizeof p, "uncommented.conf");
    REQUIRE(ops_write_file(p, out) == 0);
    const char *b[] = {"--config", p, "--check-config", NULL};
    ops_run_kvmuxd(&r, b);
    if (r.status != 0) fprintf(stderr, "uncommented example: %s\n", r.err);
    CHECK_EQ(r.status, 0);
}

int main(void) {
    const char *d = ops_tmpdir();
    REQUIRE(d != NULL);
    snprintf(dir, sizeof dir, "%s", d);
    test_valid_and_applied();
    test_errors();
    test_example();
    return test_report();
}
