/* Fragmented requests (protocol v2): a SET or CAS whose value arrives in a
 * first REQUEST frame with MORE and then CONTINUATION frames, possibly
 * interleaved with other requests and with fragments of other uploads.
 *
 * Design. The first frame announces total_value_len. The session's
 * reassembly helper (kvmux_reassembly_begin, proto.h) checks it against the
 * value limit this connection advertised and accounts the windows; we then
 * reserve the whole value at once as a store value (kvmux_store_value_new)
 * and copy each fragment straight to its offset in it. When the last
 * fragment arrives the buffer itself is installed in the store
 * (kvmux_store_set_value / cas_value): the value is copied once, from the
 * read buffer to its final place, and never again. Every fragment's bytes
 * are "consumed" as soon as they are copied, so window is granted back
 * (WINDOW_UPDATE) at the pace the helper decides (half a window at a
 * time): a client never waits for us except while we do not read (read
 * pause), which is the backpressure we want.
 *
 * Refused uploads. A first frame may be answered before its value is in:
 * BUSY (no credit, or --max-upload-buffer reached), SHUTTING_DOWN (read
 * after GOAWAY), TIMEOUT (deadline already spent), a request-level error
 * (TOO_LARGE key, wrong extras...), OUT_OF_MEMORY (no memory for the
 * buffer: uploads exist only on v2, whose peers know that status).
 * Its CONTINUATIONs are still on the wire, and a CONTINUATION for an id we
 * do not know is a protocol error, so the upload stays, with no buffer, in
 * "discard" mode: fragments are checked and counted (windows included, and
 * granted back so the client can finish) and dropped. A deadline that
 * passes mid-upload answers TIMEOUT and switches to discard mode too, as
 * does the drain deadline (SHUTTING_DOWN).
 *
 * CANCEL of an upload answers CANCELED (unless already answered), frees the
 * buffer and forgets the id at once: the client sends no CONTINUATION after
 * its CANCEL (TCP keeps them in order), so none can follow.
 *
 * Bounds: uploads that hold a buffer hold their request's credit
 * (--max-outstanding) and their reservations are capped per connection by
 * --max-upload-buffer; discarding uploads hold no buffer and are capped at
 * --max-outstanding as well (more is a protocol error). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

#define UPLOAD_OF_TIMER(t) ((kvmux_upload *)((char *)(t) - offsetof(kvmux_upload, timer)))
#define MAX_OP_EXTRAS 16u

struct kvmux_upload {
    kvmux_upload *prev, *next;     /* c->uploads, most recently used first */
    kvmux_conn *conn;
    kvmux_timer timer;             /* the request's deadline, if it has one */
    kvmux_reassembly r;            /* offsets and windows (proto.h) */
    kvmux_store_value *val;        /* reassembly buffer; NULL when
                                      discarding or when nothing is reserved */
    uint32_t deadline_ms;          /* for the TIMEOUT message */
    uint8_t discard;               /* answered already: drop the rest */
    uint8_t op;
    uint8_t extras[MAX_OP_EXTRAS];
    uint64_t seq;                  /* v3 SESSION: the write's seq, else 0 */
    uint16_t klen;
    uint8_t key[];
};

static void upload_on_deadline(kvmux_timer *t, uint64_t now);

static kvmux_upload *upload_find(kvmux_conn *c, uint32_t request_id) {
    for (kvmux_upload *u = c->uploads; u; u = u->next) {
        if (u->r.request_id != request_id) continue;
        if (u != c->uploads) { /* move to front: fragments come in runs */
            u->prev->next = u->next;
            if (u->next) u->next->prev = u->prev;
            u->prev = NULL;
            u->next = c->uploads;
            c->uploads->prev = u;
            c->uploads = u;
        }
        return u;
    }
    return NULL;
}

/* Give up the buffer (and its reservation). */
static void drop_buffer(kvmux_conn *c, kvmux_upload *u) {
    if (!u->val) return;
    kvmux_store_value_release(u->val);
    u->val = NULL;
    c->upload_bytes -= u->r.total;
}

static void upload_free(kvmux_conn *c, kvmux_upload *u) {
    kvmux__timer_cancel(&c->loop->timers, &u->timer);
    drop_buffer(c, u);
    if (u->prev) u->prev->next = u->next;
    else c->uploads = u->next;
    if (u->next) u->next->prev = u->prev;
    c->nuploads--;
    free(u);
}

/* The request has been answered before its value was complete: keep
 * counting its fragments, drop them, return the credit. */
static void start_discard(kvmux_conn *c, kvmux_upload *u, int had_credit) {
    kvmux__timer_cancel(&c->loop->timers, &u->timer);
    drop_buffer(c, u);
    u->discard = 1;
    if (had_credit) kvmux_session_request_end(&c->sess);
}

/* Fragment bytes have been copied (or dropped): grant window back. */
static void release(kvmux_conn *c, kvmux_upload *u, uint32_t n) {
    kvmux_grant g = {0, 0};
    kvmux_reassembly_release(&u->r, &c->sess, n, &g);
    if (g.message || g.connection) kvmux__conn_send_grant(c, u->r.request_id, &g);
}

static void fail_reassembly(kvmux_conn *c, const kvmux_frame *f, int err) {
    if (err == KVMUX_ERR_FRAME_TOO_LARGE)
        kvmux__conn_fail(c, f->request_id, (uint8_t)err,
                         "total_value_len %u exceeds max value size %u", f->total_value_len,
                         c->sess.local.max_value_size);
    else if (f->type == KVMUX_FRAME_CONTINUATION)
        kvmux__conn_fail(c, f->request_id, (uint8_t)err,
                         "CONTINUATION of %u bytes for request %u refused: %s (outside the "
                         "announced length or the window)",
                         f->value_len, f->request_id, kvmux_wire_error_name(err));
    else
        kvmux__conn_fail(c, f->request_id, (uint8_t)err,
                         "fragmented REQUEST %u refused: %s (first fragment of %u bytes "
                         "over the window?)", f->request_id, kvmux_wire_error_name(err),
                         f->value_len);
}

int kvmux__upload_has(kvmux_conn *c, uint32_t request_id) {
    return upload_find(c, request_id) != NULL;
}

void kvmux__upload_begin(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_loop *l = c->loop;
    KVMUX_STAT_ADD(l, requests[f->code <= KVMUX_OP_MAX ? f->code : 0], 1);
    /* on_request (dispatch.c) has refused an id still in use, an open
     * upload's included. */
    if (c->nuploads >= 2 * c->sess.local.max_outstanding) {
        kvmux__conn_fail(c, f->request_id, KVMUX_ERR_PROTOCOL,
                         "more than %u fragmented requests open at once",
                         2 * c->sess.local.max_outstanding);
        return;
    }
    kvmux_reassembly r;
    int rc = kvmux_reassembly_begin(&r, &c->sess, f, c->sess.local.max_value_size);
    if (rc < 0) {
        fail_reassembly(c, f, -rc);
        return;
    }
    kvmux_upload *u = calloc(1, sizeof *u + f->key_len);
    if (!u) {
        kvmux__conn_close(c, "out of memory for an upload");
        return;
    }
    u->conn = c;
    u->r = r;
    kvmux_timer_init(&u->timer, upload_on_deadline);
    u->op = f->code;
    u->klen = f->key_len;
    memcpy(u->key, f->key, f->key_len);
    if (f->extras_len <= MAX_OP_EXTRAS) memcpy(u->extras, f->extras, f->extras_len);
    u->seq = kvmux_frame_has_session(f) ? f->session_seq : 0;
    u->next = c->uploads;
    if (c->uploads) c->uploads->prev = u;
    c->uploads = u;
    c->nuploads++;
    KVMUX_STAT_ADD(l, uploads, 1);

    uint32_t id = f->request_id;
    int draining = c->sess.drain == KVMUX_DRAIN_GOAWAY_SENT;
    if (!draining) c->last_request_id = id;
    if (draining) {
        kvmux__conn_respond(c, id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0, "server shutting down");
        start_discard(c, u, 0);
    } else if (kvmux__cluster_refuse(c, f)) {
        /* A cluster node that cannot serve the slot: answered now, the
         * value's fragments are read and dropped (no credit taken). */
        start_discard(c, u, 0);
    } else if (kvmux_session_request_begin(&c->sess) != 0) {
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "more than %u requests outstanding",
                 c->sess.local.max_outstanding);
        KVMUX_STAT_ADD(l, busy, 1);
        kvmux__conn_respond(c, id, KVMUX_STATUS_BUSY, NULL, 0, msg);
        start_discard(c, u, 0);
    } else if (kvmux_frame_has_deadline(f) && f->deadline_ms == 0) {
        KVMUX_STAT_ADD(l, deadline_expired, 1);
        kvmux__conn_respond(c, id, KVMUX_STATUS_TIMEOUT, NULL, 0,
                            "deadline expired before the request was processed");
        start_discard(c, u, 1);
    } else if (kvmux__check_request(c, f, f->total_value_len) != 0) {
        start_discard(c, u, 1);
    } else if (c->upload_bytes + f->total_value_len > c->lim.max_upload_buffer) {
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "uploads in progress on this connection would exceed "
                 "%llu bytes", (unsigned long long)c->lim.max_upload_buffer);
        KVMUX_STAT_ADD(l, busy, 1);
        kvmux__conn_respond(c, id, KVMUX_STATUS_BUSY, NULL, 0, msg);
        start_discard(c, u, 1);
    } else if (!(u->val = kvmux_store_value_new(l->srv->store, f->total_value_len))) {
        kvmux__conn_respond(c, id, KVMUX_STATUS_OUT_OF_MEMORY, NULL, 0, "out of memory");
        start_discard(c, u, 1);
    } else {
        c->upload_bytes += f->total_value_len;
        u->deadline_ms = kvmux_frame_has_deadline(f) ? f->deadline_ms : 0;
        if (u->deadline_ms &&
            kvmux__timer_arm(&l->timers, &u->timer, l->now + u->deadline_ms) != 0) {
            kvmux__conn_respond(c, id, KVMUX_STATUS_OUT_OF_MEMORY, NULL, 0, "out of memory");
            start_discard(c, u, 1);
        }
    }
    if (u->val && f->value_len) memcpy(kvmux_store_value_data(u->val), f->value, f->value_len);
    if (c->state != KVMUX_CONN_DEAD) release(c, u, f->value_len);
}

void kvmux__upload_continue(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_upload *u = upload_find(c, f->request_id);
    if (!u) {
        kvmux__conn_fail(c, f->request_id, KVMUX_ERR_PROTOCOL,
                         "CONTINUATION for request %u, which has no fragmented message open",
                         f->request_id);
        return;
    }
    uint32_t off = 0;
    int rc = kvmux_reassembly_continue(&u->r, &c->sess, f, &off);
    if (rc < 0) {
        fail_reassembly(c, f, -rc);
        return;
    }
    if (u->val) memcpy(kvmux_store_value_data(u->val) + off, f->value, f->value_len);
    release(c, u, f->value_len);
    if (rc == 0 || c->state == KVMUX_CONN_DEAD) return;
    /* Complete. */
    if (!u->discard) {
        kvmux_store_value *val = u->val;
        u->val = NULL;
        c->upload_bytes -= u->r.total;
        kvmux__timer_cancel(&c->loop->timers, &u->timer);
        if (!kvmux__run_uploaded(c, u->r.request_id, u->op, u->extras, u->seq, u->key, u->klen,
                                 val))
            kvmux_session_request_end(&c->sess);
    }
    upload_free(c, u);
    kvmux__conn_maybe_finish_drain(c);
}

static void upload_on_deadline(kvmux_timer *t, uint64_t now) {
    (void)now;
    kvmux_upload *u = UPLOAD_OF_TIMER(t);
    kvmux_conn *c = u->conn;
    if (c->state == KVMUX_CONN_DEAD || u->discard) return;
    char msg[KVMUX_MAX_STATUS_MSG];
    snprintf(msg, sizeof msg, "deadline of %u ms passed with %u of %u value bytes received",
             u->deadline_ms, u->r.received, u->r.total);
    KVMUX_STAT_ADD(c->loop, deadline_expired, 1);
    kvmux__conn_respond(c, u->r.request_id, KVMUX_STATUS_TIMEOUT, NULL, 0, msg);
    start_discard(c, u, 1);
    kvmux__conn_maybe_finish_drain(c);
}

int kvmux__upload_cancel(kvmux_conn *c, uint32_t request_id) {
    kvmux_upload *u = upload_find(c, request_id);
    if (!u) return 0;
    if (!u->discard) {
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_CANCELED, NULL, 0, "canceled");
        kvmux_session_request_end(&c->sess);
    }
    /* Bytes received but not released go back to the connection window. */
    kvmux_grant g = {0, 0};
    kvmux_reassembly_abort(&u->r, &c->sess, &g);
    upload_free(c, u);
    if (g.connection) kvmux__conn_send_grant(c, request_id, &g);
    kvmux__conn_maybe_finish_drain(c);
    return 1;
}

void kvmux__uploads_release(kvmux_conn *c) {
    while (c->uploads) upload_free(c, c->uploads);
}

void kvmux__uploads_shutdown(kvmux_conn *c) {
    for (kvmux_upload *u = c->uploads; u; u = u->next) {
        if (u->discard) continue;
        kvmux__conn_respond(c, u->r.request_id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0,
                            "server shutting down before the value was complete");
        start_discard(c, u, 1);
    }
}
