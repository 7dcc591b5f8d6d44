/* migload: the workload driver of the slot-migration tests and bench
 * (docs/MIGRATION.md section 12), shared by migrate_model_test and
 * bench/clusterload.
 *
 * It starts a cluster of real kvmuxd processes on loopback (a map group and
 * G data groups of R replicas each, the 16384 slots split evenly), loads K
 * keys, then runs T load threads over ONE cluster-mode kvmux_client while a
 * mover starts M migrations one after another (CLUSTER migrate on the map
 * group; the migrate threads of the data groups' leaders do the rest) and
 * waits for each to end.
 *
 * The load. Key i ("m<i>", 100-byte values by default) belongs to the load
 * thread slot(key) % T: each key has exactly one writer, so that thread's
 * model of its keys (the last acknowledged value and version, an unknown
 * outcome kept as "maybe") checks every answer exactly: a GET returns the
 * model's value and version (or a "maybe" write's, which is then adopted),
 * a SET's version is above the previous one, a CAS from the model's
 * version succeeds (versions survive a move), an INCR (on the counter
 * keys, every 16th) returns the previous value plus one, a DEL (1 op in
 * 14 on the moving range, 1 in 20 elsewhere; sent only while the model
 * knows the key's state) finds the key exactly when the model has it, and
 * a deleted key stays absent until its owner writes it again (a move
 * that lost a deletion shows as a GET reading the old value). Three
 * quarters of a thread's ops go to keys of the range being moved while a
 * move is on, 5 of 7 of them writes (elsewhere 1 of 2): enough dirty keys
 * for drain rounds. Every op also
 * goes into one lincheck history (checked in process at the end; saved in
 * kvmux-lincheck's text format when asked), with values named by a unique
 * tag per key (the padding after the tag is checked by the model only).
 *
 * The probers (section 9). During each move three threads, one per probe
 * key in the range's first, middle and last slot, SET then GET their key
 * one request at a time (10 s deadline). A probe key's unavailability is the
 * time from the send of its first request that failed (TRY_AGAIN, a
 * redirect loop, a timeout) or of the slowest request, to the next success:
 * TRY_AGAIN retries and redirects inside one request are part of it, and so
 * is one normal request latency. max_unavail_ms is the largest over the
 * probe keys of every move.
 *
 * After each committed move every key of the moved range is read back
 * (lenient model check: not older than the model when the read began; the
 * owner thread may be writing it meanwhile). After the load every key is
 * read (exact model check), the cluster client's epoch is compared with the
 * map group's, and lincheck runs over the whole history.
 *
 * Everything is bounded: each request has a deadline, each move waits at
 * most move_timeout_ms for its end, the load stops at ops / duration_ms. */
#ifndef KVMUX_MIGLOAD_H
#define KVMUX_MIGLOAD_H

#include <stdint.h>
#include <stdio.h>

#include "rgroup.h"

#define MIGLOAD_MAX_GROUPS 8
#define MIGLOAD_MAX_THREADS 64
#define MIGLOAD_MAX_KEYS 1000000

/* A running cluster: the map group and the data groups (group ids 1..G). */
typedef struct migload_cluster {
    int groups, replicas;
    rgroup map;
    rgroup data[MIGLOAD_MAX_GROUPS];
    char map_eps[256];                  /* the map group's members */
    char seeds[2048];                   /* every data group member */
    char gid[MIGLOAD_MAX_GROUPS][8];
    const char *extra[MIGLOAD_MAX_GROUPS][16];
    const char *map_extra[4];
    char maxmemory[32];
} migload_cluster;

/* Start the map group (replicas members) and groups data groups
 * (replicas members each, --threads 1 --maxmemory maxmemory (NULL: 64M),
 * the data groups
 * watching the map group), install a map splitting the slots evenly
 * (group g gets a contiguous 1/G) and wait until every data group's
 * leader applied it. groups 1..MIGLOAD_MAX_GROUPS, replicas 1..3.
 * Returns 0, or -1 with the reason on stderr (what started is stopped). */
int migload_cluster_start(migload_cluster *c, int groups, int replicas, const char *maxmemory);

/* Stop every process and remove the directories. */
void migload_cluster_stop(migload_cluster *c);

typedef struct migload_config {
    uint32_t keys;            /* keys loaded, 1000..MIGLOAD_MAX_KEYS */
    uint32_t value_size;      /* bytes per value (32..4096) */
    int threads;              /* load threads, 1..MIGLOAD_MAX_THREADS */
    uint64_t ops;             /* load ops to run at least (0: none required) */
    int64_t duration_ms;      /* load runs at least this long (0: none) */
    int moves;                /* migrations, one after another */
    uint32_t min_slots, max_slots; /* each move's range size, drawn uniformly */
    int64_t move_gap_ms;      /* pause after each move */
    int64_t move_timeout_ms;  /* a move not ended by then is a failure */
    uint32_t seed;            /* the RNG of the ranges, groups and ops */
    const char *history_out;  /* NULL, or a file for kvmux-lincheck */
    int verbose;              /* one stderr line per move */
} migload_config;

/* Defaults: 100k keys of 100 bytes, 8 threads, 30 s, 4 moves of 512
 * slots, 1 s gaps, 120 s per move, seed 1. */
void migload_config_init(migload_config *cfg);

typedef struct migload_result {
    uint64_t ops;                  /* load ops completed (not the preload) */
    uint64_t acknowledged;         /* acknowledged writes (preload included) */
    uint64_t failed, unknown;      /* ops refused / with an unknown outcome */
    uint64_t moves_started, moves_committed, moves_aborted, moves_timed_out;
    uint64_t slots_moved;          /* slots of committed moves */
    uint64_t readback_keys;        /* keys read back after commits */
    uint64_t model_errors;         /* answers the model refused */
    uint64_t final_missing;        /* keys the final read did not find as modelled */
    uint64_t counter_lost, counter_twice; /* INCR under- / over-counts at the end */
    uint64_t lost, applied_twice, stale_reads; /* the bench's L, D, R */
    uint64_t violations;           /* lincheck's total (1 if it could not run) */
    uint64_t max_unavail_ms;       /* section 9, over every probe key and move */
    uint64_t probe_failures;       /* probe requests that failed */
    uint64_t drain_rounds;         /* STATS migrate_rounds, all data members summed */
    uint64_t fence_ms_max;         /* STATS migrate_fence_ms_max, the largest */
    uint64_t client_epoch, map_epoch; /* the cluster client's and the map group's */
    int64_t elapsed_ms;            /* the load phase */
    int lincheck_rc;               /* lincheck_check's return */
} migload_result;

/* Run the whole scenario on a started cluster. Returns 0 when it ran to
 * the end (the figures then say whether it passed), -1 when it could not
 * (no client, out of memory; reason on stderr). */
int migload_run(migload_cluster *c, const migload_config *cfg, migload_result *res);

/* The result's figures as one line (no newline) "ops=... " into f. */
void migload_print(FILE *f, const migload_result *r);

#endif
