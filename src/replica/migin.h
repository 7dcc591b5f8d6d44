/* A slot migration's target side in the replicated state machine
 * (docs/MIGRATION.md sections 2 and 4): the incoming record, and the log
 * entry ops that change it or import into / purge from the store --
 * MIGSTEP (0xF6) steps IN_BEGIN, IN_READY, IN_ABORT; IMPORT (0xF4) and
 * IMPORT_STAGED (0xF5, a big value's batch); PURGE (0xF7). Deterministic like the rest of fsm.c: every replica
 * applying the same log makes the same changes. Sans-IO; the request
 * side (CLUSTER import-begin / import, the janitor) is
 * src/server/migrate_target.c.
 *
 * Threads: the applier (fsm.c) is the only writer; it changes the record
 * under the cluster state's mutex (kvmux_fsm_cluster.mu), so loops read
 * it consistently with kvmux_migin_get. Counters are atomics. */
#ifndef KVMUX_MIGIN_H
#define KVMUX_MIGIN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct kvmux_fsm_cluster; /* fsm.h */
struct kvmux_fsm_result;  /* fsm.h */
struct kvmux_entry_cmd;   /* entry.h */
struct kvmux_store;       /* store.h */
struct kvmux_stage_tab;   /* stage.h */

/* MIGSTEP steps (MIGRATION.md 10.2). 1..5 are the source side's (not
 * built yet: refused as BAD_REQUEST). */
enum {
    KVMUX_MIG_OUT_BEGIN = 1, KVMUX_MIG_OUT_CUT = 2, KVMUX_MIG_OUT_DRAINED = 3,
    KVMUX_MIG_OUT_FENCE = 4, KVMUX_MIG_OUT_ABORT = 5,
    KVMUX_MIG_IN_BEGIN = 6, KVMUX_MIG_IN_READY = 7, KVMUX_MIG_IN_ABORT = 8
};

/* The incoming record's states; NONE: no record. */
enum { KVMUX_MIGIN_NONE = 0, KVMUX_MIGIN_PURGING = 1, KVMUX_MIGIN_READY = 2 };

/* Import batch limits (MIGRATION.md 4 and 10.3). */
#define KVMUX_MIG_BATCH_RECS 4096u
#define KVMUX_MIG_BATCH_BYTES 1048576u   /* keys and values of one batch */
#define KVMUX_MIG_BATCH_HDR_LEN 18u      /* id, term, bseq, nrec */
/* The largest batch: the header, 4096 PUTs' fixed fields (kind, key_len,
 * version, expire_at, value_len: 23 bytes) and 1 MiB of keys and values.
 * CLUSTER import accepts a value this long (other CLUSTER arguments are
 * bounded by the largest map). */
#define KVMUX_MIG_BATCH_WIRE_MAX                                                    \
    (KVMUX_MIG_BATCH_HDR_LEN + KVMUX_MIG_BATCH_RECS * 23u + KVMUX_MIG_BATCH_BYTES)
enum { KVMUX_MIG_REC_PUT = 1, KVMUX_MIG_REC_ABSENT = 2 };
/* PURGE batches (section 8.4): at most this many keys / key bytes. */
#define KVMUX_MIG_PURGE_KEYS 1024u
#define KVMUX_MIG_PURGE_BYTES 1048576u
/* MIGSTEP IN_BEGIN value: u16 first, u16 last, u16 src, u64 term. */
#define KVMUX_MIG_IN_BEGIN_LEN 14u
/* MIGSTEP extras: u32 id, u8 step. */
#define KVMUX_MIG_STEP_EXTRAS 5u
/* The incoming record in a snapshot (after its u8 has_in = 1). */
#define KVMUX_MIGIN_ENCODED_LEN 31u

/* The incoming record (at most one per group). */
typedef struct kvmux_migin {
    uint32_t id;                 /* 0: none */
    uint16_t first, last;        /* the slot range R, inclusive */
    uint16_t src;                /* the source group A */
    uint8_t state;               /* KVMUX_MIGIN_* */
    uint64_t min_term;           /* term of the latest IN_BEGIN applied */
    uint64_t last_term;          /* (last_term, last_bseq): the last */
    uint32_t last_bseq;          /*   IMPORT applied; (0, 0) none */
} kvmux_migin;

/* What this replica applied (STATS; never reset, not in snapshots). */
typedef struct kvmux_migin_stats {
    _Atomic uint64_t import_batches;  /* IMPORTs applied (IMPORT_STAGED too) */
    _Atomic uint64_t import_keys;     /* their records applied */
    _Atomic uint64_t import_skipped;  /* ... skipped: a newer version here */
    _Atomic uint64_t import_refused;  /* IMPORTs refused (BUSY, stale) */
    _Atomic uint64_t import_staged;   /* ... of which IMPORT_STAGED (a big value) */
    _Atomic uint64_t purged_keys;     /* keys deleted by PURGE */
} kvmux_migin_stats;

/* One record of an import batch, as decoded (pointers into the batch). */
typedef struct kvmux_mig_rec {
    uint8_t kind;                /* KVMUX_MIG_REC_* */
    uint16_t klen;
    const uint8_t *key;
    uint64_t version, expire_at; /* PUT only */
    uint32_t vlen;
    const uint8_t *value;
} kvmux_mig_rec;

typedef struct kvmux_mig_batch {
    uint32_t id;
    uint64_t term;
    uint32_t bseq;
    uint16_t nrec;
    const uint8_t *recs;         /* the records' bytes */
    size_t recs_len;
} kvmux_mig_batch;

/* Check the import batch p[0..n) (MIGRATION.md 4 "Units") completely:
 * header, 1..4096 records, kinds, key lengths 1..max_key, PUT versions
 * >= 1, at most KVMUX_MIG_BATCH_BYTES of keys and values unless the batch
 * holds one record (a big value travels alone: the caller bounds it by
 * its --max-value), no trailing
 * bytes; every key in slots first..last unless first > last (no range
 * check). Returns 0 with *b, or -1 with a reason in err (errlen may be
 * 0). */
int kvmux_mig_batch_parse(const uint8_t *p, size_t n, size_t max_key, uint16_t first,
                          uint16_t last, kvmux_mig_batch *b, char *err, size_t errlen);
/* The record at *off in a parsed batch (advances *off). Only for a batch
 * kvmux_mig_batch_parse accepted, nrec times. */
void kvmux_mig_batch_next(const kvmux_mig_batch *b, size_t *off, kvmux_mig_rec *r);
/* Bytes of a batch header, and of one record, as encoded. */
size_t kvmux_mig_rec_size(const kvmux_mig_rec *r);
/* Write the batch header / one record at out; returns the bytes written
 * (KVMUX_MIG_BATCH_HDR_LEN / kvmux_mig_rec_size). */
size_t kvmux_mig_batch_encode_hdr(uint8_t *out, uint32_t id, uint64_t term, uint32_t bseq,
                                  uint16_t nrec);
size_t kvmux_mig_rec_encode(uint8_t *out, const kvmux_mig_rec *r);

/* Apply one command of op MIGSTEP, IMPORT, IMPORT_STAGED or PURGE to st
 * and cl (the group's cluster state, which holds the incoming record;
 * NULL: refused BAD_REQUEST). sg: the staged values IMPORT_STAGED takes
 * its value from (NULL: none). now: the replicated clock. r (may be
 * NULL) gets the result:
 * - IN_BEGIN: OK with extras u64 min_term | u32 last_bseq (a new record
 *   in state PURGING; the same id with a higher term raises min_term and
 *   keeps everything else; an equal term changes nothing);
 *   VERSION_MISMATCH (a lower term); BUSY with extras u32 the other id
 *   (another migration is importing here).
 * - IN_READY: OK (PURGING -> READY, or already READY); NOT_FOUND (no
 *   record with that id).
 * - IN_ABORT: OK (the record is gone; the janitor purges its keys) or
 *   OK when no record exists (a resend); NOT_FOUND for another id's.
 * - IMPORT: the rules of MIGRATION.md 4 "How B applies an IMPORT": BUSY
 *   (no READY record with the id), VERSION_MISMATCH (stale term or bseq),
 *   else OK with extras u32 applied | u32 skipped.
 * - IMPORT_STAGED: a batch of one PUT whose value field is a staged
 *   value's 16-byte id and u32 total (value_len 20): BAD_REQUEST when not
 *   that shape; the refusals of IMPORT (the staged value dropped); then
 *   INTERNAL with nothing applied, (last_term, last_bseq) unchanged, when
 *   the staged value is missing or incomplete; else IMPORT's OK with the
 *   staged bytes as the value (taken from sg).
 * - PURGE (value u16 n, n x (u16 klen, key)): deletes each key whose slot
 *   the applied map does not give this group and that is not in a READY
 *   record's range; OK with extras u32 deleted.
 * A malformed command: BAD_REQUEST, nothing changed. */
void kvmux_migin_apply(struct kvmux_store *st, struct kvmux_fsm_cluster *cl,
                       struct kvmux_stage_tab *sg, uint64_t now,
                       const struct kvmux_entry_cmd *c, struct kvmux_fsm_result *r);

/* The applier installed a map: an incoming record whose whole range it
 * gives this group is done (committed) and removed. */
void kvmux_migin_map_applied(struct kvmux_fsm_cluster *cl);

/* A consistent copy of the record (state NONE: none). Any thread. */
void kvmux_migin_get(struct kvmux_fsm_cluster *cl, kvmux_migin *out);

/* Whether slot s must be purged here: keys of it exist only as leftovers
 * -- a map is applied, it does not give s to this group, and s is not in
 * a READY incoming record's range. The applier's view (call on the
 * applier's thread, or under cl->mu). */
int kvmux_migin_purgeable(const struct kvmux_fsm_cluster *cl, uint16_t s);

/* Snapshots (format 6, after the slot map and the migration table and
 * has_out): u8 has_in, then KVMUX_MIGIN_ENCODED_LEN bytes when 1. */
size_t kvmux_migin_encoded_len(const kvmux_migin *in);
size_t kvmux_migin_encode(const kvmux_migin *in, uint8_t *out);
/* Decode p[0..n) into *in (has_in 0: state NONE). Returns the bytes
 * used, or -1 when malformed (a state, range or group out of bounds). */
long kvmux_migin_decode(kvmux_migin *in, const uint8_t *p, size_t n);
/* Install *in as the record (restore; under cl->mu). */
void kvmux_migin_set(struct kvmux_fsm_cluster *cl, const kvmux_migin *in);

#endif
