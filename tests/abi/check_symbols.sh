#!/bin/sh
# check_symbols.sh LIB EXPECTED HEADER
# LIB's dynamic symbol table (defined symbols) must equal EXPECTED, one
# name per line, sorted; every name in EXPECTED must be declared as a
# function in HEADER. Prints the difference on failure.
set -eu
lib=$1 expected=$2 header=$3
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
nm -D --defined-only "$lib" | awk 'NF == 3 { print $3 }' | sort -u > "$tmp"
if ! diff -u "$expected" "$tmp"; then
  echo "FAIL: libkvmux.so exports differ from $expected (- expected, + exported)."
  echo "A new public function: declare it in include/kvmux.h and add it to the list."
  echo "Anything else exported is an internal symbol leaking out of the library."
  echo "To accept the new list (public functions only):"
  echo "  nm -D --defined-only $lib | awk 'NF == 3 { print \$3 }' | sort -u > tests/abi/kvmux.symbols"
  echo "and add each new symbol to debian/libkvmux0.symbols with the release that adds it."
  exit 1
fi
missing=0
while read -r sym; do
  if ! grep -q "[ *]$sym(" "$header"; then
    echo "FAIL: $sym is exported but not declared in $header"
    missing=1
  fi
done < "$expected"
[ "$missing" = 0 ] || exit 1
echo "abi_symbols_test: $(wc -l < "$tmp") exported symbols, as expected"
