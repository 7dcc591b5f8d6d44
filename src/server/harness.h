/* In-memory driver of kvmuxd's input path, for fuzzers and tests: bytes in,
 * responses out, with no socket and no loop thread. A harness is one
 * server (store, one loop) created without a listener; each run opens one
 * in-memory connection on it, feeds it bytes, and collects every byte the
 * server would have written. Not thread-safe: one thread drives it. */
#ifndef KVMUX_SERVER_HARNESS_H
#define KVMUX_SERVER_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

typedef struct kvmux_harness kvmux_harness;

/* A server for cfg (threads forced to 1, no --aof). Returns NULL with a
 * message in err on a bad config or out of memory. */
kvmux_harness *kvmux__harness_new(const kvmux_server_config *cfg, char *err, size_t errlen);

/* Free h and its server (no connection is left open between runs). */
void kvmux__harness_free(kvmux_harness *h);

/* Open a connection, feed in[0..n) in reads of at most chunk bytes (0 = as
 * large as a real read), running one loop iteration after each read, then
 * end the input (EOF) and run the loop until the connection is torn down
 * (closing it after a bounded number of iterations if it lingers, e.g. on
 * a parked WAIT). The output bytes (at most 16 MiB are kept) are then
 * readable with kvmux__harness_output until the next run. Returns 0, or -1
 * when out of memory for the connection. */
int kvmux__harness_run(kvmux_harness *h, const uint8_t *in, size_t n, size_t chunk);

/* The output of the last run: *len bytes (truncated to the harness's
 * output cap, 16 MiB); *truncated set when bytes were dropped. */
const uint8_t *kvmux__harness_output(const kvmux_harness *h, size_t *len, int *truncated);

/* The harness's server (stats, store) for assertions. */
kvmux_server *kvmux__harness_server(kvmux_harness *h);

#endif
