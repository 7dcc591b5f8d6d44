# Unit test of kvmux-cli's output encodings (tools/kvmux-cli/out.c: quoting
# on a terminal, JSON, CSV) and of its Tab completion and hint rules
# (edit.c over the real command table in cmd.c). No sockets, no terminal.
if(TARGET kvmux-cli)
  kvmux_add_test(cli_out_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/cli_out_test.c
            ${PROJECT_SOURCE_DIR}/tools/kvmux-cli/out.c
            ${PROJECT_SOURCE_DIR}/tools/kvmux-cli/edit.c
            ${PROJECT_SOURCE_DIR}/tools/kvmux-cli/cmd.c
            ${PROJECT_SOURCE_DIR}/tools/kvmux-cli/mapassign.c
            ${PROJECT_SOURCE_DIR}/tools/kvmux-cli/migrate.c
            ${PROJECT_SOURCE_DIR}/tools/kvmux-cli/monitor.c
            ${PROJECT_SOURCE_DIR}/tools/kvmux-cli/args.c
    LIBS kvmux ${KVMUX_LIBEDIT}
    LABELS unit TIMEOUT 60)
  target_include_directories(cli_out_test PRIVATE ${PROJECT_SOURCE_DIR}/tools/kvmux-cli
                             ${KVMUX_LIBEDIT_INC})
endif()
