# The cluster's sans-IO core (src/cluster): slot hash, slot map codecs,
# redirect values. The cross-check against a real redis-server is
# tests/integration/cluster.cmake.
kvmux_add_test(cluster_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/cluster_test.c
          ${CMAKE_CURRENT_LIST_DIR}/proto/proto_testutil.c
  LABELS unit TIMEOUT 120)
