/* lincheck: the checker behind lincheck.h (the model, the checks and the
 * history format are described there).
 *
 * Layout of the work: ops are stored flat; keys and (key, value) pairs are
 * interned in open-addressing hash tables. Checking builds, per key, the list
 * of known states (version -> writer, value) from acknowledged writes and from
 * reads (a read may place an unknown-outcome write), sorts everything by
 * (key, version) once, then runs per key: the real-time sweep (ops sorted by
 * invocation and by completion, a running maximum of positions), the DEL and
 * absence placement (each DEL/absent read gets the interval of gaps between
 * versions that real time allows; acknowledged DELs are matched to distinct
 * gaps by earliest deadline), and the CAS/INCR/counter checks. */
#include "lincheck.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define NO_IDX UINT32_MAX
#define T_INF UINT64_MAX

typedef struct op {
    uint32_t process;
    uint32_t key;                 /* key id */
    uint64_t inv, cmp;            /* cmp = T_INF for INFO in the checks */
    uint64_t cmp_given;           /* as recorded, for lincheck_save */
    uint8_t op, outcome, observed;
    char *value;                  /* owned */
    uint64_t expected, version;
    int64_t delta, number;
    uint64_t placed;              /* INFO SET/CAS: version a read placed it at */
} op;

typedef struct state {
    uint32_t key;
    uint32_t writer;              /* op index or NO_IDX */
    uint64_t version;
    const char *value;            /* NULL: unknown */
} state;

/* Open-addressing string table: (key id, string) -> u32. key id
 * UINT32_MAX is used for the key names themselves. */
typedef struct strmap {
    uint32_t *slot;               /* entry index + 1; 0 empty */
    uint32_t cap;                 /* power of two */
    uint32_t n;
    struct sentry { uint32_t ns; const char *s; uint32_t val; uint64_t h; } *e;
    uint32_t ecap;
} strmap;

struct lincheck_history {
    op *ops;
    size_t n, cap;
    char **keys;                  /* id -> name (owned) */
    uint32_t nkeys, keycap;
    strmap keymap;
};

static const char *const kind_names[LINCHECK_V_KINDS] = {
    "wrong value", "phantom read", "stale read", "lost write", "real-time order",
    "duplicate write", "cas order", "incr value", "counter", "absent read",
    "double delete",
};

const char *lincheck_kind_name(lincheck_kind k) {
    return (unsigned)k < LINCHECK_V_KINDS ? kind_names[k] : "?";
}

/* ---------------- hash table ---------------- */

static uint64_t hash_str(uint32_t ns, const char *s) {
    uint64_t h = 1469598103934665603ull ^ ns;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void strmap_free(strmap *m) {
    free(m->slot);
    free(m->e);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(strmap *m) {
    uint32_t ncap = m->cap ? m->cap * 2 : 1024;
    uint32_t *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    for (uint32_t i = 0; i < m->n; i++) {
        uint32_t j = (uint32_t)m->e[i].h & (ncap - 1);
        while (ns[j]) j = (j + 1) & (ncap - 1);
        ns[j] = i + 1;
    }
    free(m->slot);
    m->slot = ns;
    m->cap = ncap;
    return 0;
}

/* Find (ns, s); on a miss insert it with val when insert is set. Returns
 * the entry's value, NO_IDX on a miss without insert, or NO_IDX - 1 when
 * out of memory. s must outlive the map. */
static uint32_t strmap_get(strmap *m, uint32_t ns, const char *s, uint32_t val, int insert) {
    uint64_t h = hash_str(ns, s);
    if (m->cap) {
        uint32_t j = (uint32_t)h & (m->cap - 1);
        while (m->slot[j]) {
            struct sentry *e = &m->e[m->slot[j] - 1];
            if (e->h == h && e->ns == ns && strcmp(e->s, s) == 0) return e->val;
            j = (j + 1) & (m->cap - 1);
        }
    }
    if (!insert) return NO_IDX;
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m) < 0) return NO_IDX - 1;
    if (m->n == m->ecap) {
        uint32_t nc = m->ecap ? m->ecap * 2 : 1024;
        struct sentry *ne = realloc(m->e, nc * sizeof *ne);
        if (!ne) return NO_IDX - 1;
        m->e = ne;
        m->ecap = nc;
    }
    m->e[m->n] = (struct sentry){ns, s, val, h};
    uint32_t j = (uint32_t)h & (m->cap - 1);
    while (m->slot[j]) j = (j + 1) & (m->cap - 1);
    m->slot[j] = ++m->n;
    return val;
}

/* ---------------- building a history ---------------- */

lincheck_history *lincheck_new(void) {
    return calloc(1, sizeof(lincheck_history));
}

void lincheck_free(lincheck_history *h) {
    if (!h) return;
    for (size_t i = 0; i < h->n; i++) free(h->ops[i].value);
    for (uint32_t i = 0; i < h->nkeys; i++) free(h->keys[i]);
    free(h->ops);
    free(h->keys);
    strmap_free(&h->keymap);
    free(h);
}

static uint32_t key_id(lincheck_history *h, const char *key) {
    uint32_t id = strmap_get(&h->keymap, UINT32_MAX, key, 0, 0);
    if (id != NO_IDX) return id;
    if (h->nkeys == h->keycap) {
        uint32_t nc = h->keycap ? h->keycap * 2 : 256;
        char **nk = realloc(h->keys, nc * sizeof *nk);
        if (!nk) return NO_IDX;
        h->keys = nk;
        h->keycap = nc;
    }
    char *copy = strdup(key);
    if (!copy) return NO_IDX;
    if (strmap_get(&h->keymap, UINT32_MAX, copy, h->nkeys, 1) != h->nkeys) {
        free(copy);
        return NO_IDX;
    }
    h->keys[h->nkeys] = copy;
    return h->nkeys++;
}

static int needs_value(const lincheck_op *o) {
    if (o->op == LINCHECK_SET || o->op == LINCHECK_CAS) return 1;
    return o->op == LINCHECK_GET && o->outcome == LINCHECK_OK;
}

int lincheck_add(lincheck_history *h, const lincheck_op *o) {
    if (!o->key || !o->key[0]) return -2;
    if (o->op < LINCHECK_GET || o->op > LINCHECK_DEL) return -2;
    if (o->outcome < LINCHECK_OK || o->outcome > LINCHECK_INFO) return -2;
    if (needs_value(o) && !o->value) return -2;
    if (o->outcome != LINCHECK_INFO && o->complete_ns < o->invoke_ns) return -2;
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 1024;
        op *no = realloc(h->ops, nc * sizeof *no);
        if (!no) return -1;
        h->ops = no;
        h->cap = nc;
    }
    uint32_t k = key_id(h, o->key);
    if (k == NO_IDX) return -1;
    op *d = &h->ops[h->n];
    memset(d, 0, sizeof *d);
    d->value = NULL;
    if (needs_value(o) && !(d->value = strdup(o->value))) return -1;
    d->process = o->process;
    d->key = k;
    d->inv = o->invoke_ns;
    d->cmp_given = o->complete_ns;
    d->cmp = o->outcome == LINCHECK_INFO ? T_INF : o->complete_ns;
    d->op = (uint8_t)o->op;
    d->outcome = (uint8_t)o->outcome;
    d->observed = o->outcome == LINCHECK_FAIL ? (uint8_t)o->observed : 0;
    d->expected = o->expected;
    d->version = o->version;
    d->delta = o->delta;
    d->number = o->number;
    h->n++;
    return 0;
}

/* ---------------- text format ---------------- */

static const char *const op_names[] = {NULL, "get", "set", "cas", "incr", "del"};

static int parse_u64(const char *s, uint64_t *out) {
    if (!s || *s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_i64(const char *s, int64_t *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* An invocation waiting for its completion, per process. */
typedef struct pend {
    int active;
    lincheck_op op;
    char *key, *value;            /* owned; op.key/op.value point here */
} pend;

static void pend_clear(pend *p) {
    free(p->key);
    free(p->value);
    memset(p, 0, sizeof *p);
}

/* Replace *own with a copy of s and point *out at it. */
static int pend_str(char **own, const char *s, const char **out) {
    char *c = strdup(s);
    if (!c) return -1;
    free(*own);
    *own = c;
    *out = c;
    return 0;
}

#define MAX_PROC (1u << 20)

static int fail_line(char *err, size_t errlen, const char *why) {
    if (errlen) snprintf(err, errlen, "%s", why);
    return 1;
}

/* One line's tokens into the pending table or the history. Returns 0, -1
 * (out of memory) or 1 (malformed, reason in err). */
static int load_line(lincheck_history *h, pend **ptab, uint32_t *pcap, char **t, int nt,
                     char *err, size_t errlen) {
    if (nt < 5) return fail_line(err, errlen, "fewer than 5 fields (PROC EVENT T_NS OP KEY)");
    uint64_t proc, ts;
    if (parse_u64(t[0], &proc) || proc >= MAX_PROC)
        return fail_line(err, errlen, "bad process id (decimal, < 1048576)");
    if (parse_u64(t[2], &ts)) return fail_line(err, errlen, "bad timestamp");
    int opc = 0;
    for (int i = 1; i <= 5; i++)
        if (strcmp(t[3], op_names[i]) == 0) opc = i;
    if (!opc) return fail_line(err, errlen, "unknown op (get set cas incr del)");
    if (proc >= *pcap) {
        uint32_t nc = *pcap ? *pcap : 64;
        while (nc <= proc) nc *= 2;
        pend *np = realloc(*ptab, nc * sizeof *np);
        if (!np) return -1;
        memset(np + *pcap, 0, (nc - *pcap) * sizeof *np);
        *ptab = np;
        *pcap = nc;
    }
    pend *p = &(*ptab)[proc];
    if (strcmp(t[1], "inv") == 0) {
        if (p->active) return fail_line(err, errlen, "invocation while the process has one in flight");
        pend_clear(p);
        p->active = 1;
        p->op.process = (uint32_t)proc;
        p->op.invoke_ns = ts;
        p->op.op = (lincheck_opcode)opc;
        if (pend_str(&p->key, t[4], &p->op.key)) return -1;
        const char *val = NULL;
        if (opc == LINCHECK_SET) {
            if (nt != 6) return fail_line(err, errlen, "set takes KEY VALUE");
            val = t[5];
        } else if (opc == LINCHECK_CAS) {
            if (nt != 7 || parse_u64(t[5], &p->op.expected))
                return fail_line(err, errlen, "cas takes KEY EXPECTED VALUE");
            val = t[6];
        } else if (opc == LINCHECK_INCR) {
            if (nt != 6 || parse_i64(t[5], &p->op.delta))
                return fail_line(err, errlen, "incr takes KEY DELTA");
        } else if (nt != 5) {
            return fail_line(err, errlen, "get/del take KEY only");
        }
        if (val && pend_str(&p->value, val, &p->op.value)) return -1;
        return 0;
    }
    int outc = strcmp(t[1], "ok") == 0 ? LINCHECK_OK
             : strcmp(t[1], "fail") == 0 ? LINCHECK_FAIL
             : strcmp(t[1], "info") == 0 ? LINCHECK_INFO : 0;
    if (!outc) return fail_line(err, errlen, "unknown event (inv ok fail info)");
    if (!p->active) return fail_line(err, errlen, "completion without an invocation");
    if (p->op.op != (lincheck_opcode)opc || strcmp(p->op.key, t[4]) != 0)
        return fail_line(err, errlen, "completion's op or key differs from the invocation's");
    if (ts < p->op.invoke_ns) return fail_line(err, errlen, "completion before its invocation");
    lincheck_op *o = &p->op;
    o->outcome = (lincheck_outcome)outc;
    o->complete_ns = ts;
    if (outc == LINCHECK_OK) {
        int bad = 0;
        switch (opc) {
        case LINCHECK_GET:
            bad = nt != 7 || parse_u64(t[5], &o->version) || o->version == 0;
            if (!bad && pend_str(&p->value, t[6], &o->value)) return -1;
            break;
        case LINCHECK_SET:
        case LINCHECK_CAS:
            bad = nt != 6 || parse_u64(t[5], &o->version) || o->version == 0;
            break;
        case LINCHECK_INCR:
            bad = nt != 7 || parse_i64(t[5], &o->number) || parse_u64(t[6], &o->version) ||
                  o->version == 0;
            break;
        default:
            bad = nt != 5;
        }
        if (bad) return fail_line(err, errlen, "bad ok result for this op (see the format)");
    } else if (outc == LINCHECK_FAIL && nt >= 6) {
        if (strcmp(t[5], "notfound") == 0 && opc != LINCHECK_SET && opc != LINCHECK_INCR) {
            o->observed = LINCHECK_SAW_NOTFOUND;
        } else if (strcmp(t[5], "mismatch") == 0 && opc == LINCHECK_CAS) {
            if (nt != 7 || parse_u64(t[6], &o->version) || o->version == 0)
                return fail_line(err, errlen, "cas mismatch takes CURRENT (> 0)");
            o->observed = LINCHECK_SAW_MISMATCH;
        }
    }
    int rc = lincheck_add(h, o);
    pend_clear(p);
    if (rc == -2) return fail_line(err, errlen, "malformed op");
    return rc;
}

int lincheck_load(lincheck_history *h, FILE *f, char *err, size_t errlen) {
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    pend *ptab = NULL;
    uint32_t pcap = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        char *t[9];
        int nt = 0;
        for (char *s = strtok(line, " \t\r\n"); s; s = strtok(NULL, " \t\r\n")) {
            if (nt == 0 && s[0] == '#') break;
            if (nt == 9) {
                nt = 10;
                break;
            }
            t[nt++] = s;
        }
        if (nt == 0) continue;
        if (nt > 9) {
            rc = fail_line(err, errlen, "too many fields") ? lineno : -1;
            break;
        }
        int r = load_line(h, &ptab, &pcap, t, nt, err, errlen);
        if (r) {
            rc = r < 0 ? -1 : lineno;
            break;
        }
    }
    if (rc == 0 && ferror(f)) rc = -1;
    /* Invocations with no completion: outcome unknown. */
    for (uint32_t i = 0; i < pcap; i++) {
        if (rc == 0 && ptab[i].active) {
            ptab[i].op.outcome = LINCHECK_INFO;
            ptab[i].op.complete_ns = ptab[i].op.invoke_ns;
            if (lincheck_add(h, &ptab[i].op) == -1) rc = -1;
        }
        pend_clear(&ptab[i]);
    }
    free(ptab);
    free(line);
    return rc;
}

typedef struct ev {
    uint64_t t;
    uint32_t idx;
    uint8_t done;
} ev;

static int ev_cmp(const void *a, const void *b) {
    const ev *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    if (x->idx != y->idx) return x->idx < y->idx ? -1 : 1;
    return (int)x->done - (int)y->done;
}

int lincheck_save(const lincheck_history *h, FILE *f) {
    ev *e = malloc((h->n * 2 + 1) * sizeof *e);
    if (!e) return -1;
    for (size_t i = 0; i < h->n; i++) {
        e[2 * i] = (ev){h->ops[i].inv, (uint32_t)i, 0};
        e[2 * i + 1] = (ev){h->ops[i].cmp_given, (uint32_t)i, 1};
    }
    qsort(e, h->n * 2, sizeof *e, ev_cmp);
    fprintf(f, "# kvmux lincheck history: PROC EVENT T_NS OP KEY ARGS\n");
    for (size_t i = 0; i < h->n * 2; i++) {
        const op *o = &h->ops[e[i].idx];
        const char *key = h->keys[o->key];
        fprintf(f, "%" PRIu32 " ", o->process);
        if (!e[i].done) {
            fprintf(f, "inv %" PRIu64 " %s %s", o->inv, op_names[o->op], key);
            if (o->op == LINCHECK_SET) fprintf(f, " %s", o->value);
            if (o->op == LINCHECK_CAS) fprintf(f, " %" PRIu64 " %s", o->expected, o->value);
            if (o->op == LINCHECK_INCR) fprintf(f, " %" PRId64, o->delta);
        } else if (o->outcome == LINCHECK_OK) {
            fprintf(f, "ok %" PRIu64 " %s %s", o->cmp_given, op_names[o->op], key);
            if (o->op == LINCHECK_GET) fprintf(f, " %" PRIu64 " %s", o->version, o->value);
            if (o->op == LINCHECK_SET || o->op == LINCHECK_CAS) fprintf(f, " %" PRIu64, o->version);
            if (o->op == LINCHECK_INCR)
                fprintf(f, " %" PRId64 " %" PRIu64, o->number, o->version);
        } else {
            fprintf(f, "%s %" PRIu64 " %s %s", o->outcome == LINCHECK_FAIL ? "fail" : "info",
                    o->cmp_given, op_names[o->op], key);
            if (o->observed == LINCHECK_SAW_NOTFOUND) fprintf(f, " notfound");
            if (o->observed == LINCHECK_SAW_MISMATCH) fprintf(f, " mismatch %" PRIu64, o->version);
        }
        fputc('\n', f);
    }
    free(e);
    return ferror(f) ? -1 : 0;
}

/* ---------------- checking ---------------- */

/* An op with a fixed position (a versioned write or a read of a version),
 * for the real-time sweep and the gap intervals. */
typedef struct item {
    uint32_t key, idx;
    uint64_t inv, cmp;
    uint64_t ver;
    uint32_t gap;                 /* 1-based index of ver among the key's states */
    uint8_t rd;                   /* position (ver, rd): a read sits after its write */
} item;

typedef struct ck {
    lincheck_history *h;
    lincheck_result *res;
    FILE *rep;
    unsigned max_report;
    state *st;
    size_t nst, stcap;
    uint32_t *kst;                /* per key: states kst[k] .. kst[k+1] */
    uint64_t *last_write_cmp;     /* per key: latest completion of a non-info write */
    uint64_t *max_ok_ver;         /* per key: highest acknowledged write version */
    uint32_t *hidden;             /* per key: info writes no read placed */
    uint8_t *has_info_incr, *only_incr;
} ck;

static void op_desc(const ck *c, uint32_t i, char *buf, size_t cap) {
    const op *o = &c->h->ops[i];
    int n = snprintf(buf, cap, "p%" PRIu32 " %s %s", o->process, op_names[o->op],
                     c->h->keys[o->key]);
    if (o->op == LINCHECK_SET) n += snprintf(buf + n, cap - (size_t)n, " %s", o->value);
    if (o->op == LINCHECK_CAS)
        n += snprintf(buf + n, cap - (size_t)n, " %" PRIu64 " %s", o->expected, o->value);
    if (o->op == LINCHECK_INCR) n += snprintf(buf + n, cap - (size_t)n, " %" PRId64, o->delta);
    if (o->outcome == LINCHECK_OK) {
        n += snprintf(buf + n, cap - (size_t)n, " -> ok");
        if (o->op == LINCHECK_GET)
            n += snprintf(buf + n, cap - (size_t)n, " v%" PRIu64 " %s", o->version, o->value);
        if (o->op == LINCHECK_SET || o->op == LINCHECK_CAS)
            n += snprintf(buf + n, cap - (size_t)n, " v%" PRIu64, o->version);
        if (o->op == LINCHECK_INCR)
            n += snprintf(buf + n, cap - (size_t)n, " %" PRId64 " v%" PRIu64, o->number, o->version);
    } else if (o->outcome == LINCHECK_FAIL) {
        n += snprintf(buf + n, cap - (size_t)n, " -> fail");
        if (o->observed == LINCHECK_SAW_NOTFOUND) n += snprintf(buf + n, cap - (size_t)n, " notfound");
        if (o->observed == LINCHECK_SAW_MISMATCH)
            n += snprintf(buf + n, cap - (size_t)n, " mismatch v%" PRIu64, o->version);
    } else {
        n += snprintf(buf + n, cap - (size_t)n, " -> info");
        if (o->placed) n += snprintf(buf + n, cap - (size_t)n, " (applied at v%" PRIu64 ")", o->placed);
    }
    if (n < 0 || (size_t)n >= cap) return;
    if (o->outcome == LINCHECK_INFO)
        snprintf(buf + n, cap - (size_t)n, " [%" PRIu64 " .. ?]", o->inv);
    else
        snprintf(buf + n, cap - (size_t)n, " [%" PRIu64 " .. %" PRIu64 "]", o->inv, o->cmp);
}

/* Count one violation and report it with up to two ops (NO_IDX: none). */
static void violation(ck *c, lincheck_kind k, uint32_t a, uint32_t b, const char *what) {
    c->res->violations++;
    c->res->by_kind[k]++;
    if (!c->rep) return;
    if (c->res->violations > c->max_report) return;
    char da[512], db[512];
    uint32_t any = a != NO_IDX ? a : b;
    fprintf(c->rep, "violation: %s: key %s: %s\n", kind_names[k],
            any != NO_IDX ? c->h->keys[c->h->ops[any].key] : "?", what);
    if (a != NO_IDX) {
        op_desc(c, a, da, sizeof da);
        fprintf(c->rep, "  %s\n", da);
    }
    if (b != NO_IDX) {
        op_desc(c, b, db, sizeof db);
        fprintf(c->rep, "  %s\n", db);
    }
}

static int is_write(const op *o) {
    return o->op == LINCHECK_SET || o->op == LINCHECK_CAS || o->op == LINCHECK_INCR;
}

static int push_state(ck *c, state s) {
    if (c->nst == c->stcap) {
        size_t nc = c->stcap ? c->stcap * 2 : 1024;
        state *ns = realloc(c->st, nc * sizeof *ns);
        if (!ns) return -1;
        c->st = ns;
        c->stcap = nc;
    }
    c->st[c->nst++] = s;
    return 0;
}

static int state_cmp(const void *a, const void *b) {
    const state *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    if (x->version != y->version) return x->version < y->version ? -1 : 1;
    return x->writer < y->writer ? -1 : x->writer > y->writer;
}

/* Index of version v among key k's sorted states, or NO_IDX. */
static uint32_t find_state(const ck *c, uint32_t k, uint64_t v) {
    uint32_t lo = c->kst[k], hi = c->kst[k + 1];
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->st[mid].version < v) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->kst[k + 1] && c->st[lo].version == v ? lo : NO_IDX;
}

static void index_states(ck *c) {
    uint32_t nk = c->h->nkeys;
    memset(c->kst, 0, (nk + 1) * sizeof *c->kst);
    for (size_t i = 0; i < c->nst; i++) c->kst[c->st[i].key + 1]++;
    for (uint32_t k = 0; k < nk; k++) c->kst[k + 1] += c->kst[k];
}

/* The value a state holds as text (an INCR's number formatted into buf). */
static const char *state_value(const ck *c, const state *s, char *buf, size_t cap) {
    if (s->writer != NO_IDX) {
        const op *w = &c->h->ops[s->writer];
        if (w->op == LINCHECK_INCR) {
            snprintf(buf, cap, "%" PRId64, w->number);
            return buf;
        }
        return w->value;
    }
    return s->value;
}

/* Step 1: states from acknowledged writes, sorted; two writes at one
 * version are a duplicate. */
static int states_from_writes(ck *c) {
    lincheck_history *h = c->h;
    for (size_t i = 0; i < h->n; i++) {
        const op *o = &h->ops[i];
        if (is_write(o) && o->outcome == LINCHECK_OK &&
            push_state(c, (state){o->key, (uint32_t)i, o->version, NULL}) < 0)
            return -1;
    }
    if (c->nst) qsort(c->st, c->nst, sizeof *c->st, state_cmp);
    size_t w = 0;
    for (size_t i = 0; i < c->nst; i++) {
        if (w > 0 && c->st[w - 1].key == c->st[i].key && c->st[w - 1].version == c->st[i].version) {
            violation(c, LINCHECK_V_DUPLICATE, c->st[w - 1].writer, c->st[i].writer,
                      "two writes acknowledged with the same version");
            continue;
        }
        c->st[w++] = c->st[i];
    }
    c->nst = w;
    index_states(c);
    return 0;
}

typedef struct rd { uint32_t key, idx; uint64_t ver; } rd;

static int rd_cmp(const void *a, const void *b) {
    const rd *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    if (x->ver != y->ver) return x->ver < y->ver ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* A group of reads of version v of key k that no acknowledged write
 * produced: find the write (an unknown-outcome SET/CAS of that value) or
 * report a phantom or a duplicate. Adds the state. */
static int resolve_unknown_version(ck *c, strmap *vals, const rd *g, size_t n) {
    lincheck_history *h = c->h;
    uint32_t k = g[0].key;
    const char *x = NULL;
    uint32_t first = NO_IDX;
    for (size_t i = 0; i < n; i++) {
        const op *o = &h->ops[g[i].idx];
        if (o->op != LINCHECK_GET) continue;
        if (!x) {
            x = o->value;
            first = g[i].idx;
        } else if (strcmp(x, o->value) != 0) {
            violation(c, LINCHECK_V_WRONG_VALUE, first, g[i].idx,
                      "two reads of one version returned different values");
        }
    }
    uint32_t reader = first != NO_IDX ? first : g[0].idx;
    state s = {k, NO_IDX, g[0].ver, x};
    if (!x) {
        /* Only CAS mismatches saw this version: fine if some write can be
         * unobserved, else nobody wrote it. */
        if (c->hidden[k] == 0)
            violation(c, LINCHECK_V_PHANTOM_READ, NO_IDX, reader,
                      "a version no write of this key produced");
        return push_state(c, s);
    }
    uint32_t w = strmap_get(vals, k, x, 0, 0);
    if (w != NO_IDX) {
        op *wo = &h->ops[w];
        if (wo->outcome == LINCHECK_OK) {
            violation(c, LINCHECK_V_DUPLICATE, w, reader,
                      "one write's value seen at a second version (applied twice)");
        } else if (wo->outcome == LINCHECK_FAIL) {
            violation(c, LINCHECK_V_PHANTOM_READ, w, reader,
                      "read the value of a write that failed (not applied)");
        } else if (wo->placed == 0) {
            wo->placed = s.version;
            s.writer = w;
            c->res->unknown_applied++;
            c->hidden[k]--;
        } else if (wo->placed != s.version) {
            violation(c, LINCHECK_V_DUPLICATE, w, reader,
                      "one write's value seen at two versions (applied twice)");
        }
        return push_state(c, s);
    }
    int64_t num;
    if (!(c->has_info_incr[k] && parse_i64(x, &num) == 0))
        violation(c, LINCHECK_V_PHANTOM_READ, NO_IDX, reader, "read a value no write of this key wrote");
    return push_state(c, s);
}

/* Step 2: reads against states; reads of versions no acknowledged write
 * produced place unknown writes (new states). */
static int check_reads(ck *c, strmap *vals) {
    lincheck_history *h = c->h;
    rd *un = NULL;
    size_t nun = 0, ucap = 0;
    char nbuf[32];
    for (size_t i = 0; i < h->n; i++) {
        const op *o = &h->ops[i];
        int present = (o->op == LINCHECK_GET && o->outcome == LINCHECK_OK) ||
                      o->observed == LINCHECK_SAW_MISMATCH;
        if (!present) continue;
        uint32_t s = find_state(c, o->key, o->version);
        if (s == NO_IDX) {
            if (nun == ucap) {
                ucap = ucap ? ucap * 2 : 256;
                rd *nu = realloc(un, ucap * sizeof *nu);
                if (!nu) {
                    free(un);
                    return -1;
                }
                un = nu;
            }
            un[nun++] = (rd){o->key, (uint32_t)i, o->version};
            continue;
        }
        const char *sv = state_value(c, &c->st[s], nbuf, sizeof nbuf);
        if (o->op == LINCHECK_GET && sv && strcmp(sv, o->value) != 0)
            violation(c, LINCHECK_V_WRONG_VALUE, c->st[s].writer, (uint32_t)i,
                      "read a value other than the one written at that version");
    }
    if (nun) qsort(un, nun, sizeof *un, rd_cmp);
    int rc = 0;
    for (size_t i = 0; i < nun && rc == 0;) {
        size_t j = i + 1;
        while (j < nun && un[j].key == un[i].key && un[j].ver == un[i].ver) j++;
        rc = resolve_unknown_version(c, vals, un + i, j - i);
        i = j;
    }
    free(un);
    if (rc == 0) {
        if (c->nst) qsort(c->st, c->nst, sizeof *c->st, state_cmp);
        index_states(c);
    }
    return rc;
}

static int item_inv_cmp(const void *a, const void *b) {
    const item *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    if (x->inv != y->inv) return x->inv < y->inv ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int item_cmp_cmp(const void *a, const void *b) {
    const item *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    if (x->cmp != y->cmp) return x->cmp < y->cmp ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int pos_less(const item *a, const item *b) {
    return a->ver < b->ver || (a->ver == b->ver && a->rd < b->rd);
}

/* Per-key view for the sweep and gap intervals. */
typedef struct keyview {
    uint32_t k, m;                /* key, number of states */
    const item *byinv, *bycmp;    /* the key's items, two orders */
    size_t n;
    uint32_t *premax;             /* premax[i]: max gap of bycmp[0..i] */
    uint32_t *sufmin;             /* sufmin[i]: min gap of byinv[i..n-1] */
} keyview;

/* Gaps real time allows for an op with no version of its own (a DEL or an
 * absent read) invoked at inv and completed at cmp: gap g is "after the
 * key's g-th state, before the next". */
static void gap_interval(const keyview *kv, uint64_t inv, uint64_t cmp, uint32_t *lo, uint32_t *hi) {
    size_t a = 0, b = kv->n;
    while (a < b) { /* items completed strictly before inv */
        size_t mid = a + (b - a) / 2;
        if (kv->bycmp[mid].cmp < inv) a = mid + 1;
        else b = mid;
    }
    *lo = a ? kv->premax[a - 1] : 0;
    *hi = kv->m;
    if (cmp == T_INF) return;
    a = 0, b = kv->n;
    while (a < b) { /* first item invoked strictly after cmp */
        size_t mid = a + (b - a) / 2;
        if (kv->byinv[mid].inv <= cmp) a = mid + 1;
        else b = mid;
    }
    if (a < kv->n) *hi = kv->sufmin[a] - 1;
}

/* The real-time sweep over one key's items. */
static void sweep_key(ck *c, const keyview *kv) {
    const item *best = NULL;
    size_t j = 0;
    for (size_t i = 0; i < kv->n; i++) {
        const item *b = &kv->byinv[i];
        while (j < kv->n && kv->bycmp[j].cmp < b->inv) {
            if (!best || pos_less(best, &kv->bycmp[j])) best = &kv->bycmp[j];
            j++;
        }
        if (!best || !pos_less(b, best)) continue;
        if (!b->rd) {
            violation(c, LINCHECK_V_REALTIME, best->idx, b->idx,
                      "a write ordered before an op that completed before it began");
        } else if (b->inv > c->last_write_cmp[kv->k] && c->max_ok_ver[kv->k] > b->ver) {
            violation(c, LINCHECK_V_LOST_WRITE, best->idx, b->idx,
                      "final state lacks an acknowledged write that no later write overwrote");
        } else {
            violation(c, LINCHECK_V_STALE_READ, best->idx, b->idx,
                      "read an older version than an op that completed before it began");
        }
    }
}

typedef struct delint { uint32_t idx, lo, hi; } delint;

static int delint_cmp(const void *a, const void *b) {
    const delint *x = a, *y = b;
    if (x->hi != y->hi) return x->hi < y->hi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static uint32_t uf_find(uint32_t *p, uint32_t g) {
    while (p[g] != g) {
        p[g] = p[p[g]];
        g = p[g];
    }
    return g;
}

/* DELs, absent reads, CAS predecessors, INCR arithmetic, counters: the
 * checks of one key that need its gaps. ops: the key's op indices. */
static int check_gaps(ck *c, const keyview *kv, const uint32_t *kops, size_t nops) {
    lincheck_history *h = c->h;
    uint32_t m = kv->m;
    delint *dels = malloc((nops + 1) * sizeof *dels);
    uint32_t *cover = calloc((size_t)m + 2, sizeof *cover);
    uint32_t *par = malloc(((size_t)m + 2) * sizeof *par);
    if (!dels || !cover || !par) {
        free(dels);
        free(cover);
        free(par);
        return -1;
    }
    size_t nd = 0;
    for (size_t i = 0; i < nops; i++) {
        const op *o = &h->ops[kops[i]];
        if (o->op != LINCHECK_DEL || o->outcome == LINCHECK_FAIL) continue;
        uint32_t lo, hi;
        gap_interval(kv, o->inv, o->cmp, &lo, &hi);
        /* Gap 0 (before the first known write) holds a DEL only if an
         * unobserved write may have created the key there. */
        if (lo < 1 && c->hidden[kv->k] == 0) lo = 1;
        dels[nd++] = (delint){kops[i], lo, hi};
        if (lo <= hi) {
            cover[lo]++;
            cover[hi + 1]--;
        }
    }
    for (uint32_t g = 1; g <= m + 1; g++) cover[g] += cover[g - 1];
    /* Acknowledged DELs into distinct gaps, earliest deadline first. With
     * unobserved writes on the key, one may separate two DELs in one gap:
     * then each DEL only needs a gap of its own interval. */
    if (nd) qsort(dels, nd, sizeof *dels, delint_cmp);
    for (uint32_t g = 0; g <= m + 1; g++) par[g] = g;
    int distinct = c->hidden[kv->k] == 0;
    for (size_t i = 0; i < nd; i++) {
        if (h->ops[dels[i].idx].outcome != LINCHECK_OK) continue;
        uint32_t g = !distinct ? dels[i].lo : dels[i].lo <= m + 1 ? uf_find(par, dels[i].lo) : m + 1;
        if (g <= dels[i].hi && g <= m) {
            par[g] = g + 1;
        } else {
            violation(c, LINCHECK_V_DOUBLE_DELETE, NO_IDX, dels[i].idx,
                      "a DEL acknowledged where the key must have been absent");
        }
    }
    char nbuf[32];
    for (size_t i = 0; i < nops; i++) {
        uint32_t xi = kops[i];
        const op *o = &h->ops[xi];
        if (o->observed == LINCHECK_SAW_NOTFOUND) {
            uint32_t lo, hi;
            gap_interval(kv, o->inv, o->cmp, &lo, &hi);
            int okay = 0;
            if (lo <= hi) {
                okay = lo == 0;
                for (size_t d = 0; d < nd && !okay; d++)
                    okay = dels[d].lo <= hi && dels[d].hi >= lo && h->ops[dels[d].idx].inv < o->cmp;
            }
            if (!okay) {
                int final = o->inv > c->last_write_cmp[kv->k] && lo >= 1;
                violation(c, final ? LINCHECK_V_LOST_WRITE : LINCHECK_V_ABSENT_READ,
                          lo >= 1 && lo <= m ? c->st[c->kst[kv->k] + lo - 1].writer : NO_IDX, xi,
                          final ? "final state absent, though an acknowledged write no DEL can follow"
                                : "key found absent where no DEL can have removed it");
            }
            continue;
        }
        if (!is_write(o)) continue;
        uint64_t v = o->outcome == LINCHECK_OK ? o->version : o->placed;
        if (!v) continue;
        uint32_t s = find_state(c, kv->k, v);
        if (s == NO_IDX) continue;
        uint32_t gk = s - c->kst[kv->k] + 1;            /* 1-based */
        const state *pred = gk >= 2 ? &c->st[s - 1] : NULL;
        if (o->op == LINCHECK_CAS) {
            if (o->expected != 0 && (o->expected >= v || (pred && pred->version > o->expected)))
                violation(c, LINCHECK_V_CAS_ORDER, pred ? pred->writer : NO_IDX, xi,
                          "CAS applied though a newer version than its expected one came first");
            if (o->expected == 0 && pred && cover[gk - 1] == 0)
                violation(c, LINCHECK_V_CAS_ORDER, pred->writer, xi,
                          "create-if-absent CAS applied while the key existed");
        }
        if (o->op == LINCHECK_INCR && o->outcome == LINCHECK_OK && c->hidden[kv->k] == 0) {
            int may_del = pred && cover[gk - 1] > 0;
            int64_t base = 0, want;
            const char *pv = pred ? state_value(c, pred, nbuf, sizeof nbuf) : "0";
            if (!pv) continue;
            if (parse_i64(pv, &base) < 0) {
                if (!may_del)
                    violation(c, LINCHECK_V_INCR_VALUE, pred->writer, xi,
                              "INCR applied over a value that is not an integer");
                continue;
            }
            if (__builtin_add_overflow(base, o->delta, &want)) continue;
            if (o->number != want && !(may_del && o->number == o->delta))
                violation(c, LINCHECK_V_INCR_VALUE, pred ? pred->writer : NO_IDX, xi,
                          "INCR's result is not the previous version's value plus delta");
        }
    }
    free(dels);
    free(cover);
    free(par);
    return 0;
}

/* A key only ever INCRed: each final read's value is the acknowledged
 * deltas plus some subset of the unknown ones. */
static void check_counter(ck *c, uint32_t k, const uint32_t *kops, size_t nops) {
    lincheck_history *h = c->h;
    int64_t sum = 0, lo = 0, hi = 0;
    for (size_t i = 0; i < nops; i++) {
        const op *o = &h->ops[kops[i]];
        if (o->op != LINCHECK_INCR) continue;
        int ovf = 0;
        if (o->outcome == LINCHECK_OK) ovf = __builtin_add_overflow(sum, o->delta, &sum);
        else if (o->outcome == LINCHECK_INFO && o->delta < 0) ovf = __builtin_add_overflow(lo, o->delta, &lo);
        else if (o->outcome == LINCHECK_INFO) ovf = __builtin_add_overflow(hi, o->delta, &hi);
        if (ovf) return;
    }
    int64_t min, max;
    if (__builtin_add_overflow(sum, lo, &min) || __builtin_add_overflow(sum, hi, &max)) return;
    for (size_t i = 0; i < nops; i++) {
        const op *o = &h->ops[kops[i]];
        int64_t f;
        if (o->op != LINCHECK_GET || o->outcome != LINCHECK_OK || o->inv <= c->last_write_cmp[k])
            continue;
        if (parse_i64(o->value, &f) < 0 || f < min || f > max) {
            char what[160];
            snprintf(what, sizeof what,
                     "final counter %s outside [%" PRId64 ", %" PRId64 "] (acknowledged deltas %" PRId64
                     " plus any unknown ones)", o->value, min, max, sum);
            violation(c, LINCHECK_V_COUNTER, NO_IDX, kops[i], what);
        }
    }
}

static int check_keys(ck *c) {
    lincheck_history *h = c->h;
    uint32_t nk = h->nkeys;
    size_t ni = 0;
    item *byinv = malloc((h->n + 1) * sizeof *byinv);
    item *bycmp = malloc((h->n + 1) * sizeof *bycmp);
    uint32_t *premax = malloc((h->n + 1) * sizeof *premax);
    uint32_t *sufmin = malloc((h->n + 1) * sizeof *sufmin);
    uint32_t *ko = malloc((nk + 1) * sizeof *ko);          /* ops per key (offsets) */
    uint32_t *kops = malloc((h->n + 1) * sizeof *kops);
    int rc = -1;
    if (!byinv || !bycmp || !premax || !sufmin || !ko || !kops) goto out;
    for (size_t i = 0; i < h->n; i++) {
        const op *o = &h->ops[i];
        uint64_t v = 0;
        uint8_t r = 0;
        if (is_write(o) && o->outcome == LINCHECK_OK) v = o->version;
        else if (is_write(o) && o->outcome == LINCHECK_INFO) v = o->placed;
        else if ((o->op == LINCHECK_GET && o->outcome == LINCHECK_OK) ||
                 o->observed == LINCHECK_SAW_MISMATCH)
            v = o->version, r = 1;
        if (!v) continue;
        uint32_t s = find_state(c, o->key, v);
        if (s == NO_IDX) continue;   /* a duplicate already reported */
        byinv[ni++] = (item){o->key, (uint32_t)i, o->inv, o->cmp, v, s - c->kst[o->key] + 1, r};
    }
    if (ni) qsort(byinv, ni, sizeof *byinv, item_inv_cmp);
    if (ni) memcpy(bycmp, byinv, ni * sizeof *bycmp);
    if (ni) qsort(bycmp, ni, sizeof *bycmp, item_cmp_cmp);
    memset(ko, 0, (nk + 1) * sizeof *ko);
    for (size_t i = 0; i < h->n; i++) ko[h->ops[i].key + 1]++;
    for (uint32_t k = 0; k < nk; k++) ko[k + 1] += ko[k];
    {
        uint32_t *fill = malloc((nk + 1) * sizeof *fill);
        if (!fill) goto out;
        memcpy(fill, ko, (nk + 1) * sizeof *fill);
        for (size_t i = 0; i < h->n; i++) kops[fill[h->ops[i].key]++] = (uint32_t)i;
        free(fill);
    }
    size_t a = 0;
    for (uint32_t k = 0; k < nk; k++) {
        size_t b = a;
        while (b < ni && byinv[b].key == k) b++;
        keyview kv = {k, c->kst[k + 1] - c->kst[k], byinv + a, bycmp + a, b - a,
                      premax + a, sufmin + a};
        for (size_t i = 0; i < kv.n; i++) {
            uint32_t g = kv.bycmp[i].cmp == T_INF ? 0 : kv.bycmp[i].gap;
            kv.premax[i] = i && kv.premax[i - 1] > g ? kv.premax[i - 1] : g;
        }
        for (size_t i = kv.n; i-- > 0;) {
            uint32_t g = kv.byinv[i].gap;
            kv.sufmin[i] = i + 1 < kv.n && kv.sufmin[i + 1] < g ? kv.sufmin[i + 1] : g;
        }
        sweep_key(c, &kv);
        if (check_gaps(c, &kv, kops + ko[k], ko[k + 1] - ko[k]) < 0) goto out;
        if (c->only_incr[k]) check_counter(c, k, kops + ko[k], ko[k + 1] - ko[k]);
        a = b;
    }
    rc = 0;
out:
    free(byinv);
    free(bycmp);
    free(premax);
    free(sufmin);
    free(ko);
    free(kops);
    return rc;
}

int lincheck_check(lincheck_history *h, lincheck_result *res, FILE *report, unsigned max_report) {
    ck c = {.h = h, .res = res, .rep = report, .max_report = max_report};
    strmap vals = {0};
    int rc = -1;
    memset(res, 0, sizeof *res);
    res->ops = h->n;
    res->keys = h->nkeys;
    uint32_t nk = h->nkeys;
    c.kst = calloc((size_t)nk + 1, sizeof *c.kst);
    c.last_write_cmp = calloc((size_t)nk + 1, sizeof *c.last_write_cmp);
    c.max_ok_ver = calloc((size_t)nk + 1, sizeof *c.max_ok_ver);
    c.hidden = calloc((size_t)nk + 1, sizeof *c.hidden);
    c.has_info_incr = calloc((size_t)nk + 1, 1);
    c.only_incr = calloc((size_t)nk + 1, 1);
    if (!c.kst || !c.last_write_cmp || !c.max_ok_ver || !c.hidden || !c.has_info_incr || !c.only_incr) goto out;
    memset(c.only_incr, 1, nk);
    for (size_t i = 0; i < h->n; i++) {
        op *o = &h->ops[i];
        o->placed = 0;
        if (o->outcome == LINCHECK_OK) res->ok++;
        else if (o->outcome == LINCHECK_FAIL) res->failed++;
        else res->unknown++;
        if (o->op != LINCHECK_GET && o->outcome != LINCHECK_INFO && o->cmp > c.last_write_cmp[o->key])
            c.last_write_cmp[o->key] = o->cmp;
        if (is_write(o) && o->outcome == LINCHECK_OK && o->version > c.max_ok_ver[o->key])
            c.max_ok_ver[o->key] = o->version;
        if (o->op == LINCHECK_SET || o->op == LINCHECK_CAS || o->op == LINCHECK_DEL)
            c.only_incr[o->key] = 0;
        if (is_write(o) && o->outcome == LINCHECK_INFO) c.hidden[o->key]++;
        if (o->op == LINCHECK_INCR && o->outcome == LINCHECK_INFO) c.has_info_incr[o->key] = 1;
        if (o->op == LINCHECK_SET || o->op == LINCHECK_CAS) {
            uint32_t w = strmap_get(&vals, o->key, o->value, (uint32_t)i, 1);
            if (w == NO_IDX - 1) goto out;
            if (w != (uint32_t)i) {
                if (report)
                    fprintf(report, "lincheck: history error: key %s: value %s written twice "
                            "(SET/CAS values must be unique per key: they identify the write)\n",
                            h->keys[o->key], o->value);
                goto out;
            }
        }
    }
    if (states_from_writes(&c) < 0 || check_reads(&c, &vals) < 0 || check_keys(&c) < 0) goto out;
    if (report && res->violations > max_report)
        fprintf(report, "... %" PRIu64 " violations in all\n", res->violations);
    rc = res->violations ? 1 : 0;
out:
    strmap_free(&vals);
    free(c.st);
    free(c.kst);
    free(c.last_write_cmp);
    free(c.max_ok_ver);
    free(c.hidden);
    free(c.has_info_incr);
    free(c.only_incr);
    return rc;
}
