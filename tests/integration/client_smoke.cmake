# The client engineer's own smoke test of libkvmux against the real kvmuxd:
# every op, 8 threads x 1000 ops, timeouts/tombstones, close and kill -9
# with callers waiting. Skipped until both the client and kvmuxd exist.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(client_smoke
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_smoke.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 120)
endif()
