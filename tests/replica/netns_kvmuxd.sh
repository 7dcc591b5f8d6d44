#!/usr/bin/env bash
# kvmuxd inside a node of a netns.sh session (tests/replica/tools/netns.sh),
# for rgroup.c's members: the node is the one whose address the member has
# in --peers (rgroup_start_hosts; several groups, each with replica ids
# 1..3, then share one session: migrate_fault_test's netns mode), else the
# member's --replica-id; kvmuxd listens on that node's address (--bind
# NETNS_ADDR_<node>, after the fixture's own --bind 127.0.0.1;
# --protected-mode no: a test network).
# Set as $KVMUX_KVMUXD, with the real binary in $KVMUX_NETNS_REAL_KVMUXD,
# inside `netns.sh session`. The process keeps this script's pid (exec all
# the way), so the fixture's SIGKILL reaches kvmuxd.
set -u
id=
peers=
prev=
for a in "$@"; do
    [ "$prev" = --replica-id ] && id=$a
    [ "$prev" = --peers ] && peers=$a
    prev=$a
done
[ -n "$id" ] || { echo "netns_kvmuxd.sh: no --replica-id" >&2; exit 2; }
node=$id
# This member's address in --peers ("ID=ADDR:PORT/ADDR:PORT,..."), and the
# node that has it.
mine=$(tr ',' '\n' <<<"$peers" | sed -n "s/^$id=\([0-9.]*\):.*/\1/p")
for ((i = 1; i <= ${NETNS_N:-0}; i++)); do
    v=NETNS_ADDR_$i
    [ -n "$mine" ] && [ "${!v:-}" = "$mine" ] && node=$i
done
var=NETNS_ADDR_$node
[ -n "${!var:-}" ] || { echo "netns_kvmuxd.sh: $var unset (not in a netns.sh session of >= $node nodes)" >&2; exit 2; }
exec "$NETNS_SH" exec "$node" "$KVMUX_NETNS_REAL_KVMUXD" "$@" --bind "${!var}" --protected-mode no
