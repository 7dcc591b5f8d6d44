/* The replicated state machine's operations on the store, independent of
 * Raft (node.c wires them into a raft_fsm): apply one log entry, encode
 * and restore a snapshot, digest the store. Deterministic: given the same
 * store state and the same entry, every replica makes the same change and
 * hands out the same versions (the store's version counter moves only
 * here in replicated mode).
 *
 * Time is replicated too: in replicated mode the store's clock is a
 * kvmux_fsm_clock, which only applying an entry moves (to the leader's
 * wall clock stamped in the entry, never backwards). So a TTL becomes the
 * same absolute expiry on every replica, and whether a key has expired
 * when a write or read reaches it is decided by the log, not by each
 * replica's clock (docs/REPLICATION.md "Expiry"). */
#ifndef KVMUX_FSM_H
#define KVMUX_FSM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "migin.h"
#include "migout.h"
#include "store.h"

struct kvmux_sessions; /* sessions.h */
struct kvmux_stage_tab; /* stage.h */
struct kvmux_map;       /* src/cluster/cluster.h */
struct kvmux_redirect;  /* src/cluster/cluster.h */

/* A cluster group's slot map as the log installed it (docs/CLUSTER.md):
 * only applying entry op KVMUX_ENTRY_OP_MAP changes it (on the applier's
 * thread), and only to a map of a higher epoch; snapshots carry it. Loops
 * read it (routing, CLUSTER map, STATS) under mu, held briefly. With
 * group != 0 the applier also refuses writes for slots the applied map
 * does not give this group (result WRONG_SHARD, nothing applied). */
typedef struct kvmux_fsm_cluster {
    pthread_mutex_t mu;
    uint16_t group;              /* --cluster-group; 0: no apply-time check */
    int cas;                     /* the map group's rule (--cluster-map-group):
                                    a map installs only at the installed
                                    epoch + 1 (any epoch when none is) */
    _Atomic uint64_t epoch;      /* the applied map's epoch (0: none), for
                                    lock-free polling by loops */
    void (*installed)(void *ud); /* NULL, or called on the applier's thread
                                    after a map was installed or restored
                                    (e.g. to wake parked watches) */
    void *installed_ud;
    struct kvmux_map *map;       /* heap; NULL = none installed */
    uint8_t *bytes;              /* the map as proposed (encoded), malloc */
    size_t len;
    /* The outgoing slot migration (migout.h): MIGSTEP steps 1-5, the
     * dirty set, the fence. Removed when a map that takes R away is
     * installed. */
    kvmux_migout out;
    struct kvmux_migtab *mig;    /* the map group's migration table (migrec.h):
                                    NULL until its first change; replaced
                                    whole by the applier under mu */
    kvmux_migin in;              /* a migration's incoming record (migin.h):
                                    written by the applier under mu */
    kvmux_migin_stats in_stats;  /* what this replica applied of them */
} kvmux_fsm_cluster;

/* Empty state (no map) for group id group (0: not a cluster node); cas
 * 0, no installed callback. */
void kvmux_fsm_cluster_init(kvmux_fsm_cluster *cl, uint16_t group);
/* Free the map; cl may be init'ed again. */
void kvmux_fsm_cluster_clear(kvmux_fsm_cluster *cl);
/* Install m (heap, taken; encoded as p[0..len), copied) as the applied
 * map, whatever its epoch (the caller checked it: migrec.c's COMMIT).
 * Applier's thread. 0, or -1 out of memory (m freed, nothing changed). */
int kvmux_fsm_cluster_install(kvmux_fsm_cluster *cl, struct kvmux_map *m, const uint8_t *p,
                              size_t len);

enum { KVMUX_ROUTE_OWN = 0, KVMUX_ROUTE_NO_MAP = 1, KVMUX_ROUTE_WRONG = 2 };
/* Who serves slot under the applied map: OWN (this group), NO_MAP (none
 * installed; rd->epoch = 0), or WRONG with rd filled (slot, the map's
 * epoch, the owner, 0 when unassigned, and its members comma-separated,
 * "" when unassigned). rd may be NULL. Any thread. */
int kvmux_fsm_cluster_route(kvmux_fsm_cluster *cl, uint16_t slot, struct kvmux_redirect *rd);
/* A malloc'ed copy of the applied map's encoded bytes: 0 with *out, *len;
 * 1 when no map is installed; -1 out of memory. Any thread. */
int kvmux_fsm_cluster_bytes(kvmux_fsm_cluster *cl, uint8_t **out, size_t *len);
/* The applied map's epoch (0: none) and how many slots it gives this
 * group. Any thread. */
void kvmux_fsm_cluster_info(kvmux_fsm_cluster *cl, uint64_t *epoch, uint32_t *owned);

/* One command's outcome, as the leader answers it: status (a
 * KVMUX_STATUS_*) and extras (the version, INCR's value and version, a
 * CAS mismatch's current version). */
typedef struct kvmux_fsm_result {
    uint8_t status;
    uint8_t extras_len;
    uint8_t extras[16];
} kvmux_fsm_result;

/* The replicated clock (ms; Unix time as the leaders stamped it). Written
 * by the applier, read by any thread. */
typedef struct kvmux_fsm_clock {
    _Atomic uint64_t ms;
} kvmux_fsm_clock;

/* kvmux_store_clock_fn over a kvmux_fsm_clock (ud). Any thread. */
uint64_t kvmux_fsm_clock_read(void *ud);

/* Apply the entry buf[0..len) to st, whose clock is clk: clk first moves
 * to the entry's leader clock (if that is later). ss (NULL: no sessions)
 * is the session table: a command of a session that already applied its
 * seq gets the original result and is not applied again, one of a
 * forgotten session (or below its window) gets OUTCOME_UNKNOWN
 * (sessions.h). sg (NULL: none) is the table of big values being staged
 * (stage.h): STAGE commands fill it, SET/CAS_STAGED take from it. cl
 * (NULL: none) is the cluster state: MAP commands install a map of a
 * higher epoch (with cl->cas: exactly the installed epoch + 1, or any
 * epoch when none is installed) (result OK, or VERSION_MISMATCH when not
 * newer / not next, unless the bytes equal the installed map's: OK; extras = u64 the map's epoch | u64
 * the epoch installed after the command), and with cl->group set, a write
 * for a slot the applied map does not give the group gets WRONG_SHARD and
 * is not applied. Slot migration's ops (IMPORT, MIGSTEP, PURGE) change
 * cl's incoming record and st as migin.h says, exempt from that check;
 * a MAP giving all of the record's range to cl->group ends the record.
 * If out is not NULL it receives one result per command
 * (nout of them at most). Returns the number of commands applied, or -1
 * if the entry is malformed (nothing applied, clock unchanged).
 * Thread-safety: one applier at a time. */
int kvmux_fsm_apply(kvmux_store *st, kvmux_fsm_clock *clk, struct kvmux_sessions *ss,
                    struct kvmux_stage_tab *sg, kvmux_fsm_cluster *cl, const uint8_t *buf, size_t len, kvmux_fsm_result *out, uint32_t nout);

/* Allocator for snapshots (Raft frees them with its own raft_free). */
typedef void *(*kvmux_fsm_realloc_fn)(void *p, size_t n);

/* Serialize st (every live key with its version and remaining TTL, the
 * version counter and the clock), the session table ss (NULL: none),
 * the staged values sg and the applied slot map and incoming migration
 * record of cl (NULL: none) into a buffer from ra (format 6). Returns 0 with *out, *outlen, or -1 (out of
 * memory). Writers must be quiescent (the apply thread calls it);
 * readers may run. begin + run + take, joined into one buffer. */
int kvmux_fsm_snapshot(kvmux_store *st, kvmux_fsm_clock *clk, struct kvmux_sessions *ss,
                       struct kvmux_stage_tab *sg, kvmux_fsm_cluster *cl, kvmux_fsm_realloc_fn ra, uint8_t **out, size_t *outlen);

/* ---- background snapshots (docs/DESIGN.md "Snapshots beside the
 * applies") ----
 * What kvmux_fsm_snapshot gives (the same records, maybe in another
 * order), in two steps: begin (on the applier's thread, between two
 * applies: quick) fixes the instant -- the version counter, the clock,
 * sessions, staged values and slot map are copied, the store marked for
 * copy-on-write by key (kvmux_store_snap_begin) and the whole buffer
 * allocated; run (any thread, once) serializes the store shard by shard
 * while applies go on, each of which first keeps the old record of a key
 * it changes. The result is the state at begin exactly. */
typedef struct kvmux_fsm_snap kvmux_fsm_snap;

/* Begin a snapshot of st, ss, sg, cl (as for kvmux_fsm_snapshot).
 * Writers must be quiescent during the call (the apply thread calls it);
 * only one snapshot of a store at a time. Returns 0 with *out, or -1 (out
 * of memory: nothing begun). */
int kvmux_fsm_snap_begin(kvmux_store *st, kvmux_fsm_clock *clk, struct kvmux_sessions *ss,
                         struct kvmux_stage_tab *sg, kvmux_fsm_cluster *cl,
                         kvmux_fsm_realloc_fn ra, kvmux_fsm_snap **out);
/* Serialize what is left (any one thread; applies may run meanwhile) and
 * finish the buffers. Once it returns, st is free for the next snapshot.
 * Returns 0, or -1 if a shard held more than begin measured (cannot
 * happen: the buffers are then incomplete and must not be used). */
int kvmux_fsm_snap_run(kvmux_fsm_snap *sn);
/* After run: the snapshot as two buffers from ra, to be written one after
 * the other (the header and the keys, then sessions, staged values and
 * map). Ownership passes to the caller; *tail may be NULL only with
 * *tail_len 0. */
void kvmux_fsm_snap_take(kvmux_fsm_snap *sn, uint8_t **body, size_t *body_len, uint8_t **tail,
                         size_t *tail_len);
/* Free sn and whatever was not taken. Call only after run (the store
 * still refers to sn before). */
void kvmux_fsm_snap_free(kvmux_fsm_snap *sn);

/* Replace st's contents and the session table ss (NULL: ignored) by the
 * snapshot buf[0..len) (clk moves to the snapshot's clock if that is
 * later). Snapshots of format 2 (before sessions) restore with an empty
 * table, formats before 5 with no slot map in cl, before 6 with no
 * incoming migration record (format 6: the map group's table, skipped
 * here, then has_out, which must be 0, then the incoming record).
 * The store's per-slot counts are recounted. Returns 0, or -1 if the snapshot is malformed (the store is then
 * partially restored: the caller must not go on). */
int kvmux_fsm_restore(kvmux_store *st, kvmux_fsm_clock *clk, struct kvmux_sessions *ss,
                      struct kvmux_stage_tab *sg, kvmux_fsm_cluster *cl, const uint8_t *buf, size_t len);

/* Order-independent digest of every live key, value and version (and not
 * the TTLs, whose store-clock values differ per replica). Any thread. */
uint64_t kvmux_fsm_digest(kvmux_store *st);

#endif
