/* fpx: a test's handle on kvmux-faultproxy (contract in fpx.h). */
#include "fpx.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail_start(fpx *p, const char *why) {
    fprintf(stderr, "fpx: %s\n", why);
    if (p->to) fclose(p->to);
    if (p->from) fclose(p->from);
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    memset(p, 0, sizeof *p);
    return -1;
}

int fpx_start(fpx *p, const char *path, uint16_t upstream) {
    memset(p, 0, sizeof *p);
    int in[2], out[2];
    if (pipe(in) != 0) return fail_start(p, "pipe failed");
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return fail_start(p, "pipe failed");
    }
    char up[32];
    snprintf(up, sizeof up, "127.0.0.1:%u", upstream);
    p->pid = fork();
    if (p->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl(path, "kvmux-faultproxy", "127.0.0.1", up, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (p->pid < 0) {
        close(in[1]);
        close(out[0]);
        return fail_start(p, "fork failed");
    }
    p->to = fdopen(in[1], "w");
    p->from = fdopen(out[0], "r");
    if (!p->to || !p->from) {
        if (!p->to) close(in[1]);
        if (!p->from) close(out[0]);
        return fail_start(p, "fdopen failed");
    }
    char line[128];
    unsigned port = 0;
    if (!fgets(line, sizeof line, p->from)) return fail_start(p, "no line from the proxy");
    if (sscanf(line, "listening on 127.0.0.1:%u", &port) != 1 || port == 0 || port > 65535)
        return fail_start(p, "no 'listening on' line from the proxy");
    p->port = (uint16_t)port;
    return 0;
}

int fpx_cmd(fpx *p, const char *cmd, char *reply, size_t cap) {
    if (fprintf(p->to, "%s\n", cmd) < 0 || fflush(p->to) != 0) return -1;
    return fgets(reply, (int)cap, p->from) ? 0 : -1;
}

int fpx_stop(fpx *p) {
    int st = -1;
    fclose(p->to); /* end of input: it exits */
    pid_t r = waitpid(p->pid, &st, 0);
    fclose(p->from);
    memset(p, 0, sizeof *p);
    return r > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}
