/* kvmux-cli interactive mode: a prompt that reads commands line by line. */
#ifndef KVMUX_CLI_REPL_H
#define KVMUX_CLI_REPL_H

#include "cmd.h"

/* Run the prompt until quit, exit or end of input. ctx is filled as for
 * cli_run_command (client may be NULL: the prompt connects, and reconnects
 * after a lost connection). Uses libedit (history, line editing) when built
 * with it and stdin is a terminal; otherwise plain stdio with no prompt
 * printed unless stdin is a terminal. A failed command prints its error and
 * the prompt goes on. Returns the process exit code: 0, or
 * CLI_EXIT_REQUEST if stdout could not be written. */
int cli_repl(cli_ctx *ctx);

#endif
