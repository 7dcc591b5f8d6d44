/* Peer TLS transport for C-Raft (transport.h; docs/DESIGN.md "Peer TLS").
 *
 * A connection (pconn) goes RESOLVE -> CONNECT (outgoing only) ->
 * HANDSHAKE -> PREAMBLE (incoming only) -> PUMP -> CLOSING. Until PUMP it
 * belongs to this transport and its timer bounds it; in PUMP raft_uv owns
 * the other end of the socketpair and either side's EOF or error closes
 * the whole connection. A connection is freed only from the last of its
 * handles' close callbacks (never from inside its own read callback). */
#include "transport.h"

#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "hostport.h"
#include "log.h"
#include "monotime.h"
#include "peers.h"
#include "tls_common.h"

enum pstate { ST_RESOLVE, ST_CONNECT, ST_HANDSHAKE, ST_PREAMBLE, ST_PUMP, ST_CLOSING };

/* Preamble: magic, u64 id, u16 address length, address (no NUL). */
#define PRE_MAGIC "KVMXRFT1"
#define PRE_FIXED (8u + 8u + 2u)
#define PRE_MAX (PRE_FIXED + KVMUX_PEER_ADDR_MAX)
#define READ_BUF (64u * 1024)
#define PUMP_CHUNK (16u * 1024) /* one TLS record's plaintext at most */

typedef struct ptls ptls;

typedef struct pconn {
    ptls *t;
    struct pconn *prev, *next;
    enum pstate state;
    int outgoing;
    int closes;                  /* handle close callbacks still due */
    int gai_pending;             /* uv_getaddrinfo callback still due */
    int pipe_open, tcp_paused, pipe_paused, counted;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_pipe_t pipe;              /* our end of the socketpair (PUMP) */
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    struct raft_uv_connect *req; /* outgoing, until its callback ran */
    raft_uv_connect_cb req_cb;
    SSL *ssl;
    BIO *rbio, *wbio;            /* network side, in memory */
    size_t tcp_queued, pipe_queued; /* bytes in uv_write requests */
    uint8_t pre[PRE_MAX];
    size_t pre_len;
    char peer[80];               /* "ip:port" (logs) or the target address */
} pconn;

typedef struct wreq {
    uv_write_t w;
    pconn *c;
    int to_tcp;
    size_t len;
    char data[];
} wreq;

struct ptls {
    struct raft_uv_transport *transport;
    uv_loop_t *loop;
    SSL_CTX *ctx;
    unsigned handshake_ms;
    _Atomic uint64_t *refused;
    raft_id id;
    char address[KVMUX_PEER_ADDR_MAX];
    uv_tcp_t listener;
    int listening;               /* listener open (its close is due) */
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    int closing, released;
    pconn *conns;
    unsigned nconns, handshaking;
    uint64_t last_log_ms, unlogged; /* refusal log rate limit */
    char rbuf[READ_BUF];         /* one read at a time: the loop's thread */
};

static void conn_close(pconn *c, int status);
static void pump_in(pconn *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- lifetime ---- */

static void ptls_maybe_done(ptls *t) {
    if (t->listening || t->nconns) return;
    if (t->closing && t->close_cb) {
        raft_uv_transport_close_cb cb = t->close_cb;
        t->close_cb = NULL;
        cb(t->transport);
    }
    if (t->released) {
        SSL_CTX_free(t->ctx);
        free(t);
    }
}

static void conn_maybe_free(pconn *c) {
    if (c->state != ST_CLOSING || c->closes || c->gai_pending) return;
    ptls *t = c->t;
    if (c->prev) c->prev->next = c->next;
    else t->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    t->nconns--;
    SSL_free(c->ssl); /* frees both BIOs */
    free(c);
    ptls_maybe_done(t);
}

static void on_handle_closed(uv_handle_t *h) {
    pconn *c = h->data;
    c->closes--;
    conn_maybe_free(c);
}

/* Count and log (at most once a second per transport) a refused peer. */
static void refuse(pconn *c, const char *why) {
    ptls *t = c->t;
    if (!c->counted) {
        c->counted = 1;
        atomic_fetch_add(t->refused, 1);
        uint64_t now = kvmux_clock_ms();
        if (now - t->last_log_ms >= 1000) {
            if (t->unlogged)
                KVMUX_LOG_W("replica: peer %s refused (%s); %llu more refusals since the last "
                            "such line", c->peer, why, (unsigned long long)t->unlogged);
            else
                KVMUX_LOG_W("replica: peer %s refused (%s)", c->peer, why);
            t->last_log_ms = now;
            t->unlogged = 0;
        } else {
            t->unlogged++;
        }
    }
    conn_close(c, RAFT_NOCONNECTION);
}

/* The OpenSSL reason for a failed handshake or read, as text. */
static const char *ssl_why(pconn *c, int r, char *buf, size_t len) {
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_SSL) {
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK) {
            ERR_clear_error();
            snprintf(buf, len, "certificate: %s", X509_verify_cert_error_string(v));
            return buf;
        }
        return kvmux__tls_reason(buf, len);
    }
    ERR_clear_error();
    return e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL ? "closed" : "TLS error";
}

/* Close every handle; an outgoing request not yet answered gets status
 * (exactly once). Idempotent. */
static void conn_close(pconn *c, int status) {
    if (c->state == ST_CLOSING) return;
    if (c->state < ST_PUMP && !c->outgoing) c->t->handshaking--;
    c->state = ST_CLOSING;
    if (c->req) {
        struct raft_uv_connect *req = c->req;
        c->req = NULL;
        c->req_cb(req, NULL, status);
    }
    if (c->gai_pending) uv_cancel((uv_req_t *)&c->gai);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    c->closes = 2;
    if (c->pipe_open) {
        uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
        c->closes++;
    }
}

static void on_timeout(uv_timer_t *tm) {
    pconn *c = tm->data;
    if (c->outgoing && c->state < ST_HANDSHAKE) {
        conn_close(c, RAFT_NOCONNECTION); /* unreachable peer: not a refusal */
        return;
    }
    refuse(c, "handshake timed out");
}

static pconn *conn_new(ptls *t, int outgoing) {
    pconn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->ssl = SSL_new(t->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        SSL_free(c->ssl);
        free(c);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    if (outgoing) SSL_set_connect_state(c->ssl);
    else SSL_set_accept_state(c->ssl);
    c->t = t;
    c->outgoing = outgoing;
    c->next = t->conns;
    if (t->conns) t->conns->prev = c;
    t->conns = c;
    t->nconns++;
    uv_tcp_init(t->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(t->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_timeout, t->handshake_ms, 0);
    return c;
}

/* ---- writing ---- */

static void on_written(uv_write_t *w, int status) {
    wreq *r = (wreq *)w;
    pconn *c = r->c;
    size_t half = KVMUX_PTLS_MAX_QUEUE / 2;
    if (r->to_tcp) c->tcp_queued -= r->len;
    else c->pipe_queued -= r->len;
    int to_tcp = r->to_tcp;
    free(r);
    if (c->state == ST_CLOSING) return;
    if (status < 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    /* Resume the side that was paused because this one was full. */
    if (to_tcp && c->pipe_paused && c->tcp_queued <= half) {
        c->pipe_paused = 0;
        uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_pipe_read);
    }
    if (!to_tcp && c->tcp_paused && c->pipe_queued <= half) {
        c->tcp_paused = 0;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read);
    }
}

/* Send r->data[0..n) (r from malloc, sized for at least n) on the TCP
 * socket or the pipe; r is freed when written, or here on failure. */
static int send_wreq(pconn *c, int to_tcp, wreq *r, size_t n) {
    r->c = c;
    r->to_tcp = to_tcp;
    r->len = n;
    uv_buf_t b = uv_buf_init(r->data, (unsigned)n);
    uv_stream_t *s = to_tcp ? (uv_stream_t *)&c->tcp : (uv_stream_t *)&c->pipe;
    if (uv_write(&r->w, s, &b, 1, on_written) != 0) {
        free(r);
        return -1;
    }
    if (to_tcp) c->tcp_queued += n;
    else c->pipe_queued += n;
    return 0;
}

/* Send what OpenSSL produced (handshake records, encrypted data), read
 * straight into the write requests. */
static int flush_tls(pconn *c) {
    size_t pend;
    while ((pend = BIO_ctrl_pending(c->wbio)) > 0) {
        if (pend > INT_MAX) pend = INT_MAX;
        wreq *r = malloc(sizeof *r + pend);
        if (!r) return -1;
        int n = BIO_read(c->wbio, r->data, (int)pend);
        if (n <= 0) {
            free(r);
            return -1;
        }
        if (send_wreq(c, 1, r, (size_t)n) != 0) return -1;
    }
    return 0;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    (void)hint;
    pconn *c = h->data;
    *buf = uv_buf_init(c->t->rbuf, READ_BUF);
}

static void free_raft_handle(uv_handle_t *h) {
    raft_free(h);
}

/* Hand raft_uv its end of a new socketpair; ours becomes c->pipe. */
static uv_stream_t *make_pipe(pconn *c) {
    int fd[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fd) != 0) return NULL;
    uv_pipe_t *theirs = raft_malloc(sizeof *theirs); /* raft_uv frees it with raft_free */
    uv_pipe_init(c->t->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->pipe_open = 1; /* conn_close closes it (and fd[0] once opened) */
    if (uv_pipe_open(&c->pipe, fd[0]) != 0) {
        close(fd[0]);
        close(fd[1]);
        raft_free(theirs);
        return NULL;
    }
    if (!theirs) {
        close(fd[1]);
        return NULL;
    }
    uv_pipe_init(c->t->loop, theirs, 0);
    if (uv_pipe_open(theirs, fd[1]) != 0) {
        close(fd[1]);
        uv_close((uv_handle_t *)theirs, free_raft_handle);
        return NULL;
    }
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_pipe_read);
    return (uv_stream_t *)theirs;
}

static void enter_pump(pconn *c) {
    if (!c->outgoing) c->t->handshaking--;
    c->state = ST_PUMP;
    uv_timer_stop(&c->timer);
}

/* Incoming: the preamble is complete in c->pre. */
static int accept_peer(pconn *c) {
    ptls *t = c->t;
    if (memcmp(c->pre, PRE_MAGIC, 8) != 0) return -1;
    uint64_t id = 0;
    for (int i = 0; i < 8; i++) id = id << 8 | c->pre[8 + i];
    size_t alen = (size_t)c->pre[16] << 8 | c->pre[17];
    if (id == 0 || alen == 0 || alen >= KVMUX_PEER_ADDR_MAX) return -1;
    char addr[KVMUX_PEER_ADDR_MAX];
    memcpy(addr, c->pre + PRE_FIXED, alen);
    addr[alen] = '\0';
    for (size_t i = 0; i < alen; i++)
        if (addr[i] <= ' ' || addr[i] > '~') return -1;
    uv_stream_t *s = make_pipe(c);
    if (!s) {
        conn_close(c, RAFT_NOCONNECTION);
        return 1;
    }
    enter_pump(c);
    t->accept_cb(t->transport, (raft_id)id, addr, s);
    return 0;
}

/* Incoming, PREAMBLE: take preamble bytes from p; returns how many were
 * used (the rest is Raft data), or -1 once the connection is closed. */
static ssize_t take_preamble(pconn *c, const uint8_t *p, size_t n) {
    size_t used = 0;
    for (;;) {
        size_t need = PRE_FIXED;
        if (c->pre_len >= PRE_FIXED) {
            size_t alen = (size_t)c->pre[16] << 8 | c->pre[17];
            if (memcmp(c->pre, PRE_MAGIC, 8) != 0 || alen == 0 || alen >= KVMUX_PEER_ADDR_MAX) {
                refuse(c, "bad preamble");
                return -1;
            }
            need += alen;
        }
        size_t take = need - c->pre_len < n - used ? need - c->pre_len : n - used;
        memcpy(c->pre + c->pre_len, p + used, take);
        c->pre_len += take;
        used += take;
        if (c->pre_len == need && need > PRE_FIXED) break; /* complete */
        if (used == n) return (ssize_t)used;              /* more to come */
    }
    int r = accept_peer(c);
    if (r < 0) refuse(c, "bad preamble");
    return r == 0 ? (ssize_t)used : -1;
}

/* A failed handshake or read: an incoming peer, or an outgoing one whose
 * certificate did not verify, is refused (counted); anything else on an
 * outgoing connection is a plain failure (peer down, or it refused us). */
static void fail(pconn *c, const char *why) {
    if (!c->outgoing || strncmp(why, "certificate", 11) == 0) {
        refuse(c, why);
        return;
    }
    KVMUX_LOG_D("replica: connection to peer %s failed: %s", c->peer, why);
    conn_close(c, RAFT_NOCONNECTION);
}

/* A failed SSL_read (r <= 0 and not WANT_READ): close or refuse c. */
static void read_failed(pconn *c, int r) {
    char why[160];
    ssl_why(c, r, why, sizeof why);
    if (c->state == ST_PREAMBLE) fail(c, why);
    else if (strncmp(why, "certificate", 11) == 0) refuse(c, why);
    else conn_close(c, RAFT_NOCONNECTION);
}

/* Decrypt what has arrived and pass it on (preamble, then raft_uv),
 * decrypting straight into the pipe's write requests. */
static void pump_in(pconn *c) {
    for (;;) {
        wreq *r = malloc(sizeof *r + PUMP_CHUNK);
        if (!r) {
            conn_close(c, RAFT_NOCONNECTION);
            return;
        }
        int n = SSL_read(c->ssl, r->data, (int)PUMP_CHUNK);
        if (n <= 0) {
            free(r);
            if (SSL_get_error(c->ssl, n) == SSL_ERROR_WANT_READ) break;
            read_failed(c, n);
            return;
        }
        size_t off = 0;
        if (c->state == ST_PREAMBLE) {
            ssize_t used = take_preamble(c, (uint8_t *)r->data, (size_t)n);
            if (used < 0) {
                free(r);
                return;
            }
            off = (size_t)used;
        }
        if (off == (size_t)n) {
            free(r);
            continue;
        }
        if (off) memmove(r->data, r->data + off, (size_t)n - off);
        if (send_wreq(c, 0, r, (size_t)n - off) != 0) {
            conn_close(c, RAFT_NOCONNECTION);
            return;
        }
    }
    if (flush_tls(c) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->pipe_queued > KVMUX_PTLS_MAX_QUEUE && !c->tcp_paused) {
        c->tcp_paused = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/* Outgoing: TLS is up; send the preamble and hand the stream over. */
static void connected_tls(pconn *c) {
    ptls *t = c->t;
    uint8_t pre[PRE_MAX];
    size_t alen = strlen(t->address);
    memcpy(pre, PRE_MAGIC, 8);
    for (int i = 0; i < 8; i++) pre[8 + i] = (uint8_t)((uint64_t)t->id >> (56 - 8 * i));
    pre[16] = (uint8_t)(alen >> 8);
    pre[17] = (uint8_t)alen;
    memcpy(pre + PRE_FIXED, t->address, alen);
    uv_stream_t *s = NULL;
    if (SSL_write(c->ssl, pre, (int)(PRE_FIXED + alen)) <= 0 || flush_tls(c) != 0 ||
        !(s = make_pipe(c))) {
        ERR_clear_error();
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    enter_pump(c);
    struct raft_uv_connect *req = c->req;
    c->req = NULL;
    c->req_cb(req, s, 0);
}

static void do_handshake(pconn *c) {
    int r = SSL_do_handshake(c->ssl);
    if (flush_tls(c) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (r == 1) {
        if (c->outgoing) {
            connected_tls(c);
        } else {
            c->state = ST_PREAMBLE;
            pump_in(c); /* the preamble may have come with the Finished */
        }
        return;
    }
    if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ) return;
    char why[160];
    fail(c, ssl_why(c, r, why, sizeof why));
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    pconn *c = s->data;
    if (nread == 0 || c->state == ST_CLOSING) return;
    if (nread < 0) {
        if (c->state < ST_PUMP) fail(c, "closed during the handshake");
        else conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (BIO_write(c->rbio, buf->base, (int)nread) != (int)nread) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->state == ST_HANDSHAKE) do_handshake(c);
    else pump_in(c);
}

/* raft_uv wrote plaintext: encrypt it towards the peer. */
static void on_pipe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    pconn *c = s->data;
    if (nread == 0 || c->state == ST_CLOSING) return;
    if (nread < 0 || SSL_write(c->ssl, buf->base, (int)nread) != (int)nread ||
        flush_tls(c) != 0) {
        ERR_clear_error();
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->tcp_queued > KVMUX_PTLS_MAX_QUEUE && !c->pipe_paused) {
        c->pipe_paused = 1;
        uv_read_stop((uv_stream_t *)&c->pipe);
    }
}

static void start_tls(pconn *c) {
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = ST_HANDSHAKE;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->outgoing) do_handshake(c); /* ClientHello */
}

/* ---- incoming ---- */

static void on_connection(uv_stream_t *srv, int status) {
    ptls *t = srv->data;
    if (status < 0 || t->closing) return;
    pconn *c = conn_new(t, 0);
    if (!c) return; /* the connection stays in the backlog; retried next time */
    t->handshaking++;
    c->state = ST_HANDSHAKE;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    char host[64] = "?";
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        char port[8] = "";
        getnameinfo((struct sockaddr *)&ss, (socklen_t)sl, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->peer, sizeof c->peer, "%s:%s", host, port);
    }
    if (t->handshaking > KVMUX_PTLS_MAX_HANDSHAKES) {
        refuse(c, "too many handshakes in progress");
        return;
    }
    start_tls(c);
}

/* Split "host:port" (IPv6 host in brackets) into host and port text. */
static int split_addr(const char *a, char *host, size_t hcap, char *port, size_t pcap) {
    uint16_t p;
    if (kvmux_hostport_parse(a, strlen(a), host, hcap, &p) != 0) return -1;
    snprintf(port, pcap, "%u", (unsigned)p);
    return 0;
}

static int t_listen(struct raft_uv_transport *tr, raft_uv_accept_cb cb) {
    ptls *t = tr->impl;
    char host[KVMUX_PEER_ADDR_MAX], port[8];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *res = NULL;
    if (split_addr(t->address, host, sizeof host, port, sizeof port) != 0 ||
        getaddrinfo(host, port, &hints, &res) != 0) {
        snprintf(tr->errmsg, sizeof tr->errmsg, "bad Raft address %s", t->address);
        return RAFT_INVALID;
    }
    uv_tcp_init(t->loop, &t->listener);
    t->listener.data = t;
    t->listening = 1;
    int rc = uv_tcp_bind(&t->listener, res->ai_addr, 0);
    freeaddrinfo(res);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&t->listener, 128, on_connection);
    if (rc != 0) {
        snprintf(tr->errmsg, sizeof tr->errmsg, "listen on %s: %s", t->address, uv_strerror(rc));
        return RAFT_IOERR; /* the listener is closed by t_close */
    }
    t->accept_cb = cb;
    return 0;
}

/* ---- outgoing ---- */

static void on_tcp_connected(uv_connect_t *cr, int status) {
    pconn *c = cr->data;
    if (c->state == ST_CLOSING) return;
    if (status < 0) {
        conn_close(c, RAFT_NOCONNECTION); /* peer down: not a refusal */
        return;
    }
    start_tls(c);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res) {
    pconn *c = g->data;
    c->gai_pending = 0;
    if (c->state == ST_CLOSING || status < 0 || !res) {
        if (res) uv_freeaddrinfo(res);
        if (c->state == ST_CLOSING) conn_maybe_free(c);
        else conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    c->state = ST_CONNECT;
    c->creq.data = c;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, res->ai_addr, on_tcp_connected);
    uv_freeaddrinfo(res);
    if (rc != 0) conn_close(c, RAFT_NOCONNECTION);
}

static int t_connect(struct raft_uv_transport *tr, struct raft_uv_connect *req, raft_id id,
                     const char *address, raft_uv_connect_cb cb) {
    (void)id;
    ptls *t = tr->impl;
    char host[KVMUX_PEER_ADDR_MAX], port[8];
    if (t->closing) return RAFT_CANCELED;
    if (split_addr(address, host, sizeof host, port, sizeof port) != 0) return RAFT_NOCONNECTION;
    pconn *c = conn_new(t, 1);
    if (!c) return RAFT_NOMEM;
    snprintf(c->peer, sizeof c->peer, "%s", address);
    c->state = ST_RESOLVE;
    c->gai.data = c;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (uv_getaddrinfo(t->loop, &c->gai, on_resolved, host, port, &hints) != 0) {
        conn_close(c, 0); /* no request attached yet: nobody to call */
        return RAFT_NOCONNECTION;
    }
    c->gai_pending = 1;
    c->req = req;
    c->req_cb = cb;
    return 0;
}

/* ---- the rest of the interface ---- */

static int t_init(struct raft_uv_transport *tr, raft_id id, const char *address) {
    ptls *t = tr->impl;
    if (strlen(address) >= sizeof t->address) return RAFT_NAMETOOLONG;
    t->id = id;
    snprintf(t->address, sizeof t->address, "%s", address);
    return 0;
}

static void on_listener_closed(uv_handle_t *h) {
    ptls *t = h->data;
    t->listening = 0;
    ptls_maybe_done(t);
}

/* Stop listening, close every connection; cb (may be NULL) once all are
 * closed. */
static void ptls_close(ptls *t, raft_uv_transport_close_cb cb) {
    t->closing = 1;
    t->close_cb = cb;
    if (t->listening) uv_close((uv_handle_t *)&t->listener, on_listener_closed);
    for (pconn *c = t->conns; c; c = c->next) conn_close(c, RAFT_CANCELED);
    if (!t->listening && !t->nconns) ptls_maybe_done(t);
}

static void t_close(struct raft_uv_transport *tr, raft_uv_transport_close_cb cb) {
    ptls_close(tr->impl, cb);
}

static SSL_CTX *make_ctx(const kvmux_ptls_config *cfg, char *err, size_t errlen) {
    char rb[256];
    SSL_CTX *ctx = kvmux__tls_ctx_new(TLS_method(), 0);
    const char *what = "context";
    if (!ctx) goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    what = cfg->cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert) != 1) goto fail;
    what = cfg->key;
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    what = cfg->ca;
    if (SSL_CTX_load_verify_locations(ctx, cfg->ca, NULL) != 1) goto fail;
    return ctx;
fail:
    kvmux_errf(err, errlen, "peer TLS: %s: %s", what, kvmux__tls_reason(rb, sizeof rb));
    SSL_CTX_free(ctx);
    return NULL;
}

int kvmux_ptls_init(struct raft_uv_transport *tr, uv_loop_t *loop, const kvmux_ptls_config *cfg,
                    char *err, size_t errlen) {
    SSL_CTX *ctx = make_ctx(cfg, err, errlen);
    if (!ctx) return -1;
    ptls *t = calloc(1, sizeof *t);
    if (!t) {
        SSL_CTX_free(ctx);
        return kvmux_errf(err, errlen, "out of memory");
    }
    t->transport = tr;
    t->loop = loop;
    t->ctx = ctx;
    t->handshake_ms = cfg->handshake_ms;
    t->refused = cfg->refused;
    tr->impl = t;
    tr->init = t_init;
    tr->listen = t_listen;
    tr->connect = t_connect;
    tr->close = t_close;
    return 0;
}

void kvmux_ptls_release(struct raft_uv_transport *tr) {
    ptls *t = tr->impl;
    if (!t) return;
    tr->impl = NULL;
    t->released = 1;
    t->close_cb = NULL; /* raft_uv is gone: nobody to tell */
    if (!t->closing) ptls_close(t, NULL);
    else ptls_maybe_done(t);
}
