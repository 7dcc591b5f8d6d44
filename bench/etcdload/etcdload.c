/* etcdload: etcd load generator for bench/etcd.sh, the etcd counterpart
 * of `kvmux-bench --mode serial -c N` (one request at a time on each of N
 * connections).
 *
 * What it does: N TCP connections, one thread, poll(). Each connection
 * speaks HTTP/1.1 with keep-alive to etcd's v3 JSON gateway (grpc-gateway,
 * served on the client port: POST /v3/kv/put and /v3/kv/range with
 * base64 keys and values) and keeps exactly one request outstanding:
 * HTTP/1.1 pipelining is not something etcd's gateway (Go's net/http)
 * processes in parallel, and the gRPC port would need a gRPC stack in C,
 * so depth 1 per connection is the honest comparison. Keys "key:%010u"
 * uniform over a key space (as kvmux-bench), fixed-size values. Each
 * request's latency (from its send to its whole response parsed) goes
 * into kvmux-bench's log-linear histogram (tools/kvmux-bench/hist.c,
 * compiled in), and the summary prints ops/s and p50/p90/p99/p99.9 with
 * the field names of `kvmux-bench --json`, so scripts parse both alike.
 *
 * Why not etcdctl / `etcdctl check perf` / the benchmark tool: etcdctl
 * starts one process per request; `check perf` prints pass/fail against
 * fixed targets; etcd's `benchmark` tool is not packaged in Debian.
 *
 * Responses: "HTTP/1.1 200" with Content-Length or chunked encoding; any
 * other status, or a body with "error", counts as an error and ends the
 * run (exit 1). A GET whose body has no "kvs" counts as a miss.
 *
 * Not here: TLS, authentication, leases, transactions, watch, several
 * threads (at the connection counts used, one thread is not the bound:
 * etcd's per-request cost is two orders of magnitude above the parsing
 * here).
 *
 * Exit status: 0 done; 1 connection failure, lost connection or an error
 * response; 2 usage. */
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
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EL_MAX_CONNS 1024u
#define EL_MAX_VALUE (64u * 1024u)   /* well under etcd's 1.5 MiB request limit */
#define EL_KEY_FMT "key:%010u"
#define EL_IN_CAP (256u * 1024u)     /* one whole response */
#define EL_TIMEOUT_MS 10000          /* no response for this long: fail */

typedef enum { OP_GET, OP_SET } el_op;

typedef struct el_config {
    const char *host, *port;
    unsigned conns, keyspace;
    el_op op;
    size_t vsize;
    double secs;
    unsigned long long count;
    int preload, json, quiet;
} el_config;

typedef struct el_conn {
    int fd;
    char *out;                /* the request being sent */
    size_t out_len, out_off;
    char *in;                 /* response bytes so far */
    size_t in_len;
    int64_t sent_ns;          /* 0: idle */
} el_conn;

typedef struct el_stats {
    unsigned long long ops, ok, misses, errors;
    bench_hist hist;
} el_stats;

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) { (void)sig; g_stop = 1; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}

static size_t b64(char *dst, const unsigned char *src, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16;
        if (i + 1 < n) v |= (uint32_t)src[i + 1] << 8;
        if (i + 2 < n) v |= src[i + 2];
        dst[o++] = t[(v >> 18) & 63];
        dst[o++] = t[(v >> 12) & 63];
        dst[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        dst[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    dst[o] = 0;
    return o;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: etcdload [options]\n"
            "  -h HOST        etcd client host (default 127.0.0.1)\n"
            "  -p PORT        etcd client port (default 2379)\n"
            "  -c N           connections, one request in flight on each (default 1, max %u)\n"
            "  --op OP        get | set (default get)\n"
            "  -k N           keyspace: keys key:0000000000 .. N-1, uniform (default 10000)\n"
            "  -s N           SET value size in bytes (default 100, max %u)\n"
            "  -d SECONDS     measure for a duration (default 5)\n"
            "  -n N           measure N requests instead of a duration\n"
            "  --preload      PUT every key of the keyspace first (not measured)\n"
            "  --json         summary as JSON (kvmux-bench's field names)\n"
            "  -q             no progress on stderr\n"
            "  --help         this text\n",
            EL_MAX_CONNS, EL_MAX_VALUE);
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-') return -1;
    *out = v;
    return 0;
}

static int parse_args(el_config *c, int argc, char **argv) {
    static const struct option lo[] = {
        {"op", required_argument, 0, 'o'}, {"preload", no_argument, 0, 'P'},
        {"json", no_argument, 0, 'j'},     {"help", no_argument, 0, 'H'},
        {0, 0, 0, 0}};
    int ch;
    unsigned long long v;
    while ((ch = getopt_long(argc, argv, "h:p:c:k:s:d:n:q", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': c->host = optarg; break;
        case 'p': c->port = optarg; break;
        case 'c':
            if (parse_uint(optarg, EL_MAX_CONNS, &v) || !v) goto bad;
            c->conns = (unsigned)v;
            break;
        case 'k':
            if (parse_uint(optarg, 100000000, &v) || !v) goto bad;
            c->keyspace = (unsigned)v;
            break;
        case 's':
            if (parse_uint(optarg, EL_MAX_VALUE, &v)) goto bad;
            c->vsize = (size_t)v;
            break;
        case 'd': {
            char *end;
            c->secs = strtod(optarg, &end);
            if (*end || !(c->secs > 0 && c->secs <= 3600)) goto bad;
            break;
        }
        case 'n':
            if (parse_uint(optarg, 1000000000ull, &v) || !v) goto bad;
            c->count = v;
            break;
        case 'o':
            if (!strcmp(optarg, "get")) c->op = OP_GET;
            else if (!strcmp(optarg, "set")) c->op = OP_SET;
            else goto bad;
            break;
        case 'P': c->preload = 1; break;
        case 'j': c->json = 1; break;
        case 'q': c->quiet = 1; break;
        case 'H': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        continue;
    bad:
        fprintf(stderr, "etcdload: bad value for -%c: '%s'\n", ch < 128 ? ch : '-', optarg);
        return -1;
    }
    if (optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int connect_to(const el_config *c) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc) {
        fprintf(stderr, "etcdload: %s:%s: %s\n", c->host, c->port, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "etcdload: connect %s:%s: %s\n", c->host, c->port, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* The HTTP request for op on key k into conn->out. */
static void build_request(const el_config *c, el_conn *cn, el_op op, unsigned k,
                          const char *value_b64) {
    char key[32], key64[48], body[EL_MAX_VALUE * 2];
    int kl = snprintf(key, sizeof key, EL_KEY_FMT, k);
    b64(key64, (const unsigned char *)key, (size_t)kl);
    int bl = op == OP_SET
                 ? snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"%s\"}", key64,
                            value_b64)
                 : snprintf(body, sizeof body, "{\"key\":\"%s\"}", key64);
    cn->out_len = (size_t)snprintf(cn->out, EL_MAX_VALUE * 2 + 512,
                                   "POST /v3/kv/%s HTTP/1.1\r\nHost: %s:%s\r\n"
                                   "Content-Type: application/json\r\nContent-Length: %d\r\n"
                                   "\r\n%s",
                                   op == OP_SET ? "put" : "range", c->host, c->port, bl, body);
    cn->out_off = 0;
}

/* Length of a whole response at in[0..n) and where its body starts and
 * ends; 0 if incomplete, -1 if malformed. Chunked bodies are decoded in
 * place (only their length matters beyond a substring search). */
static long response_complete(char *in, size_t n, size_t *body, size_t *body_len) {
    char *hdr_end = memmem(in, n, "\r\n\r\n", 4);
    if (!hdr_end) return n > 16384 ? -1 : 0;
    size_t h = (size_t)(hdr_end - in) + 4;
    *body = h;
    long clen = -1;
    int chunked = 0;
    for (char *p = in; p < hdr_end;) {
        char *eol = memmem(p, (size_t)(hdr_end - p) + 2, "\r\n", 2);
        if (!eol) break;
        if (!strncasecmp(p, "Content-Length:", 15)) clen = strtol(p + 15, NULL, 10);
        if (!strncasecmp(p, "Transfer-Encoding:", 18) && memmem(p, (size_t)(eol - p), "chunked", 7))
            chunked = 1;
        p = eol + 2;
    }
    if (!chunked) {
        if (clen < 0) return -1;
        if (n < h + (size_t)clen) return 0;
        *body_len = (size_t)clen;
        return (long)(h + (size_t)clen);
    }
    size_t p = h, total = 0;
    for (;;) {
        char *eol = memmem(in + p, n - p, "\r\n", 2);
        if (!eol) return 0;
        unsigned long sz = strtoul(in + p, NULL, 16);
        size_t data = (size_t)(eol - in) + 2;
        if (n < data + sz + 2) return 0;
        total += sz;
        p = data + sz + 2;
        if (sz == 0) break;
    }
    *body_len = total; /* an upper bound on the body's span: fine for a search */
    return (long)p;
}

/* Handle a whole response on cn; 0, or -1 on an error response. */
static int on_response(el_conn *cn, size_t len, el_stats *st, el_op op, size_t body,
                       size_t body_len, int64_t t) {
    if (len < 12 || memcmp(cn->in, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "etcdload: error response: '%.60s'\n", cn->in);
        st->errors++;
        return -1;
    }
    const char *b = cn->in + body;
    size_t bl = len - body < body_len ? len - body : body_len;
    if (memmem(b, bl, "\"error\"", 7)) {
        fprintf(stderr, "etcdload: error in body: '%.80s'\n", b);
        st->errors++;
        return -1;
    }
    if (op == OP_GET && !memmem(b, bl, "\"kvs\"", 5)) st->misses++;
    else st->ok++;
    st->ops++;
    bench_hist_record(&st->hist, t - cn->sent_ns);
    cn->sent_ns = 0;
    memmove(cn->in, cn->in + len, cn->in_len - len);
    cn->in_len -= len;
    return 0;
}

/* Send as much of cn->out as the socket takes. */
static int flush_out(el_conn *cn) {
    while (cn->out_off < cn->out_len) {
        ssize_t w = send(cn->fd, cn->out + cn->out_off, cn->out_len - cn->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            fprintf(stderr, "etcdload: send: %s\n", strerror(errno));
            return -1;
        }
        cn->out_off += (size_t)w;
    }
    return 0;
}

/* Drive the connections until `until_ns` (or `count` requests were issued,
 * if non-zero; keys: sequential over the keyspace when seq, else random).
 * Returns 0 or -1. */
static int run(const el_config *c, el_conn *cs, el_stats *st, el_op op, int64_t until_ns,
               unsigned long long count, int seq, const char *value_b64) {
    struct pollfd *pf = calloc(c->conns, sizeof *pf);
    if (!pf) return -1;
    unsigned long long issued = 0;
    int rc = 0;
    unsigned next_key = 0;
    int64_t last_progress = now_ns();
    for (;;) {
        int64_t t = now_ns();
        int more = !g_stop && (count ? issued < count : t < until_ns);
        int busy = 0;
        for (unsigned i = 0; i < c->conns; i++) {
            el_conn *cn = &cs[i];
            if (!cn->sent_ns && more && (!count || issued < count)) {
                unsigned k = seq ? next_key++ : rnd() % c->keyspace;
                build_request(c, cn, op, k, value_b64);
                cn->sent_ns = t;
                issued++;
                if (flush_out(cn) != 0) { rc = -1; goto out; }
            }
            pf[i].fd = cn->fd;
            pf[i].events = (short)(POLLIN | (cn->out_off < cn->out_len ? POLLOUT : 0));
            pf[i].revents = 0;
            busy |= cn->sent_ns != 0;
        }
        if (!busy) break;
        if (t - last_progress > (int64_t)EL_TIMEOUT_MS * 1000000) {
            fprintf(stderr, "etcdload: no response for %d ms\n", EL_TIMEOUT_MS);
            rc = -1;
            goto out;
        }
        int n = poll(pf, c->conns, 100);
        if (n < 0 && errno != EINTR) { rc = -1; goto out; }
        if (n <= 0) continue;
        t = now_ns();
        for (unsigned i = 0; i < c->conns; i++) {
            el_conn *cn = &cs[i];
            if ((pf[i].revents & POLLOUT) && flush_out(cn) != 0) { rc = -1; goto out; }
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = recv(cn->fd, cn->in + cn->in_len, EL_IN_CAP - cn->in_len, MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                fprintf(stderr, "etcdload: connection lost: %s\n",
                        r ? strerror(errno) : "closed by server");
                rc = -1;
                goto out;
            }
            cn->in_len += (size_t)r;
            size_t body = 0, body_len = 0;
            long len = response_complete(cn->in, cn->in_len, &body, &body_len);
            if (len < 0 || (len == 0 && cn->in_len == EL_IN_CAP)) {
                fprintf(stderr, "etcdload: malformed or oversized response\n");
                rc = -1;
                goto out;
            }
            if (len > 0) {
                if (!cn->sent_ns) {
                    fprintf(stderr, "etcdload: response without a request\n");
                    rc = -1;
                    goto out;
                }
                if (on_response(cn, (size_t)len, st, op, body, body_len, t) != 0) {
                    rc = -1;
                    goto out;
                }
                last_progress = t;
            }
        }
    }
out:
    free(pf);
    return rc;
}

static void summary(const el_config *c, const el_stats *st, double secs, int failed) {
    const bench_hist *h = &st->hist;
    double p50 = (double)bench_hist_percentile(h, 50) / 1e3;
    double p90 = (double)bench_hist_percentile(h, 90) / 1e3;
    double p99 = (double)bench_hist_percentile(h, 99) / 1e3;
    double p999 = (double)bench_hist_percentile(h, 99.9) / 1e3;
    double mean = bench_hist_mean(h) / 1e3;
    double ops_s = secs > 0 ? (double)st->ops / secs : 0;
    const char *opname = c->op == OP_GET ? "get" : "set";
    if (c->json) {
        printf("{\"tool\":\"etcdload\",\"connections\":%u,\"depth\":1,\"op\":\"%s\","
               "\"keyspace\":%u,\"value_size\":%zu,\"preload\":%s,\"ops\":%llu,\"ok\":%llu,"
               "\"misses\":%llu,\"errors\":%llu,\"duration_s\":%.6f,\"ops_per_sec\":%.1f,"
               "\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p99_9\":%.1f,"
               "\"mean\":%.1f},\"failed\":%s}\n",
               c->conns, opname, c->keyspace, c->vsize, c->preload ? "true" : "false",
               st->ops, st->ok, st->misses, st->errors, secs, ops_s, p50, p90, p99, p999,
               mean, failed ? "true" : "false");
    } else {
        printf("== etcdload summary ==\nserver: %s:%s (etcd v3 JSON gateway, HTTP/1.1), "
               "%u connection(s), 1 request in flight each\n"
               "workload: %s, %zu-byte values, keyspace %u%s\n"
               "ops: %llu (ok %llu, misses %llu, errors %llu) in %.3f s\nops/s: %.0f\n"
               "latency us: p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f mean %.1f\n",
               c->host, c->port, c->conns, opname, c->vsize, c->keyspace,
               c->preload ? ", preloaded" : "", st->ops, st->ok, st->misses, st->errors, secs,
               ops_s, p50, p90, p99, p999, mean);
    }
}

int main(int argc, char **argv) {
    el_config cfg = {.host = "127.0.0.1", .port = "2379", .conns = 1, .keyspace = 10000,
                     .op = OP_GET, .vsize = 100, .secs = 5};
    if (parse_args(&cfg, argc, argv) != 0) return 2;
    signal(SIGINT, on_sigint);
    signal(SIGPIPE, SIG_IGN);
    int rc = 1;
    el_stats st;
    memset(&st, 0, sizeof st);
    if (bench_hist_init(&st.hist, 1000, 60ll * 1000000000, 3) != 0) return 1;
    el_conn *cs = calloc(cfg.conns, sizeof *cs);
    unsigned char *raw = malloc(cfg.vsize + 1);
    char *val64 = malloc(cfg.vsize * 4 / 3 + 8);
    if (!cs || !raw || !val64) goto done;
    for (size_t i = 0; i < cfg.vsize; i++) raw[i] = (unsigned char)('a' + i % 26);
    b64(val64, raw, cfg.vsize);
    for (unsigned i = 0; i < cfg.conns; i++) {
        cs[i].fd = -1;
        cs[i].out = malloc(EL_MAX_VALUE * 2 + 512);
        cs[i].in = malloc(EL_IN_CAP);
        if (!cs[i].out || !cs[i].in) goto done;
        if ((cs[i].fd = connect_to(&cfg)) < 0) goto done;
    }
    if (cfg.preload) {
        el_stats pre;
        memset(&pre, 0, sizeof pre);
        if (bench_hist_init(&pre.hist, 1000, 60ll * 1000000000, 3) != 0) goto done;
        int prc = run(&cfg, cs, &pre, OP_SET, INT64_MAX, cfg.keyspace, 1, val64);
        bench_hist_deinit(&pre.hist);
        if (prc != 0) {
            fprintf(stderr, "etcdload: preload failed\n");
            goto done;
        }
        if (!cfg.quiet) fprintf(stderr, "etcdload: preloaded %u keys\n", cfg.keyspace);
    }
    int64_t t0 = now_ns();
    int r = run(&cfg, cs, &st, cfg.op, t0 + (int64_t)(cfg.secs * 1e9), cfg.count, 0, val64);
    double secs = (double)(now_ns() - t0) / 1e9;
    summary(&cfg, &st, secs, r != 0);
    rc = r != 0;
done:
    if (cs)
        for (unsigned i = 0; i < cfg.conns; i++) {
            if (cs[i].fd >= 0) close(cs[i].fd);
            free(cs[i].out);
            free(cs[i].in);
        }
    free(cs);
    free(raw);
    free(val64);
    bench_hist_deinit(&st.hist);
    return rc;
}
