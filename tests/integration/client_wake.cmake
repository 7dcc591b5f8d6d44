# The blocking-call wake path (futex wait records, wake chains, the
# chain tail's writer kick) against the real kvmuxd from many threads:
# results never cross calls, timeouts racing completion, close and
# connection loss with 64 blocked callers.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(client_wake_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_wake_test.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 180)
endif()
