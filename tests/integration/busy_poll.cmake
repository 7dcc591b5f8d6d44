# Busy polling (kvmuxd --busy-poll, kvmux_options.busy_poll_us) against
# the real kvmuxd: limits refused, traffic correct while both sides spin,
# the spin really happens after I/O and stops when idle, kill -9 while the
# reader spins fails every call promptly.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(busy_poll_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/busy_poll_test.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 120)
endif()
# Alone: a spinning kvmuxd does not yield its CPU by design, so with a second
# CPU-heavy test beside it on a 2-vCPU machine the 32 threads' traffic slowed
# from ~4 s to over the 120 s timeout. The test is about spinning when each
# spinner has a CPU, which is the only setting where busy polling is advised.
if(TEST busy_poll_test)
  set_tests_properties(busy_poll_test PROPERTIES RUN_SERIAL TRUE)
endif()
