# kvmuxd --aof over real sockets and a real file: every kind of write
# survives SIGTERM and kill -9 with its version; versions resume above the
# log; a corrupt log stops the start with the offset, --aof-repair starts;
# --fsync everysec and no; --maxmemory with both policies; active expiry.
if(TARGET kvmuxd)
  kvmux_add_test(aof_server_test
                 SOURCES integration/aof_server_test.c integration/server_v2_util.c
                 LABELS integration fault TIMEOUT 120)
endif()
