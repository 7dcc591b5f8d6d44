/* libkvmux event-loop adapter for libuv (header-only, as hiredis'
 * adapters/libuv.h).
 *
 *     kvmux_client *c;
 *     kvmux_async_connect(&c, "127.0.0.1", 7878, NULL);
 *     kvmux_libuv_attach(c, uv_default_loop());
 *     kvmux_call_async(c, &req, KVMUX_TIMEOUT_DEFAULT, on_reply, ud);
 *     uv_run(uv_default_loop(), UV_RUN_DEFAULT);
 *     ...
 *     kvmux_close(c);   // on the loop thread; runs the owed callbacks
 *
 * One uv_poll_t watches the client's socket and one uv_timer_t serves the
 * client's deadlines. Both are released through uv_close when the client
 * is freed (the cleanup hook), and their memory when libuv has finished
 * closing them, so run the loop once more after kvmux_close to let that
 * happen (uv_run returns when nothing is left). Everything runs on the
 * loop's thread. Link with -luv.
 *
 * TLS and automatic reconnect (kvmux_options.tls, .reconnect) need
 * nothing more from the adapter: a reconnect keeps the socket's
 * descriptor number, and the library unwatches the old connection's
 * events (del_read / del_write) before its socket goes away.
 */
#ifndef KVMUX_ADAPTERS_LIBUV_H
#define KVMUX_ADAPTERS_LIBUV_H

#include <stdlib.h>
#include <uv.h>

#include "../../kvmux.h"

typedef struct kvmux_libuv {
    kvmux_client *client;   /* NULL once the client has been freed */
    uv_poll_t poll;
    uv_timer_t timer;
    int events;             /* UV_READABLE | UV_WRITABLE being watched */
    int open_handles;       /* handles not yet closed by libuv */
} kvmux_libuv;

static inline void kvmux__libuv_on_poll(uv_poll_t *h, int status, int events) {
    kvmux_libuv *a = (kvmux_libuv *)h->data;
    if (status < 0) {
        /* An error on the fd: the next recv/send reports it properly. */
        events = a->events;
    }
    if (a->client && (events & UV_READABLE)) kvmux_async_handle_read(a->client);
    /* A callback run by handle_read may have closed (freed) the client:
     * the cleanup hook then cleared a->client (a itself lives on until
     * libuv has closed both handles). */
    if (a->client && (events & UV_WRITABLE)) kvmux_async_handle_write(a->client);
}

static inline void kvmux__libuv_on_timer(uv_timer_t *t) {
    kvmux_libuv *a = (kvmux_libuv *)t->data;
    if (a->client) kvmux_async_handle_timeout(a->client);
}

static inline void kvmux__libuv_update(kvmux_libuv *a, int add, int del) {
    int ev = (a->events | add) & ~del;
    if (ev == a->events) return;
    a->events = ev;
    if (ev) uv_poll_start(&a->poll, ev, kvmux__libuv_on_poll);
    else uv_poll_stop(&a->poll);
}

static inline void kvmux__libuv_add_read(void *d) {
    kvmux__libuv_update((kvmux_libuv *)d, UV_READABLE, 0);
}
static inline void kvmux__libuv_del_read(void *d) {
    kvmux__libuv_update((kvmux_libuv *)d, 0, UV_READABLE);
}
static inline void kvmux__libuv_add_write(void *d) {
    kvmux__libuv_update((kvmux_libuv *)d, UV_WRITABLE, 0);
}
static inline void kvmux__libuv_del_write(void *d) {
    kvmux__libuv_update((kvmux_libuv *)d, 0, UV_WRITABLE);
}

static inline void kvmux__libuv_schedule(void *d, int64_t timeout_ms) {
    kvmux_libuv *a = (kvmux_libuv *)d;
    if (timeout_ms < 0) uv_timer_stop(&a->timer);
    else uv_timer_start(&a->timer, kvmux__libuv_on_timer, (uint64_t)timeout_ms, 0);
}

static inline void kvmux__libuv_on_close(uv_handle_t *h) {
    kvmux_libuv *a = (kvmux_libuv *)h->data;
    if (--a->open_handles == 0) free(a);
}

static inline void kvmux__libuv_cleanup(void *d) {
    kvmux_libuv *a = (kvmux_libuv *)d;
    a->client = NULL;
    uv_poll_stop(&a->poll);
    uv_timer_stop(&a->timer);
    uv_close((uv_handle_t *)&a->poll, kvmux__libuv_on_close);
    uv_close((uv_handle_t *)&a->timer, kvmux__libuv_on_close);
}

/* Attach an event-loop client (from kvmux_async_connect) to loop. From
 * then on the loop drives it; kvmux_close(c) detaches and releases the
 * adapter. Returns 0, KVMUX_EINVAL (not an event-loop client, already
 * attached) or KVMUX_ENOMEM / KVMUX_EIO (libuv refused the handles).
 * Loop thread only. */
static inline int kvmux_libuv_attach(kvmux_client *c, uv_loop_t *loop) {
    if (!c || !loop || kvmux_async_fd(c) < 0) return KVMUX_EINVAL;
    kvmux_libuv *a = (kvmux_libuv *)calloc(1, sizeof *a);
    if (!a) return KVMUX_ENOMEM;
    if (uv_poll_init(loop, &a->poll, kvmux_async_fd(c)) != 0) {
        free(a);
        return KVMUX_EIO;
    }
    a->poll.data = a;
    a->open_handles = 1;
    if (uv_timer_init(loop, &a->timer) != 0) {
        uv_close((uv_handle_t *)&a->poll, kvmux__libuv_on_close);
        return KVMUX_EIO;
    }
    a->timer.data = a;
    a->open_handles = 2;
    a->client = c;
    kvmux_async_hooks h;
    h.data = a;
    h.add_read = kvmux__libuv_add_read;
    h.del_read = kvmux__libuv_del_read;
    h.add_write = kvmux__libuv_add_write;
    h.del_write = kvmux__libuv_del_write;
    h.schedule_timer = kvmux__libuv_schedule;
    h.cleanup = kvmux__libuv_cleanup;
    int rc = kvmux_async_attach(c, &h);
    if (rc != 0) kvmux__libuv_cleanup(a);
    return rc;
}

#endif /* KVMUX_ADAPTERS_LIBUV_H */
