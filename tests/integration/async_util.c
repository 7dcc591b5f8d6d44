/* Shared by the async API tests (see async_util.h). */
#include "async_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static test_server *g_running;

/* A failed REQUIRE exits: do not leave the server running behind. */
static void kill_server_at_exit(void) {
    if (g_running) test_server_kill(g_running);
}

void async_server_start(test_server *s) {
    REQUIRE(test_server_start(s, NULL) == 0);
    g_running = s;
    atexit(kill_server_at_exit);
}

void async_server_stop(test_server *s) {
    g_running = NULL;
    test_server_stop(s, 5000);
}

int scaled(int n) {
    const char *s = getenv("KVMUX_TEST_SCALE");
    double v = s ? strtod(s, NULL) : 1.0;
    if (!(v >= 0.001)) v = 0.001;
    if (v > 1) v = 1;
    int r = (int)(n * v);
    return r > 0 ? r : 1;
}

kvmux_request req_of(kvmux_op op, const char *key) {
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = op;
    r.key = key;
    r.key_len = key ? strlen(key) : 0;
    return r;
}

kvmux_request async_lane_request(async_lane *l) {
    kvmux_request r;
    int step = l->n % 3;
    if (step == 0) {
        snprintf(l->val, sizeof l->val, "%d:%d", l->id, l->n);
        r = req_of(KVMUX_SET, l->key);
        r.value = l->val;
        r.value_len = strlen(l->val);
    } else if (step == 1) {
        r = req_of(KVMUX_GET, l->key);
    } else {
        r = req_of(KVMUX_INCR, l->ctr);
        r.delta = 1;
    }
    return r;
}

int async_lane_complete(async_lane *l, int result, const kvmux_reply *reply) {
    int step = l->n % 3;
    if (result != 0) {
        l->errors++;
    } else if (step == 1) {
        if (!reply->value || strcmp((const char *)reply->value, l->val) != 0) l->errors++;
    } else if (step == 2) {
        if (reply->number != l->n / 3 + 1) l->errors++;
    }
    l->n++;
    return l->n < l->ops;
}
