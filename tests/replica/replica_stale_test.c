/* replica_stale_test: STALE reads (request flag 0x20, protocol v3;
 * docs/REPLICATION.md "Stale reads") on a real 3-replica group.
 *  - a follower answers a STALE read from its applied state (no
 *    NOT_LEADER), a plain read there is still NOT_LEADER;
 *  - a STALE read whose min_version is ahead of the follower waits until
 *    the write carrying that version is applied there, then answers it
 *    (never the older value): once with min_version ahead of the whole
 *    group, once with the follower stopped (SIGSTOP) while the write is
 *    acknowledged by the other two;
 *  - one that cannot be satisfied ends TIMEOUT at its deadline;
 *  - STALE on a write is BAD_REQUEST; on a v2 connection BAD_FLAGS;
 *  - libkvmux stale_reads: a follower serves the handle's reads;
 *    kvmux-cli --stale. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

typedef struct raw {
    int fd;
    uint8_t in[8192];
    kvmux_frame f;
} raw;

static int raw_open(raw *r, uint16_t port, int version) {
    r->fd = test_connect_raw(port, 3000);
    if (r->fd < 0) return -1;
    if (test_raw_handshake_version(r->fd, version) != version) {
        close(r->fd);
        return -1;
    }
    return 0;
}

/* Send a request with STALE (and DEADLINE when deadline_ms > 0). */
static int raw_send(raw *r, uint8_t version, uint8_t op, const char *key, uint64_t min_version,
                    uint32_t deadline_ms, const uint8_t *ex, uint8_t exl, const char *val) {
    uint8_t buf[512];
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = version;
    f.type = KVMUX_FRAME_REQUEST;
    f.code = op;
    f.request_id = 11;
    f.flags = KVMUX_FLAG_STALE | (deadline_ms ? KVMUX_FLAG_DEADLINE : 0);
    f.deadline_ms = deadline_ms;
    f.min_version = min_version;
    f.extras = ex;
    f.extras_len = exl;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)strlen(key);
    f.value = (const uint8_t *)val;
    f.value_len = val ? (uint32_t)strlen(val) : 0;
    size_t n = kvmux_frame_encode(buf, &f);
    return write(r->fd, buf, n) == (ssize_t)n ? 0 : -1;
}

/* The next frame's type and code (status), or -1. */
static int raw_reply(raw *r) {
    if (test_read_frame(r->fd, r->in, sizeof r->in, &r->f) <= 0) return -1;
    return r->f.type == KVMUX_FRAME_RESPONSE ? r->f.code : 100 + r->f.type;
}

static kvmux_client *connect_to(uint16_t port, int stale) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.request_timeout_ms = 5000;
    o.stale_reads = stale;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, "127.0.0.1", port, &o) != 0) return NULL;
    return c;
}

static int value_is(const raw *r, const char *want) {
    return r->f.value_len == strlen(want) && memcmp(r->f.value, want, r->f.value_len) == 0;
}

int main(void) {
    static rgroup g;
    REQUIRE(rgroup_start(&g, 3, NULL) == 0);
    int leader = rgroup_stable_leader(&g, 15000);
    REQUIRE(leader >= 0);
    int fol = (leader + 1) % 3, other = (leader + 2) % 3;
    kvmux_client *w = connect_to(g.cport[leader], 0);
    REQUIRE(w != NULL);
    uint64_t v1 = 0;
    REQUIRE(kvmux_set(w, "k", 1, "v1", 2, 0, &v1, 5000) == 0);

    /* 1. A follower serves a STALE read once it has v1; a plain read
     * there is NOT_LEADER. */
    raw r;
    REQUIRE(raw_open(&r, g.cport[fol], 3) == 0);
    CHECK_EQ(raw_send(&r, 3, KVMUX_OP_GET, "k", v1, 5000, NULL, 0, NULL), 0);
    CHECK_EQ(raw_reply(&r), KVMUX_STATUS_OK);
    CHECK(value_is(&r, "v1"));
    CHECK_EQ(test_send_request(r.fd, 3, 12, KVMUX_OP_GET, NULL, 0, "k", NULL, 0), 0);
    CHECK_EQ(raw_reply(&r), KVMUX_STATUS_NOT_LEADER);
    CHECK_EQ(raw_send(&r, 3, KVMUX_OP_EXISTS, "k", 0, 0, NULL, 0, NULL), 0);
    CHECK_EQ(raw_reply(&r), KVMUX_STATUS_OK);

    /* 2. min_version ahead of the whole group: parked until the next
     * write is applied on the follower, then answered with it. */
    CHECK_EQ(raw_send(&r, 3, KVMUX_OP_GET, "k", v1 + 1, 5000, NULL, 0, NULL), 0);
    test_sleep_ms(200);
    uint64_t v2 = 0;
    CHECK_EQ(kvmux_set(w, "k", 1, "v2", 2, 0, &v2, 5000), 0);
    CHECK_EQ(v2, v1 + 1);
    int64_t t0 = test_now_ms();
    CHECK_EQ(raw_reply(&r), KVMUX_STATUS_OK);
    CHECK(value_is(&r, "v2"));
    CHECK(test_now_ms() - t0 < 2000);

    /* 3. Unreachable min_version: TIMEOUT at the deadline. */
    t0 = test_now_ms();
    CHECK_EQ(raw_send(&r, 3, KVMUX_OP_GET, "k", v2 + 1000, 300, NULL, 0, NULL), 0);
    CHECK_EQ(raw_reply(&r), KVMUX_STATUS_TIMEOUT);
    int64_t took = test_now_ms() - t0;
    CHECK(took >= 250 && took < 3000);

    /* 4. STALE on a write: BAD_REQUEST, nothing written. */
    uint8_t ttl[8] = {0};
    CHECK_EQ(raw_send(&r, 3, KVMUX_OP_SET, "k", 0, 0, ttl, 8, "bad"), 0);
    CHECK_EQ(raw_reply(&r), KVMUX_STATUS_BAD_REQUEST);
    close(r.fd);

    /* 5. The follower stopped while the group acknowledges v3: a STALE
     * read asking for it waits for the follower to catch up and never
     * returns the older value. */
    kill(g.srv[fol].pid, SIGSTOP);
    uint64_t v3 = 0;
    CHECK_EQ(kvmux_set(w, "k", 1, "v3", 2, 0, &v3, 5000), 0);
    test_sleep_ms(300);
    kill(g.srv[fol].pid, SIGCONT);
    REQUIRE(raw_open(&r, g.cport[fol], 3) == 0);
    CHECK_EQ(raw_send(&r, 3, KVMUX_OP_GET, "k", v3, 5000, NULL, 0, NULL), 0);
    CHECK_EQ(raw_reply(&r), KVMUX_STATUS_OK);
    CHECK(value_is(&r, "v3"));
    close(r.fd);
    (void)other;

    /* 6. v2 connections have no STALE flag: a connection error. */
    REQUIRE(raw_open(&r, g.cport[fol], 2) == 0);
    CHECK_EQ(raw_send(&r, 2, KVMUX_OP_GET, "k", 0, 0, NULL, 0, NULL), 0);
    CHECK_EQ(raw_reply(&r), 100 + KVMUX_FRAME_ERROR);
    CHECK_EQ(r.f.code, KVMUX_ERR_BAD_FLAGS);
    close(r.fd);

    /* 7. libkvmux: stale_reads on a follower. */
    kvmux_client *s = connect_to(g.cport[fol], 1);
    REQUIRE(s != NULL);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(s, "k", 1, &v, 5000), 0);
    CHECK(v && v->len == 2 && memcmp(v->data, "v3", 2) == 0);
    kvmux_value_free(v);
    uint64_t ver = 0;
    CHECK_EQ(kvmux_exists(s, "k", 1, &ver, 5000), 0);
    CHECK_EQ(ver, v3);
    kvmux_close(s);
    kvmux_client *p = connect_to(g.cport[fol], 0);
    REQUIRE(p != NULL);
    CHECK_EQ(kvmux_get(p, "k", 1, &v, 5000), KVMUX_ENOTLEADER);
    kvmux_close(p);

    /* 8. kvmux-cli --stale on the follower. */
    char cmd[256], out[256];
    snprintf(cmd, sizeof cmd, "%s --stale -p %u get k 2>&1", KVMUX_CLI_PATH, g.cport[fol]);
    FILE *pf = popen(cmd, "r");
    REQUIRE(pf != NULL);
    size_t n = fread(out, 1, sizeof out - 1, pf);
    out[n] = '\0';
    CHECK_EQ(pclose(pf), 0);
    CHECK(strcmp(out, "v3\n") == 0);

    kvmux_close(w);
    rgroup_stop(&g);
    return test_report();
}
