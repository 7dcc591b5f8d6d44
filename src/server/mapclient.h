/* The data group's link to the cluster's map group (mapwatch.c), over
 * libkvmux. A file of its own because kvmux.h and server_internal.h both
 * name a kvmux_wait: nothing here sees the server's internals. */
#ifndef KVMUX_MAPCLIENT_H
#define KVMUX_MAPCLIENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvmux_client kvmux_mapc; /* a libkvmux client */

/* Results of the calls below: OK; NOTFOUND, VERSION, BUSY, BADREQ, OOM,
 * TRYAGAIN are the server's answers NOT_FOUND, VERSION_MISMATCH, BUSY,
 * BAD_REQUEST, OUT_OF_MEMORY, TRY_AGAIN; TOOBIG is TOO_LARGE, or the
 * request over the server's advertised limits (named here because migrate.c
 * cannot include kvmux.h); GAVEUP: the caller's go_on said stop. Any
 * other failure is a KVMUX_E* code (< 0). */
enum {
    KVMUX_MAPC_OK = 0, KVMUX_MAPC_NOTFOUND = 1, KVMUX_MAPC_GAVEUP = 2, KVMUX_MAPC_VERSION = 3,
    KVMUX_MAPC_BUSY = 4, KVMUX_MAPC_BADREQ = 5, KVMUX_MAPC_OOM = 6, KVMUX_MAPC_TRYAGAIN = 7,
    KVMUX_MAPC_TOOBIG = 8
};

/* TLS to the map group: ca NULL means plaintext; cert and key (both or
 * neither) are the client certificate; server_name NULL checks each
 * certificate against the first endpoint's host. Paths are read at
 * kvmux_mapc_open. */
typedef struct kvmux_mapc_tls {
    const char *ca, *cert, *key, *server_name;
} kvmux_mapc_tls;

/* Connect to the map group: endpoints mode over endpoints (borrowed for
 * the call), each endpoint within connect_ms, token (NULL: none) in the
 * HELLO, TLS as tls says (NULL: plaintext); calls fail at once while
 * disconnected. Returns 0 with *out, or a KVMUX_E* code (< 0; KVMUX_ETLS
 * for a failed handshake or certificate check). */
int kvmux_mapc_open(kvmux_mapc **out, const char *endpoints, const char *token,
                    const kvmux_mapc_tls *tls, int connect_ms);
/* kvmux_mapc_open with client_name name (shown in CLIENT LIST). */
int kvmux_mapc_open_as(kvmux_mapc **out, const char *endpoints, const char *token,
                       const kvmux_mapc_tls *tls, int connect_ms, const char *name);
/* CLUSTER sub with value v[0..n) (n may be 0), answered within
 * timeout_ms; waits tick_ms at a time and gives up early
 * (KVMUX_MAPC_GAVEUP, the request cancelled) when go_on(ud) returns 0.
 * Returns a KVMUX_MAPC_* result or a KVMUX_E* code; the answer's value
 * (OK: its bytes; a refusal: the server's message) in *out (malloc, NUL
 * appended, not counted in *len; NULL when there is none). out may be
 * NULL. */
int kvmux_mapc_call(kvmux_mapc *c, const char *sub, const void *v, size_t n, int timeout_ms,
                    int tick_ms, int (*go_on)(void *ud), void *ud, uint8_t **out,
                    size_t *len);
/* CLUSTER watch for an epoch above known, parked up to wait_ms on the map
 * group; the client gives up slack_ms after that. Waits tick_ms at a time
 * and gives up early (KVMUX_MAPC_GAVEUP) when go_on(ud) returns 0.
 * Returns KVMUX_MAPC_OK with the map's bytes in *out (malloc; *len),
 * KVMUX_MAPC_NOTFOUND (the map group has no map), KVMUX_MAPC_GAVEUP, or a
 * KVMUX_E* code (< 0). */
int kvmux_mapc_watch(kvmux_mapc *c, uint64_t known, uint32_t wait_ms, int slack_ms,
                     int tick_ms, int (*go_on)(void *ud), void *ud, uint8_t **out,
                     size_t *len);
/* 1 if code (< 0) means the connection is gone (reopen it). */
int kvmux_mapc_fatal(int code);
/* The name of a code (kvmux_strerror). */
const char *kvmux_mapc_strerror(int code);
/* Close c (NULL: nothing). */
void kvmux_mapc_close(kvmux_mapc *c);

#endif
