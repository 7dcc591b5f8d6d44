/* kvmux client event-loop driver: kvmux_async_connect, kvmux_async_attach
 * and the kvmux_async_handle_read/_write/_timeout entry points, for
 * applications whose own event loop (libuv, libevent, epoll, ...) drives
 * the socket, as with hiredis' async context.
 *
 * Design. This file replaces only the driver: the reader thread, the
 * writer thread and the completion thread of threaded mode. Everything
 * else -- the pending table, request encoding and admission (call.c,
 * async.c), reply decoding and completion (kvmux__reader_process), the
 * backlog, the deadlines, the callback runner -- is the same code. The
 * client is single-threaded in this mode: every entry point runs on the
 * loop thread. The client mutex is still taken by the shared code; it is
 * never contended here, which costs two uncontended atomic operations per
 * lock round and keeps one implementation.
 *
 * The socket is non-blocking throughout. kvmux_async_connect starts the
 * TCP connect and encodes HELLO into the outbound buffer; once the loop
 * reports writability, the connect result is checked (SO_ERROR) and HELLO
 * goes out with the first flush; HELLO_ACK is decoded in handle_read with
 * the same code as the blocking connect (kvmux__handshake_reply), which
 * sizes the pending table; the backlog of requests submitted meanwhile is
 * then admitted. Until then the pending table has no slots, so every
 * submit waits in the backlog, and the limits used for the early checks
 * are the protocol's (they are checked again on admission).
 *
 * Writes are coalesced the way the loop naturally batches: a submit only
 * appends to the outbound buffer and asks for writability (once, when not
 * already watching), so all requests submitted by one round of callbacks
 * go out in one sendmsg() from handle_write. What handle_write sends are
 * the writer thread's send rounds (bigsend.c): the queued small frames
 * plus one fragment of a request value larger than a frame, so uploads
 * are fragmented and interleaved exactly as in threaded mode; a round the
 * socket only partly takes is finished on the next writable event before
 * anything else (frames are never cut), and at most LOOP_WRITE_ROUNDS
 * rounds go per call. handle_read reads up to
 * LOOP_READ_ROUNDS buffers per call, so one busy connection cannot starve
 * the rest of the loop. Only one timer is ever asked of the loop: armed
 * for the earliest deadline (a request's, or the handshake's), re-armed
 * only when a new deadline is earlier than the armed one; a timer firing
 * early just re-arms.
 *
 * TLS (kvmux_options.tls): after the TCP connect the state is TLS until
 * the OpenSSL handshake is done (tls.h, "event-loop mode"): the read
 * event feeds it the server's records, its own records wait in the TLS
 * send queue, whose being non-empty is the write interest; HELLO waits in
 * the outbound buffer meanwhile. Afterwards every send round is sealed
 * whole into that queue (one round's ciphertext at most) and sent from
 * handle_write; handle_read decrypts record by record until the socket is
 * empty. A read that runs out of rounds with plaintext still inside
 * OpenSSL arms the timer for 0 ms, since the socket will not report it.
 *
 * Reconnect (kvmux_options.reconnect): a failure that is not kvmux_close
 * moves to DOWN and arms the timer for the backoff; the timer handler
 * starts the next attempt on the same descriptor number (reconnect.c).
 *
 * Re-entrancy: handlers and kvmux_close run callbacks; a callback may
 * call kvmux_close, which then only fails the connection and marks the
 * close deferred (in_handler > 0); the outermost handler finishes it when
 * the callbacks have unwound (hiredis' REDIS_IN_CALLBACK, Redis'
 * freeClientAsync).
 *
 * What it is not: no threads, no blocking, no poll() of its own; the
 * hooks are the only way it talks to the loop.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_internal.h"
#include "clock.h"

/* recv() rounds per handle_read call (each up to the receive buffer). */
#define LOOP_READ_ROUNDS 16
/* Send rounds per handle_write call (each: the queued small frames and
 * at most one KVMUX_CLIENT_FRAGMENT of a large value), so a large upload
 * cannot keep the loop from its other events. */
#define LOOP_WRITE_ROUNDS 16

/* ---- hooks (lock held or not: single-threaded) ---- */

static void loop_watch(kvmux_client *c, int want_read, int want_write) {
    if (!c->attached) return;
    if (want_read != c->read_armed) {
        c->read_armed = want_read;
        if (want_read) c->hooks.add_read(c->hooks.data);
        else c->hooks.del_read(c->hooks.data);
    }
    if (want_write != c->write_armed) {
        c->write_armed = want_write;
        if (want_write) c->hooks.add_write(c->hooks.data);
        else c->hooks.del_write(c->hooks.data);
    }
}

void kvmux__loop_timer_update(kvmux_client *c) {
    /* Failed for good: nothing is awaited any more. Between connections
     * (reconnect): the next attempt and the backlog's deadlines. */
    if (!c->attached || (c->fatal && c->lstate != KVMUX__L_DOWN)) return;
    int64_t at = kvmux__async_next_deadline(c);
    if (c->lstate == KVMUX__L_DOWN) {
        if (c->retry_at < at) at = c->retry_at;
    } else if (c->lstate != KVMUX__L_OPEN && c->connect_deadline < at) {
        at = c->connect_deadline;
    }
    if (c->lstate == KVMUX__L_OPEN) {
        int64_t ka = kvmux__keepalive_due(c);
        if (ka < at) at = ka;
    }
    if (at < c->timer_at) {
        int64_t ms = at - kvmux__now_ms();
        c->hooks.schedule_timer(c->hooks.data, ms < 0 ? 0 : ms);
        c->timer_at = at;
    }
}

void kvmux__loop_want_write(kvmux_client *c) {
    if (c->fatal == 0) loop_watch(c, c->read_armed, 1);
}

void kvmux__loop_on_fail(kvmux_client *c) {
    loop_watch(c, 0, 0);
    if (c->attached && c->timer_at != INT64_MAX) {
        c->hooks.schedule_timer(c->hooks.data, -1);
        c->timer_at = INT64_MAX;
    }
    if (!c->closing) {
        c->status_due = 1;
        c->status_code = c->fatal;
    }
    if (kvmux__reconnecting(c)) {
        kvmux__loop_reconnect_schedule(c);
        kvmux__loop_timer_update(c);
    }
}

/* Fail the connection (lock not held). */
static void loop_fail(kvmux_client *c, int code, const char *msg) {
    pthread_mutex_lock(&c->mu);
    kvmux__client_fail(c, code, "%s", msg);
    pthread_mutex_unlock(&c->mu);
}

/* ---- connect ---- */

int kvmux_async_connect(kvmux_client **out, const char *host, uint16_t port,
                        const kvmux_options *opts) {
    kvmux__connect_reset();
    kvmux_options o;
    int rc = kvmux__options_import(&o, opts);
    if (rc == 0 && !o.endpoints && (!out || !host || !*host || port == 0))
        return kvmux__connect_fail(KVMUX_EINVAL, "out, host and port are required");
    if (rc == 0 && !out) return kvmux__connect_fail(KVMUX_EINVAL, "out is required");
    if (rc == 0) rc = kvmux__check_opts(&o);
    if (rc != 0) return rc;
    if (o.cluster) return kvmux__cluster_async_connect(out, host, port, &o);
    kvmux_client *c = kvmux__client_new(&o);
    if (!c) return KVMUX_ENOMEM;
    if (o.endpoints) {
        /* Endpoints mode (failover.c): every endpoint resolved once, here
         * (this may block for a host name, never for a numeric address);
         * attempts start with the first. */
        rc = kvmux__endpoints_parse(o.endpoints, &c->eps, &c->neps);
        if (rc == 0) kvmux__session_init(c);
        for (uint32_t i = 0; rc == 0 && i < c->neps; i++)
            rc = kvmux__resolve_first(c->eps[i].host, c->eps[i].port, &c->eps[i].ss,
                                      &c->eps[i].sslen);
        if (rc != 0) {
            kvmux__client_free(c);
            return rc;
        }
        c->opts.reconnect = 1;
        host = c->eps[0].host; /* the TLS name, unless tls_server_name */
        port = c->eps[0].port;
    }
    if (o.tls && (rc = kvmux__tls_init(c, &o, host)) != 0) {
        kvmux__client_free(c);
        return rc;
    }
    c->mode = KVMUX__MODE_LOOP;
    c->lstate = KVMUX__L_CONNECTING;
    /* Until the server's limits are known, check against the protocol's. */
    c->max_key = KVMUX_MAX_KEY_LIMIT;
    c->max_value = UINT32_MAX;
    c->peer_max_frame = UINT32_MAX;
    c->version = KVMUX_PROTO_VERSION_MIN;

    /* HELLO waits in the outbound buffer until the TCP connect is done. */
    rc = kvmux__out_reserve(c, KVMUX_HELLO_AUTH_MAX_LEN);
    if (rc != 0) {
        kvmux__client_free(c);
        return kvmux__connect_fail(rc, "out of memory");
    }
    c->out.len = kvmux__hello_encode(c, o.client_name, c->out.data);
    c->out.frames = 1;

    /* Resolved once, here: a reconnect reuses the address, so the loop
     * thread never waits for DNS. */
    int fd;
    if (c->eps) {
        /* The first endpoint whose connect can start (a refused loopback
         * connect fails at once); one refused later is a loss like any
         * other, and the reconnect moves on to the next. */
        fd = KVMUX_ECONNECT;
        for (uint32_t i = 0; i < c->neps && fd < 0; i++) {
            c->ep_cur = i;
            c->raddr = c->eps[i].ss;
            c->raddr_len = c->eps[i].sslen;
            fd = kvmux__connect_addr(&c->raddr, c->raddr_len);
        }
    } else {
        rc = kvmux__resolve_first(host, port, &c->raddr, &c->raddr_len);
        fd = rc == 0 ? kvmux__connect_addr(&c->raddr, c->raddr_len) : rc;
    }
    if (fd < 0) {
        kvmux__client_free(c);
        return fd;
    }
    c->fd = fd;
    c->connect_deadline = kvmux__now_ms() + o.connect_timeout_ms;
    *out = c;
    return 0;
}

int kvmux_async_attach(kvmux_client *c, const kvmux_async_hooks *h) {
    if (!c || !h || c->mode != KVMUX__MODE_LOOP || c->attached) return KVMUX_EINVAL;
    if (!h->add_read || !h->del_read || !h->add_write || !h->del_write || !h->schedule_timer)
        return KVMUX_EINVAL;
    pthread_mutex_lock(&c->mu);
    c->hooks = *h;
    c->attached = 1;
    if (c->fatal == 0) {
        /* Connecting: writability reports the connect's outcome. */
        loop_watch(c, 1, c->lstate == KVMUX__L_CONNECTING || c->out.len > 0);
        kvmux__loop_timer_update(c);
        if (c->router && c->status_due) {
            /* A cluster handle is connected already (it has its map):
             * its status callback runs from the next timer event. */
            c->hooks.schedule_timer(c->hooks.data, 0);
            c->timer_at = kvmux__now_ms();
        }
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int kvmux_async_fd(const kvmux_client *c) {
    return c ? c->fd : -1;
}

int kvmux_async_set_status_cb(kvmux_client *c, kvmux_status_cb cb, void *user_data) {
    if (!c || c->mode != KVMUX__MODE_LOOP) return KVMUX_EINVAL;
    c->status_cb = cb;
    c->status_ud = user_data;
    return 0;
}

/* ---- handlers ---- */

/* Free a loop client (not inside a handler). */
static void loop_destroy(kvmux_client *c) {
    if (c->attached && c->hooks.cleanup) c->hooks.cleanup(c->hooks.data);
    if (c->router) kvmux__cluster_free(c);
    else kvmux__client_free(c);
}

/* Every handler's epilogue (lock not held): report the connection status,
 * run the callbacks that became due, and finish a deferred close. */
void kvmux__loop_leave(kvmux_client *c) {
    pthread_mutex_lock(&c->mu);
    int due = c->status_due;
    int code = c->status_code;
    c->status_due = 0;
    pthread_mutex_unlock(&c->mu);
    if (due && c->status_cb) c->status_cb(c, code, c->status_ud);
    kvmux__async_run_done(c);
    if (c->router && !c->close_deferred) {
        /* What those callbacks submitted goes out now (one write per
         * sub-client for the batch); a write that fails completes
         * requests, whose callbacks run here too. */
        kvmux__cluster_loop_flush(c);
        kvmux__async_run_done(c);
        if (c->in_handler == 1 && !c->close_deferred) kvmux__cluster_loop_sync(c);
    }
    c->in_handler--;
    if (c->in_handler == 0 && c->close_deferred) loop_destroy(c);
}

/* Write what can go now and watch writability while anything is left
 * (lock held). Rounds admit backlogged requests as they make room; those
 * go out in the same call. A transfer blocked on its window is not
 * "left": the WINDOW_UPDATE that unblocks it asks for writability. */
static void loop_write_some(kvmux_client *c);

/* Advance the TLS handshake (state TLS; lock not held): start it
 * (start set) or feed it what the socket has; its records go out at
 * once. Once done, the state is HANDSHAKE and HELLO follows, sealed. */
static void loop_tls_step(kvmux_client *c, int start) {
    int r = start ? kvmux__tls_loop_start(c) : kvmux__tls_loop_handshake(c);
    if (r < 0) {
        loop_fail(c, kvmux_is_fatal(r) ? r : KVMUX_ECONNECT, kvmux__connect_msg());
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (r == 1) c->lstate = KVMUX__L_HANDSHAKE;
    loop_write_some(c);
    pthread_mutex_unlock(&c->mu);
}

/* The TCP connect has finished (the fd was reported ready): check its
 * outcome. Returns 1 when connected (now in TLS or HANDSHAKE), 0 after
 * failing the connection. */
static int loop_connected(kvmux_client *c) {
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
    if (soerr != 0) {
        char eb[64], msg[128];
        snprintf(msg, sizeof msg, "connect: %s", kvmux__errstr(soerr, eb, sizeof eb));
        loop_fail(c, KVMUX_ECONNECT, msg);
        return 0;
    }
    if (c->tls) {
        c->lstate = KVMUX__L_TLS;
        loop_tls_step(c, 1);
        return c->fatal == 0;
    }
    c->lstate = KVMUX__L_HANDSHAKE;
    return 1;
}

/* 1 if the loop driver has bytes to write now (lock held). During the
 * TLS handshake only its records can go (HELLO waits for it). */
static int loop_has_output(kvmux_client *c) {
    if (kvmux__tls_loop_queued(c) > 0) return 1;
    if (c->lstate == KVMUX__L_TLS) return 0;
    return c->lw_niov > 0 || c->out.len > 0 || kvmux__big_ready(c);
}

/* A send error on the socket (lock held): fail the connection. */
static void loop_send_failed(kvmux_client *c, int err) {
    char eb[64];
    kvmux__client_fail(c, (err == EPIPE || err == ECONNRESET) ? KVMUX_ECLOSED : KVMUX_EIO,
                       "send failed: %s", kvmux__errstr(err, eb, sizeof eb));
}

/* loop_flush over TLS: a round is sealed whole into the TLS send queue
 * (bounded: one round's ciphertext), which must be empty before the
 * next round is sealed; frames are therefore never cut either. */
static int loop_flush_tls(kvmux_client *c) {
    for (int round = 0; c->fatal == 0;) {
        int r = kvmux__tls_loop_flush(c);
        if (r < 0) {
            loop_send_failed(c, errno);
            return -1;
        }
        if (r > 0 || c->lstate == KVMUX__L_TLS || round >= LOOP_WRITE_ROUNDS) return 0;
        if (c->out.len == 0 && !kvmux__big_ready(c)) return 0;
        struct iovec iov[3];
        kvmux__bigmsg *big = NULL;
        int n = kvmux__round_begin(c, iov, &big);
        int rc = kvmux__tls_loop_seal(c, iov, n); /* fails the connection on error */
        kvmux__round_end(c, big);
        if (rc != 0) return -1;
        round++;
        kvmux__async_pump(c);
    }
    return 0;
}

/* Write send rounds (kvmux__round_begin: the queued small frames, then
 * one fragment of a large value) until nothing is left, the socket is
 * full, or LOOP_WRITE_ROUNDS rounds are out (lock held). A round the
 * socket takes only part of stays in c->lw_iov for the next writable
 * event: frames are never cut by other bytes. Returns 0, or -1 after
 * failing the connection. */
static int loop_flush(kvmux_client *c) {
    if (c->tls) return loop_flush_tls(c);
    for (int round = 0; round < LOOP_WRITE_ROUNDS && c->fatal == 0;) {
        if (c->lw_niov == 0) {
            if (c->out.len == 0 && !kvmux__big_ready(c)) return 0;
            c->lw_niov = kvmux__round_begin(c, c->lw_iov, &c->lw_big);
        }
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = c->lw_iov;
        mh.msg_iovlen = (size_t)c->lw_niov;
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n < 0) {
            loop_send_failed(c, errno);
            return -1;
        }
        /* Drop what was written from the front of the round. */
        size_t left = (size_t)n;
        int i = 0;
        while (i < c->lw_niov && left >= c->lw_iov[i].iov_len) left -= c->lw_iov[i++].iov_len;
        if (i < c->lw_niov) {
            c->lw_iov[i].iov_base = (uint8_t *)c->lw_iov[i].iov_base + left;
            c->lw_iov[i].iov_len -= left;
        }
        memmove(c->lw_iov, c->lw_iov + i, (size_t)(c->lw_niov - i) * sizeof c->lw_iov[0]);
        c->lw_niov -= i;
        if (c->lw_niov > 0) continue; /* partial: try again, EAGAIN ends it */
        kvmux__round_end(c, c->lw_big);
        c->lw_big = NULL;
        round++;
        /* The room made may admit backlogged requests: next round. */
        kvmux__async_pump(c);
    }
    return 0;
}

/* Decode HELLO_ACK from the receive buffer once it is whole (lock not
 * held). Returns 1 when the session is open, 0 when more bytes are
 * needed, -1 after failing the connection. */
static int loop_handshake(kvmux_client *c) {
    kvmux_frame f;
    int n = kvmux_frame_decode(c->rbuf, c->rlen, c->opts.max_frame_size, &f);
    if (n == 0) return 0;
    int rc = n < 0 ? kvmux__connect_fail(KVMUX_EPROTO, "bad handshake reply: %s",
                                         kvmux_wire_error_name(-n))
                   : kvmux__handshake_reply(c, &f);
    if (rc != 0) {
        /* Handshake failures are all "could not connect" for a client
         * that was already handed out; the message says why. */
        loop_fail(c, kvmux_is_fatal(rc) ? rc : KVMUX_ECONNECT, kvmux__connect_msg());
        return -1;
    }
    kvmux__reader_consume(c, (size_t)n);
    pthread_mutex_lock(&c->mu);
    c->lstate = KVMUX__L_OPEN;
    c->status_due = 1;
    c->status_code = 0;
    if (c->retry_n > 0) c->reconnects++; /* a reconnect attempt succeeded */
    c->retry_n = 0;
    c->down_code = 0;
    c->fatal_msg[0] = 0;
    kvmux__async_pump(c); /* the requests submitted while connecting */
    kvmux__loop_timer_update(c);
    pthread_mutex_unlock(&c->mu);
    return 1;
}

/* Read and process what the socket (or OpenSSL) has, up to
 * LOOP_READ_ROUNDS buffers (lock not held; state HANDSHAKE or OPEN). */
static void loop_read(kvmux_client *c) {
    for (int round = 0; round < LOOP_READ_ROUNDS && c->fatal == 0; round++) {
        if (kvmux__reader_make_room(c) != 0) break;
        size_t room = c->rcap - c->rlen;
        ssize_t n = c->tls ? kvmux__tls_loop_recv(c, c->rbuf + c->rlen, room)
                           : recv(c->fd, c->rbuf + c->rlen, room, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) {
            int err = n < 0 ? errno : 0;
            char eb[64], msg[128];
            if (n == 0) snprintf(msg, sizeof msg, "server closed the connection");
            else snprintf(msg, sizeof msg, "recv failed: %s", kvmux__errstr(err, eb, sizeof eb));
            loop_fail(c, (n == 0 || err == ECONNRESET || err == EPIPE) ? KVMUX_ECLOSED : KVMUX_EIO,
                      msg);
            break;
        }
        c->rlen += (size_t)n;
        kvmux__keepalive_rx(c, kvmux__now_ms());
        if (c->lstate == KVMUX__L_HANDSHAKE && loop_handshake(c) <= 0) continue;
        if (c->rlen > 0) {
            pthread_mutex_lock(&c->mu);
            size_t used = kvmux__reader_process(c);
            if (c->draining && c->fatal == 0 && kvmux__reconnecting(c) &&
                c->pending.nfree + c->pending.ntomb == c->pending.nslots && !c->big_head)
                /* Reconnect: the GOAWAY drain is over (every request sent
                 * has its answer): move to a new connection now. */
                kvmux__client_fail(c, KVMUX_ECLOSED, "connection drained after GOAWAY");
            pthread_mutex_unlock(&c->mu);
            kvmux__reader_consume(c, used);
        }
        /* Plaintext: a short read drained the socket. TLS returns one
         * record at a time, so it reads on until EAGAIN. */
        if (!c->tls && (size_t)n < room) break;
    }
    if (c->fatal == 0 && c->tls && kvmux__tls_buffered(c)) {
        /* Out of rounds with plaintext still inside OpenSSL: the socket
         * will not report it, so come back from the timer at once. */
        pthread_mutex_lock(&c->mu);
        c->hooks.schedule_timer(c->hooks.data, 0);
        c->timer_at = kvmux__now_ms();
        pthread_mutex_unlock(&c->mu);
    }
}

void kvmux_async_handle_read(kvmux_client *c) {
    if (!c || c->mode != KVMUX__MODE_LOOP) return;
    c->in_handler++;
    if (c->router) {
        /* A cluster handle: its fd is the sub-clients' epoll set. */
        kvmux__cluster_loop_read(c);
        kvmux__loop_leave(c);
        return;
    }
    if (c->fatal == 0 && c->lstate == KVMUX__L_CONNECTING) loop_connected(c);
    if (c->fatal == 0 && c->lstate == KVMUX__L_TLS) loop_tls_step(c, 0);
    if (c->fatal == 0 && (c->lstate == KVMUX__L_HANDSHAKE || c->lstate == KVMUX__L_OPEN))
        loop_read(c);
    kvmux__loop_leave(c);
}

static void loop_write_some(kvmux_client *c) {
    if (loop_flush(c) == 0 && c->fatal == 0) loop_watch(c, c->read_armed, loop_has_output(c));
}

void kvmux_async_handle_write(kvmux_client *c) {
    if (!c || c->mode != KVMUX__MODE_LOOP || c->router) return; /* router: never asked */
    c->in_handler++;
    if (c->fatal == 0 && (c->lstate != KVMUX__L_CONNECTING || loop_connected(c))) {
        pthread_mutex_lock(&c->mu);
        loop_write_some(c);
        pthread_mutex_unlock(&c->mu);
    }
    kvmux__loop_leave(c);
}

void kvmux_async_handle_timeout(kvmux_client *c) {
    if (!c || c->mode != KVMUX__MODE_LOOP) return;
    c->in_handler++;
    if (c->router) {
        /* The sub-clients' timers first (their hooks may re-arm ours), then
         * the handle's own deadlines and retries. */
        c->timer_at = INT64_MAX; /* it fired */
        int64_t now = kvmux__now_ms();
        kvmux__cluster_loop_timers(c, now);
        pthread_mutex_lock(&c->mu);
        kvmux__async_expire(c, now);
        kvmux__loop_timer_update(c);
        pthread_mutex_unlock(&c->mu);
        kvmux__loop_leave(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->timer_at = INT64_MAX; /* it fired */
    int64_t now = kvmux__now_ms();
    if (c->fatal != 0 && c->lstate == KVMUX__L_DOWN && !c->closing && now >= c->retry_at) {
        /* Reconnect: the backoff is over; a new connect starts. */
        kvmux__loop_reconnect_start(c);
        if (c->fatal == 0) {
            loop_watch(c, 1, 1); /* writability reports the connect */
        } else {
            c->status_due = 1; /* could not even start: report, retry later */
            c->status_code = c->fatal;
        }
    }
    if (c->fatal == 0 && c->lstate != KVMUX__L_OPEN && now >= c->connect_deadline)
        kvmux__client_fail(c, KVMUX_ECONNECT, "connect/handshake timed out after %d ms",
                           c->opts.connect_timeout_ms);
    kvmux__async_expire(c, now);
    if (c->lstate == KVMUX__L_OPEN) kvmux__keepalive_tick(c, now);
    kvmux__loop_timer_update(c);
    pthread_mutex_unlock(&c->mu);
    /* Plaintext left inside OpenSSL by a read that ran out of rounds. */
    if (c->fatal == 0 && c->tls && c->lstate == KVMUX__L_OPEN) loop_read(c);
    kvmux__loop_leave(c);
}

void kvmux__loop_close(kvmux_client *c) {
    if (c->router) {
        kvmux__cluster_loop_shutdown(c);
    } else {
        pthread_mutex_lock(&c->mu);
        c->closing = 1;
        kvmux__client_fail(c, KVMUX_ECLOSED, "closed by kvmux_close");
        /* Reconnect: the connection may have been lost earlier (the fail
         * above then did nothing): the backlog kept for the next
         * connection fails now. */
        if (c->opts.reconnect) kvmux__async_fail(c, KVMUX_ECLOSED);
        pthread_mutex_unlock(&c->mu);
    }
    if (c->in_handler > 0) {
        /* Inside a callback: the outermost handler frees c after the
         * callbacks (including the ones this close just owed) have run. */
        c->close_deferred = 1;
        return;
    }
    c->in_handler++; /* a callback closing again is then deferred: harmless */
    kvmux__async_run_done(c);
    c->in_handler--;
    loop_destroy(c);
}
