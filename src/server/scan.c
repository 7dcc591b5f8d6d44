/* The SCAN reply (docs/PROTOCOL.md section 4.1): one kvmux_store_scan
 * step whose keys are appended, as [u16 key_len][key] entries, to a
 * buffer owned here, then sent as one RESPONSE frame.
 *
 * Limits: the store stops adding buckets at KVMUX_SCAN_REPLY_BYTES of key
 * list (or less when the client's MAX_FRAME_SIZE / MAX_VALUE_SIZE is
 * smaller), and never splits a bucket; a bucket that would take the list
 * past what the client accepts is dropped from this reply and comes first
 * in the next (the cursor names it), and only a bucket that cannot fit a
 * reply on its own answers TOO_LARGE (a bucket holds a handful of keys;
 * keys are at most 64 KiB).
 * The buffer is allocated outside the shard lock in the common case; a
 * growth inside the callback is bounded by the hard limit.
 *
 * On a cluster node (docs/CLUSTER.md) the list holds only the keys of
 * slots the applied map gives this group (none while it has no map): a
 * group may still hold keys of a slot it no longer serves. The cursor
 * walks the same buckets either way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"
#include "server_internal.h"
#include "../cluster/cluster.h"

typedef struct scan_buf {
    uint8_t *data;
    size_t len, cap;
    size_t committed; /* bytes of the buckets completed so far */
    size_t hard;      /* largest key list the client can receive */
    kvmux_fsm_cluster *cl; /* a cluster node's map (a leaf lock): or NULL */
} scan_buf;

static int scan_put(void *ud, const uint8_t *key, size_t klen) {
    scan_buf *b = ud;
    if (!key) { /* a bucket is complete */
        b->committed = b->len;
        return 0;
    }
    if (b->cl && kvmux_fsm_cluster_route(b->cl, kvmux_slot(key, klen), NULL) != KVMUX_ROUTE_OWN)
        return 0; /* another group's slot: not listed here */
    size_t need = b->len + KVMUX_SCAN_ENTRY_HDR + klen;
    if (need > b->hard) {
        b->len = b->committed; /* the step ends before this bucket */
        return KVMUX_STORE_SCAN_FULL;
    }
    if (need > b->cap) {
        size_t ncap = b->cap * 2;
        while (ncap < need) ncap *= 2;
        if (ncap > b->hard) ncap = b->hard;
        uint8_t *p = realloc(b->data, ncap);
        if (!p) return KVMUX_STATUS_INTERNAL;
        b->data = p;
        b->cap = ncap;
    }
    kvmux_scan_put_key(b->data, &b->len, key, (uint16_t)klen);
    return 0;
}

void kvmux__scan_respond(kvmux_conn *c, const kvmux_frame *f) {
    uint64_t cursor = kvmux_load_u64be(f->extras);
    uint32_t count = kvmux_load_u32be(f->extras + 8);
    /* The reply is one frame: header + 8 bytes of cursor + the list. */
    size_t hard = c->sess.peer.max_frame_size - KVMUX_FRAME_HDR_LEN - 8;
    if (hard > c->sess.peer.max_value_size) hard = c->sess.peer.max_value_size;
    size_t soft = hard < KVMUX_SCAN_REPLY_BYTES ? hard : KVMUX_SCAN_REPLY_BYTES;
    kvmux_server *s = c->loop->srv;
    scan_buf b = {malloc(4096), 0, 4096, 0, hard,
                  s->cfg.cluster_group ? kvmux__repl_cluster(s) : NULL};
    if (!b.data) {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return;
    }
    uint64_t next = 0;
    int rc = kvmux_store_scan(c->loop->srv->store, cursor, f->key, f->key_len, count, soft,
                              scan_put, &b, &next);
    char msg[KVMUX_MAX_STATUS_MSG];
    if (rc == KVMUX_STATUS_OK) {
        kvmux__conn_respond_u64(c, f->request_id, next, b.data, b.len);
    } else if (rc == KVMUX_STATUS_TOO_LARGE) {
        snprintf(msg, sizeof msg, "the keys at this cursor exceed your max frame size %u",
                 c->sess.peer.max_frame_size);
        kvmux__conn_respond(c, f->request_id, (uint8_t)rc, NULL, 0, msg);
    } else if (rc == KVMUX_STATUS_BAD_REQUEST) {
        snprintf(msg, sizeof msg, "invalid SCAN cursor %llu", (unsigned long long)cursor);
        kvmux__conn_respond(c, f->request_id, (uint8_t)rc, NULL, 0, msg);
    } else {
        kvmux__conn_respond(c, f->request_id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
    }
    free(b.data);
}
