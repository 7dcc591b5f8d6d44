#!/usr/bin/env bash
# netns_test: the partition harness (tests/replica/tools/netns.sh) with real
# kvmux processes, no replication needed:
#   - it refuses to run without root (exit 3, a message), and a session's
#     namespaces and links are gone after it ends: normally, with a failing
#     command, and when SIGTERMed;
#   - 3 nodes: kvmuxd in node 1, kvmux-cli in node 2 and kvmux-bench in
#     node 3 reach it; `isolate 1`: a request on the cli's established
#     connection ends with "timed out" after its deadline (1.5 s, not a
#     hang) and a new connection cannot be made; `heal`: the same cli
#     connection works again;
#   - `split "1|2,3"` with plain TCP (bash /dev/tcp): 2 -> 1 and 1 -> 3 cut,
#     2 -> 3 and host -> 1 open; heal; `flap 1 2 600` takes ~1.2 s and ends
#     healed.
# Usage: netns_test.sh BUILD_DIR. Exit 0 pass, 1 fail. Fails (never skips)
# when the harness cannot run here.
set -u
SH=$(readlink -f "$(dirname "$0")/tools/netns.sh")
INNER=0
if [ "${1:-}" = --inner ]; then INNER=1; shift; fi
BUILD=$(readlink -f "${1:?usage: netns_test.sh BUILD_DIR}")
KVMUXD=$BUILD/kvmuxd
CLI=$BUILD/kvmux-cli
BENCH=$BUILD/kvmux-bench
fails=0
passes=0
ok() { passes=$((passes + 1)); echo "ok: $*"; }
bad() { fails=$((fails + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Wait up to $2 ms for file $1 to contain pattern $3.
wait_for() {
    local file=$1 ms=$2 pat=$3 t0; t0=$(now_ms)
    while [ $(( $(now_ms) - t0 )) -lt "$ms" ]; do
        grep -q -- "$pat" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Can $1 (node number, 0 = host) open TCP to $2:$3 within 1 s?
tcp_open() {
    local cmd="exec 3<>/dev/tcp/$2/$3"
    if [ "$1" = 0 ]; then timeout 1 bash -c "$cmd" 2>/dev/null
    else timeout 1 "$SH" exec "$1" bash -c "$cmd" 2>/dev/null; fi
}
tcp_cut() { ! tcp_open "$@"; }

inner() {
    echo "$NETNS_PREFIX" >"$PREFIX_FILE"
    local tmp; tmp=$(mktemp -d)
    local a1=$NETNS_ADDR_1 a3=$NETNS_ADDR_3
    "$SH" exec 1 "$KVMUXD" --bind "$a1" --port 0 --protected-mode no >"$tmp/d1.out" 2>"$tmp/d1.err" &
    wait_for "$tmp/d1.out" 10000 "listening on" || { bad "kvmuxd started in node 1"; cat "$tmp/d1.err"; return 1; }
    local p1; p1=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$tmp/d1.out")
    ok "kvmuxd listening in node 1 on $a1:$p1"

    # An interactive kvmux-cli in node 2 on one connection, fed through a fifo.
    mkfifo "$tmp/in"
    "$SH" exec 2 "$CLI" -h "$a1" -p "$p1" -t 1500 <"$tmp/in" >"$tmp/cli.out" 2>"$tmp/cli.err" &
    exec 5>"$tmp/in"
    echo "set part-key before" >&5
    check "node 2 -> node 1: set" wait_for "$tmp/cli.out" 5000 "OK version="
    "$SH" exec 3 "$BENCH" -h "$a1" -p "$p1" --op set -n 2000 -k 100 -q >"$tmp/bench.out" 2>&1
    check "node 3 -> node 1: kvmux-bench 2000 SETs" [ $? = 0 ]

    "$SH" isolate 1
    local t0 t1; t0=$(now_ms)
    echo "get part-key" >&5
    check "isolated: the request's deadline fires (\"timed out\")" wait_for "$tmp/cli.err" 8000 "timed out"
    t1=$(now_ms)
    echo "isolated: deadline fired after $((t1 - t0)) ms (deadline 1500 ms)"
    check "isolated: deadline fired within 1.4-6 s" test $((t1 - t0)) -ge 1400 -a $((t1 - t0)) -le 6000
    "$SH" exec 3 "$CLI" -h "$a1" -p "$p1" -t 1000 get part-key >/dev/null 2>"$tmp/c3.err"
    local rc=$?
    check "isolated: a new connection from node 3 fails (exit 4, rc $rc)" [ $rc = 4 ]
    check "isolated: ... with 'cannot connect'" grep -q "cannot connect" "$tmp/c3.err"

    "$SH" heal
    : >"$tmp/cli.out"
    echo "get part-key" >&5
    check "healed: the same connection works again" wait_for "$tmp/cli.out" 10000 "before"
    "$SH" exec 3 "$CLI" -h "$a1" -p "$p1" -t 2000 get part-key >"$tmp/c3.out" 2>&1
    check "healed: node 3 connects again" grep -q before "$tmp/c3.out"
    exec 5>&-

    # Split 1|2,3 with plain TCP; a second listener in node 3.
    "$SH" exec 3 "$KVMUXD" --bind "$a3" --port 0 --protected-mode no >"$tmp/d3.out" 2>"$tmp/d3.err" &
    wait_for "$tmp/d3.out" 10000 "listening on" || { bad "kvmuxd started in node 3"; return 1; }
    local p3; p3=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$tmp/d3.out")
    check "before split: 2 -> 1 open" tcp_open 2 "$a1" "$p1"
    "$SH" split "1|2,3"
    check "split 1|2,3: 2 -> 1 cut" tcp_cut 2 "$a1" "$p1"
    check "split 1|2,3: 1 -> 3 cut" tcp_cut 1 "$a3" "$p3"
    check "split 1|2,3: 2 -> 3 open" tcp_open 2 "$a3" "$p3"
    check "split 1|2,3: host -> 1 open (host in no group)" tcp_open 0 "$a1" "$p1"
    "$SH" split "0,1|2,3"
    check "split 0,1|2,3: host -> 3 cut" tcp_cut 0 "$a3" "$p3"
    check "split 0,1|2,3: host -> 1 open" tcp_open 0 "$a1" "$p1"
    "$SH" heal
    check "healed: 2 -> 1 open" tcp_open 2 "$a1" "$p1"
    t0=$(now_ms)
    "$SH" flap 1 2 600
    t1=$(now_ms)
    echo "flap 1 2 600 took $((t1 - t0)) ms"
    check "flap took >= 1.2 s" [ $((t1 - t0)) -ge 1200 ]
    check "after flap: 2 -> 1 open" tcp_open 2 "$a1" "$p1"
    check "bad split refused (exit 2)" bash -c "'$SH' split '1|1' 2>/dev/null; [ \$? = 2 ]"
    rm -rf "$tmp"
    # kvmuxd and the cli are still running: the session's teardown kills them.
    [ "$fails" = 0 ]
}

leftovers() {
    { ip netns list | awk '{print $1}'; ip -o link show | awk -F': ' '{print $2}'; } | grep "^$1[-bhn]"
}

if [ "$INNER" = 1 ]; then
    inner
    exit $?
fi

for b in "$KVMUXD" "$CLI" "$BENCH"; do [ -x "$b" ] || { echo "FAIL: $b not built"; exit 1; }; done

# Refusals: not root -> exit 3 with a message.
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$SH" session 2 true 2>&1)
rc=$?
check "not root: exit 3 (got $rc)" [ $rc = 3 ]
check "not root: says why" grep -q "must run as root" <<<"$out"
"$SH" addr 1 >/dev/null 2>&1
check "no session: exit 5" [ $? = 5 ]

# Teardown after a failing command and after SIGTERM.
"$SH" session 2 bash -c 'echo "$NETNS_PREFIX" > '"$BUILD"'/netns_test.prefix; exit 7' 2>/dev/null
rc=$?
p=$(cat "$BUILD/netns_test.prefix")
check "failing command: its status passed through (7, got $rc)" [ $rc = 7 ]
check "failing command: nothing of $p left" [ -z "$(leftovers "$p")" ]
"$SH" session 2 bash -c 'echo "$NETNS_PREFIX" > '"$BUILD"'/netns_test.prefix; sleep 60' 2>/dev/null &
spid=$!
wait_for "$BUILD/netns_test.prefix" 20000 "kx$spid"
sleep 0.5
kill -TERM "$spid"
wait "$spid"
rc=$?
check "SIGTERM: session exits 143 (got $rc)" [ $rc = 143 ]
check "SIGTERM: nothing of kx$spid left" [ -z "$(leftovers "kx$spid")" ]

# The real run, bounded by timeout so the session's own teardown still runs.
export PREFIX_FILE=$BUILD/netns_test.prefix
: >"$PREFIX_FILE"
timeout 100 "$SH" session 3 bash "$0" --inner "$BUILD"
rc=$?
p=$(cat "$PREFIX_FILE")
check "3-node run passed (rc $rc)" [ $rc = 0 ]
check "3-node run: nothing of ${p:-?} left (processes, namespaces, links)" test -n "$p" -a -z "$(leftovers "${p:-none}")"
rm -f "$PREFIX_FILE"
echo "netns_test: $passes passed, $fails failed"
[ "$fails" = 0 ]
