/* Request dispatch: one decoded frame in, the right store call, one
 * response frame out.
 *
 * The order of checks follows docs/PROTOCOL.md section 11: the session
 * first (state, version, direction: connection-level, ERROR + close), then
 * the credit (BUSY, not processed), then the request's shape (UNKNOWN_OP,
 * BAD_REQUEST, TOO_LARGE: request-level, the connection goes on), then the
 * store. Every REQUEST gets exactly one RESPONSE; WAIT may give its answer
 * later (waits.c). Responses carry the request's id and leave in whatever
 * order they are produced.
 *
 * This file holds no state and does no I/O: it calls the store and queues
 * frames on the connection (conn.c writes them). */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

/* GET / WAIT OK response, built under the store's shard lock so the value
 * is copied exactly once, from the store into the output buffer. */
int kvmux__reply_value(void *ud, uint64_t version, const uint8_t *value, size_t len) {
    kvmux_reply_ctx *ctx = ud;
    kvmux_conn *c = ctx->conn;
    /* The client told us the largest frame it accepts: never send more. */
    if ((uint64_t)KVMUX_FRAME_HDR_LEN + 8 + len > c->sess.peer.max_frame_size) {
        ctx->too_large = len;
        return KVMUX_STATUS_TOO_LARGE;
    }
    uint8_t ext[8];
    kvmux_store_u64be(ext, version);
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = c->sess.version;
    f.type = KVMUX_FRAME_RESPONSE;
    f.request_id = ctx->request_id;
    f.code = KVMUX_STATUS_OK;
    f.extras = ext;
    f.extras_len = 8;
    f.value = value;
    f.value_len = (uint32_t)len;
    /* On failure the connection is already marked dead (conn.c); nothing
     * more can be sent on it. */
    return kvmux__conn_send(c, &f) == 0 ? 0 : KVMUX_STATUS_INTERNAL;
}

void kvmux__reply_value_failed(kvmux_reply_ctx *ctx, int status) {
    char msg[KVMUX_MAX_STATUS_MSG];
    if (status == KVMUX_STATUS_TOO_LARGE) {
        snprintf(msg, sizeof msg, "value of %zu bytes exceeds your max frame size %u",
                 ctx->too_large, ctx->conn->sess.peer.max_frame_size);
    } else {
        snprintf(msg, sizeof msg, "out of memory");
        status = KVMUX_STATUS_INTERNAL;
    }
    kvmux__conn_respond(ctx->conn, ctx->request_id, (uint8_t)status, NULL, 0, msg);
}

static void respond_version(kvmux_conn *c, uint32_t id, uint8_t status, uint64_t v) {
    uint8_t ext[8];
    kvmux_store_u64be(ext, v);
    kvmux__conn_respond(c, id, status, ext, 8, NULL);
}

static void respond_status(kvmux_conn *c, uint32_t id, int rc) {
    kvmux__conn_respond(c, id, (uint8_t)rc, NULL, 0,
                        rc == KVMUX_STATUS_INTERNAL ? "out of memory" : NULL);
}

static int64_t load_i64be(const uint8_t *p) {
    uint64_t u = kvmux_load_u64be(p);
    int64_t v;
    memcpy(&v, &u, sizeof v); /* two's complement reinterpretation, no UB */
    return v;
}

static int takes_value(uint8_t op) { return op == KVMUX_OP_SET || op == KVMUX_OP_CAS; }

/* Request-level validation. Returns 0 if the request may run, else it has
 * been answered. */
static int check_request(kvmux_conn *c, const kvmux_frame *f) {
    const kvmux_server_config *cfg = &c->loop->srv->cfg;
    char msg[KVMUX_MAX_STATUS_MSG];
    uint8_t status;
    int want = kvmux_request_extras_len(f->code);
    if (want < 0) {
        status = KVMUX_STATUS_UNKNOWN_OP;
        snprintf(msg, sizeof msg, "unknown opcode %u", f->code);
    } else if (f->extras_len != want) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "%s takes %d bytes of extras, got %u",
                 kvmux_opcode_name(f->code), want, f->extras_len);
    } else if (f->key_len == 0) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "empty key");
    } else if (f->key_len > cfg->max_key) {
        status = KVMUX_STATUS_TOO_LARGE;
        snprintf(msg, sizeof msg, "key of %u bytes exceeds max key size %u",
                 f->key_len, cfg->max_key);
    } else if (takes_value(f->code) && f->value_len > cfg->max_value) {
        status = KVMUX_STATUS_TOO_LARGE;
        snprintf(msg, sizeof msg, "value of %u bytes exceeds max value size %u",
                 f->value_len, cfg->max_value);
    } else if (!takes_value(f->code) && f->value_len > 0) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "%s takes no value, got %u bytes",
                 kvmux_opcode_name(f->code), f->value_len);
    } else {
        return 0;
    }
    kvmux__conn_respond(c, f->request_id, status, NULL, 0, msg);
    return -1;
}

/* Run a valid request. Returns 1 if it was parked (WAIT: the credit stays
 * taken until waits.c answers), else 0. */
static int run_request(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_store *st = c->loop->srv->store;
    uint32_t id = f->request_id;
    uint64_t version = 0;
    int rc;
    switch (f->code) {
    case KVMUX_OP_GET: {
        kvmux_reply_ctx ctx = {c, id, 0};
        rc = kvmux_store_get(st, f->key, f->key_len, kvmux__reply_value, &ctx);
        if (rc == KVMUX_STATUS_NOT_FOUND) respond_status(c, id, rc);
        else if (rc != KVMUX_STATUS_OK) kvmux__reply_value_failed(&ctx, rc);
        return 0;
    }
    case KVMUX_OP_SET:
        rc = kvmux_store_set(st, f->key, f->key_len, f->value, f->value_len,
                             kvmux_load_u64be(f->extras), &version);
        if (rc == KVMUX_STATUS_OK) respond_version(c, id, KVMUX_STATUS_OK, version);
        else respond_status(c, id, rc);
        return 0;
    case KVMUX_OP_DEL:
        respond_status(c, id, kvmux_store_del(st, f->key, f->key_len));
        return 0;
    case KVMUX_OP_INCR: {
        int64_t value = 0;
        rc = kvmux_store_incr(st, f->key, f->key_len, load_i64be(f->extras), &value,
                              &version);
        if (rc == KVMUX_STATUS_OK) {
            uint8_t ext[16];
            uint64_t u;
            memcpy(&u, &value, sizeof u);
            kvmux_store_u64be(ext, u);
            kvmux_store_u64be(ext + 8, version);
            kvmux__conn_respond(c, id, KVMUX_STATUS_OK, ext, 16, NULL);
        } else {
            respond_status(c, id, rc);
        }
        return 0;
    }
    case KVMUX_OP_CAS:
        rc = kvmux_store_cas(st, f->key, f->key_len, kvmux_load_u64be(f->extras),
                             f->value, f->value_len, kvmux_load_u64be(f->extras + 8),
                             &version);
        if (rc == KVMUX_STATUS_OK || rc == KVMUX_STATUS_VERSION_MISMATCH)
            respond_version(c, id, (uint8_t)rc, version);
        else
            respond_status(c, id, rc);
        return 0;
    case KVMUX_OP_WAIT:
        return kvmux__wait_park(c, f, kvmux_load_u64be(f->extras),
                                kvmux_load_u32be(f->extras + 8)) == 1;
    default:
        respond_status(c, id, KVMUX_STATUS_UNKNOWN_OP); /* unreachable: checked */
        return 0;
    }
}

static void on_request(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_loop *l = c->loop;
    KVMUX_STAT_ADD(l, requests[f->code <= KVMUX_OP_MAX ? f->code : 0], 1);
    if (kvmux_session_request_begin(&c->sess) != 0) {
        /* Not processed, no credit taken: the client may retry. */
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "more than %u requests outstanding",
                 c->sess.local.max_outstanding);
        KVMUX_STAT_ADD(l, busy, 1);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BUSY, NULL, 0, msg);
        return;
    }
    if (check_request(c, f) == 0 && run_request(c, f) == 1) return; /* parked */
    kvmux_session_request_end(&c->sess);
}

static void on_hello(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_server *srv = c->loop->srv;
    uint8_t out[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_NAME + 4 * KVMUX_SETTING_ENTRY_LEN];
    int n = kvmux_session_accept_hello(&c->sess, f, out, srv->cfg.name);
    if (n < 0) {
        if (n == -KVMUX_ERR_UNSUPPORTED_VERSION)
            kvmux__conn_fail(c, 0, KVMUX_ERR_UNSUPPORTED_VERSION,
                             "no common protocol version: client speaks %u..%u, "
                             "server speaks %u..%u", f->extras[0], f->extras[1],
                             KVMUX_PROTO_VERSION_MIN, KVMUX_PROTO_VERSION_MAX);
        else
            kvmux__conn_fail(c, 0, (uint8_t)-n, "bad HELLO: %s (settings block of %u bytes)",
                             kvmux_wire_error_name(-n), f->value_len);
        return;
    }
    kvmux__timer_cancel(&c->loop->timers, &c->timer); /* handshake done */
    uint8_t *p = kvmux__outbuf_append(&c->out, (size_t)n);
    if (!p) {
        kvmux__conn_close(c, "out of memory queueing HELLO_ACK");
        return;
    }
    memcpy(p, out, (size_t)n);
    kvmux__loop_mark_dirty(c);
    KVMUX_LOG_D("conn %llu (%s): handshake done, client '%.*s', version %u",
                (unsigned long long)c->id, c->peer, (int)f->key_len,
                (const char *)f->key, c->sess.version);
}

/* Message for a frame the session refused. */
static void session_refused(kvmux_conn *c, const kvmux_frame *f, int err) {
    const char *type = kvmux_frame_type_name(f->type);
    switch (err) {
    case KVMUX_ERR_HANDSHAKE:
        if (c->sess.state == KVMUX_SESSION_OPEN)
            kvmux__conn_fail(c, 0, (uint8_t)err, "%s after the handshake", type);
        else
            kvmux__conn_fail(c, 0, (uint8_t)err, "expected HELLO, got %s", type);
        break;
    case KVMUX_ERR_BAD_VERSION:
        kvmux__conn_fail(c, f->request_id, (uint8_t)err,
                         "%s frame with version %u, expected %u", type, f->version,
                         c->sess.state == KVMUX_SESSION_OPEN ? c->sess.version
                                                             : KVMUX_HANDSHAKE_VERSION);
        break;
    case KVMUX_ERR_PROTOCOL:
        kvmux__conn_fail(c, 0, (uint8_t)err, "%s with request_id 0", type);
        break;
    case KVMUX_ERR_UNEXPECTED_FRAME:
        kvmux__conn_fail(c, f->request_id, (uint8_t)err,
                         "%s frames are not sent to a server", type);
        break;
    default:
        kvmux__conn_fail(c, f->request_id, (uint8_t)err, "%s frame refused: %s", type,
                         kvmux_wire_error_name(err));
        break;
    }
}

void kvmux__dispatch_frame(kvmux_conn *c, const kvmux_frame *f) {
    int rc = kvmux_session_check_recv(&c->sess, f);
    if (rc < 0) {
        session_refused(c, f, -rc);
        return;
    }
    switch (f->type) {
    case KVMUX_FRAME_HELLO:
        on_hello(c, f);
        break;
    case KVMUX_FRAME_REQUEST:
        on_request(c, f);
        break;
    case KVMUX_FRAME_PING: {
        kvmux_frame pong = *f;
        pong.type = KVMUX_FRAME_PONG;
        pong.version = c->sess.version;
        KVMUX_STAT_ADD(c->loop, pings, 1);
        kvmux__conn_send(c, &pong);
        break;
    }
    case KVMUX_FRAME_PONG:
        break; /* kvmuxd sends no PINGs yet; a stray PONG is harmless */
    case KVMUX_FRAME_ERROR:
        /* The client reports a fault and closes; so do we, silently. */
        KVMUX_LOG_D("conn %llu (%s): client sent ERROR %s: %.*s",
                    (unsigned long long)c->id, c->peer, kvmux_wire_error_name(f->code),
                    (int)f->value_len, (const char *)f->value);
        kvmux__conn_close(c, "client sent ERROR");
        break;
    default:
        kvmux__conn_fail(c, f->request_id, KVMUX_ERR_UNEXPECTED_FRAME,
                         "%s frames are not sent to a server",
                         kvmux_frame_type_name(f->type));
        break;
    }
}
