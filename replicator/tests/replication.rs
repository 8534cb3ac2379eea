//! End-to-end replication: the built `gardenstate` binary runs as a primary and a standby, two
//! processes on 127.0.0.1, each on a segment of its own (as on two hosts). Every test names its
//! segments after itself and this process, picks free ports, and kills its daemons and
//! destroys its segments when it ends, also on panic (the guards' `Drop`). Convergence is
//! checked by polling with a deadline, never by sleeping a fixed time.

use gardenstate::{Error, Expiry, Options, Store, WriteMode};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gardenstate");

/// A segment name unique to the test and process, destroyed when dropped.
struct Seg(String);

impl Seg {
    fn new(tag: &str) -> Seg {
        let name = format!("gds-repl-{tag}-{}", std::process::id());
        let _ = Store::destroy(&name);
        Seg(name)
    }
    fn create(&self) -> Store {
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
    fn exists(&self) -> bool {
        gardenstate::shm_dir().join(&self.0).exists()
    }
}

impl Drop for Seg {
    fn drop(&mut self) {
        let _ = Store::destroy(&self.0);
    }
}

/// A scratch directory (key files, daemon logs), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("gds-repl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn key(&self, name: &str, bytes: &[u8]) -> PathBuf {
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
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Scratch, tag: &str, args: &[&str]) -> Daemon {
        let log = dir.0.join(format!("{tag}.log"));
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start gardenstate");
        Daemon { child: Some(child), log }
    }
    fn primary(dir: &Scratch, seg: &Seg, port: u16, key: &std::path::Path) -> Daemon {
        let addr = format!("127.0.0.1:{port}");
        let d = Daemon::start(
            dir,
            "primary",
            &["primary", "--segment", &seg.0, "--listen", &addr, "--key-file", key.to_str().unwrap()],
        );
        // Wait until it listens.
        wait_until("the primary to listen", Duration::from_secs(10), || d.log().contains("serving"));
        d
    }
    fn standby(dir: &Scratch, seg: &Seg, port: u16, key: &std::path::Path) -> Daemon {
        let addr = format!("127.0.0.1:{port}");
        Daemon::start(
            dir,
            "standby",
            &["standby", "--segment", &seg.0, "--connect", &addr, "--key-file", key.to_str().unwrap()],
        )
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn kill(&mut self) {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Key -> (value, ms of TTL left, lock id) of every live entry.
type Content = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>, Option<u64>)>;

fn content(s: &Store) -> Content {
    let mut m = BTreeMap::new();
    s.scan(|e| {
        let ttl = e.meta.ttl_left.map(|d| d.as_millis() as u64);
        m.insert(e.key, (e.value, ttl, e.meta.lock.map(|l| l.lock_id)));
    })
    .unwrap();
    m
}

/// Same keys, values and locks; TTLs both absent or within 3 s of each other.
fn same(a: &Content, b: &Content) -> bool {
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
fn wait_converged(primary: &Store, standby: &Seg, timeout: Duration) -> Store {
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
fn churn(store: &Store, keys: u32, stop: &AtomicBool) -> u64 {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ std::process::id() as u64;
    let mut ops = 0;
    while !stop.load(Ordering::Relaxed) {
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

struct Pair {
    dir: Scratch,
    primary_seg: Seg,
    standby_seg: Seg,
    port: u16,
    key: PathBuf,
}

fn pair(tag: &str) -> (Pair, Store) {
    let dir = Scratch::new(tag);
    let key = dir.key("key", b"correct horse battery staple 0123456789");
    let (primary_seg, standby_seg) = (Seg::new(&format!("{tag}-p")), Seg::new(&format!("{tag}-s")));
    let store = primary_seg.create();
    (Pair { dir, primary_seg, standby_seg, port: free_port(), key }, store)
}

#[test]
fn writes_under_load_converge_on_the_standby() {
    let (p, store) = pair("load");
    let _primary = Daemon::primary(&p.dir, &p.primary_seg, p.port, &p.key);
    let standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    let stop = AtomicBool::new(false);
    let ops = std::thread::scope(|s| {
        let w = s.spawn(|| churn(&store, 2_000, &stop));
        std::thread::sleep(Duration::from_millis(1_500));
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap()
    });
    assert!(ops > 1_000, "the writer did only {ops} operations");
    let replica = wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
    assert_eq!(replica.write_mode(), WriteMode::Replica);
    assert_eq!(replica.history_id(), store.history_id());
    assert!(matches!(replica.set(b"x", b"y", Expiry::Never), Err(Error::ReadOnly)));
    assert!(standby.log().contains("snapshot applied"), "{}", standby.log());
}

#[test]
fn a_late_standby_gets_a_snapshot_while_writes_go_on() {
    let (p, store) = pair("late");
    for i in 0..5_000u32 {
        store.set(format!("k{i}").as_bytes(), &[i as u8; 100], Expiry::Never).unwrap();
    }
    let _primary = Daemon::primary(&p.dir, &p.primary_seg, p.port, &p.key);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let w = s.spawn(|| churn(&store, 8_000, &stop));
        std::thread::sleep(Duration::from_millis(300));
        let standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
        wait_until("the snapshot", Duration::from_secs(20), || standby.log().contains("snapshot applied"));
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
        let replica = wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
        assert!(content(&replica).len() > 4_000);
    });
}

#[test]
fn after_a_crash_the_promoted_standby_has_every_acknowledged_write() {
    let (p, store) = pair("crash");
    let mut primary = Daemon::primary(&p.dir, &p.primary_seg, p.port, &p.key);
    let mut standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    wait_until("the standby to sync", Duration::from_secs(20), || standby.log().contains("snapshot applied"));
    let store = Arc::new(store);
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, count) = (store.clone(), stop.clone(), acked_count.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = (format!("w{i}"), format!("value-{i}"));
                let version = store.set(k.as_bytes(), v.as_bytes(), Expiry::Never).unwrap();
                if store.wait_replicated(version, Duration::from_secs(5)) {
                    acked.push((k, v));
                    count.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            acked
        })
    };
    // Background load from a second thread, unacknowledged.
    let load = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || churn(&store, 1_000, &stop))
    };
    wait_until("50 acknowledged writes", Duration::from_secs(20), || {
        acked_count.load(Ordering::Relaxed) >= 50
    });
    primary.kill(); // SIGKILL, under load
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    load.join().unwrap();
    assert!(acked.len() >= 50);

    let replica = Store::attach(&p.standby_seg.0).unwrap();
    assert!(matches!(replica.set(b"local", b"x", Expiry::Never), Err(Error::ReadOnly)));
    standby.kill(); // stop the standby daemon, then promote
    let out = Command::new(BIN).args(["promote", "--segment", &p.standby_seg.0]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(replica.write_mode(), WriteMode::Writable);
    assert_eq!(replica.epoch(), store.epoch() + 1);
    for (k, v) in &acked {
        let got = replica.get(k.as_bytes()).unwrap();
        assert_eq!(got.map(|e| e.value), Some(v.as_bytes().to_vec()), "acknowledged write {k} is missing");
    }
    replica.set(b"local", b"x", Expiry::Never).unwrap();
    let again = Command::new(BIN).args(["promote", "--segment", &p.standby_seg.0]).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already writable"));
}

#[test]
fn a_standby_with_the_wrong_key_is_refused() {
    let (p, store) = pair("wrongkey");
    store.set(b"secret", b"session", Expiry::Never).unwrap();
    let other = p.dir.key("other", b"not the primary's key, but long enough");
    let primary = Daemon::primary(&p.dir, &p.primary_seg, p.port, &p.key);
    let standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &other);
    wait_until("the primary to refuse the standby", Duration::from_secs(10), || {
        primary.log().contains("refused connection")
    });
    wait_until("the standby to log the failure", Duration::from_secs(10), || {
        standby.log().contains("failed authentication")
    });
    assert!(primary.log().contains("authentication failed"), "{}", primary.log());
    assert!(!p.standby_seg.exists(), "the refused standby created its segment");
    assert!(!primary.log().contains("authenticated"), "{}", primary.log());
}

#[test]
fn garbage_on_the_port_is_dropped_and_the_primary_keeps_serving() {
    let (p, store) = pair("garbage");
    for i in 0..100u32 {
        store.set(format!("k{i}").as_bytes(), b"v", Expiry::Never).unwrap();
    }
    let primary = Daemon::primary(&p.dir, &p.primary_seg, p.port, &p.key);
    let mut raw = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = raw.write_all(&junk);
    let mut sink = Vec::new();
    // The primary closes the connection (EOF, or a reset since unread junk remains).
    let _ = raw.read_to_end(&mut sink);
    assert!(sink.is_empty(), "the primary sent {} bytes to an unauthenticated peer", sink.len());
    wait_until("the primary to log the refusal", Duration::from_secs(10), || {
        primary.log().contains("refused connection")
    });
    let _standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    store.set(b"after", b"garbage", Expiry::Never).unwrap();
    wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
}

#[test]
fn a_standby_never_follows_a_recreated_primary_over_its_sessions() {
    let (p, store) = pair("reboot");
    store.set(b"precious", b"session", Expiry::Never).unwrap();
    let mut primary = Daemon::primary(&p.dir, &p.primary_seg, p.port, &p.key);
    let mut standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
    // The primary host "reboots": its daemon dies and its segment comes back empty.
    primary.kill();
    drop(store);
    Store::destroy(&p.primary_seg.0).unwrap();
    let fresh = p.primary_seg.create();
    let _primary = Daemon::primary(&p.dir, &p.primary_seg, p.port, &p.key);
    let status = {
        let child = standby.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the standby kept running: {}", standby.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(!status.success());
    assert!(standby.log().contains("was recreated"), "{}", standby.log());
    let replica = Store::attach(&p.standby_seg.0).unwrap();
    assert_eq!(replica.get(b"precious").unwrap().map(|e| e.value), Some(b"session".to_vec()));
    assert_eq!(content(&fresh).len(), 0);
}
