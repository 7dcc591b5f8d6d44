#!/bin/sh
# dist/kvmuxd.service passes `systemd-analyze verify` (with ExecStart
# pointed at the built kvmuxd, and the man: links, which only resolve once
# installed, left out), and its ExecStartPre check accepts the example
# configuration. Fails if systemd-analyze is missing (.ci/run installs
# systemd).
set -eu
src=$1
kvmuxd=$2
command -v systemd-analyze >/dev/null 2>&1 || {
  echo "systemd-analyze not found: install the Debian package systemd" >&2
  exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e "s|/usr/bin/kvmuxd|$kvmuxd|g" -e "s|/etc/kvmux/kvmuxd.conf|$src/dist/kvmuxd.conf|g" \
    -e '/^Documentation=/d' "$src/dist/kvmuxd.service" > "$tmp/kvmuxd.service"
grep -q '^Type=notify$' "$tmp/kvmuxd.service"
grep -q '^User=kvmux$' "$tmp/kvmuxd.service"
grep -q '^ProtectSystem=strict$' "$tmp/kvmuxd.service"
grep -q '^NoNewPrivileges=yes$' "$tmp/kvmuxd.service"
out=$(systemd-analyze verify "$tmp/kvmuxd.service" 2>&1) || { echo "$out" >&2; exit 1; }
# verify warns without failing for some problems: any line about the unit fails.
if printf '%s\n' "$out" | grep -q 'kvmuxd.service'; then echo "$out" >&2; exit 1; fi
# The unit's ExecStartPre line, as written, validates the example.
pre=$(sed -n 's/^ExecStartPre=//p' "$tmp/kvmuxd.service")
$pre
echo "kvmuxd.service: verified"
