#!/usr/bin/env bash
# lincheck_cli_test: kvmux-lincheck on the hand-made histories of this
# directory. good.txt must pass (exit 0); each bad one must fail (exit 1)
# and name its violation kind in the "by kind" line, so a checker that
# flags the right history for the wrong reason fails too.
# Usage: check.sh KVMUX_LINCHECK
set -u
LC=$1
DIR=$(cd "$(dirname "$0")" && pwd)
fail=0
"$LC" -q "$DIR/good.txt" >/dev/null || { echo "FAIL: good.txt not linearizable"; fail=1; }
while read -r file kind; do
    out=$("$LC" -q "$DIR/$file")
    rc=$?
    if [ "$rc" != 1 ]; then
        echo "FAIL: $file: exit $rc, want 1"; fail=1
    elif ! grep -q "by kind:.*$kind=" <<<"$out"; then
        echo "FAIL: $file: no '$kind' violation in: $out"; fail=1
    else
        echo "ok: $file flagged: $kind"
    fi
done <<'LIST'
lost_write.txt lost write
stale_read.txt stale read
applied_twice.txt duplicate write
phantom_read.txt phantom read
double_incr.txt counter
LIST
exit $fail
