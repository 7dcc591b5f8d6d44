/* kvmux client automatic reconnect (kvmux_options.reconnect): threaded
 * mode here first, event-loop mode at the end of the file.
 *
 * Design (threaded): the reader thread is the supervisor. When its connection fails
 * (kvmux__client_fail: EOF, reset, keepalive timeout, protocol error, or
 * the server closing after a GOAWAY drain), the failure pass has already
 * completed everything in flight with KVMUX_ECLOSED (or KVMUX__ERETRY for
 * reads under retry_reads) and left the async backlog alone. The reader
 * then, in kvmux__reconnect_run:
 *   1. joins the writer (it exits on the fatal code);
 *   2. waits until no slot is WAITING (the woken callers collect their
 *      results and release their slots; they were all woken, so this is
 *      short), then drops the pending table, tombstones included (their
 *      ids belonged to the dead connection), the outbound queue (frames
 *      for the dead connection: their callers already have ECLOSED), and
 *      the fragmented uploads;
 *   3. loops: sleep a full-jitter backoff (attempt n: uniform in
 *      [0, min(max_backoff, min_backoff << n)]), then connect and
 *      handshake under connect_timeout_ms. The TCP connect is polled in
 *      short slices so kvmux_close is noticed within one slice; a
 *      handshake in progress is cut short by kvmux_close's shutdown() of
 *      c->fd. The HELLO_ACK rebuilds the pending table with the new
 *      server's credits and limits (kvmux__handshake_reply, under the
 *      lock). A restarted server may advertise different limits: callers
 *      read them as atomics in their early check and admission checks
 *      again under the lock (client_internal.h, call.c), so a call that
 *      raced the reconnect is planned for the server it is sent to;
 *   4. on success clears the fatal code, starts a new writer, admits the
 *      backlog and wakes every caller waiting for the connection; the
 *      reader then reads the new connection.
 * While the fatal code is set and the client is not closing,
 * kvmux__reconnecting is true: calls wait on conn_cond (or fail fast),
 * async submits queue in the backlog. kvmux_close sets closing, which
 * ends the loop; the reader joins the writer before it exits (with
 * reconnect on, kvmux_close joins only the reader).
 *
 * What it is not: no request is ever re-encoded here (a retried read is
 * resent by its own caller in call.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_internal.h"
#include "clock.h"

/* How long one poll of a TCP connect in progress lasts: the most a
 * kvmux_close waits for a reconnect attempt to notice it. */
#define RECONNECT_SLICE_MS 20

int kvmux__reconnecting(const kvmux_client *c) {
    return c->opts.reconnect && !c->closing;
}

int kvmux__writer_start(kvmux_client *c) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&c->writer, NULL, kvmux__writer_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) c->writer_running = 1;
    return rc;
}

int kvmux_reconnect_stats(kvmux_client *c, uint64_t *attempts, uint64_t *reconnects) {
    if (!c) return KVMUX_EINVAL;
    pthread_mutex_lock(&c->mu);
    if (attempts) *attempts = c->reconnect_attempts;
    if (reconnects) *reconnects = c->reconnects;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* xorshift64: the backoff jitter (reader thread only). */
static uint64_t jitter_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

int64_t kvmux__reconnect_backoff(const kvmux_client *c, uint32_t n, uint64_t *seed) {
    int64_t cap = c->opts.reconnect_max_backoff_ms;
    /* Endpoints mode: moving on to another replica should not wait
     * longer than an election takes (failover.c). */
    if (kvmux__failover_on(c) && cap > KVMUX__FAILOVER_MAX_BACKOFF_MS)
        cap = KVMUX__FAILOVER_MAX_BACKOFF_MS;
    int64_t b = c->opts.reconnect_min_backoff_ms;
    for (uint32_t i = 0; i < n && b < cap; i++) b *= 2;
    if (b > cap) b = cap;
    return (int64_t)(jitter_next(seed) % (uint64_t)(b + 1));
}

/* Sleep (lock held) until monotonic ms until or kvmux_close. Returns 1 if
 * closing. */
static int backoff_sleep(kvmux_client *c, int64_t until) {
    while (!c->closing) {
        int64_t now = kvmux__now_ms();
        if (now >= until) return 0;
        struct timespec ts = kvmux__deadline(until - now);
        pthread_cond_timedwait(&c->conn_cond, &c->mu, &ts);
    }
    return 1;
}

/* Forget the dead connection (lock held, writer joined, no slot WAITING). */
static void reset_connection(kvmux_client *c) {
    kvmux__pending_deinit(&c->pending);
    kvmux__big_free_all(c);
    c->wr_big = NULL;
    c->out.len = 0;
    c->out.frames = 0;
    c->wbuf.len = 0;
    c->wbuf.frames = 0;
    c->wr_bytes = 0;
    c->wr_frames = 0;
    c->writer_idle = 0;
    c->draining = 0;
    c->redirecting = 0;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->rlen = 0;
}

/* One connect + handshake (lock NOT held). Returns 0 (c->fd connected,
 * blocking, pending table built) or a KVMUX_E* (message in the thread's
 * connect message; c->fd closed and -1, pending table dropped). */
static int reconnect_attempt(kvmux_client *c) {
    int64_t deadline = kvmux__now_ms() + c->opts.connect_timeout_ms;
    int fd = kvmux__connect_socket(c->host, c->port, -1); /* in progress */
    if (fd < 0) return fd;
    pthread_mutex_lock(&c->mu);
    c->fd = fd; /* kvmux_close may shut it down from now on */
    int closing = c->closing;
    pthread_mutex_unlock(&c->mu);
    int rc = KVMUX_ECLOSED;
    while (!closing) {
        struct pollfd p = {fd, POLLOUT, 0};
        int r = poll(&p, 1, RECONNECT_SLICE_MS);
        if (r < 0 && errno != EINTR) {
            rc = kvmux__connect_fail(KVMUX_ECONNECT, "poll failed");
            break;
        }
        if (r > 0) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
            char eb[64];
            rc = soerr == 0 ? 0
                            : kvmux__connect_fail(KVMUX_ECONNECT, "connect to %s:%u: %s", c->host,
                                                  (unsigned)c->port,
                                                  kvmux__errstr(soerr, eb, sizeof eb));
            break;
        }
        if (kvmux__now_ms() >= deadline) {
            rc = kvmux__connect_fail(KVMUX_ETIMEDOUT, "connect to %s:%u timed out", c->host,
                                     (unsigned)c->port);
            break;
        }
        pthread_mutex_lock(&c->mu);
        closing = c->closing;
        pthread_mutex_unlock(&c->mu);
    }
    if (rc == 0 && !closing && c->tls) rc = kvmux__tls_handshake(c, fd, deadline);
    if (rc == 0 && !closing) {
        c->rlen = 0;
        rc = kvmux__connect_handshake(c, NULL, deadline);
    }
    if (rc == 0) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
            rc = kvmux__connect_fail(KVMUX_ECONNECT, "fcntl failed");
    }
    if (rc != 0) {
        pthread_mutex_lock(&c->mu);
        kvmux__pending_deinit(&c->pending); /* a HELLO_ACK may have built it */
        close(fd);
        c->fd = -1;
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

int kvmux__reconnect_run(kvmux_client *c) {
    if (c->writer_running) {
        pthread_join(c->writer, NULL);
        c->writer_running = 0;
    }
    pthread_mutex_lock(&c->mu);
    /* The failure woke every caller holding a WAITING slot; let them
     * collect their results before the table goes (bounded: they only
     * need the lock). */
    while (c->pending.nslots - c->pending.nfree - c->pending.ntomb > 0) {
        pthread_mutex_unlock(&c->mu);
        usleep(1000);
        pthread_mutex_lock(&c->mu);
    }
    reset_connection(c);
    uint64_t seed = (uint64_t)kvmux__now_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)c;
    if (seed == 0) seed = 1;
    for (uint32_t n = 0;; n++) {
        if (backoff_sleep(c, kvmux__now_ms() + kvmux__reconnect_backoff(c, n, &seed))) break;
        c->reconnect_attempts++;
        if (kvmux__failover_on(c)) kvmux__failover_pick(c); /* c->host, c->port */
        pthread_mutex_unlock(&c->mu);
        int rc = reconnect_attempt(c);
        pthread_mutex_lock(&c->mu);
        if (c->closing) break;
        if (rc != 0) {
            if (kvmux__failover_on(c)) kvmux__failover_attempt_failed(c);
            snprintf(c->fatal_msg, sizeof c->fatal_msg, "reconnect attempt %u: %s", n + 1,
                     kvmux__connect_msg());
            continue;
        }
        c->fatal = 0;
        c->fatal_msg[0] = 0;
        if (kvmux__writer_start(c) != 0) {
            /* Not one frame went out: stay disconnected, try again. */
            c->fatal = KVMUX_ECLOSED;
            snprintf(c->fatal_msg, sizeof c->fatal_msg, "cannot start the writer thread");
            reset_connection(c);
            continue;
        }
        c->reconnects++;
        kvmux__async_pump(c);
        pthread_cond_broadcast(&c->conn_cond);
        pthread_cond_broadcast(&c->slot_cond);
        pthread_cond_broadcast(&c->queue_cond);
        pthread_mutex_unlock(&c->mu);
        return 1;
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* ---- event-loop mode ----
 *
 * The same policy with the loop's one timer instead of a thread: a loss
 * (kvmux__client_fail, which has already completed what was in flight
 * with KVMUX_ECLOSED and kept the backlog) puts the client in state DOWN
 * with retry_at = now + backoff; the timer handler then starts the
 * attempt: the dead connection's state is dropped and a non-blocking
 * connect to the address resolved once by kvmux_async_connect begins (no
 * getaddrinfo and no blocking connect in the loop thread), then TLS and
 * HELLO proceed from the loop's events exactly as for the first
 * connection. A failed attempt is a failure like any other: back to DOWN
 * with the next, longer, backoff.
 *
 * The new socket takes the old one's descriptor number (dup3 over the
 * dead socket, kept open until then), so kvmux_async_fd never changes and
 * an adapter watching it needs no new hook: it saw del_read/del_write
 * when the connection failed (before the old description went away) and
 * sees add_read/add_write for the new connection. */

void kvmux__loop_reconnect_schedule(kvmux_client *c) {
    if (c->retry_seed == 0) {
        c->retry_seed = (uint64_t)kvmux__now_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)c;
        if (c->retry_seed == 0) c->retry_seed = 1;
    }
    c->lstate = KVMUX__L_DOWN;
    c->retry_at = kvmux__now_ms() + kvmux__reconnect_backoff(c, c->retry_n, &c->retry_seed);
    c->retry_n++;
}

/* Forget the dead connection (lock held; loop thread; nothing WAITING:
 * the failure completed every slot). The descriptor stays open. */
static void loop_reset_connection(kvmux_client *c) {
    if (c->lw_niov > 0 || c->lw_big) {
        /* The round being written is dropped with the connection; its
         * transfer is freed here if aborted, with the others below. */
        kvmux__round_end(c, c->lw_big);
        c->lw_niov = 0;
        c->lw_big = NULL;
    }
    kvmux__pending_deinit(&c->pending);
    kvmux__big_free_all(c);
    c->wr_big = NULL;
    c->out.len = 0;
    c->out.frames = 0;
    c->wbuf.len = 0;
    c->wbuf.frames = 0;
    c->wr_bytes = 0;
    c->wr_frames = 0;
    c->draining = 0;
    c->redirecting = 0;
    c->rlen = 0;
    kvmux__tls_reset(c);
}

void kvmux__loop_reconnect_start(kvmux_client *c) {
    if (c->parked_head != KVMUX__SLOT_NIL) {
        /* A callback completed out of memory still holds its slot: the
         * table goes only after it has run (this handler's epilogue). */
        c->retry_at = kvmux__now_ms() + 1;
        return;
    }
    loop_reset_connection(c);
    c->reconnect_attempts++;
    if (kvmux__failover_on(c)) kvmux__failover_pick(c); /* c->raddr */
    int rc = kvmux__out_reserve(c, KVMUX_HELLO_AUTH_MAX_LEN);
    int fd = rc == 0 ? kvmux__connect_addr(&c->raddr, c->raddr_len) : rc;
    if (fd >= 0 && c->fd >= 0 && fd != c->fd) {
        /* Same number as the dead socket, which this closes. */
        if (dup3(fd, c->fd, O_CLOEXEC) < 0) {
            char eb[64];
            kvmux__connect_fail(KVMUX_ECONNECT, "dup3: %s", kvmux__errstr(errno, eb, sizeof eb));
            close(fd);
            fd = KVMUX_ECONNECT;
        } else {
            close(fd);
            fd = c->fd;
        }
    }
    if (fd < 0) {
        c->fatal = KVMUX_ECONNECT;
        snprintf(c->fatal_msg, sizeof c->fatal_msg, "reconnect attempt %u: %s", c->retry_n,
                 kvmux__connect_msg());
        if (kvmux__failover_on(c)) kvmux__failover_attempt_failed(c);
        kvmux__loop_reconnect_schedule(c);
        return;
    }
    c->fd = fd;
    /* Protocol limits until the new server's HELLO_ACK (as a first
     * connect): requests submitted meanwhile wait in the backlog. */
    c->max_key = KVMUX_MAX_KEY_LIMIT;
    c->max_value = UINT32_MAX;
    c->peer_max_frame = UINT32_MAX;
    c->out.len = kvmux__hello_encode(c, NULL, c->out.data);
    c->out.frames = 1;
    /* The loss stays what kvmux_connection_error reports (down_code,
     * fatal_msg) until the attempt's handshake succeeds. */
    c->down_code = c->fatal;
    c->fatal = 0;
    c->lstate = KVMUX__L_CONNECTING;
    c->connect_deadline = kvmux__now_ms() + c->opts.connect_timeout_ms;
}
