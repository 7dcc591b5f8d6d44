/* kvmux-cli interactive mode: read a line, split it (args.c), run it
 * (cmd.c), repeat.
 *
 * Design: two line sources behind one function. On a terminal, and when
 * CMake found libedit (KVMUX_HAVE_LIBEDIT), lines come from libedit's
 * readline interface, with in-session history that is also kept in
 * $HOME/.kvmux_cli_history (best effort, 1000 entries). Otherwise lines come
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
 * What it is not: no tab completion, no multi-line input, no scripting. */
#include "repl.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifdef KVMUX_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#define HISTORY_ENTRIES 1000

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
static int read_line_stdio(const char *prompt, char **line, size_t *len) {
    if (prompt) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
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
        if (prompt) fputc('\n', stdout); /* leave the shell on a new line */
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

#ifdef KVMUX_HAVE_LIBEDIT
/* Same contract as read_line_stdio, through libedit. */
static int read_line_edit(const char *prompt, char **line, size_t *len) {
    char *l = readline(prompt);
    if (!l) {
        fputc('\n', stdout);
        return READ_EOF;
    }
    size_t n = strlen(l);
    if (n > CLI_MAX_LINE) {
        free(l);
        fprintf(stderr, "kvmux-cli: line too long (limit %u bytes); ignored\n",
                CLI_MAX_LINE);
        return READ_SKIP;
    }
    if (n > 0) add_history(l);
    *line = l;
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
#endif

/* Case-insensitive whole-argument match (quit, QUIT, Exit ...). */
static int is_word(const cli_arg *a, const char *w) {
    return a->len == strlen(w) && strncasecmp(a->data, w, a->len) == 0;
}

int cli_repl(cli_ctx *ctx) {
    ctx->interactive = 1;
    int tty = isatty(STDIN_FILENO);
    char prompt[320];
    if (strchr(ctx->host, ':'))
        snprintf(prompt, sizeof prompt, "kvmux [%s]:%u> ", ctx->host,
                 (unsigned)ctx->port);
    else
        snprintf(prompt, sizeof prompt, "kvmux %s:%u> ", ctx->host,
                 (unsigned)ctx->port);

#ifdef KVMUX_HAVE_LIBEDIT
    char hist[4096];
    int use_edit = tty && isatty(STDOUT_FILENO);
    int have_hist = use_edit && history_path(hist, sizeof hist);
    if (use_edit) {
        using_history();
        stifle_history(HISTORY_ENTRIES);
        if (have_hist) read_history(hist); /* a missing file is fine */
    }
#endif

    /* Connect up front so a wrong address shows at once; not fatal. */
    cli_connect(ctx);
    fflush(stderr);

    for (;;) {
        char *line = NULL;
        size_t len = 0;
        int r;
#ifdef KVMUX_HAVE_LIBEDIT
        if (use_edit)
            r = read_line_edit(prompt, &line, &len);
        else
#endif
            r = read_line_stdio(tty ? prompt : NULL, &line, &len);
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

#ifdef KVMUX_HAVE_LIBEDIT
    if (have_hist) write_history(hist);
#endif
    fflush(stdout);
    return ferror(stdout) ? CLI_EXIT_REQUEST : CLI_EXIT_OK;
}
