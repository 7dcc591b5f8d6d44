/* Shared between the files of src/cluster only. */
#ifndef KVMUX_CLUSTER_INTERNAL_H
#define KVMUX_CLUSTER_INTERNAL_H

#include <stddef.h>

/* 1 if a[0..len) is a member address a map may hold: 1..ADDR_MAX-1 bytes
 * of printable ASCII without spaces (kvmux_hostport_parse would strip
 * them, and the wire form is canonical) or '#' (the text form's comment:
 * every valid map must survive format_text -> parse_text), and a valid
 * host:port. */
int kvmux__map_addr_valid(const char *a, size_t len);

#endif
