/* The inside of a kvmux_client, shared by the files of src/client/.
 * Internal to libkvmux: nothing here is part of the public API.
 *
 * Locking: one mutex (mu) guards everything below it in the struct. The
 * fields above it are set during kvmux_connect, before any thread starts,
 * and are read-only afterwards (pthread_create orders them for the threads;
 * callers only see the handle after kvmux_connect returns). The receive
 * buffer and the session belong to the reader thread alone; the buffer being
 * written belongs to the writer thread alone between its two lock sections. */
#ifndef KVMUX_CLIENT_INTERNAL_H
#define KVMUX_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kvmux.h"
#include "pending.h"
#include "proto.h"

/* Initial receive buffer: big enough that one recv drains many replies. It
 * grows only to hold one frame larger than itself, never past the
 * negotiated max frame size. */
#define KVMUX_CLIENT_RBUF 65536u
/* An outbound buffer larger than this is freed after its batch is written,
 * so one burst of large values does not pin memory for the connection's
 * lifetime. */
#define KVMUX_CLIENT_OUT_KEEP (256u * 1024)
/* Room kept for the fatal error's description. */
#define KVMUX_CLIENT_MSG_MAX (KVMUX_MAX_ERROR_MSG + 128)

/* An outbound byte buffer: whole encoded frames, in order. */
typedef struct kvmux__outbuf {
    uint8_t *data;
    size_t len;            /* bytes queued */
    size_t cap;
    uint32_t frames;       /* frames queued */
} kvmux__outbuf;

struct kvmux_client {
    /* ---- immutable after kvmux_connect ---- */
    int fd;
    kvmux_options opts;            /* client_name is not kept (NULL) */
    kvmux_server_info info;        /* from HELLO_ACK */
    uint32_t max_key;              /* negotiated request limits */
    uint32_t max_value;
    uint32_t peer_max_frame;       /* largest frame the server accepts */
    uint8_t version;               /* negotiated protocol version */
    pthread_t reader;
    pthread_t writer;

    /* ---- reader thread only ---- */
    kvmux_session session;
    uint8_t *rbuf;
    size_t rlen;                   /* bytes held in rbuf */
    size_t rcap;

    /* ---- writer thread only (between lock sections) ---- */
    kvmux__outbuf wbuf;            /* the batch being sent */

    /* ---- guarded by mu ---- */
    pthread_mutex_t mu;
    int fatal;                     /* 0 while healthy, then a fatal KVMUX_E* */
    char fatal_msg[KVMUX_CLIENT_MSG_MAX];
    int closing;                   /* kvmux_close has begun */
    kvmux__pending pending;
    kvmux__outbuf out;             /* callers append frames here */
    size_t wr_bytes;               /* bytes in the writer's hands */
    uint32_t wr_frames;            /* frames in the writer's hands */
    int writer_idle;               /* writer sleeps on writer_cond */
    pthread_cond_t writer_cond;
    pthread_cond_t slot_cond;      /* callers waiting for a free slot */
    uint32_t slot_waiters;
    pthread_cond_t queue_cond;     /* callers waiting for queue room */
    uint32_t queue_waiters;
    pthread_cond_t idle_cond;      /* kvmux_close waits for active == 0 */
    uint32_t active;               /* callers inside the library */
    uint64_t dropped_replies;      /* late (tombstoned) or unknown ids */
};

/* errno as text, thread-safely (GNU strerror_r, _GNU_SOURCE is defined
 * build-wide). buf holds at least 64 bytes. */
static inline const char *kvmux__errstr(int err, char *buf, size_t len) {
    return strerror_r(err, buf, len);
}

/* Fail the connection (lock held): the first call records code and msg
 * (printf-style), completes every WAITING slot with code, wakes every
 * waiter and the writer, and shuts the socket down so both threads leave
 * their blocking calls. Later calls do nothing. */
void kvmux__client_fail(kvmux_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Make sure c->out can take n more bytes (lock held). Returns 0 or
 * KVMUX_ENOMEM (out unchanged). */
int kvmux__out_reserve(kvmux_client *c, size_t n);

/* Wake the writer if it sleeps (lock held). The signal is sent only on the
 * idle -> busy edge, so a burst of callers costs one wakeup. */
void kvmux__writer_kick(kvmux_client *c);

/* Thread bodies; arg is the kvmux_client. */
void *kvmux__writer_main(void *arg);
void *kvmux__reader_main(void *arg);

/* Handle the frames in c->rbuf[0..c->rlen) (lock held): returns bytes
 * consumed; on a protocol error the connection has been failed. Exposed
 * for the reader loop only. */
size_t kvmux__reader_process(kvmux_client *c);

/* Map a RESPONSE status to a kvmux_error. Returns 0 and sets *err, or -1
 * for a status this version does not define (a protocol error). */
int kvmux__status_to_error(uint8_t status, int *err);

#endif /* KVMUX_CLIENT_INTERNAL_H */
