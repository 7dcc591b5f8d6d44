/* Append-only log: the record encoding and recovery (replay at start).
 *
 * Format (aof.h): an 8-byte magic, then records of u32 body length, u32
 * CRC32C of the body, body. Every record is a complete state, never a
 * delta: a SET carries the key's value, version and absolute wall-clock
 * expiry (INCR and CAS are logged as the SET they produced), a DEL removes
 * the key. So replay is deterministic and idempotent, which is what lets a
 * compaction snapshot overlap with records logged during it (aof.c).
 *
 * Recovery rules. A crash (kill -9, power loss) can only damage the end of
 * the file: the last record cut short, or (power loss on some file
 * systems) a tail of zero bytes. That is a "torn tail": it is truncated
 * and reported (offset, bytes dropped), and the start goes on: nothing in
 * it was acknowledged under --fsync always, because the acknowledgment
 * waits for the fsync that covers the whole record. Anything else (a
 * checksum or length that does not match with more data after it) is
 * corruption: the start stops with the offset, and never loads past it,
 * unless the operator asked for --aof-repair, which truncates there.
 *
 * The file is read through mmap, so its size is not limited by memory
 * for the reading itself. This file does no logging: the caller reports
 * what kvmux_aof_load_info says. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aof.h"

static int errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

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

size_t kvmux_aof_encode(uint8_t *out, int op, uint64_t version, uint64_t wall_expires_ms,
                        const uint8_t *key, uint16_t klen, const uint8_t *value,
                        uint32_t vlen) {
    uint8_t *b = out + KVMUX_AOF_REC_HDR;
    b[0] = (uint8_t)op;
    put_u64(b + 1, version);
    put_u64(b + 9, wall_expires_ms);
    put_u16(b + 17, klen);
    put_u32(b + 19, vlen);
    if (klen) memcpy(b + KVMUX_AOF_BODY_FIXED, key, klen);
    if (vlen) memcpy(b + KVMUX_AOF_BODY_FIXED + klen, value, vlen);
    uint32_t blen = KVMUX_AOF_BODY_FIXED + klen + vlen;
    put_u32(out, blen);
    put_u32(out + 4, kvmux_crc32c(0, b, blen));
    return KVMUX_AOF_REC_HDR + blen;
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

/* Apply one checked body. Returns 0, or -1 if it does not parse (a bug
 * or a forged checksum: reported as corruption). */
static int apply(kvmux_store *st, const uint8_t *b, uint32_t blen, uint64_t wall_now,
                 uint64_t store_now, kvmux_aof_load_info *info) {
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
    } else if (op == KVMUX_STORE_REC_SET) {
        if (wexp != 0 && wexp <= wall_now) {
            /* Expired while we were down: the key is gone. */
            kvmux_store_restore_del(st, key, klen);
            kvmux_store_bump_version(st, version);
        } else {
            uint64_t exp = wexp ? store_now + (wexp - wall_now) : 0;
            if (kvmux_store_restore(st, key, klen, vlen ? val : NULL, vlen, version, exp) !=
                KVMUX_STATUS_OK)
                return -2;
        }
    } else {
        return -1;
    }
    info->records++;
    return 0;
}

static int truncate_at(int fd, uint64_t off, const char *path, char *err, size_t errlen) {
    if (ftruncate(fd, (off_t)off) != 0 || fsync(fd) != 0)
        return errf(err, errlen, "aof %s: cannot truncate at offset %llu: %s", path,
                    (unsigned long long)off, strerror(errno));
    return 0;
}

int kvmux_aof_load(const char *path, kvmux_store *st, int repair, kvmux_aof_load_info *info,
                   char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return errf(err, errlen, "aof %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, "aof %s: fstat: %s", path, strerror(e));
    }
    uint64_t size = (uint64_t)sb.st_size;
    info->file_size = size;
    int rc = 0;
    if (size < KVMUX_AOF_MAGIC_LEN) {
        uint8_t head[KVMUX_AOF_MAGIC_LEN];
        ssize_t n = size ? pread(fd, head, (size_t)size, 0) : 0;
        if (n != (ssize_t)size || memcmp(head, KVMUX_AOF_MAGIC, (size_t)size) != 0) {
            close(fd);
            return errf(err, errlen, "aof %s: not a kvmux append-only log (%llu bytes, "
                        "bad magic)", path, (unsigned long long)size);
        }
        /* New file, or a crash while the magic was written. */
        if (size) {
            info->truncated_at = 0;
            info->dropped_bytes = size;
        }
        if (ftruncate(fd, 0) != 0 ||
            pwrite(fd, KVMUX_AOF_MAGIC, KVMUX_AOF_MAGIC_LEN, 0) != KVMUX_AOF_MAGIC_LEN ||
            fsync(fd) != 0)
            rc = errf(err, errlen, "aof %s: cannot initialise: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    const uint8_t *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        close(fd);
        return errf(err, errlen, "aof %s: mmap: %s", path, strerror(e));
    }
    if (memcmp(m, KVMUX_AOF_MAGIC, KVMUX_AOF_MAGIC_LEN) != 0) {
        munmap((void *)(uintptr_t)m, (size_t)size);
        close(fd);
        return errf(err, errlen, "aof %s: not a kvmux append-only log (bad magic)", path);
    }
    uint64_t wall_now = wall_ms(), store_now = kvmux_store_now(st);
    uint64_t off = KVMUX_AOF_MAGIC_LEN, cut = UINT64_MAX;
    while (off < size) {
        uint64_t left = size - off;
        if (left < KVMUX_AOF_REC_HDR) { cut = off; break; } /* torn header */
        uint32_t blen = get_u32(m + off), crc = get_u32(m + off + 4);
        const char *what = NULL;
        if (blen < KVMUX_AOF_BODY_FIXED || blen > KVMUX_AOF_MAX_BODY) {
            what = "impossible record length";
        } else if (blen > left - KVMUX_AOF_REC_HDR) {
            cut = off; /* the last record, cut short */
            break;
        } else if (kvmux_crc32c(0, m + off + KVMUX_AOF_REC_HDR, blen) != crc) {
            what = "checksum mismatch";
        } else {
            int a = apply(st, m + off + KVMUX_AOF_REC_HDR, blen, wall_now, store_now, info);
            if (a == -2) {
                rc = errf(err, errlen, "aof %s: out of memory loading the record at offset "
                          "%llu", path, (unsigned long long)off);
                break;
            }
            if (a != 0) what = "checksum matches but the record does not parse";
        }
        if (what) {
            uint64_t rec_end = off + KVMUX_AOF_REC_HDR +
                               (blen <= KVMUX_AOF_MAX_BODY ? blen : 0);
            /* Torn, not corrupt: garbage only at the very end (the last
             * record's bytes, or zeros up to the end of the file). */
            if (all_zero(m + off, (size_t)left) ||
                (what[0] == 'c' && what[1] == 'h' && rec_end == size)) {
                cut = off;
                break;
            }
            if (repair) {
                cut = off;
                info->repaired = 1;
                break;
            }
            rc = errf(err, errlen, "aof %s: corrupt record at offset %llu (%s; record "
                      "length %u, %llu bytes from there to the end of the file): refusing "
                      "to start. Inspect the file, or start with --aof-repair to truncate "
                      "it at offset %llu (drops %llu bytes)", path, (unsigned long long)off,
                      what, blen, (unsigned long long)left, (unsigned long long)off,
                      (unsigned long long)left);
            break;
        }
        off += KVMUX_AOF_REC_HDR + blen;
    }
    munmap((void *)(uintptr_t)m, (size_t)size);
    if (rc == 0 && cut != UINT64_MAX) {
        info->truncated_at = cut;
        info->dropped_bytes = size - cut;
        rc = truncate_at(fd, cut, path, err, errlen);
    }
    close(fd);
    return rc;
}
