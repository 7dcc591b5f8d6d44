/* kvmuxd command-line parsing into a kvmux_server_config. */
#ifndef KVMUX_SERVER_CONFIG_H
#define KVMUX_SERVER_CONFIG_H

#include <stddef.h>

#include "server.h"

enum kvmux_config_action {
    KVMUX_CONFIG_RUN = 0,     /* options parsed and valid: run the server */
    KVMUX_CONFIG_HELP = 1,    /* --help given */
    KVMUX_CONFIG_VERSION = 2  /* --version given */
};

/* Parse argv[1..argc) over c (which should hold the defaults), both
 * "--opt value" and "--opt=value". Byte sizes accept K/M/G (or KiB/MiB/GiB)
 * suffixes, times are integer milliseconds. Then validates c.
 * *log_level receives --log-level (KVMUX_LOG_*; unchanged if absent).
 * Returns a kvmux_config_action, or -1 with a one-line message in err
 * (unknown option, missing or malformed value, out of range, cross-limit).
 * Strings in c point into argv. Thread-safe: yes. */
int kvmux_server_config_parse_args(kvmux_server_config *c, int *log_level,
                                   int argc, char **argv, char *err,
                                   size_t errlen);

/* The --help text. */
const char *kvmux_server_usage(void);

#endif
