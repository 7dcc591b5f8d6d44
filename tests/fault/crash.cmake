# Crash test: cycles of kill -9 under write load with --aof --fsync always;
# after each restart every acknowledged write must be present. Raw v2
# sockets (no client library). KVMUX_CRASH_CYCLES (default 100) and
# KVMUX_CRASH_EVERYSEC_CYCLES (default 10, reported, not asserted) tune it.
if(TARGET kvmuxd)
  kvmux_add_test(crash_test
                 SOURCES fault/crash_test.c
                 LABELS fault TIMEOUT 300)
  target_include_directories(crash_test PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../integration)
endif()
