/* --requirepass: the token a client must present in its HELLO (as the
 * AUTH_TOKEN_LEN / AUTH_TOKEN settings entries, docs/PROTOCOL.md 8.1)
 * before the server answers HELLO_ACK. Nothing is served before: a
 * REQUEST or PING before the handshake is already a HANDSHAKE error, and
 * a HELLO without the right token gets ERROR AUTH (16) and the close.
 *
 * Design: the comparison is constant-time in the token's content and in
 * the length of the common prefix (it always runs over
 * KVMUX_MAX_AUTH_TOKEN bytes and folds the length difference in), so the
 * timing says nothing about how close a guess was. Failures are counted
 * (auth_failures in STATS) and logged with the peer address at most once
 * per second server-wide (a brute-force attempt cannot fill the log); the
 * line says how many failures went unlogged since the last one.
 *
 * Not here: per-user accounts, rate limiting of attempts (each failure
 * costs the attacker a new connection; --max-connections bounds them),
 * TLS (the token crosses the network in clear without it). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "server_internal.h"

#define AUTH_LOG_INTERVAL_MS 1000

int kvmux__auth_load(kvmux_rt *rt, const kvmux_server_config *cfg, char *err,
                     size_t errlen) {
    if (cfg->requirepass) {
        size_t n = strlen(cfg->requirepass);
        if (n == 0 || n > KVMUX_MAX_AUTH_TOKEN) {
            snprintf(err, errlen, "--requirepass must be 1..%u bytes", KVMUX_MAX_AUTH_TOKEN);
            return -1;
        }
        memset(rt->auth, 0, sizeof rt->auth);
        memcpy(rt->auth, cfg->requirepass, n);
        rt->auth_len = n;
        return 0;
    }
    if (!cfg->requirepass_file) {
        memset(rt->auth, 0, sizeof rt->auth);
        rt->auth_len = 0;
        return 0;
    }
    FILE *fp = fopen(cfg->requirepass_file, "r");
    if (!fp) {
        snprintf(err, errlen, "--requirepass-file %s: %s", cfg->requirepass_file,
                 strerror(errno));
        return -1;
    }
    char line[KVMUX_MAX_AUTH_TOKEN + 3];
    char *got = fgets(line, sizeof line, fp);
    fclose(fp);
    size_t n = got ? strcspn(line, "\r\n") : 0;
    if (n == 0 || n > KVMUX_MAX_AUTH_TOKEN) {
        snprintf(err, errlen, "--requirepass-file %s: the first line must hold a token of "
                 "1..%u bytes", cfg->requirepass_file, KVMUX_MAX_AUTH_TOKEN);
        return -1;
    }
    memset(rt->auth, 0, sizeof rt->auth);
    memcpy(rt->auth, line, n);
    rt->auth_len = n;
    memset(line, 0, sizeof line);
    return 0;
}

/* 0 iff a[0..alen) == b[0..blen); time independent of the bytes. Both
 * buffers are KVMUX_MAX_AUTH_TOKEN long (zero beyond their lengths). */
static int ct_differ(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    volatile uint8_t d = 0;
    for (size_t i = 0; i < KVMUX_MAX_AUTH_TOKEN; i++) d |= (uint8_t)(a[i] ^ b[i]);
    return (d | (uint8_t)(alen != blen)) != 0;
}

/* Log one failure unless one was logged in the last second. */
static void log_failure(kvmux_conn *c, const char *why) {
    kvmux_server *s = c->loop->srv;
    uint64_t now = c->loop->now;
    uint64_t last = atomic_load_explicit(&s->auth_log_ms, memory_order_relaxed);
    if (last && now - last < AUTH_LOG_INTERVAL_MS) {
        atomic_fetch_add_explicit(&s->auth_log_dropped, 1, memory_order_relaxed);
        return;
    }
    if (!atomic_compare_exchange_strong(&s->auth_log_ms, &last, now ? now : 1)) {
        atomic_fetch_add_explicit(&s->auth_log_dropped, 1, memory_order_relaxed);
        return;
    }
    uint64_t dropped = atomic_exchange(&s->auth_log_dropped, 0);
    char qp[96];
    kvmux_log_event(KVMUX_LOG_WARN, "auth.failed", "conn=%llu peer=%s reason=\"%s\" unlogged=%llu",
                    (unsigned long long)c->id, kvmux_log_quote(qp, sizeof qp, c->peer), why,
                    (unsigned long long)dropped);
}

int kvmux__auth_check_hello(kvmux_conn *c, const kvmux_frame *f) {
    const kvmux_rt *rt = &c->loop->rt; /* this loop's copy: see reload.c */
    uint8_t tok[KVMUX_MAX_AUTH_TOKEN];
    uint8_t want[KVMUX_MAX_AUTH_TOKEN];
    memset(tok, 0, sizeof tok);
    memset(want, 0, sizeof want);
    memcpy(want, rt->auth, rt->auth_len);
    int n = kvmux_settings_auth_token(f->value, f->value_len, tok);
    const char *why;
    if (n < 0) why = "malformed token";
    else if (n == 0) why = "no token";
    else if (ct_differ(tok, (size_t)n, want, rt->auth_len)) why = "wrong token";
    else return 0;
    KVMUX_STAT_ADD(c->loop, auth_failures, 1);
    log_failure(c, why);
    kvmux__conn_fail(c, 0, KVMUX_ERR_AUTH, "authentication required: %s",
                     n == 0 ? "this server needs a token in HELLO" : "invalid token");
    return -1;
}
