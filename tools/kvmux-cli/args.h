/* kvmux-cli argument handling: splitting an interactive line into
 * arguments (quotes, backslash escapes) and strict number parsing.
 * Nothing here does I/O or talks to the server. */
#ifndef KVMUX_CLI_ARGS_H
#define KVMUX_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* Longest interactive line accepted (bytes, without the newline). A value
 * of the server's default maximum (1 MiB) fits even fully \x-escaped. */
#define CLI_MAX_LINE (8u * 1024 * 1024)
/* Most arguments on one interactive line. */
#define CLI_MAX_ARGS 64u

/* One argument: bytes plus length. data is always NUL-terminated as well
 * (len excludes the NUL), but may contain NUL bytes itself (from "\x00"),
 * which is why the length is authoritative. */
typedef struct cli_arg {
    const char *data;
    size_t len;
} cli_arg;

/* The result of splitting one line. Owns one buffer holding every
 * argument's bytes; free with cli_line_free(). */
typedef struct cli_line {
    cli_arg args[CLI_MAX_ARGS];
    size_t count;
    char *storage; /* owned; args[i].data point into it */
} cli_line;

/* Split line[0..len) into arguments, shell style:
 *   - arguments are separated by spaces, tabs, \r or \n;
 *   - "..." groups, with escapes \" \\ \n \r \t \a \b \0 and \xHH (exactly
 *     two hex digits; any other \c stands for c);
 *   - '...' groups literally, except \' for a quote;
 *   - outside quotes, a backslash takes the next character literally;
 *   - quoted parts join what touches them: a"b c"'d' is "ab cd".
 * On success fills *out (free with cli_line_free) and returns 0. On error
 * returns -1, leaves *out empty (nothing to free, though calling
 * cli_line_free is harmless) and points *err at a static message
 * ("unbalanced quotes", "too many arguments", "out of memory", ...). */
int cli_split_line(const char *line, size_t len, cli_line *out,
                   const char **err);

/* Release what cli_split_line allocated and empty l. l may be empty. */
void cli_line_free(cli_line *l);

/* Strict decimal parsers: the whole argument must be the number (no
 * leading/trailing spaces, no embedded NUL, no sign for unsigned types,
 * base 10 only) and within [min, max]. Return 0 and set *out, or -1 and
 * leave *out untouched. */
int cli_parse_u64(const cli_arg *a, uint64_t max, uint64_t *out);
int cli_parse_i64(const cli_arg *a, int64_t *out);
/* Same, for a plain C string (command-line options). */
int cli_parse_u64_str(const char *s, uint64_t max, uint64_t *out);

#endif
