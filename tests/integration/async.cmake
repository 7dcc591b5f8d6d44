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

# The libevent adapter with a real libevent loop. libevent-dev is a test
# dependency (CI installs it): without it the configure fails, so the test
# can never be skipped unseen.
if(TARGET kvmux AND TARGET kvmuxd)
  find_path(KVMUX_LIBEVENT_INCLUDE event2/event.h)
  find_library(KVMUX_LIBEVENT_LIB event_core)
  if(NOT KVMUX_LIBEVENT_INCLUDE OR NOT KVMUX_LIBEVENT_LIB)
    message(FATAL_ERROR "libevent not found: install libevent-dev (needed by the tests of include/kvmux/adapters/libevent.h)")
  endif()
  kvmux_add_test(async_libevent_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/async_libevent_test.c
    LIBS kvmux ${KVMUX_LIBEVENT_LIB} LABELS integration TIMEOUT 60)
  target_include_directories(async_libevent_test PRIVATE ${KVMUX_LIBEVENT_INCLUDE})
endif()

# The poll() example of the README, run against kvmuxd.
if(TARGET kvmux_example_poll AND TARGET kvmuxd)
  kvmux_add_test(example_poll_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/example_poll_test.c
    LABELS integration TIMEOUT 60)
  target_compile_definitions(example_poll_test PRIVATE
    KVMUX_EXAMPLE_POLL_PATH="$<TARGET_FILE:kvmux_example_poll>")
  add_dependencies(example_poll_test kvmux_example_poll)
endif()
