//! Value-size mixes that drift (issue 13 item 4): what a segment stores after its record
//! sizes shift, measured against what a fresh segment stores.
//!
//! Each failed on the heap whose pages kept their size class for the life of the segment
//! (12,740 of 58,240 values stored after the deleted mix; an overwrite failing at 17,868 of
//! 34,944; `Full` in phase 6 of the drift): empty pages now return to a common pool (heap.rs
//! "Page reuse"). Also here: an operation parked inside a write while other threads churn
//! sizes (it held back every page retired after it began), and pages changing class under
//! concurrent takes, touches and reads.

mod common;

use common::Seg;
use gardenstate::{Error, Expiry, FullKind, Options, Store};

fn key(tag: &str, i: u64) -> Vec<u8> {
    format!("{tag}{i:07}").into_bytes()
}

/// Sets `tag0..` with values of `len` bytes until the heap is full; returns how many it stored.
fn fill(st: &Store, tag: &str, len: usize) -> u64 {
    let v = vec![0x5a; len];
    let mut n = 0;
    loop {
        match st.set(&key(tag, n), &v, Expiry::Never) {
            Ok(_) => n += 1,
            Err(Error::Full(FullKind::Heap)) => return n,
            Err(e) => panic!("filling with {len}-byte values: {e:?}"),
        }
    }
}

/// Default options, with an index large enough that the heap fills first.
fn opts() -> Options {
    Options { max_entries: 1 << 18, ..Options::default() }
}

/// What a fresh segment of `opts()` stores of `len`-byte values. (Each call names its own
/// segment: the tests of this binary run in parallel in one process.)
fn fresh_capacity(len: usize) -> u64 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let s = Seg::new(&format!("mix-fresh{n}"));
    let st = Store::create(&s.name, &opts()).unwrap();
    fill(&st, "f", len)
}

/// The exact scenario: 40 value sizes from 100 B to 8 KiB, 20 entries each, then
/// every entry deleted; a fill with 1,000-byte values must then store at least 90% of what a
/// fresh segment stores (it stored 1,820 of 58,240).
#[test]
fn a_deleted_mix_of_forty_sizes_leaves_the_heap_reusable() {
    let fresh = fresh_capacity(1000);
    let s = Seg::new("mix-forty");
    let st = Store::create(&s.name, &opts()).unwrap();
    let mut stored = Vec::new();
    for k in 0..40u64 {
        let len = 100 + (k * (8192 - 100) / 39) as usize;
        for j in 0..20 {
            let key = key("m", k * 20 + j);
            match st.set(&key, &vec![1; len], Expiry::Never) {
                Ok(_) => stored.push(key),
                Err(Error::Full(FullKind::Heap)) => {}
                Err(e) => panic!("{len}-byte value: {e:?}"),
            }
        }
    }
    for key in &stored {
        assert!(st.delete(key).unwrap());
    }
    let n = fill(&st, "f", 1000);
    assert!(
        n * 10 >= fresh * 9,
        "after the mix the heap took {n} 1,000-byte values; a fresh one takes {fresh}"
    );
    common::assert_healthy(&st);
}

/// Overwrites with another size near full: at 60% full with 1,000-byte values, every key
/// rewritten with 1,300-byte values needs about 78% of the heap; no overwrite may fail.
#[test]
fn overwrites_with_another_size_near_full_never_fail() {
    let fresh = fresh_capacity(1000);
    let s = Seg::new("mix-over");
    let st = Store::create(&s.name, &opts()).unwrap();
    let n = fresh * 6 / 10;
    for i in 0..n {
        st.set(&key("k", i), &[2; 1000], Expiry::Never).unwrap();
    }
    for i in 0..n {
        if let Err(e) = st.set(&key("k", i), &[3; 1300], Expiry::Never) {
            panic!("overwrite {i} of {n} (heap 60% full of 1,000-byte values) failed: {e:?}");
        }
    }
    common::assert_healthy(&st);
}

/// A drifting mix: 10 phases, each rewriting every key with a size that grows from 200 B to
/// 4 KiB (the live set stays under half the heap); then a fill with the last size must reach
/// 90% of what a fresh segment stores of it.
#[test]
fn a_drifting_mix_still_fills_the_heap() {
    let last = 4000;
    let fresh = fresh_capacity(last);
    let s = Seg::new("mix-drift");
    let st = Store::create(&s.name, &opts()).unwrap();
    let keys = fresh * 4 / 10;
    for phase in 0..10u64 {
        let len = 200 + (phase * (last as u64 - 200) / 9) as usize;
        for i in 0..keys {
            // Every other phase deletes first, so some keys move by insert, some by overwrite.
            if phase % 2 == 1 {
                st.delete(&key("d", i)).unwrap();
            }
            if let Err(e) = st.set(&key("d", i), &vec![4; len + (i % 7) as usize], Expiry::Never) {
                panic!("phase {phase}, key {i} of {keys}, {len} B: {e:?}");
            }
        }
    }
    let n = keys + fill(&st, "f", last);
    assert!(
        n * 10 >= fresh * 9,
        "after the drift the heap holds {n} {last}-byte values; a fresh one {fresh}"
    );
    common::assert_healthy(&st);
}

/// A thread parked inside an operation while others churn through sizes (issue 13 item 4):
/// no write may fail `Full` while the segment has room. Pages retired while the operation
/// was parked used to wait for it to end (a grace period over every operation in flight), so
/// a third size found only retired pages and failed after its retries; now a parked
/// operation holds back at most the pages its journal names (heap.rs "Page reuse").
/// Parked after its view, inside a take (its journal naming the block), and before its
/// publishing CAS. Each phase stores 35% of the heap in one size, then deletes the phase
/// before it, so four sizes need every page twice over.
#[cfg(feature = "failpoints")]
#[test]
fn a_parked_operation_does_not_hold_back_page_reuse() {
    use gardenstate::pause_at_failpoint;
    let o = Options { capacity_bytes: 4 << 20, max_entries: 1 << 15, max_value: 4096, ..Options::default() };
    for at in ["update.after_view", "heap.take_after_journal", "update.before_publish"] {
        let s = Seg::new(&format!("mix-parked-{}", at.replace('.', "-")));
        let st = Store::create(&s.name, &o).unwrap();
        st.set(b"parked", &[1; 500], Expiry::Never).unwrap();
        let go = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            let parked = scope.spawn(|| {
                go.wait();
                st.set(b"parked", &[2; 900], Expiry::Never)
            });
            let pause = Release(pause_at_failpoint(at, 1, Some(parked.thread().id())));
            go.wait();
            pause.0.wait_reached();
            let mut before: Option<(String, u64)> = None;
            for (phase, len) in [200usize, 700, 1500, 3000, 300, 2000].into_iter().enumerate() {
                let tag = format!("p{phase}-");
                let keys = o.capacity_bytes * 35 / 100 / (len as u64 + 100);
                for i in 0..keys {
                    if let Err(e) = st.set(&key(&tag, i), &vec![3; len], Expiry::Never) {
                        panic!("parked at {at}: phase {phase} ({len} B), key {i} of {keys}: {e:?}");
                    }
                }
                if let Some((tag, n)) = before.replace((tag, keys)) {
                    for i in 0..n {
                        assert!(st.delete(&key(&tag, i)).unwrap());
                    }
                }
            }
            drop(pause);
            parked.join().unwrap().unwrap();
        });
        assert_eq!(st.get(b"parked").unwrap().unwrap().value, vec![2; 900]);
        common::assert_healthy(&st);
    }
}

/// Releases a parked thread when dropped, also when the test fails while it is parked (the
/// parked thread holds the pause too, so the pause's own drop would come only after it).
#[cfg(feature = "failpoints")]
struct Release(std::sync::Arc<gardenstate::FailpointPause>);

#[cfg(feature = "failpoints")]
impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The value `key` holds in the concurrent churn: every byte derived from the key.
fn churn_value(key: &[u8], len: usize) -> Vec<u8> {
    let seed = key.iter().fold(17u8, |a, &b| a.wrapping_mul(31).wrapping_add(b));
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// Pages change class under concurrent takes, touches and reads (heap.rs "Page reuse": the
/// journals are the hazards of reuse, a take re-reads the page word, `touch` journals its
/// view): two writers churn through sizes in phases (each stores 15% of the heap in one size,
/// then deletes its phase before), so pages are retired and reused all along, while a third
/// thread touches (a CAS of `R_EXPIRES` in place) and reads back 64 keys whose records sit
/// among them. No write fails, no read sees a byte of another record, `check` stays clean.
#[test]
fn pages_change_class_under_concurrent_takes_touches_and_reads() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let o = Options { capacity_bytes: 2 << 20, max_entries: 1 << 14, max_value: 4096, ..Options::default() };
    let s = Seg::new("mix-concurrent");
    let st = Store::create(&s.name, &o).unwrap();
    let sliding = Expiry::Sliding(Duration::from_secs(3600));
    let held: Vec<Vec<u8>> = (0..64).map(|i| key("held", i)).collect();
    for k in &held {
        st.set(k, &churn_value(k, 300 + k.len()), sliding).unwrap();
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writers: Vec<_> = [[200usize, 1500, 700, 3000, 400], [3000, 300, 2000, 900, 150]]
            .into_iter()
            .enumerate()
            .map(|(w, sizes)| {
                let st = &st;
                scope.spawn(move || {
                    let mut before: Option<(String, u64)> = None;
                    for (phase, len) in sizes.into_iter().enumerate() {
                        let tag = format!("w{w}p{phase}-");
                        let keys = o.capacity_bytes * 15 / 100 / (len as u64 + 100);
                        for i in 0..keys {
                            let k = key(&tag, i);
                            if let Err(e) = st.set(&k, &churn_value(&k, len), Expiry::Never) {
                                panic!("writer {w}, phase {phase} ({len} B), key {i} of {keys}: {e:?}");
                            }
                        }
                        if let Some((tag, n)) = before.replace((tag, keys)) {
                            for i in 0..n {
                                assert!(st.delete(&key(&tag, i)).unwrap());
                            }
                        }
                    }
                })
            })
            .collect();
        scope.spawn(|| {
            let mut rounds = 0u64;
            while !done.load(Ordering::Relaxed) || rounds == 0 {
                for k in &held {
                    assert!(st.touch(k, sliding).unwrap(), "a held key went away");
                    let v = st.get(k).unwrap().expect("a held key went away").value;
                    assert_eq!(v, churn_value(k, 300 + k.len()), "a read saw another record's bytes");
                }
                rounds += 1;
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    common::assert_healthy(&st);
}

/// `check` on a live segment (issue 21): with four writers churning keys through a dozen
/// value sizes (inserts, overwrites with another size, deletes), every check reports the
/// segment healthy. Before, one light writer made it report "DAMAGED: 1933 blocks in use are
/// neither published nor journaled" and advise destroying the segment.
#[test]
fn check_of_a_segment_under_churning_writers_never_reports_damage() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let seg = Seg::new("check-live");
    let st = Store::create(&seg.name, &Options { capacity_bytes: 16 << 20, max_entries: 20_000, ..opts() })
        .unwrap();
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    const CHECKS: usize = 25;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (st, stop, writes) = (&st, &stop, &writes);
            s.spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let k = key("c", (i * 7919) % 3000);
                    let len =
                        [16, 90, 200, 400, 700, 1000, 1500, 2500, 4000, 6000, 9000, 14000][(i % 12) as usize];
                    match i % 5 {
                        4 => drop(st.delete(&k).unwrap()),
                        _ => match st.set(&k, &vec![t as u8; len], Expiry::Never) {
                            Ok(_) | Err(Error::Full(_)) => {}
                            Err(e) => panic!("{e:?}"),
                        },
                    }
                    writes.fetch_add(1, Ordering::Relaxed);
                    i += 4;
                }
            });
        }
        let mut reports = Vec::new();
        for n in 0..CHECKS {
            // Each check runs while the writers move on (counted, not timed).
            let before = writes.load(Ordering::Relaxed);
            while writes.load(Ordering::Relaxed) < before + 200 {
                std::thread::yield_now();
            }
            let r = st.check();
            let damaged = !r.problems.is_empty();
            reports.push(r);
            if damaged {
                stop.store(true, Ordering::Relaxed);
                panic!("check {n} of a live, healthy segment reported damage: {:#?}", reports.last());
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let r = common::assert_healthy(&st);
    assert_eq!(r.in_flight, 0, "{r:#?}");
}
