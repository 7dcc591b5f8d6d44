/* kvmux-cli output encodings (see out.h).
 *
 * Design: every function writes straight to a FILE, byte by byte through
 * stdio's buffer, so a 64 MiB value needs no second copy. The quoting
 * rule follows redis-cli on a terminal (a value a human can read is shown
 * as is; one with other bytes is quoted with \xHH escapes), and JSON maps
 * bytes to code points U+0000..U+00FF so binary values round-trip without
 * a base64 layer.
 *
 * What it is not: no parsing; no pretty-printing (one document per line). */
#include "out.h"

int cli_out_needs_quotes(const void *p, size_t len) {
    const unsigned char *s = p;
    if (len == 0) return 1;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\') return 1;
    return 0;
}

void cli_out_quoted(FILE *f, const void *p, size_t len) {
    const unsigned char *s = p;
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\a': fputs("\\a", f); break;
        case '\b': fputs("\\b", f); break;
        default:
            if (c >= 0x20 && c <= 0x7e) fputc(c, f);
            else fprintf(f, "\\x%02x", c);
        }
    }
    fputc('"', f);
}

void cli_out_json_string(FILE *f, const void *p, size_t len) {
    const unsigned char *s = p;
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c >= 0x20 && c < 0x7f) fputc(c, f);
            else fprintf(f, "\\u%04x", c);
        }
    }
    fputc('"', f);
}

void cli_out_csv_string(FILE *f, const void *p, size_t len) {
    const unsigned char *s = p;
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"') fputc('"', f);
        fputc(s[i], f);
    }
    fputc('"', f);
}

void cli_out_string(const cli_out *o, FILE *f, const void *p, size_t len) {
    switch (o->format) {
    case CLI_FORMAT_JSON: cli_out_json_string(f, p, len); break;
    case CLI_FORMAT_CSV: cli_out_csv_string(f, p, len); break;
    case CLI_FORMAT_TEXT:
    case CLI_FORMAT_RAW:
        /* Quoted only in text mode on a terminal, and only if unreadable. */
        if (o->format == CLI_FORMAT_TEXT && o->quote && cli_out_needs_quotes(p, len))
            cli_out_quoted(f, p, len);
        else if (len)
            fwrite(p, 1, len, f);
        break;
    }
}
