#!/usr/bin/env bash
# bench/sweep.sh smoke test: the real script, the real kvmuxd, kvmux-bench
# and mcload, redis-server and memcached (required: missing, the test fails
# and says so), in a tiny sweep: 0.4 s runs, depths 1 and 16, 100-byte
# GET and SET. Checks what the sweep produces, not how fast anything is:
#   - runs.csv has one row per system, op and depth, every number parses,
#     ops/s > 0, 0 < p50 <= p99 <= p99.9, no errors;
#   - summary.csv and table.md carry the same cells, with the ratios to
#     Redis and memcached;
#   - throughput.png and latency.png are PNG files under 100 KB (gnuplot
#     required);
#   - every server the sweep started is gone after it exits (stopped by PID);
#   - mcload: -n N answers exactly N requests, all hits after --preload; it exits 1 on a closed port and 2 on bad usage;
#   - sweep.sh rejects an unknown option with status 2.
# Usage (from ctest): bench_sweep_test.sh SOURCE_DIR KVMUXD KVMUX_BENCH MCLOAD
set -uo pipefail

SRC=$1 KVMUXD=$2 KVMUX_BENCH=$3 MCLOAD=$4
OUT=$(mktemp -d /tmp/kvmux-sweep-test.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
. "$(dirname "$0")/bench_test_lib.sh"

# The peers and the plotter are required: a sweep that silently left one
# out would pass unseen (Debian: redis-server redis-tools memcached
# gnuplot-nox; .ci/run installs them).
for tool in redis-server redis-benchmark redis-cli memcached gnuplot; do
    command -v "$tool" >/dev/null ||
        { echo "FAIL: $tool is not installed (apt-get install redis-server redis-tools memcached gnuplot-nox)" >&2; exit 1; }
done
systems=(kvmux redis memcached)

# --- the sweep
"$SRC/bench/sweep.sh" -k "$KVMUXD" -b "$KVMUX_BENCH" -m "$MCLOAD" --quick -d 0.4 \
    --depths "1 16" --sizes 100 --out "$OUT/sweep" >"$OUT/stdout" 2>"$OUT/stderr"
rc=$?
check "sweep.sh exits 0 (rc=$rc)" test "$rc" = 0
[ "$rc" = 0 ] || cat "$OUT/stderr" >&2

runs=$OUT/sweep/runs.csv
check "runs.csv header" test "$(head -1 "$runs" 2>/dev/null)" = \
    "system,op,size,depth,rep,ops_per_sec,p50_us,p99_us,p999_us,errors"
for s in "${systems[@]}"; do
    for op in get set; do
        for d in 1 16; do
            line=$(grep -c "^$s,$op,100,$d,1," "$runs" 2>/dev/null)
            check "one runs.csv row for $s $op depth $d" test "$line" = 1
            check "numbers of $s $op depth $d parse and are sane" awk -F, -v s="$s" -v op="$op" -v d="$d" '
                function isnum(x) { return x ~ /^[0-9]+([.][0-9]+)?$/ }
                $1 == s && $2 == op && $4 == d {
                    found = 1
                    for (i = 6; i <= 10; i++) if (!isnum($i)) { print "not a number: " $0; bad = 1 }
                    if (!($6 > 0 && $7 > 0 && $7 <= $8 && $8 <= $9 && $10 == 0)) { print "insane: " $0; bad = 1 }
                }
                END { exit bad || !found }' "$runs"
            check "summary.csv has $s $op depth $d" grep -q "^$s,$op,100,$d,1," "$OUT/sweep/summary.csv"
        done
    done
done
# The sweep ran only what it was asked for: no kvmux-sync in --quick.
check "--quick runs no kvmux-sync" test "$(grep -c '^kvmux-sync,' "$runs")" = 0
check "table.md has 4 cells" test "$(grep -c '^| [GS]ET | 100 B |' "$OUT/sweep/table.md")" = 4
check "table.md has kvmux/redis ratios" \
    test "$(awk -F'|' '/^\| [GS]ET/ && $8 ~ /[0-9][.][0-9][0-9]/' "$OUT/sweep/table.md" | wc -l)" = 4
check "table.md has kvmux/memcached ratios" \
    test "$(awk -F'|' '/^\| [GS]ET/ && $9 ~ /[0-9][.][0-9][0-9]/' "$OUT/sweep/table.md" | wc -l)" = 4
for png in throughput latency; do
    f=$OUT/sweep/$png.png
    check "$png.png is a PNG" test "$(head -c 8 "$f" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = \
        "89504e470d0a1a0a"
    size=$(stat -c %s "$f" 2>/dev/null || echo 0)
    check "$png.png is 1 KB..100 KB ($size)" test "$size" -gt 1000 -a "$size" -lt 102400
done

# Every server the sweep started ("(pid N)" on its stderr) is gone.
pids=$(sed -n 's/.*(pid \([0-9][0-9]*\)).*/\1/p' "$OUT/stderr")
check "the sweep reported its servers' pids" test "$(echo "$pids" | wc -w)" = "${#systems[@]}"
for pid in $pids; do
    check "server pid $pid stopped" bash -c "! kill -0 $pid 2>/dev/null"
done

# --- mcload on its own
. "$SRC/bench/lib.sh"
bench_init sweep-test
BENCH_EXIT_HOOKS+=('rm -rf "$OUT"')
bench_start_memcached mc -t 1
"$MCLOAD" -p "$BENCH_PORT" --proto meta --op get -s 7 -k 500 --preload --depth 8 -n 1000 --json \
    >"$OUT/mc.json" 2>"$OUT/mc.err"
check "mcload -n 1000 exits 0" test $? = 0
check "mcload -n 1000 answers 1000 GETs, all hits" \
    grep -q '"ops":1000,"ok":1000,"misses":0,"errors":0' "$OUT/mc.json"
"$MCLOAD" -p "$BENCH_PORT" --proto text --op get -s 7 -k 1000 --depth 4 -n 2000 --json \
    >"$OUT/mc2.json" 2>>"$OUT/mc.err"
# keys 500..999 were never written: about half the GETs miss.
check "mcload text protocol counts misses" awk '
    { match($0, /"ops":[0-9]+/); ops = substr($0, RSTART + 6, RLENGTH - 6)
      match($0, /"misses":[0-9]+/); m = substr($0, RSTART + 9, RLENGTH - 9)
      exit !(ops + 0 == 2000 && m + 0 > 500 && m + 0 < 1500) }' "$OUT/mc2.json"
port=$BENCH_PORT
bench_stop "$BENCH_PID"
"$MCLOAD" -p "$port" -n 1 >/dev/null 2>&1
check "mcload on a closed port exits 1" test $? = 1
"$MCLOAD" -p 1 --depth 0 >/dev/null 2>&1
check "mcload --depth 0 is a usage error (2)" test $? = 2
"$SRC/bench/sweep.sh" --no-such-option >/dev/null 2>&1
check "sweep.sh rejects an unknown option (2)" test $? = 2

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
