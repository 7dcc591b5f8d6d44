/* kvmux client failover across a replicated group (kvmux_options.endpoints,
 * protocol v3): the endpoint list, following NOT_LEADER, and what happens
 * to requests when the leader is lost.
 *
 * Design. Endpoints mode is automatic reconnect (reconnect.c) with a
 * moving target. The reconnect machinery is unchanged -- backoff, the
 * reader thread (threaded) or the loop's timer (event loop) as the driver,
 * the handshake rebuilding the pending table -- except that each attempt
 * first picks its target (kvmux__failover_pick): the address a NOT_LEADER
 * named if there is one, else the current endpoint; a failed attempt or a
 * lost connection moves to the next endpoint (round robin), with the
 * backoff capped at KVMUX__FAILOVER_MAX_BACKOFF_MS.
 *
 * NOT_LEADER means "not processed", so the request is simply sent again
 * to the leader. The first NOT_LEADER on a connection records the target
 * and drains the connection (c->draining, as after a GOAWAY: nothing new
 * is sent on it, submits wait in the backlog, blocking calls wait for the
 * next connection) until no write on it still owes an answer -- a write
 * in flight to a replica that just lost leadership is answered (applied,
 * OUTCOME_UNKNOWN or NOT_LEADER), and cutting it would turn a definite
 * answer into KVMUX_EUNKNOWN. Reads still in flight need no answer: they
 * are resent. Then the connection is failed and the reconnect follows the
 * target.
 *
 * Resending needs the request. A blocking caller has it on its stack: its
 * slot completes with KVMUX__EREDIRECT / KVMUX__ERETRY and the caller
 * goes through admission again (call.c), within its own deadline. An
 * async request in endpoints mode always goes through the backlog and
 * keeps its copy (op->q, op->buf) while in flight (async.c), so it can be
 * put back at the head of the backlog, deadline and handle intact: a
 * timeout or kvmux_cancel finds it there as it would any queued request.
 * That copy is the price of endpoints mode: one memcpy of key and value
 * per async request (two for a value sent fragmented), none otherwise.
 *
 * On a lost connection (kvmux__client_fail) reads and WAITs in flight are
 * resent, writes in flight complete with KVMUX_EUNKNOWN (they may have
 * been applied; resend_writes resends them instead, for idempotent
 * writes), and queued requests never sent wait for the next connection.
 * "Never sent" includes a write encoded in c->out that no send round has
 * taken yet (c->out_rounds, recorded per request as it is queued: one
 * counter, no per-frame bookkeeping); once a round has taken a frame it
 * counts as sent even if the round was cut short -- the library does not
 * track which bytes reached the kernel, and "unknown" is the answer that
 * is never wrong. A fragmented value counts as sent from its start.
 *
 * Event-loop mode never blocks the loop: the endpoints are resolved once
 * in kvmux_async_connect, and a NOT_LEADER address is followed only if it
 * is numeric (AI_NUMERICHOST) or spelled exactly as one of the endpoints;
 * otherwise the next endpoint is tried.
 *
 * Exactly-once sessions (docs/PROTOCOL.md section 17.1). With v3 and
 * sessions on (the default in endpoints mode), the handle has a random
 * session id, sent in every HELLO (the same on each reconnection), and
 * each write gets the next seq when it is first encoded; the seq stays
 * with the request (the blocking caller's stack, the async op) across
 * resends. A session write cut off by a lost connection, or answered
 * OUTCOME_UNKNOWN, is then resent like a read: the group applies a seq at
 * most once and answers a resend with the original reply. The seq kept
 * with the request also records whether an earlier transmission may have
 * reached a server (KVMUX__SEQ_SENT / _CUR): then the wire seq carries
 * RETRY; a transmission never sent, or answered NOT_LEADER, does not
 * count, so a write that only ever met followers stays a first
 * transmission, which the group always applies. Only when the
 * group cannot tell (the session was forgotten: OUTCOME_UNKNOWN again,
 * KVMUX__MAX_UNKNOWN_RESENDS times) does it end as KVMUX_EUNKNOWN.
 * The window promise (at most W writes of the session unanswered) holds
 * because a write takes its seq only with a credit: at most the credits
 * of the current connection plus the writes of the lost one waiting to
 * be resent are unanswered, and the server's window is at least twice
 * its max outstanding.
 *
 * What it is not: no read-only routing to followers.
 */
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "hostport.h"

int kvmux__hostport_parse(const char *p, size_t len, char *host, uint16_t *port) {
    return kvmux_hostport_parse(p, len, host, KVMUX__HOST_MAX + 1, port);
}

int kvmux__endpoints_parse(const char *s, kvmux__endpoint **out, uint32_t *n) {
    if (!s) return kvmux__connect_fail(KVMUX_EINVAL, "endpoints: NULL");
    uint32_t count = 1;
    for (const char *p = s; *p; p++)
        if (*p == ',') count++;
    if (count > KVMUX__MAX_ENDPOINTS)
        return kvmux__connect_fail(KVMUX_EINVAL, "endpoints: more than %u entries",
                                   KVMUX__MAX_ENDPOINTS);
    kvmux__endpoint *eps = calloc(count, sizeof *eps);
    if (!eps) return kvmux__connect_fail(KVMUX_ENOMEM, "out of memory");
    const char *p = s;
    for (uint32_t i = 0; i < count; i++) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (kvmux__hostport_parse(p, len, eps[i].host, &eps[i].port) != 0) {
            free(eps);
            return kvmux__connect_fail(KVMUX_EINVAL,
                                       "endpoints: entry %u (\"%.*s\") is not host:port "
                                       "(IPv6: [addr]:port, port 1..65535)",
                                       i + 1, (int)(len > 300 ? 300 : len), p);
        }
        p = comma ? comma + 1 : p + len;
    }
    *out = eps;
    *n = count;
    return 0;
}

int kvmux__op_is_read(int op) {
    switch (op) {
    case KVMUX_GET: case KVMUX_EXISTS: case KVMUX_TTL: case KVMUX_SCAN: case KVMUX_WAIT:
    case KVMUX_STATS: case KVMUX_SLOWLOG: case KVMUX_CLIENT_LIST: case KVMUX_PING:
        return 1;
    default:
        return 0;
    }
}

/* Event-loop mode: the redirect target as an address without DNS (lock
 * held; redir_host/port set). Returns 0, or -1 if it needs a resolver. */
static int redirect_resolve(kvmux_client *c) {
    for (uint32_t i = 0; i < c->neps; i++) {
        if (c->eps[i].port == c->redir_port && strcmp(c->eps[i].host, c->redir_host) == 0) {
            c->redir_ss = c->eps[i].ss;
            c->redir_sslen = c->eps[i].sslen;
            return 0;
        }
    }
    return kvmux__resolve_numeric(c->redir_host, c->redir_port, &c->redir_ss, &c->redir_sslen);
}

int kvmux__failover_set_endpoints(kvmux_client *c, const char *list) {
    kvmux__endpoint *eps = NULL;
    uint32_t n = 0;
    int rc = kvmux__endpoints_parse(list, &eps, &n);
    if (rc != 0) return rc;
    /* Resolved before the lock: getaddrinfo with AI_NUMERICHOST does no
     * I/O, but it allocates. The mode never changes after connect. */
    for (uint32_t i = 0; c->mode == KVMUX__MODE_LOOP && i < n; i++) {
        if (kvmux__resolve_numeric(eps[i].host, eps[i].port, &eps[i].ss, &eps[i].sslen) != 0) {
            free(eps);
            return KVMUX_EINVAL;
        }
    }
    pthread_mutex_lock(&c->mu);
    if (!c->eps) {
        pthread_mutex_unlock(&c->mu);
        free(eps);
        return KVMUX_EINVAL;
    }
    /* The next attempt after a loss goes to the entry after the current
     * target if it is still listed (as before the change), else to the
     * first one. */
    uint32_t cur = 0;
    const kvmux__endpoint *old = &c->eps[c->ep_cur];
    for (uint32_t i = 0; i < n; i++)
        if (eps[i].port == old->port && strcmp(eps[i].host, old->host) == 0) cur = i;
    free(c->eps);
    c->eps = eps;
    c->neps = n;
    c->ep_cur = cur;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* Record the redirect target named by a NOT_LEADER (lock held). An empty,
 * malformed or (event loop) non-numeric address leaves none: the next
 * endpoint is tried. */
static void redirect_set(kvmux_client *c, const uint8_t *addr, size_t len) {
    c->redir_set = 0;
    if (len == 0 || len > KVMUX__HOST_MAX + 8) return;
    if (kvmux__hostport_parse((const char *)addr, len, c->redir_host, &c->redir_port) != 0)
        return;
    if (c->mode == KVMUX__MODE_LOOP && redirect_resolve(c) != 0) return;
    c->redir_set = 1;
}

static void seq_not_sent(kvmux__slot *s);

void kvmux__failover_not_leader(kvmux_client *c, kvmux__slot *s, const uint8_t *addr,
                                size_t len) {
    /* NOT_LEADER: this transmission was not processed, so it does not make
     * the resend a RETRY. */
    seq_not_sent(s);
    if (!c->redirecting) {
        /* The first answer decides where this connection's requests go;
         * later ones on it name the same leader or an older view. */
        c->redirecting = 1;
        c->draining = 1;
        redirect_set(c, addr, len);
        /* Callers waiting for a credit or room now wait for the next
         * connection instead (call.c admission). */
        pthread_cond_broadcast(&c->slot_cond);
        pthread_cond_broadcast(&c->queue_cond);
    }
    /* What counts toward the redirect bound is a loop: a replica reached
     * by following a NOT_LEADER that names yet another leader. Answers
     * from an endpoint of the list, or naming no leader, are an election
     * under way (followers keep naming a dead leader until their election
     * timeout), which the request waits out within its deadline, as
     * etcd's client does: counted, a two-second election failed 448 of
     * 4000 async writes with KVMUX_ENOTLEADER (client_group_test). */
    kvmux__failover_resend(c, s, len > 0 && c->via_redirect);
    kvmux__failover_drain_check(c);
}

void kvmux__failover_drain_check(kvmux_client *c) {
    if (!c->redirecting || c->fatal != 0) return;
    for (uint32_t i = 0; i < c->pending.nslots; i++) {
        const kvmux__slot *s = &c->pending.slots[i];
        if (s->state == KVMUX__SLOT_WAITING && s->owner != KVMUX__OWNER_NONE &&
            !kvmux__op_is_read(s->op))
            return; /* a write still owes its answer */
    }
    if (c->redir_set)
        kvmux__client_fail(c, KVMUX_ECLOSED, "not the leader: following it to %s:%u",
                           c->redir_host, (unsigned)c->redir_port);
    else
        kvmux__client_fail(c, KVMUX_ECLOSED, "not the leader (leader unknown): trying the "
                           "next endpoint");
}

void kvmux__failover_lost(kvmux_client *c) {
    c->redirecting = 0;
    if (!c->redir_set) c->ep_cur = (c->ep_cur + 1) % c->neps;
}

void kvmux__failover_attempt_failed(kvmux_client *c) {
    c->ep_cur = (c->ep_cur + 1) % c->neps;
}

void kvmux__failover_pick(kvmux_client *c) {
    c->via_redirect = c->redir_set;
    if (c->redir_set) {
        c->redir_set = 0;
        if (c->mode == KVMUX__MODE_LOOP) {
            c->raddr = c->redir_ss;
            c->raddr_len = c->redir_sslen;
        } else {
            memcpy(c->host, c->redir_host, sizeof c->redir_host);
            c->port = c->redir_port;
        }
        return;
    }
    const kvmux__endpoint *e = &c->eps[c->ep_cur];
    if (c->mode == KVMUX__MODE_LOOP) {
        c->raddr = e->ss;
        c->raddr_len = e->sslen;
    } else {
        memcpy(c->host, e->host, sizeof e->host);
        c->port = e->port;
    }
}

/* 1 if s's frame is still in c->out: no send round took it, so not one
 * byte of it left (lock held). */
static int slot_unsent(const kvmux_client *c, const kvmux__slot *s) {
    uint64_t r = UINT64_MAX;
    if (s->owner == KVMUX__OWNER_CALL) r = s->u.w->out_round;
    else if (s->owner == KVMUX__OWNER_OP) r = s->u.aop->out_round;
    return r == c->out_rounds;
}

/* s's latest transmission reached no state machine (never sent, or
 * answered NOT_LEADER): forget it for the RETRY bit. */
static void seq_not_sent(kvmux__slot *s) {
    if (s->owner == KVMUX__OWNER_CALL) s->u.w->seq &= ~KVMUX__SEQ_CUR;
    else if (s->owner == KVMUX__OWNER_OP) s->u.aop->seq &= ~KVMUX__SEQ_CUR;
}

/* The session seq of s's write (0: none, or a plain write). */
static uint64_t slot_seq(const kvmux__slot *s) {
    if (s->owner == KVMUX__OWNER_CALL) return s->u.w->seq;
    if (s->owner == KVMUX__OWNER_OP) return s->u.aop->seq;
    return 0;
}

void kvmux__failover_slot_lost(kvmux_client *c, kvmux__slot *s) {
    /* A session write is safe to resend: the group applies its seq once
     * and answers a resend with the original reply. */
    if (kvmux__op_is_read(s->op) || c->opts.resend_writes || slot_unsent(c, s) ||
        slot_seq(s) != 0) {
        /* Not one byte of it left: the resend is still a first
         * transmission (no RETRY). */
        if (slot_unsent(c, s)) seq_not_sent(s);
        kvmux__failover_resend(c, s, 0);
        return;
    }
    kvmux__slot_finish(c, s, KVMUX_EUNKNOWN, NULL, NULL);
}

/* ---- exactly-once sessions ---- */

static int op_is_session_write(int op) {
    return op == KVMUX_SET || op == KVMUX_DEL || op == KVMUX_INCR || op == KVMUX_CAS ||
           op == KVMUX_EXPIRE || op == KVMUX_PERSIST;
}

int kvmux__session_on(const kvmux_client *c, int op) {
    return c->session_id != 0 && op_is_session_write(op) &&
           atomic_load_explicit(&c->version, memory_order_relaxed) >= KVMUX_PROTO_V3;
}

void kvmux__session_init(kvmux_client *c) {
    if (!c->eps || c->opts.no_sessions ||
        (c->opts.max_protocol_version && c->opts.max_protocol_version < KVMUX_PROTO_V3))
        return;
    uint64_t id = 0;
    for (int i = 0; i < 4 && id == 0; i++) {
        if (getrandom(&id, sizeof id, GRND_NONBLOCK) != (ssize_t)sizeof id) {
            /* No entropy yet (early boot): a clock-and-pid mix is unique
             * enough for an id that only has to differ from other
             * clients' (not be secret). */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            id = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)c;
        }
    }
    c->session_id = id ? id : 1;
    c->next_seq = 1;
}

uint64_t kvmux__session_wire_seq(kvmux_client *c, uint64_t *seq) {
    const uint64_t flags = KVMUX__SEQ_SENT | KVMUX__SEQ_CUR;
    if ((*seq & ~flags) == 0) *seq = c->next_seq++;
    if (*seq & KVMUX__SEQ_CUR) *seq |= KVMUX__SEQ_SENT;
    *seq |= KVMUX__SEQ_CUR;
    return (*seq & ~flags) | (*seq & KVMUX__SEQ_SENT ? KVMUX_SESSION_RETRY : 0);
}

int kvmux__session_unknown(kvmux_client *c, kvmux__slot *s) {
    if (!kvmux__failover_on(c)) return 0;
    if (s->owner == KVMUX__OWNER_CALL) {
        kvmux__callwait *w = s->u.w;
        if (w->seq == 0 || w->unknowns >= KVMUX__MAX_UNKNOWN_RESENDS) return 0;
        w->unknowns++;
    } else if (s->owner == KVMUX__OWNER_OP) {
        kvmux__op *op = s->u.aop;
        if (op->seq == 0 || op->unknowns >= KVMUX__MAX_UNKNOWN_RESENDS) return 0;
        op->unknowns++;
    } else {
        return 0;
    }
    kvmux__failover_resend(c, s, 0);
    return 1;
}
