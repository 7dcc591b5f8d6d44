/* The slot map's text form (cluster.h: kvmux_map_parse_text and
 * kvmux_map_format_text), what operators write and kvmux-cli shows.
 *
 * Design: line by line, whitespace-separated words, every error names its
 * line. A "slots" line may only name a group declared above it (or 0, to
 * unassign), so the error points at the line that is wrong. Groups may
 * come in any order; they are kept sorted by id as the map requires. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cluster.h"
#include "cluster_internal.h"

#define WORDS_MAX (2u + KVMUX_MAP_MAX_MEMBERS + 1u) /* one extra: "too many" */

typedef struct word {
    const char *p;
    size_t len;
} word;

static int line_fail(char *err, size_t cap, unsigned line, const char *fmt, ...) {
    if (err && cap) {
        int n = snprintf(err, cap, "line %u: ", line);
        if (n >= 0 && (size_t)n < cap) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, cap - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* A decimal number in [0, max]: digits only, no sign, no spaces. */
static int parse_num(const word *w, uint64_t max, uint64_t *out) {
    uint64_t v = 0;
    if (w->len == 0 || w->len > 20) return -1;
    for (size_t i = 0; i < w->len; i++) {
        unsigned d = (unsigned)(w->p[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

static int word_is(const word *w, const char *s) {
    return w->len == strlen(s) && memcmp(w->p, s, w->len) == 0;
}

/* Insert a group with this id in sorted position; NULL if the id is
 * already there or the map is full (reason in *why). */
static kvmux_map_group *group_insert(kvmux_map *m, uint16_t id, const char **why) {
    if (kvmux_map_group_get(m, id)) {
        *why = "defined twice";
        return NULL;
    }
    if (m->ngroups >= KVMUX_MAP_MAX_GROUPS) {
        *why = "one group too many";
        return NULL;
    }
    unsigned at = m->ngroups;
    while (at > 0 && m->groups[at - 1].id > id) at--;
    memmove(&m->groups[at + 1], &m->groups[at], (m->ngroups - at) * sizeof m->groups[0]);
    m->ngroups++;
    memset(&m->groups[at], 0, sizeof m->groups[at]);
    m->groups[at].id = id;
    return &m->groups[at];
}

static int parse_group(kvmux_map *m, const word *w, unsigned nw, unsigned line, char *err,
                       size_t cap) {
    uint64_t id;
    const char *why;
    if (nw < 3) return line_fail(err, cap, line, "group ID HOST:PORT... (at least one member)");
    if (parse_num(&w[1], 65535, &id) || id == 0)
        return line_fail(err, cap, line, "group id '%.*s' is not 1..65535", (int)w[1].len,
                         w[1].p);
    if (nw - 2 > KVMUX_MAP_MAX_MEMBERS)
        return line_fail(err, cap, line, "group %u: more than %u members", (unsigned)id,
                         KVMUX_MAP_MAX_MEMBERS);
    kvmux_map_group *g = group_insert(m, (uint16_t)id, &why);
    if (!g) return line_fail(err, cap, line, "group %u: %s", (unsigned)id, why);
    for (unsigned i = 2; i < nw; i++) {
        if (w[i].len >= KVMUX_MAP_ADDR_MAX)
            return line_fail(err, cap, line, "group %u: address '%.*s' is too long", (unsigned)id,
                             (int)w[i].len, w[i].p);
        if (!kvmux__map_addr_valid(w[i].p, w[i].len))
            return line_fail(err, cap, line, "group %u: '%.*s' is not a valid host:port",
                             (unsigned)id, (int)w[i].len, w[i].p);
        memcpy(g->addr[i - 2], w[i].p, w[i].len);
        g->addr[i - 2][w[i].len] = '\0';
        g->n = (uint8_t)(i - 1);
    }
    return 0;
}

static int parse_slots(kvmux_map *m, const word *w, unsigned nw, unsigned line, char *err,
                       size_t cap) {
    uint64_t first, last, group;
    if (nw != 3) return line_fail(err, cap, line, "slots FIRST[-LAST] GROUP");
    const char *dash = memchr(w[1].p, '-', w[1].len);
    word a = w[1], b = w[1];
    if (dash) {
        a.len = (size_t)(dash - w[1].p);
        b.p = dash + 1;
        b.len = w[1].len - a.len - 1;
    }
    if (parse_num(&a, KVMUX_SLOTS - 1, &first) || parse_num(&b, KVMUX_SLOTS - 1, &last) ||
        first > last)
        return line_fail(err, cap, line, "slots '%.*s': want N or N-M with 0 <= N <= M <= %u",
                         (int)w[1].len, w[1].p, KVMUX_SLOTS - 1);
    if (parse_num(&w[2], 65535, &group))
        return line_fail(err, cap, line, "group '%.*s' is not 0..65535", (int)w[2].len, w[2].p);
    if (group && !kvmux_map_group_get(m, (uint16_t)group))
        return line_fail(err, cap, line, "group %u is not defined above", (unsigned)group);
    for (uint64_t s = first; s <= last; s++) m->owner[s] = (uint16_t)group;
    return 0;
}

static int parse_line(kvmux_map *m, const char *p, size_t len, unsigned line, int *have_epoch,
                      char *err, size_t cap) {
    word w[WORDS_MAX];
    unsigned nw = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r')) i++;
        if (i == len || p[i] == '#') break;
        size_t s = i;
        while (i < len && p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '#') i++;
        if (nw == WORDS_MAX) return line_fail(err, cap, line, "too many words");
        w[nw].p = p + s;
        w[nw].len = i - s;
        nw++;
    }
    if (nw == 0) return 0;
    if (word_is(&w[0], "epoch")) {
        uint64_t e;
        if (*have_epoch) return line_fail(err, cap, line, "a second epoch line");
        if (nw != 2 || parse_num(&w[1], UINT64_MAX, &e))
            return line_fail(err, cap, line, "epoch N (a decimal number)");
        m->epoch = e;
        *have_epoch = 1;
        return 0;
    }
    if (word_is(&w[0], "group")) return parse_group(m, w, nw, line, err, cap);
    if (word_is(&w[0], "slots")) return parse_slots(m, w, nw, line, err, cap);
    return line_fail(err, cap, line, "unknown keyword '%.*s' (epoch, group, slots)",
                     (int)w[0].len, w[0].p);
}

int kvmux_map_parse_text(kvmux_map *m, const char *text, char *err, size_t errcap) {
    unsigned line = 1;
    int have_epoch = 0;
    kvmux_map_init(m);
    for (const char *p = text;; line++) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (parse_line(m, p, len, line, &have_epoch, err, errcap)) return -1;
        if (!nl) break;
        p = nl + 1;
    }
    return 0;
}

/* An appender that counts what it could not write, like snprintf. */
typedef struct out {
    char *p;
    size_t cap, len;
} out;

static void put(out *o, const char *fmt, ...) {
    char tmp[96];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof tmp) n = (int)sizeof tmp - 1; /* never: short items */
    if (o->len < o->cap) {
        size_t room = o->cap - o->len - 1; /* keep the NUL */
        memcpy(o->p + o->len, tmp, (size_t)n < room ? (size_t)n : room);
    }
    o->len += (size_t)n;
}

size_t kvmux_map_format_text(const kvmux_map *m, char *buf, size_t cap) {
    out o = {buf, cap, 0};
    put(&o, "epoch %llu\n", (unsigned long long)m->epoch);
    for (unsigned g = 0; g < m->ngroups && g < KVMUX_MAP_MAX_GROUPS; g++) {
        const kvmux_map_group *gr = &m->groups[g];
        put(&o, "group %u", gr->id);
        for (unsigned i = 0; i < gr->n && i < KVMUX_MAP_MAX_MEMBERS; i++)
            put(&o, " %.*s", (int)(KVMUX_MAP_ADDR_MAX - 1), gr->addr[i]);
        put(&o, "\n");
    }
    for (unsigned s = 0, e; s < KVMUX_SLOTS; s = e) {
        for (e = s + 1; e < KVMUX_SLOTS && m->owner[e] == m->owner[s];) e++;
        if (!m->owner[s]) continue;
        if (e - 1 == s) put(&o, "slots %u %u\n", s, m->owner[s]);
        else put(&o, "slots %u-%u %u\n", s, e - 1, m->owner[s]);
    }
    if (cap) buf[o.len < cap ? o.len : cap - 1] = '\0';
    return o.len;
}
