/* Output queue of a kvmuxd connection (see outbuf.h).
 *
 * Responses are encoded straight into the tail chunk (16 KiB), so a batch
 * of small responses from one read becomes one contiguous run and usually
 * one send. A frame larger than a chunk gets a chunk of its own size. The
 * flush uses sendmsg with MSG_NOSIGNAL (a writev that cannot raise
 * SIGPIPE) over up to 64 chunks per call. Limits (the slow-reader cap) are
 * enforced by the connection, which reads ob->bytes; this file only queues
 * and writes. */
#include "outbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define CHUNK_SIZE (16u * 1024)
#define MAX_IOV 64

struct kvmux_outchunk {
    kvmux_outchunk *next;
    size_t cap;                  /* bytes of data[] */
    size_t len;                  /* bytes filled */
    size_t off;                  /* bytes already written */
    uint8_t data[];
};

void kvmux__outbuf_init(kvmux_outbuf *ob) {
    ob->head = ob->tail = NULL;
    ob->bytes = 0;
}

void kvmux__outbuf_deinit(kvmux_outbuf *ob) {
    kvmux_outchunk *c = ob->head;
    while (c) {
        kvmux_outchunk *next = c->next;
        free(c);
        c = next;
    }
    kvmux__outbuf_init(ob);
}

uint8_t *kvmux__outbuf_append(kvmux_outbuf *ob, size_t n) {
    kvmux_outchunk *t = ob->tail;
    if (!t || t->cap - t->len < n) {
        size_t cap = n > CHUNK_SIZE ? n : CHUNK_SIZE;
        kvmux_outchunk *c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = NULL;
        c->cap = cap;
        c->len = c->off = 0;
        if (t) t->next = c;
        else ob->head = c;
        ob->tail = t = c;
    }
    uint8_t *p = t->data + t->len;
    t->len += n;
    ob->bytes += n;
    return p;
}

int kvmux__outbuf_flush(kvmux_outbuf *ob, int fd, uint64_t *written) {
    *written = 0;
    while (ob->bytes > 0) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        for (kvmux_outchunk *c = ob->head; c && n < MAX_IOV; c = c->next) {
            if (c->len == c->off) continue;
            iov[n].iov_base = c->data + c->off;
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
            free(c);
        }
        if (!ob->head) ob->tail = NULL;
        else ob->head->off += left;
    }
    return 0;
}
