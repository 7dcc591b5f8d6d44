/* Big values staged in the replicated state machine (stage.h). */
#include "stage.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h" /* kvmux_load_u32be, kvmux_store_u32be */

struct kvmux_stage_val {
    kvmux_stage_val *next;
    uint8_t id[KVMUX_STAGE_ID_LEN];
    uint32_t total, filled;
    uint64_t touched_ms;     /* replicated clock of the last chunk */
    uint8_t *buf;            /* total bytes */
};

/* Encoding per value: id, u32 total, u32 filled, u64 touched, the bytes. */
#define REC_HDR (KVMUX_STAGE_ID_LEN + 16u)


void kvmux_stage_init(kvmux_stage_tab *t) { memset(t, 0, sizeof *t); }

static void val_free(kvmux_stage_tab *t, kvmux_stage_val *v) {
    t->count--;
    t->bytes -= v->total;
    free(v->buf);
    free(v);
}

void kvmux_stage_clear(kvmux_stage_tab *t) {
    while (t->head) {
        kvmux_stage_val *v = t->head;
        t->head = v->next;
        val_free(t, v);
    }
}

/* Unlink the value id; returns it or NULL. */
static kvmux_stage_val *unlink_id(kvmux_stage_tab *t, const uint8_t *id) {
    for (kvmux_stage_val **pp = &t->head; *pp; pp = &(*pp)->next) {
        if (memcmp((*pp)->id, id, KVMUX_STAGE_ID_LEN) != 0) continue;
        kvmux_stage_val *v = *pp;
        *pp = v->next;
        return v;
    }
    return NULL;
}

static kvmux_stage_val *val_new(kvmux_stage_tab *t, const uint8_t *id, uint32_t total) {
    if (t->count >= KVMUX_STAGE_MAX_VALUES || t->bytes + total > KVMUX_STAGE_MAX_BYTES)
        return NULL;
    kvmux_stage_val *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->buf = malloc(total ? total : 1);
    if (!v->buf) {
        free(v);
        return NULL;
    }
    memcpy(v->id, id, KVMUX_STAGE_ID_LEN);
    v->total = total;
    t->count++;
    t->bytes += total;
    return v;
}

int kvmux_stage_append(kvmux_stage_tab *t, const uint8_t *id, uint32_t off, uint32_t total,
                       const uint8_t *p, uint32_t n, uint64_t now_ms) {
    kvmux_stage_val *v = unlink_id(t, id);
    if (off == 0 && v) {
        val_free(t, v);
        v = NULL;
    }
    if (off == 0) v = val_new(t, id, total);
    if (!v) return -1;
    if (v->total != total || v->filled != off || n > total - off) {
        val_free(t, v);
        return -1;
    }
    if (n) memcpy(v->buf + off, p, n);
    v->filled += n;
    v->touched_ms = now_ms;
    v->next = t->head;
    t->head = v;
    return 0;
}

uint8_t *kvmux_stage_take(kvmux_stage_tab *t, const uint8_t *id, uint32_t total) {
    kvmux_stage_val *v = unlink_id(t, id);
    if (!v) return NULL;
    uint8_t *buf = NULL;
    if (v->total == total && v->filled == total) {
        buf = v->buf;
        v->buf = NULL;
    }
    val_free(t, v);
    return buf;
}

void kvmux_stage_expire(kvmux_stage_tab *t, uint64_t now_ms) {
    for (kvmux_stage_val **pp = &t->head; *pp;) {
        kvmux_stage_val *v = *pp;
        if (now_ms > v->touched_ms && now_ms - v->touched_ms > KVMUX_STAGE_TIMEOUT_MS) {
            *pp = v->next;
            val_free(t, v);
        } else {
            pp = &v->next;
        }
    }
}

size_t kvmux_stage_encoded_len(const kvmux_stage_tab *t) {
    size_t n = 4;
    for (const kvmux_stage_val *v = t->head; v; v = v->next) n += REC_HDR + v->filled;
    return n;
}

size_t kvmux_stage_encode(const kvmux_stage_tab *t, uint8_t *out) {
    size_t off = 4;
    kvmux_store_u32be(out, t->count);
    for (const kvmux_stage_val *v = t->head; v; v = v->next) {
        uint8_t *p = out + off;
        memcpy(p, v->id, KVMUX_STAGE_ID_LEN);
        kvmux_store_u32be(p + 16, v->total);
        kvmux_store_u32be(p + 20, v->filled);
        kvmux_store_u64be(p + 24, v->touched_ms);
        if (v->filled) memcpy(p + REC_HDR, v->buf, v->filled);
        off += REC_HDR + v->filled;
    }
    return off;
}

long kvmux_stage_decode(kvmux_stage_tab *t, const uint8_t *buf, size_t len) {
    kvmux_stage_clear(t);
    if (len < 4) return -1;
    uint32_t count = kvmux_load_u32be(buf);
    if (count > KVMUX_STAGE_MAX_VALUES) return -1;
    size_t off = 4;
    kvmux_stage_val **tail = &t->head;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < REC_HDR) goto bad;
        const uint8_t *p = buf + off;
        uint32_t total = kvmux_load_u32be(p + 16), filled = kvmux_load_u32be(p + 20);
        if (filled > total || filled > len - off - REC_HDR) goto bad;
        kvmux_stage_val *v = val_new(t, p, total);
        if (!v) goto bad;
        v->filled = filled;
        v->touched_ms = kvmux_load_u64be(p + 24);
        if (filled) memcpy(v->buf, p + REC_HDR, filled);
        *tail = v; /* keep the encoded order: most recently touched first */
        tail = &v->next;
        off += REC_HDR + filled;
    }
    return (long)off;
bad:
    kvmux_stage_clear(t);
    return -1;
}
