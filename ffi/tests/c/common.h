/* Helpers shared by the C test programs (compiled by tests/c_programs.rs). */
#ifndef GDS_TEST_COMMON_H
#define GDS_TEST_COMMON_H

/* The programs are strict C11 (-std=c11 -pedantic) plus POSIX and BSD calls (usleep,
 * pread, symlink). */
#define _DEFAULT_SOURCE

#include "gardenstate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,      \
                    __LINE__, #cond, gds_last_error_message());                          \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

/* Runs `call` and fails unless it returns `want`. */
#define EXPECT(call, want)                                                               \
    do {                                                                                 \
        gds_status st_ = (call);                                                         \
        if (st_ != (want)) {                                                             \
            fprintf(stderr, "%s:%d: %s\n  returned %d (%s), expected %d (%s)\n  message: %s\n", \
                    __FILE__, __LINE__, #call, (int)st_, gds_strerror(st_), (int)(want),  \
                    gds_strerror(want), gds_last_error_message());                       \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

#define OK(call) EXPECT(call, GDS_OK)

/* The byte every output is prefilled with, to check that failing calls leave it alone. */
#define SENTINEL 0xA5

static inline void fill(void *p, size_t n) { memset(p, SENTINEL, n); }

static inline int untouched(const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != SENTINEL) return 0;
    return 1;
}

/* Fails unless `call` returns GDS_ERR_NULL_ARGUMENT and the message names `arg`. */
#define EXPECT_NULL_ARG(call, arg)                                                       \
    do {                                                                                 \
        EXPECT(call, GDS_ERR_NULL_ARGUMENT);                                             \
        if (!strstr(gds_last_error_message(), "`" arg "`")) {                            \
            fprintf(stderr, "%s:%d: message does not name `%s`: %s\n", __FILE__, __LINE__, \
                    arg, gds_last_error_message());                                      \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

#define KEY(s) (const uint8_t *)(s), strlen(s)

/* FNV-1a, 64 bits. */
static inline uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* splitmix64: a small deterministic PRNG. */
static inline uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline gds_options small_options(void) {
    gds_options o;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.capacity_bytes = 4u << 20;
    o.max_entries = 4096;
    o.max_key = 64;
    o.max_value = 16u << 10;
    o.max_clients = 64;
    o.feed_len = 4096;
    return o;
}

#endif
