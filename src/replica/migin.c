/* The target side of a slot migration in the state machine (migin.h;
 * docs/MIGRATION.md sections 2, 4, 8.4). */
#include "migin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "entry.h"
#include "fsm.h"
#include "proto.h"
#include "stage.h"
#include "store.h"

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

/* ---- the import batch ---- */

#define FAIL(...) (errlen ? (void)snprintf(err, errlen, __VA_ARGS__) : (void)0, -1)

int kvmux_mig_batch_parse(const uint8_t *p, size_t n, size_t max_key, uint16_t first,
                          uint16_t last, kvmux_mig_batch *b, char *err, size_t errlen) {
    if (n < KVMUX_MIG_BATCH_HDR_LEN) return FAIL("import batch: %zu bytes, shorter than "
                                                 "its 18-byte header", n);
    b->id = get32(p);
    b->term = get64(p + 4);
    b->bseq = get32(p + 12);
    b->nrec = get16(p + 16);
    b->recs = p + KVMUX_MIG_BATCH_HDR_LEN;
    b->recs_len = n - KVMUX_MIG_BATCH_HDR_LEN;
    if (b->id == 0) return FAIL("import batch: migration id 0");
    if (b->bseq == 0) return FAIL("import batch: bseq 0 (batches are numbered from 1)");
    if (b->nrec == 0 || b->nrec > KVMUX_MIG_BATCH_RECS)
        return FAIL("import batch: %u records (1..%u)", b->nrec, KVMUX_MIG_BATCH_RECS);
    size_t off = 0, bytes = 0;
    for (uint32_t i = 0; i < b->nrec; i++) {
        const uint8_t *q = b->recs + off;
        size_t left = b->recs_len - off;
        if (left < 3) return FAIL("import batch: record %u truncated", i);
        uint8_t kind = q[0];
        size_t klen = get16(q + 1);
        if (kind != KVMUX_MIG_REC_PUT && kind != KVMUX_MIG_REC_ABSENT)
            return FAIL("import batch: record %u has kind %u (1 PUT, 2 ABSENT)", i, kind);
        if (klen == 0 || klen > max_key)
            return FAIL("import batch: record %u has a key of %zu bytes (1..%zu)", i, klen,
                        max_key);
        if (left - 3 < klen) return FAIL("import batch: record %u truncated", i);
        size_t need = 3 + klen;
        size_t vlen = 0;
        if (kind == KVMUX_MIG_REC_PUT) {
            if (left - need < 20) return FAIL("import batch: record %u truncated", i);
            if (get64(q + need) == 0) return FAIL("import batch: record %u has version 0", i);
            vlen = get32(q + need + 16);
            need += 20;
            if (left - need < vlen) return FAIL("import batch: record %u truncated", i);
            need += vlen;
        }
        bytes += klen + vlen;
        /* A batch of one record may be bigger: a big value travels alone
         * (its bound is the caller's, the server's --max-value). */
        if (bytes > KVMUX_MIG_BATCH_BYTES && i > 0)
            return FAIL("import batch: %u records and over %u bytes of keys and values "
                        "(only a batch of one record may be bigger)", b->nrec,
                        KVMUX_MIG_BATCH_BYTES);
        if (first <= last) {
            uint16_t s = kvmux_slot(q + 3, klen);
            if (s < first || s > last)
                return FAIL("import batch: record %u's key is in slot %u, outside %u-%u", i,
                            s, first, last);
        }
        off += need;
    }
    if (off != b->recs_len)
        return FAIL("import batch: %zu bytes after the last record", b->recs_len - off);
    return 0;
}

void kvmux_mig_batch_next(const kvmux_mig_batch *b, size_t *off, kvmux_mig_rec *r) {
    const uint8_t *q = b->recs + *off;
    memset(r, 0, sizeof *r);
    r->kind = q[0];
    r->klen = get16(q + 1);
    r->key = q + 3;
    size_t n = 3 + (size_t)r->klen;
    if (r->kind == KVMUX_MIG_REC_PUT) {
        r->version = get64(q + n);
        r->expire_at = get64(q + n + 8);
        r->vlen = get32(q + n + 16);
        r->value = q + n + 20;
        n += 20 + r->vlen;
    }
    *off += n;
}

size_t kvmux_mig_rec_size(const kvmux_mig_rec *r) {
    return 3 + (size_t)r->klen + (r->kind == KVMUX_MIG_REC_PUT ? 20 + (size_t)r->vlen : 0);
}

size_t kvmux_mig_batch_encode_hdr(uint8_t *out, uint32_t id, uint64_t term, uint32_t bseq,
                                  uint16_t nrec) {
    put32(out, id);
    put64(out + 4, term);
    put32(out + 12, bseq);
    put16(out + 16, nrec);
    return KVMUX_MIG_BATCH_HDR_LEN;
}

size_t kvmux_mig_rec_encode(uint8_t *out, const kvmux_mig_rec *r) {
    out[0] = r->kind;
    put16(out + 1, r->klen);
    memcpy(out + 3, r->key, r->klen);
    size_t n = 3 + (size_t)r->klen;
    if (r->kind == KVMUX_MIG_REC_PUT) {
        put64(out + n, r->version);
        put64(out + n + 8, r->expire_at);
        put32(out + n + 16, r->vlen);
        if (r->vlen) memcpy(out + n + 20, r->value, r->vlen);
        n += 20 + r->vlen;
    }
    return n;
}

/* ---- the record ---- */

static void res(struct kvmux_fsm_result *r, int status, const uint8_t *ex, uint8_t exlen) {
    if (!r) return;
    r->status = (uint8_t)status;
    r->extras_len = exlen;
    if (exlen) memcpy(r->extras, ex, exlen);
}

/* Change the record (applier only) under the lock loops read it with. */
static void set_locked(kvmux_fsm_cluster *cl, const kvmux_migin *in) {
    pthread_mutex_lock(&cl->mu);
    cl->in = *in;
    pthread_mutex_unlock(&cl->mu);
}

void kvmux_migin_set(kvmux_fsm_cluster *cl, const kvmux_migin *in) { set_locked(cl, in); }

void kvmux_migin_get(kvmux_fsm_cluster *cl, kvmux_migin *out) {
    pthread_mutex_lock(&cl->mu);
    *out = cl->in;
    pthread_mutex_unlock(&cl->mu);
}

/* The OK of IN_BEGIN: u64 min_term | u32 last_bseq (the bseq to go on
 * from within min_term; 0 when no batch of that term was applied). */
static void begin_ok(const kvmux_migin *in, struct kvmux_fsm_result *r) {
    uint8_t ex[12];
    put64(ex, in->min_term);
    put32(ex + 8, in->last_term == in->min_term ? in->last_bseq : 0);
    res(r, KVMUX_STATUS_OK, ex, sizeof ex);
}

static void in_begin(kvmux_fsm_cluster *cl, uint32_t id, const struct kvmux_entry_cmd *c,
                     struct kvmux_fsm_result *r) {
    if (c->value_len != KVMUX_MIG_IN_BEGIN_LEN) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
    uint16_t first = get16(c->value), last = get16(c->value + 2), src = get16(c->value + 4);
    uint64_t term = get64(c->value + 6);
    if (first > last || last >= KVMUX_SLOTS || src == 0 || src == cl->group) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
    kvmux_migin in = cl->in; /* the applier's own: no lock to read */
    if (in.state != KVMUX_MIGIN_NONE && in.id != id) {
        uint8_t ex[4];
        put32(ex, in.id);
        res(r, KVMUX_STATUS_BUSY, ex, sizeof ex);
        return;
    }
    if (in.state == KVMUX_MIGIN_NONE) {
        /* Always PURGING, even with no leftovers of R here: the per-slot
         * counts include expired keys not yet reclaimed, which a read
         * removes on one replica and not another, so "R holds no keys"
         * is not the same on every replica at apply time. The leader's
         * janitor proposes IN_READY once its count is 0 (within one
         * round, 100 ms), and the purges before it go through the log. */
        kvmux_migin fresh = {.id = id, .first = first, .last = last, .src = src,
                             .state = KVMUX_MIGIN_PURGING, .min_term = term};
        set_locked(cl, &fresh);
        begin_ok(&fresh, r);
        return;
    }
    /* The same migration again: a new source leader (higher term) fences
     * its predecessor's batches and keeps what was imported. */
    if (in.first != first || in.last != last || in.src != src) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
    if (term < in.min_term) {
        res(r, KVMUX_STATUS_VERSION_MISMATCH, NULL, 0);
        return;
    }
    if (term > in.min_term) {
        in.min_term = term;
        set_locked(cl, &in);
    }
    begin_ok(&in, r);
}

static void in_step(kvmux_fsm_cluster *cl, uint32_t id, uint8_t step,
                    const struct kvmux_entry_cmd *c, struct kvmux_fsm_result *r) {
    kvmux_migin in = cl->in;
    if (c->value_len != 0) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
    if (step == KVMUX_MIG_IN_READY) {
        if (in.state == KVMUX_MIGIN_NONE || in.id != id) {
            res(r, KVMUX_STATUS_NOT_FOUND, NULL, 0);
            return;
        }
        if (in.state != KVMUX_MIGIN_READY) {
            in.state = KVMUX_MIGIN_READY;
            set_locked(cl, &in);
        }
        res(r, KVMUX_STATUS_OK, NULL, 0);
        return;
    }
    /* IN_ABORT: the record goes; its keys are leftovers the janitor
     * purges (R is not this group's). */
    if (in.state != KVMUX_MIGIN_NONE && in.id != id) {
        res(r, KVMUX_STATUS_NOT_FOUND, NULL, 0);
        return;
    }
    if (in.state != KVMUX_MIGIN_NONE) {
        kvmux_migin none = {0};
        set_locked(cl, &none);
    }
    res(r, KVMUX_STATUS_OK, NULL, 0);
}

static void apply_migstep(kvmux_fsm_cluster *cl, const struct kvmux_entry_cmd *c,
                          struct kvmux_fsm_result *r) {
    uint32_t id = c->extras_len == KVMUX_MIG_STEP_EXTRAS ? get32(c->extras) : 0;
    uint8_t step = c->extras_len == KVMUX_MIG_STEP_EXTRAS ? c->extras[4] : 0;
    if (id == 0 || c->key_len != 0) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
    if (step == KVMUX_MIG_IN_BEGIN) in_begin(cl, id, c, r);
    else if (step == KVMUX_MIG_IN_READY || step == KVMUX_MIG_IN_ABORT) in_step(cl, id, step, c, r);
    else res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0); /* the source's steps: not built */
}

/* An IMPORT_STAGED batch: one PUT whose value field is a staged value's
 * 16-byte id and u32 total (MIGRATION.md 4). Sets *rec; 0, or -1. */
static int staged_rec(const kvmux_mig_batch *b, kvmux_mig_rec *rec) {
    size_t off = 0;
    if (b->nrec != 1) return -1;
    kvmux_mig_batch_next(b, &off, rec);
    if (rec->kind != KVMUX_MIG_REC_PUT || rec->vlen != KVMUX_STAGE_ID_LEN + 4) return -1;
    uint32_t total = get32(rec->value + KVMUX_STAGE_ID_LEN);
    return total > 0 ? 0 : -1;
}

/* Rules 1 and 2 of "How B applies an IMPORT": 0 (apply), or the refusal
 * (BUSY, VERSION_MISMATCH), counted. */
static int import_refusal(kvmux_fsm_cluster *cl, const kvmux_migin *in,
                          const kvmux_mig_batch *b) {
    int status = 0;
    if (in->state != KVMUX_MIGIN_READY || in->id != b->id) /* rule 1 */
        status = KVMUX_STATUS_BUSY;
    else if (b->term != in->min_term || b->term < in->last_term ||
             (b->term == in->last_term && b->bseq <= in->last_bseq)) /* rule 2: a zombie, a resend */
        status = KVMUX_STATUS_VERSION_MISMATCH;
    if (status) atomic_fetch_add_explicit(&cl->in_stats.import_refused, 1, memory_order_relaxed);
    return status;
}

/* Rule 3 on a batch that passed rules 1 and 2: each record in order, the
 * counter raised, (last_term, last_bseq) advanced. big (not NULL): the
 * value of the batch's one PUT, staged (its value field is the reference). */
static void import_records(kvmux_store *st, kvmux_fsm_cluster *cl, kvmux_migin in, uint64_t now,
                           const kvmux_mig_batch *b, const uint8_t *big, uint32_t big_len,
                           struct kvmux_fsm_result *r) {
    uint32_t applied = 0, skipped = 0;
    uint64_t maxver = 0;
    size_t off = 0;
    int status = KVMUX_STATUS_OK;
    for (uint32_t i = 0; i < b->nrec; i++) { /* rule 3 */
        kvmux_mig_rec rec;
        kvmux_mig_batch_next(b, &off, &rec);
        if (big && rec.kind == KVMUX_MIG_REC_PUT) {
            rec.value = big;
            rec.vlen = big_len;
        }
        int rc;
        if (rec.kind == KVMUX_MIG_REC_PUT && rec.version > maxver) maxver = rec.version;
        if (rec.kind == KVMUX_MIG_REC_ABSENT || (rec.expire_at != 0 && rec.expire_at <= now)) {
            (void)kvmux_store_del(st, rec.key, rec.klen);
            rc = KVMUX_STATUS_OK;
        } else {
            rc = kvmux_store_import_put(st, rec.key, rec.klen, rec.value, rec.vlen,
                                        rec.version, rec.expire_at);
        }
        if (rc == KVMUX_STATUS_OK) applied++;
        else if (rc == KVMUX_STATUS_VERSION_MISMATCH) skipped++;
        else status = KVMUX_STATUS_INTERNAL; /* out of memory: this key not imported */
    }
    kvmux_store_bump_version(st, maxver);
    in.last_term = b->term;
    in.last_bseq = b->bseq;
    set_locked(cl, &in);
    atomic_fetch_add_explicit(&cl->in_stats.import_batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&cl->in_stats.import_keys, applied, memory_order_relaxed);
    atomic_fetch_add_explicit(&cl->in_stats.import_skipped, skipped, memory_order_relaxed);
    uint8_t ex[8];
    put32(ex, applied);
    put32(ex + 4, skipped);
    res(r, status, status == KVMUX_STATUS_OK ? ex : NULL, status == KVMUX_STATUS_OK ? 8 : 0);
}

/* IMPORT, and IMPORT_STAGED: the same batch and rules, its one value taken
 * from the staged values sg. A staged value missing or incomplete at apply
 * (staging failed, or the leader changed between chunks and this is a
 * zombie's entry) fails the import INTERNAL with nothing applied and
 * (last_term, last_bseq) unchanged, so the source's resend of the same
 * bseq is applied later. A refused IMPORT_STAGED drops its staged value. */
static void apply_import(kvmux_store *st, kvmux_fsm_cluster *cl, kvmux_stage_tab *sg,
                         uint64_t now, const struct kvmux_entry_cmd *c,
                         struct kvmux_fsm_result *r) {
    kvmux_migin in = cl->in;
    kvmux_mig_batch b;
    kvmux_mig_rec ref;
    int staged = c->op == KVMUX_ENTRY_OP_IMPORT_STAGED;
    /* Keys outside R are refused with the batch: imports write only R. */
    uint16_t first = in.state != KVMUX_MIGIN_NONE ? in.first : 1;
    uint16_t last = in.state != KVMUX_MIGIN_NONE ? in.last : 0;
    if (c->extras_len != 0 || c->key_len != 0 ||
        kvmux_mig_batch_parse(c->value, c->value_len, UINT16_MAX, first, last, &b, NULL, 0) != 0 ||
        (staged && staged_rec(&b, &ref) != 0)) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
    int refused = import_refusal(cl, &in, &b);
    if (refused) {
        if (staged && sg) free(kvmux_stage_take(sg, ref.value, 0));
        res(r, refused, NULL, 0);
        return;
    }
    if (!staged) {
        import_records(st, cl, in, now, &b, NULL, 0, r);
        return;
    }
    uint32_t total = get32(ref.value + KVMUX_STAGE_ID_LEN);
    uint8_t *v = sg ? kvmux_stage_take(sg, ref.value, total) : NULL;
    if (!v) {
        res(r, KVMUX_STATUS_INTERNAL, NULL, 0);
        return;
    }
    import_records(st, cl, in, now, &b, v, total, r);
    atomic_fetch_add_explicit(&cl->in_stats.import_staged, 1, memory_order_relaxed);
    free(v);
}

int kvmux_migin_purgeable(const kvmux_fsm_cluster *cl, uint16_t s) {
    if (!cl->map || cl->group == 0 || cl->map->owner[s] == cl->group) return 0;
    const kvmux_migin *in = &cl->in;
    return !(in->state == KVMUX_MIGIN_READY && s >= in->first && s <= in->last);
}

/* Check a PURGE value: u16 n (1..1024), n x (u16 klen 1.., key), at most
 * KVMUX_MIG_PURGE_BYTES of keys, nothing after. Returns n, or -1. */
static long purge_check(const uint8_t *p, size_t len) {
    if (len < 2) return -1;
    uint32_t n = get16(p);
    if (n == 0 || n > KVMUX_MIG_PURGE_KEYS) return -1;
    size_t off = 2, bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < 2) return -1;
        size_t k = get16(p + off);
        if (k == 0 || len - off - 2 < k) return -1;
        bytes += k;
        off += 2 + k;
    }
    return off == len && bytes <= KVMUX_MIG_PURGE_BYTES ? (long)n : -1;
}

static void apply_purge(kvmux_store *st, kvmux_fsm_cluster *cl, const struct kvmux_entry_cmd *c,
                        struct kvmux_fsm_result *r) {
    long n = c->extras_len == 0 && c->key_len == 0 ? purge_check(c->value, c->value_len) : -1;
    if (n < 0) {
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
    uint32_t deleted = 0;
    size_t off = 2;
    for (long i = 0; i < n; i++) {
        size_t k = get16(c->value + off);
        const uint8_t *key = c->value + off + 2;
        off += 2 + k;
        /* Checked now, in log order: a PURGE racing a map change or an
         * IN_BEGIN deletes nothing this group should keep. */
        if (kvmux_migin_purgeable(cl, kvmux_slot(key, k)) &&
            kvmux_store_del(st, key, k) == KVMUX_STATUS_OK)
            deleted++;
    }
    atomic_fetch_add_explicit(&cl->in_stats.purged_keys, deleted, memory_order_relaxed);
    uint8_t ex[4];
    put32(ex, deleted);
    res(r, KVMUX_STATUS_OK, ex, sizeof ex);
}

void kvmux_migin_apply(kvmux_store *st, kvmux_fsm_cluster *cl, kvmux_stage_tab *sg, uint64_t now,
                       const struct kvmux_entry_cmd *c, struct kvmux_fsm_result *r) {
    if (!cl || cl->group == 0) { /* not a data group: nothing to migrate */
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
    switch (c->op) {
    case KVMUX_ENTRY_OP_MIGSTEP:
        apply_migstep(cl, c, r);
        return;
    case KVMUX_ENTRY_OP_IMPORT:
    case KVMUX_ENTRY_OP_IMPORT_STAGED:
        apply_import(st, cl, sg, now, c, r);
        return;
    case KVMUX_ENTRY_OP_PURGE:
        apply_purge(st, cl, c, r);
        return;
    default:
        res(r, KVMUX_STATUS_BAD_REQUEST, NULL, 0);
        return;
    }
}

void kvmux_migin_map_applied(kvmux_fsm_cluster *cl) {
    const kvmux_migin *in = &cl->in;
    if (in->state == KVMUX_MIGIN_NONE || !cl->map) return;
    for (uint32_t s = in->first; s <= in->last; s++)
        if (cl->map->owner[s] != cl->group) return;
    kvmux_migin none = {0}; /* committed: B owns R now */
    set_locked(cl, &none);
}

/* ---- snapshots ---- */

size_t kvmux_migin_encoded_len(const kvmux_migin *in) {
    return 1 + (in->state != KVMUX_MIGIN_NONE ? KVMUX_MIGIN_ENCODED_LEN : 0);
}

size_t kvmux_migin_encode(const kvmux_migin *in, uint8_t *out) {
    if (in->state == KVMUX_MIGIN_NONE) {
        out[0] = 0;
        return 1;
    }
    out[0] = 1;
    uint8_t *p = out + 1;
    put32(p, in->id);
    put16(p + 4, in->first);
    put16(p + 6, in->last);
    put16(p + 8, in->src);
    p[10] = in->state;
    put64(p + 11, in->min_term);
    put64(p + 19, in->last_term);
    put32(p + 27, in->last_bseq);
    return 1 + KVMUX_MIGIN_ENCODED_LEN;
}

long kvmux_migin_decode(kvmux_migin *in, const uint8_t *p, size_t n) {
    memset(in, 0, sizeof *in);
    if (n < 1 || p[0] > 1) return -1;
    if (p[0] == 0) return 1;
    if (n - 1 < KVMUX_MIGIN_ENCODED_LEN) return -1;
    const uint8_t *q = p + 1;
    in->id = get32(q);
    in->first = get16(q + 4);
    in->last = get16(q + 6);
    in->src = get16(q + 8);
    in->state = q[10];
    in->min_term = get64(q + 11);
    in->last_term = get64(q + 19);
    in->last_bseq = get32(q + 27);
    if (in->id == 0 || in->first > in->last || in->last >= KVMUX_SLOTS || in->src == 0 ||
        (in->state != KVMUX_MIGIN_PURGING && in->state != KVMUX_MIGIN_READY) ||
        in->last_term > in->min_term) {
        memset(in, 0, sizeof *in);
        return -1;
    }
    return 1 + KVMUX_MIGIN_ENCODED_LEN;
}
