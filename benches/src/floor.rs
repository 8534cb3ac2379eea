//! The floor: what this machine's memory allows for the work a get does at the least.
//!
//! A get of a random session among a million copies its value out of memory no cache holds.
//! The floor does only that: copies of `value` bytes from random 64-byte-aligned offsets
//! of a buffer as large as the gardenstate segment it is compared with, in the same run, timed
//! the same way (fenced timestamps, so copies do not overlap each other). The 2-thread run
//! is the ceiling for 2-process scaling.

use crate::workload::{Limit, Rng, Run, SEED, run};
use std::hint::black_box;

/// A buffer of `bytes`, every page touched (so no first-touch faults are measured).
pub fn buffer(bytes: u64) -> Vec<u8> {
    vec![1u8; bytes as usize]
}

/// Random independent copies of `len` bytes out of `buf`.
pub fn copies(buf: &[u8], len: usize, limit: Limit, seed: u64) -> Run {
    let slots = ((buf.len() - len) / 64) as u64;
    let mut rng = Rng::new(seed);
    let mut out = vec![0u8; len];
    run(
        limit,
        || (rng.below(slots) * 64) as usize,
        |at| {
            out.copy_from_slice(&buf[at..at + len]);
            black_box(&mut out);
        },
    )
}

/// Two threads copying at once for `limit` (the memory system's own 2-way scaling).
pub fn copies_two_threads(buf: &[u8], len: usize, limit: Limit) -> [Run; 2] {
    std::thread::scope(|s| {
        let a = s.spawn(|| copies(buf, len, limit, SEED));
        let b = s.spawn(|| copies(buf, len, limit, SEED ^ 0x5555_5555));
        [a.join().expect("floor thread"), b.join().expect("floor thread")]
    })
}

/// The control for every 2-worker figure: pure computation (no memory traffic), one loop
/// per thread. On an idle 2-CPU machine two threads do ~2x one; less means the other CPU is
/// busy with something else (a shared, noisy machine), and every 2-worker ratio of the run
/// is capped by it.
pub fn spin(limit: Limit, seed: u64) -> Run {
    let mut rng = Rng::new(seed);
    run(
        limit,
        || (),
        |()| {
            for _ in 0..64 {
                black_box(rng.next_u64());
            }
        },
    )
}

/// `spin` on two threads at once.
pub fn spin_two_threads(limit: Limit) -> [Run; 2] {
    std::thread::scope(|s| {
        let a = s.spawn(|| spin(limit, SEED));
        let b = s.spawn(|| spin(limit, SEED ^ 1));
        [a.join().expect("spin thread"), b.join().expect("spin thread")]
    })
}
