#!/usr/bin/env bash
# bench/scaling.sh smoke test: the real script in --quick mode (a map group
# and 1, 2, 3 one-member data groups, real kvmuxd processes, binaries
# copied into the test's own directory so its servers can be checked by
# path). Checks that every figure is printed, not how fast anything is:
#   - exit 0; 6 "scaling: G=N op=OP ops=N server_us_per_op=X
#     client_us_per_op=Y mapgroup_ms_per_s=Z" lines (G 1..3 x set/get),
#     ops, X and Y > 0;
#   - no kvmuxd from the run is left; an unknown option exits 2.
# Usage (from ctest): bench_scaling_test.sh SOURCE_DIR KVMUXD KVMUX_BENCH KVMUX_CLI
set -uo pipefail

SRC=$1 KVMUXD=$2 KVMUX_BENCH=$3 KVMUX_CLI=$4
OUT=$(mktemp -d /tmp/kvmux-scaling-test.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
. "$(dirname "$0")/bench_test_lib.sh"
bench_test_copy_bins "$OUT" "$KVMUXD" "$KVMUX_BENCH" "$KVMUX_CLI"

"$SRC/bench/scaling.sh" -k "$OUT/kvmuxd" --quick -K 2000 >"$OUT/stdout" 2>"$OUT/stderr"
rc=$?
check "scaling.sh exits 0 (got $rc)" [ "$rc" = 0 ]
[ "$rc" = 0 ] || cat "$OUT/stderr" >&2
cat "$OUT/stdout"
for g in 1 2 3; do
    for op in set get; do
        line=$(grep "^scaling: G=$g op=$op " "$OUT/stdout" || true)
        check "summary line G=$g $op" [ -n "$line" ]
        check "G=$g $op: ops, server and client us/op > 0 ($line)" fields_positive "$line" ops server_us_per_op client_us_per_op
    done
done
check "no kvmuxd left from the run" sh -c "! pgrep -f '^$OUT/kvmuxd' >/dev/null"
"$SRC/bench/scaling.sh" -k "$OUT/kvmuxd" --no-such-option >/dev/null 2>&1
check "an unknown option exits 2" [ "$?" = 2 ]

echo "bench_scaling_test: $passed passed, $failed failed"
[ "$failed" = 0 ]
