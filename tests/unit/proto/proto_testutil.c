/* Helpers shared by the protocol unit tests (see proto_testutil.h). */
#include "proto_testutil.h"

#include <stdio.h>
#include <string.h>

#include "testutil.h"

int proto_test_load_vec(const char *name, uint8_t *out, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/frames.hex", KVMUX_VECTORS_DIR);
    FILE *fp = fopen(path, "r");
    REQUIRE(fp != NULL);
    char line[2048];
    size_t nl = strlen(name);
    int found = 0;
    while (!found && fgets(line, sizeof line, fp)) {
        if (strncmp(line, name, nl) != 0 || line[nl] != ' ') continue;
        found = 1;
        *len = 0;
        int hi = -1;
        for (char *p = line + nl; *p; p++) {
            int c = (unsigned char)*p, d;
            if (c >= '0' && c <= '9') d = c - '0';
            else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
            else continue;
            if (hi < 0) {
                hi = d;
            } else {
                REQUIRE(*len < PROTO_TEST_MAX_VEC);
                out[(*len)++] = (uint8_t)(hi << 4 | d);
                hi = -1;
            }
        }
    }
    fclose(fp);
    return found;
}

kvmux_frame proto_test_frame(uint8_t type, uint8_t version, uint8_t flags, uint32_t id) {
    kvmux_frame f;
    memset(&f, 0, sizeof f);
    f.type = type;
    f.version = version;
    f.flags = flags;
    f.request_id = id;
    return f;
}
