/* kvmux flow-control windows (protocol v2): the counting behind
 * WINDOW_UPDATE, for one scope (a message or the whole connection) in one
 * direction.
 *
 * Design, as in HTTP/2: a window is the number of value bytes the sender
 * may still put on the wire. The sender consumes it as it sends and gets
 * it back from WINDOW_UPDATE increments; the receiver mirrors the same
 * number, so it can prove a peer overran it, and grants bytes back once it
 * has consumed them. Grants are batched: an update is due once half the
 * window's initial size has been released, so a steady stream costs one
 * small frame per half window instead of one per fragment, and a sender is
 * never starved (when it is blocked at zero, the receiver holds a full
 * window of released bytes, more than the threshold). Every value stays
 * within [0, 2^31-1]: a peer granting past that is a protocol error, and
 * the receiver never owes more than it could grant.
 *
 * What it is not: this file does not know about fragments, request ids or
 * frames (fragment.c and session.c apply windows to them), and it does no
 * I/O: the caller sends the WINDOW_UPDATE frames it is told to send.
 */
#include "proto.h"

/* Fresh window of size bytes (clamped: a window is a 31-bit quantity). */
void kvmux_window_init(kvmux_window *w, uint32_t size) {
    if (size > KVMUX_MAX_WINDOW) size = KVMUX_MAX_WINDOW;
    w->size = size;
    w->avail = size;
    w->released = 0;
}

/* n bytes sent or received; contract in proto.h. */
int kvmux_window_consume(kvmux_window *w, uint32_t n) {
    if (n > w->avail) return -KVMUX_ERR_PROTOCOL;
    w->avail -= n;
    return 0;
}

/* A WINDOW_UPDATE arrived; contract in proto.h. Written as a subtraction
 * so the check itself cannot wrap. */
int kvmux_window_grant(kvmux_window *w, uint32_t increment) {
    if (increment == 0 || increment > KVMUX_MAX_WINDOW - w->avail)
        return -KVMUX_ERR_PROTOCOL;
    w->avail += increment;
    return 0;
}

/* Receiver consumed n bytes; contract in proto.h. n is clamped so that
 * avail + released never passes the 31-bit bound even if a caller
 * releases more than it received (the grant we send must stay legal). */
uint32_t kvmux_window_release(kvmux_window *w, uint32_t n) {
    uint64_t used = (uint64_t)w->avail + w->released;
    uint32_t room = used >= KVMUX_MAX_WINDOW ? 0 : (uint32_t)(KVMUX_MAX_WINDOW - used);
    if (n > room) n = room;
    w->released += n;
    uint32_t threshold = w->size / 2;
    if (threshold == 0) threshold = 1;
    if (w->released < threshold) return 0;
    uint32_t inc = w->released;
    w->released = 0;
    w->avail += inc;
    return inc;
}

/* min(message, connection): both must allow a byte for it to be sent. */
uint32_t kvmux_window_sendable(const kvmux_window *msg, const kvmux_window *conn) {
    return msg->avail < conn->avail ? msg->avail : conn->avail;
}
