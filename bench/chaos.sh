#!/usr/bin/env bash
# bench/chaos.sh: kill -9 of random replicas (leader or follower) of a
# 3-replica kvmuxd group on loopback, each restarted after a random delay,
# under load (docs/REPLICATION.md "How it is tested"). Runs the
# chaos_test program of the build directory: 3 endpoints-mode clients
# with 64 requests in flight each (SET/GET on 8 registers, INCR on a
# counter, SET of unique keys), every op checked by the linearizability
# checker, every acknowledged unique key read back. Prints one line:
#   chaos: cycles=N seed=S leader_kills=L replica_crashes=C acknowledged=N present=P lost=X applied_twice=D violations=V
# and exits non-zero if anything was lost, applied twice or not
# linearizable.
#
# Usage: bench/chaos.sh [-k KVMUXD] [-B BUILD_DIR] [-n CYCLES] [-s SEED] [--quick]
#   -k  the kvmuxd binary to test (default: the build directory's)
#   -B  build directory holding tests/chaos_test (default ./build;
#       configured and built if missing)
#   -n  kill/restart cycles (default 100; --quick: 15)
#   -s  seed of the schedule (which replica, the delays; default 1)
#   --quick  15 cycles, about two minutes
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build
KVMUXD=
CYCLES=100
SEED=1
while [ $# -gt 0 ]; do
    case "$1" in
    -k) KVMUXD=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    -B) BUILD=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift 2 ;;
    -n) CYCLES=$2; shift 2 ;;
    -s) SEED=$2; shift 2 ;;
    --quick) CYCLES=15; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/chaos.sh: unknown argument '$1' (see -h)" >&2; exit 2 ;;
    esac
done
case "$CYCLES$SEED" in *[!0-9]*) echo "bench/chaos.sh: -n and -s take numbers" >&2; exit 2 ;; esac
TEST=$BUILD/tests/chaos_test
if [ ! -x "$TEST" ] || [ ! -x "$BUILD/kvmuxd" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j 2 --target chaos_test kvmuxd >/dev/null
fi
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
set +e
KVMUX_KVMUXD=$KVMUXD KVMUX_CHAOS_CYCLES=$CYCLES KVMUX_CHAOS_SEED=$SEED "$TEST" >"$LOG" 2>&1
rc=$?
set -e
grep '^chaos: cycles=' "$LOG" || { tail -30 "$LOG" >&2; echo "bench/chaos.sh: no summary line" >&2; exit 1; }
grep '^history:' "$LOG" >&2 || true
[ $rc = 0 ] || tail -30 "$LOG" >&2
exit $rc
