/* Append-only log: the record encoding and recovery (replay at start).
 *
 * Format (aof.h): an 8-byte magic naming the format version, then
 * records. Versions 2 and 3: u32 body length, u32 CRC32C of the body, u32
 * CRC32C of those 8 header bytes, body. A SET carries the key's value,
 * version and absolute wall-clock expiry (INCR and CAS are logged as the
 * SET they produced), a DEL removes the key, and (version 3 only) an
 * EXPIRY gives a present key a new version and expiry (EXPIRE, PERSIST)
 * without repeating its value. Replay is deterministic and idempotent --
 * an EXPIRY applies only over an older version of its key -- which is
 * what lets a compaction snapshot overlap with records logged during it
 * (aof.c). A SET whose expiry passed while the server was down is
 * restored as already expired (never visible) rather than dropped, so a
 * later EXPIRY that extended it still finds the value; what is still
 * expired after the replay is purged.
 *
 * Recovery rule. The writer only ever appends, so a crash (kill -9, power
 * loss) leaves the records it completed followed by, at most, the start
 * of what it was writing: a prefix of a record, or (power loss on some
 * file systems) bytes the file was extended by but that were never
 * written, read back as zeros. Under --fsync always none of that was
 * acknowledged, since an acknowledgment waits for the fsync covering its
 * whole record. The loader cuts the tail from offset O only when it is
 * PROVABLY such a torn tail, i.e. when the bytes from O to the end of the
 * file cannot contain a record that was ever complete:
 *   (a) fewer bytes than a record header remain after O; or
 *   (b) the header at O is intact (its checksum matches, so its length is
 *       the one the writer wrote) and the body it announces runs past the
 *       end of the file: this record was never completely written, and
 *       nothing can follow it; or
 *   (c) every byte from O to the end of the file is zero (no record can be
 *       all zeros: its length is at least 23).
 * Anything else is a corrupt record: a header checksum mismatch with a
 * non-zero byte after it, an impossible length in an intact header, a
 * body checksum mismatch (even in the last record: a damaged body and an
 * unwritten one cannot be told apart), a body that does not parse. The
 * start stops with exit 1 and the offset, the file untouched, and the
 * message says how many intact records follow (found by scanning for
 * valid headers past the damage); --aof-repair truncates there and
 * reports the same count as the acknowledged records it discarded.
 * Without the header checksum (version 1) a length damaged to point past
 * the end of the file looks exactly like (b): that is how one flipped bit
 * used to drop every later record. So a version-1 file is cut by rule (a)
 * alone, and even then left in place: kvmuxd converts it to version 3 at
 * start (aof.c), which leaves the short tail out.
 *
 * A log above 1 MiB is read through mmap, so its size is not limited by
 * memory for the reading itself; a smaller one is read into a heap buffer
 * of exactly its size (cheaper than a mapping, and under AddressSanitizer
 * any read past the end of the file is caught, which a page-rounded
 * mapping would hide). This file does no logging: the caller reports
 * what kvmux_aof_load_info says. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "aof.h"
#include "monotime.h"

static void put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void encode_body(uint8_t *b, int op, uint64_t version, uint64_t wall_expires_ms,
                        const uint8_t *key, uint16_t klen, const uint8_t *value,
                        uint32_t vlen) {
    b[0] = (uint8_t)op;
    put_u64(b + 1, version);
    put_u64(b + 9, wall_expires_ms);
    put_u16(b + 17, klen);
    put_u32(b + 19, vlen);
    if (klen) memcpy(b + KVMUX_AOF_BODY_FIXED, key, klen);
    if (vlen) memcpy(b + KVMUX_AOF_BODY_FIXED + klen, value, vlen);
}

/* The header checksum of a version-2 record: over its length and body
 * checksum, so a length is trusted only if this matches. */
static uint32_t header_crc(const uint8_t *rec) { return kvmux_crc32c(0, rec, 8); }

size_t kvmux_aof_encode(uint8_t *out, int op, uint64_t version, uint64_t wall_expires_ms,
                        const uint8_t *key, uint16_t klen, const uint8_t *value,
                        uint32_t vlen) {
    uint8_t *b = out + KVMUX_AOF_REC_HDR;
    encode_body(b, op, version, wall_expires_ms, key, klen, value, vlen);
    uint32_t blen = KVMUX_AOF_BODY_FIXED + klen + vlen;
    put_u32(out, blen);
    put_u32(out + 4, kvmux_crc32c(0, b, blen));
    put_u32(out + 8, header_crc(out));
    return KVMUX_AOF_REC_HDR + blen;
}

size_t kvmux_aof_encode_v1(uint8_t *out, int op, uint64_t version, uint64_t wall_expires_ms,
                           const uint8_t *key, uint16_t klen, const uint8_t *value,
                           uint32_t vlen) {
    uint8_t *b = out + KVMUX_AOF_REC_HDR_V1;
    encode_body(b, op, version, wall_expires_ms, key, klen, value, vlen);
    uint32_t blen = KVMUX_AOF_BODY_FIXED + klen + vlen;
    put_u32(out, blen);
    put_u32(out + 4, kvmux_crc32c(0, b, blen));
    return KVMUX_AOF_REC_HDR_V1 + blen;
}

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* The store-clock instant a SET that expired while the server was down is
 * restored with: already past, so the key is never visible, yet present
 * for a later EXPIRY record to revive (kvmux_store_purge_expired removes
 * what is left of them after the replay). */
static uint64_t past_expiry(uint64_t store_now) {
    return store_now ? store_now : 1;
}

/* Apply one body that passed body_ok(). Returns 0, -1 if it does not
 * parse (body_ok rules that out), -2 out of memory. *expired_restored is
 * set when a key was restored already expired. */
static int apply(kvmux_store *st, const uint8_t *b, uint32_t blen, uint64_t wall_now,
                 uint64_t store_now, kvmux_aof_load_info *info, int *expired_restored) {
    if (blen < KVMUX_AOF_BODY_FIXED) return -1;
    int op = b[0];
    uint64_t version = get_u64(b + 1), wexp = get_u64(b + 9);
    uint16_t klen = get_u16(b + 17);
    uint32_t vlen = get_u32(b + 19);
    if ((uint64_t)KVMUX_AOF_BODY_FIXED + klen + vlen != blen) return -1;
    if (op == KVMUX_AOF_REC_VERSION) {
        if (version > info->max_version) info->max_version = version;
        kvmux_store_bump_version(st, version);
        info->records++;
        return 0;
    }
    if (klen == 0) return -1;
    const uint8_t *key = b + KVMUX_AOF_BODY_FIXED, *val = key + klen;
    if (version > info->max_version) info->max_version = version;
    if (op == KVMUX_STORE_REC_DEL) {
        kvmux_store_restore_del(st, key, klen);
        kvmux_store_bump_version(st, version);
    } else if (op == KVMUX_STORE_REC_SET || op == KVMUX_STORE_REC_EXPIRY) {
        /* Expired while we were down: restored as expired (never seen;
         * purged after the replay), since a later EXPIRY record of this
         * key may still extend it. Saturating: a far expiry stays far. */
        int past = wexp != 0 && wexp <= wall_now;
        uint64_t exp = !wexp ? 0 : past ? past_expiry(store_now)
                                        : kvmux_add_sat_u64(store_now, wexp - wall_now);
        if (past) *expired_restored = 1;
        int rc = op == KVMUX_STORE_REC_SET
                     ? kvmux_store_restore(st, key, klen, vlen ? val : NULL, vlen, version, exp)
                     : kvmux_store_restore_expiry(st, key, klen, version, exp);
        if (rc == KVMUX_STATUS_NOT_FOUND) /* EXPIRY of a key the log never set: */
            kvmux_store_bump_version(st, version); /* only its version counts */
        else if (rc != KVMUX_STATUS_OK)
            return -2;
    } else {
        return -1;
    }
    info->records++;
    return 0;
}

static int truncate_at(int fd, uint64_t off, const char *path, char *err, size_t errlen) {
    if (ftruncate(fd, (off_t)off) != 0 || fsync(fd) != 0)
        return kvmux_errf(err, errlen, "aof %s: cannot truncate at offset %llu: %s", path,
                    (unsigned long long)off, strerror(errno));
    return 0;
}

enum { REC_OK, REC_TORN, REC_BAD };

/* Frame the record at off (off < size) of a format-fmt log: REC_OK with
 * *blen, REC_TORN if [off, size) is provably a torn tail (the rule in the
 * file comment), or REC_BAD with *what. Reads only m[off, size). */
static int frame(const uint8_t *m, uint64_t size, uint64_t off, int fmt, uint32_t *blen,
                 const char **what) {
    uint64_t left = size - off;
    uint32_t hdr = fmt >= 2 ? KVMUX_AOF_REC_HDR : KVMUX_AOF_REC_HDR_V1;
    if (left < hdr) return REC_TORN;                               /* rule (a) */
    if (fmt >= 2 && get_u32(m + off + 8) != header_crc(m + off)) {
        if (all_zero(m + off, (size_t)left)) return REC_TORN;      /* rule (c) */
        *what = "header checksum mismatch";
        return REC_BAD;
    }
    *blen = get_u32(m + off);
    if (*blen < KVMUX_AOF_BODY_FIXED || *blen > KVMUX_AOF_MAX_BODY) {
        *what = "impossible record length";
        return REC_BAD;
    }
    if (*blen > left - hdr) {
        if (fmt >= 2) return REC_TORN;                             /* rule (b) */
        *what = "record length runs past the end of the file (a version-1 log cannot "
                "tell a torn last record from a damaged length)";
        return REC_BAD;
    }
    if (kvmux_crc32c(0, m + off + hdr, *blen) != get_u32(m + off + 4)) {
        *what = "body checksum mismatch";
        return REC_BAD;
    }
    return REC_OK;
}

/* Intact records after the corrupt one at off: the next record boundary
 * is unknown (the damaged length cannot be trusted), so every offset
 * after off is tried; from a record that frames, the walk continues at
 * its end. In version 2 a candidate must pass the header checksum first,
 * so the scan is cheap and a false match needs a 32-bit collision. */
static uint64_t count_after(const uint8_t *m, uint64_t size, uint64_t off, int fmt) {
    uint32_t hdr = fmt >= 2 ? KVMUX_AOF_REC_HDR : KVMUX_AOF_REC_HDR_V1;
    uint64_t end = size, n = 0, p = off + 1;
    while (end > p && m[end - 1] == 0) end--; /* no record starts in a zero tail */
    while (p + hdr <= end) {
        uint32_t blen = get_u32(m + p);
        const char *what = NULL;
        /* Cheap shape checks first (key and value lengths agree with the
         * record length), so version 1, which has no header checksum,
         * does not checksum a body at every offset. */
        if (blen >= KVMUX_AOF_BODY_FIXED && blen <= size - p - hdr &&
            (uint64_t)KVMUX_AOF_BODY_FIXED + get_u16(m + p + hdr + 17) +
                    get_u32(m + p + hdr + 19) == blen &&
            frame(m, size, p, fmt, &blen, &what) == REC_OK) {
            n++;
            p += hdr + (uint64_t)blen;
        } else {
            p++;
        }
    }
    return n;
}

/* Create or (after a crash during creation) re-create an empty log. The
 * size < magic-length bytes there must be a prefix of a magic. */
static int init_empty(int fd, uint64_t size, const char *path, kvmux_aof_load_info *info,
                      char *err, size_t errlen) {
    uint8_t head[KVMUX_AOF_MAGIC_LEN];
    ssize_t n = size ? pread(fd, head, (size_t)size, 0) : 0;
    if (n != (ssize_t)size || memcmp(head, KVMUX_AOF_MAGIC, (size_t)size) != 0)
        return kvmux_errf(err, errlen, "aof %s: not a kvmux append-only log (%llu bytes, "
                    "bad magic)", path, (unsigned long long)size);
    info->format = 3;
    if (size) {
        info->truncated_at = 0;
        info->dropped_bytes = size;
    }
    if (ftruncate(fd, 0) != 0 ||
        pwrite(fd, KVMUX_AOF_MAGIC, KVMUX_AOF_MAGIC_LEN, 0) != KVMUX_AOF_MAGIC_LEN ||
        fsync(fd) != 0)
        return kvmux_errf(err, errlen, "aof %s: cannot initialise: %s", path, strerror(errno));
    return 0;
}

/* 1 if a checksummed body has the shape apply() needs: the lengths agree,
 * an op the file's format fmt has (EXPIRY: format 3 only, no value), a
 * key where the op needs one. */
static int body_ok(const uint8_t *b, uint32_t blen, int fmt) {
    if (blen < KVMUX_AOF_BODY_FIXED ||
        (uint64_t)KVMUX_AOF_BODY_FIXED + get_u16(b + 17) + get_u32(b + 19) != blen)
        return 0;
    if (b[0] == KVMUX_AOF_REC_VERSION) return 1;
    if (b[0] == KVMUX_STORE_REC_EXPIRY)
        return fmt >= 3 && get_u16(b + 17) != 0 && get_u32(b + 19) == 0;
    return (b[0] == KVMUX_STORE_REC_SET || b[0] == KVMUX_STORE_REC_DEL) && get_u16(b + 17) != 0;
}

/* Replay m[magic, size). Two passes: the first checks every record
 * (framing, checksums, shape) up to a torn tail or the first bad record,
 * so a log that is refused has not touched the store; the second applies
 * what the first accepted. Returns 0 (*cut = offset of a tail to drop, or
 * UINT64_MAX) or -1 (err filled). */
static int replay(const uint8_t *m, uint64_t size, int fmt, kvmux_store *st, int repair,
                  const char *path, kvmux_aof_load_info *info, uint64_t *cut, char *err,
                  size_t errlen) {
    uint32_t hdr = fmt >= 2 ? KVMUX_AOF_REC_HDR : KVMUX_AOF_REC_HDR_V1;
    uint64_t off = KVMUX_AOF_MAGIC_LEN;
    int verdict = REC_OK;
    const char *what = NULL;
    while (off < size) {
        uint32_t blen = 0;
        verdict = frame(m, size, off, fmt, &blen, &what);
        if (verdict == REC_OK && !body_ok(m + off + hdr, blen, fmt)) {
            verdict = REC_BAD;
            what = "checksum matches but the record does not parse";
        }
        if (verdict != REC_OK) break;
        off += hdr + blen;
    }
    *cut = verdict == REC_OK ? UINT64_MAX : off;
    if (verdict == REC_BAD) {
        uint64_t left = size - off, after = count_after(m, size, off, fmt);
        if (!repair)
            return kvmux_errf(err, errlen, "aof %s: corrupt record at offset %llu (%s; %llu bytes "
                        "from there to the end of the file, %llu intact records after it): "
                        "refusing to start. Inspect the file, or start with --aof-repair to "
                        "truncate it at offset %llu (drops %llu bytes: the corrupt record "
                        "and %llu intact records)", path, (unsigned long long)off, what,
                        (unsigned long long)left, (unsigned long long)after,
                        (unsigned long long)off, (unsigned long long)left,
                        (unsigned long long)after);
        info->repaired = 1;
        info->discarded_records = after;
    }
    uint64_t wall_now = wall_ms(), store_now = kvmux_store_now(st);
    int expired_restored = 0;
    for (uint64_t p = KVMUX_AOF_MAGIC_LEN; p < off;) {
        uint32_t blen = get_u32(m + p);
        if (apply(st, m + p + hdr, blen, wall_now, store_now, info, &expired_restored) != 0)
            return kvmux_errf(err, errlen, "aof %s: out of memory loading the record at offset "
                        "%llu", path, (unsigned long long)p);
        p += hdr + blen;
    }
    if (expired_restored) kvmux_store_purge_expired(st, past_expiry(store_now));
    return 0;
}

#define SMALL_LOG (1024u * 1024)

/* The whole file (n bytes) in a heap buffer, or NULL (errno set). */
static uint8_t *read_small(int fd, size_t n) {
    uint8_t *b = malloc(n);
    size_t got = 0;
    while (b && got < n) {
        ssize_t r = pread(fd, b + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO; /* shrank under us */
            free(b);
            return NULL;
        }
        got += (size_t)r;
    }
    return b;
}

int kvmux_aof_load(const char *path, kvmux_store *st, int repair, kvmux_aof_load_info *info,
                   char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return kvmux_errf(err, errlen, "aof %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return kvmux_errf(err, errlen, "aof %s: fstat: %s", path, strerror(e));
    }
    uint64_t size = (uint64_t)sb.st_size;
    info->file_size = size;
    if (size < KVMUX_AOF_MAGIC_LEN) {
        int rc = init_empty(fd, size, path, info, err, errlen);
        close(fd);
        return rc;
    }
    int mapped = size > SMALL_LOG;
    const uint8_t *m = mapped ? mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0)
                              : read_small(fd, (size_t)size);
    if (m == MAP_FAILED || m == NULL) {
        int e = errno;
        close(fd);
        return kvmux_errf(err, errlen, "aof %s: %s: %s", path, mapped ? "mmap" : "read",
                    strerror(e));
    }
    int fmt = memcmp(m, KVMUX_AOF_MAGIC, KVMUX_AOF_MAGIC_LEN) == 0      ? 3
              : memcmp(m, KVMUX_AOF_MAGIC_V2, KVMUX_AOF_MAGIC_LEN) == 0 ? 2
              : memcmp(m, KVMUX_AOF_MAGIC_V1, KVMUX_AOF_MAGIC_LEN) == 0 ? 1
                                                                         : 0;
    uint64_t cut = UINT64_MAX;
    int rc = 0;
    if (fmt)
        rc = replay(m, size, fmt, st, repair, path, info, &cut, err, errlen);
    else if (memcmp(m, KVMUX_AOF_MAGIC, KVMUX_AOF_MAGIC_LEN - 1) == 0)
        /* "KVMXAOF" and another digit: a format from a newer kvmuxd. */
        rc = kvmux_errf(err, errlen, "aof %s: log format '%c' is not one this kvmuxd reads "
                  "(1..3; written by a newer kvmuxd?): refusing to start, the file is "
                  "unchanged", path, m[KVMUX_AOF_MAGIC_LEN - 1]);
    else
        rc = kvmux_errf(err, errlen, "aof %s: not a kvmux append-only log (bad magic)", path);
    info->format = fmt;
    if (mapped)
        munmap((void *)(uintptr_t)m, (size_t)size);
    else
        free((void *)(uintptr_t)m);
    if (rc == 0 && cut != UINT64_MAX) {
        info->truncated_at = cut;
        info->dropped_bytes = size - cut;
        /* A version-1 file is never cut at start unless repairing: the
         * conversion to version 2 (aof.c) leaves its short tail out. */
        if (fmt >= 2 || info->repaired) rc = truncate_at(fd, cut, path, err, errlen);
    }
    close(fd);
    return rc;
}
