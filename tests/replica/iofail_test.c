/* iofail_test: replicas whose durable log writes fail never let a write be
 * acknowledged on their account, and exit by themselves (the disk
 * watchdog, --replica-disk-timeout; REPLICATION.md "A replica whose disk
 * fails"). Every replica of a 3-replica group runs with the
 * kvmux-iofail.so preload (tools/iofail.c: while DIR/fail.<pid> exists,
 * each completed AIO write of that process reports EIO, the way raft_uv
 * learns that a write could not be made durable) and
 * --replica-disk-timeout 1500. Phases:
 *   A  one follower's writes fail: the group goes on (writes acknowledged),
 *      and the fault fired in that process (DIR/fired.<pid>);
 *   B  the healthy follower is stopped (SIGSTOP): only the leader and the
 *      failing follower are left, so no write may be acknowledged: the
 *      failing follower does not count toward commit;
 *   E  the failing follower exits with status 74 (KVMUX_NODE_DISK_EXIT)
 *      within the timeout + slack of its first failed write; the healthy
 *      follower resumes and the two left serve writes again;
 *   C  the healthy follower's writes fail too (2 of 3 failed): no write
 *      may be acknowledged, and it exits with 74 as well;
 *   D  the faults are off and both are restarted: writes are acknowledged
 *      again, every replica converges to one digest, and every write
 *      acknowledged in A, E and D reads back. The leader never exited.
 * Writes in B and C may end in a timeout, OUTCOME_UNKNOWN or an error;
 * the test requires only that none ends OK. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvmux.h"
#include "rgroup.h"
#include "testutil.h"

/* The watchdog's timeout here, and the slack the exit gets past it (the
 * check runs every 250 ms; sanitizer builds on a loaded machine are slow). */
#define DISK_TIMEOUT_MS 1500
#define EXIT_SLACK_MS 5000
#define DISK_EXIT 74 /* KVMUX_NODE_DISK_EXIT (src/replica/node.h) */

static rgroup g;
static char dir[160];
static char logpath[200]; /* the members' shared --log-file (one O_APPEND
                             write per line) */
static char acked_keys[4096][24];
static int nacked;

/* The pid each member had when its fault was set: the fail and fired
 * files are named by it, and it outlives the process. */
static long fault_pid[3];

static void set_fault(int i, int on) {
    char path[256];
    if (on) fault_pid[i] = (long)g.srv[i].pid;
    snprintf(path, sizeof path, "%s/fail.%ld", dir, fault_pid[i]);
    if (on) {
        FILE *f = fopen(path, "w");
        REQUIRE(f != NULL);
        fclose(f);
    } else {
        unlink(path);
    }
}

static double wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* When the fault last fired in member i (wall ms), 0 if never. A failed
 * write holds every later one, so this is about the first failure. */
static double fired_at(int i) {
    char path[256];
    struct stat st;
    snprintf(path, sizeof path, "%s/fired.%ld", dir, fault_pid[i]);
    if (stat(path, &st) != 0 || st.st_size == 0) return 0;
    return (double)st.st_mtim.tv_sec * 1e3 + (double)st.st_mtim.tv_nsec / 1e6;
}

static int fired(int i) { return fired_at(i) > 0; }

/* Wait up to timeout_ms for member i to exit by itself: its exit status
 * (128 + signal if killed), with the wall time in *at; -1 if it still
 * runs. The member is then reaped and marked down. */
static int wait_exit(int i, int timeout_ms, double *at) {
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        int st;
        pid_t r = waitpid(g.srv[i].pid, &st, WNOHANG);
        if (r == g.srv[i].pid) {
            *at = wall_ms();
            g.up[i] = 0;
            g.srv[i].pid = 0;
            if (g.srv[i].stdout_fd >= 0) close(g.srv[i].stdout_fd);
            g.srv[i].stdout_fd = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        test_sleep_ms(10);
    }
    return -1;
}

/* A log line's "ts=2026-01-02T03:04:05.678Z" as wall ms, 0 if none. */
static double line_time(const char *line) {
    struct tm tm;
    int ms = 0;
    memset(&tm, 0, sizeof tm);
    if (sscanf(line, "ts=%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) * 1e3 + ms;
}

/* The "pending for N ms" of member i's watchdog line in the log, or -1;
 * the line's time (wall ms) in *at. */
static long logged_pending(int i, double *at) {
    FILE *f = fopen(logpath, "r");
    if (!f) return -1;
    char want[64], line[2048];
    snprintf(want, sizeof want, "/r%d, --replica-disk-timeout", i + 1);
    long ms = -1;
    while (ms < 0 && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "raft log write pending for ");
        if (p && strstr(line, want) &&
            strstr(line, "the disk failed or stalled; exiting so a supervisor restarts")) {
            ms = strtol(p + strlen("raft log write pending for "), NULL, 10);
            *at = line_time(line);
        }
    }
    fclose(f);
    return ms;
}

/* Member i's writes fail from `since` on (wall ms): it must exit with
 * DISK_EXIT within DISK_TIMEOUT_MS + EXIT_SLACK_MS of the fault, after
 * logging its line, its oldest write pending for at least DISK_TIMEOUT_MS
 * (the exit's own measure; the test notices the exit only between its
 * writes). */
static void check_disk_exit(int i, double since, const char *phase) {
    double at = 0;
    int rc = wait_exit(i, DISK_TIMEOUT_MS + EXIT_SLACK_MS, &at);
    double first = fired_at(i);
    double logged_at = 0;
    long pending = logged_pending(i, &logged_at);
    printf("iofail %s: replica %d exit status %d; its log line: write pending for %ld ms "
           "(--replica-disk-timeout %d), %.0f ms after the fault was set; exit seen by the "
           "test after %.0f ms\n",
           phase, i + 1, rc, pending, DISK_TIMEOUT_MS, logged_at ? logged_at - since : -1.0,
           rc >= 0 ? at - since : -1.0);
    CHECK_EQ(rc, DISK_EXIT);
    CHECK(pending >= DISK_TIMEOUT_MS && pending <= DISK_TIMEOUT_MS + EXIT_SLACK_MS);
    CHECK(logged_at > 0 && logged_at - since <= DISK_TIMEOUT_MS + EXIT_SLACK_MS);
    CHECK(first > 0);
    if (rc >= 0 && first > 0) {
        /* Not before the timeout (file times are coarse; the write was
         * submitted a little before it failed). */
        CHECK(logged_at - first >= DISK_TIMEOUT_MS - 100);
        CHECK(at - since <= DISK_TIMEOUT_MS + EXIT_SLACK_MS);
    }
}

/* n writes of fresh keys to member i, each with timeout_ms. Returns how
 * many were acknowledged (their keys are remembered when keep). */
static int writes(int i, const char *tag, int n, int timeout_ms, int keep) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.connect_timeout_ms = 1000;
    kvmux_client *c = NULL;
    if (kvmux_connect(&c, "127.0.0.1", g.cport[i], &o) != 0) return 0;
    int ok = 0;
    for (int k = 0; k < n; k++) {
        char key[24];
        snprintf(key, sizeof key, "%s%d", tag, k);
        if (kvmux_set(c, key, strlen(key), "v", 1, 0, NULL, timeout_ms) == 0) {
            ok++;
            if (keep && nacked < 4096) snprintf(acked_keys[nacked++], sizeof acked_keys[0], "%s", key);
        }
    }
    kvmux_close(c);
    return ok;
}

/* A REQUIRE failure exits: stop the group anyway (a SIGSTOPped member
 * included: rgroup_stop ends with SIGKILL). */
static int started;
static void cleanup(void) {
    if (!started) return;
    started = 0;
    rgroup_stop(&g);
    /* The members' warnings and errors (their log is a file here). */
    FILE *f = fopen(logpath, "r");
    char line[2048];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "level=error") || strstr(line, "level=warn")) fputs(line, stdout);
    if (f) fclose(f);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
}

/* --replica-disk-timeout's bounds: refused with exit 2 naming the option,
 * on the command line and in a config file (--check-config: nothing is
 * started). */
static void check_option(void) {
    static const struct {
        const char *val;
        int rc;
    } v[] = {{"999", 2}, {"600001", 2}, {"1000", 0}, {"600000", 0}, {"10s", 2}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *argv[] = {KVMUXD_PATH, "--check-config", "--port", "0", "--replica-id", "1",
                              "--peers", "1=127.0.0.1:1/127.0.0.1:2", "--replica-disk-timeout",
                              v[i].val, NULL};
        char err[1024] = "";
        int rc = test_run(argv, NULL, NULL, NULL, 0, err, sizeof err, 10000);
        if (rc != v[i].rc) fprintf(stderr, "--replica-disk-timeout %s: rc %d: %s\n", v[i].val, rc, err);
        CHECK_EQ(rc, v[i].rc);
        if (v[i].rc == 2) CHECK(strstr(err, "--replica-disk-timeout") != NULL);
    }
    char conf[256];
    snprintf(conf, sizeof conf, "%s/disk.conf", dir);
    FILE *f = fopen(conf, "w");
    REQUIRE(f != NULL);
    fprintf(f, "replica-id 1\npeers 1=127.0.0.1:1/127.0.0.1:2\nreplica-disk-timeout 999\n");
    fclose(f);
    const char *argv[] = {KVMUXD_PATH, "--check-config", "--config", conf, NULL};
    char err[1024] = "";
    CHECK_EQ(test_run(argv, NULL, NULL, NULL, 0, err, sizeof err, 10000), 2);
    CHECK(strstr(err, "--replica-disk-timeout 999 is out of range (1000..600000)") != NULL);
    unlink(conf);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/kvmux-iofail-%ld", (long)getpid());
    REQUIRE(mkdir(dir, 0755) == 0);
    check_option();
    /* Every member gets the preload (inert until its fail file exists). */
    const char *asan = getenv("ASAN_OPTIONS");
    char asan_opts[512];
    snprintf(asan_opts, sizeof asan_opts, "%s%sverify_asan_link_order=0", asan ? asan : "",
             asan && *asan ? ":" : "");
    setenv("LD_PRELOAD", KVMUX_IOFAIL_PATH, 1);
    setenv("KVMUX_IOFAIL_DIR", dir, 1);
    setenv("ASAN_OPTIONS", asan_opts, 1);
    char tmo[16];
    snprintf(tmo, sizeof tmo, "%d", DISK_TIMEOUT_MS);
    snprintf(logpath, sizeof logpath, "%s/kvmuxd.log", dir);
    const char *const extra[] = {"--replica-disk-timeout", tmo, "--log-file", logpath, NULL};
    REQUIRE(rgroup_start(&g, 3, extra) == 0);
    started = 1;
    atexit(cleanup);
    int leader = rgroup_stable_leader(&g, 20000);
    REQUIRE(leader >= 0);
    int bad = (leader + 1) % 3, good = (leader + 2) % 3;

    /* A: one follower's writes fail; the group goes on. */
    double t_bad = wall_ms();
    set_fault(bad, 1);
    int a = writes(leader, "a", 100, 5000, 1);
    printf("iofail A (1 of 3 failing): acknowledged %d/100, fault fired: %s\n", a,
           fired(bad) ? "yes" : "no");
    CHECK_EQ(a, 100);
    CHECK(fired(bad));

    /* B: the healthy follower stopped: the failing one must not count
     * (while it waits on its failed write, and after it exits). */
    REQUIRE(kill(g.srv[good].pid, SIGSTOP) == 0);
    int b = writes(leader, "b", 3, 1000, 0);
    printf("iofail B (leader + failing follower): acknowledged %d/3\n", b);
    CHECK_EQ(b, 0);

    /* E: the failing follower exits by itself; the other two serve. */
    check_disk_exit(bad, t_bad, "E");
    REQUIRE(kill(g.srv[good].pid, SIGCONT) == 0);
    int l2 = rgroup_stable_leader(&g, 10000);
    REQUIRE(l2 >= 0);
    int e = 0;
    for (int tries = 0; tries < 10 && e == 0; tries++) {
        e = writes(l2, "e", 50, 5000, 1);
        if (e == 0) test_sleep_ms(300);
    }
    printf("iofail E (2 of 3 left): acknowledged %d/50\n", e);
    CHECK_EQ(e, 50);

    /* C: the other follower's writes fail too: nothing is acknowledged,
     * and it exits as well. */
    int good2 = l2 == good ? leader : good; /* the follower left */
    double t_good = wall_ms();
    set_fault(good2, 1);
    int cc = writes(l2, "c", 3, 1000, 0);
    printf("iofail C (one failing, one exited): acknowledged %d/3\n", cc);
    CHECK_EQ(cc, 0);
    CHECK(fired(good2));
    check_disk_exit(good2, t_good, "C");

    /* D: faults off; both restarted, as a supervisor would. */
    set_fault(bad, 0);
    set_fault(good2, 0);
    CHECK(g.up[l2] && waitpid(g.srv[l2].pid, NULL, WNOHANG) == 0); /* never faulted */
    int faulted[2] = {bad, good2};
    for (int k = 0; k < 2; k++) {
        rgroup_kill(&g, faulted[k]); /* a no-op unless the exit was missed */
        REQUIRE(rgroup_start_member(&g, faulted[k], 0) == 0);
    }
    int l3 = rgroup_stable_leader(&g, 30000);
    REQUIRE(l3 >= 0);
    int d = 0;
    for (int tries = 0; tries < 20 && d == 0; tries++) {
        d = writes(l3, "d", 50, 5000, 1);
        if (d == 0) test_sleep_ms(500);
    }
    printf("iofail D (faults off, both restarted): acknowledged %d/50\n", d);
    CHECK(d > 0);
    CHECK_EQ(rgroup_converged(&g, 30000, NULL, NULL, 0), 0);
    kvmux_options o;
    kvmux_options_init(&o);
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", g.cport[l3], &o) == 0);
    int present = 0;
    for (int k = 0; k < nacked; k++) {
        kvmux_value *v = NULL;
        if (kvmux_get(c, acked_keys[k], strlen(acked_keys[k]), &v, 5000) == 0) present++;
        kvmux_value_free(v);
    }
    kvmux_close(c);
    printf("iofail: acknowledged %d, present %d\n", nacked, present);
    CHECK_EQ(present, nacked);
    cleanup();
    return test_report();
}
