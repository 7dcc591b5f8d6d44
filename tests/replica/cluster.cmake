# Cluster mode, server side (docs/CLUSTER.md).
if(TARGET kvmuxd)
  if(KVMUX_HAVE_RAFT)
    add_test(NAME cluster_config_test
      COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/cluster_config_test.sh $<TARGET_FILE:kvmuxd>)
    set_tests_properties(cluster_config_test PROPERTIES TIMEOUT 30 LABELS unit)
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
      LIBS kvmux kvmux_rgroup LABELS "integration;fault" TIMEOUT 180)
    # The map group (docs/CLUSTER.md "The map group"): one scenario per
    # test, each < 60 s on the 2-core CI machine; real processes.
    kvmux_add_test(mapgroup_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/mapgroup_test.c
      LIBS kvmux kvmux_rgroup LABELS "integration;concurrent" TIMEOUT 90)
    add_test(NAME mapgroup_kill_test COMMAND mapgroup_test kill)
    set_tests_properties(mapgroup_kill_test PROPERTIES TIMEOUT 120 LABELS "integration;fault")
    add_test(NAME mapgroup_fault_test COMMAND mapgroup_test fault)
    set_tests_properties(mapgroup_fault_test PROPERTIES TIMEOUT 90 LABELS "integration;fault")
    add_test(NAME mapgroup_ha_test COMMAND mapgroup_test ha)
    set_tests_properties(mapgroup_ha_test PROPERTIES TIMEOUT 120 LABELS "integration;fault")
  else()
    kvmux_missing_dependency_test(cluster_server_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
    kvmux_missing_dependency_test(mapgroup_test
      "kvmuxd built without replication (install libraft-dev >= 0.22)")
  endif()
endif()
