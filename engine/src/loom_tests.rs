//! Loom models of the lock-free algorithms, at the `Segment` level (no store, no clients, no
//! processes): `RUSTFLAGS="--cfg loom" cargo test -p gardenstate --release --lib loom`, or
//! `.ci/loom.sh`.
//!
//! Loom runs each model under every interleaving of its threads' atomic operations (up to a
//! preemption bound, `LOOM_MAX_PREEMPTIONS`, default 2 here) and, for each load, every value
//! the C11 memory model lets it read, so a missing fence or a too-weak ordering shows up as a
//! failed assertion even on x86. What it cannot see: processes (a thread here stands for a
//! client of any process; the segment is a `Vec` of loom atomics, not a mapping), a client
//! killed between two steps (no `kill -9`: the journal and reclaim paths are not modelled),
//! clocks and expiry, and interleavings beyond the preemption bound.
//!
//! The geometry is the smallest `Geometry::from_options` accepts: one 64 KiB heap page, two
//! buckets (14 slots), a 16-entry feed, two clients. Of its 9,216 words only the few hundred
//! the models touch are materialized as loom atomics (`segment_with`): creating all of them
//! cost more than the model itself, in every one of the hundreds of thousands of executions.

use crate::clients::{C_J_NEW, C_RECENT_FREE};
use crate::error::{Error, FullKind};
use crate::feed::{ChangeKind, FeedRead};
use crate::heap::Block;
use crate::layout::{self, BUCKET_SLOTS, Geometry, Options, R_VERSION, block, slot};
use crate::record::{LockWords, NewRecord, Read, Sink};
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::table::{Probe, Settled};
use loom::sync::Arc;
use loom::thread;

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const KEY: &[u8] = b"sess-001";
/// The models' values: one word, so a record is 13 words (an 88-byte header, key, value).
const VALUE_LEN: usize = 8;

fn opts() -> Options {
    Options {
        capacity_bytes: 64 << 10,
        max_entries: 8,
        max_key: 8,
        max_value: 16,
        max_clients: 2,
        feed_len: 16,
        evict: false,
        mode: 0o600,
    }
}

/// Runs `f` under loom with the preemption bound from `LOOM_MAX_PREEMPTIONS` (default 2), and
/// reports how many executions it explored.
fn check(name: &str, f: impl Fn() + Sync + Send + 'static) {
    check_bounded(name, 2, f)
}

/// [`check`] with another default preemption bound (`LOOM_MAX_PREEMPTIONS` still overrides).
fn check_bounded(name: &str, default_bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(default_bound);
    }
    // `settle` may rescan up to INSERT_PATIENCE times: allow long single executions.
    b.max_branches = 1_000_000;
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = runs.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{name}: {runs} executions, preemption bound {:?}, {:.1?}",
        b.preemption_bound,
        start.elapsed()
    );
}

/// The size class of the models' records (an 8-byte key, a `VALUE_LEN`-byte value).
fn record_class() -> usize {
    layout::class_of(layout::record_bytes(KEY.len(), VALUE_LEN) as u64)
}

/// Heap blocks of the record class that exist in the record models: allocation takes the
/// lowest free bit first, so a model touching more would be a surprise (and panics).
const RECORD_BLOCKS: u64 = 8;

/// A model segment. Every loom atomic costs time in every execution a model explores, so only
/// the words the models touch exist (touching another one panics): the header's first 48
/// words, the heap epoch, the class hints of the two classes the models allocate, the feed,
/// the first 8 words of each client, the index, the page table, the bitmaps, and of the heap
/// (8,192 words) those with `heap_live(heap word offset)`.
fn segment_with(heap_live: impl Fn(u64) -> bool) -> Arc<Segment> {
    let g = Geometry::from_options(&opts()).expect("tiny geometry is valid");
    let hints = [record_class(), layout::class_of(BIG as u64)].map(|c| layout::H_CLASS_HINT + c);
    let live = |i: usize| {
        i < 48
            || i == layout::H_HEAP_EPOCH
            || i == layout::H_LOCK_WAIT
            || hints.contains(&i)
            || (g.feed_off..g.clients_off).contains(&i)
            || (g.clients_off..g.index_off).contains(&i) && (i - g.clients_off) % layout::CLIENT_WORDS < 8
            || (g.index_off..g.bitmap_off + g.n_pages as usize * g.bitmap_words).contains(&i)
            || i >= g.heap_off && heap_live((i - g.heap_off) as u64)
    };
    Arc::new(Segment::model(&opts(), SEED, live).expect("tiny geometry is valid"))
}

/// A model segment whose first `RECORD_BLOCKS` record-class blocks exist.
fn segment() -> Arc<Segment> {
    let words = RECORD_BLOCKS * layout::class_size(record_class()) / 8;
    segment_with(move |off| off < words)
}

fn journal(seg: &Segment, me: usize) -> usize {
    seg.client_base(me) + C_J_NEW
}

/// A value every byte of which is `v` (the record's version).
fn value(v: u64) -> [u8; VALUE_LEN] {
    [v as u8; VALUE_LEN]
}

fn record<'a>(key: &'a [u8], value: &'a [u8], p: &Probe, version: u64) -> NewRecord<'a> {
    NewRecord { key, value, key_hash: p.hash, version, expires: 0, sliding_ms: 0, lock: LockWords::default() }
}

/// Allocates a record block the way the store does: the block this client freed last first.
fn alloc_record(seg: &Segment, me: usize, key: &[u8], value: &[u8]) -> Block {
    let bytes = layout::record_bytes(key.len(), value.len());
    let recent = seg.mem.w(seg.client_base(me) + C_RECENT_FREE).load(Ordering::Relaxed);
    seg.alloc(me, bytes, 0, recent).expect("the model heap has room")
}

/// Frees a record displaced from the index, remembering it as this client's recent free.
fn free_displaced(seg: &Segment, me: usize, word: u64, state: u64) {
    let off = slot::block(word) as u64;
    if seg.free(off, state) {
        seg.mem.w(seg.client_base(me) + C_RECENT_FREE).store(off + 1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOutcome {
    Inserted,
    Updated,
}

/// The store's set path (`Store::mutate_with` for a plain set), minus what is not about
/// concurrency: no journal of the old record, no feed entry, no expiry, no eviction.
/// Returns how it published and the published slot word.
fn set(seg: &Segment, me: usize, key: &[u8], value: &[u8], version: u64) -> (SetOutcome, u64) {
    let p = seg.probe(key);
    let mut held: Option<Block> = None;
    for _attempt in 0..16 {
        let found = seg.find(key, &p, &mut Sink::Nothing).expect("no corruption in a model");
        let b = *held.get_or_insert_with(|| alloc_record(seg, me, key, value));
        let rec = record(key, value, &p, version);
        let new_word = |state| slot::pack(state, p.tag, block::generation(b.state), b.off);
        match found {
            Some(m) => {
                seg.write_record(b.off, m.pos, &rec);
                let w = new_word(slot::MEMBER);
                if seg
                    .index_word(m.pos)
                    .compare_exchange(m.word, w, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    free_displaced(seg, me, m.word, m.view.state);
                    return (SetOutcome::Updated, w);
                }
            }
            None => {
                let q = seg.free_slot(&p).expect("the model index has room");
                seg.write_record(b.off, q, &rec);
                let mine = new_word(slot::INSERTING);
                let placed = seg
                    .index_word(q)
                    .compare_exchange(slot::EMPTY, mine, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok();
                if placed {
                    match seg.settle(key, &p, q, mine).expect("no corruption in a model") {
                        Settled::Inserted => {
                            return (SetOutcome::Inserted, slot::with_state(mine, slot::MEMBER));
                        }
                        Settled::Lost => {}
                    }
                }
            }
        }
    }
    panic!("set of {key:?} did not publish in 16 attempts");
}

/// Deletes `key` (the store's unpublish, minus journal and feed). Returns whether it did.
fn delete(seg: &Segment, me: usize, key: &[u8]) -> bool {
    let p = seg.probe(key);
    loop {
        let Some(m) = seg.find(key, &p, &mut Sink::Nothing).expect("no corruption in a model") else {
            return false;
        };
        if seg
            .index_word(m.pos)
            .compare_exchange(m.word, slot::EMPTY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            free_displaced(seg, me, m.word, m.view.state);
            return true;
        }
    }
}

/// (MEMBER slots holding `key`, INSERTING slots holding `key`), read once nothing runs.
fn copies_of(seg: &Segment, key: &[u8]) -> (usize, usize) {
    let (mut members, mut inserting) = (0, 0);
    for pos in 0..seg.g.index_slots() as usize {
        if pos % BUCKET_SLOTS == 0 {
            continue; // the bucket's probe bound, not a slot
        }
        let w = seg.index_word(pos).load(Ordering::Acquire);
        if slot::state(w) == slot::EMPTY {
            continue;
        }
        match seg.read_record(pos, w, Some(key), &mut Sink::Nothing) {
            Read::Ok { .. } if slot::state(w) == slot::MEMBER => members += 1,
            Read::Ok { .. } => inserting += 1,
            Read::OtherKey => {}
            Read::Changed | Read::Damaged(_) => panic!("slot {pos} moved or is damaged at quiescence"),
        }
    }
    (members, inserting)
}

/// The first `blocks` blocks of `class` of the first (only) heap page whose state word is
/// OWNED, at quiescence.
fn owned_blocks(seg: &Segment, class: usize, blocks: u64) -> Vec<u64> {
    let size_words = layout::class_size(class) / 8;
    (0..blocks)
        .map(|i| i * size_words)
        .filter(|&off| {
            let st = seg.mem.w(seg.heap_word(off) + layout::R_STATE).load(Ordering::Acquire);
            block::kind(st) == block::OWNED
        })
        .collect()
}

/// Bitmap bits set in page 0, at quiescence.
fn bits_set(seg: &Segment) -> Vec<u64> {
    (0..seg.g.bitmap_words)
        .flat_map(|wi| {
            let w = seg.mem.w(seg.g.bitmap_off + wi).load(Ordering::Acquire);
            (0..64).filter(move |b| w & (1 << b) != 0).map(move |b| wi as u64 * 64 + b)
        })
        .collect()
}

/// Replaces `KEY`'s record, MEMBER at `pos` as `word` over a block in state `state`, the way
/// the store's set path does once it has found it: alloc a block, write the record, CAS the
/// index slot, free the old block. Returns the new slot word and block state.
fn replace(seg: &Segment, me: usize, pos: usize, (word, state): (u64, u64), version: u64) -> (u64, u64) {
    let p = seg.probe(KEY);
    let v = value(version);
    let b = alloc_record(seg, me, KEY, &v);
    seg.write_record(b.off, pos, &record(KEY, &v, &p, version));
    let new = slot::pack(slot::MEMBER, p.tag, block::generation(b.state), b.off);
    let cas = seg.index_word(pos).compare_exchange(word, new, Ordering::AcqRel, Ordering::Relaxed);
    assert_eq!(cas, Ok(word), "the only writer's CAS cannot fail");
    free_displaced(seg, me, word, state);
    (new, b.state)
}

/// The reader of the publish models: `find` must return a record some writer wrote in full
/// (every value byte equal to the record's version, versions 1..=`last`), never a mixture,
/// must not report damage, and must not miss the key (its slot is MEMBER throughout).
fn read_whole(seg: &Segment, last: u64) {
    let mut buf = [0u8; VALUE_LEN];
    let m = seg
        .find(KEY, &seg.probe(KEY), &mut Sink::Buf(&mut buf))
        .expect("no corruption")
        .expect("the key is MEMBER throughout");
    assert!(m.value_fits);
    assert_eq!(m.view.value_len, VALUE_LEN);
    assert!((1..=last).contains(&m.view.version), "version {}", m.view.version);
    assert_eq!(buf, value(m.view.version), "torn read: version {}", m.view.version);
}

/// (a) Publish/validate: a writer replaces the key's record once (alloc a block, write the
/// record, CAS the index slot, free the old block) while a reader looks it up (`read_whole`).
#[test]
fn loom_publish_validate() {
    check("loom_publish_validate", || {
        let seg = segment();
        assert_eq!(set(&seg, 0, KEY, &value(1), 1).0, SetOutcome::Inserted);
        let m0 = seg.find(KEY, &seg.probe(KEY), &mut Sink::Nothing).unwrap().unwrap();
        let writer = {
            let seg = seg.clone();
            thread::spawn(move || replace(&seg, 0, m0.pos, (m0.word, m0.view.state), 2).0)
        };
        let reader = {
            let seg = seg.clone();
            thread::spawn(move || read_whole(&seg, 2))
        };
        let w1 = writer.join().unwrap();
        reader.join().unwrap();
        let mut buf = [0u8; VALUE_LEN];
        let m = seg.find(KEY, &seg.probe(KEY), &mut Sink::Buf(&mut buf)).unwrap().unwrap();
        assert_eq!((m.word, m.view.version, buf), (w1, 2, value(2)));
    });
}

/// (a') Publish/validate across block reuse: the writer replaces the record twice, and the
/// second replacement takes the block the first one freed (the client's recent free), so a
/// reader holding the original slot word meets its block freed and rewritten under it.
///
/// Preemption bound 1 by default: what makes this model big is not the schedules but the
/// values, since every relaxed load of the reused block may return the old or the new record's
/// word (13 words, so 2^13 mixtures a schedule), and one preemption of the reader (after it
/// loaded the slot and the block state) already lets the writer run both replacements under
/// it; loom then tries every mixture of old and new words the reader could copy.
#[test]
fn loom_publish_validate_reuse() {
    check_bounded("loom_publish_validate_reuse", 1, || {
        let seg = segment();
        assert_eq!(set(&seg, 0, KEY, &value(1), 1).0, SetOutcome::Inserted);
        let m0 = seg.find(KEY, &seg.probe(KEY), &mut Sink::Nothing).unwrap().unwrap();
        let writer = {
            let seg = seg.clone();
            thread::spawn(move || {
                let r1 = replace(&seg, 0, m0.pos, (m0.word, m0.view.state), 2);
                let r2 = replace(&seg, 0, m0.pos, r1, 3);
                (r1.0, r2.0)
            })
        };
        let reader = {
            let seg = seg.clone();
            thread::spawn(move || read_whole(&seg, 3))
        };
        let (w1, w2) = writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(slot::block(w2), slot::block(m0.word), "the third record reuses the first block");
        assert_ne!(slot::block(w1), slot::block(m0.word));
        let mut buf = [0u8; VALUE_LEN];
        let m = seg.find(KEY, &seg.probe(KEY), &mut Sink::Buf(&mut buf)).unwrap().unwrap();
        assert_eq!((m.word, m.view.version, buf), (w2, 3, value(3)));
    });
}

/// The allocator models' request: a 32 KiB block, two to a 64 KiB page.
const BIG: usize = 32 << 10;

/// The allocator models' segment: only the first two words of each `BIG` block exist.
fn big_block_segment() -> Arc<Segment> {
    segment_with(|off| off % (BIG as u64 / 8) <= R_VERSION as u64)
}

/// (b) The allocator's safety, on a page of two `BIG` blocks, unassigned at the start (so the
/// threads race to claim it for the class). Thread 0 allocates twice and thread 1 once, each
/// time: alloc, mark, unmark, free, stale free; both start at the same bitmap bit, so they race
/// for the same block, and thread 0's second round reuses a freed block. Checked: a block is
/// never owned twice (an ownership marker swapped in and out of the block), a stale free frees
/// nothing (H1), the journal names the block (H3), and at quiescence the bitmap marks exactly
/// the OWNED blocks (H2) and both freed blocks can be allocated again. (An alloc returning
/// `Full` mid-run is tolerated here; the next model is about that.)
#[test]
fn loom_allocator() {
    check("loom_allocator", || {
        let seg = big_block_segment();
        let class = layout::class_of(BIG as u64);
        assert_eq!(seg.g.page_size / layout::class_size(class), 2, "two blocks a page");
        let threads: Vec<_> = [(0usize, 2), (1, 1)]
            .into_iter()
            .map(|(me, rounds)| {
                let seg = seg.clone();
                thread::spawn(move || {
                    let mut recent = 0;
                    for _ in 0..rounds {
                        let b = match seg.alloc(me, BIG, 0, recent) {
                            Ok(b) => b,
                            Err(Error::Full(FullKind::Heap)) => continue,
                            Err(e) => panic!("thread {me}: alloc failed: {e:?}"),
                        };
                        assert_eq!(block::owner(b.state), me as u16);
                        let journaled = seg.mem.w(journal(&seg, me)).load(Ordering::Relaxed);
                        assert_eq!(journaled, b.off as u64 + 1, "H3: the block is journaled");
                        let marker = seg.mem.w(seg.heap_word(b.off as u64) + R_VERSION);
                        assert_eq!(marker.swap(me as u64 + 1, Ordering::Relaxed), 0, "block owned twice");
                        assert_eq!(marker.swap(0, Ordering::Relaxed), me as u64 + 1, "block owned twice");
                        assert!(seg.free(b.off as u64, b.state));
                        assert!(!seg.free(b.off as u64, b.state), "a stale free must free nothing (H1)");
                        if me == 0 {
                            recent = b.off as u64 + 1; // as the store does; thread 1 goes without
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(owned_blocks(&seg, class, 2), Vec::<u64>::new());
        assert_eq!(bits_set(&seg), Vec::<u64>::new(), "H2: no bit over a FREE block at quiescence");
        // Both blocks were freed: both can be allocated again, and then the page is full.
        let a = seg.alloc(0, BIG, 0, 0).expect("a freed block is reusable");
        let b = seg.alloc(0, BIG, 0, 0).expect("a freed block is reusable");
        assert_ne!(a.off, b.off);
        assert!(matches!(seg.alloc(0, BIG, 0, 0), Err(Error::Full(FullKind::Heap))));
        assert_eq!(bits_set(&seg), vec![0, 1]);
    });
}

/// (b'') H5, a stalled writer's view against block reuse: a writer journals the block it
/// viewed and re-checks its state (`journal_view`) while another client frees that block and
/// takes it again at a guarded generation. Of the two SeqCst-fenced pairs one sees the other:
/// never both the writer's view still current and the block taken past its guard (which, with
/// 2^13 reuses more, would bring the writer's slot word back with another record behind it).
/// A stepped-back block is FREE at the generation it was taken from.
#[test]
fn loom_guard_or_recheck() {
    check("loom_guard_or_recheck", || {
        let seg = big_block_segment();
        let off = seg.alloc(0, BIG, 0, 0).expect("an empty heap").off as u64;
        seg.mem.w(journal(&seg, 0)).store(0, Ordering::Relaxed);
        // The block as a writer viewed it: published, one reuse before a guarded take.
        let guarded = (1..).map(|k| 2 * k + 1).find(|&g| block::guarded(g)).expect("a guarded generation");
        let viewed = block::pack(block::OWNED, 0, guarded - 2);
        seg.mem.w(seg.heap_word(off) + layout::R_STATE).store(viewed, Ordering::Release);
        let writer = {
            let seg = seg.clone();
            thread::spawn(move || seg.journal_view(0, off, viewed))
        };
        let other = {
            let seg = seg.clone();
            thread::spawn(move || {
                assert!(seg.free(off, viewed), "only this thread frees the block");
                seg.alloc(1, BIG, 0, off + 1).expect("the other block is free").off as u64
            })
        };
        let current = writer.join().unwrap();
        let took = other.join().unwrap();
        assert!(!(current && took == off), "H5: the viewed block passed its guard under a current view");
        if took != off {
            let st = seg.mem.w(seg.heap_word(off) + layout::R_STATE).load(Ordering::Relaxed);
            assert_eq!(
                st,
                block::pack(block::FREE, 0, guarded - 1),
                "stepped back to the FREE word it was taken from"
            );
        }
    });
}

/// (b') The allocator never reports `Full` while its class has a free block. Page of two `BIG`
/// blocks; client 1 holds block 1 and block 0 is free. Thread 1 frees block 1 and allocates
/// again (block 0, or block 1 if thread 0 took block 0); thread 0 allocates once. Thread 1
/// holds at most one block at any instant, so each alloc has a free block to take: both must
/// succeed, with different blocks.
///
/// Fails as of this writing: thread 1 frees block 1 (state CAS, then bit 1 cleared) and takes
/// block 0 (state CAS, then bit 0 set); thread 0 reads the bitmap (Relaxed) as bit 0 set, bit
/// 1 clear, then block 1's state (Acquire) as still OWNED: reading a relaxed RMW's result does
/// not synchronize, so nothing makes thread 1's free of block 1 visible to it, and it returns
/// `Full`. (A second form: thread 0's CAS on block 0 fails against thread 1's, with a Relaxed
/// failure ordering, and its second pass reads the same stale view.) The store then reports
/// `Full(Heap)` to a `set` while the heap has room. Fixed (checked with this model at bounds 2
/// and 3, and a two-rounds-each variant at bound 2) by an Acquire bitmap load in `alloc_in_page`,
/// Release on the bitmap `fetch_or` (take) and `fetch_and` (free), and an Acquire failure
/// ordering on take's CAS: no change to the x86-64 code.
#[test]
fn loom_allocator_no_spurious_full() {
    check("loom_allocator_no_spurious_full", || {
        let seg = big_block_segment();
        let first = seg.alloc(1, BIG, 0, 0).expect("empty page");
        let held = seg.alloc(1, BIG, 0, 0).expect("second block");
        assert!(seg.free(first.off as u64, first.state));
        let t0 = {
            let seg = seg.clone();
            thread::spawn(move || seg.alloc(0, BIG, 0, 0))
        };
        let t1 = {
            let seg = seg.clone();
            thread::spawn(move || {
                assert!(seg.free(held.off as u64, held.state));
                seg.alloc(1, BIG, 0, 0)
            })
        };
        let (a, b) = (t0.join().unwrap(), t1.join().unwrap());
        let a = a.expect("thread 0: alloc reported Full though a block was free at every instant");
        let b = b.expect("thread 1: alloc reported Full though it had just freed a block");
        assert_ne!(a.off, b.off);
    });
}

/// (c) The insert protocol: two threads set the same new key at once. Afterwards exactly one
/// MEMBER slot holds the key and no INSERTING copy is left (T1); one set published as an
/// insert, the other fell back to an update of it (so the key holds the updater's value), and
/// exactly one block is still owned (the loser's candidate block was reused, not leaked).
#[test]
fn loom_insert_same_key() {
    check("loom_insert_same_key", || {
        let seg = segment();
        let threads: Vec<_> = (0..2usize)
            .map(|me| {
                let seg = seg.clone();
                thread::spawn(move || set(&seg, me, KEY, &value(me as u64 + 1), me as u64 + 1).0)
            })
            .collect();
        let outcomes: Vec<SetOutcome> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(copies_of(&seg, KEY), (1, 0), "T1: one MEMBER, no INSERTING left");
        let updater = outcomes.iter().position(|&o| o == SetOutcome::Updated);
        assert!(
            outcomes.contains(&SetOutcome::Inserted) && updater.is_some(),
            "one insert and one update, got {outcomes:?}"
        );
        let mut buf = [0u8; VALUE_LEN];
        let m = seg.find(KEY, &seg.probe(KEY), &mut Sink::Buf(&mut buf)).unwrap().unwrap();
        let v = updater.unwrap() as u64 + 1;
        assert_eq!((m.view.version, buf), (v, value(v)), "the update came last");
        let owned = owned_blocks(&seg, record_class(), RECORD_BLOCKS);
        assert_eq!(owned, vec![slot::block(m.word) as u64], "no leaked block");
    });
}

/// A key other than `KEY` with the same home bucket (so it shares `KEY`'s probe window).
fn neighbour_key(seg: &Segment) -> [u8; 8] {
    let home = seg.probe(KEY).home;
    (0u32..)
        .map(|i| {
            let mut k = *b"othr0000";
            k[4..].copy_from_slice(&i.to_be_bytes());
            k
        })
        .find(|k| {
            let p = seg.probe(k);
            p.home == home && p.tag != seg.probe(KEY).tag
        })
        .expect("some key shares the home bucket")
}

/// (c') The insert protocol with a slot freed under it: another key first holds the first slot
/// of the window. Thread B sets `KEY` (sees that slot taken, places its candidate in the second
/// slot); thread A deletes the other key and then sets `KEY` (places its candidate in the first
/// slot, now free). Same checks as (c).
///
/// Fails as of this writing (two MEMBERs of `KEY`): store buffering. A places INSERTING at slot
/// 1 and its scan reads slot 2 EMPTY; B places INSERTING at slot 2 (it saw slot 1 still holding
/// the other key) and its scan reads slot 1 EMPTY (the delete's value: A's later INSERTING word
/// is not ordered before B's load, as the placing CAS is AcqRel and the scan loads Acquire, and
/// release/acquire never orders a store before a later load). Each scan misses the other's
/// candidate, both flip to MEMBER. Impossible under sequential consistency (and on x86-64,
/// where the CAS is a full barrier), allowed by the C11 model and by weaker hardware (POWER). A
/// `fence(SeqCst)` at the start of `settle`, between the placing CAS and the scan, fixes it
/// (checked with this model at preemption bounds 2 and 3).
#[test]
fn loom_insert_same_key_after_delete() {
    check("loom_insert_same_key_after_delete", || {
        let seg = segment();
        let other = neighbour_key(&seg);
        let (o, w) = set(&seg, 0, &other, &value(9), 9);
        let home = seg.probe(KEY).home;
        assert_eq!(
            (o, w),
            (SetOutcome::Inserted, seg.index_word(home * BUCKET_SLOTS + 1).load(Ordering::Relaxed))
        );
        let a = {
            let seg = seg.clone();
            thread::spawn(move || {
                assert!(delete(&seg, 0, &other));
                set(&seg, 0, KEY, &value(1), 1).0
            })
        };
        let b = {
            let seg = seg.clone();
            thread::spawn(move || set(&seg, 1, KEY, &value(2), 2).0)
        };
        let outcomes = [a.join().unwrap(), b.join().unwrap()];
        assert_eq!(copies_of(&seg, &other), (0, 0));
        assert_eq!(copies_of(&seg, KEY), (1, 0), "T1: one MEMBER, no INSERTING left ({outcomes:?})");
        assert!(
            outcomes.contains(&SetOutcome::Inserted) && outcomes.contains(&SetOutcome::Updated),
            "one insert and one update, got {outcomes:?}"
        );
    });
}

/// The payload a feed entry at position `p` gets in the feed model.
fn entry_of(p: u64) -> (ChangeKind, usize, u64, u64) {
    (ChangeKind::Set, (p % 7) as usize + 1, p + 1, p.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
}

fn feed_append(seg: &Segment) -> u64 {
    let client = seg.client_base(0);
    let p = seg.feed_reserve(client);
    let (kind, slot, version, hash) = entry_of(p);
    seg.feed_write(client, p, kind, slot, version, hash);
    p
}

/// (d) The change feed: the ring (16 entries) is full; a writer appends two entries (16 and
/// 17, overwriting ring entries 0 and 1) while a follower reads positions 0, 1, 16 and 17.
/// Every `Change` the follower gets must be exactly the entry written at that position, never
/// a mixture of a lapped entry and its overwrite. Otherwise: positions 0 and 1 may be
/// `Overflow` (lapped) or `Pending` (the follower read the head before the writer reserved
/// its position, then the entry already marked as being rewritten); 16 and 17 may be `Empty`
/// (not reserved yet) or `Pending` (reserved, not written yet).
#[test]
fn loom_feed() {
    check("loom_feed", || {
        let seg = segment_with(|_| false);
        for p in 0..16 {
            assert_eq!(feed_append(&seg), p);
        }
        let writer = {
            let seg = seg.clone();
            thread::spawn(move || {
                assert_eq!(feed_append(&seg), 16);
                assert_eq!(feed_append(&seg), 17);
            })
        };
        let follower = {
            let seg = seg.clone();
            thread::spawn(move || {
                for cursor in [0, 1, 16, 17] {
                    match seg.feed_read(cursor) {
                        FeedRead::Change(c) => {
                            let (kind, slot, version, key_hash) = entry_of(cursor);
                            assert_eq!(
                                (c.seq, c.kind, c.slot as usize, c.version, c.key_hash),
                                (cursor, kind, slot, version, key_hash),
                                "torn feed entry at {cursor}"
                            );
                        }
                        FeedRead::Overflow | FeedRead::Pending if cursor < 16 => {}
                        FeedRead::Empty | FeedRead::Pending if cursor >= 16 => {}
                        r => panic!("cursor {cursor}: {r:?}"),
                    }
                }
            })
        };
        writer.join().unwrap();
        follower.join().unwrap();
        assert!(matches!(seg.feed_read(0), FeedRead::Overflow));
        assert!(matches!(seg.feed_read(17), FeedRead::Change(c) if c.version == 18));
        assert!(matches!(seg.feed_read(18), FeedRead::Empty));
    });
}

/// (e) lockwait.rs L1, no lost wakeup: a waiter arms the lock-wait word, finds the lock held
/// (the index slot word, as `Store::lock` reads it) and sleeps; the holder releases it (the
/// publishing CAS, AcqRel as in `mutate_with`) and wakes the word's waiters. In every
/// interleaving the waiter ends up seeing the release: a sleep that no wake ends (the model's
/// futex has no timeout, os.rs) is a deadlock, which loom reports.
#[test]
fn loom_lock_wait_no_lost_wakeup() {
    const LOCKED: u64 = 1;
    const RELEASED: u64 = 2;
    // Key hash 0: the first lock-wait word, the only one the model segment has.
    const HASH: u64 = 0;
    check("loom_lock_wait_no_lost_wakeup", || {
        let seg = segment_with(|_| false);
        seg.index_word(1).store(LOCKED, Ordering::Relaxed);
        let holder = {
            let seg = seg.clone();
            thread::spawn(move || {
                assert!(
                    seg.index_word(1)
                        .compare_exchange(LOCKED, RELEASED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                );
                seg.wake_lock_waiters(HASH);
            })
        };
        loop {
            let armed = seg.arm_lock_wait(HASH);
            if seg.index_word(1).load(Ordering::Acquire) == RELEASED {
                break;
            }
            seg.sleep_lock_wait(HASH, armed, std::time::Duration::from_secs(600));
        }
        holder.join().unwrap();
    });
}
