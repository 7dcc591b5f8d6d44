#!/usr/bin/env bash
# bench/routing.sh smoke test: the real script in --quick mode against a
# real one-group cluster (kvmuxd, kvmux-bench, kvmux-cli copied into a
# directory of the test's own, so that "its servers are gone" can be
# checked by path without seeing anybody else's). Checks that every
# figure is printed, not how fast anything is:
#   - exit 0; the table has 6 rows (3 shapes x GET/SET);
#   - 6 "routing: SHAPE OP plain=N cluster=N ratio=R" lines, each N > 0
#     and R > 0;
#   - no kvmuxd from the run is left; an unknown option exits 2.
# Usage (from ctest): bench_routing_test.sh SOURCE_DIR KVMUXD KVMUX_BENCH KVMUX_CLI
set -uo pipefail

SRC=$1 KVMUXD=$2 KVMUX_BENCH=$3 KVMUX_CLI=$4
OUT=$(mktemp -d /tmp/kvmux-routing-test.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
. "$(dirname "$0")/bench_test_lib.sh"
bench_test_copy_bins "$OUT" "$KVMUXD" "$KVMUX_BENCH" "$KVMUX_CLI"

"$SRC/bench/routing.sh" -k "$OUT/kvmuxd" --quick >"$OUT/stdout" 2>"$OUT/stderr"
rc=$?
check "routing.sh exits 0 (got $rc)" [ "$rc" = 0 ]
[ "$rc" = 0 ] || cat "$OUT/stderr" >&2
cat "$OUT/stdout"

for shape in async-loop async-cb sync-8; do
    for op in get set; do
        check "table row $shape $op" grep -q "^| $shape | $op | [0-9]" "$OUT/stdout"
        line=$(grep "^routing: $shape $op " "$OUT/stdout" || true)
        check "summary line $shape $op" [ -n "$line" ]
        check "$shape $op: plain, cluster and ratio > 0 ($line)" fields_positive "$line" plain cluster ratio
    done
done
check "no kvmuxd left from the run" sh -c "! pgrep -f '^$OUT/kvmuxd' >/dev/null"
"$SRC/bench/routing.sh" -k "$OUT/kvmuxd" --no-such-option >/dev/null 2>&1
check "an unknown option exits 2" [ "$?" = 2 ]

echo "bench_routing_test: $passed passed, $failed failed"
[ "$failed" = 0 ]
