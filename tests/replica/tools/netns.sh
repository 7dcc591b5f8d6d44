#!/usr/bin/env bash
# netns.sh: network partitions between real processes, for the replication
# tests. N network namespaces on a bridge this script creates (veth pairs,
# addresses in 10.213.S.0/24); partitions are nftables drops inside the
# namespaces (this kernel has no tc netem), so TCP connections between cut
# nodes stall exactly as on a real partition and recover on heal.
#
#   netns.sh session N COMMAND [ARGS...]
#       Create nodes 1..N, run COMMAND (in the host namespace) with the
#       variables below exported, tear everything down when it ends, fails
#       or is signalled (trap), and exit with COMMAND's status.
#       NETNS_PREFIX   the session's unique prefix (kx<pid>): every namespace
#                      (kx<pid>-I), link (kx<pid>b, kx<pid>hI) and nftables
#                      table it creates is named with it
#       NETNS_N        N
#       NETNS_ADDR_I   node I's address (I = 1..N)
#       NETNS_HOST_ADDR the host side's address on the bridge (node 0)
#       NETNS_SH       this script's path
#   The commands below act on the session named by $NETNS_PREFIX (so they
#   are called from within COMMAND):
#   netns.sh exec I CMD [ARGS...]   run CMD inside node I (ip netns exec)
#   netns.sh addr I                 print node I's address (0: the host)
#   netns.sh isolate I              cut node I off from every other node and
#                                   from the host
#   netns.sh split SPEC             e.g. "1|2,3" or "1,2|3,4|5": traffic
#                                   between nodes of different groups is
#                                   dropped; 0 names the host; nodes in no
#                                   group keep talking to everyone
#   netns.sh heal                   remove every partition
#   netns.sh flap I K PERIOD_MS     K times: isolate I for PERIOD_MS/2, heal
#                                   for PERIOD_MS/2 (foreground; ends healed)
#   netns.sh status                 print the partition rules of each node
#   netns.sh cleanup                remove what sessions whose process is gone
#                                   left behind (a session killed with -9)
#
# A session also runs `cleanup` before it starts. Processes still running
# inside the session's namespaces at teardown are killed (SIGKILL); they
# were started by the session's COMMAND.
#
# Exit codes: 0 success (session: COMMAND's own status, 0..255); 2 usage
# error; 3 this environment cannot run it (not root, no `ip netns`, no nft,
# no veth/bridge support): a message says which, and a test using this must
# fail on it, not skip; 4 setup failed (no free subnet, ip/nft refused a
# step); 5 no session ($NETNS_PREFIX unset or its namespaces gone).
set -u

NS_TABLE=kvmuxpart      # nftables table inside each node namespace
SUBNET_BASE=10.213      # sessions take 10.213.S.0/24, S = 1..250
LOCK=/run/kvmux-netns.lock

die() { local code=$1; shift; echo "netns.sh: $*" >&2; exit "$code"; }

usage() {
    sed -n '2,/^set -u/p' "$0" | sed -e '/^set -u/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

need_env() {
    [ "$(id -u)" = 0 ] || die 3 "must run as root (namespaces, links and nftables need it)"
    command -v ip >/dev/null 2>&1 || die 3 "ip (iproute2) is not installed"
    ip netns list >/dev/null 2>&1 || die 3 "'ip netns' is unavailable here"
    command -v nft >/dev/null 2>&1 || die 3 "nft (nftables) is not installed"
}

node_ns() { echo "${NETNS_PREFIX}-$1"; }

need_session() {
    [ -n "${NETNS_PREFIX:-}" ] || die 5 "no session: NETNS_PREFIX is unset (run under 'netns.sh session')"
    [ -n "${NETNS_N:-}" ] || die 5 "no session: NETNS_N is unset"
    ip netns list 2>/dev/null | grep -q "^$(node_ns 1)\b" ||
        die 5 "no session: namespace $(node_ns 1) does not exist"
}

need_node() {
    case "$1" in ''|*[!0-9]*) die 2 "node must be a number: '$1'" ;; esac
    [ "$1" -ge 1 ] && [ "$1" -le "$NETNS_N" ] || die 2 "node $1 not in 1..$NETNS_N"
}

addr_of() {
    if [ "$1" = 0 ]; then echo "$NETNS_HOST_ADDR"; else eval "echo \$NETNS_ADDR_$1"; fi
}

# ---- teardown ----

# Remove everything named with prefix $1: processes in its namespaces
# (SIGKILL, by pid), the namespaces, the links.
teardown_prefix() {
    local p=$1 ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$p-"); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    done
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$p-"); do
        ip netns del "$ns" 2>/dev/null
    done
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^${p}[bh]"); do
        ip link del "$l" 2>/dev/null
    done
}

cmd_cleanup() {
    need_env
    local p pid
    for p in $( { ip netns list 2>/dev/null | awk '{print $1}';
                  ip -o link show 2>/dev/null | awk -F': ' '{print $2}'; } |
                grep -o '^kx[0-9]\+' | sort -u); do
        pid=${p#kx}
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "netns.sh: removing leftovers of session $p (process gone)" >&2
            teardown_prefix "$p"
        fi
    done
}

# ---- session ----

stop_cmd() {
    [ -n "${CMD_PID:-}" ] || return 0
    kill -TERM -- "-$CMD_PID" 2>/dev/null
    sleep 0.2
    kill -KILL -- "-$CMD_PID" 2>/dev/null
}

cmd_session() {
    [ $# -ge 2 ] || usage
    local n=$1; shift
    case "$n" in ''|*[!0-9]*) die 2 "N must be a number: '$n'" ;; esac
    [ "$n" -ge 1 ] && [ "$n" -le 50 ] || die 2 "N must be 1..50"
    need_env
    cmd_cleanup
    export NETNS_PREFIX="kx$$" NETNS_N="$n" NETNS_SH
    NETNS_SH=$(readlink -f "$0")
    local br="${NETNS_PREFIX}b" s i
    CMD_PID=""
    trap 'teardown_prefix "$NETNS_PREFIX"' EXIT
    trap 'stop_cmd; exit 143' TERM
    trap 'stop_cmd; exit 130' INT
    trap 'stop_cmd; exit 129' HUP
    # Choose a free /24 under the lock, so parallel sessions never share one.
    exec 9>"$LOCK" || die 4 "cannot open $LOCK"
    flock -w 20 9 || die 4 "timed out waiting for $LOCK"
    s=""
    for i in $(seq 1 250); do
        if ! ip -4 -o addr show 2>/dev/null | grep -q " ${SUBNET_BASE}\.$i\."; then s=$i; break; fi
    done
    [ -n "$s" ] || die 4 "no free subnet under ${SUBNET_BASE}.0.0/16"
    ip link add "$br" type bridge 2>/dev/null || die 3 "cannot create a bridge (no bridge support?)"
    ip addr add "${SUBNET_BASE}.$s.254/24" dev "$br" || die 4 "cannot address the bridge"
    ip link set "$br" up || die 4 "cannot bring the bridge up"
    flock -u 9
    exec 9>&-
    export NETNS_HOST_ADDR="${SUBNET_BASE}.$s.254"
    for i in $(seq 1 "$n"); do
        local ns; ns=$(node_ns "$i")
        ip netns add "$ns" || die 4 "cannot create namespace $ns"
        ip link add "${NETNS_PREFIX}h$i" type veth peer name "${NETNS_PREFIX}n$i" 2>/dev/null ||
            die 3 "cannot create a veth pair (no veth support?)"
        ip link set "${NETNS_PREFIX}n$i" netns "$ns" &&
            ip link set "${NETNS_PREFIX}h$i" master "$br" &&
            ip link set "${NETNS_PREFIX}h$i" up &&
            ip -n "$ns" link set "${NETNS_PREFIX}n$i" name eth0 &&
            ip -n "$ns" addr add "${SUBNET_BASE}.$s.$i/24" dev eth0 &&
            ip -n "$ns" link set eth0 up &&
            ip -n "$ns" link set lo up || die 4 "cannot wire namespace $ns"
        export "NETNS_ADDR_$i=${SUBNET_BASE}.$s.$i"
    done
    echo "netns.sh: session $NETNS_PREFIX: $n nodes on ${SUBNET_BASE}.$s.0/24 (host .254)" >&2
    # COMMAND in a process group of its own, so a signal to the session
    # ends all of it (nothing left holding the test's output open).
    setsid "$@" <&0 &
    CMD_PID=$!
    wait "$CMD_PID"
    local rc=$?
    CMD_PID=""
    exit "$rc"
}

# ---- partitions ----

# Replace node $1's rules with drops to and from the addresses $2.. .
set_drops() {
    local i=$1; shift
    local ns; ns=$(node_ns "$i")
    ip netns exec "$ns" nft delete table inet "$NS_TABLE" 2>/dev/null
    [ $# -gt 0 ] || return 0
    local set; set=$(echo "$@" | tr ' ' ',')
    ip netns exec "$ns" nft -f - <<EOF || die 4 "nft refused the rules for node $i"
table inet $NS_TABLE {
    chain in { type filter hook input priority -10; policy accept; ip saddr { $set } drop; }
    chain out { type filter hook output priority -10; policy accept; ip daddr { $set } drop; }
}
EOF
}

cmd_heal() {
    need_session
    local i
    for i in $(seq 1 "$NETNS_N"); do set_drops "$i"; done
}

# split "A|B|..." where each group is a comma-separated list of node
# numbers (0 = host).
cmd_split() {
    [ $# -eq 1 ] || usage
    need_session
    local spec=$1 g=0 grp x i j
    declare -A group=()
    IFS='|' read -r -a groups <<<"$spec"
    [ "${#groups[@]}" -ge 2 ] || die 2 "split needs at least two groups: '$spec'"
    for grp in "${groups[@]}"; do
        g=$((g + 1))
        IFS=',' read -r -a members <<<"$grp"
        [ "${#members[@]}" -ge 1 ] || die 2 "empty group in '$spec'"
        for x in "${members[@]}"; do
            x=${x// /}
            case "$x" in ''|*[!0-9]*) die 2 "bad node '$x' in '$spec'" ;; esac
            [ "$x" -le "$NETNS_N" ] || die 2 "node $x not in 0..$NETNS_N"
            [ -z "${group[$x]:-}" ] || die 2 "node $x in two groups of '$spec'"
            group[$x]=$g
        done
    done
    for i in $(seq 1 "$NETNS_N"); do
        local drops=()
        if [ -n "${group[$i]:-}" ]; then
            for j in $(seq 0 "$NETNS_N"); do
                [ "$j" != "$i" ] && [ -n "${group[$j]:-}" ] && [ "${group[$j]}" != "${group[$i]}" ] &&
                    drops+=("$(addr_of "$j")")
            done
        fi
        set_drops "$i" "${drops[@]}"
    done
}

cmd_isolate() {
    [ $# -eq 1 ] || usage
    need_session
    need_node "$1"
    local others="" j
    for j in $(seq 0 "$NETNS_N"); do
        [ "$j" = "$1" ] || others="${others:+$others,}$j"
    done
    cmd_split "$1|$others"
}

cmd_flap() {
    [ $# -eq 3 ] || usage
    need_session
    need_node "$1"
    case "$2$3" in *[!0-9]*) die 2 "K and PERIOD_MS must be numbers" ;; esac
    local k half
    half=$(awk -v p="$3" 'BEGIN { printf "%.3f", p / 2000 }')
    for k in $(seq 1 "$2"); do
        cmd_isolate "$1"
        sleep "$half"
        cmd_heal
        sleep "$half"
    done
}

cmd_exec() {
    [ $# -ge 2 ] || usage
    need_session
    need_node "$1"
    local ns; ns=$(node_ns "$1"); shift
    exec ip netns exec "$ns" "$@"
}

cmd_status() {
    need_session
    local i
    for i in $(seq 1 "$NETNS_N"); do
        echo "node $i ($(addr_of "$i")):"
        ip netns exec "$(node_ns "$i")" nft list table inet "$NS_TABLE" 2>/dev/null |
            grep -o 'ip [sd]addr .* drop' | sed 's/^/  /' || true
    done
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in
    session) cmd_session "$@" ;;
    exec) cmd_exec "$@" ;;
    addr) [ $# -eq 1 ] || usage; need_session; [ "$1" = 0 ] || need_node "$1"; addr_of "$1" ;;
    isolate) cmd_isolate "$@" ;;
    split) cmd_split "$@" ;;
    heal) cmd_heal ;;
    flap) cmd_flap "$@" ;;
    status) cmd_status ;;
    cleanup) cmd_cleanup ;;
    -h|--help|help) usage ;;
    *) echo "netns.sh: unknown command '$cmd'" >&2; usage ;;
esac
