/* Run-time reconfiguration (SIGHUP): what may change while connections
 * stay up, and how every loop thread picks it up.
 *
 * Design: an epoch. The server's copy of the run-time values (the auth
 * token and the TLS context, struct kvmux_rt) is written under rt_mu and
 * then rt_epoch is bumped; each loop compares the epoch once per
 * iteration (one relaxed atomic load) and, when it moved, copies the
 * values under rt_mu into its own kvmux_rt. The request path (HELLO's
 * auth check, accept's SSL_new) reads only the loop's copy, without a
 * lock. The TLS context is reference-counted: the server and each loop
 * hold one reference, and every connection's SSL one more, so a reload
 * frees the old context only when the last connection made with it goes.
 * Values read outside the loops (maxmemory in STATS, the slow log
 * threshold) are plain atomics, and so is --busy-poll, which each loop
 * reads once per iteration so that it applies at once.
 *
 * Per-connection limits (timeouts, linger, WAIT cap, PING/CANCEL rates,
 * upload buffer) travel in kvmux_rt.lim and are copied into each
 * connection when it is attached: a reload applies them to new
 * connections only. Changing them under an open connection would mean
 * re-arming timers and rate buckets mid-request, and a client that
 * negotiated against the old values could be cut off for something it
 * did legitimately a moment earlier.
 *
 * The reload itself runs on loop 0 between iterations (the signal
 * handler only sets a flag and writes loop 0's eventfd), so reading the
 * configuration and the certificate files never races with anything but
 * the other loops, which see only whole epochs.
 *
 * Not here: the configuration file and the list of what cannot change
 * (config_file.c, main.c). */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "server_internal.h"

void kvmux__loop_refresh_rt(kvmux_loop *l) {
    kvmux_server *s = l->srv;
    uint64_t e = atomic_load_explicit(&s->rt_epoch, memory_order_acquire);
    if (e == l->rt_epoch) return;
    pthread_mutex_lock(&s->rt_mu);
    struct ssl_ctx_st *old = l->rt.tls_ctx;
    l->rt = s->rt;
    kvmux__tls_ctx_ref(l->rt.tls_ctx);
    l->rt_epoch = atomic_load_explicit(&s->rt_epoch, memory_order_relaxed);
    pthread_mutex_unlock(&s->rt_mu);
    kvmux__tls_ctx_unref(old);
}

void kvmux__loop_rt_deinit(kvmux_loop *l) {
    kvmux__tls_ctx_unref(l->rt.tls_ctx);
    memset(&l->rt, 0, sizeof l->rt);
}

void kvmux_server_set_reload_hook(kvmux_server *s, kvmux_server_reload_fn fn,
                                  void *user_data) {
    s->reload_fn = fn;
    s->reload_ud = user_data;
}

void kvmux_server_request_reload(kvmux_server *s) {
    atomic_store_explicit(&s->reload_requested, 1, memory_order_release);
    if (s->nloops && s->loops[0].wake.fd >= 0) kvmux__loop_wake(&s->loops[0]);
}

void kvmux__server_maybe_reload(kvmux_server *s) {
    if (!atomic_load_explicit(&s->reload_requested, memory_order_relaxed)) return;
    if (!atomic_exchange(&s->reload_requested, 0)) return;
    if (s->reload_fn) s->reload_fn(s, s->reload_ud);
    else kvmux_log_event(KVMUX_LOG_WARN, "reload.ignored", "reason=\"no reload hook\"");
}

void kvmux__conn_limits_from(kvmux_conn_limits *lim, const kvmux_server_config *cfg) {
    lim->handshake_timeout_ms = cfg->handshake_timeout_ms;
    lim->idle_timeout_ms = cfg->idle_timeout_ms;
    lim->write_timeout_ms = cfg->write_timeout_ms;
    lim->close_linger_ms = cfg->close_linger_ms;
    lim->max_wait_ms = cfg->max_wait_ms;
    lim->max_ping_rate = cfg->max_ping_rate;
    lim->max_cancel_rate = cfg->max_cancel_rate;
    lim->max_upload_buffer = cfg->max_upload_buffer;
}

int kvmux_server_apply_runtime(kvmux_server *s, const kvmux_server_config *c, char *err,
                               size_t errlen) {
    /* c was validated against its own --max-value, but the running one
     * (restart-only) is what an upload may reach. */
    if (c->max_upload_buffer < s->cfg.max_value) {
        snprintf(err, errlen, "--max-upload-buffer %llu is smaller than the running "
                 "--max-value %u", (unsigned long long)c->max_upload_buffer, s->cfg.max_value);
        return -1;
    }
    kvmux_rt next;
    memset(&next, 0, sizeof next);
    kvmux__conn_limits_from(&next.lim, c);
    if (kvmux__auth_load(&next, c, err, errlen) != 0) return -1;
    /* TLS is on or off for the life of the port: a reload only renews the
     * certificate, key and CA of a TLS server. */
    pthread_mutex_lock(&s->rt_mu);
    int tls_on = s->rt.tls_ctx != NULL;
    pthread_mutex_unlock(&s->rt_mu);
    if (tls_on && c->tls_cert) {
        if (kvmux__tls_ctx_build(c, &next.tls_ctx, err, errlen) != 0) {
            memset(next.auth, 0, sizeof next.auth);
            return -1;
        }
    }
    pthread_mutex_lock(&s->rt_mu);
    struct ssl_ctx_st *old = NULL;
    if (next.tls_ctx) {
        old = s->rt.tls_ctx;
    } else {
        next.tls_ctx = s->rt.tls_ctx; /* unchanged: keep the server's reference */
    }
    s->rt = next;
    atomic_store(&s->auth_required, next.auth_len > 0);
    atomic_fetch_add_explicit(&s->rt_epoch, 1, memory_order_release);
    pthread_mutex_unlock(&s->rt_mu);
    kvmux__tls_ctx_unref(old); /* loops and connections hold their own */
    memset(next.auth, 0, sizeof next.auth);

    atomic_store_explicit(&s->rt_busy_poll_us, c->busy_poll_us, memory_order_relaxed);
    kvmux_store_set_maxmemory(s->store, c->maxmemory, (int)c->maxmemory_policy);
    atomic_store(&s->rt_maxmemory, c->maxmemory);
    kvmux__metrics_set_slowlog(s->metrics, c->slowlog_threshold_us, c->slowlog_max_len);
    for (uint32_t i = 0; i < s->nloops; i++)
        if (s->loops[i].wake.fd >= 0) kvmux__loop_wake(&s->loops[i]);
    return 0;
}
