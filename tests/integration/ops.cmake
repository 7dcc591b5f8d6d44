# Operating kvmuxd: the configuration file, SIGHUP reload, logs, the
# Prometheus endpoint, systemd's readiness protocol, the slow log and the
# client list. Real kvmuxd processes on ephemeral ports.
if(TARGET kvmuxd AND TARGET kvmux)
  add_library(kvmux_ops_util STATIC ${CMAKE_CURRENT_LIST_DIR}/ops_util.c)
  target_link_libraries(kvmux_ops_util PUBLIC kvmux_testutil)
  target_include_directories(kvmux_ops_util PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  foreach(t config_file_test reload_test reload_effect_test metrics_test notify_test)
    kvmux_add_test(${t}
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/${t}.c
      LIBS kvmux kvmux_ops_util
      LABELS integration
      TIMEOUT 120)
    target_compile_definitions(${t} PRIVATE KVMUX_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  endforeach()
endif()

# SLOWLOG and CLIENT_LIST (libkvmux, kvmux-cli): the list is read across
# loop threads, so TSan runs it too.
if(TARGET kvmuxd AND TARGET kvmux AND TARGET kvmux-cli)
  kvmux_add_test(introspect_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/introspect_test.c
    LIBS kvmux
    LABELS integration concurrent
    TIMEOUT 120)
endif()

if(TARGET kvmuxd)
  add_test(NAME systemd_unit_test
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/systemd_unit_test.sh ${PROJECT_SOURCE_DIR}
                   $<TARGET_FILE:kvmuxd>)
  set_tests_properties(systemd_unit_test PROPERTIES TIMEOUT 60 LABELS integration)
endif()

# The reload publishes the token and certificate across loop threads: TSan
# runs it too.
if(TEST reload_test)
  set_tests_properties(reload_test PROPERTIES LABELS "integration;concurrent")
endif()
# The per-connection limits cross loop threads the same way; the busy-poll
# step measures the server's CPU time, so it runs alone.
if(TEST reload_effect_test)
  set_tests_properties(reload_effect_test PROPERTIES LABELS "integration;concurrent"
                       RUN_SERIAL TRUE)
endif()

if(KVMUX_HAVE_TLS AND TARGET kvmuxd AND TARGET kvmux)
  kvmux_add_test(tls_reload_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/tls_reload_test.c
    LIBS kvmux kvmux_ops_util
    LABELS integration
    TIMEOUT 120)
  target_compile_definitions(tls_reload_test PRIVATE
    KVMUX_TLS_GEN_CERTS="${PROJECT_SOURCE_DIR}/tests/tls/gen_certs.sh")
endif()
