//! Failover end to end: a primary, a standby and a witness as three processes on 127.0.0.1,
//! with the links that matter running through proxies the test can cut (`Proxy`: TCP and
//! UDP on one port, as the daemons use one port for both).
//!
//! What is checked, by sampling both segments' write modes every couple of milliseconds
//! while the links are cut and healed: never two writable segments at once (no split brain);
//! the cut-off primary fences itself; the standby promotes itself only with the witness's
//! agreement; every write that waited for the standby survives; the old primary, healed or
//! restarted empty, follows the new primary and never overwrites it; a planned switchover
//! loses nothing and reports its pause.

mod common;
use common::*;
use gardenstate::{Error, Expiry, Store, WriteMode};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Timings small enough for a test, within the rule fence + 3 x heartbeat < failover.
const TIMING: [&str; 8] =
    ["--heartbeat", "100ms", "--fence-after", "1s", "--failover-after", "2500ms", "--rejoin-after", "2s"];

/// Whether workers' writes to `s` would be accepted now: writable, and its write lease (if
/// any) not run out.
fn takes_writes(s: &Store) -> bool {
    s.write_mode() == WriteMode::Writable && s.write_lease_left() != Some(Duration::ZERO)
}

/// Samples two segments until stopped; records any instant both would take writes.
struct SplitBrainWatch {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u64, u64, Option<Duration>)>>,
}

impl SplitBrainWatch {
    fn start(a: &str, b: &str) -> SplitBrainWatch {
        let (a, b) = (Store::attach(a).unwrap(), Store::attach(b).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t0 = Instant::now();
        let handle = std::thread::spawn(move || {
            let (mut samples, mut both, mut first) = (0u64, 0u64, None);
            while !s.load(Ordering::Relaxed) {
                if takes_writes(&a) && takes_writes(&b) {
                    both += 1;
                    first = first.or(Some(t0.elapsed()));
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            (samples, both, first)
        });
        SplitBrainWatch { stop, handle: Some(handle) }
    }

    /// (samples taken, samples with both segments writable, when the first such was seen)
    fn finish(mut self) -> (u64, u64, Option<Duration>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// Writes `k<i>` on the primary until stopped; every 50th write waits for the standby.
/// Returns (acknowledged writes, writes that waited successfully).
fn writer(store: &Store, stop: &AtomicBool) -> (Vec<(String, u64)>, Vec<String>) {
    let (mut acked, mut waited) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if i >= 12_000 {
            // Distinct keys only (a key's presence proves its write): stay under max_entries.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let key = format!("k{i}");
        match store.set(key.as_bytes(), format!("v{i}").as_bytes(), Expiry::Never) {
            Ok(v) => {
                if i % 50 == 0 && store.wait_replicated(v, Duration::from_secs(1)) {
                    waited.push(key.clone());
                }
                acked.push((key, v));
            }
            Err(Error::ReadOnly) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("writer: {e}"),
        }
        i += 1;
        // About 4k writes a second: the 12k distinct keys last through a cut and a failover.
        std::thread::sleep(Duration::from_micros(250));
    }
    (acked, waited)
}

fn mode(seg: &Seg) -> WriteMode {
    Store::attach(&seg.0).map(|s| s.write_mode()).unwrap_or(WriteMode::Fenced)
}

fn daemon_args<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(extra).chain(TIMING.iter()).copied().collect()
}

/// A scratch directory with the key and a witness (test timings), where primaries and
/// standbys are started on demand.
struct Site {
    dir: Scratch,
    key: String,
    w_port: u16,
    w_addr: String,
    witness: Daemon,
}

impl Site {
    fn new(tag: &str) -> Site {
        let dir = Scratch::new(tag);
        let key = dir.key("key", format!("{tag} test key 0123456789abcdef").as_bytes());
        let key = key.to_str().unwrap().to_string();
        let w_port = free_port();
        let w_addr = format!("127.0.0.1:{w_port}");
        let args = ["witness", "--listen", &w_addr, "--key-file", &key];
        let witness = Daemon::start(&dir, "witness", &daemon_args(&args, &[]));
        Site { dir, key, w_port, w_addr, witness }
    }

    /// A primary of `seg` on `listen`, reaching the witness at `witness` (its address or a proxy's).
    fn primary(&self, tag: &str, seg: &Seg, listen: &str, witness: &str) -> Daemon {
        let args = [
            "primary",
            "--segment",
            &seg.0,
            "--listen",
            listen,
            "--witness",
            witness,
            "--key-file",
            &self.key,
        ];
        Daemon::start(&self.dir, tag, &daemon_args(&args, &[]))
    }

    /// A standby of `seg` on `listen`, following `connect` (the primary or a proxy), reaching
    /// the witness directly.
    fn standby(&self, tag: &str, seg: &Seg, listen: &str, connect: &str) -> Daemon {
        let args = [
            "standby",
            "--segment",
            &seg.0,
            "--connect",
            connect,
            "--listen",
            listen,
            "--witness",
            &self.w_addr,
        ];
        Daemon::start(&self.dir, tag, &daemon_args(&args, &["--key-file", &self.key]))
    }
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn a_cut_off_primary_fences_itself_the_standby_takes_over_and_the_old_primary_follows_it() {
    let dir = Scratch::new("failover");
    let key = dir.key("key", b"failover test key 0123456789abcdef");
    let key = key.to_str().unwrap();
    let (pseg, sseg) = (Seg::new("fo-p"), Seg::new("fo-s"));
    let primary_store = pseg.create();
    let (pp, ps, pw) = (free_port(), free_port(), free_port());
    let (p_addr, s_addr, w_addr) =
        (format!("127.0.0.1:{pp}"), format!("127.0.0.1:{ps}"), format!("127.0.0.1:{pw}"));
    let _witness = Daemon::start(&dir, "witness", &["witness", "--listen", &w_addr, "--key-file", key]);
    let to_witness = Proxy::start(pw); // the primary's path to the witness
    let to_primary = Proxy::start(pp); // the standby's path to the primary
    let (tw, tp) = (to_witness.addr(), to_primary.addr());
    let p_args = ["primary", "--segment", &pseg.0, "--listen", &p_addr, "--witness", &tw, "--key-file", key];
    let mut primary = Daemon::start(&dir, "primary", &daemon_args(&p_args, &[]));
    let s_args =
        ["standby", "--segment", &sseg.0, "--connect", &tp, "--listen", &s_addr, "--witness", &w_addr];
    let _standby = Daemon::start(&dir, "standby", &daemon_args(&s_args, &["--key-file", key]));

    // With a witness, the primary starts fenced and unfences once the standby answers.
    wait_logged("the primary to unfence", Duration::from_secs(20), &[&primary, &_standby, &_witness], || {
        primary.log().contains("writes resumed")
    });
    wait_logged("the standby's replica", Duration::from_secs(20), &[&primary, &_standby], || {
        sseg.exists() && Store::attach(&sseg.0).is_ok_and(|s| s.history_id() != 0)
    });
    let watch = SplitBrainWatch::start(&pseg.0, &sseg.0);
    let stop = AtomicBool::new(false);
    let (acked, waited) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop); // a failed wait fails the test, not hangs it
        let w = s.spawn(|| writer(&primary_store, &stop));
        // Counted, not slept: at least 200 writes (4 of them waited for) replicated before the
        // cut, however slowly the machine runs the writer.
        let head = primary_store.feed_head();
        wait_until("200 writes replicated before the cut", Duration::from_secs(30), || {
            primary_store.replicated_upto() >= head + 200
        });
        // The primary is cut off from both its standby and the witness.
        let cut_at = Instant::now();
        to_witness.cut();
        to_primary.cut();
        wait_logged("the primary to fence itself", Duration::from_secs(10), &[&primary], || {
            mode(&pseg) == WriteMode::Fenced
        });
        let fenced_after = cut_at.elapsed();
        // The write lease ends with the last proof of a peer, not fence_after after the last
        // round: a starved or dead guard cannot stretch it past the standby's promotion. (Read
        // after the fence was seen, so a slow machine only makes it smaller: the bound is the
        // guard's round, not a timing; renewed from "now" it would be ~fence_after.)
        let lease_left = primary_store.write_lease_left().expect("a primary with a witness holds a lease");
        assert!(lease_left <= Duration::from_millis(300), "the lease outlives the fence by {lease_left:?}");
        wait_logged(
            "the standby to promote itself",
            Duration::from_secs(20),
            &[&primary, &_standby, &_witness],
            || mode(&sseg) == WriteMode::Writable,
        );
        let promoted_after = cut_at.elapsed();
        eprintln!("cut: primary fenced after {fenced_after:?}, standby promoted after {promoted_after:?}");
        assert!(fenced_after < promoted_after);
        // The standby's last proof of the primary may predate the cut by a heartbeat.
        assert!(promoted_after >= Duration::from_millis(2300), "promoted before failover_after");
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap()
    });
    let standby_store = Store::attach(&sseg.0).unwrap();
    assert!(standby_store.epoch() > primary_store.epoch());
    for k in &waited {
        assert!(standby_store.get(k.as_bytes()).unwrap().is_some(), "{k} waited for the standby but is lost");
    }
    let lost = acked.iter().filter(|(k, _)| standby_store.get(k.as_bytes()).unwrap().is_none()).count();
    // The lag the old primary reports (changes it made that the standby never acknowledged)
    // bounds the loss.
    let lag = primary_store.feed_head().saturating_sub(primary_store.replicated_upto());
    eprintln!(
        "{} writes acknowledged, {} waited, {lost} lost in the cut (reported lag {lag})",
        acked.len(),
        waited.len()
    );
    assert!(
        lost as u64 <= lag,
        "{lost} writes lost, more than the {lag} changes the primary reported unacknowledged"
    );
    assert!(waited.len() >= 3, "too few waited writes to mean anything: {}", waited.len());

    // Healed: the old primary sees the newer epoch, stays fenced, and follows after rejoin_after.
    standby_store.set(b"after-failover", b"new primary", Expiry::Never).unwrap();
    to_witness.heal();
    to_primary.heal();
    // Once the old primary knows of the newer one, the writes no standby acknowledged (the
    // abandoned history) are gone from it, before it follows anyone: local readers used to
    // see them until the snapshot replaced them.
    wait_logged("the old primary to see the newer one", Duration::from_secs(30), &[&primary], || {
        primary.log().contains("is a primary with epoch")
    });
    let abandoned_readable = acked
        .iter()
        .filter(|(k, _)| {
            standby_store.get(k.as_bytes()).unwrap().is_none()
                && primary_store.get(k.as_bytes()).unwrap().is_some()
        })
        .count();
    assert_eq!(
        abandoned_readable,
        0,
        "writes the new primary never had are still served:\n{}",
        primary.log()
    );
    assert!(lost == 0 || primary.log().contains("abandoned history: removed"), "{}", primary.log());
    let followed = Instant::now() + Duration::from_secs(30);
    while mode(&pseg) != WriteMode::Replica {
        assert!(
            Instant::now() < followed,
            "the old primary never followed:\n{}\n{}\n{}",
            primary.log(),
            _standby.log(),
            _witness.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_converged(&standby_store, &pseg, Duration::from_secs(30));
    assert!(primary.log().contains("fenced"), "{}", primary.log());

    // The old primary's host reboots: its segment comes back empty. It must not wipe the new
    // primary; it follows it and gets the sessions back.
    primary.kill();
    drop(primary_store);
    Store::destroy(&pseg.0).unwrap();
    let empty = pseg.create();
    let before = standby_store.stats().live_entries;
    let _primary = Daemon::start(&dir, "primary-rebooted", &daemon_args(&p_args, &[]));
    wait_logged(
        "the rebooted primary to follow",
        Duration::from_secs(30),
        &[&_primary, &_standby, &_witness],
        || empty.write_mode() == WriteMode::Replica,
    );
    wait_converged(&standby_store, &pseg, Duration::from_secs(30));
    assert_eq!(standby_store.stats().live_entries, before, "the new primary lost sessions");
    assert_eq!(standby_store.write_mode(), WriteMode::Writable);
    let (samples, both, first) = watch.finish();
    assert_eq!(
        both,
        0,
        "{both} of {samples} samples saw two writable segments, first at {first:?} after the watch started:\n{}\n{}\n{}",
        primary.log(),
        _primary.log(),
        _standby.log()
    );
}

#[test]
fn a_standby_cut_off_alone_does_not_promote_itself_while_the_witness_sees_the_primary() {
    let dir = Scratch::new("no-quorum");
    let key = dir.key("key", b"failover test key 0123456789abcdef");
    let key = key.to_str().unwrap();
    let (pseg, sseg) = (Seg::new("nq-p"), Seg::new("nq-s"));
    let primary_store = pseg.create();
    let (pp, ps, pw) = (free_port(), free_port(), free_port());
    let (p_addr, s_addr, w_addr) =
        (format!("127.0.0.1:{pp}"), format!("127.0.0.1:{ps}"), format!("127.0.0.1:{pw}"));
    let witness = Daemon::start(&dir, "witness", &["witness", "--listen", &w_addr, "--key-file", key]);
    let to_primary = Proxy::start(pp);
    let tp = to_primary.addr();
    let p_args =
        ["primary", "--segment", &pseg.0, "--listen", &p_addr, "--witness", &w_addr, "--key-file", key];
    let primary = Daemon::start(&dir, "primary", &daemon_args(&p_args, &[]));
    let s_args =
        ["standby", "--segment", &sseg.0, "--connect", &tp, "--listen", &s_addr, "--witness", &w_addr];
    let standby = Daemon::start(&dir, "standby", &daemon_args(&s_args, &["--key-file", key]));
    wait_until("the primary to unfence", Duration::from_secs(20), || {
        primary.log().contains("writes resumed")
    });
    primary_store.set(b"before", b"cut", Expiry::Never).unwrap();
    wait_converged(&primary_store, &sseg, Duration::from_secs(20));
    to_primary.cut();
    // Three times the failover time: the witness still hears the primary, so no promotion;
    // the primary still hears the witness, so no fence.
    std::thread::sleep(Duration::from_millis(7500));
    assert_eq!(
        mode(&sseg),
        WriteMode::Replica,
        "the standby promoted itself without the witness:\n{}\n{}\n{}",
        standby.log(),
        witness.log(),
        primary.log()
    );
    assert_eq!(
        primary_store.write_mode(),
        WriteMode::Writable,
        "the primary fenced itself with the witness in reach"
    );
    primary_store.set(b"during", b"cut", Expiry::Never).unwrap();
    to_primary.heal();
    wait_converged(&primary_store, &sseg, Duration::from_secs(30));
}

#[test]
fn a_planned_switchover_loses_nothing_and_swaps_the_roles() {
    let dir = Scratch::new("switchover");
    let key = dir.key("key", b"switchover test key 0123456789abcdef");
    let key = key.to_str().unwrap();
    let (pseg, sseg) = (Seg::new("sw-p"), Seg::new("sw-s"));
    let primary_store = pseg.create();
    let (pp, ps) = (free_port(), free_port());
    let (p_addr, s_addr) = (format!("127.0.0.1:{pp}"), format!("127.0.0.1:{ps}"));
    let _primary = Daemon::start(
        &dir,
        "primary",
        &["primary", "--segment", &pseg.0, "--listen", &p_addr, "--key-file", key],
    );
    let s_args =
        ["standby", "--segment", &sseg.0, "--connect", &p_addr, "--listen", &s_addr, "--key-file", key];
    let _standby = Daemon::start(&dir, "standby", &s_args);
    primary_store.set(b"first", b"1", Expiry::Never).unwrap();
    wait_converged(&primary_store, &sseg, Duration::from_secs(20));
    let stop = AtomicBool::new(false);
    let (out, (acked, _)) = std::thread::scope(|s| {
        let w = s.spawn(|| writer(&primary_store, &stop));
        // The switchover happens under load: after the writer's first 200 writes (counted,
        // whatever the machine's speed).
        let head = primary_store.feed_head();
        wait_until("the writer's first 200 writes", Duration::from_secs(60), || {
            primary_store.feed_head() >= head + 200
        });
        let out = std::process::Command::new(BIN)
            .args(["switchover", "--primary", &p_addr, "--key-file", key])
            .output()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        (out, w.join().unwrap())
    });
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("switchover complete") && text.contains("writes paused"), "{text}");
    eprintln!("{text}");
    let new_primary = Store::attach(&sseg.0).unwrap();
    assert_eq!(new_primary.write_mode(), WriteMode::Writable);
    // Zero loss: every write the old primary acknowledged is on the new one.
    for (k, _) in &acked {
        assert!(
            new_primary.get(k.as_bytes()).unwrap().is_some(),
            "{k} acknowledged before the switchover, lost"
        );
    }
    assert!(acked.len() > 100, "the writer barely ran: {}", acked.len());
    // The old primary follows the new one.
    wait_until("the old primary to follow", Duration::from_secs(20), || mode(&pseg) == WriteMode::Replica);
    new_primary.set(b"after", b"switchover", Expiry::Never).unwrap();
    wait_converged(&new_primary, &pseg, Duration::from_secs(30));
}

/// The primary is killed at random points while the standby loads its first snapshot: the
/// standby must never become a writable primary of a half-loaded table. Either the snapshot
/// completed (the replica equals the primary's content) or the replica is marked incomplete
/// (history 0): then `promote` refuses without --force, and automatic failover never fires.
#[test]
fn a_primary_killed_mid_snapshot_never_leaves_a_promotable_half_table() {
    let dir = Scratch::new("mid-snapshot");
    let key = dir.key("key", b"mid snapshot test key 0123456789abcdef");
    let key = key.to_str().unwrap();
    let pseg = Seg::new("ms-p");
    let primary_store = pseg.create();
    let value = vec![7u8; 1500];
    for i in 0..16_000u32 {
        primary_store.set(format!("session-{i:05}").as_bytes(), &value, Expiry::Never).unwrap();
    }
    let full = content(&primary_store);
    let pw = free_port();
    let w_addr = format!("127.0.0.1:{pw}");
    let _witness = Daemon::start(&dir, "witness", &["witness", "--listen", &w_addr, "--key-file", key]);
    let (mut complete, mut incomplete) = (0, 0);
    for round in 0..4u64 {
        let sseg = Seg::new(&format!("ms-s{round}"));
        let (pp, ps) = (free_port(), free_port());
        let (p_addr, s_addr) = (format!("127.0.0.1:{pp}"), format!("127.0.0.1:{ps}"));
        let mut primary = Daemon::start(
            &dir,
            "primary",
            &["primary", "--segment", &pseg.0, "--listen", &p_addr, "--key-file", key],
        );
        wait_until("the primary to listen", Duration::from_secs(10), || primary.log().contains("serving"));
        let s_args = [
            "standby",
            "--segment",
            &sseg.0,
            "--connect",
            &p_addr,
            "--listen",
            &s_addr,
            "--witness",
            &w_addr,
        ];
        let standby =
            Daemon::start(&dir, &format!("standby{round}"), &daemon_args(&s_args, &["--key-file", key]));
        wait_until("the snapshot to start", Duration::from_secs(20), || {
            standby.log().contains("receiving a snapshot")
        });
        if round == 3 {
            // The last round lets the snapshot finish: that replica is complete and may serve.
            wait_until("the snapshot to finish", Duration::from_secs(20), || {
                standby.log().contains("snapshot applied")
            });
        } else {
            std::thread::sleep(Duration::from_millis(round * 7));
        }
        primary.kill();
        // Longer than failover_after: an incomplete replica must not promote itself.
        std::thread::sleep(Duration::from_secs(4));
        let replica = Store::attach(&sseg.0).unwrap();
        if replica.history_id() == 0 {
            incomplete += 1;
            assert_eq!(replica.write_mode(), WriteMode::Replica, "an incomplete replica promoted itself");
            let out =
                std::process::Command::new(BIN).args(["promote", "--segment", &sseg.0]).output().unwrap();
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("incomplete replica"));
        } else {
            complete += 1;
            let got = content(&replica);
            assert!(same(&full, &got), "a complete replica differs: {} of {} entries", got.len(), full.len());
        }
    }
    eprintln!("mid-snapshot kills: {incomplete} left an incomplete replica, {complete} a complete one");
    assert!(complete >= 1 && incomplete >= 1, "both outcomes must have been exercised");
}

/// Garbage, wrong-key, flipped, hello and old-session (replayed) heartbeats sent to a fenced
/// primary's UDP port change nothing: it unfences only for a real standby.
#[test]
fn forged_garbage_and_replayed_heartbeats_change_nothing() {
    use gardenstate_replicator::failover::heartbeat::{self, Announce, Datagram, NodeRole};
    use gardenstate_replicator::failover::pairing::{NO_NONCE, direction_key};
    use gardenstate_replicator::replication::auth::Key;
    let dir = Scratch::new("forged");
    let key_bytes = b"forged datagram test key 0123456789";
    let key = dir.key("key", key_bytes);
    let key = key.to_str().unwrap();
    let (pseg, sseg) = (Seg::new("fg-p"), Seg::new("fg-s"));
    let primary_store = pseg.create();
    let (pp, ps, pw) = (free_port(), free_port(), free_port());
    let (p_addr, s_addr, w_addr) =
        (format!("127.0.0.1:{pp}"), format!("127.0.0.1:{ps}"), format!("127.0.0.1:{pw}"));
    let p_args =
        ["primary", "--segment", &pseg.0, "--listen", &p_addr, "--witness", &w_addr, "--key-file", key];
    let primary = Daemon::start(&dir, "primary", &daemon_args(&p_args, &[]));
    wait_until("the primary to fence itself at start", Duration::from_secs(10), || {
        primary.log().contains("fenced until the standby answers")
    });
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let right = Key::new(key_bytes.to_vec()).unwrap();
    let wrong = Key::new(b"some other key of enough length".to_vec()).unwrap();
    let standby_says = |seq: u64, from: [u8; 32], to: [u8; 32], echo_seq: u64| Datagram {
        announce: Announce {
            role: NodeRole::Standby,
            fenced: true,
            synced: true,
            claim: false,
            epoch: 0,
            history: 1,
            pos: 0,
        },
        from,
        to,
        node: 0x5eed,
        seq,
        echo_seq,
        primary_age_ms: u32::MAX,
        standby_age_ms: u32::MAX,
        listen_port: ps,
    };
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 1..=3000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (n1, n2) = ([(x >> 8) as u8 | 1; 32], [(x >> 16) as u8 | 1; 32]);
        let seal = |k: &Key, d: Datagram| heartbeat::encode(&d, &direction_key(k, &d.from, &d.to)).to_vec();
        let bytes: Vec<u8> = match i % 5 {
            // Random bytes of random length.
            0 => (0..(x % 200) as usize).map(|j| (x >> (j % 56)) as u8).collect(),
            // A well-formed datagram under the wrong key.
            1 => seal(&wrong, standby_says(i, n1, n2, x)),
            // Right key, flipped bit.
            2 => {
                let mut b = seal(&right, standby_says(i, n1, n2, 0));
                let at = (x % b.len() as u64) as usize;
                b[at] ^= 1 << (x % 8);
                b
            }
            // Right key, a hello: answered, no state.
            3 => seal(&right, standby_says(i, n1, NO_NONCE, 0)),
            // Right key, of no session the primary has (a recording): dropped.
            _ => seal(&right, standby_says(i, n1, n2, x % 1_000_000)),
        };
        sock.send_to(&bytes, &p_addr).unwrap();
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(primary_store.write_mode(), WriteMode::Fenced, "forged heartbeats unfenced the primary");
    assert!(!primary.log().contains("writes resumed"));
    // A real standby does unfence it.
    let s_args =
        ["standby", "--segment", &sseg.0, "--connect", &p_addr, "--listen", &s_addr, "--witness", &w_addr];
    let _standby = Daemon::start(&dir, "standby", &daemon_args(&s_args, &["--key-file", key]));
    wait_until("a real standby to unfence the primary", Duration::from_secs(20), || {
        primary_store.write_mode() == WriteMode::Writable
    });
}

/// The primary's daemon dies (kill -9) while its workers go on, round after round (2 in CI,
/// 10 with GDS_LONG=1): the segment's write lease runs out within fence_after, before the
/// standby promotes itself, so the workers' writes stop instead of landing where the
/// failover would lose them; every write that waited for the standby survives.
#[test]
fn a_primary_whose_daemon_dies_stops_taking_writes_before_the_standby_promotes() {
    let rounds = if std::env::var_os("GDS_LONG").is_some() { 10 } else { 2 };
    for round in 0..rounds {
        daemon_dies_round(round);
    }
}

fn daemon_dies_round(round: u32) {
    let dir = Scratch::new(&format!("daemon-dies-{round}"));
    let key = dir.key("key", b"daemon dies test key 0123456789abcdef");
    let key = key.to_str().unwrap();
    let (pseg, sseg) = (Seg::new(&format!("dd-p{round}")), Seg::new(&format!("dd-s{round}")));
    let primary_store = pseg.create();
    let (pp, ps, pw) = (free_port(), free_port(), free_port());
    let (p_addr, s_addr, w_addr) =
        (format!("127.0.0.1:{pp}"), format!("127.0.0.1:{ps}"), format!("127.0.0.1:{pw}"));
    let _witness = Daemon::start(&dir, "witness", &["witness", "--listen", &w_addr, "--key-file", key]);
    let p_args =
        ["primary", "--segment", &pseg.0, "--listen", &p_addr, "--witness", &w_addr, "--key-file", key];
    let mut primary = Daemon::start(&dir, "primary", &daemon_args(&p_args, &[]));
    let s_args =
        ["standby", "--segment", &sseg.0, "--connect", &p_addr, "--listen", &s_addr, "--witness", &w_addr];
    let _standby = Daemon::start(&dir, "standby", &daemon_args(&s_args, &["--key-file", key]));
    wait_until("the primary to unfence", Duration::from_secs(20), || {
        primary.log().contains("writes resumed")
    });
    let watch = SplitBrainWatch::start(&pseg.0, &sseg.0);
    let stop = AtomicBool::new(false);
    let (refused_after, (acked, waited)) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop); // a failed wait fails the test, not hangs it
        let w = s.spawn(|| writer(&primary_store, &stop));
        std::thread::sleep(Duration::from_millis(500));
        let killed = Instant::now();
        primary.kill();
        // The workers keep writing; the lease (fence_after = 1 s) stops them.
        wait_until("the lease to stop the writes", Duration::from_secs(10), || {
            matches!(primary_store.set(b"probe", b"x", Expiry::Never), Err(Error::ReadOnly))
        });
        let refused_after = killed.elapsed();
        wait_until("the standby to promote itself", Duration::from_secs(20), || {
            mode(&sseg) == WriteMode::Writable
        });
        stop.store(true, Ordering::Relaxed);
        (refused_after, w.join().unwrap())
    });
    eprintln!(
        "round {round}: daemon killed: writes refused after {refused_after:?}; {} acked, {} waited",
        acked.len(),
        waited.len()
    );
    assert!(refused_after < Duration::from_millis(2500), "writes went on for {refused_after:?}");
    let standby_store = Store::attach(&sseg.0).unwrap();
    for k in &waited {
        assert!(standby_store.get(k.as_bytes()).unwrap().is_some(), "{k} waited for the standby but is lost");
    }
    // The old segment still says Writable (nobody fenced it), but its lease is out.
    assert_eq!(primary_store.write_lease_left(), Some(Duration::ZERO));
    let (samples, both, first) = watch.finish();
    assert_eq!(both, 0, "{both} of {samples} samples saw both segments taking writes, first at {first:?}");
}

/// A primary's daemon stopped (SIGSTOP) past its write lease: the workers' writes are refused,
/// and `stats` says so (`lease_lapsed`, not `writable`) while the daemon is stopped; once it
/// runs again it logs that the lease lapsed.
#[test]
fn a_lapsed_write_lease_is_shown_by_stats_and_logged() {
    let site = Site::new("lease-lapsed");
    let (pseg, sseg) = (Seg::new("ll-p"), Seg::new("ll-s"));
    let primary_store = pseg.create();
    let p_addr = local(free_port());
    let primary = site.primary("primary", &pseg, &p_addr, &site.w_addr);
    let standby = site.standby("standby", &sseg, &local(free_port()), &p_addr);
    let all = [&primary, &standby, &site.witness];
    wait_logged("the primary to unfence", Duration::from_secs(20), &all, || {
        primary.log().contains("writes resumed")
    });
    let write_mode = || {
        let out = std::process::Command::new(BIN).args(["stats", &pseg.0, "--json"]).output().unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j["write_mode"].as_str().unwrap().to_string()
    };
    assert_eq!(write_mode(), "writable");
    let pid = primary.child.as_ref().unwrap().id().to_string();
    let signal =
        |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    wait_until("the lease to run out", Duration::from_secs(10), || {
        primary_store.write_lease_left() == Some(Duration::ZERO)
    });
    assert!(matches!(primary_store.set(b"probe", b"x", Expiry::Never), Err(Error::ReadOnly)));
    assert_eq!(primary_store.write_mode(), WriteMode::Writable, "nobody fenced it: only the lease refuses");
    let shown = write_mode();
    signal("-CONT");
    assert_eq!(shown, "lease_lapsed", "stats while the lease is out");
    wait_logged("the lapse to be logged", Duration::from_secs(10), &all, || {
        primary.log().contains("the write lease lapsed")
    });
}

/// Two standbys on one primary (a replacement started while the old one still runs): the
/// primary keeps the live one and refuses the other (they used to supersede each other
/// about 9 times a second); when the primary is killed both are complete replicas that may
/// promote themselves, and the witness grants the next epoch to one of them only, so exactly
/// one promotes (both used to promote to epoch 1 and take writes).
#[test]
fn two_standbys_on_one_primary_never_both_promote() {
    let site = Site::new("two-standbys");
    let witness = &site.witness;
    let (pseg, aseg, bseg) = (Seg::new("ts-p"), Seg::new("ts-a"), Seg::new("ts-b"));
    let primary_store = pseg.create();
    let [p_addr, a_addr, b_addr] = [free_port(), free_port(), free_port()].map(local);
    let mut primary = site.primary("primary", &pseg, &p_addr, &site.w_addr);
    let standby = |tag: &str, seg: &Seg, listen: &str| site.standby(tag, seg, listen, &p_addr);
    let synced = |seg: &Seg| seg.exists() && Store::attach(&seg.0).is_ok_and(|s| s.history_id() != 0);
    let a = standby("standby-a", &aseg, &a_addr);
    wait_logged("the primary to unfence", Duration::from_secs(20), &[&primary, &a, witness], || {
        primary.log().contains("writes resumed") && synced(&aseg)
    });
    for i in 0..200 {
        primary_store.set(format!("k{i}").as_bytes(), b"v", Expiry::Never).unwrap();
    }
    // A is stopped: its place frees once it is silent, and B, the replacement, takes it.
    let a_pid = a.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill").args([sig, &a_pid]).status().unwrap().success())
    };
    signal("-STOP");
    let b = standby("standby-b", &bseg, &b_addr);
    wait_logged("B's replica", Duration::from_secs(30), &[&primary, &b], || synced(&bseg));
    // A runs again, with its complete (older) replica, while B is connected: refused.
    signal("-CONT");
    wait_logged("the primary to refuse A", Duration::from_secs(30), &[&primary, &a], || {
        primary.log().contains("refused: another standby is connected")
    });
    assert!(synced(&aseg), "A keeps a complete replica: it could promote itself");
    let watch = SplitBrainWatch::start(&aseg.0, &bseg.0);
    primary.kill();
    let all = [&a, &b, witness];
    wait_logged("a standby to promote itself", Duration::from_secs(30), &all, || {
        mode(&aseg) == WriteMode::Writable || mode(&bseg) == WriteMode::Writable
    });
    wait_logged("the witness to see its grant used", Duration::from_secs(30), &all, || {
        witness.log().contains("as granted")
    });
    // The other one goes on claiming; give it twice failover_after to do anything wrong.
    std::thread::sleep(Duration::from_secs(5));
    let (samples, both, first) = watch.finish();
    assert_eq!(both, 0, "{both} of {samples} samples saw both standbys taking writes, first at {first:?}");
    let writable = [&aseg, &bseg].iter().filter(|s| mode(s) == WriteMode::Writable).count();
    assert_eq!(
        writable,
        1,
        "exactly one standby promoted itself\n{}\n{}\n{}",
        a.log(),
        b.log(),
        witness.log()
    );
    assert!(witness.log().contains("granted epoch 1 to the standby node"), "{}", witness.log());
}

/// One witness given to two clusters (two primaries, each with its standby, of two
/// histories): their primaries would hide each other's loss from it and block failover, so
/// it says so in an error line instead of staying silent.
#[test]
fn a_witness_shared_by_two_clusters_says_so() {
    let site = Site::new("shared-witness");
    let witness = &site.witness;
    let mut daemons = Vec::new();
    let mut segs = Vec::new();
    for c in ["c1", "c2"] {
        let (pseg, sseg) = (Seg::new(&format!("sw-{c}-p")), Seg::new(&format!("sw-{c}-s")));
        pseg.create();
        let [p_addr, s_addr] = [free_port(), free_port()].map(local);
        daemons.push(site.primary(&format!("{c}-primary"), &pseg, &p_addr, &site.w_addr));
        daemons.push(site.standby(&format!("{c}-standby"), &sseg, &s_addr, &p_addr));
        segs.push((pseg, sseg));
    }
    let all: Vec<&Daemon> = daemons.iter().chain([witness]).collect();
    wait_logged("the witness to see two clusters", Duration::from_secs(30), &all, || {
        witness.log().contains("witness: nodes of 2 histories")
    });
    assert!(witness.log().contains("give each cluster its own witness"), "{}", witness.log());
}

/// The primary's host vanishes: its daemon is killed and its address becomes a black hole in
/// which the standby's reconnect hangs (SYNs dropped: the kernel retries for minutes). The
/// standby promotes itself and serves as the primary at once; it used to wait for that
/// connect to give up (2.2 s seen in the field; minutes here).
#[test]
fn a_standby_promoted_while_its_reconnect_hangs_serves_at_once() {
    let site = Site::new("black-hole");
    let witness = &site.witness;
    let (pseg, sseg) = (Seg::new("bh-p"), Seg::new("bh-s"));
    pseg.create();
    let pp = free_port();
    let mut primary = site.primary("primary", &pseg, &local(pp), &site.w_addr);
    let to_primary = Proxy::start(pp);
    let standby = site.standby("standby", &sseg, &local(free_port()), &to_primary.addr());
    wait_logged("the primary to unfence", Duration::from_secs(20), &[&primary, &standby, witness], || {
        primary.log().contains("writes resumed") && Store::attach(&sseg.0).is_ok_and(|s| s.history_id() != 0)
    });
    to_primary.black_hole();
    primary.kill();
    let lost = Instant::now();
    wait_logged("the standby to promote itself", Duration::from_secs(30), &[&standby, witness], || {
        mode(&sseg) == WriteMode::Writable
    });
    let promoted = lost.elapsed();
    // Its reconnect into the black hole is still hanging (the kernel's SYN retries take
    // minutes); the promoted node serves regardless.
    wait_logged("the promoted standby to serve", Duration::from_secs(30), &[&standby], || {
        standby.log().contains("serving as the primary")
    });
    eprintln!("promoted {promoted:?} after the primary vanished; serving {:?} after", lost.elapsed());
}

/// A flapping link (the primary cut off from its standby and the witness long enough to
/// fence, then healed only briefly, three times): the primary is trusted again only after a
/// warm-up of stable links, so its write availability does not flap with the link (it used to
/// unfence on every heal); once the link stays up, writes resume after the warm-up.
#[test]
fn a_flapping_link_does_not_flap_write_availability() {
    let site = Site::new("flapping");
    let (pseg, sseg) = (Seg::new("fl-p"), Seg::new("fl-s"));
    pseg.create();
    let pp = free_port();
    let to_witness = Proxy::start(site.w_port);
    let to_primary = Proxy::start(pp);
    let primary = site.primary("primary", &pseg, &local(pp), &to_witness.addr());
    let standby = site.standby("standby", &sseg, &local(free_port()), &to_primary.addr());
    let all = [&primary, &standby, &site.witness];
    let count = |what: &str| primary.log().matches(what).count();
    wait_logged("the primary to unfence", Duration::from_secs(20), &all, || count("writes resumed") == 1);
    let watch = SplitBrainWatch::start(&pseg.0, &sseg.0);
    for flap in 0..3 {
        let (fenced, interrupted, warming) =
            (count("fenced: "), count("warm-up interrupted"), count("warming up"));
        to_witness.cut();
        to_primary.cut();
        wait_logged("the cut to be noticed", Duration::from_secs(20), &all, || {
            count("fenced: ") > fenced || count("warm-up interrupted") > interrupted
        });
        to_witness.heal();
        to_primary.heal();
        wait_logged("the standby to answer again", Duration::from_secs(30), &all, || {
            count("warming up") > warming || count("writes resumed") > 1
        });
        assert_eq!(
            count("writes resumed"),
            1,
            "flap {flap}: writes resumed on a brief heal:\n{}",
            primary.log()
        );
        assert_eq!(mode(&sseg), WriteMode::Replica, "flap {flap}: the standby promoted itself");
    }
    // The link stays up: writes resume after the warm-up.
    wait_logged("writes to resume after the warm-up", Duration::from_secs(30), &all, || {
        primary.log().contains("writes resumed (unfenced) after the warm-up")
    });
    assert_eq!(mode(&pseg), WriteMode::Writable);
    let (samples, both, first) = watch.finish();
    assert_eq!(both, 0, "{both} of {samples} samples saw both segments taking writes, first at {first:?}");
}

/// What a health check answers: the status code.
fn health(addr: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(addr) else { return 0 };
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).unwrap();
    let mut text = String::new();
    let _ = c.read_to_string(&mut text);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The notify hook's calls so far, as `role epoch segment` lines.
fn hook_calls(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// `/health/primary` and `/health/standby` on each daemon's metrics port answer 200 only on
/// the host that has the role, before and after a `gardenstate switchover`; each daemon's
/// `--notify` hook hears its role changes with the epoch and the segment.
#[test]
fn health_checks_and_notify_hooks_follow_a_switchover() {
    let dir = Scratch::new("health");
    let key = dir.key("key", b"health test key 0123456789abcdef01");
    let key = key.to_str().unwrap();
    let hook = dir.0.join("hook");
    std::fs::write(&hook, "#!/bin/sh\nprintf '%s %s %s\\n' \"$1\" \"$2\" \"$3\" >> \"$0.$3\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook_s = hook.to_str().unwrap();
    let (pseg, sseg) = (Seg::new("hl-p"), Seg::new("hl-s"));
    let primary_store = pseg.create();
    let (pp, ps) = (free_port(), free_port());
    let (p_addr, s_addr) = (format!("127.0.0.1:{pp}"), format!("127.0.0.1:{ps}"));
    let (p_http, s_http) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let p_args = [
        "primary",
        "--segment",
        &pseg.0,
        "--listen",
        &p_addr,
        "--key-file",
        key,
        "--metrics",
        &p_http,
        "--notify",
        hook_s,
    ];
    let primary = Daemon::start(&dir, "primary", &p_args);
    let s_args = [
        "standby",
        "--segment",
        &sseg.0,
        "--connect",
        &p_addr,
        "--listen",
        &s_addr,
        "--key-file",
        key,
        "--metrics",
        &s_http,
        "--notify",
        hook_s,
    ];
    let standby = Daemon::start(&dir, "standby", &s_args);
    primary_store.set(b"first", b"1", Expiry::Never).unwrap();
    wait_converged(&primary_store, &sseg, Duration::from_secs(20));
    let daemons = [&primary, &standby];
    let settled = |p: u16, ps: u16, s: u16, ss: u16| {
        health(&p_http, "/health/primary") == p
            && health(&p_http, "/health/standby") == ps
            && health(&s_http, "/health/primary") == s
            && health(&s_http, "/health/standby") == ss
    };
    wait_logged(
        "the primary healthy as primary, the standby as standby",
        Duration::from_secs(20),
        &daemons,
        || settled(200, 503, 503, 200),
    );
    let (p_hook, s_hook) = (dir.0.join(format!("hook.{}", pseg.0)), dir.0.join(format!("hook.{}", sseg.0)));
    assert_eq!(hook_calls(&p_hook).first().map(|l| l.split(' ').next().unwrap()), Some("primary"));
    assert_eq!(hook_calls(&s_hook).first().map(|l| l.split(' ').next().unwrap()), Some("standby"));

    let out = std::process::Command::new(BIN)
        .args(["switchover", "--primary", &p_addr, "--key-file", key])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    wait_logged("the roles swapped in the health checks", Duration::from_secs(30), &daemons, || {
        settled(503, 200, 200, 503)
    });
    // The hooks heard the swap: the new primary last said primary, with the new epoch; the
    // old one last said standby.
    let new_epoch = Store::attach(&sseg.0).unwrap().epoch();
    wait_logged("the hooks to hear the swap", Duration::from_secs(20), &daemons, || {
        hook_calls(&s_hook).last() == Some(&format!("primary {new_epoch} {}", sseg.0))
            && hook_calls(&p_hook).last().is_some_and(|l| l.starts_with("standby "))
    });
    assert!(primary.log().contains("notify hook") && primary.log().contains("exited 0"), "{}", primary.log());
}
