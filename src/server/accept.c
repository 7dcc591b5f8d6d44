/* Accepting connections (loop 0) and handing them to loops round-robin.
 *
 * The listening socket lives in loop 0's epoll set. Each readable event
 * accepts up to ACCEPT_BATCH connections, so a burst of connects cannot
 * starve the requests of connections already open on loop 0. For each one
 * we enforce --max-connections (ERROR TOO_MANY_CONNECTIONS, then close),
 * set TCP_NODELAY (responses are small and latency matters more than
 * packet count), and either attach it here or post it to another loop's
 * inbox.
 *
 * Running out of file descriptors (EMFILE/ENFILE) must not turn the
 * level-triggered listener into a busy loop: we take it out of the epoll
 * set for ACCEPT_PAUSE_MS and log once per pause. */
#include <errno.h>
#include <stdlib.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "server_internal.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100
#define REJECT_LOG_INTERVAL_MS 1000

static void pause_accepting(kvmux_loop *l, int err) {
    kvmux_server *srv = l->srv;
    KVMUX_LOG_W("accept: %s; pausing accepts for %d ms (raise the fd limit, ulimit -n, "
                "or lower --max-connections)", strerror(err), ACCEPT_PAUSE_MS);
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, srv->listen.fd, NULL);
    l->listening = 0;
    if (kvmux__timer_arm(&l->timers, &l->accept_timer, l->now + ACCEPT_PAUSE_MS) != 0)
        kvmux__accept_resume(&l->accept_timer, l->now); /* cannot wait: retry now */
}

void kvmux__accept_resume(kvmux_timer *t, uint64_t now) {
    (void)now;
    kvmux_loop *l = (kvmux_loop *)((char *)t - offsetof(kvmux_loop, accept_timer));
    kvmux_server *srv = l->srv;
    if (l->phase != KVMUX_LOOP_RUNNING || srv->listen.fd < 0 || l->listening) return;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->listen};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, srv->listen.fd, &ev) == 0) l->listening = 1;
}

void kvmux__accept(kvmux_loop *l) {
    kvmux_server *srv = l->srv;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(srv->listen.fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) return;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                pause_accepting(l, err);
                return;
            }
            KVMUX_LOG_E("accept: %s", strerror(err));
            return;
        }
        uint32_t max = srv->cfg.max_connections;
        if (atomic_fetch_add(&srv->nconns, 1) >= max) {
            atomic_fetch_sub(&srv->nconns, 1);
            KVMUX_STAT_ADD(l, rejected, 1);
            if (l->now >= l->last_reject_log + REJECT_LOG_INTERVAL_MS) {
                l->last_reject_log = l->now;
                kvmux_log_event(KVMUX_LOG_WARN, "conn.rejected",
                                "reason=max-connections limit=%u", max);
            }
            char msg[128];
            snprintf(msg, sizeof msg, "server has reached its connection limit (%u)", max);
            kvmux__conn_reject(fd, KVMUX_ERR_TOO_MANY_CONNECTIONS, msg);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        kvmux_conn *c = kvmux__conn_new(srv, fd, (struct sockaddr *)&ss);
        if (!c) {
            atomic_fetch_sub(&srv->nconns, 1);
            kvmux__conn_reject(fd, KVMUX_ERR_INTERNAL, "server out of memory");
            continue;
        }
        if (l->rt.tls_ctx && kvmux__tls_conn_new(l->rt.tls_ctx, c) != 0) {
            /* c never owned fd: free it alone, refuse on the raw socket */
            free(c);
            atomic_fetch_sub(&srv->nconns, 1);
            kvmux__conn_reject(fd, KVMUX_ERR_INTERNAL, "server out of memory");
            continue;
        }
        KVMUX_STAT_ADD(l, accepted, 1);
        kvmux_loop *target = &srv->loops[l->next_target++ % srv->nloops];
        if (target == l) kvmux__conn_attach(l, c);
        else kvmux__loop_push_conn(target, c);
    }
}
