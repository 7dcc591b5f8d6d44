#!/usr/bin/env bash
# bench/group.sh: a replicated kvmux group (3 replicas on loopback) against
# a single kvmuxd, a Redis primary with 2 replicas and a 3-member etcd, the
# same workload on each, in one run, with the ratios issue 10 asks for.
#
# Runs, with 100-byte values over a preloaded key space:
#   kvmux single   kvmuxd --aof --fsync always          SET and GET, 1 connection x 64 in flight
#   kvmux group    3 x kvmuxd --replica-id (Raft log    SET and GET (linearizable), same shape,
#                  fsynced on every replica)             through libkvmux's endpoint list
#                                                        (+ stale GET, via the list and on a
#                                                        follower, when kvmux-bench has --stale)
#   redis          primary + 2 replicas, all             SET + `WAIT 1 0` (waitload), 1 x 64
#                  --appendonly yes --appendfsync always and 64 x 1; SET alone as the control
#   etcd           3 members (default flags, WAL          PUT, 1 and 64 connections (its
#                  fdatasync on each)                    JSON gateway has no pipelining)
# then memory per key (RSS growth over the preload / keys) of the single
# node and of the group's leader, and big values: the p99 of small SETs
# on a client while its other thread SETs (and GETs) a 64 MiB value, on
# the single node and on the group (the value replicates meanwhile).
#
# What bounds the figures: every process (3 servers and the client) shares
# the 2 cores and the one disk, so the group pays 3 fsyncs per round on one
# device and the CPU of 3 servers: the ratios are a same-box yardstick,
# not a capacity figure for 3 machines. Compare ratios from one run only.
#
# Usage: bench/group.sh [-k KVMUXD] [-d SECONDS] [-K KEYSPACE] [-o OUT] [--quick]
#   -k  kvmuxd binary (default ./build/kvmuxd; kvmux-bench, etcdload and
#       waitload are taken next to it)
#   -d  seconds per run (default 5; --quick: 1)
#   -K  keyspace (default 100000; --quick: 2000)
#   -o  also write the table and ratios to this file
#   --quick  short runs for a smoke test, no etcd (the figures are rough)
# Exit status: 0 done; 1 a server did not start or a run failed; 2 usage.
set -euo pipefail

KVMUXD="" SECS="" KEYSPACE="" OUT="" QUICK=0
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    -k) KVMUXD=$2; shift 2 ;;
    -d) SECS=$2; shift 2 ;;
    -K) KEYSPACE=$2; shift 2 ;;
    -o) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "group.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then : "${SECS:=1}" "${KEYSPACE:=2000}"; else : "${SECS:=5}" "${KEYSPACE:=100000}"; fi
# Big-value rounds: a BIG MiB SET + GET, HOLR times, HOLD s of idle small SETs first.
if [ "$QUICK" = 1 ]; then BIG=8 HOLR=2 HOLD=0.5; else BIG=64 HOLR=5 HOLD=2; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${KVMUXD:=$ROOT/build/kvmuxd}"
BIN=$(dirname "$KVMUXD")
KB=$BIN/kvmux-bench CLI=$BIN/kvmux-cli ETCDLOAD=$BIN/etcdload WAITLOAD=$BIN/waitload HOL=$BIN/hol_kvmux
for b in "$KVMUXD" "$KB" "$CLI" "$WAITLOAD" "$ETCDLOAD" "$HOL"; do
    [ -x "$b" ] || { echo "group.sh: $b not found: build first (cmake --build build)" >&2; exit 1; }
done
for c in redis-server redis-cli; do
    command -v $c >/dev/null || { echo "group.sh: $c not installed (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
[ "$QUICK" = 1 ] || command -v etcd >/dev/null ||
    { echo "group.sh: etcd not installed (apt-get install etcd-server)" >&2; exit 1; }
[[ "$("$KVMUXD" --help 2>&1)" == *--replica-id* ]] ||
    { echo "group.sh: $KVMUXD was built without replication (KVMUX_WITH_RAFT)" >&2; exit 1; }

. "$ROOT/bench/lib.sh"
bench_init group

jfield() { sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p" "$1" | head -1; }
ROWS=()
declare -A OPS P99
record() { # NAME FILE
    local ops p50 p99 errors
    ops=$(jfield "$2" ops_per_sec)
    [ -n "$ops" ] || bench_die "$1 printed no summary"
    errors=$(jfield "$2" errors)
    [ "${errors:-0}" = 0 ] || bench_die "$1: $errors errors"
    p50=$(jfield "$2" p50)
    p99=$(jfield "$2" p99)
    OPS[$1]=$ops P99[$1]=$p99
    ROWS+=("$(printf '| %-40s | %10.0f | %9.0f | %9.0f |' "$1" "$ops" "$p50" "$p99")")
    printf '  %-40s %10.0f ops/s  p50 %7.0f us  p99 %7.0f us\n' "$1" "$ops" "$p50" "$p99" >&2
}
# -h HOST -p PORT for one server, -h H:P,H:P,... for a group.
target() { if [[ "$1" == *,* ]]; then echo "-h $1"; else echo "-h ${1%:*} -p ${1##*:}"; fi; }
kbench() { # NAME HOSTS OP [extra args]: 1 connection x 64 in flight
    local name=$1 hosts=$2 op=$3
    shift 3
    # shellcheck disable=SC2046
    bench_run_tool "$BENCH_WORK/r.json" "$KB" $(target "$hosts") --op "$op" -c 1 --mode async --depth 64 \
        -k "$KEYSPACE" -s 100 -d "$SECS" --json -q "$@" || bench_die "kvmux-bench $name failed"
    record "$name" "$BENCH_WORK/r.json"
}
preload() { # HOSTS
    # shellcheck disable=SC2046
    bench_run_tool /dev/null "$KB" $(target "$1") --op get --preload -k "$KEYSPACE" -s 100 -n 1 \
        --mode async --depth 64 -q || bench_die "kvmux preload failed"
}

# ---- kvmux, one node, durable ------------------------------------------
bench_start_kvmuxd single "$KVMUXD" --threads 2 --aof "$BENCH_WORK/single.aof" --fsync always --max-value 128M
SPORT=$BENCH_PORT SPID=$BENCH_PID
rss0=$(bench_rss_kb "$SPID")
preload "127.0.0.1:$SPORT"
MEM_SINGLE=$(( ($(bench_rss_kb "$SPID") - rss0) * 1024 / KEYSPACE ))
kbench "kvmux single fsync-always set" "127.0.0.1:$SPORT" set
kbench "kvmux single get" "127.0.0.1:$SPORT" get
# Big values: 3-byte SETs one at a time on a client whose other thread
# moves a BIG MiB value (SET, then GET) -r times (bench/hol/hol_kvmux.c).
hol() { # NAME ARGS...: prints "NAME idle_p99 busy_p99 big_set_ms"
    local name=$1
    shift
    bench_run_tool "$BENCH_WORK/hol.txt" "$HOL" "$@" -w 1 -d "$HOLD" -r "$HOLR" -s "$BIG" ||
        bench_die "hol_kvmux $name failed"
    awk -F'\t' -v n="$name" '$1 == "RESULT" { p[$3] = $6; if ($3 == "busy") s = $9 }
        END { printf "%s\t%s\t%s\t%s\n", n, p["idle"], p["busy"], s }' "$BENCH_WORK/hol.txt" >>"$BENCH_WORK/hol.rows"
}
: >"$BENCH_WORK/hol.rows"
hol "single fsync-always" -p "$SPORT"
bench_stop "$SPID"

# ---- kvmux, 3 replicas ---------------------------------------------------
bench_start_group 3 "$KVMUXD" --threads 2 --max-value 128M
bench_wait_group "$CLI"
GHOSTS=$BENCH_GHOSTS
i=$(bench_group_member "$CLI" leader)
[ -n "$i" ] || bench_die "no leader found"
LPID=${BENCH_GPIDS[$i]}
rss0=$(bench_rss_kb "$LPID")
preload "$GHOSTS"
MEM_GROUP=$(( ($(bench_rss_kb "$LPID") - rss0) * 1024 / KEYSPACE ))
kbench "kvmux group set" "$GHOSTS" set
kbench "kvmux group get (linearizable)" "$GHOSTS" get
# Stale reads (REPLICATION.md "Stale reads"): through the endpoint list
# (the leader, which then skips the lease), and on a follower directly.
if [[ "$("$KB" --help 2>&1)" == *--stale* ]]; then
    kbench "kvmux group get (stale)" "$GHOSTS" get --stale
    i=$(bench_group_member "$CLI" follower)
    [ -n "$i" ] || bench_die "no follower found"
    FADDR=127.0.0.1:${BENCH_GPORTS[$i]}
    kbench "kvmux group get (stale, on a follower)" "$FADDR" get --stale
fi
hol "group of 3" -E "$GHOSTS"
bench_stop_group

# ---- Redis primary + 2 replicas, AOF always ------------------------------
bench_start_redis rp --appendonly yes --appendfsync always --dir "$BENCH_WORK"
RPORT=$BENCH_PORT
mkdir -p "$BENCH_WORK/rr1" "$BENCH_WORK/rr2"
bench_start_redis rr1 --appendonly yes --appendfsync always --dir "$BENCH_WORK/rr1" --replicaof 127.0.0.1 "$RPORT"
bench_start_redis rr2 --appendonly yes --appendfsync always --dir "$BENCH_WORK/rr2" --replicaof 127.0.0.1 "$RPORT"
for _ in $(seq 100); do
    [ "$(redis-cli -p "$RPORT" info replication | grep -c 'state=online')" = 2 ] && break
    sleep 0.1
done
[ "$(redis-cli -p "$RPORT" info replication | grep -c 'state=online')" = 2 ] || bench_die "redis replicas not online"
wload() { # NAME conns depth wait
    bench_run_tool "$BENCH_WORK/r.json" "$WAITLOAD" -p "$RPORT" -c "$2" --depth "$3" -w "$4" \
        -k "$KEYSPACE" -s 100 -d "$SECS" --json -q || bench_die "waitload $1 failed"
    record "$1" "$BENCH_WORK/r.json"
}
wload "redis set+WAIT 1 0, 1 conn x 64" 1 64 1
wload "redis set+WAIT 1 0, 64 conns x 1" 64 1 1
wload "redis set (no WAIT), 1 conn x 64" 1 64 0

if [ "$QUICK" = 0 ]; then
    declare -a EC EP EPIDS
    cluster=""
    for i in 1 2 3; do EC[$i]=$(bench_free_port); EP[$i]=$(bench_free_port); cluster+="${cluster:+,}m$i=http://127.0.0.1:${EP[$i]}"; done
    for i in 1 2 3; do
        etcd --name "m$i" --data-dir "$BENCH_WORK/m$i.etcd" \
            --listen-client-urls "http://127.0.0.1:${EC[$i]}" --advertise-client-urls "http://127.0.0.1:${EC[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${EP[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${EP[$i]}" \
            --initial-cluster "$cluster" --initial-cluster-token kvmux-bench --initial-cluster-state new \
            --logger zap --log-outputs stderr >"$BENCH_WORK/m$i.log" 2>&1 &
        EPIDS[$i]=$!
        bench_track "${EPIDS[$i]}"
    done
    bench_wait_ready "${EPIDS[1]}" bench_etcd_health "${EC[1]}" || { tail -5 "$BENCH_WORK/m1.log" >&2; bench_die "etcd did not start"; }
    for c in 1 64; do
        bench_run_tool "$BENCH_WORK/r.json" "$ETCDLOAD" -p "${EC[1]}" --op set -c "$c" -k "$KEYSPACE" \
            -s 100 -d "$SECS" --json -q || bench_die "etcdload -c $c failed"
        record "etcd 3 members put c$c" "$BENCH_WORK/r.json"
    done
    for i in 1 2 3; do bench_stop "${EPIDS[$i]}"; done
fi

ratio() { awk -v a="${OPS[$1]:-0}" -v b="${OPS[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
{
    echo "| run (100-byte values, keyspace $KEYSPACE, ${SECS} s) | ops/s | p50 us | p99 us |"
    echo "|---|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "ratios (one run; goals from issue 10 in brackets):"
    echo "  group SET / single fsync-always SET:        $(ratio 'kvmux group set' 'kvmux single fsync-always set')x  [>= 0.5]"
    echo "  group linearizable GET / single GET:        $(ratio 'kvmux group get (linearizable)' 'kvmux single get')x  [>= 0.75]"
    [ -n "${OPS['kvmux group get (stale)']:-}" ] &&
    echo "  group stale GET / single GET:               $(ratio 'kvmux group get (stale)' 'kvmux single get')x  [>= 0.95]"
    [ -n "${OPS['kvmux group get (stale, on a follower)']:-}" ] &&
    echo "  follower stale GET / single GET:            $(ratio 'kvmux group get (stale, on a follower)' 'kvmux single get')x  [>= 0.95]"
    echo "  group SET / redis SET+WAIT 1 0 (1 x 64):    $(ratio 'kvmux group set' 'redis set+WAIT 1 0, 1 conn x 64')x  [> 1]"
    echo "  group SET / redis SET+WAIT 1 0 (64 x 1):    $(ratio 'kvmux group set' 'redis set+WAIT 1 0, 64 conns x 1')x  [> 1]"
    [ "$QUICK" = 0 ] &&
    echo "  group SET / etcd 3 members PUT (64 conns):  $(ratio 'kvmux group set' 'etcd 3 members put c64')x  [> 1]"
    echo "memory per key (RSS growth over the preload / $KEYSPACE keys): single $MEM_SINGLE B, group leader $MEM_GROUP B"
    echo
    echo "small 3-byte SETs, one at a time, while another thread of the same client moves a $BIG MiB value (SET + GET, $HOLR rounds):"
    echo "| server | small SET p99 idle ms | small SET p99 during the big value ms | big SET ms (mean) |"
    echo "|---|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$BENCH_WORK/hol.rows"
} | tee "${OUT:-/dev/null}"
