# Busy polling (kvmuxd --busy-poll, kvmux_options.busy_poll_us) against
# the real kvmuxd: limits refused, traffic correct while both sides spin,
# the spin really happens after I/O and stops when idle, kill -9 while the
# reader spins fails every call promptly.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(busy_poll_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/busy_poll_test.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 120)
endif()
