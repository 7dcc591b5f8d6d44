/* kvmuxd command-line parsing into a kvmux_server_config. */
#ifndef KVMUX_SERVER_CONFIG_H
#define KVMUX_SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

enum kvmux_config_action {
    KVMUX_CONFIG_RUN = 0,     /* options parsed and valid: run the server */
    KVMUX_CONFIG_HELP = 1,    /* --help given */
    KVMUX_CONFIG_VERSION = 2, /* --version given */
    KVMUX_CONFIG_CHECK = 3    /* --check-config given, options valid */
};

/* The whole configuration over c (which should hold the defaults): the
 * file named by --config (config_file.c), then argv, which wins wherever
 * --config stands; then validates. Returns a kvmux_config_action, or -1
 * with a one-line message in err ("FILE:LINE: ..." for a bad line of the
 * file or a value from it out of range). String options point into argv
 * or into c->file_buf_ (free with kvmux_server_config_deinit).
 * Thread-safe: yes. */
int kvmux_server_config_load(kvmux_server_config *c, int argc, char **argv, char *err,
                             size_t errlen);

/* Set option name (without the dashes) from a config file's text value;
 * flags take yes or no. Returns the option's index (>= 0), or -1 with a
 * message (unknown name, command-line-only option, bad value). */
int kvmux__config_set(kvmux_server_config *c, const char *name, const char *value,
                      char *err, size_t errlen);

/* config_file.c: read path into c (replacing c->file_buf_), recording in
 * lines[option index] the line that set each option. Returns 0, or -1
 * with "path:line: reason" (or "path: reason") in err. */
int kvmux__config_file_read(kvmux_server_config *c, const char *path, uint32_t *lines,
                            size_t nlines, char *err, size_t errlen);

/* For each option (name without dashes) whose value differs between old
 * and next, fn(name, reloadable, ud): reloadable is 0 if it cannot change
 * at run time, 1 if a reload applies it at once, 2 if a reload applies it
 * to connections accepted afterwards only. */
void kvmux__config_diff(const kvmux_server_config *old, const kvmux_server_config *next,
                        void (*fn)(const char *name, int reloadable, void *ud), void *ud);
/* Copy into next every option that cannot change at run time from old. */
void kvmux__config_keep_static(kvmux_server_config *next, const kvmux_server_config *old);

/* The option table, for tests and the example config: count, and the
 * name ("--bind") of option i. */
size_t kvmux__config_option_count(void);
const char *kvmux__config_option_name(size_t i);

/* Deprecated shape of kvmux_server_config_load (log level out through
 * *log_level too). Parse argv[1..argc) over c (which should hold the defaults), both
 * "--opt value" and "--opt=value". Byte sizes accept K/M/G (or KiB/MiB/GiB)
 * suffixes, times are integer milliseconds. Then validates c.
 * *log_level receives --log-level (KVMUX_LOG_*; unchanged if absent).
 * Returns a kvmux_config_action, or -1 with a one-line message in err
 * (unknown option, missing or malformed value, out of range, cross-limit).
 * Strings in c point into argv. Thread-safe: yes. */
int kvmux_server_config_parse_args(kvmux_server_config *c, int *log_level,
                                   int argc, char **argv, char *err,
                                   size_t errlen);

/* The path --cluster-map-tls uses: which 0 the CA, 1 the client
 * certificate, 2 its key, each with its default applied (server.h);
 * NULL when cluster_map_tls is off or nothing gives that path. */
const char *kvmux_server_cluster_map_tls_path(const kvmux_server_config *c, int which);

/* The --help text. */
const char *kvmux_server_usage(void);

#endif
