/* The STATS operation (opcode 7): the server's counters as text, one
 * "name:value\n" line each, like Redis INFO, so an operator (kvmux-cli
 * stats, a script with grep) can read them without a schema. The line
 * names are the contract (docs/OPERATIONS.md "STATS"); new ones may be
 * added, none is renamed.
 *
 * Design: the counters are the ones kvmux_server_get_stats sums (per-loop
 * relaxed atomics, the store's and the log's own stats), so STATS costs one
 * pass over the loops and the store shards and holds no lock of its own;
 * each line is exact, the set is not a snapshot. The optional key is a
 * name prefix filter applied while formatting. Responses by status and
 * ERRORs by code are counted here (kvmux__stats_count_sent) from the
 * header of every frame queued, so no answer path can forget to count.
 *
 * Not here: per-connection stats, latency histograms, resetting counters. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"
#include "server_internal.h"

/* Big enough for every line with long names and 20-digit values. */
#define STATS_BUF (16u * 1024)

typedef struct out {
    char *buf;
    size_t cap, len;
    int overflow;
    const uint8_t *prefix;
    size_t plen;
} out;

/* Append "name:value\n" if name passes the prefix filter. */
static void line(out *o, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void line(out *o, const char *name, const char *fmt, ...) {
    size_t nlen = strlen(name);
    if (o->plen && (nlen < o->plen || memcmp(name, o->prefix, o->plen) != 0)) return;
    if (o->overflow) return;
    int n = snprintf(o->buf + o->len, o->cap - o->len, "%s:", name);
    if (n < 0 || (size_t)n >= o->cap - o->len) {
        o->overflow = 1;
        return;
    }
    size_t at = o->len + (size_t)n;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(o->buf + at, o->cap - at, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)m + 1 >= o->cap - at) {
        o->overflow = 1;
        return;
    }
    o->buf[at + (size_t)m] = '\n';
    o->len = at + (size_t)m + 1;
}

static void u64line(out *o, const char *name, uint64_t v) {
    line(o, name, "%llu", (unsigned long long)v);
}

static void repl_u64(void *o, const char *name, uint64_t v) { u64line(o, name, v); }
static void repl_str(void *o, const char *name, const char *v) { line(o, name, "%s", v); }

/* "<group>_<lowercased NAME>" into dst. */
static void lname(char *dst, size_t cap, const char *group, const char *name) {
    int n = snprintf(dst, cap, "%s_%s", group, name);
    for (int i = 0; i < n && (size_t)i < cap && dst[i]; i++)
        dst[i] = (char)tolower((unsigned char)dst[i]);
}

size_t kvmux__stats_format(kvmux_server *s, const uint8_t *prefix, size_t plen, char *buf,
                           size_t cap) {
    kvmux_server_stats st;
    kvmux_server_get_stats(s, &st);
    out o = {.buf = buf, .cap = cap, .prefix = prefix, .plen = plen};
    char nm[64];

    line(&o, "version", "%s", KVMUXD_VERSION);
    u64line(&o, "protocol_max", s->cfg.max_protocol);
    u64line(&o, "uptime_seconds", st.uptime_ms / 1000);
    u64line(&o, "uptime_ms", st.uptime_ms);
    u64line(&o, "loops", s->nloops);

    u64line(&o, "connections_current", st.connections_current);
    u64line(&o, "connections_total", st.connections_accepted);
    u64line(&o, "connections_rejected", st.connections_rejected);
    u64line(&o, "connections_max", s->cfg.max_connections);

    uint64_t reqs = 0, resps = 0;
    for (int op = 0; op <= KVMUX_OP_MAX; op++) reqs += st.requests[op];
    for (int k = 0; k <= KVMUX_STATUS_MAX; k++) resps += st.responses[k];
    u64line(&o, "requests_total", reqs);
    for (int op = 1; op <= KVMUX_OP_MAX; op++) {
        lname(nm, sizeof nm, "requests", kvmux_opcode_name(op));
        u64line(&o, nm, st.requests[op]);
    }
    u64line(&o, "requests_unknown_op", st.requests[0]);
    /* Requests read and not answered yet (parked WAITs, held writes,
     * streams). The two sums are read at slightly different times: clamp. */
    u64line(&o, "in_flight", reqs > resps ? reqs - resps : 0);

    u64line(&o, "responses_total", resps);
    for (int k = 0; k <= KVMUX_STATUS_MAX; k++) {
        lname(nm, sizeof nm, "responses", kvmux_status_name(k));
        u64line(&o, nm, st.responses[k]);
    }
    uint64_t errs = 0;
    for (int k = 0; k < KVMUX_STATS_ERR_SLOTS; k++) errs += st.wire_errors[k];
    u64line(&o, "errors_total", errs);
    for (int k = 1; k < KVMUX_STATS_ERR_SLOTS; k++) {
        lname(nm, sizeof nm, "errors", kvmux_wire_error_name(k));
        u64line(&o, nm, st.wire_errors[k]);
    }
    u64line(&o, "errors_other", st.wire_errors[0]);
    u64line(&o, "protocol_errors", st.protocol_errors);
    u64line(&o, "auth_required", atomic_load(&s->auth_required) != 0);
    u64line(&o, "auth_failures", st.auth_failures);
    u64line(&o, "tls_handshake_failures", st.tls_handshake_failures);
    u64line(&o, "tls_errors", st.tls_errors);
    u64line(&o, "busy", st.busy);
    u64line(&o, "pings", st.pings);
    u64line(&o, "handshake_timeouts", st.handshake_timeouts);
    u64line(&o, "idle_timeouts", st.idle_timeouts);
    u64line(&o, "write_timeouts", st.write_timeouts);
    u64line(&o, "slow_reader_disconnects", st.slow_reader_disconnects);
    u64line(&o, "floods", st.floods);
    u64line(&o, "cancels", st.cancels);
    u64line(&o, "goaways", st.goaways);
    u64line(&o, "deadline_expired", st.deadline_expired);
    u64line(&o, "waits_parked", st.waits_parked);
    u64line(&o, "waits_fired", st.waits_fired);
    u64line(&o, "waits_timed_out", st.waits_timed_out);
    u64line(&o, "slowlog_len", kvmux__slowlog_len(s->metrics));
    u64line(&o, "slowlog_max_len", kvmux__slowlog_cap(s->metrics));
    u64line(&o, "uploads", st.uploads);
    u64line(&o, "streams", st.streams);

    u64line(&o, "bytes_in", st.bytes_in);
    u64line(&o, "bytes_out", st.bytes_out);

    u64line(&o, "keys", st.keys);
    u64line(&o, "key_bytes", st.key_bytes);
    u64line(&o, "used_memory", st.used_memory);
    u64line(&o, "maxmemory", st.maxmemory);
    u64line(&o, "expired_keys", st.expired_keys);
    u64line(&o, "expired_keys_active", st.expired_keys_active);
    u64line(&o, "evicted_keys", st.evicted_keys);
    u64line(&o, "oom_refused", st.oom_refused);

    u64line(&o, "aof_enabled", (uint64_t)st.aof_enabled);
    u64line(&o, "aof_failed", (uint64_t)st.aof_failed);
    u64line(&o, "aof_rewriting", (uint64_t)st.aof_rewriting);
    u64line(&o, "aof_size", st.aof_size);
    u64line(&o, "aof_pending", st.aof_pending);
    u64line(&o, "aof_writes", st.aof_writes);
    u64line(&o, "aof_fsyncs", st.aof_fsyncs);
    u64line(&o, "aof_rewrites", st.aof_rewrites);
    u64line(&o, "aof_rewrite_failures", st.aof_rewrite_failures);
    u64line(&o, "aof_refused", st.aof_refused);
    u64line(&o, "aof_writes_held", st.writes_held);
    if (s->cfg.cluster_group) {
        /* Cluster mode (docs/CLUSTER.md): the applied map's epoch (0: no
         * map) and the slots it gives this group. */
        uint64_t epoch = 0;
        uint32_t owned = 0;
        kvmux__cluster_info(s, &epoch, &owned);
        u64line(&o, "cluster_group", s->cfg.cluster_group);
        u64line(&o, "cluster_epoch", epoch);
        u64line(&o, "cluster_slots_owned", owned);
        u64line(&o, "cluster_wrong_shard", st.cluster_wrong_shard);
        u64line(&o, "cluster_try_again", st.cluster_try_again);
        u64line(&o, "cluster_try_again_migrating", st.cluster_try_again_migrating);
        kvmux__mapwatch_stats(s, &o, repl_u64);
        kvmux__migt_stats(s, &o, repl_u64, repl_str);
        kvmux__cluster_migrate_stats(s, &o, repl_u64, repl_str);
        kvmux__migrate_stats(s, &o, repl_u64);
    }
    if (s->cfg.cluster_map_group) {
        /* The map group: the authoritative map's epoch (0: none yet). */
        uint64_t epoch = 0;
        uint32_t owned = 0;
        kvmux__cluster_info(s, &epoch, &owned);
        u64line(&o, "cluster_map_group", 1);
        u64line(&o, "cluster_epoch", epoch);
        kvmux__migreq_stats(s, &o, repl_u64);
    }
    kvmux__repl_stats(s, &o,
                      plen == 14 && memcmp(prefix, "replica_digest", 14) == 0,
                      repl_u64, repl_str);
    return o.overflow ? 0 : o.len;
}

void kvmux__stats_respond(kvmux_conn *c, const kvmux_frame *f) {
    static _Thread_local char buf[STATS_BUF]; /* loop threads: no big stack frame */
    size_t n = kvmux__stats_format(c->loop->srv, f->key, f->key_len, buf, sizeof buf);
    if (n == 0 && f->key_len == 0) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0,
                            "stats buffer too small");
        return;
    }
    if (n > c->sess.peer.max_value_size ||
        (uint64_t)KVMUX_FRAME_HDR_LEN + n > c->sess.peer.max_frame_size) {
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "stats of %zu bytes exceed your max frame/value size; "
                 "ask for a prefix", n);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_TOO_LARGE, NULL, 0, msg);
        return;
    }
    kvmux_frame r;
    memset(&r, 0, sizeof r);
    r.version = c->sess.version;
    r.type = KVMUX_FRAME_RESPONSE;
    r.request_id = f->request_id;
    r.code = KVMUX_STATUS_OK;
    r.value = (const uint8_t *)buf;
    r.value_len = (uint32_t)n;
    kvmux__conn_send(c, &r);
}

void kvmux__stats_count_sent(kvmux_loop *l, const uint8_t *hdr) {
    uint8_t type = hdr[2], code = hdr[8];
    if (type == KVMUX_FRAME_RESPONSE && code <= KVMUX_STATUS_MAX)
        KVMUX_STAT_ADD(l, responses[code], 1);
    else if (type == KVMUX_FRAME_ERROR)
        KVMUX_STAT_ADD(l, wire_errors[code < KVMUX_STATS_ERR_SLOTS ? code : 0], 1);
}
