# kvmuxd protocol v2 over raw sockets (no client library): negotiation and
# v1 compatibility, fragmented uploads and responses interleaved with small
# requests, windows (a client that never grants), CANCEL, DEADLINE,
# violations; then the fault side: GOAWAY on SIGTERM with requests in
# flight, idle and write timeouts, PING/CANCEL floods, a client killed in
# the middle of an upload; and several threads on a multi-loop server.
if(TARGET kvmuxd)
  kvmux_add_test(server_v2_test
                 SOURCES integration/server_v2_test.c
                 LABELS integration fault TIMEOUT 120)
endif()
if(TARGET kvmuxd)
  kvmux_add_test(server_v2_fault_test
                 SOURCES integration/server_v2_fault_test.c
                 LABELS integration fault TIMEOUT 120)
endif()
if(TARGET kvmuxd)
  kvmux_add_test(server_v2_concurrent_test
                 SOURCES integration/server_v2_concurrent_test.c
                 LABELS integration concurrent TIMEOUT 120)
endif()
# Where kvmuxd once departed from docs/PROTOCOL.md: TOO_LARGE against the
# client's MAX_VALUE_SIZE, the shape of TIMEOUT for DEADLINE 0, the
# request_id of ERRORs about malformed non-REQUEST frames, the --maxmemory
# floor.
if(TARGET kvmuxd)
  kvmux_add_test(conform_test
                 SOURCES integration/conform_test.c
                 LABELS integration TIMEOUT 120)
endif()
