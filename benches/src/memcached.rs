//! memcached on loopback: a `memcached` this harness starts on a free port (`-m 2048`),
//! spoken to with a minimal text-protocol client (below), measured in the loopback shapes
//! (`servers::Loopback`), as Redis: one unpipelined connection, then 2 connections with 16
//! requests in flight each (gets as one 16-key `get`, memcached's own batching; sets
//! pipelined).

use crate::report::{Memory, Section};
use crate::servers::{self, PIPELINE};
use crate::workload::{Clock, key, value};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// A text-protocol connection: requests are written whole, replies read through a buffer.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    req: Vec<u8>,
    line: String,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let w = TcpStream::connect(("127.0.0.1", port))?;
        w.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::with_capacity(1 << 16, w.try_clone()?),
            w,
            req: Vec::new(),
            line: String::new(),
        })
    }

    fn push_get(&mut self, k: &[u8]) {
        self.req.extend_from_slice(b"get ");
        self.req.extend_from_slice(k);
        self.req.extend_from_slice(b"\r\n");
    }

    fn push_set(&mut self, k: &[u8], v: &[u8], noreply: bool) {
        self.req.extend_from_slice(b"set ");
        self.req.extend_from_slice(k);
        self.req.extend_from_slice(
            format!(" 0 0 {}{}\r\n", v.len(), if noreply { " noreply" } else { "" }).as_bytes(),
        );
        self.req.extend_from_slice(v);
        self.req.extend_from_slice(b"\r\n");
    }

    fn send(&mut self) -> std::io::Result<()> {
        self.w.write_all(&self.req)?;
        self.req.clear();
        Ok(())
    }

    fn read_line(&mut self) -> std::io::Result<&str> {
        self.line.clear();
        self.r.read_line(&mut self.line)?;
        Ok(self.line.trim_end())
    }

    /// Reads one get reply into `buf`; returns the value length (None on a miss).
    fn read_get(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
        let got = self.read_value(buf)?;
        if got.is_some() {
            self.expect("END")?;
        }
        Ok(got)
    }

    /// Reads one `VALUE` block into `buf` (its length), or the closing `END` (None).
    fn read_value(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
        let line = self.read_line()?;
        if line == "END" {
            return Ok(None);
        }
        let len: usize = line
            .strip_prefix("VALUE ")
            .and_then(|l| l.split(' ').nth(2))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("memcached get: {line:?}")))?;
        buf.resize(len + 2, 0);
        self.r.read_exact(buf)?;
        Ok(Some(len))
    }

    fn expect(&mut self, want: &str) -> std::io::Result<()> {
        let got = self.read_line()?;
        if got == want {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("memcached: {got:?}, expected {want}")))
        }
    }
}

pub fn bench(cfg: &crate::Config, clock: &Clock, value_len: usize, sessions: u64) -> Result<Section, String> {
    let bin = servers::ensure("memcached", "memcached", cfg.install)?;
    let server = servers::start(&bin, |port| {
        let mut a =
            ["-p", &port.to_string(), "-l", "127.0.0.1", "-U", "0", "-m", "2048"].map(String::from).to_vec();
        if std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        {
            a.extend(["-u".into(), "root".into()]); // memcached refuses to run as root without it
        }
        a
    })?;
    let io = |e: std::io::Error| format!("memcached: {e}");
    let mut con = Conn::open(server.port).map_err(io)?;
    let v = value(value_len);
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(1000) {
        for &i in chunk {
            con.push_set(&key(i), &v, true);
        }
        con.send().map_err(io)?;
    }
    con.req.extend_from_slice(b"version\r\n");
    con.send().map_err(io)?;
    let ver = con.read_line().map_err(io)?.to_string();
    if !ver.starts_with("VERSION") {
        return Err(format!("memcached fill: {ver:?}"));
    }

    let peer = servers::Loopback { system: "memcached", cfg, clock, value_len, sessions };
    let mut buf = Vec::new();
    let mut out = vec![
        peer.unpipelined("get", |k| {
            con.push_get(&k);
            con.send().expect("memcached send");
            assert_eq!(con.read_get(&mut buf).expect("memcached get"), Some(value_len), "a loaded session");
            black_box(&buf);
        }),
        peer.unpipelined("set", |k| {
            con.push_set(&k, &v, false);
            con.send().expect("memcached send");
            con.expect("STORED").expect("memcached set");
        }),
    ];
    // Each thread's connection, with its read buffer.
    let connect = || Conn::open(server.port).map(|c| (c, Vec::new()));
    // memcached's own batching for gets: one multi-key get.
    out.push(peer.pipelined("get (multi-key)", connect, |(con, buf), keys| {
        con.req.extend_from_slice(b"get");
        for k in &keys {
            con.req.push(b' ');
            con.req.extend_from_slice(k);
        }
        con.req.extend_from_slice(b"\r\n");
        con.send().expect("memcached send");
        let mut n = 0;
        while con.read_value(buf).expect("memcached get").is_some() {
            n += 1;
        }
        assert_eq!(n, PIPELINE, "every session found");
    }));
    out.push(peer.pipelined("set", connect, |(con, _), keys| {
        for k in &keys {
            con.push_set(k, &v, false);
        }
        con.send().expect("memcached send");
        for _ in 0..PIPELINE {
            con.expect("STORED").expect("memcached set");
        }
    }));

    con.req.extend_from_slice(b"stats\r\n");
    con.send().map_err(io)?;
    let mut bytes = 0u64;
    loop {
        let l = con.read_line().map_err(io)?.to_string();
        if l == "END" || l.is_empty() {
            break;
        }
        if let Some(b) = l.strip_prefix("STAT bytes ") {
            bytes = b.parse().unwrap_or(0);
        }
    }
    Ok(Section {
        detail: format!(
            "{} on loopback, text protocol (a minimal client in this harness)",
            servers::version(&bin)
        ),
        measurements: out,
        memory: vec![Memory::new("memcached", value_len, sessions, "item bytes (stats bytes)", bytes)],
        scaling: Vec::new(),
    })
}
