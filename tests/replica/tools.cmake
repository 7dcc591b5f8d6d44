# Tools for the replication tests (their tests: tests/unit/lincheck.cmake,
# tests/replica/netns.cmake, faultproxy_test below):
#   kvmux_lincheck / kvmux-lincheck  the linearizability checker (library + CLI)
#   kvmux-faultproxy                 the TCP fault proxy (delay, stall, black hole, cut)
#   tools/netns.sh                   the network-namespace partition harness
add_library(kvmux_lincheck STATIC ${CMAKE_CURRENT_LIST_DIR}/tools/lincheck.c)
target_include_directories(kvmux_lincheck PUBLIC ${CMAKE_CURRENT_LIST_DIR}/tools)
add_executable(kvmux-lincheck ${CMAKE_CURRENT_LIST_DIR}/tools/lincheck_main.c)
target_link_libraries(kvmux-lincheck PRIVATE kvmux_lincheck)
set_target_properties(kvmux-lincheck PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
add_executable(kvmux-faultproxy ${CMAKE_CURRENT_LIST_DIR}/tools/faultproxy.c)
set_target_properties(kvmux-faultproxy PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(faultproxy_test SOURCES replica/faultproxy_test.c replica/fpx.c
                 LIBS kvmux LABELS integration fault TIMEOUT 60)
  target_compile_definitions(faultproxy_test PRIVATE
    KVMUX_FAULTPROXY_PATH="${PROJECT_BINARY_DIR}/kvmux-faultproxy")
  add_dependencies(faultproxy_test kvmux-faultproxy)
endif()
# The CLI on hand-made histories: good.txt passes; a lost write, a stale
# read, a write applied twice, a read of a value never written and a
# counter INCRed twice each fail with their own violation kind.
add_test(NAME lincheck_cli_test
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/histories/check.sh $<TARGET_FILE:kvmux-lincheck>)
set_tests_properties(lincheck_cli_test PROPERTIES TIMEOUT 30 LABELS "unit")
