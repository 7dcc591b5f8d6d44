/* An application outside the kvmux tree, built only from what an install
 * provides (kvmux.h and libkvmux, found with pkg-config or find_package):
 * SET then GET a key on the server given on the command line, check the
 * value, and check that the library it runs with is the version its
 * header announced.
 *
 *     app HOST PORT
 *
 * Exit 0 on success, 1 with a message on stderr otherwise. */
#include <kvmux.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 1;
    }
    if (kvmux_version() != KVMUX_VERSION_NUM) {
        fprintf(stderr, "header %s, library %s\n", KVMUX_VERSION_STRING, kvmux_version_string());
        return 1;
    }
    kvmux_options opts;
    kvmux_options_init(&opts);
    opts.request_timeout_ms = 5000;
    kvmux_client *c;
    int rc = kvmux_connect(&c, argv[1], (uint16_t)atoi(argv[2]), &opts);
    if (rc != 0) {
        fprintf(stderr, "connect: %s\n", kvmux_strerror(rc));
        return 1;
    }
    static const char key[] = "install:greeting", val[] = "hello from an installed libkvmux";
    uint64_t version = 0;
    rc = kvmux_set(c, key, strlen(key), val, strlen(val), 0, &version, KVMUX_TIMEOUT_DEFAULT);
    kvmux_value *v = NULL;
    if (rc == 0) rc = kvmux_get(c, key, strlen(key), &v, KVMUX_TIMEOUT_DEFAULT);
    int ok = rc == 0 && v->len == strlen(val) && memcmp(v->data, val, v->len) == 0 &&
             v->version == version;
    if (rc != 0) fprintf(stderr, "set/get: %s\n", kvmux_strerror(rc));
    else if (!ok) fprintf(stderr, "GET returned the wrong value or version\n");
    else printf("%s (version %llu, libkvmux %s)\n", (const char *)v->data,
                (unsigned long long)v->version, kvmux_version_string());
    kvmux_value_free(v);
    kvmux_close(c);
    return ok ? 0 : 1;
}
