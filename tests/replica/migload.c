/* migload: see migload.h. */
#include "migload.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "cluster_util.h"
#include "kvmux.h"
#include "lincheck.h"
#include "migtab.h"

#define OP_TIMEOUT_MS 10000
#define PRELOAD_DEPTH 256
#define STRIPES 256
#define TAG_MAX 24
#define PROBES 3
#define PROC_MOVER 900u
#define PROC_FINAL 901u
#define PROC_PROBE 1000u
/* One process per preload SET (kvmux-lincheck takes ids < 2^20; keys are
 * at most MIGLOAD_MAX_KEYS). */
#define PROC_PRELOAD 40000u

/* ---- the cluster ---- */

/* The members' addresses, sep between them: "," for an endpoint list,
 * " " in a map's text. */
static void addr_list(const rgroup *g, const char *sep, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < g->n && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s127.0.0.1:%u", i ? sep : "", g->cport[i]);
}

/* Every member of every data group reports cluster_epoch >= epoch. */
static int wait_epoch_all(const migload_cluster *c, uint64_t epoch, int timeout_ms) {
    for (int64_t end = test_now_ms() + timeout_ms; test_now_ms() < end; test_sleep_ms(100)) {
        int ok = 1;
        for (int g = 0; g < c->groups && ok; g++)
            for (int i = 0; i < c->data[g].n && ok; i++) {
                uint64_t e = rgroup_stat(&c->data[g], i, "cluster_epoch");
                ok = e != UINT64_MAX && e >= epoch;
            }
        if (ok) return 0;
    }
    return -1;
}

/* The even split as map text (epoch 1). */
static void map_text(const migload_cluster *c, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "epoch 1\n");
    char eps[512];
    for (int g = 0; g < c->groups; g++) {
        addr_list(&c->data[g], " ", eps, sizeof eps);
        n += (size_t)snprintf(out + n, cap - n, "group %d %s\n", g + 1, eps);
    }
    int per = (int)KVMUX_SLOTS / c->groups;
    for (int g = 0; g < c->groups; g++) {
        int first = g * per, last = g == c->groups - 1 ? (int)KVMUX_SLOTS - 1 : (g + 1) * per - 1;
        n += (size_t)snprintf(out + n, cap - n, "slots %d-%d %d\n", first, last, g + 1);
    }
}

static int install_map(migload_cluster *c) {
    static char text[8192];
    static uint8_t bytes[1 << 16];
    map_text(c, text, sizeof text);
    size_t n = cluster_map_bytes(text, bytes, sizeof bytes);
    int rc = -1;
    for (int t = 0; t < 100 && rc != 0; t++) {
        int l = rgroup_leader(&c->map, 5000);
        size_t got = 0;
        if (l >= 0) rc = cluster_call(c->map.cport[l], "setmap", bytes, n, NULL, 0, &got);
        if (rc != 0) test_sleep_ms(200);
    }
    if (rc != 0) {
        fprintf(stderr, "migload: the map group refused the map: %s\n", kvmux_strerror(rc));
        return -1;
    }
    if (wait_epoch_all(c, 1, 30000) != 0) {
        fprintf(stderr, "migload: a data group did not apply map epoch 1 in 30 s\n");
        return -1;
    }
    return 0;
}

int migload_cluster_start(migload_cluster *c, int groups, int replicas, const char *maxmemory) {
    memset(c, 0, sizeof *c);
    if (groups < 1 || groups > MIGLOAD_MAX_GROUPS || replicas < 1 || replicas > 3) {
        fprintf(stderr, "migload: groups 1..%d, replicas 1..3\n", MIGLOAD_MAX_GROUPS);
        return -1;
    }
    c->replicas = replicas;
    snprintf(c->maxmemory, sizeof c->maxmemory, "%s", maxmemory ? maxmemory : "64M");
    c->map_extra[0] = "--cluster-map-group";
    c->map_extra[1] = "--threads";
    c->map_extra[2] = "1";
    if (rgroup_start(&c->map, replicas, c->map_extra) != 0) {
        fprintf(stderr, "migload: the map group did not start\n");
        return -1;
    }
    addr_list(&c->map, ",", c->map_eps, sizeof c->map_eps);
    size_t sn = 0;
    for (int g = 0; g < groups; g++) {
        snprintf(c->gid[g], sizeof c->gid[g], "%d", g + 1);
        const char *x[] = {"--cluster-group", c->gid[g], "--cluster-map", c->map_eps,
                           "--threads", "1", "--maxmemory", c->maxmemory, NULL};
        memcpy(c->extra[g], x, sizeof x);
        if (rgroup_start(&c->data[g], replicas, c->extra[g]) != 0) {
            fprintf(stderr, "migload: data group %d did not start\n", g + 1);
            migload_cluster_stop(c);
            return -1;
        }
        c->groups = g + 1;
        char eps[512];
        addr_list(&c->data[g], ",", eps, sizeof eps);
        sn += (size_t)snprintf(c->seeds + sn, sizeof c->seeds - sn, "%s%s", g ? "," : "", eps);
    }
    int bad = rgroup_stable_leader(&c->map, 30000) < 0;
    for (int g = 0; g < groups && !bad; g++) bad = rgroup_stable_leader(&c->data[g], 30000) < 0;
    if (bad || install_map(c) != 0) {
        if (bad) fprintf(stderr, "migload: a group elected no leader in 30 s\n");
        migload_cluster_stop(c);
        return -1;
    }
    return 0;
}

void migload_cluster_stop(migload_cluster *c) {
    for (int g = 0; g < c->groups; g++) rgroup_stop(&c->data[g]);
    c->groups = 0;
    if (c->map.n) rgroup_stop(&c->map);
    c->map.n = 0;
}

void migload_config_init(migload_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->keys = 100000;
    cfg->value_size = 100;
    cfg->threads = 8;
    cfg->duration_ms = 30000;
    cfg->moves = 4;
    cfg->min_slots = cfg->max_slots = 512;
    cfg->move_gap_ms = 1000;
    cfg->move_timeout_ms = 120000;
    cfg->seed = 1;
}

/* ---- the run's state ---- */

typedef struct mkey {
    char name[16];
    uint16_t slot;
    uint8_t counter;         /* INCR and GET only; never preloaded */
} mkey;

/* The model of one key: what its one writer knows was acknowledged. */
typedef struct mstate {
    uint64_t version;        /* 0: absent */
    int64_t ctr;             /* counters: the value at version */
    uint32_t unk_incr;       /* counters: unknown INCRs that may still show */
    uint64_t acked_incr, unk_total; /* counters: for the end's sum check */
    uint8_t has_pend;        /* a SET with an unknown outcome */
    uint8_t absent;          /* an acknowledged DEL is the latest write
                                (version: the last one the key had) */
    uint8_t pend_del;        /* a DEL with an unknown outcome (sent only
                                while no other write is pending; a later
                                SET's pend comes after it) */
    uint8_t del_busy;        /* a DEL is in flight (readback leniency) */
    char tag[TAG_MAX], pend[TAG_MAX];
} mstate;

typedef struct ml ml;

typedef struct prober {
    ml *m;
    pthread_t th;
    atomic_int stop;
    uint32_t proc;
    char key[40];
    uint64_t version, seq, max_ms, fails;
    char tag[TAG_MAX], pend[TAG_MAX];
    int has_pend;
} prober;

typedef struct loader {
    ml *m;
    pthread_t th;
    int id;
    uint32_t rng;
    uint64_t seq;
    char *val;
} loader;

struct ml {
    const migload_config *cfg;
    migload_cluster *cl;
    migload_result *res;
    kvmux_client *kc;
    uint32_t nkeys;
    mkey *keys;
    mstate *model;
    uint32_t slot_start[KVMUX_SLOTS + 1];
    uint32_t *slot_keys;            /* key indexes by slot */
    uint32_t *own[MIGLOAD_MAX_THREADS];
    uint32_t nown[MIGLOAD_MAX_THREADS];
    pthread_mutex_t stripe[STRIPES];
    pthread_mutex_t hmu;
    lincheck_history *H;
    atomic_int stop_load, movers_done, active;
    atomic_uint afirst, alast;
    atomic_uint_fast64_t ops, acked, failed, unknown, model_errors, probe_failures;
    atomic_int inflight;            /* preload */
    char *preval;                   /* preload values, nkeys x value_size */
    uint16_t owner[KVMUX_SLOTS];    /* the mover's view of the map */
    uint32_t rng;                   /* the mover's */
    int64_t t0_ms;                  /* the load's start */
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint32_t rng_next(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Not processed for certain: safe to record as "not applied". */
static int definite_fail(int rc) {
    return rc == KVMUX_ETRYAGAIN || rc == KVMUX_EWRONGSHARD || rc == KVMUX_EREDIRECTS ||
           rc == KVMUX_ENOTLEADER || rc == KVMUX_ESHUTDOWN || rc == KVMUX_EBUSY ||
           rc == KVMUX_EOOM || rc == KVMUX_EVERSION;
}

/* A value: its tag, ':', then a fill byte up to size. */
static size_t value_of(const char *tag, char fill, char *out, size_t size) {
    size_t t = strlen(tag);
    memcpy(out, tag, t);
    out[t] = ':';
    for (size_t i = t + 1; i < size; i++) out[i] = fill;
    return size > t + 1 ? size : t + 1;
}

static char fill_of(uint32_t ki) { return (char)('a' + ki % 26); }

/* The tag of a read value into tag; -1 when the value is not one of ours
 * (a wrong length or fill: corrupted). */
static int tag_of(const uint8_t *v, size_t len, char fill, size_t size, char *tag) {
    const uint8_t *colon = memchr(v, ':', len < TAG_MAX ? len : TAG_MAX);
    if (!colon || len != (size > (size_t)(colon - v) + 1 ? size : (size_t)(colon - v) + 1))
        return -1;
    for (const uint8_t *p = colon + 1; p < v + len; p++)
        if (*p != (uint8_t)fill) return -1;
    memcpy(tag, v, (size_t)(colon - v));
    tag[colon - v] = '\0';
    return 0;
}

/* A refused answer: counted, the first 20 said on stderr. */
static void model_error(ml *m, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void model_error(ml *m, const char *key, const char *fmt, ...) {
    uint64_t n = atomic_fetch_add(&m->model_errors, 1);
    if (n >= 20) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "migload: model: key %s: ", key);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void hist_add(ml *m, const lincheck_op *o) {
    pthread_mutex_lock(&m->hmu);
    int r = lincheck_add(m->H, o);
    pthread_mutex_unlock(&m->hmu);
    if (r != 0) fprintf(stderr, "migload: lincheck_add: %d\n", r);
}

/* One op into the history. rtag: what a GET read (its tag, or a counter's
 * decimal value). */
static void hist(ml *m, uint32_t proc, uint64_t inv, lincheck_opcode op, const char *key, int rc,
                 const char *wtag, const char *rtag, uint64_t version, int64_t number) {
    lincheck_op o;
    memset(&o, 0, sizeof o);
    o.process = proc;
    o.invoke_ns = inv;
    o.complete_ns = now_ns();
    o.op = op;
    o.key = key;
    o.delta = 1;
    if (op == LINCHECK_SET) o.value = wtag;
    if (rc == 0) {
        o.outcome = LINCHECK_OK;
        o.version = version;
        o.number = number;
        if (op == LINCHECK_GET) o.value = rtag;
    } else if (rc == KVMUX_ENOTFOUND && (op == LINCHECK_GET || op == LINCHECK_DEL)) {
        o.outcome = LINCHECK_FAIL;
        o.observed = LINCHECK_SAW_NOTFOUND;
    } else if (definite_fail(rc) || op == LINCHECK_GET) {
        o.outcome = LINCHECK_FAIL;
    } else {
        o.outcome = LINCHECK_INFO;
    }
    hist_add(m, &o);
}

/* A CAS from expected into the history: VERSION_MISMATCH and NOT_FOUND
 * are what it observed (current: the version the mismatch named). */
static void hist_cas(ml *m, uint32_t proc, uint64_t inv, const char *key, int rc,
                     const char *wtag, uint64_t expected, uint64_t version) {
    lincheck_op o;
    memset(&o, 0, sizeof o);
    o.process = proc;
    o.invoke_ns = inv;
    o.complete_ns = now_ns();
    o.op = LINCHECK_CAS;
    o.key = key;
    o.value = wtag;
    o.expected = expected;
    o.version = version;
    if (rc == 0) {
        o.outcome = LINCHECK_OK;
    } else if (rc == KVMUX_EVERSION || rc == KVMUX_ENOTFOUND) {
        o.outcome = LINCHECK_FAIL;
        o.observed = rc == KVMUX_EVERSION ? LINCHECK_SAW_MISMATCH : LINCHECK_SAW_NOTFOUND;
    } else {
        o.outcome = definite_fail(rc) ? LINCHECK_FAIL : LINCHECK_INFO;
        o.version = 0;
    }
    hist_add(m, &o);
}

static void count(ml *m, int rc, int write) {
    if (rc == 0 && write) atomic_fetch_add(&m->acked, 1);
    else if (rc != 0 && rc != KVMUX_ENOTFOUND && (definite_fail(rc) || !write))
        atomic_fetch_add(&m->failed, 1);
    else if (rc != 0 && rc != KVMUX_ENOTFOUND) atomic_fetch_add(&m->unknown, 1);
}

/* ---- the model's checks (callers hold the key's stripe) ---- */

/* A SET's answer. */
static void model_set(ml *m, uint32_t ki, int rc, const char *tag, uint64_t ver) {
    mstate *s = &m->model[ki];
    if (rc == 0) {
        if (ver <= s->version)
            model_error(m, m->keys[ki].name, "SET acknowledged at version %llu, not above %llu",
                        (unsigned long long)ver, (unsigned long long)s->version);
        s->version = ver;
        snprintf(s->tag, sizeof s->tag, "%s", tag);
        s->has_pend = s->absent = s->pend_del = 0;
    } else if (!definite_fail(rc)) {
        s->has_pend = 1;
        snprintf(s->pend, sizeof s->pend, "%s", tag);
    }
}

/* A DEL's answer (sent only while the model knows the key's state). */
static void model_del(ml *m, uint32_t ki, int rc) {
    mstate *s = &m->model[ki];
    const char *name = m->keys[ki].name;
    int present = s->version && !s->absent;
    if (rc == 0 && !present)
        model_error(m, name, "DEL acknowledged; the model has the key absent");
    else if (rc == KVMUX_ENOTFOUND && present)
        model_error(m, name, "DEL found nothing; acknowledged at version %llu",
                    (unsigned long long)s->version);
    if (rc == 0 || rc == KVMUX_ENOTFOUND) s->absent = 1;
    else if (!definite_fail(rc)) s->pend_del = 1;
}

/* An INCR's answer. */
static void model_incr(ml *m, uint32_t ki, int rc, int64_t num, uint64_t ver) {
    mstate *s = &m->model[ki];
    if (rc == 0) {
        int64_t applied = num - s->ctr - 1; /* unknown INCRs that showed */
        if (ver <= s->version || applied < 0 || applied > (int64_t)s->unk_incr)
            model_error(m, m->keys[ki].name, "INCR gave %lld at version %llu, expected 1 above "
                        "%lld (plus up to %u unknown ones) at a version above %llu",
                        (long long)num, (unsigned long long)ver, (long long)s->ctr, s->unk_incr,
                        (unsigned long long)s->version);
        else s->unk_incr -= (uint32_t)applied;
        s->ctr = num;
        s->version = ver;
        s->acked_incr++;
    } else if (!definite_fail(rc)) {
        s->unk_incr++;
        s->unk_total++;
    }
}

/* A CAS's answer (sent with expected = the model's version). The key has
 * one writer, so it must succeed unless a write of unknown outcome was
 * applied meanwhile (then the mismatch is not an error: a GET will show
 * that write). */
static void model_cas(ml *m, uint32_t ki, int rc, const char *tag, uint64_t expected,
                      uint64_t ver) {
    mstate *s = &m->model[ki];
    const char *name = m->keys[ki].name;
    if (rc == 0) {
        if (ver <= expected)
            model_error(m, name, "CAS from %llu acknowledged at version %llu",
                        (unsigned long long)expected, (unsigned long long)ver);
        s->version = ver;
        snprintf(s->tag, sizeof s->tag, "%s", tag);
        s->has_pend = s->absent = s->pend_del = 0;
    } else if (rc == KVMUX_EVERSION || rc == KVMUX_ENOTFOUND) {
        if (!s->has_pend)
            model_error(m, name, "CAS from version %llu refused (%s, current %llu)",
                        (unsigned long long)expected, kvmux_strerror(rc),
                        (unsigned long long)ver);
    } else if (!definite_fail(rc)) {
        s->has_pend = 1;
        snprintf(s->pend, sizeof s->pend, "%s", tag);
    }
}

/* A GET's answer, exact (no write to the key in flight). Returns 0 when the
 * model accepts it (adopting an unknown write it shows). */
static int model_get(ml *m, uint32_t ki, int rc, const char *rtag, uint64_t ver) {
    mstate *s = &m->model[ki];
    const char *name = m->keys[ki].name;
    if (rc == KVMUX_ENOTFOUND) {
        if (s->version == 0 || s->absent) return 0;
        if (s->pend_del) { /* the DEL of unknown outcome was applied */
            s->absent = 1;
            s->pend_del = 0;
            return 0;
        }
        model_error(m, name, "GET found nothing; acknowledged at version %llu",
                    (unsigned long long)s->version);
        return -1;
    }
    if (rc != 0) return 0;
    if (!rtag) {
        model_error(m, name, "GET at version %llu: a value never written",
                    (unsigned long long)ver);
        return -1;
    }
    if (m->keys[ki].counter) {
        int64_t v = atoll(rtag);
        if (ver == s->version && v == s->ctr) return 0;
        if (ver > s->version && v > s->ctr && v <= s->ctr + (int64_t)s->unk_incr) {
            s->unk_incr -= (uint32_t)(v - s->ctr);
            s->ctr = v;
            s->version = ver;
            return 0;
        }
        model_error(m, name, "GET counter %s at version %llu, model %lld at version %llu", rtag,
                    (unsigned long long)ver, (long long)s->ctr, (unsigned long long)s->version);
        return -1;
    }
    /* The old value while a DEL is pending: not applied (yet). */
    if (!s->absent && ver == s->version && strcmp(rtag, s->tag) == 0) return 0;
    if (s->has_pend && ver > s->version && strcmp(rtag, s->pend) == 0) {
        s->version = ver;
        memcpy(s->tag, s->pend, sizeof s->tag);
        s->has_pend = s->absent = s->pend_del = 0;
        return 0;
    }
    if (s->absent)
        model_error(m, name, "GET read %s at version %llu of a key deleted after version %llu",
                    rtag, (unsigned long long)ver, (unsigned long long)s->version);
    else
        model_error(m, name, "GET read %s at version %llu, model %s at version %llu", rtag,
                    (unsigned long long)ver, s->tag, (unsigned long long)s->version);
    return -1;
}

/* GET key ki by process proc; rtag filled (NULL when not found or not
 * ours). Returns the call's status. */
static int do_get(ml *m, uint32_t proc, uint32_t ki, char *rtag, const char **rt, uint64_t *ver) {
    kvmux_value *v = NULL;
    const mkey *k = &m->keys[ki];
    uint64_t inv = now_ns();
    int rc = kvmux_get(m->kc, k->name, strlen(k->name), &v, OP_TIMEOUT_MS);
    *rt = NULL;
    *ver = 0;
    if (rc == 0) {
        *ver = v->version;
        if (k->counter) {
            snprintf(rtag, TAG_MAX, "%.*s", (int)(v->len < TAG_MAX - 1 ? v->len : TAG_MAX - 1),
                     (const char *)v->data);
            *rt = rtag;
        } else if (tag_of(v->data, v->len, fill_of(ki), m->cfg->value_size, rtag) == 0) {
            *rt = rtag;
        }
    }
    kvmux_value_free(v);
    hist(m, proc, inv, LINCHECK_GET, k->name, rc, NULL, *rt ? *rt : "corrupt", *ver, 0);
    count(m, rc, 0);
    return rc;
}

/* ---- the load ---- */

/* A key of thread t: while a move is on, 3/4 of the time one of the
 * moving range (*hot set), else any of its own. */
static uint32_t pick_key(ml *m, loader *t, int *hot) {
    uint32_t T = (uint32_t)m->cfg->threads, id = (uint32_t)t->id;
    uint32_t r = rng_next(&t->rng);
    if (atomic_load(&m->active) && (r & 3)) {
        uint32_t f = atomic_load(&m->afirst), l = atomic_load(&m->alast);
        uint32_t s0 = f + ((id + T - f % T) % T);
        if (s0 <= l) {
            uint32_t s = s0 + T * ((r >> 2) % ((l - s0) / T + 1));
            uint32_t n = m->slot_start[s + 1] - m->slot_start[s];
            *hot = n != 0;
            if (n) return m->slot_keys[m->slot_start[s] + (r >> 8) % n];
        }
    }
    *hot = 0;
    return m->own[id][(r >> 1) % m->nown[id]];
}

/* CAS key ki from the version its model holds (only the owner writes it,
 * so the model's version is the key's unless an unknown write landed).
 * Returns 0 without sending when the model knows no version. */
static int load_cas(ml *m, loader *t, uint32_t ki) {
    const mkey *k = &m->keys[ki];
    pthread_mutex_t *mu = &m->stripe[ki % STRIPES];
    pthread_mutex_lock(mu);
    const mstate *s = &m->model[ki];
    uint64_t expected = s->absent || s->pend_del ? 0 : s->version;
    pthread_mutex_unlock(mu);
    if (!expected) return 0;
    char tag[TAG_MAX];
    snprintf(tag, sizeof tag, "t%d.%llu", t->id, (unsigned long long)++t->seq);
    size_t n = value_of(tag, fill_of(ki), t->val, m->cfg->value_size);
    uint64_t ver = 0, inv = now_ns();
    int rc = kvmux_cas(m->kc, k->name, strlen(k->name), expected, t->val, n, 0, &ver,
                       OP_TIMEOUT_MS);
    hist_cas(m, (uint32_t)t->id, inv, k->name, rc, tag, expected, ver);
    count(m, rc, 1);
    pthread_mutex_lock(mu);
    model_cas(m, ki, rc, tag, expected, ver);
    pthread_mutex_unlock(mu);
    return 1;
}

/* DEL key ki while its model knows its state (no write of unknown
 * outcome pending: present, or absent after a DEL). Returns 0 without
 * sending otherwise. */
static int load_del(ml *m, loader *t, uint32_t ki) {
    const mkey *k = &m->keys[ki];
    pthread_mutex_t *mu = &m->stripe[ki % STRIPES];
    mstate *s = &m->model[ki];
    pthread_mutex_lock(mu);
    int known = !s->has_pend && !s->pend_del;
    if (known) s->del_busy = 1;
    pthread_mutex_unlock(mu);
    if (!known) return 0;
    uint64_t inv = now_ns();
    int rc = kvmux_del(m->kc, k->name, strlen(k->name), OP_TIMEOUT_MS);
    hist(m, (uint32_t)t->id, inv, LINCHECK_DEL, k->name, rc, NULL, NULL, 0, 0);
    count(m, rc, 1);
    pthread_mutex_lock(mu);
    model_del(m, ki, rc);
    s->del_busy = 0;
    pthread_mutex_unlock(mu);
    return 1;
}

static void load_op(ml *m, loader *t) {
    int hot;
    uint32_t ki = pick_key(m, t, &hot);
    /* On the moving range 5 of 7 ops write (else 1 of 2): the dirty set
     * then outgrows the fence's 256 keys and drain rounds run. Half of
     * draw 5 is a DEL: a move must carry deletions too (ABSENT records
     * of the dirty set). */
    uint32_t r = rng_next(&t->rng) % (hot ? 7 : 10);
    int del = r == 5 && (rng_next(&t->rng) & 1);
    const mkey *k = &m->keys[ki];
    pthread_mutex_t *mu = &m->stripe[ki % STRIPES];
    if (k->counter && r < 6) {
        int64_t num = 0;
        kvmux_reply rep;
        kvmux_request q;
        memset(&q, 0, sizeof q);
        q.op = KVMUX_INCR;
        q.key = k->name;
        q.key_len = strlen(k->name);
        q.delta = 1;
        uint64_t inv = now_ns();
        int rc = kvmux_call(m->kc, &q, &rep, OP_TIMEOUT_MS);
        num = rc == 0 ? rep.number : 0;
        hist(m, (uint32_t)t->id, inv, LINCHECK_INCR, k->name, rc, NULL, NULL, rep.version, num);
        count(m, rc, 1);
        pthread_mutex_lock(mu);
        model_incr(m, ki, rc, num, rep.version);
        pthread_mutex_unlock(mu);
        kvmux_reply_free(&rep);
    } else if (!k->counter && r == 4 && load_cas(m, t, ki)) {
        /* done */
    } else if (!k->counter && del && load_del(m, t, ki)) {
        /* done */
    } else if (!k->counter && r < 4) {
        char tag[TAG_MAX];
        snprintf(tag, sizeof tag, "t%d.%llu", t->id, (unsigned long long)++t->seq);
        size_t n = value_of(tag, fill_of(ki), t->val, m->cfg->value_size);
        uint64_t ver = 0, inv = now_ns();
        int rc = kvmux_set(m->kc, k->name, strlen(k->name), t->val, n, 0, &ver, OP_TIMEOUT_MS);
        hist(m, (uint32_t)t->id, inv, LINCHECK_SET, k->name, rc, tag, NULL, ver, 0);
        count(m, rc, 1);
        pthread_mutex_lock(mu);
        model_set(m, ki, rc, tag, ver);
        pthread_mutex_unlock(mu);
    } else {
        char rtag[TAG_MAX];
        const char *rt;
        uint64_t ver;
        int rc = do_get(m, (uint32_t)t->id, ki, rtag, &rt, &ver);
        pthread_mutex_lock(mu);
        model_get(m, ki, rc, rt, ver);
        pthread_mutex_unlock(mu);
    }
    atomic_fetch_add(&m->ops, 1);
}

static void *load_main(void *arg) {
    loader *t = arg;
    while (!atomic_load(&t->m->stop_load)) load_op(t->m, t);
    return NULL;
}

/* ---- the preload ---- */

typedef struct pre {
    ml *m;
    uint32_t ki;
    uint64_t inv;
} pre;

static void pre_done(kvmux_client *kc, int result, kvmux_reply *reply, void *ud) {
    (void)kc;
    pre *p = ud;
    ml *m = p->m;
    char tag[TAG_MAX];
    snprintf(tag, sizeof tag, "L%u", p->ki);
    uint64_t ver = result == 0 ? reply->version : 0;
    hist(m, PROC_PRELOAD + p->ki, p->inv, LINCHECK_SET, m->keys[p->ki].name, result, tag, NULL,
         ver, 0);
    count(m, result, 1);
    pthread_mutex_lock(&m->stripe[p->ki % STRIPES]);
    model_set(m, p->ki, result, tag, ver);
    pthread_mutex_unlock(&m->stripe[p->ki % STRIPES]);
    atomic_fetch_sub(&m->inflight, 1);
}

/* Every key but the counters, PRELOAD_DEPTH SETs in flight. */
static int preload(ml *m) {
    size_t vs = m->cfg->value_size;
    pre *ps = calloc(m->nkeys, sizeof *ps);
    m->preval = malloc((size_t)m->nkeys * vs);
    if (!ps || !m->preval) {
        free(ps);
        return -1;
    }
    for (uint32_t i = 0; i < m->nkeys; i++) {
        if (m->keys[i].counter) continue;
        while (atomic_load(&m->inflight) >= PRELOAD_DEPTH) test_sleep_ms(1);
        char tag[TAG_MAX];
        snprintf(tag, sizeof tag, "L%u", i);
        char *val = m->preval + (size_t)i * vs;
        size_t n = value_of(tag, fill_of(i), val, vs);
        ps[i] = (pre){m, i, now_ns()};
        kvmux_request q;
        memset(&q, 0, sizeof q);
        q.op = KVMUX_SET;
        q.key = m->keys[i].name;
        q.key_len = strlen(m->keys[i].name);
        q.value = val;
        q.value_len = n;
        atomic_fetch_add(&m->inflight, 1);
        int rc = kvmux_call_async(m->kc, &q, OP_TIMEOUT_MS, pre_done, &ps[i]);
        if (rc != 0) {
            atomic_fetch_sub(&m->inflight, 1);
            fprintf(stderr, "migload: preload submit: %s\n", kvmux_strerror(rc));
        }
    }
    int64_t end = test_now_ms() + 2 * OP_TIMEOUT_MS;
    while (atomic_load(&m->inflight) > 0 && test_now_ms() < end) test_sleep_ms(5);
    int left = atomic_load(&m->inflight);
    /* Callbacks still due would read ps: then it is left to the exit. */
    if (left == 0) free(ps);
    return left == 0 ? 0 : -1;
}

/* ---- the probers ---- */

/* The window a request ends (see migload.h): from the first failed send
 * since the last success, or from this request's own send. */
static void probe_account(prober *p, int rc, uint64_t inv, uint64_t *fail_start) {
    if (rc == 0 || rc == KVMUX_ENOTFOUND) {
        uint64_t from = *fail_start ? *fail_start : inv, ms = (now_ns() - from) / 1000000u;
        if (ms > p->max_ms) p->max_ms = ms;
        *fail_start = 0;
    } else {
        p->fails++;
        if (!*fail_start) *fail_start = inv;
    }
}

static void *probe_main(void *arg) {
    prober *p = arg;
    ml *m = p->m;
    char val[4096], rtag[TAG_MAX];
    uint64_t fail_start = 0;
    size_t vs = m->cfg->value_size;
    while (!atomic_load(&p->stop)) {
        char tag[TAG_MAX];
        snprintf(tag, sizeof tag, "P%u.%llu", p->proc, (unsigned long long)++p->seq);
        size_t n = value_of(tag, 'p', val, vs);
        uint64_t ver = 0, inv = now_ns();
        int rc = kvmux_set(m->kc, p->key, strlen(p->key), val, n, 0, &ver, OP_TIMEOUT_MS);
        hist(m, p->proc, inv, LINCHECK_SET, p->key, rc, tag, NULL, ver, 0);
        count(m, rc, 1);
        probe_account(p, rc, inv, &fail_start);
        if (rc == 0) {
            if (ver <= p->version)
                model_error(m, p->key, "probe SET at version %llu, not above %llu",
                            (unsigned long long)ver, (unsigned long long)p->version);
            p->version = ver;
            memcpy(p->tag, tag, sizeof tag);
            p->has_pend = 0;
        } else if (!definite_fail(rc)) {
            p->has_pend = 1;
            memcpy(p->pend, tag, sizeof tag);
        }
        kvmux_value *v = NULL;
        inv = now_ns();
        rc = kvmux_get(m->kc, p->key, strlen(p->key), &v, OP_TIMEOUT_MS);
        const char *rt = rc == 0 && tag_of(v->data, v->len, 'p', vs, rtag) == 0 ? rtag : NULL;
        ver = rc == 0 ? v->version : 0;
        kvmux_value_free(v);
        hist(m, p->proc, inv, LINCHECK_GET, p->key, rc, NULL, rt ? rt : "corrupt", ver, 0);
        count(m, rc, 0);
        probe_account(p, rc, inv, &fail_start);
        if (rc == KVMUX_ENOTFOUND && p->version)
            model_error(m, p->key, "probe GET found nothing; acknowledged at %llu",
                        (unsigned long long)p->version);
        if (rc == 0 && !(rt && ver == p->version && strcmp(rt, p->tag) == 0)) {
            if (p->has_pend && rt && ver > p->version && strcmp(rt, p->pend) == 0) {
                p->version = ver;
                memcpy(p->tag, p->pend, sizeof p->tag);
                p->has_pend = 0;
            } else {
                model_error(m, p->key, "probe GET at version %llu, model at %llu",
                            (unsigned long long)ver, (unsigned long long)p->version);
            }
        }
        test_sleep_ms(2);
    }
    atomic_fetch_add(&m->probe_failures, p->fails);
    return NULL;
}

/* A key named "p<move>.<k>.<n>" in slot s. */
static int probe_key(char *out, size_t cap, int move, int k, uint16_t s) {
    for (unsigned n = 0; n < 10000000u; n++) {
        snprintf(out, cap, "p%d.%d.%u", move, k, n);
        if (kvmux_slot(out, strlen(out)) == s) return 0;
    }
    return -1;
}

static void probers_start(ml *m, prober *ps, int move, uint16_t f, uint16_t l) {
    uint16_t slots[PROBES] = {f, (uint16_t)(f + (l - f) / 2), l};
    for (int k = 0; k < PROBES; k++) {
        memset(&ps[k], 0, sizeof ps[k]);
        ps[k].m = m;
        ps[k].proc = PROC_PROBE + (uint32_t)(move * PROBES + k);
        if (probe_key(ps[k].key, sizeof ps[k].key, move, k, slots[k]) != 0 ||
            pthread_create(&ps[k].th, NULL, probe_main, &ps[k]) != 0)
            ps[k].proc = 0;
    }
}

/* Stop them; the move's window (ms). */
static uint64_t probers_stop(prober *ps) {
    uint64_t mx = 0;
    for (int k = 0; k < PROBES; k++) {
        if (!ps[k].proc) continue;
        atomic_store(&ps[k].stop, 1);
        pthread_join(ps[k].th, NULL);
        if (ps[k].max_ms > mx) mx = ps[k].max_ms;
    }
    return mx;
}

/* ---- the mover ---- */

/* A random range of one group's slots, of min..max slots (fewer when the
 * group's run ends first), and a target. */
static void pick_move(ml *m, uint16_t *f, uint16_t *l, uint16_t *dst) {
    const migload_config *cfg = m->cfg;
    uint32_t len = cfg->min_slots + rng_next(&m->rng) % (cfg->max_slots - cfg->min_slots + 1);
    uint32_t s = rng_next(&m->rng) % KVMUX_SLOTS, e = s;
    uint16_t src = m->owner[s];
    while (e + 1 < KVMUX_SLOTS && e - s + 1 < len && m->owner[e + 1] == src) e++;
    if (e - s + 1 < len) /* extend downwards for the rest */
        while (s > 0 && e - s + 1 < len && m->owner[s - 1] == src) s--;
    *f = (uint16_t)s;
    *l = (uint16_t)e;
    uint16_t d = (uint16_t)(1 + rng_next(&m->rng) % (uint32_t)(m->cl->groups - 1));
    *dst = d >= src ? (uint16_t)(d + 1) : d;
}

static int map_call(kvmux_client *mc, const char *sub, const char *val, kvmux_reply *rep) {
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = KVMUX_CLUSTER;
    q.key = sub;
    q.key_len = strlen(sub);
    q.value = val;
    q.value_len = val ? strlen(val) : 0;
    return kvmux_call(mc, &q, rep, OP_TIMEOUT_MS);
}

/* CLUSTER migrate; BUSY (the last move's acks pending) retried for 30 s.
 * Returns the id, or 0. */
static uint32_t start_move(kvmux_client *mc, uint16_t f, uint16_t l, uint16_t dst) {
    char v[64];
    snprintf(v, sizeof v, "%u-%u %u", f, l, dst);
    for (int64_t end = test_now_ms() + 30000; test_now_ms() < end; test_sleep_ms(200)) {
        kvmux_reply rep;
        int rc = map_call(mc, "migrate", v, &rep);
        unsigned id = 0;
        char msg[256];
        snprintf(msg, sizeof msg, "%.*s", (int)rep.value_len, rep.value ? (char *)rep.value : "");
        kvmux_reply_free(&rep);
        if (rc == 0 && sscanf(msg, "migration %u", &id) == 1) return id;
        if (rc != KVMUX_EBUSY && rc != KVMUX_ETIMEDOUT && rc != KVMUX_ENOTLEADER) {
            fprintf(stderr, "migload: migrate %s: %s %s\n", v, kvmux_strerror(rc), msg);
            return 0;
        }
    }
    fprintf(stderr, "migload: migrate %s: still refused after 30 s\n", v);
    return 0;
}

/* Poll the table until record id ends: its state, or 0 at the timeout. */
static int wait_move(ml *m, kvmux_client *mc, uint32_t id) {
    kvmux_migtab *t = malloc(sizeof *t);
    int state = 0;
    if (!t) return 0;
    for (int64_t end = test_now_ms() + m->cfg->move_timeout_ms; test_now_ms() < end;
         test_sleep_ms(50)) {
        kvmux_reply rep;
        int rc = map_call(mc, "migrations", NULL, &rep);
        const kvmux_migrec *r = NULL;
        if (rc == 0 && kvmux_migtab_decode(t, rep.value, rep.value_len, NULL, 0) == 0)
            r = kvmux_migtab_find(t, id);
        kvmux_reply_free(&rep);
        if (r && r->state != KVMUX_MIG_OPEN) {
            state = r->state;
            if (state == KVMUX_MIG_ABORTED)
                fprintf(stderr, "migload: migration %u aborted: %s\n", id, r->reason);
            break;
        }
    }
    free(t);
    return state;
}

/* Every key of f..l read back, checked against the model as it was when
 * the read began (its owner may be writing it meanwhile). */
static void readback(ml *m, uint16_t f, uint16_t l) {
    for (uint32_t s = f; s <= l; s++)
        for (uint32_t j = m->slot_start[s]; j < m->slot_start[s + 1]; j++) {
            uint32_t ki = m->slot_keys[j];
            pthread_mutex_t *mu = &m->stripe[ki % STRIPES];
            pthread_mutex_lock(mu);
            mstate before = m->model[ki];
            pthread_mutex_unlock(mu);
            char rtag[TAG_MAX];
            const char *rt;
            uint64_t ver;
            int rc = do_get(m, PROC_MOVER, ki, rtag, &rt, &ver);
            m->res->readback_keys++;
            pthread_mutex_lock(mu);
            mstate after = m->model[ki];
            pthread_mutex_unlock(mu);
            /* Absent is right if the owner deleted it before or during the read. */
            int may_absent = before.absent || before.pend_del || before.del_busy ||
                             after.absent || after.pend_del || after.del_busy;
            const char *name = m->keys[ki].name;
            if (rc == KVMUX_ENOTFOUND && before.version && !may_absent)
                model_error(m, name, "read back after the move: absent, acknowledged at %llu",
                            (unsigned long long)before.version);
            else if (rc == 0 && (ver < before.version || !rt))
                model_error(m, name, "read back after the move: version %llu, model at %llu",
                            (unsigned long long)ver, (unsigned long long)before.version);
            else if (rc == 0 && ver == before.version && !m->keys[ki].counter &&
                     strcmp(rt, before.tag) != 0)
                model_error(m, name, "read back after the move: another value at %llu",
                            (unsigned long long)ver);
            else if (rc != 0 && rc != KVMUX_ENOTFOUND)
                model_error(m, name, "read back after the move: %s", kvmux_strerror(rc));
        }
}

static kvmux_client *connect_map(ml *m) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = m->cl->map_eps;
    o.connect_timeout_ms = 2000;
    kvmux_client *c = NULL;
    for (int t = 0; t < 50; t++) {
        if (kvmux_connect(&c, NULL, 0, &o) == 0) return c;
        test_sleep_ms(200);
    }
    return NULL;
}

static void one_move(ml *m, kvmux_client *mc, int k) {
    migload_result *res = m->res;
    uint16_t f, l, dst;
    pick_move(m, &f, &l, &dst);
    uint16_t src = m->owner[f];
    atomic_store(&m->afirst, f);
    atomic_store(&m->alast, l);
    atomic_store(&m->active, 1);
    prober ps[PROBES];
    probers_start(m, ps, k, f, l);
    test_sleep_ms(200);
    int64_t t0 = test_now_ms();
    uint32_t id = start_move(mc, f, l, dst);
    int state = id ? wait_move(m, mc, id) : 0;
    int64_t took = test_now_ms() - t0;
    res->moves_started += id != 0;
    if (state == KVMUX_MIG_COMMITTED) {
        res->moves_committed++;
        res->slots_moved += (uint64_t)(l - f + 1);
        for (uint32_t s = f; s <= l; s++) m->owner[s] = dst;
    } else if (state == KVMUX_MIG_ABORTED) {
        res->moves_aborted++;
    } else if (id) {
        res->moves_timed_out++;
        fprintf(stderr, "migload: migration %u not ended in %lld ms\n", id,
                (long long)m->cfg->move_timeout_ms);
    }
    test_sleep_ms(300); /* let the probers see the end of the window */
    uint64_t w = probers_stop(ps);
    atomic_store(&m->active, 0);
    if (w > res->max_unavail_ms) res->max_unavail_ms = w;
    uint64_t rb0 = res->readback_keys;
    if (state == KVMUX_MIG_COMMITTED) readback(m, f, l);
    if (m->cfg->verbose)
        fprintf(stderr, "migload: move %d: slots %u-%u %u -> %u: %s in %lld ms, window %llu ms, "
                "%llu keys read back, ops so far %llu\n", k + 1, f, l, src, dst,
                state == KVMUX_MIG_COMMITTED ? "committed"
                : state == KVMUX_MIG_ABORTED ? "aborted" : "NOT ENDED",
                (long long)took, (unsigned long long)w,
                (unsigned long long)(res->readback_keys - rb0),
                (unsigned long long)atomic_load(&m->ops));
}

static void *mover_main(void *arg) {
    ml *m = arg;
    kvmux_client *mc = connect_map(m);
    if (!mc) {
        fprintf(stderr, "migload: the map group is not reachable\n");
    } else {
        const migload_config *cfg = m->cfg;
        for (int k = 0; k < cfg->moves; k++) {
            /* Move k starts once k / moves of the ops and of the time
             * are done: the moves are spread over the whole load. */
            uint64_t ops_at = cfg->ops * (uint64_t)k / (uint64_t)cfg->moves;
            int64_t ms_at = m->t0_ms + cfg->duration_ms * k / cfg->moves;
            while ((atomic_load(&m->ops) < ops_at && !atomic_load(&m->stop_load)) ||
                   test_now_ms() < ms_at)
                test_sleep_ms(20);
            one_move(m, mc, k);
            test_sleep_ms((int)cfg->move_gap_ms);
        }
        kvmux_close(mc);
    }
    atomic_store(&m->movers_done, 1);
    return NULL;
}

/* ---- setup, the end ---- */

static int build_keys(ml *m) {
    uint32_t n = m->nkeys, T = (uint32_t)m->cfg->threads;
    m->keys = calloc(n, sizeof *m->keys);
    m->model = calloc(n, sizeof *m->model);
    m->slot_keys = calloc(n, sizeof *m->slot_keys);
    if (!m->keys || !m->model || !m->slot_keys) return -1;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(m->keys[i].name, sizeof m->keys[i].name, "m%u", i);
        m->keys[i].slot = kvmux_slot(m->keys[i].name, strlen(m->keys[i].name));
        m->keys[i].counter = i % 16 == 0;
        m->slot_start[m->keys[i].slot + 1]++;
        m->nown[m->keys[i].slot % T]++;
    }
    for (uint32_t s = 0; s < KVMUX_SLOTS; s++) m->slot_start[s + 1] += m->slot_start[s];
    uint32_t fill[KVMUX_SLOTS];
    memcpy(fill, m->slot_start, sizeof fill);
    for (uint32_t t = 0; t < T; t++) {
        m->own[t] = calloc(m->nown[t] ? m->nown[t] : 1, sizeof *m->own[t]);
        if (!m->own[t]) return -1;
        m->nown[t] = 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint16_t s = m->keys[i].slot;
        m->slot_keys[fill[s]++] = i;
        m->own[s % T][m->nown[s % T]++] = i;
    }
    for (uint32_t t = 0; t < T; t++)
        if (!m->nown[t]) return -1;
    return 0;
}

typedef struct finalizer {
    ml *m;
    pthread_t th;
    int id, started;
    uint64_t missing, lost, twice;
} finalizer;

/* One load thread's keys read once more, exactly (no write is in flight
 * any more); its counters summed. */
static void *final_main(void *arg) {
    finalizer *f = arg;
    ml *m = f->m;
    for (uint32_t j = 0; j < m->nown[f->id]; j++) {
        uint32_t ki = m->own[f->id][j];
        char rtag[TAG_MAX];
        const char *rt;
        uint64_t ver;
        int rc = do_get(m, PROC_FINAL + (uint32_t)f->id, ki, rtag, &rt, &ver);
        for (int t = 0; rc != 0 && rc != KVMUX_ENOTFOUND && t < 5; t++)
            rc = do_get(m, PROC_FINAL + (uint32_t)f->id, ki, rtag, &rt, &ver);
        if (rc != 0 && rc != KVMUX_ENOTFOUND) {
            f->missing++;
            fprintf(stderr, "migload: final read of %s: %s\n", m->keys[ki].name,
                    kvmux_strerror(rc));
            continue;
        }
        pthread_mutex_t *mu = &m->stripe[ki % STRIPES];
        pthread_mutex_lock(mu);
        if (model_get(m, ki, rc, rt, ver) != 0) f->missing++;
        mstate s = m->model[ki];
        pthread_mutex_unlock(mu);
        if (!m->keys[ki].counter) continue;
        int64_t v = rc == 0 && rt ? atoll(rt) : 0;
        if (v < (int64_t)s.acked_incr) f->lost += s.acked_incr - (uint64_t)v;
        if (v > (int64_t)(s.acked_incr + s.unk_total))
            f->twice += (uint64_t)v - s.acked_incr - s.unk_total;
    }
    return NULL;
}

/* Every key read once more, by as many threads as the load had. */
static void final_reads(ml *m) {
    migload_result *res = m->res;
    static finalizer fs[MIGLOAD_MAX_THREADS];
    uint64_t e0 = atomic_load(&m->model_errors);
    for (int t = 0; t < m->cfg->threads; t++) {
        fs[t] = (finalizer){m, 0, t, 0, 0, 0, 0};
        fs[t].started = pthread_create(&fs[t].th, NULL, final_main, &fs[t]) == 0;
        if (!fs[t].started) final_main(&fs[t]);
    }
    for (int t = 0; t < m->cfg->threads; t++) {
        if (fs[t].started) pthread_join(fs[t].th, NULL);
        res->final_missing += fs[t].missing;
        res->counter_lost += fs[t].lost;
        res->counter_twice += fs[t].twice;
    }
    /* Those are counted in final_missing, not again as model errors. */
    atomic_store(&m->model_errors, e0);
}

static void check_history(ml *m) {
    migload_result *res = m->res;
    lincheck_result lr;
    memset(&lr, 0, sizeof lr);
    res->lincheck_rc = lincheck_check(m->H, &lr, stderr, 20);
    res->violations = res->lincheck_rc < 0 ? 1 : lr.violations;
    res->lost = lr.by_kind[LINCHECK_V_LOST_WRITE] + res->counter_lost + res->final_missing;
    res->applied_twice = lr.by_kind[LINCHECK_V_DUPLICATE] + res->counter_twice;
    res->stale_reads = lr.by_kind[LINCHECK_V_STALE_READ];
    if (m->cfg->history_out) {
        FILE *f = fopen(m->cfg->history_out, "w");
        if (!f || lincheck_save(m->H, f) != 0)
            fprintf(stderr, "migload: cannot write %s\n", m->cfg->history_out);
        if (f) fclose(f);
    }
}

static kvmux_client *connect_cluster(const migload_cluster *c) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = c->seeds;
    o.cluster = 1;
    o.connect_timeout_ms = 5000;
    o.request_timeout_ms = OP_TIMEOUT_MS;
    kvmux_client *kc = NULL;
    for (int t = 0; t < 20; t++) {
        if (kvmux_connect(&kc, NULL, 0, &o) == 0) return kc;
        test_sleep_ms(250);
    }
    return NULL;
}

/* Load and moves until all of ops, duration and moves are done. */
static void run_load(ml *m) {
    const migload_config *cfg = m->cfg;
    static loader ls[MIGLOAD_MAX_THREADS];
    int64_t t0 = m->t0_ms = test_now_ms();
    int nt = 0;
    for (; nt < cfg->threads; nt++) {
        ls[nt] = (loader){m, 0, nt, cfg->seed * 2654435761u + (uint32_t)nt * 40503u + 1, 0,
                          malloc(cfg->value_size + TAG_MAX)};
        if (!ls[nt].val || pthread_create(&ls[nt].th, NULL, load_main, &ls[nt]) != 0) {
            free(ls[nt].val);
            break;
        }
    }
    if (nt < cfg->threads) {
        fprintf(stderr, "migload: only %d of %d load threads started\n", nt, cfg->threads);
        atomic_store(&m->stop_load, 1); /* the mover then waits for no op count */
    }
    pthread_t mv;
    int have_mover = pthread_create(&mv, NULL, mover_main, m) == 0;
    if (!have_mover) atomic_store(&m->movers_done, 1);
    while (!(atomic_load(&m->movers_done) && atomic_load(&m->ops) >= cfg->ops &&
             test_now_ms() - t0 >= cfg->duration_ms))
        test_sleep_ms(50);
    atomic_store(&m->stop_load, 1);
    if (have_mover) pthread_join(mv, NULL);
    for (int i = 0; i < nt; i++) {
        pthread_join(ls[i].th, NULL);
        free(ls[i].val);
    }
    m->res->elapsed_ms = test_now_ms() - t0;
}

/* The data groups' own counters: drain rounds (summed over every member:
 * each counts the rounds it ran as leader) and the server-side window. */
static void server_figures(const migload_cluster *c, migload_result *res) {
    for (int g = 0; g < c->groups; g++)
        for (int i = 0; i < c->data[g].n; i++) {
            uint64_t r = rgroup_stat(&c->data[g], i, "migrate_rounds");
            uint64_t f = rgroup_stat(&c->data[g], i, "migrate_fence_ms_max");
            if (r != UINT64_MAX) res->drain_rounds += r;
            if (f != UINT64_MAX && f > res->fence_ms_max) res->fence_ms_max = f;
        }
}

static void ml_free(ml *m) {
    if (m->kc) kvmux_close(m->kc);
    for (int t = 0; t < MIGLOAD_MAX_THREADS; t++) free(m->own[t]);
    free(m->keys);
    free(m->model);
    free(m->slot_keys);
    free(m->preval);
    if (m->H) lincheck_free(m->H);
    for (int i = 0; i < STRIPES; i++) pthread_mutex_destroy(&m->stripe[i]);
    pthread_mutex_destroy(&m->hmu);
    free(m);
}

int migload_run(migload_cluster *c, const migload_config *cfg, migload_result *res) {
    memset(res, 0, sizeof *res);
    if (cfg->threads < 1 || cfg->threads > MIGLOAD_MAX_THREADS || cfg->keys < 1000 ||
        cfg->keys > MIGLOAD_MAX_KEYS ||
        cfg->value_size < 32 || cfg->value_size > 4096 || cfg->min_slots < 1 ||
        cfg->max_slots < cfg->min_slots || cfg->max_slots > KVMUX_SLOTS || c->groups < 2) {
        fprintf(stderr, "migload: bad configuration\n");
        return -1;
    }
    ml *m = calloc(1, sizeof *m);
    if (!m) return -1;
    m->cfg = cfg;
    m->cl = c;
    m->res = res;
    m->nkeys = cfg->keys;
    m->rng = cfg->seed * 7919u + 17u;
    for (int i = 0; i < STRIPES; i++) pthread_mutex_init(&m->stripe[i], NULL);
    pthread_mutex_init(&m->hmu, NULL);
    int per = (int)KVMUX_SLOTS / c->groups;
    for (int s = 0; s < (int)KVMUX_SLOTS; s++)
        m->owner[s] = (uint16_t)(s / per >= c->groups ? c->groups : s / per + 1);
    m->H = lincheck_new();
    if (!m->H || build_keys(m) != 0 || !(m->kc = connect_cluster(c))) {
        fprintf(stderr, "migload: setup failed (memory, or no cluster client)\n");
        ml_free(m);
        return -1;
    }
    if (preload(m) != 0) fprintf(stderr, "migload: the preload did not finish\n");
    uint64_t pre_acked = atomic_load(&m->acked);
    run_load(m);
    final_reads(m);
    kvmux_cluster_info ci;
    if (kvmux_cluster_stats(m->kc, &ci, sizeof ci) == 0) res->client_epoch = ci.epoch;
    int l = rgroup_leader(&c->map, 5000);
    res->map_epoch = l >= 0 ? rgroup_stat(&c->map, l, "cluster_epoch") : 0;
    server_figures(c, res);
    check_history(m);
    res->ops = atomic_load(&m->ops);
    res->acknowledged = atomic_load(&m->acked);
    res->failed = atomic_load(&m->failed);
    res->unknown = atomic_load(&m->unknown);
    res->model_errors = atomic_load(&m->model_errors);
    res->probe_failures = atomic_load(&m->probe_failures);
    if (cfg->verbose)
        fprintf(stderr, "migload: preload acknowledged %llu of %u keys\n",
                (unsigned long long)pre_acked, cfg->keys - (cfg->keys + 15) / 16);
    ml_free(m);
    return 0;
}

void migload_print(FILE *f, const migload_result *r) {
    fprintf(f, "ops=%llu acknowledged=%llu failed=%llu unknown=%llu moves=%llu committed=%llu "
            "aborted=%llu timed_out=%llu slots_moved=%llu readback_keys=%llu model_errors=%llu "
            "final_missing=%llu lost=%llu applied_twice=%llu stale_reads=%llu violations=%llu "
            "max_slot_unavailable_ms=%llu probe_failures=%llu drain_rounds=%llu "
            "fence_ms_max=%llu client_epoch=%llu map_epoch=%llu elapsed_ms=%lld",
            (unsigned long long)r->ops, (unsigned long long)r->acknowledged,
            (unsigned long long)r->failed, (unsigned long long)r->unknown,
            (unsigned long long)r->moves_started, (unsigned long long)r->moves_committed,
            (unsigned long long)r->moves_aborted, (unsigned long long)r->moves_timed_out,
            (unsigned long long)r->slots_moved, (unsigned long long)r->readback_keys,
            (unsigned long long)r->model_errors, (unsigned long long)r->final_missing,
            (unsigned long long)r->lost, (unsigned long long)r->applied_twice,
            (unsigned long long)r->stale_reads, (unsigned long long)r->violations,
            (unsigned long long)r->max_unavail_ms, (unsigned long long)r->probe_failures,
            (unsigned long long)r->drain_rounds, (unsigned long long)r->fence_ms_max,
            (unsigned long long)r->client_epoch, (unsigned long long)r->map_epoch,
            (long long)r->elapsed_ms);
}
