/*
 * A minimal libgardenstate program: open a store, write a session, read it back, close.
 *
 *   ffi/install.sh --prefix /usr/local
 *   cc examples/minimal.c $(pkg-config --cflags --libs gardenstate) -o minimal && ./minimal
 *
 * Every worker process of a web server would do the same gds_open; the first one creates
 * the segment (/dev/shm/<name>), the others attach to it.
 */
#include <gardenstate.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Prints the failed call and the library's detailed message, and returns 1. */
static int fail(const char *what, gds_status st) {
    fprintf(stderr, "%s: %s (%d): %s\n", what, gds_strerror(st), (int)st, gds_last_error_message());
    return 1;
}

int main(void) {
    /* The header and the loaded library must speak the same ABI. */
    if (gds_abi_version() != GDS_ABI_VERSION) {
        fprintf(stderr, "libgardenstate ABI %u, expected %u\n", gds_abi_version(), GDS_ABI_VERSION);
        return 1;
    }

    char name[64];
    snprintf(name, sizeof name, "gds-minimal-%ld", (long)getpid());

    /* Options: set struct_size, leave a field 0 for its default. */
    gds_options opts;
    memset(&opts, 0, sizeof opts);
    opts.struct_size = sizeof opts;
    opts.capacity_bytes = 4 << 20;
    opts.max_value = 64 << 10;

    gds_store *store = NULL;
    gds_status st = gds_open(name, &opts, &store);
    if (st != GDS_OK) return fail("gds_open", st);

    const char *key = "sid:4f2a";
    const char *value = "user=alice;cart=3";
    uint64_t version = 0;
    st = gds_set(store, (const uint8_t *)key, strlen(key), (const uint8_t *)value, strlen(value),
                 GDS_EXPIRY_SLIDING, 20 * 60 * 1000, &version);
    if (st != GDS_OK) return fail("gds_set", st);

    char buf[256];
    size_t len = 0;
    gds_meta meta;
    st = gds_get(store, (const uint8_t *)key, strlen(key), (uint8_t *)buf, sizeof buf, &len, &meta);
    if (st == GDS_NOT_FOUND) {
        fprintf(stderr, "the session vanished\n");
        return 1;
    }
    if (st != GDS_OK) return fail("gds_get", st);

    printf("libgardenstate %s: %s = %.*s (version %llu, expires in %llu ms)\n", gds_version(), key,
           (int)len, buf, (unsigned long long)meta.version, (unsigned long long)meta.ttl_left_ms);

    gds_close(store);
    /* A real server keeps its segment; the example cleans up after itself. */
    st = gds_destroy(name);
    if (st != GDS_OK) return fail("gds_destroy", st);
    return 0;
}
