/* The OUT_OF_MEMORY status end to end: the real kvmuxd with a small
 * --maxmemory (noeviction), libkvmux clients over real sockets, and the
 * real kvmux-cli.
 *
 * Checks: once the store is over the limit, a v2 client's SET, INCR and CAS
 * fail with KVMUX_EOOM (request-level: the connection goes on), while on
 * the same server at the same time a v1 client gets KVMUX_EBUSY for the
 * same refusal (it does not know status 13) and reads, STATS and DEL work
 * on every connection; DEL makes room and the next write succeeds; the
 * STATS counters oom_refused and responses_out_of_memory count the
 * refusals (v1 refusals only in the first); kvmux-cli prints the new
 * message with its hint and exits 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "kvmux.h"
#include "testutil.h"

static test_server g_srv;

static kvmux_client *connect_v(int max_version) {
    kvmux_options o;
    kvmux_options_init(&o);
    o.max_protocol_version = (uint8_t)max_version;
    kvmux_client *c = NULL;
    REQUIRE(kvmux_connect(&c, "127.0.0.1", g_srv.port, &o) == 0);
    return c;
}

/* A STATS counter of c's server, or -1. */
static long long stat_of(kvmux_client *c, const char *name) {
    kvmux_value *v = NULL;
    if (kvmux_stats(c, name, &v, 5000) != 0) return -1;
    long long r = -1;
    size_t nl = strlen(name);
    for (const char *p = (const char *)v->data; p && *p;) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
            r = atoll(p + nl + 1);
            break;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    kvmux_value_free(v);
    return r;
}

static void test_oom(void) {
    kvmux_client *a = connect_v(2); /* the writer */
    kvmux_client *b = connect_v(1); /* a v1 peer */
    kvmux_client *r = connect_v(2); /* an unrelated reader */
    static char big[1000];
    memset(big, 'm', sizeof big);
    int rc = 0, n = 0;
    for (; n < 2000; n++) {
        char k[32];
        snprintf(k, sizeof k, "oom:%d", n);
        rc = kvmux_set(a, k, strlen(k), big, sizeof big, 0, NULL, 5000);
        if (rc != 0) break;
    }
    printf("oom: %d writes of 1000 B accepted under --maxmemory 200K, then %s\n", n,
           kvmux_strerror(rc));
    CHECK_EQ(rc, KVMUX_EOOM);
    CHECK(!kvmux_is_fatal(rc));
    CHECK(n > 100 && n < 250);
    CHECK(strstr(kvmux_strerror(KVMUX_EOOM), "out of memory") != NULL);
    /* Every kind of write is refused; the connection stays usable. */
    int64_t num = 0;
    CHECK_EQ(kvmux_incr(a, "ctr", 3, 1, &num, 5000), KVMUX_EOOM);
    CHECK_EQ(kvmux_cas(a, "fresh", 5, 0, "x", 1, 0, NULL, 5000), KVMUX_EOOM);
    kvmux_value *v = NULL;
    CHECK_EQ(kvmux_get(a, "oom:0", 5, &v, 5000), 0);
    CHECK(v && v->len == sizeof big);
    kvmux_value_free(v);
    /* The v1 peer gets BUSY for the same refusal, and reads go on. */
    CHECK_EQ(kvmux_set(b, "v1key", 5, "x", 1, 0, NULL, 5000), KVMUX_EBUSY);
    v = NULL;
    CHECK_EQ(kvmux_get(b, "oom:1", 5, &v, 5000), 0);
    kvmux_value_free(v);
    /* Another client is served normally meanwhile. */
    for (int i = 0; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof k, "oom:%d", i);
        v = NULL;
        CHECK_EQ(kvmux_get(r, k, strlen(k), &v, 5000), 0);
        kvmux_value_free(v);
    }
    CHECK_EQ(kvmux_get(r, "absent", 6, &v, 5000), KVMUX_ENOTFOUND);
    /* Counters: 3 v2 refusals + 1 v1 refusal so far. */
    long long refused = stat_of(r, "oom_refused");
    long long resp_oom = stat_of(r, "responses_out_of_memory");
    printf("oom: STATS oom_refused %lld, responses_out_of_memory %lld\n", refused, resp_oom);
    CHECK_EQ(refused, 4);
    CHECK_EQ(resp_oom, 3);
    /* kvmux-cli: message, hint, exit code 3. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -h 127.0.0.1 -p %u set clikey val 2>&1", KVMUX_CLI_PATH,
             (unsigned)g_srv.port);
    FILE *p = popen(cmd, "r");
    REQUIRE(p != NULL);
    char out[1024];
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    printf("oom: kvmux-cli set: exit %d, \"%.*s\"\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
           (int)strcspn(out, "\n"), out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    CHECK(strstr(out, "server out of memory") != NULL);
    CHECK(strstr(out, "--maxmemory") != NULL);
    /* DEL works over the limit and makes room; writes are accepted again. */
    for (int i = 0; i < 20; i++) {
        char k[32];
        snprintf(k, sizeof k, "oom:%d", i);
        CHECK_EQ(kvmux_del(r, k, strlen(k), 5000), 0);
    }
    CHECK_EQ(kvmux_set(a, "after", 5, big, sizeof big, 0, NULL, 5000), 0);
    CHECK_EQ(kvmux_set(b, "after1", 6, "x", 1, 0, NULL, 5000), 0);
    CHECK_EQ(kvmux_connection_error(a, NULL, 0), 0);
    CHECK_EQ(kvmux_connection_error(b, NULL, 0), 0);
    kvmux_close(a);
    kvmux_close(b);
    kvmux_close(r);
}

int main(void) {
    const char *args[] = {"--maxmemory", "200K", NULL};
    REQUIRE(test_server_start(&g_srv, args) == 0);
    test_oom();
    CHECK_EQ(test_server_stop(&g_srv, 5000), 0);
    return test_report();
}
