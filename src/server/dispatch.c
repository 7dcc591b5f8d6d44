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
 * Protocol v2 adds, per frame: the DEADLINE flag (a request whose budget
 * is already spent is answered TIMEOUT without running; a WAIT's timeout
 * is capped by it), the MORE flag (a fragmented request: upload.c),
 * CONTINUATION (upload.c), WINDOW_UPDATE (sched.c), CANCEL (whichever of
 * waits.c / upload.c / sched.c holds the id; unknown ids are ignored, so a
 * CANCEL crossing its response is harmless), the PING and CANCEL flood
 * caps, and, after GOAWAY, SHUTTING_DOWN for every new request.
 *
 * Values are copied into the output queue under the shard lock only when
 * small (INLINE_MAX); a larger one is kept by reference and sent after the
 * lock is released (sched.c), fragmented on a v2 connection.
 *
 * Writes (SET, DEL, INCR, CAS) first pass kvmux__durable_refuse (log
 * failed: INTERNAL; over --maxmemory: OUT_OF_MEMORY on v2, BUSY on v1,
 * with the message "OOM ..."), and their success
 * answers go through kvmux__durable_respond, which under --fsync always
 * holds them until the append-only log's fsync covers them (durable.c).
 *
 * This file holds no state and does no I/O: it calls the store and queues
 * frames on the connection (conn.c writes them). */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "migin.h"
#include "server_internal.h"
#include "../cluster/cluster.h"

static int is_import(const kvmux_frame *f) {
    return f->code == KVMUX_OP_CLUSTER && f->key_len == 6 && memcmp(f->key, "import", 6) == 0;
}

/* The longest CLUSTER argument: a slot migration's import batch
 * (docs/MIGRATION.md 4) for `import` -- the largest 1 MiB batch, or a
 * batch of one PUT with a value up to --max-value (sent fragmented; the
 * connection's value limit bounds it too) --, the largest map for the
 * others. */
static uint32_t cluster_arg_max(const kvmux_conn *c, const kvmux_frame *f) {
    if (!is_import(f)) return KVMUX_MAP_WIRE_MAX;
    const kvmux_server_config *cfg = &c->loop->srv->cfg;
    uint64_t one = (uint64_t)KVMUX_MIG_BATCH_HDR_LEN + 23u + cfg->max_key + cfg->max_value;
    if (one > UINT32_MAX) one = UINT32_MAX;
    return one > KVMUX_MIG_BATCH_WIRE_MAX ? (uint32_t)one : KVMUX_MIG_BATCH_WIRE_MAX;
}

/* Values up to this size are copied into the output queue under the shard
 * lock (cheaper than a reference for small ones); larger ones are sent by
 * reference. */
#define INLINE_MAX (16u * 1024)

/* GET / WAIT OK response, built under the store's shard lock: a small
 * value is copied exactly once, from the store into the output buffer; a
 * large one is not copied at all but referenced (ctx->held), and sent by
 * kvmux__reply_value_finish once the lock is released. */
int kvmux__reply_value(void *ud, uint64_t version, const uint8_t *value, size_t len) {
    kvmux_reply_ctx *ctx = ud;
    kvmux_conn *c = ctx->conn;
    /* The fence checked under the key's shard lock, where the value is
     * read: a read that finds R not fenced here returns the state of that
     * instant, which no later write, import or purge can have changed
     * (docs/MIGRATION.md 5). */
    if (ctx->fence_slot && kvmux__cluster_migrating(c->loop->srv, (uint16_t)(ctx->fence_slot - 1)))
        return KVMUX_STATUS_TRY_AGAIN;
    /* The one check of the client's MAX_VALUE_SIZE for GET and WAIT
     * replies (PROTOCOL.md section 7): here the value is chosen, before
     * any path (inline, by reference, fragmented) is. */
    if (len > c->sess.peer.max_value_size) {
        ctx->too_large = len;
        return KVMUX_STATUS_TOO_LARGE;
    }
    size_t inline_max = INLINE_MAX;
    if (kvmux_session_is_v2(&c->sess) && c->loop->srv->cfg.fragment_size < inline_max)
        inline_max = c->loop->srv->cfg.fragment_size;
    /* The client told us the largest frame and value it accepts: anything
     * near those limits takes the by-reference path, which checks them. */
    if (len > inline_max || len > c->sess.peer.max_value_size ||
        (uint64_t)KVMUX_FRAME_HDR_LEN + 8 + len > c->sess.peer.max_frame_size) {
        ctx->held = kvmux_store_value_hold(value); /* copies a small inline value */
        if (!ctx->held) return KVMUX_STATUS_INTERNAL;
        ctx->version = version;
        ctx->len = len;
        return 0;
    }
    /* On failure the connection is already marked dead (conn.c); nothing
     * more can be sent on it. */
    return kvmux__conn_respond_u64(c, ctx->request_id, version, value, len) == 0
               ? 0
               : KVMUX_STATUS_INTERNAL;
}

int kvmux__reply_value_finish(kvmux_reply_ctx *ctx) {
    if (!ctx->held) return 0;
    kvmux_store_value *v = ctx->held;
    ctx->held = NULL;
    return kvmux__sched_send_value(ctx->conn, ctx->request_id, ctx->version, v, ctx->len) == 1;
}

void kvmux__reply_value_failed(kvmux_reply_ctx *ctx, int status) {
    char msg[KVMUX_MAX_STATUS_MSG];
    if (status == KVMUX_STATUS_TOO_LARGE) {
        snprintf(msg, sizeof msg, "value of %zu bytes exceeds your max value size %u",
                 ctx->too_large, ctx->conn->sess.peer.max_value_size);
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

/* A successful write's answer: held for the log's fsync under --fsync
 * always (durable.c). Returns 1 if held (the credit stays taken). */
static int respond_write(kvmux_conn *c, uint32_t id, uint8_t status, uint64_t v) {
    uint8_t ext[8];
    kvmux_store_u64be(ext, v);
    return kvmux__durable_respond(c, id, status, ext, 8);
}

static int is_write(uint8_t op) {
    return op == KVMUX_OP_SET || op == KVMUX_OP_DEL || op == KVMUX_OP_INCR ||
           op == KVMUX_OP_CAS || op == KVMUX_OP_EXPIRE || op == KVMUX_OP_PERSIST;
}

/* Writes that never need more memory than the key already has (DEL frees
 * it; EXPIRE and PERSIST change at most one 8-byte word of the entry), so
 * they are not refused over --maxmemory: they are how memory is freed. */
static int frees_memory(uint8_t op) {
    return op == KVMUX_OP_DEL || op == KVMUX_OP_EXPIRE || op == KVMUX_OP_PERSIST;
}

/* A store result as a response. The store's INTERNAL means an allocation
 * failed (store.h): a v2 peer gets the precise OUT_OF_MEMORY, a v1 peer
 * INTERNAL (its decoder does not know status 13). */
static void respond_status(kvmux_conn *c, uint32_t id, int rc) {
    if (rc == KVMUX_STATUS_INTERNAL && kvmux_session_is_v2(&c->sess))
        rc = KVMUX_STATUS_OUT_OF_MEMORY;
    kvmux__conn_respond(c, id, (uint8_t)rc, NULL, 0,
                        rc == KVMUX_STATUS_INTERNAL || rc == KVMUX_STATUS_OUT_OF_MEMORY
                            ? "out of memory"
                            : NULL);
}

static int read_version(void *ud, uint64_t version, const uint8_t *value, size_t len) {
    (void)value, (void)len;
    *(uint64_t *)ud = version;
    return 0;
}

/* TIMEOUT for a request whose DEADLINE was already spent (0), answered
 * without running it, in the shape section 4 gives TIMEOUT for its opcode:
 * a WAIT's carries the key's current version (0: absent), exactly like a
 * WAIT that times out after parking; any other op's has no extras and a
 * message. */
static void respond_expired(kvmux_conn *c, const kvmux_frame *f) {
    if (f->code == KVMUX_OP_WAIT && kvmux__check_request(c, f, f->value_len) == 0) {
        uint64_t current = 0;
        if (kvmux_store_get(c->loop->srv->store, f->key, f->key_len, read_version,
                            &current) != KVMUX_STATUS_OK)
            current = 0;
        respond_version(c, f->request_id, KVMUX_STATUS_TIMEOUT, current);
        return;
    }
    if (f->code == KVMUX_OP_WAIT) return; /* malformed: answered BAD_REQUEST */
    kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_TIMEOUT, NULL, 0,
                        "deadline expired before the request was processed");
}

static int64_t load_i64be(const uint8_t *p) {
    uint64_t u = kvmux_load_u64be(p);
    int64_t v;
    memcpy(&v, &u, sizeof v); /* two's complement reinterpretation, no UB */
    return v;
}

static int takes_value(uint8_t op) { return op == KVMUX_OP_SET || op == KVMUX_OP_CAS; }
static int takes_no_key(uint8_t op) {
    return op == KVMUX_OP_SLOWLOG || op == KVMUX_OP_CLIENT_LIST;
}

int kvmux__check_request(kvmux_conn *c, const kvmux_frame *f, uint32_t value_len) {
    const kvmux_server_config *cfg = &c->loop->srv->cfg;
    /* The value limit is the one advertised on this connection: a v1
     * connection gets min(--max-value, --max-value-v1). */
    uint32_t max_value = c->sess.local.max_value_size;
    char msg[KVMUX_MAX_STATUS_MSG];
    uint8_t status;
    int want = kvmux_request_extras_len(f->code);
    if ((f->code == KVMUX_OP_GROUP || f->code == KVMUX_OP_CLUSTER) &&
        c->sess.version < KVMUX_PROTO_V3)
        want = -1;
    if (want < 0) {
        status = KVMUX_STATUS_UNKNOWN_OP;
        snprintf(msg, sizeof msg, "unknown opcode %u", f->code);
    } else if (f->extras_len != want) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "%s takes %d bytes of extras, got %u",
                 kvmux_opcode_name(f->code), want, f->extras_len);
    } else if (f->code == KVMUX_OP_EXPIRE && (kvmux_load_u64be(f->extras) == 0 ||
                                              !kvmux_ttl_valid(kvmux_load_u64be(f->extras)))) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "EXPIRE ttl_ms must be 1..%llu, got %llu",
                 (unsigned long long)KVMUX_MAX_TTL_MS,
                 (unsigned long long)kvmux_load_u64be(f->extras));
    } else if (kvmux_frame_has_session(f) && !is_write(f->code)) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "SESSION on %s: only writes carry a session seq",
                 kvmux_opcode_name(f->code));
    } else if (kvmux_frame_has_session(f) && (c->session_id == 0 ||
                                           (f->session_seq & ~KVMUX_SESSION_RETRY) == 0)) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "%s", c->session_id == 0
                                            ? "SESSION without a session id in HELLO"
                                            : "SESSION seq 0: seqs start at 1");
    } else if (f->key_len > 0 && takes_no_key(f->code)) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "%s takes no key, got %u bytes",
                 kvmux_opcode_name(f->code), f->key_len);
    } else if (f->key_len == 0 && kvmux_request_key_required(f->code)) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "empty key");
    } else if (f->key_len > cfg->max_key) {
        status = KVMUX_STATUS_TOO_LARGE;
        snprintf(msg, sizeof msg, "key of %u bytes exceeds max key size %u",
                 f->key_len, cfg->max_key);
    } else if (takes_value(f->code) && value_len > max_value) {
        status = KVMUX_STATUS_TOO_LARGE;
        snprintf(msg, sizeof msg, "value of %u bytes exceeds max value size %u",
                 value_len, max_value);
    } else if (takes_value(f->code) &&
               !kvmux_ttl_valid(kvmux_load_u64be(f->extras + (f->code == KVMUX_OP_CAS ? 8 : 0)))) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "ttl_ms above the maximum %llu",
                 (unsigned long long)KVMUX_MAX_TTL_MS);
    } else if ((f->flags & KVMUX_FLAG_STALE) &&
               !(f->code == KVMUX_OP_GET || f->code == KVMUX_OP_EXISTS ||
                 f->code == KVMUX_OP_TTL || f->code == KVMUX_OP_WAIT ||
                 f->code == KVMUX_OP_SCAN)) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "STALE applies to GET, EXISTS, TTL, WAIT and SCAN, not %s",
                 kvmux_opcode_name(f->code));
    } else if (f->code == KVMUX_OP_GROUP && value_len > KVMUX_GROUP_ARGS_MAX) {
        status = KVMUX_STATUS_TOO_LARGE;
        snprintf(msg, sizeof msg, "GROUP arguments of %u bytes exceed %u", value_len,
                 KVMUX_GROUP_ARGS_MAX);
    } else if (f->code == KVMUX_OP_CLUSTER && value_len > cluster_arg_max(c, f)) {
        status = KVMUX_STATUS_TOO_LARGE;
        snprintf(msg, sizeof msg, "CLUSTER argument of %u bytes exceeds %u", value_len,
                 (unsigned)cluster_arg_max(c, f));
    } else if (!takes_value(f->code) && f->code != KVMUX_OP_GROUP &&
               f->code != KVMUX_OP_CLUSTER && value_len > 0) {
        status = KVMUX_STATUS_BAD_REQUEST;
        snprintf(msg, sizeof msg, "%s takes no value, got %u bytes",
                 kvmux_opcode_name(f->code), value_len);
    } else {
        return 0;
    }
    kvmux__conn_respond(c, f->request_id, status, NULL, 0, msg);
    return -1;
}

int kvmux__run_store_value(kvmux_conn *c, uint32_t id, uint8_t op, const uint8_t *extras,
                           uint64_t seq,
                           const uint8_t *key, uint16_t klen, kvmux_store_value *val) {
    kvmux_store *st = c->loop->srv->store;
    uint64_t version = 0;
    int rc;
    if (c->loop->srv->repl) return kvmux__repl_upload(c, id, op, extras, seq, key, klen, val);
    if (kvmux__durable_refuse(c, id, 0)) {
        kvmux_store_value_release(val);
        return 0;
    }
    if (op == KVMUX_OP_SET) {
        rc = kvmux_store_set_value(st, key, klen, val, kvmux_load_u64be(extras), &version);
        if (rc == KVMUX_STATUS_OK) return respond_write(c, id, KVMUX_STATUS_OK, version);
        respond_status(c, id, rc);
        return 0;
    }
    rc = kvmux_store_cas_value(st, key, klen, kvmux_load_u64be(extras), val,
                               kvmux_load_u64be(extras + 8), &version);
    if (rc == KVMUX_STATUS_OK) return respond_write(c, id, KVMUX_STATUS_OK, version);
    if (rc == KVMUX_STATUS_VERSION_MISMATCH)
        respond_version(c, id, (uint8_t)rc, version);
    else
        respond_status(c, id, rc);
    return 0;
}

static int run_request(kvmux_conn *c, const kvmux_frame *f);

int kvmux__run_uploaded(kvmux_conn *c, uint32_t request_id, uint8_t op, const uint8_t *extras,
                        uint64_t seq, const uint8_t *key, uint16_t klen, kvmux_store_value *val) {
    if (op == KVMUX_OP_SET || op == KVMUX_OP_CAS)
        return kvmux__run_store_value(c, request_id, op, extras, seq, key, klen, val);
    /* CLUSTER or GROUP (kvmux__check_request let nothing else through):
     * as if the value had come in one frame. */
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.type = KVMUX_FRAME_REQUEST;
    f.code = op;
    f.request_id = request_id;
    f.key = key;
    f.key_len = klen;
    f.value = val ? kvmux_store_value_data(val) : NULL;
    f.value_len = val ? (uint32_t)kvmux_store_value_len(val) : 0;
    if (is_import(&f)) return kvmux__cluster_import_value(c, &f, val); /* keeps val's bytes */
    int rc = run_request(c, &f);
    kvmux_store_value_release(val);
    return rc;
}

/* Run a valid request. Returns 1 if it keeps its credit (a parked WAIT,
 * or a value being streamed: waits.c / sched.c give it back), else 0. */
/* After a keyed read whose store call returned without a callback (absent
 * key, EXISTS, TTL): 1 with TRY_AGAIN sent if its slot is fenced now. A
 * fence not yet set here was set after the read, so the read precedes
 * the fence's apply (docs/MIGRATION.md 5). */
static int fenced_since(kvmux_conn *c, const kvmux_frame *f) {
    if (c->loop->srv->cfg.cluster_group == 0) return 0;
    uint16_t slot = kvmux_slot(f->key, f->key_len);
    if (!kvmux__cluster_migrating(c->loop->srv, slot)) return 0;
    kvmux__cluster_try_again_migrating(c, f->request_id, slot);
    return 1;
}

static int run_request(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_store *st = c->loop->srv->store;
    uint32_t id = f->request_id;
    uint64_t version = 0;
    int rc;
    if (f->code == KVMUX_OP_CLUSTER) {
        /* slot and map: answered from what this node holds; setmap: through
         * the log (replicate.c). */
        return kvmux__cluster_request(c, f);
    }
    if (kvmux__cluster_refuse(c, f)) return 0;
    if (c->loop->srv->repl) {
        /* Replicated mode: writes and reads go through the log first
         * (replicate.c), unless this is a read being re-run. */
        rc = kvmux__repl_request(c, f);
        if (rc >= 0) return rc;
    }
    if (is_write(f->code) && kvmux__durable_refuse(c, id, frees_memory(f->code))) return 0;
    switch (f->code) {
    case KVMUX_OP_GET: {
        kvmux_reply_ctx ctx = {.conn = c, .request_id = id};
        if (c->loop->srv->cfg.cluster_group)
            ctx.fence_slot = (uint32_t)kvmux_slot(f->key, f->key_len) + 1;
        rc = kvmux_store_get(st, f->key, f->key_len, kvmux__reply_value, &ctx);
        if (rc == KVMUX_STATUS_OK) return kvmux__reply_value_finish(&ctx);
        if (rc == KVMUX_STATUS_TRY_AGAIN) {
            kvmux__cluster_try_again_migrating(c, id, (uint16_t)(ctx.fence_slot - 1));
        } else if (rc == KVMUX_STATUS_NOT_FOUND) {
            if (!fenced_since(c, f)) respond_status(c, id, rc);
        } else {
            kvmux__reply_value_failed(&ctx, rc);
        }
        return 0;
    }
    case KVMUX_OP_SET:
        rc = kvmux_store_set(st, f->key, f->key_len, f->value, f->value_len,
                             kvmux_load_u64be(f->extras), &version);
        if (rc == KVMUX_STATUS_OK) return respond_write(c, id, KVMUX_STATUS_OK, version);
        respond_status(c, id, rc);
        return 0;
    case KVMUX_OP_DEL:
        rc = kvmux_store_del(st, f->key, f->key_len);
        if (rc == KVMUX_STATUS_OK) return kvmux__durable_respond(c, id, KVMUX_STATUS_OK, NULL, 0);
        respond_status(c, id, rc);
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
            return kvmux__durable_respond(c, id, KVMUX_STATUS_OK, ext, 16);
        } else {
            respond_status(c, id, rc);
        }
        return 0;
    }
    case KVMUX_OP_CAS:
        rc = kvmux_store_cas(st, f->key, f->key_len, kvmux_load_u64be(f->extras),
                             f->value, f->value_len, kvmux_load_u64be(f->extras + 8),
                             &version);
        if (rc == KVMUX_STATUS_OK) return respond_write(c, id, KVMUX_STATUS_OK, version);
        if (rc == KVMUX_STATUS_VERSION_MISMATCH)
            respond_version(c, id, (uint8_t)rc, version);
        else
            respond_status(c, id, rc);
        return 0;
    case KVMUX_OP_STATS:
        kvmux__stats_respond(c, f);
        return 0;
    case KVMUX_OP_EXISTS:
        rc = kvmux_store_exists(st, f->key, f->key_len, &version);
        if (fenced_since(c, f)) return 0;
        if (rc == KVMUX_STATUS_OK) respond_version(c, id, KVMUX_STATUS_OK, version);
        else respond_status(c, id, rc);
        return 0;
    case KVMUX_OP_TTL: {
        uint64_t left = 0;
        rc = kvmux_store_ttl(st, f->key, f->key_len, &version, &left);
        if (fenced_since(c, f)) return 0;
        if (rc != KVMUX_STATUS_OK) {
            respond_status(c, id, rc);
            return 0;
        }
        uint8_t ext[16];
        kvmux_store_u64be(ext, version);
        kvmux_store_u64be(ext + 8, left);
        kvmux__conn_respond(c, id, KVMUX_STATUS_OK, ext, 16, NULL);
        return 0;
    }
    case KVMUX_OP_EXPIRE:
    case KVMUX_OP_PERSIST:
        rc = f->code == KVMUX_OP_EXPIRE
                 ? kvmux_store_expire(st, f->key, f->key_len, kvmux_load_u64be(f->extras),
                                      &version)
                 : kvmux_store_persist(st, f->key, f->key_len, &version);
        if (rc == KVMUX_STATUS_OK) return respond_write(c, id, KVMUX_STATUS_OK, version);
        respond_status(c, id, rc);
        return 0;
    case KVMUX_OP_SCAN:
        kvmux__scan_respond(c, f);
        return 0;
    case KVMUX_OP_SLOWLOG:
        kvmux__slowlog_respond(c, f);
        return 0;
    case KVMUX_OP_CLIENT_LIST:
        kvmux__client_list_respond(c, f);
        return 0;
    case KVMUX_OP_WAIT: {
        uint32_t timeout = kvmux_load_u32be(f->extras + 8);
        /* The request's deadline caps how long it may wait. */
        if (kvmux_frame_has_deadline(f) && f->deadline_ms < timeout) timeout = f->deadline_ms;
        return kvmux__wait_park(c, f, kvmux_load_u64be(f->extras), timeout) == 1;
    }
    default:
        respond_status(c, id, KVMUX_STATUS_UNKNOWN_OP); /* unreachable: checked */
        return 0;
    }
}

int kvmux__run_read(kvmux_conn *c, const kvmux_frame *f) { return run_request(c, f); }

/* Whether request_id is still held by something on c that will answer
 * it later. Only what outlives the dispatch of its REQUEST can collide:
 * every other request was answered before the next frame was decoded. */
static int id_in_use(kvmux_conn *c, uint32_t id) {
    for (const kvmux_wait *w = c->waits; w; w = w->cnext)
        if (w->request_id == id) return 1;
    return (c->nuploads && kvmux__upload_has(c, id)) ||
           (c->nostreams && kvmux__sched_has(c, id)) ||
           (c->nheld && kvmux__durable_holds(c, id)) ||
           (c->nrepl && kvmux__repl_holds(c, id));
}

int kvmux__refuse_id_in_use(kvmux_conn *c, uint32_t request_id) {
    if ((c->nwaits | c->nuploads | c->nostreams | c->nheld | c->nrepl) == 0 ||
        !id_in_use(c, request_id))
        return 0;
    kvmux__conn_fail(c, request_id, KVMUX_ERR_PROTOCOL,
                     "REQUEST %u reuses the id of a request not yet answered", request_id);
    return 1;
}

static void on_request(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_loop *l = c->loop;
    if (kvmux__refuse_id_in_use(c, f->request_id)) return;
    if (kvmux_frame_has_total(f)) {
        kvmux__upload_begin(c, f); /* counts, checks and answers itself */
        return;
    }
    KVMUX_STAT_ADD(l, requests[f->code <= KVMUX_OP_MAX ? f->code : 0], 1);
    if (c->sess.drain == KVMUX_DRAIN_GOAWAY_SENT) {
        /* Read after our GOAWAY: not processed, safe to retry elsewhere. */
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0,
                            "server shutting down");
        return;
    }
    c->last_request_id = f->request_id;
    if (kvmux_session_request_begin(&c->sess) != 0) {
        /* Not processed, no credit taken: the client may retry. */
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "more than %u requests outstanding",
                 c->sess.local.max_outstanding);
        KVMUX_STAT_ADD(l, busy, 1);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BUSY, NULL, 0, msg);
        return;
    }
    if (kvmux_frame_has_deadline(f) && f->deadline_ms == 0) {
        /* The client's budget is already spent: do not do the work. */
        KVMUX_STAT_ADD(l, deadline_expired, 1);
        respond_expired(c, f);
    } else {
        uint64_t t0 = kvmux__metrics_now_ns();
        int kept = kvmux__check_request(c, f, f->value_len) == 0 && run_request(c, f) == 1;
        kvmux__metrics_observe(c, f->code, f->key, f->key_len, t0); /* c is not freed yet */
        if (kept) return; /* the credit is kept until the answer is complete */
    }
    kvmux_session_request_end(&c->sess);
}

static void on_hello(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_server *srv = c->loop->srv;
    uint8_t out[KVMUX_HELLO_ACK_MAX_LEN];
    /* A v1 connection carries each value in one frame: advertise (and
     * enforce) the v1 value limit there. The version is the one
     * kvmux_session_accept_hello is about to choose. */
    if (f->extras_len == 2 &&
        kvmux_negotiate_version(f->extras[0], f->extras[1], KVMUX_PROTO_VERSION_MIN,
                                c->sess.max_version) < KVMUX_PROTO_V2) {
        uint32_t v1 = srv->cfg.max_value < srv->cfg.max_value_v1 ? srv->cfg.max_value
                                                                  : srv->cfg.max_value_v1;
        c->sess.local.max_value_size = v1;
    }
    if (c->loop->rt.auth_len && kvmux__auth_check_hello(c, f) != 0) return;
    int n = kvmux_session_accept_hello(&c->sess, f, out, srv->cfg.name);
    if (n < 0) {
        if (n == -KVMUX_ERR_UNSUPPORTED_VERSION)
            kvmux__conn_fail(c, 0, KVMUX_ERR_UNSUPPORTED_VERSION,
                             "no common protocol version: client speaks %u..%u, "
                             "server speaks %u..%u", f->extras[0], f->extras[1],
                             KVMUX_PROTO_VERSION_MIN, c->sess.max_version);
        else
            kvmux__conn_fail(c, 0, (uint8_t)-n, "bad HELLO: %s (settings block of %u bytes)",
                             kvmux_wire_error_name(-n), f->value_len);
        return;
    }
    if (c->sess.version >= KVMUX_PROTO_V3) {
        /* Settings 9/10 exist from v3 on: unknown (ignored) before. */
        int sr = kvmux_settings_session_id(f->value, f->value_len, &c->session_id);
        if (sr < 0) {
            kvmux__conn_fail(c, 0, KVMUX_ERR_PROTOCOL, "bad HELLO: malformed session id");
            return;
        }
    }
    if (kvmux__conn_send_bytes(c, out, (size_t)n) != 0) return;
    kvmux__conn_info_hello(c, f->key, f->key_len);
    kvmux_rate_init(&c->ping_rate, c->lim.max_ping_rate, c->loop->now);
    kvmux_rate_init(&c->cancel_rate, c->lim.max_cancel_rate, c->loop->now);
    kvmux__conn_start_checks(c); /* replaces the handshake timeout */
    KVMUX_LOG_D("conn %llu (%s): handshake done, client '%.*s', version %u",
                (unsigned long long)c->id, c->peer, (int)f->key_len,
                (const char *)f->key, c->sess.version);
}

/* A flood cap was passed: ERROR FLOOD (v1 has no such code: PROTOCOL). */
static void flood(kvmux_conn *c, const char *what, uint32_t rate) {
    KVMUX_STAT_ADD(c->loop, floods, 1);
    kvmux__conn_fail(c, 0,
                     kvmux_session_is_v2(&c->sess) ? KVMUX_ERR_FLOOD : KVMUX_ERR_PROTOCOL,
                     "more than %u %s frames per second", rate, what);
}

static void on_cancel(kvmux_conn *c, const kvmux_frame *f) {
    if (!kvmux_rate_allow(&c->cancel_rate, c->loop->now)) {
        flood(c, "CANCEL", c->lim.max_cancel_rate);
        return;
    }
    KVMUX_STAT_ADD(c->loop, cancels, 1);
    /* Whoever holds the id answers CANCELED and frees what it held. An
     * id nobody holds was answered already (the CANCEL crossed the
     * response) or never existed: ignored, never a second response. */
    if (kvmux__upload_cancel(c, f->request_id)) return;
    if (kvmux__sched_cancel(c, f->request_id)) return;
    kvmux__wait_cancel(c, f->request_id);
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
        if (!kvmux_rate_allow(&c->ping_rate, c->loop->now)) {
            flood(c, "PING", c->lim.max_ping_rate);
            break;
        }
        kvmux_frame pong = *f;
        pong.type = KVMUX_FRAME_PONG;
        pong.version = c->sess.version;
        pong.code = 0; /* reserved: sent as 0 even if the PING's was not */
        KVMUX_STAT_ADD(c->loop, pings, 1);
        kvmux__conn_send(c, &pong);
        break;
    }
    case KVMUX_FRAME_CONTINUATION:
        kvmux__upload_continue(c, f);
        break;
    case KVMUX_FRAME_WINDOW_UPDATE:
        kvmux__sched_on_window_update(c, f);
        break;
    case KVMUX_FRAME_CANCEL:
        on_cancel(c, f);
        break;
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
