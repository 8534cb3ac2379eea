//! Replays the `attach` fuzzer's inputs on stable, through the same body the cargo-fuzz
//! target runs (`gardenstate::fuzzing::attach`: write a segment file, attach, run every
//! operation; see its module comment):
//!
//! - every file in `fuzz/regressions/attach/` (inputs that once failed) and
//!   `fuzz/corpus/attach/` (the small seed corpus), plus the built-in seeds;
//! - a deterministic mutation smoke: a seeded PRNG mutates the corpus (mode bytes, word edits,
//!   file lengths) into up to 2,000 inputs, bounded in time. `GDS_FUZZ_SEED` picks another
//!   seed, `GDS_FUZZ_SMOKE_SECS` another time budget.
//!
//! Runs in this process: a panic is caught and reported with its input; a crash (a signal)
//! kills the test binary, which fails the run all the same. A watchdog fails an input that
//! takes more than 20 s (a hang).
//!
//! `cargo test -p gardenstate --test fuzz_regressions -- --ignored` rewrites the seed corpus.

use gardenstate::fuzzing::{self, Rng};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The saved inputs of `target`, then the built-in seeds.
fn saved(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = fuzzing::saved_inputs(target);
    for (i, s) in fuzzing::seeds().into_iter().enumerate() {
        out.push((format!("fuzzing::seeds()[{i}]"), s));
    }
    out
}

/// Runs `attach` on `input`, on a thread with a watchdog: a panic or a hang is `Err`.
fn run(input: &[u8]) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let data = input.to_vec();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(|| fuzzing::attach(&data))).map_err(fuzzing::panic_text);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(r) => r,
        Err(_) => Err("HANG: no result after 20 s".into()),
    }
}

#[test]
fn attach_saved_inputs() {
    fuzzing::replay("attach", &saved("attach"), run);
}

/// Word indexes worth aiming at: the header, the feed, the clients, the index, the page table
/// and bitmaps, and the first records (the template is one small segment).
fn word_index(rng: &mut Rng, words: usize) -> u32 {
    let w = match rng.below(4) {
        0 => rng.below(64),
        1 => 512 + rng.below(1024),
        _ => rng.below(words),
    };
    w as u32
}

fn value(rng: &mut Rng) -> u64 {
    let vals = [0, 1, u64::MAX, 1 << 63, u32::MAX as u64, 0x5555_5555_5555_5555];
    match rng.below(3) {
        0 => vals[rng.below(vals.len())],
        1 => rng.next_u64() & 0xffff,
        _ => rng.next_u64(),
    }
}

fn mutate(rng: &mut Rng, input: &[u8], words: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    if v.is_empty() {
        v.push(1);
    }
    match rng.below(6) {
        0 => v[0] = rng.next_u64() as u8,
        1 if v.len() > 1 => {
            let at = 1 + rng.below(v.len() - 1);
            v[at] ^= 1 << rng.below(8);
        }
        2 if v.len() > 1 => v.truncate(1 + rng.below(v.len() - 1)),
        _ => {
            // Append word edits.
            for _ in 0..1 + rng.below(4) {
                v.extend_from_slice(&word_index(rng, words).to_le_bytes());
                v.extend_from_slice(&value(rng).to_le_bytes());
            }
        }
    }
    v
}

/// A deterministic mutation run: up to 2,000 inputs or the time budget.
#[test]
fn attach_mutation_smoke() {
    let seed = std::env::var("GDS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let secs = std::env::var("GDS_FUZZ_SMOKE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    println!("GDS_FUZZ_SEED={seed}");
    let corpus = saved("attach");
    let words = fuzzing::template().len() / 8;
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let mut n = 0;
    while n < 2_000 && t0.elapsed() < Duration::from_secs_f64(secs) {
        let base = &corpus[rng.below(corpus.len())].1;
        let input = mutate(&mut rng, base, words);
        n += 1;
        if let Err(e) = run(&input) {
            panic!("GDS_FUZZ_SEED={seed}: attach input #{n} {input:02x?}: {e}");
        }
    }
    println!("attach: {n} mutated inputs in {:?}", t0.elapsed());
}

/// Rewrites `fuzz/corpus/attach/seed-N` from `fuzzing::seeds` (run by hand).
#[test]
#[ignore = "writes the seed corpus files; run by hand after changing fuzzing::seeds"]
fn write_seed_corpus() {
    let dir = fuzzing::fuzz_dir().join("corpus").join("attach");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, s) in fuzzing::seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
    }
}
