//! What the replication tests share: segments, scratch directories, daemons as processes,
//! polling with deadlines, and content comparison. Each test binary uses part of it.

#![allow(dead_code)]

use gardenstate::{Error, Expiry, Options, Store, WriteMode};
use std::collections::BTreeMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_gardenstate");

/// A segment name unique to the test and process, destroyed when dropped.
pub struct Seg(pub String);

impl Seg {
    pub fn new(tag: &str) -> Seg {
        let name = format!("gds-repl-{tag}-{}", std::process::id());
        let _ = Store::destroy(&name);
        Seg(name)
    }
    pub fn create(&self) -> Store {
        let opts = Options {
            capacity_bytes: 32 << 20,
            max_entries: 16_384,
            max_value: 4096,
            max_clients: 64,
            feed_len: 1 << 16,
            ..Options::default()
        };
        Store::create(&self.0, &opts).unwrap()
    }
    pub fn exists(&self) -> bool {
        gardenstate::shm_dir().join(&self.0).exists()
    }
}

impl Drop for Seg {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
    }
}

/// A scratch directory (key files, daemon logs), removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("gds-repl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn key(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running daemon, killed (SIGKILL) and reaped when dropped; its stderr goes to a file.
pub struct Daemon {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Scratch, tag: &str, args: &[&str]) -> Daemon {
        Daemon::start_with_env(dir, tag, args, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_with_env(dir: &Scratch, tag: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.args(args).envs(env.iter().copied());
        Daemon::run(cmd, dir.0.join(format!("{tag}.log")))
    }

    /// Runs `cmd` (the binary, or a wrapper that execs it) with its stderr to `log`.
    pub fn run(mut cmd: Command, log: PathBuf) -> Daemon {
        let stderr = std::fs::File::create(&log).unwrap();
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().expect("start gardenstate");
        Daemon { child: Some(child), log }
    }
    pub fn primary(dir: &Scratch, seg: &Seg, port: u16, key: &std::path::Path) -> Daemon {
        let addr = format!("127.0.0.1:{port}");
        let d = Daemon::start(
            dir,
            "primary",
            &["primary", "--segment", &seg.0, "--listen", &addr, "--key-file", key.to_str().unwrap()],
        );
        // Wait until it listens.
        wait_logged("the primary to listen", Duration::from_secs(10), &[&d], || d.log().contains("serving"));
        d
    }
    pub fn standby(dir: &Scratch, seg: &Seg, port: u16, key: &std::path::Path) -> Daemon {
        let addr = format!("127.0.0.1:{port}");
        Daemon::start(
            dir,
            "standby",
            &["standby", "--segment", &seg.0, "--connect", &addr, "--key-file", key.to_str().unwrap()],
        )
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port number free on 127.0.0.1 for TCP and UDP both (a daemon binds both on its listen
/// port), for a daemon to bind later. Taken below the kernel's ephemeral range: a number from
/// `bind(0)` is free only until the daemon binds it, and meanwhile any socket the kernel
/// numbers itself (a connect, a proxy's UDP socket, in this test or one running beside it)
/// may take it; below that range only another `free_port` can, and within a process it never
/// gives the same number twice.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32_768);
    let (from, span) = (10_000, low.saturating_sub(10_000));
    let start = u64::from(std::process::id()) * 7_919;
    for _ in 0..span {
        let port = (from + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port)).is_ok();
        if tcp && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    wait_until_or(what, timeout, f, String::new);
}

/// `wait_until`, and a timeout's message carries the daemons' logs (what each did, or why it
/// stopped).
pub fn wait_logged(what: &str, timeout: Duration, daemons: &[&Daemon], f: impl FnMut() -> bool) {
    wait_until_or(what, timeout, f, || {
        let logs = daemons.iter().map(|d| format!("--- {}:\n{}", d.log.display(), d.log()));
        logs.collect::<Vec<_>>().join("\n")
    });
}

fn wait_until_or(what: &str, timeout: Duration, mut f: impl FnMut() -> bool, more: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}\n{}", more());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets its flag when dropped, also while a panic unwinds. A scoped thread that runs until a
/// flag is set would otherwise keep a failed test's `thread::scope` waiting for it forever:
/// the test hangs, and its panic message is never shown (the harness prints a test's output
/// when the test ends). Make it the first thing in the scope's closure.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Key -> (value, ms of TTL left, lock id) of every live entry.
pub type Content = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>, Option<u64>)>;

pub fn content(s: &Store) -> Content {
    let mut m = BTreeMap::new();
    s.scan(|e| {
        let ttl = e.meta.ttl_left.map(|d| d.as_millis() as u64);
        m.insert(e.key, (e.value, ttl, e.meta.lock.map(|l| l.lock_id)));
    })
    .unwrap();
    m
}

/// Same keys, values and locks; TTLs both absent or within 3 s of each other.
pub fn same(a: &Content, b: &Content) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, (va, ta, la)), (kb, (vb, tb, lb)))| {
            ka == kb
                && va == vb
                && la == lb
                && match (ta, tb) {
                    (None, None) => true,
                    (Some(x), Some(y)) => x.abs_diff(*y) <= 3_000,
                    _ => false,
                }
        })
}

/// Waits until the standby segment exists and holds exactly what the primary holds.
pub fn wait_converged(primary: &Store, standby: &Seg, timeout: Duration) -> Store {
    wait_until("the standby segment to appear", timeout, || standby.exists());
    let replica = Store::attach(&standby.0).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let (p, r) = (content(primary), content(&replica));
        if same(&p, &r) {
            return replica;
        }
        if Instant::now() > deadline {
            let missing = p.keys().filter(|k| !r.contains_key(*k)).count();
            let extra = r.keys().filter(|k| !p.contains_key(*k)).count();
            panic!(
                "no convergence: primary {} entries, standby {}, {missing} missing, {extra} extra",
                p.len(),
                r.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a mix of operations until `stop`: sets with no, fixed, sliding and short TTLs,
/// deletes, locks and unlocks, over `keys` keys.
pub fn churn(store: &Store, keys: u32, stop: &AtomicBool) -> u64 {
    churn_to(store, keys, stop, None)
}

/// Churns `store` until it has written 1,500 changes, then waits until the standby segment
/// holds exactly the same, as a read-only replica of the primary's history; returns it.
pub fn churn_then_converge(store: &Store, standby: &Seg, timeout: Duration) -> Store {
    let stop = AtomicBool::new(false);
    let limit = AtomicU64::new(store.feed_head() + 1_500);
    std::thread::scope(|s| {
        let w = s.spawn(|| churn_to(store, 2_000, &stop, Some(&limit)));
        wait_until("the writer's 1,500 changes", Duration::from_secs(120), || {
            store.feed_head() >= limit.load(Ordering::Relaxed)
        });
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap()
    });
    let replica = wait_converged(store, standby, timeout);
    assert_eq!(replica.write_mode(), WriteMode::Replica);
    assert_eq!(replica.history_id(), store.history_id());
    assert!(matches!(replica.set(b"x", b"y", Expiry::Never), Err(Error::ReadOnly)));
    replica
}

/// `churn`, writing only while the store's feed head is below `limit` if given (waiting for
/// the test to raise it otherwise): the test decides how many changes are written between
/// two of its steps, whatever the machine's speed. Each operation writes at most two
/// changes, so the head stops at most two past the limit.
pub fn churn_to(store: &Store, keys: u32, stop: &AtomicBool, limit: Option<&AtomicU64>) -> u64 {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ std::process::id() as u64;
    let mut ops = 0;
    while !stop.load(Ordering::Relaxed) {
        if limit.is_some_and(|l| store.feed_head() >= l.load(Ordering::Relaxed)) {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("k{}", x % keys as u64);
        let value = vec![(x >> 8) as u8; (x >> 16) as usize % 600];
        let r = match x >> 40 & 15 {
            0..=5 => store.set(key.as_bytes(), &value, Expiry::Never).map(drop),
            6..=7 => store.set(key.as_bytes(), &value, Expiry::After(Duration::from_secs(600))).map(drop),
            8 => store.set(key.as_bytes(), &value, Expiry::Sliding(Duration::from_secs(600))).map(drop),
            9 => store.set(key.as_bytes(), &value, Expiry::After(Duration::from_millis(200))).map(drop),
            10..=11 => store.delete(key.as_bytes()).map(drop),
            12 => store.lock(key.as_bytes(), Duration::from_secs(60)).map(drop),
            13 => match store.lock(key.as_bytes(), Duration::from_secs(60)) {
                Ok(Some(l)) => store.unlock(key.as_bytes(), l.lock_id),
                r => r.map(drop),
            },
            _ => store.get(key.as_bytes()).map(drop),
        };
        match r {
            Ok(()) | Err(Error::Locked { .. }) | Err(Error::NotFound) => ops += 1,
            Err(e) => panic!("writer: {e}"),
        }
    }
    ops
}

/// A cuttable link: TCP connections and UDP datagrams arriving on `port` are forwarded to
/// `target` (same port number for both protocols). While cut, nothing passes and open TCP
/// connections are shut down.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// No accepts: with the listen queue filled (`black_hole`), connects hang.
    hold: Arc<AtomicBool>,
    /// The connections that fill the listen queue.
    fillers: Mutex<Vec<TcpStream>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target_port: u16) -> Proxy {
        let target: SocketAddr = ([127, 0, 0, 1], target_port).into();
        let (tcp, outer) = loop {
            let t = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = t.local_addr().unwrap().port();
            if let Ok(u) = UdpSocket::bind(("127.0.0.1", port)) {
                break (t, u);
            }
        };
        let port = tcp.local_addr().unwrap().port();
        let inner = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&outer, &inner] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        tcp.set_nonblocking(true).unwrap();
        let p = Proxy {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            hold: Arc::new(AtomicBool::new(false)),
            fillers: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (outer2, inner2) = (outer.try_clone().unwrap(), inner.try_clone().unwrap());
        let (cut, stop, c) = (p.cut.clone(), p.stop.clone(), client.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = outer.recv_from(&mut buf) {
                    *c.lock().unwrap() = Some(from);
                    if !cut.load(Ordering::Relaxed) {
                        let _ = inner.send_to(&buf[..n], target);
                    }
                }
            }
        });
        let (cut, stop) = (p.cut.clone(), p.stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = inner2.recv_from(&mut buf) {
                    let to = *client.lock().unwrap();
                    if let (false, Some(to)) = (cut.load(Ordering::Relaxed), to) {
                        let _ = outer2.send_to(&buf[..n], to);
                    }
                }
            }
        });
        let (cut, stop, conns, hold) = (p.cut.clone(), p.stop.clone(), p.conns.clone(), p.hold.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if hold.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let Ok((a, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if cut.load(Ordering::Relaxed) {
                    continue; // dropped: the connection closes
                }
                let Ok(b) = TcpStream::connect(target) else { continue };
                a.set_nonblocking(false).unwrap();
                for (from, to) in [(&a, &b), (&b, &a)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
                conns.lock().unwrap().extend([a, b]);
            }
        });
        p
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Cuts the link and makes the address a black hole: new connects hang in their handshake
    /// (the listen queue is filled and nothing is accepted, so the kernel drops their SYNs),
    /// as when a host vanishes from the network. Not undone by `heal`.
    pub fn black_hole(&self) {
        self.hold.store(true, Ordering::SeqCst);
        self.cut();
        let to: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut fillers = self.fillers.lock().unwrap();
        while let Ok(c) = TcpStream::connect_timeout(&to, Duration::from_millis(200)) {
            fillers.push(c);
            assert!(fillers.len() < 10_000, "the listen queue never filled");
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}
