/* libkvmux event-loop adapter for libevent 2 (header-only, as hiredis'
 * adapters/libevent.h; Debian: libevent-dev).
 *
 *     struct event_base *base = event_base_new();
 *     kvmux_client *c;
 *     kvmux_async_connect(&c, "127.0.0.1", 7878, NULL);
 *     kvmux_libevent_attach(c, base);
 *     kvmux_call_async(c, &req, KVMUX_TIMEOUT_DEFAULT, on_reply, ud);
 *     event_base_dispatch(base);   // returns when nothing is left to watch
 *     ...
 *     kvmux_close(c);               // on the loop thread; runs the owed callbacks
 *
 * One persistent event watches the client's socket for the events the
 * library asks for, one timer event serves its deadlines. The cleanup hook
 * (kvmux_close) removes both at once and frees them with the adapter,
 * right away, or, when kvmux_close was called from inside a reply
 * callback that this adapter's event is running, as that event's handler
 * returns: unlike the libuv adapter, nothing needs another loop
 * iteration. Everything runs on the loop's thread. Link with -levent (or
 * -levent_core).
 *
 * TLS and automatic reconnect (kvmux_options.tls, .reconnect) need
 * nothing more from the adapter: a reconnect keeps the socket's
 * descriptor number, and the library unwatches the old connection's
 * events (del_read / del_write) before its socket goes away.
 */
#ifndef KVMUX_ADAPTERS_LIBEVENT_H
#define KVMUX_ADAPTERS_LIBEVENT_H

#include <event2/event.h>
#include <stdlib.h>

#include "../../kvmux.h"

typedef struct kvmux_libevent {
    kvmux_client *client;   /* NULL once the client is being freed */
    struct event_base *base;
    struct event *io;       /* the socket: EV_READ / EV_WRITE, EV_PERSIST */
    struct event *timer;
    short events;           /* EV_READ | EV_WRITE being watched */
    int in_cb;              /* inside one of our libevent callbacks */
    int dead;               /* freed by kvmux_close during that callback */
} kvmux_libevent;

static inline void kvmux__libevent_free(kvmux_libevent *a) {
    event_free(a->io);
    event_free(a->timer);
    free(a);
}

/* A callback may close the client (kvmux_close from a reply callback):
 * the cleanup hook then only marks the adapter dead, and it is freed
 * here, once nothing of it is in use any more. */
static inline void kvmux__libevent_leave(kvmux_libevent *a) {
    a->in_cb = 0;
    if (a->dead) kvmux__libevent_free(a);
}

static inline void kvmux__libevent_on_io(evutil_socket_t fd, short what, void *arg) {
    kvmux_libevent *a = (kvmux_libevent *)arg;
    (void)fd;
    a->in_cb = 1;
    if (a->client && (what & EV_READ)) kvmux_async_handle_read(a->client);
    if (a->client && (what & EV_WRITE)) kvmux_async_handle_write(a->client);
    kvmux__libevent_leave(a);
}

static inline void kvmux__libevent_on_timer(evutil_socket_t fd, short what, void *arg) {
    kvmux_libevent *a = (kvmux_libevent *)arg;
    (void)fd;
    (void)what;
    a->in_cb = 1;
    if (a->client) kvmux_async_handle_timeout(a->client);
    kvmux__libevent_leave(a);
}

static inline void kvmux__libevent_update(kvmux_libevent *a, short add, short del) {
    short ev = (short)((a->events | add) & ~del);
    if (ev == a->events) return;
    a->events = ev;
    event_del(a->io);
    if (!ev) return;
    event_assign(a->io, a->base, kvmux_async_fd(a->client), (short)(ev | EV_PERSIST),
                 kvmux__libevent_on_io, a);
    event_add(a->io, NULL);
}

static inline void kvmux__libevent_add_read(void *d) {
    kvmux__libevent_update((kvmux_libevent *)d, EV_READ, 0);
}
static inline void kvmux__libevent_del_read(void *d) {
    kvmux__libevent_update((kvmux_libevent *)d, 0, EV_READ);
}
static inline void kvmux__libevent_add_write(void *d) {
    kvmux__libevent_update((kvmux_libevent *)d, EV_WRITE, 0);
}
static inline void kvmux__libevent_del_write(void *d) {
    kvmux__libevent_update((kvmux_libevent *)d, 0, EV_WRITE);
}

static inline void kvmux__libevent_schedule(void *d, int64_t timeout_ms) {
    kvmux_libevent *a = (kvmux_libevent *)d;
    if (timeout_ms < 0) {
        event_del(a->timer);
        return;
    }
    struct timeval tv;
    tv.tv_sec = (time_t)(timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)((timeout_ms % 1000) * 1000);
    event_add(a->timer, &tv); /* re-adding replaces the earlier arming */
}

static inline void kvmux__libevent_cleanup(void *d) {
    kvmux_libevent *a = (kvmux_libevent *)d;
    a->client = NULL;
    event_del(a->io);
    event_del(a->timer);
    if (a->in_cb) a->dead = 1; /* freed when that callback returns */
    else kvmux__libevent_free(a);
}

/* Attach an event-loop client (from kvmux_async_connect) to base. From
 * then on the loop drives it; kvmux_close(c) detaches and frees the
 * adapter. Returns 0, KVMUX_EINVAL (not an event-loop client, already
 * attached) or KVMUX_ENOMEM (libevent could not make the events).
 * Loop thread only. */
static inline int kvmux_libevent_attach(kvmux_client *c, struct event_base *base) {
    if (!c || !base || kvmux_async_fd(c) < 0) return KVMUX_EINVAL;
    kvmux_libevent *a = (kvmux_libevent *)calloc(1, sizeof *a);
    if (!a) return KVMUX_ENOMEM;
    a->base = base;
    a->io = event_new(base, kvmux_async_fd(c), EV_READ | EV_PERSIST, kvmux__libevent_on_io, a);
    a->timer = evtimer_new(base, kvmux__libevent_on_timer, a);
    if (!a->io || !a->timer) {
        if (a->io) event_free(a->io);
        if (a->timer) event_free(a->timer);
        free(a);
        return KVMUX_ENOMEM;
    }
    a->client = c;
    kvmux_async_hooks h;
    h.data = a;
    h.add_read = kvmux__libevent_add_read;
    h.del_read = kvmux__libevent_del_read;
    h.add_write = kvmux__libevent_add_write;
    h.del_write = kvmux__libevent_del_write;
    h.schedule_timer = kvmux__libevent_schedule;
    h.cleanup = kvmux__libevent_cleanup;
    int rc = kvmux_async_attach(c, &h);
    if (rc != 0) kvmux__libevent_free(a);
    return rc;
}

#endif /* KVMUX_ADAPTERS_LIBEVENT_H */
