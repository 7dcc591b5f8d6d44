/* replica_members_test: membership changes on a real kvmuxd group
 * (GROUP, opcode 15; docs/REPLICATION.md "Membership").
 *  - grow 3 -> 4 -> 5 under write load: each newcomer starts empty (no
 *    --bootstrap, --peers naming only itself), catches up from a snapshot
 *    (--snapshot-threshold 64), and ends with the same digest at the same
 *    applied index as everyone;
 *  - every replica learns the newcomers' client addresses: NOT_LEADER
 *    from an original member names a leader that joined at run time;
 *  - transfer to a named member makes it the leader;
 *  - remove a follower, then the leader itself: a new leader is elected
 *    and no acknowledged write is lost;
 *  - errors: already a member, unknown id, last voter, a change on a
 *    follower (NOT_LEADER), bad arguments, GROUP on a v2 connection;
 *  - kvmux-cli cluster status / add error output. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"
#include "rgroup.h"
#include "testutil.h"

/* One GROUP request on a fresh connection negotiating up to max_version.
 * Returns the status (value copied into val), or -1. */
static int group_req(uint16_t port, int max_version, const char *sub, const char *args,
                     char *val, size_t vcap) {
    int fd = test_connect_raw(port, 30000); /* also bounds the reply */
    if (fd < 0) return -1;
    int rc = -1;
    int v = test_raw_handshake_version(fd, max_version);
    static _Thread_local uint8_t in[16384];
    kvmux_frame f;
    /* Changes wait for C-Raft (a catch-up may take seconds): the raw
     * reader's own timeout bounds it. */
    if (v > 0 &&
        test_send_request(fd, (uint8_t)v, 9, KVMUX_OP_GROUP, NULL, 0, sub, args,
                          args ? (uint32_t)strlen(args) : 0) == 0 &&
        test_read_frame(fd, in, sizeof in, &f) > 0 && f.type == KVMUX_FRAME_RESPONSE &&
        f.request_id == 9) {
        rc = f.code;
        if (val && vcap) {
            size_t n = f.value_len < vcap - 1 ? f.value_len : vcap - 1;
            memcpy(val, f.value, n);
            val[n] = '\0';
        }
    }
    close(fd);
    return rc;
}

/* A change sent to whoever leads, retried while it was not processed
 * (BUSY: the new leader has not committed its first entry yet, or a
 * change is under way; NOT_LEADER: leadership moved; no answer) for up
 * to 20 s. OUTCOME_UNKNOWN is retried too, and a retry answering that
 * the change was already made (remove: "not a member"; transfer:
 * "already the leader") counts as done. Under TSan on a loaded machine
 * leadership moves more often than on a quiet one. Returns the status. */
static int change(const rgroup *g, const char *sub, const char *args, char *val, size_t vcap) {
    int64_t end = test_now_ms() + 20000;
    int unknown = 0, st = -1;
    do {
        int l = rgroup_leader(g, 3000);
        st = l < 0 ? -1 : group_req(g->cport[l], 3, sub, args, val, vcap);
        /* A transfer under load may find its target a batch behind for a
         * whole election timeout (C-Raft sends TimeoutNow only to a
         * caught-up follower): TIMEOUT, which an operator retries; the
         * target may still have won meanwhile ("already the leader"). */
        int retry_timeout = st == KVMUX_STATUS_TIMEOUT && strcmp(sub, "transfer") == 0;
        if (st == KVMUX_STATUS_OUTCOME_UNKNOWN || retry_timeout) unknown = 1;
        if (unknown && ((st == KVMUX_STATUS_NOT_FOUND && strcmp(sub, "remove") == 0) ||
                        (st == KVMUX_STATUS_BAD_REQUEST && strstr(val, "already the leader"))))
            return KVMUX_STATUS_OK;
        if (st == KVMUX_STATUS_OK || (st >= 0 && !retry_timeout && st != KVMUX_STATUS_BUSY &&
                                      st != KVMUX_STATUS_NOT_LEADER &&
                                      st != KVMUX_STATUS_OUTCOME_UNKNOWN))
            return st;
        test_sleep_ms(200);
    } while (test_now_ms() < end);
    return st;
}

/* A raw GET on member i: its status, the value (NOT_LEADER: an address). */
static int raw_get(uint16_t port, char *val, size_t vcap) {
    int fd = test_connect_raw(port, 3000);
    if (fd < 0) return -1;
    int rc = -1;
    uint8_t in[4096];
    kvmux_frame f;
    if (test_raw_handshake_version(fd, 3) == 3 &&
        test_send_request(fd, 3, 5, KVMUX_OP_GET, NULL, 0, "k", NULL, 0) == 0 &&
        test_read_frame(fd, in, sizeof in, &f) > 0 && f.type == KVMUX_FRAME_RESPONSE) {
        rc = f.code;
        size_t n = f.value_len < vcap - 1 ? f.value_len : vcap - 1;
        memcpy(val, f.value, n);
        val[n] = '\0';
    }
    close(fd);
    return rc;
}

/* ---- write load: unique keys through an endpoints client ---- */

#define MAX_ACKED 100000

typedef struct load {
    rgroup *g;
    _Atomic int stop;
    _Atomic uint32_t acked_n;
    uint32_t acked[MAX_ACKED]; /* key numbers acknowledged */
    pthread_t th;
} load;

static void endpoints_of(const rgroup *g, char *buf, size_t cap) {
    size_t used = 0;
    for (int i = 0; i < RGROUP_MAX && g->cport[i]; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s127.0.0.1:%u", i ? "," : "",
                                 g->cport[i]);
}

static void *load_main(void *arg) {
    load *L = arg;
    char eps[512];
    endpoints_of(L->g, eps, sizeof eps);
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = eps;
    o.request_timeout_ms = 5000;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, NULL, 0, &o) != 0) return NULL;
    for (uint32_t k = 1; !atomic_load(&L->stop) && atomic_load(&L->acked_n) < MAX_ACKED; k++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "w%u", k);
        if (kvmux_set(c, key, (size_t)kl, key, (size_t)kl, 0, NULL, 5000) == 0) {
            uint32_t n = atomic_load(&L->acked_n);
            L->acked[n] = k;
            atomic_store(&L->acked_n, n + 1);
        } else {
            test_sleep_ms(20);
        }
    }
    kvmux_close(c);
    return NULL;
}

/* Every acknowledged key reads back from the group (through the leader). */
static void check_acked(rgroup *g, load *L) {
    char eps[512];
    endpoints_of(g, eps, sizeof eps);
    kvmux_options o;
    kvmux_options_init(&o);
    o.endpoints = eps;
    o.request_timeout_ms = 10000;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, NULL, 0, &o) == 0);
    uint32_t n = atomic_load(&L->acked_n), lost = 0;
    for (uint32_t i = 0; i < n; i++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "w%u", L->acked[i]);
        kvmux_value *v = NULL;
        if (kvmux_get(c, key, (size_t)kl, &v, 10000) != 0) lost++;
        kvmux_value_free(v);
    }
    fprintf(stderr, "members: acknowledged=%u lost=%u\n", n, lost);
    CHECK(n > 0);
    CHECK_EQ(lost, 0);
    kvmux_close(c);
}

static int wait_members(const rgroup *g, int i, int want, int timeout_ms) {
    int64_t end = test_now_ms() + timeout_ms;
    do {
        if (rgroup_stat(g, i, "replica_members") == (uint64_t)want) return 0;
        test_sleep_ms(50);
    } while (test_now_ms() < end);
    return -1;
}

static int add_member(rgroup *g, int leader, int i) {
    char args[128], val[512];
    REQUIRE(rgroup_start_joiner(g, i) == 0);
    snprintf(args, sizeof args, "%d 127.0.0.1:%u 127.0.0.1:%u", i + 1, g->rport[i],
             g->cport[i]);
    int64_t t0 = test_now_ms();
    (void)leader; /* whoever leads now: change() finds it */
    int st = change(g, "add", args, val, sizeof val);
    fprintf(stderr, "members: add %d -> %d '%s' in %llu ms\n", i + 1, st, val,
            (unsigned long long)(test_now_ms() - t0));
    return st;
}

static void check_errors(rgroup *g, int leader) {
    char val[512], args[128];
    int f = (leader + 1) % 3;
    /* Already a member. */
    snprintf(args, sizeof args, "%d 127.0.0.1:%u 127.0.0.1:%u", f + 1, g->rport[f], g->cport[f]);
    CHECK_EQ(group_req(g->cport[leader], 3, "add", args, val, sizeof val),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK(strstr(val, "already a member") != NULL);
    /* Unknown id. */
    CHECK_EQ(group_req(g->cport[leader], 3, "remove", "77", val, sizeof val),
             KVMUX_STATUS_NOT_FOUND);
    CHECK(strstr(val, "not a member") != NULL);
    CHECK_EQ(group_req(g->cport[leader], 3, "transfer", "77", val, sizeof val),
             KVMUX_STATUS_NOT_FOUND);
    /* The leader itself. */
    snprintf(args, sizeof args, "%d", leader + 1);
    CHECK_EQ(group_req(g->cport[leader], 3, "transfer", args, val, sizeof val),
             KVMUX_STATUS_BAD_REQUEST);
    /* Bad arguments. */
    CHECK_EQ(group_req(g->cport[leader], 3, "add", "4 nohostport 127.0.0.1:1", val, sizeof val),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(group_req(g->cport[leader], 3, "remove", "0", val, sizeof val),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(group_req(g->cport[leader], 3, "remove", "", val, sizeof val),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(group_req(g->cport[leader], 3, "frobnicate", NULL, val, sizeof val),
             KVMUX_STATUS_BAD_REQUEST);
    CHECK_EQ(group_req(g->cport[leader], 3, "status", "x", val, sizeof val),
             KVMUX_STATUS_BAD_REQUEST);
    /* A change on a follower is not processed: NOT_LEADER naming the
     * leader; status is answered there. */
    CHECK_EQ(group_req(g->cport[f], 3, "remove", "2", val, sizeof val), KVMUX_STATUS_NOT_LEADER);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", g->cport[leader]);
    CHECK(strcmp(val, want) == 0);
    CHECK_EQ(group_req(g->cport[f], 3, "status", NULL, val, sizeof val), KVMUX_STATUS_OK);
    CHECK(strstr(val, "role:follower\n") != NULL);
    CHECK(strstr(val, "members:3\n") != NULL);
    /* v1/v2 do not have GROUP. */
    CHECK_EQ(group_req(g->cport[leader], 2, "status", NULL, val, sizeof val),
             KVMUX_STATUS_UNKNOWN_OP);
}

/* An add whose newcomer never answers: C-Raft gives up catching it up
 * (INTERNAL "promoting to voter: ...", it stays a spare); meanwhile any
 * other change is BUSY. Removing the spare cleans up. */
typedef struct busy_arg {
    uint16_t port;
    int st;
    char val[512];
} busy_arg;

static void *busy_add(void *p) {
    busy_arg *a = p;
    a->st = group_req(a->port, 3, "add", "9 127.0.0.1:1 127.0.0.1:2", a->val, sizeof a->val);
    return NULL;
}

static void check_busy(rgroup *g, int leader) {
    busy_arg a = {.port = g->cport[leader], .st = -2};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, busy_add, &a) == 0);
    char val[512];
    int st = -1;
    int64_t end = test_now_ms() + 3000;
    do { /* until the add has started */
        test_sleep_ms(50);
        /* A probe that changes nothing: NOT_FOUND until the add runs. */
        st = group_req(g->cport[leader], 3, "remove", "77", val, sizeof val);
    } while (st == KVMUX_STATUS_NOT_FOUND && test_now_ms() < end);
    CHECK_EQ(st, KVMUX_STATUS_BUSY);
    CHECK(strstr(val, "already in progress") != NULL);
    pthread_join(th, NULL);
    CHECK_EQ(a.st, KVMUX_STATUS_INTERNAL);
    CHECK(strstr(a.val, "promoting to voter") != NULL);
    fprintf(stderr, "members: add of a dead newcomer: %d '%s'\n", a.st, a.val);
    leader = rgroup_stable_leader(g, 10000);
    REQUIRE(leader >= 0);
    CHECK_EQ(group_req(g->cport[leader], 3, "status", NULL, val, sizeof val), KVMUX_STATUS_OK);
    CHECK(strstr(val, "member_9:spare raft=127.0.0.1:1 client=127.0.0.1:2") != NULL);
    CHECK_EQ(group_req(g->cport[leader], 3, "remove", "9", val, sizeof val), KVMUX_STATUS_OK);
}

/* kvmux-cli cluster: status as lines and as JSON, a refusal's message. */
static void check_cli(const rgroup *g, int leader) {
    char cmd[512], out[8192];
    snprintf(cmd, sizeof cmd, "%s -p %u cluster status 2>&1", KVMUX_CLI_PATH, g->cport[leader]);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    CHECK_EQ(pclose(p), 0);
    CHECK(strstr(out, "role:leader\n") != NULL);
    CHECK(strstr(out, "member_1:voter raft=127.0.0.1:") != NULL);
    snprintf(cmd, sizeof cmd, "%s --json -p %u cluster status 2>&1", KVMUX_CLI_PATH,
             g->cport[leader]);
    REQUIRE((p = popen(cmd, "r")) != NULL);
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    CHECK_EQ(pclose(p), 0);
    CHECK(out[0] == '{' && strstr(out, "\"role\":\"leader\"") != NULL);
    snprintf(cmd, sizeof cmd, "%s -p %u cluster remove 99 2>&1", KVMUX_CLI_PATH,
             g->cport[leader]);
    REQUIRE((p = popen(cmd, "r")) != NULL);
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    CHECK(pclose(p) != 0);
    CHECK(strstr(out, "replica 99 is not a member") != NULL);
    if (!strstr(out, "replica 99 is not a member")) fprintf(stderr, "cli said: %s\n", out);
}

int main(void) {
    static const char *const extra[] = {"--snapshot-threshold", "64", "--election-timeout",
                                        "500", "--heartbeat-timeout", "50", NULL};
    static rgroup g;
    static load L;
    REQUIRE(rgroup_start(&g, 3, extra) == 0);
    int leader = rgroup_stable_leader(&g, 15000);
    REQUIRE(leader >= 0);
    check_errors(&g, leader);
    check_cli(&g, leader);
    check_busy(&g, leader);
    leader = rgroup_stable_leader(&g, 10000);
    REQUIRE(leader >= 0);

    L.g = &g;
    /* The newcomers' ports are picked now so the load's endpoint list
     * names all five. */
    REQUIRE(rgroup_start_joiner(&g, 3) == 0);
    REQUIRE(rgroup_start_joiner(&g, 4) == 0);
    rgroup_kill(&g, 3);
    rgroup_kill(&g, 4);
    REQUIRE(pthread_create(&L.th, NULL, load_main, &L) == 0);
    while (atomic_load(&L.acked_n) < 300) test_sleep_ms(20); /* past a few snapshots */

    /* 3 -> 4 -> 5 under load. */
    CHECK_EQ(add_member(&g, leader, 3), KVMUX_STATUS_OK);
    CHECK_EQ(wait_members(&g, 3, 4, 10000), 0);
    CHECK_EQ(add_member(&g, leader, 4), KVMUX_STATUS_OK);
    CHECK_EQ(wait_members(&g, 4, 5, 10000), 0);
    for (int i = 0; i < 5; i++) CHECK_EQ(wait_members(&g, i, 5, 10000), 0);
    /* They caught up from the leader's snapshot (the log behind it was
     * truncated long ago). */
    CHECK(rgroup_stat(&g, 3, "replica_snapshots") >= 1);
    CHECK(rgroup_stat(&g, 4, "replica_snapshots") >= 1);
    char val[512];
    /* Adding a voter again: refused. */
    char args[128];
    snprintf(args, sizeof args, "4 127.0.0.1:%u 127.0.0.1:%u", g.rport[3], g.cport[3]);
    CHECK_EQ(change(&g, "add", args, val, sizeof val), KVMUX_STATUS_BAD_REQUEST);

    /* Transfer to a member that joined at run time. */
    CHECK_EQ(change(&g, "transfer", "5", val, sizeof val), KVMUX_STATUS_OK);
    leader = rgroup_stable_leader(&g, 10000);
    CHECK_EQ(leader, 4);
    if (leader < 0) leader = 4;
    /* An original member names the newcomer's client address. */
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", g.cport[4]);
    CHECK_EQ(raw_get(g.cport[0], val, sizeof val), KVMUX_STATUS_NOT_LEADER);
    CHECK(strcmp(val, want) == 0);
    if (strcmp(val, want) != 0) fprintf(stderr, "NOT_LEADER '%s', want '%s'\n", val, want);

    /* Remove a follower, then the leader. */
    int fol = leader == 0 ? 1 : 0;
    snprintf(args, sizeof args, "%d", fol + 1);
    CHECK_EQ(change(&g, "remove", args, val, sizeof val), KVMUX_STATUS_OK);
    rgroup_kill(&g, fol);
    leader = rgroup_stable_leader(&g, 10000);
    REQUIRE(leader >= 0);
    CHECK_EQ(wait_members(&g, leader, 4, 5000), 0);
    /* The leader removes itself (whoever leads now). */
    int st = -1;
    int64_t end = test_now_ms() + 20000;
    do {
        leader = rgroup_leader(&g, 3000);
        if (leader < 0) continue;
        snprintf(args, sizeof args, "%d", leader + 1);
        st = group_req(g.cport[leader], 3, "remove", args, val, sizeof val);
        if (st != KVMUX_STATUS_OK) test_sleep_ms(200);
    } while (st != KVMUX_STATUS_OK && test_now_ms() < end);
    CHECK_EQ(st, KVMUX_STATUS_OK);
    int old = leader;
    end = test_now_ms() + 15000;
    do {
        leader = rgroup_leader(&g, 1000);
        if (leader == old) test_sleep_ms(100);
    } while ((leader < 0 || leader == old) && test_now_ms() < end);
    CHECK(leader >= 0 && leader != old);
    rgroup_kill(&g, old);
    uint32_t before = atomic_load(&L.acked_n);
    end = test_now_ms() + 15000;
    while (atomic_load(&L.acked_n) < before + 100 && test_now_ms() < end) test_sleep_ms(20);
    CHECK(atomic_load(&L.acked_n) >= before + 100); /* the 3 left serve writes */
    atomic_store(&L.stop, 1);
    pthread_join(L.th, NULL);

    /* The three left agree, and nothing acknowledged was lost. */
    uint64_t idx = 0;
    char digest[64];
    CHECK_EQ(rgroup_converged(&g, 20000, &idx, digest, sizeof digest), 0);
    fprintf(stderr, "members: converged at %llu, digest %s\n", (unsigned long long)idx, digest);
    check_acked(&g, &L);
    /* The last voter cannot be removed: shrink to one, then try. */
    leader = rgroup_stable_leader(&g, 10000);
    REQUIRE(leader >= 0);
    for (int i = 0; i < 5; i++) {
        if (!g.up[i] || i == leader) continue;
        snprintf(args, sizeof args, "%d", i + 1);
        CHECK_EQ(change(&g, "remove", args, val, sizeof val), KVMUX_STATUS_OK);
        rgroup_kill(&g, i);
    }
    for (int i = 0; i < 5; i++)
        if (g.up[i]) leader = i; /* the one left */
    snprintf(args, sizeof args, "%d", leader + 1);
    CHECK_EQ(change(&g, "remove", args, val, sizeof val), KVMUX_STATUS_BAD_REQUEST);
    CHECK(strstr(val, "last voter") != NULL);
    rgroup_stop(&g);
    return test_report();
}
