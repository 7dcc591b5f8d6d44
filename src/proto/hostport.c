/* "host:port" parsing (hostport.h). */
#include "hostport.h"

#include <string.h>

static int is_blank(char ch) {
    return ch == ' ' || ch == '\t';
}

/* The port digits d[0..n): 1..65535. */
static int parse_port(const char *d, size_t n, uint16_t *port) {
    if (n == 0 || n > 5) return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9') return -1;
        v = v * 10 + (unsigned)(d[i] - '0');
    }
    if (v == 0 || v > 65535) return -1;
    *port = (uint16_t)v;
    return 0;
}

int kvmux_hostport_parse(const char *p, size_t len, char *host, size_t host_cap,
                         uint16_t *port) {
    while (len > 0 && is_blank(*p)) p++, len--;
    while (len > 0 && is_blank(p[len - 1])) len--;
    const char *h = p, *colon;
    size_t hlen;
    if (len > 0 && *p == '[') {
        /* [IPv6]:port */
        const char *close = memchr(p, ']', len);
        if (!close || (size_t)(close - p) + 1 >= len || close[1] != ':') return -1;
        h = p + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = memchr(p, ':', len);
        if (!colon || memchr(colon + 1, ':', len - (size_t)(colon + 1 - p))) return -1;
        hlen = (size_t)(colon - p);
    }
    if (hlen == 0 || hlen >= host_cap) return -1;
    for (size_t i = 0; i < hlen; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (ch <= ' ' || ch >= 0x7f || ch == ',' || ch == '[' || ch == ']') return -1;
    }
    if (parse_port(colon + 1, (size_t)(p + len - (colon + 1)), port) != 0) return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return 0;
}
