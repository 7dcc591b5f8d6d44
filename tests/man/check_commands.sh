#!/bin/sh
# check_commands.sh KVMUX_CLI PAGE
# Every command "KVMUX_CLI help" lists (from kvmux-cli's command table,
# the same one Tab completion and hints use) must have its entry in the
# man page PAGE as ".It Cm NAME" (mdoc). Keeps kvmux-cli(1) current when
# a command is added to the table.
set -eu
cli=$1 page=$2
list=$("$cli" help 2>&1) || { echo "FAIL: '$cli help' failed: $list"; exit 1; }
# "  name ARGS   description" and "  quit, exit   ...": the words before
# the arguments, commas dropped.
names=$(printf '%s\n' "$list" | sed -n 's/^  \([a-z][a-z_-]*\)\(, \([a-z][a-z_-]*\)\)\{0,1\}.*/\1 \3/p')
[ -n "$names" ] || { echo "FAIL: no commands found in '$cli help'"; exit 1; }
missing= n=0
for c in $names; do
  n=$((n + 1))
  grep -Eq "^\.It Cm $c( |$)|^\.It Cm .*, $c( |$)|^\.It Cm [a-z]+ , $c( |$)" "$page" || missing="$missing $c"
done
if [ -n "$missing" ]; then
  echo "FAIL: $(basename "$page") does not document the commands:$missing"
  echo "(add an '.It Cm NAME Ar args' entry to its Commands list; see man/README.md)"
  exit 1
fi
echo "$(basename "$cli"): all $n commands are in $(basename "$page")"
