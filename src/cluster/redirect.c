/* WRONG_SHARD and TRY_AGAIN values (docs/PROTOCOL.md 18.3). */
#include <string.h>

#include "../proto/proto.h"
#include "cluster.h"

#define REDIRECT_HDR 12u /* u16 slot, u64 epoch, u16 group */

size_t kvmux_redirect_encode(const kvmux_redirect *r, uint8_t *out, size_t cap) {
    size_t n = strnlen(r->endpoints, sizeof r->endpoints);
    if (n == sizeof r->endpoints || cap < REDIRECT_HDR + n) return 0;
    kvmux_store_u16be(out, r->slot);
    kvmux_store_u64be(out + 2, r->epoch);
    kvmux_store_u16be(out + 10, r->group);
    memcpy(out + REDIRECT_HDR, r->endpoints, n);
    return REDIRECT_HDR + n;
}

int kvmux_redirect_decode(kvmux_redirect *r, const uint8_t *p, size_t len) {
    if (len < REDIRECT_HDR || len - REDIRECT_HDR >= sizeof r->endpoints) return -1;
    size_t n = len - REDIRECT_HDR;
    for (size_t i = 0; i < n; i++)
        if (p[REDIRECT_HDR + i] < 0x20 || p[REDIRECT_HDR + i] > 0x7e) return -1;
    uint16_t slot = kvmux_load_u16be(p);
    if (slot >= KVMUX_SLOTS) return -1;
    r->slot = slot;
    r->epoch = kvmux_load_u64be(p + 2);
    r->group = kvmux_load_u16be(p + 10);
    memcpy(r->endpoints, p + REDIRECT_HDR, n);
    r->endpoints[n] = '\0';
    return 0;
}

size_t kvmux_try_again_encode(uint16_t slot, uint64_t epoch, uint8_t *out, size_t cap) {
    if (cap < 10) return 0;
    kvmux_store_u16be(out, slot);
    kvmux_store_u64be(out + 2, epoch);
    return 10;
}

int kvmux_try_again_decode(const uint8_t *p, size_t len, uint16_t *slot, uint64_t *epoch) {
    if (len != 10 || kvmux_load_u16be(p) >= KVMUX_SLOTS) return -1;
    *slot = kvmux_load_u16be(p);
    *epoch = kvmux_load_u64be(p + 2);
    return 0;
}
