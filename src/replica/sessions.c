/* The session table of the replicated state machine (sessions.h). */
#include "sessions.h"

#include <stdlib.h>
#include <string.h>

/* One remembered reply; seq 0 = an empty slot (seqs start at 1). */
typedef struct sess_reply {
    uint64_t seq;
    kvmux_fsm_result r;
} sess_reply;

struct kvmux_sess {
    uint64_t id, last_ms, max_seq;
    uint64_t floor;            /* the seq that created this incarnation: a
                                  resend below it may predate it */
    sess_reply *ring;          /* cap slots; seq s lives at s & (cap - 1) */
    uint32_t cap;
    kvmux_sess *older, *newer; /* the activity list */
    kvmux_sess *hnext;         /* hash chain */
};

#define RING_MIN 8u
/* The decoder's bound on a snapshot's rings: a ring never grows past the
 * window rounded up to a power of two, and --session-window <= 2^20. */
#define RING_MAX (1u << 20)

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

void kvmux_sessions_init(kvmux_sessions *t) {
    memset(t, 0, sizeof *t);
}

static uint32_t bucket(const kvmux_sessions *t, uint64_t sid) {
    return (uint32_t)((sid * 0x9E3779B97F4A7C15ull) >> 32) & (t->nbuckets - 1);
}

static kvmux_sess *find(const kvmux_sessions *t, uint64_t sid) {
    if (!t->nbuckets) return NULL;
    for (kvmux_sess *s = t->buckets[bucket(t, sid)]; s; s = s->hnext)
        if (s->id == sid) return s;
    return NULL;
}

static void list_unlink(kvmux_sessions *t, kvmux_sess *s) {
    if (s->older) s->older->newer = s->newer;
    else t->oldest = s->newer;
    if (s->newer) s->newer->older = s->older;
    else t->newest = s->older;
    s->older = s->newer = NULL;
}

static void list_append(kvmux_sessions *t, kvmux_sess *s) {
    s->older = t->newest;
    s->newer = NULL;
    if (t->newest) t->newest->newer = s;
    else t->oldest = s;
    t->newest = s;
}

static void set_count(kvmux_sessions *t, uint32_t n) {
    t->count = n;
    atomic_store_explicit(&t->n, n, memory_order_relaxed);
}

static void drop(kvmux_sessions *t, kvmux_sess *s) {
    kvmux_sess **pp = &t->buckets[bucket(t, s->id)];
    while (*pp != s) pp = &(*pp)->hnext;
    *pp = s->hnext;
    list_unlink(t, s);
    free(s->ring);
    free(s);
    set_count(t, t->count - 1);
}

void kvmux_sessions_clear(kvmux_sessions *t) {
    while (t->oldest) drop(t, t->oldest);
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
}

/* Keep about one session per bucket. Returns 0 or -1 (out of memory). */
static int grow_buckets(kvmux_sessions *t) {
    if (t->count < t->nbuckets) return 0;
    uint32_t n = t->nbuckets ? t->nbuckets * 2 : 64;
    kvmux_sess **b = calloc(n, sizeof *b);
    if (!b) return t->nbuckets ? 0 : -1; /* longer chains, still correct */
    kvmux_sess **old = t->buckets;
    uint32_t on = t->nbuckets;
    t->buckets = b;
    t->nbuckets = n;
    for (uint32_t i = 0; i < on; i++) {
        for (kvmux_sess *s = old[i], *next; s; s = next) {
            next = s->hnext;
            uint32_t h = bucket(t, s->id);
            s->hnext = b[h];
            b[h] = s;
        }
    }
    free(old);
    return 0;
}

static kvmux_sess *create(kvmux_sessions *t, uint64_t sid) {
    if (grow_buckets(t) != 0) return NULL;
    kvmux_sess *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->id = sid;
    uint32_t h = bucket(t, sid);
    s->hnext = t->buckets[h];
    t->buckets[h] = s;
    list_append(t, s);
    set_count(t, t->count + 1);
    return s;
}

void kvmux_sessions_expire(kvmux_sessions *t, const kvmux_sess_limits *lim, uint64_t now_ms) {
    while (t->oldest && now_ms - t->oldest->last_ms >= lim->timeout_ms &&
           now_ms >= t->oldest->last_ms) {
        drop(t, t->oldest);
        atomic_fetch_add_explicit(&t->expired, 1, memory_order_relaxed);
    }
}

/* 1 if seq is still inside s's window (its reply may be asked for). */
static int in_window(const kvmux_sess *s, const kvmux_sess_limits *lim, uint64_t seq) {
    return seq != 0 && (s->max_seq < lim->window || seq > s->max_seq - lim->window);
}

int kvmux_sessions_check(kvmux_sessions *t, const kvmux_sess_limits *lim, uint64_t now_ms,
                         uint64_t sid, uint64_t wire_seq, kvmux_fsm_result *out,
                         kvmux_sess **sp) {
    *sp = NULL;
    int retry = (wire_seq & KVMUX_SESS_RETRY) != 0;
    uint64_t seq = wire_seq & ~KVMUX_SESS_RETRY;
    if (seq == 0) goto refuse;
    kvmux_sess *s = find(t, sid);
    if (!s) {
        /* A first transmission cannot have been applied: it starts the
         * session (again, if it was forgotten). A resend of a session this
         * table does not know may have been applied before it forgot. */
        if (retry) goto refuse;
        if (t->count >= lim->max_sessions && t->oldest) {
            drop(t, t->oldest);
            atomic_fetch_add_explicit(&t->expired, 1, memory_order_relaxed);
        }
        s = create(t, sid);
        if (s) s->floor = seq;
    } else {
        const sess_reply *r = s->ring && in_window(s, lim, seq) ? &s->ring[seq & (s->cap - 1)]
                                                                : NULL;
        if (r && r->seq == seq) {
            *out = r->r;
            atomic_fetch_add_explicit(&t->duplicates, 1, memory_order_relaxed);
            return KVMUX_SESS_DUPLICATE;
        }
        /* A resend whose answer is no longer kept (below the window), or
         * that may predate this incarnation: cannot tell. A first
         * transmission is simply new. */
        if (retry && (!in_window(s, lim, seq) || seq < s->floor)) goto refuse;
    }
    if (s) {
        s->last_ms = now_ms;
        list_unlink(t, s);
        list_append(t, s);
    }
    *sp = s;
    return KVMUX_SESS_APPLY;
refuse:
    atomic_fetch_add_explicit(&t->refused, 1, memory_order_relaxed);
    return KVMUX_SESS_REFUSE;
}

int kvmux_sessions_peek(const kvmux_sessions *t, const kvmux_sess_limits *lim, uint64_t sid,
                        uint64_t wire_seq, kvmux_fsm_result *out) {
    int retry = (wire_seq & KVMUX_SESS_RETRY) != 0;
    uint64_t seq = wire_seq & ~KVMUX_SESS_RETRY;
    if (seq == 0) return KVMUX_SESS_REFUSE;
    const kvmux_sess *s = find(t, sid);
    if (!s) return retry ? KVMUX_SESS_REFUSE : KVMUX_SESS_APPLY;
    const sess_reply *r =
        s->ring && in_window(s, lim, seq) ? &s->ring[seq & (s->cap - 1)] : NULL;
    if (r && r->seq == seq) {
        *out = r->r;
        return KVMUX_SESS_DUPLICATE;
    }
    if (retry && (!in_window(s, lim, seq) || seq < s->floor)) return KVMUX_SESS_REFUSE;
    return KVMUX_SESS_APPLY;
}

/* Double s's ring, keeping the replies still in the window. */
static int grow_ring(kvmux_sess *s, const kvmux_sess_limits *lim) {
    uint32_t cap = s->cap ? s->cap * 2 : RING_MIN;
    sess_reply *ring = calloc(cap, sizeof *ring);
    if (!ring) return -1;
    for (uint32_t i = 0; i < s->cap; i++)
        if (in_window(s, lim, s->ring[i].seq)) ring[s->ring[i].seq & (cap - 1)] = s->ring[i];
    free(s->ring);
    s->ring = ring;
    s->cap = cap;
    return 0;
}

void kvmux_sessions_record(kvmux_sessions *t, const kvmux_sess_limits *lim, kvmux_sess *s,
                           uint64_t seq, const kvmux_fsm_result *r) {
    (void)t;
    if (!s) return;
    seq &= ~KVMUX_SESS_RETRY;
    if (seq > s->max_seq) s->max_seq = seq;
    /* A late first transmission below the window: applied, nothing to keep
     * (nobody may ask for it again). */
    if (!in_window(s, lim, seq)) return;
    /* A slot held by another seq still in the window: the ring is too
     * small for the writes in flight. Once cap >= W that cannot happen
     * (the window's seqs are W consecutive numbers). */
    while (!s->ring || (s->ring[seq & (s->cap - 1)].seq != 0 &&
                        s->ring[seq & (s->cap - 1)].seq != seq &&
                        in_window(s, lim, s->ring[seq & (s->cap - 1)].seq))) {
        if (s->cap >= lim->window && s->ring) break;
        if (grow_ring(s, lim) != 0) {
            if (!s->ring) return; /* untracked; see sessions.h */
            break;                /* overwrite: the oldest reply is lost */
        }
    }
    sess_reply *slot = &s->ring[seq & (s->cap - 1)];
    slot->seq = seq;
    slot->r = *r;
}

/* ---- snapshot encoding ----
 * u32 count, then per session, oldest first: u64 id, u64 last_ms,
 * u64 max_seq, u64 floor, u32 ring cap, u32 replies, then per reply:
 * u64 seq, u8 status, u8 extras_len, extras. */
#define SESS_HDR 40u
#define REPLY_HDR 10u

size_t kvmux_sessions_encoded_len(const kvmux_sessions *t) {
    size_t n = 4;
    for (const kvmux_sess *s = t->oldest; s; s = s->newer) {
        n += SESS_HDR;
        for (uint32_t i = 0; i < s->cap; i++)
            if (s->ring[i].seq) n += REPLY_HDR + s->ring[i].r.extras_len;
    }
    return n;
}

size_t kvmux_sessions_encode(const kvmux_sessions *t, uint8_t *out) {
    size_t off = 4;
    put32(out, t->count);
    for (const kvmux_sess *s = t->oldest; s; s = s->newer) {
        uint8_t *h = out + off;
        put64(h, s->id);
        put64(h + 8, s->last_ms);
        put64(h + 16, s->max_seq);
        put64(h + 24, s->floor);
        put32(h + 32, s->cap);
        off += SESS_HDR;
        uint32_t nr = 0;
        for (uint32_t i = 0; i < s->cap; i++) {
            const sess_reply *r = &s->ring[i];
            if (!r->seq) continue;
            put64(out + off, r->seq);
            out[off + 8] = r->r.status;
            out[off + 9] = r->r.extras_len;
            memcpy(out + off + REPLY_HDR, r->r.extras, r->r.extras_len);
            off += REPLY_HDR + r->r.extras_len;
            nr++;
        }
        put32(h + 36, nr);
    }
    return off;
}

static long decode_one(kvmux_sessions *t, const uint8_t *p, size_t len) {
    if (len < SESS_HDR) return -1;
    uint64_t sid = get64(p);
    uint32_t cap = get32(p + 32), nr = get32(p + 36);
    if (sid == 0 || find(t, sid) || cap > RING_MAX || (cap & (cap - 1)) != 0 || nr > cap ||
        (uint64_t)nr * REPLY_HDR > len - SESS_HDR)
        return -1; /* every length checked before anything is allocated */
    kvmux_sess *s = create(t, sid);
    if (!s) return -1;
    s->last_ms = get64(p + 8);
    s->max_seq = get64(p + 16);
    s->floor = get64(p + 24);
    if (cap && !(s->ring = calloc(cap, sizeof *s->ring))) return -1;
    s->cap = cap;
    size_t off = SESS_HDR;
    for (uint32_t i = 0; i < nr; i++) {
        if (len - off < REPLY_HDR) return -1;
        uint64_t seq = get64(p + off);
        uint8_t xl = p[off + 9];
        if (seq == 0 || xl > sizeof s->ring[0].r.extras || len - off - REPLY_HDR < xl)
            return -1;
        sess_reply *r = &s->ring[seq & (cap - 1)];
        if (r->seq) return -1;
        r->seq = seq;
        r->r.status = p[off + 8];
        r->r.extras_len = xl;
        memcpy(r->r.extras, p + off + REPLY_HDR, xl);
        off += REPLY_HDR + xl;
    }
    return (long)off;
}

long kvmux_sessions_decode(kvmux_sessions *t, const uint8_t *buf, size_t len) {
    kvmux_sessions_clear(t);
    if (len < 4) return -1;
    uint32_t n = get32(buf);
    size_t off = 4;
    for (uint32_t i = 0; i < n; i++) {
        long used = decode_one(t, buf + off, len - off);
        if (used < 0) {
            kvmux_sessions_clear(t);
            return -1;
        }
        off += (size_t)used;
    }
    return (long)off;
}
