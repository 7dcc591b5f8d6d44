/* migrate_server_test: the source side's fence through a real one-member
 * replicated group (kvmuxd's server in this process, real Raft log on
 * disk, real sockets on ephemeral ports). Nothing on the wire proposes
 * migration entries yet (the migrate thread comes later), so the test
 * proposes them the way that thread will: kvmux__repl_propose_migstep on
 * loop 0 of the leader, reached here through the server's reload hook
 * (which runs on loop 0 between iterations). Checked over raw v3 and v2
 * connections:
 *  - OUT_BEGIN applied: writes for R served, the key in the dirty set;
 *  - OUT_FENCE applied: a WAIT parked on a key of R answered TRY_AGAIN;
 *    GET / SET / EXISTS for R answered TRY_AGAIN with
 *    (slot, epoch 1) on v3, BUSY "slot S is being migrated; try again" on
 *    v2; keys outside R served; STATS migrate_out_state:fenced,
 *    migrate_out_id:1, migrate_dirty_keys:2, cluster_try_again_migrating,
 *    and the same on /metrics;
 *  - session writes at the fence: a new one refused TRY_AGAIN, the
 *    RETRY resend of one applied before gets its recorded answer (same
 *    version), the RETRY of one never applied TRY_AGAIN without using its
 *    seq (it applies after the abort);
 *  - OUT_ABORT applied: R served again, STATS migrate_out_state:none. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "fsm.h"
#include "migout.h"
#include "proto.h"
#include "server.h"
#include "server_internal.h"
#include "testutil.h"

#define LAST 8191u

static kvmux_server *srv;
static atomic_int hook_action, hook_rc;

static uint8_t map_buf[1 << 16];
static size_t map_len;

static uint16_t free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t al = sizeof a;
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Loop 0, between iterations: propose what the main thread asked for. */
static void hook(kvmux_server *s, void *ud) {
    (void)ud;
    kvmux_loop *l = &s->loops[0];
    uint8_t v[14];
    int rc = -1;
    switch (atomic_load(&hook_action)) {
    case 1:
        rc = kvmux__repl_propose_map(l, map_buf, map_len);
        break;
    case 2:
        rc = kvmux__repl_propose_migstep(l, 1, KVMUX_MIGSTEP_OUT_BEGIN, v,
                                         kvmux_migout_begin_value(v, 0, LAST, 2, 1));
        break;
    case 3:
        rc = kvmux__repl_propose_migstep(l, 1, KVMUX_MIGSTEP_OUT_FENCE, NULL, 0);
        break;
    case 4:
        rc = kvmux__repl_propose_migstep(l, 1, KVMUX_MIGSTEP_OUT_ABORT, NULL, 0);
        break;
    }
    atomic_store(&hook_rc, rc);
    atomic_store(&hook_action, 0);
}

/* Run action on loop 0 and wait (bounded) until done(s) holds. */
static int run_action(int action, int (*done)(void)) {
    atomic_store(&hook_rc, 1);
    atomic_store(&hook_action, action);
    kvmux_server_request_reload(srv);
    for (int i = 0; i < 1000 && atomic_load(&hook_action) != 0; i++) usleep(10000);
    if (atomic_load(&hook_rc) != 0) return -1;
    for (int i = 0; i < 1000; i++) {
        if (done()) return 0;
        usleep(10000);
    }
    return -1;
}

static kvmux_migout_info out_info(void) {
    kvmux_migout_info mi;
    kvmux_migout_get_info(&kvmux__repl_cluster(srv)->out, &mi);
    return mi;
}
static int map_applied(void) { return atomic_load(&kvmux__repl_cluster(srv)->epoch) == 1; }
static int copying(void) { return out_info().state == KVMUX_MIGOUT_COPYING; }
static int fenced(void) { return out_info().state == KVMUX_MIGOUT_FENCED; }
static int no_record(void) { return out_info().state == KVMUX_MIGOUT_NONE; }

/* One request on a new raw connection of version v: its status, value
 * (NUL-terminated, cut to cap - 1) in val. */
static int call(int v, uint8_t op, const char *key, const char *value, char *val, size_t cap) {
    uint16_t port = kvmux_server_port(srv);
    int fd = test_connect_raw(port, 5000);
    REQUIRE(fd >= 0);
    REQUIRE(test_raw_handshake_version(fd, v) == v);
    static const uint8_t ttl[8];
    int set = op == KVMUX_OP_SET;
    REQUIRE(test_send_request(fd, (uint8_t)v, 7, op, set ? ttl : NULL, set ? 8 : 0, key, value,
                              value ? (uint32_t)strlen(value) : 0) == 0);
    static uint8_t buf[1 << 17];
    kvmux_frame f;
    REQUIRE(test_read_frame(fd, buf, sizeof buf, &f) > 0);
    close(fd);
    size_t n = f.value_len < cap ? f.value_len : cap - 1;
    memcpy(val, f.value, n);
    val[n] = '\0';
    return f.code;
}

static const char *key_in(int in_r, char *buf, size_t cap) {
    for (int j = 0;; j++) {
        snprintf(buf, cap, "mk:%d", j);
        if ((kvmux_slot(buf, strlen(buf)) <= LAST) == (in_r != 0)) return buf;
    }
}

/* GET /metrics: the body (NUL-terminated, cut to cap - 1). */
static void metrics(char *out, size_t cap) {
    int fd = test_connect_raw(kvmux_server_metrics_port(srv), 5000);
    REQUIRE(fd >= 0);
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    REQUIRE(test_write_all(fd, req, sizeof req - 1) == 0);
    size_t n = 0;
    for (ssize_t r; n + 1 < cap && (r = read(fd, out + n, cap - 1 - n)) > 0;) n += (size_t)r;
    out[n] = '\0';
    close(fd);
}

/* A v3 connection whose HELLO carries session id sid. */
static int session_conn(uint64_t sid) {
    int fd = test_connect_raw(kvmux_server_port(srv), 5000);
    REQUIRE(fd >= 0);
    kvmux_session s;
    kvmux_settings st;
    kvmux_settings_default(&st);
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, &st);
    s.max_version = 3;
    uint8_t out[KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 128];
    size_t n = kvmux_session_encode_hello(&s, out, "migsrv");
    n = kvmux_hello_append_session(out, n, sid);
    REQUIRE(test_write_all(fd, out, n) == 0);
    static uint8_t in[4096];
    kvmux_frame f;
    REQUIRE(test_read_frame(fd, in, sizeof in, &f) > 0 && f.type == KVMUX_FRAME_HELLO_ACK);
    return fd;
}

/* SET key=value as write seq (RETRY bit included) of fd's session: the
 * status, the version when OK. */
static int session_set(int fd, uint64_t seq, const char *key, const char *value,
                       uint64_t *version) {
    static const uint8_t ttl[8];
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = 3;
    f.type = KVMUX_FRAME_REQUEST;
    f.flags = KVMUX_FLAG_SESSION;
    f.request_id = 9;
    f.code = KVMUX_OP_SET;
    f.extras = ttl;
    f.extras_len = 8;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)strlen(key);
    f.value = (const uint8_t *)value;
    f.value_len = (uint32_t)strlen(value);
    f.session_seq = seq;
    static uint8_t out[4096], in[4096];
    REQUIRE(kvmux_frame_size(&f) <= sizeof out);
    size_t n = kvmux_frame_encode(out, &f);
    REQUIRE(test_write_all(fd, out, n) == 0);
    kvmux_frame r;
    REQUIRE(test_read_frame(fd, in, sizeof in, &r) > 0);
    *version = r.code == KVMUX_STATUS_OK && r.extras_len >= 8 ? kvmux_load_u64be(r.extras) : 0;
    return r.code;
}

static void *run(void *arg) {
    (void)arg;
    kvmux_server_run(srv);
    return NULL;
}

int main(void) {
    char dir[] = "/tmp/kvmux-migsrv-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    uint16_t rport = free_port(), cport = free_port();
    char peers[128];
    snprintf(peers, sizeof peers, "1=127.0.0.1:%u/127.0.0.1:%u", rport, cport);
    kvmux_server_config cfg;
    kvmux_server_config_init(&cfg);
    cfg.port = cport;
    cfg.replica_id = 1;
    cfg.replica_dir = dir;
    cfg.peers = peers;
    cfg.bootstrap = 1;
    cfg.cluster_group = 1;
    cfg.metrics_addr = "127.0.0.1:0";
    char err[256] = "";
    if (kvmux_server_new(&srv, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "migrate_server_test: server: %s\n", err);
        REQUIRE(0);
    }
    kvmux_server_set_reload_hook(srv, hook, NULL);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, run, NULL) == 0);
    int lead = 0;
    for (int i = 0; i < 1000 && !(lead = kvmux__repl_is_leader(srv)); i++) usleep(10000);
    REQUIRE(lead);

    /* Map epoch 1: every slot group 1's (this one), group 2 listed. */
    char text[256];
    snprintf(text, sizeof text, "epoch 1\ngroup 1 127.0.0.1:%u\ngroup 2 127.0.0.1:1\n"
             "slots 0-16383 1\n", cport);
    kvmux_map *m = malloc(sizeof *m);
    REQUIRE(m != NULL);
    if (kvmux_map_parse_text(m, text, err, sizeof err) != 0) {
        fprintf(stderr, "migrate_server_test: map: %s\n", err);
        REQUIRE(0);
    }
    map_len = kvmux_map_encode(m, map_buf, sizeof map_buf);
    free(m);
    REQUIRE(map_len > 0);
    REQUIRE(run_action(1, map_applied) == 0);

    char k[32], out[32], val[256], want[96];
    key_in(1, k, sizeof k);
    key_in(0, out, sizeof out);
    uint16_t slot = kvmux_slot(k, strlen(k));
    CHECK_EQ(call(3, KVMUX_OP_SET, k, "before", val, sizeof val), KVMUX_STATUS_OK);
    CHECK_EQ(run_action(2, copying), 0);
    CHECK_EQ(call(3, KVMUX_OP_SET, k, "during", val, sizeof val), KVMUX_STATUS_OK);
    CHECK_EQ(out_info().dirty_keys, 1);
    /* Session write seq 1 to k2 in R, applied before the fence. */
    char k2[32];
    for (int j = 0;; j++) {
        snprintf(k2, sizeof k2, "sk:%d", j);
        if (kvmux_slot(k2, strlen(k2)) <= LAST) break;
    }
    int sfd = session_conn(0x5eed);
    uint64_t v1 = 0, vx = 0;
    CHECK_EQ(session_set(sfd, 1, k2, "s1", &v1), KVMUX_STATUS_OK);
    CHECK(v1 > 0);
    /* A WAIT parked on k (at its current version, 30 s) before the fence
     * is answered TRY_AGAIN by the fence's apply. */
    int wfd = test_connect_raw(kvmux_server_port(srv), 5000);
    REQUIRE(wfd >= 0);
    REQUIRE(test_raw_handshake_version(wfd, 3) == 3);
    static uint8_t wbuf[1 << 16];
    kvmux_frame wf;
    REQUIRE(test_send_request(wfd, 3, 1, KVMUX_OP_EXISTS, NULL, 0, k, NULL, 0) == 0);
    REQUIRE(test_read_frame(wfd, wbuf, sizeof wbuf, &wf) > 0 && wf.extras_len >= 8);
    uint8_t wex[12];
    memcpy(wex, wf.extras, 8);
    kvmux_store_u32be(wex + 8, 30000);
    REQUIRE(test_send_request(wfd, 3, 2, KVMUX_OP_WAIT, wex, 12, k, NULL, 0) == 0);
    usleep(100000); /* parked (a reply now would be read below and fail) */
    CHECK_EQ(run_action(3, fenced), 0);
    int wrc = test_read_frame(wfd, wbuf, sizeof wbuf, &wf);
    CHECK(wrc > 0 && wf.request_id == 2 && wf.code == KVMUX_STATUS_TRY_AGAIN);
    close(wfd);

    kvmux_server_stats st0;
    kvmux_server_get_stats(srv, &st0);
    CHECK_EQ(call(3, KVMUX_OP_GET, k, NULL, val, sizeof val), KVMUX_STATUS_TRY_AGAIN);
    uint16_t s2 = 0;
    uint64_t ep = 0;
    CHECK_EQ(kvmux_try_again_decode((const uint8_t *)val, 10, &s2, &ep), 0);
    CHECK(s2 == slot && ep == 1);
    CHECK_EQ(call(3, KVMUX_OP_SET, k, "after", val, sizeof val), KVMUX_STATUS_TRY_AGAIN);
    CHECK_EQ(call(3, KVMUX_OP_EXISTS, k, NULL, val, sizeof val), KVMUX_STATUS_TRY_AGAIN);
    CHECK_EQ(call(2, KVMUX_OP_GET, k, NULL, val, sizeof val), KVMUX_STATUS_BUSY);
    snprintf(want, sizeof want, "slot %u is being migrated; try again", slot);
    CHECK(strcmp(val, want) == 0);
    CHECK_EQ(call(3, KVMUX_OP_SET, out, "o", val, sizeof val), KVMUX_STATUS_OK);
    /* Sessions at the fence (MIGRATION.md 7): a new write is refused
     * before the log; the resend of seq 1 goes to the log and gets its
     * recorded answer; the resend of seq 2 (never applied) is refused by
     * the state machine without consuming the seq. */
    CHECK_EQ(session_set(sfd, 2, k2, "s2", &vx), KVMUX_STATUS_TRY_AGAIN);
    CHECK_EQ(session_set(sfd, 1 | KVMUX_SESSION_RETRY, k2, "s1", &vx), KVMUX_STATUS_OK);
    CHECK_EQ(vx, v1);
    CHECK_EQ(session_set(sfd, 2 | KVMUX_SESSION_RETRY, k2, "s2", &vx), KVMUX_STATUS_TRY_AGAIN);
    CHECK_EQ(call(3, KVMUX_OP_GET, out, NULL, val, sizeof val), KVMUX_STATUS_OK);
    kvmux_server_stats st1;
    kvmux_server_get_stats(srv, &st1);
    CHECK_EQ(st1.cluster_try_again_migrating - st0.cluster_try_again_migrating, 6);
    CHECK(st0.cluster_try_again_migrating >= 1); /* the WAIT */
    CHECK_EQ(call(3, KVMUX_OP_STATS, "migrate_", NULL, val, sizeof val), KVMUX_STATUS_OK);
    CHECK(strstr(val, "migrate_out_state:fenced") && strstr(val, "migrate_out_id:1\n") &&
          strstr(val, "migrate_dirty_keys:2\n"));
    CHECK_EQ(call(3, KVMUX_OP_STATS, "cluster_try_again_migrating", NULL, val, sizeof val),
             KVMUX_STATUS_OK);
    CHECK(strstr(val, "cluster_try_again_migrating:") != NULL);
    static char mt[1 << 18];
    metrics(mt, sizeof mt);
    CHECK(strstr(mt, "\nkvmux_migrate_dirty_keys 2\n") != NULL);
    CHECK(strstr(mt, "\nkvmux_migrate_out_id 1\n") != NULL);
    CHECK(strstr(mt, "# TYPE kvmux_cluster_try_again_migrating_total counter") != NULL);
    CHECK(strstr(mt, "# HELP kvmux_migrate_dirty_bytes Key bytes") != NULL);

    CHECK_EQ(run_action(4, no_record), 0);
    /* Unfenced: seq 2 applies now (not a duplicate, it was never used). */
    CHECK_EQ(session_set(sfd, 2 | KVMUX_SESSION_RETRY, k2, "s2", &vx), KVMUX_STATUS_OK);
    CHECK(vx > v1);
    close(sfd);
    CHECK_EQ(call(3, KVMUX_OP_GET, k, NULL, val, sizeof val), KVMUX_STATUS_OK);
    CHECK(strstr(val, "during") != NULL);
    CHECK_EQ(call(3, KVMUX_OP_STATS, "migrate_out_state", NULL, val, sizeof val),
             KVMUX_STATUS_OK);
    CHECK(strstr(val, "migrate_out_state:none") != NULL);

    kvmux_server_stop(srv);
    pthread_join(th, NULL);
    kvmux_server_free(srv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
    return test_report();
}
