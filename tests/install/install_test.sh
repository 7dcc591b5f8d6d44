#!/bin/sh
# install_test.sh BUILD_DIR SOURCE_DIR
# Install BUILD_DIR into a temporary prefix, then, using only that prefix:
# build tests/install/app.c with pkg-config and with find_package (shared
# and static), start the installed kvmuxd on an ephemeral port and run
# each program against it (SET then GET). Also checks that the man pages,
# the adapters and the package files are in place. Everything it starts
# it stops by pid; everything it writes is under one temporary directory.
set -eu
build=$1 src=$2
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
t0=$(date +%s)

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null

for f in bin/kvmuxd bin/kvmux-cli bin/kvmux-bench include/kvmux.h \
         include/kvmux/adapters/libuv.h lib/libkvmux.so lib/libkvmux.a \
         lib/pkgconfig/kvmux.pc lib/cmake/kvmux/kvmuxConfig.cmake \
         lib/cmake/kvmux/kvmuxConfigVersion.cmake \
         share/man/man8/kvmuxd.8 share/man/man1/kvmux-cli.1 \
         share/man/man1/kvmux-bench.1 share/man/man3/kvmux.3 share/man/man5/kvmuxd.conf.5; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
# Whatever dist/ holds (dist/README.md says where each kind goes).
for f in "$src"/dist/*; do
  case $f in
    *.service) want=lib/systemd/system ;;
    *.conf) want=etc/kvmux ;;
    */README.md|"$src/dist/*") continue ;;
    *) want=share/doc/kvmux/examples ;;
  esac
  [ -e "$prefix/$want/$(basename "$f")" ] || fail "dist/$(basename "$f") not installed in $want"
done
soname=$(objdump -p "$prefix/lib/libkvmux.so" | awk '$1 == "SONAME" { print $2 }')
[ "$soname" = libkvmux.so.0 ] || fail "SONAME is '$soname'"

# pkg-config, as the README says.
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc -Wall -Wextra -Werror -o "$tmp/app_pc" "$src/tests/install/app.c" \
   $(pkg-config --cflags --libs kvmux) || fail "pkg-config build"
# find_package, shared and static.
cmake -S "$src/tests/install" -B "$tmp/cmk" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" >/dev/null || fail "find_package configure"
cmake --build "$tmp/cmk" >/dev/null || fail "find_package build"
# The shared builds must run on the installed libkvmux.so.0, not another.
LD_LIBRARY_PATH="$prefix/lib" ldd "$tmp/app_pc" | grep -q "libkvmux.so.0 => $prefix/lib/" ||
  fail "app_pc does not load $prefix/lib/libkvmux.so.0"
if ldd "$tmp/cmk/app_static" | grep -q libkvmux; then fail "app_static loads libkvmux.so"; fi

# The installed server, on an ephemeral loopback port.
"$prefix/bin/kvmuxd" --bind 127.0.0.1 --port 0 >"$tmp/kvmuxd.out" 2>"$tmp/kvmuxd.err" &
pid=$!
port=
i=0
while [ $i -lt 100 ]; do
  port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/kvmuxd.out")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || fail "kvmuxd exited: $(cat "$tmp/kvmuxd.err")"
  sleep 0.1
  i=$((i + 1))
done
[ -n "$port" ] || fail "kvmuxd printed no 'listening on' line within 10 s"

for app in "$tmp/app_pc" "$tmp/cmk/app_shared" "$tmp/cmk/app_static"; do
  LD_LIBRARY_PATH="$prefix/lib" timeout 20 "$app" 127.0.0.1 "$port" || fail "$(basename "$app")"
done
# And the installed CLI against it.
out=$(timeout 20 "$prefix/bin/kvmux-cli" -p "$port" get install:greeting) || fail "kvmux-cli get"
[ "$out" = "hello from an installed libkvmux" ] || fail "kvmux-cli got '$out'"

kill "$pid"
wait "$pid" || fail "kvmuxd exit status $? after SIGTERM"
pid=
echo "install_test: pkg-config, find_package (shared, static) and the CLI against the installed kvmuxd: ok ($(( $(date +%s) - t0 )) s)"
