#!/usr/bin/env bash
# bench/compare.sh: kvmuxd vs redis-server on one machine, side by side.
#
# Starts a kvmuxd (a Release build: given with -k, or built into ./build) and
# a redis-server (loopback only, no persistence, on a free port picked by a
# bind test), then runs
#   redis-benchmark -c 1 -P 64 -t set,get -d SIZE -n N      (pipelined, 1 conn)
#   redis-benchmark -c 1 -P 1  -t set,get -d SIZE -n N/10   (one at a time)
#   kvmux-bench --mode serial            --op set|get -s SIZE -d SECS
#   kvmux-bench --mode sync -t 64 -c 1   --op set|get -s SIZE -d SECS
# for SIZE in 3 and 100 bytes, and prints one table: ops/s, p50 and p99 in
# microseconds, and kvmux/redis throughput ratios. Both servers are stopped
# (by PID) on exit, whatever happens.
#
# The numbers are what they are: nothing here tunes, retries or picks the
# best of several runs. On a small shared machine the load generator and the
# server compete for the same cores, so treat single runs as rough.
#
# Usage: bench/compare.sh [-k KVMUXD] [-b KVMUX_BENCH] [-n N] [-d SECONDS]
#                         [-K KEYSPACE] [-o OUT.md]
#   -k  kvmuxd binary (default ./build/kvmuxd, built as Release if missing)
#   -b  kvmux-bench binary (default next to kvmuxd)
#   -n  requests per redis-benchmark -P 64 test (default 1000000; -P 1 runs
#       use N/10), so that each redis test lasts about a second
#   -d  seconds per kvmux-bench run (default 4)
#   -K  keyspace for both tools (default 10000; GET runs see every key)
#   -o  also write the table to this file
set -euo pipefail

KVMUXD=""
KVMUX_BENCH=""
N=1000000
SECS=4
KEYSPACE=10000
OUT=""
while getopts "k:b:n:d:K:o:h" opt; do
    case "$opt" in
    k) KVMUXD=$OPTARG ;;
    b) KVMUX_BENCH=$OPTARG ;;
    n) N=$OPTARG ;;
    d) SECS=$OPTARG ;;
    K) KEYSPACE=$OPTARG ;;
    o) OUT=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
    esac
done

[[ "$N" =~ ^[0-9]+$ && "$N" -ge 10 ]] || { echo "compare.sh: -n wants an integer >= 10" >&2; exit 2; }
[[ "$SECS" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "compare.sh: -d wants seconds" >&2; exit 2; }
[[ "$KEYSPACE" =~ ^[0-9]+$ && "$KEYSPACE" -ge 1 ]] || { echo "compare.sh: -K wants an integer >= 1" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
for tool in redis-server redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found" >&2; exit 1; }
done

if [ -z "$KVMUXD" ]; then
    KVMUXD=$ROOT/build/kvmuxd
    if [ ! -x "$KVMUXD" ] || [ ! -x "$ROOT/build/kvmux-bench" ]; then
        echo "compare.sh: building Release kvmuxd and kvmux-bench in $ROOT/build" >&2
        cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
        cmake --build "$ROOT/build" --target kvmuxd kvmux-bench -j 2 >/dev/null
    fi
fi
[ -n "$KVMUX_BENCH" ] || KVMUX_BENCH=$(dirname "$KVMUXD")/kvmux-bench
for b in "$KVMUXD" "$KVMUX_BENCH"; do
    [ -x "$b" ] || { echo "compare.sh: $b is not executable" >&2; exit 1; }
done
if [ -f "$(dirname "$KVMUXD")/CMakeCache.txt" ]; then
    BT=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$(dirname "$KVMUXD")/CMakeCache.txt")
    [ "$BT" = "Release" ] || echo "compare.sh: warning: $KVMUXD is a '$BT' build, not Release" >&2
fi

WORK=$(mktemp -d /tmp/kvmux-compare.XXXXXX)
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

# Run a tool in the background and wait for it: bash runs a trap only once
# a foreground command has finished (and may ignore ^C entirely if the
# child survives it), but `wait` returns at once on a trapped signal.
# stdout goes to the file $1.
run_tool() {
    local out=$1
    shift
    "$@" >"$out" &
    TOOL_PID=$!
    local rc=0
    wait "$TOOL_PID" || rc=$?
    TOOL_PID=""
    return "$rc"
}

# A free loopback port: ask the kernel for one, then confirm it still binds.
free_port() {
    python3 - <<'EOF'
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
EOF
}

# --- start kvmuxd on an ephemeral port; it prints "listening on ADDR:PORT".
"$KVMUXD" --bind 127.0.0.1 --port 0 >"$WORK/kvmuxd.out" 2>"$WORK/kvmuxd.err" &
KVMUXD_PID=$!
KPORT=""
for _ in $(seq 100); do
    KPORT=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\).*/\1/p' "$WORK/kvmuxd.out" | head -1)
    [ -n "$KPORT" ] && break
    kill -0 "$KVMUXD_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$KPORT" ] || { echo "compare.sh: kvmuxd did not start:" >&2; cat "$WORK/kvmuxd.err" >&2; exit 1; }

# --- start redis-server, loopback only, no persistence.
RPORT=$(free_port)
[ -n "$RPORT" ] || { echo "compare.sh: no free port for redis" >&2; exit 1; }
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
    --protected-mode yes --daemonize no --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
    [ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = "PONG" ] && break
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
done
[ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = "PONG" ] ||
    { echo "compare.sh: redis-server did not start" >&2; cat "$WORK/redis.log" >&2; exit 1; }

echo "$("$KVMUXD" --version 2>/dev/null | head -1 || true) on :$KPORT (pid $KVMUXD_PID);" \
     "$(redis-server --version | cut -d' ' -f1-3) on :$RPORT (pid $REDIS_PID)" >&2
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Rows collected as: op size client ops p50_us p99_us
ROWS=$WORK/rows

# redis-benchmark --csv prints, per test:
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
run_redis() { # size pipeline n label
    local size=$1 pipe=$2 n=$3 label=$4
    echo "redis-benchmark -c 1 -P $pipe -t set,get -d $size -n $n -r $KEYSPACE" >&2
    run_tool "$WORK/redis.csv" redis-benchmark -h 127.0.0.1 -p "$RPORT" -c 1 -P "$pipe" \
        -t set,get -d "$size" -n "$n" -r "$KEYSPACE" --csv ||
        { echo "compare.sh: redis-benchmark failed" >&2; return 0; }
    tr -d '"' <"$WORK/redis.csv" |
        awk -F, -v size="$size" -v label="$label" '
            $1 == "SET" || $1 == "GET" {
                printf "%s %s %s %.0f %.1f %.1f\n", $1, size, label, $2, $5 * 1000, $7 * 1000
            }' >>"$ROWS"
}

jfield() { # json name
    sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p" <<<"$1"
}

run_kvmux() { # op size label args...
    local op=$1 size=$2 label=$3
    shift 3
    local extra=()
    [ "$op" = "get" ] && extra=(--preload)
    echo "kvmux-bench $* --op $op -s $size -k $KEYSPACE -d $SECS ${extra[*]}" >&2
    if ! run_tool "$WORK/kvmux.json" "$KVMUX_BENCH" -h 127.0.0.1 -p "$KPORT" "$@" \
            --op "$op" -s "$size" -k "$KEYSPACE" -d "$SECS" "${extra[@]}" --json -q; then
        echo "compare.sh: kvmux-bench failed" >&2
        return 0
    fi
    local js errors
    js=$(cat "$WORK/kvmux.json")
    errors=$(jfield "$js" errors)
    [ "$errors" = "0" ] || echo "compare.sh: warning: kvmux-bench reported $errors errors" >&2
    printf "%s %s %s %.0f %s %s\n" "${op^^}" "$size" "$label" "$(jfield "$js" ops_per_sec)" \
        "$(jfield "$js" p50)" "$(jfield "$js" p99)" >>"$ROWS"
}

START=$(date +%s)
for size in 3 100; do
    run_redis "$size" 64 "$N" redis-P64
    run_redis "$size" 1 $((N / 10)) redis-P1
    for op in set get; do
        run_kvmux "$op" "$size" kvmux-serial --mode serial -c 1
        run_kvmux "$op" "$size" kvmux-sync64 --mode sync -c 1 -t 64
    done
done
ELAPSED=$(($(date +%s) - START))

# --- the table.
table() {
    echo "| op  | value | client | ops/s | p50 us | p99 us | ops/s vs redis -P64 | ops/s vs redis -P1 |"
    echo "|-----|------:|--------|------:|-------:|-------:|--------------------:|-------------------:|"
    awk '
        { key = $1 " " $2; ops[key, $3] = $4; p50[key, $3] = $5; p99[key, $3] = $6
          if (!(key in seen)) { seen[key] = 1; order[n++] = key } }
        END {
            split("redis-P64 redis-P1 kvmux-serial kvmux-sync64", clients, " ")
            names["redis-P64"] = "redis-benchmark -c1 -P64"
            names["redis-P1"] = "redis-benchmark -c1 -P1"
            names["kvmux-serial"] = "kvmux-bench serial, 1 conn"
            names["kvmux-sync64"] = "kvmux-bench sync, 1 conn x 64 threads"
            for (i = 0; i < n; i++) {
                k = order[i]; split(k, f, " ")
                for (c = 1; c <= 4; c++) {
                    cl = clients[c]
                    if (!((k, cl) in ops)) continue
                    r64 = "-"; r1 = "-"
                    if (cl ~ /^kvmux/ && ops[k, "redis-P64"] > 0)
                        r64 = sprintf("%.2f", ops[k, cl] / ops[k, "redis-P64"])
                    if (cl ~ /^kvmux/ && ops[k, "redis-P1"] > 0)
                        r1 = sprintf("%.2f", ops[k, cl] / ops[k, "redis-P1"])
                    printf "| %s | %s B | %s | %d | %.1f | %.1f | %s | %s |\n",
                        f[1], f[2], names[cl], ops[k, cl], p50[k, cl], p99[k, cl], r64, r1
                }
            }
        }' "$ROWS"
    echo
    echo "kvmux runs: ${SECS}s each, keyspace $KEYSPACE (GET runs preloaded); redis runs: -n $N" \
         "(-P 1: -n $((N / 10))), -r $KEYSPACE. $(nproc) cores shared by server and client;" \
         "load average at the end $(cut -d' ' -f1-3 /proc/loadavg); total ${ELAPSED}s."
    echo "redis-benchmark -P 64 gives every request of a batch the same latency, from writing" \
         "the batch to the first reply bytes (readHandler), so its p50/p99 understate the" \
         "per-request wait; kvmux-bench times each call from entry to return."
}
table
if [ -n "$OUT" ]; then table >"$OUT"; fi
