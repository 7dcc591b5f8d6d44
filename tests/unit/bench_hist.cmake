# Unit test of kvmux-bench's latency histogram (tools/kvmux-bench/hist.c):
# known distributions -> percentiles within the bucket precision. No sockets.
kvmux_add_test(bench_hist_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_hist_test.c
          ${PROJECT_SOURCE_DIR}/tools/kvmux-bench/hist.c
  LABELS unit TIMEOUT 60)
target_include_directories(bench_hist_test PRIVATE ${PROJECT_SOURCE_DIR}/tools/kvmux-bench)
