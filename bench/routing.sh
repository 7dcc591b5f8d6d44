#!/usr/bin/env bash
# bench/routing.sh: the cluster client's routing overhead (issue 11 section
# 5): kvmux-bench --cluster (libkvmux's cluster handle: slot hash, map
# lookup, one endpoints-mode client per group behind it) against the plain
# kvmux-bench on the same one-group cluster, in one run, rounds alternated
# so drift on a shared machine hits both sides alike.
#
# The cluster: one replicated kvmuxd (--replica-id 1, a one-member group,
# so the Raft log is local) started with --cluster-group 1, and a map that
# gives group 1 every slot. Plain runs connect to it as an endpoint list
# of one (the same sub-client the cluster handle uses per group); cluster
# runs give it as the seed.
#
# Shapes (100-byte values, preloaded keyspace), each GET and SET:
#   async-loop   1 connection, 64 in flight, the bench's event loop driver
#   async-cb     1 connection, 64 in flight, kvmux_call_async callbacks
#   sync-8       1 connection, 8 blocking caller threads
# Prints a table and one line per shape and op:
#   routing: SHAPE OP plain=OPS cluster=OPS ratio=R cpu_ratio=U (median of N rounds)
# cpu_ratio is the cluster side's client CPU per request over the plain
# side's (kvmux-bench's client_cpu us_per_op: libkvmux's threads and the
# load generator): the routing's own cost, which a busy shared machine
# disturbs much less than it does ops/s.
# Ratios under ~0.9 on one run are a regression only if a second run
# agrees: the machine is shared and the rounds are short.
# -I counts instructions instead (valgrind's callgrind, no cache
# simulation): user-space instructions per request of each side, which
# the load of a shared machine hardly moves. Each side runs twice, for
# N and 3 x N requests (a count, not a duration: under valgrind on a
# loaded machine a timed run may do too few), and the figure is the
# difference of the instruction totals over the difference of the
# requests: connects and the map load cancel out. One line per shape and
# op:
#   routing-instr: SHAPE OP plain=N cluster=N ratio=R
# It leaves out the kernel (the same syscalls on both sides) and cache
# misses, which CPU time includes.
#
# Usage: bench/routing.sh [-k KVMUXD] [-d SECONDS] [-r ROUNDS] [-K KEYSPACE] [-s SHAPES]
#                         [-p PERFDIR] [-I] [--quick]
#   -k  kvmuxd binary (default ./build/kvmuxd; kvmux-bench and kvmux-cli next to it)
#   -d  seconds per run (default 3; --quick 1)
#   -r  rounds per side (default 3; --quick 1)
#   -K  keyspace (default 100000; --quick 2000)
#   -s  shapes to run, comma-separated (default async-loop,async-cb,sync-8)
#   -p  profile: each cluster run under `perf record -g`, into
#       PERFDIR/SHAPE-OP.data (the last round's)
#   -I  instructions per request under callgrind (above) instead of
#       ops/s and CPU; -r and -p do not apply; -d SECONDS gives N =
#       SECONDS x 5000 requests
# Exit status: 0 done; 1 a server did not start or a run failed; 2 usage.
set -euo pipefail

KVMUXD="" SECS="" ROUNDS="" KEYSPACE="" QUICK=0 SHAPES=async-loop,async-cb,sync-8 PERFDIR="" INSTR=0
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    -k) KVMUXD=$2; shift 2 ;;
    -d) SECS=$2; shift 2 ;;
    -r) ROUNDS=$2; shift 2 ;;
    -K) KEYSPACE=$2; shift 2 ;;
    -s) SHAPES=$2; shift 2 ;;
    -p) PERFDIR=$2; shift 2 ;;
    -I) INSTR=1; shift ;;
    --quick) QUICK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "routing.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then : "${SECS:=1}" "${ROUNDS:=1}" "${KEYSPACE:=2000}"
else : "${SECS:=3}" "${ROUNDS:=3}" "${KEYSPACE:=100000}"; fi
for shape in ${SHAPES//,/ }; do
    case $shape in
    async-loop | async-cb | sync-8) ;;
    *) echo "routing.sh: unknown shape '$shape'" >&2; usage >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${KVMUXD:=$ROOT/build/kvmuxd}"
BIN=$(dirname "$KVMUXD")
KB=$BIN/kvmux-bench CLI=$BIN/kvmux-cli
for b in "$KVMUXD" "$KB" "$CLI"; do
    [ -x "$b" ] || { echo "routing.sh: $b not found: build first (cmake --build build)" >&2; exit 1; }
done
[ "$INSTR" = 0 ] || command -v valgrind >/dev/null ||
    { echo "routing.sh: -I needs valgrind" >&2; exit 1; }
[[ "$("$KVMUXD" --help 2>&1)" == *--cluster-group* ]] ||
    { echo "routing.sh: $KVMUXD was built without replication (KVMUX_WITH_RAFT)" >&2; exit 1; }

. "$ROOT/bench/lib.sh"
bench_init routing

bench_start_group 1 "$KVMUXD" --threads 2 --cluster-group 1
CP=${BENCH_GPORTS[1]}
SEED=127.0.0.1:$CP
ok=0
for _ in $(seq 150); do
    if printf 'group 1 %s\nslots 0-16383 1\n' "$SEED" |
        "$CLI" -h 127.0.0.1 -p "$CP" -t 1000 cluster assign - >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
done
[ "$ok" = 1 ] || { tail -5 "$BENCH_WORK/r1.err" >&2; bench_die "the one-group cluster did not take its map in 15 s"; }
# Preload through the plain path (the keys are the same either way).
bench_run_tool /dev/null "$KB" -h "$SEED,$SEED" --op get --preload -k "$KEYSPACE" -s 100 -n 1 \
    --mode async --depth 64 -q || bench_die "preload failed"

jfield() { sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p" "$1" | head -1; }
run() { # SIDE SHAPE OP [SECS|nCOUNT [CALLGRIND-OUT]] -> prints "OPS/S CLIENT-CPU-US/OP" (or "OPS")
    local side=$1 shape=$2 op=$3 secs=${4:-$SECS} cg=${5:-} args=() span
    span=(-d "$secs")
    [[ $secs == n* ]] && span=(-n "${secs#n}")
    case $shape in
    async-loop) args=(--mode async --depth 64 --driver loop) ;;
    async-cb) args=(--mode async --depth 64 --driver callback) ;;
    sync-8) args=(--mode sync -t 8) ;;
    esac
    # An endpoint list of one: the plain side uses the endpoints-mode client
    # the cluster handle runs per group, so the difference is the routing.
    local tgt=(-h "$SEED,$SEED")
    local wrap=()
    [ "$side" = cluster ] && tgt=(-h 127.0.0.1 -p "$CP" --cluster)
    [ "$side" = cluster ] && [ -n "$PERFDIR" ] &&
        wrap=(perf record -q -g -o "$PERFDIR/$shape-$op.data" --)
    [ -n "$cg" ] && wrap=(valgrind -q --tool=callgrind --callgrind-out-file="$cg")
    bench_run_tool "$BENCH_WORK/r.json" "${wrap[@]}" "$KB" "${tgt[@]}" --op "$op" -c 1 "${args[@]}" \
        -k "$KEYSPACE" -s 100 "${span[@]}" --json -q || bench_die "kvmux-bench $side $shape $op failed"
    local e; e=$(jfield "$BENCH_WORK/r.json" errors)
    [ "${e:-0}" = 0 ] || bench_die "$side $shape $op: $e errors"
    if [ -n "$cg" ]; then jfield "$BENCH_WORK/r.json" ops; return; fi
    echo "$(jfield "$BENCH_WORK/r.json" ops_per_sec) $(jfield "$BENCH_WORK/r.json" us_per_op)"
}
# Instructions per request of SIDE on SHAPE OP (-I): two callgrind runs.
instr() {
    local o1 o2 i1 i2
    o1=$(run "$1" "$2" "$3" "n$((SECS * 5000))" "$BENCH_WORK/cg1")
    o2=$(run "$1" "$2" "$3" "n$((SECS * 15000))" "$BENCH_WORK/cg2")
    i1=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$BENCH_WORK/cg1" | head -1)
    i2=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$BENCH_WORK/cg2" | head -1)
    awk -v a="${i2:-0}" -v b="${i1:-0}" -v c="${o2:-0}" -v d="${o1:-0}" \
        'BEGIN { printf "%.0f", (c > d && a > b) ? (a - b) / (c - d) : 0 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [ "$INSTR" = 1 ]; then
    echo "| shape | op | plain instructions/request | cluster instructions/request | cluster/plain |"
    echo "|---|---|---:|---:|---:|"
    LINES=()
    for shape in ${SHAPES//,/ }; do
        for op in get set; do
            p=$(instr plain "$shape" "$op")
            c=$(instr cluster "$shape" "$op")
            r=$(awk -v a="$c" -v b="$p" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
            printf '| %s | %s | %s | %s | %s |\n' "$shape" "$op" "$p" "$c" "$r"
            LINES+=("routing-instr: $shape $op plain=$p cluster=$c ratio=$r")
        done
    done
    printf '%s\n' "${LINES[@]}"
    exit 0
fi
echo "| shape | op | plain ops/s | cluster ops/s | cluster/plain | plain us/op | cluster us/op | cpu ratio |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
LINES=()
[ -z "$PERFDIR" ] || mkdir -p "$PERFDIR"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
for shape in ${SHAPES//,/ }; do
    for op in get set; do
        P=() C=() R=() PU=() CU=() U=()
        for _ in $(seq "$ROUNDS"); do
            read -r p pu <<<"$(run plain "$shape" "$op")"
            read -r c cu <<<"$(run cluster "$shape" "$op")"
            P+=("$p") C+=("$c") PU+=("$pu") CU+=("$cu")
            R+=("$(ratio "$c" "$p")") U+=("$(ratio "$cu" "$pu")")
        done
        pm=$(printf '%s\n' "${P[@]}" | median)
        cm=$(printf '%s\n' "${C[@]}" | median)
        rm_=$(printf '%s\n' "${R[@]}" | median)
        pum=$(printf '%s\n' "${PU[@]}" | median)
        cum=$(printf '%s\n' "${CU[@]}" | median)
        um=$(printf '%s\n' "${U[@]}" | median)
        printf '| %s | %s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f |\n' \
            "$shape" "$op" "$pm" "$cm" "$rm_" "$pum" "$cum" "$um"
        LINES+=("$(printf 'routing: %s %s plain=%.0f cluster=%.0f ratio=%.2f cpu_ratio=%.2f (median of %d rounds)' \
            "$shape" "$op" "$pm" "$cm" "$rm_" "$um" "$ROUNDS")")
    done
done
printf '%s\n' "${LINES[@]}"
