//! The in-process ceiling: a concurrent hash map (`dashmap`) in this process's heap, the
//! same keys and values, values copied out on get and into a new allocation on set. No
//! sharing between processes, no crash safety, no expiry: what a shared segment competes with.

use crate::report::{Measurement, Scaling, Section};
use crate::workload::{Clock, KEY_LEN, Limit, Rng, Run, SEED, Summary, key, run, value};
use dashmap::DashMap;
use std::hint::black_box;

type Map = DashMap<[u8; KEY_LEN], Box<[u8]>>;

fn gets(map: &Map, sessions: u64, value_len: usize, limit: Limit, seed: u64) -> Run {
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; value_len];
    run(
        limit,
        || key(rng.below(sessions)),
        |k| {
            buf.copy_from_slice(&map.get(&k).expect("a loaded session"));
            black_box(&buf);
        },
    )
}

pub fn bench(cfg: &crate::Config, clock: &Clock, value_len: usize, sessions: u64) -> Result<Section, String> {
    let map = Map::with_capacity(sessions as usize);
    let v = value(value_len);
    for i in 0..sessions {
        map.insert(key(i), v.clone().into_boxed_slice());
    }
    let m = |op, workers, runs: &[Run]| {
        Measurement::new("dashmap", op, value_len, sessions, workers, "thread", 1, Summary::of(clock, runs))
    };
    let get = gets(&map, sessions, value_len, Limit::Ops(cfg.ops), SEED);
    let mut rng = Rng::new(SEED);
    let set = run(
        Limit::Ops(cfg.ops),
        || key(rng.below(sessions)),
        |k| {
            black_box(map.insert(k, v.as_slice().into()));
        },
    );
    let one = gets(&map, sessions, value_len, Limit::For(cfg.window), SEED);
    let two: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u64)
            .map(|t| {
                let map = &map;
                s.spawn(move || {
                    gets(map, sessions, value_len, Limit::For(cfg.window), SEED ^ t.wrapping_mul(0x5555_5555))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("dashmap thread")).collect()
    });
    let one_rate = Summary::of(clock, &[one]).ops_per_sec;
    let two_m = m("get", 2, &two);
    Ok(Section {
        detail: "dashmap 6 in this process (in-process ceiling; no sharing across processes)".into(),
        scaling: vec![Scaling {
            system: "dashmap".into(),
            op: "get".into(),
            value_bytes: value_len,
            worker_kind: "thread",
            one_ops_per_sec: one_rate,
            two_ops_per_sec: two_m.summary.ops_per_sec,
            ratio: two_m.summary.ops_per_sec / one_rate,
        }],
        measurements: vec![m("get", 1, &[get]), m("set", 1, &[set]), two_m],
        memory: Vec::new(),
    })
}
