/* kvmux-bench final summary.
 *
 * What it is: the two renderings of a bench_result, both on stdout so they
 * can be piped while progress goes to stderr.
 *
 * Text, one "name: value" per line (stable names, easy to grep):
 *   ops: 612345            measured requests, any outcome
 *   ok / misses / errors   misses are GETs of absent keys, not errors
 *   duration_s, ops_per_sec
 *   latency_us: min=.. p50=.. p90=.. p99=.. p99.9=.. max=.. mean=..
 *   client_cpu: us_per_op=.. switches_per_op=.. (voluntary+involuntary)
 *   error: <kvmux_strerror name> (<code>): N     one line per kind seen
 *
 * JSON, one object:
 *   {"tool":"kvmux-bench","mode":..,"connections":..,"threads_per_connection":..,
 *   ["depth":..,"driver":"loop"|"callback", in async mode]
 *    "workload":{"ratio":{"get":..,"set":..,"incr":..,"ping":..},"keyspace":..,
 *                "value_min":..,"value_max":..,"preload":bool},
 *    "ops":..,"ok":..,"misses":..,"errors":..,"duration_s":..,"ops_per_sec":..,
 *    "ops_by_type":{"get":..,...},
 *    "latency_us":{"min":..,"p50":..,"p90":..,"p99":..,"p99_9":..,"max":..,"mean":..},
 *    "errors_by_kind":[{"code":-6,"name":"timed out","count":3}],
 *    "warmup_ops":..,"preloaded":..,"interrupted":bool,"connections_lost":..,
 *    "client_cpu":{"cpu_s":..,"us_per_op":..,"voluntary_switches":..,
 *                  "involuntary_switches":..,"switches_per_op":..}}
 *
 * client_cpu is this process (load generator and libkvmux together) over
 * the measured phase (getrusage): CPU microseconds and context switches
 * per measured request.
 *
 * Latencies are microseconds with one decimal, read from the merged
 * histogram (so within its 1% precision; min and max are exact).
 *
 * What it is not: no comparison or history; bench/compare.sh does that.
 */
#include "report.h"

#include <stdatomic.h>

#include "kvmux.h"

typedef struct pcts {
    double min, p50, p90, p99, p999, max, mean;
} pcts;

static pcts compute_pcts(const bench_result *res)
{
    pcts p = {0};
    const bench_hist *h = &res->hist;
    if (bench_hist_count(h) == 0)
        return p;
    p.min = (double)atomic_load((_Atomic int64_t *)&h->min) / 1e3;
    p.p50 = (double)bench_hist_percentile(h, 50.0) / 1e3;
    p.p90 = (double)bench_hist_percentile(h, 90.0) / 1e3;
    p.p99 = (double)bench_hist_percentile(h, 99.0) / 1e3;
    p.p999 = (double)bench_hist_percentile(h, 99.9) / 1e3;
    p.max = (double)atomic_load((_Atomic int64_t *)&h->max) / 1e3;
    p.mean = bench_hist_mean(h) / 1e3;
    return p;
}

static double ops_per_sec(const bench_result *res)
{
    return res->duration_s > 0 ? (double)res->ops / res->duration_s : 0.0;
}

static double per_op(double v, const bench_result *res)
{
    return res->ops ? v / (double)res->ops : 0.0;
}

static uint32_t threads_per_conn(const bench_config *cfg)
{
    return cfg->mode == BENCH_MODE_SERIAL ? 1 : cfg->threads;
}

/* JSON string body with the escapes JSON requires. */
static void json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

void bench_report_text(FILE *out, const bench_config *cfg, const bench_result *res)
{
    pcts p = compute_pcts(res);
    fprintf(out, "== kvmux-bench summary ==\n");
    fprintf(out, "server: %s:%u %s (credits %u)\n", cfg->host, (unsigned)cfg->port,
            res->server_name[0] ? res->server_name : "?", res->server_credits);
    fprintf(out, "mode: %s\n", bench_mode_name(cfg->mode));
    fprintf(out, "connections: %u\n", cfg->connections);
    fprintf(out, "threads_per_connection: %u\n", threads_per_conn(cfg));
    if (cfg->mode == BENCH_MODE_ASYNC)
        fprintf(out, "depth: %u\ndriver: %s\n", cfg->depth, bench_driver_name(cfg->driver));
    fprintf(out, "workload:");
    for (int k = 0; k < BENCH_OP_COUNT; k++)
        if (cfg->weight[k])
            fprintf(out, " %s=%u", bench_op_name((bench_opkind)k), cfg->weight[k]);
    fprintf(out, " keyspace=%u value=%zu", cfg->keyspace, cfg->value_min);
    if (cfg->value_max != cfg->value_min)
        fprintf(out, "-%zu", cfg->value_max);
    fprintf(out, " preload=%s\n", cfg->preload ? "yes" : "no");
    if (cfg->preload)
        fprintf(out, "preloaded: %llu keys in %.3f s\n",
                (unsigned long long)res->preloaded, res->preload_s);
    if (cfg->warmup_s > 0)
        fprintf(out, "warmup_ops: %llu\n", (unsigned long long)res->warmup_ops);
    fprintf(out, "ops: %llu\n", (unsigned long long)res->ops);
    fprintf(out, "ok: %llu\n", (unsigned long long)res->ok);
    fprintf(out, "misses: %llu\n", (unsigned long long)res->misses);
    fprintf(out, "errors: %llu\n", (unsigned long long)res->errors);
    fprintf(out, "duration_s: %.3f\n", res->duration_s);
    fprintf(out, "ops_per_sec: %.1f\n", ops_per_sec(res));
    fprintf(out,
            "latency_us: min=%.1f p50=%.1f p90=%.1f p99=%.1f p99.9=%.1f max=%.1f "
            "mean=%.1f\n",
            p.min, p.p50, p.p90, p.p99, p.p999, p.max, p.mean);
    fprintf(out, "client_cpu: us_per_op=%.2f switches_per_op=%.3f\n",
            per_op(res->cpu_s * 1e6, res),
            per_op((double)(res->vol_switches + res->invol_switches), res));
    for (int s = 0; s < BENCH_ERR_SLOTS; s++) {
        if (!res->err_count[s])
            continue;
        int code = bench_err_code(s);
        fprintf(out, "error: %s (%d): %llu\n",
                code ? kvmux_strerror(code) : "other", code,
                (unsigned long long)res->err_count[s]);
    }
    if (res->connections_lost)
        fprintf(out, "connections_lost: %u\n", res->connections_lost);
    if (res->interrupted)
        fprintf(out, "interrupted: yes\n");
}

void bench_report_json(FILE *out, const bench_config *cfg, const bench_result *res)
{
    pcts p = compute_pcts(res);
    fprintf(out, "{\"tool\":\"kvmux-bench\",\"server\":");
    json_str(out, res->server_name);
    fprintf(out, ",\"server_credits\":%u,\"mode\":\"%s\",\"connections\":%u,"
                 "\"threads_per_connection\":%u,",
            res->server_credits, bench_mode_name(cfg->mode), cfg->connections,
            threads_per_conn(cfg));
    if (cfg->mode == BENCH_MODE_ASYNC)
        fprintf(out, "\"depth\":%u,\"driver\":\"%s\",", cfg->depth,
                bench_driver_name(cfg->driver));
    fprintf(out, "\"workload\":{\"ratio\":{");
    for (int k = 0; k < BENCH_OP_COUNT; k++)
        fprintf(out, "%s\"%s\":%u", k ? "," : "", bench_op_name((bench_opkind)k),
                cfg->weight[k]);
    fprintf(out, "},\"keyspace\":%u,\"value_min\":%zu,\"value_max\":%zu,\"preload\":%s},",
            cfg->keyspace, cfg->value_min, cfg->value_max, cfg->preload ? "true" : "false");
    fprintf(out, "\"ops\":%llu,\"ok\":%llu,\"misses\":%llu,\"errors\":%llu,",
            (unsigned long long)res->ops, (unsigned long long)res->ok,
            (unsigned long long)res->misses, (unsigned long long)res->errors);
    fprintf(out, "\"duration_s\":%.6f,\"ops_per_sec\":%.1f,", res->duration_s,
            ops_per_sec(res));
    fprintf(out, "\"ops_by_type\":{");
    for (int k = 0; k < BENCH_OP_COUNT; k++)
        fprintf(out, "%s\"%s\":%llu", k ? "," : "", bench_op_name((bench_opkind)k),
                (unsigned long long)res->op_count[k]);
    fprintf(out, "},\"latency_us\":{\"min\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
                 "\"p99_9\":%.1f,\"max\":%.1f,\"mean\":%.1f},",
            p.min, p.p50, p.p90, p.p99, p.p999, p.max, p.mean);
    fprintf(out, "\"errors_by_kind\":[");
    int first = 1;
    for (int s = 0; s < BENCH_ERR_SLOTS; s++) {
        if (!res->err_count[s])
            continue;
        int code = bench_err_code(s);
        fprintf(out, "%s{\"code\":%d,\"name\":", first ? "" : ",", code);
        json_str(out, code ? kvmux_strerror(code) : "other");
        fprintf(out, ",\"count\":%llu}", (unsigned long long)res->err_count[s]);
        first = 0;
    }
    fprintf(out, "],\"warmup_ops\":%llu,\"preloaded\":%llu,\"interrupted\":%s,"
                 "\"connections_lost\":%u,",
            (unsigned long long)res->warmup_ops, (unsigned long long)res->preloaded,
            res->interrupted ? "true" : "false", res->connections_lost);
    fprintf(out, "\"client_cpu\":{\"cpu_s\":%.6f,\"us_per_op\":%.3f,"
                 "\"voluntary_switches\":%llu,\"involuntary_switches\":%llu,"
                 "\"switches_per_op\":%.4f}}\n",
            res->cpu_s, per_op(res->cpu_s * 1e6, res),
            (unsigned long long)res->vol_switches, (unsigned long long)res->invol_switches,
            per_op((double)(res->vol_switches + res->invol_switches), res));
}
