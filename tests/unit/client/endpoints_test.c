/* The endpoint-list parser of kvmux_options.endpoints and of NOT_LEADER
 * addresses (src/client/failover.c): accepted forms, every rejection, the
 * bounds (64 entries, 255-byte host, port 1..65535). Pure: no sockets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "testutil.h"

static int parse1(const char *s, char *host, uint16_t *port) {
    return kvmux__hostport_parse(s, strlen(s), host, port);
}

static void test_hostport(void) {
    char host[KVMUX__HOST_MAX + 1];
    uint16_t port = 0;
    CHECK_EQ(parse1("127.0.0.1:7878", host, &port), 0);
    CHECK(strcmp(host, "127.0.0.1") == 0);
    CHECK_EQ(port, 7878);
    CHECK_EQ(parse1("  db-1.example:1 \t", host, &port), 0);
    CHECK(strcmp(host, "db-1.example") == 0);
    CHECK_EQ(port, 1);
    CHECK_EQ(parse1("[::1]:65535", host, &port), 0);
    CHECK(strcmp(host, "::1") == 0);
    CHECK_EQ(port, 65535);
    CHECK_EQ(parse1("[fe80::1%eth0]:80", host, &port), 0);
    CHECK(strcmp(host, "fe80::1%eth0") == 0);
    /* A length, not a NUL, ends the input (NOT_LEADER values have none). */
    CHECK_EQ(kvmux__hostport_parse("h:12345678", 4, host, &port), 0);
    CHECK_EQ(port, 12);
    const char *bad[] = {"", " ", "host", "host:", ":80", "host:0", "host:65536",
                         "host:99999", "host:123456", "host:-1", "host:+1", "host:8a",
                         "::1:80", "[::1]", "[::1]:", "[::1]80", "[]:80", "[::1",
                         "a b:80", "a,b:80", "h:80 80", "h\x01:80", "h\x7f:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse1(bad[i], host, &port);
        if (rc != -1) fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
        CHECK_EQ(rc, -1);
    }
    /* Host length: 255 bytes is the limit. */
    char longh[300];
    memset(longh, 'a', 255);
    strcpy(longh + 255, ":1");
    CHECK_EQ(parse1(longh, host, &port), 0);
    CHECK_EQ(strlen(host), 255);
    memset(longh, 'a', 256);
    strcpy(longh + 256, ":1");
    CHECK_EQ(parse1(longh, host, &port), -1);
}

static void test_list(void) {
    kvmux__endpoint *eps = NULL;
    uint32_t n = 0;
    CHECK_EQ(kvmux__endpoints_parse("127.0.0.1:1, 127.0.0.1:2 ,[::1]:3", &eps, &n), 0);
    REQUIRE(eps);
    CHECK_EQ(n, 3);
    CHECK(strcmp(eps[0].host, "127.0.0.1") == 0);
    CHECK_EQ(eps[0].port, 1);
    CHECK_EQ(eps[1].port, 2);
    CHECK(strcmp(eps[2].host, "::1") == 0);
    CHECK_EQ(eps[2].port, 3);
    CHECK_EQ(eps[0].sslen, 0); /* not resolved by the parser */
    free(eps);
    CHECK_EQ(kvmux__endpoints_parse("one:9", &eps, &n), 0);
    CHECK_EQ(n, 1);
    free(eps);
    const char *bad[] = {"", ",", "a:1,", ",a:1", "a:1,,b:2", "a:1;b:2", "a:1 b:2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        eps = NULL;
        CHECK_EQ(kvmux__endpoints_parse(bad[i], &eps, &n), KVMUX_EINVAL);
        CHECK(eps == NULL);
    }
    char msg[256];
    CHECK_EQ(kvmux_connection_error(NULL, msg, sizeof msg), KVMUX_EINVAL);
    CHECK(strstr(msg, "endpoints") != NULL);
    /* 64 entries at most. */
    char big[64 * 12 + 16];
    size_t off = 0;
    for (int i = 0; i < 64; i++)
        off += (size_t)snprintf(big + off, sizeof big - off, "%sh:%d", i ? "," : "", i + 1);
    CHECK_EQ(kvmux__endpoints_parse(big, &eps, &n), 0);
    CHECK_EQ(n, 64);
    CHECK_EQ(eps[63].port, 64);
    free(eps);
    snprintf(big + off, sizeof big - off, ",h:65");
    eps = NULL;
    CHECK_EQ(kvmux__endpoints_parse(big, &eps, &n), KVMUX_EINVAL);
    CHECK(eps == NULL);
}

static void test_read_ops(void) {
    int reads[] = {KVMUX_GET, KVMUX_EXISTS, KVMUX_TTL, KVMUX_SCAN, KVMUX_WAIT,
                   KVMUX_STATS, KVMUX_SLOWLOG, KVMUX_CLIENT_LIST, KVMUX_PING};
    int writes[] = {KVMUX_SET, KVMUX_DEL, KVMUX_INCR, KVMUX_CAS, KVMUX_EXPIRE, KVMUX_PERSIST};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++)
        CHECK_EQ(kvmux__op_is_read(reads[i]), 1);
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++)
        CHECK_EQ(kvmux__op_is_read(writes[i]), 0);
}

int main(void) {
    test_hostport();
    test_list();
    test_read_ops();
    return test_report();
}
