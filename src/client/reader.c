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
 * its reply copied to its owner (a value becomes a heap buffer the caller
 * will own) and is freed, and exactly one thread wakes per reply; a TOMBSTONE is freed (its caller timed out) and one caller waiting
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
 * Completion is one path for every kind of caller (kvmux__slot_finish):
 * the reply is built on this thread's stack and moved into its owner --
 * a blocking caller's wait record, or an async op -- and the slot is
 * freed at once. A blocking caller is woken (a futex on its record, see
 * call.c) only after the batch, once the mutex is released, so it never
 * wakes into a lock we hold; a future is marked done and a callback is
 * queued for the completion thread (or the event loop) -- user code never
 * runs on this thread, and the whole batch costs one lock round. kvmux__reader_process and the buffer
 * helpers are shared with the event-loop driver (loop.c), which calls
 * them instead of this thread.
 *
 * Protocol v2: a RESPONSE with MORE starts a fragmented reply (only an OK
 * to GET/WAIT may be one): kvmux_reassembly_begin checks its announced
 * size against our max_value_size, the caller's buffer is allocated once
 * at that size, and every fragment (the first frame's value, then each
 * CONTINUATION) is copied straight into it and released to the windows at
 * once, so WINDOW_UPDATEs go out as the bytes are consumed and other
 * replies interleave freely. A tombstone's fragments are counted and
 * discarded (the windows must stay right); a RESPONSE that ends an open
 * reply early (CANCELED) aborts it and returns its bytes to the
 * connection window. GOAWAY puts the client in the draining state
 * (c->draining: new calls fail with KVMUX_ESHUTDOWN, the backlog too);
 * WINDOW_UPDATE feeds the connection window or one of our fragmented
 * uploads (bigsend.c) and wakes the writer.
 *
 * Keepalive (keepalive.c): when it is on, the thread waits in poll()
 * bounded by the next keepalive action instead of blocking in recv(), and
 * stamps every arrival; a PONG with id 0 answers our keepalive PING.
 *
 * What it is not: it never writes to the socket itself (that would
 * interleave with the writer's bytes), and never waits for a caller.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "client_internal.h"
#include "clock.h"
#include "monotime.h"

/* An i64 carried on the wire as its two's-complement u64, converted
 * without relying on implementation-defined conversions. */
static int64_t reader_load_i64(const uint8_t *p) {
    uint64_t u = kvmux_load_u64be(p);
    if (u <= (uint64_t)INT64_MAX) return (int64_t)u;
    return -(int64_t)(~u) - 1;
}

/* Allocate a value buffer for len bytes (plus a NUL): one kvmux_value
 * allocation when want_value (*v), else a plain buffer (*p). Returns the
 * data pointer, or NULL on out of memory. */
static uint8_t *reader_alloc_value(int want_value, size_t len, uint64_t version,
                                   kvmux_value **v, uint8_t **p) {
    if (want_value) {
        /* One allocation: the struct, then the bytes and a NUL. */
        kvmux_value *nv = malloc(sizeof *nv + len + 1);
        if (!nv) return NULL;
        nv->version = version;
        nv->len = len;
        nv->data = (uint8_t *)(nv + 1);
        nv->data[len] = 0;
        *v = nv;
        return nv->data;
    }
    uint8_t *np = malloc(len + 1);
    if (!np) return NULL;
    np[len] = 0;
    *p = np;
    return np;
}

/* Queue the WINDOW_UPDATEs g calls for (message id, connection) at the end
 * of c->out (lock held). Control frames bypass the queue limits, as PONG
 * does: they are tiny and a peer waiting for window must get them. Out of
 * memory fails the connection (the window would otherwise leak and the
 * server stall forever). Returns 0 or -1 (failed). */
static int reader_grant(kvmux_client *c, uint32_t id, const kvmux_grant *g) {
    uint32_t n = (g->message ? 1u : 0u) + (g->connection ? 1u : 0u);
    if (n == 0) return 0;
    if (kvmux__out_reserve(c, (size_t)n * KVMUX_WINDOW_UPDATE_LEN) != 0) {
        kvmux__client_fail(c, KVMUX_EIO, "out of memory for a WINDOW_UPDATE");
        return -1;
    }
    if (g->message) {
        c->out.len += kvmux_encode_window_update(c->out.data + c->out.len, c->version, id,
                                                 g->message);
        c->out.frames++;
    }
    if (g->connection) {
        c->out.len += kvmux_encode_window_update(c->out.data + c->out.len, c->version, 0,
                                                 g->connection);
        c->out.frames++;
    }
    kvmux__writer_kick(c);
    return 0;
}

/* Copy one fragment of s's reply (value bytes at offset) and release it
 * to the windows at once: the bytes are consumed as soon as they are
 * copied out of the receive buffer (lock held). Returns 0 or -1. */
static int reader_take_fragment(kvmux_client *c, kvmux__slot *s, const kvmux_frame *f,
                                uint32_t offset) {
    kvmux__slotx *x = kvmux__pending_x(&c->pending, s);
    if (x->asm_dst && f->value_len) memcpy(x->asm_dst + offset, f->value, f->value_len);
    kvmux_grant g;
    kvmux_reassembly_release(&x->reasm, &c->session, f->value_len, &g);
    return reader_grant(c, s->id, &g);
}

/* A fragmented reply is complete: hand its value to the caller, or free
 * a tombstone (lock held). */
static void reader_reasm_done(kvmux_client *c, kvmux__slot *s) {
    kvmux__slotx *x = kvmux__pending_x(&c->pending, s);
    x->reasm.state = KVMUX_REASM_IDLE;
    x->asm_dst = NULL;
    if (s->state == KVMUX__SLOT_TOMBSTONE) {
        c->dropped_replies++;
        kvmux__pending_release(&c->pending, s); /* frees x */
        kvmux__slot_freed(c);
        return;
    }
    kvmux_reply r;
    memset(&r, 0, sizeof r);
    r.version = x->version;
    r.value = x->rvalue;
    r.value_len = x->rvalue ? x->rvalue_len : 0;
    kvmux_value *v = x->value;
    x->rvalue = NULL; /* moved to the owner */
    x->value = NULL;
    kvmux__slot_finish(c, s, x->result, &r, v);
}

/* Start receiving a fragmented reply f (RESPONSE with MORE) for slot s,
 * WAITING or TOMBSTONE (lock held). Only an OK reply to GET or WAIT has a
 * value that may be fragmented; anything else is a protocol error.
 * Returns 0 or -1 (failed). */
static int reader_begin_fragmented(kvmux_client *c, kvmux__slot *s, const kvmux_frame *f) {
    if (f->code != KVMUX_STATUS_OK || (s->op != KVMUX_GET && s->op != KVMUX_WAIT) ||
        f->extras_len != 8) {
        kvmux__client_fail(c, KVMUX_EPROTO,
                           "fragmented %s reply to %s (request %u) where none is allowed",
                           kvmux_status_name(f->code), kvmux_opcode_name(s->op), f->request_id);
        return -1;
    }
    if (kvmux__pending_x(&c->pending, s)) {
        kvmux__client_fail(c, KVMUX_EPROTO, "second fragmented reply for request %u",
                           f->request_id);
        return -1;
    }
    /* The reassembly state lives beside the slot, only while needed. */
    kvmux__slotx *x = kvmux__pending_x_new(&c->pending, s);
    if (!x) {
        kvmux__client_fail(c, KVMUX_EIO, "out of memory for a fragmented reply");
        return -1;
    }
    int rc = kvmux_reassembly_begin(&x->reasm, &c->session, f, c->opts.max_value_size);
    if (rc < 0) {
        kvmux__client_fail(c, KVMUX_EPROTO, "bad fragmented reply (request %u, %u bytes): %s",
                           f->request_id, f->total_value_len, kvmux_wire_error_name(-rc));
        return -1;
    }
    if (s->state == KVMUX__SLOT_WAITING) {
        x->result = KVMUX_OK;
        x->version = kvmux_load_u64be(f->extras);
        x->rvalue_len = f->total_value_len;
        x->asm_dst = reader_alloc_value(s->want_value, f->total_value_len, x->version,
                                        &x->value, &x->rvalue);
        /* No memory for it: this call fails, the fragments are still
         * counted (and discarded) so the connection goes on. */
        if (!x->asm_dst) x->result = KVMUX_ENOMEM;
    }
    return reader_take_fragment(c, s, f, 0);
}

/* Handle a CONTINUATION (lock held). Returns 0 or -1 (failed). */
static int reader_on_continuation(kvmux_client *c, const kvmux_frame *f) {
    kvmux__slot *s = kvmux__pending_find(&c->pending, f->request_id);
    if (!s || !kvmux__slot_reasm_open(&c->pending, s)) {
        kvmux__client_fail(c, KVMUX_EPROTO, "CONTINUATION for request %u, which has no "
                           "fragmented reply open", f->request_id);
        return -1;
    }
    uint32_t off = 0;
    int rc = kvmux_reassembly_continue(&kvmux__pending_x(&c->pending, s)->reasm, &c->session, f, &off);
    if (rc < 0) {
        kvmux__client_fail(c, KVMUX_EPROTO, "bad CONTINUATION for request %u: %s",
                           f->request_id, kvmux_wire_error_name(-rc));
        return -1;
    }
    if (reader_take_fragment(c, s, f, off) != 0) return -1;
    if (rc == 1) reader_reasm_done(c, s);
    return 0;
}

/* A RESPONSE arrived for a slot whose fragmented reply is still open: the
 * server ended the transfer early (CANCELED after our CANCEL, or an error
 * it hit mid-way). The bytes received are released to the connection
 * window and dropped; the slot completes with this response's status. A
 * RESPONSE with MORE here is a protocol error. (lock held) */
static int reader_abort_fragmented(kvmux_client *c, kvmux__slot *s, const kvmux_frame *f) {
    int err;
    /* VERSION_MISMATCH belongs to CAS alone, whose reply has no value and
     * so is never fragmented. */
    if (kvmux_frame_has_more(f) || f->code == KVMUX_STATUS_OK ||
        f->code == KVMUX_STATUS_VERSION_MISMATCH || kvmux__status_to_error(f->code, &err) != 0) {
        kvmux__client_fail(c, KVMUX_EPROTO, "%s reply for request %u in the middle of its "
                           "fragmented reply", kvmux_status_name(f->code), f->request_id);
        return -1;
    }
    kvmux_grant g;
    kvmux_reassembly_abort(&kvmux__pending_x(&c->pending, s)->reasm, &c->session, &g);
    if (reader_grant(c, s->id, &g) != 0) return -1;
    /* The partial value goes; the call completes with err. */
    kvmux__slotx *x = kvmux__pending_x(&c->pending, s);
    free(x->value);
    free(x->rvalue);
    x->value = NULL;
    x->rvalue = NULL;
    x->rvalue_len = 0;
    x->version = 0;
    x->result = err;
    reader_reasm_done(c, s);
    return 0;
}

/* Copy a single-frame GET/WAIT value into a heap buffer for the caller
 * of s (*v or r->value). Returns 0 or KVMUX_ENOMEM. */
static int reader_copy_value(const kvmux__slot *s, const kvmux_frame *f, kvmux_reply *r,
                             kvmux_value **v) {
    uint8_t *p = reader_alloc_value(s->want_value, f->value_len, r->version, v, &r->value);
    if (!p) return KVMUX_ENOMEM;
    if (f->value_len) memcpy(p, f->value, f->value_len);
    if (!s->want_value) r->value_len = f->value_len;
    return 0;
}

/* Complete WAITING slot s from RESPONSE f (lock held). Returns 0, or -1
 * after failing the connection for a malformed reply. */
static int reader_complete(kvmux_client *c, kvmux__slot *s, const kvmux_frame *f) {
    if (f->code == KVMUX_STATUS_NOT_LEADER && kvmux__failover_on(c)) {
        /* Not processed: follow the leader and resend (failover.c). */
        if (f->extras_len != 0) {
            kvmux__client_fail(c, KVMUX_EPROTO, "malformed NOT_LEADER reply (request %u)",
                               f->request_id);
            return -1;
        }
        kvmux__failover_not_leader(c, s, f->value, f->value_len);
        return 0;
    }
    if (f->code == KVMUX_STATUS_OUTCOME_UNKNOWN && kvmux__session_unknown(c, s)) {
        /* A session write: resent with its seq (failover.c). */
        kvmux__failover_drain_check(c);
        return 0;
    }
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
        case KVMUX_STATS: want = 0; parse_value = 1; break; /* text, version 0 */
        case KVMUX_EXISTS: want = 8; value_ok = 0; break;
        case KVMUX_TTL: want = 16; value_ok = 0; break;
        case KVMUX_EXPIRE: want = 8; value_ok = 0; break;
        case KVMUX_PERSIST: want = 8; value_ok = 0; break;
        case KVMUX_SCAN: want = 8; parse_value = 1; break; /* next cursor, key list */
        case KVMUX_SLOWLOG: want = 8; parse_value = 1; break; /* count, text lines */
        case KVMUX_CLIENT_LIST: want = 8; parse_value = 1; break; /* count, text lines */
        case KVMUX_GROUP: want = 8; parse_value = 1; break; /* leader id, text */
        case KVMUX_CLUSTER: want = 0; parse_value = 1; break; /* slot, map bytes */
        default: break;
        }
    } else if (err == KVMUX_EVERSION && s->op == KVMUX_CAS) {
        want = 8;
    } else if (err == KVMUX_EVERSION && s->op == KVMUX_CLUSTER) {
        want = 0; /* setmap: the map is not newer; the value is the message */
    } else if (err == KVMUX_EVERSION) {
        /* Only CAS and CLUSTER setmap have a version precondition
         * (PROTOCOL.md, statuses, 18):
         * handing EVERSION to a SET caller would invent a failure. */
        kvmux__client_fail(c, KVMUX_EPROTO, "server sent %s to %s (request %u): only CAS can get it",
                           kvmux_status_name(f->code), op_name, f->request_id);
        return -1;
    } else if (err == KVMUX_ETIMEDOUT && s->op == KVMUX_WAIT && f->extras_len == 8) {
        want = 8; /* the current version; optional, and not returned */
    }
    if (f->extras_len != want || (!value_ok && f->value_len != 0) ||
        (err == KVMUX_OK && s->op == KVMUX_SCAN &&
         kvmux_scan_count_keys(f->value, f->value_len) < 0)) {
        kvmux__client_fail(c, KVMUX_EPROTO,
                           "malformed %s reply to %s (request %u): extras %u, value %u",
                           kvmux_status_name(f->code), op_name, f->request_id,
                           f->extras_len, f->value_len);
        return -1;
    }

    /* The reply is built here and moved into the caller's record or op
     * by kvmux__slot_finish: the slot never holds one. */
    kvmux_reply r;
    memset(&r, 0, sizeof r);
    kvmux_value *v = NULL;
    int result = err;
    if (err == KVMUX_OK) {
        switch (s->op) {
        case KVMUX_INCR:
            r.number = reader_load_i64(f->extras);
            r.version = kvmux_load_u64be(f->extras + 8);
            break;
        case KVMUX_DEL: case KVMUX_STATS:
            break;
        case KVMUX_TTL: {
            /* 0 on the wire means "no expiry"; the API says -1. A TTL is
             * at most 2^53-1 ms, so it fits an i64. */
            uint64_t left = kvmux_load_u64be(f->extras + 8);
            r.version = kvmux_load_u64be(f->extras);
            r.number = left == 0 ? -1 : left > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)left;
            break;
        }
        default:
            r.version = kvmux_load_u64be(f->extras);
            break;
        }
        if (c->opts.stale_reads &&
            (s->op == KVMUX_SET || s->op == KVMUX_CAS || s->op == KVMUX_INCR ||
             s->op == KVMUX_EXPIRE || s->op == KVMUX_PERSIST)) {
            /* Read-your-writes: later STALE reads ask for at least this. */
            uint64_t cur = atomic_load_explicit(&c->stale_min, memory_order_relaxed);
            while (r.version > cur &&
                   !atomic_compare_exchange_weak_explicit(&c->stale_min, &cur, r.version,
                                                          memory_order_relaxed,
                                                          memory_order_relaxed)) {
            }
        }
        if (parse_value) {
            int rc = reader_copy_value(s, f, &r, &v);
            if (rc != 0) result = rc; /* this call fails; the connection goes on */
        }
    } else if (err == KVMUX_EVERSION && s->op == KVMUX_CAS) {
        r.version = kvmux_load_u64be(f->extras);
    } else if ((err == KVMUX_EWRONGSHARD || err == KVMUX_ETRYAGAIN) && f->value_len) {
        /* WRONG_SHARD / TRY_AGAIN: the value (slot, epoch, owner) is what
         * a cluster handle follows (cluster.c) -- in the reply even for a
         * GET that wants its value as a kvmux_value. */
        uint8_t *p = reader_alloc_value(0, f->value_len, 0, &v, &r.value);
        if (p) {
            memcpy(p, f->value, f->value_len);
            r.value_len = f->value_len;
        }
    } else if ((s->op == KVMUX_GROUP || s->op == KVMUX_CLUSTER) && f->value_len &&
               !s->want_value) {
        /* A refused membership change: the server's message says why
         * (unknown id, already a member, ...); the caller gets it. */
        (void)reader_copy_value(s, f, &r, &v);
    }
    kvmux__slot_finish(c, s, result, &r, v);
    return 0;
}

/* Handle a RESPONSE or PONG (lock held). Returns 0 or -1 (failed). */
static int reader_on_reply(kvmux_client *c, const kvmux_frame *f) {
    kvmux__slot *s = kvmux__pending_find(&c->pending, f->request_id);
    if (s && kvmux__slot_reasm_open(&c->pending, s) && f->type == KVMUX_FRAME_RESPONSE)
        return reader_abort_fragmented(c, s, f);
    if (kvmux_frame_has_more(f)) {
        /* The first frame of a fragmented reply: its CONTINUATIONs need
         * the slot, even a tombstone's (whose bytes are then discarded). */
        if (!s || s->op == KVMUX_PING) {
            kvmux__client_fail(c, KVMUX_EPROTO, "fragmented reply for request %u, which "
                               "is not waiting for one", f->request_id);
            return -1;
        }
        return reader_begin_fragmented(c, s, f);
    }
    if (!s || s->state == KVMUX__SLOT_TOMBSTONE) {
        /* Unknown or stale id (a duplicate: completing a slot frees it
         * and advances its generation), or a late reply to a timed-out
         * call: drop and count. A late reply returns its credit. */
        c->dropped_replies++;
        if (s && s->state == KVMUX__SLOT_TOMBSTONE) {
            kvmux__pending_release(&c->pending, s);
            kvmux__slot_freed(c);
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
        kvmux__slot_finish(c, s, 0, NULL, NULL);
        return 0;
    }
    int rc = reader_complete(c, s, f);
    /* Redirecting: this answer may have been the last write owed. */
    if (rc == 0 && c->redirecting) kvmux__failover_drain_check(c);
    return rc;
}

/* Handle a GOAWAY (lock held): the server drains. Requests already sent
 * keep their answers (the server answers every one, SHUTTING_DOWN for
 * those it read after the GOAWAY); nothing new is sent: callers and the
 * async backlog fail fast with KVMUX_ESHUTDOWN (async.c, call.c). */
static void reader_on_goaway(kvmux_client *c, const kvmux_frame *f) {
    int rc = kvmux_session_on_goaway(&c->session, f);
    if (rc < 0) {
        kvmux__client_fail(c, KVMUX_EPROTO, "unexpected GOAWAY: %s", kvmux_wire_error_name(-rc));
        return;
    }
    if (c->draining) return; /* a second GOAWAY (e.g. the drain timed out) */
    c->draining = 1;
    /* The backlog was never sent: it fails, or with automatic reconnect
     * waits for the next connection. */
    if (!kvmux__reconnecting(c)) kvmux__async_fail(c, KVMUX_ESHUTDOWN);
    pthread_cond_broadcast(&c->slot_cond);
    pthread_cond_broadcast(&c->queue_cond);
}

/* Handle a WINDOW_UPDATE (lock held): the connection window, or one of
 * our fragmented requests' (writer.c). Returns 0 or -1 (failed). */
static int reader_on_window_update(kvmux_client *c, const kvmux_frame *f) {
    int rc = f->request_id == 0 ? kvmux_session_on_window_update(&c->session, f)
                                : kvmux__writer_on_window_update(c, f);
    if (rc < 0) {
        kvmux__client_fail(c, KVMUX_EPROTO, "bad WINDOW_UPDATE for %u: %s", f->request_id,
                           kvmux_wire_error_name(-rc));
        return -1;
    }
    kvmux__writer_kick(c); /* a fragment may be sendable now */
    return 0;
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
            if (f.request_id == 0) break; /* a keepalive PING's (keepalive.c) */
            reader_on_reply(c, &f);
            break;
        case KVMUX_FRAME_RESPONSE:
            reader_on_reply(c, &f);
            break;
        case KVMUX_FRAME_CONTINUATION:
            reader_on_continuation(c, &f);
            break;
        case KVMUX_FRAME_GOAWAY:
            reader_on_goaway(c, &f);
            break;
        case KVMUX_FRAME_WINDOW_UPDATE:
            reader_on_window_update(c, &f);
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

/* Make room in rbuf for more bytes: grow the buffer if the partial frame
 * at its front is larger than it (kvmux__reader_consume keeps the partial
 * frame at the front). */
int kvmux__reader_make_room(kvmux_client *c) {
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

void kvmux__reader_consume(kvmux_client *c, size_t used) {
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

/* Busy polling (kvmux_options.busy_poll_us): 1 while the reader should
 * poll the socket rather than sleep, i.e. until busy_poll_us after the
 * last bytes arrived (reader_run never opens a window with TLS: OpenSSL's
 * reads go through kvmux__tls_recv, which blocks). Each empty poll yields
 * the CPU: the threads the reader is waiting for (callers queueing
 * requests, the writer sending them, the completion thread whose
 * callbacks submit the next ones) usually share its CPUs, and a spin that
 * keeps them off a CPU delays the very reply it waits for. Measured on 2 vCPUs against a
 * busy-polling kvmuxd: serial calls 11k -> 40k ops/s and callback async
 * depth 64 0.65M -> 1.18M with the yield (docs/BENCHMARKS.md). kvmuxd's
 * loop does not yield: nothing it waits for runs on its threads. */
static int reader_spinning(uint64_t spin_until_ns) {
    return spin_until_ns != 0 && kvmux_clock_ns() < spin_until_ns;
}

/* Read and process frames until the connection fails. */
static void reader_run(kvmux_client *c) {
    const uint64_t busy_ns = c->tls ? 0 : (uint64_t)c->opts.busy_poll_us * 1000u;
    uint64_t spin_until_ns = 0; /* 0: sleep in recv/poll as usual */
    for (;;) {
        if (c->rlen > 0) {
            /* Bytes left from the handshake or the last recv. */
            pthread_mutex_lock(&c->mu);
            size_t used = kvmux__reader_process(c);
            if (c->draining && c->fatal == 0 && kvmux__reconnecting(c) &&
                c->pending.nfree + c->pending.ntomb == c->pending.nslots && !c->big_head)
                /* Reconnect: the GOAWAY drain is over (every request we
                 * sent has its answer): move to a new connection now
                 * rather than wait for the server to close. */
                kvmux__client_fail(c, KVMUX_ECLOSED, "connection drained after GOAWAY");
            int fatal = c->fatal;
            /* The blocking callers this batch completed are woken only
             * now, so none of them wakes into a mutex we still hold. */
            kvmux__callwait *heads[KVMUX__MAX_WAKE_CHAINS];
            int nheads = kvmux__call_chain_prepare(c, c->wake_head, heads);
            c->wake_head = NULL;
            pthread_mutex_unlock(&c->mu);
            for (int i = 0; i < nheads; i++) kvmux__call_wake_first(heads[i]);
            if (fatal) break;
            kvmux__reader_consume(c, used);
        }
        if (kvmux__reader_make_room(c) != 0) break;
        if (kvmux__keepalive_on(c)) {
            /* Wait for bytes no longer than the next keepalive action. */
            int64_t now = kvmux__now_ms();
            int64_t due = kvmux__keepalive_due(c);
            if (now >= due) {
                pthread_mutex_lock(&c->mu);
                kvmux__keepalive_tick(c, now);
                int fatal = c->fatal;
                pthread_mutex_unlock(&c->mu);
                if (fatal) break;
                continue;
            }
            int64_t wait = reader_spinning(spin_until_ns) ? 0 : due - now;
            struct pollfd pfd = {c->fd, POLLIN, 0};
            /* TLS: bytes OpenSSL holds are readable now. */
            int pr = c->tls && kvmux__tls_buffered(c)
                         ? 1
                         : poll(&pfd, 1, wait > INT_MAX ? INT_MAX : (int)wait);
            if (pr == 0 || (pr < 0 && errno == EINTR)) continue;
            /* Readable, or an error/hangup that recv will report. */
        }
        int spin = reader_spinning(spin_until_ns);
        ssize_t n = c->tls ? kvmux__tls_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen)
                           : recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen,
                                  spin ? MSG_DONTWAIT : 0);
        if (n < 0 && spin && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            sched_yield(); /* see reader_spinning */
            continue;
        }
        if (n > 0) {
            if (busy_ns) spin_until_ns = kvmux_clock_ns() + busy_ns;
            c->rlen += (size_t)n;
            if (kvmux__keepalive_on(c)) kvmux__keepalive_rx(c, kvmux__now_ms());
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
}

void *kvmux__reader_main(void *arg) {
    kvmux_client *c = arg;
    /* With automatic reconnect the reader thread outlives connections: it
     * re-makes the connection (reconnect.c) and reads the next one. */
    do {
        reader_run(c);
    } while (c->opts.reconnect && kvmux__reconnect_run(c));
    return NULL;
}
