# Unit tests of the sans-IO protocol core (src/proto): no sockets, no threads.
kvmux_add_test(proto_frame_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/proto/frame_test.c
  LABELS unit TIMEOUT 60)
kvmux_add_test(proto_frame_v2_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/proto/frame_v2_test.c
          ${CMAKE_CURRENT_LIST_DIR}/proto/proto_testutil.c
  LABELS unit TIMEOUT 60)
kvmux_add_test(proto_session_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/proto/session_test.c
          ${CMAKE_CURRENT_LIST_DIR}/proto/proto_testutil.c
  LABELS unit TIMEOUT 60)
kvmux_add_test(proto_session_v2_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/proto/session_v2_test.c
          ${CMAKE_CURRENT_LIST_DIR}/proto/proto_testutil.c
  LABELS unit TIMEOUT 60)
kvmux_add_test(proto_flow_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/proto/flow_test.c
  LABELS unit TIMEOUT 60)
