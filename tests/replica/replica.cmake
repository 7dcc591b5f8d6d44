# Replication tests (docs/REPLICATION.md, docs/TESTING.md): real kvmuxd
# groups on loopback. The entry codec's unit test runs in every build; the
# group tests need kvmuxd built with replication (KVMUX_WITH_RAFT).
kvmux_add_test(replica_entry_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_entry_test.c
  LIBS kvmuxd_core LABELS unit TIMEOUT 60)
kvmux_add_test(replica_stage_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_stage_test.c
  LIBS kvmuxd_core LABELS unit TIMEOUT 60)
if(TARGET kvmux AND TARGET kvmuxd)
  if(KVMUX_HAVE_RAFT)
    add_library(kvmux_rgroup STATIC ${CMAKE_CURRENT_LIST_DIR}/rgroup.c)
    target_link_libraries(kvmux_rgroup PUBLIC kvmux_testutil)
    target_include_directories(kvmux_rgroup PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    kvmux_add_test(replica_follower_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_follower_test.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 180)
    kvmux_add_test(replica_lease_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_lease_test.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 180)
    kvmux_add_test(replica_big_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_big_test.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 300)
    kvmux_add_test(replica_group_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_group_test.c
      LIBS kvmux kvmux_rgroup kvmux_lincheck LABELS integration concurrent TIMEOUT 600)
    set_tests_properties(replica_group_test PROPERTIES RUN_SERIAL TRUE)
    # GROUP: grow 3 -> 5 under load, transfer, remove a follower and the
    # leader, errors, kvmux-cli cluster.
    kvmux_add_test(replica_members_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_members_test.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 300)
    # STALE reads on followers: served, parked until min_version, timeout.
    kvmux_add_test(replica_stale_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_stale_test.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 120)
    # libkvmux's endpoints mode against this real group (kill -9 of the
    # leader under load), with client_failover_test's scenario.
    kvmux_add_test(client_group_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_group_test.c
              ${CMAKE_CURRENT_LIST_DIR}/../integration/failover_scenario.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent fault TIMEOUT 300)
    target_include_directories(client_group_test PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../integration)
    # Its exactly-once session run in event-loop mode needs libuv.
    find_path(KVMUX_LIBUV_INCLUDE uv.h)
    find_library(KVMUX_LIBUV_LIB uv)
    if(KVMUX_LIBUV_INCLUDE AND KVMUX_LIBUV_LIB)
      target_sources(client_group_test PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../integration/loop_util.c)
      target_include_directories(client_group_test PRIVATE ${KVMUX_LIBUV_INCLUDE})
      target_link_libraries(client_group_test PRIVATE ${KVMUX_LIBUV_LIB})
      target_compile_definitions(client_group_test PRIVATE KVMUX_TEST_LIBUV=1)
    endif()
    # Peer TLS (transport.c): only when kvmuxd has both Raft and TLS.
    find_program(KVMUX_OPENSSL_CLI openssl)
    if(KVMUX_HAVE_TLS AND KVMUX_OPENSSL_CLI)
      kvmux_add_test(replica_peertls_test
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_peertls_test.c
        LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 300)
      target_compile_definitions(replica_peertls_test PRIVATE
        KVMUX_PEER_GEN_CERTS="${CMAKE_CURRENT_LIST_DIR}/gen_peer_certs.sh")
    elseif(KVMUX_HAVE_TLS)
      kvmux_missing_dependency_test(replica_peertls_test "no openssl CLI (apt-get install openssl)")
    endif()
    # Without TLS (KVMUX_WITH_TLS=OFF) there is no peer TLS to test, as for
    # tests/tls: --peer-tls then exits 2 "built without TLS".
  else()
    kvmux_missing_dependency_test(replica_peertls_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(replica_follower_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(replica_lease_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(replica_big_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(replica_group_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(replica_members_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(replica_stale_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(client_group_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
  endif()
endif()
