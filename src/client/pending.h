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
 * MAX_OUTSTANDING cannot make us allocate without bound. Slot indices fit
 * 16 bits with one value left for "none" (the timer links), and 16 bits
 * of generation per slot remain. */
#define KVMUX_CLIENT_MAX_SLOTS 65535u

/* One enum for a slot's life (never a set of booleans):
 *   FREE --take--> WAITING --release--> FREE          (answered / failed)
 *                  WAITING --tombstone--> TOMBSTONE --release--> FREE
 *                                         (caller timed out; late reply)
 *                  WAITING --park--> DONE --release--> FREE
 *                                 (answered callback, out of memory for its
 *                                  completion record: released after the
 *                                  callback has run) */
typedef enum kvmux__slot_state {
    KVMUX__SLOT_FREE = 0,
    KVMUX__SLOT_WAITING = 1,
    KVMUX__SLOT_TOMBSTONE = 2,
    KVMUX__SLOT_DONE = 3   /* answered callback, parked (see kvmux__slot) */
} kvmux__slot_state;

struct kvmux_future;    /* an async request (client_internal.h) */
struct kvmux__callwait; /* a blocking caller's wait record (client_internal.h) */

/* Who a WAITING slot completes. */
typedef enum kvmux__slot_owner {
    KVMUX__OWNER_NONE = 0,         /* FREE, or TOMBSTONE: nobody waits */
    KVMUX__OWNER_CALL = 1,         /* a blocking caller (u.w, on its stack) */
    KVMUX__OWNER_OP = 2,           /* a future (u.aop, a heap object) */
    KVMUX__OWNER_CB = 3            /* a callback request: lives in the slot
                                      (u.cb.fn, u.cb.ud, live.handle) */
} kvmux__slot_owner;

/* v2: a fragmented reply being received (reader.c), allocated at its
 * first frame and freed with the slot: rare, so kept out of the slot (in
 * the table's lazily allocated side array xs). The bytes go to asm_dst
 * (inside value or rvalue), or nowhere when asm_dst is NULL (a tombstone's
 * reply, or no memory for it: the fragments are still counted so the
 * windows stay right). The buffer moves to the slot's owner only when the
 * reply is complete, so a caller that gives up half-way never holds a
 * partial value. */
typedef struct kvmux__slotx {
    kvmux_reassembly reasm;
    uint8_t *asm_dst;
    kvmux_value *value;    /* want_value: the single-allocation value */
    uint8_t *rvalue;       /* else: the reply value buffer */
    size_t rvalue_len;
    uint64_t version;      /* from the first frame's extras */
    int result;            /* KVMUX_OK, or KVMUX_ENOMEM (no buffer) */
} kvmux__slotx;

/* No slot index (timer links, lists). */
#define KVMUX__SLOT_NIL 0xFFFFu
/* Timer classes (per-timeout deadline lists, see pending.c). */
#define KVMUX__TCLASS_MAX 16u
#define KVMUX__TCLASS_NONE 0xFFu

/* Slot flags. */
#define KVMUX__SF_X 0x01u      /* xs[index] holds a fragmented reply */
#define KVMUX__SF_CANCEL 0x02u /* OWNER_CB: cancelled while no completion
                                  record could be allocated; completes
                                  with KVMUX_ECANCELED (async.c) */
#define KVMUX__SF_DVAL 0x04u   /* DONE: done.value holds a reply value */

/* A slot: 48 bytes on 64-bit, one per credit, allocated at the
 * handshake. A callback request that holds a credit lives here and
 * nowhere else: callback, user data, handle, deadline and its timer links
 * (so slot + free-ring entry = 50 bytes is all it costs in flight).
 *
 * Invariants: id != 0 whenever state != FREE, and id's low slot_bits bits
 * are the slot's index; while FREE, id is the id the next take issues
 * (the generation is id >> slot_bits: id and generation share storage).
 * owner is NONE unless state is WAITING (or DONE), and a WAITING slot
 * always has an owner (set right after take). tclass != NONE exactly
 * while the slot is on a timer list (tprev/tnext link it, 16-bit slot
 * indices: hence at most 65535 slots). State DONE (async.c, out of memory
 * only): a callback request answered while no completion record could be
 * allocated; the slot keeps its credit and the reply (result, dlen,
 * done.*) until the completion thread runs the callback, and tnext links
 * it on the client's parked list. Everything is guarded by the client
 * mutex. */
typedef struct kvmux__slot {
    uint32_t id;           /* the id issued (or, FREE, to issue next) */
    uint8_t state;         /* kvmux__slot_state */
    uint8_t owner;         /* kvmux__slot_owner */
    uint8_t tclass;        /* timer class, or KVMUX__TCLASS_NONE */
    uint8_t flags;         /* KVMUX__SF_* */
    union {
        uint8_t op;        /* WAITING, TOMBSTONE: kvmux_op of the call
                              (how to parse the reply) */
        int8_t result;     /* DONE: the result (a KVMUX_E* or 0) */
    };
    uint8_t want_value;    /* 1: return GET/WAIT value as one kvmux_value */
    uint16_t tnext;        /* timer list / parked list: next slot index */
    union {
        uint16_t tprev;    /* timer list: previous slot index */
        uint32_t dlen;     /* DONE: the reply value's length */
    };
    union {
        struct {           /* WAITING */
            int64_t deadline;  /* monotonic ms; set with tclass */
            uint64_t handle;   /* OWNER_CB: kvmux_handle (never reused) */
        } live;
        struct {           /* DONE (parked): the rest of the reply */
            uint64_t version;
            union {
                uint8_t *value;
                int64_t number;
            };
        } done;
    };
    union {
        struct {           /* OWNER_CB */
            kvmux_reply_cb fn;
            void *ud;
        } cb;
        struct kvmux_future *aop;    /* OWNER_OP */
        struct kvmux__callwait *w;   /* OWNER_CALL */
    } u;
} kvmux__slot;

/* The future s carries, or NULL. */
static inline struct kvmux_future *kvmux__slot_op(const kvmux__slot *s) {
    return s->owner == KVMUX__OWNER_OP ? s->u.aop : NULL;
}

/* A timer class: the WAITING slots armed with one timeout, in deadline
 * order (slot indices, doubly linked through live.tprev / tnext). */
typedef struct kvmux__tclass {
    int64_t tmo;           /* the timeout (ms) its slots were armed with */
    uint32_t head;         /* earliest deadline, or KVMUX__SLOT_NIL */
    uint32_t tail;         /* latest deadline */
} kvmux__tclass;

typedef struct kvmux__pending {
    kvmux__slot *slots;    /* nslots entries */
    kvmux__slotx **xs;     /* NULL, or (from the first fragmented reply)
                              nslots entries: the slots' kvmux__slotx */
    kvmux__tclass tc[KVMUX__TCLASS_MAX]; /* timer classes */
    uint32_t ntc;          /* classes in use (tc[0..ntc)) */
    uint32_t nslots;       /* = the credits we use */
    uint32_t slot_bits;    /* smallest b with 2^b >= nslots */
    uint32_t gen_mask;     /* generations wrap modulo gen_mask + 1 */
    uint16_t *fifo;        /* ring of FREE slot indices, oldest first
                              (indices fit 16 bits: 2 bytes per credit) */
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

/* WAITING, TOMBSTONE or DONE -> FREE (off its timer list); the slot's generation advances (wrapping),
 * so its next id differs from every id it issued recently. A fragmented
 * reply's state and partial value are freed. */
void kvmux__pending_release(kvmux__pending *t, kvmux__slot *s);

/* s's fragmented reply state, or NULL. */
static inline kvmux__slotx *kvmux__pending_x(const kvmux__pending *t, const kvmux__slot *s) {
    return (s->flags & KVMUX__SF_X) ? t->xs[s - t->slots] : NULL;
}

/* 1 if s is receiving a fragmented reply. */
static inline int kvmux__slot_reasm_open(const kvmux__pending *t, const kvmux__slot *s) {
    kvmux__slotx *x = kvmux__pending_x(t, s);
    return x != NULL && x->reasm.state == KVMUX_REASM_OPEN;
}

/* Allocate s's fragmented reply state (zeroed; none yet). Returns it, or
 * NULL on out of memory. */
kvmux__slotx *kvmux__pending_x_new(kvmux__pending *t, kvmux__slot *s);

/* Free s's fragmented reply state, if any (and its partial value). */
void kvmux__pending_x_free(kvmux__pending *t, kvmux__slot *s);

/* Detach s from its owner (the owner gave up): owner NONE, off its timer
 * list, and the rest of a fragmented reply is only counted, its partial
 * value freed. */
void kvmux__slot_disown(kvmux__pending *t, kvmux__slot *s);

/* Put WAITING s on the timer list of timeout tmo with deadline (monotonic
 * ms). O(1) when deadline is not earlier than the list's last one (the
 * usual case: one timeout, deadlines taken from a monotonic clock in
 * submit order); else O(k) for the k later entries. Never fails: with
 * every class taken, s joins the class of the nearest timeout, still in
 * deadline order. s must not be armed. */
void kvmux__pending_arm(kvmux__pending *t, kvmux__slot *s, int64_t tmo, int64_t deadline);

/* Take s off its timer list (no-op if it is on none). O(1). */
void kvmux__pending_disarm(kvmux__pending *t, kvmux__slot *s);

/* The armed slot with the earliest deadline, or NULL. O(classes). */
kvmux__slot *kvmux__pending_next_timer(const kvmux__pending *t);

/* The slot with index idx. */
static inline kvmux__slot *kvmux__pending_at(const kvmux__pending *t, uint32_t idx) {
    return &t->slots[idx];
}

/* WAITING -> DONE (async.c parks an answered callback request): off its
 * timer list, fragmented state freed; the credit stays taken until
 * kvmux__pending_release. */
void kvmux__pending_park(kvmux__pending *t, kvmux__slot *s);

/* Call f on every WAITING slot (the drain-on-connection-loss pass). */
void kvmux__pending_each_waiting(kvmux__pending *t,
                                 void (*f)(kvmux__slot *s, void *arg), void *arg);

#endif /* KVMUX_CLIENT_PENDING_H */
