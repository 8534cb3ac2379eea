//! Single-process latency of gardenstate get and set against the memory floor, measured in the
//! same run: `cargo run --release -p gardenstate-benches --bin engine_micro -- [sessions] [value_bytes]`.
//!
//! The floor is a random `value_bytes` copy out of a buffer as large as the segment's heap:
//! what this machine's memory system allows for a read that misses every cache, which is what a
//! get of a random session among a million is.

use gardenstate::{Expiry, Options, Store};
use std::hint::black_box;
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(i: u64) -> [u8; 32] {
    let mut k = [b'0'; 32];
    let hex = format!("sess-{:016x}{:011x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
    k.copy_from_slice(&hex.as_bytes()[..32]);
    k
}

/// Median and p99 of per-batch mean latencies (ns/op): batches amortize the clock read.
fn measure(ops: u64, batch: u64, mut op: impl FnMut()) -> (f64, f64) {
    let mut samples = Vec::new();
    for _ in 0..ops / batch {
        let t = Instant::now();
        for _ in 0..batch {
            op();
        }
        samples.push(t.elapsed().as_nanos() as f64 / batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sessions = args.first().copied().unwrap_or(1_000_000);
    let value_len = args.get(1).copied().unwrap_or(1024) as usize;
    let name = format!("gds-bench-micro-{}", std::process::id());
    let opts = Options {
        capacity_bytes: sessions * (value_len as u64 + 200) * 5 / 4,
        max_entries: sessions,
        max_key: 64,
        max_value: (value_len as u64).max(4096),
        ..Options::default()
    };
    let _ = Store::destroy(&name);
    let store = Store::create(&name, &opts).expect("create segment");
    let value = vec![0xa5u8; value_len];
    let t = Instant::now();
    for i in 0..sessions {
        store.set(&key(i), &value, Expiry::Sliding(std::time::Duration::from_secs(1200))).expect("fill");
    }
    let fill = t.elapsed();
    let info = store.info();
    let stats = store.stats();
    println!(
        "filled {sessions} sessions of {value_len} B in {fill:.2?}; segment {} MiB, heap used {} MiB ({:.2}x key+value bytes)",
        info.segment_bytes >> 20,
        stats.bytes_used >> 20,
        info.segment_bytes as f64 / (sessions as f64 * (32 + value_len) as f64)
    );

    let ops = 2_000_000u64.min(sessions * 4);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let heap = vec![1u8; info.heap_bytes as usize];
    let mut out = vec![0u8; value_len];
    let slots = (heap.len() - value_len) as u64 / 64;
    let floor = measure(ops, 100, || {
        let at = (rng.next() % slots * 64) as usize;
        out.copy_from_slice(&heap[at..at + value_len]);
        black_box(&out);
    });
    // The same copies, each addressed through the previous one's data, so they cannot overlap:
    // the latency floor a lookup chain (index slot, then record) is built from.
    let floor_dep = measure(ops, 100, || {
        let at = ((rng.next() ^ out[0] as u64 ^ 1) % slots * 64) as usize;
        out.copy_from_slice(&heap[at..at + value_len]);
        black_box(&out);
    });
    drop(heap);
    let mut buf = vec![0u8; value_len];
    let get = measure(ops, 100, || {
        let k = key(rng.next() % sessions);
        black_box(store.get_into(&k, &mut buf).expect("get").expect("hit"));
    });
    let set = measure(ops, 100, || {
        let k = key(rng.next() % sessions);
        black_box(store.set(&k, &value, Expiry::Sliding(std::time::Duration::from_secs(1200))).expect("set"));
    });
    let miss = measure(ops, 100, || {
        let k = key(sessions + rng.next() % sessions);
        black_box(store.get_into(&k, &mut buf).expect("get"));
    });
    println!("{:<28}{:>12}{:>12}{:>14}", "operation", "p50 ns/op", "p99 ns/op", "p50 / floor");
    for (what, (p50, p99)) in [
        ("floor: random copy", floor),
        ("floor: dependent copy", floor_dep),
        ("get (hit)", get),
        ("set (overwrite)", set),
        ("get (miss)", miss),
    ] {
        println!("{what:<28}{p50:>12.0}{p99:>12.0}{:>14.2}", p50 / floor.0);
    }
    drop(store);
    let _ = Store::destroy(&name);
}
