/* faultproxy_test: kvmux-faultproxy between the real client and a real
 * kvmuxd on loopback. pass: calls work; delay 300: a PING takes >= 600 ms
 * (300 each way) and still succeeds; stall: a GET with a 500 ms timeout
 * ends KVMUX_ETIMEDOUT and, after pass, the same connection works;
 * blackhole: a call times out; cut: a call in flight ends at once with a
 * connection error (not a timeout), and a new connection works. Each
 * command's acknowledgement line is awaited before the next step. */
#include <string.h>

#include "fpx.h"
#include "kvmux.h"
#include "testutil.h"

static fpx proxy;

/* Send a command and check its reply starts with expect. */
static void proxy_cmd(const char *cmd, const char *expect) {
    char line[256];
    REQUIRE(fpx_cmd(&proxy, cmd, line, sizeof line) == 0);
    if (strncmp(line, expect, strlen(expect)) != 0) fprintf(stderr, "proxy: %s -> %s", cmd, line);
    CHECK(strncmp(line, expect, strlen(expect)) == 0);
}

static kvmux_client *connect_via(uint16_t port) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 2000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    return c;
}

int main(void) {
    test_server srv;
    REQUIRE(test_server_start(&srv, NULL) == 0);
    REQUIRE(fpx_start(&proxy, KVMUX_FAULTPROXY_PATH, srv.port) == 0);
    uint16_t pp = proxy.port;
    kvmux_client *c = connect_via(pp);
    CHECK_EQ(kvmux_set(c, "k", 1, "v1", 2, 0, NULL, 2000), 0);

    proxy_cmd("delay 300", "ok delay 300");
    int64_t t0 = test_now_ms();
    CHECK_EQ(kvmux_ping(c, 5000), 0);
    int64_t dt = test_now_ms() - t0;
    printf("faultproxy_test: delay 300: PING took %lld ms\n", (long long)dt);
    CHECK(dt >= 590 && dt < 3000);
    proxy_cmd("pass", "ok pass");
    t0 = test_now_ms();
    CHECK_EQ(kvmux_ping(c, 5000), 0);
    CHECK(test_now_ms() - t0 < 300);

    proxy_cmd("stall", "ok stall");
    kvmux_value *v = NULL;
    t0 = test_now_ms();
    CHECK_EQ(kvmux_get(c, "k", 1, &v, 500), KVMUX_ETIMEDOUT);
    dt = test_now_ms() - t0;
    printf("faultproxy_test: stall: GET timed out after %lld ms (timeout 500)\n", (long long)dt);
    CHECK(dt >= 450 && dt < 3000);
    proxy_cmd("pass", "ok pass");
    CHECK_EQ(kvmux_get(c, "k", 1, &v, 3000), 0);
    CHECK(v && v->len == 2 && memcmp(v->data, "v1", 2) == 0);
    kvmux_value_free(v);
    v = NULL;

    proxy_cmd("blackhole", "ok blackhole");
    CHECK_EQ(kvmux_ping(c, 500), KVMUX_ETIMEDOUT);

    /* cut: the next call on the reset connection ends at once with a
     * connection error, not at its timeout. */
    proxy_cmd("pass", "ok pass");
    proxy_cmd("cut", "ok cut 1");
    t0 = test_now_ms();
    int rc = kvmux_get(c, "k", 1, &v, 5000);
    dt = test_now_ms() - t0;
    printf("faultproxy_test: cut: call ended with %s after %lld ms\n", kvmux_strerror(rc),
           (long long)dt);
    CHECK(rc == KVMUX_ECLOSED || rc == KVMUX_EIO);
    CHECK(dt < 2000);
    kvmux_value_free(v);
    kvmux_close(c);

    c = connect_via(pp);
    CHECK_EQ(kvmux_get(c, "k", 1, &v, 3000), 0);
    kvmux_value_free(v);
    proxy_cmd("stats", "ok conns=1 accepted=2");
    kvmux_close(c);

    CHECK_EQ(fpx_stop(&proxy), 0); /* end of input: the proxy exits 0 */
    CHECK_EQ(test_server_stop(&srv, 5000), 0);
    return test_report();
}
