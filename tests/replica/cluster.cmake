# Cluster mode, server side (docs/CLUSTER.md).
if(TARGET kvmuxd)
  if(KVMUX_HAVE_RAFT)
    add_test(NAME cluster_config_test
      COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/cluster_config_test.sh $<TARGET_FILE:kvmuxd>)
    set_tests_properties(cluster_config_test PROPERTIES TIMEOUT 30 LABELS unit)
    # Slot migration, the source's fence through a real one-member group
    # (kvmuxd's server in process: the entries are proposed as the
    # migrate thread will, nothing on the wire proposes them yet).
    kvmux_add_test(migrate_server_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_server_test.c
      LIBS kvmuxd_core LABELS "integration" TIMEOUT 60)
  else()
    kvmux_missing_dependency_test(cluster_config_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
  endif()
endif()
if(TARGET kvmux AND TARGET kvmuxd AND TARGET kvmux-cli)
  if(KVMUX_HAVE_RAFT)
    # Not concurrent: no threads of its own; real processes.
    kvmux_add_test(cluster_server_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/cluster_server_test.c
        ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
      LIBS kvmux kvmux_rgroup LABELS "integration;fault" TIMEOUT 180)
    # The map group (docs/CLUSTER.md "The map group"): one scenario per
    # test, each < 60 s on the 2-core CI machine; real processes.
    kvmux_add_test(mapgroup_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/mapgroup_test.c
        ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
      LIBS kvmux kvmux_rgroup LABELS "integration;concurrent" TIMEOUT 90)
    add_test(NAME mapgroup_kill_test COMMAND mapgroup_test kill)
    set_tests_properties(mapgroup_kill_test PROPERTIES TIMEOUT 120 LABELS "integration;fault")
    add_test(NAME mapgroup_fault_test COMMAND mapgroup_test fault)
    set_tests_properties(mapgroup_fault_test PROPERTIES TIMEOUT 90 LABELS "integration;fault")
    add_test(NAME mapgroup_ha_test COMMAND mapgroup_test ha)
    set_tests_properties(mapgroup_ha_test PROPERTIES TIMEOUT 120 LABELS "integration;fault")
    # TLS to the map group (--cluster-map-tls), with a throwaway PKI.
    find_program(KVMUX_OPENSSL_CLI openssl)
    if(KVMUX_HAVE_TLS AND KVMUX_OPENSSL_CLI)
      target_compile_definitions(mapgroup_test PRIVATE
        KVMUX_PEER_GEN_CERTS="${CMAKE_CURRENT_LIST_DIR}/gen_peer_certs.sh")
      add_test(NAME mapgroup_tls_test COMMAND mapgroup_test tls)
      set_tests_properties(mapgroup_tls_test PROPERTIES TIMEOUT 90 LABELS "integration")
    elseif(KVMUX_HAVE_TLS)
      kvmux_missing_dependency_test(mapgroup_tls_test "no openssl CLI (apt-get install openssl)")
    endif()
    # Slot migration step 3: the map group's migration table.
    add_test(NAME mapgroup_migrate_test COMMAND mapgroup_test migrate)
    set_tests_properties(mapgroup_migrate_test PROPERTIES TIMEOUT 120 LABELS "integration;fault")
    # Slot migration, the target side driven by hand (docs/MIGRATION.md
    # section 12): one real group, kill -9 and restart from a snapshot.
    kvmux_add_test(migrate_import_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_import_test.c
        ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
      LIBS kvmux kvmux_rgroup LABELS "integration;fault" TIMEOUT 120)
    # Slot migration step 5: the migrate threads move 2,000 keys from one
    # real group to another (a writer thread at the source meanwhile) and
    # back, and an aborted move, through kvmux-cli.
    kvmux_add_test(migrate_move_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_move_test.c
        ${CMAKE_CURRENT_LIST_DIR}/migtest.c ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
      LIBS kvmux kvmux_rgroup LABELS "integration;concurrent" TIMEOUT 300)
    # Slot migration step 7: two 24 MiB values moved (staged imports,
    # 0xF5) into a 3-member group, small SETs' p99 printed with and
    # without the move; a move refused for a target's --max-value; a
    # move with the target's leader killed during the copy.
    kvmux_add_test(migrate_big_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_big_test.c
        ${CMAKE_CURRENT_LIST_DIR}/migtest.c ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
      LIBS kvmux kvmux_rgroup LABELS "integration;concurrent" TIMEOUT 300)
    set_tests_properties(migrate_big_test PROPERTIES RUN_SERIAL TRUE)
    # Slot migration step 8: the stall and fence timeouts (MIGRATION.md
    # 8.2) with SIGSTOPped / refusing targets; a writer thread.
    kvmux_add_test(migrate_timeout_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_timeout_test.c
        ${CMAKE_CURRENT_LIST_DIR}/migtest.c ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
      LIBS kvmux kvmux_rgroup LABELS "integration;fault;concurrent" TIMEOUT 240)
    # Step 8: the outcomes the source learns from an answer (MIGRATION.md
    # 8.2): the fence timer after a takeover, a COMMIT answered "was
    # aborted", an ABORT answered "is committed"; kvmux-faultproxy delays
    # the data groups' link to the map group. Five kvmuxd and timing
    # windows: run alone.
    kvmux_add_test(migrate_paths_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_paths_test.c
        ${CMAKE_CURRENT_LIST_DIR}/migtest.c ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
        ${CMAKE_CURRENT_LIST_DIR}/fpx.c
      LIBS kvmux kvmux_rgroup LABELS "integration;fault;concurrent" TIMEOUT 300)
    target_compile_definitions(migrate_paths_test PRIVATE
      KVMUX_FAULTPROXY_PATH="${PROJECT_BINARY_DIR}/kvmux-faultproxy")
    add_dependencies(migrate_paths_test kvmux-faultproxy)
    set_tests_properties(migrate_paths_test PROPERTIES RUN_SERIAL TRUE)
    # Step 8: moves under load, kill -9 of a source, target or map group
    # leader at a random phase (KVMUX_MIGFAULT_CYCLES, _SEED, _REPLICAS);
    # nine processes: run alone.
    kvmux_add_test(migrate_fault_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_fault_test.c
        ${CMAKE_CURRENT_LIST_DIR}/migtest.c ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
      LIBS kvmux kvmux_rgroup kvmux_lincheck LABELS "fault;concurrent" TIMEOUT 600)
    set_tests_properties(migrate_fault_test PROPERTIES RUN_SERIAL TRUE)
    # Step 9: the same test in netns mode, partitions instead of kills
    # (a zombie source, A split from B while copying and at the fence, the
    # map group isolated, B's leader isolated, a ring partition of A):
    # each member in a network namespace of its own
    # (tools/netns.sh; root, iproute2, nftables; fails, never skips,
    # without them), label netns as netns_test and partition_test: not
    # concurrent, so it runs plain and under ASan, not under TSan.
    add_test(NAME migrate_netns_test
             COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/migrate_netns_test.sh
                     $<TARGET_FILE:migrate_fault_test> $<TARGET_FILE:kvmuxd> 420)
    set_tests_properties(migrate_netns_test PROPERTIES TIMEOUT 480 LABELS "netns;fault"
                         RUN_SERIAL TRUE)
    # The migration workload driver (migload.h): a cluster of real kvmuxd,
    # load threads over one cluster client, the mover, the probers, the
    # model and lincheck. Used by migrate_model_test and bench/clusterload.
    add_library(kvmux_migload STATIC ${CMAKE_CURRENT_LIST_DIR}/migload.c
      ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c)
    target_link_libraries(kvmux_migload PUBLIC kvmux kvmux_rgroup kvmux_lincheck
      kvmux_testutil Threads::Threads)
    target_include_directories(kvmux_migload PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    # Slot migration step 6: random migrations under load, every answer
    # checked by a model, lincheck over the history (3 data groups of 3
    # members, 1 under the sanitizers: see the test's header); alone, as
    # bench_cluster_test.
    kvmux_add_test(migrate_model_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_model_test.c
      LIBS kvmux_migload LABELS "integration;concurrent" TIMEOUT 900)
    set_tests_properties(migrate_model_test PROPERTIES RUN_SERIAL TRUE)
    # bench/cluster.sh's load (docs/MIGRATION.md section 12), next to
    # kvmuxd so that the script finds it by -k.
    add_executable(clusterload ${PROJECT_SOURCE_DIR}/bench/clusterload/clusterload.c)
    target_link_libraries(clusterload PRIVATE kvmux_migload)
    set_target_properties(clusterload PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
    # bench/cluster.sh smoke test (tests/integration/bench_cluster_test.sh;
    # registered here, where clusterload exists: integration/*.cmake is
    # read first): the real script in --quick mode; checks the summary
    # line's fields (nothing lost, applied twice or read stale) and that
    # its servers are stopped. kvmux-lincheck: tools.cmake, always built.
    if(TARGET kvmux-bench)
      add_test(NAME bench_cluster_test
        COMMAND bash ${PROJECT_SOURCE_DIR}/tests/integration/bench_cluster_test.sh
                ${PROJECT_SOURCE_DIR} $<TARGET_FILE:kvmuxd> $<TARGET_FILE:kvmux-bench>
                $<TARGET_FILE:kvmux-cli> $<TARGET_FILE:clusterload>
                $<TARGET_FILE:kvmux-lincheck>)
      # Twelve kvmuxd under load: alone, so that neither it nor the
      # timing-bound tests beside it are starved (ctest -j).
      set_tests_properties(bench_cluster_test PROPERTIES TIMEOUT 900 LABELS integration
        RUN_SERIAL TRUE)
    endif()
  else()
    kvmux_missing_dependency_test(cluster_server_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(mapgroup_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(migrate_import_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(migrate_move_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(migrate_big_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(migrate_timeout_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(migrate_paths_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(migrate_fault_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(migrate_model_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
  endif()
endif()
# The cluster client (docs/CLUSTER.md "The cluster client"): one
# executable, one scenario per test. Threads of its own (sub-clients'
# completion threads, connect threads, the reassign test's 8 submitters):
# concurrent, so TSan CI runs them.
if(TARGET kvmux AND TARGET kvmuxd AND TARGET kvmux-cli AND TARGET kvmux-bench)
  if(KVMUX_HAVE_RAFT)
    kvmux_add_test(cluster_client_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/cluster_client_test.c
        ${CMAKE_CURRENT_LIST_DIR}/cluster_util.c
      LIBS kvmux kvmux_rgroup LABELS "integration;concurrent" TIMEOUT 90)
    target_compile_definitions(cluster_client_test PRIVATE
      KVMUX_BENCH_PATH="$<TARGET_FILE:kvmux-bench>")
    # Event-loop mode on one fd, through the libuv adapter.
    find_path(KVMUX_LIBUV_INCLUDE uv.h)
    find_library(KVMUX_LIBUV_LIB uv)
    if(KVMUX_LIBUV_INCLUDE AND KVMUX_LIBUV_LIB)
      target_sources(cluster_client_test PRIVATE
        ${CMAKE_CURRENT_LIST_DIR}/../integration/loop_util.c)
      target_include_directories(cluster_client_test PRIVATE ${KVMUX_LIBUV_INCLUDE}
        ${CMAKE_CURRENT_LIST_DIR}/../integration)
      target_link_libraries(cluster_client_test PRIVATE ${KVMUX_LIBUV_LIB})
      target_compile_definitions(cluster_client_test PRIVATE KVMUX_TEST_LIBUV=1)
      add_test(NAME cluster_client_loop_test COMMAND cluster_client_test loop)
      set_tests_properties(cluster_client_loop_test PROPERTIES TIMEOUT 90
        LABELS "integration")
    endif()
    foreach(scenario reassign faults members)
      add_test(NAME cluster_client_${scenario}_test COMMAND cluster_client_test ${scenario})
      set_tests_properties(cluster_client_${scenario}_test PROPERTIES TIMEOUT 90
        LABELS "integration;concurrent;fault")
    endforeach()
  else()
    kvmux_missing_dependency_test(cluster_client_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
  endif()
endif()
