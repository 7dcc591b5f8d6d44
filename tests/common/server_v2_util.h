/* Raw-socket protocol-v2 client helpers for the kvmuxd v2 tests: a
 * blocking connection that does the handshake with a chosen maximum
 * version and settings, sends any frame (flags, deadline and
 * total_value_len included) and reads whole frames of any size with a
 * timeout. No client library: the tests drive the wire by hand so they can
 * break every rule on purpose. Every wait is bounded. */
#ifndef KVMUX_SERVER_V2_UTIL_H
#define KVMUX_SERVER_V2_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

typedef struct v2conn {
    int fd;
    int version;                 /* negotiated */
    kvmux_settings server;       /* from HELLO_ACK */
    uint8_t *buf;                /* last frame read */
    size_t cap;
} v2conn;

/* Connect to 127.0.0.1:port and handshake proposing 1..max_version with
 * settings mine (NULL = defaults, with MAX_VALUE_SIZE raised to
 * KVMUX_MAX_VALUE_LIMIT when proposing v2). Returns 0 or -1. */
int v2_connect(v2conn *c, uint16_t port, int max_version, const kvmux_settings *mine);

/* Close (abort = 1: RST via SO_LINGER 0) and free. */
void v2_close(v2conn *c, int abort);

/* Send one frame with header version c->version. deadline / total are
 * used when flags say so. Returns 0 or -1. */
int v2_send(v2conn *c, uint8_t type, uint8_t flags, uint32_t id, uint8_t code,
            const void *extras, uint8_t elen, const void *key, uint16_t klen,
            const void *val, uint32_t vlen, uint32_t deadline_ms, uint32_t total);

int v2_get(v2conn *c, uint32_t id, const char *key);
int v2_set(v2conn *c, uint32_t id, const char *key, const void *val, uint32_t vlen);
int v2_wait(v2conn *c, uint32_t id, const char *key, uint64_t version, uint32_t ms);
int v2_cancel(v2conn *c, uint32_t id);
int v2_window_update(v2conn *c, uint32_t id, uint32_t increment);
int v2_ping(v2conn *c, uint32_t tag);
/* First frame of a fragmented SET: total bytes announced, first chunk
 * val[0..vlen). flags may add KVMUX_FLAG_DEADLINE. */
int v2_set_first(v2conn *c, uint32_t id, const char *key, const void *val, uint32_t vlen,
                 uint32_t total, uint8_t extra_flags, uint32_t deadline_ms);
int v2_continuation(v2conn *c, uint32_t id, const void *val, uint32_t vlen, int more);

/* Read one whole frame within timeout_ms. Returns 1 with *f filled
 * (pointers into c->buf, valid until the next read), 0 on EOF or reset,
 * -1 on timeout or an undecodable frame. */
int v2_read(v2conn *c, kvmux_frame *f, int timeout_ms);

/* Read frames until one with type/request_id matches (skipping
 * WINDOW_UPDATEs and anything else; each skipped frame is passed to
 * on_skip if not NULL). Returns 1, 0 (EOF) or -1 (timeout). */
int v2_read_until(v2conn *c, kvmux_frame *f, uint8_t type, uint32_t id, int timeout_ms,
                  void (*on_skip)(const kvmux_frame *f, void *ud), void *ud);

/* A fragmented value being received: the test grants window as it
 * consumes, like a well-behaved client, unless grant is 0. */
typedef struct v2_rx {
    uint32_t id;
    uint8_t *data;
    uint32_t total, got;
    int started, done, canceled;
    uint8_t status;
    uint64_t version;
    int grant;
} v2_rx;

/* Feed frame f to rx if it belongs to it (RESPONSE or CONTINUATION with
 * rx->id); grants the consumed bytes back (message and connection) when
 * rx->grant. Returns 1 if consumed, 0 if not rx's, -1 on a protocol
 * problem (out of order, over total). */
int v2_rx_feed(v2conn *c, v2_rx *rx, const kvmux_frame *f);

/* Remember s so that, if the test exits early (REQUIRE), the server is
 * killed instead of left running. At most 8 servers. */
struct test_server;
void v2_track_server(struct test_server *s);

/* test_server_start(s, extra_args) (see testutil.h), failing the test
 * (REQUIRE) if kvmuxd does not start, then v2_track_server(s). */
void v2_start_server(struct test_server *s, const char *const *extra_args);

/* The end of a scenario: close c gracefully, then stop s within
 * timeout_ms and CHECK that it exited with status 0 (one check; under
 * ASan/LSan a leak makes the status non-zero). */
void v2_close_and_stop(v2conn *c, struct test_server *s, int timeout_ms);

/* A GET of key as request id on c whose answer must arrive within 2 s
 * (REQUIRE) and CHECK that its status is status (one check). */
void v2_check_get(v2conn *c, uint32_t id, const char *key, uint8_t status);

/* The parts of a RESPONSE a scenario checks. */
typedef struct v2_resp {
    uint8_t status;
    uint64_t version;              /* the last u64 of the extras (INCR: the
                                      version after the value) */
    int64_t num;                   /* INCR: the new value */
    char val[512];                 /* the value (a message on failures),
                                      NUL-terminated, cut to fit */
} v2_resp;

/* One REQUEST (op, key, extras, value) with the next id of *next_id, then
 * its RESPONSE within 10 s (other frames are skipped), into *r. Returns 0,
 * or -1 if the connection failed. */
int v2_call(v2conn *c, uint32_t *next_id, uint8_t op, const char *key, const void *extras,
            uint8_t elen, const void *val, uint32_t vlen, v2_resp *r);

#endif
