/* Entry op 0xF8 MIGREC (migrec.h). */
#include "migrec.h"

#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "proto.h"

/* The table of a map group before its first change (about 28 KiB: kept
 * off the loops' stacks). */
static const kvmux_migtab EMPTY = {.mgen = 0, .next_id = 1, .n = 0};

void kvmux_migrec_result_put(kvmux_fsm_result *r, const kvmux_migres *m) {
    if (!r) return;
    r->status = m->status;
    r->extras_len = 16;
    r->extras[0] = 0x4D; /* 'M': tells a MIGREC answer from a bare status */
    r->extras[1] = m->why;
    kvmux_store_u16be(r->extras + 2, m->group);
    kvmux_store_u32be(r->extras + 4, m->id);
    kvmux_store_u64be(r->extras + 8, m->epoch);
}

int kvmux_migrec_result_get(const kvmux_fsm_result *r, kvmux_migres *m) {
    if (r->extras_len != 16 || r->extras[0] != 0x4D) return -1;
    m->status = r->status;
    m->why = r->extras[1];
    m->group = kvmux_load_u16be(r->extras + 2);
    m->id = kvmux_load_u32be(r->extras + 4);
    m->epoch = kvmux_load_u64be(r->extras + 8);
    return 0;
}

static int printable(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e) return 0;
    return 1;
}

/* Run c's step on t (a scratch copy of the table); a COMMIT's new map in
 * *next (allocated here, the caller frees it). */
static kvmux_migres run_step(kvmux_fsm_cluster *cl, kvmux_migtab *t, const kvmux_entry_cmd *c,
                             uint64_t now, kvmux_map **next) {
    kvmux_migres bad = {.status = KVMUX_STATUS_BAD_REQUEST, .why = KVMUX_MIGR_MALFORMED};
    const uint8_t *v = c->value;
    uint32_t n = c->value_len;
    switch (c->extras_len == 1 && c->key_len == 0 ? c->extras[0] : 0) {
    case KVMUX_MIGREC_CREATE:
        if (n != 6) return bad;
        return kvmux_migtab_create(t, cl->map, kvmux_load_u16be(v), kvmux_load_u16be(v + 2),
                                   kvmux_load_u16be(v + 4), now);
    case KVMUX_MIGREC_COMMIT: {
        if (n != 4) return bad;
        kvmux_map *m = malloc(sizeof *m);
        if (!m) {
            kvmux_migres oom = {.status = KVMUX_STATUS_INTERNAL, .why = KVMUX_MIGR_MALFORMED};
            return oom;
        }
        int install = 0;
        kvmux_migres res = kvmux_migtab_commit(t, cl->map, kvmux_load_u32be(v), now, m, &install);
        if (install) *next = m;
        else free(m);
        return res;
    }
    case KVMUX_MIGREC_ABORT:
        if (n < 4 || n > KVMUX_MIGREC_VALUE_MAX || !printable(v + 4, n - 4)) return bad;
        return kvmux_migtab_abort(t, kvmux_load_u32be(v), (const char *)v + 4, n - 4, now);
    case KVMUX_MIGREC_ACK:
        if (n != 6) return bad;
        return kvmux_migtab_ack(t, kvmux_load_u32be(v), kvmux_load_u16be(v + 4));
    default:
        return bad;
    }
}

/* Install next (map epoch + 1 from a COMMIT) as the applied map: 0, or
 * -1 out of memory (nothing installed). Takes next. */
static int install_map(kvmux_fsm_cluster *cl, kvmux_map *next) {
    size_t len = kvmux_map_encoded_size(next);
    uint8_t *b = malloc(len);
    int rc = -1;
    if (b && kvmux_map_encode(next, b, len) == len) {
        rc = kvmux_fsm_cluster_install(cl, next, b, len);
        next = NULL; /* taken */
    }
    free(next);
    free(b);
    return rc;
}

void kvmux_migrec_apply(kvmux_fsm_cluster *cl, const kvmux_entry_cmd *c, uint64_t now,
                        kvmux_fsm_result *r) {
    kvmux_migres res = {.status = KVMUX_STATUS_BAD_REQUEST, .why = KVMUX_MIGR_MALFORMED};
    if (!cl || !cl->cas) {
        kvmux_migrec_result_put(r, &res);
        return;
    }
    /* Work on a copy: the table changes only once everything else (the
     * map a COMMIT installs) has, so a failure changes nothing. */
    kvmux_migtab *t = malloc(sizeof *t);
    if (!t) {
        res.status = KVMUX_STATUS_INTERNAL;
        kvmux_migrec_result_put(r, &res);
        return;
    }
    if (cl->mig) *t = *cl->mig; /* the applier's own: no lock */
    else kvmux_migtab_init(t);
    uint64_t mgen = t->mgen;
    kvmux_map *next = NULL;
    res = run_step(cl, t, c, now, &next);
    if (next && install_map(cl, next) != 0) {
        res.status = KVMUX_STATUS_INTERNAL;
        res.why = KVMUX_MIGR_MALFORMED;
        free(t);
    } else if (t->mgen != mgen) {
        pthread_mutex_lock(&cl->mu);
        kvmux_migtab *old = cl->mig;
        cl->mig = t;
        pthread_mutex_unlock(&cl->mu);
        free(old);
        if (cl->installed) cl->installed(cl->installed_ud);
    } else {
        free(t);
    }
    kvmux_migrec_result_put(r, &res);
}

int kvmux_migrec_guard(kvmux_fsm_cluster *cl, const kvmux_map *next, kvmux_fsm_result *r) {
    kvmux_migres g;
    if (!cl->mig || kvmux_migtab_guard(cl->mig, next, &g) == 0) return 0;
    if (r) {
        r->status = KVMUX_STATUS_BAD_REQUEST;
        r->extras_len = 16;
        kvmux_store_u64be(r->extras, next->epoch);
        kvmux_store_u32be(r->extras + 8, g.id);
        kvmux_store_u16be(r->extras + 12, (uint16_t)(g.epoch >> 16));
        kvmux_store_u16be(r->extras + 14, (uint16_t)g.epoch);
    }
    return -1;
}

int kvmux_migrec_table_bytes(kvmux_fsm_cluster *cl, uint8_t **out, size_t *len, uint64_t *mgen) {
    int rc = 0;
    pthread_mutex_lock(&cl->mu);
    const kvmux_migtab *t = cl->mig ? cl->mig : &EMPTY;
    size_t n = kvmux_migtab_encoded_size(t);
    *out = malloc(n);
    if (*out) {
        *len = kvmux_migtab_encode(t, *out, n);
        *mgen = t->mgen;
    } else {
        rc = -1;
    }
    pthread_mutex_unlock(&cl->mu);
    return rc;
}

void kvmux_migrec_info(kvmux_fsm_cluster *cl, uint64_t *mgen, uint32_t *open, uint32_t *committed,
                       uint32_t *aborted) {
    pthread_mutex_lock(&cl->mu);
    const kvmux_migtab *t = cl->mig;
    *mgen = t ? t->mgen : 0;
    *open = t ? kvmux_migtab_count(t, KVMUX_MIG_OPEN) : 0;
    *committed = t ? kvmux_migtab_count(t, KVMUX_MIG_COMMITTED) : 0;
    *aborted = t ? kvmux_migtab_count(t, KVMUX_MIG_ABORTED) : 0;
    pthread_mutex_unlock(&cl->mu);
}

void kvmux_migrec_message(kvmux_fsm_cluster *cl, const kvmux_migres *m, char *out, size_t cap) {
    pthread_mutex_lock(&cl->mu);
    kvmux_migtab_message(cl->mig ? cl->mig : &EMPTY, m, out, cap);
    pthread_mutex_unlock(&cl->mu);
}

/* ---- snapshots ---- */

size_t kvmux_migrec_snap_len(const kvmux_fsm_cluster *cl) {
    if (!cl || !cl->cas) return 4;
    if (!cl->mig) return 4 + KVMUX_MIG_HDR_LEN;
    return 4 + kvmux_migtab_encoded_size(cl->mig);
}

void kvmux_migrec_snap_write(const kvmux_fsm_cluster *cl, uint8_t *out) {
    size_t n = kvmux_migrec_snap_len(cl) - 4;
    kvmux_store_u32be(out, (uint32_t)n);
    if (!n) return;
    kvmux_migtab_encode(cl->mig ? cl->mig : &EMPTY, out + 4, n);
}

int kvmux_migrec_restore(kvmux_fsm_cluster *cl, const uint8_t *p, size_t len) {
    kvmux_migtab *t = NULL;
    if (len) {
        if (!(t = malloc(sizeof *t)) || kvmux_migtab_decode(t, p, len, NULL, 0) != 0) {
            free(t);
            return -1;
        }
    }
    if (!cl) {
        free(t);
        return 0;
    }
    pthread_mutex_lock(&cl->mu);
    kvmux_migtab *old = cl->mig;
    cl->mig = t;
    pthread_mutex_unlock(&cl->mu);
    free(old);
    return 0;
}

void kvmux_migrec_free(kvmux_fsm_cluster *cl) {
    pthread_mutex_lock(&cl->mu);
    kvmux_migtab *old = cl->mig;
    cl->mig = NULL;
    pthread_mutex_unlock(&cl->mu);
    free(old);
}
