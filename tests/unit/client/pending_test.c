/* Unit test for the client pending table (src/client/pending.c): ids,
 * generations, tombstones and wrap-around, with no sockets and no threads.
 *
 * What it checks: ids are never 0 and always name their slot; lookup finds
 * exactly the slot holding an id; a reply for a released (or reissued) id
 * no longer matches; tombstones keep their id and credit until released;
 * first_id starts the sequence where asked, across the generation wrap;
 * and no id is ever handed out while the same id is WAITING or TOMBSTONE,
 * over several full generation wraps of a 65536-slot table. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pending.h"
#include "testutil.h"

static void test_init_bounds(void) {
    kvmux__pending t;
    CHECK_EQ(kvmux__pending_init(&t, 0, 0), KVMUX_EINVAL);
    CHECK_EQ(kvmux__pending_init(&t, KVMUX_CLIENT_MAX_SLOTS + 1, 0), KVMUX_EINVAL);
    REQUIRE(kvmux__pending_init(&t, 1, 0) == 0);
    /* One slot: no index bits, the whole id is the generation. */
    uint32_t id = 0;
    kvmux__slot *s = kvmux__pending_take(&t, &id);
    REQUIRE(s != NULL);
    CHECK_EQ(id, 1); /* generation 0 would be id 0: skipped */
    CHECK(kvmux__pending_take(&t, &id) == NULL);
    kvmux__pending_release(&t, s);
    s = kvmux__pending_take(&t, &id);
    CHECK_EQ(id, 2);
    kvmux__pending_release(&t, s);
    kvmux__pending_deinit(&t);
}

static void test_take_find_release(void) {
    kvmux__pending t;
    REQUIRE(kvmux__pending_init(&t, 4, 0) == 0);
    CHECK_EQ(t.slot_bits, 2);
    CHECK_EQ(t.nfree, 4);
    uint32_t ids[4];
    kvmux__slot *sl[4];
    for (int i = 0; i < 4; i++) {
        sl[i] = kvmux__pending_take(&t, &ids[i]);
        REQUIRE(sl[i] != NULL);
        CHECK(ids[i] != 0);
        CHECK_EQ(ids[i] & 3u, (uint32_t)(sl[i] - t.slots));
        CHECK_EQ(sl[i]->state, KVMUX__SLOT_WAITING);
        CHECK_EQ(sl[i]->owner, KVMUX__OWNER_NONE);
        CHECK(kvmux__pending_x(&t, sl[i]) == NULL);
    }
    /* Slot 0 generation 0 is skipped; the rest are generation 0. */
    CHECK_EQ(ids[0], 4);
    CHECK_EQ(ids[1], 1);
    CHECK_EQ(ids[2], 2);
    CHECK_EQ(ids[3], 3);
    uint32_t extra = 0;
    CHECK(kvmux__pending_take(&t, &extra) == NULL); /* no credit left */
    CHECK_EQ(t.nfree, 0);
    for (int i = 0; i < 4; i++) CHECK(kvmux__pending_find(&t, ids[i]) == sl[i]);
    CHECK(kvmux__pending_find(&t, 0) == NULL);
    CHECK(kvmux__pending_find(&t, ids[1] + 4) == NULL); /* next generation */
    CHECK(kvmux__pending_find(&t, ids[1] - 4 + 0x100) == NULL);

    /* Release slot 1: its id no longer matches (a late reply is dropped);
     * the free slot comes back with a new generation. */
    kvmux__pending_release(&t, sl[1]);
    CHECK_EQ(sl[1]->state, KVMUX__SLOT_FREE);
    CHECK(kvmux__pending_find(&t, ids[1]) == NULL);
    uint32_t id2 = 0;
    kvmux__slot *s2 = kvmux__pending_take(&t, &id2);
    CHECK(s2 == sl[1]);
    CHECK(id2 != ids[1]);
    CHECK_EQ(id2, ids[1] + 4);
    CHECK(kvmux__pending_find(&t, ids[1]) == NULL);
    CHECK(kvmux__pending_find(&t, id2) == s2);
    for (int i = 0; i < 4; i++) kvmux__pending_release(&t, i == 1 ? s2 : sl[i]);
    CHECK_EQ(t.nfree, 4);
    kvmux__pending_deinit(&t);
}

static void test_tombstone(void) {
    kvmux__pending t;
    REQUIRE(kvmux__pending_init(&t, 2, 0) == 0);
    uint32_t a, b, c;
    kvmux__slot *sa = kvmux__pending_take(&t, &a);
    kvmux__slot *sb = kvmux__pending_take(&t, &b);
    REQUIRE(sa && sb);
    kvmux__pending_tombstone(&t, sa);
    CHECK_EQ(sa->state, KVMUX__SLOT_TOMBSTONE);
    CHECK_EQ(t.ntomb, 1);
    /* The tombstone keeps its id findable (so the late reply can free it)
     * and keeps its credit. */
    CHECK(kvmux__pending_find(&t, a) == sa);
    CHECK(kvmux__pending_take(&t, &c) == NULL);
    CHECK_EQ(t.nfree, 0);
    /* each_waiting skips tombstones. */
    int visited = 0;
    for (uint32_t i = 0; i < t.nslots; i++)
        if (t.slots[i].state == KVMUX__SLOT_WAITING) visited++;
    CHECK_EQ(visited, 1);
    /* A partial fragmented reply parked on a tombstone is freed by
     * release (LSan). */
    kvmux__slotx *x = kvmux__pending_x_new(&t, sa);
    REQUIRE(x != NULL);
    CHECK(kvmux__pending_x(&t, sa) == x);
    x->rvalue = malloc(10);
    kvmux__pending_release(&t, sa); /* the late reply arrived */
    CHECK(kvmux__pending_x(&t, sa) == NULL);
    CHECK_EQ(t.ntomb, 0);
    CHECK_EQ(t.nfree, 1);
    CHECK(kvmux__pending_find(&t, a) == NULL);
    kvmux__slot *sc = kvmux__pending_take(&t, &c);
    CHECK(sc == sa);
    CHECK(c != a);
    kvmux__pending_release(&t, sb);
    kvmux__pending_release(&t, sc);
    kvmux__pending_deinit(&t);
}

static void count_waiting(kvmux__slot *s, void *arg) {
    (void)s;
    (*(int *)arg)++;
}

static void test_each_waiting(void) {
    kvmux__pending t;
    REQUIRE(kvmux__pending_init(&t, 8, 0) == 0);
    kvmux__slot *s[5];
    uint32_t id;
    for (int i = 0; i < 5; i++) s[i] = kvmux__pending_take(&t, &id);
    kvmux__pending_tombstone(&t, s[0]);
    kvmux__pending_tombstone(&t, s[3]);
    int n = 0;
    kvmux__pending_each_waiting(&t, count_waiting, &n);
    CHECK_EQ(n, 3);
    for (int i = 0; i < 5; i++) kvmux__pending_release(&t, s[i]);
    n = 0;
    kvmux__pending_each_waiting(&t, count_waiting, &n);
    CHECK_EQ(n, 0);
    kvmux__pending_deinit(&t);
}

/* first_id starts the sequence exactly, and the wrap skips id 0. */
static void test_first_id_wrap(void) {
    kvmux__pending t;
    REQUIRE(kvmux__pending_init(&t, 4, 0xFFFFFFFEu) == 0);
    /* Slots 2,3 start at the last generation, slots 0,1 at the wrapped one;
     * slot 0's generation 0 would be id 0 and is skipped. */
    uint32_t want[] = {0xFFFFFFFEu, 0xFFFFFFFFu, 4u, 1u, 2u, 3u, 8u, 5u};
    kvmux__slot *held[8];
    uint32_t got[8];
    for (int i = 0; i < 4; i++) {
        held[i] = kvmux__pending_take(&t, &got[i]);
        REQUIRE(held[i] != NULL);
        CHECK_EQ(got[i], want[i]);
    }
    /* Release in issue order, take again: the sequence goes on. */
    for (int i = 0; i < 4; i++) kvmux__pending_release(&t, held[i]);
    for (int i = 4; i < 8; i++) {
        held[i] = kvmux__pending_take(&t, &got[i]);
        REQUIRE(held[i] != NULL);
        CHECK_EQ(got[i], want[i]);
        CHECK(got[i] != 0);
    }
    /* The pre-wrap ids no longer match anything. */
    CHECK(kvmux__pending_find(&t, 0xFFFFFFFEu) == NULL);
    CHECK(kvmux__pending_find(&t, 0xFFFFFFFFu) == NULL);
    for (int i = 4; i < 8; i++) kvmux__pending_release(&t, held[i]);
    kvmux__pending_deinit(&t);

    /* first_id whose slot bits name no slot (3 slots, index 3): falls back
     * to slot 0 of the next generation. */
    REQUIRE(kvmux__pending_init(&t, 3, 7) == 0);
    uint32_t id = 0;
    kvmux__slot *s = kvmux__pending_take(&t, &id);
    CHECK_EQ(id, 4);
    CHECK(kvmux__pending_find(&t, 7) == NULL); /* index 3 >= nslots */
    kvmux__pending_release(&t, s);
    kvmux__pending_deinit(&t);
}

/* Over several full generation wraps of the largest table, no id is ever
 * issued while it is WAITING or TOMBSTONE, and 0 is never issued. */
static void test_no_reuse_across_wrap(void) {
    const uint32_t n = KVMUX_CLIENT_MAX_SLOTS; /* 16 slot bits, 16 gen bits */
    kvmux__pending t;
    REQUIRE(kvmux__pending_init(&t, n, 0xFFFF0000u) == 0);
    CHECK_EQ(t.gen_mask, 0xFFFFu);
    /* An id names its slot, so "never reissued while held" means: no id
     * handed out ever equals the id of a slot that is not FREE. */
    kvmux__slot **held = calloc(n, sizeof *held);
    uint32_t *held_id = calloc(n, sizeof *held_id);
    REQUIRE(held && held_id);
    uint32_t first = 0;
    for (uint32_t i = 0; i < n; i++) {
        held[i] = kvmux__pending_take(&t, &held_id[i]);
        REQUIRE(held[i] != NULL);
        if (i == 0) first = held_id[i];
    }
    CHECK_EQ(first, 0xFFFF0000u);
    /* Pin a tombstone and a waiter for the whole run. */
    kvmux__slot *tomb = held[5], *wait = held[7];
    uint32_t tomb_id = held_id[5], wait_id = held_id[7];
    kvmux__pending_tombstone(&t, tomb);
    long zero_ids = 0, clashes = 0, wrong_slot = 0, misses = 0;
    for (uint32_t i = 0; i < n; i++)
        if (i != 5 && i != 7) kvmux__pending_release(&t, held[i]);
    /* Every other slot is FREE. 3 * n take/release pairs move each slot
     * through 3 generations: 0xFFFF -> 0 -> 1 -> 2, across the wrap. */
    for (long k = 0; k < 3L * n; k++) {
        uint32_t id = 0;
        kvmux__slot *s = kvmux__pending_take(&t, &id);
        if (!s) {
            misses++;
            break;
        }
        if (id == 0) zero_ids++;
        if (id == tomb_id || id == wait_id) clashes++;
        if ((id & 0xFFFFu) != (uint32_t)(s - t.slots)) wrong_slot++;
        if (kvmux__pending_find(&t, id) != s) wrong_slot++;
        kvmux__pending_release(&t, s);
    }
    CHECK_EQ(misses, 0);
    CHECK_EQ(zero_ids, 0);
    CHECK_EQ(clashes, 0);
    CHECK_EQ(wrong_slot, 0);
    /* Generations did wrap (0xFFFF -> 0 -> ...), and the pinned ids are
     * still held by their slots. */
    CHECK((t.slots[1].id >> 16) < 0x10);
    CHECK(kvmux__pending_find(&t, tomb_id) == tomb);
    CHECK(kvmux__pending_find(&t, wait_id) == wait);
    CHECK_EQ(t.nfree, n - 2);
    kvmux__pending_release(&t, tomb);
    kvmux__pending_release(&t, wait);
    free(held);
    free(held_id);
    kvmux__pending_deinit(&t);
}

/* One slot cycled through a complete generation wrap: its ids never
 * repeat within a wrap, never hit 0, and a stale id never matches. */
static void test_single_slot_full_wrap(void) {
    kvmux__pending t;
    REQUIRE(kvmux__pending_init(&t, KVMUX_CLIENT_MAX_SLOTS, 0) == 0);
    /* Hold every slot except slot 3, which is then cycled alone. */
    kvmux__slot **held = calloc(KVMUX_CLIENT_MAX_SLOTS, sizeof *held);
    REQUIRE(held);
    uint32_t id;
    for (uint32_t i = 0; i < KVMUX_CLIENT_MAX_SLOTS; i++) held[i] = kvmux__pending_take(&t, &id);
    kvmux__pending_release(&t, held[3]);
    uint8_t *seen = calloc(65536, 1);
    REQUIRE(seen);
    long repeats = 0, bad = 0, stale_match = 0;
    uint32_t prev = 0;
    for (uint32_t k = 0; k < 65536 + 10; k++) {
        kvmux__slot *s = kvmux__pending_take(&t, &id);
        if (!s || s != &t.slots[3] || id == 0 || (id & 0xFFFF) != 3) {
            bad++;
            break;
        }
        if (k < 65536) {
            if (seen[id >> 16]) repeats++;
            seen[id >> 16] = 1;
        }
        if (prev && kvmux__pending_find(&t, prev) != NULL) stale_match++;
        prev = id;
        kvmux__pending_release(&t, s);
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(repeats, 0);
    CHECK_EQ(stale_match, 0);
    free(seen);
    for (uint32_t i = 0; i < KVMUX_CLIENT_MAX_SLOTS; i++)
        if (i != 3) kvmux__pending_release(&t, held[i]);
    free(held);
    kvmux__pending_deinit(&t);
}

/* Pop every armed slot in expiry order (next_timer + disarm); returns how
 * many, and 0 in *bad unless the deadlines came out non-decreasing. */
static uint32_t drain_timers(kvmux__pending *t, kvmux__slot **order, uint32_t max, int *bad) {
    uint32_t n = 0;
    int64_t last = INT64_MIN;
    *bad = 0;
    kvmux__slot *s;
    while ((s = kvmux__pending_next_timer(t)) != NULL && n < max) {
        if (s->live.deadline < last) *bad = 1;
        last = s->live.deadline;
        if (s->tclass == KVMUX__TCLASS_NONE) *bad = 1;
        kvmux__pending_disarm(t, s);
        if (s->tclass != KVMUX__TCLASS_NONE) *bad = 1;
        order[n++] = s;
    }
    return n;
}

/* Timer lists: per-timeout FIFOs of slot indices. Arming in deadline
 * order appends; an earlier deadline is inserted in order; disarming from
 * the middle, the head and the tail keeps the lists consistent; the
 * earliest deadline over all classes comes first; more distinct timeouts
 * than classes share a class and still expire in order; release disarms. */
static void test_timer_lists(void) {
    kvmux__pending t;
    REQUIRE(kvmux__pending_init(&t, 64, 0) == 0);
    kvmux__slot *s[64];
    uint32_t id;
    for (int i = 0; i < 64; i++) {
        s[i] = kvmux__pending_take(&t, &id);
        REQUIRE(s[i] != NULL);
        CHECK_EQ(s[i]->tclass, KVMUX__TCLASS_NONE);
    }
    CHECK(kvmux__pending_next_timer(&t) == NULL);
    /* Two timeouts, interleaved submits at now = 0, 1, 2, ... */
    for (int i = 0; i < 20; i++) {
        int64_t tmo = (i % 2) ? 500 : 100;
        kvmux__pending_arm(&t, s[i], tmo, i + tmo);
    }
    CHECK_EQ(t.ntc, 2);
    CHECK(kvmux__pending_next_timer(&t) == s[0]); /* deadline 100 */
    /* Disarm the head, a middle entry and the tail of the 100 class. */
    kvmux__pending_disarm(&t, s[0]);
    kvmux__pending_disarm(&t, s[8]);
    kvmux__pending_disarm(&t, s[18]);
    kvmux__pending_disarm(&t, s[18]); /* twice: no-op */
    CHECK(kvmux__pending_next_timer(&t) == s[2]);
    /* An earlier deadline in the 500 class goes before its later ones. */
    kvmux__pending_arm(&t, s[20], 500, 3);
    CHECK(kvmux__pending_next_timer(&t) == s[20]);
    /* Released slots leave their list. */
    kvmux__pending_release(&t, s[4]);
    kvmux__slot *order[64];
    int bad = 1;
    uint32_t n = drain_timers(&t, order, 64, &bad);
    CHECK_EQ(bad, 0);
    CHECK_EQ(n, 20 - 3 - 1 + 1);
    for (uint32_t i = 0; i < n; i++) CHECK(order[i] != s[4]);
    /* More distinct timeouts than classes: all still expire in order. */
    for (int i = 21; i < 64; i++) {
        int64_t tmo = 1000 - 10 * i; /* 43 distinct, decreasing */
        kvmux__pending_arm(&t, s[i], tmo, 5000 + tmo + (i % 7));
    }
    CHECK_EQ(t.ntc, KVMUX__TCLASS_MAX);
    n = drain_timers(&t, order, 64, &bad);
    CHECK_EQ(bad, 0);
    CHECK_EQ(n, 43);
    /* Parking keeps the credit, frees the links; release frees it. */
    kvmux__pending_arm(&t, s[30], 100, 7);
    uint32_t nfree = t.nfree;
    kvmux__pending_park(&t, s[30]);
    CHECK_EQ(s[30]->state, KVMUX__SLOT_DONE);
    CHECK_EQ(s[30]->tclass, KVMUX__TCLASS_NONE);
    CHECK(kvmux__pending_next_timer(&t) == NULL);
    CHECK(kvmux__pending_find(&t, s[30]->id) == NULL); /* a duplicate is dropped */
    CHECK_EQ(t.nfree, nfree);
    s[30]->flags |= KVMUX__SF_DVAL;
    s[30]->done.value = malloc(5); /* freed by release (LSan) */
    kvmux__pending_release(&t, s[30]);
    CHECK_EQ(t.nfree, nfree + 1);
    for (int i = 0; i < 64; i++)
        if (i != 4 && i != 30) kvmux__pending_release(&t, s[i]);
    CHECK_EQ(t.nfree, 64);
    kvmux__pending_deinit(&t);
}

int main(void) {
    test_timer_lists();
    test_init_bounds();
    test_take_find_release();
    test_tombstone();
    test_each_waiting();
    test_first_id_wrap();
    test_no_reuse_across_wrap();
    test_single_slot_full_wrap();
    return test_report();
}
