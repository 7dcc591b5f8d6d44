/* kvmux client reader thread: turns bytes from the socket into completed
 * calls.
 *
 * Design: recv() into one large buffer (KVMUX_CLIENT_RBUF, 64 KiB), so a
 * single system call usually brings many replies; the buffer grows only to
 * hold one frame larger than itself, and never past the max frame size we
 * advertised (the decoder refuses a bigger header before we wait for its
 * body). Every whole frame in the buffer is decoded (kvmux_frame_decode) and
 * checked against the session (kvmux_session_check_recv) under one
 * acquisition of the client mutex per batch. For each RESPONSE/PONG the
 * slot is found by id in O(1): a WAITING slot with the right generation gets
 * its reply copied (a value becomes a heap buffer the caller will own) and
 * its own condition variable signalled, so exactly one thread wakes per
 * reply; a TOMBSTONE is freed (its caller timed out) and one caller waiting
 * for a slot is woken; anything else (unknown id, stale generation,
 * duplicate) is dropped and counted, not fatal (GUIDE trap 3).
 *
 * Strictness: statuses map one to one (errors.c); an unknown status, a
 * reply whose extras do not have the length its opcode and status define,
 * a value where none is defined, a RESPONSE to a PING or a PONG to a
 * request, or an ERROR frame from the server fails the connection with
 * KVMUX_EPROTO and a message for kvmux_connection_error. A PING from the
 * server is answered with a PONG through the normal outbound queue.
 *
 * What it is not: it never writes to the socket itself (that would
 * interleave with the writer's bytes), and never waits for a caller.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "client_internal.h"

/* An i64 carried on the wire as its two's-complement u64, converted
 * without relying on implementation-defined conversions. */
static int64_t reader_load_i64(const uint8_t *p) {
    uint64_t u = kvmux_load_u64be(p);
    if (u <= (uint64_t)INT64_MAX) return (int64_t)u;
    return -(int64_t)(~u) - 1;
}

/* Wake one caller waiting for a slot, if any (lock held). */
static void reader_slot_freed(kvmux_client *c) {
    if (c->slot_waiters > 0) pthread_cond_signal(&c->slot_cond);
}

/* Copy a GET/WAIT value into a heap buffer owned by the caller of s.
 * Returns 0 or KVMUX_ENOMEM. */
static int reader_copy_value(kvmux__slot *s, const kvmux_frame *f, uint64_t version) {
    size_t len = f->value_len;
    if (s->want_value) {
        /* One allocation: the struct, then the bytes and a NUL. */
        kvmux_value *v = malloc(sizeof *v + len + 1);
        if (!v) return KVMUX_ENOMEM;
        v->version = version;
        v->len = len;
        v->data = (uint8_t *)(v + 1);
        if (len) memcpy(v->data, f->value, len);
        v->data[len] = 0;
        s->value = v;
    } else {
        uint8_t *p = malloc(len + 1);
        if (!p) return KVMUX_ENOMEM;
        if (len) memcpy(p, f->value, len);
        p[len] = 0;
        s->reply.value = p;
        s->reply.value_len = len;
    }
    return 0;
}

/* Complete WAITING slot s from RESPONSE f (lock held). Returns 0, or -1
 * after failing the connection for a malformed reply. */
static int reader_complete(kvmux_client *c, kvmux__slot *s, const kvmux_frame *f) {
    int err;
    if (kvmux__status_to_error(f->code, &err) != 0) {
        kvmux__client_fail(c, KVMUX_EPROTO, "server sent unknown status %u (request %u)",
                           f->code, f->request_id);
        return -1;
    }
    const char *op_name = kvmux_opcode_name(s->op);
    unsigned want = 0;   /* required extras length */
    int value_ok = 1;    /* may a value be present? (failures: a message) */
    int parse_value = 0;
    if (err == KVMUX_OK) {
        switch (s->op) {
        case KVMUX_GET:  want = 8;  parse_value = 1; break;
        case KVMUX_SET:  want = 8;  value_ok = 0; break;
        case KVMUX_DEL:  want = 0;  value_ok = 0; break;
        case KVMUX_INCR: want = 16; value_ok = 0; break;
        case KVMUX_CAS:  want = 8;  value_ok = 0; break;
        case KVMUX_WAIT: want = 8;  parse_value = 1; break;
        default: break;
        }
    } else if (err == KVMUX_EVERSION && s->op == KVMUX_CAS) {
        want = 8;
    } else if (err == KVMUX_ETIMEDOUT && s->op == KVMUX_WAIT && f->extras_len == 8) {
        want = 8; /* the current version; optional, and not returned */
    }
    if (f->extras_len != want || (!value_ok && f->value_len != 0)) {
        kvmux__client_fail(c, KVMUX_EPROTO,
                           "malformed %s reply to %s (request %u): extras %u, value %u",
                           kvmux_status_name(f->code), op_name, f->request_id,
                           f->extras_len, f->value_len);
        return -1;
    }

    s->result = err;
    if (err == KVMUX_OK) {
        switch (s->op) {
        case KVMUX_INCR:
            s->reply.number = reader_load_i64(f->extras);
            s->reply.version = kvmux_load_u64be(f->extras + 8);
            break;
        case KVMUX_DEL:
            break;
        default:
            s->reply.version = kvmux_load_u64be(f->extras);
            break;
        }
        if (parse_value) {
            int rc = reader_copy_value(s, f, s->reply.version);
            if (rc != 0) s->result = rc; /* this call fails; the connection goes on */
        }
    } else if (err == KVMUX_EVERSION && s->op == KVMUX_CAS) {
        s->reply.version = kvmux_load_u64be(f->extras);
    }
    s->done = 1;
    pthread_cond_signal(&s->cond);
    return 0;
}

/* Handle a RESPONSE or PONG (lock held). Returns 0 or -1 (failed). */
static int reader_on_reply(kvmux_client *c, const kvmux_frame *f) {
    kvmux__slot *s = kvmux__pending_find(&c->pending, f->request_id);
    if (!s || s->state == KVMUX__SLOT_TOMBSTONE || s->done) {
        /* Unknown or stale id, a late reply to a timed-out call, or a
         * duplicate: drop and count. A late reply returns its credit. */
        c->dropped_replies++;
        if (s && s->state == KVMUX__SLOT_TOMBSTONE) {
            kvmux__pending_release(&c->pending, s);
            reader_slot_freed(c);
        }
        return 0;
    }
    int is_ping = s->op == KVMUX_PING;
    if (is_ping != (f->type == KVMUX_FRAME_PONG)) {
        kvmux__client_fail(c, KVMUX_EPROTO, "server answered request %u (%s) with %s",
                           f->request_id, is_ping ? "PING" : kvmux_opcode_name(s->op),
                           kvmux_frame_type_name(f->type));
        return -1;
    }
    if (is_ping) {
        s->result = 0;
        s->done = 1;
        pthread_cond_signal(&s->cond);
        return 0;
    }
    return reader_complete(c, s, f);
}

/* Answer a PING from the server with a PONG echoing id and payload (lock
 * held). Out of memory: the PONG is skipped; the server's liveness check
 * will decide. */
static void reader_on_ping(kvmux_client *c, const kvmux_frame *f) {
    kvmux_frame p;
    memset(&p, 0, sizeof p);
    p.version = c->version;
    p.type = KVMUX_FRAME_PONG;
    p.request_id = f->request_id;
    p.extras = f->extras;
    p.extras_len = f->extras_len;
    size_t n = kvmux_frame_size(&p);
    if (kvmux__out_reserve(c, n) != 0) return;
    c->out.len += kvmux_frame_encode(c->out.data + c->out.len, &p);
    c->out.frames++;
    kvmux__writer_kick(c);
}

size_t kvmux__reader_process(kvmux_client *c) {
    size_t pos = 0;
    while (c->fatal == 0 && pos < c->rlen) {
        kvmux_frame f;
        int n = kvmux_frame_decode(c->rbuf + pos, c->rlen - pos, c->opts.max_frame_size, &f);
        if (n == 0) break;
        if (n < 0) {
            kvmux__client_fail(c, KVMUX_EPROTO, "bad frame from server: %s",
                               kvmux_wire_error_name(-n));
            break;
        }
        int rc = kvmux_session_check_recv(&c->session, &f);
        if (rc < 0) {
            kvmux__client_fail(c, KVMUX_EPROTO, "unexpected %s frame from server: %s",
                               kvmux_frame_type_name(f.type), kvmux_wire_error_name(-rc));
            break;
        }
        pos += (size_t)n;
        switch (f.type) {
        case KVMUX_FRAME_ERROR:
            kvmux__client_fail(c, KVMUX_EPROTO, "server error %s: %.*s",
                               kvmux_wire_error_name(f.code), (int)f.value_len,
                               (const char *)f.value);
            break;
        case KVMUX_FRAME_PING:
            reader_on_ping(c, &f);
            break;
        case KVMUX_FRAME_PONG:
        case KVMUX_FRAME_RESPONSE:
            reader_on_reply(c, &f);
            break;
        default:
            /* check_recv lets nothing else through on an open client session. */
            kvmux__client_fail(c, KVMUX_EPROTO, "unexpected %s frame from server",
                               kvmux_frame_type_name(f.type));
            break;
        }
    }
    return pos;
}

/* Make room in rbuf for more bytes: move the partial frame to the front,
 * and grow the buffer if that frame is larger than it. Returns 0 or -1
 * (out of memory; the connection has been failed). Lock not held. */
static int reader_make_room(kvmux_client *c) {
    if (c->rlen < c->rcap) return 0;
    size_t need = c->rcap + 1;
    if (c->rlen >= KVMUX_FRAME_HDR_LEN) {
        /* The decoder already checked this length against our max frame. */
        need = KVMUX_FRAME_HDR_LEN + (size_t)kvmux_load_u32be(c->rbuf + 12);
    }
    if (need <= c->rcap) return 0;
    uint8_t *p = realloc(c->rbuf, need);
    if (!p) {
        pthread_mutex_lock(&c->mu);
        kvmux__client_fail(c, KVMUX_EIO, "out of memory for a %zu-byte frame", need);
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    c->rbuf = p;
    c->rcap = need;
    return 0;
}

void *kvmux__reader_main(void *arg) {
    kvmux_client *c = arg;
    for (;;) {
        if (c->rlen > 0) {
            /* Bytes left from the handshake or the last recv. */
            pthread_mutex_lock(&c->mu);
            size_t used = kvmux__reader_process(c);
            int fatal = c->fatal;
            pthread_mutex_unlock(&c->mu);
            if (fatal) break;
            memmove(c->rbuf, c->rbuf + used, c->rlen - used);
            c->rlen -= used;
            if (c->rlen == 0 && c->rcap > KVMUX_CLIENT_RBUF) {
                /* A large frame has passed: give the memory back. */
                uint8_t *p = realloc(c->rbuf, KVMUX_CLIENT_RBUF);
                if (p) {
                    c->rbuf = p;
                    c->rcap = KVMUX_CLIENT_RBUF;
                }
            }
        }
        if (reader_make_room(c) != 0) break;
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        int err = n < 0 ? errno : 0;
        char eb[64];
        pthread_mutex_lock(&c->mu);
        if (n == 0)
            kvmux__client_fail(c, KVMUX_ECLOSED, "server closed the connection");
        else if (err == ECONNRESET || err == EPIPE)
            kvmux__client_fail(c, KVMUX_ECLOSED, "connection reset by server");
        else
            kvmux__client_fail(c, KVMUX_EIO, "recv failed: %s", kvmux__errstr(err, eb, sizeof eb));
        pthread_mutex_unlock(&c->mu);
        break;
    }
    return NULL;
}
