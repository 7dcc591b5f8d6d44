/* The slot map: invariants, the binary wire form (docs/PROTOCOL.md 18.2)
 * and the operators' text form (cluster.h).
 *
 * Design: one canonical encoding. Owners are written as maximal runs of one
 * group, unassigned runs left out, so equal maps give equal bytes and a
 * node can compare an incoming map with its own by bytes. The decoder is
 * the mirror image and refuses everything the encoder would never write
 * (unordered or adjacent same-group ranges included), so decode and encode
 * are inverse bijections between valid maps and accepted inputs.
 *
 * No allocation: everything is in the caller's kvmux_map. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../proto/hostport.h"
#include "../proto/proto.h"
#include "cluster.h"
#include "cluster_internal.h"

#define MAP_HDR_LEN (4u + 1u + 8u + 2u) /* magic, format, epoch, ngroups */

static int fail(char *err, size_t cap, const char *fmt, ...) {
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void kvmux_map_init(kvmux_map *m) { memset(m, 0, sizeof *m); }

const kvmux_map_group *kvmux_map_group_get(const kvmux_map *m, uint16_t id) {
    /* Groups are kept in ascending id order: binary search. */
    size_t lo = 0, hi = m->ngroups <= KVMUX_MAP_MAX_GROUPS ? m->ngroups : KVMUX_MAP_MAX_GROUPS;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->groups[mid].id == id) return &m->groups[mid];
        if (m->groups[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int kvmux__map_addr_valid(const char *a, size_t len) {
    char host[KVMUX_MAP_ADDR_MAX];
    uint16_t port;
    if (len == 0 || len >= KVMUX_MAP_ADDR_MAX) return 0;
    for (size_t i = 0; i < len; i++)
        if (a[i] <= ' ' || a[i] > '~' || a[i] == '#') return 0;
    return kvmux_hostport_parse(a, len, host, sizeof host, &port) == 0;
}

/* Group g's id (nonzero, above the previous group's) and member count:
 * the checks kvmux_map_check and the decoder share. */
static int check_group_head(const kvmux_map *m, unsigned g, char *err, size_t cap) {
    const kvmux_map_group *gr = &m->groups[g];
    if (gr->id == 0) return fail(err, cap, "group id 0 (ids are 1..65535)");
    if (g > 0 && gr->id <= m->groups[g - 1].id)
        return fail(err, cap, "group %u after group %u: ids must ascend, once each", gr->id,
                    m->groups[g - 1].id);
    if (gr->n < 1 || gr->n > KVMUX_MAP_MAX_MEMBERS)
        return fail(err, cap, "group %u has %u members (1..%u)", gr->id, gr->n,
                    KVMUX_MAP_MAX_MEMBERS);
    return 0;
}

/* Groups and owners (everything but the epoch). */
static int check_body(const kvmux_map *m, char *err, size_t cap) {
    if (m->ngroups > KVMUX_MAP_MAX_GROUPS)
        return fail(err, cap, "%u groups: at most %u", m->ngroups, KVMUX_MAP_MAX_GROUPS);
    for (unsigned g = 0; g < m->ngroups; g++) {
        const kvmux_map_group *gr = &m->groups[g];
        if (check_group_head(m, g, err, cap) != 0) return -1;
        for (unsigned i = 0; i < gr->n; i++) {
            size_t len = strnlen(gr->addr[i], KVMUX_MAP_ADDR_MAX);
            if (!kvmux__map_addr_valid(gr->addr[i], len))
                return fail(err, cap, "group %u: member %u is not a valid host:port", gr->id,
                            i + 1);
        }
    }
    for (unsigned s = 0; s < KVMUX_SLOTS; s++)
        if (m->owner[s] && !kvmux_map_group_get(m, m->owner[s]))
            return fail(err, cap, "slot %u: group %u is not listed", s, m->owner[s]);
    return 0;
}

int kvmux_map_check(const kvmux_map *m, char *err, size_t errcap) {
    if (m->epoch == 0) return fail(err, errcap, "epoch 0 (a map's epoch is >= 1)");
    return check_body(m, err, errcap);
}

/* The end (exclusive) of the run of equal owners starting at slot s. */
static unsigned run_end(const kvmux_map *m, unsigned s) {
    unsigned e = s + 1;
    while (e < KVMUX_SLOTS && m->owner[e] == m->owner[s]) e++;
    return e;
}

static size_t count_ranges(const kvmux_map *m) {
    size_t n = 0;
    for (unsigned s = 0; s < KVMUX_SLOTS; s = run_end(m, s))
        if (m->owner[s]) n++;
    return n;
}

size_t kvmux_map_encoded_size(const kvmux_map *m) {
    size_t n = MAP_HDR_LEN + 2u + 6u * count_ranges(m);
    for (unsigned g = 0; g < m->ngroups && g < KVMUX_MAP_MAX_GROUPS; g++) {
        n += 3u;
        for (unsigned i = 0; i < m->groups[g].n && i < KVMUX_MAP_MAX_MEMBERS; i++)
            n += 1u + strnlen(m->groups[g].addr[i], KVMUX_MAP_ADDR_MAX - 1);
    }
    return n;
}

size_t kvmux_map_encode(const kvmux_map *m, uint8_t *out, size_t cap) {
    size_t need = kvmux_map_encoded_size(m);
    if (cap < need) return 0;
    uint8_t *p = out;
    memcpy(p, KVMUX_MAP_MAGIC, 4);
    p[4] = KVMUX_MAP_FORMAT;
    kvmux_store_u64be(p + 5, m->epoch);
    kvmux_store_u16be(p + 13, m->ngroups);
    p += MAP_HDR_LEN;
    for (unsigned g = 0; g < m->ngroups && g < KVMUX_MAP_MAX_GROUPS; g++) {
        const kvmux_map_group *gr = &m->groups[g];
        kvmux_store_u16be(p, gr->id);
        p[2] = gr->n;
        p += 3;
        for (unsigned i = 0; i < gr->n && i < KVMUX_MAP_MAX_MEMBERS; i++) {
            size_t len = strnlen(gr->addr[i], KVMUX_MAP_ADDR_MAX - 1);
            *p++ = (uint8_t)len;
            memcpy(p, gr->addr[i], len);
            p += len;
        }
    }
    kvmux_store_u16be(p, (uint16_t)count_ranges(m));
    p += 2;
    for (unsigned s = 0, e; s < KVMUX_SLOTS; s = e) {
        e = run_end(m, s);
        if (!m->owner[s]) continue;
        kvmux_store_u16be(p, (uint16_t)s);
        kvmux_store_u16be(p + 2, (uint16_t)(e - 1));
        kvmux_store_u16be(p + 4, m->owner[s]);
        p += 6;
    }
    return (size_t)(p - out);
}

/* A bounds-checked reader over the input. */
typedef struct rd {
    const uint8_t *p;
    size_t len, off;
} rd;

static int rd_need(rd *r, size_t n) { return r->len - r->off >= n; }

static int decode_groups(kvmux_map *m, rd *r, char *err, size_t cap) {
    for (unsigned g = 0; g < m->ngroups; g++) {
        kvmux_map_group *gr = &m->groups[g];
        if (!rd_need(r, 3)) return fail(err, cap, "truncated in group %u", g + 1);
        gr->id = kvmux_load_u16be(r->p + r->off);
        gr->n = r->p[r->off + 2];
        r->off += 3;
        if (check_group_head(m, g, err, cap) != 0) return -1;
        for (unsigned i = 0; i < gr->n; i++) {
            if (!rd_need(r, 1)) return fail(err, cap, "truncated in group %u", gr->id);
            size_t alen = r->p[r->off++];
            if (!rd_need(r, alen)) return fail(err, cap, "truncated in group %u", gr->id);
            if (!kvmux__map_addr_valid((const char *)r->p + r->off, alen))
                return fail(err, cap, "group %u: member %u is not a valid host:port", gr->id,
                            i + 1);
            memcpy(gr->addr[i], r->p + r->off, alen);
            gr->addr[i][alen] = '\0';
            r->off += alen;
        }
    }
    return 0;
}

static int decode_ranges(kvmux_map *m, rd *r, char *err, size_t cap) {
    if (!rd_need(r, 2)) return fail(err, cap, "truncated before the range count");
    unsigned nranges = kvmux_load_u16be(r->p + r->off);
    r->off += 2;
    long prev_last = -1;
    uint16_t prev_group = 0;
    for (unsigned i = 0; i < nranges; i++) {
        if (!rd_need(r, 6)) return fail(err, cap, "truncated in range %u", i + 1);
        unsigned first = kvmux_load_u16be(r->p + r->off);
        unsigned last = kvmux_load_u16be(r->p + r->off + 2);
        uint16_t group = kvmux_load_u16be(r->p + r->off + 4);
        r->off += 6;
        if (last >= KVMUX_SLOTS || first > last)
            return fail(err, cap, "range %u: slots %u-%u (0 <= first <= last < %u)", i + 1,
                        first, last, KVMUX_SLOTS);
        if ((long)first <= prev_last)
            return fail(err, cap, "range %u: slots %u-%u overlap or precede the range before",
                        i + 1, first, last);
        if ((long)first == prev_last + 1 && group == prev_group)
            return fail(err, cap, "range %u: slots %u-%u continue the range before (group %u): "
                        "not maximal", i + 1, first, last, group);
        if (group == 0 || !kvmux_map_group_get(m, group))
            return fail(err, cap, "range %u: group %u is not listed", i + 1, group);
        for (unsigned s = first; s <= last; s++) m->owner[s] = group;
        prev_last = last;
        prev_group = group;
    }
    return 0;
}

int kvmux_map_decode(kvmux_map *m, const uint8_t *p, size_t len, char *err, size_t errcap) {
    rd r = {p, len, 0};
    kvmux_map_init(m);
    if (!rd_need(&r, MAP_HDR_LEN)) return fail(err, errcap, "truncated header (%zu bytes)", len);
    if (memcmp(p, KVMUX_MAP_MAGIC, 4) != 0) return fail(err, errcap, "not a slot map (magic)");
    if (p[4] != KVMUX_MAP_FORMAT)
        return fail(err, errcap, "slot map format %u (this build reads %u)", p[4],
                    KVMUX_MAP_FORMAT);
    m->epoch = kvmux_load_u64be(p + 5);
    if (m->epoch == 0) return fail(err, errcap, "epoch 0 (a map's epoch is >= 1)");
    unsigned ngroups = kvmux_load_u16be(p + 13);
    if (ngroups > KVMUX_MAP_MAX_GROUPS)
        return fail(err, errcap, "%u groups: at most %u", ngroups, KVMUX_MAP_MAX_GROUPS);
    m->ngroups = (uint16_t)ngroups;
    r.off = MAP_HDR_LEN;
    if (decode_groups(m, &r, err, errcap) || decode_ranges(m, &r, err, errcap)) return -1;
    if (r.off != len) return fail(err, errcap, "%zu trailing bytes", len - r.off);
    return 0;
}
