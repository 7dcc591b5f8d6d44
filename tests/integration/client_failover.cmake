# Client failover across a replicated group (kvmux_options.endpoints,
# protocol v3) against a fake group over real sockets (fake_group.c):
# NOT_LEADER redirects and their bound, OUTCOME_UNKNOWN, the leader's
# connection reset with writes/reads/WAITs in flight, deadlines and cancel
# across a redirect, in blocking, async and event-loop (libuv) modes; plus
# endpoints mode against a real single-node kvmuxd. Labelled concurrent:
# TSan runs it too.
if(TARGET kvmux AND TARGET kvmuxd)
  find_path(KVMUX_LIBUV_INCLUDE uv.h)
  find_library(KVMUX_LIBUV_LIB uv)
  if(KVMUX_LIBUV_INCLUDE AND KVMUX_LIBUV_LIB)
    kvmux_add_test(client_failover_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_failover_test.c
              ${CMAKE_CURRENT_LIST_DIR}/fake_group.c
              ${CMAKE_CURRENT_LIST_DIR}/failover_scenario.c
              ${CMAKE_CURRENT_LIST_DIR}/client_v2_fake.c
              ${CMAKE_CURRENT_LIST_DIR}/loop_util.c
      LIBS kvmux ${KVMUX_LIBUV_LIB} LABELS integration concurrent fault TIMEOUT 120)
    target_include_directories(client_failover_test PRIVATE ${KVMUX_LIBUV_INCLUDE})
  else()
    kvmux_missing_dependency_test(client_failover_test
      "libuv not found (Debian: apt-get install libuv1-dev, then reconfigure)")
  endif()
endif()
