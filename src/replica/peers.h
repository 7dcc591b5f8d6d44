/* --peers parsing: "ID=RAFTHOST:RAFTPORT/CLIENTHOST:CLIENTPORT,..." into a
 * fixed table. No allocation, no I/O; any thread. */
#ifndef KVMUX_PEERS_H
#define KVMUX_PEERS_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_PEERS_MAX 16u      /* members of one group (Raft needs few) */
#define KVMUX_PEER_ADDR_MAX 64u  /* "host:port" incl. NUL */

typedef struct kvmux_peer {
    uint32_t id;                         /* 1..255 */
    char raft_addr[KVMUX_PEER_ADDR_MAX]; /* "host:port" of the Raft transport */
    char client_addr[KVMUX_PEER_ADDR_MAX]; /* "host:port" clients connect to */
} kvmux_peer;

typedef struct kvmux_peers {
    uint32_t n;
    kvmux_peer p[KVMUX_PEERS_MAX];
} kvmux_peers;

/* Parse spec into out. Every entry needs an id 1..255 (unique), two
 * non-empty "host:port" addresses with a port 1..65535, each shorter than
 * KVMUX_PEER_ADDR_MAX; at most KVMUX_PEERS_MAX entries. Returns 0, or -1
 * with a message in err. */
int kvmux_peers_parse(const char *spec, kvmux_peers *out, char *err, size_t errlen);

/* The entry with this id, or NULL. */
const kvmux_peer *kvmux_peers_find(const kvmux_peers *ps, uint32_t id);

#endif
