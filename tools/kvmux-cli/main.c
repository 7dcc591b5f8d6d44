/* kvmux-cli: command-line client for kvmuxd.
 *
 *   kvmux-cli [-h HOST] [-p PORT] [-t TIMEOUT_MS] [-a TOKEN] [-v] [--raw|--json|--csv]
 *             [-r N] [-i SEC] [-x] COMMAND [ARGS]
 *   kvmux-cli [-h HOST] [-p PORT] [-t TIMEOUT_MS] [-a TOKEN]   (interactive)
 *   kvmux-cli [-h HOST] [-p PORT] [-r N] [-i SEC] --stat | --latency
 *
 * This file only handles the process's own options (getopt_long, stopping
 * at the first non-option so command arguments such as "incr k -5" are left
 * alone) and picks the mode: one command from argv (cmd.c), repeated with
 * -r/-i as redis-cli does, the interactive prompt (repl.c), or a watching
 * mode (monitor.c). The exit code is the command's (see
 * usage()), so scripts can branch on "not found" versus "server down". */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "monitor.h"
#include "repl.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvmux-cli [OPTIONS] COMMAND [ARGS...]\n"
            "       kvmux-cli [OPTIONS]            (interactive prompt)\n"
            "       kvmux-cli [OPTIONS] --stat | --latency\n"
            "\n"
            "Options:\n"
            "  -h, --host HOST        server name or address (default %s), or a\n"
            "                         replicated group: HOST:PORT,HOST:PORT,... (the\n"
            "                         leader is found and followed; -p unused)\n"
            "  -p, --port PORT        server port (default %u)\n"
            "  -t, --timeout MS       connect and request timeout in ms "
            "(default %d;\n"
            "                         wait adds its own TIMEOUT_MS to it)\n"
            "  -a, --auth TOKEN       auth token for a server started with "
            "--requirepass\n"
            "                         (default: $KVMUX_AUTH; 1-64 bytes)\n"
            "      --tls              connect with TLS (server started with --tls-cert)\n"
            "      --cacert FILE      PEM CA bundle to verify the server (implies --tls;\n"
            "                         default: the system's CAs)\n"
            "      --sni NAME         name the server certificate must match, sent as SNI\n"
            "                         (implies --tls; default: HOST)\n"
            "      --cert FILE        client certificate for a server started with --tls-ca\n"
            "      --key FILE         its private key (with --cert)\n"
            "      --insecure         TLS without verifying the server (testing only)\n"
            "      --stale            replicated group: reads may be answered by any\n"
            "                         replica from what it has applied (kvmux_options\n"
            "                         .stale_reads; read-your-writes within one session)\n"
            "      --cluster          sharded cluster: HOST:PORT (or -h's list) are seeds,\n"
            "                         keys go to their slot's group; scan and stats run\n"
            "                         on every group\n"
            "  -v, --verbose          get: print \"version=N\" before the value\n"
            "      --raw              values exactly as stored: never quoted, no newline\n"
            "                         after a get/wait value\n"
            "      --json             each result as one line of JSON\n"
            "      --csv              each result as one CSV record\n"
            "  -r, --repeat N         run the command N times (-1: until interrupted);\n"
            "                         --stat/--latency: print N lines, then exit\n"
            "  -i, --interval SEC     wait SEC seconds (decimals allowed) between repeats;\n"
            "                         --stat/--latency: between lines (default 1)\n"
            "  -x                     read the command's last argument from stdin\n"
            "                         (binary safe; e.g. set KEY < file)\n"
            "      --stat             a line of server rates every interval: keys, memory,\n"
            "                         clients, ops/s, requests\n"
            "      --latency          PING round trips: min, avg, max, samples\n"
            "  -V, --version          print the version and exit\n"
            "      --help             print this help and exit\n"
            "\n"
            "Commands:\n",
            CLI_DEFAULT_HOST, (unsigned)CLI_DEFAULT_PORT, CLI_DEFAULT_TIMEOUT_MS);
    cli_print_commands(f);
    fprintf(f,
            "\n"
            "Output: get prints the value followed by a newline (none with --raw;\n"
            "on a terminal a value with unprintable bytes is shown quoted, "
            "\"a\\x00\\xff\");\n"
            "set and cas print \"OK version=N\", del \"OK\", incr the new "
            "number, wait\n"
            "\"version=N\" then the value (\"version=0 (deleted)\" if the key "
            "went away,\n"
            "\"(timeout)\" if nothing changed), ping \"PONG <rtt> ms\", stats the\n"
            "server's \"name:value\" lines as is. "
            "Errors go to stderr.\n"
            "\n"
            "Interactive mode: the same commands, plus help [COMMAND], quit and "
            "exit, with\nline editing, history, Tab completion and argument hints. "
            "Arguments may be\n"
            "quoted: \"a b\\n\\x00\" (escapes \\n \\r \\t \\\\ \\\" \\xHH) "
            "or 'literal'.\n"
            "A failed command prints its error and the prompt goes on; a lost "
            "connection is\n"
            "remade by the next command.\n"
            "\n"
            "Exit codes (with -r, the last failing run's):\n"
            "  0  success\n"
            "  1  key not found\n"
            "  2  usage error (bad option, command or argument)\n"
            "  3  other request error (version mismatch, too large, not an "
            "integer,\n"
            "     overflow, timeout (wait prints \"(timeout)\"), busy, ...)\n"
            "  4  connection error (cannot connect, connection closed, "
            "protocol error,\n"
            "     authentication failed, TLS error)\n");
}

static int usage_fail(const char *msg, const char *arg) {
    if (arg)
        fprintf(stderr, "kvmux-cli: %s '%s'\n", msg, arg);
    else
        fprintf(stderr, "kvmux-cli: %s\n", msg);
    fputs("Try 'kvmux-cli --help' for more information.\n", stderr);
    return CLI_EXIT_USAGE;
}


/* Largest -x argument: the server's highest --max-value (512 MiB). */
#define CLI_MAX_STDIN_ARG (512u * 1024 * 1024)

/* Long-only options' ids (outside the range of short option letters). */
enum {
    OPT_HELP = 256, OPT_TLS, OPT_CACERT, OPT_SNI, OPT_CERT, OPT_KEY, OPT_INSECURE, OPT_STALE,
    OPT_RAW, OPT_JSON, OPT_CSV, OPT_STAT, OPT_LATENCY, OPT_CLUSTER
};

/* What the command line asked for, besides the ctx's settings. */
typedef struct cli_opts {
    long repeat;          /* -r: runs or lines; 0 = not given */
    int64_t interval_ms;  /* -i; -1 = not given */
    int from_stdin;       /* -x */
    int mode;             /* 0, OPT_STAT or OPT_LATENCY */
    int formats;          /* how many of --raw/--json/--csv were given */
} cli_opts;

/* -r N: -1 (until interrupted) or 1..LONG_MAX. Returns 0 or -1. */
static int parse_repeat(const char *s, long *out) {
    uint64_t n;
    if (strcmp(s, "-1") == 0) {
        *out = -1;
        return 0;
    }
    if (cli_parse_u64_str(s, LONG_MAX, &n) != 0 || n == 0) return -1;
    *out = (long)n;
    return 0;
}

/* -i SEC: a decimal number of seconds, 0..86400, to whole milliseconds
 * (rounded). Returns 0 or -1. */
static int parse_interval(const char *s, int64_t *out_ms) {
    if (!s[0] || !((s[0] >= '0' && s[0] <= '9') || s[0] == '.')) return -1;
    errno = 0;
    char *end = NULL;
    double sec = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(sec >= 0 && sec <= 86400)) return -1;
    *out_ms = (int64_t)(sec * 1000 + 0.5);
    return 0;
}

/* Parse argv's options into ctx and o. Returns -1 to go on (optind at
 * the command), or the exit code to return now. */
static int parse_options(int argc, char **argv, cli_ctx *ctx, cli_opts *o) {
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"auth", required_argument, NULL, 'a'},
        {"verbose", no_argument, NULL, 'v'},
        {"repeat", required_argument, NULL, 'r'},
        {"interval", required_argument, NULL, 'i'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, OPT_HELP},
        {"tls", no_argument, NULL, OPT_TLS},
        {"cacert", required_argument, NULL, OPT_CACERT},
        {"sni", required_argument, NULL, OPT_SNI},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"stale", no_argument, NULL, OPT_STALE},
        {"cluster", no_argument, NULL, OPT_CLUSTER},
        {"raw", no_argument, NULL, OPT_RAW},
        {"json", no_argument, NULL, OPT_JSON},
        {"csv", no_argument, NULL, OPT_CSV},
        {"stat", no_argument, NULL, OPT_STAT},
        {"latency", no_argument, NULL, OPT_LATENCY},
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* our own messages, with our exit code */
    int opt;
    /* "+": stop at the first non-option, so "incr k -5" keeps its -5. */
    while ((opt = getopt_long(argc, argv, "+:h:p:t:a:vr:i:xV", longopts, NULL)) != -1) {
        uint64_t n;
        switch (opt) {
        case 'h':
            if (!optarg[0]) return usage_fail("empty host", NULL);
            ctx->host = optarg;
            break;
        case 'p':
            if (cli_parse_u64_str(optarg, 65535, &n) != 0 || n == 0)
                return usage_fail("invalid port (1-65535):", optarg);
            ctx->port = (uint16_t)n;
            break;
        case 't':
            if (cli_parse_u64_str(optarg, INT_MAX, &n) != 0 || n == 0)
                return usage_fail("invalid timeout (1-2147483647 ms):", optarg);
            ctx->timeout_ms = (int)n;
            break;
        case 'a':
            if (!optarg[0] || strlen(optarg) > 64)
                return usage_fail("invalid auth token (1-64 bytes)", NULL);
            ctx->auth = optarg;
            break;
        case 'r':
            if (parse_repeat(optarg, &o->repeat) != 0)
                return usage_fail("invalid repeat count (-1, or 1 and up):", optarg);
            break;
        case 'i':
            if (parse_interval(optarg, &o->interval_ms) != 0)
                return usage_fail("invalid interval (0-86400 seconds):", optarg);
            break;
        case 'x': o->from_stdin = 1; break;
        case OPT_TLS: ctx->tls = 1; break;
        case OPT_CACERT: ctx->tls = 1; ctx->cacert = optarg; break;
        case OPT_SNI: ctx->tls = 1; ctx->sni = optarg; break;
        case OPT_CERT: ctx->tls = 1; ctx->cert = optarg; break;
        case OPT_KEY: ctx->tls = 1; ctx->key = optarg; break;
        case OPT_INSECURE: ctx->tls = 1; ctx->insecure = 1; break;
        case OPT_STALE: ctx->stale = 1; break;
        case OPT_CLUSTER: ctx->cluster = 1; break;
        case OPT_RAW: o->formats++; ctx->out.format = CLI_FORMAT_RAW; break;
        case OPT_JSON: o->formats++; ctx->out.format = CLI_FORMAT_JSON; break;
        case OPT_CSV: o->formats++; ctx->out.format = CLI_FORMAT_CSV; break;
        case OPT_STAT:
        case OPT_LATENCY:
            if (o->mode && o->mode != opt)
                return usage_fail("--stat and --latency exclude each other", NULL);
            o->mode = opt;
            break;
        case 'v': ctx->verbose = 1; break;
        case 'V':
            printf("kvmux-cli %s\n", KVMUX_VERSION_STRING);
            return CLI_EXIT_OK;
        case OPT_HELP:
            usage(stdout);
            return CLI_EXIT_OK;
        case ':':
        default: {
            /* optopt names a bad short option; 0 means a long one, which
             * getopt leaves at argv[optind - 1]. */
            char shortopt[3] = {'-', (char)optopt, '\0'};
            const char *what = optopt ? shortopt : argv[optind - 1];
            return usage_fail(opt == ':' ? "option needs a value:"
                                         : "unknown option", what);
        }
        }
    }
    return -1;
}

/* Check the combination of options against the mode argv asks for
 * (ncmd words of command). Returns -1 if fine, else the exit code. */
static int check_options(const cli_ctx *ctx, const cli_opts *o, int ncmd) {
    if (!ctx->cert != !ctx->key) return usage_fail("--cert and --key go together", NULL);
    if (o->formats > 1) return usage_fail("--raw, --json and --csv exclude each other", NULL);
    if (o->mode && ncmd > 0)
        return usage_fail(o->mode == OPT_STAT ? "--stat takes no command"
                                              : "--latency takes no command", NULL);
    if (o->mode && o->from_stdin) return usage_fail("-x needs a command", NULL);
    if (o->mode && o->interval_ms == 0)
        return usage_fail("--stat/--latency need an interval above 0", NULL);
    if (!o->mode && ncmd == 0 && (o->repeat || o->interval_ms >= 0 || o->from_stdin))
        return usage_fail("-r, -i and -x need a command", NULL);
    return -1;
}

/* All of stdin into *arg (NUL-terminated, binary safe). Returns 0, or an
 * exit code after a message. */
static int read_stdin_arg(cli_arg *arg) {
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fputs("kvmux-cli: -x: out of memory\n", stderr);
            return CLI_EXIT_REQUEST;
        }
        if (len + 1 == cap) {
            if (cap > CLI_MAX_STDIN_ARG) {
                free(buf);
                fprintf(stderr, "kvmux-cli: -x: stdin holds more than %u bytes\n",
                        CLI_MAX_STDIN_ARG);
                return CLI_EXIT_USAGE;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
            continue;
        }
        ssize_t got = read(STDIN_FILENO, buf + len, cap - 1 - len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            fprintf(stderr, "kvmux-cli: -x: cannot read stdin: %s\n", strerror(errno));
            free(buf);
            return CLI_EXIT_USAGE;
        }
        if (got == 0) break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    arg->data = buf;
    arg->len = len;
    return CLI_EXIT_OK;
}

/* Free run_argv_command's argument array (and -x's buffer, the last). */
static void free_args(cli_arg *args, size_t n, const cli_opts *o) {
    if (o->from_stdin) free((void *)args[n - 1].data);
    free(args);
}

/* The one-shot mode: argv's command (plus stdin's argument with -x), run
 * o->repeat times with o->interval_ms between runs. Returns the last
 * failing run's exit code, or 0. */
static int run_argv_command(cli_ctx *ctx, const cli_opts *o, char **words, size_t n) {
    cli_arg *args = calloc(n + 1, sizeof *args);
    if (!args) {
        fputs("kvmux-cli: out of memory\n", stderr);
        return CLI_EXIT_REQUEST;
    }
    for (size_t i = 0; i < n; i++) {
        args[i].data = words[i];
        args[i].len = strlen(words[i]);
    }
    if (o->from_stdin) {
        int rc = read_stdin_arg(&args[n]);
        if (rc != CLI_EXIT_OK) {
            free(args);
            return rc;
        }
        n++;
    }
    long runs = o->repeat ? o->repeat : 1;
    int64_t pause = o->interval_ms > 0 ? o->interval_ms : 0;
    int last_fail = CLI_EXIT_OK;
    for (long i = 0; runs < 0 || i < runs; i++) {
        if (i > 0) cli_sleep_ms(pause);
        int rc = cli_run_command(ctx, args, n);
        if (rc != CLI_EXIT_OK) last_fail = rc;
        if (rc == CLI_EXIT_USAGE) break; /* it would fail the same way every time */
    }
    free_args(args, n, o);
    return last_fail;
}

int main(int argc, char **argv) {
    /* Writes to a dead server socket must be errors, not a silent death. */
    signal(SIGPIPE, SIG_IGN);

    cli_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.host = CLI_DEFAULT_HOST;
    ctx.port = CLI_DEFAULT_PORT;
    ctx.timeout_ms = CLI_DEFAULT_TIMEOUT_MS;
    const char *env_auth = getenv("KVMUX_AUTH");
    if (env_auth && env_auth[0]) ctx.auth = env_auth; /* -a overrides it */
    cli_opts o = {0, -1, 0, 0, 0};

    int rc = parse_options(argc, argv, &ctx, &o);
    if (rc >= 0) return rc;
    int ncmd = argc - optind;
    if ((rc = check_options(&ctx, &o, ncmd)) >= 0) return rc;
    /* A human reads a terminal: show unprintable values quoted there. */
    ctx.out.quote = ctx.out.format == CLI_FORMAT_TEXT && isatty(STDOUT_FILENO);

    if (o.mode) {
        cli_watch w = {o.repeat ? o.repeat : -1, o.interval_ms > 0 ? o.interval_ms : 1000};
        rc = o.mode == OPT_STAT ? cli_stat(&ctx, &w) : cli_latency(&ctx, &w);
    } else if (ncmd == 0) {
        rc = cli_repl(&ctx);
    } else {
        rc = run_argv_command(&ctx, &o, argv + optind, (size_t)ncmd);
    }
    cli_ctx_deinit(&ctx);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fputs("kvmux-cli: cannot write to stdout\n", stderr);
        if (rc == CLI_EXIT_OK) rc = CLI_EXIT_REQUEST;
    }
    return rc;
}
