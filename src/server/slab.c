/* Size-class slab allocator for store entries; see slab.h. */
#include "slab.h"

#include <string.h>

struct kvmux_slab {
    uint8_t *base;             /* KVMUX_SLAB_BYTES from the allocator */
    void *free;                /* freed slots, linked through their first word */
    kvmux_slab *prev, *next;   /* the class's partial list */
    uint32_t used;             /* live slots */
    uint32_t carved;           /* slots handed out from the never-used tail */
    uint32_t cap;              /* slots per block */
    uint32_t size;             /* slot size */
    int on_partial;
};

void kvmux_slab_init(kvmux_slab_pool *p, void *(*alloc)(void *ud, size_t n),
                     void (*dealloc)(void *ud, void *q), void *ud) {
    memset(p, 0, sizeof *p);
    p->alloc = alloc;
    p->dealloc = dealloc;
    p->ud = ud;
}

static size_t class_index(size_t size) { return size / 8 - 1; }

static void partial_push(kvmux_slab_pool *p, kvmux_slab *s) {
    kvmux_slab **head = &p->partial[class_index(s->size)];
    s->prev = NULL;
    s->next = *head;
    if (*head) (*head)->prev = s;
    *head = s;
    s->on_partial = 1;
}

static void partial_remove(kvmux_slab_pool *p, kvmux_slab *s) {
    if (s->prev) s->prev->next = s->next;
    else p->partial[class_index(s->size)] = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->on_partial = 0;
}

/* Index of the first block whose base is > addr. */
static size_t upper_bound(const kvmux_slab_pool *p, uintptr_t addr) {
    size_t lo = 0, hi = p->nblocks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)p->blocks[mid]->base <= addr) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* A new block of slot size `size`, indexed and on the partial list; NULL
 * (pool unchanged) when out of memory. */
static kvmux_slab *block_new(kvmux_slab_pool *p, size_t size) {
    if (p->nblocks == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 8;
        kvmux_slab **nb = p->alloc(p->ud, ncap * sizeof *nb);
        if (!nb) return NULL;
        if (p->nblocks) memcpy(nb, p->blocks, p->nblocks * sizeof *nb);
        if (p->blocks) p->dealloc(p->ud, p->blocks);
        p->overhead += (ncap - p->cap) * sizeof *nb;
        p->blocks = nb;
        p->cap = ncap;
    }
    kvmux_slab *s = p->alloc(p->ud, sizeof *s);
    if (!s) return NULL;
    s->base = p->alloc(p->ud, KVMUX_SLAB_BYTES);
    if (!s->base) {
        p->dealloc(p->ud, s);
        return NULL;
    }
    s->free = NULL;
    s->used = s->carved = 0;
    s->size = (uint32_t)size;
    s->cap = (uint32_t)(KVMUX_SLAB_BYTES / size);
    size_t at = upper_bound(p, (uintptr_t)s->base);
    memmove(&p->blocks[at + 1], &p->blocks[at], (p->nblocks - at) * sizeof *p->blocks);
    p->blocks[at] = s;
    p->nblocks++;
    p->overhead += sizeof *s;
    partial_push(p, s);
    return s;
}

void *kvmux_slab_alloc(kvmux_slab_pool *p, size_t n) {
    if (n == 0 || n > KVMUX_SLAB_MAX) return NULL;
    size_t size = kvmux_slab_class_size(n);
    kvmux_slab *s = p->partial[class_index(size)];
    if (!s && !(s = block_new(p, size))) return NULL;
    void *obj;
    if (s->free) {
        obj = s->free;
        memcpy(&s->free, obj, sizeof s->free);
    } else {
        obj = s->base + (size_t)s->carved * size;
        s->carved++;
    }
    if (++s->used == s->cap) partial_remove(p, s);
    return obj;
}

void kvmux_slab_free(kvmux_slab_pool *p, void *obj, size_t n) {
    (void)n;
    size_t at = upper_bound(p, (uintptr_t)obj);
    /* obj came from this pool, so a block at or below it exists. */
    kvmux_slab *s = p->blocks[at - 1];
    memcpy(obj, &s->free, sizeof s->free);
    s->free = obj;
    s->used--;
    if (!s->on_partial) partial_push(p, s);
    /* Empty: return it, unless it is the class's only block with room. */
    if (s->used == 0 && (s->prev || s->next)) {
        partial_remove(p, s);
        memmove(&p->blocks[at - 1], &p->blocks[at], (p->nblocks - at) * sizeof *p->blocks);
        p->nblocks--;
        p->overhead -= sizeof *s;
        p->dealloc(p->ud, s->base);
        p->dealloc(p->ud, s);
    }
}

uint64_t kvmux_slab_footprint(const kvmux_slab_pool *p) {
    return (uint64_t)p->nblocks * KVMUX_SLAB_BYTES + p->overhead;
}

void kvmux_slab_destroy(kvmux_slab_pool *p) {
    for (size_t i = 0; i < p->nblocks; i++) {
        p->dealloc(p->ud, p->blocks[i]->base);
        p->dealloc(p->ud, p->blocks[i]);
    }
    if (p->blocks) p->dealloc(p->ud, p->blocks);
    kvmux_slab_init(p, p->alloc, p->dealloc, p->ud);
}
