# Client unit tests: the pending table, driven deterministically without
# sockets or threads. pending.h is internal, hence the extra include path.
if(TARGET kvmux)
  kvmux_add_test(client_pending_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client/pending_test.c
    LIBS kvmux
    LABELS unit
    TIMEOUT 30)
  target_include_directories(client_pending_test PRIVATE ${PROJECT_SOURCE_DIR}/src/client)
endif()

# The async API's timer heap (per-request deadlines).
if(TARGET kvmux)
  kvmux_add_test(client_timerheap_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client/timerheap_test.c
    LIBS kvmux
    LABELS unit
    TIMEOUT 30)
  target_include_directories(client_timerheap_test PRIVATE ${PROJECT_SOURCE_DIR}/src/client)
endif()

# The endpoint-list parser (kvmux_options.endpoints, NOT_LEADER addresses).
if(TARGET kvmux)
  kvmux_add_test(client_endpoints_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client/endpoints_test.c
    LIBS kvmux
    LABELS unit
    TIMEOUT 30)
  target_include_directories(client_endpoints_test PRIVATE ${PROJECT_SOURCE_DIR}/src/client)
endif()

# The wire status -> kvmux_error map and kvmux_strerror (the cluster's
# statuses and codes included).
if(TARGET kvmux)
  kvmux_add_test(client_errors_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client/errors_test.c
    LIBS kvmux
    LABELS unit
    TIMEOUT 30)
  target_include_directories(client_errors_test PRIVATE ${PROJECT_SOURCE_DIR}/src/client)
endif()
