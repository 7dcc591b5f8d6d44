/* libkvmux's status -> error map (src/client/errors.c) and kvmux_strerror:
 * every status this build defines maps to an error (none to -1, which the
 * reader turns into EPROTO), the cluster statuses (docs/PROTOCOL.md 18.3)
 * to their own codes, and every error code has its own text. */
#include <string.h>

#include "client_internal.h"
#include "testutil.h"

int main(void) {
    int err = 1;
    for (int s = 0; s <= KVMUX_STATUS_MAX; s++) {
        err = 1;
        CHECK_EQ(kvmux__status_to_error((uint8_t)s, &err), 0);
        CHECK(err <= 0);
    }
    CHECK_EQ(kvmux__status_to_error(KVMUX_STATUS_MAX + 1, &err), -1);
    CHECK_EQ(kvmux__status_to_error(KVMUX_STATUS_WRONG_SHARD, &err), 0);
    CHECK_EQ(err, KVMUX_EWRONGSHARD);
    CHECK_EQ(kvmux__status_to_error(KVMUX_STATUS_TRY_AGAIN, &err), 0);
    CHECK_EQ(err, KVMUX_ETRYAGAIN);
    CHECK_EQ(KVMUX_EWRONGSHARD, -22);
    CHECK_EQ(KVMUX_EREDIRECTS, -23);
    CHECK_EQ(KVMUX_ETRYAGAIN, -24);
    CHECK_EQ(KVMUX_CLUSTER, 16);
    const char *unknown = kvmux_strerror(-99);
    CHECK(strcmp(kvmux_strerror(KVMUX_EWRONGSHARD), unknown) != 0);
    CHECK(strcmp(kvmux_strerror(KVMUX_EREDIRECTS), unknown) != 0);
    CHECK(strcmp(kvmux_strerror(KVMUX_ETRYAGAIN), unknown) != 0);
    CHECK(!kvmux_is_fatal(KVMUX_EWRONGSHARD) && !kvmux_is_fatal(KVMUX_ETRYAGAIN) &&
          !kvmux_is_fatal(KVMUX_EREDIRECTS));
    return test_report();
}
