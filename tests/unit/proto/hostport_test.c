/* kvmux_hostport_parse (src/proto/hostport.h), the one "host:port" parser
 * of the client (endpoints, NOT_LEADER) and the server (--peers, peer
 * TLS): accepted forms, every rejection, the host buffer's bound; and
 * --peers (src/replica/peers.c), which must accept exactly what a client
 * can follow, with nothing around it. */
#include <stdio.h>
#include <string.h>

#include "hostport.h"
#include "peers.h"
#include "testutil.h"

static int parse(const char *s, char *host, size_t cap, uint16_t *port) {
    return kvmux_hostport_parse(s, strlen(s), host, cap, port);
}

static void accepts(const char *s, const char *want_host, unsigned want_port) {
    char host[64] = "";
    uint16_t port = 0;
    int rc = parse(s, host, sizeof host, &port);
    CHECK_EQ(rc, 0);
    if (rc != 0) fprintf(stderr, "refused: '%s'\n", s);
    CHECK(strcmp(host, want_host) == 0);
    CHECK_EQ(port, want_port);
}

static void refuses(const char *s) {
    char host[64];
    uint16_t port;
    int rc = parse(s, host, sizeof host, &port);
    CHECK_EQ(rc, -1);
    if (rc != -1) fprintf(stderr, "accepted: '%s'\n", s);
}

static void test_forms(void) {
    accepts("127.0.0.1:7878", "127.0.0.1", 7878);
    accepts("localhost:1", "localhost", 1);
    accepts("db-1.example.com:65535", "db-1.example.com", 65535);
    accepts("[::1]:7001", "::1", 7001);
    accepts("[fe80::1%eth0]:7001", "fe80::1%eth0", 7001);
    accepts("  10.0.0.1:7001\t", "10.0.0.1", 7001);
    accepts("h:00080", "h", 80);
    const char *bad[] = {"", ":", "h", "h:", ":80", "h:0", "h:65536", "h:123456", "h:8o",
                         "h:-1", "h: 80x", "::1:80", "[::1]80", "[::1]:", "[::1", "[]:80",
                         "a,b:80", "a b:80", "h\x01:80", "h\x7f:80", "[a]b]:80", "h:80:90"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) refuses(bad[i]);
    /* len is honoured: the text after it is not read. */
    char host[64];
    uint16_t port = 0;
    CHECK_EQ(kvmux_hostport_parse("h:80,junk", 4, host, sizeof host, &port), 0);
    CHECK_EQ(port, 80);
}

static void test_host_cap(void) {
    char host[4];
    uint16_t port;
    CHECK_EQ(parse("abc:1", host, sizeof host, &port), 0);
    CHECK(strcmp(host, "abc") == 0);
    CHECK_EQ(parse("abcd:1", host, sizeof host, &port), -1);
    CHECK_EQ(parse("[abcd]:1", host, sizeof host, &port), -1);
}

static void test_peers(void) {
    kvmux_peers ps;
    char err[256];
    CHECK_EQ(kvmux_peers_parse("1=[::1]:7001/[::1]:7878,2=h:7002/h:7879", &ps, err, sizeof err), 0);
    CHECK_EQ(ps.n, 2);
    CHECK(strcmp(ps.p[0].raft_addr, "[::1]:7001") == 0); /* kept verbatim for C-Raft */
    /* Unbracketed IPv6, blanks around an address, an empty host: refused. */
    CHECK_EQ(kvmux_peers_parse("1=::1:7001/h:1", &ps, err, sizeof err), -1);
    CHECK_EQ(kvmux_peers_parse("1= h:7001/h:1", &ps, err, sizeof err), -1);
    CHECK_EQ(kvmux_peers_parse("1=h:7001/h:1 ", &ps, err, sizeof err), -1);
    CHECK_EQ(kvmux_peers_parse("1=:7001/h:1", &ps, err, sizeof err), -1);
}

int main(void) {
    test_forms();
    test_host_cap();
    test_peers();
    return test_report();
}
