#!/usr/bin/env bash
# bench/hol.sh: issue 3's head-of-line measurement, kvmux vs Redis.
#
# Builds bench/hol/hol_kvmux.c (against the Release libkvmux.a,
# libkvmux_proto.a and libkvmux_common.a of the build directory) and
# bench/hol/hol_redis.c (plain sockets, RESP) with cc, starts a kvmuxd
# (--max-value 128M) and a redis-server (loopback, no persistence,
# --proto-max-bulk-len 512mb) on free ports, and runs each program once:
# one connection; 3-byte GETs one at a time, each round trip timed,
#   idle  for -d seconds with nothing else on the connection;
#   busy  while a -s MiB SET and then a GET of it run on the SAME
#         connection (-r rounds): kvmux from another thread sharing the
#         client (fragments interleave), Redis from another thread sharing
#         the connection, so the big value is necessarily pipelined ahead
#         of the small GETs (RESP answers in order).
# Prints a table (p50, p99, p99.9, max of the small GETs in ms; the big
# SET's and GET's mean duration) and kvmux's busy - idle p99 (issue 3
# target: within 5 ms). Servers are stopped by PID on exit.
#
# Usage: bench/hol.sh [-B BUILD_DIR] [-d IDLE_SECONDS] [-r ROUNDS] [-s MIB]
#   -B  Release build directory (default ./build; configured and built if
#       libkvmux.a or kvmuxd is missing)
#   -d  seconds of idle small GETs per system (default 3)
#   -r  big SET + GET rounds per system (default 10)
#   -s  big value size in MiB (default 64)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build
IDLE=3
ROUNDS=10
MIB=64
while getopts "B:d:r:s:h" opt; do
    case "$opt" in
    B) BUILD=$(cd "$OPTARG" 2>/dev/null && pwd || echo "$OPTARG") ;;
    d) IDLE=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    s) MIB=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
    esac
done
[[ "$IDLE" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "hol.sh: -d wants seconds" >&2; exit 2; }
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 ]] || { echo "hol.sh: -r wants an integer >= 1" >&2; exit 2; }
[[ "$MIB" =~ ^[0-9]+$ && "$MIB" -ge 1 && "$MIB" -le 512 ]] || { echo "hol.sh: -s wants 1..512" >&2; exit 2; }
for tool in cc redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "hol.sh: $tool not found" >&2; exit 1; }
done

if [ ! -f "$BUILD/libkvmux.a" ] || [ ! -x "$BUILD/kvmuxd" ]; then
    echo "hol.sh: building Release kvmux and kvmuxd in $BUILD" >&2
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" --target kvmux kvmuxd -j 2 >/dev/null
fi
if [ -f "$BUILD/CMakeCache.txt" ]; then
    BT=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
    [ "$BT" = "Release" ] || echo "hol.sh: warning: $BUILD is a '$BT' build, not Release" >&2
fi
KVMUXD=$BUILD/kvmuxd

WORK=$(mktemp -d /tmp/kvmux-hol.XXXXXX)
KVMUXD_PID=""
REDIS_PID=""
TOOL_PID=""
cleanup() {
    # Only the processes this script started, by PID.
    for pid in $TOOL_PID $KVMUXD_PID $REDIS_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $TOOL_PID $KVMUXD_PID $REDIS_PID; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the two programs.
CFLAGS=(-O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes)
LIBS=("$BUILD/libkvmux.a" "$BUILD/libkvmux_proto.a")
[ -f "$BUILD/libkvmux_common.a" ] && LIBS+=("$BUILD/libkvmux_common.a")
cc "${CFLAGS[@]}" -I"$ROOT/include" -o "$WORK/hol_kvmux" "$ROOT/bench/hol/hol_kvmux.c" \
    "${LIBS[@]}" -lpthread
cc "${CFLAGS[@]}" -o "$WORK/hol_redis" "$ROOT/bench/hol/hol_redis.c" -lpthread

# Run a program in the background and wait for it (so a signal reaches the
# trap at once); its stdout is appended to $WORK/results.
run_tool() {
    "$@" >>"$WORK/results" &
    TOOL_PID=$!
    local rc=0
    wait "$TOOL_PID" || rc=$?
    TOOL_PID=""
    return "$rc"
}

# A free loopback port: ask the kernel for one, then confirm it still binds.
free_port() {
    python3 - <<'PY'
import socket
for _ in range(50):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        t.close()
    print(port)
    break
PY
}

# --- kvmuxd on an ephemeral port; it prints "listening on ADDR:PORT".
"$KVMUXD" --bind 127.0.0.1 --port 0 --max-value 128M >"$WORK/kvmuxd.out" 2>"$WORK/kvmuxd.err" &
KVMUXD_PID=$!
KPORT=""
for _ in $(seq 100); do
    KPORT=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\).*/\1/p' "$WORK/kvmuxd.out" | head -1)
    [ -n "$KPORT" ] && break
    kill -0 "$KVMUXD_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$KPORT" ] || { echo "hol.sh: kvmuxd did not start:" >&2; cat "$WORK/kvmuxd.err" >&2; exit 1; }

# --- redis-server, loopback only, no persistence, 64 MiB+ bulk strings.
RPORT=$(free_port)
[ -n "$RPORT" ] || { echo "hol.sh: no free port for redis" >&2; exit 1; }
redis-server --save '' --appendonly no --proto-max-bulk-len 512mb --port "$RPORT" \
    --bind 127.0.0.1 --protected-mode yes --daemonize no --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
    [ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = "PONG" ] && break
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
done
[ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = "PONG" ] ||
    { echo "hol.sh: redis-server did not start" >&2; cat "$WORK/redis.log" >&2; exit 1; }

echo "$("$KVMUXD" --version 2>/dev/null | head -1 || true) on :$KPORT (pid $KVMUXD_PID);" \
     "$(redis-server --version | cut -d' ' -f1-3) on :$RPORT (pid $REDIS_PID)" >&2
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "idle ${IDLE} s, ${ROUNDS} rounds of a ${MIB} MiB SET + GET" >&2

: >"$WORK/results"
run_tool "$WORK/hol_kvmux" -p "$KPORT" -d "$IDLE" -r "$ROUNDS" -s "$MIB"
run_tool "$WORK/hol_redis" -p "$RPORT" -d "$IDLE" -r "$ROUNDS" -s "$MIB"

# --- the table: RESULT sys phase n p50 p99 p999 max set_ms get_ms
awk -F'\t' '
BEGIN {
    printf "%-7s %-5s %8s %9s %9s %9s %9s %11s %11s\n", "system", "phase", "GETs",
           "p50 ms", "p99 ms", "p99.9 ms", "max ms", "big SET ms", "big GET ms"
}
$1 == "RESULT" {
    printf "%-7s %-5s %8d %9.3f %9.3f %9.3f %9.3f %11s %11s\n", $2, $3, $4, $5, $6, $7, $8, $9, $10
    p99[$2 "/" $3] = $6
}
END {
    for (s = 0; s < 2; s++) {
        sys = s ? "redis" : "kvmux"
        if ((sys "/idle") in p99 && (sys "/busy") in p99) {
            d = p99[sys "/busy"] - p99[sys "/idle"]
            printf "%s: busy p99 - idle p99 = %+.3f ms", sys, d
            if (sys == "kvmux") printf " (issue 3 target: <= 5 ms: %s)", d <= 5 ? "met" : "NOT met"
            printf "\n"
        }
    }
}' "$WORK/results"
