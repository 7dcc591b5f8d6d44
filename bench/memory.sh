#!/usr/bin/env bash
# bench/memory.sh: memory per key (server) and per in-flight request (client).
#
# Server: starts a fresh kvmuxd and a fresh redis-server (loopback, no
# persistence), writes the same K keys ("key:%010u", 14 bytes) with
# V-byte values into each, and prints the growth of kvmuxd's RSS and of
# Redis' used_memory (and RSS) per key, minus the key and value bytes.
# Client: runs kvmux-bench --mode async at depth 1 and at depth D (async
# SETs against the kvmuxd) and prints the peak-RSS growth per extra
# in-flight request. Then client_mem (bench/memory/client_mem.c, built by
# CMake next to kvmuxd) prints the precise figure: library heap bytes
# (mallinfo2) per credit, per in-flight async request and per blocking
# call, with D requests parked at the server (WAIT). Servers are stopped
# by PID on exit (bench/lib.sh).
#
# Usage: bench/memory.sh [-k KVMUXD] [-b KVMUX_BENCH] [-K KEYS] [-V BYTES] [-D DEPTH]
#   defaults: ./build/kvmuxd, kvmux-bench next to it, 1000000 keys,
#   3-byte values, depth 1024 (the default server grants 1024 credits, so
#   up to that many are really on the wire; beyond, they wait in the
#   client's backlog)
set -euo pipefail

KVMUXD=""
KVMUX_BENCH=""
KEYS=1000000
VBYTES=3
DEPTH=1024
while getopts "k:b:K:V:D:h" opt; do
    case "$opt" in
    k) KVMUXD=$OPTARG ;;
    b) KVMUX_BENCH=$OPTARG ;;
    K) KEYS=$OPTARG ;;
    V) VBYTES=$OPTARG ;;
    D) DEPTH=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
    esac
done
for v in "$KEYS" "$VBYTES" "$DEPTH"; do
    [[ "$v" =~ ^[0-9]+$ && "$v" -ge 1 ]] || { echo "memory.sh: numbers must be >= 1" >&2; exit 2; }
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
[ -n "$KVMUXD" ] || KVMUXD=$ROOT/build/kvmuxd
[ -n "$KVMUX_BENCH" ] || KVMUX_BENCH=$(dirname "$KVMUXD")/kvmux-bench
for b in "$KVMUXD" "$KVMUX_BENCH"; do
    [ -x "$b" ] || { echo "memory.sh: $b is not executable" >&2; exit 1; }
done
for tool in redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "memory.sh: $tool not found" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "memory.sh: GNU time (/usr/bin/time) not found" >&2; exit 1; }

bench_init memory
WORK=$BENCH_WORK
rss_kb() { bench_rss_kb "$1"; }
bench_start_kvmuxd k "$KVMUXD"
KVMUXD_PID=$BENCH_PID
KPORT=$BENCH_PORT
bench_start_redis redis
REDIS_PID=$BENCH_PID
RPORT=$BENCH_PORT

# --- server side: same keys, same value bytes.
k0=$(rss_kb "$KVMUXD_PID")
"$KVMUX_BENCH" -p "$KPORT" --mode async --depth 256 --op set -s "$VBYTES" -k "$KEYS" \
    --preload -n 1 -q >/dev/null
sleep 0.5
k1=$(rss_kb "$KVMUXD_PID")

r0=$(redis-cli -p "$RPORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p' | tr -d '\r')
rr0=$(rss_kb "$REDIS_PID")
# --- client heap per in-flight request, precisely (mallinfo2).
CLIENT_MEM=""
if [ -x "$(dirname "$KVMUXD")/client_mem" ]; then
    CLIENT_MEM=$("$(dirname "$KVMUXD")/client_mem" -p "$KPORT" -D "$DEPTH")
fi

python3 - "$KEYS" "$VBYTES" <<'EOF' | redis-cli -p "$RPORT" --pipe >/dev/null
import sys
n, v = int(sys.argv[1]), int(sys.argv[2])
val = "x" * v
out = sys.stdout
for i in range(n):
    k = "key:%010u" % i
    out.write("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, v, val))
EOF
r1=$(redis-cli -p "$RPORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p' | tr -d '\r')
rr1=$(rss_kb "$REDIS_PID")
nkeys=$(redis-cli -p "$RPORT" dbsize | tr -d '\r')

# --- client side: peak RSS at depth 1 and at depth DEPTH.
peak() { # depth
    /usr/bin/time -f %M -o "$WORK/t" "$KVMUX_BENCH" -p "$KPORT" --mode async --depth "$1" \
        --op set -s "$VBYTES" -k 1000 -d 1 -q >/dev/null
    tail -1 "$WORK/t"
}
c1=$(peak 1)
cd=$(peak "$DEPTH")

python3 - "$KEYS" "$VBYTES" "$k0" "$k1" "$r0" "$r1" "$rr0" "$rr1" "$nkeys" "$c1" "$cd" "$DEPTH" <<'EOF'
import sys
keys, vb, k0, k1, r0, r1, rr0, rr1, nk, c1, cd, depth = map(int, sys.argv[1:])
payload = 14 + vb
print(f"keys: {keys} (14-byte keys, {vb}-byte values; key+value = {payload} B); redis dbsize {nk}")
print(f"kvmuxd RSS growth: {(k1-k0)*1024/keys:.1f} B/key -> overhead {(k1-k0)*1024/keys-payload:.1f} B/key (goal <= 48)")
print(f"redis used_memory growth: {(r1-r0)/keys:.1f} B/key -> overhead {(r1-r0)/keys-payload:.1f} B/key;"
      f" redis RSS growth {(rr1-rr0)*1024/keys:.1f} B/key")
print(f"client peak RSS: depth 1 {c1} KiB, depth {depth} {cd} KiB -> "
      f"{(cd-c1)*1024/(depth-1) if depth > 1 else 0:.0f} B per extra in-flight request (goal <= 64;"
      f" includes kvmux-bench's own 24-byte slot and the outbound frame bytes)")
EOF
if [ -n "$CLIENT_MEM" ]; then
    echo "$CLIENT_MEM"
else
    echo "client heap figure skipped: no client_mem next to $KVMUXD (make build)"
fi
