/* The CLUSTER opcode (v3; docs/CLUSTER.md, ROUND contract of issue 11).
 *
 *   slot   - value = a key: OK, value = u16 slot (big-endian). Any node.
 *   map    - a cluster node (--cluster-group) answers its applied map (the
 *            bytes the FSM installed, fsm.h); a node that has none answers
 *            NOT_FOUND "no slot map installed". Other nodes: BAD_REQUEST
 *            "not a cluster node (--cluster-group)".
 *   setmap - validated with the map decoder (BAD_REQUEST with its reason),
 *            then proposed on the leader as log entry op 0xF3 and answered
 *            once applied: OK "epoch E installed", or VERSION_MISMATCH
 *            when not newer (OK again for the installed map's own bytes).
 *            On the map group (--cluster-map-group) "newer" is "exactly
 *            the installed epoch + 1": a compare-and-set.
 *   watch  - value = u64 epoch [u32 wait_ms]: parked until the applied
 *            map's epoch exceeds it (mapwatch.c).
 *
 * The map group serves no keys: keyed requests there are BAD_REQUEST.
 *
 * Keyed requests on a cluster node (kvmux__cluster_refuse), against the
 * map this replica applied: no map, TRY_AGAIN (slot, epoch 0) on v3, BUSY
 * with a message on v1/v2; a slot of another group (or of none),
 * WRONG_SHARD on v3, SHUTTING_DOWN with a message on v1/v2. The FSM checks
 * writes again when it applies them (fsm.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "sessions.h"
#include "server_internal.h"
#include "../cluster/cluster.h"

static int is_sub(const kvmux_frame *f, const char *name) {
    size_t n = strlen(name);
    return f->key_len == n && memcmp(f->key, name, n) == 0;
}

static void refuse(kvmux_conn *c, uint32_t id, uint8_t status, const char *msg) {
    kvmux__conn_respond(c, id, status, NULL, 0, msg);
}

static void cluster_slot(kvmux_conn *c, const kvmux_frame *f) {
    uint8_t out[2];
    kvmux_store_u16be(out, kvmux_slot(f->value, f->value_len));
    kvmux__conn_respond_bytes(c, f->request_id, KVMUX_STATUS_OK, out, sizeof out);
}

/* Validate, then propose through the group's log (replicate.c): the
 * answer comes after apply (kvmux__cluster_setmap_done). */
static int cluster_setmap(kvmux_conn *c, const kvmux_frame *f) {
    char err[KVMUX_MAX_STATUS_MSG];
    kvmux_map *m = malloc(sizeof *m); /* ~150 KiB: never on a loop's stack */
    if (!m) {
        refuse(c, f->request_id, KVMUX_STATUS_INTERNAL, "out of memory");
        return 0;
    }
    int rc = kvmux_map_decode(m, f->value, f->value_len, err, sizeof err);
    free(m);
    if (rc != 0) {
        refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, err);
        return 0;
    }
    return kvmux__repl_setmap(c, f);
}

void kvmux__cluster_setmap_done(kvmux_conn *c, uint32_t id, uint8_t status, uint64_t epoch,
                                uint64_t cur) {
    char msg[KVMUX_MAX_STATUS_MSG];
    if (status == KVMUX_STATUS_OK) {
        /* A new map, or the installed one's own bytes again (idempotent). */
        snprintf(msg, sizeof msg, "epoch %llu installed", (unsigned long long)epoch);
    } else if (status == KVMUX_STATUS_VERSION_MISMATCH && epoch > cur) {
        /* Only the map group's compare-and-set refuses a newer epoch. */
        snprintf(msg, sizeof msg, "epoch %llu is not the next epoch: the installed epoch is "
                 "%llu, so the next map must have epoch %llu", (unsigned long long)epoch,
                 (unsigned long long)cur, (unsigned long long)cur + 1);
    } else if (status == KVMUX_STATUS_VERSION_MISMATCH) {
        snprintf(msg, sizeof msg, "epoch %llu is not newer than the installed epoch %llu",
                 (unsigned long long)epoch, (unsigned long long)cur);
    } else {
        status = KVMUX_STATUS_INTERNAL;
        snprintf(msg, sizeof msg, "installing the map failed (out of memory)");
    }
    kvmux__conn_respond(c, id, status, NULL, 0, msg);
}

static void cluster_map(kvmux_conn *c, const kvmux_frame *f) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(c->loop->srv);
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = cl ? kvmux_fsm_cluster_bytes(cl, &b, &n) : 1;
    if (rc == 0)
        kvmux__conn_respond_bytes(c, f->request_id, KVMUX_STATUS_OK, b, n);
    else if (rc > 0)
        refuse(c, f->request_id, KVMUX_STATUS_NOT_FOUND, "no slot map installed");
    else
        refuse(c, f->request_id, KVMUX_STATUS_INTERNAL, "out of memory");
    free(b);
}

void kvmux__cluster_info(kvmux_server *s, uint64_t *epoch, uint32_t *owned) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(s);
    *epoch = 0;
    *owned = 0;
    if (cl) kvmux_fsm_cluster_info(cl, epoch, owned);
}

int kvmux__cluster_request(kvmux_conn *c, const kvmux_frame *f) {
    const kvmux_server_config *cfg = &c->loop->srv->cfg;
    if (is_sub(f, "slot")) {
        cluster_slot(c, f);
        return 0;
    }
    if (!is_sub(f, "map") && !is_sub(f, "setmap") && !is_sub(f, "watch")) {
        refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST,
               "unknown CLUSTER subcommand (slot, map, setmap, watch)");
        return 0;
    }
    if (cfg->cluster_group == 0 && !cfg->cluster_map_group) {
        refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST,
               "not a cluster node (--cluster-group)");
        return 0;
    }
    if (is_sub(f, "map")) {
        if (f->value_len)
            refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, "map takes no argument");
        else
            cluster_map(c, f);
        return 0;
    }
    if (is_sub(f, "watch")) return kvmux__mapwatch_request(c, f);
    return cluster_setmap(c, f);
}

static int is_keyed(uint8_t op) {
    switch (op) {
    case KVMUX_OP_GET: case KVMUX_OP_SET: case KVMUX_OP_DEL: case KVMUX_OP_INCR:
    case KVMUX_OP_CAS: case KVMUX_OP_WAIT: case KVMUX_OP_EXISTS: case KVMUX_OP_TTL:
    case KVMUX_OP_EXPIRE: case KVMUX_OP_PERSIST:
        return 1;
    default:
        return 0;
    }
}

static void respond_try_again(kvmux_conn *c, uint32_t id, uint16_t slot, uint64_t epoch) {
    KVMUX_STAT_ADD(c->loop, cluster_try_again, 1);
    if (c->sess.version >= KVMUX_PROTO_V3) {
        uint8_t v[10];
        size_t n = kvmux_try_again_encode(slot, epoch, v, sizeof v);
        kvmux__conn_respond_bytes(c, id, KVMUX_STATUS_TRY_AGAIN, v, n);
    } else {
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "slot %u is not available here yet; try again", slot);
        kvmux__conn_respond(c, id, KVMUX_STATUS_BUSY, NULL, 0, msg);
    }
}

static void respond_wrong_shard(kvmux_conn *c, uint32_t id, const kvmux_redirect *rd) {
    KVMUX_STAT_ADD(c->loop, cluster_wrong_shard, 1);
    if (c->sess.version >= KVMUX_PROTO_V3) {
        uint8_t v[12 + sizeof rd->endpoints];
        size_t n = kvmux_redirect_encode(rd, v, sizeof v);
        kvmux__conn_respond_bytes(c, id, KVMUX_STATUS_WRONG_SHARD, v, n);
    } else {
        /* kvmux__conn_respond cuts it to KVMUX_MAX_STATUS_MSG. */
        char msg[64 + sizeof rd->endpoints];
        snprintf(msg, sizeof msg, "wrong shard: slot %u is served by group %u (%s)", rd->slot,
                 rd->group, rd->endpoints);
        kvmux__conn_respond(c, id, KVMUX_STATUS_SHUTTING_DOWN, NULL, 0, msg);
    }
}

void kvmux__cluster_wrong_shard(kvmux_conn *c, uint32_t id, uint16_t slot) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(c->loop->srv);
    kvmux_redirect rd;
    int route = cl ? kvmux_fsm_cluster_route(cl, slot, &rd) : KVMUX_ROUTE_NO_MAP;
    if (route == KVMUX_ROUTE_WRONG) {
        respond_wrong_shard(c, id, &rd);
        return;
    }
    /* A map applied since gives the slot back to this group: not
     * processed, and a retry will be. */
    uint64_t epoch = 0;
    uint32_t owned = 0;
    if (cl) kvmux_fsm_cluster_info(cl, &epoch, &owned);
    respond_try_again(c, id, slot, epoch);
}

void kvmux__cluster_respond_map(kvmux_conn *c, uint32_t id) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.request_id = id;
    cluster_map(c, &f);
}

int kvmux__cluster_refuse(kvmux_conn *c, const kvmux_frame *f) {
    if (c->loop->srv->cfg.cluster_map_group && is_keyed(f->code)) {
        refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST,
               "this is the cluster's map group: it holds the slot map and serves no keys");
        return 1;
    }
    if (c->loop->srv->cfg.cluster_group == 0 || !is_keyed(f->code)) return 0;
    uint16_t slot = kvmux_slot(f->key, f->key_len);
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(c->loop->srv);
    kvmux_redirect rd;
    int route = cl ? kvmux_fsm_cluster_route(cl, slot, &rd) : KVMUX_ROUTE_NO_MAP;
    if (route == KVMUX_ROUTE_OWN && !kvmux__mapwatch_fenced(c->loop->srv, slot)) return 0;
    /* A resent session write may have been applied here before the map
     * moved its slot: the state machine answers it from the session table
     * (fsm.c refuse_cmd), where a redirect could have it applied twice. */
    if (route == KVMUX_ROUTE_WRONG && c->session_id && kvmux_frame_has_session(f) &&
        (f->session_seq & KVMUX_SESS_RETRY))
        return 0;
    if (route == KVMUX_ROUTE_OWN) {
        /* A newer map from the map group takes the slot away and is on its
         * way through the log: not served at the older epoch meanwhile. */
        uint64_t epoch = 0;
        uint32_t owned = 0;
        kvmux_fsm_cluster_info(cl, &epoch, &owned);
        respond_try_again(c, f->request_id, slot, epoch);
    } else if (route == KVMUX_ROUTE_WRONG) respond_wrong_shard(c, f->request_id, &rd);
    else respond_try_again(c, f->request_id, slot, 0);
    return 1;
}
