/* Append-only log: appending, group commit and compaction.
 *
 * Appending. The store calls journal() under the shard lock after each
 * change (store.h), so records of one key are in the order the changes
 * were applied. journal() only encodes the record into an in-memory buffer
 * under the log mutex (nested inside shard locks; the log never takes a
 * shard lock while holding it) and bumps "appended", a byte counter that
 * never goes back (it survives compactions, unlike file offsets).
 *
 * Group commit. One writer thread swaps the buffer out, write(2)s it,
 * fdatasync()s it (--fsync always) and publishes "durable" = appended at
 * the swap. Everything appended while an fsync runs goes out with the
 * next one: under load one fsync covers many writes from every connection
 * and every loop. The server holds each write's RESPONSE until durable
 * reaches the appended value read after the write (durable.c); nothing
 * else (GET, WAIT, PING) waits. With everysec the thread still writes the
 * buffer at once (so kill -9 loses at most what was not yet written: a
 * few ms) and fdatasyncs once a second (a power loss loses up to ~1 s);
 * with no it never fsyncs.
 *
 * Failure. A failed write or fdatasync marks the log failed for good:
 * durable stops moving, held writes are answered INTERNAL, new writes are
 * refused, and it is logged at error level. Never retried blindly: after
 * an fsync error the page cache state is unknown (the "fsyncgate" lesson).
 *
 * Compaction. When the file is larger than rewrite_min_size and grew by
 * rewrite_percent since the last compaction, the writer thread sets
 * "rewriting" (from then on journal() also copies each record into a
 * rewrite buffer) and starts a rewrite thread, which writes a snapshot of
 * the store shard by shard (each shard locked only while its entries are
 * copied) to PATH.rewrite and fsyncs it. Records logged meanwhile are in
 * the rewrite buffer; replaying them after the snapshot is correct even
 * where they overlap it, because every record is a full state (aof_load.c).
 * The writer thread then finishes: it appends the rewrite buffer, fsyncs,
 * renames over PATH (atomic), fsyncs the directory, and continues on the
 * new file. Requests never stop; if anything fails the old log stays
 * authoritative and the attempt is only logged.
 *
 * What this is not: a snapshot format (no RDB), nor replication. */
#include "aof.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "monotime.h"

#define INITIAL_BUF (64u * 1024)
#define EVERYSEC_MS 1000u
/* Snapshot records are gathered per shard, then written, in chunks. */
#define SNAP_CHUNK (1024u * 1024)

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

struct kvmux_aof {
    char *path;
    char *tmp_path;
    int fd;
    int policy;
    uint64_t rewrite_min;
    uint32_t rewrite_pct;
    kvmux_store *store;
    void (*notify)(void *);
    void *notify_ud;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    /* Under mu. */
    buf cur;                     /* records not yet handed to the writer */
    uint64_t appended;
    int stop;
    int writer_waiting;
    int rewriting;               /* journal() also fills rbuf */
    int rewrite_done;            /* snapshot file ready: writer switches */
    int rewrite_failed;
    buf rbuf;
    int rewrite_fd;

    _Atomic uint64_t appended_pub;
    _Atomic uint64_t durable;
    _Atomic int failed;
    _Atomic uint64_t file_size;
    _Atomic uint64_t fsyncs, writes, rewrites, rewrite_failures;
    _Atomic int rewriting_pub;

    uint64_t base_size;          /* writer: size after load / last compaction */
    pthread_t writer;
    int writer_started;
    pthread_t rewriter;
    int rewriter_started;        /* writer thread only */
};

int kvmux_fsync_policy_parse(const char *s) {
    if (strcmp(s, "always") == 0) return KVMUX_FSYNC_ALWAYS;
    if (strcmp(s, "everysec") == 0) return KVMUX_FSYNC_EVERYSEC;
    if (strcmp(s, "no") == 0) return KVMUX_FSYNC_NO;
    return -1;
}

const char *kvmux_fsync_policy_name(int p) {
    return p == KVMUX_FSYNC_ALWAYS ? "always" : p == KVMUX_FSYNC_EVERYSEC ? "everysec" : "no";
}

void kvmux_aof_options_init(kvmux_aof_options *o) {
    memset(o, 0, sizeof *o);
    o->fsync = KVMUX_FSYNC_ALWAYS;
    o->rewrite_min_size = 64u * 1024 * 1024;
    o->rewrite_percent = 100;
}

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Make room for n more bytes. Returns 0 or -1 (out of memory). */
static int buf_reserve(buf *b, size_t n) {
    if (b->cap - b->len >= n) return 0;
    size_t cap = b->cap ? b->cap : INITIAL_BUF;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Encode r at the end of b. Returns 0 or -1. */
static int encode_into(buf *b, const kvmux_store_record *r) {
    size_t n = KVMUX_AOF_REC_HDR + KVMUX_AOF_BODY_FIXED + r->klen + r->vlen;
    if (buf_reserve(b, n) != 0) return -1;
    uint64_t wexp = 0;
    if ((r->op == KVMUX_STORE_REC_SET || r->op == KVMUX_STORE_REC_EXPIRY) && r->expires_ms) {
        uint64_t left = r->expires_ms > r->now_ms ? r->expires_ms - r->now_ms : 0;
        /* Saturating: no TTL can wrap the absolute expiry into the past
         * (the protocol caps TTLs far below this; this is the backstop). */
        wexp = kvmux_add_sat_u64(wall_ms(), left ? left : 1);
    }
    b->len += kvmux_aof_encode(b->p + b->len, r->op, r->version, wexp, r->key,
                               (uint16_t)r->klen, r->value, (uint32_t)r->vlen);
    return 0;
}

static void set_failed(kvmux_aof *a, const char *what, int e) {
    if (atomic_exchange(&a->failed, 1) == 0)
        KVMUX_LOG_E("AOF %s: %s failed: %s. Writes are now REFUSED (answered INTERNAL) "
                    "until kvmuxd is restarted: nothing further can be made durable",
                    a->path, what, strerror(e));
    if (a->notify) a->notify(a->notify_ud);
}

/* The store journal: runs under a shard lock. */
static void journal(void *ud, const kvmux_store_record *r) {
    kvmux_aof *a = ud;
    pthread_mutex_lock(&a->mu);
    size_t before = a->cur.len;
    if (encode_into(&a->cur, r) != 0) {
        pthread_mutex_unlock(&a->mu);
        set_failed(a, "buffering a record", ENOMEM);
        return;
    }
    a->appended += a->cur.len - before;
    atomic_store_explicit(&a->appended_pub, a->appended, memory_order_release);
    if (a->rewriting && !a->rewrite_failed && encode_into(&a->rbuf, r) != 0)
        a->rewrite_failed = 1; /* the compaction is abandoned, the log is fine */
    int wake = a->writer_waiting;
    pthread_mutex_unlock(&a->mu);
    if (wake) pthread_cond_signal(&a->cond);
}

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsync_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return -1;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (dfd < 0) return -1;
    int rc = fsync(dfd);
    close(dfd);
    return rc;
}

/* ---- compaction ---- */

typedef struct snap_ctx {
    buf b;
    int oom;
} snap_ctx;

static void snap_record(void *ud, const kvmux_store_record *r) {
    snap_ctx *sc = ud;
    if (!sc->oom && encode_into(&sc->b, r) != 0) sc->oom = 1;
}

/* Write the magic, a snapshot of the store and the VERSION record to fd
 * and fdatasync it. Returns 1 on success, 0 (*oom set if memory ran out,
 * errno otherwise). */
static int write_snapshot(kvmux_store *store, int fd, int *oom) {
    snap_ctx sc = {{NULL, 0, 0}, 0};
    int ok = write_all(fd, (const uint8_t *)KVMUX_AOF_MAGIC, KVMUX_AOF_MAGIC_LEN) == 0;
    uint32_t n = ok ? kvmux_store_snapshot_shard(store, UINT32_MAX, snap_record, &sc) : 0;
    for (uint32_t i = 0; i < n && ok; i++) {
        kvmux_store_snapshot_shard(store, i, snap_record, &sc);
        if (sc.oom) ok = 0;
        else if (sc.b.len >= SNAP_CHUNK || i + 1 == n) {
            if (write_all(fd, sc.b.p, sc.b.len) != 0) ok = 0;
            sc.b.len = 0;
        }
    }
    if (ok) {
        /* Versions of keys deleted before the snapshot are in no record
         * any more: keep the counter above them. Every version handed out
         * so far is <= this; later ones are in rbuf. */
        uint8_t rec[KVMUX_AOF_REC_HDR + KVMUX_AOF_BODY_FIXED];
        size_t rn = kvmux_aof_encode(rec, KVMUX_AOF_REC_VERSION, kvmux_store_last_version(store),
                                     0, NULL, 0, NULL, 0);
        if (write_all(fd, rec, rn) != 0 || fdatasync(fd) != 0) ok = 0;
    }
    *oom = sc.oom;
    free(sc.b.p);
    return ok;
}

static void *rewrite_main(void *arg) {
    kvmux_aof *a = arg;
    int oom = 0, fd = open(a->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0 && write_snapshot(a->store, fd, &oom);
    if (!ok) KVMUX_LOG_W("AOF %s: compaction failed writing %s: %s; keeping the current "
                         "log", a->path, a->tmp_path, oom ? "out of memory" : strerror(errno));
    pthread_mutex_lock(&a->mu);
    if (!ok) {
        a->rewrite_failed = 1;
        if (fd >= 0) close(fd);
        fd = -1;
    }
    a->rewrite_fd = fd;
    a->rewrite_done = 1;
    pthread_mutex_unlock(&a->mu);
    pthread_cond_signal(&a->cond);
    return NULL;
}

/* Writer thread, with mu held: start a compaction. */
static int start_rewrite_locked(kvmux_aof *a) {
    if (a->rewriting || atomic_load(&a->failed)) return -1;
    if (a->rewriter_started) {
        /* The previous one has finished (rewriting is clear): reap it. */
        pthread_join(a->rewriter, NULL);
        a->rewriter_started = 0;
    }
    a->rewriting = 1;
    a->rewrite_done = 0;
    a->rewrite_failed = 0;
    a->rbuf.len = 0;
    a->rewrite_fd = -1;
    if (pthread_create(&a->rewriter, NULL, rewrite_main, a) != 0) {
        a->rewriting = 0;
        return -1;
    }
    a->rewriter_started = 1;
    atomic_store(&a->rewriting_pub, 1);
    return 0;
}

/* Writer thread, mu NOT held: the snapshot is in fd; rb holds every record
 * logged since the compaction started (including those in the batch the
 * writer just took). Returns 1 if the log now is the new file. */
static int finish_rewrite(kvmux_aof *a, int fd, buf *rb) {
    if (write_all(fd, rb->p, rb->len) != 0 || fdatasync(fd) != 0 ||
        rename(a->tmp_path, a->path) != 0) {
        KVMUX_LOG_W("AOF %s: compaction failed finishing %s: %s; keeping the current log",
                    a->path, a->tmp_path, strerror(errno));
        close(fd);
        unlink(a->tmp_path);
        return 0;
    }
    if (fsync_dir(a->path) != 0)
        KVMUX_LOG_W("AOF %s: fsync of the directory after compaction failed: %s",
                    a->path, strerror(errno));
    off_t size = lseek(fd, 0, SEEK_END);
    close(a->fd);
    a->fd = fd;
    uint64_t old = atomic_load(&a->file_size);
    atomic_store(&a->file_size, (uint64_t)(size > 0 ? size : 0));
    a->base_size = (uint64_t)(size > 0 ? size : 0);
    atomic_fetch_add(&a->rewrites, 1);
    KVMUX_LOG_I("AOF %s: compacted %llu -> %llu bytes", a->path, (unsigned long long)old,
                (unsigned long long)a->base_size);
    return 1;
}

/* ---- writer thread ---- */

static void *writer_main(void *arg) {
    kvmux_aof *a = arg;
    buf out = {NULL, 0, 0};
    uint64_t last_sync = kvmux_clock_ms();
    int unsynced = 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->cur.len == 0 && !a->rewrite_done &&
               !(unsynced && a->policy == KVMUX_FSYNC_EVERYSEC)) {
            a->writer_waiting = 1;
            pthread_cond_wait(&a->cond, &a->mu);
            a->writer_waiting = 0;
        }
        if (a->cur.len == 0 && !a->rewrite_done && unsynced &&
            a->policy == KVMUX_FSYNC_EVERYSEC && !a->stop) {
            /* everysec with nothing new: sleep until the sync is due. */
            uint64_t due = last_sync + EVERYSEC_MS, now = kvmux_clock_ms();
            if (now < due) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                uint64_t ns = (uint64_t)ts.tv_nsec + (due - now) * 1000000u;
                ts.tv_sec += (time_t)(ns / 1000000000u);
                ts.tv_nsec = (long)(ns % 1000000000u);
                a->writer_waiting = 1;
                pthread_cond_timedwait(&a->cond, &a->mu, &ts);
                a->writer_waiting = 0;
                continue;
            }
        }
        int stopping = a->stop && a->cur.len == 0 && !a->rewrite_done;
        /* Take the batch: swap buffers so journal() keeps appending. */
        buf tmp = a->cur;
        a->cur = out;
        a->cur.len = 0;
        out = tmp;
        uint64_t end = a->appended;
        int switch_fd = -1;
        buf rb = {NULL, 0, 0};
        if (a->rewrite_done) {
            a->rewrite_done = 0;
            a->rewriting = 0;
            atomic_store(&a->rewriting_pub, 0);
            if (!a->rewrite_failed && a->rewrite_fd >= 0) {
                switch_fd = a->rewrite_fd;
                rb = a->rbuf;
                a->rbuf = (buf){NULL, 0, 0};
            } else {
                atomic_fetch_add(&a->rewrite_failures, 1);
                if (a->rewrite_fd >= 0) close(a->rewrite_fd);
                unlink(a->tmp_path);
                /* Do not retry at once: wait for the same growth again. */
                a->base_size = atomic_load(&a->file_size);
            }
            a->rewrite_fd = -1;
        }
        pthread_mutex_unlock(&a->mu);

        int failed = atomic_load(&a->failed);
        int switched = 0;
        if (!failed && switch_fd >= 0) {
            /* rb already holds this batch's records (journal copied them
             * there too): it replaces writing the batch to the old file. */
            switched = finish_rewrite(a, switch_fd, &rb);
            if (!switched) atomic_fetch_add(&a->rewrite_failures, 1);
            else unsynced = 0;
        }
        free(rb.p);
        if (!failed && !switched && out.len) {
            if (write_all(a->fd, out.p, out.len) != 0) {
                set_failed(a, "write", errno);
                failed = 1;
            } else {
                atomic_fetch_add(&a->file_size, out.len);
                atomic_fetch_add(&a->writes, 1);
                unsynced = 1;
            }
        }
        uint64_t now = kvmux_clock_ms();
        if (!failed && unsynced &&
            (a->policy == KVMUX_FSYNC_ALWAYS || stopping ||
             (a->policy == KVMUX_FSYNC_EVERYSEC && now - last_sync >= EVERYSEC_MS))) {
            if (fdatasync(a->fd) != 0) {
                set_failed(a, "fdatasync", errno);
                failed = 1;
            } else {
                atomic_fetch_add(&a->fsyncs, 1);
                unsynced = 0;
                last_sync = now;
            }
        }
        if (a->policy == KVMUX_FSYNC_NO) unsynced = 0;
        if (!failed && (out.len || switched)) {
            atomic_store_explicit(&a->durable, end, memory_order_release);
            if (a->notify) a->notify(a->notify_ud);
        }
        out.len = 0;
        pthread_mutex_lock(&a->mu);
        if (stopping) break;
        uint64_t size = atomic_load(&a->file_size);
        if (a->rewrite_min && !a->rewriting && !failed && size >= a->rewrite_min &&
            size >= a->base_size + a->base_size / 100 * a->rewrite_pct)
            start_rewrite_locked(a);
    }
    pthread_mutex_unlock(&a->mu);
    free(out.p);
    return NULL;
}

/* ---- lifecycle ---- */

/* Start-up, before the journal is installed: rewrite a version-1 log as
 * version 3 from the store just loaded from it, exactly as a compaction
 * does (snapshot to PATH.rewrite, fdatasync, rename, fsync the directory),
 * so nothing is ever appended to a version-1 file and the log on disk is
 * always whole: the old file until the rename, the new one after. */
static int convert_v1(kvmux_aof *a, char *err, size_t errlen) {
    int oom = 0, fd = open(a->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0 && write_snapshot(a->store, fd, &oom);
    int e = errno;
    if (fd >= 0) close(fd);
    if (ok && rename(a->tmp_path, a->path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(a->tmp_path);
        snprintf(err, errlen, "aof %s: cannot convert the version-1 log to version 3 "
                 "(writing %s: %s); the log is unchanged", a->path, a->tmp_path,
                 oom ? "out of memory" : strerror(e));
        return -1;
    }
    if (fsync_dir(a->path) != 0)
        KVMUX_LOG_W("AOF %s: fsync of the directory after the conversion failed: %s",
                    a->path, strerror(errno));
    KVMUX_LOG_I("AOF %s: converted the version-1 log to version 3 (%s)", a->path,
                KVMUX_AOF_MAGIC);
    return 0;
}

/* Start-up, before anything is appended: a version-2 log becomes version
 * 3 in place (same record layout; only the magic differs), synced, so no
 * EXPIRY record ever lands in a file whose magic tells a version-2 reader
 * it can read it. An 8-byte write at offset 0 lies within one sector:
 * after a crash the file holds one magic or the other, both readable. */
static int upgrade_v2(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int ok = fd >= 0 &&
             pwrite(fd, KVMUX_AOF_MAGIC, KVMUX_AOF_MAGIC_LEN, 0) == (ssize_t)KVMUX_AOF_MAGIC_LEN &&
             fdatasync(fd) == 0;
    int e = errno;
    if (fd >= 0) close(fd);
    if (!ok) {
        snprintf(err, errlen, "aof %s: cannot upgrade the version-2 log to version 3 (%s)",
                 path, strerror(e));
        return -1;
    }
    KVMUX_LOG_I("AOF %s: upgraded the log from version 2 to version 3 in place (%s): "
                "kvmuxd 0.2.0 and older refuse this file", path, KVMUX_AOF_MAGIC);
    return 0;
}

int kvmux_aof_open(kvmux_aof **out, const kvmux_aof_options *o, kvmux_store *st, char *err,
                   size_t errlen) {
    kvmux_aof_load_info info;
    uint64_t t0 = kvmux_clock_ms();
    if (kvmux_aof_load(o->path, st, o->repair, &info, err, errlen) != 0) return -1;
    if (info.repaired)
        KVMUX_LOG_W("AOF %s: CORRUPT record at offset %llu (repaired by --aof-repair): "
                    "truncated, %llu bytes dropped: the corrupt record and %llu intact "
                    "records after it (acknowledged writes discarded)", o->path,
                    (unsigned long long)info.truncated_at,
                    (unsigned long long)info.dropped_bytes,
                    (unsigned long long)info.discarded_records);
    else if (info.dropped_bytes)
        KVMUX_LOG_W("AOF %s: torn tail at offset %llu: truncated, %llu bytes dropped", o->path,
                    (unsigned long long)info.truncated_at,
                    (unsigned long long)info.dropped_bytes);
    KVMUX_LOG_I("AOF %s: loaded %llu records (%llu bytes) in %llu ms; versions resume "
                "above %llu; fsync %s", o->path, (unsigned long long)info.records,
                (unsigned long long)(info.file_size - info.dropped_bytes),
                (unsigned long long)(kvmux_clock_ms() - t0),
                (unsigned long long)info.max_version, kvmux_fsync_policy_name(o->fsync));
    kvmux_aof *a = calloc(1, sizeof *a);
    if (!a) return snprintf(err, errlen, "out of memory"), -1;
    size_t pl = strlen(o->path);
    a->path = strdup(o->path);
    a->tmp_path = malloc(pl + 16);
    if (!a->path || !a->tmp_path) goto oom;
    snprintf(a->tmp_path, pl + 16, "%s.rewrite", o->path);
    a->policy = o->fsync;
    a->rewrite_min = o->rewrite_min_size;
    a->rewrite_pct = o->rewrite_percent;
    a->store = st;
    a->notify = o->notify;
    a->notify_ud = o->notify_user_data;
    a->rewrite_fd = -1;
    if (info.format == 1 && convert_v1(a, err, errlen) != 0) goto fail;
    if (info.format == 2 && upgrade_v2(o->path, err, errlen) != 0) goto fail;
    a->fd = open(o->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (a->fd < 0) {
        snprintf(err, errlen, "aof %s: cannot open for appending: %s", o->path, strerror(errno));
        goto fail;
    }
    off_t size = lseek(a->fd, 0, SEEK_END);
    atomic_store(&a->file_size, (uint64_t)(size > 0 ? size : 0));
    a->base_size = (uint64_t)(size > 0 ? size : 0);
    if (pthread_mutex_init(&a->mu, NULL) != 0) goto oom;
    if (pthread_cond_init(&a->cond, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        goto oom;
    }
    if (pthread_create(&a->writer, NULL, writer_main, a) != 0) {
        snprintf(err, errlen, "aof: cannot start the writer thread");
        pthread_cond_destroy(&a->cond);
        pthread_mutex_destroy(&a->mu);
        goto fail;
    }
    a->writer_started = 1;
    kvmux_store_set_journal(st, journal, a);
    *out = a;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (a->fd > 0) close(a->fd);
    free(a->path);
    free(a->tmp_path);
    free(a);
    return -1;
}

uint64_t kvmux_aof_appended(const kvmux_aof *a) {
    return atomic_load_explicit(&a->appended_pub, memory_order_acquire);
}
uint64_t kvmux_aof_durable(const kvmux_aof *a) {
    return atomic_load_explicit(&a->durable, memory_order_acquire);
}
int kvmux_aof_failed(const kvmux_aof *a) { return atomic_load(&a->failed); }
int kvmux_aof_policy(const kvmux_aof *a) { return a->policy; }

int kvmux_aof_rewrite(kvmux_aof *a) {
    pthread_mutex_lock(&a->mu);
    int rc = start_rewrite_locked(a);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

void kvmux_aof_get_stats(kvmux_aof *a, kvmux_aof_stats *st) {
    memset(st, 0, sizeof *st);
    st->file_size = atomic_load(&a->file_size);
    st->appended = kvmux_aof_appended(a);
    st->durable = kvmux_aof_durable(a);
    st->fsyncs = atomic_load(&a->fsyncs);
    st->writes = atomic_load(&a->writes);
    st->rewrites = atomic_load(&a->rewrites);
    st->rewrite_failures = atomic_load(&a->rewrite_failures);
    st->rewriting = atomic_load(&a->rewriting_pub);
    st->failed = atomic_load(&a->failed);
}

void kvmux_aof_close(kvmux_aof *a) {
    if (!a) return;
    kvmux_store_set_journal(a->store, NULL, NULL);
    pthread_mutex_lock(&a->mu);
    /* Let a running compaction finish first (it reads the store). */
    while (a->rewriting && !a->rewrite_done) {
        pthread_mutex_unlock(&a->mu);
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&a->mu);
    }
    a->stop = 1;
    pthread_mutex_unlock(&a->mu);
    pthread_cond_signal(&a->cond);
    if (a->writer_started) pthread_join(a->writer, NULL);
    if (a->rewriter_started) pthread_join(a->rewriter, NULL);
    if (a->rewrite_fd >= 0) {
        close(a->rewrite_fd);
        unlink(a->tmp_path);
    }
    close(a->fd);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->mu);
    free(a->cur.p);
    free(a->rbuf.p);
    free(a->path);
    free(a->tmp_path);
    free(a);
}
