/* The scripted fake server of the client v2 tests (see client_v2_fake.h).
 * Frames are encoded and decoded with the real proto library, so the fake
 * speaks exactly the documented wire format; the scripts decide what to
 * send and when. */
#include "client_v2_fake.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

static void *fake_main(void *arg) {
    v2fake *f = arg;
    struct pollfd p = {f->lfd, POLLIN, 0};
    if (poll(&p, 1, 10000) == 1) {
        int fd = accept(f->lfd, NULL, NULL);
        if (fd >= 0) {
            struct timeval tv = {5, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            f->script(f, fd);
            close(fd);
        }
    }
    atomic_store(&f->finished, 1);
    return NULL;
}

void v2fake_start(v2fake *f, void (*script)(v2fake *, int), uint8_t max_version,
                  const kvmux_settings *settings, void *arg) {
    v2fake_start_ex(f, script, max_version, settings, arg, 0, NULL);
}

void v2fake_start_ex(v2fake *f, void (*script)(v2fake *, int), uint8_t max_version,
                     const kvmux_settings *settings, void *arg, int rcvbuf,
                     const char *name) {
    memset(f, 0, sizeof *f);
    f->script = script;
    f->arg = arg;
    f->max_version = max_version;
    f->name = name ? name : "v2fake";
    if (settings) f->settings = *settings;
    else kvmux_settings_default(&f->settings);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(f->lfd >= 0);
    /* Set before listen so accepted sockets inherit it. */
    if (rcvbuf) setsockopt(f->lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(f->lfd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(listen(f->lfd, 4) == 0);
    socklen_t al = sizeof a;
    REQUIRE(getsockname(f->lfd, (struct sockaddr *)&a, &al) == 0);
    f->port = ntohs(a.sin_port);
    REQUIRE(pthread_create(&f->th, NULL, fake_main, f) == 0);
}

void v2fake_join(v2fake *f) {
    int64_t end = test_now_ms() + 20000;
    while (!atomic_load(&f->finished) && test_now_ms() < end) test_sleep_ms(5);
    REQUIRE(atomic_load(&f->finished));
    pthread_join(f->th, NULL);
    close(f->lfd);
}

int v2fake_handshake(v2fake *f, int fd) {
    uint8_t buf[4096], out[KVMUX_HELLO_ACK_MAX_LEN];
    kvmux_frame fr;
    if (test_read_frame(fd, buf, sizeof buf, &fr) <= 0) return -1;
    kvmux_session s;
    kvmux_session_init(&s, KVMUX_ROLE_SERVER, &f->settings);
    s.max_version = f->max_version;
    if (kvmux_session_check_recv(&s, &fr) != 0) return -1;
    int n = kvmux_session_accept_hello(&s, &fr, out, f->name);
    if (n <= 0) return -1;
    f->version = s.version;
    return test_write_all(fd, out, (size_t)n);
}

int v2fake_read(int fd, uint8_t *buf, size_t cap, kvmux_frame *fr) {
    return test_read_frame(fd, buf, cap, fr);
}

void v2fake_send(v2fake *f, int fd, uint8_t type, uint8_t flags, uint32_t id,
                 uint8_t code, const void *ext, uint8_t elen, const void *val,
                 uint32_t vlen, uint32_t total) {
    kvmux_frame fr;
    memset(&fr, 0, sizeof fr);
    fr.version = f->version;
    fr.type = type;
    fr.flags = flags;
    fr.request_id = id;
    fr.code = code;
    fr.extras = ext;
    fr.extras_len = elen;
    fr.value = val;
    fr.value_len = vlen;
    fr.total_value_len = total;
    size_t n = kvmux_frame_size(&fr);
    uint8_t *buf = malloc(n);
    REQUIRE(buf);
    kvmux_frame_encode(buf, &fr);
    CHECK_EQ(test_write_all(fd, buf, n), 0);
    free(buf);
}

void v2fake_send_cont(v2fake *f, int fd, uint32_t id, int more, const void *val,
                      uint32_t vlen) {
    uint8_t h[KVMUX_FRAME_HDR_LEN];
    kvmux_encode_continuation_header(h, f->version, id, more ? KVMUX_FLAG_MORE : 0, vlen);
    CHECK_EQ(test_write_all(fd, h, sizeof h), 0);
    CHECK_EQ(test_write_all(fd, val, vlen), 0);
}

uint8_t *v2fake_open(v2fake *f, int fd, size_t cap) {
    REQUIRE(v2fake_handshake(f, fd) == 0);
    uint8_t *buf = malloc(cap);
    REQUIRE(buf);
    return buf;
}

void v2fake_window_update(v2fake *f, int fd, uint32_t id, uint32_t inc) {
    uint8_t b[KVMUX_WINDOW_UPDATE_LEN];
    size_t n = kvmux_encode_window_update(b, f->version, id, inc);
    CHECK_EQ(test_write_all(fd, b, n), 0);
}

kvmux_client *v2_connect(uint16_t port, const kvmux_options *o) {
    kvmux_client *c = NULL;
    int rc = kvmux_connect(&c, "127.0.0.1", port, o);
    if (rc != 0) {
        char msg[256];
        kvmux_connection_error(NULL, msg, sizeof msg);
        fprintf(stderr, "connect: %s (%s)\n", kvmux_strerror(rc), msg);
    }
    REQUIRE(rc == 0 && c != NULL);
    return c;
}
