/* libkvmux's TLS transport (OpenSSL), threaded mode and, at the end of
 * this header, event-loop mode. See docs/DESIGN.md "Transport: TLS".
 *
 * The reader and the writer thread share one socket; an SSL object must
 * never be used by two threads at once, and neither thread may block in
 * socket I/O while holding a lock the other needs. So OpenSSL never
 * touches the socket: it works between two memory BIOs, under a short
 * mutex (tls->mu) held only while bytes are encrypted or decrypted.
 *   - The reader recv()s ciphertext itself (no lock), feeds it to the
 *     input BIO and SSL_reads plaintext under the mutex.
 *   - The writer SSL_writes plaintext under the mutex, takes the
 *     ciphertext out of the output BIO and send()s it itself (no lock).
 *     It is the only thread that sends once connected, so records leave
 *     in the order OpenSSL produced them -- including what SSL_read
 *     produced (TLS 1.3 post-handshake messages such as a KeyUpdate
 *     answer): the reader raises out_pending and kicks the writer.
 * kvmux__client_fail's shutdown(2) still unblocks both threads, and the
 * plaintext path never enters this file (c->tls is NULL).
 *
 * Built without OpenSSL, init refuses tls = 1 with KVMUX_EINVAL and the
 * rest is never reached. */
#ifndef KVMUX_CLIENT_TLS_H
#define KVMUX_CLIENT_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct kvmux_client;
struct kvmux_options;

/* Create c->tls from o (o->tls set): the context, CA and client
 * certificate files loaded now, the server name (o->tls_server_name, else
 * host) copied. Connect thread, before any other thread. Returns 0, or
 * KVMUX_EINVAL / KVMUX_ETLS / KVMUX_ENOMEM with the connect message
 * recorded. */
int kvmux__tls_init(struct kvmux_client *c, const struct kvmux_options *o, const char *host);

/* Free c->tls entirely (NULL-safe). No thread may be using it. */
void kvmux__tls_free(struct kvmux_client *c);

/* A new TLS session on fd (connected, non-blocking): the handshake,
 * verification included, done before deadline (monotonic ms). Replaces
 * any previous session (reconnect). Connect or reader thread, no other
 * thread using c->tls. Returns 0, or KVMUX_ETLS (OpenSSL reason in the
 * message), KVMUX_ETIMEDOUT, KVMUX_ECONNECT, KVMUX_ENOMEM (message
 * recorded with kvmux__connect_fail). */
int kvmux__tls_handshake(struct kvmux_client *c, int fd, int64_t deadline);

/* The HELLO exchange over TLS on the still non-blocking fd: write all of
 * p[0..n), or read up to cap plaintext bytes (at least one), before
 * deadline. Return 0 / the byte count, or a negative KVMUX_E* with the
 * message recorded (kvmux__connect_fail). */
int kvmux__tls_write_sync(struct kvmux_client *c, const void *p, size_t n, int64_t deadline);
ssize_t kvmux__tls_read_sync(struct kvmux_client *c, void *p, size_t cap, int64_t deadline);

/* Reader thread (blocking fd): like recv(2): > 0 plaintext bytes, 0 the
 * server closed (close_notify or EOF), -1 with errno. A TLS error fails
 * the connection with KVMUX_ETLS and the OpenSSL reason first (a later
 * kvmux__client_fail is then a no-op) and returns -1, errno EPROTO. */
ssize_t kvmux__tls_recv(struct kvmux_client *c, void *buf, size_t cap);

/* 1 if plaintext or unprocessed ciphertext is buffered (the reader must
 * not poll(2) before reading it). Reader thread. */
int kvmux__tls_buffered(struct kvmux_client *c);

/* Writer thread (blocking fd): encrypt and send all of iov[0..n) (n may
 * be 0: only what the reader left to send). Returns 0 or a fatal KVMUX_E*
 * (KVMUX_ECLOSED / KVMUX_EIO with errno preserved, KVMUX_ETLS). */
int kvmux__tls_send_all(struct kvmux_client *c, const struct iovec *iov, int n);

/* 1 if ciphertext produced by the reader waits for the writer. Any
 * thread (atomic). */
int kvmux__tls_out_pending(const struct kvmux_client *c);

/* Drop the session (reconnect: the socket is gone). */
void kvmux__tls_reset(struct kvmux_client *c);

/* ---- event-loop mode (loop.c; loop thread only, fd non-blocking) ----
 * Nothing here blocks: OpenSSL's WANT_READ is answered by recv()ing what
 * the socket has (none: return and wait for the loop's read event, always
 * watched), and the ciphertext OpenSSL produces waits in a send queue
 * whose being non-empty is the write interest (the socket's EAGAIN is the
 * "want write" of a memory-BIO session). */

/* Start a session on c->fd (TCP connected) and advance the handshake as
 * kvmux__tls_loop_handshake does; same results. */
int kvmux__tls_loop_start(struct kvmux_client *c);

/* Advance the handshake with what the socket has. Returns 1 when it is
 * done, 0 when it waits for the server's bytes, or a KVMUX_E* (KVMUX_ETLS
 * with the reason, KVMUX_ECONNECT, KVMUX_ENOMEM; message recorded with
 * kvmux__connect_fail). Queued ciphertext: kvmux__tls_loop_flush. */
int kvmux__tls_loop_handshake(struct kvmux_client *c);

/* Plaintext into buf, like recv(MSG_DONTWAIT): > 0 bytes, 0 the server
 * closed, -1 with errno (EAGAIN: nothing yet; EPROTO: a TLS error, the
 * connection already failed with KVMUX_ETLS). Lock not held. */
ssize_t kvmux__tls_loop_recv(struct kvmux_client *c, void *buf, size_t cap);

/* Encrypt all of iov[0..n) into the send queue (lock held). Returns 0, or
 * KVMUX_ETLS / KVMUX_ENOMEM after failing the connection. */
int kvmux__tls_loop_seal(struct kvmux_client *c, const struct iovec *iov, int n);

/* Send queued ciphertext without blocking. Returns 0 when the queue is
 * empty, 1 when the socket is full (keep the write interest), -1 with
 * errno on a send error. */
int kvmux__tls_loop_flush(struct kvmux_client *c);

/* Ciphertext bytes waiting in the send queue (0 without TLS). */
size_t kvmux__tls_loop_queued(const struct kvmux_client *c);

#endif
