/* kvmux-cli cluster migrate / cluster status --map (docs/MIGRATION.md
 * 10.5): slot migrations through the map group's table. */
#ifndef KVMUX_CLI_MIGRATE_H
#define KVMUX_CLI_MIGRATE_H

#include <stdint.h>

#include "cmd.h"

typedef struct cli_mig_opts {
    const char *map;        /* --map: the map group's endpoints */
    const char *range;      /* "F-L" or "SLOT" (NUL-terminated); NULL with --abort */
    const char *group;      /* the target group (decimal) */
    int no_wait;            /* --no-wait */
    int has_abort;          /* --abort ID given */
    uint64_t abort_id;
    uint64_t timeout_s;     /* --timeout S, 0 = none */
} cli_mig_opts;

/* cluster migrate: create the migration (after checking every member of
 * both groups shows `features: ... migrate1`), then unless no_wait poll
 * CLUSTER migrations once a second until it ends. Or, with --abort, abort
 * it. Exit: 0 committed / created with --no-wait / aborted by --abort;
 * 3 refused or aborted (the reason on stderr), or --abort on a committed
 * one; 4 map group unreachable; 5 --timeout passed (the migration goes
 * on). */
int cli_migrate(const cli_ctx *ctx, const cli_mig_opts *o);

/* cluster status --map: the map's epoch, the table's mgen, per group its
 * slots, keys (CLUSTER slotkeys; "?" when a group does not answer it)
 * and leader, then the table. Exit 0, 3 or 4. */
int cli_migrate_status(const cli_ctx *ctx, const char *map);

#endif
