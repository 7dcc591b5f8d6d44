/* kvmux-cli's output encodings and completion rules, byte for byte:
 * quoted values (terminal), JSON strings (bytes as U+0000..U+00FF), CSV
 * fields, which values need quotes; Tab completion of command names and
 * the argument hint, over the real command table. */
#include "cmd.h"
#include "edit.h"
#include "out.h"
#include "testutil.h"

#include <string.h>

/* What f wrote, via open_memstream. */
typedef struct mem_out {
    FILE *f;
    char *buf;
    size_t len;
} mem_out;

static void mem_open(mem_out *m) {
    m->buf = NULL;
    m->len = 0;
    m->f = open_memstream(&m->buf, &m->len);
    REQUIRE(m->f != NULL);
}

/* Close and compare with want (wlen bytes); frees the buffer. */
static int mem_is(mem_out *m, const char *want, size_t wlen) {
    fclose(m->f);
    int ok = m->len == wlen && memcmp(m->buf, want, wlen) == 0;
    if (!ok) fprintf(stderr, "got %zu bytes: '%.*s'\n", m->len, (int)m->len, m->buf);
    free(m->buf);
    return ok;
}

#define MEM_IS(m, lit) mem_is((m), (lit), sizeof(lit) - 1)

static void test_quoting(void) {
    CHECK_EQ(cli_out_needs_quotes("hello world", 11), 0);
    CHECK_EQ(cli_out_needs_quotes("", 0), 1);
    CHECK_EQ(cli_out_needs_quotes("a\nb", 3), 1);
    CHECK_EQ(cli_out_needs_quotes("caf\xc3\xa9", 5), 1);
    CHECK_EQ(cli_out_needs_quotes("a\"b", 3), 1);
    CHECK_EQ(cli_out_needs_quotes("~", 1), 0);
    CHECK_EQ(cli_out_needs_quotes("\x7f", 1), 1);

    mem_out m;
    mem_open(&m);
    cli_out_quoted(m.f, "a\0\xff\"\\\n\r\t\a\b", 10);
    CHECK(MEM_IS(&m, "\"a\\x00\\xff\\\"\\\\\\n\\r\\t\\a\\b\""));

    /* cli_out_string: quoted only in text mode with quote set, and only
     * when needed; raw never. */
    cli_out text_tty = {CLI_FORMAT_TEXT, 1}, text_pipe = {CLI_FORMAT_TEXT, 0},
            raw = {CLI_FORMAT_RAW, 1};
    mem_open(&m);
    cli_out_string(&text_tty, m.f, "plain", 5);
    cli_out_string(&text_tty, m.f, "\x01", 1);
    cli_out_string(&text_pipe, m.f, "\x01", 1);
    cli_out_string(&raw, m.f, "\x01", 1);
    CHECK(MEM_IS(&m, "plain\"\\x01\"\x01\x01"));
}

static void test_json_csv(void) {
    mem_out m;
    mem_open(&m);
    cli_out_json_string(m.f, "a\"\\\n\r\t\x01\x7f\x80\xff\0z", 12);
    CHECK(MEM_IS(&m, "\"a\\\"\\\\\\n\\r\\t\\u0001\\u007f\\u0080\\u00ff\\u0000z\""));
    mem_open(&m);
    cli_out_json_string(m.f, "", 0);
    CHECK(MEM_IS(&m, "\"\""));

    mem_open(&m);
    cli_out_csv_string(m.f, "a,\"b\"\nc", 7);
    CHECK(MEM_IS(&m, "\"a,\"\"b\"\"\nc\""));
    cli_out json = {CLI_FORMAT_JSON, 1}, csv = {CLI_FORMAT_CSV, 1};
    mem_open(&m);
    cli_out_string(&json, m.f, "x", 1);
    cli_out_string(&csv, m.f, "x", 1);
    CHECK(MEM_IS(&m, "\"x\"\"x\""));
}

/* Tab on text[0..cursor): what gets inserted. */
static int completes(const char *text, const char *want) {
    char out[64];
    int r = cli_edit_completion(text, strlen(text), out, sizeof out);
    int ok = want ? (r == 1 && strcmp(out, want) == 0) : (r == 0 && out[0] == '\0');
    if (!ok) fprintf(stderr, "Tab on '%s': got %d '%s', want '%s'\n", text, r, out,
                     want ? want : "(nothing)");
    return ok;
}

static void test_completion(void) {
    CHECK(completes("se", "t "));
    CHECK(completes("SE", "t "));
    CHECK(completes("  g", "et "));
    CHECK(completes("get", " "));      /* a whole name: the space */
    CHECK(completes("e", "x"));        /* exists, expire, exit: common "ex" */
    CHECK(completes("ex", NULL));      /* nothing more in common: list them */
    CHECK(completes("expi", "re "));
    CHECK(completes("pe", "rsist "));
    CHECK(completes("q", "uit "));
    CHECK(completes("zz", NULL));
    CHECK(completes("get k", NULL));   /* past the name: the hint, not a name */
    CHECK(completes("", NULL));

    CHECK(strcmp(cli_edit_hint("set ", 4), "KEY VALUE [--ttl MS]") == 0);
    CHECK(strcmp(cli_edit_hint("SET k v", 7), "VALUE [--ttl MS]") == 0); /* v being typed */
    CHECK(strcmp(cli_edit_hint("set k ", 6), "VALUE [--ttl MS]") == 0);
    CHECK(strcmp(cli_edit_hint("set k v ", 8), "[--ttl MS]") == 0);
    CHECK(strcmp(cli_edit_hint("set k v --ttl ", 14), "") == 0);
    CHECK(strcmp(cli_edit_hint("get  k ", 7), "") == 0);
    CHECK(strcmp(cli_edit_hint("incr k ", 7), "[DELTA]") == 0);
    CHECK(strcmp(cli_edit_hint("scan ", 5), "[PREFIX] [--count N]") == 0);
    CHECK(strcmp(cli_edit_hint("scan p ", 7), "[--count N]") == 0);
    CHECK(strcmp(cli_edit_hint("wait k 3 ", 9), "TIMEOUT_MS") == 0);
    CHECK(strcmp(cli_edit_hint("set", 3), "") == 0);
    CHECK(strcmp(cli_edit_hint("nosuch ", 7), "") == 0);
    CHECK(strcmp(cli_edit_hint("", 0), "") == 0);
    CHECK(strcmp(cli_edit_hint("help ", 5), "[COMMAND]") == 0);

    /* Every command of the table completes from its first two letters to
     * itself or to a shared prefix of it. */
    cli_command_info info;
    size_t n = 0;
    for (size_t i = 0; cli_command_at(i, &info) == 0; i++, n++) {
        char out[64];
        char two[3] = {info.name[0], info.name[1], '\0'};
        if (cli_edit_completion(two, 2, out, sizeof out) == 1) {
            size_t ol = strlen(out);
            if (out[ol - 1] == ' ') ol--;
            CHECK(strncmp(info.name + 2, out, ol) == 0);
        }
        cli_command_info again;
        CHECK_EQ(cli_command_lookup(info.name, strlen(info.name), &again), 0);
        CHECK(info.help[0] != '\0');
    }
    CHECK(n >= 16);
}

int main(void) {
    test_quoting();
    test_json_csv();
    test_completion();
    return test_report();
}
