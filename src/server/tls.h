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

/* Build the server's SSL context from cfg->tls_cert/tls_key (and tls_ca:
 * client certificates required and verified against it). TLS 1.2 is the
 * floor; renegotiation and compression are off. No-op returning 0 when
 * cfg->tls_cert is NULL. Returns 0, or -1 with a one-line message naming
 * the option and the OpenSSL reason in err (also when built without
 * TLS). */
int kvmux__tls_server_init(struct kvmux_server *s, const struct kvmux_server_config *cfg,
                           char *err, size_t errlen);
/* Free the context (NULL-safe, idempotent). */
void kvmux__tls_server_free(struct kvmux_server *s);

/* 1 if the server speaks TLS (every accepted connection does). */
int kvmux__tls_enabled(const struct kvmux_server *s);

/* Give c (accepted, fd set) its SSL object in the handshake phase.
 * Returns 0 or -1 (out of memory; c untouched). */
int kvmux__tls_conn_new(struct kvmux_server *s, struct kvmux_conn *c);

/* Advance c's server handshake. Returns 1 when done, 0 when it waits for
 * the socket (c->tls_want_write says which way), -1 when it failed (the
 * reason is logged and counted), -2 when the peer is a plaintext kvmux
 * client (its first byte is the kvmux magic: conn.c answers it with a
 * plaintext ERROR). */
int kvmux__tls_handshake(struct kvmux_conn *c);

/* recv(2) for a TLS connection: > 0 plaintext bytes, 0 peer closed
 * (close_notify or EOF), -1 with errno (EAGAIN: wait; c->tls_read_wants_write
 * set when the wait is for writability; EPROTO: TLS error, logged). */
ssize_t kvmux__tls_recv(struct kvmux_conn *c, void *buf, size_t n);

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
