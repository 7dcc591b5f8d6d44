# The async client's out-of-memory completion paths against the real
# kvmuxd: a callback request lives in its pending slot, and when no
# completion record can be allocated the slot itself carries the reply
# (parked), and deadlines and cancels are retried. A test hook in
# src/client (kvmux__test_done_fail, internal) simulates the failures.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(client_park_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_park_test.c
            ${CMAKE_CURRENT_LIST_DIR}/async_util.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 120)
endif()
