#!/bin/bash
# kvmux_slot (src/cluster/slot.c) against Redis itself: a real redis-server
# in cluster mode on a Unix socket in a temporary directory answers CLUSTER
# KEYSLOT for the docs/PROTOCOL.md 18.1 vectors (binary ones through
# redis-cli -x) and for generated keys with and without hash tags, and
# every answer must equal keyslot_tool's. Fails (never skips) when
# redis-server or redis-cli is missing: .ci/run installs them.
# Usage: cluster_keyslot_test.sh KEYSLOT_TOOL
set -euo pipefail
tool=$1
for b in redis-server redis-cli; do
  command -v "$b" >/dev/null 2>&1 || {
    echo "FAIL: $b not found: install the Debian packages redis-server and redis-tools" >&2
    exit 1
  }
done
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
redis-server --port 0 --unixsocket "$tmp/r.sock" --cluster-enabled yes \
  --cluster-config-file "$tmp/nodes.conf" --dir "$tmp" --save '' --appendonly no \
  >"$tmp/redis.log" 2>&1 &
pid=$!
rcli() { redis-cli -s "$tmp/r.sock" "$@"; }
for _ in $(seq 100); do
  [ -S "$tmp/r.sock" ] && [ "$(rcli PING 2>/dev/null)" = PONG ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/redis.log" >&2; echo "FAIL: redis-server exited" >&2; exit 1; }
  sleep 0.1
done
[ "$(rcli PING)" = PONG ] || { cat "$tmp/redis.log" >&2; echo "FAIL: redis-server not answering" >&2; exit 1; }

fail=0
check() { # check WHAT REDIS_SLOT KVMUX_SLOT
  if [ "$2" != "$3" ]; then echo "MISMATCH $1: redis $2, kvmux $3" >&2; fail=1; fi
}

# The vectors (docs/PROTOCOL.md 18.1), as arguments.
vec=(123456789 foo bar '{user1000}.following' '{user1000}.followers' 'foo{}{bar}'
     'foo{{bar}}zap' 'foo{bar}{zap}' '{}' '{' '}' '{a' 'a}{' 'x{y}')
check '""' "$(rcli CLUSTER KEYSLOT '')" "$("$tool" '')"
for k in "${vec[@]}"; do check "$k" "$(rcli CLUSTER KEYSLOT "$k")" "$("$tool" "$k")"; done
# Binary keys: redis-cli -x takes the last argument from stdin, byte for byte.
check 'k\0e\xffy' "$(printf 'k\000e\377y' | rcli -x CLUSTER KEYSLOT)" "$("$tool" -x 6b0065ff79)"
check '{\0\xff}x' "$(printf '{\000\377}x' | rcli -x CLUSTER KEYSLOT)" "$("$tool" -x 7b00ff7d78)"
check '\xff{\x00}' "$(printf '\377{\000}' | rcli -x CLUSTER KEYSLOT)" "$("$tool" -x ff7b007d)"

# Generated keys: one redis-cli session reads "CLUSTER KEYSLOT key" lines.
"$tool" gen 900 >"$tmp/keys"
n=$(wc -l <"$tmp/keys")
[ "$n" -ge 500 ] || { echo "FAIL: only $n generated keys" >&2; exit 1; }
sed 's/^/CLUSTER KEYSLOT /' "$tmp/keys" | rcli >"$tmp/redis.out"
mapfile -t keys <"$tmp/keys"
"$tool" "${keys[@]}" >"$tmp/kvmux.out"
[ "$(wc -l <"$tmp/redis.out")" -eq "$n" ] || { echo "FAIL: redis-cli answered $(wc -l <"$tmp/redis.out") of $n" >&2; exit 1; }
if ! cmp -s "$tmp/redis.out" "$tmp/kvmux.out"; then
  paste "$tmp/keys" "$tmp/redis.out" "$tmp/kvmux.out" | awk -F'\t' '$2 != $3' | head -20 >&2
  fail=1
fi
tagged=$(grep -c '{' "$tmp/keys" || true)
[ "$fail" -eq 0 ] || { echo "FAIL: kvmux_slot differs from redis-server's CLUSTER KEYSLOT" >&2; exit 1; }
echo "cluster_keyslot_test: ${#vec[@]}+4 vectors and $n generated keys ($tagged with braces) agree with redis-server"
