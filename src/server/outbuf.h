/* A connection's output queue: a list of byte chunks written with writev.
 * A chunk either owns its bytes (frames encoded into it) or references
 * bytes owned elsewhere (a large value held by reference), so a value is
 * never copied just to be sent. */
#ifndef KVMUX_SERVER_OUTBUF_H
#define KVMUX_SERVER_OUTBUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct kvmux_outchunk kvmux_outchunk;

typedef struct kvmux_outbuf {
    kvmux_outchunk *head, *tail;
    size_t bytes;                /* queued and not yet written */
} kvmux_outbuf;

void kvmux__outbuf_init(kvmux_outbuf *ob);

/* Free every chunk (unsent bytes are dropped). */
void kvmux__outbuf_deinit(kvmux_outbuf *ob);

/* Reserve n contiguous bytes at the end of the queue and count them as
 * queued; the caller must fill all n before the next write. Returns the
 * pointer, or NULL when out of memory (queue unchanged). */
uint8_t *kvmux__outbuf_append(kvmux_outbuf *ob, size_t n);

/* Queue n bytes at p (n > 0) without copying them: p must stay valid
 * until the chunk is written or dropped, when release(release_ctx) is
 * called exactly once (release may be NULL). Returns 0, or -1 when out of
 * memory, in which case release has been called and the queue is
 * unchanged. */
int kvmux__outbuf_append_ref(kvmux_outbuf *ob, const uint8_t *p, size_t n,
                             void (*release)(void *), void *release_ctx);

/* Write as much as the socket takes, in writev batches of up to 64 chunks.
 * Returns 0 when the queue is empty, 1 when the socket would block with
 * bytes still queued, or -1 on a socket error (errno set). *written
 * receives the bytes written by this call. */
int kvmux__outbuf_flush(kvmux_outbuf *ob, int fd, uint64_t *written);

/* Transport write for kvmux__outbuf_flush_fn: > 0 bytes taken (possibly
 * fewer than n), 0 would block, -1 error with errno set. */
typedef ssize_t (*kvmux_outbuf_write_fn)(void *ctx, const void *p, size_t n);

/* kvmux__outbuf_flush through a transport that writes one contiguous span
 * at a time (TLS: one SSL_write per chunk, so a chunk of batched small
 * frames becomes one record). A span refused for lack of room is offered
 * again, from the same offset and at least as long, on the next call.
 * Same return values as kvmux__outbuf_flush. */
int kvmux__outbuf_flush_fn(kvmux_outbuf *ob, kvmux_outbuf_write_fn wr, void *ctx,
                           uint64_t *written);

/* In-memory connections (harness.c): hand every queued byte, chunk by
 * chunk in order, to sink(ud, p, n) and empty the queue. *written receives
 * the bytes handed over. Never fails. */
void kvmux__outbuf_drain(kvmux_outbuf *ob, void (*sink)(void *, const uint8_t *, size_t),
                         void *ud, uint64_t *written);

#endif
