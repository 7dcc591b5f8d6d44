#!/usr/bin/env bash
# bench/snapshot.sh: small-SET latency while a replicated group snapshots a
# big store, for two kvmuxd builds in one run -- "before" (snapshots
# serialized on the Raft thread, e.g. commit 6256537) and "after" (this
# tree: serialized on libuv's thread pool, store shards copy-on-write;
# docs/DESIGN.md "Snapshots beside the applies") -- with the ratios.
#
# For each build: 3 replicas on loopback with --snapshot-threshold T,
# KEYS keys of 32 bytes preloaded (every replica snapshots that store
# again and again from then on), then SETs of 32-byte values over the same
# keys, C connections x 64 in flight, for SECONDS; prints ops/s,
# p50/p99/p99.9/max latency and how many snapshots the leader took in the
# window. The SETs touch every store shard, so "after" pays its
# copy-on-write on the Raft thread too: the figure is the whole cost.
#
# Same box for all 3 replicas and the client (2 cores, one disk): compare
# the two rows of one run, not runs of different days.
#
# Usage: bench/snapshot.sh -b BEFORE_KVMUXD [-k KVMUXD] [-K KEYS] [-d SECONDS]
#                          [-T THRESHOLD] [-c CONNS] [-o OUT]
#   -b  the "before" kvmuxd (build commit 6256537 somewhere: git archive
#       6256537 | tar -x -C DIR; cmake -S DIR -B DIR/build; cmake --build
#       DIR/build --target kvmuxd)
#   -k  the "after" kvmuxd (default ./build/kvmuxd; kvmux-bench and
#       kvmux-cli are taken next to it)
#   -K  keys preloaded (default 1000000)
#   -d  seconds measured (default 20)
#   -T  --snapshot-threshold, log entries (default 1024)
#   -c  connections, 64 SETs in flight each (default 4)
#   -o  also write the table to this file
# Exit status: 0 done; 1 a server did not start or a run failed; 2 usage.
set -euo pipefail

AFTER="" BEFORE="" KEYS=1000000 SECS=20 THRESH=1024 CONNS=4 OUT=""
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    -k) AFTER=$2; shift 2 ;;
    -b) BEFORE=$2; shift 2 ;;
    -K) KEYS=$2; shift 2 ;;
    -d) SECS=$2; shift 2 ;;
    -T) THRESH=$2; shift 2 ;;
    -c) CONNS=$2; shift 2 ;;
    -o) OUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "snapshot.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$BEFORE" ] || { echo "snapshot.sh: -b BEFORE_KVMUXD is required" >&2; usage >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${AFTER:=$ROOT/build/kvmuxd}"
BIN=$(dirname "$AFTER")
KB=$BIN/kvmux-bench CLI=$BIN/kvmux-cli
for b in "$AFTER" "$BEFORE" "$KB" "$CLI"; do
    [ -x "$b" ] || { echo "snapshot.sh: $b not found: build first" >&2; exit 1; }
done
for b in "$AFTER" "$BEFORE"; do
    [[ "$("$b" --help 2>&1)" == *--replica-id* ]] ||
        { echo "snapshot.sh: $b was built without replication (KVMUX_WITH_RAFT)" >&2; exit 1; }
done

. "$ROOT/bench/lib.sh"
bench_init snapshot

jfield() { sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p" "$1" | head -1; }
snapshots() { "$CLI" -h 127.0.0.1 -p "$1" stats replica_snapshots 2>/dev/null | tr -dc '0-9'; }

ROWS=()
declare -A P99 MAX P999 OPS
run() { # NAME KVMUXD
    local name=$1 lp s0 s1
    bench_start_group 3 "$2" --threads 2 --snapshot-threshold "$THRESH"
    bench_wait_group "$CLI"
    GHOSTS=$BENCH_GHOSTS
    # shellcheck disable=SC2086
    bench_run_tool /dev/null "$KB" -h "$GHOSTS" --op get --preload -k "$KEYS" -s 32 -n 1 \
        --mode async --depth 64 -q || bench_die "$name: preload failed"
    lp=$(bench_group_member "$CLI" leader)
    [ -n "$lp" ] || bench_die "$name: no leader"
    lp=${BENCH_GPORTS[$lp]}
    s0=$(snapshots "$lp")
    bench_run_tool "$BENCH_WORK/r.json" "$KB" -h "$GHOSTS" --op set -c "$CONNS" --mode async \
        --depth 64 -k "$KEYS" -s 32 -d "$SECS" --json -q || bench_die "$name: SET run failed"
    s1=$(snapshots "$lp")
    local f=$BENCH_WORK/r.json
    OPS[$name]=$(jfield "$f" ops_per_sec) P99[$name]=$(jfield "$f" p99)
    P999[$name]=$(jfield "$f" p99_9) MAX[$name]=$(jfield "$f" max)
    local errors
    errors=$(jfield "$f" errors)
    [ "${errors:-0}" = 0 ] || bench_die "$name: $errors errors"
    ROWS+=("$(printf '| %-28s | %8.0f | %8.0f | %8.0f | %8.0f | %8.0f | %4d |' "$name" "${OPS[$name]}" \
        "$(jfield "$f" p50)" "${P99[$name]}" "${P999[$name]}" "${MAX[$name]}" $((s1 - s0)))")
    printf '  %s: %s\n' "$name" "${ROWS[-1]}" >&2
    bench_stop_group
}
run "before (Raft-thread snapshot)" "$BEFORE"
run "after (background snapshot)" "$AFTER"

B="before (Raft-thread snapshot)" A="after (background snapshot)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
{
    echo "3 replicas, $KEYS keys of 32 bytes, --snapshot-threshold $THRESH; SETs of 32 bytes, $CONNS conns x 64 in flight, $SECS s:"
    echo "| build | SET ops/s | p50 us | p99 us | p99.9 us | max us | snapshots |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "after / before: p99 $(ratio "${P99[$A]}" "${P99[$B]}")x, p99.9 $(ratio "${P999[$A]}" "${P999[$B]}")x, max $(ratio "${MAX[$A]}" "${MAX[$B]}")x, ops/s $(ratio "${OPS[$A]}" "${OPS[$B]}")x"
} | tee "${OUT:-/dev/null}"
