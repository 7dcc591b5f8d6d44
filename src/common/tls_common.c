/* OpenSSL helpers shared by kvmuxd and libkvmux (contracts in
 * tls_common.h). Compiled empty without KVMUX_HAVE_TLS. */
#include "tls_common.h"

#ifdef KVMUX_HAVE_TLS
#include <stdio.h>

#include <openssl/err.h>

/* A peer that closes without close_notify is a plain EOF, as over TCP:
 * kvmux frames are self-delimiting, so truncation cannot go unnoticed. */
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
#define KVMUX_TLS_OP_EOF SSL_OP_IGNORE_UNEXPECTED_EOF
#else
#define KVMUX_TLS_OP_EOF 0
#endif

const char *kvmux__tls_reason(char *buf, size_t len) {
    unsigned long e = ERR_peek_last_error();
    if (!e) {
        snprintf(buf, len, "unknown TLS error");
    } else {
        const char *r = ERR_reason_error_string(e);
        if (r) snprintf(buf, len, "%s", r);
        else ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
    return buf;
}

SSL_CTX *kvmux__tls_ctx_new(const SSL_METHOD *method, uint64_t extra_options) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 KVMUX_TLS_OP_EOF | extra_options);
    return ctx;
}
#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int kvmux__tls_common_unused;
#endif
