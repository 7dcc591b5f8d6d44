/* kvmux-cli output: how a value, a key or a number is written on stdout in
 * each output mode (text, --raw, --json, --csv). Nothing here talks to the
 * server; cmd.c decides what to print, this file decides how. */
#ifndef KVMUX_CLI_OUT_H
#define KVMUX_CLI_OUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The output mode (one per process: -r/--raw, --json, --csv). */
typedef enum cli_format {
    CLI_FORMAT_TEXT = 0, /* values as is, or quoted on a terminal */
    CLI_FORMAT_RAW,      /* values' bytes exactly, no newline after a value */
    CLI_FORMAT_JSON,     /* one JSON document per command */
    CLI_FORMAT_CSV       /* one CSV record (RFC 4180 quoting) per line */
} cli_format;

/* How text mode shows a value: quote = 1 on a terminal. */
typedef struct cli_out {
    cli_format format;
    int quote;           /* text mode: quote values that are not printable */
} cli_out;

/* 1 if text mode must show p[0..len) quoted: it is empty, or has a byte
 * outside printable ASCII (0x20..0x7e), or a double quote or backslash. */
int cli_out_needs_quotes(const void *p, size_t len);

/* p[0..len) in double quotes, escaped as redis-cli does on a terminal:
 * \" \\ \n \r \t \a \b, any other byte outside 0x20..0x7e as \xHH. */
void cli_out_quoted(FILE *f, const void *p, size_t len);

/* p[0..len) as a JSON string. Printable ASCII stays, " and \ and control
 * bytes are escaped, and every byte >= 0x7f becomes \u00XX, so the
 * string's code points are exactly the value's bytes (Latin-1 reading):
 * binary values survive, and a reader gets them back byte for byte. */
void cli_out_json_string(FILE *f, const void *p, size_t len);

/* p[0..len) as one CSV field: in double quotes, a quote doubled (RFC 4180);
 * other bytes as they are. */
void cli_out_csv_string(FILE *f, const void *p, size_t len);

/* A string in the mode's form, without a newline: text mode writes the
 * bytes (quoted if o->quote and they need it), raw mode the bytes, JSON a
 * JSON string, CSV a CSV field. */
void cli_out_string(const cli_out *o, FILE *f, const void *p, size_t len);

#endif
