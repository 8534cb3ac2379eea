//! The client table: one 256-byte slot per thread using the segment, in any process.
//!
//! Slot words: `C_OWNER = [pid:32 | gen:24 | state:8]`, `C_START` (the process start time, so
//! a reused pid is not mistaken for the owner), the journal (`C_J_NEW`, `C_J_OLD`,
//! `C_J_OLD_STATE`: the blocks an operation in flight is taking or giving up, heap.rs H3),
//! `C_RECENT_FREE`, `C_WRITING`, `C_FEED` (the feed position it reserved and has not written
//! yet, feed.rs F1), and the client's counters (stats.rs) on the following lines.
//!
//! States: FREE -> CLAIMING -> ACTIVE -> FREE (release) or ACTIVE -> RECLAIMING -> FREE (its
//! process died). Every claim adds 1 to `gen`. A process is dead when `/proc/<pid>/stat` is gone
//! or shows another start time; a CLAIMING or RECLAIMING slot is judged by its pid alone (its
//! start time word may be stale for an instant).
//!
//! Reclaiming a dead client (any process may do it, several at once without harm: every step
//! is a CAS that only one party wins):
//! - `C_J_NEW` names a block it allocated: if the block is still OWNED by this slot and is not
//!   the MEMBER of the index slot its record names, it was never published: an INSERTING slot
//!   pointing at it is cleared, then the block freed.
//! - `C_J_OLD` names a record it was unpublishing with its exact state word: if unchanged and no
//!   longer referenced by its index slot, the displaced record is freed; if already FREE, a
//!   stale bitmap bit is cleared (heap.rs H2).
//! - its counters fold into the retired totals; the slot becomes FREE.
//!
//! Locks held by the dead process are not touched here: whoever meets them sees the dead owner
//! and takes them over (store.rs). Nothing here waits for the dead client.

use crate::error::{Error, FullKind, Result};
use crate::layout::{self, CLIENT_WORDS, block, slot};
use crate::os;
use crate::segment::Segment;
use crate::stats;
use crate::sync::Ordering;

pub const C_OWNER: usize = 0;
pub const C_START: usize = 1;
pub const C_J_NEW: usize = 2;
pub const C_J_OLD: usize = 3;
pub const C_J_OLD_STATE: usize = 4;
/// The block this client freed last, + 1 (0 = none): an allocation hint only (heap.rs).
pub const C_RECENT_FREE: usize = 5;
/// 1 while the client is inside a write that passed (or is about to pass) the write-mode
/// check; see `Store::drain_writers` for the handshake (W1). 0 in segments of older builds,
/// which never used the word.
pub const C_WRITING: usize = 6;
/// The change-feed position this client reserved and has not written the entry of, + 1 (0 =
/// none): its claim (feed.rs F1). Stored before the CAS of the feed head, cleared after the
/// entry; a claim left by a CAS that lost names a position someone else took (harmless).
pub const C_FEED: usize = 7;

pub(crate) const FREE: u64 = 0;
const CLAIMING: u64 = 1;
const ACTIVE: u64 = 2;
const RECLAIMING: u64 = 3;

fn pack(pid: u32, gen_: u64, state: u64) -> u64 {
    ((pid as u64) << 32) | ((gen_ & 0xff_ffff) << 8) | state
}
fn pid_of(w: u64) -> u32 {
    (w >> 32) as u32
}
fn gen_of(w: u64) -> u64 {
    (w >> 8) & 0xff_ffff
}
fn state_of(w: u64) -> u64 {
    w & 0xff
}

impl Segment {
    pub(crate) fn client_base(&self, idx: usize) -> usize {
        self.g.clients_off + idx * CLIENT_WORDS
    }

    /// Claims a free client slot for this thread of process (`pid`, `start`).
    pub(crate) fn claim_client(&self, pid: u32, start: u64, rnd: u64) -> Result<usize> {
        for attempt in 0..2 {
            let n = self.g.max_clients as usize;
            for k in 0..n {
                let idx = (rnd as usize).wrapping_add(k) % n;
                let base = self.client_base(idx);
                let ow = self.mem.w(base + C_OWNER);
                let w = ow.load(Ordering::Acquire);
                if state_of(w) != FREE {
                    continue;
                }
                let claiming = pack(pid, gen_of(w) + 1, CLAIMING);
                if ow.compare_exchange(w, claiming, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    continue;
                }
                self.mem.w(base + C_START).store(start, Ordering::Relaxed);
                self.mem.w(base + C_J_NEW).store(0, Ordering::Relaxed);
                self.mem.w(base + C_J_OLD).store(0, Ordering::Relaxed);
                self.mem.w(base + C_WRITING).store(0, Ordering::Relaxed);
                self.mem.w(base + C_FEED).store(0, Ordering::Relaxed);
                ow.store(pack(pid, gen_of(w) + 1, ACTIVE), Ordering::Release);
                return Ok(idx);
            }
            if attempt == 0 && self.reclaim_dead_clients() == 0 {
                break;
            }
        }
        Err(Error::Full(FullKind::Clients))
    }

    /// Gives a slot back (its thread ended or the store handle was dropped).
    pub(crate) fn release_client(&self, idx: usize) {
        let base = self.client_base(idx);
        stats::retire(&self.mem, base);
        let ow = self.mem.w(base + C_OWNER);
        let w = ow.load(Ordering::Relaxed);
        ow.store(pack(0, gen_of(w), FREE), Ordering::Release);
    }

    pub(crate) fn client_alive(&self, w: u64, base: usize) -> bool {
        match state_of(w) {
            ACTIVE => os::process_alive(pid_of(w), self.mem.w(base + C_START).load(Ordering::Relaxed)),
            _ => os::process_start_time(pid_of(w)).is_some(),
        }
    }

    /// Waits until no live client is inside a write (`C_WRITING`), or `deadline` passes.
    /// Returns whether it drained. A client whose process died mid-write does not count: its
    /// write never returned to anyone.
    pub(crate) fn wait_no_writers(&self, deadline: std::time::Instant) -> bool {
        for idx in 0..self.g.max_clients as usize {
            let base = self.client_base(idx);
            let mut nap = std::time::Duration::from_micros(20);
            while self.mem.w(base + C_WRITING).load(Ordering::SeqCst) == 1 {
                let w = self.mem.w(base + C_OWNER).load(Ordering::Acquire);
                if state_of(w) != ACTIVE || !self.client_alive(w, base) {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(nap);
                nap = (nap * 2).min(std::time::Duration::from_millis(1));
            }
        }
        true
    }

    /// The feed positions claimed (F1) by active clients not proven dead. This is the one
    /// place the replicator's follower depends on liveness: a claim is dropped only when its
    /// process is dead by proof, never because its liveness could not be told.
    pub(crate) fn feed_claims(&self) -> Vec<u64> {
        (0..self.g.max_clients as usize)
            .filter_map(|idx| {
                let base = self.client_base(idx);
                let w = self.mem.w(base + C_OWNER).load(Ordering::Acquire);
                let claim = self.mem.w(base + C_FEED).load(Ordering::Acquire);
                (state_of(w) == ACTIVE && claim != 0 && self.client_alive(w, base)).then(|| claim - 1)
            })
            .collect()
    }

    /// Number of client slots in use.
    pub(crate) fn clients_in_use(&self) -> u64 {
        (0..self.g.max_clients as usize)
            .filter(|&i| state_of(self.mem.w(self.client_base(i) + C_OWNER).load(Ordering::Relaxed)) != FREE)
            .count() as u64
    }

    /// Reclaims every client whose process is dead. Returns how many it reclaimed.
    pub(crate) fn reclaim_dead_clients(&self) -> u64 {
        let my_pid = std::process::id();
        let mut reclaimed = 0;
        for idx in 0..self.g.max_clients as usize {
            let base = self.client_base(idx);
            let ow = self.mem.w(base + C_OWNER);
            let w = ow.load(Ordering::Acquire);
            if state_of(w) == FREE || self.client_alive(w, base) {
                continue;
            }
            let taken = pack(my_pid, gen_of(w), RECLAIMING);
            if ow.compare_exchange(w, taken, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            self.recover_journal(idx);
            stats::retire(&self.mem, base);
            self.mem.w(base + C_J_NEW).store(0, Ordering::Relaxed);
            self.mem.w(base + C_J_OLD).store(0, Ordering::Relaxed);
            if ow
                .compare_exchange(taken, pack(0, gen_of(w), FREE), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                reclaimed += 1;
            }
        }
        if reclaimed > 0 {
            // Credited to the retired totals: the reclaimer may itself be a short-lived client.
            self.mem
                .w(layout::H_RETIRED_STATS + stats::DEAD_RECLAIMS)
                .fetch_add(reclaimed, Ordering::Relaxed);
        }
        reclaimed
    }

    /// Is the record at heap offset `off`, with state word `st`, the one its index slot holds?
    /// Returns the slot position and word if the slot holds it (as MEMBER or INSERTING).
    pub(crate) fn slot_holding(&self, off: u64, st: u64) -> Option<(usize, u64)> {
        let meta = self.mem.w(self.heap_word(off) + layout::R_META).load(Ordering::Relaxed);
        let pos = (meta >> 32) as usize;
        if pos as u64 >= self.g.index_slots() {
            return None;
        }
        let w = self.mem.w(self.g.index_off + pos).load(Ordering::Acquire);
        let holds = slot::state(w) != slot::EMPTY
            && slot::block(w) as u64 == off
            && slot::generation(w) == block::generation(st) & slot::GEN_MASK;
        holds.then_some((pos, w))
    }

    fn recover_journal(&self, idx: usize) {
        let base = self.client_base(idx);
        let j_new = self.mem.w(base + C_J_NEW).load(Ordering::Acquire);
        if j_new != 0 && self.block_pos(j_new - 1).is_some() {
            let off = j_new - 1;
            let st = self.mem.w(self.heap_word(off) + layout::R_STATE).load(Ordering::Acquire);
            if block::kind(st) == block::OWNED && block::owner(st) as usize == idx {
                let published = match self.slot_holding(off, st) {
                    Some((_, w)) if slot::state(w) == slot::MEMBER => true,
                    Some((pos, w)) => {
                        // INSERTING, never completed: withdraw it (only a MEMBER is visible).
                        let _ = self.mem.w(self.g.index_off + pos).compare_exchange(
                            w,
                            slot::EMPTY,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        self.slot_holding(off, st).is_some()
                    }
                    None => false,
                };
                if !published {
                    self.free(off, st);
                }
            } else if block::kind(st) == block::FREE {
                self.repair_bit(off);
            }
        }
        let j_old = self.mem.w(base + C_J_OLD).load(Ordering::Acquire);
        if j_old != 0 && self.block_pos(j_old - 1).is_some() {
            let off = j_old - 1;
            let expect = self.mem.w(base + C_J_OLD_STATE).load(Ordering::Acquire);
            let st = self.mem.w(self.heap_word(off) + layout::R_STATE).load(Ordering::Acquire);
            if st == expect && self.slot_holding(off, st).is_none() {
                self.free(off, st);
            } else if block::kind(st) == block::FREE {
                self.repair_bit(off);
            }
        }
    }
}
