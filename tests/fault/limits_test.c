/* Hostile peers against the real kvmuxd's limits, over real sockets, each
 * while another client is served: a libkvmux "probe" client runs SET+GET
 * in a thread for the whole of each case and must see no error and make
 * progress (its latencies are printed, never asserted: figures come from
 * bench programs).
 *
 * (a) Slowloris: hundreds of connections that dribble a HELLO one byte
 *     every 50 ms (which would take ~2 s to finish) or send nothing are
 *     all closed with ERROR TIMEOUT after --handshake-timeout (1 s here;
 *     the timer runs from the accept, bytes do not reset it).
 * (b) Settings: a HELLO with the most setting entries a HELLO may carry
 *     (32, KVMUX_MAX_SETTINGS), all unknown ids, is accepted on v1 and v2
 *     (unknown ids are ignored) and so is 32 times a known id (last one
 *     wins); 33 entries is ERROR BAD_LENGTH, a bad value for a known
 *     setting ERROR PROTOCOL, a HELLO after the handshake on v2 ERROR
 *     HANDSHAKE (v1: garbage_test); 500 such max-size HELLOs in a row cost
 *     bounded work (timed, printed).
 * (c) PING flood from many connections at once (server_v2_fault_test
 *     covers one connection): each flooder is cut off (v2 ERROR FLOOD, v1
 *     ERROR PROTOCOL) after at most about a second's worth of PONGs.
 * (d) --max-connections: the slots filled, a burst of 200 more connections
 *     each refused with ERROR TOO_MANY_CONNECTIONS; slots held by
 *     connections that never say HELLO come back after the handshake
 *     timeout. (Per-connection output and outstanding caps with other
 *     clients served: slow_reader_test, credits_test.)
 * (e) Sizes at exactly the limit and one over, v1 and v2 (--max-frame 64K,
 *     --max-key 1K, --max-value 256K, --max-value-v1 32K): key, value,
 *     unfragmented frame, and (v2) a fragmented value's announced total.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_v2_util.h"
#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

#define HANDSHAKE_MS 1000
#define MAX_FRAME 65536u
#define MAX_KEY 1024u
#define MAX_VALUE 262144u
#define MAX_VALUE_V1 32768u
#define PING_RATE 100

static test_server g_srv;

/* ---- the probe: a well-behaved client served throughout ---- */

#define PROBE_MAX 2000000
typedef struct probe {
    uint16_t port;
    pthread_t th;
    atomic_int stop;
    atomic_int started; /* served once, or failed: the case may begin */
    atomic_int served;  /* ops completed so far (ops, readable live) */
    int ops, errors, last_error; /* the probe thread's until joined */
    uint32_t *lat_us; /* one entry per SET+GET pair */
} probe;

static void *probe_main(void *arg) {
    probe *p = arg;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, "127.0.0.1", p->port, NULL) != 0) {
        p->errors++;
        atomic_store(&p->started, 1);
        return NULL;
    }
    while (!atomic_load(&p->stop) && p->ops < PROBE_MAX) {
        char k[32];
        snprintf(k, sizeof k, "probe:%d", p->ops % 64);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int rc = kvmux_set(c, k, strlen(k), "v", 1, 0, NULL, 10000);
        kvmux_value *v = NULL;
        if (rc == 0) rc = kvmux_get(c, k, strlen(k), &v, 10000);
        kvmux_value_free(v);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (rc != 0) {
            p->errors++;
            p->last_error = rc;
            if (kvmux_is_fatal(rc)) break;
        }
        int64_t us = (b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000;
        p->lat_us[p->ops++] = (uint32_t)(us > UINT32_MAX ? UINT32_MAX : us);
        atomic_store(&p->served, p->ops);
        atomic_store(&p->started, 1);
        /* A steady trickle, not a benchmark: leave the CPU to the case. */
        struct timespec d = {0, 2 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
    kvmux_close(c);
    return NULL;
}

static void probe_start(probe *p, uint16_t port) {
    memset(p, 0, sizeof *p);
    p->port = port;
    p->lat_us = malloc(sizeof *p->lat_us * PROBE_MAX);
    REQUIRE(p->lat_us != NULL);
    REQUIRE(pthread_create(&p->th, NULL, probe_main, p) == 0);
    /* Connected and served once before the case starts. */
    for (int i = 0; i < 500 && !atomic_load(&p->started); i++) test_sleep_ms(10);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Stop the probe; it must have been served without error throughout.
 * Writes "probe N ops, p50/p99/max" into out. */
static void probe_stop(probe *p, const char *label, char *out, size_t outlen) {
    /* A short case may end before the probe's next op on a loaded
     * machine: give it (boundedly) the time to finish one more. */
    for (int i = 0; i < 500 && atomic_load(&p->served) < 2; i++)
        test_sleep_ms(10);
    atomic_store(&p->stop, 1);
    pthread_join(p->th, NULL);
    if (p->errors) fprintf(stderr, "%s: probe error %s\n", label, kvmux_strerror(p->last_error));
    CHECK_EQ(p->errors, 0);
    /* probe_start saw one op before the case: more means it was served
     * during (or right after) it. */
    CHECK(p->ops >= 2);
    if (p->ops > 0) {
        qsort(p->lat_us, (size_t)p->ops, sizeof *p->lat_us, cmp_u32);
        snprintf(out, outlen, "normal client %d SET+GET, p50 %u us, p99 %u us, max %u us",
                 p->ops, p->lat_us[p->ops / 2], p->lat_us[(size_t)p->ops * 99 / 100],
                 p->lat_us[p->ops - 1]);
    } else {
        snprintf(out, outlen, "normal client: no op completed");
    }
    free(p->lat_us);
}

/* ---- raw helpers ---- */

/* A HELLO proposing versions 1..maxv with n setting entries of the given
 * ids/values. Returns its length. */
static size_t make_hello(uint8_t *buf, int maxv, const uint16_t *ids, const uint32_t *vals,
                         size_t n) {
    uint8_t ext[2] = {1, (uint8_t)maxv};
    uint8_t set[64 * KVMUX_SETTING_ENTRY_LEN];
    for (size_t i = 0; i < n; i++) {
        set[i * 6] = (uint8_t)(ids[i] >> 8);
        set[i * 6 + 1] = (uint8_t)ids[i];
        kvmux_store_u32be(set + i * 6 + 2, vals[i]);
    }
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = KVMUX_PROTO_VERSION_MIN;
    f.type = KVMUX_FRAME_HELLO;
    f.extras = ext;
    f.extras_len = 2;
    f.key = (const uint8_t *)"limits";
    f.key_len = 6;
    f.value = set;
    f.value_len = (uint32_t)(n * KVMUX_SETTING_ENTRY_LEN);
    return kvmux_frame_encode(buf, &f);
}

/* Read one frame; expect an ERROR with code, then the close. */
static void expect_error_close(int fd, uint8_t code, const char *what) {
    uint8_t in[4096];
    kvmux_frame f;
    int n = test_read_frame(fd, in, sizeof in, &f);
    int ok = n > 0 && f.type == KVMUX_FRAME_ERROR && f.code == code;
    if (!ok)
        fprintf(stderr, "%s: wanted ERROR %s, got %s\n", what, kvmux_wire_error_name(code),
                n > 0 ? (f.type == KVMUX_FRAME_ERROR ? kvmux_wire_error_name(f.code) : "a non-ERROR frame")
                      : "nothing");
    CHECK(ok);
    CHECK(test_wait_closed(fd, 3000));
}

/* ---- (a) slowloris ---- */

typedef struct slow {
    int fd;
    int dribble;        /* sends a HELLO 1 byte per tick */
    size_t sent;
    int64_t opened, closed;
    uint8_t in[256];
    size_t in_len;
    int reset;          /* closed by RST before we read anything */
} slow;

static void test_slowloris(void) {
    int n = (int)(200 * test_scale());
    if (n < 20) n = 20;
    int silent = n / 4;
    slow *s = calloc((size_t)n, sizeof *s);
    REQUIRE(s != NULL);
    uint8_t hello[256];
    uint16_t ids[4] = {1, 2, 3, 4};
    uint32_t vals[4] = {MAX_FRAME, 16, MAX_KEY, MAX_VALUE_V1};
    size_t hlen = make_hello(hello, 2, ids, vals, 4);
    probe p;
    probe_start(&p, g_srv.port);
    for (int i = 0; i < n; i++) {
        s[i].fd = test_connect_raw(g_srv.port, 3000);
        REQUIRE(s[i].fd >= 0);
        s[i].opened = test_now_ms();
        s[i].dribble = i >= silent;
    }
    int open = n;
    int64_t start = test_now_ms(), last_tick = 0;
    struct pollfd *pf = calloc((size_t)n, sizeof *pf);
    REQUIRE(pf != NULL);
    while (open > 0 && test_now_ms() - start < HANDSHAKE_MS + 8000) {
        int64_t now = test_now_ms();
        if (now - last_tick >= 50) {
            last_tick = now;
            for (int i = 0; i < n; i++)
                if (s[i].dribble && !s[i].closed && s[i].sent < hlen &&
                    send(s[i].fd, hello + s[i].sent, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
                    s[i].sent++;
        }
        int k = 0;
        for (int i = 0; i < n; i++) {
            pf[i].fd = s[i].closed ? -1 : s[i].fd;
            pf[i].events = POLLIN;
            pf[i].revents = 0;
        }
        if (poll(pf, (nfds_t)n, 10) <= 0) continue;
        for (int i = 0; i < n; i++) {
            if (!pf[i].revents) continue;
            uint8_t buf[512];
            ssize_t r = recv(s[i].fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r > 0) {
                size_t room = sizeof s[i].in - s[i].in_len;
                size_t c = (size_t)r < room ? (size_t)r : room;
                memcpy(s[i].in + s[i].in_len, buf, c);
                s[i].in_len += c;
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            s[i].closed = test_now_ms();
            s[i].reset = r < 0 && s[i].in_len == 0;
            open--;
            k++;
        }
    }
    free(pf);
    char pr[256];
    probe_stop(&p, "slowloris", pr, sizeof pr);
    int64_t dmin = INT64_MAX, dmax = 0;
    int with_error = 0, resets = 0, completed_hello = 0;
    for (int i = 0; i < n; i++) {
        CHECK(s[i].closed != 0);
        int64_t d = (s[i].closed ? s[i].closed : test_now_ms()) - s[i].opened;
        if (d < dmin) dmin = d;
        if (d > dmax) dmax = d;
        if (s[i].sent == hlen) completed_hello++;
        kvmux_frame f;
        if (s[i].in_len > 0 &&
            kvmux_frame_decode(s[i].in, s[i].in_len, 4096, &f) > 0 &&
            f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_TIMEOUT)
            with_error++;
        resets += s[i].reset;
        close(s[i].fd);
    }
    printf("slowloris: %d conns (%d dribbling 1 B per 50 ms, %d silent) closed after %lld..%lld ms "
           "(--handshake-timeout %d), %d with ERROR TIMEOUT, %d reset first; %s\n",
           n, n - silent, silent, (long long)dmin, (long long)dmax, HANDSHAKE_MS, with_error,
           resets, pr);
    /* Bytes never reset the timer: nobody got to finish the HELLO. */
    CHECK_EQ(completed_hello, 0);
    CHECK(dmin >= HANDSHAKE_MS - 100);
    CHECK(dmax <= HANDSHAKE_MS + 5000);
    /* An RST can overtake the ERROR when a dribbled byte crosses the
     * close; the rest must carry the precise code. */
    CHECK(with_error + resets == n);
    CHECK(with_error >= n * 9 / 10);
    free(s);
}

/* ---- (b) settings ---- */

/* Connect, send hello (len bytes), read the answer frame into *f (buf).
 * Returns the fd (caller closes) or -1. */
static int hello_exchange(const uint8_t *hello, size_t len, uint8_t *buf, size_t cap,
                          kvmux_frame *f) {
    int fd = test_connect_raw(g_srv.port, 3000);
    if (fd < 0) return -1;
    if (test_write_all(fd, hello, len) != 0 || test_read_frame(fd, buf, cap, f) <= 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_settings(void) {
    probe p;
    probe_start(&p, g_srv.port);
    uint8_t hello[1024], in[4096];
    uint16_t ids[KVMUX_MAX_SETTINGS + 1];
    uint32_t vals[KVMUX_MAX_SETTINGS + 1];
    kvmux_frame f;
    for (int v = 1; v <= 2; v++) {
        /* 32 unknown ids: ignored. */
        for (unsigned i = 0; i <= KVMUX_MAX_SETTINGS; i++) {
            ids[i] = (uint16_t)(0xff00 + i);
            vals[i] = 0xffffffffu;
        }
        size_t n = make_hello(hello, v, ids, vals, KVMUX_MAX_SETTINGS);
        int fd = hello_exchange(hello, n, in, sizeof in, &f);
        CHECK(fd >= 0);
        /* HELLO_ACK.code is the chosen version. */
        CHECK(fd >= 0 && f.type == KVMUX_FRAME_HELLO_ACK && f.code == v);
        if (fd >= 0) {
            /* The session works: a GET on the negotiated version. */
            kvmux_frame g;
            memset(&g, 0, sizeof g);
            g.version = (uint8_t)v;
            g.type = KVMUX_FRAME_REQUEST;
            g.request_id = 7;
            g.code = KVMUX_OP_GET;
            g.key = (const uint8_t *)"limits:none";
            g.key_len = 11;
            uint8_t out[128];
            size_t gl = kvmux_frame_encode(out, &g);
            CHECK_EQ(test_write_all(fd, out, gl), 0);
            CHECK(test_read_frame(fd, in, sizeof in, &f) > 0 && f.type == KVMUX_FRAME_RESPONSE &&
                  f.request_id == 7 && f.code == KVMUX_STATUS_NOT_FOUND);
            if (v == 2) {
                /* HELLO again after the handshake. */
                CHECK_EQ(test_write_all(fd, hello, n), 0);
                expect_error_close(fd, KVMUX_ERR_HANDSHAKE, "v2 second HELLO");
            }
            close(fd);
        }
        /* 32 times MAX_KEY_SIZE: applied in order, the last one wins. */
        for (unsigned i = 0; i < KVMUX_MAX_SETTINGS; i++) {
            ids[i] = KVMUX_SETTING_MAX_KEY_SIZE;
            vals[i] = 100 + i;
        }
        n = make_hello(hello, v, ids, vals, KVMUX_MAX_SETTINGS);
        fd = hello_exchange(hello, n, in, sizeof in, &f);
        CHECK(fd >= 0 && f.type == KVMUX_FRAME_HELLO_ACK);
        if (fd >= 0) close(fd);
        /* 33 entries: over the limit. */
        for (unsigned i = 0; i <= KVMUX_MAX_SETTINGS; i++) ids[i] = (uint16_t)(0xff00 + i);
        n = make_hello(hello, v, ids, vals, KVMUX_MAX_SETTINGS + 1);
        fd = hello_exchange(hello, n, in, sizeof in, &f);
        CHECK(fd >= 0 && f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_BAD_LENGTH);
        if (fd >= 0) {
            CHECK(test_wait_closed(fd, 3000));
            close(fd);
        }
        /* A known setting with a value outside its range. */
        ids[0] = KVMUX_SETTING_MAX_FRAME_SIZE;
        vals[0] = 100; /* < 4096 */
        n = make_hello(hello, v, ids, vals, 1);
        fd = hello_exchange(hello, n, in, sizeof in, &f);
        CHECK(fd >= 0 && f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_PROTOCOL);
        if (fd >= 0) close(fd);
    }
    /* Bulk: many max-size HELLOs of unknown settings, one after another. */
    int bulk = (int)(500 * test_scale());
    if (bulk < 50) bulk = 50;
    for (unsigned i = 0; i < KVMUX_MAX_SETTINGS; i++) {
        ids[i] = (uint16_t)(1000 + i * 7);
        vals[i] = i;
    }
    size_t n = make_hello(hello, 2, ids, vals, KVMUX_MAX_SETTINGS);
    int64_t t0 = test_now_ms();
    int acks = 0;
    for (int i = 0; i < bulk; i++) {
        int fd = hello_exchange(hello, n, in, sizeof in, &f);
        if (fd >= 0 && f.type == KVMUX_FRAME_HELLO_ACK) acks++;
        if (fd >= 0) close(fd);
    }
    int64_t dt = test_now_ms() - t0;
    char pr[256];
    probe_stop(&p, "settings", pr, sizeof pr);
    CHECK_EQ(acks, bulk);
    printf("settings: %d HELLOs with %u unknown settings each (%zu B) in %lld ms (%.0f us per "
           "handshake incl. connect); %s\n",
           bulk, KVMUX_MAX_SETTINGS, n, (long long)dt, bulk ? dt * 1000.0 / bulk : 0.0, pr);
}

/* ---- (c) PING flood from many connections ---- */

static void test_ping_flood(void) {
    enum { CONNS = 16, PINGS = 300 };
    probe p;
    probe_start(&p, g_srv.port);
    v2conn c[CONNS];
    for (int i = 0; i < CONNS; i++) REQUIRE(v2_connect(&c[i], g_srv.port, 1 + i % 2, NULL) == 0);
    /* Every flooder sends its burst before anyone reads. */
    for (int j = 0; j < PINGS; j++)
        for (int i = 0; i < CONNS; i++) v2_ping(&c[i], (uint32_t)j);
    int max_pongs = 0, cut = 0;
    for (int i = 0; i < CONNS; i++) {
        kvmux_frame f;
        int pongs = 0, err = -1;
        for (int k = 0; k < PINGS + 2; k++) {
            int r = v2_read(&c[i], &f, 3000);
            if (r != 1) break;
            if (f.type == KVMUX_FRAME_PONG) pongs++;
            if (f.type == KVMUX_FRAME_ERROR) {
                err = f.code;
                break;
            }
        }
        int want = c[i].version == 2 ? KVMUX_ERR_FLOOD : KVMUX_ERR_PROTOCOL;
        if (err != want)
            fprintf(stderr, "ping flood conn %d (v%d): error %d after %d PONGs\n", i,
                    c[i].version, err, pongs);
        CHECK_EQ(err, want);
        /* The cap is a rate: about a second's worth, never the whole flood. */
        CHECK(pongs <= 2 * PING_RATE + 10);
        if (pongs > max_pongs) max_pongs = pongs;
        cut += err == want;
        CHECK(test_wait_closed(c[i].fd, 3000));
        v2_close(&c[i], 0);
    }
    char pr[256];
    probe_stop(&p, "ping flood", pr, sizeof pr);
    printf("ping flood: %d conns x %d PINGs (v1 and v2) at --max-ping-rate %d: %d cut off, "
           "at most %d PONGs each; %s\n",
           CONNS, PINGS, PING_RATE, cut, max_pongs, pr);
}

/* ---- (d) connection limit ---- */

static void test_connection_flood(void) {
    enum { MAXC = 16 };
    test_server s;
    char maxc[16];
    snprintf(maxc, sizeof maxc, "%d", MAXC);
    const char *const args[] = {"--max-connections", maxc, "--handshake-timeout", "1000", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    v2_track_server(&s);
    probe p;
    probe_start(&p, s.port); /* slot 1 */
    int held[MAXC];
    int nheld = 0;
    for (int i = 1; i < MAXC; i++) {
        held[nheld] = test_connect_raw(s.port, 3000);
        REQUIRE(held[nheld] >= 0);
        REQUIRE(test_raw_handshake(held[nheld]) == 0);
        nheld++;
    }
    int extra = (int)(200 * test_scale());
    if (extra < 20) extra = 20;
    int refused = 0;
    int64_t t0 = test_now_ms();
    for (int i = 0; i < extra; i++) {
        int fd = test_connect_raw(s.port, 3000);
        if (fd < 0) continue;
        uint8_t in[2048];
        kvmux_frame f;
        if (test_read_frame(fd, in, sizeof in, &f) > 0 && f.type == KVMUX_FRAME_ERROR &&
            f.code == KVMUX_ERR_TOO_MANY_CONNECTIONS && test_wait_closed(fd, 3000))
            refused++;
        close(fd);
    }
    int64_t dt = test_now_ms() - t0;
    CHECK_EQ(refused, extra);
    /* Replace the handshaken connections with ones that never say HELLO:
     * they hold their slots only until the handshake timeout. */
    for (int i = 0; i < nheld; i++) close(held[i]);
    int silent = 0;
    int64_t deadline = test_now_ms() + 3000;
    while (silent < nheld && test_now_ms() < deadline) {
        int fd = test_connect_raw(s.port, 3000);
        REQUIRE(fd >= 0);
        /* The server may not have seen the old closes yet: a refusal
         * arrives at once, an accepted silent connection stays quiet. */
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) == 0) {
            held[silent++] = fd;
        } else {
            close(fd);
            test_sleep_ms(20);
        }
    }
    CHECK_EQ(silent, nheld);
    int64_t t1 = test_now_ms();
    int fd = -1;
    while (test_now_ms() - t1 < 5000) {
        fd = test_connect_raw(s.port, 3000);
        REQUIRE(fd >= 0);
        if (test_raw_handshake(fd) == 0) break;
        close(fd);
        fd = -1;
        test_sleep_ms(50);
    }
    int64_t freed = test_now_ms() - t1;
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    for (int i = 0; i < silent; i++) close(held[i]);
    char pr[256];
    probe_stop(&p, "connection flood", pr, sizeof pr);
    printf("max connections %d: %d extra connections refused with TOO_MANY_CONNECTIONS in %lld ms; "
           "%d silent slot holders freed, a new client admitted after %lld ms; %s\n",
           MAXC, refused, (long long)dt, silent, (long long)freed, pr);
    CHECK(freed <= 1000 + 3000);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

/* ---- (e) sizes at the limit and one over ---- */

static uint8_t g_big[MAX_VALUE + 2];

/* SET key (klen bytes of 'k') = vlen bytes, one frame; the answer's status,
 * or -1 if the connection answered with something else. */
static int set_once(v2conn *c, uint32_t id, size_t klen, uint32_t vlen) {
    char key[MAX_KEY + 2];
    memset(key, 'k', klen);
    key[klen] = 0;
    uint8_t ttl[8] = {0};
    if (v2_send(c, KVMUX_FRAME_REQUEST, 0, id, KVMUX_OP_SET, ttl, 8, key, (uint16_t)klen, g_big,
                vlen, 0, 0) != 0)
        return -1;
    kvmux_frame f;
    if (v2_read_until(c, &f, KVMUX_FRAME_RESPONSE, id, 5000, NULL, NULL) != 1) return -1;
    return f.code;
}

/* The frame size of a SET with klen/vlen. */
static uint32_t set_frame_len(size_t klen, uint32_t vlen) {
    return (uint32_t)(KVMUX_FRAME_HDR_LEN + 8 + klen + vlen);
}

static void test_sizes(void) {
    memset(g_big, 'z', sizeof g_big);
    for (int v = 1; v <= 2; v++) {
        v2conn c;
        REQUIRE(v2_connect(&c, g_srv.port, v, NULL) == 0 && c.version == v);
        uint32_t vmax = v == 1 ? MAX_VALUE_V1 : MAX_FRAME - KVMUX_FRAME_HDR_LEN - 8 - 4;
        CHECK_EQ(set_once(&c, 1, MAX_KEY, 1), KVMUX_STATUS_OK);
        CHECK_EQ(set_once(&c, 2, MAX_KEY + 1, 1), KVMUX_STATUS_TOO_LARGE);
        if (v == 1) {
            CHECK_EQ(set_once(&c, 3, 4, MAX_VALUE_V1), KVMUX_STATUS_OK);
            CHECK_EQ(set_once(&c, 4, 4, MAX_VALUE_V1 + 1), KVMUX_STATUS_TOO_LARGE);
        }
        /* A frame of exactly --max-frame: decoded (v1: its value is over
         * the v1 value limit, so request-level TOO_LARGE; v2: stored). */
        uint32_t vfill = MAX_FRAME - set_frame_len(4, 0);
        CHECK_EQ(set_frame_len(4, vfill), MAX_FRAME);
        CHECK_EQ(set_once(&c, 5, 4, vfill), v == 1 ? KVMUX_STATUS_TOO_LARGE : KVMUX_STATUS_OK);
        (void)vmax;
        /* Still open after all of that. */
        CHECK_EQ(set_once(&c, 6, 3, 1), KVMUX_STATUS_OK);
        /* One byte over --max-frame: connection-level, from the header. */
        char key[8] = "kkkk";
        uint8_t ttl[8] = {0};
        CHECK_EQ(v2_send(&c, KVMUX_FRAME_REQUEST, 0, 7, KVMUX_OP_SET, ttl, 8, key, 4, g_big,
                         vfill + 1, 0, 0),
                 0);
        kvmux_frame f;
        int r = v2_read(&c, &f, 5000);
        CHECK(r == 1 && f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_FRAME_TOO_LARGE);
        CHECK(test_wait_closed(c.fd, 3000));
        v2_close(&c, 0);
    }
    /* v2 fragmented: total exactly --max-value is stored, +1 refused. */
    for (int over = 0; over <= 1; over++) {
        v2conn c;
        REQUIRE(v2_connect(&c, g_srv.port, 2, NULL) == 0 && c.version == 2);
        uint32_t total = MAX_VALUE + (uint32_t)over;
        uint32_t chunk = 32 * 1024;
        REQUIRE(v2_set_first(&c, 9, "limits:frag", g_big, chunk, total, 0, 0) == 0);
        kvmux_frame f;
        if (over) {
            int r = v2_read(&c, &f, 5000);
            CHECK(r == 1 && f.type == KVMUX_FRAME_ERROR && f.code == KVMUX_ERR_FRAME_TOO_LARGE);
            CHECK(test_wait_closed(c.fd, 3000));
        } else {
            for (uint32_t sent = chunk; sent < total; sent += chunk) {
                uint32_t k = total - sent < chunk ? total - sent : chunk;
                REQUIRE(v2_continuation(&c, 9, g_big + sent, k, sent + k < total) == 0);
            }
            CHECK(v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 9, 5000, NULL, NULL) == 1 &&
                  f.code == KVMUX_STATUS_OK);
        }
        v2_close(&c, 0);
    }
    /* Read the limit-size values back through the client library (v2:
     * fragmented reply, reassembled). */
    kvmux_client *cl = NULL;
    REQUIRE(kvmux_connect(&cl, "127.0.0.1", g_srv.port, NULL) == 0);
    kvmux_value *val = NULL;
    CHECK_EQ(kvmux_get(cl, "limits:frag", 11, &val, 5000), 0);
    CHECK(val && val->len == MAX_VALUE && val->data[MAX_VALUE - 1] == 'z');
    kvmux_value_free(val);
    val = NULL;
    CHECK_EQ(kvmux_get(cl, "kkkk", 4, &val, 5000), 0);
    CHECK(val && val->len == MAX_FRAME - set_frame_len(4, 0));
    kvmux_value_free(val);
    kvmux_close(cl);
    printf("sizes: key %u/%u+1, v1 value %u/%u+1, frame %u/%u+1 (v1, v2), v2 fragmented value "
           "%u/%u+1: each accepted at the limit, refused one over\n",
           MAX_KEY, MAX_KEY, MAX_VALUE_V1, MAX_VALUE_V1, MAX_FRAME, MAX_FRAME, MAX_VALUE,
           MAX_VALUE);
}

int main(void) {
    char hs[16], fr[16], key[16], val[16], val1[16], ping[16];
    snprintf(hs, sizeof hs, "%d", HANDSHAKE_MS);
    snprintf(fr, sizeof fr, "%u", MAX_FRAME);
    snprintf(key, sizeof key, "%u", MAX_KEY);
    snprintf(val, sizeof val, "%u", MAX_VALUE);
    snprintf(val1, sizeof val1, "%u", MAX_VALUE_V1);
    snprintf(ping, sizeof ping, "%d", PING_RATE);
    const char *const args[] = {"--handshake-timeout", hs,   "--max-frame", fr,
                                "--max-key",           key,  "--max-value", val,
                                "--max-value-v1",      val1, "--max-ping-rate", ping,
                                "--fragment-size",     "16K", NULL};
    REQUIRE(test_server_start(&g_srv, args) == 0);
    v2_track_server(&g_srv);
    test_slowloris();
    test_settings();
    test_ping_flood();
    test_sizes();
    test_connection_flood();
    CHECK_EQ(test_server_stop(&g_srv, 10000), 0);
    return test_report();
}
