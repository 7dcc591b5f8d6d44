/* kvmuxd configuration: defaults, validation of every limit and of the
 * limits against each other, and command-line parsing.
 *
 * Design: one table of options drives parsing, so each option has exactly
 * one name, kind and range; a bad value is reported with the option's name,
 * the offending text and the accepted range, and main exits 2 (usage
 * error). Cross-limits are checked after all options are read, so the
 * order of options does not matter. This file does no I/O. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hostport.h"
#include "log.h"
#include "entry.h"
#include "peers.h"
#include "metrics.h"
#include "store.h"

/* Hard bounds (documented in docs/OPERATIONS.md). */
#define MAX_THREADS 256u
#define MAX_CONNECTIONS_LIMIT 1000000u
#define MAX_FRAME_LIMIT (1024u * 1024 * 1024)
#define MAX_OUTSTANDING_LIMIT (1024u * 1024)
#define MAX_OUTPUT_LIMIT ((uint64_t)1 << 40)
#define MAX_TIMEOUT_LIMIT 86400000u /* one day, for the plain timeouts */
#define MAX_BUSY_POLL_US 1000000u  /* one second: beyond that it is just spinning */
#define MAX_VALUE_HARD_LIMIT (512u * 1024 * 1024) /* v2, fragmented */
#define MAX_RATE_LIMIT 1000000u
#define MAX_WINDOW_LIMIT 0x7fffffffu /* windows are signed 31-bit on the wire */
#define MIN_WINDOW 1024u
#define MIN_FRAGMENT 1024u
/* Largest request extras in v1 (CAS: expected + ttl). */
#define MAX_REQUEST_EXTRAS 16u
/* v2 adds u32 deadline_ms and u32 total_value_len before the op extras. */
#define MAX_REQUEST_EXTRAS_V2 (MAX_REQUEST_EXTRAS + 8u)
/* Header + extras of a GET/WAIT response fragment (u32 total + u64
 * version): what a fragment must leave room for in the peer's frame. */
#define RESPONSE_OVERHEAD_V2 (KVMUX_FRAME_HDR_LEN + 12u)

void kvmux_server_config_init(kvmux_server_config *c) {
    memset(c, 0, sizeof *c);
    c->bind = "127.0.0.1";
    c->port = 7878;
    c->threads = 1;
    c->max_connections = 10000;
    c->max_frame = KVMUX_DEFAULT_MAX_FRAME;
    c->max_key = KVMUX_DEFAULT_MAX_KEY;
    c->max_value = 64u * 1024 * 1024;
    c->max_value_v1 = 1024u * 1024;
    c->max_outstanding = KVMUX_DEFAULT_MAX_OUTSTANDING;
    c->max_output_buffer = 64u * 1024 * 1024;
    c->handshake_timeout_ms = 5000;
    c->max_wait_ms = 3600000;
    c->shutdown_timeout_ms = 5000;
    c->close_linger_ms = 1000;
    c->store_shards = 256;
    c->idle_timeout_ms = 300000;
    c->write_timeout_ms = 60000;
    c->max_ping_rate = 100000;
    c->max_cancel_rate = 1000;
    c->max_protocol = KVMUX_PROTO_CODEC_MAX; /* a single node offers v2 at most (conn.c) */
    c->initial_window = 1024u * 1024;
    c->connection_window = 16u * 1024 * 1024;
    c->fragment_size = 64u * 1024;
    c->max_upload_buffer = (uint64_t)1 << 30;
    c->name = "kvmuxd/" KVMUXD_VERSION;
    c->aof_fsync = 0;              /* KVMUX_FSYNC_ALWAYS */
    c->aof_rewrite_min = 64u * 1024 * 1024;
    c->maxmemory_policy = 0;       /* KVMUX_MAXMEMORY_NOEVICTION */
    c->active_expire_samples = 20;
    c->requirepass = NULL;
    c->requirepass_file = NULL;
    c->protected_mode = 1;
    c->migrate_thread = 1;
    c->migrate_stall_timeout_ms = 60000;
    c->migrate_fence_timeout_ms = 5000;
    c->log_level = KVMUX_LOG_INFO;
    c->slowlog_threshold_us = 10000;
    c->slowlog_max_len = 128;
    c->election_timeout_ms = 500;
    c->heartbeat_timeout_ms = 50;
    c->snapshot_threshold = 1024;
    c->replica_disk_timeout_ms = 10000;
    c->session_timeout_ms = 3600000;
    c->max_sessions = 4096;
    c->session_window = 2048;
    c->peer_tls_handshake_timeout_ms = 2000;
}

void kvmux_server_config_deinit(kvmux_server_config *c) {
    free(c->file_buf_);
    c->file_buf_ = NULL;
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. Anything that does not parse
 * is not loopback (open_listener reports the bad literal). */
static int is_loopback(const char *addr) {
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, addr, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return 0;
}

#define RANGE(field, opt, lo, hi)                                             \
    do {                                                                      \
        if ((uint64_t)c->field < (uint64_t)(lo) || (uint64_t)c->field > (uint64_t)(hi)) \
            return kvmux_errf(err, errlen, "%s %llu is out of range (%llu..%llu)",  \
                        opt, (unsigned long long)c->field,                    \
                        (unsigned long long)(lo), (unsigned long long)(hi));  \
    } while (0)

#ifdef KVMUX_HAVE_RAFT
/* Peer TLS: all of it or none of it. A group half configured (a key
 * without --peer-tls, --peer-tls without a CA) would either not form or
 * run in the clear while its operator believes otherwise. */
static int validate_peer_tls(const kvmux_server_config *c, char *err, size_t errlen) {
    const char *cert = c->peer_tls_cert ? c->peer_tls_cert : c->tls_cert;
    const char *key = c->peer_tls_key ? c->peer_tls_key : c->tls_key;
    const char *ca = c->peer_tls_ca ? c->peer_tls_ca : c->tls_ca;
    if (!c->peer_tls) {
        if (c->peer_tls_cert || c->peer_tls_key || c->peer_tls_ca)
            return kvmux_errf(err, errlen, "--peer-tls-cert/--peer-tls-key/--peer-tls-ca given "
                              "but --peer-tls is no: set --peer-tls yes, or remove them");
        return 0;
    }
#ifndef KVMUX_HAVE_TLS
    (void)cert, (void)key, (void)ca;
    return kvmux_errf(err, errlen, "--peer-tls: kvmuxd was built without TLS "
                      "(configure with -DKVMUX_WITH_TLS=ON and libssl-dev installed)");
#else
    if (!cert || !key || !ca)
        return kvmux_errf(err, errlen, "--peer-tls yes needs a certificate, its key and the group "
                          "CA: --peer-tls-cert, --peer-tls-key, --peer-tls-ca (each defaults to "
                          "--tls-cert, --tls-key, --tls-ca); missing: %s",
                          !cert ? "certificate" : !key ? "key" : "CA");
    RANGE(peer_tls_handshake_timeout_ms, "--peer-tls-handshake-timeout", 10, 60000);
    return 0;
#endif
}
#endif

/* TLS to the map group: all of it or none of it, as for peer TLS. */
static int validate_cluster_map_tls(const kvmux_server_config *c, char *err, size_t errlen) {
    int any = c->cluster_map_tls_ca || c->cluster_map_tls_cert || c->cluster_map_tls_key ||
              c->cluster_map_tls_server_name;
    if (c->cluster_map_tls > 1)
        return kvmux_errf(err, errlen, "--cluster-map-tls is yes or no");
    if (!c->cluster_map_tls) {
        if (any)
            return kvmux_errf(err, errlen, "--cluster-map-tls-* given but --cluster-map-tls is "
                              "no: set --cluster-map-tls yes, or remove them");
        return 0;
    }
    if (!c->cluster_map)
        return kvmux_errf(err, errlen, "--cluster-map-tls needs --cluster-map");
#ifndef KVMUX_HAVE_TLS
    return kvmux_errf(err, errlen, "--cluster-map-tls: kvmuxd was built without TLS "
                      "(configure with -DKVMUX_WITH_TLS=ON and libssl-dev installed)");
#else
    const char *ca = kvmux_server_cluster_map_tls_path(c, 0);
    const char *cert = kvmux_server_cluster_map_tls_path(c, 1);
    const char *key = kvmux_server_cluster_map_tls_path(c, 2);
    if (!ca)
        return kvmux_errf(err, errlen, "--cluster-map-tls yes needs the CA the map group's "
                          "certificates chain to: --cluster-map-tls-ca (defaults to --tls-ca, "
                          "then --peer-tls-ca)");
    if (!cert != !key)
        return kvmux_errf(err, errlen, "--cluster-map-tls: a client certificate needs its key "
                          "and a key its certificate (--cluster-map-tls-cert/-key, defaulting "
                          "to --tls-cert/--tls-key)");
    /* The watcher reads them on every reconnect, long after start-up: an
     * unreadable path is refused now rather than logged forever. */
    const char *paths[3] = {ca, cert, key};
    for (int i = 0; i < 3; i++)
        if (paths[i] && access(paths[i], R_OK) != 0)
            return kvmux_errf(err, errlen, "--cluster-map-tls: cannot read %s: %s", paths[i],
                              strerror(errno));
    return 0;
#endif
}

const char *kvmux_server_cluster_map_tls_path(const kvmux_server_config *c, int which) {
    if (!c->cluster_map_tls) return NULL;
    switch (which) {
    case 0: return c->cluster_map_tls_ca ? c->cluster_map_tls_ca
                   : c->tls_ca ? c->tls_ca : c->peer_tls_ca;
    case 1: return c->cluster_map_tls_cert ? c->cluster_map_tls_cert : c->tls_cert;
    default: return c->cluster_map_tls_key ? c->cluster_map_tls_key : c->tls_key;
    }
}

/* The map group options (docs/CLUSTER.md "The map group"): a map group
 * is no data group and watches nobody; a data group's --cluster-map is a
 * valid endpoint list of at most KVMUX_CLUSTER_MAP_MAX_ENDPOINTS. */
static int validate_cluster_map(const kvmux_server_config *c, char *err, size_t errlen) {
    if (c->cluster_map_group > 1)
        return kvmux_errf(err, errlen, "--cluster-map-group is a flag (yes or no)");
    if (c->cluster_map_group && c->cluster_group)
        return kvmux_errf(err, errlen, "--cluster-map-group and --cluster-group exclude each "
                    "other: the map group serves no slots");
    if (c->cluster_map_group && c->cluster_map)
        return kvmux_errf(err, errlen, "--cluster-map-group and --cluster-map exclude each "
                    "other: the map group holds the map itself");
    if (validate_cluster_map_tls(c, err, errlen) != 0) return -1;
    if (c->migrate_thread > 1) return kvmux_errf(err, errlen, "--migrate-thread must be yes or no");
    /* MIGRATION.md 10.3: below a second a slow commit round or one
     * election would abort healthy moves; above an hour a stuck one
     * holds its range (and the fence its slots) for no purpose. */
    RANGE(migrate_stall_timeout_ms, "--migrate-stall-timeout", 1000, 3600000);
    RANGE(migrate_fence_timeout_ms, "--migrate-fence-timeout", 500, 60000);
    if (!c->cluster_map) return 0;
    if (!c->cluster_group)
        return kvmux_errf(err, errlen, "--cluster-map needs --cluster-group");
    /* The client's own limits (kvmux_options.endpoints): 1..64 host:port. */
    const char *p = c->cluster_map;
    unsigned n = 0;
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char host[256];
        uint16_t port;
        if (kvmux_hostport_parse(p, len, host, sizeof host, &port) != 0)
            return kvmux_errf(err, errlen, "--cluster-map: '%.*s' is not host:port "
                        "(expected host:port,host:port,...)", (int)(len > 80 ? 80 : len), p);
        if (++n > 64)
            return kvmux_errf(err, errlen, "--cluster-map: more than 64 endpoints");
        if (!e) return 0;
        p = e + 1;
    }
}

/* The replication options (docs/REPLICATION.md): all or nothing around
 * --replica-id, and never with --aof (the Raft log is the log). */
static int validate_replica(const kvmux_server_config *c, char *err, size_t errlen) {
    /* Without --replica-id the other options are ignored (a config file
     * may keep them, commented in or out, for when it is set). */
    if (c->replica_id == 0) {
        /* A cluster group is a replicated group: its slot map is installed
         * through the group's Raft log (docs/CLUSTER.md). */
        if (c->cluster_group != 0)
            return kvmux_errf(err, errlen, "--cluster-group needs replicated mode "
                        "(--replica-id and --peers): a cluster group is a Raft group");
        if (c->cluster_map_group)
            return kvmux_errf(err, errlen, "--cluster-map-group needs replicated mode "
                        "(--replica-id and --peers): the map group is a Raft group");
        /* --cluster-map is ignored here like the other replication
         * options: without a group there is nothing to install into. */
        return 0;
    }
    if (validate_cluster_map(c, err, errlen) != 0) return -1;
#ifndef KVMUX_HAVE_RAFT
    return kvmux_errf(err, errlen, "--replica-id: kvmuxd was built without replication "
                "(configure with -DKVMUX_WITH_RAFT=ON and libraft-dev installed)");
#else
    RANGE(replica_id, "--replica-id", 1, 255);
    RANGE(election_timeout_ms, "--election-timeout", 10, 60000);
    RANGE(read_mode, "--read-mode", 0, 1);
    RANGE(heartbeat_timeout_ms, "--heartbeat-timeout", 1, 60000);
    RANGE(snapshot_threshold, "--snapshot-threshold", 2, 100000000);
    RANGE(replica_disk_timeout_ms, "--replica-disk-timeout", 1000, 600000);
    RANGE(session_timeout_ms, "--session-timeout", 1000, 604800000);
    RANGE(max_sessions, "--max-sessions", 1, KVMUX_ENTRY_SESS_MAX);
    RANGE(session_window, "--session-window", 2, KVMUX_ENTRY_SESS_WINDOW_MAX);
    if (c->cluster_group > 65535)
        return kvmux_errf(err, errlen, "--cluster-group %u is out of range (1..65535, "
                    "0 = not a cluster node)", c->cluster_group);
    /* A client resends the writes of a lost connection while the next
     * one fills up: up to twice its credits unanswered (REPLICATION.md
     * "Exactly-once sessions"). */
    if ((uint64_t)c->session_window < 2ull * c->max_outstanding)
        return kvmux_errf(err, errlen, "--session-window %u must be at least twice "
                    "--max-outstanding %u", c->session_window, c->max_outstanding);
    if (c->heartbeat_timeout_ms >= c->election_timeout_ms)
        return kvmux_errf(err, errlen, "--heartbeat-timeout %u must be below --election-timeout %u",
                    c->heartbeat_timeout_ms, c->election_timeout_ms);
    if (c->aof_path)
        return kvmux_errf(err, errlen, "--aof cannot be used with --replica-id: in replicated mode "
                    "the Raft log in --replica-dir is the durable log");
    /* An eviction happens on the leader's loop, outside the log: the
     * leader would lose keys its followers keep (and its snapshots would
     * differ from theirs). */
    if (c->maxmemory_policy != 0)
        return kvmux_errf(err, errlen, "--maxmemory-policy allkeys-lru cannot be used with "
                    "--replica-id: evictions are not replicated (use noeviction: writes over "
                    "--maxmemory are refused before the log)");
    if (c->replica_dir && !c->replica_dir[0])
        return kvmux_errf(err, errlen, "--replica-dir needs a directory path");
    if (!c->peers) return kvmux_errf(err, errlen, "--replica-id needs --peers");
    kvmux_peers ps;
    if (kvmux_peers_parse(c->peers, &ps, err, errlen) != 0) return -1;
    if (!kvmux_peers_find(&ps, c->replica_id))
        return kvmux_errf(err, errlen, "--replica-id %u is not in --peers", c->replica_id);
    return validate_peer_tls(c, err, errlen);
#endif
}

int kvmux_server_config_validate(const kvmux_server_config *c, char *err,
                                 size_t errlen) {
    unsigned char addr[16];
    if (!c->bind || (inet_pton(AF_INET, c->bind, addr) != 1 &&
                     inet_pton(AF_INET6, c->bind, addr) != 1))
        return kvmux_errf(err, errlen,
                    "--bind '%s' is not an IPv4 or IPv6 address literal",
                    c->bind ? c->bind : "(null)");
    RANGE(threads, "--threads", 1, MAX_THREADS);
    RANGE(max_connections, "--max-connections", 1, MAX_CONNECTIONS_LIMIT);
    RANGE(max_frame, "--max-frame", KVMUX_MIN_FRAME, MAX_FRAME_LIMIT);
    RANGE(max_key, "--max-key", 1, KVMUX_MAX_KEY_LIMIT);
    RANGE(max_value, "--max-value", 1, MAX_VALUE_HARD_LIMIT);
    RANGE(max_value_v1, "--max-value-v1", 1, MAX_FRAME_LIMIT);
    RANGE(max_outstanding, "--max-outstanding", 1, MAX_OUTSTANDING_LIMIT);
    RANGE(max_output_buffer, "--max-output-buffer", KVMUX_MIN_FRAME, MAX_OUTPUT_LIMIT);
    RANGE(handshake_timeout_ms, "--handshake-timeout", 1, MAX_TIMEOUT_LIMIT);
    RANGE(max_wait_ms, "--max-wait", 1, UINT32_MAX);
    RANGE(shutdown_timeout_ms, "--shutdown-timeout", 0, MAX_TIMEOUT_LIMIT);
    RANGE(close_linger_ms, "--close-linger", 0, 60000);
    RANGE(store_shards, "--store-shards", 1, 65536);
    RANGE(idle_timeout_ms, "--idle-timeout", 0, MAX_TIMEOUT_LIMIT);
    RANGE(write_timeout_ms, "--write-timeout", 0, MAX_TIMEOUT_LIMIT);
    RANGE(busy_poll_us, "--busy-poll", 0, MAX_BUSY_POLL_US);
    RANGE(max_ping_rate, "--max-ping-rate", 0, MAX_RATE_LIMIT);
    RANGE(max_cancel_rate, "--max-cancel-rate", 0, MAX_RATE_LIMIT);
    RANGE(max_protocol, "--max-protocol", KVMUX_PROTO_VERSION_MIN, KVMUX_PROTO_CODEC_MAX);
    RANGE(initial_window, "--initial-window", MIN_WINDOW, MAX_WINDOW_LIMIT);
    RANGE(connection_window, "--connection-window", MIN_WINDOW, MAX_WINDOW_LIMIT);
    RANGE(fragment_size, "--fragment-size", MIN_FRAGMENT, MAX_FRAME_LIMIT);
    RANGE(max_upload_buffer, "--max-upload-buffer", 1, MAX_OUTPUT_LIMIT);
    RANGE(aof_fsync, "--fsync", 0, 2);
    RANGE(maxmemory_policy, "--maxmemory-policy", 0, 1);
    RANGE(active_expire_samples, "--active-expire-samples", 0, 1000000);
    if (c->aof_path && !c->aof_path[0]) return kvmux_errf(err, errlen, "--aof needs a file path");
    if (c->requirepass && c->requirepass_file)
        return kvmux_errf(err, errlen, "--requirepass and --requirepass-file are exclusive");
    if (c->requirepass &&
        (strlen(c->requirepass) == 0 || strlen(c->requirepass) > KVMUX_MAX_AUTH_TOKEN))
        return kvmux_errf(err, errlen, "--requirepass must be 1..%u bytes", KVMUX_MAX_AUTH_TOKEN);
    if (c->requirepass_file && !c->requirepass_file[0])
        return kvmux_errf(err, errlen, "--requirepass-file needs a file path");
    if (c->protected_mode > 1) return kvmux_errf(err, errlen, "--protected-mode must be yes or no");
    if (c->protected_mode && !c->requirepass && !c->requirepass_file && c->bind &&
        !is_loopback(c->bind))
        return kvmux_errf(err, errlen,
                    "protected mode: refusing to listen on %s without authentication; "
                    "set --requirepass TOKEN (or --requirepass-file PATH), bind a loopback "
                    "address, or pass --protected-mode no if the network is trusted",
                    c->bind);
    if ((c->tls_cert && !c->tls_cert[0]) || (c->tls_key && !c->tls_key[0]) ||
        (c->tls_ca && !c->tls_ca[0]))
        return kvmux_errf(err, errlen, "--tls-cert, --tls-key and --tls-ca need a file path");
    if (!c->tls_cert != !c->tls_key)
        return kvmux_errf(err, errlen, "--tls-cert and --tls-key go together");
    if (c->tls_ca && !c->tls_cert)
        return kvmux_errf(err, errlen, "--tls-ca needs --tls-cert and --tls-key");
    if (c->store_shards & (c->store_shards - 1))
        return kvmux_errf(err, errlen, "--store-shards %u is not a power of two",
                    c->store_shards);
    RANGE(log_level, "--log-level", KVMUX_LOG_DEBUG, KVMUX_LOG_ERROR);
    RANGE(slowlog_max_len, "--slowlog-max-len", 0, 1000000);
    if (c->log_file && !c->log_file[0]) return kvmux_errf(err, errlen, "--log-file needs a file path");
    if (c->log_file && c->syslog)
        return kvmux_errf(err, errlen, "--log-file and --syslog are exclusive");
    if (c->metrics_addr && !kvmux__metrics_valid_addr(c->metrics_addr))
        return kvmux_errf(err, errlen, "--metrics-addr '%s' is not ADDR:PORT (an IP literal, IPv6 "
                    "in brackets: [::1]:9121)", c->metrics_addr);
    if (validate_replica(c, err, errlen) != 0) return -1;
    if (c->name && strlen(c->name) > KVMUX_MAX_NAME)
        return kvmux_errf(err, errlen, "server name is longer than %u bytes", KVMUX_MAX_NAME);

    /* A v1 request travels in one frame: the frame must hold the largest
     * one the other limits allow, or v1 clients would be told "value up
     * to N" and then be unable to send it. */
    uint32_t v1_value = c->max_value < c->max_value_v1 ? c->max_value : c->max_value_v1;
    uint64_t need = (uint64_t)KVMUX_FRAME_HDR_LEN + MAX_REQUEST_EXTRAS + c->max_key + v1_value;
    if (need > c->max_frame)
        return kvmux_errf(err, errlen,
                    "--max-frame %u is too small for --max-key %u and a v1 value of %u "
                    "(min of --max-value and --max-value-v1): the largest v1 request is "
                    "%llu bytes (16 header + 16 extras + key + value); raise --max-frame "
                    "to at least %llu or lower the others",
                    c->max_frame, c->max_key, v1_value, (unsigned long long)need,
                    (unsigned long long)need);
    /* A fragmented v2 request carries its whole key and extras in its
     * first frame. */
    need = (uint64_t)KVMUX_FRAME_HDR_LEN + MAX_REQUEST_EXTRAS_V2 + c->max_key + 1;
    if (need > c->max_frame)
        return kvmux_errf(err, errlen, "--max-frame %u is too small for --max-key %u in v2 "
                    "(needs at least %llu)", c->max_frame, c->max_key,
                    (unsigned long long)need);
    if (c->fragment_size > c->max_frame - RESPONSE_OVERHEAD_V2)
        return kvmux_errf(err, errlen, "--fragment-size %u does not fit in --max-frame %u "
                    "(at most %u)", c->fragment_size, c->max_frame,
                    c->max_frame - RESPONSE_OVERHEAD_V2);
    if (c->max_upload_buffer < c->max_value)
        return kvmux_errf(err, errlen, "--max-upload-buffer %llu is smaller than --max-value %u: "
                    "the largest value could never be uploaded",
                    (unsigned long long)c->max_upload_buffer, c->max_value);
    uint64_t empty = kvmux_store_empty_memory(c->store_shards);
    if (c->maxmemory != 0 && c->maxmemory < empty)
        return kvmux_errf(err, errlen,
                    "--maxmemory %llu is below the %llu bytes an empty store already "
                    "accounts for (the hash tables of --store-shards %u): every write "
                    "would be refused; use at least %llu, fewer --store-shards, or 0 "
                    "for no limit",
                    (unsigned long long)c->maxmemory, (unsigned long long)empty,
                    c->store_shards, (unsigned long long)empty);
    if (c->max_output_buffer < c->max_frame)
        return kvmux_errf(err, errlen,
                    "--max-output-buffer %llu is smaller than --max-frame %u: one "
                    "large response would disconnect the client",
                    (unsigned long long)c->max_output_buffer, c->max_frame);
    return 0;
}

/* ---- argument parsing ---- */

/* OPT_FLAG: no value on the command line, yes|no in a file. OPT_CMDLINE:
 * a string accepted on the command line only (--config). */
enum opt_kind { OPT_STR, OPT_U32, OPT_U16, OPT_SIZE32, OPT_SIZE64, OPT_MS, OPT_LOG,
                OPT_FSYNC, OPT_POLICY, OPT_READMODE, OPT_FLAG, OPT_YESNO, OPT_CMDLINE, OPT_CHECK };

/* How a running server treats a changed value on SIGHUP (reload.c,
 * main.c): R_NO keeps the old value and logs the option's name, R_YES
 * applies it, R_NEW applies it to connections accepted from then on
 * (open ones keep theirs), R_NA is not a server setting (--config). */
enum opt_reload { R_NO = 0, R_YES = 1, R_NA = 2, R_NEW = 3 };

typedef struct opt {
    const char *name;
    enum opt_kind kind;
    size_t offset;
    const char *help;
    enum opt_reload reload;
} opt;

#define OFF(f) offsetof(kvmux_server_config, f)
#define KVMUX_STR_(x) #x
#define KVMUX_STR(x) KVMUX_STR_(x)
static const opt options[] = {
    {"--bind", OPT_STR, OFF(bind), "ADDR   IPv4/IPv6 literal to listen on (127.0.0.1)", R_NO},
    {"--port", OPT_U16, OFF(port), "N      TCP port, 0 = ephemeral (7878)", R_NO},
    {"--threads", OPT_U32, OFF(threads), "N      event-loop threads (1)", R_NO},
    {"--max-connections", OPT_U32, OFF(max_connections), "N      open connections (10000)", R_NO},
    {"--max-frame", OPT_SIZE32, OFF(max_frame), "BYTES  largest frame incl. header (2M)", R_NO},
    {"--max-key", OPT_SIZE32, OFF(max_key), "BYTES  largest key, <= 65535 (4096)", R_NO},
    {"--max-value", OPT_SIZE32, OFF(max_value), "BYTES  largest value, v2 (64M, at most 512M)", R_NO},
    {"--max-value-v1", OPT_SIZE32, OFF(max_value_v1), "BYTES  largest value on a v1 connection (1M)", R_NO},
    {"--max-outstanding", OPT_U32, OFF(max_outstanding), "N      unanswered requests per connection (1024)", R_NO},
    {"--max-output-buffer", OPT_SIZE64, OFF(max_output_buffer), "BYTES  queued output before a slow reader is dropped (64M)", R_NO},
    {"--handshake-timeout", OPT_MS, OFF(handshake_timeout_ms), "MS     time to complete HELLO (5000)", R_NEW},
    {"--max-wait", OPT_MS, OFF(max_wait_ms), "MS     cap on WAIT timeouts (3600000)", R_NEW},
    {"--shutdown-timeout", OPT_MS, OFF(shutdown_timeout_ms), "MS     grace for parked WAITs on shutdown (5000)", R_NO},
    {"--close-linger", OPT_MS, OFF(close_linger_ms), "MS     bound on flushing before a close (1000)", R_NEW},
    {"--store-shards", OPT_U32, OFF(store_shards), "N      store lock shards, power of two (256)", R_NO},
    {"--idle-timeout", OPT_MS, OFF(idle_timeout_ms), "MS     close idle connections, 0 = never (300000)", R_NEW},
    {"--write-timeout", OPT_MS, OFF(write_timeout_ms), "MS     close connections whose output is stuck, 0 = never (60000)", R_NEW},
    {"--busy-poll", OPT_U32, OFF(busy_poll_us), "USEC   spin this long for more I/O before sleeping, 0 = never (0)", R_YES},
    {"--max-ping-rate", OPT_U32, OFF(max_ping_rate), "N      PINGs per second per connection, 0 = no cap (100000)", R_NEW},
    {"--max-cancel-rate", OPT_U32, OFF(max_cancel_rate), "N      CANCELs per second per connection, 0 = no cap (1000)", R_NEW},
    {"--max-protocol", OPT_U32, OFF(max_protocol), "N      highest protocol version offered (" KVMUX_STR(KVMUX_PROTO_CODEC_MAX) "; a single node offers 2 at most)", R_NO},
    {"--initial-window", OPT_SIZE32, OFF(initial_window), "BYTES  v2 per-message receive window (1M)", R_NO},
    {"--connection-window", OPT_SIZE32, OFF(connection_window), "BYTES  v2 connection receive window (16M)", R_NO},
    {"--fragment-size", OPT_SIZE32, OFF(fragment_size), "BYTES  v2 response fragment size (64K)", R_NO},
    {"--max-upload-buffer", OPT_SIZE64, OFF(max_upload_buffer), "BYTES  v2 uploads in progress per connection (1G)", R_NEW},
    {"--log-level", OPT_LOG, OFF(log_level), "LEVEL  debug, info, warn or error (info)", R_YES},
    {"--log-file", OPT_STR, OFF(log_file), "PATH   append log lines to this file, reopened on SIGHUP (stderr)", R_YES},
    {"--syslog", OPT_FLAG, OFF(syslog), "       log to syslog(3), facility daemon, instead of stderr", R_YES},
    {"--aof", OPT_STR, OFF(aof_path), "PATH   append-only log (none)", R_NO},
    {"--fsync", OPT_FSYNC, OFF(aof_fsync), "MODE   always, everysec or no (always)", R_NO},
    {"--aof-repair", OPT_FLAG, OFF(aof_repair), "       truncate the log at its first corrupt record", R_NO},
    {"--aof-rewrite-min", OPT_SIZE64, OFF(aof_rewrite_min), "BYTES  compact the log above this size once doubled, 0 = never (64M)", R_NO},
    {"--maxmemory", OPT_SIZE64, OFF(maxmemory), "BYTES  limit on accounted memory, 0 = none (0)", R_YES},
    {"--maxmemory-policy", OPT_POLICY, OFF(maxmemory_policy), "P      noeviction or allkeys-lru (noeviction)", R_YES},
    {"--active-expire-samples", OPT_U32, OFF(active_expire_samples), "N      keys per shard per expiry cycle, 0 = lazy only (20)", R_NO},
    {"--requirepass", OPT_STR, OFF(requirepass), "TOKEN  clients must send this token in HELLO (none)", R_YES},
    {"--requirepass-file", OPT_STR, OFF(requirepass_file), "PATH   read the token from a file (first line)", R_YES},
    {"--protected-mode", OPT_YESNO, OFF(protected_mode), "yes|no refuse a non-loopback --bind without a token (yes)", R_NO},
    {"--tls-cert", OPT_STR, OFF(tls_cert), "PATH   PEM certificate chain: the port speaks TLS 1.2+ only (none)", R_YES},
    {"--tls-key", OPT_STR, OFF(tls_key), "PATH   PEM private key of --tls-cert", R_YES},
    {"--tls-ca", OPT_STR, OFF(tls_ca), "PATH   PEM CA bundle: require and verify client certificates", R_YES},
    {"--metrics-addr", OPT_STR, OFF(metrics_addr), "ADDR:PORT serve Prometheus GET /metrics here (none)", R_NO},
    {"--slowlog-threshold-us", OPT_U32, OFF(slowlog_threshold_us), "USEC   slow log: requests taking at least this long (10000)", R_YES},
    {"--slowlog-max-len", OPT_U32, OFF(slowlog_max_len), "N      slow log entries kept, 0 = off (128)", R_YES},
    {"--replica-id", OPT_U32, OFF(replica_id), "N      replicated mode: this replica's id 1..255 in --peers (0 = single node)", R_NO},
    {"--replica-dir", OPT_STR, OFF(replica_dir), "DIR    Raft log and snapshots (./kvmux-replica-N)", R_NO},
    {"--peers", OPT_STR, OFF(peers), "LIST   ID=RAFTHOST:RAFTPORT/CLIENTHOST:CLIENTPORT,... all members", R_NO},
    {"--bootstrap", OPT_FLAG, OFF(bootstrap), "       first start of a new group: write the initial membership", R_NO},
    {"--election-timeout", OPT_MS, OFF(election_timeout_ms), "MS     Raft election timeout (500)", R_NO},
    {"--heartbeat-timeout", OPT_MS, OFF(heartbeat_timeout_ms), "MS     Raft heartbeat interval (50)", R_NO},
    {"--read-mode", OPT_READMODE, OFF(read_mode), "M      linearizable reads on the leader: lease or barrier (lease)", R_NO},
    {"--snapshot-threshold", OPT_U32, OFF(snapshot_threshold), "N      Raft entries between snapshots (1024)", R_NO},
    {"--replica-disk-timeout", OPT_MS, OFF(replica_disk_timeout_ms), "MS     exit (status 74) when a Raft log write is pending this long (10000)", R_NO},
    {"--session-timeout", OPT_MS, OFF(session_timeout_ms), "MS     forget an exactly-once session idle this long (3600000)", R_NO},
    {"--max-sessions", OPT_U32, OFF(max_sessions), "N      exactly-once sessions remembered; the least active goes (4096)", R_NO},
    {"--session-window", OPT_U32, OFF(session_window), "N      replies kept per session, >= 2x --max-outstanding (2048)", R_NO},
    {"--cluster-group", OPT_U32, OFF(cluster_group), "ID     cluster mode: this group's id 1..65535 in the slot map (0 = none)", R_NO},
    {"--cluster-map-group", OPT_FLAG, OFF(cluster_map_group), "       this group is the cluster's map group: it holds the slot map", R_NO},
    {"--cluster-map", OPT_STR, OFF(cluster_map), "LIST   the map group's members host:port,...: the leader installs its maps (none)", R_NO},
    {"--migrate-thread", OPT_YESNO, OFF(migrate_thread), "yes|no with --cluster-map: the leader drives the slot migrations of its group (yes)", R_NO},
    {"--migrate-stall-timeout", OPT_MS, OFF(migrate_stall_timeout_ms), "MS     ask ABORT of a copy with no import answered OK this long, 1000..3600000 (60000)", R_NO},
    {"--migrate-fence-timeout", OPT_MS, OFF(migrate_fence_timeout_ms), "MS     ask ABORT of a fenced migration not committed this long, 500..60000 (5000)", R_NO},
    {"--cluster-map-tls", OPT_YESNO, OFF(cluster_map_tls), "yes|no reach the map group over TLS (no)", R_NO},
    {"--cluster-map-tls-ca", OPT_STR, OFF(cluster_map_tls_ca), "PATH   CA the map group's certificates chain to (--tls-ca, else --peer-tls-ca)", R_NO},
    {"--cluster-map-tls-cert", OPT_STR, OFF(cluster_map_tls_cert), "PATH   client certificate for the map group (--tls-cert)", R_NO},
    {"--cluster-map-tls-key", OPT_STR, OFF(cluster_map_tls_key), "PATH   PEM private key of --cluster-map-tls-cert (--tls-key)", R_NO},
    {"--cluster-map-tls-server-name", OPT_STR, OFF(cluster_map_tls_server_name), "NAME   name the map group's certificates must match (the endpoint's host)", R_NO},
    {"--peer-tls", OPT_YESNO, OFF(peer_tls), "yes|no mutual TLS 1.3 between replicas on the Raft port (no)", R_NO},
    {"--peer-tls-cert", OPT_STR, OFF(peer_tls_cert), "PATH   this replica's PEM certificate chain for peers (--tls-cert)", R_NO},
    {"--peer-tls-key", OPT_STR, OFF(peer_tls_key), "PATH   PEM private key of --peer-tls-cert (--tls-key)", R_NO},
    {"--peer-tls-ca", OPT_STR, OFF(peer_tls_ca), "PATH   the group CA: peers must present a certificate it signed (--tls-ca)", R_NO},
    {"--peer-tls-handshake-timeout", OPT_MS, OFF(peer_tls_handshake_timeout_ms), "MS     bound on a peer's connect + TLS handshake (2000)", R_NO},
    {"--config", OPT_CMDLINE, OFF(config_file), "FILE   read options from FILE; command-line options win", R_NA},
    {"--check-config", OPT_CHECK, OFF(check_config), "       validate the options (and FILE), then exit 0 or 2", R_NA},
};

const char *kvmux_server_usage(void) {
    static char buf[16384];
    if (buf[0]) return buf;
    size_t used = (size_t)snprintf(buf, sizeof buf,
                                   "usage: kvmuxd [options]\n"
                                   "kvmux key-value server (version " KVMUXD_VERSION ")\n\n");
    for (size_t i = 0; i < sizeof options / sizeof options[0] && used < sizeof buf; i++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "  %-20s %s%s\n",
                                 options[i].name, options[i].help,
                                 options[i].reload == R_YES ? " [SIGHUP]"
                                 : options[i].reload == R_NEW ? " [SIGHUP: new connections]" : "");
    if (used < sizeof buf)
        snprintf(buf + used, sizeof buf - used,
                 "  %-20s        this text\n  %-20s        print the version\n\n"
                 "Sizes take K, M, G (binary) suffixes. A config file (--config) takes\n"
                 "the same names without the dashes, one 'name value' per line, # comments;\n"
                 "flags there take yes or no. SIGINT/SIGTERM shut down gracefully; SIGHUP\n"
                 "reopens the log file and applies the options marked [SIGHUP] from the\n"
                 "file and the command line (those marked 'new connections' to connections\n"
                 "accepted afterwards); the others need a restart.\n"
                 "See docs/OPERATIONS.md.\n",
                 "--help", "--version");
    return buf;
}

/* Parse an unsigned decimal with an optional binary size suffix. */
static int parse_u64(const char *s, int allow_suffix, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    uint64_t mult = 1;
    if (*end && allow_suffix) {
        switch (*end) {
        case 'k': case 'K': mult = 1024; break;
        case 'm': case 'M': mult = 1024 * 1024; break;
        case 'g': case 'G': mult = 1024 * 1024 * 1024; break;
        default: return -1;
        }
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0 || strcmp(end, "ib") == 0)
            end += strlen(end);
    }
    if (*end) return -1;
    if (v > UINT64_MAX / mult) return -1;
    *out = (uint64_t)v * mult;
    return 0;
}


static int apply(kvmux_server_config *c, const opt *o, const char *val, char *err,
                 size_t errlen) {
    char *base = (char *)c + o->offset;
    uint64_t v = 0, max;
    switch (o->kind) {
    case OPT_STR:
    case OPT_CMDLINE:
        memcpy(base, &val, sizeof val);
        return 0;
    case OPT_FLAG: /* from a file: yes or no */
    case OPT_CHECK:
    case OPT_YESNO: {
        uint32_t x;
        if (strcmp(val, "yes") == 0) x = 1;
        else if (strcmp(val, "no") == 0) x = 0;
        else return kvmux_errf(err, errlen, "invalid value for %s: '%s' (expected yes or no)",
                         o->name, val);
        memcpy(base, &x, sizeof x);
        return 0;
    }
    case OPT_FSYNC:
    case OPT_POLICY:
    case OPT_READMODE: {
        int p;
        if (o->kind == OPT_FSYNC)
            p = strcmp(val, "always") == 0 ? 0 : strcmp(val, "everysec") == 0 ? 1
              : strcmp(val, "no") == 0 ? 2 : -1;
        else if (o->kind == OPT_READMODE)
            p = strcmp(val, "lease") == 0 ? KVMUX_READ_LEASE
              : strcmp(val, "barrier") == 0 ? KVMUX_READ_BARRIER : -1;
        else
            p = strcmp(val, "noeviction") == 0 ? 0 : strcmp(val, "allkeys-lru") == 0 ? 1 : -1;
        if (p < 0)
            return kvmux_errf(err, errlen, "invalid value for %s: '%s' (expected %s)", o->name, val,
                        o->kind == OPT_FSYNC ? "always, everysec or no"
                        : o->kind == OPT_READMODE ? "lease or barrier"
                                             : "noeviction or allkeys-lru");
        uint32_t x = (uint32_t)p;
        memcpy(base, &x, sizeof x);
        return 0;
    }
    case OPT_LOG: {
        int l = kvmux_log_parse_level(val);
        if (l < 0)
            return kvmux_errf(err, errlen, "invalid value for --log-level: '%s' "
                        "(expected debug, info, warn or error)", val);
        uint32_t x = (uint32_t)l;
        memcpy(base, &x, sizeof x);
        return 0;
    }
    case OPT_U16: max = UINT16_MAX; break;
    case OPT_SIZE64: max = UINT64_MAX; break;
    default: max = UINT32_MAX; break;
    }
    int suffix = o->kind == OPT_SIZE32 || o->kind == OPT_SIZE64;
    if (parse_u64(val, suffix, &v) != 0 || v > max)
        return kvmux_errf(err, errlen, "invalid value for %s: '%s' (expected %s in 0..%llu)",
                    o->name, val,
                    suffix ? "a byte count, optionally with K/M/G," : "an integer",
                    (unsigned long long)max);
    switch (o->kind) {
    case OPT_U16: {
        uint16_t x = (uint16_t)v;
        memcpy(base, &x, sizeof x);
        break;
    }
    case OPT_SIZE64:
        memcpy(base, &v, sizeof v);
        break;
    default: {
        uint32_t x = (uint32_t)v;
        memcpy(base, &x, sizeof x);
        break;
    }
    }
    return 0;
}

#define NOPTS (sizeof options / sizeof options[0])

static const opt *find_opt(const char *name, size_t nlen) {
    for (size_t k = 0; k < NOPTS; k++)
        if (strlen(options[k].name) == nlen && strncmp(options[k].name, name, nlen) == 0)
            return &options[k];
    return NULL;
}

/* Where each option's value came from: 0 = default or command line, else
 * the config file's line (for "FILE:LINE:" on a value out of range). */
typedef struct origin {
    const char *file;
    uint32_t line[NOPTS];
} origin;

/* One pass over argv. Returns a kvmux_config_action or -1. */
static int apply_args(kvmux_server_config *c, origin *org, int argc, char **argv, char *err,
                      size_t errlen) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) return KVMUX_CONFIG_HELP;
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) return KVMUX_CONFIG_VERSION;
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        const opt *o = find_opt(arg, nlen);
        if (!o) return kvmux_errf(err, errlen, "unknown option '%s' (try --help)", arg);
        if (org) org->line[o - options] = 0;
        if (o->kind == OPT_FLAG || o->kind == OPT_CHECK) {
            if (eq) return kvmux_errf(err, errlen, "option %s takes no value", o->name);
            uint32_t one = 1;
            memcpy((char *)c + o->offset, &one, sizeof one);
            continue;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) return kvmux_errf(err, errlen, "option %s needs a value", o->name);
            val = argv[++i];
        }
        if (apply(c, o, val, err, errlen) != 0) return -1;
    }
    return KVMUX_CONFIG_RUN;
}

int kvmux__config_set(kvmux_server_config *c, const char *name, const char *value,
                      char *err, size_t errlen) {
    char dashed[64];
    if (strlen(name) + 3 > sizeof dashed || strncmp(name, "--", 2) == 0)
        return kvmux_errf(err, errlen, "unknown option '%s'", name);
    snprintf(dashed, sizeof dashed, "--%s", name);
    const opt *o = find_opt(dashed, strlen(dashed));
    if (!o) return kvmux_errf(err, errlen, "unknown option '%s'", name);
    if (o->kind == OPT_CMDLINE || o->kind == OPT_CHECK)
        return kvmux_errf(err, errlen, "'%s' is a command-line option only", name);
    if (!value || !value[0]) return kvmux_errf(err, errlen, "'%s' needs a value", name);
    if (apply(c, o, value, err, errlen) != 0) return -1;
    return (int)(o - options);
}

/* After a failed validation: if the message names an option whose value
 * came from the file, prefix FILE:LINE. */
static void locate(const origin *org, char *err, size_t errlen) {
    if (!org->file || strncmp(err, "--", 2) != 0) return;
    size_t n = strcspn(err, " =");
    const opt *o = find_opt(err, n);
    if (!o || !org->line[o - options]) return;
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", err);
    snprintf(err, errlen, "%s:%u: %s", org->file, org->line[o - options], tmp);
}

int kvmux_server_config_load(kvmux_server_config *c, int argc, char **argv, char *err,
                             size_t errlen) {
    /* First pass on a scratch copy: --help/--version, syntax, and where
     * the config file is. */
    kvmux_server_config scratch = *c;
    scratch.file_buf_ = NULL;
    int action = apply_args(&scratch, NULL, argc, argv, err, errlen);
    if (action != KVMUX_CONFIG_RUN) return action;
    origin org;
    memset(&org, 0, sizeof org);
    if (scratch.config_file) {
        org.file = scratch.config_file;
        int rc = kvmux__config_file_read(c, scratch.config_file, org.line, NOPTS, err, errlen);
        if (rc != 0) return -1;
    }
    /* The command line wins over the file, wherever --config stood. */
    if (apply_args(c, &org, argc, argv, err, errlen) != KVMUX_CONFIG_RUN) return -1;
    if (kvmux_server_config_validate(c, err, errlen) != 0) {
        locate(&org, err, errlen);
        return -1;
    }
    return c->check_config ? KVMUX_CONFIG_CHECK : KVMUX_CONFIG_RUN;
}

int kvmux_server_config_parse_args(kvmux_server_config *c, int *log_level,
                                   int argc, char **argv, char *err,
                                   size_t errlen) {
    int action = kvmux_server_config_load(c, argc, argv, err, errlen);
    if (action >= 0 && log_level) *log_level = (int)c->log_level;
    return action;
}

static int opt_differs(const opt *o, const kvmux_server_config *a,
                       const kvmux_server_config *b) {
    const char *pa = (const char *)a + o->offset, *pb = (const char *)b + o->offset;
    switch (o->kind) {
    case OPT_STR:
    case OPT_CMDLINE: {
        const char *sa, *sb;
        memcpy(&sa, pa, sizeof sa);
        memcpy(&sb, pb, sizeof sb);
        if (!sa || !sb) return sa != sb;
        return strcmp(sa, sb) != 0;
    }
    case OPT_U16: return memcmp(pa, pb, sizeof(uint16_t)) != 0;
    case OPT_SIZE64: return memcmp(pa, pb, sizeof(uint64_t)) != 0;
    default: return memcmp(pa, pb, sizeof(uint32_t)) != 0;
    }
}

void kvmux__config_diff(const kvmux_server_config *old, const kvmux_server_config *next,
                        void (*fn)(const char *name, int reloadable, void *ud), void *ud) {
    for (size_t k = 0; k < NOPTS; k++) {
        const opt *o = &options[k];
        if (o->reload == R_NA || !opt_differs(o, old, next)) continue;
        fn(o->name + 2, o->reload == R_YES ? 1 : o->reload == R_NEW ? 2 : 0, ud);
    }
}

void kvmux__config_keep_static(kvmux_server_config *next, const kvmux_server_config *old) {
    for (size_t k = 0; k < NOPTS; k++) {
        const opt *o = &options[k];
        if (o->reload != R_NO) continue;
        size_t sz = o->kind == OPT_STR ? sizeof(const char *)
                  : o->kind == OPT_U16 ? sizeof(uint16_t)
                  : o->kind == OPT_SIZE64 ? sizeof(uint64_t) : sizeof(uint32_t);
        memcpy((char *)next + o->offset, (const char *)old + o->offset, sz);
    }
}

size_t kvmux__config_option_count(void) { return NOPTS; }
const char *kvmux__config_option_name(size_t i) { return i < NOPTS ? options[i].name : NULL; }
