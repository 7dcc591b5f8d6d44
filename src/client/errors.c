/* kvmux client errors and defaults: kvmux_strerror, kvmux_is_fatal,
 * kvmux_options_init_sized, kvmux_version, and the one-to-one map from wire RESPONSE statuses to
 * kvmux_error codes.
 *
 * Design: tables written out as switches so that the compiler warns when a
 * code is added to the enum and not named here (-Wswitch). The status map is
 * strict: a status this protocol version does not define is not guessed at,
 * it is reported as -1 and the reader fails the connection with
 * KVMUX_EPROTO (the server and we disagree about the protocol).
 *
 * What it is not: no state, no locking; every function here is pure.
 */
#include <stdint.h>
#include <string.h>

#include "client_internal.h"

const char *kvmux_strerror(int err) {
    switch ((kvmux_error)err) {
    case KVMUX_OK: return "success";
    case KVMUX_ENOTFOUND: return "key not found";
    case KVMUX_EVERSION: return "version mismatch";
    case KVMUX_ETOOBIG: return "key or value too large";
    case KVMUX_EBADREQ: return "bad request";
    case KVMUX_EBUSY: return "server busy (request not processed)";
    case KVMUX_ETIMEDOUT: return "timed out";
    case KVMUX_ESERVER: return "server internal error";
    case KVMUX_ENOTINT: return "value is not an integer";
    case KVMUX_EOVERFLOW: return "integer overflow";
    case KVMUX_EAGAIN: return "queue full or no credit available, try again";
    case KVMUX_EINVAL: return "invalid argument";
    case KVMUX_ENOMEM: return "out of memory";
    case KVMUX_EUNSUPPORTED: return "operation not supported by the server";
    case KVMUX_ESHUTDOWN: return "server shutting down (request not processed)";
    case KVMUX_ECANCELED: return "request cancelled";
    case KVMUX_EOOM: return "server out of memory (write not processed)";
    case KVMUX_ENOTLEADER: return "no leader reachable (not the leader, or too many redirects)";
    case KVMUX_EUNKNOWN: return "write outcome unknown (connection or leadership lost)";
    case KVMUX_EWRONGSHARD: return "wrong shard (another cluster group serves the key's slot)";
    case KVMUX_EREDIRECTS: return "too many cluster redirects";
    case KVMUX_ETRYAGAIN: return "slot not available yet (try again)";
    case KVMUX_ECLUSTERMAP: return "no usable slot map (no seed answered CLUSTER map)";
    case KVMUX_E_FATAL: return "fatal connection error";
    case KVMUX_ECLOSED: return "connection closed";
    case KVMUX_EPROTO: return "protocol error";
    case KVMUX_ECONNECT: return "could not connect";
    case KVMUX_ENOVERSION: return "no protocol version in common with the server";
    case KVMUX_EIO: return "socket error";
    case KVMUX_EKEEPALIVE: return "server unresponsive (keepalive timeout)";
    case KVMUX_EAUTH: return "authentication failed";
    case KVMUX_ETLS: return "TLS error";
    }
    return "unknown error";
}

int kvmux_is_fatal(int err) {
    return err <= KVMUX_E_FATAL;
}

unsigned int kvmux_version(void) {
    return KVMUX_VERSION_NUM;
}

const char *kvmux_version_string(void) {
    return KVMUX_VERSION_STRING;
}

/* The defaults, written into the first `size` bytes of the caller's
 * struct only: a program built against an older kvmux.h has a smaller
 * kvmux_options (docs/ABI.md). The struct_size it gets is its own size, so
 * kvmux__options_import later knows which fields the caller has. */
void kvmux_options_init_sized(kvmux_options *out, size_t size) {
    if (!out || size < sizeof out->struct_size) return;
    kvmux_options d, *o = &d;
    memset(o, 0, sizeof *o);
    o->connect_timeout_ms = 5000;
    o->request_timeout_ms = 5000;
    o->queue_limit = 4096;
    o->queue_bytes_limit = (size_t)8 * 1024 * 1024;
    o->max_outstanding = 0;
    o->max_frame_size = KVMUX_DEFAULT_MAX_FRAME;
    o->client_name = NULL;
    o->tls_verify = 1;
    o->auth_token = NULL;
    o->first_request_id = 0;
    o->max_value_size = KVMUX_DEFAULT_MAX_VALUE_V2;
    o->max_protocol_version = KVMUX__CLIENT_PROTO_MAX;
    o->reconnect = 0;
    o->reconnect_min_backoff_ms = 50;
    o->reconnect_max_backoff_ms = 5000;
    o->reconnect_wait = 1;
    o->retry_reads = 0;
    o->endpoints = NULL;
    o->resend_writes = 0;
    o->no_sessions = 0;
    o->stale_reads = 0;
    o->cluster = 0;
    o->cluster_max_redirects = 5;
    memcpy(out, o, size < sizeof d ? size : sizeof d);
    out->struct_size = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
}

int kvmux__options_import(kvmux_options *dst, const kvmux_options *src) {
    kvmux_options_init(dst);
    if (!src) return 0;
    if (src->struct_size < sizeof src->struct_size || src->struct_size > sizeof *dst)
        return kvmux__connect_fail(KVMUX_EINVAL,
                                   "kvmux_options.struct_size is %u (this library knows "
                                   "%zu bytes): call kvmux_options_init first",
                                   (unsigned)src->struct_size, sizeof *dst);
    memcpy(dst, src, src->struct_size);
    dst->struct_size = (uint32_t)sizeof *dst;
    return 0;
}

int kvmux__status_to_error(uint8_t status, int *err) {
    /* v2 statuses are macros, outside the enum (see proto.h). A v1
     * session never gets them: the session refuses v2 frames, and the
     * server does not send v2 statuses on v1. */
    if (status == KVMUX_STATUS_CANCELED) {
        *err = KVMUX_ECANCELED;
        return 0;
    }
    if (status == KVMUX_STATUS_OUT_OF_MEMORY) {
        *err = KVMUX_EOOM;
        return 0;
    }
    /* v3. NOT_LEADER normally never reaches a caller: the reader follows
     * it (failover.c); it maps here for a client without endpoints. */
    if (status == KVMUX_STATUS_NOT_LEADER) {
        *err = KVMUX_ENOTLEADER;
        return 0;
    }
    if (status == KVMUX_STATUS_OUTCOME_UNKNOWN) {
        *err = KVMUX_EUNKNOWN;
        return 0;
    }
    /* v3 cluster mode: not processed. Until the cluster client follows
     * them, a caller sees them as errors, never as a protocol error. */
    if (status == KVMUX_STATUS_WRONG_SHARD) {
        *err = KVMUX_EWRONGSHARD;
        return 0;
    }
    if (status == KVMUX_STATUS_TRY_AGAIN) {
        *err = KVMUX_ETRYAGAIN;
        return 0;
    }
    switch ((enum kvmux_status)status) {
    case KVMUX_STATUS_OK: *err = KVMUX_OK; return 0;
    case KVMUX_STATUS_NOT_FOUND: *err = KVMUX_ENOTFOUND; return 0;
    case KVMUX_STATUS_VERSION_MISMATCH: *err = KVMUX_EVERSION; return 0;
    case KVMUX_STATUS_TOO_LARGE: *err = KVMUX_ETOOBIG; return 0;
    case KVMUX_STATUS_BAD_REQUEST: *err = KVMUX_EBADREQ; return 0;
    case KVMUX_STATUS_BUSY: *err = KVMUX_EBUSY; return 0;
    case KVMUX_STATUS_TIMEOUT: *err = KVMUX_ETIMEDOUT; return 0;
    case KVMUX_STATUS_INTERNAL: *err = KVMUX_ESERVER; return 0;
    case KVMUX_STATUS_NOT_INTEGER: *err = KVMUX_ENOTINT; return 0;
    case KVMUX_STATUS_OVERFLOW: *err = KVMUX_EOVERFLOW; return 0;
    case KVMUX_STATUS_UNKNOWN_OP: *err = KVMUX_EUNSUPPORTED; return 0;
    case KVMUX_STATUS_SHUTTING_DOWN: *err = KVMUX_ESHUTDOWN; return 0;
    }
    return -1;
}
