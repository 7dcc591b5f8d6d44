/* Log entry encoding and decoding (entry.h). */
#include "entry.h"

#include <string.h>

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

size_t kvmux_entry_cmd_size(uint8_t extras_len, uint16_t key_len, uint32_t value_len) {
    return KVMUX_ENTRY_CMD_HDR_LEN + (size_t)extras_len + key_len + value_len;
}

void kvmux_entry_encode_hdr(uint8_t *out, const kvmux_entry_hdr *h) {
    put32(out, KVMUX_ENTRY_MAGIC);
    out[4] = KVMUX_ENTRY_FORMAT;
    out[5] = h->origin.replica;
    put16(out + 6, h->origin.loop);
    put64(out + 8, h->origin.nonce);
    put64(out + 16, h->origin.seq);
    put64(out + 24, h->clock_ms);
    put32(out + 32, h->ncmds);
    put32(out + 36, h->sess_window);
    put32(out + 40, h->sess_max);
    put32(out + 44, 0);
    put64(out + 48, h->sess_timeout_ms);
}

void kvmux_entry_set_ncmds(uint8_t *out, uint32_t ncmds) { put32(out + 32, ncmds); }

size_t kvmux_entry_encode_cmd(uint8_t *out, const kvmux_entry_cmd *c) {
    out[0] = c->op;
    out[1] = c->extras_len;
    put16(out + 2, c->key_len);
    put32(out + 4, c->value_len);
    put64(out + 8, c->session);
    put64(out + 16, c->seq);
    size_t off = KVMUX_ENTRY_CMD_HDR_LEN;
    if (c->extras_len) memcpy(out + off, c->extras, c->extras_len);
    off += c->extras_len;
    if (c->key_len) memcpy(out + off, c->key, c->key_len);
    off += c->key_len;
    if (c->value_len) memcpy(out + off, c->value, c->value_len);
    return off + c->value_len;
}

int kvmux_entry_decode_hdr(const uint8_t *buf, size_t len, kvmux_entry_hdr *h,
                           kvmux_entry_iter *it) {
    if (len < KVMUX_ENTRY_FORMAT1_HDR_LEN || get32(buf) != KVMUX_ENTRY_MAGIC ||
        (buf[4] != 1 && buf[4] != KVMUX_ENTRY_FORMAT))
        return -1;
    uint8_t fmt = buf[4];
    size_t hdr = fmt == 1 ? KVMUX_ENTRY_FORMAT1_HDR_LEN : KVMUX_ENTRY_HDR_LEN;
    size_t cmd = fmt == 1 ? KVMUX_ENTRY_FORMAT1_CMD_HDR_LEN : KVMUX_ENTRY_CMD_HDR_LEN;
    if (len < hdr) return -1;
    h->format = fmt;
    h->sess_window = fmt == 1 ? 0 : get32(buf + 36);
    h->sess_max = fmt == 1 ? 0 : get32(buf + 40);
    h->sess_timeout_ms = fmt == 1 ? 0 : get64(buf + 48);
    /* The session limits size the state machine's tables (a reply ring
     * grows up to the window): outside what kvmuxd's options allow, the
     * entry is damaged, not a configuration. */
    if (h->sess_window > KVMUX_ENTRY_SESS_WINDOW_MAX || h->sess_window == 1 ||
        h->sess_max > KVMUX_ENTRY_SESS_MAX)
        return -1;
    h->origin.replica = buf[5];
    h->origin.loop = get16(buf + 6);
    h->origin.nonce = get64(buf + 8);
    h->origin.seq = get64(buf + 16);
    h->clock_ms = get64(buf + 24);
    h->ncmds = get32(buf + 32);
    /* Every command takes at least its header: a count the buffer cannot
     * hold is refused before anyone sizes an array by it. */
    if (h->ncmds > (len - hdr) / cmd) return -1;
    it->p = buf;
    it->len = len;
    it->off = hdr;
    it->left = h->ncmds;
    it->format = fmt;
    return 0;
}

int kvmux_entry_next(kvmux_entry_iter *it, kvmux_entry_cmd *c) {
    if (it->left == 0) {
        /* Up to 7 zero bytes of padding (raft_uv wants entries in
         * multiples of 8 bytes), nothing else. */
        size_t pad = it->len - it->off;
        if (pad >= 8) return -1;
        for (size_t i = 0; i < pad; i++)
            if (it->p[it->off + i] != 0) return -1;
        return 0;
    }
    size_t rest = it->len - it->off;
    size_t hl = it->format == 1 ? KVMUX_ENTRY_FORMAT1_CMD_HDR_LEN : KVMUX_ENTRY_CMD_HDR_LEN;
    if (rest < hl) return -1;
    const uint8_t *p = it->p + it->off;
    c->op = p[0];
    c->extras_len = p[1];
    c->key_len = get16(p + 2);
    c->value_len = get32(p + 4);
    c->session = hl == KVMUX_ENTRY_CMD_HDR_LEN ? get64(p + 8) : 0;
    c->seq = hl == KVMUX_ENTRY_CMD_HDR_LEN ? get64(p + 16) : 0;
    if (c->extras_len > KVMUX_ENTRY_MAX_EXTRAS) return -1;
    uint64_t need = (uint64_t)hl + c->extras_len + c->key_len + c->value_len;
    if (need > rest) return -1;
    c->extras = p + hl;
    c->key = c->extras + c->extras_len;
    c->value = c->key + c->key_len;
    it->off += (size_t)need;
    it->left--;
    return 1;
}
