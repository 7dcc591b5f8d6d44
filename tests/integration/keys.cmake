# EXISTS, TTL, EXPIRE, PERSIST, SCAN through libkvmux against the real
# kvmuxd (v1 and v2; blocking, callbacks, futures; WAIT woken by a TTL
# change; SCAN while the store grows; --aof with kill -9 and compaction).
if(TARGET kvmux AND TARGET kvmuxd)
  kvmux_add_test(keys_test SOURCES integration/keys_test.c
                 LIBS kvmux LABELS integration concurrent TIMEOUT 120)
endif()
