//! What every system is measured with: the same keys, values, random order, clock and
//! percentile method.
//!
//! - Keys are 32 bytes, `hex(i * φ) ++ hex(i)`, made in registers (no allocation) before
//!   the operation's clock starts.
//! - Keys are drawn uniformly at random (xorshift, one seed for every system) among the
//!   sessions loaded, so every operation touches a cold session, as a web host's does.
//! - Latency: one timestamp before and one after every operation (`lfence; rdtsc; lfence`
//!   on x86-64, calibrated against the monotonic clock once per run; `Instant` elsewhere).
//!   The fences make each operation finish its memory reads inside its own sample and keep
//!   consecutive operations from overlapping, as they do not overlap in a web worker that
//!   does other work between two session accesses. The timer's own cost
//!   (`Clock::overhead_ns`) is included in every sample, not subtracted, the same for every
//!   system. Throughput is operations over the same loop's wall time, so it includes making
//!   the keys and the fenced timestamps (conservative for the in-process systems).

use serde::Serialize;
use std::time::{Duration, Instant};

/// Length of every key.
pub const KEY_LEN: usize = 32;
/// Seed of the random key order, the same for every system.
pub const SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// xorshift64: cheap enough not to show in the latency of a cache miss.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `0..n` (n > 0; the modulo bias is negligible for n ≪ 2^64).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The key of session `i`.
#[inline]
pub fn key(i: u64) -> [u8; KEY_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut k = [0u8; KEY_LEN];
    let a = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for j in 0..16 {
        k[j] = HEX[((a >> (60 - 4 * j)) & 15) as usize];
        k[16 + j] = HEX[((i >> (60 - 4 * j)) & 15) as usize];
    }
    k
}

/// The value written for every session: `len` bytes, not all equal (no trivial compression).
pub fn value(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect()
}

/// A visiting order of `0..n` touching every index once: `i * step mod n`, with a step
/// coprime to `n` (for deletes, which must hit distinct sessions).
pub fn permutation_step(n: u64) -> u64 {
    let mut step = (n as f64 * 0.618_033_988_7) as u64 | 1;
    while gcd(step, n) != 1 {
        step += 2;
    }
    step.max(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Timestamps cheap enough to take around every operation.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    ns_per_tick: f64,
    /// Median cost of one timestamp pair, included in every sample.
    pub overhead_ns: f64,
    /// Which counter is read.
    pub source: &'static str,
}

/// A timestamp that waits for every earlier instruction to finish first (`lfence; rdtsc;
/// lfence`), so an operation's loads are counted in its own time and the next operation
/// does not start early. Without the fences `rdtsc` runs ahead of outstanding cache misses
/// and a memory-bound operation looks several times faster than it is.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_lfence, _rdtsc};
        #[allow(unused_unsafe)]
        // SAFETY: `lfence` and `rdtsc` have no preconditions on x86-64 (SSE2 is baseline)
        // and touch no memory.
        unsafe {
            _mm_lfence();
            let t = _rdtsc();
            _mm_lfence();
            t
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

impl Clock {
    /// Calibrates the tick rate against `Instant` over `over`.
    pub fn calibrate(over: Duration) -> Clock {
        let (t0, c0) = (Instant::now(), ticks());
        std::thread::sleep(over);
        let (t1, c1) = (Instant::now(), ticks());
        let ns_per_tick = (t1 - t0).as_nanos() as f64 / (c1 - c0).max(1) as f64;
        let mut pairs: Vec<u64> = (0..10_001)
            .map(|_| {
                let a = ticks();
                let b = ticks();
                b.wrapping_sub(a)
            })
            .collect();
        pairs.sort_unstable();
        let source = if cfg!(target_arch = "x86_64") { "lfence+rdtsc" } else { "Instant" };
        Clock { ns_per_tick, overhead_ns: pairs[pairs.len() / 2] as f64 * ns_per_tick, source }
    }

    pub fn ns(&self, ticks: u64) -> f64 {
        ticks as f64 * self.ns_per_tick
    }
}

/// When a measured loop stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Ops(u64),
    For(Duration),
}

/// The raw result of one measured loop.
#[derive(Debug, Clone)]
pub struct Run {
    /// Latency of each operation in ticks (at most `MAX_SAMPLES`; throughput counts all).
    pub samples: Vec<u64>,
    pub ops: u64,
    pub elapsed: Duration,
}

impl Run {
    /// Loops run one after another by one worker, as one run: their samples, operations and
    /// time added up.
    pub fn sequential(runs: Vec<Run>) -> Run {
        let mut all = Run { samples: Vec::new(), ops: 0, elapsed: Duration::ZERO };
        for r in runs {
            all.samples.extend(r.samples);
            all.ops += r.ops;
            all.elapsed += r.elapsed;
        }
        all
    }
}

/// Samples kept per loop (32 MiB): beyond that, operations are counted but not timed.
pub const MAX_SAMPLES: usize = 4 << 20;

/// Runs `op(next())` until `limit`, timing every operation; `next` (making the key) is
/// outside the timed region.
#[inline(never)]
pub fn run<K>(limit: Limit, mut next: impl FnMut() -> K, mut op: impl FnMut(K)) -> Run {
    let (cap, end) = match limit {
        Limit::Ops(n) => (n as usize, None),
        Limit::For(d) => (MAX_SAMPLES, Some(Instant::now() + d)),
    };
    let mut samples = Vec::with_capacity(cap.min(MAX_SAMPLES));
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        match (limit, end) {
            (Limit::Ops(n), _) if ops >= n => break,
            (_, Some(end)) if ops % 256 == 0 && Instant::now() >= end => break,
            _ => {}
        }
        let k = next();
        let t0 = ticks();
        op(k);
        let t1 = ticks();
        if samples.len() < MAX_SAMPLES {
            samples.push(t1.wrapping_sub(t0));
        }
        ops += 1;
    }
    Run { samples, ops, elapsed: start.elapsed() }
}

/// Percentiles and throughput of one measured loop, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ops: u64,
    pub seconds: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub p999_ns: f64,
    pub mean_ns: f64,
    pub ops_per_sec: f64,
    /// The latency distribution: (latency ns, fraction of operations at or below it), at
    /// 101 quantiles from 0 to 1 with the tail refined (for the CDF plot).
    pub cdf: Vec<(f64, f64)>,
}

impl Summary {
    /// Summary of `runs` run concurrently (by threads or processes): latencies pooled,
    /// throughput the sum of each runner's rate.
    pub fn of(clock: &Clock, runs: &[Run]) -> Summary {
        let mut all: Vec<u64> = runs.iter().flat_map(|r| r.samples.iter().copied()).collect();
        all.sort_unstable();
        let ops = runs.iter().map(|r| r.ops).sum();
        let rate = runs.iter().map(|r| r.ops as f64 / r.elapsed.as_secs_f64().max(1e-9)).sum();
        let seconds = runs.iter().map(|r| r.elapsed.as_secs_f64()).fold(0.0, f64::max);
        Summary::from_sorted_ns(&all.iter().map(|&t| clock.ns(t)).collect::<Vec<_>>(), ops, seconds, rate)
    }

    /// Summary of latencies already in nanoseconds and sorted.
    pub fn from_sorted_ns(ns: &[f64], ops: u64, seconds: f64, ops_per_sec: f64) -> Summary {
        let q = |f: f64| -> f64 {
            if ns.is_empty() {
                return f64::NAN;
            }
            ns[((ns.len() - 1) as f64 * f).round() as usize]
        };
        let mut fractions: Vec<f64> = (0..=100).map(|i| i as f64 / 100.0).collect();
        fractions.extend([0.995, 0.999, 0.9995, 0.9999]);
        fractions.sort_by(f64::total_cmp);
        Summary {
            ops,
            seconds,
            p50_ns: q(0.5),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            mean_ns: ns.iter().sum::<f64>() / ns.len().max(1) as f64,
            ops_per_sec,
            cdf: fractions.into_iter().map(|f| (q(f), f)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_fixed_length() {
        let a = key(1);
        let b = key(2);
        assert_ne!(a, b);
        assert!(a.iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn permutation_visits_every_index_once() {
        for n in [1u64, 2, 10, 97, 1000] {
            let step = permutation_step(n);
            let mut seen: Vec<u64> = (0..n).map(|i| i * step % n).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let ns: Vec<f64> = (1..=1000).map(f64::from).collect();
        let s = Summary::from_sorted_ns(&ns, 1000, 1.0, 1000.0);
        assert_eq!(s.p50_ns, 501.0);
        assert_eq!(s.p99_ns, 990.0);
        assert_eq!(s.cdf.first().unwrap().0, 1.0);
        assert_eq!(s.cdf.last().unwrap().0, 1000.0);
    }
}
