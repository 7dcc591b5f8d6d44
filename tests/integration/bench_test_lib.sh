# Shared by the bench smoke tests written as shell scripts (sourced; bash).
# check DESCRIPTION COMMAND...: run COMMAND, count it in $passed / $failed,
# say FAIL on stderr when it fails.
passed=0
failed=0
check() {
    local what=$1
    shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what" >&2; fi
}

# bench_test_copy_bins DIR KVMUXD KVMUX_BENCH KVMUX_CLI: the three binaries
# into DIR (the bench scripts find kvmux-bench and kvmux-cli next to
# kvmuxd), so that the servers a run started can be found by path.
bench_test_copy_bins() {
    cp "$2" "$1/kvmuxd" && cp "$3" "$1/kvmux-bench" && cp "$4" "$1/kvmux-cli" ||
        { echo "FAIL: cannot copy the binaries" >&2; exit 1; }
}

# fields_positive LINE NAME...: 0 if every NAME=VALUE field of LINE
# (space-separated) is present with a value > 0.
fields_positive() {
    local line=$1
    shift
    awk -v l="$line" -v names="$*" 'BEGIN {
        n = split(l, f, " "); k = split(names, want, " "); ok = 0
        for (j = 1; j <= k; j++)
            for (i = 1; i <= n; i++) {
                split(f[i], kv, "=")
                if (kv[1] == want[j] && kv[2] + 0 > 0) { ok++; break }
            }
        exit ok == k ? 0 : 1 }'
}
