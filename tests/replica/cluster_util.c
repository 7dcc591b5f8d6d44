/* Shared cluster-mode test scaffolding: see cluster_util.h. */
#include "cluster_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "kvmux.h"
#include "proto.h"
#include "testutil.h"

/* The largest raw response cluster_raw_call reads: a whole map fits. */
#define CLUSTER_RAW_BUF (1 << 16)

size_t cluster_map_bytes(const char *text, uint8_t *out, size_t cap) {
    char err[256];
    /* kvmux_map is large (a slot table): on the heap, not the stack. */
    kvmux_map *m = malloc(sizeof *m);
    REQUIRE(m != NULL);
    if (kvmux_map_parse_text(m, text, err, sizeof err) != 0) {
        fprintf(stderr, "map text: %s\n", err);
        REQUIRE(0);
    }
    size_t n = kvmux_map_encode(m, out, cap);
    REQUIRE(n > 0);
    free(m);
    return n;
}

int cluster_call(uint16_t port, const char *sub, const void *val, size_t vlen, uint8_t *out,
                 size_t cap, size_t *outlen) {
    return cluster_call_at("127.0.0.1", port, sub, val, vlen, out, cap, outlen);
}

int cluster_call_at(const char *host, uint16_t port, const char *sub, const void *val,
                    size_t vlen, uint8_t *out, size_t cap, size_t *outlen) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, host, port, &o) == 0);
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_CLUSTER;
    r.key = sub;
    r.key_len = strlen(sub);
    r.value = val;
    r.value_len = vlen;
    kvmux_reply rep;
    int rc = kvmux_call(c, &r, &rep, 5000);
    *outlen = 0;
    if (rep.value_len <= cap) {
        if (rep.value_len) memcpy(out, rep.value, rep.value_len);
        *outlen = rep.value_len;
    }
    kvmux_reply_free(&rep);
    kvmux_close(c);
    return rc;
}

void cluster_key_in(int lo, int hi, int *from, char *key, size_t cap) {
    for (int i = *from; i < 10000000; i++) {
        snprintf(key, cap, "k%d", i);
        int s = kvmux_slot(key, strlen(key));
        if (s >= lo && s <= hi) {
            *from = i + 1;
            return;
        }
    }
    REQUIRE(0);
}

int cluster_raw_call(uint16_t port, int v, uint8_t op, const char *key, const void *value,
                     uint32_t vl, uint8_t *val, size_t cap, size_t *vlen) {
    int fd = test_connect_raw(port, 5000);
    REQUIRE(fd >= 0);
    REQUIRE(test_raw_handshake_version(fd, v) == v);
    REQUIRE(test_send_request(fd, (uint8_t)v, 7, op, NULL, 0, key, value, vl) == 0);
    /* On the heap: callers run on threads with small stacks. */
    uint8_t *buf = malloc(CLUSTER_RAW_BUF);
    REQUIRE(buf != NULL);
    kvmux_frame f;
    REQUIRE(test_read_frame(fd, buf, CLUSTER_RAW_BUF, &f) > 0);
    close(fd);
    *vlen = f.value_len < cap ? f.value_len : cap - 1;
    memcpy(val, f.value, *vlen);
    val[*vlen] = '\0';
    free(buf);
    return f.code;
}
