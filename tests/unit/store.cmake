# Store unit tests (no sockets): versions, CAS, INCR, TTL with an injected
# clock, waiters, growth, concurrent writers.
if(TARGET kvmuxd_core)
  kvmux_add_test(store_test SOURCES unit/store/store_test.c
                 LIBS kvmuxd_core LABELS unit concurrent TIMEOUT 60)
endif()
if(TARGET kvmuxd_core)
  kvmux_add_test(slab_test SOURCES unit/store/slab_test.c
                 LIBS kvmuxd_core LABELS unit TIMEOUT 30)
endif()
if(TARGET kvmuxd_core)
  kvmux_add_test(store_keys_test SOURCES unit/store/store_keys_test.c
                 LIBS kvmuxd_core LABELS unit concurrent TIMEOUT 120)
endif()
if(TARGET kvmuxd_core)
  kvmux_add_test(store_slots_test SOURCES unit/store/store_slots_test.c
                 LIBS kvmuxd_core LABELS unit concurrent TIMEOUT 60)
endif()
