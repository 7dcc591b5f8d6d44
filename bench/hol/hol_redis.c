/* bench/hol/hol_redis.c: head-of-line blocking measurement against
 * redis-server, the counterpart of hol_kvmux.c.
 *
 * One TCP connection speaking RESP over plain sockets (no hiredis),
 * shared the way a pipelining Redis client shares it: any thread may send
 * a command (whole, under a write lock, so commands never interleave on
 * the wire) and a reader thread matches replies to senders in FIFO order,
 * since RESP answers in order. The main thread issues 3-byte GETs one at a
 * time and logs each round trip:
 *   phase idle: for -d seconds with nothing else on the connection;
 *   phase busy: while another thread runs a -s MiB SET and then a GET of
 *     that value (checked byte for byte), -r times. A small GET sent while
 *     the SET is being written waits for the whole command to go out; one
 *     sent after the big GET waits for the whole 64 MiB reply: the value is
 *     pipelined ahead of the small GETs on the one connection, as the measurement
 *     asks. Only small GETs issued while the big SET or the big GET is in
 *     flight are logged (as in hol_kvmux.c).
 * Prints one RESULT line per phase (see hol_common.h).
 * What it is not: a general RESP client (it parses only the reply types
 * GET and SET produce: simple strings, errors, integers, bulk strings). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "hol_common.h"

#define IO_TIMEOUT_S 60   /* socket send/receive timeout: every wait is bounded */
#define MAX_PENDING 16    /* requests in flight on the connection (we need 2) */
#define RBUF_SIZE (256 * 1024)

/* One command awaiting its reply. */
typedef struct req {
    int done;       /* set by the reader, under g.mu */
    int ok;         /* the reply was a bulk string, +OK or an integer */
    uint8_t *data;  /* bulk payload (malloc'ed, owned by the sender after done) */
    size_t len;
} req;

static struct {
    int fd;
    pthread_mutex_t wmu;  /* one command on the wire at a time */
    pthread_mutex_t mu;   /* the FIFO below, req.done, failed */
    pthread_cond_t cv;
    req *fifo[MAX_PENDING];
    size_t head, count;
    int failed;           /* the connection broke: no more replies */
    uint8_t rbuf[RBUF_SIZE];
    size_t rpos, rlen;
} g = {.fd = -1, .wmu = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
       .cv = PTHREAD_COND_INITIALIZER};

/* Write all of iov[0..n) (modified); 0 or -1. */
static int write_all(struct iovec *iov, int n) {
    while (n > 0) {
        ssize_t w = writev(g.fd, iov, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Send "cmd key [value]" as a RESP array and wait for its reply in r.
 * The reply's place in the FIFO is taken under the write lock, so it
 * matches the command's place on the wire. Returns 0 (r filled) or -1. */
static int command(const char *cmd, const char *key, const void *val, size_t vlen, req *r) {
    char hdr[256];
    int hn;
    if (val)
        hn = snprintf(hdr, sizeof hdr, "*3\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(cmd),
                      cmd, strlen(key), key, vlen);
    else
        hn = snprintf(hdr, sizeof hdr, "*2\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n", strlen(cmd), cmd,
                      strlen(key), key);
    struct iovec iov[3] = {{hdr, (size_t)hn}, {(void *)val, vlen}, {"\r\n", 2}};
    *r = (req){0};
    pthread_mutex_lock(&g.wmu);
    pthread_mutex_lock(&g.mu);
    int full = g.count == MAX_PENDING || g.failed;
    if (!full) g.fifo[(g.head + g.count++) % MAX_PENDING] = r;
    pthread_mutex_unlock(&g.mu);
    int rc = full ? -1 : write_all(iov, val ? 3 : 1);
    pthread_mutex_unlock(&g.wmu);
    /* A failed write leaves r queued: end the connection so the reader
     * fails it, and wait for that below before r goes out of scope. */
    if (rc != 0) shutdown(g.fd, SHUT_RDWR);
    pthread_mutex_lock(&g.mu);
    while (!r->done && !g.failed) {
        /* Bounded: the reader's receive timeout ends the connection. */
        pthread_cond_wait(&g.cv, &g.mu);
    }
    int ok = r->done && r->ok;
    pthread_mutex_unlock(&g.mu);
    return ok ? 0 : -1;
}

/* Buffered reads for the reader thread. 0 or -1 (EOF, error, timeout). */
static int fill(void) {
    if (g.rpos == g.rlen) g.rpos = g.rlen = 0;
    for (;;) {
        ssize_t n = read(g.fd, g.rbuf + g.rlen, RBUF_SIZE - g.rlen);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        g.rlen += (size_t)n;
        return 0;
    }
}

/* Read one CRLF-terminated line (at most cap-1 bytes) into line. */
static int read_line(char *line, size_t cap) {
    size_t n = 0;
    for (;;) {
        if (g.rpos == g.rlen && fill() != 0) return -1;
        char ch = (char)g.rbuf[g.rpos++];
        if (ch == '\n' && n > 0 && line[n - 1] == '\r') {
            line[n - 1] = '\0';
            return 0;
        }
        if (n + 1 >= cap) return -1;
        line[n++] = ch;
    }
}

/* Read exactly len bytes into dst. */
static int read_exact(uint8_t *dst, size_t len) {
    while (len > 0) {
        if (g.rpos == g.rlen && fill() != 0) return -1;
        size_t k = g.rlen - g.rpos < len ? g.rlen - g.rpos : len;
        memcpy(dst, g.rbuf + g.rpos, k);
        g.rpos += k;
        dst += k;
        len -= k;
    }
    return 0;
}

/* The reader thread: parse replies in order, hand each to the oldest
 * waiting request. On any error (or a reply nobody waits for) it marks
 * the connection failed and wakes everyone. */
static void *reader(void *unused) {
    (void)unused;
    char line[128];
    for (;;) {
        if (read_line(line, sizeof line) != 0) break;
        int ok = 0;
        uint8_t *data = NULL;
        size_t len = 0;
        if (line[0] == '$') {
            long long n = strtoll(line + 1, NULL, 10);
            if (n > (long long)(512 * (size_t)HOL_MiB)) break;
            if (n >= 0) {
                len = (size_t)n;
                data = malloc(len + 2);
                if (!data || read_exact(data, len + 2) != 0) {
                    free(data);
                    break;
                }
                ok = 1;
            }
        } else if (line[0] == '+' || line[0] == ':') {
            ok = 1;
        } else if (line[0] == '-') {
            fprintf(stderr, "hol_redis: server error: %s\n", line + 1);
        } else {
            break;
        }
        pthread_mutex_lock(&g.mu);
        if (g.count == 0) {
            pthread_mutex_unlock(&g.mu);
            free(data);
            break;
        }
        req *r = g.fifo[g.head];
        g.head = (g.head + 1) % MAX_PENDING;
        g.count--;
        r->ok = ok;
        r->data = data;
        r->len = len;
        r->done = 1;
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
    }
    pthread_mutex_lock(&g.mu);
    g.failed = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

/* One small GET, timed into l (if not NULL). 0, or -1 after saying why. */
static int small_get(lat_log *l) {
    req r;
    int64_t t = now_us();
    int rc = command("GET", "s", NULL, 0, &r);
    int64_t dt = now_us() - t;
    int ok = rc == 0 && r.len == 3 && memcmp(r.data, "abc", 3) == 0;
    free(r.data);
    if (!ok) {
        fprintf(stderr, "hol_redis: small GET failed\n");
        return -1;
    }
    if (l) lat_add(l, dt);
    return 0;
}

typedef struct big_arg {
    const uint8_t *v;
    size_t len;
    atomic_int busy; /* 1 while a big SET or GET is in flight */
    atomic_int done; /* the round is over */
    int rc;
    double set_ms, get_ms;
} big_arg;

/* One round: the big SET then the big GET, timed; busy is raised while
 * each is in flight (not in the gap between them, nor during the check),
 * done at the end. */
static void *big_round(void *p) {
    big_arg *a = p;
    req r;
    atomic_store(&a->busy, 1);
    int64_t t = now_us();
    int rc = command("SET", "huge", a->v, a->len, &r);
    a->set_ms = (double)(now_us() - t) / 1000.0;
    atomic_store(&a->busy, 0);
    free(r.data);
    if (rc == 0) {
        atomic_store(&a->busy, 1);
        t = now_us();
        rc = command("GET", "huge", NULL, 0, &r);
        a->get_ms = (double)(now_us() - t) / 1000.0;
        /* The transfer is over: the check below is not part of it. */
        atomic_store(&a->busy, 0);
        if (rc == 0 && (r.len != a->len || memcmp(r.data, a->v, a->len) != 0)) {
            fprintf(stderr, "hol_redis: big GET returned the wrong bytes\n");
            rc = -1;
        }
        free(r.data);
    }
    a->rc = rc;
    atomic_store(&a->busy, 0);
    atomic_store(&a->done, 1);
    return NULL;
}

int main(int argc, char **argv) {
    hol_args args;
    parse_args(argc, argv, &args);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)args.port)};
    inet_pton(AF_INET, args.host, &sa.sin_addr);
    g.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    int one = 1;
    if (g.fd < 0 || setsockopt(g.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) ||
        setsockopt(g.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) ||
        setsockopt(g.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
        connect(g.fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("hol_redis: connect");
        return 1;
    }
    pthread_t rth;
    if (pthread_create(&rth, NULL, reader, NULL) != 0) return 1;
    lat_log idle, busy;
    uint8_t *v = pattern(args.big);
    if (lat_init(&idle) || lat_init(&busy) || !v) {
        fprintf(stderr, "hol_redis: out of memory\n");
        return 1;
    }
    req r;
    int fail = command("SET", "s", "abc", 3, &r) != 0;
    free(r.data);
    for (int i = 0; i < 1000 && !fail; i++) fail = small_get(NULL) != 0;

    int64_t end = now_us() + (int64_t)(args.idle_s * 1e6);
    while (!fail && now_us() < end && idle.n < HOL_MAX_SAMPLES) fail = small_get(&idle) != 0;

    double set_ms = 0, get_ms = 0;
    for (unsigned i = 0; i < args.rounds && !fail; i++) {
        big_arg a = {.v = v, .len = args.big, .rc = 0};
        atomic_init(&a.busy, 0);
        atomic_init(&a.done, 0);
        pthread_t th;
        if (pthread_create(&th, NULL, big_round, &a) != 0) {
            fail = 1;
            break;
        }
        while (!fail && !atomic_load(&a.done))
            fail = small_get(atomic_load(&a.busy) ? &busy : NULL) != 0;
        pthread_join(th, NULL);
        if (a.rc != 0) {
            fprintf(stderr, "hol_redis: round %u failed\n", i);
            fail = 1;
        }
        set_ms += a.set_ms;
        get_ms += a.get_ms;
        fprintf(stderr, "hol_redis: round %u: %zu MiB SET %.1f ms, GET %.1f ms\n", i,
                args.big / HOL_MiB, a.set_ms, a.get_ms);
    }
    if (!fail) {
        report("redis", "idle", &idle, -1, -1);
        report("redis", "busy", &busy, set_ms / args.rounds, get_ms / args.rounds);
    }
    shutdown(g.fd, SHUT_RDWR); /* ends the reader */
    pthread_join(rth, NULL);
    close(g.fd);
    free(v);
    free(idle.us);
    free(busy.us);
    return fail ? 1 : 0;
}
