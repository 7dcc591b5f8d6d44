# Event-loop mode with TLS and automatic reconnect, through real libuv and
# libevent loops against kvmuxd (killed -9 and restarted on its port). The
# TLS half needs a TLS build and the openssl CLI (certificates made by
# tests/tls/gen_certs.sh); without them the reconnect half runs alone.
# Single-threaded (the loop thread), but labelled concurrent too so the
# TSan job also runs it.
if(TARGET kvmux AND TARGET kvmuxd)
  find_path(KVMUX_LIBUV_INCLUDE uv.h)
  find_library(KVMUX_LIBUV_LIB uv)
  find_path(KVMUX_LIBEVENT_INCLUDE event2/event.h)
  find_library(KVMUX_LIBEVENT_LIB event_core)
  if(KVMUX_LIBUV_INCLUDE AND KVMUX_LIBUV_LIB AND KVMUX_LIBEVENT_INCLUDE AND KVMUX_LIBEVENT_LIB)
    kvmux_add_test(loop_tls_reconnect_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/loop_tls_reconnect_test.c
      LIBS kvmux ${KVMUX_LIBUV_LIB} ${KVMUX_LIBEVENT_LIB}
      LABELS integration concurrent fault TIMEOUT 240)
    target_include_directories(loop_tls_reconnect_test PRIVATE
      ${KVMUX_LIBUV_INCLUDE} ${KVMUX_LIBEVENT_INCLUDE})
    find_program(KVMUX_OPENSSL_CLI openssl)
    if(KVMUX_HAVE_TLS AND KVMUX_OPENSSL_CLI)
      target_compile_definitions(loop_tls_reconnect_test PRIVATE
        KVMUX_TLS_GEN_CERTS="${CMAKE_SOURCE_DIR}/tests/tls/gen_certs.sh")
    endif()
  else()
    kvmux_missing_dependency_test(loop_tls_reconnect_test
      "libuv or libevent not found (Debian: apt-get install libuv1-dev libevent-dev)")
  endif()
endif()
