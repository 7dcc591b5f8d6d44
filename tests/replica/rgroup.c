/* Replicated group fixture (rgroup.h). */
#include "rgroup.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"

static uint16_t free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof a;
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &sl) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* test_connect_raw to host (an IPv4 literal). */
static int connect_host(const char *host, uint16_t port, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        close(fd);
        return -1;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

const char *rgroup_election_arg(void) {
    const char *et = getenv("KVMUX_ELECTION_TIMEOUT_MS");
    if (!et || !*et) return "1000";
    return strcmp(et, "default") == 0 ? NULL : et;
}

int rgroup_election_ms(void) {
    const char *et = rgroup_election_arg();
    return et ? atoi(et) : 500; /* kvmuxd's default (config.c) */
}

int rgroup_start_member(rgroup *g, int i, int bootstrap) {
    char id[16], rdir[192];
    snprintf(id, sizeof id, "%d", i + 1);
    snprintf(rdir, sizeof rdir, "%s/r%d", g->dir, i + 1);
    const char *args[32];
    int n = 0;
    args[n++] = "--replica-id";
    args[n++] = id;
    args[n++] = "--replica-dir";
    args[n++] = rdir;
    args[n++] = "--peers";
    args[n++] = g->peers;
    if (bootstrap) args[n++] = "--bootstrap";
    /* Tests run their groups with a 1000 ms election timeout, not
     * kvmuxd's default (500): CI machines are shared and the sanitizer
     * builds slow every process several-fold, and a stall of a few hundred
     * ms would start an election the test did not plan (a test that
     * expects one leader would then see NOT_LEADER). What a test plans,
     * it causes (kill -9, SIGSTOP). KVMUX_ELECTION_TIMEOUT_MS=N picks N,
     * =default keeps kvmuxd's own (bench/failover.sh measures that); extra
     * may still override it (the later option wins). */
    const char *et = rgroup_election_arg();
    if (et) {
        args[n++] = "--election-timeout";
        args[n++] = et;
    }
    for (int k = 0; g->extra && g->extra[k] && n < 28; k++) args[n++] = g->extra[k];
    args[n] = NULL;
    if (test_server_start_on_port(&g->srv[i], g->cport[i], args) != 0) return -1;
    g->up[i] = 1;
    return 0;
}

int rgroup_start_joiner(rgroup *g, int i) {
    if (i >= RGROUP_MAX) return -1;
    if (!g->cport[i]) {
        g->cport[i] = free_port();
        g->rport[i] = free_port();
        if (!g->cport[i] || !g->rport[i] || g->cport[i] == g->rport[i]) return -1;
    }
    if (i >= g->n) g->n = i + 1;
    char id[16], rdir[192], peers[96];
    snprintf(id, sizeof id, "%d", i + 1);
    snprintf(rdir, sizeof rdir, "%s/r%d", g->dir, i + 1);
    snprintf(peers, sizeof peers, "%d=127.0.0.1:%u/127.0.0.1:%u", i + 1, g->rport[i],
             g->cport[i]);
    const char *args[32];
    int n = 0;
    args[n++] = "--replica-id";
    args[n++] = id;
    args[n++] = "--replica-dir";
    args[n++] = rdir;
    args[n++] = "--peers";
    args[n++] = peers;
    for (int k = 0; g->extra && g->extra[k] && n < 28; k++) args[n++] = g->extra[k];
    args[n] = NULL;
    if (test_server_start_on_port(&g->srv[i], g->cport[i], args) != 0) return -1;
    g->up[i] = 1;
    return 0;
}

const char *rgroup_host(const rgroup *g, int i) { return g->host[i][0] ? g->host[i] : "127.0.0.1"; }

int rgroup_start(rgroup *g, int n, const char *const *extra) {
    return rgroup_start_hosts(g, n, extra, NULL);
}

/* One attempt of rgroup_start_hosts with freshly picked ports. */
static int start_hosts_once(rgroup *g, int n, const char *const *extra,
                            const char *const *hosts) {
    memset(g, 0, sizeof *g);
    g->n = n;
    g->extra = extra;
    for (int i = 0; hosts && i < n; i++)
        if (hosts[i]) snprintf(g->host[i], sizeof g->host[i], "%s", hosts[i]);
    snprintf(g->dir, sizeof g->dir, "/tmp/kvmux-rgroup-XXXXXX");
    if (!mkdtemp(g->dir)) return -1;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        g->cport[i] = free_port();
        g->rport[i] = free_port();
        if (!g->cport[i] || !g->rport[i] || g->cport[i] == g->rport[i]) return -1;
        used += (size_t)snprintf(g->peers + used, sizeof g->peers - used,
                                 "%s%d=%s:%u/%s:%u", i ? "," : "", i + 1, rgroup_host(g, i),
                                 g->rport[i], rgroup_host(g, i), g->cport[i]);
    }
    for (int i = 0; i < n; i++) {
        if (rgroup_start_member(g, i, 1) != 0) {
            fprintf(stderr, "rgroup: replica %d did not start (ports %u/%u)\n", i + 1,
                    g->cport[i], g->rport[i]);
            rgroup_stop(g);
            return -1;
        }
    }
    return 0;
}

/* free_port() only finds a port that was free a moment ago: with ctest
 * running tests in parallel another process can take it before the
 * replica binds it (the replica then exits). A whole group is started
 * again with new ports, up to three times, so that race is not a test
 * failure; a replica that cannot start for any other reason fails all
 * three attempts the same way. */
int rgroup_start_hosts(rgroup *g, int n, const char *const *extra, const char *const *hosts) {
    for (int attempt = 0; attempt < 3; attempt++)
        if (start_hosts_once(g, n, extra, hosts) == 0) return 0;
    return -1;
}

void rgroup_kill(rgroup *g, int i) {
    if (!g->up[i]) return;
    test_server_kill(&g->srv[i]);
    g->up[i] = 0;
}

int rgroup_stop_member(rgroup *g, int i) {
    if (!g->up[i]) return -1;
    g->up[i] = 0;
    return test_server_stop(&g->srv[i], 10000);
}

void rgroup_stop(rgroup *g) {
    for (int i = 0; i < g->n; i++) {
        if (!g->up[i]) continue;
        test_server_stop(&g->srv[i], 10000);
        g->up[i] = 0;
    }
    if (g->dir[0]) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g->dir);
        if (system(cmd) != 0) fprintf(stderr, "rgroup: could not remove %s\n", g->dir);
    }
}

/* The --requirepass token in the group's extra arguments, or NULL. */
static const char *group_token(const rgroup *g) {
    for (int k = 0; g->extra && g->extra[k] && g->extra[k + 1]; k++)
        if (strcmp(g->extra[k], "--requirepass") == 0) return g->extra[k + 1];
    return NULL;
}

/* The v1 handshake, with the group's token when it has one. */
static int group_handshake(const rgroup *g, int fd) {
    const char *tok = group_token(g);
    if (!tok) return test_raw_handshake(fd);
    uint8_t val[64 + KVMUX_AUTH_SETTINGS_MAX_LEN];
    kvmux_settings st;
    kvmux_settings_default(&st);
    size_t n = kvmux_settings_encode(val, &st);
    n += kvmux_settings_encode_auth(val + n, (const uint8_t *)tok, strlen(tok));
    uint8_t in[4096];
    kvmux_frame f;
    if (test_send_hello(fd, 0, 0, 1, 1, "rgroup", val, n) != 0 ||
        test_read_frame(fd, in, sizeof in, &f) <= 0 || f.type != KVMUX_FRAME_HELLO_ACK)
        return -1;
    return 0;
}

int rgroup_stats(const rgroup *g, int i, char *buf, size_t cap) {
    return rgroup_stats_key(g, i, NULL, buf, cap);
}

int rgroup_stats_key(const rgroup *g, int i, const char *key, char *buf, size_t cap) {
    if (!g->up[i] || cap < 2) return -1;
    int fd = connect_host(rgroup_host(g, i), g->cport[i], 2000);
    if (fd < 0) return -1;
    int rc = -1;
    static _Thread_local uint8_t in[256 * 1024];
    kvmux_frame f;
    if (group_handshake(g, fd) == 0 &&
        test_send_request(fd, 1, 1, KVMUX_OP_STATS, NULL, 0, key, NULL, 0) == 0 &&
        test_read_frame(fd, in, sizeof in, &f) > 0 && f.type == KVMUX_FRAME_RESPONSE &&
        f.code == KVMUX_STATUS_OK) {
        size_t n = f.value_len < cap - 1 ? f.value_len : cap - 1;
        memcpy(buf, f.value, n);
        buf[n] = '\0';
        rc = (int)n;
    }
    close(fd);
    return rc;
}

uint64_t rgroup_stat(const rgroup *g, int i, const char *name) {
    static _Thread_local char buf[64 * 1024];
    int n = rgroup_stats(g, i, buf, sizeof buf);
    if (n < 0) return UINT64_MAX;
    return test_stat_value(buf, (size_t)n, name);
}

int rgroup_stat_str(const rgroup *g, int i, const char *name, char *out, size_t cap) {
    static _Thread_local char buf[64 * 1024];
    /* The digest is computed only when asked for by name. */
    const char *key = strcmp(name, "replica_digest") == 0 ? name : NULL;
    if (rgroup_stats_key(g, i, key, buf, sizeof buf) < 0) return -1;
    size_t nl = strlen(name);
    for (const char *p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            size_t k = strcspn(v, "\n");
            if (k >= cap) k = cap - 1;
            memcpy(out, v, k);
            out[k] = '\0';
            return 0;
        }
    }
    return -1;
}

int rgroup_stable_leader(const rgroup *g, int timeout_ms) {
    int64_t end = test_now_ms() + timeout_ms;
    while (test_now_ms() < end) {
        int l = rgroup_leader(g, (int)(end - test_now_ms()));
        if (l < 0) return -1;
        test_sleep_ms(300);
        if (rgroup_leader(g, 1) == l) return l;
    }
    return -1;
}

int rgroup_leader(const rgroup *g, int timeout_ms) {
    int64_t end = test_now_ms() + timeout_ms;
    do {
        for (int i = 0; i < g->n; i++) {
            char role[32];
            if (g->up[i] && rgroup_stat_str(g, i, "replica_role", role, sizeof role) == 0 &&
                strcmp(role, "leader") == 0)
                return i;
        }
        test_sleep_ms(50);
    } while (test_now_ms() < end);
    return -1;
}

/* Applied index and digest of member i from ONE STATS "replica_digest"
 * reply: kvmuxd takes the digest between two reads of the applied index
 * and reports that index as replica_digest_index, so the pair belongs to
 * one state. */
static int index_and_digest(const rgroup *g, int i, uint64_t *idx, char *d, size_t dcap) {
    static _Thread_local char buf[64 * 1024];
    buf[0] = '\n';
    int n = rgroup_stats_key(g, i, "replica_digest", buf + 1, sizeof buf - 1);
    if (n < 0) return -1;
    *idx = test_stat_value(buf + 1, (size_t)n, "replica_digest_index");
    const char *p = strstr(buf, "\nreplica_digest:");
    if (*idx == UINT64_MAX || !p) return -1;
    p += strlen("\nreplica_digest:");
    size_t k = strcspn(p, "\n");
    if (k >= dcap) k = dcap - 1;
    memcpy(d, p, k);
    d[k] = '\0';
    return 0;
}

/* Samples of (applied index, digest) one member reported, oldest first. */
enum { RG_SAMPLES = 256 };
typedef struct {
    uint64_t idx[RG_SAMPLES];
    char dig[RG_SAMPLES][64];
    int n;
} rg_samples;

static void rg_add(rg_samples *s, uint64_t idx, const char *d) {
    if (s->n == RG_SAMPLES) { /* keep the newest */
        memmove(s->idx, s->idx + 1, (RG_SAMPLES - 1) * sizeof s->idx[0]);
        memmove(s->dig, s->dig + 1, (RG_SAMPLES - 1) * sizeof s->dig[0]);
        s->n--;
    }
    s->idx[s->n] = idx;
    snprintf(s->dig[s->n], sizeof s->dig[0], "%s", d);
    s->n++;
}

static const char *rg_find(const rg_samples *s, uint64_t idx) {
    for (int k = s->n - 1; k >= 0; k--)
        if (s->idx[k] == idx) return s->dig[k];
    return NULL;
}

int rgroup_converged(const rgroup *g, int timeout_ms, uint64_t *index, char *digest,
                     size_t dcap) {
    /* An idle leader appends an empty entry every second, so members sampled
     * one after the other rarely report the same index at the same moment
     * (under TSan one STATS can take longer than a tick). Every member's
     * (index, digest) pairs are kept, and the group has converged once one
     * index was reported by every member that is up, with one digest. */
    static rg_samples smp[RGROUP_MAX];
    int64_t end = test_now_ms() + timeout_ms;
    for (int i = 0; i < g->n; i++) smp[i].n = 0;
    do {
        int first = -1;
        for (int i = 0; i < g->n; i++) {
            if (!g->up[i]) continue;
            char d[64];
            uint64_t idx;
            if (index_and_digest(g, i, &idx, d, sizeof d) == 0) rg_add(&smp[i], idx, d);
            if (first < 0) first = i;
        }
        for (int k = first < 0 ? 0 : smp[first].n - 1; first >= 0 && k >= 0; k--) {
            uint64_t idx = smp[first].idx[k];
            const char *d0 = smp[first].dig[k];
            int same = 1;
            for (int i = first + 1; i < g->n && same; i++) {
                if (!g->up[i]) continue;
                const char *d = rg_find(&smp[i], idx);
                same = d && strcmp(d, d0) == 0;
            }
            if (same) {
                if (index) *index = idx;
                if (digest) snprintf(digest, dcap, "%s", d0);
                return 0;
            }
        }
        test_sleep_ms(20);
    } while (test_now_ms() < end);
    for (int i = 0; i < g->n; i++) {
        char d[64] = "?", role[32] = "?";
        rgroup_stat_str(g, i, "replica_digest", d, sizeof d);
        rgroup_stat_str(g, i, "replica_role", role, sizeof role);
        int st = 0;
        pid_t w = g->up[i] ? waitpid(g->srv[i].pid, &st, WNOHANG) : 0;
        fprintf(stderr, "rgroup: member %d up=%d %s (%d) role=%s applied=%llu commit=%llu digest=%s\n",
                i + 1, g->up[i],
                w == 0 ? "running" : WIFSIGNALED(st) ? "died of signal" : "exited",
                w == 0 ? 0 : WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), role,
                (unsigned long long)rgroup_stat(g, i, "replica_applied_index"),
                (unsigned long long)rgroup_stat(g, i, "replica_commit_index"), d);
    }
    return -1;
}
