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

/* Set (add or replace) the entry for p->id. Returns 0, or -1 if the table
 * is full. */
int kvmux_peers_put(kvmux_peers *ps, const kvmux_peer *p);

/* The member table as it travels in the Raft log and in snapshots
 * (docs/REPLICATION.md "Membership"): big-endian
 *   u32 magic "KVRM", u8 format (1), u8 count, u16 0, u32 total length
 *   (header included, padding excluded), then per member: u8 id,
 *   u8 raft_len, u8 client_len, raft address, client address;
 * then zero bytes to a multiple of 8 (raft_uv wants entry lengths so).
 * KVMUX_PEERS_WIRE_MAX bounds the padded size. */
#define KVMUX_PEERS_MAGIC 0x4b56524du /* "KVRM" */
#define KVMUX_PEERS_WIRE_MAX (16u + KVMUX_PEERS_MAX * (3u + 2u * KVMUX_PEER_ADDR_MAX))

/* Encode ps into buf (at least KVMUX_PEERS_WIRE_MAX bytes). Returns the
 * padded length. */
size_t kvmux_peers_encode(const kvmux_peers *ps, uint8_t *buf);

/* 1 if buf starts with the table's magic. */
int kvmux_peers_is_table(const uint8_t *buf, size_t len);

/* Decode a table from buf[0..len) into out; *used gets its padded length
 * (where what follows it starts). Returns 0, or -1 if malformed (out is
 * then unspecified). */
int kvmux_peers_decode(const uint8_t *buf, size_t len, kvmux_peers *out, size_t *used);

#endif
