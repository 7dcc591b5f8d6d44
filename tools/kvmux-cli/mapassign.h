/* cluster assign through the map group (mapassign.c). */
#ifndef KVMUX_CLI_MAPASSIGN_H
#define KVMUX_CLI_MAPASSIGN_H

#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

struct kvmux_map;

/* CAS map m into the map group at endpoints (host:port,...; ctx's auth
 * and TLS settings), giving it the map group's epoch + 1 when m->epoch is
 * 0 (wire[0..cap) is scratch for the encoding), then wait up to 10 s for
 * every group m lists to apply that epoch. Prints one line per group
 * ("group G: epoch E installed" on stdout, failures on stderr). Returns a
 * CLI_EXIT_* code: OK only when every group installed it. */
int cli_assign_via_map(const cli_ctx *ctx, const char *endpoints, struct kvmux_map *m,
                       uint8_t *wire, size_t cap);

#endif
