#!/usr/bin/env bash
# kvmuxd inside a node of a netns.sh session (tests/replica/tools/netns.sh),
# for rgroup.c's members: the node is the member's --replica-id, and
# kvmuxd listens on that node's address (--bind NETNS_ADDR_<id>, after the
# fixture's own --bind 127.0.0.1; --protected-mode no: a test network).
# Set as $KVMUX_KVMUXD, with the real binary in $KVMUX_NETNS_REAL_KVMUXD,
# inside `netns.sh session`. The process keeps this script's pid (exec all
# the way), so the fixture's SIGKILL reaches kvmuxd.
set -u
id=
prev=
for a in "$@"; do
    [ "$prev" = --replica-id ] && id=$a
    prev=$a
done
[ -n "$id" ] || { echo "netns_kvmuxd.sh: no --replica-id" >&2; exit 2; }
var=NETNS_ADDR_$id
[ -n "${!var:-}" ] || { echo "netns_kvmuxd.sh: $var unset (not in a netns.sh session of >= $id nodes)" >&2; exit 2; }
exec "$NETNS_SH" exec "$id" "$KVMUX_NETNS_REAL_KVMUXD" "$@" --bind "${!var}" --protected-mode no
