/* Output queue of a kvmuxd connection (see outbuf.h).
 *
 * Responses are encoded straight into the tail chunk (16 KiB), so a batch
 * of small responses from one read becomes one contiguous run and usually
 * one send. A frame larger than a chunk gets a chunk of its own size. The
 * flush uses sendmsg with MSG_NOSIGNAL (a writev that cannot raise
 * SIGPIPE) over up to 64 chunks per call. Large values are queued as
 * reference chunks (pointer + release callback, no copy): the value's
 * owner keeps it alive until the chunk is written or the queue is freed.
 * Limits (the slow-reader cap) are
 * enforced by the connection, which reads ob->bytes; this file only queues
 * and writes. */
#include "outbuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define CHUNK_SIZE (16u * 1024)
#define MAX_IOV 64

struct kvmux_outchunk {
    kvmux_outchunk *next;
    const uint8_t *bytes;        /* data, or the referenced bytes */
    size_t cap;                  /* bytes of data[]; 0 for a reference */
    size_t len;                  /* bytes filled */
    size_t off;                  /* bytes already written */
    void (*release)(void *);     /* reference chunks: called once when freed */
    void *release_ctx;
    uint8_t data[];
};

static void chunk_free(kvmux_outchunk *c) {
    if (c->release) c->release(c->release_ctx);
    free(c);
}

void kvmux__outbuf_init(kvmux_outbuf *ob) {
    ob->head = ob->tail = NULL;
    ob->bytes = 0;
}

void kvmux__outbuf_deinit(kvmux_outbuf *ob) {
    kvmux_outchunk *c = ob->head;
    while (c) {
        kvmux_outchunk *next = c->next;
        chunk_free(c);
        c = next;
    }
    kvmux__outbuf_init(ob);
}

uint8_t *kvmux__outbuf_append(kvmux_outbuf *ob, size_t n) {
    kvmux_outchunk *t = ob->tail;
    if (!t || t->cap < t->len + n) { /* a reference chunk has cap 0 */
        size_t cap = n > CHUNK_SIZE ? n : CHUNK_SIZE;
        kvmux_outchunk *c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = NULL;
        c->bytes = c->data;
        c->cap = cap;
        c->len = c->off = 0;
        c->release = NULL;
        c->release_ctx = NULL;
        if (t) t->next = c;
        else ob->head = c;
        ob->tail = t = c;
    }
    uint8_t *p = t->data + t->len;
    t->len += n;
    ob->bytes += n;
    return p;
}

int kvmux__outbuf_append_ref(kvmux_outbuf *ob, const uint8_t *p, size_t n,
                             void (*release)(void *), void *release_ctx) {
    kvmux_outchunk *c = malloc(sizeof *c);
    if (!c) {
        if (release) release(release_ctx);
        return -1;
    }
    c->next = NULL;
    c->bytes = p;
    c->cap = 0; /* full: the next append starts a chunk of its own */
    c->len = n;
    c->off = 0;
    c->release = release;
    c->release_ctx = release_ctx;
    if (ob->tail) ob->tail->next = c;
    else ob->head = c;
    ob->tail = c;
    ob->bytes += n;
    return 0;
}

int kvmux__outbuf_flush(kvmux_outbuf *ob, int fd, uint64_t *written) {
    *written = 0;
    while (ob->bytes > 0) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        for (kvmux_outchunk *c = ob->head; c && n < MAX_IOV; c = c->next) {
            if (c->len == c->off) continue;
            iov[n].iov_base = (void *)(uintptr_t)(c->bytes + c->off);
            iov[n].iov_len = c->len - c->off;
            n++;
        }
        struct msghdr msg = {0};
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)n;
        ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            return -1;
        }
        size_t left = (size_t)w;
        *written += left;
        ob->bytes -= left;
        /* Free the chunks written completely; a partial write leaves an
         * offset into the first remaining one. */
        while (ob->head && left >= ob->head->len - ob->head->off) {
            kvmux_outchunk *c = ob->head;
            left -= c->len - c->off;
            ob->head = c->next;
            chunk_free(c);
        }
        if (!ob->head) ob->tail = NULL;
        else ob->head->off += left;
    }
    return 0;
}

int kvmux__outbuf_flush_fn(kvmux_outbuf *ob, kvmux_outbuf_write_fn wr, void *ctx,
                           uint64_t *written) {
    *written = 0;
    while (ob->head) {
        kvmux_outchunk *c = ob->head;
        if (c->len > c->off) {
            ssize_t w = wr(ctx, c->bytes + c->off, c->len - c->off);
            if (w == 0) return 1;
            if (w < 0) return -1;
            c->off += (size_t)w;
            ob->bytes -= (size_t)w;
            *written += (uint64_t)w;
            if (c->off < c->len) continue;
        }
        ob->head = c->next;
        chunk_free(c);
    }
    ob->tail = NULL;
    return 0;
}

void kvmux__outbuf_drain(kvmux_outbuf *ob, void (*sink)(void *, const uint8_t *, size_t),
                         void *ud, uint64_t *written) {
    *written = ob->bytes;
    while (ob->head) {
        kvmux_outchunk *c = ob->head;
        if (c->len > c->off) sink(ud, c->bytes + c->off, c->len - c->off);
        ob->head = c->next;
        chunk_free(c);
    }
    ob->tail = NULL;
    ob->bytes = 0;
}
