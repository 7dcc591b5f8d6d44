/* kvmux client writer thread: moves encoded frames from the outbound buffer
 * to the socket.
 *
 * Design: double buffering. Callers append whole frames to c->out under the
 * client mutex. The writer, also under the mutex, swaps c->out with its own
 * (empty) spare c->wbuf, then writes the whole batch outside the lock with
 * as few send() calls as the kernel allows: under load many callers' frames
 * share one system call (coalescing), and callers never wait for the socket,
 * only for the mutex. The bytes in the writer's hands still count against
 * the queue limits (wr_bytes, wr_frames) until they are written, so the
 * limits bound all memory "encoded and not yet written". When a batch is
 * done the writer wakes every caller waiting for queue room.
 *
 * The wakeup is edge-triggered (kvmux__writer_kick): a caller signals only
 * when the writer is idle, so a burst of calls costs one signal; requests
 * submitted by async callbacks kick once at the end of their batch
 * (async.c), so a round of callbacks that each resubmit goes out as one
 * write.
 *
 * The socket is blocking once connected; send() uses MSG_NOSIGNAL so a dead
 * peer is an EPIPE error, never a SIGPIPE. A writer blocked in send() on a
 * stalled server is released by kvmux__client_fail's shutdown(). The writer
 * exits as soon as the connection has a fatal code.
 *
 * In event-loop mode there is no writer thread: kvmux__writer_kick asks
 * the loop for writability instead, and loop.c sends from c->out.
 *
 * Protocol v2: each round also carries at most one fragment of a large
 * request value (bigsend.c), written from the transfer's own buffer in the
 * same sendmsg, so batches of small frames and fragments alternate.
 *
 * What it is not: the writer never encodes, parses or touches the pending
 * table (the backlog pump after a batch does, through async.c); failing
 * the calls is kvmux__client_fail's job.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "client_internal.h"

int kvmux__out_reserve(kvmux_client *c, size_t n) {
    kvmux__outbuf *o = &c->out;
    if (o->cap - o->len >= n) return 0;
    if (n > SIZE_MAX / 2 - o->len) return KVMUX_ENOMEM;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap - o->len < n) cap *= 2;
    uint8_t *p = realloc(o->data, cap);
    if (!p) return KVMUX_ENOMEM;
    o->data = p;
    o->cap = cap;
    return 0;
}

void kvmux__writer_kick(kvmux_client *c) {
    if (c->mode == KVMUX__MODE_LOOP) {
        kvmux__loop_want_write(c);
        return;
    }
    if (c->writer_idle) {
        c->writer_idle = 0;
        pthread_cond_signal(&c->writer_cond);
    }
}

/* Write all of iov[0..n) (entries may be empty). Returns 0, or a fatal
 * KVMUX_E* with errno preserved. */
static int writer_send_all(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        if (iov[0].iov_len == 0) {
            iov++;
            n--;
            continue;
        }
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)n;
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            /* A reset or a shutdown() from kvmux__client_fail is a close;
             * anything else is an I/O error. */
            if (errno == EPIPE || errno == ECONNRESET) return KVMUX_ECLOSED;
            return KVMUX_EIO;
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov[0].iov_len) {
            left -= iov[0].iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov[0].iov_base = (uint8_t *)iov[0].iov_base + left;
            iov[0].iov_len -= left;
        }
    }
    return 0;
}

void *kvmux__writer_main(void *arg) {
    kvmux_client *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->out.len == 0 && c->fatal == 0 && !kvmux__big_ready(c) &&
               !(c->tls && kvmux__tls_out_pending(c))) {
            c->writer_idle = 1;
            pthread_cond_wait(&c->writer_cond, &c->mu);
        }
        c->writer_idle = 0;
        if (c->fatal != 0) break;

        /* The whole queue, then one fragment of one large value (round
         * robin, bigsend.c): small frames never wait behind more than a
         * fragment. */
        struct iovec iov[3];
        kvmux__bigmsg *m = NULL;
        int niov = kvmux__round_begin(c, iov, &m);
        pthread_mutex_unlock(&c->mu);

        int rc = c->tls ? kvmux__tls_send_all(c, iov, niov) : writer_send_all(c->fd, iov, niov);
        int err = errno;

        pthread_mutex_lock(&c->mu);
        kvmux__round_end(c, m);
        if (rc != 0) {
            char eb[64];
            kvmux__client_fail(c, rc, "send failed: %s", kvmux__errstr(err, eb, sizeof eb));
            break;
        }
        /* Room: first to the async backlog (it waits in FIFO order and
         * never sleeps), then to the synchronous callers. */
        kvmux__async_pump(c);
        if (c->queue_waiters > 0) pthread_cond_broadcast(&c->queue_cond);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}
