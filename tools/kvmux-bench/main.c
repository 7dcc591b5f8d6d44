/* kvmux-bench: load generator for kvmuxd, in the spirit of redis-benchmark
 * and memtier_benchmark.
 *
 * What it is: main() only: parse the command line (args.c), install the
 * SIGINT/SIGTERM handler that ends the run early with a summary, run it
 * (runner.c) and print the summary (report.c).
 *
 * Exit status: 0 the run completed (also when cut short by SIGINT/SIGTERM:
 * the summary then says "interrupted"); 1 it could not connect, preload
 * failed, or a connection was lost during the run (the summary is still
 * printed); 2 bad command line; 3 the mode is not available in this build.
 *
 * What it is not: not part of ctest pass/fail (benchmarks never are); the
 * smoke test only checks that it runs and reports sanely.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "report.h"
#include "runner.h"

static void on_signal(int sig)
{
    (void)sig;
    bench_stop_requested = 1;
}

int main(int argc, char **argv)
{
    bench_config cfg;
    int rc = bench_args_parse(&cfg, argc, argv, stderr);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "try 'kvmux-bench --help'\n");
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    /* One-shot: a second ^C kills the process the usual way. */
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A dead server must show up as an error code, not kill us. */
    signal(SIGPIPE, SIG_IGN);

    bench_result res;
    rc = bench_run(&cfg, &res, stderr, stderr);
    if (rc != BENCH_RUN_OK)
        return rc;
    if (cfg.json)
        bench_report_json(stdout, &cfg, &res);
    else
        bench_report_text(stdout, &cfg, &res);
    fflush(stdout);
    int lost = res.connections_lost != 0;
    if (lost)
        fprintf(stderr, "kvmux-bench: %u connection(s) lost during the run\n",
                res.connections_lost);
    bench_result_deinit(&res);
    return lost ? 1 : 0;
}
