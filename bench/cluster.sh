#!/usr/bin/env bash
# bench/cluster.sh: online slot migration under load (docs/MIGRATION.md
# section 12). bench/clusterload (tests/replica/migload.c) starts a map
# group and 3 data groups of 3 kvmuxd each on loopback, loads 100k keys
# (--quick; 1M without), runs 8 threads of SET / GET / INCR over one
# cluster-mode client for 30 s (--quick; 120 s without) while 4 ranges
# (--quick; 16 without) of 512 slots move between random groups, one
# migration at a time (so one per source group), with a prober of three
# keys per moved range (section 9); then reads every key back and checks
# the history in process. This script then runs kvmux-lincheck on the
# saved history (the same checker, from the file: both must agree), and
# measures the routing overhead by running bench/routing.sh (the cluster
# client against a one-group cluster vs the plain endpoints client,
# alternated rounds): P = (1 - median of its ratio lines) x 100. Prints
# exactly one line:
#   cluster: groups=G slots_moved=S acknowledged=N lost=L applied_twice=D stale_reads=R max_slot_unavailable_ms=M routing_overhead_pct=P
# S = slots of committed moves, N = acknowledged writes (the preload's
# included), L = lincheck's lost writes + INCR under-counts + keys the
# final read did not find as acknowledged, D = lincheck's duplicate writes
# + INCR over-counts, R = lincheck's stale reads, M = the longest a probe
# key of a moved range went without a successful request (ms).
#
# Usage: bench/cluster.sh [-k KVMUXD] [-r REPLICAS] [-s SEED] [--quick]
#   -k  kvmuxd binary (default ./build/kvmuxd; clusterload, kvmux-lincheck,
#       kvmux-bench and kvmux-cli next to it)
#   -r  members per group (default 3)
#   -s  seed of the ranges, targets and ops (default 1)
#   --quick  100k keys, 30 s, 4 moves; about a minute here (the full run: ~8 min)
# Exit status: 0 clean; 1 L, D or R nonzero, or a check or a run failed; 2 usage.
set -euo pipefail

KVMUXD="" REPLICAS=3 SEED=1 QUICK=0
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    -k) KVMUXD=$2; shift 2 ;;
    -r) REPLICAS=$2; shift 2 ;;
    -s) SEED=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cluster.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$REPLICAS$SEED" in *[!0-9]* | "") echo "cluster.sh: -r and -s take numbers" >&2; exit 2 ;; esac
if [ "$QUICK" = 1 ]; then KEYS=100000 SECS=30 MOVES=4
else KEYS=1000000 SECS=120 MOVES=16; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${KVMUXD:=$ROOT/build/kvmuxd}"
KVMUXD=$(cd "$(dirname "$KVMUXD")" && pwd)/$(basename "$KVMUXD")
BIN=$(dirname "$KVMUXD")
LOAD=$BIN/clusterload LINCHECK=$BIN/kvmux-lincheck
for b in "$KVMUXD" "$LOAD" "$LINCHECK"; do
    [ -x "$b" ] || { echo "cluster.sh: $b not found: build first (cmake --build build)" >&2; exit 1; }
done

. "$ROOT/bench/lib.sh"
bench_init cluster

# The load and the moves. clusterload's kvmuxd die with it (PDEATHSIG).
set +e
bench_run_tool "$BENCH_WORK/load.out" "$LOAD" -k "$KVMUXD" -g 3 -r "$REPLICAS" -K "$KEYS" \
    -d "$SECS" -m "$MOVES" -s 512 -S "$SEED" -H "$BENCH_WORK/history.txt" 2>"$BENCH_WORK/load.err"
lrc=$?
set -e
grep -h '^migload: move\|^clusterload-detail:' "$BENCH_WORK/load.out" "$BENCH_WORK/load.err" >&2 || true
line=$(grep '^clusterload: ' "$BENCH_WORK/load.out" || true)
if [ -z "$line" ] || [ "$lrc" -gt 1 ]; then
    grep -v 'level=info' "$BENCH_WORK/load.err" | tail -20 >&2
    bench_die "clusterload failed (exit $lrc)"
fi
[ "$lrc" = 0 ] || { grep 'migload: \|violation\|lincheck' "$BENCH_WORK/load.err" | head -20 >&2; }

# The same history through the CLI checker.
set +e
"$LINCHECK" -q "$BENCH_WORK/history.txt" >"$BENCH_WORK/lincheck.out" 2>&1
crc=$?
set -e
cat "$BENCH_WORK/lincheck.out" >&2
rm -f "$BENCH_WORK/history.txt"

# Routing overhead: bench/routing.sh as it is (its own one-group cluster).
quick=()
[ "$QUICK" = 1 ] && quick=(--quick)
bench_run_tool "$BENCH_WORK/routing.out" bash "$ROOT/bench/routing.sh" -k "$KVMUXD" "${quick[@]}" ||
    bench_die "bench/routing.sh failed"
grep '^routing: ' "$BENCH_WORK/routing.out" >&2
pct=$(sed -n 's/^routing: .* ratio=\([0-9.]*\) .*/\1/p' "$BENCH_WORK/routing.out" | sort -g |
    awk '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        p = (1 - m) * 100
        printf "%.1f", (p > -0.05 && p < 0.05) ? 0 : p }') || bench_die "no ratio from bench/routing.sh"

echo "cluster:${line#clusterload:} routing_overhead_pct=$pct"
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$line"; }
bad=0
for f in lost applied_twice stale_reads; do
    [ "$(field "$f")" = 0 ] || { echo "cluster.sh: $f=$(field "$f")" >&2; bad=1; }
done
[ "$lrc" = 0 ] || { echo "cluster.sh: clusterload's checks failed (exit $lrc; see above)" >&2; bad=1; }
[ "$crc" = 0 ] || { echo "cluster.sh: kvmux-lincheck on the history: exit $crc" >&2; bad=1; }
exit "$bad"
