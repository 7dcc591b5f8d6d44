# The man pages (man/, mdoc): mandoc -Tlint must find no warning, and every
# long option a program's --help prints must be in its page.
file(GLOB KVMUX_MAN_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/man/*.[1-8])
add_test(NAME man_lint_test COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/lint.sh ${KVMUX_MAN_SOURCES})
set_tests_properties(man_lint_test PROPERTIES TIMEOUT 30 LABELS unit)
foreach(pair "kvmuxd;kvmuxd.8" "kvmux-cli;kvmux-cli.1" "kvmux-bench;kvmux-bench.1")
  list(GET pair 0 prog)
  list(GET pair 1 page)
  if(TARGET ${prog})
    add_test(NAME man_options_${prog}_test
      COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/check_options.sh $<TARGET_FILE:${prog}>
              ${PROJECT_SOURCE_DIR}/man/${page})
    set_tests_properties(man_options_${prog}_test PROPERTIES TIMEOUT 30 LABELS unit)
  endif()
endforeach()

# kvmux-cli's commands (its "help" list, from the table that also drives
# Tab completion and hints) each have an entry in kvmux-cli(1).
if(TARGET kvmux-cli)
  add_test(NAME man_commands_kvmux-cli_test
    COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/check_commands.sh $<TARGET_FILE:kvmux-cli>
            ${PROJECT_SOURCE_DIR}/man/kvmux-cli.1)
  set_tests_properties(man_commands_kvmux-cli_test PROPERTIES TIMEOUT 30 LABELS unit)
endif()
