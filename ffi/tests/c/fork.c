/*
 * 8 forked worker processes (or, with "threads", 8 threads of one process) share one segment
 * through the C API, doing mixed operations (get, get_alloc, get_meta, set, add,
 * compare-and-set, delete, touch, lock + set_and_unlock or unlock) on a small shared key
 * space, with every value checksummed. A read that returns a torn, foreign or corrupted value
 * counts as bad; the test requires zero. Workers 0-3 use the parent's handle (inherited
 * through fork(), or shared by the threads), workers 4-7 attach their own. At the end the
 * parent checks every remaining value and runs gds_check, which must find no problem. The
 * threads form is what ThreadSanitizer runs (.ci/tsan.sh).
 *
 * Usage: fork [ops_per_worker] [threads]
 */
#include "common.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 8
#define KEYS 48
#define MAX_VALUE 2048

/* A value: header, payload, then the FNV-1a of everything before the checksum. */
struct header {
    uint32_t worker;
    uint32_t seq;
    uint32_t key;
    uint32_t payload_len;
};

static size_t make_value(uint8_t *buf, uint32_t worker, uint32_t seq, uint32_t key, uint64_t *rng) {
    struct header h = {worker, seq, key, (uint32_t)(rng_next(rng) % (MAX_VALUE - sizeof h - 8))};
    memcpy(buf, &h, sizeof h);
    for (uint32_t i = 0; i < h.payload_len; i++) buf[sizeof h + i] = (uint8_t)(seq * 31 + i * 7 + key);
    size_t n = sizeof h + h.payload_len;
    uint64_t sum = fnv1a(buf, n);
    memcpy(buf + n, &sum, 8);
    return n + 8;
}

/* Whether `v` is an intact value written for key number `key`. */
static int value_ok(const uint8_t *v, size_t len, uint32_t key) {
    struct header h;
    if (len < sizeof h + 8) return 0;
    memcpy(&h, v, sizeof h);
    if (h.key != key || h.worker >= WORKERS + 1 || sizeof h + h.payload_len + 8 != len) return 0;
    uint64_t sum;
    memcpy(&sum, v + len - 8, 8);
    return sum == fnv1a(v, len - 8);
}

static void key_name(char *out, size_t n, uint32_t key) { snprintf(out, n, "session:%02u", key); }

/* Per worker: each thread counts its own. */
static _Thread_local long bad_reads, bad_status;

static void expect_in(gds_status st, const gds_status *allowed, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (st == allowed[i]) return;
    fprintf(stderr, "worker %ld/%lu: %s returned %d (%s): %s\n", (long)getpid(), (unsigned long)pthread_self(), what, (int)st,
            gds_strerror(st), gds_last_error_message());
    bad_status++;
}

#define ALLOW(st, what, ...)                                                             \
    do {                                                                                 \
        const gds_status allowed_[] = {__VA_ARGS__};                                     \
        expect_in((st), allowed_, sizeof allowed_ / sizeof allowed_[0], (what));         \
    } while (0)

static void worker(gds_store *s, uint32_t id, long ops) {
    uint64_t rng = 0x5eed0000ull + id;
    uint8_t value[MAX_VALUE], buf[MAX_VALUE];
    char key[32];
    uint32_t seq = 0;
    for (long op = 0; op < ops; op++) {
        uint32_t k = (uint32_t)(rng_next(&rng) % KEYS);
        key_name(key, sizeof key, k);
        const uint8_t *kp = (const uint8_t *)key;
        size_t kl = strlen(key);
        size_t len;
        gds_meta m;
        uint64_t v;
        uint8_t *val;
        gds_lock_info li;
        gds_status st;
        unsigned r = (unsigned)(rng_next(&rng) % 100);
        if (r < 30) {
            st = gds_get(s, kp, kl, buf, sizeof buf, &len, &m);
            ALLOW(st, "gds_get", GDS_OK, GDS_NOT_FOUND);
            if (st == GDS_OK && (!value_ok(buf, len, k) || m.value_len != len)) bad_reads++;
        } else if (r < 38) {
            st = gds_get_alloc(s, kp, kl, &val, &len, &m);
            ALLOW(st, "gds_get_alloc", GDS_OK, GDS_NOT_FOUND);
            if (st == GDS_OK) {
                if (!value_ok(val, len, k)) bad_reads++;
                gds_buffer_free(val);
            }
        } else if (r < 42) {
            ALLOW(gds_get_meta(s, kp, kl, &m), "gds_get_meta", GDS_OK, GDS_NOT_FOUND);
        } else if (r < 60) {
            len = make_value(value, id, ++seq, k, &rng);
            ALLOW(gds_set(s, kp, kl, value, len, GDS_EXPIRY_SLIDING, 600000, &v), "gds_set", GDS_OK);
        } else if (r < 65) {
            len = make_value(value, id, ++seq, k, &rng);
            ALLOW(gds_add(s, kp, kl, value, len, GDS_EXPIRY_AFTER, 600000, &v), "gds_add", GDS_OK,
                  GDS_ERR_EXISTS);
        } else if (r < 75) {
            st = gds_get(s, kp, kl, buf, sizeof buf, &len, &m);
            ALLOW(st, "gds_get", GDS_OK, GDS_NOT_FOUND);
            if (st == GDS_OK) {
                if (!value_ok(buf, len, k)) bad_reads++;
                len = make_value(value, id, ++seq, k, &rng);
                ALLOW(gds_compare_and_set(s, kp, kl, m.version, value, len, GDS_EXPIRY_NEVER, 0, &v),
                      "gds_compare_and_set", GDS_OK, GDS_ERR_VERSION_MISMATCH, GDS_NOT_FOUND);
            }
        } else if (r < 79) {
            ALLOW(gds_delete(s, kp, kl), "gds_delete", GDS_OK, GDS_NOT_FOUND);
        } else if (r < 84) {
            ALLOW(gds_touch(s, kp, kl, GDS_EXPIRY_SLIDING, 600000), "gds_touch", GDS_OK, GDS_NOT_FOUND);
        } else {
            /* A request holding the session lock: read, then write back or release. */
            st = gds_lock(s, kp, kl, 600000, &val, &len, &m, &li);
            ALLOW(st, "gds_lock", GDS_OK, GDS_NOT_FOUND, GDS_ERR_LOCKED);
            if (st != GDS_OK) continue;
            if (!value_ok(val, len, k)) bad_reads++;
            gds_buffer_free(val);
            if (r < 94) {
                len = make_value(value, id, ++seq, k, &rng);
                /* Another worker's plain set or delete may have dropped the lock meanwhile. */
                ALLOW(gds_set_and_unlock(s, kp, kl, li.lock_id, value, len, GDS_EXPIRY_SLIDING, 600000, &v),
                      "gds_set_and_unlock", GDS_OK, GDS_ERR_LOCK_MISMATCH, GDS_NOT_FOUND);
            } else {
                ALLOW(gds_unlock(s, kp, kl, li.lock_id), "gds_unlock", GDS_OK, GDS_ERR_LOCK_MISMATCH,
                      GDS_NOT_FOUND);
            }
        }
    }
}

/* One worker, in a fork()ed process or a thread: attaches its own handle if it is one of
 * workers 4-7, runs, and returns its exit status (0, 2: bad reads, 3: unexpected statuses). */
static int run_worker(const char *name, gds_store *shared, uint32_t i, long ops) {
    int own = i >= WORKERS / 2;
    gds_store *mine = shared;
    if (own) OK(gds_attach(name, &mine));
    worker(mine, i, ops);
    if (own) gds_close(mine);
    if (bad_reads || bad_status)
        fprintf(stderr, "worker %u: %ld bad reads, %ld unexpected statuses\n", i, bad_reads, bad_status);
    return bad_reads ? 2 : bad_status ? 3 : 0;
}

struct thread_arg {
    const char *name;
    gds_store *shared;
    uint32_t id;
    long ops;
    int status;
};

static void *thread_main(void *p) {
    struct thread_arg *a = (struct thread_arg *)p;
    a->status = run_worker(a->name, a->shared, a->id, a->ops);
    return NULL;
}

struct verify {
    long entries, bad;
};

static int verify_cb(void *user, const gds_entry *e) {
    struct verify *v = (struct verify *)user;
    unsigned k;
    char name[32];
    v->entries++;
    if (e->key_len >= sizeof name) {
        v->bad++;
        return 0;
    }
    memcpy(name, e->key, e->key_len);
    name[e->key_len] = '\0';
    if (sscanf(name, "session:%u", &k) != 1 || !value_ok(e->value, e->value_len, k)) v->bad++;
    return 0;
}

int main(int argc, char **argv) {
    long ops = argc > 1 ? atol(argv[1]) : 20000;
    int threads = argc > 2 && strcmp(argv[2], "threads") == 0;
    char name[64];
    snprintf(name, sizeof name, "gds-c-fork-%ld", (long)getpid());
    gds_options o = small_options();
    o.capacity_bytes = 16u << 20;
    o.max_value = MAX_VALUE;
    gds_store *s;
    OK(gds_create(name, &o, &s));

    /* The parent uses the store before forking: its client slot must not be shared. */
    uint8_t value[MAX_VALUE];
    uint64_t rng = 1, v;
    char key[32];
    for (uint32_t k = 0; k < KEYS; k++) {
        key_name(key, sizeof key, k);
        size_t len = make_value(value, WORKERS, 0, k, &rng);
        OK(gds_set(s, KEY(key), value, len, GDS_EXPIRY_NEVER, 0, &v));
    }

    int failed = 0;
    if (threads) {
        pthread_t tids[WORKERS];
        struct thread_arg args[WORKERS];
        for (uint32_t i = 0; i < WORKERS; i++) {
            args[i] = (struct thread_arg){name, s, i, ops, -1};
            CHECK(pthread_create(&tids[i], NULL, thread_main, &args[i]) == 0);
        }
        for (uint32_t i = 0; i < WORKERS; i++) {
            CHECK(pthread_join(tids[i], NULL) == 0);
            if (args[i].status != 0) {
                fprintf(stderr, "worker thread %u: status %d\n", i, args[i].status);
                failed = 1;
            }
        }
        CHECK(!failed);
    }
    pid_t pids[WORKERS];
    for (uint32_t i = 0; i < WORKERS && !threads; i++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            /* Workers 4-7 close the inherited handle (releases only this child's slots). */
            int own = i >= WORKERS / 2;
            if (own) gds_close(s);
            int status = run_worker(name, own ? NULL : s, i, ops);
            if (!own) gds_close(s);
            exit(status);
        }
        pids[i] = pid;
    }
    for (uint32_t i = 0; i < WORKERS && !threads; i++) {
        int status;
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "worker %u: %s %d\n", i, WIFEXITED(status) ? "exit status" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            failed = 1;
        }
    }
    CHECK(!failed);

    /* Every remaining value is intact, and the segment is healthy. */
    struct verify ver = {0, 0};
    OK(gds_scan(s, verify_cb, &ver));
    CHECK(ver.bad == 0 && ver.entries > 0 && ver.entries <= KEYS);
    gds_sweep_report sweep;
    sweep.struct_size = sizeof sweep;
    OK(gds_sweep(s, 1u << 20, &sweep));
    gds_check_report report;
    char *problems = NULL;
    report.struct_size = sizeof report;
    OK(gds_check(s, &report, &problems));
    if (report.problem_count) fprintf(stderr, "gds_check:\n%s\n", problems);
    CHECK(report.problem_count == 0 && problems == NULL);
    CHECK(report.leaked_blocks == 0 && report.dead_clients == 0 && report.entries == (uint64_t)ver.entries);
    gds_stats stats;
    stats.struct_size = sizeof stats;
    OK(gds_get_stats(s, &stats));
    CHECK(stats.clients == 0); /* no call in flight: a slot is held only during a call */
    CHECK(stats.sets >= KEYS && stats.hits > 0 && stats.locks > 0);
    printf("fork: %d %s x %ld ops: %ld entries intact; %llu sets, %llu hits, %llu locks "
           "(%llu contended), %llu deletes\n",
           WORKERS, threads ? "threads" : "workers", ops, ver.entries, (unsigned long long)stats.sets, (unsigned long long)stats.hits,
           (unsigned long long)stats.locks, (unsigned long long)stats.lock_contentions,
           (unsigned long long)stats.deletes);
    gds_close(s);
    OK(gds_destroy(name));
    return 0;
}
