/* The CLUSTER opcode (v3; docs/CLUSTER.md, ROUND contract of issue 11).
 *
 * What this build answers:
 *   slot   - value = a key: OK, value = u16 slot (big-endian). Any node.
 *   map    - a cluster node (--cluster-group) answers its installed map; a
 *            node that has none answers NOT_FOUND "no slot map installed".
 *            Other nodes: BAD_REQUEST "not a cluster node (--cluster-group)".
 *   setmap - validated with the map decoder (BAD_REQUEST with its reason);
 *            installing through the group's log (entry op 0xF3) is not in
 *            this build yet, so a valid map is refused with a message that
 *            says so rather than silently accepted.
 * Every answer is immediate: nothing here touches the store or the log.
 *
 * Keyed requests on a cluster node (kvmux__cluster_refuse): with no map
 * installed, which is always the case in this build, they are answered
 * TRY_AGAIN (slot, epoch 0) on v3, BUSY with a message on v1/v2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void cluster_setmap(kvmux_conn *c, const kvmux_frame *f) {
    char err[KVMUX_MAX_STATUS_MSG];
    kvmux_map *m = malloc(sizeof *m); /* ~150 KiB: never on a loop's stack */
    if (!m) {
        refuse(c, f->request_id, KVMUX_STATUS_INTERNAL, "out of memory");
        return;
    }
    int rc = kvmux_map_decode(m, f->value, f->value_len, err, sizeof err);
    free(m);
    if (rc != 0) {
        refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, err);
        return;
    }
    refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST,
           "setmap: installing a slot map is not supported by this kvmuxd yet");
}

void kvmux__cluster_request(kvmux_conn *c, const kvmux_frame *f) {
    const kvmux_server_config *cfg = &c->loop->srv->cfg;
    if (is_sub(f, "slot")) {
        cluster_slot(c, f);
        return;
    }
    if (!is_sub(f, "map") && !is_sub(f, "setmap")) {
        refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST,
               "unknown CLUSTER subcommand (slot, map, setmap)");
        return;
    }
    if (cfg->cluster_group == 0) {
        refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST,
               "not a cluster node (--cluster-group)");
        return;
    }
    if (is_sub(f, "map")) {
        if (f->value_len)
            refuse(c, f->request_id, KVMUX_STATUS_BAD_REQUEST, "map takes no argument");
        else
            refuse(c, f->request_id, KVMUX_STATUS_NOT_FOUND, "no slot map installed");
        return;
    }
    cluster_setmap(c, f);
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

int kvmux__cluster_refuse(kvmux_conn *c, const kvmux_frame *f) {
    if (c->loop->srv->cfg.cluster_group == 0 || !is_keyed(f->code)) return 0;
    uint16_t slot = kvmux_slot(f->key, f->key_len);
    KVMUX_STAT_ADD(c->loop, cluster_try_again, 1);
    if (c->sess.version >= KVMUX_PROTO_V3) {
        uint8_t v[10];
        size_t n = kvmux_try_again_encode(slot, 0, v, sizeof v);
        kvmux__conn_respond_bytes(c, f->request_id, KVMUX_STATUS_TRY_AGAIN, v, n);
    } else {
        char msg[KVMUX_MAX_STATUS_MSG];
        snprintf(msg, sizeof msg, "slot %u is not available here yet; try again", slot);
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_BUSY, NULL, 0, msg);
    }
    return 1;
}
