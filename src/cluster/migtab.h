/* The map group's migration table (docs/MIGRATION.md sections 2 and 10.2):
 * the records of slot migrations, their rules and the canonical KVMG
 * encoding that CLUSTER migrations / mwatch answer and map-group snapshots
 * carry.
 *
 * Sans-IO like the rest of src/cluster: no allocation, no clock, no I/O.
 * A table is a plain struct of fixed arrays (about 25 KiB): the caller
 * owns it. The rule functions are deterministic (the same table, map and
 * arguments give the same change and answer on every replica): they are
 * what applying entry op 0xF8 MIGREC runs. */
#ifndef KVMUX_MIGTAB_H
#define KVMUX_MIGTAB_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.h"

#define KVMUX_MIG_MAGIC "KVMG"
#define KVMUX_MIG_FORMAT 1u
#define KVMUX_MIG_MAX_OPEN 16u      /* OPEN records at once */
#define KVMUX_MIG_MAX_UNACKED 64u   /* ended records awaiting an ack: CREATE refused at it */
#define KVMUX_MIG_KEEP_ENDED 32u    /* ended records kept after both acks */
/* Records a table can hold: OPEN + ended-unacked never exceeds 16 + 64
 * (CREATE needs < 16 and < 64; ending moves one from one to the other),
 * and at most 32 fully acked records are not yet droppable. */
#define KVMUX_MIG_MAX_RECORDS 112u
#define KVMUX_MIG_REASON_MAX 200u
#define KVMUX_MIG_HDR_LEN 19u       /* magic, format, mgen, next_id, n */
#define KVMUX_MIG_REC_FIXED 47u     /* a record without its reason bytes */
#define KVMUX_MIG_WIRE_MAX                                                            \
    (KVMUX_MIG_HDR_LEN + KVMUX_MIG_MAX_RECORDS * (KVMUX_MIG_REC_FIXED + KVMUX_MIG_REASON_MAX))

enum { KVMUX_MIG_OPEN = 1, KVMUX_MIG_COMMITTED = 2, KVMUX_MIG_ABORTED = 3 };
enum { KVMUX_MIG_ACK_SRC = 1, KVMUX_MIG_ACK_DST = 2 };

typedef struct kvmux_migrec {
    uint32_t id;
    uint16_t first, last;   /* the slot range, inclusive */
    uint16_t src, dst;      /* groups A and B */
    uint8_t state;          /* KVMUX_MIG_OPEN / COMMITTED / ABORTED */
    uint8_t acks;           /* KVMUX_MIG_ACK_* bits */
    uint64_t start_epoch, end_epoch, created_ms, ended_ms;
    uint8_t reason_len;
    char reason[KVMUX_MIG_REASON_MAX + 1]; /* NUL-terminated copy */
} kvmux_migrec;

typedef struct kvmux_migtab {
    uint64_t mgen;          /* +1 on every change of the table */
    uint32_t next_id;       /* the id CREATE gives next (1 for a new table) */
    uint16_t n;
    kvmux_migrec rec[KVMUX_MIG_MAX_RECORDS]; /* ascending id */
} kvmux_migtab;

/* Empty table: mgen 0, next_id 1. */
void kvmux_migtab_init(kvmux_migtab *t);

/* The record with this id, or NULL. */
const kvmux_migrec *kvmux_migtab_find(const kvmux_migtab *t, uint32_t id);

/* How many records are OPEN; ended and not acked by both sides; by state
 * (KVMUX_MIG_*). */
uint32_t kvmux_migtab_count(const kvmux_migtab *t, int state);
uint32_t kvmux_migtab_unacked(const kvmux_migtab *t);

/* ---- the KVMG codec (docs/PROTOCOL.md 18.6) ---- */

/* Encoded size of t (<= KVMUX_MIG_WIRE_MAX). */
size_t kvmux_migtab_encoded_size(const kvmux_migtab *t);
/* Encode t into out[0..cap): the bytes written, or 0 when cap is too
 * small. Equal tables give equal bytes. */
size_t kvmux_migtab_encode(const kvmux_migtab *t, uint8_t *out, size_t cap);
/* Decode p[0..len) into t. Refuses (-1, a one-line reason in err, which
 * may be NULL; t then unspecified but safe) another magic or format,
 * truncation, trailing bytes, n > 112, ids not ascending or 0, first >
 * last, last >= 16384, src = dst, a group 0, a state outside 1..3, acks
 * > 3, end_epoch != 0 on a record not COMMITTED, a reason over 200 bytes
 * or with a byte outside printable ASCII. 0 on success. */
int kvmux_migtab_decode(kvmux_migtab *t, const uint8_t *p, size_t len, char *err, size_t errcap);

/* ---- the rules (MIGREC steps), checked when the entry applies ---- */

/* Why a step was answered as it was; with the answer's status and the
 * record's id (or the conflicting one), a group and an epoch, enough for
 * the server to word the answer of docs/MIGRATION.md 10.1. */
enum {
    KVMUX_MIGR_CREATED = 1,   /* OK: id */
    KVMUX_MIGR_COMMITTED,     /* OK: id, epoch = end_epoch (also a resend) */
    KVMUX_MIGR_ABORTED,       /* OK: id (also a resend) */
    KVMUX_MIGR_ACKED,         /* OK: id */
    KVMUX_MIGR_NO_MAP,        /* BAD_REQUEST */
    KVMUX_MIGR_BAD_RANGE,     /* BAD_REQUEST: first > last or last >= 16384 */
    KVMUX_MIGR_NOT_ONE_GROUP, /* BAD_REQUEST: epoch = first << 16 | last */
    KVMUX_MIGR_DST_NOT_IN_MAP,/* BAD_REQUEST: group */
    KVMUX_MIGR_ALREADY_DST,   /* BAD_REQUEST: group, epoch = first << 16 | last */
    KVMUX_MIGR_SRC_BUSY,      /* BUSY: group, id = its open migration */
    KVMUX_MIGR_DST_BUSY,      /* BUSY: group, id = its open migration */
    KVMUX_MIGR_OPEN_FULL,     /* BUSY */
    KVMUX_MIGR_UNACKED_FULL,  /* BUSY */
    KVMUX_MIGR_NOT_FOUND,     /* NOT_FOUND: id */
    KVMUX_MIGR_IS_COMMITTED,  /* VERSION_MISMATCH: id, epoch (ABORT on COMMITTED) */
    KVMUX_MIGR_WAS_ABORTED,   /* VERSION_MISMATCH: id (COMMIT on ABORTED) */
    KVMUX_MIGR_NOT_ENDED,     /* BAD_REQUEST: id (ACK on OPEN) */
    KVMUX_MIGR_NOT_SIDE,      /* BAD_REQUEST: id, group (ACK from a third group) */
    KVMUX_MIGR_MOVED,         /* INTERNAL: COMMIT found R not A's (the setmap guard
                                 makes this impossible; refused rather than trusted) */
    KVMUX_MIGR_MALFORMED      /* BAD_REQUEST: a corrupt MIGREC command */
};

typedef struct kvmux_migres {
    uint8_t status;  /* a KVMUX_STATUS_* */
    uint8_t why;     /* KVMUX_MIGR_* */
    uint16_t group;
    uint32_t id;
    uint64_t epoch;
} kvmux_migres;

/* CREATE: a record OPEN for slots first..last from their owner in m
 * (NULL: no map installed) to dst, created at now_ms, start_epoch m's.
 * Checks, in this order: a map; the range; one owner for all of it; dst
 * in m; dst not that owner; 16 OPEN; the owner not already a source, dst
 * not already a target of an OPEN record; 64 ended awaiting acks. */
kvmux_migres kvmux_migtab_create(kvmux_migtab *t, const kvmux_map *m, uint16_t first,
                                 uint16_t last, uint16_t dst, uint64_t now_ms);

/* COMMIT id on the installed map m: on an OPEN record, next (caller's
 * scratch) becomes m with epoch + 1 and owner[R] = dst, the record
 * COMMITTED at that epoch, and the result's epoch is it: the caller must
 * install next in the same entry (*install set to 1). A COMMITTED record
 * again: OK, nothing changes. ABORTED: VERSION_MISMATCH. */
kvmux_migres kvmux_migtab_commit(kvmux_migtab *t, const kvmux_map *m, uint32_t id,
                                 uint64_t now_ms, kvmux_map *next, int *install);

/* ABORT id with reason[0..rlen) (rlen <= 200, printable: the caller
 * checked). OPEN -> ABORTED; ABORTED again: OK; COMMITTED:
 * VERSION_MISMATCH with its end epoch. */
kvmux_migres kvmux_migtab_abort(kvmux_migtab *t, uint32_t id, const char *reason, size_t rlen,
                                uint64_t now_ms);

/* ACK id from group: sets its side's bit on an ended record (again: OK,
 * no change); then drops every record acked by both sides with 32 newer
 * (higher-id) ended records. */
kvmux_migres kvmux_migtab_ack(kvmux_migtab *t, uint32_t id, uint16_t group);

/* The setmap guard: whether the map next may be installed while t has
 * OPEN records: 0, or -1 with *res set (BAD_REQUEST; id, and epoch =
 * first << 16 | last of the record it would break) when next changes the
 * owner of a slot of an OPEN record or does not list its src or dst. */
int kvmux_migtab_guard(const kvmux_migtab *t, const kvmux_map *next, kvmux_migres *res);

/* The answer's text for r (docs/MIGRATION.md 10.1), using t for the
 * record's range, groups and reason (the record may be gone: then
 * worded without them). NUL-terminated into out[0..cap). */
void kvmux_migtab_message(const kvmux_migtab *t, const kvmux_migres *r, char *out, size_t cap);

#endif
