# The sharded cluster. cluster_keyslot_test: kvmux_slot against a real
# redis-server's CLUSTER KEYSLOT (.ci/run installs redis-server and
# redis-tools; the test fails without them). keyslot_tool is test-only.
add_executable(cluster_keyslot_tool ${CMAKE_CURRENT_LIST_DIR}/keyslot_tool.c)
target_link_libraries(cluster_keyslot_tool PRIVATE kvmux_proto)
add_test(NAME cluster_keyslot_test
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/cluster_keyslot_test.sh
                 $<TARGET_FILE:cluster_keyslot_tool>)
set_tests_properties(cluster_keyslot_test PROPERTIES TIMEOUT 60 LABELS integration)
