# The async API of libkvmux against the real kvmuxd: callbacks, futures,
# backpressure, timeouts, close and kill -9 with thousands pending, depth 64
# on one connection (threaded mode), and the same through the event-loop
# mode with the libuv adapter (Debian: libuv1-dev; without it
# async_loop_test fails, saying so).
# Labels integration;concurrent: they also run under TSan (KVMUX_TEST_SCALE
# lowers the op counts there).
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(async_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/async_test.c
            ${CMAKE_CURRENT_LIST_DIR}/async_util.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 240)

  find_path(KVMUX_LIBUV_INCLUDE uv.h)
  find_library(KVMUX_LIBUV_LIB uv)
  if(KVMUX_LIBUV_INCLUDE AND KVMUX_LIBUV_LIB)
    kvmux_add_test(async_loop_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/async_loop_test.c
              ${CMAKE_CURRENT_LIST_DIR}/async_util.c
              ${CMAKE_CURRENT_LIST_DIR}/loop_util.c
      LIBS kvmux ${KVMUX_LIBUV_LIB} LABELS integration concurrent TIMEOUT 240)
    target_include_directories(async_loop_test PRIVATE ${KVMUX_LIBUV_INCLUDE})
  else()
    kvmux_missing_dependency_test(async_loop_test
      "libuv not found (Debian: apt-get install libuv1-dev, then reconfigure)")
  endif()
endif()
