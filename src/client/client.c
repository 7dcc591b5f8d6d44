/* kvmux client lifecycle: kvmux_connect, kvmux_close, the connection-failure
 * path, and the read-only accessors.
 *
 * Design: kvmux_connect does everything that can fail before any thread
 * exists, so a failed connect has nothing to tear down but memory and a
 * socket: resolve (getaddrinfo, every address tried in turn), non-blocking
 * connect bounded by connect_timeout_ms (poll), TCP_NODELAY (requests are
 * small and latency-bound; the writer already coalesces), then the HELLO /
 * HELLO_ACK handshake done synchronously under the same deadline with the
 * sans-IO session from proto.h. Only then is the socket made blocking and
 * the writer and reader threads started (with all signals blocked, so the
 * application's signal handlers never run on our threads). Bytes the server
 * sent after HELLO_ACK stay in the receive buffer for the reader.
 *
 * The pending table gets one slot per credit: min(server MAX_OUTSTANDING,
 * opts.max_outstanding if nonzero, KVMUX_CLIENT_MAX_SLOTS).
 *
 * Failure (kvmux__client_fail) is the one place a connection dies: under
 * the mutex it records the first fatal code and message, completes every
 * WAITING slot with that code, wakes every sleeper, and shutdown()s the
 * socket so the reader (in recv) and the writer (in send) return at once.
 * kvmux_close is that plus: wait until every caller has left the library
 * (they were all woken, so the wait is short), join both threads, close
 * the socket and free everything.
 *
 * A failed kvmux_connect leaves *out untouched, so there is no handle to ask
 * for the server's message; kvmux_connection_error(NULL, ...) returns the
 * code and message of the calling thread's last failed kvmux_connect
 * instead (thread-local).
 *
 * The pieces both connects need (client_new/free, the socket, HELLO and
 * the handshake reply) are shared with the event-loop connect in loop.c,
 * which does the same steps without blocking. The HELLO proposes versions
 * 1..opts.max_protocol_version (default 3; a single-node server picks 2) and advertises
 * opts.max_value_size; on a v2 connection replies larger than a frame
 * arrive fragmented (reader.c reassembles them), and a GOAWAY puts the
 * client in the draining state (new calls fail fast with KVMUX_ESHUTDOWN).
 *
 * With kvmux_options.reconnect (threaded mode) a failure is not terminal
 * unless kvmux_close caused it: slots get KVMUX_ECLOSED (or KVMUX__ERETRY
 * for retried reads), the async backlog is kept, and the reader thread
 * re-makes the connection (reconnect.c), reusing the handshake here. The
 * reader then owns the writer thread (it restarts it per connection), so
 * kvmux_close joins only the reader.
 *
 * What it is not: no request handling (call.c, async.c), no frame parsing
 * after the handshake (reader.c), no socket writes after it (writer.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_internal.h"
#include "clock.h"

/* The calling thread's last kvmux_connect failure (code 0 = none). */
static _Thread_local int connect_err_code;
static _Thread_local char connect_err_msg[KVMUX_CLIENT_MSG_MAX];

/* Record a connect failure for kvmux_connection_error(NULL, ...) and
 * return code. */
int kvmux__connect_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(connect_err_msg, sizeof connect_err_msg, fmt, ap);
    va_end(ap);
    connect_err_code = code;
    return code;
}

const char *kvmux__connect_msg(void) {
    return connect_err_msg;
}

void kvmux__connect_reset(void) {
    connect_err_code = 0;
    connect_err_msg[0] = 0;
}

/* ms left until deadline (monotonic ms), at least 0. */
static int connect_left(int64_t deadline) {
    int64_t left = deadline - kvmux__now_ms();
    if (left < 0) return 0;
    return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

/* Wait until fd is ready for events or the deadline passes. Returns 1
 * ready, 0 timed out, -1 error (errno). */
static int connect_poll(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, connect_left(deadline));
        if (r < 0 && errno == EINTR) continue;
        return r < 0 ? -1 : r > 0;
    }
}

int kvmux__connect_socket(const char *host, uint16_t port, int64_t deadline) {
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai == EAI_MEMORY) return kvmux__connect_fail(KVMUX_ENOMEM, "getaddrinfo: out of memory");
    if (gai != 0 || !res)
        return kvmux__connect_fail(KVMUX_ECONNECT, "cannot resolve %s: %s", host, gai_strerror(gai));

    int rc = KVMUX_ECONNECT;
    char eb[64];
    kvmux__connect_fail(KVMUX_ECONNECT, "no address for %s", host);
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                        a->ai_protocol);
        if (fd < 0) {
            rc = kvmux__connect_fail(KVMUX_ECONNECT, "socket: %s", kvmux__errstr(errno, eb, sizeof eb));
            continue;
        }
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (deadline < 0 && (r == 0 || errno == EINPROGRESS)) {
            /* Event-loop connect: the loop reports completion. */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            freeaddrinfo(res);
            return fd;
        }
        if (r != 0 && errno == EINPROGRESS) {
            int ready = connect_poll(fd, POLLOUT, deadline);
            if (ready == 0) {
                close(fd);
                rc = kvmux__connect_fail(KVMUX_ETIMEDOUT, "connect to %s:%u timed out", host,
                                  (unsigned)port);
                break; /* the deadline covers all addresses */
            }
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (ready < 0) soerr = errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
            r = soerr ? -1 : 0;
            errno = soerr;
        }
        if (r != 0) {
            rc = kvmux__connect_fail(KVMUX_ECONNECT, "connect to %s:%u: %s", host, (unsigned)port,
                              kvmux__errstr(errno, eb, sizeof eb));
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        freeaddrinfo(res);
        return fd;
    }
    freeaddrinfo(res);
    return rc;
}

/* getaddrinfo's first stream address for host:port into *ss (ai_flags
 * added to AI_NUMERICSERV). Returns getaddrinfo's code, or EAI_FAIL when
 * there is no usable address. */
static int resolve(const char *host, uint16_t port, int ai_flags, struct sockaddr_storage *ss,
                   socklen_t *len) {
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | ai_flags;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai == 0 && (!res || res->ai_addrlen > sizeof *ss)) gai = EAI_FAIL;
    if (gai == 0) {
        memset(ss, 0, sizeof *ss);
        memcpy(ss, res->ai_addr, res->ai_addrlen);
        *len = (socklen_t)res->ai_addrlen;
    }
    if (res) freeaddrinfo(res);
    return gai;
}

int kvmux__resolve_first(const char *host, uint16_t port, struct sockaddr_storage *ss,
                         socklen_t *len) {
    int gai = resolve(host, port, 0, ss, len);
    if (gai == EAI_MEMORY) return kvmux__connect_fail(KVMUX_ENOMEM, "getaddrinfo: out of memory");
    if (gai != 0)
        return kvmux__connect_fail(KVMUX_ECONNECT, "cannot resolve %s: %s", host,
                                   gai != EAI_FAIL ? gai_strerror(gai) : "no usable address");
    return 0;
}

int kvmux__resolve_numeric(const char *host, uint16_t port, struct sockaddr_storage *ss,
                           socklen_t *len) {
    return resolve(host, port, AI_NUMERICHOST, ss, len) == 0 ? 0 : -1;
}

int kvmux__connect_addr(const struct sockaddr_storage *ss, socklen_t len) {
    char eb[64];
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return kvmux__connect_fail(KVMUX_ECONNECT, "socket: %s",
                                   kvmux__errstr(errno, eb, sizeof eb));
    if (connect(fd, (const struct sockaddr *)ss, len) != 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return kvmux__connect_fail(KVMUX_ECONNECT, "connect: %s",
                                   kvmux__errstr(err, eb, sizeof eb));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

size_t kvmux__hello_encode(kvmux_client *c, const char *name, uint8_t *out) {
    kvmux_settings local;
    kvmux_settings_default(&local);
    local.max_frame_size = c->opts.max_frame_size;
    if (c->opts.max_outstanding) local.max_outstanding = c->opts.max_outstanding;
    /* 0 in the two v2 options means "default" (callers that filled the
     * struct by hand before these fields existed). */
    local.max_value_size = c->opts.max_value_size ? c->opts.max_value_size
                                                  : KVMUX_DEFAULT_MAX_VALUE_V2;
    kvmux_session_init(&c->session, KVMUX_ROLE_CLIENT, &local);
    if (c->opts.max_protocol_version)
        c->session.max_version = c->opts.max_protocol_version;
    /* Same encoder with or without a token (len 0 = plain HELLO), so the
     * threaded connect, reconnect and event-loop paths all send it. out
     * needs KVMUX_HELLO_AUTH_MAX_LEN bytes. */
    size_t n = kvmux_session_encode_hello_auth(&c->session, out, name,
                                               (const uint8_t *)c->auth, c->auth_len);
    /* The session id (settings 9/10; a v1/v2 server ignores them). */
    return kvmux_hello_append_session(out, n, c->session_id);
}

int kvmux__handshake_reply(kvmux_client *c, const kvmux_frame *f) {
    int rc = kvmux_session_check_recv(&c->session, f);
    if (rc < 0)
        return kvmux__connect_fail(KVMUX_EPROTO, "unexpected %s frame in handshake: %s",
                                   kvmux_frame_type_name(f->type), kvmux_wire_error_name(-rc));
    if (f->type == KVMUX_FRAME_ERROR && f->code == KVMUX_ERR_AUTH)
        return kvmux__connect_fail(KVMUX_EAUTH, "server refused authentication: %.*s",
                                   (int)f->value_len, (const char *)f->value);
    if (f->type == KVMUX_FRAME_ERROR)
        return kvmux__connect_fail(f->code == KVMUX_ERR_UNSUPPORTED_VERSION ? KVMUX_ENOVERSION
                                                                            : KVMUX_EPROTO,
                                   "server refused HELLO: %s: %.*s",
                                   kvmux_wire_error_name(f->code), (int)f->value_len,
                                   (const char *)f->value);
    rc = kvmux_session_on_hello_ack(&c->session, f);
    if (rc == -KVMUX_ERR_UNSUPPORTED_VERSION)
        return kvmux__connect_fail(KVMUX_ENOVERSION, "server chose version %u, we speak %u..%u",
                                   f->code, KVMUX_PROTO_VERSION_MIN,
                                   c->session.max_version);
    if (rc < 0)
        return kvmux__connect_fail(KVMUX_EPROTO, "bad HELLO_ACK: %s", kvmux_wire_error_name(-rc));
    /* version, max_key, max_value and peer_max_frame are atomics, read
     * without the lock by kvmux__call_check's early pass and checked
     * again under it at admission (client_internal.h); written only when
     * the new server's settings differ. */
    if (c->version != c->session.version) c->version = c->session.version;
    c->info.protocol_version = c->session.version;
    c->info.max_frame_size = c->session.peer.max_frame_size;
    c->info.max_key_size = c->session.peer.max_key_size;
    c->info.max_value_size = c->session.peer.max_value_size;
    size_t nl = f->key_len < sizeof c->info.server_name ? f->key_len
                                                        : sizeof c->info.server_name - 1;
    if (nl) memcpy(c->info.server_name, f->key, nl);
    c->info.server_name[nl] = 0;

    uint32_t mk = c->session.peer.max_key_size;
    if (mk > KVMUX_MAX_KEY_LIMIT) mk = KVMUX_MAX_KEY_LIMIT;
    if (c->max_key != mk) c->max_key = mk;
    if (c->max_value != c->session.peer.max_value_size)
        c->max_value = c->session.peer.max_value_size;
    if (c->peer_max_frame != c->session.peer.max_frame_size)
        c->peer_max_frame = c->session.peer.max_frame_size;
    uint32_t credits = c->session.peer.max_outstanding;
    if (c->opts.max_outstanding && c->opts.max_outstanding < credits)
        credits = c->opts.max_outstanding;
    if (credits > KVMUX_CLIENT_MAX_SLOTS) credits = KVMUX_CLIENT_MAX_SLOTS;
    c->info.max_outstanding = credits;
    kvmux_rate_init(&c->cancel_rate, KVMUX_CLIENT_CANCEL_RATE, (uint64_t)kvmux__now_ms());
    kvmux__keepalive_rx(c, kvmux__now_ms()); /* the HELLO_ACK was a sign of life */
    rc = kvmux__pending_init(&c->pending, credits, c->opts.first_request_id);
    if (rc != 0)
        return kvmux__connect_fail(rc, "cannot allocate the pending table (%u slots)", credits);
    return 0;
}

/* Send HELLO, read HELLO_ACK (or ERROR) into c->rbuf and apply it, all
 * before deadline. Leftover bytes stay in c->rbuf. Returns 0 or a KVMUX_E*
 * (message recorded). */
int kvmux__connect_handshake(kvmux_client *c, const char *name, int64_t deadline) {
    uint8_t hello[KVMUX_HELLO_AUTH_MAX_LEN];
    size_t hlen = kvmux__hello_encode(c, name, hello);
    char eb[64];
    size_t sent = 0;
    if (c->tls) {
        int rc = kvmux__tls_write_sync(c, hello, hlen, deadline);
        if (rc != 0) return rc;
        sent = hlen;
    }
    while (sent < hlen) {
        ssize_t n = send(c->fd, hello + sent, hlen - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int ready = connect_poll(c->fd, POLLOUT, deadline);
            if (ready == 0) return kvmux__connect_fail(KVMUX_ETIMEDOUT, "handshake timed out (sending HELLO)");
            if (ready > 0) continue;
        }
        return kvmux__connect_fail(KVMUX_ECONNECT, "sending HELLO: %s", kvmux__errstr(errno, eb, sizeof eb));
    }

    for (;;) {
        kvmux_frame f;
        int n = kvmux_frame_decode(c->rbuf, c->rlen, c->opts.max_frame_size, &f);
        if (n < 0)
            return kvmux__connect_fail(KVMUX_EPROTO, "bad handshake reply: %s", kvmux_wire_error_name(-n));
        if (n > 0) {
            /* Under the lock: on a reconnect, callers read the negotiated
             * settings and the pending table concurrently. */
            pthread_mutex_lock(&c->mu);
            int rc = kvmux__handshake_reply(c, &f);
            pthread_mutex_unlock(&c->mu);
            if (rc != 0) return rc;
            memmove(c->rbuf, c->rbuf + n, c->rlen - (size_t)n);
            c->rlen -= (size_t)n;
            return 0;
        }
        if (c->rlen == c->rcap)
            return kvmux__connect_fail(KVMUX_EPROTO, "handshake reply larger than %zu bytes", c->rcap);
        if (c->tls) {
            ssize_t t = kvmux__tls_read_sync(c, c->rbuf + c->rlen, c->rcap - c->rlen, deadline);
            if (t < 0) return (int)t;
            c->rlen += (size_t)t;
            continue;
        }
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (r > 0) {
            c->rlen += (size_t)r;
            continue;
        }
        if (r == 0)
            return kvmux__connect_fail(KVMUX_ECONNECT, "server closed the connection during the handshake");
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int ready = connect_poll(c->fd, POLLIN, deadline);
            if (ready == 0) return kvmux__connect_fail(KVMUX_ETIMEDOUT, "handshake timed out (no HELLO_ACK)");
            if (ready > 0) continue;
        }
        return kvmux__connect_fail(KVMUX_ECONNECT, "handshake: %s", kvmux__errstr(errno, eb, sizeof eb));
    }
}

void kvmux__client_free(kvmux_client *c) {
    kvmux__async_release_all(c);
    kvmux__theap_deinit(&c->timers);
    kvmux__pending_deinit(&c->pending);
    kvmux__big_free_all(c);
    free(c->out.data);
    free(c->wbuf.data);
    free(c->rbuf);
    free(c->host);
    free(c->eps);
    kvmux__tls_free(c);
    if (c->fd >= 0) close(c->fd);
    pthread_cond_destroy(&c->conn_cond);
    pthread_cond_destroy(&c->writer_cond);
    pthread_cond_destroy(&c->slot_cond);
    pthread_cond_destroy(&c->queue_cond);
    pthread_cond_destroy(&c->idle_cond);
    pthread_cond_destroy(&c->disp_cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int kvmux__check_opts(const kvmux_options *o) {
    if (o->auth_token &&
        (!*o->auth_token || strnlen(o->auth_token, KVMUX_MAX_AUTH_TOKEN + 1) > KVMUX_MAX_AUTH_TOKEN))
        return kvmux__connect_fail(KVMUX_EINVAL, "auth_token must be 1..%u bytes",
                                   KVMUX_MAX_AUTH_TOKEN);
    if (o->connect_timeout_ms <= 0 || o->request_timeout_ms <= 0)
        return kvmux__connect_fail(KVMUX_EINVAL, "timeouts must be positive");
    if (o->queue_limit == 0 || o->queue_bytes_limit == 0)
        return kvmux__connect_fail(KVMUX_EINVAL, "queue limits must be positive");
    if (o->max_frame_size < KVMUX_MIN_FRAME)
        return kvmux__connect_fail(KVMUX_EINVAL, "max_frame_size below %u", KVMUX_MIN_FRAME);
    if (o->max_value_size > KVMUX_MAX_VALUE_LIMIT)
        return kvmux__connect_fail(KVMUX_EINVAL, "max_value_size above %u", KVMUX_MAX_VALUE_LIMIT);
    if (o->keepalive_interval_ms < 0 || o->keepalive_timeout_ms < 0 ||
        (o->keepalive_timeout_ms > 0 && o->keepalive_interval_ms == 0))
        return kvmux__connect_fail(KVMUX_EINVAL, "keepalive: timeout needs an interval, "
                                   "neither may be negative");
    if (o->reconnect < 0 || o->reconnect > 1 || o->reconnect_wait < 0 ||
        o->reconnect_wait > 1 || o->retry_reads < 0 || o->retry_reads > 1 ||
        (o->reconnect && (o->reconnect_min_backoff_ms <= 0 ||
                          o->reconnect_max_backoff_ms < o->reconnect_min_backoff_ms)))
        return kvmux__connect_fail(KVMUX_EINVAL, "reconnect: flags are 0 or 1, backoffs "
                                   "positive with min <= max");
    if (o->busy_poll_us > KVMUX__MAX_BUSY_POLL_US)
        return kvmux__connect_fail(KVMUX_EINVAL, "busy_poll_us above %u",
                                   KVMUX__MAX_BUSY_POLL_US);
    if (o->max_protocol_version > KVMUX__CLIENT_PROTO_MAX)
        return kvmux__connect_fail(KVMUX_EINVAL, "max_protocol_version above %u",
                                   KVMUX__CLIENT_PROTO_MAX);
    if (o->resend_writes < 0 || o->resend_writes > 1)
        return kvmux__connect_fail(KVMUX_EINVAL, "resend_writes is 0 or 1");
    if (o->no_sessions < 0 || o->no_sessions > 1)
        return kvmux__connect_fail(KVMUX_EINVAL, "no_sessions is 0 or 1");
    if (o->stale_reads < 0 || o->stale_reads > 1)
        return kvmux__connect_fail(KVMUX_EINVAL, "stale_reads is 0 or 1");
    if (o->cluster < 0 || o->cluster > 1)
        return kvmux__connect_fail(KVMUX_EINVAL, "cluster is 0 or 1");
    if (o->cluster && (o->cluster_max_redirects < 1 || o->cluster_max_redirects > 64))
        return kvmux__connect_fail(KVMUX_EINVAL, "cluster_max_redirects is 1..64");
    return 0;
}

kvmux_client *kvmux__client_new(const kvmux_options *o) {
    kvmux_client *c = calloc(1, sizeof *c);
    if (!c) {
        kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
        return NULL;
    }
    c->fd = -1;
    /* One wake chain per online CPU (call.c). */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->wake_chains = ncpu < 1 ? 1 : ncpu > KVMUX__MAX_WAKE_CHAINS ? KVMUX__MAX_WAKE_CHAINS : (int)ncpu;
    c->opts = *o;
    c->opts.client_name = NULL; /* borrowed: not kept past connect */
    c->opts.auth_token = NULL;  /* borrowed: copied (check_opts bounded it) */
    c->opts.tls_ca_file = c->opts.tls_ca_dir = NULL; /* borrowed: loaded by */
    c->opts.tls_cert_file = c->opts.tls_key_file = NULL; /* kvmux__tls_init */
    c->opts.tls_server_name = NULL;
    c->opts.endpoints = NULL;   /* borrowed: parsed into c->eps */
    if (o->auth_token) {
        c->auth_len = strlen(o->auth_token);
        memcpy(c->auth, o->auth_token, c->auth_len);
    }
    c->timer_at = INT64_MAX;
    c->parked_head = c->parked_tail = KVMUX__SLOT_NIL;
    c->disp_wake_at = INT64_MAX;
    kvmux__theap_init(&c->timers);
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        kvmux__connect_fail(KVMUX_ENOMEM, "pthread_mutex_init failed");
        return NULL;
    }
    pthread_cond_t *cvs[] = {&c->writer_cond, &c->slot_cond, &c->queue_cond, &c->idle_cond,
                             &c->disp_cond, &c->conn_cond};
    for (size_t i = 0; i < sizeof cvs / sizeof cvs[0]; i++) {
        if (kvmux__cond_init(cvs[i]) != 0) {
            while (i > 0) pthread_cond_destroy(cvs[--i]);
            pthread_mutex_destroy(&c->mu);
            free(c);
            kvmux__connect_fail(KVMUX_ENOMEM, "pthread_cond_init failed");
            return NULL;
        }
    }
    c->rcap = KVMUX_CLIENT_RBUF;
    c->rbuf = malloc(c->rcap);
    if (!c->rbuf) {
        kvmux__client_free(c);
        kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
        return NULL;
    }
    return c;
}

/* Start the writer and reader with every signal blocked in them. */
static int client_start_threads(kvmux_client *c) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&c->writer, NULL, kvmux__writer_main, c);
    if (rc == 0) {
        c->writer_running = 1;
        rc = pthread_create(&c->reader, NULL, kvmux__reader_main, c);
        if (rc != 0) {
            pthread_mutex_lock(&c->mu);
            kvmux__client_fail(c, KVMUX_ENOMEM, "cannot start the reader thread");
            pthread_mutex_unlock(&c->mu);
            pthread_join(c->writer, NULL);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0 ? 0 : kvmux__connect_fail(KVMUX_ENOMEM, "cannot start client threads");
}

/* Connect c to host:port and handshake (c->fd set): blocking, within
 * connect_timeout_ms. Returns 0, or a KVMUX_E* (message recorded; c->fd
 * closed and -1, the pending table dropped). */
static int client_connect_one(kvmux_client *c, const char *host, uint16_t port,
                              const char *name) {
    int64_t deadline = kvmux__now_ms() + c->opts.connect_timeout_ms;
    int fd = kvmux__connect_socket(host, port, deadline);
    if (fd < 0) return fd;
    c->fd = fd;
    int rc = c->tls ? kvmux__tls_handshake(c, fd, deadline) : 0;
    if (rc == 0) rc = kvmux__connect_handshake(c, name, deadline);
    if (rc == 0) {
        /* The threads use blocking I/O; kvmux__client_fail's shutdown() is
         * what unblocks them. */
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
            rc = kvmux__connect_fail(KVMUX_ECONNECT, "fcntl failed");
    }
    if (rc != 0) {
        kvmux__pending_deinit(&c->pending); /* a HELLO_ACK may have built it */
        close(fd);
        c->fd = -1;
    }
    return rc;
}

/* Endpoints mode (failover.c): parse the list, turn automatic reconnect on
 * and give c the buffer its reconnect target is written into. Returns 0
 * or a KVMUX_E* (message recorded). */
static int client_failover_init(kvmux_client *c, const char *endpoints) {
    int rc = kvmux__endpoints_parse(endpoints, &c->eps, &c->neps);
    if (rc != 0) return rc;
    kvmux__session_init(c);
    c->opts.reconnect = 1;
    c->host = calloc(1, KVMUX__HOST_MAX + 1);
    if (!c->host) return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
    return 0;
}

int kvmux_connect(kvmux_client **out, const char *host, uint16_t port,
                  const kvmux_options *opts) {
    connect_err_code = 0;
    connect_err_msg[0] = 0;
    kvmux_options o;
    int rc = kvmux__options_import(&o, opts);
    if (rc == 0 && !o.endpoints && (!out || !host || !*host || port == 0))
        return kvmux__connect_fail(KVMUX_EINVAL, "out, host and port are required");
    if (rc == 0 && !out) return kvmux__connect_fail(KVMUX_EINVAL, "out is required");
    if (rc == 0) rc = kvmux__check_opts(&o);
    if (rc != 0) return rc;
    if (o.cluster) return kvmux__cluster_connect(out, host, port, &o);

    kvmux_client *c = kvmux__client_new(&o);
    if (!c) return KVMUX_ENOMEM;
    c->mode = KVMUX__MODE_THREADED;
    if (o.endpoints) {
        rc = client_failover_init(c, o.endpoints);
        if (rc != 0) {
            kvmux__client_free(c);
            return rc;
        }
        host = c->eps[0].host; /* the TLS name, unless tls_server_name */
    } else if (o.reconnect) {
        c->host = strdup(host);
        c->port = port;
        if (!c->host) {
            kvmux__client_free(c);
            return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
        }
    }

    if (o.tls && (rc = kvmux__tls_init(c, &o, host)) != 0) {
        kvmux__client_free(c);
        return rc;
    }

    if (c->eps) {
        /* Each endpoint in order until one answers; a follower's first
         * NOT_LEADER then leads to the leader. */
        rc = KVMUX_ECONNECT;
        for (uint32_t i = 0; i < c->neps; i++) {
            rc = client_connect_one(c, c->eps[i].host, c->eps[i].port, o.client_name);
            if (rc == 0) {
                c->ep_cur = i;
                break;
            }
            if (rc == KVMUX_EAUTH || rc == KVMUX_ENOMEM) break; /* the same everywhere */
        }
    } else {
        rc = client_connect_one(c, host, port, o.client_name);
    }
    if (rc != 0) {
        kvmux__client_free(c);
        return rc;
    }
    rc = client_start_threads(c);
    if (rc != 0) {
        kvmux__client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* The drain pass's argument. */
typedef struct client_fail_arg {
    kvmux_client *c;
    int code;
    int retry_reads;               /* GET/PING of sync callers: resend */
    int failover;                  /* endpoints mode: failover.c decides */
} client_fail_arg;

/* Complete one WAITING slot with the fatal code (drain pass). */
static void client_fail_slot(kvmux__slot *s, void *arg) {
    const client_fail_arg *a = arg;
    if (a->failover) {
        /* Reads resent, writes KVMUX_EUNKNOWN (or resent). */
        kvmux__failover_slot_lost(a->c, s);
        return;
    }
    /* A fragmented reply cut short: its partial value goes with the slot
     * (kvmux__slot_finish frees it). */
    int result = a->code;
    if (a->retry_reads && s->owner == KVMUX__OWNER_CALL &&
        (s->op == KVMUX_GET || s->op == KVMUX_PING))
        result = KVMUX__ERETRY;
    kvmux__slot_finish(a->c, s, result, NULL, NULL);
}

void kvmux__client_fail(kvmux_client *c, int code, const char *fmt, ...) {
    if (c->fatal != 0) return;
    c->fatal = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fatal_msg, sizeof c->fatal_msg, fmt, ap);
    va_end(ap);
    /* With automatic reconnect the loss is not terminal: what was in
     * flight gets KVMUX_ECLOSED (whatever the cause, which stays in
     * fatal_msg), and the backlog (never sent) waits for the next
     * connection. */
    int reconn = kvmux__reconnecting(c);
    int failover = reconn && kvmux__failover_on(c);
    if (failover) kvmux__failover_lost(c); /* choose the next target */
    client_fail_arg a = {c, reconn ? KVMUX_ECLOSED : code, reconn && c->opts.retry_reads,
                         failover};
    kvmux__pending_each_waiting(&c->pending, client_fail_slot, &a);
    /* Every blocking caller completed so far is woken now, lock held:
     * whoever failed the connection may not be the reader, which is the
     * only one that wakes after unlocking. */
    kvmux__callwait *wake = c->wake_head;
    c->wake_head = NULL;
    kvmux__call_wake_all(wake);
    if (!reconn) kvmux__async_fail(c, code);
    pthread_cond_broadcast(&c->conn_cond);
    pthread_cond_broadcast(&c->slot_cond);
    pthread_cond_broadcast(&c->queue_cond);
    pthread_cond_signal(&c->writer_cond);
    /* The fd stays open (closed only after both threads are joined), so
     * this can never hit a reused descriptor. */
    if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
    if (c->mode == KVMUX__MODE_LOOP) kvmux__loop_on_fail(c);
}

/* Under c->mu: c is closing; everything in flight or waiting fails with
 * KVMUX_ECLOSED. With reconnect, the connection may have been lost
 * earlier (fail then does nothing): fail the backlog kept for the next
 * connection, wake the callers waiting for it and the backoff sleep, and
 * unblock a handshake in progress. */
static void client_begin_close(kvmux_client *c) {
    c->closing = 1;
    kvmux__client_fail(c, KVMUX_ECLOSED, "closed by kvmux_close");
    if (c->opts.reconnect) {
        kvmux__async_fail(c, KVMUX_ECLOSED);
        pthread_cond_broadcast(&c->conn_cond);
        pthread_cond_broadcast(&c->slot_cond);
        pthread_cond_broadcast(&c->queue_cond);
        if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
    }
}

void kvmux__client_shutdown(kvmux_client *c) {
    pthread_mutex_lock(&c->mu);
    client_begin_close(c);
    pthread_mutex_unlock(&c->mu);
}

void kvmux_close(kvmux_client *c) {
    if (!c) return;
    if (c->mode == KVMUX__MODE_LOOP) {
        kvmux__loop_close(c); /* a cluster handle's too */
        return;
    }
    if (c->router) {
        kvmux__cluster_close(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    client_begin_close(c);
    if (kvmux__disp_close(c)) {
        /* Called from one of c's callbacks: the completion thread finishes
         * the close when the callback returns. */
        pthread_mutex_unlock(&c->mu);
        return;
    }
    /* Every caller inside the library has been woken with a fatal code and
     * leaves without blocking again, so this wait is short. */
    while (c->active > 0) pthread_cond_wait(&c->idle_cond, &c->mu);
    pthread_mutex_unlock(&c->mu);
    /* With reconnect the reader owns the writer (it restarts it per
     * connection) and joins it before it exits. */
    if (!c->opts.reconnect) pthread_join(c->writer, NULL);
    pthread_join(c->reader, NULL);
    kvmux__disp_join(c); /* after it has run every callback still owed */
    kvmux__client_free(c);
}

int kvmux_connection_error(kvmux_client *c, char *msg, size_t msg_len) {
    int code;
    if (!c) {
        code = connect_err_code;
        if (msg && msg_len) snprintf(msg, msg_len, "%s", connect_err_msg);
        return code;
    }
    pthread_mutex_lock(&c->mu);
    /* Event-loop reconnect: while an attempt runs, the loss it follows. */
    code = c->fatal ? c->fatal : c->down_code;
    if (msg && msg_len) snprintf(msg, msg_len, "%s", code ? c->fatal_msg : "");
    pthread_mutex_unlock(&c->mu);
    return code;
}

void kvmux_get_server_info(kvmux_client *c, kvmux_server_info *info) {
    if (!info) return;
    if (!c) {
        memset(info, 0, sizeof *info);
        return;
    }
    pthread_mutex_lock(&c->mu); /* a reconnect replaces it */
    *info = c->info;
    pthread_mutex_unlock(&c->mu);
}
