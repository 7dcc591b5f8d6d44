/* kvmux-cli's line editor for the interactive prompt on a terminal:
 * libedit with history, Tab completion of command names and argument
 * hints, all taken from the command table (cli_command_at). */
#ifndef KVMUX_CLI_EDIT_H
#define KVMUX_CLI_EDIT_H

#include <stddef.h>

typedef struct cli_edit cli_edit;

/* Start editing on the terminal on stdin. prompt is copied; history_path
 * (may be NULL) is loaded now, a missing file being fine, and saved by
 * cli_edit_close. Editor output goes to stdout when it is a terminal,
 * else to stderr, so results redirected to a file stay clean. ~/.editrc
 * is read (libedit's own settings file). Returns 0 and sets *out, or -1
 * (out of memory, or libedit could not start). */
int cli_edit_open(cli_edit **out, const char *prompt, const char *history_path);

/* Read one line: 1 and *line (malloc'd, NUL-terminated, without the
 * newline; the caller frees it) with *len, or 0 at end of input (Ctrl-D
 * on an empty line). A non-empty line is added to the history, and the
 * history file (if any) is saved. */
int cli_edit_read(cli_edit *e, char **line, size_t *len);

/* Save the history (if a path was given), restore the terminal and free
 * e. e may be NULL. */
void cli_edit_close(cli_edit *e);

/* What Tab does to the line text[0..cursor): fills out (cap bytes, NUL-
 * terminated) with the text to insert and returns 1; or returns 0 with
 * out empty when there is nothing to insert. Inside the first word, that
 * is the rest of the one command name starting with it (plus a space), or
 * the longest common continuation of several; exposed for the unit test
 * of the rule. */
int cli_edit_completion(const char *text, size_t cursor, char *out, size_t cap);

/* The argument hint for a line: the usage of the command named by its
 * first word once that word is followed by a space ("set " gives
 * "KEY VALUE [--ttl MS]"), less what the arguments typed so far stand for
 * ("set k " gives "VALUE [--ttl MS]"); else "". Never NULL; the string
 * is static. */
const char *cli_edit_hint(const char *text, size_t len);

#endif
