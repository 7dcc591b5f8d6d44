/* A size-class slab allocator for the store's entries (one pool per shard).
 *
 * Why: most keys are small (tens of bytes), and malloc rounds each of them
 * up to a 16-byte multiple plus an 8-byte header: a 33-byte entry costs a
 * 48-byte chunk. A slab hands out slots in 8-byte classes with no header
 * (a 33-byte entry costs 40 bytes), from blocks of KVMUX_SLAB_BYTES taken
 * from the store's allocator hook (so tests can inject failures).
 *
 * A slot's slab is found by binary search over the pool's blocks sorted by
 * address (no per-object header, no alignment demand on the allocator).
 * A block whose last slot is freed goes back to the allocator, unless it is
 * its class's only block with free slots (hysteresis: a key created and
 * deleted in a loop must not allocate and free a whole block each time).
 *
 * Thread safety: none; the store calls a pool only under its shard's lock. */
#ifndef KVMUX_SLAB_H
#define KVMUX_SLAB_H

#include <stddef.h>
#include <stdint.h>

#define KVMUX_SLAB_BYTES (16u * 1024)  /* one block */
#define KVMUX_SLAB_MAX 512u            /* larger objects: use the allocator */
#define KVMUX_SLAB_CLASSES (KVMUX_SLAB_MAX / 8)

typedef struct kvmux_slab kvmux_slab;

typedef struct kvmux_slab_pool {
    kvmux_slab *partial[KVMUX_SLAB_CLASSES]; /* per class: blocks with a free slot */
    kvmux_slab **blocks;       /* every block, sorted by base address */
    size_t nblocks, cap;
    void *(*alloc)(void *ud, size_t n);      /* never NULL */
    void (*dealloc)(void *ud, void *p);
    void *ud;
    uint64_t overhead;         /* bytes of blocks' bookkeeping (headers, index) */
} kvmux_slab_pool;

/* The slot size (class) for an object of n bytes, 0 < n <= KVMUX_SLAB_MAX:
 * n rounded up to a multiple of 8 (at least 8). */
static inline size_t kvmux_slab_class_size(size_t n) {
    return n <= 8 ? 8 : (n + 7) & ~(size_t)7;
}

/* Set up an empty pool that takes blocks from alloc / dealloc (not NULL). */
void kvmux_slab_init(kvmux_slab_pool *p, void *(*alloc)(void *ud, size_t n),
                     void (*dealloc)(void *ud, void *q), void *ud);

/* An 8-byte aligned slot of kvmux_slab_class_size(n) bytes, 0 < n <=
 * KVMUX_SLAB_MAX, or NULL when out of memory (the pool is unchanged). */
void *kvmux_slab_alloc(kvmux_slab_pool *p, size_t n);

/* Give back a slot from kvmux_slab_alloc(p, m) where m has the same class
 * as n. Never fails (may free the block). */
void kvmux_slab_free(kvmux_slab_pool *p, void *obj, size_t n);

/* Bytes of blocks currently held (slots in use or not) plus bookkeeping:
 * the pool's real footprint. */
uint64_t kvmux_slab_footprint(const kvmux_slab_pool *p);

/* Free every block (live slots included). The pool is empty afterwards. */
void kvmux_slab_destroy(kvmux_slab_pool *p);

#endif
