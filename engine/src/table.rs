//! The index: a lock-free open-addressing hash table of 64-bit slot words (layout::slot).
//!
//! Buckets are one cache line: word 0 is the bucket's probe bound (how many buckets past it
//! keys homed here may sit, raised with `fetch_max` before such a key is placed, never
//! lowered), words 1..=7 are slots. A key's home bucket and 16-bit tag come from its seeded
//! hash; a lookup reads the home bucket and the buckets its bound covers, and compares tags
//! before touching any record, so a miss rarely leaves the index.
//!
//! Slot states: EMPTY, INSERTING (a candidate record, invisible to readers), MEMBER (the
//! published record of its key). Transitions, each a single CAS:
//! - update: MEMBER(r1) -> MEMBER(r2) for the same key (the record changes, the slot does not);
//! - delete, expire, evict: MEMBER -> EMPTY;
//! - insert: EMPTY -> INSERTING(r) by the inserter, then INSERTING(r) -> MEMBER(r) by the
//!   inserter only, after it checked the key's whole probe window (see `settle`);
//! - collide: INSERTING -> EMPTY by anyone resolving a race between inserts of one key.
//!
//! Invariant T1 (at most one MEMBER per key): an inserter flips its slot to MEMBER only after a
//! scan, started after its INSERTING word was placed, that found no MEMBER of the key and in
//! which it collided (by CAS) every other INSERTING copy of the key. Of two inserts of one key,
//! the scan of the one placed later sees the earlier one's slot (the probe bound is raised
//! before placing), as INSERTING (so it collides it, or its CAS fails because that one flipped
//! and it rescans) or as MEMBER (so it withdraws). Lower probe positions win ties; lower
//! INSERTING copies that stay unresolved (their owners paused or dead) are all collided after
//! a short patience, so no insert waits on another client. (All of them: collide only one and
//! another, whose owner finished its scan before this copy was placed, can flip too.)

use crate::error::{Result, corrupt};
use crate::failpoint::failpoint;
use crate::layout::{self, BUCKET_SLOTS, MAX_PROBE_BUCKETS, slot};
use crate::record::{Read, Sink, View};
use crate::segment::Segment;
use crate::sync::{Ordering, fence, spin_hint};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Where a key lives: its hash, home bucket and tag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub hash: u64,
    pub home: usize,
    pub tag: u16,
}

/// A key's current record, as validated by a read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    pub pos: usize,
    pub word: u64,
    pub view: View,
    pub value_fits: bool,
}

/// How an insert candidate ended.
pub(crate) enum Settled {
    /// Flipped to MEMBER: the insert is published.
    Inserted,
    /// Withdrawn or collided: the caller retries from a fresh lookup.
    Lost,
}

fn kept_changing() -> crate::error::Error {
    corrupt("index", "a record kept changing under more than a million reads")
}

/// Reads retried this many times in a row (a record replaced under every attempt) give up.
const MAX_READ_RETRIES: u32 = 1 << 20;
/// Rescans an inserter makes before colliding a lower, unresolved INSERTING copy.
const INSERT_PATIENCE: u32 = 64;

impl Segment {
    pub(crate) fn probe(&self, key: &[u8]) -> Probe {
        let hash = xxh3_64_with_seed(key, self.seed);
        let home = ((hash as u128 * self.g.n_buckets as u128) >> 64) as usize;
        Probe { hash, home, tag: hash as u16 }
    }

    #[inline]
    pub(crate) fn index_word(&self, pos: usize) -> &crate::sync::AtomicU64 {
        self.mem.w(self.g.index_off + pos)
    }

    pub(crate) fn bound(&self, home: usize) -> usize {
        let b = self.index_word(home * BUCKET_SLOTS).load(Ordering::Acquire) as usize;
        b.min(MAX_PROBE_BUCKETS - 1)
    }

    /// The key's probe window, in probe order, as index positions.
    pub(crate) fn window(&self, p: &Probe) -> impl Iterator<Item = usize> + use<> {
        let (n, home, bound) = (self.g.n_buckets as usize, p.home, self.bound(p.home));
        (0..=bound).flat_map(move |d| {
            let b = (home + d) % n;
            (1..BUCKET_SLOTS).map(move |j| b * BUCKET_SLOTS + j)
        })
    }

    /// Probe-order rank of `pos` for a key homed at `home`.
    pub(crate) fn rank(&self, home: usize, pos: usize) -> usize {
        let n = self.g.n_buckets as usize;
        ((pos / BUCKET_SLOTS + n - home) % n) * BUCKET_SLOTS + pos % BUCKET_SLOTS
    }

    /// Finds the MEMBER record of `key`, copying into `sink` (which may be written even when the
    /// search goes on: its contents are meaningful only with a returned member).
    pub(crate) fn find(&self, key: &[u8], p: &Probe, sink: &mut Sink<'_>) -> Result<Option<Member>> {
        let n = self.g.n_buckets as usize;
        'retry: for _ in 0..MAX_READ_RETRIES {
            // The window (`window`'s order) as plain loops: this is every read's inner loop.
            for d in 0..=self.bound(p.home) {
                let b = (p.home + d) % n;
                for pos in b * BUCKET_SLOTS + 1..(b + 1) * BUCKET_SLOTS {
                    let w = self.index_word(pos).load(Ordering::Acquire);
                    if slot::state(w) != slot::MEMBER || slot::tag(w) != p.tag {
                        continue;
                    }
                    if !matches!(sink, Sink::Nothing) {
                        self.prefetch_record(slot::block(w) as u64);
                    }
                    match self.read_record(pos, w, Some(key), sink) {
                        Read::Ok { view, value_fits } => {
                            return Ok(Some(Member { pos, word: w, view, value_fits }));
                        }
                        Read::OtherKey => continue,
                        Read::Changed => continue 'retry,
                        Read::Damaged(why) => {
                            return Err(corrupt("record", format!("index slot {pos}: {why}")));
                        }
                    }
                }
            }
            return Ok(None);
        }
        Err(kept_changing())
    }

    /// Starts loading the key's home bucket (its probe bound and first seven slots).
    #[inline]
    pub(crate) fn prefetch_bucket(&self, p: &Probe) {
        self.mem.prefetch(self.g.index_off + p.home * BUCKET_SLOTS);
    }

    /// Starts loading the first 4 KiB of the block at `off` (the hardware streamer follows
    /// for larger ones), so its cache misses overlap instead of queueing behind each other.
    fn prefetch_record(&self, off: u64) {
        if let Some(bp) = self.block_pos(off) {
            let bytes = layout::class_size(bp.class).min(4096) as usize;
            let base = self.heap_word(off);
            for line in (0..bytes / 8).step_by(8) {
                self.mem.prefetch_once(base + line);
            }
        }
    }

    /// Reads the MEMBER record at index position `pos`, whatever its key (scans, sweeps,
    /// eviction). `Ok(None)` if the slot holds no MEMBER.
    pub(crate) fn member_at(&self, pos: usize, sink: &mut Sink<'_>) -> Result<Option<Member>> {
        for _ in 0..MAX_READ_RETRIES {
            let w = self.index_word(pos).load(Ordering::Acquire);
            if slot::state(w) != slot::MEMBER {
                return Ok(None);
            }
            match self.read_record(pos, w, None, sink) {
                Read::Ok { view, value_fits } => return Ok(Some(Member { pos, word: w, view, value_fits })),
                Read::Changed => continue,
                Read::OtherKey => return Ok(None),
                Read::Damaged(why) => return Err(corrupt("record", format!("index slot {pos}: {why}"))),
            }
        }
        Err(kept_changing())
    }

    /// Picks the first EMPTY slot of the key's window, raising the home bucket's probe bound
    /// to cover it first. `None` if the window is full.
    pub(crate) fn free_slot(&self, p: &Probe) -> Option<usize> {
        let n = self.g.n_buckets as usize;
        for d in 0..MAX_PROBE_BUCKETS {
            let b = (p.home + d) % n;
            for j in 1..BUCKET_SLOTS {
                let pos = b * BUCKET_SLOTS + j;
                if self.index_word(pos).load(Ordering::Relaxed) == slot::EMPTY {
                    self.index_word(p.home * BUCKET_SLOTS).fetch_max(d as u64, Ordering::AcqRel);
                    return Some(pos);
                }
            }
        }
        None
    }

    /// Resolves this client's INSERTING word `mine` at `q` (see T1). Returns `Inserted` once
    /// it is MEMBER; `Lost` once it is no longer in the index (withdrawn or collided).
    pub(crate) fn settle(&self, key: &[u8], p: &Probe, q: usize, mine: u64) -> Result<Settled> {
        // T1 needs the later of two placers to see the earlier one's slot: a store (our
        // placing CAS) followed by loads (the scan) of other slots. Release/acquire does not
        // order a store before a later load; a SeqCst fence in every settle does (of two
        // settles, at least one sees the other's placement). Found by loom (loom_tests.rs).
        fence(Ordering::SeqCst);
        let my_rank = self.rank(p.home, q);
        let mut patience = 0;
        let mut rescans = 0;
        'scan: loop {
            rescans += 1;
            if rescans > MAX_READ_RETRIES {
                self.withdraw(q, mine);
                return Err(kept_changing());
            }
            let mut lower = Vec::new();
            let mut higher = Vec::new();
            for pos in self.window(p) {
                if pos == q {
                    continue;
                }
                let w = self.index_word(pos).load(Ordering::Acquire);
                if slot::state(w) == slot::EMPTY || slot::tag(w) != p.tag {
                    continue;
                }
                match self.read_record(pos, w, Some(key), &mut Sink::Nothing) {
                    Read::Ok { .. } if slot::state(w) == slot::MEMBER => return Ok(self.withdraw(q, mine)),
                    Read::Ok { .. } if self.rank(p.home, pos) < my_rank => lower.push((pos, w)),
                    Read::Ok { .. } => higher.push((pos, w)),
                    Read::OtherKey => {}
                    Read::Changed => continue 'scan,
                    Read::Damaged(why) => return Err(corrupt("record", format!("index slot {pos}: {why}"))),
                }
            }
            if !lower.is_empty() {
                patience += 1;
                if patience < INSERT_PATIENCE {
                    spin_hint();
                    continue 'scan;
                }
                // Every lower copy, not just one: a copy left INSERTING may belong to an owner
                // past its own scan (which ran before this slot was placed), whose flip would
                // then make a second MEMBER of the key.
                higher.append(&mut lower);
            }
            for (pos, w) in higher {
                if self
                    .index_word(pos)
                    .compare_exchange(w, slot::EMPTY, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    continue 'scan;
                }
            }
            failpoint!("insert.before_flip");
            let member = slot::with_state(mine, slot::MEMBER);
            return Ok(
                match self.index_word(q).compare_exchange(mine, member, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => Settled::Inserted,
                    Err(_) => Settled::Lost,
                },
            );
        }
    }

    /// Number of MEMBER slots (a read of the whole index, for stats).
    pub(crate) fn count_members(&self) -> u64 {
        (0..self.g.index_slots() as usize)
            .filter(|&pos| slot::state(self.index_word(pos).load(Ordering::Relaxed)) == slot::MEMBER)
            .count() as u64
    }

    fn withdraw(&self, q: usize, mine: u64) -> Settled {
        // Fails only if someone collided it already: either way it is out of the index.
        let _ = self.index_word(q).compare_exchange(mine, slot::EMPTY, Ordering::AcqRel, Ordering::Relaxed);
        Settled::Lost
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::block;
    use crate::record::{LockWords, NewRecord};

    /// T1 with two unresolved lower copies of the key (their owners paused after their own
    /// scans, before their flips): the inserter that outwaits them must collide both, or the
    /// one it leaves flips to MEMBER next to its own.
    #[test]
    fn settle_collides_every_unresolved_lower_copy() {
        let seg = Segment::in_process(&crate::inprocess_tests::opts(), 7).unwrap();
        let key = b"one-key";
        let p = seg.probe(key);
        let place = |pos: usize, n: u64| {
            let b = seg.alloc(0, layout::record_bytes(key.len(), 1), n, 0).unwrap();
            let rec = NewRecord {
                key,
                value: b"v",
                key_hash: p.hash,
                version: n,
                expires: 0,
                sliding_ms: 0,
                lock: LockWords::default(),
            };
            seg.write_record(b.off, pos, &rec);
            let w = slot::pack(slot::INSERTING, p.tag, block::generation(b.state), b.off);
            seg.index_word(pos).store(w, Ordering::Release);
            w
        };
        let home = p.home * BUCKET_SLOTS;
        let lower = [place(home + 1, 1), place(home + 2, 2)];
        let q = home + 3;
        let mine = place(q, 3);
        assert!(matches!(seg.settle(key, &p, q, mine).unwrap(), Settled::Inserted));
        for (j, w) in lower.into_iter().enumerate() {
            // The paused owner resumes with its flip: it must find its copy collided.
            let flipped = seg
                .index_word(home + 1 + j)
                .compare_exchange(w, slot::with_state(w, slot::MEMBER), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            assert!(!flipped, "lower copy at {} flipped to a second MEMBER of the key", home + 1 + j);
        }
    }
}
