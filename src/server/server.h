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

#define KVMUXD_VERSION "0.1.0"

/* Every limit of the server. Fill with kvmux_server_config_init, change
 * fields, check with kvmux_server_config_validate. */
typedef struct kvmux_server_config {
    const char *bind;             /* IPv4/IPv6 literal; default "127.0.0.1";
                                     borrowed until kvmux_server_new returns */
    uint16_t port;                /* 0 = ephemeral; default 7878 */
    uint32_t threads;             /* event-loop threads; default 1 */
    uint32_t max_connections;     /* default 10000 */
    uint32_t max_frame;           /* bytes incl. header; default 2 MiB */
    uint32_t max_key;             /* default 4096, <= 65535 */
    uint32_t max_value;           /* default 1 MiB */
    uint32_t max_outstanding;     /* credits per connection; default 1024 */
    uint64_t max_output_buffer;   /* bytes queued per connection before it is
                                     dropped as a slow reader; default 64 MiB */
    uint32_t handshake_timeout_ms;/* default 5000 */
    uint32_t max_wait_ms;         /* cap on WAIT timeouts; default 3600000 */
    uint32_t shutdown_timeout_ms; /* grace for parked WAITs; default 5000 */
    uint32_t close_linger_ms;     /* bound on flushing an ERROR / final
                                     responses before close; default 1000 */
    uint32_t store_shards;        /* power of two; default 256 */
    const char *name;             /* server name in HELLO_ACK; default
                                     "kvmuxd/<version>"; borrowed */
} kvmux_server_config;

/* Fill c with the defaults above. Thread-safe: yes. */
void kvmux_server_config_init(kvmux_server_config *c);

/* Check every field and the cross-limits (a frame must be able to hold the
 * largest request: header + extras + max key + max value). Returns 0, or
 * -1 with a one-line message naming the option in err[0..errlen).
 * Thread-safe: yes. */
int kvmux_server_config_validate(const kvmux_server_config *c, char *err,
                                 size_t errlen);

/* Counters, summed over loop threads at the time of the call (each counter
 * is exact; the set is not a snapshot). */
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
    uint64_t keys;                    /* from the store */
    uint64_t key_bytes;
    uint64_t expired_keys;
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

/* Fill st. Thread-safe: yes, also while running. */
void kvmux_server_get_stats(kvmux_server *s, kvmux_server_stats *st);

/* Free a server that is not running (never started, or run returned).
 * s may be NULL. */
void kvmux_server_free(kvmux_server *s);

#endif
