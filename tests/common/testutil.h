/* Tiny test harness shared by every kvmux test (the test_cond idea from
 * Redis/hiredis): CHECK records a failure and goes on, REQUIRE stops the
 * test; test_report() prints "N passed, N failed" and returns the exit code.
 *
 * Plus fixtures for tests that need the real server: start kvmuxd on an
 * ephemeral loopback port, stop it, kill it, and a raw blocking socket.
 * Every wait here is bounded. */
#ifndef KVMUX_TESTUTIL_H
#define KVMUX_TESTUTIL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

extern atomic_long test_passed;
extern atomic_long test_failed;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            atomic_fetch_add(&test_passed, 1);                               \
        } else {                                                             \
            atomic_fetch_add(&test_failed, 1);                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
        }                                                                    \
    } while (0)

/* Like CHECK, but also prints two integer values on failure. */
#define CHECK_EQ(a, b)                                                       \
    do {                                                                     \
        long long va_ = (long long)(a), vb_ = (long long)(b);                \
        if (va_ == vb_) {                                                    \
            atomic_fetch_add(&test_passed, 1);                               \
        } else {                                                             \
            atomic_fetch_add(&test_failed, 1);                               \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", \
                    __FILE__, __LINE__, #a, #b, va_, vb_);                   \
        }                                                                    \
    } while (0)

#define REQUIRE(cond)                                                        \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                        \
            atomic_fetch_add(&test_failed, 1);                               \
            exit(test_report());                                             \
        }                                                                    \
    } while (0)

/* Print "<name>: N passed, N failed" and return 0 if none failed (and at
 * least one check ran), else 1. */
int test_report(void);

/* Op-count multiplier for load tests, from KVMUX_TEST_SCALE (clamped to
 * [0.001, 10]); unset: 1, or 0.1 in a TSan build, which runs ~10x slower. */
double test_scale(void);

/* Monotonic milliseconds. */
int64_t test_now_ms(void);
void test_sleep_ms(int ms);

/* A kvmuxd child process on 127.0.0.1 and an ephemeral port. */
typedef struct test_server {
    pid_t pid;
    uint16_t port;
    int stdout_fd;   /* the rest of the server's stdout, for tests to read */
} test_server;

/* How long test_server_start waits for the "listening on" line. */
#define TEST_SERVER_START_MS 60000

/* Start KVMUXD_PATH (or $KVMUX_KVMUXD) --bind 127.0.0.1 --port 0 plus extra_args (NULL-
 * terminated, may be NULL) and wait (<= TEST_SERVER_START_MS) for "listening
 * on ADDR:PORT". Returns 0; -1 with a message on stderr if the server exited
 * without listening; -2 (server killed) if it still ran at the deadline. */
int test_server_start(test_server *s, const char *const *extra_args);

/* SIGTERM and wait up to timeout_ms; returns the exit status (0..255), 128+
 * signal if it died of a signal, or -1 if it had to be SIGKILLed. */
int test_server_stop(test_server *s, int timeout_ms);

/* SIGKILL and reap. */
void test_server_kill(test_server *s);

/* test_server_start on exactly port (for a restart at the same address):
 * --port port plus extra_args (NULL-terminated, may be NULL, at most 28),
 * retrying for ~2 s while the port is still taken. Returns 0, or -1 (no
 * server left running) if it never got that port. */
int test_server_start_on_port(test_server *s, uint16_t port, const char *const *extra_args);

/* A malloc'ed buffer of len pseudo-random bytes, the same for the same
 * (len, seed): values whose corruption a byte compare catches. Exits the
 * test (REQUIRE) when out of memory. The caller frees it. */
uint8_t *test_pattern(size_t len, uint32_t seed);

/* The value of counter name in a STATS reply's text (len bytes of
 * "name:value" lines, not NUL-terminated), found at a line start; parsed
 * as decimal. Returns UINT64_MAX when text is NULL or name is absent. */
uint64_t test_stat_value(const void *text, size_t len, const char *name);

/* Run argv[0] (a path) with argv (NULL-terminated) to completion, at most
 * timeout_ms (then SIGKILL), with environment variable env_name set to
 * env_value (env_value NULL: unset; env_name NULL: environment as is).
 * Its stdout and stderr go to temporary files and come back in out and
 * err (NUL-terminated, cut at cap - 1; either may be NULL with cap 0).
 * Returns the exit status (0..255), or -1 (killed by a signal, timed out,
 * or could not be started). */
int test_run(const char *const *argv, const char *env_name, const char *env_value,
             char *out, size_t out_cap, char *err, size_t err_cap, int timeout_ms);

/* Blocking TCP connection to 127.0.0.1:port with SO_RCVTIMEO/SO_SNDTIMEO of
 * timeout_ms. Returns the fd or -1. */
int test_connect_raw(uint16_t port, int timeout_ms);

/* Write all of buf. Returns 0 or -1. */
int test_write_all(int fd, const void *buf, size_t len);

/* Read until one whole frame is in buf (cap bytes) or EOF/timeout.
 * Returns the frame length (> 0), 0 on EOF before any byte, -1 on error or
 * timeout. The frame is decoded into *f (pointers into buf). */
struct kvmux_frame;
int test_read_frame(int fd, uint8_t *buf, size_t cap, struct kvmux_frame *f);

/* Returns 1 if the peer has closed fd (read returns 0 or ECONNRESET within
 * timeout_ms, skipping any data), else 0. */
int test_wait_closed(int fd, int timeout_ms);

/* Write a 16-byte frame header at h exactly as given (magic included),
 * so body_len may disagree with what follows: for malformed frames.
 * Returns KVMUX_FRAME_HDR_LEN. */
size_t test_put_header(uint8_t *h, uint8_t magic, uint8_t version, uint8_t type,
                       uint8_t flags, uint32_t request_id, uint8_t code, uint8_t extras_len,
                       uint16_t key_len, uint32_t body_len);

/* Encode and write one REQUEST (header version, id, opcode, extras, key
 * as a C string or NULL, value[0..vlen)) on a raw fd; at most 64 KiB.
 * Returns 0 or -1. */
int test_send_request(int fd, uint8_t version, uint32_t id, uint8_t op, const void *extras,
                      uint8_t extras_len, const char *key, const void *value, uint32_t vlen);

/* Encode and write a HELLO (handshake framing) proposing versions
 * minv..maxv, with request_id and code as given (the receiver ignores
 * them), name as its key and settings[0..slen) as its value. Returns 0 or
 * -1. */
int test_send_hello(int fd, uint32_t request_id, uint8_t code, uint8_t minv, uint8_t maxv,
                    const char *name, const uint8_t *settings, size_t slen);

/* Do the HELLO/HELLO_ACK handshake on a raw socket, proposing version 1
 * only (the raw tests speak v1 frames). Returns 0 or -1. */
int test_raw_handshake(int fd);

/* Same, proposing versions 1..max_version. Returns the negotiated version
 * (> 0) or -1. */
int test_raw_handshake_version(int fd, int max_version);

#endif
