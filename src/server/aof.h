/* kvmuxd's append-only log (AOF): every change to the store is appended as
 * a checksummed record, so a restart rebuilds the store exactly, versions
 * included. See aof.c for the format and the threads.
 *
 * Thread safety: every function may be called from any thread unless
 * stated otherwise. */
#ifndef KVMUX_AOF_H
#define KVMUX_AOF_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct kvmux_aof kvmux_aof;

enum kvmux_fsync_policy {
    KVMUX_FSYNC_ALWAYS = 0,   /* a write is acknowledged after fdatasync */
    KVMUX_FSYNC_EVERYSEC = 1, /* written at once, fdatasync once a second */
    KVMUX_FSYNC_NO = 2        /* written at once, the kernel syncs */
};

/* Parse "always" / "everysec" / "no". Returns the policy or -1. */
int kvmux_fsync_policy_parse(const char *s);
const char *kvmux_fsync_policy_name(int policy);

/* Record op (besides KVMUX_STORE_REC_SET / _DEL): "versions handed out so
 * far reach this one", written by compaction after its snapshot (no key). */
#define KVMUX_AOF_REC_VERSION 3

/* The file starts with a magic naming its format version; records follow.
 * Version 3 (written by this code) is version 2 plus one record op,
 * KVMUX_STORE_REC_EXPIRY (4): key, version, expiry, value length 0. A new
 * op needs a new magic: a reader that knows only version 2 then refuses
 * the file at its first bytes ("bad magic", file untouched) instead of
 * calling the first EXPIRY record corrupt, which --aof-repair would cut
 * with every later record. A version-2 file has the same layout, so
 * kvmux_aof_open upgrades it in place (the magic rewritten and synced
 * before anything is appended). Versions 2 and 3: record = u32 body
 * length, u32 CRC32C(body), u32 CRC32C(the 8 bytes before it) (all
 * little-endian), body. The header checksum lets the loader trust a length before using
 * it, which is what makes a torn tail and a damaged record decidable
 * (aof_load.c has the rule). Version 1 (read only, converted to version 2
 * when kvmuxd opens it): record = u32 body length + u32 CRC32C(body) +
 * body. In both, body = u8 op, u64 version, u64 wall-clock expiry in ms
 * (0 = none), u16 key length, u32 value length, key, value. */
#define KVMUX_AOF_MAGIC "KVMXAOF3"
#define KVMUX_AOF_MAGIC_V2 "KVMXAOF2"
#define KVMUX_AOF_MAGIC_V1 "KVMXAOF1"
#define KVMUX_AOF_MAGIC_LEN 8u
#define KVMUX_AOF_REC_HDR 12u
#define KVMUX_AOF_REC_HDR_V1 8u
#define KVMUX_AOF_BODY_FIXED 23u
/* Largest body accepted on load (a 512 MiB value plus key and fixed part). */
#define KVMUX_AOF_MAX_BODY ((uint32_t)(512u * 1024 * 1024 + 65536 + 64))

typedef struct kvmux_aof_options {
    const char *path;           /* required; copied */
    int fsync;                  /* enum kvmux_fsync_policy; default ALWAYS */
    int repair;                 /* truncate at the first corrupt record
                                   instead of refusing to start */
    uint64_t rewrite_min_size;  /* compact only above this file size;
                                   default 64 MiB; 0 = never compact */
    uint32_t rewrite_percent;   /* ... and when the file grew by this
                                   percentage since the last compaction
                                   (or load); default 100 (= 2x) */
    /* Called (from the log's writer thread) each time durable() moves or
     * the log fails: the server wakes its loops. May be NULL. */
    void (*notify)(void *user_data);
    void *notify_user_data;
} kvmux_aof_options;

void kvmux_aof_options_init(kvmux_aof_options *o);

/* What a load found. */
typedef struct kvmux_aof_load_info {
    uint64_t records;           /* records applied */
    uint64_t file_size;         /* size before any truncation */
    uint64_t truncated_at;      /* offset of a dropped tail (torn or repaired) */
    uint64_t dropped_bytes;     /* 0 = nothing dropped */
    int repaired;               /* the dropped tail was corrupt (--aof-repair) */
    uint64_t discarded_records; /* repaired: intact records after the corrupt
                                   one, dropped with it (acknowledged writes) */
    uint64_t max_version;
    int format;                 /* 1, 2 or 3: the file's format version */
} kvmux_aof_load_info;

/* Replay the log at path into st (which should be empty): SET records are
 * restored with their version and expiry (keys already expired by the wall
 * clock are dropped), DEL records remove; the version counter resumes
 * above the largest version seen. A missing file is an empty log (created
 * with the version-2 magic). A provably torn tail (aof_load.c defines it:
 * bytes that cannot hold a record that was ever complete) is truncated
 * and reported in info; in a version-1 file only a tail shorter than a
 * record header is, and it is left in place (kvmux_aof_open converts the
 * file). Anything else is a corrupt record: -1 with a message naming its
 * offset and how many intact records follow it, and the file is not
 * modified; with repair the file is truncated there instead and info says
 * what was discarded. Returns 0 or -1 (err filled). Thread-safe: no
 * (startup). */
int kvmux_aof_load(const char *path, kvmux_store *st, int repair,
                   kvmux_aof_load_info *info, char *err, size_t errlen);

/* Load the log (as kvmux_aof_load, logging what was dropped); a
 * version-1 file is then rewritten as version 2 (a snapshot of the loaded
 * store to PATH.rewrite, fsync, rename over PATH: the same steps as a
 * compaction; if that fails the old file is left as it was and -1 is
 * returned); open it for appending, start the writer thread and install the store journal, so
 * from now on every change is logged. Returns 0 (*out set) or -1 (err
 * filled, store may hold a partial load). */
int kvmux_aof_open(kvmux_aof **out, const kvmux_aof_options *o, kvmux_store *st,
                   char *err, size_t errlen);

/* Bytes appended so far (a logical sequence number that keeps growing
 * across compactions). A write's record is covered once durable() reaches
 * the appended() value read after the write returned. */
uint64_t kvmux_aof_appended(const kvmux_aof *a);
/* Bytes known to be on disk (fdatasync'd; with everysec / no: written). */
uint64_t kvmux_aof_durable(const kvmux_aof *a);
/* 1 once a write or fsync failed: nothing is durable any more and the
 * server must refuse writes. Sticky until restart. */
int kvmux_aof_failed(const kvmux_aof *a);
int kvmux_aof_policy(const kvmux_aof *a);

/* Start a compaction now if none is running (tests, operators). Returns 0
 * if one was started, -1 if one is running or the log has failed. */
int kvmux_aof_rewrite(kvmux_aof *a);

typedef struct kvmux_aof_stats {
    uint64_t file_size;         /* bytes in the current file */
    uint64_t appended;
    uint64_t durable;
    uint64_t fsyncs;            /* fdatasync calls */
    uint64_t writes;            /* write batches (group commits) */
    uint64_t rewrites;          /* compactions completed */
    uint64_t rewrite_failures;
    int rewriting;
    int failed;
} kvmux_aof_stats;
void kvmux_aof_get_stats(kvmux_aof *a, kvmux_aof_stats *st);

/* Remove the journal, write and sync what is buffered, stop the threads
 * and close the file. Call when no writer runs any more. a may be NULL. */
void kvmux_aof_close(kvmux_aof *a);

/* Encode one record into out (KVMUX_AOF_REC_HDR + BODY_FIXED + klen + vlen
 * bytes). wall_expires_ms 0 = none. Returns the length. For tests. */
size_t kvmux_aof_encode(uint8_t *out, int op, uint64_t version, uint64_t wall_expires_ms,
                        const uint8_t *key, uint16_t klen, const uint8_t *value,
                        uint32_t vlen);
/* The same record in the version-1 layout (KVMUX_AOF_REC_HDR_V1 + ...
 * bytes). Only tests write version 1 now. */
size_t kvmux_aof_encode_v1(uint8_t *out, int op, uint64_t version, uint64_t wall_expires_ms,
                           const uint8_t *key, uint16_t klen, const uint8_t *value,
                           uint32_t vlen);

/* CRC32C (Castagnoli) of p[0..n), continuing from crc (start with 0). */
uint32_t kvmux_crc32c(uint32_t crc, const void *p, size_t n);

#endif
