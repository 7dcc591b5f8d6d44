/* kvmux-cli interactive mode: read a line, split it (args.c), run it
 * (cmd.c), repeat.
 *
 * Design: two line sources behind one function. When stdin is a terminal,
 * lines come from libedit (edit.c: history kept in
 * $HOME/.kvmux_cli_history, best effort, 1000 entries; Tab completion and
 * argument hints), so arrow keys edit and recall and never reach the
 * server. libedit is a required build dependency: there is no terminal
 * path without it. When stdin is a pipe or a file, lines come
 * from stdio one byte at a time, so embedded NUL bytes are kept and a line
 * longer than CLI_MAX_LINE is discarded (with a message) instead of
 * growing memory without bound. When stdin is not a terminal (a pipe or a
 * file), no prompt is printed, so piped output is just the results.
 *
 * The connection is made when the prompt starts (a failure is reported but
 * not fatal) and remade lazily by cli_run_command() after it was lost, so a
 * restarted server is picked up by the next command. A command is never
 * retried on its own: incr or cas must not run twice behind the user's back.
 *
 * What it is not: no multi-line input, no scripting. */
#include "repl.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "edit.h"

/* Result of reading one line. */
enum read_result {
    READ_LINE = 1, /* *line holds a line */
    READ_EOF = 0,  /* end of input */
    READ_SKIP = -1 /* line rejected (too long / out of memory); message printed */
};

/* Read one line from stdin via stdio. On READ_LINE, *line is malloc'd,
 * NUL-terminated, without the newline, and *len is its length (it may
 * contain NUL bytes); the caller frees it. A last line without a newline
 * still counts as a line. */
static int read_line_stdio(char **line, size_t *len) {
    size_t cap = 256, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fputs("kvmux-cli: out of memory\n", stderr);
        return READ_SKIP;
    }
    int c, too_long = 0, any = 0;
    while ((c = getchar()) != EOF) {
        any = 1;
        if (c == '\n') break;
        if (too_long) continue; /* drain the rest of an oversized line */
        if (n == CLI_MAX_LINE) {
            too_long = 1;
            continue;
        }
        if (n + 1 == cap) {
            size_t ncap = cap * 2 > CLI_MAX_LINE + 1 ? CLI_MAX_LINE + 1 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                too_long = 1; /* same treatment: drop the line, keep going */
                continue;
            }
            buf = nb;
            cap = ncap;
        }
        buf[n++] = (char)c;
    }
    if (!any) {
        free(buf);
        return READ_EOF;
    }
    if (too_long) {
        free(buf);
        fprintf(stderr, "kvmux-cli: line too long or out of memory "
                        "(limit %u bytes); ignored\n", CLI_MAX_LINE);
        return READ_SKIP;
    }
    buf[n] = '\0';
    *line = buf;
    *len = n;
    return READ_LINE;
}

/* $HOME/.kvmux_cli_history into buf, or 0 if HOME is unset or too long. */
static int history_path(char *buf, size_t cap) {
    const char *home = getenv("HOME");
    if (!home || !home[0]) return 0;
    int n = snprintf(buf, cap, "%s/.kvmux_cli_history", home);
    return n > 0 && (size_t)n < cap;
}

/* Case-insensitive whole-argument match (quit, QUIT, Exit ...). */
static int is_word(const cli_arg *a, const char *w) {
    return a->len == strlen(w) && strncasecmp(a->data, w, a->len) == 0;
}

int cli_repl(cli_ctx *ctx) {
    ctx->interactive = 1;
    int tty = isatty(STDIN_FILENO);
    char prompt[320];
    if (strchr(ctx->host, ','))
        snprintf(prompt, sizeof prompt, "kvmux %s> ", ctx->host); /* a group */
    else if (strchr(ctx->host, ':'))
        snprintf(prompt, sizeof prompt, "kvmux [%s]:%u> ", ctx->host,
                 (unsigned)ctx->port);
    else
        snprintf(prompt, sizeof prompt, "kvmux %s:%u> ", ctx->host,
                 (unsigned)ctx->port);

    cli_edit *edit = NULL;
    if (tty) {
        char hist[4096];
        if (cli_edit_open(&edit, prompt, history_path(hist, sizeof hist) ? hist : NULL) != 0) {
            fputs("kvmux-cli: cannot start line editing (libedit)\n", stderr);
            return CLI_EXIT_REQUEST;
        }
    }

    /* Connect up front so a wrong address shows at once; not fatal. */
    cli_connect(ctx);
    fflush(stderr);

    for (;;) {
        char *line = NULL;
        size_t len = 0;
        int r;
        if (edit)
            r = cli_edit_read(edit, &line, &len) ? READ_LINE : READ_EOF;
        else
            r = read_line_stdio(&line, &len);
        if (r == READ_EOF) break;
        if (r == READ_SKIP) continue;

        cli_line words;
        const char *err = NULL;
        int split = cli_split_line(line, len, &words, &err);
        free(line);
        if (split != 0) {
            fprintf(stderr, "kvmux-cli: %s\n", err);
            fflush(stderr);
            continue;
        }
        if (words.count == 1 &&
            (is_word(&words.args[0], "quit") || is_word(&words.args[0], "exit"))) {
            cli_line_free(&words);
            break;
        }
        cli_run_command(ctx, words.args, words.count);
        cli_line_free(&words);
    }

    cli_edit_close(edit);
    fflush(stdout);
    return ferror(stdout) ? CLI_EXIT_REQUEST : CLI_EXIT_OK;
}
