/* OpenSSL pieces kvmuxd (src/server/tls.c) and libkvmux (src/client/tls.c)
 * share: the error line and the context both sides start from. Only
 * meaningful with KVMUX_HAVE_TLS; without it this header declares nothing,
 * so the non-TLS builds (and the CI fuzz builds, which compile
 * the common sources without OpenSSL) need no OpenSSL headers. */
#ifndef KVMUX_TLS_COMMON_H
#define KVMUX_TLS_COMMON_H

#ifdef KVMUX_HAVE_TLS
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/* Writes the calling thread's last OpenSSL error as one line ("certificate
 * verify failed", "wrong version number", ...; "unknown TLS error" when the
 * queue is empty) into buf[0..len), NUL-terminated and truncated to fit,
 * then clears the thread's error queue. Returns buf. len must be > 0. */
const char *kvmux__tls_reason(char *buf, size_t len);

/* A new SSL_CTX for method with the options both ends use: TLS 1.2 at the
 * least, no renegotiation, no compression, and a peer's close without
 * close_notify read as a plain EOF (kvmux frames are self-delimiting, so
 * a truncation cannot go unnoticed), plus extra_options (SSL_OP_*).
 * Clears the thread's OpenSSL error queue first. Returns NULL on failure
 * with the reason left in that queue for kvmux__tls_reason. */
SSL_CTX *kvmux__tls_ctx_new(const SSL_METHOD *method, uint64_t extra_options);
#endif

#endif
