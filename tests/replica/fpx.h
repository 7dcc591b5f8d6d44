/* fpx: drive tools/kvmux-faultproxy from a test (the one copy of the
 * start / command / stop code that faultproxy_test and migrate_paths_test
 * each had). The proxy runs as a child process; its commands go down a
 * pipe to its standard input, one line each, and each reply line
 * ("ok ..." or "error ...") is read back before the call returns, so a
 * command is in force when fpx_cmd returns. Every read is of a pipe the
 * child writes one line to per command: the proxy exiting ends it. */
#ifndef KVMUX_TEST_FPX_H
#define KVMUX_TEST_FPX_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

typedef struct fpx {
    pid_t pid;
    FILE *to, *from; /* its standard input and output */
    uint16_t port;   /* where it listens, on 127.0.0.1 */
} fpx;

/* Start the proxy at path in front of 127.0.0.1:upstream, listening on an
 * ephemeral loopback port (p->port). 0 on success; -1 (with a message on
 * stderr, nothing left running) if it could not be started or did not
 * print its "listening on" line. */
int fpx_start(fpx *p, const char *path, uint16_t upstream);

/* Send one command line and read its reply into reply (cap bytes, with
 * the newline). 0 if a reply line came, -1 if the proxy is gone. */
int fpx_cmd(fpx *p, const char *cmd, char *reply, size_t cap);

/* Close its input (it exits at end of input) and reap it. 0 if it exited
 * with status 0. */
int fpx_stop(fpx *p);

#endif
