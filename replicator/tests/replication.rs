//! End-to-end replication: the built `gardenstate` binary runs as a primary and a standby, two
//! processes on 127.0.0.1, each on a segment of its own (as on two hosts). Every test names its
//! segments after itself and this process, picks free ports, and kills its daemons and
//! destroys its segments when it ends, also on panic (the guards' `Drop`). Convergence is
//! checked by polling with a deadline, never by sleeping a fixed time.

use gardenstate::{Error, Expiry, Store, WriteMode};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::*;
use gardenstate_replicator::replication::auth;
use gardenstate_replicator::replication::frame::{
    self, EntryFrame, HANDSHAKE_MAX_PAYLOAD, Hello, Message, PROTOCOL_VERSION, Role, Shape,
};
use gardenstate_replicator::replication::transport::Conn;

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
    churn_then_converge(&store, &p.standby_seg, Duration::from_secs(20));
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
        let _stop = StopOnDrop(&stop); // a failed wait fails the test, not hangs it
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
    // A hang bound, not a timing: under TSan the daemons run ~10x slower (20 s was too short).
    wait_until("50 acknowledged writes", Duration::from_secs(120), || {
        acked_count.load(Ordering::Relaxed) >= 50
    });
    primary.kill(); // SIGKILL, under load
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    load.join().unwrap();
    assert!(acked.len() >= 50);

    let replica = Store::attach(&p.standby_seg.0).unwrap();
    assert!(matches!(replica.set(b"local", b"x", Expiry::Never), Err(Error::ReadOnly)));
    // A worker of the standby's host sees the failover in its replication state.
    let before = replica.replication_state();
    assert_eq!(before.role, gardenstate::Role::Standby);
    standby.kill(); // stop the standby daemon, then promote
    let out = Command::new(BIN).args(["promote", "--segment", &p.standby_seg.0]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(replica.write_mode(), WriteMode::Writable);
    assert_eq!(replica.epoch(), store.epoch() + 1);
    let after = replica.replication_state();
    assert_eq!((after.role, after.epoch), (gardenstate::Role::Primary, store.epoch() + 1));
    assert!(
        after.changes > before.changes,
        "promotion did not move the change counter: {before:?} -> {after:?}"
    );
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
    // Refused connections leave no socket behind (a flapping link must not leak them).
    let pid = primary.child.as_ref().unwrap().id();
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let before = fds();
    for i in 0..60 {
        let mut c = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(&junk[..64]);
        // Closed by the primary: EOF or a reset, never a wait (a kept socket never closes).
        if let Err(e) = c.read_to_end(&mut Vec::new()) {
            assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "{i}: {e}"
            );
        }
    }
    wait_until("the refused connections' sockets to close", Duration::from_secs(10), || fds() < before + 10);
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

/// `gardenstate stats` shows what the daemons publish, and the primary serves `/metrics`.
#[test]
fn stats_and_metrics_show_the_daemons_replication_state() {
    let (p, store) = pair("observe");
    let metrics_port = free_port();
    let addr = format!("127.0.0.1:{}", p.port);
    let metrics = format!("127.0.0.1:{metrics_port}");
    let key = p.key.to_str().unwrap();
    let args = [
        "primary",
        "--segment",
        &p.primary_seg.0,
        "--listen",
        &addr,
        "--key-file",
        key,
        "--metrics",
        &metrics,
    ];
    let primary = Daemon::start(&p.dir, "primary", &args);
    wait_logged("the primary to listen", Duration::from_secs(10), &[&primary], || {
        primary.log().contains("serving")
    });
    let _standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    for i in 0..500u32 {
        store.set(format!("k{i}").as_bytes(), b"value", Expiry::Never).unwrap();
    }
    wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
    let json = |seg: &str| -> serde_json::Value {
        let out = Command::new(BIN).args(["stats", seg, "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    wait_until("the primary's status to show the acknowledged standby", Duration::from_secs(10), || {
        let r = &json(&p.primary_seg.0)["replication"];
        r["role"] == "primary"
            && r["connected"] == true
            && r["lag_entries"] == 0
            && r["daemon_running"] == true
    });
    // The status file is rewritten every 500 ms.
    wait_until("the standby's status to show what it applied", Duration::from_secs(10), || {
        let r = &json(&p.standby_seg.0)["replication"];
        r["role"] == "standby" && r["connected"] == true && r["applied_entries"].as_u64() >= Some(500)
    });
    let mut conn = TcpStream::connect(&metrics).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for name in [
        "gardenstate_replication_lag_entries",
        "gardenstate_replication_shipped_frames_total",
        "gardenstate_live_entries",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing from:\n{text}");
    }
}

/// How many changes the writer makes while the link is down.
#[derive(Clone, Copy)]
enum Break {
    /// `n` x (round + 1): far fewer than the feed's 65,536 entries, so the feed still holds
    /// everything the standby lacks.
    Within(u64),
    /// More than the feed holds, counted from the moment the primary's stream ended (its
    /// follower cannot have read past that): the feed is overrun, whatever the machine's speed.
    PastTheFeed,
}

/// Breaks the link under load through a proxy, round after round, and checks after each heal
/// that the standby converged to exactly the primary's content. Every step is counted in
/// changes written (the writer stops at a limit the test raises), not timed. Returns
/// (reconnections, resumes from the backlog, snapshots sent) as the daemons logged them.
fn break_the_link_under_load(tag: &str, during: Break) -> (usize, usize, usize) {
    let (p, store) = pair(tag);
    let feed_len = store.info().options().feed_len;
    let proxy = Proxy::start(p.port);
    let addr = format!("127.0.0.1:{}", p.port);
    let key = p.key.to_str().unwrap();
    let args = ["primary", "--segment", &p.primary_seg.0, "--listen", &addr, "--key-file", key];
    let primary = Daemon::start(&p.dir, "primary", &args);
    wait_logged("the primary to listen", Duration::from_secs(10), &[&primary], || {
        primary.log().contains("serving")
    });
    let standby = Daemon::standby(&p.dir, &p.standby_seg, proxy.port, &p.key);
    wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
    let rounds = 4;
    for round in 0..rounds {
        let mut healed = None;
        let stop = AtomicBool::new(false);
        let limit = AtomicU64::new(0);
        // Lets the writer make `n` more changes and waits until it has.
        let write = |what: &str, n: u64| {
            let target = store.feed_head() + n;
            limit.store(target, Ordering::Relaxed);
            wait_logged(what, Duration::from_secs(120), &[&primary, &standby], || {
                store.feed_head() >= target
            });
        };
        std::thread::scope(|s| {
            let w = s.spawn(|| churn_to(&store, 3000, &stop, Some(&limit)));
            write("changes before the break", 2_000);
            let closed = primary.log().matches("connection closed").count();
            proxy.cut();
            match during {
                Break::Within(n) => write("changes during the break", n * (round + 1)),
                Break::PastTheFeed => {
                    wait_logged("the primary to see the break", Duration::from_secs(60), &[&primary], || {
                        primary.log().matches("connection closed").count() > closed
                    });
                    write("changes past the feed during the break", feed_len + 1_000);
                }
            }
            proxy.heal();
            healed = Some(Instant::now());
            write("changes after the heal", 2_000);
            stop.store(true, Ordering::Relaxed);
            w.join().unwrap()
        });
        // Generous (here it takes 0.3 to 0.7 s): a reconnect and a snapshot on a loaded
        // 2-vCPU machine.
        let replica = wait_converged(&store, &p.standby_seg, Duration::from_secs(90));
        let converged = healed.unwrap().elapsed();
        eprintln!("round {round}: converged {converged:?} after the heal");
        // The order-independent digests agree too (entries, values, locks, expiry kinds),
        // once the writer's 200 ms TTLs have run out on both sides.
        wait_until("equal digests", Duration::from_secs(5), || {
            store.digest().unwrap() == replica.digest().unwrap()
        });
    }
    let reconnects = standby.log().matches("authenticated with primary").count() - 1;
    assert!(reconnects >= rounds as usize, "the link did not break every round: {}", standby.log());
    let log = primary.log();
    (reconnects, log.matches("resumed at position").count(), log.matches("snapshot of").count())
}

/// A break the change feed covers: the standby resumes where it was (the backlog holds what
/// was in flight when the link broke, the feed what was written during the break), without a
/// snapshot, and converges every time.
#[test]
fn a_link_broken_under_load_resumes_from_the_backlog() {
    // 2,000 to 8,000 changes during a break: well inside the feed's 65,536.
    let (reconnects, resumed, snapshots) = break_the_link_under_load("flaky", Break::Within(2_000));
    eprintln!("{reconnects} reconnections: {resumed} resumed from the backlog, {snapshots} snapshots");
    assert!(resumed >= 1, "no reconnection resumed from the backlog");
    assert!(snapshots < 1 + reconnects, "every reconnection took a snapshot");
}

/// A break the feed does not cover (more changes written during it than the feed holds): the
/// stream takes the resync path (a snapshot) instead, and still converges every time.
#[test]
fn a_break_longer_than_the_feed_resyncs_with_a_snapshot() {
    let (reconnects, resumed, snapshots) = break_the_link_under_load("flaky-fast", Break::PastTheFeed);
    eprintln!("{reconnects} reconnections: {resumed} resumed from the backlog, {snapshots} snapshots");
    assert!(snapshots >= 1 + reconnects - resumed, "a reconnection neither resumed nor took a snapshot");
    assert!(snapshots > 1, "no reconnection took the snapshot path");
}

/// A primary played by the test, frame by frame, so a standby can be cut at an exact point
/// of its session (no race with a real primary's timing).
struct ScriptedPrimary {
    listener: std::net::TcpListener,
    key: gardenstate_replicator::replication::auth::Key,
    hello: Hello,
}

impl ScriptedPrimary {
    fn new(port: u16, key: &std::path::Path, like: &Store) -> ScriptedPrimary {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let hello = Hello {
            proto: PROTOCOL_VERSION as u16,
            role: Role::Primary,
            history: like.history_id(),
            epoch: like.epoch(),
            feed_head: 0,
            shape: Shape::of(&like.info().options()),
        };
        ScriptedPrimary { listener, key: auth::Key::from_file(key).unwrap(), hello }
    }

    /// Accepts the standby's next connection, authenticates it and swaps Hellos; returns the
    /// connection and the standby's Hello.
    fn accept(&self, standby: &Daemon) -> (Conn, Hello) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let conn = loop {
            match self.listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the standby did not reconnect:\n{}", standby.log());
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut conn = Conn::plain(conn);
        let keys = auth::primary_handshake(&mut conn, &self.key).unwrap();
        conn.seal(keys);
        conn.write_all(&frame::encode(&Message::Hello(self.hello.clone()))).unwrap();
        let theirs = match frame::read_frame(&mut conn, HANDSHAKE_MAX_PAYLOAD, &mut Vec::new()) {
            Ok(Message::Hello(h)) => h,
            r => panic!("expected the standby's Hello, got {r:?}:\n{}", standby.log()),
        };
        (conn, theirs)
    }
}

fn entry(key: &str, pos: u64) -> Message {
    Message::Entry(EntryFrame {
        pos,
        key: key.as_bytes().to_vec(),
        value: b"value".to_vec(),
        ttl_left_ms: None,
        sliding_ms: None,
        lock: None,
    })
}

fn send(conn: &mut Conn, frames: &[Message]) {
    let mut out = Vec::new();
    for m in frames {
        frame::encode_into(m, &mut out);
    }
    conn.write_all(&out).unwrap();
}

/// A link that breaks while the standby loads a snapshot leaves its replica incomplete
/// (history 0). Reconnecting to the same primary, the standby resyncs: it must not take its
/// own half-loaded replica for one of another history and exit (as it did: a feed-overrun
/// test under load saw its standby stop after such a break and never converge).
#[test]
fn a_standby_cut_off_mid_snapshot_resyncs_from_the_same_primary() {
    let (p, store) = pair("midsnap");
    let primary = ScriptedPrimary::new(p.port, &p.key, &store);
    let standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    let (mut conn, _) = primary.accept(&standby);
    send(&mut conn, &[Message::SnapshotBegin, entry("half", 0)]);
    drop(conn); // the break, mid-snapshot: the standby applies what was sent, then sees EOF
    let (mut conn, theirs) = primary.accept(&standby);
    assert_eq!(theirs.history, 0, "the interrupted replica did not mark itself incomplete");
    assert_eq!(theirs.feed_head, 0, "an incomplete replica offered to resume");
    let replica = Store::attach(&p.standby_seg.0).unwrap();
    assert_eq!(replica.history_id(), 0, "incomplete, yet marked complete before its snapshot ended");
    send(&mut conn, &[Message::SnapshotBegin, entry("a", 0), entry("b", 0), Message::SnapshotEnd { pos: 7 }]);
    send(&mut conn, &[Message::Heartbeat { pos: 7 }]);
    wait_until("the resync to complete", Duration::from_secs(30), || {
        replica.history_id() == store.history_id() || standby.log().contains("ERROR")
    });
    assert!(!standby.log().contains("ERROR"), "{}", standby.log());
    let keys: Vec<Vec<u8>> = content(&replica).into_keys().collect();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()], "{}", standby.log());
}

/// A fresh standby is no replica until its first snapshot ends: from the handshake on it
/// is in replica mode with history 0, which F1 (node.rs) reads as "incomplete, never
/// promote". It used to take the primary's history at the handshake, so a primary lost
/// before the snapshot began left a promotable empty segment.
#[test]
fn a_fresh_standby_is_incomplete_until_its_first_snapshot_ends() {
    let (p, store) = pair("fresh");
    let primary = ScriptedPrimary::new(p.port, &p.key, &store);
    let standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    let (mut conn, _) = primary.accept(&standby);
    let mut attached = None;
    wait_until("the standby to enter replica mode", Duration::from_secs(30), || {
        attached = Store::attach(&p.standby_seg.0).ok();
        attached.as_ref().is_some_and(|s| s.write_mode() == WriteMode::Replica)
    });
    let replica = attached.expect("attached");
    assert_eq!(replica.history_id(), 0, "counted as a replica before any snapshot:\n{}", standby.log());
    send(&mut conn, &[Message::SnapshotBegin, entry("a", 0), Message::SnapshotEnd { pos: 1 }]);
    send(&mut conn, &[Message::Heartbeat { pos: 1 }]);
    wait_until("the snapshot to complete", Duration::from_secs(30), || {
        replica.history_id() == store.history_id()
    });
    assert!(!standby.log().contains("ERROR"), "{}", standby.log());
}

/// The reconnect backoff is for refusals: a session that caught up with the primary (here, a
/// whole snapshot and a heartbeat) resets it, so a link that breaks again and again between
/// good sessions reconnects after the shortest wait, while a refused connect still doubles
/// it. Checked on the delays the standby logs, not on a clock.
#[test]
fn a_session_that_caught_up_resets_the_reconnect_backoff() {
    let (p, store) = pair("backoff");
    let primary = ScriptedPrimary::new(p.port, &p.key, &store);
    let standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    let sessions = 6;
    for i in 0..sessions {
        let (mut conn, _) = primary.accept(&standby);
        let pos = 10 * (i + 1);
        send(&mut conn, &[Message::SnapshotBegin, entry("k", pos), Message::SnapshotEnd { pos }]);
        send(&mut conn, &[Message::Heartbeat { pos }]);
        // Its ack says it applied the snapshot (an earlier ack may still say where the last
        // session got); then the link breaks.
        loop {
            match frame::read_frame(&mut conn, 4096, &mut Vec::new()) {
                Ok(Message::Ack { pos: acked }) if acked >= pos => break,
                Ok(Message::Ack { .. }) => {}
                r => panic!("expected an Ack, got {r:?}:\n{}", standby.log()),
            }
        }
    }
    drop(primary); // from now on every connect is refused
    wait_until("three refused connects", Duration::from_secs(30), || {
        standby.log().matches("cannot connect").count() >= 3
    });
    let log = standby.log();
    let delays: Vec<&str> = log.lines().filter_map(|l| l.split("; reconnecting in ").nth(1)).collect();
    // Before: 100ms 200ms 400ms 800ms 1.6s 3.2s, then 5s for a healed link.
    assert_eq!(delays[..sessions as usize], ["100ms"; 6], "{log}");
    assert_eq!(delays[sessions as usize..sessions as usize + 2], ["200ms", "400ms"], "{log}");
}

/// What the tampering proxy does to the next sealed record from the primary.
const PASS: u8 = 0;
const FLIP: u8 = 1;
const DROP: u8 = 2;
const REPEAT: u8 = 3;
const INJECT: u8 = 4;

/// A TCP proxy in the path of the replication stream that, after a good handshake (the
/// primary's Challenge and Response frames pass untouched), parses the primary's sealed
/// records (seal.rs) and does what `mode` says to the next one, once.
fn tampering_proxy(target: u16, mode: Arc<std::sync::atomic::AtomicU8>) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for a in l.incoming() {
            let Ok(a) = a else { continue };
            let Ok(b) = TcpStream::connect(("127.0.0.1", target)) else { continue };
            let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a2, &mut b2);
                let _ = b2.shutdown(std::net::Shutdown::Both);
            });
            let mode = mode.clone();
            std::thread::spawn(move || {
                let (mut from, mut to) = (b, a);
                let mut relay = || -> std::io::Result<()> {
                    // The handshake: Challenge(np) and Response, 48 bytes each.
                    let mut hs = [0u8; 96];
                    from.read_exact(&mut hs)?;
                    to.write_all(&hs)?;
                    loop {
                        let mut len = [0u8; 4];
                        from.read_exact(&mut len)?;
                        let mut rest = vec![0u8; u32::from_le_bytes(len) as usize + 32];
                        from.read_exact(&mut rest)?;
                        let record = [&len[..], &rest].concat();
                        match mode.swap(PASS, Ordering::SeqCst) {
                            FLIP => {
                                let mut r = record.clone();
                                r[6] ^= 0x40;
                                to.write_all(&r)?;
                            }
                            DROP => {}
                            REPEAT => {
                                to.write_all(&record)?;
                                to.write_all(&record)?;
                            }
                            INJECT => {
                                // A well-formed Entry frame in a record with a made-up tag.
                                let evil = frame::encode(&Message::Entry(EntryFrame {
                                    pos: 1 << 40,
                                    key: b"evil".to_vec(),
                                    value: b"injected".to_vec(),
                                    ttl_left_ms: None,
                                    sliding_ms: None,
                                    lock: None,
                                }));
                                to.write_all(&(evil.len() as u32).to_le_bytes())?;
                                to.write_all(&evil)?;
                                to.write_all(&[0u8; 32])?;
                                to.write_all(&record)?;
                            }
                            _ => to.write_all(&record)?,
                        }
                    }
                };
                let _ = relay();
                let _ = to.shutdown(std::net::Shutdown::Both);
                let _ = from.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// Without TLS, every byte after the handshake is sealed (seal.rs): a flipped byte, a
/// dropped, repeated or injected record each close the link with a logged reason, the bad
/// record never reaches the standby's segment, and the standby reconnects and converges.
#[test]
fn a_tampered_dropped_repeated_or_injected_record_closes_the_link_and_changes_nothing() {
    let (p, store) = pair("tamper");
    let mode = Arc::new(std::sync::atomic::AtomicU8::new(PASS));
    let proxy_port = tampering_proxy(p.port, mode.clone());
    let addr = format!("127.0.0.1:{}", p.port);
    let key = p.key.to_str().unwrap();
    let args = ["primary", "--segment", &p.primary_seg.0, "--listen", &addr, "--key-file", key];
    let primary = Daemon::start(&p.dir, "primary", &args);
    wait_logged("the primary to listen", Duration::from_secs(10), &[&primary], || {
        primary.log().contains("serving")
    });
    let standby = Daemon::standby(&p.dir, &p.standby_seg, proxy_port, &p.key);
    store.set(b"before", b"1", Expiry::Never).unwrap();
    wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
    let failures = || standby.log().matches("replication stream authentication failed").count();
    for (round, (what, m)) in
        [("flip", FLIP), ("drop", DROP), ("repeat", REPEAT), ("inject", INJECT)].into_iter().enumerate()
    {
        let before = failures();
        mode.store(m, Ordering::SeqCst);
        // Something to ship (a heartbeat would do too).
        store.set(what.as_bytes(), b"v", Expiry::Never).unwrap();
        wait_logged(
            &format!("{what}: the standby to refuse the stream"),
            Duration::from_secs(20),
            &[&standby],
            || failures() > before,
        );
        let replica = Store::attach(&p.standby_seg.0).unwrap();
        assert_eq!(replica.get(b"evil").unwrap(), None, "{what}: an injected entry reached the standby");
        drop(replica);
        wait_converged(&store, &p.standby_seg, Duration::from_secs(30));
        assert_eq!(failures(), before + 1, "round {round} ({what}): {}", standby.log());
    }
    let replica = Store::attach(&p.standby_seg.0).unwrap();
    assert_eq!(replica.get(b"evil").unwrap(), None);
}

/// Whether process `pid` is stopped (SIGSTOP: state `T` in /proc).
#[cfg(feature = "failpoints")]
fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) == Some("T")
}

/// A `gardenstate set` stopped (SIGSTOP, for as long as the test likes) between its feed
/// reservation and its publishing CAS: later writes still reach the standby, the primary
/// never acknowledges the stopped write's version before the standby has it, and once the
/// writer goes on its change is shipped (it was lost for good when the follower resynced past
/// it). Needs `--features failpoints` (the binary's `GDS_FAILPOINT`).
#[cfg(feature = "failpoints")]
#[test]
fn a_writer_stopped_mid_write_is_shipped_when_it_goes_on_and_never_acknowledged_before() {
    let (p, store) = pair("stopped");
    store.set(b"k", b"old", Expiry::Never).unwrap();
    let _primary = Daemon::primary(&p.dir, &p.primary_seg, p.port, &p.key);
    let standby = Daemon::standby(&p.dir, &p.standby_seg, p.port, &p.key);
    wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
    let mut writer = Command::new(BIN)
        .args(["set", &p.primary_seg.0, "k", "new"])
        .env("GDS_FAILPOINT", "update.before_publish:1:stop")
        .spawn()
        .unwrap();
    let pid = writer.id();
    struct Cont(u32);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
        }
    }
    let cont = Cont(pid);
    wait_until("the writer to stop at its failpoint", Duration::from_secs(20), || stopped(pid));
    let version = store.feed_head(); // the stopped write took the last position
    assert!(store.feed_claims().contains(&(version - 1)), "the stopped writer's claim is missing");
    // Later writes ship around it; the acknowledged position stays below it.
    store.set(b"later", b"1", Expiry::Never).unwrap();
    let replica = Store::attach(&p.standby_seg.0).unwrap();
    wait_logged("the later write on the standby", Duration::from_secs(20), &[&standby], || {
        replica.get(b"later").unwrap().is_some()
    });
    assert!(
        !store.wait_replicated(version, Duration::from_millis(300)),
        "acknowledged before it was written"
    );
    assert_eq!(replica.get(b"k").unwrap().map(|e| e.value), Some(b"old".to_vec()));
    drop(cont); // SIGCONT: it publishes and records its change
    assert!(writer.wait().unwrap().success());
    assert!(
        store.wait_replicated(version, Duration::from_secs(30)),
        "never acknowledged:\n{}",
        standby.log()
    );
    assert_eq!(
        replica.get(b"k").unwrap().map(|e| e.value),
        Some(b"new".to_vec()),
        "acknowledged, but the standby does not have it"
    );
    wait_converged(&store, &p.standby_seg, Duration::from_secs(20));
}

/// A flood of connections that never authenticate (two hundred at once, each reopened as soon
/// as the primary closes it), against a primary allowed 64 file descriptors: a standby
/// restarted meanwhile still gets in (it was locked out while the idle ones held every fd),
/// and the primary's log gets a bounded number of lines about them (it logged one per
/// connection: hundreds a second).
#[test]
fn a_flood_of_unauthenticated_connections_neither_locks_out_a_standby_nor_floods_the_log() {
    let dir = Scratch::new("flood");
    let key = dir.key("key", b"flood test key 0123456789abcdef");
    let (pseg, sseg) = (Seg::new("flood-p"), Seg::new("flood-s"));
    pseg.create();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.0.join("primary.log");
    let child = Command::new("prlimit")
        .args(["--nofile=64", BIN, "primary", "--segment", &pseg.0, "--listen", &addr, "--key-file"])
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let primary = Daemon { child: Some(child), log };
    wait_logged("the primary to serve", Duration::from_secs(10), &[&primary], || {
        primary.log().contains("serving")
    });
    let mut first = Daemon::standby(&dir, &sseg, port, &key);
    wait_logged("the standby's replica", Duration::from_secs(20), &[&primary, &first], || {
        Store::attach(&sseg.0).is_ok_and(|s| s.history_id() != 0)
    });
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            let mut open: Vec<TcpStream> = Vec::new();
            let to: std::net::SocketAddr = addr.parse().unwrap();
            while !stop.load(Ordering::Relaxed) {
                open.retain(|c| {
                    let mut b = [0u8; 64];
                    c.set_nonblocking(true).unwrap();
                    matches!((&*c).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while open.len() < 200 {
                    match TcpStream::connect_timeout(&to, Duration::from_millis(100)) {
                        Ok(c) => open.push(c),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        // The standby restarts in the middle of the flood.
        first.kill();
        let second = Daemon::start(
            &dir,
            "standby-again",
            &["standby", "--segment", &sseg.0, "--connect", &addr, "--key-file", key.to_str().unwrap()],
        );
        wait_logged("the restarted standby to get in", Duration::from_secs(30), &[&primary, &second], || {
            second.log().contains("authenticated with primary")
        });
        stop.store(true, Ordering::Relaxed);
    });
    let secs = t0.elapsed().as_secs();
    let log = primary.log();
    let lines =
        log.lines().filter(|l| l.contains("refused connection") || l.contains("accept failed")).count();
    eprintln!("flood for {secs} s: {lines} log lines about it");
    assert!(lines as u64 <= 5 * (secs + 2), "{lines} lines in {secs} s");
}

/// The write mode belongs to the daemon: a worker on the standby's host cannot make the
/// replica writable beside the daemon (it used to read writable while the daemon went on
/// applying the primary's stream), nor can one on the primary's host change the primary's.
#[test]
fn workers_cannot_set_the_write_mode_a_daemon_owns() {
    let dir = Scratch::new("mode-owner");
    let key = dir.key("key", b"mode owner test key 0123456789abcdef");
    let (pseg, sseg) = (Seg::new("mo-p"), Seg::new("mo-s"));
    let primary_store = pseg.create();
    let port = free_port();
    let primary = Daemon::primary(&dir, &pseg, port, &key);
    let standby = Daemon::standby(&dir, &sseg, port, &key);
    wait_logged("the standby's replica", Duration::from_secs(20), &[&primary, &standby], || {
        Store::attach(&sseg.0).is_ok_and(|s| s.history_id() != 0)
    });
    let replica = Store::attach(&sseg.0).unwrap();
    // The daemon names itself the owner when it opens the segment; wait to see that (a run in
    // about ten under load saw the request allowed right after the snapshot: not explained).
    wait_logged("the standby daemon to own the write mode", Duration::from_secs(20), &[&standby], || {
        replica.write_mode_owner().is_ok_and(|o| o.is_some())
    });
    let refused = replica.request_write_mode(WriteMode::Writable).unwrap_err().to_string();
    assert!(refused.contains("belongs to the replication daemon"), "{refused}");
    assert_eq!(replica.write_mode(), WriteMode::Replica);
    assert!(primary_store.request_write_mode(WriteMode::Fenced).is_err());
    assert_eq!(primary_store.write_mode(), WriteMode::Writable);
}

/// Sends SIGHUP to `d`.
fn hup(d: &Daemon) {
    let pid = d.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

/// How many lines of `d`'s log contain `needle`, waited for until there are `n`.
fn wait_count(d: &Daemon, what: &str, needle: &str, n: usize) {
    wait_logged(what, Duration::from_secs(20), &[d], || d.log().matches(needle).count() >= n);
}

/// A primary started from a config file, and the file (issue 21 item 4).
fn configured_primary(p: &Pair, extra: &str) -> (Daemon, PathBuf) {
    let file = p.dir.0.join("primary.toml");
    let base = format!(
        "segment = \"{}\"\nlisten = \"127.0.0.1:{}\"\nkey_file = \"{}\"\n",
        p.primary_seg.0,
        p.port,
        p.key.display()
    );
    std::fs::write(&file, format!("{base}{extra}")).unwrap();
    let d = Daemon::start(&p.dir, "primary", &["primary", "--config", file.to_str().unwrap()]);
    wait_logged("the primary to listen", Duration::from_secs(10), &[&d], || d.log().contains("serving"));
    (d, file)
}

/// SIGHUP reads the config file again: a new log_level applies at once (debug lines appear,
/// then info lines stop), while a changed timing is named as needing a restart and the daemon
/// keeps the one it started with (`config`, Reloading). Before, SIGHUP reloaded only the
/// certificates, and there was no log level.
#[test]
fn sighup_applies_the_log_level_and_leaves_timings_to_a_restart() {
    let (p, _store) = pair("reload-level");
    let (d, file) = configured_primary(&p, "");
    let base = std::fs::read_to_string(&file).unwrap();
    assert!(!d.log().contains(" DEBUG "), "{}", d.log());

    std::fs::write(&file, format!("{base}log_level = \"debug\"\nheartbeat = \"60ms\"\n")).unwrap();
    hup(&d);
    wait_count(&d, "the running settings at debug level", " DEBUG settings now:", 1);
    let log = d.log();
    assert!(log.contains("SIGHUP: applied log_level info -> debug"), "{log}");
    assert!(log.contains("SIGHUP: heartbeat changed: it needs a restart"), "{log}");
    let now = log.lines().find(|l| l.contains("settings now:")).unwrap();
    assert!(now.contains("heartbeat: 50ms") && now.contains("log_level: Debug"), "{now}");

    std::fs::write(&file, format!("{base}log_level = \"warn\"\nheartbeat = \"60ms\"\n")).unwrap();
    hup(&d);
    wait_count(&d, "the second reload", "SIGHUP: heartbeat changed", 2);
    assert!(d.log().contains("SIGHUP: applied log_level debug -> warn"), "{}", d.log());
    // At warn, a reload's info line is dropped; the warning after it is written.
    hup(&d);
    wait_count(&d, "the third reload", "SIGHUP: heartbeat changed", 3);
    let log = d.log();
    assert!(!log.contains("no setting changed"), "{log}");
    assert_eq!(log.matches(" DEBUG ").count(), 1, "{log}");
}

/// A config file that no longer resolves is logged on SIGHUP, and the daemon runs on with the
/// settings it had: the same file back again changes nothing.
#[test]
fn sighup_with_a_broken_config_file_keeps_the_running_settings() {
    let (p, _store) = pair("reload-bad");
    let (mut d, file) = configured_primary(&p, "tls_warn_days = 5\n");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, "segment = [\n").unwrap();
    hup(&d);
    wait_count(&d, "the broken file to be refused", "ERROR SIGHUP: settings not reloaded", 1);
    assert!(d.log().contains("primary.toml"), "{}", d.log());
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the bad file stopped the primary");
    std::fs::write(&file, good).unwrap();
    hup(&d);
    wait_count(&d, "the good file to be read again", "SIGHUP: no setting changed", 1);
    assert!(!d.log().contains("applied"), "{}", d.log());
}

/// The witness reloads its log settings on SIGHUP too.
#[test]
fn sighup_reloads_the_witness_log_level() {
    let dir = Scratch::new("reload-witness");
    let key = dir.key("key", b"correct horse battery staple 0123456789");
    let file = dir.0.join("witness.toml");
    let base = format!("listen = \"127.0.0.1:{}\"\nkey_file = \"{}\"\n", free_port(), key.display());
    std::fs::write(&file, &base).unwrap();
    let d = Daemon::start(&dir, "witness", &["witness", "--config", file.to_str().unwrap()]);
    wait_count(&d, "the witness to start", "witness: heartbeats on", 1);
    std::fs::write(&file, format!("{base}log_level = \"debug\"\nlog_format = \"json\"\n")).unwrap();
    hup(&d);
    wait_count(&d, "the witness's debug line", "\"level\":\"debug\"", 1);
    assert!(d.log().contains("applied log_level info -> debug, log_format text -> json"), "{}", d.log());
}
