/* kvmux rate caps (protocol v2): a token bucket for per-connection frame
 * floods, the defence against CANCEL floods (HTTP/2 "rapid reset",
 * CVE-2023-44487) and PING floods (nghttp2 ERR_FLOODED).
 *
 * Design: a bucket holding up to `rate` events that refills at `rate`
 * events per second. To stay in integers without losing sub-event refills,
 * the budget is counted in event-milliseconds: an event costs 1000, a
 * millisecond refills `rate`, and the bucket holds at most rate * 1000.
 * Time is an argument (sans-IO: the caller owns the clock), so tests are
 * exact and a clock that steps backwards simply refills nothing.
 *
 * What it is not: it does not decide what happens over the cap (the server
 * sends ERROR FLOOD and closes) and it keeps no history beyond the bucket.
 */
#include "proto.h"

/* Start full at now_ms: a fresh connection may burst up to rate events. */
void kvmux_rate_init(kvmux_rate *r, uint32_t rate, uint64_t now_ms) {
    r->rate = rate;
    r->tokens_ms = (uint64_t)rate * 1000;
    r->last_ms = now_ms;
}

/* Take one event; contract in proto.h. The refill is capped before the
 * multiplication can overflow: a gap of more than 1000 ms refills the
 * whole bucket anyway. */
int kvmux_rate_allow(kvmux_rate *r, uint64_t now_ms) {
    if (r->rate == 0) return 1;
    uint64_t full = (uint64_t)r->rate * 1000;
    if (now_ms > r->last_ms) {
        uint64_t dt = now_ms - r->last_ms;
        if (dt > 1000) dt = 1000;
        r->tokens_ms += dt * r->rate;
        if (r->tokens_ms > full) r->tokens_ms = full;
        r->last_ms = now_ms;
    }
    if (r->tokens_ms < 1000) return 0;
    r->tokens_ms -= 1000;
    return 1;
}
