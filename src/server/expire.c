/* Active expiry: a periodic cycle that removes expired keys nobody reads.
 *
 * Lazy expiry (store.c) removes a key when an operation touches it; keys
 * written with a TTL and never read again would keep their memory forever.
 * So, like Redis's activeExpireCycle, loop 0 runs a cycle every
 * EXPIRE_PERIOD_MS: each shard is sampled (--active-expire-samples keys
 * from a rotating bucket cursor) and sampled again while more than 25% of
 * the keys with a TTL it saw had expired, within a time budget of a
 * quarter of the period, so the cycle never stalls the loop for long.
 * Shard locks are held only for one sample at a time.
 *
 * Expired keys fire parked WAITs like any expiry, and are not written to
 * the append-only log (records carry absolute expiry times). */
#include "log.h"
#include "server_internal.h"

#define EXPIRE_PERIOD_MS 100u
#define EXPIRE_BUDGET_MS (EXPIRE_PERIOD_MS / 4)

#define LOOP_OF_EXPIRE(t) ((kvmux_loop *)((char *)(t) - offsetof(kvmux_loop, expire_timer)))

static void on_expire_timer(kvmux_timer *t, uint64_t now) {
    kvmux_loop *l = LOOP_OF_EXPIRE(t);
    if (l->phase != KVMUX_LOOP_RUNNING) return; /* shutting down: stop the cycle */
    kvmux_store_expire_cycle(l->srv->store, l->srv->cfg.active_expire_samples,
                             EXPIRE_BUDGET_MS);
    kvmux__timer_arm(&l->timers, &l->expire_timer, now + EXPIRE_PERIOD_MS);
}

void kvmux__expire_start(kvmux_loop *l) {
    kvmux_timer_init(&l->expire_timer, on_expire_timer);
    if (l->id != 0 || l->srv->cfg.active_expire_samples == 0) return;
    if (kvmux__timer_arm(&l->timers, &l->expire_timer, l->now + EXPIRE_PERIOD_MS) != 0)
        KVMUX_LOG_W("active expiry disabled: no memory for its timer");
}
