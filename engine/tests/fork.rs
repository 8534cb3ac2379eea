//! `fork()` with an open store: a child that uses the inherited handle must act as a client
//! of its own (its pid, never the parent's, in the slots it claims and the locks it takes),
//! see and write the same segment, and leave the parent's handle working. A lock a child took
//! is taken over at once after it died: proof it was recorded under the child's pid.
//!
//! The tests fork the calling thread of a multi-threaded harness: a child only runs store
//! operations and then `_exit`s (no harness code, no destructors), and reports through its exit
//! code. The tests of this file hold `FORK_LOCK`, so no other test of this binary is inside
//! the engine while one of them forks.

mod common;
use common::*;
use gardenstate::{Expiry, Store};
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

static FORK_LOCK: Mutex<()> = Mutex::new(());

/// Forks; the child runs `body` and `_exit`s with the code it returns (101 on a panic).
fn fork_child(body: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no memory-safety preconditions. The child is single-threaded: it runs
    // only `body` (store operations: malloc and the engine's own mutexes, which no other
    // thread of this process holds while we fork, see FORK_LOCK) and leaves with _exit, so no
    // harness code, atexit handler or destructor runs in it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = catch_unwind(AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: _exit ends the child at once; nothing of the parent's is flushed or dropped.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exit(i32),
    Signal(i32),
    TimedOut,
}

/// Waits for `pid` up to `limit` (then kills it).
fn wait_pid(pid: libc::pid_t, limit: Duration) -> End {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our unreaped child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid({pid}): {}", std::io::Error::last_os_error());
        if r == pid {
            if libc::WIFEXITED(status) {
                return End::Exit(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return End::Signal(libc::WTERMSIG(status));
            }
        }
        if Instant::now() > deadline {
            // SAFETY: kill and waitpid on our own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return End::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `key` until it is present (or `limit` passes): `None` on timeout.
fn wait_key(st: &Store, key: &[u8], limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(e)) = st.get(key) {
            return Some(e.value);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// What a child's exit code means (the step that failed).
fn step(code: i32) -> &'static str {
    match code {
        0 => "ok",
        10 => "reading the parent's key through the inherited handle",
        11 => "writing its own key",
        12 => "taking its session lock",
        13 => "reporting ready",
        14 => "waiting for the parent's go",
        15 => "reading the parent's write made after the fork",
        16 => "reading back its own key",
        17 => "taking over the lock of its dead child",
        101 => "a panic",
        _ => "unknown step",
    }
}

/// The child of `forked_children_get_their_own_client_slots`.
fn child_body(st: &Store, n: usize) -> i32 {
    let me = format!("child-{n}");
    match st.get(b"parent-key") {
        Ok(Some(e)) if e.value == b"from the parent" => {}
        _ => return 10,
    }
    // Held when the child exits: the parent takes it over only if it names the child's pid.
    if !matches!(st.lock(format!("lock-{n}").as_bytes(), Duration::from_secs(3600)), Ok(Some(_))) {
        return 12;
    }
    let v = make_value(me.as_bytes(), 100 + n as u32, 1, 0, 48);
    if st.set(me.as_bytes(), &v, Expiry::Never).is_err() {
        return 11;
    }
    if st.set(format!("{me}-ready").as_bytes(), b"1", Expiry::Never).is_err() {
        return 13;
    }
    if wait_key(st, format!("go-{n}").as_bytes(), Duration::from_secs(20)).is_none() {
        return 14;
    }
    match st.get(format!("after-fork-{n}").as_bytes()) {
        Ok(Some(e)) if e.value == b"parent wrote this after the fork" => {}
        _ => return 15,
    }
    match st.get(me.as_bytes()) {
        Ok(Some(e)) if e.value == v => 0,
        _ => 16,
    }
}

/// A parent that used the store from its main thread and two more threads (still alive, idle:
/// holding no client slot) forks four children. Each child reads the parent's data through the
/// inherited handle, takes a session lock as itself, writes, and sees the parent's later
/// writes. Afterwards the parent's handle works from every thread, takes over each dead
/// child's lock at once (the lock named the child's pid, not the parent's), and no slot is
/// left in use.
#[test]
fn forked_children_get_their_own_client_slots() {
    let _g = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s = Seg::new("fork");
    let st = Arc::new(Store::create(&s.name, &small()).unwrap());
    st.set(b"parent-key", b"from the parent", Expiry::Never).unwrap();
    for n in 0..4 {
        st.set(format!("lock-{n}").as_bytes(), b"session", Expiry::Never).unwrap();
    }
    // Two threads use the store, then wait (idle) while we fork.
    let (forked, resume) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (st, forked, resume) = (st.clone(), forked.clone(), resume.clone());
            std::thread::spawn(move || {
                let k = format!("thread-{t}");
                for i in 0..100u64 {
                    st.set(k.as_bytes(), &make_value(k.as_bytes(), t, i, 0, 40), Expiry::Never).unwrap();
                }
                forked.wait(); // ready: the parent forks now
                resume.wait(); // the children are done
                for i in 100..200u64 {
                    st.set(k.as_bytes(), &make_value(k.as_bytes(), t, i, 0, 40), Expiry::Never).unwrap();
                    assert_eq!(
                        st.get(k.as_bytes()).unwrap().unwrap().value,
                        make_value(k.as_bytes(), t, i, 0, 40)
                    );
                }
            })
        })
        .collect();
    forked.wait();
    assert_eq!(st.stats().clients, 0, "idle threads hold no client slot");

    const CHILDREN: usize = 4;
    let pids: Vec<_> = (0..CHILDREN).map(|n| fork_child(|| child_body(&st, n))).collect();
    for n in 0..CHILDREN {
        if wait_key(&st, format!("child-{n}-ready").as_bytes(), Duration::from_secs(20)).is_none() {
            let ends: Vec<_> = pids.iter().map(|&p| wait_pid(p, Duration::from_millis(100))).collect();
            panic!("child {n} never got ready; children: {ends:?} (exit codes: see `step`)");
        }
    }
    for n in 0..CHILDREN {
        st.set(format!("after-fork-{n}").as_bytes(), b"parent wrote this after the fork", Expiry::Never)
            .unwrap();
        st.set(format!("go-{n}").as_bytes(), b"1", Expiry::Never).unwrap();
    }
    let ends: Vec<_> = pids.iter().map(|&p| wait_pid(p, Duration::from_secs(20))).collect();
    for (n, end) in ends.iter().enumerate() {
        match end {
            End::Exit(0) => {}
            End::Exit(c) => panic!("child {n} failed at: {} (exit {c})", step(*c)),
            other => panic!("child {n}: {other:?}"),
        }
    }
    for n in 0..CHILDREN {
        let k = format!("child-{n}");
        let v = st.get(k.as_bytes()).unwrap().expect("the child's write is visible to the parent");
        assert_eq!(v.value, make_value(k.as_bytes(), 100 + n as u32, 1, 0, 48));
    }
    // The parent's handle still works, from this thread and the workers.
    st.set(b"parent-key", b"parent again", Expiry::Never).unwrap();
    assert_eq!(st.get(b"parent-key").unwrap().unwrap().value, b"parent again");
    resume.wait();
    for w in workers {
        w.join().unwrap();
    }
    for n in 0..CHILDREN {
        let l = st.lock(format!("lock-{n}").as_bytes(), Duration::from_secs(3600)).unwrap().unwrap();
        assert!(l.took_over, "child {n}'s lock was not taken over after it died: recorded under a live pid?");
    }
    // The children _exit'ed between operations: they held no slot, nothing to reclaim.
    let r = sweep_fully(&st);
    assert_eq!(r.dead_clients_reclaimed, 0, "{r:?}");
    assert_eq!(st.stats().clients, 0, "no operation in flight, no slot in use");
    assert_healthy(&st);
}

/// A child that uses its inherited handle, drops it and attaches again (a common pattern:
/// re-open after fork) holds no client slot between operations, before or after the drop,
/// and the parent's handle is untouched.
#[test]
fn child_dropping_inherited_handle_releases_its_own_slot() {
    let _g = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s = Seg::new("forkdrop");
    let cell = RefCell::new(Some(Store::create(&s.name, &small()).unwrap()));
    let parent_clients = {
        let b = cell.borrow();
        let st = b.as_ref().unwrap();
        st.set(b"parent-key", b"from the parent", Expiry::Never).unwrap();
        st.stats().clients
    };
    let name = s.name.clone();
    // The parent creates this file once it has checked the count: the child lives until then.
    let done = std::env::temp_dir().join(format!("{}.parent-checked", s.name));
    let _ = std::fs::remove_file(&done);
    let pid = fork_child(|| {
        let st = cell.borrow_mut().take().unwrap();
        if st.set(b"child-key", b"x", Expiry::Never).is_err() {
            return 11;
        }
        let with_child = st.stats().clients;
        drop(st);
        let Ok(fresh) = Store::attach(&name) else { return 30 };
        let after_drop = fresh.stats().clients; // stats() claims no slot
        // Report the counts for the parent's message (this write claims one more slot).
        let report = format!("{with_child} {after_drop}");
        if fresh.set(b"child-report", report.as_bytes(), Expiry::Never).is_err() {
            return 31;
        }
        drop(fresh);
        // Stay alive (touching no segment) until the parent has checked the count while this
        // process still exists, however slow either of them runs.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if done.exists() { 0 } else { 32 }
    });
    let st = cell.borrow_mut().take().unwrap();
    let report = wait_key(&st, b"child-report", Duration::from_secs(20)).expect("child report");
    let report = String::from_utf8(report).unwrap();
    // The child releases its slot just after writing the report (drop(fresh)) and then waits
    // for us: wait for that release instead of sampling once (a slow child, e.g. under ASan,
    // was still between the write and the drop).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut live_clients = st.stats().clients;
    while live_clients != parent_clients && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        live_clients = st.stats().clients;
    }
    std::fs::write(&done, b"").unwrap();
    assert_eq!(wait_pid(pid, Duration::from_secs(20)), End::Exit(0));
    let _ = std::fs::remove_file(&done);
    let (with_child, after_drop): (u64, u64) = {
        let mut it = report.split(' ').map(|x| x.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert_eq!(parent_clients, 0, "an idle parent holds no slot");
    assert_eq!(with_child, 0, "a child between operations holds no slot");
    assert_eq!(after_drop, 0, "nor after dropping its inherited handle");
    assert_eq!(live_clients, 0, "while the child lives on, no slot is in use");
}

/// Forks while two threads are writing and reading as fast as they can: each child (forked at
/// a random point of the threads' operations) works through the inherited handle, and the
/// segment is healthy once everyone is done.
#[test]
fn fork_while_threads_are_busy() {
    let _g = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s = Seg::new("forkbusy");
    let st = Arc::new(Store::create(&s.name, &small()).unwrap());
    st.set(b"parent-key", b"from the parent", Expiry::Never).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..2u32)
        .map(|t| {
            let (st, stop) = (st.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = format!("busy-{t}-{}", i % 50);
                    let v = make_value(k.as_bytes(), t, i, 0, 32 + (i as usize % 900));
                    st.set(k.as_bytes(), &v, Expiry::Never).unwrap();
                    let got = st.get(k.as_bytes()).unwrap().unwrap().value;
                    check_value(k.as_bytes(), &got).unwrap();
                    if i % 7 == 0 {
                        st.delete(k.as_bytes()).unwrap();
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let mut rng = Rng::new(seed_from_env("GDS_SEED"));
    let mut ends = Vec::new();
    for n in 0..6u32 {
        std::thread::sleep(Duration::from_micros(rng.range(100, 20_000)));
        let st = &st;
        let pid = fork_child(|| {
            match st.get(b"parent-key") {
                Ok(Some(e)) if e.value == b"from the parent" => {}
                _ => return 10,
            }
            for i in 0..200u64 {
                let k = format!("forked-{n}-{}", i % 20);
                let v = make_value(k.as_bytes(), 1000 + n, i, 0, 32 + (i as usize % 500));
                if st.set(k.as_bytes(), &v, Expiry::Never).is_err() {
                    return 11;
                }
                match st.get(k.as_bytes()) {
                    Ok(Some(e)) if e.value == v => {}
                    _ => return 16,
                }
            }
            0
        });
        ends.push((n, pid));
    }
    for (n, pid) in ends {
        match wait_pid(pid, Duration::from_secs(30)) {
            End::Exit(0) => {}
            End::Exit(c) => panic!("child {n} failed at: {} (exit {c})", step(c)),
            other => panic!("child {n}: {other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    for n in 0..6u32 {
        let k = format!("forked-{n}-19");
        let v = st.get(k.as_bytes()).unwrap().expect("a child's write is visible");
        check_value(k.as_bytes(), &v.value).unwrap();
    }
    // The workers' opportunistic sweeps may have reclaimed the dead children already.
    sweep_fully(&st);
    assert_eq!(st.stats().clients, 0, "no operation in flight, no slot in use");
    assert_healthy(&st);
}

/// A grandchild (fork of a forked child) is a new client again, distinct from its parent's:
/// the lock it holds when it dies is taken over at once by the child, and the child's by the
/// parent.
#[test]
fn grandchild_is_a_client_of_its_own() {
    let _g = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let s = Seg::new("forkgrand");
    let st = Store::create(&s.name, &small()).unwrap();
    st.set(b"parent-key", b"from the parent", Expiry::Never).unwrap();
    let hour = Duration::from_secs(3600);
    for k in [&b"child-lock"[..], b"grandchild-lock"] {
        st.set(k, b"session", Expiry::Never).unwrap();
    }
    let pid = fork_child(|| {
        if st.set(b"child", b"1", Expiry::Never).is_err() {
            return 11;
        }
        let gpid = fork_child(|| {
            if st.set(b"grandchild", b"1", Expiry::Never).is_err() {
                return 11;
            }
            if !matches!(st.lock(b"grandchild-lock", hour), Ok(Some(_))) {
                return 12;
            }
            0
        });
        match wait_pid(gpid, Duration::from_secs(20)) {
            End::Exit(0) => {}
            End::Exit(c) => return 40 + c.min(20),
            _ => return 39,
        }
        // The grandchild is dead now: its lock named its own pid, not the child's.
        if !matches!(st.lock(b"grandchild-lock", hour), Ok(Some(l)) if l.took_over) {
            return 17;
        }
        if !matches!(st.lock(b"child-lock", hour), Ok(Some(_))) {
            return 12;
        }
        match st.get(b"grandchild") {
            Ok(Some(e)) if e.value == b"1" => 0,
            _ => 16,
        }
    });
    let end = wait_pid(pid, Duration::from_secs(30));
    assert_eq!(end, End::Exit(0), "(40 + c: the grandchild failed with c; see `step`)");
    assert_eq!(st.get(b"grandchild").unwrap().unwrap().value, b"1");
    let l = st.lock(b"child-lock", hour).unwrap().unwrap();
    assert!(l.took_over, "the dead child's lock was not taken over: recorded under the parent's pid?");
    assert_eq!(
        sweep_fully(&st).dead_clients_reclaimed,
        0,
        "processes that exited between operations hold no slot"
    );
    assert_eq!(st.stats().clients, 0);
    assert_healthy(&st);
}
