/* The map group's migration table (migtab.h). */
#include "migtab.h"

#include <stdio.h>
#include <string.h>

#include "../proto/proto.h"

void kvmux_migtab_init(kvmux_migtab *t) {
    t->mgen = 0;
    t->next_id = 1;
    t->n = 0;
}

static kvmux_migrec *find(kvmux_migtab *t, uint32_t id) {
    for (uint16_t i = 0; i < t->n; i++)
        if (t->rec[i].id == id) return &t->rec[i];
    return NULL;
}

const kvmux_migrec *kvmux_migtab_find(const kvmux_migtab *t, uint32_t id) {
    return find((kvmux_migtab *)t, id);
}

uint32_t kvmux_migtab_count(const kvmux_migtab *t, int state) {
    uint32_t k = 0;
    for (uint16_t i = 0; i < t->n; i++) k += t->rec[i].state == state;
    return k;
}

uint32_t kvmux_migtab_unacked(const kvmux_migtab *t) {
    uint32_t k = 0;
    for (uint16_t i = 0; i < t->n; i++)
        k += t->rec[i].state != KVMUX_MIG_OPEN && t->rec[i].acks != 3;
    return k;
}

/* ---- codec ---- */

size_t kvmux_migtab_encoded_size(const kvmux_migtab *t) {
    size_t n = KVMUX_MIG_HDR_LEN;
    for (uint16_t i = 0; i < t->n; i++) n += KVMUX_MIG_REC_FIXED + t->rec[i].reason_len;
    return n;
}

size_t kvmux_migtab_encode(const kvmux_migtab *t, uint8_t *out, size_t cap) {
    size_t need = kvmux_migtab_encoded_size(t);
    if (cap < need) return 0;
    memcpy(out, KVMUX_MIG_MAGIC, 4);
    out[4] = KVMUX_MIG_FORMAT;
    kvmux_store_u64be(out + 5, t->mgen);
    kvmux_store_u32be(out + 13, t->next_id);
    kvmux_store_u16be(out + 17, t->n);
    uint8_t *p = out + KVMUX_MIG_HDR_LEN;
    for (uint16_t i = 0; i < t->n; i++) {
        const kvmux_migrec *r = &t->rec[i];
        kvmux_store_u32be(p, r->id);
        kvmux_store_u16be(p + 4, r->first);
        kvmux_store_u16be(p + 6, r->last);
        kvmux_store_u16be(p + 8, r->src);
        kvmux_store_u16be(p + 10, r->dst);
        p[12] = r->state;
        p[13] = r->acks;
        kvmux_store_u64be(p + 14, r->start_epoch);
        kvmux_store_u64be(p + 22, r->end_epoch);
        kvmux_store_u64be(p + 30, r->created_ms);
        kvmux_store_u64be(p + 38, r->ended_ms);
        p[46] = r->reason_len;
        memcpy(p + KVMUX_MIG_REC_FIXED, r->reason, r->reason_len);
        p += KVMUX_MIG_REC_FIXED + r->reason_len;
    }
    return need;
}

static int fail(char *err, size_t cap, const char *why, unsigned long idx) {
    if (err && cap) {
        if (idx == (unsigned long)-1) snprintf(err, cap, "migration table: %s", why);
        else snprintf(err, cap, "migration table: record %lu: %s", idx, why);
    }
    return -1;
}

/* One record at p (at least KVMUX_MIG_REC_FIXED bytes, len in all) into
 * r: NULL, or why it is refused. *used gets its length. */
static const char *decode_rec(kvmux_migrec *r, const uint8_t *p, size_t len, size_t *used) {
    r->id = kvmux_load_u32be(p);
    r->first = kvmux_load_u16be(p + 4);
    r->last = kvmux_load_u16be(p + 6);
    r->src = kvmux_load_u16be(p + 8);
    r->dst = kvmux_load_u16be(p + 10);
    r->state = p[12];
    r->acks = p[13];
    r->start_epoch = kvmux_load_u64be(p + 14);
    r->end_epoch = kvmux_load_u64be(p + 22);
    r->created_ms = kvmux_load_u64be(p + 30);
    r->ended_ms = kvmux_load_u64be(p + 38);
    r->reason_len = p[46];
    if (r->id == 0) return "id 0";
    if (r->first > r->last) return "first slot after last";
    if (r->last >= KVMUX_SLOTS) return "slot out of range";
    if (r->src == 0 || r->dst == 0) return "group 0";
    if (r->src == r->dst) return "source and target are the same group";
    if (r->state < KVMUX_MIG_OPEN || r->state > KVMUX_MIG_ABORTED) return "bad state";
    if (r->acks > 3) return "bad acks";
    if (r->end_epoch != 0 && r->state != KVMUX_MIG_COMMITTED) return "end epoch on a record not committed";
    if (r->reason_len > KVMUX_MIG_REASON_MAX) return "reason over 200 bytes";
    if (len - KVMUX_MIG_REC_FIXED < r->reason_len) return "truncated";
    for (uint8_t i = 0; i < r->reason_len; i++) {
        uint8_t ch = p[KVMUX_MIG_REC_FIXED + i];
        if (ch < 0x20 || ch > 0x7e) return "reason not printable";
        r->reason[i] = (char)ch;
    }
    r->reason[r->reason_len] = '\0';
    *used = KVMUX_MIG_REC_FIXED + r->reason_len;
    return NULL;
}

int kvmux_migtab_decode(kvmux_migtab *t, const uint8_t *p, size_t len, char *err, size_t errcap) {
    if (len < KVMUX_MIG_HDR_LEN) return fail(err, errcap, "truncated", (unsigned long)-1);
    if (memcmp(p, KVMUX_MIG_MAGIC, 4) != 0) return fail(err, errcap, "bad magic", (unsigned long)-1);
    if (p[4] != KVMUX_MIG_FORMAT) return fail(err, errcap, "unknown format", (unsigned long)-1);
    t->mgen = kvmux_load_u64be(p + 5);
    t->next_id = kvmux_load_u32be(p + 13);
    uint16_t n = kvmux_load_u16be(p + 17);
    if (n > KVMUX_MIG_MAX_RECORDS) return fail(err, errcap, "too many records", (unsigned long)-1);
    t->n = 0;
    size_t off = KVMUX_MIG_HDR_LEN;
    for (uint16_t i = 0; i < n; i++) {
        if (len - off < KVMUX_MIG_REC_FIXED) return fail(err, errcap, "truncated", i);
        size_t used = 0;
        const char *why = decode_rec(&t->rec[i], p + off, len - off, &used);
        if (why) return fail(err, errcap, why, i);
        if (i && t->rec[i].id <= t->rec[i - 1].id) return fail(err, errcap, "ids not ascending", i);
        off += used;
        t->n = (uint16_t)(i + 1);
    }
    if (off != len) return fail(err, errcap, "trailing bytes", (unsigned long)-1);
    return 0;
}

/* ---- rules ---- */

static kvmux_migres result(uint8_t status, uint8_t why, uint32_t id, uint16_t group,
                           uint64_t epoch) {
    kvmux_migres r = {.status = status, .why = why, .group = group, .id = id, .epoch = epoch};
    return r;
}

static const kvmux_migrec *open_with(const kvmux_migtab *t, int src_side, uint16_t g) {
    for (uint16_t i = 0; i < t->n; i++) {
        const kvmux_migrec *r = &t->rec[i];
        if (r->state == KVMUX_MIG_OPEN && (src_side ? r->src : r->dst) == g) return r;
    }
    return NULL;
}

/* Drop every record both sides acked with KEEP_ENDED newer (higher-id)
 * ended ones: a record is never dropped before both groups acted on it.
 * Run after every change, so the table stays within MAX_RECORDS. */
static void retire(kvmux_migtab *t) {
    uint8_t drop[KVMUX_MIG_MAX_RECORDS];
    uint32_t newer = 0;
    for (uint16_t i = t->n; i-- > 0;) {
        const kvmux_migrec *r = &t->rec[i];
        drop[i] = r->state != KVMUX_MIG_OPEN && r->acks == 3 && newer >= KVMUX_MIG_KEEP_ENDED;
        newer += r->state != KVMUX_MIG_OPEN;
    }
    uint16_t w = 0;
    for (uint16_t i = 0; i < t->n; i++) {
        if (drop[i]) continue;
        if (w != i) t->rec[w] = t->rec[i];
        w++;
    }
    t->n = w;
}

kvmux_migres kvmux_migtab_create(kvmux_migtab *t, const kvmux_map *m, uint16_t first,
                                 uint16_t last, uint16_t dst, uint64_t now_ms) {
    if (!m) return result(KVMUX_STATUS_BAD_REQUEST, KVMUX_MIGR_NO_MAP, 0, 0, 0);
    if (first > last || last >= KVMUX_SLOTS)
        return result(KVMUX_STATUS_BAD_REQUEST, KVMUX_MIGR_BAD_RANGE, 0, 0, 0);
    uint16_t src = m->owner[first];
    for (uint32_t s = first; s <= last; s++)
        if (m->owner[s] != src || src == 0)
            return result(KVMUX_STATUS_BAD_REQUEST, KVMUX_MIGR_NOT_ONE_GROUP, 0, 0,
                          (uint64_t)first << 16 | last);
    if (dst == 0 || !kvmux_map_group_get(m, dst))
        return result(KVMUX_STATUS_BAD_REQUEST, KVMUX_MIGR_DST_NOT_IN_MAP, 0, dst, 0);
    if (dst == src)
        return result(KVMUX_STATUS_BAD_REQUEST, KVMUX_MIGR_ALREADY_DST, 0, dst,
                      (uint64_t)first << 16 | last);
    if (kvmux_migtab_count(t, KVMUX_MIG_OPEN) >= KVMUX_MIG_MAX_OPEN)
        return result(KVMUX_STATUS_BUSY, KVMUX_MIGR_OPEN_FULL, 0, 0, 0);
    const kvmux_migrec *o = open_with(t, 1, src);
    if (o) return result(KVMUX_STATUS_BUSY, KVMUX_MIGR_SRC_BUSY, o->id, src, 0);
    if ((o = open_with(t, 0, dst))) return result(KVMUX_STATUS_BUSY, KVMUX_MIGR_DST_BUSY, o->id, dst, 0);
    if (kvmux_migtab_unacked(t) >= KVMUX_MIG_MAX_UNACKED || t->n >= KVMUX_MIG_MAX_RECORDS ||
        t->next_id == 0) /* next_id 0: 2^32 - 1 migrations made; cannot happen in practice */
        return result(KVMUX_STATUS_BUSY, KVMUX_MIGR_UNACKED_FULL, 0, 0, 0);
    kvmux_migrec *r = &t->rec[t->n++];
    memset(r, 0, sizeof *r);
    r->id = t->next_id++;
    r->first = first;
    r->last = last;
    r->src = src;
    r->dst = dst;
    r->state = KVMUX_MIG_OPEN;
    r->start_epoch = m->epoch;
    r->created_ms = now_ms;
    t->mgen++;
    return result(KVMUX_STATUS_OK, KVMUX_MIGR_CREATED, r->id, dst, m->epoch);
}

kvmux_migres kvmux_migtab_commit(kvmux_migtab *t, const kvmux_map *m, uint32_t id,
                                 uint64_t now_ms, kvmux_map *next, int *install) {
    *install = 0;
    kvmux_migrec *r = find(t, id);
    if (!r) return result(KVMUX_STATUS_NOT_FOUND, KVMUX_MIGR_NOT_FOUND, id, 0, 0);
    if (r->state == KVMUX_MIG_COMMITTED)
        return result(KVMUX_STATUS_OK, KVMUX_MIGR_COMMITTED, id, r->dst, r->end_epoch);
    if (r->state == KVMUX_MIG_ABORTED)
        return result(KVMUX_STATUS_VERSION_MISMATCH, KVMUX_MIGR_WAS_ABORTED, id, 0, 0);
    int ok = m && kvmux_map_group_get(m, r->dst) != NULL;
    for (uint32_t s = r->first; ok && s <= r->last; s++) ok = m->owner[s] == r->src;
    if (!ok) return result(KVMUX_STATUS_INTERNAL, KVMUX_MIGR_MOVED, id, 0, 0);
    *next = *m;
    next->epoch = m->epoch + 1;
    for (uint32_t s = r->first; s <= r->last; s++) next->owner[s] = r->dst;
    r->state = KVMUX_MIG_COMMITTED;
    r->end_epoch = next->epoch;
    r->ended_ms = now_ms;
    t->mgen++;
    *install = 1;
    retire(t);
    return result(KVMUX_STATUS_OK, KVMUX_MIGR_COMMITTED, id, r->dst, r->end_epoch);
}

kvmux_migres kvmux_migtab_abort(kvmux_migtab *t, uint32_t id, const char *reason, size_t rlen,
                                uint64_t now_ms) {
    kvmux_migrec *r = find(t, id);
    if (!r) return result(KVMUX_STATUS_NOT_FOUND, KVMUX_MIGR_NOT_FOUND, id, 0, 0);
    if (r->state == KVMUX_MIG_COMMITTED)
        return result(KVMUX_STATUS_VERSION_MISMATCH, KVMUX_MIGR_IS_COMMITTED, id, 0, r->end_epoch);
    if (r->state == KVMUX_MIG_ABORTED) return result(KVMUX_STATUS_OK, KVMUX_MIGR_ABORTED, id, 0, 0);
    if (rlen > KVMUX_MIG_REASON_MAX) rlen = KVMUX_MIG_REASON_MAX;
    r->state = KVMUX_MIG_ABORTED;
    r->ended_ms = now_ms;
    r->reason_len = (uint8_t)rlen;
    memcpy(r->reason, reason, rlen);
    r->reason[rlen] = '\0';
    t->mgen++;
    retire(t);
    return result(KVMUX_STATUS_OK, KVMUX_MIGR_ABORTED, id, 0, 0);
}

kvmux_migres kvmux_migtab_ack(kvmux_migtab *t, uint32_t id, uint16_t group) {
    kvmux_migrec *r = find(t, id);
    if (!r) return result(KVMUX_STATUS_NOT_FOUND, KVMUX_MIGR_NOT_FOUND, id, group, 0);
    if (r->state == KVMUX_MIG_OPEN)
        return result(KVMUX_STATUS_BAD_REQUEST, KVMUX_MIGR_NOT_ENDED, id, group, 0);
    uint8_t bit = group == r->src ? KVMUX_MIG_ACK_SRC : group == r->dst ? KVMUX_MIG_ACK_DST : 0;
    if (!bit) return result(KVMUX_STATUS_BAD_REQUEST, KVMUX_MIGR_NOT_SIDE, id, group, 0);
    if (!(r->acks & bit)) {
        r->acks |= bit;
        retire(t);
        t->mgen++;
    }
    return result(KVMUX_STATUS_OK, KVMUX_MIGR_ACKED, id, group, 0);
}

int kvmux_migtab_guard(const kvmux_migtab *t, const kvmux_map *next, kvmux_migres *res) {
    for (uint16_t i = 0; i < t->n; i++) {
        const kvmux_migrec *r = &t->rec[i];
        if (r->state != KVMUX_MIG_OPEN) continue;
        int ok = kvmux_map_group_get(next, r->src) && kvmux_map_group_get(next, r->dst);
        for (uint32_t s = r->first; ok && s <= r->last; s++) ok = next->owner[s] == r->src;
        if (!ok) {
            *res = result(KVMUX_STATUS_BAD_REQUEST, 0, r->id, 0,
                          (uint64_t)r->first << 16 | r->last);
            return -1;
        }
    }
    return 0;
}

/* ---- answers ---- */

void kvmux_migtab_message(const kvmux_migtab *t, const kvmux_migres *res, char *out, size_t cap) {
    const kvmux_migrec *r = kvmux_migtab_find(t, res->id);
    unsigned long id = res->id, g = res->group;
    unsigned long long e = (unsigned long long)res->epoch;
    unsigned f = (unsigned)(res->epoch >> 16 & 0xffff), l = (unsigned)(res->epoch & 0xffff);
    switch (res->why) {
    case KVMUX_MIGR_CREATED:
        if (r) snprintf(out, cap, "migration %lu: slots %u-%u from group %u to group %u", id,
                        r->first, r->last, r->src, r->dst);
        else snprintf(out, cap, "migration %lu created", id);
        return;
    case KVMUX_MIGR_COMMITTED: snprintf(out, cap, "migration %lu committed at epoch %llu", id, e); return;
    case KVMUX_MIGR_ABORTED: snprintf(out, cap, "migration %lu aborted", id); return;
    case KVMUX_MIGR_ACKED: snprintf(out, cap, "migration %lu acknowledged by group %lu", id, g); return;
    case KVMUX_MIGR_NO_MAP: snprintf(out, cap, "no slot map installed"); return;
    case KVMUX_MIGR_BAD_RANGE: snprintf(out, cap, "slot range out of 0-16383 or reversed"); return;
    case KVMUX_MIGR_NOT_ONE_GROUP: snprintf(out, cap, "slots %u-%u are not served by one group", f, l); return;
    case KVMUX_MIGR_DST_NOT_IN_MAP: snprintf(out, cap, "group %lu is not in the map", g); return;
    case KVMUX_MIGR_ALREADY_DST: snprintf(out, cap, "slots %u-%u are already group %lu's", f, l, g); return;
    case KVMUX_MIGR_SRC_BUSY:
        snprintf(out, cap, "group %lu is already the source of migration %lu", g, id);
        return;
    case KVMUX_MIGR_DST_BUSY:
        snprintf(out, cap, "group %lu is already the target of migration %lu", g, id);
        return;
    case KVMUX_MIGR_OPEN_FULL: snprintf(out, cap, "%u migrations are open", KVMUX_MIG_MAX_OPEN); return;
    case KVMUX_MIGR_UNACKED_FULL:
        snprintf(out, cap, "%u ended migrations await their groups' acknowledgements",
                 KVMUX_MIG_MAX_UNACKED);
        return;
    case KVMUX_MIGR_NOT_FOUND: snprintf(out, cap, "no migration %lu", id); return;
    case KVMUX_MIGR_IS_COMMITTED:
        snprintf(out, cap, "migration %lu is committed (epoch %llu)", id, e);
        return;
    case KVMUX_MIGR_WAS_ABORTED:
        snprintf(out, cap, "migration %lu was aborted: %s", id, r ? r->reason : "");
        return;
    case KVMUX_MIGR_NOT_ENDED: snprintf(out, cap, "migration %lu has not ended", id); return;
    case KVMUX_MIGR_NOT_SIDE:
        snprintf(out, cap, "group %lu is neither side of migration %lu", g, id);
        return;
    case KVMUX_MIGR_MOVED:
        snprintf(out, cap, "migration %lu: its slots are no longer the source's", id);
        return;
    default: snprintf(out, cap, "malformed migration request"); return;
    }
}
