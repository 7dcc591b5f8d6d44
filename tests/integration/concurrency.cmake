# Integration tests that drive the real kvmuxd with the real multiplexed
# client from many threads (labels integration;concurrent: they also run
# under TSan, with KVMUX_TEST_SCALE lowering the op counts there).
# Skipped while the client library or the server is not in the tree yet.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(mixed_model_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/mixed_model_test.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 300)
  kvmux_add_test(out_of_order_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/out_of_order_test.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 120)
  kvmux_add_test(credits_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/credits_test.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 120)
  kvmux_add_test(wait_fanout_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/wait_fanout_test.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 120)
  kvmux_add_test(idwrap_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/idwrap_test.c
    LIBS kvmux LABELS integration concurrent TIMEOUT 180)
endif()
