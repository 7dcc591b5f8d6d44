/* --peers parsing (peers.h). */
#include "peers.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostport.h"
#include "log.h"

/* "host:port" or "[IPv6]:port", as a client parses it (hostport.h: a
 * NOT_LEADER value carries the client address verbatim), with nothing
 * around it (the string goes to C-Raft as it is). */
static int valid_addr(const char *a, size_t n) {
    char host[KVMUX_PEER_ADDR_MAX];
    uint16_t port;
    if (n == 0 || a[0] == ' ' || a[0] == '\t' || a[n - 1] == ' ' || a[n - 1] == '\t') return 0;
    return kvmux_hostport_parse(a, n, host, sizeof host, &port) == 0;
}

static int copy_addr(char *dst, const char *src, size_t n) {
    if (n == 0 || n >= KVMUX_PEER_ADDR_MAX || !valid_addr(src, n)) return -1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

/* One "ID=R/C" entry of length n. */
static int parse_one(const char *e, size_t n, kvmux_peer *p, char *err, size_t errlen) {
    const char *eq = memchr(e, '=', n);
    const char *sl = eq ? memchr(eq, '/', n - (size_t)(eq - e)) : NULL;
    if (!eq || !sl)
        return kvmux_errf(err, errlen, "--peers entry '%.*s' is not ID=RAFTHOST:RAFTPORT/"
                    "CLIENTHOST:CLIENTPORT", (int)n, e);
    unsigned id = 0;
    if (eq == e || eq - e > 3) return kvmux_errf(err, errlen, "--peers: bad id in '%.*s'", (int)n, e);
    for (const char *q = e; q < eq; q++) {
        if (*q < '0' || *q > '9') return kvmux_errf(err, errlen, "--peers: bad id in '%.*s'", (int)n, e);
        id = id * 10 + (unsigned)(*q - '0');
    }
    if (id < 1 || id > 255) return kvmux_errf(err, errlen, "--peers: id %u is not in 1..255", id);
    p->id = id;
    if (copy_addr(p->raft_addr, eq + 1, (size_t)(sl - eq - 1)) != 0 ||
        copy_addr(p->client_addr, sl + 1, n - (size_t)(sl + 1 - e)) != 0)
        return kvmux_errf(err, errlen, "--peers: bad address in '%.*s' (want HOST:PORT, port "
                    "1..65535, under %u bytes)", (int)n, e, KVMUX_PEER_ADDR_MAX);
    return 0;
}

int kvmux_peers_parse(const char *spec, kvmux_peers *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!spec || !*spec) return kvmux_errf(err, errlen, "--peers is empty");
    const char *s = spec;
    for (;;) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        if (out->n == KVMUX_PEERS_MAX)
            return kvmux_errf(err, errlen, "--peers: more than %u members", KVMUX_PEERS_MAX);
        kvmux_peer *p = &out->p[out->n];
        if (parse_one(s, n, p, err, errlen) != 0) return -1;
        if (kvmux_peers_find(out, p->id))
            return kvmux_errf(err, errlen, "--peers: id %u appears twice", p->id);
        out->n++;
        if (!end) break;
        s = end + 1;
    }
    return 0;
}

const kvmux_peer *kvmux_peers_find(const kvmux_peers *ps, uint32_t id) {
    for (uint32_t i = 0; i < ps->n; i++)
        if (ps->p[i].id == id) return &ps->p[i];
    return NULL;
}

int kvmux_peers_put(kvmux_peers *ps, const kvmux_peer *p) {
    for (uint32_t i = 0; i < ps->n; i++) {
        if (ps->p[i].id == p->id) {
            ps->p[i] = *p;
            return 0;
        }
    }
    if (ps->n == KVMUX_PEERS_MAX) return -1;
    ps->p[ps->n++] = *p;
    return 0;
}

static void put_u32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

size_t kvmux_peers_encode(const kvmux_peers *ps, uint8_t *buf) {
    size_t at = 12;
    for (uint32_t i = 0; i < ps->n; i++) {
        const kvmux_peer *p = &ps->p[i];
        size_t rl = strlen(p->raft_addr), cl = strlen(p->client_addr);
        buf[at] = (uint8_t)p->id;
        buf[at + 1] = (uint8_t)rl;
        buf[at + 2] = (uint8_t)cl;
        memcpy(buf + at + 3, p->raft_addr, rl);
        memcpy(buf + at + 3 + rl, p->client_addr, cl);
        at += 3 + rl + cl;
    }
    put_u32(buf, KVMUX_PEERS_MAGIC);
    buf[4] = 1;
    buf[5] = (uint8_t)ps->n;
    buf[6] = buf[7] = 0;
    put_u32(buf + 8, (uint32_t)at);
    size_t padded = (at + 7) & ~(size_t)7;
    memset(buf + at, 0, padded - at);
    return padded;
}

int kvmux_peers_is_table(const uint8_t *buf, size_t len) {
    return len >= 12 && get_u32(buf) == KVMUX_PEERS_MAGIC;
}

int kvmux_peers_decode(const uint8_t *buf, size_t len, kvmux_peers *out, size_t *used) {
    memset(out, 0, sizeof *out);
    if (!kvmux_peers_is_table(buf, len) || buf[4] != 1 || buf[5] > KVMUX_PEERS_MAX) return -1;
    size_t total = get_u32(buf + 8);
    if (total < 12 || total > len) return -1;
    size_t at = 12;
    for (unsigned i = 0; i < buf[5]; i++) {
        if (at + 3 > total) return -1;
        kvmux_peer p;
        memset(&p, 0, sizeof p);
        size_t rl = buf[at + 1], cl = buf[at + 2];
        p.id = buf[at];
        if (p.id == 0 || at + 3 + rl + cl > total ||
            copy_addr(p.raft_addr, (const char *)buf + at + 3, rl) != 0 ||
            copy_addr(p.client_addr, (const char *)buf + at + 3 + rl, cl) != 0 ||
            kvmux_peers_find(out, p.id))
            return -1;
        out->p[out->n++] = p;
        at += 3 + rl + cl;
    }
    if (at != total) return -1;
    size_t padded = (total + 7) & ~(size_t)7;
    *used = padded <= len ? padded : len;
    return 0;
}
