# Automatic reconnect in threaded mode: kvmuxd killed
# (-9) and restarted on the same port, in-flight calls, calls during the
# outage (wait / fail fast), async backlog, backoff growth and cap, close
# during backoff, retry_reads, INCR never applied twice (AOF).
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(client_reconnect_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_reconnect_test.c
    LIBS kvmux LABELS integration concurrent fault TIMEOUT 120)
endif()

# Reconnect to a kvmuxd restarted with DIFFERENT limits (max value, key,
# frame) while several threads keep calling: the new limits apply to every
# call after the reconnect, without a data race (TSan: label concurrent).
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(client_reconnect_limits_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_reconnect_limits_test.c
    LIBS kvmux LABELS integration concurrent fault TIMEOUT 120)
endif()
