/* Key -> hash slot: CRC16-XMODEM with Redis Cluster's {hash tag} rule
 * (cluster.h). A byte at a time without a table: the cluster client
 * hashes every request's key (bench/routing.sh showed the bitwise loop at
 * ~8% of a client's CPU), and the file stays free of a 512-byte constant
 * nobody can review. */
#include <string.h>

#include "cluster.h"

/* Why the byte step below is CRC16-XMODEM (P = 0x1021 = x^16 + x^12 +
 * x^5 + 1, MSB first, init 0): feeding byte b makes crc (crc << 8) ^ T(t)
 * with t = (crc >> 8) ^ b and T(t) = t*x^16 mod P = t*(x^12 + x^5 + 1)
 * mod P. The only part of that past x^15 is the top nibble of t times
 * x^12, which reduces once more to (t >> 4)*(x^12 + x^5 + 1), now of
 * degree <= 15. So T(t) = u*(x^12 + x^5 + 1) truncated to 16 bits, with
 * u = t ^ (t >> 4). tests/unit/cluster_test.c checks it against the
 * bitwise definition (every 2-byte input and random lengths). */
uint16_t kvmux_crc16(const void *p, size_t n) {
    const uint8_t *b = p;
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned u = ((unsigned)(crc >> 8) ^ b[i]) & 0xffu;
        u ^= u >> 4;
        crc = (uint16_t)((crc << 8) ^ (u << 12) ^ (u << 5) ^ u);
    }
    return crc;
}

uint16_t kvmux_slot(const void *key, size_t len) {
    if (len == 0) return 0; /* crc16 of nothing (key may be NULL) */
    const uint8_t *k = key;
    const uint8_t *open = memchr(k, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - k) - 1;
        const uint8_t *close = rest ? memchr(open + 1, '}', rest) : NULL;
        /* A tag needs a '}' and at least one byte between the braces;
         * otherwise (no '}', or "{}") the whole key is hashed. */
        if (close && close > open + 1)
            return kvmux_crc16(open + 1, (size_t)(close - open - 1)) & (KVMUX_SLOTS - 1);
    }
    return kvmux_crc16(k, len) & (KVMUX_SLOTS - 1);
}
