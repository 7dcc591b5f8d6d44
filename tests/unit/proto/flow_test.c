/* Unit tests for protocol v2 flow control and fragmentation
 * (src/proto/window.c, fragment.c): window accounting (consume, grant,
 * stall at zero, overflow, batched release), the receiver's reassembly (in
 * order, wrong id, overrun, short last fragment, MORE on the last one,
 * window overrun, interleaved messages, abort returning connection window),
 * the sender's fragmenter (sizes for various frame sizes, chunk caps and
 * windows; single-frame messages never flow-controlled), and a sans-IO
 * end-to-end run: two sessions exchange real encoded frames for several
 * interleaved large messages, with WINDOW_UPDATEs flowing back, including
 * a receiver that never grants one message (only that one stalls). */
#include "proto.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static void open_pair(kvmux_session *c, kvmux_session *s, const kvmux_settings *cs,
                      const kvmux_settings *ss) {
    uint8_t hello[KVMUX_HELLO_MAX_LEN], ack[KVMUX_HELLO_ACK_MAX_LEN];
    kvmux_frame f;
    kvmux_session_init(c, KVMUX_ROLE_CLIENT, cs);
    kvmux_session_init(s, KVMUX_ROLE_SERVER, ss);
    size_t n = kvmux_session_encode_hello(c, hello, "c");
    REQUIRE(kvmux_frame_decode(hello, n, s->local.max_frame_size, &f) == (int)n);
    int m = kvmux_session_accept_hello(s, &f, ack, "s");
    REQUIRE(m > 0);
    REQUIRE(kvmux_frame_decode(ack, (size_t)m, c->local.max_frame_size, &f) == m);
    REQUIRE(kvmux_session_on_hello_ack(c, &f) == 0);
    REQUIRE(c->version == 2);
}

static kvmux_frame first_frame(uint8_t type, uint32_t id, uint8_t flags, uint32_t total,
                               const uint8_t *value, uint32_t value_len) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = 2;
    f.type = type;
    f.flags = flags;
    f.request_id = id;
    f.total_value_len = total;
    f.value = value;
    f.value_len = value_len;
    return f;
}

static kvmux_frame cont_frame(uint32_t id, uint8_t flags, const uint8_t *value, uint32_t len) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = 2;
    f.type = KVMUX_FRAME_CONTINUATION;
    f.flags = flags;
    f.request_id = id;
    f.value = value;
    f.value_len = len;
    return f;
}

/* ---- windows ---- */

static void test_window(void) {
    kvmux_window w;
    kvmux_window_init(&w, 100);
    CHECK_EQ(w.size, 100);
    CHECK_EQ(w.avail, 100);
    CHECK_EQ(kvmux_window_consume(&w, 60), 0);
    CHECK_EQ(w.avail, 40);
    /* Overrun: refused, unchanged. */
    CHECK_EQ(kvmux_window_consume(&w, 41), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(w.avail, 40);
    CHECK_EQ(kvmux_window_consume(&w, 40), 0);
    CHECK_EQ(w.avail, 0); /* stalled */
    CHECK_EQ(kvmux_window_consume(&w, 1), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(kvmux_window_consume(&w, 0), 0);
    /* Grants: 0 refused; up to 2^31-1; one past is refused. */
    CHECK_EQ(kvmux_window_grant(&w, 0), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(kvmux_window_grant(&w, 10), 0);
    CHECK_EQ(w.avail, 10);
    CHECK_EQ(kvmux_window_grant(&w, KVMUX_MAX_WINDOW - 10), 0);
    CHECK_EQ(w.avail, KVMUX_MAX_WINDOW);
    CHECK_EQ(kvmux_window_grant(&w, 1), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(kvmux_window_grant(&w, 0xFFFFFFFFu), -KVMUX_ERR_PROTOCOL);
    CHECK_EQ(w.avail, KVMUX_MAX_WINDOW);
    /* init clamps. */
    kvmux_window_init(&w, 0xFFFFFFFFu);
    CHECK_EQ(w.avail, KVMUX_MAX_WINDOW);

    /* sendable = min of both. */
    kvmux_window m, c;
    kvmux_window_init(&m, 50);
    kvmux_window_init(&c, 30);
    CHECK_EQ(kvmux_window_sendable(&m, &c), 30);
    CHECK_EQ(kvmux_window_consume(&c, 30), 0);
    CHECK_EQ(kvmux_window_sendable(&m, &c), 0);
    CHECK_EQ(kvmux_window_grant(&c, 100), 0);
    CHECK_EQ(kvmux_window_sendable(&m, &c), 50);
}

/* Receiver release: batched at half the size, never exceeding 2^31-1. */
static void test_window_release(void) {
    kvmux_window w;
    kvmux_window_init(&w, 100);
    CHECK_EQ(kvmux_window_consume(&w, 100), 0);
    CHECK_EQ(kvmux_window_release(&w, 20), 0);
    CHECK_EQ(kvmux_window_release(&w, 29), 0);
    CHECK_EQ(w.avail, 0);
    CHECK_EQ(kvmux_window_release(&w, 1), 50); /* reached half: grant it all */
    CHECK_EQ(w.avail, 50);
    CHECK_EQ(w.released, 0);
    CHECK_EQ(kvmux_window_release(&w, 50), 50);
    CHECK_EQ(w.avail, 100);
    /* Releasing more than was consumed cannot push past 2^31-1. */
    kvmux_window_init(&w, KVMUX_MAX_WINDOW);
    CHECK_EQ(kvmux_window_release(&w, 1000), 0);
    CHECK_EQ(w.avail, KVMUX_MAX_WINDOW);
    /* Size 1: every byte is an update. */
    kvmux_window_init(&w, 1);
    CHECK_EQ(kvmux_window_consume(&w, 1), 0);
    CHECK_EQ(kvmux_window_release(&w, 1), 1);
}

/* ---- reassembly ---- */

static void test_reassembly_in_order(void) {
    kvmux_session c, s;
    open_pair(&c, &s, NULL, NULL);
    kvmux_reassembly r;
    memset(&r, 0, sizeof r);
    const uint8_t v[] = "0123456789";
    kvmux_frame f = first_frame(KVMUX_FRAME_REQUEST, 2, KVMUX_FLAG_MORE, 10, v, 4);
    CHECK_EQ(kvmux_reassembly_begin(&r, &s, &f, 0), 0);
    CHECK_EQ(r.state, KVMUX_REASM_OPEN);
    CHECK_EQ(r.received, 4);
    CHECK_EQ(r.window.avail, KVMUX_DEFAULT_INITIAL_WINDOW - 4);
    CHECK_EQ(s.recv_window.avail, KVMUX_DEFAULT_CONNECTION_WINDOW - 4);
    uint32_t off = 99;
    kvmux_frame k = cont_frame(2, KVMUX_FLAG_MORE, v + 4, 4);
    CHECK_EQ(kvmux_reassembly_continue(&r, &s, &k, &off), 0);
    CHECK_EQ(off, 4);
    k = cont_frame(2, 0, v + 8, 2);
    CHECK_EQ(kvmux_reassembly_continue(&r, &s, &k, &off), 1);
    CHECK_EQ(off, 8);
    CHECK_EQ(r.state, KVMUX_REASM_COMPLETE);
    CHECK_EQ(r.received, 10);
    /* Anything after completion is refused. */
    k = cont_frame(2, 0, v, 1);
    CHECK_EQ(kvmux_reassembly_continue(&r, &s, &k, NULL), -KVMUX_ERR_PROTOCOL);
    /* Release: small message, below thresholds: nothing to grant yet; no
     * message grant after completion anyway. */
    kvmux_grant g;
    kvmux_reassembly_release(&r, &s, 10, &g);
    CHECK_EQ(g.message, 0);
    CHECK_EQ(g.connection, 0);
    CHECK_EQ(r.released, 10);
    kvmux_reassembly_release(&r, &s, 10, &g); /* clamped: nothing more */
    CHECK_EQ(r.released, 10);
}

static void test_reassembly_errors(void) {
    kvmux_session c, s;
    open_pair(&c, &s, NULL, NULL);
    kvmux_reassembly r;
    memset(&r, 0, sizeof r);
    uint8_t v[64];
    memset(v, 'v', sizeof v);
    kvmux_frame f = first_frame(KVMUX_FRAME_RESPONSE, 7, KVMUX_FLAG_MORE, 10, v, 4);

    /* begin: not a first fragment; total not above the first; over the
     * advertised limit or the caller's lower one. */
    kvmux_frame nf = first_frame(KVMUX_FRAME_RESPONSE, 7, 0, 0, v, 4);
    CHECK_EQ(kvmux_reassembly_begin(&r, &c, &nf, 0), -KVMUX_ERR_PROTOCOL);
    kvmux_frame eq = first_frame(KVMUX_FRAME_RESPONSE, 7, KVMUX_FLAG_MORE, 4, v, 4);
    CHECK_EQ(kvmux_reassembly_begin(&r, &c, &eq, 0), -KVMUX_ERR_BAD_LENGTH);
    kvmux_frame big = first_frame(KVMUX_FRAME_RESPONSE, 7, KVMUX_FLAG_MORE,
                                  c.local.max_value_size + 1, v, 4);
    CHECK_EQ(kvmux_reassembly_begin(&r, &c, &big, 0), -KVMUX_ERR_FRAME_TOO_LARGE);
    big.total_value_len = c.local.max_value_size;
    CHECK_EQ(kvmux_reassembly_begin(&r, &c, &big, 100), -KVMUX_ERR_FRAME_TOO_LARGE);
    CHECK_EQ(r.state, KVMUX_REASM_IDLE);
    CHECK_EQ(c.recv_window.avail, KVMUX_DEFAULT_CONNECTION_WINDOW);

    CHECK_EQ(kvmux_reassembly_begin(&r, &c, &f, 0), 0);
    kvmux_reassembly saved = r;
    kvmux_window cw = c.recv_window;
    /* Wrong id. */
    kvmux_frame k = cont_frame(8, KVMUX_FLAG_MORE, v, 2);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), -KVMUX_ERR_PROTOCOL);
    /* Not a CONTINUATION. */
    k = first_frame(KVMUX_FRAME_RESPONSE, 7, 0, 0, v, 2);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), -KVMUX_ERR_PROTOCOL);
    /* Overrun: 7 bytes when 6 are missing. */
    k = cont_frame(7, 0, v, 7);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), -KVMUX_ERR_BAD_LENGTH);
    k = cont_frame(7, KVMUX_FLAG_MORE, v, 7);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), -KVMUX_ERR_BAD_LENGTH);
    /* Short last fragment: 5 of 6 without MORE. */
    k = cont_frame(7, 0, v, 5);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), -KVMUX_ERR_BAD_LENGTH);
    /* MORE on the fragment that completes the message. */
    k = cont_frame(7, KVMUX_FLAG_MORE, v, 6);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), -KVMUX_ERR_BAD_LENGTH);
    /* Empty CONTINUATION (hand-built; the decoder refuses it too). */
    k = cont_frame(7, KVMUX_FLAG_MORE, v, 0);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), -KVMUX_ERR_BAD_LENGTH);
    /* Every rejection left everything unchanged. */
    CHECK(memcmp(&r, &saved, sizeof r) == 0);
    CHECK(memcmp(&c.recv_window, &cw, sizeof cw) == 0);
    /* An IDLE reassembly accepts no CONTINUATION (the I/O layer reports
     * a CONTINUATION for an id with no open message the same way). */
    kvmux_reassembly idle;
    memset(&idle, 0, sizeof idle);
    k = cont_frame(7, 0, v, 1);
    CHECK_EQ(kvmux_reassembly_continue(&idle, &c, &k, NULL), -KVMUX_ERR_PROTOCOL);
}

/* A peer that sends past the message window or the connection window. */
static void test_reassembly_window_overrun(void) {
    kvmux_settings cs;
    kvmux_settings_default(&cs);
    cs.initial_window = 8;      /* what the client grants the server */
    cs.connection_window = 12;
    kvmux_session c, s;
    open_pair(&c, &s, &cs, NULL);
    CHECK_EQ(s.peer.initial_window, 8);
    uint8_t v[64];
    memset(v, 'w', sizeof v);
    kvmux_reassembly r, r2;
    memset(&r, 0, sizeof r);
    memset(&r2, 0, sizeof r2);
    /* First frame over the message window. */
    kvmux_frame f = first_frame(KVMUX_FRAME_RESPONSE, 1, KVMUX_FLAG_MORE, 40, v, 9);
    CHECK_EQ(kvmux_reassembly_begin(&r, &c, &f, 0), -KVMUX_ERR_PROTOCOL);
    f.value_len = 8;
    CHECK_EQ(kvmux_reassembly_begin(&r, &c, &f, 0), 0);
    /* Message window exhausted: one more byte is a violation. */
    kvmux_frame k = cont_frame(1, KVMUX_FLAG_MORE, v, 1);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), -KVMUX_ERR_PROTOCOL);
    /* A second message may use what is left of the connection (4). */
    kvmux_frame f2 = first_frame(KVMUX_FRAME_RESPONSE, 2, KVMUX_FLAG_MORE, 40, v, 5);
    CHECK_EQ(kvmux_reassembly_begin(&r2, &c, &f2, 0), -KVMUX_ERR_PROTOCOL);
    f2.value_len = 4;
    CHECK_EQ(kvmux_reassembly_begin(&r2, &c, &f2, 0), 0);
    CHECK_EQ(c.recv_window.avail, 0);
    /* Releasing message 1's bytes reopens both windows (8 >= half of 8,
     * 8 >= half of 12): the increments to send. */
    kvmux_grant g;
    kvmux_reassembly_release(&r, &c, 8, &g);
    CHECK_EQ(g.message, 8);
    CHECK_EQ(g.connection, 8);
    CHECK_EQ(kvmux_reassembly_continue(&r, &c, &k, NULL), 0);
    /* Abort message 2: its 4 unreleased bytes go back to the connection. */
    kvmux_reassembly_abort(&r2, &c, &g);
    CHECK_EQ(r2.state, KVMUX_REASM_IDLE);
    CHECK_EQ(g.message, 0);
    CHECK_EQ(g.connection, 0); /* 4 < 6: batched... */
    kvmux_reassembly_release(&r, &c, 1, &g);
    CHECK_EQ(g.connection, 0); /* 4 + 1 = 5, still under 6 */
    /* Nothing leaked: what the peer may send plus what we owe it is the
     * whole connection window again. */
    CHECK_EQ(c.recv_window.avail, 7);
    CHECK_EQ(c.recv_window.released, 5);
    /* Abort of an IDLE reassembly is harmless. */
    kvmux_reassembly_abort(&r2, &c, &g);
    CHECK_EQ(g.connection, 0);
}

/* Two messages open at once, fragments interleaved. */
static void test_reassembly_interleaved(void) {
    kvmux_session c, s;
    open_pair(&c, &s, NULL, NULL);
    const uint8_t a[] = "AAAAAAAAAA", b[] = "bbbbbbbbbbbbbbb";
    uint8_t got_a[10], got_b[15];
    kvmux_reassembly ra, rb;
    kvmux_frame f = first_frame(KVMUX_FRAME_REQUEST, 11, KVMUX_FLAG_MORE, 10, a, 3);
    CHECK_EQ(kvmux_reassembly_begin(&ra, &s, &f, 0), 0);
    memcpy(got_a, a, 3);
    f = first_frame(KVMUX_FRAME_REQUEST, 12, KVMUX_FLAG_MORE, 15, b, 5);
    CHECK_EQ(kvmux_reassembly_begin(&rb, &s, &f, 0), 0);
    memcpy(got_b, b, 5);
    struct { kvmux_reassembly *r; uint32_t id; const uint8_t *src; uint8_t *dst;
             uint32_t from, len; int more; } steps[] = {
        {&rb, 12, b, got_b, 5, 5, 1}, {&ra, 11, a, got_a, 3, 4, 1},
        {&rb, 12, b, got_b, 10, 5, 0}, {&ra, 11, a, got_a, 7, 3, 0}};
    int done = 0;
    for (size_t i = 0; i < 4; i++) {
        kvmux_frame k = cont_frame(steps[i].id, steps[i].more ? KVMUX_FLAG_MORE : 0,
                                   steps[i].src + steps[i].from, steps[i].len);
        uint32_t off = 0;
        int rc = kvmux_reassembly_continue(steps[i].r, &s, &k, &off);
        CHECK_EQ(rc, steps[i].more ? 0 : 1);
        CHECK_EQ(off, steps[i].from);
        memcpy(steps[i].dst + off, k.value, k.value_len);
        done += rc;
    }
    CHECK_EQ(done, 2);
    CHECK(memcmp(got_a, a, 10) == 0 && memcmp(got_b, b, 15) == 0);
    CHECK_EQ(s.recv_window.avail, KVMUX_DEFAULT_CONNECTION_WINDOW - 25);
}

/* ---- fragmenter ---- */

/* Plan a request for total bytes and return the fragment lengths. */
static int plan(kvmux_session *c, uint32_t keylen, uint8_t flags, uint32_t total,
                uint32_t chunk, uint32_t *lens, int max, int *first_flags) {
    static uint8_t key[70000];
    kvmux_frame head;
    memset(&head, 0, sizeof head);
    head.version = 2;
    head.type = KVMUX_FRAME_REQUEST;
    head.code = KVMUX_OP_SET;
    head.flags = flags;
    head.request_id = 5;
    uint8_t ttl[8] = {0};
    head.extras = ttl;
    head.extras_len = 8;
    head.key = key;
    head.key_len = (uint16_t)keylen;
    kvmux_fragmenter fr;
    int rc = kvmux_fragmenter_init(&fr, c, &head, total, chunk);
    if (rc != 0) return rc;
    int n = 0;
    kvmux_fragment out;
    uint32_t next = 0;
    while (n < max && kvmux_fragmenter_next(&fr, c, &out) == 1) {
        REQUIRE(out.offset == next);
        REQUIRE(out.first == (n == 0));
        if (n == 0) *first_flags = out.flags;
        else REQUIRE((out.flags == KVMUX_FLAG_MORE) == (out.offset + out.len < total));
        next += out.len;
        lens[n++] = out.len;
    }
    REQUIRE(kvmux_fragmenter_done(&fr));
    REQUIRE(next == total);
    REQUIRE(kvmux_fragmenter_next(&fr, c, &out) == -1);
    return n;
}

static void test_fragmenter_sizes(void) {
    kvmux_settings ss;
    kvmux_settings_default(&ss);
    ss.max_frame_size = KVMUX_MIN_FRAME; /* 4096: the server's frame limit */
    ss.max_value_size = KVMUX_DEFAULT_MAX_VALUE_V2;
    kvmux_session c, s;
    open_pair(&c, &s, NULL, &ss);
    uint32_t lens[4096];
    int ff = -1;
    /* head = 16 + 8 (ttl) + 3 (key) = 27; single frame up to 4096 - 27. */
    CHECK_EQ(plan(&c, 3, 0, 4096 - 27, 0, lens, 4096, &ff), 1);
    CHECK_EQ(lens[0], 4069);
    CHECK_EQ(ff, 0);
    /* One byte more: fragmented. First frame: 4096 - 27 - 4 (total) = 4065,
     * then a CONTINUATION of 5. */
    CHECK_EQ(plan(&c, 3, 0, 4070, 0, lens, 4096, &ff), 2);
    CHECK_EQ(lens[0], 4065);
    CHECK_EQ(lens[1], 5);
    CHECK_EQ(ff, KVMUX_FLAG_MORE);
    /* DEADLINE costs 4 more bytes in the first frame. */
    CHECK_EQ(plan(&c, 3, KVMUX_FLAG_DEADLINE, 10000, 0, lens, 4096, &ff), 3);
    CHECK_EQ(lens[0], 4061);
    CHECK_EQ(lens[1], 4080); /* CONTINUATION: 4096 - 16 */
    CHECK_EQ(lens[2], 10000 - 4061 - 4080);
    CHECK_EQ(ff, KVMUX_FLAG_MORE); /* DEADLINE stays in the template */
    /* A chunk cap fragments even what would fit one frame. */
    CHECK_EQ(plan(&c, 3, 0, 1000, 300, lens, 4096, &ff), 4);
    CHECK(lens[0] == 300 && lens[1] == 300 && lens[2] == 300 && lens[3] == 100);
    CHECK_EQ(plan(&c, 3, 0, 300, 300, lens, 4096, &ff), 1);
    /* Empty value: single frame. */
    CHECK_EQ(plan(&c, 3, 0, 0, 0, lens, 4096, &ff), 1);
    CHECK_EQ(lens[0], 0);
    /* A key so large the head does not fit the frame: refused. */
    CHECK_EQ(plan(&c, 4096, 0, 10, 0, lens, 4096, &ff), -KVMUX_ERR_FRAME_TOO_LARGE);
    /* A head leaving no value room in the first frame: it carries 0. */
    CHECK_EQ(plan(&c, 4096 - 16 - 8 - 4, 0, 10, 0, lens, 4096, &ff), 2);
    CHECK(lens[0] == 0 && lens[1] == 10);
    /* Over the peer's MAX_VALUE_SIZE: refused before anything is sent. */
    CHECK_EQ(plan(&c, 3, 0, KVMUX_DEFAULT_MAX_VALUE_V2 + 1, 0, lens, 4096, &ff),
             -KVMUX_ERR_FRAME_TOO_LARGE);
    /* Larger frames: the default 2 MiB peer frame. */
    kvmux_session c2, s2;
    ss.max_frame_size = KVMUX_DEFAULT_MAX_FRAME;
    ss.initial_window = KVMUX_MAX_WINDOW;
    kvmux_settings cs;
    kvmux_settings_default(&cs);
    open_pair(&c2, &s2, &cs, &ss);
    /* 5 MiB value, connection window 16 MiB (default), message unbounded. */
    uint32_t total = 5u * 1024 * 1024;
    int n = plan(&c2, 3, 0, total, 0, lens, 4096, &ff);
    CHECK_EQ(n, 3);
    CHECK_EQ(lens[0], KVMUX_DEFAULT_MAX_FRAME - 31);
    CHECK_EQ(lens[1], KVMUX_DEFAULT_MAX_FRAME - 16);
}

/* Windows limit the fragments; a stall only stops this message; a grant
 * resumes it; single-frame messages never wait. */
static void test_fragmenter_windows(void) {
    kvmux_settings ss;
    kvmux_settings_default(&ss);
    ss.max_frame_size = KVMUX_MIN_FRAME;
    ss.initial_window = 1000;       /* the server grants 1000 per message */
    ss.connection_window = 1500;    /* and 1500 on the connection */
    kvmux_session c, s;
    open_pair(&c, &s, NULL, &ss);
    kvmux_frame head;
    memset(&head, 0, sizeof head);
    head.version = 2;
    head.type = KVMUX_FRAME_REQUEST;
    head.code = KVMUX_OP_SET;
    head.key = (const uint8_t *)"k";
    head.key_len = 1;
    kvmux_fragmenter a, b;
    kvmux_fragment out;
    head.request_id = 1;
    REQUIRE(kvmux_fragmenter_init(&a, &c, &head, 5000, 0) == 0);
    head.request_id = 2;
    REQUIRE(kvmux_fragmenter_init(&b, &c, &head, 5000, 0) == 0);
    /* a's first frame: limited by its message window. */
    CHECK_EQ(kvmux_fragmenter_next(&a, &c, &out), 1);
    CHECK(out.first && out.len == 1000 && out.flags == KVMUX_FLAG_MORE);
    CHECK_EQ(kvmux_fragmenter_next(&a, &c, &out), 0); /* message stalled */
    /* b: the connection has 500 left. */
    CHECK_EQ(kvmux_fragmenter_next(&b, &c, &out), 1);
    CHECK_EQ(out.len, 500);
    CHECK_EQ(kvmux_fragmenter_next(&b, &c, &out), 0); /* connection stalled */
    /* A small message still goes: single frames are not flow-controlled. */
    kvmux_fragmenter small;
    head.request_id = 3;
    REQUIRE(kvmux_fragmenter_init(&small, &c, &head, 100, 0) == 0);
    CHECK_EQ(kvmux_fragmenter_next(&small, &c, &out), 1);
    CHECK(out.first && out.len == 100 && out.flags == 0);
    CHECK_EQ(c.send_window.avail, 0);
    /* Connection grant of 300: only b (which has message window) moves. */
    CHECK_EQ(kvmux_window_grant(&c.send_window, 300), 0);
    CHECK_EQ(kvmux_fragmenter_next(&a, &c, &out), 0);
    CHECK_EQ(kvmux_fragmenter_next(&b, &c, &out), 1);
    CHECK(!out.first && out.offset == 500 && out.len == 300 &&
          out.flags == KVMUX_FLAG_MORE);
    /* A message grant for a, through a real WINDOW_UPDATE frame. */
    uint8_t wub[KVMUX_WINDOW_UPDATE_LEN];
    kvmux_frame wu;
    size_t n = kvmux_encode_window_update(wub, 2, 1, 4000);
    REQUIRE(kvmux_frame_decode(wub, n, KVMUX_DEFAULT_MAX_FRAME, &wu) == (int)n);
    CHECK_EQ(kvmux_fragmenter_on_window_update(&a, &wu), 0);
    CHECK_EQ(kvmux_fragmenter_on_window_update(&b, &wu), -KVMUX_ERR_PROTOCOL); /* not b's */
    CHECK_EQ(kvmux_fragmenter_next(&a, &c, &out), 0); /* connection still empty */
    CHECK_EQ(kvmux_window_grant(&c.send_window, 100000), 0);
    CHECK_EQ(kvmux_fragmenter_next(&a, &c, &out), 1);
    CHECK(out.offset == 1000 && out.len == 4000 && out.flags == 0);
    CHECK(kvmux_fragmenter_done(&a));
    /* Window overflow through a grant. */
    n = kvmux_encode_window_update(wub, 2, 2, KVMUX_MAX_WINDOW);
    REQUIRE(kvmux_frame_decode(wub, n, KVMUX_DEFAULT_MAX_FRAME, &wu) == (int)n);
    CHECK_EQ(kvmux_fragmenter_on_window_update(&b, &wu), -KVMUX_ERR_PROTOCOL);

    /* The first frame goes out with 0 value bytes when there is no window
     * at all, so the receiver can reserve early. */
    kvmux_fragmenter z;
    head.request_id = 4;
    c.send_window.avail = 0;
    REQUIRE(kvmux_fragmenter_init(&z, &c, &head, 5000, 0) == 0);
    CHECK_EQ(kvmux_fragmenter_next(&z, &c, &out), 1);
    CHECK(out.first && out.len == 0 && out.flags == KVMUX_FLAG_MORE);
    CHECK_EQ(kvmux_fragmenter_next(&z, &c, &out), 0);
    /* Template type must be REQUEST or RESPONSE. */
    head.type = KVMUX_FRAME_PING;
    CHECK_EQ(kvmux_fragmenter_init(&z, &c, &head, 5, 0), -KVMUX_ERR_PROTOCOL);
}

/* ---- end to end ---- */

/* One direction of a sans-IO connection: the client sends NMSG large SET
 * requests, fragments interleaved round-robin; every frame is encoded,
 * decoded by the server, checked, reassembled, and the server's
 * WINDOW_UPDATEs are encoded, decoded and applied by the client. If
 * starve_id != 0 the server never releases that message's bytes (a
 * receiver that never grants it): the others must complete anyway. */
#define NMSG 4
static void run_e2e(uint32_t max_frame, uint32_t msg_window, uint32_t conn_window,
                    uint32_t chunk, uint32_t starve_id, int all_single) {
    kvmux_settings ss;
    kvmux_settings_default(&ss);
    ss.max_frame_size = max_frame;
    ss.initial_window = msg_window;
    ss.connection_window = conn_window;
    ss.max_value_size = KVMUX_DEFAULT_MAX_VALUE_V2;
    kvmux_session c, s;
    open_pair(&c, &s, NULL, &ss);

    const uint32_t totals[NMSG] = {100000, 1, 70001, 250000};
    uint8_t *src[NMSG], *dst[NMSG];
    kvmux_fragmenter fr[NMSG];
    kvmux_reassembly ra[NMSG];
    int done[NMSG] = {0};
    uint8_t *wire = malloc(max_frame + KVMUX_FRAME_HDR_LEN);
    REQUIRE(wire);
    for (int i = 0; i < NMSG; i++) {
        src[i] = malloc(totals[i]);
        dst[i] = malloc(totals[i]);
        REQUIRE(src[i] && dst[i]);
        for (uint32_t k = 0; k < totals[i]; k++) src[i][k] = (uint8_t)(k * 7 + (uint32_t)i);
        kvmux_frame head;
        memset(&head, 0, sizeof head);
        head.version = c.version;
        head.type = KVMUX_FRAME_REQUEST;
        head.code = KVMUX_OP_SET;
        head.request_id = (uint32_t)i + 1;
        head.key = (const uint8_t *)"key";
        head.key_len = 3;
        REQUIRE(kvmux_fragmenter_init(&fr[i], &c, &head, totals[i], chunk) == 0);
        memset(&ra[i], 0, sizeof ra[i]);
    }
    int frames = 0, updates = 0, stalled_rounds = 0;
    for (int round = 0; round < 2000000; round++) {
        int progressed = 0;
        for (int i = 0; i < NMSG; i++) {
            kvmux_fragment out;
            if (kvmux_fragmenter_next(&fr[i], &c, &out) != 1) continue;
            progressed = 1;
            /* Encode the fragment as the client's I/O layer would. */
            size_t n;
            if (out.first) {
                kvmux_frame f;
                memset(&f, 0, sizeof f);
                f.version = c.version;
                f.type = KVMUX_FRAME_REQUEST;
                f.code = KVMUX_OP_SET;
                f.request_id = (uint32_t)i + 1;
                f.flags = out.flags;
                f.total_value_len = totals[i];
                f.key = (const uint8_t *)"key";
                f.key_len = 3;
                f.value = src[i] + out.offset;
                f.value_len = out.len;
                n = kvmux_frame_encode(wire, &f);
            } else {
                kvmux_encode_continuation_header(wire, c.version, (uint32_t)i + 1, out.flags,
                                                 out.len);
                memcpy(wire + KVMUX_FRAME_HDR_LEN, src[i] + out.offset, out.len);
                n = KVMUX_FRAME_HDR_LEN + out.len;
            }
            REQUIRE(n <= max_frame);
            frames++;
            /* The server's side. */
            kvmux_frame f;
            REQUIRE(kvmux_frame_decode(wire, n, s.local.max_frame_size, &f) == (int)n);
            REQUIRE(kvmux_session_check_recv(&s, &f) == 0);
            uint32_t off = 0;
            int rc;
            if (f.type == KVMUX_FRAME_REQUEST && kvmux_frame_has_total(&f)) {
                rc = kvmux_reassembly_begin(&ra[i], &s, &f, 0);
                REQUIRE(rc == 0);
            } else if (f.type == KVMUX_FRAME_REQUEST) {
                rc = 1; /* single frame */
            } else {
                rc = kvmux_reassembly_continue(&ra[i], &s, &f, &off);
                REQUIRE(rc >= 0);
            }
            if (f.value_len) memcpy(dst[i] + off, f.value, f.value_len);
            if (rc == 1) done[i] = 1;
            if (f.type == KVMUX_FRAME_REQUEST && !kvmux_frame_has_total(&f)) continue;
            if ((uint32_t)i + 1 == starve_id) continue; /* never grants it */
            kvmux_grant g;
            kvmux_reassembly_release(&ra[i], &s, f.value_len, &g);
            /* Send the updates back through real bytes. */
            uint8_t wu[KVMUX_WINDOW_UPDATE_LEN];
            kvmux_frame u;
            if (g.message) {
                size_t m = kvmux_encode_window_update(wu, s.version, f.request_id, g.message);
                REQUIRE(kvmux_frame_decode(wu, m, c.local.max_frame_size, &u) == (int)m);
                REQUIRE(kvmux_session_check_recv(&c, &u) == 0);
                REQUIRE(kvmux_fragmenter_on_window_update(&fr[i], &u) == 0);
                updates++;
            }
            if (g.connection) {
                size_t m = kvmux_encode_window_update(wu, s.version, 0, g.connection);
                REQUIRE(kvmux_frame_decode(wu, m, c.local.max_frame_size, &u) == (int)m);
                REQUIRE(kvmux_session_check_recv(&c, &u) == 0);
                REQUIRE(kvmux_session_on_window_update(&c, &u) == 0);
                updates++;
            }
        }
        if (!progressed && ++stalled_rounds > 2) break;
    }
    int ok = 1;
    for (int i = 0; i < NMSG; i++) {
        int starved = (uint32_t)i + 1 == starve_id;
        int must_finish = !starved || totals[i] <= msg_window;
        if (must_finish && (!done[i] || memcmp(src[i], dst[i], totals[i]) != 0)) ok = 0;
        if (starved && totals[i] > msg_window && done[i]) ok = 0;
        free(src[i]);
        free(dst[i]);
    }
    free(wire);
    if (!ok)
        fprintf(stderr, "e2e frame=%u win=%u conn=%u chunk=%u starve=%u failed\n", max_frame,
                msg_window, conn_window, chunk, starve_id);
    CHECK(ok);
    if (all_single) {
        /* Everything fit one frame: no fragments, no flow control. */
        CHECK_EQ(frames, NMSG);
        CHECK_EQ(updates, 0);
    } else {
        CHECK(frames > NMSG);
        /* Updates are due once a threshold (half a window) is released:
         * the fragmented bytes (420001 in all) against the connection
         * window, the biggest message against its own. Below both, a
         * sender never needs one (and so gets none). */
        int need = 420001u >= conn_window / 2 || 250000u >= msg_window / 2;
        if (!starve_id && need) CHECK(updates > 0);
        if (!starve_id && !need) CHECK_EQ(updates, 0);
    }
}

static void test_end_to_end(void) {
    run_e2e(KVMUX_MIN_FRAME, 16384, 65536, 0, 0, 0);
    run_e2e(KVMUX_MIN_FRAME, 1, 1, 0, 0, 0);       /* byte-at-a-time windows */
    run_e2e(65536, KVMUX_DEFAULT_INITIAL_WINDOW, KVMUX_DEFAULT_CONNECTION_WINDOW, 0, 0, 0);
    run_e2e(65536, 10000, 30000, 777, 0, 0);       /* odd chunk cap */
    /* 2 MiB frames: every message fits one frame, tiny windows or not. */
    run_e2e(KVMUX_DEFAULT_MAX_FRAME, 4096, 4096, 0, 0, 1);
    /* ...unless the sender caps its chunks (to interleave big values). */
    run_e2e(KVMUX_DEFAULT_MAX_FRAME, 4096, 1000000, 65536, 0, 0);
    /* A receiver that never grants message 4 (250000 bytes): with the
     * connection window big enough for everything else, the others all
     * complete and only message 4 stalls. */
    run_e2e(KVMUX_MIN_FRAME, 65536, 1000000, 0, 4, 0);
    /* Starving message 1 with a small connection window: message 1 can pin
     * at most its own message window (16384) of the connection window, so
     * the rest still complete. */
    run_e2e(KVMUX_MIN_FRAME, 16384, 40000, 0, 1, 0);
}

int main(void) {
    test_window();
    test_window_release();
    test_reassembly_in_order();
    test_reassembly_errors();
    test_reassembly_window_overrun();
    test_reassembly_interleaved();
    test_fragmenter_sizes();
    test_fragmenter_windows();
    test_end_to_end();
    return test_report();
}
