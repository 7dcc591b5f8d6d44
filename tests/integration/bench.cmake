# kvmux-bench smoke test: the real kvmux-bench binary against the real kvmuxd
# on an ephemeral port, for about a second per case. Checks that the summary
# parses and is sane (> 0 ops, 0 errors), not how fast anything is.
if(TARGET kvmux-bench AND TARGET kvmuxd)
  kvmux_add_test(bench_smoke_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_smoke_test.c
    LABELS integration
    TIMEOUT 120)
  target_compile_definitions(bench_smoke_test PRIVATE
    KVMUX_BENCH_PATH="$<TARGET_FILE:kvmux-bench>")
  add_dependencies(bench_smoke_test kvmux-bench kvmuxd)
endif()
