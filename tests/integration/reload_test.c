/* SIGHUP on a running kvmuxd (real process, --config file, --log-file):
 *   - connections open before the reload stay up and keep working
 *     (a v2 client and a v1 client), across several reloads;
 *   - the token changed in the file: new connections need the new token,
 *     the old one is refused (KVMUX_EAUTH);
 *   - the log level changed from info to debug: debug lines appear only
 *     after the reload;
 *   - an option that cannot change (max-connections) is named in an
 *     event=reload.kept line and keeps its value (STATS);
 *   - the log file moved away (logrotate) + SIGHUP: a new file is created
 *     at the path and gets the following lines; the old one keeps its own;
 *   - a file that no longer parses: event=reload.failed, nothing changes;
 *   - SIGTERM afterwards still exits 0 (SIGHUP used to kill kvmuxd: 129). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "ops_util.h"
#include "testutil.h"

static kvmux_client *connect_v(uint16_t port, const char *tok, int maxver, int *rc) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 3000;
    o.request_timeout_ms = 3000;
    o.auth_token = tok;
    if (maxver) o.max_protocol_version = (uint8_t)maxver;
    kvmux_client *c = NULL;
    *rc = kvmux_connect(&c, "127.0.0.1", port, &o);
    return *rc == 0 ? c : NULL;
}

static int roundtrip(kvmux_client *c, const char *key) {
    uint64_t ver = 0;
    if (kvmux_set(c, key, strlen(key), "v", 1, 0, &ver, 3000) != 0) return -1;
    kvmux_value *v = NULL;
    if (kvmux_get(c, key, strlen(key), &v, 3000) != 0) return -1;
    int ok = v->len == 1 && v->data[0] == 'v';
    kvmux_value_free(v);
    return ok ? 0 : -1;
}

static char cfg[128], logp[128], log1[128];
static char buf[1 << 20];

static void write_cfg(const char *tok, const char *level, int maxconn) {
    char text[512];
    snprintf(text, sizeof text,
             "# reload test\nrequirepass %s\nlog-level %s\nmax-connections %d\n", tok, level,
             maxconn);
    REQUIRE(ops_write_file(cfg, text) == 0);
}

static long maxconn(kvmux_client *c) {
    kvmux_value *v = NULL;
    if (kvmux_stats(c, "connections_max", &v, 3000) != 0) return -1;
    long r = (long)test_stat_value(v->data, v->len, "connections_max");
    kvmux_value_free(v);
    return r;
}

int main(void) {
    const char *dir = ops_tmpdir();
    REQUIRE(dir != NULL);
    snprintf(cfg, sizeof cfg, "%s/kvmuxd.conf", dir);
    snprintf(logp, sizeof logp, "%s/kvmuxd.log", dir);
    snprintf(log1, sizeof log1, "%s/kvmuxd.log.1", dir);
    write_cfg("oldpass", "info", 100);

    test_server s;
    const char *args[] = {"--config", cfg, "--log-file", logp, "--threads", "2", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    ops_kill_at_exit(s.pid);
    int rc;
    kvmux_client *a = connect_v(s.port, "oldpass", 0, &rc);
    kvmux_client *b = connect_v(s.port, "oldpass", 1, &rc); /* v1, other loop */
    REQUIRE(a && b);
    CHECK_EQ(roundtrip(a, "a1"), 0);
    CHECK_EQ(roundtrip(b, "b1"), 0);
    REQUIRE(ops_wait_file_count(logp, "event=server.start", 1, 5000));
    ops_read_file(logp, buf, sizeof buf);
    CHECK_EQ(ops_count(buf, "level=debug"), 0);
    CHECK(strstr(buf, "ts=") == buf); /* logfmt from the first line */

    /* 1. New token and level, and a static option changed. */
    write_cfg("newpass", "debug", 200);
    CHECK_EQ(kill(s.pid, SIGHUP), 0);
    REQUIRE(ops_wait_file_count(logp, "event=reload.done", 1, 5000));
    ops_read_file(logp, buf, sizeof buf);
    CHECK(strstr(buf, "event=reload.kept option=max-connections") != NULL);
    CHECK(strstr(buf, "event=reload.changed option=requirepass") != NULL);
    CHECK(strstr(buf, "event=reload.changed option=log-level") != NULL);
    CHECK(strstr(buf, "newpass") == NULL && strstr(buf, "oldpass") == NULL); /* no secrets */
    CHECK_EQ(roundtrip(a, "a2"), 0); /* old connections stay up */
    CHECK_EQ(roundtrip(b, "b2"), 0);
    CHECK_EQ(maxconn(a), 100);       /* kept */
    kvmux_client *n1 = connect_v(s.port, "newpass", 0, &rc);
    CHECK(n1 != NULL);
    if (n1) CHECK_EQ(roundtrip(n1, "n1"), 0);
    kvmux_client *o1 = connect_v(s.port, "oldpass", 0, &rc);
    CHECK(o1 == NULL);
    CHECK_EQ(rc, KVMUX_EAUTH);
    /* Several connects, so both loops have taken the new token. */
    for (int i = 0; i < 4; i++) {
        kvmux_client *x = connect_v(s.port, "newpass", 0, &rc);
        CHECK_EQ(rc, 0);
        if (x) kvmux_close(x);
        x = connect_v(s.port, "oldpass", 0, &rc);
        CHECK_EQ(rc, KVMUX_EAUTH);
        if (x) kvmux_close(x);
    }
    /* Debug lines now (a connection's "accepted" line is debug). */
    CHECK(ops_wait_file_count(logp, "level=debug", 1, 5000));

    /* 2. Rotation: move the file away, SIGHUP, a new file appears. */
    REQUIRE(rename(logp, log1) == 0);
    CHECK_EQ(kill(s.pid, SIGHUP), 0);
    CHECK(ops_wait_file_count(logp, "event=reload.done", 1, 5000));
    kvmux_client *n2 = connect_v(s.port, "newpass", 0, &rc);
    CHECK(n2 != NULL);
    if (n2) kvmux_close(n2);
    CHECK(ops_wait_file_count(logp, "event=conn", 1, 5000)); /* new lines go to the new file */
    ops_read_file(log1, buf, sizeof buf);
    CHECK_EQ(ops_count(buf, "event=reload.done"), 1); /* the first reload only */

    /* 3. A broken file: nothing changes. */
    REQUIRE(ops_write_file(cfg, "requirepass x\nmax-key nope\n") == 0);
    CHECK_EQ(kill(s.pid, SIGHUP), 0);
    CHECK(ops_wait_file_count(logp, "event=reload.failed", 1, 5000));
    ops_read_file(logp, buf, sizeof buf);
    CHECK(strstr(buf, ":2: invalid value for --max-key") != NULL);
    kvmux_client *n3 = connect_v(s.port, "newpass", 0, &rc);
    CHECK(n3 != NULL);
    if (n3) kvmux_close(n3);
    CHECK_EQ(roundtrip(a, "a3"), 0);
    CHECK_EQ(roundtrip(b, "b3"), 0);

    /* 4. A burst of SIGHUPs while requests run. */
    write_cfg("newpass", "info", 100);
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(kill(s.pid, SIGHUP), 0);
        CHECK_EQ(roundtrip(a, "burst"), 0);
    }
    CHECK(ops_wait_file_count(logp, "event=reload.done", 2, 5000));

    kvmux_close(a);
    kvmux_close(b);
    if (n1) kvmux_close(n1);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    return test_report();
}
