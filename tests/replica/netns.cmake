# The network-namespace partition harness (tools/netns.sh) with real kvmuxd,
# kvmux-cli and kvmux-bench processes: isolate, split, heal, flap, teardown,
# refusals. Needs root, iproute2 and nftables (.ci/run installs them); it
# fails, never skips, where they are missing.
if(TARGET kvmuxd AND TARGET kvmux-cli AND TARGET kvmux-bench)
  add_test(NAME netns_test
           COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/netns_test.sh ${PROJECT_BINARY_DIR})
  set_tests_properties(netns_test PROPERTIES TIMEOUT 240 LABELS "netns")
endif()
