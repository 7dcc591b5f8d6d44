#!/usr/bin/env bash
# bench/hol.sh: head-of-line blocking on one connection, kvmux vs Redis.
#
# Builds bench/hol/hol_kvmux.c (against the Release libkvmux.a of the
# build directory) and
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
# SET's and GET's mean duration) and kvmux's busy - idle p99 (the goal:
# within 5 ms). Servers are stopped by PID on exit (bench/lib.sh).
#
# Usage: bench/hol.sh [-B BUILD_DIR] [-d IDLE_SECONDS] [-r ROUNDS] [-s MIB]
#   -B  Release build directory (default ./build; configured and built if
#       libkvmux.a or kvmuxd is missing)
#   -d  seconds of idle small GETs per system (default 3)
#   -r  big SET + GET rounds per system (default 10)
#   -s  big value size in MiB (default 64)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
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

bench_init hol
WORK=$BENCH_WORK

# --- the two programs.
CFLAGS=(-O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes)
LIBS=("$BUILD/libkvmux.a")   # the whole client library (protocol core included)
# A TLS build's libkvmux needs OpenSSL at link time: CMake found OpenSSL
# (KVMUX_WITH_TLS=AUTO|ON) unless TLS was switched off.
if grep -q '^OPENSSL_SSL_LIBRARY:FILEPATH=/' "$BUILD/CMakeCache.txt" 2>/dev/null &&
   ! grep -q '^KVMUX_WITH_TLS:STRING=OFF' "$BUILD/CMakeCache.txt"; then
    LIBS+=(-lssl -lcrypto)
fi
cc "${CFLAGS[@]}" -I"$ROOT/include" -o "$WORK/hol_kvmux" "$ROOT/bench/hol/hol_kvmux.c" \
    "${LIBS[@]}" -lpthread
cc "${CFLAGS[@]}" -o "$WORK/hol_redis" "$ROOT/bench/hol/hol_redis.c" -lpthread

# --- kvmuxd on an ephemeral port; redis-server, loopback only, no
# persistence, 64 MiB+ bulk strings.
bench_start_kvmuxd kvmuxd "$KVMUXD" --max-value 128M
KVMUXD_PID=$BENCH_PID
KPORT=$BENCH_PORT
bench_start_redis redis --proto-max-bulk-len 512mb
REDIS_PID=$BENCH_PID
RPORT=$BENCH_PORT

echo "$("$KVMUXD" --version 2>/dev/null | head -1 || true) on :$KPORT (pid $KVMUXD_PID);" \
     "$(redis-server --version | cut -d' ' -f1-3) on :$RPORT (pid $REDIS_PID)" >&2
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "idle ${IDLE} s, ${ROUNDS} rounds of a ${MIB} MiB SET + GET" >&2

: >"$WORK/results"
bench_run_tool "+$WORK/results" "$WORK/hol_kvmux" -p "$KPORT" -d "$IDLE" -r "$ROUNDS" -s "$MIB"
bench_run_tool "+$WORK/results" "$WORK/hol_redis" -p "$RPORT" -d "$IDLE" -r "$ROUNDS" -s "$MIB"

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
            if (sys == "kvmux") printf " (goal <= 5 ms: %s)", d <= 5 ? "met" : "NOT met"
            printf "\n"
        }
    }
}' "$WORK/results"
