/* The source group's migration state (migout.h; docs/MIGRATION.md 5). */
#include "migout.h"

#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "entry.h"
#include "fsm.h"
#include "proto.h"

struct kvmux_migout_key {
    kvmux_migout_key *next;
    uint64_t hash;
    uint32_t gen;
    uint16_t klen;
    uint8_t key[];
};

/* Fixed part of an encoded record after has_out: id, first, last, dst,
 * start_epoch, state, gen, overflow, n. */
#define REC_LEN (4u + 2u + 2u + 2u + 8u + 1u + 4u + 1u + 4u)
#define MIN_BUCKETS 64u

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
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

static void res(kvmux_fsm_result *r, int status, const uint64_t *x) {
    if (!r) return;
    r->status = (uint8_t)status;
    r->extras_len = 0;
    if (x) {
        put64(r->extras, *x);
        r->extras_len = 8;
    }
}

static uint64_t hash_key(const uint8_t *k, size_t n) { /* FNV-1a: replicas only need agreement on membership, not order */
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 0x100000001b3ull;
    return h;
}

void kvmux_migout_init(kvmux_migout *mo) {
    memset(mo, 0, sizeof *mo);
    pthread_mutex_init(&mo->mu, NULL);
    atomic_init(&mo->fence, 0);
    atomic_init(&mo->fence_gen, 0);
}

/* Drop every key (mu held, or no reader yet). */
static void set_free(kvmux_migout *mo) {
    for (size_t b = 0; b < mo->nbuckets; b++)
        for (kvmux_migout_key *k = mo->buckets[b], *n; k; k = n) {
            n = k->next;
            free(k);
        }
    free(mo->buckets);
    mo->buckets = NULL;
    mo->nbuckets = 0;
    mo->nkeys = 0;
    mo->kbytes = 0;
}

static void set_fence(kvmux_migout *mo, uint64_t word) {
    if (atomic_load(&mo->fence) == word) return;
    atomic_store(&mo->fence, word);
    atomic_fetch_add(&mo->fence_gen, 1);
}

/* Remove the record (mu held). */
static void record_drop(kvmux_migout *mo) {
    set_free(mo);
    mo->state = KVMUX_MIGOUT_NONE;
    mo->id = 0;
    mo->first = mo->last = mo->dst = 0;
    mo->start_epoch = 0;
    mo->gen = 0;
    mo->overflow = 0;
    set_fence(mo, 0);
}

void kvmux_migout_reset(kvmux_migout *mo) {
    pthread_mutex_lock(&mo->mu);
    record_drop(mo);
    pthread_mutex_unlock(&mo->mu);
}

void kvmux_migout_clear(kvmux_migout *mo) {
    pthread_mutex_lock(&mo->mu);
    record_drop(mo);
    pthread_mutex_unlock(&mo->mu);
    pthread_mutex_destroy(&mo->mu);
}

size_t kvmux_migout_begin_value(uint8_t *out, uint16_t first, uint16_t last, uint16_t dst,
                                uint64_t start_epoch) {
    put16(out, first);
    put16(out + 2, last);
    put16(out + 4, dst);
    put64(out + 6, start_epoch);
    return 14;
}

size_t kvmux_migout_n_value(uint8_t *out, uint32_t n) {
    put32(out, n);
    return 4;
}

int kvmux_migout_step(const kvmux_entry_cmd *c) {
    return c->extras_len == KVMUX_MIGSTEP_EXTRAS_LEN ? c->extras[4] : 0;
}

int kvmux_migout_is_write(uint8_t op) {
    switch (op) {
    case KVMUX_OP_SET: case KVMUX_OP_DEL: case KVMUX_OP_INCR: case KVMUX_OP_CAS:
    case KVMUX_OP_EXPIRE: case KVMUX_OP_PERSIST: case KVMUX_ENTRY_OP_SET_STAGED:
    case KVMUX_ENTRY_OP_CAS_STAGED:
        return 1;
    default:
        return 0;
    }
}

static int covers(const kvmux_migout *mo, uint16_t slot) {
    return mo->state != KVMUX_MIGOUT_NONE && slot >= mo->first && slot <= mo->last;
}

/* Double the table (mu held). Out of memory: keep the old one, longer
 * chains only. */
static void set_grow(kvmux_migout *mo) {
    size_t nb = mo->nbuckets ? mo->nbuckets * 2 : MIN_BUCKETS;
    kvmux_migout_key **b = calloc(nb, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < mo->nbuckets; i++)
        for (kvmux_migout_key *k = mo->buckets[i], *n; k; k = n) {
            n = k->next;
            k->next = b[k->hash & (nb - 1)];
            b[k->hash & (nb - 1)] = k;
        }
    free(mo->buckets);
    mo->buckets = b;
    mo->nbuckets = nb;
}

/* key -> gen (mu held): 0, or -1 when it would pass a cap or memory ran
 * out (the caller sets overflow). */
static int set_put(kvmux_migout *mo, const uint8_t *key, size_t klen, uint32_t gen) {
    uint64_t h = hash_key(key, klen);
    if (mo->nbuckets) {
        for (kvmux_migout_key *k = mo->buckets[h & (mo->nbuckets - 1)]; k; k = k->next)
            if (k->hash == h && k->klen == klen && memcmp(k->key, key, klen) == 0) {
                k->gen = gen;
                return 0;
            }
    }
    if (mo->nkeys >= KVMUX_MIG_DIRTY_MAX_KEYS || klen > KVMUX_MIG_DIRTY_MAX_BYTES - mo->kbytes)
        return -1;
    if (mo->nkeys >= mo->nbuckets) set_grow(mo);
    kvmux_migout_key *k = malloc(sizeof *k + klen);
    if (!k || !mo->nbuckets) {
        free(k);
        return -1;
    }
    k->hash = h;
    k->gen = gen;
    k->klen = (uint16_t)klen;
    memcpy(k->key, key, klen);
    k->next = mo->buckets[h & (mo->nbuckets - 1)];
    mo->buckets[h & (mo->nbuckets - 1)] = k;
    mo->nkeys++;
    mo->kbytes += klen;
    return 0;
}

void kvmux_migout_note_write(kvmux_migout *mo, const uint8_t *key, size_t klen, uint16_t slot) {
    /* The applier's own state: read without the lock (only it writes). */
    if (mo->state != KVMUX_MIGOUT_COPYING || !covers(mo, slot)) return;
    pthread_mutex_lock(&mo->mu);
    if (set_put(mo, key, klen, mo->gen) != 0) mo->overflow = 1;
    pthread_mutex_unlock(&mo->mu);
}

int kvmux_migout_fenced(const kvmux_migout *mo, uint16_t slot) {
    uint64_t w = atomic_load_explicit(&mo->fence, memory_order_acquire);
    return w != 0 && slot >= (uint16_t)(w >> 16) && slot <= (uint16_t)w;
}

static int map_gives(const kvmux_map *map, uint16_t group, uint16_t first, uint16_t last) {
    if (!map || group == 0) return 0;
    for (uint32_t s = first; s <= last; s++)
        if (map->owner[s] != group) return 0;
    return 1;
}

void kvmux_migout_map_applied(kvmux_migout *mo, const kvmux_map *map, uint16_t group) {
    if (mo->state == KVMUX_MIGOUT_NONE || map_gives(map, group, mo->first, mo->last)) return;
    pthread_mutex_lock(&mo->mu);
    record_drop(mo);
    pthread_mutex_unlock(&mo->mu);
}

static void out_begin(kvmux_migout *mo, const kvmux_map *map, uint16_t group, uint32_t id,
                      const kvmux_entry_cmd *c, kvmux_fsm_result *r) {
    if (c->value_len != 14) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL);
        return;
    }
    uint16_t first = get16(c->value), last = get16(c->value + 2), dst = get16(c->value + 4);
    if (mo->state != KVMUX_MIGOUT_NONE) { /* a resent OUT_BEGIN is an OK */
        res(r, mo->id == id ? KVMUX_STATUS_OK : KVMUX_STATUS_BUSY, NULL);
        return;
    }
    if (id == 0 || first > last || last >= KVMUX_SLOTS || dst == 0 || dst == group ||
        !map_gives(map, group, first, last)) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL);
        return;
    }
    pthread_mutex_lock(&mo->mu);
    mo->state = KVMUX_MIGOUT_COPYING;
    mo->id = id;
    mo->first = first;
    mo->last = last;
    mo->dst = dst;
    mo->start_epoch = get64(c->value + 6);
    mo->gen = 1;
    mo->overflow = 0;
    pthread_mutex_unlock(&mo->mu);
    res(r, KVMUX_STATUS_OK, NULL);
}

/* Remove the keys with gen <= n (mu held). */
static void set_drain(kvmux_migout *mo, uint32_t n) {
    for (size_t b = 0; b < mo->nbuckets; b++) {
        kvmux_migout_key **pp = &mo->buckets[b];
        while (*pp) {
            kvmux_migout_key *k = *pp;
            if (k->gen > n) {
                pp = &k->next;
                continue;
            }
            *pp = k->next;
            mo->nkeys--;
            mo->kbytes -= k->klen;
            free(k);
        }
    }
}

void kvmux_migout_apply(kvmux_migout *mo, const kvmux_map *map, uint16_t group,
                        const kvmux_entry_cmd *c, kvmux_fsm_result *r) {
    int step = kvmux_migout_step(c);
    uint32_t id = c->extras_len == KVMUX_MIGSTEP_EXTRAS_LEN ? get32(c->extras) : 0;
    if (step == KVMUX_MIGSTEP_OUT_BEGIN) {
        out_begin(mo, map, group, id, c, r);
        return;
    }
    if (step == KVMUX_MIGSTEP_OUT_ABORT && c->value_len == 0) {
        pthread_mutex_lock(&mo->mu);
        if (mo->state != KVMUX_MIGOUT_NONE && mo->id == id) record_drop(mo);
        pthread_mutex_unlock(&mo->mu);
        res(r, KVMUX_STATUS_OK, NULL);
        return;
    }
    int with_n = step == KVMUX_MIGSTEP_OUT_CUT || step == KVMUX_MIGSTEP_OUT_DRAINED;
    if ((!with_n && step != KVMUX_MIGSTEP_OUT_FENCE) || c->value_len != (with_n ? 4u : 0u) ||
        mo->state == KVMUX_MIGOUT_NONE || mo->id != id) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL);
        return;
    }
    uint32_t n = with_n ? get32(c->value) : 0;
    uint64_t x;
    pthread_mutex_lock(&mo->mu);
    if (step == KVMUX_MIGSTEP_OUT_CUT) {
        if (n == mo->gen && mo->gen < UINT32_MAX) mo->gen++;
        x = mo->gen;
        res(r, KVMUX_STATUS_OK, &x);
    } else if (step == KVMUX_MIGSTEP_OUT_DRAINED) {
        if (n < mo->gen) set_drain(mo, n);
        x = mo->nkeys;
        res(r, n < mo->gen ? KVMUX_STATUS_OK : KVMUX_STATUS_VERSION_MISMATCH, &x);
    } else {
        /* From here the applier refuses writes for R and loops refuse
         * keyed requests for R (fsm.c, src/server/cluster.c). */
        mo->state = KVMUX_MIGOUT_FENCED;
        set_fence(mo, 1ull << 32 | (uint64_t)mo->first << 16 | mo->last);
        res(r, KVMUX_STATUS_OK, NULL);
    }
    pthread_mutex_unlock(&mo->mu);
}

void kvmux_migout_get_info(kvmux_migout *mo, kvmux_migout_info *out) {
    pthread_mutex_lock(&mo->mu);
    out->state = mo->state;
    out->id = mo->id;
    out->first = mo->first;
    out->last = mo->last;
    out->dst = mo->dst;
    out->start_epoch = mo->start_epoch;
    out->gen = mo->gen;
    out->overflow = mo->overflow;
    out->dirty_keys = mo->nkeys;
    out->dirty_bytes = mo->kbytes;
    pthread_mutex_unlock(&mo->mu);
}

/* ---- the migrate thread's read ---- */

typedef struct got {
    uint8_t *v;
    size_t n;
    uint64_t version;
    int oom;
} got;

static int got_read(void *ud, uint64_t version, const uint8_t *value, size_t len) {
    got *g = ud;
    g->version = version;
    g->n = len;
    g->v = malloc(len ? len : 1);
    if (!g->v) {
        g->oom = 1;
        return KVMUX_STATUS_INTERNAL;
    }
    if (len) memcpy(g->v, value, len);
    return 0;
}

/* One key's state: 1 present (g filled, *exp absolute or 0), 0 absent,
 * -1 out of memory. GET and TTL each run under the key's shard lock; a
 * write between them shows as a version change and the pair is read again
 * (bounded: a key written that often is in the set again anyway). */
static int read_state(kvmux_store *st, const uint8_t *key, size_t klen, got *g, uint64_t *exp) {
    for (int tries = 0;; tries++) {
        memset(g, 0, sizeof *g);
        int rc = kvmux_store_get(st, key, klen, got_read, g);
        if (g->oom) return -1;
        if (rc != KVMUX_STATUS_OK) return 0;
        uint64_t v2 = 0, left = 0;
        uint64_t now = kvmux_store_now(st);
        rc = kvmux_store_ttl(st, key, klen, &v2, &left);
        if (rc == KVMUX_STATUS_OK && v2 == g->version) {
            *exp = left ? now + left : 0;
            return 1;
        }
        free(g->v);
        g->v = NULL;
        /* Deleted meanwhile: absent. Still changing after 4 reads: absent
         * too -- a key written meanwhile has a newer gen and is copied
         * again, and after the fence nothing writes it. */
        if (rc != KVMUX_STATUS_OK || tries >= 3) return 0;
    }
}

long kvmux_migout_collect(kvmux_migout *mo, kvmux_store *st, uint32_t id, uint32_t upto,
                          kvmux_migout_key_fn fn, void *ud) {
    /* Copy the selected keys under mu, then read the store without it:
     * the applier must never wait on a store read done for the copy. */
    pthread_mutex_lock(&mo->mu);
    if (mo->state == KVMUX_MIGOUT_NONE || mo->id != id) {
        pthread_mutex_unlock(&mo->mu);
        return -1;
    }
    size_t cap = (size_t)mo->kbytes + (size_t)mo->nkeys * 6 + 1, len = 0;
    uint8_t *buf = malloc(cap);
    for (size_t b = 0; buf && b < mo->nbuckets; b++)
        for (kvmux_migout_key *k = mo->buckets[b]; k; k = k->next) {
            if (upto && k->gen > upto) continue;
            put16(buf + len, k->klen);
            put32(buf + len + 2, k->gen);
            memcpy(buf + len + 6, k->key, k->klen);
            len += 6u + k->klen;
        }
    pthread_mutex_unlock(&mo->mu);
    if (!buf) return -2;
    long count = 0;
    for (size_t off = 0; off < len;) {
        size_t kl = get16(buf + off);
        uint32_t gen = get32(buf + off + 2);
        const uint8_t *key = buf + off + 6;
        off += 6 + kl;
        got g;
        uint64_t exp = 0;
        int present = read_state(st, key, kl, &g, &exp);
        if (present < 0) {
            free(buf);
            return -2;
        }
        count++;
        int stop = present ? fn(ud, key, kl, gen, 1, g.v, g.n, g.version, exp)
                           : fn(ud, key, kl, gen, 0, NULL, 0, 0, 0);
        if (present) free(g.v);
        if (stop) break;
    }
    free(buf);
    return count;
}

/* ---- snapshots ---- */

size_t kvmux_migout_encoded_len(kvmux_migout *mo) {
    if (mo->state == KVMUX_MIGOUT_NONE) return 1;
    return 1 + REC_LEN + (size_t)mo->kbytes + (size_t)mo->nkeys * 6;
}

size_t kvmux_migout_encode(kvmux_migout *mo, uint8_t *out) {
    if (mo->state == KVMUX_MIGOUT_NONE) {
        out[0] = 0;
        return 1;
    }
    out[0] = 1;
    uint8_t *p = out + 1;
    put32(p, mo->id);
    put16(p + 4, mo->first);
    put16(p + 6, mo->last);
    put16(p + 8, mo->dst);
    put64(p + 10, mo->start_epoch);
    p[18] = (uint8_t)mo->state;
    put32(p + 19, mo->gen);
    p[23] = (uint8_t)(mo->overflow != 0);
    put32(p + 24, mo->nkeys);
    size_t off = 1 + REC_LEN;
    for (size_t b = 0; b < mo->nbuckets; b++)
        for (kvmux_migout_key *k = mo->buckets[b]; k; k = k->next) {
            put16(out + off, k->klen);
            memcpy(out + off + 2, k->key, k->klen);
            put32(out + off + 2 + k->klen, k->gen);
            off += 6u + k->klen;
        }
    return off;
}

static long decode_fail(kvmux_migout *mo) {
    record_drop(mo);
    return -1;
}

long kvmux_migout_decode(kvmux_migout *mo, const uint8_t *buf, size_t len) {
    pthread_mutex_lock(&mo->mu);
    record_drop(mo);
    if (len < 1 || buf[0] > 1) {
        pthread_mutex_unlock(&mo->mu);
        return -1;
    }
    if (buf[0] == 0) {
        pthread_mutex_unlock(&mo->mu);
        return 1;
    }
    long rc = -1;
    const uint8_t *p = buf + 1;
    if (len < 1 + REC_LEN) goto out;
    uint16_t first = get16(p + 4), last = get16(p + 6);
    int state = p[18];
    uint32_t gen = get32(p + 19), n = get32(p + 24);
    if (get32(p) == 0 || first > last || last >= KVMUX_SLOTS || get16(p + 8) == 0 ||
        (state != KVMUX_MIGOUT_COPYING && state != KVMUX_MIGOUT_FENCED) || gen == 0 ||
        p[23] > 1 || n > KVMUX_MIG_DIRTY_MAX_KEYS)
        goto out;
    mo->state = state;
    mo->id = get32(p);
    mo->first = first;
    mo->last = last;
    mo->dst = get16(p + 8);
    mo->start_epoch = get64(p + 10);
    mo->gen = gen;
    mo->overflow = p[23];
    size_t off = 1 + REC_LEN;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < 2) goto out;
        size_t kl = get16(buf + off);
        if (kl == 0 || len - off - 2 < kl + 4) goto out;
        uint32_t kg = get32(buf + off + 2 + kl);
        if (kg == 0 || kg > gen || set_put(mo, buf + off + 2, kl, kg) != 0) goto out;
        off += 6 + kl;
    }
    if (mo->nkeys != n) goto out; /* a key twice */
    if (state == KVMUX_MIGOUT_FENCED) set_fence(mo, 1ull << 32 | (uint64_t)first << 16 | last);
    rc = (long)off;
out:
    if (rc < 0) decode_fail(mo);
    pthread_mutex_unlock(&mo->mu);
    return rc;
}
