/* kvmux-cli's watching modes: --stat (a line of server rates per
 * interval, as redis-cli --stat) and --latency (PING round trips, as
 * redis-cli --latency). */
#ifndef KVMUX_CLI_MONITOR_H
#define KVMUX_CLI_MONITOR_H

#include "cmd.h"

/* How long a watching mode runs: lines lines (< 0: until interrupted),
 * one every interval_ms (>= 1). */
typedef struct cli_watch {
    long lines;
    int64_t interval_ms;
} cli_watch;

/* --stat: connect, read STATS, then every interval print one line: keys,
 * used memory, clients, requests per second over the interval and the
 * request total. A header line starts the output and comes back every 20
 * lines. Returns CLI_EXIT_OK after w->lines lines, or the exit code of
 * the first error (message on stderr). */
int cli_stat(cli_ctx *ctx, const cli_watch *w);

/* --latency: connect, send PING after PING (one every 10 ms at most) and
 * every interval print min, avg and max round trip in ms and the sample
 * count, over all samples so far. On a terminal the line is rewritten in
 * place; otherwise each is a new line. Returns as cli_stat. */
int cli_latency(cli_ctx *ctx, const cli_watch *w);

/* Sleep ms milliseconds (restarted after a signal). */
void cli_sleep_ms(int64_t ms);

/* Monotonic clock in nanoseconds. */
int64_t cli_now_ns(void);

/* The value of counter name in STATS text v ("name:value" lines), 0 if
 * absent or not a number. */
uint64_t cli_stat_value(const kvmux_value *v, const char *name);

#endif
