/* kvmuxd server instance: ties the store, the loops and the listening
 * socket together, and owns the process-independent lifecycle (new / run /
 * stop / free) so the server can be embedded and several can share a
 * process. Signals, option parsing and stdout belong to main.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "monotime.h"
#include "server_internal.h"

#define LISTEN_BACKLOG 511
#define READ_PAUSE_CAP (8u * 1024 * 1024)
#define FD_RESERVE 32 /* listener, epoll and eventfds, logs, slack */

static int open_listener(kvmux_server *s, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    int family;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s->cfg.bind, &a4->sin_addr) == 1) {
        family = AF_INET;
        a4->sin_family = AF_INET;
        a4->sin_port = htons(s->cfg.port);
        sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, s->cfg.bind, &a6->sin6_addr) == 1) {
        family = AF_INET6;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(s->cfg.port);
        sl = sizeof *a6;
    } else {
        return kvmux_errf(err, errlen, "--bind '%s' is not an IPv4 or IPv6 address literal",
                    s->cfg.bind);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return kvmux_errf(err, errlen, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        int e = errno;
        close(fd);
        return kvmux_errf(err, errlen, "cannot bind %s port %u: %s", s->cfg.bind, s->cfg.port,
                    strerror(e));
    }
    if (listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        return kvmux_errf(err, errlen, "listen: %s", strerror(e));
    }
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        int e = errno;
        close(fd);
        return kvmux_errf(err, errlen, "getsockname: %s", strerror(e));
    }
    s->port = ntohs(family == AF_INET ? a4->sin_port : a6->sin6_port);
    s->listen.kind = KVMUX_IO_LISTEN;
    s->listen.fd = fd;
    return 0;
}

/* Make sure max_connections sockets can exist: raise the soft fd limit
 * toward the hard one if needed, else warn (accept would hit EMFILE). */
static void check_fd_limit(const kvmux_server *s) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t need = (rlim_t)s->cfg.max_connections + FD_RESERVE + 2u * s->nloops;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = need;
        if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
        struct rlimit nrl = {want, rl.rlim_max};
        if (want > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &nrl) == 0) rl.rlim_cur = want;
        if (rl.rlim_cur < need)
            KVMUX_LOG_W("--max-connections %u needs about %llu file descriptors but the "
                        "limit is %llu: accepts will fail (EMFILE) before the limit; "
                        "raise ulimit -n", s->cfg.max_connections,
                        (unsigned long long)need, (unsigned long long)rl.rlim_cur);
    }
}

/* kvmux_server_new, and the in-memory harness's server (listen == 0: no
 * socket at all; connections are made with kvmux__harness_*). */
int kvmux__server_create(kvmux_server **out, const kvmux_server_config *cfg, int listen,
                         char *err, size_t errlen) {
    if (kvmux_server_config_validate(cfg, err, errlen) != 0) return -1;
    kvmux_server *s = calloc(1, sizeof *s);
    if (!s) return kvmux_errf(err, errlen, "out of memory");
    s->cfg = *cfg;
    snprintf(s->bind_copy, sizeof s->bind_copy, "%s", cfg->bind);
    s->cfg.bind = s->bind_copy;
    snprintf(s->name_copy, sizeof s->name_copy, "%s", cfg->name ? cfg->name : "kvmuxd");
    s->cfg.name = s->name_copy;
    s->listen.fd = -1;
    s->start_ms = kvmux_clock_ms();
    atomic_init(&s->stop_requested, 0);
    atomic_init(&s->nconns, 0);
    atomic_init(&s->next_conn_id, 0);
    atomic_init(&s->rt_epoch, 1); /* loops start at 0: they copy rt at once */
    atomic_init(&s->auth_required, 0);
    atomic_init(&s->rt_maxmemory, cfg->maxmemory);
    atomic_init(&s->reload_requested, 0);
    s->cfg.file_buf_ = NULL; /* the caller's */
    if (pthread_mutex_init(&s->rt_mu, NULL) != 0) {
        free(s);
        return kvmux_errf(err, errlen, "cannot create a mutex");
    }

    s->settings.max_frame_size = cfg->max_frame;
    s->settings.max_outstanding = cfg->max_outstanding;
    s->settings.max_key_size = cfg->max_key;
    s->settings.max_value_size = cfg->max_value; /* v1 connections: lowered */
    s->settings.initial_window = cfg->initial_window;
    s->settings.connection_window = cfg->connection_window;
    /* Pause reading at half the slow-reader cap, but at most 8 MiB and at
     * least one frame (see conn.c). */
    uint64_t pause = cfg->max_output_buffer / 2;
    if (pause > READ_PAUSE_CAP) pause = READ_PAUSE_CAP;
    if (pause < cfg->max_frame) pause = cfg->max_frame;
    s->read_pause_bytes = (size_t)pause;

    kvmux_store_options so;
    kvmux_store_options_init(&so);
    so.shards = cfg->store_shards;
    so.fire = kvmux__wait_fire;
    so.fire_user_data = s;
    so.slot_keys = cfg->cluster_group != 0; /* migrations' purge checks, CLUSTER slotkeys */
    if (cfg->replica_id) {
        /* Replicated: the store's time is the log's (src/replica/fsm.h). */
        atomic_init(&s->repl_clock.ms, 0);
        so.clock = kvmux_fsm_clock_read;
        so.clock_user_data = &s->repl_clock;
    }
    if (kvmux_store_new(&s->store, &so) != 0) {
        free(s);
        return kvmux_errf(err, errlen, "cannot create the store (out of memory or no randomness)");
    }
    kvmux_store_set_maxmemory(s->store, cfg->maxmemory, (int)cfg->maxmemory_policy);
    s->nloops = cfg->threads;
    s->loops = calloc(s->nloops, sizeof *s->loops);
    if (!s->loops) {
        kvmux_server_free(s);
        return kvmux_errf(err, errlen, "out of memory");
    }
    for (uint32_t i = 0; i < s->nloops; i++) {
        if (kvmux__loop_init(&s->loops[i], s, i) != 0) {
            kvmux_server_free(s);
            return kvmux_errf(err, errlen, "cannot create event loop %u: %s", i, strerror(errno));
        }
    }
    if (kvmux__repl_start(s, err, errlen) != 0) {
        kvmux_server_free(s);
        return -1;
    }
    if (cfg->aof_path) {
        /* Before listening: the store is complete when the first client
         * can connect. */
        kvmux_aof_options ao;
        kvmux_aof_options_init(&ao);
        ao.path = cfg->aof_path;
        ao.fsync = (int)cfg->aof_fsync;
        ao.repair = (int)cfg->aof_repair;
        ao.rewrite_min_size = cfg->aof_rewrite_min;
        ao.notify = kvmux__durable_notify;
        ao.notify_user_data = s;
        if (kvmux_aof_open(&s->aof, &ao, s->store, err, errlen) != 0) {
            kvmux_server_free(s);
            return -1;
        }
    }
    s->cfg.aof_path = NULL; /* borrowed: the log keeps its own copy */
    if (kvmux__auth_load(&s->rt, cfg, err, errlen) != 0) {
        kvmux_server_free(s);
        return -1;
    }
    atomic_store(&s->auth_required, s->rt.auth_len > 0);
    kvmux__conn_limits_from(&s->rt.lim, cfg);
    atomic_store(&s->rt_busy_poll_us, cfg->busy_poll_us);
    s->cfg.requirepass = s->cfg.requirepass_file = NULL; /* borrowed: copied */
    if (kvmux__tls_ctx_build(cfg, &s->rt.tls_ctx, err, errlen) != 0) {
        kvmux_server_free(s);
        return -1;
    }
    s->cfg.tls_cert = s->cfg.tls_key = s->cfg.tls_ca = NULL; /* borrowed: loaded */
    if (kvmux__metrics_new(s, cfg, err, errlen) != 0) {
        kvmux_server_free(s);
        return -1;
    }
    s->cfg.metrics_addr = s->cfg.log_file = s->cfg.config_file = NULL; /* borrowed */
    /* Before any loop runs: each loop's copy of the token and context
     * (the in-memory harness never runs kvmux__loop_main). */
    for (uint32_t i = 0; i < s->nloops; i++) kvmux__loop_refresh_rt(&s->loops[i]);
    if (listen && open_listener(s, err, errlen) != 0) {
        kvmux_server_free(s);
        return -1;
    }
    if (kvmux__mapwatch_start(s, cfg, err, errlen) != 0 ||
        kvmux__migrate_start(s, cfg, err, errlen) != 0) {
        kvmux_server_free(s);
        return -1;
    }
    s->cfg.cluster_map = NULL; /* borrowed: the watcher keeps its own copy */
    check_fd_limit(s);
    *out = s;
    return 0;
}

int kvmux_server_new(kvmux_server **out, const kvmux_server_config *cfg, char *err,
                     size_t errlen) {
    return kvmux__server_create(out, cfg, 1, err, errlen);
}

uint16_t kvmux_server_port(const kvmux_server *s) { return s->port; }
uint16_t kvmux_server_metrics_port(const kvmux_server *s) {
    return kvmux__metrics_port(s->metrics);
}
const char *kvmux_server_address(const kvmux_server *s) { return s->cfg.bind; }

void kvmux_server_stop(kvmux_server *s) {
    atomic_store_explicit(&s->stop_requested, 1, memory_order_release);
    for (uint32_t i = 0; i < s->nloops; i++)
        if (s->loops[i].wake.fd >= 0) kvmux__loop_wake(&s->loops[i]);
}

int kvmux_server_run(kvmux_server *s) {
    const kvmux_server_config *c = &s->cfg;
    kvmux_log_event(KVMUX_LOG_INFO, "server.start",
                    "version=%s pid=%d addr=%s port=%u metrics_port=%u threads=%u "
                    "max_connections=%u max_frame=%u credits=%u protocol_max=%u max_value=%u "
                    "tls=%d auth=%d",
                    KVMUXD_VERSION, (int)getpid(), c->bind, s->port,
                    kvmux__metrics_port(s->metrics), s->nloops, c->max_connections,
                    c->max_frame, c->max_outstanding, c->max_protocol, c->max_value,
                    s->rt.tls_ctx != NULL, s->rt.auth_len > 0);
    s->running = 1;
    int rc = 0;
    uint32_t started = 1;
    for (uint32_t i = 1; i < s->nloops; i++, started++) {
        if (pthread_create(&s->loops[i].thread, NULL, kvmux__loop_main, &s->loops[i]) != 0) {
            KVMUX_LOG_E("cannot start loop thread %u: %s", i, strerror(errno));
            kvmux_server_stop(s);
            rc = -1;
            break;
        }
        s->loops[i].thread_started = 1;
    }
    kvmux__loop_main(&s->loops[0]);
    for (uint32_t i = 1; i < started; i++) {
        pthread_join(s->loops[i].thread, NULL);
        s->loops[i].thread_started = 0;
    }
    s->running = 0;
    kvmux_server_stats st;
    kvmux_server_get_stats(s, &st);
    uint64_t reqs = 0;
    for (int i = 0; i <= KVMUX_OP_MAX; i++) reqs += st.requests[i];
    kvmux_log_event(KVMUX_LOG_INFO, "server.stop",
                    "connections=%llu requests=%llu protocol_errors=%llu keys=%llu",
                (unsigned long long)st.connections_accepted, (unsigned long long)reqs,
                (unsigned long long)st.protocol_errors, (unsigned long long)st.keys);
    if (st.aof_enabled)
        kvmux_log_event(KVMUX_LOG_INFO, "aof.summary",
                        "size=%llu writes=%llu fsyncs=%llu acks_held=%llu acks_per_fsync=%.1f "
                        "compactions=%llu%s",
                    (unsigned long long)st.aof_size, (unsigned long long)st.aof_writes,
                    (unsigned long long)st.aof_fsyncs, (unsigned long long)st.writes_held,
                    st.aof_fsyncs ? (double)st.writes_held / (double)st.aof_fsyncs : 0.0,
                    (unsigned long long)st.aof_rewrites,
                    st.aof_failed ? " failed=1" : "");
    if (st.expired_keys || st.evicted_keys || st.oom_refused)
        kvmux_log_event(KVMUX_LOG_INFO, "memory.summary",
                        "used_memory=%llu expired=%llu expired_active=%llu evicted=%llu "
                        "oom_refused=%llu",
                    (unsigned long long)st.used_memory, (unsigned long long)st.expired_keys,
                    (unsigned long long)st.expired_keys_active,
                    (unsigned long long)st.evicted_keys, (unsigned long long)st.oom_refused);
    return rc;
}

void kvmux_server_get_stats(kvmux_server *s, kvmux_server_stats *st) {
    memset(st, 0, sizeof *st);
#define SUM(dst, field) dst += atomic_load_explicit(&l->stats.field, memory_order_relaxed)
    for (uint32_t i = 0; i < s->nloops; i++) {
        kvmux_loop *l = &s->loops[i];
        SUM(st->connections_accepted, accepted);
        SUM(st->connections_rejected, rejected);
        for (int op = 0; op <= KVMUX_OP_MAX; op++) SUM(st->requests[op], requests[op]);
        SUM(st->pings, pings);
        SUM(st->busy, busy);
        SUM(st->protocol_errors, protocol_errors);
        SUM(st->handshake_timeouts, handshake_timeouts);
        SUM(st->slow_reader_disconnects, slow_readers);
        SUM(st->waits_parked, waits_parked);
        SUM(st->waits_fired, waits_fired);
        SUM(st->waits_timed_out, waits_timed_out);
        SUM(st->bytes_in, bytes_in);
        SUM(st->bytes_out, bytes_out);
        SUM(st->idle_timeouts, idle_timeouts);
        SUM(st->write_timeouts, write_timeouts);
        SUM(st->floods, floods);
        SUM(st->cancels, cancels);
        SUM(st->goaways, goaways);
        SUM(st->uploads, uploads);
        SUM(st->streams, streams);
        SUM(st->deadline_expired, deadline_expired);
        SUM(st->writes_held, writes_held);
        SUM(st->aof_refused, aof_refused);
        SUM(st->oom_refused, oom_refused);
        SUM(st->auth_failures, auth_failures);
        SUM(st->tls_handshake_failures, tls_handshake_failures);
        SUM(st->tls_errors, tls_errors);
        SUM(st->cluster_try_again, cluster_try_again);
        SUM(st->cluster_wrong_shard, cluster_wrong_shard);
        SUM(st->cluster_try_again_migrating, cluster_try_again_migrating);
        for (int k = 0; k <= KVMUX_STATUS_MAX; k++) SUM(st->responses[k], responses[k]);
        for (int k = 0; k < KVMUX_STATS_ERR_SLOTS; k++) SUM(st->wire_errors[k], wire_errors[k]);
    }
#undef SUM
    st->uptime_ms = kvmux_clock_ms() - s->start_ms;
    st->connections_current = atomic_load(&s->nconns);
    kvmux_store_stats ss;
    kvmux_store_get_stats(s->store, &ss);
    st->keys = ss.keys;
    st->key_bytes = ss.bytes;
    st->expired_keys = ss.expired;
    st->expired_keys_active = ss.expired_active;
    st->evicted_keys = ss.evicted;
    st->used_memory = ss.used_memory;
    st->maxmemory = atomic_load(&s->rt_maxmemory); /* SIGHUP may change it */
    if (s->aof) {
        kvmux_aof_stats as;
        kvmux_aof_get_stats(s->aof, &as);
        st->aof_enabled = 1;
        st->aof_failed = as.failed;
        st->aof_rewriting = as.rewriting;
        st->aof_size = as.file_size;
        st->aof_pending = as.appended - as.durable;
        st->aof_fsyncs = as.fsyncs;
        st->aof_writes = as.writes;
        st->aof_rewrites = as.rewrites;
        st->aof_rewrite_failures = as.rewrite_failures;
    }
}

void kvmux_server_free(kvmux_server *s) {
    if (!s) return;
    /* The log first: it writes and syncs what is buffered, and its writer
     * thread stops waking the loops before they go away. */
    kvmux_aof_close(s->aof);
    s->aof = NULL;
    /* The migrate thread and the map watcher use the node and wake loop 0:
     * they go first (the migrate thread before the watcher, whose
     * connection settings it uses). */
    kvmux__migrate_stop(s);
    kvmux__mapwatch_stop(s);
    /* Replication before the loops: the node hands every batch in flight
     * back to its loop's inbox, which the loop's deinit then frees. */
    kvmux__repl_stop(s);
    /* Loops: tearing down a connection cancels its WAITs in the
     * store, so the store must outlive them. */
    for (uint32_t i = 0; s->loops && i < s->nloops; i++) kvmux__loop_deinit(&s->loops[i]);
    kvmux__repl_free(s);
    kvmux__metrics_free(s); /* before the loops' memory: it clears their pointers */
    free(s->loops);
    if (s->listen.fd >= 0) close(s->listen.fd);
    kvmux__tls_ctx_unref(s->rt.tls_ctx);
    memset(s->rt.auth, 0, sizeof s->rt.auth);
    pthread_mutex_destroy(&s->rt_mu);
    kvmux_store_free(s->store);
    free(s);
}
