# kvmuxd over raw sockets (no client library): handshake, every opcode,
# out-of-order WAIT, credits/BUSY, limits, errors, shutdown.
if(TARGET kvmuxd)
  kvmux_add_test(server_smoke SOURCES integration/server_smoke.c
                 LABELS integration TIMEOUT 120)
endif()
