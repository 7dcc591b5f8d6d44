/* src/cluster (cluster.h): the slot hash against known vectors (the same
 * table as docs/PROTOCOL.md 18.1, which tests/integration's
 * cluster_keyslot_test checks against redis-server), the slot map's binary
 * and text forms (round trips, the 18.2 vector, every refusal), the
 * WRONG_SHARD / TRY_AGAIN values (against tests/vectors/frames.hex), and a
 * bounded mutation loop over the map decoder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "proto.h"
#include "proto/proto_testutil.h"
#include "testutil.h"

/* Maps are ~150 KiB: static, never on the stack. */
static kvmux_map M1, M2;
static uint8_t BUF[KVMUX_MAP_WIRE_MAX + 16], BUF2[KVMUX_MAP_WIRE_MAX + 16];
static char ERR[256];

/* ---- 18.1: the slot hash ---- */

/* CRC16-XMODEM by its definition, a bit at a time: the reference the
 * library's table-driven kvmux_crc16 must agree with. Every 2-byte input
 * reaches every entry of crc_t1 and crc_t0 (crc_t1[b0] ^ crc_t0[b1]: b1 =
 * 0 gives crc_t1's, b0 = 0 crc_t0's); 4-byte inputs with one byte set,
 * every entry of crc_t3 and crc_t2; every 1-byte input, the odd tail. */
static uint16_t crc16_bitwise(const uint8_t *b, size_t n) {
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(b[i] << 8);
        for (int k = 0; k < 8; k++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void test_crc16_bytewise(void) {
    uint8_t buf[64];
    for (unsigned v = 0; v < 256; v++) { /* every 1-byte input */
        buf[0] = (uint8_t)v;
        if (kvmux_crc16(buf, 1) != crc16_bitwise(buf, 1)) {
            CHECK_EQ(kvmux_crc16(buf, 1), crc16_bitwise(buf, 1));
            return;
        }
    }
    for (unsigned v = 0; v < 65536; v++) { /* every 2-byte input */
        buf[0] = (uint8_t)(v >> 8);
        buf[1] = (uint8_t)v;
        if (kvmux_crc16(buf, 2) != crc16_bitwise(buf, 2)) {
            CHECK_EQ(kvmux_crc16(buf, 2), crc16_bitwise(buf, 2));
            return;
        }
    }
    for (unsigned p = 0; p < 4; p++) { /* 4-byte steps: every entry of crc_t2, crc_t3 */
        for (unsigned v = 0; v < 256; v++) {
            memset(buf, 0, 8);
            buf[p] = (uint8_t)v;
            for (size_t n = 4; n <= 7; n++) { /* and each tail after a step */
                if (kvmux_crc16(buf, n) != crc16_bitwise(buf, n)) {
                    CHECK_EQ(kvmux_crc16(buf, n), crc16_bitwise(buf, n));
                    return;
                }
            }
        }
    }
    uint32_t x = 2463534242u; /* xorshift32: fixed inputs, any length */
    for (unsigned t = 0; t < 2000; t++) {
        size_t n = t % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            buf[i] = (uint8_t)x;
        }
        if (kvmux_crc16(buf, n) != crc16_bitwise(buf, n)) {
            CHECK_EQ(kvmux_crc16(buf, n), crc16_bitwise(buf, n));
            return;
        }
    }
}

static void test_slot(void) {
    test_crc16_bytewise();
    CHECK_EQ(kvmux_crc16("123456789", 9), 0x31C3);
    CHECK_EQ(kvmux_crc16("", 0), 0);
    static const struct {
        const char *key;
        size_t len;
        unsigned slot;
    } v[] = {
        {"", 0, 0},
        {"123456789", 9, 12739},
        {"foo", 3, 12182},
        {"bar", 3, 5061},
        {"{user1000}.following", 20, 3443},
        {"{user1000}.followers", 20, 3443},
        {"foo{}{bar}", 10, 8363},
        {"foo{{bar}}zap", 13, 4015},
        {"foo{bar}{zap}", 13, 5061},
        {"{}", 2, 15257},
        {"k\0e\xffy", 5, 10745},
        {"{\0\xff}x", 5, 7920},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        unsigned got = kvmux_slot(v[i].key, v[i].len);
        CHECK_EQ(got, v[i].slot);
        if (got != v[i].slot) fprintf(stderr, "  slot of vector %zu\n", i);
    }
    /* The tag rule itself: same tag, same slot; a tag is what is hashed. */
    CHECK_EQ(kvmux_slot("{abc}x", 6), kvmux_slot("abc", 3));
    CHECK_EQ(kvmux_slot("x{abc}", 6), kvmux_slot("abc", 3));
    CHECK_EQ(kvmux_slot("{abc", 4), kvmux_crc16("{abc", 4) & 16383);  /* no '}' */
    CHECK_EQ(kvmux_slot("}abc{", 5), kvmux_crc16("}abc{", 5) & 16383); /* '}' first */
    CHECK_EQ(kvmux_slot(NULL, 0), 0);
    for (unsigned i = 0; i < 1000; i++) {
        char k[32];
        int n = snprintf(k, sizeof k, "key:%u", i);
        CHECK(kvmux_slot(k, (size_t)n) < KVMUX_SLOTS);
    }
}

/* ---- a byte builder independent of kvmux_map_encode ---- */

typedef struct bb {
    uint8_t *p;
    size_t n;
} bb;
static void b8(bb *b, unsigned v) { b->p[b->n++] = (uint8_t)v; }
static void b16(bb *b, unsigned v) {
    b8(b, v >> 8);
    b8(b, v & 0xff);
}
static void b64(bb *b, uint64_t v) {
    for (int i = 7; i >= 0; i--) b8(b, (unsigned)(v >> (8 * i)) & 0xff);
}
static void bstr(bb *b, const char *s) {
    b8(b, (unsigned)strlen(s));
    memcpy(b->p + b->n, s, strlen(s));
    b->n += strlen(s);
}
static void bhdr(bb *b, uint64_t epoch, unsigned ngroups) {
    memcpy(b->p, "KVSM", 4);
    b->n = 4;
    b8(b, 1);
    b64(b, epoch);
    b16(b, ngroups);
}
static void bgroup1(bb *b, unsigned id, const char *addr) {
    b16(b, id);
    b8(b, 1);
    bstr(b, addr);
}
static void brange(bb *b, unsigned first, unsigned last, unsigned group) {
    b16(b, first);
    b16(b, last);
    b16(b, group);
}

/* Two groups (1, 2), then the ranges given as triples. */
static size_t two_groups(uint8_t *out, uint64_t epoch, const unsigned *r, unsigned nr) {
    bb b = {out, 0};
    bhdr(&b, epoch, 2);
    bgroup1(&b, 1, "127.0.0.1:7001");
    bgroup1(&b, 2, "127.0.0.1:7101");
    b16(&b, nr);
    for (unsigned i = 0; i < nr; i++) brange(&b, r[3 * i], r[3 * i + 1], r[3 * i + 2]);
    return b.n;
}

static int decodes(const uint8_t *p, size_t n) {
    ERR[0] = '\0';
    int rc = kvmux_map_decode(&M2, p, n, ERR, sizeof ERR);
    if (rc != 0) CHECK(ERR[0] != '\0'); /* a refusal always says why */
    return rc;
}

/* ---- 18.2: the vector ---- */

static const char *DOC_MAP_HEX =
    "4b56534d01000000000000000700020001010e3132372e302e302e313a373030310002020e3132372e"
    "302e302e313a373130310e3132372e302e302e313a37313032000200001fff000120003fff0002";

static size_t unhex(const char *h, uint8_t *out) {
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
    }
    return n;
}

static void doc_map(kvmux_map *m) {
    kvmux_map_init(m);
    m->epoch = 7;
    m->ngroups = 2;
    m->groups[0].id = 1;
    m->groups[0].n = 1;
    strcpy(m->groups[0].addr[0], "127.0.0.1:7001");
    m->groups[1].id = 2;
    m->groups[1].n = 2;
    strcpy(m->groups[1].addr[0], "127.0.0.1:7101");
    strcpy(m->groups[1].addr[1], "127.0.0.1:7102");
    for (unsigned s = 0; s < KVMUX_SLOTS; s++) m->owner[s] = s < 8192 ? 1 : 2;
}

/* The 18.2 vector as docs/PROTOCOL.md prints it: the hex digits of the
 * code block after "Vector (`tests/unit/cluster_test.c`". */
static size_t doc_vector(uint8_t *out, size_t cap) {
    static char doc[512 * 1024];
    char path[1024];
    snprintf(path, sizeof path, "%s/../../docs/PROTOCOL.md", KVMUX_VECTORS_DIR);
    FILE *fp = fopen(path, "r");
    REQUIRE(fp != NULL);
    size_t n = fread(doc, 1, sizeof doc - 1, fp);
    fclose(fp);
    doc[n] = '\0';
    const char *p = strstr(doc, "Vector (`tests/unit/cluster_test.c`");
    p = p ? strstr(p, "```\n") : NULL;
    REQUIRE(p != NULL);
    p += 4;
    size_t len = 0;
    int hi = -1;
    for (; *p && strncmp(p, "```", 3) != 0 && len < cap; p++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0) continue;
        if (hi < 0) hi = d;
        else out[len++] = (uint8_t)(hi << 4 | d), hi = -1;
    }
    return len;
}

static void test_map_vector(void) {
    uint8_t want[128], doc[128];
    size_t wn = unhex(DOC_MAP_HEX, want);
    CHECK_EQ(wn, 80);
    CHECK_EQ(doc_vector(doc, sizeof doc), wn);
    CHECK(memcmp(doc, want, wn) == 0);
    doc_map(&M1);
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), 0);
    CHECK_EQ(kvmux_map_encoded_size(&M1), wn);
    size_t n = kvmux_map_encode(&M1, BUF, sizeof BUF);
    CHECK_EQ(n, wn);
    CHECK(n == wn && memcmp(BUF, want, n) == 0);
    CHECK_EQ(kvmux_map_encode(&M1, BUF, wn - 1), 0); /* cap too small */
    CHECK_EQ(kvmux_map_decode(&M2, want, wn, ERR, sizeof ERR), 0);
    CHECK(memcmp(&M1, &M2, sizeof M1) == 0);
    CHECK(kvmux_map_group_get(&M2, 2) == &M2.groups[1]);
    CHECK(kvmux_map_group_get(&M2, 3) == NULL);
    CHECK(kvmux_map_group_get(&M2, 0) == NULL);
    /* The text form of docs/PROTOCOL.md 18.2. */
    static const char text[] = "epoch 7\ngroup 1 127.0.0.1:7001\n"
                               "group 2 127.0.0.1:7101 127.0.0.1:7102\n"
                               "slots 0-8191 1\nslots 8192-16383 2\n";
    char out[512];
    CHECK_EQ(kvmux_map_format_text(&M1, out, sizeof out), strlen(text));
    CHECK(strcmp(out, text) == 0);
    CHECK_EQ(kvmux_map_parse_text(&M2, text, ERR, sizeof ERR), 0);
    CHECK(memcmp(&M1, &M2, sizeof M1) == 0);
    /* Cut output: the needed length, still NUL-terminated. */
    char small[10];
    memset(small, 'x', sizeof small);
    CHECK_EQ(kvmux_map_format_text(&M1, small, sizeof small), strlen(text));
    CHECK_EQ(strlen(small), sizeof small - 1);
    CHECK_EQ(memcmp(small, text, sizeof small - 1), 0);
}

/* ---- random maps: round trips ---- */

static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static void random_map(kvmux_map *m) {
    kvmux_map_init(m);
    m->epoch = 1 + rnd() % 1000000;
    m->ngroups = (uint16_t)(rnd() % 6 == 0 ? KVMUX_MAP_MAX_GROUPS : 1 + rnd() % 12);
    unsigned id = 0;
    for (unsigned g = 0; g < m->ngroups; g++) {
        id += 1 + rnd() % 200;
        m->groups[g].id = (uint16_t)id;
        m->groups[g].n = (uint8_t)(1 + rnd() % KVMUX_MAP_MAX_MEMBERS);
        for (unsigned i = 0; i < m->groups[g].n; i++) {
            if (rnd() % 4 == 0)
                snprintf(m->groups[g].addr[i], KVMUX_MAP_ADDR_MAX, "[::1]:%u", 1 + rnd() % 65535);
            else
                snprintf(m->groups[g].addr[i], KVMUX_MAP_ADDR_MAX, "host-%u.example:%u", rnd() % 999,
                         1 + rnd() % 65535);
        }
    }
    /* Owners in runs of random length, some unassigned; sometimes one
     * range per slot (the worst case). */
    int choppy = rnd() % 5 == 0;
    for (unsigned s = 0; s < KVMUX_SLOTS;) {
        unsigned len = choppy ? 1 : 1 + rnd() % 3000;
        uint16_t owner = rnd() % 4 == 0 ? 0 : m->groups[rnd() % m->ngroups].id;
        for (unsigned k = 0; k < len && s < KVMUX_SLOTS; k++) m->owner[s++] = owner;
    }
}

static char TEXT[2 * 1024 * 1024];

static void test_map_roundtrips(void) {
    for (int i = 0; i < 60; i++) {
        random_map(&M1);
        CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), 0);
        size_t n = kvmux_map_encode(&M1, BUF, sizeof BUF);
        CHECK(n > 0 && n <= KVMUX_MAP_WIRE_MAX);
        CHECK_EQ(n, kvmux_map_encoded_size(&M1));
        CHECK_EQ(kvmux_map_decode(&M2, BUF, n, ERR, sizeof ERR), 0);
        CHECK(memcmp(&M1, &M2, sizeof M1) == 0);
        size_t n2 = kvmux_map_encode(&M2, BUF2, sizeof BUF2);
        CHECK(n2 == n && memcmp(BUF, BUF2, n) == 0);
        size_t tl = kvmux_map_format_text(&M1, TEXT, sizeof TEXT);
        CHECK(tl < sizeof TEXT);
        CHECK_EQ(kvmux_map_parse_text(&M2, TEXT, ERR, sizeof ERR), 0);
        CHECK(memcmp(&M1, &M2, sizeof M1) == 0);
    }
    /* The largest map: every group full with 63-byte addresses, one range
     * per slot: exactly KVMUX_MAP_WIRE_MAX bytes. */
    kvmux_map_init(&M1);
    M1.epoch = UINT64_MAX;
    M1.ngroups = KVMUX_MAP_MAX_GROUPS;
    for (unsigned g = 0; g < KVMUX_MAP_MAX_GROUPS; g++) {
        M1.groups[g].id = (uint16_t)(65535 - KVMUX_MAP_MAX_GROUPS + 1 + g);
        M1.groups[g].n = KVMUX_MAP_MAX_MEMBERS;
        for (unsigned i = 0; i < KVMUX_MAP_MAX_MEMBERS; i++) {
            memset(M1.groups[g].addr[i], 'a', KVMUX_MAP_ADDR_MAX - 7);
            snprintf(M1.groups[g].addr[i] + KVMUX_MAP_ADDR_MAX - 7, 7, ":%05u", 10000 + g * 8 + i);
        }
    }
    for (unsigned s = 0; s < KVMUX_SLOTS; s++) M1.owner[s] = M1.groups[s % 2].id;
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), 0);
    CHECK_EQ(kvmux_map_encode(&M1, BUF, sizeof BUF), KVMUX_MAP_WIRE_MAX);
    CHECK_EQ(kvmux_map_decode(&M2, BUF, KVMUX_MAP_WIRE_MAX, ERR, sizeof ERR), 0);
    CHECK(memcmp(&M1, &M2, sizeof M1) == 0);
    /* An empty map (no groups, nothing assigned) is valid. */
    kvmux_map_init(&M1);
    M1.epoch = 1;
    CHECK_EQ(kvmux_map_check(&M1, NULL, 0), 0);
    size_t n = kvmux_map_encode(&M1, BUF, sizeof BUF);
    CHECK_EQ(n, 17);
    CHECK_EQ(kvmux_map_decode(&M2, BUF, n, NULL, 0), 0);
}

/* ---- every refusal of the decoder ---- */

static void test_map_refusals(void) {
    uint8_t v[128], b[256];
    size_t n = unhex(DOC_MAP_HEX, v);
    /* Truncation at every length, and one trailing byte. */
    for (size_t k = 0; k < n; k++) CHECK_EQ(decodes(v, k), -1);
    memcpy(b, v, n);
    b[n] = 0;
    CHECK_EQ(decodes(b, n + 1), -1);
    CHECK(strstr(ERR, "trailing") != NULL);
    CHECK_EQ(decodes(v, n), 0);
#define MUTATE(off, val)                     \
    do {                                     \
        memcpy(b, v, n);                     \
        b[off] = (uint8_t)(val);             \
        CHECK_EQ(decodes(b, n), -1);         \
    } while (0)
    MUTATE(0, 'k');         /* magic */
    CHECK(strstr(ERR, "magic") != NULL);
    MUTATE(4, 2);           /* format */
    MUTATE(4, 0);
    MUTATE(12, 0);          /* epoch 7 -> 0 */
    CHECK(strstr(ERR, "epoch 0") != NULL);
    MUTATE(16, 0);          /* group 1 -> id 0 */
    MUTATE(16, 2);          /* group 1 -> id 2: duplicate of the next */
    MUTATE(16, 3);          /* group 1 -> id 3: unordered */
    MUTATE(17, 0);          /* members 0 */
    MUTATE(17, 8);          /* members 8 */
    MUTATE(28, 'x');        /* "127.0.0.1x7001": no port */
    MUTATE(28, ' ');        /* a space */
    MUTATE(29, 'z');        /* port not a number */
    MUTATE(20, '#');        /* "1#7.0.0.1:7001": '#' would be a comment in the text form */
    MUTATE(18, 0);          /* address length 0 */
    MUTATE(18, 64);         /* address length 64 (and misframed) */
    MUTATE(14, 3);          /* 3 groups, only 2 there */
    /* ngroups over the limit. */
    bb x = {b, 0};
    bhdr(&x, 1, KVMUX_MAP_MAX_GROUPS + 1);
    CHECK_EQ(decodes(b, x.n), -1);
    /* A 63-byte address is the longest. */
    char a63[64];
    memset(a63, 'h', 57);
    strcpy(a63 + 57, ":65535");
    x.n = 0;
    bhdr(&x, 1, 1);
    bgroup1(&x, 1, a63);
    b16(&x, 0);
    CHECK_EQ(decodes(b, x.n), 0);
    /* Control bytes and non-ASCII in an address. */
    x.n = 0;
    bhdr(&x, 1, 1);
    bgroup1(&x, 1, "h\x01:1");
    b16(&x, 0);
    CHECK_EQ(decodes(b, x.n), -1);
    x.n = 0;
    bhdr(&x, 1, 1);
    bgroup1(&x, 1, "h\xc3\xa9:1");
    b16(&x, 0);
    CHECK_EQ(decodes(b, x.n), -1);
    /* Ranges. */
    static const struct {
        unsigned r[9], nr;
        int ok;
        const char *what;
    } rs[] = {
        {{0, 10, 1, 11, 20, 2}, 2, 0, "adjacent, other group"},
        {{0, 10, 1, 12, 20, 1}, 2, 0, "a gap, same group"},
        {{0, 16383, 2}, 1, 0, "everything"},
        {{16383, 16383, 1}, 1, 0, "the last slot"},
        {{0, 10, 1, 10, 20, 2}, 2, -1, "overlap by one"},
        {{0, 10, 1, 5, 20, 2}, 2, -1, "overlap"},
        {{20, 30, 1, 0, 10, 2}, 2, -1, "unordered"},
        {{0, 10, 1, 11, 20, 1}, 2, -1, "not maximal"},
        {{0, 10, 1, 11, 20, 2, 21, 30, 2}, 3, -1, "not maximal later"},
        {{0, 10, 3}, 1, -1, "unknown group"},
        {{0, 10, 0}, 1, -1, "group 0"},
        {{0, 16384, 1}, 1, -1, "last >= 16384"},
        {{16384, 16384, 1}, 1, -1, "first >= 16384"},
        {{65535, 65535, 1}, 1, -1, "slot 65535"},
        {{10, 5, 1}, 1, -1, "first > last"},
    };
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
        size_t bn = two_groups(b, 5, rs[i].r, rs[i].nr);
        int rc = decodes(b, bn);
        CHECK_EQ(rc, rs[i].ok);
        if (rc != rs[i].ok) fprintf(stderr, "  ranges: %s (%s)\n", rs[i].what, ERR);
        if (rc == 0) { /* accepted input is canonical: re-encodes to itself */
            size_t n2 = kvmux_map_encode(&M2, BUF2, sizeof BUF2);
            CHECK(n2 == bn && memcmp(BUF2, b, bn) == 0);
        }
    }
    /* Range count larger than the ranges present: truncated. */
    size_t bn = two_groups(b, 5, (const unsigned[]){0, 10, 1}, 1);
    b[bn - 8] = 2; /* nranges low byte: 1 -> 2 */
    CHECK_EQ(decodes(b, bn), -1);
#undef MUTATE
}

static void test_map_check(void) {
    doc_map(&M1);
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), 0);
    M1.epoch = 0;
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1);
    CHECK_EQ(kvmux_map_check(&M1, NULL, 0), -1);
    doc_map(&M1);
    M1.owner[100] = 9;
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1);
    CHECK(strstr(ERR, "slot 100") != NULL);
    doc_map(&M1);
    strcpy(M1.groups[1].addr[1], "nocolon");
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1);
    doc_map(&M1);
    memset(M1.groups[0].addr[0], 'a', KVMUX_MAP_ADDR_MAX); /* no NUL */
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1);
    doc_map(&M1);
    M1.groups[0].id = 2;
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1);
    doc_map(&M1);
    M1.groups[0].n = 0;
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1);
    doc_map(&M1);
    M1.groups[0].n = KVMUX_MAP_MAX_MEMBERS + 1;
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1);
    doc_map(&M1);
    M1.ngroups = KVMUX_MAP_MAX_GROUPS + 1;
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1);
    (void)kvmux_map_group_get(&M1, 1); /* clamps to 256 entries: never reads past */
}

/* ---- the text form ---- */

static void test_text(void) {
    /* Comments, blanks, tabs, any group order, later slots lines win, an
     * absent epoch, 0 to unassign. */
    CHECK_EQ(kvmux_map_parse_text(&M1,
                                  "# a map\n\n  group 2\t127.0.0.1:7101  # two\n"
                                  "group 1 127.0.0.1:7001 [::1]:7002\r\n"
                                  "slots 0-16383 1\nslots 42 2\nslots 100-199 0\n",
                                  ERR, sizeof ERR), 0);
    CHECK_EQ(M1.epoch, 0);
    CHECK_EQ(M1.ngroups, 2);
    CHECK_EQ(M1.groups[0].id, 1);
    CHECK_EQ(M1.groups[0].n, 2);
    CHECK(strcmp(M1.groups[0].addr[1], "[::1]:7002") == 0);
    CHECK_EQ(M1.owner[0], 1);
    CHECK_EQ(M1.owner[42], 2);
    CHECK_EQ(M1.owner[150], 0);
    CHECK_EQ(M1.owner[16383], 1);
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), -1); /* epoch 0 */
    M1.epoch = 3;
    CHECK_EQ(kvmux_map_check(&M1, ERR, sizeof ERR), 0);
    CHECK_EQ(kvmux_map_parse_text(&M1, "", ERR, sizeof ERR), 0);
    CHECK_EQ(kvmux_map_parse_text(&M1, "epoch 18446744073709551615", ERR, sizeof ERR), 0);
    CHECK(M1.epoch == UINT64_MAX);

    static const struct {
        const char *text;
        const char *prefix;
    } bad[] = {
        {"bogus 1\n", "line 1: "},
        {"epoch 1\nepoch 2\n", "line 2: "},
        {"epoch\n", "line 1: "},
        {"epoch -1\n", "line 1: "},
        {"epoch 18446744073709551616\n", "line 1: "},
        {"epoch 1 2\n", "line 1: "},
        {"\n\ngroup 0 a:1\n", "line 3: "},
        {"group 65536 a:1\n", "line 1: "},
        {"group 1\n", "line 1: "},
        {"group x a:1\n", "line 1: "},
        {"group 1 a:1\ngroup 1 b:2\n", "line 2: "},
        {"group 1 nocolon\n", "line 1: "},
        {"group 1 a\x7f:1\n", "line 1: "},
        {"group 1 a:0\n", "line 1: "},
        {"group 1 a:1 a:2 a:3 a:4 a:5 a:6 a:7 a:8\n", "line 1: "},
        {"group 1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1\n", "line 1: "}, /* 64 bytes */
        {"slots 0-10 1\n", "line 1: "},
        {"group 1 a:1\nslots 0-16384 1\n", "line 2: "},
        {"group 1 a:1\nslots 10-5 1\n", "line 2: "},
        {"group 1 a:1\nslots -5 1\n", "line 2: "},
        {"group 1 a:1\nslots 5- 1\n", "line 2: "},
        {"group 1 a:1\nslots 5\n", "line 2: "},
        {"group 1 a:1\nslots 5 1 2\n", "line 2: "},
        {"group 1 a:1\nslots 5 2\n", "line 2: "},
        {"group 1 a:1\nslots 5 x\n", "line 2: "},
        {"group 1 a:1\n# fine\n\nslots 1-2-3 1\n", "line 4: "},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ERR[0] = '\0';
        CHECK_EQ(kvmux_map_parse_text(&M1, bad[i].text, ERR, sizeof ERR), -1);
        int ok = strncmp(ERR, bad[i].prefix, strlen(bad[i].prefix)) == 0 &&
                 strlen(ERR) > strlen(bad[i].prefix);
        CHECK(ok);
        if (!ok) fprintf(stderr, "  text %zu: got '%s', want '%s...'\n", i, ERR, bad[i].prefix);
    }
    /* 256 groups parse; the 257th is refused on its line. */
    size_t off = 0;
    for (unsigned g = 1; g <= KVMUX_MAP_MAX_GROUPS + 1; g++)
        off += (size_t)snprintf(TEXT + off, sizeof TEXT - off, "group %u h:%u\n", g, g);
    CHECK_EQ(kvmux_map_parse_text(&M1, TEXT, ERR, sizeof ERR), -1);
    CHECK(strncmp(ERR, "line 257: ", 10) == 0);
}

/* ---- 18.3: redirect values ---- */

/* The value of the vector `name` in frames.hex (after the 16-byte header),
 * read with the protocol tests' loader. */
static size_t vec_value(const char *name, uint8_t *out, size_t cap) {
    uint8_t all[PROTO_TEST_MAX_VEC];
    size_t n = 0;
    REQUIRE(proto_test_load_vec(name, all, &n));
    REQUIRE(n >= 16 && n - 16 <= cap);
    memcpy(out, all + 16, n - 16);
    return n - 16;
}

static void test_vectors(void) {
    uint8_t want[512], got[512];
    kvmux_redirect r, back;
    memset(&r, 0, sizeof r);
    r.slot = (uint16_t)kvmux_slot("foo", 3);
    r.epoch = 7;
    r.group = 2;
    strcpy(r.endpoints, "127.0.0.1:7101,127.0.0.1:7102");
    size_t wn = vec_value("resp_wrong_shard_v3", want, sizeof want);
    size_t gn = kvmux_redirect_encode(&r, got, sizeof got);
    CHECK_EQ(gn, wn);
    CHECK(gn == wn && memcmp(got, want, gn) == 0);
    CHECK_EQ(kvmux_redirect_decode(&back, want, wn), 0);
    CHECK_EQ(back.slot, 12182);
    CHECK_EQ(back.epoch, 7);
    CHECK_EQ(back.group, 2);
    CHECK(strcmp(back.endpoints, r.endpoints) == 0);
    CHECK_EQ(kvmux_redirect_encode(&r, got, wn - 1), 0);

    memset(&r, 0, sizeof r);
    r.slot = 42;
    r.epoch = 7;
    wn = vec_value("resp_wrong_shard_unassigned_v3", want, sizeof want);
    gn = kvmux_redirect_encode(&r, got, sizeof got);
    CHECK(gn == 12 && wn == 12 && memcmp(got, want, 12) == 0);
    CHECK_EQ(kvmux_redirect_decode(&back, want, wn), 0);
    CHECK(back.group == 0 && back.endpoints[0] == '\0');

    wn = vec_value("resp_try_again_v3", want, sizeof want);
    gn = kvmux_try_again_encode(12182, 0, got, sizeof got);
    CHECK(gn == 10 && wn == 10 && memcmp(got, want, 10) == 0);
    uint16_t slot = 1;
    uint64_t epoch = 1;
    CHECK_EQ(kvmux_try_again_decode(want, wn, &slot, &epoch), 0);
    CHECK(slot == 12182 && epoch == 0);
    CHECK_EQ(kvmux_try_again_encode(1, 2, got, 9), 0);

    wn = vec_value("resp_cluster_slot_v3", want, sizeof want);
    CHECK(wn == 2 && kvmux_load_u16be(want) == kvmux_slot("foo", 3));
}

static void test_redirect_refusals(void) {
    uint8_t b[1024];
    kvmux_redirect r;
    memset(b, 0, sizeof b);
    for (size_t k = 0; k < 12; k++) CHECK_EQ(kvmux_redirect_decode(&r, b, k), -1);
    CHECK_EQ(kvmux_redirect_decode(&r, b, 12), 0);
    b[0] = 0x40; /* slot 16384 */
    CHECK_EQ(kvmux_redirect_decode(&r, b, 12), -1);
    b[0] = 0x3f;
    b[1] = 0xff; /* 16383 */
    CHECK_EQ(kvmux_redirect_decode(&r, b, 12), 0);
    memset(b + 12, 'a', sizeof b - 12);
    size_t cap = sizeof r.endpoints;
    CHECK_EQ(kvmux_redirect_decode(&r, b, 12 + cap - 1), 0); /* the longest */
    CHECK_EQ(strlen(r.endpoints), cap - 1);
    CHECK_EQ(kvmux_redirect_decode(&r, b, 12 + cap), -1);   /* one too long */
    b[13] = '\n';
    CHECK_EQ(kvmux_redirect_decode(&r, b, 20), -1);
    b[13] = 0;
    CHECK_EQ(kvmux_redirect_decode(&r, b, 20), -1);
    b[13] = (uint8_t)0x80;
    CHECK_EQ(kvmux_redirect_decode(&r, b, 20), -1);
    /* An endpoints field without its NUL is not encoded. */
    memset(r.endpoints, 'x', sizeof r.endpoints);
    CHECK_EQ(kvmux_redirect_encode(&r, b, sizeof b), 0);

    uint16_t slot;
    uint64_t epoch;
    memset(b, 0, 16);
    CHECK_EQ(kvmux_try_again_decode(b, 9, &slot, &epoch), -1);
    CHECK_EQ(kvmux_try_again_decode(b, 11, &slot, &epoch), -1);
    CHECK_EQ(kvmux_try_again_decode(b, 10, &slot, &epoch), 0);
    b[0] = 0x40;
    CHECK_EQ(kvmux_try_again_decode(b, 10, &slot, &epoch), -1);
}

/* ---- mutations: never crash; what is accepted is canonical ---- */

static void test_decode_fuzz(void) {
    enum { ROUNDS = 200000 };
    uint8_t base[4096], b[4200];
    size_t bn = 0;
    /* A few valid seeds: the doc vector and small random maps. */
    unsigned accepted = 0;
    for (int i = 0; i < ROUNDS; i++) {
        if (i % 20000 == 0) {
            kvmux_map_init(&M1);
            M1.epoch = 1 + rnd() % 100;
            M1.ngroups = (uint16_t)(1 + rnd() % 4);
            for (unsigned g = 0; g < M1.ngroups; g++) {
                M1.groups[g].id = (uint16_t)(g + 1);
                M1.groups[g].n = (uint8_t)(1 + rnd() % 3);
                for (unsigned k = 0; k < M1.groups[g].n; k++)
                    snprintf(M1.groups[g].addr[k], KVMUX_MAP_ADDR_MAX, "h%u:%u", g, 1 + k);
            }
            for (unsigned s = 0; s < KVMUX_SLOTS; s++)
                M1.owner[s] = (uint16_t)((s / (1 + rnd() % 4096)) % (M1.ngroups + 1u));
            bn = kvmux_map_encode(&M1, base, sizeof base);
            if (bn == 0) bn = unhex(DOC_MAP_HEX, base); /* too many ranges: use the vector */
        }
        size_t n = bn;
        memcpy(b, base, bn);
        unsigned muts = 1 + rnd() % 4;
        for (unsigned m = 0; m < muts; m++) {
            switch (rnd() % 5) {
            case 0: b[rnd() % n] = (uint8_t)rnd(); break;          /* any byte */
            case 1: b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8)); break; /* one bit */
            case 2: n = rnd() % (n + 1); break;                   /* truncate */
            case 3: if (n < sizeof b) b[n++] = (uint8_t)rnd(); break; /* append */
            default: {                                            /* a small count */
                size_t at = rnd() % n;
                b[at] = (uint8_t)(rnd() % 3);
                break;
            }
            }
            if (n == 0) break;
        }
        if (kvmux_map_decode(&M2, b, n, ERR, sizeof ERR) == 0) {
            accepted++;
            CHECK_EQ(kvmux_map_check(&M2, NULL, 0), 0);
            size_t n2 = kvmux_map_encode(&M2, BUF2, sizeof BUF2);
            if (n2 != n || memcmp(BUF2, b, n) != 0) {
                CHECK(!"an accepted input re-encodes differently");
                break;
            }
            /* And survives the text form (every 8th: parsing is slower). */
            if (accepted % 8 == 0) {
                kvmux_map_format_text(&M2, TEXT, sizeof TEXT);
                if (kvmux_map_parse_text(&M1, TEXT, ERR, sizeof ERR) != 0 ||
                    memcmp(&M1, &M2, sizeof M1) != 0) {
                    CHECK(!"an accepted map does not survive its text form");
                    fprintf(stderr, "  %s\n", ERR);
                    break;
                }
            }
        }
    }
    CHECK(accepted > 0); /* some mutations (e.g. of the epoch) stay valid */
    fprintf(stderr, "fuzz: %u of %d mutated inputs accepted\n", accepted, ROUNDS);
}

int main(void) {
    test_slot();
    test_map_vector();
    test_map_roundtrips();
    test_map_refusals();
    test_map_check();
    test_text();
    test_vectors();
    test_redirect_refusals();
    test_decode_fuzz();
    return test_report();
}
