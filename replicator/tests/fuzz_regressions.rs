//! Replays the fuzzers' inputs on stable, through the same target bodies the cargo-fuzz
//! targets run (`gardenstate_replicator::fuzzing`):
//!
//! - every file in `fuzz/regressions/<target>/` (inputs that once failed: each must pass now)
//!   and `fuzz/corpus/<target>/` (the small seed corpus), plus the built-in seeds;
//! - a deterministic mutation smoke: a seeded PRNG mutates the corpus into a few thousand
//!   inputs per target, bounded in time, so CI exercises the decoders without nightly or
//!   libFuzzer. `GDS_FUZZ_SEED` picks another seed, `GDS_FUZZ_SMOKE_SECS` another time budget.
//!
//! `cargo test -p gardenstate-replicator --test fuzz_regressions -- --ignored` rewrites the
//! seed corpus files from `fuzzing::seeds`.

use gardenstate::fuzzing::{self as engine_fuzzing, Rng};
use gardenstate_replicator::fuzzing;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// A target body.
type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("frame", fuzzing::frame),
    ("snapshot", fuzzing::snapshot),
    ("handshake", fuzzing::handshake),
    ("units", fuzzing::units),
    ("config", fuzzing::config),
    ("sealed", fuzzing::sealed),
];

/// Runs `f` on each input, collecting every failure (with the input's name) before failing.
fn replay(target: &str, f: Target, inputs: &[(String, Vec<u8>)]) {
    engine_fuzzing::replay(target, inputs, |b| {
        catch_unwind(AssertUnwindSafe(|| f(b))).map_err(engine_fuzzing::panic_text)
    });
}

/// The saved inputs of `target` (regressions first, sorted by name), then the built-in seeds.
fn all_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut inputs = engine_fuzzing::saved_inputs(target);
    for (i, s) in fuzzing::seeds(target).into_iter().enumerate() {
        inputs.push((format!("fuzzing::seeds(\"{target}\")[{i}]"), s));
    }
    inputs
}

#[test]
fn frame_saved_inputs() {
    replay("frame", fuzzing::frame, &all_inputs("frame"));
}

#[test]
fn snapshot_saved_inputs() {
    replay("snapshot", fuzzing::snapshot, &all_inputs("snapshot"));
}

#[test]
fn sealed_saved_inputs() {
    replay("sealed", fuzzing::sealed, &all_inputs("sealed"));
}

#[test]
fn handshake_saved_inputs() {
    replay("handshake", fuzzing::handshake, &all_inputs("handshake"));
}

#[test]
fn units_saved_inputs() {
    replay("units", fuzzing::units, &all_inputs("units"));
}

#[test]
fn config_saved_inputs() {
    replay("config", fuzzing::config, &all_inputs("config"));
}

/// One to four libFuzzer-style mutations of `input` (`others` for splicing).
fn mutate(rng: &mut Rng, input: &[u8], others: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len());
        match rng.below(8) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = rng.next_u64() as u8,
            2 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(at.min(v.len())..at.min(v.len()), bytes);
            }
            3 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            4 => v.truncate(rng.below(v.len() + 1)),
            5 if v.len() >= 4 => {
                // An "interesting" little-endian word.
                let vals = [0u32, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, u32::MAX, 0x4000_0000];
                let x = vals[rng.below(vals.len())].to_le_bytes();
                let at = at.min(v.len() - 4);
                let w = 1 + rng.below(4);
                v[at..at + w].copy_from_slice(&x[..w]);
            }
            6 if !others.is_empty() => {
                let o = &others[rng.below(others.len())].1;
                let from = rng.below(o.len());
                let end = (from + rng.below(64)).min(o.len());
                v.splice(at.min(v.len())..at.min(v.len()), o[from..end].iter().copied());
            }
            _ if !v.is_empty() => v[0] = rng.next_u64() as u8, // another mode byte
            _ => v.push(rng.next_u64() as u8),
        }
    }
    v
}

fn smoke_seed() -> u64 {
    std::env::var("GDS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed)
}

fn smoke_budget() -> Duration {
    let secs = std::env::var("GDS_FUZZ_SMOKE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// A deterministic mutation run per target: up to 5,000 inputs or the time budget.
#[test]
fn mutation_smoke() {
    let seed = smoke_seed();
    println!("GDS_FUZZ_SEED={seed}");
    let mut failures = Vec::new();
    for (target, f) in TARGETS {
        let corpus = all_inputs(target);
        let mut rng = Rng(seed ^ target.len() as u64);
        let t0 = Instant::now();
        let mut n = 0;
        while n < 5_000 && t0.elapsed() < smoke_budget() {
            let base = &corpus[rng.below(corpus.len())].1;
            let input = mutate(&mut rng, base, &corpus);
            n += 1;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&input))) {
                let why = engine_fuzzing::panic_text(p);
                failures.push(format!("{target}: input #{n} {input:02x?}: {why}"));
                break;
            }
        }
        println!("{target}: {n} mutated inputs in {:?}", t0.elapsed());
    }
    assert!(failures.is_empty(), "GDS_FUZZ_SEED={seed}:\n{}", failures.join("\n"));
}

/// Rewrites `fuzz/corpus/<target>/seed-N` from `fuzzing::seeds` (run by hand).
#[test]
#[ignore = "writes the seed corpus files; run by hand after changing fuzzing::seeds"]
fn write_seed_corpus() {
    for (target, _) in TARGETS {
        let dir = engine_fuzzing::fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in fuzzing::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
}
