#!/usr/bin/env bash
# bench/sweep.sh: kvmux, Redis and memcached side by side, one connection,
# concurrency (requests in flight) swept over 1, 4, 16, 64, 256.
#
# Starts, on 127.0.0.1 and free ephemeral ports (bench/lib.sh; all stopped by
# PID on exit):
#   kvmuxd                   (one loop thread, the default)
#   redis-server             (--save '' --appendonly no: no persistence)
#   memcached -t T -R 1024   (T worker threads, default 1; -R so one
#                             connection's pipeline is not cut into slices of
#                             20 requests per event, memcached's default)
# and for each value size, op (GET, SET), depth D and repetition runs, one
# after the other and in an order that alternates from cell to cell (ABC,
# CBA, ...) so that the machine's noise hits every system alike:
#   kvmux       kvmux-bench --mode async --depth D -c 1        (loop driver)
#   kvmux-sync  kvmux-bench --mode sync -t D -c 1   (D blocking threads; --no-sync skips)
#   kvmux-bp    kvmux async as above, with busy polling on both sides: a
#               second kvmuxd --busy-poll USEC and kvmux-bench --busy-poll
#               USEC (--busy-poll, default 50; not in the default systems)
#   redis       redis-benchmark -c 1 -P D -t OP -d SIZE -r K -n N
#   memcached   mcload --depth D --op OP -s SIZE -k K   (bench/mcload; one
#               connection, D pipelined meta commands mg/ms; --mc-proto text
#               for get/set)
# GETs read keys preloaded with values of the cell's size (kvmux-bench and
# mcload --preload; Redis through redis-cli --pipe with redis-benchmark's key
# names), so every GET hits. redis-benchmark has no duration option: N is
# the cell's duration times the rate measured at the same depth before (a
# guess for the first cell).
#
# Writes to --out DIR:
#   runs.csv       every run: system,op,size,depth,rep,ops_per_sec,p50_us,p99_us,p999_us,errors
#   summary.csv    the median of the repetitions per system and cell
#   table.md       Markdown: ops/s, ratios kvmux/redis and kvmux/memcached, p99
#   throughput.png ops/s against depth (log-log), one panel per op and size
#   latency.png    p50/p99/p99.9 at depth 64 (--lat-depth), per system
# and prints table.md. Latency: kvmux-bench and mcload time every request
# (queued -> reply parsed); redis-benchmark -P D gives every request of a
# batch the batch's latency (written -> first reply byte). Its p50/p99 come
# from its own summary, p99.9 from its percentile distribution (the first
# listed percentile >= 99.9: an upper bound).
#
# Usage: bench/sweep.sh [options]
#   -k PATH          kvmuxd (default ./build/kvmuxd, from `make build`)
#   -b PATH          kvmux-bench (default: next to kvmuxd)
#   -m PATH          mcload (default: next to kvmuxd)
#   -d SECONDS       per run (default 2)
#   -r N             repetitions per cell (default 1; the median is kept)
#   -K N             key space (default 10000)
#   --depths LIST    default "1 4 16 64 256"
#   --sizes LIST     default "3 100"
#   --ops LIST       default "get set"
#   --systems LIST   default "kvmux kvmux-sync redis memcached"; a system
#                    whose binaries are missing is skipped with the reason
#   --no-sync        drop kvmux-sync
#   --busy-poll USEC the kvmux-bp system's window (default 50)
#   --mc-threads N   memcached -t (default 1; kvmuxd and Redis use one
#                    thread for one connection too)
#   --mc-proto P     meta (default) or text
#   --lat-depth D    depth of latency.png (default 64, else the largest)
#   --quick          depths "1 64", sizes "100", -d 0.5, no kvmux-sync
#                    (options given explicitly win)
#   --no-plot        skip gnuplot
#   --out DIR        output directory (default bench/results/latest;
#                    bench/results/ is ignored by git)
#   --replot CSV     run nothing: summary, table and plots from an earlier
#                    runs.csv (depths, sizes and ops taken from it)
set -euo pipefail
# The whole script is one compound command, read before it runs: editing
# the file while a sweep is running cannot derail it.
{

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"

KVMUXD=$ROOT/build/kvmuxd
KVMUX_BENCH=""
MCLOAD=""
SECS=2
REPS=1
KEYSPACE=10000
DEPTHS="1 4 16 64 256"
SIZES="3 100"
OPS="get set"
SYSTEMS="kvmux kvmux-sync redis memcached"
NO_SYNC=0
BUSY=50
MC_THREADS=1
MC_PROTO=meta
LAT_DEPTH=64
QUICK=0
PLOT=1
OUT=$ROOT/bench/results/latest
SECS_SET=0
REPLOT=""
DEPTHS_SET=0
SIZES_SET=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
need_arg() { [ $# -ge 2 ] || { echo "sweep.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
    -k) need_arg "$@"; KVMUXD=$2; shift ;;
    -b) need_arg "$@"; KVMUX_BENCH=$2; shift ;;
    -m) need_arg "$@"; MCLOAD=$2; shift ;;
    -d) need_arg "$@"; SECS=$2; SECS_SET=1; shift ;;
    -r) need_arg "$@"; REPS=$2; shift ;;
    -K) need_arg "$@"; KEYSPACE=$2; shift ;;
    --depths) need_arg "$@"; DEPTHS=$2; DEPTHS_SET=1; shift ;;
    --sizes) need_arg "$@"; SIZES=$2; SIZES_SET=1; shift ;;
    --ops) need_arg "$@"; OPS=$2; shift ;;
    --systems) need_arg "$@"; SYSTEMS=$2; shift ;;
    --no-sync) NO_SYNC=1 ;;
    --busy-poll) need_arg "$@"; BUSY=$2; shift ;;
    --mc-threads) need_arg "$@"; MC_THREADS=$2; shift ;;
    --mc-proto) need_arg "$@"; MC_PROTO=$2; shift ;;
    --lat-depth) need_arg "$@"; LAT_DEPTH=$2; shift ;;
    --quick) QUICK=1 ;;
    --no-plot) PLOT=0 ;;
    --out) need_arg "$@"; OUT=$2; shift ;;
    --replot) need_arg "$@"; REPLOT=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "sweep.sh: unknown option '$1' (see -h)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    [ "$DEPTHS_SET" = 1 ] || DEPTHS="1 64"
    [ "$SIZES_SET" = 1 ] || SIZES="100"
    NO_SYNC=1
    [ "$SECS_SET" = 1 ] || SECS=0.5
fi

[[ "$SECS" =~ ^[0-9]*([.][0-9]+)?$ && "$SECS" != "" && "$SECS" != "0" ]] ||
    { echo "sweep.sh: -d wants seconds > 0" >&2; exit 2; }
for v in "$BUSY" "$REPS" "$KEYSPACE" "$MC_THREADS" "$LAT_DEPTH" $DEPTHS $SIZES; do
    [[ "$v" =~ ^[0-9]+$ && "$v" -ge 1 ]] || { echo "sweep.sh: '$v' is not an integer >= 1" >&2; exit 2; }
done
for op in $OPS; do
    [[ "$op" = get || "$op" = set ]] || { echo "sweep.sh: --ops takes get and set" >&2; exit 2; }
done
[[ "$MC_PROTO" = meta || "$MC_PROTO" = text ]] || { echo "sweep.sh: --mc-proto meta|text" >&2; exit 2; }

if [ -n "$REPLOT" ]; then
    [ -f "$REPLOT" ] || { echo "sweep.sh: $REPLOT not found" >&2; exit 1; }
    bench_init sweep
    WORK=$BENCH_WORK
    mkdir -p "$OUT"
    RUNS=$OUT/runs.csv
    [ "$REPLOT" -ef "$RUNS" ] || cp "$REPLOT" "$RUNS"
    col() { tail -n +2 "$RUNS" | cut -d, -f"$1" | sort -u | sort -n | tr '\n' ' ' | sed 's/ $//'; }
    SIZES=$(col 3); DEPTHS=$(col 4); OPS=$(tail -n +2 "$RUNS" | cut -d, -f2 | sort -u | tr '\n' ' ' | sed 's/ $//')
    REPS=$(tail -n +2 "$RUNS" | cut -d, -f5 | sort -n | tail -1)
    SECS="?"; ELAPSED="?"; LOADAVG="? (re-rendered from $REPLOT)"
else
[ -n "$KVMUX_BENCH" ] || KVMUX_BENCH=$(dirname "$KVMUXD")/kvmux-bench
[ -n "$MCLOAD" ] || MCLOAD=$(dirname "$KVMUXD")/mcload
for b in "$KVMUXD" "$KVMUX_BENCH"; do
    [ -x "$b" ] || { echo "sweep.sh: $b is not executable (run 'make build', or pass -k/-b)" >&2; exit 1; }
done
if [ -f "$(dirname "$KVMUXD")/CMakeCache.txt" ]; then
    BT=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$(dirname "$KVMUXD")/CMakeCache.txt")
    [ "$BT" = "Release" ] || echo "sweep.sh: warning: $KVMUXD is a '$BT' build, not Release" >&2
fi

# Which systems can run here; the others are skipped with the reason.
ACTIVE=()
for s in $SYSTEMS; do
    case "$s" in
    kvmux) ACTIVE+=(kvmux) ;;
    kvmux-bp) ACTIVE+=(kvmux-bp) ;;
    kvmux-sync) [ "$NO_SYNC" = 1 ] || ACTIVE+=(kvmux-sync) ;;
    redis)
        miss=""
        for t in redis-server redis-benchmark redis-cli; do command -v "$t" >/dev/null || miss+=" $t"; done
        if [ -n "$miss" ]; then echo "sweep.sh: skipping redis:$miss not installed" >&2; else ACTIVE+=(redis); fi ;;
    memcached)
        if ! command -v memcached >/dev/null; then echo "sweep.sh: skipping memcached: memcached not installed" >&2
        elif [ ! -x "$MCLOAD" ]; then echo "sweep.sh: skipping memcached: $MCLOAD not built (make build)" >&2
        else ACTIVE+=(memcached); fi ;;
    *) echo "sweep.sh: unknown system '$s'" >&2; exit 2 ;;
    esac
done
[ ${#ACTIVE[@]} -gt 0 ] || { echo "sweep.sh: nothing to run" >&2; exit 1; }

bench_init sweep
WORK=$BENCH_WORK
mkdir -p "$OUT"

have() { local s; for s in "${ACTIVE[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

KPORT=""; BPORT=""; RPORT=""; MPORT=""
if have kvmux || have kvmux-sync; then
    bench_start_kvmuxd kvmuxd "$KVMUXD"
    KPORT=$BENCH_PORT
    echo "kvmuxd: $("$KVMUXD" --version 2>/dev/null | head -1 || true) on :$KPORT (pid $BENCH_PID)" >&2
fi
if have kvmux-bp; then
    bench_start_kvmuxd kvmuxd-bp "$KVMUXD" --busy-poll "$BUSY"
    BPORT=$BENCH_PORT
    echo "kvmuxd --busy-poll $BUSY on :$BPORT (pid $BENCH_PID)" >&2
fi
if have redis; then
    bench_start_redis redis
    RPORT=$BENCH_PORT
    echo "redis: $(redis-server --version | cut -d' ' -f1-3) on :$RPORT (pid $BENCH_PID)" >&2
fi
if have memcached; then
    bench_start_memcached memcached -t "$MC_THREADS" -R 1024
    MPORT=$BENCH_PORT
    echo "memcached: $(memcached -V) -t $MC_THREADS -R 1024 on :$MPORT (pid $BENCH_PID)" >&2
fi
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
     "systems: ${ACTIVE[*]}; depths: $DEPTHS; sizes: $SIZES; ops: $OPS; ${SECS}s x $REPS" >&2

RUNS=$OUT/runs.csv
echo "system,op,size,depth,rep,ops_per_sec,p50_us,p99_us,p999_us,errors" >"$RUNS"

jfield() { # FILE NAME: a number from a one-line JSON summary
    sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p" "$1" | head -1
}

row() { # system op size depth rep ops p50 p99 p999 errors
    local IFS=,
    echo "$*" >>"$RUNS"
    printf '  %-10s %s %4s B depth %3s: %10.0f ops/s  p50 %8s  p99 %8s  p99.9 %8s us\n' \
        "$1" "$2" "$3" "$4" "$6" "$7" "$8" "$9" >&2
}

json_row() { # system op size depth rep file
    local f=$6 ops
    ops=$(jfield "$f" ops_per_sec)
    [ -n "$ops" ] || { echo "sweep.sh: $1 printed no summary" >&2; return 0; }
    local misses
    misses=$(jfield "$f" misses)
    [ "${misses:-0}" = 0 ] || echo "sweep.sh: warning: $1 $2 depth $4: $misses misses" >&2
    row "$1" "$2" "$3" "$4" "$5" "$ops" "$(jfield "$f" p50)" "$(jfield "$f" p99)" \
        "$(jfield "$f" p99_9)" "$(jfield "$f" errors)"
}

run_kvmux() { # op size depth rep [system port extra-args...]
    local sys=${5:-kvmux} port=${6:-$KPORT} extra=("${@:7}")
    [ "$1" = get ] && extra+=(--preload)
    bench_run_tool "$WORK/k.json" "$KVMUX_BENCH" -h 127.0.0.1 -p "$port" -c 1 --mode async \
        --depth "$3" --op "$1" -s "$2" -k "$KEYSPACE" -d "$SECS" "${extra[@]}" --json -q ||
        { echo "sweep.sh: kvmux-bench failed ($sys, depth $3)" >&2; return 0; }
    json_row "$sys" "$1" "$2" "$3" "$4" "$WORK/k.json"
}

run_kvmux_sync() { # op size depth rep
    local extra=()
    [ "$1" = get ] && extra=(--preload)
    bench_run_tool "$WORK/k.json" "$KVMUX_BENCH" -h 127.0.0.1 -p "$KPORT" -c 1 --mode sync \
        -t "$3" --op "$1" -s "$2" -k "$KEYSPACE" -d "$SECS" "${extra[@]}" --json -q ||
        { echo "sweep.sh: kvmux-bench failed (sync, $3 threads)" >&2; return 0; }
    json_row kvmux-sync "$1" "$2" "$3" "$4" "$WORK/k.json"
}

run_memcached() { # op size depth rep
    local extra=()
    [ "$1" = get ] && extra=(--preload)
    bench_run_tool "$WORK/m.json" "$MCLOAD" -h 127.0.0.1 -p "$MPORT" --proto "$MC_PROTO" \
        --depth "$3" --op "$1" -s "$2" -k "$KEYSPACE" -d "$SECS" "${extra[@]}" --json -q ||
        { echo "sweep.sh: mcload failed (depth $3)" >&2; return 0; }
    json_row memcached "$1" "$2" "$3" "$4" "$WORK/m.json"
}

# Every key redis-benchmark -r K can name ("key:%012d"), SIZE bytes of 'x'
# (what redis-benchmark writes), through redis-cli --pipe.
redis_preload() { # size
    awk -v n="$KEYSPACE" -v size="$1" 'BEGIN {
        v = sprintf("%*s", size, ""); gsub(/ /, "x", v)
        for (i = 0; i < n; i++) {
            k = sprintf("key:%012d", i)
            printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, size, v
        }
    }' | redis-cli -h 127.0.0.1 -p "$RPORT" --pipe >/dev/null ||
        echo "sweep.sh: redis preload failed" >&2
}

declare -A RATE   # depth -> the last redis-benchmark rate at that depth
run_redis() { # op size depth rep
    local rate=${RATE[$3]:-$(($3 < 16 ? 100000 * $3 : 1000000))} n
    n=$(awk -v r="$rate" -v s="$SECS" 'BEGIN { n = int(r * s); print n < 200 ? 200 : n }')
    bench_run_tool "$WORK/r.txt" redis-benchmark -h 127.0.0.1 -p "$RPORT" -c 1 -P "$3" \
        -t "$1" -d "$2" -r "$KEYSPACE" -n "$n" 2>/dev/null ||
        { echo "sweep.sh: redis-benchmark failed (-P $3)" >&2; return 0; }
    # "X% <= Y milliseconds (cumulative count C)" lines, then the summary:
    # "throughput summary: R requests per second" and a line of
    # avg min p50 p95 p99 max (ms).
    local parsed
    parsed=$(tr '\r' '\n' <"$WORK/r.txt" | awk -v total="$n" '
        /^Latency by percentile distribution/ { inpct = 1; next }
        inpct && /^$/ { inpct = 0 }
        inpct && /cumulative count/ {
            c = $NF; sub(/\)/, "", c)
            if (p999 == "" && c + 0 >= 0.999 * total) p999 = $3 * 1000
        }
        /throughput summary:/ { rps = $3 }
        /avg +min +p50/ { getline; p50 = $3 * 1000; p99 = $5 * 1000 }
        END { if (rps != "") printf "%s %.1f %.1f %.1f\n", rps, p50, p99, p999 }')
    [ -n "$parsed" ] || { echo "sweep.sh: could not parse redis-benchmark's output" >&2; return 0; }
    local rps p50 p99 p999
    read -r rps p50 p99 p999 <<<"$parsed"
    RATE[$3]=${rps%.*}
    row redis "$1" "$2" "$3" "$4" "$rps" "$p50" "$p99" "$p999" 0
}

run_system() { # system op size depth rep
    case "$1" in
    kvmux) run_kvmux "${@:2}" ;;
    kvmux-bp) run_kvmux "${@:2}" kvmux-bp "$BPORT" --busy-poll "$BUSY" ;;
    kvmux-sync) run_kvmux_sync "${@:2}" ;;
    redis) run_redis "${@:2}" ;;
    memcached) run_memcached "${@:2}" ;;
    esac
}

START=$(date +%s)
cell=0
for size in $SIZES; do
    for op in $OPS; do
        [ "$op" = get ] && have redis && redis_preload "$size"
        for depth in $DEPTHS; do
            for rep in $(seq "$REPS"); do
                # ABC, then CBA: neither system always runs right after the same one.
                order=("${ACTIVE[@]}")
                if [ $((cell % 2)) = 1 ]; then
                    order=()
                    for ((i = ${#ACTIVE[@]} - 1; i >= 0; i--)); do order+=("${ACTIVE[$i]}"); done
                fi
                for s in "${order[@]}"; do run_system "$s" "$op" "$size" "$depth" "$rep"; done
                cell=$((cell + 1))
            done
        done
    done
done
ELAPSED=$(($(date +%s) - START))
if have redis; then
    # Every GET should have hit a preloaded key; say so if not.
    misses=$(redis-cli -h 127.0.0.1 -p "$RPORT" info stats | tr -d '\r' |
        sed -n 's/^keyspace_misses://p')
    [ "${misses:-0}" = 0 ] || echo "sweep.sh: warning: redis counted $misses GET misses" >&2
fi
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
fi

# --- summary.csv: the median of the repetitions (lower middle if even).
{
    echo "system,op,size,depth,runs,ops_per_sec,p50_us,p99_us,p999_us"
    tail -n +2 "$RUNS" | sort -t, -k1,1 -k2,2 -k3,3n -k4,4n -k6,6g | awk -F, '
        { key = $1 "," $2 "," $3 "," $4; n[key]++; v[key, n[key]] = $0
          if (!(key in seen)) { seen[key] = 1; order[m++] = key } }
        END {
            for (i = 0; i < m; i++) {
                k = order[i]; split(v[k, int((n[k] + 1) / 2)], f, ",")
                printf "%s,%d,%s,%s,%s,%s\n", k, n[k], f[6], f[7], f[8], f[9]
            }
        }'
} >"$OUT/summary.csv"

# --- table.md
{
    echo "| op | value | depth | kvmux ops/s | redis ops/s | memcached ops/s | kvmux / redis | kvmux / memcached | kvmux sync ops/s | kvmux busy-poll ops/s | busy-poll / redis | p99 us kvmux / redis / memcached / busy-poll |"
    echo "|----|------:|------:|------:|------:|------:|------:|------:|------:|------:|------:|------|"
    tail -n +2 "$OUT/summary.csv" | awk -F, -v ops="$OPS" -v sizes="$SIZES" -v depths="$DEPTHS" '
        { o[$1, $2, $3, $4] = $6; p99[$1, $2, $3, $4] = $8 }
        function get(a, s, op, sz, d) { return ((s, op, sz, d) in a) ? a[s, op, sz, d] : "" }
        function num(x) { return x == "" ? "-" : sprintf("%.0f", x) }
        function ratio(a, b) { return (a == "" || b == "" || b + 0 <= 0) ? "-" : sprintf("%.2f", a / b) }
        function lat(x) { return x == "" ? "-" : sprintf("%.0f", x) }
        END {
            nz = split(sizes, Z, " "); no = split(ops, O, " "); nd = split(depths, D, " ")
            for (z = 1; z <= nz; z++) for (i = 1; i <= no; i++) for (j = 1; j <= nd; j++) {
                op = O[i]; sz = Z[z]; d = D[j]
                k = get(o, "kvmux", op, sz, d); r = get(o, "redis", op, sz, d)
                mc = get(o, "memcached", op, sz, d); ks = get(o, "kvmux-sync", op, sz, d)
                bp = get(o, "kvmux-bp", op, sz, d)
                printf "| %s | %s B | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s / %s |\n",
                    toupper(op), sz, d, num(k), num(r), num(mc), ratio(k, r), ratio(k, mc), num(ks),
                    num(bp), ratio(bp, r),
                    lat(get(p99, "kvmux", op, sz, d)), lat(get(p99, "redis", op, sz, d)),
                    lat(get(p99, "memcached", op, sz, d)), lat(get(p99, "kvmux-bp", op, sz, d))
            }
        }'
    echo
    echo "One connection per system; depth = requests in flight (kvmux-bench async --depth," \
         "redis-benchmark -c 1 -P, mcload --depth; kvmux sync = that many blocking threads)." \
         "${SECS} s per run, median of $REPS run(s), key space $KEYSPACE, GETs all hit." \
         "memcached -t $MC_THREADS -R 1024, $MC_PROTO protocol. $(nproc) cores shared by" \
         "servers and load generators; load average at the end $LOADAVG; total ${ELAPSED} s."
} >"$OUT/table.md"

# --- plots
plot() {
    command -v gnuplot >/dev/null || { echo "sweep.sh: gnuplot not installed: no plots" >&2; return 0; }
    local term=png
    gnuplot -e 'set terminal' 2>/dev/null | grep -q pngcairo && term=pngcairo
    local panels=() systems=(kvmux kvmux-bp kvmux-sync redis memcached) z op d
    local -A titles=([kvmux]="kvmux async" [kvmux-bp]="kvmux async, busy-poll $BUSY us" [kvmux-sync]="kvmux sync (threads)"
        [redis]="redis -P" [memcached]="memcached ($MC_PROTO)")
    # The same colour for a system in every panel, whichever are present.
    local -A styles=([kvmux]="lc rgb '#d62728' lw 2 pt 7" [kvmux-bp]="lc rgb '#9467bd' lw 2 dt 3 pt 13" [kvmux-sync]="lc rgb '#ff7f0e' lw 1 dt 2 pt 6"
        [redis]="lc rgb '#1f77b4' lw 2 pt 5" [memcached]="lc rgb '#2ca02c' lw 2 pt 9")
    # Latency panels use LAT_DEPTH if it was swept, else the largest depth.
    local ld=""
    for d in $DEPTHS; do [ "$d" = "$LAT_DEPTH" ] && ld=$d; done
    if [ -z "$ld" ]; then for d in $DEPTHS; do [ -z "$ld" ] || [ "$d" -gt "$ld" ] && ld=$d; done; fi
    for z in $SIZES; do
        for op in $OPS; do
            panels+=("$op $z")
            # tp_OP_SIZE.dat: depth, then ops/s of each system ("?" = missing)
            tail -n +2 "$OUT/summary.csv" | awk -F, -v op="$op" -v sz="$z" -v depths="$DEPTHS" \
                -v systems="${systems[*]}" '
                $2 == op && $3 == sz { o[$1, $4] = $6 }
                END {
                    nd = split(depths, D, " "); ns = split(systems, S, " ")
                    for (j = 1; j <= nd; j++) {
                        line = D[j]
                        for (i = 1; i <= ns; i++) line = line " " (((S[i], D[j]) in o) ? o[S[i], D[j]] : "?")
                        print line
                    }
                }' >"$WORK/tp_${op}_$z.dat"
            # lat_OP_SIZE.dat: system, p50, p99, p99.9 at depth ld
            tail -n +2 "$OUT/summary.csv" | awk -F, -v op="$op" -v sz="$z" -v d="$ld" '
                $2 == op && $3 == sz && $4 == d { print $1, $7, $8, $9 }' >"$WORK/lat_${op}_$z.dat"
        done
    done
    local n=${#panels[@]} cols rows
    cols=$((n > 1 ? 2 : 1)); rows=$(((n + cols - 1) / cols))
    {
        echo "set terminal $term size $((cols * 480)),$((rows * 330 + 30)) font ',9'"
        echo "set output '$OUT/throughput.png'"
        echo "set datafile missing '?'"
        echo "set multiplot layout $rows,$cols title 'ops/s against requests in flight, one connection'"
        local dmin dmax
        dmin=$(echo "$DEPTHS" | tr ' ' '\n' | sort -n | head -1)
        dmax=$(echo "$DEPTHS" | tr ' ' '\n' | sort -n | tail -1)
        echo "set logscale xy; set xtics ($(echo "$DEPTHS" | sed 's/ /, /g')); set grid"
        echo "set xrange [$dmin * 0.8:$dmax * 1.25]"
        echo "set xlabel 'depth (in flight)'; set ylabel 'ops/s'; set key below horizontal"
        for p in "${panels[@]}"; do
            set -- $p
            echo "set title '${1^^} $2 B'"
            # Only the systems with data in this panel (gnuplot stops at a
            # column that is all missing).
            local cmd="" col=2 sys
            for sys in "${systems[@]}"; do
                if awk -v c="$col" '$c != "?" { f = 1 } END { exit !f }' "$WORK/tp_$1_$2.dat"; then
                    cmd+="${cmd:+, }'$WORK/tp_$1_$2.dat' using 1:$col with linespoints ${styles[$sys]} title '${titles[$sys]}'"
                fi
                col=$((col + 1))
            done
            if [ -n "$cmd" ]; then echo "plot $cmd"; else echo "set multiplot next"; fi
        done
        echo "unset multiplot"
        echo "set output '$OUT/latency.png'"
        echo "reset"
        echo "set multiplot layout $rows,$cols title 'latency at depth $ld (us, log scale): p50, p99, p99.9'"
        echo "set style data histograms; set style histogram clustered gap 1; set style fill solid 0.8 border -1"
        echo "set logscale y; set grid ytics; set ylabel 'us'; set key left top; set yrange [1:*]"
        for p in "${panels[@]}"; do
            set -- $p
            echo "set title '${1^^} $2 B'"
            if [ -s "$WORK/lat_$1_$2.dat" ]; then
                echo "plot '$WORK/lat_$1_$2.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'p99.9'"
            else
                echo "set multiplot next"
            fi
        done
        echo "unset multiplot"
    } >"$WORK/plot.gp"
    gnuplot "$WORK/plot.gp" 2>"$WORK/gnuplot.err" ||
        { cat "$WORK/gnuplot.err" >&2; echo "sweep.sh: gnuplot failed" >&2; return 0; }
}
[ "$PLOT" = 1 ] && plot

cat "$OUT/table.md"
echo
echo "wrote $RUNS, $OUT/summary.csv, $OUT/table.md$([ "$PLOT" = 1 ] && [ -f "$OUT/throughput.png" ] && echo ", $OUT/throughput.png, $OUT/latency.png")" >&2
exit
}
