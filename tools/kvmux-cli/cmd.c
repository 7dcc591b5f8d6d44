/* kvmux-cli commands: the table of commands, their argument parsing, the
 * calls into libkvmux, the output format and the exit-code mapping.
 *
 * Design: one table row per command (name, positional argument count,
 * accepted options, usage line, handler). Argument parsing is shared: a
 * token that is one of the command's own options (--ttl MS, --ttl=MS, -v)
 * is taken as that option anywhere on the line, "--" ends options, and
 * everything else is positional, so "incr n -5" is a negative delta and
 * "get -- -v" reads the key "-v". Numbers go through the strict parsers in
 * args.c. Every command uses the blocking libkvmux API with the ctx's
 * timeout (wait adds its own wait time to it), so no command can hang.
 *
 * Output (stdout), chosen to be easy for scripts (text mode; --json and
 * --csv print the same fields as one JSON document or CSV record, see
 * put_* below and the man page):
 *   get    the value and a newline (no newline with --raw; quoted with
 *          \xHH escapes on a terminal when not printable, as redis-cli);
 *          with -v a line "version=N" first
 *   set    OK version=N        cas   OK version=N
 *   del    OK                  incr  the new number
 *   wait   version=N, then the value as for get; "version=0 (deleted)"
 *          when the key went away; "(timeout)" when nothing changed in time
 *   ping   PONG 0.123 ms
 *   stats  the server's "name:value" lines, as the server sent them
 *   exists 1 or 0 (-v: "1 version=N")   ttl  ms left, -1 = no expiry
 *   expire, persist  OK version=N       scan  one key per line
 *   slowlog get  the server's lines, newest first; slowlog len  the number;
 *   slowlog reset  OK dropped=N;  client list  the server's lines
 *   cluster status  the replica's "name:value" lines; cluster add, remove,
 *          transfer  "OK " and the leader's account ("replica 4 is a voter");
 *          cluster assign  "group G: epoch E installed" per group
 * Errors go to stderr as "kvmux-cli: CMD KEY: reason".
 *
 * What it is not: no line splitting (args.c), no prompt (repl.c), no
 * command-line option handling (main.c). */
#include "cmd.h"
#include "cluster.h"
#include "mapassign.h"
#include "migrate.h"
#include "monitor.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Command options a row may accept. */
#define OPT_TTL 1u     /* --ttl MS */
#define OPT_VERBOSE 2u /* -v */
#define OPT_COUNT 4u   /* --count N */
#define OPT_MAP 8u     /* --map ENDPOINTS (cluster assign) */
#define OPT_MIG 16u    /* --no-wait, --abort ID, --timeout S (cluster migrate) */

#define CMD_MAX_POS 4

/* A command's arguments after option parsing. */
typedef struct cmd_args {
    const char *name;               /* canonical command name */
    const cli_arg *pos[CMD_MAX_POS];/* positional arguments, borrowed */
    size_t npos;
    uint64_t ttl_ms;                /* --ttl, 0 = none */
    uint64_t count;                 /* --count, 0 = the server's default */
    int verbose;                    /* -v given (or ctx->verbose) */
    const char *map;                /* --map: the map group's endpoints
                                       (NUL-terminated, borrowed); NULL */
    int no_wait;                    /* --no-wait (cluster migrate) */
    int has_abort;                  /* --abort ID given */
    uint64_t abort_id;
    uint64_t timeout_s;             /* --timeout S, 0 = none */
} cmd_args;

typedef struct cmd_spec {
    const char *name;
    size_t min_pos, max_pos;
    unsigned opts;
    const char *usage;   /* arguments part of the usage line */
    const char *help;    /* one-line description */
    int (*run)(cli_ctx *ctx, const cmd_args *a);
} cmd_spec;

static int run_get(cli_ctx *ctx, const cmd_args *a);
static int run_set(cli_ctx *ctx, const cmd_args *a);
static int run_del(cli_ctx *ctx, const cmd_args *a);
static int run_incr(cli_ctx *ctx, const cmd_args *a);
static int run_cas(cli_ctx *ctx, const cmd_args *a);
static int run_wait(cli_ctx *ctx, const cmd_args *a);
static int run_ping(cli_ctx *ctx, const cmd_args *a);
static int run_stats(cli_ctx *ctx, const cmd_args *a);
static int run_help(cli_ctx *ctx, const cmd_args *a);
static int run_exists(cli_ctx *ctx, const cmd_args *a);
static int run_ttl(cli_ctx *ctx, const cmd_args *a);
static int run_expire(cli_ctx *ctx, const cmd_args *a);
static int run_persist(cli_ctx *ctx, const cmd_args *a);
static int run_scan(cli_ctx *ctx, const cmd_args *a);
static int run_slowlog(cli_ctx *ctx, const cmd_args *a);
static int run_client(cli_ctx *ctx, const cmd_args *a);
static int run_cluster(cli_ctx *ctx, const cmd_args *a);

static const cmd_spec commands[] = {
    {"get", 1, 1, OPT_VERBOSE, "[-v] KEY",
     "print the value (-v: and its version)", run_get},
    {"set", 2, 2, OPT_TTL, "KEY VALUE [--ttl MS]",
     "store a value; prints the new version", run_set},
    {"del", 1, 1, 0, "KEY", "delete a key", run_del},
    {"incr", 1, 2, 0, "KEY [DELTA]",
     "add DELTA (default 1); prints the result", run_incr},
    {"cas", 3, 3, OPT_TTL, "KEY VERSION VALUE [--ttl MS]",
     "set if at VERSION (0: only if absent)", run_cas},
    {"wait", 3, 3, 0, "KEY VERSION TIMEOUT_MS",
     "wait until the version is not VERSION", run_wait},
    {"exists", 1, 1, OPT_VERBOSE, "[-v] KEY",
     "print 1 if the key exists, else 0 (-v: and its version)", run_exists},
    {"ttl", 1, 1, 0, "KEY", "milliseconds left before the key expires, -1 = never",
     run_ttl},
    {"expire", 2, 2, 0, "KEY MS", "make the key expire MS ms from now", run_expire},
    {"persist", 1, 1, 0, "KEY", "drop the key's expiry", run_persist},
    {"scan", 0, 1, OPT_COUNT, "[PREFIX] [--count N]",
     "list the keys (starting with PREFIX), one per line", run_scan},
    {"ping", 0, 0, 0, "", "round trip to the server", run_ping},
    {"stats", 0, 1, 0, "[PREFIX]",
     "server counters (only names starting with PREFIX)", run_stats},
    {"slowlog", 1, 2, 0, "get [N] | len | reset",
     "the server's slow requests (newest N, default 10), their number, or clear them",
     run_slowlog},
    {"client", 1, 1, 0, "list", "the server's connections, one per line", run_client},
    {"cluster", 1, 4, OPT_MAP | OPT_MIG,
     "status [--map HOST:PORT,...] | add ID RAFTHOST:PORT CLIENTHOST:PORT | remove ID | "
     "transfer [ID] | keyslot KEY | slots | assign FILE|- [--map HOST:PORT,...] | "
     "migrate F-L|SLOT GROUP --map HOST:PORT,... [--no-wait] [--timeout S] | "
     "migrate --abort ID --map HOST:PORT,...",
     "a replicated group: its state as this replica sees it, or a membership change; "
     "a key's slot (local), the node's slot map, push a slot map to every group "
     "(--map: through the map group, then wait for every group to install it); "
     "move slots to another group, abort a move, the cluster's state and migrations (--map)",
     run_cluster},
    {"help", 0, 1, 0, "[COMMAND]",
     "the list of commands, or one command's arguments", run_help},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

/* ---- small output helpers ---- */

/* Print bytes for a human: printable ASCII as is, anything else as \xHH,
 * at most 64 input bytes then "...". Used for keys and bad arguments in
 * messages, never for values on stdout (those are raw). */
static void put_escaped(FILE *f, const char *p, size_t len) {
    size_t shown = len > 64 ? 64 : len;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            fputc(c, f);
        else
            fprintf(f, "\\x%02x", c);
    }
    if (shown < len) fputs("...", f);
}

/* "HOST:PORT", with brackets around an IPv6 literal; a -h endpoint list
 * as given. */
static void put_addr(FILE *f, const cli_ctx *ctx) {
    if (strchr(ctx->host, ','))
        fputs(ctx->host, f);
    else if (strchr(ctx->host, ':'))
        fprintf(f, "[%s]:%u", ctx->host, (unsigned)ctx->port);
    else
        fprintf(f, "%s:%u", ctx->host, (unsigned)ctx->port);
}

/* A value alone on stdout, in the output mode; a newline after it
 * unless --raw. */
static void print_value(const cli_ctx *ctx, const uint8_t *data, size_t len) {
    cli_out_string(&ctx->out, stdout, data, len);
    if (ctx->out.format != CLI_FORMAT_RAW) fputc('\n', stdout);
}

/* A version and a value (get -v, wait): text "version=N" then the value;
 * JSON {"version":N,"value":"..."}; CSV N,"...". */
static void print_versioned(const cli_ctx *ctx, uint64_t version,
                            const uint8_t *data, size_t len) {
    switch (ctx->out.format) {
    case CLI_FORMAT_JSON:
        printf("{\"version\":%" PRIu64 ",\"value\":", version);
        cli_out_json_string(stdout, data, len);
        puts("}");
        break;
    case CLI_FORMAT_CSV:
        printf("%" PRIu64 ",", version);
        cli_out_csv_string(stdout, data, len);
        putchar('\n');
        break;
    default:
        printf("version=%" PRIu64 "\n", version);
        print_value(ctx, data, len);
    }
}

/* A write's new version: "OK version=N", JSON {"version":N}, CSV N. */
static void print_ok_version(const cli_ctx *ctx, uint64_t version) {
    if (ctx->out.format == CLI_FORMAT_JSON)
        printf("{\"version\":%" PRIu64 "}\n", version);
    else if (ctx->out.format == CLI_FORMAT_CSV)
        printf("%" PRIu64 "\n", version);
    else
        printf("OK version=%" PRIu64 "\n", version);
}

/* "OK": text and CSV as is, JSON as the string "OK". */
static void print_ok(const cli_ctx *ctx) {
    puts(ctx->out.format == CLI_FORMAT_JSON ? "\"OK\"" : "OK");
}

/* No value (wait timed out or the key was deleted): JSON null, CSV NULL
 * (as redis-cli --csv); text prints its own message. */
static void print_null(const cli_ctx *ctx, const char *text) {
    if (ctx->out.format == CLI_FORMAT_JSON) puts("null");
    else if (ctx->out.format == CLI_FORMAT_CSV) puts("NULL");
    else puts(text);
}

/* "kvmux-cli: CMD KEY: " on stderr ("kvmux-cli: CMD: " for ping). */
static void err_prefix(const cmd_args *a) {
    fprintf(stderr, "kvmux-cli: %s", a->name);
    if (a->npos > 0) {
        fputc(' ', stderr);
        put_escaped(stderr, a->pos[0]->data, a->pos[0]->len);
    }
    fputs(": ", stderr);
}

/* Print why the arguments are wrong plus the usage line; exit code 2. */
static int usage_error(const cmd_spec *s, const char *why) {
    fprintf(stderr, "kvmux-cli: %s: %s\nusage: %s%s%s\n", s->name, why,
            s->name, s->usage[0] ? " " : "", s->usage);
    return CLI_EXIT_USAGE;
}

/* "invalid WHAT 'arg' (expected ...)"; exit code 2. */
static int bad_number(const cmd_args *a, const char *what,
                      const cli_arg *arg, const char *expected) {
    fprintf(stderr, "kvmux-cli: %s: invalid %s '", a->name, what);
    put_escaped(stderr, arg->data, arg->len);
    fprintf(stderr, "' (expected %s)\n", expected);
    return CLI_EXIT_USAGE;
}

/* Report a failed call and map it to an exit code. A fatal error drops the
 * connection so the next command (interactive mode) reconnects. */
static int report(cli_ctx *ctx, const cmd_args *a, int rc) {
    int fatal = rc <= KVMUX_E_FATAL || kvmux_is_fatal(rc);
    err_prefix(a);
    fputs(kvmux_strerror(rc), stderr);
    if (fatal && ctx->client) {
        char msg[512];
        msg[0] = '\0';
        kvmux_connection_error(ctx->client, msg, sizeof msg);
        if (msg[0] && strcmp(msg, kvmux_strerror(rc)) != 0)
            fprintf(stderr, " (%s)", msg);
    }
    if (rc == KVMUX_EOOM) /* the operator's next step, not only the cause */
        fputs(" (delete keys, or raise the server's --maxmemory)", stderr);
    else if (rc == KVMUX_EUNKNOWN) /* a failover cut it off */
        fputs(" (it may or may not have been applied: read the key back)", stderr);
    fputc('\n', stderr);
    if (fatal) {
        kvmux_close(ctx->client);
        ctx->client = NULL;
        if (ctx->interactive) {
            fputs("kvmux-cli: disconnected from ", stderr);
            put_addr(stderr, ctx);
            fputs("; the next command will reconnect\n", stderr);
        }
        return CLI_EXIT_CONN;
    }
    return rc == KVMUX_ENOTFOUND ? CLI_EXIT_NOTFOUND : CLI_EXIT_REQUEST;
}

/* ---- connection ---- */

/* ": REASON" for a failed TCP connect. The library's message reads
 * "connect to HOST:PORT: Connection refused" (or "cannot resolve HOST:
 * ..."); the address is already printed, so only what follows it is
 * kept. Falls back to kvmux_strerror(rc) when there is no message. */
static void put_connect_reason(int rc) {
    char msg[256];
    msg[0] = '\0';
    kvmux_connection_error(NULL, msg, sizeof msg);
    const char *why = msg;
    if (strncmp(msg, "connect to ", 11) == 0) {
        const char *sep = strstr(msg + 11, ": ");
        why = sep ? sep + 2 : ""; /* "... timed out": kvmux_strerror says it */
    }
    fprintf(stderr, ": %s", why[0] ? why : kvmux_strerror(rc));
}

int cli_connect(cli_ctx *ctx) {
    if (ctx->client) return CLI_EXIT_OK;
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = ctx->timeout_ms;
    o.request_timeout_ms = ctx->timeout_ms;
    o.client_name = "kvmux-cli";
    o.auth_token = ctx->auth;
    o.tls = ctx->tls;
    o.tls_ca_file = ctx->cacert;
    o.tls_server_name = ctx->sni;
    o.tls_cert_file = ctx->cert;
    o.tls_key_file = ctx->key;
    o.tls_verify = !ctx->insecure;
    o.stale_reads = ctx->stale;
    o.cluster = ctx->cluster;
    /* -h a:p1,b:p2: a replicated group; the library finds the leader and
     * follows it (kvmux_options.endpoints; -p is then unused). */
    if (strchr(ctx->host, ',')) o.endpoints = ctx->host;
    int rc = kvmux_connect(&ctx->client, ctx->host, ctx->port, &o);
    if (rc != 0 && ctx->quiet_connect) {
        ctx->client = NULL;
        return CLI_EXIT_CONN;
    }
    if (rc != 0) {
        ctx->client = NULL;
        fputs("kvmux-cli: cannot connect to ", stderr);
        put_addr(stderr, ctx);
        if (rc == KVMUX_ECONNECT || rc == KVMUX_ETIMEDOUT) {
            /* The reason, as redis-cli gives it ("Connection refused"). */
            put_connect_reason(rc);
            fputc('\n', stderr);
            return CLI_EXIT_CONN;
        }
        fprintf(stderr, ": %s", kvmux_strerror(rc));
        if (rc == KVMUX_ETLS || rc == KVMUX_EPROTO ||
            (rc == KVMUX_EINVAL && (ctx->tls || strchr(ctx->host, ',')))) {
            char msg[256];
            msg[0] = '\0';
            kvmux_connection_error(NULL, msg, sizeof msg);
            if (msg[0]) fprintf(stderr, " (%s)", msg);
        } else if (rc == KVMUX_EAUTH) {
            /* Say which side is wrong: the server's message, then ours. */
            char msg[256];
            msg[0] = '\0';
            kvmux_connection_error(NULL, msg, sizeof msg);
            if (msg[0]) fprintf(stderr, " (%s)", msg);
            fputs(ctx->auth ? "; check the token given with -a/--auth or KVMUX_AUTH"
                            : "; the server requires a token: use -a/--auth or KVMUX_AUTH",
                  stderr);
        } else if (rc == KVMUX_EINVAL && ctx->auth) {
            fputs(" (the auth token must be 1-64 bytes)", stderr);
        }
        fputc('\n', stderr);
        return CLI_EXIT_CONN;
    }
    return CLI_EXIT_OK;
}

void cli_ctx_deinit(cli_ctx *ctx) {
    kvmux_close(ctx->client);
    ctx->client = NULL;
}

/* ---- handlers: each gets a connected ctx and validated arg counts ---- */

static int run_get(cli_ctx *ctx, const cmd_args *a) {
    kvmux_value *v = NULL;
    int rc = kvmux_get(ctx->client, a->pos[0]->data, a->pos[0]->len, &v,
                       ctx->timeout_ms);
    if (rc != 0) return report(ctx, a, rc);
    if (a->verbose) print_versioned(ctx, v->version, v->data, v->len);
    else print_value(ctx, v->data, v->len);
    kvmux_value_free(v);
    return CLI_EXIT_OK;
}

static int run_set(cli_ctx *ctx, const cmd_args *a) {
    uint64_t version = 0;
    int rc = kvmux_set(ctx->client, a->pos[0]->data, a->pos[0]->len,
                       a->pos[1]->data, a->pos[1]->len, a->ttl_ms, &version,
                       ctx->timeout_ms);
    if (rc != 0) return report(ctx, a, rc);
    print_ok_version(ctx, version);
    return CLI_EXIT_OK;
}

static int run_del(cli_ctx *ctx, const cmd_args *a) {
    int rc = kvmux_del(ctx->client, a->pos[0]->data, a->pos[0]->len,
                       ctx->timeout_ms);
    if (rc != 0) return report(ctx, a, rc);
    print_ok(ctx);
    return CLI_EXIT_OK;
}

static int run_incr(cli_ctx *ctx, const cmd_args *a) {
    int64_t delta = 1, result = 0;
    if (a->npos > 1 && cli_parse_i64(a->pos[1], &delta) != 0)
        return bad_number(a, "DELTA", a->pos[1], "a signed 64-bit integer");
    int rc = kvmux_incr(ctx->client, a->pos[0]->data, a->pos[0]->len, delta,
                        &result, ctx->timeout_ms);
    if (rc != 0) return report(ctx, a, rc);
    printf("%" PRId64 "\n", result);
    return CLI_EXIT_OK;
}

static int run_cas(cli_ctx *ctx, const cmd_args *a) {
    uint64_t expected = 0, version = 0;
    if (cli_parse_u64(a->pos[1], UINT64_MAX, &expected) != 0)
        return bad_number(a, "VERSION", a->pos[1], "an unsigned 64-bit integer");
    int rc = kvmux_cas(ctx->client, a->pos[0]->data, a->pos[0]->len, expected,
                       a->pos[2]->data, a->pos[2]->len, a->ttl_ms, &version,
                       ctx->timeout_ms);
    if (rc == KVMUX_EVERSION) {
        err_prefix(a);
        fprintf(stderr, "%s (expected version %" PRIu64
                        ", current version %" PRIu64 ")\n",
                kvmux_strerror(rc), expected, version);
        return CLI_EXIT_REQUEST;
    }
    if (rc != 0) return report(ctx, a, rc);
    print_ok_version(ctx, version);
    return CLI_EXIT_OK;
}

static int run_wait(cli_ctx *ctx, const cmd_args *a) {
    uint64_t version = 0, wait_ms = 0;
    if (cli_parse_u64(a->pos[1], UINT64_MAX, &version) != 0)
        return bad_number(a, "VERSION", a->pos[1], "an unsigned 64-bit integer");
    if (cli_parse_u64(a->pos[2], UINT32_MAX, &wait_ms) != 0)
        return bad_number(a, "TIMEOUT_MS", a->pos[2],
                          "milliseconds, 0 to 4294967295");
    /* The call may take the whole wait plus one ordinary round trip; done
     * here, not by KVMUX_TIMEOUT_DEFAULT, so the sum is clamped to int. */
    int64_t call_ms = (int64_t)wait_ms + ctx->timeout_ms;
    if (call_ms > INT_MAX) call_ms = INT_MAX;
    kvmux_value *v = NULL;
    int rc = kvmux_wait(ctx->client, a->pos[0]->data, a->pos[0]->len, version,
                        (uint32_t)wait_ms, &v, (int)call_ms);
    if (rc == KVMUX_ETIMEDOUT) {
        /* Not an error message: nothing changed, which the caller asked to
         * hear about. Still exit 3 so scripts can tell. */
        print_null(ctx, "(timeout)");
        return CLI_EXIT_REQUEST;
    }
    if (rc != 0) return report(ctx, a, rc);
    if (v->version == 0 && ctx->out.format == CLI_FORMAT_JSON)
        puts("{\"version\":0,\"value\":null}");
    else if (v->version == 0 && ctx->out.format == CLI_FORMAT_CSV)
        puts("0,NULL");
    else if (v->version == 0)
        puts("version=0 (deleted)");
    else
        print_versioned(ctx, v->version, v->data, v->len);
    kvmux_value_free(v);
    return CLI_EXIT_OK;
}

static int run_exists(cli_ctx *ctx, const cmd_args *a) {
    uint64_t version = 0;
    int rc = kvmux_exists(ctx->client, a->pos[0]->data, a->pos[0]->len, &version,
                          ctx->timeout_ms);
    if (rc == KVMUX_ENOTFOUND) {
        puts("0"); /* an answer, not an error */
        return CLI_EXIT_OK;
    }
    if (rc != 0) return report(ctx, a, rc);
    if (!a->verbose) puts("1");
    else if (ctx->out.format == CLI_FORMAT_JSON)
        printf("{\"exists\":1,\"version\":%" PRIu64 "}\n", version);
    else if (ctx->out.format == CLI_FORMAT_CSV)
        printf("1,%" PRIu64 "\n", version);
    else
        printf("1 version=%" PRIu64 "\n", version);
    return CLI_EXIT_OK;
}

static int run_ttl(cli_ctx *ctx, const cmd_args *a) {
    int64_t ttl = 0;
    int rc = kvmux_ttl(ctx->client, a->pos[0]->data, a->pos[0]->len, &ttl, ctx->timeout_ms);
    if (rc != 0) return report(ctx, a, rc);
    printf("%" PRId64 "\n", ttl);
    return CLI_EXIT_OK;
}

static int run_expire(cli_ctx *ctx, const cmd_args *a) {
    uint64_t ms = 0, version = 0;
    if (cli_parse_u64(a->pos[1], UINT64_MAX, &ms) != 0 || ms == 0)
        return bad_number(a, "MS", a->pos[1], "milliseconds, at least 1");
    int rc = kvmux_expire(ctx->client, a->pos[0]->data, a->pos[0]->len, ms, &version,
                          ctx->timeout_ms);
    if (rc != 0) return report(ctx, a, rc);
    print_ok_version(ctx, version);
    return CLI_EXIT_OK;
}

static int run_persist(cli_ctx *ctx, const cmd_args *a) {
    uint64_t version = 0;
    int rc = kvmux_persist(ctx->client, a->pos[0]->data, a->pos[0]->len, &version,
                           ctx->timeout_ms);
    if (rc != 0) return report(ctx, a, rc);
    print_ok_version(ctx, version);
    return CLI_EXIT_OK;
}

/* One SCAN step: on the connected node, or (--cluster) on group id. */
static int scan_step(cli_ctx *ctx, uint16_t id, uint64_t cursor, const cli_arg *prefix,
                     uint32_t count, kvmux_keys **out) {
    if (!ctx->cluster)
        return kvmux_scan(ctx->client, cursor, prefix ? prefix->data : NULL,
                          prefix ? prefix->len : 0, count, out, ctx->timeout_ms);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_SCAN;
    r.key = prefix ? prefix->data : NULL;
    r.key_len = prefix ? prefix->len : 0;
    r.cursor = cursor;
    r.count = count;
    kvmux_reply rep;
    int rc = kvmux_cluster_group_call(ctx->client, id, &r, &rep, ctx->timeout_ms);
    if (rc != 0) return rc;
    /* The reply as a kvmux_keys: one allocation, keys pointing into it. */
    size_t off = 0, n = 0, kl;
    const uint8_t *k;
    while (kvmux_scan_next(rep.value, rep.value_len, &off, &k, &kl)) n++;
    kvmux_keys *ks = malloc(sizeof *ks + n * sizeof ks->keys[0] + rep.value_len + 1);
    if (!ks) {
        kvmux_reply_free(&rep);
        return KVMUX_ENOMEM;
    }
    ks->cursor = rep.version;
    ks->count = n;
    ks->keys = (void *)(ks + 1);
    uint8_t *copy = (uint8_t *)(ks->keys + n);
    if (rep.value_len) memcpy(copy, rep.value, rep.value_len);
    off = 0;
    for (size_t i = 0; kvmux_scan_next(copy, rep.value_len, &off, &k, &kl); i++) {
        ks->keys[i].data = k;
        ks->keys[i].len = kl;
    }
    kvmux_reply_free(&rep);
    *out = ks;
    return 0;
}

/* The groups to run a per-group command on: the cluster's (--cluster),
 * else one entry standing for the connected node. Returns the count
 * (0 after printing an error). */
static size_t cli_groups(cli_ctx *ctx, const cmd_args *a, uint16_t *ids, size_t cap,
                         int *rc) {
    *rc = CLI_EXIT_OK;
    if (!ctx->cluster) {
        ids[0] = 0;
        return 1;
    }
    size_t n = 0;
    int e = kvmux_cluster_groups(ctx->client, ids, cap, &n);
    if (e != 0) {
        *rc = report(ctx, a, e);
        return 0;
    }
    return n < cap ? n : cap;
}

static int stats_of(cli_ctx *ctx, uint16_t id, const char *prefix, kvmux_value **out);

/* The newest slot-map epoch any of the groups ids[0..n) has applied
 * (STATS cluster_epoch); 0 when none answers. */
static uint64_t groups_epoch(cli_ctx *ctx, const uint16_t *ids, size_t n) {
    uint64_t best = 0;
    for (size_t g = 0; g < n; g++) {
        kvmux_value *v = NULL;
        if (stats_of(ctx, ids[g], "cluster_epoch", &v) != 0) continue;
        uint64_t e = cli_stat_value(v, "cluster_epoch");
        if (e > best) best = e;
        kvmux_value_free(v);
    }
    return best;
}

/* The whole scan, one key per line as raw bytes (as redis-cli --scan);
 * a key listed twice (possible when it is re-created mid-scan) is not
 * filtered out. --cluster: every group's keys, group after group. */
static int run_scan(cli_ctx *ctx, const cmd_args *a) {
    const cli_arg *prefix = a->npos ? a->pos[0] : NULL;
    int json = ctx->out.format == CLI_FORMAT_JSON;
    size_t listed = 0;
    uint16_t ids[KVMUX_CLI_MAX_GROUPS];
    int grc;
    size_t ng = cli_groups(ctx, a, ids, KVMUX_CLI_MAX_GROUPS, &grc);
    if (ng == 0) return grc;
    /* --cluster visits the groups one after another: a slot moved between
     * two visits may have its keys listed twice or not at all (as with
     * Redis Cluster's SCAN across a reshard). Say so when it may have. */
    uint64_t epoch0 = ctx->cluster ? groups_epoch(ctx, ids, ng) : 0;
    if (json) putchar('[');
    for (size_t g = 0; g < ng; g++) {
        uint64_t cursor = 0;
        do {
            kvmux_keys *k = NULL;
            int rc = scan_step(ctx, ids[g], cursor, prefix, (uint32_t)a->count, &k);
            if (rc != 0) {
                if (json) puts("]"); /* what came so far stays valid JSON */
                return report(ctx, a, rc);
            }
            for (size_t i = 0; i < k->count; i++) {
                if (json && listed++) putchar(',');
                cli_out_string(&ctx->out, stdout, k->keys[i].data, k->keys[i].len);
                if (!json) fputc('\n', stdout);
            }
            cursor = k->cursor;
            kvmux_keys_free(k);
        } while (cursor != 0);
    }
    if (json) puts("]");
    uint64_t epoch1 = ctx->cluster ? groups_epoch(ctx, ids, ng) : 0;
    if (epoch1 != epoch0)
        fprintf(stderr, "kvmux-cli: map changed during the scan (epoch %llu -> %llu): keys of "
                "moved slots may be missing or repeated\n", (unsigned long long)epoch0,
                (unsigned long long)epoch1);
    return CLI_EXIT_OK;
}

/* Monotonic nanoseconds, for the ping round trip. */
static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int run_ping(cli_ctx *ctx, const cmd_args *a) {
    int64_t t0 = now_ns();
    int rc = kvmux_ping(ctx->client, ctx->timeout_ms);
    int64_t t1 = now_ns();
    if (rc != 0) return report(ctx, a, rc);
    double ms = (double)(t1 - t0) / 1e6;
    if (ctx->out.format == CLI_FORMAT_JSON)
        printf("{\"reply\":\"PONG\",\"rtt_ms\":%.3f}\n", ms);
    else if (ctx->out.format == CLI_FORMAT_CSV)
        printf("\"PONG\",%.3f\n", ms);
    else
        printf("PONG %.3f ms\n", ms);
    return CLI_EXIT_OK;
}

/* 1 if p[0..len) is a JSON number as STATS writes them (digits, an
 * optional minus and one dot): such values go out unquoted. */
static int is_number(const char *p, size_t len) {
    size_t i = (len > 0 && p[0] == '-') ? 1 : 0, digits = 0, dots = 0;
    for (; i < len; i++) {
        if (p[i] >= '0' && p[i] <= '9') digits++;
        else if (p[i] == '.' && digits && dots++ == 0) continue;
        else return 0;
    }
    return digits > 0 && p[len - 1] != '.';
}

/* STATS's "name:value" lines as one JSON object, or as CSV records
 * "name",value; numbers unquoted, anything else a string. */
static void print_stats_lines(const cli_ctx *ctx, const char *p, size_t len) {
    int json = ctx->out.format == CLI_FORMAT_JSON;
    size_t n = 0;
    if (json) putchar('{');
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t ll = nl ? (size_t)(nl - p) : len;
        const char *colon = memchr(p, ':', ll);
        if (colon) {
            size_t nlen = (size_t)(colon - p), vlen = ll - nlen - 1;
            if (json && n++) putchar(',');
            cli_out_string(&ctx->out, stdout, p, nlen);
            putchar(json ? ':' : ',');
            if (is_number(colon + 1, vlen)) fwrite(colon + 1, 1, vlen, stdout);
            else cli_out_string(&ctx->out, stdout, colon + 1, vlen);
            if (!json) putchar('\n');
        }
        p += ll + (nl ? 1 : 0);
        len -= ll + (nl ? 1 : 0);
    }
    if (json) puts("}");
}

/* STATS of the connected node, or (--cluster) of group id. */
static int stats_of(cli_ctx *ctx, uint16_t id, const char *prefix, kvmux_value **out) {
    if (!ctx->cluster) return kvmux_stats(ctx->client, prefix, out, ctx->timeout_ms);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_STATS;
    r.key = prefix;
    r.key_len = prefix ? strlen(prefix) : 0;
    kvmux_reply rep;
    int rc = kvmux_cluster_group_call(ctx->client, id, &r, &rep, ctx->timeout_ms);
    if (rc != 0) return rc;
    kvmux_value *v = malloc(sizeof *v + rep.value_len + 1);
    if (!v) {
        kvmux_reply_free(&rep);
        return KVMUX_ENOMEM;
    }
    v->version = 0;
    v->len = rep.value_len;
    v->data = (uint8_t *)(v + 1);
    if (rep.value_len) memcpy(v->data, rep.value, rep.value_len);
    v->data[v->len] = 0;
    kvmux_reply_free(&rep);
    *out = v;
    return 0;
}

/* STATS: the text as the server sent it (it ends with a newline per line;
 * an empty result prints nothing). --cluster: every group's, one after
 * the other: text blocks headed "# group G", a JSON object or a CSV block
 * per group (each has the group's cluster_group line). */
static int run_stats(cli_ctx *ctx, const cmd_args *a) {
    uint16_t ids[KVMUX_CLI_MAX_GROUPS];
    int grc;
    size_t ng = cli_groups(ctx, a, ids, KVMUX_CLI_MAX_GROUPS, &grc);
    if (ng == 0) return grc;
    for (size_t g = 0; g < ng; g++) {
        kvmux_value *v = NULL;
        /* A prefix with a NUL byte cannot be a C string; STATS names never
         * contain one, so pass the bytes up to it (the CLI keeps it simple). */
        int rc = stats_of(ctx, ids[g], a->npos ? a->pos[0]->data : NULL, &v);
        if (rc != 0) return report(ctx, a, rc);
        if (ctx->out.format == CLI_FORMAT_JSON || ctx->out.format == CLI_FORMAT_CSV) {
            print_stats_lines(ctx, (const char *)v->data, v->len);
        } else {
            if (ctx->cluster) printf("%s# group %u\n", g ? "\n" : "", ids[g]);
            if (v->len) fwrite(v->data, 1, v->len, stdout);
        }
        kvmux_value_free(v);
    }
    return CLI_EXIT_OK;
}

/* The server's text lines as sent (each ends with a newline); with --json
 * an array of strings, with --csv one quoted record per line. */
static int print_lines(cli_ctx *ctx, const cmd_args *a, int rc, kvmux_value *v) {
    if (rc != 0) return report(ctx, a, rc);
    int json = ctx->out.format == CLI_FORMAT_JSON;
    if (!json && ctx->out.format != CLI_FORMAT_CSV) {
        if (v->len) fwrite(v->data, 1, v->len, stdout);
        kvmux_value_free(v);
        return CLI_EXIT_OK;
    }
    const char *p = (const char *)v->data;
    size_t len = v->len, n = 0;
    if (json) putchar('[');
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t ll = nl ? (size_t)(nl - p) : len;
        if (json && n++) putchar(',');
        cli_out_string(&ctx->out, stdout, p, ll);
        if (!json) putchar('\n');
        p += ll + (nl ? 1 : 0);
        len -= ll + (nl ? 1 : 0);
    }
    if (json) puts("]");
    kvmux_value_free(v);
    return CLI_EXIT_OK;
}

#define SLOWLOG_DEFAULT_COUNT 10 /* as redis-cli's SLOWLOG GET */

/* The table row of a handler (for its usage line). */
static const cmd_spec *spec_of(int (*run)(cli_ctx *, const cmd_args *)) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (commands[i].run == run) return &commands[i];
    return NULL; /* unreachable: every handler has a row */
}

static int run_slowlog(cli_ctx *ctx, const cmd_args *a) {
    const cmd_spec *spec = spec_of(run_slowlog);
    const cli_arg *sub = a->pos[0];
    if (sub->len == 3 && strncasecmp(sub->data, "get", 3) == 0) {
        uint64_t n = SLOWLOG_DEFAULT_COUNT;
        if (a->npos > 1 && cli_parse_u64(a->pos[1], UINT32_MAX, &n) != 0)
            return bad_number(a, "count", a->pos[1], "0 (all) to 4294967295 entries");
        kvmux_value *v = NULL;
        int rc = kvmux_slowlog_get(ctx->client, (uint32_t)n, &v, ctx->timeout_ms);
        return print_lines(ctx, a, rc, v);
    }
    if (a->npos > 1) return usage_error(spec, "too many arguments");
    uint64_t n = 0;
    int rc;
    if (sub->len == 3 && strncasecmp(sub->data, "len", 3) == 0) {
        rc = kvmux_slowlog_len(ctx->client, &n, ctx->timeout_ms);
        if (rc != 0) return report(ctx, a, rc);
        printf("%" PRIu64 "\n", n);
        return CLI_EXIT_OK;
    }
    if (sub->len == 5 && strncasecmp(sub->data, "reset", 5) == 0) {
        rc = kvmux_slowlog_reset(ctx->client, &n, ctx->timeout_ms);
        if (rc != 0) return report(ctx, a, rc);
        if (ctx->out.format == CLI_FORMAT_JSON)
            printf("{\"dropped\":%" PRIu64 "}\n", n);
        else if (ctx->out.format == CLI_FORMAT_CSV)
            printf("dropped,%" PRIu64 "\n", n);
        else
            printf("OK dropped=%" PRIu64 "\n", n);
        return CLI_EXIT_OK;
    }
    return usage_error(spec, "expected get, len or reset");
}

static int run_client(cli_ctx *ctx, const cmd_args *a) {
    const cli_arg *sub = a->pos[0];
    if (!(sub->len == 4 && strncasecmp(sub->data, "list", 4) == 0))
        return usage_error(spec_of(run_client), "expected list");
    kvmux_value *v = NULL;
    int rc = kvmux_client_list(ctx->client, &v, ctx->timeout_ms);
    return print_lines(ctx, a, rc, v);
}

/* cluster keyslot KEY: the key's slot (src/cluster/cluster.h), computed
 * here: no server is asked (cli_run_command does not connect for it). */
static int cluster_keyslot(cli_ctx *ctx, const cli_arg *key) {
    unsigned slot = kvmux_slot(key->data, key->len);
    if (ctx->out.format == CLI_FORMAT_JSON)
        printf("{\"slot\":%u}\n", slot);
    else
        printf("%u\n", slot);
    return CLI_EXIT_OK;
}

/* CLUSTER map on the connected node: kvmux_call's result, the reply in *rep. */
static int cluster_map_call(cli_ctx *ctx, kvmux_reply *rep) {
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_CLUSTER;
    r.key = "map";
    r.key_len = 3;
    return kvmux_call(ctx->client, &r, rep, ctx->timeout_ms);
}

/* cluster slots: CLUSTER map, printed in the text form (cluster.h);
 * --json: {"map": "<text form>"}. NOT_FOUND (no map yet) and BAD_REQUEST
 * (not a cluster node) print the server's reason. */
static int cluster_slots(cli_ctx *ctx, const cmd_args *a) {
    kvmux_reply rep;
    int rc = cluster_map_call(ctx, &rep);
    if (rc != 0 && rep.value_len) {
        err_prefix(a);
        fwrite(rep.value, 1, rep.value_len, stderr);
        fputc('\n', stderr);
        kvmux_reply_free(&rep);
        return kvmux_is_fatal(rc) ? report(ctx, a, rc)
               : rc == KVMUX_ENOTFOUND ? CLI_EXIT_NOTFOUND
                                       : CLI_EXIT_REQUEST;
    }
    if (rc != 0) return report(ctx, a, rc);
    char err[128];
    kvmux_map *m = malloc(sizeof *m);
    if (!m) {
        kvmux_reply_free(&rep);
        return report(ctx, a, KVMUX_ENOMEM);
    }
    rc = kvmux_map_decode(m, rep.value, rep.value_len, err, sizeof err);
    kvmux_reply_free(&rep);
    if (rc != 0) {
        free(m);
        err_prefix(a);
        fprintf(stderr, "the server's map does not decode: %s\n", err);
        return CLI_EXIT_REQUEST;
    }
    size_t need = kvmux_map_format_text(m, NULL, 0) + 1;
    char *text = malloc(need);
    if (!text) {
        free(m);
        return report(ctx, a, KVMUX_ENOMEM);
    }
    kvmux_map_format_text(m, text, need);
    free(m);
    if (ctx->out.format == CLI_FORMAT_JSON) {
        fputs("{\"map\":", stdout);
        cli_out_json_string(stdout, text, strlen(text));
        puts("}");
    } else {
        fputs(text, stdout);
    }
    free(text);
    return CLI_EXIT_OK;
}

/* The largest map text cluster assign reads: a line per slot, every group
 * full, with room for comments. */
#define ASSIGN_TEXT_MAX (4u << 20)

/* Read FILE ("-": stdin) into a NUL-terminated malloc'ed buffer; NULL
 * with a message on stderr. */
static char *read_text(const cli_arg *file) {
    FILE *f = strcmp(file->data, "-") == 0 ? stdin : fopen(file->data, "r");
    if (!f) {
        fprintf(stderr, "kvmux-cli: cluster assign: cannot open %s\n", file->data);
        return NULL;
    }
    char *buf = malloc(ASSIGN_TEXT_MAX + 1);
    size_t n = buf ? fread(buf, 1, ASSIGN_TEXT_MAX + 1, f) : 0;
    if (f != stdin) fclose(f);
    if (!buf || n > ASSIGN_TEXT_MAX) {
        fprintf(stderr, "kvmux-cli: cluster assign: %s\n",
                buf ? "the map text exceeds 4 MiB" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* The epoch of the map the connected node has applied (0: none) into
 * *epoch. 0, or an exit code after a message. */
static int current_epoch(cli_ctx *ctx, const cmd_args *a, uint64_t *epoch) {
    kvmux_reply rep;
    int rc = cluster_map_call(ctx, &rep);
    *epoch = 0;
    if (rc != 0) kvmux_reply_free(&rep); /* NOT_FOUND carries the server's message */
    if (rc == KVMUX_ENOTFOUND) return 0;
    if (rc != 0) return report(ctx, a, rc);
    kvmux_map *m = malloc(sizeof *m);
    int ok = m && kvmux_map_decode(m, rep.value, rep.value_len, NULL, 0) == 0;
    if (ok) *epoch = m->epoch;
    free(m);
    kvmux_reply_free(&rep);
    if (ok) return 0;
    fputs("kvmux-cli: cluster assign: the node's map does not decode\n", stderr);
    return CLI_EXIT_REQUEST;
}

/* CLUSTER setmap of map[0..n) to group g: connects to its members (the
 * library follows NOT_LEADER to the leader) with ctx's settings. Prints
 * "group G: <the server's answer>" on stdout, or the error on stderr.
 * Returns an exit code. */
static int assign_group(const cli_ctx *ctx, const kvmux_map_group *g, const uint8_t *map,
                        size_t n) {
    char eps[KVMUX_MAP_MAX_MEMBERS * KVMUX_MAP_ADDR_MAX * 2 + 2];
    size_t off = 0;
    for (unsigned i = 0; i < g->n; i++)
        off += (size_t)snprintf(eps + off, sizeof eps - off, "%s%s", i ? "," : "", g->addr[i]);
    /* A one-member group is listed twice: a comma is what puts the client
     * in endpoint-list mode (cli_connect), which parses host:port. */
    if (g->n == 1) snprintf(eps + off, sizeof eps - off, ",%s", g->addr[0]);
    cli_ctx sub = *ctx;
    sub.host = eps;
    sub.client = NULL;
    int rc = cli_connect(&sub);
    if (rc != CLI_EXIT_OK) {
        fprintf(stderr, "kvmux-cli: cluster assign: group %u: not reachable\n", g->id);
        return rc;
    }
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_CLUSTER;
    r.key = "setmap";
    r.key_len = 6;
    r.value = map;
    r.value_len = n;
    kvmux_reply rep;
    rc = kvmux_call(sub.client, &r, &rep, ctx->timeout_ms);
    kvmux_close(sub.client);
    if (rc == 0) printf("group %u: %.*s\n", g->id, (int)rep.value_len, (const char *)rep.value);
    else if (rep.value_len)
        fprintf(stderr, "kvmux-cli: cluster assign: group %u: %.*s\n", g->id,
                (int)rep.value_len, (const char *)rep.value);
    else
        fprintf(stderr, "kvmux-cli: cluster assign: group %u: %s\n", g->id, kvmux_strerror(rc));
    kvmux_reply_free(&rep);
    return rc == 0 ? CLI_EXIT_OK : kvmux_is_fatal(rc) ? CLI_EXIT_CONN : CLI_EXIT_REQUEST;
}

/* cluster assign FILE|-: parse the text form; no epoch in it: the node's
 * epoch + 1; push the map to every group it lists. Exit status: 0 when
 * every group installed it, else the last failure's. */
static int cluster_assign(cli_ctx *ctx, const cmd_args *a) {
    char *text = read_text(a->pos[1]);
    if (!text) return CLI_EXIT_USAGE;
    char err[160];
    kvmux_map *m = malloc(sizeof *m);
    uint8_t *wire = malloc(KVMUX_MAP_WIRE_MAX);
    int rc = !m || !wire ? report(ctx, a, KVMUX_ENOMEM) : CLI_EXIT_OK;
    if (rc == CLI_EXIT_OK && kvmux_map_parse_text(m, text, err, sizeof err) != 0) {
        fprintf(stderr, "kvmux-cli: cluster assign: %s\n", err);
        rc = CLI_EXIT_USAGE;
    }
    free(text);
    if (rc == CLI_EXIT_OK && a->map) {
        /* Through the map group (mapassign.c): CAS, then wait. */
        rc = cli_assign_via_map(ctx, a->map, m, wire, KVMUX_MAP_WIRE_MAX);
        free(m);
        free(wire);
        return rc;
    }
    uint64_t cur = 0;
    if (rc == CLI_EXIT_OK && m->epoch == 0 && (rc = current_epoch(ctx, a, &cur)) == 0)
        m->epoch = cur + 1;
    size_t n = 0;
    if (rc == CLI_EXIT_OK && (n = kvmux_map_encode(m, wire, KVMUX_MAP_WIRE_MAX)) == 0) {
        fputs("kvmux-cli: cluster assign: the map does not encode\n", stderr);
        rc = CLI_EXIT_USAGE;
    }
    for (uint16_t i = 0; rc != CLI_EXIT_USAGE && n && i < m->ngroups; i++) {
        int grc = assign_group(ctx, &m->groups[i], wire, n);
        if (grc != CLI_EXIT_OK) rc = grc;
    }
    free(m);
    free(wire);
    return rc;
}

/* GROUP (opcode 15): "status" prints the replica's "name:value" lines
 * (--json: one object, as stats); a change prints "OK " and what the
 * leader did ({"ok":...} in JSON). Errors as for every command, with the
 * server's message (unknown id, already a member, ...). */
/* cluster migrate (migrate.c): slot migrations through the map group. */
static int cluster_migrate(cli_ctx *ctx, const cmd_args *a) {
    const cmd_spec *spec = spec_of(run_cluster);
    if (!a->map)
        return usage_error(spec, "slot migration needs a map group (--map)");
    if (a->has_abort ? a->npos != 1 : a->npos != 3)
        return usage_error(spec, "expected migrate F-L|SLOT GROUP or migrate --abort ID");
    cli_mig_opts o = {.map = a->map, .no_wait = a->no_wait, .has_abort = a->has_abort,
                      .abort_id = a->abort_id, .timeout_s = a->timeout_s};
    if (!a->has_abort) {
        o.range = a->pos[1]->data; /* NUL-terminated (args.h) */
        o.group = a->pos[2]->data;
    }
    return cli_migrate(ctx, &o);
}

static int run_cluster(cli_ctx *ctx, const cmd_args *a) {
    const cmd_spec *spec = spec_of(run_cluster);
    const cli_arg *sub = a->pos[0];
    static const struct { const char *name; size_t min, max; } subs[] = {
        {"status", 0, 0}, {"add", 3, 3}, {"remove", 1, 1}, {"transfer", 0, 1},
        {"keyslot", 1, 1}, {"slots", 0, 0}, {"assign", 1, 1}, {"migrate", 0, 2}};
    size_t k = 0;
    while (k < 8 && !(sub->len == strlen(subs[k].name) &&
                      strncasecmp(sub->data, subs[k].name, sub->len) == 0))
        k++;
    if (k == 8)
        return usage_error(spec, "expected status, add, remove, transfer, keyslot, slots, "
                                 "assign or migrate");
    if (a->npos - 1 < subs[k].min || a->npos - 1 > subs[k].max)
        return usage_error(spec, "wrong number of arguments");
    if (a->map && k != 6 && k != 7 && k != 0)
        return usage_error(spec, "--map goes with assign, migrate and status only");
    if ((a->no_wait || a->has_abort || a->timeout_s) && k != 7)
        return usage_error(spec, "--no-wait, --abort and --timeout go with migrate only");
    if (k == 7) return cluster_migrate(ctx, a);
    if (k == 0 && a->map) return cli_migrate_status(ctx, a->map);
    if (k == 4) return cluster_keyslot(ctx, a->pos[1]);
    if (k == 5) return cluster_slots(ctx, a);
    if (k == 6) return cluster_assign(ctx, a);
    char args[256]; /* the server's limit on GROUP arguments */
    size_t alen = 0;
    for (size_t i = 1; i < a->npos; i++) {
        if (alen + a->pos[i]->len + 1 >= sizeof args)
            return usage_error(spec, "arguments too long");
        if (i > 1) args[alen++] = ' ';
        memcpy(args + alen, a->pos[i]->data, a->pos[i]->len);
        alen += a->pos[i]->len;
    }
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GROUP;
    r.key = subs[k].name;
    r.key_len = strlen(subs[k].name);
    r.value = args;
    r.value_len = alen;
    kvmux_reply rep;
    int rc = kvmux_call(ctx->client, &r, &rep, ctx->timeout_ms);
    if (rc != 0 && rep.value_len) {
        /* The server's reason first: "replica 4 is already a member". */
        err_prefix(a);
        fwrite(rep.value, 1, rep.value_len, stderr);
        fputc('\n', stderr);
        kvmux_reply_free(&rep);
        return rc <= KVMUX_E_FATAL || kvmux_is_fatal(rc) ? report(ctx, a, rc)
               : rc == KVMUX_ENOTFOUND                 ? CLI_EXIT_NOTFOUND
                                                       : CLI_EXIT_REQUEST;
    }
    if (rc != 0) return report(ctx, a, rc);
    int json = ctx->out.format == CLI_FORMAT_JSON;
    if (k == 0 && (json || ctx->out.format == CLI_FORMAT_CSV)) {
        print_stats_lines(ctx, (const char *)rep.value, rep.value_len);
    } else if (k == 0) {
        if (rep.value_len) fwrite(rep.value, 1, rep.value_len, stdout);
    } else if (json) {
        fputs("{\"ok\":", stdout);
        cli_out_json_string(stdout, rep.value, rep.value_len);
        puts("}");
    } else {
        fputs("OK ", stdout);
        fwrite(rep.value, 1, rep.value_len, stdout);
        putchar('\n');
    }
    kvmux_reply_free(&rep);
    return CLI_EXIT_OK;
}

/* The only command that needs no connection (see cli_run_command).
 * "help CMD": the synopsis, then the description, indented. */
static int run_help(cli_ctx *ctx, const cmd_args *a) {
    (void)ctx;
    if (a->npos == 0) {
        cli_print_commands(stdout);
        return CLI_EXIT_OK;
    }
    cli_command_info info;
    if (cli_command_lookup(a->pos[0]->data, a->pos[0]->len, &info) != 0) {
        fputs("kvmux-cli: help: unknown command '", stderr);
        put_escaped(stderr, a->pos[0]->data, a->pos[0]->len);
        fputs("' (try 'help')\n", stderr);
        return CLI_EXIT_USAGE;
    }
    printf("%s%s%s\n    %s\n", info.name, info.usage[0] ? " " : "", info.usage,
           info.help);
    return CLI_EXIT_OK;
}

void cli_print_commands(FILE *f) {
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char line[64];
        snprintf(line, sizeof line, "%s %s", commands[i].name, commands[i].usage);
        fprintf(f, "  %-32s %s\n", line, commands[i].help);
    }
    fprintf(f, "  %-32s %s\n", "quit, exit", "leave the interactive prompt");
}

/* The prompt's own words: in the table's listings, not dispatched here. */
static const cli_command_info prompt_words[] = {
    {"quit", "", "leave the interactive prompt"},
    {"exit", "", "leave the interactive prompt"},
};

int cli_command_at(size_t i, cli_command_info *out) {
    if (i < N_COMMANDS) {
        out->name = commands[i].name;
        out->usage = commands[i].usage;
        out->help = commands[i].help;
        return 0;
    }
    i -= N_COMMANDS;
    if (i >= sizeof prompt_words / sizeof prompt_words[0]) return -1;
    *out = prompt_words[i];
    return 0;
}

int cli_command_lookup(const char *name, size_t len, cli_command_info *out) {
    cli_command_info info;
    for (size_t i = 0; cli_command_at(i, &info) == 0; i++) {
        if (len == strlen(info.name) && strncasecmp(name, info.name, len) == 0) {
            *out = info;
            return 0;
        }
    }
    return -1;
}

/* ---- dispatch ---- */

/* Exact, case-sensitive match of an argument against a C string. */
static int arg_is(const cli_arg *a, const char *s) {
    return a->len == strlen(s) && memcmp(a->data, s, a->len) == 0;
}

/* The table row for a command name (case-insensitive), or NULL. */
static const cmd_spec *find_command(const cli_arg *name) {
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (name->len == strlen(commands[i].name) &&
            strncasecmp(name->data, commands[i].name, name->len) == 0)
            return &commands[i];
    }
    return NULL;
}

/* Split args[1..] into options and positionals per s. Returns CLI_EXIT_OK
 * or CLI_EXIT_USAGE (message printed). */
static int parse_args(const cmd_spec *s, const cli_ctx *ctx,
                      const cli_arg *args, size_t nargs, cmd_args *out) {
    memset(out, 0, sizeof *out);
    out->name = s->name;
    out->verbose = ctx->verbose;
    int options_done = 0;
    for (size_t i = 1; i < nargs; i++) {
        const cli_arg *t = &args[i];
        if (!options_done) {
            if (arg_is(t, "--")) {
                options_done = 1;
                continue;
            }
            if ((s->opts & OPT_VERBOSE) && arg_is(t, "-v")) {
                out->verbose = 1;
                continue;
            }
            int ttl_eq = t->len >= 6 && memcmp(t->data, "--ttl=", 6) == 0;
            if ((s->opts & OPT_TTL) && (ttl_eq || arg_is(t, "--ttl"))) {
                cli_arg num;
                if (ttl_eq) {
                    num.data = t->data + 6;
                    num.len = t->len - 6;
                } else if (i + 1 < nargs) {
                    num = args[++i];
                } else {
                    return usage_error(s, "--ttl needs a value");
                }
                if (cli_parse_u64(&num, UINT64_MAX, &out->ttl_ms) != 0)
                    return bad_number(out, "--ttl", &num,
                                      "milliseconds, 0 for no expiry");
                continue;
            }
            int map_eq = t->len >= 6 && memcmp(t->data, "--map=", 6) == 0;
            if ((s->opts & OPT_MAP) && (map_eq || arg_is(t, "--map"))) {
                /* cli_arg data is NUL-terminated (args.h). */
                if (map_eq) out->map = t->data + 6;
                else if (i + 1 < nargs) out->map = args[++i].data;
                else return usage_error(s, "--map needs the map group's HOST:PORT,...");
                if (!out->map[0]) return usage_error(s, "--map needs the map group's HOST:PORT,...");
                continue;
            }
            if ((s->opts & OPT_MIG) && arg_is(t, "--no-wait")) {
                out->no_wait = 1;
                continue;
            }
            if ((s->opts & OPT_MIG) && (arg_is(t, "--abort") || arg_is(t, "--timeout"))) {
                int ab = arg_is(t, "--abort");
                if (i + 1 >= nargs)
                    return usage_error(s, ab ? "--abort needs an ID" : "--timeout needs seconds");
                cli_arg num = args[++i];
                uint64_t *dst = ab ? &out->abort_id : &out->timeout_s;
                if (cli_parse_u64(&num, ab ? UINT32_MAX : 86400, dst) != 0 || (ab && !*dst))
                    return bad_number(out, ab ? "--abort" : "--timeout", &num,
                                      ab ? "a migration id, 1 to 4294967295"
                                         : "seconds, 0 to 86400");
                if (ab) out->has_abort = 1;
                continue;
            }
            int count_eq = t->len >= 8 && memcmp(t->data, "--count=", 8) == 0;
            if ((s->opts & OPT_COUNT) && (count_eq || arg_is(t, "--count"))) {
                cli_arg num;
                if (count_eq) {
                    num.data = t->data + 8;
                    num.len = t->len - 8;
                } else if (i + 1 < nargs) {
                    num = args[++i];
                } else {
                    return usage_error(s, "--count needs a value");
                }
                if (cli_parse_u64(&num, 1000, &out->count) != 0)
                    return bad_number(out, "--count", &num, "0 to 1000 keys per step");
                continue;
            }
        }
        if (out->npos == s->max_pos) return usage_error(s, "too many arguments");
        out->pos[out->npos++] = t;
    }
    if (out->npos < s->min_pos) return usage_error(s, "missing arguments");
    /* Every keyed command needs a non-empty key (the protocol requires
     * key_len >= 1): say so here rather than as a server error. */
    if (s->min_pos > 0 && out->pos[0]->len == 0)
        return usage_error(s, "the key must not be empty");
    return CLI_EXIT_OK;
}

int cli_run_command(cli_ctx *ctx, const cli_arg *args, size_t nargs) {
    int rc;
    if (nargs == 0) return CLI_EXIT_OK;
    const cmd_spec *s = find_command(&args[0]);
    if (!s) {
        fputs("kvmux-cli: unknown command '", stderr);
        put_escaped(stderr, args[0].data, args[0].len);
        fputs("' (try 'help')\n", stderr);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    cmd_args a;
    rc = parse_args(s, ctx, args, nargs, &a);
    if (rc != CLI_EXIT_OK) goto out;
    /* help and cluster keyslot need no server. */
    /* cluster assign --map talks to the map group and the groups only. */
    int local = s->run == run_help ||
                (s->run == run_cluster && a.npos > 0 && a.pos[0]->len == 7 &&
                 strncasecmp(a.pos[0]->data, "keyslot", 7) == 0) ||
                (s->run == run_cluster && a.map) ||
                (s->run == run_cluster && a.npos > 0 && a.pos[0]->len == 7 &&
                 strncasecmp(a.pos[0]->data, "migrate", 7) == 0);
    if (!local) {
        rc = cli_connect(ctx);
        if (rc != CLI_EXIT_OK) goto out;
    }
    rc = s->run(ctx, &a);
out:
    fflush(stdout);
    fflush(stderr);
    return rc;
}
