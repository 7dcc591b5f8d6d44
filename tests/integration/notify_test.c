/* kvmuxd under systemd's readiness protocol (Type=notify), with a fake
 * NOTIFY_SOCKET: a unix datagram socket this test binds.
 *   - READY=1 arrives, and when it does the port already accepts;
 *   - SIGHUP: RELOADING=1 (with MONOTONIC_USEC) then READY=1;
 *   - SIGTERM: STOPPING=1, and the exit status is 0;
 *   - an abstract socket name (@...) works too. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ops_util.h"
#include "testutil.h"

static int bind_dgram(const char *name, int abstract) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(a.sun_path, name, n);
    if (abstract) a.sun_path[0] = 0;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (bind(fd, (struct sockaddr *)&a, len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Next datagram within timeout_ms into buf; returns its length or -1. */
static long recv_msg(int fd, char *buf, size_t cap, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0) return -1;
    ssize_t n = recv(fd, buf, cap - 1, 0);
    if (n < 0) return -1;
    buf[n] = 0;
    return n;
}

static void run(const char *sockname, int abstract) {
    int fd = bind_dgram(sockname, abstract);
    REQUIRE(fd >= 0);
    setenv("NOTIFY_SOCKET", sockname, 1);
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    ops_kill_at_exit(s.pid);
    unsetenv("NOTIFY_SOCKET");
    char msg[512];
    CHECK(recv_msg(fd, msg, sizeof msg, 5000) > 0);
    CHECK(strstr(msg, "READY=1") != NULL);
    char want[64];
    snprintf(want, sizeof want, "MAINPID=%d", (int)s.pid);
    CHECK(strstr(msg, want) != NULL);
    int c = test_connect_raw(s.port, 2000);
    CHECK(c >= 0);
    CHECK(c >= 0 && test_raw_handshake(c) == 0);

    CHECK_EQ(kill(s.pid, SIGHUP), 0);
    CHECK(recv_msg(fd, msg, sizeof msg, 5000) > 0);
    CHECK(strstr(msg, "RELOADING=1") != NULL && strstr(msg, "MONOTONIC_USEC=") != NULL);
    CHECK(recv_msg(fd, msg, sizeof msg, 5000) > 0);
    CHECK(strstr(msg, "READY=1") != NULL);
    if (c >= 0) close(c);

    CHECK_EQ(kill(s.pid, SIGTERM), 0);
    CHECK(recv_msg(fd, msg, sizeof msg, 5000) > 0);
    CHECK(strstr(msg, "STOPPING=1") != NULL);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    close(fd);
    if (!abstract) unlink(sockname);
}

int main(void) {
    const char *dir = ops_tmpdir();
    REQUIRE(dir);
    char path[128];
    snprintf(path, sizeof path, "%s/notify.sock", dir);
    run(path, 0);
    char abs[64];
    snprintf(abs, sizeof abs, "@kvmux-notify-test-%d", (int)getpid());
    run(abs, 1);
    return test_report();
}
