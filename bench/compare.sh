#!/usr/bin/env bash
# bench/compare.sh: kvmuxd vs redis-server on one machine, side by side,
# and the ratios kvmux aims for.
#
# Starts a kvmuxd (a Release build: given with -k, or built into ./build), a
# second kvmuxd with --threads 2, and a redis-server (loopback only, no
# persistence, on a free port picked by a bind test), then for SIZE in 3 and
# 100 bytes and OP in set, get runs
#   redis-benchmark -c 1 -P 64 -t OP -d SIZE -n N       (pipelined, 1 conn)
#   redis-benchmark -c 1 -P 1  -t OP -d SIZE -n N/10    (one at a time)
#   kvmux-bench --mode serial                     (one caller, 1 conn)
#   kvmux-bench --mode sync -t 64                 (64 blocking threads, 1 conn)
#   kvmux-bench --mode async --depth 64           (default driver: loop)
#   kvmux-bench --mode async --depth 64 --driver callback
# and, against the --threads 2 server, 100-byte GET and SET with
#   kvmux-bench --mode async --depth 64 -c 1   and   -c 8
# It prints one table (ops/s, p50/p99 in microseconds, peak client RSS, the
# server's RSS after the run) and the ratios kvmux aims for (goals):
#   a. 64 callers on one connection / one serial caller      >= 25
#      (64 callers = sync -t 64; the async depth-64 ratio is shown too)
#   b. async depth 64 / redis-benchmark -c 1 -P 64           >= 1.5, p99 no worse
#   c. sync 64 threads / async depth 64                      >= 0.5
#   e. --threads 2 server: 8 conns x 64 / 1 conn x 64        >= 1.5
# All servers are stopped (by PID) on exit, whatever happens (bench/lib.sh).
#
# The numbers are what they are: nothing here tunes, retries or picks the
# best of several runs. On a small shared machine the load generator and the
# server compete for the same cores, so compare ratios from one run only.
#
# Usage: bench/compare.sh [-k KVMUXD] [-b KVMUX_BENCH] [-n N] [-d SECONDS]
#                         [-K KEYSPACE] [-o OUT.md]
#   -k  kvmuxd binary (default ./build/kvmuxd, built as Release if missing)
#   -b  kvmux-bench binary (default next to kvmuxd)
#   -n  requests per redis-benchmark -P 64 test (default 2000000; -P 1 runs
#       use N/10), so that each redis test lasts about a second or two
#   -d  seconds per kvmux-bench run (default 4)
#   -K  keyspace for both tools (default 10000; GET runs see every key)
#   -o  also write the table and ratios to this file
#   -B  busy polling in microseconds for kvmux (default 0 = off): both
#       kvmuxd servers get --busy-poll USEC and every kvmux-bench run
#       --busy-poll USEC (its loop, or the client's reader thread). Redis
#       has no such mode; the table says which one ran.
set -euo pipefail

KVMUXD=""
KVMUX_BENCH=""
N=2000000
SECS=4
KEYSPACE=10000
OUT=""
BUSY=0
while getopts "k:b:n:d:K:o:B:h" opt; do
    case "$opt" in
    k) KVMUXD=$OPTARG ;;
    b) KVMUX_BENCH=$OPTARG ;;
    n) N=$OPTARG ;;
    d) SECS=$OPTARG ;;
    K) KEYSPACE=$OPTARG ;;
    o) OUT=$OPTARG ;;
    B) BUSY=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
    esac
done

[[ "$N" =~ ^[0-9]+$ && "$N" -ge 10 ]] || { echo "compare.sh: -n wants an integer >= 10" >&2; exit 2; }
[[ "$SECS" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "compare.sh: -d wants seconds" >&2; exit 2; }
[[ "$KEYSPACE" =~ ^[0-9]+$ && "$KEYSPACE" -ge 1 ]] || { echo "compare.sh: -K wants an integer >= 1" >&2; exit 2; }
[[ "$BUSY" =~ ^[0-9]+$ && "$BUSY" -le 1000000 ]] || { echo "compare.sh: -B wants microseconds, 0..1000000" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
for tool in redis-server redis-benchmark redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found" >&2; exit 1; }
done
# Peak RSS of each kvmux-bench run, when GNU time is there.
GNUTIME=""
[ -x /usr/bin/time ] && /usr/bin/time -f %M true >/dev/null 2>&1 && GNUTIME=/usr/bin/time

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

bench_init compare
WORK=$BENCH_WORK
bench_start_kvmuxd kvmuxd "$KVMUXD" --busy-poll "$BUSY"
KVMUXD_PID=$BENCH_PID
KPORT=$BENCH_PORT
bench_start_kvmuxd kvmuxd2 "$KVMUXD" --threads 2 --busy-poll "$BUSY"
KVMUXD2_PID=$BENCH_PID
KPORT2=$BENCH_PORT
bench_start_redis redis
REDIS_PID=$BENCH_PID
RPORT=$BENCH_PORT

echo "$("$KVMUXD" --version 2>/dev/null | head -1 || true) on :$KPORT (pid $KVMUXD_PID)" \
     "and :$KPORT2 --threads 2 (pid $KVMUXD2_PID);" \
     "$(redis-server --version | cut -d' ' -f1-3) on :$RPORT (pid $REDIS_PID)" >&2
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Rows collected as: op size client ops p50_us p99_us client_rss_kb
# server_rss_kb client_cpu_us_per_op server_cpu_us_per_op
ROWS=$WORK/rows

# CPU microseconds per request: ms of CPU over a request count.
us_per_op() { # cpu_ms ops
    awk -v c="$1" -v n="$2" 'BEGIN { if (c == "-" || n + 0 <= 0) print "-"; else printf "%.2f\n", c * 1000 / n }'
}

# A server's CPU microseconds per request between two bench_cpu_ms readings.
server_us_per_op() { # cpu_ms_before cpu_ms_after ops
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; else us_per_op $(($2 - $1)) "$3"; fi
}

# redis-benchmark --csv prints, per test:
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
run_redis() { # op size pipeline n label
    local op=$1 size=$2 pipe=$3 n=$4 label=$5
    echo "redis-benchmark -c 1 -P $pipe -t $op -d $size -n $n -r $KEYSPACE" >&2
    local peak=- ccpu_ms=- s0 s1
    s0=$(bench_cpu_ms "$REDIS_PID")
    if [ -n "$GNUTIME" ]; then
        bench_run_tool "$WORK/redis.csv" "$GNUTIME" -o "$WORK/time" -f "%U %S %M" \
            redis-benchmark -h 127.0.0.1 -p "$RPORT" -c 1 -P "$pipe" \
            -t "$op" -d "$size" -n "$n" -r "$KEYSPACE" --csv ||
            { echo "compare.sh: redis-benchmark failed" >&2; return 0; }
        peak=$(tail -1 "$WORK/time" | awk '{print $3}')
        ccpu_ms=$(tail -1 "$WORK/time" | awk '{printf "%d", ($1 + $2) * 1000}')
    else
        bench_run_tool "$WORK/redis.csv" redis-benchmark -h 127.0.0.1 -p "$RPORT" -c 1 -P "$pipe" \
            -t "$op" -d "$size" -n "$n" -r "$KEYSPACE" --csv ||
            { echo "compare.sh: redis-benchmark failed" >&2; return 0; }
    fi
    local srss
    s1=$(bench_cpu_ms "$REDIS_PID")
    srss=$(bench_rss_kb "$REDIS_PID")
    local ccpu scpu
    ccpu=$(us_per_op "$ccpu_ms" "$n")
    scpu=$(server_us_per_op "$s0" "$s1" "$n")
    tr -d '"' <"$WORK/redis.csv" |
        awk -F, -v size="$size" -v label="$label" -v crss="$peak" -v srss="$srss" \
            -v ccpu="$ccpu" -v scpu="$scpu" '
            $1 == "SET" || $1 == "GET" {
                printf "%s %s %s %.0f %.1f %.1f %s %s %s %s\n", $1, size, label, $2, $5 * 1000,
                    $7 * 1000, crss, srss, ccpu, scpu
            }' >>"$ROWS"
}

jfield() { # json name
    sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p" <<<"$1"
}

run_kvmux() { # port server-pid op size label args...
    local port=$1 spid=$2 op=$3 size=$4 label=$5
    shift 5
    local extra=()
    [ "$op" = "get" ] && extra=(--preload)
    [ "$BUSY" -gt 0 ] && extra+=(--busy-poll "$BUSY")
    echo "kvmux-bench $* --op $op -s $size -k $KEYSPACE -d $SECS ${extra[*]}" >&2
    local timecmd=() s0 s1
    [ -n "$GNUTIME" ] && timecmd=("$GNUTIME" -o "$WORK/time" -f %M)
    s0=$(bench_cpu_ms "$spid")
    if ! bench_run_tool "$WORK/kvmux.json" "${timecmd[@]}" "$KVMUX_BENCH" -h 127.0.0.1 -p "$port" \
            "$@" --op "$op" -s "$size" -k "$KEYSPACE" -d "$SECS" "${extra[@]}" --json -q; then
        echo "compare.sh: kvmux-bench failed" >&2
        return 0
    fi
    s1=$(bench_cpu_ms "$spid")
    local js errors peak=- ops scpu
    js=$(cat "$WORK/kvmux.json")
    [ -n "$GNUTIME" ] && peak=$(tail -1 "$WORK/time")
    errors=$(jfield "$js" errors)
    [ "$errors" = "0" ] || echo "compare.sh: warning: kvmux-bench reported $errors errors" >&2
    # The server's CPU over the whole run (preload and drain included) per
    # request of the whole run: ops/s x duration + preloaded + warm-up.
    ops=$(awk -v r="$(jfield "$js" ops_per_sec)" -v d="$(jfield "$js" duration_s)" \
              -v p="$(jfield "$js" preloaded)" -v w="$(jfield "$js" warmup_ops)" \
              'BEGIN { printf "%d", r * d + p + w }')
    scpu=$(server_us_per_op "$s0" "$s1" "$ops")
    printf "%s %s %s %.0f %s %s %s %s %s %s\n" "${op^^}" "$size" "$label" "$(jfield "$js" ops_per_sec)" \
        "$(jfield "$js" p50)" "$(jfield "$js" p99)" "$peak" "$(bench_rss_kb "$spid")" \
        "$(printf %.2f "$(jfield "$js" us_per_op)")" "$scpu" >>"$ROWS"
}

START=$(date +%s)
for size in 3 100; do
    for op in set get; do
        run_redis "$op" "$size" 64 "$N" redis-P64
        run_redis "$op" "$size" 1 $((N / 10)) redis-P1
        run_kvmux "$KPORT" "$KVMUXD_PID" "$op" "$size" kvmux-serial --mode serial -c 1
        run_kvmux "$KPORT" "$KVMUXD_PID" "$op" "$size" kvmux-sync64 --mode sync -c 1 -t 64
        run_kvmux "$KPORT" "$KVMUXD_PID" "$op" "$size" kvmux-async64 --mode async -c 1 --depth 64
        run_kvmux "$KPORT" "$KVMUXD_PID" "$op" "$size" kvmux-async64cb --mode async -c 1 \
            --depth 64 --driver callback
    done
done
for op in set get; do
    run_kvmux "$KPORT2" "$KVMUXD2_PID" "$op" 100 t2-1x64 --mode async -c 1 --depth 64
    run_kvmux "$KPORT2" "$KVMUXD2_PID" "$op" 100 t2-8x64 --mode async -c 8 --depth 64
done
ELAPSED=$(($(date +%s) - START))

# --- the table and the ratios.
table() {
    echo "| op  | value | client | ops/s | p50 us | p99 us | vs redis -P64 | client peak RSS KiB | server RSS KiB | client CPU us/op | server CPU us/op |"
    echo "|-----|------:|--------|------:|-------:|-------:|--------------:|------:|------:|------:|------:|"
    awk '
        { key = $1 " " $2; ops[key, $3] = $4; p50[key, $3] = $5; p99[key, $3] = $6
          crss[key, $3] = $7; srss[key, $3] = $8; ccpu[key, $3] = $9; scpu[key, $3] = $10
          if (!(key in seen)) { seen[key] = 1; order[n++] = key } }
        END {
            nc = split("redis-P64 redis-P1 kvmux-serial kvmux-sync64 kvmux-async64 kvmux-async64cb t2-1x64 t2-8x64", clients, " ")
            names["redis-P64"] = "redis-benchmark -c1 -P64"
            names["redis-P1"] = "redis-benchmark -c1 -P1"
            names["kvmux-serial"] = "kvmux serial, 1 conn"
            names["kvmux-sync64"] = "kvmux sync, 1 conn x 64 threads"
            names["kvmux-async64"] = "kvmux async loop, 1 conn, depth 64"
            names["kvmux-async64cb"] = "kvmux async callback, 1 conn, depth 64"
            names["t2-1x64"] = "kvmux async, --threads 2 server, 1 conn x 64"
            names["t2-8x64"] = "kvmux async, --threads 2 server, 8 conns x 64"
            for (i = 0; i < n; i++) {
                k = order[i]; split(k, f, " ")
                for (c = 1; c <= nc; c++) {
                    cl = clients[c]
                    if (!((k, cl) in ops)) continue
                    r64 = "-"
                    if (cl ~ /^(kvmux|t2)/ && ops[k, "redis-P64"] > 0)
                        r64 = sprintf("%.2f", ops[k, cl] / ops[k, "redis-P64"])
                    printf "| %s | %s B | %s | %d | %.1f | %.1f | %s | %s | %s | %s | %s |\n",
                        f[1], f[2], names[cl], ops[k, cl], p50[k, cl], p99[k, cl], r64,
                        crss[k, cl], srss[k, cl], ccpu[k, cl], scpu[k, cl]
                }
            }
            print ""
            print "Goals (ratios of ops/s in this run; a: many callers vs one, b: vs Redis pipelined, c: blocking vs async, e: server threads):"
            print ""
            print "| op | value | a: sync64/serial (>=25) | a: async64/serial | b: async64/redis-P64 (>=1.5) | b: p99 kvmux/redis | c: sync64/async64 (>=0.5) | e: 8x64/1x64, --threads 2 (>=1.5) |"
            print "|----|------:|------:|------:|------:|------:|------:|------:|"
            for (i = 0; i < n; i++) {
                k = order[i]; split(k, f, " ")
                a = r(k, "kvmux-sync64", "kvmux-serial", 25)
                a2 = r(k, "kvmux-async64", "kvmux-serial", 25)
                b = r(k, "kvmux-async64", "redis-P64", 1.5)
                bp = "-"
                if (((k, "kvmux-async64") in p99) && p99[k, "redis-P64"] > 0)
                    bp = sprintf("%.2f %s", p99[k, "kvmux-async64"] / p99[k, "redis-P64"],
                                 p99[k, "kvmux-async64"] <= p99[k, "redis-P64"] ? "met" : "NOT met")
                c = r(k, "kvmux-sync64", "kvmux-async64", 0.5)
                e = r(k, "t2-8x64", "t2-1x64", 1.5)
                printf "| %s | %s B | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], a, a2, b, bp, c, e
            }
        }
        function r(k, num, den, target,   v) {
            if (!((k, num) in ops) || !((k, den) in ops) || ops[k, den] <= 0) return "-"
            v = ops[k, num] / ops[k, den]
            return sprintf("%.2f %s", v, v >= target ? "met" : "NOT met")
        }' "$ROWS"
    echo
    echo "kvmux runs: ${SECS}s each, keyspace $KEYSPACE (GET runs preloaded); redis runs: -n $N" \
         "(-P 1: -n $((N / 10))), -r $KEYSPACE. $(nproc) cores shared by server and client;" \
         "load average at the end $(cut -d' ' -f1-3 /proc/loadavg); total ${ELAPSED}s."
    if [ "$BUSY" -gt 0 ]; then
        echo "Busy polling ON for kvmux: kvmuxd --busy-poll $BUSY and kvmux-bench --busy-poll $BUSY" \
             "(Redis has no such mode)."
    else
        echo "Busy polling off (kvmux defaults)."
    fi
    echo "Client RSS: peak (GNU time %M) of the load generator for that run; server RSS:" \
         "the server's VmRSS right after it."
    echo "CPU per request: the load generator's user+system time (kvmux-bench's getrusage" \
         "over the measured phase; GNU time for redis-benchmark) and the server's" \
         "(/proc/PID/stat, 10 ms ticks, over the whole run incl. preload) divided by the" \
         "requests; spinning under -B counts as CPU."
    echo "redis-benchmark -P 64 gives every request of a batch the same latency, from writing" \
         "the batch to the first reply bytes (readHandler), so its p50/p99 understate the" \
         "per-request wait; kvmux-bench times each request from submit to completion."
}
table
if [ -n "$OUT" ]; then table >"$OUT"; fi
