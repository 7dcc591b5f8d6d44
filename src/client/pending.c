/* kvmux client pending table: the map from request id to the caller waiting
 * for that id's reply.
 *
 * Design: a slot array sized to the credits we use (min of the server's
 * MAX_OUTSTANDING and kvmux_options.max_outstanding), so holding a slot *is*
 * holding a credit and the client can never exceed the server's cap. A
 * request id is
 *
 *     id = generation << slot_bits | slot_index
 *
 * so lookup is an index plus one compare (no hashing), and each slot carries
 * its own generation counter, advanced every time the slot is freed. A reply
 * whose generation differs from the slot's current one is late (or bogus)
 * and is dropped: it can never complete a newer call.
 *
 * Reuse rule (GUIDE trap 8, id wrap-around): generations wrap modulo
 * 2^(32 - slot_bits), but a slot is only handed out when FREE, and the low
 * bits of an id name exactly one slot, so an id that is still WAITING or
 * TOMBSTONE can never be issued again, wrap or no wrap. Id 0 names
 * connection-level frames: the one (generation, slot) pair that would give
 * 0 is skipped.
 *
 * Timeouts leave tombstones (GUIDE trap 3): a caller that gives up turns its
 * slot into a TOMBSTONE, which keeps the id and the credit until the late
 * reply arrives; the reader then frees it. Free slots are handed out oldest
 * first (a FIFO ring), so ids advance like a counter and a just-freed id is
 * reissued as late as possible.
 *
 * Memory: a slot is 48 bytes (plus 2 in the free ring) per credit, all
 * allocated at the handshake, and it is all an in-flight callback request
 * costs: the slot holds the callback, its user data, handle, deadline and
 * timer links (the id doubles as the generation counter, the links
 * are 16-bit slot indices). It holds no
 * reply and no wait primitive: a reply is written straight into its owner
 * (a blocking caller's wait record on its own stack, a future, or a
 * transient completion record for a callback) and the slot is freed in the
 * same step (async.c kvmux__slot_finish); the state of a fragmented reply
 * -- rare -- is a side allocation (kvmux__slotx, in the side array xs,
 * itself allocated at the connection's first fragmented reply).
 *
 * What it is not: no locking (every function runs under the client mutex),
 * no I/O, no waiting: waiting is call.c's, completion async.c's and
 * reader.c's.
 */
#include "pending.h"

#include <stdlib.h>
#include <string.h>


/* The layout the memory target counts on (64-bit: 48 bytes per credit,
 * plus 2 in the free ring: <= 64 with the blocking caller's own share,
 * the client's memory goal in docs/BENCHMARKS.md). */
_Static_assert(sizeof(kvmux__slot) <= 4 * sizeof(void *) + 16, "kvmux__slot grew");
_Static_assert(KVMUX_CLIENT_MAX_SLOTS <= KVMUX__SLOT_NIL, "slot indices must fit the links");

/* The id slot idx carries with generation gen. */
static uint32_t pending_make_id(const kvmux__pending *t, uint32_t idx, uint32_t gen) {
    /* slot_bits may be 0 (one slot); shifting a u32 by 32 is undefined, but
     * slot_bits <= 16 here, and gen_mask keeps gen within 32 - slot_bits. */
    return (gen << t->slot_bits) | idx;
}

/* The generation of id (a shift by slot_bits <= 16 is defined). */
static uint32_t pending_gen(const kvmux__pending *t, uint32_t id) {
    return (id >> t->slot_bits) & t->gen_mask;
}

int kvmux__pending_init(kvmux__pending *t, uint32_t nslots, uint32_t first_id) {
    memset(t, 0, sizeof *t);
    if (nslots == 0 || nslots > KVMUX_CLIENT_MAX_SLOTS) return KVMUX_EINVAL;
    uint32_t bits = 0;
    while ((1u << bits) < nslots) bits++;
    t->slot_bits = bits;
    t->gen_mask = bits == 0 ? UINT32_MAX : (UINT32_MAX >> bits);
    t->slots = calloc(nslots, sizeof *t->slots);
    t->fifo = calloc(nslots, sizeof *t->fifo);
    if (!t->slots || !t->fifo) {
        free(t->slots);
        free(t->fifo);
        memset(t, 0, sizeof *t);
        return KVMUX_ENOMEM;
    }
    /* Order the ring so the first slot taken is first_id's own index, and
     * give the slots "before" it in that order the next generation: ids
     * then come out as first_id, first_id + 1, ... across the wrap. */
    uint32_t idx_mask = (uint32_t)((1ull << bits) - 1);
    uint32_t start = first_id & idx_mask;
    if (start >= nslots) start = 0;
    uint32_t gen0 = (first_id >> bits) & t->gen_mask;
    for (uint32_t i = 0; i < nslots; i++) {
        kvmux__slot *s = &t->slots[i];
        s->state = KVMUX__SLOT_FREE;
        s->tclass = KVMUX__TCLASS_NONE;
        s->tnext = KVMUX__SLOT_NIL;
        s->id = pending_make_id(t, i, i < start ? ((gen0 + 1) & t->gen_mask) : gen0);
        t->fifo[i] = (uint16_t)((start + i) % nslots);
    }
    t->nslots = nslots;
    t->fifo_head = 0;
    t->nfree = nslots;
    return 0;
}

kvmux__slotx *kvmux__pending_x_new(kvmux__pending *t, kvmux__slot *s) {
    if (!t->xs) {
        /* The first fragmented reply of this connection. */
        t->xs = calloc(t->nslots, sizeof *t->xs);
        if (!t->xs) return NULL;
    }
    kvmux__slotx *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    t->xs[s - t->slots] = x;
    s->flags |= KVMUX__SF_X;
    return x;
}

void kvmux__pending_x_free(kvmux__pending *t, kvmux__slot *s) {
    kvmux__slotx *x = kvmux__pending_x(t, s);
    if (!x) return;
    free(x->value);
    free(x->rvalue);
    free(x);
    t->xs[s - t->slots] = NULL;
    s->flags &= (uint8_t)~KVMUX__SF_X;
}

void kvmux__slot_disown(kvmux__pending *t, kvmux__slot *s) {
    kvmux__pending_disarm(t, s);
    s->owner = KVMUX__OWNER_NONE;
    s->flags &= (uint8_t)~KVMUX__SF_CANCEL;
    s->u.aop = NULL;
    kvmux__slotx *x = kvmux__pending_x(t, s);
    if (x) {
        /* The rest of the reply is only counted (the windows must stay
         * right); what arrived so far goes now. */
        x->asm_dst = NULL;
        free(x->value);
        free(x->rvalue);
        x->value = NULL;
        x->rvalue = NULL;
    }
}

/* Free a parked slot's reply value (teardown only: normally the callback
 * took it). */
static void pending_free_done(kvmux__slot *s) {
    if (s->state == KVMUX__SLOT_DONE && (s->flags & KVMUX__SF_DVAL)) {
        free(s->done.value);
        s->done.value = NULL;
        s->dlen = 0;
        s->flags &= (uint8_t)~KVMUX__SF_DVAL;
    }
}

void kvmux__pending_deinit(kvmux__pending *t) {
    if (!t->slots) return;
    /* A fragmented reply cut off by the end of the connection. */
    for (uint32_t i = 0; i < t->nslots; i++) {
        kvmux__pending_x_free(t, &t->slots[i]);
        pending_free_done(&t->slots[i]);
    }
    free(t->xs);
    free(t->slots);
    free(t->fifo);
    memset(t, 0, sizeof *t);
}

kvmux__slot *kvmux__pending_take(kvmux__pending *t, uint32_t *id_out) {
    if (t->nfree == 0) return NULL;
    uint32_t idx = t->fifo[t->fifo_head];
    t->fifo_head = (t->fifo_head + 1) % t->nslots;
    t->nfree--;
    kvmux__slot *s = &t->slots[idx];
    uint32_t id = s->id;
    if (id == 0) {
        /* Slot 0, generation 0: id 0 is reserved. Skip that generation. */
        id = pending_make_id(t, idx, 1);
    }
    s->state = KVMUX__SLOT_WAITING;
    s->id = id;
    s->op = 0;
    s->want_value = 0;
    s->owner = KVMUX__OWNER_NONE;
    s->flags = 0;
    s->u.aop = NULL;
    *id_out = id;
    return s;
}

kvmux__slot *kvmux__pending_find(kvmux__pending *t, uint32_t id) {
    if (id == 0) return NULL;
    uint32_t idx = (uint32_t)(id & ((1ull << t->slot_bits) - 1));
    if (idx >= t->nslots) return NULL;
    kvmux__slot *s = &t->slots[idx];
    if (s->state == KVMUX__SLOT_FREE || s->state == KVMUX__SLOT_DONE || s->id != id)
        return NULL;
    return s;
}

void kvmux__pending_tombstone(kvmux__pending *t, kvmux__slot *s) {
    if (s->state != KVMUX__SLOT_WAITING) return;
    kvmux__pending_disarm(t, s);
    s->state = KVMUX__SLOT_TOMBSTONE;
    t->ntomb++;
}

void kvmux__pending_park(kvmux__pending *t, kvmux__slot *s) {
    kvmux__pending_disarm(t, s);
    kvmux__pending_x_free(t, s);
    s->state = KVMUX__SLOT_DONE;
    s->tnext = KVMUX__SLOT_NIL;
}

void kvmux__pending_release(kvmux__pending *t, kvmux__slot *s) {
    if (s->state == KVMUX__SLOT_FREE) return;
    if (s->state == KVMUX__SLOT_TOMBSTONE) t->ntomb--;
    kvmux__pending_disarm(t, s);
    /* A tombstone's partial fragmented reply goes now. */
    kvmux__pending_x_free(t, s);
    pending_free_done(s);
    s->owner = KVMUX__OWNER_NONE;
    s->flags = 0;
    s->u.aop = NULL;
    s->state = KVMUX__SLOT_FREE;
    uint32_t idx = (uint32_t)(s - t->slots);
    /* The generation advances (wrapping): the next id differs. */
    s->id = pending_make_id(t, idx, (pending_gen(t, s->id) + 1) & t->gen_mask);
    t->fifo[(t->fifo_head + t->nfree) % t->nslots] = (uint16_t)idx;
    t->nfree++;
}

/* ---- timer lists ----
 *
 * Deadlines of WAITING async requests. A heap costs O(log n) per request
 * and a pointer per entry; but requests with the same timeout are armed
 * in deadline order (a monotonic clock read once per submit, under the
 * client mutex, and the backlog admits in submit order), so one FIFO list
 * per distinct timeout is sorted for free: arming appends, disarming
 * unlinks, both O(1), and the earliest deadline is the smallest of the
 * list heads. The links are slot indices inside the slot (no memory of
 * their own). A deadline earlier than its list's tail (a clock step is
 * impossible on CLOCK_MONOTONIC, but a request re-armed after an out of
 * memory retry, or a 17th distinct timeout sharing a class) is inserted
 * in order by walking back from the tail: always correct, O(1) in the
 * usual case. */

/* The class for tmo: its own, else a free or empty one, else the one
 * with the nearest timeout. */
static uint32_t pending_class(kvmux__pending *t, int64_t tmo) {
    uint32_t empty = KVMUX__TCLASS_MAX;
    for (uint32_t i = 0; i < t->ntc; i++) {
        if (t->tc[i].tmo == tmo) return i;
        if (empty == KVMUX__TCLASS_MAX && t->tc[i].head == KVMUX__SLOT_NIL) empty = i;
    }
    if (t->ntc < KVMUX__TCLASS_MAX) {
        empty = t->ntc++;
        t->tc[empty].head = t->tc[empty].tail = KVMUX__SLOT_NIL;
    }
    if (empty != KVMUX__TCLASS_MAX) {
        t->tc[empty].tmo = tmo;
        return empty;
    }
    uint32_t best = 0;
    for (uint32_t i = 1; i < t->ntc; i++) {
        int64_t db = t->tc[best].tmo - tmo, di = t->tc[i].tmo - tmo;
        if ((di < 0 ? -di : di) < (db < 0 ? -db : db)) best = i;
    }
    return best;
}

void kvmux__pending_arm(kvmux__pending *t, kvmux__slot *s, int64_t tmo, int64_t deadline) {
    uint32_t ci = pending_class(t, tmo);
    kvmux__tclass *k = &t->tc[ci];
    uint32_t idx = (uint32_t)(s - t->slots);
    s->live.deadline = deadline;
    s->tclass = (uint8_t)ci;
    /* The last entry not later than deadline (usually the tail). */
    uint32_t after = k->tail;
    while (after != KVMUX__SLOT_NIL && t->slots[after].live.deadline > deadline)
        after = t->slots[after].tprev;
    uint32_t before = after == KVMUX__SLOT_NIL ? k->head : t->slots[after].tnext;
    s->tprev = (uint16_t)after;
    s->tnext = (uint16_t)before;
    if (after == KVMUX__SLOT_NIL) k->head = idx;
    else t->slots[after].tnext = (uint16_t)idx;
    if (before == KVMUX__SLOT_NIL) k->tail = idx;
    else t->slots[before].tprev = (uint16_t)idx;
}

void kvmux__pending_disarm(kvmux__pending *t, kvmux__slot *s) {
    if (s->tclass == KVMUX__TCLASS_NONE) return;
    kvmux__tclass *k = &t->tc[s->tclass];
    uint32_t prev = s->tprev, next = s->tnext;
    if (prev == KVMUX__SLOT_NIL) k->head = next;
    else t->slots[prev].tnext = (uint16_t)next;
    if (next == KVMUX__SLOT_NIL) k->tail = prev;
    else t->slots[next].tprev = (uint16_t)prev;
    s->tclass = KVMUX__TCLASS_NONE;
    s->tprev = s->tnext = KVMUX__SLOT_NIL;
}

kvmux__slot *kvmux__pending_next_timer(const kvmux__pending *t) {
    kvmux__slot *best = NULL;
    for (uint32_t i = 0; i < t->ntc; i++) {
        uint32_t h = t->tc[i].head;
        if (h == KVMUX__SLOT_NIL) continue;
        kvmux__slot *s = &t->slots[h];
        if (!best || s->live.deadline < best->live.deadline) best = s;
    }
    return best;
}

void kvmux__pending_each_waiting(kvmux__pending *t,
                                 void (*f)(kvmux__slot *s, void *arg), void *arg) {
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i].state == KVMUX__SLOT_WAITING) f(&t->slots[i], arg);
}
