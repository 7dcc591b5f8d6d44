# kvmuxd against the corner cases docs/PROTOCOL.md decides (section 16):
# raw sockets, one scenario per rule, exact frame / code / id / close.
if(TARGET kvmuxd)
  kvmux_add_test(conformance_test
                 SOURCES integration/conformance_test.c
                 LABELS integration fault TIMEOUT 60)
endif()
