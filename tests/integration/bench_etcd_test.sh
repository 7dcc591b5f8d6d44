#!/usr/bin/env bash
# bench/etcd.sh smoke test: the real script with the real etcd, kvmuxd,
# kvmux-bench and etcdload, in --quick mode (0.5 s runs). Checks that it
# prints every figure, not how fast anything is:
#   - the table has the 13 rows (etcd set/get c1/c64; kvmux set/get c1,
#     c64, c1 depth 64; kvmux --fsync always set c1, c64, c1 depth 64),
#     each with ops/s > 0 and 0 < p50 <= p99;
#   - every ratio line carries a number > 0;
#   - the servers it started are gone after it exits (etcd and kvmuxd);
#   - etcdload fails (exit 1) on a closed
#     port and (exit 2) on bad usage; etcd.sh rejects an unknown option (2).
# etcd is required (Debian: etcd-server): without it the test fails and
# says so, rather than skipping unseen.
# Usage (from ctest): bench_etcd_test.sh SOURCE_DIR KVMUXD KVMUX_BENCH ETCDLOAD
set -uo pipefail

SRC=$1 KVMUXD=$2 KVMUX_BENCH=$3 ETCDLOAD=$4
OUT=$(mktemp -d /tmp/kvmux-etcd-test.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
. "$(dirname "$0")/bench_test_lib.sh"
command -v etcd >/dev/null || { echo "FAIL: etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }

"$SRC/bench/etcd.sh" -k "$KVMUXD" -b "$KVMUX_BENCH" -e "$ETCDLOAD" --quick -o "$OUT/table.md" \
    >"$OUT/stdout" 2>"$OUT/stderr"
rc=$?
check "etcd.sh exits 0 (got $rc)" [ "$rc" = 0 ]
[ "$rc" = 0 ] || cat "$OUT/stderr" >&2
cat "$OUT/stdout"

rows=("etcd set c1" "etcd set c64" "etcd get c1" "etcd get c64"
      "kvmux set c1" "kvmux set c64" "kvmux set c1 depth 64"
      "kvmux get c1" "kvmux get c64" "kvmux get c1 depth 64"
      "kvmux fsync-always set c1" "kvmux fsync-always set c64"
      "kvmux fsync-always set c1 depth 64")
row_ok() { # name: ops > 0, 0 < p50 <= p99
    awk -F'|' -v n="$1" '{ gsub(/^ +| +$/, "", $2) } $2 == n {
        found = 1; ok = ($3 + 0 > 0 && $4 + 0 > 0 && $4 + 0 <= $5 + 0) } END { exit !(found && ok) }' \
        "$OUT/stdout"
}
for r in "${rows[@]}"; do check "row '$r' present and sane" row_ok "$r"; done
check "-o wrote the same table" cmp -s "$OUT/stdout" "$OUT/table.md"
ratios=$(grep -o '[0-9][0-9.]*x' "$OUT/stdout" | tr -d x)
check "8 ratios printed" [ "$(echo "$ratios" | grep -c .)" = 8 ]
for x in $ratios; do check "ratio $x > 0" awk -v x="$x" 'BEGIN { exit !(x > 0) }'; done

# Nothing left running: the script logs no PIDs, so look for servers whose
# data lives in its (removed) work directory.
check "no etcd left from the run" sh -c '! pgrep -f "kvmux-etcd\.[A-Za-z0-9]*/etcd-data" >/dev/null'
check "no kvmuxd left from the run" sh -c '! pgrep -f "kvmux-etcd\.[A-Za-z0-9]*/kvmux.aof" >/dev/null'

# etcdload on its own: a closed port, bad usage.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ETCDLOAD" -p "$port" -n 1 -q >/dev/null 2>&1
check "etcdload on a closed port exits 1" [ $? = 1 ]
"$ETCDLOAD" --op nope >/dev/null 2>&1
check "etcdload bad usage exits 2" [ $? = 2 ]
"$SRC/bench/etcd.sh" --nope >/dev/null 2>&1
check "etcd.sh unknown option exits 2" [ $? = 2 ]

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
