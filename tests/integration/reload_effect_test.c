/* SIGHUP reload of the per-connection limits, on a real kvmuxd (two loop
 * threads, --config file, --log-file). Connections opened before the
 * reload keep the limits they started with; connections accepted after it
 * get the new ones; none is dropped by the reload itself. For each
 * option, the new value is observed to take effect on a new connection
 * and the old value on an old one:
 *   --handshake-timeout  new raw socket without HELLO closed; old one
 *                        still open, and its HELLO still succeeds
 *   --idle-timeout       new idle connection closed; old one still serves
 *   --max-wait           new WAIT answers TIMEOUT; old WAIT stays parked
 *   --max-ping-rate      new connection flooding PINGs closed; old served
 *   --max-cancel-rate    same with CANCELs
 *   --max-upload-buffer  third concurrent upload BUSY on the new
 *                        connection; all three complete on the old one
 *   --write-timeout      new v1 connection not reading its output closed
 *                        (write_timeouts counts it); old one drains fully
 *   --close-linger       after an ERROR, the new connection's socket is
 *                        closed (writes fail) within its short linger;
 *                        the old one still lingers (writes accepted)
 *   --busy-poll          applies at once: the server spends CPU spinning
 *                        after a request, then stops after another reload
 * Every reload logs one event=reload.changed line per option, with
 * applies_to=new_connections for the per-connection limits. A
 * --max-upload-buffer below the running --max-value fails the reload
 * (event=reload.failed) and changes nothing. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmux.h"
#include "ops_util.h"
#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

static char cfg[128], logp[128];
static char logbuf[1 << 20];
static test_server srv;

/* Per-connection options in the order of the reload.changed lines. */
static const char *const per_conn[] = {"handshake-timeout", "max-wait", "close-linger",
                                       "idle-timeout", "write-timeout", "max-ping-rate",
                                       "max-cancel-rate", "max-upload-buffer"};
#define NPER (sizeof per_conn / sizeof per_conn[0])

static void write_cfg(int strict, unsigned busy_poll_us) {
    char text[1024];
    snprintf(text, sizeof text,
             "# reload_effect_test\nmax-value 64K\n"
             "handshake-timeout %s\nidle-timeout %s\nwrite-timeout %s\n"
             "close-linger %s\nmax-wait %s\nmax-ping-rate %s\nmax-cancel-rate %s\n"
             "max-upload-buffer %s\nbusy-poll %u\n",
             strict ? "300" : "60000", strict ? "1500" : "0", strict ? "300" : "0",
             strict ? "100" : "5000", strict ? "300" : "3600000", strict ? "20" : "0",
             strict ? "20" : "0", strict ? "128K" : "1M", busy_poll_us);
    REQUIRE(ops_write_file(cfg, text) == 0);
}

static void reload_and_wait(int nth) {
    CHECK_EQ(kill(srv.pid, SIGHUP), 0);
    REQUIRE(ops_wait_file_count(logp, "event=reload.done", nth, 10000));
}

static kvmux_client *lib_connect(void) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 5000;
    o.request_timeout_ms = 5000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", srv.port, &o) == 0);
    return c;
}

static uint64_t stat_of(kvmux_client *c, const char *name) {
    kvmux_value *v = NULL;
    if (kvmux_stats(c, name, &v, 5000) != 0) return UINT64_MAX;
    uint64_t r = test_stat_value(v->data, v->len, name);
    kvmux_value_free(v);
    return r;
}

static int lib_roundtrip(kvmux_client *c) {
    uint64_t ver = 0;
    return kvmux_set(c, "keep", 4, "v", 1, 0, &ver, 5000);
}

/* GET key as request id on c: the RESPONSE's status (PONGs and other
 * frames before it skipped), or -1. */
static int get_status(v2conn *c, uint32_t id, const char *key) {
    kvmux_frame f;
    if (v2_get(c, id, key) != 0) return -1;
    if (v2_read_until(c, &f, KVMUX_FRAME_RESPONSE, id, 5000, NULL, NULL) != 1) return -1;
    return f.code;
}

/* Read frames until EOF (1), or timeout / error (0). */
static int v2_until_eof(v2conn *c, int timeout_ms) {
    int64_t end = test_now_ms() + timeout_ms;
    kvmux_frame f;
    while (test_now_ms() < end) {
        int r = v2_read(c, &f, (int)(end - test_now_ms()));
        if (r == 0) return 1;
        if (r < 0) return 0;
    }
    return 0;
}

/* The old/new pairs, each opened on its own side of the reload: the old
 * ones all before it; each new one just before its check (the new idle
 * timeout would close the others while they wait their turn). */
typedef struct side {
    int hs_fd;          /* raw, no HELLO yet */
    v2conn idle, wait, ping, cancel, upload, linger;
    int wt_fd;          /* v1, will not read its output */
} side;

static void open_old_side(side *s) {
    s->hs_fd = test_connect_raw(srv.port, 5000);
    REQUIRE(s->hs_fd >= 0);
    REQUIRE(v2_connect(&s->idle, srv.port, 2, NULL) == 0);
    REQUIRE(v2_connect(&s->wait, srv.port, 2, NULL) == 0);
    REQUIRE(v2_connect(&s->ping, srv.port, 2, NULL) == 0);
    REQUIRE(v2_connect(&s->cancel, srv.port, 2, NULL) == 0);
    REQUIRE(v2_connect(&s->upload, srv.port, 2, NULL) == 0);
    REQUIRE(v2_connect(&s->linger, srv.port, 2, NULL) == 0);
    s->wt_fd = test_connect_raw(srv.port, 5000);
    REQUIRE(s->wt_fd >= 0);
    REQUIRE(test_raw_handshake(s->wt_fd) == 0);
}

static void check_handshake(side *old, side *nw) {
    nw->hs_fd = test_connect_raw(srv.port, 5000);
    REQUIRE(nw->hs_fd >= 0);
    CHECK_EQ(test_wait_closed(nw->hs_fd, 5000), 1);      /* 300 ms now */
    CHECK_EQ(test_wait_closed(old->hs_fd, 200), 0);      /* 60 s before */
    CHECK_EQ(test_raw_handshake(old->hs_fd), 0);
    close(nw->hs_fd);
    close(old->hs_fd);
}

static void check_idle(side *old, side *nw) {
    REQUIRE(v2_connect(&nw->idle, srv.port, 2, NULL) == 0);
    CHECK_EQ(v2_until_eof(&nw->idle, 5000), 1); /* ERROR TIMEOUT, then EOF */
    test_sleep_ms(300);
    CHECK_EQ(get_status(&old->idle, 1, "idle"), KVMUX_STATUS_NOT_FOUND);
}

static void check_wait(side *old, side *nw) {
    REQUIRE(v2_connect(&nw->wait, srv.port, 2, NULL) == 0);
    REQUIRE(v2_wait(&old->wait, 7, "w-old", 0, 10000) == 0);
    REQUIRE(v2_wait(&nw->wait, 7, "w-new", 0, 10000) == 0);
    kvmux_frame f;
    CHECK_EQ(v2_read_until(&nw->wait, &f, KVMUX_FRAME_RESPONSE, 7, 5000, NULL, NULL), 1);
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT); /* capped at 300 ms */
    /* The old one is still parked (cap one hour): cancel it. */
    CHECK_EQ(v2_read_until(&old->wait, &f, KVMUX_FRAME_RESPONSE, 7, 300, NULL, NULL), -1);
    REQUIRE(v2_cancel(&old->wait, 7) == 0);
    CHECK_EQ(v2_read_until(&old->wait, &f, KVMUX_FRAME_RESPONSE, 7, 5000, NULL, NULL), 1);
    CHECK_EQ(f.code, KVMUX_STATUS_CANCELED);
}

/* 200 PINGs (or CANCELs of ids never used) in one burst. */
static void burst(v2conn *c, int pings) {
    for (uint32_t i = 1; i <= 200; i++)
        if ((pings ? v2_ping(c, i) : v2_cancel(c, 1000 + i)) != 0) break;
}

static void check_rates(side *old, side *nw) {
    REQUIRE(v2_connect(&nw->ping, srv.port, 2, NULL) == 0);
    burst(&nw->ping, 1);
    burst(&old->ping, 1);
    CHECK_EQ(v2_until_eof(&nw->ping, 5000), 1); /* ERROR FLOOD, then EOF */
    CHECK_EQ(get_status(&old->ping, 2, "ping"), KVMUX_STATUS_NOT_FOUND);
    REQUIRE(v2_connect(&nw->cancel, srv.port, 2, NULL) == 0);
    burst(&nw->cancel, 0);
    burst(&old->cancel, 0);
    CHECK_EQ(v2_until_eof(&nw->cancel, 5000), 1);
    CHECK_EQ(get_status(&old->cancel, 2, "cancel"), KVMUX_STATUS_NOT_FOUND);
}

/* Three uploads of 60,000 bytes begun at once: 180,000 bytes reserved. */
static void begin_uploads(v2conn *c, const uint8_t *val) {
    for (uint32_t id = 1; id <= 3; id++) {
        char key[16];
        snprintf(key, sizeof key, "up%u", id);
        REQUIRE(v2_set_first(c, id, key, val, 1000, 60000, 0, 0) == 0);
    }
}

static void check_upload(side *old, side *nw) {
    REQUIRE(v2_connect(&nw->upload, srv.port, 2, NULL) == 0);
    uint8_t *val = test_pattern(60000, 7);
    begin_uploads(&nw->upload, val);
    begin_uploads(&old->upload, val);
    kvmux_frame f;
    CHECK_EQ(v2_read_until(&nw->upload, &f, KVMUX_FRAME_RESPONSE, 3, 5000, NULL, NULL), 1);
    CHECK_EQ(f.code, KVMUX_STATUS_BUSY); /* 128 KiB now */
    for (uint32_t id = 1; id <= 3; id++)  /* 1 MiB before: all three complete */
        REQUIRE(v2_continuation(&old->upload, id, val + 1000, 59000, 0) == 0);
    for (uint32_t id = 1; id <= 3; id++) {
        CHECK_EQ(v2_read_until(&old->upload, &f, KVMUX_FRAME_RESPONSE, id, 5000, NULL, NULL),
                 1);
        CHECK_EQ(f.code, KVMUX_STATUS_OK);
    }
    free(val);
}

/* 400 GETs of a 60,000-byte value (24 MB) that the client does not read. */
static void flood_gets(int fd) {
    for (uint32_t id = 2; id < 402; id++)
        if (test_send_request(fd, 1, id, KVMUX_OP_GET, NULL, 0, "big", NULL, 0) != 0) break;
}

static void check_write_timeout(side *old, side *nw, kvmux_client *keep) {
    uint8_t *val = test_pattern(60000, 9);
    nw->wt_fd = test_connect_raw(srv.port, 5000);
    REQUIRE(nw->wt_fd >= 0);
    REQUIRE(test_raw_handshake(nw->wt_fd) == 0);
    uint8_t extras[8] = {0}; /* no TTL */
    REQUIRE(test_send_request(old->wt_fd, 1, 1, KVMUX_OP_SET, extras, 8, "big", val,
                              60000) == 0);
    static uint8_t fb[1 << 17];
    kvmux_frame f;
    REQUIRE(test_read_frame(old->wt_fd, fb, sizeof fb, &f) > 0);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    uint64_t before = stat_of(keep, "write_timeouts");
    flood_gets(nw->wt_fd);
    flood_gets(old->wt_fd);
    test_sleep_ms(1500); /* neither reads: both outputs are stuck */
    CHECK_EQ(test_wait_closed(nw->wt_fd, 10000), 1);
    CHECK_EQ(stat_of(keep, "write_timeouts"), before + 1);
    /* The old one still delivers every response: all equal in size, so
     * read the first frame, then the other 399 frames' bytes in bulk
     * (test_read_frame reads a byte at a time). */
    int n = test_read_frame(old->wt_fd, fb, sizeof fb, &f);
    CHECK(n > 60000);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    uint64_t want = n > 0 ? (uint64_t)n * 399 : 0, got = 0;
    while (got < want) {
        size_t ask = want - got < sizeof fb ? (size_t)(want - got) : sizeof fb;
        ssize_t r = recv(old->wt_fd, fb, ask, 0);
        if (r <= 0) break;
        got += (uint64_t)r;
    }
    CHECK_EQ(got, want);
    REQUIRE(test_send_request(old->wt_fd, 1, 500, KVMUX_OP_GET, NULL, 0, "none", NULL, 0) == 0);
    REQUIRE(test_read_frame(old->wt_fd, fb, sizeof fb, &f) > 0);
    CHECK_EQ(f.request_id, 500u);
    CHECK_EQ(f.code, KVMUX_STATUS_NOT_FOUND);
    close(nw->wt_fd);
    close(old->wt_fd);
    free(val);
}

/* A write on a socket the server closed draws an RST, and the next one
 * fails: 1 if that happened. */
static int peer_closed_on_write(int fd) {
    for (int i = 0; i < 3; i++) {
        if (send(fd, "xxxxxxxx", 8, MSG_NOSIGNAL) < 0) return 1;
        test_sleep_ms(50);
    }
    return 0;
}

static void check_linger(side *old, side *nw) {
    REQUIRE(v2_connect(&nw->linger, srv.port, 2, NULL) == 0);
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    test_put_header(h, 0x00, 2, KVMUX_FRAME_REQUEST, 0, 1, KVMUX_OP_GET, 0, 0, 0); /* bad magic */
    REQUIRE(test_write_all(nw->linger.fd, h, sizeof h) == 0);
    REQUIRE(test_write_all(old->linger.fd, h, sizeof h) == 0);
    CHECK_EQ(v2_until_eof(&nw->linger, 5000), 1);  /* ERROR, then the server's FIN */
    CHECK_EQ(v2_until_eof(&old->linger, 5000), 1);
    test_sleep_ms(600); /* past the new 100 ms linger, well within the old 5 s */
    CHECK_EQ(peer_closed_on_write(nw->linger.fd), 1);
    CHECK_EQ(peer_closed_on_write(old->linger.fd), 0);
}

static void close_side(side *s) {
    v2_close(&s->idle, 0);
    v2_close(&s->wait, 0);
    v2_close(&s->ping, 0);
    v2_close(&s->cancel, 0);
    v2_close(&s->upload, 0);
    v2_close(&s->linger, 0);
}

/* CPU time (user + system, ms) of pid so far. */
static long cpu_ms(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (ops_read_file(path, buf, sizeof buf) <= 0) return -1;
    const char *p = strrchr(buf, ')'); /* the command may contain spaces */
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* after ")": state, then fields 4..13, then utime (14) and stime (15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

/* CPU the server spends in the 800 ms after one request on c. A loop
 * spinning for the whole window gets 800 ms on an idle machine and still
 * about 200 ms when four other processes compete for each of 2 CPUs. */
static long cpu_after_request(kvmux_client *c) {
    long t0 = cpu_ms(srv.pid);
    CHECK_EQ(lib_roundtrip(c), 0);
    test_sleep_ms(800);
    return cpu_ms(srv.pid) - t0;
}

int main(void) {
    const char *dir = ops_tmpdir();
    REQUIRE(dir != NULL);
    snprintf(cfg, sizeof cfg, "%s/kvmuxd.conf", dir);
    snprintf(logp, sizeof logp, "%s/kvmuxd.log", dir);
    write_cfg(0, 0);
    const char *args[] = {"--config", cfg, "--log-file", logp, "--threads", "2", NULL};
    v2_start_server(&srv, args);
    ops_kill_at_exit(srv.pid);

    kvmux_client *keep = lib_connect();
    CHECK_EQ(lib_roundtrip(keep), 0);
    static side old, nw;
    open_old_side(&old);
    test_sleep_ms(300); /* both loops have attached the old connections */

    /* 1. The strict limits: one reload.changed line per option. */
    write_cfg(1, 0);
    reload_and_wait(1);
    ops_read_file(logp, logbuf, sizeof logbuf);
    for (size_t i = 0; i < NPER; i++) {
        char want[128];
        snprintf(want, sizeof want, "event=reload.changed option=%s applies_to=new_connections",
                 per_conn[i]);
        if (!strstr(logbuf, want)) fprintf(stderr, "missing in the log: %s\n", want);
        CHECK(strstr(logbuf, want) != NULL);
    }
    CHECK_EQ(ops_count(logbuf, "event=reload.kept"), 0);
    CHECK_EQ(ops_count(logbuf, "event=reload.failed"), 0);
    CHECK_EQ(lib_roundtrip(keep), 0);

    check_handshake(&old, &nw);
    check_rates(&old, &nw);
    check_wait(&old, &nw);
    check_upload(&old, &nw);
    check_linger(&old, &nw);
    check_idle(&old, &nw);
    check_write_timeout(&old, &nw, keep);

    /* 2. --busy-poll applies at once, to the open connection too. */
    long idle_cpu = cpu_after_request(keep);
    write_cfg(1, 1000000);
    reload_and_wait(2);
    /* A spinning loop burns most of a core in those 800 ms on an idle
     * machine; on a loaded one (a TSan build beside other tests on 2
     * cores) it may get a small share of one, so a few tries, best kept. */
    long spin_cpu = 0;
    for (int i = 0; i < 5 && spin_cpu < idle_cpu + 100; i++) {
        long t = cpu_after_request(keep);
        if (t > spin_cpu) spin_cpu = t;
    }
    fprintf(stderr, "cpu in 800 ms after a request: busy-poll 0: %ld ms, 1000000 us: %ld ms\n",
            idle_cpu, spin_cpu);
    CHECK(spin_cpu >= idle_cpu + 100);
    write_cfg(1, 0);
    reload_and_wait(3);
    ops_read_file(logp, logbuf, sizeof logbuf);
    CHECK_EQ(ops_count(logbuf, "event=reload.changed option=busy-poll"), 2);
    CHECK_EQ(ops_count(logbuf, "option=busy-poll applies_to"), 0);

    /* 3. An upload buffer below the running --max-value (64K; the file's
     * new 16K cannot apply before a restart) is refused: nothing changes. */
    REQUIRE(ops_write_file(cfg, "max-value 16K\nmax-upload-buffer 32K\nidle-timeout 0\n") == 0);
    CHECK_EQ(kill(srv.pid, SIGHUP), 0);
    CHECK(ops_wait_file_count(logp, "event=reload.failed", 1, 10000));
    ops_read_file(logp, logbuf, sizeof logbuf);
    CHECK(strstr(logbuf, "smaller than the running --max-value 65536") != NULL);
    CHECK_EQ(ops_count(logbuf, "event=reload.changed option=idle-timeout"), 1); /* not again */
    v2conn late;
    REQUIRE(v2_connect(&late, srv.port, 2, NULL) == 0);
    CHECK_EQ(v2_until_eof(&late, 5000), 1); /* still the 1500 ms idle timeout */
    v2_close(&late, 0);

    /* 4. No connection was dropped by a reload: the old ones still work. */
    CHECK_EQ(lib_roundtrip(keep), 0);
    CHECK_EQ(get_status(&old.upload, 10, "up1"), KVMUX_STATUS_OK);
    CHECK_EQ(get_status(&old.wait, 10, "w-old"), KVMUX_STATUS_NOT_FOUND);
    kvmux_close(keep);
    close_side(&nw);
    close_side(&old);
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
    return test_report();
}
