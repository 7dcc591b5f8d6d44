#!/usr/bin/env bash
# bench/cluster.sh smoke test: the real script in --quick mode (a map group
# and 3 data groups of 3 real kvmuxd, 100k keys, 30 s of load, 4 moves of
# 512 slots; then bench/routing.sh --quick), with the binaries copied into
# a directory of the test's own so that "its servers are gone" can be
# checked by path. Under the sanitizers (KVMUX_TEST_SCALE < 1) the groups
# have one member each (-r 1): 12 instrumented kvmuxd do not fit the CI's
# time. Checks the figures are printed, not how fast anything is:
#   - exit 0; exactly one summary line, its fields in the documented order;
#   - groups=3, lost=0, applied_twice=0, stale_reads=0; slots_moved,
#     acknowledged and max_slot_unavailable_ms > 0; routing_overhead_pct a
#     number with one decimal;
#   - no kvmuxd from the run is left; an unknown option exits 2.
# Usage (from ctest): bench_cluster_test.sh SOURCE_DIR KVMUXD KVMUX_BENCH KVMUX_CLI CLUSTERLOAD LINCHECK
set -uo pipefail

SRC=$1 KVMUXD=$2 KVMUX_BENCH=$3 KVMUX_CLI=$4 CLUSTERLOAD=$5 LINCHECK=$6
OUT=$(mktemp -d /tmp/kvmux-cluster-test.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
. "$(dirname "$0")/bench_test_lib.sh"
bench_test_copy_bins "$OUT" "$KVMUXD" "$KVMUX_BENCH" "$KVMUX_CLI"
cp "$CLUSTERLOAD" "$OUT/clusterload" && cp "$LINCHECK" "$OUT/kvmux-lincheck" ||
    { echo "FAIL: cannot copy clusterload and kvmux-lincheck" >&2; exit 1; }

replicas=3
awk -v s="${KVMUX_TEST_SCALE:-1}" 'BEGIN { exit !(s < 1) }' && replicas=1
"$SRC/bench/cluster.sh" -k "$OUT/kvmuxd" -r "$replicas" --quick >"$OUT/stdout" 2>"$OUT/stderr"
rc=$?
check "cluster.sh exits 0 (got $rc)" [ "$rc" = 0 ]
[ "$rc" = 0 ] || grep -v 'level=info' "$OUT/stderr" | tail -40 >&2
cat "$OUT/stdout"
grep '^migload: move\|^lincheck:' "$OUT/stderr"

check "one summary line" [ "$(grep -c '^cluster: ' "$OUT/stdout")" = 1 ]
line=$(grep '^cluster: ' "$OUT/stdout" | head -1)
re='^cluster: groups=3 slots_moved=[0-9]+ acknowledged=[0-9]+ lost=0 applied_twice=0 stale_reads=0 max_slot_unavailable_ms=[0-9]+ routing_overhead_pct=-?[0-9]+\.[0-9]$'
check "the line's fields, in order, lost/applied_twice/stale_reads 0 ($line)" \
    grep -Eq "$re" <<<"$line"
check "slots_moved, acknowledged, max_slot_unavailable_ms > 0" \
    fields_positive "$line" slots_moved acknowledged max_slot_unavailable_ms
check "no kvmuxd left from the run" sh -c "! pgrep -f '^$OUT/kvmuxd' >/dev/null"
"$SRC/bench/cluster.sh" -k "$OUT/kvmuxd" --no-such-option >/dev/null 2>&1
check "an unknown option exits 2" [ "$?" = 2 ]

echo "bench_cluster_test: $passed passed, $failed failed"
[ "$failed" = 0 ]
