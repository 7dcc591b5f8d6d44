/* The ABI promises of docs/ABI.md, checked against libkvmux.so:
 * - kvmux_options_init_sized writes only the caller's size (an old
 *   binary's smaller struct is never overrun);
 * - kvmux_connect reads only struct_size bytes of the caller's options, so
 *   a field the caller's header did not have keeps the library's default;
 * - options that were never initialised (struct_size 0) or come from a
 *   newer header than the library knows are refused with KVMUX_EINVAL;
 * - kvmux_version() and kvmux_version_string() match the header.
 * Connects go to a loopback port nobody listens on: an accepted set of
 * options fails with KVMUX_ECONNECT, a refused one with KVMUX_EINVAL
 * before any socket is opened. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmux.h"
#include "testutil.h"

/* A loopback port that was free a moment ago and is closed now. */
static uint16_t closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int try_connect(const kvmux_options *o, uint16_t port) {
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", port, o);
    if (rc == 0) kvmux_close(c);
    return rc;
}

static void test_version(void) {
    CHECK_EQ(kvmux_version(), KVMUX_VERSION_NUM);
    CHECK_EQ(KVMUX_VERSION_NUM, (0 << 16) | (2 << 8) | 0);
    CHECK(strcmp(kvmux_version_string(), KVMUX_VERSION_STRING) == 0);
}

static void test_init_sized_stays_inside(void) {
    /* An "old binary" whose kvmux_options ends before busy_poll_us. */
    size_t old_size = offsetof(kvmux_options, busy_poll_us);
    unsigned char buf[sizeof(kvmux_options) + 16];
    memset(buf, 0xAA, sizeof buf);
    kvmux_options_init_sized((kvmux_options *)buf, old_size);
    for (size_t i = old_size; i < sizeof buf; i++) {
        if (buf[i] != 0xAA) {
            CHECK(!"kvmux_options_init_sized wrote past the caller's size");
            break;
        }
    }
    kvmux_options o;
    memcpy(&o, buf, sizeof o);
    CHECK_EQ(o.struct_size, old_size);
    CHECK_EQ(o.request_timeout_ms, 5000);

    kvmux_options full;
    kvmux_options_init(&full);
    CHECK_EQ(full.struct_size, sizeof(kvmux_options));
}

static void test_connect_reads_only_struct_size(uint16_t port) {
    /* busy_poll_us above its maximum is refused when the caller's struct
     * has the field... */
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 2000;
    o.busy_poll_us = 5u * 1000 * 1000;
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    char msg[256];
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "busy_poll_us") != NULL);

    /* ...and ignored (the default, off, applies) when the caller was built
     * against a header without it: the connect gets as far as the socket. */
    o.struct_size = (uint32_t)offsetof(kvmux_options, busy_poll_us);
    CHECK_EQ(try_connect(&o, port), KVMUX_ECONNECT);
}

/* The failover fields (appended with protocol v3): an old caller's
 * struct ending before endpoints, with garbage where the pointer would
 * be, connects to host:port as before (the garbage is never read); a
 * current caller's bad values are refused. */
static void test_failover_fields(uint16_t port) {
    size_t old_size = offsetof(kvmux_options, endpoints);
    unsigned char buf[sizeof(kvmux_options)];
    memset(buf, 0xAA, sizeof buf);
    kvmux_options_init_sized((kvmux_options *)buf, old_size);
    ((kvmux_options *)buf)->connect_timeout_ms = 2000;
    CHECK_EQ(try_connect((kvmux_options *)buf, port), KVMUX_ECONNECT);
    kvmux_options o;
    kvmux_options_init(&o);
    CHECK(o.endpoints == NULL);
    CHECK_EQ(o.resend_writes, 0);
    CHECK_EQ(o.max_protocol_version, 3);
    o.resend_writes = 2;
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    char msg[256];
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "resend_writes") != NULL);
    /* Sessions (appended after resend_writes): on by default, 0 or 1. */
    kvmux_options_init(&o);
    CHECK_EQ(o.no_sessions, 0);
    CHECK(offsetof(kvmux_options, no_sessions) > offsetof(kvmux_options, resend_writes));
    o.no_sessions = 2;
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "no_sessions") != NULL);
    kvmux_options_init(&o);
    o.endpoints = "no-port-here";
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "endpoints") != NULL);
}

/* stale_reads (appended with STALE reads): off by default; an old
 * caller's struct ending before it, with garbage there, connects as
 * before; a bad value is refused. */
static void test_stale_field(uint16_t port) {
    size_t old_size = offsetof(kvmux_options, stale_reads);
    unsigned char buf[sizeof(kvmux_options)];
    memset(buf, 0xAA, sizeof buf);
    kvmux_options_init_sized((kvmux_options *)buf, old_size);
    ((kvmux_options *)buf)->connect_timeout_ms = 2000;
    ((kvmux_options *)buf)->endpoints = NULL;
    ((kvmux_options *)buf)->resend_writes = 0;
    CHECK_EQ(try_connect((kvmux_options *)buf, port), KVMUX_ECONNECT);
    kvmux_options o;
    kvmux_options_init(&o);
    CHECK_EQ(o.stale_reads, 0);
    o.stale_reads = 2;
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    char msg[256];
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "stale_reads") != NULL);
}

/* cluster, cluster_max_redirects (appended with the cluster client):
 * off and 5 by default; an old caller's struct ending before them, with
 * garbage there, connects as a plain client; bad values are refused; a
 * cluster connect that reaches no seed is KVMUX_ECLUSTERMAP. */
static void test_cluster_fields(uint16_t port) {
    size_t old_size = offsetof(kvmux_options, cluster);
    unsigned char buf[sizeof(kvmux_options)];
    memset(buf, 0xAA, sizeof buf);
    kvmux_options_init_sized((kvmux_options *)buf, old_size);
    kvmux_options *old = (kvmux_options *)buf;
    old->connect_timeout_ms = 2000;
    CHECK_EQ(try_connect(old, port), KVMUX_ECONNECT);
    kvmux_options o;
    kvmux_options_init(&o);
    CHECK_EQ(o.cluster, 0);
    CHECK_EQ(o.cluster_max_redirects, 5);
    o.cluster = 2;
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    o.cluster = 1;
    o.cluster_max_redirects = 0;
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    char msg[256];
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "cluster_max_redirects") != NULL);
    o.cluster_max_redirects = 65;
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    o.cluster_max_redirects = 5;
    o.connect_timeout_ms = 2000;
    CHECK_EQ(try_connect(&o, port), KVMUX_ECLUSTERMAP);
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "no usable slot map") != NULL);
    kvmux_client *c = NULL;
    CHECK_EQ(kvmux_async_connect(&c, "127.0.0.1", port, &o), KVMUX_ECLUSTERMAP);
    CHECK(c == NULL);
    CHECK(strcmp(kvmux_strerror(KVMUX_ECLUSTERMAP), "unknown error") != 0);
    CHECK(!kvmux_is_fatal(KVMUX_ECLUSTERMAP));
    /* The cluster API on a plain handle, or none: KVMUX_EINVAL. */
    size_t n = 0;
    CHECK_EQ(kvmux_cluster_groups(NULL, NULL, 0, &n), KVMUX_EINVAL);
    kvmux_cluster_info ci;
    CHECK_EQ(kvmux_cluster_stats(NULL, &ci, sizeof ci), KVMUX_EINVAL);
    CHECK_EQ(kvmux_cluster_group_call(NULL, 1, NULL, NULL, 100), KVMUX_EINVAL);
}

static void test_bad_sizes_refused(uint16_t port) {
    kvmux_options o;
    memset(&o, 0, sizeof o); /* never initialised */
    o.connect_timeout_ms = 2000;
    o.request_timeout_ms = 2000;
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    char msg[256];
    kvmux_connection_error(NULL, msg, sizeof msg);
    CHECK(strstr(msg, "kvmux_options_init") != NULL);

    kvmux_options_init(&o);
    o.struct_size = (uint32_t)sizeof o + 8; /* built against a newer header */
    CHECK_EQ(try_connect(&o, port), KVMUX_EINVAL);
    kvmux_client *c = NULL;
    CHECK_EQ(kvmux_async_connect(&c, "127.0.0.1", port, &o), KVMUX_EINVAL);
    CHECK(c == NULL);

    CHECK_EQ(try_connect(NULL, port), KVMUX_ECONNECT); /* NULL: defaults */
}

int main(void) {
    uint16_t port = closed_port();
    test_version();
    test_init_sized_stays_inside();
    test_connect_reads_only_struct_size(port);
    test_bad_sizes_refused(port);
    test_failover_fields(port);
    test_stale_field(port);
    test_cluster_fields(port);
    return test_report();
}
