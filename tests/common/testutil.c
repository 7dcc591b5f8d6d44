/* Shared test harness and server fixture: see testutil.h. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

atomic_long test_passed;
atomic_long test_failed;

int test_report(void) {
    long p = atomic_load(&test_passed), f = atomic_load(&test_failed);
    printf("%ld passed, %ld failed\n", p, f);
    fflush(stdout);
    return (f == 0 && p > 0) ? 0 : 1;
}

#if defined(__SANITIZE_THREAD__)
#define TESTUTIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TESTUTIL_TSAN 1
#endif
#endif

double test_scale(void) {
    const char *s = getenv("KVMUX_TEST_SCALE");
#ifdef TESTUTIL_TSAN
    double v = s ? strtod(s, NULL) : 0.1;
#else
    double v = s ? strtod(s, NULL) : 1.0;
#endif
    if (!(v >= 0.001)) v = 0.001;
    if (v > 10) v = 10;
    return v;
}

int64_t test_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void test_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Called in a forked child before exec. A test killed by ctest's timeout
 * (SIGKILL, no cleanup) must not leave its servers running: they would
 * hold ports and CPU for the rest of the suite. PR_SET_PDEATHSIG fires
 * when the forking *thread* exits, so it is set only for children forked
 * by the main thread (whose exit is the process's); a child forked from a
 * worker thread keeps the old behaviour. The getppid() check closes the
 * race where the parent died between fork() and prctl(). */
static void die_with_parent(pid_t parent, int from_main_thread) {
    if (!from_main_thread) return;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return;
    if (getppid() != parent) _exit(127);
}

static int on_main_thread(void) { return (pid_t)syscall(SYS_gettid) == getpid(); }

int test_server_start(test_server *s, const char *const *extra_args) {
    const char *argv[64];
    int n = 0;
    /* KVMUX_KVMUXD: another kvmuxd binary (bench/failover.sh -k). */
    const char *bin = getenv("KVMUX_KVMUXD");
    argv[n++] = bin && *bin ? bin : KVMUXD_PATH;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--port";
    argv[n++] = "0";
    for (int i = 0; extra_args && extra_args[i] && n < 62; i++) argv[n++] = extra_args[i];
    argv[n] = NULL;

    int pfd[2];
    if (pipe(pfd) != 0) return -1;
    pid_t parent = getpid();
    int main_thread = on_main_thread();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        die_with_parent(parent, main_thread);
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    s->pid = pid;
    s->port = 0;
    s->stdout_fd = pfd[0];

    /* Read byte by byte so nothing after the first line is consumed. The
     * wait is long: a replica restarting restores its snapshot and replays
     * its log before it listens, and a few hundred thousand keys under
     * TSan on a loaded 2-core CI machine took more than 10 s (chaos_test,
     * stop 22). A server that exits is seen at once (read returns 0). */
    char line[256];
    size_t used = 0;
    int64_t t0 = test_now_ms(), deadline = t0 + TEST_SERVER_START_MS;
    while (test_now_ms() < deadline && used + 1 < sizeof line) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        int r = poll(&p, 1, 100);
        if (r <= 0) continue;
        char ch;
        ssize_t got = read(pfd[0], &ch, 1);
        if (got <= 0) break;
        if (ch == '\n') {
            line[used] = 0;
            const char *colon = strrchr(line, ':');
            if (strncmp(line, "listening on ", 13) == 0 && colon) {
                s->port = (uint16_t)atoi(colon + 1);
                return s->port ? 0 : -1;
            }
            used = 0;
            continue;
        }
        line[used++] = ch;
    }
    siginfo_t si = {0};
    int alive = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;
    fprintf(stderr, "test_server_start: no 'listening on' line from kvmuxd after %lld ms (%s)\n",
            (long long)(test_now_ms() - t0), alive ? "still running: timed out" : "it exited");
    test_server_kill(s);
    return alive ? -2 : -1;
}

static int reap(pid_t pid, int timeout_ms) {
    int64_t deadline = test_now_ms() + timeout_ms;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
            return -1;
        }
        if (r < 0) return -1;
        if (test_now_ms() >= deadline) return -2;
        test_sleep_ms(5);
    }
}

int test_server_stop(test_server *s, int timeout_ms) {
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int rc = reap(s->pid, timeout_ms);
    if (rc == -2) {
        kill(s->pid, SIGKILL);
        reap(s->pid, 5000);
        rc = -1;
    }
    s->pid = 0;
    if (s->stdout_fd >= 0) close(s->stdout_fd);
    s->stdout_fd = -1;
    return rc;
}

void test_server_kill(test_server *s) {
    if (s->pid <= 0) return;
    kill(s->pid, SIGKILL);
    reap(s->pid, 5000);
    s->pid = 0;
    if (s->stdout_fd >= 0) close(s->stdout_fd);
    s->stdout_fd = -1;
}

int test_server_start_on_port(test_server *s, uint16_t port, const char *const *extra_args) {
    char ps[16];
    snprintf(ps, sizeof ps, "%u", (unsigned)port);
    const char *args[32];
    int n = 0;
    args[n++] = "--port";
    args[n++] = ps;
    for (int i = 0; extra_args && extra_args[i]; i++) {
        REQUIRE(n < 31);
        args[n++] = extra_args[i];
    }
    args[n] = NULL;
    /* The later --port wins over test_server_start's --port 0. A start
     * fails while the previous server's socket still holds the port. */
    for (int i = 0; i < 20; i++) {
        int rc = test_server_start(s, args);
        if (rc == 0) {
            if (s->port == port) return 0;
            test_server_kill(s);
            return -1;
        }
        if (rc == -2) return -1; /* it ran and never listened: not a busy port */
        test_sleep_ms(100);
    }
    return -1;
}

uint8_t *test_pattern(size_t len, uint32_t seed) {
    uint8_t *p = malloc(len);
    REQUIRE(p != NULL);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
    return p;
}

uint64_t test_stat_value(const void *text, size_t len, const char *name) {
    if (!text) return UINT64_MAX;
    /* A leading newline makes "\nname:" match the first line too. */
    char *s = malloc(len + 2);
    REQUIRE(s != NULL);
    s[0] = '\n';
    memcpy(s + 1, text, len);
    s[len + 1] = 0;
    char pat[64];
    snprintf(pat, sizeof pat, "\n%s:", name);
    uint64_t v = UINT64_MAX;
    char *p = strstr(s, pat);
    if (p) v = strtoull(p + strlen(pat), NULL, 10);
    free(s);
    return v;
}

int test_connect_raw(uint16_t port, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int test_write_all(int fd, const void *buf, size_t len) {
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int test_read_frame(int fd, uint8_t *buf, size_t cap, struct kvmux_frame *f) {
    size_t used = 0;
    for (;;) {
        int r = kvmux_frame_decode(buf, used, (uint32_t)cap, f);
        if (r > 0) return r;
        if (r < 0) return -1;
        if (used == cap) return -1;
        ssize_t got = recv(fd, buf + used, 1, 0); /* 1 byte: never over-read */
        if (got == 0) return used == 0 ? 0 : -1;
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        used += (size_t)got;
    }
}

int test_wait_closed(int fd, int timeout_ms) {
    int64_t deadline = test_now_ms() + timeout_ms;
    uint8_t junk[4096];
    while (test_now_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 50);
        if (r <= 0) continue;
        ssize_t got = recv(fd, junk, sizeof junk, MSG_DONTWAIT);
        if (got == 0) return 1;
        if (got < 0 && (errno == ECONNRESET || errno == EPIPE)) return 1;
    }
    return 0;
}

int test_raw_handshake(int fd) { return test_raw_handshake_version(fd, 1) > 0 ? 0 : -1; }

int test_raw_handshake_version(int fd, int max_version) {
    kvmux_session s;
    kvmux_settings st;
    kvmux_settings_default(&st);
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, &st);
    s.max_version = (uint8_t)max_version;
    uint8_t out[KVMUX_FRAME_HDR_LEN + 2 + KVMUX_MAX_NAME + 64];
    size_t n = kvmux_session_encode_hello(&s, out, "raw-test");
    if (test_write_all(fd, out, n) != 0) return -1;
    uint8_t in[4096];
    kvmux_frame f;
    if (test_read_frame(fd, in, sizeof in, &f) <= 0) return -1;
    if (kvmux_session_check_recv(&s, &f) != 0) return -1;
    if (f.type != KVMUX_FRAME_HELLO_ACK) return -1;
    return kvmux_session_on_hello_ack(&s, &f) == 0 ? s.version : -1;
}

/* The whole of fd (from its start) into buf, NUL-terminated. */
static void slurp_fd(int fd, char *buf, size_t cap) {
    if (!buf || cap == 0) return;
    size_t n = 0;
    ssize_t r;
    lseek(fd, 0, SEEK_SET);
    while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0) n += (size_t)r;
    buf[n] = '\0';
}

int test_run(const char *const *argv, const char *env_name, const char *env_value,
             char *out, size_t out_cap, char *err, size_t err_cap, int timeout_ms) {
    char ofile[] = "/tmp/kvmux-test-outXXXXXX", efile[] = "/tmp/kvmux-test-errXXXXXX";
    int ofd = mkstemp(ofile), efd = mkstemp(efile), status = -1;
    if (out && out_cap) out[0] = '\0';
    if (err && err_cap) err[0] = '\0';
    if (ofd < 0 || efd < 0) {
        if (ofd >= 0) close(ofd);
        if (efd >= 0) close(efd);
        return -1;
    }
    unlink(ofile);
    unlink(efile);
    pid_t parent = getpid();
    int main_thread = on_main_thread();
    pid_t pid = fork();
    if (pid == 0) {
        die_with_parent(parent, main_thread);
        dup2(ofd, 1);
        dup2(efd, 2);
        if (env_name && env_value) setenv(env_name, env_value, 1);
        else if (env_name) unsetenv(env_name);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (pid > 0) {
        int st = 0;
        pid_t w = 0;
        for (int i = 0; i < timeout_ms / 10 + 1 && (w = waitpid(pid, &st, WNOHANG)) == 0; i++)
            test_sleep_ms(10);
        if (w == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        } else if (w == pid && WIFEXITED(st)) {
            status = WEXITSTATUS(st);
        }
    }
    slurp_fd(ofd, out, out_cap);
    slurp_fd(efd, err, err_cap);
    close(ofd);
    close(efd);
    return status;
}

size_t test_put_header(uint8_t *h, uint8_t magic, uint8_t version, uint8_t type,
                       uint8_t flags, uint32_t request_id, uint8_t code, uint8_t extras_len,
                       uint16_t key_len, uint32_t body_len) {
    h[0] = magic;
    h[1] = version;
    h[2] = type;
    h[3] = flags;
    kvmux_store_u32be(h + 4, request_id);
    h[8] = code;
    h[9] = extras_len;
    kvmux_store_u16be(h + 10, key_len);
    kvmux_store_u32be(h + 12, body_len);
    return KVMUX_FRAME_HDR_LEN;
}

/* Encode f into a buffer and write it; -1 if it is over 64 KiB. */
static int send_encoded(int fd, const kvmux_frame *f) {
    static _Thread_local uint8_t buf[64 * 1024];
    size_t n = kvmux_frame_size(f);
    if (n > sizeof buf) return -1;
    kvmux_frame_encode(buf, f);
    return test_write_all(fd, buf, n);
}

int test_send_request(int fd, uint8_t version, uint32_t id, uint8_t op, const void *extras,
                      uint8_t extras_len, const char *key, const void *value, uint32_t vlen) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = version;
    f.type = KVMUX_FRAME_REQUEST;
    f.request_id = id;
    f.code = op;
    f.extras = extras;
    f.extras_len = extras_len;
    f.key = (const uint8_t *)key;
    f.key_len = (uint16_t)(key ? strlen(key) : 0);
    f.value = value;
    f.value_len = vlen;
    return send_encoded(fd, &f);
}

int test_send_hello(int fd, uint32_t request_id, uint8_t code, uint8_t minv, uint8_t maxv,
                    const char *name, const uint8_t *settings, size_t slen) {
    uint8_t ext[2] = {minv, maxv};
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = KVMUX_HANDSHAKE_VERSION;
    f.type = KVMUX_FRAME_HELLO;
    f.request_id = request_id;
    f.code = code;
    f.extras = ext;
    f.extras_len = 2;
    f.key = (const uint8_t *)name;
    f.key_len = (uint16_t)(name ? strlen(name) : 0);
    f.value = settings;
    f.value_len = (uint32_t)slen;
    return send_encoded(fd, &f);
}
