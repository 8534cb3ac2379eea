//! Three hosts on one machine for `three_hosts.rs`: network namespaces joined by a bridge
//! that lives in a fourth namespace (the switch), so no address or interface is ever made in
//! the machine's own namespace; partitions with `tc`; and a delay line (`DelayLine`) that
//! makes one host's link slow and lossy.
//!
//! Partitions: this kernel has neither netem nor iptables/nft, so each host's `eth0` gets an
//! `htb` root whose default class passes everything and whose class `1:2` ends in a
//! `blackhole` qdisc; one `u32` filter per cut destination sends its packets there. A cut is
//! made on both hosts' egress (both directions).
//!
//! The delay line: the host's link is a pair of TAP devices, one in the host's namespace and
//! one on the switch's bridge, and a thread of the test process forwards frames between them,
//! each after a fixed delay and each dropped with a given probability (the frames keep their
//! order). The thread enters each namespace (`setns`, per thread) only to open its TAP device.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hosts' names in messages, by index: the first primary, the first standby, the witness.
pub const HOSTS: [&str; 3] = ["hA", "hB", "hW"];
/// Namespace names start with this and the test's process id (stale ones are removed).
const PREFIX: &str = "gds3h";

/// Why the namespaces could not be made.
pub enum Unavailable {
    /// The kernel cannot do it (no network namespaces, no veth/bridge/htb/blackhole, no TUN).
    Kernel(String),
    /// It could, but we may not (not root, a container without CAP_NET_ADMIN).
    Refused(String),
}

/// Runs a command; Err(its stderr) if it fails.
fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn classify(e: String) -> Unavailable {
    let refused = ["Operation not permitted", "Permission denied", "must be root"];
    if refused.iter().any(|r| e.contains(r)) { Unavailable::Refused(e) } else { Unavailable::Kernel(e) }
}

/// The namespaces and the links; everything is removed when dropped.
pub struct Net {
    /// hA, hB, hW, then the switch.
    ns: [String; 4],
    /// Cut (from, to) host pairs, each in both directions.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    /// The delay line on host 0's link, if asked for.
    pub delay: Option<DelayLine>,
}

impl Net {
    /// The address of host `h` (inside the namespaces only).
    pub fn ip(h: usize) -> String {
        format!("10.77.0.{}", h + 1)
    }

    /// Makes the hosts; with `delay_line`, host 0's link runs through a `DelayLine`.
    pub fn setup(delay_line: bool) -> Result<Net, Unavailable> {
        if !std::path::Path::new("/proc/self/ns/net").exists() {
            return Err(Unavailable::Kernel("no network namespaces (/proc/self/ns/net)".into()));
        }
        remove_stale();
        let pid = std::process::id();
        let ns = ["a", "b", "w", "s"].map(|t| format!("{PREFIX}-{pid}-{t}{}", u8::from(delay_line)));
        let net = Net { ns, cuts: Mutex::new(BTreeSet::new()), delay: None };
        net.build(delay_line).map_err(classify)
    }

    fn build(mut self, delay_line: bool) -> Result<Net, String> {
        for n in &self.ns {
            run(&["ip", "netns", "add", n])?;
            run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        let sw = self.ns[3].clone();
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        for h in 0..3 {
            let port = format!("p{h}");
            if h == 0 && delay_line {
                run(&["ip", "-n", &self.ns[0], "tuntap", "add", "dev", "eth0", "mode", "tap"])?;
                run(&["ip", "-n", &sw, "tuntap", "add", "dev", &port, "mode", "tap"])?;
                self.delay = Some(DelayLine::start(&self.ns[0], "eth0", &sw, &port)?);
            } else {
                let peer = ["netns", self.ns[h].as_str()];
                run(&[
                    "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", peer[0],
                    peer[1],
                ])?;
            }
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            let n = &self.ns[h];
            run(&["ip", "-n", n, "addr", "add", &format!("{}/24", Net::ip(h)), "dev", "eth0"])?;
            run(&["ip", "-n", n, "link", "set", "eth0", "up"])?;
            // The partition classes: 1:1 passes (the default), 1:2 ends in a blackhole.
            run(&[
                "tc", "-n", n, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1",
            ])?;
            for (class, rate) in [("1:1", "10gbit"), ("1:2", "1mbit")] {
                run(&[
                    "tc", "-n", n, "class", "add", "dev", "eth0", "parent", "1:", "classid", class, "htb",
                    "rate", rate,
                ])?;
            }
            run(&[
                "tc",
                "-n",
                n,
                "qdisc",
                "add",
                "dev",
                "eth0",
                "parent",
                "1:2",
                "handle",
                "20:",
                "blackhole",
            ])?;
        }
        Ok(self)
    }

    /// A command run inside host `h`.
    pub fn command(&self, h: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[h], program]);
        c
    }

    /// Cuts host `h` off from every other host (both directions).
    pub fn isolate(&self, h: usize) {
        let mut cuts = self.cuts.lock().unwrap();
        for o in (0..3).filter(|o| *o != h) {
            cuts.insert((h, o));
            cuts.insert((o, h));
        }
        self.apply(&cuts);
    }

    /// Cuts hosts `a` and `b` off from each other (both directions).
    pub fn cut(&self, a: usize, b: usize) {
        let mut cuts = self.cuts.lock().unwrap();
        cuts.insert((a, b));
        cuts.insert((b, a));
        self.apply(&cuts);
    }

    /// Heals every cut.
    pub fn heal(&self) {
        let mut cuts = self.cuts.lock().unwrap();
        cuts.clear();
        self.apply(&cuts);
    }

    /// Rewrites every host's filters from `cuts`.
    fn apply(&self, cuts: &BTreeSet<(usize, usize)>) {
        for h in 0..3 {
            let n = &self.ns[h];
            // No filters yet is fine (the first cut).
            let _ = run(&["tc", "-n", n, "filter", "del", "dev", "eth0", "parent", "1:"]);
            for (_, to) in cuts.iter().filter(|(from, _)| *from == h) {
                let dst = format!("{}/32", Net::ip(*to));
                run(&[
                    "tc", "-n", n, "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio",
                    "1", "u32", "match", "ip", "dst", &dst, "flowid", "1:2",
                ])
                .unwrap_or_else(|e| panic!("partition filter: {e}"));
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(d) = &self.delay {
            d.stop();
        }
        for n in &self.ns {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

/// Removes namespaces left by a test process that no longer exists (killed before its Drop).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix(&format!("{PREFIX}-")).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// Opens the TAP device `dev` of namespace `ns` (on this thread, which stays there).
fn open_tap(ns: &str, dev: &str) -> Result<OwnedFd, String> {
    let nsf = std::fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| format!("netns {ns}: {e}"))?;
    // SAFETY: setns on a valid namespace descriptor; it changes only this thread's namespace.
    if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("/dev/net/tun: {e}"))?;
    // struct ifreq: the name (16 bytes), then the flags (a short) in the union.
    let mut ifr = [0u8; 40];
    ifr[..dev.len()].copy_from_slice(dev.as_bytes());
    let flags: libc::c_short = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is large enough to hold.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) } != 0 {
        return Err(format!("TUNSETIFF {dev} in {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(tun.into())
}

/// A link that delays every frame by `delay` and drops each with probability `loss`, both
/// changeable while it runs (zero at start).
pub struct DelayLine {
    delay_us: Arc<AtomicU64>,
    /// Drop probability in parts per million.
    loss_ppm: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Frames forwarded and dropped, both directions.
    pub counts: Arc<(AtomicU64, AtomicU64)>,
}

impl DelayLine {
    fn start(ns_a: &str, dev_a: &str, ns_b: &str, dev_b: &str) -> Result<DelayLine, String> {
        let (a, b) = (ns_a.to_string(), ns_b.to_string());
        let (da, db) = (dev_a.to_string(), dev_b.to_string());
        // The namespaces are entered on a thread of its own, which ends after opening both.
        let (fa, fb) = std::thread::spawn(move || Ok::<_, String>((open_tap(&a, &da)?, open_tap(&b, &db)?)))
            .join()
            .map_err(|_| "the TAP opener panicked".to_string())??;
        let line = DelayLine {
            delay_us: Arc::new(AtomicU64::new(0)),
            loss_ppm: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            counts: Arc::new((AtomicU64::new(0), AtomicU64::new(0))),
        };
        let (fa, fb) = (Arc::new(fa), Arc::new(fb));
        for (from, to, seed) in [(fa.clone(), fb.clone(), 1u64), (fb, fa, 2)] {
            line.direction(from, to, seed);
        }
        Ok(line)
    }

    /// One direction: a reader that stamps and drops, a writer that waits out the delay.
    fn direction(&self, from: Arc<OwnedFd>, to: Arc<OwnedFd>, seed: u64) {
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        let (delay, loss, stop, counts) =
            (self.delay_us.clone(), self.loss_ppm.clone(), self.stop.clone(), self.counts.clone());
        std::thread::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd { fd: from.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                    continue;
                }
                // SAFETY: reads at most buf.len() bytes into buf.
                let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    continue;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x % 1_000_000 < loss.load(Ordering::Relaxed) {
                    counts.1.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let at = Instant::now() + Duration::from_micros(delay.load(Ordering::Relaxed));
                if tx.send((at, buf[..n as usize].to_vec())).is_err() {
                    return;
                }
            }
        });
        let counts = self.counts.clone();
        std::thread::spawn(move || {
            for (at, frame) in rx {
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                // SAFETY: writes one whole frame from a live buffer.
                unsafe { libc::write(to.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
                counts.0.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Sets the one-way delay and the drop probability of each frame, each direction.
    pub fn set(&self, delay: Duration, loss: f64) {
        self.delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
        self.loss_ppm.store((loss * 1e6) as u64, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
