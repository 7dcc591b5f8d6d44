/* The map group's migration requests (docs/MIGRATION.md 10.1), CLUSTER
 * subcommands of opcode 16:
 *
 *   migrate        ASCII "FIRST-LAST DST" or "SLOT DST" (<= 64 bytes):
 *                  MIGREC CREATE through the log (leader).
 *   migrations     empty: this member's applied table (KVMG, migtab.h).
 *   mwatch         u64 mgen [u32 wait_ms]: parked like watch until the
 *                  table's mgen exceeds it, then the table (leader).
 *   abort          ASCII "ID [REASON]" (<= 256 bytes, REASON <= 200
 *                  printable): MIGREC ABORT.
 *   migrate-commit u32 id: MIGREC COMMIT (a source's migrator; installs
 *                  map epoch + 1 in the same entry).
 *   migrate-ack    u32 id, u16 group: MIGREC ACK.
 *
 * Only on the map group (--cluster-map-group). Every rule is checked when
 * the entry applies (migtab.c), so two operators racing get one answer
 * each; here only the request's syntax. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

#include "entry.h"
#include "fsm.h"
#include "migrec.h"

#define MIGRATE_ARG_MAX 64u
#define ABORT_ARG_MAX 256u

static const char *const subs[] = {"migrate", "migrations", "mwatch", "abort", "migrate-commit",
                                   "migrate-ack"};
enum { SUB_MIGRATE, SUB_MIGRATIONS, SUB_MWATCH, SUB_ABORT, SUB_COMMIT, SUB_ACK, SUB_NONE };

static int which(const kvmux_frame *f) {
    for (int i = 0; i < SUB_NONE; i++) {
        size_t n = strlen(subs[i]);
        if (f->key_len == n && memcmp(f->key, subs[i], n) == 0) return i;
    }
    return SUB_NONE;
}

int kvmux__migreq_is_sub(const kvmux_frame *f) { return which(f) != SUB_NONE; }

static void bad(kvmux_conn *c, uint32_t id, const char *msg) {
    kvmux__conn_respond(c, id, KVMUX_STATUS_BAD_REQUEST, NULL, 0, msg);
}

/* A decimal number at *p (advanced past it), at most max: 0 with *v, or
 * -1 (no digit, leading zeros, over max). */
static int parse_num(const char **p, const char *end, uint64_t max, uint64_t *v) {
    const char *s = *p;
    uint64_t x = 0;
    if (s == end || *s < '0' || *s > '9' || (*s == '0' && s + 1 < end && s[1] >= '0' && s[1] <= '9'))
        return -1;
    while (s < end && *s >= '0' && *s <= '9') {
        x = x * 10 + (uint64_t)(*s++ - '0');
        if (x > max) return -1;
    }
    *p = s;
    *v = x;
    return 0;
}

/* "FIRST-LAST DST" or "SLOT DST": the CREATE value (u16 first, last, dst). */
static int parse_migrate(const kvmux_frame *f, uint8_t out[6]) {
    const char *p = (const char *)f->value, *end = p + f->value_len;
    uint64_t first, last, dst;
    if (f->value_len > MIGRATE_ARG_MAX || parse_num(&p, end, KVMUX_SLOTS - 1, &first) != 0)
        return -1;
    last = first;
    if (p < end && *p == '-' && (++p, parse_num(&p, end, KVMUX_SLOTS - 1, &last) != 0)) return -1;
    if (p == end || *p++ != ' ' || parse_num(&p, end, 65535, &dst) != 0 || p != end || dst == 0 ||
        first > last)
        return -1;
    kvmux_store_u16be(out, (uint16_t)first);
    kvmux_store_u16be(out + 2, (uint16_t)last);
    kvmux_store_u16be(out + 4, (uint16_t)dst);
    return 0;
}

/* "ID [REASON]": the ABORT value (u32 id, reason) in out; its length, or
 * 0 with *why set. */
static size_t parse_abort(const kvmux_frame *f, uint8_t *out, const char **why) {
    const char *p = (const char *)f->value, *end = p + f->value_len;
    uint64_t id;
    *why = "abort takes ID [REASON]";
    if (f->value_len > ABORT_ARG_MAX || parse_num(&p, end, UINT32_MAX, &id) != 0 || id == 0)
        return 0;
    if (p < end && *p++ != ' ') return 0;
    size_t rl = (size_t)(end - p);
    if (rl > KVMUX_MIG_REASON_MAX) {
        *why = "the reason is over 200 bytes";
        return 0;
    }
    for (size_t i = 0; i < rl; i++)
        if ((uint8_t)p[i] < 0x20 || (uint8_t)p[i] > 0x7e) {
            *why = "the reason must be printable ASCII";
            return 0;
        }
    kvmux_store_u32be(out, (uint32_t)id);
    memcpy(out + 4, p, rl);
    return 4 + rl;
}

static int propose(kvmux_conn *c, uint32_t id, uint8_t step, const uint8_t *v, size_t n) {
    kvmux_entry_cmd cmd = {.op = KVMUX_ENTRY_OP_MIGREC, .extras_len = 1, .extras = &step,
                           .value_len = (uint32_t)n, .value = v};
    return kvmux__repl_propose(c, id, &cmd);
}

int kvmux__migreq_request(kvmux_conn *c, const kvmux_frame *f) {
    uint32_t id = f->request_id;
    int sub = which(f);
    if (!c->loop->srv->cfg.cluster_map_group || !kvmux__repl_cluster(c->loop->srv)) {
        bad(c, id, "migrations are recorded on the map group (--cluster-map-group)");
        return 0;
    }
    uint8_t v[KVMUX_MIGREC_VALUE_MAX];
    switch (sub) {
    case SUB_MIGRATE:
        if (parse_migrate(f, v) != 0) {
            bad(c, id, "migrate takes FIRST-LAST DST or SLOT DST (slots 0-16383, DST a group)");
            return 0;
        }
        return propose(c, id, KVMUX_MIGREC_CREATE, v, 6);
    case SUB_MIGRATIONS:
        if (f->value_len) bad(c, id, "migrations takes no argument");
        else kvmux__migreq_respond_table(c, id);
        return 0;
    case SUB_MWATCH:
        return kvmux__mapwatch_park(c, f, 1);
    case SUB_ABORT: {
        const char *why;
        size_t n = parse_abort(f, v, &why);
        if (!n) {
            bad(c, id, why);
            return 0;
        }
        return propose(c, id, KVMUX_MIGREC_ABORT, v, n);
    }
    case SUB_COMMIT:
        if (f->value_len != 4) {
            bad(c, id, "migrate-commit takes u32 id (4 bytes)");
            return 0;
        }
        return propose(c, id, KVMUX_MIGREC_COMMIT, f->value, 4);
    case SUB_ACK:
        if (f->value_len != 6) {
            bad(c, id, "migrate-ack takes u32 id, u16 group (6 bytes)");
            return 0;
        }
        return propose(c, id, KVMUX_MIGREC_ACK, f->value, 6);
    default:
        bad(c, id, "unknown migration subcommand");
        return 0;
    }
}

void kvmux__migreq_done(kvmux_conn *c, uint32_t id, const kvmux_fsm_result *res) {
    kvmux_migres m;
    char msg[KVMUX_MAX_STATUS_MSG];
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(c->loop->srv);
    if (!cl || kvmux_migrec_result_get(res, &m) != 0) {
        kvmux__conn_respond(c, id, res->status, NULL, 0,
                            res->status == KVMUX_STATUS_OK ? NULL : "migration step failed");
        return;
    }
    if (m.status == KVMUX_STATUS_INTERNAL && m.why == KVMUX_MIGR_MALFORMED)
        snprintf(msg, sizeof msg, "out of memory");
    else
        kvmux_migrec_message(cl, &m, msg, sizeof msg);
    kvmux__conn_respond(c, id, m.status, NULL, 0, msg);
}

void kvmux__migreq_respond_table(kvmux_conn *c, uint32_t id) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(c->loop->srv);
    uint8_t *b = NULL;
    size_t n = 0;
    uint64_t mgen;
    if (!cl || kvmux_migrec_table_bytes(cl, &b, &n, &mgen) != 0) {
        kvmux__conn_respond(c, id, KVMUX_STATUS_INTERNAL, NULL, 0, "out of memory");
        return;
    }
    kvmux__conn_respond_bytes(c, id, KVMUX_STATUS_OK, b, n);
    free(b);
}

uint64_t kvmux__migreq_mgen(kvmux_server *s) {
    kvmux_fsm_cluster *cl = s->cfg.cluster_map_group ? kvmux__repl_cluster(s) : NULL;
    uint64_t mgen = 0;
    uint32_t o, k, a;
    if (cl) kvmux_migrec_info(cl, &mgen, &o, &k, &a);
    return mgen;
}

void kvmux__migreq_stats(kvmux_server *s, void *o,
                         void (*u64line)(void *o, const char *name, uint64_t v)) {
    kvmux_fsm_cluster *cl = kvmux__repl_cluster(s);
    uint64_t mgen = 0;
    uint32_t open = 0, committed = 0, aborted = 0;
    if (cl) kvmux_migrec_info(cl, &mgen, &open, &committed, &aborted);
    u64line(o, "cluster_mgen", mgen);
    u64line(o, "cluster_migrations_open", open);
    u64line(o, "cluster_migrations_committed", committed);
    u64line(o, "cluster_migrations_aborted", aborted);
}
