//! Paused processes: a process stopped (SIGSTOP) past every lease and then resumed must not
//! corrupt anything that was taken from it meanwhile; a dead lock owner's lock is released at
//! once; a process that reuses a dead owner's pid is not mistaken for it.

mod common;
use common::{Seg, assert_healthy, small, sweep_fully};
use gardenstate::{Error, Expiry, Store};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Child role: lock `key`, report the lock id, wait for a line on stdin, then try to
/// set-and-unlock with it and report the outcome.
#[test]
#[ignore = "child role of paused_lock_holder_is_fenced_after_takeover and dead_lock_owner_is_released_at_once"]
fn child_lock_holder() {
    let Ok(name) = std::env::var("GDS_PAUSE_SEG") else { return };
    let st = Store::attach(&name).unwrap();
    let l = st.lock(b"session", Duration::from_secs(3600)).unwrap().unwrap();
    println!("locked {}", l.lock_id);
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    match st.set_and_unlock(b"session", l.lock_id, b"stale write", Expiry::Never) {
        Err(Error::LockMismatch { .. }) => println!("fenced"),
        other => println!("NOT FENCED: {other:?}"),
    }
    std::io::stdout().flush().unwrap();
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// Kills `pid` after a minute, so a hung child fails the test instead of hanging it.
fn watchdog(pid: u32) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        // SAFETY: as in `signal`; if the pid is gone (or reused, unlikely in a minute) it is harmless to a test.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
}

fn spawn_holder(name: &str) -> (std::process::Child, BufReader<std::process::ChildStdout>, u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_lock_holder", "--nocapture", "--test-threads=1"])
        .env("GDS_PAUSE_SEG", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    watchdog(child.id());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let id = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended before locking");
        // libtest may print "test child_lock_holder ... " before the child's own output.
        if let Some(at) = line.find("locked ") {
            break line[at + 7..].trim().parse().unwrap();
        }
    };
    (child, out, id)
}

#[test]
fn paused_lock_holder_is_fenced_after_takeover() {
    let s = Seg::new("pause");
    let st = Store::create(&s.name, &small()).unwrap();
    st.set(b"session", b"v1", Expiry::Never).unwrap();
    let (mut child, mut out, id) = spawn_holder(&s.name);
    signal(child.id(), libc::SIGSTOP);
    assert!(
        matches!(st.lock(b"session", Duration::from_secs(3600)), Err(Error::Locked { lock_id, .. }) if lock_id == id)
    );
    std::thread::sleep(Duration::from_millis(30));
    let mine = st.lock(b"session", Duration::from_millis(20)).unwrap().unwrap();
    assert!(mine.took_over && mine.lock_id != id);
    st.set_and_unlock(b"session", mine.lock_id, b"v2", Expiry::Never).unwrap();
    signal(child.id(), libc::SIGCONT);
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    while !line.contains("fenced") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended without reporting");
    }
    assert!(!line.contains("NOT FENCED"), "{line}");
    assert!(child.wait().unwrap().success());
    assert_eq!(st.get(b"session").unwrap().unwrap().value, b"v2", "the resumed holder changed nothing");
    sweep_fully(&st);
    assert_healthy(&st);
}

#[test]
fn dead_lock_owner_is_released_at_once() {
    let s = Seg::new("deadlock");
    let st = Store::create(&s.name, &small()).unwrap();
    st.set(b"session", b"v1", Expiry::Never).unwrap();
    let (mut child, _out, id) = spawn_holder(&s.name);
    child.kill().unwrap();
    child.wait().unwrap();
    // The lock is an hour from timing out, but its owner is gone.
    let l = st.lock(b"session", Duration::from_secs(3600)).unwrap().unwrap();
    assert!(l.took_over && l.lock_id != id);
    assert_eq!(l.value, b"v1");
    let stats = st.stats();
    assert!(stats.dead_reclaims >= 1 && stats.lock_takeovers == 1, "{stats:?}");
    // The child was killed between operations: it held no client slot, nothing to reclaim.
    assert_eq!(st.sweep(0).unwrap().dead_clients_reclaimed, 0);
    assert_eq!(st.stats().clients, 0);
    assert_healthy(&st);
}

#[test]
fn writers_paused_and_killed_at_random_leave_a_healthy_segment() {
    let s = Seg::new("pausekill");
    let st = Store::create(&s.name, &small()).unwrap();
    let mut seed = std::process::id() as u64 | 1;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_churn", "--nocapture", "--test-threads=1"])
            .env("GDS_CHURN_SEG", &s.name)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        watchdog(child.id());
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(20 + rnd() % 40));
        signal(pid, libc::SIGSTOP);
        // While it is stopped mid-operation, everyone else carries on.
        for i in 0..200 {
            let k = format!("k{}", (rnd() + i) % 64);
            st.set(k.as_bytes(), &vec![b'p'; (rnd() % 2000) as usize], Expiry::Never).unwrap();
            if let Some(e) = st.get(k.as_bytes()).unwrap() {
                assert!(e.value.iter().all(|&b| b == e.value[0]), "round {round}: torn value");
            }
        }
        if round % 2 == 0 {
            signal(pid, libc::SIGCONT);
        } else {
            signal(pid, libc::SIGKILL);
        }
        let status = child.wait().unwrap();
        assert!(status.success() || round % 2 == 1, "round {round}: resumed child failed: {status}");
    }
    sweep_fully(&st);
    assert_healthy(&st);
    for i in 0..64 {
        st.delete(format!("k{i}").as_bytes()).unwrap();
    }
    assert_eq!(st.stats().bytes_used, 0, "nothing leaked");
}

/// Child role: churn 64 keys with uniform values for a while.
#[test]
#[ignore = "child role of writers_paused_and_killed_at_random_leave_a_healthy_segment"]
fn child_churn() {
    let Ok(name) = std::env::var("GDS_CHURN_SEG") else { return };
    let st = Store::attach(&name).unwrap();
    let mut x = std::process::id() as u64 | 1;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = format!("k{}", x % 64);
        match x % 4 {
            0 => {
                st.delete(k.as_bytes()).unwrap();
            }
            _ => {
                st.set(k.as_bytes(), &vec![(x >> 8) as u8; (x % 3000) as usize], Expiry::Never).unwrap();
            }
        }
        if let Some(e) = st.get(k.as_bytes()).unwrap() {
            assert!(e.value.iter().all(|&b| b == e.value[0]), "torn value");
        }
    }
}
