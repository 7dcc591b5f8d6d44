/* STATS (opcode 7) against a real kvmuxd over raw sockets: the counters
 * move as the traffic says they must. Each check takes a STATS before and
 * after some requests and compares the deltas (the test is the only
 * client, so they are exact): requests by op, responses by status, ERRORs
 * by code, connections, keys, bytes, in-flight (a parked WAIT counts),
 * the prefix filter, request-level errors for a bad STATS, and STATS on a
 * v2 connection. Prints the first STATS text it got, for the record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "testutil.h"

#define BUF (64u * 1024)
static uint8_t rbuf[BUF];
static char text[BUF];

static int send_frame(int fd, uint8_t ver, uint32_t id, uint8_t op, const void *extras,
                      uint8_t elen, const char *key, const void *val, uint32_t vlen) {
    return test_send_request(fd, ver, id, op, extras, elen, key, val, vlen);
}

/* Read one RESPONSE; returns its status or -1. */
static int rd_status(int fd, uint32_t want_id) {
    kvmux_frame f;
    if (test_read_frame(fd, rbuf, sizeof rbuf, &f) <= 0) return -1;
    if (f.type != KVMUX_FRAME_RESPONSE || f.request_id != want_id) return -1;
    return f.code;
}

/* STATS with key prefix (NULL: all) on a v<ver> connection; the text goes
 * to text[]. Returns the status or -1. */
static int stats(int fd, uint8_t ver, uint32_t id, const char *prefix) {
    if (send_frame(fd, ver, id, KVMUX_OP_STATS, NULL, 0, prefix, NULL, 0) != 0) return -1;
    kvmux_frame f;
    if (test_read_frame(fd, rbuf, sizeof rbuf, &f) <= 0) return -1;
    if (f.type != KVMUX_FRAME_RESPONSE || f.request_id != id) return -1;
    text[0] = '\0';
    if (f.code == KVMUX_STATUS_OK) {
        if (f.extras_len != 0 || f.value_len >= sizeof text) return -1;
        memcpy(text, f.value, f.value_len);
        text[f.value_len] = '\0';
    }
    return f.code;
}

/* Value of line "name:" in text[], or -1 if absent. */
static long long stat_of(const char *name) {
    size_t n = strlen(name);
    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        if (!eol) return -1;
        if ((size_t)(eol - p) > n && strncmp(p, name, n) == 0 && p[n] == ':')
            return strtoll(p + n + 1, NULL, 10);
        p = eol + 1;
    }
    return -1;
}

static int connect_v(uint16_t port, int ver) {
    int fd = test_connect_raw(port, 5000);
    if (fd < 0) return -1;
    if (test_raw_handshake_version(fd, ver) != ver) {
        close(fd);
        return -1;
    }
    return fd;
}

static void run(uint16_t port) {
    int fd = connect_v(port, 1);
    REQUIRE(fd >= 0);
    uint8_t ttl[8] = {0};

    CHECK_EQ(stats(fd, 1, 1, NULL), KVMUX_STATUS_OK);
    printf("---- first STATS ----\n%s----\n", text);
    CHECK(strstr(text, "version:") == text);
    CHECK_EQ(stat_of("connections_current"), 1);
    CHECK_EQ(stat_of("connections_total"), 1);
    CHECK_EQ(stat_of("requests_stats"), 1);
    CHECK_EQ(stat_of("requests_total"), 1);
    CHECK_EQ(stat_of("in_flight"), 1); /* the STATS being answered */
    CHECK_EQ(stat_of("keys"), 0);
    CHECK_EQ(stat_of("aof_enabled"), 0);
    CHECK(stat_of("uptime_ms") >= 0);
    CHECK(stat_of("used_memory") >= 0);
    long long bin0 = stat_of("bytes_in"), bout0 = stat_of("bytes_out");
    long long ok0 = stat_of("responses_ok");
    CHECK(bin0 > 0 && bout0 > 0);

    /* 3 SET, 2 GET (one NOT_FOUND), INCR on text, unknown op, empty key. */
    CHECK_EQ(send_frame(fd, 1, 2, KVMUX_OP_SET, ttl, 8, "a", "x", 1), 0);
    CHECK_EQ(rd_status(fd, 2), KVMUX_STATUS_OK);
    CHECK_EQ(send_frame(fd, 1, 3, KVMUX_OP_SET, ttl, 8, "b", "y", 1), 0);
    CHECK_EQ(rd_status(fd, 3), KVMUX_STATUS_OK);
    CHECK_EQ(send_frame(fd, 1, 4, KVMUX_OP_SET, ttl, 8, "", "z", 1), 0);
    CHECK_EQ(rd_status(fd, 4), KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(send_frame(fd, 1, 5, KVMUX_OP_GET, NULL, 0, "a", NULL, 0), 0);
    CHECK_EQ(rd_status(fd, 5), KVMUX_STATUS_OK);
    CHECK_EQ(send_frame(fd, 1, 6, KVMUX_OP_GET, NULL, 0, "nope", NULL, 0), 0);
    CHECK_EQ(rd_status(fd, 6), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(send_frame(fd, 1, 7, KVMUX_OP_INCR, ttl, 8, "a", NULL, 0), 0);
    CHECK_EQ(rd_status(fd, 7), KVMUX_STATUS_NOT_INTEGER);
    CHECK_EQ(send_frame(fd, 1, 8, 99, NULL, 0, "a", NULL, 0), 0);
    CHECK_EQ(rd_status(fd, 8), KVMUX_STATUS_UNKNOWN_OP);

    CHECK_EQ(stats(fd, 1, 9, NULL), KVMUX_STATUS_OK);
    CHECK_EQ(stat_of("requests_set"), 3);
    CHECK_EQ(stat_of("requests_get"), 2);
    CHECK_EQ(stat_of("requests_incr"), 1);
    CHECK_EQ(stat_of("requests_unknown_op"), 1);
    CHECK_EQ(stat_of("requests_stats"), 2);
    CHECK_EQ(stat_of("requests_total"), 9);
    CHECK_EQ(stat_of("responses_ok") - ok0, 4); /* 2 SET, 1 GET, the 1st STATS */
    CHECK_EQ(stat_of("responses_not_found"), 1);
    CHECK_EQ(stat_of("responses_not_integer"), 1);
    CHECK_EQ(stat_of("responses_unknown_op"), 1);
    CHECK_EQ(stat_of("responses_bad_request"), 1);
    CHECK_EQ(stat_of("responses_total"), 8);
    CHECK_EQ(stat_of("in_flight"), 1);
    CHECK_EQ(stat_of("keys"), 2);
    CHECK(stat_of("bytes_in") > bin0);
    CHECK(stat_of("bytes_out") > bout0);
    CHECK_EQ(stat_of("errors_total"), 0);

    /* The prefix filter: only requests_* lines, all of them. */
    CHECK_EQ(stats(fd, 1, 10, "requests_"), KVMUX_STATUS_OK);
    int lines = 0, bad = 0;
    for (const char *p = text; *p; p = strchr(p, '\n') + 1, lines++) {
        if (strncmp(p, "requests_", 9) != 0) bad++;
        if (!strchr(p, '\n')) break;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(lines, 1 + KVMUX_OP_MAX + 1); /* total, per op, unknown_op */
    CHECK_EQ(stats(fd, 1, 11, "no_such_stat"), KVMUX_STATUS_OK);
    CHECK_EQ(strlen(text), 0);

    /* A bad STATS is a request-level error; the connection goes on. */
    CHECK_EQ(send_frame(fd, 1, 12, KVMUX_OP_STATS, ttl, 8, NULL, NULL, 0), 0);
    CHECK_EQ(rd_status(fd, 12), KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(send_frame(fd, 1, 13, KVMUX_OP_STATS, NULL, 0, NULL, "v", 1), 0);
    CHECK_EQ(rd_status(fd, 13), KVMUX_STATUS_BAD_REQUEST);

    /* A parked WAIT is in flight; a second connection's garbage is an
     * ERROR BAD_MAGIC. */
    uint8_t wext[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x75, 0x30}; /* v0, 30 s */
    CHECK_EQ(send_frame(fd, 1, 14, KVMUX_OP_WAIT, wext, 12, "w", NULL, 0), 0);
    int g = test_connect_raw(port, 5000);
    REQUIRE(g >= 0);
    CHECK_EQ(test_write_all(g, "GARBAGE-GARBAGE-GARBAGE", 23), 0);
    kvmux_frame f;
    CHECK(test_read_frame(g, rbuf, sizeof rbuf, &f) > 0);
    CHECK(f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_BAD_MAGIC);
    CHECK(test_wait_closed(g, 3000));
    close(g);
    long long total = -1;
    for (int i = 0; i < 100; i++) { /* the server tears it down after the ERROR */
        CHECK_EQ(stats(fd, 1, 15, NULL), KVMUX_STATUS_OK);
        total = stat_of("connections_current");
        if (total == 1) break;
        test_sleep_ms(20);
    }
    CHECK_EQ(total, 1);
    CHECK_EQ(stat_of("connections_total"), 2);
    CHECK_EQ(stat_of("errors_bad_magic"), 1);
    CHECK_EQ(stat_of("errors_total"), 1);
    CHECK_EQ(stat_of("protocol_errors"), 1);
    CHECK_EQ(stat_of("waits_parked"), 1);
    CHECK_EQ(stat_of("in_flight"), 2); /* the WAIT and this STATS */
    /* Fire the WAIT: the write answers it. */
    CHECK_EQ(send_frame(fd, 1, 16, KVMUX_OP_SET, ttl, 8, "w", "1", 1), 0);
    int got14 = 0, got16 = 0;
    for (int i = 0; i < 2; i++) {
        CHECK(test_read_frame(fd, rbuf, sizeof rbuf, &f) > 0);
        if (f.request_id == 14 && f.code == KVMUX_STATUS_OK) got14 = 1;
        if (f.request_id == 16 && f.code == KVMUX_STATUS_OK) got16 = 1;
    }
    CHECK(got14 && got16);
    CHECK_EQ(stats(fd, 1, 17, "in_flight"), KVMUX_STATUS_OK);
    CHECK_EQ(stat_of("in_flight"), 1);
    CHECK_EQ(stats(fd, 1, 18, "waits_fired"), KVMUX_STATUS_OK);
    CHECK_EQ(stat_of("waits_fired"), 1);

    /* v2 connection: same operation. */
    int v2 = connect_v(port, 2);
    REQUIRE(v2 >= 0);
    CHECK_EQ(stats(v2, 2, 1, "connections_"), KVMUX_STATUS_OK);
    CHECK_EQ(stat_of("connections_current"), 2);
    CHECK_EQ(stat_of("connections_total"), 3);
    CHECK_EQ(stat_of("keys"), -1); /* filtered out */
    close(v2);
    close(fd);
}

int main(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    run(s.port);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    return test_report();
}
