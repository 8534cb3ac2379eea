//! The client table: one 256-byte slot per operation in flight, in any process.
//!
//! A thread holds a slot only while it is inside an operation: `Store` claims one when an
//! operation starts (trying first the slot the thread used last, so the claim is one CAS on a
//! line likely still in its cache) and releases it when the operation ends. Idle threads hold
//! none, so the number of threads is not a limit: `max_clients` bounds the operations in flight
//! at once. (A slot used to be held for a thread's whole life: a process with more threads than
//! slots got `Full(Clients)` on reads.) If every slot is in use, a claim reclaims the slots of
//! dead processes, then waits (up to `CLAIM_WAIT`) for an operation to end.
//!
//! Slot words: `C_OWNER = [state:2 | pid:22 | start:40]`: who holds the slot, the pid and the
//! low 40 bits of its process start time (os.rs `START_MASK`), so a reused pid is not mistaken
//! for the owner; the journal (`C_J_NEW`, `C_J_OLD`, `C_J_OLD_STATE`: the blocks an operation in
//! flight is taking or giving up, heap.rs H3), `C_RECENT_FREE`, `C_WRITING`, `C_PAGE_GEN` (heap.rs
//! "Page reuse"), `C_FEED` (the feed position it reserved and has not written yet, feed.rs
//! F1), and counters (stats.rs) on the following lines.
//! The counters stay with the slot whoever holds it next (`stats::sum` adds up every slot).
//!
//! States: FREE (word 0) -> ACTIVE (one CAS that writes the whole identity of the claimer)
//! -> FREE (release), or ACTIVE -> RECLAIMING (the reclaimer's identity) -> FREE (the holder's
//! process died). A word names its holder completely at every instant (no half-claimed state
//! judged by a pid alone), so the same (pid, start) can only reappear if that process claims
//! again, which a dead one cannot: a reclaimer's CAS from a dead holder's word cannot succeed
//! on a later claim.
//!
//! C1. A FREE slot has empty journals, `C_WRITING` 0 and no feed claim: release clears `C_J_NEW`
//! (which may still name a block another client took first: not ours, nothing to recover) and
//! `C_FEED` (a claim left by a reserving CAS that lost names a position another took) before its
//! release store, reclaim clears everything before its freeing CAS, and the claimer's acquire
//! CAS sees those stores.
//!
//! Liveness is three-valued (os.rs `liveness`): only a holder proven `Dead` (ESRCH from
//! `kill(pid, 0)`, or `/proc/<pid>/stat` read and showing a zombie or another start time) is
//! reclaimed. `Unknown` (a sweeper out of file descriptors or memory, `hidepid`) is treated as
//! alive: a live writer's blocks are never freed under it. Every process sharing a segment must
//! be in the creator's PID namespace (`H_PID_NS`); `client_identity` refuses any other with an
//! error naming both namespaces. A lease renewed by each client would let processes of other
//! namespaces in, but a lease that runs out proves nothing: a process stopped past it (SIGSTOP,
//! a cgroup freeze, swap) resumes mid-write into blocks reclaimed under it. Pids prove death.
//!
//! Reclaiming a dead client (any process may do it, several at once without harm: every step
//! is a CAS that only one party wins):
//! - `C_J_NEW` names a block it allocated: if the block is still OWNED by this slot and is not
//!   the MEMBER of the index slot its record names, it was never published: an INSERTING slot
//!   pointing at it is cleared, then the block freed. If the word carries `J_NEW_GUARDING`,
//!   the client died inside a guarded take (heap.rs H5): the block steps back to FREE at the
//!   generation it was taken from.
//! - `C_J_OLD` names a record it was unpublishing with its exact state word: if unchanged and no
//!   longer referenced by its index slot, the displaced record is freed; if already FREE, a
//!   stale bitmap bit is cleared (heap.rs H2). While set, `C_J_OLD` also holds its block below
//!   the block's next guarded generation (heap.rs H5: the allocator's guard scans every
//!   client's `C_J_OLD`, whatever the client's state), and both journals hold their blocks'
//!   pages back from reuse (heap.rs "Page reuse"), so they must be cleared, by the writer or
//!   by this reclaim, once the operation is over.
//! - a page it was retiring or initializing is rolled back (heap.rs "Page reuse": an
//!   initialization goes back to RETIRED above the generation bound in its `C_PAGE_GEN`);
//!   its journals, cleared last, no longer hold back the reuse of the pages they name;
//! - the slot becomes FREE (C1).
//!
//! A thread that unwinds out of an operation (a panic) leaves its slot as a kill would and
//! recovers it the same way at once (`abandon_client`), so a caught panic leaks no slot.
//!
//! Locks held by the dead process are not touched here: whoever meets them sees the dead owner
//! and takes them over (store.rs). Nothing here waits for the dead client.

use crate::error::{Error, FullKind, Result};
use crate::heap::{J_NEW_GUARDING, journaled_new};
use crate::layout::{self, CLIENT_WORDS, block, slot};
use crate::os::{self, Liveness};
use crate::segment::Segment;
use crate::sync::Ordering;
use std::time::{Duration, Instant};

pub const C_OWNER: usize = 0;
pub const C_J_NEW: usize = 1;
pub const C_J_OLD: usize = 2;
pub const C_J_OLD_STATE: usize = 3;
/// The block this client freed last, + 1 (0 = none): an allocation hint only (heap.rs).
pub const C_RECENT_FREE: usize = 4;
/// 1 while the client is inside a write that passed (or is about to pass) the write-mode
/// check; see `Store::drain_writers` for the handshake (W1).
pub const C_WRITING: usize = 5;
/// The generation bound of the page this client is making a page of another class (heap.rs
/// "Page reuse"), stored before its CAS to INIT: a reclaimer retires a page a dead client
/// left INIT above it.
pub const C_PAGE_GEN: usize = 6;
/// The change-feed position this client reserved and has not written the entry of, + 1 (0 =
/// none): its claim (feed.rs F1). Stored before the CAS of the feed head, cleared after the
/// entry; a claim left by a CAS that lost names a position someone else took (harmless).
pub const C_FEED: usize = 7;

const FREE: u64 = 0;
const ACTIVE: u64 = 1;
const RECLAIMING: u64 = 2;

/// Pids are below 2^22 on Linux (`PID_MAX_LIMIT`).
const PID_BITS: u32 = 22;

/// How long a claim waits for an operation in flight to end when every slot is in use.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

fn pack(state: u64, pid: u32, start: u64) -> u64 {
    (state << 62) | ((pid as u64 & ((1 << PID_BITS) - 1)) << 40) | (start & os::START_MASK)
}
fn with_state(w: u64, state: u64) -> u64 {
    (w & !(3 << 62)) | (state << 62)
}
fn pid_of(w: u64) -> u32 {
    ((w >> 40) & ((1 << PID_BITS) - 1)) as u32
}
fn start_of(w: u64) -> u64 {
    w & os::START_MASK
}
fn state_of(w: u64) -> u64 {
    w >> 62
}

/// An owner word, for the layout fingerprint (a build packing it otherwise has another).
pub(crate) fn owner_word_example() -> u64 {
    pack(RECLAIMING, 0x2_1234, 0xab_cdef_0123)
}

/// A dead client's slot this process took for reclaiming (`taken`), handed back to its dead
/// owner's word when dropped (unwinding out of the recovery).
struct GiveBack<'s> {
    owner: &'s crate::sync::AtomicU64,
    taken: u64,
    dead: u64,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        let _ = self.owner.compare_exchange(self.taken, self.dead, Ordering::AcqRel, Ordering::Relaxed);
    }
}

impl Segment {
    pub(crate) fn client_base(&self, idx: usize) -> usize {
        self.g.clients_off + idx * CLIENT_WORDS
    }

    /// Records the creator's PID namespace in a segment being built (before its READY stamp).
    pub(crate) fn stamp_pid_namespace(&self) -> Result<()> {
        self.mem.w(layout::H_PID_NS).store(os::pid_namespace()?, Ordering::Relaxed);
        Ok(())
    }

    /// This process's owner word (ACTIVE), after checking it may use this segment: it must be
    /// in the segment's PID namespace, or every pid it registers would name another process
    /// for the others (and theirs for it), and liveness could not be judged.
    pub(crate) fn client_identity(&self) -> Result<u64> {
        let (seg_ns, ns) = (self.mem.w(layout::H_PID_NS).load(Ordering::Relaxed), os::pid_namespace()?);
        if seg_ns != ns {
            return Err(Error::Refused {
                path: self.path.display().to_string(),
                reason: format!(
                    "it was created in PID namespace pid:[{seg_ns}] and this process is in pid:[{ns}]: \
                     every process sharing a segment must be in one PID namespace, since pids tell \
                     which clients died (run the container with the host's or the other's PID \
                     namespace: --pid=host, --pid=container:NAME, or shareProcessNamespace)"
                ),
            });
        }
        let (pid, start) = os::self_identity()?;
        if pid >= 1 << PID_BITS {
            return Err(Error::Refused {
                path: self.path.display().to_string(),
                reason: format!("pid {pid} does not fit the client slot's {PID_BITS} bits (Linux pids do)"),
            });
        }
        Ok(pack(ACTIVE, pid, start))
    }

    /// Claims a free client slot for one operation of the client `me` (its owner word from
    /// `client_identity`), trying `hint` first.
    pub(crate) fn claim_client(&self, me: u64, hint: usize) -> Result<usize> {
        let n = self.g.max_clients as usize;
        let mut waited: Option<(Instant, Duration)> = None;
        loop {
            for k in 0..n {
                let idx = hint.wrapping_add(k) % n;
                let ow = self.mem.w(self.client_base(idx) + C_OWNER);
                if ow.load(Ordering::Relaxed) == FREE
                    && ow.compare_exchange(FREE, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    return Ok(idx);
                }
            }
            if self.reclaim_dead_clients(me) > 0 {
                continue;
            }
            // Every slot holds an operation in flight (or a holder whose liveness is
            // unknown): wait for one to end.
            let (since, nap) = waited.get_or_insert((Instant::now(), Duration::from_micros(10)));
            if since.elapsed() >= CLAIM_WAIT {
                return Err(Error::Full(FullKind::Clients));
            }
            std::thread::sleep(*nap);
            *nap = (*nap * 2).min(Duration::from_millis(1));
        }
    }

    /// Gives a slot back at the end of an operation (C1).
    pub(crate) fn release_client(&self, idx: usize) {
        let base = self.client_base(idx);
        self.mem.w(base + C_J_NEW).store(0, Ordering::Relaxed);
        self.mem.w(base + C_FEED).store(0, Ordering::Relaxed);
        self.mem.w(base + C_OWNER).store(FREE, Ordering::Release);
    }

    /// Gives back the slot `me` holds for an operation that unwound (a panic) in the middle:
    /// recovered as a dead client's would be, so the segment is left as a kill leaves it
    /// once reclaimed.
    pub(crate) fn abandon_client(&self, idx: usize, me: u64) {
        self.recover_and_free(idx, me);
    }

    /// The liveness of the holder named by a non-FREE owner word.
    pub(crate) fn holder_liveness(w: u64) -> Liveness {
        os::liveness(pid_of(w), start_of(w))
    }

    /// The pid in a non-FREE owner word.
    pub(crate) fn holder_pid(w: u64) -> u32 {
        pid_of(w)
    }

    /// Is the owner word that of a FREE slot?
    pub(crate) fn slot_is_free(w: u64) -> bool {
        w == FREE
    }

    /// Waits until no live client is inside a write (`C_WRITING`), or `deadline` passes.
    /// Returns whether it drained. A client whose process died mid-write does not count: its
    /// write never returned to anyone. One whose liveness is unknown is waited for.
    pub(crate) fn wait_no_writers(&self, deadline: std::time::Instant) -> bool {
        for idx in 0..self.g.max_clients as usize {
            let base = self.client_base(idx);
            let mut nap = std::time::Duration::from_micros(20);
            while self.mem.w(base + C_WRITING).load(Ordering::SeqCst) == 1 {
                let w = self.mem.w(base + C_OWNER).load(Ordering::Acquire);
                if state_of(w) != ACTIVE || Segment::holder_liveness(w) == Liveness::Dead {
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
                (state_of(w) == ACTIVE && claim != 0 && Segment::holder_liveness(w) != Liveness::Dead)
                    .then(|| claim - 1)
            })
            .collect()
    }

    /// Number of client slots in use: operations in flight, and holders not yet reclaimed.
    pub(crate) fn clients_in_use(&self) -> u64 {
        (0..self.g.max_clients as usize)
            .filter(|&i| self.mem.w(self.client_base(i) + C_OWNER).load(Ordering::Relaxed) != FREE)
            .count() as u64
    }

    /// Reclaims every client whose holder is proven dead (`me`: the reclaimer's owner word).
    /// Returns how many it reclaimed.
    pub(crate) fn reclaim_dead_clients(&self, me: u64) -> u64 {
        self.reclaim_dead_clients_in(me, 0..self.g.max_clients as usize)
    }

    /// Reclaims the clients among `slots` whose holder is proven dead (a sweep's bounded step).
    pub(crate) fn reclaim_dead_clients_in(&self, me: u64, slots: impl Iterator<Item = usize>) -> u64 {
        let mut reclaimed = 0;
        for idx in slots {
            let ow = self.mem.w(self.client_base(idx) + C_OWNER);
            let w = ow.load(Ordering::Acquire);
            if w == FREE || w == me || Segment::holder_liveness(w) != Liveness::Dead {
                continue;
            }
            let taken = with_state(me, RECLAIMING);
            if ow.compare_exchange(w, taken, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            // A panic inside the recovery (caught by a caller) must not leave the slot
            // RECLAIMING under this live process, where nobody would ever finish it: the
            // guard hands it back to its dead owner's word, for the next sweep to reclaim
            // again (recovering a journal is idempotent, as several reclaimers may run it).
            let give_back = GiveBack { owner: ow, taken, dead: w };
            let freed = self.recover_and_free(idx, taken);
            std::mem::forget(give_back); // recovered: nothing to give back
            if freed {
                reclaimed += 1;
            }
        }
        if reclaimed > 0 {
            self.mem
                .w(layout::H_RETIRED_STATS + crate::stats::DEAD_RECLAIMS)
                .fetch_add(reclaimed, Ordering::Relaxed);
        }
        reclaimed
    }

    /// Recovers slot `idx`'s journal, clears it (C1) and frees the slot if its owner word is
    /// still `held`. Returns whether it freed it.
    fn recover_and_free(&self, idx: usize, held: u64) -> bool {
        let base = self.client_base(idx);
        self.recover_journal(idx);
        self.recover_page_work(idx);
        for w in [C_J_NEW, C_J_OLD, C_WRITING, C_FEED, C_PAGE_GEN] {
            self.mem.w(base + w).store(0, Ordering::Relaxed);
        }
        self.mem.w(base + C_OWNER).compare_exchange(held, FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok()
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
        if j_new & J_NEW_GUARDING != 0 {
            // Killed inside a guarded take (heap.rs H5): the block was never published.
            if let Some(off) = journaled_new(j_new).filter(|&off| self.block_pos(off).is_some()) {
                self.undo_guarded_take(idx, off);
            }
        } else if j_new != 0 && self.block_pos(j_new - 1).is_some() {
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
