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
 * What it is not: no locking (every function runs under the client mutex),
 * no I/O, no waiting. The per-slot condition variable lives here only so
 * that each response wakes exactly one thread; the waiting is done by
 * call.c and the signalling by reader.c.
 */
#include "pending.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"

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
        if (kvmux__cond_init(&s->cond) != 0) {
            for (uint32_t j = 0; j < i; j++) pthread_cond_destroy(&t->slots[j].cond);
            free(t->slots);
            free(t->fifo);
            memset(t, 0, sizeof *t);
            return KVMUX_ENOMEM;
        }
        t->fifo[i] = (start + i) % nslots;
    }
    t->nslots = nslots;
    t->fifo_head = 0;
    t->nfree = nslots;
    return 0;
}

void kvmux__pending_deinit(kvmux__pending *t) {
    if (!t->slots) return;
    for (uint32_t i = 0; i < t->nslots; i++) {
        /* A slot answered but never collected (impossible once every caller
         * has left) would leak its value: free defensively. */
        free(t->slots[i].reply.value);
        free(t->slots[i].value);
        pthread_cond_destroy(&t->slots[i].cond);
    }
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
    s->done = 0;
    s->result = 0;
    memset(&s->reply, 0, sizeof s->reply);
    s->value = NULL;
    s->aop = NULL;
    memset(&s->reasm, 0, sizeof s->reasm);
    s->asm_dst = NULL;
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
    /* Whatever the caller did not take (a tombstone's reply) goes now. */
    free(s->reply.value);
    free(s->value);
    memset(&s->reply, 0, sizeof s->reply);
    s->value = NULL;
    s->aop = NULL;
    memset(&s->reasm, 0, sizeof s->reasm);
    s->asm_dst = NULL;
    s->state = KVMUX__SLOT_FREE;
    s->id = 0;
    s->done = 0;
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
