/* kvmux client, protocol v2: sending request values larger than the
 * server's max frame (SET/CAS up to its MAX_VALUE_SIZE) as a first frame
 * plus CONTINUATIONs.
 *
 * Design: such a request does not go through the outbound byte buffer
 * (c->out). At admission (kvmux__big_prepare) its key and value are copied
 * once into a heap buffer owned by a kvmux__bigmsg -- or, for a request
 * that waited in the async backlog, the backlog's copy is taken over, so a
 * value is never copied twice. Once it has its request id
 * (kvmux__big_start) the message joins c's list of transfers, with a
 * kvmux_fragmenter (proto.h) doing the sizing and the window accounting.
 * The writer thread alternates: each round it sends the whole batch of
 * small frames queued in c->out and then ONE fragment (at most
 * KVMUX_CLIENT_FRAGMENT value bytes) of the next transfer in round-robin
 * order (kvmux__big_pick), all in one writev, straight from the message's
 * buffer. So a small request never waits behind more than one fragment,
 * and several large values share the link fairly. A transfer blocked on
 * its window is skipped (other frames keep flowing) until a WINDOW_UPDATE
 * (kvmux__big_on_window_update) makes it sendable again.
 *
 * Lifetime: a transfer is freed when its last fragment has been written,
 * or when it is aborted (the connection failed, or the request was
 * CANCELed). The writer holds at most one transfer outside the lock
 * (c->wr_big; in loop mode, the transfer of the round still being
 * written); aborting that one only marks it, and the round's end frees it
 * once its fragment is fully written (a frame is never cut short). A reply that arrives before the last fragment
 * was written (the server refused the value early) does not stop the
 * transfer: the server still expects the rest of the message.
 *
 * Memory: the value bytes of all transfers (c->big_bytes) are bounded by
 * queue_bytes_limit, apart from a single transfer, which is always
 * admitted alone (kvmux__queue_full), exactly like the outbound queue.
 *
 * Send rounds (kvmux__round_begin / kvmux__round_end) are shared by both
 * drivers: the writer thread (writer.c) writes a round with blocking
 * sendmsg calls outside the lock; the event-loop driver (loop.c) writes
 * it with non-blocking ones from its writable callback, keeping the
 * round's iovecs across callbacks until every byte is out (a frame is
 * never interleaved with another). So both modes put the same frames on
 * the wire in the same order.
 *
 * A caller that stops waiting for a request whose value is still being
 * sent (a blocking call's timeout, an async deadline, a cancel) stops the
 * transfer and sends CANCEL through kvmux__slot_abandon (async.c), within
 * the client's CANCEL rate; kvmux__big_sending tells whether that applies.
 *
 * What it is not: the reply side is in reader.c.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "client_internal.h"

int kvmux__big_prepare(kvmux_client *c, const kvmux_request *req, kvmux__op *steal,
                       kvmux__bigmsg **out) {
    size_t klen = req->key_len;
    size_t vlen = req->value_len;
    kvmux__bigmsg *m = calloc(1, sizeof *m + KVMUX_FRAME_HEAD_MAX(klen));
    if (!m) return KVMUX_ENOMEM;
    m->hdr = (uint8_t *)(m + 1);
    if (steal && steal->buf) {
        /* The backlog's copy (key then value, async.c): take it over. */
        m->buf = steal->buf;
        steal->buf = NULL;
        steal->bufcap = 0;
    } else {
        m->buf = malloc(klen + vlen);
        if (!m->buf) {
            free(m);
            return KVMUX_ENOMEM;
        }
        memcpy(m->buf, req->key, klen);
        memcpy(m->buf + klen, req->value, vlen);
    }
    m->key_len = (uint16_t)klen;
    m->value_len = (uint32_t)vlen;
    (void)c;
    *out = m;
    return 0;
}

void kvmux__big_free(kvmux__bigmsg *m) {
    if (!m) return;
    free(m->buf);
    free(m);
}

/* Append m at the tail of c's transfer list. */
static void big_append(kvmux_client *c, kvmux__bigmsg *m) {
    m->next = NULL;
    if (c->big_tail) c->big_tail->next = m;
    else c->big_head = m;
    c->big_tail = m;
}

/* Take m off c's transfer list. */
static void big_unlink(kvmux_client *c, kvmux__bigmsg *m) {
    kvmux__bigmsg **pp = &c->big_head, *prev = NULL;
    while (*pp && *pp != m) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp) return;
    *pp = m->next;
    if (c->big_tail == m) c->big_tail = prev;
    m->next = NULL;
}

int kvmux__big_start(kvmux_client *c, kvmux__bigmsg *m, const kvmux_frame *tmpl) {
    m->tmpl = *tmpl;
    memcpy(m->ext, tmpl->extras, tmpl->extras_len);
    m->tmpl.extras = m->ext;
    m->tmpl.key = m->buf;
    m->tmpl.key_len = m->key_len;
    m->tmpl.value = NULL;
    m->tmpl.value_len = 0;
    m->id = tmpl->request_id;
    int rc = kvmux_fragmenter_init(&m->frag, &c->session, &m->tmpl, m->value_len,
                                   KVMUX_CLIENT_FRAGMENT);
    if (rc < 0) return rc;
    big_append(c, m);
    c->big_bytes += m->value_len;
    c->big_n++;
    return 0;
}

/* Free a transfer that is off the list and not in the writer's hands. */
static void big_release(kvmux_client *c, kvmux__bigmsg *m) {
    c->big_bytes -= m->value_len;
    c->big_n--;
    kvmux__big_free(m);
}

kvmux__bigmsg *kvmux__big_pick(kvmux_client *c, kvmux_fragment *fr) {
    for (kvmux__bigmsg *m = c->big_head; m; m = m->next) {
        int rc = kvmux_fragmenter_next(&m->frag, &c->session, fr);
        if (rc != 1) continue; /* blocked on a window (DONE ones are never listed) */
        /* Round robin: the next pick starts with the others. */
        big_unlink(c, m);
        big_append(c, m);
        return m;
    }
    return NULL;
}

size_t kvmux__big_encode_head(kvmux_client *c, kvmux__bigmsg *m, const kvmux_fragment *fr) {
    if (!fr->first) {
        kvmux_encode_continuation_header(m->hdr, c->version, m->id, fr->flags, fr->len);
        return KVMUX_FRAME_HDR_LEN;
    }
    kvmux_frame f = m->tmpl;
    f.flags = (uint8_t)(f.flags | fr->flags);
    /* The budget left now, when the server starts counting. */
    if (f.flags & KVMUX_FLAG_DEADLINE) f.deadline_ms = kvmux__deadline_left(m->deadline, -1);
    f.total_value_len = (fr->flags & KVMUX_FLAG_MORE) ? m->value_len : 0;
    f.value_len = fr->len;
    return kvmux_frame_encode_head(m->hdr, &f);
}

void kvmux__big_written(kvmux_client *c, kvmux__bigmsg *m) {
    c->wr_big = NULL;
    if (m->aborted || kvmux_fragmenter_done(&m->frag)) {
        big_unlink(c, m);
        big_release(c, m);
    }
}

int kvmux__big_ready(kvmux_client *c) {
    for (kvmux__bigmsg *m = c->big_head; m; m = m->next) {
        if (m->frag.state == KVMUX_FRAG_FIRST) return 1;
        if (m->frag.state == KVMUX_FRAG_CONT &&
            kvmux_window_sendable(&m->frag.window, &c->session.send_window) > 0)
            return 1;
    }
    return 0;
}

int kvmux__writer_on_window_update(kvmux_client *c, const kvmux_frame *f) {
    for (kvmux__bigmsg *m = c->big_head; m; m = m->next)
        if (m->id == f->request_id) return kvmux_fragmenter_on_window_update(&m->frag, f);
    return 0; /* finished or aborted meanwhile */
}

int kvmux__big_abort(kvmux_client *c, uint32_t id) {
    for (kvmux__bigmsg *m = c->big_head; m; m = m->next) {
        if (m->id != id) continue;
        int started = m->frag.state != KVMUX_FRAG_FIRST;
        if (m == c->wr_big) {
            m->aborted = 1; /* the writer frees it when its write returns */
        } else {
            big_unlink(c, m);
            big_release(c, m);
        }
        return started;
    }
    return -1;
}

void kvmux__big_free_all(kvmux_client *c) {
    while (c->big_head) {
        kvmux__bigmsg *m = c->big_head;
        c->big_head = m->next;
        kvmux__big_free(m);
    }
    c->big_tail = NULL;
    c->big_bytes = 0;
    c->big_n = 0;
}

int kvmux__big_sending(const kvmux_client *c, uint32_t id) {
    for (const kvmux__bigmsg *m = c->big_head; m; m = m->next)
        if (m->id == id) return !m->aborted && !kvmux_fragmenter_done(&m->frag);
    return 0;
}

int kvmux__round_begin(kvmux_client *c, struct iovec iov[3], kvmux__bigmsg **mp) {
    /* Take the whole queue; give the callers our empty spare. From here
     * its frames count as sent (failover.c: a loss now leaves their
     * outcome unknown). */
    c->out_rounds++;
    kvmux__outbuf batch = c->out;
    c->out = c->wbuf;
    c->out.len = 0;
    c->out.frames = 0;
    c->wbuf = batch;
    c->wr_bytes = batch.len;
    c->wr_frames = batch.frames;
    /* Then one fragment of one large value (round robin): small frames
     * never wait behind more than a fragment. */
    kvmux_fragment fr;
    kvmux__bigmsg *m = kvmux__big_pick(c, &fr);
    /* Only non-empty entries: an empty one may carry no valid base. */
    int niov = 0;
    if (c->wbuf.len) {
        iov[niov].iov_base = c->wbuf.data;
        iov[niov++].iov_len = c->wbuf.len;
    }
    if (m) {
        c->wr_big = m;
        iov[niov].iov_base = m->hdr;
        iov[niov++].iov_len = kvmux__big_encode_head(c, m, &fr);
        if (fr.len) {
            iov[niov].iov_base = m->buf + m->key_len + fr.offset;
            iov[niov++].iov_len = fr.len;
        }
    }
    *mp = m;
    return niov;
}

void kvmux__round_end(kvmux_client *c, kvmux__bigmsg *m) {
    c->wbuf.len = 0;
    c->wbuf.frames = 0;
    if (c->wbuf.cap > KVMUX_CLIENT_OUT_KEEP) {
        free(c->wbuf.data);
        memset(&c->wbuf, 0, sizeof c->wbuf);
    }
    c->wr_bytes = 0;
    c->wr_frames = 0;
    if (m) kvmux__big_written(c, m);
}
