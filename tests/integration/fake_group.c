/* The fake replicated group of the client failover tests (contracts in
 * fake_group.h). */
#include "fake_group.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client_v2_fake.h"
#include "testutil.h"

#define FG_BUF (64u * 1024)

/* The store entry for key (creating it if create), or NULL (absent, or
 * the store is full). Open addressing on an FNV-1a hash. Lock held. */
static fg_key *store_find(fake_group *g, const void *key, size_t klen, int create) {
    if (klen == 0 || klen >= sizeof g->keys[0].key) return NULL;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < klen; i++) h = (h ^ ((const uint8_t *)key)[i]) * 16777619u;
    for (uint32_t n = 0; n < FG_KEYS; n++) {
        fg_key *k = &g->keys[(h + n) & (FG_KEYS - 1)];
        if (k->klen == 0) {
            if (!create) return NULL;
            memcpy(k->key, key, klen);
            k->klen = (uint8_t)klen;
            return k;
        }
        if (k->klen == klen && memcmp(k->key, key, klen) == 0) return k;
    }
    return NULL;
}

static void put_u64(uint8_t *p, uint64_t v) {
    kvmux_store_u64be(p, v);
}

/* Answer one request as the leader (lock not held). */
static void leader_answer(fg_replica *r, v2fake *vf, int fd, const kvmux_frame *fr) {
    fake_group *g = r->g;
    uint8_t ext[16];
    uint8_t val[256];
    uint8_t elen = 0, status = KVMUX_STATUS_OK;
    uint32_t vlen = 0;
    int op = fr->code;
    int write = op == KVMUX_OP_SET || op == KVMUX_OP_DEL || op == KVMUX_OP_INCR;
    if (write && atomic_load(&r->outcome_unknown)) {
        v2fake_send(vf, fd, KVMUX_FRAME_RESPONSE, 0, fr->request_id,
                    KVMUX_STATUS_OUTCOME_UNKNOWN, NULL, 0, NULL, 0, 0);
        return;
    }
    pthread_mutex_lock(&g->mu);
    fg_key *k = store_find(g, fr->key, fr->key_len, write);
    switch (op) {
    case KVMUX_OP_SET:
        if (!k) {
            status = KVMUX_STATUS_INTERNAL; /* the store is full */
            break;
        }
        /* Too large to keep: acknowledged, value dropped (fake_group.h). */
        k->vlen = fr->value_len <= sizeof k->val ? fr->value_len : 0;
        memcpy(k->val, fr->value, k->vlen);
        k->present = 1;
        k->version = ++g->next_version;
        k->applied++;
        put_u64(ext, k->version);
        elen = 8;
        break;
    case KVMUX_OP_DEL:
        if (!k || !k->present) {
            status = KVMUX_STATUS_NOT_FOUND;
            break;
        }
        k->present = 0;
        k->applied++;
        break;
    case KVMUX_OP_INCR: {
        if (!k) {
            status = KVMUX_STATUS_INTERNAL;
            break;
        }
        long long n = 0;
        if (k->present) {
            char tmp[32];
            size_t l = k->vlen < sizeof tmp - 1 ? k->vlen : sizeof tmp - 1;
            memcpy(tmp, k->val, l);
            tmp[l] = 0;
            n = atoll(tmp);
        }
        n += (long long)kvmux_load_u64be(fr->extras);
        k->vlen = (uint32_t)snprintf((char *)k->val, sizeof k->val, "%lld", n);
        k->present = 1;
        k->version = ++g->next_version;
        k->applied++;
        put_u64(ext, (uint64_t)n);
        put_u64(ext + 8, k->version);
        elen = 16;
        break;
    }
    case KVMUX_OP_GET:
    case KVMUX_OP_EXISTS:
    case KVMUX_OP_WAIT:
        if (!k || !k->present) {
            /* WAIT on a missing key: TIMEOUT at once (enough for the
             * tests: they WAIT on keys that exist). */
            status = op == KVMUX_OP_WAIT ? KVMUX_STATUS_TIMEOUT : KVMUX_STATUS_NOT_FOUND;
            break;
        }
        put_u64(ext, k->version);
        elen = 8;
        if (op != KVMUX_OP_EXISTS) {
            memcpy(val, k->val, k->vlen);
            vlen = k->vlen;
        }
        break;
    default:
        status = KVMUX_STATUS_UNKNOWN_OP;
        break;
    }
    pthread_mutex_unlock(&g->mu);
    v2fake_send(vf, fd, KVMUX_FRAME_RESPONSE, 0, fr->request_id, status, elen ? ext : NULL,
                elen, vlen ? val : NULL, vlen, 0);
}

/* Handle one frame on replica r's connection. */
static void replica_frame(fg_replica *r, v2fake *vf, int fd, const kvmux_frame *fr) {
    if (fr->type == KVMUX_FRAME_PING) {
        v2fake_send(vf, fd, KVMUX_FRAME_PONG, 0, fr->request_id, 0, fr->extras, fr->extras_len,
                    NULL, 0, 0);
        return;
    }
    if (fr->type != KVMUX_FRAME_REQUEST) return; /* CANCEL, WINDOW_UPDATE: ignored */
    atomic_fetch_add(&r->requests, 1);
    switch ((fg_role)atomic_load(&r->role)) {
    case FG_LEADER:
        leader_answer(r, vf, fd, fr);
        break;
    case FG_FOLLOWER: {
        int op = fr->code;
        if (atomic_load(&r->hold_writes) &&
            (op == KVMUX_OP_SET || op == KVMUX_OP_DEL || op == KVMUX_OP_INCR)) {
            atomic_fetch_add(&r->held, 1);
            break;
        }
        char addr[sizeof r->leader_addr];
        pthread_mutex_lock(&r->g->mu);
        memcpy(addr, r->leader_addr, sizeof addr);
        pthread_mutex_unlock(&r->g->mu);
        atomic_fetch_add(&r->not_leader, 1);
        v2fake_send(vf, fd, KVMUX_FRAME_RESPONSE, 0, fr->request_id, KVMUX_STATUS_NOT_LEADER,
                    NULL, 0, addr, (uint32_t)strlen(addr), 0);
        break;
    }
    case FG_HOLD:
    case FG_STALL: /* read just before the role changed: held */
        atomic_fetch_add(&r->held, 1);
        break;
    }
}

/* Serve one accepted connection until EOF, a cut or the group's stop. */
static void replica_serve(fg_replica *r, int fd, uint8_t *buf) {
    v2fake vf;
    memset(&vf, 0, sizeof vf);
    kvmux_settings_default(&vf.settings);
    vf.max_version = KVMUX_PROTO_V3;
    vf.name = "fakegroup";
    if (v2fake_handshake(&vf, fd) != 0) return;
    atomic_store(&r->connected, 1);
    while (!atomic_load(&r->g->stop)) {
        if (atomic_load(&r->cut)) {
            struct linger lg = {1, 0}; /* RST: as a dead leader's kernel */
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            break;
        }
        if (atomic_load(&r->role) == FG_STALL) {
            test_sleep_ms(5); /* reads nothing */
            continue;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 10) != 1) continue;
        kvmux_frame fr;
        if (v2fake_read(fd, buf, FG_BUF, &fr) <= 0) break;
        replica_frame(r, &vf, fd, &fr);
    }
}

static void *replica_main(void *arg) {
    fg_replica *r = arg;
    uint8_t *buf = malloc(FG_BUF);
    REQUIRE(buf);
    while (!atomic_load(&r->g->stop)) {
        struct pollfd p = {r->lfd, POLLIN, 0};
        if (poll(&p, 1, 10) != 1) {
            atomic_store(&r->cut, 0); /* nothing to cut */
            continue;
        }
        int fd = accept(r->lfd, NULL, NULL);
        if (fd < 0) continue;
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        atomic_fetch_add(&r->conns, 1);
        atomic_store(&r->held, 0);
        replica_serve(r, fd, buf);
        close(fd);
        atomic_store(&r->connected, 0);
        atomic_store(&r->cut, 0);
    }
    free(buf);
    return NULL;
}

void fg_start(fake_group *g, int n) {
    fg_start_ex(g, n, 0);
}

void fg_start_ex(fake_group *g, int n, int rcvbuf) {
    REQUIRE(n >= 1 && n <= FG_MAX);
    memset(g, 0, sizeof *g);
    g->n = n;
    g->keys = calloc(FG_KEYS, sizeof *g->keys);
    REQUIRE(g->keys);
    pthread_mutex_init(&g->mu, NULL);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        fg_replica *r = &g->r[i];
        r->g = g;
        r->idx = i;
        atomic_init(&r->role, FG_FOLLOWER);
        r->lfd = socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(r->lfd >= 0);
        /* Before listen, so accepted sockets inherit it. */
        if (rcvbuf) setsockopt(r->lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(bind(r->lfd, (struct sockaddr *)&a, sizeof a) == 0);
        REQUIRE(listen(r->lfd, 8) == 0);
        socklen_t al = sizeof a;
        REQUIRE(getsockname(r->lfd, (struct sockaddr *)&a, &al) == 0);
        r->port = ntohs(a.sin_port);
        off += (size_t)snprintf(g->endpoints + off, sizeof g->endpoints - off, "%s127.0.0.1:%u",
                                i ? "," : "", (unsigned)r->port);
    }
    for (int i = 0; i < n; i++) REQUIRE(pthread_create(&g->r[i].th, NULL, replica_main, &g->r[i]) == 0);
}

void fg_stop(fake_group *g) {
    atomic_store(&g->stop, 1);
    for (int i = 0; i < g->n; i++) {
        pthread_join(g->r[i].th, NULL);
        close(g->r[i].lfd);
    }
    pthread_mutex_destroy(&g->mu);
    free(g->keys);
}

void fg_set_follower_addr(fake_group *g, int i, const char *addr) {
    pthread_mutex_lock(&g->mu);
    snprintf(g->r[i].leader_addr, sizeof g->r[i].leader_addr, "%s", addr);
    pthread_mutex_unlock(&g->mu);
    atomic_store(&g->r[i].role, FG_FOLLOWER);
}

void fg_set_role(fake_group *g, int i, fg_role role, int leader) {
    if (role == FG_FOLLOWER) {
        char addr[32] = "";
        if (leader >= 0) snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)g->r[leader].port);
        fg_set_follower_addr(g, i, addr);
        return;
    }
    atomic_store(&g->r[i].role, role);
}

void fg_cut(fake_group *g, int i) {
    fg_replica *r = &g->r[i];
    if (!atomic_load(&r->connected)) return;
    atomic_store(&r->cut, 1);
    int64_t end = test_now_ms() + 5000;
    while (atomic_load(&r->cut) && test_now_ms() < end) test_sleep_ms(2);
    CHECK(!atomic_load(&r->cut));
}

int fg_wait_held(fake_group *g, int i, int n, int ms) {
    int64_t end = test_now_ms() + ms;
    while (atomic_load(&g->r[i].held) < n) {
        if (test_now_ms() >= end) return 0;
        test_sleep_ms(2);
    }
    return 1;
}

uint32_t fg_applied(fake_group *g, const char *key) {
    pthread_mutex_lock(&g->mu);
    fg_key *k = store_find(g, key, strlen(key), 0);
    uint32_t n = k ? k->applied : 0;
    pthread_mutex_unlock(&g->mu);
    return n;
}

void fg_store_set(fake_group *g, const char *key, const char *val) {
    pthread_mutex_lock(&g->mu);
    fg_key *k = store_find(g, key, strlen(key), 1);
    REQUIRE(k && strlen(val) <= sizeof k->val);
    memcpy(k->val, val, strlen(val));
    k->vlen = (uint32_t)strlen(val);
    k->present = 1;
    k->version = ++g->next_version;
    pthread_mutex_unlock(&g->mu);
}
