//! Maintenance and observability: statistics, sweeping, the segment check, scanning.

use crate::args;
use crate::buffer::CBuf;
use crate::extensible::{self, extensible};
use crate::panic::boundary;
use crate::status::{gds_status, gds_status::*};
use crate::store::gds_store;
use crate::types::gds_meta;
use engine::ScanEntry;
use std::ffi::{c_char, c_int, c_void};

/// Counters and occupancy of a segment, summed over every client of every process.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gds_stats {
    /// `sizeof(gds_stats)`, set by the caller; on return, the bytes the library filled.
    pub struct_size: u64,
    /// Entries present (including expired ones not yet swept).
    pub live_entries: u64,
    /// Heap bytes in blocks in use.
    pub bytes_used: u64,
    /// Heap bytes free (free blocks of assigned pages, plus unassigned pages).
    pub bytes_free: u64,
    /// Reads that found the key.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Values written (set, add, compare-and-set, set-and-unlock).
    pub sets: u64,
    /// Entries deleted.
    pub deletes: u64,
    /// Entries removed because they expired.
    pub expirations: u64,
    /// Entries evicted (only with `GDS_OPTION_EVICT`).
    pub evictions: u64,
    /// Deadlines extended (touch, sliding reads).
    pub touches: u64,
    /// Session locks taken.
    pub locks: u64,
    /// `gds_lock` calls that found the entry locked.
    pub lock_contentions: u64,
    /// Locks taken over from a timed-out or dead holder.
    pub lock_takeovers: u64,
    /// Client slots of dead processes reclaimed, and locks taken from a dead owner.
    pub dead_reclaims: u64,
    /// Sweeps run.
    pub sweeps: u64,
    /// Client slots in use (threads attached, across all processes).
    pub clients: u64,
    /// Change-feed position (mutations recorded so far).
    pub feed_head: u64,
}
extensible!(gds_stats, 144);

/// Writes the segment's statistics to `*stats_out` (set its `struct_size` first). Occupancy
/// is measured by reading the index and the page bitmaps (about 2 ms per million entries):
/// call it from a monitor, not per request.
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `stats_out` is NULL or a writable `gds_stats` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_get_stats(store: *const gds_store, stats_out: *mut gds_stats) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out) = unsafe { (args::store(store)?, extensible::out_struct(stats_out, "stats_out")?) };
        let s = store.stats();
        out.write(gds_stats {
            struct_size: 0,
            live_entries: s.live_entries,
            bytes_used: s.bytes_used,
            bytes_free: s.bytes_free,
            hits: s.hits,
            misses: s.misses,
            sets: s.sets,
            deletes: s.deletes,
            expirations: s.expirations,
            evictions: s.evictions,
            touches: s.touches,
            locks: s.locks,
            lock_contentions: s.lock_contentions,
            lock_takeovers: s.lock_takeovers,
            dead_reclaims: s.dead_reclaims,
            sweeps: s.sweeps,
            clients: s.clients,
            feed_head: s.feed_head,
        });
        Ok(GDS_OK)
    })
}

/// What one `gds_sweep` did.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gds_sweep_report {
    /// `sizeof(gds_sweep_report)`, set by the caller; on return, the bytes the library filled.
    pub struct_size: u64,
    /// 1 if this call swept; 0 if another client held the sweeper lease (nothing was done).
    pub ran: u64,
    /// Index slots examined.
    pub examined: u64,
    /// Expired entries removed.
    pub expired: u64,
    /// Client slots of dead processes reclaimed.
    pub dead_clients_reclaimed: u64,
}
extensible!(gds_sweep_report, 40);

/// Removes expired entries (examining up to `budget` index slots, continuing where the last
/// sweep of any process stopped) and reclaims the client slots of dead processes. One client
/// sweeps at a time. Writers sweep a slice of the index by themselves when one is due (at
/// most every 100 ms per segment); a read-mostly store should call this now and then.
///
/// Returns `GDS_OK`; `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_NULL_ARGUMENT`;
/// `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `report_out` is NULL or a writable `gds_sweep_report` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_sweep(
    store: *const gds_store,
    budget: u64,
    report_out: *mut gds_sweep_report,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out) =
            unsafe { (args::store(store)?, extensible::out_struct(report_out, "report_out")?) };
        let r = store.sweep(budget)?;
        out.write(gds_sweep_report {
            struct_size: 0,
            ran: u64::from(r.ran),
            examined: r.examined,
            expired: r.expired,
            dead_clients_reclaimed: r.dead_clients_reclaimed,
        });
        Ok(GDS_OK)
    })
}

/// What `gds_check` found. A healthy segment has `problem_count` 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gds_check_report {
    /// `sizeof(gds_check_report)`, set by the caller; on return, the bytes the library filled.
    pub struct_size: u64,
    /// Published entries, expired or not.
    pub entries: u64,
    /// Heap blocks in use.
    pub blocks_in_use: u64,
    /// Blocks in use that no entry and no live client's journal names.
    pub leaked_blocks: u64,
    /// Free blocks hidden by a bitmap bit saying "in use".
    pub hidden_free_blocks: u64,
    /// Blocks in use whose bitmap bit says "free" (harmless, for information).
    pub stale_free_bits: u64,
    /// Client slots of dead processes not yet reclaimed (a sweep reclaims them).
    pub dead_clients: u64,
    /// Violated invariants; their descriptions are in `*problems_out`.
    pub problem_count: u64,
}
extensible!(gds_check_report, 64);

/// Checks every invariant of the segment (an fsck) and writes the summary to `*report_out`
/// (set its `struct_size` first). `*problems_out` is NULL for a healthy segment, else a
/// NUL-terminated text, one problem per line, to free with `gds_buffer_free`. Reads the whole
/// index and heap; meant for a quiescent segment: during writes it may report transient
/// states as problems.
///
/// Returns `GDS_OK` (whatever was found: see `problem_count`); `GDS_ERR_NULL_ARGUMENT`;
/// `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`); `GDS_ERR_OUT_OF_MEMORY`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `report_out` is NULL or a writable `gds_check_report` whose `struct_size` is set.
/// - `problems_out` is NULL or valid for writing a `char *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_check(
    store: *const gds_store,
    report_out: *mut gds_check_report,
    problems_out: *mut *mut c_char,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out, problems_out) = unsafe {
            (
                args::store(store)?,
                extensible::out_struct(report_out, "report_out")?,
                args::out(problems_out, "problems_out")?,
            )
        };
        let r = store.check();
        let problems = match r.problems.is_empty() {
            true => None,
            false => Some(CBuf::new(r.problems.join("\n").replace('\0', " ").as_bytes(), true)?),
        };
        out.write(gds_check_report {
            struct_size: 0,
            entries: r.entries,
            blocks_in_use: r.blocks_in_use,
            leaked_blocks: r.leaked_blocks,
            hidden_free_blocks: r.hidden_free_blocks,
            stale_free_bits: r.stale_free_bits,
            dead_clients: r.dead_clients,
            problem_count: r.problems.len() as u64,
        });
        problems_out.write(problems.map_or(std::ptr::null_mut(), |b| b.into_raw().cast()));
        Ok(GDS_OK)
    })
}

/// One live entry, handed to a `gds_scan_fn`. The pointers are valid only during the
/// callback: copy what you keep.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gds_entry {
    /// The key (`key_len` bytes, not NUL-terminated).
    pub key: *const u8,
    /// Length of the key.
    pub key_len: usize,
    /// The value (`value_len` bytes; non-NULL even when empty).
    pub value: *const u8,
    /// Length of the value.
    pub value_len: usize,
    /// The entry's metadata.
    pub meta: gds_meta,
    /// The index slot holding the key (matches `gds_change.slot` of the change feed).
    pub slot: u32,
    /// Always 0.
    pub reserved: u32,
}

/// Called by `gds_scan` and `gds_entry_at` with each entry, and `user` as given to them.
/// Return 0 to go on, anything else to stop the scan. The callback may call any `gds_*`
/// function, on this store too (to delete the entry, say), except `gds_close` of the store
/// being scanned. It must not unwind (a C++ exception) or `longjmp` out.
pub type gds_scan_fn = Option<unsafe extern "C" fn(user: *mut c_void, entry: *const gds_entry) -> c_int>;

/// Calls `f` for the entry `e`, returning what it returned.
///
/// # Safety
/// - `f` and `user` satisfy the contract of `gds_scan_fn`.
unsafe fn deliver(
    f: unsafe extern "C" fn(*mut c_void, *const gds_entry) -> c_int,
    user: *mut c_void,
    e: &ScanEntry,
) -> c_int {
    let entry = gds_entry {
        key: e.key.as_ptr(),
        key_len: e.key.len(),
        // A Vec's pointer is dangling but non-NULL when empty: valid for 0 bytes, as stated.
        value: e.value.as_ptr(),
        value_len: e.value.len(),
        meta: e.meta.into(),
        slot: e.slot,
        reserved: 0,
    };
    // SAFETY: `entry` and the bytes it points to live until `f` returns; `f` and `user` are
    // the caller's, under the gds_scan_fn contract (# Safety above).
    unsafe { f(user, &entry) }
}

/// Calls `callback` with every live entry, slot by slot, taking no lock: each entry is a consistent
/// copy; entries changed during the scan may be seen before or after the change. Stops early
/// when `callback` returns non-zero (the engine still walks the rest of the index, without calling
/// `callback`). `user` is passed through untouched and may be NULL.
///
/// Returns `GDS_OK` (completed or stopped by `callback`); `GDS_ERR_CORRUPT`;
/// `GDS_ERR_NULL_ARGUMENT` (`store` or `callback`).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `callback` is NULL or a function satisfying the `gds_scan_fn` contract for `user`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_scan(
    store: *const gds_store,
    callback: gds_scan_fn,
    user: *mut c_void,
) -> gds_status {
    boundary(|| {
        // SAFETY: `store` is NULL or a live handle (# Safety above).
        let store = unsafe { args::store(store) }?;
        let f = args::callback(callback, "callback")?;
        store.scan_while(|e| {
            // SAFETY: `f` and `user` are the caller's, under the gds_scan_fn contract.
            unsafe { deliver(f, user, &e) == 0 }
        })?;
        Ok(GDS_OK)
    })
}

/// Calls `callback` once with the live entry currently at index slot `slot` (for followers of the
/// change feed: `gds_change.slot`).
///
/// Returns `GDS_OK` (`callback` was called); `GDS_NOT_FOUND` (no live entry there, or no such
/// slot; `callback` was not called); `GDS_ERR_CORRUPT`; `GDS_ERR_NULL_ARGUMENT` (`store` or
/// `callback`).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// As `gds_scan`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_entry_at(
    store: *const gds_store,
    slot: u32,
    callback: gds_scan_fn,
    user: *mut c_void,
) -> gds_status {
    boundary(|| {
        // SAFETY: `store` is NULL or a live handle (# Safety above).
        let store = unsafe { args::store(store) }?;
        let f = args::callback(callback, "callback")?;
        let Some(e) = store.entry_at(slot)? else { return Ok(GDS_NOT_FOUND) };
        // SAFETY: `f` and `user` are the caller's, under the gds_scan_fn contract.
        unsafe { deliver(f, user, &e) };
        Ok(GDS_OK)
    })
}

/// Tests only, not in the header: moves the calling thread's engine clock forward by `ms`
/// milliseconds (TTLs, sliding windows, lock ages), so a test lets time pass without sleeping
/// (`gardenstate::advance_clock_for_tests`). It never changes what a segment stores; other
/// threads and processes keep the real clock. Declare it yourself to use it:
/// `void gds__advance_clock_for_tests(uint64_t ms);`. Never call it in production.
#[unsafe(no_mangle)]
pub extern "C" fn gds__advance_clock_for_tests(ms: u64) {
    engine::advance_clock_for_tests(std::time::Duration::from_millis(ms));
}
