/* Write acknowledgments under the append-only log, and write refusals.
 *
 * With --fsync always, a write is acknowledged only once it is on disk.
 * The store change happens at once (readers see it, like Redis), the log
 * record is buffered (aof.c), and the RESPONSE is parked in the loop's
 * FIFO with the log position it needs. Each loop iteration releases every
 * parked answer the writer thread's latest fsync covers; the writer thread
 * wakes the loops (kvmux__durable_notify) after each fsync. The FIFO is
 * per loop and positions only grow within a loop, so releasing is a walk
 * from the head that stops at the first uncovered entry.
 *
 * Only answers to successful writes wait. A GET, a WAIT, a PING or a
 * failed CAS on the same connection is answered at once: nothing about
 * them needs the disk, and responses may leave out of order anyway.
 * A held write keeps its request credit (like a parked WAIT), so the
 * connection counts as busy and a graceful shutdown waits for it.
 *
 * If the log fails, held answers become INTERNAL and new writes are
 * refused before they run: kvmuxd never acknowledges a write it could not
 * make durable. This file also refuses writes over --maxmemory under the
 * noeviction policy (same place in the request path). */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

#define OOM_MSG "OOM command not allowed when used memory > maxmemory"
#define AOF_MSG "append-only log write failed: writes are refused (see the server log)"

int kvmux__durable_refuse(kvmux_conn *c, uint32_t id, int frees_memory) {
    kvmux_server *srv = c->loop->srv;
    if (srv->aof && kvmux_aof_failed(srv->aof)) {
        KVMUX_STAT_ADD(c->loop, aof_refused, 1);
        kvmux__conn_respond(c, id, KVMUX_STATUS_INTERNAL, NULL, 0, AOF_MSG);
        return 1;
    }
    if (!frees_memory && kvmux_store_over_limit(srv->store)) {
        KVMUX_STAT_ADD(c->loop, oom_refused, 1);
        /* v1 peers do not know OUT_OF_MEMORY (proto.h): BUSY, as before. */
        kvmux__conn_respond(c, id,
                            kvmux_session_is_v2(&c->sess) ? KVMUX_STATUS_OUT_OF_MEMORY
                                                          : KVMUX_STATUS_BUSY,
                            NULL, 0, OOM_MSG);
        return 1;
    }
    return 0;
}

int kvmux__durable_respond(kvmux_conn *c, uint32_t id, uint8_t status,
                           const uint8_t *extras, uint8_t extras_len) {
    kvmux_loop *l = c->loop;
    kvmux_aof *aof = l->srv->aof;
    if (!aof || kvmux_aof_policy(aof) != KVMUX_FSYNC_ALWAYS) {
        kvmux__conn_respond(c, id, status, extras, extras_len, NULL);
        return 0;
    }
    if (kvmux_aof_failed(aof)) {
        kvmux__conn_respond(c, id, KVMUX_STATUS_INTERNAL, NULL, 0, AOF_MSG);
        return 0;
    }
    uint64_t lsn = kvmux_aof_appended(aof);
    if (kvmux_aof_durable(aof) >= lsn) {
        kvmux__conn_respond(c, id, status, extras, extras_len, NULL);
        return 0;
    }
    if (l->held_len == l->held_cap) {
        /* Compact first, grow only if the live part fills the array. */
        size_t live = l->held_len - l->held_head;
        if (l->held_head > 0) {
            memmove(l->held, l->held + l->held_head, live * sizeof *l->held);
            l->held_head = 0;
            l->held_len = live;
        }
        if (l->held_len == l->held_cap) {
            size_t cap = l->held_cap ? l->held_cap * 2 : 256;
            kvmux_held *h = realloc(l->held, cap * sizeof *h);
            if (!h) {
                /* Cannot remember it: never acknowledge, say why. */
                kvmux__conn_respond(c, id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
                return 0;
            }
            l->held = h;
            l->held_cap = cap;
        }
    }
    kvmux_held *h = &l->held[l->held_len++];
    h->conn = c;
    h->lsn = lsn;
    h->request_id = id;
    h->status = status;
    h->extras_len = extras_len;
    if (extras_len) memcpy(h->extras, extras, extras_len);
    c->nheld++;
    KVMUX_STAT_ADD(l, writes_held, 1);
    return 1;
}

void kvmux__durable_release(kvmux_loop *l) {
    if (l->held_head == l->held_len) return;
    kvmux_aof *aof = l->srv->aof;
    uint64_t durable = kvmux_aof_durable(aof);
    int failed = kvmux_aof_failed(aof);
    while (l->held_head < l->held_len) {
        kvmux_held *h = &l->held[l->held_head];
        if (h->lsn > durable && !failed) break;
        l->held_head++;
        kvmux_conn *c = h->conn;
        if (!c) continue;
        c->nheld--;
        if (h->lsn <= durable)
            kvmux__conn_respond(c, h->request_id, h->status, h->extras, h->extras_len, NULL);
        else
            kvmux__conn_respond(c, h->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, AOF_MSG);
        kvmux_session_request_end(&c->sess);
        kvmux__conn_maybe_finish_drain(c);
    }
    if (l->held_head == l->held_len) l->held_head = l->held_len = 0;
}

int kvmux__durable_holds(const kvmux_conn *c, uint32_t request_id) {
    const kvmux_loop *l = c->loop;
    uint32_t seen = 0;
    for (size_t i = l->held_head; seen < c->nheld && i < l->held_len; i++) {
        if (l->held[i].conn != c) continue;
        if (l->held[i].request_id == request_id) return 1;
        seen++;
    }
    return 0;
}

void kvmux__durable_forget(kvmux_conn *c) {
    kvmux_loop *l = c->loop;
    for (size_t i = l->held_head; c->nheld && i < l->held_len; i++) {
        if (l->held[i].conn == c) {
            l->held[i].conn = NULL;
            c->nheld--;
        }
    }
}

void kvmux__durable_deinit(kvmux_loop *l) {
    free(l->held);
    l->held = NULL;
    l->held_head = l->held_len = l->held_cap = 0;
}

void kvmux__durable_notify(void *ud) {
    kvmux_server *s = ud;
    for (uint32_t i = 0; i < s->nloops; i++)
        if (s->loops[i].wake.fd >= 0) kvmux__loop_wake(&s->loops[i]);
}
