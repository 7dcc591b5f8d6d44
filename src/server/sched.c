/* The output scheduler of a kvmuxd connection: how value-carrying
 * responses leave, and how large ones are cut into fragments that share
 * the connection with everything else (protocol v2).
 *
 * Design. A connection has two kinds of output:
 *   1. complete frames in the output queue (outbuf.c): every small
 *      response, PONG, WINDOW_UPDATE, GOAWAY, ERROR, in the order
 *      produced;
 *   2. streams: fragmented RESPONSEs in progress (GET/WAIT of a value
 *      larger than --fragment-size on a v2 connection), each holding a
 *      reference to the store value and a kvmux_fragmenter (proto.h) that
 *      knows the client's frame size and windows.
 * The flush (conn.c) writes the queue; only when the queue is EMPTY does it
 * ask kvmux__sched_fill for one more fragment, taken round-robin from the
 * streams that have window. So a small response produced at any moment
 * waits behind at most one fragment (<= --fragment-size bytes), fragments
 * of several large responses interleave fairly, and a stream whose window
 * is exhausted simply is not picked: it stalls alone until the client's
 * WINDOW_UPDATE, while small requests keep flowing.
 *
 * Memory. A stream never copies its value: each fragment is queued as a
 * reference chunk (outbuf.c) holding its own reference to the value, so a
 * slow or stalled consumer costs one fragment of queue at most, plus the
 * value itself (which the store holds anyway unless it has been
 * overwritten since). At most one fragment is materialised per flush round,
 * and only into an empty queue, so --max-output-buffer (which counts the
 * queue) keeps its meaning. Streams hold their request's credit, so their
 * number is bounded by --max-outstanding.
 *
 * The same by-reference path serves large single-frame responses (v1, or
 * v2 values below --fragment-size that still exceed the inline copy size):
 * the header is encoded into the queue and the value follows as a
 * reference chunk, one writev, no copy. What this file is not: it does not
 * write to the socket (conn.c does) and does not read the store (dispatch.c
 * and waits.c do, and hand over a reference). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

struct kvmux_ostream {
    kvmux_ostream *prev, *next;    /* c->ostreams */
    kvmux_fragmenter frag;         /* what to send next, and the windows */
    kvmux_store_value *val;        /* the stream's own reference */
    uint8_t ext[8];                /* response extras: u64 version */
};

static void release_value(void *ctx) { kvmux_store_value_release(ctx); }

/* Queue n bytes of v starting at off by reference. Consumes the caller's
 * reference ref (taken for this chunk). Returns 0 or -1 (closed). */
static int send_ref(kvmux_conn *c, kvmux_store_value *ref, size_t off, size_t n) {
    if (c->state != KVMUX_CONN_OPEN && c->state != KVMUX_CONN_DRAINING) {
        kvmux_store_value_release(ref);
        return -1;
    }
    if (kvmux__outbuf_append_ref(&c->out, kvmux_store_value_data(ref) + off, n,
                                 release_value, ref) != 0) {
        kvmux__conn_close(c, "out of memory");
        return -1;
    }
    /* A zero-length send checks the slow-reader cap and marks c dirty. */
    return kvmux__conn_send_bytes(c, NULL, 0);
}

static void too_large(kvmux_conn *c, uint32_t id, size_t len) {
    char msg[KVMUX_MAX_STATUS_MSG];
    if (len > c->sess.peer.max_value_size)
        snprintf(msg, sizeof msg, "value of %zu bytes exceeds your max value size %u", len,
                 c->sess.peer.max_value_size);
    else
        snprintf(msg, sizeof msg, "value of %zu bytes exceeds your max frame size %u", len,
                 c->sess.peer.max_frame_size);
    kvmux__conn_respond(c, id, KVMUX_STATUS_TOO_LARGE, NULL, 0, msg);
}

int kvmux__sched_send_value(kvmux_conn *c, uint32_t request_id, uint64_t version,
                            kvmux_store_value *val, size_t len) {
    kvmux_frame head;
    memset(&head, 0, sizeof head);
    uint8_t ext[8];
    kvmux_store_u64be(ext, version);
    head.version = c->sess.version;
    head.type = KVMUX_FRAME_RESPONSE;
    head.request_id = request_id;
    head.code = KVMUX_STATUS_OK;
    head.extras = ext;
    head.extras_len = 8;
    kvmux_fragmenter fr;
    uint32_t chunk = kvmux_session_is_v2(&c->sess) ? c->loop->srv->cfg.fragment_size : 0;
    int rc = len > UINT32_MAX ? -KVMUX_ERR_FRAME_TOO_LARGE
                              : kvmux_fragmenter_init(&fr, &c->sess, &head, (uint32_t)len, chunk);
    if (rc < 0) {
        kvmux_store_value_release(val);
        too_large(c, request_id, len);
        return 0;
    }
    if (fr.state == KVMUX_FRAG_SINGLE) {
        uint8_t hb[KVMUX_FRAME_HEAD_MAX(0)];
        head.value_len = (uint32_t)len;
        size_t hn = kvmux_frame_encode_head(hb, &head);
        if (kvmux__conn_send_bytes(c, hb, hn) != 0) {
            kvmux_store_value_release(val);
            return -1;
        }
        if (len == 0) {
            kvmux_store_value_release(val);
            return 0;
        }
        return send_ref(c, val, 0, len) == 0 ? 0 : -1;
    }
    kvmux_ostream *s = malloc(sizeof *s);
    if (!s) {
        kvmux_store_value_release(val);
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    s->frag = fr;
    s->val = val;
    memcpy(s->ext, ext, sizeof ext);
    /* Append at the tail: the round-robin cursor reaches it in turn. */
    s->next = NULL;
    s->prev = NULL;
    if (c->ostreams) {
        kvmux_ostream *t = c->ostreams;
        while (t->next) t = t->next;
        t->next = s;
        s->prev = t;
    } else {
        c->ostreams = s;
    }
    c->nostreams++;
    KVMUX_STAT_ADD(c->loop, streams, 1);
    kvmux__loop_mark_dirty(c);
    return 1;
}

/* Unlink s, drop its reference, and give back its request's credit if
 * asked (a finished or cancelled stream) . */
static void stream_free(kvmux_conn *c, kvmux_ostream *s, int give_back_credit) {
    if (c->ostream_cursor == s) c->ostream_cursor = s->next;
    if (s->prev) s->prev->next = s->next;
    else c->ostreams = s->next;
    if (s->next) s->next->prev = s->prev;
    c->nostreams--;
    kvmux_store_value_release(s->val);
    free(s);
    if (give_back_credit) kvmux_session_request_end(&c->sess);
}

static kvmux_ostream *stream_find(kvmux_conn *c, uint32_t request_id) {
    for (kvmux_ostream *s = c->ostreams; s; s = s->next)
        if (s->frag.request_id == request_id) return s;
    return NULL;
}

int kvmux__sched_has(kvmux_conn *c, uint32_t request_id) {
    return stream_find(c, request_id) != NULL;
}

/* Queue fragment fr of stream s. Returns 0, or -1 if c closed. */
static int emit(kvmux_conn *c, kvmux_ostream *s, const kvmux_fragment *fr) {
    if (fr->first) {
        kvmux_frame head;
        memset(&head, 0, sizeof head);
        head.version = c->sess.version;
        head.type = KVMUX_FRAME_RESPONSE;
        head.flags = fr->flags;
        head.request_id = s->frag.request_id;
        head.code = KVMUX_STATUS_OK;
        head.extras = s->ext;
        head.extras_len = 8;
        head.value_len = fr->len;
        if (fr->flags & KVMUX_FLAG_MORE) head.total_value_len = s->frag.total;
        uint8_t hb[KVMUX_FRAME_HEAD_MAX(0)];
        size_t hn = kvmux_frame_encode_head(hb, &head);
        if (kvmux__conn_send_bytes(c, hb, hn) != 0) return -1;
    } else {
        uint8_t hb[KVMUX_FRAME_HDR_LEN];
        kvmux_encode_continuation_header(hb, c->sess.version, s->frag.request_id, fr->flags,
                                         fr->len);
        if (kvmux__conn_send_bytes(c, hb, sizeof hb) != 0) return -1;
    }
    if (fr->len && send_ref(c, kvmux_store_value_retain(s->val), fr->offset, fr->len) != 0)
        return -1;
    return 0;
}

int kvmux__sched_fill(kvmux_conn *c) {
    if (c->state != KVMUX_CONN_OPEN || !c->ostreams) return 0;
    kvmux_ostream *s = c->ostream_cursor ? c->ostream_cursor : c->ostreams;
    for (uint32_t i = 0, n = c->nostreams; i < n; i++) {
        kvmux_ostream *next = s->next ? s->next : c->ostreams;
        kvmux_fragment fr;
        int r = kvmux_fragmenter_next(&s->frag, &c->sess, &fr);
        if (r == 1) {
            c->ostream_cursor = next == s ? NULL : next;
            if (emit(c, s, &fr) != 0) return 0;
            if (kvmux_fragmenter_done(&s->frag)) {
                stream_free(c, s, 1);
                kvmux__conn_maybe_finish_drain(c);
            }
            return 1;
        }
        if (r < 0) { /* cannot happen: finished streams are freed at once */
            stream_free(c, s, 1);
            return 1;
        }
        s = next;
    }
    return 0;
}

void kvmux__sched_on_window_update(kvmux_conn *c, const kvmux_frame *f) {
    int rc;
    if (f->request_id == 0) {
        rc = kvmux_session_on_window_update(&c->sess, f);
        if (rc < 0) {
            kvmux__conn_fail(c, 0, (uint8_t)-rc,
                             "WINDOW_UPDATE of %u overflows the connection window",
                             kvmux_window_update_increment(f));
            return;
        }
    } else {
        kvmux_ostream *s = stream_find(c, f->request_id);
        if (!s) return; /* finished or cancelled meanwhile: harmless */
        rc = kvmux_fragmenter_on_window_update(&s->frag, f);
        if (rc < 0) {
            kvmux__conn_fail(c, f->request_id, (uint8_t)-rc,
                             "WINDOW_UPDATE of %u overflows the window of request %u",
                             kvmux_window_update_increment(f), f->request_id);
            return;
        }
    }
    if (c->ostreams) kvmux__loop_mark_dirty(c);
}

int kvmux__sched_cancel(kvmux_conn *c, uint32_t request_id) {
    kvmux_ostream *s = stream_find(c, request_id);
    if (!s) return 0;
    /* If fragments already left, this RESPONSE ends the message early;
     * the client drops what it reassembled (kvmux_reassembly_abort). */
    kvmux__conn_respond(c, request_id, KVMUX_STATUS_CANCELED, NULL, 0, "canceled");
    stream_free(c, s, 1);
    kvmux__conn_maybe_finish_drain(c);
    return 1;
}

void kvmux__sched_shutdown(kvmux_conn *c) {
    /* Each stream's final RESPONSE: it ends the fragments already sent
     * (the client drops the partial value, as after CANCELED). Streams
     * carry reads only (GET, WAIT), so "not processed, safe to retry"
     * holds: the read had no effect. */
    while (c->ostreams) {
        kvmux_ostream *s = c->ostreams;
        kvmux__conn_respond(c, s->frag.request_id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0,
                            "server shutting down before the value was sent");
        stream_free(c, s, 1);
    }
    c->ostream_cursor = NULL;
}

void kvmux__sched_release(kvmux_conn *c, int give_back_credits) {
    while (c->ostreams) stream_free(c, c->ostreams, give_back_credits);
    c->ostream_cursor = NULL;
}
