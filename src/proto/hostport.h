/* "host:port" addresses, one parser for both sides: the client's endpoint
 * lists and NOT_LEADER redirects (src/client/failover.c), the server's
 * --peers (src/replica/peers.c) and the peer TLS transport
 * (src/replica/transport.c). What --peers accepts, a client can follow. */
#ifndef KVMUX_HOSTPORT_H
#define KVMUX_HOSTPORT_H

#include <stddef.h>
#include <stdint.h>

/* Parse "host:port", or "[IPv6]:port", from p[0..len); spaces and tabs
 * around it are ignored. host: 1..host_cap-1 bytes of printable ASCII
 * other than ',', '[' and ']', and no ':' unless in brackets; it is
 * written NUL-terminated without the brackets. port: 1..65535, 1 to 5
 * decimal digits. Returns 0, or -1 (malformed, or the host does not fit:
 * nothing promised about the outputs). Pure: no allocation, no I/O. */
int kvmux_hostport_parse(const char *p, size_t len, char *host, size_t host_cap,
                         uint16_t *port);

#endif
