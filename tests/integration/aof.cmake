# kvmuxd --aof over real sockets and a real file: every kind of write
# survives SIGTERM and kill -9 with its version; versions resume above the
# log; a corrupt log stops the start with the offset, --aof-repair starts;
# --fsync everysec and no; --maxmemory with both policies; active expiry.
if(TARGET kvmuxd)
  kvmux_add_test(aof_server_test
                 SOURCES integration/aof_server_test.c
                 LABELS integration fault TIMEOUT 120)
endif()
# The TTL cap (2^53-1 ms) end to end: over-cap SET/CAS refused by the
# library (EINVAL) and the server (BAD_REQUEST); cap-TTL keys survive
# SIGTERM, kill -9 and a log compaction.
if(TARGET kvmuxd AND TARGET kvmux)
  kvmux_add_test(aof_ttl_cap_test
                 SOURCES integration/aof_ttl_cap_test.c
                 LIBS kvmux LABELS integration fault TIMEOUT 120)
endif()

# The log's EXPIRY record end to end: EXPIRE/PERSIST of a 1 MiB value
# append a few dozen bytes, and kill -9 + restart keeps value, version and
# TTL.
if(TARGET kvmuxd AND TARGET kvmux)
  kvmux_add_test(aof_expire_record_test
                 SOURCES integration/aof_expire_record_test.c
                 LIBS kvmux LABELS integration fault TIMEOUT 120)
endif()
