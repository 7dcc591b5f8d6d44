/* kvmuxd's TLS transport (OpenSSL), the server half. See docs/DESIGN.md
 * "Transport: TLS".
 *
 * The server side keeps OpenSSL on the connection's own non-blocking
 * socket (a socket BIO): a connection belongs to one loop thread, so there
 * is no sharing to arrange, and SSL_read/SSL_write replace recv/sendmsg
 * one for one. conn.c owns the state machine (handshake phase, the
 * cross-wants: SSL_read wanting to write, SSL_write wanting to read);
 * this file owns every OpenSSL call. Built without OpenSSL
 * (KVMUX_WITH_TLS=OFF) the same functions exist: init refuses a TLS
 * configuration with "not built with TLS", the others are never reached.
 *
 * All functions run on the connection's loop thread, except the server
 * init/free (kvmux_server_new / kvmux_server_free). */
#ifndef KVMUX_SERVER_TLS_H
#define KVMUX_SERVER_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct kvmux_server;
struct kvmux_server_config;
struct kvmux_conn;

struct ssl_ctx_st;

/* Build a server SSL context from cfg->tls_cert/tls_key (and tls_ca:
 * client certificates required and verified against it), reading the
 * files now: at start and on every SIGHUP (reload.c). TLS 1.2 is the
 * floor; renegotiation and compression are off. *out = NULL and 0 when
 * cfg->tls_cert is NULL. Returns 0 with *out owning one reference, or -1
 * with a one-line message naming the option and the OpenSSL reason in err
 * (also when built without TLS). Any thread. */
int kvmux__tls_ctx_build(const struct kvmux_server_config *cfg, struct ssl_ctx_st **out,
                         char *err, size_t errlen);
/* Take / drop one reference to a context (NULL-safe; any thread: OpenSSL
 * counts atomically). A connection's SSL holds its own reference, so
 * connections made before a reload keep the old certificate. */
void kvmux__tls_ctx_ref(struct ssl_ctx_st *ctx);
void kvmux__tls_ctx_unref(struct ssl_ctx_st *ctx);

/* Give c (accepted, fd set) its SSL object from ctx, in the handshake
 * phase. Returns 0 or -1 (out of memory; c untouched). */
int kvmux__tls_conn_new(struct ssl_ctx_st *ctx, struct kvmux_conn *c);

/* Advance c's server handshake. Returns 1 when done, 0 when it waits for
 * the socket (c->tls_want_write says which way), -1 when it failed (the
 * reason is logged and counted), -2 when the peer is a plaintext kvmux
 * client (its first byte is the kvmux magic: conn.c answers it with a
 * plaintext ERROR). */
int kvmux__srv_tls_handshake(struct kvmux_conn *c);

/* recv(2) for a TLS connection: > 0 plaintext bytes, 0 peer closed
 * (close_notify or EOF), -1 with errno (EAGAIN: wait; c->tls_read_wants_write
 * set when the wait is for writability; EPROTO: TLS error, logged). */
ssize_t kvmux__srv_tls_recv(struct kvmux_conn *c, void *buf, size_t n);

/* Write callback for kvmux__outbuf_flush_fn (ctx is the kvmux_conn):
 * > 0 bytes taken, 0 would block (c->tls_write_wants_read set when the
 * wait is for readability), -1 error with errno (logged). */
ssize_t kvmux__tls_write(void *ctx, const void *p, size_t n);

/* Nonzero if OpenSSL holds input for c that no epoll event will
 * announce (a record read beyond what the last SSL_read returned). */
int kvmux__tls_pending(const struct kvmux_conn *c);

/* Best effort close_notify (non-blocking, once; nothing after a TLS
 * error), before shutdown(SHUT_WR) or close. */
void kvmux__tls_close_notify(struct kvmux_conn *c);

/* Free c's SSL object (NULL-safe). */
void kvmux__tls_conn_free(struct kvmux_conn *c);

#endif
