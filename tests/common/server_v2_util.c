/* Raw-socket protocol-v2 client helpers for the kvmuxd tests (see
 * server_v2_util.h). Blocking sockets with poll-bounded reads. */
#include "server_v2_util.h"

#include <errno.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

static struct test_server *tracked[8];
static int ntracked;

static void kill_tracked(void) {
    for (int i = 0; i < ntracked; i++)
        if (tracked[i]->pid > 0) test_server_kill(tracked[i]);
}

void v2_track_server(struct test_server *s) {
    if (ntracked == 0) atexit(kill_tracked);
    if (ntracked < 8) tracked[ntracked++] = s;
}

void v2_start_server(struct test_server *s, const char *const *extra_args) {
    REQUIRE(test_server_start(s, extra_args) == 0);
    v2_track_server(s);
}

void v2_close_and_stop(v2conn *c, struct test_server *s, int timeout_ms) {
    v2_close(c, 0);
    CHECK_EQ(test_server_stop(s, timeout_ms), 0);
}

void v2_check_get(v2conn *c, uint32_t id, const char *key, uint8_t status) {
    kvmux_frame f;
    REQUIRE(v2_get(c, id, key) == 0);
    REQUIRE(v2_read(c, &f, 2000) == 1);
    CHECK_EQ(f.code, status);
}

int v2_connect(v2conn *c, uint16_t port, int max_version, const kvmux_settings *mine) {
    memset(c, 0, sizeof *c);
    c->fd = test_connect_raw(port, 5000);
    if (c->fd < 0) return -1;
    kvmux_session s;
    kvmux_settings st;
    if (mine) {
        st = *mine;
    } else {
        kvmux_settings_default(&st);
        /* A v2 client takes values as large as the protocol allows. */
        if (max_version >= KVMUX_PROTO_V2) st.max_value_size = KVMUX_MAX_VALUE_LIMIT;
    }
    kvmux_session_init(&s, KVMUX_ROLE_CLIENT, &st);
    s.max_version = (uint8_t)max_version;
    uint8_t out[KVMUX_HELLO_MAX_LEN];
    size_t n = kvmux_session_encode_hello(&s, out, "v2-test");
    if (test_write_all(c->fd, out, n) != 0) goto fail;
    c->version = 1; /* the HELLO_ACK comes with the handshake version */
    kvmux_frame f;
    if (v2_read(c, &f, 5000) != 1) goto fail;
    if (kvmux_session_check_recv(&s, &f) != 0 || f.type != KVMUX_FRAME_HELLO_ACK) goto fail;
    if (kvmux_session_on_hello_ack(&s, &f) != 0) goto fail;
    c->version = s.version;
    c->server = s.peer;
    return 0;
fail:
    close(c->fd);
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
    return -1;
}

void v2_close(v2conn *c, int abort) {
    if (c->fd >= 0) {
        if (abort) {
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->fd);
    }
    free(c->buf);
    c->fd = -1;
    c->buf = NULL;
    c->cap = 0;
}

int v2_send(v2conn *c, uint8_t type, uint8_t flags, uint32_t id, uint8_t code,
            const void *extras, uint8_t elen, const void *key, uint16_t klen,
            const void *val, uint32_t vlen, uint32_t deadline_ms, uint32_t total) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.version = (uint8_t)c->version;
    f.type = type;
    f.flags = flags;
    f.request_id = id;
    f.code = code;
    f.extras = extras;
    f.extras_len = elen;
    f.key = key;
    f.key_len = klen;
    f.value = val;
    f.value_len = vlen;
    f.deadline_ms = deadline_ms;
    f.total_value_len = total;
    size_t n = kvmux_frame_size(&f);
    uint8_t *b = malloc(n);
    if (!b) return -1;
    kvmux_frame_encode(b, &f);
    int rc = test_write_all(c->fd, b, n);
    free(b);
    return rc;
}

int v2_get(v2conn *c, uint32_t id, const char *key) {
    return v2_send(c, KVMUX_FRAME_REQUEST, 0, id, KVMUX_OP_GET, NULL, 0, key,
                   (uint16_t)strlen(key), NULL, 0, 0, 0);
}

int v2_set(v2conn *c, uint32_t id, const char *key, const void *val, uint32_t vlen) {
    uint8_t ttl[8] = {0};
    return v2_send(c, KVMUX_FRAME_REQUEST, 0, id, KVMUX_OP_SET, ttl, 8, key,
                   (uint16_t)strlen(key), val, vlen, 0, 0);
}

int v2_wait(v2conn *c, uint32_t id, const char *key, uint64_t version, uint32_t ms) {
    uint8_t e[12];
    kvmux_store_u64be(e, version);
    kvmux_store_u32be(e + 8, ms);
    return v2_send(c, KVMUX_FRAME_REQUEST, 0, id, KVMUX_OP_WAIT, e, 12, key,
                   (uint16_t)strlen(key), NULL, 0, 0, 0);
}

int v2_cancel(v2conn *c, uint32_t id) {
    uint8_t b[KVMUX_CANCEL_LEN];
    size_t n = kvmux_encode_cancel(b, (uint8_t)c->version, id);
    return test_write_all(c->fd, b, n);
}

int v2_window_update(v2conn *c, uint32_t id, uint32_t increment) {
    uint8_t b[KVMUX_WINDOW_UPDATE_LEN];
    size_t n = kvmux_encode_window_update(b, (uint8_t)c->version, id, increment);
    return test_write_all(c->fd, b, n);
}

int v2_ping(v2conn *c, uint32_t tag) {
    uint8_t e[8] = {0};
    kvmux_store_u32be(e + 4, tag);
    return v2_send(c, KVMUX_FRAME_PING, 0, 0, 0, e, 8, NULL, 0, NULL, 0, 0, 0);
}

int v2_set_first(v2conn *c, uint32_t id, const char *key, const void *val, uint32_t vlen,
                 uint32_t total, uint8_t extra_flags, uint32_t deadline_ms) {
    uint8_t ttl[8] = {0};
    return v2_send(c, KVMUX_FRAME_REQUEST, (uint8_t)(KVMUX_FLAG_MORE | extra_flags), id,
                   KVMUX_OP_SET, ttl, 8, key, (uint16_t)strlen(key), val, vlen, deadline_ms,
                   total);
}

int v2_continuation(v2conn *c, uint32_t id, const void *val, uint32_t vlen, int more) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    kvmux_encode_continuation_header(h, (uint8_t)c->version, id, more ? KVMUX_FLAG_MORE : 0,
                                     vlen);
    if (test_write_all(c->fd, h, sizeof h) != 0) return -1;
    return test_write_all(c->fd, val, vlen);
}

/* Read exactly n bytes by deadline. Returns 1, 0 on EOF/reset, -1 on
 * timeout. */
static int read_full(int fd, uint8_t *p, size_t n, int64_t deadline) {
    while (n) {
        int left = (int)(deadline - test_now_ms());
        if (left <= 0) return -1;
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        ssize_t got = recv(fd, p, n, MSG_DONTWAIT);
        if (got == 0) return 0;
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return 0; /* ECONNRESET and friends: the peer is gone */
        }
        p += got;
        n -= (size_t)got;
    }
    return 1;
}

int v2_read(v2conn *c, kvmux_frame *f, int timeout_ms) {
    int64_t deadline = test_now_ms() + timeout_ms;
    if (c->cap < KVMUX_FRAME_HDR_LEN) {
        free(c->buf);
        c->buf = malloc(64 * 1024);
        if (!c->buf) return -1;
        c->cap = 64 * 1024;
    }
    int r = read_full(c->fd, c->buf, KVMUX_FRAME_HDR_LEN, deadline);
    if (r != 1) return r;
    size_t body = kvmux_load_u32be(c->buf + 12);
    size_t need = KVMUX_FRAME_HDR_LEN + body;
    if (need > c->cap) {
        uint8_t *p = realloc(c->buf, need);
        if (!p) return -1;
        c->buf = p;
        c->cap = need;
    }
    r = read_full(c->fd, c->buf + KVMUX_FRAME_HDR_LEN, body, deadline);
    if (r != 1) return r;
    int n = kvmux_frame_decode(c->buf, need, (uint32_t)need < KVMUX_MIN_FRAME ? KVMUX_MIN_FRAME
                                                                           : (uint32_t)need,
                               f);
    return n == (int)need ? 1 : -1;
}

int v2_read_until(v2conn *c, kvmux_frame *f, uint8_t type, uint32_t id, int timeout_ms,
                  void (*on_skip)(const kvmux_frame *f, void *ud), void *ud) {
    int64_t deadline = test_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - test_now_ms());
        if (left <= 0) return -1;
        int r = v2_read(c, f, left);
        if (r != 1) return r;
        if (f->type == type && f->request_id == id) return 1;
        if (on_skip) on_skip(f, ud);
    }
}

int v2_rx_feed(v2conn *c, v2_rx *rx, const kvmux_frame *f) {
    if (f->request_id != rx->id) return 0;
    if (f->type == KVMUX_FRAME_RESPONSE) {
        if (rx->done) return -1; /* a second answer */
        if (rx->started) {
            /* A RESPONSE in the middle of a fragmented one ends it early. */
            rx->status = f->code;
            rx->canceled = f->code == KVMUX_STATUS_CANCELED;
            rx->done = 1;
            return 1;
        }
        rx->status = f->code;
        rx->version = f->extras_len >= 8 ? kvmux_load_u64be(f->extras) : 0;
        rx->total = kvmux_frame_has_total(f) ? f->total_value_len : f->value_len;
        free(rx->data);
        rx->data = malloc(rx->total ? rx->total : 1);
        if (!rx->data) return -1;
        if (f->value_len > rx->total) return -1;
        memcpy(rx->data, f->value, f->value_len);
        rx->got = f->value_len;
        rx->started = 1;
        if (!kvmux_frame_has_more(f)) rx->done = 1;
    } else if (f->type == KVMUX_FRAME_CONTINUATION) {
        if (!rx->started || rx->done) return -1;
        if ((uint64_t)rx->got + f->value_len > rx->total) return -1;
        memcpy(rx->data + rx->got, f->value, f->value_len);
        rx->got += f->value_len;
        if (!kvmux_frame_has_more(f)) {
            if (rx->got != rx->total) return -1;
            rx->done = 1;
        }
    } else {
        return 0;
    }
    if (rx->grant && f->value_len && kvmux_frame_has_more(f)) {
        v2_window_update(c, rx->id, f->value_len);
        v2_window_update(c, 0, f->value_len);
    } else if (rx->grant && f->value_len && rx->started && rx->total > f->value_len) {
        v2_window_update(c, 0, f->value_len); /* last fragment: connection only */
    }
    return 1;
}

int v2_call(v2conn *c, uint32_t *next_id, uint8_t op, const char *key, const void *extras,
            uint8_t elen, const void *val, uint32_t vlen, v2_resp *r) {
    uint32_t id = (*next_id)++;
    memset(r, 0, sizeof *r);
    if (v2_send(c, KVMUX_FRAME_REQUEST, 0, id, op, extras, elen, key, (uint16_t)strlen(key),
                val, vlen, 0, 0) != 0)
        return -1;
    kvmux_frame f;
    if (v2_read_until(c, &f, KVMUX_FRAME_RESPONSE, id, 10000, NULL, NULL) != 1) return -1;
    r->status = f.code;
    if (op == KVMUX_OP_INCR && f.extras_len == 16) {
        r->num = (int64_t)kvmux_load_u64be(f.extras);
        r->version = kvmux_load_u64be(f.extras + 8);
    } else if (f.extras_len >= 8) {
        r->version = kvmux_load_u64be(f.extras + f.extras_len - 8);
    }
    snprintf(r->val, sizeof r->val, "%.*s", (int)f.value_len,
             f.value ? (const char *)f.value : "");
    return 0;
}
