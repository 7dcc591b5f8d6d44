/* The client's pending table: which request ids are in flight and who waits
 * for each. See pending.c for the design. Internal to libkvmux. */
#ifndef KVMUX_CLIENT_PENDING_H
#define KVMUX_CLIENT_PENDING_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kvmux.h"
#include "proto.h"

/* Hard cap on slots (= credits we ever use), so a server advertising a huge
 * MAX_OUTSTANDING cannot make us allocate without bound. 2^16 slots leave
 * 16 bits of generation per slot. */
#define KVMUX_CLIENT_MAX_SLOTS 65536u

/* One enum for a slot's life (never a set of booleans):
 *   FREE --take--> WAITING --release--> FREE          (answered / failed)
 *                  WAITING --tombstone--> TOMBSTONE --release--> FREE
 *                                         (caller timed out; late reply) */
typedef enum kvmux__slot_state {
    KVMUX__SLOT_FREE = 0,
    KVMUX__SLOT_WAITING = 1,
    KVMUX__SLOT_TOMBSTONE = 2
} kvmux__slot_state;

struct kvmux_future;    /* an async request (client_internal.h) */
struct kvmux__callwait; /* a blocking caller's wait record (client_internal.h) */

/* Who a WAITING slot completes. */
typedef enum kvmux__slot_owner {
    KVMUX__OWNER_NONE = 0,         /* FREE, or TOMBSTONE: nobody waits */
    KVMUX__OWNER_CALL = 1,         /* a blocking caller (u.w, on its stack) */
    KVMUX__OWNER_OP = 2            /* an async request (u.aop) */
} kvmux__slot_owner;

/* v2: a fragmented reply being received (reader.c), allocated at its
 * first frame and freed with the slot: rare, so kept out of the slot.
 * The bytes go to asm_dst (inside value or rvalue), or nowhere when
 * asm_dst is NULL (a tombstone's reply, or no memory for it: the
 * fragments are still counted so the windows stay right). The buffer
 * moves to the slot's owner only when the reply is complete, so a caller
 * that gives up half-way never holds a partial value. */
typedef struct kvmux__slotx {
    kvmux_reassembly reasm;
    uint8_t *asm_dst;
    kvmux_value *value;    /* want_value: the single-allocation value */
    uint8_t *rvalue;       /* else: the reply value buffer */
    size_t rvalue_len;
    uint64_t version;      /* from the first frame's extras */
    int result;            /* KVMUX_OK, or KVMUX_ENOMEM (no buffer) */
} kvmux__slotx;

/* A slot: 32 bytes, one per credit. Invariants: id != 0 whenever state !=
 * FREE; id's low slot_bits bits are the slot's index; owner is NONE unless
 * state == WAITING, and a WAITING slot always has an owner (set right
 * after take); x is NULL unless a fragmented reply has begun. The reply
 * itself is never stored here: the completer writes it straight into the
 * owner (kvmux__slot_finish) and frees the slot in the same step.
 * Everything is guarded by the client mutex. */
typedef struct kvmux__slot {
    uint32_t id;           /* the id issued (0 when FREE) */
    uint32_t gen;          /* generation of the next / current id */
    uint8_t state;         /* kvmux__slot_state */
    uint8_t op;            /* kvmux_op of the call: how to parse the reply */
    uint8_t want_value;    /* 1: return GET/WAIT value as one kvmux_value */
    uint8_t owner;         /* kvmux__slot_owner */
    union {
        struct kvmux_future *aop;    /* OWNER_OP */
        struct kvmux__callwait *w;   /* OWNER_CALL */
    } u;
    kvmux__slotx *x;       /* fragmented reply in progress, or NULL */
} kvmux__slot;

/* The async request s carries, or NULL. */
static inline struct kvmux_future *kvmux__slot_op(const kvmux__slot *s) {
    return s->owner == KVMUX__OWNER_OP ? s->u.aop : NULL;
}

/* 1 if s is receiving a fragmented reply. */
static inline int kvmux__slot_reasm_open(const kvmux__slot *s) {
    return s->x != NULL && s->x->reasm.state == KVMUX_REASM_OPEN;
}

/* Detach s from its owner (the owner gave up): owner NONE, and the rest
 * of a fragmented reply is only counted, its partial value freed. */
void kvmux__slot_disown(kvmux__slot *s);

typedef struct kvmux__pending {
    kvmux__slot *slots;    /* nslots entries */
    uint32_t nslots;       /* = the credits we use */
    uint32_t slot_bits;    /* smallest b with 2^b >= nslots */
    uint32_t gen_mask;     /* generations wrap modulo gen_mask + 1 */
    uint32_t *fifo;        /* ring of FREE slot indices, oldest first */
    uint32_t fifo_head;    /* index of the oldest free entry in fifo */
    uint32_t nfree;        /* FREE slots (entries in fifo) */
    uint32_t ntomb;        /* TOMBSTONE slots */
} kvmux__pending;

/* Initialise t with nslots (1..KVMUX_CLIENT_MAX_SLOTS) slots. first_id
 * (0 = default) chooses the first id handed out, so tests can start right
 * before the generation wrap; the first take() returns exactly first_id
 * when its low bits name a valid slot and it is not 0.
 * Returns 0, KVMUX_EINVAL or KVMUX_ENOMEM (t then needs no deinit). */
int kvmux__pending_init(kvmux__pending *t, uint32_t nslots, uint32_t first_id);

/* Free t's memory (and any fragmented reply state). No slot may have a
 * waiting caller. */
void kvmux__pending_deinit(kvmux__pending *t);

/* Take the oldest FREE slot: state -> WAITING, owner NONE (the caller
 * sets it), *id_out = its new id (never 0). Returns NULL if no slot is
 * FREE. */
kvmux__slot *kvmux__pending_take(kvmux__pending *t, uint32_t *id_out);

/* The slot that currently holds id (WAITING or TOMBSTONE), or NULL if id is
 * 0, names no slot, the slot is FREE, or the generation differs (a late
 * reply for an id already answered). O(1). */
kvmux__slot *kvmux__pending_find(kvmux__pending *t, uint32_t id);

/* WAITING -> TOMBSTONE: the caller gave up; the id and its credit stay
 * reserved until the late reply arrives (then kvmux__pending_release). */
void kvmux__pending_tombstone(kvmux__pending *t, kvmux__slot *s);

/* WAITING or TOMBSTONE -> FREE; the slot's generation advances (wrapping),
 * so its next id differs from every id it issued recently. A fragmented
 * reply's state and partial value are freed. */
void kvmux__pending_release(kvmux__pending *t, kvmux__slot *s);

/* Call f on every WAITING slot (the drain-on-connection-loss pass). */
void kvmux__pending_each_waiting(kvmux__pending *t,
                                 void (*f)(kvmux__slot *s, void *arg), void *arg);

#endif /* KVMUX_CLIENT_PENDING_H */
