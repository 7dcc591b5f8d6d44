/* Server-side latency histograms per operation, the slow log, and a
 * Prometheus endpoint (--metrics-addr HOST:PORT, GET /metrics).
 *
 * Histograms: each loop owns one set of counters (relaxed atomics written
 * only by its thread, like kvmux_loop_stats), one per operation and fixed
 * bucket; a scrape sums them. A request is timed from its decoded frame
 * to its answer being queued (for a WAIT: to being parked or answered;
 * for a streamed GET: to its first fragment being queued). Fragmented
 * uploads are not timed (their time is the client's upload).
 *
 * Slow log: requests that took at least --slowlog-threshold-us, kept in a
 * ring of --slowlog-max-len entries under one mutex (only slow requests
 * take it). The key is kept as its first 32 bytes, escaped on output.
 *
 * HTTP: a tiny HTTP/1.0 responder on loop 0's epoll set, because one GET
 * of one document needs no library (libmicrohttpd would add a thread pool
 * and a dependency for ~150 lines). Requests are bounded (4 KiB of
 * headers, 5 s to send them and read the answer, 16 connections at
 * once); anything but GET/HEAD is 405, any path but /metrics is 404; the
 * connection closes after each answer (HTTP/1.0). The body is built from
 * the STATS text (stats.c), so every STATS line is a metric without a
 * second list of counters.
 *
 * Not here: the SLOWLOG and CLIENT_LIST operations' framing (introspect.c). */
#include "metrics.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"
#include "monotime.h"
#include "server_internal.h"

#define HTTP_REQ_MAX 4096
#define HTTP_TIMEOUT_MS 5000
#define HTTP_MAX_CONNS 16
#define SLOW_KEY_MAX 32
#define NOPS (KVMUX_OP_MAX + 1)

const uint32_t kvmux__lat_bucket_us[KVMUX_LAT_BUCKETS] = {
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
    100000, 250000, 500000, 1000000};

typedef struct kvmux_metrics_loop {
    _Atomic uint64_t bucket[NOPS][KVMUX_LAT_BUCKETS + 1]; /* not cumulative */
    _Atomic uint64_t sum_ns[NOPS];
} kvmux_metrics_loop;

typedef struct slow_entry {
    uint64_t id;
    uint64_t unix_ms;
    uint64_t duration_us;
    uint8_t op;
    uint8_t klen;                  /* bytes kept (<= SLOW_KEY_MAX) */
    uint16_t key_total;            /* the key's real length (capped) */
    uint8_t key[SLOW_KEY_MAX];
    char client[INET6_ADDRSTRLEN + 8];
} slow_entry;

typedef struct mconn mconn;
struct mconn {
    kvmux_io io;                   /* first member (epoll data.ptr) */
    kvmux_timer timer;
    mconn *prev, *next;
    kvmux_loop *loop;
    char req[HTTP_REQ_MAX];
    size_t rlen;
    char *out;                     /* the answer, once the request is read */
    size_t olen, off;
};

struct kvmux_metrics {
    kvmux_server *srv;
    kvmux_metrics_loop *loops;     /* srv->nloops */
    /* slow log */
    pthread_mutex_t slow_mu;
    _Atomic uint32_t slow_threshold_us;
    slow_entry *slow;              /* ring of slow_cap */
    uint32_t slow_cap, slow_len, slow_head; /* head: next slot to write */
    uint64_t slow_next_id;
    /* HTTP (loop 0 only) */
    kvmux_io listen;
    uint16_t port;
    mconn *conns;
    uint32_t nconns;
};

uint64_t kvmux__metrics_now_ns(void) { return kvmux_clock_ns(); }

/* ---- slow log ---- */

void kvmux__metrics_set_slowlog(kvmux_metrics *m, uint32_t threshold_us, uint32_t max_len) {
    if (!m) return;
    atomic_store(&m->slow_threshold_us, threshold_us);
    pthread_mutex_lock(&m->slow_mu);
    if (max_len != m->slow_cap) {
        /* Keep the newest entries that fit. */
        slow_entry *n = max_len ? calloc(max_len, sizeof *n) : NULL;
        if (max_len && !n) {
            pthread_mutex_unlock(&m->slow_mu);
            kvmux_log_event(KVMUX_LOG_WARN, "slowlog.resize_failed", "len=%u", max_len);
            return;
        }
        uint32_t keep = m->slow_len < max_len ? m->slow_len : max_len;
        for (uint32_t i = 0; i < keep; i++) { /* oldest kept first */
            uint32_t from = (m->slow_head + m->slow_cap - keep + i) % m->slow_cap;
            n[i] = m->slow[from];
        }
        free(m->slow);
        m->slow = n;
        m->slow_cap = max_len;
        m->slow_len = keep;
        m->slow_head = max_len ? keep % max_len : 0;
    }
    pthread_mutex_unlock(&m->slow_mu);
}

static void slow_add(kvmux_metrics *m, kvmux_conn *c, uint8_t op, const uint8_t *key,
                     size_t klen, uint64_t dur_us) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    pthread_mutex_lock(&m->slow_mu);
    if (m->slow_cap) {
        slow_entry *e = &m->slow[m->slow_head];
        e->id = ++m->slow_next_id;
        e->unix_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
        e->duration_us = dur_us;
        e->op = op;
        e->klen = (uint8_t)(klen < SLOW_KEY_MAX ? klen : SLOW_KEY_MAX);
        e->key_total = (uint16_t)(klen < UINT16_MAX ? klen : UINT16_MAX);
        if (e->klen) memcpy(e->key, key, e->klen);
        snprintf(e->client, sizeof e->client, "%s", c->peer);
        m->slow_head = (m->slow_head + 1) % m->slow_cap;
        if (m->slow_len < m->slow_cap) m->slow_len++;
    }
    pthread_mutex_unlock(&m->slow_mu);
}

size_t kvmux__slowlog_format(kvmux_metrics *m, uint32_t max, char *buf, size_t cap) {
    size_t len = 0;
    if (!m || cap == 0) return 0;
    pthread_mutex_lock(&m->slow_mu);
    uint32_t n = m->slow_len;
    if (max && max < n) n = max;
    for (uint32_t i = 0; i < n; i++) {
        const slow_entry *e = &m->slow[(m->slow_head + m->slow_cap - 1 - i) % m->slow_cap];
        char qk[SLOW_KEY_MAX * 4 + 8], qc[sizeof e->client + 8];
        kvmux_log_quote_n(qk, sizeof qk, e->key, e->klen);
        int w = snprintf(buf + len, cap - len,
                         "id=%llu time_ms=%llu duration_us=%llu op=%s client=%s key=%s%s\n",
                         (unsigned long long)e->id, (unsigned long long)e->unix_ms,
                         (unsigned long long)e->duration_us, kvmux_opcode_name(e->op),
                         kvmux_log_quote(qc, sizeof qc, e->client), qk,
                         e->key_total > e->klen ? " key_truncated=1" : "");
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
    }
    pthread_mutex_unlock(&m->slow_mu);
    return len;
}

uint32_t kvmux__slowlog_reset(kvmux_metrics *m) {
    if (!m) return 0;
    pthread_mutex_lock(&m->slow_mu);
    uint32_t n = m->slow_len;
    m->slow_len = m->slow_head = 0;
    pthread_mutex_unlock(&m->slow_mu);
    return n;
}

uint32_t kvmux__slowlog_cap(kvmux_metrics *m) {
    if (!m) return 0;
    pthread_mutex_lock(&m->slow_mu);
    uint32_t n = m->slow_cap;
    pthread_mutex_unlock(&m->slow_mu);
    return n;
}

uint32_t kvmux__slowlog_len(kvmux_metrics *m) {
    if (!m) return 0;
    pthread_mutex_lock(&m->slow_mu);
    uint32_t n = m->slow_len;
    pthread_mutex_unlock(&m->slow_mu);
    return n;
}

void kvmux__metrics_observe(kvmux_conn *c, uint8_t op, const uint8_t *key, size_t klen,
                            uint64_t start_ns) {
    kvmux_loop *l = c->loop;
    kvmux_metrics *m = l->srv->metrics;
    if (!m || !l->metrics) return;
    uint64_t now = kvmux_clock_ns();
    uint64_t ns = now > start_ns ? now - start_ns : 0;
    uint64_t us = ns / 1000;
    unsigned b = 0;
    while (b < KVMUX_LAT_BUCKETS && us > kvmux__lat_bucket_us[b]) b++;
    if (op > KVMUX_OP_MAX) op = 0;
    atomic_fetch_add_explicit(&l->metrics->bucket[op][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->metrics->sum_ns[op], ns, memory_order_relaxed);
    if (us >= atomic_load_explicit(&m->slow_threshold_us, memory_order_relaxed))
        slow_add(m, c, op, key, klen, us);
}

/* ---- the exposition ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* STATS lines that are levels rather than running counts, and their help. */
static const struct {
    const char *name;
    const char *help;
} gauges[] = {
    {"protocol_max", "Highest protocol version offered"},
    {"uptime_seconds", "Seconds since the server started"},
    {"uptime_ms", "Milliseconds since the server started"},
    {"loops", "Event-loop threads"},
    {"connections_current", "Open client connections"},
    {"connections_max", "Connection limit (--max-connections)"},
    {"in_flight", "Requests read and not answered yet"},
    {"slowlog_len", "Entries in the slow log now"},
    {"slowlog_max_len", "Slow log capacity (--slowlog-max-len)"},
    {"auth_required", "1 if clients must authenticate"},
    {"keys", "Keys in memory"},
    {"key_bytes", "Bytes of keys and values in memory"},
    {"used_memory", "Accounted memory in bytes"},
    {"maxmemory", "Memory limit in bytes (0 = none)"},
    {"aof_enabled", "1 if the append-only log is on"},
    {"aof_failed", "1 if the append-only log failed and writes are refused"},
    {"aof_rewriting", "1 while the append-only log is being compacted"},
    {"aof_size", "Bytes in the append-only log"},
    {"aof_pending", "Bytes appended to the log and not yet durable"},
    {"replica_id", "This replica's id (--replica-id)"},
    {"replica_term", "Current Raft term"},
    {"replica_leader", "Id of the leader this replica knows (0 = none)"},
    {"replica_commit_index", "Highest Raft log index known committed"},
    {"replica_applied_index", "Highest Raft log index applied to the store"},
    {"replica_last_failover_ms", "Duration of the last leaderless stretch"},
    {"replica_members", "Members of the Raft configuration this replica knows"},
    {"cluster_group", "This group's id in the cluster's slot map (--cluster-group)"},
    {"cluster_epoch", "Epoch of the applied slot map (0 = none)"},
    {"cluster_slots_owned", "Slots the applied map gives this group"},
    {"cluster_map_group", "1 on the cluster's map group (--cluster-map-group)"},
    {"cluster_mgen", "Generation of the map group's migration table (+1 per change)"},
    {"cluster_migrations_open", "OPEN records in the map group's migration table"},
    {"cluster_migrations_committed", "COMMITTED records kept in the migration table"},
    {"cluster_migrations_aborted", "ABORTED records kept in the migration table"},
    {"migrate_out_id", "Outgoing slot migration this replica applied (0 = none)"},
    {"migrate_dirty_keys", "Keys in the outgoing migration's dirty set"},
    {"migrate_dirty_bytes", "Key bytes in the outgoing migration's dirty set"},
    {"cluster_map_watching", "1 while this leader watches the map group"},
    {"cluster_map_epoch", "Newest map epoch the map group answered"},
    {"cluster_map_lag_epochs", "Epochs this group is behind the map group"},
    {"cluster_map_lag_ms", "How long this group has been behind the map group"},
    {"cluster_map_contact_age_ms", "Time since the map group last answered"},
    {"migrate_in_id", "The migration importing into this group (0 = none)"},
};

static const char *gauge_help(const char *name) {
    /* replica_lag_<id>: one line per follower, on the leader only. */
    if (strncmp(name, "replica_lag_", 12) == 0)
        return "Entries this follower lacks behind the commit index (leader only)";
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
        if (strcmp(gauges[i].name, name) == 0) return gauges[i].help;
    return NULL;
}

/* One STATS line "name:value" as a metric: kvmux_NAME, counters with
 * _total. A "_ms" line becomes "_seconds" (Prometheus wants base units),
 * unless STATS also has that name (uptime_ms: uptime_seconds is there;
 * stats is the whole STATS text, to look that up). */
static void stat_metric(sbuf *b, const char *stats, const char *sname, const char *value) {
    char name[96];
    size_t sl = strlen(sname);
    if (sl > 3 && strcmp(sname + sl - 3, "_ms") == 0) {
        char look[100];
        snprintf(look, sizeof look, "\n%.*s_seconds:", (int)(sl - 3), sname);
        if (strstr(stats, look)) return;
        snprintf(name, sizeof name, "%.*s_seconds", (int)(sl - 3), sname);
        unsigned long long ms = strtoull(value, NULL, 10);
        sb_printf(b, "# HELP kvmux_%s STATS %s in seconds\n# TYPE kvmux_%s gauge\n"
                     "kvmux_%s %llu.%03llu\n", name, sname, name, name, ms / 1000, ms % 1000);
        return;
    }
    snprintf(name, sizeof name, "%s", sname);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (errno || end == value || *end) { /* text (version): an info metric */
        char q[128];
        size_t o = 0;
        for (const char *p = value; *p && o + 3 < sizeof q; p++) {
            if (*p == '"' || *p == '\\') q[o++] = '\\';
            q[o++] = *p;
        }
        q[o] = 0;
        sb_printf(b, "# HELP kvmux_%s_info STATS %s, as a label\n# TYPE kvmux_%s_info gauge\n"
                     "kvmux_%s_info{%s=\"%s\"} 1\n", name, name, name, name, name, q);
        return;
    }
    const char *help = gauge_help(sname);
    if (help) {
        sb_printf(b, "# HELP kvmux_%s %s (STATS %s)\n# TYPE kvmux_%s gauge\nkvmux_%s %llu\n",
                  name, help, sname, name, name, v);
        return;
    }
    size_t n = strlen(name);
    const char *sfx = n > 6 && strcmp(name + n - 6, "_total") == 0 ? "" : "_total";
    sb_printf(b, "# HELP kvmux_%s%s Count since start (STATS %s, docs/OPERATIONS.md)\n"
                 "# TYPE kvmux_%s%s counter\nkvmux_%s%s %llu\n",
              name, sfx, sname, name, sfx, name, sfx, v);
}

static void histograms(sbuf *b, kvmux_server *s) {
    sb_printf(b, "# HELP kvmux_request_duration_seconds Server-side request latency, from "
                 "the decoded request to its answer queued, by operation\n"
                 "# TYPE kvmux_request_duration_seconds histogram\n");
    for (int op = 1; op <= KVMUX_OP_MAX; op++) {
        uint64_t cum = 0, sum_ns = 0, cnt[KVMUX_LAT_BUCKETS + 1];
        for (int k = 0; k <= KVMUX_LAT_BUCKETS; k++) cnt[k] = 0;
        for (uint32_t i = 0; i < s->nloops; i++) {
            kvmux_metrics_loop *ml = &s->metrics->loops[i];
            for (int k = 0; k <= KVMUX_LAT_BUCKETS; k++)
                cnt[k] += atomic_load_explicit(&ml->bucket[op][k], memory_order_relaxed);
            sum_ns += atomic_load_explicit(&ml->sum_ns[op], memory_order_relaxed);
        }
        char opn[32];
        snprintf(opn, sizeof opn, "%s", kvmux_opcode_name(op));
        for (char *p = opn; *p; p++) *p = (char)tolower((unsigned char)*p);
        for (int k = 0; k < KVMUX_LAT_BUCKETS; k++) {
            cum += cnt[k];
            sb_printf(b, "kvmux_request_duration_seconds_bucket{op=\"%s\",le=\"%g\"} %llu\n",
                      opn, kvmux__lat_bucket_us[k] / 1e6, (unsigned long long)cum);
        }
        cum += cnt[KVMUX_LAT_BUCKETS];
        sb_printf(b, "kvmux_request_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} %llu\n"
                     "kvmux_request_duration_seconds_sum{op=\"%s\"} %.9f\n"
                     "kvmux_request_duration_seconds_count{op=\"%s\"} %llu\n",
                  opn, (unsigned long long)cum, opn, (double)sum_ns / 1e9, opn,
                  (unsigned long long)cum);
    }
}

int kvmux__metrics_format(kvmux_server *s, char **out, size_t *len) {
    char *stats = malloc(64u * 1024);
    sbuf b = {.p = malloc(32u * 1024), .cap = 32u * 1024};
    if (!stats || !b.p) {
        free(stats);
        free(b.p);
        return -1;
    }
    stats[0] = '\n'; /* so every line, the first too, follows a '\n' */
    size_t n = kvmux__stats_format(s, NULL, 0, stats + 1, 64u * 1024 - 2);
    stats[n + 1] = 0;
    char *copy = strdup(stats);
    if (!copy) {
        free(stats);
        free(b.p);
        return -1;
    }
    for (char *line = stats + 1; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *colon = strchr(line, ':');
        if (colon) {
            *colon = 0;
            stat_metric(&b, copy, line, colon + 1);
        }
        if (!nl) break;
        line = nl + 1;
    }
    free(stats);
    free(copy);
    histograms(&b, s);
    if (b.oom) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- HTTP ---- */

static int parse_hostport(const char *a, struct sockaddr_storage *ss, socklen_t *sl) {
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a) return -1;
    size_t hl = (size_t)(colon - a);
    if (a[0] == '[') {
        if (hl < 2 || a[hl - 1] != ']') return -1;
        a++;
        hl -= 2;
    }
    if (hl >= sizeof host) return -1;
    memcpy(host, a, hl);
    host[hl] = 0;
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port > 65535) return -1;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *sl = sizeof *a6;
    } else {
        return -1;
    }
    return 0;
}

int kvmux__metrics_valid_addr(const char *a) {
    struct sockaddr_storage ss;
    socklen_t sl;
    return a && parse_hostport(a, &ss, &sl) == 0;
}

int kvmux__metrics_new(kvmux_server *s, const kvmux_server_config *cfg, char *err,
                       size_t errlen) {
    kvmux_metrics *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->srv = s;
    m->listen.fd = -1;
    m->listen.kind = KVMUX_IO_METRICS_LISTEN;
    if (pthread_mutex_init(&m->slow_mu, NULL) != 0) {
        free(m);
        goto oom;
    }
    s->metrics = m;
    m->loops = calloc(s->nloops, sizeof *m->loops);
    if (!m->loops) goto oom;
    for (uint32_t i = 0; i < s->nloops; i++) s->loops[i].metrics = &m->loops[i];
    kvmux__metrics_set_slowlog(m, cfg->slowlog_threshold_us, cfg->slowlog_max_len);
    if (cfg->slowlog_max_len && !m->slow) goto oom;
    if (!cfg->metrics_addr) return 0;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_hostport(cfg->metrics_addr, &ss, &sl) != 0) {
        snprintf(err, errlen, "--metrics-addr '%s' is not ADDR:PORT (an IP literal; IPv6 "
                 "in brackets)", cfg->metrics_addr);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "--metrics-addr: socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 16) != 0) {
        snprintf(err, errlen, "--metrics-addr %s: %s", cfg->metrics_addr, strerror(errno));
        close(fd);
        return -1;
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    m->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                            : ((struct sockaddr_in6 *)&ss)->sin6_port);
    m->listen.fd = fd;
    return 0;
oom:
    snprintf(err, errlen, "out of memory (metrics)");
    return -1;
}

uint16_t kvmux__metrics_port(const kvmux_metrics *m) { return m ? m->port : 0; }

static void mconn_close(mconn *mc) {
    kvmux_loop *l = mc->loop;
    kvmux_metrics *m = l->srv->metrics;
    kvmux__timer_cancel(&l->timers, &mc->timer);
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, mc->io.fd, NULL);
    close(mc->io.fd);
    if (mc->prev) mc->prev->next = mc->next;
    else m->conns = mc->next;
    if (mc->next) mc->next->prev = mc->prev;
    m->nconns--;
    free(mc->out);
    free(mc);
}

static void mconn_timeout(kvmux_timer *t, uint64_t now) {
    (void)now;
    mconn_close((mconn *)((char *)t - offsetof(mconn, timer)));
}

void kvmux__metrics_loop_start(kvmux_loop *l) {
    kvmux_metrics *m = l->srv->metrics;
    if (!m || m->listen.fd < 0) return;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &m->listen};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, m->listen.fd, &ev) != 0)
        kvmux_log_event(KVMUX_LOG_ERROR, "metrics.watch_failed", "error=\"%s\"",
                        strerror(errno));
}

void kvmux__metrics_loop_stop(kvmux_loop *l) {
    kvmux_metrics *m = l->srv->metrics;
    if (!m) return;
    while (m->conns) mconn_close(m->conns);
    if (m->listen.fd >= 0) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, m->listen.fd, NULL);
        close(m->listen.fd);
        m->listen.fd = -1;
    }
}

/* Queue the answer; -1 if mc was closed instead (out of memory). */
static int http_answer(mconn *mc, int code, const char *reason, const char *ctype,
                        const char *body, size_t blen, int head_only) {
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr,
                      "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "%sConnection: close\r\n\r\n",
                      code, reason, ctype, blen,
                      code == 405 ? "Allow: GET, HEAD\r\n" : "");
    size_t total = (size_t)hl + (head_only ? 0 : blen);
    mc->out = malloc(total);
    if (!mc->out) {
        mconn_close(mc);
        return -1;
    }
    memcpy(mc->out, hdr, (size_t)hl);
    if (!head_only && blen) memcpy(mc->out + hl, body, blen);
    mc->olen = total;
    mc->off = 0;
    return 0;
}

/* The request line of a complete request head: answer it. */
static int http_handle(mconn *mc) {
    char *sp1 = memchr(mc->req, ' ', mc->rlen);
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', mc->rlen - (size_t)(sp1 + 1 - mc->req)) : NULL;
    static const char text[] = "text/plain; charset=utf-8";
    if (!sp1 || !sp2) return http_answer(mc, 400, "Bad Request", text, "bad request\n", 12, 0);
    size_t mlen = (size_t)(sp1 - mc->req), plen = (size_t)(sp2 - sp1 - 1);
    int get = mlen == 3 && memcmp(mc->req, "GET", 3) == 0;
    int head = mlen == 4 && memcmp(mc->req, "HEAD", 4) == 0;
    const char *path = sp1 + 1;
    int is_metrics = (plen == 8 && memcmp(path, "/metrics", 8) == 0) ||
                     (plen > 8 && memcmp(path, "/metrics?", 9) == 0);
    if (!get && !head)
        return http_answer(mc, 405, "Method Not Allowed", text, "method not allowed\n", 19, 0);
    if (!is_metrics)
        return http_answer(mc, 404, "Not Found", text, "not found: try /metrics\n", 24, head);
    char *body;
    size_t blen;
    if (kvmux__metrics_format(mc->loop->srv, &body, &blen) != 0)
        return http_answer(mc, 500, "Internal Server Error", text, "out of memory\n", 14, head);
    int rc = http_answer(mc, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, blen,
                         head);
    free(body);
    return rc;
}

static void mconn_write(mconn *mc) {
    while (mc->off < mc->olen) {
        ssize_t w = send(mc->io.fd, mc->out + mc->off, mc->olen - mc->off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = &mc->io};
                epoll_ctl(mc->loop->epfd, EPOLL_CTL_MOD, mc->io.fd, &ev);
                return;
            }
            mconn_close(mc);
            return;
        }
        mc->off += (size_t)w;
    }
    mconn_close(mc);
}

static void mconn_read(mconn *mc) {
    for (;;) {
        if (mc->rlen >= sizeof mc->req) {
            if (http_answer(mc, 431, "Request Header Fields Too Large", "text/plain",
                            "request too large\n", 18, 0) != 0)
                return;
            break;
        }
        ssize_t r = recv(mc->io.fd, mc->req + mc->rlen, sizeof mc->req - mc->rlen, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (r <= 0) {
            mconn_close(mc);
            return;
        }
        size_t from = mc->rlen > 3 ? mc->rlen - 3 : 0;
        mc->rlen += (size_t)r;
        int done = 0;
        for (size_t i = from; i + 1 < mc->rlen && !done; i++) {
            if (mc->req[i] == '\n' && mc->req[i + 1] == '\n') done = 1;
            if (i + 3 < mc->rlen && memcmp(mc->req + i, "\r\n\r\n", 4) == 0) done = 1;
        }
        if (done) {
            if (http_handle(mc) != 0) return; /* closed */
            break;
        }
    }
    /* Stop reading: the answer goes out, then the close. */
    mconn_write(mc);
}

static void accept_http(kvmux_loop *l) {
    kvmux_metrics *m = l->srv->metrics;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(m->listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (m->nconns >= HTTP_MAX_CONNS) {
            close(fd);
            continue;
        }
        mconn *mc = calloc(1, sizeof *mc);
        if (!mc) {
            close(fd);
            continue;
        }
        mc->io.kind = KVMUX_IO_METRICS_CONN;
        mc->io.fd = fd;
        mc->loop = l;
        kvmux_timer_init(&mc->timer, mconn_timeout);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &mc->io};
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 ||
            kvmux__timer_arm(&l->timers, &mc->timer, l->now + HTTP_TIMEOUT_MS) != 0) {
            close(fd);
            free(mc);
            continue;
        }
        mc->next = m->conns;
        if (m->conns) m->conns->prev = mc;
        m->conns = mc;
        m->nconns++;
    }
}

void kvmux__metrics_on_event(kvmux_loop *l, kvmux_io *io, uint32_t events) {
    if (io->kind == KVMUX_IO_METRICS_LISTEN) {
        accept_http(l);
        return;
    }
    mconn *mc = (mconn *)io;
    if (mc->out) mconn_write(mc);
    else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) mconn_read(mc);
}

void kvmux__metrics_free(kvmux_server *s) {
    kvmux_metrics *m = s->metrics;
    if (!m) return;
    /* HTTP connections are closed by loop 0 at shutdown; a server that
     * never ran has none. */
    if (m->listen.fd >= 0) close(m->listen.fd);
    for (uint32_t i = 0; s->loops && i < s->nloops; i++) s->loops[i].metrics = NULL;
    free(m->loops);
    free(m->slow);
    pthread_mutex_destroy(&m->slow_mu);
    free(m);
    s->metrics = NULL;
}
