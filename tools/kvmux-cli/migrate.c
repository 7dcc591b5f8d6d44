/* kvmux-cli cluster migrate / cluster status --map (migrate.h). */
#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "mapassign.h"
#include "migtab.h"

#define EXIT_TIMEOUT 5
#define POLL_MS 1000
#define PROGRESS_MS 5000 /* cluster migrate's progress lines */

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void nap_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The error of a failed call, with the server's message when it gave one. */
static void say_error(const char *what, int rc, const kvmux_reply *rep) {
    if (rep->value_len)
        fprintf(stderr, "kvmux-cli: %s: %.*s\n", what, (int)rep->value_len,
                (const char *)rep->value);
    else
        fprintf(stderr, "kvmux-cli: %s: %s\n", what, kvmux_strerror(rc));
}

static int exit_of(int rc) { return kvmux_is_fatal(rc) ? CLI_EXIT_CONN : CLI_EXIT_REQUEST; }

/* CLUSTER sub (no value) on c, decoded into *m (heap, caller frees) or *t. */
static int get_map(kvmux_client *c, int timeout_ms, kvmux_map **out) {
    kvmux_reply rep;
    int rc = cli_map_call(c, "map", NULL, 0, &rep, timeout_ms);
    *out = NULL;
    if (rc == 0) {
        kvmux_map *m = malloc(sizeof *m);
        if (m && kvmux_map_decode(m, rep.value, rep.value_len, NULL, 0) == 0) *out = m;
        else free(m);
        if (!*out) rc = KVMUX_EPROTO;
    }
    if (rc != 0 && rc != KVMUX_ENOTFOUND) say_error("cluster: map group: map", rc, &rep);
    kvmux_reply_free(&rep);
    return rc;
}

static int get_table(kvmux_client *c, int timeout_ms, kvmux_migtab *t) {
    kvmux_reply rep;
    char err[128];
    int rc = cli_map_call(c, "migrations", NULL, 0, &rep, timeout_ms);
    if (rc == 0 && kvmux_migtab_decode(t, rep.value, rep.value_len, err, sizeof err) != 0) {
        fprintf(stderr, "kvmux-cli: cluster: %s\n", err);
        rc = KVMUX_EPROTO;
    } else if (rc != 0) {
        say_error("cluster: map group: migrations", rc, &rep);
    }
    kvmux_reply_free(&rep);
    return rc;
}

/* A group's members as an endpoint list. */
static void group_eps(const kvmux_map_group *g, char *eps, size_t cap) {
    size_t off = 0;
    for (unsigned k = 0; k < g->n && off < cap; k++)
        off += (size_t)snprintf(eps + off, cap - off, "%s%s", k ? "," : "", g->addr[k]);
}

/* CLUSTER slotkeys RANGE on c: the "total N" of its last line in out,
 * or "?" when the node does not answer it. */
static void slotkeys_total(const cli_ctx *ctx, kvmux_client *c, const char *range, char *out,
                           size_t cap) {
    kvmux_reply rep;
    snprintf(out, cap, "?");
    if (cli_map_call(c, "slotkeys", range, strlen(range), &rep, ctx->timeout_ms) == 0) {
        char txt[80];
        size_t n = rep.value_len, from = n > 64 ? n - 64 : 0;
        snprintf(txt, sizeof txt, "%.*s", (int)(n - from), (const char *)rep.value + from);
        const char *tot = strstr(txt, "total ");
        if (tot) snprintf(out, cap, "%llu", strtoull(tot + 6, NULL, 10));
    }
    kvmux_reply_free(&rep);
}

/* GROUP status of the node at c (key "status"): its text in out. */
static int group_status(kvmux_client *c, int timeout_ms, char *out, size_t cap) {
    kvmux_request r;
    kvmux_reply rep;
    memset(&r, 0, sizeof r);
    r.op = KVMUX_GROUP;
    r.key = "status";
    r.key_len = 6;
    int rc = kvmux_call(c, &r, &rep, timeout_ms);
    out[0] = '\0';
    if (rc == 0) snprintf(out, cap, "%.*s", (int)rep.value_len, (const char *)rep.value);
    kvmux_reply_free(&rep);
    return rc;
}

/* Every member of group gid in m shows `features: ... migrate1 ...`
 * (docs/MIGRATION.md 10.2): a replica of an older build would diverge on
 * the migration's entries. 0, or -1 after saying which one does not. */
static int check_features(const cli_ctx *ctx, const kvmux_map *m, uint16_t gid) {
    const kvmux_map_group *g = kvmux_map_group_get(m, gid);
    for (unsigned k = 0; g && k < g->n; k++) {
        kvmux_client *c = cli_map_connect(ctx, g->addr[k], 1);
        char st[4096];
        int rc = c ? group_status(c, ctx->timeout_ms, st, sizeof st) : KVMUX_ECONNECT;
        if (c) kvmux_close(c);
        const char *f = rc == 0 ? strstr(st, "features:") : NULL;
        const char *eol = f ? strchr(f, '\n') : NULL;
        const char *mig = f ? strstr(f, "migrate1") : NULL;
        if (!mig || (eol && mig > eol)) {
            fprintf(stderr, "kvmux-cli: cluster migrate: group %u member %s %s: upgrade every "
                    "replica of both groups first\n", gid, g->addr[k],
                    rc != 0 ? "does not answer GROUP status" : "does not show migrate1");
            return -1;
        }
    }
    return 0;
}

/* "F-L" or "SLOT": 0 with *first, *last, or -1. */
static int parse_range(const char *s, unsigned *first, unsigned *last) {
    char tail;
    if (sscanf(s, "%u-%u%c", first, last, &tail) == 2 ||
        (sscanf(s, "%u%c", first, &tail) == 1 && (*last = *first, 1)))
        return *first <= *last && *last < KVMUX_SLOTS ? 0 : -1;
    return -1;
}

/* While cluster migrate waits, a line on stderr every PROGRESS_MS: how
 * long the record has been open and how many keys of the range each side
 * holds (CLUSTER slotkeys, which any member answers; the target's count
 * grows during the copy, the source's falls once the janitor purges
 * after the commit), so a big move is seen advancing. */
typedef struct mig_progress {
    const kvmux_map *m;         /* the map at the start (NULL: none) */
    uint16_t src, dst;
    char range[16];
    kvmux_client *c[2];         /* source, target; connected at first use */
    long long start, next;
} mig_progress;

static void progress_keys(const cli_ctx *ctx, mig_progress *p, int side, char *out, size_t cap) {
    const kvmux_map_group *g = p->m ? kvmux_map_group_get(p->m, side ? p->dst : p->src) : NULL;
    snprintf(out, cap, "?");
    if (!g) return;
    if (!p->c[side]) {
        char eps[KVMUX_MAP_MAX_MEMBERS * KVMUX_MAP_ADDR_MAX + 8];
        group_eps(g, eps, sizeof eps);
        p->c[side] = cli_map_connect(ctx, eps, 1);
    }
    if (p->c[side]) slotkeys_total(ctx, p->c[side], p->range, out, cap);
}

static void progress_line(const cli_ctx *ctx, mig_progress *p, uint32_t id) {
    long long now = mono_ms();
    if (now < p->next) return;
    p->next = now + PROGRESS_MS;
    char sk[32], dk[32];
    progress_keys(ctx, p, 0, sk, sizeof sk);
    progress_keys(ctx, p, 1, dk, sizeof dk);
    fprintf(stderr, "migration %u: open for %lld s; slots %s: %s keys at group %u (source), "
            "%s at group %u (target)\n", id, (now - p->start) / 1000, p->range, sk,
            (unsigned)p->src, dk, (unsigned)p->dst);
}

/* Poll the table until record id ends. */
static int wait_end(const cli_ctx *ctx, kvmux_client *c, uint32_t id, uint64_t timeout_s,
                    mig_progress *p) {
    kvmux_migtab *t = malloc(sizeof *t);
    if (!t) return CLI_EXIT_REQUEST;
    long long end = timeout_s ? mono_ms() + (long long)timeout_s * 1000 : 0;
    p->start = mono_ms();
    p->next = p->start + PROGRESS_MS;
    int rc = CLI_EXIT_OK;
    for (;;) {
        int crc = get_table(c, ctx->timeout_ms, t);
        const kvmux_migrec *r = crc == 0 ? kvmux_migtab_find(t, id) : NULL;
        if (r && r->state == KVMUX_MIG_COMMITTED) {
            printf("migration %u: committed at epoch %llu\n", id,
                   (unsigned long long)r->end_epoch);
            break;
        }
        if (r && r->state == KVMUX_MIG_ABORTED) {
            fprintf(stderr, "kvmux-cli: cluster migrate: migration %u aborted: %s\n", id,
                    r->reason);
            rc = CLI_EXIT_REQUEST;
            break;
        }
        if (crc == 0 && !r) {
            fprintf(stderr, "kvmux-cli: cluster migrate: migration %u is not in the table\n", id);
            rc = CLI_EXIT_REQUEST;
            break;
        }
        if (end && mono_ms() >= end) {
            fprintf(stderr, "kvmux-cli: cluster migrate: migration %u still open after %llu s "
                    "(it goes on)\n", id, (unsigned long long)timeout_s);
            rc = EXIT_TIMEOUT;
            break;
        }
        if (r) progress_line(ctx, p, id);
        nap_ms(POLL_MS);
    }
    for (int i = 0; i < 2; i++)
        if (p->c[i]) kvmux_close(p->c[i]);
    free(t);
    return rc;
}

static int do_abort(const cli_ctx *ctx, kvmux_client *c, uint64_t id) {
    char v[32];
    int n = snprintf(v, sizeof v, "%llu", (unsigned long long)id);
    kvmux_reply rep;
    int rc = cli_map_call(c, "abort", v, (size_t)n, &rep, ctx->timeout_ms);
    if (rc == 0) printf("%.*s\n", (int)rep.value_len, (const char *)rep.value);
    else say_error("cluster migrate --abort", rc, &rep);
    kvmux_reply_free(&rep);
    return rc == 0 ? CLI_EXIT_OK : exit_of(rc);
}

int cli_migrate(const cli_ctx *ctx, const cli_mig_opts *o) {
    unsigned first = 0, last = 0;
    char *end = NULL;
    unsigned long dst = 0;
    if (!o->has_abort) {
        dst = o->group ? strtoul(o->group, &end, 10) : 0;
        if (parse_range(o->range, &first, &last) != 0 || !end || *end || dst == 0 ||
            dst > 65535) {
            fputs("kvmux-cli: cluster migrate: expected F-L|SLOT GROUP (slots 0-16383)\n", stderr);
            return CLI_EXIT_USAGE;
        }
    }
    kvmux_client *c = cli_map_connect(ctx, o->map, 0);
    if (!c) {
        fprintf(stderr, "kvmux-cli: cluster migrate: map group %s: not reachable\n", o->map);
        return CLI_EXIT_CONN;
    }
    if (o->has_abort) {
        int rc = do_abort(ctx, c, o->abort_id);
        kvmux_close(c);
        return rc;
    }
    kvmux_map *m = NULL;
    int rc = get_map(c, ctx->timeout_ms, &m);
    if (m && (check_features(ctx, m, m->owner[first]) != 0 ||
              check_features(ctx, m, (uint16_t)dst) != 0)) {
        free(m);
        kvmux_close(c);
        return CLI_EXIT_REQUEST;
    }
    if (rc != 0 && rc != KVMUX_ENOTFOUND) { /* no map: the map group says so below */
        free(m);
        kvmux_close(c);
        return exit_of(rc);
    }
    mig_progress prog = {.m = m, .src = m ? m->owner[first] : 0, .dst = (uint16_t)dst};
    snprintf(prog.range, sizeof prog.range, "%u-%u", first, last);
    char v[64];
    int n = first == last ? snprintf(v, sizeof v, "%u %lu", first, dst)
                          : snprintf(v, sizeof v, "%u-%u %lu", first, last, dst);
    kvmux_reply rep;
    rc = cli_map_call(c, "migrate", v, (size_t)n, &rep, ctx->timeout_ms);
    unsigned id = 0;
    if (rc == 0) {
        printf("%.*s\n", (int)rep.value_len, (const char *)rep.value);
        char msg[256];
        snprintf(msg, sizeof msg, "%.*s", (int)rep.value_len, (const char *)rep.value);
        if (sscanf(msg, "migration %u:", &id) != 1) rc = KVMUX_EPROTO;
    } else {
        say_error("cluster migrate", rc, &rep);
    }
    kvmux_reply_free(&rep);
    int out = rc != 0     ? exit_of(rc)
              : o->no_wait ? CLI_EXIT_OK
                           : wait_end(ctx, c, id, o->timeout_s, &prog);
    free(m);
    kvmux_close(c);
    return out;
}

/* ---- cluster status --map ---- */

static void print_age(uint64_t ms, char *out, size_t cap) {
    uint64_t s = ms / 1000;
    if (s < 120) snprintf(out, cap, "%llus", (unsigned long long)s);
    else if (s < 7200) snprintf(out, cap, "%llum", (unsigned long long)(s / 60));
    else if (s < 172800) snprintf(out, cap, "%lluh", (unsigned long long)(s / 3600));
    else snprintf(out, cap, "%llud", (unsigned long long)(s / 86400));
}

/* One line per group: its slots, keys (slotkeys' total) and leader. */
static void print_group(const cli_ctx *ctx, const kvmux_map *m, const kvmux_map_group *g) {
    uint32_t slots = 0;
    for (uint32_t s = 0; s < KVMUX_SLOTS; s++) slots += m->owner[s] == g->id;
    char eps[KVMUX_MAP_MAX_MEMBERS * KVMUX_MAP_ADDR_MAX + 8], keys[32] = "?", leader[80] = "?";
    group_eps(g, eps, sizeof eps);
    kvmux_client *c = cli_map_connect(ctx, eps, 1);
    if (c) {
        slotkeys_total(ctx, c, "0-16383", keys, sizeof keys);
        char st[4096];
        if (group_status(c, ctx->timeout_ms, st, sizeof st) == 0) {
            const char *la = strstr(st, "leader_addr:");
            if (la) {
                la += 12;
                size_t k = strcspn(la, "\n");
                if (k) snprintf(leader, sizeof leader, "%.*s", (int)k, la);
            }
        }
        kvmux_close(c);
    }
    printf("group %u  slots %u  keys %s  leader %s\n", g->id, slots, keys, leader);
}

static void print_table(const kvmux_migtab *t) {
    printf("%-3s %-11s %-5s %-3s %-10s %-5s %s\n", "ID", "SLOTS", "FROM", "TO", "STATE", "AGE",
           "DETAIL");
    uint64_t now = wall_ms();
    for (uint16_t i = 0; i < t->n; i++) {
        const kvmux_migrec *r = &t->rec[i];
        char slots[16], age[16], id[16], from[8], to[8], detail[300];
        snprintf(slots, sizeof slots, "%u-%u", r->first, r->last);
        snprintf(id, sizeof id, "%u", r->id);
        snprintf(from, sizeof from, "%u", r->src);
        snprintf(to, sizeof to, "%u", r->dst);
        print_age(now > r->created_ms ? now - r->created_ms : 0, age, sizeof age);
        const char *state = r->state == KVMUX_MIG_OPEN        ? "open"
                            : r->state == KVMUX_MIG_COMMITTED ? "committed"
                                                              : "aborted";
        if (r->state == KVMUX_MIG_OPEN)
            snprintf(detail, sizeof detail, "start epoch %llu", (unsigned long long)r->start_epoch);
        else
            snprintf(detail, sizeof detail, "acks %s%s%s",
                     r->acks == 0 ? "none" : r->acks == 1 ? "src" : r->acks == 2 ? "dst" : "src,dst",
                     r->reason_len ? "; " : "", r->reason);
        printf("%-3s %-11s %-5s %-3s %-10s %-5s %s\n", id, slots, from, to, state, age, detail);
    }
}

int cli_migrate_status(const cli_ctx *ctx, const char *map) {
    kvmux_client *c = cli_map_connect(ctx, map, 0);
    if (!c) {
        fprintf(stderr, "kvmux-cli: cluster status: map group %s: not reachable\n", map);
        return CLI_EXIT_CONN;
    }
    kvmux_map *m = NULL;
    kvmux_migtab *t = malloc(sizeof *t);
    int rc = t ? get_map(c, ctx->timeout_ms, &m) : KVMUX_ENOMEM;
    if (t && (rc == 0 || rc == KVMUX_ENOTFOUND)) rc = get_table(c, ctx->timeout_ms, t);
    kvmux_close(c);
    if (rc == 0) {
        printf("epoch %llu  mgen %llu\n", (unsigned long long)(m ? m->epoch : 0),
               (unsigned long long)t->mgen);
        for (unsigned i = 0; m && i < m->ngroups; i++) print_group(ctx, m, &m->groups[i]);
        print_table(t);
    }
    free(m);
    free(t);
    return rc == 0 ? CLI_EXIT_OK : exit_of(rc);
}
