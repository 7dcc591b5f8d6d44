#!/bin/sh
# check_options.sh PROGRAM PAGE
# Every long option PROGRAM --help lists (an option line: indented, then
# "--name" or "-x, --name") must be documented in the man page PAGE as
# "Fl -name" (mdoc). Keeps man/ current when an option is added.
set -eu
prog=$1 page=$2
help=$("$prog" --help 2>&1) || true
opts=$(printf '%s\n' "$help" |
       sed -n 's/^ \{1,\}\(-[A-Za-z0-9], \)\{0,1\}--\([a-z0-9][a-z0-9-]*\).*/\2/p' | sort -u)
[ -n "$opts" ] || { echo "FAIL: no options found in '$prog --help'"; exit 1; }
missing=
for o in $opts; do
  grep -Eq "Fl -$o( |$)" "$page" || missing="$missing --$o"
done
if [ -n "$missing" ]; then
  echo "FAIL: $(basename "$page") does not document:$missing"
  echo "(add an '.It Fl -NAME Ar VALUE' entry to $page; see man/README.md)"
  exit 1
fi
echo "$(basename "$prog"): all $(printf '%s\n' "$opts" | wc -l) long options are in $(basename "$page")"
