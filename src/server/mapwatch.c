/* The map group, server side (docs/CLUSTER.md "The map group").
 *
 * Two halves:
 *
 * 1. CLUSTER watch (any cluster node, but meant for the map group): a
 *    request whose value is u64 epoch [u32 wait_ms] is parked on its
 *    connection's loop until this replica's applied map has a higher
 *    epoch, then answered OK with the map's bytes; when its wait ends
 *    (min(wait_ms, its DEADLINE, --max-wait)) it gets the map as it is
 *    (or NOT_FOUND when none is installed). Leader only, so a watcher is
 *    never held back by a lagging follower. The applier wakes every loop
 *    when it installs a map (replicate.c map_installed), so a parked watch
 *    costs nothing until then; each loop's next timeout covers the
 *    earliest end.
 *
 * 2. The watcher (a data group started with --cluster-map ENDPOINTS): one
 *    thread that, while this replica leads its group, holds a libkvmux
 *    client in endpoints mode on the map group and sends CLUSTER watch
 *    with the group's applied epoch. A newer map is handed to loop 0,
 *    which appends it to its next entry as the ordinary MAP command
 *    (0xF3), so followers learn it from the log exactly as for a pushed
 *    map; the thread then waits until the group has applied it. A new
 *    leader's watcher starts from its applied epoch; a crash anywhere is
 *    harmless since installing is idempotent and fenced by epoch. The
 *    thread only ever blocks itself (futures waited 100 ms at a time):
 *    loops never wait for the map group.
 *
 * Threads: the watch half runs on loop threads; the watcher on its own,
 * talking to loop 0 through mapw->mu + a wake. STATS reads atomics. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "mapclient.h"
#include "monotime.h"
#include "config.h"
#include "server_internal.h"

#include "fsm.h"
#include "../cluster/cluster.h"

/* What the watcher asks for: park up to WATCH_WAIT_MS on the map group;
 * the client's own timeout leaves WATCH_SLACK_MS for the answer to come
 * back after that. */
#define WATCH_WAIT_MS 5000u
#define WATCH_SLACK_MS 3000
/* How long a map handed to the log may take to be applied before the
 * watcher counts an error and hands it over again. */
#define INSTALL_WAIT_MS 5000u
/* Backoff after a failed connect or watch: doubles from MIN to MAX. */
#define BACKOFF_MIN_MS 100u
#define BACKOFF_MAX_MS 2000u
/* Granularity of the watcher's checks (stop, leadership). */
#define TICK_MS 100u
#define CONNECT_TIMEOUT_MS 1000

/* ---- 1. parked watches (loop threads) ---- */

struct kvmux_mwatch {
    struct kvmux_mwatch *next;
    kvmux_conn *conn;          /* NULL once the connection is gone */
    uint32_t request_id;
    uint64_t epoch;            /* answer once the applied epoch exceeds it */
    uint64_t end;              /* loop ms */
    int mgen;                  /* 1: CLUSTER mwatch (epoch is an mgen; migreq.c) */
};

static uint64_t applied_epoch(kvmux_server *s) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(s);
    return cl ? atomic_load(&cl->epoch) : 0;
}

/* What a watch of this kind waits on: the applied epoch, or the
 * migration table's mgen. */
static uint64_t watched(kvmux_server *s, int mgen) {
    return mgen ? kvmux__migreq_mgen(s) : applied_epoch(s);
}

static void watch_answer(kvmux_conn *c, uint32_t id, int mgen) {
    if (mgen) kvmux__migreq_respond_table(c, id);
    else kvmux__cluster_respond_map(c, id);
}

int kvmux__mapwatch_request(kvmux_conn *c, const kvmux_frame *f) {
    return kvmux__mapwatch_park(c, f, 0);
}

int kvmux__mapwatch_park(kvmux_conn *c, const kvmux_frame *f, int mgen) {
    kvmux_loop *l = c->loop;
    if (f->value_len != 8 && f->value_len != 12) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            mgen ? "mwatch takes u64 mgen [u32 wait_ms] (8 or 12 bytes)"
                                 : "watch takes u64 epoch [u32 wait_ms] (8 or 12 bytes)");
        return 0;
    }
    if (!kvmux__repl_is_leader(l->srv)) {
        kvmux__repl_respond_not_leader(c, f->request_id);
        return 0;
    }
    uint64_t epoch = kvmux_load_u64be(f->value);
    uint32_t wait = c->lim.max_wait_ms;
    if (f->value_len == 12 && kvmux_load_u32be(f->value + 8) < wait)
        wait = kvmux_load_u32be(f->value + 8);
    if (kvmux_frame_has_deadline(f) && f->deadline_ms < wait) wait = f->deadline_ms;
    if (watched(l->srv, mgen) > epoch || wait == 0 || l->phase != KVMUX_LOOP_RUNNING) {
        watch_answer(c, f->request_id, mgen);
        return 0;
    }
    struct kvmux_mwatch *w = calloc(1, sizeof *w);
    if (!w) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return 0;
    }
    w->conn = c;
    w->request_id = f->request_id;
    w->epoch = epoch;
    w->end = l->now + wait;
    w->mgen = mgen;
    w->next = l->mwatch;
    l->mwatch = w;
    c->nrepl++;
    return 1;
}

/* Answer l's watches that are done: a newer map, their end, or l
 * draining; drop those whose connection went. */
static void watches_check(kvmux_loop *l) {
    if (!l->mwatch) return;
    uint64_t epoch = applied_epoch(l->srv), mgen = kvmux__migreq_mgen(l->srv);
    struct kvmux_mwatch **pp = &l->mwatch;
    while (*pp) {
        struct kvmux_mwatch *w = *pp;
        kvmux_conn *c = w->conn;
        if (c && (w->mgen ? mgen : epoch) <= w->epoch && l->now < w->end &&
            l->phase == KVMUX_LOOP_RUNNING) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (c) {
            c->nrepl--;
            watch_answer(c, w->request_id, w->mgen);
            kvmux_session_request_end(&c->sess);
            kvmux__conn_maybe_finish_drain(c);
        }
        free(w);
    }
}

uint64_t kvmux__mapwatch_next_ms(const kvmux_loop *l) {
    uint64_t next = UINT64_MAX;
    for (const struct kvmux_mwatch *w = l->mwatch; w; w = w->next)
        if (w->end < next) next = w->end;
    return next;
}

void kvmux__mapwatch_forget(kvmux_conn *c) {
    for (struct kvmux_mwatch *w = c->loop->mwatch; w; w = w->next)
        if (w->conn == c) w->conn = NULL;
}

int kvmux__mapwatch_holds(const kvmux_conn *c, uint32_t request_id) {
    for (const struct kvmux_mwatch *w = c->loop->mwatch; w; w = w->next)
        if (w->conn == c && w->request_id == request_id) return 1;
    return 0;
}

void kvmux__mapwatch_loop_deinit(kvmux_loop *l) {
    while (l->mwatch) {
        struct kvmux_mwatch *w = l->mwatch;
        l->mwatch = w->next;
        free(w);
    }
}

/* ---- 2. the watcher (its own thread) ---- */

struct kvmux_mapw {
    kvmux_server *srv;
    char *endpoints;                 /* --cluster-map, copied */
    char *tls_paths[4];              /* --cluster-map-tls: CA, cert, key,
                                        server name (copied; NULL: unset) */
    kvmux_mapc_tls tls;              /* points into tls_paths */
    char token[KVMUX_MAX_AUTH_TOKEN + 1]; /* --requirepass, sent to the map group */
    int has_token;
    pthread_t thread;
    int started;
    _Atomic int stop;
    pthread_mutex_t mu;              /* guards pending, pending_len */
    uint8_t *pending;                /* a map for loop 0 to propose (malloc) */
    size_t pending_len;
    _Atomic int has_pending;
    kvmux_map *seen_map;             /* the newest map the map group answered
                                        (malloc; under mu), for the fence */
    _Atomic uint64_t fence_epoch;    /* seen_map's epoch; 0 = none */
    uint64_t start_ms;               /* monotonic */
    /* STATS (docs/OPERATIONS.md): */
    _Atomic int watching;            /* 1 while this replica leads and watches */
    _Atomic uint64_t errors;         /* failed connects, watches and installs */
    _Atomic uint64_t seen;           /* newest epoch the map group answered */
    _Atomic uint64_t behind_since;   /* monotonic ms seen first exceeded applied; 0 */
    _Atomic uint64_t contact_ms;     /* monotonic ms of the last answer; 0 = never */
    _Atomic uint64_t handed;         /* maps handed to the group's log */
};

static int stopping(struct kvmux_mapw *w) { return atomic_load(&w->stop); }

/* Sleep ms, in TICK_MS steps, unless the watcher is stopped. */
static void nap(struct kvmux_mapw *w, uint32_t ms) {
    while (ms && !stopping(w)) {
        uint32_t step = ms < TICK_MS ? ms : TICK_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        ms -= step;
    }
}

static void note_error(struct kvmux_mapw *w, const char *what, int rc) {
    uint64_t n = atomic_fetch_add(&w->errors, 1) + 1;
    /* The first error and then one in 64: a map group down for an hour
     * must not fill the log. */
    if (n == 1 || n % 64 == 0)
        KVMUX_LOG_W("cluster map: %s failed: %s (%llu errors so far)", what,
                    rc == -1 ? "not applied in time" : kvmux_mapc_strerror(rc), (unsigned long long)n);
}

static int keep_watching(void *ud) {
    struct kvmux_mapw *w = ud;
    return !stopping(w) && kvmux__repl_is_leader(w->srv);
}

/* Hand map p[0..n) to loop 0 (it proposes it as a MAP command), then wait
 * until the group applied epoch (or a newer one). Returns 0, or -1 (not
 * applied within INSTALL_WAIT_MS, or leadership lost, or stopping). */
static int install(struct kvmux_mapw *w, const uint8_t *p, size_t n, uint64_t epoch) {
    uint8_t *copy = malloc(n);
    if (!copy) return -1;
    memcpy(copy, p, n);
    pthread_mutex_lock(&w->mu);
    free(w->pending);
    w->pending = copy;
    w->pending_len = n;
    atomic_store(&w->has_pending, 1);
    pthread_mutex_unlock(&w->mu);
    atomic_fetch_add(&w->handed, 1);
    kvmux__loop_wake(&w->srv->loops[0]);
    for (uint32_t waited = 0; waited < INSTALL_WAIT_MS; waited += 10) {
        if (applied_epoch(w->srv) >= epoch) return 0;
        if (stopping(w) || !kvmux__repl_is_leader(w->srv)) return -1;
        nap(w, 10);
    }
    return -1;
}

/* The answer to a watch: note the map group's epoch and install a newer
 * map. Returns 0, or -1 (a bad map, or the install did not happen). */
static int on_map(struct kvmux_mapw *w, const uint8_t *p, size_t n, uint64_t applied) {
    kvmux_map *m = malloc(sizeof *m); /* ~150 KiB: not on the stack */
    char err[128];
    if (!m || kvmux_map_decode(m, p, n, err, sizeof err) != 0) {
        if (m) KVMUX_LOG_W("cluster map: the map group answered a bad map: %s", err);
        free(m);
        return -1;
    }
    uint64_t epoch = m->epoch;
    if (epoch > atomic_load(&w->seen)) atomic_store(&w->seen, epoch);
    if (epoch <= applied) {
        free(m);
        return 0;
    }
    /* The fence: from now until the group applies it, this leader serves
     * no slot the newer map takes away (kvmux__mapwatch_fenced). */
    pthread_mutex_lock(&w->mu);
    kvmux_map *old = w->seen_map;
    w->seen_map = m;
    atomic_store(&w->fence_epoch, epoch);
    pthread_mutex_unlock(&w->mu);
    free(old);
    if (atomic_load(&w->behind_since) == 0) atomic_store(&w->behind_since, kvmux_clock_ms());
    if (install(w, p, n, epoch) != 0) return -1;
    KVMUX_LOG_I("cluster map: epoch %llu installed from the map group",
                (unsigned long long)epoch);
    return 0;
}

static void *watcher_main(void *arg) {
    struct kvmux_mapw *w = arg;
    kvmux_mapc *cl = NULL;
    uint32_t backoff = BACKOFF_MIN_MS;
    while (!stopping(w)) {
        uint64_t applied = applied_epoch(w->srv);
        if (applied >= atomic_load(&w->seen)) atomic_store(&w->behind_since, 0);
        if (!kvmux__repl_is_leader(w->srv)) {
            /* Followers learn maps from the log; only the leader watches. */
            atomic_store(&w->watching, 0);
            kvmux_mapc_close(cl);
            cl = NULL;
            nap(w, TICK_MS);
            continue;
        }
        atomic_store(&w->watching, 1);
        int rc = cl ? 0 : kvmux_mapc_open(&cl, w->endpoints, w->has_token ? w->token : NULL,
                                          &w->tls, CONNECT_TIMEOUT_MS);
        const char *what = rc ? "connecting to the map group" : "watching the map group";
        uint8_t *map = NULL;
        size_t n = 0;
        if (rc == 0)
            rc = kvmux_mapc_watch(cl, applied, WATCH_WAIT_MS, WATCH_SLACK_MS, TICK_MS,
                                  keep_watching, w, &map, &n);
        if (rc == KVMUX_MAPC_OK || rc == KVMUX_MAPC_NOTFOUND)
            atomic_store(&w->contact_ms, kvmux_clock_ms());
        if (rc == KVMUX_MAPC_OK && on_map(w, map, n, applied) != 0) {
            what = "installing the map group's map";
            rc = -1;
        }
        free(map);
        if (rc >= 0) { /* NOT_FOUND: the map group has no map yet */
            backoff = BACKOFF_MIN_MS;
            continue;
        }
        note_error(w, what, rc);
        if (cl && kvmux_mapc_fatal(rc)) {
            kvmux_mapc_close(cl);
            cl = NULL;
        }
        nap(w, backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    kvmux_mapc_close(cl);
    atomic_store(&w->watching, 0);
    return NULL;
}

/* Loop 0: propose the map the watcher brought. Whether it is still newer
 * is the applier's to decide (an older or equal epoch is not installed),
 * so a map proposed twice, or after a direct push, does no harm. */
static void propose_pending(kvmux_loop *l, struct kvmux_mapw *w) {
    if (!atomic_load_explicit(&w->has_pending, memory_order_acquire)) return;
    pthread_mutex_lock(&w->mu);
    uint8_t *p = w->pending;
    size_t n = w->pending_len;
    w->pending = NULL;
    atomic_store(&w->has_pending, 0);
    pthread_mutex_unlock(&w->mu);
    /* Failure (no longer leader, out of memory) is the watcher's to see:
     * the epoch does not get applied and it tries again. */
    if (p) (void)kvmux__repl_propose_map(l, p, n);
    free(p);
}

void kvmux__mapwatch_iterate(kvmux_loop *l) {
    if (l->mwatch) watches_check(l);
    if (l->id == 0 && l->srv->mapw) propose_pending(l, l->srv->mapw);
}

static void mapw_free(struct kvmux_mapw *w) {
    free(w->endpoints);
    for (int i = 0; i < 4; i++) free(w->tls_paths[i]);
    memset(w->token, 0, sizeof w->token);
    free(w);
}

/* Copies of the --cluster-map-tls paths (config strings are borrowed only
 * until kvmux_server_new returns; the watcher reconnects for its whole
 * life). 0, or -1 out of memory. */
static int mapw_copy_tls(struct kvmux_mapw *w, const kvmux_server_config *cfg) {
    const char *src[4] = {kvmux_server_cluster_map_tls_path(cfg, 0),
                          kvmux_server_cluster_map_tls_path(cfg, 1),
                          kvmux_server_cluster_map_tls_path(cfg, 2),
                          cfg->cluster_map_tls ? cfg->cluster_map_tls_server_name : NULL};
    for (int i = 0; i < 4; i++)
        if (src[i] && !(w->tls_paths[i] = strdup(src[i]))) return -1;
    w->tls = (kvmux_mapc_tls){w->tls_paths[0], w->tls_paths[1], w->tls_paths[2],
                              w->tls_paths[3]};
    return 0;
}

int kvmux__mapwatch_start(kvmux_server *s, const kvmux_server_config *cfg, char *err,
                          size_t errlen) {
    const char *endpoints = cfg->cluster_map;
    if (!endpoints || !s->repl) return 0;
    struct kvmux_mapw *w = calloc(1, sizeof *w);
    if (!w || !(w->endpoints = strdup(endpoints)) || mapw_copy_tls(w, cfg) != 0) {
        if (w) mapw_free(w);
        return snprintf(err, errlen, "out of memory"), -1;
    }
    w->srv = s;
    /* The map group is reached with this server's own token (the
     * cluster's groups share one; docs/CLUSTER.md). */
    if (s->rt.auth_len && s->rt.auth_len < sizeof w->token) {
        memcpy(w->token, s->rt.auth, s->rt.auth_len);
        w->has_token = 1;
    }
    pthread_mutex_init(&w->mu, NULL);
    w->start_ms = kvmux_clock_ms();
    if (pthread_create(&w->thread, NULL, watcher_main, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        mapw_free(w);
        return snprintf(err, errlen, "cannot start the cluster map watcher: %s",
                        strerror(errno)), -1;
    }
    w->started = 1;
    s->mapw = w;
    return 0;
}

int kvmux__mapwatch_connect(kvmux_server *s, const char *endpoints, const char *name,
                            struct kvmux_client **out) {
    struct kvmux_mapw *w = s->mapw;
    if (!w) return -1;
    return kvmux_mapc_open_as(out, endpoints ? endpoints : w->endpoints,
                              w->has_token ? w->token : NULL, &w->tls, CONNECT_TIMEOUT_MS, name);
}

uint64_t kvmux__mapwatch_seen_epoch(kvmux_server *s) {
    return s->mapw ? atomic_load(&s->mapw->fence_epoch) : 0;
}

int kvmux__mapwatch_fenced(kvmux_server *s, uint16_t slot) {
    struct kvmux_mapw *w = s->mapw;
    /* The common case costs two atomic loads: no newer map seen. */
    if (!w || atomic_load(&w->fence_epoch) <= applied_epoch(s)) return 0;
    pthread_mutex_lock(&w->mu);
    int fenced = w->seen_map && w->seen_map->epoch > applied_epoch(s) &&
                 w->seen_map->owner[slot] != (uint16_t)s->cfg.cluster_group;
    pthread_mutex_unlock(&w->mu);
    return fenced;
}

void kvmux__mapwatch_stop(kvmux_server *s) {
    struct kvmux_mapw *w = s->mapw;
    if (!w) return;
    atomic_store(&w->stop, 1);
    if (w->started) pthread_join(w->thread, NULL);
    s->mapw = NULL;
    pthread_mutex_destroy(&w->mu);
    free(w->pending);
    free(w->seen_map);
    mapw_free(w);
}

void kvmux__mapwatch_stats(kvmux_server *s, void *o,
                           void (*u64line)(void *o, const char *name, uint64_t v)) {
    struct kvmux_mapw *w = s->mapw;
    if (!w) return;
    uint64_t now = kvmux_clock_ms(), applied = applied_epoch(s);
    uint64_t seen = atomic_load(&w->seen), since = atomic_load(&w->behind_since);
    uint64_t contact = atomic_load(&w->contact_ms);
    int behind = seen > applied;
    u64line(o, "cluster_map_watching", (uint64_t)atomic_load(&w->watching));
    u64line(o, "cluster_map_epoch", seen);
    u64line(o, "cluster_map_lag_epochs", behind ? seen - applied : 0);
    u64line(o, "cluster_map_lag_ms", behind && since && now > since ? now - since : 0);
    u64line(o, "cluster_map_watch_errors", atomic_load(&w->errors));
    u64line(o, "cluster_map_installs", atomic_load(&w->handed));
    u64line(o, "cluster_map_contact_age_ms",
            now - (contact ? contact : w->start_ms));
}
