/* Unit tests for the protocol v2 side of the kvmux frame codec
 * (src/proto/frame.c): which types and flags each header version allows,
 * the v2 per-type shapes (CANCEL, GOAWAY, WINDOW_UPDATE, CONTINUATION),
 * the extras prefixes (deadline_ms, total_value_len) and their length
 * errors, the checks that need the body (WINDOW_UPDATE increment, a first
 * fragment not shorter than its total), and the v2 encoders against the
 * byte-exact vectors of tests/vectors/frames.hex. Every malformed input is
 * decoded right against a PROT_NONE guard page, at the shortest prefix
 * where the error must already be reported and with the whole frame. The
 * round trip of the well-formed v2 vectors (both ways, one byte at a time,
 * guard page, doc agreement) is in frame_test.c with the v1 ones. */
#include "proto.h"
#include "proto_testutil.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- guard page ---- */

static uint8_t *g_base;
static size_t g_page;

static void guard_init(void) {
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, 2 * g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    REQUIRE(p != MAP_FAILED);
    g_base = p;
    REQUIRE(mprotect(g_base + g_page, g_page, PROT_NONE) == 0);
}

/* Decode the first n bytes of buf placed so they end at the guard page. */
static int decode_n(const uint8_t *buf, size_t n, kvmux_frame *out) {
    REQUIRE(n <= g_page);
    uint8_t *dst = g_base + g_page - n;
    if (n) memcpy(dst, buf, n);
    kvmux_frame scratch;
    return kvmux_frame_decode(dst, n, KVMUX_DEFAULT_MAX_FRAME, out ? out : &scratch);
}

/* ---- raw frame builder (independent of the encoder) ---- */

typedef struct raw {
    uint8_t b[512];
    size_t len;
} raw;

/* Header fields written as given; body appended verbatim, body_len =
 * its length (so a lying extras_len/key_len is possible). */
static void mkraw(raw *r, uint8_t version, uint8_t type, uint8_t flags, uint32_t id,
                  uint8_t code, uint8_t extras_len, uint16_t key_len, const void *body,
                  size_t body_len) {
    REQUIRE(body_len + KVMUX_FRAME_HDR_LEN <= sizeof r->b);
    uint8_t *h = r->b;
    h[0] = KVMUX_MAGIC;
    h[1] = version;
    h[2] = type;
    h[3] = flags;
    kvmux_store_u32be(h + 4, id);
    h[8] = code;
    h[9] = extras_len;
    kvmux_store_u16be(h + 10, key_len);
    kvmux_store_u32be(h + 12, (uint32_t)body_len);
    if (body_len) memcpy(h + KVMUX_FRAME_HDR_LEN, body, body_len);
    r->len = KVMUX_FRAME_HDR_LEN + body_len;
}

/* Expect err both as soon as the header is in (if at_header) and with
 * the whole frame; with fewer bytes, "need more". */
static int expect_err(const raw *r, int err, int at_header) {
    int bad = 0;
    if (at_header && decode_n(r->b, KVMUX_FRAME_HDR_LEN, NULL) != err) bad++;
    if (!at_header && r->len > KVMUX_FRAME_HDR_LEN &&
        decode_n(r->b, r->len - 1, NULL) != 0)
        bad++;
    if (decode_n(r->b, r->len, NULL) != err) bad++;
    if (bad) fprintf(stderr, "expect_err %d: got %d\n", err, decode_n(r->b, r->len, NULL));
    return bad;
}

/* ---- versions, types, flags ---- */

static void test_type_table(void) {
    for (int t = 0; t < 256; t++) {
        int v1 = t >= 1 && t <= 7;
        int v2 = t >= 1 && t <= 11;
        CHECK_EQ(kvmux_version_allows_type(1, (uint8_t)t), v1);
        CHECK_EQ(kvmux_version_allows_type(2, (uint8_t)t), v2);
        CHECK_EQ(kvmux_version_allows_type(0, (uint8_t)t), 0);
        /* v3 frames are v2 frames; nothing beyond the codec's maximum. */
        CHECK_EQ(kvmux_version_allows_type(KVMUX_PROTO_V3, (uint8_t)t), v2);
        CHECK_EQ(kvmux_version_allows_type(KVMUX_PROTO_CODEC_MAX + 1, (uint8_t)t), 0);
    }
    CHECK_EQ(kvmux_version_allowed_flags(1, KVMUX_FRAME_REQUEST), 0);
    CHECK_EQ(kvmux_version_allowed_flags(2, KVMUX_FRAME_REQUEST),
             KVMUX_FLAG_MORE | KVMUX_FLAG_DEADLINE);
    CHECK_EQ(kvmux_version_allowed_flags(2, KVMUX_FRAME_RESPONSE), KVMUX_FLAG_MORE);
    CHECK_EQ(kvmux_version_allowed_flags(2, KVMUX_FRAME_CONTINUATION), KVMUX_FLAG_MORE);
    for (int t = 1; t <= 11; t++) {
        if (t == KVMUX_FRAME_REQUEST || t == KVMUX_FRAME_RESPONSE ||
            t == KVMUX_FRAME_CONTINUATION)
            continue;
        CHECK_EQ(kvmux_version_allowed_flags(2, (uint8_t)t), 0);
    }
}

/* v2 types decode in a version-2 header and are BAD_TYPE in a version-1
 * header, after the third byte. */
static void test_types_by_version(void) {
    raw r;
    int bad = 0;
    for (int t = KVMUX_FRAME_CANCEL; t <= KVMUX_FRAME_CONTINUATION; t++) {
        mkraw(&r, 1, (uint8_t)t, 0, 1, 0, 0, 0, NULL, 0);
        if (decode_n(r.b, 3, NULL) != -KVMUX_ERR_BAD_TYPE) bad++;
        if (decode_n(r.b, r.len, NULL) != -KVMUX_ERR_BAD_TYPE) bad++;
        r.b[1] = 2;
        if (decode_n(r.b, 3, NULL) != 0) bad++;
        if (decode_n(r.b, 4, NULL) != 0) bad++;
    }
    CHECK_EQ(bad, 0);
    bad = 0;
    for (int t = 12; t < 256; t++) {
        mkraw(&r, 2, (uint8_t)t, 0, 1, 0, 0, 0, NULL, 0);
        if (decode_n(r.b, 3, NULL) != -KVMUX_ERR_BAD_TYPE) bad++;
    }
    mkraw(&r, 2, 0, 0, 1, 0, 0, 0, NULL, 0);
    if (decode_n(r.b, 3, NULL) != -KVMUX_ERR_BAD_TYPE) bad++;
    CHECK_EQ(bad, 0);
}

/* Every flag bit on every type in both versions: reported after byte 4,
 * allowed exactly per kvmux_version_allowed_flags. */
static void test_flags_by_version(void) {
    raw r;
    int bad = 0, allowed = 0;
    for (int v = 1; v <= 2; v++) {
        int tmax = v == 1 ? KVMUX_FRAME_PONG : KVMUX_FRAME_CONTINUATION;
        for (int t = 1; t <= tmax; t++) {
            for (int f = 1; f < 256; f++) {
                mkraw(&r, (uint8_t)v, (uint8_t)t, (uint8_t)f, 1, 0, 0, 0, NULL, 0);
                int ok = (f & ~kvmux_version_allowed_flags((uint8_t)v, (uint8_t)t)) == 0;
                int rc = decode_n(r.b, 4, NULL);
                if (ok ? rc != 0 : rc != -KVMUX_ERR_BAD_FLAGS) bad++;
                allowed += ok;
            }
        }
    }
    CHECK_EQ(bad, 0);
    /* REQUEST: 0x01, 0x02, 0x03; RESPONSE: 0x01; CONTINUATION: 0x01. */
    CHECK_EQ(allowed, 5);
    /* The check order: a bad type is reported before bad flags. */
    mkraw(&r, 1, KVMUX_FRAME_CONTINUATION, 0x01, 1, 0, 0, 0, NULL, 0);
    CHECK_EQ(decode_n(r.b, 16, NULL), -KVMUX_ERR_BAD_TYPE);
    /* MORE on a v1 REQUEST: the frame a v1 peer must refuse. */
    mkraw(&r, 1, KVMUX_FRAME_REQUEST, KVMUX_FLAG_MORE, 1, KVMUX_OP_GET, 0, 1, "k", 1);
    CHECK_EQ(decode_n(r.b, 4, NULL), -KVMUX_ERR_BAD_FLAGS);
    CHECK_EQ(decode_n(r.b, r.len, NULL), -KVMUX_ERR_BAD_FLAGS);
}

/* ---- prefixes ---- */

static void test_prefix_lengths(void) {
    raw r;
    uint8_t body[64];
    memset(body, 0, sizeof body);
    /* DEADLINE needs 4 extras bytes, MORE 4, both 8: fewer is BAD_LENGTH
     * from the header alone. */
    for (uint8_t e = 0; e < 4; e++) {
        mkraw(&r, 2, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 1, 1, e, 1, body, e + 1u);
        CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
        mkraw(&r, 2, KVMUX_FRAME_RESPONSE, KVMUX_FLAG_MORE, 1, 0, e, 0, body, e + 1u);
        CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    }
    for (uint8_t e = 0; e < 8; e++) {
        mkraw(&r, 2, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE | KVMUX_FLAG_MORE, 1, 1, e, 1,
              body, e + 1u + 1u);
        CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    }
    /* Exactly the prefix: op extras empty. */
    kvmux_frame f;
    body[3] = 99; /* deadline 99 */
    mkraw(&r, 2, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 1, KVMUX_OP_GET, 4, 1, body, 5);
    CHECK_EQ(decode_n(r.b, r.len, &f), (long long)r.len);
    CHECK_EQ(f.deadline_ms, 99);
    CHECK_EQ(f.extras_len, 0);
    CHECK_EQ(f.total_value_len, 0);
    CHECK(kvmux_frame_has_deadline(&f) && !kvmux_frame_has_total(&f) && !kvmux_frame_has_more(&f));
    /* Deadline 0xFFFFFFFF is just a long budget. */
    memset(body, 0xFF, 4);
    mkraw(&r, 2, KVMUX_FRAME_REQUEST, KVMUX_FLAG_DEADLINE, 1, KVMUX_OP_GET, 4, 1, body, 5);
    CHECK_EQ(decode_n(r.b, r.len, &f), (long long)r.len);
    CHECK_EQ(f.deadline_ms, 0xFFFFFFFFu);
    /* Prefixes count toward KVMUX_MAX_EXTRAS: 8 + 25 > 32. */
    mkraw(&r, 2, KVMUX_FRAME_REQUEST, 3, 1, 1, 33, 0, body, 40);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
}

/* MORE promises more fragments: the first frame must be strictly shorter
 * than total_value_len. Needs the body, so reported with the whole frame
 * (and "need more" one byte short). */
static void test_more_total(void) {
    raw r;
    uint8_t body[32];
    kvmux_frame f;
    const uint32_t totals[] = {0, 2, 3};
    for (size_t i = 0; i < sizeof totals / sizeof totals[0]; i++) {
        /* RESPONSE MORE: [total][no status extras] value "abc" (3 bytes). */
        kvmux_store_u32be(body, totals[i]);
        memcpy(body + 4, "abc", 3);
        mkraw(&r, 2, KVMUX_FRAME_RESPONSE, KVMUX_FLAG_MORE, 1, 0, 4, 0, body, 7);
        CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 0), 0);
        /* REQUEST DEADLINE|MORE: [deadline][total] key "k" value "abc". */
        kvmux_store_u32be(body, 10);
        kvmux_store_u32be(body + 4, totals[i]);
        memcpy(body + 8, "kabc", 4);
        mkraw(&r, 2, KVMUX_FRAME_REQUEST, 3, 1, KVMUX_OP_SET, 8, 1, body, 12);
        CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 0), 0);
    }
    /* total = value_len + 1: fine. A first frame with 0 value bytes too. */
    kvmux_store_u32be(body, 4);
    memcpy(body + 4, "abc", 3);
    mkraw(&r, 2, KVMUX_FRAME_RESPONSE, KVMUX_FLAG_MORE, 1, 0, 4, 0, body, 7);
    CHECK_EQ(decode_n(r.b, r.len, &f), (long long)r.len);
    CHECK_EQ(f.total_value_len, 4);
    CHECK(kvmux_frame_has_total(&f) && kvmux_frame_has_more(&f));
    kvmux_store_u32be(body, 1);
    mkraw(&r, 2, KVMUX_FRAME_RESPONSE, KVMUX_FLAG_MORE, 1, 0, 4, 0, body, 4);
    CHECK_EQ(decode_n(r.b, r.len, &f), (long long)r.len);
    CHECK_EQ(f.value_len, 0);
    /* A huge total is the session's business (MAX_VALUE_SIZE), not the
     * decoder's. */
    kvmux_store_u32be(body, 0xFFFFFFFFu);
    mkraw(&r, 2, KVMUX_FRAME_RESPONSE, KVMUX_FLAG_MORE, 1, 0, 4, 0, body, 7);
    CHECK_EQ(decode_n(r.b, r.len, &f), (long long)r.len);
    CHECK_EQ(f.total_value_len, 0xFFFFFFFFu);
}

/* ---- v2 shapes ---- */

static void test_v2_shapes(void) {
    raw r;
    uint8_t body[KVMUX_MAX_ERROR_MSG + 16];
    memset(body, 'x', sizeof body);
    kvmux_store_u32be(body, 1);
    /* CANCEL: nothing at all. */
    mkraw(&r, 2, KVMUX_FRAME_CANCEL, 0, 5, 0, 1, 0, body, 1);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    mkraw(&r, 2, KVMUX_FRAME_CANCEL, 0, 5, 0, 0, 1, body, 1);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    mkraw(&r, 2, KVMUX_FRAME_CANCEL, 0, 5, 0, 0, 0, body, 1);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    mkraw(&r, 2, KVMUX_FRAME_CANCEL, 0, 5, 0, 0, 0, NULL, 0);
    CHECK_EQ(decode_n(r.b, r.len, NULL), 16);
    /* GOAWAY: extras exactly 8, no key, message <= KVMUX_MAX_ERROR_MSG. */
    for (uint8_t e = 0; e <= 12; e += 4) {
        if (e == 8) continue;
        mkraw(&r, 2, KVMUX_FRAME_GOAWAY, 0, 0, 0, e, 0, body, e);
        CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    }
    mkraw(&r, 2, KVMUX_FRAME_GOAWAY, 0, 0, 0, 8, 1, body, 9);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    /* (the body is bigger than raw's buffer: the header alone decides) */
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    mkraw(&r, 2, KVMUX_FRAME_GOAWAY, 0, 0, 0, 8, 0, NULL, 0);
    memcpy(h, r.b, sizeof h);
    kvmux_store_u32be(h + 12, 8 + KVMUX_MAX_ERROR_MSG + 1);
    CHECK_EQ(decode_n(h, 16, NULL), -KVMUX_ERR_BAD_LENGTH);
    kvmux_store_u32be(h + 12, 8 + KVMUX_MAX_ERROR_MSG);
    CHECK_EQ(decode_n(h, 16, NULL), 0);
    /* WINDOW_UPDATE: extras exactly 4, nothing else. */
    for (uint8_t e = 0; e <= 8; e++) {
        if (e == 4) continue;
        mkraw(&r, 2, KVMUX_FRAME_WINDOW_UPDATE, 0, 0, 0, e, 0, body, e);
        CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    }
    mkraw(&r, 2, KVMUX_FRAME_WINDOW_UPDATE, 0, 0, 0, 4, 0, body, 5);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    mkraw(&r, 2, KVMUX_FRAME_WINDOW_UPDATE, 0, 0, 0, 4, 1, body, 5);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    /* CONTINUATION: no extras, no key, at least one value byte. */
    mkraw(&r, 2, KVMUX_FRAME_CONTINUATION, 0, 2, 0, 0, 0, NULL, 0);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    mkraw(&r, 2, KVMUX_FRAME_CONTINUATION, KVMUX_FLAG_MORE, 2, 0, 0, 0, NULL, 0);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    mkraw(&r, 2, KVMUX_FRAME_CONTINUATION, 0, 2, 0, 4, 0, body, 5);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    mkraw(&r, 2, KVMUX_FRAME_CONTINUATION, 0, 2, 0, 0, 1, body, 5);
    CHECK_EQ(expect_err(&r, -KVMUX_ERR_BAD_LENGTH, 1), 0);
    mkraw(&r, 2, KVMUX_FRAME_CONTINUATION, 0, 2, 0, 0, 0, body, 1);
    CHECK_EQ(decode_n(r.b, r.len, NULL), 17);
    /* A CONTINUATION is bounded by the frame size like any frame. */
    mkraw(&r, 2, KVMUX_FRAME_CONTINUATION, 0, 2, 0, 0, 0, NULL, 0);
    memcpy(h, r.b, sizeof h);
    kvmux_store_u32be(h + 12, KVMUX_DEFAULT_MAX_FRAME - KVMUX_FRAME_HDR_LEN + 1);
    CHECK_EQ(decode_n(h, 16, NULL), -KVMUX_ERR_FRAME_TOO_LARGE);
}

/* WINDOW_UPDATE increment in [1, 2^31-1]; outside is PROTOCOL, known only
 * once the 4 body bytes are in. */
static void test_window_update_increment(void) {
    raw r;
    uint8_t body[4];
    kvmux_frame f;
    const uint32_t badv[] = {0, 0x80000000u, 0xFFFFFFFFu};
    for (size_t i = 0; i < 3; i++) {
        kvmux_store_u32be(body, badv[i]);
        mkraw(&r, 2, KVMUX_FRAME_WINDOW_UPDATE, 0, 7, 0, 4, 0, body, 4);
        CHECK_EQ(expect_err(&r, -KVMUX_ERR_PROTOCOL, 0), 0);
    }
    const uint32_t okv[] = {1, 65536, 0x7FFFFFFFu};
    for (size_t i = 0; i < 3; i++) {
        kvmux_store_u32be(body, okv[i]);
        mkraw(&r, 2, KVMUX_FRAME_WINDOW_UPDATE, 0, 7, 0, 4, 0, body, 4);
        CHECK_EQ(decode_n(r.b, r.len, &f), 20);
        CHECK_EQ(kvmux_window_update_increment(&f), okv[i]);
        CHECK_EQ(f.request_id, 7);
    }
}

/* ---- encoders vs the vectors ---- */

static int same_as_vec(const char *name, const uint8_t *b, size_t n) {
    uint8_t v[PROTO_TEST_MAX_VEC];
    size_t vl = 0;
    if (!proto_test_load_vec(name, v, &vl)) {
        fprintf(stderr, "vector %s not found\n", name);
        return 0;
    }
    if (vl != n || memcmp(v, b, n) != 0) {
        fprintf(stderr, "vector %s: encoder output differs\n", name);
        return 0;
    }
    return 1;
}

static void test_encoders(void) {
    uint8_t out[KVMUX_GOAWAY_MAX_LEN + 16];
    size_t n = kvmux_encode_cancel(out, 2, 6);
    CHECK_EQ(n, KVMUX_CANCEL_LEN);
    CHECK(same_as_vec("cancel", out, n));
    n = kvmux_encode_window_update(out, 2, 0, 524288);
    CHECK_EQ(n, KVMUX_WINDOW_UPDATE_LEN);
    CHECK(same_as_vec("window_update_conn", out, n));
    n = kvmux_encode_window_update(out, 2, 2, 32768);
    CHECK(same_as_vec("window_update_msg", out, n));
    n = kvmux_encode_goaway(out, 2, 9, 0, "drain");
    CHECK(same_as_vec("goaway", out, n));
    n = kvmux_encode_goaway(out, 2, 0, KVMUX_ERR_FLOOD, "cancel flood");
    CHECK(same_as_vec("goaway_flood", out, n));
    n = kvmux_encode_error(out, 2, 0, KVMUX_ERR_FLOOD, "flood");
    CHECK(same_as_vec("error_flood", out, n));
    /* CONTINUATION header + chunk. */
    kvmux_encode_continuation_header(out, 2, 2, KVMUX_FLAG_MORE, 4);
    memcpy(out + 16, "4567", 4);
    CHECK(same_as_vec("cont_more", out, 20));
    kvmux_encode_continuation_header(out, 2, 1, 0, 5);
    memcpy(out + 16, "defgh", 5);
    CHECK(same_as_vec("resp_cont_last", out, 21));

    /* GOAWAY: NULL message, a message cut at the limit, decoded fields. */
    kvmux_frame f;
    n = kvmux_encode_goaway(out, 2, 77, KVMUX_ERR_SHUTTING_DOWN, NULL);
    CHECK_EQ(n, KVMUX_FRAME_HDR_LEN + 8);
    CHECK_EQ(kvmux_frame_decode(out, n, KVMUX_DEFAULT_MAX_FRAME, &f), (long long)n);
    CHECK_EQ(kvmux_goaway_last_id(&f), 77);
    CHECK_EQ(kvmux_goaway_error(&f), KVMUX_ERR_SHUTTING_DOWN);
    static char big[KVMUX_MAX_ERROR_MSG + 100];
    memset(big, 'm', sizeof big - 1);
    n = kvmux_encode_goaway(out, 2, 1, 0, big);
    CHECK_EQ(n, KVMUX_GOAWAY_MAX_LEN);
    CHECK_EQ(kvmux_frame_decode(out, n, KVMUX_DEFAULT_MAX_FRAME, &f), (long long)n);
    CHECK_EQ(f.value_len, KVMUX_MAX_ERROR_MSG);

    /* The generic encoder writes the prefixes from the fields, and
     * frame_size counts them. */
    kvmux_frame e;
    memset(&e, 0, sizeof e);
    e.version = 2;
    e.type = KVMUX_FRAME_REQUEST;
    e.flags = KVMUX_FLAG_DEADLINE;
    e.request_id = 1;
    e.code = KVMUX_OP_GET;
    e.deadline_ms = 250;
    e.key = (const uint8_t *)"foo";
    e.key_len = 3;
    CHECK_EQ(kvmux_frame_prefix_len(&e), 4);
    CHECK_EQ(kvmux_frame_size(&e), 16 + 4 + 3);
    n = kvmux_frame_encode(out, &e);
    CHECK(same_as_vec("req_get_deadline", out, n));
    /* Flags without prefixes contribute nothing (CONTINUATION MORE), and
     * a DEADLINE bit on a RESPONSE template is not a prefix either. */
    e.type = KVMUX_FRAME_CONTINUATION;
    e.flags = KVMUX_FLAG_MORE;
    CHECK_EQ(kvmux_frame_prefix_len(&e), 0);
    e.type = KVMUX_FRAME_RESPONSE;
    e.flags = KVMUX_FLAG_DEADLINE;
    CHECK_EQ(kvmux_frame_prefix_len(&e), 0);
    e.flags = KVMUX_FLAG_MORE;
    CHECK_EQ(kvmux_frame_prefix_len(&e), 4);
    e.type = KVMUX_FRAME_REQUEST;
    e.flags = KVMUX_FLAG_MORE | KVMUX_FLAG_DEADLINE;
    CHECK_EQ(kvmux_frame_prefix_len(&e), 8);
}

/* Names of the v2 additions. */
static void test_names(void) {
    CHECK(strcmp(kvmux_wire_error_name(KVMUX_ERR_FLOOD), "FLOOD") == 0);
    CHECK(strcmp(kvmux_status_name(KVMUX_STATUS_CANCELED), "CANCELED") == 0);
    CHECK(strcmp(kvmux_frame_type_name(KVMUX_FRAME_CONTINUATION), "CONTINUATION") == 0);
    CHECK(strcmp(kvmux_frame_type_name(KVMUX_FRAME_WINDOW_UPDATE), "WINDOW_UPDATE") == 0);
    CHECK(strcmp(kvmux_frame_type_name(KVMUX_FRAME_CANCEL), "CANCEL") == 0);
}

/* kvmux_frame_error_request_id: every decoder shape error on a frame
 * whose id names a request reports that id; HELLO, HELLO_ACK, GOAWAY,
 * unknown types, v2 types in a v1 header, bad magic/version and short
 * input report 0. */
static void hdr(uint8_t *b, uint8_t v, uint8_t t, uint8_t flags, uint32_t id, uint8_t elen,
                uint32_t body) {
    memset(b, 0, 64);
    b[0] = KVMUX_MAGIC;
    b[1] = v;
    b[2] = t;
    b[3] = flags;
    kvmux_store_u32be(b + 4, id);
    b[9] = elen;
    kvmux_store_u32be(b + 12, body);
}

static void test_error_request_id(void) {
    static const struct {
        uint8_t v, t, flags, elen;
        uint32_t body, id, want_id;
    } cases[] = {
        {2, KVMUX_FRAME_CONTINUATION, 0, 0, 0, 7, 7},     /* empty CONTINUATION */
        {2, KVMUX_FRAME_CANCEL, 0, 0, 1, 9, 9},           /* CANCEL with a body */
        {2, KVMUX_FRAME_CANCEL, 1, 0, 0, 10, 10},         /* CANCEL with flags */
        {2, KVMUX_FRAME_WINDOW_UPDATE, 0, 4, 4, 11, 11},  /* increment 0 */
        {2, KVMUX_FRAME_WINDOW_UPDATE, 0, 3, 3, 12, 12},  /* 3 bytes of extras */
        {2, KVMUX_FRAME_PING, 0, 4, 4, 13, 13},
        {1, KVMUX_FRAME_PING, 0, 4, 4, 14, 14},
        {1, KVMUX_FRAME_PONG, 0, 8, 9, 15, 15},
        {2, KVMUX_FRAME_ERROR, 0, 1, 1, 16, 16},          /* ERROR with extras */
        {2, KVMUX_FRAME_RESPONSE, 4, 0, 0, 17, 17},       /* bad flags */
        {1, KVMUX_FRAME_REQUEST, 1, 0, 0, 18, 18},        /* flags in v1 */
        {2, KVMUX_FRAME_HELLO, 0, 0, 0, 19, 0},           /* id always 0 */
        {2, KVMUX_FRAME_GOAWAY, 0, 0, 0, 20, 0},
        {1, KVMUX_FRAME_CONTINUATION, 0, 0, 1, 21, 0},    /* not a v1 type */
        {1, KVMUX_FRAME_CANCEL, 0, 0, 0, 22, 0},
        {2, 12, 0, 0, 0, 23, 0},                          /* unknown type */
    };
    uint8_t b[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hdr(b, cases[i].v, cases[i].t, cases[i].flags, cases[i].id, cases[i].elen,
            cases[i].body);
        kvmux_frame f;
        int r = kvmux_frame_decode(b, 16 + cases[i].body, 1u << 20, &f);
        if (r >= 0) fprintf(stderr, "case %zu decoded (%d)\n", i, r);
        CHECK(r < 0);
        CHECK_EQ(kvmux_frame_error_request_id(b, 16 + cases[i].body), cases[i].want_id);
    }
    /* Over the max frame size: the header alone is enough. */
    hdr(b, 2, KVMUX_FRAME_CONTINUATION, 0, 24, 0, 1u << 20);
    kvmux_frame f;
    CHECK_EQ(kvmux_frame_decode(b, 16, 4096, &f), -KVMUX_ERR_FRAME_TOO_LARGE);
    CHECK_EQ(kvmux_frame_error_request_id(b, 16), 24);
    /* Short input, bad magic, bad version: 0. */
    CHECK_EQ(kvmux_frame_error_request_id(b, 7), 0);
    b[1] = 9;
    CHECK_EQ(kvmux_frame_error_request_id(b, 16), 0);
    b[1] = 2;
    b[0] = 0x6c;
    CHECK_EQ(kvmux_frame_error_request_id(b, 16), 0);
}

int main(void) {
    guard_init();
    test_type_table();
    test_types_by_version();
    test_flags_by_version();
    test_prefix_lengths();
    test_more_total();
    test_v2_shapes();
    test_window_update_increment();
    test_encoders();
    test_names();
    test_error_request_id();
    return test_report();
}
