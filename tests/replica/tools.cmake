# Tools for the replication tests (no test of their own here; see
# tests/unit/lincheck.cmake and tests/replica/netns_demo.cmake):
#   kvmux_lincheck / kvmux-lincheck  the linearizability checker (library + CLI)
#   kvmux-faultproxy                 the TCP fault proxy (delay, stall, black hole, cut)
#   tools/netns.sh                   the network-namespace partition harness
add_library(kvmux_lincheck STATIC ${CMAKE_CURRENT_LIST_DIR}/tools/lincheck.c)
target_include_directories(kvmux_lincheck PUBLIC ${CMAKE_CURRENT_LIST_DIR}/tools)
add_executable(kvmux-lincheck ${CMAKE_CURRENT_LIST_DIR}/tools/lincheck_main.c)
target_link_libraries(kvmux-lincheck PRIVATE kvmux_lincheck)
set_target_properties(kvmux-lincheck PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
