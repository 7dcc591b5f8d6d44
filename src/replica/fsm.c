/* The replicated state machine (fsm.h). */
#include "fsm.h"

#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "entry.h"
#include "migout.h"
#include "migrec.h"
#include "stage.h"
#include "proto.h"
#include "sessions.h"

#define SNAP_MAGIC 0x4B56534Eu /* "KVSN" */
#define SNAP_FORMAT 6u         /* 6: migrations after the slot map (MIGRATION.md 2):
                                  the map group's table (migrec.h), the
                                  outgoing record (migout.h), the incoming one
                                  (migin.h) */
#define SNAP_FORMAT_MAP 5u     /* still restored: the slot map (u32 length, bytes), no migrations */
#define SNAP_FORMAT_STAGE 4u   /* still restored: no slot map */
#define SNAP_FORMAT_SESS 3u    /* still restored: no staged values */
#define SNAP_FORMAT_NOSESS 2u  /* still restored: an empty session table */
#define SNAP_HDR_LEN 32u       /* magic, format(u32), last version, count, clock */
#define SNAP_REC_HDR_LEN 22u   /* klen u16, vlen u32, version u64, ttl_left u64 */

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

uint64_t kvmux_fsm_clock_read(void *ud) {
    return atomic_load_explicit(&((kvmux_fsm_clock *)ud)->ms, memory_order_relaxed);
}

/* Move the clock to ms if that is later: a new leader whose wall clock is
 * behind its predecessor's holds time still until it catches up. */
static void clock_advance(kvmux_fsm_clock *clk, uint64_t ms) {
    if (ms > atomic_load_explicit(&clk->ms, memory_order_relaxed))
        atomic_store_explicit(&clk->ms, ms, memory_order_relaxed);
}

static void res(kvmux_fsm_result *r, int status, const uint64_t *a, const uint64_t *b) {
    if (!r) return;
    r->status = (uint8_t)status;
    r->extras_len = 0;
    if (a) {
        put64(r->extras, *a);
        r->extras_len = 8;
    }
    if (b) {
        put64(r->extras + 8, *b);
        r->extras_len = 16;
    }
}

/* ---- the cluster slot map ---- */

void kvmux_fsm_cluster_init(kvmux_fsm_cluster *cl, uint16_t group) {
    pthread_mutex_init(&cl->mu, NULL);
    cl->group = group;
    cl->cas = 0;
    atomic_init(&cl->epoch, 0);
    cl->installed = NULL;
    cl->installed_ud = NULL;
    cl->map = NULL;
    cl->bytes = NULL;
    cl->len = 0;
    cl->mig = NULL;
    memset(&cl->in, 0, sizeof cl->in);
    memset(&cl->in_stats, 0, sizeof cl->in_stats);
    kvmux_migout_init(&cl->out);
}

/* Replace the installed map by m (encoded as p[0..len), copied); m NULL:
 * none. Takes m. Returns 0, or -1 (out of memory: nothing changed). */
static int cluster_set(kvmux_fsm_cluster *cl, kvmux_map *m, const uint8_t *p, size_t len) {
    uint8_t *b = NULL;
    if (m && !(b = malloc(len ? len : 1))) {
        free(m);
        return -1;
    }
    if (m) memcpy(b, p, len);
    pthread_mutex_lock(&cl->mu);
    kvmux_map *old = cl->map;
    uint8_t *oldb = cl->bytes;
    cl->map = m;
    cl->bytes = b;
    cl->len = m ? len : 0;
    atomic_store(&cl->epoch, m ? m->epoch : 0);
    pthread_mutex_unlock(&cl->mu);
    free(old);
    free(oldb);
    /* A map that takes R away ends the outgoing migration (committed):
     * MIGRATION.md step 9. */
    kvmux_migout_map_applied(&cl->out, m, cl->group);
    if (cl->installed) cl->installed(cl->installed_ud);
    return 0;
}

void kvmux_fsm_cluster_clear(kvmux_fsm_cluster *cl) {
    cl->installed = NULL; /* tearing down: nobody to tell */
    (void)cluster_set(cl, NULL, NULL, 0);
    kvmux_migrec_free(cl);
    kvmux_migout_clear(&cl->out);
    pthread_mutex_destroy(&cl->mu);
}

int kvmux_fsm_cluster_install(kvmux_fsm_cluster *cl, kvmux_map *m, const uint8_t *p, size_t len) {
    return cluster_set(cl, m, p, len);
}

int kvmux_fsm_cluster_route(kvmux_fsm_cluster *cl, uint16_t slot, kvmux_redirect *rd) {
    int rc;
    pthread_mutex_lock(&cl->mu);
    const kvmux_map *m = cl->map;
    uint16_t owner = m ? m->owner[slot] : 0;
    if (!m) rc = KVMUX_ROUTE_NO_MAP;
    else rc = owner == cl->group ? KVMUX_ROUTE_OWN : KVMUX_ROUTE_WRONG;
    if (rd && rc != KVMUX_ROUTE_OWN) {
        memset(rd, 0, sizeof *rd);
        rd->slot = slot;
        rd->epoch = m ? m->epoch : 0;
        rd->group = owner;
        const kvmux_map_group *g = owner ? kvmux_map_group_get(m, owner) : NULL;
        size_t off = 0;
        for (unsigned i = 0; g && i < g->n; i++) {
            size_t n = strlen(g->addr[i]);
            if (off + n + 2 > sizeof rd->endpoints) break; /* cannot happen: sized for 7 */
            if (i) rd->endpoints[off++] = ',';
            memcpy(rd->endpoints + off, g->addr[i], n);
            off += n;
        }
        rd->endpoints[off] = '\0';
    }
    pthread_mutex_unlock(&cl->mu);
    return rc;
}

int kvmux_fsm_cluster_bytes(kvmux_fsm_cluster *cl, uint8_t **out, size_t *len) {
    int rc = 1;
    pthread_mutex_lock(&cl->mu);
    if (cl->map) {
        *out = malloc(cl->len ? cl->len : 1);
        rc = *out ? 0 : -1;
        if (*out) memcpy(*out, cl->bytes, cl->len);
        *len = cl->len;
    }
    pthread_mutex_unlock(&cl->mu);
    return rc;
}

void kvmux_fsm_cluster_info(kvmux_fsm_cluster *cl, uint64_t *epoch, uint32_t *owned) {
    pthread_mutex_lock(&cl->mu);
    *epoch = cl->map ? cl->map->epoch : 0;
    *owned = 0;
    for (uint32_t s = 0; cl->map && s < KVMUX_SLOTS; s++)
        *owned += cl->map->owner[s] == cl->group && cl->group != 0;
    pthread_mutex_unlock(&cl->mu);
}

/* A MAP command: install the encoded map in c->value iff its epoch is
 * higher than the installed one. Deterministic: the same log installs the
 * same maps on every replica (only an allocation failure differs, and is
 * reported INTERNAL). */
static void apply_map(kvmux_fsm_cluster *cl, const kvmux_entry_cmd *c, kvmux_fsm_result *r) {
    kvmux_map *m = cl ? malloc(sizeof *m) : NULL;
    if (!m || kvmux_map_decode(m, c->value, c->value_len, NULL, 0) != 0) {
        res(r, m || !cl ? KVMUX_STATUS_BAD_REQUEST : KVMUX_STATUS_INTERNAL, NULL, NULL);
        free(m);
        return;
    }
    uint64_t epoch = m->epoch, cur = cl->map ? cl->map->epoch : 0; /* applier's own: no lock */
    int status = KVMUX_STATUS_OK;
    /* The map group (cas): compare-and-set on the epoch, so of two maps
     * proposed for the same next epoch the log applies exactly one. */
    int fits = cl->cas ? (cur == 0 || epoch == cur + 1) : epoch > cur;
    /* The map group: no map that breaks an OPEN migration (migrec.h). */
    if (fits && cl->cas && kvmux_migrec_guard(cl, m, r) != 0) {
        free(m);
        return;
    }
    if (fits) {
        if (cluster_set(cl, m, c->value, c->value_len) != 0) {
            status = KVMUX_STATUS_INTERNAL;
        } else {
            cur = epoch;
            kvmux_migin_map_applied(cl); /* a committed import ends here */
        }
    } else {
        if (epoch != cur || c->value_len != cl->len || memcmp(c->value, cl->bytes, cl->len) != 0)
            status = KVMUX_STATUS_VERSION_MISMATCH;
        free(m);
    }
    res(r, status, &epoch, &cur);
}

/* Whether a keyed write must be refused, and with which status (0: no):
 * a cluster group applies writes only for slots the map applied so far
 * gives it (WRONG_SHARD; the log orders map changes and writes:
 * docs/CLUSTER.md), and none for a slot its outgoing migration fenced
 * (TRY_AGAIN; docs/MIGRATION.md 5). */
static int cluster_refuses(kvmux_fsm_cluster *cl, const kvmux_entry_cmd *c) {
    if (!cl || cl->group == 0 || c->op == KVMUX_ENTRY_OP_STAGE || c->op == KVMUX_ENTRY_OP_MAP ||
        c->op == KVMUX_ENTRY_OP_MIGREC || c->op == KVMUX_ENTRY_OP_MIGSTEP)
        return 0;
    /* Migration ops check their own preconditions (MIGRATION.md 10.2). */
    if (c->op >= KVMUX_ENTRY_OP_IMPORT && c->op <= KVMUX_ENTRY_OP_PURGE) return 0;
    /* The applier's own map: read without the lock (only it writes). No
     * map yet: no check (the serving replica refused keyed requests then,
     * and a log from before cluster mode replays as it was written). */
    uint16_t slot = kvmux_slot(c->key, c->key_len);
    if (cl->map && cl->map->owner[slot] != cl->group) return KVMUX_STATUS_WRONG_SHARD;
    if (kvmux_migout_is_write(c->op) && kvmux_migout_fenced(&cl->out, slot))
        return KVMUX_STATUS_TRY_AGAIN;
    return 0;
}

/* The fence moved since fence_gen was read: tell the loops (through the
 * installed callback, which wakes them) so parked WAITs are re-checked. */
static void fence_wake(kvmux_fsm_cluster *cl, uint64_t fence_gen) {
    if (cl->installed && atomic_load(&cl->out.fence_gen) != fence_gen)
        cl->installed(cl->installed_ud);
}

/* A MIGSTEP command: the source's steps (migout.h) here, the target's
 * (IN_BEGIN, IN_READY, IN_ABORT) in migin.c. */
static void apply_migstep(kvmux_store *st, kvmux_fsm_cluster *cl, uint64_t now,
                          const kvmux_entry_cmd *c, kvmux_fsm_result *r) {
    uint64_t fence_gen;
    switch (cl ? kvmux_migout_step(c) : 0) {
    case KVMUX_MIGSTEP_OUT_BEGIN: case KVMUX_MIGSTEP_OUT_CUT: case KVMUX_MIGSTEP_OUT_DRAINED:
    case KVMUX_MIGSTEP_OUT_FENCE: case KVMUX_MIGSTEP_OUT_ABORT:
        fence_gen = atomic_load(&cl->out.fence_gen);
        kvmux_migout_apply(&cl->out, cl->map, cl->group, c, r);
        fence_wake(cl, fence_gen);
        return;
    default: /* steps 6-8 (IN_*), or malformed: the target side (migin.c) */
        kvmux_migin_apply(st, cl, NULL, now, c, r);
        return;
    }
}

/* A write for R processed while R is being copied: its key joins the
 * dirty set (migout.h), whatever the write's result. */
static void note_dirty(kvmux_fsm_cluster *cl, const kvmux_entry_cmd *c) {
    if (cl && cl->out.state == KVMUX_MIGOUT_COPYING && kvmux_migout_is_write(c->op))
        kvmux_migout_note_write(&cl->out, c->key, c->key_len, kvmux_slot(c->key, c->key_len));
}

/* A STAGE command (stage.h): extras u32 offset, u32 total; key the id. */
static void apply_stage(kvmux_stage_tab *sg, const kvmux_entry_cmd *c, uint64_t now,
                        kvmux_fsm_result *r) {
    int ok = sg && c->extras_len == 8 && c->key_len == KVMUX_STAGE_ID_LEN &&
             kvmux_stage_append(sg, c->key, get32(c->extras), get32(c->extras + 4), c->value,
                                c->value_len, now) == 0;
    res(r, ok ? KVMUX_STATUS_OK : KVMUX_STATUS_INTERNAL, NULL, NULL);
}

/* SET/CAS of a staged value: the value field is the id and u32 total.
 * Runs the plain command on the assembled value; INTERNAL (nothing
 * applied) when it is not complete, on every replica alike. */
static void apply_cmd(kvmux_store *st, kvmux_stage_tab *sg, kvmux_fsm_cluster *cl,
                      uint64_t now, const kvmux_entry_cmd *c, kvmux_fsm_result *r);
static void apply_staged(kvmux_store *st, kvmux_stage_tab *sg, uint64_t now,
                         const kvmux_entry_cmd *c, kvmux_fsm_result *r) {
    uint32_t total = c->value_len == KVMUX_STAGE_ID_LEN + 4 ? get32(c->value + 16) : 0;
    uint8_t *v = sg && total ? kvmux_stage_take(sg, c->value, total) : NULL;
    if (!v) {
        res(r, KVMUX_STATUS_INTERNAL, NULL, NULL);
        return;
    }
    kvmux_entry_cmd plain = *c;
    plain.op = c->op == KVMUX_ENTRY_OP_SET_STAGED ? KVMUX_OP_SET : KVMUX_OP_CAS;
    plain.value = v;
    plain.value_len = total;
    apply_cmd(st, sg, NULL, now, &plain, r);
    free(v);
}

/* Run one command on st. */
static void apply_cmd(kvmux_store *st, kvmux_stage_tab *sg, kvmux_fsm_cluster *cl,
                      uint64_t now, const kvmux_entry_cmd *c, kvmux_fsm_result *r) {
    uint64_t version = 0;
    int rc;
    const uint8_t *x = c->extras;
    switch (c->op) {
    case KVMUX_ENTRY_OP_MAP:
        apply_map(cl, c, r);
        return;
    case KVMUX_ENTRY_OP_MIGREC:
        kvmux_migrec_apply(cl, c, now, r);
        return;
    case KVMUX_ENTRY_OP_MIGSTEP:
        apply_migstep(st, cl, now, c, r);
        return;
    case KVMUX_ENTRY_OP_STAGE:
        apply_stage(sg, c, now, r);
        return;
    case KVMUX_ENTRY_OP_SET_STAGED:
    case KVMUX_ENTRY_OP_CAS_STAGED:
        apply_staged(st, sg, now, c, r);
        return;
    case KVMUX_ENTRY_OP_IMPORT:
    case KVMUX_ENTRY_OP_IMPORT_STAGED:
    case KVMUX_ENTRY_OP_PURGE:
        kvmux_migin_apply(st, cl, sg, now, c, r);
        return;
    case KVMUX_OP_SET:
        if (c->extras_len != 8) break;
        rc = kvmux_store_set(st, c->key, c->key_len, c->value, c->value_len,
                             get64(x), &version);
        res(r, rc, rc == KVMUX_STATUS_OK ? &version : NULL, NULL);
        return;
    case KVMUX_OP_DEL:
        res(r, kvmux_store_del(st, c->key, c->key_len), NULL, NULL);
        return;
    case KVMUX_OP_INCR: {
        if (c->extras_len != 8) break;
        int64_t value = 0, delta;
        uint64_t u = get64(x);
        memcpy(&delta, &u, sizeof delta);
        rc = kvmux_store_incr(st, c->key, c->key_len, delta, &value, &version);
        memcpy(&u, &value, sizeof u);
        if (rc == KVMUX_STATUS_OK) res(r, rc, &u, &version);
        else res(r, rc, NULL, NULL);
        return;
    }
    case KVMUX_OP_CAS:
        if (c->extras_len != 16) break;
        rc = kvmux_store_cas(st, c->key, c->key_len, get64(x), c->value, c->value_len,
                             get64(x + 8), &version);
        res(r, rc, rc == KVMUX_STATUS_OK || rc == KVMUX_STATUS_VERSION_MISMATCH ? &version
                                                                                : NULL,
            NULL);
        return;
    case KVMUX_OP_EXPIRE:
        if (c->extras_len != 8) break;
        rc = kvmux_store_expire(st, c->key, c->key_len, get64(x),
                                &version);
        res(r, rc, rc == KVMUX_STATUS_OK ? &version : NULL, NULL);
        return;
    case KVMUX_OP_PERSIST:
        rc = kvmux_store_persist(st, c->key, c->key_len, &version);
        res(r, rc, rc == KVMUX_STATUS_OK ? &version : NULL, NULL);
        return;
    default:
        break;
    }
    /* Only the leader's own checked requests are encoded: anything else
     * is a corrupt entry, refused the same way on every replica. */
    res(r, KVMUX_STATUS_BAD_REQUEST, NULL, NULL);
}

/* A session write: applied once, its result remembered (sessions.h). */
static void apply_session_cmd(kvmux_store *st, kvmux_sessions *ss, kvmux_stage_tab *sg,
                              kvmux_fsm_cluster *cl, const kvmux_sess_limits *lim, uint64_t now,
                              const kvmux_entry_cmd *c, kvmux_fsm_result *r) {
    kvmux_fsm_result tmp;
    kvmux_sess *s;
    switch (kvmux_sessions_check(ss, lim, now, c->session, c->seq, &tmp, &s)) {
    case KVMUX_SESS_DUPLICATE:
        break;
    case KVMUX_SESS_REFUSE:
        res(&tmp, KVMUX_STATUS_OUTCOME_UNKNOWN, NULL, NULL);
        break;
    default:
        apply_cmd(st, sg, cl, now, c, &tmp);
        kvmux_sessions_record(ss, lim, s, c->seq, &tmp);
        break;
    }
    /* A staged value its SET will never take (a duplicate, a refusal):
     * drop it now rather than at its timeout. */
    if ((c->op == KVMUX_ENTRY_OP_SET_STAGED || c->op == KVMUX_ENTRY_OP_CAS_STAGED) && sg &&
        c->value_len == KVMUX_STAGE_ID_LEN + 4)
        free(kvmux_stage_take(sg, c->value, 0));
    if (r) *r = tmp;
}

/* A command for a slot the map applied so far gives another group
 * (status WRONG_SHARD) or that an outgoing migration fenced (TRY_AGAIN).
 * Not processed, and no session seq consumed (a first transmission sent
 * where the slot is served runs it there) -- unless it is a session write
 * this group already applied (its answer lost, then the map moved or the
 * fence closed the slot): that gets its original answer, since the new
 * owner would apply it a second time; one this group cannot vouch for
 * gets OUTCOME_UNKNOWN. A staged value the command named goes now. */
static void refuse_cmd(kvmux_sessions *ss, kvmux_stage_tab *sg, const kvmux_sess_limits *lim,
                       int status, const kvmux_entry_cmd *c, kvmux_fsm_result *r) {
    kvmux_fsm_result tmp;
    int verdict = ss && lim->window && c->session
                      ? kvmux_sessions_peek(ss, lim, c->session, c->seq, &tmp)
                      : KVMUX_SESS_APPLY;
    if (verdict == KVMUX_SESS_REFUSE) res(&tmp, KVMUX_STATUS_OUTCOME_UNKNOWN, NULL, NULL);
    else if (verdict != KVMUX_SESS_DUPLICATE) res(&tmp, status, NULL, NULL);
    if ((c->op == KVMUX_ENTRY_OP_SET_STAGED || c->op == KVMUX_ENTRY_OP_CAS_STAGED) && sg &&
        c->value_len == KVMUX_STAGE_ID_LEN + 4)
        free(kvmux_stage_take(sg, c->value, 0));
    if (r) *r = tmp;
}

int kvmux_fsm_apply(kvmux_store *st, kvmux_fsm_clock *clk, kvmux_sessions *ss,
                    kvmux_stage_tab *sg, kvmux_fsm_cluster *cl, const uint8_t *buf, size_t len,
                    kvmux_fsm_result *out, uint32_t nout) {
    kvmux_entry_hdr h;
    kvmux_entry_iter it;
    kvmux_entry_cmd c;
    if (kvmux_entry_decode_hdr(buf, len, &h, &it) != 0) return -1;
    /* Validate the whole entry first: a corrupt one changes nothing. */
    kvmux_entry_iter check = it;
    int rc;
    while ((rc = kvmux_entry_next(&check, &c)) == 1) {}
    if (rc < 0) return -1;
    clock_advance(clk, h.clock_ms);
    kvmux_sess_limits lim = {.window = h.sess_window, .max_sessions = h.sess_max,
                             .timeout_ms = h.sess_timeout_ms};
    uint64_t now = kvmux_fsm_clock_read(clk);
    if (ss && lim.window) kvmux_sessions_expire(ss, &lim, now);
    if (sg) kvmux_stage_expire(sg, now);
    uint32_t i = 0;
    while (kvmux_entry_next(&it, &c) == 1) {
        kvmux_fsm_result *r = out && i < nout ? &out[i] : NULL;
        int refused = cluster_refuses(cl, &c);
        if (refused) {
            refuse_cmd(ss, sg, &lim, refused, &c, r);
        } else if (ss && lim.window && c.session) {
            apply_session_cmd(st, ss, sg, cl, &lim, now, &c, r);
            note_dirty(cl, &c);
        } else {
            apply_cmd(st, sg, cl, now, &c, r);
            note_dirty(cl, &c);
        }
        i++;
    }
    return (int)i;
}

/* ---- snapshots ---- */

/* One shard's region of the body: its records go to body[off, off+len),
 * at most cap bytes (kvmux_store_snap_begin's bound). Written only under
 * that shard's lock. */
typedef struct snap_region {
    size_t off, len, cap;
    uint64_t count;
    int overflow;
} snap_region;

struct kvmux_fsm_snap {
    kvmux_store *st;
    kvmux_fsm_realloc_fn ra;
    uint32_t nshards;
    snap_region *reg;
    uint8_t *body;               /* header, then the regions; compacted by run */
    size_t body_len;
    uint8_t *tail;               /* sessions, staged values, slot map */
    size_t tail_len;
};

/* kvmux_store_snap_fn: one record into its shard's region (that shard's
 * lock held: no store calls). */
static void snap_record(void *ud, uint32_t shard, const kvmux_store_record *r) {
    kvmux_fsm_snap *sn = ud;
    snap_region *g = &sn->reg[shard];
    size_t n = SNAP_REC_HDR_LEN + r->klen + r->vlen;
    if (g->overflow || n > g->cap - g->len) {
        g->overflow = 1;
        return;
    }
    uint8_t *p = sn->body + g->off + g->len;
    p[0] = (uint8_t)(r->klen >> 8);
    p[1] = (uint8_t)r->klen;
    put32(p + 2, (uint32_t)r->vlen);
    put64(p + 6, r->version);
    /* TTL left, measured on the store clock at the snapshot's instant:
     * restored against the restoring replica's clock. */
    uint64_t left = 0;
    if (r->expires_ms) left = r->expires_ms > r->now_ms ? r->expires_ms - r->now_ms : 1;
    put64(p + 14, left);
    memcpy(p + SNAP_REC_HDR_LEN, r->key, r->klen);
    if (r->vlen) memcpy(p + SNAP_REC_HDR_LEN + r->klen, r->value, r->vlen);
    g->len += n;
    g->count++;
}

/* The small parts, copied at begin: the session table (an empty one: u32
 * 0), the values being staged (likewise), the applied slot map (none:
 * u32 0), then format 6's migration part: `u32 table_len | table` (the
 * map group's table; 0 here), `u8 has_out | outgoing record and dirty
 * set` (migout.h), `u8 has_in | incoming record` (0 here). */
static int snap_tail(kvmux_fsm_snap *sn, kvmux_sessions *ss, kvmux_stage_tab *sg,
                     kvmux_fsm_cluster *cl) {
    kvmux_sessions empty;
    kvmux_sessions_init(&empty);
    const kvmux_sessions *tab = ss ? ss : &empty;
    kvmux_stage_tab nostage;
    kvmux_stage_init(&nostage);
    const kvmux_stage_tab *stg = sg ? sg : &nostage;
    /* The applier's own map: read without the lock (only it writes). */
    size_t ml = cl && cl->map ? cl->len : 0;
    kvmux_migin none = {0};
    const kvmux_migin *in = cl ? &cl->in : &none;
    /* Format 6: the map group's table (u32 table_len | KVMG), the
     * outgoing record (u8 has_out | ...), the incoming one (u8 has_in | ...). */
    size_t tl = kvmux_migrec_snap_len(cl);
    size_t ol = cl ? kvmux_migout_encoded_len(&cl->out) : 1;
    size_t n = kvmux_sessions_encoded_len(tab) + kvmux_stage_encoded_len(stg) + 4 + ml + tl +
               ol + kvmux_migin_encoded_len(in);
    if (!(sn->tail = sn->ra(NULL, n))) return -1;
    size_t off = kvmux_sessions_encode(tab, sn->tail);
    off += kvmux_stage_encode(stg, sn->tail + off);
    put32(sn->tail + off, (uint32_t)ml);
    if (ml) memcpy(sn->tail + off + 4, cl->bytes, ml);
    off += 4 + ml;
    kvmux_migrec_snap_write(cl, sn->tail + off);
    off += tl;
    if (cl) off += kvmux_migout_encode(&cl->out, sn->tail + off);
    else sn->tail[off++] = 0;
    off += kvmux_migin_encode(in, sn->tail + off);
    sn->tail_len = off;
    return 0;
}

void kvmux_fsm_snap_free(kvmux_fsm_snap *sn) {
    if (!sn) return;
    if (sn->body) sn->ra(sn->body, 0);
    if (sn->tail) sn->ra(sn->tail, 0);
    free(sn->reg);
    free(sn);
}

int kvmux_fsm_snap_begin(kvmux_store *st, kvmux_fsm_clock *clk, kvmux_sessions *ss,
                         kvmux_stage_tab *sg, kvmux_fsm_cluster *cl, kvmux_fsm_realloc_fn ra,
                         kvmux_fsm_snap **out) {
    kvmux_fsm_snap *sn = calloc(1, sizeof *sn);
    uint32_t ns = kvmux_store_shards(st);
    uint64_t *bound = calloc(ns, sizeof *bound);
    if (sn) {
        sn->st = st;
        sn->ra = ra;
        sn->nshards = ns;
        sn->reg = calloc(ns, sizeof *sn->reg);
    }
    if (!sn || !bound || !sn->reg || snap_tail(sn, ss, sg, cl) != 0) goto fail;
    /* Measure, allocate, then mark: between the first and the last only
     * the caller could add to the store (it is the one writer), so the
     * bounds hold. */
    uint64_t last = kvmux_store_last_version(st);
    kvmux_store_snap_measure(st, SNAP_REC_HDR_LEN, bound);
    size_t total = SNAP_HDR_LEN;
    for (uint32_t i = 0; i < ns; i++) {
        sn->reg[i].off = total;
        sn->reg[i].cap = (size_t)bound[i];
        total += (size_t)bound[i];
    }
    free(bound);
    bound = NULL;
    if (!(sn->body = ra(NULL, total))) goto fail;
    put32(sn->body, SNAP_MAGIC);
    put32(sn->body + 4, SNAP_FORMAT);
    put64(sn->body + 8, last);
    put64(sn->body + 24, kvmux_fsm_clock_read(clk));
    kvmux_store_snap_begin(st, kvmux_store_now(st), snap_record, sn);
    *out = sn;
    return 0;
fail:
    free(bound);
    kvmux_fsm_snap_free(sn);
    return -1;
}

int kvmux_fsm_snap_run(kvmux_fsm_snap *sn) {
    for (uint32_t i = 0; i < sn->nshards; i++) kvmux_store_snap_shard(sn->st, i);
    /* Every shard handed over: close the gaps between the regions (a key
     * expired at the instant leaves its room unused). */
    size_t at = SNAP_HDR_LEN;
    uint64_t count = 0;
    int overflow = 0;
    for (uint32_t i = 0; i < sn->nshards; i++) {
        const snap_region *g = &sn->reg[i];
        overflow |= g->overflow;
        if (sn->body && g->len && g->off != at) memmove(sn->body + at, sn->body + g->off, g->len);
        at += g->len;
        count += g->count;
    }
    if (!sn->body || overflow) return -1;
    put64(sn->body + 16, count);
    sn->body_len = at;
    return 0;
}

void kvmux_fsm_snap_take(kvmux_fsm_snap *sn, uint8_t **body, size_t *body_len, uint8_t **tail,
                         size_t *tail_len) {
    *body = sn->body;
    *body_len = sn->body_len;
    *tail = sn->tail;
    *tail_len = sn->tail_len;
    sn->body = sn->tail = NULL;
}

int kvmux_fsm_snapshot(kvmux_store *st, kvmux_fsm_clock *clk, kvmux_sessions *ss,
                       kvmux_stage_tab *sg, kvmux_fsm_cluster *cl, kvmux_fsm_realloc_fn ra,
                       uint8_t **out, size_t *outlen) {
    kvmux_fsm_snap *sn;
    if (kvmux_fsm_snap_begin(st, clk, ss, sg, cl, ra, &sn) != 0) return -1;
    uint8_t *body, *tail, *p = NULL;
    size_t blen, tlen;
    if (kvmux_fsm_snap_run(sn) == 0) {
        kvmux_fsm_snap_take(sn, &body, &blen, &tail, &tlen);
        p = ra(body, blen + tlen);
        if (!p) ra(body, 0);
        else memcpy(p + blen, tail, tlen);
        ra(tail, 0);
    }
    kvmux_fsm_snap_free(sn);
    if (!p) return -1;
    *out = p;
    *outlen = blen + tlen;
    return 0;
}

/* Collects every key so restore can delete what the snapshot lacks. */
typedef struct key_list {
    uint8_t *p;
    size_t len, cap;
    int failed;
} key_list;

static void list_key(void *ud, const kvmux_store_record *r) {
    key_list *k = ud;
    if (k->failed) return;
    if (k->len + 2 + r->klen > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 4096;
        while (cap < k->len + 2 + r->klen) cap *= 2;
        uint8_t *p = realloc(k->p, cap);
        if (!p) {
            k->failed = 1;
            return;
        }
        k->p = p;
        k->cap = cap;
    }
    k->p[k->len] = (uint8_t)(r->klen >> 8);
    k->p[k->len + 1] = (uint8_t)r->klen;
    memcpy(k->p + k->len + 2, r->key, r->klen);
    k->len += 2 + r->klen;
}

static int clear_store(kvmux_store *st) {
    key_list k = {0};
    for (uint32_t s = 0;; s++)
        if (s >= kvmux_store_snapshot_shard(st, s, list_key, &k)) break;
    if (k.failed) {
        free(k.p);
        return -1;
    }
    for (size_t off = 0; off < k.len;) {
        size_t kl = (size_t)k.p[off] << 8 | k.p[off + 1];
        kvmux_store_restore_del(st, k.p + off + 2, kl);
        off += 2 + kl;
    }
    free(k.p);
    return 0;
}

/* The slot map of a format-5 or 6 snapshot at buf + *off into cl (older
 * formats: none). 0, or -1 when malformed or out of memory. */
static int restore_map(kvmux_fsm_cluster *cl, uint32_t fmt, const uint8_t *buf, size_t len,
                       size_t *off) {
    if (fmt < SNAP_FORMAT_MAP) return cl ? cluster_set(cl, NULL, NULL, 0) : 0;
    if (len - *off < 4) return -1;
    size_t ml = get32(buf + *off);
    const uint8_t *p = buf + *off + 4;
    if (ml > len - *off - 4) return -1;
    *off += 4 + ml;
    if (!cl) return 0;
    if (ml == 0) return cluster_set(cl, NULL, NULL, 0);
    kvmux_map *m = malloc(sizeof *m);
    if (!m || kvmux_map_decode(m, p, ml, NULL, 0) != 0) {
        free(m);
        return -1;
    }
    return cluster_set(cl, m, p, ml);
}

/* Format 6's migration section at buf + *off into cl: the map group's
 * table, the outgoing record, the incoming record; older formats: an
 * empty table and no records. 0, or -1 malformed. */
static int restore_migrations(kvmux_fsm_cluster *cl, uint32_t fmt, const uint8_t *buf,
                              size_t len, size_t *off) {
    kvmux_migin in = {0};
    if (fmt < SNAP_FORMAT) {
        if (cl) {
            kvmux_migout_reset(&cl->out);
            kvmux_migin_set(cl, &in);
        }
        return kvmux_migrec_restore(cl, NULL, 0);
    }
    if (len - *off < 4) return -1;
    size_t tl = get32(buf + *off);
    if (tl > len - *off - 4) return -1;
    if (kvmux_migrec_restore(cl, buf + *off + 4, tl) != 0) return -1;
    *off += 4 + tl;
    kvmux_migout scratch;
    kvmux_migout_init(&scratch);
    uint64_t fence_gen = cl ? atomic_load(&cl->out.fence_gen) : 0;
    long used = kvmux_migout_decode(cl ? &cl->out : &scratch, buf + *off, len - *off);
    kvmux_migout_clear(&scratch);
    if (cl) fence_wake(cl, fence_gen);
    if (used < 0) return -1;
    *off += (size_t)used;
    used = kvmux_migin_decode(&in, buf + *off, len - *off);
    if (used < 0) return -1;
    *off += (size_t)used;
    if (cl) kvmux_migin_set(cl, &in);
    return 0;
}

int kvmux_fsm_restore(kvmux_store *st, kvmux_fsm_clock *clk, kvmux_sessions *ss,
                      kvmux_stage_tab *sg, kvmux_fsm_cluster *cl, const uint8_t *buf,
                      size_t len) {
    uint32_t fmt = len >= SNAP_HDR_LEN ? get32(buf + 4) : 0;
    if (len < SNAP_HDR_LEN || get32(buf) != SNAP_MAGIC ||
        (fmt != SNAP_FORMAT && fmt != SNAP_FORMAT_MAP && fmt != SNAP_FORMAT_STAGE &&
         fmt != SNAP_FORMAT_SESS && fmt != SNAP_FORMAT_NOSESS))
        return -1;
    int with_sessions = fmt != SNAP_FORMAT_NOSESS;
    uint64_t last = get64(buf + 8), count = get64(buf + 16);
    if (clear_store(st) != 0) return -1;
    clock_advance(clk, get64(buf + 24));
    size_t off = SNAP_HDR_LEN;
    uint64_t now = kvmux_store_now(st);
    for (uint64_t i = 0; i < count; i++) {
        if (len - off < SNAP_REC_HDR_LEN) return -1;
        const uint8_t *p = buf + off;
        size_t klen = (size_t)p[0] << 8 | p[1];
        size_t vlen = get32(p + 2);
        uint64_t version = get64(p + 6), left = get64(p + 14);
        if (klen == 0 || vlen > len - off - SNAP_REC_HDR_LEN ||
            klen > len - off - SNAP_REC_HDR_LEN - vlen)
            return -1;
        const uint8_t *key = p + SNAP_REC_HDR_LEN;
        if (kvmux_store_restore(st, key, klen, key + klen, vlen, version,
                                left ? now + left : 0) != KVMUX_STATUS_OK)
            return -1;
        off += SNAP_REC_HDR_LEN + klen + vlen;
    }
    if (with_sessions) {
        kvmux_sessions scratch;
        kvmux_sessions_init(&scratch);
        long used = kvmux_sessions_decode(ss ? ss : &scratch, buf + off, len - off);
        kvmux_sessions_clear(&scratch);
        if (used < 0) return -1;
        off += (size_t)used;
    } else if (ss) {
        kvmux_sessions_clear(ss);
    }
    if (fmt >= SNAP_FORMAT_STAGE) {
        kvmux_stage_tab scratch;
        kvmux_stage_init(&scratch);
        long used = kvmux_stage_decode(sg ? sg : &scratch, buf + off, len - off);
        kvmux_stage_clear(&scratch);
        if (used < 0) return -1;
        off += (size_t)used;
    } else if (sg) {
        kvmux_stage_clear(sg);
    }
    if (restore_map(cl, fmt, buf, len, &off) != 0) return -1;
    if (restore_migrations(cl, fmt, buf, len, &off) != 0) return -1;
    if (off != len) return -1;
    kvmux_store_bump_version(st, last);
    kvmux_store_slot_recount(st); /* derived state: never in snapshots */
    return 0;
}

/* ---- digest ---- */

static uint64_t mix(uint64_t x) { /* splitmix64's finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void digest_record(void *ud, const kvmux_store_record *r) {
    uint64_t h = fnv(0xcbf29ce484222325ull, r->key, r->klen);
    h = fnv(h ^ 0xff, r->value ? r->value : (const uint8_t *)"", r->vlen);
    *(uint64_t *)ud += mix(h ^ mix(r->version));
}

uint64_t kvmux_fsm_digest(kvmux_store *st) {
    uint64_t sum = 0;
    for (uint32_t s = 0;; s++)
        if (s >= kvmux_store_snapshot_shard(st, s, digest_record, &sum)) break;
    return sum;
}
