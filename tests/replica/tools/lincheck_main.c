/* kvmux-lincheck: check a kvmux history file for linearizability.
 *
 *   kvmux-lincheck [-n MAX_REPORT] [-q] FILE     (FILE "-" = standard input)
 *
 * The history format and the model are described in lincheck.h and in
 * docs/TESTING.md. Prints each violation (at most MAX_REPORT, default 20;
 * -q: none) and one summary line:
 *
 *   lincheck: ops=N keys=K ok=N failed=N unknown=N unknown_applied=N
 *             violations=V linearizable=yes|no check_ms=X
 *
 * (one line; wrapped here), then, when V > 0, a line of counts by kind.
 *
 * Exit codes: 0 linearizable; 1 not linearizable; 2 usage error, unreadable
 * file, malformed history (line number and reason on stderr) or out of
 * memory. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lincheck.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int usage(void) {
    fprintf(stderr, "usage: kvmux-lincheck [-n MAX_REPORT] [-q] FILE|-\n"
                    "exit codes: 0 linearizable, 1 not, 2 usage/malformed history/I-O error\n");
    return 2;
}

int main(int argc, char **argv) {
    unsigned max_report = 20;
    int quiet = 0, opt;
    while ((opt = getopt(argc, argv, "n:qh")) != -1) {
        if (opt == 'n') {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (!*optarg || *end || v > 1000000) return usage();
            max_report = (unsigned)v;
        } else if (opt == 'q') {
            quiet = 1;
        } else {
            return usage();
        }
    }
    if (optind + 1 != argc) return usage();
    const char *path = argv[optind];
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        perror(path);
        return 2;
    }
    lincheck_history *h = lincheck_new();
    if (!h) {
        fprintf(stderr, "kvmux-lincheck: out of memory\n");
        return 2;
    }
    char err[200] = "";
    int rc = lincheck_load(h, f, err, sizeof err);
    if (f != stdin) fclose(f);
    if (rc != 0) {
        if (rc > 0) fprintf(stderr, "kvmux-lincheck: %s:%d: %s\n", path, rc, err);
        else fprintf(stderr, "kvmux-lincheck: %s: read error or out of memory\n", path);
        lincheck_free(h);
        return 2;
    }
    lincheck_result res;
    double t0 = now_ms();
    rc = lincheck_check(h, &res, quiet ? NULL : stdout, max_report);
    double ms = now_ms() - t0;
    lincheck_free(h);
    if (rc < 0) {
        fprintf(stderr, "kvmux-lincheck: %s: history unusable (see above) or out of memory\n", path);
        return 2;
    }
    printf("lincheck: ops=%" PRIu64 " keys=%" PRIu64 " ok=%" PRIu64 " failed=%" PRIu64
           " unknown=%" PRIu64 " unknown_applied=%" PRIu64 " violations=%" PRIu64
           " linearizable=%s check_ms=%.1f\n",
           res.ops, res.keys, res.ok, res.failed, res.unknown, res.unknown_applied,
           res.violations, rc == 0 ? "yes" : "no", ms);
    if (res.violations) {
        printf("lincheck: by kind:");
        for (int k = 0; k < LINCHECK_V_KINDS; k++)
            if (res.by_kind[k]) printf(" %s=%" PRIu64, lincheck_kind_name((lincheck_kind)k), res.by_kind[k]);
        printf("\n");
    }
    return rc;
}
