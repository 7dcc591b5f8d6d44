/* kvmux-cli cluster assign FILE --map ENDPOINTS: a map through the
 * cluster's map group (docs/CLUSTER.md "The map group").
 *
 * 1. CLUSTER setmap on the map group (the library follows NOT_LEADER to
 *    its leader): a compare-and-set on the epoch, so of two operators
 *    assigning the next epoch at once exactly one wins; the other gets
 *    the map group's VERSION_MISMATCH message and exit status 3.
 * 2. Then every group the map lists is asked (CLUSTER map, on any of its
 *    members) until it has applied the epoch or a newer one, at most
 *    ASSIGN_WAIT_MS in all: its leader's watcher installs it by itself.
 *    "group G: epoch E installed" per group on stdout; a group that did
 *    not get there in time is reported on stderr with the epoch it is at,
 *    and makes the exit status nonzero. */
#include "mapassign.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"

/* How long the groups get to install the epoch, all together. */
#define ASSIGN_WAIT_MS 10000
/* Pause between two rounds of asking the groups. */
#define ASSIGN_POLL_MS 50

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

kvmux_client *cli_map_connect(const cli_ctx *ctx, const char *endpoints, int quiet) {
    char eps[1024];
    if (strchr(endpoints, ',')) snprintf(eps, sizeof eps, "%s", endpoints);
    else snprintf(eps, sizeof eps, "%s,%s", endpoints, endpoints);
    cli_ctx sub = *ctx;
    sub.host = eps;
    sub.client = NULL;
    sub.quiet_connect = quiet;
    return cli_connect(&sub) == CLI_EXIT_OK ? sub.client : NULL;
}

int cli_map_call(kvmux_client *c, const char *sub, const void *v, size_t n, kvmux_reply *rep,
                 int timeout_ms) {
    kvmux_request r;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_CLUSTER;
    r.key = sub;
    r.key_len = strlen(sub);
    r.value = v;
    r.value_len = n;
    return kvmux_call(c, &r, rep, timeout_ms);
}

/* The epoch of the map c's node has applied: 0 none, -1 unknown. */
static long long applied_epoch(kvmux_client *c, int timeout_ms) {
    kvmux_reply rep;
    int rc = cli_map_call(c, "map", NULL, 0, &rep, timeout_ms);
    long long e = rc == KVMUX_ENOTFOUND ? 0 : -1;
    kvmux_map *m = rc == 0 ? malloc(sizeof *m) : NULL;
    if (m && kvmux_map_decode(m, rep.value, rep.value_len, NULL, 0) == 0)
        e = (long long)m->epoch;
    free(m);
    kvmux_reply_free(&rep);
    return e;
}

/* Wait until every group of m applied m->epoch (or later). */
static int wait_groups(const cli_ctx *ctx, const kvmux_map *m) {
    long long end = now_ms() + ASSIGN_WAIT_MS;
    long long at[KVMUX_MAP_MAX_GROUPS];
    kvmux_client *cl[KVMUX_MAP_MAX_GROUPS];
    int done[KVMUX_MAP_MAX_GROUPS], tries[KVMUX_MAP_MAX_GROUPS];
    for (unsigned i = 0; i < m->ngroups; i++) {
        at[i] = -1;
        cl[i] = NULL;
        done[i] = tries[i] = 0;
    }
    unsigned left = m->ngroups;
    while (left) {
        for (unsigned i = 0; i < m->ngroups; i++) {
            if (done[i]) continue;
            const kvmux_map_group *g = &m->groups[i];
            if (!cl[i]) {
                char eps[KVMUX_MAP_MAX_MEMBERS * KVMUX_MAP_ADDR_MAX + 8];
                size_t off = 0;
                for (unsigned k = 0; k < g->n; k++)
                    off += (size_t)snprintf(eps + off, sizeof eps - off, "%s%s", k ? "," : "",
                                            g->addr[k]);
                /* The reason once; the retries quietly. */
                cl[i] = cli_map_connect(ctx, eps, tries[i]++ > 0);
            }
            if (cl[i]) at[i] = applied_epoch(cl[i], ctx->timeout_ms);
            if (at[i] >= (long long)m->epoch) {
                printf("group %u: epoch %llu installed\n", g->id, (unsigned long long)m->epoch);
                done[i] = 1;
                left--;
            }
        }
        if (!left || now_ms() >= end) break;
        nap_ms(ASSIGN_POLL_MS);
    }
    for (unsigned i = 0; i < m->ngroups; i++) {
        if (!done[i] && at[i] < 0)
            fprintf(stderr, "kvmux-cli: cluster assign: group %u: not reachable; epoch %llu "
                    "not confirmed within %d s\n", m->groups[i].id,
                    (unsigned long long)m->epoch, ASSIGN_WAIT_MS / 1000);
        else if (!done[i])
            fprintf(stderr, "kvmux-cli: cluster assign: group %u: epoch %llu not installed "
                    "within %d s (the group is at epoch %lld; is it started with "
                    "--cluster-map?)\n", m->groups[i].id, (unsigned long long)m->epoch,
                    ASSIGN_WAIT_MS / 1000, at[i]);
        if (cl[i]) kvmux_close(cl[i]);
    }
    return left ? CLI_EXIT_REQUEST : CLI_EXIT_OK;
}

int cli_assign_via_map(const cli_ctx *ctx, const char *endpoints, kvmux_map *m,
                       uint8_t *wire, size_t cap) {
    kvmux_client *c = cli_map_connect(ctx, endpoints, 0);
    if (!c) {
        fprintf(stderr, "kvmux-cli: cluster assign: map group %s: not reachable\n", endpoints);
        return CLI_EXIT_CONN;
    }
    if (m->epoch == 0) {
        long long cur = applied_epoch(c, ctx->timeout_ms);
        if (cur < 0) {
            fprintf(stderr, "kvmux-cli: cluster assign: cannot read the map group's epoch\n");
            kvmux_close(c);
            return CLI_EXIT_REQUEST;
        }
        m->epoch = (uint64_t)cur + 1;
    }
    size_t n = kvmux_map_encode(m, wire, cap);
    if (n == 0) {
        fputs("kvmux-cli: cluster assign: the map does not encode\n", stderr);
        kvmux_close(c);
        return CLI_EXIT_USAGE;
    }
    kvmux_reply rep;
    int rc = cli_map_call(c, "setmap", wire, n, &rep, ctx->timeout_ms);
    kvmux_close(c);
    if (rc == 0)
        printf("map group: %.*s\n", (int)rep.value_len, (const char *)rep.value);
    else if (rep.value_len)
        fprintf(stderr, "kvmux-cli: cluster assign: map group: %.*s\n", (int)rep.value_len,
                (const char *)rep.value);
    else
        fprintf(stderr, "kvmux-cli: cluster assign: map group: %s\n", kvmux_strerror(rc));
    kvmux_reply_free(&rep);
    if (rc != 0) return kvmux_is_fatal(rc) ? CLI_EXIT_CONN : CLI_EXIT_REQUEST;
    return wait_groups(ctx, m);
}
