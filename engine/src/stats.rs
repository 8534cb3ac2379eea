//! Statistics. Each client slot counts the events of the operations that held it in its own
//! cache lines of the client table, so concurrent operations never share a counter line; the
//! counters stay in the slot from one holder to the next (the release store and the claim CAS
//! order one holder's counts before the next's), and a reader of stats sums every slot plus
//! the segment-wide counters (`H_RETIRED_STATS`: dead clients reclaimed).
//!
//! Occupancy (live entries, bytes used and free) is not counted but measured, by reading the
//! index and the page bitmaps: a counter would drift each time a client is killed between its
//! CAS and its count, and these figures must stay exact. That makes `Store::stats` cost a read
//! of the index (about 2 ms per million entries): a monitoring call, not a request-path one.

use crate::layout::{CLIENT_WORDS, H_RETIRED_STATS};
use crate::mem::Mem;
use crate::sync::Ordering;

pub const HITS: usize = 0;
pub const MISSES: usize = 1;
pub const SETS: usize = 2;
pub const DELETES: usize = 3;
pub const EXPIRED: usize = 4;
pub const EVICTED: usize = 5;
pub const LOCK_CONTENDED: usize = 6;
pub const LOCK_TAKEOVERS: usize = 7;
pub const DEAD_RECLAIMS: usize = 8;
pub const TOUCHES: usize = 9;
pub const LOCKS: usize = 10;
pub const SWEEPS: usize = 11;
/// Worker writes that failed, by cause (`Store::worker_write`, `Store::count_oversized`):
/// the heap or index full, a key or value too large, writes refused (a replica, fenced, or
/// the write lease run out), the entry locked by another lock id or a lock id that no longer
/// holds its entry (taken over). Four words: with the 12 before them the header's
/// `H_RETIRED_STATS` range (48..64) is full. Outcomes of conditional writes (`Exists`,
/// `VersionMismatch`, `NotFound`) are answers, not failures, and are not counted.
pub const FAILED_FULL: usize = 12;
pub const FAILED_TOO_LARGE: usize = 13;
pub const FAILED_READ_ONLY: usize = 14;
pub const FAILED_LOCKED: usize = 15;
pub const STAT_COUNT: usize = 16;
const _: () = assert!(crate::layout::H_RETIRED_STATS + STAT_COUNT <= crate::layout::H_SWEEP_CLIENT_CURSOR);
/// Where the counters start inside a client's 32 words.
pub const CLIENT_STATS_OFF: usize = 8;
const _: () = assert!(CLIENT_STATS_OFF + STAT_COUNT <= CLIENT_WORDS);

/// A point-in-time sum of the segment's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries present (including expired ones the sweeper has not reclaimed yet).
    pub live_entries: u64,
    /// Heap bytes held by blocks in use (block sizes, so internal fragmentation included).
    pub bytes_used: u64,
    /// Heap bytes not in use. A page keeps the size class it was first given, so the free
    /// blocks and the tail of an assigned page serve only records of that class (heap.rs).
    pub bytes_free: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub expirations: u64,
    pub evictions: u64,
    pub touches: u64,
    pub locks: u64,
    pub lock_contentions: u64,
    pub lock_takeovers: u64,
    /// Clients of dead processes reclaimed, and locks taken over because their owner died.
    pub dead_reclaims: u64,
    pub sweeps: u64,
    /// Worker writes that failed: the heap or the index full (`Full`; a failed client claim
    /// is not a write and not counted), a key or value over the segment's limits, refused as
    /// read-only (a standby, fenced, or the write lease run out), and the entry locked by
    /// another lock id or a lock id that no longer holds its entry (taken over). Per-client
    /// counters summed, like the others.
    pub failed_full: u64,
    pub failed_too_large: u64,
    pub failed_read_only: u64,
    pub failed_locked: u64,
    /// Client slots in use: operations in flight across all processes, plus slots of dead
    /// processes not yet reclaimed. Idle threads hold none.
    pub clients: u64,
    /// Change-feed position: every change recorded (writes, deletes, expirations, touches and
    /// the feed's own no-op entries).
    pub feed_head: u64,
}

/// Adds `n` to this client's counter `which` (only the slot's holder writes it).
#[inline]
pub(crate) fn bump(mem: &Mem, client_base: usize, which: usize, n: u64) {
    let w = mem.w(client_base + CLIENT_STATS_OFF + which);
    w.store(w.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Sums the counters of every client slot and the retired totals.
pub(crate) fn sum(mem: &Mem, clients_off: usize, max_clients: usize) -> [u64; STAT_COUNT] {
    let mut t = [0u64; STAT_COUNT];
    for (i, v) in t.iter_mut().enumerate() {
        *v = mem.w(H_RETIRED_STATS + i).load(Ordering::Relaxed);
    }
    for c in 0..max_clients {
        let base = clients_off + c * CLIENT_WORDS + CLIENT_STATS_OFF;
        for (i, v) in t.iter_mut().enumerate() {
            *v = v.wrapping_add(mem.w(base + i).load(Ordering::Relaxed));
        }
    }
    t
}
