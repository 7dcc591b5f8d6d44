/* kvmux client, cluster mode (kvmux_options.cluster = 1): one handle over
 * a sharded cluster (docs/CLUSTER.md "The cluster client", docs/DESIGN.md
 * "Cluster client").
 *
 * Design. The handle is an ordinary kvmux_client without a connection
 * (fd -1, no reader or writer) whose `router` holds the slot map and one
 * endpoints-mode sub-client per group. A callback request whose group is
 * connected goes straight to that sub-client (cluster_direct.c:
 * the handle keeps no record of it until a WRONG_SHARD or TRY_AGAIN
 * hands it back). Everything else uses the handle's usual async
 * machinery (async.c): a submit makes an op that keeps a copy of the
 * request, and the op is ROUTED:
 *   - sent: a callback request on its group's sub-client is outstanding
 *     (a "hop", op->hop), with the time left as its timeout -- the op's
 *     own deadline, counted from the same clock read, which the
 *     sub-client enforces as it does its own requests' (its deadline
 *     lists, whatever its connection does);
 *   - parked: waiting for its group's sub-client to connect (op->rwait),
 *     or for a retry time (TRY_AGAIN backoff, a full sub-client queue);
 *     only then is its deadline on the handle's timer heap (its
 *     completion thread, or the loop's timer, enforces it).
 * The slot's group is one byte per slot (gidx), or, for a map of a few
 * slot ranges, a run table of one cache line (the 32 KiB map read at a
 * random slot per request missed the cache).
 * The hop's callback (on the sub-client's completion thread) takes the
 * handle's mutex and follows WRONG_SHARD at once (the group it names,
 * made from the endpoints it carries if the map does not know it),
 * parks a TRY_AGAIN for a jittered backoff, or completes the op. A
 * callback op whose handle has no callback running or queued runs its
 * callback right there, on the sub-client's completion thread
 * (kvmux__op_finish_direct: one hand-off per request, not two; the
 * handle's completion thread waits meanwhile, so callbacks stay one at a
 * time and in order); otherwise the ordinary path (op_complete: the
 * handle's own completion thread runs it; futures complete directly). A
 * kvmux_close from such a callback is finished by the handle's completion
 * thread (close_handoff), which closes -- joins -- this sub-client first.
 * An op that completes early (deadline, cancel, close) drops its hop: the
 * hop's answer finds no op and is discarded, and the sub-request is
 * cancelled. Every hop's callback runs exactly once (the sub-client's
 * guarantee) and frees the hop.
 *
 * Map refresh: a WRONG_SHARD carrying an epoch newer than the router's
 * starts one CLUSTER map request to the group that answered it, unless
 * one is in flight or one was already started for that epoch or a later
 * one: at most one refresh per epoch seen, however many requests are
 * redirected, and an answer that is not newer starts nothing. Meanwhile
 * the redirect's slot is patched in the router's map (the owner it names),
 * so the following requests for it go straight there.
 *
 * Sub-clients are made lazily, on a thread of their own per connect
 * (kvmux_connect blocks up to connect_timeout_ms): no submit and no other
 * group's callbacks wait for a connect. A failed connect is remembered for
 * CL_FAIL_HOLD_MS, during which requests for that group fail at once with
 * its code; the next request after it tries again.
 *
 * Blocking calls are a future and a wait (kvmux__cluster_call): one
 * routing path. Lock order: the handle's mutex, then a sub-client's (a
 * hop is submitted and cancelled under the handle's mutex; a sub-client
 * never holds its own while it takes the handle's: callbacks run
 * unlocked).
 *
 * What it is not: no I/O of its own; the map codecs are src/cluster's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "client_internal.h"
#include "clock.h"
#include "cluster.h"
#include "router.h"

/* ---- groups ---- */

static kvmux__cgroup *cl_group_find(const kvmux__router *r, uint16_t id) {
    for (uint32_t i = 0; i < r->ngroups; i++)
        if (r->groups[i]->id == id) return r->groups[i];
    return NULL;
}

static void cl_numeric_only(const char *list, char *out, size_t cap);

/* g's sub-client takes g->endpoints as its member list (lock held; g
 * READY). Event-loop mode keeps the numeric members only (never a
 * resolver on the loop); with none, or on an error, the sub-client keeps
 * the list it has: it still reaches whichever old member serves. */
static void cl_sub_members(kvmux_client *c, kvmux__cgroup *g) {
    char eps[CL_EP_MAX];
    if (c->mode == KVMUX__MODE_LOOP) cl_numeric_only(g->endpoints, eps, sizeof eps);
    else memcpy(eps, g->endpoints, sizeof eps);
    if (eps[0] && kvmux__failover_set_endpoints(g->sub, eps) == 0) c->router->member_updates++;
}

/* The group id, made if new (endpoints may be NULL/empty); NULL when the
 * table is full, out of memory, or closing. */
static kvmux__cgroup *cl_group_learn(kvmux_client *c, uint16_t id, const char *endpoints) {
    kvmux__router *r = c->router;
    kvmux__cgroup *g = cl_group_find(r, id);
    if (!g) {
        if (r->closing || r->ngroups >= CL_MAX_GROUPS) return NULL;
        g = calloc(1, sizeof *g);
        if (!g) return NULL;
        g->id = id;
        g->idx = (uint16_t)r->ngroups;
        g->c = c;
        g->timer_at = INT64_MAX;
        r->groups[r->ngroups++] = g;
    }
    if (endpoints && *endpoints && strcmp(endpoints, g->endpoints) != 0) {
        /* The newest member list: a group not connected yet connects with
         * it (a connecting one is updated when its connect ends); a
         * connected one's sub-client walks it from its next reconnect. */
        snprintf(g->endpoints, sizeof g->endpoints, "%s", endpoints);
        if (g->state == CG_READY) cl_sub_members(c, g);
    }
    return g;
}

/* The member list of map group mg, comma-separated, into out. */
static void cl_group_addrs(const kvmux_map_group *mg, char *out, size_t cap) {
    size_t off = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < mg->n && off < cap; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s%s", i ? "," : "", mg->addr[i]);
}

/* The gidx entry for group g (NULL: unknown). */
static uint8_t cl_gidx_of(const kvmux__cgroup *g) {
    if (!g) return 0;
    return g->idx + 1u < CL_GIDX_MAP ? (uint8_t)(g->idx + 1u) : (uint8_t)CL_GIDX_MAP;
}

/* Rebuild r->gidx from r->map->owner (lock held). Slots come in runs
 * of one owner: the group is looked up once per run. */
static void cl_gidx_build(kvmux__router *r) {
    uint16_t last = 0;
    uint8_t v = 0;
    for (uint32_t s = 0; s < KVMUX_SLOTS; s++) {
        uint16_t o = r->map->owner[s];
        if (o != last) {
            last = o;
            v = o ? cl_gidx_of(cl_group_find(r, o)) : 0;
        }
        r->gidx[s] = o ? v : 0;
    }
    /* The runs, if few enough. */
    uint32_t n = 0;
    for (uint32_t s = 0; s < KVMUX_SLOTS; s++) {
        if (s + 1 < KVMUX_SLOTS && r->gidx[s + 1] == r->gidx[s]) continue;
        if (n == CL_RUNS_MAX) {
            n = 0;
            break;
        }
        r->run_end[n] = (uint16_t)s;
        r->run_g[n++] = r->gidx[s];
    }
    r->nruns = n;
}

/* gidx of slot (see the router's gidx and runs). */
static uint8_t cl_gidx_at(const kvmux__router *r, uint16_t slot) {
    if (r->nruns == 0) return r->gidx[slot];
    uint32_t i = 0;
    while (slot > r->run_end[i]) i++; /* the last run ends at the last slot */
    return r->run_g[i];
}

/* Make every group of r's map known, with its members, and the slot
 * table its owners. */
static void cl_install_groups(kvmux_client *c) {
    kvmux__router *r = c->router;
    char eps[CL_EP_MAX];
    for (unsigned i = 0; i < r->map->ngroups; i++) {
        cl_group_addrs(&r->map->groups[i], eps, sizeof eps);
        (void)cl_group_learn(c, r->map->groups[i].id, eps);
    }
    cl_gidx_build(r);
}

static void cl_dispatch(kvmux_client *c, kvmux__op *op);
static void cl_unpark(kvmux_client *c, kvmux__op *op);

/* The connect thread of one group: make its sub-client (blocking, no
 * lock), then release the ops parked for it. */
static void *cl_connect_main(void *arg) {
    kvmux__cgroup *g = arg;
    kvmux_client *c = g->c;
    kvmux__router *r = c->router;
    char eps[CL_EP_MAX];
    pthread_mutex_lock(&c->mu);
    memcpy(eps, g->endpoints, sizeof eps);
    kvmux_options o = r->sub_opts;
    pthread_mutex_unlock(&c->mu);
    kvmux_client *sub = NULL;
    int rc = KVMUX_ECONNECT;
    if (eps[0]) {
        o.endpoints = eps;
        rc = kvmux_connect(&sub, NULL, 0, &o);
    }
    pthread_mutex_lock(&c->mu);
    if (rc == 0 && r->closing) {
        pthread_mutex_unlock(&c->mu);
        kvmux_close(sub);
        pthread_mutex_lock(&c->mu);
        rc = KVMUX_ECLOSED;
    }
    if (rc == 0) {
        sub->xhandle = c; /* its callback batches take c's gate */
        g->sub = sub;
        g->state = CG_READY;
        /* A newer member list arrived while connecting. */
        if (strcmp(eps, g->endpoints) != 0) cl_sub_members(c, g);
    } else {
        g->state = CG_FAILED;
        g->fail_code = rc == KVMUX_ETIMEDOUT ? KVMUX_ECONNECT : rc;
        g->fail_until = kvmux__now_ms() + CL_FAIL_HOLD_MS;
    }
    /* The ops parked for this group go (or fail) now. */
    kvmux__op *next;
    for (kvmux__op *op = r->routed; op; op = next) {
        next = op->rnext;
        if (op->rparked && op->rwait == g) {
            cl_unpark(c, op);
            cl_dispatch(c, op);
        }
    }
    pthread_cond_broadcast(&r->gcond);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void cl_connect_loop(kvmux_client *c, kvmux__cgroup *g);

/* Start g's connect thread (lock held; g IDLE or FAILED). Event-loop
 * mode: g's sub-client is made at once (a non-blocking connect). */
static void cl_connect_start(kvmux_client *c, kvmux__cgroup *g) {
    if (c->router->closing) return;
    if (c->mode == KVMUX__MODE_LOOP) {
        cl_connect_loop(c, g);
        return;
    }
    if (g->thread_live) {
        /* The previous attempt's thread has finished its work (the state
         * changed under this lock) and only returns. */
        pthread_join(g->thread, NULL);
        g->thread_live = 0;
    }
    g->state = CG_CONNECTING;
    if (pthread_create(&g->thread, NULL, cl_connect_main, g) != 0) {
        g->state = CG_FAILED;
        g->fail_code = KVMUX_ENOMEM;
        g->fail_until = kvmux__now_ms() + CL_FAIL_HOLD_MS;
        return;
    }
    g->thread_live = 1;
}

/* ---- routing ---- */

int kvmux__cl_keyed(int op) {
    switch (op) {
    case KVMUX_GET: case KVMUX_SET: case KVMUX_DEL: case KVMUX_INCR: case KVMUX_CAS:
    case KVMUX_WAIT: case KVMUX_EXISTS: case KVMUX_TTL: case KVMUX_EXPIRE:
    case KVMUX_PERSIST:
        return 1;
    default:
        return 0;
    }
}

/* The group a request goes to: the one a redirect named (rgroup), else
 * its slot's owner in the map, else (keyless, or a slot the map leaves
 * unassigned: the map may be old) the seed's group. */
static uint16_t cl_target_req(const kvmux__router *r, const kvmux_request *q, uint16_t rgroup) {
    if (rgroup) return rgroup;
    if (kvmux__cl_keyed(q->op)) {
        uint16_t owner = r->map->owner[kvmux_slot(q->key, q->key_len)];
        if (owner) return owner;
    }
    return r->seed_group;
}

/* The group request q goes to (rgroup: as cl_target_req), made if new;
 * NULL when none can be (table full, out of memory, closing). The common
 * case -- routed by the map, a group among the first 254 -- is one byte
 * of gidx; the rest is cl_target_req's rule. */
kvmux__cgroup *kvmux__cl_target(kvmux_client *c, const kvmux_request *q, uint16_t rgroup) {
    const kvmux__router *r = c->router;
    if (!rgroup && kvmux__cl_keyed(q->op)) {
        uint8_t i = cl_gidx_at(r, kvmux_slot(q->key, q->key_len));
        if (i != 0 && i != CL_GIDX_MAP) return r->groups[i - 1u];
    }
    return cl_group_learn(c, cl_target_req(r, q, rgroup), NULL);
}

/* Park op: for g's connect (wait), else until at. A parked op's deadline
 * goes on c's timer heap (room was reserved at its submit: cannot fail):
 * no sub-client holds it meanwhile. */
static void cl_park(kvmux_client *c, kvmux__op *op, kvmux__cgroup *wait, int64_t at) {
    kvmux__router *r = c->router;
    op->rparked = 1;
    op->rwait = wait;
    op->retry_at = at;
    r->nparked++;
    if (!wait) r->nretry++;
    (void)kvmux__theap_push(&c->timers, &op->timer);
    kvmux__timers_changed(c, at < op->timer.deadline ? at : op->timer.deadline);
}

static void cl_unpark(kvmux_client *c, kvmux__op *op) {
    kvmux__router *r = c->router;
    if (!op->rparked) return;
    if (!op->rwait) r->nretry--;
    r->nparked--;
    op->rparked = 0;
    op->rwait = NULL;
    kvmux__theap_remove(&c->timers, &op->timer);
}

static void cl_hop_cb(kvmux_client *sub, int result, kvmux_reply *reply, void *ud);

/* A zeroed hop for c (lock held), from the cache if it has one; NULL
 * out of memory. */
static kvmux__hop *cl_hop_new(kvmux_client *c) {
    kvmux__router *r = c->router;
    kvmux__hop *hop = r->free_hops;
    if (!hop) return calloc(1, sizeof *hop);
    r->free_hops = hop->next;
    r->nfree_hops--;
    memset(hop, 0, sizeof *hop);
    return hop;
}

/* A hop done with (lock held): cached up to CL_HOP_CACHE, else freed. */
static void cl_hop_free(kvmux_client *c, kvmux__hop *hop) {
    kvmux__router *r = c->router;
    if (r->nfree_hops >= CL_HOP_CACHE) {
        free(hop);
        return;
    }
    hop->next = r->free_hops;
    r->free_hops = hop;
    r->nfree_hops++;
}

/* Send op to g's sub-client, left ms from now. Returns 0 (sent, or
 * parked for a retry) or the submit's error (first: returned to the
 * caller). */
static int cl_send(kvmux_client *c, kvmux__op *op, kvmux__cgroup *g, int64_t now, int64_t left,
                   int first, int try_only) {
    kvmux__hop *hop = cl_hop_new(c);
    if (!hop) return KVMUX_ENOMEM;
    hop->c = c;
    hop->op = op;
    hop->g = g;
    int tmo = left > INT32_MAX ? INT32_MAX : (int)left;
    /* The sub-client borrows op's copy of the request: op outlives the
     * hop's sub-request (its answer ends the hop; an op completing first
     * cancels the sub-request, kvmux__cluster_unroute, which stops every
     * read of the copy before op is recycled). */
    int rc = kvmux__async_submit_cb(g->sub, &op->q->req, tmo, cl_hop_cb, hop, first && try_only,
                                    &hop->h, now, 1);
    if (rc != 0) {
        cl_hop_free(c, hop);
        if (rc == KVMUX_EAGAIN && !first) {
            cl_park(c, op, NULL, kvmux__now_ms() + CL_EAGAIN_RETRY_MS);
            return 0;
        }
        return rc;
    }
    op->hop = hop;
    return 0;
}

/* Route op once (lock held). first: the submit itself (errors are
 * returned, nothing completes); else errors complete the op. now: the
 * monotonic ms, < 0 to read the clock. */
static int cl_route_once(kvmux_client *c, kvmux__op *op, int first, int try_only, int64_t now) {
    kvmux__router *r = c->router;
    if (now < 0) now = kvmux__now_ms();
    int64_t left = op->timer.deadline - now;
    if (left <= 0) return KVMUX_ETIMEDOUT;
    if (r->closing) return KVMUX_ECLOSED;
    kvmux__cgroup *g = kvmux__cl_target(c, &op->q->req, op->rgroup);
    if (!g) return KVMUX_ENOMEM;
    if (g->state == CG_READY) return cl_send(c, op, g, now, left, first, try_only);
    if (g->state == CG_FAILED && now < g->fail_until) return g->fail_code;
    if (g->state != CG_CONNECTING) cl_connect_start(c, g);
    if (g->state == CG_READY) return cl_send(c, op, g, now, left, first, try_only);
    if (g->state == CG_FAILED) return g->fail_code;
    if (first && (try_only || r->nparked >= c->opts.queue_limit)) return KVMUX_EAGAIN;
    cl_park(c, op, g, INT64_MAX);
    return 0;
}

/* Route op again (a hop ended, a retry time came, its group connected):
 * an error completes it. Lock held. */
static void cl_dispatch(kvmux_client *c, kvmux__op *op) {
    int rc = cl_route_once(c, op, 0, 0, -1);
    if (rc != 0) kvmux__op_finish(c, op, rc, NULL);
}

/* Ready op (ROUTED) for routing (lock held): no hop, not parked, no
 * redirect yet. The heap holds parked ops only (a sent one's deadline is
 * its hop's, on the sub-client): room for every routed op, so a park
 * never fails. Amortized: a compare. Returns 0 or KVMUX_ENOMEM. */
static int cl_route_init(kvmux_client *c, kvmux__op *op) {
    if (kvmux__theap_reserve(&c->timers, c->router->nrouted + 1u) != 0) return KVMUX_ENOMEM;
    op->hop = NULL;
    op->rparked = 0;
    op->rwait = NULL;
    op->rgroup = 0;
    op->backoff_ms = 0;
    op->repoch = 0;
    op->redirects = 0;
    return 0;
}

/* op joins the router's ROUTED list (lock held). */
static void cl_link(kvmux__router *r, kvmux__op *op) {
    op->rprev = NULL;
    op->rnext = r->routed;
    if (op->rnext) op->rnext->rprev = op;
    r->routed = op;
    r->nrouted++;
}

int kvmux__cluster_route(kvmux_client *c, kvmux__op *op, int try_only, int64_t now) {
    int rc = cl_route_init(c, op);
    if (rc != 0) return rc;
    rc = cl_route_once(c, op, 1, try_only, now);
    if (rc != 0) return rc;
    cl_link(c->router, op);
    return 0;
}

void kvmux__cluster_unroute(kvmux_client *c, kvmux__op *op) {
    kvmux__router *r = c->router;
    cl_unpark(c, op);
    kvmux__hop *hop = op->hop;
    if (hop) {
        /* Its answer, whenever it comes, finds no op; the sub-request
         * stops (a CANCEL on the wire, its credit back). */
        hop->op = NULL;
        op->hop = NULL;
        (void)kvmux_cancel(hop->g->sub, hop->h);
    }
    if (op->rprev) op->rprev->rnext = op->rnext;
    else if (r->routed == op) r->routed = op->rnext;
    if (op->rnext) op->rnext->rprev = op->rprev;
    op->rnext = op->rprev = NULL;
    r->nrouted--;
}

kvmux__op *kvmux__cluster_find_handle(kvmux_client *c, uint64_t h) {
    for (kvmux__op *op = c->router->routed; op; op = op->rnext)
        if (op->kind == KVMUX__OP_CALLBACK && op->handle == h) return op;
    return NULL;
}

void kvmux__cluster_tick(kvmux_client *c, int64_t now) {
    kvmux__router *r = c->router;
    if (r->nretry == 0) return;
    kvmux__op *next;
    for (kvmux__op *op = r->routed; op; op = next) {
        next = op->rnext;
        if (op->rparked && !op->rwait && op->retry_at <= now) {
            cl_unpark(c, op);
            /* Its deadline passed while it waited out a TRY_AGAIN (or
             * hand-over) backoff -- this tick came late, a loaded machine
             * or a loop not run: nothing of it is in flight, the slot
             * stayed unavailable. KVMUX_ETRYAGAIN, as cl_backoff would
             * have said, not a timeout. */
            if (op->backoff_ms && op->timer.deadline <= now)
                kvmux__op_finish(c, op, KVMUX_ETRYAGAIN, NULL);
            else
                cl_dispatch(c, op);
        }
    }
}

int64_t kvmux__cluster_next(const kvmux_client *c) {
    const kvmux__router *r = c->router;
    int64_t at = INT64_MAX;
    if (c->mode == KVMUX__MODE_LOOP)
        for (uint32_t i = 0; i < r->ngroups; i++)
            if (r->groups[i]->timer_at < at) at = r->groups[i]->timer_at;
    if (r->nretry == 0) return at;
    for (const kvmux__op *op = r->routed; op; op = op->rnext)
        if (op->rparked && !op->rwait && op->retry_at < at) at = op->retry_at;
    return at;
}

/* ---- answers ---- */

/* Ask g for its map (lock held): at most one in flight, one per epoch. */
static void cl_maybe_refresh(kvmux_client *c, kvmux__cgroup *g, uint64_t epoch) {
    kvmux__router *r = c->router;
    if (r->closing || r->refreshing || epoch <= r->map->epoch || epoch <= r->refresh_for) return;
    if (!g || g->state != CG_READY) return;
    kvmux__hop *hop = cl_hop_new(c);
    if (!hop) return; /* a later redirect tries again */
    hop->c = c;
    hop->g = g;
    hop->refresh = 1;
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = KVMUX_CLUSTER;
    q.key = "map";
    q.key_len = 3;
    if (kvmux__async_submit_cb(g->sub, &q, c->opts.connect_timeout_ms, cl_hop_cb, hop, 0,
                               &hop->h, -1, 0) != 0) {
        cl_hop_free(c, hop);
        return;
    }
    r->refresh_for = epoch;
    r->refreshing = 1;
    r->refreshes++;
}

/* A refresh's answer: install the map if it is newer. */
static void cl_refresh_done(kvmux_client *c, int result, const kvmux_reply *reply) {
    kvmux__router *r = c->router;
    r->refreshing = 0;
    if (result != 0 || !reply->value || r->closing) return;
    kvmux_map *m = malloc(sizeof *m);
    if (!m) return;
    if (kvmux_map_decode(m, reply->value, reply->value_len, NULL, 0) != 0 ||
        m->epoch <= r->map->epoch) {
        free(m);
        return;
    }
    free(r->map);
    r->map = m;
    cl_install_groups(c);
}

/* The next TRY_AGAIN backoff wait (ms, >= 1) after *last (updated):
 * 2 ms doubling to 100 ms, uniform in [b/2, b]. Lock held. */
static int64_t cl_backoff_ms(kvmux__router *r, uint16_t *last) {
    unsigned b = *last ? *last * 2u : CL_BACKOFF_MIN_MS;
    if (b > CL_BACKOFF_MAX_MS) b = CL_BACKOFF_MAX_MS;
    *last = (uint16_t)b;
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    int64_t wait = (int64_t)(b / 2 + r->rng % (b - b / 2 + 1));
    return wait < 1 ? 1 : wait;
}

/* Park op for its next TRY_AGAIN backoff (jittered, doubling), or
 * complete it with KVMUX_ETRYAGAIN if that would pass its deadline. */
static void cl_backoff(kvmux_client *c, kvmux__op *op) {
    int64_t at = kvmux__now_ms() + cl_backoff_ms(c->router, &op->backoff_ms);
    if (at >= op->timer.deadline) {
        kvmux__op_finish(c, op, KVMUX_ETRYAGAIN, NULL);
        return;
    }
    cl_park(c, op, NULL, at);
}

/* What a request does with a WRONG_SHARD answer. */
typedef enum cl_verdict {
    CL_FOLLOW = 0, /* to *rgroup, at once */
    CL_STALE = 1,  /* the same group again after a backoff */
    CL_FINISH = 2  /* complete with *code */
} cl_verdict;

/* A WRONG_SHARD (value in reply) from group from, for a request whose
 * newest epoch seen is *repoch and redirects so far *redirects (both
 * updated); lock held. Followed at once -- unless it comes from a node
 * whose map is older than one already seen (the router's, or a redirect's
 * for this request): while a new map is being pushed group by group, such
 * a node would send the request back where it came from. That is a
 * hand-over: the same group again after a backoff, as for TRY_AGAIN, not
 * counted as a redirect. A newer epoch patches the slot in the router's
 * map and starts one refresh. */
static cl_verdict cl_redirect(kvmux_client *c, kvmux__cgroup *from, const kvmux_reply *reply,
                              uint64_t *repoch, uint8_t *redirects, uint16_t *rgroup,
                              int *code) {
    kvmux__router *r = c->router;
    kvmux_redirect rd;
    if (!reply->value || kvmux_redirect_decode(&rd, reply->value, reply->value_len) != 0 ||
        rd.group == 0) {
        /* Unassigned (or not a redirect we can read): the caller's answer. */
        *code = KVMUX_EWRONGSHARD;
        return CL_FINISH;
    }
    uint64_t known = *repoch > r->map->epoch ? *repoch : r->map->epoch;
    if (rd.epoch < known) {
        r->stale++;
        return CL_STALE;
    }
    *repoch = rd.epoch;
    r->redirects++;
    if (++*redirects > c->opts.cluster_max_redirects) {
        *code = KVMUX_EREDIRECTS;
        return CL_FINISH;
    }
    if (!cl_group_learn(c, rd.group, rd.endpoints)) {
        *code = KVMUX_ENOMEM;
        return CL_FINISH;
    }
    if (rd.epoch > r->map->epoch) {
        /* The next requests for this slot go straight to its owner, and
         * the whole map is asked for once. */
        r->map->owner[rd.slot] = rd.group;
        r->gidx[rd.slot] = cl_gidx_of(cl_group_find(r, rd.group));
        r->nruns = 0; /* the runs are rebuilt with the next map */
        cl_maybe_refresh(c, from, rd.epoch);
    }
    *rgroup = rd.group;
    return CL_FOLLOW;
}

/* WRONG_SHARD for op from group from (lock held). */
static void cl_on_wrong_shard(kvmux_client *c, kvmux__op *op, kvmux__cgroup *from,
                              kvmux_reply *reply) {
    int code = 0;
    switch (cl_redirect(c, from, reply, &op->repoch, &op->redirects, &op->rgroup, &code)) {
    case CL_FOLLOW: cl_dispatch(c, op); break;
    case CL_STALE: cl_backoff(c, op); break;
    case CL_FINISH:
        kvmux__op_finish(c, op, code, code == KVMUX_EWRONGSHARD ? reply : NULL);
        break;
    }
}

/* TRY_AGAIN: again after a jittered backoff, if the deadline allows. */
static void cl_on_try_again(kvmux_client *c, kvmux__op *op) {
    c->router->try_agains++;
    cl_backoff(c, op);
}

/* Every hop's one answer (the sub-client's completion thread). */
static void cl_hop_cb(kvmux_client *sub, int result, kvmux_reply *reply, void *ud) {
    kvmux__hop *hop = ud;
    kvmux_client *c = hop->c;
    pthread_mutex_lock(&c->mu);
    if (hop->refresh) {
        cl_refresh_done(c, result, reply);
        cl_hop_free(c, hop);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    kvmux__op *op = hop->op;
    kvmux__cgroup *from = hop->g;
    cl_hop_free(c, hop);
    if (op) {
        op->hop = NULL;
        if (result == KVMUX_EWRONGSHARD) cl_on_wrong_shard(c, op, from, reply);
        else if (result == KVMUX_ETRYAGAIN) cl_on_try_again(c, op);
        else if (!kvmux__op_finish_direct(c, op, result, reply, sub))
            kvmux__op_finish(c, op, result, reply);
    }
    /* A close from that callback was handed to c's completion thread,
     * which frees c only after closing this sub-client (joining this
     * thread): c is still valid here. */
    pthread_mutex_unlock(&c->mu);
}

int kvmux__cl_take_back(kvmux_client *c, kvmux__op *op, kvmux__cgroup *from, int result,
                        kvmux_reply *reply) {
    if (cl_route_init(c, op) != 0) return KVMUX_ENOMEM;
    cl_link(c->router, op);
    if (result == KVMUX_EWRONGSHARD) cl_on_wrong_shard(c, op, from, reply);
    else cl_on_try_again(c, op);
    return 0;
}

/* ---- blocking calls ---- */

/* Leave the library (lock held): kvmux_close waits for the last one. */
static void cl_leave(kvmux_client *c) {
    c->active--;
    if (c->closing && c->active == 0) pthread_cond_broadcast(&c->idle_cond);
}

static int cl_group_wait(kvmux_client *c, kvmux__cgroup *g, const struct timespec *deadline);

/* One blocking call's hops (lock held on entry and exit; dropped while
 * the sub-client works): the same routing as an op's, on the caller's
 * thread -- no completion thread in the way. Returns the result, the
 * answer in *rep. */
static int cl_call_hops(kvmux_client *c, const kvmux_request *req, kvmux_reply *rep,
                        kvmux_value **vout, int64_t now, int64_t deadline, int try_only) {
    kvmux__router *r = c->router;
    uint16_t rgroup = 0, backoff = 0;
    uint8_t redirects = 0;
    uint64_t repoch = 0;
    for (;;) {
        /* The first hop counts from the caller's clock read. */
        int64_t left = deadline - (now >= 0 ? now : kvmux__now_ms());
        now = -1;
        if (left <= 0) return KVMUX_ETIMEDOUT;
        if (r->closing) return KVMUX_ECLOSED;
        kvmux__cgroup *g = kvmux__cl_target(c, req, rgroup);
        if (!g) return KVMUX_ENOMEM;
        if (g->state != CG_READY) {
            struct timespec ts = kvmux__deadline(left);
            int rc = cl_group_wait(c, g, &ts);
            if (rc != 0) return rc;
        }
        /* g->sub lives until kvmux_close, which waits for us (active). */
        kvmux_client *sub = g->sub;
        pthread_mutex_unlock(&c->mu);
        int tmo = left > INT32_MAX ? INT32_MAX : (int)left;
        /* A GET's value comes as the caller's kvmux_value directly (no
         * second copy); a redirect's is in rep either way. */
        int rc = kvmux__call_run(sub, req, rep, vout, tmo, try_only);
        pthread_mutex_lock(&c->mu);
        if (rc == KVMUX_EWRONGSHARD) {
            int code = 0;
            cl_verdict v = cl_redirect(c, g, rep, &repoch, &redirects, &rgroup, &code);
            if (v == CL_FINISH) {
                if (code != KVMUX_EWRONGSHARD) kvmux_reply_free(rep);
                return code;
            }
            kvmux_reply_free(rep);
            if (v == CL_FOLLOW) continue;
        } else if (rc == KVMUX_ETRYAGAIN) {
            r->try_agains++;
            kvmux_reply_free(rep);
        } else {
            return rc;
        }
        int64_t wait = cl_backoff_ms(r, &backoff);
        if (kvmux__now_ms() + wait >= deadline) return KVMUX_ETRYAGAIN;
        pthread_mutex_unlock(&c->mu);
        struct timespec nap = {(time_t)(wait / 1000), (long)(wait % 1000) * 1000000L};
        nanosleep(&nap, NULL);
        pthread_mutex_lock(&c->mu);
        /* The sleep overran the deadline (a loaded machine): as above,
         * KVMUX_ETRYAGAIN -- nothing is in flight -- not a timeout. */
        if (kvmux__now_ms() >= deadline) return KVMUX_ETRYAGAIN;
    }
}

int kvmux__cluster_call(kvmux_client *c, const kvmux_request *req, kvmux_reply *reply,
                        kvmux_value **vout, int timeout_ms, int try_only) {
    if (c->mode == KVMUX__MODE_LOOP) return KVMUX_EINVAL; /* the loop would stop */
    size_t flen = 0;
    int rc = kvmux__call_check(c, req, &flen); /* before anything is routed */
    if (rc != 0) return rc;
    int64_t tmo = timeout_ms == KVMUX_TIMEOUT_DEFAULT ? c->opts.request_timeout_ms : timeout_ms;
    int64_t now = kvmux__now_ms();
    int64_t deadline = now + tmo;
    kvmux_reply rep;
    memset(&rep, 0, sizeof rep);
    pthread_mutex_lock(&c->mu);
    rc = c->fatal;
    if (rc == 0) {
        c->active++;
        rc = cl_call_hops(c, req, &rep, vout, now, deadline, try_only);
        cl_leave(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (reply && (rc == KVMUX_OK || rc == KVMUX_EVERSION || rep.value)) {
        *reply = rep;
        rep.value = NULL;
    }
    free(rep.value);
    return rc;
}

/* ---- connect ---- */

/* The group of the node p is connected to (STATS cluster_group), or 0. */
static uint16_t cl_probe_group(kvmux_client *p, int tmo) {
    kvmux_value *v = NULL;
    if (kvmux_stats(p, "cluster_group", &v, tmo) != 0) return 0;
    const char *s = strstr((const char *)v->data, "cluster_group:");
    unsigned long id = s ? strtoul(s + 14, NULL, 10) : 0;
    kvmux_value_free(v);
    return id > 0 && id <= 65535 ? (uint16_t)id : 0;
}

/* Ask one seed for its map (within deadline). Returns 0 with *pout still
 * open, the map in m and the seed's group in *group; else an error with
 * the reason recorded (kvmux__connect_fail). */
static int cl_probe(const kvmux_options *o, const char *host, uint16_t port, int64_t deadline,
                    kvmux_map *m, uint16_t *group, kvmux_client **pout) {
    int64_t left = deadline - kvmux__now_ms();
    if (left <= 0) return kvmux__connect_fail(KVMUX_ETIMEDOUT, "%s:%u: out of time", host, port);
    kvmux_options po = *o;
    po.cluster = 0;
    po.endpoints = NULL;
    po.connect_timeout_ms = (int)left;
    kvmux_client *p = NULL;
    int rc = kvmux_connect(&p, host, port, &po);
    if (rc != 0) {
        char why[KVMUX_CLIENT_MSG_MAX];
        snprintf(why, sizeof why, "%s", kvmux__connect_msg());
        return kvmux__connect_fail(rc, "%s:%u: %s", host, port, why);
    }
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = KVMUX_CLUSTER;
    q.key = "map";
    q.key_len = 3;
    kvmux_reply rep;
    left = deadline - kvmux__now_ms();
    rc = left > 0 ? kvmux_call(p, &q, &rep, (int)left) : KVMUX_ETIMEDOUT;
    if (rc != 0) {
        rc = kvmux__connect_fail(rc, "%s:%u: CLUSTER map: %s%s%.*s", host, port,
                                 kvmux_strerror(rc), rep.value ? ": " : "",
                                 (int)(rep.value ? rep.value_len : 0),
                                 rep.value ? (const char *)rep.value : "");
    } else {
        char err[256];
        if (kvmux_map_decode(m, rep.value, rep.value_len, err, sizeof err) != 0)
            rc = kvmux__connect_fail(KVMUX_EPROTO, "%s:%u: bad slot map: %s", host, port, err);
        else if (m->ngroups == 0)
            rc = kvmux__connect_fail(KVMUX_EPROTO, "%s:%u: the slot map lists no group", host,
                                     port);
    }
    kvmux_reply_free(&rep);
    left = deadline - kvmux__now_ms();
    if (rc == 0) *group = cl_probe_group(p, left > 0 ? (int)left : 1);
    if (rc != 0) {
        kvmux_close(p);
        return rc;
    }
    *pout = p;
    return 0;
}

/* Copy the caller's borrowed strings into r->sub_opts (owned). */
static int cl_own_strings(kvmux__router *r, const kvmux_options *o) {
    r->sub_opts = *o;
    r->sub_opts.cluster = 0;
    r->sub_opts.endpoints = NULL;
    const char **f[7] = {&r->sub_opts.client_name,   &r->sub_opts.auth_token,
                         &r->sub_opts.tls_ca_file,   &r->sub_opts.tls_ca_dir,
                         &r->sub_opts.tls_server_name, &r->sub_opts.tls_cert_file,
                         &r->sub_opts.tls_key_file};
    for (int i = 0; i < 7; i++) {
        if (!*f[i]) continue;
        r->str[i] = strdup(*f[i]);
        if (!r->str[i]) return KVMUX_ENOMEM;
        *f[i] = r->str[i];
    }
    return 0;
}

/* The seeds, in order: endpoints, else host:port. */
static int cl_seeds(const kvmux_options *o, const char *host, uint16_t port,
                    kvmux__endpoint **eps, uint32_t *n) {
    if (o->endpoints) return kvmux__endpoints_parse(o->endpoints, eps, n);
    if (!host || !*host || port == 0 || strlen(host) > KVMUX__HOST_MAX)
        return kvmux__connect_fail(KVMUX_EINVAL, "cluster mode: a seed (host and port, "
                                   "or endpoints) is required");
    *eps = calloc(1, sizeof **eps);
    if (!*eps) return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
    snprintf((*eps)[0].host, sizeof (*eps)[0].host, "%s", host);
    (*eps)[0].port = port;
    *n = 1;
    return 0;
}

/* A new cluster handle over map m (taken) with the seed's limits from p. */
static int cl_make(kvmux_client **out, const kvmux_options *o, kvmux_map *m, uint16_t seed,
                   kvmux_client *p, kvmux__mode mode) {
    kvmux_client *c = kvmux__client_new(o);
    kvmux__router *r = c ? calloc(1, sizeof *r) : NULL;
    if (!r || kvmux__cond_init(&r->gcond) != 0) {
        free(r);
        if (c) kvmux__client_free(c);
        free(m);
        return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
    }
    c->mode = mode;
    c->router = r;
    if (mode == KVMUX__MODE_LOOP) {
        /* The one fd the application watches: the sub-clients' sockets.
         * The map is loaded: "connected", reported by the first handler
         * call (kvmux_async_attach arms the timer for it). */
        c->lstate = KVMUX__L_OPEN;
        c->status_due = 1;
        c->status_code = 0;
        c->fd = epoll_create1(EPOLL_CLOEXEC);
        if (c->fd < 0) {
            free(r->map);
            c->router = NULL;
            pthread_cond_destroy(&r->gcond);
            free(r);
            kvmux__client_free(c);
            return kvmux__connect_fail(KVMUX_ENOMEM, "epoll_create1 failed");
        }
    }
    r->map = m;
    r->seed_group = seed;
    r->rng = (uint64_t)kvmux__now_ms() * 0x9E3779B97F4A7C15ull | 1u;
    /* Requests are checked against the seed's limits before routing
     * (every group of a cluster runs alike; a group's own limits apply
     * again when its sub-client sends). */
    pthread_mutex_lock(&p->mu);
    c->info = p->info;
    pthread_mutex_unlock(&p->mu);
    atomic_store(&c->max_key, atomic_load(&p->max_key));
    atomic_store(&c->max_value, atomic_load(&p->max_value));
    atomic_store(&c->peer_max_frame, atomic_load(&p->peer_max_frame));
    atomic_store(&c->version, atomic_load(&p->version));
    int rc = cl_own_strings(r, o);
    pthread_mutex_lock(&c->mu);
    if (rc == 0 && mode == KVMUX__MODE_THREADED) rc = kvmux__disp_start(c);
    if (rc == 0) cl_install_groups(c);
    pthread_mutex_unlock(&c->mu);
    if (rc != 0) {
        kvmux__cluster_free(c);
        return kvmux__connect_fail(rc, "out of memory");
    }
    *out = c;
    return 0;
}

static int cl_connect(kvmux_client **out, const char *host, uint16_t port,
                      const kvmux_options *o, kvmux__mode mode) {
    kvmux__endpoint *eps = NULL;
    uint32_t n = 0;
    int rc = cl_seeds(o, host, port, &eps, &n);
    if (rc != 0) return rc;
    kvmux_map *m = malloc(sizeof *m);
    if (!m) {
        free(eps);
        return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
    }
    int64_t deadline = kvmux__now_ms() + o->connect_timeout_ms;
    kvmux_client *p = NULL;
    uint16_t seed = 0;
    for (uint32_t i = 0; i < n; i++) {
        rc = cl_probe(o, eps[i].host, eps[i].port, deadline, m, &seed, &p);
        if (rc == 0 || rc == KVMUX_EAUTH || rc == KVMUX_ENOMEM || rc == KVMUX_ETLS) break;
    }
    free(eps);
    if (rc == KVMUX_EAUTH || rc == KVMUX_ENOMEM || rc == KVMUX_ETLS) {
        free(m);
        return rc; /* the same at every node: the reason is recorded */
    }
    if (rc != 0) {
        char why[KVMUX_CLIENT_MSG_MAX];
        snprintf(why, sizeof why, "%s", kvmux__connect_msg());
        free(m);
        return kvmux__connect_fail(KVMUX_ECLUSTERMAP, "no usable slot map from any seed "
                                   "(last: %s)", why);
    }
    /* A node that does not say its group: the first group listing it,
     * else the map's first group. */
    if (seed == 0 || !kvmux_map_group_get(m, seed)) seed = m->groups[0].id;
    rc = cl_make(out, o, m, seed, p, mode);
    kvmux_close(p);
    return rc;
}

int kvmux__cluster_connect(kvmux_client **out, const char *host, uint16_t port,
                           const kvmux_options *o) {
    return cl_connect(out, host, port, o, KVMUX__MODE_THREADED);
}

int kvmux__cluster_async_connect(kvmux_client **out, const char *host, uint16_t port,
                                 const kvmux_options *o) {
    return cl_connect(out, host, port, o, KVMUX__MODE_LOOP);
}

/* ---- event-loop mode ----
 *
 * The handle's fd is an epoll set holding its sub-clients' sockets; each
 * sub-client is an event-loop client whose hooks (below) only record what
 * it wants: its events go into the set, its timer into g->timer_at, and
 * the handle's one timer is the earliest of those and the handle's own
 * deadlines (kvmux__cluster_next). The application's loop calls the
 * handle's handlers, which call the sub-clients' (their callbacks are the
 * hops' answers), then run the handle's own callbacks. A sub-client is
 * made with kvmux_async_connect over the group's numeric member
 * addresses only: the loop thread never resolves a name (a group that
 * lists none fails its requests with KVMUX_ECONNECT). */

/* Put g's socket in the epoll set with its wanted events (if they are
 * not what the set has already). */
static void cl_epoll_sync(kvmux__cgroup *g) {
    kvmux_client *c = g->c;
    if (!g->sub || (g->in_epoll && g->armed == g->events)) return;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = g->events;
    ev.data.ptr = g;
    int fd = kvmux_async_fd(g->sub);
    if (!g->in_epoll) {
        if (epoll_ctl(c->fd, EPOLL_CTL_ADD, fd, &ev) == 0) {
            g->in_epoll = 1;
            g->armed = g->events;
            c->router->nepoll++;
        }
        return;
    }
    /* A reconnect puts a new socket behind the same descriptor number;
     * epoll dropped the old one when it was closed. */
    if (epoll_ctl(c->fd, EPOLL_CTL_MOD, fd, &ev) == 0 ||
        (errno == ENOENT && epoll_ctl(c->fd, EPOLL_CTL_ADD, fd, &ev) == 0))
        g->armed = g->events;
}

/* A sub-client's wish. Inside one of the handle's handlers it is applied
 * when the outermost one ends (kvmux__cluster_loop_sync): a round that
 * submits and then flushes (kvmux__cluster_loop_flush) turns writability
 * on and off again without a syscall. Outside, at once: control goes
 * back to the application's loop next. */
static void cl_hook_events(void *d, uint32_t add, uint32_t del) {
    kvmux__cgroup *g = d;
    g->events = (g->events | add) & ~del;
    if (g->c->in_handler == 0) cl_epoll_sync(g);
}

static void cl_hook_add_read(void *d) { cl_hook_events(d, EPOLLIN, 0); }
static void cl_hook_del_read(void *d) { cl_hook_events(d, 0, EPOLLIN); }
static void cl_hook_add_write(void *d) { cl_hook_events(d, EPOLLOUT, 0); }
static void cl_hook_del_write(void *d) { cl_hook_events(d, 0, EPOLLOUT); }

static void cl_hook_timer(void *d, int64_t ms) {
    kvmux__cgroup *g = d;
    g->timer_at = ms < 0 ? INT64_MAX : kvmux__now_ms() + ms;
    /* Earlier than the handle's timer: re-arm it (single thread; the
     * handle's mutex may be held by the caller, nothing here takes it). */
    kvmux__loop_timer_update(g->c);
}

static void cl_hook_cleanup(void *d) {
    kvmux__cgroup *g = d;
    if (g->in_epoll && g->sub) (void)epoll_ctl(g->c->fd, EPOLL_CTL_DEL, kvmux_async_fd(g->sub), NULL);
    if (g->in_epoll) g->c->router->nepoll--;
    g->in_epoll = 0;
    g->armed = 0;
    g->events = 0;
    g->timer_at = INT64_MAX;
}

/* 1 if "host:port" has a numeric host (IPv4, or IPv6 in brackets). */
static int cl_numeric(const char *ep, size_t len) {
    char host[KVMUX__HOST_MAX + 1];
    uint16_t port;
    if (kvmux__hostport_parse(ep, len, host, &port) != 0) return 0;
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* The numeric members of list into out ("" if none). */
static void cl_numeric_only(const char *list, char *out, size_t cap) {
    size_t off = 0;
    out[0] = 0;
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (cl_numeric(p, len) && off + len + 2 < cap) {
            if (off) out[off++] = ',';
            memcpy(out + off, p, len);
            off += len;
            out[off] = 0;
        }
        p += len + (comma ? 1 : 0);
    }
}

/* Make g's event-loop sub-client now (lock held): never blocks. */
static void cl_connect_loop(kvmux_client *c, kvmux__cgroup *g) {
    char eps[CL_EP_MAX];
    cl_numeric_only(g->endpoints, eps, sizeof eps);
    int rc = KVMUX_ECONNECT; /* no numeric member: never resolved here */
    kvmux_client *sub = NULL;
    if (eps[0]) {
        kvmux_options o = c->router->sub_opts;
        o.endpoints = eps;
        rc = kvmux_async_connect(&sub, NULL, 0, &o);
    }
    if (rc == 0) {
        kvmux_async_hooks h;
        memset(&h, 0, sizeof h);
        h.data = g;
        h.add_read = cl_hook_add_read;
        h.del_read = cl_hook_del_read;
        h.add_write = cl_hook_add_write;
        h.del_write = cl_hook_del_write;
        h.schedule_timer = cl_hook_timer;
        h.cleanup = cl_hook_cleanup;
        g->sub = sub;
        rc = kvmux_async_attach(sub, &h);
        if (rc != 0) {
            kvmux_close(sub);
            g->sub = NULL;
        }
    }
    if (rc == 0) {
        g->state = CG_READY;
        return;
    }
    g->state = CG_FAILED;
    g->fail_code = rc;
    g->fail_until = kvmux__now_ms() + CL_FAIL_HOLD_MS;
}

/* The one group in the epoll set, or NULL if there are none or several. */
static kvmux__cgroup *cl_epoll_single(const kvmux__router *r) {
    if (r->nepoll != 1) return NULL;
    for (uint32_t i = 0; i < r->ngroups; i++)
        if (r->groups[i]->in_epoll) return r->groups[i];
    return NULL;
}

void kvmux__cluster_loop_read(kvmux_client *c) {
    /* One socket in the set (one group, the common small cluster): the
     * set is readable only because that socket has an event it watches,
     * so it is served without asking the set which -- the nested
     * epoll_wait was one extra syscall per loop iteration. The set is
     * level-triggered: readiness not consumed here is reported again. A
     * handler finding nothing to do costs one failed recv/send. */
    kvmux__cgroup *one = cl_epoll_single(c->router);
    uint32_t want = one ? one->events : 0;
    if (one && one->sub && (want & (EPOLLIN | EPOLLOUT))) {
        if (want & EPOLLIN) kvmux_async_handle_read(one->sub);
        if ((want & EPOLLOUT) && one->sub && one->in_epoll) kvmux_async_handle_write(one->sub);
        return;
    }
    struct epoll_event ev[64];
    int n = epoll_wait(c->fd, ev, 64, 0);
    for (int i = 0; i < n; i++) {
        kvmux__cgroup *g = ev[i].data.ptr;
        /* Sub-clients live until the handle's close, which no hop
         * callback (all that runs in these handlers) can start. */
        if (!g->sub) continue;
        if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) kvmux_async_handle_read(g->sub);
        if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) kvmux_async_handle_write(g->sub);
    }
}

void kvmux__cluster_loop_flush(kvmux_client *c) {
    kvmux__router *r = c->router;
    for (uint32_t i = 0; i < r->ngroups; i++) {
        kvmux__cgroup *g = r->groups[i];
        if (g->sub && (g->events & EPOLLOUT)) kvmux_async_handle_write(g->sub);
    }
}

void kvmux__cluster_loop_sync(kvmux_client *c) {
    kvmux__router *r = c->router;
    for (uint32_t i = 0; i < r->ngroups; i++) cl_epoll_sync(r->groups[i]);
}

void kvmux__cluster_loop_timers(kvmux_client *c, int64_t now) {
    kvmux__router *r = c->router;
    for (uint32_t i = 0; i < r->ngroups; i++) {
        kvmux__cgroup *g = r->groups[i];
        if (g->sub && g->timer_at <= now) {
            g->timer_at = INT64_MAX; /* it fired */
            kvmux_async_handle_timeout(g->sub);
        }
    }
}

/* Both closes (threaded and loop), under c->mu: the handle is closing,
 * and every routed request completes with KVMUX_ECLOSED now. */
static void router_begin_close(kvmux_client *c) {
    kvmux__router *r = c->router;
    c->closing = 1;
    if (!c->fatal) {
        c->fatal = KVMUX_ECLOSED;
        snprintf(c->fatal_msg, sizeof c->fatal_msg, "closed by kvmux_close");
    }
    r->closing = 1;
    while (r->routed) kvmux__op_finish(c, r->routed, KVMUX_ECLOSED, NULL);
}

void kvmux__cluster_loop_shutdown(kvmux_client *c) {
    kvmux__router *r = c->router;
    pthread_mutex_lock(&c->mu);
    router_begin_close(c);
    pthread_mutex_unlock(&c->mu);
    /* Their hops' answers (KVMUX_ECLOSED) find no op. */
    for (uint32_t i = 0; i < r->ngroups; i++) {
        kvmux_close(r->groups[i]->sub);
        r->groups[i]->sub = NULL;
    }
}

/* ---- close ---- */

void kvmux__cluster_close(kvmux_client *c) {
    kvmux__router *r = c->router;
    pthread_mutex_lock(&c->mu);
    router_begin_close(c);
    pthread_cond_broadcast(&r->gcond);
    if (kvmux__cb_direct_here(c)) {
        /* From a callback on a group's completion thread, which cannot
         * close its own sub-client and wait for it: c's completion thread
         * (started by the submit whose callback this is) does the rest,
         * as for a close from one of its own callbacks. */
        c->close_handoff = 1;
        kvmux__disp_kick(c);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    /* Closing: the group table does not change any more. Connect threads
     * finish (a sub-client they made is closed by them). */
    for (uint32_t i = 0; i < r->ngroups; i++) {
        if (r->groups[i]->thread_live) pthread_join(r->groups[i]->thread, NULL);
        r->groups[i]->thread_live = 0;
    }
    /* Wake the callers blocked in a sub-client (kvmux_cluster_group_call)
     * and wait until every caller has left, then free the sub-clients
     * (their hops' callbacks find no op). */
    for (uint32_t i = 0; i < r->ngroups; i++)
        if (r->groups[i]->sub) kvmux__client_shutdown(r->groups[i]->sub);
    pthread_mutex_lock(&c->mu);
    while (c->active > 0) pthread_cond_wait(&c->idle_cond, &c->mu);
    pthread_mutex_unlock(&c->mu);
    for (uint32_t i = 0; i < r->ngroups; i++) {
        kvmux_close(r->groups[i]->sub);
        r->groups[i]->sub = NULL;
    }
    pthread_mutex_lock(&c->mu);
    r->subs_closed = 1; /* c's completion thread may stop once it ran what they queued */
    if (kvmux__disp_close(c)) {
        /* From one of c's callbacks: its completion thread frees c. */
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    kvmux__disp_join(c);
    kvmux__cluster_free(c);
}

int kvmux__cluster_may_stop(const kvmux_client *c) {
    return !c->router || c->router->subs_closed;
}

void kvmux__cluster_free(kvmux_client *c) {
    kvmux__router *r = c->router;
    for (uint32_t i = 0; i < r->ngroups; i++) {
        if (r->groups[i]->thread_live) pthread_join(r->groups[i]->thread, NULL);
        free(r->groups[i]);
    }
    for (int i = 0; i < 7; i++) free(r->str[i]);
    while (r->free_hops) {
        kvmux__hop *hop = r->free_hops;
        r->free_hops = hop->next;
        free(hop);
    }
    free(r->map);
    pthread_cond_destroy(&r->gcond);
    free(r);
    c->router = NULL;
    kvmux__client_free(c);
}

/* ---- the cluster API ---- */

int kvmux_cluster_groups(kvmux_client *c, uint16_t *ids, size_t cap, size_t *n) {
    if (!c || !c->router || !n || (!ids && cap)) return KVMUX_EINVAL;
    pthread_mutex_lock(&c->mu);
    const kvmux_map *m = c->router->map;
    for (size_t i = 0; i < m->ngroups && i < cap; i++) ids[i] = m->groups[i].id;
    *n = m->ngroups;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int kvmux_cluster_stats(kvmux_client *c, kvmux_cluster_info *out, size_t size) {
    if (!c || !c->router || !out) return KVMUX_EINVAL;
    kvmux_cluster_info s;
    memset(&s, 0, sizeof s);
    pthread_mutex_lock(&c->mu);
    const kvmux__router *r = c->router;
    s.epoch = r->map->epoch;
    s.refreshes = r->refreshes;
    s.redirects = r->redirects;
    s.try_agains = r->try_agains;
    s.stale = r->stale;
    s.member_updates = r->member_updates;
    s.groups = r->ngroups;
    s.seed_group = r->seed_group;
    for (uint32_t i = 0; i < r->ngroups; i++)
        if (r->groups[i]->state == CG_READY) s.subclients++;
    pthread_mutex_unlock(&c->mu);
    memcpy(out, &s, size < sizeof s ? size : sizeof s);
    return 0;
}

/* Wait (lock held) until group g has a sub-client, or deadline. */
static int cl_group_wait(kvmux_client *c, kvmux__cgroup *g, const struct timespec *deadline) {
    kvmux__router *r = c->router;
    for (;;) {
        if (r->closing) return KVMUX_ECLOSED;
        if (g->state == CG_READY) return 0;
        if (g->state == CG_FAILED && kvmux__now_ms() < g->fail_until) return g->fail_code;
        if (g->state != CG_CONNECTING) {
            cl_connect_start(c, g);
            continue;
        }
        if (pthread_cond_timedwait(&r->gcond, &c->mu, deadline) != 0 && g->state != CG_READY)
            return KVMUX_ETIMEDOUT;
    }
}

int kvmux_cluster_group_call(kvmux_client *c, uint16_t group, const kvmux_request *req,
                             kvmux_reply *reply, int timeout_ms) {
    if (reply) memset(reply, 0, sizeof *reply);
    if (!c || !c->router || !req || timeout_ms < KVMUX_TIMEOUT_DEFAULT ||
        c->mode == KVMUX__MODE_LOOP)
        return KVMUX_EINVAL;
    int64_t tmo = timeout_ms;
    if (timeout_ms == KVMUX_TIMEOUT_DEFAULT) {
        tmo = c->opts.request_timeout_ms;
        if (req->op == KVMUX_WAIT) tmo += req->wait_ms;
    }
    int64_t until = kvmux__now_ms() + tmo;
    struct timespec deadline = kvmux__deadline(tmo);
    pthread_mutex_lock(&c->mu);
    int rc = c->fatal;
    if (rc != 0) {
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    c->active++;
    kvmux__cgroup *g = cl_group_find(c->router, group);
    rc = g ? cl_group_wait(c, g, &deadline) : KVMUX_ENOTFOUND;
    kvmux_client *sub = rc == 0 ? g->sub : NULL;
    pthread_mutex_unlock(&c->mu);
    if (sub) {
        /* sub lives until kvmux_close, which waits for us (active). */
        int64_t left = until - kvmux__now_ms();
        rc = left > 0 ? kvmux_call(sub, req, reply, (int)left) : KVMUX_ETIMEDOUT;
    }
    pthread_mutex_lock(&c->mu);
    cl_leave(c);
    pthread_mutex_unlock(&c->mu);
    return rc;
}
