/* kvmuxd as an embeddable instance: configuration, lifecycle, statistics.
 *
 * main.c parses options into a kvmux_server_config and runs one server;
 * tests (or another program) can run several in one process. Nothing here
 * uses process globals: signals are main.c's business (it calls
 * kvmux_server_stop from its handler).
 *
 * Lifecycle: kvmux_server_new (binds and listens, so the port is known) ->
 * kvmux_server_run (blocks, serving, until stopped) -> kvmux_server_free. */
#ifndef KVMUX_SERVER_H
#define KVMUX_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* The release, from CMake's project(VERSION) (the same as kvmux.h's
 * KVMUX_VERSION_STRING, which the server does not include). */
#ifdef KVMUX_PROJECT_VERSION
#define KVMUXD_VERSION KVMUX_PROJECT_VERSION
#else
#define KVMUXD_VERSION "unknown"
#endif

/* Every limit of the server. Fill with kvmux_server_config_init, change
 * fields, check with kvmux_server_config_validate. */
/* --read-mode (docs/REPLICATION.md "Reads in detail"). */
enum { KVMUX_READ_LEASE = 0, KVMUX_READ_BARRIER = 1 };

typedef struct kvmux_server_config {
    const char *bind;             /* IPv4/IPv6 literal; default "127.0.0.1";
                                     borrowed until kvmux_server_new returns */
    uint16_t port;                /* 0 = ephemeral; default 7878 */
    uint32_t threads;             /* event-loop threads; default 1 */
    uint32_t max_connections;     /* default 10000 */
    uint32_t max_frame;           /* bytes incl. header; default 2 MiB */
    uint32_t max_key;             /* default 4096, <= 65535 */
    uint32_t max_value;           /* largest value on a v2 connection
                                     (fragmented); default 64 MiB, <= 512 MiB */
    uint32_t max_value_v1;        /* largest value on a v1 connection (one
                                     frame); default 1 MiB; the effective v1
                                     limit is min(max_value, max_value_v1) */
    uint32_t max_outstanding;     /* credits per connection; default 1024 */
    uint64_t max_output_buffer;   /* bytes queued per connection before it is
                                     dropped as a slow reader; default 64 MiB */
    uint32_t handshake_timeout_ms;/* default 5000 */
    uint32_t max_wait_ms;         /* cap on WAIT timeouts; default 3600000 */
    uint32_t shutdown_timeout_ms; /* grace for parked WAITs; default 5000 */
    uint32_t close_linger_ms;     /* bound on flushing an ERROR / final
                                     responses before close; default 1000 */
    uint32_t store_shards;        /* power of two; default 256 */
    uint32_t idle_timeout_ms;     /* close a connection with nothing in
                                     flight and no input for this long with
                                     ERROR TIMEOUT; 0 = never; default 300000 */
    uint32_t busy_poll_us;        /* after an iteration that handled I/O, poll
                                     (epoll_wait with timeout 0) for up to
                                     this long before sleeping, so a busy
                                     connection's next request finds the
                                     thread awake; 0 = never (default) */
    uint32_t write_timeout_ms;    /* close a connection whose queued output
                                     made no progress for this long; 0 =
                                     never; default 60000 */
    uint32_t max_ping_rate;       /* PINGs per second per connection before
                                     ERROR FLOOD (bursts up to the rate);
                                     0 = no cap; default 100000 */
    uint32_t max_cancel_rate;     /* CANCELs per second per connection
                                     before ERROR FLOOD; 0 = no cap; default
                                     1000 */
    uint32_t max_protocol;        /* highest protocol version offered;
                                     default KVMUX_PROTO_CODEC_MAX (3);
                                     a single node offers 2 at most */
    uint32_t initial_window;      /* v2: per-message receive window granted
                                     to clients; default 1 MiB */
    uint32_t connection_window;   /* v2: connection receive window; default
                                     16 MiB */
    uint32_t fragment_size;       /* v2: value bytes per response fragment,
                                     and the size above which a response is
                                     fragmented; default 64 KiB */
    uint64_t max_upload_buffer;   /* v2: bytes reserved for fragmented
                                     uploads in progress on one connection;
                                     default 1 GiB, >= max_value */
    const char *name;             /* server name in HELLO_ACK; default
                                     "kvmuxd/<version>"; borrowed */
    /* Persistence (docs/OPERATIONS.md "Persistence"). */
    const char *aof_path;         /* append-only log; NULL = none; borrowed
                                     until kvmux_server_new returns */
    uint32_t aof_fsync;           /* enum kvmux_fsync_policy (aof.h);
                                     default always */
    uint32_t aof_repair;          /* 1: truncate at the first corrupt record
                                     instead of refusing to start */
    uint64_t aof_rewrite_min;     /* compact the log above this size when it
                                     doubled; 0 = never; default 64 MiB */
    /* Memory (docs/OPERATIONS.md "Memory and expiry"). */
    uint64_t maxmemory;           /* accounted bytes; 0 = no limit */
    uint32_t maxmemory_policy;    /* enum kvmux_maxmemory_policy (store.h);
                                     default noeviction */
    uint32_t active_expire_samples; /* keys sampled per shard per 100 ms
                                     expiry cycle; 0 = lazy expiry only;
                                     default 20 */
    /* Access (docs/OPERATIONS.md "Access"). */
    const char *requirepass;      /* token clients must send in HELLO
                                     (1..64 bytes); NULL = none; borrowed
                                     until kvmux_server_new returns */
    const char *requirepass_file; /* read the token from this file (first
                                     line, trailing newline stripped);
                                     exclusive with requirepass */
    uint32_t protected_mode;      /* 1 (default): refuse a non-loopback bind
                                     without a token */
    /* TLS (docs/OPERATIONS.md "TLS"). With tls_cert set, the port speaks
     * TLS only (1.2 or later). Paths are read by kvmux_server_new. OpenSSL
     * writes to the sockets itself (no MSG_NOSIGNAL): a process embedding
     * a TLS server must ignore SIGPIPE, as kvmuxd's main does. */
    const char *tls_cert;         /* PEM certificate chain; NULL = no TLS */
    const char *tls_key;          /* PEM private key; required with tls_cert */
    const char *tls_ca;           /* PEM CA bundle: require client
                                     certificates signed by it; NULL = no
                                     client certificates asked */
    /* Operations (docs/OPERATIONS.md "Configuration file", "Logs",
     * "Metrics", "Slow log"). */
    uint32_t log_level;           /* KVMUX_LOG_* (log.h); default info */
    const char *log_file;         /* append log lines here (reopened on
                                     SIGHUP); NULL = stderr; main.c's */
    uint32_t syslog;              /* 1: log to syslog(3) instead */
    const char *metrics_addr;     /* "HOST:PORT" for GET /metrics (port 0 =
                                     ephemeral); NULL = none; borrowed until
                                     kvmux_server_new returns */
    uint32_t slowlog_threshold_us;/* log requests slower than this; 0 = every
                                     request; default 10000 */
    uint32_t slowlog_max_len;     /* slow log entries kept; 0 = off;
                                     default 128 */
    /* Replication (docs/REPLICATION.md). replica_id 0 = a single node. */
    uint32_t replica_id;          /* 1..255: this replica's id in --peers */
    const char *replica_dir;      /* Raft log + snapshots; NULL =
                                     ./kvmux-replica-ID; borrowed until
                                     kvmux_server_new returns */
    const char *peers;            /* "ID=RHOST:RPORT/CHOST:CPORT,..." (all
                                     members incl. self); borrowed */
    uint32_t bootstrap;           /* 1: first start of a new group */
    uint32_t election_timeout_ms; /* default 500 */
    uint32_t heartbeat_timeout_ms;/* default 50 */
    uint32_t snapshot_threshold;  /* entries between snapshots; default 1024 */
    uint32_t replica_disk_timeout_ms; /* a Raft log or snapshot write pending
                                     this long ends the process (exit 74,
                                     REPLICATION.md); default 10000 */
    uint32_t read_mode;           /* KVMUX_READ_LEASE (default) or
                                     KVMUX_READ_BARRIER: how the leader
                                     serves linearizable reads */
    uint32_t session_timeout_ms;  /* exactly-once sessions idle this long are
                                     forgotten; default 3600000 (1 h) */
    uint32_t max_sessions;        /* sessions remembered; default 4096 */
    uint32_t session_window;      /* replies kept per session (W); default
                                     2048, >= 2 x max_outstanding */
    uint32_t cluster_group;       /* 1..65535: this group's id in the
                                     cluster's slot map (docs/CLUSTER.md);
                                     0 = not a cluster node. Needs
                                     replica_id. */
    uint32_t cluster_map_group;   /* 1: this group is the cluster's map
                                     group (docs/CLUSTER.md "The map
                                     group"): it holds the authoritative
                                     slot map, CAS-updated, and serves no
                                     keys. Needs replica_id; excludes
                                     cluster_group. Default 0. */
    const char *cluster_map;      /* a data group's map group, as client
                                     endpoints "host:port,..." (<= 64): the
                                     leader watches it and installs each
                                     newer map through its own log. NULL:
                                     none (maps are pushed). Needs
                                     cluster_group. Copied. */
    uint32_t migrate_thread;      /* 1 (default): with cluster_map, the
                                     leader runs the migrate thread that
                                     moves the slot ranges the map group's
                                     table gives it (docs/MIGRATION.md);
                                     0: migrations naming this group stay
                                     open (tests that drive them by hand) */
    uint32_t migrate_stall_timeout_ms; /* default 60000, 1000..3600000: the
                                     migrate thread asks the map group to
                                     ABORT a copy with no import answered
                                     OK for this long before the fence
                                     (docs/MIGRATION.md 8.2) */
    uint32_t migrate_fence_timeout_ms; /* default 5000, 500..60000: ... and a
                                     migration whose COMMIT is not answered
                                     OK this long after the fence's apply
                                     (or after a new leader found it
                                     fenced) */
    /* TLS to the map group (docs/CLUSTER.md "TLS to the map group"): the
     * watcher's libkvmux connection verifies the map group's certificates
     * against cluster_map_tls_ca (default tls_ca, else peer_tls_ca) and
     * presents cluster_map_tls_cert/key (default tls_cert/tls_key; none is
     * fine unless the map group requires client certificates). Needs
     * cluster_map. Copied. */
    uint32_t cluster_map_tls;     /* 1: TLS to the map group; default 0 */
    const char *cluster_map_tls_ca;
    const char *cluster_map_tls_cert;
    const char *cluster_map_tls_key;
    const char *cluster_map_tls_server_name; /* default: each endpoint's
                                                host (the first one's) */
    /* Peer TLS (docs/REPLICATION.md "Peer security"): mutual TLS 1.3 on
     * the Raft port. The three paths default to tls_cert, tls_key, tls_ca;
     * all three are required when peer_tls is 1. Borrowed until
     * kvmux_server_new returns. */
    uint32_t peer_tls;            /* 1: TLS between replicas; default 0 */
    const char *peer_tls_cert;
    const char *peer_tls_key;
    const char *peer_tls_ca;      /* the group CA */
    uint32_t peer_tls_handshake_timeout_ms; /* default 2000 */
    const char *config_file;      /* --config (command line only) */
    uint32_t check_config;        /* --check-config: validate and exit */
    char *file_buf_;              /* owned: the config file's text, which
                                     string options from the file point
                                     into; kvmux_server_config_deinit */
} kvmux_server_config;

/* Fill c with the defaults above. Thread-safe: yes. */
void kvmux_server_config_init(kvmux_server_config *c);

/* Free what c owns (the config file's text; its strings dangle after).
 * Thread-safe: yes. */
void kvmux_server_config_deinit(kvmux_server_config *c);

/* Check every field and the cross-limits (a frame must be able to hold the
 * largest v1 request: header + extras + max key + v1 value limit, and the
 * first frame of a fragmented v2 request; --fragment-size within the frame;
 * --max-upload-buffer >= --max-value). Returns 0, or
 * -1 with a one-line message naming the option in err[0..errlen).
 * Thread-safe: yes. */
int kvmux_server_config_validate(const kvmux_server_config *c, char *err,
                                 size_t errlen);

/* Counters, summed over loop threads at the time of the call (each counter
 * is exact; the set is not a snapshot). */
/* Slots of kvmux_server_stats.wire_errors: every ERROR code this server
 * can send (up to 16, AUTH). */
#define KVMUX_STATS_ERR_SLOTS 17

typedef struct kvmux_server_stats {
    uint64_t connections_accepted;
    uint64_t connections_current;
    uint64_t connections_rejected;    /* over max_connections */
    uint64_t requests[KVMUX_OP_MAX + 1]; /* by opcode; [0] = unknown opcodes */
    uint64_t pings;
    uint64_t busy;                    /* requests refused for lack of credit */
    uint64_t protocol_errors;         /* connections closed with an ERROR */
    uint64_t handshake_timeouts;
    uint64_t slow_reader_disconnects;
    uint64_t waits_parked;
    uint64_t waits_fired;             /* parked WAITs answered by a write */
    uint64_t waits_timed_out;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t idle_timeouts;           /* closed by --idle-timeout */
    uint64_t write_timeouts;          /* closed by --write-timeout */
    uint64_t floods;                  /* closed by a PING/CANCEL rate cap */
    uint64_t cancels;                 /* CANCEL frames received (v2) */
    uint64_t goaways;                 /* GOAWAY frames sent (v2) */
    uint64_t uploads;                 /* fragmented requests received (v2) */
    uint64_t streams;                 /* fragmented responses started (v2) */
    uint64_t deadline_expired;        /* requests answered TIMEOUT by DEADLINE */
    uint64_t keys;                    /* from the store */
    uint64_t key_bytes;
    uint64_t expired_keys;            /* lazy + active */
    uint64_t expired_keys_active;     /* by the active cycle */
    uint64_t evicted_keys;            /* by --maxmemory allkeys-lru */
    uint64_t used_memory;             /* accounted bytes */
    uint64_t maxmemory;
    uint64_t oom_refused;             /* writes refused over maxmemory */
    /* Append-only log (all 0 without --aof). */
    int aof_enabled;
    int aof_failed;                   /* writes are being refused */
    int aof_rewriting;
    uint64_t aof_size;                /* bytes in the current file */
    uint64_t aof_pending;             /* bytes appended, not yet durable */
    uint64_t aof_fsyncs;
    uint64_t aof_writes;              /* write batches (group commits) */
    uint64_t aof_rewrites;
    uint64_t aof_rewrite_failures;
    uint64_t aof_refused;             /* writes refused after a log failure */
    uint64_t writes_held;             /* acks that waited for an fsync */
    uint64_t auth_failures;           /* HELLOs refused with ERROR AUTH */
    uint64_t tls_handshake_failures;  /* TLS handshakes that failed (bad
                                         certificate, plaintext client, ...) */
    uint64_t tls_errors;              /* TLS errors on open connections */
    uint64_t cluster_try_again;       /* keyed requests a cluster node could
                                         not serve yet (no map): TRY_AGAIN,
                                         or BUSY on v1/v2 */
    uint64_t cluster_try_again_migrating; /* of those, refused because an
                                         outgoing migration fenced the slot
                                         (docs/MIGRATION.md 5) */
    uint64_t cluster_wrong_shard;     /* keyed requests for a slot another
                                         group serves (or none): WRONG_SHARD,
                                         or SHUTTING_DOWN on v1/v2 */
    /* RESPONSE messages sent, by status (a fragmented one counts once). */
    uint64_t responses[KVMUX_STATUS_MAX + 1];
    /* ERROR frames sent, by wire error code ([0]: codes out of range). */
    uint64_t wire_errors[KVMUX_STATS_ERR_SLOTS];
    uint64_t uptime_ms;               /* since kvmux_server_new */
} kvmux_server_stats;

typedef struct kvmux_server kvmux_server;

/* Validate c, create the store, the loops and the listening socket (bound
 * and listening when this returns, so kvmux_server_port is the real port).
 * On success *out owns the server; free with kvmux_server_free. On error
 * returns -1 with a message in err and *out untouched. Thread-safe: yes. */
int kvmux_server_new(kvmux_server **out, const kvmux_server_config *c,
                     char *err, size_t errlen);

/* The bound port (the real one when the config said 0) and address text
 * ("127.0.0.1", "::1"). Thread-safe: yes. */
uint16_t kvmux_server_port(const kvmux_server *s);
const char *kvmux_server_address(const kvmux_server *s);

/* Serve until kvmux_server_stop, then shut down gracefully: stop accepting
 * and reading, give parked WAITs shutdown_timeout_ms, answer the rest with
 * SHUTTING_DOWN, flush (bounded by close_linger_ms), close everything.
 * Runs loop 0 on the calling thread and threads-1 more threads. Returns 0,
 * or -1 if a loop thread could not be started. Call once. */
int kvmux_server_run(kvmux_server *s);

/* Ask a running (or about to run) server to shut down. Async-signal-safe
 * (an atomic store and write(2) to eventfds) and thread-safe; idempotent. */
void kvmux_server_stop(kvmux_server *s);

/* Reload (SIGHUP). kvmux_server_request_reload sets a flag and wakes
 * loop 0 (async-signal-safe, thread-safe); loop 0 then calls the hook set
 * with kvmux_server_set_reload_hook (before run), on its own thread,
 * between iterations. The hook typically re-reads the configuration and
 * calls kvmux_server_apply_runtime. */
typedef void (*kvmux_server_reload_fn)(kvmux_server *s, void *user_data);
void kvmux_server_set_reload_hook(kvmux_server *s, kvmux_server_reload_fn fn,
                                  void *user_data);
void kvmux_server_request_reload(kvmux_server *s);

/* Apply what can change at run time from c (already validated): the
 * --requirepass token (or --requirepass-file, read now), the TLS
 * certificate, key and CA (files read again now; only if TLS is on: it
 * cannot be switched on or off at run time), --maxmemory and its policy,
 * --slowlog-threshold-us and --slowlog-max-len, --busy-poll (at once),
 * and the per-connection limits --handshake-timeout, --idle-timeout,
 * --write-timeout, --close-linger, --max-wait, --max-ping-rate,
 * --max-cancel-rate and --max-upload-buffer (for connections accepted
 * from then on: an open connection keeps the limits it started with).
 * Every loop picks the new values up at its next iteration; open
 * connections keep going (a TLS connection keeps the certificate it was
 * made with). --max-upload-buffer below the running --max-value (which
 * cannot change) is refused. All or nothing:
 * returns 0, or -1 with a message in err and nothing changed. Call from
 * the reload hook (loop 0) or before kvmux_server_run. */
int kvmux_server_apply_runtime(kvmux_server *s, const kvmux_server_config *c, char *err,
                               size_t errlen);

/* The metrics listener's port (0 without --metrics-addr). */
uint16_t kvmux_server_metrics_port(const kvmux_server *s);

/* Fill st. Thread-safe: yes, also while running. */
void kvmux_server_get_stats(kvmux_server *s, kvmux_server_stats *st);

/* Free a server that is not running (never started, or run returned).
 * s may be NULL. */
void kvmux_server_free(kvmux_server *s);

#endif
