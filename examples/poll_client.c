/* Driving a libkvmux event-loop client from a plain poll() loop: the
 * whole glue an application needs when it has no event library. Built
 * with the project (target kvmux_example_poll) and run by the test suite
 * (example_poll_test), so it cannot drift from the API.
 *
 *   usage: poll_client HOST PORT
 *
 * It SETs "example:poll", GETs it back, prints the value and exits 0. The
 * library tells the loop what to watch through four hooks that just set
 * flags, and when its next deadline is through schedule_timer; the loop
 * polls the socket with that timeout and calls the matching
 * kvmux_async_handle_* function. */
#include <kvmux.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct loop {
    short events;        /* POLLIN / POLLOUT the client wants */
    long long timer_at;  /* monotonic ms of the next deadline; -1 = none */
    int done;            /* set by the last callback */
    int result;
} loop;

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The hooks: record what the library wants; never call kvmux here. */
static void add_read(void *d) { ((loop *)d)->events |= POLLIN; }
static void del_read(void *d) { ((loop *)d)->events &= (short)~POLLIN; }
static void add_write(void *d) { ((loop *)d)->events |= POLLOUT; }
static void del_write(void *d) { ((loop *)d)->events &= (short)~POLLOUT; }
static void schedule_timer(void *d, int64_t ms) {
    ((loop *)d)->timer_at = ms < 0 ? -1 : now_ms() + ms;
}

static void on_get(kvmux_client *c, int result, kvmux_reply *r, void *ud) {
    loop *l = ud;
    (void)c;
    if (result == 0) printf("example:poll = %.*s\n", (int)r->value_len, (const char *)r->value);
    l->result = result;
    l->done = 1;
}

static void on_set(kvmux_client *c, int result, kvmux_reply *r, void *ud) {
    loop *l = ud;
    (void)r;
    if (result != 0) {
        l->result = result;
        l->done = 1;
        return;
    }
    /* A callback may submit the next request. */
    kvmux_request q = {.op = KVMUX_GET, .key = "example:poll", .key_len = 12};
    if (kvmux_call_async(c, &q, 2000, on_get, l) != 0) l->done = 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    loop l = {0, -1, 0, -1};
    kvmux_client *c = NULL;
    int rc = kvmux_async_connect(&c, argv[1], (uint16_t)atoi(argv[2]), NULL);
    if (rc != 0) {
        fprintf(stderr, "connect: %s\n", kvmux_strerror(rc));
        return 1;
    }
    kvmux_async_hooks h = {&l, add_read, del_read, add_write, del_write, schedule_timer, NULL};
    if (kvmux_async_attach(c, &h) != 0) return 1;
    kvmux_request q = {.op = KVMUX_SET, .key = "example:poll", .key_len = 12,
                       .value = "hello from poll()", .value_len = 17};
    if (kvmux_call_async(c, &q, 2000, on_set, &l) != 0) return 1;

    while (!l.done) {
        int timeout = -1;
        if (l.timer_at >= 0) {
            long long left = l.timer_at - now_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        struct pollfd pfd = {kvmux_async_fd(c), l.events, 0};
        int n = poll(&pfd, 1, timeout);
        if (n < 0) break;
        /* Errors and hang-ups surface through the next read. */
        if (pfd.revents & (POLLIN | POLLERR | POLLHUP)) kvmux_async_handle_read(c);
        if (!l.done && (pfd.revents & POLLOUT)) kvmux_async_handle_write(c);
        if (!l.done && l.timer_at >= 0 && now_ms() >= l.timer_at) {
            l.timer_at = -1;
            kvmux_async_handle_timeout(c);
        }
    }
    kvmux_close(c);
    if (l.result != 0) fprintf(stderr, "request failed: %s\n", kvmux_strerror(l.result));
    return l.result == 0 ? 0 : 1;
}
