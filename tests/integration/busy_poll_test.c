/* Busy polling: kvmuxd --busy-poll USEC and kvmux_options.busy_poll_us.
 * Both make a thread poll its socket without sleeping for a while after
 * I/O (src/server/loop.c, src/client/reader.c). What must hold:
 *
 *   limits:   --busy-poll above 1000000 refuses to start (exit 2, the
 *             option named); busy_poll_us above 1000000 -> KVMUX_EINVAL.
 *   traffic:  32 threads of SET/GET pairs on one client, client and server
 *             both spinning: every GET returns its thread's last value
 *             (the spinning reader's MSG_DONTWAIT path loses no bytes).
 *   spins:    right after traffic, with a 1 s window, both the server's
 *             loop and the client's reader keep polling while idle: over
 *             300 ms, sampled every 10 ms, some thread of each process
 *             other than the sampling one is runnable (state R) in at
 *             least half the samples; a thread asleep in epoll_wait or
 *             recv is S. Runnable, not CPU time: the reader's spin yields
 *             to every other runnable thread, so on a loaded machine (ctest
 *             -j2 under ASan) it may get little CPU while still spinning.
 *   sleeps:   with a 1 ms window, once traffic stops both go back to
 *             sleeping: at most 100 ms of CPU over 500 ms idle (a loop
 *             that never stops spinning burns ~500).
 *   kill:     kill -9 of the server while the reader spins: blocked calls
 *             fail promptly with a fatal code (EOF seen by the non-blocking
 *             recv), and kvmux_close returns.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvmux.h"
#include "testutil.h"

#define LONG_MS 20000
#define NTHREADS 32

static kvmux_client *client;

/* CPU time (utime + stime) of a process, in milliseconds, from /proc. */
static int64_t proc_cpu_ms(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Fields after the command (which may hold spaces) start past ')'. */
    const char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (int64_t)(utime + stime) * 1000 / (hz > 0 ? hz : 100);
}

/* 1 if some thread of pid other than the caller's is in state R
 * (running or runnable) right now, per /proc/PID/task/TID/stat. */
static int any_thread_runnable(pid_t pid) {
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    pid_t self = (pid_t)syscall(SYS_gettid);
    struct dirent *de;
    while (!found && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        pid_t tid = (pid_t)atoi(de->d_name);
        if (tid == self) continue;
        char path[128], buf[512];
        snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, (int)tid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'R') found = 1;
    }
    closedir(d);
    return found;
}

/* Over ms milliseconds, the number of 10 ms samples in which pid had a
 * runnable thread (the caller's own excepted). */
static int runnable_samples(pid_t pid, int ms) {
    int hits = 0;
    for (int t = 0; t < ms; t += 10) {
        hits += any_thread_runnable(pid);
        test_sleep_ms(10);
    }
    return hits;
}

/* This process's CPU time in milliseconds (all threads). */
static int64_t self_cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static kvmux_client *connect_busy(uint16_t port, uint32_t busy_us, int *rc_out) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.busy_poll_us = busy_us;
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", port, &o);
    if (rc_out) *rc_out = rc;
    return rc == 0 ? c : NULL;
}

/* ---- limits ---- */

static void test_limits(void) {
    /* Server: out of range -> exit 2 naming the option. */
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        execl(KVMUXD_PATH, KVMUXD_PATH, "--port", "0", "--busy-poll", "1000001", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char err[512] = {0};
    size_t got = 0;
    ssize_t n;
    while (got < sizeof err - 1 && (n = read(pipefd[0], err + got, sizeof err - 1 - got)) > 0)
        got += (size_t)n;
    close(pipefd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    CHECK(strstr(err, "--busy-poll") != NULL);

    /* Client: out of range -> KVMUX_EINVAL before any connect. */
    int rc = 0;
    kvmux_client *c = connect_busy(1, 1000001, &rc);
    CHECK(c == NULL);
    CHECK_EQ(rc, KVMUX_EINVAL);
}

/* ---- traffic ---- */

static atomic_int mismatches;

static void *traffic_main(void *p) {
    int tid = (int)(intptr_t)p;
    long n = (long)(2000 * test_scale()) + 10;
    char key[32], val[48];
    snprintf(key, sizeof key, "busy:%d", tid);
    for (long i = 0; i < n; i++) {
        snprintf(val, sizeof val, "v-%d-%ld", tid, i);
        int rc = kvmux_set(client, key, strlen(key), val, strlen(val), 0, NULL, LONG_MS);
        if (rc != 0) {
            fprintf(stderr, "thread %d SET %ld: %s\n", tid, i, kvmux_strerror(rc));
            atomic_fetch_add(&mismatches, 1);
            return NULL;
        }
        kvmux_value *v = NULL;
        rc = kvmux_get(client, key, strlen(key), &v, LONG_MS);
        if (rc != 0 || v->len != strlen(val) || memcmp(v->data, val, v->len) != 0) {
            fprintf(stderr, "thread %d GET %ld: rc %d\n", tid, i, rc);
            atomic_fetch_add(&mismatches, 1);
            kvmux_value_free(v);
            return NULL;
        }
        kvmux_value_free(v);
    }
    return NULL;
}

static void run_traffic(void) {
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, traffic_main, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
}

/* A kvmuxd with --busy-poll busy_us and the global client with the same
 * window, after 32 threads of checked traffic through them. */
static void start_busy_after_traffic(test_server *srv, const char *busy_us) {
    const char *args[] = {"--busy-poll", busy_us, NULL};
    REQUIRE(test_server_start(srv, args) == 0);
    client = connect_busy(srv->port, (uint32_t)atol(busy_us), NULL);
    REQUIRE(client != NULL);
    run_traffic();
    CHECK_EQ(atomic_load(&mismatches), 0);
}

static void test_traffic_and_spin(void) {
    test_server srv;
    start_busy_after_traffic(&srv, "1000000");

    /* Right after the traffic: both should still be polling. */
    int srv_hits = runnable_samples(srv.pid, 300);
    int cli_hits = runnable_samples(getpid(), 300);
    fprintf(stderr, "spin window: server runnable in %d/30 samples, client in %d/30\n",
            srv_hits, cli_hits);
    CHECK(srv_hits >= 15);
    CHECK(cli_hits >= 15);

    kvmux_close(client);
    client = NULL;
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

/* ---- sleeps ---- */

static void test_sleeps_when_idle(void) {
    test_server srv;
    start_busy_after_traffic(&srv, "1000");

    test_sleep_ms(100); /* well past the 1 ms window */
    int64_t s0 = proc_cpu_ms(srv.pid), c0 = self_cpu_ms();
    int srv_hits = runnable_samples(srv.pid, 500);
    int cli_hits = runnable_samples(getpid(), 500);
    int64_t s1 = proc_cpu_ms(srv.pid), c1 = self_cpu_ms();
    fprintf(stderr, "idle: server %lld ms, client %lld ms of CPU in ~1 s; runnable in %d/50 "
            "and %d/50 samples\n", (long long)(s1 - s0), (long long)(c1 - c0), srv_hits, cli_hits);
    /* CPU time can only fall under contention, so these bounds are safe
     * on a loaded machine; a loop that never stops spinning burns ~1000. */
    CHECK(s0 >= 0 && s1 - s0 <= 200);
    CHECK(c1 - c0 <= 200);
    CHECK(srv_hits <= 10);
    CHECK(cli_hits <= 10);

    /* Still serves after sleeping. */
    CHECK_EQ(kvmux_set(client, "k", 1, "v", 1, 0, NULL, LONG_MS), 0);

    kvmux_close(client);
    client = NULL;
    CHECK_EQ(test_server_stop(&srv, 10000), 0);
}

/* ---- kill ---- */

typedef struct kill_arg {
    int rc;
    int64_t returned_at;
} kill_arg;

static void *wait_main(void *p) {
    kill_arg *a = p;
    kvmux_value *v = NULL;
    /* A WAIT on an absent key: parked at the server until it dies. */
    a->rc = kvmux_wait(client, "busy:absent", 11, 0, 15000, &v, LONG_MS);
    a->returned_at = test_now_ms();
    kvmux_value_free(v);
    return NULL;
}

static void test_kill_while_spinning(void) {
    const char *args[] = {"--busy-poll", "1000000", NULL};
    test_server srv;
    REQUIRE(test_server_start(&srv, args) == 0);
    client = connect_busy(srv.port, 1000000, NULL);
    REQUIRE(client != NULL);
    CHECK_EQ(kvmux_set(client, "k", 1, "v", 1, 0, NULL, LONG_MS), 0);

    enum { N = 8 };
    pthread_t th[N];
    kill_arg a[N];
    memset(a, 0, sizeof a);
    for (int i = 0; i < N; i++) REQUIRE(pthread_create(&th[i], NULL, wait_main, &a[i]) == 0);
    test_sleep_ms(100); /* the WAITs are parked; the reader is spinning */
    int64_t killed_at = test_now_ms();
    test_server_kill(&srv);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK(kvmux_is_fatal(a[i].rc));
        CHECK(a[i].returned_at - killed_at < 2000);
    }
    kvmux_close(client);
    client = NULL;
}

int main(void) {
    test_limits();
    test_traffic_and_spin();
    test_sleeps_when_idle();
    test_kill_while_spinning();
    return test_report();
}
