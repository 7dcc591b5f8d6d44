/* libkvmux: the multiplexed kvmux client.
 *
 * One kvmux_client owns one TCP connection to kvmuxd. Any number of threads
 * may issue calls on it at the same time: every call becomes a REQUEST frame
 * with its own request_id, and a reader thread hands each RESPONSE to exactly
 * the caller whose id it carries, in whatever order the server answers.
 *
 * Conventions
 * - Functions return 0 on success or a negative KVMUX_E* code; never errno.
 *   kvmux_strerror() names every code. Codes <= KVMUX_E_FATAL mean the
 *   connection is gone: every later call fails fast with the same code; the
 *   only thing left to do with the handle is kvmux_close(). Exception: with
 *   kvmux_options.reconnect on, a lost connection is replaced
 *   automatically; the call that saw the loss got KVMUX_ECLOSED, and later
 *   calls wait for (or fail fast until) the next connection.
 * - timeout_ms: the whole call (queueing, waiting for a credit, the round
 *   trip). KVMUX_TIMEOUT_DEFAULT (-1) takes the client's default
 *   (kvmux_options.request_timeout_ms). 0 is not "forever": there is no
 *   infinite wait anywhere in this API.
 * - Ownership: buffers passed in are borrowed for the duration of the call
 *   only. Values returned to the caller are heap copies the caller owns and
 *   frees with kvmux_value_free() / kvmux_reply_free().
 *
 * Build and link with pkg-config: cc app.c $(pkg-config --cflags --libs kvmux)
 * (or, with CMake, find_package(kvmux) and target_link_libraries(app
 * kvmux::kvmux)). Static linking: pkg-config --static --libs kvmux.
 *
 * ABI: everything declared here is the library's public interface and
 * nothing else is exported from libkvmux.so. docs/ABI.md says what may
 * change within one SONAME (libkvmux.so.0) and how kvmux_options grows.
 */
#ifndef KVMUX_H
#define KVMUX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header (the library's runtime version:
 * kvmux_version()). The build checks that it matches the project's
 * version in CMakeLists.txt. */
#define KVMUX_VERSION_MAJOR 0
#define KVMUX_VERSION_MINOR 2
#define KVMUX_VERSION_PATCH 0
#define KVMUX_VERSION_STRING "0.2.0"
/* One number for comparisons: 0x00MMmmpp (0.2.0 -> 0x000200). */
#define KVMUX_VERSION_NUM \
    ((KVMUX_VERSION_MAJOR << 16) | (KVMUX_VERSION_MINOR << 8) | KVMUX_VERSION_PATCH)

/* Every function declared from here to the matching pop is exported from
 * libkvmux.so; the library is compiled with -fvisibility=hidden, so
 * nothing else is (the protocol core's kvmux_frame_* functions, the
 * client's kvmux__ internals). */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility push(default)
#endif

/* The runtime library's version as KVMUX_VERSION_NUM (0x00MMmmpp) and as
 * a static string ("0.2.0"). A program may compare them with the header's
 * macros to detect running against an older library than it was built
 * with. Thread-safe: yes. */
unsigned int kvmux_version(void);
const char *kvmux_version_string(void);

/* Error codes. */
typedef enum kvmux_error {
    KVMUX_OK = 0,
    /* Request-level: the connection stays usable. */
    KVMUX_ENOTFOUND = -1,   /* key does not exist */
    KVMUX_EVERSION = -2,    /* CAS: the key's version is not the expected one */
    KVMUX_ETOOBIG = -3,     /* key or value over the (negotiated) limit */
    KVMUX_EBADREQ = -4,     /* server rejected the request as invalid */
    KVMUX_EBUSY = -5,       /* server had no credit left: not processed */
    KVMUX_ETIMEDOUT = -6,   /* call timed out, or a WAIT expired */
    KVMUX_ESERVER = -7,     /* server-side internal error */
    KVMUX_ENOTINT = -8,     /* INCR on a value that is not an integer */
    KVMUX_EOVERFLOW = -9,   /* INCR would overflow a signed 64-bit integer */
    KVMUX_EAGAIN = -10,     /* try-variant: queue full or no credit right now */
    KVMUX_EINVAL = -11,     /* bad argument (NULL key, empty key, ...) */
    KVMUX_ENOMEM = -12,     /* out of memory (the library never aborts) */
    KVMUX_EUNSUPPORTED = -13, /* server does not know the operation */
    KVMUX_ESHUTDOWN = -14,  /* server is shutting down (or draining after a
                               GOAWAY): not processed, safe to retry */
    KVMUX_ECANCELED = -15,  /* the request was cancelled (protocol v2) */
    KVMUX_EOOM = -16,       /* the server is out of memory (over its
                               --maxmemory, or an allocation failed): the
                               write was not processed; reads and DEL still
                               work. Protocol v2 only (a v1 connection gets
                               KVMUX_EBUSY / KVMUX_ESERVER instead). Not
                               KVMUX_ENOMEM, which is this library's own
                               allocation failing. */
    /* Protocol v3 (a replicated kvmuxd group, kvmux_options.endpoints). */
    KVMUX_ENOTLEADER = -17, /* no leader reachable: the request followed
                               16 NOT_LEADER redirects to replicas that
                               redirected it again (a loop) and was never
                               processed; or a client without endpoints
                               sent it to a follower. An election (answers
                               naming no leader, or a dead one) is waited
                               out until the request's deadline (then
                               KVMUX_ETIMEDOUT). */
    KVMUX_EUNKNOWN = -18,   /* a write's outcome is unknown: it was sent and
                               the connection (or the leader's leadership)
                               was lost before its answer; it may or may
                               not have been applied. Read it back to know. */
    /* Sharded cluster (protocol v3, docs/PROTOCOL.md section 18). */
    KVMUX_EWRONGSHARD = -22,/* another group serves the key's slot (a handle
                               not in cluster mode got WRONG_SHARD: the
                               reply's value, if asked for, holds the
                               WRONG_SHARD value, docs/PROTOCOL.md 18.3),
                               or the slot is not assigned to any group */
    KVMUX_EREDIRECTS = -23, /* cluster mode: too many redirects for one
                               request */
    KVMUX_ETRYAGAIN = -24,  /* the slot stayed unavailable (no slot map yet,
                               or in hand-over) until the deadline or the
                               retry budget ran out; not processed */
    KVMUX_ECLUSTERMAP = -25,/* cluster mode: kvmux_connect could not load
                               a slot map from any seed within
                               connect_timeout_ms (none reachable, none a
                               cluster node, none with a map installed);
                               the last seed's reason:
                               kvmux_connection_error(NULL, ...) */
    /* Fatal: the connection is gone. */
    KVMUX_E_FATAL = -100,
    KVMUX_ECLOSED = -101,   /* connection closed (EOF, reset, kvmux_close) */
    KVMUX_EPROTO = -102,    /* protocol error (ours or reported by the server) */
    KVMUX_ECONNECT = -103,  /* could not connect / resolve */
    KVMUX_ENOVERSION = -104,/* no protocol version in common with the server */
    KVMUX_EIO = -105,       /* socket error other than a clean close */
    KVMUX_EKEEPALIVE = -106,/* the server sent nothing within the keepalive
                               timeout (kvmux_options.keepalive_*) */
    KVMUX_EAUTH = -107,     /* the server refused the HELLO's auth token
                               (kvmux_options.auth_token missing or wrong);
                               the server's message: kvmux_connection_error */
    KVMUX_ETLS = -108       /* TLS failed: handshake (certificate verify
                               failed, hostname mismatch, server not
                               speaking TLS, ...) or a bad record later;
                               the OpenSSL reason: kvmux_connection_error */
} kvmux_error;

/* Human-readable name for any code above ("connection closed", ...). Never
 * NULL; the string is static. Thread-safe: yes. */
const char *kvmux_strerror(int err);

/* Nonzero if err means the connection is gone. Thread-safe: yes. */
int kvmux_is_fatal(int err);

#define KVMUX_TIMEOUT_DEFAULT (-1)

typedef struct kvmux_client kvmux_client; /* opaque */

/* Connection options. Always call kvmux_options_init() first, then change
 * fields: new fields get defaults without breaking callers.
 *
 * ABI (docs/ABI.md): fields are only ever added at the end. kvmux_options_init
 * is a macro that records sizeof(kvmux_options) as this header knows it in
 * struct_size; kvmux_connect and kvmux_async_connect read only that many
 * bytes and give every later field its default. So a program built against
 * an older kvmux.h keeps working with a newer libkvmux.so.0, and a program
 * rebuilt against a newer header needs no source change. */
typedef struct kvmux_options {
    uint32_t struct_size;        /* set by kvmux_options_init; do not change.
                                    0 (options not initialised) or larger
                                    than the library knows: KVMUX_EINVAL */
    int connect_timeout_ms;      /* TCP connect + handshake; default 5000 */
    int request_timeout_ms;      /* KVMUX_TIMEOUT_DEFAULT; default 5000 */
    uint32_t queue_limit;        /* max request frames encoded and not yet
                                    written to the socket; default 4096.
                                    (Callers waiting for a credit hold no
                                    library memory: they are bounded by the
                                    caller's own thread count.) */
    size_t queue_bytes_limit;    /* max bytes encoded and not yet written;
                                    default 8 MiB (a single request larger
                                    than this is still admitted alone) */
    uint32_t max_outstanding;    /* cap on requests in flight; 0 = the
                                    server's credits (default 0) */
    uint32_t max_frame_size;     /* largest frame we accept; default 2 MiB */
    const char *client_name;     /* sent in HELLO; may be NULL */
    uint32_t first_request_id;   /* testing: start ids near a wrap point; 0 =
                                    default */
    /* Added with protocol v2 (kvmux_options_init sets the defaults). */
    uint32_t max_value_size;     /* largest value we accept in a reply (GET,
                                    WAIT), advertised in HELLO; on v2 larger
                                    values arrive fragmented; default 64 MiB,
                                    at most 512 MiB. A v1 connection is
                                    bounded by max_frame_size anyway. */
    uint8_t max_protocol_version;/* highest protocol version proposed, 1..3;
                                    default 3 (a single-node server answers
                                    2; 1 forces v1, e.g. for tests) */
    int keepalive_interval_ms;   /* PING the server after this long without
                                    receiving anything; 0 = off (default) */
    int keepalive_timeout_ms;    /* after such a PING, nothing at all received
                                    for this long fails the connection with
                                    KVMUX_EKEEPALIVE (every pending call gets
                                    it); 0 = never (PINGs only). Needs
                                    keepalive_interval_ms > 0. Default 0. */
    /* Automatic reconnect (threaded and event-loop clients). When on, a
     * lost connection (EOF, reset, keepalive failure, end of a GOAWAY
     * drain) is not terminal: the client (its reader thread, or in
     * event-loop mode the loop's timer) reconnects to the same host:port
     * with exponential backoff and full
     * jitter (attempt n waits a uniform random time in
     * [0, min(max_backoff, min_backoff * 2^n)]), redoes the handshake and
     * adopts the new server's settings and credits. Requests in flight
     * when the connection died fail with KVMUX_ECLOSED and are never
     * resent, except GET and PING when retry_reads is on (WAIT is not
     * retried). Async requests still in the backlog (never sent) are sent
     * on the new connection. While disconnected (or after a GOAWAY), new
     * calls wait for the next connection up to their timeout
     * (reconnect_wait = 1) or fail at once with KVMUX_ECLOSED
     * (reconnect_wait = 0; kvmux_try_call always fails fast); async
     * submits go to the bounded backlog (KVMUX_EAGAIN when full). A read
     * resent under retry_reads goes through the same admission, so with
     * reconnect_wait = 0 it fails with KVMUX_ECLOSED after all. Each
     * attempt of a threaded client connects to the first address host
     * resolves to (resolved again per attempt); an event-loop client
     * connects to the address kvmux_async_connect resolved, so the loop
     * thread never waits for DNS (see kvmux_async_connect).
     * kvmux_is_fatal(KVMUX_ECLOSED) stays true
     * for the request, but the handle remains usable; kvmux_connection_error
     * reports the last loss while disconnected (and while a reconnect
     * attempt is under way) and 0 once reconnected. */
    int reconnect;               /* 0 off (default), 1 on */
    int reconnect_min_backoff_ms;/* default 50 */
    int reconnect_max_backoff_ms;/* default 5000 (cap on the backoff) */
    int reconnect_wait;          /* 1 (default): calls wait for the next
                                    connection; 0: fail fast */
    int retry_reads;             /* 1: resend GET/PING cut off by a lost
                                    connection (synchronous calls only);
                                    default 0 */
    /* Added with auth (docs/PROTOCOL.md section 8.1). */
    const char *auth_token;      /* sent in HELLO to a server started with
                                    --requirepass; NULL (default) = none.
                                    1..64 bytes, else kvmux_connect returns
                                    KVMUX_EINVAL. Copied at connect (also
                                    used by automatic reconnects). A refused
                                    token fails the connect with KVMUX_EAUTH. */
    /* TLS (docs/OPERATIONS.md "TLS"), threaded (kvmux_connect) and
     * event-loop (kvmux_async_connect) clients. Needs a
     * libkvmux built with OpenSSL (KVMUX_WITH_TLS); otherwise tls = 1
     * fails the connect with KVMUX_EINVAL, "built without TLS". TLS 1.2 is
     * the floor. The files are read at connect (and kept loaded for
     * automatic reconnects, which redo the TLS handshake); the strings are
     * borrowed for the duration of kvmux_connect / kvmux_async_connect
     * only. A failed handshake (or certificate check) fails the connect
     * with KVMUX_ETLS and the OpenSSL reason in the message (event-loop
     * mode: the status callback gets KVMUX_ETLS, the requests waiting for
     * the connection too, and kvmux_connection_error(c, ...) has the
     * reason; the handshake never blocks the loop). */
    int tls;                     /* 0 off (default), 1 on */
    const char *tls_ca_file;     /* PEM CA bundle the server's certificate
                                    must chain to; NULL (default) with
                                    tls_ca_dir NULL = the system's CAs */
    const char *tls_ca_dir;      /* OpenSSL hashed CA directory; NULL */
    const char *tls_server_name; /* SNI and the name (or IP) the server's
                                    certificate must match; NULL (default) =
                                    the host given to kvmux_connect */
    const char *tls_cert_file;   /* client certificate chain (PEM), for a
                                    server started with --tls-ca; NULL */
    const char *tls_key_file;    /* its private key (PEM); required with
                                    tls_cert_file */
    int tls_verify;              /* 1 (default): verify the chain and the
                                    name; 0: accept any certificate (the
                                    traffic is encrypted but the server is
                                    not authenticated: testing only) */
    /* Busy polling (threaded clients, plaintext only; ignored with TLS and
     * in event-loop mode, where the application's loop decides how to
     * wait). After bytes arrive, the reader thread keeps polling the
     * socket without blocking for up to busy_poll_us microseconds before
     * it sleeps in recv(). A reply that arrives within that window then
     * costs no wake-up of the reader: on virtual machines whose idle
     * vCPUs halt, that wake-up dominates a round trip (docs/BENCHMARKS.md
     * "Busy polling"). Costs up to one core while replies keep coming;
     * nothing when idle. Pays off with a server that busy-polls too and
     * a CPU to spare for the reader; the spin yields to the process's
     * other runnable threads, but on a machine with fewer CPUs than busy
     * threads it can still lose (measured on 2 vCPUs: 64 blocking
     * threads gain ~1.4x, async callbacks 1.1x over a busy-polling server
     * alone, serial calls about even). 0 = off (default), at most
     * 1000000. */
    uint32_t busy_poll_us;
    /* Failover across a replicated group (protocol v3; docs/DESIGN.md
     * "Client failover"). endpoints: a comma-separated list
     * "host:port,host:port,..." (IPv6 as "[addr]:port"; at most 64
     * entries). When set (non-NULL) it overrides the host and port given
     * to kvmux_connect / kvmux_async_connect (they may be NULL / 0), the
     * string is borrowed for the duration of the connect only, and
     * automatic reconnect is on whatever `reconnect` says. The client
     * connects to the endpoints in order; a NOT_LEADER answer naming the
     * leader makes it finish what is in flight on that connection and
     * reconnect to the leader, resending the redirected request (at most
     * 16 redirects per request, then KVMUX_ENOTLEADER); a NOT_LEADER
     * without an address (not counted: the request waits out an election
     * within its deadline), a failed attempt or a lost connection moves to
     * the next endpoint after a backoff capped at
     * min(reconnect_max_backoff_ms, 400 ms). On a lost connection reads
     * (GET, EXISTS, TTL, SCAN, STATS, SLOWLOG, CLIENT_LIST, PING) and
     * WAITs in flight are resent, requests never sent (queued, or still
     * in the outbound queue) are sent, and a write that had left
     * completes with KVMUX_EUNKNOWN (unless resend_writes). Every
     * request still completes exactly once, within its own deadline, and
     * can be cancelled as before. Event-loop clients resolve the endpoints once, in
     * kvmux_async_connect, and follow a redirect only to a numeric
     * address or to one spelled as in the list (else they try the next
     * endpoint): the loop never waits for DNS. With tls, every replica's
     * certificate is checked against tls_server_name, or else the first
     * endpoint's host: give the group's certificates a common name (or
     * set tls_server_name). NULL (default): off. */
    const char *endpoints;
    int resend_writes;           /* endpoints mode: 1 resends a write cut by
                                    a lost connection to the new leader
                                    (it may then be applied twice: only
                                    for idempotent writes); 0 (default):
                                    it completes with KVMUX_EUNKNOWN */
    /* Exactly-once sessions (endpoints mode, protocol v3; docs/PROTOCOL.md
     * section 17.1). By default the handle draws a random 64-bit session
     * id (getrandom) and numbers its writes (SET, DEL, INCR, CAS, EXPIRE,
     * PERSIST); the group remembers the answers of recent ones. A write
     * whose connection is cut, or that is answered OUTCOME_UNKNOWN, is
     * then resent with the same number to the new leader, within its
     * deadline: applied at most once, and the resend gets the original
     * answer -- so it completes with its real result, never
     * KVMUX_EUNKNOWN, unless the group cannot tell (the session expired
     * or was evicted server-side while the write was being resent, so 3
     * resends in a row were answered OUTCOME_UNKNOWN): then
     * KVMUX_EUNKNOWN, as without sessions.
     * resend_writes then only matters for writes without a session (no_sessions
     * set, or a server that negotiated v1/v2). no_sessions = 1: off, writes
     * cut off complete with KVMUX_EUNKNOWN (or are resent blindly with
     * resend_writes) as before. 0 (default): on. */
    int no_sessions;
    /* Added with stale reads (protocol v3; docs/REPLICATION.md "Stale
     * reads"). 1: reads (GET, EXISTS, TTL, WAIT, SCAN) carry the STALE
     * flag, so any replica, a follower included, answers them from what it
     * has applied, without asking the leader; min_version is the highest
     * version this handle's own writes got back (SET, CAS, INCR, EXPIRE,
     * PERSIST), so a read never sees state older than the handle's own
     * acknowledged writes (read-your-writes). Other clients' writes may
     * be missing by a follower's lag. On a v1/v2 connection it has no
     * effect. 0 (default): reads are linearizable (the leader). */
    int stale_reads;
    /* Added with the cluster client (docs/CLUSTER.md "The cluster
     * client"; kvmux_connect and kvmux_async_connect). cluster = 1: the
     * handle is one client over a sharded cluster. The seeds are `endpoints` (or host:port): any
     * node(s) of any group. kvmux_connect asks the seeds, in order, for
     * their slot map (CLUSTER map) within connect_timeout_ms in all, and
     * fails with KVMUX_ECLUSTERMAP if none answers one. Every keyed
     * request is then routed by its key's slot (kvmux_slot) to the group
     * the map names, through one endpoints-mode client per group (made on
     * the first request routed there, with these same options minus
     * cluster: sessions, stale reads, TLS, auth and NOT_LEADER following
     * apply per group). A WRONG_SHARD answer is followed at once to the
     * group it names, and a newer epoch in it triggers one map refresh
     * (one CLUSTER map request in flight, at most one per epoch seen);
     * TRY_AGAIN is retried after a backoff (2 ms doubling to 100 ms,
     * jittered) within the request's deadline, then KVMUX_ETRYAGAIN. A
     * request keeps its one deadline across hops, completes exactly
     * once, and can be cancelled wherever it is. Keyless requests (PING,
     * STATS, SCAN, SLOWLOG, CLIENT_LIST, GROUP, CLUSTER) go to the seed's
     * group; kvmux_cluster_group_call targets any group. A WRONG_SHARD
     * from a node whose map is older than one already seen (a map being
     * pushed group by group) is not followed: the same group is asked
     * again after the TRY_AGAIN backoff (kvmux_cluster_info.stale).
     * Event-loop mode (kvmux_async_connect): the map is loaded inside
     * kvmux_async_connect (blocking, as kvmux_connect does, up to
     * connect_timeout_ms), and kvmux_async_fd is then ONE descriptor for
     * the whole cluster (an epoll set of the groups' sockets, watched for
     * reading only), with one timer; a group's client is made on the loop
     * thread without blocking, over the group's numeric addresses only
     * (a name is never resolved on the loop: a group listed only by name
     * fails its requests with KVMUX_ECONNECT). A group that cannot be
     * reached fails only its own requests, each with its code (the fatal
     * KVMUX_ECONNECT or KVMUX_ECLOSED included): a cluster handle is never
     * "gone" but by kvmux_close. kvmux_get_server_info reports the seed's
     * settings. 0 (default): off. */
    int cluster;
    uint32_t cluster_max_redirects; /* WRONG_SHARD redirects one request
                                    follows, then KVMUX_EREDIRECTS;
                                    1..64, default 5 */
} kvmux_options;

/* Fill o with defaults and set o->struct_size. Thread-safe: yes.
 * kvmux_options_init(o) is a macro over kvmux_options_init_sized(o,
 * sizeof(kvmux_options)): the library writes only the first `size` bytes,
 * so it never writes past a struct compiled against an older header.
 * Bindings that cannot use the macro call kvmux_options_init_sized with
 * their struct's size. o NULL or size < 4: nothing happens. */
void kvmux_options_init_sized(kvmux_options *o, size_t size);
#define kvmux_options_init(o) kvmux_options_init_sized((o), sizeof(kvmux_options))

/* Connect to host:port (a name or a numeric IPv4/IPv6 address), perform the
 * HELLO handshake, and start the reader and writer threads.
 * opts may be NULL for defaults. On success *out owns the client; free it
 * with kvmux_close(). On error *out is untouched.
 * With opts->endpoints set, host and port are ignored (NULL and 0 are
 * fine): the endpoints are tried in order, each within connect_timeout_ms,
 * and the first that completes the handshake is used (a follower's first
 * NOT_LEADER then leads to the leader); the code of the last failure is
 * returned if none does (KVMUX_EAUTH at once: the token is the group's).
 * With opts->cluster = 1, host and port (or endpoints) are seeds: see
 * kvmux_options.cluster; KVMUX_ECLUSTERMAP if no seed answers a map.
 * Returns 0, KVMUX_EINVAL, KVMUX_ECONNECT, KVMUX_ETIMEDOUT, KVMUX_ENOVERSION,
 * KVMUX_EPROTO, KVMUX_EAUTH, KVMUX_ETLS (options.tls), KVMUX_ENOMEM,
 * KVMUX_ECLUSTERMAP (cluster mode).
 * Thread-safe: yes. */
int kvmux_connect(kvmux_client **out, const char *host, uint16_t port,
                  const kvmux_options *opts);

/* Close the connection and free the client. Every pending and queued call
 * returns KVMUX_ECLOSED at once; kvmux_close waits (boundedly: the calls are
 * woken, not awaited) until those threads have left the library, then joins
 * its threads and frees everything. No call may *start* on c after
 * kvmux_close has been called. c may be NULL. Thread-safe: yes, once.
 *
 * Async requests (see "Asynchronous API" below): every callback still
 * owed runs, with KVMUX_ECLOSED, before kvmux_close returns (on the
 * client's completion thread, or in event-loop mode on the calling loop
 * thread); a callback may submit during this, and the submit fails with
 * KVMUX_ECLOSED. Every future of c is complete when kvmux_close returns
 * and stays valid until kvmux_future_free. kvmux_close may be called from
 * inside one of c's own callbacks: the close then finishes after that
 * callback returns (the handle must not be used after the call). */
void kvmux_close(kvmux_client *c);

/* The connection's terminal error (0 while it is healthy) and, if msg is
 * not NULL, a NUL-terminated description (e.g. the server's ERROR message)
 * copied into msg[0..msg_len).
 * c may be NULL: then it reports the calling thread's last failed
 * kvmux_connect (code and message, e.g. the server's refusal of the
 * handshake), since a failed connect leaves no handle to ask.
 * Thread-safe: yes. */
int kvmux_connection_error(kvmux_client *c, char *msg, size_t msg_len);

/* The settings the server granted in HELLO_ACK. Thread-safe: yes. */
typedef struct kvmux_server_info {
    uint8_t protocol_version;
    uint32_t max_frame_size;
    uint32_t max_outstanding;    /* the client's credits */
    uint32_t max_key_size;
    uint32_t max_value_size;
    char server_name[256];
} kvmux_server_info;
void kvmux_get_server_info(kvmux_client *c, kvmux_server_info *info);

/* Automatic reconnect counters (kvmux_options.reconnect): reconnect
 * attempts started and connections successfully re-made since
 * kvmux_connect. Either pointer may be NULL. Returns 0 or KVMUX_EINVAL (c
 * NULL). Thread-safe: yes. */
int kvmux_reconnect_stats(kvmux_client *c, uint64_t *attempts, uint64_t *reconnects);

/* ---- generic call ---- */

typedef enum kvmux_op {
    KVMUX_GET = 1,
    KVMUX_SET = 2,
    KVMUX_DEL = 3,
    KVMUX_INCR = 4,
    KVMUX_CAS = 5,
    KVMUX_WAIT = 6,
    KVMUX_STATS = 7, /* server counters; key = name prefix, may be empty */
    /* Key space (docs/PROTOCOL.md section 4.1; a server older than them
     * answers KVMUX_EUNSUPPORTED). */
    KVMUX_EXISTS = 8,  /* reply.version: the key's version */
    KVMUX_TTL = 9,     /* reply.version; reply.number: ms left, -1 = none */
    KVMUX_EXPIRE = 10, /* ttl_ms (1..2^53-1) from now; reply.version: new */
    KVMUX_PERSIST = 11,/* drop the TTL; reply.version: new (unchanged if
                          the key had none) */
    KVMUX_SCAN = 12,   /* cursor, count; key = prefix, may be empty;
                          reply.version: the next cursor (0 = done),
                          reply.value: the key list (kvmux_scan_next) */
    /* Introspection (docs/PROTOCOL.md section 4.2; an older server
     * answers KVMUX_EUNSUPPORTED). No key. */
    KVMUX_SLOWLOG = 13,    /* subcommand (KVMUX_SLOWLOG_GET/LEN/RESET),
                              count (GET: newest entries wanted, 0 = all);
                              reply.version: entries in the log (RESET:
                              entries dropped); reply.value (GET): text
                              lines, newest first */
    KVMUX_CLIENT_LIST = 14,/* reply.version: connections; reply.value:
                              one text line each */
    /* Replicated groups (docs/PROTOCOL.md section 17.3; protocol v3: a
     * single node or an older server answers KVMUX_EUNSUPPORTED). */
    KVMUX_GROUP = 15,      /* key = "status", "add", "remove" or
                              "transfer"; value = its ASCII arguments
                              (<= 256 bytes); reply.version: the leader's
                              id (0 = none known); reply.value: text,
                              also on failure (the server's message:
                              kvmux_reply_free it). Changes go to the
                              leader (KVMUX_ENOTLEADER elsewhere) */
    /* Sharded cluster (docs/PROTOCOL.md section 18.4; protocol v3). */
    KVMUX_CLUSTER = 16,    /* key = "slot", "map" or "setmap"; value = a
                              key, nothing, or an encoded slot map */
    KVMUX_PING = 100 /* connection-level round trip; no key */
} kvmux_op;

/* The largest ttl_ms of a SET, CAS or EXPIRE: 2^53 - 1 = 9007199254740991
 * ms (about 285,000 years; exact in a double, so every client language can
 * carry it). Every entry point that takes a SET, CAS or EXPIRE (kvmux_set,
 * kvmux_cas, kvmux_expire, kvmux_call, kvmux_try_call, kvmux_call_async*,
 * kvmux_call_future*) refuses a larger one with KVMUX_EINVAL before
 * anything is sent; a server answers it BAD_REQUEST. */
#define KVMUX_MAX_TTL_MS ((uint64_t)9007199254740991u)

/* A request. Fields not used by op are ignored. Borrowed for the call. */
typedef struct kvmux_request {
    kvmux_op op;
    const void *key;
    size_t key_len;
    const void *value;      /* SET, CAS */
    size_t value_len;
    uint64_t ttl_ms;        /* SET, CAS: 0 = no expiry; EXPIRE: 1..; at
                               most KVMUX_MAX_TTL_MS, else KVMUX_EINVAL */
    uint64_t version;       /* CAS: expected; WAIT: wait while equal */
    int64_t delta;          /* INCR */
    uint32_t wait_ms;       /* WAIT: server-side timeout */
    /* Added with SCAN (kvmux_request grows at the end only). */
    uint64_t cursor;        /* SCAN: 0 to start, then the reply's cursor */
    uint32_t count;         /* SCAN: keys wanted per reply (a hint; 0 =
                               the server's default 10, at most 1000);
                               SLOWLOG GET: entries wanted (0 = all) */
    /* Added with SLOWLOG. */
    uint32_t subcommand;    /* SLOWLOG: KVMUX_SLOWLOG_GET, _LEN, _RESET */
} kvmux_request;

/* KVMUX_SLOWLOG subcommands (the wire values). */
#define KVMUX_SLOWLOG_GET 0u
#define KVMUX_SLOWLOG_LEN 1u
#define KVMUX_SLOWLOG_RESET 2u

/* A reply. value is a heap copy owned by the caller (NULL when there is
 * none); release with kvmux_reply_free(). */
typedef struct kvmux_reply {
    uint64_t version;       /* GET/SET/CAS/INCR/WAIT/EXISTS/TTL/EXPIRE/
                               PERSIST: the key's version; CAS mismatch:
                               the current version; SCAN: the next
                               cursor (0 = the scan is complete) */
    int64_t number;         /* INCR: the new value; TTL: milliseconds
                               left (>= 1), or -1 for no expiry */
    uint8_t *value;         /* GET, WAIT; SCAN: the key list */
    size_t value_len;
} kvmux_reply;

/* Run one request and wait for its reply.
 * If the outbound queue is full or no credit is free, waits (up to the
 * timeout) for room: that is the backpressure.
 * reply may be NULL if the caller needs nothing back. reply is filled on
 * success and for KVMUX_EVERSION (current version); otherwise zeroed.
 * Returns 0 or a KVMUX_E* code (status codes map one to one: NOT_FOUND ->
 * KVMUX_ENOTFOUND, VERSION_MISMATCH -> KVMUX_EVERSION, ...).
 * A call that times out returns KVMUX_ETIMEDOUT; its id stays reserved until
 * the late reply arrives (and is then dropped), so it can never complete a
 * newer call. Thread-safe: yes. */
int kvmux_call(kvmux_client *c, const kvmux_request *req, kvmux_reply *reply,
               int timeout_ms);

/* As kvmux_call, but returns KVMUX_EAGAIN at once instead of waiting for
 * queue space or a credit. Once admitted it waits for the reply up to
 * timeout_ms. Thread-safe: yes. */
int kvmux_try_call(kvmux_client *c, const kvmux_request *req,
                   kvmux_reply *reply, int timeout_ms);

/* Free reply->value and zero it. reply may be NULL. */
void kvmux_reply_free(kvmux_reply *reply);

/* ---- convenience wrappers (all thread-safe, same return codes) ---- */

/* A value returned by GET/WAIT; one allocation, free with kvmux_value_free. */
typedef struct kvmux_value {
    uint64_t version;
    size_t len;
    uint8_t *data;          /* points inside the same allocation; NUL-terminated
                               for convenience (len excludes the NUL) */
} kvmux_value;
void kvmux_value_free(kvmux_value *v);

int kvmux_get(kvmux_client *c, const void *key, size_t key_len,
              kvmux_value **out, int timeout_ms);
/* kvmux_set and kvmux_cas: ttl_ms 0 = no expiry; above KVMUX_MAX_TTL_MS
 * (9007199254740991 ms) they return KVMUX_EINVAL and send nothing. */
int kvmux_set(kvmux_client *c, const void *key, size_t key_len,
              const void *value, size_t value_len, uint64_t ttl_ms,
              uint64_t *version_out, int timeout_ms);
int kvmux_del(kvmux_client *c, const void *key, size_t key_len, int timeout_ms);
int kvmux_incr(kvmux_client *c, const void *key, size_t key_len, int64_t delta,
               int64_t *result_out, int timeout_ms);
/* On KVMUX_EVERSION *version_out holds the key's current version. */
int kvmux_cas(kvmux_client *c, const void *key, size_t key_len,
              uint64_t expected_version, const void *value, size_t value_len,
              uint64_t ttl_ms, uint64_t *version_out, int timeout_ms);
/* Wait until key's version differs from version, or wait_ms passes
 * (KVMUX_ETIMEDOUT). On success *out holds the new value and version
 * (version 0, len 0 if the key was deleted). With KVMUX_TIMEOUT_DEFAULT the
 * call timeout is wait_ms + the client's request timeout. */
int kvmux_wait(kvmux_client *c, const void *key, size_t key_len,
               uint64_t version, uint32_t wait_ms, kvmux_value **out,
               int timeout_ms);
int kvmux_ping(kvmux_client *c, int timeout_ms);
/* Server statistics (STATS): *out receives the text "name:value\n" lines,
 * only those whose name starts with prefix (NULL or "" = all), as a
 * kvmux_value (data NUL-terminated, version 0); free with
 * kvmux_value_free. Returns 0, KVMUX_EUNSUPPORTED (server without STATS),
 * KVMUX_ETOOBIG (prefix over the key limit, or the text over the value
 * limit), or any call error. */
int kvmux_stats(kvmux_client *c, const char *prefix, kvmux_value **out, int timeout_ms);

/* ---- key space: EXISTS, TTL, EXPIRE, PERSIST, SCAN ----
 * Each works on protocol v1 and v2; a server that predates them answers
 * KVMUX_EUNSUPPORTED (the connection goes on). */

/* 0 if key exists (*version_out, may be NULL, gets its version), else
 * KVMUX_ENOTFOUND or a call error. Thread-safe: yes. */
int kvmux_exists(kvmux_client *c, const void *key, size_t key_len, uint64_t *version_out,
                 int timeout_ms);

/* The key's remaining time to live: *ttl_ms_out (may be NULL) gets the
 * milliseconds left (>= 1), or -1 if the key has no expiry. Returns 0,
 * KVMUX_ENOTFOUND, or a call error. Thread-safe: yes. */
int kvmux_ttl(kvmux_client *c, const void *key, size_t key_len, int64_t *ttl_ms_out,
              int timeout_ms);

/* Make an existing key expire ttl_ms from now (1..2^53-1; the value is
 * kept). A write: the key gets a new version (*version_out, may be NULL),
 * parked WAITs on it wake, it is logged like any write. Returns 0,
 * KVMUX_ENOTFOUND, KVMUX_EINVAL (ttl_ms above KVMUX_MAX_TTL_MS: refused
 * before anything is sent, like kvmux_set), KVMUX_EBADREQ (ttl_ms 0: the
 * server refuses it), or a call error. Thread-safe: yes. */
int kvmux_expire(kvmux_client *c, const void *key, size_t key_len, uint64_t ttl_ms,
                 uint64_t *version_out, int timeout_ms);

/* Drop an existing key's expiry. If it had one, a write as for
 * kvmux_expire (new version); if not, nothing changes and *version_out
 * is the current version. Returns 0, KVMUX_ENOTFOUND, or a call error.
 * Thread-safe: yes. */
int kvmux_persist(kvmux_client *c, const void *key, size_t key_len, uint64_t *version_out,
                  int timeout_ms);

/* One step of a SCAN: the keys, and the cursor for the next step. */
typedef struct kvmux_keys {
    uint64_t cursor;        /* pass to the next kvmux_scan; 0 = complete */
    size_t count;           /* entries in keys */
    struct kvmux_key {
        const uint8_t *data;/* NOT NUL-terminated; points into the same
                               allocation */
        size_t len;
    } *keys;
} kvmux_keys;
void kvmux_keys_free(kvmux_keys *k);

/* One SCAN step from cursor (0 to start; then the previous step's
 * cursor, until it is 0). Returns the keys starting with prefix[0..
 * prefix_len) (prefix may be NULL with prefix_len 0) from a bounded part
 * of the key space: about count keys (0 = the server's default, 10; at
 * most 1000), possibly none while the cursor is not 0 yet. The
 * guarantee (Redis's): a key present during the whole scan is returned
 * by at least one step; a key added or deleted meanwhile may or may not
 * be. *out (one allocation) is owned by the caller: kvmux_keys_free.
 * Returns 0, KVMUX_EBADREQ (a cursor this server never gave out),
 * KVMUX_ETOOBIG (the keys of one step exceed the frame size this client
 * accepts; raise kvmux_options.max_frame_size), KVMUX_EUNSUPPORTED, or a
 * call error. Thread-safe: yes. */
int kvmux_scan(kvmux_client *c, uint64_t cursor, const void *prefix, size_t prefix_len,
               uint32_t count, kvmux_keys **out, int timeout_ms);

/* Walk the key list of a KVMUX_SCAN reply (reply.value, reply.value_len;
 * for kvmux_call / kvmux_call_async users): from *offset (start at 0),
 * the next key in *key / *key_len (pointing into list). Returns 1 with a
 * key, 0 at the end. The library checked the list when the reply
 * arrived. Thread-safe: yes. */
int kvmux_scan_next(const uint8_t *list, size_t list_len, size_t *offset,
                    const uint8_t **key, size_t *key_len);

/* ---- introspection: SLOWLOG and CLIENT_LIST ----
 * For operators and tools (kvmux-cli slowlog, client list). Each works on
 * protocol v1 and v2; a server that predates them answers
 * KVMUX_EUNSUPPORTED (the connection goes on). The text formats are in
 * docs/OPERATIONS.md ("Slow log", "Client list"): one line per entry,
 * space-separated name=value fields, values escaped as in the server's
 * log; new fields may be added at the end of a line, none is renamed. */

/* The newest count entries of the server's slow log (0 = all), newest
 * first, one line each: "id=N time_ms=UNIX_MS duration_us=N op=NAME
 * client=ADDR key=KEY" (KEY: the key's first 32 bytes, escaped; then
 * " key_truncated=1" if it was longer). *out (one allocation, data
 * NUL-terminated) is owned by the caller: kvmux_value_free; its version
 * field holds the number of entries in the log, which is more than the
 * lines when count asked for fewer or the lines exceeded what this
 * client accepts (the server leaves out the oldest). *out is NULL on
 * error. Returns 0, KVMUX_EINVAL (c or out NULL), KVMUX_EUNSUPPORTED, or
 * any call error. Thread-safe: yes. */
int kvmux_slowlog_get(kvmux_client *c, uint32_t count, kvmux_value **out, int timeout_ms);

/* The number of entries in the server's slow log in *len_out. Returns
 * 0, KVMUX_EINVAL (c or len_out NULL), KVMUX_EUNSUPPORTED, or any call
 * error (*len_out is then 0). Thread-safe: yes. */
int kvmux_slowlog_len(kvmux_client *c, uint64_t *len_out, int timeout_ms);

/* Empty the server's slow log. *dropped_out (may be NULL) gets the
 * number of entries it held. Returns 0, KVMUX_EUNSUPPORTED, or any call
 * error. Thread-safe: yes. */
int kvmux_slowlog_reset(kvmux_client *c, uint64_t *dropped_out, int timeout_ms);

/* Every connection of the server (this one included), one line each:
 * "id=N addr=IP:PORT proto=V in_flight=N credits=N bytes_in=N
 * bytes_out=N age_ms=N idle_ms=N tls=0|1 loop=N name=NAME" (proto 0: the
 * handshake is not done; in_flight: requests read and not answered yet,
 * this CLIENT_LIST included for its own connection; credits: the
 * client's credits left; idle_ms: since bytes last arrived; NAME: the
 * client name from its HELLO, "" if none). Each figure is exact as of
 * that connection's last read or write; the list is not one snapshot.
 * *out (data NUL-terminated) is owned by the caller: kvmux_value_free;
 * its version field holds the number of connections (more than the
 * lines if they exceeded what this client accepts, 1 MiB at most).
 * Returns 0, KVMUX_EINVAL, KVMUX_EUNSUPPORTED, or any call error.
 * Thread-safe: yes. */
int kvmux_client_list(kvmux_client *c, kvmux_value **out, int timeout_ms);

/* Protocol v2 (negotiated unless kvmux_options.max_protocol_version is
 * 1 or the server is v1): every request carries its remaining timeout as
 * a deadline, so the server drops work nobody waits for any more (a WAIT
 * past its caller's timeout is answered TIMEOUT); values larger than the
 * server's frame size travel fragmented, interleaved with other requests
 * (a small request never waits behind more than one 64 KiB fragment, in
 * threaded and event-loop mode alike, up to the negotiated max value;
 * on a v1 server a value over the frame size is KVMUX_ETOOBIG); a
 * server that is draining (GOAWAY) makes new calls fail fast with
 * KVMUX_ESHUTDOWN while the requests already sent get their answers. */

/* ---- cluster mode (kvmux_options.cluster = 1) ---- */

/* The ids of the groups in the handle's current slot map, ascending:
 * min(cap, count) of them into ids (may be NULL with cap 0), the count
 * in *n. Returns 0, or KVMUX_EINVAL (c not a cluster handle, n NULL).
 * Thread-safe: yes. */
int kvmux_cluster_groups(kvmux_client *c, uint16_t *ids, size_t cap, size_t *n);

/* Run req on group `group` (any op; meant for the keyless ones: STATS,
 * SCAN, PING, SLOWLOG, CLIENT_LIST, GROUP, CLUSTER) and wait for its
 * reply, as kvmux_call does on that group's client: no routing by slot,
 * no redirect followed (a keyed request for another group's slot gets
 * KVMUX_EWRONGSHARD). The group's client is made first if it does not
 * exist yet (within timeout_ms). Returns what kvmux_call returns, or
 * KVMUX_EINVAL (not a cluster handle), KVMUX_ENOTFOUND (no such group in
 * the map and none learned from a redirect). Thread-safe: yes. */
int kvmux_cluster_group_call(kvmux_client *c, uint16_t group, const kvmux_request *req,
                             kvmux_reply *reply, int timeout_ms);

/* Router counters of a cluster handle. Fields are only ever added at the
 * end; kvmux_cluster_stats writes min(size, sizeof) bytes. */
typedef struct kvmux_cluster_info {
    uint64_t epoch;       /* the slot map's epoch the router routes by */
    uint64_t refreshes;   /* CLUSTER map requests sent after connect */
    uint64_t redirects;   /* WRONG_SHARD answers followed */
    uint64_t try_agains;  /* TRY_AGAIN answers retried */
    uint32_t subclients;  /* groups with a connected client */
    uint32_t groups;      /* groups known (map and redirects) */
    uint16_t seed_group;  /* the seed's group (keyless requests) */
    uint64_t stale;       /* WRONG_SHARD answers from a node whose map is
                             older than one already seen (a map being
                             pushed group by group): not followed, the
                             same group asked again after a TRY_AGAIN
                             backoff */
    uint64_t member_updates; /* a connected group's client given the newer
                             member list a map or redirect named (it
                             reconnects through it when its connection
                             is lost) */
} kvmux_cluster_info;

/* Fill *out (size: sizeof(kvmux_cluster_info) as the caller knows it).
 * Returns 0 or KVMUX_EINVAL (not a cluster handle, out NULL).
 * Thread-safe: yes. */
int kvmux_cluster_stats(kvmux_client *c, kvmux_cluster_info *out, size_t size);

/* ==== Asynchronous API ====
 *
 * Submit a request and get its reply later, through a callback or a
 * future, without a thread per request. Works on any client: a threaded
 * one from kvmux_connect (any thread may submit) or an event-loop one from
 * kvmux_async_connect (everything on the loop thread).
 *
 * The rule (libuv, hiredis): a submit that returns 0 completes exactly
 * once -- reply, server error, timeout, connection loss or kvmux_close --
 * and a submit that returns an error never completes (no callback, no
 * future).
 *
 * Deadlines: timeout_ms covers the whole request (waiting in the library's
 * queue, waiting for a credit, the round trip). KVMUX_TIMEOUT_DEFAULT takes
 * kvmux_options.request_timeout_ms, plus wait_ms for a WAIT. Deadlines are
 * kept in a timer heap serviced by the client itself (its completion
 * thread, or the loop's timer in event-loop mode), independently of the
 * socket: a stalled server cannot delay a timeout. A request that times out
 * after it was sent keeps its id reserved until the late reply arrives
 * (then dropped), exactly as for kvmux_call.
 *
 * Backpressure: a submit never blocks. When a credit is free and the
 * outbound queue has room the request is encoded at once. Otherwise
 * kvmux_call_async / kvmux_call_future park it, copied, in a bounded FIFO
 * backlog inside the library (at most queue_limit requests and
 * queue_bytes_limit bytes, on top of the outbound queue) that is drained
 * as credits and room come back; when the backlog is full they return
 * KVMUX_EAGAIN. The try variants never use the backlog: KVMUX_EAGAIN
 * whenever the request cannot be encoded right now (no credit, outbound
 * queue full, or earlier requests already waiting in the backlog).
 *
 * Ownership: req and everything it points to are borrowed for the submit
 * call only (the library copies what it keeps). */

/* Completion callback. result is 0 or a KVMUX_E* code, as kvmux_call would
 * return it. reply is never NULL; it is filled for 0 and KVMUX_EVERSION,
 * zeroed otherwise. reply is borrowed: valid only during the callback. The
 * callback may take reply->value (a malloc'ed buffer, NUL-terminated after
 * value_len bytes) by copying the pointer and setting reply->value to
 * NULL; it then owns it (free() or kvmux_reply_free()); otherwise the
 * library frees it when the callback returns.
 *
 * Where callbacks run: in threaded mode, on the client's completion thread
 * (one per client, started by the first async submit), never on the
 * submitting thread and never on the socket reader: so all callbacks of one
 * client run one at a time, in completion order, and a slow callback
 * delays other callbacks but not the socket, synchronous callers or
 * futures. In event-loop mode, on the loop thread, from inside
 * kvmux_async_handle_read/_write/_timeout or kvmux_close. A cluster handle
 * (kvmux_options.cluster, threaded mode): its callbacks run on its
 * groups' completion threads, one at a time (a callback whose answer
 * comes while another of the handle's runs or is queued, and every early
 * completion -- deadline, cancel, close -- runs on the handle's own
 * completion thread instead, still one at a time and in completion
 * order). Such a callback may wait for a future of the same handle
 * (kvmux_future_wait/_wait_any): the wait itself then does the work of
 * the group's completion thread it occupies -- that group's answers,
 * among them the future's, are routed meanwhile, so the wait ends with the
 * answer, not the future's deadline. Other callbacks of the handle still
 * wait until that callback returns (one at a time).
 *
 * A callback may call any function of the API on any client, including
 * submitting new requests (no deadlock: no lock is held while it runs) and
 * kvmux_close(c). Requests a threaded-mode callback submits on its own
 * client are written when the current batch of callbacks has run (one
 * send() for the whole round), or at once if the callback then blocks on
 * the client (a future wait, a synchronous call). It must not block for long: timeouts of c's async
 * requests are serviced by the same thread. (Blocking calls such as
 * kvmux_call from a threaded-mode callback work but stall c's callbacks and
 * async timeouts meanwhile.) */
typedef void (*kvmux_reply_cb)(kvmux_client *c, int result, kvmux_reply *reply,
                               void *user_data);

/* Submit req; cb(c, result, reply, user_data) runs exactly once later iff
 * 0 is returned. cb must not be NULL.
 * Returns 0, or without queueing anything (and cb never runs):
 *   KVMUX_EINVAL    bad argument (NULL c/req/cb, NULL or empty key,
 *                   SET/CAS/EXPIRE ttl_ms above KVMUX_MAX_TTL_MS, ...)
 *   KVMUX_ETOOBIG   key, value or frame over the negotiated limits
 *   KVMUX_EAGAIN    backlog full (queue_limit / queue_bytes_limit)
 *   KVMUX_ENOMEM    out of memory
 *   fatal code      the connection is gone (kvmux_is_fatal)
 * Thread-safe: yes in threaded mode; event-loop mode: loop thread only. */
int kvmux_call_async(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                     kvmux_reply_cb cb, void *user_data);

/* Cancelling an async request (protocol v2 sends a CANCEL; on v1 the
 * library only stops waiting):
 * A cancelled request completes at once with KVMUX_ECANCELED (its
 * callback runs, its future completes), exactly once as always. A request
 * still in the library's backlog is dropped unsent. A sent one is
 * cancelled on the server too: a parked WAIT or a value upload stops and
 * the server answers CANCELED. Whether a write (SET, CAS, INCR, DEL)
 * applied is then unknown -- the server may have applied it before the
 * CANCEL arrived; the server never answers CANCELED for a write it
 * applied, but that answer is discarded once the caller has been told
 * KVMUX_ECANCELED. The request's id stays reserved until the server's one
 * reply (CANCELED, or the real answer if it crossed the CANCEL) arrives,
 * so it can never complete a newer request. The client sends at most 500
 * CANCELs per second (the server closes connections that flood it); past
 * that a cancel only stops waiting. */
typedef uint64_t kvmux_handle; /* names one async request; never 0 or reused */

/* As kvmux_call_async, and *handle (not NULL) receives a handle for
 * kvmux_cancel, valid until the callback has run. Thread-safe: as
 * kvmux_call_async. */
int kvmux_call_async_handle(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                            kvmux_reply_cb cb, void *user_data, kvmux_handle *handle);

/* Cancel the callback request h of c (see above): its callback runs with
 * KVMUX_ECANCELED (threaded mode: on the completion thread; event-loop
 * mode: from the loop's next timer event, never inside kvmux_cancel).
 * Returns 0, KVMUX_ENOTFOUND if h is not pending any more (it completed,
 * or its callback is due with its real result), or KVMUX_EINVAL.
 * Cost: O(pending requests). Thread-safe: as kvmux_call_async. */
int kvmux_cancel(kvmux_client *c, kvmux_handle h);

/* As kvmux_call_async, but KVMUX_EAGAIN unless the request can be encoded
 * for sending right now (a credit is free, the outbound queue has room and
 * no earlier request waits in the backlog). Thread-safe: as above. */
int kvmux_try_call_async(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                         kvmux_reply_cb cb, void *user_data);

/* ---- futures ----
 *
 * A future is a handle on one submitted request, owned by the caller from
 * the submit until kvmux_future_free. Lifetime rules:
 * - It completes exactly once (as a callback would) and stays complete.
 * - Freeing a pending future is safe: the request is cancelled locally (a
 *   queued one is dropped; a sent one keeps its id reserved until the late
 *   reply, which is discarded).
 * - A future outlives its client: after kvmux_close(c) returns, c's futures
 *   are complete (KVMUX_ECLOSED if nothing else) and must still be freed.
 *   Apart from waits woken by the close, future functions must not run
 *   concurrently with kvmux_close of the future's client.
 * - A future may be used from any thread, but waited on by one thread at a
 *   time, and must not be used after kvmux_future_free.
 * In event-loop mode futures complete on the loop thread; only
 * kvmux_future_poll, _result, _free and waits with timeout 0 may be used
 * (a blocking wait would stop the loop that completes it). */
typedef struct kvmux_future kvmux_future; /* opaque */

/* Submit req and return its future in *out (untouched on error). Returns
 * and thread safety as kvmux_call_async. */
int kvmux_call_future(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                      kvmux_future **out);
/* The try variant (KVMUX_EAGAIN as kvmux_try_call_async). */
int kvmux_try_call_future(kvmux_client *c, const kvmux_request *req, int timeout_ms,
                          kvmux_future **out);

/* 1 if f is complete, 0 if not. Never blocks (one atomic load).
 * Thread-safe: yes. */
int kvmux_future_poll(const kvmux_future *f);

/* Wait until f is complete, at most timeout_ms (0: just check).
 * KVMUX_TIMEOUT_DEFAULT waits until f completes, which its own request
 * deadline bounds (the wait gives up 1 s past that deadline, in case the
 * completion thread is held up by a blocking callback).
 * Returns 0 when f is complete (read it with kvmux_future_result),
 * KVMUX_ETIMEDOUT if it is not yet, KVMUX_EINVAL (NULL f, another thread
 * is waiting on f, or a blocking wait on an event-loop future).
 * Thread-safe: yes. */
int kvmux_future_wait(kvmux_future *f, int timeout_ms);

/* Wait until at least one of fs[0..n) is complete, at most timeout_ms (as
 * for kvmux_future_wait). The futures may belong to different clients;
 * NULL entries are skipped. On 0, *index is the lowest index of a complete
 * future. Returns 0, KVMUX_ETIMEDOUT, or KVMUX_EINVAL (no non-NULL future,
 * NULL index, a future already being waited on by another thread, or a
 * blocking wait on an event-loop future). Cost: O(n) per call; one lock
 * round per client only if none is complete yet. Thread-safe: yes. */
int kvmux_future_wait_any(kvmux_future *const *fs, size_t n, int timeout_ms,
                          size_t *index);

/* The outcome of f. Returns KVMUX_EAGAIN if f is not complete yet (reply
 * zeroed), otherwise the request's result (0 or KVMUX_E*, as kvmux_call).
 * If reply is not NULL it is filled as for kvmux_call, and reply->value
 * moves to the caller (free with kvmux_reply_free): a second call gives
 * the same result and numbers with value NULL. Thread-safe: yes, but not
 * concurrently with itself or kvmux_future_free on the same f. */
int kvmux_future_result(kvmux_future *f, kvmux_reply *reply);

/* Cancel f's request if it is still pending (see "Cancelling" above): f
 * is then complete with KVMUX_ECANCELED, and a thread waiting on it wakes.
 * If f was already complete nothing changes (its result stands). Returns
 * 0, or KVMUX_EINVAL for NULL. Thread-safe: yes (not concurrently with
 * kvmux_future_free on f). */
int kvmux_future_cancel(kvmux_future *f);

/* Release f (pending or complete; see the lifetime rules above). f may be
 * NULL. Must not be called while another thread waits on f. Freeing a
 * pending future cancels it as kvmux_future_cancel does.
 * Thread-safe: yes. */
void kvmux_future_free(kvmux_future *f);

/* ---- event-loop mode ----
 *
 * As hiredis' async context: the application's event loop drives the
 * socket and a timer, and the library starts no thread at all. Everything
 * -- submits, callbacks, the kvmux_async_handle_* entry points,
 * kvmux_close -- happens on the loop thread: the client is single-threaded
 * in this mode. The blocking calls (kvmux_call, kvmux_get, ...) return
 * KVMUX_EINVAL on such a client. Requests submitted before the handshake
 * has finished wait in the backlog (limits are checked again once the
 * server's are known; a request over them then completes with
 * KVMUX_ETOOBIG). Values over the server's frame size are sent fragmented
 * from the writable callback, as in threaded mode: small requests go
 * between the fragments, and a cancel, timeout or connection loss during
 * the upload stops it and completes its callback once.
 *
 * The glue: an adapter (include/kvmux/adapters/libuv.h, or your own) fills
 * kvmux_async_hooks and calls kvmux_async_attach; the library calls the
 * hooks to say which events it wants; the loop calls
 * kvmux_async_handle_read/_write when kvmux_async_fd(c) is readable /
 * writable, and kvmux_async_handle_timeout when the timer fires. The hooks
 * are called on the loop thread, possibly from inside any kvmux function
 * on c; they must not call kvmux functions themselves. */
typedef struct kvmux_async_hooks {
    void *data;                              /* passed to every hook */
    void (*add_read)(void *data);            /* watch the fd for reading */
    void (*del_read)(void *data);
    void (*add_write)(void *data);           /* watch the fd for writing */
    void (*del_write)(void *data);
    /* One one-shot timer: (re)arm it to fire in timeout_ms (>= 0),
     * replacing any earlier arming; timeout_ms < 0 disarms it. When it
     * fires, call kvmux_async_handle_timeout. */
    void (*schedule_timer)(void *data, int64_t timeout_ms);
    /* The client is being freed (kvmux_close): stop watching, release
     * the adapter's state. Called once, last. May be NULL. */
    void (*cleanup)(void *data);
} kvmux_async_hooks;

/* Start a non-blocking connect to host:port (host: a name -- resolved with
 * getaddrinfo, which may block; the first address is used -- or a numeric
 * IPv4/IPv6 address, which never blocks). The TCP connect and the HELLO
 * handshake then proceed from the loop once hooks are attached; the
 * handshake must finish within opts->connect_timeout_ms or the client
 * fails with KVMUX_ECONNECT. Requests may be submitted at once (they wait
 * in the backlog). On success *out owns the client; free it with
 * kvmux_close(). On error *out is untouched.
 * The host is resolved here, once; nothing later blocks the loop thread.
 * With opts->endpoints set, host and port are ignored: every endpoint is
 * resolved here, once (KVMUX_ECONNECT if one cannot be), the first whose
 * connect can start is used, and a connect that fails later moves on to
 * the next endpoint as a reconnect does (reconnect is on in that mode).
 * TLS (kvmux_options.tls = 1): the TLS handshake runs from the loop's
 * events before HELLO, and every record is read and written without
 * blocking; a TLS failure is KVMUX_ETLS (see kvmux_options.tls).
 * Without kvmux_options.reconnect a lost connection (or a failed connect
 * or handshake) is final: the status callback reports it, every request
 * in flight or waiting completes with the fatal code, and what is left is
 * kvmux_close. With it (the companions as in threaded mode), a loss is
 * not final: requests in flight complete with KVMUX_ECLOSED (never
 * resent), requests waiting in the backlog and those submitted while
 * disconnected stay queued (bounded, with their deadlines) and are sent
 * on the next connection; after a backoff (the loop's timer) a
 * non-blocking connect starts to the address resolved here, then TLS and
 * HELLO. A failed connect, TLS handshake or HELLO (the first one
 * included) counts as a loss and is retried the same way; the status
 * callback reports each loss and each failed attempt with its code, and
 * 0 on each (re)connection; kvmux_reconnect_stats counts them. To give
 * up, kvmux_close the client (the status callback may); the backlog then
 * completes with KVMUX_ECLOSED. The socket keeps its descriptor number
 * across reconnects (kvmux_async_fd), so an adapter needs nothing new:
 * it sees del_read/del_write at the loss and add_read/add_write for the
 * next connection.
 * With opts->cluster = 1: the slot map is loaded here (blocking up to
 * connect_timeout_ms; KVMUX_ECLUSTERMAP if no seed has one), and the
 * client's one fd stands for every group (see kvmux_options.cluster).
 * Returns 0, KVMUX_EINVAL, KVMUX_ECONNECT, KVMUX_ETLS (the TLS options:
 * a CA or certificate file that cannot be loaded), KVMUX_ENOMEM,
 * KVMUX_ECLUSTERMAP (details: kvmux_connection_error(NULL, ...)).
 * Thread-safe: yes. */
int kvmux_async_connect(kvmux_client **out, const char *host, uint16_t port,
                        const kvmux_options *opts);

/* Attach the loop's hooks (copied) to an event-loop client, once; the
 * library immediately asks for the events it needs. Returns 0, or
 * KVMUX_EINVAL (not an event-loop client, already attached, a NULL hook
 * other than cleanup). Loop thread only. */
int kvmux_async_attach(kvmux_client *c, const kvmux_async_hooks *hooks);

/* The socket an event-loop client wants watched (-1 for NULL c). Valid
 * until kvmux_close, and the same number for the client's whole life:
 * an automatic reconnect puts the new connection's socket on the same
 * descriptor (the old one is closed by then; the library asked for its
 * events to be unwatched first). Thread-safe: yes. */
int kvmux_async_fd(const kvmux_client *c);

/* Connection status callback (event-loop mode): cb(c, 0, user_data) once
 * the handshake has finished (a cluster handle: once, from the first
 * timer event after kvmux_async_attach; the groups' connections are not
 * reported), and cb(c, code, user_data) once when the
 * connection fails (a fatal code; not called for kvmux_close). With
 * kvmux_options.reconnect: cb(c, code, ...) at each loss and each failed
 * reconnect attempt, cb(c, 0, ...) at each (re)connection. Runs on the
 * loop thread, before the failed requests' callbacks; may call
 * kvmux_close(c). Returns 0 or KVMUX_EINVAL. Loop thread only. */
typedef void (*kvmux_status_cb)(kvmux_client *c, int status, void *user_data);
int kvmux_async_set_status_cb(kvmux_client *c, kvmux_status_cb cb, void *user_data);

/* Event handlers for the loop: the fd is readable / writable / the timer
 * fired. Each does the I/O that is possible without blocking, runs the
 * callbacks that became due, and returns. They may free c (a callback
 * called kvmux_close): the caller must not touch c after they return
 * unless it knows no callback closes it (adapters learn of it through the
 * cleanup hook, which runs first). No-ops on a threaded client.
 * Loop thread only. */
void kvmux_async_handle_read(kvmux_client *c);
void kvmux_async_handle_write(kvmux_client *c);
void kvmux_async_handle_timeout(kvmux_client *c);

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* KVMUX_H */
