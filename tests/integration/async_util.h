/* What the async API tests share (async_test: threaded mode;
 * async_loop_test: event-loop mode with libuv): the kvmuxd they run
 * against, the op-count scale, a request builder, and the "lane" of the
 * depth-64 tests with its reply checks, so both modes are held to the
 * same expectations. */
#ifndef KVMUX_TEST_ASYNC_UTIL_H
#define KVMUX_TEST_ASYNC_UTIL_H

#include "kvmux.h"
#include "testutil.h"

/* test_server_start(s, NULL), failing the test (REQUIRE) if kvmuxd does
 * not start; from then until async_server_stop(s), an exit of the test
 * (a failed REQUIRE) kills it instead of leaving it running. One server
 * at a time. */
void async_server_start(test_server *s);
/* test_server_stop(s, 5000) (its status not checked), no longer killed
 * at exit. */
void async_server_stop(test_server *s);

/* n times KVMUX_TEST_SCALE (a multiplier, clamped to [0.001, 1]; make
 * tsan sets 0.1), at least 1. */
int scaled(int n);

/* A request of op on key (NUL-terminated; NULL for none), every other
 * field zero. key must outlive the request. */
kvmux_request req_of(kvmux_op op, const char *key);

/* One lane of the depth-64 tests: ops run one after the other, each
 * submitted from the previous one's callback: SET key = "<id>:<n>",
 * GET key (expects that value), INCR ctr by 1 (expects n/3 + 1), again.
 * The tests embed it in their own lane with their completion counting. */
typedef struct async_lane {
    int id;
    int n;                 /* next op index */
    int ops;               /* ops this lane runs */
    char key[32];
    char ctr[32];
    char val[32];          /* the value of the last SET */
    long errors;
} async_lane;

/* The request for op l->n (pointing into l, so valid while l is). */
kvmux_request async_lane_request(async_lane *l);

/* The completion of op l->n: counts an error into l->errors unless result
 * is 0 and the reply is what that op expects, then moves l->n on.
 * Returns 1 if the lane has ops left, else 0. */
int async_lane_complete(async_lane *l, int result, const kvmux_reply *reply);

#endif
