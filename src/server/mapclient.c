/* The map group link over libkvmux (mapclient.h). */
#include "mapclient.h"

#include <string.h>

#include "kvmux.h"

int kvmux_mapc_open(kvmux_mapc **out, const char *endpoints, const char *token,
                    const kvmux_mapc_tls *tls, int connect_ms) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = endpoints;
    o.connect_timeout_ms = connect_ms;
    o.client_name = "kvmuxd-mapwatch";
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

int kvmux_mapc_watch(kvmux_mapc *c, uint64_t known, uint32_t wait_ms, int slack_ms,
                     int tick_ms, int (*go_on)(void *ud), void *ud, uint8_t **out,
                     size_t *len) {
    uint8_t v[12];
    for (int i = 0; i < 8; i++) v[i] = (uint8_t)(known >> (56 - 8 * i));
    for (int i = 0; i < 4; i++) v[8 + i] = (uint8_t)(wait_ms >> (24 - 8 * i));
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_CLUSTER;
    r.key = "watch";
    r.key_len = 5;
    r.value = v;
    r.value_len = sizeof v;
    kvmux_future *f = NULL;
    int rc = kvmux_call_future(c, &r, (int)wait_ms + slack_ms, &f);
    if (rc != 0) return rc;
    while (kvmux_future_wait(f, tick_ms) == KVMUX_ETIMEDOUT) {
        if (!go_on(ud)) {
            kvmux_future_free(f); /* cancels it */
            return KVMUX_MAPC_GAVEUP;
        }
    }
    kvmux_reply rep;
    rc = kvmux_future_result(f, &rep);
    kvmux_future_free(f);
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

int kvmux_mapc_fatal(int code) { return code <= KVMUX_E_FATAL; }

const char *kvmux_mapc_strerror(int code) { return kvmux_strerror(code); }

void kvmux_mapc_close(kvmux_mapc *c) {
    if (c) kvmux_close(c);
}
