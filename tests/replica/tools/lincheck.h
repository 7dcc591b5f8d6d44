/* lincheck: a linearizability checker for kvmux histories, per-key register
 * model with versions. The library half (this header) is what C tests call
 * in-process; tests/replica/tools/lincheck_main.c is the CLI
 * (`kvmux-lincheck FILE`) over the text format below.
 *
 * The model. Every key is a register, initially absent (version 0). A
 * successful write (SET, CAS, INCR) gives the key a new version, unique and
 * increasing in the order the server applied the writes; DEL makes the key
 * absent and returns no version. Because the server names each write by its
 * version, the checker need not search for a write order (the NP-hard part of
 * general linearizability checking): the versions are the order. What remains
 * is to check that this order is consistent with what clients saw:
 *
 *   1. value:      a read that returns (version v, value x) names a write at
 *                  v of value x. A different value at v is "wrong value";
 *                  a version/value nobody wrote is "phantom read".
 *   2. real time:  give every op a position: a write at v sits at (v, 0), a
 *                  read of v at (v, 1). If op A completed before op B was
 *                  invoked, pos(A) <= pos(B). Otherwise: "stale read" (B a
 *                  read), "lost write" (B a read of the final state, A an
 *                  acknowledged write: the write's effect is absent from the
 *                  final state and no later-ordered write overwrote it), or
 *                  "real-time order" (B a write placed before A).
 *   3. uniqueness: two writes with the same version, or one write (one
 *                  SET/CAS value: values must be unique per key, they are the
 *                  write's id) observed at two versions: "duplicate write"
 *                  (a write applied twice, e.g. a retry that was not
 *                  de-duplicated).
 *   4. semantics:  a CAS from expected e that got version v must have found
 *                  e: no known version strictly between e and v ("cas
 *                  order"); an INCR's result is the previous version's value
 *                  plus delta, when no unobserved write can sit between them
 *                  ("incr value"); for a key only ever INCRed, the final value
 *                  lies within the sum of acknowledged deltas plus any subset
 *                  of the unknown ones ("counter": catches an INCR lost or
 *                  applied twice even when unknown outcomes hide which).
 *   5. absence:    a read that finds the key absent (GET or DEL NOT_FOUND,
 *                  CAS NOT_FOUND) must fall where the key can be absent: before
 *                  its first write, or after a DEL that the real-time order
 *                  lets sit there; two acknowledged DELs need a write between
 *                  them ("absent read", "double delete"; a read of the final
 *                  state that finds absent an acknowledged write no DEL can
 *                  follow is a "lost write").
 *
 * Outcomes: ok (applied, result known), fail (definitely not applied; a CAS
 * VERSION_MISMATCH or any NOT_FOUND still reports what the op observed), info
 * (unknown: timed out, connection lost, OUTCOME_UNKNOWN; may or may not have
 * been applied, at any time after its invocation). An info SET/CAS whose value
 * a read returns is taken as applied at that version (from then on it is
 * checked like an ok write with no completion time); one never observed is
 * taken as not applied. Info INCRs and DELs cannot be identified and only
 * widen what the checks of 4 and 5 accept. An invocation with no completion
 * in a file is info.
 *
 * Soundness: every violation reported is a real one (given the model and
 * that timestamps come from one monotonic clock). Checks 4 and 5 are
 * necessary conditions only where DELs and unknown INCRs leave the order open,
 * so some anomalies involving them can pass unreported.
 *
 * Cost: O(n log n) in the number of ops (sorting per key); 100k ops check in
 * well under a second.
 *
 * History text format (one event per line; '#' starts a comment line; fields
 * separated by single spaces or tabs; keys and values are non-empty tokens
 * without white space, so binary data is hex-encoded by the writer):
 *
 *   PROC inv  T_NS get  KEY
 *   PROC ok   T_NS get  KEY VERSION VALUE
 *   PROC fail T_NS get  KEY notfound
 *   PROC inv  T_NS set  KEY VALUE
 *   PROC ok   T_NS set  KEY VERSION
 *   PROC inv  T_NS cas  KEY EXPECTED VALUE
 *   PROC ok   T_NS cas  KEY VERSION
 *   PROC fail T_NS cas  KEY mismatch CURRENT   (or: notfound)
 *   PROC inv  T_NS incr KEY DELTA
 *   PROC ok   T_NS incr KEY VALUE VERSION
 *   PROC inv  T_NS del  KEY
 *   PROC ok   T_NS del  KEY
 *   PROC fail T_NS del  KEY notfound
 *   PROC fail T_NS OP   KEY [REASON]           (any op: not applied, nothing seen)
 *   PROC info T_NS OP   KEY [REASON]           (any op: outcome unknown)
 *
 * PROC is a decimal process id: one logical caller with at most one op in
 * flight (a connection with 64 requests in flight is 64 processes). T_NS is
 * CLOCK_MONOTONIC nanoseconds (all processes of a test share the clock);
 * a completion's time is >= its invocation's. VERSION, EXPECTED, CURRENT are
 * decimal u64; DELTA and an INCR's VALUE decimal i64.
 */
#ifndef KVMUX_LINCHECK_H
#define KVMUX_LINCHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum lincheck_opcode {
    LINCHECK_GET = 1,
    LINCHECK_SET,
    LINCHECK_CAS,
    LINCHECK_INCR,
    LINCHECK_DEL
} lincheck_opcode;

typedef enum lincheck_outcome {
    LINCHECK_OK = 1,
    LINCHECK_FAIL,          /* not applied; see lincheck_op.observed */
    LINCHECK_INFO           /* unknown */
} lincheck_outcome;

/* What a failed op observed. */
typedef enum lincheck_observed {
    LINCHECK_SAW_NOTHING = 0,
    LINCHECK_SAW_NOTFOUND,  /* GET/DEL/CAS NOT_FOUND: the key was absent */
    LINCHECK_SAW_MISMATCH   /* CAS VERSION_MISMATCH: the key was at .version */
} lincheck_observed;

/* One complete op. Strings are copied by lincheck_add. */
typedef struct lincheck_op {
    uint32_t process;
    uint64_t invoke_ns, complete_ns;   /* complete_ns ignored for INFO */
    lincheck_opcode op;
    lincheck_outcome outcome;
    lincheck_observed observed;        /* FAIL only */
    const char *key;                   /* NUL-terminated, non-empty */
    const char *value;                 /* SET/CAS: written; GET ok: read */
    uint64_t expected;                 /* CAS */
    int64_t delta;                     /* INCR */
    int64_t number;                    /* INCR ok: the new value */
    uint64_t version;                  /* ok GET/SET/CAS/INCR; CAS mismatch: current */
} lincheck_op;

typedef struct lincheck_history lincheck_history;

/* Violation kinds, counted in lincheck_result.by_kind. */
typedef enum lincheck_kind {
    LINCHECK_V_WRONG_VALUE = 0,
    LINCHECK_V_PHANTOM_READ,
    LINCHECK_V_STALE_READ,
    LINCHECK_V_LOST_WRITE,
    LINCHECK_V_REALTIME,
    LINCHECK_V_DUPLICATE,
    LINCHECK_V_CAS_ORDER,
    LINCHECK_V_INCR_VALUE,
    LINCHECK_V_COUNTER,
    LINCHECK_V_ABSENT_READ,
    LINCHECK_V_DOUBLE_DELETE,
    LINCHECK_V_KINDS
} lincheck_kind;

typedef struct lincheck_result {
    uint64_t ops, keys;
    uint64_t ok, failed, unknown;
    uint64_t unknown_applied;          /* info writes a read placed */
    uint64_t violations;
    uint64_t by_kind[LINCHECK_V_KINDS];
} lincheck_result;

/* A new empty history, or NULL when out of memory. Free with
 * lincheck_free. Not thread-safe: one history per thread, or a lock. */
lincheck_history *lincheck_new(void);
void lincheck_free(lincheck_history *h);

/* Append a copy of op. Returns 0, -1 when out of memory, -2 when op is
 * malformed (no key, no value where one is needed, complete < invoke). */
int lincheck_add(lincheck_history *h, const lincheck_op *op);

/* Parse a history in the text format above and append its ops. Returns 0;
 * -1 on a read error or out of memory; on a malformed line a positive line
 * number, with the reason in err (errlen bytes, may be 0). */
int lincheck_load(lincheck_history *h, FILE *f, char *err, size_t errlen);

/* Write h in the text format (invocation and completion lines, in time
 * order). Returns 0 or -1 on a write error. */
int lincheck_save(const lincheck_history *h, FILE *f);

/* Check h. Fills *res; writes one line per violation (at most max_report,
 * then a count) to report when it is not NULL. Returns 0 when linearizable,
 * 1 when not, -1 when out of memory or the history breaks a rule of the
 * format that makes checking meaningless (two SET/CAS of one value to one
 * key; the reason goes to report). */
int lincheck_check(lincheck_history *h, lincheck_result *res, FILE *report,
                   unsigned max_report);

/* "stale read", ... for a kind. */
const char *lincheck_kind_name(lincheck_kind k);

#endif
