//! `harness --curves`: how the cost grows as the work grows (issue 18). Five curves, each
//! point with its own floor measured in the same run, written as `curves.json`, `curves.md`
//! (one table per curve) and one SVG per curve:
//!
//! 1. `sessions`: get, set, miss and delete p50/p99 against the number of live 1 KiB
//!    sessions, the floor on a buffer as large as that segment beside it, LMDB and Redis at
//!    the sizes where they fit.
//! 2. `value_size`: get and set against the value size (64 B to 1 MiB, powers of 4), the floor
//!    per size; and the largest value the default options allow, checked.
//! 3. `fill`: get and set at 10/50/90/99% of the sessions a segment held at its first `Full`,
//!    with a fixed 1 KiB size and with a drifting mix of 40 sizes; the failing insert once
//!    full; sessions stored per MiB of capacity at the first `Full`.
//! 4. `workers`: 1, 2, 4, 8 worker processes on one segment (throughput and p99), with the
//!    floor's and pure computation's scaling over as many threads as the controls.
//! 5. `churn`: log-in, read, update, log-out at a steady rate with sliding TTLs (abandoned
//!    sessions expire), p99 per interval, memory and the sweep's cost over time.
//!
//! Forms: `--curves` is the long form (up to 10M sessions, 30 minutes of churn), `--curves
//! --quick` a middle one (up to 1M, 2 minutes), `--curves --smoke` the bounded form CI runs
//! (10k and 100k sessions, small segments, 2 minutes of churn). Only ratios to the same run's
//! floor are comparable between runs on a shared machine; the load average is recorded.

use crate::floor;
use crate::gardenstate::{self as gs, Segment, TTL};
use crate::report::{Machine, Section, bytes, count, ns};
use crate::svg;
use crate::workload::{Clock, Limit, Rng, Run, SEED, Summary, key, run, ticks, value};
use ::gardenstate::{Error, Expiry, Options, Store};
use serde::Serialize;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What one `--curves` run measures.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub mode: &'static str,
    /// Live 1 KiB sessions of the `sessions` curve.
    pub sessions: Vec<u64>,
    /// LMDB and Redis are measured up to this many sessions (they fill slowly and need
    /// memory of their own beside the segment).
    pub peers_up_to: u64,
    /// Value sizes of the `value_size` curve, and the bytes of values loaded per size
    /// (sessions = bytes / size, between 1,000 and `size_sessions`).
    pub sizes: Vec<usize>,
    pub size_bytes: u64,
    pub size_sessions: u64,
    /// Heap capacity of the `fill` curve's segments.
    pub fill_capacity: u64,
    /// Worker processes of the `workers` curve, and each point's window.
    pub workers: Vec<u32>,
    pub window: Duration,
    /// Operations per latency loop.
    pub ops: u64,
    /// Churn: length, interval of its time series, operations per second, sliding TTL.
    pub churn: Duration,
    pub churn_interval: Duration,
    pub churn_rate: u64,
    pub churn_ttl: Duration,
    pub install: bool,
    /// Only the curves whose step name contains this (`--curve NAME`), or all.
    pub only: Option<String>,
}

impl Plan {
    pub fn for_mode(mode: &str, install: bool) -> Plan {
        let sizes = (0..8).map(|i| 64usize << (2 * i)).collect();
        match mode {
            "smoke" => Plan {
                mode: "smoke (bounded)",
                sessions: vec![10_000, 100_000],
                peers_up_to: 10_000,
                sizes,
                size_bytes: 16 << 20,
                size_sessions: 10_000,
                fill_capacity: 64 << 20,
                workers: vec![1, 2, 4, 8],
                window: Duration::from_millis(200),
                ops: 20_000,
                churn: Duration::from_secs(120),
                churn_interval: Duration::from_secs(10),
                churn_rate: 10_000,
                churn_ttl: Duration::from_secs(20),
                install,
                only: None,
            },
            "quick" => Plan {
                mode: "quick",
                sessions: vec![10_000, 100_000, 1_000_000],
                peers_up_to: 100_000,
                size_bytes: 256 << 20,
                size_sessions: 100_000,
                fill_capacity: 256 << 20,
                window: Duration::from_millis(600),
                ops: 200_000,
                ..Plan::for_mode("smoke", install)
            },
            _ => Plan {
                mode: "full (long)",
                sessions: vec![10_000, 100_000, 1_000_000, 4_000_000, 10_000_000],
                peers_up_to: 1_000_000,
                size_bytes: 1 << 30,
                size_sessions: 100_000,
                fill_capacity: 1 << 30,
                window: Duration::from_secs(2),
                ops: 1_000_000,
                churn: Duration::from_secs(30 * 60),
                churn_interval: Duration::from_secs(60),
                churn_rate: 20_000,
                churn_ttl: Duration::from_secs(120),
                ..Plan::for_mode("smoke", install)
            },
        }
    }
}

/// One curve: series of (x, y) points, drawn as one SVG and one table.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// File name stem of its SVG.
    pub id: String,
    pub title: String,
    pub x_label: String,
    /// "" (a count), "B", "%", "s".
    pub x_unit: &'static str,
    pub log_x: bool,
    pub y_label: String,
    /// "ns", "B", "x" (a ratio) or "" (a count or rate).
    pub y_unit: &'static str,
    pub log_y: bool,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Curve {
    fn new(id: &str, title: &str, x: (&str, &'static str, bool), y: (&str, &'static str, bool)) -> Curve {
        Curve {
            id: id.into(),
            title: title.into(),
            x_label: x.0.into(),
            x_unit: x.1,
            log_x: x.2,
            y_label: y.0.into(),
            y_unit: y.1,
            log_y: y.2,
            series: Vec::new(),
        }
    }

    /// Adds point (x, y) to the series `name`, creating it at the end if new.
    fn add(&mut self, name: &str, x: f64, y: f64) {
        match self.series.iter_mut().find(|(n, _)| n == name) {
            Some((_, pts)) => pts.push((x, y)),
            None => self.series.push((name.into(), vec![(x, y)])),
        }
    }

    /// p50 and p99 of `s` as the series "`name` p50" and "`name` p99".
    fn add_latency(&mut self, name: &str, x: f64, s: &Summary) {
        self.add(&format!("{name} p50"), x, s.p50_ns);
        self.add(&format!("{name} p99"), x, s.p99_ns);
    }

    fn svg(&self) -> String {
        svg::lines(&svg::Lines {
            title: &self.title,
            x_label: &self.x_label,
            x_unit: self.x_unit,
            log_x: self.log_x,
            y_label: &self.y_label,
            y_unit: self.y_unit,
            log_y: self.log_y,
            series: &self.series,
        })
    }

    /// A markdown table: one row per x, one column per series.
    pub fn table(&self) -> String {
        let mut xs: Vec<f64> = self.series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let fx = |v: f64| match self.x_unit {
            "B" => bytes(v as u64),
            "%" => format!("{v:.0}%"),
            "s" => format!("{v:.0} s"),
            _ => count(v),
        };
        let fy = |v: f64| match self.y_unit {
            _ if !v.is_finite() => "–".to_string(),
            "ns" => ns(v),
            "B" => bytes(v as u64),
            "x" => format!("{v:.2}x"),
            _ => count(v),
        };
        let mut t = format!("| {} |", self.x_label);
        let mut rule = String::from("|---|");
        for (name, _) in &self.series {
            t.push_str(&format!(" {name} |"));
            rule.push_str("---:|");
        }
        t.push('\n');
        t.push_str(&rule);
        t.push('\n');
        for x in xs {
            t.push_str(&format!("| {} |", fx(x)));
            for (_, pts) in &self.series {
                let v = pts.iter().find(|p| p.0 == x).map_or(f64::NAN, |p| p.1);
                t.push_str(&format!(" {} |", fy(v)));
            }
            t.push('\n');
        }
        t
    }
}

/// Everything `--curves` writes.
#[derive(Debug, Clone, Serialize)]
pub struct CurvesReport {
    pub plan: Plan,
    pub machine: Machine,
    pub method: String,
    pub load_average_start: String,
    pub load_average_end: String,
    pub seconds: f64,
    pub curves: Vec<Curve>,
    /// Single figures: (what, value), e.g. the largest value the defaults allow.
    pub facts: Vec<(String, String)>,
    /// Peers or points not measured, with the reason.
    pub skipped: Vec<String>,
}

impl CurvesReport {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# gardenstate curves ({})\n\n{} CPUs, {:.0} GiB, load average {} at the start, {} at the end; {:.0} s.\n\n{}\n\n",
            self.plan.mode,
            self.machine.cpus,
            self.machine.memory_gib,
            self.load_average_start,
            self.load_average_end,
            self.seconds,
            self.method
        );
        for c in &self.curves {
            s.push_str(&format!("## {}\n\n![{}]({}.svg)\n\n{}\n", c.title, c.id, c.id, c.table()));
        }
        if !self.facts.is_empty() {
            s.push_str("## Single figures\n\n| what | value |\n|---|---|\n");
            for (k, v) in &self.facts {
                s.push_str(&format!("| {k} | {v} |\n"));
            }
            s.push('\n');
        }
        for why in &self.skipped {
            s.push_str(&format!("- skipped: {why}\n"));
        }
        s
    }

    /// Writes curves.json, curves.md and one SVG per curve into `dir`.
    pub fn write(&self, dir: &std::path::Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
        };
        write("curves.json", &serde_json::to_string_pretty(self).map_err(|e| e.to_string())?)?;
        write("curves.md", &self.markdown())?;
        for c in &self.curves {
            write(&format!("{}.svg", c.id), &c.svg())?;
        }
        Ok(())
    }
}

/// The 1, 5 and 15 minute load averages (other work on the machine during the run).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes of memory the kernel says it could give without swapping (MemAvailable).
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs every curve of `plan`, reporting progress through `say`.
/// The report is written into `out` after each curve, so a long run that stops keeps what it
/// measured.
pub fn bench(plan: &Plan, out: &std::path::Path, say: &dyn Fn(&str)) -> Result<CurvesReport, String> {
    let started = Instant::now();
    let clock = Clock::calibrate(Duration::from_millis(100));
    let mut r = CurvesReport {
        plan: plan.clone(),
        machine: Machine::read(),
        method: format!(
            "Every operation timed alone ({} before and after, {:.0} ns included); p50/p99 over all timed operations. \
             Keys 32 bytes, uniform random over the live sessions. The floor: random copies of the value's size from a \
             buffer as large as the segment, measured in the same run, in rounds alternating with the gets where memory \
             allows both at once (else just before the segment is created). Absolute times on this shared machine move \
             with its load; compare the ratios to the floor.",
            clock.source, clock.overhead_ns
        ),
        load_average_start: loadavg(),
        load_average_end: String::new(),
        seconds: 0.0,
        curves: Vec::new(),
        facts: Vec::new(),
        skipped: Vec::new(),
    };
    type Step = fn(&Plan, &Clock, &mut CurvesReport, &dyn Fn(&str)) -> Result<(), String>;
    let steps: [(&str, Step); 5] = [
        ("curve 1: sessions", sessions_curve),
        ("curve 2: value size", size_curve),
        ("curve 3: fill level and size mix", fill_curve),
        ("curve 4: workers", workers_curve),
        ("curve 5: churn", churn_curve),
    ];
    for (what, step) in steps {
        if plan.only.as_ref().is_some_and(|o| !what.contains(o.as_str())) {
            continue;
        }
        say(what);
        step(plan, &clock, &mut r, say)?;
        r.load_average_end = loadavg();
        r.seconds = started.elapsed().as_secs_f64();
        r.write(out)?;
    }
    Ok(r)
}

/// Alternating rounds of floor and gets, as in the main harness (see its `gardenstate_section`).
const ROUNDS: u64 = 8;

/// Gets of loaded sessions and floor copies of `value_len` bytes from a buffer as large as the
/// segment, in alternating rounds when memory allows both, else the floor first (the segment
/// destroyed meanwhile, then recreated and refilled). Returns the segment (loaded), get, floor.
fn loaded_with_floor(
    sessions: u64,
    value_len: usize,
    ops: u64,
    opts: &Options,
) -> Result<(Segment, Run, Run), String> {
    let create = || -> Result<Segment, String> {
        let name = format!("gds-curves-{}-{value_len}", std::process::id());
        let _ = Store::destroy(&name);
        let store =
            Store::create(&name, opts).map_err(|e| format!("creating {sessions} x {value_len} B: {e}"))?;
        Ok(Segment { store, name })
    };
    let mut seg = create()?;
    let size = seg.store.info().segment_bytes;
    // The segment's pages are already taken (created with posix_fallocate).
    let both = size + (2 << 30) < mem_available();
    let mut floors = Vec::new();
    if !both {
        drop(seg);
        let buf = floor::buffer(size);
        for r in 0..ROUNDS {
            floors.push(floor::copies(&buf, value_len, Limit::Ops(ops.div_ceil(ROUNDS)), SEED ^ r));
        }
        drop(buf);
        seg = create()?;
    }
    gs::fill(&seg.store, sessions, value_len);
    let mut gets = Vec::new();
    let buf = if both { floor::buffer(size) } else { Vec::new() };
    for r in 0..ROUNDS {
        let (n, seed) = (Limit::Ops(ops.div_ceil(ROUNDS)), SEED ^ r);
        if both {
            floors.push(floor::copies(&buf, value_len, n, seed));
        }
        gets.push(gs::random_ops(&seg.store, gs::Op::Get, sessions, value_len, n, seed));
    }
    Ok((seg, Run::sequential(gets), Run::sequential(floors)))
}

fn sessions_curve(
    plan: &Plan,
    clock: &Clock,
    r: &mut CurvesReport,
    say: &dyn Fn(&str),
) -> Result<(), String> {
    let mut lat = Curve::new(
        "curve_sessions",
        "1 KiB sessions: latency against live sessions, the floor beside it",
        ("live sessions", "", true),
        ("latency per operation", "ns", true),
    );
    let mut ratio = Curve::new(
        "curve_sessions_ratio",
        "1 KiB sessions: p50 / the floor's p50 at the same size",
        ("live sessions", "", true),
        ("ratio to the floor", "x", false),
    );
    let peer_cfg = crate::Config {
        mode: "curves",
        sessions: 0,
        sessions_16k: 0,
        ops: plan.ops,
        net_ops: (plan.ops / 40).max(300),
        window: plan.window / 2,
        install: plan.install,
        out: std::path::PathBuf::new(),
    };
    for &n in &plan.sessions {
        let need = gs::options(n, 1024).capacity_bytes + (2 << 30);
        if need > mem_available() {
            r.skipped.push(format!(
                "{n} sessions: the segment (and a margin) need about {} and {} are available",
                bytes(need),
                bytes(mem_available())
            ));
            say(&format!("{n} sessions: SKIPPED (memory)"));
            continue;
        }
        say(&format!("{n} sessions of 1 KiB, with the floor"));
        let x = n as f64;
        let (seg, get, fl) = loaded_with_floor(n, 1024, plan.ops, &gs::options(n, 1024))?;
        let store = &seg.store;
        let floor = Summary::of(clock, &[fl]);
        let get = Summary::of(clock, &[get]);
        let set =
            Summary::of(clock, &[gs::random_ops(store, gs::Op::Set, n, 1024, Limit::Ops(plan.ops), SEED)]);
        let miss = Summary::of(clock, &[gs::misses(store, n, 1024, Limit::Ops(plan.ops))]);
        let (del, _) = gs::delete_and_reinsert(store, n, 1024, (plan.ops / 4).min(n / 2).max(1));
        let del = Summary::of(clock, &[del]);
        drop(seg);
        for (name, s) in [("gardenstate get", &get), ("gardenstate set", &set), ("gardenstate miss", &miss)] {
            lat.add_latency(name, x, s);
            ratio.add(
                &format!("{} p50", name.trim_start_matches("gardenstate ")),
                x,
                s.p50_ns / floor.p50_ns,
            );
        }
        lat.add_latency("gardenstate delete", x, &del);
        ratio.add("delete p50", x, del.p50_ns / floor.p50_ns);
        lat.add_latency("floor copy", x, &floor);
        if n <= plan.peers_up_to {
            let peers: [(&str, PeerFn); 2] = [("lmdb", crate::lmdb::bench), ("redis", crate::redis::bench)];
            for (name, f) in peers {
                say(&format!("{name}: {n} sessions of 1 KiB"));
                match f(&peer_cfg, clock, 1024, n) {
                    Ok(sec) => {
                        for m in sec
                            .measurements
                            .iter()
                            .filter(|m| m.op == "get" && m.pipeline == 1 && m.workers == 1)
                        {
                            lat.add_latency(&format!("{name} get"), x, &m.summary);
                            ratio.add(&format!("{name} get p50"), x, m.summary.p50_ns / floor.p50_ns);
                        }
                    }
                    Err(why) => r.skipped.push(format!("{name} at {n} sessions: {why}")),
                }
            }
        }
    }
    r.curves.push(lat);
    r.curves.push(ratio);
    Ok(())
}

type PeerFn = fn(&crate::Config, &Clock, usize, u64) -> Result<Section, String>;

fn size_curve(plan: &Plan, clock: &Clock, r: &mut CurvesReport, say: &dyn Fn(&str)) -> Result<(), String> {
    let mut lat = Curve::new(
        "curve_value_size",
        "Latency against value size, the floor per size",
        ("value size", "B", true),
        ("latency per operation", "ns", true),
    );
    let mut ratio = Curve::new(
        "curve_value_size_ratio",
        "p50 / the floor's p50 against value size",
        ("value size", "B", true),
        ("ratio to the floor", "x", false),
    );
    for &len in &plan.sizes {
        let n = (plan.size_bytes / len as u64).clamp(16, plan.size_sessions);
        say(&format!("{n} sessions of {}", bytes(len as u64)));
        let x = len as f64;
        let ops = (plan.ops * 1024 / len as u64).clamp(2_000, plan.ops);
        let (seg, get, fl) = loaded_with_floor(n, len, ops, &gs::options(n, len))?;
        let floor = Summary::of(clock, &[fl]);
        let get = Summary::of(clock, &[get]);
        let set =
            Summary::of(clock, &[gs::random_ops(&seg.store, gs::Op::Set, n, len, Limit::Ops(ops), SEED)]);
        lat.add_latency("gardenstate get", x, &get);
        lat.add_latency("gardenstate set", x, &set);
        lat.add_latency("floor copy", x, &floor);
        ratio.add("get p50", x, get.p50_ns / floor.p50_ns);
        ratio.add("set p50", x, set.p50_ns / floor.p50_ns);
    }
    r.curves.push(lat);
    r.curves.push(ratio);

    // The largest value the default options allow: stored at that size, refused one byte over.
    let max = Options::default().max_value;
    let name = format!("gds-curves-{}-max", std::process::id());
    let _ = Store::destroy(&name);
    let seg = Segment { store: Store::create(&name, &Options::default()).map_err(|e| e.to_string())?, name };
    let stored = seg.store.set(&key(0), &vec![7u8; max as usize], TTL).map(drop);
    let over = seg.store.set(&key(1), &vec![7u8; max as usize + 1], TTL).map(drop);
    r.facts.push((
        "largest value the default options allow".into(),
        format!(
            "{} ({max} B): {}; one byte more: {}",
            bytes(max),
            if stored.is_ok() { "stored".to_string() } else { format!("FAILED {stored:?}") },
            match over {
                Err(e) => format!("refused ({e})"),
                Ok(()) => "STORED (the limit is not enforced)".into(),
            }
        ),
    ));
    Ok(())
}

/// The 40 sizes of the drifting mix: 200 B to 4 KiB, geometric.
fn mix_sizes() -> Vec<usize> {
    (0..40).map(|j| (200.0 * (4096.0f64 / 200.0).powf(j as f64 / 39.0)) as usize).collect()
}

/// The size of the `k`-th write: fixed, or a window of 8 neighbouring sizes of the mix that
/// slides by one size every 2,000 writes (the mix drifts, as a site's sessions grow and shrink).
#[derive(Clone)]
struct Sizes {
    mix: Option<Vec<usize>>,
    rng: Rng,
    k: u64,
}

impl Sizes {
    fn fixed() -> Sizes {
        Sizes { mix: None, rng: Rng::new(SEED), k: 0 }
    }
    fn drifting() -> Sizes {
        Sizes { mix: Some(mix_sizes()), rng: Rng::new(SEED), k: 0 }
    }
    fn next(&mut self) -> usize {
        self.k += 1;
        match &self.mix {
            None => 1024,
            Some(m) => m[((self.k / 2_000 + self.rng.below(8)) % m.len() as u64) as usize],
        }
    }
}

fn fill_options(capacity: u64) -> Options {
    Options { capacity_bytes: capacity, max_entries: capacity / 128, max_clients: 64, ..Options::default() }
}

/// Inserts sessions `from..` with sizes from `sizes` until `upto` sessions or the first `Full`;
/// returns how many are stored and the kind of the `Full`, if one came.
fn fill_sessions(
    store: &Store,
    sizes: &mut Sizes,
    from: u64,
    upto: u64,
) -> Result<(u64, Option<String>), String> {
    let big = value(4096);
    let mut i = from;
    while i < upto {
        match store.set(&key(i), &big[..sizes.next()], TTL) {
            Ok(_) => i += 1,
            Err(Error::Full(kind)) => return Ok((i, Some(format!("{kind:?}")))),
            Err(e) => return Err(format!("filling: {e}")),
        }
    }
    Ok((i, None))
}

fn fill_curve(plan: &Plan, clock: &Clock, r: &mut CurvesReport, say: &dyn Fn(&str)) -> Result<(), String> {
    let mut lat = Curve::new(
        "curve_fill",
        "Latency against fill level, fixed 1 KiB and a drifting mix of 40 sizes",
        ("fill level (% of the sessions held at the first Full)", "%", false),
        ("latency per operation", "ns", true),
    );
    let opts = fill_options(plan.fill_capacity);
    let mib = plan.fill_capacity as f64 / (1u64 << 20) as f64;
    let ops = (plan.ops / 4).max(5_000);
    let name = format!("gds-curves-{}-fill", std::process::id());
    let create = || -> Result<Segment, String> {
        let _ = Store::destroy(&name);
        Ok(Segment { store: Store::create(&name, &opts).map_err(|e| e.to_string())?, name: name.clone() })
    };
    for (label, sizes) in [("1 KiB", Sizes::fixed()), ("mix of 40", Sizes::drifting())] {
        // Until the first Full: how many sessions this capacity holds, and the failing insert.
        say(&format!("fill: {label} until the first Full"));
        let seg = create()?;
        let (full_at, kind) = fill_sessions(&seg.store, &mut sizes.clone(), 0, u64::MAX)?;
        let used = seg.store.stats().bytes_used;
        let page = seg.store.info().page_size;
        // Further inserts of new sessions: with a mix, one of a size whose class still has a
        // free block succeeds; only the failing ones are summarized.
        let mut i = full_at;
        let mut drift = sizes.clone();
        let big = value(4096);
        let mut failed = Vec::new();
        let tries = run(
            Limit::Ops((ops / 10).max(500) * 4),
            || {
                i += 1;
                key(i)
            },
            |k| match seg.store.set(&k, &big[..drift.next()], TTL) {
                Err(Error::Full(_)) => failed.push(true),
                Ok(_) => failed.push(false),
                Err(e) => panic!("an insert into a full segment: {e}"),
            },
        );
        let n_tries = tries.ops;
        let only_failed = Run {
            samples: tries.samples.iter().zip(&failed).filter(|p| *p.1).map(|p| *p.0).collect(),
            ..tries
        };
        let n_failed = only_failed.samples.len();
        let failing = Summary::of(clock, &[only_failed]);
        drop(seg);
        r.facts.push((
            format!("{label}: sessions per MiB of capacity at the first Full"),
            format!(
                "{:.0} ({full_at} sessions in {}, Full({}); heap blocks in use then {} = {:.0}% of the capacity; \
                 heap pages of {})",
                full_at as f64 / mib,
                bytes(plan.fill_capacity),
                kind.unwrap_or_default(),
                bytes(used),
                used as f64 * 100.0 / plan.fill_capacity as f64,
                bytes(page)
            ),
        ));
        r.facts.push((
            format!("{label}: failing insert once full, p50 / p99"),
            format!(
                "{} / {} ({n_failed} of {n_tries} further inserts failed)",
                ns(failing.p50_ns),
                ns(failing.p99_ns)
            ),
        ));
        for pct in [10u64, 50, 90, 99] {
            say(&format!("fill: {label} at {pct}%"));
            let seg = create()?;
            let n = (full_at * pct / 100).max(1);
            let mut sz = sizes.clone();
            fill_sessions(&seg.store, &mut sz, 0, n)?;
            let mut buf = vec![0u8; 4096];
            let mut rng = Rng::new(SEED ^ pct);
            let get = run(
                Limit::Ops(ops),
                || key(rng.below(n)),
                |k| {
                    black_box(seg.store.get_into(&k, &mut buf).expect("get"));
                },
            );
            // Overwrites continue the size sequence; near full, one may find no block of its
            // new size (counted, not failed).
            let mut full = 0u64;
            let set = run(
                Limit::Ops(ops),
                || (key(rng.below(n)), sz.next()),
                |(k, len)| match seg.store.set(&k, &big[..len], TTL) {
                    Ok(_) => {}
                    Err(Error::Full(_)) => full += 1,
                    Err(e) => panic!("set: {e}"),
                },
            );
            drop(seg);
            lat.add_latency(&format!("get {label}"), pct as f64, &Summary::of(clock, &[get]));
            lat.add_latency(&format!("set {label}"), pct as f64, &Summary::of(clock, &[set]));
            if full > 0 {
                r.facts.push((
                    format!("{label} at {pct}%: overwrites that got Full"),
                    format!("{full} of {ops}"),
                ));
            }
        }
    }
    // The floor of this segment size, for scale.
    let buf = floor::buffer(plan.fill_capacity);
    let fl = Summary::of(clock, &[floor::copies(&buf, 1024, Limit::Ops(ops), SEED)]);
    for pct in [10.0, 50.0, 90.0, 99.0] {
        lat.add_latency("floor copy 1 KiB", pct, &fl);
    }
    r.curves.push(lat);
    Ok(())
}

/// A `--curve-worker` child: attached, ready, released by a line on its stdin.
struct Worker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

/// Quantiles a worker reports (ticks at i/QUANTILES), pooled by the parent.
const QUANTILES: usize = 1000;

/// What `n` worker processes running `op` on `seg` at once did: throughput, pooled latency
/// quantiles (ticks), and per operation the minor page faults and involuntary switches.
struct Processes {
    ops_per_sec: f64,
    quantiles: Vec<u64>,
    faults_per_op: f64,
    switches_per_op: f64,
}

fn processes(
    seg: &Segment,
    op: gs::Op,
    n: u32,
    sessions: u64,
    window: Duration,
) -> Result<Processes, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut workers = Vec::new();
    for w in 0..n {
        let mut child = Command::new(&exe)
            .args([
                "--curve-worker".to_string(),
                seg.name.clone(),
                op.name().into(),
                sessions.to_string(),
                window.as_millis().to_string(),
                (SEED ^ u64::from(w)).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning a worker: {e}"))?;
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        workers.push(Worker { child, out });
    }
    for w in &mut workers {
        let mut line = String::new();
        w.out.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("a worker did not get ready: {line:?}"));
        }
    }
    for w in &mut workers {
        let stdin = w.child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
    }
    let (mut rate, mut pooled, mut ops, mut faults, mut switches) = (0.0, Vec::new(), 0, 0, 0);
    for mut w in workers {
        drop(w.child.stdin.take());
        let mut line = String::new();
        w.out.read_line(&mut line).map_err(|e| e.to_string())?;
        let status = w.child.wait().map_err(|e| e.to_string())?;
        let nums: Vec<u64> = line.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if !status.success() || nums.len() != 4 + QUANTILES {
            return Err(format!("a worker failed ({status}): {line:?}"));
        }
        rate += nums[0] as f64 / (nums[1] as f64 / 1e9).max(1e-9);
        (ops, faults, switches) = (ops + nums[0], faults + nums[2], switches + nums[3]);
        pooled.extend_from_slice(&nums[4..]);
    }
    pooled.sort_unstable();
    let per_op = |v: u64| v as f64 / ops.max(1) as f64;
    Ok(Processes {
        ops_per_sec: rate,
        quantiles: pooled,
        faults_per_op: per_op(faults),
        switches_per_op: per_op(switches),
    })
}

/// This process's minor page faults and involuntary context switches so far (/proc/self).
fn os_events() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: state is field 3, minflt field 10.
    let minflt = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let nvcsw =
        status.lines().find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:")?.trim().parse().ok());
    (minflt.unwrap_or(0), nvcsw.unwrap_or(0))
}

/// `harness --curve-worker SEGMENT OP SESSIONS WINDOW_MS SEED`: prints "ready", waits for a
/// line on stdin, runs OP on 1 KiB sessions for the window, prints "OPS ELAPSED_NS
/// MINOR_FAULTS INVOLUNTARY_SWITCHES" (during the loop) and the latency in ticks at 1,000
/// evenly spaced quantiles.
pub fn worker_main(args: &[String]) -> Result<(), String> {
    let [name, op, sessions, ms, seed] = args else {
        return Err("usage: --curve-worker SEGMENT OP SESSIONS WINDOW_MS SEED".into());
    };
    let op = match op.as_str() {
        "get" => gs::Op::Get,
        "set" => gs::Op::Set,
        _ => return Err("op: get or set".into()),
    };
    let num = |s: &String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let (sessions, ms, seed) = (num(sessions)?, num(ms)?, num(seed)?);
    let store = Store::attach(name).map_err(|e| e.to_string())?;
    let _ = store.get_into(&key(0), &mut [0u8; 1024]);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").and_then(|_| stdout.flush()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
    let before = os_events();
    let mut r = gs::random_ops(&store, op, sessions, 1024, Limit::For(Duration::from_millis(ms)), seed);
    let after = os_events();
    r.samples.sort_unstable();
    let q: Vec<String> = (0..QUANTILES)
        .map(|i| r.samples.get(i * r.samples.len() / QUANTILES).copied().unwrap_or(0).to_string())
        .collect();
    writeln!(
        stdout,
        "{} {} {} {} {}",
        r.ops,
        r.elapsed.as_nanos(),
        after.0 - before.0,
        after.1 - before.1,
        q.join(" ")
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// `f` on `n` threads at once; the runs of each.
fn threads(n: u32, f: impl Fn(u64) -> Run + Sync) -> Vec<Run> {
    std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = (0..n).map(|i| s.spawn(move || f(SEED ^ u64::from(i)))).collect();
        hs.into_iter().map(|h| h.join().expect("curve thread")).collect()
    })
}

fn workers_curve(plan: &Plan, clock: &Clock, r: &mut CurvesReport, say: &dyn Fn(&str)) -> Result<(), String> {
    let mut rate = Curve::new(
        "curve_workers",
        "Throughput against workers on this machine (1 KiB, sum over workers)",
        ("workers", "", true),
        ("operations per second", "", true),
    );
    let mut scale = Curve::new(
        "curve_workers_scaling",
        "Throughput relative to one worker (controls: floor and pure computation on threads)",
        ("workers", "", true),
        ("x one worker", "x", false),
    );
    let mut tail = Curve::new(
        "curve_workers_p99",
        "Latency against workers (pooled over workers)",
        ("workers", "", true),
        ("latency per operation", "ns", true),
    );
    let mut events = Curve::new(
        "curve_workers_events",
        "Worker processes: minor page faults and involuntary context switches per 1,000 operations",
        ("workers", "", true),
        ("events per 1,000 operations", "", false),
    );
    let n = *plan.sessions.iter().filter(|&&s| s <= 1_000_000).max().unwrap_or(&100_000);
    let seg = gs::create(n, 1024)?;
    gs::fill(&seg.store, n, 1024);
    let buf = floor::buffer(seg.store.info().segment_bytes);
    let mut base = std::collections::HashMap::new();
    for &w in &plan.workers {
        say(&format!("{w} workers: gardenstate get, set (processes); floor, spin (threads)"));
        let x = f64::from(w);
        for op in [gs::Op::Get, gs::Op::Set] {
            let got = processes(&seg, op, w, n, plan.window)?;
            let (ops_s, q) = (got.ops_per_sec, &got.quantiles);
            let name = format!("gardenstate {}", op.name());
            events.add(&format!("{} minor faults per 1k ops", op.name()), x, got.faults_per_op * 1e3);
            events.add(
                &format!("{} involuntary switches per 1k ops", op.name()),
                x,
                got.switches_per_op * 1e3,
            );
            let p = |f: f64| clock.ns(q[((q.len() - 1) as f64 * f) as usize]);
            tail.add(&format!("{name} p50"), x, p(0.5));
            tail.add(&format!("{name} p99"), x, p(0.99));
            rate.add(&name, x, ops_s);
            let one = *base.entry(name.clone()).or_insert(ops_s);
            scale.add(&name, x, ops_s / one);
        }
        let window = Limit::For(plan.window);
        for (name, runs) in [
            ("floor copy", threads(w, |seed| floor::copies(&buf, 1024, window, seed))),
            ("spin (computation)", threads(w, |seed| floor::spin(window, seed))),
        ] {
            let s = Summary::of(clock, &runs);
            if name == "floor copy" {
                tail.add_latency(name, x, &s);
            }
            rate.add(name, x, s.ops_per_sec);
            let one = *base.entry(name.to_string()).or_insert(s.ops_per_sec);
            scale.add(name, x, s.ops_per_sec / one);
        }
    }
    r.facts.push((
        "workers curve".into(),
        format!("{n} sessions of 1 KiB, {} ms per point", plan.window.as_millis()),
    ));
    r.curves.push(rate);
    r.curves.push(scale);
    r.curves.push(tail);
    r.curves.push(events);
    Ok(())
}

/// Latencies of one kind of churn operation within one interval.
#[derive(Default)]
struct Samples(Vec<u64>);

impl Samples {
    fn summary(&mut self, clock: &Clock, secs: f64) -> Summary {
        self.0.sort_unstable();
        let ns: Vec<f64> = self.0.iter().map(|&t| clock.ns(t)).collect();
        let s = Summary::from_sorted_ns(&ns, ns.len() as u64, secs, ns.len() as f64 / secs.max(1e-9));
        self.0.clear();
        s
    }
}

/// The churn: every 10 operations one log-in (a new session), 5 reads and 2 updates of
/// active sessions, 1 log-out and 1 lock+release. Every other session is logged out once
/// `active` newer ones exist; the rest are abandoned and expire (sliding TTL) unread.
fn churn_curve(plan: &Plan, clock: &Clock, r: &mut CurvesReport, say: &dyn Fn(&str)) -> Result<(), String> {
    let logins_per_sec = plan.churn_rate / 10;
    // Active sessions: those logged in within half a TTL.
    let active = (logins_per_sec * plan.churn_ttl.as_secs() / 2).max(100);
    let expected_live = active + logins_per_sec * plan.churn_ttl.as_secs() / 2;
    let seg = gs::create(expected_live * 2, 1024)?;
    let store = &seg.store;
    let ttl = Expiry::Sliding(plan.churn_ttl);
    let v = value(1024);
    let mut buf = vec![0u8; 1024];
    let mut lat = Curve::new(
        "curve_churn_p99",
        "Churn: p99 per interval at a steady rate (log-in, read, update, log-out, expire)",
        ("time", "s", false),
        ("p99 latency", "ns", true),
    );
    let mut mem = Curve::new(
        "curve_churn_memory",
        "Churn: memory over time",
        ("time", "s", false),
        ("bytes", "B", false),
    );
    let mut sweep = Curve::new(
        "curve_churn_sweep",
        "Churn: expirations, the sweep's cost and page faults per interval",
        ("time", "s", false),
        ("count / ns", "", false),
    );
    let mut kinds: [(&str, Samples); 5] = [
        ("login (insert)", Samples::default()),
        ("read", Samples::default()),
        ("update", Samples::default()),
        ("logout (delete)", Samples::default()),
        ("lock+release", Samples::default()),
    ];
    let mut rng = Rng::new(SEED ^ 0xc4);
    let mut next_id = 0u64;
    let start = Instant::now();
    let mut interval_start = start;
    let mut last = store.stats();
    let (mut last_events, mut last_k) = (os_events(), 0u64);
    let mut k = 0u64;
    let per_op = Duration::from_secs(1).as_nanos() as f64 / plan.churn_rate as f64;
    let (mut behind_max, mut misses) = (0f64, 0u64);
    while start.elapsed() < plan.churn {
        // Steady rate: operation k is due at k / rate; ahead of time, wait.
        let due = Duration::from_nanos((k as f64 * per_op) as u64);
        let now = start.elapsed();
        if now < due {
            let wait = due - now;
            if wait > Duration::from_micros(500) {
                std::thread::sleep(wait);
            }
        } else {
            behind_max = behind_max.max((now - due).as_secs_f64());
        }
        let kind = match k % 10 {
            0 => 0,
            1..=5 => 1,
            6 | 7 => 2,
            8 => 3,
            _ => 4,
        };
        let recent = |rng: &mut Rng| key(next_id.saturating_sub(1 + rng.below(active.min(next_id).max(1))));
        let t0 = ticks();
        match kind {
            0 => {
                store.set(&key(next_id), &v, ttl).map_err(|e| format!("login: {e}"))?;
                next_id += 1;
            }
            1 => {
                if store.get_into(&recent(&mut rng), &mut buf).map_err(|e| e.to_string())?.is_none() {
                    misses += 1;
                }
            }
            2 => {
                store.set(&recent(&mut rng), &v, ttl).map_err(|e| format!("update: {e}"))?;
            }
            3 => {
                // Log out the even session that just left the active window (the odd ones
                // are abandoned; every other log-out finds its session gone already).
                let id = next_id.saturating_sub(active) & !1;
                black_box(store.delete(&key(id)).map_err(|e| e.to_string())?);
            }
            _ => {
                let k = recent(&mut rng);
                if let Some(l) = store.lock(&k, Duration::from_secs(110)).map_err(|e| e.to_string())? {
                    store.unlock(&k, l.lock_id).map_err(|e| e.to_string())?;
                }
            }
        }
        let t1 = ticks();
        kinds[kind].1.0.push(t1.wrapping_sub(t0));
        k += 1;
        if interval_start.elapsed() >= plan.churn_interval || start.elapsed() >= plan.churn {
            let secs = interval_start.elapsed().as_secs_f64();
            let t = start.elapsed().as_secs_f64().round();
            // A host's sweeper thread: one timed pass over a writer's largest slice.
            let s0 = Instant::now();
            let rep = store.sweep(65_536).map_err(|e| e.to_string())?;
            let sweep_ns = s0.elapsed().as_nanos() as f64;
            for (name, s) in &mut kinds {
                let sum = s.summary(clock, secs);
                lat.add(&format!("{name} p99"), t, sum.p99_ns);
            }
            let st = store.stats();
            mem.add("heap blocks in use", t, st.bytes_used as f64);
            if let Some(res) = gs::resident_bytes(&seg.name) {
                mem.add("segment resident", t, res as f64);
            }
            mem.add("live entries x 1 KiB", t, st.live_entries as f64 * 1024.0);
            sweep.add(
                "expired by the operations' sweeps",
                t,
                st.expirations.saturating_sub(last.expirations + rep.expired) as f64,
            );
            sweep.add("sweep slices run", t, (st.sweeps - last.sweeps) as f64);
            sweep.add("timed sweep: ns per slot examined", t, sweep_ns / rep.examined.max(1) as f64);
            sweep.add("timed sweep: expired", t, rep.expired as f64);
            // First touches of the segment's pages by this process (each a minor fault).
            let events = os_events();
            let per_k = |a: u64, b: u64| a.saturating_sub(b) as f64 * 1e3 / (k - last_k).max(1) as f64;
            sweep.add("minor faults per 1k ops", t, per_k(events.0, last_events.0));
            (last_events, last_k) = (events, k);
            say(&format!(
                "churn {t:.0} s: {} live, {} heap in use, sweep {:.0} us for {} slots",
                st.live_entries,
                bytes(st.bytes_used),
                sweep_ns / 1e3,
                rep.examined
            ));
            last = store.stats();
            interval_start = Instant::now();
        }
    }
    r.facts.push((
        "churn".into(),
        format!(
            "{} ops/s for {} s: {} logins/s, {active} active sessions, sliding TTL {} s; {misses} reads of sessions \
             gone; the loop fell behind its schedule by at most {:.1} ms",
            plan.churn_rate,
            plan.churn.as_secs(),
            logins_per_sec,
            plan.churn_ttl.as_secs(),
            behind_max * 1e3
        ),
    ));
    r.curves.push(lat);
    r.curves.push(mem);
    r.curves.push(sweep);
    Ok(())
}
