#!/usr/bin/env bash
# bench/etcd.sh: kvmuxd vs etcd on one machine, the same workload on both,
# in one run, with the ratios.
#
# Starts a single-member etcd (data directory in the work directory, client
# and peer ports picked free on 127.0.0.1), a kvmuxd without persistence
# and a kvmuxd with --aof --fsync always (etcd fsyncs its WAL before it
# acknowledges each write, so that is the like-for-like durable write),
# then runs, for SET (etcd: PUT) and GET (etcd: RANGE of one key) of
# 100-byte values over a preloaded keyspace:
#   etcdload    -c 1   and -c 64    (etcd's v3 JSON gateway, HTTP/1.1
#                                    keep-alive, one request in flight per
#                                    connection: all etcd allows over HTTP)
#   kvmux-bench --mode serial -c 1 and -c 64   (the same shape on kvmux)
#   kvmux-bench --mode async --depth 64 -c 1   (what kvmux adds: 64 in
#                                    flight on one connection)
# and prints one table (ops/s, p50 and p99 in microseconds) and the ratios
# kvmux / etcd for the same shape and durability.
#
# What bounds each figure: etcd's writes go through Raft (one member: a WAL
# append and fsync per batch) and its gateway translates JSON/HTTP to gRPC
# in process; its reads are linearizable by default (a ReadIndex round per
# batch). kvmuxd without --aof keeps data in memory only; with --fsync
# always it group-commits (one fdatasync for the writes that arrived
# together), as etcd's WAL does. On a shared 2-core machine the load
# generator and the server compete for the cores: compare ratios from one
# run only.
#
# All servers are stopped (by PID) on exit, whatever happens (bench/lib.sh).
#
# Usage: bench/etcd.sh [-k KVMUXD] [-b KVMUX_BENCH] [-e ETCDLOAD] [-d SECONDS]
#                      [-K KEYSPACE] [-o OUT.md] [--quick]
#   -k  kvmuxd binary (default ./build/kvmuxd)
#   -b  kvmux-bench binary (default next to kvmuxd)
#   -e  etcdload binary (default next to kvmuxd)
#   -d  seconds per run (default 5; --quick: 0.5)
#   -K  keyspace (default 10000; --quick: 1000)
#   -o  also write the table and ratios to this file
#   --quick  short runs for a smoke test (the figures are then rough)
# Exit status: 0 done; 1 a server did not start or a run failed; 2 usage.
set -euo pipefail

KVMUXD="" KVMUX_BENCH="" ETCDLOAD="" SECS="" KEYSPACE="" OUT="" QUICK=0
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
    -k) KVMUXD=$2; shift 2 ;;
    -b) KVMUX_BENCH=$2; shift 2 ;;
    -e) ETCDLOAD=$2; shift 2 ;;
    -d) SECS=$2; shift 2 ;;
    -K) KEYSPACE=$2; shift 2 ;;
    -o) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "etcd.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then : "${SECS:=0.5}" "${KEYSPACE:=1000}"; else : "${SECS:=5}" "${KEYSPACE:=10000}"; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${KVMUXD:=$ROOT/build/kvmuxd}"
: "${KVMUX_BENCH:=$(dirname "$KVMUXD")/kvmux-bench}"
: "${ETCDLOAD:=$(dirname "$KVMUXD")/etcdload}"
for b in "$KVMUXD" "$KVMUX_BENCH" "$ETCDLOAD"; do
    [ -x "$b" ] || { echo "etcd.sh: $b not found: build first (cmake --build build)" >&2; exit 1; }
done
command -v etcd >/dev/null || { echo "etcd.sh: etcd not installed (Debian: apt-get install etcd-server)" >&2; exit 1; }

. "$ROOT/bench/lib.sh"
bench_init etcd

start_etcd() {
    local _ cport pport
    for _ in 1 2 3; do
        cport=$(bench_free_port)
        pport=$(bench_free_port)
        [ -n "$cport" ] && [ -n "$pport" ] && [ "$cport" != "$pport" ] || continue
        rm -rf "$BENCH_WORK/etcd-data"
        etcd --name bench --data-dir "$BENCH_WORK/etcd-data" \
            --listen-client-urls "http://127.0.0.1:$cport" \
            --advertise-client-urls "http://127.0.0.1:$cport" \
            --listen-peer-urls "http://127.0.0.1:$pport" \
            --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
            --initial-cluster "bench=http://127.0.0.1:$pport" \
            --logger zap --log-outputs stderr >"$BENCH_WORK/etcd.log" 2>&1 &
        BENCH_PID=$!
        bench_track "$BENCH_PID"
        if bench_wait_ready "$BENCH_PID" bench_etcd_health "$cport"; then
            EPORT=$cport
            EPID=$BENCH_PID
            return 0
        fi
        bench_stop "$BENCH_PID"
    done
    tail -20 "$BENCH_WORK/etcd.log" >&2
    bench_die "etcd did not start"
}

jfield() { sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p" "$1" | head -1; }

ROWS=()
declare -A OPS
# record NAME FILE: one table row from a JSON summary.
record() {
    local ops p50 p99 errors
    ops=$(jfield "$2" ops_per_sec)
    [ -n "$ops" ] || bench_die "$1 printed no summary"
    errors=$(jfield "$2" errors)
    [ "${errors:-0}" = 0 ] || bench_die "$1: $errors errors"
    p50=$(jfield "$2" p50)
    p99=$(jfield "$2" p99)
    OPS[$1]=$ops
    ROWS+=("$(printf '| %-34s | %10.0f | %9.0f | %9.0f |' "$1" "$ops" "$p50" "$p99")")
    printf '  %-34s %10.0f ops/s  p50 %7.0f us  p99 %7.0f us\n' "$1" "$ops" "$p50" "$p99" >&2
}

run_etcd() { # op conns
    bench_run_tool "$BENCH_WORK/r.json" "$ETCDLOAD" -p "$EPORT" --op "$1" -c "$2" \
        -k "$KEYSPACE" -s 100 -d "$SECS" --json -q || bench_die "etcdload --op $1 -c $2 failed"
    record "etcd $1 c$2" "$BENCH_WORK/r.json"
}

run_kvmux() { # label port op mode conns depth
    local args=(-h 127.0.0.1 -p "$2" --op "$3" -c "$5" -k "$KEYSPACE" -s 100 -d "$SECS" --json -q)
    if [ "$4" = async ]; then args+=(--mode async --depth "$6"); else args+=(--mode serial); fi
    bench_run_tool "$BENCH_WORK/r.json" "$KVMUX_BENCH" "${args[@]}" ||
        bench_die "kvmux-bench ${args[*]} failed"
    record "$1 $3 c$5$([ "$4" = async ] && echo " depth $6")" "$BENCH_WORK/r.json"
}

preload() { # port: SET every key once (kvmux-bench --preload runs unmeasured)
    bench_run_tool /dev/null "$KVMUX_BENCH" -h 127.0.0.1 -p "$1" --op get --preload -k "$KEYSPACE" \
        -s 100 -n 1 -q || bench_die "kvmux preload failed"
}

echo "etcd.sh: $(etcd --version | head -1), kvmuxd $("$KVMUXD" --version | awk '{print $2}'), ${SECS}s per run, keyspace $KEYSPACE, 100-byte values" >&2
start_etcd
bench_run_tool /dev/null "$ETCDLOAD" -p "$EPORT" --op get -c 8 --preload -k "$KEYSPACE" -n 1 -q ||
    bench_die "etcd preload failed"
for op in set get; do for c in 1 64; do run_etcd "$op" "$c"; done; done
bench_stop "$EPID"

bench_start_kvmuxd mem "$KVMUXD" --threads 2
KPORT=$BENCH_PORT KPID=$BENCH_PID
preload "$KPORT"
for op in set get; do
    run_kvmux kvmux "$KPORT" "$op" serial 1 1
    run_kvmux kvmux "$KPORT" "$op" serial 64 1
    run_kvmux kvmux "$KPORT" "$op" async 1 64
done
bench_stop "$KPID"

bench_start_kvmuxd fsync "$KVMUXD" --threads 2 --aof "$BENCH_WORK/kvmux.aof" --fsync always
FPORT=$BENCH_PORT
for c in 1 64; do run_kvmux "kvmux fsync-always" "$FPORT" set serial "$c" 1; done
run_kvmux "kvmux fsync-always" "$FPORT" set async 1 64

ratio() { awk -v a="${OPS[$1]}" -v b="${OPS[$2]}" 'BEGIN { printf "%.1f", (b > 0 ? a / b : 0) }'; }
{
    echo "| run (100-byte values, keyspace $KEYSPACE, ${SECS} s) | ops/s | p50 us | p99 us |"
    echo "|---|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "ratios (kvmux / etcd, same connections, one request in flight each):"
    echo "  reads   c1: $(ratio 'kvmux get c1' 'etcd get c1')x   c64: $(ratio 'kvmux get c64' 'etcd get c64')x"
    echo "  writes  c1: $(ratio 'kvmux set c1' 'etcd set c1')x   c64: $(ratio 'kvmux set c64' 'etcd set c64')x   (kvmux in memory)"
    echo "  durable writes (kvmuxd --fsync always)  c1: $(ratio 'kvmux fsync-always set c1' 'etcd set c1')x   c64: $(ratio 'kvmux fsync-always set c64' 'etcd set c64')x"
    echo "  kvmux 1 connection x 64 in flight vs etcd 64 connections:"
    echo "    reads $(ratio 'kvmux get c1 depth 64' 'etcd get c64')x   durable writes $(ratio 'kvmux fsync-always set c1 depth 64' 'etcd set c64')x"
} | tee "${OUT:-/dev/null}"
