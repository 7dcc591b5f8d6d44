/* kvmux-faultproxy: a TCP proxy whose faults a test switches at run time,
 * for the replication tests (a replica's or a client's link slowed, stalled,
 * black-holed or cut, on loopback, without namespaces or root).
 *
 *   kvmux-faultproxy LISTEN_ADDR UPSTREAM_ADDR:PORT
 *
 * Listens on LISTEN_ADDR, an ephemeral port, prints "listening on ADDR:PORT"
 * and forwards every accepted connection to UPSTREAM (one upstream
 * connection each). Commands, one per line on standard input, each answered
 * by one line "ok ..." (or "error ...") on standard output once in force:
 *
 *   pass          forward at once (the start mode); data held by stall or
 *                 delay is delivered
 *   delay MS      hold every chunk read, both directions, MS ms before
 *                 forwarding it (order kept); 0 = pass
 *   stall         forward nothing; keep reading until MAX_HELD bytes are held
 *                 per direction, then stop reading (the sender's window
 *                 fills). Connections stay open; pass delivers the rest
 *   blackhole     read and discard everything, both directions, on current
 *                 and new connections (a peer that swallows requests)
 *   cut           reset (RST) every current connection; the mode is unchanged
 *   stats         "ok conns=N accepted=N bytes_up=N bytes_down=N mode=M"
 *
 * Held data is bounded by MAX_HELD (8 MiB) per direction per connection and
 * connections by MAX_CONNS (256; more are reset at once). When one side
 * closes, the other side's write half is shut down once the held data is
 * delivered. Exits on end of standard input or SIGTERM/SIGINT.
 *
 * Exit codes: 0 standard input ended (or a signal); 1 cannot listen or a
 * system call failed; 2 usage error. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256
#define MAX_HELD (8u << 20)
#define CHUNK 65536

enum mode { M_PASS, M_DELAY, M_STALL, M_BLACKHOLE };
static const char *const mode_names[] = {"pass", "delay", "stall", "blackhole"};

typedef struct chunk {
    struct chunk *next;
    uint64_t due_ms;
    size_t len, off;
    char data[];
} chunk;

/* One direction: bytes read from fd[from] waiting to go to fd[to]. */
typedef struct dir {
    chunk *head, *tail;
    size_t held;
    int eof;              /* the reading side ended */
    int shut;             /* write half of the other side shut down */
} dir;

typedef struct conn {
    int fd[2];            /* 0 client, 1 upstream */
    dir d[2];             /* d[0]: client -> upstream, d[1]: upstream -> client */
} conn;

static conn *conns[MAX_CONNS];
static enum mode mode = M_PASS;
static uint64_t delay_ms, accepted, bytes_up, bytes_down;
static volatile sig_atomic_t stop;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void conn_close(int i, int reset) {
    conn *c = conns[i];
    for (int s = 0; s < 2; s++) {
        if (reset) {
            struct linger l = {1, 0};
            setsockopt(c->fd[s], SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        close(c->fd[s]);
        for (chunk *k = c->d[s].head, *n; k; k = n) {
            n = k->next;
            free(k);
        }
    }
    free(c);
    conns[i] = NULL;
}

static int nconns(void) {
    int n = 0;
    for (int i = 0; i < MAX_CONNS; i++) n += conns[i] != NULL;
    return n;
}

static void do_accept(int lfd, const struct sockaddr_in *up) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) return;
    accepted++;
    int slot = -1;
    for (int i = 0; i < MAX_CONNS && slot < 0; i++)
        if (!conns[i]) slot = i;
    int ufd = slot < 0 ? -1 : socket(AF_INET, SOCK_STREAM, 0);
    if (ufd < 0 || connect(ufd, (const struct sockaddr *)up, sizeof *up) < 0) {
        struct linger l = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close(fd);
        if (ufd >= 0) close(ufd);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        close(ufd);
        return;
    }
    int one = 1;
    c->fd[0] = fd;
    c->fd[1] = ufd;
    for (int s = 0; s < 2; s++) {
        fcntl(c->fd[s], F_SETFL, fcntl(c->fd[s], F_GETFL) | O_NONBLOCK);
        setsockopt(c->fd[s], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    conns[slot] = c;
}

/* Read from side s into direction d[s]. Returns -1 to close the conn. */
static int do_read(conn *c, int s) {
    char buf[CHUNK];
    ssize_t n = read(c->fd[s], buf, sizeof buf);
    if (n == 0) {
        c->d[s].eof = 1;
        return 0;
    }
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (s == 0) bytes_up += (uint64_t)n;
    else bytes_down += (uint64_t)n;
    if (mode == M_BLACKHOLE) return 0;
    chunk *k = malloc(sizeof *k + (size_t)n);
    if (!k) return -1;
    k->next = NULL;
    k->due_ms = now_ms() + (mode == M_DELAY ? delay_ms : 0);
    k->len = (size_t)n;
    k->off = 0;
    memcpy(k->data, buf, (size_t)n);
    dir *d = &c->d[s];
    if (d->tail) d->tail->next = k;
    else d->head = k;
    d->tail = k;
    d->held += (size_t)n;
    return 0;
}

/* Deliver due chunks of direction s. Returns -1 to close the conn. */
static int do_write(conn *c, int s, uint64_t now) {
    dir *d = &c->d[s];
    int to = c->fd[1 - s];
    while (d->head && mode != M_STALL && d->head->due_ms <= now) {
        chunk *k = d->head;
        ssize_t n = write(to, k->data + k->off, k->len - k->off);
        if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
        k->off += (size_t)n;
        d->held -= (size_t)n;
        if (k->off < k->len) return 0;
        d->head = k->next;
        if (!d->head) d->tail = NULL;
        free(k);
    }
    if (d->eof && !d->head && !d->shut) {
        shutdown(to, SHUT_WR);
        d->shut = 1;
    }
    return 0;
}

static void reply_stats(void) {
    printf("ok conns=%d accepted=%" PRIu64 " bytes_up=%" PRIu64 " bytes_down=%" PRIu64 " mode=%s\n",
           nconns(), accepted, bytes_up, bytes_down, mode_names[mode]);
}

static void command(char *line) {
    char *cmd = strtok(line, " \t\r\n"), *arg = strtok(NULL, " \t\r\n");
    if (!cmd) return;
    if (strcmp(cmd, "pass") == 0) {
        mode = M_PASS;
        for (int i = 0; i < MAX_CONNS; i++)   /* held chunks are due now */
            for (int s = 0; conns[i] && s < 2; s++)
                for (chunk *k = conns[i]->d[s].head; k; k = k->next) k->due_ms = 0;
        puts("ok pass");
    } else if (strcmp(cmd, "delay") == 0 && arg) {
        char *end;
        unsigned long v = strtoul(arg, &end, 10);
        if (*end || v > 3600000) {
            puts("error delay takes MS (0-3600000)");
        } else {
            mode = v ? M_DELAY : M_PASS;
            delay_ms = v;
            printf("ok delay %lu\n", v);
        }
    } else if (strcmp(cmd, "stall") == 0) {
        mode = M_STALL;
        puts("ok stall");
    } else if (strcmp(cmd, "blackhole") == 0) {
        mode = M_BLACKHOLE;
        for (int i = 0; i < MAX_CONNS; i++)   /* nothing held goes out either */
            for (int s = 0; conns[i] && s < 2; s++) {
                for (chunk *k = conns[i]->d[s].head, *n; k; k = n) {
                    n = k->next;
                    free(k);
                }
                conns[i]->d[s] = (dir){.eof = conns[i]->d[s].eof, .shut = conns[i]->d[s].shut};
            }
        puts("ok blackhole");
    } else if (strcmp(cmd, "cut") == 0) {
        int n = 0;
        for (int i = 0; i < MAX_CONNS; i++)
            if (conns[i]) {
                conn_close(i, 1);
                n++;
            }
        printf("ok cut %d\n", n);
    } else if (strcmp(cmd, "stats") == 0) {
        reply_stats();
    } else {
        printf("error unknown command '%s' (pass, delay MS, stall, blackhole, cut, stats)\n", cmd);
    }
    fflush(stdout);
}

static int parse_addr(const char *s, struct sockaddr_in *a, int need_port) {
    char host[64];
    const char *colon = strrchr(s, ':');
    size_t hl = colon ? (size_t)(colon - s) : strlen(s);
    if (hl == 0 || hl >= sizeof host || (need_port && !colon)) return -1;
    memcpy(host, s, hl);
    host[hl] = 0;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -1;
    if (colon) {
        char *end;
        unsigned long p = strtoul(colon + 1, &end, 10);
        if (*end || p == 0 || p > 65535) return -1;
        a->sin_port = htons((uint16_t)p);
    }
    return 0;
}

int main(int argc, char **argv) {
    struct sockaddr_in la, up;
    if (argc != 3 || parse_addr(argv[1], &la, 0) < 0 || parse_addr(argv[2], &up, 1) < 0) {
        fprintf(stderr, "usage: kvmux-faultproxy LISTEN_ADDR UPSTREAM_ADDR:PORT (IPv4 literals)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    socklen_t alen = sizeof la;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&la, sizeof la) < 0 || listen(lfd, 128) < 0 ||
        getsockname(lfd, (struct sockaddr *)&la, &alen) < 0) {
        perror("kvmux-faultproxy: listen");
        return 1;
    }
    char ab[INET_ADDRSTRLEN];
    printf("listening on %s:%u\n", inet_ntop(AF_INET, &la.sin_addr, ab, sizeof ab), ntohs(la.sin_port));
    fflush(stdout);
    char line[256];
    size_t llen = 0;
    struct pollfd pf[2 + 2 * MAX_CONNS];
    int map[2 + 2 * MAX_CONNS];
    while (!stop) {
        uint64_t now = now_ms(), next = UINT64_MAX;
        int n = 0;
        pf[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
        pf[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (int i = 0; i < MAX_CONNS; i++) {
            conn *c = conns[i];
            if (!c) continue;
            for (int s = 0; s < 2; s++) {
                short ev = 0;
                if (!c->d[s].eof && c->d[s].held < MAX_HELD) ev |= POLLIN;
                dir *o = &c->d[1 - s];   /* what goes out on fd[s] */
                if (o->head && mode != M_STALL) {
                    if (o->head->due_ms <= now) ev |= POLLOUT;
                    else if (o->head->due_ms < next) next = o->head->due_ms;
                }
                map[n] = i * 2 + s;
                /* No interest: leave the fd out, so a hung-up peer's
                 * POLLHUP does not spin the loop. */
                pf[n++] = (struct pollfd){.fd = ev ? c->fd[s] : -1, .events = ev};
            }
        }
        int timeout = next == UINT64_MAX ? 1000 : (int)(next - now) + 1;
        if (poll(pf, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR) continue;
            perror("kvmux-faultproxy: poll");
            return 1;
        }
        if (pf[0].revents) {
            ssize_t r = read(0, line + llen, sizeof line - 1 - llen);
            if (r <= 0) break;
            llen += (size_t)r;
            line[llen] = 0;
            char *nl;
            while ((nl = strchr(line, '\n'))) {
                *nl = 0;
                command(line);
                llen -= (size_t)(nl + 1 - line);
                memmove(line, nl + 1, llen + 1);
            }
            if (llen == sizeof line - 1) llen = 0;   /* an overlong line: drop it */
        }
        if (pf[1].revents & POLLIN) do_accept(lfd, &up);
        now = now_ms();
        for (int j = 2; j < n; j++) {
            int i = map[j] / 2, s = map[j] % 2;
            conn *c = conns[i];
            if (!c) continue;   /* cut by a command above */
            int bad = 0;
            if (pf[j].revents & (POLLIN | POLLHUP | POLLERR)) bad = do_read(c, s) < 0;
            if (!bad) bad = do_write(c, 1 - s, now) < 0;
            if (!bad && c->d[0].shut && c->d[1].shut) bad = 2;
            if (bad) conn_close(i, bad == 1);
        }
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i]) conn_close(i, 0);
    close(lfd);
    return 0;
}
