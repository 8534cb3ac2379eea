/*
 * Every function of gardenstate.h, through every error path a program can provoke: NULL for
 * each pointer argument (one at a time), bad lengths and kinds, outputs prefilled with a
 * sentinel and checked untouched on failure, buffer-too-small reporting, every outcome.
 * Run under AddressSanitizer and UndefinedBehaviorSanitizer by tests/c_programs.rs.
 *
 * Not provoked here: GDS_ERR_PANIC (a bug; the boundary is tested in Rust), GDS_ERR_IO,
 * GDS_ERR_PERMISSION (the tests run as any user, root included), GDS_ERR_NOT_READY (a 5 s
 * wait), GDS_ERR_OUT_OF_MEMORY, GDS_FEED_PENDING (needs a writer stopped mid-operation; the
 * engine's own tests cover it).
 */
#include "common.h"

/* The tests' clock hook: exported by libgardenstate, not declared in the header. */
void gds__advance_clock_for_tests(uint64_t ms);

#include <fcntl.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static char seg_name[64], seg_name2[64];
static char shm_dir[4096];

static void segment_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", shm_dir, name); }

/* ---- versions and status codes ------------------------------------------------------------ */

static void test_versions(void) {
    CHECK(strcmp(gds_version(), GDS_VERSION_STRING) == 0);
    unsigned major, minor, patch;
    CHECK(sscanf(gds_version(), "%u.%u.%u", &major, &minor, &patch) == 3);
    CHECK(major == GDS_VERSION_MAJOR && minor == GDS_VERSION_MINOR && patch == GDS_VERSION_PATCH);
    CHECK(GDS_VERSION_NUMBER == GDS_VERSION_MAJOR * 1000000 + GDS_VERSION_MINOR * 1000 + GDS_VERSION_PATCH);
    CHECK(gds_version_number() == GDS_VERSION_NUMBER);
    CHECK(gds_abi_version() == GDS_ABI_VERSION);
    char expect[64];
    snprintf(expect, sizeof expect, "%d.%d.%d", GDS_VERSION_MAJOR, GDS_VERSION_MINOR, GDS_VERSION_PATCH);
    CHECK(strcmp(GDS_VERSION_STRING, expect) == 0);
}

static const int all_codes[] = {
    GDS_OK, GDS_NOT_FOUND, GDS_FEED_EMPTY, GDS_FEED_PENDING, GDS_ERR_EXISTS,
    GDS_ERR_VERSION_MISMATCH, GDS_ERR_LOCKED, GDS_ERR_LOCK_MISMATCH, GDS_ERR_READ_ONLY,
    GDS_ERR_FULL_INDEX, GDS_ERR_FULL_HEAP, GDS_ERR_FULL_CLIENTS, GDS_ERR_KEY_LENGTH,
    GDS_ERR_VALUE_LENGTH, GDS_ERR_BUFFER_TOO_SMALL, GDS_ERR_FEED_OVERFLOW, GDS_ERR_IO,
    GDS_ERR_SEGMENT_EXISTS, GDS_ERR_NO_SEGMENT, GDS_ERR_PERMISSION, GDS_ERR_INCOMPATIBLE,
    GDS_ERR_CORRUPT, GDS_ERR_NOT_READY, GDS_ERR_INVALID_OPTIONS, GDS_ERR_REFUSED,
    GDS_ERR_NULL_ARGUMENT, GDS_ERR_INVALID_ARGUMENT, GDS_ERR_PANIC, GDS_ERR_OUT_OF_MEMORY,
    GDS_ERR_UNKNOWN,
};

static void test_status_codes(void) {
    /* No call has failed on this thread yet. */
    CHECK(gds_last_error_message() != NULL && gds_last_error_message()[0] == '\0');
    for (size_t i = 0; i < sizeof all_codes / sizeof all_codes[0]; i++) {
        const char *s = gds_strerror(all_codes[i]);
        CHECK(s != NULL && s[0] != '\0' && strcmp(s, "unknown status code") != 0);
        for (size_t j = 0; j < i; j++) CHECK(all_codes[j] != all_codes[i]);
    }
    /* The stable numbers themselves. */
    CHECK(GDS_OK == 0 && GDS_NOT_FOUND == 1 && GDS_ERR_EXISTS == 10 && GDS_ERR_FULL_INDEX == 20 &&
          GDS_ERR_IO == 30 && GDS_ERR_NULL_ARGUMENT == 40 && GDS_ERR_UNKNOWN == 49);
    int unknown[] = {-1, 4, 9, 15, 99, 1000000};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
        CHECK(strcmp(gds_strerror(unknown[i]), "unknown status code") == 0);
    CHECK(sizeof(gds_status) == 4);
}

/* ---- options ------------------------------------------------------------------------------ */

static void test_options(void) {
    EXPECT_NULL_ARG(gds_options_default(NULL), "opts");

    gds_options o;
    fill(&o, sizeof o);
    o.struct_size = 0; /* forgot to set it */
    EXPECT(gds_options_default(&o), GDS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(gds_last_error_message(), "struct_size") != NULL);
    CHECK(o.struct_size == 0 && untouched((char *)&o + 8, sizeof o - 8));
    o.struct_size = 1u << 20; /* garbage */
    EXPECT(gds_options_default(&o), GDS_ERR_INVALID_ARGUMENT);
    CHECK(untouched((char *)&o + 8, sizeof o - 8));

    o.struct_size = sizeof o;
    OK(gds_options_default(&o));
    CHECK(o.struct_size == sizeof o);
    CHECK(o.capacity_bytes == 64u << 20 && o.max_entries == 65536 && o.max_key == 256);
    CHECK(o.max_value == 1u << 20 && o.max_clients == 512 && o.feed_len == 65536);
    CHECK(o.mode == 0600 && o.flags == 0);

    /* A caller built against a newer header, with a bigger struct: the library fills what it
     * knows and says how much. */
    struct {
        gds_options o;
        uint64_t newer[2];
    } big;
    fill(&big, sizeof big);
    big.o.struct_size = sizeof big;
    OK(gds_options_default(&big.o));
    CHECK(big.o.struct_size == sizeof(gds_options) && big.o.max_key == 256);
    CHECK(untouched(big.newer, sizeof big.newer));
    CHECK(sizeof(gds_options) == 56 && sizeof(gds_info) == 96 && sizeof(gds_stats) == 144);
    CHECK(sizeof(gds_sweep_report) == 40 && sizeof(gds_check_report) == 64);
    CHECK(sizeof(gds_meta) == 40 && sizeof(gds_lock_info) == 24 && sizeof(gds_change) == 32);
}

/* ---- create, open, attach, close, destroy ------------------------------------------------ */

static void check_store_untouched(gds_store **s) { CHECK(untouched(s, sizeof *s)); }

static void poke_word(const char *name, int word, uint64_t value) {
    char path[4200];
    segment_path(path, sizeof path, name);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, &value, 8, (off_t)word * 8) == 8);
    close(fd);
}

static uint64_t peek_word(const char *name, int word) {
    char path[4200];
    segment_path(path, sizeof path, name);
    int fd = open(path, O_RDONLY);
    uint64_t v = 0;
    CHECK(fd >= 0);
    CHECK(pread(fd, &v, 8, (off_t)word * 8) == 8);
    close(fd);
    return v;
}

static void test_lifecycle(void) {
    gds_options o = small_options();
    gds_store *s;

    /* NULL for each pointer argument, one at a time: nothing is created. */
    fill(&s, sizeof s);
    EXPECT_NULL_ARG(gds_create(NULL, &o, &s), "name");
    check_store_untouched(&s);
    EXPECT_NULL_ARG(gds_create(seg_name, NULL, &s), "opts");
    check_store_untouched(&s);
    EXPECT_NULL_ARG(gds_create(seg_name, &o, NULL), "store_out");
    EXPECT_NULL_ARG(gds_open(NULL, &o, &s), "name");
    EXPECT_NULL_ARG(gds_open(seg_name, NULL, &s), "opts");
    EXPECT_NULL_ARG(gds_open(seg_name, &o, NULL), "store_out");
    EXPECT_NULL_ARG(gds_attach(NULL, &s), "name");
    EXPECT_NULL_ARG(gds_attach(seg_name, NULL), "store_out");
    EXPECT_NULL_ARG(gds_attach_group(NULL, &s), "name");
    EXPECT_NULL_ARG(gds_attach_group(seg_name, NULL), "store_out");
    EXPECT_NULL_ARG(gds_destroy(NULL), "name");
    check_store_untouched(&s);
    EXPECT(gds_attach(seg_name, &s), GDS_ERR_NO_SEGMENT); /* none of the above created it */
    check_store_untouched(&s);
    gds_close(NULL);

    /* Bad names, bad options. */
    EXPECT(gds_create("", &o, &s), GDS_ERR_INVALID_OPTIONS);
    EXPECT(gds_create("a/b", &o, &s), GDS_ERR_INVALID_OPTIONS);
    EXPECT(gds_create("..", &o, &s), GDS_ERR_INVALID_OPTIONS);
    EXPECT(gds_create("\xff\xfe", &o, &s), GDS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(gds_last_error_message(), "UTF-8") != NULL);
    EXPECT(gds_attach("a/b", &s), GDS_ERR_INVALID_OPTIONS);
    EXPECT(gds_destroy("a/b"), GDS_ERR_INVALID_OPTIONS);
    gds_options bad = o;
    bad.max_key = 70000;
    EXPECT(gds_create(seg_name, &bad, &s), GDS_ERR_INVALID_OPTIONS);
    CHECK(strstr(gds_last_error_message(), "max_key") != NULL);
    bad = o;
    bad.mode = 0644;
    EXPECT(gds_create(seg_name, &bad, &s), GDS_ERR_INVALID_OPTIONS);
    bad = o;
    bad.flags = 0x80;
    EXPECT(gds_open(seg_name, &bad, &s), GDS_ERR_INVALID_OPTIONS);
    bad = o;
    bad.struct_size = 8;
    EXPECT(gds_create(seg_name, &bad, &s), GDS_ERR_INVALID_ARGUMENT);
    struct {
        gds_options o;
        uint64_t newer;
    } big;
    memset(&big, 0, sizeof big);
    big.o = o;
    big.o.struct_size = sizeof big;
    big.newer = 1; /* an option this library does not know */
    EXPECT(gds_create(seg_name, &big.o, &s), GDS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(gds_last_error_message(), "does not know") != NULL);
    check_store_untouched(&s);
    EXPECT(gds_destroy(seg_name), GDS_NOT_FOUND);

    /* Create (with a bigger struct whose unknown field is 0), then every way to open it. */
    big.newer = 0;
    OK(gds_create(seg_name, &big.o, &s));
    CHECK(s != NULL);
    gds_store *s2, *s3, *s4;
    fill(&s2, sizeof s2);
    EXPECT(gds_create(seg_name, &o, &s2), GDS_ERR_SEGMENT_EXISTS);
    check_store_untouched(&s2);
    gds_options other = o;
    other.max_entries = 100;
    EXPECT(gds_open(seg_name, &other, &s2), GDS_ERR_INCOMPATIBLE);
    check_store_untouched(&s2);
    /* The message names the option, both values, and a way on that keeps the sessions. */
    const char *why = gds_last_error_message();
    CHECK(strstr(why, "max_entries=4096") != NULL && strstr(why, "max_entries=100 was given") != NULL);
    CHECK(strstr(why, "without giving max_entries") != NULL && strstr(why, "--max-entries 100") != NULL);
    CHECK(strstr(why, "destroy it") == NULL);
    /* Options not given accept what exists: no options at all, then only some of them. */
    gds_options none;
    memset(&none, 0, sizeof none);
    none.struct_size = sizeof none;
    OK(gds_open(seg_name, &none, &s2));
    gds_close(s2);
    none.max_key = o.max_key;
    none.flags = GDS_OPTION_EVICT_GIVEN; /* "no eviction", given: the segment has none */
    OK(gds_open(seg_name, &none, &s2));
    gds_close(s2);
    none.flags = GDS_OPTION_EVICT;
    EXPECT(gds_open(seg_name, &none, &s2), GDS_ERR_INCOMPATIBLE);
    CHECK(strstr(gds_last_error_message(), "evict=false, but evict=true was given") != NULL);
    none.flags = 0;
    none.capacity_bytes = o.capacity_bytes - 1; /* the same heap once rounded up to pages */
    OK(gds_open(seg_name, &none, &s2));
    gds_close(s2);
    OK(gds_open(seg_name, &o, &s2));
    OK(gds_attach(seg_name, &s3));
    OK(gds_attach_group(seg_name, &s4));
    OK(gds_set(s2, KEY("shared"), KEY("yes"), GDS_EXPIRY_NEVER, 0, &(uint64_t){0}));
    char buf[8];
    size_t len;
    gds_meta m;
    OK(gds_get(s4, KEY("shared"), (uint8_t *)buf, sizeof buf, &len, &m));
    CHECK(len == 3 && memcmp(buf, "yes", 3) == 0);
    gds_close(s2);
    gds_close(s3);
    gds_close(s4);
    gds_close(s);

    /* gds_open of a missing segment creates it. */
    OK(gds_open(seg_name2, &o, &s));
    gds_close(s);

    /* A damaged segment: another layout version, then a broken header checksum. */
    uint64_t version = peek_word(seg_name2, 1);
    fill(&s, sizeof s);
    poke_word(seg_name2, 1, 999);
    EXPECT(gds_attach(seg_name2, &s), GDS_ERR_INCOMPATIBLE);
    CHECK(strstr(gds_last_error_message(), "layout version") != NULL);
    poke_word(seg_name2, 1, version);
    poke_word(seg_name2, 5, peek_word(seg_name2, 5) + 1); /* max_entries, under the checksum */
    EXPECT(gds_attach(seg_name2, &s), GDS_ERR_CORRUPT);
    check_store_untouched(&s);
    OK(gds_destroy(seg_name2));
    EXPECT(gds_destroy(seg_name2), GDS_NOT_FOUND);

    /* A symlink where a segment should be is refused. */
    char link[4200], target[4200];
    segment_path(link, sizeof link, seg_name2);
    segment_path(target, sizeof target, seg_name);
    CHECK(symlink(target, link) == 0);
    EXPECT(gds_attach(seg_name2, &s), GDS_ERR_REFUSED);
    CHECK(unlink(link) == 0);
    check_store_untouched(&s);
    OK(gds_destroy(seg_name));
}

/* ---- info, write mode, shm dir ------------------------------------------------------------ */

/* gds_open_process: one handle per process, reused; a forked child and a recreated segment
 * get a new one; gds_close leaves it open. */
static void test_open_process(void) {
    gds_options none;
    memset(&none, 0, sizeof none);
    none.struct_size = sizeof none;
    gds_store *p1, *p2, *other;
    fill(&p1, sizeof p1);
    EXPECT_NULL_ARG(gds_open_process(NULL, &none, &p1), "name");
    EXPECT_NULL_ARG(gds_open_process(seg_name2, NULL, &p1), "opts");
    EXPECT_NULL_ARG(gds_open_process(seg_name2, &none, NULL), "store_out");
    check_store_untouched(&p1);
    OK(gds_open_process(seg_name2, &none, &p1));
    OK(gds_open_process(seg_name2, &none, &p2));
    CHECK(p1 == p2);
    gds_close(p1); /* a no-op: the process keeps it */
    OK(gds_set(p1, KEY("k"), KEY("v"), GDS_EXPIRY_NEVER, 0, &(uint64_t){0}));
    gds_options given = none;
    given.max_entries = 12345;
    EXPECT(gds_open_process(seg_name2, &given, &other), GDS_ERR_INCOMPATIBLE);
    CHECK(strstr(gds_last_error_message(), "max_entries=12345 was given") != NULL);
    given.max_entries = 65536; /* the default it was created with, given: another handle */
    OK(gds_open_process(seg_name2, &given, &other));
    CHECK(other != p1);

    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        gds_store *mine;
        if (gds_open_process(seg_name2, &none, &mine) != GDS_OK || mine == p1) _exit(1);
        gds_store *again;
        if (gds_open_process(seg_name2, &none, &again) != GDS_OK || again != mine) _exit(2);
        _exit(gds_set(mine, KEY("child"), KEY("1"), GDS_EXPIRY_NEVER, 0, &(uint64_t){0}) == GDS_OK ? 0 : 3);
    }
    int st;
    CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    gds_meta m;
    OK(gds_get_meta(p1, KEY("child"), &m));

    /* Destroyed and recreated: the next call opens the new segment. */
    OK(gds_destroy(seg_name2));
    gds_options small = small_options();
    gds_store *s;
    OK(gds_create(seg_name2, &small, &s));
    OK(gds_open_process(seg_name2, &none, &p2));
    EXPECT(gds_get_meta(p2, KEY("k"), &m), GDS_NOT_FOUND);
    gds_info info;
    info.struct_size = sizeof info;
    OK(gds_get_info(p2, &info));
    CHECK(info.max_entries == small.max_entries);
    gds_close(s);
    OK(gds_destroy(seg_name2));
}

static void test_info_and_modes(gds_store *s) {
    gds_info info;
    EXPECT_NULL_ARG(gds_get_info(NULL, &info), "store");
    fill(&info, sizeof info);
    EXPECT_NULL_ARG(gds_get_info(s, NULL), "info_out");
    info.struct_size = 3;
    EXPECT(gds_get_info(s, &info), GDS_ERR_INVALID_ARGUMENT);
    CHECK(untouched((char *)&info + 8, sizeof info - 8));
    info.struct_size = sizeof info;
    OK(gds_get_info(s, &info));
    CHECK(info.struct_size == sizeof info && info.max_key == 64 && info.max_value == 16u << 10);
    CHECK(info.max_entries == 4096 && info.max_clients == 64 && info.feed_len == 4096);
    CHECK(info.heap_bytes >= 4u << 20 && info.segment_bytes > info.heap_bytes);
    CHECK(info.index_slots >= info.max_entries && info.page_size >= 65536 && info.flags == 0);

    gds_write_mode mode;
    EXPECT_NULL_ARG(gds_get_write_mode(NULL, &mode), "store");
    EXPECT_NULL_ARG(gds_get_write_mode(s, NULL), "mode_out");
    OK(gds_get_write_mode(s, &mode));
    CHECK(mode == GDS_WRITE_MODE_WRITABLE);
    EXPECT_NULL_ARG(gds_set_write_mode(NULL, GDS_WRITE_MODE_REPLICA), "store");
    EXPECT(gds_set_write_mode(s, 3), GDS_ERR_INVALID_ARGUMENT);
    OK(gds_get_write_mode(s, &mode));
    CHECK(mode == GDS_WRITE_MODE_WRITABLE);

    gds_replication_state rs;
    EXPECT_NULL_ARG(gds_get_replication_state(NULL, &rs), "store");
    EXPECT_NULL_ARG(gds_get_replication_state(s, NULL), "state_out");
    rs.struct_size = 8;
    EXPECT(gds_get_replication_state(s, &rs), GDS_ERR_INVALID_ARGUMENT);
    rs.struct_size = sizeof rs;
    OK(gds_get_replication_state(s, &rs));
    CHECK(rs.struct_size == sizeof rs && rs.role == GDS_ROLE_PRIMARY && rs.epoch == 0 && rs.reserved == 0);
    uint64_t changes = rs.changes;

    uint64_t v;
    OK(gds_set(s, KEY("ro"), KEY("value"), GDS_EXPIRY_NEVER, 0, &v));
    gds_write_mode modes[] = {GDS_WRITE_MODE_REPLICA, GDS_WRITE_MODE_FENCED};
    gds_role roles[] = {GDS_ROLE_STANDBY, GDS_ROLE_FENCED};
    for (int i = 0; i < 2; i++) {
        OK(gds_set_write_mode(s, modes[i]));
        OK(gds_get_write_mode(s, &mode));
        CHECK(mode == modes[i]);
        /* every role change moves the counter; setting the same mode again does not */
        OK(gds_get_replication_state(s, &rs));
        CHECK(rs.role == roles[i] && rs.changes > changes);
        changes = rs.changes;
        OK(gds_set_write_mode(s, modes[i]));
        OK(gds_get_replication_state(s, &rs));
        CHECK(rs.role == roles[i] && rs.changes == changes);
        uint64_t out;
        fill(&out, sizeof out);
        EXPECT(gds_set(s, KEY("ro"), KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_READ_ONLY);
        EXPECT(gds_add(s, KEY("ro2"), KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_READ_ONLY);
        EXPECT(gds_compare_and_set(s, KEY("ro"), v, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_READ_ONLY);
        EXPECT(gds_set_and_unlock(s, KEY("ro"), 1, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_READ_ONLY);
        CHECK(untouched(&out, sizeof out));
        EXPECT(gds_delete(s, KEY("ro")), GDS_ERR_READ_ONLY);
        EXPECT(gds_touch(s, KEY("ro"), GDS_EXPIRY_NEVER, 0), GDS_ERR_READ_ONLY);
        EXPECT(gds_unlock(s, KEY("ro"), 1), GDS_ERR_READ_ONLY);
        uint8_t *val;
        size_t len;
        gds_meta m;
        gds_lock_info li;
        fill(&li, sizeof li);
        EXPECT(gds_lock(s, KEY("ro"), 1000, &val, &len, &m, &li), GDS_ERR_READ_ONLY);
        CHECK(untouched(&li, sizeof li));
        char buf[16];
        OK(gds_get(s, KEY("ro"), (uint8_t *)buf, sizeof buf, &len, &m)); /* reads still work */
        CHECK(m.version == v);
    }
    OK(gds_set_write_mode(s, GDS_WRITE_MODE_WRITABLE));
    OK(gds_get_replication_state(s, &rs));
    CHECK(rs.role == GDS_ROLE_PRIMARY && rs.changes > changes);
    OK(gds_delete(s, KEY("ro")));

    char *dir;
    EXPECT_NULL_ARG(gds_shm_dir(NULL), "path_out");
    OK(gds_shm_dir(&dir));
    CHECK(strcmp(dir, shm_dir) == 0);
    gds_buffer_free(dir);
    gds_buffer_free(NULL);
}

/* ---- reads and writes --------------------------------------------------------------------- */

static void test_reads_and_writes(gds_store *s) {
    uint64_t v1, v2, out;
    const char *k = "sid:1";
    OK(gds_set(s, KEY(k), KEY("hello"), GDS_EXPIRY_NEVER, 0, &v1));
    CHECK(v1 > 0);

    /* NULL for each pointer of the writes, one at a time; nothing written. */
    fill(&out, sizeof out);
    EXPECT_NULL_ARG(gds_set(NULL, KEY(k), KEY("x"), GDS_EXPIRY_NEVER, 0, &out), "store");
    EXPECT_NULL_ARG(gds_set(s, NULL, 3, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), "key");
    EXPECT_NULL_ARG(gds_set(s, KEY(k), NULL, 1, GDS_EXPIRY_NEVER, 0, &out), "value");
    EXPECT_NULL_ARG(gds_set(s, KEY(k), KEY("x"), GDS_EXPIRY_NEVER, 0, NULL), "version_out");
    EXPECT_NULL_ARG(gds_add(NULL, KEY("new"), KEY("x"), GDS_EXPIRY_NEVER, 0, &out), "store");
    EXPECT_NULL_ARG(gds_add(s, NULL, 3, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), "key");
    EXPECT_NULL_ARG(gds_add(s, KEY("new"), NULL, 1, GDS_EXPIRY_NEVER, 0, &out), "value");
    EXPECT_NULL_ARG(gds_add(s, KEY("new"), KEY("x"), GDS_EXPIRY_NEVER, 0, NULL), "version_out");
    EXPECT_NULL_ARG(gds_compare_and_set(NULL, KEY(k), v1, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), "store");
    EXPECT_NULL_ARG(gds_compare_and_set(s, NULL, 1, v1, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), "key");
    EXPECT_NULL_ARG(gds_compare_and_set(s, KEY(k), v1, NULL, 1, GDS_EXPIRY_NEVER, 0, &out), "value");
    EXPECT_NULL_ARG(gds_compare_and_set(s, KEY(k), v1, KEY("x"), GDS_EXPIRY_NEVER, 0, NULL), "version_out");
    EXPECT_NULL_ARG(gds_delete(NULL, KEY(k)), "store");
    EXPECT_NULL_ARG(gds_delete(s, NULL, 1), "key");
    EXPECT_NULL_ARG(gds_touch(NULL, KEY(k), GDS_EXPIRY_NEVER, 0), "store");
    EXPECT_NULL_ARG(gds_touch(s, NULL, 1, GDS_EXPIRY_NEVER, 0), "key");
    CHECK(untouched(&out, sizeof out));
    EXPECT(gds_add(s, KEY("new"), KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_OK); /* none added it */
    OK(gds_delete(s, KEY("new")));

    /* Reads: NULL for each pointer, outputs untouched. */
    uint8_t buf[64];
    size_t len;
    gds_meta m;
    uint8_t *val;
    fill(&len, sizeof len);
    fill(&m, sizeof m);
    fill(&val, sizeof val);
    fill(buf, sizeof buf);
    EXPECT_NULL_ARG(gds_get(NULL, KEY(k), buf, sizeof buf, &len, &m), "store");
    EXPECT_NULL_ARG(gds_get(s, NULL, 2, buf, sizeof buf, &len, &m), "key");
    EXPECT_NULL_ARG(gds_get(s, KEY(k), NULL, sizeof buf, &len, &m), "buf");
    EXPECT_NULL_ARG(gds_get(s, KEY(k), buf, sizeof buf, NULL, &m), "value_len_out");
    EXPECT_NULL_ARG(gds_get(s, KEY(k), buf, sizeof buf, &len, NULL), "meta_out");
    EXPECT_NULL_ARG(gds_get_alloc(NULL, KEY(k), &val, &len, &m), "store");
    EXPECT_NULL_ARG(gds_get_alloc(s, NULL, 2, &val, &len, &m), "key");
    EXPECT_NULL_ARG(gds_get_alloc(s, KEY(k), NULL, &len, &m), "value_out");
    EXPECT_NULL_ARG(gds_get_alloc(s, KEY(k), &val, NULL, &m), "value_len_out");
    EXPECT_NULL_ARG(gds_get_alloc(s, KEY(k), &val, &len, NULL), "meta_out");
    EXPECT_NULL_ARG(gds_get_meta(NULL, KEY(k), &m), "store");
    EXPECT_NULL_ARG(gds_get_meta(s, NULL, 2, &m), "key");
    EXPECT_NULL_ARG(gds_get_meta(s, KEY(k), NULL), "meta_out");
    CHECK(untouched(&len, sizeof len) && untouched(&m, sizeof m) && untouched(&val, sizeof val));
    CHECK(untouched(buf, sizeof buf));

    /* Absent keys: GDS_NOT_FOUND, outputs untouched, the last error message unchanged. */
    EXPECT(gds_set(s, KEY(""), KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_KEY_LENGTH);
    const char *msg = gds_last_error_message();
    char saved[256];
    snprintf(saved, sizeof saved, "%s", msg);
    EXPECT(gds_get(s, KEY("absent"), buf, sizeof buf, &len, &m), GDS_NOT_FOUND);
    EXPECT(gds_get_alloc(s, KEY("absent"), &val, &len, &m), GDS_NOT_FOUND);
    EXPECT(gds_get_meta(s, KEY("absent"), &m), GDS_NOT_FOUND);
    EXPECT(gds_delete(s, KEY("absent")), GDS_NOT_FOUND);
    EXPECT(gds_touch(s, KEY("absent"), GDS_EXPIRY_AFTER, 1000), GDS_NOT_FOUND);
    EXPECT(gds_compare_and_set(s, KEY("absent"), 1, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_NOT_FOUND);
    OK(gds_get(s, KEY(k), buf, sizeof buf, &len, &m)); /* a success leaves it too */
    CHECK(strcmp(gds_last_error_message(), saved) == 0);
    fill(&len, sizeof len);
    fill(&m, sizeof m);
    fill(&out, sizeof out);
    EXPECT(gds_get(s, KEY("absent"), buf, sizeof buf, &len, &m), GDS_NOT_FOUND);
    CHECK(untouched(&len, sizeof len) && untouched(&m, sizeof m) && untouched(&val, sizeof val));
    CHECK(untouched(&out, sizeof out));

    /* A hit. */
    OK(gds_get(s, KEY(k), buf, sizeof buf, &len, &m));
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK(m.version == v1 && m.value_len == 5 && m.ttl_left_ms == GDS_TTL_NEVER && m.lock_id == 0 &&
          m.lock_age_ms == 0);
    OK(gds_get_alloc(s, KEY(k), &val, &len, &m));
    CHECK(val != NULL && len == 5 && memcmp(val, "hello", 5) == 0 && m.version == v1);
    gds_buffer_free(val);
    fill(&m, sizeof m);
    OK(gds_get_meta(s, KEY(k), &m));
    CHECK(m.version == v1 && m.value_len == 5);

    /* Buffer too small: the needed size, nothing else. */
    fill(&m, sizeof m);
    fill(buf, sizeof buf);
    EXPECT(gds_get(s, KEY(k), buf, 4, &len, &m), GDS_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 5 && untouched(&m, sizeof m) && untouched(buf, sizeof buf));
    CHECK(strstr(gds_last_error_message(), "5 bytes") != NULL);
    len = 0;
    EXPECT(gds_get(s, KEY(k), NULL, 0, &len, &m), GDS_ERR_BUFFER_TOO_SMALL); /* size query */
    CHECK(len == 5 && untouched(&m, sizeof m));

    /* Empty values, NULL with length 0. */
    OK(gds_set(s, KEY("empty"), NULL, 0, GDS_EXPIRY_NEVER, 0, &out));
    OK(gds_get(s, KEY("empty"), NULL, 0, &len, &m));
    CHECK(len == 0 && m.value_len == 0 && m.version == out);
    OK(gds_get_alloc(s, KEY("empty"), &val, &len, &m));
    CHECK(val != NULL && len == 0);
    gds_buffer_free(val);
    OK(gds_delete(s, KEY("empty")));

    /* Key and value lengths. */
    uint8_t big[(16u << 10) + 1];
    memset(big, 'v', sizeof big);
    EXPECT(gds_set(s, NULL, 0, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_KEY_LENGTH);
    EXPECT(gds_set(s, big, 65, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_KEY_LENGTH);
    EXPECT(gds_get(s, big, 65, buf, sizeof buf, &len, &m), GDS_ERR_KEY_LENGTH);
    EXPECT(gds_get_alloc(s, NULL, 0, &val, &len, &m), GDS_ERR_KEY_LENGTH);
    EXPECT(gds_get_meta(s, big, 65, &m), GDS_ERR_KEY_LENGTH);
    EXPECT(gds_delete(s, big, 65), GDS_ERR_KEY_LENGTH);
    EXPECT(gds_touch(s, NULL, 0, GDS_EXPIRY_NEVER, 0), GDS_ERR_KEY_LENGTH);
    EXPECT(gds_set(s, KEY("big"), big, sizeof big, GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_VALUE_LENGTH);
    CHECK(strstr(gds_last_error_message(), "max_value") != NULL);
    OK(gds_set(s, big, 64, big, sizeof big - 1, GDS_EXPIRY_NEVER, 0, &out)); /* the limits */
    OK(gds_delete(s, big, 64));
    EXPECT(gds_set(s, KEY(k), (const uint8_t *)"x", (size_t)PTRDIFF_MAX + 1, GDS_EXPIRY_NEVER, 0, &out),
           GDS_ERR_INVALID_ARGUMENT);

    /* Expiry arguments. */
    fill(&out, sizeof out);
    EXPECT(gds_set(s, KEY(k), KEY("x"), 3, 1000, &out), GDS_ERR_INVALID_ARGUMENT);
    EXPECT(gds_set(s, KEY(k), KEY("x"), GDS_EXPIRY_AFTER, 0, &out), GDS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(gds_last_error_message(), "ttl_ms") != NULL);
    EXPECT(gds_set(s, KEY(k), KEY("x"), GDS_EXPIRY_SLIDING, 0, &out), GDS_ERR_INVALID_ARGUMENT);
    EXPECT(gds_touch(s, KEY(k), 7, 1000), GDS_ERR_INVALID_ARGUMENT);
    EXPECT(gds_touch(s, KEY(k), GDS_EXPIRY_AFTER, 0), GDS_ERR_INVALID_ARGUMENT);
    CHECK(untouched(&out, sizeof out));
    OK(gds_get_meta(s, KEY(k), &m));
    CHECK(m.version == v1); /* none of them wrote */

    /* add, compare-and-set. */
    EXPECT(gds_add(s, KEY(k), KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_EXISTS);
    CHECK(untouched(&out, sizeof out));
    EXPECT(gds_compare_and_set(s, KEY(k), v1 + 1000, KEY("x"), GDS_EXPIRY_NEVER, 0, &out),
           GDS_ERR_VERSION_MISMATCH);
    CHECK(untouched(&out, sizeof out) && strstr(gds_last_error_message(), "version") != NULL);
    OK(gds_compare_and_set(s, KEY(k), v1, KEY("world"), GDS_EXPIRY_AFTER, 60000, &v2));
    CHECK(v2 > v1);
    OK(gds_get(s, KEY(k), buf, sizeof buf, &len, &m));
    CHECK(len == 5 && memcmp(buf, "world", 5) == 0 && m.version == v2);
    CHECK(m.ttl_left_ms > 0 && m.ttl_left_ms <= 60000);
    OK(gds_add(s, KEY("added"), KEY("a"), GDS_EXPIRY_NEVER, 0, &out));
    CHECK(out > v2);

    /* touch keeps value and version, changes the deadline. */
    OK(gds_touch(s, KEY(k), GDS_EXPIRY_NEVER, 0));
    OK(gds_get_meta(s, KEY(k), &m));
    CHECK(m.ttl_left_ms == GDS_TTL_NEVER && m.version == v2);
    OK(gds_touch(s, KEY(k), GDS_EXPIRY_AFTER, 5000));
    OK(gds_get_meta(s, KEY(k), &m));
    CHECK(m.ttl_left_ms <= 5000 && m.version == v2);

    /* Expiry: AFTER expires, SLIDING is extended by reads. */
    OK(gds_set(s, KEY("short"), KEY("x"), GDS_EXPIRY_AFTER, 1, &out));
    usleep(20 * 1000);
    EXPECT(gds_get(s, KEY("short"), buf, sizeof buf, &len, &m), GDS_NOT_FOUND);
    EXPECT(gds_delete(s, KEY("short")), GDS_NOT_FOUND); /* expired: removed, not deleted */
    /* The clock is advanced, not slept (gds__advance_clock_for_tests): no stall of the machine
       between two reads can let the window run out. */
    OK(gds_set(s, KEY("slide"), KEY("x"), GDS_EXPIRY_SLIDING, 1000, &out));
    for (int i = 0; i < 3; i++) {
        gds__advance_clock_for_tests(500);
        OK(gds_get(s, KEY("slide"), buf, sizeof buf, &len, &m)); /* 1.5 s in all, window 1 s */
        CHECK(m.ttl_left_ms > 500 && m.ttl_left_ms <= 1000);
    }

    /* delete. */
    OK(gds_delete(s, KEY(k)));
    EXPECT(gds_delete(s, KEY(k)), GDS_NOT_FOUND);
    EXPECT(gds_get_meta(s, KEY(k), &m), GDS_NOT_FOUND);
    OK(gds_delete(s, KEY("added")));
    OK(gds_delete(s, KEY("slide")));
}

/* ---- session locks ------------------------------------------------------------------------ */

struct unlock_later {
    gds_store *store;
    const char *key;
    uint64_t lock_id;
    gds_status status;
};

static void *unlock_in_thread(void *arg) {
    struct unlock_later *u = (struct unlock_later *)arg;
    u->status = gds_unlock(u->store, KEY(u->key), u->lock_id);
    return NULL;
}

static void test_locks(gds_store *s) {
    const char *k = "sid:lock";
    uint64_t v, out;
    uint8_t *val;
    size_t len;
    gds_meta m;
    gds_lock_info li;
    OK(gds_set(s, KEY(k), KEY("cart=1"), GDS_EXPIRY_SLIDING, 60000, &v));

    fill(&val, sizeof val);
    fill(&len, sizeof len);
    fill(&m, sizeof m);
    fill(&li, sizeof li);
    EXPECT_NULL_ARG(gds_lock(NULL, KEY(k), 1000, &val, &len, &m, &li), "store");
    EXPECT_NULL_ARG(gds_lock(s, NULL, 3, 1000, &val, &len, &m, &li), "key");
    EXPECT_NULL_ARG(gds_lock(s, KEY(k), 1000, NULL, &len, &m, &li), "value_out");
    EXPECT_NULL_ARG(gds_lock(s, KEY(k), 1000, &val, NULL, &m, &li), "value_len_out");
    EXPECT_NULL_ARG(gds_lock(s, KEY(k), 1000, &val, &len, NULL, &li), "meta_out");
    EXPECT_NULL_ARG(gds_lock(s, KEY(k), 1000, &val, &len, &m, NULL), "lock_out");
    EXPECT_NULL_ARG(gds_unlock(NULL, KEY(k), 1), "store");
    EXPECT_NULL_ARG(gds_unlock(s, NULL, 3, 1), "key");
    fill(&out, sizeof out);
    EXPECT_NULL_ARG(gds_set_and_unlock(NULL, KEY(k), 1, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), "store");
    EXPECT_NULL_ARG(gds_set_and_unlock(s, NULL, 3, 1, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), "key");
    EXPECT_NULL_ARG(gds_set_and_unlock(s, KEY(k), 1, NULL, 1, GDS_EXPIRY_NEVER, 0, &out), "value");
    EXPECT_NULL_ARG(gds_set_and_unlock(s, KEY(k), 1, KEY("x"), GDS_EXPIRY_NEVER, 0, NULL), "version_out");
    EXPECT(gds_set_and_unlock(s, KEY(k), 1, KEY("x"), 9, 0, &out), GDS_ERR_INVALID_ARGUMENT);
    CHECK(untouched(&val, sizeof val) && untouched(&len, sizeof len) && untouched(&m, sizeof m));
    CHECK(untouched(&li, sizeof li) && untouched(&out, sizeof out));
    OK(gds_get_meta(s, KEY(k), &m));
    CHECK(m.lock_id == 0 && m.version == v); /* none of them locked or wrote */

    /* Absent key. */
    fill(&m, sizeof m);
    EXPECT(gds_lock(s, KEY("absent"), 1000, &val, &len, &m, &li), GDS_NOT_FOUND);
    EXPECT(gds_unlock(s, KEY("absent"), 1), GDS_NOT_FOUND);
    EXPECT(gds_set_and_unlock(s, KEY("absent"), 1, KEY("x"), GDS_EXPIRY_NEVER, 0, &out), GDS_NOT_FOUND);
    EXPECT(gds_lock(s, NULL, 0, 1000, &val, &len, &m, &li), GDS_ERR_KEY_LENGTH);
    CHECK(untouched(&val, sizeof val) && untouched(&m, sizeof m) && untouched(&li, sizeof li));
    CHECK(untouched(&out, sizeof out));

    /* Take it. */
    OK(gds_lock(s, KEY(k), 60000, &val, &len, &m, &li));
    CHECK(len == 6 && memcmp(val, "cart=1", 6) == 0);
    CHECK(li.lock_id != 0 && li.age_ms == 0 && li.took_over == 0 && li.reserved == 0);
    CHECK(m.lock_id == li.lock_id && m.version == li.lock_id);
    gds_buffer_free(val);
    uint64_t id = li.lock_id;

    /* Someone else finds it locked: only lock_out is written, with the holder. */
    fill(&val, sizeof val);
    fill(&len, sizeof len);
    fill(&m, sizeof m);
    fill(&li, sizeof li);
    EXPECT(gds_lock(s, KEY(k), 60000, &val, &len, &m, &li), GDS_ERR_LOCKED);
    CHECK(li.lock_id == id && li.age_ms < 60000 && li.took_over == 0 && li.reserved == 0);
    CHECK(untouched(&val, sizeof val) && untouched(&len, sizeof len) && untouched(&m, sizeof m));

    /* gds_lock_wait: the same checks, then a wait that runs out with the holder named. */
    EXPECT_NULL_ARG(gds_lock_wait(NULL, KEY(k), 1000, 1, &val, &len, &m, &li), "store");
    EXPECT_NULL_ARG(gds_lock_wait(s, NULL, 3, 1000, 1, &val, &len, &m, &li), "key");
    EXPECT_NULL_ARG(gds_lock_wait(s, KEY(k), 1000, 1, NULL, &len, &m, &li), "value_out");
    EXPECT_NULL_ARG(gds_lock_wait(s, KEY(k), 1000, 1, &val, NULL, &m, &li), "value_len_out");
    EXPECT_NULL_ARG(gds_lock_wait(s, KEY(k), 1000, 1, &val, &len, NULL, &li), "meta_out");
    EXPECT_NULL_ARG(gds_lock_wait(s, KEY(k), 1000, 1, &val, &len, &m, NULL), "lock_out");
    EXPECT(gds_lock_wait(s, KEY("absent"), 1000, 1, &val, &len, &m, &li), GDS_NOT_FOUND);
    fill(&li, sizeof li);
    EXPECT(gds_lock_wait(s, KEY(k), 60000, 1, &val, &len, &m, &li), GDS_ERR_LOCKED);
    CHECK(li.lock_id == id && li.took_over == 0 && li.reserved == 0);
    CHECK(untouched(&val, sizeof val) && untouched(&len, sizeof len) && untouched(&m, sizeof m));

    /* Reads see the lock, without waiting. */
    uint8_t buf[16];
    OK(gds_get(s, KEY(k), buf, sizeof buf, &len, &m));
    CHECK(m.lock_id == id);

    /* Unlock with the wrong id, then the right one, then again. */
    EXPECT(gds_unlock(s, KEY(k), id + 1), GDS_ERR_LOCK_MISMATCH);
    OK(gds_unlock(s, KEY(k), id));
    EXPECT(gds_unlock(s, KEY(k), id), GDS_ERR_LOCK_MISMATCH);
    OK(gds_get_meta(s, KEY(k), &m));
    CHECK(m.lock_id == 0);

    /* Take over a lock older than takeover_after. */
    OK(gds_lock(s, KEY(k), 60000, &val, &len, &m, &li));
    gds_buffer_free(val);
    id = li.lock_id;
    usleep(5 * 1000);
    OK(gds_lock(s, KEY(k), 1, &val, &len, &m, &li));
    gds_buffer_free(val);
    CHECK(li.took_over == 1 && li.lock_id != id);

    /* A wait ended by the holder's release in another thread: handed the lock, not taking
     * it over (patience 60 s; the release wakes the waiter). */
    struct unlock_later u = {s, k, li.lock_id, GDS_ERR_LOCKED};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, unlock_in_thread, &u) == 0);
    OK(gds_lock_wait(s, KEY(k), 60000, 60000, &val, &len, &m, &li));
    CHECK(pthread_join(t, NULL) == 0 && u.status == GDS_OK);
    gds_buffer_free(val);
    CHECK(li.took_over == 0 && li.lock_id != u.lock_id && m.lock_id == li.lock_id);

    /* set-and-unlock: the old holder lost; the new one writes and releases. */
    fill(&out, sizeof out);
    EXPECT(gds_set_and_unlock(s, KEY(k), id, KEY("stale"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_LOCK_MISMATCH);
    CHECK(untouched(&out, sizeof out));
    OK(gds_set_and_unlock(s, KEY(k), li.lock_id, KEY("cart=2"), GDS_EXPIRY_SLIDING, 60000, &out));
    OK(gds_get(s, KEY(k), buf, sizeof buf, &len, &m));
    CHECK(len == 6 && memcmp(buf, "cart=2", 6) == 0 && m.lock_id == 0 && m.version == out);
    OK(gds_delete(s, KEY(k)));
}

/* ---- maintenance: stats, sweep, check, scan, entry_at ------------------------------------ */

struct scan_state {
    gds_store *store;
    int seen;
    int stop_after;
    int delete_each;
    uint32_t slot;
    uint64_t bad;
};

static int scan_cb(void *user, const gds_entry *e) {
    struct scan_state *st = (struct scan_state *)user;
    st->seen++;
    st->slot = e->slot;
    /* Keys are "scan:N", values "value:N". */
    if (e->key_len < 6 || memcmp(e->key, "scan:", 5) != 0 || e->value_len != e->key_len + 1 ||
        memcmp(e->value, "value:", 6) != 0 || memcmp(e->key + 5, e->value + 6, e->key_len - 5) != 0 ||
        e->meta.value_len != e->value_len || e->reserved != 0)
        st->bad++;
    if (st->delete_each && gds_delete(st->store, e->key, e->key_len) != GDS_OK) st->bad++;
    return st->stop_after && st->seen >= st->stop_after;
}

static int count_cb(void *user, const gds_entry *e) {
    (void)e;
    (void)user; /* NULL in the test */
    return 0;
}

static void test_maintenance(gds_store *s) {
    uint64_t out;
    char key[32], value[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "scan:%d", i); /* the only live entries */
        snprintf(value, sizeof value, "value:%d", i);
        OK(gds_set(s, KEY(key), KEY(value), GDS_EXPIRY_NEVER, 0, &out));
    }

    OK(gds_set(s, KEY("sweep:short"), KEY("x"), GDS_EXPIRY_AFTER, 1, &out));
    usleep(5000); /* expired, and left for the sweep to reclaim */

    gds_sweep_report sweep;
    EXPECT_NULL_ARG(gds_sweep(NULL, 100, &sweep), "store");
    EXPECT_NULL_ARG(gds_sweep(s, 100, NULL), "report_out");
    fill(&sweep, sizeof sweep);
    sweep.struct_size = 16;
    EXPECT(gds_sweep(s, 100, &sweep), GDS_ERR_INVALID_ARGUMENT);
    CHECK(untouched((char *)&sweep + 8, sizeof sweep - 8));
    sweep.struct_size = sizeof sweep;
    OK(gds_sweep(s, 1u << 20, &sweep));
    CHECK(sweep.struct_size == sizeof sweep && sweep.ran == 1 && sweep.examined > 0);
    CHECK(sweep.expired == 1); /* "sweep:short" ("short" was removed by gds_delete) */

    gds_stats stats;
    EXPECT_NULL_ARG(gds_get_stats(NULL, &stats), "store");
    EXPECT_NULL_ARG(gds_get_stats(s, NULL), "stats_out");
    fill(&stats, sizeof stats);
    stats.struct_size = 0;
    EXPECT(gds_get_stats(s, &stats), GDS_ERR_INVALID_ARGUMENT);
    CHECK(untouched((char *)&stats + 8, sizeof stats - 8));
    stats.struct_size = sizeof stats;
    OK(gds_get_stats(s, &stats));
    CHECK(stats.struct_size == sizeof stats);
    CHECK(stats.live_entries == 50 && stats.sets >= 50);
    CHECK(stats.hits > 0 && stats.misses > 0 && stats.deletes > 0 && stats.locks > 0);
    CHECK(stats.lock_contentions > 0 && stats.lock_takeovers > 0 && stats.touches > 0);
    CHECK(stats.bytes_used > 0 && stats.bytes_free > 0 && stats.clients == 0 && stats.feed_head > 50);

    gds_check_report report;
    char *problems;
    EXPECT_NULL_ARG(gds_check(NULL, &report, &problems), "store");
    EXPECT_NULL_ARG(gds_check(s, NULL, &problems), "report_out");
    report.struct_size = sizeof report;
    fill(&problems, sizeof problems);
    EXPECT_NULL_ARG(gds_check(s, &report, NULL), "problems_out");
    report.struct_size = 1;
    EXPECT(gds_check(s, &report, &problems), GDS_ERR_INVALID_ARGUMENT);
    CHECK(untouched(&problems, sizeof problems));
    report.struct_size = sizeof report;
    OK(gds_check(s, &report, &problems));
    CHECK(problems == NULL && report.problem_count == 0 && report.entries == 50);
    CHECK(report.leaked_blocks == 0 && report.hidden_free_blocks == 0 && report.blocks_in_use >= 50);

    struct scan_state st = {s, 0, 0, 0, 0, 0};
    EXPECT_NULL_ARG(gds_scan(NULL, scan_cb, &st), "store");
    EXPECT_NULL_ARG(gds_scan(s, NULL, &st), "callback");
    CHECK(st.seen == 0);
    OK(gds_scan(s, count_cb, NULL)); /* user may be NULL */
    OK(gds_scan(s, scan_cb, &st));
    CHECK(st.seen == 50 && st.bad == 0);
    st.seen = 0;
    st.stop_after = 3;
    OK(gds_scan(s, scan_cb, &st));
    CHECK(st.seen == 3 && st.bad == 0);

    st.seen = 0;
    EXPECT_NULL_ARG(gds_entry_at(NULL, st.slot, scan_cb, &st), "store");
    EXPECT_NULL_ARG(gds_entry_at(s, st.slot, NULL, &st), "callback");
    CHECK(st.seen == 0);
    OK(gds_entry_at(s, st.slot, scan_cb, &st));
    CHECK(st.seen == 1 && st.bad == 0);
    EXPECT(gds_entry_at(s, 0xffffffffu, scan_cb, &st), GDS_NOT_FOUND);
    EXPECT(gds_entry_at(s, 0, scan_cb, &st), GDS_NOT_FOUND); /* a bucket's header slot */
    CHECK(st.seen == 1);

    /* The callback may write to the store it scans: delete every entry. */
    st.seen = 0;
    st.stop_after = 0;
    st.delete_each = 1;
    OK(gds_scan(s, scan_cb, &st));
    CHECK(st.seen == 50 && st.bad == 0);
    OK(gds_get_stats(s, &stats));
    CHECK(stats.live_entries == 0);
}

/* ---- the change feed ---------------------------------------------------------------------- */

static void test_feed(gds_store *s) {
    uint64_t head, v;
    gds_change c;
    EXPECT_NULL_ARG(gds_feed_head(NULL, &head), "store");
    EXPECT_NULL_ARG(gds_feed_head(s, NULL), "head_out");
    OK(gds_feed_head(s, &head));

    /* Wait-for-replication: with no standby nothing is acknowledged, so a write is never
       reported replicated; version 0 (nothing) always is. */
    uint32_t replicated = 7;
    EXPECT_NULL_ARG(gds_wait_replicated(NULL, head, 0, &replicated), "store");
    EXPECT_NULL_ARG(gds_wait_replicated(s, head, 0, NULL), "replicated_out");
    CHECK(replicated == 7);
    OK(gds_wait_replicated(s, head, 5, &replicated));
    CHECK(replicated == 0);
    OK(gds_wait_replicated(s, 0, 0, &replicated));
    CHECK(replicated == 1);
    EXPECT_NULL_ARG(gds_feed_read(NULL, head, &c), "store");
    EXPECT_NULL_ARG(gds_feed_read(s, head, NULL), "change_out");
    fill(&c, sizeof c);
    EXPECT(gds_feed_read(s, head, &c), GDS_FEED_EMPTY);
    CHECK(untouched(&c, sizeof c));

    OK(gds_set(s, KEY("feed"), KEY("x"), GDS_EXPIRY_NEVER, 0, &v));
    OK(gds_feed_read(s, head, &c));
    CHECK(c.seq == head && c.kind == GDS_CHANGE_SET && c.version == v);
    uint32_t slot = c.slot;
    OK(gds_delete(s, KEY("feed")));
    OK(gds_feed_read(s, c.seq + 1, &c));
    CHECK(c.kind == GDS_CHANGE_DELETE && c.slot == slot && c.version == 0);
    EXPECT(gds_feed_read(s, c.seq + 1, &c), GDS_FEED_EMPTY);
    OK(gds_set(s, KEY("feed"), KEY("x"), GDS_EXPIRY_SLIDING, 60000, &v));
    OK(gds_touch(s, KEY("feed"), GDS_EXPIRY_SLIDING, 60000));
    uint64_t next = c.seq + 1;
    OK(gds_feed_read(s, next, &c));
    CHECK(c.kind == GDS_CHANGE_SET && c.version == v);
    slot = c.slot;
    OK(gds_feed_read(s, next + 1, &c));
    CHECK(c.kind == GDS_CHANGE_TOUCH && c.slot == slot && c.seq == next + 1);
    OK(gds_delete(s, KEY("feed")));

    /* Lapped by the writers (feed_len 4096). */
    for (int i = 0; i < 4200; i++) OK(gds_set(s, KEY("lap"), KEY("x"), GDS_EXPIRY_NEVER, 0, &v));
    fill(&c, sizeof c);
    EXPECT(gds_feed_read(s, head, &c), GDS_ERR_FEED_OVERFLOW);
    CHECK(untouched(&c, sizeof c) && strstr(gds_last_error_message(), "resync") != NULL);
    OK(gds_delete(s, KEY("lap")));
}

/* ---- capacity: full index, full heap, eviction, one client slot --------------------------- */

static void *other_thread(void *arg) {
    gds_store *s = (gds_store *)arg;
    uint8_t buf[8];
    size_t len;
    gds_meta m;
    /* The only client slot is free between calls: this thread's calls work too. */
    int ok = gds_get(s, KEY("k"), buf, sizeof buf, &len, &m) == GDS_OK;
    /* Each thread has its own message. */
    ok = ok && gds_get(s, KEY("k"), buf, 0, &len, &m) == GDS_ERR_BUFFER_TOO_SMALL
         && strstr(gds_last_error_message(), "buffer") != NULL;
    return ok ? arg : NULL;
}

static void test_capacity(void) {
    char name[80];
    snprintf(name, sizeof name, "%s-cap", seg_name);
    gds_options o = small_options();
    o.max_entries = 1; /* one bucket: 7 slots */
    gds_store *s;
    OK(gds_create(name, &o, &s));
    uint64_t out;
    char key[16];
    gds_status st = GDS_OK;
    int n = 0;
    for (; n < 100 && st == GDS_OK; n++) {
        snprintf(key, sizeof key, "k%d", n);
        st = gds_set(s, KEY(key), KEY("v"), GDS_EXPIRY_NEVER, 0, &out);
    }
    CHECK(st == GDS_ERR_FULL_INDEX && n > 1);
    CHECK(strstr(gds_last_error_message(), "max_entries") != NULL);
    gds_close(s);
    OK(gds_destroy(name));

    /* A heap of one 64 KiB page, 1 KiB values; then the same with eviction. */
    for (int evict = 0; evict < 2; evict++) {
        o = small_options();
        o.capacity_bytes = 64u << 10;
        o.max_value = 1024;
        o.flags = evict ? GDS_OPTION_EVICT : 0;
        OK(gds_create(name, &o, &s));
        gds_info info;
        info.struct_size = sizeof info;
        OK(gds_get_info(s, &info));
        CHECK(info.flags == (evict ? GDS_OPTION_EVICT : 0u));
        uint8_t value[1024];
        memset(value, 'x', sizeof value);
        st = GDS_OK;
        for (n = 0; n < 200 && st == GDS_OK; n++) {
            snprintf(key, sizeof key, "k%d", n);
            st = gds_set(s, KEY(key), value, sizeof value, GDS_EXPIRY_NEVER, 0, &out);
        }
        if (evict) {
            CHECK(st == GDS_OK);
            gds_stats stats;
            stats.struct_size = sizeof stats;
            OK(gds_get_stats(s, &stats));
            CHECK(stats.evictions > 0);
        } else {
            CHECK(st == GDS_ERR_FULL_HEAP && n > 10);
        }
        gds_close(s);
        OK(gds_destroy(name));
    }

    /* One client slot: held only during a call, so a second thread works as well. */
    o = small_options();
    o.max_clients = 1;
    OK(gds_create(name, &o, &s));
    OK(gds_set(s, KEY("k"), KEY("v"), GDS_EXPIRY_NEVER, 0, &out)); /* and gives it back */
    EXPECT(gds_set(s, KEY(""), KEY("v"), GDS_EXPIRY_NEVER, 0, &out), GDS_ERR_KEY_LENGTH);
    pthread_t t;
    void *res;
    CHECK(pthread_create(&t, NULL, other_thread, s) == 0);
    CHECK(pthread_join(t, &res) == 0);
    CHECK(res == s);
    CHECK(strstr(gds_last_error_message(), "key") != NULL); /* main's message is its own */
    gds_close(s);
    OK(gds_destroy(name));
}

/* ---- one handle, many threads -------------------------------------------------------------- */

#define THREADS 4

struct thread_arg {
    gds_store *store;
    uint32_t id;
    long bad;
};

static void *thread_worker(void *p) {
    struct thread_arg *a = (struct thread_arg *)p;
    uint64_t rng = a->id + 1, v;
    char key[32];
    uint8_t value[256], buf[256];
    for (int i = 0; i < 3000; i++) {
        unsigned k = (unsigned)(rng_next(&rng) % 16);
        snprintf(key, sizeof key, "thread-key-%u", k);
        if (rng_next(&rng) % 2) {
            size_t n = 8 + (size_t)(rng_next(&rng) % (sizeof value - 16));
            for (size_t j = 0; j < n; j++) value[j] = (uint8_t)(k + j * 13 + (uint8_t)i);
            uint64_t sum = fnv1a(value, n);
            memcpy(value + n, &sum, 8);
            if (gds_set(a->store, KEY(key), value, n + 8, GDS_EXPIRY_NEVER, 0, &v) != GDS_OK) a->bad++;
        } else {
            size_t len;
            gds_meta m;
            gds_status st = gds_get(a->store, KEY(key), buf, sizeof buf, &len, &m);
            if (st == GDS_OK) {
                uint64_t sum;
                memcpy(&sum, buf + len - 8, 8);
                if (len < 16 || sum != fnv1a(buf, len - 8)) a->bad++;
            } else if (st != GDS_NOT_FOUND) {
                a->bad++;
            }
        }
    }
    return NULL;
}

static void test_threads(gds_store *s) {
    pthread_t t[THREADS];
    struct thread_arg args[THREADS];
    for (uint32_t i = 0; i < THREADS; i++) {
        args[i] = (struct thread_arg){s, i, 0};
        CHECK(pthread_create(&t[i], NULL, thread_worker, &args[i]) == 0);
    }
    for (uint32_t i = 0; i < THREADS; i++) {
        CHECK(pthread_join(t[i], NULL) == 0);
        CHECK(args[i].bad == 0);
    }
    /* No call in flight: no client slot in use (a slot is held only during a call). */
    gds_stats stats;
    stats.struct_size = sizeof stats;
    OK(gds_get_stats(s, &stats));
    CHECK(stats.clients == 0);
    char key[32];
    for (unsigned k = 0; k < 16; k++) {
        snprintf(key, sizeof key, "thread-key-%u", k);
        gds_status st = gds_delete(s, KEY(key));
        CHECK(st == GDS_OK || st == GDS_NOT_FOUND);
    }
}

int main(void) {
    snprintf(seg_name, sizeof seg_name, "gds-c-api-%ld", (long)getpid());
    snprintf(seg_name2, sizeof seg_name2, "gds-c-api2-%ld", (long)getpid());
    char *dir;
    OK(gds_shm_dir(&dir));
    snprintf(shm_dir, sizeof shm_dir, "%s", dir);
    gds_buffer_free(dir);
    /* gds_shm_dir succeeded without touching the message. */

    test_versions();
    test_status_codes();
    test_options();
    test_lifecycle();
    test_open_process();

    gds_options o = small_options();
    gds_store *s;
    OK(gds_create(seg_name, &o, &s));
    test_info_and_modes(s);
    test_reads_and_writes(s);
    test_locks(s);
    test_maintenance(s);
    test_feed(s);
    test_threads(s);
    gds_close(s);
    OK(gds_destroy(seg_name));

    test_capacity();
    printf("api: all checks passed\n");
    return 0;
}
