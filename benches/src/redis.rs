//! Redis on loopback: a `redis-server` this harness starts on a free port (no persistence),
//! the `redis` crate's synchronous client, measured in the loopback shapes
//! (`servers::Loopback`): one unpipelined connection, then 2 connections pipelining 16
//! requests each.

use crate::report::{Memory, Section};
use crate::servers;
use crate::workload::{Clock, key, value};
use std::hint::black_box;

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

    let peer = servers::Loopback { system: "redis", cfg, clock, value_len, sessions };
    let mut out = vec![
        peer.unpipelined("get", |k| {
            let got: Vec<u8> = ::redis::cmd("GET").arg(&k[..]).query(&mut con).expect("redis GET");
            assert_eq!(got.len(), value_len);
            black_box(got);
        }),
        peer.unpipelined("set", |k| {
            let () = ::redis::cmd("SET").arg(&k[..]).arg(&v[..]).query(&mut con).expect("redis SET");
        }),
    ];
    for op in ["get", "set"] {
        out.push(peer.pipelined(op, connect, |con, keys| {
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
        }));
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
