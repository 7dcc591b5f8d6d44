/* kvmuxd entry point: parse options, install signal handlers, print the
 * "listening on ADDR:PORT" line, run one server instance. Everything else
 * lives in the server instance (server.h), so it can be embedded. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "server.h"

/* The one process-wide pointer, for the signal handler only. */
static kvmux_server *volatile signal_target;

static void on_signal(int sig) {
    (void)sig;
    kvmux_server *s = signal_target;
    if (s) kvmux_server_stop(s); /* async-signal-safe */
}

int main(int argc, char **argv) {
    kvmux_server_config cfg;
    kvmux_server_config_init(&cfg);
    int level = KVMUX_LOG_INFO;
    char err[512];
    int action = kvmux_server_config_parse_args(&cfg, &level, argc, argv, err, sizeof err);
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
               KVMUX_PROTO_VERSION_MIN, KVMUX_PROTO_VERSION_MAX);
        return 0;
    }
    kvmux_log_set_level(level);

    /* Writes use MSG_NOSIGNAL; ignoring SIGPIPE also covers anything else. */
    signal(SIGPIPE, SIG_IGN);

    kvmux_server *srv = NULL;
    if (kvmux_server_new(&srv, &cfg, err, sizeof err) != 0) {
        KVMUX_LOG_E("cannot start: %s", err);
        return 1;
    }
    signal_target = srv;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* The one line on stdout: supervisors and tests parse it. */
    printf("listening on %s:%u\n", kvmux_server_address(srv), kvmux_server_port(srv));
    fflush(stdout);

    int rc = kvmux_server_run(srv);
    signal_target = NULL;
    kvmux_server_free(srv);
    return rc == 0 ? 0 : 1;
}
