/* Peer TLS: a C-Raft transport (struct raft_uv_transport, raft/uv.h) that
 * runs every Raft connection through mutual TLS 1.3 with the group's CA.
 *
 * How: C-Raft's raft_uv reads and writes a uv_stream_t per peer. For each
 * TCP connection this transport does the TLS handshake itself (OpenSSL on
 * memory BIOs, in the Raft thread's libuv loop), then gives raft_uv one
 * end of a socketpair(2) as that stream and pumps the other end through
 * SSL_read / SSL_write. No extra thread, raft_uv unchanged, the Raft
 * address strings stay "host:port" (docs/DESIGN.md "Peer TLS").
 *
 * Inside the TLS channel the connecting side first sends a preamble
 * ("KVMXRFT1", u64 id, u16 length, its Raft address), as C-Raft's own TCP
 * transport does in the clear.
 *
 * Bounds: the TCP connect, TLS handshake and preamble of a connection must
 * finish within handshake_ms; at most KVMUX_PTLS_MAX_HANDSHAKES incoming
 * connections may be in their handshake at once (more are refused); each
 * direction of a connection queues at most KVMUX_PTLS_MAX_QUEUE bytes
 * before reading the other side pauses.
 *
 * Only with both KVMUX_HAVE_RAFT and KVMUX_HAVE_TLS. Everything runs on
 * the loop's thread except reading *refused (an atomic). */
#ifndef KVMUX_TRANSPORT_H
#define KVMUX_TRANSPORT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#define KVMUX_PTLS_MAX_HANDSHAKES 64u
#define KVMUX_PTLS_MAX_QUEUE (4u * 1024 * 1024)

typedef struct kvmux_ptls_config {
    const char *cert;            /* PEM chain presented to peers */
    const char *key;             /* its private key */
    const char *ca;              /* the group CA: peers must chain to it */
    unsigned handshake_ms;       /* connect + handshake + preamble bound */
    _Atomic uint64_t *refused;   /* incremented per refused peer connection */
} kvmux_ptls_config;

/* Fill t (t->version must already be 1) with the TLS transport on loop:
 * loads the certificate, key and CA now, so a bad file fails the start.
 * The files are read during the call only; refused must outlive t.
 * Returns 0, or -1 with a message in err (t then needs no release). */
int kvmux_ptls_init(struct raft_uv_transport *t, uv_loop_t *loop, const kvmux_ptls_config *cfg,
                    char *err, size_t errlen);

/* Release t once raft_uv is done with it (where raft_uv_tcp_close would
 * be called). Connections still closing are freed when their handles
 * are; the loop must run until then (node.c runs it to completion). */
void kvmux_ptls_release(struct raft_uv_transport *t);

#endif
