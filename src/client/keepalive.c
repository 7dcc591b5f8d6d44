/* kvmux client keepalive: find a dead server on a quiet connection.
 *
 * Design: the receive path stamps ka_last_rx whenever bytes arrive (the
 * reader thread, or the event loop's read handler). Once nothing has
 * arrived for keepalive_interval_ms a PING (request id 0, so it needs no
 * credit and matches no caller; its PONG is simply a frame that arrived)
 * is queued like any other control frame. If still nothing at all arrives
 * within keepalive_timeout_ms after that, the connection is failed with
 * KVMUX_EKEEPALIVE, which completes every pending call with that fatal
 * code. Any frame counts as a sign of life, not only the PONG: a server
 * streaming a large reply is alive.
 *
 * Who calls it: the reader thread waits in poll() bounded by
 * kvmux__keepalive_due instead of blocking in recv() (only when keepalive
 * is on); the event-loop driver arms its timer for the same instant and
 * calls kvmux__keepalive_tick from kvmux_async_handle_timeout. Both
 * ka_last_rx and ka_pinged belong to that one thread.
 *
 * What it is not: not a request timeout (those are per call) and not TCP
 * keepalive (which takes minutes and cannot see a hung server process).
 */
#include <stdint.h>
#include <string.h>

#include "client_internal.h"

int kvmux__keepalive_on(const kvmux_client *c) {
    return c->opts.keepalive_interval_ms > 0;
}

int64_t kvmux__keepalive_due(const kvmux_client *c) {
    if (!kvmux__keepalive_on(c)) return INT64_MAX;
    int64_t ping_at = c->ka_last_rx + c->opts.keepalive_interval_ms;
    if (!c->ka_pinged) return ping_at;
    if (c->opts.keepalive_timeout_ms <= 0) return INT64_MAX; /* ping only */
    return c->ka_pinged_at + c->opts.keepalive_timeout_ms;
}

void kvmux__keepalive_rx(kvmux_client *c, int64_t now) {
    c->ka_last_rx = now;
    c->ka_pinged = 0;
}

void kvmux__keepalive_tick(kvmux_client *c, int64_t now) {
    if (!kvmux__keepalive_on(c) || c->fatal) return;
    if (now < kvmux__keepalive_due(c)) return;
    if (c->ka_pinged) {
        kvmux__client_fail(c, KVMUX_EKEEPALIVE,
                           "keepalive: no frame from the server for %lld ms",
                           (long long)(now - c->ka_last_rx));
        return;
    }
    kvmux_frame p;
    uint8_t payload[8];
    memset(&p, 0, sizeof p);
    memset(payload, 0, sizeof payload);
    p.version = c->version;
    p.type = KVMUX_FRAME_PING;
    p.request_id = 0;
    p.extras = payload;
    p.extras_len = 8;
    size_t n = kvmux_frame_size(&p);
    /* Out of memory: no PING this time; the timeout still applies. */
    if (kvmux__out_reserve(c, n) == 0) {
        c->out.len += kvmux_frame_encode(c->out.data + c->out.len, &p);
        c->out.frames++;
        kvmux__writer_kick(c);
    }
    c->ka_pinged = 1;
    c->ka_pinged_at = now;
}
