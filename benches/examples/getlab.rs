//! Get-path lab: floor, get_into, meta_of and miss, interleaved over rounds in one process.
//! `cargo run --release -p gardenstate-benches --example getlab -- [SESSIONS] [ROUNDS] [OPS]`
use gardenstate_benches::floor;
use gardenstate_benches::gardenstate as gs;
use gardenstate_benches::workload::{Clock, Limit, Rng, SEED, Summary, key, run};
use std::hint::black_box;
use std::time::Duration;

fn main() {
    let a: Vec<u64> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let sessions = *a.first().unwrap_or(&1_000_000);
    let rounds = *a.get(1).unwrap_or(&5);
    let ops = *a.get(2).unwrap_or(&400_000);
    let len = 1024;
    let seg = gs::create(sessions, len).unwrap();
    let store = &seg.store;
    gs::fill(store, sessions, len);
    let clock = Clock::calibrate(Duration::from_millis(100));
    let buf = floor::buffer(store.info().segment_bytes);
    let mut rows: Vec<(&str, Vec<(f64, f64)>)> =
        ["floor", "get_into", "meta_of", "miss"].iter().map(|n| (*n, Vec::new())).collect();
    for r in 0..rounds {
        let seed = SEED ^ r;
        let f = floor::copies(&buf, len, Limit::Ops(ops), seed);
        let g = gs::random_ops(store, gs::Op::Get, sessions, len, Limit::Ops(ops), seed);
        let mut rng = Rng::new(seed);
        let m = run(
            Limit::Ops(ops),
            || key(rng.below(sessions)),
            |k| {
                black_box(store.meta_of(&k).unwrap().unwrap());
            },
        );
        let mut rng = Rng::new(seed);
        let mut b = vec![0u8; len];
        let x = run(
            Limit::Ops(ops),
            || key(sessions + rng.below(sessions)),
            |k| {
                black_box(store.get_into(&k, &mut b).unwrap());
            },
        );
        for (i, run) in [f, g, m, x].into_iter().enumerate() {
            let s = Summary::of(&clock, &[run]);
            rows[i].1.push((s.p50_ns, s.p99_ns));
        }
        let fl = rows[0].1[r as usize].0;
        let gt = rows[1].1[r as usize].0;
        eprintln!(
            "round {r}: floor {:.0} get {:.0} ({:.2}x) meta {:.0} miss {:.0}",
            fl,
            gt,
            gt / fl,
            rows[2].1[r as usize].0,
            rows[3].1[r as usize].0
        );
    }
    for (name, v) in &rows {
        let mut p50: Vec<f64> = v.iter().map(|x| x.0).collect();
        let mut p99: Vec<f64> = v.iter().map(|x| x.1).collect();
        p50.sort_by(f64::total_cmp);
        p99.sort_by(f64::total_cmp);
        println!(
            "{name:10} p50 median {:.0} (min {:.0}) p99 median {:.0}",
            p50[p50.len() / 2],
            p50[0],
            p99[p99.len() / 2]
        );
    }
    let ratios: Vec<f64> = rows[1].1.iter().zip(&rows[0].1).map(|(g, f)| g.0 / f.0).collect();
    let mut r2 = ratios.clone();
    r2.sort_by(f64::total_cmp);
    println!(
        "get/floor per round {:?} median {:.2}",
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>(),
        r2[r2.len() / 2]
    );
}
