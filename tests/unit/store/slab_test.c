/* Unit tests for the store's slab allocator (server/slab.c): size classes,
 * slot reuse, empty blocks given back (but one kept per class), blocks
 * found again by address on free, and out of memory leaving the pool
 * unchanged. */
#include <stdlib.h>
#include <string.h>

#include "slab.h"
#include "testutil.h"

static long live_blocks; /* allocations outstanding through the hooks */
static long fail_next;   /* fail the allocation after this many (-1 never) */

static void *t_alloc(void *ud, size_t n) {
    (void)ud;
    if (fail_next == 0) {
        fail_next = -1;
        return NULL;
    }
    if (fail_next > 0) fail_next--;
    live_blocks++;
    return malloc(n);
}

static void t_free(void *ud, void *p) {
    (void)ud;
    live_blocks--;
    free(p);
}

static void test_classes(void) {
    CHECK_EQ(kvmux_slab_class_size(1), 8);
    CHECK_EQ(kvmux_slab_class_size(8), 8);
    CHECK_EQ(kvmux_slab_class_size(33), 40);
    CHECK_EQ(kvmux_slab_class_size(40), 40);
    CHECK_EQ(kvmux_slab_class_size(KVMUX_SLAB_MAX), KVMUX_SLAB_MAX);
}

static void test_alloc_free(void) {
    kvmux_slab_pool p;
    fail_next = -1;
    kvmux_slab_init(&p, t_alloc, t_free, NULL);
    CHECK(kvmux_slab_alloc(&p, 0) == NULL);
    CHECK(kvmux_slab_alloc(&p, KVMUX_SLAB_MAX + 1) == NULL);
    CHECK_EQ(kvmux_slab_footprint(&p), 0);
    /* Enough 40-byte slots for several blocks; each slot distinct, 8-byte
     * aligned and writable (ASan checks the bounds). */
    enum { N = 2000 };
    static uint8_t *objs[N];
    for (int i = 0; i < N; i++) {
        objs[i] = kvmux_slab_alloc(&p, 33);
        REQUIRE(objs[i]);
        CHECK_EQ((uintptr_t)objs[i] % 8, 0);
        memset(objs[i], i & 0xff, 40);
    }
    size_t per_block = KVMUX_SLAB_BYTES / 40;
    size_t blocks = (N + per_block - 1) / per_block;
    CHECK_EQ(p.nblocks, blocks);
    CHECK(kvmux_slab_footprint(&p) >= blocks * KVMUX_SLAB_BYTES);
    int bad = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 40; j++) bad += objs[i][j] != (uint8_t)(i & 0xff);
    CHECK_EQ(bad, 0);
    /* A freed slot is reused before the block's untouched tail. */
    kvmux_slab_free(&p, objs[5], 33);
    uint8_t *again = kvmux_slab_alloc(&p, 40);
    CHECK(again == objs[5]);
    /* Another class gets its own block. */
    void *big = kvmux_slab_alloc(&p, 300);
    REQUIRE(big);
    CHECK_EQ(p.nblocks, blocks + 1);
    kvmux_slab_free(&p, big, 300);
    CHECK_EQ(p.nblocks, blocks + 1); /* its class's only block: kept */
    /* Free everything of the 40-byte class: all its blocks but one go back. */
    for (int i = 0; i < N; i++) kvmux_slab_free(&p, objs[i], 33);
    CHECK_EQ(p.nblocks, 2);
    /* Reallocation works from the kept block. */
    void *x = kvmux_slab_alloc(&p, 40);
    REQUIRE(x);
    CHECK_EQ(p.nblocks, 2);
    kvmux_slab_free(&p, x, 40);
    kvmux_slab_destroy(&p);
    CHECK_EQ(live_blocks, 0);
    CHECK_EQ(kvmux_slab_footprint(&p), 0);
}

static void test_oom(void) {
    /* Each of the allocations of a first block (index, header, block) can
     * fail: NULL, nothing leaked, and the next try works. */
    for (long n = 0; n < 3; n++) {
        kvmux_slab_pool p;
        kvmux_slab_init(&p, t_alloc, t_free, NULL);
        fail_next = n;
        CHECK(kvmux_slab_alloc(&p, 16) == NULL);
        CHECK_EQ(fail_next, -1); /* the injection happened */
        CHECK_EQ(p.nblocks, 0);
        void *a = kvmux_slab_alloc(&p, 16);
        REQUIRE(a);
        CHECK_EQ(p.nblocks, 1);
        kvmux_slab_free(&p, a, 16);
        kvmux_slab_destroy(&p);
        CHECK_EQ(live_blocks, 0);
    }
}

int main(void) {
    test_classes();
    test_alloc_free();
    test_oom();
    return test_report();
}
