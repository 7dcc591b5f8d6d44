# The linearizability checker on hand-made good and bad histories and on a
# generated 100k-op history (no sockets).
kvmux_add_test(lincheck_test SOURCES unit/lincheck/lincheck_test.c
               LIBS kvmux_lincheck LABELS unit TIMEOUT 120)
