/* kvmuxd entry point: read the configuration (--config FILE and the
 * command line, which wins), set up logging, install signal handlers,
 * print the "listening on ADDR:PORT" line, tell systemd it is ready, run
 * one server instance. Everything else lives in the server instance
 * (server.h), so it can be embedded.
 *
 * Signals: SIGINT/SIGTERM drain and stop; SIGHUP reloads (the handler
 * only sets a flag and wakes loop 0, which calls reload() below between
 * iterations): the log file is reopened, the configuration read again,
 * and what can change at run time applied (kvmux_server_apply_runtime);
 * each option that changed but cannot change while running is logged by
 * name and keeps its value. A configuration that no longer parses changes
 * nothing (logged). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "notify.h"
#include "server.h"

/* The one process-wide pointer, for the signal handler only. */
static kvmux_server *volatile signal_target;

static void on_signal(int sig) {
    kvmux_server *s = signal_target;
    if (!s) return; /* before the server exists: ignore (and do not die) */
    if (sig == SIGHUP) {
        kvmux_server_request_reload(s); /* async-signal-safe */
        return;
    }
    kvmux__notify("STOPPING=1");        /* one sendto: async-signal-safe */
    kvmux_server_stop(s);               /* async-signal-safe */
}

/* What reload() needs: argv (read again each time), the configuration the
 * server started with (what the static options still are: never freed),
 * and the last one applied (the run-time options). */
typedef struct reload_ctx {
    int argc;
    char **argv;
    kvmux_server_config boot;
    kvmux_server_config cur;
} reload_ctx;

static void log_static_change(const char *name, int reloadable, void *ud) {
    (void)ud;
    if (!reloadable)
        kvmux_log_event(KVMUX_LOG_WARN, "reload.kept", "option=%s "
                        "reason=\"cannot change at run time: restart to apply\"", name);
}

static void log_runtime_change(const char *name, int reloadable, void *ud) {
    (void)ud;
    if (reloadable == 2)
        kvmux_log_event(KVMUX_LOG_INFO, "reload.changed", "option=%s "
                        "applies_to=new_connections", name);
    else if (reloadable)
        kvmux_log_event(KVMUX_LOG_INFO, "reload.changed", "option=%s", name);
}

/* The log sinks of c (syslog, a file, or stderr). */
static int set_log_sink(const kvmux_server_config *c, const kvmux_server_config *old,
                        char *err, size_t errlen) {
    kvmux_log_set_syslog((int)c->syslog);
    if (c->syslog) return kvmux_log_set_file(NULL, err, errlen);
    if (!c->log_file) return kvmux_log_set_file(NULL, err, errlen);
    if (old && old->log_file && strcmp(old->log_file, c->log_file) == 0)
        return kvmux_log_reopen(err, errlen); /* logrotate moved it */
    return kvmux_log_set_file(c->log_file, err, errlen);
}

static void reload(kvmux_server *s, void *ud) {
    reload_ctx *r = ud;
    kvmux__notify_reloading();
    char err[512];
    kvmux_server_config next;
    kvmux_server_config_init(&next);
    int action = kvmux_server_config_load(&next, r->argc, r->argv, err, sizeof err);
    if (action < 0) {
        /* Keep everything, but still reopen the log: rotation must work. */
        char e2[256];
        if (kvmux_log_reopen(e2, sizeof e2) != 0)
            kvmux_log_event(KVMUX_LOG_ERROR, "log.reopen_failed", "error=\"%s\"", e2);
        char q[600];
        kvmux_log_event(KVMUX_LOG_ERROR, "reload.failed", "error=%s result=\"nothing changed\"",
                        kvmux_log_quote(q, sizeof q, err));
        kvmux_server_config_deinit(&next);
        kvmux__notify("READY=1\nSTATUS=reload failed: configuration invalid");
        return;
    }
    if (set_log_sink(&next, &r->cur, err, sizeof err) != 0) {
        char q[600];
        kvmux_log_event(KVMUX_LOG_ERROR, "log.reopen_failed", "error=%s",
                        kvmux_log_quote(q, sizeof q, err));
    }
    if (kvmux_server_apply_runtime(s, &next, err, sizeof err) != 0) {
        char q[600];
        kvmux_log_event(KVMUX_LOG_ERROR, "reload.failed", "error=%s "
                        "result=\"no run-time setting changed\"",
                        kvmux_log_quote(q, sizeof q, err));
    } else {
        kvmux__config_diff(&r->cur, &next, log_runtime_change, NULL);
    }
    kvmux__config_diff(&r->boot, &next, log_static_change, NULL);
    kvmux_log_set_level((int)next.log_level);
    kvmux_log_event(KVMUX_LOG_INFO, "reload.done", "config=%s log_level=%s",
                    next.config_file ? next.config_file : "none",
                    kvmux_log_level_name((int)next.log_level));
    kvmux_server_config_deinit(&r->cur);
    r->cur = next;
    kvmux__notify("READY=1\nSTATUS=serving");
}

int main(int argc, char **argv) {
    static reload_ctx rc_;
    reload_ctx *r = &rc_;
    r->argc = argc;
    r->argv = argv;
    kvmux_server_config *cfg = &r->boot;
    kvmux_server_config_init(cfg);
    char err[512];
    int action = kvmux_server_config_load(cfg, argc, argv, err, sizeof err);
    if (action < 0) {
        fprintf(stderr, "kvmuxd: %s\n", err);
        return 2;
    }
    if (action == KVMUX_CONFIG_HELP) {
        fputs(kvmux_server_usage(), stdout);
        return 0;
    }
    if (action == KVMUX_CONFIG_VERSION) {
        printf("kvmuxd %s (protocol versions %d..%d)\n", KVMUXD_VERSION,
               KVMUX_PROTO_VERSION_MIN, KVMUX_PROTO_CODEC_MAX);
        return 0;
    }
    if (action == KVMUX_CONFIG_CHECK) {
        printf("kvmuxd: configuration %s is valid\n",
               cfg->config_file ? cfg->config_file : "(command line only)");
        return 0;
    }
    kvmux_log_set_level((int)cfg->log_level);
    if (set_log_sink(cfg, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "kvmuxd: %s\n", err);
        return 2;
    }
    /* The reload's "current" starts as a copy of boot that owns nothing. */
    r->cur = *cfg;
    r->cur.file_buf_ = NULL;
    kvmux__notify_init();

    /* Writes use MSG_NOSIGNAL; ignoring SIGPIPE also covers anything else. */
    signal(SIGPIPE, SIG_IGN);
    /* Handlers before the server exists: an early SIGHUP is ignored
     * rather than killing the process (its default action). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    kvmux_server *srv = NULL;
    if (kvmux_server_new(&srv, cfg, err, sizeof err) != 0) {
        char q[600];
        kvmux_log_event(KVMUX_LOG_ERROR, "server.start_failed", "error=%s",
                        kvmux_log_quote(q, sizeof q, err));
        return 1;
    }
    kvmux_server_set_reload_hook(srv, reload, r);
    signal_target = srv;

    /* The one line on stdout: supervisors and tests parse it. */
    printf("listening on %s:%u\n", kvmux_server_address(srv), kvmux_server_port(srv));
    if (kvmux_server_metrics_port(srv))
        printf("metrics on port %u\n", kvmux_server_metrics_port(srv));
    fflush(stdout);
    /* The port listens (connections queue in the backlog until loop 0
     * runs): systemd may start what depends on kvmuxd. */
    char ready[160];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=serving on %s:%u\nMAINPID=%d",
             kvmux_server_address(srv), kvmux_server_port(srv), (int)getpid());
    kvmux__notify(ready);

    int rc = kvmux_server_run(srv);
    signal_target = NULL;
    kvmux_server_free(srv);
    kvmux_server_config_deinit(&r->cur);
    kvmux_server_config_deinit(&r->boot);
    return rc == 0 ? 0 : 1;
}
