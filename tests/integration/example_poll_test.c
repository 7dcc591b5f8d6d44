/* Runs examples/poll_client (the poll() loop shown in the README) against
 * the real kvmuxd and checks its whole output and exit status, so the
 * example keeps compiling and working with the current API. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "testutil.h"

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    test_server s;
    REQUIRE(test_server_start(&s, NULL) == 0);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "timeout 20 %s 127.0.0.1 %u", KVMUX_EXAMPLE_POLL_PATH,
             (unsigned)s.port);
    FILE *p = popen(cmd, "r");
    REQUIRE(p);
    char out[256] = {0};
    size_t n = fread(out, 1, sizeof out - 1, p);
    int st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(n, strlen("example:poll = hello from poll()\n"));
    CHECK(strcmp(out, "example:poll = hello from poll()\n") == 0);
    /* A refused connection is reported, not hung on. */
    snprintf(cmd, sizeof cmd, "timeout 20 %s 127.0.0.1 1 2>/dev/null", KVMUX_EXAMPLE_POLL_PATH);
    p = popen(cmd, "r");
    REQUIRE(p);
    st = pclose(p);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    CHECK_EQ(test_server_stop(&s, 5000), 0);
    return test_report();
}
