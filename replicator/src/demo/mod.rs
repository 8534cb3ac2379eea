//! `gardenstate demo`: replication and failover, shown on one machine in about 20 seconds.
//!
//! The demo is the real thing, only on one host: it runs this very binary as the `primary`
//! and `standby` daemons (each a process, talking TCP on 127.0.0.1 with a fresh key file),
//! and as worker processes (`demo-worker`, see `worker`) that serve simulated web
//! traffic on the primary's segment. In order:
//!
//! 1. **Setup.** Two segments named after this process (`gds-demo-<pid>-primary`, and
//!    `gds-demo-<pid>-standby`, which the standby daemon creates), a 0700 scratch directory
//!    in the temp dir with a 0600 key file of 32 random bytes and the daemons' logs, a free
//!    loopback port (bound to port 0 to learn one, then released for the primary). The demo
//!    writes a marker on the primary and waits (`wait_replicated`) until the standby has
//!    acknowledged it: the snapshot is done and the stream flows. It also shows that the
//!    standby refuses a local write (`ReadOnly`).
//! 2. **Traffic.** `--workers` processes serve `--rate` requests a second each (log in,
//!    read, update, lock and write back, log out, anonymous visitors who expire). Worker 1
//!    also places an order every 20 ms and waits until the standby has it before confirming
//!    it. Once a second the demo prints the primary's operations per second, the sessions on
//!    the primary and on the standby, and the replication lag: changes the standby has not
//!    acknowledged (`feed_head - replicated_upto`) and their age in ms (when the primary's
//!    feed was at the acknowledged position, from a 10 ms history of the feed head).
//! 3. **The host dies.** `kill -9` of the primary daemon and of every worker, right after a
//!    last lag reading. The primary's segment stays in `/dev/shm`, frozen as it was at the
//!    kill, so the demo can compare.
//! 4. **Failover.** The standby applies what it had already received (its segment stops
//!    changing), its daemon is stopped, `gardenstate promote` (run as a process, as an
//!    operator would) makes its segment writable, and the demo reads and writes it. The
//!    failover time runs from the kill to that write; it does not wait for the kernel to tear
//!    the killed processes down, and the demo knows of the death at once (no detection time).
//! 5. **What survived.** Every session on the primary at its death against the promoted
//!    standby: kept (same value), stale (an older value: fewer requests counted in it), lost
//!    (absent), extra (deleted on the primary, still on the standby), next to the changes the
//!    standby had not acknowledged when the primary died (read from the frozen segment), which
//!    bound them. Every confirmed order must be on the standby, intact. Every value on the
//!    standby must verify (checksum, own key).
//! 6. **Cleanup**, however the demo ends (success, failure, Ctrl-C, SIGTERM, a panic): the
//!    children are killed and reaped, the segments and the daemons' status files removed, the
//!    scratch directory removed ([`Lab`]'s `Drop`).
//!
//! The exit code is 0 when everything held, 2 with the reason otherwise: a confirmed order
//! lost, a bad value, a worker or daemon that died, an interruption.

pub mod worker;

use crate::commands::cli::DemoArgs;
use crate::commands::exit::{CmdResult, Failure};
use crate::commands::units::format_count;
use gardenstate::{Error, Expiry, Options, Stats, Store};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use worker::{Msg, ORDER_EVERY, ORDER_PREFIX, Tally};

/// `println!` that ignores a closed stdout (`gardenstate demo | head`): a panic there would
/// unwind through the cleanup, and one in the cleanup itself would abort before it is done.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Keys the demo itself writes (not sessions): the sync marker and the failover probe.
const DEMO_PREFIX: &[u8] = b"demo:";
/// How often the monitor samples the feed head (the resolution of the lag in ms).
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How long the standby may take to connect and receive its snapshot.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// After the kill, the standby has applied what it received once its segment has not changed
/// for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(10);
/// The longest the demo waits for that.
const DRAIN_MAX: Duration = Duration::from_secs(2);
/// How far two copies of one session's deadline may be apart (see [`compare`]).
const EXPIRY_MARGIN: Duration = Duration::from_millis(50);

/// The primary's segment: room for every session of 32 workers with headroom, and a feed long
/// enough that a standby briefly starved of CPU does not lap it.
fn segment_options() -> Options {
    Options {
        capacity_bytes: 64 << 20,
        max_entries: 131_072,
        max_key: 64,
        max_value: 4096,
        max_clients: 128,
        feed_len: 1 << 18,
        // Unpaced workers (`--rate 0`) make visitors faster than they expire: evict the
        // sessions closest to expiry rather than fail.
        evict: true,
        ..Options::default()
    }
}

/// `gardenstate demo`.
pub fn run(a: DemoArgs) -> CmdResult {
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, interrupted.clone()).map_err(Failure::error)?;
    }
    let mut lab = Lab::new(interrupted.clone())?;
    let result = demo(&a, &mut lab);
    drop(lab); // cleans up (and says so) before the verdict is printed
    match result {
        _ if interrupted.load(Ordering::Relaxed) => {
            Err(Failure::error("interrupted: stopped early (everything was cleaned up)"))
        }
        Ok(()) => Ok(()),
        Err(f) => Err(f),
    }
}

// ================================================================================================
// The lab: everything the demo creates, and its cleanup
// ================================================================================================

/// A process the demo started.
struct Proc {
    /// What it is, for messages: "primary daemon", "worker 2".
    what: String,
    child: Child,
    /// Where its stderr goes (the daemons').
    log: Option<PathBuf>,
    /// False once the demo killed it on purpose.
    expected_alive: bool,
}

/// Everything the demo creates: segments, the scratch directory, child processes. Dropping it
/// kills and reaps every child, destroys both segments and removes the directory, so nothing is
/// left behind whichever way the demo ends.
struct Lab {
    primary_seg: String,
    standby_seg: String,
    dir: PathBuf,
    key_file: PathBuf,
    procs: Vec<Proc>,
    interrupted: Arc<AtomicBool>,
}

impl Lab {
    fn new(interrupted: Arc<AtomicBool>) -> Result<Lab, Failure> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("gds-demo-{pid}"));
        let lab = Lab {
            primary_seg: format!("gds-demo-{pid}-primary"),
            standby_seg: format!("gds-demo-{pid}-standby"),
            key_file: dir.join("key"),
            dir,
            procs: Vec::new(),
            interrupted,
        };
        // Leftovers of an earlier demo that had this pid and was killed with SIGKILL.
        let _ = std::fs::remove_dir_all(&lab.dir);
        let _ = Store::destroy(&lab.primary_seg);
        let _ = Store::destroy(&lab.standby_seg);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&lab.dir)
            .map_err(|e| Failure::error(format!("creating {}: {e}", lab.dir.display())))?;
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut secret))
            .map_err(|e| Failure::error(format!("reading /dev/urandom: {e}")))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lab.key_file)
            .and_then(|mut f| f.write_all(&secret))
            .map_err(|e| Failure::error(format!("writing {}: {e}", lab.key_file.display())))?;
        Ok(lab)
    }

    /// Starts this binary with `args`; stderr goes to a log file in the scratch directory
    /// (daemons) or is inherited (workers, whose complaints are worth seeing). Returns its index.
    fn spawn(&mut self, what: &str, args: &[&str], log: bool) -> Result<usize, Failure> {
        let exe =
            std::env::current_exe().map_err(|e| Failure::error(format!("finding this program: {e}")))?;
        let mut cmd = Command::new(exe);
        cmd.args(args);
        let log = if log {
            let path = self.dir.join(format!("{}.log", what.replace(' ', "-")));
            let file = std::fs::File::create(&path)
                .map_err(|e| Failure::error(format!("creating {}: {e}", path.display())))?;
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
            Some(path)
        } else {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
            None
        };
        let child = cmd.spawn().map_err(|e| Failure::error(format!("starting the {what}: {e}")))?;
        self.procs.push(Proc { what: what.to_string(), child, log, expected_alive: true });
        Ok(self.procs.len() - 1)
    }

    fn pid(&self, i: usize) -> u32 {
        self.procs[i].child.id()
    }

    /// `kill -9`: sends SIGKILL (the process is reaped by `reap`, or when the lab is dropped).
    fn kill(&mut self, i: usize) {
        let p = &mut self.procs[i];
        p.expected_alive = false;
        let _ = p.child.kill();
    }

    fn reap(&mut self, i: usize) {
        let _ = self.procs[i].child.wait();
    }

    /// Fails if Ctrl-C was pressed or a child that should be running has exited (with the end
    /// of its log, which says why).
    fn check(&mut self) -> CmdResult {
        if self.interrupted.load(Ordering::Relaxed) {
            return Err(Failure::error("interrupted"));
        }
        for p in &mut self.procs {
            if !p.expected_alive {
                continue;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                p.expected_alive = false;
                let tail = p.log.as_deref().map(log_tail).unwrap_or_default();
                return Err(Failure::error(format!(
                    "the {} (pid {}) exited: {status}{tail}",
                    p.what,
                    p.child.id()
                )));
            }
        }
        Ok(())
    }

    /// Sleeps `d`, checking on the children and for Ctrl-C every 10 ms.
    fn sleep(&mut self, d: Duration) -> CmdResult {
        let until = Instant::now() + d;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(Duration::from_millis(10)));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let mut gone = Vec::new();
        for seg in [&self.primary_seg, &self.standby_seg] {
            // The daemons' status files: killed daemons cannot remove their own.
            if let Ok(path) = crate::operations::status::status_path(seg) {
                let _ = std::fs::remove_file(path);
            }
            match Store::destroy(seg) {
                Ok(true) => gone.push(seg.as_str()),
                Ok(false) => {}
                Err(e) => eprintln!("gardenstate demo: could not destroy segment {seg}: {e}"),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("gardenstate demo: could not remove {}: {e}", self.dir.display());
        }
        out!(
            "\ncleaned up: {} processes stopped, {} destroyed, key file and logs removed",
            self.procs.len(),
            if gone.is_empty() {
                "no segment".to_string()
            } else {
                format!("segments {}", gone.join(" and "))
            }
        );
    }
}

/// The last lines of a daemon's log, indented, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(6)..];
    if tail.is_empty() {
        return String::new();
    }
    format!("; the end of its log:\n    {}", tail.join("\n    "))
}

/// A loopback port nobody listens on now: bind port 0, read the port the kernel chose,
/// release it. (Another process could take it before the primary binds it; the primary would
/// then fail to start, and the demo says so.)
fn free_port() -> Result<u16, Failure> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Failure::error(format!("finding a free port: {e}")))?;
    Ok(l.local_addr().map_err(Failure::error)?.port())
}

// ================================================================================================
// The workers, as the monitor sees them
// ================================================================================================

/// What the workers have said, gathered by one reader thread per worker.
#[derive(Default)]
struct Reports {
    /// Each worker's last counters.
    tallies: BTreeMap<u32, Tally>,
    /// Orders written (the worker said so after `set` returned).
    ordered: BTreeSet<String>,
    /// Orders the standby acknowledged, with the wait in microseconds.
    confirmed: BTreeMap<String, u64>,
    /// Orders whose wait timed out.
    unconfirmed: BTreeSet<String>,
}

struct Workers {
    /// Lab indexes of the worker processes.
    procs: Vec<usize>,
    /// Their stdin pipes: open while they should run.
    stdins: Vec<ChildStdin>,
    readers: Vec<std::thread::JoinHandle<()>>,
    reports: Arc<Mutex<Reports>>,
}

impl Workers {
    fn start(lab: &mut Lab, n: u32, rate: u64) -> Result<Workers, Failure> {
        let reports = Arc::new(Mutex::new(Reports::default()));
        let mut w = Workers { procs: Vec::new(), stdins: Vec::new(), readers: Vec::new(), reports };
        for k in 1..=n {
            let (seg, num, rate) = (lab.primary_seg.clone(), k.to_string(), rate.to_string());
            let mut args = vec!["demo-worker", "--segment", &seg, "--worker", &num, "--rate", &rate];
            if k == 1 {
                args.push("--critical");
            }
            let i = lab.spawn(&format!("worker {k}"), &args, false)?;
            let child = &mut lab.procs[i].child;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(Failure::error("a worker's pipes are missing"));
            };
            let reports = w.reports.clone();
            w.readers.push(std::thread::spawn(move || read_reports(k, stdout, &reports)));
            w.procs.push(i);
            w.stdins.push(stdin);
        }
        Ok(w)
    }

    fn reports(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_reports(k: u32, stdout: impl Read, reports: &Mutex<Reports>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Some(msg) = Msg::parse(&line) else {
            out!("worker {k}: {line}");
            continue;
        };
        let mut r = reports.lock().unwrap_or_else(|e| e.into_inner());
        match msg {
            Msg::Report(t) => {
                r.tallies.insert(k, t);
            }
            Msg::Ordered(key) => {
                r.ordered.insert(key);
            }
            Msg::Confirmed(key, us) => {
                r.confirmed.insert(key, us);
            }
            Msg::Unconfirmed(key) => {
                r.unconfirmed.insert(key);
            }
        }
    }
}

// ================================================================================================
// Lag: changes not acknowledged, and how old they are
// ================================================================================================

/// A short history of the primary's feed head, to turn a lag in changes into one in time.
struct FeedHistory(VecDeque<(Instant, u64)>);

impl FeedHistory {
    fn sample(&mut self, store: &Store) {
        self.0.push_back((Instant::now(), store.feed_head()));
        if self.0.len() > 3_000 {
            self.0.pop_front(); // 30 s of history is plenty
        }
    }

    /// How long ago the feed head was at `acked`: the age of the oldest change the standby has
    /// not acknowledged (interpolated between samples). `None` if it is older than the history.
    fn age_of(&self, acked: u64, now: Instant, head: u64) -> Option<Duration> {
        if acked >= head {
            return Some(Duration::ZERO);
        }
        let points: Vec<(Instant, u64)> = self.0.iter().copied().chain([(now, head)]).collect();
        for w in points.windows(2).rev() {
            let ((t0, h0), (t1, h1)) = (w[0], w[1]);
            if h0 <= acked && acked < h1 {
                let frac = (acked - h0) as f64 / (h1 - h0) as f64;
                let at = t0 + (t1 - t0).mul_f64(frac);
                return Some(now.saturating_duration_since(at));
            }
        }
        None
    }
}

/// A lag reading: changes not acknowledged, and their age.
#[derive(Debug, Clone, Copy)]
struct Lag {
    /// The primary's feed head at the reading.
    head: u64,
    changes: u64,
    age: Option<Duration>,
}

impl Lag {
    fn read(store: &Store, history: &FeedHistory) -> Lag {
        let acked = store.replicated_upto();
        let head = store.feed_head();
        Lag { head, changes: head.saturating_sub(acked), age: history.age_of(acked, Instant::now(), head) }
    }

    fn ms(&self) -> String {
        match self.age {
            None => "> 30 s".to_string(),
            Some(d) => ms(d),
        }
    }
}

/// "0 ms", "0.06 ms", "1.6 ms", "12 ms", "1,234 ms".
fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if d.is_zero() {
        "0 ms".to_string()
    } else if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", format_count(ms.round() as u64))
    }
}

/// The sessions in a segment that have not expired (`Stats::live_entries` also counts
/// expired ones the sweeper has not reached yet, and the sweeper takes a minute to go round).
fn sessions(store: &Store) -> Result<u64, Failure> {
    let mut n = 0;
    store.scan(|e| {
        n += u64::from(!e.key.starts_with(DEMO_PREFIX) && !e.key.starts_with(ORDER_PREFIX.as_bytes()))
    })?;
    Ok(n)
}

/// Engine operations counted by a segment: reads, writes, deletes, touches, lock attempts.
fn ops(s: &Stats) -> u64 {
    s.hits + s.misses + s.sets + s.deletes + s.touches + s.locks + s.lock_contentions
}

// ================================================================================================
// The demo
// ================================================================================================

fn demo(a: &DemoArgs, lab: &mut Lab) -> CmdResult {
    out!(
        "gardenstate demo: a primary and a standby replication daemon on this machine, {} worker processes \
         of web traffic\non the primary for {} s; then the primary's host dies (kill -9) and the standby takes over.\n",
        a.workers,
        a.seconds
    );

    // ---- 1. setup -----------------------------------------------------------------------------
    out!("setup");
    let primary = Store::create(&lab.primary_seg, &segment_options())
        .map_err(|e| Failure::error(format!("creating segment {}: {e}", lab.primary_seg)))?;
    let info = primary.info();
    out!(
        "  primary segment   {} ({} MiB heap, up to {} entries)",
        gardenstate::shm_dir().join(&lab.primary_seg).display(),
        info.heap_bytes >> 20,
        format_count(info.max_entries)
    );
    out!("  key file          {} (32 random bytes, mode 0600)", lab.key_file.display());
    let addr = format!("127.0.0.1:{}", free_port()?);
    let key = lab.key_file.display().to_string();
    let (pseg, sseg) = (lab.primary_seg.clone(), lab.standby_seg.clone());
    let primary_args = ["primary", "--segment", &pseg, "--listen", &addr, "--key-file", &key];
    let pd = lab.spawn("primary daemon", &primary_args, true)?;
    out!("  primary daemon    pid {}: gardenstate {}", lab.pid(pd), primary_args.join(" "));
    let standby_args = ["standby", "--segment", &sseg, "--connect", &addr, "--key-file", &key];
    let started = Instant::now();
    let sd = lab.spawn("standby daemon", &standby_args, true)?;
    out!("  standby daemon    pid {}: gardenstate {}", lab.pid(sd), standby_args.join(" "));

    // The standby has its snapshot, and the stream flows, once it acknowledges a write made
    // after it connected.
    let marker = primary.set(b"demo:synced", b"the standby follows", Expiry::Never)?;
    while !primary.wait_replicated(marker, Duration::from_millis(20)) {
        lab.check()?;
        if started.elapsed() > SYNC_TIMEOUT {
            return Err(Failure::error(format!(
                "the standby did not sync within {} s{}",
                SYNC_TIMEOUT.as_secs(),
                lab.procs[sd].log.as_deref().map(log_tail).unwrap_or_default()
            )));
        }
    }
    out!(
        "  standby synced    snapshot received and a first write acknowledged {} after it started",
        ms(started.elapsed())
    );
    let standby = Store::attach(&lab.standby_seg).map_err(Failure::error)?;
    match standby.set(b"demo:local-write", b"x", Expiry::Never) {
        Err(Error::ReadOnly) => {
            out!("  standby segment   a local write is refused (ReadOnly): only the daemon writes it")
        }
        other => {
            return Err(Failure::error(format!(
                "a local write on the standby returned {other:?}, not ReadOnly"
            )));
        }
    }

    let mut workers = Workers::start(lab, a.workers, a.rate)?;
    let pids: Vec<String> = workers.procs.iter().map(|&i| lab.pid(i).to_string()).collect();
    out!(
        "  workers           {} processes (pids {}), {} requests/s each\n{:20}worker 1 also places an \
         order every {} ms, confirmed only once the standby has it (wait_replicated)",
        a.workers,
        pids.join(", "),
        if a.rate == 0 { "as many".to_string() } else { format_count(a.rate) },
        "",
        ORDER_EVERY.as_millis()
    );

    // ---- 2. traffic -----------------------------------------------------------------------------
    out!(
        "\ntraffic on the primary, one line a second\n  (lag: changes the standby has not acknowledged yet; age: how long ago the primary made the oldest of them)"
    );
    out!(
        "  {:>6}  {:>10}  {:>17}  {:>17}  {:>12}  {:>9}",
        "time",
        "ops/s",
        "sessions: primary",
        "standby",
        "lag: changes",
        "age"
    );
    let mut history = FeedHistory(VecDeque::new());
    let start = Instant::now();
    let (mut prev, mut prev_at) = (primary.stats(), start);
    let mut next_line = start + Duration::from_secs(1);
    let end = start + Duration::from_secs(a.seconds);
    while Instant::now() < end {
        history.sample(&primary);
        lab.sleep(SAMPLE_EVERY)?;
        let now = Instant::now();
        if now >= next_line {
            let lag = Lag::read(&primary, &history);
            let p = primary.stats();
            let rate = ops(&p).saturating_sub(ops(&prev)) as f64 / (now - prev_at).as_secs_f64();
            out!(
                "  {:>5.1}s  {:>10}  {:>17}  {:>17}  {:>12}  {:>9}",
                (now - start).as_secs_f64(),
                format_count(rate as u64),
                format_count(sessions(&primary)?),
                format_count(sessions(&standby)?),
                format_count(lag.changes),
                lag.ms()
            );
            (prev, prev_at) = (p, now);
            // A line a second; after a stall (a busy machine), the next one a second from now
            // rather than a burst of catch-up lines.
            next_line = (next_line + Duration::from_secs(1)).max(Instant::now() + Duration::from_millis(500));
        }
    }

    // ---- 3. the host dies -----------------------------------------------------------------------
    history.sample(&primary);
    let lag = Lag::read(&primary, &history);
    let died = Instant::now();
    lab.kill(pd);
    for &i in &workers.procs {
        lab.kill(i);
    }
    // Only the signals are sent here: the failover does not wait for the kernel to tear the
    // dead processes down (on a real host that dies, nobody waits for that either).
    out!(
        "\nkill -9 the primary daemon (pid {}) and the {} workers: the primary's host is dead",
        lab.pid(pd),
        a.workers
    );
    out!(
        "  lag read just before the kill: {} changes not acknowledged by the standby{}",
        format_count(lag.changes),
        if lag.changes == 0 { String::new() } else { format!(" ({} old)", lag.ms()) }
    );

    // ---- 4. failover ----------------------------------------------------------------------------
    out!("\nfailover");
    let t = Instant::now();
    let (mut last, mut quiet_since) = (standby.feed_head(), Instant::now());
    while quiet_since.elapsed() < DRAIN_QUIET && t.elapsed() < DRAIN_MAX {
        std::thread::sleep(Duration::from_millis(1));
        let head = standby.feed_head();
        if head != last {
            (last, quiet_since) = (head, Instant::now());
        }
    }
    let step = |d: Duration, what: String| out!("  {:>9}  {what}", ms(d));
    step(
        t.elapsed(),
        format!(
            "the standby applies what it had received (done once its segment is unchanged for {} ms)",
            DRAIN_QUIET.as_millis()
        ),
    );
    let t = Instant::now();
    lab.kill(sd);
    lab.reap(sd);
    step(t.elapsed(), format!("stop the standby daemon (pid {})", lab.pid(sd)));
    let t = Instant::now();
    let exe = std::env::current_exe().map_err(Failure::error)?;
    let out = Command::new(exe)
        .args(["promote", "--segment", &lab.standby_seg])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::error(format!("running gardenstate promote: {e}")))?;
    let said = String::from_utf8_lossy(if out.status.success() { &out.stdout } else { &out.stderr })
        .trim()
        .to_string();
    if !out.status.success() {
        return Err(Failure::error(format!("gardenstate promote failed ({}): {said}", out.status)));
    }
    step(t.elapsed(), format!("gardenstate promote --segment {}\n{:13}it said: {said}", lab.standby_seg, ""));
    let t = Instant::now();
    let read = standby.get(b"demo:synced")?;
    let write = standby.set(b"demo:after-failover", b"served by the promoted standby", Expiry::Never);
    let served = died.elapsed();
    match (read, write) {
        (Some(_), Ok(_)) => {}
        (read, write) => {
            return Err(Failure::error(format!(
                "the promoted segment did not serve: read {read:?}, write {write:?}"
            )));
        }
    }
    step(t.elapsed(), "a read and a write on the promoted segment: both served".to_string());
    out!(
        "  failover time: {} from the kill -9 until the promoted standby served a read and a write",
        ms(served)
    );
    out!(
        "  (not included: noticing that the primary is dead; the demo runs no witness, knows at once and promotes by hand)"
    );

    // ---- 5. what survived -------------------------------------------------------------------------
    lab.reap(pd);
    for &i in &workers.procs {
        lab.reap(i);
    }
    workers.stdins.clear();
    for r in workers.readers.drain(..) {
        let _ = r.join();
    }
    // The primary's segment is frozen now: no writer is left, and no ack will be recorded.
    let final_head = primary.feed_head();
    let unacked = final_head.saturating_sub(primary.replicated_upto());
    let reports = std::mem::take(&mut *workers.reports());
    let cmp = compare(&primary, &standby, EXPIRY_MARGIN)?;
    let total = reports.tallies.values().fold(Tally::default(), |a, b| a.plus(b));
    let confirmed_lost: Vec<&String> =
        reports.confirmed.keys().filter(|k| cmp.orders_on_standby.get(k.as_bytes()) != Some(&true)).collect();
    let in_flight = reports
        .ordered
        .iter()
        .filter(|k| !reports.confirmed.contains_key(*k) && !reports.unconfirmed.contains(*k));
    let in_flight: Vec<&String> = in_flight.collect();
    let in_flight_kept =
        in_flight.iter().filter(|k| cmp.orders_on_standby.get(k.as_bytes()) == Some(&true)).count();

    let s = &cmp.sessions;
    let differ = s.stale + s.lost + s.extra;
    out!("\nwhat survived: the primary's segment as it died, against the promoted standby");
    let line = |what: &str, v: String| out!("  {what:<54}{v}");
    line("sessions on the primary at its death", format_count(s.at_death));
    line("  kept (same value on the standby)", format_count(s.kept));
    line("  stale (an older value on the standby)", format_count(s.stale));
    line("  lost (absent on the standby)", format_count(s.lost));
    line("  expired since (absent, and past their deadline)", format_count(cmp.expiring));
    line(
        "extra (deleted on the primary, still on the standby)",
        if cmp.expiring_extra == 0 {
            format_count(s.extra)
        } else {
            format!(
                "{} (not counting {} due to expire within 50 ms)",
                format_count(s.extra),
                format_count(cmp.expiring_extra)
            )
        },
    );
    line("sessions that differ (stale + lost + extra)", format_count(differ));
    line(
        "changes not acknowledged when the primary died",
        format!(
            "{} (the last lag reading said {}; the workers made {} more changes while the kill landed): \
             at most this many sessions can differ",
            format_count(unacked),
            format_count(lag.changes),
            format_count(final_head.saturating_sub(lag.head))
        ),
    );
    if s.diverged > 0 {
        line("NEWER OR TORN VALUE on the standby (a bug)", format_count(s.diverged));
    }
    let mut waits: Vec<u64> = reports.confirmed.values().copied().collect();
    waits.sort_unstable();
    let wait_ms = |q: f64| {
        let i = ((waits.len() as f64 - 1.0) * q).round() as usize;
        waits.get(i).map_or("-".to_string(), |&us| ms(Duration::from_micros(us)))
    };
    line(
        "orders confirmed by wait_replicated",
        format!(
            "{}: {} on the standby, intact{} (wait: median {}, max {})",
            format_count(reports.confirmed.len() as u64),
            if confirmed_lost.is_empty() {
                "all".to_string()
            } else {
                format_count((reports.confirmed.len() - confirmed_lost.len()) as u64)
            },
            if confirmed_lost.is_empty() { "" } else { " - SOME CONFIRMED ORDERS WERE LOST" },
            wait_ms(0.5),
            wait_ms(1.0)
        ),
    );
    line(
        "orders in flight at the kill (never confirmed)",
        format!("{}, of which {} reached the standby", in_flight.len(), in_flight_kept),
    );
    if !reports.unconfirmed.is_empty() {
        line("orders whose wait timed out (2 s)", format_count(reports.unconfirmed.len() as u64));
    }
    line(
        "values on the standby verified",
        format!("{} (checksum and own key), {} bad", format_count(cmp.verified), format_count(cmp.bad)),
    );
    line(
        "reads verified by the workers",
        format!(
            "{} in {} requests, {} bad",
            format_count(total.verified),
            format_count(total.requests),
            format_count(total.bad)
        ),
    );
    line("failover time", ms(served));

    let mut failed = Vec::new();
    for k in confirmed_lost.iter().take(5) {
        out!("  LOST: confirmed order {k} is not on the promoted standby (or not intact)");
    }
    if !confirmed_lost.is_empty() {
        failed.push(format!("{} confirmed orders were lost", confirmed_lost.len()));
    }
    if reports.confirmed.is_empty() {
        failed.push("no order was confirmed (wait_replicated never returned true)".to_string());
    }
    if cmp.bad > 0 {
        failed.push(format!("{} values on the standby failed verification", cmp.bad));
    }
    if s.diverged > 0 {
        failed.push(format!(
            "{} sessions on the standby hold a newer value than the dead primary's, or a torn one",
            s.diverged
        ));
    }
    if total.bad > 0 {
        failed.push(format!("the workers read {} bad values", total.bad));
    }
    if total.verified == 0 {
        failed.push("the workers verified no read".to_string());
    }
    drop((primary, standby));
    if !failed.is_empty() {
        return Err(Failure::error(format!("FAILED: {}", failed.join("; "))));
    }
    if differ > unacked {
        out!(
            "\nnote: more sessions differ ({differ}) than changes were unacknowledged at death ({unacked}): \
             expiries more than 50 ms apart on the two sides are counted as differences"
        );
    }
    out!(
        "\nok: every confirmed order survived; the promoted standby served {} after the kill -9; \
         {} of {} sessions differ, {} the {} changes the standby had not acknowledged when the primary died.",
        ms(served),
        format_count(differ),
        format_count(s.at_death),
        if differ <= unacked { "within" } else { "more than" },
        format_count(unacked)
    );
    Ok(())
}

// ================================================================================================
// The comparison
// ================================================================================================

/// How the sessions of the dead primary fared on the promoted standby.
#[derive(Debug, Default)]
struct Sessions {
    at_death: u64,
    kept: u64,
    stale: u64,
    lost: u64,
    extra: u64,
    /// Present on both, but the standby's value is not an older one of the primary's: a newer
    /// count, or a value that fails verification (a bug either way).
    diverged: u64,
}

#[derive(Debug, Default)]
struct Comparison {
    sessions: Sessions,
    /// Each order key on the standby: whether it holds the primary's value, intact.
    orders_on_standby: HashMap<Vec<u8>, bool>,
    verified: u64,
    bad: u64,
    /// Sessions of the primary absent on the standby whose deadline fell before the standby was
    /// scanned (or within [`EXPIRY_MARGIN`] after): they expired since. Not counted as lost.
    expiring: u64,
    /// Sessions on the standby only, whose copy expires within [`EXPIRY_MARGIN`]: likewise, not
    /// counted as extra.
    expiring_extra: u64,
}

/// One entry seen by a scan, with the instant it expires.
struct Seen {
    value: Vec<u8>,
    deadline: Option<Instant>,
}

fn contents(store: &Store) -> Result<HashMap<Vec<u8>, Seen>, Failure> {
    let at = Instant::now();
    let mut m = HashMap::new();
    store.scan(|e| {
        if !e.key.starts_with(DEMO_PREFIX) {
            m.insert(e.key, Seen { value: e.value, deadline: e.meta.ttl_left.map(|t| at + t) });
        }
    })?;
    Ok(m)
}

/// Compares the dead primary's segment with the promoted standby's.
///
/// Both are scanned at once, as soon after the primary's death as the failover allows; what
/// the primary holds then is "the primary at its death" (minus what expired in those few ms).
/// Visitors' sessions expire by the thousand each second on both sides alike, so a session of
/// the primary that is absent on the standby is counted as `expiring`, not lost, when its
/// deadline falls before the scans ended plus `margin` ([`EXPIRY_MARGIN`] in the demo: a
/// standby's copy of a deadline is shipped as time left, rounded down to the ms, and can be a
/// few ms off). Likewise a session only on the standby that is about to expire is not counted
/// as extra: its primary copy expired a few ms earlier.
fn compare(primary: &Store, standby: &Store, margin: Duration) -> Result<Comparison, Failure> {
    // Both at once, so that as little as possible expires between the two looks at a session.
    let (p, s) = std::thread::scope(|t| {
        let p = t.spawn(|| contents(primary));
        let s = contents(standby);
        (p.join().unwrap_or_else(|_| Err(Failure::error("the scan of the primary panicked"))), s)
    });
    let (p, s) = (p?, s?);
    let horizon = Instant::now() + margin;
    let expiring = |e: &Seen| e.deadline.is_some_and(|d| d <= horizon);
    let is_order = |k: &[u8]| k.starts_with(ORDER_PREFIX.as_bytes());

    let mut c = Comparison::default();
    for (k, e) in &s {
        if worker::verify(k, &e.value) {
            c.verified += 1;
        } else {
            c.bad += 1;
        }
        if is_order(k) {
            let intact = p.get(k).is_some_and(|pe| pe.value == e.value) && worker::verify(k, &e.value);
            c.orders_on_standby.insert(k.clone(), intact);
        } else if !p.contains_key(k) {
            if expiring(e) {
                c.expiring_extra += 1;
            } else {
                c.sessions.extra += 1;
            }
        }
    }
    for (k, e) in p.iter().filter(|(k, _)| !is_order(k)) {
        c.sessions.at_death += 1;
        match s.get(k) {
            None if expiring(e) => c.expiring += 1,
            None => c.sessions.lost += 1,
            Some(se) if se.value == e.value => c.sessions.kept += 1,
            // A torn or foreign value has no count to compare (and is counted bad above).
            Some(se) if !worker::verify(k, &se.value) => c.sessions.diverged += 1,
            Some(se) => {
                let older = worker::request_count_of(k, &se.value) < worker::request_count_of(k, &e.value);
                if older {
                    c.sessions.stale += 1;
                } else {
                    c.sessions.diverged += 1;
                }
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_of_a_lag_is_interpolated_from_the_feed_history() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // The feed head was 100 at t0, 200 at t0 + 10 ms, 300 at t0 + 20 ms; now is t0 + 30 ms
        // and the head 400.
        let h = FeedHistory(VecDeque::from([(t0, 100), (t0 + ms(10), 200), (t0 + ms(20), 300)]));
        let now = t0 + ms(30);
        assert_eq!(h.age_of(400, now, 400), Some(Duration::ZERO), "nothing outstanding");
        assert_eq!(h.age_of(500, now, 400), Some(Duration::ZERO), "acknowledged past the head");
        // Acknowledged up to 250: the feed was there at t0 + 15 ms.
        let age = h.age_of(250, now, 400).unwrap();
        assert!(age.abs_diff(ms(15)) < Duration::from_micros(10), "{age:?}");
        // Up to 350: between the last sample and now.
        let age = h.age_of(350, now, 400).unwrap();
        assert!(age.abs_diff(ms(5)) < Duration::from_micros(10), "{age:?}");
        // Older than the history.
        assert_eq!(h.age_of(50, now, 400), None);
    }

    /// Two small segments, destroyed when dropped.
    struct Pair(String, String);

    impl Drop for Pair {
        fn drop(&mut self) {
            let _ = Store::destroy(&self.0);
            let _ = Store::destroy(&self.1);
        }
    }

    #[test]
    fn the_comparison_sorts_every_session_into_its_class() {
        let pid = std::process::id();
        let pair = Pair(format!("gds-demo-unit-{pid}-p"), format!("gds-demo-unit-{pid}-s"));
        let opts =
            Options { capacity_bytes: 8 << 20, max_entries: 1024, max_value: 4096, ..Options::default() };
        let (p, s) = (Store::create(&pair.0, &opts).unwrap(), Store::create(&pair.1, &opts).unwrap());
        let v = |k: &str, count: u64| worker::sealed_value(k.as_bytes(), count, b"filler");
        let put = |st: &Store, k: &str, val: &[u8], e: Expiry| st.set(k.as_bytes(), val, e).unwrap();
        let never = Expiry::Never;
        // Due within the margin of the scans (a wide one, so that a slow machine cannot let these
        // expire before they are scanned).
        let soon = Expiry::After(Duration::from_secs(5));
        for (st, count) in [(&p, 1), (&s, 1)] {
            put(st, "kept", &v("kept", count), never);
            put(st, "demo:marker", b"not a session", never);
        }
        put(&p, "stale", &v("stale", 3), never);
        put(&s, "stale", &v("stale", 2), never);
        put(&p, "lost", &v("lost", 0), never);
        put(&s, "extra", &v("extra", 0), never);
        put(&p, "expiring", &v("expiring", 0), soon);
        put(&s, "expiring-extra", &v("expiring-extra", 0), soon);
        put(&p, "diverged", &v("diverged", 2), never);
        put(&s, "diverged", &v("diverged", 5), never);
        put(&p, "bad", &v("bad", 1), never);
        put(&s, "bad", b"torn", never);
        for st in [&p, &s] {
            put(st, "order:1-000001", &v("order:1-000001", 1), never);
        }
        put(&p, "order:1-000002", &v("order:1-000002", 1), never);
        put(&s, "order:1-000002", &v("order:1-000002", 7), never);

        let c = compare(&p, &s, Duration::from_secs(60)).unwrap();
        let got = &c.sessions;
        assert_eq!(got.at_death, 6, "{c:?}"); // kept, stale, lost, expiring, diverged, bad: no order
        assert_eq!((got.kept, got.stale, got.lost, got.extra, got.diverged), (1, 1, 1, 1, 2), "{c:?}");
        assert_eq!((c.expiring, c.expiring_extra), (1, 1), "{c:?}");
        assert_eq!(c.bad, 1, "only the torn value fails verification: {c:?}");
        assert_eq!(c.orders_on_standby.get(&b"order:1-000001"[..]), Some(&true));
        assert_eq!(c.orders_on_standby.get(&b"order:1-000002"[..]), Some(&false), "not the primary's value");
    }

    #[test]
    fn durations_print_with_sensible_precision() {
        assert_eq!(ms(Duration::ZERO), "0 ms");
        assert_eq!(ms(Duration::from_micros(57)), "0.06 ms");
        assert_eq!(ms(Duration::from_micros(1_640)), "1.6 ms");
        assert_eq!(ms(Duration::from_micros(12_400)), "12 ms");
        assert_eq!(ms(Duration::from_millis(1_234)), "1,234 ms");
    }
}
