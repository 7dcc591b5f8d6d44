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

struct kvmux_future; /* an async request (client_internal.h) */

/* A slot. Invariants: id != 0 whenever state != FREE; id's low slot_bits
 * bits are the slot's index; the completion fields are meaningful only while
 * state == WAITING; aop is NULL unless the slot is WAITING for an async
 * request (a synchronous caller waits on cond instead). Everything is
 * guarded by the client mutex. */
typedef struct kvmux__slot {
    kvmux__slot_state state;
    uint32_t gen;          /* generation of the next / current id */
    uint32_t id;           /* the id issued (0 when FREE) */
    pthread_cond_t cond;   /* the waiting caller sleeps here, alone */
    /* completion record, filled by the reader (or by a connection failure) */
    uint8_t op;            /* kvmux_op of the call: how to parse the reply */
    uint8_t want_value;    /* 1: return GET/WAIT value as one kvmux_value */
    uint8_t done;          /* result and reply are final */
    int result;            /* 0 or KVMUX_E* */
    kvmux_reply reply;     /* value (if any) is a heap copy for the caller */
    kvmux_value *value;    /* want_value: the single-allocation value */
    struct kvmux_future *aop; /* the async request this slot carries, or NULL */
    /* v2: a fragmented reply being received (reader.c). reasm.state is
     * IDLE unless its first frame has arrived and its last has not; the
     * bytes go to asm_dst (inside value or reply.value), or nowhere when
     * asm_dst is NULL (a tombstone's reply, or no memory for it: the
     * fragments are still counted so the windows stay right). */
    kvmux_reassembly reasm;
    uint8_t *asm_dst;
} kvmux__slot;

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

/* Free t's memory. No slot may have a waiting caller. */
void kvmux__pending_deinit(kvmux__pending *t);

/* Take the oldest FREE slot: state -> WAITING, completion record cleared,
 * *id_out = its new id (never 0). Returns NULL if no slot is FREE. */
kvmux__slot *kvmux__pending_take(kvmux__pending *t, uint32_t *id_out);

/* The slot that currently holds id (WAITING or TOMBSTONE), or NULL if id is
 * 0, names no slot, the slot is FREE, or the generation differs (a late
 * reply for an id already answered). O(1). */
kvmux__slot *kvmux__pending_find(kvmux__pending *t, uint32_t id);

/* WAITING -> TOMBSTONE: the caller gave up; the id and its credit stay
 * reserved until the late reply arrives (then kvmux__pending_release). */
void kvmux__pending_tombstone(kvmux__pending *t, kvmux__slot *s);

/* WAITING or TOMBSTONE -> FREE; the slot's generation advances (wrapping),
 * so its next id differs from every id it issued recently. */
void kvmux__pending_release(kvmux__pending *t, kvmux__slot *s);

/* Call f on every WAITING slot (the drain-on-connection-loss pass). */
void kvmux__pending_each_waiting(kvmux__pending *t,
                                 void (*f)(kvmux__slot *s, void *arg), void *arg);

#endif /* KVMUX_CLIENT_PENDING_H */
