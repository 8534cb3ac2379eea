//! The report: every measurement of the run, the goals of DESIGN.md section 6 computed as
//! ratios within the run, printed as markdown tables and written as JSON.

use crate::replication::Phase;
use crate::workload::Summary;
use serde::Serialize;
use std::fmt::Write as _;

/// One measured loop of one system.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// "floor", "gardenstate", "lmdb", "redis", "memcached", "dashmap".
    pub system: String,
    /// "get", "set", "delete", "lock+release", "get (miss)", "insert", "copy", ...
    pub op: String,
    pub value_bytes: usize,
    pub sessions: u64,
    /// Concurrent processes, threads or connections doing `op`.
    pub workers: u32,
    /// "process", "thread" or "connection".
    pub worker_kind: &'static str,
    /// Requests in flight per connection (1 = unpipelined, or not a network peer).
    pub pipeline: u32,
    #[serde(flatten)]
    pub summary: Summary,
}

impl Measurement {
    pub fn label(&self) -> String {
        let mut s = format!("{} {}", self.system, self.op);
        if self.workers > 1 {
            let _ = write!(s, " x{} {}", self.workers, self.worker_kind);
        }
        if self.pipeline > 1 {
            let _ = write!(s, " pipelined {}", self.pipeline);
        }
        s
    }
}

/// A peer: measured, or skipped and why.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    pub name: String,
    /// What was measured (version, client), or empty if skipped.
    pub detail: String,
    /// None if measured; the reason if skipped.
    pub skipped: Option<String>,
}

/// Memory per session of one system.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub system: String,
    pub value_bytes: usize,
    pub sessions: u64,
    /// What `bytes` counts.
    pub what: String,
    pub bytes: u64,
    pub bytes_per_session: f64,
    /// `bytes_per_session / (key + value bytes)`.
    pub ratio_to_key_value: f64,
}

/// Aggregate throughput of two concurrent workers against one.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub system: String,
    pub op: String,
    pub value_bytes: usize,
    pub worker_kind: &'static str,
    pub one_ops_per_sec: f64,
    pub two_ops_per_sec: f64,
    pub ratio: f64,
}

/// One quality bar of DESIGN.md section 6.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub target: String,
    /// The measured ratio, or None if it could not be measured in this run.
    pub measured: Option<f64>,
    /// What `measured` is in: "x" (a ratio), "SET/s", "s".
    pub unit: &'static str,
    pub met: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub transparent_hugepages: String,
}

impl Machine {
    pub fn read() -> Machine {
        let file = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = file("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = file("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (mem_kib / (1 << 20) as f64 * 10.0).round() / 10.0,
            kernel: file("/proc/sys/kernel/osrelease").trim().to_string(),
            transparent_hugepages: file("/sys/kernel/mm/transparent_hugepage/enabled").trim().to_string(),
        }
    }
}

/// Replication figures (benches/src/replication.rs): a primary and a standby daemon of the
/// replicator on 127.0.0.1; `status` is "measured" or why not.
#[derive(Debug, Clone, Serialize)]
pub struct Replication {
    pub status: String,
    /// The replicator binary used.
    pub binary: Option<String>,
    /// One writer as fast as it can.
    pub flat_out: Option<Phase>,
    /// One writer paced at the goal's 200k SET/s.
    pub paced: Option<Phase>,
    /// Sustained replicated SETs per second: the rate the standby acknowledged while one
    /// writer wrote flat out (or the writer's rate, if lower).
    pub sustained_set_per_sec: Option<f64>,
    /// Write -> acknowledged by the standby at the paced 200k SET/s (every 64th write, ~1 ms sampling).
    pub standby_lag_p50_ms: Option<f64>,
    pub standby_lag_p99_ms: Option<f64>,
    pub resync_sessions: Option<u64>,
    pub resync_seconds: Option<f64>,
}

impl Replication {
    pub fn not_measured() -> Replication {
        Replication::skipped("not measured: needs the replicator".into())
    }

    pub fn skipped(why: String) -> Replication {
        Replication {
            status: why,
            binary: None,
            flat_out: None,
            paced: None,
            sustained_set_per_sec: None,
            standby_lag_p50_ms: None,
            standby_lag_p99_ms: None,
            resync_sessions: None,
            resync_seconds: None,
        }
    }

    pub fn measured(f: &crate::replication::Figures) -> Replication {
        Replication {
            status: "measured".into(),
            binary: Some(f.binary.clone()),
            flat_out: Some(f.flat_out.clone()),
            paced: Some(f.paced.clone()),
            sustained_set_per_sec: Some(f.flat_out.primary_set_per_sec.min(f.flat_out.standby_ack_per_sec)),
            standby_lag_p50_ms: Some(f.paced.lag_p50_ms),
            standby_lag_p99_ms: Some(f.paced.lag_p99_ms),
            resync_sessions: Some(f.resync_sessions),
            resync_seconds: f.resync_seconds,
        }
    }

    /// One line for the markdown report.
    pub fn summary(&self) -> String {
        let (Some(a), Some(b)) = (&self.flat_out, &self.paced) else {
            return self.status.clone();
        };
        let phase = |what: &str, p: &Phase| {
            format!(
                "{what}: the primary took {} SET/s of 1 KiB for {:.1} s, the standby acknowledged {} SET/s and caught \
                 up {:.0} ms after the window; write -> standby ack lag p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
                 ({} sampled writes; feed lag p99 {} entries)",
                count(p.primary_set_per_sec),
                p.seconds,
                count(p.standby_ack_per_sec),
                p.catch_up_ms,
                p.lag_p50_ms,
                p.lag_p99_ms,
                p.lag_max_ms,
                p.lag_samples,
                p.feed_lag_p99_entries
            )
        };
        format!(
            "{}. {}. Resync of {} x 1 KiB: {}. Both daemons on this host, sharing its {} CPUs with the writer; \
             lags at ~1 ms resolution (a sampler thread).",
            phase("one writer flat out", a),
            phase("paced at 200k SET/s", b),
            count(self.resync_sessions.unwrap_or(0) as f64),
            self.resync_seconds.map_or("-".into(), |s| format!("{s:.2} s")),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub config: crate::Config,
    pub machine: Machine,
    /// How latency and throughput were measured.
    pub method: String,
    pub timer_overhead_ns: f64,
    pub peers: Vec<Peer>,
    pub measurements: Vec<Measurement>,
    pub scaling: Vec<Scaling>,
    pub memory: Vec<Memory>,
    pub replication: Replication,
    pub goals: Vec<Goal>,
    pub notes: Vec<String>,
    pub seconds: f64,
    /// /proc/loadavg before and after: other work on the machine competes for its CPUs.
    pub load_average_start: String,
    pub load_average_end: String,
}

impl Report {
    pub fn find(
        &self,
        system: &str,
        op: &str,
        value: usize,
        workers: u32,
        pipeline: u32,
    ) -> Option<&Measurement> {
        self.measurements.iter().find(|m| {
            m.system == system
                && m.op == op
                && m.value_bytes == value
                && m.workers == workers
                && m.pipeline == pipeline
        })
    }

    fn p50(&self, system: &str, op: &str, value: usize) -> Option<f64> {
        self.find(system, op, value, 1, 1).map(|m| m.summary.p50_ns)
    }

    /// The goals of DESIGN.md section 6, from this run's measurements.
    pub fn compute_goals(&mut self) {
        let kib = 1024;
        let mut goals = Vec::new();
        let mut ratio_goal =
            |goal: &str, target: &str, measured: Option<f64>, ok: &dyn Fn(f64) -> bool, detail: String| {
                goals.push(Goal {
                    goal: goal.into(),
                    target: target.into(),
                    measured,
                    met: measured.map(ok),
                    unit: "x",
                    detail,
                });
            };
        let floor = self.p50("floor", "copy", kib);
        let get = self.p50("gardenstate", "get", kib);
        let set = self.p50("gardenstate", "set", kib);
        ratio_goal(
            "GET 1 KiB median vs the floor (random 1 KiB copy)",
            "<= 1.5x",
            get.zip(floor).map(|(g, f)| g / f),
            &|r| r <= 1.5,
            format!("gardenstate get p50 {} / floor p50 {}", ns_opt(get), ns_opt(floor)),
        );
        ratio_goal(
            "SET 1 KiB median vs the floor",
            "<= 3x",
            set.zip(floor).map(|(s, f)| s / f),
            &|r| r <= 3.0,
            format!("gardenstate set p50 {} / floor p50 {}", ns_opt(set), ns_opt(floor)),
        );
        let lget = self.p50("lmdb", "get", kib);
        let lput = self.p50("lmdb", "set", kib);
        ratio_goal(
            "GET vs LMDB GET (p50 latency, one transaction per op)",
            ">= 3x",
            lget.zip(get).map(|(l, g)| l / g),
            &|r| r >= 3.0,
            format!("lmdb get p50 {} / gardenstate get p50 {}", ns_opt(lget), ns_opt(get)),
        );
        ratio_goal(
            "SET vs LMDB PUT (p50 latency, one transaction per op)",
            ">= 10x",
            lput.zip(set).map(|(l, s)| l / s),
            &|r| r >= 10.0,
            format!("lmdb put p50 {} / gardenstate set p50 {}", ns_opt(lput), ns_opt(set)),
        );
        let gs1 = self.find("gardenstate", "get", kib, 1, 1).map(|m| m.summary.ops_per_sec);
        let r1 = self.find("redis", "get", kib, 1, 1).map(|m| m.summary.ops_per_sec);
        ratio_goal(
            "GET throughput vs one unpipelined Redis loopback client",
            ">= 50x",
            gs1.zip(r1).map(|(g, r)| g / r),
            &|r| r >= 50.0,
            format!("gardenstate 1 process {} / redis 1 client {}", ops_opt(gs1), ops_opt(r1)),
        );
        let gs2 = self.find("gardenstate", "get", kib, 2, 1).map(|m| m.summary.ops_per_sec);
        let rp = self.find("redis", "get", kib, 2, 16).map(|m| m.summary.ops_per_sec);
        ratio_goal(
            "GET throughput vs Redis pipelined 16 deep on 2 connections",
            "> 1x",
            gs2.zip(rp).map(|(g, r)| g / r),
            &|r| r > 1.0,
            format!("gardenstate 2 processes {} / redis pipelined {}", ops_opt(gs2), ops_opt(rp)),
        );
        let sc =
            self.scaling.iter().find(|s| s.system == "gardenstate" && s.op == "get" && s.value_bytes == kib);
        let floor_sc = self.scaling.iter().find(|s| s.system == "floor" && s.value_bytes == kib);
        ratio_goal(
            "Two processes reading vs one",
            ">= 1.8x",
            sc.map(|s| s.ratio),
            &|r| r >= 1.8,
            format!(
                "{} / {}; in the same run the floor scales {:.2}x on 2 threads, pure computation {:.2}x",
                ops_opt(sc.map(|s| s.two_ops_per_sec)),
                ops_opt(sc.map(|s| s.one_ops_per_sec)),
                floor_sc.map_or(f64::NAN, |s| s.ratio),
                self.scaling.iter().find(|s| s.system == "cpu").map_or(f64::NAN, |s| s.ratio)
            ),
        );
        let mem = self
            .memory
            .iter()
            .find(|m| m.system == "gardenstate" && m.value_bytes == kib && m.what.starts_with("footprint"));
        ratio_goal(
            "Memory per 1 KiB session vs key+value bytes",
            "<= 1.25x",
            mem.map(|m| m.ratio_to_key_value),
            &|r| r <= 1.25,
            mem.map_or(String::new(), |m| {
                format!("{:.0} B per session for {} B of key+value", m.bytes_per_session, m.value_bytes + 32)
            }),
        );
        let r = &self.replication;
        let rate = r.sustained_set_per_sec;
        let p99 = r.standby_lag_p99_ms;
        goals.push(Goal {
            goal: "replication: 200k SET/s of 1 KiB, standby lag p99 < 5 ms".into(),
            target: ">= 200k SET/s, p99 < 5 ms".into(),
            measured: rate,
            unit: "SET/s",
            met: rate.zip(p99).map(|(x, l)| x >= 200_000.0 && l < 5.0),
            detail: match (rate, p99) {
                (Some(x), Some(l)) => format!(
                    "{} SET/s replicated flat out (primary {}); lag p99 {l:.2} ms at a paced {} SET/s",
                    count(x),
                    ops_opt(r.flat_out.as_ref().map(|p| p.primary_set_per_sec)),
                    count(r.paced.as_ref().map_or(0.0, |p| p.primary_set_per_sec))
                ),
                _ => r.status.clone(),
            },
        });
        let n = r.resync_sessions.unwrap_or(0);
        goals.push(Goal {
            goal: "replication: resync 1M x 1 KiB < 5 s".into(),
            target: "< 5 s".into(),
            measured: r.resync_seconds,
            unit: "s",
            // Only a resync of the goal's 1M sessions says whether the goal is met.
            met: r.resync_seconds.filter(|_| n >= 1_000_000).map(|s| s < 5.0),
            detail: match r.resync_seconds {
                Some(_) if n >= 1_000_000 => format!("{} sessions", count(n as f64)),
                Some(_) => {
                    format!("{} sessions only ({} mode): not the goal's 1M", count(n as f64), self.mode)
                }
                None => r.status.clone(),
            },
        });
        self.goals = goals;
    }

    /// The report as markdown (what goes to stdout and into the README).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "gardenstate benchmark, {} mode, {:.0} s: {} ({} CPUs, {} GiB, Linux {})\n",
            self.mode, self.seconds, m.cpu, m.cpus, m.memory_gib, m.kernel
        );
        let _ = writeln!(s, "Method: {}\n", self.method);
        let _ = writeln!(
            s,
            "Load average (1/5/15 min) at start: {}, at end: {} (other work on this machine competes for its CPUs).\n",
            self.load_average_start, self.load_average_end
        );
        let _ = writeln!(s, "Compared in this run with:");
        for p in &self.peers {
            match &p.skipped {
                None => {
                    let _ = writeln!(s, "- {}: {}", p.name, p.detail);
                }
                Some(why) => {
                    let _ = writeln!(s, "- {}: SKIPPED ({why})", p.name);
                }
            }
        }
        let _ = writeln!(
            s,
            "\n| system | operation | value | sessions | workers | p50 | p99 | p99.9 | ops/s | p50 / floor |"
        );
        let _ = writeln!(s, "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |");
        for x in &self.measurements {
            let floor = self.p50("floor", "copy", x.value_bytes);
            let workers = match (x.workers, x.pipeline) {
                (1, 1) => "1".to_string(),
                (w, 1) => format!("{w} {}es", x.worker_kind)
                    .replace("threades", "threads")
                    .replace("connectiones", "connections"),
                (w, p) => format!("{w} conn, pipeline {p}"),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                x.system,
                x.op,
                bytes(x.value_bytes as u64),
                count(x.sessions as f64),
                workers,
                ns(x.summary.p50_ns),
                ns(x.summary.p99_ns),
                ns(x.summary.p999_ns),
                count(x.summary.ops_per_sec),
                floor.map_or("".into(), |f| format!("{:.2}", x.summary.p50_ns / f)),
            );
        }
        let _ = writeln!(s, "\n| scaling | 1 worker ops/s | 2 workers ops/s | ratio |");
        let _ = writeln!(s, "| --- | ---: | ---: | ---: |");
        for x in &self.scaling {
            let _ = writeln!(
                s,
                "| {} {}{} ({}s) | {} | {} | {:.2}x |",
                x.system,
                x.op,
                if x.value_bytes > 0 { format!(" {}", bytes(x.value_bytes as u64)) } else { String::new() },
                x.worker_kind.replace("process", "processe"),
                count(x.one_ops_per_sec),
                count(x.two_ops_per_sec),
                x.ratio
            );
        }
        let _ = writeln!(s, "\n| memory | value | sessions | counts | bytes per session | / (key+value) |");
        let _ = writeln!(s, "| --- | ---: | ---: | --- | ---: | ---: |");
        for x in &self.memory {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0} | {:.2}x |",
                x.system,
                bytes(x.value_bytes as u64),
                count(x.sessions as f64),
                x.what,
                x.bytes_per_session,
                x.ratio_to_key_value
            );
        }
        let _ = writeln!(s, "\nReplication: {}\n", self.replication.summary());
        let _ = writeln!(s, "| goal (DESIGN.md 6) | target | measured | met | from |");
        let _ = writeln!(s, "| --- | --- | ---: | --- | --- |");
        for g in &self.goals {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                g.goal,
                g.target,
                g.measured.map_or("-".into(), |r| match g.unit {
                    "x" => format!("{r:.2}x"),
                    "SET/s" => count(r),
                    u => format!("{r:.2} {u}"),
                }),
                match g.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None if g.measured.is_some() => "n/a",
                    None => "not measured",
                },
                g.detail
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s);
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

/// "123 ns", "1.23 µs", "45.6 µs", "1.20 ms".
pub fn ns(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v < 1_000.0 {
        format!("{v:.0} ns")
    } else if v < 10_000.0 {
        format!("{:.2} µs", v / 1e3)
    } else if v < 100_000.0 {
        format!("{:.1} µs", v / 1e3)
    } else if v < 1_000_000.0 {
        format!("{:.0} µs", v / 1e3)
    } else {
        format!("{:.2} ms", v / 1e6)
    }
}

fn ns_opt(v: Option<f64>) -> String {
    v.map_or("(not measured)".into(), ns)
}

/// "950", "18.3k", "6.52M".
pub fn count(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v < 1e4 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.2}M", v / 1e6)
    }
}

fn ops_opt(v: Option<f64>) -> String {
    v.map_or("(not measured)".into(), |v| format!("{} ops/s", count(v)))
}

/// "64 B", "1 KiB", "16 KiB".
pub fn bytes(v: u64) -> String {
    if v >= 1024 && v % 1024 == 0 { format!("{} KiB", v / 1024) } else { format!("{v} B") }
}

impl Measurement {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        system: &str,
        op: &str,
        value_bytes: usize,
        sessions: u64,
        workers: u32,
        worker_kind: &'static str,
        pipeline: u32,
        summary: Summary,
    ) -> Measurement {
        Measurement {
            system: system.into(),
            op: op.into(),
            value_bytes,
            sessions,
            workers,
            worker_kind,
            pipeline,
            summary,
        }
    }
}

impl Memory {
    pub fn new(system: &str, value_bytes: usize, sessions: u64, what: &str, bytes: u64) -> Memory {
        let per = bytes as f64 / sessions.max(1) as f64;
        Memory {
            system: system.into(),
            value_bytes,
            sessions,
            what: what.into(),
            bytes,
            bytes_per_session: per,
            ratio_to_key_value: per / (value_bytes + crate::workload::KEY_LEN) as f64,
        }
    }
}

/// What one system's module measured.
#[derive(Debug, Default)]
pub struct Section {
    /// Version and client used, for the "compared with" list.
    pub detail: String,
    pub measurements: Vec<Measurement>,
    pub scaling: Vec<Scaling>,
    pub memory: Vec<Memory>,
}
