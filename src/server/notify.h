/* systemd's readiness protocol (sd_notify(3)), by hand. */
#ifndef KVMUX_SERVER_NOTIFY_H
#define KVMUX_SERVER_NOTIFY_H

/* Read $NOTIFY_SOCKET (a path, or "@name" for an abstract socket) and
 * open a datagram socket for it; without it every send is a no-op.
 * Call once at start, before the signal handlers. Returns 0, or -1 if
 * the variable is set but unusable (logged; sends are no-ops). */
int kvmux__notify_init(void);

/* Send one datagram ("READY=1\nSTATUS=..."). Async-signal-safe (one
 * sendto(2) on a socket opened by init). Returns 0, or -1 if not under
 * systemd or the send failed. */
int kvmux__notify(const char *msg);

/* "RELOADING=1\nMONOTONIC_USEC=<now>". Not async-signal-safe. */
int kvmux__notify_reloading(void);

#endif
