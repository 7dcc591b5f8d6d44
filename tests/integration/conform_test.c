/* kvmuxd against the letter of docs/PROTOCOL.md, over raw sockets and the
 * real server, where it once did otherwise:
 *   - a GET or WAIT reply whose value exceeds the client's MAX_VALUE_SIZE
 *     is TOO_LARGE on v1 and v2, whether the value would fit one frame
 *     (inline or by reference) or be fragmented, and whether the WAIT is
 *     answered at once or after parking (section 7);
 *   - a request whose DEADLINE is 0 is answered TIMEOUT in its opcode's
 *     shape: a WAIT's with the 8-byte current version (0 when absent), as
 *     when it times out after parking; a GET's without extras (section 4);
 *   - an ERROR about a malformed non-REQUEST frame carries the header's
 *     request_id (section 3): an empty CONTINUATION of an open upload, a
 *     CANCEL with a body, WINDOW_UPDATEs with increment 0 or 3 bytes of
 *     extras, PING with the wrong extras (v1 and v2), a CONTINUATION over
 *     MAX_FRAME_SIZE, flags on a CANCEL;
 *   - --maxmemory below what an empty store accounts for is refused at
 *     start-up (exit 2, the minimum named); at exactly that minimum a write
 *     succeeds. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "server_v2_util.h"
#include "testutil.h"

static void skip_nothing(const kvmux_frame *f, void *ud) {
    (void)f;
    (void)ud;
}

/* Answer to request id on c (skipping WINDOW_UPDATEs etc.), REQUIRE'd
 * within 3 s. */
static void answer(v2conn *c, uint32_t id, kvmux_frame *f) {
    REQUIRE(v2_read_until(c, f, KVMUX_FRAME_RESPONSE, id, 3000, skip_nothing, NULL) == 1);
}

static void set_value(v2conn *c, uint32_t id, const char *key, uint32_t len) {
    uint8_t *v = test_pattern(len, len);
    REQUIRE(v2_set(c, id, key, v, len) == 0);
    kvmux_frame f;
    answer(c, id, &f);
    REQUIRE(f.code == KVMUX_STATUS_OK);
    free(v);
}

/* ---- TOO_LARGE against the client's MAX_VALUE_SIZE ---- */

/* One client version, one value length: the client advertises len - 1
 * (refused) and len (served). */
static void too_large_case(uint16_t port, int version, uint32_t len) {
    char key[32];
    snprintf(key, sizeof key, "tl:%d:%u", version, len);
    v2conn w;
    REQUIRE(v2_connect(&w, port, 2, NULL) == 0);
    set_value(&w, 1, key, len);
    for (int fits = 0; fits <= 1; fits++) {
        kvmux_settings st;
        kvmux_settings_default(&st);
        st.max_value_size = fits ? len : len - 1;
        v2conn c;
        REQUIRE(v2_connect(&c, port, version, &st) == 0);
        REQUIRE(c.version == version);
        uint8_t want = fits ? KVMUX_STATUS_OK : KVMUX_STATUS_TOO_LARGE;
        kvmux_frame f;
        v2_rx rx = {.id = 10, .grant = 1}, r2 = {.id = 11, .grant = 1};
        /* GET */
        REQUIRE(v2_get(&c, 10, key) == 0);
        REQUIRE(v2_read_until(&c, &f, KVMUX_FRAME_RESPONSE, 10, 3000, skip_nothing, NULL) == 1);
        if (f.code != want)
            fprintf(stderr, "v%d len %u max %u: GET got status %u\n", version, len,
                    st.max_value_size, f.code);
        CHECK_EQ(f.code, want);
        if (!fits) CHECK(f.value_len > 0 && memmem(f.value, f.value_len, "max value size", 14));
        if (fits) { /* read the whole value (fragments on v2) before going on */
            CHECK(v2_rx_feed(&c, &rx, &f) == 1);
            while (!rx.done) {
                REQUIRE(v2_read(&c, &f, 3000) == 1);
                if (f.type == KVMUX_FRAME_WINDOW_UPDATE) continue;
                REQUIRE(v2_rx_feed(&c, &rx, &f) == 1);
            }
            CHECK(rx.got == len);
        }
        /* WAIT answered at once (the key is past version 0) */
        REQUIRE(v2_wait(&c, 11, key, 0, 1000) == 0);
        answer(&c, 11, &f);
        CHECK_EQ(f.code, want);
        if (fits) {
            CHECK(v2_rx_feed(&c, &r2, &f) == 1);
            while (!r2.done) {
                REQUIRE(v2_read(&c, &f, 3000) == 1);
                if (f.type == KVMUX_FRAME_WINDOW_UPDATE) continue;
                REQUIRE(v2_rx_feed(&c, &r2, &f) == 1);
            }
        }
        /* WAIT parked, fired by a write of the same length elsewhere */
        char pk[40];
        snprintf(pk, sizeof pk, "%s:p%d", key, fits);
        REQUIRE(v2_wait(&c, 12, pk, 0, 5000) == 0);
        test_sleep_ms(50);
        set_value(&w, 2 + (uint32_t)fits, pk, len);
        answer(&c, 12, &f);
        if (f.code != want)
            fprintf(stderr, "v%d len %u max %u: fired WAIT got status %u\n", version, len,
                    st.max_value_size, f.code);
        CHECK_EQ(f.code, want);
        free(rx.data);
        free(r2.data);
        v2_close(&c, 1);
    }
    v2_close(&w, 0);
}

static void test_too_large(uint16_t port) {
    /* 5000: copied inline into one frame; 100000: one frame by reference
     * on v1, fragmented on v2 (over --fragment-size 64 KiB). */
    const uint32_t lens[] = {5000, 100000};
    for (int version = 1; version <= 2; version++)
        for (size_t i = 0; i < 2; i++) too_large_case(port, version, lens[i]);
}

/* ---- DEADLINE 0 ---- */

static void test_deadline_zero(uint16_t port) {
    v2conn c;
    kvmux_frame f;
    REQUIRE(v2_connect(&c, port, 2, NULL) == 0);
    REQUIRE(v2_set(&c, 1, "dl:k", "v", 1) == 0);
    answer(&c, 1, &f);
    REQUIRE(f.code == KVMUX_STATUS_OK && f.extras_len == 8);
    uint64_t version = kvmux_load_u64be(f.extras);
    uint8_t e[12];
    kvmux_store_u64be(e, version); /* the current version: would park */
    kvmux_store_u32be(e + 8, 5000);
    /* WAIT on a present key: TIMEOUT with its current version. */
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 2, KVMUX_OP_WAIT, e, 12,
                    "dl:k", 4, NULL, 0, 0, 0) == 0);
    answer(&c, 2, &f);
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT);
    CHECK_EQ(f.extras_len, 8);
    if (f.extras_len == 8) CHECK_EQ(kvmux_load_u64be(f.extras), version);
    CHECK_EQ(f.value_len, 0);
    /* WAIT on an absent key: version 0. */
    kvmux_store_u64be(e, 0);
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 3, KVMUX_OP_WAIT, e, 12,
                    "dl:none", 7, NULL, 0, 0, 0) == 0);
    answer(&c, 3, &f);
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT);
    CHECK_EQ(f.extras_len, 8);
    if (f.extras_len == 8) CHECK_EQ(kvmux_load_u64be(f.extras), 0);
    /* The same shape as a WAIT that times out after parking (10 ms). */
    kvmux_store_u64be(e, version);
    kvmux_store_u32be(e + 8, 10);
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, 0, 4, KVMUX_OP_WAIT, e, 12, "dl:k", 4, NULL, 0,
                    0, 0) == 0);
    answer(&c, 4, &f);
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT);
    CHECK_EQ(f.extras_len, 8);
    CHECK_EQ(f.value_len, 0);
    /* Other ops: no extras (section 4), a message. */
    REQUIRE(v2_send(&c, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 5, KVMUX_OP_GET, NULL, 0,
                    "dl:k", 4, NULL, 0, 0, 0) == 0);
    answer(&c, 5, &f);
    CHECK_EQ(f.code, KVMUX_STATUS_TIMEOUT);
    CHECK_EQ(f.extras_len, 0);
    /* The WAIT was not run: the key is unchanged and no WAIT is left. */
    v2_check_get(&c, 6, "dl:k", KVMUX_STATUS_OK);
    v2_close(&c, 0);
}

/* ---- ERROR request ids for malformed non-REQUEST frames ---- */

/* A raw 16-byte header plus body bytes. */
static size_t raw_frame(uint8_t *b, uint8_t version, uint8_t type, uint8_t flags, uint32_t id,
                        uint8_t code, uint8_t elen, uint16_t klen, uint32_t body) {
    test_put_header(b, KVMUX_MAGIC, version, type, flags, id, code, elen, klen, body);
    memset(b + 16, 0, body);
    return 16 + (size_t)body;
}

typedef struct bad_frame {
    const char *what;
    int version;
    int open_upload;   /* start upload id 7 first */
    uint8_t type, flags, elen;
    uint32_t id, body;
    uint8_t want;      /* ERROR code */
} bad_frame;

static void test_error_ids(uint16_t port) {
    static const bad_frame cases[] = {
        {"empty CONTINUATION of an open upload", 2, 1, KVMUX_FRAME_CONTINUATION, 0, 0, 7, 0,
         KVMUX_ERR_BAD_LENGTH},
        {"empty CONTINUATION, no upload", 2, 0, KVMUX_FRAME_CONTINUATION, 0, 0, 8, 0,
         KVMUX_ERR_BAD_LENGTH},
        {"CONTINUATION over MAX_FRAME_SIZE", 2, 1, KVMUX_FRAME_CONTINUATION, 0, 0, 7,
         64u * 1024 * 1024, KVMUX_ERR_FRAME_TOO_LARGE},
        {"CANCEL with a body", 2, 0, KVMUX_FRAME_CANCEL, 0, 0, 9, 1, KVMUX_ERR_BAD_LENGTH},
        {"CANCEL with flags", 2, 0, KVMUX_FRAME_CANCEL, 0x01, 0, 10, 0, KVMUX_ERR_BAD_FLAGS},
        {"WINDOW_UPDATE increment 0", 2, 0, KVMUX_FRAME_WINDOW_UPDATE, 0, 4, 11, 4,
         KVMUX_ERR_PROTOCOL},
        {"WINDOW_UPDATE with 3 bytes of extras", 2, 0, KVMUX_FRAME_WINDOW_UPDATE, 0, 3, 12, 3,
         KVMUX_ERR_BAD_LENGTH},
        {"PING with 4 bytes of extras (v2)", 2, 0, KVMUX_FRAME_PING, 0, 4, 13, 4,
         KVMUX_ERR_BAD_LENGTH},
        {"PING with 4 bytes of extras (v1)", 1, 0, KVMUX_FRAME_PING, 0, 4, 14, 4,
         KVMUX_ERR_BAD_LENGTH},
        {"PONG with a value (v1)", 1, 0, KVMUX_FRAME_PONG, 0, 8, 15, 9, KVMUX_ERR_BAD_LENGTH},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_frame *k = &cases[i];
        v2conn c;
        kvmux_frame f;
        REQUIRE(v2_connect(&c, port, k->version, NULL) == 0);
        REQUIRE(c.version == k->version);
        if (k->open_upload) {
            uint8_t part[100] = {0};
            REQUIRE(v2_set_first(&c, 7, "eid:up", part, sizeof part, 1000, 0, 0) == 0);
        }
        uint8_t b[64];
        uint32_t body = k->body > 32 ? 0 : k->body; /* a huge one: header only */
        size_t n = raw_frame(b, (uint8_t)k->version, k->type, k->flags, k->id, 0, k->elen, 0,
                             body);
        if (k->body > 32) kvmux_store_u32be(b + 12, k->body);
        REQUIRE(test_write_all(c.fd, b, n) == 0);
        int r = v2_read_until(&c, &f, KVMUX_FRAME_ERROR, k->id, 3000, skip_nothing, NULL);
        if (r != 1) {
            /* Say what came instead (an ERROR with another id is skipped
             * by v2_read_until and the connection then closes). */
            fprintf(stderr, "%s: no ERROR with request_id %u\n", k->what, k->id);
        }
        CHECK(r == 1);
        if (r == 1) CHECK_EQ(f.code, k->want);
        CHECK(test_wait_closed(c.fd, 3000));
        v2_close(&c, 0);
    }
}

/* ---- --maxmemory floor ---- */

/* Run kvmuxd with args (it must exit at once: a kvmuxd that starts instead
 * is killed after 3 s, status 137); returns its exit status and its output
 * in out. */
static int run_kvmuxd(const char *args, char *out, size_t cap) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "timeout -s KILL 3 '%s' --bind 127.0.0.1 --port 0 %s 2>&1", KVMUXD_PATH, args);
    FILE *p = popen(cmd, "r");
    REQUIRE(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void maxmemory_case(const char *shards, uint64_t floor) {
    char args[128], out[2048], want[64];
    snprintf(args, sizeof args, "--store-shards %s --maxmemory %llu", shards,
             (unsigned long long)(floor - 1));
    CHECK_EQ(run_kvmuxd(args, out, sizeof out), 2);
    snprintf(want, sizeof want, "use at least %llu", (unsigned long long)floor);
    if (!strstr(out, want)) fprintf(stderr, "kvmuxd %s said: %s\n", args, out);
    CHECK(strstr(out, want) != NULL);
    CHECK(strstr(out, "--maxmemory") != NULL);

    static test_server s;
    char fl[32];
    snprintf(fl, sizeof fl, "%llu", (unsigned long long)floor);
    const char *const ok[] = {"--store-shards", shards, "--maxmemory", fl, NULL};
    v2_start_server(&s, ok);
    v2conn c;
    kvmux_frame f;
    REQUIRE(v2_connect(&c, s.port, 2, NULL) == 0);
    REQUIRE(v2_set(&c, 1, "mm:k", "value", 5) == 0);
    answer(&c, 1, &f);
    CHECK_EQ(f.code, KVMUX_STATUS_OK);
    v2_check_get(&c, 2, "mm:k", KVMUX_STATUS_OK);
    v2_close_and_stop(&c, &s, 10000);
}

static void test_maxmemory_floor(void) {
    maxmemory_case("256", 32768); /* the default: 256 tables of 16 8-byte slots */
    maxmemory_case("16", 2048);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    static test_server s;
    v2_start_server(&s, NULL);
    test_too_large(s.port);
    test_deadline_zero(s.port);
    test_error_ids(s.port);
    v2conn c;
    REQUIRE(v2_connect(&c, s.port, 2, NULL) == 0);
    v2_close_and_stop(&c, &s, 10000);
    test_maxmemory_floor();
    return test_report();
}
