/* Driving a libuv loop from the event-loop mode tests (async_loop_test,
 * client_loop_bigsend_test): a uv_run bounded by a watchdog, so a bug fails
 * the checks instead of hanging the test, and a status callback recorder.
 * Single-threaded: call everything from the thread that runs the loop. */
#ifndef KVMUX_TEST_LOOP_UTIL_H
#define KVMUX_TEST_LOOP_UTIL_H

#include <stdint.h>
#include <uv.h>

#include "kvmux.h"

/* Runs loop until uv_stop (from a callback), nothing is left to do, or ms
 * milliseconds pass from now (the loop's cached time is refreshed first, so
 * work done since the last uv_run does not count). Returns 0, or -1 if the
 * watchdog fired. Leaves no handle of its own behind. */
int run_loop(uv_loop_t *loop, int ms);

/* A uv_timer_cb that stops the timer's loop (and counts as the watchdog
 * firing for a run_loop in progress): for running a loop for a while. */
void on_watchdog(uv_timer_t *t);

/* What on_status saw: calls, the last status, how many were 0 (connected);
 * stop_loop, when set, is uv_stop'ped on each call. */
typedef struct status_rec {
    int calls;
    int last;
    int connected;
    uv_loop_t *stop_loop;
} status_rec;

/* A kvmux_status_cb recording into ud, a status_rec. */
void on_status(kvmux_client *c, int status, void *ud);

/* kvmux_async_connect to 127.0.0.1:port with o (NULL: defaults), on_status
 * into st when st is not NULL, attached to loop with the libuv adapter.
 * Does not run the loop. Exits the test (REQUIRE) on failure. */
kvmux_client *loop_attach(uv_loop_t *loop, uint16_t port, const kvmux_options *o,
                          status_rec *st);

#endif
