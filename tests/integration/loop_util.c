/* libuv loop driving for the event-loop mode tests (contracts in
 * loop_util.h). */
#include "loop_util.h"

#include "kvmux/adapters/libuv.h"
#include "testutil.h"

static int g_watchdog_fired;

void on_watchdog(uv_timer_t *t) {
    g_watchdog_fired = 1;
    uv_stop(t->loop);
}

int run_loop(uv_loop_t *loop, int ms) {
    uv_timer_t wd;
    uv_timer_init(loop, &wd);
    uv_unref((uv_handle_t *)&wd); /* does not keep the loop alive */
    g_watchdog_fired = 0;
    /* Timers count from the loop's cached time: refresh it, or work done
     * since the last uv_run (freeing 64 MiB under TSan is slow) counts. */
    uv_update_time(loop);
    uv_timer_start(&wd, on_watchdog, (uint64_t)ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&wd);
    uv_close((uv_handle_t *)&wd, NULL);
    uv_run(loop, UV_RUN_NOWAIT); /* let the close finish */
    return g_watchdog_fired ? -1 : 0;
}

void on_status(kvmux_client *c, int status, void *ud) {
    (void)c;
    status_rec *s = ud;
    s->calls++;
    s->last = status;
    if (status == 0) s->connected++;
    if (s->stop_loop) uv_stop(s->stop_loop);
}

kvmux_client *loop_attach(uv_loop_t *loop, uint16_t port, const kvmux_options *o,
                          status_rec *st) {
    kvmux_client *c = NULL;
    int rc = kvmux_async_connect(&c, "127.0.0.1", port, o);
    REQUIRE(rc == 0 && c != NULL);
    if (st) CHECK_EQ(kvmux_async_set_status_cb(c, on_status, st), 0);
    REQUIRE(kvmux_libuv_attach(c, loop) == 0);
    return c;
}
