# kvmux-cli end to end: the real kvmux-cli binary, run as a child process,
# against the real kvmuxd on an ephemeral port.
if(TARGET kvmux-cli AND TARGET kvmuxd)
  kvmux_add_test(cli_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/cli_test.c
    LIBS kvmux
    LABELS integration
    TIMEOUT 120)
endif()

# The prompt on a real terminal (a pty driven by python3's pty module):
# arrow-key history, Tab completion, argument hints, help CMD, quoting.
if(TARGET kvmux-cli AND TARGET kvmuxd)
  find_program(KVMUX_PYTHON3 python3)
  if(KVMUX_PYTHON3)
    add_test(NAME cli_pty_test
      COMMAND ${KVMUX_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/cli_pty_test.py
              $<TARGET_FILE:kvmuxd> $<TARGET_FILE:kvmux-cli>)
    set_tests_properties(cli_pty_test PROPERTIES TIMEOUT 120 LABELS integration)
  else()
    kvmux_missing_dependency_test(cli_pty_test "python3 is needed to drive the pty (apt-get install python3)")
  endif()
endif()
