# Client-side faults of protocol v2: kill -9 and
# SIGSTOP of the real kvmuxd in the middle of 64 MiB fragmented transfers,
# and against the scripted fake server (client_v2_fake.c) a peer that never
# grants window, a socket half-closed in the middle of a fragmented reply,
# and replies racing the caller's timeout.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(client_v2_fault_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_v2_fault_test.c
            ${CMAKE_CURRENT_LIST_DIR}/client_v2_fake.c
    LIBS kvmux LABELS fault concurrent TIMEOUT 120)
endif()
