/* Helpers shared by the slot migration tests with real processes
 * (migrate_move_test, migrate_timeout_test, migrate_fault_test): the map
 * group's table, a group's per-range key count, kvmux-cli runs, a map file assigned. Every
 * wait is bounded; a setup failure ends the test through REQUIRE. */
#ifndef KVMUX_MIGTEST_H
#define KVMUX_MIGTEST_H

#include <stddef.h>
#include <stdint.h>

#include "kvmux.h"
#include "migtab.h"
#include "rgroup.h"

/* Run the shell command cmd, its output (stdout, and stderr if cmd says
 * 2>&1) into out[0..cap) NUL-terminated. Returns its exit status, -1 if
 * it did not exit. */
int migt_run(const char *cmd, char *out, size_t cap);

/* The map group's table through any member of mg that answers (the
 * leader; a follower answers NOT_LEADER; each at rgroup_host) into *t.
 * 0, or -1. */
int migt_table(const rgroup *mg, kvmux_migtab *t);

/* Record id of the table into *out, waited for up to wait_ms to be ended
 * with both acks when ended is 1 (else the first answer). 0 when found
 * (and, with ended, ended with acks 3), else -1 (*out: the last seen). */
int migt_record(const rgroup *mg, uint32_t id, int ended, int wait_ms, kvmux_migrec *out);

/* Record id once it left OPEN (not waiting for its acks), waited for up
 * to wait_ms; the last seen (state OPEN, or zeroed) if it did not. */
kvmux_migrec migt_wait_ended(const rgroup *mg, uint32_t id, int wait_ms);

/* SIGSTOP / SIGCONT member 0 of g (a one-member group, e.g. a target);
 * while stopped it is marked down, so rgroup_stat* does not wait for it. */
void migt_sigstop(rgroup *g);
void migt_sigcont(rgroup *g);

/* The total of CLUSTER slotkeys first-last on the member at port, or -1. */
long long migt_slotkeys(uint16_t port, int first, int last);
/* migt_slotkeys on the member at host:port (rgroup_host). */
long long migt_slotkeys_at(const char *host, uint16_t port, int first, int last);

/* The map group's current epoch (from its leader's STATS), or 0. */
uint64_t migt_map_epoch(const rgroup *mg);

/* CLUSTER migrate first-last dst on the map group's first member (not
 * kvmux-cli, which asks both groups' members for their GROUP status
 * first: a test may have stopped one); the new record's id. A refusal
 * ends the test (REQUIRE). */
uint32_t migt_start_move(const rgroup *mg, int first, int last, int dst);

/* A fill's request i: fn sets rq's op, key and value. Its bytes must
 * stay valid until request i + MIGT_FILL_DEPTH is built: fn keeps them
 * in storage of its own indexed by slot (0..MIGT_FILL_DEPTH-1). */
#define MIGT_FILL_DEPTH 64
typedef void (*migt_fill_fn)(int i, int slot, void *ud, kvmux_request *rq);

/* n requests from fn at the member at port, MIGT_FILL_DEPTH in flight;
 * every one must succeed (REQUIRE). */
void migt_fill(uint16_t port, int n, migt_fill_fn fn, void *ud);

/* 1 if member i of g says STATS name is want. */
int migt_stat_is(const rgroup *g, int i, const char *name, const char *want);

#endif
