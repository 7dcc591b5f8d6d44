#!/bin/sh
# cluster_config_test.sh KVMUXD
# --cluster-group (docs/CLUSTER.md): refused without replicated mode, on
# the command line and in a config file; out of range refused; accepted
# with --replica-id/--peers. --check-config only: no process keeps running.
set -u
kvmuxd=$1
fail=0
peers=1=127.0.0.1:7001/127.0.0.1:7878
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# expect RC PATTERN ARGS...: exit status RC, and output containing PATTERN.
expect() {
  want_rc=$1 pat=$2; shift 2
  out=$("$kvmuxd" "$@" --check-config 2>&1); rc=$?
  if [ "$rc" -ne "$want_rc" ]; then
    echo "FAIL: kvmuxd $* --check-config: exit $rc, want $want_rc ($out)"; fail=1
  elif ! printf '%s\n' "$out" | grep -qF -- "$pat"; then
    echo "FAIL: kvmuxd $* --check-config: '$out' lacks '$pat'"; fail=1
  fi
}

expect 2 "--cluster-group needs replicated mode" --cluster-group 1
expect 2 "--cluster-group 65536 is out of range" --cluster-group 65536 --replica-id 1 --peers $peers
expect 2 "--cluster-group needs replicated mode" --cluster-group 65535
expect 0 "is valid" --cluster-group 65535 --replica-id 1 --peers $peers
expect 0 "is valid" --cluster-group 0

printf 'cluster-group 2\n' > "$tmp/a.conf"
expect 2 "--cluster-group needs replicated mode" --config "$tmp/a.conf"
printf 'cluster-group 2\nreplica-id 1\npeers %s\n' "$peers" > "$tmp/b.conf"
expect 0 "is valid" --config "$tmp/b.conf"

[ "$fail" -eq 0 ] && echo "cluster_config_test: ok"
exit $fail
