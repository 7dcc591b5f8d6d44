# The client over protocol v2, each test against the real kvmuxd
# and the scripted fake server (client_v2_fake.c) for what only a fake
# produces:
#   client_v2_test                 fragmented replies and window grants,
#       GOAWAY draining, the CANCELED/SHUTTING_DOWN statuses, version
#       negotiation both ways (also kvmuxd --max-protocol 1)
#   client_v2_hol_test             (step 2) SET/CAS values over the frame
#       size sent fragmented, fairness between transfers, and the
#       head-of-line measure (p99 of small GETs while 64 MiB move both ways
#       on the same connection; printed)
#   client_v2_cancel_test          (step 3) DEADLINE on every v2 request,
#       kvmux_future_cancel / kvmux_cancel sending CANCEL (parked WAIT,
#       queued request, 64 MiB upload), a reply crossing the CANCEL, and
#       cancel on a v1 connection
#   client_v2_keepalive_test       (step 4) keepalive against a server that
#       goes silent after the handshake (threaded and event-loop modes) and
#       against a healthy kvmuxd
#   client_v2_upload_timeout_test  (follow-up) a blocking call timing out in
#       the middle of its fragmented upload stops it and sends CANCEL (fake
#       server watching the wire, a reply crossing the CANCEL, the client's
#       CANCEL rate cap, and the real kvmuxd)
# Each entry: name:timeout in seconds[:more labels]; every one is labelled
# integration and concurrent.
if(TARGET kvmux AND TARGET kvmuxd)
  foreach(kvmux_v2_spec
      client_v2_test:120
      client_v2_hol_test:300
      client_v2_cancel_test:180
      client_v2_keepalive_test:120:fault
      client_v2_upload_timeout_test:120:fault)
    string(REPLACE ":" ";" kvmux_v2_spec "${kvmux_v2_spec}")
    list(GET kvmux_v2_spec 0 kvmux_v2_name)
    list(GET kvmux_v2_spec 1 kvmux_v2_timeout)
    list(REMOVE_AT kvmux_v2_spec 0 1) # what is left: the extra labels
    kvmux_add_test(${kvmux_v2_name}
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/${kvmux_v2_name}.c
              ${CMAKE_CURRENT_LIST_DIR}/client_v2_fake.c
      LIBS kvmux LABELS integration concurrent ${kvmux_v2_spec}
      TIMEOUT ${kvmux_v2_timeout})
  endforeach()
  # Both measure how long a small request waits behind a big one or how
  # soon a timed-out upload is cancelled: beside another CPU-heavy test on
  # 2 vCPUs those times double and the tests fail for a reason that is not
  # theirs. Alone they take ~10 s each.
  set_tests_properties(client_v2_hol_test client_v2_upload_timeout_test
                       PROPERTIES RUN_SERIAL TRUE)
endif()

# Event-loop mode (libuv adapter) sends values over the
# frame size fragmented: 8 and 64 MiB round trips, small GETs answered
# during a 64 MiB upload, cancel / timeout / kill -9 in the middle of one,
# KVMUX_ETOOBIG on a v1 server.
if(TARGET kvmux AND TARGET kvmuxd)
  find_path(KVMUX_LIBUV_INCLUDE uv.h)
  find_library(KVMUX_LIBUV_LIB uv)
  if(KVMUX_LIBUV_INCLUDE AND KVMUX_LIBUV_LIB)
    kvmux_add_test(client_loop_bigsend_test
      SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_loop_bigsend_test.c
              ${CMAKE_CURRENT_LIST_DIR}/loop_util.c
              ${CMAKE_CURRENT_LIST_DIR}/async_util.c
      LIBS kvmux ${KVMUX_LIBUV_LIB} LABELS integration concurrent fault TIMEOUT 240)
    target_include_directories(client_loop_bigsend_test PRIVATE ${KVMUX_LIBUV_INCLUDE})
  else()
    kvmux_missing_dependency_test(client_loop_bigsend_test
      "libuv not found (Debian: apt-get install libuv1-dev, then reconfigure)")
  endif()
endif()
