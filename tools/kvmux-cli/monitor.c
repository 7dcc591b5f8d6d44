/* kvmux-cli --stat and --latency (see monitor.h).
 *
 * Design: both modes are loops over the blocking client API with the
 * ctx's request timeout, so a stalled server shows as an error, not a
 * hang; both stop after a line count (-r N) so scripts and tests can use
 * them. --stat reads the same STATS counters an operator would
 * (docs/OPERATIONS.md): keys, used_memory, connections_current and
 * requests_total, whose difference over the interval gives ops/s (the
 * STATS request itself counts as one). --latency keeps running min, max
 * and sum over every sample since the start, as redis-cli does, with
 * microsecond resolution.
 *
 * What it is not: no histogram (kvmux-bench and the server's /metrics
 * have those), no --latency-history windows. */
#include "monitor.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HEADER_EVERY 20
#define LATENCY_SAMPLE_MS 10

int64_t cli_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void cli_sleep_ms(int64_t ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Report a failed call for mode ("--stat") and map it to an exit code;
 * a fatal error also closes the client. */
static int watch_error(cli_ctx *ctx, const char *mode, int rc) {
    fprintf(stderr, "kvmux-cli: %s: %s\n", mode, kvmux_strerror(rc));
    int fatal = rc <= KVMUX_E_FATAL || kvmux_is_fatal(rc);
    if (fatal) {
        kvmux_close(ctx->client);
        ctx->client = NULL;
    }
    return fatal ? CLI_EXIT_CONN : CLI_EXIT_REQUEST;
}

uint64_t cli_stat_value(const kvmux_value *v, const char *name) {
    size_t nl = strlen(name);
    const char *p = (const char *)v->data, *end = p + v->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        if ((size_t)(eol - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == ':') {
            uint64_t n = 0;
            for (const char *q = p + nl + 1; q < eol && *q >= '0' && *q <= '9'; q++)
                n = n * 10 + (uint64_t)(*q - '0');
            return n;
        }
        p = eol + 1;
    }
    return 0;
}

/* bytes as "123B", "45.67K", "8.90M", "1.23G" (redis-cli --stat's form). */
static void format_bytes(uint64_t b, char *buf, size_t cap) {
    if (b < 1024) snprintf(buf, cap, "%" PRIu64 "B", b);
    else if (b < 1024 * 1024) snprintf(buf, cap, "%.2fK", (double)b / 1024);
    else if (b < 1024ull * 1024 * 1024) snprintf(buf, cap, "%.2fM", (double)b / (1024 * 1024));
    else snprintf(buf, cap, "%.2fG", (double)b / (1024.0 * 1024 * 1024));
}

/* One STATS sample: the four counters --stat shows, and when. */
typedef struct stat_sample {
    uint64_t keys, memory, clients, requests;
    int64_t at_ns;
} stat_sample;

static int stat_read(cli_ctx *ctx, stat_sample *s) {
    kvmux_value *v = NULL;
    int rc = kvmux_stats(ctx->client, NULL, &v, ctx->timeout_ms);
    if (rc != 0) return rc;
    s->at_ns = cli_now_ns();
    s->keys = cli_stat_value(v, "keys");
    s->memory = cli_stat_value(v, "used_memory");
    s->clients = cli_stat_value(v, "connections_current");
    s->requests = cli_stat_value(v, "requests_total");
    kvmux_value_free(v);
    return 0;
}

int cli_stat(cli_ctx *ctx, const cli_watch *w) {
    int rc = cli_connect(ctx);
    if (rc != CLI_EXIT_OK) return rc;
    stat_sample prev, cur;
    if ((rc = stat_read(ctx, &prev)) != 0) return watch_error(ctx, "--stat", rc);
    for (long line = 0; w->lines < 0 || line < w->lines; line++) {
        cli_sleep_ms(w->interval_ms);
        if ((rc = stat_read(ctx, &cur)) != 0) return watch_error(ctx, "--stat", rc);
        if (line % HEADER_EVERY == 0)
            printf("%-12s %-10s %-8s %-12s %s\n", "keys", "mem", "clients", "ops/s",
                   "requests");
        double secs = (double)(cur.at_ns - prev.at_ns) / 1e9;
        double ops = secs > 0 ? (double)(cur.requests - prev.requests) / secs : 0;
        char mem[32];
        format_bytes(cur.memory, mem, sizeof mem);
        printf("%-12" PRIu64 " %-10s %-8" PRIu64 " %-12.0f %" PRIu64 "\n", cur.keys, mem,
               cur.clients, ops, cur.requests);
        fflush(stdout);
        prev = cur;
    }
    return CLI_EXIT_OK;
}

int cli_latency(cli_ctx *ctx, const cli_watch *w) {
    int rc = cli_connect(ctx);
    if (rc != CLI_EXIT_OK) return rc;
    int tty = isatty(STDOUT_FILENO);
    int64_t min_ns = INT64_MAX, max_ns = 0, sum_ns = 0, samples = 0;
    int64_t next_line = cli_now_ns() + w->interval_ms * 1000000;
    for (long line = 0; w->lines < 0 || line < w->lines;) {
        int64_t t0 = cli_now_ns();
        if ((rc = kvmux_ping(ctx->client, ctx->timeout_ms)) != 0)
            return watch_error(ctx, "--latency", rc);
        int64_t t1 = cli_now_ns(), rtt = t1 - t0;
        if (rtt < min_ns) min_ns = rtt;
        if (rtt > max_ns) max_ns = rtt;
        sum_ns += rtt;
        samples++;
        if (t1 >= next_line) {
            printf("%smin: %.3f ms, avg: %.3f ms, max: %.3f ms (%" PRId64 " samples)%s",
                   tty ? "\r\033[K" : "", (double)min_ns / 1e6,
                   (double)sum_ns / (double)samples / 1e6, (double)max_ns / 1e6, samples,
                   tty ? "" : "\n");
            fflush(stdout);
            line++;
            next_line += w->interval_ms * 1000000;
            if (next_line < t1) next_line = t1 + w->interval_ms * 1000000;
            continue; /* the next sample at once: a line is a sample boundary */
        }
        int64_t left_ms = (next_line - cli_now_ns()) / 1000000;
        cli_sleep_ms(left_ms < LATENCY_SAMPLE_MS ? left_ms : LATENCY_SAMPLE_MS);
    }
    if (tty) putchar('\n');
    return CLI_EXIT_OK;
}
