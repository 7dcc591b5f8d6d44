#!/usr/bin/env bash
# bench/failover.sh: leader failover of a 3-replica kvmuxd group on
# loopback (docs/REPLICATION.md). Runs the replica_group_test program of
# the build directory: 3 replicas with free ports under /tmp, 2 client
# threads with 64 requests in flight each (SET/GET on 8 registers, INCR on
# a counter), the leader killed with SIGKILL K times and restarted, every
# op checked by the linearizability checker; alongside, a libkvmux client
# in endpoints mode with exactly-once sessions on keeps 64 INCRs in flight
# on its own counter, which must end exactly at its acknowledged INCRs
# (applied_twice counts any excess, lost any shortfall). Prints one line:
#   failover: kills=K acknowledged=N lost=L applied_twice=D failover_ms_p50=X failover_ms_p99=Y failover_ms_max=Z linearizable=yes|no
# (failover time: from the kill to the first acknowledged write invoked
# after it) and exits non-zero if anything was lost, applied twice or not
# linearizable.
#
# Usage: bench/failover.sh [-k KVMUXD] [-B BUILD_DIR] [-n KILLS] [-e MS] [--quick]
#   -k  the kvmuxd binary to test (default: the build directory's)
#   -B  build directory holding tests/replica_group_test (default ./build;
#       configured and built if missing)
#   -n  kills (default 30; --quick: 3)
#   -e  --election-timeout of the replicas in ms (default: kvmuxd's own, 500)
#   --quick  3 kills, about half a minute
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build
KVMUXD=
KILLS=30
ELECTION=
while [ $# -gt 0 ]; do
    case "$1" in
    -k) KVMUXD=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    -B) BUILD=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift 2 ;;
    -n) KILLS=$2; shift 2 ;;
    -e) ELECTION=$2; shift 2 ;;
    --quick) KILLS=3; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/failover.sh: unknown argument '$1' (see -h)" >&2; exit 2 ;;
    esac
done
TEST=$BUILD/tests/replica_group_test
if [ ! -x "$TEST" ] || [ ! -x "$BUILD/kvmuxd" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j "$(nproc)" --target replica_group_test kvmuxd >/dev/null
fi
# The test makes 5 x KVMUX_TEST_SCALE kills (rounded).
SCALE=$(awk -v k="$KILLS" 'BEGIN { printf "%.3f", k / 5 }')
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
set +e
KVMUX_KVMUXD=$KVMUXD KVMUX_TEST_SCALE=$SCALE KVMUX_ELECTION_TIMEOUT_MS=${ELECTION:-default} \
    "$TEST" >"$LOG" 2>&1
rc=$?
set -e
grep '^failover:' "$LOG" || { tail -30 "$LOG" >&2; echo "bench/failover.sh: no summary line" >&2; exit 1; }
grep '^history:' "$LOG" >&2 || true
grep '^sessions:' "$LOG" >&2 || true
exit $rc
