#!/bin/sh
# cluster_config_test.sh KVMUXD
# --cluster-group (docs/CLUSTER.md): refused without replicated mode, on
# the command line and in a config file; out of range refused; accepted
# with --replica-id/--peers. The map group options, TLS to it, and the
# migrate thread's options. --check-config only: no process keeps running.
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

# The map group (--cluster-map-group) and a data group's --cluster-map.
expect 2 "--cluster-map-group needs replicated mode" --cluster-map-group
expect 0 "is valid" --cluster-map-group --replica-id 1 --peers $peers
expect 2 "exclude each other" --cluster-map-group --cluster-group 1 --replica-id 1 --peers $peers
expect 2 "exclude each other" --cluster-map-group --cluster-map 127.0.0.1:7000 --replica-id 1 --peers $peers
expect 2 "--cluster-map needs --cluster-group" --cluster-map 127.0.0.1:7000 --replica-id 1 --peers $peers
expect 0 "is valid" --cluster-group 1 --cluster-map 127.0.0.1:7000,[::1]:7001,localhost:7002 --replica-id 1 --peers $peers
expect 2 "is not host:port" --cluster-group 1 --cluster-map 127.0.0.1 --replica-id 1 --peers $peers
expect 2 "is not host:port" --cluster-group 1 --cluster-map 127.0.0.1:7000, --replica-id 1 --peers $peers
expect 2 "is not host:port" --cluster-group 1 --cluster-map "" --replica-id 1 --peers $peers
many=$(i=0; while [ $i -lt 65 ]; do printf '127.0.0.1:%d,' $((7000 + i)); i=$((i + 1)); done)
expect 2 "more than 64 endpoints" --cluster-group 1 --cluster-map "${many%,}" --replica-id 1 --peers $peers
printf 'cluster-map-group yes\nreplica-id 1\npeers %s\n' "$peers" > "$tmp/c.conf"
expect 0 "is valid" --config "$tmp/c.conf"
printf 'cluster-group 3\ncluster-map 127.0.0.1:7000\nreplica-id 1\npeers %s\n' "$peers" > "$tmp/d.conf"
expect 0 "is valid" --config "$tmp/d.conf"

# The migrate thread's timeouts (docs/MIGRATION.md 8.2, 10.3): bounds at
# and past each end, on the command line and in a config file.
dg="--cluster-group 1 --cluster-map 127.0.0.1:7000 --replica-id 1 --peers $peers"
expect 0 "is valid" $dg --migrate-stall-timeout 1000 --migrate-fence-timeout 500
expect 0 "is valid" $dg --migrate-stall-timeout 3600000 --migrate-fence-timeout 60000
expect 2 "--migrate-stall-timeout 999 is out of range (1000..3600000)" $dg --migrate-stall-timeout 999
expect 2 "--migrate-stall-timeout 3600001 is out of range" $dg --migrate-stall-timeout 3600001
expect 2 "--migrate-fence-timeout 499 is out of range (500..60000)" $dg --migrate-fence-timeout 499
expect 2 "--migrate-fence-timeout 60001 is out of range" $dg --migrate-fence-timeout 60001
expect 2 "--migrate-stall-timeout" $dg --migrate-stall-timeout 5s
expect 2 "invalid value for --migrate-thread" $dg --migrate-thread maybe
printf 'migrate-stall-timeout 1500\nmigrate-fence-timeout 750\n' > "$tmp/m.conf"
expect 0 "is valid" $dg --config "$tmp/m.conf"
printf 'migrate-fence-timeout 60001\n' > "$tmp/n.conf"
expect 2 "--migrate-fence-timeout 60001 is out of range" $dg --config "$tmp/n.conf"

# TLS to the map group (--cluster-map-tls): all or nothing, files readable.
dg="--cluster-group 1 --cluster-map 127.0.0.1:7000 --replica-id 1 --peers $peers"
: > "$tmp/ca.pem"; : > "$tmp/c.pem"; : > "$tmp/c.key"
expect 2 "--cluster-map-tls is no" $dg --cluster-map-tls-ca "$tmp/ca.pem"
expect 2 "--cluster-map-tls needs --cluster-map" --cluster-map-tls yes --cluster-group 1 --replica-id 1 --peers $peers
if "$kvmuxd" $dg --cluster-map-tls yes --check-config 2>&1 | grep -q "built without TLS"; then
  echo "cluster_config_test: kvmuxd built without TLS: only the refusal is checked"
else
  expect 2 "needs the CA" $dg --cluster-map-tls yes
  expect 0 "is valid" $dg --cluster-map-tls yes --cluster-map-tls-ca "$tmp/ca.pem"
  expect 0 "is valid" $dg --cluster-map-tls yes --tls-ca "$tmp/ca.pem" --tls-cert "$tmp/c.pem" --tls-key "$tmp/c.key"
  expect 0 "is valid" $dg --cluster-map-tls yes --peer-tls yes --peer-tls-ca "$tmp/ca.pem" --peer-tls-cert "$tmp/c.pem" --peer-tls-key "$tmp/c.key"
  expect 2 "needs its key" $dg --cluster-map-tls yes --cluster-map-tls-ca "$tmp/ca.pem" --cluster-map-tls-cert "$tmp/c.pem"
  expect 0 "is valid" $dg --cluster-map-tls yes --cluster-map-tls-ca "$tmp/ca.pem" --cluster-map-tls-cert "$tmp/c.pem" --cluster-map-tls-key "$tmp/c.key"
  expect 2 "cannot read $tmp/none.pem" $dg --cluster-map-tls yes --cluster-map-tls-ca "$tmp/none.pem"
  printf 'cluster-group 3\ncluster-map 127.0.0.1:7000\ncluster-map-tls yes\ncluster-map-tls-ca %s\nreplica-id 1\npeers %s\n' "$tmp/ca.pem" "$peers" > "$tmp/e.conf"
  expect 0 "is valid" --config "$tmp/e.conf"
fi

[ "$fail" -eq 0 ] && echo "cluster_config_test: ok"
exit $fail
