# libkvmux against a scripted in-process fake server (no kvmuxd needed):
# protocol errors, ERROR frames, refused/silent handshakes, out-of-order and
# unknown-id replies, server PINGs, a server that never reads.
if(TARGET kvmux)
  kvmux_add_test(client_fake_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_fake_test.c
            ${CMAKE_CURRENT_LIST_DIR}/client_v2_fake.c
    LIBS kvmux LABELS fault concurrent TIMEOUT 60)
endif()
