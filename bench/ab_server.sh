#!/usr/bin/env bash
# bench/ab_server.sh: the same kvmux-bench workload against two kvmuxd
# binaries, A and B, in alternating rounds within one run, so a change on
# the server's request path is measured as a ratio B / A under the same
# machine load (on a shared machine, absolute numbers drift between runs;
# the alternation keeps that drift out of the ratio).
#
# Workloads (1 connection, async, 64 requests in flight, 100-byte values):
#   hot   : 9:1 GET:SET, no log (the request path with nothing parked)
#   fsync : SET only, --aof --fsync always (write answers held for the
#           fsync, so requests arrive while others are held)
# Prints per round ops/s of A and B and their ratio, then the medians.
#
# Usage: bench/ab_server.sh -a KVMUXD_A -b KVMUXD_B [-t KVMUX_BENCH]
#                           [-d SECONDS] [-r ROUNDS] [-w hot|fsync|both]
# Servers are stopped by PID on exit (bench/lib.sh).
set -euo pipefail

A=""
B=""
TOOL=./build/kvmux-bench
SECS=3
ROUNDS=3
WHICH=both
while getopts "a:b:t:d:r:w:h" o; do
    case $o in
    a) A=$OPTARG ;;
    b) B=$OPTARG ;;
    t) TOOL=$OPTARG ;;
    d) SECS=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    w) WHICH=$OPTARG ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
    esac
done
[ -n "$A" ] && [ -n "$B" ] || { echo "ab_server.sh: -a and -b are required" >&2; exit 2; }

. "$(dirname "$0")/lib.sh"
bench_init ab_server

# one TAG BIN WORKLOAD: start BIN, run the workload, stop; ops/s in RES
# (no subshell, so the exit trap always knows the server's PID).
one() {
    local tag=$1 bin=$2 w=$3 args=() load=()
    case $w in
    hot) load=(--ratio 9:1 -k 10000 --preload) ;;
    fsync)
        args=(--aof "$BENCH_WORK/$tag.aof" --fsync always)
        load=(--op set -k 10000)
        ;;
    esac
    bench_start_kvmuxd "$tag" "$bin" "${args[@]}"
    local pid=$BENCH_PID
    "$TOOL" -p "$BENCH_PORT" --mode async --depth 64 -d "$SECS" -s 100 --json -q "${load[@]}" \
        >"$BENCH_WORK/$tag.json"
    bench_stop "$pid"
    rm -f "$BENCH_WORK/$tag.aof"
    RES=$(sed -n 's/.*"ops_per_sec":\([0-9.]*\).*/\1/p' "$BENCH_WORK/$tag.json")
}

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

for w in hot fsync; do
    [ "$WHICH" = both ] || [ "$WHICH" = "$w" ] || continue
    ra=()
    rb=()
    rr=()
    for r in $(seq "$ROUNDS"); do
        # Odd rounds run A first, even rounds B first: a load that drifts
        # during a round then favours each side equally often.
        if [ $((r % 2)) = 1 ]; then
            one "a$r$w" "$A" "$w"; a=$RES
            one "b$r$w" "$B" "$w"; b=$RES
        else
            one "b$r$w" "$B" "$w"; b=$RES
            one "a$r$w" "$A" "$w"; a=$RES
        fi
        ra+=("$a")
        rb+=("$b")
        rr+=("$(awk -v a="$a" -v b="$b" 'BEGIN {print b / a}')")
        printf '%-6s round %d: A %10.0f ops/s  B %10.0f ops/s  B/A %.3f\n' "$w" "$r" "$a" "$b" \
            "${rr[-1]}"
    done
    ma=$(printf '%s\n' "${ra[@]}" | median)
    mb=$(printf '%s\n' "${rb[@]}" | median)
    printf '%-6s median : A %10.0f ops/s  B %10.0f ops/s  median of the round ratios B/A %.3f\n' \
        "$w" "$ma" "$mb" "$(printf '%s\n' "${rr[@]}" | median)"
done
