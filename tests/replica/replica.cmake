# Replication tests (docs/REPLICATION.md, docs/TESTING.md): real kvmuxd
# groups on loopback. The entry codec's unit test runs in every build; the
# group tests need kvmuxd built with replication (KVMUX_WITH_RAFT).
kvmux_add_test(replica_entry_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_entry_test.c
  LIBS kvmuxd_core LABELS unit TIMEOUT 60)
# Background snapshots: serialized on a second thread while entries apply.
kvmux_add_test(replica_snap_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_snap_test.c
  LIBS kvmuxd_core LABELS unit concurrent TIMEOUT 60)
kvmux_add_test(replica_stage_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_stage_test.c
  LIBS kvmuxd_core LABELS unit TIMEOUT 60)
# Deterministic simulation: C-Raft's in-memory fixture running kvmux's state
# machine (no sockets, no threads; thousands of seeds).
if(KVMUX_HAVE_RAFT)
  kvmux_add_test(sim_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/sim_test.c
    LIBS kvmuxd_core LABELS unit sim TIMEOUT 300)
  target_include_directories(sim_test PRIVATE ${KVMUX_RAFT_INC})
  # The checks themselves: a replica that skips entries must be caught in
  # every one of 20 seeds (the summary line must say failures=20).
  add_test(NAME sim_break_test COMMAND ${CMAKE_COMMAND} -E env KVMUX_SIM_BREAK=1
           KVMUX_SIM_SEEDS=20 $<TARGET_FILE:sim_test>)
  set_tests_properties(sim_break_test PROPERTIES PASS_REGULAR_EXPRESSION "seeds=20 .* failures=20 "
                       TIMEOUT 60 LABELS "unit;sim")
  # Failed disk writes, retried after a delay as raft_uv does
  # (docs/TESTING.md "Deterministic simulation" 5): 300 x KVMUX_TEST_SCALE
  # seeds, 10-30 s.
  add_test(NAME sim_iofault_test COMMAND ${CMAKE_COMMAND} -E env KVMUX_SIM_IO_FAULTS=1
           $<TARGET_FILE:sim_test>)
  set_tests_properties(sim_iofault_test PROPERTIES TIMEOUT 180 LABELS "unit;sim;fault")
else()
  kvmux_missing_dependency_test(sim_test
    "built without replication (install libraft-dev >= 0.22)")
endif()
if(TARGET kvmux AND TARGET kvmuxd)
  if(KVMUX_HAVE_RAFT)
    add_library(kvmux_rgroup STATIC ${CMAKE_CURRENT_LIST_DIR}/rgroup.c)
    target_link_libraries(kvmux_rgroup PUBLIC kvmux_testutil)
    target_include_directories(kvmux_rgroup PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    kvmux_add_test(replica_follower_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_follower_test.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 180)
    # Background snapshots of a 200k-key store in a group under load, kill -9
    # and restart of a follower and of the leader: equal digests.
    kvmux_add_test(replica_snap_group_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_snap_group_test.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 300)
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
    # Not labelled concurrent (no TSan run in CI): growing to 5 replicas
    # under TSan on 2 cores stalls the group for longer than the test's 20 s
    # per change (one CI run: a remove stayed BUSY, then no leader); it runs
    # plain and under ASan. TESTING.md says so.
    kvmux_add_test(replica_members_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_members_test.c
      LIBS kvmux kvmux_rgroup LABELS integration TIMEOUT 300)
    # Leadership transfers under a write load: every SET answered, every
    # member exits 0 at SIGTERM (under ASan: no leak of refused entries).
    kvmux_add_test(replica_transfer_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/replica_transfer_test.c
      LIBS kvmux kvmux_rgroup LABELS integration concurrent TIMEOUT 180)
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
    # Random replicas (leader or follower) SIGKILLed and restarted under
    # load from endpoints-mode clients; lincheck over the whole history.
    kvmux_add_test(chaos_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/chaos_test.c
      LIBS kvmux kvmux_rgroup kvmux_lincheck LABELS integration concurrent fault TIMEOUT 900)
    set_tests_properties(chaos_test PROPERTIES RUN_SERIAL TRUE)
    # The same load with partitions instead of kills: each replica in its
    # own network namespace (tools/netns.sh; root, iproute2, nftables, as
    # netns_test): the leader isolated, a 1|2 split (writes sent to the
    # minority's leader acknowledged: 0), the leader's links flapped 20
    # times; lost 0, 0 violations, digests equal after healing.
    add_test(NAME partition_test
             COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/tools/netns.sh session 3
                     env KVMUX_KVMUXD=${CMAKE_CURRENT_LIST_DIR}/netns_kvmuxd.sh
                         KVMUX_NETNS_REAL_KVMUXD=$<TARGET_FILE:kvmuxd>
                         KVMUX_CHAOS_MODE=partition $<TARGET_FILE:chaos_test>)
    set_tests_properties(partition_test PROPERTIES TIMEOUT 600 LABELS "netns" RUN_SERIAL TRUE)
    # Replicas whose durable log writes fail (the kvmux-iofail.so preload,
    # tools/iofail.c: raft_uv's AIO writes, which libfiu cannot reach).
    # Built without sanitizers: it is preloaded into every kvmuxd.
    add_library(kvmux-iofail MODULE ${CMAKE_CURRENT_LIST_DIR}/tools/iofail.c)
    target_compile_options(kvmux-iofail PRIVATE -fno-sanitize=all)
    target_link_options(kvmux-iofail PRIVATE -fno-sanitize=all)
    target_link_libraries(kvmux-iofail PRIVATE ${CMAKE_DL_LIBS})
    set_target_properties(kvmux-iofail PROPERTIES PREFIX "" LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
    kvmux_add_test(iofail_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/iofail_test.c
      LIBS kvmux kvmux_rgroup LABELS integration fault TIMEOUT 300)
    target_compile_definitions(iofail_test PRIVATE
      KVMUX_IOFAIL_PATH="$<TARGET_FILE:kvmux-iofail>")
    add_dependencies(iofail_test kvmux-iofail)
    set_tests_properties(iofail_test PROPERTIES RUN_SERIAL TRUE)
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
    kvmux_missing_dependency_test(replica_transfer_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(replica_stale_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(partition_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(iofail_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(chaos_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(client_group_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
  endif()
endif()
# Slot migration's state machines (docs/MIGRATION.md 12): the map group's
# table (MIGREC rules, snapshot format 6, the KVMG codec with a vector,
# its refusals and a bounded fuzz loop) and the source side
# (migrate_fsm_out.c: MIGSTEP steps 1-5, dirty set, fence).
kvmux_add_test(migrate_fsm_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/migrate_fsm_test.c
          ${CMAKE_CURRENT_LIST_DIR}/migrate_fsm_out.c
          ${CMAKE_CURRENT_LIST_DIR}/../unit/proto/proto_testutil.c
  LIBS kvmuxd_core LABELS unit TIMEOUT 120)
# Slot migration, the target side's state machine rules (docs/MIGRATION.md
# section 12 "migrate_fsm_test", the incoming record; in-process, no Raft).
kvmux_add_test(migin_fsm_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/migin_fsm_test.c
  LIBS kvmuxd_core LABELS unit TIMEOUT 60)
