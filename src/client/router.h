/* The cluster handle's router, as cluster.c and cluster_direct.c both
 * read it (libkvmux-internal; see cluster.c's header for the design).
 * Everything in it is guarded by the cluster handle's mutex.
 */
#ifndef KVMUX_CLIENT_ROUTER_H
#define KVMUX_CLIENT_ROUTER_H

#include <pthread.h>
#include <stdint.h>

#include "client_internal.h"
#include "cluster.h"

/* Groups a router knows at most (the map's, plus those learned from
 * redirects). */
#define CL_MAX_GROUPS (KVMUX_MAP_MAX_GROUPS * 2u)
/* TRY_AGAIN backoff: from 2 ms, doubling, capped at 100 ms, each wait
 * uniform in [b/2, b]. */
#define CL_BACKOFF_MIN_MS 2u
#define CL_BACKOFF_MAX_MS 100u
/* A group whose sub-client could not be made: requests fail fast with
 * the reason for this long, then the next one tries again. */
#define CL_FAIL_HOLD_MS 100
/* A hop refused with KVMUX_EAGAIN (the sub-client's queue is full) after
 * the first: tried again this much later, within its deadline. */
#define CL_EAGAIN_RETRY_MS 1
/* Finished hops kept for reuse (a hop per request otherwise costs a
 * calloc and a free); beyond this many they are freed. */
#define CL_HOP_CACHE 256u
/* gidx: this slot's owner is found in map->owner (a group at index
 * 254 or beyond). */
#define CL_GIDX_MAP 255u
/* Runs of slots (one owner each) a map may have for the run table
 * (gidx otherwise). */
#define CL_RUNS_MAX 16u
/* A comma-separated member list. */
#define CL_EP_MAX (KVMUX_MAP_MAX_MEMBERS * KVMUX_MAP_ADDR_MAX)

typedef enum cl_gstate {
    CG_IDLE = 0,       /* no sub-client yet */
    CG_CONNECTING = 1, /* its connect thread runs */
    CG_READY = 2,      /* sub is usable */
    CG_FAILED = 3      /* the last connect failed (fail_code, fail_until) */
} cl_gstate;

typedef struct kvmux__cgroup {
    uint16_t id;
    uint16_t idx;                  /* its index in the router's groups[] */
    uint8_t state;                 /* cl_gstate */
    uint8_t thread_live;           /* thread must be joined */
    pthread_t thread;
    char endpoints[CL_EP_MAX];     /* "host:port,...", from the map or a redirect */
    kvmux_client *sub;             /* READY: its client (until close) */
    int fail_code;
    int64_t fail_until;
    kvmux_client *c;               /* the cluster handle (connect thread) */
    /* event-loop mode: the sub-client's wishes, as its hooks state them */
    uint32_t events;               /* EPOLLIN | EPOLLOUT wanted */
    uint32_t armed;                /* of them in the epoll set (in_epoll) */
    int in_epoll;                  /* its fd is in the handle's epoll set */
    int64_t timer_at;              /* its timer (monotonic ms), INT64_MAX none */
} kvmux__cgroup;

/* One sub-request: a routed op's hop, or a map refresh. */
typedef struct kvmux__hop {
    kvmux_client *c;
    kvmux__op *op;                 /* NULL: the op completed meanwhile */
    kvmux__cgroup *g;
    kvmux_handle h;
    int refresh;
    struct kvmux__hop *next;       /* on the router's free_hops */
} kvmux__hop;

typedef struct kvmux__router kvmux__router;
struct kvmux__router {
    kvmux_map *map;                /* the map routed by (slots patched by redirects) */
    uint16_t seed_group;
    kvmux__cgroup *groups[CL_MAX_GROUPS];
    uint32_t ngroups;
    kvmux__op *routed;             /* every ROUTED op */
    uint32_t nrouted;              /* of them: how many (the timer heap
                                      keeps room for all: a park cannot
                                      fail) */
    uint32_t nparked;              /* of them parked */
    uint32_t nretry;               /* of them parked for a retry time */
    int refreshing;                /* a CLUSTER map request is in flight */
    uint64_t refresh_for;          /* highest epoch a refresh was started for */
    uint64_t refreshes, redirects, try_agains, stale;
    uint64_t member_updates;       /* sub-clients given a newer member list */
    int closing;
    int subs_closed;               /* kvmux_close has closed the sub-clients:
                                      no direct request's callback can be
                                      queued to the handle any more */
    pthread_cond_t gcond;          /* a group's state changed */
    uint64_t rng;                  /* backoff jitter (xorshift64) */
    kvmux__hop *free_hops;         /* finished hops, for reuse */
    uint32_t nfree_hops;
    uint32_t nepoll;               /* event-loop mode: groups in the epoll set */
    kvmux_options sub_opts;        /* the strings below are its own */
    char *str[7];
    /* The slot map as the submit path reads it: per slot, 1 + the index
     * in groups[] of its owner; 0 unassigned (or its group could not be
     * learned); CL_GIDX_MAP: look in map->owner (a group at index >=
     * CL_GIDX_MAP - 1). One byte a slot (16 KiB, against the map's 32
     * KiB of group ids) and no search of groups[]: the lookup was a cache
     * miss per request in profiles (docs/BENCHMARKS.md). Kept equal to
     * map->owner by cl_gidx_build and cl_redirect. */
    uint8_t gidx[KVMUX_SLOTS];
    /* The same, as runs of slots, when the map has at most CL_RUNS_MAX
     * (maps are assigned by ranges): run i covers the slots up to
     * run_end[i] (ascending; the last is KVMUX_SLOTS - 1) with gidx value
     * run_g[i]. A few bytes in one cache line, where 16 KiB read at a
     * random slot missed the cache (and the TLB) even so. nruns 0: read
     * gidx (more runs, or a redirect patched a slot since the map was
     * installed). */
    uint32_t nruns;
    uint16_t run_end[CL_RUNS_MAX];
    uint8_t run_g[CL_RUNS_MAX];
};

/* 1 if requests of op are routed by their key's slot (lock not needed). */
int kvmux__cl_keyed(int op);
/* The group request q goes to (rgroup: the group a redirect named, 0 to
 * route by the map), made if new; NULL when none can be (table full, out
 * of memory). Lock held. */
kvmux__cgroup *kvmux__cl_target(kvmux_client *c, const kvmux_request *q, uint16_t rgroup);
/* op (a handle op made from a direct request, ROUTED, on no list) joins
 * the router and follows its answer from group from: WRONG_SHARD (reply's
 * value names the owner) or TRY_AGAIN (a backoff). Lock held. Returns 0,
 * or KVMUX_ENOMEM with op on no list (the caller recycles it). */
int kvmux__cl_take_back(kvmux_client *c, kvmux__op *op, kvmux__cgroup *from, int result,
                        kvmux_reply *reply);

#endif
