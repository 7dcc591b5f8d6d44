/* kvmux-cli: command-line client for kvmuxd.
 *
 *   kvmux-cli [-h HOST] [-p PORT] [-t TIMEOUT_MS] [-a TOKEN] [-v] [-r] COMMAND [ARGS]
 *   kvmux-cli [-h HOST] [-p PORT] [-t TIMEOUT_MS] [-a TOKEN]   (interactive)
 *
 * This file only handles the process's own options (getopt_long, stopping
 * at the first non-option so command arguments such as "incr k -5" are left
 * alone) and picks the mode: one command from argv (cmd.c) or the
 * interactive prompt (repl.c). The exit code is the command's (see
 * usage()), so scripts can branch on "not found" versus "server down". */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "repl.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvmux-cli [OPTIONS] COMMAND [ARGS...]\n"
            "       kvmux-cli [OPTIONS]            (interactive prompt)\n"
            "\n"
            "Options:\n"
            "  -h, --host HOST        server name or address (default %s)\n"
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
            "  -v, --verbose          get: print \"version=N\" before the value\n"
            "  -r, --raw              get/wait: no newline after the value\n"
            "  -V, --version          print the version and exit\n"
            "      --help             print this help and exit\n"
            "\n"
            "Commands:\n",
            CLI_DEFAULT_HOST, (unsigned)CLI_DEFAULT_PORT, CLI_DEFAULT_TIMEOUT_MS);
    cli_print_commands(f);
    fprintf(f,
            "\n"
            "Output: get prints the value's bytes followed by a newline (none "
            "with -r);\n"
            "set and cas print \"OK version=N\", del \"OK\", incr the new "
            "number, wait\n"
            "\"version=N\" then the value (\"version=0 (deleted)\" if the key "
            "went away,\n"
            "\"(timeout)\" if nothing changed), ping \"PONG <rtt> ms\", stats the\n"
            "server's \"name:value\" lines as is. "
            "Errors go to stderr.\n"
            "\n"
            "Interactive mode: the same commands, plus help, quit and exit. "
            "Arguments may be\n"
            "quoted: \"a b\\n\\x00\" (escapes \\n \\r \\t \\\\ \\\" \\xHH) "
            "or 'literal'.\n"
            "A failed command prints its error and the prompt goes on; a lost "
            "connection is\n"
            "remade by the next command.\n"
            "\n"
            "Exit codes:\n"
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

    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"auth", required_argument, NULL, 'a'},
        {"verbose", no_argument, NULL, 'v'},
        {"raw", no_argument, NULL, 'r'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'H'},
        {"tls", no_argument, NULL, 'T'},
        {"cacert", required_argument, NULL, 'C'},
        {"sni", required_argument, NULL, 'S'},
        {"cert", required_argument, NULL, 'E'},
        {"key", required_argument, NULL, 'K'},
        {"insecure", no_argument, NULL, 'I'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* our own messages, with our exit code */
    int opt;
    /* "+": stop at the first non-option, so "incr k -5" keeps its -5. */
    while ((opt = getopt_long(argc, argv, "+:h:p:t:a:vrV", longopts, NULL)) != -1) {
        uint64_t n;
        switch (opt) {
        case 'h':
            if (!optarg[0]) return usage_fail("empty host", NULL);
            ctx.host = optarg;
            break;
        case 'p':
            if (cli_parse_u64_str(optarg, 65535, &n) != 0 || n == 0)
                return usage_fail("invalid port (1-65535):", optarg);
            ctx.port = (uint16_t)n;
            break;
        case 't':
            if (cli_parse_u64_str(optarg, INT_MAX, &n) != 0 || n == 0)
                return usage_fail("invalid timeout (1-2147483647 ms):", optarg);
            ctx.timeout_ms = (int)n;
            break;
        case 'a':
            if (!optarg[0] || strlen(optarg) > 64)
                return usage_fail("invalid auth token (1-64 bytes)", NULL);
            ctx.auth = optarg;
            break;
        case 'T': ctx.tls = 1; break;
        case 'C': ctx.tls = 1; ctx.cacert = optarg; break;
        case 'S': ctx.tls = 1; ctx.sni = optarg; break;
        case 'E': ctx.tls = 1; ctx.cert = optarg; break;
        case 'K': ctx.tls = 1; ctx.key = optarg; break;
        case 'I': ctx.tls = 1; ctx.insecure = 1; break;
        case 'v': ctx.verbose = 1; break;
        case 'r': ctx.raw = 1; break;
        case 'V':
            printf("kvmux-cli %s\n", KVMUX_VERSION_STRING);
            return CLI_EXIT_OK;
        case 'H':
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

    if (!ctx.cert != !ctx.key) return usage_fail("--cert and --key go together", NULL);
    int rc;
    if (optind >= argc) {
        rc = cli_repl(&ctx);
    } else {
        size_t n = (size_t)(argc - optind);
        cli_arg *args = calloc(n, sizeof *args);
        if (!args) {
            fputs("kvmux-cli: out of memory\n", stderr);
            return CLI_EXIT_REQUEST;
        }
        for (size_t i = 0; i < n; i++) {
            args[i].data = argv[optind + (int)i];
            args[i].len = strlen(args[i].data);
        }
        rc = cli_run_command(&ctx, args, n);
        free(args);
    }
    cli_ctx_deinit(&ctx);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fputs("kvmux-cli: cannot write to stdout\n", stderr);
        if (rc == CLI_EXIT_OK) rc = CLI_EXIT_REQUEST;
    }
    return rc;
}
