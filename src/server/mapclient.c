/* The map group link over libkvmux (mapclient.h). */
#include "mapclient.h"

#include <stdlib.h>
#include <string.h>

#include "kvmux.h"

int kvmux_mapc_open(kvmux_mapc **out, const char *endpoints, const char *token,
                    const kvmux_mapc_tls *tls, int connect_ms) {
    return kvmux_mapc_open_as(out, endpoints, token, tls, connect_ms, "kvmuxd-mapwatch");
}

int kvmux_mapc_open_as(kvmux_mapc **out, const char *endpoints, const char *token,
                       const kvmux_mapc_tls *tls, int connect_ms, const char *name) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = endpoints;
    o.connect_timeout_ms = connect_ms;
    o.client_name = name;
    o.no_sessions = 1;
    o.reconnect_wait = 0; /* a call fails at once while disconnected */
    o.auth_token = token;
    if (tls && tls->ca) {
        o.tls = 1;
        o.tls_ca_file = tls->ca;
        o.tls_cert_file = tls->cert;
        o.tls_key_file = tls->key;
        o.tls_server_name = tls->server_name;
    }
    return kvmux_connect(out, NULL, 0, &o);
}

/* CLUSTER sub with value v[0..n) on c, waited for in ticks of tick_ms so
 * that go_on can end the wait (the request is then cancelled). Returns
 * kvmux_future_result's code with *rep filled, the submit's error (*rep
 * empty), or KVMUX_MAPC_GAVEUP (go_on said stop; *rep empty). *rep is
 * always safe to kvmux_reply_free. */
static int cluster_wait(kvmux_mapc *c, const char *sub, const void *v, size_t n, int timeout_ms,
                        int tick_ms, int (*go_on)(void *ud), void *ud, kvmux_reply *rep) {
    memset(rep, 0, sizeof *rep);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_CLUSTER;
    r.key = sub;
    r.key_len = strlen(sub);
    r.value = v;
    r.value_len = n;
    kvmux_future *f = NULL;
    int rc = kvmux_call_future(c, &r, timeout_ms, &f);
    if (rc != 0) return rc;
    while (kvmux_future_wait(f, tick_ms) == KVMUX_ETIMEDOUT) {
        if (!go_on(ud)) {
            kvmux_future_free(f); /* cancels it */
            return KVMUX_MAPC_GAVEUP;
        }
    }
    rc = kvmux_future_result(f, rep);
    kvmux_future_free(f);
    return rc;
}

int kvmux_mapc_watch(kvmux_mapc *c, uint64_t known, uint32_t wait_ms, int slack_ms,
                     int tick_ms, int (*go_on)(void *ud), void *ud, uint8_t **out,
                     size_t *len) {
    uint8_t v[12];
    for (int i = 0; i < 8; i++) v[i] = (uint8_t)(known >> (56 - 8 * i));
    for (int i = 0; i < 4; i++) v[8 + i] = (uint8_t)(wait_ms >> (24 - 8 * i));
    kvmux_reply rep;
    int rc = cluster_wait(c, "watch", v, sizeof v, (int)wait_ms + slack_ms, tick_ms, go_on, ud,
                          &rep);
    if (rc == KVMUX_MAPC_GAVEUP) return rc;
    if (rc == KVMUX_ENOTFOUND) rc = KVMUX_MAPC_NOTFOUND;
    if (rc == 0) {
        *out = rep.value; /* moves to the caller */
        *len = rep.value_len;
        rep.value = NULL;
        if (!*out) rc = KVMUX_EPROTO; /* OK without a map */
    }
    kvmux_reply_free(&rep);
    return rc;
}

/* The KVMUX_MAPC_* name of a server's refusal, else rc itself. */
static int mapc_result(int rc) {
    switch (rc) {
    case 0: return KVMUX_MAPC_OK;
    case KVMUX_ENOTFOUND: return KVMUX_MAPC_NOTFOUND;
    case KVMUX_EVERSION: return KVMUX_MAPC_VERSION;
    case KVMUX_EBUSY: return KVMUX_MAPC_BUSY;
    case KVMUX_EBADREQ: return KVMUX_MAPC_BADREQ;
    case KVMUX_EOOM: return KVMUX_MAPC_OOM;
    case KVMUX_ETRYAGAIN: return KVMUX_MAPC_TRYAGAIN;
    case KVMUX_ETOOBIG: return KVMUX_MAPC_TOOBIG;
    default: return rc;
    }
}

int kvmux_mapc_call(kvmux_mapc *c, const char *sub, const void *v, size_t n, int timeout_ms,
                    int tick_ms, int (*go_on)(void *ud), void *ud, uint8_t **out,
                    size_t *len) {
    if (out) *out = NULL;
    if (len) *len = 0;
    kvmux_reply rep;
    int rc = cluster_wait(c, sub, v, n, timeout_ms, tick_ms, go_on, ud, &rep);
    if (rc == KVMUX_MAPC_GAVEUP) return rc;
    if (out && rep.value) {
        /* One more byte for a NUL, so a message can be printed as is. */
        uint8_t *b = malloc(rep.value_len + 1);
        if (b) {
            memcpy(b, rep.value, rep.value_len);
            b[rep.value_len] = 0;
            *out = b;
            if (len) *len = rep.value_len;
        } else if (rc == 0) {
            rc = KVMUX_ENOMEM;
        }
    }
    kvmux_reply_free(&rep);
    return mapc_result(rc);
}

int kvmux_mapc_fatal(int code) { return code <= KVMUX_E_FATAL; }

const char *kvmux_mapc_strerror(int code) { return kvmux_strerror(code); }

void kvmux_mapc_close(kvmux_mapc *c) {
    if (c) kvmux_close(c);
}
