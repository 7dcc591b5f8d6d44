# Access control: --requirepass in HELLO (ERROR AUTH), protected mode.
if(TARGET kvmuxd)
  kvmux_add_test(sec_auth_test SOURCES integration/sec_auth_test.c
                 LIBS kvmuxd_core LABELS integration TIMEOUT 60)
endif()
# The in-memory server harness behind fuzz_server_input (no sockets).
if(TARGET kvmuxd_core)
  kvmux_add_test(sec_harness_test SOURCES integration/sec_harness_test.c
                 LIBS kvmuxd_core LABELS unit TIMEOUT 60)
endif()
