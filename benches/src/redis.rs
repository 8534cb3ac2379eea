//! Redis on loopback: a `redis-server` this harness starts on a free port (no persistence),
//! the `redis` crate's synchronous client. One unpipelined connection (a web worker's
//! round trip per request), then 2 connections on 2 threads pipelining 16 requests each
//! (the most a loopback Redis serves on this machine). A pipelined request's latency is its
//! batch's round trip.

use crate::report::{Measurement, Memory, Section};
use crate::servers;
use crate::workload::{Clock, KEY_LEN, Limit, Rng, Run, SEED, Summary, key, run, value};
use std::hint::black_box;

pub const PIPELINE: u32 = 16;

pub fn bench(cfg: &crate::Config, clock: &Clock, value_len: usize, sessions: u64) -> Result<Section, String> {
    let bin = servers::ensure("redis-server", "redis-server", cfg.install)?;
    let server = servers::start(&bin, |port| {
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ]
        .map(String::from)
        .to_vec()
    })?;
    let client =
        ::redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).map_err(|e| e.to_string())?;
    let connect = || client.get_connection().map_err(|e| format!("redis: {e}"));
    let mut con = connect()?;
    let v = value(value_len);
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(1000) {
        let mut p = ::redis::pipe();
        for &i in chunk {
            p.cmd("SET").arg(&key(i)[..]).arg(&v[..]).ignore();
        }
        p.query::<()>(&mut con).map_err(|e| format!("redis fill: {e}"))?;
    }

    let mut out = Vec::new();
    let m = |op, workers, pipeline, runs: &[Run]| {
        Measurement::new(
            "redis",
            op,
            value_len,
            sessions,
            workers,
            "connection",
            pipeline,
            Summary::of(clock, runs),
        )
    };
    let mut rng = Rng::new(SEED);
    let get = run(
        Limit::Ops(cfg.net_ops),
        || key(rng.below(sessions)),
        |k| {
            let got: Vec<u8> = ::redis::cmd("GET").arg(&k[..]).query(&mut con).expect("redis GET");
            assert_eq!(got.len(), value_len);
            black_box(got);
        },
    );
    out.push(m("get", 1, 1, &[get]));
    let mut rng = Rng::new(SEED);
    let set = run(
        Limit::Ops(cfg.net_ops),
        || key(rng.below(sessions)),
        |k| {
            let () = ::redis::cmd("SET").arg(&k[..]).arg(&v[..]).query(&mut con).expect("redis SET");
        },
    );
    out.push(m("set", 1, 1, &[set]));

    for op in ["get", "set"] {
        let runs: Vec<Run> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2u64)
                .map(|t| {
                    let mut con = connect();
                    let v = &v;
                    s.spawn(move || {
                        let con = con.as_mut().expect("redis connection");
                        let mut rng = Rng::new(SEED ^ t.wrapping_mul(0x9e37));
                        let mut r = run(
                            Limit::For(cfg.window),
                            || {
                                std::array::from_fn::<[u8; KEY_LEN], { PIPELINE as usize }, _>(|_| {
                                    key(rng.below(sessions))
                                })
                            },
                            |keys| {
                                let mut p = ::redis::pipe();
                                for k in &keys {
                                    if op == "get" {
                                        p.cmd("GET").arg(&k[..]);
                                    } else {
                                        p.cmd("SET").arg(&k[..]).arg(&v[..]).ignore();
                                    }
                                }
                                if op == "get" {
                                    let got: Vec<Vec<u8>> = p.query(con).expect("redis pipelined GET");
                                    black_box(got);
                                } else {
                                    p.query::<()>(con).expect("redis pipelined SET");
                                }
                            },
                        );
                        r.ops *= PIPELINE as u64;
                        r
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("redis client thread")).collect()
        });
        out.push(m(op, 2, PIPELINE, &runs));
    }

    let info: String = ::redis::cmd("INFO").arg("memory").query(&mut con).map_err(|e| e.to_string())?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Section {
        detail: format!("{} on loopback, redis crate (sync)", servers::version(&bin)),
        measurements: out,
        memory: vec![Memory::new("redis", value_len, sessions, "used_memory (INFO)", used)],
        scaling: Vec::new(),
    })
}
