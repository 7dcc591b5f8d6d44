#!/usr/bin/env bash
# bench/peertls.sh: replicated SET throughput and latency of a 3-replica
# kvmuxd group on loopback with the Raft port in plain TCP, then with peer
# TLS (--peer-tls yes, mutual TLS 1.3), in one run (docs/BENCHMARKS.md
# "Replication: peer TLS"). Each mode: a fresh group (fresh directories
# under /tmp), then kvmux-bench -h A,B,C (finds the leader) with one
# connection, async depth 64, 100-byte SETs, after a warm-up. Prints one
# kvmux-bench summary per mode and a line
#   peertls: plain_ops=X tls_ops=Y ratio=R plain_p99_us=P tls_p99_us=Q errors=E
#
# Usage: bench/peertls.sh [-B BUILD_DIR] [-d SECONDS] [--depth N]
#   -B  build directory holding kvmuxd and kvmux-bench (default ./build;
#       configured as Release and built if missing)
#   -d  measured seconds per mode (default 10)
#   --depth  requests in flight (default 64)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build
DUR=10
DEPTH=64
while [ $# -gt 0 ]; do
    case "$1" in
    -B) BUILD=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift 2 ;;
    -d) DUR=$2; shift 2 ;;
    --depth) DEPTH=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/peertls.sh: unknown argument '$1' (see -h)" >&2; exit 2 ;;
    esac
done
if [ ! -x "$BUILD/kvmuxd" ] || [ ! -x "$BUILD/kvmux-bench" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j 2 --target kvmuxd kvmux-bench >/dev/null
fi
WORK=$(mktemp -d /tmp/kvmux-peertls-bench-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
"$ROOT/tests/replica/gen_peer_certs.sh" "$WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run_mode NAME EXTRA...: start a group, bench it, stop it. Prints the JSON.
run_mode() {
    local name=$1; shift
    local peers="" hosts="" cp=() i
    for i in 1 2 3; do
        local r c
        r=$(free_port); c=$(free_port)
        cp[$i]=$c
        peers+="${peers:+,}$i=127.0.0.1:$r/127.0.0.1:$c"
        hosts+="${hosts:+,}127.0.0.1:$c"
    done
    PIDS=()
    for i in 1 2 3; do
        "$BUILD/kvmuxd" --port "${cp[$i]}" --replica-id $i --replica-dir "$WORK/$name-r$i" \
            --peers "$peers" --bootstrap --log-level warn "$@" >"$WORK/$name-$i.log" 2>&1 &
        PIDS+=($!)
    done
    sleep 3
    "$BUILD/kvmux-bench" -h "$hosts" --mode async --depth "$DEPTH" --op set -s 100 \
        --warmup 2 -d "$DUR" -q --json
    for p in "${PIDS[@]}"; do kill "$p"; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

P=$(run_mode plain)
echo "plain: $P"
T=$(run_mode tls --peer-tls yes --peer-tls-cert "$WORK/peer1.pem" \
    --peer-tls-key "$WORK/peer1.key" --peer-tls-ca "$WORK/ca.pem")
echo "tls:   $T"
python3 - "$P" "$T" <<'EOF'
import json, sys
p, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
po, to = p["ops_per_sec"], t["ops_per_sec"]
print(f"peertls: plain_ops={po:.0f} tls_ops={to:.0f} ratio={to / po:.2f} "
      f"plain_p99_us={p['latency_us']['p99']:.0f} tls_p99_us={t['latency_us']['p99']:.0f} "
      f"errors={p['errors'] + t['errors']}")
EOF
