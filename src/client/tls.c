/* libkvmux TLS transport over memory BIOs (contracts and the threading
 * design in tls.h; docs/DESIGN.md "Transport: TLS"). */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "client_internal.h"
#include "clock.h"

#ifdef KVMUX_HAVE_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls_common.h"
#include <openssl/x509v3.h>

/* Ciphertext read per recv(2): several full records. */
#define TLS_RBUF (64u * 1024)
/* Plaintext encrypted per lock section by the writer: the longest the
 * reader can wait for the SSL mutex is one such encryption. */
#define TLS_WCHUNK (64u * 1024)

struct kvmux__tls {
    SSL_CTX *ctx;                  /* immutable after init */
    char *name;                    /* SNI / verified name; immutable */
    int name_is_ip;
    int verify;
    pthread_mutex_t mu;            /* guards ssl and its two BIOs */
    SSL *ssl;                      /* NULL between connections */
    BIO *in;                       /* network -> OpenSSL (owned by ssl) */
    BIO *out;                      /* OpenSSL -> network (owned by ssl) */
    atomic_int out_pending;        /* reader left ciphertext in out */
    uint8_t *rbuf;                 /* reader: ciphertext from recv */
    uint8_t *wbuf;                 /* writer: ciphertext to send */
    size_t wcap;
    /* Event-loop mode (one thread, no lock contention): ciphertext
     * waiting for the socket to take it, and the first byte the server
     * sent in the handshake (-1 none yet), to name a plaintext server. */
    uint8_t *lq;
    size_t lq_off, lq_len, lq_cap;
    int first;
};

int kvmux__tls_init(kvmux_client *c, const kvmux_options *o, const char *host) {
    if (o->tls_verify < 0 || o->tls_verify > 1 || o->tls != 1)
        return kvmux__connect_fail(KVMUX_EINVAL, "tls and tls_verify are 0 or 1");
    if (!o->tls_cert_file != !o->tls_key_file)
        return kvmux__connect_fail(KVMUX_EINVAL, "tls_cert_file and tls_key_file go together");
    const char *name = o->tls_server_name ? o->tls_server_name : host;
    kvmux__tls *t = calloc(1, sizeof *t);
    if (!t) return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
    t->verify = o->tls_verify;
    t->name = strdup(name);
    t->rbuf = malloc(TLS_RBUF);
    if (!t->name || !t->rbuf || pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t->name);
        free(t->rbuf);
        free(t);
        return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
    }
    unsigned char ip[16];
    t->name_is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    c->tls = t; /* from here kvmux__tls_free cleans up */
    char rb[256];
    t->ctx = kvmux__tls_ctx_new(TLS_client_method(), 0);
    if (!t->ctx)
        return kvmux__connect_fail(KVMUX_ETLS, "TLS: cannot create a context: %s",
                                   kvmux__tls_reason(rb, sizeof rb));
    SSL_CTX_set_verify(t->ctx, t->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (t->verify) {
        int ok = (o->tls_ca_file || o->tls_ca_dir)
                     ? SSL_CTX_load_verify_locations(t->ctx, o->tls_ca_file, o->tls_ca_dir)
                     : SSL_CTX_set_default_verify_paths(t->ctx);
        if (ok != 1)
            return kvmux__connect_fail(KVMUX_ETLS, "TLS: cannot load the CA %s %s: %s",
                                       o->tls_ca_file ? "file" : "directory",
                                       o->tls_ca_file ? o->tls_ca_file
                                       : o->tls_ca_dir ? o->tls_ca_dir : "(system default)",
                                       kvmux__tls_reason(rb, sizeof rb));
    }
    if (o->tls_cert_file) {
        if (SSL_CTX_use_certificate_chain_file(t->ctx, o->tls_cert_file) != 1)
            return kvmux__connect_fail(KVMUX_ETLS, "TLS: client certificate %s: %s",
                                       o->tls_cert_file, kvmux__tls_reason(rb, sizeof rb));
        if (SSL_CTX_use_PrivateKey_file(t->ctx, o->tls_key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(t->ctx) != 1)
            return kvmux__connect_fail(KVMUX_ETLS, "TLS: client key %s: %s", o->tls_key_file,
                                       kvmux__tls_reason(rb, sizeof rb));
    }
    return 0;
}

void kvmux__tls_reset(kvmux_client *c) {
    kvmux__tls *t = c->tls;
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    SSL_free(t->ssl); /* frees both BIOs */
    t->ssl = NULL;
    t->in = t->out = NULL;
    atomic_store(&t->out_pending, 0);
    pthread_mutex_unlock(&t->mu);
}

void kvmux__tls_free(kvmux_client *c) {
    kvmux__tls *t = c->tls;
    if (!t) return;
    kvmux__tls_reset(c);
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->mu);
    free(t->name);
    free(t->rbuf);
    free(t->wbuf);
    free(t->lq);
    free(t);
    c->tls = NULL;
}

/* Wait (poll) until fd is ready for events or the deadline passes:
 * 1 ready, 0 timed out, -1 error (errno). */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        int64_t left = deadline - kvmux__now_ms();
        if (left <= 0) return 0;
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return -1;
    }
}

/* Take the ciphertext OpenSSL produced into t->wbuf (lock held).
 * Returns its length, or (size_t)-1 when out of memory. */
static size_t take_out(kvmux__tls *t) {
    size_t n = BIO_ctrl_pending(t->out);
    if (n > t->wcap) {
        uint8_t *p = realloc(t->wbuf, n);
        if (!p) return (size_t)-1;
        t->wbuf = p;
        t->wcap = n;
    }
    if (n) BIO_read(t->out, t->wbuf, (int)n);
    atomic_store(&t->out_pending, 0);
    return n;
}

/* Send p[0..n) on fd, retrying EINTR. With wait set (a non-blocking fd),
 * EAGAIN waits for POLLOUT until deadline; without, EAGAIN is an error.
 * Returns 0 when all is sent, 1 when the deadline passed, -1 with errno
 * set otherwise (send's or poll's). */
static int send_fd(int fd, const uint8_t *p, size_t n, int wait, int64_t deadline) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (wait && w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r > 0) continue;
            if (r == 0) return 1;
        }
        return -1;
    }
    return 0;
}

/* Send p[0..n) on the non-blocking fd before deadline (connect phase).
 * Returns 0 or a KVMUX_E* (message recorded). */
static int send_sync(int fd, const uint8_t *p, size_t n, int64_t deadline) {
    char eb[64];
    int r = send_fd(fd, p, n, 1, deadline);
    if (r == 0) return 0;
    if (r > 0) return kvmux__connect_fail(KVMUX_ETIMEDOUT, "TLS handshake timed out");
    return kvmux__connect_fail(KVMUX_ECONNECT, "TLS handshake: send: %s",
                               kvmux__errstr(errno, eb, sizeof eb));
}

/* Send whatever OpenSSL has produced (connect phase, one thread). */
static int flush_sync(kvmux_client *c, int fd, int64_t deadline) {
    kvmux__tls *t = c->tls;
    pthread_mutex_lock(&t->mu);
    size_t n = take_out(t);
    pthread_mutex_unlock(&t->mu);
    if (n == (size_t)-1) return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
    return send_sync(fd, t->wbuf, n, deadline);
}

/* recv ciphertext into t->rbuf and hand it to OpenSSL (connect phase).
 * Returns the byte count (> 0) or a KVMUX_E* (message recorded). */
static int feed_sync(kvmux_client *c, int fd, int64_t deadline, const char *phase) {
    kvmux__tls *t = c->tls;
    char eb[64];
    for (;;) {
        ssize_t n = recv(fd, t->rbuf, TLS_RBUF, 0);
        if (n > 0) {
            pthread_mutex_lock(&t->mu);
            BIO_write(t->in, t->rbuf, (int)n);
            pthread_mutex_unlock(&t->mu);
            return (int)n;
        }
        if (n == 0)
            return kvmux__connect_fail(KVMUX_ECONNECT, "server closed the connection during "
                                       "the %s", phase);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int r = wait_fd(fd, POLLIN, deadline);
            if (r > 0) continue;
            if (r == 0) return kvmux__connect_fail(KVMUX_ETIMEDOUT, "%s timed out", phase);
        }
        return kvmux__connect_fail(KVMUX_ECONNECT, "%s: recv: %s", phase,
                                   kvmux__errstr(errno, eb, sizeof eb));
    }
}

/* A fresh SSL object between two memory BIOs for c->tls (the previous
 * session dropped), the server name set for SNI and verification.
 * Returns 0 or KVMUX_ENOMEM / KVMUX_ETLS (message recorded). */
static int session_new(kvmux_client *c) {
    kvmux__tls *t = c->tls;
    kvmux__tls_reset(c);
    char rb[256];
    ERR_clear_error();
    SSL *ssl = SSL_new(t->ctx);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    if (!ssl || !in || !out) {
        SSL_free(ssl);
        BIO_free(in);
        BIO_free(out);
        ERR_clear_error();
        return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory for TLS");
    }
    /* An empty input BIO means "wait for more", not end of stream. */
    BIO_set_mem_eof_return(in, -1);
    BIO_set_mem_eof_return(out, -1);
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
    if (!t->name_is_ip) SSL_set_tlsext_host_name(ssl, t->name);
    if (t->verify) {
        int ok = t->name_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->name)
                               : SSL_set1_host(ssl, t->name);
        if (ok != 1) {
            SSL_free(ssl);
            return kvmux__connect_fail(KVMUX_ETLS, "TLS: cannot verify the name '%s': %s",
                                       t->name, kvmux__tls_reason(rb, sizeof rb));
        }
    }
    pthread_mutex_lock(&t->mu);
    t->ssl = ssl;
    t->in = in;
    t->out = out;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

/* The KVMUX_ETLS of a handshake that OpenSSL refused (e: its
 * SSL_get_error class, rb: its reason, first: the first byte the server
 * sent, -1 none): a plaintext server, a certificate, or the reason. */
static int handshake_error(kvmux__tls *t, int first, const char *rb) {
    if (first == KVMUX_MAGIC)
        return kvmux__connect_fail(KVMUX_ETLS, "TLS handshake failed: the server does not "
                                   "speak TLS on this port (it answered in plaintext kvmux)");
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK)
        return kvmux__connect_fail(KVMUX_ETLS, "TLS handshake failed: certificate verify "
                                   "failed: %s (server name '%s')",
                                   X509_verify_cert_error_string(vr), t->name);
    return kvmux__connect_fail(KVMUX_ETLS, "TLS handshake failed: %s", rb);
}

int kvmux__tls_handshake(kvmux_client *c, int fd, int64_t deadline) {
    kvmux__tls *t = c->tls;
    char rb[256];
    int rc0 = session_new(c);
    if (rc0 != 0) return rc0;
    SSL *ssl = t->ssl;

    int first = -1; /* first byte the server sent */
    for (;;) {
        pthread_mutex_lock(&t->mu);
        ERR_clear_error();
        int r = SSL_do_handshake(ssl);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
        if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL) kvmux__tls_reason(rb, sizeof rb);
        pthread_mutex_unlock(&t->mu);
        /* Our flight (or an alert) goes out first, whatever the result. */
        int rc = flush_sync(c, fd, deadline);
        if (rc != 0 && e != SSL_ERROR_SSL) return rc;
        if (r == 1) return 0;
        if (e == SSL_ERROR_WANT_READ) {
            size_t before = first < 0 ? 0 : 1;
            int n = feed_sync(c, fd, deadline, "TLS handshake");
            if (n < 0) {
                if (n == KVMUX_ECONNECT && first < 0)
                    return kvmux__connect_fail(KVMUX_ETLS, "TLS handshake failed: the server "
                                               "closed the connection (not a TLS port?)");
                return n;
            }
            if (!before) first = t->rbuf[0];
            continue;
        }
        return handshake_error(t, first, rb);
    }
}

int kvmux__tls_write_sync(kvmux_client *c, const void *p, size_t n, int64_t deadline) {
    kvmux__tls *t = c->tls;
    char rb[256];
    pthread_mutex_lock(&t->mu);
    ERR_clear_error();
    int r = SSL_write(t->ssl, p, (int)n); /* memory BIO: all of it, or an error */
    if (r <= 0) kvmux__tls_reason(rb, sizeof rb);
    pthread_mutex_unlock(&t->mu);
    if (r <= 0) return kvmux__connect_fail(KVMUX_ETLS, "TLS: sending HELLO: %s", rb);
    return flush_sync(c, c->fd, deadline);
}

/* SSL_read up to cap bytes into p; the caller holds t->mu. Stores the
 * SSL_get_error class in *e (SSL_ERROR_NONE when r > 0) and, for
 * SSL_ERROR_SSL / SSL_ERROR_SYSCALL, the reason in rb. Returns SSL_read's
 * result. */
static int read_locked(kvmux__tls *t, void *p, size_t cap, int *e, char *rb, size_t rblen) {
    ERR_clear_error();
    int r = SSL_read(t->ssl, p, cap > INT_MAX ? INT_MAX : (int)cap);
    *e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    if (*e == SSL_ERROR_SSL || *e == SSL_ERROR_SYSCALL) kvmux__tls_reason(rb, rblen);
    return r;
}

ssize_t kvmux__tls_read_sync(kvmux_client *c, void *p, size_t cap, int64_t deadline) {
    kvmux__tls *t = c->tls;
    char rb[256];
    for (;;) {
        pthread_mutex_lock(&t->mu);
        int e;
        int r = read_locked(t, p, cap, &e, rb, sizeof rb);
        pthread_mutex_unlock(&t->mu);
        int rc = flush_sync(c, c->fd, deadline); /* post-handshake replies */
        if (rc != 0) return rc;
        if (r > 0) return r;
        if (e == SSL_ERROR_WANT_READ) {
            int n = feed_sync(c, c->fd, deadline, "handshake (no HELLO_ACK)");
            if (n < 0) return n;
            continue;
        }
        if (e == SSL_ERROR_ZERO_RETURN)
            return kvmux__connect_fail(KVMUX_ECONNECT,
                                       "server closed the connection during the handshake");
        /* e.g. TLS 1.3: the server checks our certificate after our side
         * of the handshake finished, and its alert arrives here. */
        return kvmux__connect_fail(KVMUX_ETLS, "TLS: %s", rb);
    }
}

ssize_t kvmux__tls_recv(kvmux_client *c, void *buf, size_t cap) {
    kvmux__tls *t = c->tls;
    char rb[256];
    for (;;) {
        pthread_mutex_lock(&t->mu);
        int e;
        int r = read_locked(t, buf, cap, &e, rb, sizeof rb);
        int produced = BIO_ctrl_pending(t->out) > 0;
        pthread_mutex_unlock(&t->mu);
        if (produced) {
            /* A post-handshake answer: the writer sends it, in order. */
            atomic_store(&t->out_pending, 1);
            pthread_mutex_lock(&c->mu);
            kvmux__writer_kick(c);
            pthread_mutex_unlock(&c->mu);
        }
        if (r > 0) return r;
        if (e == SSL_ERROR_WANT_READ) {
            ssize_t n = recv(c->fd, t->rbuf, TLS_RBUF, 0);
            if (n > 0) {
                pthread_mutex_lock(&t->mu);
                BIO_write(t->in, t->rbuf, (int)n);
                pthread_mutex_unlock(&t->mu);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            return n; /* 0: EOF without close_notify; -1: errno */
        }
        if (e == SSL_ERROR_ZERO_RETURN) return 0; /* close_notify */
        pthread_mutex_lock(&c->mu);
        kvmux__client_fail(c, KVMUX_ETLS, "TLS: %s", rb);
        pthread_mutex_unlock(&c->mu);
        errno = EPROTO;
        return -1;
    }
}

int kvmux__tls_buffered(kvmux_client *c) {
    kvmux__tls *t = c->tls;
    pthread_mutex_lock(&t->mu);
    int b = t->ssl && (SSL_pending(t->ssl) > 0 || BIO_ctrl_pending(t->in) > 0);
    pthread_mutex_unlock(&t->mu);
    return b;
}

int kvmux__tls_out_pending(const kvmux_client *c) {
    return atomic_load(&c->tls->out_pending);
}

/* Send p[0..n) on the blocking fd. 0 or KVMUX_ECLOSED / KVMUX_EIO
 * (errno preserved). */
static int send_all(int fd, const uint8_t *p, size_t n) {
    if (send_fd(fd, p, n, 0, 0) == 0) return 0;
    return errno == EPIPE || errno == ECONNRESET ? KVMUX_ECLOSED : KVMUX_EIO;
}

/* Encrypt p[0..n) (n may be 0) and take the ciphertext out, under the
 * mutex; then send it without. */
static int seal_and_send(kvmux_client *c, const uint8_t *p, size_t n) {
    kvmux__tls *t = c->tls;
    char rb[256];
    pthread_mutex_lock(&t->mu);
    int r = 1;
    if (n) {
        ERR_clear_error();
        r = SSL_write(t->ssl, p, (int)n);
        if (r <= 0) kvmux__tls_reason(rb, sizeof rb);
    }
    size_t len = r > 0 ? take_out(t) : 0;
    pthread_mutex_unlock(&t->mu);
    if (r <= 0) {
        pthread_mutex_lock(&c->mu);
        kvmux__client_fail(c, KVMUX_ETLS, "TLS: %s", rb);
        pthread_mutex_unlock(&c->mu);
        return KVMUX_ETLS;
    }
    if (len == (size_t)-1) {
        errno = ENOMEM;
        return KVMUX_EIO;
    }
    return send_all(c->fd, t->wbuf, len);
}

int kvmux__tls_send_all(kvmux_client *c, const struct iovec *iov, int n) {
    if (n == 0) return seal_and_send(c, NULL, 0);
    for (int i = 0; i < n; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left > 0) {
            size_t k = left < TLS_WCHUNK ? left : TLS_WCHUNK;
            int rc = seal_and_send(c, p, k);
            if (rc != 0) return rc;
            p += k;
            left -= k;
        }
    }
    return 0;
}

/* ---- event-loop mode (loop.c): the loop thread only ----
 *
 * The same memory-BIO session as threaded mode, driven by readiness
 * instead of blocking: OpenSSL's WANT_READ means "the input BIO is
 * empty", answered by recv()ing what the socket has (none: wait for the
 * read event, which the loop always watches); what OpenSSL writes goes
 * to the output BIO, whose bytes are moved to t->lq, and t->lq not empty
 * is the write interest (a memory BIO never says WANT_WRITE: the socket's
 * EAGAIN is the real "want write"). */

/* Move the output BIO's ciphertext to the end of t->lq. Returns 0 or
 * KVMUX_ENOMEM. */
static int lq_take(kvmux__tls *t) {
    size_t n = BIO_ctrl_pending(t->out);
    if (n == 0) return 0;
    if (t->lq_off > 0 && t->lq_off == t->lq_len) t->lq_off = t->lq_len = 0;
    if (t->lq_len + n > t->lq_cap) {
        if (t->lq_off > 0) { /* compact first */
            memmove(t->lq, t->lq + t->lq_off, t->lq_len - t->lq_off);
            t->lq_len -= t->lq_off;
            t->lq_off = 0;
        }
        size_t cap = t->lq_cap ? t->lq_cap : 16384;
        while (cap < t->lq_len + n) cap *= 2;
        if (cap > t->lq_cap) {
            uint8_t *p = realloc(t->lq, cap);
            if (!p) return KVMUX_ENOMEM;
            t->lq = p;
            t->lq_cap = cap;
        }
    }
    BIO_read(t->out, t->lq + t->lq_len, (int)n);
    t->lq_len += n;
    return 0;
}

size_t kvmux__tls_loop_queued(const kvmux_client *c) {
    return c->tls ? c->tls->lq_len - c->tls->lq_off : 0;
}

int kvmux__tls_loop_flush(kvmux_client *c) {
    kvmux__tls *t = c->tls;
    while (t->lq_off < t->lq_len) {
        ssize_t n = send(c->fd, t->lq + t->lq_off, t->lq_len - t->lq_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            t->lq_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        return -1;
    }
    t->lq_off = t->lq_len = 0;
    /* A large round's ciphertext is not kept for the connection's life. */
    if (t->lq_cap > 4 * TLS_WCHUNK) {
        free(t->lq);
        t->lq = NULL;
        t->lq_cap = 0;
    }
    return 0;
}

int kvmux__tls_loop_start(kvmux_client *c) {
    int rc = session_new(c);
    if (rc != 0) return rc;
    c->tls->first = -1;
    c->tls->lq_off = c->tls->lq_len = 0;
    return kvmux__tls_loop_handshake(c);
}

int kvmux__tls_loop_handshake(kvmux_client *c) {
    kvmux__tls *t = c->tls;
    char rb[256], eb[64];
    rb[0] = 0;
    for (;;) {
        ERR_clear_error();
        int r = SSL_do_handshake(t->ssl);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL) kvmux__tls_reason(rb, sizeof rb);
        /* Our flight (or an alert) is queued first, whatever the result. */
        if (lq_take(t) != 0) return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory for TLS");
        if (r == 1) return 1;
        if (e != SSL_ERROR_WANT_READ) return handshake_error(t, t->first, rb);
        ssize_t n = recv(c->fd, t->rbuf, TLS_RBUF, MSG_DONTWAIT);
        if (n > 0) {
            if (t->first < 0) t->first = t->rbuf[0];
            BIO_write(t->in, t->rbuf, (int)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n == 0 && t->first < 0)
            return kvmux__connect_fail(KVMUX_ETLS, "TLS handshake failed: the server "
                                       "closed the connection (not a TLS port?)");
        if (n == 0)
            return kvmux__connect_fail(KVMUX_ECONNECT, "server closed the connection during "
                                       "the TLS handshake");
        return kvmux__connect_fail(KVMUX_ECONNECT, "TLS handshake: recv: %s",
                                   kvmux__errstr(errno, eb, sizeof eb));
    }
}

ssize_t kvmux__tls_loop_recv(kvmux_client *c, void *buf, size_t cap) {
    kvmux__tls *t = c->tls;
    char rb[256];
    for (;;) {
        int e;
        int r = read_locked(t, buf, cap, &e, rb, sizeof rb);
        if (BIO_ctrl_pending(t->out) > 0) {
            /* A post-handshake answer (TLS 1.3 KeyUpdate): queued in
             * order with the records, sent when the socket is writable. */
            if (lq_take(t) != 0) {
                e = SSL_ERROR_SSL;
                snprintf(rb, sizeof rb, "out of memory");
            } else {
                kvmux__loop_want_write(c);
            }
        }
        if (r > 0 && e == SSL_ERROR_NONE) return r;
        if (e == SSL_ERROR_WANT_READ) {
            ssize_t n = recv(c->fd, t->rbuf, TLS_RBUF, MSG_DONTWAIT);
            if (n > 0) {
                BIO_write(t->in, t->rbuf, (int)n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            return n; /* 0: EOF without close_notify; -1: errno (EAGAIN: wait) */
        }
        if (e == SSL_ERROR_ZERO_RETURN) return 0; /* close_notify */
        pthread_mutex_lock(&c->mu);
        kvmux__client_fail(c, KVMUX_ETLS, "TLS: %s", rb);
        pthread_mutex_unlock(&c->mu);
        errno = EPROTO;
        return -1;
    }
}

int kvmux__tls_loop_seal(kvmux_client *c, const struct iovec *iov, int n) {
    kvmux__tls *t = c->tls;
    char rb[256];
    for (int i = 0; i < n; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left > 0) {
            size_t k = left < TLS_WCHUNK ? left : TLS_WCHUNK;
            ERR_clear_error();
            int r = SSL_write(t->ssl, p, (int)k); /* memory BIO: all of it, or an error */
            if (r <= 0) {
                kvmux__tls_reason(rb, sizeof rb);
                kvmux__client_fail(c, KVMUX_ETLS, "TLS: %s", rb);
                return KVMUX_ETLS;
            }
            if (lq_take(t) != 0) {
                kvmux__client_fail(c, KVMUX_ENOMEM, "out of memory for TLS records");
                return KVMUX_ENOMEM;
            }
            p += k;
            left -= k;
        }
    }
    return 0;
}

#else /* !KVMUX_HAVE_TLS */

int kvmux__tls_init(kvmux_client *c, const kvmux_options *o, const char *host) {
    (void)c, (void)o, (void)host;
    return kvmux__connect_fail(KVMUX_EINVAL, "tls: libkvmux was built without TLS "
                               "(configure with -DKVMUX_WITH_TLS=ON and OpenSSL, libssl-dev)");
}
void kvmux__tls_free(kvmux_client *c) { (void)c; }
int kvmux__tls_handshake(kvmux_client *c, int fd, int64_t deadline) {
    (void)c, (void)fd, (void)deadline;
    return KVMUX_EINVAL;
}
int kvmux__tls_write_sync(kvmux_client *c, const void *p, size_t n, int64_t deadline) {
    (void)c, (void)p, (void)n, (void)deadline;
    return KVMUX_EINVAL;
}
ssize_t kvmux__tls_read_sync(kvmux_client *c, void *p, size_t cap, int64_t deadline) {
    (void)c, (void)p, (void)cap, (void)deadline;
    return KVMUX_EINVAL;
}
ssize_t kvmux__tls_recv(kvmux_client *c, void *buf, size_t cap) {
    (void)c, (void)buf, (void)cap;
    errno = EPROTO;
    return -1;
}
int kvmux__tls_buffered(kvmux_client *c) { (void)c; return 0; }
int kvmux__tls_send_all(kvmux_client *c, const struct iovec *iov, int n) {
    (void)c, (void)iov, (void)n;
    return KVMUX_EIO;
}
int kvmux__tls_out_pending(const kvmux_client *c) { (void)c; return 0; }
void kvmux__tls_reset(kvmux_client *c) { (void)c; }
size_t kvmux__tls_loop_queued(const kvmux_client *c) { (void)c; return 0; }
int kvmux__tls_loop_flush(kvmux_client *c) { (void)c; return -1; }
int kvmux__tls_loop_start(kvmux_client *c) { (void)c; return KVMUX_EINVAL; }
int kvmux__tls_loop_handshake(kvmux_client *c) { (void)c; return KVMUX_EINVAL; }
ssize_t kvmux__tls_loop_recv(kvmux_client *c, void *buf, size_t cap) {
    (void)c, (void)buf, (void)cap;
    errno = EPROTO;
    return -1;
}
int kvmux__tls_loop_seal(kvmux_client *c, const struct iovec *iov, int n) {
    (void)c, (void)iov, (void)n;
    return KVMUX_EIO;
}

#endif
