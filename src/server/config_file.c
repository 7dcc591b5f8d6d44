/* kvmuxd's configuration file (--config FILE): the command-line options,
 * one per line, without their dashes:
 *
 *     # a comment (a line whose first non-blank character is #)
 *     port 7878
 *     requirepass s3cret with spaces
 *     aof-repair yes
 *
 * A line is a name, blanks, and the value: the rest of the line with the
 * trailing blanks removed (so a value may contain blanks and '#'; there
 * are no trailing comments and no quotes). Flags take yes or no. The
 * names, kinds and ranges come from the one option table in config.c;
 * this file only splits lines.
 *
 * Why not libinih: its format is INI (sections, "name = value", ';' and
 * inline comments), while kvmuxd has one flat namespace that mirrors the
 * command line; a 100-line splitter gives "FILE:LINE:" errors in the same
 * words as the command line's and needs no dependency. The file is read
 * whole (at most 1 MiB) and values point into that buffer, which the
 * config owns (kvmux_server_config_deinit). Lines are at most 4096 bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define MAX_FILE (1024u * 1024)
#define MAX_LINE 4096u

static int is_blank(char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; }

static char *read_all(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_FILE + 1);
    if (!buf) {
        fclose(fp);
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    size_t n = fread(buf, 1, MAX_FILE + 1, fp);
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        snprintf(err, errlen, "%s: read error", path);
        return NULL;
    }
    if (n > MAX_FILE) {
        free(buf);
        snprintf(err, errlen, "%s: larger than %u bytes", path, MAX_FILE);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int kvmux__config_file_read(kvmux_server_config *c, const char *path, uint32_t *lines,
                            size_t nlines, char *err, size_t errlen) {
    size_t len;
    char *buf = read_all(path, &len, err, errlen);
    if (!buf) return -1;
    if (memchr(buf, 0, len)) {
        free(buf);
        snprintf(err, errlen, "%s: contains a NUL byte (not a text file)", path);
        return -1;
    }
    /* The values of the file replace the previous file's: free it only
     * after the whole file is applied (on error c keeps pointers into
     * the new buffer, so it is kept too). */
    char *old = c->file_buf_;
    c->file_buf_ = buf;
    uint32_t lineno = 0;
    char *p = buf;
    int rc = 0;
    while (*p && rc == 0) {
        lineno++;
        char *eol = strchr(p, '\n');
        char *next = eol ? eol + 1 : p + strlen(p);
        if (eol) *eol = 0;
        if ((size_t)(next - p) > MAX_LINE) {
            snprintf(err, errlen, "%s:%u: line longer than %u bytes", path, lineno, MAX_LINE);
            rc = -1;
            break;
        }
        while (is_blank(*p)) p++;
        char *end = p + strlen(p);
        while (end > p && is_blank(end[-1])) *--end = 0;
        if (*p && *p != '#') {
            char *name = p;
            while (*p && !is_blank(*p)) p++;
            if (*p) *p++ = 0;
            while (is_blank(*p)) p++;
            char msg[400];
            int idx = kvmux__config_set(c, name, p, msg, sizeof msg);
            if (idx < 0) {
                snprintf(err, errlen, "%s:%u: %s", path, lineno, msg);
                rc = -1;
            } else if ((size_t)idx < nlines) {
                lines[idx] = lineno;
            }
        }
        p = next;
    }
    free(old);
    return rc;
}
