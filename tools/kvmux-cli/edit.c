/* kvmux-cli line editing (see edit.h).
 *
 * Design: libedit's native interface (histedit.h) rather than its
 * readline emulation, because it gives what the emulation lacks: a
 * right-hand prompt redrawn on demand (used for the argument hint, shown
 * dim at the right edge as soon as "set " is typed) and named editor
 * functions bound to keys (Tab completes, Space inserts and refreshes the
 * hint). Completion and hints read the command table through
 * cli_command_at, so a command added to the table is completed, hinted
 * and listed by help with no change here. Arrow keys, Ctrl-R and the rest
 * are libedit's emacs bindings; ~/.editrc can change them.
 *
 * What it is not: no completion of keys (that would cost a SCAN per Tab),
 * no multi-line input. */
#include "edit.h"

#include <histedit.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <wchar.h>

#include "cmd.h"

#define HISTORY_ENTRIES 1000

struct cli_edit {
    EditLine *el;
    History *hist;
    HistEvent ev;
    char prompt[320];
    char rprompt[160];       /* the hint, in dim escapes for EL_RPROMPT_ESC */
    char *history_path;      /* owned; NULL = no file */
    FILE *out;               /* where the editor draws */
};

/* Start of the first word and its end (first blank after it or len). */
static void first_word(const char *text, size_t len, size_t *start, size_t *end) {
    size_t s = 0;
    while (s < len && (text[s] == ' ' || text[s] == '\t')) s++;
    size_t e = s;
    while (e < len && text[e] != ' ' && text[e] != '\t') e++;
    *start = s;
    *end = e;
}

int cli_edit_completion(const char *text, size_t cursor, char *out, size_t cap) {
    out[0] = '\0';
    size_t ws, we;
    first_word(text, cursor, &ws, &we);
    if (we != cursor || cap < 2) return 0; /* past the command name */
    size_t plen = we - ws, common = 0;
    const char *first = NULL;
    cli_command_info info;
    for (size_t i = 0; cli_command_at(i, &info) == 0; i++) {
        if (strlen(info.name) < plen || strncasecmp(info.name, text + ws, plen) != 0) continue;
        if (!first) {
            first = info.name;
            common = strlen(first);
            continue;
        }
        size_t c = plen;
        while (c < common && info.name[c] == first[c]) c++;
        common = c;
    }
    if (!first || common <= plen) {
        /* One exact name already typed: finish it with a space. */
        if (first && common == plen && strlen(first) == plen) {
            snprintf(out, cap, " ");
            return 1;
        }
        return 0;
    }
    int unique = 1;
    for (size_t i = 0; cli_command_at(i, &info) == 0; i++)
        if (info.name != first && strncasecmp(info.name, first, common) == 0) unique = 0;
    snprintf(out, cap, "%.*s%s", (int)(common - plen), first + plen,
             unique && first[common] == '\0' ? " " : "");
    return 1;
}

/* End of the usage token starting at u[p] (not a blank): a bracketed
 * group "[--ttl MS]" is one token. */
static size_t usage_token_end(const char *u, size_t p) {
    if (u[p] == '[') {
        const char *close = strchr(u + p, ']');
        return close ? (size_t)(close - u) + 1 : strlen(u);
    }
    while (u[p] && u[p] != ' ') p++;
    return p;
}

/* The usage with the first n typed arguments' share dropped: each typed
 * argument takes the tokens up to and including the next required one
 * (an optional one only when no required one is left), as redis-cli's
 * hints shrink while arguments are typed. */
static const char *usage_after(const char *u, size_t n) {
    size_t p = 0;
    while (n-- > 0) {
        while (u[p] == ' ') p++;
        if (!u[p]) break;
        size_t q = p, next_required = 0;
        int found = 0;
        while (u[q]) { /* the first required token from p, if any */
            while (u[q] == ' ') q++;
            if (!u[q]) break;
            size_t e = usage_token_end(u, q);
            if (u[q] != '[') {
                next_required = e;
                found = 1;
                break;
            }
            q = e;
        }
        p = found ? next_required : usage_token_end(u, p);
    }
    while (u[p] == ' ') p++;
    return u + p;
}

const char *cli_edit_hint(const char *text, size_t len) {
    size_t ws, we;
    first_word(text, len, &ws, &we);
    if (we == ws || we == len) return ""; /* no word yet, or still typing it */
    cli_command_info info;
    if (cli_command_lookup(text + ws, we - ws, &info) != 0) return "";
    /* Arguments already typed: words after the name that a blank ends. */
    size_t typed = 0;
    for (size_t i = we; i < len; i++)
        if (text[i] != ' ' && text[i] != '\t' && i + 1 < len &&
            (text[i + 1] == ' ' || text[i + 1] == '\t'))
            typed++;
    return usage_after(info.usage, typed);
}

/* The editor's view of the line so far (up to the cursor for Tab). */
static cli_edit *edit_of(EditLine *el) {
    void *p = NULL;
    el_get(el, EL_CLIENTDATA, &p);
    return p;
}

static char *prompt_fn(EditLine *el) {
    return edit_of(el)->prompt;
}

/* The hint as the right prompt, dim; \1 brackets the escapes so libedit
 * does not count them as width. libedit prints an escape together with
 * the next visible character, so a trailing space carries the reset
 * (without it the dim would stay on for what is typed next). */
static char *rprompt_fn(EditLine *el) {
    cli_edit *e = edit_of(el);
    const LineInfo *li = el_line(el);
    const char *hint = cli_edit_hint(li->buffer, (size_t)(li->lastchar - li->buffer));
    if (hint[0])
        snprintf(e->rprompt, sizeof e->rprompt, "\1\033[2m\1%s\1\033[0m\1 ", hint);
    else
        e->rprompt[0] = '\0';
    return e->rprompt;
}

/* Print the names starting with the first word's text, under the line,
 * for a Tab that cannot complete further. */
static void list_candidates(cli_edit *e, const char *text, size_t plen) {
    cli_command_info info;
    fputc('\n', e->out);
    for (size_t i = 0; cli_command_at(i, &info) == 0; i++)
        if (strncasecmp(info.name, text, plen) == 0) fprintf(e->out, "%s  ", info.name);
    fputc('\n', e->out);
}

/* Tab: complete the command name; past it, show the command's usage. */
static unsigned char complete_fn(EditLine *el, int ch) {
    (void)ch;
    cli_edit *e = edit_of(el);
    const LineInfo *li = el_line(el);
    size_t cursor = (size_t)(li->cursor - li->buffer);
    char ins[64];
    if (cli_edit_completion(li->buffer, cursor, ins, sizeof ins)) {
        return el_insertstr(el, ins) == 0 ? CC_REFRESH : CC_ERROR;
    }
    size_t ws, we;
    first_word(li->buffer, cursor, &ws, &we);
    if (we == cursor) { /* several names share the prefix: list them */
        list_candidates(e, li->buffer + ws, we - ws);
        return CC_REDISPLAY;
    }
    cli_command_info info;
    if (cli_command_lookup(li->buffer + ws, we - ws, &info) != 0) return CC_ERROR;
    fprintf(e->out, "\n%s%s%s\n    %s\n", info.name, info.usage[0] ? " " : "", info.usage,
            info.help);
    return CC_REDISPLAY;
}

/* Space: insert it, and redraw so the right prompt shows the hint. */
static unsigned char space_fn(EditLine *el, int ch) {
    (void)ch;
    return el_insertstr(el, " ") == 0 ? CC_REFRESH : CC_ERROR;
}

int cli_edit_open(cli_edit **out, const char *prompt, const char *history_path) {
    cli_edit *e = calloc(1, sizeof *e);
    if (!e) return -1;
    /* libedit decodes input by the locale: without this, any non-ASCII
     * byte typed would be refused. */
    setlocale(LC_CTYPE, "");
    snprintf(e->prompt, sizeof e->prompt, "%s", prompt);
    e->out = isatty(STDOUT_FILENO) ? stdout : stderr;
    if (history_path && !(e->history_path = strdup(history_path))) goto fail;
    e->el = el_init("kvmux-cli", stdin, e->out, stderr);
    e->hist = history_init();
    if (!e->el || !e->hist) goto fail;
    history(e->hist, &e->ev, H_SETSIZE, HISTORY_ENTRIES);
    history(e->hist, &e->ev, H_SETUNIQUE, 1);
    el_set(e->el, EL_CLIENTDATA, e);
    el_set(e->el, EL_EDITOR, "emacs");
    el_set(e->el, EL_SIGNAL, 1);
    el_set(e->el, EL_PROMPT, prompt_fn);
    el_set(e->el, EL_RPROMPT_ESC, rprompt_fn, '\1');
    el_set(e->el, EL_HIST, history, e->hist);
    /* The wide-character setter keeps pointers to these static strings;
     * el_set would convert them into copies libedit never frees. */
    el_wset(e->el, EL_ADDFN, L"kvmux-complete",
            L"complete the command name, or show its arguments", complete_fn);
    el_wset(e->el, EL_ADDFN, L"kvmux-space", L"insert a space and show the hint", space_fn);
    el_set(e->el, EL_BIND, "^I", "kvmux-complete", NULL);
    el_set(e->el, EL_BIND, " ", "kvmux-space", NULL);
    el_source(e->el, NULL); /* ~/.editrc, after ours so it can override them */
    if (e->history_path) history(e->hist, &e->ev, H_LOAD, e->history_path);
    *out = e;
    return 0;
fail:
    cli_edit_close(e);
    return -1;
}

int cli_edit_read(cli_edit *e, char **line, size_t *len) {
    for (;;) {
        int n = 0;
        const char *l = el_gets(e->el, &n);
        if (!l || n <= 0) {
            fputc('\n', e->out); /* leave the shell's prompt on a line of its own */
            return 0;
        }
        size_t ll = (size_t)n;
        while (ll > 0 && (l[ll - 1] == '\n' || l[ll - 1] == '\r')) ll--;
        char *copy = malloc(ll + 1);
        if (!copy) {
            fputs("kvmux-cli: out of memory; line ignored\n", stderr);
            continue;
        }
        memcpy(copy, l, ll);
        copy[ll] = '\0';
        if (ll > 0) {
            history(e->hist, &e->ev, H_ENTER, copy);
            /* Saved at once, so Ctrl-C (which ends the process) loses nothing. */
            if (e->history_path) history(e->hist, &e->ev, H_SAVE, e->history_path);
        }
        *line = copy;
        *len = ll;
        return 1;
    }
}

void cli_edit_close(cli_edit *e) {
    if (!e) return;
    if (e->hist && e->history_path) history(e->hist, &e->ev, H_SAVE, e->history_path);
    if (e->el) el_end(e->el);
    if (e->hist) history_end(e->hist);
    free(e->history_path);
    free(e);
}
