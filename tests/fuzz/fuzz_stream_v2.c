/* libFuzzer harness for the stateful side of protocol v2 in the sans-IO
 * core: session checks, fragment reassembly, windows, CANCEL and GOAWAY,
 * driven the way an I/O layer drives them.
 *
 * Input: byte 0 picks the role we play (bit 0 set: we are the server) and
 * the peer's version cap (bit 1 set: a v1 peer); bytes 1..2 pick our windows (small,
 * so the fuzzer reaches the edges); the rest is the peer's byte stream
 * after the handshake, decoded frame by frame. Each frame passes
 * kvmux_session_check_recv and is then applied: first fragments open a
 * kvmux_reassembly (at most 8 at once, keyed by id), CONTINUATIONs feed
 * one, CANCEL (server) and RESPONSE CANCELED (client) abort one,
 * WINDOW_UPDATEs feed the connection window or one of two outgoing
 * kvmux_fragmenters we pump after every frame, GOAWAY drains. As a server
 * we also cap CANCELs with a kvmux_rate (time advances 1 ms per frame) and
 * send a GOAWAY when a PING's first opaque byte is 'G'. The first protocol
 * error ends the input, as closing the connection would.
 *
 * Invariants checked (abort() on violation), beyond "no crash, no UB":
 *   - receive-side conservation: recv_window.avail + recv_window.released +
 *     bytes held unreleased by reassemblies == our CONNECTION_WINDOW;
 *   - every reassembly has received <= total, released <= received;
 *   - every grant is encodable: a WINDOW_UPDATE we would send decodes;
 *   - fragmenters hand out contiguous ranges within the total, frames that
 *     fit the peer's frame size, and never more than the windows allowed;
 *   - nothing v2 is accepted on a v1 session.
 * Not part of ctest; build like fuzz_frame_decode.c.
 */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLOTS 8

typedef struct out_msg {
    kvmux_fragmenter fr;
    uint32_t next;   /* expected next offset */
    int live;
} out_msg;

typedef struct harness {
    kvmux_session me;
    kvmux_reassembly slot[SLOTS];
    out_msg out[2];
    uint32_t conn_window; /* our CONNECTION_WINDOW */
    kvmux_rate cancels;   /* server: CANCEL flood cap */
    uint64_t now_ms;      /* 1 ms per frame */
} harness;

static void check_grant_encodable(uint8_t version, uint32_t id, uint32_t inc) {
    if (inc == 0) return;
    uint8_t b[KVMUX_WINDOW_UPDATE_LEN];
    kvmux_frame f;
    size_t n = kvmux_encode_window_update(b, version, id, inc);
    if (kvmux_frame_decode(b, n, KVMUX_MIN_FRAME, &f) != (int)n) abort();
}

static void check_conservation(const harness *h) {
    if (!kvmux_session_is_v2(&h->me)) return;
    uint64_t held = 0;
    for (int i = 0; i < SLOTS; i++) {
        const kvmux_reassembly *r = &h->slot[i];
        if (r->state == KVMUX_REASM_IDLE) continue;
        if (r->received > r->total || r->released > r->received) abort();
        held += r->received - r->released;
    }
    if ((uint64_t)h->me.recv_window.avail + h->me.recv_window.released + held !=
        h->conn_window)
        abort();
}

static kvmux_reassembly *slot_find(harness *h, uint32_t id) {
    for (int i = 0; i < SLOTS; i++)
        if (h->slot[i].state != KVMUX_REASM_IDLE && h->slot[i].request_id == id)
            return &h->slot[i];
    return NULL;
}

/* Release everything r holds and check the grants. A completed message is
 * then freed (the I/O layer hands the value up). */
static void slot_consume(harness *h, kvmux_reassembly *r) {
    kvmux_grant g;
    uint32_t id = r->request_id;
    kvmux_reassembly_release(r, &h->me, r->received - r->released, &g);
    check_grant_encodable(h->me.version, id, g.message);
    check_grant_encodable(h->me.version, 0, g.connection);
    if (r->state == KVMUX_REASM_COMPLETE) memset(r, 0, sizeof *r);
}

/* Pump the outgoing fragmenters as far as the windows allow. */
static void pump(harness *h) {
    for (int i = 0; i < 2; i++) {
        out_msg *o = &h->out[i];
        if (!o->live) continue;
        for (int k = 0; k < 64; k++) {
            uint32_t before = kvmux_window_sendable(&o->fr.window, &h->me.send_window);
            kvmux_fragment fr;
            int rc = kvmux_fragmenter_next(&o->fr, &h->me, &fr);
            if (rc == -1) { o->live = 0; break; }
            if (rc == 0) {
                if (before != 0) abort(); /* blocked with window available */
                break;
            }
            if (fr.offset != o->next || fr.len > o->fr.total - fr.offset) abort();
            if (!fr.first && (fr.len == 0 || fr.len > before)) abort();
            if (fr.first && o->fr.state != KVMUX_FRAG_DONE && fr.len > before) abort();
            if (!fr.first && fr.len + KVMUX_FRAME_HDR_LEN > h->me.peer.max_frame_size) abort();
            if ((fr.flags & KVMUX_FLAG_MORE) != 0 != (fr.offset + fr.len < o->fr.total))
                abort();
            o->next += fr.len;
        }
    }
}

static int apply(harness *h, const kvmux_frame *f) {
    int rc = kvmux_session_check_recv(&h->me, f);
    if (rc != 0) return rc;
    if (!kvmux_session_is_v2(&h->me) &&
        (f->flags != 0 || f->type >= KVMUX_FRAME_CANCEL))
        abort(); /* a v1 session accepted something v2 */
    kvmux_reassembly *r;
    kvmux_grant g;
    switch (f->type) {
    case KVMUX_FRAME_REQUEST:
    case KVMUX_FRAME_RESPONSE:
        r = slot_find(h, f->request_id);
        if (r && f->type == KVMUX_FRAME_RESPONSE && f->code == KVMUX_STATUS_CANCELED &&
            !kvmux_frame_has_more(f)) {
            kvmux_reassembly_abort(r, &h->me, &g);
            check_grant_encodable(h->me.version, 0, g.connection);
            return 0;
        }
        if (r) return -KVMUX_ERR_PROTOCOL; /* a second first frame */
        if (!kvmux_frame_has_total(f)) return 0;
        for (int i = 0; i < SLOTS && !r; i++)
            if (h->slot[i].state == KVMUX_REASM_IDLE) r = &h->slot[i];
        if (!r) return -KVMUX_ERR_PROTOCOL; /* over our concurrency */
        rc = kvmux_reassembly_begin(r, &h->me, f, 0);
        if (rc != 0) return rc;
        slot_consume(h, r);
        return 0;
    case KVMUX_FRAME_CONTINUATION:
        r = slot_find(h, f->request_id);
        if (!r || r->state != KVMUX_REASM_OPEN) return -KVMUX_ERR_PROTOCOL;
        rc = kvmux_reassembly_continue(r, &h->me, f, NULL);
        if (rc < 0) return rc;
        slot_consume(h, r);
        return 0;
    case KVMUX_FRAME_CANCEL:
        if (!kvmux_rate_allow(&h->cancels, h->now_ms)) return -KVMUX_ERR_FLOOD;
        r = slot_find(h, f->request_id);
        if (r) {
            kvmux_reassembly_abort(r, &h->me, &g);
            check_grant_encodable(h->me.version, 0, g.connection);
        }
        return 0;
    case KVMUX_FRAME_WINDOW_UPDATE:
        if (f->request_id == 0) return kvmux_session_on_window_update(&h->me, f);
        for (int i = 0; i < 2; i++)
            if (h->out[i].fr.request_id == f->request_id && h->out[i].live)
                return kvmux_fragmenter_on_window_update(&h->out[i].fr, f);
        return 0; /* finished or unknown message: ignored */
    case KVMUX_FRAME_GOAWAY:
        return kvmux_session_on_goaway(&h->me, f);
    case KVMUX_FRAME_PING:
        if (h->me.role == KVMUX_ROLE_SERVER && f->extras[0] == 'G') {
            uint8_t b[KVMUX_GOAWAY_MAX_LEN];
            kvmux_frame g2;
            size_t n = kvmux_session_encode_goaway(&h->me, b, f->request_id, 0, "bye");
            if (kvmux_session_is_v2(&h->me) != (n > 0)) abort();
            if (n && (kvmux_frame_decode(b, n, KVMUX_MIN_FRAME, &g2) != (int)n ||
                      h->me.drain != KVMUX_DRAIN_GOAWAY_SENT))
                abort();
        }
        return 0;
    default:
        return 0;
    }
}

/* Handshake through real bytes with the given caps and our settings. */
static int setup(harness *h, int server, uint8_t peer_max, const kvmux_settings *mine) {
    kvmux_session peer;
    kvmux_settings ps;
    kvmux_settings_default(&ps);
    ps.max_frame_size = KVMUX_MIN_FRAME;
    ps.initial_window = 3000;
    ps.connection_window = 5000;
    uint8_t hello[KVMUX_HELLO_MAX_LEN], ack[KVMUX_HELLO_ACK_MAX_LEN];
    kvmux_frame f;
    kvmux_session *c = server ? &peer : &h->me, *s = server ? &h->me : &peer;
    kvmux_session_init(c, KVMUX_ROLE_CLIENT, server ? &ps : mine);
    kvmux_session_init(s, KVMUX_ROLE_SERVER, server ? mine : &ps);
    peer.max_version = peer_max;
    size_t n = kvmux_session_encode_hello(c, hello, "c");
    if (kvmux_frame_decode(hello, n, KVMUX_MIN_FRAME, &f) != (int)n) abort();
    if (kvmux_session_check_recv(s, &f) != 0) abort();
    int m = kvmux_session_accept_hello(s, &f, ack, "s");
    if (m <= 0) abort();
    if (kvmux_frame_decode(ack, (size_t)m, KVMUX_MIN_FRAME, &f) != m) abort();
    if (kvmux_session_on_hello_ack(c, &f) != 0) abort();
    if (c->version != (peer_max >= 2 ? 2 : 1)) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    static harness h;
    memset(&h, 0, sizeof h);
    int server = data[0] & 1;
    uint8_t peer_max = (data[0] & 2) ? 1 : 2;
    kvmux_settings mine;
    kvmux_settings_default(&mine);
    mine.max_frame_size = KVMUX_MIN_FRAME;
    mine.max_value_size = 1u << 20;
    mine.initial_window = 1u + (uint32_t)data[1] * 37u;
    mine.connection_window = 1u + (uint32_t)data[2] * 97u;
    h.conn_window = mine.connection_window;
    setup(&h, server, peer_max, &mine);
    kvmux_rate_init(&h.cancels, 50, 0);
    data += 3;
    size -= 3;

    /* Two outgoing messages of our own, to exercise the sender side
     * against the peer's WINDOW_UPDATEs. */
    if (kvmux_session_is_v2(&h.me)) {
        kvmux_frame head;
        memset(&head, 0, sizeof head);
        head.version = h.me.version;
        head.type = server ? KVMUX_FRAME_RESPONSE : KVMUX_FRAME_REQUEST;
        head.key = server ? NULL : (const uint8_t *)"k";
        head.key_len = server ? 0 : 1;
        for (int i = 0; i < 2; i++) {
            head.request_id = (uint32_t)i + 1;
            if (kvmux_fragmenter_init(&h.out[i].fr, &h.me, &head, 20000u * (uint32_t)(i + 1),
                                      i ? 1000 : 0) != 0)
                abort();
            h.out[i].live = 1;
        }
    }
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    size_t off = 0;
    pump(&h);
    while (off < size) {
        kvmux_frame f;
        int n = kvmux_frame_decode(buf + off, size - off, h.me.local.max_frame_size, &f);
        if (n <= 0) break; /* need more (end of input) or a protocol error */
        off += (size_t)n;
        h.now_ms++;
        if (apply(&h, &f) != 0) break;
        check_conservation(&h);
        pump(&h);
    }
    check_conservation(&h);
    free(buf);
    return 0;
}
