/* systemd's readiness protocol (Type=notify), written by hand rather than
 * linking libsystemd: the protocol is one datagram of "KEY=VALUE" lines
 * to the AF_UNIX socket named by $NOTIFY_SOCKET (documented as stable in
 * sd_notify(3)), which is ~60 lines here, works in every build, and
 * keeps kvmuxd's dependencies to libc (and OpenSSL for TLS). kvmuxd sends
 * READY=1 once its port listens, RELOADING=1 / READY=1 around a SIGHUP
 * reload, and STOPPING=1 when a drain begins (from the signal handler:
 * hence one pre-opened socket and sendto(2), which is async-signal-safe). */
#include "notify.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;

int kvmux__notify_init(void) {
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p || !*p) return 0;
    size_t n = strlen(p);
    if ((p[0] != '/' && p[0] != '@') || n >= sizeof notify_addr.sun_path) {
        kvmux_log_event(KVMUX_LOG_WARN, "notify.unusable",
                        "reason=\"NOTIFY_SOCKET is not an absolute path or @name\"");
        return -1;
    }
    memset(&notify_addr, 0, sizeof notify_addr);
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, p, n);
    if (p[0] == '@') notify_addr.sun_path[0] = 0; /* abstract namespace */
    notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (notify_fd < 0) {
        kvmux_log_event(KVMUX_LOG_WARN, "notify.unusable", "reason=\"socket failed\"");
        return -1;
    }
    return 0;
}

int kvmux__notify(const char *msg) {
    if (notify_fd < 0) return -1;
    ssize_t w = sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
                       (const struct sockaddr *)&notify_addr, notify_len);
    return w < 0 ? -1 : 0;
}

int kvmux__notify_reloading(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    return kvmux__notify(msg);
}
