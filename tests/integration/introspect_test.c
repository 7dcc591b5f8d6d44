/* SLOWLOG (opcode 13) and CLIENT_LIST (opcode 14) against a real kvmuxd
 * with two event-loop threads (ephemeral port):
 *   - slow log: with --slowlog-threshold-us 0 every request is slow, so
 *     what is recorded is deterministic: op names, newest first, the key
 *     cut at 32 bytes (key_truncated=1), --slowlog-max-len keeps the
 *     newest N, GET count, LEN, RESET (the count dropped), a subcommand
 *     the server does not know (BAD_REQUEST), a key (refused locally, and
 *     BAD_REQUEST from the server over a raw socket); a server with a
 *     high threshold records nothing; STATS slowlog_len / slowlog_max_len;
 *   - client list: N connections (v1 and v2, named) spread over both
 *     loops, each line with its protocol version; parked WAITs show as
 *     in_flight=1 credits=max-1; the asking connection counts its own
 *     CLIENT_LIST; closed connections leave the list; a client that takes
 *     4 KiB frames gets the whole lines that fit and the full count;
 *   - the async API (kvmux_call_async with KVMUX_SLOWLOG / CLIENT_LIST);
 *   - kvmux-cli "slowlog get|len|reset" and "client list".
 * Label "concurrent": the list is read across loop threads (TSan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

#define TMO 5000
#define NCLIENTS 5

static kvmux_client *connect_named(uint16_t port, const char *name, int max_proto) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = TMO;
    o.request_timeout_ms = TMO;
    o.client_name = name;
    if (max_proto) o.max_protocol_version = (uint8_t)max_proto;
    kvmux_client *c = NULL;
    return kvmux_connect(&c, "127.0.0.1", port, &o) == 0 ? c : NULL;
}

static int count_lines(const char *text) {
    int n = 0;
    for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++) n++;
    return n;
}

/* The line of text containing needle (copied into line), or NULL. */
static const char *find_line(const char *text, const char *needle, char *line, size_t cap) {
    const char *p = strstr(text, needle);
    if (!p) return NULL;
    const char *b = p;
    while (b > text && b[-1] != '\n') b--;
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - b) : strlen(b);
    if (n >= cap) n = cap - 1;
    memcpy(line, b, n);
    line[n] = '\0';
    return line;
}

/* The number after " field=" (or at the line start) in line; -1 if absent. */
static long long field(const char *line, const char *name) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", name);
    const char *p = strstr(line, pat);
    if (!p && strncmp(line, pat + 1, strlen(pat) - 1) == 0) p = line - 1;
    if (!p) return -1;
    return strtoll(p + strlen(pat), NULL, 10);
}

/* ---- slow log ---- */

static void test_slowlog(uint16_t port) {
    kvmux_client *c = connect_named(port, "slow", 0);
    REQUIRE(c != NULL);
    uint64_t n = 99;
    CHECK_EQ(kvmux_slowlog_reset(c, NULL, TMO), 0); /* the handshake's neighbours */

    /* A 40-byte key: kept as its first 32 bytes. */
    const char *longkey = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
    CHECK_EQ(kvmux_set(c, longkey, 40, "v", 1, 0, NULL, TMO), 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_slowlog_get(c, 0, &v, TMO), 0);
    REQUIRE(v != NULL);
    char line[1024];
    const char *text = (const char *)v->data;
    CHECK(find_line(text, "op=SET", line, sizeof line) != NULL);
    CHECK(strstr(line, "key=0123456789abcdefghijklmnopqrstuv key_truncated=1") != NULL);
    CHECK(strstr(line, "client=127.0.0.1:") != NULL);
    CHECK(field(line, "duration_us") >= 0 && field(line, "time_ms") > 1600000000000LL);
    /* RESET (recorded after it answered) then SET: two entries. */
    CHECK_EQ(v->version, 2);
    CHECK_EQ(count_lines(text), 2);
    kvmux_value_free(v);

    /* --slowlog-max-len 4 keeps the newest four. */
    for (int i = 0; i < 10; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        kvmux_value *g = NULL;
        CHECK_EQ(kvmux_get(c, key, strlen(key), &g, TMO), KVMUX_ENOTFOUND);
    }
    CHECK_EQ(kvmux_slowlog_len(c, &n, TMO), 0);
    CHECK_EQ(n, 4);
    v = NULL;
    CHECK_EQ(kvmux_slowlog_get(c, 2, &v, TMO), 0); /* the LEN, then k9's GET */
    REQUIRE(v != NULL);
    text = (const char *)v->data;
    CHECK_EQ(v->version, 4);
    CHECK_EQ(count_lines(text), 2);
    CHECK(strncmp(text, "id=", 3) == 0 && strstr(text, "op=SLOWLOG") != NULL);
    CHECK(find_line(text, "op=GET", line, sizeof line) && strstr(line, "key=k9") != NULL);
    long long id_newest = field(text, "id");
    CHECK(find_line(text, "op=GET", line, sizeof line) && field(line, "id") == id_newest - 1);
    kvmux_value_free(v);

    uint64_t dropped = 0;
    CHECK_EQ(kvmux_slowlog_reset(c, &dropped, TMO), 0);
    CHECK_EQ(dropped, 4);
    CHECK_EQ(kvmux_slowlog_len(c, &n, TMO), 0);
    CHECK_EQ(n, 1); /* the RESET itself */
    /* STATS (and so /metrics) carries the length and the capacity. */
    kvmux_value *st = NULL;
    CHECK_EQ(kvmux_stats(c, "slowlog_", &st, TMO), 0);
    REQUIRE(st != NULL);
    CHECK_EQ(test_stat_value(st->data, st->len, "slowlog_len"), 2); /* RESET, LEN */
    CHECK_EQ(test_stat_value(st->data, st->len, "slowlog_max_len"), 4);
    kvmux_value_free(st);

    /* Refused: a subcommand the server does not know; a key. */
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = KVMUX_SLOWLOG;
    q.subcommand = 9;
    kvmux_reply r;
    CHECK_EQ(kvmux_call(c, &q, &r, TMO), KVMUX_EBADREQ);
    q.subcommand = KVMUX_SLOWLOG_LEN;
    q.key = "x";
    q.key_len = 1;
    CHECK_EQ(kvmux_call(c, &q, &r, TMO), KVMUX_EINVAL);
    CHECK_EQ(kvmux_slowlog_get(c, 0, NULL, TMO), KVMUX_EINVAL);
    CHECK_EQ(kvmux_slowlog_len(c, NULL, TMO), KVMUX_EINVAL);
    CHECK_EQ(kvmux_ping(c, TMO), 0); /* still usable */
    kvmux_close(c);

    /* Protocol v1 has both operations too. */
    kvmux_client *v1 = connect_named(port, "v1", 1);
    REQUIRE(v1 != NULL);
    kvmux_server_info info;
    kvmux_get_server_info(v1, &info);
    CHECK_EQ(info.protocol_version, 1);
    v = NULL;
    CHECK_EQ(kvmux_slowlog_get(v1, 1, &v, TMO), 0);
    CHECK(v != NULL && v->version >= 1 && count_lines((const char *)v->data) == 1);
    kvmux_value_free(v);
    v = NULL;
    CHECK_EQ(kvmux_client_list(v1, &v, TMO), 0);
    CHECK(v != NULL && find_line((const char *)v->data, "name=v1", line, sizeof line) &&
          field(line, "proto") == 1);
    kvmux_value_free(v);
    kvmux_close(v1);
}

/* A key on SLOWLOG / CLIENT_LIST, sent raw: BAD_REQUEST, and the
 * connection goes on. */
static void test_raw_key_refused(uint16_t port) {
    int fd = test_connect_raw(port, TMO);
    REQUIRE(fd >= 0);
    REQUIRE(test_raw_handshake(fd) == 0);
    for (int op = KVMUX_OP_SLOWLOG; op <= KVMUX_OP_CLIENT_LIST; op++) {
        uint8_t ext[8] = {0, 0, 0, KVMUX_SLOWLOG_LEN, 0, 0, 0, 0}, in[1024];
        CHECK_EQ(test_send_request(fd, 1, (uint32_t)op, (uint8_t)op, ext,
                                   op == KVMUX_OP_SLOWLOG ? 8 : 0, "k", NULL, 0),
                 0);
        kvmux_frame rf;
        CHECK(test_read_frame(fd, in, sizeof in, &rf) > 0);
        CHECK_EQ(rf.request_id, (uint32_t)op);
        CHECK_EQ(rf.code, KVMUX_STATUS_BAD_REQUEST);
    }
    close(fd);
}

/* A server with a high threshold records nothing. */
static void test_threshold(void) {
    test_server s;
    const char *args[] = {"--slowlog-threshold-us", "4000000000", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    kvmux_client *c = connect_named(s.port, NULL, 0);
    REQUIRE(c != NULL);
    for (int i = 0; i < 20; i++) CHECK_EQ(kvmux_set(c, "a", 1, "b", 1, 0, NULL, TMO), 0);
    uint64_t n = 99;
    CHECK_EQ(kvmux_slowlog_len(c, &n, TMO), 0);
    CHECK_EQ(n, 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_slowlog_get(c, 0, &v, TMO), 0);
    REQUIRE(v != NULL);
    CHECK_EQ(v->len, 0);
    CHECK_EQ(v->version, 0);
    kvmux_value_free(v);
    kvmux_close(c);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

/* ---- client list ---- */

static atomic_int waits_done;

static void on_wait(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c, (void)reply, (void)ud;
    CHECK_EQ(result, 0);
    atomic_fetch_add(&waits_done, 1);
}

/* The list, polled (<= 10 s) until pred holds; the last text in buf. */
static int list_until(kvmux_client *c, char *buf, size_t cap, int (*pred)(const char *)) {
    for (int i = 0; i < 500; i++) {
        kvmux_value *v = NULL;
        if (kvmux_client_list(c, &v, TMO) != 0) return 0;
        snprintf(buf, cap, "%s", (const char *)v->data);
        int ok = count_lines(buf) == (int)v->version && pred(buf);
        kvmux_value_free(v);
        if (ok) return 1;
        test_sleep_ms(20);
    }
    return 0;
}

static int two_waits_parked(const char *text) {
    char line[1024];
    /* Connections of the earlier tests may still be closing: wait. */
    return count_lines(text) == NCLIENTS + 1 &&
           find_line(text, "name=cl0", line, sizeof line) && field(line, "in_flight") == 1 &&
           find_line(text, "name=cl3", line, sizeof line) && field(line, "in_flight") == 1;
}

static int three_left(const char *text) { return count_lines(text) == 4; }

static void test_client_list(uint16_t port) {
    kvmux_client *cl[NCLIENTS];
    char name[16];
    for (int i = 0; i < NCLIENTS; i++) {
        snprintf(name, sizeof name, "cl%d", i);
        cl[i] = connect_named(port, name, i % 3 == 1 ? 1 : 0); /* cl1, cl4: v1 */
        REQUIRE(cl[i] != NULL);
    }
    kvmux_client *me = connect_named(port, "lister", 0);
    REQUIRE(me != NULL);
    /* cl0 (v2) and cl3 (v2) park a WAIT on a missing key. */
    for (int i = 0; i < NCLIENTS; i += 3) {
        kvmux_request q;
        memset(&q, 0, sizeof q);
        q.op = KVMUX_WAIT;
        q.key = "parked";
        q.key_len = 6;
        q.version = 0; /* wait until it exists */
        q.wait_ms = 20000;
        CHECK_EQ(kvmux_call_async(cl[i], &q, 30000, on_wait, NULL), 0);
    }
    static char text[64 * 1024];
    CHECK(list_until(me, text, sizeof text, two_waits_parked));
    CHECK_EQ(count_lines(text), NCLIENTS + 1);
    char line[1024];
    int loops_seen[2] = {0, 0};
    for (int i = 0; i < NCLIENTS; i++) {
        snprintf(name, sizeof name, "name=cl%d", i);
        REQUIRE(find_line(text, name, line, sizeof line) != NULL);
        CHECK_EQ(field(line, "proto"), i % 3 == 1 ? 1 : 2);
        long long inf = field(line, "in_flight");
        CHECK_EQ(inf, i % 3 == 0 ? 1 : 0);
        CHECK_EQ(field(line, "credits"), 1024 - inf);
        CHECK(field(line, "bytes_in") > 0 && field(line, "bytes_out") > 0);
        CHECK(field(line, "age_ms") >= 0 && field(line, "idle_ms") >= 0);
        CHECK_EQ(field(line, "tls"), 0);
        CHECK(strstr(line, "addr=127.0.0.1:") != NULL);
        long long lp = field(line, "loop");
        CHECK(lp == 0 || lp == 1);
        if (lp == 0 || lp == 1) loops_seen[lp] = 1;
    }
    CHECK(loops_seen[0] && loops_seen[1]); /* round-robin over two loops */
    REQUIRE(find_line(text, "name=lister", line, sizeof line) != NULL);
    CHECK_EQ(field(line, "in_flight"), 1); /* its own CLIENT_LIST */
    CHECK_EQ(field(line, "proto"), 2);

    /* Async: the same request through the callback API. */
    kvmux_future *fut = NULL;
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = KVMUX_CLIENT_LIST;
    REQUIRE(kvmux_call_future(me, &q, TMO, &fut) == 0);
    kvmux_reply r;
    CHECK_EQ(kvmux_future_wait(fut, TMO), 0);
    CHECK_EQ(kvmux_future_result(fut, &r), 0);
    CHECK_EQ(r.version, NCLIENTS + 1);
    CHECK(r.value && strstr((const char *)r.value, "name=cl4") != NULL);
    kvmux_reply_free(&r);
    kvmux_future_free(fut);

    /* Wake the WAITs, close two connections: they leave the list. */
    CHECK_EQ(kvmux_set(me, "parked", 6, "x", 1, 0, NULL, TMO), 0);
    for (int i = 0; i < 500 && atomic_load(&waits_done) < 2; i++) test_sleep_ms(10);
    CHECK_EQ(atomic_load(&waits_done), 2);
    kvmux_close(cl[0]);
    kvmux_close(cl[1]);
    CHECK(list_until(me, text, sizeof text, three_left));
    CHECK(strstr(text, "name=cl0 ") == NULL && strstr(text, "name=cl0\n") == NULL);
    CHECK(strstr(text, "name=cl2\n") != NULL);
    for (int i = 2; i < NCLIENTS; i++) kvmux_close(cl[i]);
    kvmux_close(me);
}

/* A client that accepts 4 KiB frames gets the lines that fit, and the
 * count of all: 24 connections with 200-byte names need ~8 KiB. */
static void test_list_bounded(uint16_t port) {
    enum { N = 24 };
    kvmux_client *cl[N];
    char name[256];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "%03d%0197d", i, 0);
        cl[i] = connect_named(port, name, 0);
        REQUIRE(cl[i] != NULL);
    }
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = TMO;
    o.request_timeout_ms = TMO;
    o.max_frame_size = 4096;
    kvmux_client *small = NULL;
    REQUIRE(kvmux_connect(&small, "127.0.0.1", port, &o) == 0);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_client_list(small, &v, TMO), 0);
    REQUIRE(v != NULL);
    CHECK_EQ(v->version, N + 1);
    int lines = count_lines((const char *)v->data);
    CHECK(lines >= 1 && lines < N + 1);
    CHECK(v->len <= 4096 - KVMUX_FRAME_HDR_LEN - 8);
    CHECK(v->len > 0 && v->data[v->len - 1] == '\n'); /* whole lines only */
    kvmux_value_free(v);
    kvmux_close(small);
    for (int i = 0; i < N; i++) kvmux_close(cl[i]);
}

/* ---- kvmux-cli ---- */

static int cli(uint16_t port, const char *a, const char *b, const char *c, char *out,
               size_t cap) {
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%u", (unsigned)port);
    const char *argv[] = {KVMUX_CLI_PATH, "-p", portbuf, "-t", "5000", a, b, c, NULL};
    static char err[4096];
    int st = test_run(argv, NULL, NULL, out, cap, err, sizeof err, 20000);
    if (err[0]) fprintf(stderr, "kvmux-cli said: %s", err);
    return st;
}

static void test_cli(uint16_t port) {
    static char out[16384];
    CHECK_EQ(cli(port, "slowlog", "reset", NULL, out, sizeof out), 0);
    CHECK(strncmp(out, "OK dropped=", 11) == 0);
    CHECK_EQ(cli(port, "slowlog", "len", NULL, out, sizeof out), 0);
    CHECK(strcmp(out, "1\n") == 0); /* the RESET */
    CHECK_EQ(cli(port, "slowlog", "get", "1", out, sizeof out), 0);
    CHECK_EQ(count_lines(out), 1);
    CHECK(strstr(out, "op=SLOWLOG") != NULL);
    CHECK_EQ(cli(port, "client", "list", NULL, out, sizeof out), 0);
    CHECK(strstr(out, "name=kvmux-cli") != NULL && strstr(out, " in_flight=1 ") != NULL);
    CHECK_EQ(cli(port, "slowlog", "nope", NULL, out, sizeof out), 2);
    CHECK_EQ(cli(port, "client", "kill", NULL, out, sizeof out), 2);
}

int main(void) {
    test_server s;
    const char *args[] = {"--threads", "2", "--slowlog-threshold-us", "0",
                          "--slowlog-max-len", "4", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    test_slowlog(s.port);
    test_raw_key_refused(s.port);
    test_client_list(s.port);
    test_list_bounded(s.port);
    test_cli(s.port);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    test_threshold();
    return test_report();
}
