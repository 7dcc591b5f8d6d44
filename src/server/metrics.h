/* Server-side latency histograms, the slow log, and the Prometheus
 * endpoint (--metrics-addr). See metrics.c for the design. */
#ifndef KVMUX_SERVER_METRICS_H
#define KVMUX_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct kvmux_server;
struct kvmux_server_config;
struct kvmux_loop;
struct kvmux_conn;
struct kvmux_io;
typedef struct kvmux_metrics kvmux_metrics;

/* Latency buckets, upper bounds in microseconds (+Inf after the last):
 * fixed so that scrapes from every server and version aggregate. */
#define KVMUX_LAT_BUCKETS 16
extern const uint32_t kvmux__lat_bucket_us[KVMUX_LAT_BUCKETS];

/* Create s->metrics (histograms for every loop, the slow log) and, with
 * cfg->metrics_addr, the HTTP listener (bound and listening on return).
 * Before the loops run. Returns 0, or -1 with a message in err. */
int kvmux__metrics_new(struct kvmux_server *s, const struct kvmux_server_config *cfg,
                       char *err, size_t errlen);
/* 1 if a is a valid --metrics-addr (IP literal:port, IPv6 in brackets). */
int kvmux__metrics_valid_addr(const char *a);
/* Free s->metrics (NULL-safe). After every loop thread is joined. */
void kvmux__metrics_free(struct kvmux_server *s);
/* The listener's port, 0 without one. */
uint16_t kvmux__metrics_port(const kvmux_metrics *m);

/* Change the slow log's threshold and length (reload). Any thread. */
void kvmux__metrics_set_slowlog(kvmux_metrics *m, uint32_t threshold_us, uint32_t max_len);

/* A monotonic nanosecond timestamp to pass to kvmux__metrics_observe. */
uint64_t kvmux__metrics_now_ns(void);

/* Count a request of op on c (its loop's thread) that took from start_ns
 * (decoded) until now (answer queued, or parked): its histogram, and the
 * slow log if it took at least the threshold. */
void kvmux__metrics_observe(struct kvmux_conn *c, uint8_t op, const uint8_t *key,
                            size_t klen, uint64_t start_ns);

/* Loop 0: watch the listener (start) / close it and every HTTP
 * connection (shutdown). */
void kvmux__metrics_loop_start(struct kvmux_loop *l);
void kvmux__metrics_loop_stop(struct kvmux_loop *l);
/* Loop 0: an epoll event for the listener or an HTTP connection. */
void kvmux__metrics_on_event(struct kvmux_loop *l, struct kvmux_io *io, uint32_t events);

/* The Prometheus text exposition into a malloc'ed buffer (*out, *len;
 * the caller frees). Returns 0 or -1 (out of memory). Any thread. */
int kvmux__metrics_format(struct kvmux_server *s, char **out, size_t *len);

/* The slow log as text, newest first, one entry per line:
 * "id=N time_ms=UNIX_MS duration_us=N op=NAME client=ADDR key=KEY\n",
 * at most max entries (0 = all), into buf[0..cap). Returns the length
 * (entries that do not fit are left out). Any thread. */
size_t kvmux__slowlog_format(kvmux_metrics *m, uint32_t max, char *buf, size_t cap);
/* The longest line kvmux__slowlog_format writes (a 32-byte key escaped
 * as \xHH, an IPv6 peer, 20-digit numbers). */
#define KVMUX_SLOWLOG_LINE_MAX 400u
/* Drop every entry; returns how many there were. Any thread. */
uint32_t kvmux__slowlog_reset(kvmux_metrics *m);
/* Entries in the log now. Any thread. */
uint32_t kvmux__slowlog_len(kvmux_metrics *m);
/* The log's capacity now (--slowlog-max-len; 0 = off). Any thread. */
uint32_t kvmux__slowlog_cap(kvmux_metrics *m);

#endif
