/* Helpers of the migration tests (migtest.h). */
#include "migtest.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_util.h"
#include "testutil.h"

int migt_run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return st < 0 || (st & 0x7f) ? -1 : (st >> 8) & 0xff;
}

int migt_table(const rgroup *mg, kvmux_migtab *t) {
    static uint8_t buf[65536];
    for (int i = 0; i < mg->n; i++) {
        size_t n = 0;
        if (!mg->up[i]) continue;
        if (cluster_call_at(rgroup_host(mg, i), mg->cport[i], "migrations", NULL, 0, buf,
                            sizeof buf, &n) == 0 &&
            kvmux_migtab_decode(t, buf, n, NULL, 0) == 0)
            return 0;
    }
    return -1;
}

int migt_record(const rgroup *mg, uint32_t id, int ended, int wait_ms, kvmux_migrec *out) {
    kvmux_migtab *t = malloc(sizeof *t);
    REQUIRE(t != NULL);
    int rc = -1;
    for (int64_t end = test_now_ms() + wait_ms; test_now_ms() < end; test_sleep_ms(100)) {
        if (migt_table(mg, t) != 0) continue;
        const kvmux_migrec *r = kvmux_migtab_find(t, id);
        if (!r) continue;
        *out = *r;
        if (!ended || (r->state != KVMUX_MIG_OPEN && r->acks == 3)) {
            rc = 0;
            break;
        }
    }
    free(t);
    return rc;
}

long long migt_slotkeys(uint16_t port, int first, int last) {
    return migt_slotkeys_at("127.0.0.1", port, first, last);
}

long long migt_slotkeys_at(const char *host, uint16_t port, int first, int last) {
    char out[8192], arg[32];
    size_t n = 0;
    snprintf(arg, sizeof arg, "%d-%d", first, last);
    if (cluster_call_at(host, port, "slotkeys", arg, strlen(arg), (uint8_t *)out, sizeof out - 1, &n) != 0)
        return -1;
    out[n] = '\0';
    const char *t = strstr(out, "total ");
    return t ? atoll(t + 6) : -1;
}

uint64_t migt_map_epoch(const rgroup *mg) {
    int l = rgroup_leader(mg, 5000);
    uint64_t e = l < 0 ? 0 : rgroup_stat(mg, l, "cluster_epoch");
    return e == UINT64_MAX ? 0 : e;
}

int migt_stat_is(const rgroup *g, int i, const char *name, const char *want) {
    char v[64];
    return rgroup_stat_str(g, i, name, v, sizeof v) == 0 && strcmp(v, want) == 0;
}

uint32_t migt_start_move(const rgroup *mg, int first, int last, int dst) {
    char arg[32], out[512];
    size_t n = 0;
    snprintf(arg, sizeof arg, "%d-%d %d", first, last, dst);
    int rc = cluster_call(mg->cport[0], "migrate", arg, strlen(arg), (uint8_t *)out,
                          sizeof out - 1, &n);
    out[n] = '\0';
    if (rc != 0) fprintf(stderr, "CLUSTER migrate: %d %s\n", rc, out);
    REQUIRE(rc == 0);
    REQUIRE(strncmp(out, "migration ", 10) == 0);
    return (uint32_t)strtoul(out + 10, NULL, 10);
}

void migt_fill(uint16_t port, int n, migt_fill_fn fn, void *ud) {
    kvmux_client *c = NULL;
    kvmux_options o;
    kvmux_options_init(&o);
    REQUIRE(kvmux_connect(&c, "127.0.0.1", port, &o) == 0);
    kvmux_future *fs[MIGT_FILL_DEPTH] = {0};
    for (int i = 0; i < n + MIGT_FILL_DEPTH; i++) {
        int s = i % MIGT_FILL_DEPTH;
        if (fs[s]) {
            REQUIRE(kvmux_future_wait(fs[s], 20000) == 0);
            REQUIRE(kvmux_future_result(fs[s], NULL) == 0);
            kvmux_future_free(fs[s]);
            fs[s] = NULL;
        }
        if (i >= n) continue;
        kvmux_request rq;
        memset(&rq, 0, sizeof rq);
        fn(i, s, ud, &rq);
        REQUIRE(kvmux_call_future(c, &rq, 20000, &fs[s]) == 0);
    }
    kvmux_close(c);
}

kvmux_migrec migt_wait_ended(const rgroup *mg, uint32_t id, int wait_ms) {
    kvmux_migrec r;
    memset(&r, 0, sizeof r);
    for (int64_t end = test_now_ms() + wait_ms; test_now_ms() < end; test_sleep_ms(20))
        if (migt_record(mg, id, 0, 1000, &r) == 0 && r.state != KVMUX_MIG_OPEN) break;
    return r;
}

void migt_sigstop(rgroup *g) {
    REQUIRE(kill(g->srv[0].pid, SIGSTOP) == 0);
    g->up[0] = 0;
}

void migt_sigcont(rgroup *g) {
    REQUIRE(kill(g->srv[0].pid, SIGCONT) == 0);
    g->up[0] = 1;
}
