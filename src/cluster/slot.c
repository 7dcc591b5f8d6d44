/* Key -> hash slot: CRC16-XMODEM with Redis Cluster's {hash tag} rule
 * (cluster.h). Bitwise, no table: keys are short and this keeps the file
 * free of a 512-byte constant nobody can review. */
#include "cluster.h"

uint16_t kvmux_crc16(const void *p, size_t n) {
    const uint8_t *b = p;
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(b[i] << 8);
        for (int k = 0; k < 8; k++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

uint16_t kvmux_slot(const void *key, size_t len) {
    const uint8_t *k = key;
    size_t open = 0;
    while (open < len && k[open] != '{') open++;
    if (open < len) {
        size_t close = open + 1;
        while (close < len && k[close] != '}') close++;
        /* A tag needs a '}' and at least one byte between the braces;
         * otherwise (no '}', or "{}") the whole key is hashed. */
        if (close < len && close > open + 1)
            return kvmux_crc16(k + open + 1, close - open - 1) & (KVMUX_SLOTS - 1);
    }
    return kvmux_crc16(k, len) & (KVMUX_SLOTS - 1);
}
