#!/usr/bin/env bash
# bench/scaling.sh: what a sharded cluster spends per request, measured with
# G = 1, 2, 3 data groups on this machine (issue 11 section 5: throughput
# with G groups is bounded by the cores here; the per-request costs printed
# are what docs/CLUSTER.md's scaling model for G machines is built from).
#
# The cluster: a one-member map group (--cluster-map-group) and G one-member
# data groups (--cluster-group 1..G --cluster-map MAPGROUP, --threads 1
# each) whose leaders watch it; `kvmux-cli cluster assign --map` splits the
# 16384 slots evenly. One-member groups keep the figure about routing and
# serving (a 3-member group adds its replication cost per write, measured
# by bench/group.sh). The load: kvmux-bench --cluster, C connections of
# depth 64 (the loop driver), uniform keys, 100-byte values, one run per op.
#
# For each G and op it prints ops/s, and per request: the data groups'
# CPU (all kvmuxd of the data groups, summed, from /proc), the client's CPU
# (kvmux-bench's own rusage, load generator included), and the map group's
# CPU over the whole run (per second: it serves one parked watch per data
# group and nothing per request). CPU per request is the robust figure on
# a shared machine: it does not depend on who else had the cores.
#   scaling: G=N op=OP ops=N server_us_per_op=X client_us_per_op=Y mapgroup_ms_per_s=Z
#
# Usage: bench/scaling.sh [-k KVMUXD] [-d SECONDS] [-c CONNS] [-K KEYSPACE] [--quick]
#   -k  kvmuxd binary (default ./build/kvmuxd; kvmux-bench and kvmux-cli next to it)
#   -d  seconds per run (default 5; --quick 1)
#   -c  client connections (default 2)
#   -K  keyspace (default 100000; --quick 5000)
# Exit status: 0 done; 1 a server did not start or a run failed; 2 usage.
set -euo pipefail

KVMUXD="" SECS="" CONNS=2 KEYSPACE="" QUICK=0
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    -k) KVMUXD=$2; shift 2 ;;
    -d) SECS=$2; shift 2 ;;
    -c) CONNS=$2; shift 2 ;;
    -K) KEYSPACE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "scaling.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then : "${SECS:=1}" "${KEYSPACE:=5000}"
else : "${SECS:=5}" "${KEYSPACE:=100000}"; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${KVMUXD:=$ROOT/build/kvmuxd}"
BIN=$(dirname "$KVMUXD")
KB=$BIN/kvmux-bench CLI=$BIN/kvmux-cli
for b in "$KVMUXD" "$KB" "$CLI"; do
    [ -x "$b" ] || { echo "scaling.sh: $b not found: build first (cmake --build build)" >&2; exit 1; }
done
[[ "$("$KVMUXD" --help 2>&1)" == *--cluster-group* ]] ||
    { echo "scaling.sh: $KVMUXD was built without replication (KVMUX_WITH_RAFT)" >&2; exit 1; }

. "$ROOT/bench/lib.sh"
bench_init scaling

# start_member TAG [ARGS...]: a one-member replicated kvmuxd in its own
# directory; sets M_PID, M_PORT.
start_member() {
    local tag=$1 rp
    shift
    rp=$(bench_free_port)
    M_PORT=$(bench_free_port)
    mkdir -p "$BENCH_WORK/$tag"
    "$KVMUXD" --bind 127.0.0.1 --port "$M_PORT" --threads 1 --replica-id 1 \
        --replica-dir "$BENCH_WORK/$tag" --peers "1=127.0.0.1:$rp/127.0.0.1:$M_PORT" \
        --bootstrap "$@" >"$BENCH_WORK/$tag.out" 2>"$BENCH_WORK/$tag.err" &
    M_PID=$!
    bench_track "$M_PID"
}

jfield() { sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p" "$1" | head -1; }

# one_cluster G: the map group and G data groups, the map assigned; runs
# SET then GET and prints their lines; stops everything it started.
one_cluster() {
    local g=$1 i ok _ pids=() ports=() mpid mport per first last
    start_member map --cluster-map-group
    mpid=$M_PID mport=$M_PORT
    for i in $(seq "$g"); do
        start_member "g$i" --cluster-group "$i" --cluster-map "127.0.0.1:$mport"
        pids+=("$M_PID") ports+=("$M_PORT")
    done
    per=$((16384 / g))
    : >"$BENCH_WORK/map.txt"
    for i in $(seq "$g"); do
        first=$(((i - 1) * per))
        last=$((i == g ? 16383 : i * per - 1))
        printf 'group %d 127.0.0.1:%s\nslots %d-%d %d\n' "$i" "${ports[$((i - 1))]}" \
            "$first" "$last" "$i" >>"$BENCH_WORK/map.txt"
    done
    ok=0
    for _ in $(seq 150); do
        if "$CLI" -t 1000 cluster assign "$BENCH_WORK/map.txt" --map "127.0.0.1:$mport" \
            >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
    done
    [ "$ok" = 1 ] || { tail -3 "$BENCH_WORK"/*.err >&2; bench_die "G=$g: the map was not installed in 15 s"; }
    bench_run_tool /dev/null "$KB" -h 127.0.0.1 -p "${ports[0]}" --cluster --op set --preload \
        -k "$KEYSPACE" -s 100 -n 1 --mode async --depth 64 -q || bench_die "G=$g: preload failed"
    local op s0 s1 m0 m1 cpu ops cus
    for op in set get; do
        s0=0
        for i in "${pids[@]}"; do s0=$((s0 + $(bench_cpu_ms "$i"))); done
        m0=$(bench_cpu_ms "$mpid")
        bench_run_tool "$BENCH_WORK/r.json" "$KB" -h 127.0.0.1 -p "${ports[0]}" --cluster \
            --op "$op" -c "$CONNS" --mode async --depth 64 -k "$KEYSPACE" -s 100 -d "$SECS" \
            --json -q || bench_die "G=$g: kvmux-bench $op failed"
        s1=0
        for i in "${pids[@]}"; do s1=$((s1 + $(bench_cpu_ms "$i"))); done
        m1=$(bench_cpu_ms "$mpid")
        [ "$(jfield "$BENCH_WORK/r.json" errors)" = 0 ] || bench_die "G=$g $op: errors"
        ops=$(jfield "$BENCH_WORK/r.json" ops)
        cus=$(jfield "$BENCH_WORK/r.json" us_per_op)
        cpu=$((s1 - s0))
        awk -v g="$g" -v op="$op" -v ops="$ops" -v d="$SECS" -v cpu="$cpu" -v cus="$cus" \
            -v m=$((m1 - m0)) 'BEGIN {
            printf "| %d | %s | %.0f | %.2f | %.2f | %.1f |\n", g, op, ops / d,
                (ops > 0 ? cpu * 1000 / ops : 0), cus, m / d }' >>"$BENCH_WORK/table"
        awk -v g="$g" -v op="$op" -v ops="$ops" -v d="$SECS" -v cpu="$cpu" -v cus="$cus" \
            -v m=$((m1 - m0)) 'BEGIN {
            printf "scaling: G=%d op=%s ops=%.0f server_us_per_op=%.2f client_us_per_op=%.2f mapgroup_ms_per_s=%.1f\n",
                g, op, ops / d, (ops > 0 ? cpu * 1000 / ops : 0), cus, m / d }' >>"$BENCH_WORK/lines"
    done
    for i in "${pids[@]}" "$mpid"; do bench_stop "$i"; done
    rm -rf "$BENCH_WORK"/g* "$BENCH_WORK/map"
}

: >"$BENCH_WORK/table"
: >"$BENCH_WORK/lines"
for g in 1 2 3; do one_cluster "$g"; done
echo "| groups | op | ops/s | data groups' CPU us/op | client CPU us/op | map group CPU ms/s |"
echo "|---:|---|---:|---:|---:|---:|"
cat "$BENCH_WORK/table"
cat "$BENCH_WORK/lines"
