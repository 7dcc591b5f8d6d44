/* kvmux-cli commands: parse one command's arguments, run it against the
 * server, print the result, and map the outcome to an exit code. Shared by
 * the one-shot mode (main.c) and the interactive prompt (repl.c). */
#ifndef KVMUX_CLI_CMD_H
#define KVMUX_CLI_CMD_H

#include <stdint.h>
#include <stdio.h>

#include "args.h"
#include "kvmux.h"
#include "out.h"

/* Exit codes (documented in --help and the README). */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_NOTFOUND = 1,  /* the key does not exist */
    CLI_EXIT_USAGE = 2,     /* bad command line / command arguments */
    CLI_EXIT_REQUEST = 3,   /* any other request error: version mismatch,
                               too large, not an integer, timeout, busy ... */
    CLI_EXIT_CONN = 4       /* cannot connect, connection lost, protocol,
                               authentication refused */
};

#define CLI_DEFAULT_HOST "127.0.0.1"
#define CLI_DEFAULT_PORT 7878
#define CLI_DEFAULT_TIMEOUT_MS 5000
/* --cluster scan / stats: groups visited at most (a map holds 256). */
#define KVMUX_CLI_MAX_GROUPS 256

/* Everything a command needs. The caller fills the settings; client starts
 * NULL and is connected lazily by cli_run_command(), dropped (closed and set
 * back to NULL) after a fatal error, and closed by cli_ctx_deinit(). */
typedef struct cli_ctx {
    const char *host;      /* borrowed; outlives the ctx */
    uint16_t port;
    int timeout_ms;        /* connect and per-request timeout, >= 1 */
    int verbose;           /* get: also print the version */
    cli_out out;           /* output mode: text (quoted on a terminal),
                              --raw, --json, --csv */
    int interactive;       /* errors mention reconnecting */
    const char *auth;      /* token for HELLO (-a / KVMUX_AUTH); NULL = none;
                              borrowed */
    int tls;               /* --tls: connect with TLS */
    const char *cacert;    /* --cacert FILE (implies --tls); NULL = system CAs */
    const char *sni;       /* --sni NAME (implies --tls); NULL = the host */
    const char *cert;      /* --cert FILE / --key FILE: client certificate */
    const char *key;
    int insecure;          /* --insecure: no certificate verification */
    int stale;             /* --stale: kvmux_options.stale_reads */
    int cluster;           /* --cluster: kvmux_options.cluster (host:port,
                              or -h's list, are seeds); scan and stats
                              then run on every group */
    kvmux_client *client;  /* owned; NULL when not connected */
    int quiet_connect;     /* cli_connect prints nothing on failure (a
                              retry loop that reports once itself) */
} cli_ctx;

/* Connect ctx->client if it is NULL. On failure prints
 * "kvmux-cli: cannot connect to HOST:PORT: reason" on stderr (unless
 * ctx->quiet_connect).
 * Returns CLI_EXIT_OK or CLI_EXIT_CONN. */
int cli_connect(cli_ctx *ctx);

/* Run one command given as arguments (args[0] is the command name:
 * see cli_command_at). Results go to stdout in ctx->out's mode, errors
 * to stderr as "kvmux-cli: CMD KEY: reason"; both are flushed before
 * returning, so a reader on a pipe sees them at once. Connects first if
 * needed. After a connection-level error the client is closed and
 * ctx->client is NULL, so the next command reconnects.
 * Returns a cli_exit code. */
int cli_run_command(cli_ctx *ctx, const cli_arg *args, size_t nargs);

/* Print the command summary (also the interactive "help"). */
void cli_print_commands(FILE *f);

/* One command as the table (cmd.c) describes it: the single source for
 * help, --help, Tab completion, argument hints and the man-page check. */
typedef struct cli_command_info {
    const char *name;    /* "set" */
    const char *usage;   /* its arguments: "KEY VALUE [--ttl MS]" ("" if none) */
    const char *help;    /* one line of description */
} cli_command_info;

/* The i-th command (0-based, table order, then the prompt's own "quit"
 * and "exit"). Returns 0 and fills *out, or -1 past the end. */
int cli_command_at(size_t i, cli_command_info *out);

/* The command named name[0..len) (case-insensitive), as cli_command_at.
 * Returns 0 and fills *out, or -1 if there is no such command. */
int cli_command_lookup(const char *name, size_t len, cli_command_info *out);

/* Close the connection, if any. */
void cli_ctx_deinit(cli_ctx *ctx);

#endif
