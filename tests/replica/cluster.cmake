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
