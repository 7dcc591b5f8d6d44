# STATS (opcode 7) over raw sockets: counters move as the traffic says.
if(TARGET kvmuxd)
  kvmux_add_test(stats_test SOURCES integration/stats_test.c
                 LABELS integration TIMEOUT 60)
endif()
