/* The target side of a slot migration, request half (docs/MIGRATION.md
 * sections 4, 8.4, 10.1): CLUSTER slotkeys (any member of a data group).
 * The state machine half is src/replica/migin.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"
#include "../cluster/cluster.h"

/* Longest slotkeys argument: "16383-16383". */
#define SLOTKEYS_ARG_MAX 11u

/* A decimal slot (no sign, no leading zeros beyond "0", < 16384) from
 * p[0..n). Returns 0, or -1. */
static int parse_slot(const uint8_t *p, size_t n, uint16_t *out) {
    if (n == 0 || n > 5 || (p[0] == '0' && n > 1)) return -1;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (v >= KVMUX_SLOTS) return -1;
    *out = (uint16_t)v;
    return 0;
}

int kvmux__parse_slot_range(const uint8_t *p, size_t n, uint16_t *first, uint16_t *last) {
    const uint8_t *dash = n ? memchr(p, '-', n) : NULL;
    if (!dash) {
        if (parse_slot(p, n, first) != 0) return -1;
        *last = *first;
        return 0;
    }
    size_t a = (size_t)(dash - p);
    if (parse_slot(p, a, first) != 0 || parse_slot(dash + 1, n - a - 1, last) != 0) return -1;
    return *first <= *last ? 0 : -1;
}

void kvmux__cluster_slotkeys(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_store *st = c->loop->srv->store;
    uint16_t first, last;
    if (!kvmux_store_has_slot_keys(st)) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "slotkeys: this node serves no slots (the map group)");
        return;
    }
    if (f->value_len > SLOTKEYS_ARG_MAX ||
        kvmux__parse_slot_range(f->value, f->value_len, &first, &last) != 0) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, NULL, 0,
                            "slotkeys takes FIRST-LAST or SLOT (0..16383, FIRST <= LAST)");
        return;
    }
    /* Worst case: "16383 4294967295\n" per slot, then the total line. */
    size_t cap = (size_t)(last - first + 1) * 17 + 32, n = 0;
    char *out = malloc(cap);
    if (!out) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return;
    }
    uint64_t total = 0;
    for (uint32_t s = first; s <= last; s++) {
        uint32_t k = kvmux_store_slot_keys(st, (uint16_t)s);
        if (!k) continue;
        total += k;
        n += (size_t)snprintf(out + n, cap - n, "%u %u\n", s, k);
    }
    n += (size_t)snprintf(out + n, cap - n, "total %llu\n", (unsigned long long)total);
    size_t room = kvmux__conn_max_frame(c) - KVMUX_FRAME_HDR_LEN;
    if (n > room) {
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "slotkeys: the answer (%zu bytes) exceeds the frame limit "
                 "(%zu): ask for a smaller range", n, room);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_TOO_LARGE, NULL, 0, msg);
    } else {
        kvmux__conn_respond_bytes(c, f->request_id, KVMUX_STATUS_OK, (const uint8_t *)out, n);
    }
    free(out);
}
