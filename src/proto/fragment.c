/* kvmux fragmentation (protocol v2): the bookkeeping of one fragmented
 * message on each side of the wire -- kvmux_fragmenter for the sender,
 * kvmux_reassembly for the receiver.
 *
 * Wire rules (docs/PROTOCOL.md, "Fragments"): a message whose frame would
 * exceed the peer's MAX_FRAME_SIZE is sent as a first frame (REQUEST or
 * RESPONSE with flag MORE and the u32 total_value_len prefix) followed by
 * CONTINUATION frames with the rest of the value, the last one without
 * MORE. Only the value is split; the key and extras travel in the first
 * frame. Fragments of different messages interleave freely. The value bytes
 * of a fragmented message (first frame's value included) are flow
 * controlled by two windows, the message's and the connection's; a
 * single-frame message is not, so small requests never wait for window.
 *
 * Design: both structs only count; they never see or copy value bytes. The
 * sender asks "what next?" and gets an (offset, len, flags, first) tuple it
 * turns into a frame; the receiver hands each frame over, gets back the
 * offset to copy to, and reports the bytes it consumed, which tells it
 * which WINDOW_UPDATEs to send. Every check a receiver needs -- the id, the
 * order, the running total, MORE set exactly while bytes are missing, both
 * windows -- is made before any state changes, so a rejected frame leaves
 * everything as it was and the caller just sends ERROR and closes.
 *
 * What it is not: it does not map request ids to messages (the client's
 * pending table and the server's request slots hold these structs), does
 * not allocate the value buffer (the receiver reserves total_value_len
 * bytes after kvmux_reassembly_begin), and does no I/O.
 */
#include "proto.h"

#include <string.h>

/* ---- receiver ---- */

/* Start a reassembly; contract in proto.h. */
int kvmux_reassembly_begin(kvmux_reassembly *r, kvmux_session *s,
                           const kvmux_frame *first, uint32_t max_value) {
    if (!kvmux_session_is_v2(s) || !kvmux_frame_has_total(first))
        return -KVMUX_ERR_PROTOCOL;
    uint32_t limit = s->local.max_value_size;
    if (max_value != 0 && max_value < limit) limit = max_value;
    if (first->total_value_len > limit) return -KVMUX_ERR_FRAME_TOO_LARGE;
    /* The decoder guarantees this; a hand-built frame might not. */
    if (first->total_value_len <= first->value_len) return -KVMUX_ERR_BAD_LENGTH;

    kvmux_window w;
    kvmux_window_init(&w, s->local.initial_window);
    if (first->value_len > w.avail || first->value_len > s->recv_window.avail)
        return -KVMUX_ERR_PROTOCOL;
    (void)kvmux_window_consume(&w, first->value_len);
    (void)kvmux_window_consume(&s->recv_window, first->value_len);

    r->state = KVMUX_REASM_OPEN;
    r->request_id = first->request_id;
    r->total = first->total_value_len;
    r->received = first->value_len;
    r->released = 0;
    r->window = w;
    return 0;
}

/* Account one CONTINUATION; contract in proto.h. Checks run from the
 * cheapest and most basic (is this our message at all) to the windows, and
 * nothing is changed until all passed. */
int kvmux_reassembly_continue(kvmux_reassembly *r, kvmux_session *s,
                              const kvmux_frame *cont, uint32_t *offset) {
    if (r->state != KVMUX_REASM_OPEN || cont->type != KVMUX_FRAME_CONTINUATION ||
        cont->request_id != r->request_id)
        return -KVMUX_ERR_PROTOCOL;
    uint32_t missing = r->total - r->received;
    if (cont->value_len == 0 || cont->value_len > missing) return -KVMUX_ERR_BAD_LENGTH;
    int last = cont->value_len == missing;
    /* MORE exactly while bytes are missing: a short last fragment and a
     * MORE that announces fragments with nothing left to carry are the
     * same kind of lie about the message's length. */
    if (last == kvmux_frame_has_more(cont)) return -KVMUX_ERR_BAD_LENGTH;
    if (cont->value_len > r->window.avail || cont->value_len > s->recv_window.avail)
        return -KVMUX_ERR_PROTOCOL;
    (void)kvmux_window_consume(&r->window, cont->value_len);
    (void)kvmux_window_consume(&s->recv_window, cont->value_len);
    if (offset) *offset = r->received;
    r->received += cont->value_len;
    if (!last) return 0;
    r->state = KVMUX_REASM_COMPLETE;
    return 1;
}

/* The caller consumed n bytes; contract in proto.h. */
void kvmux_reassembly_release(kvmux_reassembly *r, kvmux_session *s, uint32_t n,
                              kvmux_grant *g) {
    g->message = 0;
    g->connection = 0;
    if (r->state == KVMUX_REASM_IDLE) return;
    uint32_t unreleased = r->received - r->released;
    if (n > unreleased) n = unreleased;
    r->released += n;
    g->connection = kvmux_window_release(&s->recv_window, n);
    /* Once complete, the peer has nothing more to send on this message:
     * a message update would only be noise (and a late frame the peer
     * must ignore). */
    if (r->state == KVMUX_REASM_OPEN) g->message = kvmux_window_release(&r->window, n);
}

/* Drop the message; contract in proto.h. The connection window must get
 * back every byte the dropped message took, or each canceled transfer
 * would shrink it for good. */
void kvmux_reassembly_abort(kvmux_reassembly *r, kvmux_session *s, kvmux_grant *g) {
    g->message = 0;
    g->connection = 0;
    if (r->state != KVMUX_REASM_IDLE) {
        uint32_t unreleased = r->received - r->released;
        g->connection = kvmux_window_release(&s->recv_window, unreleased);
    }
    memset(r, 0, sizeof *r);
    r->state = KVMUX_REASM_IDLE;
}

/* ---- sender ---- */

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* Plan a message; contract in proto.h. Sizes are computed in 64 bits:
 * head + a value near 4 GiB must not wrap into "fits". */
int kvmux_fragmenter_init(kvmux_fragmenter *f, const kvmux_session *s,
                          const kvmux_frame *head, uint32_t total_value_len,
                          uint32_t max_chunk) {
    if (head->type != KVMUX_FRAME_REQUEST && head->type != KVMUX_FRAME_RESPONSE)
        return -KVMUX_ERR_PROTOCOL;
    kvmux_frame t = *head;
    t.flags &= (uint8_t)~KVMUX_FLAG_MORE;
    t.value_len = 0;
    uint64_t single = (uint64_t)kvmux_frame_size(&t) + total_value_len;
    uint32_t peer_max = s->peer.max_frame_size;
    int v2 = kvmux_session_is_v2(s);
    int fits = single <= peer_max;
    if (fits && (!v2 || max_chunk == 0 || total_value_len <= max_chunk)) {
        memset(f, 0, sizeof *f);
        f->state = KVMUX_FRAG_SINGLE;
        f->request_id = head->request_id;
        f->total = total_value_len;
        return 0;
    }
    if (!v2) return -KVMUX_ERR_FRAME_TOO_LARGE;
    if (total_value_len > s->peer.max_value_size) return -KVMUX_ERR_FRAME_TOO_LARGE;
    t.flags |= KVMUX_FLAG_MORE;
    uint64_t head_len = kvmux_frame_size(&t); /* with the total prefix */
    if (head_len > peer_max) return -KVMUX_ERR_FRAME_TOO_LARGE;

    uint32_t first_room = (uint32_t)(peer_max - head_len);
    uint32_t cont_room = peer_max - KVMUX_FRAME_HDR_LEN;
    if (max_chunk != 0) {
        first_room = min_u32(first_room, max_chunk);
        cont_room = min_u32(cont_room, max_chunk);
    }
    memset(f, 0, sizeof *f);
    f->state = KVMUX_FRAG_FIRST;
    f->request_id = head->request_id;
    f->total = total_value_len;
    f->first_room = first_room;
    f->cont_room = cont_room;
    kvmux_window_init(&f->window, s->peer.initial_window);
    return 0;
}

/* Next fragment; contract in proto.h. */
int kvmux_fragmenter_next(kvmux_fragmenter *f, kvmux_session *s,
                          kvmux_fragment *out) {
    uint32_t n;
    switch (f->state) {
    case KVMUX_FRAG_SINGLE:
        out->offset = 0;
        out->len = f->total;
        out->flags = 0;
        out->first = 1;
        f->sent = f->total;
        f->state = KVMUX_FRAG_DONE;
        return 1;
    case KVMUX_FRAG_FIRST:
        /* The first frame goes out even with no window (0 value bytes),
         * so the receiver learns the total and can reserve early. It
         * must stay strictly shorter than the message: MORE is set. */
        n = min_u32(f->first_room, kvmux_window_sendable(&f->window, &s->send_window));
        n = min_u32(n, f->total - 1);
        (void)kvmux_window_consume(&f->window, n);
        (void)kvmux_window_consume(&s->send_window, n);
        out->offset = 0;
        out->len = n;
        out->flags = KVMUX_FLAG_MORE;
        out->first = 1;
        f->sent = n;
        f->state = KVMUX_FRAG_CONT;
        return 1;
    case KVMUX_FRAG_CONT:
        n = kvmux_window_sendable(&f->window, &s->send_window);
        if (n == 0) return 0; /* stalled: only this message waits */
        n = min_u32(min_u32(n, f->cont_room), f->total - f->sent);
        (void)kvmux_window_consume(&f->window, n);
        (void)kvmux_window_consume(&s->send_window, n);
        out->offset = f->sent;
        out->len = n;
        out->first = 0;
        f->sent += n;
        out->flags = f->sent < f->total ? KVMUX_FLAG_MORE : 0;
        if (f->sent == f->total) f->state = KVMUX_FRAG_DONE;
        return 1;
    default:
        return -1;
    }
}

/* A WINDOW_UPDATE for this message; contract in proto.h. */
int kvmux_fragmenter_on_window_update(kvmux_fragmenter *f, const kvmux_frame *wu) {
    if (wu->type != KVMUX_FRAME_WINDOW_UPDATE || wu->request_id != f->request_id ||
        wu->extras_len != 4)
        return -KVMUX_ERR_PROTOCOL;
    return kvmux_window_grant(&f->window, kvmux_window_update_increment(wu));
}
