/* kvmux-bench final summary, as text or JSON. See report.c. */
#ifndef KVMUX_BENCH_REPORT_H
#define KVMUX_BENCH_REPORT_H

#include <stdio.h>

#include "args.h"
#include "runner.h"

/* Print the summary of a finished run. Text: one "name: value" line per
 * field. JSON: one object (format in report.c). Thread-safe: no. */
void bench_report_text(FILE *out, const bench_config *cfg, const bench_result *res);
void bench_report_json(FILE *out, const bench_config *cfg, const bench_result *res);

#endif /* KVMUX_BENCH_REPORT_H */
