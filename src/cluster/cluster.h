/* The sharded cluster's shared core: key -> slot, the slot map and its wire
 * format, and the WRONG_SHARD / TRY_AGAIN redirect values. Client and
 * server both use it (docs/CLUSTER.md, docs/PROTOCOL.md section 18);
 * neither includes the other.
 *
 * Sans-IO like src/proto: no sockets, no threads, no allocation. A map is a
 * plain struct of fixed arrays (about 150 KiB): the caller owns it and
 * usually allocates it on the heap. */
#ifndef KVMUX_CLUSTER_H
#define KVMUX_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_SLOTS 16384u            /* hash slots; slot = hash & 16383 */
#define KVMUX_MAP_MAX_GROUPS 256u     /* groups in one map */
#define KVMUX_MAP_MAX_MEMBERS 7u      /* members listed per group */
#define KVMUX_MAP_ADDR_MAX 64u        /* "host:port" incl. NUL */
#define KVMUX_MAP_MAGIC "KVSM"        /* first 4 bytes of an encoded map */
#define KVMUX_MAP_FORMAT 1u           /* the byte after the magic */
/* Largest encoded map: header, every group full, one range per slot. */
#define KVMUX_MAP_WIRE_MAX                                                            \
    (4u + 1u + 8u + 2u + KVMUX_MAP_MAX_GROUPS * (2u + 1u + KVMUX_MAP_MAX_MEMBERS *    \
                                                  KVMUX_MAP_ADDR_MAX) +               \
     2u + KVMUX_SLOTS * 6u)

/* The slot of a key: CRC16-XMODEM (poly 0x1021, init 0, no reflection, no
 * final xor) of the key's hash tag, or of the whole key when it has none,
 * masked to 14 bits. The hash tag is the bytes between the first '{' and
 * the first '}' after it, when there is at least one byte between them.
 * Byte for byte Redis Cluster's HASH_SLOT, so "{user1}.a" and "{user1}.b"
 * share a slot and a key's slot is what redis-cli's CLUSTER KEYSLOT says.
 * Any bytes, any length (0 included). */
uint16_t kvmux_slot(const void *key, size_t len);

/* CRC16-XMODEM of p[0..n) (the check value of "123456789" is 0x31C3). */
uint16_t kvmux_crc16(const void *p, size_t n);

typedef struct kvmux_map_group {
    uint16_t id;                                       /* 1..65535 */
    uint8_t n;                                         /* members, 1..MAX_MEMBERS */
    char addr[KVMUX_MAP_MAX_MEMBERS][KVMUX_MAP_ADDR_MAX]; /* client "host:port" */
} kvmux_map_group;

/* A slot map: which group serves each slot, and how to reach each group.
 * The epoch only grows: a map with a higher epoch replaces one with a lower
 * one, never the reverse. owner[s] == 0: slot s is not assigned. */
typedef struct kvmux_map {
    uint64_t epoch;                                    /* >= 1 in a valid map */
    uint16_t ngroups;
    kvmux_map_group groups[KVMUX_MAP_MAX_GROUPS];      /* ascending id */
    uint16_t owner[KVMUX_SLOTS];                       /* group id per slot */
} kvmux_map;

/* Empty map: epoch 0, no groups, every slot unassigned. */
void kvmux_map_init(kvmux_map *m);

/* The group with this id, or NULL. */
const kvmux_map_group *kvmux_map_group_get(const kvmux_map *m, uint16_t id);

/* Check a map's invariants: epoch >= 1; groups in ascending id order, ids
 * nonzero and unique, 1..MAX_MEMBERS members each, every address a valid
 * host:port (src/proto/hostport.h); every owner either 0 or a listed
 * group. Returns 0, or -1 with a one-line reason in err (err may be NULL). */
int kvmux_map_check(const kvmux_map *m, char *err, size_t errcap);

/* Encoded size of a valid map (docs/PROTOCOL.md 18.2), <= KVMUX_MAP_WIRE_MAX. */
size_t kvmux_map_encoded_size(const kvmux_map *m);

/* Encode a valid map into out[0..cap). Returns the bytes written, or 0 when
 * cap is too small. Deterministic: equal maps encode to equal bytes
 * (owners as maximal runs of one group, unassigned runs left out). */
size_t kvmux_map_encode(const kvmux_map *m, uint8_t *out, size_t cap);

/* Decode p[0..len) into m and check it (kvmux_map_check). Strict: wrong
 * magic or format, truncation, trailing bytes, overlapping or unordered
 * ranges, a range naming an unknown group: -1 with the reason in err, and m
 * is left in an unspecified but safe state. Returns 0 on success. */
int kvmux_map_decode(kvmux_map *m, const uint8_t *p, size_t len, char *err,
                     size_t errcap);

/* The operators' text form (kvmux-cli cluster assign / slots):
 *
 *   # comments and blank lines are ignored
 *   epoch 7                         (optional; 0 or absent: "the next one")
 *   group 1 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003
 *   group 2 127.0.0.1:7101
 *   slots 0-8191 1
 *   slots 8192-16383 2
 *   slots 42 2                      (a single slot; later lines win)
 *
 * Parses text (NUL-terminated) into m. An absent epoch leaves m->epoch 0
 * for the caller to set; everything else is checked as kvmux_map_check
 * does, except epoch >= 1. Returns 0, or -1 with "line N: reason" in err. */
int kvmux_map_parse_text(kvmux_map *m, const char *text, char *err, size_t errcap);

/* Write the text form of m into out[0..cap), NUL-terminated, slots as
 * maximal ranges. Returns the length it needs (like snprintf): a result
 * >= cap means it was cut. */
size_t kvmux_map_format_text(const kvmux_map *m, char *out, size_t cap);

/* The value of a WRONG_SHARD response (status 16): the slot, the epoch of
 * the map the server answered from, the owning group and its members'
 * client addresses, comma-separated (docs/PROTOCOL.md 18.3). */
typedef struct kvmux_redirect {
    uint16_t slot;
    uint64_t epoch;
    uint16_t group;
    char endpoints[KVMUX_MAP_MAX_MEMBERS * KVMUX_MAP_ADDR_MAX]; /* NUL-terminated */
} kvmux_redirect;

/* u16 slot | u64 epoch | u16 group | endpoints (ASCII, no NUL). Returns the
 * bytes written (12 + strlen(endpoints)), or 0 when cap is too small. */
size_t kvmux_redirect_encode(const kvmux_redirect *r, uint8_t *out, size_t cap);

/* Decode a WRONG_SHARD value: -1 when shorter than 12 bytes, slot >= 16384,
 * endpoints too long for r->endpoints or not printable ASCII. An empty
 * endpoint list is valid (the group is known, its members are not). */
int kvmux_redirect_decode(kvmux_redirect *r, const uint8_t *p, size_t len);

/* TRY_AGAIN (status 17): u16 slot | u64 epoch, exactly 10 bytes. */
size_t kvmux_try_again_encode(uint16_t slot, uint64_t epoch, uint8_t *out, size_t cap);
int kvmux_try_again_decode(const uint8_t *p, size_t len, uint16_t *slot, uint64_t *epoch);

#endif
