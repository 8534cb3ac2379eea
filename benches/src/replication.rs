//! Replication: the replicator's `gardenstate` binary as a primary and a standby daemon on
//! 127.0.0.1 (two segments on this host, as on two hosts), measured two ways.
//!
//! - Sustained: one writer sets 1 KiB values on the primary for a fixed window (3 s quick,
//!   10 s full, 0.5 s smoke), first as fast as it can (the replicated rate is what the
//!   standby acknowledged per second), then paced at the goal's 200k per second (the lag). A sampler thread reads the primary's feed head and `replicated_upto` (the
//!   standby's acknowledged position) about every millisecond. Every 64th write records
//!   its time and version; its lag is the time of the first sample at which
//!   `replicated_upto >= version` minus the write's time (so the resolution is the ~1 ms
//!   sampling period).
//! - Resync: the primary is filled first, then the standby started; the time from the
//!   standby's start until it acknowledged the feed head taken before it started.
//!
//! The binary is looked up next to the harness binary (`target/<profile>/gardenstate`, or
//! `$GARDENSTATE_BIN`); outside `--smoke` it is built with `cargo build --release -p
//! gardenstate-replicator` if missing. Daemons are killed and segments destroyed by guards,
//! also on errors and panics.

use crate::Config;
use crate::gardenstate::{TTL, options};
use crate::workload::{key, value};
use ::gardenstate::{Options, Store};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub binary: String,
    /// One writer as fast as it can.
    pub flat_out: Phase,
    /// One writer paced at the goal's 200k sets per second.
    pub paced: Phase,
    pub resync_sessions: u64,
    pub resync_seconds: Option<f64>,
}

/// The replicator binary: `$GARDENSTATE_BIN`, or next to the harness. With `build`, it is
/// (re)built first (`cargo build --release`, a no-op when up to date): a stale binary of
/// another segment layout would refuse the harness's segments.
pub fn locate_binary(build: bool) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("GARDENSTATE_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("GARDENSTATE_BIN={} is not a file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe.parent().ok_or("harness binary has no directory")?;
    // Tests run the harness from target/<profile>/ (integration tests from target/<profile>/deps).
    let candidates = [dir.join("gardenstate"), dir.parent().map_or(dir.join("x"), |d| d.join("gardenstate"))];
    if !build {
        return candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| format!("the replicator binary is not built (no {})", candidates[0].display()));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "gardenstate-replicator", "--manifest-path"])
        .arg(&manifest)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo to build the replicator: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of the replicator failed: {status}"));
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/gardenstate");
    [candidates[0].clone(), built]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| "the replicator binary is missing after building it".into())
}

/// A segment name, destroyed when dropped (the standby's segment is created by its daemon).
struct SegName(String);

impl SegName {
    fn new(tag: &str) -> SegName {
        let name = format!("gds-bench-repl-{tag}-{}", std::process::id());
        let _ = Store::destroy(&name);
        SegName(name)
    }
}

impl Drop for SegName {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
    }
}

/// A scratch directory (key file, daemon logs), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let p = std::env::temp_dir().join(format!("gds-bench-repl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let s = Scratch(p);
        let key = s.key_file();
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut r| std::io::Read::read_exact(&mut r, &mut secret))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        std::fs::write(&key, secret).map_err(|e| format!("{}: {e}", key.display()))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
        Ok(s)
    }
    fn key_file(&self) -> PathBuf {
        self.0.join("key")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running daemon, killed and reaped when dropped; its stderr goes to a log file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, dir: &Scratch, tag: &str, args: &[&str]) -> Result<Daemon, String> {
        let log = dir.0.join(format!("{tag}.log"));
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        Ok(Daemon { child, log })
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn check_alive(&mut self, what: &str) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Err(format!("the {what} daemon exited ({st}): {}", last_lines(&self.log()))),
            _ => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A primary and a standby daemon on their own segments.
struct Pair {
    // Field order = drop order: daemons first, then segments, then the scratch directory.
    standby: Option<Daemon>,
    primary: Daemon,
    addr: String,
    standby_seg: SegName,
    dir: Scratch,
}

impl Pair {
    /// Starts the primary on `primary_seg` (which must exist) and waits until it serves.
    fn primary(bin: &Path, primary_seg: &str, tag: &str) -> Result<Pair, String> {
        let dir = Scratch::new()?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let key = dir.key_file();
        let key = key.to_str().ok_or("non-UTF-8 temp dir")?;
        let mut primary = Daemon::start(
            bin,
            &dir,
            &format!("{tag}-primary"),
            &["primary", "--segment", primary_seg, "--listen", &addr, "--key-file", key],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !primary.log().contains("serving") {
            primary.check_alive("primary")?;
            if Instant::now() > deadline {
                return Err(format!("the primary did not start serving: {}", last_lines(&primary.log())));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Pair { standby: None, primary, addr, standby_seg: SegName::new(&format!("{tag}-standby")), dir })
    }
    fn start_standby(&mut self, bin: &Path, tag: &str) -> Result<(), String> {
        let key = self.dir.key_file();
        let key = key.to_str().ok_or("non-UTF-8 temp dir")?.to_string();
        self.standby = Some(Daemon::start(
            bin,
            &self.dir,
            &format!("{tag}-standby"),
            &["standby", "--segment", &self.standby_seg.0, "--connect", &self.addr, "--key-file", &key],
        )?);
        Ok(())
    }
    fn check(&mut self) -> Result<(), String> {
        self.primary.check_alive("primary")?;
        if let Some(s) = self.standby.as_mut() {
            s.check_alive("standby")?;
        }
        Ok(())
    }
    /// Waits until the standby acknowledged `pos` (checking the daemons stay up).
    fn wait_acked(&mut self, store: &Store, pos: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while store.replicated_upto() < pos {
            if Instant::now() > deadline {
                return Err(format!(
                    "the standby acknowledged {} of {pos} after {timeout:?}: {}",
                    store.replicated_upto(),
                    last_lines(&self.standby.as_ref().map(Daemon::log).unwrap_or_default())
                ));
            }
            self.check()?;
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }
}

fn primary_options(sessions: u64, feed_len: u64) -> Options {
    Options { feed_len, ..options(sessions, 1024) }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Both measurements; `Err` if the binary is unavailable or a daemon failed.
pub fn bench(cfg: &Config) -> Result<Figures, String> {
    let bin = locate_binary(cfg.mode != "smoke")?;
    let mut f = Figures { binary: bin.display().to_string(), ..Figures::default() };
    let window = match cfg.mode {
        "smoke" => Duration::from_millis(500),
        "quick" => Duration::from_secs(3),
        _ => Duration::from_secs(10),
    };
    sustained(&bin, cfg, window, &mut f)?;
    resync(&bin, cfg, &mut f)?;
    Ok(f)
}

/// One write window's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Phase {
    pub seconds: f64,
    pub writes: u64,
    pub primary_set_per_sec: f64,
    pub standby_ack_per_sec: f64,
    pub catch_up_ms: f64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    pub lag_samples: usize,
    pub feed_lag_p99_entries: u64,
}

fn sustained(bin: &Path, cfg: &Config, window: Duration, f: &mut Figures) -> Result<(), String> {
    let keys = cfg.sessions.min(100_000);
    let seg = SegName::new("sustained");
    // A feed long enough for the whole window at a few million writes a second: an overflow
    // would turn the measurement into resyncs.
    let store =
        Store::create(&seg.0, &primary_options(keys, 1 << 24)).map_err(|e| format!("create primary: {e}"))?;
    let mut pair = Pair::primary(bin, &seg.0, "sustained")?;
    pair.start_standby(bin, "sustained")?;
    let first = store.set(&key(0), &value(1024), TTL).map_err(|e| e.to_string())?;
    pair.wait_acked(&store, first, Duration::from_secs(20))?;
    f.flat_out = phase(&store, &seg.0, &mut pair, keys, window, None)?;
    f.paced = phase(&store, &seg.0, &mut pair, keys, window, Some(PACED_RATE))?;
    drop(pair);
    drop(store);
    Ok(())
}

/// The goal's write rate, for the paced window.
pub const PACED_RATE: f64 = 200_000.0;

/// Writes 1 KiB sets for `window`, flat out or paced at `rate` per second, sampling the
/// standby's acknowledgements; then waits until it caught up.
fn phase(
    store: &Store,
    seg: &str,
    pair: &mut Pair,
    keys: u64,
    window: Duration,
    rate: Option<f64>,
) -> Result<Phase, String> {
    const EVERY: u64 = 64;
    let v = value(1024);
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let sampler = {
        let stop = Arc::clone(&stop);
        let name = seg.to_string();
        std::thread::spawn(move || -> Result<Vec<(f64, u64, u64)>, String> {
            let s = Store::attach(&name).map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Acquire) {
                let head = s.feed_head();
                let acked = s.replicated_upto();
                out.push((t0.elapsed().as_secs_f64(), acked, head));
                std::thread::sleep(Duration::from_micros(1000));
            }
            Ok(out)
        })
    };
    let acked0 = store.replicated_upto();
    let mut marks: Vec<(f64, u64)> = Vec::with_capacity(1 << 16);
    let mut n = 0u64;
    let mut last = 0;
    let start = Instant::now();
    let mut elapsed = Duration::ZERO;
    let mut result = Ok(());
    while elapsed < window {
        if let Some(r) = rate {
            // Behind schedule: write a batch now; ahead: wait for the batch's time.
            let due = Duration::from_secs_f64(n as f64 / r);
            while start.elapsed() < due {
                std::hint::spin_loop();
            }
        }
        for _ in 0..EVERY {
            match store.set(&key(n % keys), &v, TTL) {
                Ok(ver) => last = ver,
                Err(e) => result = Err(e.to_string()),
            }
            n += 1;
        }
        if result.is_err() {
            break;
        }
        elapsed = start.elapsed();
        marks.push((t0.elapsed().as_secs_f64(), last));
    }
    let written = elapsed.as_secs_f64();
    let acked_at_end = store.replicated_upto();
    let caught = if result.is_ok() { pair.wait_acked(store, last, Duration::from_secs(60)) } else { Ok(()) };
    let catch_up = start.elapsed().as_secs_f64() - written;
    stop.store(true, Ordering::Release);
    let samples = sampler.join().map_err(|_| "the sampler panicked".to_string())??;
    result?;
    caught?;

    let mut p = Phase {
        seconds: written,
        writes: n,
        primary_set_per_sec: n as f64 / written,
        // One feed entry per set, so positions acknowledged per second are sets per second.
        standby_ack_per_sec: acked_at_end.saturating_sub(acked0) as f64 / written,
        catch_up_ms: catch_up * 1e3,
        ..Phase::default()
    };
    let mut lags = Vec::with_capacity(marks.len());
    let mut j = 0;
    for &(t, ver) in &marks {
        while j < samples.len() && (samples[j].1 < ver || samples[j].0 < t) {
            j += 1;
        }
        // Marks after the last sample (acknowledged during the final wait) count as caught at the end.
        let at = samples.get(j).map_or(t0.elapsed().as_secs_f64(), |s| s.0);
        lags.push((at - t).max(0.0) * 1e3);
    }
    lags.sort_by(f64::total_cmp);
    p.lag_samples = lags.len();
    p.lag_p50_ms = percentile(&lags, 0.5);
    p.lag_p99_ms = percentile(&lags, 0.99);
    p.lag_max_ms = lags.last().copied().unwrap_or(f64::NAN);
    let t_end = (start - t0).as_secs_f64() + written;
    let mut feed: Vec<u64> =
        samples.iter().filter(|s| s.0 <= t_end).map(|s| s.2.saturating_sub(s.1)).collect();
    feed.sort_unstable();
    p.feed_lag_p99_entries = feed.get(((feed.len().max(1) - 1) as f64 * 0.99) as usize).copied().unwrap_or(0);
    Ok(p)
}

fn resync(bin: &Path, cfg: &Config, f: &mut Figures) -> Result<(), String> {
    f.resync_sessions = cfg.sessions;
    let (seg, store) = resync_primary(cfg.sessions)?;
    f.resync_seconds = Some(resync_once(bin, &seg, &store)?.0);
    drop(store);
    Ok(())
}

/// A primary segment filled with `sessions` 1 KiB sessions.
fn resync_primary(sessions: u64) -> Result<(SegName, Store), String> {
    let seg = SegName::new("resync");
    let store = Store::create(&seg.0, &primary_options(sessions, 1 << 20))
        .map_err(|e| format!("create primary: {e}"))?;
    let v = value(1024);
    for i in 0..sessions {
        store.set(&key(i), &v, TTL).map_err(|e| format!("fill: {e}"))?;
    }
    Ok((seg, store))
}

/// A fresh standby joining the filled primary: the seconds until it acknowledged the feed
/// head taken before it started, and both daemons' logs.
fn resync_once(bin: &Path, seg: &SegName, store: &Store) -> Result<(f64, String), String> {
    // A write first: a previous run's standby acknowledged the old head, and
    // acknowledgements never go back, so each run waits for a head no standby has reached.
    store.set(&key(0), &value(1024), TTL).map_err(|e| format!("fill: {e}"))?;
    let mut pair = Pair::primary(bin, &seg.0, "resync")?;
    let head = store.feed_head();
    let t = Instant::now();
    pair.start_standby(bin, "resync")?;
    pair.wait_acked(store, head, Duration::from_secs(300))?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = |d: Option<&Daemon>| {
        d.and_then(|d| cpu_seconds(d.child.id())).map_or("?".into(), |s| format!("{s:.2}"))
    };
    let logs = format!(
        "{}{}snapshot cpu: primary {} s, standby {} s (user + system)\n",
        pair.primary.log(),
        pair.standby.as_ref().map(Daemon::log).unwrap_or_default(),
        cpu(Some(&pair.primary)),
        cpu(pair.standby.as_ref())
    );
    Ok((secs, logs))
}

/// The CPU time (user + system) process `pid` has used, from /proc (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) ends with ')'.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// `harness --resync`: only the resync, `runs` times on one filled primary (a fresh standby
/// segment each time), printing each run's seconds and the daemons' snapshot log lines.
pub fn bench_resync(cfg: &Config, runs: usize) -> Result<Vec<f64>, String> {
    let bin = locate_binary(cfg.mode != "smoke")?;
    let t = Instant::now();
    let (seg, store) = resync_primary(cfg.sessions)?;
    eprintln!("filled {} sessions of 1 KiB in {:.2} s", cfg.sessions, t.elapsed().as_secs_f64());
    let mut out = Vec::with_capacity(runs);
    for run in 0..runs {
        let (secs, logs) = resync_once(&bin, &seg, &store)?;
        println!("resync {run}: {} sessions in {secs:.3} s", cfg.sessions);
        for l in logs.lines().filter(|l| l.contains("snapshot")) {
            println!("  {l}");
        }
        out.push(secs);
    }
    Ok(out)
}
