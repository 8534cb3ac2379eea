//! The store's operations on an in-process segment (`Segment::in_process`: a heap buffer, no
//! file, no mapping). They run in every `cargo test`, and they are what `.ci/miri.sh` runs
//! under Miri, which cannot map a `/dev/shm` file: Miri then checks the engine's unsafe code
//! (the `Mem` word accessor and its pointer arithmetic) for undefined behaviour, and the
//! threaded test for data races and for the weak-memory behaviours Miri emulates.
//!
//! Kept small (a few dozen operations): Miri runs them thousands of times slower.

use crate::layout::{H_FEED_HEAD, Options};
use crate::segment::Segment;
use crate::store::{Expiry, Store};
use crate::sync::Ordering;
use crate::{Error, FeedRead};
use std::time::Duration;

/// A small segment's options (also the table's unit tests).
pub(crate) fn opts() -> Options {
    Options {
        capacity_bytes: 256 << 10,
        max_entries: 16,
        max_key: 16,
        max_value: 64,
        max_clients: 4,
        feed_len: 16,
        evict: false,
        mode: 0o600,
    }
}

fn store() -> Store {
    Store::from_segment(Segment::in_process(&opts(), 0x1234_5678).unwrap())
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

#[test]
fn every_operation_on_an_in_process_segment() {
    let st = store();
    for i in 0..6 {
        st.set(&key(i), format!("value-{i}").as_bytes(), Expiry::Never).unwrap();
    }
    assert_eq!(st.get(&key(3)).unwrap().unwrap().value, b"value-3");
    assert!(st.get(b"absent").unwrap().is_none());
    let mut buf = [0u8; 64];
    let m = st.get_into(&key(2), &mut buf).unwrap().unwrap();
    assert_eq!(&buf[..m.len], b"value-2");
    assert!(matches!(st.add(&key(1), b"x", Expiry::Never), Err(Error::Exists)));
    let v = st.meta_of(&key(1)).unwrap().unwrap().version;
    st.compare_and_set(&key(1), v, b"swapped", Expiry::After(Duration::from_secs(60))).unwrap();
    assert!(st.delete(&key(0)).unwrap());
    assert!(st.touch(&key(4), Expiry::Sliding(Duration::from_secs(5))).unwrap());
    let l = st.lock(&key(5), Duration::from_secs(60)).unwrap().unwrap();
    st.set_and_unlock(&key(5), l.lock_id, b"locked-then-set", Expiry::Never).unwrap();
    let mut n = 0;
    st.scan(|_| n += 1).unwrap();
    assert_eq!(n, 5);
    let _ = st.entry_at(0).unwrap();
    let _ = st.sweep(u64::MAX).unwrap();
    let head = st.feed_head();
    assert!(head > 0);
    assert!(matches!(st.feed_read(head - 1), FeedRead::Change(_)));
    assert!(st.check().problems.is_empty(), "{:?}", st.check());
    let _ = st.stats();
}

#[test]
fn damaged_words_give_errors_not_undefined_behaviour() {
    let st = store();
    for i in 0..4 {
        st.set(&key(i), b"v", Expiry::Never).unwrap();
    }
    let g = st.seg.g;
    // Garbage over the index, the page table and a mutable header word.
    for (w, v) in [(g.index_off, u64::MAX), (g.index_off + 1, 0x5555_5555_5555_5555), (g.pages_off, 77)] {
        st.seg.mem.w(w).store(v, Ordering::Relaxed);
    }
    st.seg.mem.w(H_FEED_HEAD).store(u64::MAX, Ordering::Relaxed);
    for i in 0..6 {
        let _ = st.get(&key(i));
        let _ = st.set(&key(i), b"w", Expiry::Never);
        let _ = st.delete(&key(i));
    }
    let _ = st.scan(|_| {});
    let _ = st.feed_read(3);
    assert!(!st.check().problems.is_empty());
}

#[test]
fn threads_share_an_in_process_store() {
    let st = store();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let st = &st;
            s.spawn(move || {
                for i in 0..8u64 {
                    let k = key(i % 4);
                    let v = format!("t{t}-{i}");
                    st.set(&k, v.as_bytes(), Expiry::Never).unwrap();
                    if let Some(e) = st.get(&k).unwrap() {
                        assert!(e.value.starts_with(b"t"), "torn value {:?}", e.value);
                    }
                    if i % 3 == 0 {
                        let _ = st.delete(&k).unwrap();
                    }
                }
            });
        }
    });
    assert!(st.check().problems.is_empty(), "{:?}", st.check());
}

/// Durations past 2^64 ms saturate: `as u64` once kept only their low bits (a TTL of
/// 2^64 ms + 1 s became one second), and a replicated TTL near u64::MAX ms overflowed
/// `now + ttl` (fuzz/regressions/attach/apply-replicated-ttl-overflow).
#[test]
fn huge_durations_saturate() {
    let st = store();
    let huge = Duration::from_millis(u64::MAX) + Duration::from_secs(1);
    let day = Duration::from_secs(86_400);
    st.set(b"k", b"v", Expiry::After(huge)).unwrap();
    assert!(st.meta_of(b"k").unwrap().unwrap().ttl_left.unwrap() > day);
    let lock = crate::LockInfo { lock_id: 9, age: huge };
    st.apply_replicated(b"r", b"v", Some(huge), Some(huge), Some(lock)).unwrap();
    assert!(st.meta_of(b"r").unwrap().unwrap().ttl_left.unwrap() > day);
    let max = Duration::from_millis(u64::MAX);
    st.apply_replicated(b"m", b"v", Some(max), None, None).unwrap();
    assert!(st.meta_of(b"m").unwrap().unwrap().ttl_left.unwrap() > day);
}

/// A write lease of `Duration::MAX` (as good as none) saturates like the TTLs above: `as u64`
/// kept the low 64 bits of its milliseconds (u64::MAX), and `now + u64::MAX` wrapped to a
/// lease that had run out a millisecond ago (or overflowed, with overflow checks).
#[test]
fn huge_write_lease_saturates() {
    let st = store();
    st.set_write_lease(Some(Duration::MAX));
    assert!(st.write_lease_left().unwrap() > Duration::from_secs(86_400));
    st.set(b"k", b"v", Expiry::Never).unwrap();
}

/// A touch is a worker write like a set: once the write lease ran out it is refused, in place
/// (a CAS of the deadline) or as a rewrite (a new sliding window), and a read no longer slides
/// a deadline out. Touch checked the write mode only (not the lease, nor the `C_WRITING`
/// handshake of `drain_writers`), so a primary whose daemon died kept taking touches that a
/// failover loses.
#[test]
fn an_expired_write_lease_refuses_touches() {
    let st = store();
    st.set(b"fixed", b"v", Expiry::After(Duration::from_secs(60))).unwrap();
    st.set(b"slides", b"v", Expiry::Sliding(Duration::from_millis(800))).unwrap();
    st.set_write_lease(Some(Duration::from_millis(1)));
    std::thread::sleep(Duration::from_millis(100));
    assert!(matches!(st.set(b"fixed", b"w", Expiry::Never), Err(Error::ReadOnly)));
    let head = st.feed_head();
    let ten_minutes = Duration::from_secs(600);
    assert!(matches!(st.touch(b"fixed", Expiry::After(ten_minutes)), Err(Error::ReadOnly)));
    assert!(matches!(st.touch(b"fixed", Expiry::Sliding(ten_minutes)), Err(Error::ReadOnly)));
    assert!(st.get(b"slides").unwrap().is_some());
    assert_eq!(st.feed_head(), head, "a write went through after the lease ran out");
    st.set_write_lease(None);
    assert!(st.touch(b"fixed", Expiry::After(ten_minutes)).unwrap());
}

/// Opportunistic sweeps are looked for every `SWEEP_CHECK_EVERY` writes of a client. The
/// count was of every operation (reads too) and only a write looked, so a client whose
/// operations cycle with the write off the multiples of 64 (here: a set, then three gets)
/// never swept at all.
#[test]
fn a_client_that_also_reads_still_sweeps() {
    let st = store();
    for i in 0..256 {
        st.set(&key(i % 4), b"v", Expiry::Never).unwrap();
        for _ in 0..3 {
            let _ = st.get(&key(i % 4)).unwrap();
        }
    }
    assert!(st.stats().sweeps > 0, "256 writes and no opportunistic sweep");
}

/// An insert whose probe window holds only expired entries takes one of their slots: they
/// are not entries any more. It failed with `Full(Index)` unless a sweep had happened to
/// pass (a full heap sweeps before it gives up; a full window did not look).
#[test]
fn expired_entries_do_not_fill_the_index() {
    let st = store();
    let slots = st.info().index_slots;
    for i in 0..slots {
        st.set(&key(i), b"v", Expiry::After(Duration::from_millis(1))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    st.set(b"new", b"v", Expiry::Never).unwrap();
    assert_eq!(st.get(b"new").unwrap().unwrap().value, b"v");
}

/// The random starting points of the allocator's bitmap walk and of the client-slot claim
/// are any u64: adding the walk's step to them must wrap, not overflow (a panic in builds
/// with overflow checks, such as `cargo test` without `--release`).
#[test]
fn random_starting_points_near_u64_max_wrap() {
    let st = store();
    // Past the first bitmap word the walk looks at (64 blocks), then past the first slot.
    let bytes = crate::layout::record_bytes(4, 4);
    for _ in 0..65 {
        st.seg.alloc(0, bytes, u64::MAX, 0).unwrap();
    }
    let me = st.seg.client_identity().unwrap();
    let first = st.seg.claim_client(me, usize::MAX).unwrap();
    assert_ne!(st.seg.claim_client(me, usize::MAX).unwrap(), first, "a held slot is not claimed twice");
}

/// An operation that unwinds (a panic) with a block taken and not yet published gives its
/// slot back recovered as a kill's reclaim would: the block freed, the slot FREE, nothing
/// leaked (before, a slot was held for the thread's life and its journal kept the block).
#[test]
#[cfg_attr(miri, ignore = "check() judges the slot's holder with kill(2), which Miri cannot call")]
fn an_abandoned_operation_is_recovered_like_a_dead_one() {
    let st = store();
    st.set(b"k", b"v", Expiry::Never).unwrap();
    let me = st.seg.client_identity().unwrap();
    let idx = st.seg.claim_client(me, 0).unwrap();
    st.seg.alloc(idx, crate::layout::record_bytes(4, 4), 0, 0).unwrap(); // journaled, unpublished
    assert_eq!(st.check().leaked_blocks, 0, "the journal names it");
    assert_eq!(st.stats().clients, 1);
    st.seg.abandon_client(idx, me);
    assert_eq!(st.stats().clients, 0);
    let report = st.check();
    assert!(report.problems.is_empty() && report.blocks_in_use == 1, "{report:?}");
}

#[test]
#[cfg_attr(miri, ignore = "thousands of operations: too slow under Miri")]
fn a_failing_insert_sweeps_a_bounded_slice() {
    // A heap of one page and an index of 16k slots: once the heap is full, an insert that
    // fails sweeps a constant slice of the index (issue 13 item 5), not all of it.
    let o = Options { capacity_bytes: 64 << 10, max_entries: 1 << 13, ..opts() };
    let st = Store::from_segment(Segment::in_process(&o, 0x5eed).unwrap());
    let mut i = 0;
    while st.set(&key(i), &[7; 64], Expiry::Never).is_ok() {
        i += 1;
    }
    let cursor = |st: &Store| st.seg.mem.w(crate::layout::H_SWEEP_CURSOR).load(Ordering::Relaxed);
    let before = cursor(&st);
    for k in 1..=4 {
        let r = st.set(&key(i + k), &[7; 64], Expiry::Never);
        assert!(matches!(r, Err(Error::Full(crate::FullKind::Heap))), "{r:?}");
    }
    let swept = cursor(&st) - before;
    assert!(swept <= 4 * 128, "4 failing inserts examined {swept} index slots");
}

/// Fills `st` with `len`-byte values under keys `tag0..` until the heap is full; returns how
/// many it stored.
fn fill_with(st: &Store, tag: &str, len: usize) -> u64 {
    let mut n = 0;
    while st.set(format!("{tag}{n}").as_bytes(), &vec![1; len], Expiry::Never).is_ok() {
        n += 1;
    }
    n
}

#[test]
#[cfg_attr(miri, ignore = "thousands of operations: too slow under Miri")]
fn a_retired_page_waits_only_for_a_journal_naming_it() {
    // Issue 13 item 4: pages emptied of one size class serve another at once, except a page
    // a client's journal names (heap.rs "Page reuse": a stalled take or touch there).
    use crate::layout::page;
    let o = Options { max_entries: 1 << 13, ..opts() };
    let st = Store::from_segment(Segment::in_process(&o, 0x5eed).unwrap());
    let seg = &*st.seg;
    let small = fill_with(&st, "a", 8);
    for i in 0..small {
        assert!(st.delete(format!("a{i}").as_bytes()).unwrap());
    }
    // Two operations of other threads, in flight: one stalls inside a take in page 1, the
    // other before its touch's CAS in page 2.
    let me = seg.client_identity().unwrap();
    let (a, b) = (seg.claim_client(me, 0).unwrap(), seg.claim_client(me, 0).unwrap());
    let stalled = seg.mem.w(seg.client_base(a) + crate::clients::C_J_NEW);
    stalled.store(seg.g.page_words() + 1, Ordering::SeqCst);
    let touching = seg.mem.w(seg.client_base(b) + crate::clients::C_J_OLD);
    touching.store(2 * seg.g.page_words() + 64 + 1, Ordering::SeqCst);
    let big = fill_with(&st, "b", 64);
    assert_eq!(page::state(seg.page_class(1)), page::RETIRED, "a page a take names was reused");
    assert_eq!(page::state(seg.page_class(2)), page::RETIRED, "a page a touch names was reused");
    let pages_used = (0..seg.g.n_pages).filter(|&p| page::state(seg.page_class(p)) == page::ACTIVE).count();
    assert_eq!(pages_used as u64, seg.g.n_pages - 2, "every other page serves the new size");
    // They resume and end: those pages serve too, their generations above every earlier one.
    let bound = page::bound(seg.page_class(1));
    stalled.store(0, Ordering::SeqCst);
    touching.store(0, Ordering::SeqCst);
    seg.release_client(a);
    seg.release_client(b);
    let more = fill_with(&st, "c", 64);
    assert!(more > 0 && (0..seg.g.n_pages).all(|p| page::state(seg.page_class(p)) == page::ACTIVE));
    let first = seg.mem.w(seg.heap_word(seg.g.page_words()) + crate::layout::R_STATE).load(Ordering::SeqCst);
    assert!(crate::layout::block::generation(first) >= bound, "generations went back on reuse");
    assert!(
        (big + more) * 160 * 10 >= small * 104 * 9,
        "{big} + {more} 64-byte values after {small} 8-byte ones"
    );
    assert!(st.check().problems.is_empty(), "{:?}", st.check());
}

#[test]
#[cfg_attr(miri, ignore = "thousands of operations: too slow under Miri")]
fn a_dead_retirers_page_work_is_rolled_back() {
    use crate::layout::{R_STATE, block, page};
    let st = Store::from_segment(
        Segment::in_process(&Options { max_entries: 1 << 13, ..opts() }, 0x5eed).unwrap(),
    );
    let seg = &*st.seg;
    st.set(b"k", b"v", Expiry::Never).unwrap();
    assert!(st.delete(b"k").unwrap());
    let c = seg.page_class(0);
    let class = c as usize - 1;
    let pw = seg.mem.w(seg.g.pages_off);
    // Killed halfway through a retirement: RETIRING, its first block marked RETIRED.
    pw.store(page::owned(page::RETIRING, 3, class), Ordering::SeqCst);
    let sw = seg.mem.w(seg.heap_word(0) + R_STATE);
    sw.store(block::pack(block::RETIRED, 0, 7), Ordering::SeqCst);
    seg.recover_page_work(3);
    assert_eq!(pw.load(Ordering::SeqCst), c, "the page is ACTIVE in its class again");
    assert_eq!(block::kind(sw.load(Ordering::SeqCst)), block::FREE);
    // Killed while making a retired page (bound 40) a page of another class: retired again,
    // above the FREE words it may have written at 40.
    seg.mem.w(seg.client_base(3) + crate::clients::C_PAGE_GEN).store(40, Ordering::SeqCst);
    pw.store(page::owned(page::INIT, 3, class + 1), Ordering::SeqCst);
    seg.recover_page_work(3);
    assert_eq!(pw.load(Ordering::SeqCst), page::retired(42));
    assert!(st.check().problems.is_empty(), "{:?}", st.check());
    let o = Options { max_entries: 1 << 13, ..opts() };
    let fresh = Store::from_segment(Segment::in_process(&o, 0x5eed).unwrap());
    assert!(st.set(b"k", b"v", Expiry::Never).is_ok());
    assert_eq!(fill_with(&st, "f", 8) + 1, fill_with(&fresh, "f", 8), "every page serves again");
}
