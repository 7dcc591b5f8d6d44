/* kvmux-iofail.so: make a replica's durable log writes fail, on command.
 *
 * Why not libfiu: C-Raft's raft_uv (the log kvmuxd writes) makes its
 * entries durable with kernel AIO: io_submit of a pwritev with RWF_DSYNC,
 * then io_getevents, both through syscall(2); it calls no fsync or
 * fdatasync for them. libfiu's POSIX preload hooks libc wrappers (write,
 * pwrite, fsync, fdatasync, ...), which these writes never go through, so
 * a libfiu fault on fsync never fires for them. This preload wraps
 * syscall(2) and, while the fault is on, turns every completed AIO write
 * that io_getevents returns into -EIO: the disk took the write but could
 * not make it durable, as a failed fsync reports it.
 *
 * Use: LD_PRELOAD=kvmux-iofail.so (under ASan also
 * ASAN_OPTIONS=verify_asan_link_order=0) and
 *   KVMUX_IOFAIL_DIR=DIR   the fault is on while DIR/fail.<pid> exists
 * Each failed write appends one line to DIR/fired.<pid>, so a test proves
 * that the fault fired in the process it meant. Without KVMUX_IOFAIL_DIR
 * the preload changes nothing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef long (*syscall_fn)(long, ...);

static int fault_on(const char *dir) {
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/fail.%ld", dir, (long)getpid());
    return stat(path, &st) == 0;
}

/* One line per failed write; open/append/close keeps no state. */
static void fired(const char *dir, long n) {
    char path[512], line[64];
    snprintf(path, sizeof path, "%s/fired.%ld", dir, (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    int len = snprintf(line, sizeof line, "io_getevents: %ld write(s) -> EIO\n", n);
    if (len > 0) (void)!write(fd, line, (size_t)len);
    close(fd);
}

long syscall(long number, ...) {
    static syscall_fn real;
    if (!real) real = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
    va_list ap;
    va_start(ap, number);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    long rc = real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    const char *dir = getenv("KVMUX_IOFAIL_DIR");
    if (number != SYS_io_getevents || rc <= 0 || !dir || !fault_on(dir)) return rc;
    struct io_event *ev = (struct io_event *)a[3];
    long n = 0;
    for (long i = 0; i < rc; i++)
        if (ev[i].res >= 0) {
            ev[i].res = -EIO;
            n++;
        }
    if (n) fired(dir, n);
    return rc;
}
