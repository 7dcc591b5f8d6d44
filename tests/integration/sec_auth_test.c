/* --requirepass and protected mode against a real kvmuxd over raw sockets
 * (docs/PROTOCOL.md 8.1, docs/OPERATIONS.md "Access"):
 *   - HELLO without a token, with a wrong one (same and other length), with
 *     a malformed one: ERROR AUTH (16) in handshake framing, then close;
 *   - a REQUEST before HELLO is refused and not served (the key it would
 *     have written is absent afterwards);
 *   - the right token, v1 and v2: HELLO_ACK and requests work;
 *   - the token from --requirepass-file;
 *   - STATS counts the failures (auth_failures, errors_auth);
 *   - loopback without a token is unaffected, and a token sent to a server
 *     without one is ignored;
 *   - protected mode: kvmuxd --bind 0.0.0.0 / :: without a token exits 2
 *     with a message naming protected mode (it never listens); the config
 *     check accepts a non-loopback bind with a token or --protected-mode no
 *     and any loopback literal (checked without opening a socket). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "server.h"
#include "testutil.h"

static uint8_t rbuf[64 * 1024];

/* HELLO proposing versions 1..maxv with token tok (NULL: none; a raw
 * auth block when raw_auth is set). */
static int send_hello(int fd, int maxv, const char *tok, const uint8_t *raw_auth,
                      size_t raw_len) {
    uint8_t val[24 + KVMUX_AUTH_SETTINGS_MAX_LEN + 32];
    kvmux_settings st;
    kvmux_settings_default(&st);
    size_t n = kvmux_settings_encode(val, &st);
    if (tok) n += kvmux_settings_encode_auth(val + n, (const uint8_t *)tok, strlen(tok));
    if (raw_auth) {
        memcpy(val + n, raw_auth, raw_len);
        n += raw_len;
    }
    return test_send_hello(fd, 0, 0, 1, (uint8_t)maxv, "sec", val, n);
}

static int send_req(int fd, uint8_t ver, uint32_t id, uint8_t op, const void *ext,
                    uint8_t elen, const char *key, const char *val) {
    return test_send_request(fd, ver, id, op, ext, elen, key, val,
                             (uint32_t)(val ? strlen(val) : 0));
}

/* Expect ERROR AUTH then the close. */
static void expect_auth_error(int fd, const char *what) {
    kvmux_frame f;
    int r = test_read_frame(fd, rbuf, sizeof rbuf, &f);
    CHECK(r > 0);
    if (r > 0) {
        CHECK_EQ(f.type, KVMUX_FRAME_ERROR);
        CHECK_EQ(f.code, KVMUX_ERR_AUTH);
        CHECK_EQ(f.version, KVMUX_HANDSHAKE_VERSION);
        if (f.type != KVMUX_FRAME_ERROR || f.code != KVMUX_ERR_AUTH)
            fprintf(stderr, "%s: got type %u code %u\n", what, f.type, f.code);
    }
    CHECK(test_wait_closed(fd, 3000));
}

/* Connect, HELLO with tok; returns the fd after HELLO_ACK or -1. */
static int auth_connect(uint16_t port, int maxv, const char *tok) {
    int fd = test_connect_raw(port, 5000);
    if (fd < 0) return -1;
    kvmux_frame f;
    if (send_hello(fd, maxv, tok, NULL, 0) != 0 ||
        test_read_frame(fd, rbuf, sizeof rbuf, &f) <= 0 || f.type != KVMUX_FRAME_HELLO_ACK ||
        (f.code != maxv)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int status_of(int fd, uint32_t id) {
    kvmux_frame f;
    if (test_read_frame(fd, rbuf, sizeof rbuf, &f) <= 0) return -1;
    if (f.type != KVMUX_FRAME_RESPONSE || f.request_id != id) return -1;
    return f.code;
}

/* STATS line value, or -1. */
static long long stat(int fd, uint8_t ver, const char *name) {
    if (send_req(fd, ver, 900, KVMUX_OP_STATS, NULL, 0, name, NULL) != 0) return -1;
    kvmux_frame f;
    if (test_read_frame(fd, rbuf, sizeof rbuf, &f) <= 0 || f.code != KVMUX_STATUS_OK) return -1;
    char t[4096];
    size_t n = f.value_len < sizeof t - 1 ? f.value_len : sizeof t - 1;
    memcpy(t, f.value, n);
    t[n] = '\0';
    size_t nl = strlen(name);
    for (char *p = t; *p;) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':') return strtoll(p + nl + 1, NULL, 10);
        char *e = strchr(p, '\n');
        if (!e) break;
        p = e + 1;
    }
    return -1;
}

static void test_token_server(void) {
    test_server s;
    const char *args[] = {"--requirepass", "s3cret", NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    uint8_t ttl[8] = {0};

    /* 1. v1 client without a token (the stock raw handshake). */
    int fd = test_connect_raw(s.port, 5000);
    REQUIRE(fd >= 0);
    CHECK_EQ(send_hello(fd, 1, NULL, NULL, 0), 0);
    expect_auth_error(fd, "no token");
    close(fd);
    /* 2. wrong token, same length; 3. a prefix of the right one. */
    const char *wrong[] = {"s3creT", "s3cre", "s3cret-and-more"};
    for (int i = 0; i < 3; i++) {
        fd = test_connect_raw(s.port, 5000);
        REQUIRE(fd >= 0);
        CHECK_EQ(send_hello(fd, 2, wrong[i], NULL, 0), 0);
        expect_auth_error(fd, wrong[i]);
        close(fd);
    }
    /* 4. malformed: a length with no token entries. */
    uint8_t bad[6] = {0, KVMUX_SETTING_AUTH_TOKEN_LEN, 0, 0, 0, 6};
    fd = test_connect_raw(s.port, 5000);
    REQUIRE(fd >= 0);
    CHECK_EQ(send_hello(fd, 1, NULL, bad, sizeof bad), 0);
    expect_auth_error(fd, "malformed");
    close(fd);
    /* 5. a REQUEST before HELLO: refused, not served. */
    fd = test_connect_raw(s.port, 5000);
    REQUIRE(fd >= 0);
    CHECK_EQ(send_req(fd, 1, 1, KVMUX_OP_SET, ttl, 8, "pre", "x"), 0);
    kvmux_frame f;
    CHECK(test_read_frame(fd, rbuf, sizeof rbuf, &f) > 0);
    CHECK_EQ(f.type, KVMUX_FRAME_ERROR);
    CHECK_EQ(f.code, KVMUX_ERR_HANDSHAKE);
    close(fd);

    /* 6. the right token, v1 then v2. */
    fd = auth_connect(s.port, 1, "s3cret");
    REQUIRE(fd >= 0);
    CHECK_EQ(send_req(fd, 1, 1, KVMUX_OP_GET, NULL, 0, "pre", NULL), 0);
    CHECK_EQ(status_of(fd, 1), KVMUX_STATUS_NOT_FOUND);
    CHECK_EQ(send_req(fd, 1, 2, KVMUX_OP_SET, ttl, 8, "k", "v"), 0);
    CHECK_EQ(status_of(fd, 2), KVMUX_STATUS_OK);
    int fd2 = auth_connect(s.port, 2, "s3cret");
    CHECK(fd2 >= 0);
    if (fd2 >= 0) {
        CHECK_EQ(send_req(fd2, 2, 1, KVMUX_OP_GET, NULL, 0, "k", NULL), 0);
        CHECK_EQ(status_of(fd2, 1), KVMUX_STATUS_OK);
        close(fd2);
    }
    /* 7. the failures are counted. */
    CHECK_EQ(stat(fd, 1, "auth_required"), 1);
    CHECK_EQ(stat(fd, 1, "auth_failures"), 5);
    CHECK_EQ(stat(fd, 1, "errors_auth"), 5);
    CHECK_EQ(stat(fd, 1, "errors_handshake"), 1);
    printf("auth failures counted: %lld\n", stat(fd, 1, "auth_failures"));
    close(fd);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

static void test_token_file(void) {
    char path[] = "/tmp/kvmux-sec-XXXXXX";
    int tf = mkstemp(path);
    REQUIRE(tf >= 0);
    CHECK_EQ(write(tf, "from-a-file\n", 12), 12); /* test_write_all is for sockets */
    close(tf);
    test_server s;
    const char *args[] = {"--requirepass-file", path, NULL};
    REQUIRE(test_server_start(&s, args) == 0);
    int fd = auth_connect(s.port, 2, "from-a-file");
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    fd = test_connect_raw(s.port, 5000);
    REQUIRE(fd >= 0);
    CHECK_EQ(send_hello(fd, 2, "from-a-file\n", NULL, 0), 0); /* newline is not part */
    expect_auth_error(fd, "file token with newline");
    close(fd);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
    unlink(path);
}

static void test_loopback_unaffected(void) {
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    int fd = test_connect_raw(s.port, 5000);
    REQUIRE(fd >= 0);
    CHECK_EQ(test_raw_handshake(fd), 0); /* no token needed */
    CHECK_EQ(stat(fd, 1, "auth_required"), 0);
    close(fd);
    fd = auth_connect(s.port, 2, "ignored"); /* a token is harmless */
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    CHECK_EQ(test_server_stop(&s, 10000), 0);
}

/* kvmuxd with args; returns its exit status and its stderr in err. */
static int run_kvmuxd(const char *const *args, char *err, size_t cap) {
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0) dup2(nul, 1);
        close(p[0]);
        const char *argv[16] = {KVMUXD_PATH};
        int n = 1;
        for (int i = 0; args[i] && n < 15; i++) argv[n++] = args[i];
        argv[n] = NULL;
        execv(KVMUXD_PATH, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    int64_t end = test_now_ms() + 10000;
    for (;;) {
        ssize_t r = read(p[0], err + len, cap - 1 - len);
        if (r <= 0 || len + (size_t)r >= cap - 1 || test_now_ms() > end) {
            if (r > 0) len += (size_t)r;
            break;
        }
        len += (size_t)r;
    }
    err[len] = '\0';
    close(p[0]);
    int st = 0;
    for (int i = 0; i < 500; i++) { /* bounded: 5 s */
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        test_sleep_ms(10);
    }
    kill(pid, 9);
    waitpid(pid, &st, 0);
    return -1; /* it started listening: protected mode failed */
}

static void test_protected_mode(void) {
    char err[2048];
    const char *any4[] = {"--bind", "0.0.0.0", "--port", "0", NULL};
    CHECK_EQ(run_kvmuxd(any4, err, sizeof err), 2);
    CHECK(strstr(err, "protected mode") != NULL);
    CHECK(strstr(err, "--requirepass") != NULL);
    printf("protected mode refusal: %s", err);
    const char *any6[] = {"--bind", "::", "--port", "0", NULL};
    CHECK_EQ(run_kvmuxd(any6, err, sizeof err), 2);
    CHECK(strstr(err, "protected mode") != NULL);
    const char *badyn[] = {"--protected-mode", "maybe", NULL};
    CHECK_EQ(run_kvmuxd(badyn, err, sizeof err), 2);
    const char *both[] = {"--requirepass", "a", "--requirepass-file", "/x", NULL};
    CHECK_EQ(run_kvmuxd(both, err, sizeof err), 2);
    const char *nofile[] = {"--requirepass-file", "/nonexistent/kvmux-token", "--port", "0", NULL};
    CHECK(run_kvmuxd(nofile, err, sizeof err) != 0);
    CHECK(strstr(err, "/nonexistent/kvmux-token") != NULL);

    /* The rule itself, without opening sockets. */
    kvmux_server_config c;
    char e[512];
    const char *loop[] = {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"};
    for (int i = 0; i < 4; i++) {
        kvmux_server_config_init(&c);
        c.bind = loop[i];
        CHECK_EQ(kvmux_server_config_validate(&c, e, sizeof e), 0);
    }
    const char *open_[] = {"0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "::ffff:10.0.0.1"};
    for (int i = 0; i < 5; i++) {
        kvmux_server_config_init(&c);
        c.bind = open_[i];
        CHECK_EQ(kvmux_server_config_validate(&c, e, sizeof e), -1);
        c.requirepass = "tok";
        CHECK_EQ(kvmux_server_config_validate(&c, e, sizeof e), 0);
        c.requirepass = NULL;
        c.protected_mode = 0;
        CHECK_EQ(kvmux_server_config_validate(&c, e, sizeof e), 0);
    }
    kvmux_server_config_init(&c);
    char longtok[KVMUX_MAX_AUTH_TOKEN + 2];
    memset(longtok, 'a', sizeof longtok - 1);
    longtok[sizeof longtok - 1] = '\0';
    c.requirepass = longtok;
    CHECK_EQ(kvmux_server_config_validate(&c, e, sizeof e), -1);
    longtok[KVMUX_MAX_AUTH_TOKEN] = '\0';
    CHECK_EQ(kvmux_server_config_validate(&c, e, sizeof e), 0);
}

int main(void) {
    test_token_server();
    test_token_file();
    test_loopback_unaffected();
    test_protected_mode();
    return test_report();
}
