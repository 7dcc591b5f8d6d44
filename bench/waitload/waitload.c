/* waitload: Redis load generator for bench/group.sh: SET, optionally
 * followed by `WAIT N 0`, on C connections with D operations in flight on
 * each (pipelined), so a Redis primary with replicas can be measured in the
 * same shape as `kvmux-bench --mode async --depth D -c C` against a
 * replicated kvmux group.
 *
 * Why a tool of our own: redis-benchmark runs one command per request, so
 * it cannot time "SET then WAIT" as one write acknowledged by replicas
 * (Lua cannot call WAIT either). Here one operation is the pair, written
 * with one send, and its latency runs from the send to the WAIT's reply
 * (or the SET's, without -w). Redis answers a connection's commands in
 * order and WAIT blocks only the connection that sent it, so with D > 1 the
 * pairs queue behind each other's WAIT: that is Redis's semantics, and
 * what a pipelining client gets. Keys "key:%010u" uniform over a key
 * space, fixed-size values, kvmux-bench's histogram (tools/kvmux-bench/
 * hist.c) and its --json field names, so scripts parse both alike.
 *
 * A WAIT that returns fewer replicas than asked counts in `short_acks`
 * (the write was not acknowledged by N replicas within the timeout, here
 * none: `WAIT N 0` waits for ever). An error reply ends the run.
 *
 * Exit status: 0 done; 1 connection failure, error reply or no reply for
 * 10 s; 2 usage. */
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

#define WL_MAX_CONNS 1024u
#define WL_MAX_DEPTH 1024u
#define WL_MAX_VALUE (64u * 1024u)
#define WL_IN_CAP (64u * 1024u)
#define WL_TIMEOUT_MS 10000

typedef struct wl_config {
    const char *host, *port;
    unsigned conns, depth, keyspace, wait_n;
    size_t vsize;
    double secs;
    int json, quiet;
} wl_config;

typedef struct wl_conn {
    int fd;
    char *out;            /* bytes not yet sent */
    size_t out_len, out_off, out_cap;
    char in[WL_IN_CAP];   /* reply bytes not yet parsed */
    size_t in_len;
    int64_t *sent_ns;     /* ring of the operations in flight, oldest first */
    unsigned head, inflight;
    unsigned replies_left; /* of the oldest operation: 1 or 2 */
} wl_conn;

typedef struct wl_stats {
    unsigned long long ops, short_acks;
    bench_hist hist;
} wl_stats;

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

static void usage(FILE *f) {
    fprintf(f,
            "usage: waitload [options]\n"
            "  -h HOST        redis host (default 127.0.0.1)\n"
            "  -p PORT        redis port (default 6379)\n"
            "  -c N           connections (default 1, max %u)\n"
            "  --depth D      operations in flight per connection (default 1, max %u)\n"
            "  -w N           follow each SET with WAIT N 0 (default 0: no WAIT)\n"
            "  -k N           keyspace: keys key:0000000000 .. N-1, uniform (default 10000)\n"
            "  -s N           value size in bytes (default 100, max %u)\n"
            "  -d SECONDS     measure for a duration (default 5)\n"
            "  --json         summary as JSON (kvmux-bench's field names)\n"
            "  -q             no progress on stderr\n"
            "  --help         this text\n",
            WL_MAX_CONNS, WL_MAX_DEPTH, WL_MAX_VALUE);
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-') return -1;
    *out = v;
    return 0;
}

static int parse_args(wl_config *c, int argc, char **argv) {
    static const struct option lo[] = {{"depth", required_argument, 0, 'D'},
                                       {"json", no_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'H'},
                                       {0, 0, 0, 0}};
    int ch;
    unsigned long long v;
    while ((ch = getopt_long(argc, argv, "h:p:c:w:k:s:d:q", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': c->host = optarg; break;
        case 'p': c->port = optarg; break;
        case 'c':
            if (parse_uint(optarg, WL_MAX_CONNS, &v) || !v) goto bad;
            c->conns = (unsigned)v;
            break;
        case 'D':
            if (parse_uint(optarg, WL_MAX_DEPTH, &v) || !v) goto bad;
            c->depth = (unsigned)v;
            break;
        case 'w':
            if (parse_uint(optarg, 64, &v)) goto bad;
            c->wait_n = (unsigned)v;
            break;
        case 'k':
            if (parse_uint(optarg, 100000000, &v) || !v) goto bad;
            c->keyspace = (unsigned)v;
            break;
        case 's':
            if (parse_uint(optarg, WL_MAX_VALUE, &v)) goto bad;
            c->vsize = (size_t)v;
            break;
        case 'd': {
            char *end;
            c->secs = strtod(optarg, &end);
            if (*end || !(c->secs > 0 && c->secs <= 3600)) goto bad;
            break;
        }
        case 'j': c->json = 1; break;
        case 'q': c->quiet = 1; break;
        case 'H': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        continue;
    bad:
        fprintf(stderr, "waitload: bad value for -%c: '%s'\n", ch < 128 ? ch : '-', optarg);
        return -1;
    }
    if (optind != argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int connect_to(const wl_config *c) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "waitload: %s:%s: %s\n", c->host, c->port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "waitload: connect %s:%s: %s\n", c->host, c->port, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Append one operation (SET [+ WAIT]) to cn->out. */
static int queue_op(const wl_config *c, wl_conn *cn, const char *value, int64_t t) {
    size_t need = c->vsize + 128;
    if (cn->out_off == cn->out_len) cn->out_off = cn->out_len = 0;
    if (cn->out_len + need > cn->out_cap) {
        memmove(cn->out, cn->out + cn->out_off, cn->out_len - cn->out_off);
        cn->out_len -= cn->out_off;
        cn->out_off = 0;
        if (cn->out_len + need > cn->out_cap) return -1; /* cannot happen: cap = depth * need */
    }
    char key[32];
    int kl = snprintf(key, sizeof key, "key:%010u", rnd() % c->keyspace);
    char *o = cn->out + cn->out_len;
    int n = sprintf(o, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%zu\r\n", kl, key, c->vsize);
    memcpy(o + n, value, c->vsize);
    n += (int)c->vsize;
    memcpy(o + n, "\r\n", 2);
    n += 2;
    if (c->wait_n) {
        char num[8];
        int nl = snprintf(num, sizeof num, "%u", c->wait_n);
        n += sprintf(o + n, "*3\r\n$4\r\nWAIT\r\n$%d\r\n%s\r\n$1\r\n0\r\n", nl, num);
    }
    cn->out_len += (size_t)n;
    cn->sent_ns[(cn->head + cn->inflight) % c->depth] = t;
    if (cn->inflight++ == 0) cn->replies_left = c->wait_n ? 2 : 1;
    return 0;
}

static int flush_out(wl_conn *cn) {
    while (cn->out_off < cn->out_len) {
        ssize_t w = send(cn->fd, cn->out + cn->out_off, cn->out_len - cn->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            fprintf(stderr, "waitload: send: %s\n", strerror(errno));
            return -1;
        }
        cn->out_off += (size_t)w;
    }
    return 0;
}

/* Parse every whole reply line in cn->in (SET: +OK, WAIT: :n). Returns
 * 0, or -1 on an error reply or an unexpected shape. */
static int on_input(const wl_config *c, wl_conn *cn, wl_stats *st, int64_t t) {
    size_t off = 0;
    for (;;) {
        char *nl = memchr(cn->in + off, '\n', cn->in_len - off);
        if (!nl) break;
        char *line = cn->in + off;
        size_t len = (size_t)(nl - line) + 1;
        if (!cn->inflight || len < 3 || (line[0] != '+' && line[0] != ':')) {
            fprintf(stderr, "waitload: unexpected reply: %.*s\n", (int)len, line);
            return -1;
        }
        if (line[0] == ':' && strtoul(line + 1, NULL, 10) < c->wait_n) st->short_acks++;
        off += len;
        if (--cn->replies_left == 0) {
            bench_hist_record(&st->hist, t - cn->sent_ns[cn->head]);
            st->ops++;
            cn->head = (cn->head + 1) % c->depth;
            if (--cn->inflight) cn->replies_left = c->wait_n ? 2 : 1;
        }
    }
    memmove(cn->in, cn->in + off, cn->in_len - off);
    cn->in_len -= off;
    return 0;
}

static int run(const wl_config *c, wl_conn *cs, wl_stats *st, int64_t until_ns,
               const char *value) {
    struct pollfd *pf = calloc(c->conns, sizeof *pf);
    if (!pf) return -1;
    int rc = 0;
    int64_t last_progress = now_ns();
    for (;;) {
        int64_t t = now_ns();
        int more = !g_stop && t < until_ns, busy = 0;
        for (unsigned i = 0; i < c->conns; i++) {
            wl_conn *cn = &cs[i];
            while (more && cn->inflight < c->depth)
                if (queue_op(c, cn, value, t) != 0) { rc = -1; goto out; }
            if (flush_out(cn) != 0) { rc = -1; goto out; }
            pf[i].fd = cn->fd;
            pf[i].events = (short)(POLLIN | (cn->out_off < cn->out_len ? POLLOUT : 0));
            busy |= cn->inflight != 0;
        }
        if (!busy) break;
        if (t - last_progress > (int64_t)WL_TIMEOUT_MS * 1000000) {
            fprintf(stderr, "waitload: no reply for %d ms\n", WL_TIMEOUT_MS);
            rc = -1;
            goto out;
        }
        int n = poll(pf, c->conns, 100);
        if (n < 0 && errno != EINTR) { rc = -1; goto out; }
        if (n <= 0) continue;
        t = now_ns();
        for (unsigned i = 0; i < c->conns; i++) {
            wl_conn *cn = &cs[i];
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = recv(cn->fd, cn->in + cn->in_len, WL_IN_CAP - cn->in_len, MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                fprintf(stderr, "waitload: connection lost: %s\n",
                        r ? strerror(errno) : "closed by server");
                rc = -1;
                goto out;
            }
            cn->in_len += (size_t)r;
            if (on_input(c, cn, st, t) != 0) { rc = -1; goto out; }
            last_progress = t;
        }
    }
out:
    free(pf);
    return rc;
}

static void summary(const wl_config *c, const wl_stats *st, double secs, int failed) {
    const bench_hist *h = &st->hist;
    double p50 = (double)bench_hist_percentile(h, 50) / 1e3;
    double p90 = (double)bench_hist_percentile(h, 90) / 1e3;
    double p99 = (double)bench_hist_percentile(h, 99) / 1e3;
    double p999 = (double)bench_hist_percentile(h, 99.9) / 1e3;
    double mean = bench_hist_mean(h) / 1e3;
    double ops_s = secs > 0 ? (double)st->ops / secs : 0;
    if (c->json)
        printf("{\"tool\":\"waitload\",\"connections\":%u,\"depth\":%u,\"op\":\"set\","
               "\"wait\":%u,\"keyspace\":%u,\"value_size\":%zu,\"ops\":%llu,\"ok\":%llu,"
               "\"short_acks\":%llu,\"errors\":0,\"duration_s\":%.6f,\"ops_per_sec\":%.1f,"
               "\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p99_9\":%.1f,"
               "\"mean\":%.1f},\"failed\":%s}\n",
               c->conns, c->depth, c->wait_n, c->keyspace, c->vsize, st->ops, st->ops,
               st->short_acks, secs, ops_s, p50, p90, p99, p999, mean,
               failed ? "true" : "false");
    else
        printf("== waitload summary ==\nserver: %s:%s, %u connection(s) x %u in flight, "
               "SET%s\nops: %llu (short acks %llu) in %.3f s\nops/s: %.0f\n"
               "latency us: p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f mean %.1f\n",
               c->host, c->port, c->conns, c->depth, c->wait_n ? " + WAIT" : "", st->ops,
               st->short_acks, secs, ops_s, p50, p90, p99, p999, mean);
}

int main(int argc, char **argv) {
    wl_config cfg = {.host = "127.0.0.1", .port = "6379", .conns = 1, .depth = 1,
                     .keyspace = 10000, .vsize = 100, .secs = 5};
    if (parse_args(&cfg, argc, argv) != 0) return 2;
    signal(SIGINT, on_sigint);
    signal(SIGPIPE, SIG_IGN);
    int rc = 1;
    wl_stats st;
    memset(&st, 0, sizeof st);
    if (bench_hist_init(&st.hist, 1000, 60ll * 1000000000, 3) != 0) return 1;
    wl_conn *cs = calloc(cfg.conns, sizeof *cs);
    char *value = malloc(cfg.vsize + 1);
    if (!cs || !value) goto done;
    for (size_t i = 0; i < cfg.vsize; i++) value[i] = (char)('a' + i % 26);
    for (unsigned i = 0; i < cfg.conns; i++) {
        cs[i].fd = -1;
        cs[i].out_cap = (size_t)cfg.depth * (cfg.vsize + 128);
        cs[i].out = malloc(cs[i].out_cap);
        cs[i].sent_ns = calloc(cfg.depth, sizeof *cs[i].sent_ns);
        if (!cs[i].out || !cs[i].sent_ns) goto done;
        if ((cs[i].fd = connect_to(&cfg)) < 0) goto done;
    }
    int64_t t0 = now_ns();
    int r = run(&cfg, cs, &st, t0 + (int64_t)(cfg.secs * 1e9), value);
    double secs = (double)(now_ns() - t0) / 1e9;
    summary(&cfg, &st, secs, r != 0);
    rc = r != 0;
done:
    if (cs)
        for (unsigned i = 0; i < cfg.conns; i++) {
            if (cs[i].fd >= 0) close(cs[i].fd);
            free(cs[i].out);
            free(cs[i].sent_ns);
        }
    free(cs);
    free(value);
    bench_hist_deinit(&st.hist);
    return rc;
}
