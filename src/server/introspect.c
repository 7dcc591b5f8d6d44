/* Introspection over the protocol (docs/PROTOCOL.md section 4.2):
 * SLOWLOG (opcode 13) reads or resets the slow log that metrics.c
 * records, and CLIENT_LIST (opcode 14) lists every connection of every
 * loop, one text line each, like Redis's SLOWLOG and CLIENT LIST.
 *
 * Both answer OK with a u64 count in the extras (entries in the log,
 * connections) and text lines in the value. The value is bounded by what
 * the client accepts (its MAX_FRAME_SIZE and MAX_VALUE_SIZE) and by
 * INTROSPECT_REPLY_MAX; lines that do not fit are left out, and the count
 * tells the client how many there were.
 *
 * CLIENT_LIST across loops: a loop's connections belong to its thread, so
 * the list is read under each loop's conns_mu (which the owner takes to
 * link, unlink and name a connection) and each connection's figures come
 * from its kvmux_conn_info, relaxed atomics the owner refreshes after
 * every read and flush (conn.c). One lock at a time, never while the
 * owner waits for anything, so no lock order and no deadlock. The
 * requesting connection's own figures are refreshed first, so it sees its
 * own CLIENT_LIST in flight.
 *
 * Not here: recording slow requests (metrics.c), the text of STATS
 * (stats.c). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "monotime.h"
#include "server_internal.h"

/* Largest introspection reply value, whatever the client accepts: one
 * admin answer should not tie up megabytes of a loop's output queue. */
#define INTROSPECT_REPLY_MAX (1024u * 1024)
#define CLIENT_LINE_MAX (KVMUX_MAX_NAME * 4 + 512)

/* The largest value c accepts in an OK reply with 8 bytes of extras,
 * capped at INTROSPECT_REPLY_MAX. */
static size_t reply_room(const kvmux_conn *c) {
    size_t room = c->sess.peer.max_frame_size - KVMUX_FRAME_HDR_LEN - 8;
    if (room > c->sess.peer.max_value_size) room = c->sess.peer.max_value_size;
    return room < INTROSPECT_REPLY_MAX ? room : INTROSPECT_REPLY_MAX;
}

void kvmux__conn_info_update(kvmux_conn *c) {
    uint32_t out = c->sess.outstanding, max = c->sess.local.max_outstanding;
    atomic_store_explicit(&c->info.in_flight, out, memory_order_relaxed);
    atomic_store_explicit(&c->info.credits, out < max ? max - out : 0, memory_order_relaxed);
}

void kvmux__conn_info_hello(kvmux_conn *c, const uint8_t *name, size_t len) {
    pthread_mutex_lock(&c->loop->conns_mu);
    if (len > KVMUX_MAX_NAME) len = KVMUX_MAX_NAME;
    if (len) memcpy(c->info.name, name, len);
    c->info.name[len] = '\0';
    pthread_mutex_unlock(&c->loop->conns_mu);
    atomic_store_explicit(&c->info.version, c->sess.version, memory_order_relaxed);
    kvmux__conn_info_update(c);
}

/* ---- SLOWLOG ---- */

void kvmux__slowlog_respond(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_metrics *m = c->loop->srv->metrics;
    uint32_t sub = kvmux_load_u32be(f->extras);
    uint32_t count = kvmux_load_u32be(f->extras + 4);
    if (sub == KVMUX_SLOWLOG_LEN) {
        kvmux__conn_respond_u64(c, f->request_id, kvmux__slowlog_len(m), NULL, 0);
        return;
    }
    if (sub == KVMUX_SLOWLOG_RESET) {
        uint32_t dropped = kvmux__slowlog_reset(m);
        kvmux_log_event(KVMUX_LOG_INFO, "slowlog.reset", "conn=%llu entries=%u",
                        (unsigned long long)c->id, dropped);
        kvmux__conn_respond_u64(c, f->request_id, dropped, NULL, 0);
        return;
    }
    if (sub != KVMUX_SLOWLOG_GET) {
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "unknown SLOWLOG subcommand %u (GET 0, LEN 1, RESET 2)", sub);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, msg);
        return;
    }
    uint32_t len = kvmux__slowlog_len(m);
    uint32_t want = count && count < len ? count : len;
    size_t cap = reply_room(c);
    if ((size_t)want * KVMUX_SLOWLOG_LINE_MAX + 1 < cap)
        cap = (size_t)want * KVMUX_SLOWLOG_LINE_MAX + 1;
    char *buf = malloc(cap);
    if (!buf) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return;
    }
    /* The log may have changed since len was read: the lines are what it
     * holds now, the count what it held a moment ago (both exact). */
    size_t n = kvmux__slowlog_format(m, want, buf, cap);
    kvmux__conn_respond_u64(c, f->request_id, len, (const uint8_t *)buf, n);
    free(buf);
}

/* ---- CLIENT_LIST ---- */

typedef struct text {
    char *p;
    size_t len, cap, max;
    int full; /* a line did not fit: no more are added */
    int oom;
} text;

static void text_add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(text *t, const char *fmt, ...) {
    char line[CLIENT_LINE_MAX];
    if (t->full) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line || t->len + (size_t)n > t->max) {
        t->full = 1;
        return;
    }
    if (t->len + (size_t)n > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 4096;
        while (ncap < t->len + (size_t)n) ncap *= 2;
        if (ncap > t->max) ncap = t->max;
        char *p = realloc(t->p, ncap);
        if (!p) {
            t->full = t->oom = 1;
            return;
        }
        t->p = p;
        t->cap = ncap;
    }
    memcpy(t->p + t->len, line, (size_t)n);
    t->len += (size_t)n;
}

/* One line for c (conns_mu of its loop held). */
static void client_line(text *t, const kvmux_conn *c, uint64_t now) {
    const kvmux_conn_info *i = &c->info;
    uint64_t last = atomic_load_explicit(&i->last_input_ms, memory_order_relaxed);
    char qp[sizeof c->peer * 4 + 8], qn[KVMUX_MAX_NAME * 4 + 8];
    text_add(t,
             "id=%llu addr=%s proto=%u in_flight=%u credits=%u bytes_in=%llu "
             "bytes_out=%llu age_ms=%llu idle_ms=%llu tls=%u loop=%u name=%s\n",
             (unsigned long long)c->id, kvmux_log_quote(qp, sizeof qp, c->peer),
             (unsigned)atomic_load_explicit(&i->version, memory_order_relaxed),
             (unsigned)atomic_load_explicit(&i->in_flight, memory_order_relaxed),
             (unsigned)atomic_load_explicit(&i->credits, memory_order_relaxed),
             (unsigned long long)atomic_load_explicit(&i->bytes_in, memory_order_relaxed),
             (unsigned long long)atomic_load_explicit(&i->bytes_out, memory_order_relaxed),
             (unsigned long long)(now > i->created_ms ? now - i->created_ms : 0),
             (unsigned long long)(now > last ? now - last : 0),
             (unsigned)atomic_load_explicit(&i->tls, memory_order_relaxed), c->loop->id,
             i->name[0] ? kvmux_log_quote(qn, sizeof qn, i->name) : "\"\"");
}

void kvmux__client_list_respond(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_server *srv = c->loop->srv;
    text t = {.max = reply_room(c)};
    uint64_t total = 0, now = kvmux_clock_ms();
    kvmux__conn_info_update(c); /* count this CLIENT_LIST as in flight */
    for (uint32_t li = 0; li < srv->nloops; li++) {
        kvmux_loop *l = &srv->loops[li];
        pthread_mutex_lock(&l->conns_mu);
        for (const kvmux_conn *x = l->conns; x; x = x->next) {
            total++;
            client_line(&t, x, now);
        }
        pthread_mutex_unlock(&l->conns_mu);
    }
    if (t.oom) {
        free(t.p);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return;
    }
    kvmux__conn_respond_u64(c, f->request_id, total, (const uint8_t *)t.p, t.len);
    free(t.p);
}
