# Fault tests: kill -9 and SIGSTOP with callers waiting, garbage and
# truncated input on raw sockets, slow readers, kvmux_close and SIGTERM with
# callers parked. Each asserts that every caller returns in bounded time
# with the right error, and that one bad peer costs the others nothing.
# Skipped while the client library or the server is not in the tree yet.
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(garbage_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/garbage_test.c
    LIBS kvmux LABELS fault TIMEOUT 120)
  kvmux_add_test(slow_reader_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/slow_reader_test.c
    LIBS kvmux LABELS fault TIMEOUT 120)
  kvmux_add_test(kill9_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/kill9_test.c
    LIBS kvmux LABELS fault concurrent TIMEOUT 120)
  kvmux_add_test(close_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/close_test.c
    LIBS kvmux LABELS fault concurrent TIMEOUT 120)
endif()
# A damaged log: every header bit of a 1000-record log flipped (refused
# with the offset, file untouched), every cut in the last 3 records
# (the exact prefix recovered), and a few cases through a real kvmuxd.
if(TARGET kvmuxd_core AND TARGET kvmuxd)
  kvmux_add_test(aof_damage_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/aof_damage_test.c
    LIBS kvmuxd_core LABELS fault TIMEOUT 300)
endif()
