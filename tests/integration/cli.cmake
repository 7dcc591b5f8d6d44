# kvmux-cli end to end: the real kvmux-cli binary, run as a child process,
# against the real kvmuxd on an ephemeral port.
if(TARGET kvmux-cli AND TARGET kvmuxd)
  kvmux_add_test(cli_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/cli_test.c
    LABELS integration
    TIMEOUT 120)
endif()
