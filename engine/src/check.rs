//! `fsck` for a segment: walks the index, the heap and the client table and checks every
//! invariant the module comments state, on a quiet segment or a live one.
//!
//! A live segment shows states that look wrong for an instant and are not: an INSERTING slot,
//! a block OWNED but not yet published (or published in a slot the scan had passed), a bit set
//! over a block being freed, a record rewritten while it was read, a page retiring under the
//! scan, a key deleted from one slot and inserted in a later one. So the first pass only
//! collects suspects; a second pass re-examines each of them alone (a few rounds, with short
//! pauses while operations are in flight), and what settled is dropped. What stays is damage,
//! except what stays in the hands of an operation in flight of a live process (the block's
//! owner slot, or a journal, held by a process not proven dead; a record that kept changing):
//! a stalled or very busy writer, counted in `in_flight` and not reported as a problem. The
//! client journals (`C_J_NEW`, `C_J_OLD`) are read in each round, so a block an operation is
//! taking or giving up counts as accounted for.

use crate::clients::{C_J_NEW, C_J_OLD, C_OWNER};
use crate::heap::journaled_new;
use crate::layout::{self, BUCKET_SLOTS, MAX_PROBE_BUCKETS, class_size, slot};
use crate::os::Liveness;
use crate::record::{Read, Sink};
use crate::segment::Segment;
use crate::sync::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What a check found. `problems` is empty for a healthy segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Published entries (MEMBER slots), expired or not.
    pub entries: u64,
    /// Blocks in use, and how many of them no index slot or client journal names (a dead
    /// client's journal counts until it is reclaimed: its blocks are not leaked yet).
    pub blocks_in_use: u64,
    pub leaked_blocks: u64,
    /// Free blocks whose bitmap bit says "in use" (allocators cannot find them).
    pub hidden_free_blocks: u64,
    /// Blocks in use whose bitmap bit says "free": harmless (a failed CAS), counted for info.
    pub stale_free_bits: u64,
    /// Client slots of dead processes not yet reclaimed (a sweep reclaims them).
    pub dead_clients: u64,
    /// Slots and blocks that looked wrong and stayed so while held by an operation in flight
    /// of a live process (a stalled or very busy writer): not damage, not in `problems`.
    pub in_flight: u64,
    /// Each violated invariant, with where.
    pub problems: Vec<String>,
}

/// Pauses between the re-examination rounds of the suspects, while operations are in flight.
const SETTLE: [Duration; 5] = [
    Duration::from_millis(1),
    Duration::from_millis(4),
    Duration::from_millis(15),
    Duration::from_millis(40),
    Duration::from_millis(100),
];

/// What one index slot holds, as a check sees it.
#[derive(Default)]
struct SlotView {
    /// A MEMBER slot's block (a block start), and its key if the record could be read.
    member: Option<(u64, Option<Vec<u8>>)>,
    /// The block an INSERTING slot or a record read during a rewrite names: its owner may
    /// be an operation in flight.
    pending: Option<u64>,
    /// The invariants this slot violates now.
    issues: Vec<String>,
}

/// A block that looked wrong in the first pass, with the words it was judged on.
#[derive(Clone, Copy)]
enum BlockSuspect {
    /// OWNED, named by no index slot and no client journal.
    Unnamed { off: u64, state: u64 },
    /// Not OWNED, its bitmap bit set.
    Hidden { off: u64, state: u64, page: u64, index: u64 },
    /// RETIRED in a page that read ACTIVE.
    Retired { off: u64, page: u64, index: u64, page_word: u64 },
}

impl Segment {
    pub(crate) fn check(&self) -> CheckReport {
        let mut r = CheckReport::default();
        let quiet_before = self.clients_in_use() == 0;
        let head_before = self.feed_head();
        let mut referenced = HashSet::new();
        let mut keys: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut slot_suspects: Vec<usize> = Vec::new();
        for pos in 0..self.g.index_slots() as usize {
            if pos % BUCKET_SLOTS == 0 {
                // The bucket's probe bound: readers clamp a larger one, so only check says so.
                let b = self.index_word(pos).load(Ordering::Acquire);
                if b >= MAX_PROBE_BUCKETS as u64 {
                    r.problems.push(format!(
                        "bucket {}: probe bound {b} beyond {}",
                        pos / BUCKET_SLOTS,
                        MAX_PROBE_BUCKETS - 1
                    ));
                }
                continue;
            }
            let v = self.view_slot(pos);
            if let Some((off, key)) = v.member {
                r.entries += 1;
                referenced.insert(off);
                if let Some(other) = key.and_then(|k| keys.insert(k, pos)) {
                    slot_suspects.extend([other, pos]);
                }
            }
            if !v.issues.is_empty() {
                slot_suspects.push(pos);
            }
        }
        let (journaled, _) = self.journals(&mut r.dead_clients);
        let mut block_suspects = Vec::new();
        for page in 0..self.g.n_pages {
            let c = self.page_class(page);
            if c == 0 || matches!(layout::page::state(c), layout::page::RETIRED | layout::page::INIT) {
                continue; // unused, or no block of it in use (heap.rs "Page reuse")
            }
            let Some(class) = layout::page::class_of_word(c, self.g.n_classes) else {
                r.problems.push(format!("page {page}: invalid page word {c:#x}"));
                continue;
            };
            let active = layout::page::state(c) == layout::page::ACTIVE;
            let size = class_size(class);
            for index in 0..self.g.page_size / size {
                let off = page * self.g.page_words() + index * size / 8;
                let st = self.mem.w(self.heap_word(off) + layout::R_STATE).load(Ordering::Acquire);
                let bit =
                    self.mem.w(self.bitmap_word(page, index)).load(Ordering::Relaxed) >> (index % 64) & 1;
                if layout::block::kind(st) == layout::block::OWNED {
                    r.blocks_in_use += 1;
                    if !referenced.contains(&off) && !journaled.contains(&off) {
                        block_suspects.push(BlockSuspect::Unnamed { off, state: st });
                    }
                    r.stale_free_bits += u64::from(bit == 0);
                } else if bit == 1 {
                    block_suspects.push(BlockSuspect::Hidden { off, state: st, page, index });
                } else if active && layout::block::kind(st) == layout::block::RETIRED {
                    block_suspects.push(BlockSuspect::Retired { off, page, index, page_word: c });
                }
            }
        }
        // Second pass: the suspects alone, again, until they settle. A segment on which
        // nothing ran during the first pass (no client slot held, no feed position taken,
        // before or after) cannot have changed under it: one round, no pause.
        let quiet = quiet_before && self.clients_in_use() == 0 && self.feed_head() == head_before;
        let mut slot_issues: Vec<(usize, SlotView)> = Vec::new();
        let mut pauses = SETTLE.iter();
        loop {
            slot_issues.clear();
            let (mut seen, mut twins): (HashMap<Vec<u8>, usize>, Vec<usize>) = Default::default();
            slot_suspects.sort_unstable();
            slot_suspects.dedup();
            for &pos in &slot_suspects {
                let mut v = self.view_slot(pos);
                // Both slots of a key seen twice are suspects: each round compares them again.
                if let Some(other) =
                    v.member.as_ref().and_then(|(_, k)| k.clone()).and_then(|k| seen.insert(k, pos))
                {
                    v.issues.push(format!("slots {other} and {pos}: the same key is published twice"));
                    twins.push(other);
                }
                if !v.issues.is_empty() {
                    slot_issues.push((pos, v));
                }
            }
            slot_suspects = slot_issues.iter().map(|(p, _)| *p).chain(twins).collect();
            let mut dead = 0;
            let (journaled, live_journaled) = self.journals(&mut dead);
            block_suspects.retain(|s| !self.block_settled(s, &journaled));
            if slot_issues.is_empty() && block_suspects.is_empty() {
                break;
            }
            match pauses.next() {
                Some(p) if !quiet => std::thread::sleep(*p),
                _ => {
                    self.judge_suspects(&mut r, &slot_issues, &block_suspects, &live_journaled);
                    break;
                }
            }
        }
        if r.leaked_blocks > 0 {
            r.problems.push(format!("{} blocks in use are neither published nor journaled", r.leaked_blocks));
        }
        if r.hidden_free_blocks > 0 {
            r.problems.push(format!("{} free blocks are hidden by a set bitmap bit", r.hidden_free_blocks));
        }
        r
    }

    /// Sorts what stayed suspect through every round: held by an operation in flight of a
    /// live process (`in_flight`), or damage (`problems`, `leaked_blocks`, ...).
    fn judge_suspects(
        &self,
        r: &mut CheckReport,
        slots: &[(usize, SlotView)],
        blocks: &[BlockSuspect],
        live_journaled: &HashSet<u64>,
    ) {
        for (_, v) in slots {
            if v.pending.is_some_and(|off| self.owner_in_flight(off)) {
                r.in_flight += 1;
            } else {
                r.problems.extend(v.issues.iter().cloned());
            }
        }
        for s in blocks {
            match *s {
                BlockSuspect::Unnamed { off, .. } if self.owner_in_flight(off) => r.in_flight += 1,
                BlockSuspect::Unnamed { .. } => r.leaked_blocks += 1,
                BlockSuspect::Hidden { off, .. } if live_journaled.contains(&off) => r.in_flight += 1,
                BlockSuspect::Hidden { .. } => r.hidden_free_blocks += 1,
                BlockSuspect::Retired { page, index, .. } => {
                    r.problems.push(format!("page {page}: block {index} RETIRED in an ACTIVE page"))
                }
            }
        }
    }

    /// Every block named by a client journal (`C_J_NEW`, `C_J_OLD`), and those named by the
    /// journal of a client whose holder is not proven dead; counts dead holders into `dead`.
    fn journals(&self, dead: &mut u64) -> (HashSet<u64>, HashSet<u64>) {
        let (mut all, mut live) = (HashSet::new(), HashSet::new());
        for idx in 0..self.g.max_clients as usize {
            let base = self.client_base(idx);
            let w = self.mem.w(base + C_OWNER).load(Ordering::Acquire);
            if Segment::slot_is_free(w) {
                continue;
            }
            let alive = Segment::holder_liveness(w) != Liveness::Dead;
            *dead += u64::from(!alive);
            let j_new = self.mem.w(base + C_J_NEW).load(Ordering::Relaxed);
            let j_old = self.mem.w(base + C_J_OLD).load(Ordering::Relaxed);
            for off in journaled_new(j_new).into_iter().chain(j_old.checked_sub(1)) {
                all.insert(off);
                if alive {
                    live.insert(off);
                }
            }
        }
        (all, live)
    }

    /// Whether the block at `off` is owned by a client slot held now by a process not proven
    /// dead (an operation in flight: a stalled or busy writer, not damage).
    fn owner_in_flight(&self, off: u64) -> bool {
        if self.block_pos(off).is_none() {
            return false;
        }
        let st = self.mem.w(self.heap_word(off) + layout::R_STATE).load(Ordering::Acquire);
        let owner = layout::block::owner(st) as u64;
        if layout::block::kind(st) != layout::block::OWNED || owner >= self.g.max_clients {
            return false;
        }
        let w = self.mem.w(self.client_base(owner as usize) + C_OWNER).load(Ordering::Acquire);
        !Segment::slot_is_free(w) && Segment::holder_liveness(w) != Liveness::Dead
    }

    /// Whether a block suspect is explained now: its words changed (it moved on), or it is
    /// published at the slot its record names, or a journal names it.
    fn block_settled(&self, s: &BlockSuspect, journaled: &HashSet<u64>) -> bool {
        match *s {
            BlockSuspect::Unnamed { off, state } => {
                let base = self.heap_word(off);
                if self.mem.w(base + layout::R_STATE).load(Ordering::Acquire) != state
                    || journaled.contains(&off)
                {
                    return true;
                }
                let pos = (self.mem.w(base + layout::R_META).load(Ordering::Relaxed) >> 32) as usize;
                if pos >= self.g.index_slots() as usize || pos % BUCKET_SLOTS == 0 {
                    return false;
                }
                let w = self.index_word(pos).load(Ordering::Acquire);
                matches!(slot::state(w), slot::MEMBER | slot::INSERTING) && slot::block(w) as u64 == off
            }
            BlockSuspect::Hidden { off, state, page, index } => {
                self.mem.w(self.heap_word(off) + layout::R_STATE).load(Ordering::Acquire) != state
                    || self.mem.w(self.bitmap_word(page, index)).load(Ordering::Relaxed) >> (index % 64) & 1
                        == 0
            }
            BlockSuspect::Retired { off, page, page_word, .. } => {
                self.page_class(page) != page_word
                    || layout::block::kind(
                        self.mem.w(self.heap_word(off) + layout::R_STATE).load(Ordering::Acquire),
                    ) != layout::block::RETIRED
            }
        }
    }

    /// Reads index slot `pos` and checks every invariant of it and its record.
    fn view_slot(&self, pos: usize) -> SlotView {
        let mut v = SlotView::default();
        let w = self.index_word(pos).load(Ordering::Acquire);
        match slot::state(w) {
            slot::EMPTY => return v,
            slot::INSERTING => {
                v.pending = Some(slot::block(w) as u64);
                v.issues.push(format!("slot {pos}: unsettled INSERTING word {w:#x}"));
                return v;
            }
            slot::MEMBER => {}
            s => {
                v.issues.push(format!("slot {pos}: invalid state {s}"));
                return v;
            }
        }
        let off = slot::block(w) as u64;
        let Some(bp) = self.block_pos(off) else {
            v.issues.push(format!("slot {pos}: block offset {off} is not a block start"));
            return v;
        };
        v.member = Some((off, None));
        let (mut key, mut value) = (Vec::new(), Vec::new());
        match self.read_record(pos, w, None, &mut Sink::KeyAndValue(&mut key, &mut value)) {
            Read::Ok { .. } => {}
            Read::Damaged(why) => {
                v.issues.push(format!("slot {pos}: {why}"));
                return v;
            }
            _ => {
                v.pending = Some(off);
                v.issues.push(format!("slot {pos}: record changed while it was read"));
                return v;
            }
        }
        let base = self.heap_word(off);
        let need = layout::record_bytes(key.len(), value.len()) as u64;
        if need > class_size(bp.class) {
            v.issues.push(format!("slot {pos}: record of {need} B in a {} B block", class_size(bp.class)));
        }
        let meta = self.mem.w(base + layout::R_META).load(Ordering::Relaxed);
        if (meta >> 32) as usize != pos {
            v.issues.push(format!("slot {pos}: record says it is published at {}", meta >> 32));
        }
        let p = self.probe(&key);
        if self.mem.w(base + layout::R_KEY_HASH).load(Ordering::Relaxed) != p.hash || slot::tag(w) != p.tag {
            v.issues.push(format!("slot {pos}: key hash or tag does not match the key"));
        }
        if self.rank(p.home, pos) >= (self.bound(p.home) + 1) * BUCKET_SLOTS {
            v.issues.push(format!("slot {pos}: outside the probe window of its home bucket {}", p.home));
        }
        // Checks that read the record after its validation: a rewrite in between makes them
        // look wrong, so the slot must still hold this record for them to count.
        if !v.issues.is_empty() && self.index_word(pos).load(Ordering::Acquire) != w {
            v.issues = vec![format!("slot {pos}: record changed while it was read")];
            v.pending = Some(off);
        }
        v.member = Some((off, Some(key)));
        v
    }
}
