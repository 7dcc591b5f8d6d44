/* A kvmuxd client connection: reading and framing input, queueing and
 * writing output, and the close paths (protocol error, EOF, slow reader,
 * shutdown). Runs entirely on the connection's loop thread.
 *
 * Input. A connection with no partial frame reads into its loop's shared
 * 64 KiB scratch buffer and frames are decoded and dispatched in place, so
 * one read(2) can carry hundreds of requests and an idle connection holds
 * no read buffer at all (the Redis 7 "reusable query buffer" idea). Only a
 * trailing partial frame is copied into the connection's own rbuf, sized
 * from the frame header once the header is there; the decoder has already
 * checked that header against the max frame size, so a peer cannot make
 * us allocate more than one max-size frame. Before the handshake the limit
 * is KVMUX_MIN_FRAME: an unauthenticated peer gets 4 KiB, not 2 MiB.
 *
 * Output. Responses are encoded into the output queue (outbuf.c) and the
 * connection is put on its loop's dirty list; the loop flushes every dirty
 * connection once per iteration, so all the responses produced by one read
 * batch (and by WAITs fired in the same iteration) leave in one sendmsg.
 * EAGAIN turns on EPOLLOUT until the queue drains. Once the queue is
 * empty the flush asks the output scheduler (sched.c) for the next
 * fragment of a large v2 response, so small frames always go first and
 * large values are interleaved with them rather than blocking them.
 *
 * Backpressure. When more than srv->read_pause_bytes are queued we stop
 * decoding (the unprocessed bytes stay in rbuf) and stop reading, so a
 * client that does not read its responses is slowed by TCP instead of
 * growing our memory; reading resumes below half that. A queue over
 * --max-output-buffer (responses to WAITs and one batch can still push it
 * there) disconnects the client as a slow reader.
 *
 * Closing. Connection-level errors queue an ERROR frame and enter CLOSING;
 * once it is written we shut down our write side and LINGER, reading and
 * discarding until the peer's EOF (bounded by --close-linger), because
 * close() with unread input would send an RST that can destroy the ERROR
 * before the client reads it. kvmux__conn_close only marks the connection
 * DEAD; the loop tears it down at the end of the iteration, so no caller
 * (even one inside a store callback holding a shard lock) ever sees a freed
 * connection.
 *
 * Timers. One timer per connection: the handshake timeout, then the idle
 * check (--idle-timeout: nothing in flight and no input for that long ->
 * ERROR TIMEOUT) and the stuck-output check (--write-timeout: queued output
 * that made no progress for that long -> closed), then the close linger.
 * The checks are lazy: activity only records a time, and the timer, when
 * it fires, re-arms itself for the next moment a check could succeed, so
 * a busy connection costs no timer-heap operation per read.
 *
 * Drain. On shutdown a v1 connection stops reading (as in v1). A v2
 * connection is sent GOAWAY with the last request it read, keeps reading
 * (CONTINUATIONs, WINDOW_UPDATEs and CANCELs of accepted requests must
 * still arrive), answers every new request SHUTTING_DOWN, and gets its
 * final ERROR SHUTTING_DOWN once nothing it accepted is in flight. */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "monotime.h"
#include "server_internal.h"

#define CONN_OF_TIMER(t) ((kvmux_conn *)((char *)(t) - offsetof(kvmux_conn, timer)))
#define RBUF_MIN (16u * 1024)
#define LINGER_READS 8 /* reads per event while discarding */
#define FILL_ROUNDS 16 /* fragments queued per connection per flush */

static void conn_on_timer(kvmux_timer *t, uint64_t now);

kvmux_conn *kvmux__conn_new(kvmux_server *srv, int fd, const struct sockaddr *peer) {
    kvmux_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->io.kind = KVMUX_IO_CONN;
    c->io.fd = fd;
    c->state = KVMUX_CONN_OPEN;
    kvmux_session_init(&c->sess, KVMUX_ROLE_SERVER, &srv->settings);
    /* v3 only adds the replication statuses: a single node keeps
     * offering v2 at most (docs/PROTOCOL.md "Protocol v3"). */
    c->sess.max_version = (uint8_t)srv->cfg.max_protocol;
    if (!srv->repl && c->sess.max_version > KVMUX_PROTO_V2) c->sess.max_version = KVMUX_PROTO_V2;
    kvmux__outbuf_init(&c->out);
    kvmux_timer_init(&c->timer, conn_on_timer);
    c->id = atomic_fetch_add_explicit(&srv->next_conn_id, 1, memory_order_relaxed) + 1;
    c->info.created_ms = kvmux_clock_ms();
    atomic_store_explicit(&c->info.last_input_ms, c->info.created_ms, memory_order_relaxed);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (peer && peer->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)peer;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (peer && peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    }
    if (peer && peer->sa_family == AF_INET6)
        snprintf(c->peer, sizeof c->peer, "[%s]:%u", host, port);
    else
        snprintf(c->peer, sizeof c->peer, "%s:%u", host, port);
    return c;
}

static void conn_free_mem(kvmux_conn *c) {
    kvmux__tls_conn_free(c);
    kvmux__outbuf_deinit(&c->out);
    free(c->rbuf);
    free(c);
}

void kvmux__conn_reject(int fd, uint8_t code, const char *msg) {
    uint8_t buf[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG];
    size_t n = kvmux_encode_error(buf, KVMUX_HANDSHAKE_VERSION, 0, code, msg);
    ssize_t w = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w; /* best effort: a fresh socket's buffer always has room */
    shutdown(fd, SHUT_WR);
    /* Swallow whatever the client already sent (its HELLO), so close()
     * does not answer it with an RST that could destroy our ERROR. */
    uint8_t junk[4096];
    for (int i = 0; i < 4; i++)
        if (recv(fd, junk, sizeof junk, MSG_DONTWAIT) <= 0) break;
    close(fd);
}

void kvmux__conn_attach(kvmux_loop *l, kvmux_conn *c) {
    kvmux_server *srv = l->srv;
    if (l->phase != KVMUX_LOOP_RUNNING) {
        kvmux__conn_reject(c->io.fd, KVMUX_ERR_SHUTTING_DOWN, "server shutting down");
        atomic_fetch_sub(&srv->nconns, 1);
        conn_free_mem(c);
        return;
    }
    c->loop = l;
    c->lim = l->rt.lim; /* fixed for this connection's life (reload.c) */
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &c->io};
    if ((!c->mem_sink && epoll_ctl(l->epfd, EPOLL_CTL_ADD, c->io.fd, &ev) != 0) ||
        kvmux__timer_arm(&l->timers, &c->timer,
                         l->now + c->lim.handshake_timeout_ms) != 0) {
        KVMUX_LOG_W("conn %llu (%s): cannot register: %s", (unsigned long long)c->id,
                    c->peer, strerror(errno));
        kvmux__conn_reject(c->io.fd, KVMUX_ERR_INTERNAL, "server out of resources");
        kvmux__timer_cancel(&l->timers, &c->timer);
        atomic_fetch_sub(&srv->nconns, 1);
        conn_free_mem(c);
        return;
    }
    c->events = EPOLLIN;
    atomic_store_explicit(&c->info.tls, c->ssl != NULL, memory_order_relaxed);
    pthread_mutex_lock(&l->conns_mu);
    c->next = l->conns;
    if (l->conns) l->conns->prev = c;
    l->conns = c;
    pthread_mutex_unlock(&l->conns_mu);
    l->nconns++;
    KVMUX_LOG_D("conn %llu (%s): accepted on loop %u", (unsigned long long)c->id,
                c->peer, l->id);
}

uint32_t kvmux__conn_max_frame(const kvmux_conn *c) {
    uint32_t max = c->loop->srv->cfg.max_frame;
    if (c->sess.state != KVMUX_SESSION_OPEN && max > KVMUX_MIN_FRAME) max = KVMUX_MIN_FRAME;
    return max;
}

void kvmux__conn_close(kvmux_conn *c, const char *why) {
    if (c->state == KVMUX_CONN_DEAD) return;
    KVMUX_LOG_D("conn %llu (%s): closing: %s", (unsigned long long)c->id, c->peer, why);
    c->state = KVMUX_CONN_DEAD;
    c->link = c->loop->dead;
    c->loop->dead = c;
}

void kvmux__conn_destroy(kvmux_conn *c) {
    kvmux_loop *l = c->loop;
    kvmux__durable_forget(c);
    kvmux__repl_forget(c);
    kvmux__waits_release(c);
    kvmux__uploads_release(c);
    kvmux__sched_release(c, 0);
    kvmux__timer_cancel(&l->timers, &c->timer);
    if (!c->mem_sink) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->io.fd, NULL);
        kvmux__tls_close_notify(c);
        kvmux__tls_conn_free(c);
        close(c->io.fd);
    }
    pthread_mutex_lock(&l->conns_mu);
    if (c->prev) c->prev->next = c->next;
    else l->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&l->conns_mu);
    l->nconns--;
    atomic_fetch_sub(&l->srv->nconns, 1);
    conn_free_mem(c);
}

void kvmux__conn_update_events(kvmux_conn *c) {
    if (c->state == KVMUX_CONN_DEAD) return;
    uint32_t ev = 0;
    if ((c->state == KVMUX_CONN_OPEN && !c->read_paused) || c->state == KVMUX_CONN_LINGER)
        ev |= EPOLLIN;
    if (c->want_write) ev |= EPOLLOUT;
    if (c->ssl) { /* TLS: the handshake and the cross-wants decide too */
        if (c->tls_hs) ev = c->tls_want_write ? EPOLLOUT : EPOLLIN;
        /* SSL_write waiting for input: a writable socket would only
         * spin us; the next EPOLLIN retries the write. */
        if (c->tls_write_wants_read) ev = (ev & ~(uint32_t)EPOLLOUT) | EPOLLIN;
        if (c->tls_read_wants_write) ev |= EPOLLOUT;
    }
    if (ev == c->events) return;
    if (c->mem_sink) { /* in-memory: nothing to register */
        c->events = ev;
        return;
    }
    struct epoll_event e = {.events = ev, .data.ptr = &c->io};
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->io.fd, &e) != 0) {
        kvmux__conn_close(c, "epoll_ctl failed");
        return;
    }
    c->events = ev;
}

/* Queue the connection's last frames and start the bounded close. */
static void start_closing(kvmux_conn *c) {
    kvmux_loop *l = c->loop;
    c->state = KVMUX_CONN_CLOSING;
    /* Nothing more will be read or answered: uploads and streams can
     * never finish, so let go of their memory now. */
    kvmux__uploads_release(c);
    kvmux__sched_release(c, 0);
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    if (kvmux__timer_arm(&l->timers, &c->timer, l->now + c->lim.close_linger_ms) != 0) {
        kvmux__conn_close(c, "out of memory");
        return;
    }
    kvmux__loop_mark_dirty(c);
    kvmux__conn_update_events(c);
}

/* The slow-reader cap, checked after every append. Returns 0, or -1 with
 * c closed. */
static int check_output_cap(kvmux_conn *c) {
    kvmux_server *srv = c->loop->srv;
    if (c->out.bytes <= srv->cfg.max_output_buffer) return 0;
    KVMUX_STAT_ADD(c->loop, slow_readers, 1);
    KVMUX_LOG_I("conn %llu (%s): %zu bytes of output queued, over "
                "--max-output-buffer %llu: disconnecting slow reader",
                (unsigned long long)c->id, c->peer, c->out.bytes,
                (unsigned long long)srv->cfg.max_output_buffer);
    kvmux__conn_close(c, "slow reader");
    return -1;
}

static int can_send(const kvmux_conn *c) {
    /* an ERROR, if any, must stay the last frame */
    return c->state == KVMUX_CONN_OPEN || c->state == KVMUX_CONN_DRAINING;
}

int kvmux__conn_send_bytes(kvmux_conn *c, const uint8_t *p, size_t n) {
    if (!can_send(c)) return -1;
    if (n) {
        uint8_t *dst = kvmux__outbuf_append(&c->out, n);
        if (!dst) {
            KVMUX_LOG_W("conn %llu (%s): out of memory queueing %zu bytes; closing",
                        (unsigned long long)c->id, c->peer, n);
            kvmux__conn_close(c, "out of memory");
            return -1;
        }
        memcpy(dst, p, n);
        if (n >= KVMUX_FRAME_HDR_LEN) kvmux__stats_count_sent(c->loop, p);
    }
    kvmux__loop_mark_dirty(c);
    return check_output_cap(c);
}

int kvmux__conn_send(kvmux_conn *c, const kvmux_frame *f) {
    if (!can_send(c)) return -1;
    size_t n = kvmux_frame_size(f);
    uint8_t *p = kvmux__outbuf_append(&c->out, n);
    if (!p) {
        KVMUX_LOG_W("conn %llu (%s): out of memory queueing %zu bytes; closing",
                    (unsigned long long)c->id, c->peer, n);
        kvmux__conn_close(c, "out of memory");
        return -1;
    }
    kvmux_frame_encode(p, f);
    kvmux__stats_count_sent(c->loop, p);
    kvmux__loop_mark_dirty(c);
    return check_output_cap(c);
}

void kvmux__conn_send_grant(kvmux_conn *c, uint32_t request_id, const kvmux_grant *g) {
    uint8_t b[KVMUX_WINDOW_UPDATE_LEN];
    if (g->message) {
        size_t n = kvmux_encode_window_update(b, c->sess.version, request_id, g->message);
        if (kvmux__conn_send_bytes(c, b, n) != 0) return;
    }
    if (g->connection) {
        size_t n = kvmux_encode_window_update(b, c->sess.version, 0, g->connection);
        kvmux__conn_send_bytes(c, b, n);
    }
}

int kvmux__conn_busy(const kvmux_conn *c) {
    /* A partial frame is not "in flight": a peer that sends half a frame
     * and goes quiet is idle. */
    return c->sess.outstanding > 0 || c->nuploads > 0 || c->nostreams > 0 ||
           c->out.bytes > 0;
}

/* Queue one RESPONSE (the two answer shapes below share it). */
static int respond(kvmux_conn *c, uint32_t request_id, uint8_t status, const uint8_t *extras,
                   uint8_t extras_len, const uint8_t *value, size_t value_len) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = c->sess.version;
    f.type = KVMUX_FRAME_RESPONSE;
    f.request_id = request_id;
    f.code = status;
    f.extras = extras;
    f.extras_len = extras_len;
    f.value = value;
    f.value_len = (uint32_t)value_len;
    return kvmux__conn_send(c, &f);
}

int kvmux__conn_respond(kvmux_conn *c, uint32_t request_id, uint8_t status,
                        const uint8_t *extras, uint8_t extras_len, const char *msg) {
    size_t len = msg ? strlen(msg) : 0;
    if (len > KVMUX_MAX_STATUS_MSG) len = KVMUX_MAX_STATUS_MSG;
    return respond(c, request_id, status, extras, extras_len, (const uint8_t *)msg, len);
}

int kvmux__conn_respond_bytes(kvmux_conn *c, uint32_t request_id, uint8_t status,
                              const uint8_t *value, size_t value_len) {
    return respond(c, request_id, status, NULL, 0, value, value_len);
}

int kvmux__conn_respond_u64(kvmux_conn *c, uint32_t request_id, uint64_t extra,
                            const uint8_t *value, size_t value_len) {
    uint8_t ext[8];
    kvmux_store_u64be(ext, extra);
    return respond(c, request_id, KVMUX_STATUS_OK, ext, 8, value, value_len);
}

void kvmux__conn_fail(kvmux_conn *c, uint32_t request_id, uint8_t code,
                      const char *fmt, ...) {
    if (c->state == KVMUX_CONN_DEAD || c->state == KVMUX_CONN_CLOSING ||
        c->state == KVMUX_CONN_LINGER)
        return;
    char msg[KVMUX_MAX_ERROR_MSG + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code != KVMUX_ERR_SHUTTING_DOWN && code != KVMUX_ERR_TIMEOUT &&
        code != KVMUX_ERR_AUTH) /* auth failures have their own counter */
        KVMUX_STAT_ADD(c->loop, protocol_errors, 1);
    KVMUX_LOG_D("conn %llu (%s): ERROR %s: %s", (unsigned long long)c->id, c->peer,
                kvmux_wire_error_name(code), msg);
    uint8_t buf[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG];
    uint8_t version = c->sess.state == KVMUX_SESSION_OPEN ? c->sess.version
                                                          : KVMUX_HANDSHAKE_VERSION;
    size_t n = kvmux_encode_error(buf, version, request_id, code, msg);
    uint8_t *p = kvmux__outbuf_append(&c->out, n);
    if (!p) {
        kvmux__conn_close(c, "out of memory");
        return;
    }
    memcpy(p, buf, n);
    kvmux__stats_count_sent(c->loop, buf);
    start_closing(c);
}

/* Report a decoder error with a message built from the offending header
 * bytes p[0..n). */
static void decode_failed(kvmux_conn *c, const uint8_t *p, size_t n, int err) {
    uint32_t id = kvmux_frame_error_request_id(p, n);
    switch (err) {
    case KVMUX_ERR_BAD_MAGIC:
        kvmux__conn_fail(c, 0, (uint8_t)err, "bad magic byte 0x%02x (expected 0x%02x)",
                         p[0], KVMUX_MAGIC);
        return;
    case KVMUX_ERR_BAD_VERSION:
        kvmux__conn_fail(c, 0, (uint8_t)err,
                         "frame version %u not supported (server speaks %u..%u)", p[1],
                         KVMUX_PROTO_VERSION_MIN, KVMUX_PROTO_CODEC_MAX);
        return;
    case KVMUX_ERR_BAD_TYPE:
        if (p[2] >= KVMUX_FRAME_CANCEL && p[2] <= KVMUX_FRAME_TYPE_MAX)
            kvmux__conn_fail(c, id, (uint8_t)err,
                             "frame type %u (%s) is not allowed in version %u (needs %u)",
                             p[2], kvmux_frame_type_name(p[2]), p[1], KVMUX_PROTO_V2);
        else
            kvmux__conn_fail(c, id, (uint8_t)err, "unknown frame type %u", p[2]);
        return;
    case KVMUX_ERR_BAD_FLAGS:
        kvmux__conn_fail(c, id, (uint8_t)err,
                         "flags 0x%02x on a %s frame in version %u (allowed: 0x%02x)", p[3],
                         kvmux_frame_type_name(p[2]), p[1],
                         kvmux_version_allowed_flags(p[1], p[2]));
        return;
    default:
        break;
    }
    if (n < KVMUX_FRAME_HDR_LEN) {
        kvmux__conn_fail(c, id, (uint8_t)err, "%s", kvmux_wire_error_name(err));
        return;
    }
    unsigned extras = p[9], key = kvmux_load_u16be(p + 10);
    uint32_t body = kvmux_load_u32be(p + 12);
    if (err == KVMUX_ERR_FRAME_TOO_LARGE) {
        kvmux__conn_fail(c, id, (uint8_t)err, "frame of %llu bytes exceeds max frame size %u",
                         (unsigned long long)KVMUX_FRAME_HDR_LEN + body,
                         kvmux__conn_max_frame(c));
    } else if (err == KVMUX_ERR_BAD_LENGTH && extras > KVMUX_MAX_EXTRAS) {
        kvmux__conn_fail(c, id, (uint8_t)err, "extras_len %u exceeds %u", extras,
                         KVMUX_MAX_EXTRAS);
    } else if (err == KVMUX_ERR_BAD_LENGTH && (uint64_t)extras + key > body) {
        kvmux__conn_fail(c, id, (uint8_t)err, "extras_len %u + key_len %u exceed body_len %u",
                         extras, key, body);
    } else if (err == KVMUX_ERR_BAD_LENGTH) {
        kvmux__conn_fail(c, id, (uint8_t)err,
                         "%s frame with extras %u, key %u, value %llu bytes is malformed",
                         kvmux_frame_type_name(p[2]), extras, key,
                         (unsigned long long)(body - extras - key));
    } else {
        kvmux__conn_fail(c, id, (uint8_t)err, "%s", kvmux_wire_error_name(err));
    }
}

/* Decode and dispatch frames from data[0..len) while the connection is
 * open and not paused. Returns the bytes consumed (whole frames). */
static size_t conn_process(kvmux_conn *c, const uint8_t *data, size_t len) {
    size_t off = 0, pause = c->loop->srv->read_pause_bytes;
    while (off < len && c->state == KVMUX_CONN_OPEN) {
        if (c->out.bytes >= pause) {
            c->read_paused = 1;
            break;
        }
        kvmux_frame f;
        int r = kvmux_frame_decode(data + off, len - off, kvmux__conn_max_frame(c), &f);
        if (r == 0) break;
        if (r < 0) {
            decode_failed(c, data + off, len - off, -r);
            break;
        }
        off += (size_t)r;
        kvmux__dispatch_frame(c, &f);
    }
    return off;
}

/* Bytes needed to hold the first frame of p[0..n): the whole frame once
 * its header is there, else the header. Clamped to the max frame size: a
 * header the decoder has not judged yet (input held back by a read pause)
 * must not size an allocation; if it lies, the decoder rejects it later. */
static size_t first_frame_need(const kvmux_conn *c, const uint8_t *p, size_t n) {
    if (n < KVMUX_FRAME_HDR_LEN) return KVMUX_FRAME_HDR_LEN;
    uint64_t need = KVMUX_FRAME_HDR_LEN + (uint64_t)kvmux_load_u32be(p + 12);
    uint32_t max = kvmux__conn_max_frame(c);
    return need > max ? max : (size_t)need;
}

/* Keep data[0..n) (unprocessed input) in the connection's own buffer. */
static int save_leftover(kvmux_conn *c, const uint8_t *data, size_t n) {
    size_t cap = first_frame_need(c, data, n);
    if (cap < n) cap = n;
    if (cap < RBUF_MIN) cap = RBUF_MIN;
    c->rbuf = malloc(cap);
    if (!c->rbuf) return -1;
    memcpy(c->rbuf, data, n);
    c->rlen = n;
    c->rcap = cap;
    return 0;
}

/* Process what rbuf holds, keep the rest, release memory when done. */
static void process_rbuf(kvmux_conn *c) {
    size_t used = conn_process(c, c->rbuf, c->rlen);
    if (c->state != KVMUX_CONN_OPEN) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->rlen = c->rcap = 0;
        return;
    }
    c->rlen -= used;
    if (c->rlen == 0) {
        free(c->rbuf); /* idle connections hold no read buffer */
        c->rbuf = NULL;
        c->rcap = 0;
        return;
    }
    if (used) memmove(c->rbuf, c->rbuf + used, c->rlen);
    /* After a big frame, do not keep a max-frame buffer for a small tail. */
    size_t need = first_frame_need(c, c->rbuf, c->rlen);
    size_t want = need > c->rlen ? need : c->rlen;
    if (want < RBUF_MIN) want = RBUF_MIN;
    if (c->rcap > 4 * want) {
        uint8_t *p = realloc(c->rbuf, want);
        if (p) {
            c->rbuf = p;
            c->rcap = want;
        }
    }
}

static void on_eof(kvmux_conn *c) {
    if (c->out.bytes == 0 || c->state != KVMUX_CONN_OPEN) {
        kvmux__conn_close(c, "peer closed");
        return;
    }
    /* Half-closed peer: still try to deliver what is queued, boundedly. */
    start_closing(c);
}

static void conn_input(kvmux_conn *c, size_t n);

/* Where the next read goes: the loop's scratch buffer when nothing is
 * held back, else the end of rbuf grown to hold the first frame. NULL
 * (c closed) when out of memory. */
static uint8_t *conn_read_room(kvmux_conn *c, size_t *room) {
    kvmux_loop *l = c->loop;
    if (c->rlen == 0) {
        *room = KVMUX_SCRATCH_LEN;
        return l->scratch;
    }
    size_t need = first_frame_need(c, c->rbuf, c->rlen);
    if (need <= c->rlen) need = c->rlen + RBUF_MIN; /* defensive: never 0 room */
    if (need > c->rcap) {
        uint8_t *p = realloc(c->rbuf, need);
        if (!p) {
            kvmux__conn_close(c, "out of memory for input");
            return NULL;
        }
        c->rbuf = p;
        c->rcap = need;
    }
    *room = c->rcap - c->rlen;
    return c->rbuf + c->rlen;
}

void kvmux__conn_feed(kvmux_conn *c, const uint8_t *p, size_t n) {
    if (n == 0) {
        if (c->state == KVMUX_CONN_LINGER) kvmux__conn_close(c, "closed after ERROR");
        else if (c->state != KVMUX_CONN_DEAD) on_eof(c);
        return;
    }
    while (n > 0 && c->state == KVMUX_CONN_OPEN) {
        if (c->read_paused) {
            kvmux__conn_flush(c); /* drains to the sink: resumes reading */
            if (c->read_paused || c->state != KVMUX_CONN_OPEN) return;
            continue;
        }
        size_t room;
        uint8_t *dst = conn_read_room(c, &room);
        if (!dst) return;
        size_t k = n < room ? n : room;
        memcpy(dst, p, k);
        p += k;
        n -= k;
        conn_input(c, k);
    }
}

static void conn_read(kvmux_conn *c) {
    kvmux_loop *l = c->loop;
    if (c->state == KVMUX_CONN_LINGER) {
        for (int i = 0; i < LINGER_READS; i++) {
            ssize_t n = recv(c->io.fd, l->scratch, KVMUX_SCRATCH_LEN, 0);
            if (n > 0) continue;
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
            kvmux__conn_close(c, "closed after ERROR");
            return;
        }
        return;
    }
again:
    if (c->state != KVMUX_CONN_OPEN || c->read_paused) return;

    size_t room;
    uint8_t *dst = conn_read_room(c, &room);
    if (!dst) return;
    ssize_t n = c->ssl ? kvmux__srv_tls_recv(c, dst, room) : recv(c->io.fd, dst, room, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        kvmux__conn_close(c, strerror(errno));
        return;
    }
    if (n == 0) {
        on_eof(c);
        return;
    }
    conn_input(c, (size_t)n);
    /* TLS: the rest of a record already read from the socket is in
     * OpenSSL, and no epoll event will announce it. It is at most one
     * record, so this ends. */
    if (c->ssl && kvmux__tls_pending(c)) goto again;
}

/* n bytes just landed at the read position conn_read_room chose. */
static void conn_input(kvmux_conn *c, size_t n) {
    kvmux_loop *l = c->loop;
    KVMUX_STAT_ADD(l, bytes_in, n);
    atomic_fetch_add_explicit(&c->info.bytes_in, n, memory_order_relaxed);
    atomic_store_explicit(&c->info.last_input_ms, l->now, memory_order_relaxed);
    c->last_input = l->now;
    if (c->rlen == 0) {
        size_t used = conn_process(c, l->scratch, (size_t)n);
        if (used < (size_t)n && c->state == KVMUX_CONN_OPEN &&
            save_leftover(c, l->scratch + used, (size_t)n - used) != 0)
            kvmux__conn_close(c, "out of memory for input");
    } else {
        c->rlen += (size_t)n;
        process_rbuf(c);
    }
    kvmux__conn_info_update(c);
    kvmux__conn_update_events(c);
}

/* Make sure c's timer fires by when (it may fire earlier: the checks
 * re-arm it). */
static void timer_by(kvmux_conn *c, uint64_t when) {
    kvmux_loop *l = c->loop;
    if (kvmux_timer_armed(&c->timer) && c->timer.deadline <= when) return;
    if (kvmux__timer_arm(&l->timers, &c->timer, when) != 0)
        kvmux__conn_close(c, "out of memory for a timer");
}

/* The one place that decides, after a write attempt, whether output is
 * pending and what that arms: every exit of write_out comes through here,
 * so no path can leave bytes queued without the --write-timeout clock
 * running. moved: bytes written by this attempt; yield: the queue is empty
 * but streams could send more (FILL_ROUNDS reached), so come back when
 * writable.
 *
 * Bytes still queued mean the socket is full. The stall started at the
 * last write that made progress, or now if this attempt moved nothing and
 * the previous one had emptied the queue (out_stalled clear): that is
 * last_output, and the connection is closed at last_output + timeout
 * (conn_check). The edge is out_stalled and not want_write, because
 * want_write is also set by the yield above, when nothing is stuck. */
static void note_output(kvmux_conn *c, uint64_t moved, int yield) {
    kvmux_loop *l = c->loop;
    if (moved) c->last_output = l->now;
    if (c->out.bytes == 0) {
        c->out_stalled = 0;
        c->want_write = yield;
        return;
    }
    if (!moved && !c->out_stalled) c->last_output = l->now;
    c->out_stalled = 1;
    c->want_write = 1;
    uint32_t wt = c->lim.write_timeout_ms;
    /* CLOSING and LINGER are bounded by --close-linger on the same timer. */
    if (wt && (c->state == KVMUX_CONN_OPEN || c->state == KVMUX_CONN_DRAINING))
        timer_by(c, c->last_output + wt);
}

/* Write the queue; when it empties, let the scheduler add the next
 * fragment of a large response, up to FILL_ROUNDS per call so one
 * connection with huge values cannot monopolise the loop (EPOLLOUT stays
 * on and the next iteration continues). */
static int write_out(kvmux_conn *c) {
    kvmux_loop *l = c->loop;
    uint64_t moved = 0;
    int yield = 0;
    for (int round = 0;; round++) {
        if (c->out.bytes > 0) {
            uint64_t written = 0;
            int r = 0;
            if (c->mem_sink) kvmux__outbuf_drain(&c->out, c->mem_sink, c->mem_ud, &written);
            else if (c->ssl) r = kvmux__outbuf_flush_fn(&c->out, kvmux__tls_write, c, &written);
            else r = kvmux__outbuf_flush(&c->out, c->io.fd, &written);
            KVMUX_STAT_ADD(l, bytes_out, written);
            atomic_fetch_add_explicit(&c->info.bytes_out, written, memory_order_relaxed);
            moved += written;
            if (r < 0) {
                kvmux__conn_close(c, strerror(errno));
                return -1;
            }
            if (r == 1) break; /* socket full: bytes stay queued */
        }
        if (round >= FILL_ROUNDS) {
            yield = c->ostreams != NULL;
            break;
        }
        if (!kvmux__sched_fill(c)) break;
        if (c->state == KVMUX_CONN_DEAD) return -1;
    }
    note_output(c, moved, yield);
    return 0;
}

void kvmux__conn_flush(kvmux_conn *c) {
    if (c->state == KVMUX_CONN_DEAD) return;
    kvmux_server *srv = c->loop->srv;
    if (write_out(c) != 0) return;
    kvmux__conn_info_update(c); /* answers given back credits */
    if (c->read_paused && c->state == KVMUX_CONN_OPEN &&
        c->out.bytes <= srv->read_pause_bytes / 2) {
        c->read_paused = 0;
        /* Input held back while paused gets no new EPOLLIN: run it now.
         * New output puts us back on the dirty list for this iteration. */
        if (c->rlen) process_rbuf(c);
        if (c->state == KVMUX_CONN_DEAD) return;
        /* TLS input OpenSSL holds gets no EPOLLIN either. */
        if (kvmux__tls_pending(c)) conn_read(c);
        if (c->state == KVMUX_CONN_DEAD) return;
    }
    if (c->state == KVMUX_CONN_CLOSING && c->out.bytes == 0) {
        if (c->lim.close_linger_ms == 0 || c->mem_sink) {
            kvmux__conn_close(c, "closed after ERROR");
            return;
        }
        kvmux__tls_close_notify(c); /* TLS: our close_notify before the FIN */
        shutdown(c->io.fd, SHUT_WR);
        c->state = KVMUX_CONN_LINGER;
    }
    kvmux__conn_update_events(c);
}

/* After a failed TLS handshake whose last words (an alert, or the ERROR
 * below) are on the wire: shut our side and LINGER, discarding input until
 * the peer's EOF (bounded by --close-linger), so that data the peer sent
 * meanwhile (TLS 1.3: its HELLO, right after its Finished, before we
 * rejected its certificate) does not make close() send an RST that
 * destroys those last words. */
static void tls_linger(kvmux_conn *c, const char *why) {
    kvmux_loop *l = c->loop;
    c->tls_hs = 0;
    c->tls_failed = 1; /* nothing more goes through OpenSSL */
    if (c->lim.close_linger_ms == 0 ||
        kvmux__timer_arm(&l->timers, &c->timer, l->now + c->lim.close_linger_ms) != 0) {
        kvmux__conn_close(c, why);
        return;
    }
    shutdown(c->io.fd, SHUT_WR);
    c->state = KVMUX_CONN_LINGER;
    c->want_write = 0;
    kvmux__conn_update_events(c);
}

/* A plaintext kvmux client on a TLS port: answer in its own protocol
 * (one ERROR frame, like a refused connection) and close. */
static void refuse_plaintext(kvmux_conn *c) {
    uint8_t buf[KVMUX_FRAME_HDR_LEN + KVMUX_MAX_ERROR_MSG];
    size_t n = kvmux_encode_error(buf, KVMUX_HANDSHAKE_VERSION, 0, KVMUX_ERR_PROTOCOL,
                                  "this server requires TLS (connect with TLS enabled)");
    ssize_t w = send(c->io.fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w; /* best effort: a fresh socket's buffer has room */
    tls_linger(c, "plaintext client on a TLS port");
}

/* Drive the TLS handshake. Returns 1 when done (the connection reads
 * from now on), 0 when waiting, -1 when c has been closed. */
static int conn_tls_handshake(kvmux_conn *c) {
    int r = kvmux__srv_tls_handshake(c);
    if (r == 1) {
        kvmux__conn_update_events(c);
        return c->state == KVMUX_CONN_DEAD ? -1 : 1;
    }
    if (r == 0) {
        kvmux__conn_update_events(c);
        return 0;
    }
    if (r == -2) refuse_plaintext(c);
    else tls_linger(c, "TLS handshake failed");
    return -1;
}

void kvmux__conn_on_event(kvmux_conn *c, uint32_t events) {
    if (c->state == KVMUX_CONN_DEAD) return;
    if (events & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        kvmux__conn_close(c, err ? strerror(err) : "socket error");
        return;
    }
    if ((events & EPOLLHUP) && !(events & EPOLLIN)) {
        kvmux__conn_close(c, "hang-up");
        return;
    }
    if (c->ssl && c->tls_hs) {
        if (conn_tls_handshake(c) <= 0) return;
        events |= EPOLLIN; /* the handshake may have read early data */
    }
    if (c->ssl && (events & EPOLLOUT) && c->tls_read_wants_write) conn_read(c);
    if (events & EPOLLIN) conn_read(c);
    if (c->ssl && (events & EPOLLIN) && c->tls_write_wants_read && c->state != KVMUX_CONN_DEAD)
        kvmux__conn_flush(c);
    if ((events & EPOLLOUT) && c->state != KVMUX_CONN_DEAD) kvmux__conn_flush(c);
}

/* Idle and stuck-output checks of an open connection; re-arms the timer
 * for the next moment one of them could trigger. */
static void conn_check(kvmux_conn *c, uint64_t now) {
    const kvmux_conn_limits *cfg = &c->lim;
    uint64_t next = UINT64_MAX;
    if (cfg->write_timeout_ms && c->out_stalled && c->out.bytes > 0) {
        uint64_t due = c->last_output + cfg->write_timeout_ms;
        if (now >= due) {
            /* The ERROR could not be delivered either: just close. */
            KVMUX_STAT_ADD(c->loop, write_timeouts, 1);
            KVMUX_LOG_I("conn %llu (%s): %zu bytes of output made no progress for %u ms "
                        "(--write-timeout): disconnecting",
                        (unsigned long long)c->id, c->peer, c->out.bytes,
                        cfg->write_timeout_ms);
            kvmux__conn_close(c, "write timeout");
            return;
        }
        next = due;
    }
    if (cfg->idle_timeout_ms && c->state == KVMUX_CONN_OPEN &&
        c->sess.state == KVMUX_SESSION_OPEN) {
        uint64_t due = c->last_input + cfg->idle_timeout_ms;
        if (kvmux__conn_busy(c)) {
            /* In flight counts as activity: look again a full period
             * after it might end. */
            due = now + cfg->idle_timeout_ms;
        } else if (now >= due) {
            KVMUX_STAT_ADD(c->loop, idle_timeouts, 1);
            kvmux__conn_fail(c, 0, KVMUX_ERR_TIMEOUT,
                             "idle for %u ms (--idle-timeout): closing",
                             cfg->idle_timeout_ms);
            return;
        }
        if (due < next) next = due;
    }
    if (next != UINT64_MAX && kvmux__timer_arm(&c->loop->timers, &c->timer, next) != 0)
        kvmux__conn_close(c, "out of memory for a timer");
}

void kvmux__conn_start_checks(kvmux_conn *c) {
    c->last_input = c->loop->now;
    c->last_output = c->loop->now;
    kvmux__timer_cancel(&c->loop->timers, &c->timer);
    conn_check(c, c->loop->now);
}

static void conn_on_timer(kvmux_timer *t, uint64_t now) {
    kvmux_conn *c = CONN_OF_TIMER(t);
    switch (c->state) {
    case KVMUX_CONN_OPEN:
    case KVMUX_CONN_DRAINING:
        if (c->ssl && c->tls_hs) {
            /* No TLS yet to carry an ERROR frame: just close. */
            KVMUX_STAT_ADD(c->loop, handshake_timeouts, 1);
            KVMUX_LOG_I("conn %llu (%s): TLS handshake not completed within %u ms "
                        "(--handshake-timeout): closing", (unsigned long long)c->id, c->peer,
                        c->lim.handshake_timeout_ms);
            c->tls_failed = 1; /* no close_notify mid-handshake */
            kvmux__conn_close(c, "TLS handshake timeout");
        } else if (c->sess.state == KVMUX_SESSION_AWAIT_HELLO) {
            KVMUX_STAT_ADD(c->loop, handshake_timeouts, 1);
            kvmux__conn_fail(c, 0, KVMUX_ERR_TIMEOUT, "handshake not completed within %u ms",
                             c->lim.handshake_timeout_ms);
        } else {
            conn_check(c, now);
        }
        break;
    case KVMUX_CONN_CLOSING:
    case KVMUX_CONN_LINGER:
        kvmux__conn_close(c, "close linger expired");
        break;
    default:
        break;
    }
}

/* v2 drain: GOAWAY now, keep reading, finish what was accepted. */
static void begin_goaway(kvmux_conn *c) {
    uint8_t b[KVMUX_GOAWAY_MAX_LEN];
    size_t n = kvmux_session_encode_goaway(&c->sess, b, c->last_request_id, 0,
                                           "server shutting down");
    if (n == 0 || kvmux__conn_send_bytes(c, b, n) != 0) return;
    KVMUX_STAT_ADD(c->loop, goaways, 1);
    KVMUX_LOG_D("conn %llu (%s): GOAWAY, last request %u", (unsigned long long)c->id,
                c->peer, c->last_request_id);
    kvmux__conn_maybe_finish_drain(c);
}

void kvmux__conn_begin_drain(kvmux_conn *c) {
    if (c->state != KVMUX_CONN_OPEN) return;
    if (c->ssl && c->tls_hs) { /* nothing accepted yet, no TLS to say why */
        c->tls_failed = 1;
        kvmux__conn_close(c, "server shutting down (TLS handshake)");
        return;
    }
    if (c->sess.state == KVMUX_SESSION_OPEN && kvmux_session_is_v2(&c->sess)) {
        begin_goaway(c);
        return;
    }
    /* v1: requests already read but not yet processed are refused with
     * SHUTTING_DOWN ("not processed, safe to retry") rather than dropped,
     * so the client knows exactly what it may resend elsewhere. */
    if (c->rlen && c->sess.state == KVMUX_SESSION_OPEN) {
        size_t off = 0;
        kvmux_frame f;
        int r;
        while (off < c->rlen &&
               (r = kvmux_frame_decode(c->rbuf + off, c->rlen - off,
                                       kvmux__conn_max_frame(c), &f)) > 0) {
            off += (size_t)r;
            if (f.type == KVMUX_FRAME_REQUEST && f.request_id != 0 &&
                f.version == c->sess.version)
                kvmux__conn_respond(c, f.request_id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0,
                                    "server shutting down");
        }
    }
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    if (c->state == KVMUX_CONN_DEAD) return;
    c->state = KVMUX_CONN_DRAINING;
    c->read_paused = 0;
    kvmux__conn_update_events(c);
    kvmux__conn_maybe_finish_drain(c);
}

void kvmux__conn_maybe_finish_drain(kvmux_conn *c) {
    int done;
    if (c->state == KVMUX_CONN_DRAINING)
        done = c->nwaits == 0 && c->nostreams == 0 && c->nheld == 0 && /* nheld: durable.c */
               c->nrepl == 0;                                         /* replicate.c */
    else if (c->state == KVMUX_CONN_OPEN && c->sess.drain == KVMUX_DRAIN_GOAWAY_SENT)
        done = c->sess.outstanding == 0 && c->nostreams == 0;
    else
        return;
    /* ERROR SHUTTING_DOWN is the last frame: the client learns why the
     * connection ends, after every answer it is owed. */
    if (done) kvmux__conn_fail(c, 0, KVMUX_ERR_SHUTTING_DOWN, "server shutting down");
}

void kvmux__conn_drain_deadline(kvmux_conn *c) {
    if (c->state == KVMUX_CONN_DRAINING) {
        kvmux__waits_shutdown(c);
    } else if (c->state == KVMUX_CONN_OPEN && c->sess.drain == KVMUX_DRAIN_GOAWAY_SENT) {
        kvmux__uploads_shutdown(c);
        kvmux__waits_shutdown(c);
        /* A response still streaming cannot be finished in time: its
         * final RESPONSE is SHUTTING_DOWN, so even a cut stream gets
         * exactly one final RESPONSE before the closing ERROR. */
        kvmux__sched_shutdown(c);
        kvmux__conn_maybe_finish_drain(c);
    }
}
