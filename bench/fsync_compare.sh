#!/usr/bin/env bash
# bench/fsync_compare.sh: SET throughput with every write fsynced before it
# is acknowledged, kvmuxd --aof --fsync always vs redis-server
# --appendonly yes --appendfsync always, same machine, same run, logs in
# the same directory (so on the same file system).
#
# Runs, for 100-byte values over a keyspace of 10000:
#   kvmuxd  : kvmux-bench --op set --mode sync -t 64       (64 callers, 1 conn)
#             kvmux-bench --op set --mode async --depth 64 (64 in flight, 1 conn)
#   redis   : redis-benchmark -t set -c 64 -P 1            (64 conns, 1 in flight each)
#             redis-benchmark -t set -c 1 -P 64            (1 conn, 64 pipelined)
# and prints ops/s, p50/p99 and the ratio kvmux sync 64 / redis -c 64 (both
# "64 writes outstanding, each waiting for its own fsync"). Both servers
# group-commit: kvmuxd's writer thread covers every write appended during
# one fdatasync with the next; Redis fsyncs once per event-loop iteration
# before replying. The result depends heavily on the disk's flush cost;
# compare only numbers from one run.
#
# Usage: bench/fsync_compare.sh [-k KVMUXD] [-b KVMUX_BENCH] [-d SECONDS]
#                               [-D DIR] [-n REDIS_REQUESTS]
#   -k  kvmuxd (default ./build/kvmuxd)   -b  kvmux-bench (next to kvmuxd)
#   -d  seconds per kvmux-bench run (4)   -n  requests per redis run (200000)
#   -D  directory for both logs (default: a new temp dir under /var/tmp)
# Servers are stopped by PID on exit (bench/lib.sh).
set -euo pipefail

KVMUXD=./build/kvmuxd
KVMUX_BENCH=""
SECS=4
N=200000
DIR=""
while getopts "k:b:d:n:D:h" opt; do
    case "$opt" in
    k) KVMUXD=$OPTARG ;;
    b) KVMUX_BENCH=$OPTARG ;;
    d) SECS=$OPTARG ;;
    n) N=$OPTARG ;;
    D) DIR=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
    esac
done
[[ -n "$KVMUX_BENCH" ]] || KVMUX_BENCH="$(dirname "$KVMUXD")/kvmux-bench"
for t in "$KVMUXD" "$KVMUX_BENCH"; do
    [[ -x "$t" ]] || { echo "fsync_compare.sh: $t not found (build it, or pass -k/-b)" >&2; exit 2; }
done
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null ||
    { echo "fsync_compare.sh: redis-server / redis-benchmark not installed" >&2; exit 2; }
if [[ -z "$DIR" ]]; then DIR=$(mktemp -d /var/tmp/kvmux-fsync-XXXXXX); CLEAN_DIR=1; else CLEAN_DIR=0; fi
mkdir -p "$DIR"

. "$(dirname "$0")/lib.sh"
bench_init fsync_compare
[[ "$CLEAN_DIR" == 1 ]] && BENCH_EXIT_HOOKS+=('rm -rf "$DIR"')

json_field() { # json_field FILE KEY.SUB
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"
}

# ---- kvmuxd ----
bench_start_kvmuxd kvmuxd "$KVMUXD" --aof "$DIR/kvmux.aof" --fsync always
KPID=$BENCH_PID
KPORT=$BENCH_PORT
"$KVMUX_BENCH" -p "$KPORT" --op set --mode sync -t 64 -s 100 -k 10000 -d "$SECS" -q --json >"$DIR/k_sync.json"
"$KVMUX_BENCH" -p "$KPORT" --op set --mode async --depth 64 -s 100 -k 10000 -d "$SECS" -q --json >"$DIR/k_async.json"
bench_stop "$KPID"
K_AOF_LINE=$(grep "AOF:" "$BENCH_WORK/kvmuxd.err" || true)

# ---- redis ----
bench_start_redis redis --appendonly yes --appendfsync always --dir "$DIR" \
    --appendfilename redis.aof
RPID=$BENCH_PID
RPORT=$BENCH_PORT
redis_run() { # redis_run CONNS PIPELINE N -> "ops p50_ms p99_ms"
    redis-benchmark -p "$RPORT" -t set -d 100 -r 10000 -c "$1" -P "$2" -n "$3" --csv 2>/dev/null |
        python3 -c 'import csv,sys
rows=list(csv.reader(sys.stdin))
h=rows[0]; r=rows[1]
d=dict(zip(h,r))
print(d.get("rps"), d.get("p50_latency_ms","?"), d.get("p99_latency_ms","?"))'
}
read -r R64_OPS R64_P50 R64_P99 < <(redis_run 64 1 "$N")
read -r RP_OPS RP_P50 RP_P99 < <(redis_run 1 64 "$N")
bench_stop "$RPID"

KS_OPS=$(json_field "$DIR/k_sync.json" ops_per_sec)
KS_P50=$(json_field "$DIR/k_sync.json" latency_us.p50)
KS_P99=$(json_field "$DIR/k_sync.json" latency_us.p99)
KA_OPS=$(json_field "$DIR/k_async.json" ops_per_sec)
KA_P50=$(json_field "$DIR/k_async.json" latency_us.p50)
KA_P99=$(json_field "$DIR/k_async.json" latency_us.p99)

python3 - "$KS_OPS" "$KS_P50" "$KS_P99" "$KA_OPS" "$KA_P50" "$KA_P99" \
          "$R64_OPS" "$R64_P50" "$R64_P99" "$RP_OPS" "$RP_P50" "$RP_P99" "$DIR" <<'PY'
import sys
a = sys.argv[1:]
def f(x):
    try: return float(x)
    except ValueError: return float("nan")
ks, ka, r64, rp = f(a[0]), f(a[3]), f(a[6]), f(a[9])
print("SET, 100-byte values, every write fsynced before its ack (logs in %s)" % a[12])
print("%-44s %12s %10s %10s" % ("run", "ops/s", "p50 us", "p99 us"))
print("%-44s %12.0f %10.0f %10.0f" % ("kvmuxd --fsync always, sync 64 threads", ks, f(a[1]), f(a[2])))
print("%-44s %12.0f %10.0f %10.0f" % ("kvmuxd --fsync always, async depth 64", ka, f(a[4]), f(a[5])))
print("%-44s %12.0f %10.0f %10.0f" % ("redis appendfsync always, -c 64 -P 1", r64, f(a[7]) * 1000, f(a[8]) * 1000))
print("%-44s %12.0f %10.0f %10.0f" % ("redis appendfsync always, -c 1 -P 64", rp, f(a[10]) * 1000, f(a[11]) * 1000))
print("ratio kvmux sync 64 / redis -c 64:    %.2f" % (ks / r64))
print("ratio kvmux async 64 / redis -P 64:   %.2f" % (ka / rp))
PY
[[ -n "$K_AOF_LINE" ]] && echo "kvmuxd: ${K_AOF_LINE#*INFO }"
