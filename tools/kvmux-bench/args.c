/* kvmux-bench command line parsing.
 *
 * What it is: turns argv into a bench_config, with redis-benchmark's short
 * options where they mean the same thing (-h -p -c -n -d -k -s -t -q) and
 * long options for the rest. Every number is parsed strictly (whole string,
 * in range) and every limit from args.h is enforced here, so the runner can
 * trust the config.
 *
 * What it is not: no I/O beyond the messages it prints, no defaults hidden
 * elsewhere: bench_config's defaults are all set in config_defaults().
 */
#include "args.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *const mode_names[] = {"serial", "sync", "async"};
static const char *const op_names[BENCH_OP_COUNT] = {"get", "set", "incr", "ping"};

const char *bench_mode_name(bench_mode m)
{
    return (unsigned)m < 3 ? mode_names[m] : "?";
}

const char *bench_driver_name(bench_driver d)
{
    return d == BENCH_DRIVER_LOOP ? "loop" : d == BENCH_DRIVER_CALLBACK ? "callback" : "?";
}

const char *bench_op_name(bench_opkind k)
{
    return (unsigned)k < BENCH_OP_COUNT ? op_names[k] : "?";
}

void bench_args_usage(FILE *out)
{
    fputs(
        "usage: kvmux-bench [options]\n"
        "  -h HOST             server host (default 127.0.0.1), or a replicated\n"
        "                      group: HOST:PORT,HOST:PORT,... (every connection\n"
        "                      finds and follows the leader; -p unused)\n"
        "  -p PORT             server port (default 7878)\n"
        "  -c N                connections, one kvmux_client each (default 1)\n"
        "  -t N                caller threads per connection (sync mode; default 1)\n"
        "  --mode M            serial | sync | async (default serial, or sync when -t > 1)\n"
        "                      serial: one caller per connection, one request at a time\n"
        "                      sync:   -t blocking caller threads per connection\n"
        "                      async:  --depth N in flight per connection\n"
        "  --depth N           async mode: requests in flight per connection (default 1)\n"
        "  --driver D          async mode: loop (default; an event-loop client on the\n"
        "                      bench's own epoll loop, one thread per connection) |\n"
        "                      callback (threaded client, kvmux_call_async, the\n"
        "                      completion thread submits the next request)\n"
        "  -n N                total requests to measure (default 100000)\n"
        "  -d SECONDS          measure for a duration instead of a count\n"
        "  --warmup SECONDS    run unmeasured for this long first (default 0)\n"
        "  --ratio GET:SET     mix of GETs and SETs, e.g. 9:1 (default 1:0)\n"
        "  --op OP             a single operation: get | set | incr | ping\n"
        "  -k N                keyspace: keys key:0000000000 .. N-1, uniform (default 100000)\n"
        "  -s N | MIN-MAX      SET value size in bytes, or a uniform range (default 100)\n"
        "  --preload           SET every key in the keyspace before measuring\n"
        "  --timeout MS        per-request timeout (default 5000)\n"
        "  --busy-poll USEC    after I/O, poll the socket for up to USEC before sleeping\n"
        "                      (the loop driver's epoll_wait, else the client's reader\n                      thread: kvmux_options.busy_poll_us; default 0 = off)\n"
        "  --stale             reads carry the STALE flag (kvmux_options.stale_reads):\n"
        "                      any replica of a group answers them from what it has\n"
        "                      applied (protocol v3; no effect on a single node)\n"
        "  --seed N            random seed (default 1)\n"
        "  --json              final summary as JSON on stdout\n"
        "  --tls               connect with TLS (serial/sync, or --driver callback);\n"
        "                      the certificate is not verified unless --cacert\n"
        "  --cacert FILE       PEM CA to verify the server with (implies --tls)\n"
        "  -a, --auth TOKEN    the server's token (--requirepass; default $KVMUX_AUTH)\n"
        "  --cluster           a sharded cluster: -h/-p (or -h's list) are seeds, any\n"
        "                      node; keys go to their slot's group\n"
        "  -q                  no per-second progress on stderr\n"
        "  --help              this text\n",
        out);
}

static void config_defaults(bench_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 7878;
    cfg->connections = 1;
    cfg->threads = 1;
    cfg->mode = BENCH_MODE_SERIAL;
    cfg->depth = 1;
    cfg->requests = 0;
    cfg->duration_s = 0;
    cfg->warmup_s = 0;
    cfg->weight[BENCH_OP_GET] = 1;
    cfg->keyspace = 100000;
    cfg->value_min = cfg->value_max = 100;
    cfg->timeout_ms = 5000;
    cfg->seed = 1;
    const char *env_auth = getenv("KVMUX_AUTH"); /* as kvmux-cli; -a overrides it */
    cfg->auth = env_auth && *env_auth ? env_auth : NULL;
}

/* Parse a whole unsigned decimal in [lo, hi]. Returns 0 or -1. */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Parse a non-negative number of seconds (decimals allowed) <= hi. */
static int parse_seconds(const char *s, double hi, double *out)
{
    if (!s || !*s)
        return -1;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0.0) || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* "N" or "MIN-MAX". */
static int parse_size_range(const char *s, size_t *mn, size_t *mx)
{
    uint64_t a, b;
    const char *dash = strchr(s, '-');
    if (!dash) {
        if (parse_u64(s, 0, BENCH_MAX_VALUE_SIZE, &a))
            return -1;
        *mn = *mx = (size_t)a;
        return 0;
    }
    char lo[32];
    size_t n = (size_t)(dash - s);
    if (n == 0 || n >= sizeof lo)
        return -1;
    memcpy(lo, s, n);
    lo[n] = '\0';
    if (parse_u64(lo, 0, BENCH_MAX_VALUE_SIZE, &a) ||
        parse_u64(dash + 1, 0, BENCH_MAX_VALUE_SIZE, &b) || a > b)
        return -1;
    *mn = (size_t)a;
    *mx = (size_t)b;
    return 0;
}

/* "G:S", both >= 0, not both 0. */
static int parse_ratio(const char *s, uint32_t *g, uint32_t *st)
{
    const char *colon = strchr(s, ':');
    if (!colon)
        return -1;
    char lo[16];
    size_t n = (size_t)(colon - s);
    if (n == 0 || n >= sizeof lo)
        return -1;
    memcpy(lo, s, n);
    lo[n] = '\0';
    uint64_t a, b;
    if (parse_u64(lo, 0, 1000000, &a) || parse_u64(colon + 1, 0, 1000000, &b) ||
        a + b == 0)
        return -1;
    *g = (uint32_t)a;
    *st = (uint32_t)b;
    return 0;
}

enum {
    OPT_MODE = 256,
    OPT_DEPTH,
    OPT_DRIVER,
    OPT_WARMUP,
    OPT_RATIO,
    OPT_OP,
    OPT_PRELOAD,
    OPT_JSON,
    OPT_TLS,
    OPT_CACERT,
    OPT_TIMEOUT,
    OPT_BUSY_POLL,
    OPT_SEED,
    OPT_CLUSTER,
    OPT_STALE,
    OPT_AUTH,
    OPT_HELP
};

int bench_args_parse(bench_config *cfg, int argc, char **argv, FILE *err)
{
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, OPT_MODE},
        {"depth", required_argument, NULL, OPT_DEPTH},
        {"driver", required_argument, NULL, OPT_DRIVER},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"ratio", required_argument, NULL, OPT_RATIO},
        {"op", required_argument, NULL, OPT_OP},
        {"preload", no_argument, NULL, OPT_PRELOAD},
        {"json", no_argument, NULL, OPT_JSON},
        {"tls", no_argument, NULL, OPT_TLS},
        {"cacert", required_argument, NULL, OPT_CACERT},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"busy-poll", required_argument, NULL, OPT_BUSY_POLL},
        {"seed", required_argument, NULL, OPT_SEED},
        {"cluster", no_argument, NULL, OPT_CLUSTER},
        {"stale", no_argument, NULL, OPT_STALE},
        {"auth", required_argument, NULL, OPT_AUTH},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    config_defaults(cfg);
    int mode_given = 0, ratio_given = 0, op_given = 0, depth_given = 0;
    int driver_given = 0;
    int n_given = 0, d_given = 0;
    uint64_t v;

    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h:p:c:t:n:d:k:s:qa:", longopts, NULL)) != -1) {
        const char *a = optarg;
        switch (ch) {
        case 'h':
            if (!a || !*a)
                goto bad;
            cfg->host = a;
            break;
        case 'p':
            if (parse_u64(a, 1, 65535, &v))
                goto bad;
            cfg->port = (uint16_t)v;
            break;
        case 'c':
            if (parse_u64(a, 1, BENCH_MAX_CONNECTIONS, &v))
                goto bad;
            cfg->connections = (uint32_t)v;
            break;
        case 't':
            if (parse_u64(a, 1, BENCH_MAX_THREADS_PER_CONN, &v))
                goto bad;
            cfg->threads = (uint32_t)v;
            break;
        case 'n':
            if (parse_u64(a, 1, UINT64_MAX / 2, &v))
                goto bad;
            cfg->requests = v;
            n_given = 1;
            break;
        case 'd':
            if (parse_seconds(a, BENCH_MAX_DURATION_S, &cfg->duration_s) ||
                cfg->duration_s <= 0)
                goto bad;
            d_given = 1;
            break;
        case 'k':
            if (parse_u64(a, 1, UINT32_MAX, &v))
                goto bad;
            cfg->keyspace = (uint32_t)v;
            break;
        case 's':
            if (parse_size_range(a, &cfg->value_min, &cfg->value_max))
                goto bad;
            break;
        case 'q':
            cfg->quiet = 1;
            break;
        case 'a':
        case OPT_AUTH:
            if (!a || !*a)
                goto bad;
            cfg->auth = a;
            break;
        case OPT_CLUSTER:
            cfg->cluster = 1;
            break;
        case OPT_MODE:
            if (!strcmp(a, "serial"))
                cfg->mode = BENCH_MODE_SERIAL;
            else if (!strcmp(a, "sync"))
                cfg->mode = BENCH_MODE_SYNC;
            else if (!strcmp(a, "async"))
                cfg->mode = BENCH_MODE_ASYNC;
            else
                goto bad;
            mode_given = 1;
            break;
        case OPT_DEPTH:
            if (parse_u64(a, 1, BENCH_MAX_DEPTH, &v))
                goto bad;
            cfg->depth = (uint32_t)v;
            depth_given = 1;
            break;
        case OPT_DRIVER:
            if (!strcmp(a, "loop"))
                cfg->driver = BENCH_DRIVER_LOOP;
            else if (!strcmp(a, "callback"))
                cfg->driver = BENCH_DRIVER_CALLBACK;
            else
                goto bad;
            driver_given = 1;
            break;
        case OPT_WARMUP:
            if (parse_seconds(a, BENCH_MAX_DURATION_S, &cfg->warmup_s))
                goto bad;
            break;
        case OPT_RATIO:
            memset(cfg->weight, 0, sizeof cfg->weight);
            if (parse_ratio(a, &cfg->weight[BENCH_OP_GET], &cfg->weight[BENCH_OP_SET]))
                goto bad;
            ratio_given = 1;
            break;
        case OPT_OP: {
            int k;
            for (k = 0; k < BENCH_OP_COUNT; k++)
                if (!strcmp(a, op_names[k]))
                    break;
            if (k == BENCH_OP_COUNT)
                goto bad;
            memset(cfg->weight, 0, sizeof cfg->weight);
            cfg->weight[k] = 1;
            op_given = 1;
            break;
        }
        case OPT_PRELOAD:
            cfg->preload = 1;
            break;
        case OPT_JSON:
            cfg->json = 1;
            break;
        case OPT_TLS:
            cfg->tls = 1;
            break;
        case OPT_CACERT:
            if (!a || !*a)
                goto bad;
            cfg->tls = 1;
            cfg->tls_ca = a;
            break;
        case OPT_TIMEOUT:
            if (parse_u64(a, 1, 3600 * 1000, &v))
                goto bad;
            cfg->timeout_ms = (int)v;
            break;
        case OPT_BUSY_POLL:
            if (parse_u64(a, 0, 1000000, &v))
                goto bad;
            cfg->busy_poll_us = (uint32_t)v;
            break;
        case OPT_SEED:
            if (parse_u64(a, 0, UINT64_MAX, &v))
                goto bad;
            cfg->seed = v;
            break;
        case OPT_STALE:
            cfg->stale = 1;
            break;
        case OPT_HELP:
            bench_args_usage(stdout);
            return 1;
        default:
            fprintf(err, "kvmux-bench: unknown option or missing argument: %s\n",
                    argv[optind - 1]);
            return -1;
        }
        continue;
    bad:
        if (ch < 256) {
            fprintf(err, "kvmux-bench: bad value for -%c: '%s'\n", ch, a ? a : "");
        } else {
            const char *name = "?";
            for (const struct option *o = longopts; o->name; o++)
                if (o->val == ch)
                    name = o->name;
            fprintf(err, "kvmux-bench: bad value for --%s: '%s'\n", name, a ? a : "");
        }
        return -1;
    }
    if (optind < argc) {
        fprintf(err, "kvmux-bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }

    if (n_given && d_given) {
        fprintf(err, "kvmux-bench: -n and -d are exclusive\n");
        return -1;
    }
    if (!n_given && !d_given)
        cfg->requests = 100000;
    if (ratio_given && op_given) {
        fprintf(err, "kvmux-bench: --ratio and --op are exclusive\n");
        return -1;
    }
    if (!mode_given && cfg->threads > 1)
        cfg->mode = BENCH_MODE_SYNC;
    if (cfg->mode == BENCH_MODE_SERIAL && cfg->threads > 1) {
        fprintf(err, "kvmux-bench: --mode serial means one caller per connection; "
                     "use --mode sync with -t %u\n", cfg->threads);
        return -1;
    }
    if ((depth_given || driver_given) && cfg->mode != BENCH_MODE_ASYNC) {
        fprintf(err, "kvmux-bench: --%s only applies to --mode async\n",
                depth_given ? "depth" : "driver");
        return -1;
    }
    if (cfg->tls && cfg->mode == BENCH_MODE_ASYNC && cfg->driver == BENCH_DRIVER_LOOP) {
        fprintf(err, "kvmux-bench: --tls needs a threaded client: use --driver callback "
                     "(event-loop clients do not support TLS)\n");
        return -1;
    }
    if (cfg->mode == BENCH_MODE_ASYNC && cfg->threads > 1) {
        fprintf(err, "kvmux-bench: --mode async runs one driver per connection; "
                     "use --depth, not -t\n");
        return -1;
    }
    if ((uint64_t)cfg->connections * cfg->threads > BENCH_MAX_WORKERS) {
        fprintf(err, "kvmux-bench: -c * -t must be at most %d\n", BENCH_MAX_WORKERS);
        return -1;
    }
    return 0;
}
