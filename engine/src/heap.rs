//! The heap allocator: size-classed blocks in fixed-size pages, lock-free and crash-safe.
//!
//! Layout: the heap is `n_pages` pages of `page_size` bytes. A page is unassigned (page word
//! 0) until an allocator claims it for one size class with a CAS; it then holds
//! `page_size / class_size` blocks of that class until it is empty and retired to the common
//! pool ("Page reuse"). Each block starts with its state word `[kind:2 | owner:14 | gen:48]`
//! (layout::block); each page has a bitmap with one bit per block.
//!
//! Invariants (hold at every instruction, in every process):
//! - H1. The block state word is the truth: a block belongs to whoever moved it from FREE to
//!   OWNED with a CAS, until someone moves it back to FREE with a CAS from the exact OWNED word
//!   (so of two parties freeing the same block, one wins, and a stale freer whose generation
//!   moved on frees nothing). Every transition adds 1 to `gen`, but one: a guarded take that
//!   steps back (H5) returns the block from the OWNED word it just made, which nobody else has
//!   seen, to the FREE word it took it from.
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
//! - H5. A block named by a client's `C_J_OLD` never passes a guarded generation
//!   (`layout::block::guarded`, two of every 4,096): a take that makes a block OWNED at a
//!   guarded generation issues a SeqCst fence and scans every client's `C_J_OLD`; if one names
//!   the block it steps back (CAS to the FREE word it took) and takes another. A writer stores
//!   its `C_J_OLD`, issues a SeqCst fence and re-reads the block's state word before its
//!   publishing CAS (`journal_view`, called by store.rs `journal_old`): of the two fenced
//!   pairs, one sees the other, so either the writer sees the block moved (its view is gone:
//!   it retries from a fresh lookup) or the take sees the journal. Hence, while a writer sits
//!   between that re-check and its CAS (stalled for any time), the block it viewed stays below
//!   its next guarded generation and cannot come back to the index slot word the writer
//!   compares (layout.rs `slot`: that needs 2^14 generations). A guarded take journals its
//!   block with `J_NEW_GUARDING` until its scan is done, so a client killed in the middle is
//!   stepped back by its reclaimer (`undo_guarded_take`), never freed forward past the guard.
//!   The scan costs one load per client on one take of a block in 2,048; while a stalled writer
//!   pins a block at its guard, an allocation that meets that block pays the scan again and
//!   takes another.
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
//! Page reuse (issue 13 item 4): an empty page of one class serves any other. Page words and
//! states are in layout::page. Retirement marks an empty page's blocks so no allocator takes
//! them; reuse rewrites the page for another class, after which an offset into it may be the
//! middle of another record. So reuse must wait for every client that may still write into
//! the page from what it read before (a class, a block offset): an allocator between reading
//! the page's class and its take's CAS, a `touch` or sliding read between its view and its
//! CAS of `R_EXPIRES`, a reclaimer freeing what a dead client's journal names. Each of these
//! names the block in its journal (`C_J_NEW`, `C_J_OLD`) before that write, and the journals
//! are the hazard pointers reuse looks at: a page is reused once no journal names it, and a
//! stalled (or dead, not yet reclaimed) client holds back only the pages its two journal
//! words name, never the others. (This replaced a grace period over all operations in
//! flight: an operation stalled anywhere held back every page retired after it began, and
//! writes failed `Full` with most of the heap retired and waiting.)
//! - Retire: an allocator whose class has no room, meeting in its claiming pass an ACTIVE
//!   page of another class whose bitmap is all clear, CASes it to RETIRING (naming itself),
//!   CASes every block FREE -> RETIRED (kind 2: no allocator takes it), bumps `H_HEAP_EPOCH`
//!   (ending the failed-pass memos) and CASes the page to RETIRED(bound), `bound` being above
//!   every block's generation. A block found OWNED (a bit pending, H2, or an allocator that
//!   won the race) rolls it all back: RETIRED blocks to FREE, the page to ACTIVE. Retirement
//!   is lazy, only under demand, so pages do not churn between classes while each class has
//!   room.
//! - Reuse (`reuse_page`, right after the retirement in the same pass, or by any later
//!   allocator): store the bound in its own `C_PAGE_GEN`, CAS RETIRED -> INIT (naming itself,
//!   SeqCst), SeqCst fence, load every client's journals (SeqCst). If one names an offset in
//!   the page, CAS back to RETIRED and use another page. Otherwise clear the bitmap, write a
//!   FREE state word at the bound at every block start of the new class, and CAS INIT ->
//!   ACTIVE (release).
//! - P1 (the hazard): a take stores its `C_J_NEW` (SeqCst), then loads the page word (SeqCst)
//!   and gives up unless it is still ACTIVE in the take's class; only then does it CAS the
//!   state word. All four accesses are SeqCst, so either the take's load sees INIT (or later:
//!   it gives up) or the reuser's scan sees the journal (no reuse while it stands). A page
//!   word back at the same class after a whole retire-and-reuse is harmless: the block
//!   offsets of a class are fixed, and the take's CAS expects the state word it read before,
//!   whose generation the reuse left behind (P2). A failed take clears its journal, and a
//!   writer clears it when it frees a block it held, so a client names only what it holds or
//!   is about to take. `extend` stores `C_J_OLD` and re-reads the viewed state word after a
//!   SeqCst fence (`journal_view`): seeing it unchanged puts its load before the block's
//!   free, which comes before the retirement and the reuser's fence, so the reuser's scan
//!   sees the journal; it clears the journal after its CAS. A reclaimer's frees are of blocks
//!   a dead client's journal names, and those journals are cleared only after it.
//! - P2 (generations never repeat at an offset): the bound is above every generation the
//!   page's blocks had, and each of those is at least the bound of the page's previous
//!   incarnation, so a state word seen at an offset never comes back there. A stale state
//!   word (a reader's seqlock check, `journal_view`'s re-check, a CAS from a word read before
//!   the reuse) never matches a block of a later incarnation.
//! - Kill at any instruction: a client killed while RETIRING or INIT is reclaimed like any
//!   dead client (clients.rs), and `recover_page_work` rolls its page back (RETIRING: its
//!   RETIRED blocks FREE, the page ACTIVE; INIT: RETIRED again at its `C_PAGE_GEN` + 2, above
//!   the FREE words it may have written); its journals, cleared at the end of its reclaim,
//!   hold back the pages they name until then (an allocation that fails while a RETIRED page
//!   waits reclaims dead clients first, `Store::alloc`).
//! - Stall at any instruction: a stalled retirer or initializer keeps one page out of use
//!   until it resumes; any other stalled operation keeps at most the two pages its journals
//!   name, one of them a block it holds (never retired anyway); nothing is ever corrupted.
//!   The heap a stalled client can hold back is thus at most `2 x page_size` (three pages
//!   while retiring or initializing one), whatever other clients do meanwhile.
//! - Readers never write and validate against the index slot and the state word (record.rs),
//!   which moved on before any block of a retired page was freed and never repeat (P2), so a
//!   reader in a reused page retries; its lengths are bounds-checked against the heap, not the
//!   block, before use.
//! - A pass that saw a page not ACTIVE (retired, retiring, initializing) leaves no failed-pass
//!   memo, and the memo also keeps the heap epoch: a retirement ends it. So while a stalled
//!   client's journal holds a RETIRED page, a failing allocation is not O(1): it passes over
//!   the page table and scans the client table once per RETIRED page (it could not tell when
//!   the journal clears otherwise).
//!
//! What reuse does not remove: a page stays in its class while one block of it is in use, so
//! a few long-lived records of many classes can each hold a page (`page_size` is the largest
//! record rounded up to a power of two, 2 MiB with the defaults: 32 pages in 64 MiB). Moving
//! such stragglers to denser pages (a copy-on-write rewrite) and smaller pages with runs for
//! the largest records are the open remainder of issue 13 item 4.
//! Internal waste is under 1/8 of a block (8 classes per power of two) plus the page tail.

use crate::clients::{C_J_NEW, C_J_OLD, C_J_OLD_STATE, C_PAGE_GEN};
use crate::error::{Error, FullKind, Result};
use crate::failpoint::failpoint;
use crate::layout::{self, H_CLASS_HINT, H_HEAP_EPOCH, block, class_size, page};
use crate::segment::Segment;
use crate::sync::{Ordering, fence};

/// Set in a `C_J_NEW` journal word while the take it names is a guarded one that has not yet
/// scanned the writers' views (H5): a client killed there is stepped back, not freed.
pub(crate) const J_NEW_GUARDING: u64 = 1 << 63;

/// The heap offset a `C_J_NEW` journal word names, if any.
pub(crate) fn journaled_new(j: u64) -> Option<u64> {
    (j & !J_NEW_GUARDING).checked_sub(1)
}

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
        let class = page::class_of_word(self.page_class(page), self.g.n_classes)?;
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
        let failed_epoch = &self.full_scan_memo[2 * self.g.n_classes + class];
        let epoch = self.mem.w(H_HEAP_EPOCH).load(Ordering::Acquire);
        if failed.load(std::sync::atomic::Ordering::Relaxed) == hw | MEMO_SET
            && failed_epoch.load(std::sync::atomic::Ordering::Relaxed) == epoch
        {
            return Err(Error::Full(FullKind::Heap));
        }
        // Every page a pass met was ACTIVE (no retirement pending or in flight).
        let mut all_active = true;
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
                if claim {
                    let mut c = c;
                    if c == 0 {
                        let cw = self.mem.w(self.g.pages_off + page as usize);
                        let _ = cw.compare_exchange(0, class as u64 + 1, Ordering::AcqRel, Ordering::Acquire);
                    } else if page::state(c) == page::ACTIVE && c != class as u64 + 1 && self.page_empty(page)
                    {
                        // An empty page of another class: retire it, then reuse it at once
                        // unless a journal names it.
                        self.retire_page(me, page);
                        c = self.page_class(page);
                    }
                    if page::state(c) == page::RETIRED {
                        self.reuse_page(me, page, c, class);
                    }
                    if page::state(self.page_class(page)) != page::ACTIVE {
                        all_active = false;
                    }
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
        // The claiming pass met every page assigned and ACTIVE, none with a free block of
        // the class: until a free of the class or a retirement, the next one fails at once.
        if all_active {
            failed.store(hw | MEMO_SET, std::sync::atomic::Ordering::Relaxed);
            failed_epoch.store(epoch, std::sync::atomic::Ordering::Relaxed);
        }
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
        let journal = self.mem.w(self.client_base(me) + C_J_NEW);
        let owned = block::pack(block::OWNED, me as u16, block::generation(st) + 1);
        let guarded = block::guarded(block::generation(owned));
        // The journal is also the page's hazard ("Page reuse"): SeqCst with the re-read of the
        // page word, pairing with the reuser's INIT CAS and journal scan. Either the page is
        // still ACTIVE in this class here (and no reuser's scan can miss the journal), or the
        // take gives up: the offset may be the middle of another class's record by now.
        journal.store((off + 1) | if guarded { J_NEW_GUARDING } else { 0 }, Ordering::SeqCst);
        if self.mem.w(self.g.pages_off + pos.page as usize).load(Ordering::SeqCst) != pos.class as u64 + 1 {
            journal.store(0, Ordering::Relaxed);
            return None;
        }
        failpoint!("heap.take_after_journal");
        if sw.compare_exchange(st, owned, Ordering::AcqRel, Ordering::Acquire).is_err() {
            // Nothing taken: drop the hazard, so it holds back no page this client left.
            journal.store(0, Ordering::Relaxed);
            return None;
        }
        if guarded {
            // H5: the SeqCst fence pairs with the one a writer issues between journaling the
            // block it viewed (`C_J_OLD`) and re-reading its state word
            // (`journal_view`): either that writer's re-read sees this take (its view is gone,
            // it retries), or this scan sees its journal and the block steps back.
            fence(Ordering::SeqCst);
            if self.viewed_by_a_writer(off) {
                // Back to the FREE word it had: nobody but this client has seen the OWNED one
                // (it was never in the index), so the step back is invisible.
                let _ = sw.compare_exchange(owned, st, Ordering::AcqRel, Ordering::Relaxed);
                journal.store(0, Ordering::Relaxed);
                return None;
            }
            journal.store(off + 1, Ordering::Relaxed);
        }
        failpoint!("heap.take_after_own");
        self.mem.w(self.bitmap_word(pos.page, pos.index)).fetch_or(1 << (pos.index % 64), Ordering::Release);
        fence(Ordering::Release); // H4
        Some(Block { off: off as u32, state: owned })
    }

    /// H5, the writer's half: journals in client `me`'s `C_J_OLD` (with `C_J_OLD_STATE`, H3)
    /// the block at `off` that a view read in state `state`, then checks the block is still in
    /// that state. True: from now until the journal is cleared the block stays below its next
    /// guarded generation. False: the block moved on (the view is stale); the journal is
    /// cleared again.
    pub(crate) fn journal_view(&self, me: usize, off: u64, state: u64) -> bool {
        let base = self.client_base(me);
        self.mem.w(base + C_J_OLD_STATE).store(state, Ordering::Relaxed);
        self.mem.w(base + C_J_OLD).store(off + 1, Ordering::Release);
        // Pairs with the fence of a guarded take (`take`).
        fence(Ordering::SeqCst);
        let current = self.mem.w(self.heap_word(off) + layout::R_STATE).load(Ordering::Acquire) == state;
        if !current {
            self.mem.w(base + C_J_OLD).store(0, Ordering::Relaxed);
        }
        current
    }

    /// Does a client's `C_J_OLD` name the block at `off`: is a writer between its view of the
    /// record there and its publishing CAS (H5)? A scan of the client table, made only by the
    /// guarded takes (one take of a block in 2,048).
    fn viewed_by_a_writer(&self, off: u64) -> bool {
        (0..self.g.max_clients as usize)
            .any(|idx| self.mem.w(self.client_base(idx) + C_J_OLD).load(Ordering::Relaxed) == off + 1)
    }

    /// Steps back a guarded take that a client killed before it finished it (its `C_J_NEW`
    /// still carries [`J_NEW_GUARDING`]): the block, OWNED by it at a guarded generation and
    /// never published, returns to the FREE word it was taken from, as the take itself would
    /// have done had it seen a writer's view. Stepping forward instead (a plain free) would let
    /// the block pass the guard unchecked.
    pub(crate) fn undo_guarded_take(&self, idx: usize, off: u64) {
        let sw = self.mem.w(self.heap_word(off) + layout::R_STATE);
        let st = sw.load(Ordering::Acquire);
        if block::kind(st) == block::OWNED
            && block::owner(st) as usize == idx
            && block::guarded(block::generation(st))
        {
            let back = block::pack(block::FREE, 0, block::generation(st) - 1);
            let _ = sw.compare_exchange(st, back, Ordering::AcqRel, Ordering::Relaxed);
        }
        self.repair_bit(off);
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

    /// Whether every bitmap bit of ACTIVE page `page` is clear (no block in use, unless a
    /// bit is pending, H2: retirement checks every state word anyway).
    fn page_empty(&self, page: u64) -> bool {
        let c = self.page_class(page);
        if page::state(c) != page::ACTIVE || c == 0 || c as usize > self.g.n_classes {
            return false;
        }
        let blocks = self.g.page_size / class_size(c as usize - 1);
        (0..blocks.div_ceil(64))
            .all(|wi| self.mem.w(self.bitmap_word(page, wi * 64)).load(Ordering::Acquire) == 0)
    }

    /// The state word of block `index` of `page`, for blocks of `class`.
    fn state_word(&self, page: u64, class: usize, index: u64) -> &crate::sync::AtomicU64 {
        let off = page * self.g.page_words() + index * class_size(class) / 8;
        self.mem.w(self.heap_word(off) + layout::R_STATE)
    }

    /// Retires the empty ACTIVE page `page` on behalf of client `me` (see "Page reuse"):
    /// RETIRING, every block FREE -> RETIRED (or back, if one is in use), then RETIRED at a
    /// new epoch.
    fn retire_page(&self, me: usize, page: u64) {
        let cw = self.mem.w(self.g.pages_off + page as usize);
        let c = cw.load(Ordering::Acquire);
        if page::state(c) != page::ACTIVE || c == 0 || c as usize > self.g.n_classes {
            return;
        }
        let class = c as usize - 1;
        let retiring = page::owned(page::RETIRING, me, class);
        if cw.compare_exchange(c, retiring, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return;
        }
        let blocks = self.g.page_size / class_size(class);
        // Above every generation of the page's blocks (each at least the bound the page was
        // last reused at): the page's next incarnation starts there.
        let mut bound = 0;
        let mut index = 0;
        while index < blocks {
            let sw = self.state_word(page, class, index);
            let st = sw.load(Ordering::Acquire);
            match block::kind(st) {
                block::FREE => {
                    let retired = block::pack(block::RETIRED, 0, block::generation(st) + 1);
                    if sw.compare_exchange(st, retired, Ordering::AcqRel, Ordering::Acquire).is_err() {
                        continue; // taken or changed meanwhile: look again
                    }
                    bound = bound.max(block::generation(retired) + 1);
                }
                block::RETIRED => bound = bound.max(block::generation(st) + 1),
                _ => return self.unretire(page, retiring), // in use: the page stays
            }
            index += 1;
        }
        // The failed-pass memos keep this count: a retirement ends them.
        self.mem.w(H_HEAP_EPOCH).fetch_add(1, Ordering::AcqRel);
        let _ = cw.compare_exchange(retiring, page::retired(bound), Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Rolls back the retirement `retiring` (a RETIRING page word) of `page`: every RETIRED
    /// block back to FREE, the page back to ACTIVE.
    fn unretire(&self, page: u64, retiring: u64) {
        let Some(class) = page::class_of_word(retiring, self.g.n_classes) else { return };
        for index in 0..self.g.page_size / class_size(class) {
            let sw = self.state_word(page, class, index);
            let st = sw.load(Ordering::Acquire);
            if block::kind(st) == block::RETIRED {
                let free = block::pack(block::FREE, 0, block::generation(st) + 1);
                let _ = sw.compare_exchange(st, free, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        let cw = self.mem.w(self.g.pages_off + page as usize);
        let _ = cw.compare_exchange(retiring, class as u64 + 1, Ordering::AcqRel, Ordering::Relaxed);
        self.note_free(class, page);
    }

    /// Makes the RETIRED page `page` (word `retired`) a page of `class` for client `me`:
    /// INIT, bitmap cleared and every block's state word FREE, then ACTIVE (release).
    /// Makes the RETIRED page `page` (word `retired`) a page of `class` for client `me`
    /// unless a client's journal names a block in it: INIT, the hazard scan, then the bitmap
    /// cleared and every block's state word FREE at the page's generation bound, then ACTIVE
    /// (release). A journal naming the page puts it back to RETIRED, untouched.
    fn reuse_page(&self, me: usize, page: u64, retired: u64, class: usize) {
        let cw = self.mem.w(self.g.pages_off + page as usize);
        let init = page::owned(page::INIT, me, class);
        let bound = page::bound(retired);
        // For the reclaimer of this client, should it die while the page is INIT.
        self.mem.w(self.client_base(me) + C_PAGE_GEN).store(bound, Ordering::Relaxed);
        if cw.compare_exchange(retired, init, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return;
        }
        // Pairs with the SeqCst journal store and page-word load of a take, and with the fence
        // of `journal_view`: a client that can still write into the page is seen here.
        fence(Ordering::SeqCst);
        if self.page_in_a_journal(page) {
            let _ = cw.compare_exchange(init, retired, Ordering::AcqRel, Ordering::Relaxed);
            return;
        }
        for wi in 0..self.g.bitmap_words as u64 {
            self.mem.w(self.bitmap_word(page, wi * 64)).store(0, Ordering::Relaxed);
        }
        for index in 0..self.g.page_size / class_size(class) {
            self.state_word(page, class, index).store(block::pack(block::FREE, 0, bound), Ordering::Relaxed);
        }
        let _ = cw.compare_exchange(init, class as u64 + 1, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Whether some page is RETIRED: after an allocation failed, one a journal names.
    pub(crate) fn has_retired_page(&self) -> bool {
        (0..self.g.n_pages).any(|p| page::state(self.page_class(p)) == page::RETIRED)
    }

    /// Does any client's journal (`C_J_NEW`, `C_J_OLD`) name an offset in `page`? Whatever
    /// the client's state: a dead client's journal stands until its reclaim settles it.
    fn page_in_a_journal(&self, page: u64) -> bool {
        let pw = self.g.page_words();
        (0..self.g.max_clients as usize).any(|idx| {
            let base = self.client_base(idx);
            let new = journaled_new(self.mem.w(base + C_J_NEW).load(Ordering::SeqCst));
            let old = self.mem.w(base + C_J_OLD).load(Ordering::SeqCst).checked_sub(1);
            [new, old].into_iter().flatten().any(|off| off / pw == page)
        })
    }

    /// Rolls back the page work a dead client `idx` left half done (its reclaim, under the
    /// slot's RECLAIMING state, so no one else works on its pages): a retirement is undone,
    /// an initialization retired again.
    pub(crate) fn recover_page_work(&self, idx: usize) {
        for page in 0..self.g.n_pages {
            let c = self.page_class(page);
            if page::owner(c) != idx {
                continue;
            }
            match page::state(c) {
                page::RETIRING => self.unretire(page, c),
                page::INIT => {
                    // It may have written FREE words at the bound it read: start above them.
                    let bound = self.mem.w(self.client_base(idx) + C_PAGE_GEN).load(Ordering::Acquire);
                    let cw = self.mem.w(self.g.pages_off + page as usize);
                    let _ =
                        cw.compare_exchange(c, page::retired(bound + 2), Ordering::AcqRel, Ordering::Relaxed);
                }
                _ => {}
            }
        }
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
            let Some(class) = page::class_of_word(self.page_class(page), self.g.n_classes) else { continue };
            let size = class_size(class);
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::record_bytes;

    /// The first guarded generation a take lands on (takes land on odd generations).
    fn first_guarded() -> u64 {
        (1..).map(|k| 2 * k + 1).find(|&g| block::guarded(g)).expect("a guarded generation")
    }

    /// Client 0 owns a block, published at the generation just before a guarded take, and
    /// client 1 has viewed and journaled it. Returns the block's offset and state.
    fn viewed_block(seg: &Segment) -> (u64, u64) {
        let b = seg.alloc(0, record_bytes(8, 8), 0, 0).unwrap();
        let off = b.off as u64;
        let viewed = block::pack(block::OWNED, 0, first_guarded() - 2);
        seg.mem.w(seg.heap_word(off) + layout::R_STATE).store(viewed, Ordering::Relaxed);
        assert!(seg.journal_view(1, off, viewed), "nothing moved the block");
        (off, viewed)
    }

    fn state(seg: &Segment, off: u64) -> u64 {
        seg.mem.w(seg.heap_word(off) + layout::R_STATE).load(Ordering::Relaxed)
    }

    /// H5 without interleavings (loom_tests.rs has them): a block a writer journaled is not
    /// taken at its guarded generation, by the recent-free hint or by the page scan; once the
    /// journal is cleared it is.
    #[test]
    fn a_journaled_block_steps_back_at_its_guard() {
        let seg = Segment::in_process(&crate::inprocess_tests::opts(), 7).unwrap();
        let (off, viewed) = viewed_block(&seg);
        assert!(!seg.journal_view(1, off, viewed + 1), "a moved block is no current view");
        assert!(seg.journal_view(1, off, viewed));
        assert!(seg.free(off, viewed));
        let other = seg.alloc(0, record_bytes(8, 8), 0, off + 1).unwrap();
        assert_ne!(other.off as u64, off, "a journaled block was taken past its guard");
        assert_eq!(state(&seg, off), block::pack(block::FREE, 0, first_guarded() - 1));
        assert_eq!(seg.mem.w(seg.client_base(0) + C_J_NEW).load(Ordering::Relaxed), other.off as u64 + 1);
        seg.mem.w(seg.client_base(1) + C_J_OLD).store(0, Ordering::Relaxed);
        let again = seg.alloc(0, record_bytes(8, 8), 0, off + 1).unwrap();
        assert_eq!(again.off as u64, off, "the guard held a block nobody journals");
        assert_eq!(again.state, block::pack(block::OWNED, 0, first_guarded()));
    }

    /// A client killed inside a guarded take (its journal flagged) is stepped back by its
    /// reclaimer, not freed forward past the guard; a flagged journal whose take did not
    /// happen changes nothing.
    #[test]
    fn a_guarded_take_cut_short_steps_back() {
        let seg = Segment::in_process(&crate::inprocess_tests::opts(), 7).unwrap();
        let (off, viewed) = viewed_block(&seg);
        assert!(seg.free(off, viewed));
        // Client 0 died after its take's CAS, before its scan.
        let taken = block::pack(block::OWNED, 0, first_guarded());
        seg.mem.w(seg.heap_word(off) + layout::R_STATE).store(taken, Ordering::Relaxed);
        seg.mem.w(seg.client_base(0) + C_J_NEW).store((off + 1) | J_NEW_GUARDING, Ordering::Relaxed);
        assert_eq!(journaled_new((off + 1) | J_NEW_GUARDING), Some(off));
        seg.undo_guarded_take(0, off);
        let back = block::pack(block::FREE, 0, first_guarded() - 1);
        assert_eq!(state(&seg, off), back);
        seg.undo_guarded_take(0, off);
        assert_eq!(state(&seg, off), back, "a second reclaim of the same journal is a no-op");
        // Another client's block at a guarded generation is not stepped back for client 0.
        let theirs = block::pack(block::OWNED, 1, first_guarded());
        seg.mem.w(seg.heap_word(off) + layout::R_STATE).store(theirs, Ordering::Relaxed);
        seg.undo_guarded_take(0, off);
        assert_eq!(state(&seg, off), theirs);
    }
}
