/* The group-agnostic failover scenario (contracts in failover_scenario.h). */
#include "failover_scenario.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvmux.h"
#include "testutil.h"

typedef struct fs_op {
    atomic_int calls;
    atomic_int result;
} fs_op;

typedef struct fs_run {
    kvmux_client *c;
    fs_op *ops;
    int n;
    atomic_int next;       /* blocking: the next index to write */
    atomic_int done;       /* completed */
} fs_run;

static kvmux_client *fs_connect(const failover_target *t) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = t->endpoints;
    o.reconnect_min_backoff_ms = 5;
    o.reconnect_max_backoff_ms = 100;
    o.connect_timeout_ms = 2000;
    o.request_timeout_ms = 15000;
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, NULL, 0, &o);
    if (rc != 0) fprintf(stderr, "failover scenario: connect: %s\n", kvmux_strerror(rc));
    REQUIRE(rc == 0 && c);
    return c;
}

static void fs_key(int i, char *key, size_t kcap, char *val, size_t vcap) {
    snprintf(key, kcap, "fs%d", i);
    snprintf(val, vcap, "v%d", i);
}

/* Tally the outcomes and read back every acknowledged write. */
static void fs_check(fs_run *run, failover_result *r) {
    memset(r, 0, sizeof *r);
    r->ops = run->n;
    for (int i = 0; i < run->n; i++) {
        int calls = atomic_load(&run->ops[i].calls);
        if (calls != 1) r->twice += calls > 1;
        CHECK_EQ(calls, 1);
        int res = atomic_load(&run->ops[i].result);
        if (res == 0) r->acked++;
        else if (res == KVMUX_EUNKNOWN) r->unknown++;
        else {
            if (!r->other) r->other_err = res;
            r->other++;
        }
        if (res != 0) continue;
        char key[16], val[16];
        fs_key(i, key, sizeof key, val, sizeof val);
        kvmux_value *v = NULL;
        int rc = kvmux_get(run->c, key, strlen(key), &v, 10000);
        if (rc != 0 || v->len != strlen(val) || memcmp(v->data, val, v->len) != 0) r->lost++;
        kvmux_value_free(v);
    }
    CHECK_EQ(r->lost, 0);
    CHECK_EQ(r->twice, 0);
}

static void fs_on_reply(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    (void)c;
    (void)reply;
    fs_op *op = ud;
    atomic_store(&op->result, result);
    atomic_fetch_add(&op->calls, 1);
}

void failover_run_async(const failover_target *t, int ops, int depth, failover_result *r) {
    fs_run run;
    memset(&run, 0, sizeof run);
    run.n = ops;
    run.ops = calloc((size_t)ops, sizeof *run.ops);
    REQUIRE(run.ops);
    run.c = fs_connect(t);
    int submitted = 0, failed = 0;
    int64_t end = test_now_ms() + 60000;
    while (submitted < ops && test_now_ms() < end) {
        int completed = 0;
        for (int i = 0; i < submitted; i++) completed += atomic_load(&run.ops[i].calls) > 0;
        if (!failed && completed >= ops / 2) {
            t->fail_leader(t->arg);
            failed = 1;
        }
        if (submitted - completed >= depth) {
            test_sleep_ms(1);
            continue;
        }
        char key[16], val[16];
        fs_key(submitted, key, sizeof key, val, sizeof val);
        kvmux_request q;
        memset(&q, 0, sizeof q);
        q.op = KVMUX_SET;
        q.key = key;
        q.key_len = strlen(key);
        q.value = val;
        q.value_len = strlen(val);
        int rc = kvmux_call_async(run.c, &q, KVMUX_TIMEOUT_DEFAULT, fs_on_reply,
                                  &run.ops[submitted]);
        CHECK_EQ(rc, 0);
        if (rc != 0) break;
        submitted++;
    }
    CHECK_EQ(submitted, ops);
    run.n = submitted;
    for (;;) {
        int completed = 0;
        for (int i = 0; i < submitted; i++) completed += atomic_load(&run.ops[i].calls) > 0;
        if (completed == submitted || test_now_ms() >= end) break;
        test_sleep_ms(2);
    }
    if (!failed) t->fail_leader(t->arg); /* fewer ops than expected */
    fs_check(&run, r);
    kvmux_close(run.c);
    free(run.ops);
}

static void *fs_thread(void *arg) {
    fs_run *run = arg;
    for (;;) {
        int i = atomic_fetch_add(&run->next, 1);
        if (i >= run->n) break;
        char key[16], val[16];
        fs_key(i, key, sizeof key, val, sizeof val);
        int rc = kvmux_set(run->c, key, strlen(key), val, strlen(val), 0, NULL,
                           KVMUX_TIMEOUT_DEFAULT);
        atomic_store(&run->ops[i].result, rc);
        atomic_fetch_add(&run->ops[i].calls, 1);
        atomic_fetch_add(&run->done, 1);
    }
    return NULL;
}

void failover_run_blocking(const failover_target *t, int ops, int threads, failover_result *r) {
    fs_run run;
    memset(&run, 0, sizeof run);
    run.n = ops;
    run.ops = calloc((size_t)ops, sizeof *run.ops);
    REQUIRE(run.ops);
    run.c = fs_connect(t);
    pthread_t th[64];
    REQUIRE(threads >= 1 && threads <= 64);
    for (int i = 0; i < threads; i++) REQUIRE(pthread_create(&th[i], NULL, fs_thread, &run) == 0);
    int64_t end = test_now_ms() + 60000;
    while (atomic_load(&run.done) < ops / 2 && test_now_ms() < end) test_sleep_ms(1);
    t->fail_leader(t->arg);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    fs_check(&run, r);
    kvmux_close(run.c);
    free(run.ops);
}
