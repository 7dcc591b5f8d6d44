/* --peers parsing (peers.h). */
#include "peers.h"

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
