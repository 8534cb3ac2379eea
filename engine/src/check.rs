//! `fsck` for a segment: walks the index, the heap and the client table and checks every
//! invariant the module comments state. Meant for a quiescent segment (no operation in flight):
//! run concurrently with writers it may report transient states (an INSERTING slot, an OWNED
//! block not yet published) as problems.

use crate::clients::{C_J_NEW, C_J_OLD, C_OWNER};
use crate::heap::journaled_new;
use crate::layout::{self, BUCKET_SLOTS, MAX_PROBE_BUCKETS, class_size, slot};
use crate::record::{Read, Sink};
use crate::segment::Segment;
use crate::sync::Ordering;
use std::collections::{HashMap, HashSet};

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
    /// Each violated invariant, with where.
    pub problems: Vec<String>,
}

impl Segment {
    pub(crate) fn check(&self) -> CheckReport {
        let mut r = CheckReport::default();
        let mut referenced = HashSet::new();
        let mut keys: HashMap<Vec<u8>, usize> = HashMap::new();
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
            let w = self.index_word(pos).load(Ordering::Acquire);
            match slot::state(w) {
                slot::EMPTY => continue,
                slot::INSERTING => {
                    r.problems.push(format!("slot {pos}: unsettled INSERTING word {w:#x}"));
                    continue;
                }
                slot::MEMBER => {}
                s => {
                    r.problems.push(format!("slot {pos}: invalid state {s}"));
                    continue;
                }
            }
            r.entries += 1;
            let off = slot::block(w) as u64;
            let Some(bp) = self.block_pos(off) else {
                r.problems.push(format!("slot {pos}: block offset {off} is not a block start"));
                continue;
            };
            referenced.insert(off);
            let (mut key, mut value) = (Vec::new(), Vec::new());
            match self.read_record(pos, w, None, &mut Sink::KeyAndValue(&mut key, &mut value)) {
                Read::Ok { .. } => {}
                Read::Damaged(why) => {
                    r.problems.push(format!("slot {pos}: {why}"));
                    continue;
                }
                _ => {
                    r.problems.push(format!("slot {pos}: record changed during a quiescent check"));
                    continue;
                }
            }
            let base = self.heap_word(off);
            let need = layout::record_bytes(key.len(), value.len()) as u64;
            if need > class_size(bp.class) {
                r.problems
                    .push(format!("slot {pos}: record of {need} B in a {} B block", class_size(bp.class)));
            }
            let meta = self.mem.w(base + layout::R_META).load(Ordering::Relaxed);
            if (meta >> 32) as usize != pos {
                r.problems.push(format!("slot {pos}: record says it is published at {}", meta >> 32));
            }
            let p = self.probe(&key);
            if self.mem.w(base + layout::R_KEY_HASH).load(Ordering::Relaxed) != p.hash
                || slot::tag(w) != p.tag
            {
                r.problems.push(format!("slot {pos}: key hash or tag does not match the key"));
            }
            if self.rank(p.home, pos) >= (self.bound(p.home) + 1) * BUCKET_SLOTS {
                r.problems
                    .push(format!("slot {pos}: outside the probe window of its home bucket {}", p.home));
            }
            if let Some(other) = keys.insert(key, pos) {
                r.problems.push(format!("slots {other} and {pos}: the same key is published twice"));
            }
        }
        let mut journaled = HashSet::new();
        for idx in 0..self.g.max_clients as usize {
            let base = self.client_base(idx);
            let w = self.mem.w(base + C_OWNER).load(Ordering::Acquire);
            if Segment::slot_is_free(w) {
                continue;
            }
            if Segment::holder_liveness(w) == crate::os::Liveness::Dead {
                r.dead_clients += 1;
            }
            let j_new = self.mem.w(base + C_J_NEW).load(Ordering::Relaxed);
            let j_old = self.mem.w(base + C_J_OLD).load(Ordering::Relaxed);
            journaled.extend(journaled_new(j_new).into_iter().chain(j_old.checked_sub(1)));
        }
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
                let owned = layout::block::kind(st) == layout::block::OWNED;
                if owned {
                    r.blocks_in_use += 1;
                    if !referenced.contains(&off) && !journaled.contains(&off) {
                        r.leaked_blocks += 1;
                    }
                    r.stale_free_bits += u64::from(bit == 0);
                } else {
                    r.hidden_free_blocks += bit;
                    if active && layout::block::kind(st) == layout::block::RETIRED {
                        r.problems.push(format!("page {page}: block {index} RETIRED in an ACTIVE page"));
                    }
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
}
