/* A scripted fake kvmux server for the client tests, v1 and v2 alike: one
 * thread accepts one connection and runs a script with raw frames encoded
 * by the proto library, so the tests can produce what a correct kvmuxd
 * produces only under timing luck (a GOAWAY between two calls, a reply
 * crossing a CANCEL, a fragmented reply the caller stops waiting for) or
 * never (a silent peer). Every wait is bounded (socket timeouts, a
 * deadline on the join). */
#ifndef KVMUX_CLIENT_V2_FAKE_H
#define KVMUX_CLIENT_V2_FAKE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kvmux.h"
#include "proto.h"

typedef struct v2fake v2fake;
struct v2fake {
    int lfd;
    uint16_t port;
    uint8_t max_version;            /* what the fake accepts (1 or 2); 1 plays
                                     * a v1 server for scripts of v1 frames */
    uint8_t version;                /* negotiated */
    kvmux_settings settings;        /* advertised in HELLO_ACK */
    const char *name;               /* server name in HELLO_ACK */
    void (*script)(v2fake *f, int fd);
    void *arg;                      /* for the script */
    pthread_t th;
    atomic_int finished;
};

/* Listen on 127.0.0.1:0 and start the thread running script once a client
 * connects. settings may be NULL (defaults). */
void v2fake_start(v2fake *f, void (*script)(v2fake *, int), uint8_t max_version,
                  const kvmux_settings *settings, void *arg);
/* v2fake_start with the listener's SO_RCVBUF set to rcvbuf first (0: the
 * system default; small, so a script that never reads fills the socket
 * buffers soon) and name (NULL: "v2fake") as the server name. */
void v2fake_start_ex(v2fake *f, void (*script)(v2fake *, int), uint8_t max_version,
                     const kvmux_settings *settings, void *arg, int rcvbuf,
                     const char *name);
/* Wait (<= 20 s) for the script to end, join, close the listener. */
void v2fake_join(v2fake *f);
/* Server side of the handshake. Returns 0 or -1. */
int v2fake_handshake(v2fake *f, int fd);
/* The start of a script that reads frames: the server side of the
 * handshake, which must succeed, then a buffer of cap bytes for
 * v2fake_read. Fails the test (REQUIRE) otherwise. The script frees it. */
uint8_t *v2fake_open(v2fake *f, int fd, size_t cap);
/* Read one frame into buf (cap bytes). Returns its length, 0 on EOF, -1. */
int v2fake_read(int fd, uint8_t *buf, size_t cap, kvmux_frame *fr);
/* Send a frame built from the fields (version = the negotiated one). */
void v2fake_send(v2fake *f, int fd, uint8_t type, uint8_t flags, uint32_t id,
                 uint8_t code, const void *ext, uint8_t elen, const void *val,
                 uint32_t vlen, uint32_t total);
/* Send a CONTINUATION. */
void v2fake_send_cont(v2fake *f, int fd, uint32_t id, int more, const void *val,
                      uint32_t vlen);

/* Send a WINDOW_UPDATE granting inc more bytes to stream id (0: the
 * connection window). */
void v2fake_window_update(v2fake *f, int fd, uint32_t id, uint32_t inc);

/* Connect the real client to 127.0.0.1:port with options o (may be NULL);
 * on failure print the code and the connect message, then fail the test
 * (REQUIRE). Shared by every v2 client test. */
kvmux_client *v2_connect(uint16_t port, const kvmux_options *o);

#endif
