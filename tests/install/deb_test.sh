#!/bin/sh
# deb_test.sh SOURCE_DIR: build the Debian packages from a copy of the
# tree (dpkg-buildpackage -b -us -uc, offline; the build runs the unit
# tests only), check them with lintian (errors and warnings fail), install
# them with dpkg -i, and check what they installed: kvmuxd from the
# package started as the kvmux user and answering kvmux-cli from
# kvmux-tools, and tests/install/app.c built against libkvmux-dev with
# pkg-config and with find_package and run against it. The packages are
# purged at the end. Needs root (dpkg -i).
set -eu
src=$(cd "$1" && pwd)
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  dpkg --purge kvmuxd kvmux-tools libkvmux-dev libkvmux0 >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "-- $* ($(date -u +%H:%M:%S))"; }
[ "$(id -u)" = 0 ] || fail "needs root for dpkg -i"

step "dpkg-buildpackage -b -us -uc (copy of the tree)"
mkdir "$tmp/kvmux"
(cd "$src" && tar --exclude='./build*' --exclude='./obj-*' --exclude=./.git \
   --exclude=./debian/tmp -cf - .) | (cd "$tmp/kvmux" && tar -xf -)
(cd "$tmp/kvmux" && DEB_BUILD_OPTIONS="parallel=$(nproc)" \
   dpkg-buildpackage -b -us -uc >"$tmp/build.log" 2>&1) ||
  { tail -40 "$tmp/build.log"; fail "dpkg-buildpackage"; }
grep -E "tests passed|tests failed" "$tmp/build.log" || true

step "lintian"
lintian --fail-on error,warning "$tmp"/kvmux_*.changes || fail "lintian"

step "dpkg -i"
dpkg -i "$tmp"/kvmuxd_*.deb "$tmp"/kvmux-tools_*.deb "$tmp"/libkvmux0_*.deb \
        "$tmp"/libkvmux-dev_*.deb >/dev/null || fail "dpkg -i"
for f in /usr/bin/kvmuxd /usr/bin/kvmux-cli /usr/bin/kvmux-bench /usr/include/kvmux.h \
         /usr/share/man/man8/kvmuxd.8.gz /usr/share/man/man3/kvmux.3.gz; do
  [ -e "$f" ] || fail "not installed: $f"
done
getent passwd kvmux >/dev/null || fail "no kvmux system user"

step "kvmuxd from the package, as the kvmux user"
if [ -d /run/systemd/system ] && [ -e /lib/systemd/system/kvmuxd.service ]; then
  systemctl is-active --quiet kvmuxd || fail "kvmuxd.service is not active after install"
  echo "kvmuxd.service is active"
fi
runuser -u kvmux -- /usr/bin/kvmuxd --bind 127.0.0.1 --port 0 >"$tmp/kvmuxd.out" 2>"$tmp/kvmuxd.err" &
pid=$!
port= i=0
while [ $i -lt 100 ]; do
  port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/kvmuxd.out")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || fail "kvmuxd exited: $(cat "$tmp/kvmuxd.err")"
  sleep 0.1; i=$((i + 1))
done
[ -n "$port" ] || fail "no 'listening on' line from kvmuxd within 10 s"
kvmux-cli -p "$port" set deb:k packaged >/dev/null || fail "kvmux-cli set"
[ "$(kvmux-cli -p "$port" get deb:k)" = packaged ] || fail "kvmux-cli get"

step "an outside program against libkvmux-dev (pkg-config, find_package)"
cc -Wall -Wextra -Werror -o "$tmp/app_pc" "$src/tests/install/app.c" $(pkg-config --cflags --libs kvmux) ||
  fail "pkg-config build"
cmake -S "$src/tests/install" -B "$tmp/cmk" >/dev/null || fail "find_package configure"
cmake --build "$tmp/cmk" >/dev/null || fail "find_package build"
for app in "$tmp/app_pc" "$tmp/cmk/app_shared" "$tmp/cmk/app_static"; do
  timeout 20 "$app" 127.0.0.1 "$port" || fail "$(basename "$app")"
done
ldd "$tmp/app_pc" | grep -Eq "libkvmux.so.0 => (/usr)?/lib/" || fail "app_pc does not use the packaged libkvmux.so.0"
echo "deb_test: packages built, lintian clean, installed, kvmuxd answering: ok"
