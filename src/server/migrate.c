/* The migrate thread (docs/MIGRATION.md sections 3, 4, 5 and 8.1): on
 * every data group's current leader (with --cluster-map), one thread that
 * reads the map group's migration table (CLUSTER mwatch) and, for each
 * record naming this group, takes the next step its state asks for:
 *
 * - source, OPEN: OUT_BEGIN in our log; `import-begin` to the target B;
 *   the bulk pass (a slot-range walk of our store, `import` batches of at
 *   most 4096 records / 1 MiB, one in flight, numbered (term, bseq));
 *   drain rounds (OUT_CUT n, copy the dirty keys of gen <= n,
 *   OUT_DRAINED n) until the dirty set is small enough to fence;
 *   OUT_FENCE; the final delta (the whole dirty set); `migrate-commit` to
 *   the map group; the new map pushed to B (`setmap`) then to us.
 * - source, COMMITTED: the pushes again if our outgoing record is still
 *   there; then, once the janitor has purged R here (count 0), ACK(src).
 * - source, ABORTED: OUT_ABORT (unfences, drops the dirty set); ACK(src).
 * - target, OPEN: nothing (the source drives; import-begin creates our
 *   incoming record).
 * - target, COMMITTED: once our applied map is the commit's (the watcher
 *   brings it, or the source pushes it), ACK(dst).
 * - target, ABORTED: IN_ABORT; once the janitor purged R, ACK(dst).
 *
 * Every step is idempotent and decided by replicated state (our log's
 * outgoing / incoming record, the map group's table), so a failed
 * attempt simply stops and the next round starts again from the states
 * found: a new leader's thread does exactly that. Within one term the
 * thread also keeps the bulk pass's cursor (struct progress), so a
 * retried attempt continues the pass where B last acknowledged it
 * instead of walking R again (a new term walks it all: 8.1). Two timers
 * of 8.2 turn a failure that lasts into a request to ABORT (never into a
 * decision: the map group's answer is the truth): no `import` answered
 * OK for --migrate-stall-timeout before the fence, and no COMMIT
 * answered OK within --migrate-fence-timeout of the fence. A value over
 * 256 KiB travels alone; one whose record does not fit 1 MiB is sent as
 * a batch of one record anyway (libkvmux fragments it; B stages it and
 * proposes IMPORT_STAGED), read from the store by reference (no copy
 * under the shard lock). Only a batch over --max-value (or B's advertised
 * limit) cannot move: the thread asks ABORT with its size.
 *
 * Threads: this thread talks to other groups through libkvmux
 * (mapclient.h; it never blocks a loop) and to its own group's log
 * through loop 0: it hands one MIGSTEP or MAP command over under mu,
 * wakes loop 0, which proposes it (kvmux__migrate_iterate), and then
 * polls the applied state for the outcome. STATS reads atomics. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "mapclient.h"
#include "monotime.h"
#include "server_internal.h"

#include "fsm.h"
#include "migin.h"
#include "migout.h"
#include "../cluster/cluster.h"
#include "../cluster/migtab.h"

/* mwatch: park this long when nothing naming us needs a step, this long
 * when something is waiting on another actor (the janitor, the watcher). */
#define IDLE_WAIT_MS 5000u
#define BUSY_WAIT_MS 200u
#define WATCH_SLACK_MS 3000
/* Requests to the map group and to B (import-begin parks up to 10 s on B
 * while it purges leftovers). */
#define CALL_MS 5000
#define BEGIN_CALL_MS 15000
#define IMPORT_CALL_MS 30000
/* ... plus this per MiB of a big batch (B stages it 1 MiB per round). */
#define IMPORT_MS_PER_MIB 1000
/* A step handed to loop 0 must be applied within this. */
#define STEP_WAIT_MS 5000u
#define POLL_MS 5u
#define TICK_MS 100u
/* Backoff after a failed attempt: doubles from MIN to MAX. */
#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 2000u
/* A batch is resent (same term and bseq) this many times on BUSY,
 * OUT_OF_MEMORY or a lost answer before the attempt stops. */
#define IMPORT_TRIES 5
/* The bulk pass reads the store this many keys per scan step. */
#define SCAN_COUNT 256u
#define SCAN_BYTES (256u * 1024u)
/* Section 5: when to fence, how many drain rounds at most, and the
 * largest dirty set fenced after the last round. */
#define FENCE_KEYS 256u
#define FENCE_BYTES (256u * 1024u)
#define MAX_ROUNDS 8u
#define LAST_ROUND_BYTES (16u * 1024u * 1024u)
/* Section 4: a value over this travels alone in its batch. */
#define BIG_VALUE (256u * 1024u)
/* The batch buffer: header, 4096 records' fixed parts, 1 MiB of keys
 * and values. A batch of one big value grows it for that batch only. */
#define BATCH_CAP ((size_t)KVMUX_MIG_BATCH_WIRE_MAX)
/* A batch of one PUT: the header and the record's fixed fields. */
#define ONE_REC_OVERHEAD ((size_t)KVMUX_MIG_BATCH_HDR_LEN + 23u)
#define MIGSTEP_VALUE_MAX 64u

/* The source's progress on the migration it drives, kept across the
 * attempts of one term (reset when the id or our term changes). */
typedef struct progress {
    uint32_t id;
    uint64_t term;
    uint64_t since_ms;               /* last import answered OK, else when
                                        this term took the migration over */
    uint64_t fence_ms;               /* the fence applied, or found applied */
    uint64_t cursor;                 /* where the bulk pass resumes */
    uint32_t bseq;                   /* the last batch B acknowledged */
    int pass_begun, pass_done;
    int timed_out;                   /* a timeout fired: only ABORT is asked */
    char err[160];                   /* the last failure, for the reason */
} progress;

struct kvmux_migr {
    kvmux_server *srv;
    uint16_t group;
    uint32_t stall_ms, fence_timeout_ms; /* --migrate-stall/fence-timeout */
    pthread_t thread;
    int started;
    _Atomic int stop;
    /* The hand-over to loop 0: one MIGSTEP or one MAP at a time. */
    pthread_mutex_t mu;
    int step;                        /* 0: none */
    uint32_t step_id;
    uint8_t step_v[MIGSTEP_VALUE_MAX];
    size_t step_n;
    uint8_t *map;                    /* malloc; NULL: none */
    size_t map_len;
    _Atomic int pending;
    /* This thread's own memory of the migration it is moving. */
    uint32_t begun_id;               /* OUT_BEGIN proposed here */
    uint32_t pass_id;                /* a bulk pass started here */
    uint32_t fence_id;               /* OUT_FENCE applied here, at fence_ms */
    uint64_t fence_ms;
    uint32_t aborted_id;             /* OUT_ABORT counted */
    uint32_t committed_id;           /* commit counted */
    uint64_t errors;                 /* for rate-limited warnings */
    progress prog;
    /* STATS (docs/OPERATIONS.md): */
    _Atomic uint64_t rounds, keys_sent, bytes_sent, batches_sent, restarts, fence_ms_last,
        fence_ms_max, commits, aborts, timeouts;
};

/* One attempt at moving one migration (the source's). */
typedef struct attempt {
    struct kvmux_migr *m;
    const kvmux_migrec *rec;
    kvmux_mapc *b;                   /* the client on B */
    uint64_t term;                   /* our term when the attempt began */
    uint32_t bseq;                   /* the last batch number used */
    uint8_t *buf;                    /* the batch being built */
    size_t cap;                      /* of buf: BATCH_CAP, more for a big value */
    size_t len;                      /* bytes in buf (header included) */
    size_t kvbytes;                  /* its keys' and values' bytes */
    uint16_t nrec;
    int failed;                      /* a batch could not be sent */
    int too_big;                     /* a value that fits no import request */
    size_t big_len, big_max;         /* ... its batch's bytes, the limit */
    uint64_t keys, bytes;            /* this attempt's totals, for the log */
    uint32_t rounds;
    uint8_t *keys_buf;               /* the bulk pass's keys of one scan step */
    size_t keys_len, keys_cap;
    int in_pass;                     /* batches now carry the bulk pass: */
    uint64_t step_cursor;            /* ... whose current scan step began here */
} attempt;

static kvmux_fsm_cluster *cluster(struct kvmux_migr *m) { return kvmux__repl_cluster(m->srv); }

static int stopping(struct kvmux_migr *m) { return atomic_load(&m->stop); }

static int leading(void *ud) {
    struct kvmux_migr *m = ud;
    return !stopping(m) && kvmux__repl_is_leader(m->srv);
}

/* Still the leader of the term the attempt began in. */
static int attempt_ok(const attempt *a) {
    return leading(a->m) && kvmux__repl_term(a->m->srv) == a->term;
}

static void nap(struct kvmux_migr *m, uint32_t ms) {
    while (ms && !stopping(m)) {
        uint32_t step = ms < TICK_MS ? ms : TICK_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        ms -= step;
    }
}

/* A failure the next round retries: logged, the first and then one in
 * 64. rc: a KVMUX_MAPC_* refusal (> 0), a KVMUX_E* code (< 0), or 0 (our
 * own step: not applied in time, no such group, ...); msg: the server's
 * message (NUL-terminated) or NULL. */
static void note(struct kvmux_migr *m, uint32_t id, const char *what, int rc, const uint8_t *msg) {
    char text[sizeof m->prog.err];
    /* KVMUX_MAPC_* in their order (mapclient.h). */
    static const char *const refusals[] = {"", "not found", "no answer in time",
                                           "version mismatch", "busy", "bad request",
                                           "out of memory", "try again", "too large"};
    const char *why = rc < 0 ? kvmux_mapc_strerror(rc)
                      : rc < (int)(sizeof refusals / sizeof refusals[0]) ? refusals[rc]
                                                                          : "refused";
    snprintf(text, sizeof text, "%s failed%s%s%s%.100s", what, rc ? ": " : "", why,
             msg ? ": " : "", msg ? (const char *)msg : "");
    /* The last failure of the migration being driven: an abort for a
     * timeout gives it as its reason. */
    if (id && id == m->prog.id) memcpy(m->prog.err, text, sizeof text);
    m->errors++;
    if (m->errors == 1 || m->errors % 64 == 0)
        KVMUX_LOG_W("migration %u: %s (%llu errors so far; retrying)", id, text,
                    (unsigned long long)m->errors);
}

/* The deadline of the current attempt's requests to B: the stall
 * timeout's before the fence, the fence timeout's after it. */
static uint64_t deadline(const struct kvmux_migr *m) {
    const progress *p = &m->prog;
    return p->fence_ms ? p->fence_ms + m->fence_timeout_ms : p->since_ms + m->stall_ms;
}

/* kvmux_mapc_call's go_on for COMMIT: leading, and the fence timeout has
 * not passed. */
static int in_time(void *ud) {
    struct kvmux_migr *m = ud;
    return leading(m) && kvmux_clock_ms() < deadline(m);
}

/* kvmux_mapc_call's go_on for requests of an attempt: still the leader
 * of its term, and its timeout has not passed (then the thread stops
 * waiting for B and asks ABORT). */
static int attempt_go(void *ud) {
    const attempt *a = ud;
    return attempt_ok(a) && kvmux_clock_ms() < deadline(a->m);
}

static uint64_t applied_epoch(struct kvmux_migr *m) {
    kvmux_fsm_cluster *cl = cluster(m);
    return cl ? atomic_load(&cl->epoch) : 0;
}

static void out_info(struct kvmux_migr *m, kvmux_migout_info *mi) {
    memset(mi, 0, sizeof *mi);
    kvmux_fsm_cluster *cl = cluster(m);
    if (cl) kvmux_migout_get_info(&cl->out, mi);
}

/* ---- the hand-over to loop 0 ---- */

/* Hand MIGSTEP (id, step, v[0..n)) to loop 0. */
static void hand_step(struct kvmux_migr *m, uint32_t id, uint8_t step, const uint8_t *v,
                      size_t n) {
    pthread_mutex_lock(&m->mu);
    m->step = step;
    m->step_id = id;
    if (n) memcpy(m->step_v, v, n);
    m->step_n = n;
    atomic_store(&m->pending, 1);
    pthread_mutex_unlock(&m->mu);
    kvmux__loop_wake(&m->srv->loops[0]);
}

/* Hand the map p[0..n) to loop 0 (a copy). 0, or -1 out of memory. */
static int hand_map(struct kvmux_migr *m, const uint8_t *p, size_t n) {
    uint8_t *copy = malloc(n);
    if (!copy) return -1;
    memcpy(copy, p, n);
    pthread_mutex_lock(&m->mu);
    free(m->map);
    m->map = copy;
    m->map_len = n;
    atomic_store(&m->pending, 1);
    pthread_mutex_unlock(&m->mu);
    kvmux__loop_wake(&m->srv->loops[0]);
    return 0;
}

void kvmux__migrate_iterate(kvmux_loop *l) {
    struct kvmux_migr *m = l->srv->migr;
    if (l->id != 0 || !m || !atomic_load_explicit(&m->pending, memory_order_acquire)) return;
    pthread_mutex_lock(&m->mu);
    int step = m->step;
    uint32_t id = m->step_id;
    uint8_t v[MIGSTEP_VALUE_MAX];
    size_t n = m->step_n;
    memcpy(v, m->step_v, n);
    uint8_t *map = m->map;
    size_t map_len = m->map_len;
    m->step = 0;
    m->map = NULL;
    atomic_store(&m->pending, 0);
    pthread_mutex_unlock(&m->mu);
    /* A failure (not the leader, out of memory) shows to the thread as a
     * step not applied in time: it tries again. */
    if (step) (void)kvmux__repl_propose_migstep(l, id, (uint8_t)step, v, n);
    if (map) (void)kvmux__repl_propose_map(l, map, map_len);
    free(map);
}

/* Poll until cond(m, arg) holds: 0, or -1 (STEP_WAIT_MS passed, or the
 * leadership was lost). */
static int wait_for(struct kvmux_migr *m, int (*cond)(struct kvmux_migr *m, uint64_t arg),
                    uint64_t arg) {
    for (uint32_t waited = 0; waited < STEP_WAIT_MS; waited += POLL_MS) {
        if (cond(m, arg)) return 0;
        if (!leading(m)) return -1;
        nap(m, POLL_MS);
    }
    return cond(m, arg) ? 0 : -1;
}

/* Conditions for wait_for; arg packs what each needs. */
static int out_is(struct kvmux_migr *m, uint64_t arg) { /* id << 8 | state */
    kvmux_migout_info mi;
    out_info(m, &mi);
    int state = (int)(arg & 0xff);
    uint32_t id = (uint32_t)(arg >> 8);
    if (state == KVMUX_MIGOUT_NONE) return mi.state == KVMUX_MIGOUT_NONE || mi.id != id;
    return mi.id == id && mi.state == state;
}

static int gen_above(struct kvmux_migr *m, uint64_t arg) { /* id << 32 | n */
    kvmux_migout_info mi;
    out_info(m, &mi);
    return mi.state != KVMUX_MIGOUT_NONE && mi.id == (uint32_t)(arg >> 32) &&
           mi.gen > (uint32_t)arg;
}

static int stop_at_first(void *ud, const uint8_t *key, size_t klen, uint32_t gen, int present,
                         const uint8_t *value, size_t vlen, uint64_t version,
                         uint64_t expire_at) {
    (void)ud, (void)key, (void)klen, (void)gen, (void)present, (void)value, (void)vlen;
    (void)version, (void)expire_at;
    return 1;
}

static int drained(struct kvmux_migr *m, uint64_t arg) { /* id << 32 | n */
    kvmux_fsm_cluster *cl = cluster(m);
    /* No key of gen <= n left (or the record is gone). */
    return kvmux_migout_collect(&cl->out, m->srv->store, (uint32_t)(arg >> 32), (uint32_t)arg,
                                stop_at_first, NULL) <= 0;
}

static int epoch_at(struct kvmux_migr *m, uint64_t arg) { return applied_epoch(m) >= arg; }

static int in_gone(struct kvmux_migr *m, uint64_t id) {
    kvmux_migin in;
    kvmux_migin_get(cluster(m), &in);
    return in.state == KVMUX_MIGIN_NONE || in.id != id;
}

/* ---- requests to the map group ---- */

/* MIGREC ABORT of r with reason: 0 (aborted now or before), 1 (the
 * answer was "is committed (epoch E)": *end = E), -1 (not answered). */
static int ask_abort(struct kvmux_migr *m, kvmux_mapc *mc, const kvmux_migrec *r,
                     const char *reason, uint64_t *end) {
    char v[16 + KVMUX_MIG_REASON_MAX + 1];
    int n = snprintf(v, sizeof v, "%u %.*s", r->id, (int)KVMUX_MIG_REASON_MAX, reason);
    if (n < 0 || (size_t)n >= sizeof v) n = (int)sizeof v - 1;
    for (int i = 0; i < n; i++)
        if ((uint8_t)v[i] < 0x20 || (uint8_t)v[i] > 0x7e) v[i] = ' ';
    KVMUX_LOG_W("migration %u: asking the map group to abort it: %s", r->id, reason);
    uint8_t *msg = NULL;
    int rc = kvmux_mapc_call(mc, "abort", v, (size_t)n, CALL_MS, (int)TICK_MS, leading, m, &msg,
                             NULL);
    /* migtab.c: ABORT of a COMMITTED record is VERSION_MISMATCH "migration
     * N is committed (epoch E)"; of an ABORTED one, OK. */
    const char *at = rc == KVMUX_MAPC_VERSION && msg ? strstr((const char *)msg, "(epoch ") : NULL;
    *end = at ? strtoull(at + 7, NULL, 10) : 0;
    if (rc != KVMUX_MAPC_OK && !at) note(m, r->id, "abort", rc, msg);
    free(msg);
    return rc == KVMUX_MAPC_OK ? 0 : at && *end ? 1 : -1;
}

static int ack(struct kvmux_migr *m, kvmux_mapc *mc, uint32_t id) {
    uint8_t v[6];
    kvmux_store_u32be(v, id);
    kvmux_store_u16be(v + 4, m->group);
    uint8_t *msg = NULL;
    int rc = kvmux_mapc_call(mc, "migrate-ack", v, sizeof v, CALL_MS, (int)TICK_MS, leading, m,
                             &msg, NULL);
    if (rc == KVMUX_MAPC_OK) KVMUX_LOG_I("migration %u: acknowledged by group %u", id, m->group);
    else note(m, id, "migrate-ack", rc, msg);
    free(msg);
    return rc;
}

/* ---- the target B ---- */

/* B's members from our applied map, as an endpoint list in out. 0, or -1
 * (no map, or B is not in it). */
static int group_endpoints(struct kvmux_migr *m, uint16_t gid, char *out, size_t cap) {
    kvmux_fsm_cluster *cl = cluster(m);
    int rc = -1;
    pthread_mutex_lock(&cl->mu);
    const kvmux_map_group *g = cl->map ? kvmux_map_group_get(cl->map, gid) : NULL;
    if (g) {
        size_t off = 0;
        out[0] = '\0';
        for (unsigned k = 0; k < g->n && off < cap; k++)
            off += (size_t)snprintf(out + off, cap - off, "%s%s", k ? "," : "", g->addr[k]);
        rc = off < cap ? 0 : -1;
    }
    pthread_mutex_unlock(&cl->mu);
    return rc;
}

/* A client on group gid (endpoints mode over its members). NULL on
 * failure (noted). */
static kvmux_mapc *open_group(struct kvmux_migr *m, uint32_t id, uint16_t gid) {
    char eps[KVMUX_MAP_MAX_MEMBERS * KVMUX_MAP_ADDR_MAX + KVMUX_MAP_MAX_MEMBERS];
    kvmux_mapc *c = NULL;
    if (group_endpoints(m, gid, eps, sizeof eps) != 0) {
        note(m, id, "finding the target group in the map", 0, NULL);
        return NULL;
    }
    int rc = kvmux__mapwatch_connect(m->srv, eps, "kvmuxd-migrate", &c);
    if (rc != 0) {
        note(m, id, "connecting to the target group", rc, NULL);
        return NULL;
    }
    return c;
}

/* ---- batches ---- */

static void batch_reset(attempt *a) {
    a->len = KVMUX_MIG_BATCH_HDR_LEN;
    a->kvbytes = 0;
    a->nrec = 0;
    if (a->cap > BATCH_CAP) { /* a big value's batch: give its buffer back */
        uint8_t *p = realloc(a->buf, BATCH_CAP);
        if (p) a->buf = p, a->cap = BATCH_CAP;
    }
}

/* Room in the batch buffer for a batch of len bytes (one big value). 0,
 * or -1 (out of memory: the attempt stops). */
static int batch_room(attempt *a, size_t len) {
    if (len <= a->cap) return 0;
    uint8_t *p = realloc(a->buf, len);
    if (!p) {
        note(a->m, a->rec->id, "allocating a big value's import batch", 0, NULL);
        a->failed = 1;
        return -1;
    }
    a->buf = p;
    a->cap = len;
    return 0;
}

/* Whether a record of klen + vlen can be sent at all: one that fits no
 * 1 MiB batch goes alone, as one import request, which B's --max-value
 * (assumed to be ours: one cluster, one configuration; libkvmux checks
 * B's advertised limit too) must admit. 1, or 0 (a->too_big set). */
static int movable(attempt *a, size_t klen, size_t vlen) {
    size_t need = ONE_REC_OVERHEAD + klen + vlen;
    if (klen + vlen <= KVMUX_MIG_BATCH_BYTES || need <= a->m->srv->cfg.max_value) return 1;
    a->too_big = 1;
    a->big_len = need;
    a->big_max = a->m->srv->cfg.max_value;
    return 0;
}

/* B acknowledged batch a->bseq: the stall timer starts again, and in the
 * bulk pass everything before the current scan step is in B (the step
 * itself is sent again by a resumed pass: imports are idempotent). */
static void progressed(attempt *a) {
    progress *p = &a->m->prog;
    p->since_ms = kvmux_clock_ms();
    p->bseq = a->bseq;
    if (a->in_pass) p->cursor = a->step_cursor;
}

/* Send the batch being built (if any) as the next bseq: 0, or -1 (the
 * attempt stops; a->failed). A resend after BUSY, OUT_OF_MEMORY or a lost
 * answer uses the same (term, bseq): if the first one was applied, B
 * answers VERSION_MISMATCH, which then means "applied". */
static int flush(attempt *a) {
    if (a->nrec == 0 || a->failed) return a->failed ? -1 : 0;
    struct kvmux_migr *m = a->m;
    a->bseq++;
    kvmux_mig_batch_encode_hdr(a->buf, a->rec->id, a->term, a->bseq, a->nrec);
    int call_ms = IMPORT_CALL_MS + (int)(a->len >> 20) * IMPORT_MS_PER_MIB;
    for (int tries = 0; tries < IMPORT_TRIES && attempt_ok(a); tries++) {
        uint8_t *msg = NULL;
        int rc = kvmux_mapc_call(a->b, "import", a->buf, a->len, call_ms, (int)TICK_MS,
                                 attempt_go, a, &msg, NULL);
        int applied = rc == KVMUX_MAPC_OK || (rc == KVMUX_MAPC_VERSION && tries > 0);
        if (applied) {
            free(msg);
            progressed(a);
            atomic_fetch_add(&m->batches_sent, 1);
            atomic_fetch_add(&m->keys_sent, a->nrec);
            atomic_fetch_add(&m->bytes_sent, a->len);
            a->keys += a->nrec;
            a->bytes += a->len;
            batch_reset(a);
            return 0;
        }
        note(m, a->rec->id, "import", rc, msg);
        free(msg);
        if (rc == KVMUX_MAPC_TOOBIG) { /* over B's advertised value limit */
            a->too_big = 1;
            a->big_len = a->len;
            a->big_max = 0;
        }
        if (rc == KVMUX_MAPC_VERSION || rc == KVMUX_MAPC_BADREQ || rc == KVMUX_MAPC_GAVEUP ||
            rc == KVMUX_MAPC_TOOBIG)
            break;
        for (uint32_t ms = 0; ms < BACKOFF_MIN_MS << tries && attempt_go(a); ms += TICK_MS)
            nap(m, TICK_MS);
    }
    a->failed = 1;
    return -1;
}

/* Room for one more record of klen + vlen in the batch; when a value
 * over BIG_VALUE is involved, it must travel alone. */
static int fits(const attempt *a, size_t klen, size_t vlen) {
    if (a->nrec == 0) return 1;
    return a->nrec < KVMUX_MIG_BATCH_RECS && a->kvbytes + klen + vlen <= KVMUX_MIG_BATCH_BYTES &&
           vlen <= BIG_VALUE;
}

/* Append one record (PUT when present, else ABSENT); flushes first when
 * it does not fit. Returns the offset of its expire_at field (PUT), 0
 * for ABSENT, or -1 (a send failed, or the record fits no batch:
 * a->too_big). */
static long add_rec(attempt *a, int present, const uint8_t *key, size_t klen,
                    const uint8_t *value, size_t vlen, uint64_t version, uint64_t expire_at) {
    if (!present) vlen = 0;
    if (!movable(a, klen, vlen)) return -1;
    if (!fits(a, klen, vlen) && flush(a) != 0) return -1;
    if (batch_room(a, ONE_REC_OVERHEAD + klen + vlen) != 0) return -1;
    kvmux_mig_rec r = {.kind = present ? KVMUX_MIG_REC_PUT : KVMUX_MIG_REC_ABSENT,
                       .klen = (uint16_t)klen, .key = key, .version = version,
                       .expire_at = expire_at, .vlen = (uint32_t)vlen, .value = value};
    long off = present ? (long)(a->len + 3 + klen + 8) : 0;
    a->len += kvmux_mig_rec_encode(a->buf + a->len, &r);
    a->kvbytes += klen + vlen;
    a->nrec++;
    /* A big value went alone: the next record starts a new batch. */
    if (vlen > BIG_VALUE && flush(a) != 0) return -1;
    return off;
}

/* ---- the bulk pass ---- */

/* kvmux_store_scan_fn: copy the keys of one scan step (under the shard
 * lock: nothing else may be done there). */
static int scan_key(void *ud, const uint8_t *key, size_t klen) {
    attempt *a = ud;
    if (!key) return 0;
    if (a->keys_len + 2 + klen > a->keys_cap) {
        size_t cap = a->keys_cap ? a->keys_cap * 2 : 64 * 1024;
        while (cap < a->keys_len + 2 + klen) cap *= 2;
        uint8_t *p = realloc(a->keys_buf, cap);
        if (!p) return KVMUX_STATUS_INTERNAL;
        a->keys_buf = p;
        a->keys_cap = cap;
    }
    kvmux_store_u16be(a->keys_buf + a->keys_len, (uint16_t)klen);
    memcpy(a->keys_buf + a->keys_len + 2, key, klen);
    a->keys_len += 2 + klen;
    return 0;
}

/* One key read by get_full: appended under the shard lock (the value is
 * only valid there). Its expiry comes after, patched in by put_key. */
typedef struct put_ctx {
    attempt *a;
    const uint8_t *key;
    size_t klen;
    long off;        /* add_rec's answer */
    int need_flush;  /* did not fit: flush outside the lock, read again */
    kvmux_store_value *held; /* a big value, kept by reference */
    uint64_t version;        /* ... its version */
} put_ctx;

static int put_read(void *ud, uint64_t version, const uint8_t *value, size_t len) {
    put_ctx *p = ud;
    attempt *a = p->a;
    if (len > BIG_VALUE && value) {
        /* It goes alone: a reference now (no copy of up to --max-value
         * bytes under the lock), the batch built outside it. */
        if (!(p->held = kvmux_store_value_hold(value))) return KVMUX_STATUS_INTERNAL;
        p->version = version;
        return 0;
    }
    if (!fits(a, p->klen, len)) { /* no network call under a shard lock */
        p->need_flush = 1;
        return 1;
    }
    kvmux_mig_rec r = {.kind = KVMUX_MIG_REC_PUT, .klen = (uint16_t)p->klen, .key = p->key,
                       .version = version, .vlen = (uint32_t)len, .value = value};
    p->off = (long)(a->len + 3 + p->klen + 8);
    a->len += kvmux_mig_rec_encode(a->buf + a->len, &r);
    a->kvbytes += p->klen + len;
    a->nrec++;
    return 0;
}

/* Copy one key of the bulk pass with its value, version and expiry. 0,
 * or -1 (the attempt stops). A key gone since the scan saw it is
 * skipped: its delete is in the dirty set. */
static int put_key(attempt *a, const uint8_t *key, size_t klen) {
    for (int tries = 0; tries < 2; tries++) {
        put_ctx p = {.a = a, .key = key, .klen = klen, .off = 0};
        uint64_t exp = 0;
        int rc = kvmux_store_get_full(a->m->srv->store, key, klen, put_read, &p, &exp);
        if (p.held) { /* a big value: alone in its batch (add_rec flushes) */
            long off = rc == KVMUX_STATUS_OK
                           ? add_rec(a, 1, key, klen, kvmux_store_value_data(p.held),
                                     kvmux_store_value_len(p.held), p.version, exp)
                           : 0;
            kvmux_store_value_release(p.held);
            return off < 0 ? -1 : 0;
        }
        if (p.need_flush == 1) { /* full: send it, then read the key again */
            if (flush(a) != 0) return -1;
            continue;
        }
        if (rc != KVMUX_STATUS_OK) return 0;
        kvmux_store_u64be(a->buf + p.off, exp);
        return 0;
    }
    return 0;
}

/* One walk of the store's keys of R, copied to B, from the cursor the
 * previous attempt of this term reached. 0, or -1. */
static int bulk_pass(attempt *a) {
    const kvmux_migrec *r = a->rec;
    progress *p = &a->m->prog;
    uint64_t cursor = p->cursor;
    a->in_pass = 1;
    if (cursor)
        KVMUX_LOG_I("migration %u: resuming the bulk pass after batch %u (term %llu)", r->id,
                    p->bseq, (unsigned long long)p->term);
    do {
        if (!attempt_ok(a)) return -1;
        uint64_t next = 0;
        a->keys_len = 0;
        a->step_cursor = cursor;
        int rc = kvmux_store_scan_slots(a->m->srv->store, cursor, r->first, r->last, 0,
                                        SCAN_COUNT, SCAN_BYTES, scan_key, a, &next);
        if (rc != KVMUX_STATUS_OK) {
            note(a->m, r->id, "reading the store", 0, NULL);
            return -1;
        }
        for (size_t off = 0; off < a->keys_len;) {
            size_t kl = kvmux_load_u16be(a->keys_buf + off);
            if (put_key(a, a->keys_buf + off + 2, kl) != 0) return -1;
            off += 2 + kl;
        }
        cursor = next;
    } while (cursor != 0);
    a->step_cursor = 0;
    if (flush(a) != 0) return -1;
    a->in_pass = 0;
    p->pass_done = 1;
    return 0;
}

/* ---- drain rounds, the final delta ---- */

static int send_dirty(void *ud, const uint8_t *key, size_t klen, uint32_t gen, int present,
                      const uint8_t *value, size_t vlen, uint64_t version, uint64_t expire_at) {
    (void)gen;
    attempt *a = ud;
    return add_rec(a, present, key, klen, value, vlen, version, expire_at) < 0 || !attempt_ok(a);
}

/* Copy the dirty keys of gen <= upto (0: all) to B. 0, or -1. */
static int copy_dirty(attempt *a, uint32_t upto) {
    long n = kvmux_migout_collect(&cluster(a->m)->out, a->m->srv->store, a->rec->id, upto,
                                  send_dirty, a);
    if (n < 0 || a->failed || a->too_big || !attempt_ok(a)) return -1;
    return flush(a);
}

static int sum_dirty(void *ud, const uint8_t *key, size_t klen, uint32_t gen, int present,
                     const uint8_t *value, size_t vlen, uint64_t version, uint64_t expire_at) {
    (void)key, (void)gen, (void)value, (void)version, (void)expire_at;
    *(uint64_t *)ud += klen + (present ? vlen : 0);
    return 0;
}

/* What the final delta would send now: the dirty keys with the values
 * they hold (the record counts key bytes only). 0 with *bytes, or -1. */
static int delta_bytes(attempt *a, uint64_t *bytes) {
    *bytes = 0;
    return kvmux_migout_collect(&cluster(a->m)->out, a->m->srv->store, a->rec->id, 0, sum_dirty,
                                bytes) < 0 ? -1 : 0;
}

/* Drain rounds until the dirty set may be fenced (section 5). 0 (fence
 * now), 1 (an ABORT is needed: *why), -1 (the attempt stops). */
static int drain(attempt *a, char *why, size_t cap) {
    struct kvmux_migr *m = a->m;
    const kvmux_migrec *r = a->rec;
    for (uint32_t round = 0;; round++) {
        kvmux_migout_info mi;
        out_info(m, &mi);
        if (mi.state != KVMUX_MIGOUT_COPYING || mi.id != r->id) return -1;
        if (mi.overflow) {
            snprintf(why, cap, "dirty set overflow: writes to slots %u-%u outpace the copy",
                     r->first, r->last);
            return 1;
        }
        if (mi.dirty_keys <= FENCE_KEYS && mi.dirty_bytes <= FENCE_BYTES) return 0;
        if (round == MAX_ROUNDS) {
            /* The fenced window lasts as long as the final delta: values
             * count (the record's key bytes cannot pass 16 MiB anyway,
             * the overflow above ends the move first). */
            uint64_t delta;
            if (delta_bytes(a, &delta) != 0) return -1;
            if (delta <= LAST_ROUND_BYTES) return 0;
            snprintf(why, cap, "writes to slots %u-%u outpace the copy (%u dirty keys, %llu "
                     "bytes with their values after %u rounds)", r->first, r->last,
                     mi.dirty_keys, (unsigned long long)delta, MAX_ROUNDS);
            return 1;
        }
        uint8_t v[4];
        uint32_t n = mi.gen;
        size_t vl = kvmux_migout_n_value(v, n);
        hand_step(m, r->id, KVMUX_MIGSTEP_OUT_CUT, v, vl);
        if (wait_for(m, gen_above, (uint64_t)r->id << 32 | n) != 0) return -1;
        if (copy_dirty(a, n) != 0) return -1;
        hand_step(m, r->id, KVMUX_MIGSTEP_OUT_DRAINED, v, vl);
        if (wait_for(m, drained, (uint64_t)r->id << 32 | n) != 0) return -1;
        atomic_fetch_add(&m->rounds, 1);
        a->rounds++;
    }
}

/* ---- the source's steps ---- */

/* Whether our applied map gives every slot of first..last to us. */
static int owns_range(struct kvmux_migr *m, uint16_t first, uint16_t last) {
    kvmux_fsm_cluster *cl = cluster(m);
    for (uint32_t s = first; s <= last; s++)
        if (kvmux_fsm_cluster_route(cl, (uint16_t)s, NULL) != KVMUX_ROUTE_OWN) return 0;
    return 1;
}

/* import-begin to B with our term: 0 with a->bseq set from B's answer,
 * 1 (B refused it for good: an ABORT is needed, *why), or -1. */
static int begin_import(attempt *a, char *why, size_t cap) {
    const kvmux_migrec *r = a->rec;
    uint8_t v[18], *msg = NULL;
    size_t n = 0;
    kvmux_store_u32be(v, r->id);
    kvmux_store_u16be(v + 4, r->first);
    kvmux_store_u16be(v + 6, r->last);
    kvmux_store_u16be(v + 8, a->m->group);
    kvmux_store_u64be(v + 10, a->term);
    int rc = kvmux_mapc_call(a->b, "import-begin", v, sizeof v, BEGIN_CALL_MS, (int)TICK_MS,
                             attempt_go, a, &msg, &n);
    if (rc == KVMUX_MAPC_OK && n == 12 && kvmux_load_u64be(msg) == a->term) {
        /* Batches of this term already applied (a thread restarted within
         * one term): continue after them. */
        a->bseq = kvmux_load_u32be(msg + 8);
        free(msg);
        progress *p = &a->m->prog;
        if (a->bseq < p->bseq) {
            /* B no longer holds batches it acknowledged in this term (its
             * incoming record was dropped and begun again): walk R again. */
            p->cursor = 0;
            p->pass_begun = p->pass_done = 0;
        }
        /* Not progress for the stall timer: a B that answers import-begin
         * but refuses every batch is stalled. */
        p->bseq = a->bseq;
        return 0;
    }
    if (rc == KVMUX_MAPC_BADREQ) {
        snprintf(why, cap, "group %u refused import-begin: %s", r->dst,
                 msg ? (const char *)msg : "bad request");
        free(msg);
        return 1;
    }
    /* VERSION_MISMATCH or a higher min_term: a newer leader of ours has
     * begun (we are about to learn we are deposed); BUSY: B is purging. */
    note(a->m, r->id, "import-begin", rc == KVMUX_MAPC_OK ? KVMUX_MAPC_VERSION : rc, msg);
    free(msg);
    return -1;
}

/* The map group's current map (malloc'ed bytes, decoded into *epoch).
 * 0, or -1. */
static int fetch_map(struct kvmux_migr *m, kvmux_mapc *mc, uint32_t id, uint8_t **out,
                     size_t *len, uint64_t *epoch) {
    int rc = kvmux_mapc_call(mc, "map", NULL, 0, CALL_MS, (int)TICK_MS, leading, m, out, len);
    kvmux_map *mp = rc == KVMUX_MAPC_OK ? malloc(sizeof *mp) : NULL;
    if (mp && kvmux_map_decode(mp, *out, *len, NULL, 0) == 0) {
        *epoch = mp->epoch;
        free(mp);
        return 0;
    }
    free(mp);
    note(m, id, "reading the map group's map", rc, rc == KVMUX_MAPC_OK ? NULL : *out);
    free(*out);
    *out = NULL;
    return -1;
}

/* Steps 8 and 9: the committed map (epoch end or a later one) to B
 * (setmap), then to us through our log; the fence's length is measured to
 * our apply. 0, or -1. */
static int push_maps(struct kvmux_migr *m, kvmux_mapc *mc, const kvmux_migrec *r,
                     uint64_t end) {
    uint8_t *map = NULL, *msg = NULL;
    size_t n = 0;
    uint64_t epoch = 0;
    if (fetch_map(m, mc, r->id, &map, &n, &epoch) != 0) return -1;
    if (epoch < end) { /* a lagging member of the map group answered */
        note(m, r->id, "reading the committed map", 0, NULL);
        free(map);
        return -1;
    }
    int rc = -1;
    kvmux_mapc *b = open_group(m, r->id, r->dst);
    if (b) {
        /* VERSION_MISMATCH: B already has this map or a newer one. */
        rc = kvmux_mapc_call(b, "setmap", map, n, CALL_MS, (int)TICK_MS, leading, m, &msg, NULL);
        if (rc != KVMUX_MAPC_OK && rc != KVMUX_MAPC_VERSION) note(m, r->id, "setmap on the target", rc, msg);
        else rc = 0;
        free(msg);
        kvmux_mapc_close(b);
    }
    if (rc == 0 && applied_epoch(m) < epoch &&
        (hand_map(m, map, n) != 0 || wait_for(m, epoch_at, epoch) != 0)) {
        note(m, r->id, "installing the committed map here", 0, NULL);
        rc = -1;
    }
    free(map);
    if (rc == 0 && m->fence_id == r->id) {
        uint64_t ms = kvmux_clock_ms() - m->fence_ms;
        atomic_store(&m->fence_ms_last, ms);
        if (ms > atomic_load(&m->fence_ms_max)) atomic_store(&m->fence_ms_max, ms);
        m->fence_id = 0;
        KVMUX_LOG_I("migration %u: map epoch %llu installed here: slots %u-%u fenced %llu ms",
                    r->id, (unsigned long long)epoch, r->first, r->last, (unsigned long long)ms);
    }
    return rc;
}

/* migrate-commit: 0 committed (*epoch: the map epoch it installed, from
 * the answer "migration ID committed at epoch E"), 1 the record was
 * aborted, -1 retry. */
static int commit(struct kvmux_migr *m, kvmux_mapc *mc, uint32_t id, uint64_t *epoch) {
    uint8_t v[4], *msg = NULL;
    kvmux_store_u32be(v, id);
    int rc = kvmux_mapc_call(mc, "migrate-commit", v, 4, CALL_MS, (int)TICK_MS, in_time, m,
                             &msg, NULL);
    const char *at = rc == KVMUX_MAPC_OK && msg ? strstr((const char *)msg, " at epoch ") : NULL;
    *epoch = at ? strtoull(at + 10, NULL, 10) : 0;
    if (rc == KVMUX_MAPC_OK && m->committed_id != id) {
        m->committed_id = id;
        atomic_fetch_add(&m->commits, 1);
    }
    if (rc != KVMUX_MAPC_OK) note(m, id, "migrate-commit", rc, msg);
    free(msg);
    return rc == KVMUX_MAPC_OK ? 0 : rc == KVMUX_MAPC_VERSION ? 1 : -1;
}

/* OUT_BEGIN if there is no outgoing record yet. 0 (ours exists), 1 (an
 * ABORT is needed: R is not ours), -1 (not now). */
static int begin_out(struct kvmux_migr *m, const kvmux_migrec *r) {
    kvmux_migout_info mi;
    out_info(m, &mi);
    if (mi.state != KVMUX_MIGOUT_NONE) return mi.id == r->id ? 0 : -1; /* another one ends first */
    if (!owns_range(m, r->first, r->last)) return 1;
    uint8_t v[14];
    size_t n = kvmux_migout_begin_value(v, r->first, r->last, r->dst, r->start_epoch);
    hand_step(m, r->id, KVMUX_MIGSTEP_OUT_BEGIN, v, n);
    if (wait_for(m, out_is, (uint64_t)r->id << 8 | KVMUX_MIGOUT_COPYING) != 0) {
        note(m, r->id, "OUT_BEGIN", 0, NULL);
        return -1;
    }
    m->begun_id = r->id;
    KVMUX_LOG_I("migration %u: copying slots %u-%u to group %u", r->id, r->first, r->last, r->dst);
    return 0;
}

/* Take r over for this term: the progress kept for another migration or
 * an earlier term is forgotten (8.1: a new term walks R again), and the
 * timers start now (a leader that finds R fenced counts the fence
 * timeout from when it took over: 8.2). */
static void take_over(struct kvmux_migr *m, const kvmux_migrec *r) {
    progress *p = &m->prog;
    uint64_t term = kvmux__repl_term(m->srv);
    if (p->id != r->id || p->term != term) {
        memset(p, 0, sizeof *p);
        p->id = r->id;
        p->term = term;
        p->since_ms = kvmux_clock_ms();
    }
    /* Fenced, and not seen so by this term yet (taken over fenced, or an
     * attempt stopped waiting for the fence's apply): the fence timer. */
    kvmux_migout_info mi;
    out_info(m, &mi);
    if (mi.state == KVMUX_MIGOUT_FENCED && mi.id == r->id && !p->fence_ms)
        p->fence_ms = kvmux_clock_ms();
}

/* Whether a timeout of 8.2 has fired for the migration taken over: then
 * *why is the ABORT's reason (its last failure). Counted once a term;
 * from then on this term only asks ABORT. */
static int timed_out(struct kvmux_migr *m, char *why, size_t cap) {
    progress *p = &m->prog;
    if (!p->timed_out) {
        if (kvmux_clock_ms() < deadline(m)) return 0;
        p->timed_out = p->fence_ms ? 2 : 1;
        atomic_fetch_add(&m->timeouts, 1);
        KVMUX_LOG_W("migration %u: %s after %u ms: %s", p->id,
                    p->timed_out == 2 ? "not committed" : "no import answered OK",
                    p->timed_out == 2 ? m->fence_timeout_ms : m->stall_ms,
                    p->err[0] ? p->err : "no answer");
    }
    snprintf(why, cap, "%s: %s", p->timed_out == 2 ? "fence timeout" : "stalled",
             p->err[0] ? p->err : "no answer");
    return 1;
}

/* Copy, drain, fence and send the final delta over a->b. 0, 1 (an ABORT
 * is needed: *why), -1. */
static int copy_and_fence(attempt *a, char *why, size_t cap) {
    struct kvmux_migr *m = a->m;
    const kvmux_migrec *r = a->rec;
    progress *p = &m->prog;
    kvmux_migout_info mi;
    out_info(m, &mi);
    if (mi.state == KVMUX_MIGOUT_COPYING) {
        /* A pass begun from the start for a migration whose pass this
         * thread began before (an earlier term), or whose record it did
         * not create (a previous leader's), is a restart; a pass resumed
         * within a term is not. */
        if (!p->pass_begun && (m->pass_id == r->id || m->begun_id != r->id))
            atomic_fetch_add(&m->restarts, 1);
        m->pass_id = r->id;
        p->pass_begun = 1;
        if (!p->pass_done && bulk_pass(a) != 0) goto failed;
        int rc = drain(a, why, cap);
        if (rc == 1) return 1;
        if (rc != 0) goto failed;
        hand_step(m, r->id, KVMUX_MIGSTEP_OUT_FENCE, NULL, 0);
        if (wait_for(m, out_is, (uint64_t)r->id << 8 | KVMUX_MIGOUT_FENCED) != 0) return -1;
        m->fence_id = r->id;
        m->fence_ms = p->fence_ms = kvmux_clock_ms();
        KVMUX_LOG_I("migration %u: slots %u-%u fenced after %u rounds", r->id, r->first, r->last,
                    a->rounds);
    } else if (m->fence_id != r->id) {
        /* Found fenced (a failover): the window is counted from now. */
        m->fence_id = r->id;
        m->fence_ms = kvmux_clock_ms();
    }
    if (!p->fence_ms) p->fence_ms = kvmux_clock_ms();
    if (copy_dirty(a, 0) == 0) return 0;
failed:
    if (a->too_big && a->big_max) {
        snprintf(why, cap, "a value in slots %u-%u does not fit one import request: its batch "
                 "of %zu bytes exceeds --max-value %zu", r->first, r->last, a->big_len,
                 a->big_max);
        return 1;
    }
    if (a->too_big) {
        snprintf(why, cap, "a value in slots %u-%u does not fit one import request: its batch "
                 "of %zu bytes is over the target's limits (TOO_LARGE)", r->first, r->last,
                 a->big_len);
        return 1;
    }
    return -1;
}

/* One attempt at the copy, from import-begin to the final delta. 0 (ready
 * to commit), 1 (an ABORT is needed: *why), -1 (failed: retried). */
static int attempt_move(struct kvmux_migr *m, const kvmux_migrec *r, char *why, size_t cap) {
    attempt a;
    memset(&a, 0, sizeof a);
    a.m = m;
    a.rec = r;
    a.term = m->prog.term;
    if (!(a.buf = malloc(BATCH_CAP))) return -1;
    a.cap = BATCH_CAP;
    batch_reset(&a);
    int rc = -1;
    if ((a.b = open_group(m, r->id, r->dst)) != NULL) {
        rc = begin_import(&a, why, cap);
        if (rc == 0) rc = copy_and_fence(&a, why, cap);
        kvmux_mapc_close(a.b);
    }
    free(a.buf);
    free(a.keys_buf);
    return rc;
}

/* Ask ABORT; the answer sets r's state (ABORTED, or COMMITTED when the
 * COMMIT won). 1 when not answered (r still OPEN), else 0. */
static int abort_asked(struct kvmux_migr *m, kvmux_mapc *mc, kvmux_migrec *r,
                       const char *why) {
    uint64_t end = 0;
    int rc = ask_abort(m, mc, r, why, &end);
    if (rc == 0) r->state = KVMUX_MIG_ABORTED;
    if (rc == 1) {
        /* Our COMMIT was applied, its answer lost or given up on: it is
         * this leader's (or an earlier one's) commit all the same. */
        KVMUX_LOG_I("migration %u: it committed before the abort (epoch %llu)", r->id,
                    (unsigned long long)end);
        if (m->committed_id != r->id) {
            m->committed_id = r->id;
            atomic_fetch_add(&m->commits, 1);
        }
        r->state = KVMUX_MIG_COMMITTED;
        r->end_epoch = end;
    }
    return rc < 0;
}

/* An OPEN record whose source we are: the whole move, from whatever
 * state our log holds. Returns 1 while r is still open (the caller polls;
 * a failure is retried the next round), 0 when the map group answered its
 * outcome (r->state, r->end_epoch set from the answer). */
static int drive(struct kvmux_migr *m, kvmux_mapc *mc, kvmux_migrec *r) {
    char why[KVMUX_MIG_REASON_MAX + 1];
    if (applied_epoch(m) < r->start_epoch) return 1; /* the watcher brings it */
    take_over(m, r);
    int rc = timed_out(m, why, sizeof why) ? 1 : begin_out(m, r);
    if (rc == 1 && !m->prog.timed_out)
        snprintf(why, sizeof why, "group %u does not own slots %u-%u at epoch %llu", m->group,
                 r->first, r->last, (unsigned long long)applied_epoch(m));
    if (rc == 0) rc = attempt_move(m, r, why, sizeof why);
    if (rc == -1 && timed_out(m, why, sizeof why)) rc = 1;
    if (rc == 1) return abort_asked(m, mc, r, why);
    if (rc != 0) return 1;
    uint64_t end = 0;
    rc = commit(m, mc, r->id, &end);
    if (rc == 0) {
        KVMUX_LOG_I("migration %u committed at epoch %llu (%llu ms after the fence)", r->id,
                    (unsigned long long)end,
                    (unsigned long long)(kvmux_clock_ms() - m->prog.fence_ms));
        r->state = KVMUX_MIG_COMMITTED;
        r->end_epoch = end;
        return 0;
    }
    if (rc == 1) { /* "was aborted": the ABORT came first */
        KVMUX_LOG_I("migration %u: the COMMIT came after its abort: continuing as aborted",
                    r->id);
        r->state = KVMUX_MIG_ABORTED;
        return 0;
    }
    return timed_out(m, why, sizeof why) ? abort_asked(m, mc, r, why) : 1;
}

/* OUT_ABORT for r (unfences R, drops the dirty set). 0 once applied. */
static int unfence(struct kvmux_migr *m, const kvmux_migrec *r) {
    hand_step(m, r->id, KVMUX_MIGSTEP_OUT_ABORT, NULL, 0);
    if (wait_for(m, out_is, (uint64_t)r->id << 8 | KVMUX_MIGOUT_NONE) != 0) return -1;
    if (m->aborted_id != r->id) atomic_fetch_add(&m->aborts, 1);
    m->aborted_id = r->id;
    KVMUX_LOG_I("migration %u aborted: slots %u-%u served here again", r->id, r->first, r->last);
    return 0;
}

/* A record naming us as its source. 1 when it still needs us. */
static int as_source(struct kvmux_migr *m, kvmux_mapc *mc, const kvmux_migrec *rec) {
    kvmux_migrec r = *rec; /* drive() updates it from the map group's answers */
    if (r.state == KVMUX_MIG_OPEN && drive(m, mc, &r)) return 1;
    kvmux_migout_info mi;
    out_info(m, &mi);
    int ours = mi.state != KVMUX_MIGOUT_NONE && mi.id == r.id;
    switch (r.state) {
    case KVMUX_MIG_COMMITTED:
        /* Our record goes when our log applies the committed map. */
        if (ours) {
            (void)push_maps(m, mc, &r, r.end_epoch);
            return 1;
        }
        break;
    case KVMUX_MIG_ABORTED:
        if (ours && unfence(m, &r) != 0) return 1;
        break;
    default:
        return 0;
    }
    if (r.acks & KVMUX_MIG_ACK_SRC) return 0;
    /* Committed: the janitor deletes R's keys here first (our count for R
     * reaches 0). Aborted: R is ours again, nothing to wait for. */
    if (r.state == KVMUX_MIG_COMMITTED &&
        kvmux_store_range_keys(m->srv->store, r.first, r.last) > 0)
        return 1;
    return ack(m, mc, r.id) == KVMUX_MAPC_OK ? 0 : 1;
}

/* A record naming us as its target. 1 when it still needs us. */
static int as_target(struct kvmux_migr *m, kvmux_mapc *mc, const kvmux_migrec *r) {
    if (r->state == KVMUX_MIG_OPEN) return 0;
    /* Aborted: our incoming record goes, even after our ack -- a source
     * attempt begun before it read ABORTED may send import-begin late and
     * create the record again. */
    if (r->state == KVMUX_MIG_ABORTED && !in_gone(m, r->id)) {
        hand_step(m, r->id, KVMUX_MIG_IN_ABORT, NULL, 0);
        if (wait_for(m, in_gone, r->id) != 0) return 1;
        KVMUX_LOG_I("migration %u aborted: imported keys of slots %u-%u are purged", r->id,
                    r->first, r->last);
    }
    if (r->acks & KVMUX_MIG_ACK_DST) return 0;
    if (r->state == KVMUX_MIG_COMMITTED) {
        if (applied_epoch(m) < r->end_epoch) return 1; /* the watcher or A's push brings it */
    } else if (kvmux_store_range_keys(m->srv->store, r->first, r->last) > 0) {
        return 1; /* the janitor purges what was imported (R is not ours) */
    }
    return ack(m, mc, r->id) == KVMUX_MAPC_OK ? 0 : 1;
}

/* One pass over the table: 1 when a record naming us still needs a step
 * (poll again soon). */
static int on_table(struct kvmux_migr *m, kvmux_mapc *mc, const kvmux_migtab *t) {
    int busy = 0;
    for (uint16_t i = 0; i < t->n && leading(m); i++) {
        const kvmux_migrec *r = &t->rec[i];
        if (r->src == m->group) busy |= as_source(m, mc, r);
        else if (r->dst == m->group) busy |= as_target(m, mc, r);
    }
    return busy;
}

/* mwatch above mgen, parked up to wait_ms: 0 with *t, or a failure. */
static int watch_table(struct kvmux_migr *m, kvmux_mapc *mc, uint64_t mgen, uint32_t wait_ms,
                       kvmux_migtab *t) {
    uint8_t v[12], *out = NULL;
    size_t n = 0;
    char err[128];
    kvmux_store_u64be(v, mgen);
    kvmux_store_u32be(v + 8, wait_ms);
    int rc = kvmux_mapc_call(mc, "mwatch", v, sizeof v, (int)wait_ms + WATCH_SLACK_MS,
                             (int)TICK_MS, leading, m, &out, &n);
    if (rc == KVMUX_MAPC_OK && kvmux_migtab_decode(t, out, n, err, sizeof err) != 0) {
        KVMUX_LOG_W("migrations: the map group answered a bad table: %s", err);
        rc = KVMUX_MAPC_BADREQ;
    }
    if (rc != KVMUX_MAPC_OK && rc != KVMUX_MAPC_GAVEUP) note(m, 0, "mwatch", rc, out);
    free(out);
    return rc;
}

static void *migr_main(void *arg) {
    struct kvmux_migr *m = arg;
    kvmux_mapc *mc = NULL;
    kvmux_migtab *t = malloc(sizeof *t); /* ~25 KiB */
    uint64_t mgen = 0;
    uint32_t backoff = BACKOFF_MIN_MS;
    int busy = 0;
    if (!t) KVMUX_LOG_E("migrate thread: out of memory: slot migrations will not move");
    while (t && !stopping(m)) {
        if (!kvmux__repl_is_leader(m->srv)) {
            /* Followers learn every step from the log; only the leader acts. */
            kvmux_mapc_close(mc);
            mc = NULL;
            mgen = 0;
            nap(m, TICK_MS);
            continue;
        }
        int rc = 0;
        if (!mc && (rc = kvmux__mapwatch_connect(m->srv, NULL, "kvmuxd-migrate", &mc)) != 0) {
            note(m, 0, "connecting to the map group", rc, NULL);
            mc = NULL;
        }
        if (rc == 0) rc = watch_table(m, mc, mgen, busy ? BUSY_WAIT_MS : IDLE_WAIT_MS, t);
        if (rc == KVMUX_MAPC_OK) {
            mgen = t->mgen;
            busy = on_table(m, mc, t);
            backoff = BACKOFF_MIN_MS;
            continue;
        }
        if (rc == KVMUX_MAPC_GAVEUP) continue;
        if (mc && kvmux_mapc_fatal(rc)) {
            kvmux_mapc_close(mc);
            mc = NULL;
        }
        nap(m, backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    kvmux_mapc_close(mc);
    free(t);
    return NULL;
}

int kvmux__migrate_start(kvmux_server *s, const kvmux_server_config *cfg, char *err,
                         size_t errlen) {
    if (!cfg->migrate_thread || !s->mapw || !s->repl || !cfg->cluster_group) return 0;
    struct kvmux_migr *m = calloc(1, sizeof *m);
    if (!m) return snprintf(err, errlen, "out of memory"), -1;
    m->srv = s;
    m->group = (uint16_t)cfg->cluster_group;
    m->stall_ms = cfg->migrate_stall_timeout_ms;
    m->fence_timeout_ms = cfg->migrate_fence_timeout_ms;
    pthread_mutex_init(&m->mu, NULL);
    s->migr = m; /* before the thread: loop 0 and STATS find it */
    if (pthread_create(&m->thread, NULL, migr_main, m) != 0) {
        s->migr = NULL;
        pthread_mutex_destroy(&m->mu);
        free(m);
        return snprintf(err, errlen, "cannot start the migrate thread: %s", strerror(errno)), -1;
    }
    m->started = 1;
    return 0;
}

void kvmux__migrate_stop(kvmux_server *s) {
    struct kvmux_migr *m = s->migr;
    if (!m) return;
    atomic_store(&m->stop, 1);
    if (m->started) pthread_join(m->thread, NULL);
    s->migr = NULL;
    pthread_mutex_destroy(&m->mu);
    free(m->map);
    free(m);
}

void kvmux__migrate_stats(kvmux_server *s, void *o,
                          void (*u64line)(void *o, const char *name, uint64_t v)) {
    struct kvmux_migr *m = s->migr;
    static const char *const names[] = {"migrate_rounds", "migrate_keys_sent",
                                        "migrate_bytes_sent", "migrate_batches_sent",
                                        "migrate_restarts", "migrate_fence_ms_last",
                                        "migrate_fence_ms_max", "migrate_commits",
                                        "migrate_aborts", "migrate_timeouts"};
    uint64_t v[10] = {0};
    if (m) {
        v[0] = atomic_load(&m->rounds);
        v[1] = atomic_load(&m->keys_sent);
        v[2] = atomic_load(&m->bytes_sent);
        v[3] = atomic_load(&m->batches_sent);
        v[4] = atomic_load(&m->restarts);
        v[5] = atomic_load(&m->fence_ms_last);
        v[6] = atomic_load(&m->fence_ms_max);
        v[7] = atomic_load(&m->commits);
        v[8] = atomic_load(&m->aborts);
        v[9] = atomic_load(&m->timeouts);
    }
    for (int i = 0; i < 10; i++) u64line(o, names[i], v[i]);
}
