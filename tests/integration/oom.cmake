# OUT_OF_MEMORY (status 13) end to end: the real kvmuxd with --maxmemory,
# v1 and v2 libkvmux clients side by side, and the real kvmux-cli.
if(TARGET kvmuxd AND TARGET kvmux-cli)
  kvmux_add_test(oom_status_test SOURCES integration/oom_status_test.c LIBS kvmux
                 LABELS integration fault TIMEOUT 60)
endif()
