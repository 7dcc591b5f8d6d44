/* bench/hol/hol_kvmux.c: head-of-line blocking measurement against kvmuxd.
 *
 * One kvmux client (one TCP connection, threaded mode). The main thread
 * issues 3-byte GETs one at a time and logs each round trip:
 * (with -w 1: 3-byte SETs; with -E: a replicated group through libkvmux's
 * endpoint list, so the big SET replicates while the small ones wait)
 *   phase idle: for -d seconds with nothing else on the connection;
 *   phase busy: while another thread, sharing the same client, runs a
 *     -s MiB SET and then a GET of that value (checked byte for byte),
 *     -r times; only the small GETs issued while the big SET or the big
 *     GET is in flight are logged (not those in the gap between them).
 * Prints one RESULT line per phase (see hol_common.h). bench/hol.sh starts
 * the server and compares with hol_redis.c, which does the same over RESP.
 * What it is not: a throughput benchmark (tools/kvmux-bench). */
#include <pthread.h>
#include <stdatomic.h>

#include "hol_common.h"
#include "kvmux.h"

#define CALL_TIMEOUT_MS 60000 /* every call bounded; a 64 MiB move takes < 1 s */

typedef struct big_arg {
    kvmux_client *c;
    const uint8_t *v;
    size_t len;
    atomic_int busy; /* 1 while a big SET or GET is in flight */
    atomic_int done; /* the round is over */
    int rc;          /* 0, or the first failure */
    double set_ms, get_ms;
} big_arg;

/* One round: the big SET then the big GET, timed; busy is raised while
 * each is in flight (not in the gap between them, nor during the check),
 * done at the end. Sets a->rc on failure. */
static void *big_round(void *p) {
    big_arg *a = p;
    atomic_store(&a->busy, 1);
    int64_t t = now_us();
    int rc = kvmux_set(a->c, "huge", 4, a->v, a->len, 0, NULL, CALL_TIMEOUT_MS);
    a->set_ms = (double)(now_us() - t) / 1000.0;
    atomic_store(&a->busy, 0);
    if (rc == 0) {
        kvmux_value *out = NULL;
        atomic_store(&a->busy, 1);
        t = now_us();
        rc = kvmux_get(a->c, "huge", 4, &out, CALL_TIMEOUT_MS);
        a->get_ms = (double)(now_us() - t) / 1000.0;
        /* The transfer is over: the check below is not part of it. */
        atomic_store(&a->busy, 0);
        if (rc == 0 && (!out || out->len != a->len || memcmp(out->data, a->v, a->len) != 0)) {
            fprintf(stderr, "hol_kvmux: big GET returned the wrong bytes\n");
            rc = KVMUX_EPROTO;
        }
        kvmux_value_free(out);
    }
    a->rc = rc;
    atomic_store(&a->busy, 0);
    atomic_store(&a->done, 1);
    return NULL;
}

static int g_small_writes; /* -w 1: the small requests are SETs */

/* One small GET (or SET with -w 1), timed into l (if not NULL). Returns 0,
 * or -1 after printing why (an error, or a reply that is not "abc"). */
static int small_get(kvmux_client *c, lat_log *l) {
    kvmux_value *out = NULL;
    int64_t t = now_us();
    int rc = g_small_writes ? kvmux_set(c, "s", 1, "abc", 3, 0, NULL, CALL_TIMEOUT_MS)
                            : kvmux_get(c, "s", 1, &out, CALL_TIMEOUT_MS);
    int64_t dt = now_us() - t;
    int ok = rc == 0 && (g_small_writes ||
                         (out && out->len == 3 && memcmp(out->data, "abc", 3) == 0));
    kvmux_value_free(out);
    if (!ok) {
        fprintf(stderr, "hol_kvmux: small GET: %s\n", rc ? kvmux_strerror(rc) : "wrong value");
        return -1;
    }
    if (l) lat_add(l, dt);
    return 0;
}

int main(int argc, char **argv) {
    hol_args args;
    parse_args(argc, argv, &args);
    kvmux_options o;
    kvmux_options_init(&o);
    o.request_timeout_ms = CALL_TIMEOUT_MS;
    o.max_value_size = (uint32_t)(args.big > 64 * (size_t)HOL_MiB ? args.big : 64 * HOL_MiB);
    o.client_name = "hol_kvmux";
    o.endpoints = args.endpoints;
    g_small_writes = args.small_writes;
    kvmux_client *c = NULL;
    int rc = args.endpoints ? kvmux_connect(&c, NULL, 0, &o)
                            : kvmux_connect(&c, args.host, (uint16_t)args.port, &o);
    if (rc != 0) {
        char msg[256];
        kvmux_connection_error(NULL, msg, sizeof msg);
        fprintf(stderr, "hol_kvmux: connect: %s (%s)\n", kvmux_strerror(rc), msg);
        return 1;
    }
    kvmux_server_info info;
    kvmux_get_server_info(c, &info);
    if (info.protocol_version < 2 || info.max_value_size < args.big) {
        fprintf(stderr, "hol_kvmux: server offers protocol v%u, values up to %u bytes: "
                        "need v2 and %zu (start kvmuxd with --max-value)\n",
                (unsigned)info.protocol_version, (unsigned)info.max_value_size, args.big);
        kvmux_close(c);
        return 1;
    }
    lat_log idle, busy;
    uint8_t *v = pattern(args.big);
    if (lat_init(&idle) || lat_init(&busy) || !v) {
        fprintf(stderr, "hol_kvmux: out of memory\n");
        return 1;
    }
    int fail = kvmux_set(c, "s", 1, "abc", 3, 0, NULL, CALL_TIMEOUT_MS) != 0;
    /* Warm-up: connection, allocator, caches. */
    for (int i = 0; i < 1000 && !fail; i++) fail = small_get(c, NULL) != 0;

    /* Phase 1: idle. */
    int64_t end = now_us() + (int64_t)(args.idle_s * 1e6);
    while (!fail && now_us() < end && idle.n < HOL_MAX_SAMPLES) fail = small_get(c, &idle) != 0;

    /* Phase 2: the same GETs while the big transfers run. */
    double set_ms = 0, get_ms = 0;
    for (unsigned r = 0; r < args.rounds && !fail; r++) {
        big_arg a = {.c = c, .v = v, .len = args.big, .rc = 0};
        atomic_init(&a.busy, 0);
        atomic_init(&a.done, 0);
        pthread_t th;
        if (pthread_create(&th, NULL, big_round, &a) != 0) {
            fail = 1;
            break;
        }
        while (!fail && !atomic_load(&a.done))
            fail = small_get(c, atomic_load(&a.busy) ? &busy : NULL) != 0;
        pthread_join(th, NULL);
        if (a.rc != 0) {
            fprintf(stderr, "hol_kvmux: round %u: %s\n", r, kvmux_strerror(a.rc));
            fail = 1;
        }
        set_ms += a.set_ms;
        get_ms += a.get_ms;
        fprintf(stderr, "hol_kvmux: round %u: %zu MiB SET %.1f ms, GET %.1f ms\n", r,
                args.big / HOL_MiB, a.set_ms, a.get_ms);
    }
    if (!fail) {
        report("kvmux", "idle", &idle, -1, -1);
        report("kvmux", "busy", &busy, set_ms / args.rounds, get_ms / args.rounds);
    }
    kvmux_close(c);
    free(v);
    free(idle.us);
    free(busy.us);
    return fail ? 1 : 0;
}
