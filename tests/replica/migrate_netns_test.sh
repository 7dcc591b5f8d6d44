#!/usr/bin/env bash
# migrate_netns_test: slot migration under partitions (docs/MIGRATION.md
# 8.3, 12): migrate_fault_test in netns mode (KVMUX_MIGFAULT_MODE=netns)
# inside `netns.sh session 9`, each of its 9 kvmuxd (the map group, data
# groups 1 and 2, 3 members each) in a network namespace of its own
# (netns_kvmuxd.sh as $KVMUX_KVMUXD picks the node by the member's address).
# The scenarios, the checks and the summary lines are the C test's (its
# header and netns_run). This script adds: the session is bounded by
# `timeout` (so its teardown still runs) and nothing of it (namespaces,
# links, processes) is left afterwards.
# Usage: migrate_netns_test.sh MIGRATE_FAULT_TEST KVMUXD [TIMEOUT_S].
# Exit 0 pass, 1 fail. Fails (never skips) where the harness cannot run:
# not root, no ip netns, no nft (netns.sh exits 3 with the reason).
set -u
DIR=$(readlink -f "$(dirname "$0")")
SH=$DIR/tools/netns.sh
TEST=$(readlink -f "${1:?usage: migrate_netns_test.sh MIGRATE_FAULT_TEST KVMUXD [TIMEOUT_S]}")
KVMUXD=$(readlink -f "${2:?usage: migrate_netns_test.sh MIGRATE_FAULT_TEST KVMUXD [TIMEOUT_S]}")
LIMIT=${3:-400}
for b in "$TEST" "$KVMUXD"; do [ -x "$b" ] || { echo "FAIL: $b not built"; exit 1; }; done
pf=$(mktemp)
trap 'rm -f "$pf"' EXIT
# The session's prefix is written first thing inside it, for the leftover
# check below.
timeout "$LIMIT" "$SH" session 9 bash -c 'echo "$NETNS_PREFIX" >"$0"; exec "$@"' "$pf" \
    env KVMUX_KVMUXD="$DIR/netns_kvmuxd.sh" KVMUX_NETNS_REAL_KVMUXD="$KVMUXD" \
        KVMUX_MIGFAULT_MODE=netns "$TEST"
rc=$?
p=$(cat "$pf")
[ "$rc" = 124 ] && echo "FAIL: the session did not end within $LIMIT s"
[ "$rc" = 3 ] && echo "FAIL: the partition harness cannot run here (see netns.sh's message)"
left=""
[ -n "$p" ] && left=$( { ip netns list | awk '{print $1}'; ip -o link show | awk -F': ' '{print $2}'; } |
                      grep "^$p[-bhn]")
if [ -n "$left" ]; then
    echo "FAIL: left behind by session $p: $left"
    rc=1
fi
[ "$rc" = 0 ] && echo "migrate_netns_test: passed" || echo "migrate_netns_test: FAILED (rc $rc)"
[ "$rc" = 0 ]
