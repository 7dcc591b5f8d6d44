/* CRC32C (Castagnoli polynomial, as iSCSI, ext4 and LevelDB use) for the
 * append-only log's record checksums.
 *
 * Design: the SSE4.2 crc32 instruction when the CPU has it (checked once
 * at run time, so the binary still runs everywhere), else a byte-at-a-time
 * table. Both give the same result; the unit test checks the standard
 * check value ("123456789" -> 0xE3069283) through the public function. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "aof.h"

static uint32_t table[256];
static int use_hw;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
#if defined(__x86_64__)
    use_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[i] = c;
    }
}

static uint32_t crc_soft(uint32_t crc, const uint8_t *p, size_t n) {
    while (n--) crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p,
                                                         size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

uint32_t kvmux_crc32c(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = data;
    crc = ~crc;
    pthread_once(&once, init);
#if defined(__x86_64__)
    if (use_hw) return ~crc_hw(crc, p, n);
#endif
    return ~crc_soft(crc, p, n);
}
