/* The SCAN reply's key list (docs/PROTOCOL.md section 4.1): a sequence of
 * [u16 key_len][key] entries filling the RESPONSE value. Sans-IO like the
 * rest of src/proto: the server appends entries into a buffer it owns,
 * the client walks a received value without copying it.
 *
 * The walker is as strict as the frame decoder: an entry whose length
 * runs past the value is an error, never a read past the buffer. */
#include "proto.h"

#include <string.h>

void kvmux_scan_put_key(uint8_t *out, size_t *off, const uint8_t *key, uint16_t klen) {
    kvmux_store_u16be(out + *off, klen);
    if (klen) memcpy(out + *off + KVMUX_SCAN_ENTRY_HDR, key, klen);
    *off += KVMUX_SCAN_ENTRY_HDR + (size_t)klen;
}

int kvmux_scan_next_key(const uint8_t *buf, size_t len, size_t *off, const uint8_t **key,
                        uint16_t *klen) {
    if (*off >= len) return 0;
    if (len - *off < KVMUX_SCAN_ENTRY_HDR) return -KVMUX_ERR_BAD_LENGTH;
    uint16_t n = kvmux_load_u16be(buf + *off);
    if (len - *off - KVMUX_SCAN_ENTRY_HDR < n) return -KVMUX_ERR_BAD_LENGTH;
    *key = buf + *off + KVMUX_SCAN_ENTRY_HDR;
    *klen = n;
    *off += KVMUX_SCAN_ENTRY_HDR + (size_t)n;
    return 1;
}

long kvmux_scan_count_keys(const uint8_t *buf, size_t len) {
    size_t off = 0;
    long n = 0;
    const uint8_t *k;
    uint16_t kl;
    int rc;
    while ((rc = kvmux_scan_next_key(buf, len, &off, &k, &kl)) == 1) n++;
    return rc < 0 ? rc : n;
}
