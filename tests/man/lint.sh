#!/bin/sh
# lint.sh PAGE...: mandoc -Tlint, failing on any warning or error (style
# notes such as "referenced manual not found" are below that level).
set -eu
command -v mandoc >/dev/null 2>&1 || {
  echo "FAIL: mandoc is not installed (Debian: apt-get install mandoc)"; exit 1; }
mandoc -Tlint -W warning "$@"
echo "mandoc -Tlint -W warning: $# pages clean"
