/* cluster assign through the map group (mapassign.c). */
#ifndef KVMUX_CLI_MAPASSIGN_H
#define KVMUX_CLI_MAPASSIGN_H

#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

struct kvmux_map;

/* A client for endpoints (comma-separated; a single one is listed twice,
 * since a comma is what puts cli_connect in endpoint-list mode): in
 * endpoints mode it follows NOT_LEADER. NULL on failure (cli_connect
 * printed why, unless quiet). */
kvmux_client *cli_map_connect(const cli_ctx *ctx, const char *endpoints, int quiet);
/* CLUSTER sub with value v[0..n) on c: kvmux_call's result; on an error
 * rep->value holds the server's message (free rep either way). */
int cli_map_call(kvmux_client *c, const char *sub, const void *v, size_t n, kvmux_reply *rep,
                 int timeout_ms);

/* CAS map m into the map group at endpoints (host:port,...; ctx's auth
 * and TLS settings), giving it the map group's epoch + 1 when m->epoch is
 * 0 (wire[0..cap) is scratch for the encoding), then wait up to 10 s for
 * every group m lists to apply that epoch. Prints one line per group
 * ("group G: epoch E installed" on stdout, failures on stderr). Returns a
 * CLI_EXIT_* code: OK only when every group installed it. */
int cli_assign_via_map(const cli_ctx *ctx, const char *endpoints, struct kvmux_map *m,
                       uint8_t *wire, size_t cap);

#endif
