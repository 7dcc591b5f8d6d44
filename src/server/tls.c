/* kvmuxd TLS transport: OpenSSL on the connection's non-blocking socket
 * (contracts in tls.h; design in docs/DESIGN.md "Transport: TLS").
 *
 * Why a socket BIO here and memory BIOs in the client: a server connection
 * is touched by one loop thread only, so OpenSSL may do the socket I/O
 * itself and WANT_READ/WANT_WRITE map straight onto epoll interest. The
 * client splits reading and writing over two threads and cannot.
 *
 * Partial writes: SSL_MODE_ENABLE_PARTIAL_WRITE lets SSL_write return after
 * each record, so the output queue advances record by record like it does
 * with sendmsg, and SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets a retried
 * write come from the queue's (possibly reallocated) chunk. A retry always
 * passes the same head chunk from the same offset and a length at least the
 * previous one (chunks only grow at the tail), which is what OpenSSL
 * requires of a retry. */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "server_internal.h"

#ifdef KVMUX_HAVE_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls_common.h"

int kvmux__tls_ctx_build(const kvmux_server_config *cfg, struct ssl_ctx_st **out,
                         char *err, size_t errlen) {
    *out = NULL;
    if (!cfg->tls_cert) return 0;
    char rb[256];
    SSL_CTX *ctx = kvmux__tls_ctx_new(TLS_server_method(), SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (!ctx) {
        snprintf(err, errlen, "TLS: cannot create a context: %s", kvmux__tls_reason(rb, sizeof rb));
        return -1;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* No session cache: a key-value connection lives long; resumption is
     * not worth a shared cache across loop threads. */
    /* Read ahead: one read(2) takes several records instead of one read
     * for each record's header and another for its body. What it reads
     * beyond the record is visible to SSL_has_pending (kvmux__tls_pending),
     * which conn.c checks after every read. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        snprintf(err, errlen, "--tls-cert %s: %s", cfg->tls_cert, kvmux__tls_reason(rb, sizeof rb));
        SSL_CTX_free(ctx);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "--tls-key %s: %s", cfg->tls_key, kvmux__tls_reason(rb, sizeof rb));
        SSL_CTX_free(ctx);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "--tls-key %s does not match --tls-cert %s: %s", cfg->tls_key,
                 cfg->tls_cert, kvmux__tls_reason(rb, sizeof rb));
        SSL_CTX_free(ctx);
        return -1;
    }
    if (cfg->tls_ca) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_ca, NULL) != 1) {
            snprintf(err, errlen, "--tls-ca %s: %s", cfg->tls_ca, kvmux__tls_reason(rb, sizeof rb));
            SSL_CTX_free(ctx);
            return -1;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    *out = ctx;
    return 0;
}

void kvmux__tls_ctx_ref(struct ssl_ctx_st *ctx) {
    if (ctx) SSL_CTX_up_ref(ctx);
}

void kvmux__tls_ctx_unref(struct ssl_ctx_st *ctx) { SSL_CTX_free(ctx); }

int kvmux__tls_conn_new(struct ssl_ctx_st *ctx, kvmux_conn *c) {
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        ERR_clear_error();
        return -1;
    }
    if (SSL_set_fd(ssl, c->io.fd) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return -1;
    }
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->tls_hs = 1;
    return 0;
}

/* A failed handshake or record: log the reason, count it, forbid
 * close_notify. */
static void tls_failed(kvmux_conn *c, const char *what) {
    char rb[256];
    long vr = SSL_get_verify_result(c->ssl);
    kvmux__tls_reason(rb, sizeof rb);
    c->tls_failed = 1;
    if (c->tls_hs) {
        KVMUX_STAT_ADD(c->loop, tls_handshake_failures, 1);
        if (vr != X509_V_OK)
            KVMUX_LOG_I("conn %llu (%s): TLS handshake failed: %s (client certificate: %s)",
                        (unsigned long long)c->id, c->peer, rb,
                        X509_verify_cert_error_string(vr));
        else
            KVMUX_LOG_I("conn %llu (%s): TLS handshake failed: %s", (unsigned long long)c->id,
                        c->peer, rb);
    } else {
        KVMUX_STAT_ADD(c->loop, tls_errors, 1);
        KVMUX_LOG_I("conn %llu (%s): TLS %s failed: %s", (unsigned long long)c->id, c->peer,
                    what, rb);
    }
}

int kvmux__srv_tls_handshake(kvmux_conn *c) {
    if (!c->tls_peeked) {
        /* A kvmux client that does not speak TLS starts with the kvmux
         * magic; a TLS ClientHello with 0x16. Tell the first one in its
         * own protocol instead of leaving it to guess from an EOF. */
        uint8_t b;
        ssize_t n = recv(c->io.fd, &b, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            c->tls_want_write = 0;
            return 0;
        }
        if (n <= 0) {
            c->tls_failed = 1;
            KVMUX_LOG_D("conn %llu (%s): closed before the TLS handshake",
                        (unsigned long long)c->id, c->peer);
            return -1;
        }
        c->tls_peeked = 1;
        if (b == KVMUX_MAGIC) {
            c->tls_failed = 1;
            KVMUX_STAT_ADD(c->loop, tls_handshake_failures, 1);
            KVMUX_LOG_I("conn %llu (%s): plaintext kvmux client on a TLS port: refused",
                        (unsigned long long)c->id, c->peer);
            return -2;
        }
    }
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        KVMUX_LOG_D("conn %llu (%s): TLS handshake done: %s, %s", (unsigned long long)c->id,
                    c->peer, SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
        c->tls_hs = 0;
        c->tls_want_write = 0;
        return 1;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        c->tls_want_write = 0;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->tls_want_write = 1;
        return 0;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) { /* EOF or reset mid-handshake */
            c->tls_failed = 1;
            KVMUX_STAT_ADD(c->loop, tls_handshake_failures, 1);
            KVMUX_LOG_I("conn %llu (%s): TLS handshake failed: %s", (unsigned long long)c->id,
                        c->peer, errno ? strerror(errno) : "peer closed the connection");
            return -1;
        }
        /* fall through */
    default:
        tls_failed(c, "handshake");
        return -1;
    }
}

ssize_t kvmux__srv_tls_recv(kvmux_conn *c, void *buf, size_t n) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0) {
        c->tls_read_wants_write = 0;
        return r;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        c->tls_read_wants_write = 0;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        c->tls_read_wants_write = 1;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify */
        return 0;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
            c->tls_failed = 1; /* no close_notify back on a dead socket */
            if (r == 0 || errno == 0) return 0; /* EOF without close_notify */
            return -1;
        }
        /* fall through */
    default:
        tls_failed(c, "read");
        errno = EPROTO;
        return -1;
    }
}

ssize_t kvmux__tls_write(void *ctx, const void *p, size_t n) {
    kvmux_conn *c = ctx;
    ERR_clear_error();
    int r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0) {
        c->tls_write_wants_read = 0;
        return r;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_WRITE:
        c->tls_write_wants_read = 0;
        return 0;
    case SSL_ERROR_WANT_READ:
        c->tls_write_wants_read = 1;
        return 0;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
            c->tls_failed = 1;
            if (errno == 0) errno = EPIPE;
            return -1;
        }
        /* fall through */
    default:
        tls_failed(c, "write");
        errno = EPROTO;
        return -1;
    }
}

int kvmux__tls_pending(const kvmux_conn *c) {
    return c->ssl && SSL_has_pending(c->ssl);
}

void kvmux__tls_close_notify(kvmux_conn *c) {
    if (!c->ssl || c->tls_failed || c->tls_hs || c->tls_notified) return;
    c->tls_notified = 1;
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl); /* one non-blocking try: best effort */
    ERR_clear_error();
}

void kvmux__tls_conn_free(kvmux_conn *c) {
    if (!c->ssl) return;
    SSL_free(c->ssl);
    c->ssl = NULL;
}

#else /* !KVMUX_HAVE_TLS */

int kvmux__tls_ctx_build(const kvmux_server_config *cfg, struct ssl_ctx_st **out, char *err,
                         size_t errlen) {
    *out = NULL;
    if (!cfg->tls_cert) return 0;
    snprintf(err, errlen, "--tls-cert: kvmuxd was built without TLS "
                          "(configure with -DKVMUX_WITH_TLS=ON and OpenSSL, libssl-dev)");
    return -1;
}
void kvmux__tls_ctx_ref(struct ssl_ctx_st *ctx) { (void)ctx; }
void kvmux__tls_ctx_unref(struct ssl_ctx_st *ctx) { (void)ctx; }
int kvmux__tls_conn_new(struct ssl_ctx_st *ctx, kvmux_conn *c) { (void)ctx, (void)c; return -1; }
int kvmux__srv_tls_handshake(kvmux_conn *c) { (void)c; return -1; }
ssize_t kvmux__srv_tls_recv(kvmux_conn *c, void *buf, size_t n) {
    (void)c, (void)buf, (void)n;
    errno = EPROTO;
    return -1;
}
ssize_t kvmux__tls_write(void *ctx, const void *p, size_t n) {
    (void)ctx, (void)p, (void)n;
    errno = EPROTO;
    return -1;
}
int kvmux__tls_pending(const kvmux_conn *c) { (void)c; return 0; }
void kvmux__tls_close_notify(kvmux_conn *c) { (void)c; }
void kvmux__tls_conn_free(kvmux_conn *c) { (void)c; }

#endif
