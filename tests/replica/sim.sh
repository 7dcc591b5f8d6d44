#!/usr/bin/env bash
# tests/replica/sim.sh: more seeds of the deterministic simulation
# (sim_test, tests/replica/sim_test.c) than CI runs, in parallel batches.
#
# Usage: tests/replica/sim.sh [-B BUILD_DIR] [-n SEEDS] [-s FIRST] [-j JOBS] [--io-faults]
#   -B  build directory holding tests/sim_test (default ./build)
#   -n  seeds in all (default 100000)
#   -s  first seed (default 1)
#   -j  parallel batches (default 2: this machine's cores are shared)
#   --io-faults  also fail disk writes (KVMUX_SIM_IO_FAULTS=1: retried
#       after a delay, as raft_uv does; docs/TESTING.md)
# Prints each batch's "sim:" lines and the failing or crashed seeds (a
# crashed seed is noted and the batch goes on), then one line
#   sim.sh: seeds=N failures=F seconds=S seeds_per_s=X
# (failures counts crashed seeds too) and exits non-zero if any seed
# failed or crashed. Replay one seed: KVMUX_SIM_SEED=S KVMUX_SIM_SEEDS=1 [KVMUX_SIM_TRACE=1] BUILD/tests/sim_test
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$ROOT/build
SEEDS=100000
FIRST=1
JOBS=2
IOF=0
while [ $# -gt 0 ]; do
    case "$1" in
    -B) BUILD=$2; shift 2 ;;
    -n) SEEDS=$2; shift 2 ;;
    -s) FIRST=$2; shift 2 ;;
    -j) JOBS=$2; shift 2 ;;
    --io-faults) IOF=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "sim.sh: unknown argument '$1' (see -h)" >&2; exit 2 ;;
    esac
done
BIN=$BUILD/tests/sim_test
[ -x "$BIN" ] || { echo "sim.sh: $BIN not built (cmake --build $BUILD --target sim_test)" >&2; exit 2; }
case "$SEEDS$FIRST$JOBS" in *[!0-9]*) echo "sim.sh: -n, -s, -j take numbers" >&2; exit 2 ;; esac
[ "$JOBS" -ge 1 ] && [ "$SEEDS" -ge 1 ] || { echo "sim.sh: -n and -j must be >= 1" >&2; exit 2; }
# One batch: seeds [from, from + n). A crash (C-Raft aborting) names its
# seed; the batch notes it and goes on with the next seed.
batch() {
    local from=$1 n=$2 log=$3 end=$(($1 + $2)) crashed
    while [ "$from" -lt "$end" ]; do
        KVMUX_SIM_SEED=$from KVMUX_SIM_SEEDS=$((end - from)) KVMUX_SIM_IO_FAULTS=$IOF \
            "$BIN" >>"$log" 2>&1 && return 0
        crashed=$(sed -n 's/^sim: crashed in seed \([0-9]*\)$/\1/p' "$log" | tail -1)
        [ -n "$crashed" ] && [ "$crashed" -ge "$from" ] || return 1
        echo "sim.sh: seed $crashed crashed" >>"$log"
        from=$((crashed + 1))
    done
    return 1
}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s.%N)
per=$(( (SEEDS + JOBS - 1) / JOBS ))
pids=()
for ((j = 0; j < JOBS; j++)); do
    from=$((FIRST + j * per))
    n=$per
    [ $((j * per + n)) -gt "$SEEDS" ] && n=$((SEEDS - j * per))
    [ "$n" -le 0 ] && break
    batch "$from" "$n" "$TMP/$j.log" &
    pids+=($!)
done
rc=0
for ((j = 0; j < ${#pids[@]}; j++)); do
    wait "${pids[$j]}" || rc=1
    grep -E '^sim(\.sh)?: ' "$TMP/$j.log" || { echo "sim.sh: batch $j printed nothing"; tail -5 "$TMP/$j.log"; rc=1; }
done
fail=$(cat "$TMP"/*.log | awk '/^sim: seeds=/ { for (i = 1; i <= NF; i++) if ($i ~ /^failures=/) { split($i, a, "="); f += a[2] } } /^sim.sh: seed .* crashed/ { f++ } END { print f + 0 }')
end=$(date +%s.%N)
awk -v n="$SEEDS" -v f="$fail" -v a="$start" -v b="$end" \
    'BEGIN { s = b - a; printf "sim.sh: seeds=%d failures=%d seconds=%.1f seeds_per_s=%.0f\n", n, f, s, (s > 0 ? n / s : 0) }'
[ "$fail" = 0 ] || rc=1
exit $rc
