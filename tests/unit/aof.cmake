# Append-only log unit tests (real files in a temp dir, no sockets): CRC32C,
# replay of every record kind with versions and expiry, torn tails,
# corruption detection and --aof-repair, journal + group-commit writer, and
# compaction while writers run; the format-3 EXPIRY record (size, replay,
# format policy, compaction).
if(TARGET kvmuxd_core)
  kvmux_add_test(aof_test SOURCES unit/aof/aof_test.c
                 LIBS kvmuxd_core LABELS unit concurrent TIMEOUT 60)
  kvmux_add_test(store_mem_test SOURCES unit/store/store_mem_test.c
                 LIBS kvmuxd_core LABELS unit TIMEOUT 60)
endif()
