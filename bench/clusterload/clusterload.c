/* clusterload: bench/cluster.sh's load (docs/MIGRATION.md section 12).
 * Starts a map group and G data groups of R kvmuxd each on loopback (the
 * kvmuxd of -k, or $KVMUX_KVMUXD, or the build's), loads K keys, runs T
 * threads of SET / GET / INCR over one cluster-mode client for D seconds
 * while M migrations of S slots each move random ranges between random
 * groups, one after another, then reads every key back and checks the
 * whole history with lincheck (tests/replica/migload.h has the details:
 * the model, the probers of section 9). Prints
 *   clusterload: groups=G slots_moved=S acknowledged=N lost=L applied_twice=D stale_reads=R max_slot_unavailable_ms=M
 *   clusterload-detail: ops=... (every figure of the run)
 * Exit status: 0 the run ended clean; 1 anything lost, applied twice,
 * read stale, refused by the model, or a move that did not commit; 2
 * usage; 3 the cluster did not start or the run could not be made. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migload.h"

static void usage(FILE *f) {
    fputs("usage: clusterload [-k KVMUXD] [-g GROUPS] [-r REPLICAS] [-K KEYS] [-t THREADS]\n"
          "                   [-d SECONDS] [-m MOVES] [-s SLOTS] [-S SEED] [-H HISTORY] [-q]\n"
          "  defaults: 3 groups of 3, 100000 keys, 8 threads, 30 s, 4 moves of 512 slots,\n"
          "  seed 1; -H writes the history for kvmux-lincheck; -q: no per-move lines\n",
          f);
}

/* A decimal in [lo, hi], or -1. */
static long num(const char *s, long lo, long hi) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    return *s && end && !*end && v >= lo && v <= hi ? v : -1;
}

int main(int argc, char **argv) {
    static migload_config cfg;
    migload_config_init(&cfg);
    cfg.verbose = 1;
    long groups = 3, replicas = 3, v;
    int opt;
    while ((opt = getopt(argc, argv, "k:g:r:K:t:d:m:s:S:H:qh")) != -1) {
        v = 0;
        switch (opt) {
        case 'k': setenv("KVMUX_KVMUXD", optarg, 1); break;
        case 'g': v = groups = num(optarg, 2, MIGLOAD_MAX_GROUPS); break;
        case 'r': v = replicas = num(optarg, 1, 3); break;
        case 'K': v = num(optarg, 1000, MIGLOAD_MAX_KEYS); cfg.keys = (uint32_t)v; break;
        case 't': v = num(optarg, 1, MIGLOAD_MAX_THREADS); cfg.threads = (int)v; break;
        case 'd': v = num(optarg, 1, 86400); cfg.duration_ms = v * 1000; break;
        case 'm': v = num(optarg, 0, 1000); cfg.moves = (int)v; break;
        case 's': v = num(optarg, 1, 16384); cfg.min_slots = cfg.max_slots = (uint32_t)v; break;
        case 'S': v = num(optarg, 0, 0x7fffffff); cfg.seed = (uint32_t)v; break;
        case 'H': cfg.history_out = optarg; break;
        case 'q': cfg.verbose = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (v < 0) {
            fprintf(stderr, "clusterload: -%c %s: out of range\n", opt, optarg);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    static migload_cluster cl;
    /* 64M per group holds 200k keys of 100 bytes anywhere; 1M keys need more. */
    const char *maxmem = cfg.keys > 200000 ? "1G" : NULL;
    if (migload_cluster_start(&cl, (int)groups, (int)replicas, maxmem) != 0) return 3;
    static migload_result r;
    int rc = migload_run(&cl, &cfg, &r);
    migload_cluster_stop(&cl);
    if (rc != 0) return 3;
    printf("clusterload: groups=%ld slots_moved=%llu acknowledged=%llu lost=%llu "
           "applied_twice=%llu stale_reads=%llu max_slot_unavailable_ms=%llu\n",
           groups, (unsigned long long)r.slots_moved, (unsigned long long)r.acknowledged,
           (unsigned long long)r.lost, (unsigned long long)r.applied_twice,
           (unsigned long long)r.stale_reads, (unsigned long long)r.max_unavail_ms);
    printf("clusterload-detail: ");
    migload_print(stdout, &r);
    printf("\n");
    int clean = r.lost == 0 && r.applied_twice == 0 && r.stale_reads == 0 &&
                r.model_errors == 0 && r.violations == 0 && r.lincheck_rc == 0 &&
                r.moves_committed == (uint64_t)cfg.moves;
    return clean ? 0 : 1;
}
