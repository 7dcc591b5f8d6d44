# The shared "host:port" parser (src/proto/hostport.c) and --peers on it.
kvmux_add_test(hostport_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/proto/hostport_test.c
  LIBS kvmuxd_core LABELS unit TIMEOUT 60)
