/* Test-only helper for cluster_keyslot_test.sh: prints kvmux_slot of each
 * argument, one per line. "-x HEX" gives a key as hex (any bytes);
 * "gen N" prints N generated printable keys instead (no spaces or quotes,
 * so redis-cli reads them as one argument each), with and without hash
 * tags, deterministic. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

static unsigned long long state = 88172645463325252ull;
static unsigned next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (unsigned)(state >> 11);
}

/* Printable, but not space, quotes or backslash (redis-cli's splitter). */
static char pchar(void) {
    for (;;) {
        char c = (char)(0x21 + next() % 94);
        if (c != '"' && c != '\'' && c != '\\') return c;
    }
}

static void gen(unsigned n) {
    char k[80];
    for (unsigned i = 0; i < n; i++) {
        size_t len = 0, want = 1 + next() % 30;
        while (len < want) k[len++] = pchar();
        switch (i % 6) {
        case 0: break; /* anything, braces included by chance */
        case 1: { /* a tag in the middle */
            size_t at = next() % len, tl = 1 + next() % 8;
            memmove(k + at + tl + 2, k + at, len - at);
            k[at] = '{';
            for (size_t j = 0; j < tl; j++) {
                char c = pchar();
                k[at + 1 + j] = c == '}' ? 'x' : c;
            }
            k[at + 1 + tl] = '}';
            len += tl + 2;
            break;
        }
        case 2: /* an empty tag first */
            memmove(k + 2, k, len);
            k[0] = '{';
            k[1] = '}';
            len += 2;
            break;
        case 3: /* an open brace only */
            k[next() % len] = '{';
            break;
        case 4: /* "user:{N}.field", the common shape */
            len = (size_t)snprintf(k, sizeof k, "user:{%u}.f%u", next() % 100000, next() % 10);
            break;
        default: /* nested and repeated braces */
            len = (size_t)snprintf(k, sizeof k, "%c{{%u}}{%u}%c", pchar() == '{' ? 'a' : 'b',
                                   next() % 1000, next() % 1000, '}');
            break;
        }
        k[len] = '\0';
        puts(k);
    }
}

static int unhex(const char *h, unsigned char *out, size_t cap, size_t *n) {
    size_t len = strlen(h);
    if (len % 2 || len / 2 > cap) return -1;
    for (size_t i = 0; i < len / 2; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    *n = len / 2;
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "gen") == 0) {
        gen((unsigned)strtoul(argv[2], NULL, 10));
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-x") == 0 && i + 1 < argc) {
            unsigned char key[256];
            size_t n;
            if (unhex(argv[++i], key, sizeof key, &n)) {
                fprintf(stderr, "bad hex '%s'\n", argv[i]);
                return 2;
            }
            printf("%u\n", kvmux_slot(key, n));
        } else {
            printf("%u\n", kvmux_slot(argv[i], strlen(argv[i])));
        }
    }
    return 0;
}
