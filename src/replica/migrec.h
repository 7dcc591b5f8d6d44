/* Entry op 0xF8 MIGREC: the map group's migration table in its replicated
 * state machine (docs/MIGRATION.md sections 2 and 10.2). The rules are
 * src/cluster/migtab.c; this file ties them to the log entry (command
 * layouts, results), to the applied slot map of fsm.h (a COMMIT installs
 * map epoch + 1 in the same entry; the setmap guard) and to snapshots.
 *
 * Threads: the apply functions run on the applier's thread only (one at a
 * time); the table readers (any thread) take cl->mu. */
#ifndef KVMUX_MIGREC_H
#define KVMUX_MIGREC_H

#include <stddef.h>
#include <stdint.h>

#include "entry.h"
#include "fsm.h"
#include "migtab.h"

/* Internal opcode, never on the wire. Extras: u8 step; value by step:
 * 1 CREATE u16 first, u16 last, u16 dst; 2 COMMIT u32 id; 3 ABORT u32 id,
 * reason (0..200 printable bytes); 4 ACK u32 id, u16 group. */
#define KVMUX_ENTRY_OP_MIGREC 0xF8u
enum { KVMUX_MIGREC_CREATE = 1, KVMUX_MIGREC_COMMIT = 2, KVMUX_MIGREC_ABORT = 3,
       KVMUX_MIGREC_ACK = 4 };
/* The largest MIGREC value (ABORT with a full reason). */
#define KVMUX_MIGREC_VALUE_MAX (4u + KVMUX_MIG_REASON_MAX)

/* Apply one MIGREC command c (its op is KVMUX_ENTRY_OP_MIGREC) at the
 * replicated clock now. Only the map group (cl->cas) has a table: on any
 * other state machine, or for a malformed command, BAD_REQUEST and
 * nothing changes. Otherwise the step's rule (migtab.h) with its answer
 * in r (kvmux_migrec_result_get reads it back); a COMMIT installs the
 * new map through kvmux_fsm_cluster_install before the table changes
 * (out of memory: INTERNAL, nothing changed). Wakes cl->installed after a
 * change, so parked `mwatch` requests see it. */
void kvmux_migrec_apply(kvmux_fsm_cluster *cl, const kvmux_entry_cmd *c, uint64_t now,
                        kvmux_fsm_result *r);

/* The setmap guard (apply_map, map group): 0 when next may install, else
 * -1 with r = BAD_REQUEST, extras u64 next's epoch | u32 id, u16 first,
 * u16 last of the OPEN record it would break. */
int kvmux_migrec_guard(kvmux_fsm_cluster *cl, const struct kvmux_map *next, kvmux_fsm_result *r);

/* The MIGREC answer packed into r's 16 bytes of extras, and back (-1 if r
 * does not hold one). */
void kvmux_migrec_result_put(kvmux_fsm_result *r, const kvmux_migres *m);
int kvmux_migrec_result_get(const kvmux_fsm_result *r, kvmux_migres *m);

/* The table's encoded bytes (KVMG; an empty table when cl has none), a
 * malloc'ed copy in *out, *len; *mgen its mgen. 0, or -1 out of memory.
 * Any thread. */
int kvmux_migrec_table_bytes(kvmux_fsm_cluster *cl, uint8_t **out, size_t *len, uint64_t *mgen);
/* The table's mgen and counts (open, committed, aborted). Any thread. */
void kvmux_migrec_info(kvmux_fsm_cluster *cl, uint64_t *mgen, uint32_t *open, uint32_t *committed,
                       uint32_t *aborted);
/* The answer text of m (kvmux_migtab_message against the applied table).
 * Any thread. */
void kvmux_migrec_message(kvmux_fsm_cluster *cl, const kvmux_migres *m, char *out, size_t cap);

/* ---- snapshot format 6 (fsm.c): after the slot map, u32 table_len |
 * table_len bytes (KVMG; 0 on a group without a table). ---- */

/* Bytes the table section takes (4 + the KVMG length, or 4). Applier. */
size_t kvmux_migrec_snap_len(const kvmux_fsm_cluster *cl);
/* Write it (kvmux_migrec_snap_len bytes) to out. Applier. */
void kvmux_migrec_snap_write(const kvmux_fsm_cluster *cl, uint8_t *out);
/* Restore the table from p[0..len) (KVMG; len 0: empty) into cl (NULL:
 * only checked). 0, or -1 malformed / out of memory. Applier. */
int kvmux_migrec_restore(kvmux_fsm_cluster *cl, const uint8_t *p, size_t len);
/* Free the table (kvmux_fsm_cluster_clear). */
void kvmux_migrec_free(kvmux_fsm_cluster *cl);

#endif
