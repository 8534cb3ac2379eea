/*
 * gardenstate.h: the C API of libgardenstate.
 *
 * CONVENTIONS (they hold for every function; exceptions are stated where they apply)
 *
 * Names. Everything is prefixed `gds_` (functions, types) or `GDS_` (macros, constants).
 *
 * Versions. GDS_VERSION_MAJOR/MINOR/PATCH, GDS_VERSION_STRING and GDS_VERSION_NUMBER describe
 * this header; gds_version() and gds_version_number() describe the loaded library.
 * GDS_ABI_VERSION changes only when a compiled program would break; it is also the SONAME
 * (libgardenstate.so.1). A binding checks gds_abi_version() == GDS_ABI_VERSION when it loads
 * the library, before any other call, and refuses to run if they differ.
 *
 * Handles. A gds_store is opaque: get one from gds_create, gds_open, gds_attach or
 * gds_attach_group, release it with gds_close. gds_close(NULL) is a no-op. Closing a handle
 * twice, or using it after gds_close, is undefined behaviour.
 *
 * Create or attach. gds_open creates the segment with the options given (a field left 0 takes
 * its default) or attaches to the existing one, checking only the options given: a field left
 * 0 accepts the segment's value, and eviction is checked only when flags has GDS_OPTION_EVICT
 * or GDS_OPTION_EVICT_GIVEN (for "no eviction"). So gds_open with only struct_size set
 * attaches to a segment of any shape, such as one the CLI created with other options; a
 * caller that sets every option keeps the check it had. A given option that differs from the
 * segment's fails with GDS_ERR_INCOMPATIBLE, and the message names the option, both values,
 * and the ways on that keep the segment's sessions (open without that option, or move the
 * sessions with dump and restore --create); it never advises destroying a live segment.
 * gds_open_process is gds_open with a handle the library keeps for the process, for runtimes
 * that free everything between requests (PHP): the same name and options give the same handle
 * back while this process opened it and the segment file is the one opened; gds_close leaves it.
 *
 * Status codes. Every function that can fail returns a gds_status. GDS_OK is 0. Codes below
 * 10 are outcomes a correct program meets in normal operation (GDS_NOT_FOUND: the key is
 * absent or expired; GDS_FEED_EMPTY, GDS_FEED_PENDING); codes from 10 up are errors. Codes are
 * stable: never renumbered, never reused; new ones may be added, so treat an unknown code as
 * an error. gds_strerror(code) gives a static description of any code.
 *
 * Error messages. An error (code 10 or more) also sets a thread-local message that says what
 * was expected, what was found and what to do: gds_last_error_message(). It is left unchanged
 * by successes and outcomes, like errno, and stays valid until the next gds_ call on the same
 * thread. It is never NULL.
 *
 * Outputs. Output parameters are pointers the caller provides. They are written only when the
 * function returns GDS_OK; on any other status they are left untouched. Two exceptions, where
 * the failure itself carries an answer: GDS_ERR_BUFFER_TOO_SMALL from gds_get writes the size
 * needed to *value_len_out, and GDS_ERR_LOCKED from gds_lock writes the holder's lock id and
 * age to *lock_out. The bytes of a caller buffer passed to gds_get are unspecified unless it
 * returns GDS_OK.
 *
 * NULL. Every pointer argument is checked: a NULL where a pointer is required returns
 * GDS_ERR_NULL_ARGUMENT and does nothing; it never crashes. Every pointer is required, with
 * three exceptions: a byte string (a pointer and a length: keys, values, buffers) may be NULL
 * when its length is 0; the `user` pointer of gds_scan and gds_entry_at is passed through
 * unread and may be NULL; and the release functions gds_close and gds_buffer_free accept NULL.
 * A non-NULL pointer must be valid (for the length given, or for its type); that cannot be
 * checked.
 *
 * Byte strings. Keys and values are arbitrary bytes (a pointer and a length), not C strings.
 * A segment name is a NUL-terminated string of 1 to 200 characters from [A-Za-z0-9._-].
 *
 * Ownership and lifetimes. The library never keeps a pointer the caller passed in after the
 * call returns. Memory the library allocates for the caller (gds_get_alloc, gds_lock,
 * gds_check, gds_shm_dir) is freed with gds_buffer_free, and only with it; NULL is a no-op.
 * Pointers handed to a gds_scan_fn callback are valid only during that callback. Strings from
 * gds_version and gds_strerror are static.
 *
 * Extensible structs. gds_options, gds_info, gds_stats, gds_sweep_report,
 * gds_check_report and gds_replication_state begin with `uint64_t struct_size`: set it to
 * sizeof the struct before the call. New fields are only ever added at the end, so a program
 * built against an older header keeps working with a newer library. An option field left 0
 * takes its default. On return the library sets struct_size to the number of bytes it filled.
 * The data-path structs (gds_meta, gds_lock_info, gds_entry, gds_change) are fixed for an ABI
 * version.
 *
 * Failover. A write on a segment that does not take writes (a standby, a fenced primary, a
 * primary whose daemon stopped renewing its write lease) fails with GDS_ERR_READ_ONLY; reads
 * still work. gds_get_replication_state tells a worker the epoch, the role (GDS_ROLE_*) and a
 * change counter that grows on every role change and epoch raise, in a few atomic loads: cheap
 * enough for every request. A web app answers such a write, or a request that needs one while
 * the role is not GDS_ROLE_PRIMARY, with HTTP 503 and `Retry-After: 1` (not 500): a failover or
 * a renewed lease gives writes back within about a second, and a load balancer retries or
 * moves to the new primary.
 *
 * Expiry. Writes take a gds_expiry_kind (GDS_EXPIRY_NEVER, GDS_EXPIRY_AFTER,
 * GDS_EXPIRY_SLIDING) and a TTL in milliseconds (at least 1; ignored for NEVER). Expired
 * entries are never returned. gds_meta.ttl_left_ms is GDS_TTL_NEVER for an entry that never
 * expires.
 *
 * Threads. A gds_store is safe to use from any number of threads at once: open one per process
 * and share it. Every function may be called from any thread concurrently with any other
 * call, except gds_close, which must not overlap any other use of that handle. A thread holds
 * a client slot of the segment only while it is inside a call, so the number of threads is not
 * a limit: max_clients bounds the calls in flight at once across all processes (a call that
 * finds every slot in use waits for one, up to 2 s, before GDS_ERR_FULL_CLIENTS).
 *
 * fork(). A handle inherited through fork() works in the child: its calls claim slots under
 * the child's own pid, never the parent's, and gds_close in the child touches nothing of the
 * parent's. Open the store in the parent before forking (prefork servers do) and fork while
 * no other thread is inside a gds_ call.
 *
 * Panics. No function unwinds into the caller or aborts the process: an internal panic (a bug)
 * is caught and returned as GDS_ERR_PANIC, with details in gds_last_error_message(). The
 * segment stays consistent (it survives a process killed at any instruction) and the handle
 * stays usable.
 *
 * CAVEATS
 *
 * - Linux only: segments live in /dev/shm (or $GARDENSTATE_SHM_DIR), liveness is read from
 *   /proc.
 * - All processes sharing a segment must share a PID namespace and see the same /dev/shm: a
 *   dead client or lock owner is recognized by its pid and start time. A process of another
 *   PID namespace is refused at attach (GDS_ERR_REFUSED naming both namespaces). A process that
 *   cannot read /proc (out of file descriptors or memory, hidepid) never takes a live
 *   process's slot or lock: what it cannot tell is not dead.
 * - A process killed in the middle of any call (kill -9) leaves the segment consistent; what it
 *   held (memory, locks, its client slot) is reclaimed by the survivors.
 * - Do not call gds_ functions from a signal handler: they allocate and use thread-locals.
 * - Shared memory is volatile: a reboot loses every entry.
 * - A segment destroyed while a handle is attached (gds_destroy, `gardenstate destroy --force`)
 *   makes every later call on that handle fail with GDS_ERR_DESTROYED: close it and call
 *   gds_open again, which creates or attaches the segment now under the name. Each open
 *   handle holds a shared flock(2) on the segment file, which is how `gardenstate destroy`
 *   tells (and names) the processes attached.
 * - A scan callback must not throw a C++ exception or longjmp out of the callback.
 * - The static library bundles the Rust standard library: do not link two Rust static
 *   libraries into one program (duplicate symbols); use libgardenstate.so then.
 * - A caught panic also prints a line to the process's standard error (the Rust runtime's
 *   default hook).
 * - Running out of memory inside the library (while copying a value out, say) aborts the
 *   process, as allocation failure does in Rust; only the buffers handed to the caller report
 *   GDS_ERR_OUT_OF_MEMORY.
 */

#ifndef GARDENSTATE_H
#define GARDENSTATE_H

/* Generated by cbindgen from ffi/src: do not edit. Regenerate with
   GDS_BLESS=1 cargo test -p gardenstate-ffi --test header */

#include <stddef.h>
#include <stdint.h>

#define GDS_STRINGIFY_(x) #x
#define GDS_STRINGIFY(x) GDS_STRINGIFY_(x)
/**
 * The library version as a string literal, "MAJOR.MINOR.PATCH"; `gds_version()` returns
 * the loaded library's.
 */
#define GDS_VERSION_STRING \
    GDS_STRINGIFY(GDS_VERSION_MAJOR) "." GDS_STRINGIFY(GDS_VERSION_MINOR) "." GDS_STRINGIFY(GDS_VERSION_PATCH)

/**
 * Major version of libgardenstate (the `gardenstate-ffi` crate version).
 */
#define GDS_VERSION_MAJOR 0

/**
 * Minor version of libgardenstate.
 */
#define GDS_VERSION_MINOR 1

/**
 * Patch version of libgardenstate.
 */
#define GDS_VERSION_PATCH 0

/**
 * The version as one comparable number, `MAJOR * 1000000 + MINOR * 1000 + PATCH`;
 * `gds_version_number()` returns the same.
 */
#define GDS_VERSION_NUMBER (((GDS_VERSION_MAJOR * 1000000) + (GDS_VERSION_MINOR * 1000)) + GDS_VERSION_PATCH)

/**
 * The ABI version this header describes. A binding compares it with `gds_abi_version()`
 * when it loads the library and refuses to run on a mismatch. It is also the number in the
 * shared library's SONAME (`libgardenstate.so.1`).
 */
#define GDS_ABI_VERSION 1

/**
 * `gds_options.flags`: when full, evict the entry closest to expiry instead of failing
 * with `GDS_ERR_FULL_*`. Off by default: sessions are not a cache.
 */
#define GDS_OPTION_EVICT 1

/**
 * `gds_options.flags`: eviction is given explicitly, so `gds_open` checks it against an
 * existing segment, also when `GDS_OPTION_EVICT` is clear ("no eviction"). `GDS_OPTION_EVICT`
 * set is given by itself; with neither bit an existing segment's eviction is accepted
 * either way (a clear bit cannot tell "no eviction" from "not given").
 */
#define GDS_OPTION_EVICT_GIVEN 2

/**
 * `gds_meta.ttl_left_ms` of an entry that never expires.
 */
#define GDS_TTL_NEVER UINT64_MAX

/**
 * The result of every call that can fail. Values are stable: never renumbered, never
 * reused. Codes below 10 are outcomes, not errors; codes from 10 up are errors.
 */
enum gds_status
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * Success.
     */
    GDS_OK = 0,
    /**
     * Outcome: the key is absent or expired (`gds_get`, `gds_delete`, `gds_lock`,
     * `gds_unlock`, ...), or the segment does not exist (`gds_destroy`).
     */
    GDS_NOT_FOUND = 1,
    /**
     * Outcome of `gds_feed_read`: no new change; the cursor is at the head.
     */
    GDS_FEED_EMPTY = 2,
    /**
     * Outcome of `gds_feed_read`: the change at the cursor is reserved but not yet written
     * (its writer is mid-operation, paused, or died). Retry later.
     */
    GDS_FEED_PENDING = 3,
    /**
     * `gds_add`: the key is already present.
     */
    GDS_ERR_EXISTS = 10,
    /**
     * `gds_compare_and_set`: the entry is at another version. Re-read and retry.
     */
    GDS_ERR_VERSION_MISMATCH = 11,
    /**
     * `gds_lock`: another lock id holds the entry (its id and age are in `*lock_out`).
     */
    GDS_ERR_LOCKED = 12,
    /**
     * `gds_unlock`, `gds_set_and_unlock`: the lock id no longer holds the entry (it was taken
     * over, or the entry is not locked). The write did not happen.
     */
    GDS_ERR_LOCK_MISMATCH = 13,
    /**
     * A write on a segment in replica or fenced mode. Write on the primary.
     */
    GDS_ERR_READ_ONLY = 14,
    /**
     * No free index slot near the key: more live entries than `max_entries`.
     */
    GDS_ERR_FULL_INDEX = 20,
    /**
     * No free heap block of the record's size class (`capacity_bytes` exhausted).
     */
    GDS_ERR_FULL_HEAP = 21,
    /**
     * Every client slot is taken by a live thread (`max_clients`).
     */
    GDS_ERR_FULL_CLIENTS = 22,
    /**
     * The key is empty or longer than the segment's `max_key`.
     */
    GDS_ERR_KEY_LENGTH = 23,
    /**
     * The value is longer than the segment's `max_value`.
     */
    GDS_ERR_VALUE_LENGTH = 24,
    /**
     * `gds_get`: the buffer is shorter than the value; `*value_len` holds the size needed.
     */
    GDS_ERR_BUFFER_TOO_SMALL = 25,
    /**
     * `gds_feed_read`: the change feed overwrote entries past the cursor; resync with a scan.
     */
    GDS_ERR_FEED_OVERFLOW = 26,
    /**
     * An operating-system call failed (mmap, open, ...), or `gds_create` found no room in the
     * segment directory to reserve the segment's memory; the message names it (and the fixes).
     */
    GDS_ERR_IO = 30,
    /**
     * `gds_create`: a segment of that name exists already.
     */
    GDS_ERR_SEGMENT_EXISTS = 31,
    /**
     * `gds_attach`: no segment of that name exists.
     */
    GDS_ERR_NO_SEGMENT = 32,
    /**
     * The operating system denied access to the segment file.
     */
    GDS_ERR_PERMISSION = 33,
    /**
     * The segment was made by an incompatible build (byte order, layout version), or
     * `gds_open` was given other options than it was created with, or it was created before
     * the host's last reboot or in a time namespace with another monotonic clock.
     */
    GDS_ERR_INCOMPATIBLE = 34,
    /**
     * The segment is damaged. Destroy and recreate it.
     */
    GDS_ERR_CORRUPT = 35,
    /**
     * The segment was still being initialized after 5 s: its creator probably died.
     */
    GDS_ERR_NOT_READY = 36,
    /**
     * Options out of range, or a segment name not of 1-200 characters from `[A-Za-z0-9._-]`.
     */
    GDS_ERR_INVALID_OPTIONS = 37,
    /**
     * The segment file is a symlink, not a regular file, owned by another user, or a sparse
     * file whose memory is not all reserved.
     */
    GDS_ERR_REFUSED = 38,
    /**
     * The segment was destroyed (`gds_destroy`, `gardenstate destroy --force`) while this
     * handle was attached: every call on the handle fails so, as nothing written to it would
     * be read again. Close it and open the store again (`gds_open` creates or attaches the
     * segment now under the name).
     */
    GDS_ERR_DESTROYED = 39,
    /**
     * A required pointer argument was NULL. Nothing was done.
     */
    GDS_ERR_NULL_ARGUMENT = 40,
    /**
     * An argument is out of its domain: an unknown expiry kind or write mode, a zero TTL, a
     * name that is not UTF-8, a `struct_size` too small, a length over `PTRDIFF_MAX`.
     */
    GDS_ERR_INVALID_ARGUMENT = 41,
    /**
     * The library panicked (a bug: please report it with the message). The call did not
     * complete; the handle stays usable, the segment stays consistent.
     */
    GDS_ERR_PANIC = 42,
    /**
     * A buffer for the caller could not be allocated.
     */
    GDS_ERR_OUT_OF_MEMORY = 43,
    /**
     * An engine error this version of the library has no code for (see the message).
     */
    GDS_ERR_UNKNOWN = 49,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum gds_status gds_status;
#else
typedef int32_t gds_status;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * An open segment. Opaque: created by `gds_create`, `gds_open`, `gds_attach` or
 * `gds_attach_group`, released by `gds_close`.
 *
 * One handle serves every thread of the process, concurrently: open it once per process
 * (before forking, in a prefork server) and share it. A thread holds a client slot of the
 * segment only while it is inside a call, so any number of threads may use it;
 * `max_clients` bounds the calls in flight at once across all processes.
 */
typedef struct gds_store gds_store;

/**
 * Capacity and behaviour of a segment, fixed when it is created.
 *
 * Set `struct_size = sizeof(gds_options)`; a field left 0 takes its default when a segment
 * is created (listed with each field, and written by `gds_options_default`), and is "not
 * given" when `gds_open` attaches to an existing one: only the fields set (non-zero, and
 * `GDS_OPTION_EVICT`, or `GDS_OPTION_EVICT_GIVEN` for "no eviction") are checked. Later versions add fields
 * at the end only; their 0 keeps today's behaviour.
 */
typedef struct gds_options {
    /**
     * `sizeof(gds_options)`, set by the caller.
     */
    uint64_t struct_size;
    /**
     * Bytes of heap for records; default 64 MiB, at most 32 GiB. A record takes key +
     * value + 80 bytes, rounded up to its size class.
     */
    uint64_t capacity_bytes;
    /**
     * Live entries the index is sized for; default 65536, at most 2^31.
     */
    uint64_t max_entries;
    /**
     * Longest value in bytes; default 1 MiB, at most 1 GiB.
     */
    uint64_t max_value;
    /**
     * Change-feed entries kept for followers; default 65536, 16 to 2^28.
     */
    uint64_t feed_len;
    /**
     * Longest key in bytes; default 256, at most 65535.
     */
    uint32_t max_key;
    /**
     * Calls in flight at once, across all processes (idle threads hold no slot); default 512,
     * at most 16383.
     */
    uint32_t max_clients;
    /**
     * File mode: 0600 (default: the creating user only) or 0660 (also the file's group,
     * who attach with `gds_attach_group`). Nothing else is accepted.
     */
    uint32_t mode;
    /**
     * `GDS_OPTION_*` bits; default 0 (no eviction, and `gds_open` does not check it).
     */
    uint32_t flags;
} gds_options;

/**
 * The fixed shape of a segment, as created.
 */
typedef struct gds_info {
    /**
     * `sizeof(gds_info)`, set by the caller; on return, the bytes the library filled.
     */
    uint64_t struct_size;
    /**
     * Size of the segment file in bytes.
     */
    uint64_t segment_bytes;
    /**
     * Bytes of heap for records (capacity rounded up to whole pages).
     */
    uint64_t heap_bytes;
    /**
     * Heap page size in bytes.
     */
    uint64_t page_size;
    /**
     * `max_entries` as created.
     */
    uint64_t max_entries;
    /**
     * Usable index slots (about 1.75 per entry).
     */
    uint64_t index_slots;
    /**
     * Longest key in bytes.
     */
    uint64_t max_key;
    /**
     * Longest value in bytes.
     */
    uint64_t max_value;
    /**
     * Client slots.
     */
    uint64_t max_clients;
    /**
     * Change-feed entries.
     */
    uint64_t feed_len;
    /**
     * Random id of this segment's dataset (changes when the segment is recreated).
     */
    uint64_t dataset_id;
    /**
     * `GDS_OPTION_*` bits the segment was created with.
     */
    uint64_t flags;
} gds_info;

/**
 * Whether a segment accepts writes: one of the `GDS_WRITE_MODE_*` values.
 */
typedef uint32_t gds_write_mode;

/**
 * The role a segment plays for its workers now: one of the `GDS_ROLE_*` values.
 */
typedef uint32_t gds_role;

/**
 * Where a segment stands in its replication history, as its workers see it.
 */
typedef struct gds_replication_state {
    /**
     * `sizeof(gds_replication_state)`, set by the caller; on return, the bytes the library
     * filled.
     */
    uint64_t struct_size;
    /**
     * The replication epoch: raised by every promotion, never lowered (0: never promoted).
     */
    uint64_t epoch;
    /**
     * Grows on every role change and epoch raise and never moves back: compare it with the
     * value a worker cached to learn that a failover (or a fence) happened. It does not move
     * when a write lease lapses; `role` shows that.
     */
    uint64_t changes;
    /**
     * `GDS_ROLE_*`.
     */
    gds_role role;
    /**
     * Zero.
     */
    uint32_t reserved;
} gds_replication_state;

/**
 * Metadata of an entry.
 */
typedef struct gds_meta {
    /**
     * The entry's version: changes on every write; pass it to `gds_compare_and_set`.
     */
    uint64_t version;
    /**
     * Length of the value in bytes.
     */
    uint64_t value_len;
    /**
     * Milliseconds left before the entry expires, or `GDS_TTL_NEVER`.
     */
    uint64_t ttl_left_ms;
    /**
     * The id of the session lock holding the entry, or 0 if it is not locked.
     */
    uint64_t lock_id;
    /**
     * How long the lock has been held, in milliseconds (0 if not locked).
     */
    uint64_t lock_age_ms;
} gds_meta;

/**
 * How an entry expires: one of the `GDS_EXPIRY_*` values, with a TTL in milliseconds.
 */
typedef uint32_t gds_expiry_kind;

/**
 * The session lock reported by `gds_lock`: the lock taken (on `GDS_OK`) or the lock that
 * holds the entry (on `GDS_ERR_LOCKED`).
 */
typedef struct gds_lock_info {
    /**
     * `GDS_OK`: the id that unlocks the entry. `GDS_ERR_LOCKED`: the holder's lock id.
     */
    uint64_t lock_id;
    /**
     * `GDS_OK`: 0. `GDS_ERR_LOCKED`: how long the holder has held it, in milliseconds.
     */
    uint64_t age_ms;
    /**
     * `GDS_OK`: 1 if the lock was taken over from a holder that timed out or whose process
     * died, else 0. `GDS_ERR_LOCKED`: 0.
     */
    uint32_t took_over;
    /**
     * Always 0.
     */
    uint32_t reserved;
} gds_lock_info;

/**
 * Counters and occupancy of a segment, summed over every client of every process.
 */
typedef struct gds_stats {
    /**
     * `sizeof(gds_stats)`, set by the caller; on return, the bytes the library filled.
     */
    uint64_t struct_size;
    /**
     * Entries present (including expired ones not yet swept).
     */
    uint64_t live_entries;
    /**
     * Heap bytes in blocks in use.
     */
    uint64_t bytes_used;
    /**
     * Heap bytes free (free blocks of assigned pages, plus unassigned pages).
     */
    uint64_t bytes_free;
    /**
     * Reads that found the key.
     */
    uint64_t hits;
    /**
     * Reads that did not.
     */
    uint64_t misses;
    /**
     * Values written (set, add, compare-and-set, set-and-unlock).
     */
    uint64_t sets;
    /**
     * Entries deleted.
     */
    uint64_t deletes;
    /**
     * Entries removed because they expired.
     */
    uint64_t expirations;
    /**
     * Entries evicted (only with `GDS_OPTION_EVICT`).
     */
    uint64_t evictions;
    /**
     * Deadlines extended (touch, sliding reads).
     */
    uint64_t touches;
    /**
     * Session locks taken.
     */
    uint64_t locks;
    /**
     * `gds_lock` calls that found the entry locked.
     */
    uint64_t lock_contentions;
    /**
     * Locks taken over from a timed-out or dead holder.
     */
    uint64_t lock_takeovers;
    /**
     * Client slots of dead processes reclaimed, and locks taken from a dead owner.
     */
    uint64_t dead_reclaims;
    /**
     * Sweeps run.
     */
    uint64_t sweeps;
    /**
     * Client slots in use (threads attached, across all processes).
     */
    uint64_t clients;
    /**
     * Change-feed position (mutations recorded so far).
     */
    uint64_t feed_head;
} gds_stats;

/**
 * What one `gds_sweep` did.
 */
typedef struct gds_sweep_report {
    /**
     * `sizeof(gds_sweep_report)`, set by the caller; on return, the bytes the library filled.
     */
    uint64_t struct_size;
    /**
     * 1 if this call swept; 0 if another client held the sweeper lease (nothing was done).
     */
    uint64_t ran;
    /**
     * Index slots examined.
     */
    uint64_t examined;
    /**
     * Expired entries removed.
     */
    uint64_t expired;
    /**
     * Client slots of dead processes reclaimed.
     */
    uint64_t dead_clients_reclaimed;
} gds_sweep_report;

/**
 * What `gds_check` found. A healthy segment has `problem_count` 0.
 */
typedef struct gds_check_report {
    /**
     * `sizeof(gds_check_report)`, set by the caller; on return, the bytes the library filled.
     */
    uint64_t struct_size;
    /**
     * Published entries, expired or not.
     */
    uint64_t entries;
    /**
     * Heap blocks in use.
     */
    uint64_t blocks_in_use;
    /**
     * Blocks in use that no entry and no live client's journal names.
     */
    uint64_t leaked_blocks;
    /**
     * Free blocks hidden by a bitmap bit saying "in use".
     */
    uint64_t hidden_free_blocks;
    /**
     * Blocks in use whose bitmap bit says "free" (harmless, for information).
     */
    uint64_t stale_free_bits;
    /**
     * Client slots of dead processes not yet reclaimed (a sweep reclaims them).
     */
    uint64_t dead_clients;
    /**
     * Violated invariants; their descriptions are in `*problems_out`.
     */
    uint64_t problem_count;
} gds_check_report;

/**
 * One live entry, handed to a `gds_scan_fn`. The pointers are valid only during the
 * callback: copy what you keep.
 */
typedef struct gds_entry {
    /**
     * The key (`key_len` bytes, not NUL-terminated).
     */
    const uint8_t *key;
    /**
     * Length of the key.
     */
    size_t key_len;
    /**
     * The value (`value_len` bytes; non-NULL even when empty).
     */
    const uint8_t *value;
    /**
     * Length of the value.
     */
    size_t value_len;
    /**
     * The entry's metadata.
     */
    struct gds_meta meta;
    /**
     * The index slot holding the key (matches `gds_change.slot` of the change feed).
     */
    uint32_t slot;
    /**
     * Always 0.
     */
    uint32_t reserved;
} gds_entry;

/**
 * Called by `gds_scan` and `gds_entry_at` with each entry, and `user` as given to them.
 * Return 0 to go on, anything else to stop the scan. The callback may call any `gds_*`
 * function, on this store too (to delete the entry, say), except `gds_close` of the store
 * being scanned. It must not unwind (a C++ exception) or `longjmp` out.
 */
typedef int (*gds_scan_fn)(void *user,
                           const struct gds_entry *entry);

/**
 * What a change records: one of the `GDS_CHANGE_*` values.
 */
typedef uint32_t gds_change_kind;

/**
 * One recorded mutation. It names an index slot, not a value: read the slot's current
 * entry with `gds_entry_at`.
 */
typedef struct gds_change {
    /**
     * Feed position (0-based); the cursor after this change is `seq + 1`.
     */
    uint64_t seq;
    /**
     * Version of the record the change produced (0 for removals).
     */
    uint64_t version;
    /**
     * The key's hash (seeded per segment).
     */
    uint64_t key_hash;
    /**
     * Index slot of the key (stable while the key exists).
     */
    uint32_t slot;
    /**
     * A `GDS_CHANGE_*` value.
     */
    gds_change_kind kind;
} gds_change;

/**
 * Writes are accepted (the default).
 */
#define GDS_WRITE_MODE_WRITABLE 0

/**
 * A standby replica: every write fails with `GDS_ERR_READ_ONLY`; reads work but do not
 * extend sliding deadlines.
 */
#define GDS_WRITE_MODE_REPLICA 1

/**
 * A primary that lost its quorum: as `GDS_WRITE_MODE_REPLICA`.
 */
#define GDS_WRITE_MODE_FENCED 2

/**
 * Writable: writes are accepted.
 */
#define GDS_ROLE_PRIMARY 0

/**
 * A standby replica: writes fail with `GDS_ERR_READ_ONLY` until a promotion.
 */
#define GDS_ROLE_STANDBY 1

/**
 * A primary that lost its quorum (or was demoted): writes fail with `GDS_ERR_READ_ONLY`.
 */
#define GDS_ROLE_FENCED 2

/**
 * Writable, but the replication daemon stopped renewing its write lease (it died or
 * stalls): writes fail with `GDS_ERR_READ_ONLY` until it renews it or a failover ends it.
 */
#define GDS_ROLE_LEASE_LAPSED 3

/**
 * The entry never expires (until deleted); the TTL argument is ignored.
 */
#define GDS_EXPIRY_NEVER 0

/**
 * The entry expires `ttl_ms` after this write.
 */
#define GDS_EXPIRY_AFTER 1

/**
 * The entry expires `ttl_ms` after its last access: reads, `gds_lock` and `gds_unlock` push
 * the deadline out again (ASP.NET session timeout semantics).
 */
#define GDS_EXPIRY_SLIDING 2

/**
 * A reserved position whose operation changed nothing (it lost a race after reserving it).
 */
#define GDS_CHANGE_NOP 0

/**
 * A value was written (set, add, compare-and-set, set-and-unlock).
 */
#define GDS_CHANGE_SET 1

/**
 * The entry was deleted.
 */
#define GDS_CHANGE_DELETE 2

/**
 * The entry's deadline changed (touch, sliding read).
 */
#define GDS_CHANGE_TOUCH 3

/**
 * The entry was locked.
 */
#define GDS_CHANGE_LOCK 4

/**
 * The entry was unlocked.
 */
#define GDS_CHANGE_UNLOCK 5

/**
 * The entry expired and was removed.
 */
#define GDS_CHANGE_EXPIRE 6

/**
 * The entry was evicted.
 */
#define GDS_CHANGE_EVICT 7

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The library's version, `"MAJOR.MINOR.PATCH"` (a static string: never NULL, never freed).
 * Compare with `GDS_VERSION_STRING` to see which header a program was built with.
 *
 * Thread safety: any thread, any time.
 */
const char *gds_version(void);

/**
 * The library's version as `MAJOR * 1000000 + MINOR * 1000 + PATCH` (see
 * `GDS_VERSION_NUMBER`).
 *
 * Thread safety: any thread, any time.
 */
uint32_t gds_version_number(void);

/**
 * The ABI version of the loaded library. A binding must check, before any other call, that
 * it equals the `GDS_ABI_VERSION` it was written for, and refuse to use the library if not.
 *
 * Thread safety: any thread, any time.
 */
uint32_t gds_abi_version(void);

/**
 * A static, human-readable description of a status code: never NULL, never freed. Unknown
 * codes give `"unknown status code"`.
 *
 * Thread safety: any thread, any time.
 */
const char *gds_strerror(int32_t status);

/**
 * The detailed message of the most recent call on this thread that returned an error (a
 * status of 10 or more): what was expected, what was found, what to do. Outcomes (codes
 * below 10) and successes leave it unchanged, as errno. Empty (`""`) if no call on this
 * thread has failed.
 *
 * The string belongs to the library and stays valid until the next `gds_*` call on the same
 * thread (or the thread's exit): copy it to keep it. Never NULL.
 *
 * Thread safety: any thread; each thread has its own message.
 */
const char *gds_last_error_message(void);

/**
 * Fills `*opts` with the default options (what a field left 0 means). Set
 * `opts->struct_size = sizeof(gds_options)` first.
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
 * Thread safety: any thread.
 *
 * # Safety
 * - `opts` is NULL or points to a writable `gds_options` whose `struct_size` is set.
 */
gds_status gds_options_default(struct gds_options *opts);

/**
 * Creates the segment `name` with `opts` and opens it: `/dev/shm/<name>`, or
 * `$GARDENSTATE_SHM_DIR/<name>`. A name is 1 to 200 characters from `[A-Za-z0-9._-]`.
 *
 * Returns `GDS_OK` (`*store_out` is the new handle); `GDS_ERR_SEGMENT_EXISTS`;
 * `GDS_ERR_INVALID_OPTIONS` (an option out of range, or a bad name); `GDS_ERR_IO`,
 * `GDS_ERR_PERMISSION`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (a name that is
 * not UTF-8, a bad `struct_size`).
 * Thread safety: any thread.
 *
 * # Safety
 * - `name` is NULL or a NUL-terminated string.
 * - `opts` is NULL or a readable `gds_options` of its declared `struct_size`.
 * - `store_out` is NULL or valid for writing a `gds_store *`.
 */
gds_status gds_create(const char *name,
                      const struct gds_options *opts,
                      struct gds_store **store_out);

/**
 * Opens the segment `name`, creating it with `opts` if it does not exist: the call every
 * worker of a pool makes, however many start at once (exactly one creates it).
 *
 * An existing segment is checked against the options given only: a field left 0 (and
 * eviction when neither `GDS_OPTION_EVICT` nor `GDS_OPTION_EVICT_GIVEN` is set) accepts the
 * segment's value, so `opts` with only `struct_size` set attaches to a segment of any shape
 * (one the CLI created with other options, say). An option given with another value than the segment's is refused
 * with `GDS_ERR_INCOMPATIBLE`, whose message (`gds_last_error_message`) names the option,
 * both values, and how to go on without losing the segment's sessions.
 *
 * Returns `GDS_OK`; `GDS_ERR_INCOMPATIBLE`; `GDS_ERR_CORRUPT`; `GDS_ERR_NOT_READY`;
 * `GDS_ERR_REFUSED`; and the errors of `gds_create`.
 * Thread safety: any thread.
 *
 * # Safety
 * As `gds_create`.
 */
gds_status gds_open(const char *name,
                    const struct gds_options *opts,
                    struct gds_store **store_out);

/**
 * Attaches to the existing segment `name` (owned by this user), waiting up to 5 s for a
 * creator that is still initializing it. Reads the header only (no scan) and validates it.
 *
 * Returns `GDS_OK`; `GDS_ERR_NO_SEGMENT`; `GDS_ERR_INCOMPATIBLE`; `GDS_ERR_CORRUPT`;
 * `GDS_ERR_NOT_READY`; `GDS_ERR_REFUSED` (a symlink, another owner: see
 * `gds_attach_group`); `GDS_ERR_PERMISSION`; `GDS_ERR_IO`; `GDS_ERR_INVALID_OPTIONS` (a
 * bad name); `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT`.
 * Thread safety: any thread.
 *
 * # Safety
 * - `name` is NULL or a NUL-terminated string.
 * - `store_out` is NULL or valid for writing a `gds_store *`.
 */
gds_status gds_attach(const char *name,
                      struct gds_store **store_out);

/**
 * As `gds_attach`, but also accepts a segment of another user of this group if it was
 * created with mode 0660.
 *
 * Thread safety: any thread.
 *
 * # Safety
 * As `gds_attach`.
 */
gds_status gds_attach_group(const char *name,
                            struct gds_store **store_out);

/**
 * Closes a handle: unmaps the segment (for this process). The segment and its entries stay.
 * NULL is a no-op, and so is a handle of `gds_open_process` (the process keeps it). Closing a handle twice, or using it after closing, is undefined behaviour.
 *
 * A child process after `fork()` may close the inherited handle: no client slot is held
 * between calls, so nothing of the parent's is touched.
 *
 * Thread safety: no other call may be using `store`, on any thread, during or after this.
 *
 * # Safety
 * - `store` is NULL or a live handle, not in use by any other thread, never used again.
 */
void gds_close(struct gds_store *store);

/**
 * As `gds_open`, for a runtime that frees everything between requests (PHP): the handle is
 * kept by the library for this process, and a later call with the same `name` and `opts`
 * returns the same handle (a `getpid` and a `stat`, about a microsecond, instead of mapping
 * the segment again, about 100 us), as long as this process opened it (a child forked from
 * a process that had one opens its own) and the segment file is still the one opened (one
 * destroyed and recreated is opened anew). `gds_close` on it does nothing: the process
 * keeps it until it exits.
 *
 * The handle stays valid until a later `gds_open_process` of this process with the same
 * `name` and `opts` finds the segment file replaced: that call closes it. So call it at
 * the start of each request and use the handle only within that request, from one thread
 * per process (PHP), or with calls that never overlap another thread's use of the handle.
 * Calls are serialized (one mutex): not for many threads; and do not fork while another
 * thread is inside it.
 *
 * Returns as `gds_open`.
 * Thread safety: see above.
 *
 * # Safety
 * As `gds_create`.
 */
gds_status gds_open_process(const char *name,
                            const struct gds_options *opts,
                            struct gds_store **store_out);

/**
 * Removes the segment `name`. Processes that have it open keep working on their mapping
 * until they close it; a new `gds_open` of the same name creates a new segment.
 *
 * Returns `GDS_OK` (removed); `GDS_NOT_FOUND` (there was no such segment);
 * `GDS_ERR_INVALID_OPTIONS` (a bad name); `GDS_ERR_IO`, `GDS_ERR_PERMISSION`;
 * `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT`.
 * Thread safety: any thread.
 *
 * # Safety
 * - `name` is NULL or a NUL-terminated string.
 */
gds_status gds_destroy(const char *name);

/**
 * Writes the segment's fixed shape to `*info_out` (set its `struct_size` first).
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `info_out` is NULL or a writable `gds_info` whose `struct_size` is set.
 */
gds_status gds_get_info(const struct gds_store *store,
                        struct gds_info *info_out);

/**
 * Sets the write mode of the segment, for every process using it; refused while a live
 * replication daemon owns the mode (it decides fencing and promotion: read the mode with
 * `gds_get_write_mode`, change it with `gardenstate switchover` or `gardenstate promote`).
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (unknown mode);
 * `GDS_ERR_REFUSED` (a replication daemon owns the write mode).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 */
gds_status gds_set_write_mode(const struct gds_store *store,
                              gds_write_mode mode);

/**
 * Writes the segment's current write mode (`GDS_WRITE_MODE_*`) to `*mode_out`.
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle; `mode_out` is NULL or valid for a `uint32_t` write.
 */
gds_status gds_get_write_mode(const struct gds_store *store,
                              gds_write_mode *mode_out);

/**
 * Writes the segment's epoch, role and change counter to `*state_out` (set its
 * `struct_size` first). A few atomic loads: cheap enough for every request. An app answers a
 * write that failed with `GDS_ERR_READ_ONLY` (or any request needing writes while the role
 * is not `GDS_ROLE_PRIMARY`) with HTTP 503 and `Retry-After: 1`: a failover or a renewed
 * lease usually gives writes back within a second.
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `state_out` is NULL or a writable `gds_replication_state` whose `struct_size` is set.
 */
gds_status gds_get_replication_state(const struct gds_store *store,
                                     struct gds_replication_state *state_out);

/**
 * Writes to `*path_out` the directory where segments are created (`/dev/shm`, or
 * `$GARDENSTATE_SHM_DIR`), as a NUL-terminated string to free with `gds_buffer_free`.
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_OUT_OF_MEMORY`.
 * Thread safety: any thread (it reads the environment: not concurrently with `setenv`).
 *
 * # Safety
 * - `path_out` is NULL or valid for writing a `char *`.
 */
gds_status gds_shm_dir(char **path_out);

/**
 * Reads `key` into the caller's buffer `buf` of `buf_len` bytes. A read never returns an
 * expired entry, never waits for a session lock (a locked entry is returned with
 * `meta_out->lock_id` set), and extends a sliding deadline.
 *
 * Returns `GDS_OK`: the value is in `buf[0 .. *value_len_out]`, its metadata in
 * `*meta_out`. `GDS_NOT_FOUND`. `GDS_ERR_BUFFER_TOO_SMALL`: `*value_len_out` is the size
 * needed (pass `buf_len` 0 to ask for it); nothing else is written. `GDS_ERR_KEY_LENGTH`;
 * `GDS_ERR_CORRUPT`; `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_NULL_ARGUMENT`.
 * The bytes of `buf` are unspecified after any status but `GDS_OK` (a read that races a
 * writer copies again).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
 * - `buf` is NULL (only if `buf_len` is 0) or writable for `buf_len` bytes.
 * - `value_len_out` is NULL or valid for a `size_t` write; `meta_out` is NULL or valid for a
 *   `gds_meta` write.
 */
gds_status gds_get(const struct gds_store *store,
                   const uint8_t *key,
                   size_t key_len,
                   uint8_t *buf,
                   size_t buf_len,
                   size_t *value_len_out,
                   struct gds_meta *meta_out);

/**
 * Reads `key` into a buffer the library allocates: on `GDS_OK`, `*value_out` points to
 * `*value_len_out` bytes (a valid pointer even for an empty value) that the caller frees
 * with `gds_buffer_free`. Otherwise as `gds_get`, without `GDS_ERR_BUFFER_TOO_SMALL`; also
 * `GDS_ERR_OUT_OF_MEMORY`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
 * - `value_out`, `value_len_out`, `meta_out` are each NULL or valid for a write of their type.
 */
gds_status gds_get_alloc(const struct gds_store *store,
                         const uint8_t *key,
                         size_t key_len,
                         uint8_t **value_out,
                         size_t *value_len_out,
                         struct gds_meta *meta_out);

/**
 * Reads the metadata of `key` without its value (it extends a sliding deadline, as a read).
 *
 * Returns `GDS_OK`; `GDS_NOT_FOUND`; `GDS_ERR_KEY_LENGTH`; `GDS_ERR_CORRUPT`;
 * `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_NULL_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
 * - `meta_out` is NULL or valid for a `gds_meta` write.
 */
gds_status gds_get_meta(const struct gds_store *store,
                        const uint8_t *key,
                        size_t key_len,
                        struct gds_meta *meta_out);

/**
 * Stores `value` under `key`, replacing any current value and dropping any session lock on
 * it. `expiry` is a `GDS_EXPIRY_*` kind; `ttl_ms` (at least 1) is its TTL, ignored for
 * `GDS_EXPIRY_NEVER`. TTLs over 2^32 - 1 ms (49.7 days) are cut to that.
 *
 * Returns `GDS_OK` (`*version_out` is the new version); `GDS_ERR_KEY_LENGTH`;
 * `GDS_ERR_VALUE_LENGTH`; `GDS_ERR_FULL_INDEX`, `GDS_ERR_FULL_HEAP`,
 * `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_READ_ONLY`; `GDS_ERR_CORRUPT`; `GDS_ERR_NULL_ARGUMENT`;
 * `GDS_ERR_INVALID_ARGUMENT` (expiry kind, zero TTL).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes; `value` is NULL
 *   (only if `value_len` is 0) or readable for `value_len` bytes.
 * - `version_out` is NULL or valid for a `uint64_t` write.
 */
gds_status gds_set(const struct gds_store *store,
                   const uint8_t *key,
                   size_t key_len,
                   const uint8_t *value,
                   size_t value_len,
                   gds_expiry_kind expiry,
                   uint64_t ttl_ms,
                   uint64_t *version_out);

/**
 * Stores `value` under `key` only if the key is absent (or expired). As `gds_set`, plus
 * `GDS_ERR_EXISTS`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * As `gds_set`.
 */
gds_status gds_add(const struct gds_store *store,
                   const uint8_t *key,
                   size_t key_len,
                   const uint8_t *value,
                   size_t value_len,
                   gds_expiry_kind expiry,
                   uint64_t ttl_ms,
                   uint64_t *version_out);

/**
 * Stores `value` under `key` only if the entry is at version `expected_version`. As
 * `gds_set`, plus `GDS_NOT_FOUND` (absent or expired) and `GDS_ERR_VERSION_MISMATCH`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * As `gds_set`.
 */
gds_status gds_compare_and_set(const struct gds_store *store,
                               const uint8_t *key,
                               size_t key_len,
                               uint64_t expected_version,
                               const uint8_t *value,
                               size_t value_len,
                               gds_expiry_kind expiry,
                               uint64_t ttl_ms,
                               uint64_t *version_out);

/**
 * Removes `key`.
 *
 * Returns `GDS_OK` (a live entry was removed); `GDS_NOT_FOUND`; `GDS_ERR_KEY_LENGTH`;
 * `GDS_ERR_READ_ONLY`; `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_CORRUPT`; `GDS_ERR_NULL_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
 */
gds_status gds_delete(const struct gds_store *store,
                      const uint8_t *key,
                      size_t key_len);

/**
 * Resets the expiry of `key` to `expiry`/`ttl_ms` from now, keeping its value, version and
 * lock.
 *
 * Returns `GDS_OK`; `GDS_NOT_FOUND`; `GDS_ERR_KEY_LENGTH`; `GDS_ERR_READ_ONLY`;
 * `GDS_ERR_FULL_*`; `GDS_ERR_CORRUPT`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
 */
gds_status gds_touch(const struct gds_store *store,
                     const uint8_t *key,
                     size_t key_len,
                     gds_expiry_kind expiry,
                     uint64_t ttl_ms);

/**
 * Takes the session lock of `key` and reads the entry (ASP.NET `GetItemExclusive`). Never
 * waits (`gds_lock_wait` does). A lock older than `takeover_after_ms`, or whose owner
 * process died, is taken over.
 *
 * Returns `GDS_OK`: the lock is ours; `*value_out` / `*value_len_out` hold the value (a
 * buffer to free with `gds_buffer_free`: with the lock already taken, a too-small caller
 * buffer could only fail after the fact), `*meta_out` its metadata, `*lock_out` the lock id
 * that unlocks it and whether it was taken over. `GDS_ERR_LOCKED`: another lock id holds
 * it; only `*lock_out` is written, with the holder's id and age (poll again later, or
 * wait with `gds_lock_wait`).
 * `GDS_NOT_FOUND`; `GDS_ERR_READ_ONLY`; `GDS_ERR_FULL_*`; `GDS_ERR_KEY_LENGTH`;
 * `GDS_ERR_CORRUPT`; `GDS_ERR_OUT_OF_MEMORY` (the lock was released again);
 * `GDS_ERR_NULL_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`. A lock belongs to
 * whoever holds its id, not to a thread or process.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
 * - `value_out`, `value_len_out`, `meta_out`, `lock_out` are each NULL or valid for a write
 *   of their type.
 */
gds_status gds_lock(const struct gds_store *store,
                    const uint8_t *key,
                    size_t key_len,
                    uint64_t takeover_after_ms,
                    uint8_t **value_out,
                    size_t *value_len_out,
                    struct gds_meta *meta_out,
                    struct gds_lock_info *lock_out);

/**
 * `gds_lock`, waiting up to `timeout_ms` while another lock id holds the entry: returns as
 * soon as the holder releases it (unlock, set, delete, expiry: woken directly through a
 * futex word of the segment, within microseconds, in any process) or once it can be taken
 * over (older than `takeover_after_ms`, or its owner process proven dead: checked every
 * 50 ms while the owner is another process). Blocks the calling thread; a timeout of 0 is
 * `gds_lock`. The waiter holds nothing while it sleeps: a thread or process killed in the
 * wait keeps nobody waiting.
 *
 * Returns as `gds_lock`: `GDS_OK` (the lock is ours), `GDS_ERR_LOCKED` once `timeout_ms`
 * passed with the lock still held (`*lock_out` names the holder), `GDS_NOT_FOUND` (absent,
 * or deleted or expired during the wait), and the same errors.
 * Thread safety: any thread, concurrently with any call but `gds_close` (which must not run
 * while a wait is in progress).
 *
 * # Safety
 * As `gds_lock`.
 */
gds_status gds_lock_wait(const struct gds_store *store,
                         const uint8_t *key,
                         size_t key_len,
                         uint64_t takeover_after_ms,
                         uint64_t timeout_ms,
                         uint8_t **value_out,
                         size_t *value_len_out,
                         struct gds_meta *meta_out,
                         struct gds_lock_info *lock_out);

/**
 * Releases the lock `lock_id` on `key`, keeping the value (ASP.NET
 * `ReleaseItemExclusive`).
 *
 * Returns `GDS_OK`; `GDS_NOT_FOUND` (the entry expired or was deleted);
 * `GDS_ERR_LOCK_MISMATCH` (the lock was taken over, or the entry is not locked);
 * `GDS_ERR_READ_ONLY`; `GDS_ERR_KEY_LENGTH`; `GDS_ERR_FULL_*`; `GDS_ERR_CORRUPT`;
 * `GDS_ERR_NULL_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
 */
gds_status gds_unlock(const struct gds_store *store,
                      const uint8_t *key,
                      size_t key_len,
                      uint64_t lock_id);

/**
 * Stores `value` and releases the lock `lock_id` in one step (ASP.NET
 * `SetAndReleaseItemExclusive`). As `gds_set`, plus `GDS_NOT_FOUND` (the entry expired or
 * was deleted meanwhile) and `GDS_ERR_LOCK_MISMATCH` (the lock was taken over: the write
 * lost).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * As `gds_set`.
 */
gds_status gds_set_and_unlock(const struct gds_store *store,
                              const uint8_t *key,
                              size_t key_len,
                              uint64_t lock_id,
                              const uint8_t *value,
                              size_t value_len,
                              gds_expiry_kind expiry,
                              uint64_t ttl_ms,
                              uint64_t *version_out);

/**
 * Writes the segment's statistics to `*stats_out` (set its `struct_size` first). Occupancy
 * is measured by reading the index and the page bitmaps (about 2 ms per million entries):
 * call it from a monitor, not per request.
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `stats_out` is NULL or a writable `gds_stats` whose `struct_size` is set.
 */
gds_status gds_get_stats(const struct gds_store *store,
                         struct gds_stats *stats_out);

/**
 * Removes expired entries (examining up to `budget` index slots, continuing where the last
 * sweep of any process stopped) and reclaims the client slots of dead processes. One client
 * sweeps at a time. Writers sweep a slice of the index by themselves when one is due (at
 * most every 100 ms per segment); a read-mostly store should call this now and then.
 *
 * Returns `GDS_OK`; `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_NULL_ARGUMENT`;
 * `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `report_out` is NULL or a writable `gds_sweep_report` whose `struct_size` is set.
 */
gds_status gds_sweep(const struct gds_store *store,
                     uint64_t budget,
                     struct gds_sweep_report *report_out);

/**
 * Checks every invariant of the segment (an fsck) and writes the summary to `*report_out`
 * (set its `struct_size` first). `*problems_out` is NULL for a healthy segment, else a
 * NUL-terminated text, one problem per line, to free with `gds_buffer_free`. Reads the whole
 * index and heap; meant for a quiescent segment: during writes it may report transient
 * states as problems.
 *
 * Returns `GDS_OK` (whatever was found: see `problem_count`); `GDS_ERR_NULL_ARGUMENT`;
 * `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`); `GDS_ERR_OUT_OF_MEMORY`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `report_out` is NULL or a writable `gds_check_report` whose `struct_size` is set.
 * - `problems_out` is NULL or valid for writing a `char *`.
 */
gds_status gds_check(const struct gds_store *store,
                     struct gds_check_report *report_out,
                     char **problems_out);

/**
 * Calls `callback` with every live entry, slot by slot, taking no lock: each entry is a consistent
 * copy; entries changed during the scan may be seen before or after the change. Stops early
 * when `callback` returns non-zero (the engine still walks the rest of the index, without calling
 * `callback`). `user` is passed through untouched and may be NULL.
 *
 * Returns `GDS_OK` (completed or stopped by `callback`); `GDS_ERR_CORRUPT`;
 * `GDS_ERR_NULL_ARGUMENT` (`store` or `callback`).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle.
 * - `callback` is NULL or a function satisfying the `gds_scan_fn` contract for `user`.
 */
gds_status gds_scan(const struct gds_store *store,
                    gds_scan_fn callback,
                    void *user);

/**
 * Calls `callback` once with the live entry currently at index slot `slot` (for followers of the
 * change feed: `gds_change.slot`).
 *
 * Returns `GDS_OK` (`callback` was called); `GDS_NOT_FOUND` (no live entry there, or no such
 * slot; `callback` was not called); `GDS_ERR_CORRUPT`; `GDS_ERR_NULL_ARGUMENT` (`store` or
 * `callback`).
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * As `gds_scan`.
 */
gds_status gds_entry_at(const struct gds_store *store,
                        uint32_t slot,
                        gds_scan_fn callback,
                        void *user);

/**
 * Writes to `*head_out` the feed position the next mutation will take. A follower starts
 * from here, then copies the current state with `gds_scan`.
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle; `head_out` is NULL or valid for a `uint64_t` write.
 */
gds_status gds_feed_head(const struct gds_store *store,
                         uint64_t *head_out);

/**
 * Reads the change feed at `cursor`.
 *
 * Returns `GDS_OK` (`*change_out` is the change; continue at `change_out->seq + 1`);
 * `GDS_FEED_EMPTY` (caught up); `GDS_FEED_PENDING` (its writer is mid-operation, or died:
 * wait, then decide); `GDS_ERR_FEED_OVERFLOW` (lapped by the writers: resync with a scan);
 * `GDS_ERR_NULL_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle; `change_out` is NULL or valid for a `gds_change` write.
 */
gds_status gds_feed_read(const struct gds_store *store,
                         uint64_t cursor,
                         struct gds_change *change_out);

/**
 * Waits until the write that returned `version` has been applied by the standby (like Redis
 * `WAIT`), for at most `timeout_ms` milliseconds, and writes 1 to `*replicated_out` if it
 * has, 0 if the time ran out (no standby, or it lags). Use it after a write that must
 * survive the loss of this host. Polls shared memory (a few spins, then sleeps of 20 us
 * doubling to 1 ms): it blocks the calling thread only.
 *
 * Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`.
 * Thread safety: any thread, concurrently with any call but `gds_close`.
 *
 * # Safety
 * - `store` is NULL or a live handle; `replicated_out` is NULL or valid for a `uint32_t`
 *   write.
 */
gds_status gds_wait_replicated(const struct gds_store *store,
                               uint64_t version,
                               uint64_t timeout_ms,
                               uint32_t *replicated_out);

/**
 * Frees memory the library allocated for the caller: the value of `gds_get_alloc` and
 * `gds_lock`, the problem text of `gds_check`, the path of `gds_shm_dir`. NULL is a no-op.
 * Freeing the same pointer twice, or a pointer the library did not return, is undefined
 * behaviour.
 *
 * Thread safety: any thread (not necessarily the one that received the buffer).
 *
 * # Safety
 * - `buf` is NULL or a pointer returned by one of the functions above, not yet freed.
 */
void gds_buffer_free(void *buf);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* GARDENSTATE_H */
