/* Parked WAITs: registering a WAIT with the store, answering it when a
 * write fires it (possibly from another loop thread), when it times out,
 * when its key's TTL passes, or when the server shuts down; and releasing
 * it safely when its connection goes away.
 *
 * Ownership and the close-vs-notify race
 * ---------------------------------------
 * A kvmux_wait is owned by its loop (w->loop, the connection's loop) and is
 * only ever freed on that loop's thread. While it is registered in the
 * store, a writer on ANY thread may fire it. Who gets to finish it is
 * decided exactly once, under the key's shard lock:
 *
 *   - the writer unlinks it (state FIRED) and, still under the shard lock,
 *     pushes it onto the owner loop's inbox (kvmux__wait_fire). From then
 *     on only the inbox path touches it: kvmux__wait_deliver on the owner
 *     thread answers it (or frees it if it was orphaned);
 *   - or the owner thread unlinks it first with kvmux_store_wait_cancel
 *     (returns 1): timeout, connection close, shutdown. The writer can no
 *     longer see it, so the owner may answer and free it at once.
 *
 * When a connection closes (kvmux__waits_release), each of its waits is
 * either cancelled (freed now) or already fired. A fired wait may be
 * sitting in our inbox, or a writer may be inside fire() pushing it right
 * now. We must not free it (the inbox holds a pointer) and it must not
 * touch the connection (about to be freed). So we only clear w->conn
 * ("orphan"); the delivery sees conn == NULL and frees it. Both the clear
 * and the delivery run on the owner thread, so w->conn needs no lock; the
 * writer never reads w->conn, only w->loop, which is immutable and
 * outlives every thread (loops are freed after all threads are joined; any
 * wait still in an inbox then is freed by kvmux__loop_deinit).
 *
 * CANCEL (v2) is the owner thread's cancel like a timeout: if
 * kvmux_store_wait_cancel wins, the WAIT is answered CANCELED and freed;
 * if the writer won, the real answer is already on its way through the
 * inbox and the CANCEL is ignored (it crossed the response).
 *
 * A parked WAIT holds its request credit until it is answered, and never
 * blocks anything else on its connection: the connection keeps reading and
 * answering other requests while the WAIT sits in the store. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "log.h"
#include "server_internal.h"
#include "../cluster/cluster.h"

#define WAIT_OF(sw) ((kvmux_wait *)((char *)(sw) - offsetof(kvmux_wait, sw)))
#define WAIT_OF_TIMER(t) ((kvmux_wait *)((char *)(t) - offsetof(kvmux_wait, timer)))

/* Store callback: a write changed the key. Runs on the writer's thread
 * with the shard lock held; only touches the immutable w->loop and the
 * inbox. */
void kvmux__wait_fire(kvmux_store_waiter *sw, void *ud) {
    (void)ud;
    kvmux_wait *w = WAIT_OF(sw);
    kvmux__loop_push_wait(w->loop, w);
}

static void wait_unlink(kvmux_conn *c, kvmux_wait *w) {
    if (w->cprev) w->cprev->cnext = w->cnext;
    else c->waits = w->cnext;
    if (w->cnext) w->cnext->cprev = w->cprev;
    w->cprev = w->cnext = NULL;
    c->nwaits--;
}

/* Answered: give back the credit (unless a streamed answer keeps it),
 * forget w, and let a draining connection close once its last WAIT is
 * done. */
static void wait_finish_credit(kvmux_conn *c, kvmux_wait *w, int give_back_credit) {
    kvmux__timer_cancel(&w->loop->timers, &w->timer);
    wait_unlink(c, w);
    if (give_back_credit) kvmux_session_request_end(&c->sess);
    free(w);
    kvmux__conn_maybe_finish_drain(c);
}

static void wait_finish(kvmux_conn *c, kvmux_wait *w) { wait_finish_credit(c, w, 1); }

static void wait_answer_timeout(kvmux_conn *c, kvmux_wait *w, uint64_t current) {
    uint8_t ext[8];
    kvmux_store_u64be(ext, current);
    kvmux__conn_respond(c, w->request_id, KVMUX_STATUS_TIMEOUT, ext, 8, NULL);
    KVMUX_STAT_ADD(c->loop, waits_timed_out, 1);
    wait_finish(c, w);
}

static uint64_t next_check(const kvmux_wait *w) {
    uint64_t exp = w->sw.key_expires_ms;
    return exp != 0 && exp < w->deadline ? exp : w->deadline;
}

/* Timer: either the WAIT's timeout, or its key's TTL (to notice expiry,
 * which is otherwise lazy). */
static void wait_on_timer(kvmux_timer *t, uint64_t now) {
    kvmux_wait *w = WAIT_OF_TIMER(t);
    kvmux_conn *c = w->conn;
    kvmux_server *srv = w->loop->srv;
    if (!c || c->state == KVMUX_CONN_DEAD) return; /* teardown handles it */
    if (now < w->deadline) {
        /* TTL check: if the key expired, this fires w and the inbox will
         * deliver it; otherwise wait for the next event. */
        if (kvmux_store_wait_poll(srv->store, &w->sw)) return;
        if (kvmux__timer_arm(&w->loop->timers, &w->timer, next_check(w)) == 0) return;
        /* Cannot re-arm (no memory): time it out now rather than never. */
    }
    uint64_t current = 0;
    if (kvmux_store_wait_cancel(srv->store, &w->sw, &current) == 0)
        return; /* fired concurrently: the inbox delivery answers it */
    wait_answer_timeout(c, w, current);
}

int kvmux__wait_park(kvmux_conn *c, const kvmux_frame *f, uint64_t version,
                     uint32_t timeout_ms) {
    kvmux_loop *l = c->loop;
    kvmux_server *srv = l->srv;
    kvmux_reply_ctx ctx = {.conn = c, .request_id = f->request_id};
    kvmux_wait *w = malloc(sizeof *w + f->key_len);
    if (!w) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0,
                            "out of memory");
        return -1;
    }
    memset(w, 0, sizeof *w);
    kvmux_timer_init(&w->timer, wait_on_timer);
    w->loop = l;
    w->conn = c;
    w->request_id = f->request_id;
    w->version = version;
    uint32_t capped = timeout_ms < c->lim.max_wait_ms ? timeout_ms : c->lim.max_wait_ms;
    w->deadline = l->now + capped;
    w->klen = f->key_len;
    memcpy(w->key, f->key, f->key_len);

    /* Take the heap slot first: once the store has the waiter, failing
     * to arm its timeout would leave a WAIT that never ends. */
    if (kvmux__timer_arm(&l->timers, &w->timer, w->deadline) != 0) {
        free(w);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0,
                            "out of memory");
        return -1;
    }
    int rc = kvmux_store_wait(srv->store, w->key, w->klen, version, &w->sw,
                              kvmux__reply_value, &ctx);
    if (rc == KVMUX_STORE_PARKED) {
        w->cnext = c->waits;
        if (c->waits) c->waits->cprev = w;
        c->waits = w;
        c->nwaits++;
        KVMUX_STAT_ADD(l, waits_parked, 1);
        /* A timeout of 0 means "check once": answered TIMEOUT by the timer
         * on this same iteration. */
        kvmux__timer_arm(&l->timers, &w->timer, next_check(w)); /* slot held: cannot fail */
        return 1;
    }
    kvmux__timer_cancel(&l->timers, &w->timer);
    free(w);
    if (rc == KVMUX_STATUS_OK) return kvmux__reply_value_finish(&ctx); /* 1: streaming */
    kvmux__reply_value_failed(&ctx, rc);
    return 0;
}

void kvmux__wait_deliver(kvmux_loop *l, kvmux_wait *w) {
    kvmux_conn *c = w->conn;
    if (!c) {
        free(w); /* orphan: its connection went away while it was in flight */
        return;
    }
    kvmux__timer_cancel(&l->timers, &w->timer);
    if (c->state == KVMUX_CONN_DEAD) {
        wait_unlink(c, w);
        free(w);
        return;
    }
    /* Answer with the key's state now (it may have moved on again since
     * the write that fired us; versions only grow, so the client still
     * learns "changed" and gets the latest value). */
    kvmux_reply_ctx ctx = {.conn = c, .request_id = w->request_id};
    int rc = kvmux_store_get(l->srv->store, w->key, w->klen, kvmux__reply_value, &ctx);
    int streaming = 0;
    if (rc == KVMUX_STATUS_OK) {
        streaming = kvmux__reply_value_finish(&ctx);
    } else if (rc == KVMUX_STATUS_NOT_FOUND) {
        uint8_t ext[8];
        kvmux_store_u64be(ext, 0); /* deleted or expired: version 0 */
        kvmux__conn_respond(c, w->request_id, KVMUX_STATUS_OK, ext, 8, NULL);
    } else {
        kvmux__reply_value_failed(&ctx, rc);
    }
    KVMUX_STAT_ADD(l, waits_fired, 1);
    wait_finish_credit(c, w, !streaming); /* a stream returns it when done */
}

int kvmux__wait_cancel(kvmux_conn *c, uint32_t request_id) {
    kvmux_wait *w = c->waits;
    while (w && w->request_id != request_id) w = w->cnext;
    if (!w) return 0;
    if (kvmux_store_wait_cancel(c->loop->srv->store, &w->sw, NULL) == 0)
        return 0; /* fired: the inbox delivers the real answer */
    kvmux__conn_respond(c, request_id, KVMUX_STATUS_CANCELED, NULL, 0, "canceled");
    wait_finish(c, w);
    return 1;
}

void kvmux__waits_release(kvmux_conn *c) {
    kvmux_store *store = c->loop->srv->store;
    kvmux_wait *w = c->waits;
    while (w) {
        kvmux_wait *next = w->cnext;
        kvmux__timer_cancel(&c->loop->timers, &w->timer);
        w->cprev = w->cnext = NULL;
        if (kvmux_store_wait_cancel(store, &w->sw, NULL) == 1) {
            free(w);
        } else {
            w->conn = NULL; /* fired and in flight to our inbox: orphan it */
        }
        w = next;
    }
    c->waits = NULL;
    c->nwaits = 0;
}

void kvmux__waits_shutdown(kvmux_conn *c) {
    kvmux_store *store = c->loop->srv->store;
    kvmux_wait *w = c->waits;
    while (w) {
        kvmux_wait *next = w->cnext;
        if (kvmux_store_wait_cancel(store, &w->sw, NULL) == 1) {
            kvmux__conn_respond(c, w->request_id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0,
                                "server shutting down");
            kvmux__timer_cancel(&c->loop->timers, &w->timer);
            wait_unlink(c, w);
            kvmux_session_request_end(&c->sess);
            free(w);
        }
        w = next;
    }
    kvmux__conn_maybe_finish_drain(c);
}

void kvmux__wait_free_orphan(kvmux_wait *w) { free(w); }

/* w's slot is no longer served here: take it back from the store and
 * answer it as kvmux__cluster_refuse answers a new request (TRY_AGAIN for
 * a slot an outgoing migration fenced: the client sends it again, to B
 * once B serves R; its version argument stays meaningful there). If a
 * writer fired it meanwhile, the inbox delivers that answer instead. */
static void wait_refuse_moved(kvmux_conn *c, kvmux_wait *w, uint16_t slot, int migrating) {
    if (kvmux_store_wait_cancel(c->loop->srv->store, &w->sw, NULL) == 0) return;
    if (migrating) kvmux__cluster_try_again_migrating(c, w->request_id, slot);
    else kvmux__cluster_wrong_shard(c, w->request_id, slot);
    wait_finish(c, w);
}

void kvmux__waits_recheck_slots(kvmux_loop *l) {
    kvmux_server *s = l->srv;
    if (s->cfg.cluster_group == 0) return;
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(s);
    uint64_t applied = cl ? atomic_load(&cl->epoch) : 0;
    uint64_t seen = kvmux__mapwatch_seen_epoch(s);
    uint64_t stamp = applied > seen ? applied : seen;
    uint64_t fence = kvmux__cluster_fence_gen(s);
    if ((stamp == l->waits_map_stamp && fence == l->waits_fence_stamp) || !cl) return;
    l->waits_map_stamp = stamp;
    l->waits_fence_stamp = fence;
    for (kvmux_conn *c = l->conns; c; c = c->next) {
        if (c->state == KVMUX_CONN_DEAD) continue;
        for (kvmux_wait *w = c->waits, *next; w; w = next) {
            next = w->cnext;
            uint16_t slot = kvmux_slot(w->key, w->klen);
            int own = kvmux_fsm_cluster_route(cl, slot, NULL) == KVMUX_ROUTE_OWN;
            int migrating = own && kvmux_migout_fenced(&cl->out, slot);
            if (!own || migrating || kvmux__mapwatch_fenced(s, slot))
                wait_refuse_moved(c, w, slot, migrating);
        }
    }
}
