# The library's ABI (docs/ABI.md):
# - abi_symbols_test: libkvmux.so exports exactly the functions listed in
#   tests/abi/kvmux.symbols (and each of them is declared in kvmux.h). A
#   new public function is added to both; an internal one that leaks out
#   fails here.
# - abi_options_test: kvmux_options built against an older, smaller header
#   (struct_size) is read only that far; uninitialised or too-new options
#   are refused; kvmux_version() matches the header.
if(TARGET kvmux_shared)
  add_test(NAME abi_symbols_test
    COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/check_symbols.sh $<TARGET_FILE:kvmux_shared>
            ${CMAKE_CURRENT_LIST_DIR}/kvmux.symbols ${PROJECT_SOURCE_DIR}/include/kvmux.h)
  set_tests_properties(abi_symbols_test PROPERTIES TIMEOUT 30 LABELS unit)

  # Linked against the shared library, as a user's program would be.
  kvmux_add_test(abi_options_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/abi_options_test.c
                 LIBS kvmux_shared LABELS integration TIMEOUT 30)
endif()
