# libkvmux and kvmux-cli against the real kvmuxd: kvmux_stats (STATS,
# opcode 7) and kvmux_options.auth_token / kvmux-cli --auth (HELLO auth).
if(TARGET kvmux-cli AND TARGET kvmuxd)
  kvmux_add_test(client_stats_auth_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_stats_auth_test.c
    LIBS kvmux
    LABELS integration
    TIMEOUT 60)
endif()
