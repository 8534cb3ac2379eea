//! The heap allocator: size-classed blocks in fixed-size pages, lock-free and crash-safe.
//!
//! Layout: the heap is `n_pages` pages of `page_size` bytes. A page is unassigned (class word
//! 0) until an allocator claims it for one size class with a CAS; it then holds
//! `page_size / class_size` blocks of that class for the life of the segment. Each block starts
//! with its state word `[kind:2 | owner:14 | gen:48]` (layout::block); each page has a bitmap
//! with one bit per block.
//!
//! Invariants (hold at every instruction, in every process):
//! - H1. The block state word is the truth: a block belongs to whoever moved it from FREE to
//!   OWNED with a CAS, until someone moves it back to FREE with a CAS from the exact OWNED word
//!   (so of two parties freeing the same block, one wins, and a stale freer whose generation
//!   moved on frees nothing). Every transition adds 1 to `gen`.
//! - H2. The bitmap is a hint: a bit is set only after its block became OWNED and cleared only
//!   after it became FREE. A clear bit over an OWNED block (set pending or lost) costs a failed
//!   CAS; a set bit over a FREE block (clear pending) would hide the block, and can only be left
//!   behind by a client killed between the two steps, whose journal names the block so the
//!   reclaimer clears it (clients.rs).
//! - H3. Before its allocating CAS a client writes the block into its journal (`C_J_NEW`), and
//!   before unpublishing a record it writes it and its state word to `C_J_OLD`: whatever a killed
//!   client held is named in its journal and reclaimed from there.
//! - H4. After taking a block, the owner issues a release fence before writing the record, so a
//!   reader that sees any new byte also sees the new state word (seqlock validation, record.rs).
//!
//! Full-scan memo: an allocation looks at every page of its class before it claims an
//! unassigned page (so freed blocks are reused before the heap is spread over more pages),
//! which costs a pass over all pages each time the hint page fills up: while a fresh segment
//! fills, once every page's worth of blocks, O(pages) loads (a million 1 KiB inserts
//! did ~18k such passes over ~20k pages, the largest cost of loading a standby). So each
//! process remembers, per class, the page it moved the hint to in the claiming pass
//! (`Segment::full_scan_memo`, process-local, page + 1, 0 = none). While the class's hint
//! still names that page, no free has pointed the hint elsewhere since a pass found the
//! class's pages full, and the next allocation looks at the hint page alone before the
//! claiming pass, which itself takes room in any page of the class it meets before an
//! unassigned page. A free (or a repaired bit) in this process drops the class's memo. It
//! is a hint, like the one it watches: frees by other processes that write the hint back to
//! the same page (two frees, the second in the hint page; or racing relaxed stores) can let
//! a free block before the next unassigned page go unused until a free moves the hint, the
//! claiming pass reaches it, or the unassigned pages run out. Never a wrong `Full`: the
//! claiming pass looks at every page, and it is what runs whenever the memo applies.
//!
//! Failing allocations: a full heap must not cost a scan per failing request, so each
//! class's hint word is `[frees:40 | page:24]` (the `hint` module): every free of a block
//! of the class (and every repaired bit) adds one to the count with a CAS, releasing after
//! its state CAS and bit clear. An allocation loads the word (acquire) before its passes;
//! when both passes fail (every page assigned, none with a free block of the class), the
//! process remembers that word (`Segment::full_scan_memo`, second half). While the class's
//! word still equals it, no block of the class was freed since the failed pass began, no
//! page can become unassigned (pages never change class), so the next allocation fails at
//! once: O(1). Any free in any process changes the word (the count, even if the page is the
//! same) and the next allocation scans again. An allocation moving the hint writes it with
//! a CAS from the word it loaded, so it never writes back an older count. Kill or stall at
//! any instruction: a freer killed between its state CAS and the count leaves a free block
//! the memo may hide until the next free of the class or the reclaim of the killed client,
//! whose journal names the block (`repair_bit` counts it); a stalled one the same until it
//! resumes. The count wraps at 2^39: a stale memo would need exactly k x 2^39 frees between
//! two looks.
//!
//! Fragmentation: internal waste is under 1/8 of a block (8 classes per power of two) plus
//! the page tail (under one block). A page never changes class, so memory freed in one class is
//! reusable only by records of that class: a workload whose record sizes shift can get `Full`
//! for a class while other classes have room (the stats show bytes_free; `capacity_bytes`
//! should leave headroom for the size mix).

use crate::clients::C_J_NEW;
use crate::error::{Error, FullKind, Result};
use crate::failpoint::failpoint;
use crate::layout::{self, H_CLASS_HINT, block, class_size};
use crate::segment::Segment;
use crate::sync::{Ordering, fence};

/// Marks a process-local failed-pass memo as set (a hint word never has this bit: its free
/// count would need 2^39 frees).
const MEMO_SET: u64 = 1 << 63;

/// The per-class hint word `H_CLASS_HINT + class`: `[frees:40 | page:24]`, the page where the
/// class's allocation looks first and a count of the class's frees (wrapping at 2^39).
mod hint {
    const PAGE_BITS: u32 = 24;
    pub const fn pack(frees: u64, page: u64) -> u64 {
        ((frees & ((1 << 39) - 1)) << PAGE_BITS) | (page & ((1 << PAGE_BITS) - 1))
    }
    pub const fn frees(w: u64) -> u64 {
        w >> PAGE_BITS
    }
    pub const fn page(w: u64) -> u64 {
        w & ((1 << PAGE_BITS) - 1)
    }
}

/// A block this client owns: its heap word offset and its OWNED state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub off: u32,
    pub state: u64,
}

/// Where a heap word offset falls: its page, class, and block index, if it is a block start.
pub(crate) struct BlockPos {
    pub page: u64,
    pub class: usize,
    pub index: u64,
}

impl Segment {
    #[inline]
    pub(crate) fn heap_word(&self, off: u64) -> usize {
        self.g.heap_off + off as usize
    }

    pub(crate) fn page_class(&self, page: u64) -> u64 {
        self.mem.w(self.g.pages_off + page as usize).load(Ordering::Acquire)
    }

    /// Checks that `off` (read from the segment, so untrusted) is the start of a block of an
    /// assigned page; `None` for anything else.
    pub(crate) fn block_pos(&self, off: u64) -> Option<BlockPos> {
        if off >= self.g.heap_words() {
            return None;
        }
        let page = off / self.g.page_words();
        let c = self.page_class(page);
        if c == 0 || c as usize > self.g.n_classes {
            return None;
        }
        let class = c as usize - 1;
        let within = (off % self.g.page_words()) * 8;
        let size = class_size(class);
        if within % size != 0 || within + size > self.g.page_size {
            return None;
        }
        Some(BlockPos { page, class, index: within / size })
    }

    pub(crate) fn bitmap_word(&self, page: u64, index: u64) -> usize {
        self.g.bitmap_off + page as usize * self.g.bitmap_words + (index / 64) as usize
    }

    /// Allocates a block of at least `bytes` for client `me`, journaling it first in the
    /// client's `C_J_NEW` (H3).
    /// `recent` (a heap offset + 1, or 0) is the block this client freed last: if it has the
    /// right class and is still free it is taken first, since its lines are likely still in
    /// this CPU's cache (an overwrite frees the old record it has just read).
    pub(crate) fn alloc(&self, me: usize, bytes: usize, rnd: u64, recent: u64) -> Result<Block> {
        let class = layout::class_of(bytes as u64);
        if class >= self.g.n_classes {
            return Err(Error::ValueTooLarge { len: bytes, max: self.g.max_value as usize });
        }
        if let Some(pos) =
            recent.checked_sub(1).and_then(|off| self.block_pos(off)).filter(|p| p.class == class)
            && let Some(b) = self.take(me, recent - 1, pos)
        {
            return Ok(b);
        }
        let hint_w = self.mem.w(H_CLASS_HINT + class);
        let n = self.g.n_pages;
        // Acquire, pairing with the free that last changed the word: its bit clear is seen.
        let hw = hint_w.load(Ordering::Acquire);
        // No block of the class was freed since a pass found none and no page unassigned
        // (see "Failing allocations" above): fail in O(1).
        let failed = &self.full_scan_memo[self.g.n_classes + class];
        if failed.load(std::sync::atomic::Ordering::Relaxed) == hw | MEMO_SET {
            return Err(Error::Full(FullKind::Heap));
        }
        let hint = hint::page(hw) % n;
        let memo = &self.full_scan_memo[class];
        // After a full scan found no room, only the hint page is looked at before claiming
        // (see "Full-scan memo" above).
        let scanned = memo.load(std::sync::atomic::Ordering::Relaxed) == hint + 1;
        // Pages of this class first, starting at the hint; then claim an unassigned page.
        for claim in [false, true] {
            let pages = if claim || !scanned { n } else { 1 };
            for i in 0..pages {
                let page = (hint + i) % n;
                let c = self.page_class(page);
                if c == 0 && claim {
                    let cw = self.mem.w(self.g.pages_off + page as usize);
                    let _ = cw.compare_exchange(0, class as u64 + 1, Ordering::AcqRel, Ordering::Acquire);
                }
                if self.page_class(page) != class as u64 + 1 {
                    continue;
                }
                if let Some(b) = self.alloc_in_page(me, page, class, rnd) {
                    if page != hint {
                        // A hint only: lost to a concurrent free, which names a page with
                        // room as well, and which must keep its count (never written back).
                        let _ = hint_w.compare_exchange(
                            hw,
                            hint::pack(hint::frees(hw), page),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    if claim {
                        memo.store(page + 1, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(b);
                }
            }
        }
        // The claiming pass met every page assigned and none with a free block of the class.
        failed.store(hw | MEMO_SET, std::sync::atomic::Ordering::Relaxed);
        Err(Error::Full(FullKind::Heap))
    }

    /// Counts a block of `class` in `page` made free (a free, or a repaired bit): the class's
    /// hint word gets the page and one more free, which drops every process's failed-pass
    /// memo of the class (see "Failing allocations").
    fn note_free(&self, class: usize, page: u64) {
        let hint_w = self.mem.w(H_CLASS_HINT + class);
        let mut w = hint_w.load(Ordering::Relaxed);
        // Release, pairing with the allocator's acquire load: the freed state and bit are
        // seen by whoever sees the new count.
        while let Err(now) = hint_w.compare_exchange_weak(
            w,
            hint::pack(hint::frees(w) + 1, page),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            w = now;
        }
        self.forget_full_scan(class);
    }

    fn alloc_in_page(&self, me: usize, page: u64, class: usize, rnd: u64) -> Option<Block> {
        let size = class_size(class);
        let blocks = self.g.page_size / size;
        let words = blocks.div_ceil(64);
        for k in 0..words {
            let wi = rnd.wrapping_add(k) % words;
            let bw = self.mem.w(self.bitmap_word(page, wi * 64));
            let valid = if wi == words - 1 && blocks % 64 != 0 { (1u64 << (blocks % 64)) - 1 } else { !0 };
            // Acquire, pairing with the release of the bit changes: a bit seen clear by a free
            // means that free's state CAS is visible too, so a freed block is never judged
            // still owned from a stale state word (which could report Full with room left).
            let mut free = !bw.load(Ordering::Acquire) & valid;
            while free != 0 {
                let bit = free.trailing_zeros() as u64;
                free &= free - 1;
                let index = wi * 64 + bit;
                let off = page * self.g.page_words() + index * size / 8;
                if let Some(b) = self.take(me, off, BlockPos { page, class, index }) {
                    return Some(b);
                }
            }
        }
        None
    }

    /// Takes the block at `off` (at `pos`) if it is FREE: journal, CAS, bitmap hint (H1-H4).
    fn take(&self, me: usize, off: u64, pos: BlockPos) -> Option<Block> {
        let sw = self.mem.w(self.heap_word(off) + layout::R_STATE);
        let st = sw.load(Ordering::Acquire);
        if block::kind(st) != block::FREE {
            return None;
        }
        self.mem.w(self.client_base(me) + C_J_NEW).store(off + 1, Ordering::Relaxed);
        failpoint!("heap.take_after_journal");
        let owned = block::pack(block::OWNED, me as u16, block::generation(st) + 1);
        sw.compare_exchange(st, owned, Ordering::AcqRel, Ordering::Acquire).ok()?;
        failpoint!("heap.take_after_own");
        self.mem.w(self.bitmap_word(pos.page, pos.index)).fetch_or(1 << (pos.index % 64), Ordering::Release);
        fence(Ordering::Release); // H4
        Some(Block { off: off as u32, state: owned })
    }

    /// Frees the block at `off` if its state word is still `state` (H1). Returns whether this
    /// call freed it.
    pub(crate) fn free(&self, off: u64, state: u64) -> bool {
        self.free_block(off, state).is_some()
    }

    fn free_block(&self, off: u64, state: u64) -> Option<()> {
        let pos = self.block_pos(off)?;
        let sw = self.mem.w(self.heap_word(off) + layout::R_STATE);
        let freed = block::pack(block::FREE, 0, block::generation(state) + 1);
        sw.compare_exchange(state, freed, Ordering::AcqRel, Ordering::Relaxed).ok()?;
        failpoint!("heap.free_after_state");
        self.mem
            .w(self.bitmap_word(pos.page, pos.index))
            .fetch_and(!(1 << (pos.index % 64)), Ordering::Release);
        // Point the class's next allocation here: in a full heap this page is where room is.
        self.note_free(pos.class, pos.page);
        Some(())
    }

    /// Drops this process's full-scan memo of `class`: a block of it became free.
    fn forget_full_scan(&self, class: usize) {
        let m = &self.full_scan_memo[class];
        if m.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            m.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Clears a bitmap bit left set over a FREE block by a freer that died between the two
    /// steps of `free` (H2). Safe at any time: the page scan never takes a block whose bit is
    /// set, and a block taken meanwhile through the recent-free hint (`alloc`'s `recent`, which
    /// does not look at the bitmap) can at worst end OWNED with its bit clear, which H2 allows.
    pub(crate) fn repair_bit(&self, off: u64) {
        let Some(pos) = self.block_pos(off) else { return };
        let st = self.mem.w(self.heap_word(off) + layout::R_STATE).load(Ordering::Acquire);
        if block::kind(st) == block::FREE {
            self.mem
                .w(self.bitmap_word(pos.page, pos.index))
                .fetch_and(!(1 << (pos.index % 64)), Ordering::Release);
            self.note_free(pos.class, pos.page);
        }
    }

    /// (bytes in blocks in use, bytes free): read from the page table and the bitmaps, so
    /// exact once no operation is in flight (the bitmaps are hints only during an operation).
    /// Free bytes include page tails and free blocks, usable only by their page's size class.
    pub(crate) fn heap_usage(&self) -> (u64, u64) {
        let mut used = 0;
        for page in 0..self.g.n_pages {
            let c = self.page_class(page);
            if c == 0 || c as usize > self.g.n_classes {
                continue;
            }
            let size = class_size(c as usize - 1);
            let blocks = self.g.page_size / size;
            let in_use: u64 = (0..blocks.div_ceil(64))
                .map(|wi| {
                    self.mem.w(self.bitmap_word(page, wi * 64)).load(Ordering::Relaxed).count_ones() as u64
                })
                .sum();
            used += in_use.min(blocks) * size;
        }
        (used, self.g.n_pages * self.g.page_size - used)
    }
}
