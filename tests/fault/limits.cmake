# Hostile peers against kvmuxd's limits (slowloris handshakes, settings
# floods, PING floods from many connections, the connection limit, sizes at
# the limit and one over), each while a normal client is served.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(limits_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/limits_test.c
    LIBS kvmux LABELS fault TIMEOUT 120)
endif()
