/* kvmux-cli argument handling: the interactive line splitter and the strict
 * number parsers shared by the one-shot and interactive modes.
 *
 * Design: the splitter is a small shell-like state machine (outside quotes,
 * inside "...", inside '...'). Quoted parts may sit anywhere in a word and
 * concatenate with what surrounds them ("a"b'c' is one argument, abc), as in
 * sh. Double quotes understand C-like escapes, including \xHH, so any byte
 * (NUL too) can be typed; every argument therefore carries a length. All
 * arguments of a line live in one allocation, sized up front from the line
 * length, so splitting is one malloc and cannot overflow.
 *
 * What it is not: no variable expansion, no globbing, no comments, no
 * multi-line continuation. Numbers are base 10 only; "0x10" or " 5" or "5 "
 * are rejected rather than guessed at. */
#include "args.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Separator outside quotes (\r and \n too, for CRLF input). */
static int is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Value of one hex digit, or -1. */
static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode one backslash escape inside double quotes. line[*p] is the
 * character after the backslash (the caller checked it exists). Writes one
 * byte to *byte and advances *p past the escape. Unknown escapes stand for
 * the character itself (\" \\ \$ ...), as in most shells. */
static void dq_escape(const char *line, size_t len, size_t *p, char *byte) {
    char c = line[*p];
    switch (c) {
    case 'n': *byte = '\n'; break;
    case 'r': *byte = '\r'; break;
    case 't': *byte = '\t'; break;
    case 'a': *byte = '\a'; break;
    case 'b': *byte = '\b'; break;
    case '0': *byte = '\0'; break;
    case 'x':
        /* Exactly two hex digits; otherwise "\x" is just "x". */
        if (*p + 2 < len && hex_value(line[*p + 1]) >= 0 &&
            hex_value(line[*p + 2]) >= 0) {
            *byte = (char)(hex_value(line[*p + 1]) * 16 +
                           hex_value(line[*p + 2]));
            *p += 3;
            return;
        }
        *byte = 'x';
        break;
    default: *byte = c; break;
    }
    *p += 1;
}

int cli_split_line(const char *line, size_t len, cli_line *out,
                   const char **err) {
    memset(out, 0, sizeof *out);
    if (len > CLI_MAX_LINE) {
        *err = "line too long";
        return -1;
    }
    /* Each argument's bytes are no more than the input bytes it consumed,
     * plus its NUL: len + CLI_MAX_ARGS + 1 always suffices. */
    char *buf = malloc(len + CLI_MAX_ARGS + 1);
    if (!buf) {
        *err = "out of memory";
        return -1;
    }
    size_t w = 0, p = 0, n = 0;
    for (;;) {
        while (p < len && is_blank(line[p])) p++;
        if (p == len) break;
        if (n == CLI_MAX_ARGS) {
            free(buf);
            *err = "too many arguments";
            return -1;
        }
        size_t start = w;
        char quote = 0; /* 0, '"' or '\'' */
        for (;;) {
            if (p == len) {
                if (quote) {
                    free(buf);
                    *err = "unbalanced quotes";
                    return -1;
                }
                break;
            }
            char c = line[p];
            if (quote == '"') {
                if (c == '\\' && p + 1 < len) {
                    p++;
                    dq_escape(line, len, &p, &buf[w++]);
                } else if (c == '"') {
                    quote = 0;
                    p++;
                } else {
                    buf[w++] = c;
                    p++;
                }
            } else if (quote == '\'') {
                if (c == '\\' && p + 1 < len && line[p + 1] == '\'') {
                    buf[w++] = '\'';
                    p += 2;
                } else if (c == '\'') {
                    quote = 0;
                    p++;
                } else {
                    buf[w++] = c;
                    p++;
                }
            } else {
                if (is_blank(c)) break;
                if (c == '"' || c == '\'') {
                    quote = c;
                    p++;
                } else if (c == '\\' && p + 1 < len) {
                    buf[w++] = line[p + 1];
                    p += 2;
                } else {
                    buf[w++] = c;
                    p++;
                }
            }
        }
        buf[w++] = '\0';
        out->args[n].data = buf + start;
        out->args[n].len = w - 1 - start;
        n++;
    }
    out->count = n;
    out->storage = buf;
    return 0;
}

void cli_line_free(cli_line *l) {
    free(l->storage);
    memset(l, 0, sizeof *l);
}

int cli_parse_u64_str(const char *s, uint64_t max, uint64_t *out) {
    /* strtoull accepts leading blanks and a minus sign (wrapping "-1" to
     * UINT64_MAX): insist on a digit first so neither slips through. */
    if (!s || s[0] < '0' || s[0] > '9') return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || !end || *end != '\0') return -1;
    if ((uint64_t)v > max) return -1;
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_u64(const cli_arg *a, uint64_t max, uint64_t *out) {
    /* An embedded NUL ("1\x002") would make strtoull stop early and the
     * end check pass: compare against the real length. */
    if (strlen(a->data) != a->len) return -1;
    return cli_parse_u64_str(a->data, max, out);
}

int cli_parse_i64(const cli_arg *a, int64_t *out) {
    const char *s = a->data;
    if (strlen(s) != a->len || a->len == 0) return -1;
    size_t digit = (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (s[digit] < '0' || s[digit] > '9') return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || !end || *end != '\0') return -1;
#if LLONG_MAX > INT64_MAX
    if (v > INT64_MAX || v < INT64_MIN) return -1;
#endif
    *out = (int64_t)v;
    return 0;
}
