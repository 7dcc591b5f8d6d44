/* The target side of a slot migration, request half (docs/MIGRATION.md
 * sections 4, 8.4, 10.1). The state machine half is src/replica/migin.c.
 *
 * - CLUSTER slotkeys, migration: any member, from its own store / applied
 *   state.
 * - CLUSTER import-begin (leader): proposed as MIGSTEP IN_BEGIN; once
 *   applied, answered OK (u64 min_term | u32 last_bseq) when the incoming
 *   record is READY, else parked on the connection's loop until it is
 *   (the janitor purges R's leftovers, then proposes IN_READY), at most
 *   IMPORT_BEGIN_PARK_MS, then BUSY "purging N keys of slots F-L".
 * - CLUSTER import-abort (leader; value u32 id): proposed as MIGSTEP
 *   IN_ABORT, the step B's leader takes when a migration it imports is
 *   aborted (an operator's or a test's tool until B learns aborts from
 *   the map group's table).
 * - CLUSTER import (leader): the batch checked (the same parser as the
 *   state machine's), --maxmemory checked before proposing (a full target
 *   stalls the move, never a replica), proposed as one IMPORT entry; a
 *   batch of one PUT whose value is over one chunk (1 MiB; it may have
 *   come fragmented, up to --max-value) is staged like a big SET and
 *   proposed as IMPORT_STAGED naming the staged value (replicate.c).
 * - The janitor (loop 0 of the leader, every JANITOR_MS): keys of slots
 *   this group holds but should not (kvmux_migin_purgeable) are listed by
 *   a slot-filtered store walk (expired ones included: they are counted)
 *   and proposed as PURGE entries of at most KVMUX_MIG_PURGE_KEYS keys /
 *   KVMUX_MIG_PURGE_BYTES, one in flight; a PURGING record whose range
 *   holds no keys gets IN_READY.
 *
 * Threads: loop threads only; the record is read under the cluster
 * state's mutex (kvmux_migin_get). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "fsm.h"
#include "migin.h"
#include "monotime.h"
#include "server_internal.h"
#include "stage.h"
#include "../cluster/cluster.h"

/* How long an import-begin waits for its record to be READY. */
#define IMPORT_BEGIN_PARK_MS 10000u
/* How often a loop with parked import-begins looks at the record (the
 * applier does not wake loops when a step applies). */
#define PARK_POLL_MS 10u
/* The janitor's period (MIGRATION.md 8.4). */
#define JANITOR_MS 100u
/* Scan steps per janitor round (each bounded by the store's work bound),
 * so one round over a big store does not hold the loop long. */
#define JANITOR_STEPS 64u

/* A parked import-begin. */
typedef struct park {
    struct park *next;
    kvmux_conn *conn;          /* NULL once the connection is gone */
    uint32_t request_id;
    uint32_t id;               /* the migration */
    uint64_t end;              /* loop ms */
} park;

/* Per loop (lazily allocated): parked requests; on loop 0 the janitor. */
struct kvmux_migt {
    park *parked;
    uint64_t next_ms;          /* the janitor's next round (loop ms) */
    uint64_t seq;              /* the janitor's entry in flight (0: none) */
    uint64_t cursor;           /* its walk's position (0: start) */
    /* This round's PURGE value under construction. */
    uint8_t *purge;
    size_t plen, kbytes;       /* value bytes; key bytes (<= 1 MiB) */
    uint32_t pkeys;
    size_t done_plen, done_kbytes; /* as of the last completed bucket */
    uint32_t done_pkeys;
    uint8_t purgeable[KVMUX_SLOTS]; /* slot -> 1 when its keys must go */
};

/* Longest slotkeys argument: "16383-16383". */
#define SLOTKEYS_ARG_MAX 11u

/* A decimal slot (no sign, no leading zeros beyond "0", < 16384) from
 * p[0..n). Returns 0, or -1. */
static int parse_slot(const uint8_t *p, size_t n, uint16_t *out) {
    if (n == 0 || n > 5 || (p[0] == '0' && n > 1)) return -1;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (v >= KVMUX_SLOTS) return -1;
    *out = (uint16_t)v;
    return 0;
}

int kvmux__parse_slot_range(const uint8_t *p, size_t n, uint16_t *first, uint16_t *last) {
    const uint8_t *dash = n ? memchr(p, '-', n) : NULL;
    if (!dash) {
        if (parse_slot(p, n, first) != 0) return -1;
        *last = *first;
        return 0;
    }
    size_t a = (size_t)(dash - p);
    if (parse_slot(p, a, first) != 0 || parse_slot(dash + 1, n - a - 1, last) != 0) return -1;
    return *first <= *last ? 0 : -1;
}

void kvmux__cluster_slotkeys(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_store *st = c->loop->srv->store;
    uint16_t first, last;
    if (!kvmux_store_has_slot_keys(st)) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "slotkeys: not a data group of a cluster (--cluster-group)");
        return;
    }
    if (f->value_len > SLOTKEYS_ARG_MAX ||
        kvmux__parse_slot_range(f->value, f->value_len, &first, &last) != 0) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "slotkeys takes FIRST-LAST or SLOT (0..16383, FIRST <= LAST)");
        return;
    }
    /* Worst case: "16383 4294967295\n" per slot, then the total line. */
    size_t cap = (size_t)(last - first + 1) * 17 + 32, n = 0;
    char *out = malloc(cap);
    if (!out) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return;
    }
    uint64_t total = 0;
    for (uint32_t s = first; s <= last; s++) {
        uint32_t k = kvmux_store_slot_keys(st, (uint16_t)s);
        if (!k) continue;
        total += k;
        n += (size_t)snprintf(out + n, cap - n, "%u %u\n", s, k);
    }
    n += (size_t)snprintf(out + n, cap - n, "total %llu\n", (unsigned long long)total);
    size_t room = kvmux__conn_max_frame(c) - KVMUX_FRAME_HDR_LEN;
    if (n > room) {
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "slotkeys: the answer (%zu bytes) exceeds the frame limit "
                 "(%zu): ask for a smaller range", n, room);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_TOO_LARGE, NULL, 0, msg);
    } else {
        kvmux__conn_respond_bytes(c, f->request_id, KVMUX_STATUS_OK, (const uint8_t *)out, n);
    }
    free(out);
}

/* ---- shared ---- */

static struct kvmux_migt *migt_of(kvmux_loop *l) {
    if (!l->migt) l->migt = calloc(1, sizeof *l->migt);
    return l->migt;
}

static const char *state_name(uint8_t st) {
    return st == KVMUX_MIGIN_PURGING ? "purging" : st == KVMUX_MIGIN_READY ? "ready" : "none";
}

static int get_record(kvmux_server *s, kvmux_migin *in) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(s);
    memset(in, 0, sizeof *in);
    if (!cl) return -1;
    kvmux_migin_get(cl, in);
    return 0;
}

static void respond_begin_ok(kvmux_conn *c, uint32_t id, const kvmux_migin *in) {
    uint8_t v[12];
    kvmux_store_u64be(v, in->min_term);
    kvmux_store_u32be(v + 8, in->last_term == in->min_term ? in->last_bseq : 0);
    kvmux__conn_respond_bytes(c, id, KVMUX_STATUS_OK, v, sizeof v);
}

static void respond_purging(kvmux_conn *c, uint32_t id, const kvmux_migin *in) {
    char msg[KVMUX_MAX_STATUS_MSG];
    snprintf(msg, sizeof msg, "purging %llu keys of slots %u-%u",
             (unsigned long long)kvmux_store_range_keys(c->loop->srv->store, in->first,
                                                        in->last),
             in->first, in->last);
    kvmux__conn_respond(c, id, KVMUX_STATUS_BUSY, NULL, 0, msg);
}

/* A data group's leader, or the request is answered (returns 0). */
static int leader_only(kvmux_conn *c, const kvmux_frame *f) {
    if (c->loop->srv->cfg.cluster_group == 0 || !kvmux__repl_cluster(c->loop->srv)) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "migrations need a replicated data group (--cluster-group)");
        return 0;
    }
    if (!kvmux__repl_is_leader(c->loop->srv)) {
        kvmux__repl_respond_not_leader(c, f->request_id);
        return 0;
    }
    return 1;
}

/* ---- CLUSTER migration ---- */

void kvmux__cluster_migration(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_migin in;
    if (f->value_len) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "migration takes no argument");
        return;
    }
    if (c->loop->srv->cfg.cluster_group == 0 || get_record(c->loop->srv, &in) != 0) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "not a replicated data group (--cluster-group)");
        return;
    }
    char text[160];
    int n;
    if (in.state == KVMUX_MIGIN_NONE)
        n = snprintf(text, sizeof text, "none\n");
    else
        n = snprintf(text, sizeof text, "in:%u %u-%u from %u state=%s term=%llu bseq=%u\n",
                     in.id, in.first, in.last, in.src, state_name(in.state),
                     (unsigned long long)in.min_term,
                     in.last_term == in.min_term ? in.last_bseq : 0);
    kvmux__conn_respond_bytes(c, f->request_id, KVMUX_STATUS_OK, (const uint8_t *)text,
                              (size_t)n);
}

/* ---- CLUSTER import-begin ---- */

int kvmux__cluster_import_begin(kvmux_conn *c, const kvmux_frame *f) {
    if (f->value_len != 18) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "import-begin takes u32 id, u16 first, u16 last, u16 src, u64 term "
                            "(18 bytes)");
        return 0;
    }
    const uint8_t *v = f->value;
    uint32_t id = kvmux_load_u32be(v);
    uint16_t first = kvmux_load_u16be(v + 4), last = kvmux_load_u16be(v + 6);
    uint16_t src = kvmux_load_u16be(v + 8);
    if (id == 0 || first > last || last >= KVMUX_SLOTS || src == 0 ||
        src == c->loop->srv->cfg.cluster_group) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "import-begin: id 0, a bad slot range, or a bad source group");
        return 0;
    }
    if (!leader_only(c, f)) return 0;
    uint8_t ex[KVMUX_MIG_STEP_EXTRAS];
    kvmux_store_u32be(ex, id);
    ex[4] = KVMUX_MIG_IN_BEGIN;
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_MIGSTEP, .extras_len = sizeof ex, .extras = ex,
                           .value = v + 4, .value_len = KVMUX_MIG_IN_BEGIN_LEN};
    return kvmux__repl_propose_cmd(c, f->request_id, &cmd, ex, sizeof ex);
}

/* ---- CLUSTER import-abort ---- */

int kvmux__cluster_import_abort(kvmux_conn *c, const kvmux_frame *f) {
    if (f->value_len != 4 || kvmux_load_u32be(f->value) == 0) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "import-abort takes u32 id (4 bytes, not 0)");
        return 0;
    }
    if (!leader_only(c, f)) return 0;
    uint8_t ex[KVMUX_MIG_STEP_EXTRAS];
    memcpy(ex, f->value, 4);
    ex[4] = KVMUX_MIG_IN_ABORT;
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_MIGSTEP, .extras_len = sizeof ex,
                           .extras = ex};
    return kvmux__repl_propose_cmd(c, f->request_id, &cmd, ex, sizeof ex);
}

static void abort_done(kvmux_conn *c, uint32_t request_id, uint32_t id,
                       const kvmux_fsm_result *res) {
    char msg[KVMUX_MAX_STATUS_MSG];
    if (res->status == KVMUX_STATUS_OK) {
        snprintf(msg, sizeof msg, "migration %u is not importing here any more; its keys "
                 "are purged", id);
        kvmux__conn_respond_bytes(c, request_id, KVMUX_STATUS_OK, (const uint8_t *)msg,
                                  strlen(msg));
        return;
    }
    kvmux_migin in;
    get_record(c->loop->srv, &in);
    snprintf(msg, sizeof msg, "migration %u is not the one importing here (%u is)", id, in.id);
    kvmux__conn_respond(c, request_id, KVMUX_STATUS_NOT_FOUND, NULL, 0, msg);
}

/* Park (c, request_id) until migration id is READY. 1, or 0 answered. */
static int park_begin(kvmux_conn *c, uint32_t request_id, uint32_t id) {
    kvmux_loop *l = c->loop;
    struct kvmux_migt *m = migt_of(l);
    park *p = m ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    p->conn = c;
    p->request_id = request_id;
    p->id = id;
    p->end = l->now + IMPORT_BEGIN_PARK_MS;
    p->next = m->parked;
    m->parked = p;
    c->nrepl++;
    return 1;
}

static int begin_done(kvmux_conn *c, uint32_t request_id, const uint8_t *tag,
                      const kvmux_fsm_result *res) {
    uint32_t id = kvmux_load_u32be(tag);
    char msg[KVMUX_MAX_STATUS_MSG];
    kvmux_migin in;
    get_record(c->loop->srv, &in);
    switch (res->status) {
    case KVMUX_STATUS_OK:
        if (in.state == KVMUX_MIGIN_READY && in.id == id) {
            respond_begin_ok(c, request_id, &in);
            return 0;
        }
        return park_begin(c, request_id, id);
    case KVMUX_STATUS_BUSY:
        snprintf(msg, sizeof msg, "another migration (%u) is importing here",
                 res->extras_len >= 4 ? kvmux_load_u32be(res->extras) : 0);
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, msg);
        return 0;
    case KVMUX_STATUS_VERSION_MISMATCH:
        snprintf(msg, sizeof msg, "migration %u is already at term %llu (a newer source "
                 "leader)", id, (unsigned long long)in.min_term);
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_VERSION_MISMATCH, NULL, 0, msg);
        return 0;
    default:
        snprintf(msg, sizeof msg, "import-begin refused: migration %u is importing other "
                 "slots or from another group", id);
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, msg);
        return 0;
    }
}

/* Answer the parked import-begins that are done. */
static void parked_check(kvmux_loop *l, struct kvmux_migt *m) {
    if (!m->parked) return;
    kvmux_migin in;
    get_record(l->srv, &in);
    int leader = kvmux__repl_is_leader(l->srv);
    park **pp = &m->parked;
    while (*pp) {
        park *p = *pp;
        kvmux_conn *c = p->conn;
        int ready = in.state == KVMUX_MIGIN_READY && in.id == p->id;
        int gone = in.state == KVMUX_MIGIN_NONE || in.id != p->id;
        if (c && !ready && !gone && leader && l->now < p->end &&
            l->phase == KVMUX_LOOP_RUNNING) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        if (c) {
            c->nrepl--;
            if (ready) {
                respond_begin_ok(c, p->request_id, &in);
            } else if (gone) {
                char msg[KVMUX_MAX_STATUS_MSG];
                snprintf(msg, sizeof msg, "migration %u is no longer importing here (aborted "
                         "or committed)", p->id);
                kvmux__conn_respond(c, p->request_id, KVMUX_STATUS_BUSY, NULL, 0, msg);
            } else if (!leader) {
                kvmux__repl_respond_not_leader(c, p->request_id);
            } else {
                respond_purging(c, p->request_id, &in);
            }
            kvmux_session_request_end(&c->sess);
            kvmux__conn_maybe_finish_drain(c);
        }
        free(p);
    }
}

/* ---- CLUSTER import ---- */

/* A batch of one PUT whose value is over one staged chunk: its record
 * (else 0). */
static int big_record(const kvmux_mig_batch *b, kvmux_mig_rec *rec) {
    size_t off = 0;
    if (b->nrec != 1) return 0;
    kvmux_mig_batch_next(b, &off, rec);
    return rec->kind == KVMUX_MIG_REC_PUT && rec->vlen > KVMUX_STAGE_CHUNK;
}

/* Stage the big value of the batch f->value (in val at the same offsets
 * when val is not NULL, else copied into a store value now) and propose
 * IMPORT_STAGED: the batch with the PUT's value replaced by the staged
 * reference (MIGRATION.md 4). Takes val. 1 (queued) or 0 (answered). */
static int import_big(kvmux_conn *c, const kvmux_frame *f, kvmux_store_value *val,
                      const kvmux_mig_rec *rec, const uint8_t *tag) {
    size_t voff = (size_t)(rec->value - f->value);
    size_t head = voff; /* the batch up to the value: the value is its last field */
    uint32_t small_len = (uint32_t)(head + KVMUX_STAGE_ID_LEN + 4);
    uint8_t *small = malloc(small_len);
    if (small && !val && (val = kvmux_store_value_new(c->loop->srv->store, rec->vlen)) != NULL) {
        memcpy(kvmux_store_value_data(val), rec->value, rec->vlen);
        voff = 0;
    }
    if (!small || !val) {
        free(small);
        kvmux_store_value_release(val);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    memcpy(small, f->value, head);
    kvmux_store_u32be(small + head - 4, KVMUX_STAGE_ID_LEN + 4); /* value_len: the reference */
    memset(small + head, 0, KVMUX_STAGE_ID_LEN + 4);
    return kvmux__repl_import_staged(c, f->request_id, val, voff, rec->vlen, small, small_len,
                                     tag, 16);
}

/* CLUSTER import with the batch in f->value, which val (NULL: none) holds
 * when it came as an upload. Takes val. */
static int import_request(kvmux_conn *c, const kvmux_frame *f, kvmux_store_value *val) {
    kvmux_server *s = c->loop->srv;
    int rc = 0;
    kvmux_migin in;
    kvmux_mig_batch b;
    kvmux_mig_rec rec;
    char err[KVMUX_MAX_STATUS_MSG];
    if (!leader_only(c, f)) goto done;
    get_record(s, &in);
    /* Keys outside R are refused here with the reason; with no record the
     * state machine answers BUSY. */
    uint16_t first = in.state != KVMUX_MIGIN_NONE ? in.first : 1;
    uint16_t last = in.state != KVMUX_MIGIN_NONE ? in.last : 0;
    if (kvmux_mig_batch_parse(f->value, f->value_len, s->cfg.max_key, first, last, &b, err,
                              sizeof err) != 0) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, err);
        goto done;
    }
    int big = big_record(&b, &rec);
    if (big && rec.vlen > s->cfg.max_value) { /* a value this group could not hold */
        snprintf(err, sizeof err, "import batch: a value of %u bytes exceeds max value size %u",
                 rec.vlen, s->cfg.max_value);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_TOO_LARGE, NULL, 0, err);
        goto done;
    }
    if (kvmux__durable_refuse(c, f->request_id, 0)) goto done; /* --maxmemory */
    uint8_t tag[16];
    memcpy(tag, f->value, 16); /* id, term, bseq: for the answer's message */
    if (big) return import_big(c, f, val, &rec, tag);
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_IMPORT, .value = f->value,
                           .value_len = f->value_len};
    rc = kvmux__repl_propose_cmd(c, f->request_id, &cmd, tag, sizeof tag);
done:
    kvmux_store_value_release(val);
    return rc;
}

int kvmux__cluster_import(kvmux_conn *c, const kvmux_frame *f) {
    return import_request(c, f, NULL);
}

int kvmux__cluster_import_value(kvmux_conn *c, const kvmux_frame *f, kvmux_store_value *val) {
    return import_request(c, f, val);
}

static void import_done(kvmux_conn *c, uint32_t request_id, uint8_t op, const uint8_t *tag,
                        const kvmux_fsm_result *res) {
    uint32_t id = kvmux_load_u32be(tag), bseq = kvmux_load_u32be(tag + 12);
    uint64_t term = kvmux_load_u64be(tag + 4);
    char msg[KVMUX_MAX_STATUS_MSG];
    kvmux_migin in;
    get_record(c->loop->srv, &in);
    switch (res->status) {
    case KVMUX_STATUS_OK:
        kvmux__conn_respond_bytes(c, request_id, KVMUX_STATUS_OK, res->extras, 8);
        return;
    case KVMUX_STATUS_BUSY:
        snprintf(msg, sizeof msg, "migration %u is not ready to import here (%s)", id,
                 in.state != KVMUX_MIGIN_NONE && in.id == id ? state_name(in.state)
                                                               : "no such migration");
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_BUSY, NULL, 0, msg);
        return;
    case KVMUX_STATUS_VERSION_MISMATCH:
        snprintf(msg, sizeof msg, "stale batch (term %llu, bseq %u): migration %u is at term "
                 "%llu, last batch (%llu, %u)", (unsigned long long)term, bseq, id,
                 (unsigned long long)in.min_term, (unsigned long long)in.last_term,
                 in.last_bseq);
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_VERSION_MISMATCH, NULL, 0, msg);
        return;
    case KVMUX_STATUS_BAD_REQUEST:
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "import batch refused when applied (keys outside the range)");
        return;
    default:
        kvmux__conn_respond(c, request_id, KVMUX_STATUS_INTERNAL, NULL, 0,
                            op == KVMUX_ENTRY_OP_IMPORT_STAGED
                                ? "import of a big value failed: its staged value was "
                                  "incomplete when applied, or out of memory"
                                : "import partly failed: out of memory");
        return;
    }
}

int kvmux__migt_done(kvmux_conn *c, uint32_t request_id, uint8_t op, const uint8_t *tag,
                     const kvmux_fsm_result *res) {
    if (op == KVMUX_ENTRY_OP_MIGSTEP && tag[4] == KVMUX_MIG_IN_ABORT) {
        abort_done(c, request_id, kvmux_load_u32be(tag), res);
        return 0;
    }
    if (op == KVMUX_ENTRY_OP_MIGSTEP) return begin_done(c, request_id, tag, res);
    import_done(c, request_id, op, tag, res);
    return 0;
}

/* ---- the janitor (loop 0 of the leader) ---- */

/* kvmux_store_scan_fn: keys of purgeable slots into the PURGE value,
 * a whole bucket at a time: a bucket that does not fit waits for the next
 * round (KVMUX_STORE_SCAN_FULL drops its keys). One that cannot fit even
 * an empty batch (over 1024 purgeable keys or 1 MiB in one bucket: not
 * seen with the table's load) is cut, its excess found by a later walk. */
static int janitor_key(void *ud, const uint8_t *key, size_t klen) {
    struct kvmux_migt *m = ud;
    if (!key) { /* the bucket is complete */
        m->done_plen = m->plen;
        m->done_kbytes = m->kbytes;
        m->done_pkeys = m->pkeys;
        return 0;
    }
    if (!m->purgeable[kvmux_slot(key, klen)]) return 0;
    if (m->pkeys == KVMUX_MIG_PURGE_KEYS || m->kbytes + klen > KVMUX_MIG_PURGE_BYTES) {
        if (m->done_pkeys == 0) return 0;
        m->plen = m->done_plen;
        m->kbytes = m->done_kbytes;
        m->pkeys = m->done_pkeys;
        return KVMUX_STORE_SCAN_FULL;
    }
    kvmux_store_u16be(m->purge + m->plen, (uint16_t)klen);
    memcpy(m->purge + m->plen + 2, key, klen);
    m->plen += 2 + klen;
    m->kbytes += klen;
    m->pkeys++;
    return 0;
}

/* The slots to purge (1 each) and whether any holds keys; the record. */
static int purgeable_slots(kvmux_server *s, uint8_t *out, kvmux_migin *in) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(s);
    int any = 0;
    pthread_mutex_lock(&cl->mu);
    *in = cl->in;
    for (uint32_t k = 0; k < KVMUX_SLOTS; k++) {
        out[k] = (uint8_t)kvmux_migin_purgeable(cl, (uint16_t)k);
        any |= out[k] && kvmux_store_slot_keys(s->store, (uint16_t)k) > 0;
    }
    pthread_mutex_unlock(&cl->mu);
    return any;
}

/* One round: walk on from the cursor collecting up to one PURGE batch
 * (a scan step refusing a bucket means the batch is full). */
static void janitor_walk(kvmux_loop *l, struct kvmux_migt *m) {
    m->plen = m->done_plen = 2;
    m->kbytes = m->done_kbytes = 0;
    m->pkeys = m->done_pkeys = 0;
    for (uint32_t i = 0; i < JANITOR_STEPS && m->pkeys < KVMUX_MIG_PURGE_KEYS; i++) {
        uint64_t next = 0;
        int rc = kvmux_store_scan_slots(l->srv->store, m->cursor, 0, KVMUX_SLOTS - 1,
                                        KVMUX_STORE_SCAN_EXPIRED, KVMUX_MIG_PURGE_KEYS,
                                        SIZE_MAX, janitor_key, m, &next);
        if (rc != KVMUX_STATUS_OK) break; /* TOO_LARGE: the batch is full */
        m->cursor = next;
        if (next == 0) break; /* the walk is complete; the next round starts over */
    }
    if (m->pkeys == 0) return;
    kvmux_store_u16be(m->purge, (uint16_t)m->pkeys);
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_PURGE, .value = m->purge,
                           .value_len = (uint32_t)m->plen};
    m->seq = kvmux__repl_propose_internal(l, &cmd);
}

static void janitor(kvmux_loop *l, struct kvmux_migt *m) {
    if (m->seq && kvmux__repl_seq_in_flight(l, m->seq)) return; /* one in flight */
    m->seq = 0;
    kvmux_migin in;
    if (purgeable_slots(l->srv, m->purgeable, &in)) {
        if (!m->purge && !(m->purge = malloc(2 + KVMUX_MIG_PURGE_BYTES + 2 * KVMUX_MIG_PURGE_KEYS)))
            return;
        janitor_walk(l, m);
        return;
    }
    m->cursor = 0;
    free(m->purge); /* nothing to purge: give the buffer back */
    m->purge = NULL;
    if (in.state == KVMUX_MIGIN_PURGING &&
        kvmux_store_range_keys(l->srv->store, in.first, in.last) == 0) {
        uint8_t ex[KVMUX_MIG_STEP_EXTRAS];
        kvmux_store_u32be(ex, in.id);
        ex[4] = KVMUX_MIG_IN_READY;
        kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_MIGSTEP, .extras_len = sizeof ex,
                               .extras = ex};
        m->seq = kvmux__repl_propose_internal(l, &cmd);
    }
}

void kvmux__migt_iterate(kvmux_loop *l) {
    struct kvmux_migt *m = l->migt;
    if (m) parked_check(l, m);
    if (l->id != 0 || l->srv->cfg.cluster_group == 0 || !kvmux__repl_cluster(l->srv)) return;
    if (!(m = migt_of(l)) || l->now < m->next_ms) return;
    m->next_ms = l->now + JANITOR_MS;
    if (kvmux__repl_is_leader(l->srv) && l->phase == KVMUX_LOOP_RUNNING) janitor(l, m);
    else m->seq = 0, m->cursor = 0;
}

uint64_t kvmux__migt_next_ms(const kvmux_loop *l) {
    const struct kvmux_migt *m = l->migt;
    uint64_t next = UINT64_MAX;
    if (m && m->parked) next = kvmux_clock_ms() + PARK_POLL_MS;
    if (l->id == 0 && l->srv->cfg.cluster_group && l->srv->repl) {
        uint64_t j = m ? m->next_ms : 0;
        /* next_ms is on the loop clock (l->now), which is kvmux_clock_ms. */
        if (j < next) next = j;
    }
    return next;
}

void kvmux__migt_forget(kvmux_conn *c) {
    for (park *p = c->loop->migt ? c->loop->migt->parked : NULL; p; p = p->next)
        if (p->conn == c) p->conn = NULL;
}

int kvmux__migt_holds(const kvmux_conn *c, uint32_t request_id) {
    for (const park *p = c->loop->migt ? c->loop->migt->parked : NULL; p; p = p->next)
        if (p->conn == c && p->request_id == request_id) return 1;
    return 0;
}

void kvmux__migt_loop_deinit(kvmux_loop *l) {
    struct kvmux_migt *m = l->migt;
    if (!m) return;
    while (m->parked) {
        park *p = m->parked;
        m->parked = p->next;
        free(p);
    }
    free(m->purge);
    free(m);
    l->migt = NULL;
}

void kvmux__migt_stats(kvmux_server *s, void *o, void (*u64line)(void *o, const char *name,
                                                                 uint64_t v),
                       void (*strline)(void *o, const char *name, const char *v)) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(s);
    if (!cl) return;
    kvmux_migin in;
    kvmux_migin_get(cl, &in);
    u64line(o, "migrate_in_id", in.state != KVMUX_MIGIN_NONE ? in.id : 0);
    strline(o, "migrate_in_state", state_name(in.state));
    u64line(o, "migrate_import_batches", atomic_load(&cl->in_stats.import_batches));
    u64line(o, "migrate_import_keys", atomic_load(&cl->in_stats.import_keys));
    u64line(o, "migrate_import_skipped", atomic_load(&cl->in_stats.import_skipped));
    u64line(o, "migrate_import_staged", atomic_load(&cl->in_stats.import_staged));
    u64line(o, "migrate_import_refused", atomic_load(&cl->in_stats.import_refused));
    u64line(o, "migrate_purged_keys", atomic_load(&cl->in_stats.purged_keys));
}
