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
 *   only thing left to do with the handle is kvmux_close().
 * - timeout_ms: the whole call (queueing, waiting for a credit, the round
 *   trip). KVMUX_TIMEOUT_DEFAULT (-1) takes the client's default
 *   (kvmux_options.request_timeout_ms). 0 is not "forever": there is no
 *   infinite wait anywhere in this API.
 * - Ownership: buffers passed in are borrowed for the duration of the call
 *   only. Values returned to the caller are heap copies the caller owns and
 *   frees with kvmux_value_free() / kvmux_reply_free().
 *
 * Link with -lkvmux -lpthread.
 */
#ifndef KVMUX_H
#define KVMUX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVMUX_VERSION_STRING "0.1.0"

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
    KVMUX_ESHUTDOWN = -14,  /* server is shutting down: not processed */
    /* Fatal: the connection is gone. */
    KVMUX_E_FATAL = -100,
    KVMUX_ECLOSED = -101,   /* connection closed (EOF, reset, kvmux_close) */
    KVMUX_EPROTO = -102,    /* protocol error (ours or reported by the server) */
    KVMUX_ECONNECT = -103,  /* could not connect / resolve */
    KVMUX_ENOVERSION = -104,/* no protocol version in common with the server */
    KVMUX_EIO = -105        /* socket error other than a clean close */
} kvmux_error;

/* Human-readable name for any code above ("connection closed", ...). Never
 * NULL; the string is static. Thread-safe: yes. */
const char *kvmux_strerror(int err);

/* Nonzero if err means the connection is gone. Thread-safe: yes. */
int kvmux_is_fatal(int err);

#define KVMUX_TIMEOUT_DEFAULT (-1)

typedef struct kvmux_client kvmux_client; /* opaque */

/* Connection options. Always call kvmux_options_init() first, then change
 * fields: new fields get defaults without breaking callers. */
typedef struct kvmux_options {
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
} kvmux_options;

/* Fill o with defaults. Thread-safe: yes. */
void kvmux_options_init(kvmux_options *o);

/* Connect to host:port (a name or a numeric IPv4/IPv6 address), perform the
 * HELLO handshake, and start the reader and writer threads.
 * opts may be NULL for defaults. On success *out owns the client; free it
 * with kvmux_close(). On error *out is untouched.
 * Returns 0, KVMUX_EINVAL, KVMUX_ECONNECT, KVMUX_ETIMEDOUT, KVMUX_ENOVERSION,
 * KVMUX_EPROTO, KVMUX_ENOMEM. Thread-safe: yes. */
int kvmux_connect(kvmux_client **out, const char *host, uint16_t port,
                  const kvmux_options *opts);

/* Close the connection and free the client. Every pending and queued call
 * returns KVMUX_ECLOSED at once; kvmux_close waits (boundedly: the calls are
 * woken, not awaited) until those threads have left the library, then joins
 * its threads and frees everything. No call may *start* on c after
 * kvmux_close has been called. c may be NULL. Thread-safe: yes, once. */
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

/* ---- generic call ---- */

typedef enum kvmux_op {
    KVMUX_GET = 1,
    KVMUX_SET = 2,
    KVMUX_DEL = 3,
    KVMUX_INCR = 4,
    KVMUX_CAS = 5,
    KVMUX_WAIT = 6,
    KVMUX_PING = 100 /* connection-level round trip; no key */
} kvmux_op;

/* A request. Fields not used by op are ignored. Borrowed for the call. */
typedef struct kvmux_request {
    kvmux_op op;
    const void *key;
    size_t key_len;
    const void *value;      /* SET, CAS */
    size_t value_len;
    uint64_t ttl_ms;        /* SET, CAS: 0 = no expiry */
    uint64_t version;       /* CAS: expected; WAIT: wait while equal */
    int64_t delta;          /* INCR */
    uint32_t wait_ms;       /* WAIT: server-side timeout */
} kvmux_request;

/* A reply. value is a heap copy owned by the caller (NULL when there is
 * none); release with kvmux_reply_free(). */
typedef struct kvmux_reply {
    uint64_t version;       /* GET/SET/CAS/INCR/WAIT: the key's version;
                               CAS mismatch: the current version */
    int64_t number;         /* INCR: the new value */
    uint8_t *value;         /* GET, WAIT */
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

#ifdef __cplusplus
}
#endif
#endif /* KVMUX_H */
