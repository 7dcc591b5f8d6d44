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
# --write-timeout against never-reading clients (v1, v2 single-frame, v2
# fragmented; plaintext and TLS): the test speaks TLS itself (OpenSSL) and
# makes its certificates with tests/tls/gen_certs.sh (openssl CLI).
if(TARGET kvmuxd AND KVMUX_HAVE_TLS)
  find_program(KVMUX_OPENSSL_CLI openssl)
  if(NOT KVMUX_OPENSSL_CLI)
    message(FATAL_ERROR "write_timeout_test needs the openssl CLI (apt-get install openssl)")
  endif()
  kvmux_add_test(write_timeout_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/write_timeout_test.c
    LIBS OpenSSL::SSL LABELS fault TIMEOUT 120)
  target_compile_definitions(write_timeout_test PRIVATE
    KVMUX_TLS_GEN_CERTS="${CMAKE_CURRENT_LIST_DIR}/../tls/gen_certs.sh")
endif()

# A damaged log: every header bit of a 1000-record log flipped (refused
# with the offset, file untouched), every cut in the last 3 records
# (the exact prefix recovered), and a few cases through a real kvmuxd.
if(TARGET kvmuxd_core AND TARGET kvmuxd)
  kvmux_add_test(aof_damage_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/aof_damage_test.c
    LIBS kvmuxd_core LABELS fault TIMEOUT 300)
endif()
