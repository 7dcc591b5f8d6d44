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
 * Memory: a slot is 32 bytes (plus 4 in the free ring) per credit, all
 * allocated at the handshake. It holds no reply and no wait primitive: a
 * reply is written straight into its owner (a blocking caller's wait
 * record on its own stack, or an async op) and the slot is freed in the
 * same step (async.c kvmux__slot_finish); the state of a fragmented reply
 * -- rare -- is a side allocation (kvmux__slotx) made at its first frame.
 *
 * What it is not: no locking (every function runs under the client mutex),
 * no I/O, no waiting: waiting is call.c's, completion async.c's and
 * reader.c's.
 */
#include "pending.h"

#include <stdlib.h>
#include <string.h>


/* The layout the memory target counts on (64-bit: 32 bytes per credit). */
_Static_assert(sizeof(kvmux__slot) <= 4 * sizeof(void *) + 16, "kvmux__slot grew");

/* The id slot s would carry with generation gen. */
static uint32_t pending_make_id(const kvmux__pending *t, uint32_t idx, uint32_t gen) {
    /* slot_bits may be 0 (one slot); shifting a u32 by 32 is undefined, but
     * slot_bits <= 16 here, and gen_mask keeps gen within 32 - slot_bits. */
    return (gen << t->slot_bits) | idx;
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
        s->gen = i < start ? ((gen0 + 1) & t->gen_mask) : gen0;
        t->fifo[i] = (start + i) % nslots;
    }
    t->nslots = nslots;
    t->fifo_head = 0;
    t->nfree = nslots;
    return 0;
}

/* Free s's fragmented reply state, if any. */
static void pending_free_x(kvmux__slot *s) {
    kvmux__slotx *x = s->x;
    if (!x) return;
    free(x->value);
    free(x->rvalue);
    free(x);
    s->x = NULL;
}

void kvmux__slot_disown(kvmux__slot *s) {
    s->owner = KVMUX__OWNER_NONE;
    s->u.aop = NULL;
    kvmux__slotx *x = s->x;
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

void kvmux__pending_deinit(kvmux__pending *t) {
    if (!t->slots) return;
    /* A fragmented reply cut off by the end of the connection. */
    for (uint32_t i = 0; i < t->nslots; i++) pending_free_x(&t->slots[i]);
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
    uint32_t id = pending_make_id(t, idx, s->gen);
    if (id == 0) {
        /* Slot 0, generation 0: id 0 is reserved. Skip that generation. */
        s->gen = (s->gen + 1) & t->gen_mask;
        id = pending_make_id(t, idx, s->gen);
    }
    s->state = KVMUX__SLOT_WAITING;
    s->id = id;
    s->op = 0;
    s->want_value = 0;
    s->owner = KVMUX__OWNER_NONE;
    s->u.aop = NULL;
    *id_out = id;
    return s;
}

kvmux__slot *kvmux__pending_find(kvmux__pending *t, uint32_t id) {
    if (id == 0) return NULL;
    uint32_t idx = (uint32_t)(id & ((1ull << t->slot_bits) - 1));
    if (idx >= t->nslots) return NULL;
    kvmux__slot *s = &t->slots[idx];
    if (s->state == KVMUX__SLOT_FREE || s->id != id) return NULL;
    return s;
}

void kvmux__pending_tombstone(kvmux__pending *t, kvmux__slot *s) {
    if (s->state != KVMUX__SLOT_WAITING) return;
    s->state = KVMUX__SLOT_TOMBSTONE;
    t->ntomb++;
}

void kvmux__pending_release(kvmux__pending *t, kvmux__slot *s) {
    if (s->state == KVMUX__SLOT_FREE) return;
    if (s->state == KVMUX__SLOT_TOMBSTONE) t->ntomb--;
    /* A tombstone's partial fragmented reply goes now. */
    pending_free_x(s);
    s->owner = KVMUX__OWNER_NONE;
    s->u.aop = NULL;
    s->state = KVMUX__SLOT_FREE;
    s->id = 0;
    s->gen = (s->gen + 1) & t->gen_mask;
    uint32_t idx = (uint32_t)(s - t->slots);
    t->fifo[(t->fifo_head + t->nfree) % t->nslots] = idx;
    t->nfree++;
}

void kvmux__pending_each_waiting(kvmux__pending *t,
                                 void (*f)(kvmux__slot *s, void *arg), void *arg) {
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i].state == KVMUX__SLOT_WAITING) f(&t->slots[i], arg);
}
