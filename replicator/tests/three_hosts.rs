//! Failover on three hosts: the primary hA, the standby hB and the witness hW, each a network
//! namespace with its own address (10.77.0.1-3, port 7480) on a bridge inside a fourth
//! namespace (`net`), running the real daemons with their default timings. A writer per data
//! host writes to that host's segment about 1,000 times a second (refused while the host is
//! not primary), and every 20th write waits for the standby (`wait_replicated`, 1 s).
//!
//! Scenarios, each printing its figures (`three_hosts:` lines; run with `--nocapture`):
//! - **kill -9** of the primary's daemon and its workers: failover time (kill to the standby
//!   taking writes) and the window with no host taking writes; the killed host restarts as a
//!   standby of the new primary and the next round kills that one (3 rounds; `GDS_LONG=1`: 24,
//!   with p50/p99);
//! - **partition**: the primary's host cut off from both others (`tc`): when it fenced, when
//!   the standby took writes, the window between; then healed: when the old primary followed;
//! - **witness restart**: the primary cut off from the standby, then from the witness just as
//!   the witness is killed and restarted (the new process never heard the primary);
//! - **flapping**: the primary's host cut 1.2 s / healed 1.8 s, the host taking writes at
//!   each cut (3 times; long: 8): after a failover the new primary is cut in turn;
//! - **switchover** under the writers: the command's output, writes lost;
//! - **CPU saturation**: both CPUs kept busy by other processes (10 s; long: 60 s): fences
//!   and failovers (none expected);
//! - **HAProxy** (`three_hosts_haproxy_follows_the_primary`): Debian's haproxy on hW in front
//!   of an app server per data host (a Python `http.server` that writes each request's key to
//!   its host's segment with `gardenstate set`), checking `/health/primary` on each daemon;
//!   clients on hW send requests through it; hA's daemon and app server are killed (kill -9):
//!   the client-visible error window and the requests that failed (asserted only that
//!   requests resume on hB);
//! - **slow, lossy link** (`three_hosts_slow_lossy_link`): hA's link through a delay line
//!   of 50 ms each way and 5% loss each way (15 s; long: 60 s): fences and failovers (none
//!   expected).
//!
//! Asserted (safety only, never timing): never two hosts taking writes at once (both
//! segments sampled every millisecond: write mode and write lease); no write that waited for
//! the standby lost, at any failover and at the end; no write accepted by the old primary that
//! began after the new primary was seen taking writes; a switchover loses no write at all; after
//! every heal the hosts converge (one primary, one replica with the same content).
//!
//! Namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN). Where they are refused the test says
//! so and passes, except under CI (`CI=true`), where only a kernel that cannot make them (no
//! network namespaces, veth, bridge, htb, blackhole or TUN) is a skip. Everything is removed
//! on exit; namespaces left by a killed run are removed by the next one.

mod common;
mod net;

use common::*;
use gardenstate::{Error, Expiry, Options, Store, WriteMode};
use net::{HOSTS, Net, Unavailable};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PORT: u16 = 7480;
/// Each data host's metrics and health checks (`/health/primary`).
const METRICS_PORT: u16 = 9480;
/// Generous bounds for things to happen on a loaded machine; never asserted as timings.
const PATIENCE: Duration = Duration::from_secs(90);

fn long() -> bool {
    std::env::var("GDS_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn addr(h: usize) -> String {
    format!("{}:{PORT}", Net::ip(h))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// The hosts, or None after saying why they cannot be made (module doc).
fn hosts(delay_line: bool) -> Option<Net> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match Net::setup(delay_line) {
        Ok(n) => Some(n),
        Err(Unavailable::Kernel(why)) => {
            eprintln!("three_hosts: SKIPPED: this kernel cannot make the three hosts: {why}");
            None
        }
        Err(Unavailable::Refused(why)) if ci => {
            panic!("three_hosts: network namespaces refused under CI (run as root): {why}")
        }
        Err(Unavailable::Refused(why)) => {
            eprintln!("three_hosts: SKIPPED: network namespaces are not allowed here (needs root): {why}");
            None
        }
    }
}

/// Whether workers' writes to `s` would be accepted now.
fn takes_writes(s: &Store) -> bool {
    s.write_mode() == WriteMode::Writable && s.write_lease_left() != Some(Duration::ZERO)
}

/// One accepted write.
struct Rec {
    key: String,
    start: Instant,
    waited: bool,
}

/// A writer per data host, writing to that host's segment.
struct Writers {
    stop: AtomicBool,
    paused: [AtomicBool; 2],
    recs: [Mutex<Vec<Rec>>; 2],
}

impl Writers {
    fn run(&self, h: usize, seg: &str) {
        let mut store = None;
        let mut i = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            if store.is_none() {
                store = Store::attach(seg).ok();
            }
            let Some(st) = store.as_ref().filter(|_| !self.paused[h].load(Ordering::Relaxed)) else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let key = format!("{}{i}", ["a", "b"][h]);
            let start = Instant::now();
            match st.set(key.as_bytes(), b"v", Expiry::Never) {
                Ok(v) => {
                    let waited = i % 20 == 0 && st.wait_replicated(v, Duration::from_secs(1));
                    self.recs[h].lock().unwrap().push(Rec { key, start, waited });
                    i += 1;
                }
                Err(Error::ReadOnly) => {}
                Err(e) => panic!("writer on {}: {e}", HOSTS[h]),
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn pause(&self, on: bool) {
        for p in &self.paused {
            p.store(on, Ordering::Relaxed);
        }
    }
}

/// Samples both segments every millisecond: every change of which takes writes, and every
/// sample where both do.
struct Watch {
    stop: AtomicBool,
    events: Mutex<Vec<(Instant, [bool; 2])>>,
    both: AtomicU64,
    samples: AtomicU64,
}

impl Watch {
    fn run(&self, a: &Store, b: &Store) {
        let mut last = [false; 2];
        while !self.stop.load(Ordering::Relaxed) {
            let now = [takes_writes(a), takes_writes(b)];
            if now != last {
                self.events.lock().unwrap().push((Instant::now(), now));
                last = now;
            }
            if now == [true, true] {
                self.both.fetch_add(1, Ordering::Relaxed);
            }
            self.samples.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn state(&self) -> [bool; 2] {
        self.events.lock().unwrap().last().map_or([false; 2], |e| e.1)
    }

    /// When host `h` was first seen taking writes (`on`) or not (`!on`) at or after `t`.
    fn first(&self, h: usize, on: bool, t: Instant) -> Option<Instant> {
        if self.state_at(t)[h] == on {
            return Some(t);
        }
        self.events.lock().unwrap().iter().find(|(at, s)| *at >= t && s[h] == on).map(|e| e.0)
    }

    fn state_at(&self, t: Instant) -> [bool; 2] {
        self.events.lock().unwrap().iter().take_while(|(at, _)| *at <= t).last().map_or([false; 2], |e| e.1)
    }

    /// How long, between `from` and `to`, no host took writes.
    fn unwritable(&self, from: Instant, to: Instant) -> Duration {
        let ev = self.events.lock().unwrap();
        let mut at = from;
        let mut state = ev.iter().take_while(|(t, _)| *t <= from).last().map_or([false; 2], |e| e.1);
        let mut total = Duration::ZERO;
        for (t, s) in ev.iter().filter(|(t, _)| *t > from && *t < to) {
            if state == [false; 2] {
                total += *t - at;
            }
            (at, state) = (*t, *s);
        }
        if state == [false; 2] {
            total += to - at;
        }
        total
    }
}

/// The cluster: the three daemons, both segments, the writers and the watch.
struct Cluster<'n> {
    net: &'n Net,
    dir: Scratch,
    key: String,
    segs: [Seg; 2],
    daemons: [Option<Daemon>; 2],
    witness: Option<Daemon>,
    /// The host that is primary now.
    primary: usize,
    started: u32,
    /// Since when the standby holds everything the primary accepted (after a convergence).
    converged_at: Instant,
}

impl<'n> Cluster<'n> {
    fn start(net: &'n Net, tag: &str) -> Cluster<'n> {
        let dir = Scratch::new(tag);
        let key = dir.key("key", b"three hosts test key 0123456789abcdef").to_str().unwrap().to_string();
        let segs = [Seg::new(&format!("{tag}-a")), Seg::new(&format!("{tag}-b"))];
        let opts = Options {
            capacity_bytes: 192 << 20,
            max_entries: 1 << 20,
            max_value: 256,
            max_clients: 64,
            feed_len: 1 << 17,
            ..Options::default()
        };
        Store::create(&segs[0].0, &opts).unwrap();
        let mut c = Cluster {
            net,
            dir,
            key,
            segs,
            daemons: [None, None],
            witness: None,
            primary: 0,
            started: 0,
            converged_at: Instant::now(),
        };
        let key = c.key.clone();
        let w = c.spawn(2, &["witness", "--listen", &addr(2), "--key-file", &key]);
        c.witness = Some(w);
        c.daemons[0] = Some(c.data(0, "primary", &[]));
        c.daemons[1] = Some(c.data(1, "standby", &["--connect", &addr(0)]));
        c.wait("the primary to unfence", || c.log(0).contains("writes resumed"));
        c.wait("the standby's replica", || {
            Store::attach(&c.segs[1].0)
                .is_ok_and(|s| s.history_id() != 0 && s.write_mode() == WriteMode::Replica)
        });
        c
    }

    /// Starts a process of ours inside host `h`; its stderr goes to a log file.
    fn spawn(&mut self, h: usize, args: &[&str]) -> Daemon {
        self.started += 1;
        let log = self.dir.0.join(format!("{}-{}-{}.log", self.started, HOSTS[h], args[0]));
        let mut cmd = self.net.command(h, BIN);
        cmd.args(args);
        Daemon::run(cmd, log)
    }

    /// A data node on host `h` (default timings).
    fn data(&mut self, h: usize, role: &str, extra: &[&str]) -> Daemon {
        let (seg, key) = (self.segs[h].0.clone(), self.key.clone());
        let mut args = vec![role, "--segment", &seg, "--key-file", &key];
        let (listen, witness, metrics) = (addr(h), addr(2), format!("{}:{METRICS_PORT}", Net::ip(h)));
        args.extend(["--listen", &listen, "--witness", &witness, "--metrics", &metrics]);
        args.extend(extra);
        self.spawn(h, &args)
    }

    fn log(&self, h: usize) -> String {
        self.daemons[h].as_ref().map(Daemon::log).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(&self.dir.0).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                all += &format!(
                    "--- {}:\n{}\n",
                    e.path().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        all
    }

    fn wait(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn store(&self, h: usize) -> Store {
        Store::attach(&self.segs[h].0).unwrap()
    }

    /// Fence lines and promotions so far in every log.
    fn events(&self) -> (usize, usize) {
        let all: String = std::fs::read_dir(&self.dir.0)
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        (all.matches("fenced: writes refused").count(), all.matches("automatic failover:").count())
    }

    /// Pauses the writers until the standby holds exactly the primary's content, as a replica.
    fn converge(&mut self, w: &Writers, watch: &Watch) -> Duration {
        let t = Instant::now();
        let p = self.primary;
        self.wait("one host to take writes", || watch.state()[p]);
        w.pause(true);
        self.wait("the other host to follow", || {
            Store::attach(&self.segs[1 - p].0).is_ok_and(|s| s.write_mode() == WriteMode::Replica)
        });
        wait_converged(&self.store(p), &self.segs[1 - p], PATIENCE);
        self.converged_at = Instant::now();
        w.pause(false);
        t.elapsed()
    }

    /// Waited writes made on host `h` that host `to` does not hold.
    fn lost_waited(&self, w: &Writers, h: usize, to: usize) -> usize {
        let s = self.store(to);
        w.recs[h]
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.waited && s.get(r.key.as_bytes()).unwrap().is_none())
            .count()
    }

    /// Writes accepted on host `h` that began at or after `t`.
    fn accepted_since(w: &Writers, h: usize, t: Instant) -> usize {
        w.recs[h].lock().unwrap().iter().filter(|r| r.start >= t).count()
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        // Stop the daemons before the segments are destroyed and the namespaces deleted.
        for d in self.daemons.iter_mut().chain([&mut self.witness]).flatten() {
            d.kill();
        }
    }
}

/// Runs `body` with the cluster's writers and watch going; stops them after.
fn with_traffic(c: &mut Cluster, body: impl FnOnce(&mut Cluster, &Writers, &Watch)) {
    let w = Writers {
        stop: AtomicBool::new(false),
        paused: [AtomicBool::new(false), AtomicBool::new(false)],
        recs: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
    };
    let watch = Watch {
        stop: AtomicBool::new(false),
        events: Mutex::new(Vec::new()),
        both: AtomicU64::new(0),
        samples: AtomicU64::new(0),
    };
    let (a, b) = (c.store(0), c.store(1));
    let segs = [c.segs[0].0.clone(), c.segs[1].0.clone()];
    std::thread::scope(|s| {
        let _stop = (StopOnDrop(&w.stop), StopOnDrop(&watch.stop));
        s.spawn(|| watch.run(&a, &b));
        for (h, seg) in segs.iter().enumerate() {
            let w = &w;
            s.spawn(move || w.run(h, seg));
        }
        c.wait("the watch's first sample", || watch.samples.load(Ordering::Relaxed) > 0);
        body(c, &w, &watch);
        // The end: converged, no waited write lost anywhere, never two writable hosts.
        c.converge(&w, &watch);
        w.pause(true);
        let p = c.primary;
        let lost = c.lost_waited(&w, 0, p) + c.lost_waited(&w, 1, p);
        let waited: usize =
            w.recs.iter().map(|r| r.lock().unwrap().iter().filter(|r| r.waited).count()).sum();
        let accepted: usize = w.recs.iter().map(|r| r.lock().unwrap().len()).sum();
        let (both, samples) = (watch.both.load(Ordering::Relaxed), watch.samples.load(Ordering::Relaxed));
        eprintln!(
            "three_hosts: end: {accepted} writes accepted, {waited} waited, {lost} waited writes lost; \
             {both} of {samples} samples with two hosts taking writes; converged, primary {}",
            HOSTS[p]
        );
        assert_eq!(lost, 0, "waited writes lost\n{}", c.logs());
        assert_eq!(both, 0, "two hosts took writes at once\n{}", c.logs());
    });
}

fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[(v.len() * p).div_ceil(100).max(1) - 1]
}

/// kill -9 of the primary's daemon and its workers; the host comes back as a standby.
fn kill_rounds(c: &mut Cluster, w: &Writers, watch: &Watch) {
    let rounds = if long() { 24 } else { 3 };
    let (mut failover, mut windows) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (p, s) = (c.primary, 1 - c.primary);
        let t0 = Instant::now();
        w.paused[p].store(true, Ordering::Relaxed);
        c.daemons[p].as_mut().unwrap().kill();
        c.wait("the standby to take writes after the kill", || watch.state()[s]);
        let promoted = watch.first(s, true, t0).unwrap();
        let stopped = watch.first(p, false, t0).unwrap();
        let lost = c.lost_waited(w, p, s);
        eprintln!(
            "three_hosts: kill -9 round {round} ({} -> {}): failover {}, no host writable for {} (old lease ran out {} \
             after the kill), waited writes lost {lost}",
            HOSTS[p],
            HOSTS[s],
            ms(promoted - t0),
            ms(promoted.saturating_duration_since(stopped)),
            ms(stopped - t0),
        );
        assert_eq!(lost, 0, "waited writes lost in a kill -9 failover\n{}", c.logs());
        failover.push(promoted - t0);
        windows.push(promoted.saturating_duration_since(stopped));
        // The host comes back (its daemon restarted as a standby of the new primary).
        c.daemons[p] = Some(c.data(p, "standby", &["--connect", &addr(s)]));
        c.primary = s;
        let marker = format!("kill-round-{round}");
        c.store(s).set(marker.as_bytes(), b"m", Expiry::Never).unwrap();
        c.wait("the restarted host to follow", || {
            Store::attach(&c.segs[p].0).is_ok_and(|r| {
                r.write_mode() == WriteMode::Replica
                    && r.history_id() != 0
                    && r.get(marker.as_bytes()).is_ok_and(|e| e.is_some())
            })
        });
        w.paused[p].store(false, Ordering::Relaxed);
    }
    eprintln!(
        "three_hosts: kill -9 over {rounds} rounds: failover p50 {} p99 {} max {}; no-writable window p50 {} p99 {}",
        ms(percentile(&failover, 50)),
        ms(percentile(&failover, 99)),
        ms(*failover.iter().max().unwrap()),
        ms(percentile(&windows, 50)),
        ms(percentile(&windows, 99)),
    );
}

/// The primary's host cut off from both others, then healed.
fn partition(c: &mut Cluster, w: &Writers, watch: &Watch) {
    let (p, s) = (c.primary, 1 - c.primary);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    c.net.isolate(p);
    c.wait("the standby to take writes in the partition", || watch.state()[s]);
    let promoted = watch.first(s, true, t0).unwrap();
    let fenced = watch.first(p, false, t0).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let split = Cluster::accepted_since(w, p, promoted);
    let lost = c.lost_waited(w, p, s);
    let t1 = Instant::now();
    c.net.heal();
    c.primary = s;
    c.wait("the old primary to follow after the heal", || {
        Store::attach(&c.segs[p].0).is_ok_and(|r| r.write_mode() == WriteMode::Replica)
    });
    let followed = t1.elapsed();
    let converge = c.converge(w, watch);
    eprintln!(
        "three_hosts: partition of {}: fenced {} after the cut, {} took writes {} after it: no host writable for {}; \
         split-brain writes {split}, waited writes lost {lost}; healed: followed the new primary after {}, converged {} later",
        HOSTS[p],
        ms(fenced - t0),
        HOSTS[s],
        ms(promoted - t0),
        ms(promoted.saturating_duration_since(fenced)),
        ms(followed),
        ms(converge),
    );
    assert_eq!(split, 0, "the cut-off primary accepted writes after the promotion\n{}", c.logs());
    assert_eq!(lost, 0, "waited writes lost in a partition\n{}", c.logs());
}

/// The primary's host cut 1.2 s / healed 1.8 s, again and again: each cut takes the host that
/// takes writes at that moment (after a failover, the new primary), so a failover is followed
/// by the new primary's own cut.
fn flapping(c: &mut Cluster, w: &Writers, watch: &Watch) {
    let cycles = if long() { 8 } else { 3 };
    let mut h = c.primary;
    let mut cut = Vec::new();
    let (fences, promotions) = c.events();
    let t0 = Instant::now();
    for _ in 0..cycles {
        match watch.state() {
            [true, false] => h = 0,
            [false, true] => h = 1,
            _ => {} // nobody takes writes: the last one cut again
        }
        cut.push(HOSTS[h]);
        c.net.isolate(h);
        std::thread::sleep(Duration::from_millis(1200));
        c.net.heal();
        std::thread::sleep(Duration::from_millis(1800));
    }
    let span = t0.elapsed();
    let dark = watch.unwritable(t0, Instant::now());
    let (f, p) = c.events();
    let t1 = Instant::now();
    c.wait("a host to take writes after the flapping", || watch.state() != [false, false]);
    c.primary = if watch.state()[0] { 0 } else { 1 };
    let writable = t1.elapsed();
    let converge = c.converge(w, watch);
    eprintln!(
        "three_hosts: flapping ({cycles} x cut 1.2 s / heal 1.8 s of {}): {} fences, {} automatic failovers, no host \
         writable for {} of {}; a host took writes {} after the flapping, converged {} later, primary {}",
        cut.join(" "),
        f - fences,
        p - promotions,
        ms(dark),
        ms(span),
        ms(writable),
        ms(converge),
        HOSTS[c.primary],
    );
}

/// The witness killed and restarted just as the primary, already cut off from the standby,
/// loses it too: the new witness process never heard the primary, but the primary's lease may
/// still rest on the old one's echo.
fn witness_restart(c: &mut Cluster, w: &Writers, watch: &Watch) {
    let (p, s) = (c.primary, 1 - c.primary);
    c.net.cut(p, s);
    // The standby's own wait runs out; the witness still hears the primary, which stays writable.
    std::thread::sleep(Duration::from_millis(1500));
    let both = watch.both.load(Ordering::Relaxed);
    let t0 = Instant::now();
    c.net.cut(p, 2);
    c.witness.as_mut().unwrap().kill();
    let key = c.key.clone();
    c.witness = Some(c.spawn(2, &["witness", "--listen", &addr(2), "--key-file", &key]));
    c.wait("the standby to take writes after the witness restarted", || watch.state()[s]);
    c.wait("the cut-off primary to stop taking writes", || !watch.state()[p]);
    let promoted = watch.first(s, true, t0).unwrap();
    let fenced = watch.first(p, false, t0).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let both = watch.both.load(Ordering::Relaxed) - both;
    let split = Cluster::accepted_since(w, p, promoted);
    let lost = c.lost_waited(w, p, s);
    c.net.heal();
    c.primary = s;
    c.wait("the old primary to follow after the heal", || {
        Store::attach(&c.segs[p].0).is_ok_and(|r| r.write_mode() == WriteMode::Replica)
    });
    c.converge(w, watch);
    eprintln!(
        "three_hosts: witness restarted as {} lost the witness (cut from {} before): fenced {}, {} took writes {} \
         after; {both} samples with two hosts taking writes, split-brain writes {split}, waited writes lost {lost}",
        HOSTS[p],
        HOSTS[s],
        ms(fenced - t0),
        HOSTS[s],
        ms(promoted - t0),
    );
    assert_eq!(both, 0, "two hosts took writes after the witness restarted\n{}", c.logs());
    assert_eq!(split, 0, "the old primary accepted writes after the promotion\n{}", c.logs());
    assert_eq!(lost, 0, "waited writes lost\n{}", c.logs());
}

/// A planned switchover under the writers: nothing accepted may be lost.
fn switchover(c: &mut Cluster, w: &Writers, watch: &Watch) {
    let (p, s) = (c.primary, 1 - c.primary);
    let since = c.converged_at;
    let out = c
        .net
        .command(2, BIN)
        .args(["switchover", "--primary", &addr(p), "--key-file", &c.key])
        .output()
        .expect("run switchover");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "switchover failed: {said}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    c.primary = s;
    c.converge(w, watch);
    let st = c.store(s);
    let lost = w.recs[p]
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.start >= since && st.get(r.key.as_bytes()).unwrap().is_none())
        .count();
    eprintln!("three_hosts: switchover {} -> {}: {said}; writes lost {lost}", HOSTS[p], HOSTS[s]);
    assert_eq!(lost, 0, "a switchover lost writes\n{}", c.logs());
}

/// Both CPUs kept busy by other processes.
fn saturation(c: &mut Cluster, watch: &Watch) {
    let span = if long() { Duration::from_secs(60) } else { Duration::from_secs(10) };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (fences, promotions) = c.events();
    let t0 = Instant::now();
    let mut hogs: Vec<Child> = (0..cpus)
        .map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("sh"))
        .collect();
    std::thread::sleep(span);
    for h in &mut hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    let dark = watch.unwritable(t0, Instant::now());
    let (f, p) = c.events();
    eprintln!(
        "three_hosts: {cpus} CPUs saturated for {} s: {} fences, {} automatic failovers, no host writable for {}",
        span.as_secs(),
        f - fences,
        p - promotions,
        ms(dark)
    );
}

#[test]
fn kill_partition_flapping_switchover_and_saturation_on_three_hosts() {
    let Some(net) = hosts(false) else { return };
    let mut c = Cluster::start(&net, "3h");
    with_traffic(&mut c, |c, w, watch| {
        kill_rounds(c, w, watch);
        partition(c, w, watch);
        witness_restart(c, w, watch);
        flapping(c, w, watch);
        switchover(c, w, watch);
        saturation(c, watch);
    });
}

#[test]
fn three_hosts_slow_lossy_link() {
    let Some(net) = hosts(true) else { return };
    let mut c = Cluster::start(&net, "3hd");
    let line = net.delay.as_ref().expect("a delay line on hA's link");
    let span = if long() { Duration::from_secs(60) } else { Duration::from_secs(15) };
    with_traffic(&mut c, |c, _, watch| {
        let (fences, promotions) = c.events();
        let (sent, dropped) = (line.counts.0.load(Ordering::Relaxed), line.counts.1.load(Ordering::Relaxed));
        let t0 = Instant::now();
        line.set(Duration::from_millis(50), 0.05);
        std::thread::sleep(span);
        line.set(Duration::ZERO, 0.0);
        let dark = watch.unwritable(t0, Instant::now());
        let (f, p) = c.events();
        eprintln!(
            "three_hosts: hA's link 50 ms each way, 5% loss each way, for {} s: {} fences, {} automatic failovers, \
             no host writable for {}; frames forwarded {}, dropped {}",
            span.as_secs(),
            f - fences,
            p - promotions,
            ms(dark),
            line.counts.0.load(Ordering::Relaxed) - sent,
            line.counts.1.load(Ordering::Relaxed) - dropped,
        );
    });
}

/// The app server of a data host: `GET /set?k=KEY` writes KEY to the host's segment with
/// `gardenstate set` and answers 200 with the host's name, or 503 when the write is refused.
const APP: &str = r#"
import http.server, subprocess, sys, urllib.parse
bin, seg, host, addr = sys.argv[1:5]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        k = q.get("k", ["none"])[0]
        r = subprocess.run([bin, "set", seg, k, "v"], capture_output=True)
        body = (host if r.returncode == 0 else "refused: " + r.stderr.decode(errors="replace")).encode()
        self.send_response(200 if r.returncode == 0 else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((addr, 8080), H).serve_forever()
"#;

/// The load: `THREADS` clients sending requests one after the other until the stop file
/// appears, each result appended as `start_unix_ms end_unix_ms status host` (status 0: no
/// answer).
const CLIENT: &str = r#"
import http.client, os, sys, threading, time
url_host, out, stop = sys.argv[1:4]
lock = threading.Lock()
f = open(out, "a", buffering=1)
def run(t):
    n = 0
    while not os.path.exists(stop):
        n += 1
        start = time.time()
        try:
            c = http.client.HTTPConnection(url_host, 8000, timeout=5)
            c.request("GET", "/set?k=c%d-%d" % (t, n))
            r = c.getresponse()
            code, body = r.status, r.read().decode(errors="replace")
            c.close()
        except Exception as e:
            code, body = 0, type(e).__name__
        with lock:
            f.write("%d %d %d %s\n" % (int(start * 1000), int(time.time() * 1000), code, body.split()[0] if body else "-"))
ts = [threading.Thread(target=run, args=(t,)) for t in range(4)]
for t in ts: t.start()
for t in ts: t.join()
"#;

/// One client request: when it started and ended (unix ms), the status (0: no answer), and
/// who answered.
struct Req {
    start: u64,
    end: u64,
    code: u16,
    host: String,
}

fn requests(path: &std::path::Path) -> Vec<Req> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some(Req {
                start: p.next()?.parse().ok()?,
                end: p.next()?.parse().ok()?,
                code: p.next()?.parse().ok()?,
                host: p.next()?.to_string(),
            })
        })
        .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Debian's haproxy, installed when missing (apt-get update, install); None if it cannot be.
fn haproxy() -> Option<&'static str> {
    let path = "/usr/sbin/haproxy";
    if !std::path::Path::new(path).exists() {
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        let ok = apt(&["update", "-q"]) && apt(&["install", "-y", "-q", "haproxy"]);
        if !ok {
            eprintln!("three_hosts: apt-get install haproxy failed");
        }
    }
    std::path::Path::new(path).exists().then_some(path)
}

#[test]
fn three_hosts_haproxy_follows_the_primary() {
    let Some(net) = hosts(false) else { return };
    let Some(haproxy) = haproxy() else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "three_hosts: no haproxy under CI");
        eprintln!("three_hosts: SKIPPED: no haproxy");
        return;
    };
    let mut c = Cluster::start(&net, "3hx");
    let dir = c.dir.0.clone();
    let (app, client, cfg) = (dir.join("app.py"), dir.join("client.py"), dir.join("haproxy.cfg"));
    std::fs::write(&app, APP).unwrap();
    std::fs::write(&client, CLIENT).unwrap();
    let lb = Net::ip(2);
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 2000\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n\
             \x20   retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response 503\n\
             frontend fe\n    bind {lb}:8000\n    default_backend app\n\
             backend app\n    option httpchk GET /health/primary\n    http-check expect status 200\n\
             \x20   default-server inter 100ms fall 1 rise 1 on-marked-down shutdown-sessions\n\
             \x20   server hA {a}:8080 check port {METRICS_PORT}\n\
             \x20   server hB {b}:8080 check port {METRICS_PORT}\n",
            a = Net::ip(0),
            b = Net::ip(1),
        ),
    )
    .unwrap();
    let py = "/usr/bin/python3";
    let app_on = |c: &mut Cluster, h: usize| {
        let (a, seg, ip) = (app.to_str().unwrap(), c.segs[h].0.clone(), Net::ip(h));
        c.started += 1;
        let mut cmd = net.command(h, py);
        cmd.args([a, BIN, &seg, HOSTS[h], &ip]);
        Daemon::run(cmd, dir.join(format!("{}-{}-app.log", c.started, HOSTS[h])))
    };
    let mut apps = [Some(app_on(&mut c, 0)), Some(app_on(&mut c, 1))];
    let mut lb_cmd = net.command(2, haproxy);
    lb_cmd.args(["-db", "-f", cfg.to_str().unwrap()]);
    let _lb = Daemon::run(lb_cmd, dir.join("haproxy.log"));
    let (out, stop) = (dir.join("requests"), dir.join("stop"));
    let mut client_cmd = net.command(2, py);
    client_cmd.args([client.to_str().unwrap(), &lb, out.to_str().unwrap(), stop.to_str().unwrap()]);
    let mut load = Daemon::run(client_cmd, dir.join("client.log"));
    let ok_from = |r: &Req, h: usize| r.code == 200 && r.host == HOSTS[h];
    c.wait("requests answered by hA", || requests(&out).iter().filter(|r| ok_from(r, 0)).count() >= 200);
    // kill -9 of the primary host's processes: its daemon and its app server.
    let killed = unix_ms();
    c.daemons[0].as_mut().unwrap().kill();
    apps[0].as_mut().unwrap().kill();
    c.wait("requests answered by hB", || {
        requests(&out).iter().filter(|r| r.start >= killed && ok_from(r, 1)).count() >= 200
    });
    std::fs::write(&stop, b"").unwrap();
    let _ = load.child.as_mut().unwrap().wait();
    load.kill();
    // Counted from the first answer through the balancer (before it, haproxy was starting).
    let all = requests(&out);
    let first = all.iter().filter(|r| r.code == 200).map(|r| r.start).min().unwrap();
    let all: Vec<Req> = all.into_iter().filter(|r| r.start >= first).collect();
    let failed: Vec<&Req> = all.iter().filter(|r| r.code != 200).collect();
    let rel = |t: u64| t as i64 - killed as i64;
    let window = match (failed.iter().map(|r| r.start).min(), failed.iter().map(|r| r.end).max()) {
        (Some(a), Some(b)) => format!("{} ms (from {} ms to {} ms after the kill)", b - a, rel(a), rel(b)),
        _ => "none".into(),
    };
    let slowest = all.iter().filter(|r| r.end >= killed).map(|r| r.end - r.start).max().unwrap_or(0);
    let resumed = all.iter().filter(|r| r.start >= killed && ok_from(r, 1)).map(|r| r.end).min().unwrap();
    eprintln!(
        "three_hosts: haproxy: {} requests, {} failed ({:?}); client-visible error window {window}; first answer \
         from hB {} ms after the kill; slowest request across the kill {slowest} ms",
        all.len(),
        failed.len(),
        failed.iter().map(|r| (r.code, r.host.as_str())).collect::<std::collections::BTreeSet<_>>(),
        rel(resumed),
    );
    apps[1].take();
}
