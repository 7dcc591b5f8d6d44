# kvmux-bench smoke test: the real kvmux-bench binary against the real kvmuxd
# on an ephemeral port, for about a second per case. Checks that the summary
# parses and is sane (> 0 ops, 0 errors), not how fast anything is.
if(TARGET kvmux-bench AND TARGET kvmuxd)
  kvmux_add_test(bench_smoke_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/bench_smoke_test.c
    LABELS integration
    TIMEOUT 120)
  target_compile_definitions(bench_smoke_test PRIVATE
    KVMUX_BENCH_PATH="$<TARGET_FILE:kvmux-bench>")
  add_dependencies(bench_smoke_test kvmux-bench kvmuxd)
endif()

# bench/sweep.sh smoke test (kvmux vs Redis vs memcached): a tiny sweep with
# the real binaries; checks the CSV, the table and the PNGs it writes, that
# its servers are stopped, and mcload's counting. Redis, memcached and
# gnuplot are optional: the test prints why it skips their part.
if(TARGET kvmux-bench AND TARGET kvmuxd AND TARGET mcload)
  add_test(NAME bench_sweep_test
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/bench_sweep_test.sh ${PROJECT_SOURCE_DIR}
            $<TARGET_FILE:kvmuxd> $<TARGET_FILE:kvmux-bench> $<TARGET_FILE:mcload>)
  set_tests_properties(bench_sweep_test PROPERTIES TIMEOUT 60 LABELS integration)
endif()

# bench/etcd.sh smoke test (kvmux vs etcd): the real script in --quick mode
# with the real etcd (Debian etcd-server, required: the test fails loudly
# without it); checks that every figure and ratio is printed and that the
# servers are stopped.
if(TARGET kvmux-bench AND TARGET kvmuxd AND TARGET etcdload)
  add_test(NAME bench_etcd_test
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/bench_etcd_test.sh ${PROJECT_SOURCE_DIR}
            $<TARGET_FILE:kvmuxd> $<TARGET_FILE:kvmux-bench> $<TARGET_FILE:etcdload>)
  set_tests_properties(bench_etcd_test PROPERTIES TIMEOUT 120 LABELS bench)
endif()

# bench/routing.sh smoke test (the cluster client's routing overhead,
# docs/BENCHMARKS.md): the real script in --quick mode on a one-group
# cluster; checks that every figure is printed and the server stopped.
if(TARGET kvmux-bench AND TARGET kvmuxd AND TARGET kvmux-cli AND KVMUX_HAVE_RAFT)
  add_test(NAME bench_routing_test
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/bench_routing_test.sh ${PROJECT_SOURCE_DIR}
            $<TARGET_FILE:kvmuxd> $<TARGET_FILE:kvmux-bench> $<TARGET_FILE:kvmux-cli>)
  set_tests_properties(bench_routing_test PROPERTIES TIMEOUT 300 LABELS integration)
endif()

# bench/scaling.sh smoke test (per-request costs with 1..3 data groups and
# a map group, docs/CLUSTER.md "Scaling"): every figure printed, servers
# stopped.
if(TARGET kvmux-bench AND TARGET kvmuxd AND TARGET kvmux-cli AND KVMUX_HAVE_RAFT)
  add_test(NAME bench_scaling_test
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/bench_scaling_test.sh ${PROJECT_SOURCE_DIR}
            $<TARGET_FILE:kvmuxd> $<TARGET_FILE:kvmux-bench> $<TARGET_FILE:kvmux-cli>)
  set_tests_properties(bench_scaling_test PROPERTIES TIMEOUT 300 LABELS integration)
endif()
