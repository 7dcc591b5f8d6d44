/* libFuzzer harness for libkvmux's response path: the bytes a server sends
 * go through the client's real code -- HELLO_ACK handling
 * (kvmux__handshake_reply), frame decoding, session checks, RESPONSE
 * matching to pending ids, fragmented replies (MORE / CONTINUATION and the
 * windows), WINDOW_UPDATE, GOAWAY, PING/PONG, ERROR -- in v1 and v2.
 *
 * How: the public event-loop mode (kvmux_async_connect, loop.c) over a
 * real loopback TCP connection to a listener this harness owns. The
 * harness plays the server: it accepts, discards what the client writes
 * (checking it is well-formed frames), writes the fuzzer's bytes, and
 * drives kvmux_async_handle_read/_write/_timeout itself. Single-threaded
 * and deterministic: no timer is allowed to fire on its own (the request
 * timeouts are far longer than one run), keepalive is off.
 *
 * Pending requests: nine async requests are submitted before the
 * handshake, with first_request_id 1 so their ids are 1..9 in this order:
 * GET, SET, DEL, INCR, CAS, WAIT, GET, STATS, PING -- the ids the vectors of
 * tests/vectors/frames.hex use for the same operations, so the seeds
 * complete real requests and mutations reach unknown, late and duplicate
 * ids. Then a GET through a future (id 10): the other way a request
 * completes. A callback with a result may submit one more GET (bounded),
 * so ids are reused across the run.
 *
 * Input: byte 0 is the control byte:
 *   bits 0..1  0: the input starts with the server's first frame itself;
 *              1: a valid v1 HELLO_ACK is prepended; 2 or 3: a valid v2 one.
 *   bit 2      the client proposes v1 only (max_protocol_version 1).
 *   bits 3..5  n: the input is written in chunks of 1 + n*n bytes, with a
 *              handle_read after each (0: one write), so frames split
 *              across reads are reached.
 *   bit 6      between chunks, cancel request 8 (STATS) and run handle_timeout
 *              (which delivers the KVMUX_ECANCELED callback).
 *   bit 7      the first callback calls kvmux_close from inside itself.
 * The rest is the server's byte stream. At the end the harness closes its
 * end (the client sees EOF) or, when the client is still open, calls
 * kvmux_close.
 *
 * Oracle, beyond "no crash, no leak, no UB": every submit that returned 0
 * got exactly one callback (the future: complete once the client is
 * closed, with a result that has a value only on success), no callback ran twice, a reply's value is
 * readable and NUL-terminated (and absent on failures), and the client wrote only well-formed
 * frames (kvmux_frame_decode accepts them; a trailing partial frame is
 * allowed only if the socket stopped taking bytes).
 *
 * KVMUX_FUZZ_TRACE=1 in the environment prints every callback's result
 * (to see what a seed or a crash input does).
 *
 * Not part of ctest: .ci/run and tests/fuzz/run_fuzz.sh build it with
 * clang -fsanitize=fuzzer,address,undefined against the client sources. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvmux.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The vectors' "hello_ack" / "hello_ack_v2" (tests/vectors/frames.hex):
 * 2 MiB frames, 128 credits, 4 KiB keys, 1 MiB values; v2 adds a 64 KiB
 * message window and a 1 MiB connection window. */
static const uint8_t ACK_V1[] = {
    0x6b, 0x01, 0x02, 0x00, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x03, 0, 0, 0, 0x1b,
    's', 'r', 'v',
    0x00, 0x01, 0x00, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x80,
    0x00, 0x03, 0x00, 0x00, 0x10, 0x00, 0x00, 0x04, 0x00, 0x10, 0x00, 0x00};
static const uint8_t ACK_V2[] = {
    0x6b, 0x01, 0x02, 0x00, 0, 0, 0, 0, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0x27,
    's', 'r', 'v',
    0x00, 0x01, 0x00, 0x20, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x80,
    0x00, 0x03, 0x00, 0x00, 0x10, 0x00, 0x00, 0x04, 0x04, 0x00, 0x00, 0x00,
    0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x00, 0x10, 0x00, 0x00};

#define NREQ 16        /* requests submitted before the handshake */
#define MAX_EXTRA 8    /* GETs submitted from callbacks */
#define MAX_TRACK (NREQ + MAX_EXTRA)
#define OUT_CAP (1u << 20) /* client output kept for the frame check */

static uint16_t g_port;
static int g_listen = -1;

/* One submitted request. */
typedef struct track {
    int submitted;   /* the submit returned 0 */
    int calls;       /* callbacks run */
    int result;
    kvmux_op op;
} track;

typedef struct run {
    track t[MAX_TRACK];
    int ntrack;
    int extra;          /* GETs submitted from callbacks */
    int close_in_cb;    /* bit 7: the first callback closes the client */
    int closed;         /* kvmux_close was called */
    kvmux_client *c;
    uint8_t *out;       /* what the client wrote */
    size_t out_len;
    int out_stuck;      /* the client's socket stopped taking bytes */
    int status_calls;
    int trace;          /* KVMUX_FUZZ_TRACE set: print every callback */
} run;

static run R;

static void hook_nop(void *d) { (void)d; }
static void hook_timer(void *d, int64_t ms) { (void)d; (void)ms; }

static void on_status(kvmux_client *c, int code, void *ud) {
    (void)c; (void)code; (void)ud;
    R.status_calls++;
    if (R.status_calls > 2) abort(); /* connected, then lost: at most twice */
}

static int submit(kvmux_op op);

static void on_reply(kvmux_client *c, int result, kvmux_reply *reply, void *ud) {
    track *t = &R.t[(intptr_t)ud];
    if (!reply) abort();
    if (t < R.t || t >= R.t + R.ntrack || !t->submitted) abort();
    if (t->calls++ != 0) abort(); /* exactly once */
    t->result = result;
    if (R.trace)
        fprintf(stderr, "cb req %d op %d: %d (%s) len %zu\n", (int)(intptr_t)ud, (int)t->op,
                result, kvmux_strerror(result), reply->value_len);
    /* A success only for what can succeed; value bytes readable. */
    if (result == 0 || result == KVMUX_EVERSION) {
        if (reply->value) {
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < reply->value_len; i++) sink ^= reply->value[i];
            if (reply->value[reply->value_len] != 0) abort(); /* NUL-terminated */
            (void)sink;
        }
        /* Only CAS can see a version mismatch (the reader refuses it for
         * any other op as a protocol error). */
        if (result == KVMUX_EVERSION && t->op != KVMUX_CAS) abort();
    } else if (result == KVMUX_EWRONGSHARD || result == KVMUX_ETRYAGAIN) {
        /* Not processed; the reply carries the WRONG_SHARD / TRY_AGAIN
         * value (kvmux.h), whatever the server sent: readable. */
        if (reply->value_len && !reply->value) abort();
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < reply->value_len; i++) sink ^= reply->value[i];
        (void)sink;
    } else if (reply->value || reply->value_len) {
        abort(); /* zeroed on error */
    }
    if (R.close_in_cb && !R.closed) {
        R.closed = 1;
        kvmux_close(c);
        return;
    }
    /* Reuse ids: a completed request makes room for one more. */
    if (!R.closed && !kvmux_is_fatal(result) && R.extra < MAX_EXTRA) {
        R.extra++;
        submit(KVMUX_GET);
    }
}

static int submit(kvmux_op op) {
    if (R.ntrack >= MAX_TRACK) return -1;
    int i = R.ntrack++;
    kvmux_request q;
    memset(&q, 0, sizeof q);
    q.op = op;
    q.key = "foo";
    q.key_len = 3;
    if (op == KVMUX_SET || op == KVMUX_CAS) {
        q.value = "bar";
        q.value_len = 3;
        q.ttl_ms = 60000;
        q.version = 7;
    }
    if (op == KVMUX_INCR) q.delta = -5;
    if (op == KVMUX_WAIT) {
        q.version = 7;
        q.wait_ms = 1000;
    }
    if (op == KVMUX_EXPIRE) q.ttl_ms = 60000;
    if (op == KVMUX_SCAN) q.count = 10;
    if (op == KVMUX_SLOWLOG) q.count = 10;
    if (op == KVMUX_STATS || op == KVMUX_PING || op == KVMUX_SCAN || op == KVMUX_SLOWLOG ||
        op == KVMUX_CLIENT_LIST) {
        q.key = NULL;
        q.key_len = 0;
    }
    R.t[i].op = op;
    int rc = kvmux_call_async(R.c, &q, 600000, on_reply, (void *)(intptr_t)i);
    R.t[i].submitted = rc == 0;
    return rc;
}

/* Read everything the client wrote so far into R.out. */
static void drain(int sfd) {
    uint8_t buf[65536];
    for (;;) {
        ssize_t n = recv(sfd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) return;
        size_t k = (size_t)n;
        if (R.out_len + k > OUT_CAP) k = OUT_CAP - R.out_len;
        memcpy(R.out + R.out_len, buf, k);
        R.out_len += k;
    }
}

/* Every byte the client wrote is a well-formed frame. */
static void check_client_output(void) {
    size_t off = 0;
    while (off < R.out_len) {
        kvmux_frame f;
        int r = kvmux_frame_decode(R.out + off, R.out_len - off, UINT32_MAX, &f);
        if (r == 0) {
            if (R.out_len == OUT_CAP || R.out_stuck) return;
            abort(); /* half a frame written, and the socket had room */
        }
        if (r < 0) abort(); /* the client wrote a malformed frame */
        off += (size_t)r;
    }
}

static void setup(void) {
    g_listen = socket(AF_INET, SOCK_STREAM, 0);
    if (g_listen < 0) abort();
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(g_listen, (struct sockaddr *)&a, sizeof a) != 0 || listen(g_listen, 16) != 0 ||
        getsockname(g_listen, (struct sockaddr *)&a, &al) != 0)
        abort();
    g_port = ntohs(a.sin_port);
    R.out = malloc(OUT_CAP);
    if (!R.out) abort();
}

/* The client's event loop, done by hand: the read, and a write when the
 * client has something queued (a write with nothing queued is harmless). */
static void pump(int sfd) {
    if (!R.closed) kvmux_async_handle_read(R.c);
    if (!R.closed) kvmux_async_handle_write(R.c);
    drain(sfd);
}

/* Write n bytes as the server; the client reads between partial writes.
 * Returns 0, or -1 when the client no longer reads (failed or closed). */
static int serve(int sfd, const uint8_t *p, size_t n) {
    int stalls = 0;
    while (n > 0) {
        ssize_t w = send(sfd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            stalls = 0;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1; /* the client closed its end */
        } else if (++stalls > 4) {
            return -1; /* the client stopped reading (it failed) */
        }
        pump(sfd);
    }
    pump(sfd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_listen < 0) setup();
    if (size < 1) return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    uint8_t *out = R.out;
    memset(&R, 0, sizeof R);
    R.out = out;
    R.close_in_cb = (ctl & 0x80) != 0;
    R.trace = getenv("KVMUX_FUZZ_TRACE") != NULL;

    kvmux_options o;
    kvmux_options_init(&o);
    o.first_request_id = 1;
    o.max_frame_size = 64 * 1024; /* small, so the limits are reached */
    o.max_value_size = 256 * 1024;
    o.max_protocol_version = (ctl & 4) ? 1 : 2;
    o.connect_timeout_ms = 600000;
    o.request_timeout_ms = 600000;
    o.queue_limit = 64;
    o.client_name = "fuzz";
    if (kvmux_async_connect(&R.c, "127.0.0.1", g_port, &o) != 0) abort();
    struct pollfd pf = {.fd = g_listen, .events = POLLIN};
    if (poll(&pf, 1, 5000) != 1) abort();
    int sfd = accept(g_listen, NULL, NULL);
    if (sfd < 0) abort();
    kvmux_async_hooks h = {.add_read = hook_nop, .del_read = hook_nop, .add_write = hook_nop,
                           .del_write = hook_nop, .schedule_timer = hook_timer};
    if (kvmux_async_attach(R.c, &h) != 0) abort();
    kvmux_async_set_status_cb(R.c, on_status, NULL);
    const kvmux_op ops[NREQ] = {KVMUX_GET, KVMUX_SET,  KVMUX_DEL,   KVMUX_INCR, KVMUX_CAS,
                                KVMUX_WAIT, KVMUX_GET, KVMUX_STATS, KVMUX_PING,
                                /* ids 10..14: the key-space ops (their
                                   reply shapes: TTL's two u64, SCAN's
                                   key list) */
                                KVMUX_EXISTS, KVMUX_TTL, KVMUX_EXPIRE, KVMUX_PERSIST,
                                KVMUX_SCAN,
                                /* the introspection ops: u64 + text */
                                KVMUX_SLOWLOG, KVMUX_CLIENT_LIST};
    kvmux_handle h8 = 0;
    for (int i = 0; i < NREQ; i++) {
        if (ops[i] == KVMUX_STATS) {
            /* This one with a handle, for the cancel of bit 6. */
            int k = R.ntrack++;
            kvmux_request q = {.op = ops[i]};
            R.t[k].op = ops[i];
            R.t[k].submitted = kvmux_call_async_handle(R.c, &q, 600000, on_reply,
                                                       (void *)(intptr_t)k, &h8) == 0;
        } else {
            submit(ops[i]);
        }
    }
    kvmux_future *fut = NULL;
    {
        kvmux_request q = {.op = KVMUX_GET, .key = "fut", .key_len = 3};
        if (kvmux_call_future(R.c, &q, 600000, &fut) != 0) fut = NULL;
    }
    kvmux_async_handle_write(R.c); /* the connect finishes, HELLO goes out */
    drain(sfd);

    int mode = ctl & 3;
    int live = 0;
    if (mode == 1) live = serve(sfd, ACK_V1, sizeof ACK_V1);
    else if (mode >= 2) live = serve(sfd, ACK_V2, sizeof ACK_V2);
    size_t chunk = ((ctl >> 3) & 7) ? 1 + ((ctl >> 3) & 7) * ((ctl >> 3) & 7) : size;
    if (chunk == 0) chunk = 1;
    size_t off = 0;
    int cancelled = 0;
    while (live == 0 && off < size && !R.closed) {
        size_t n = size - off < chunk ? size - off : chunk;
        live = serve(sfd, data + off, n);
        off += n;
        if ((ctl & 0x40) && !cancelled && !R.closed) {
            cancelled = 1;
            int rc = kvmux_cancel(R.c, h8);
            if (rc != 0 && rc != KVMUX_ENOTFOUND) abort();
            kvmux_async_handle_timeout(R.c);
        }
    }
    if (live != 0) R.out_stuck = 1;
    /* End of the server's stream: EOF, then close what is left. */
    shutdown(sfd, SHUT_WR);
    if (!R.closed) kvmux_async_handle_read(R.c);
    drain(sfd);
    if (!R.closed) {
        R.closed = 1;
        kvmux_close(R.c);
    }
    /* Abortive close: no TIME_WAIT left behind per run (hundreds of
     * thousands of runs would otherwise pile them up on loopback). */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(sfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(sfd);

    if (fut) {
        if (!kvmux_future_poll(fut)) abort(); /* kvmux_close completes it */
        kvmux_reply rep;
        int frc = kvmux_future_result(fut, &rep);
        if (frc != 0 && rep.value) abort();
        if (rep.value && rep.value[rep.value_len] != 0) abort();
        kvmux_reply_free(&rep);
        kvmux_future_free(fut);
    }
    for (int i = 0; i < R.ntrack; i++) {
        if (R.t[i].submitted && R.t[i].calls != 1) abort();
        if (!R.t[i].submitted && R.t[i].calls != 0) abort();
    }
    check_client_output();
    return 0;
}
