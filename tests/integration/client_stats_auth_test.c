/* libkvmux and kvmux-cli against a real kvmuxd (ephemeral port) for the
 * STATS operation and HELLO authentication:
 *   - kvmux_stats returns "name:value" lines, requests_get moves after
 *     GETs, a prefix filters the lines, NULL/"" mean all, a prefix that
 *     matches nothing gives an empty text;
 *   - kvmux_options.auth_token: the right token connects, a wrong or
 *     missing one fails with KVMUX_EAUTH and the server's message in
 *     kvmux_connection_error(NULL, ...), an over-long or empty one is
 *     KVMUX_EINVAL before any I/O; a reconnect=1 client connects too;
 *   - kvmux-cli: "stats [PREFIX]" prints the text, --auth / -a / KVMUX_AUTH
 *     send the token, a refused or missing token exits 4 with a message.
 * The CLI runs as a child (KVMUX_CLI_PATH) with stdout/stderr in temporary
 * files and a bounded wait. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvmux.h"
#include "testutil.h"

/* The value of "name:" in text (a whole line match), or -1 if absent. */
static long long stat_value(const char *text, const char *name) {
    size_t nl = strlen(name);
    const char *p = text;
    while (p && *p) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':') return strtoll(p + nl + 1, NULL, 10);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

/* 1 if every line of text starts with prefix and ends with '\n'. */
static int all_lines_start_with(const char *text, const char *prefix) {
    const char *p = text;
    while (*p) {
        if (strncmp(p, prefix, strlen(prefix)) != 0) return 0;
        const char *e = strchr(p, '\n');
        if (!e) return 0;
        p = e + 1;
    }
    return 1;
}

static kvmux_client *connect_tok(uint16_t port, const char *tok, int *rc_out) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 3000;
    o.request_timeout_ms = 3000;
    o.auth_token = tok;
    kvmux_client *c = NULL;
    *rc_out = kvmux_connect(&c, "127.0.0.1", port, &o);
    return *rc_out == 0 ? c : NULL;
}

static void test_stats(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    int rc;
    kvmux_client *c = connect_tok(s.port, NULL, &rc);
    REQUIRE(c != NULL);

    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_stats(c, NULL, &v, 3000), 0);
    REQUIRE(v != NULL);
    CHECK_EQ(v->version, 0);
    CHECK(v->len > 0 && v->data[v->len] == 0 && v->data[v->len - 1] == '\n');
    long long g0 = stat_value((const char *)v->data, "requests_get");
    CHECK(g0 >= 0);
    kvmux_value_free(v);

    for (int i = 0; i < 3; i++) {
        kvmux_value *gv = NULL;
        CHECK_EQ(kvmux_get(c, "nokey", 5, &gv, 3000), KVMUX_ENOTFOUND);
    }
    v = NULL;
    CHECK_EQ(kvmux_stats(c, "requests_", &v, 3000), 0);
    REQUIRE(v != NULL);
    CHECK_EQ(stat_value((const char *)v->data, "requests_get"), g0 + 3);
    CHECK(all_lines_start_with((const char *)v->data, "requests_"));
    kvmux_value_free(v);

    v = NULL; /* "" = all, same as NULL */
    CHECK_EQ(kvmux_stats(c, "", &v, 3000), 0);
    REQUIRE(v != NULL);
    CHECK(!all_lines_start_with((const char *)v->data, "requests_"));
    kvmux_value_free(v);

    v = NULL;
    CHECK_EQ(kvmux_stats(c, "no_such_counter_zz", &v, 3000), 0);
    REQUIRE(v != NULL);
    CHECK_EQ(v->len, 0);
    kvmux_value_free(v);

    CHECK_EQ(kvmux_stats(c, NULL, NULL, 3000), KVMUX_EINVAL);
    /* the connection is still fine */
    CHECK_EQ(kvmux_ping(c, 3000), 0);
    kvmux_close(c);
    CHECK_EQ(test_server_stop(&s, 5000), 0);
}

static void test_auth(void) {
    test_server s;
    const char *args[] = {"--requirepass", "s3cret", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    int rc;
    char msg[256];

    kvmux_client *c = connect_tok(s.port, "s3cret", &rc);
    CHECK_EQ(rc, 0);
    if (c) {
        CHECK_EQ(kvmux_set(c, "k", 1, "v", 1, 0, NULL, 3000), 0);
        kvmux_value *v = NULL;
        CHECK_EQ(kvmux_stats(c, "requests_set", &v, 3000), 0);
        if (v) CHECK(stat_value((const char *)v->data, "requests_set") >= 1);
        kvmux_value_free(v);
        kvmux_close(c);
    }

    const char *bad[] = {"wrong", NULL, "s3cres", "s3cret-longer"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = connect_tok(s.port, bad[i], &rc);
        CHECK(c == NULL);
        CHECK_EQ(rc, KVMUX_EAUTH);
        CHECK(kvmux_is_fatal(rc));
        msg[0] = 0;
        CHECK_EQ(kvmux_connection_error(NULL, msg, sizeof msg), KVMUX_EAUTH);
        CHECK(strstr(msg, "auth") != NULL);
        if (c) kvmux_close(c);
    }
    CHECK(strcmp(kvmux_strerror(KVMUX_EAUTH), "authentication failed") == 0);

    char longtok[66];
    memset(longtok, 'x', 65);
    longtok[65] = 0;
    c = connect_tok(s.port, longtok, &rc);
    CHECK_EQ(rc, KVMUX_EINVAL);
    c = connect_tok(s.port, "", &rc);
    CHECK_EQ(rc, KVMUX_EINVAL);
    longtok[64] = 0; /* exactly 64 bytes: valid, but not the token */
    c = connect_tok(s.port, longtok, &rc);
    CHECK_EQ(rc, KVMUX_EAUTH);

    /* with reconnect on, the token is kept for every later HELLO */
    kvmux_options o;
    kvmux_options_init(&o);
    o.auth_token = "s3cret";
    o.reconnect = 1; /* the reconnect path keeps the copied token */
    c = NULL;
    CHECK_EQ(kvmux_connect(&c, "127.0.0.1", s.port, &o), 0);
    if (c) {
        CHECK_EQ(kvmux_ping(c, 3000), 0);
        kvmux_close(c);
    }
    CHECK_EQ(test_server_stop(&s, 5000), 0);
}

/* ---- kvmux-cli as a child ---- */

typedef struct cli_out {
    int status;     /* exit code, or -1 */
    char out[8192];
    char err[4096];
} cli_out;

/* Run KVMUX_CLI_PATH -p port args... with KVMUX_AUTH = env_auth (NULL:
 * unset); wait at most 10 s. */
static void run_cli(cli_out *r, uint16_t port, const char *env_auth, const char *const *args) {
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%u", (unsigned)port);
    const char *argv[32];
    size_t n = 0;
    argv[n++] = KVMUX_CLI_PATH;
    argv[n++] = "-h";
    argv[n++] = "127.0.0.1";
    argv[n++] = "-p";
    argv[n++] = portbuf;
    argv[n++] = "-t";
    argv[n++] = "3000";
    for (size_t i = 0; args[i] && n < 31; i++) argv[n++] = args[i];
    argv[n] = NULL;
    r->status = test_run(argv, "KVMUX_AUTH", env_auth, r->out, sizeof r->out, r->err,
                         sizeof r->err, 10000);
}

static void test_cli(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    cli_out r;
    const char *a1[] = {"stats", NULL};
    run_cli(&r, s.port, NULL, a1);
    CHECK_EQ(r.status, 0);
    CHECK(stat_value(r.out, "requests_get") >= 0);
    const char *a2[] = {"stats", "requests_", NULL};
    run_cli(&r, s.port, NULL, a2);
    CHECK_EQ(r.status, 0);
    CHECK(r.out[0] && all_lines_start_with(r.out, "requests_"));
    CHECK(stat_value(r.out, "requests_stats") >= 1);
    const char *a3[] = {"--help", NULL};
    run_cli(&r, s.port, NULL, a3);
    CHECK_EQ(r.status, 0);
    CHECK(strstr(r.out, "--auth") != NULL && strstr(r.out, "stats [PREFIX]") != NULL);
    CHECK_EQ(test_server_stop(&s, 5000), 0);

    const char *args[] = {"--requirepass", "s3cret", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    const char *ok1[] = {"--auth", "s3cret", "set", "ka", "va", NULL};
    run_cli(&r, s.port, NULL, ok1);
    CHECK_EQ(r.status, 0);
    CHECK(strncmp(r.out, "OK version=", 11) == 0);
    const char *ok2[] = {"-a", "s3cret", "get", "ka", NULL};
    run_cli(&r, s.port, NULL, ok2);
    CHECK_EQ(r.status, 0);
    CHECK(strcmp(r.out, "va\n") == 0);
    const char *ok3[] = {"get", "ka", NULL};
    run_cli(&r, s.port, "s3cret", ok3); /* KVMUX_AUTH */
    CHECK_EQ(r.status, 0);
    CHECK(strcmp(r.out, "va\n") == 0);
    const char *bad1[] = {"-a", "nope", "get", "ka", NULL};
    run_cli(&r, s.port, NULL, bad1);
    CHECK_EQ(r.status, 4);
    CHECK(strstr(r.err, "authentication failed") != NULL);
    CHECK(r.out[0] == 0);
    run_cli(&r, s.port, NULL, ok3); /* no token at all */
    CHECK_EQ(r.status, 4);
    CHECK(strstr(r.err, "authentication failed") != NULL && strstr(r.err, "--auth") != NULL);
    run_cli(&r, s.port, "nope", ok2); /* -a overrides KVMUX_AUTH */
    CHECK_EQ(r.status, 0);
    const char *empty[] = {"-a", "", "ping", NULL};
    run_cli(&r, s.port, NULL, empty);
    CHECK_EQ(r.status, 2);
    CHECK_EQ(test_server_stop(&s, 5000), 0);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    test_stats();
    test_auth();
    test_cli();
    return test_report();
}
