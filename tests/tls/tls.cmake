# TLS between the real kvmuxd and libkvmux / kvmux-cli (tests/tls/): the
# tests make their own CA and certificates with the openssl CLI
# (gen_certs.sh) in a temporary directory. Only when built with TLS.
# tls_concurrent_test (16 threads on one TLS connection) is the part that
# runs under TSan.
if(KVMUX_HAVE_TLS AND TARGET kvmux AND TARGET kvmuxd)
  find_program(KVMUX_OPENSSL_CLI openssl)
  if(KVMUX_OPENSSL_CLI)
    kvmux_add_test(tls_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/tls_test.c
                   LIBS kvmux LABELS integration TIMEOUT 180)
    target_compile_definitions(tls_test PRIVATE
      KVMUX_TLS_GEN_CERTS="${CMAKE_CURRENT_LIST_DIR}/gen_certs.sh")
    kvmux_add_test(tls_concurrent_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/tls_test.c
                   LIBS kvmux LABELS integration concurrent TIMEOUT 240)
    target_compile_definitions(tls_concurrent_test PRIVATE TLS_CONCURRENT=1
      KVMUX_TLS_GEN_CERTS="${CMAKE_CURRENT_LIST_DIR}/gen_certs.sh")
  else()
    message(STATUS "openssl CLI not found (apt-get install openssl): TLS tests skipped")
  endif()
endif()
