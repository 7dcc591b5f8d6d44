/* In-memory harness for the server's input path (see harness.h): the same
 * code a socket connection runs (decode -> session -> dispatch -> output
 * queue -> scheduler), driven by a caller instead of epoll. The connection
 * is a normal kvmux_conn with io.fd == -1 and a mem_sink: conn.c skips the
 * epoll registration and close(2) for it and drains its output queue into
 * the sink instead of sendmsg(2). The loop body is run with a zero timeout
 * (kvmux__loop_run_once), so inbox, timers and teardown behave as in the
 * server; the loop's epoll set only ever holds its eventfd.
 *
 * What it is not: a test of sockets, partial writes, or multi-loop
 * hand-offs (every connection lives on loop 0). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "monotime.h"
#include "server_internal.h"

#define OUT_CAP (16u * 1024 * 1024)
#define SETTLE_ITERS 4     /* loop iterations after EOF before forcing close */

struct kvmux_harness {
    kvmux_server *srv;
    uint8_t *out;
    size_t out_len, out_cap;
    int truncated;
};

kvmux_harness *kvmux__harness_new(const kvmux_server_config *cfg, char *err, size_t errlen) {
    kvmux_harness *h = calloc(1, sizeof *h);
    if (!h) {
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    kvmux_server_config c = *cfg;
    c.threads = 1;
    c.aof_path = NULL;
    if (kvmux__server_create(&h->srv, &c, 0, err, errlen) != 0) {
        free(h);
        return NULL;
    }
    return h;
}

void kvmux__harness_free(kvmux_harness *h) {
    if (!h) return;
    kvmux_server_free(h->srv);
    free(h->out);
    free(h);
}

/* mem_sink: append to the output, up to OUT_CAP (the rest is counted as
 * truncated, never grown into). */
static void sink(void *ud, const uint8_t *p, size_t n) {
    kvmux_harness *h = ud;
    if (n > OUT_CAP - h->out_len) {
        n = OUT_CAP - h->out_len;
        h->truncated = 1;
    }
    if (n == 0) return;
    if (h->out_len + n > h->out_cap) {
        size_t cap = h->out_cap ? h->out_cap : 4096;
        while (cap < h->out_len + n) cap *= 2;
        if (cap > OUT_CAP) cap = OUT_CAP;
        uint8_t *p2 = realloc(h->out, cap);
        if (!p2) {
            h->truncated = 1;
            return;
        }
        h->out = p2;
        h->out_cap = cap;
    }
    memcpy(h->out + h->out_len, p, n);
    h->out_len += n;
}

int kvmux__harness_run(kvmux_harness *h, const uint8_t *in, size_t n, size_t chunk) {
    kvmux_server *srv = h->srv;
    kvmux_loop *l = &srv->loops[0];
    h->out_len = 0;
    h->truncated = 0;
    l->now = kvmux_clock_ms();
    kvmux_conn *c = kvmux__conn_new(srv, -1, NULL);
    if (!c) return -1;
    c->mem_sink = sink;
    c->mem_ud = h;
    atomic_fetch_add(&srv->nconns, 1); /* as accept.c does; destroy undoes it */
    KVMUX_STAT_ADD(l, accepted, 1);
    size_t before = l->nconns;
    kvmux__conn_attach(l, c);
    if (l->nconns == before) return -1; /* refused (and freed) */
    if (chunk == 0) chunk = n ? n : 1;
    /* c stays valid while l->nconns > before: teardown is the only way it
     * leaves the list, and nothing else connects to this loop. */
    while (n > 0 && l->nconns > before) {
        size_t k = n < chunk ? n : chunk;
        kvmux__conn_feed(c, in, k);
        in += k;
        n -= k;
        kvmux__loop_run_once(l, 0);
    }
    if (l->nconns > before) {
        kvmux__loop_run_once(l, 0);
        if (l->nconns > before) kvmux__conn_feed(c, NULL, 0);
    }
    for (int i = 0; i < SETTLE_ITERS && l->nconns > before; i++) kvmux__loop_run_once(l, 0);
    if (l->nconns > before) {
        kvmux__conn_flush(c); /* what it still owes, then gone */
        kvmux__conn_close(c, "harness: end of input");
        kvmux__loop_run_once(l, 0);
    }
    return 0;
}

const uint8_t *kvmux__harness_output(const kvmux_harness *h, size_t *len, int *truncated) {
    *len = h->out_len;
    if (truncated) *truncated = h->truncated;
    return h->out;
}

kvmux_server *kvmux__harness_server(kvmux_harness *h) { return h->srv; }
