/* The append-only log's EXPIRY record end to end, with a real kvmuxd
 * --aof --fsync always and the client library:
 *   - SET of a 1 MiB value grows the log by about 1 MiB; EXPIRE and
 *     PERSIST of it grow it by a few dozen bytes each (the record has no
 *     value: before format 3 each appended the whole value again);
 *   - after kill -9 and a restart on the same log, the value is intact
 *     byte for byte, with the version and the TTL the last EXPIRE gave it;
 *     a PERSISTed key has no TTL; the log starts with the format-3 magic. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvmux.h"
#include "testutil.h"

static char dir[256];
static char logpath[300];

static uint64_t log_size(void) {
    struct stat sb;
    return stat(logpath, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static void start(test_server *s) {
    const char *args[] = {"--aof", logpath, "--fsync", "always", NULL};
    REQUIRE(test_server_start(s, args) == 0);
}

static kvmux_client *client(uint16_t port) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.request_timeout_ms = 20000;
    o.connect_timeout_ms = 10000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    return c;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/kvmux-aofexp-XXXXXX");
    REQUIRE(mkdtemp(dir));
    snprintf(logpath, sizeof logpath, "%s/kvmux.aof", dir);
    test_server srv;
    start(&srv);
    kvmux_client *c = client(srv.port);

    size_t big = 1u << 20;
    uint8_t *val = test_pattern(big, 11);
    uint64_t v = 0, s0 = log_size();
    CHECK_EQ(kvmux_set(c, "big", 3, val, big, 0, &v, -1), 0);
    uint64_t s1 = log_size(); /* --fsync always: on disk when acknowledged */
    CHECK(s1 - s0 >= big);
    uint64_t vexp = 0;
    CHECK_EQ(kvmux_expire(c, "big", 3, 3600000, &vexp, -1), 0);
    uint64_t s2 = log_size();
    CHECK(vexp > v);
    CHECK(s2 > s1 && s2 - s1 < 100);
    CHECK_EQ(kvmux_set(c, "p", 1, "x", 1, 3600000, NULL, -1), 0);
    uint64_t s3 = log_size();
    uint64_t vp = 0;
    CHECK_EQ(kvmux_persist(c, "p", 1, &vp, -1), 0);
    CHECK(log_size() - s3 < 100);
    fprintf(stderr, "SET 1 MiB: +%llu bytes; EXPIRE: +%llu bytes\n",
            (unsigned long long)(s1 - s0), (unsigned long long)(s2 - s1));
    kvmux_close(c);

    test_server_kill(&srv); /* kill -9 */
    start(&srv);
    c = client(srv.port);
    kvmux_value *got = NULL;
    CHECK_EQ(kvmux_get(c, "big", 3, &got, -1), 0);
    CHECK(got && got->len == big && memcmp(got->data, val, big) == 0);
    if (got) CHECK_EQ(got->version, vexp);
    kvmux_value_free(got);
    int64_t left = -1;
    CHECK_EQ(kvmux_ttl(c, "big", 3, &left, -1), 0);
    CHECK(left > 3500000 && left <= 3600000);
    CHECK_EQ(kvmux_ttl(c, "p", 1, &left, -1), 0);
    CHECK_EQ(left, -1); /* no expiry */
    uint64_t ver = 0;
    CHECK_EQ(kvmux_persist(c, "p", 1, &ver, -1), 0); /* nothing to drop: same version */
    CHECK_EQ(ver, vp);
    kvmux_close(c);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);

    FILE *f = fopen(logpath, "rb");
    char magic[8] = {0};
    CHECK(f && fread(magic, 1, 8, f) == 8 && memcmp(magic, "KVMXAOF3", 8) == 0);
    if (f) fclose(f);
    free(val);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_report();
}
