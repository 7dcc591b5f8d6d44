/* mcload: memcached load generator for bench/sweep.sh, the memcached
 * counterpart of `kvmux-bench --mode async --depth N` and of
 * `redis-benchmark -c 1 -P N`.
 *
 * What it does: ONE TCP connection, one thread, memcached's text protocol.
 * It keeps N requests (GET or SET of a fixed-size value, keys "key:%010u"
 * uniform over a key space, as kvmux-bench) outstanding: whenever replies
 * arrive, as many new requests are queued as completed, and everything
 * queued goes out in one send(). Replies come back in request order (the
 * text protocol has no request ids), so a FIFO of submit times gives each
 * request's latency: from the moment it was queued to the moment its reply
 * was parsed. Latencies go into kvmux-bench's log-linear histogram
 * (tools/kvmux-bench/hist.c, compiled in, not copied), and the summary
 * prints ops/s and p50/p90/p99/p99.9 with the same JSON field names as
 * `kvmux-bench --json`, so the sweep script parses both alike.
 *
 * Why not memcslap / memaslap (libmemcached-tools): memaslap drives each
 * "concurrency" (connection) one request at a time and prints at most
 * min/max/avg/std-dev, no percentiles; memslap (-B) buffers SETs with
 * noreply and prints only the total time. Neither keeps N requests in
 * flight on one connection while timing each of them.
 *
 * Clock: one CLOCK_MONOTONIC read per batch of replies serves as the
 * completion time of every reply in it and as the submit time of the
 * requests queued in response (kvmux-bench's loop driver does the same
 * reuse), so the timing costs one vDSO call per round trip, not per
 * request.
 *
 * Not here: the binary or meta protocols, multi-get, several connections or
 * threads, key distributions other than uniform, value verification (a GET
 * reply is checked for framing and length only).
 *
 * Exit status: 0 done; 1 connection failure, lost connection or a protocol
 * error from the server; 2 usage. */
#include "hist.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MCLOAD_MAX_DEPTH 65536u
#define MCLOAD_MAX_VALUE (1024u * 1024u) /* memcached's default item limit */
#define MCLOAD_KEY_FMT "key:%010u"
#define MCLOAD_REQ_OVERHEAD 64u          /* "set <key> 0 0 <len>\r\n" + "\r\n" */
#define MCLOAD_DRAIN_MS 5000             /* replies still awaited after the end */

typedef enum { OP_GET, OP_SET } mc_op;

typedef struct mc_config {
    const char *host;
    const char *port;
    mc_op op;
    size_t vsize;
    uint32_t keyspace;
    uint32_t depth;
    double seconds;      /* measured phase, when count == 0 */
    uint64_t count;      /* measured replies, 0 = use seconds */
    double warmup;       /* seconds run before measuring */
    int preload;
    int json;
    int quiet;
    uint64_t seed;
    int meta;            /* meta commands (mg/ms) instead of get/set */
} mc_config;

typedef struct mc_conn {
    int fd;
    char *out;           /* queued request bytes not yet sent */
    size_t out_len, out_off, out_cap;
    char *in;            /* received bytes not yet parsed */
    size_t in_len, in_cap;
    int64_t *fifo;       /* submit times of in-flight requests, oldest first */
    uint32_t fifo_head, fifo_count, fifo_cap;
    char *value;         /* the SET payload, vsize printable bytes */
    uint64_t rng;
} mc_conn;

typedef struct mc_stats {
    bench_hist hist;
    uint64_t ops, ok, misses, errors;
} mc_stats;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mcload -p PORT [-h HOST] [--op get|set] [-s BYTES] [-k KEYSPACE]\n"
            "              [--depth N] [-d SECONDS | -n COUNT] [--warmup SECONDS]\n"
            "              [--preload] [--seed N] [--proto text|meta] [--json] [-q]\n"
            "  one connection to memcached (text protocol), N requests in flight\n"
            "  defaults: -h 127.0.0.1, --op get, -s 100, -k 10000, --depth 1, -d 3\n"
            "  --preload  SET every key of the key space first (so GETs hit)\n"
            "  --proto    text: get/set (default); meta: mg <key> v / ms <key> <len>\n");
}

/* Parse an unsigned decimal in [lo, hi]; returns 0 or -1. */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_secs(const char *s, double *out)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || v > 86400)
        return -1;
    *out = v;
    return 0;
}

/* Fills cfg from argv; returns 0, or 2 after printing the problem. */
static int parse_args(int argc, char **argv, mc_config *cfg)
{
    enum { O_OP = 256, O_DEPTH, O_WARMUP, O_PRELOAD, O_SEED, O_JSON, O_HELP, O_PROTO };
    static const struct option longopts[] = {
        {"op", required_argument, NULL, O_OP},
        {"depth", required_argument, NULL, O_DEPTH},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"preload", no_argument, NULL, O_PRELOAD},
        {"seed", required_argument, NULL, O_SEED},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, O_HELP},
        {"proto", required_argument, NULL, O_PROTO},
        {NULL, 0, NULL, 0},
    };
    *cfg = (mc_config){.host = "127.0.0.1", .port = NULL, .op = OP_GET, .vsize = 100,
                       .keyspace = 10000, .depth = 1, .seconds = 3, .seed = 1};
    uint64_t v;
    int c;
    while ((c = getopt_long(argc, argv, "h:p:s:k:d:n:q", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': cfg->host = optarg; break;
        case 'p':
            if (parse_u64(optarg, 1, 65535, &v))
                goto bad;
            cfg->port = optarg;
            break;
        case 's':
            if (parse_u64(optarg, 1, MCLOAD_MAX_VALUE, &v))
                goto bad;
            cfg->vsize = (size_t)v;
            break;
        case 'k':
            if (parse_u64(optarg, 1, UINT32_MAX, &v))
                goto bad;
            cfg->keyspace = (uint32_t)v;
            break;
        case 'd':
            if (parse_secs(optarg, &cfg->seconds) || cfg->seconds <= 0)
                goto bad;
            break;
        case 'n':
            if (parse_u64(optarg, 1, UINT64_MAX / 2, &cfg->count))
                goto bad;
            break;
        case 'q': cfg->quiet = 1; break;
        case O_OP:
            if (!strcmp(optarg, "get"))
                cfg->op = OP_GET;
            else if (!strcmp(optarg, "set"))
                cfg->op = OP_SET;
            else
                goto bad;
            break;
        case O_DEPTH:
            if (parse_u64(optarg, 1, MCLOAD_MAX_DEPTH, &v))
                goto bad;
            cfg->depth = (uint32_t)v;
            break;
        case O_WARMUP:
            if (parse_secs(optarg, &cfg->warmup))
                goto bad;
            break;
        case O_PRELOAD: cfg->preload = 1; break;
        case O_SEED:
            if (parse_u64(optarg, 0, UINT64_MAX, &cfg->seed))
                goto bad;
            break;
        case O_JSON: cfg->json = 1; break;
        case O_HELP: usage(stdout); exit(0);
        case O_PROTO:
            if (!strcmp(optarg, "meta"))
                cfg->meta = 1;
            else if (!strcmp(optarg, "text"))
                cfg->meta = 0;
            else
                goto bad;
            break;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !cfg->port) {
        usage(stderr);
        return 2;
    }
    return 0;
bad:
    fprintf(stderr, "mcload: bad value for option -%c%s: '%s'\n", c < 256 ? c : '-',
            c < 256 ? "" : longopts[c - O_OP].name, optarg);
    return 2;
}

static int mc_connect(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        fprintf(stderr, "mcload: %s:%s: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
            struct pollfd pf = {fd, POLLOUT, 0};
            int err = 0;
            socklen_t len = sizeof err;
            if (poll(&pf, 1, 5000) == 1 && !getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) &&
                err == 0)
                break;
            errno = err ? err : ETIMEDOUT;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "mcload: connect %s:%s: %s\n", host, port, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Queue one request for key index k (the caller guarantees room in out and
 * in the FIFO: both are sized for depth requests). */
static void queue_request(mc_conn *c, int meta, mc_op op, size_t vsize, uint32_t k, int64_t t)
{
    char *p = c->out + c->out_len;
    int n;
    if (op == OP_GET) {
        n = sprintf(p, meta ? "mg " MCLOAD_KEY_FMT " v\r\n" : "get " MCLOAD_KEY_FMT "\r\n", k);
    } else {
        n = meta ? sprintf(p, "ms " MCLOAD_KEY_FMT " %zu\r\n", k, vsize)
                 : sprintf(p, "set " MCLOAD_KEY_FMT " 0 0 %zu\r\n", k, vsize);
        memcpy(p + n, c->value, vsize);
        n += (int)vsize;
        p[n++] = '\r';
        p[n++] = '\n';
    }
    c->out_len += (size_t)n;
    c->fifo[(c->fifo_head + c->fifo_count) % c->fifo_cap] = t;
    c->fifo_count++;
}

/* Send what is queued without blocking. Returns 0, or -1 on a socket error. */
static int flush_out(mc_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* Keep only the unsent bytes, so out never holds more than
                 * the requests in flight (which bounds its size). */
                memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
                c->out_len -= c->out_off;
                c->out_off = 0;
                return 0;
            }
            fprintf(stderr, "mcload: send: %s\n", strerror(errno));
            return -1;
        }
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

/* Length of the complete reply at the start of buf[0..len), 0 if more bytes
 * are needed, -1 if it is malformed. *kind: 0 ok (STORED or a GET hit),
 * 1 miss (END alone), 2 an error reply from the server. */
static long reply_length(const char *buf, size_t len, size_t vsize, int *kind)
{
    const char *eol = memchr(buf, '\n', len);
    if (!eol)
        return len > 512 ? -1 : 0;
    size_t line = (size_t)(eol - buf) + 1;
    if (line == 4 && !memcmp(buf, "HD\r\n", 4)) { /* meta: stored */
        *kind = 0;
        return 4;
    }
    if (line == 4 && !memcmp(buf, "EN\r\n", 4)) { /* meta: miss */
        *kind = 1;
        return 4;
    }
    if (line > 3 && !memcmp(buf, "VA ", 3)) { /* meta: VA <bytes> <flags>*\r\n<data>\r\n */
        unsigned long long bytes = strtoull(buf + 3, NULL, 10);
        if (bytes > MCLOAD_MAX_VALUE)
            return -1;
        size_t total = line + (size_t)bytes + 2;
        if (len < total)
            return 0;
        if (memcmp(buf + line + bytes, "\r\n", 2))
            return -1;
        *kind = bytes == vsize ? 0 : 2;
        return (long)total;
    }
    if (line == 8 && !memcmp(buf, "STORED\r\n", 8)) {
        *kind = 0;
        return 8;
    }
    if (line == 5 && !memcmp(buf, "END\r\n", 5)) {
        *kind = 1;
        return 5;
    }
    if (line > 6 && !memcmp(buf, "VALUE ", 6)) {
        /* VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n */
        const char *sp = eol;
        while (sp > buf && sp[-1] != ' ')
            sp--;
        unsigned long long bytes = strtoull(sp, NULL, 10);
        if (bytes > MCLOAD_MAX_VALUE)
            return -1;
        size_t total = line + (size_t)bytes + 2 + 5;
        if (len < total)
            return 0;
        if (memcmp(buf + line + bytes, "\r\nEND\r\n", 7))
            return -1;
        *kind = bytes == vsize ? 0 : 2;
        return (long)total;
    }
    *kind = 2; /* ERROR, CLIENT_ERROR ..., SERVER_ERROR ..., NOT_STORED, ... */
    if (line > 256)
        return -1;
    return (long)line;
}

typedef enum { KEYS_RANDOM, KEYS_SEQUENTIAL } key_mode;

/* Run until `limit` replies have been taken in (0 = no limit) or the clock
 * passes end_ns (0 = no deadline), keeping depth requests in flight, then
 * wait for the ones still outstanding. Replies completing at or after
 * record_from_ns (and before end_ns) are counted in st and timed. Returns
 * 0, or -1 on a lost connection or a malformed reply. */
static int run_phase(mc_conn *c, const mc_config *cfg, mc_op op, uint32_t depth,
                     key_mode km, uint64_t limit, int64_t record_from_ns, int64_t end_ns,
                     mc_stats *st)
{
    uint64_t issued = 0, done = 0;
    uint32_t next_seq = 0;
    int64_t now = now_ns();
    int stopping = 0;
    int64_t drain_until = 0;
    for (;;) {
        if (!stopping && (g_stop || (end_ns && now >= end_ns) || (limit && issued >= limit))) {
            stopping = 1;
            drain_until = now + (int64_t)MCLOAD_DRAIN_MS * 1000000;
        }
        if (stopping && c->fifo_count == 0)
            return 0;
        if (stopping && now >= drain_until) {
            fprintf(stderr, "mcload: %u replies still missing after %d ms\n", c->fifo_count,
                    MCLOAD_DRAIN_MS);
            return -1;
        }
        while (!stopping && c->fifo_count < depth && (!limit || issued < limit)) {
            uint32_t k = km == KEYS_SEQUENTIAL
                             ? next_seq++
                             : (uint32_t)(splitmix64(&c->rng) % cfg->keyspace);
            queue_request(c, cfg->meta, op, cfg->vsize, k, now);
            issued++;
        }
        if (flush_out(c))
            return -1;
        struct pollfd pf = {c->fd, POLLIN | (c->out_len ? POLLOUT : 0), 0};
        int pr = poll(&pf, 1, 100);
        if (pr < 0 && errno != EINTR) {
            fprintf(stderr, "mcload: poll: %s\n", strerror(errno));
            return -1;
        }
        if (pr <= 0 || !(pf.revents & (POLLIN | POLLHUP | POLLERR))) {
            now = now_ns();
            continue;
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            now = now_ns();
            continue;
        }
        if (r <= 0) {
            fprintf(stderr, "mcload: connection lost: %s\n", r ? strerror(errno) : "closed by server");
            return -1;
        }
        c->in_len += (size_t)r;
        now = now_ns();
        size_t off = 0;
        for (;;) {
            int kind = 0;
            long n = reply_length(c->in + off, c->in_len - off, cfg->vsize, &kind);
            if (n < 0) {
                fprintf(stderr, "mcload: malformed reply: '%.40s'\n", c->in + off);
                return -1;
            }
            if (n == 0)
                break;
            if (c->fifo_count == 0) {
                fprintf(stderr, "mcload: reply without a request\n");
                return -1;
            }
            int64_t t0 = c->fifo[c->fifo_head];
            c->fifo_head = (c->fifo_head + 1) % c->fifo_cap;
            c->fifo_count--;
            off += (size_t)n;
            done++;
            if (kind == 2 && op == OP_SET && km == KEYS_SEQUENTIAL) {
                fprintf(stderr, "mcload: preload SET failed: '%.40s'\n", c->in + off - n);
                return -1;
            }
            if (st && now >= record_from_ns && (!end_ns || now < end_ns)) {
                st->ops++;
                if (kind == 0)
                    st->ok++;
                else if (kind == 1)
                    st->misses++;
                else
                    st->errors++;
                bench_hist_record(&st->hist, now - t0);
            }
        }
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
        if (c->in_len == c->in_cap) {
            fprintf(stderr, "mcload: reply larger than the input buffer\n");
            return -1;
        }
    }
}

int main(int argc, char **argv)
{
    mc_config cfg;
    int rc = parse_args(argc, argv, &cfg);
    if (rc)
        return rc;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    uint32_t preload_depth = cfg.depth > 64 ? cfg.depth : 64;
    mc_conn c = {.fd = -1, .rng = cfg.seed ^ 0xD1B54A32D192ED03ull};
    c.fifo_cap = preload_depth;
    c.out_cap = (size_t)preload_depth * (MCLOAD_REQ_OVERHEAD + cfg.vsize);
    c.in_cap = 65536 + 2 * (MCLOAD_REQ_OVERHEAD + cfg.vsize);
    c.out = malloc(c.out_cap);
    c.in = malloc(c.in_cap);
    c.fifo = malloc(sizeof *c.fifo * c.fifo_cap);
    c.value = malloc(cfg.vsize);
    mc_stats st = {0};
    if (!c.out || !c.in || !c.fifo || !c.value ||
        bench_hist_init(&st.hist, 1, 60LL * 1000 * 1000 * 1000, 2)) {
        fprintf(stderr, "mcload: out of memory\n");
        rc = 1;
        goto out;
    }
    uint64_t vr = cfg.seed;
    for (size_t i = 0; i < cfg.vsize; i++)
        c.value[i] = (char)('!' + splitmix64(&vr) % 94); /* printable, no space */

    c.fd = mc_connect(cfg.host, cfg.port);
    if (c.fd < 0) {
        rc = 1;
        goto out;
    }
    if (cfg.preload) {
        if (run_phase(&c, &cfg, OP_SET, preload_depth, KEYS_SEQUENTIAL, cfg.keyspace, 0, 0,
                      NULL))
            rc = 1;
        else if (!cfg.quiet)
            fprintf(stderr, "mcload: preloaded %u keys\n", cfg.keyspace);
    }
    int64_t t0 = now_ns();
    int64_t tm = t0 + (int64_t)(cfg.warmup * 1e9);
    int64_t te = cfg.count ? 0 : tm + (int64_t)(cfg.seconds * 1e9);
    uint64_t limit = 0;
    if (!rc && cfg.count && cfg.warmup > 0) {
        if (run_phase(&c, &cfg, cfg.op, cfg.depth, KEYS_RANDOM, 0, 0, tm, NULL))
            rc = 1;
    }
    if (cfg.count)
        limit = cfg.count;
    int64_t tstart = now_ns();
    if (!rc && run_phase(&c, &cfg, cfg.op, cfg.depth, KEYS_RANDOM, limit,
                         cfg.count ? 0 : tm, te, &st))
        rc = 1;
    int64_t tend = cfg.count ? now_ns() : te;
    if (!cfg.count)
        tstart = tm;
    if (g_stop && !cfg.count) /* interrupted: the run ended now, not at te */
        tend = now_ns() < te ? now_ns() : te;
    double secs = (double)(tend - tstart) / 1e9;
    double ops_s = secs > 0 ? (double)st.ops / secs : 0;
    const bench_hist *h = &st.hist;
    double p50 = (double)bench_hist_percentile(h, 50) / 1e3;
    double p90 = (double)bench_hist_percentile(h, 90) / 1e3;
    double p99 = (double)bench_hist_percentile(h, 99) / 1e3;
    double p999 = (double)bench_hist_percentile(h, 99.9) / 1e3;
    double lmin = st.ops ? (double)atomic_load((_Atomic int64_t *)&h->min) / 1e3 : 0;
    double lmax = (double)atomic_load((_Atomic int64_t *)&h->max) / 1e3;
    double mean = bench_hist_mean(h) / 1e3;
    const char *opname = cfg.op == OP_GET ? "get" : "set";
    if (cfg.json) {
        printf("{\"tool\":\"mcload\",\"protocol\":\"%s\",\"connections\":1,\"depth\":%u,"
               "\"op\":\"%s\",\"keyspace\":%u,\"value_size\":%zu,\"preload\":%s,"
               "\"ops\":%llu,\"ok\":%llu,\"misses\":%llu,\"errors\":%llu,"
               "\"duration_s\":%.6f,\"ops_per_sec\":%.1f,"
               "\"latency_us\":{\"min\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
               "\"p99_9\":%.1f,\"max\":%.1f,\"mean\":%.1f},\"failed\":%s}\n",
               cfg.meta ? "meta" : "text", cfg.depth, opname, cfg.keyspace, cfg.vsize, cfg.preload ? "true" : "false",
               (unsigned long long)st.ops, (unsigned long long)st.ok,
               (unsigned long long)st.misses, (unsigned long long)st.errors, secs, ops_s, lmin,
               p50, p90, p99, p999, lmax, mean, rc ? "true" : "false");
    } else {
        printf("== mcload summary ==\nserver: %s:%s (memcached %s protocol), 1 connection, "
               "depth %u\nworkload: %s, %zu-byte values, keyspace %u%s\n"
               "ops: %llu (ok %llu, misses %llu, errors %llu) in %.3f s\nops/s: %.0f\n"
               "latency us: min %.1f p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f mean %.1f\n",
               cfg.host, cfg.port, cfg.meta ? "meta" : "text", cfg.depth, opname, cfg.vsize, cfg.keyspace,
               cfg.preload ? ", preloaded" : "", (unsigned long long)st.ops,
               (unsigned long long)st.ok, (unsigned long long)st.misses,
               (unsigned long long)st.errors, secs, ops_s, lmin, p50, p90, p99, p999, lmax,
               mean);
    }
out:
    if (c.fd >= 0)
        close(c.fd);
    bench_hist_deinit(&st.hist);
    free(c.out);
    free(c.in);
    free(c.fifo);
    free(c.value);
    return rc;
}
