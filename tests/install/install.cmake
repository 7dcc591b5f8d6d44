# install_test: cmake --install into a temporary prefix, then an external
# program (tests/install/app.c) built from that prefix alone with
# pkg-config and with find_package (shared and static), run against the
# installed kvmuxd. Not in sanitizer builds: their libkvmux.so needs the
# sanitizer runtime, which an outside program does not link.
if(KVMUX_SANITIZE STREQUAL "" AND TARGET kvmux_shared AND TARGET kvmuxd)
  add_test(NAME install_test
    COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/install_test.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
  set_tests_properties(install_test PROPERTIES TIMEOUT 180 LABELS integration)
endif()
