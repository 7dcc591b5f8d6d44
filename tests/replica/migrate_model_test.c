/* Slot migration under load against a model (docs/MIGRATION.md section
 * 12, step 6's test): a map group and 3 data groups of real kvmuxd
 * processes, KVMUX_MODEL_REPLICAS members each (default 3, section 12's
 * 3 x 3 with a 3-member map group: 12 kvmuxd, about 1 min 45 s here;
 * under the sanitizers, KVMUX_TEST_SCALE < 1, default 1: 12 instrumented
 * kvmuxd do not fit the CI's budget on 2 cores), 100k keys loaded
 * (KVMUX_MODEL_KEYS; x KVMUX_TEST_SCALE below 1, at least 10k), then
 * KVMUX_MODEL_OPS operations (default 300,000 x KVMUX_TEST_SCALE;
 * 1,000,000 as section 12 says with the env var) from 8 threads over one
 * cluster-mode client
 * while KVMUX_MODEL_MOVES random migrations (default 6; a random range of
 * 1..2048 slots of one group, a random target, one after another) run.
 * The driver is tests/replica/migload.c: every answer is checked by the
 * model (each key has one writer thread, which knows its last acknowledged
 * value and version: versions never decrease, nothing acknowledged is
 * lost, nothing is read that was not written), after each commit every key
 * of the moved range is read back, at the end every key; the INCR counters
 * equal their acknowledged increments (within the unknown ones); the
 * cluster client's map epoch equals the map group's; lincheck finds the
 * whole history linearizable. KVMUX_MODEL_SEED picks the ranges and ops;
 * KVMUX_HISTORY_OUT=FILE keeps the history for kvmux-lincheck. Prints
 *   migrate_model: groups=3 replicas=R seed=S ops=N ... (migload_print)
 * No time is asserted; every move must commit within 120 s. */
#include <stdio.h>
#include <stdlib.h>

#include "migload.h"
#include "testutil.h"

static unsigned long env_ul(const char *name, unsigned long def) {
    const char *v = getenv(name);
    return v && *v ? strtoul(v, NULL, 10) : def;
}

int main(void) {
    /* Under the sanitizers (KVMUX_TEST_SCALE < 1) one-member groups and
     * fewer keys. */
    double scale = test_scale();
    int replicas = (int)env_ul("KVMUX_MODEL_REPLICAS", scale < 1 ? 1 : 3);
    static migload_config cfg;
    migload_config_init(&cfg);
    unsigned long keys = scale < 1 ? (unsigned long)(100000 * scale) : 100000;
    cfg.keys = (uint32_t)env_ul("KVMUX_MODEL_KEYS", keys < 10000 ? 10000 : keys);
    cfg.ops = env_ul("KVMUX_MODEL_OPS", (unsigned long)(300000 * scale + 0.5));
    cfg.duration_ms = 0;
    cfg.moves = (int)env_ul("KVMUX_MODEL_MOVES", 6);
    cfg.min_slots = 1;
    cfg.max_slots = 2048;
    cfg.move_gap_ms = 500;
    cfg.seed = (uint32_t)env_ul("KVMUX_MODEL_SEED", 1);
    cfg.history_out = getenv("KVMUX_HISTORY_OUT");
    cfg.verbose = 1;

    static migload_cluster cl;
    REQUIRE(migload_cluster_start(&cl, 3, replicas, NULL) == 0);
    static migload_result r;
    int rc = migload_run(&cl, &cfg, &r);
    migload_cluster_stop(&cl);
    REQUIRE(rc == 0);

    printf("migrate_model: groups=3 replicas=%d seed=%u ", replicas, cfg.seed);
    migload_print(stdout, &r);
    printf("\n");
    fflush(stdout);
    CHECK(r.ops >= cfg.ops);
    CHECK_EQ(r.moves_committed, (uint64_t)cfg.moves);
    CHECK_EQ(r.moves_timed_out, 0);
    CHECK(r.slots_moved >= (uint64_t)cfg.moves);
    CHECK(r.readback_keys > 0);
    CHECK_EQ(r.model_errors, 0);
    CHECK_EQ(r.final_missing, 0);
    CHECK_EQ(r.lost, 0);
    CHECK_EQ(r.applied_twice, 0);
    CHECK_EQ(r.stale_reads, 0);
    CHECK_EQ(r.lincheck_rc, 0);
    CHECK_EQ(r.violations, 0);
    CHECK_EQ(r.client_epoch, r.map_epoch);
    CHECK_EQ(r.map_epoch, 1 + r.moves_committed);
    return test_report();
}
