//! Faults real hosts produce, which the kill-anywhere suite does not model: a process that
//! cannot tell whether others are alive (out of file descriptors or memory, `hidepid`, another
//! PID namespace), and thousands of threads across several processes.
//!
//! The blind-sweeper tests stage the worst moment for a wrong liveness decision: one process
//! holds a session lock, another is stopped inside a `set` (new record written, old one
//! journaled, publishing CAS not done: failpoint `update.before_publish`, action `stop`), and a
//! third sweeps and tries the lock while it cannot read `/proc`. Judging either live process
//! dead frees the stopped writer's block (it then publishes a freed block: `check` fails) or
//! takes the lock over (its owner's unlock then fails with `LockMismatch`). Required: nothing
//! reclaimed, nothing taken over, the stopped write completes after SIGCONT, `check` clean.
//!
//! Child roles are `#[ignore]`d tests run by their parent with `--ignored --exact`.

mod common;
use common::*;
use gardenstate::{Error, Expiry, Options, Store};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const SEG_ENV: &str = "GDS_FAULTS_SEG";
const KIND_ENV: &str = "GDS_FAULTS_KIND";
const HOUR: Duration = Duration::from_secs(3600);

/// The argv that runs child role `name` of this test binary.
fn role_argv(name: &str) -> Vec<OsString> {
    let exe = std::env::current_exe().expect("current_exe");
    let mut v = vec![exe.into_os_string()];
    v.extend(
        ["--ignored", "--exact", name, "--nocapture", "--test-threads=1", "--quiet"].map(OsString::from),
    );
    v
}

fn role(name: &str, seg: &str) -> Command {
    let argv = role_argv(name);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env(SEG_ENV, seg).stdin(Stdio::null());
    cmd
}

fn seg_name() -> String {
    std::env::var(SEG_ENV).expect("child roles run from their parent test")
}

/// Waits until `child` is stopped (SIGSTOP at its failpoint).
fn wait_stopped(child: &Child) {
    let mut status = 0;
    // SAFETY: waitpid on our own unreaped child, with a valid out-pointer.
    let r = unsafe { libc::waitpid(child.id() as libc::pid_t, &mut status, libc::WUNTRACED) };
    assert_eq!(r, child.id() as libc::pid_t, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFSTOPPED(status), "the child ended instead of stopping at its failpoint ({status:#x})");
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// Reads `child`'s stdout lines until one starts with `prefix`; returns it.
fn read_until(out: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before printing {prefix}");
        if line.starts_with(prefix) {
            return line.trim().to_string();
        }
    }
}

// ---- the blind sweeper ------------------------------------------------------------------------

#[test]
#[ignore = "child role of the blind-sweeper tests"]
fn role_lock_holder() {
    let st = Store::attach_group(&seg_name()).unwrap();
    let l = st.lock(b"locked", HOUR).unwrap().expect("the key exists");
    println!("LOCKED {}", l.lock_id);
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    match st.unlock(b"locked", l.lock_id) {
        Ok(()) => println!("UNLOCKED"),
        Err(e) => panic!("the lock holder's unlock failed: {e:?} (its lock was taken over)"),
    }
}

#[test]
#[ignore = "child role of the blind-sweeper tests"]
fn role_parked_writer() {
    let st = Store::attach_group(&seg_name()).unwrap();
    // GDS_FAILPOINT=update.before_publish:1:stop stops this process inside this set.
    let v = st.set(b"parked", b"written by the parked writer", Expiry::Never).unwrap();
    println!("SET {v}");
}

/// Lowers the soft limit of open files and opens /dev/null until `open` fails with EMFILE.
fn exhaust_file_descriptors() -> Vec<std::fs::File> {
    let lim = libc::rlimit { rlim_cur: 64, rlim_max: libc::RLIM_INFINITY };
    let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers to rlimit structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur), 0);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &libc::rlimit { rlim_max: cur.rlim_max, ..lim }), 0);
    }
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
    let e = std::fs::File::open("/proc/self/stat").expect_err("fds exhausted");
    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "the fault is real: /proc cannot be opened");
    held
}

#[test]
#[ignore = "child role of the blind-sweeper tests"]
fn role_blind_sweeper() {
    let kind = std::env::var(KIND_ENV).unwrap();
    let st = match Store::attach_group(&seg_name()) {
        Ok(st) => st,
        Err(e) => {
            println!("ATTACH REFUSED {e}");
            return;
        }
    };
    st.get(b"locked").unwrap(); // this thread's identity is made before the fault
    let _fds = (kind == "emfile").then(exhaust_file_descriptors);
    let r = sweep_fully(&st);
    let lock = match st.lock(b"locked", HOUR) {
        Err(Error::Locked { .. }) => "refused".to_string(),
        Ok(Some(l)) if l.took_over => "TAKEN OVER".to_string(),
        other => format!("{other:?}"),
    };
    println!("RESULT reclaimed={} lock={lock} dead={}", r.dead_clients_reclaimed, st.check().dead_clients);
}

/// Runs the blind-sweeper scenario with the sweeper made by `sweeper`; returns the sweeper's
/// `RESULT`/`ATTACH` line after checking nothing was lost.
fn blind_sweeper(tag: &str, kind: &str, sweeper: impl FnOnce(Command) -> Command) -> String {
    let s = Seg::new(tag);
    let st = Store::create(&s.name, &Options { mode: 0o660, ..small() }).unwrap();
    // The hidepid sweeper runs as nobody:nogroup and attaches as a member of the group.
    std::os::unix::fs::chown(seg_path(&s.name), None, Some(65534)).unwrap();
    st.set(b"locked", b"session", Expiry::Never).unwrap();
    st.set(b"parked", b"before", Expiry::Never).unwrap();
    let mut kids = Children::default();

    let mut holder =
        role("role_lock_holder", &s.name).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut holder_out = BufReader::new(holder.stdout.take().unwrap());
    read_until(&mut holder_out, "LOCKED");
    let mut holder_in = holder.stdin.take().unwrap();
    kids.0.push(holder);

    let writer = role("role_parked_writer", &s.name)
        .env("GDS_FAILPOINT", "update.before_publish:1:stop")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_stopped(&writer);
    kids.0.push(writer);

    let mut cmd = role("role_blind_sweeper", &s.name);
    cmd.env(KIND_ENV, kind);
    let run = run_child(sweeper(cmd), Duration::from_secs(60));
    assert!(run.success(), "sweeper: {}", run.describe());
    let result = run
        .stdout
        .lines()
        .find(|l| l.starts_with("RESULT") || l.starts_with("ATTACH"))
        .unwrap_or_else(|| panic!("no result from the sweeper: {}", run.describe()))
        .to_string();
    println!("{kind}: {result}");

    // The stopped writer finishes its set; the lock holder's unlock succeeds.
    signal(&kids.0[1], libc::SIGCONT);
    let out = wait_timeout(&mut kids.0[1], Duration::from_secs(30)).expect("writer finished");
    assert!(out.success(), "the parked writer failed after SIGCONT");
    holder_in.write_all(b"unlock\n").unwrap();
    drop(holder_in);
    let out = wait_timeout(&mut kids.0[0], Duration::from_secs(30)).expect("lock holder finished");
    assert!(out.success(), "the lock holder's unlock failed: its lock was taken over");
    read_until(&mut holder_out, "UNLOCKED");

    assert_eq!(st.get(b"parked").unwrap().unwrap().value, b"written by the parked writer");
    assert_eq!(st.stats().lock_takeovers, 0);
    assert_healthy(&st);
    result
}

fn assert_blind_but_harmless(result: &str) {
    assert!(
        result.starts_with("RESULT reclaimed=0 lock=refused dead=0"),
        "a sweeper that cannot tell judged live processes dead: {result}"
    );
}

/// EMFILE: the sweeper has exhausted its file descriptors, so it cannot open `/proc`.
#[test]
fn a_sweeper_out_of_file_descriptors_reclaims_nothing() {
    assert_blind_but_harmless(&blind_sweeper("blind-emfile", "emfile", |c| c));
}

/// ENOMEM (and any other error of the `/proc` read): injected for every read, as an
/// exhausted host gives it (`GDS_FAULT_ERRNO`; RLIMIT_AS does not make the kernel's read fail).
#[test]
fn a_sweeper_out_of_memory_reclaims_nothing() {
    for (errno, name) in [(libc::ENOMEM, "enomem"), (libc::ENFILE, "enfile"), (libc::EACCES, "eacces")] {
        let result = blind_sweeper(&format!("blind-{name}"), name, |mut c| {
            c.env("GDS_FAULT_ERRNO", format!("liveness.read_proc:{errno}"));
            c
        });
        assert_blind_but_harmless(&result);
    }
}

/// `hidepid=2`: the sweeper runs as another user (nobody, a member of the segment's group) in a
/// private mount namespace whose `/proc` hides other users' processes (ENOENT) and whose
/// `kill(pid, 0)` says EPERM: they exist, but cannot be judged.
#[test]
fn a_sweeper_under_hidepid_reclaims_nothing() {
    if !is_root() {
        println!("SKIPPED: mounting a hidepid /proc needs root");
        return;
    }
    let probe =
        Command::new("unshare").args(["-m", "sh", "-c", "mount -t proc -o hidepid=2 proc /proc"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("SKIPPED: cannot mount a hidepid=2 /proc in a private mount namespace here");
        return;
    }
    let result = blind_sweeper("blind-hidepid", "hidepid", |mut c| {
        // SAFETY: the closure runs in the forked child before exec and only makes system calls
        // (no allocation: the strings are literals).
        unsafe {
            c.pre_exec(|| {
                let check =
                    |r: libc::c_int| if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                let none = std::ptr::null();
                check(libc::mount(
                    none,
                    c"/".as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"hidepid=2".as_ptr().cast(),
                ))?;
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(65534))?;
                check(libc::setuid(65534))
            });
        }
        c
    });
    assert_blind_but_harmless(&result);
}

/// Another PID namespace (`unshare -p --fork --mount-proc`: a sidecar container sharing
/// /dev/shm but not the PID namespace): its pids name other processes, so it is refused at
/// attach with an error naming both namespaces, and touches nothing.
#[test]
fn a_process_of_another_pid_namespace_is_refused() {
    let probe = Command::new("unshare").args(["-p", "--fork", "--mount-proc", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        println!("SKIPPED: `unshare -p --fork --mount-proc` is not permitted here");
        return;
    }
    let result = blind_sweeper("blind-pidns", "pidns", |c| {
        let mut u = Command::new("unshare");
        u.args(["-p", "--fork", "--mount-proc"]).args(role_argv("role_blind_sweeper"));
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                u.env(k, v);
            }
        }
        u.stdin(Stdio::null());
        u
    });
    assert!(
        result.starts_with("ATTACH REFUSED")
            && result.contains("PID namespace pid:[")
            && result.contains("pid:["),
        "a process of another PID namespace was let in: {result}"
    );
}

// ---- thousands of threads ---------------------------------------------------------------------

const CROWD: usize = 2000;

/// `CROWD` threads, all alive at once, each doing a get and a set, then (all having used the
/// store) another get and set; `GDS_FAULTS_KIND=forever` repeats until the process is stopped.
#[test]
#[ignore = "child role of thousands_of_threads_in_several_processes"]
fn role_thread_crowd() {
    let st = Arc::new(Store::attach(&seg_name()).unwrap());
    let forever = std::env::var(KIND_ENV).as_deref() == Ok("forever");
    let barrier = Arc::new(Barrier::new(CROWD));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..CROWD)
        .map(|t| {
            let (st, barrier, errors) = (st.clone(), barrier.clone(), errors.clone());
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let key = format!("p{}-t{t}", std::process::id());
                    let mut round = 0u64;
                    let op = |round: u64| {
                        let ok = st.get(key.as_bytes()).is_ok()
                            && st.set(key.as_bytes(), &round.to_le_bytes(), Expiry::Never).is_ok();
                        if !ok {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    };
                    op(round);
                    barrier.wait(); // every thread exists and has used the store
                    loop {
                        round += 1;
                        op(round);
                        if !forever {
                            break;
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    println!("CROWD errors={errors}");
    assert_eq!(errors, 0, "operations failed with {CROWD} threads");
}

/// 3 processes of 2,000 threads each (a segment of 64 client slots) do their gets and sets
/// without one `Full(Clients)`, while 2 more such processes are stopped mid-operation and
/// SIGKILLed: their slots are reclaimed, `check` is clean and no slot stays in use.
#[test]
fn thousands_of_threads_in_several_processes() {
    let s = Seg::new("crowd");
    let opts = Options { max_entries: 40_000, capacity_bytes: 16 << 20, ..small() };
    let st = Store::create(&s.name, &opts).unwrap();
    let mut kids = Children::default();
    for _ in 0..2 {
        // Stopped inside an update once the crowd is at it, then killed there.
        let c = role("role_thread_crowd", &s.name)
            .env(KIND_ENV, "forever")
            .env("GDS_FAILPOINT", "update.before_publish:2500:stop")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        kids.0.push(c);
    }
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let name = s.name.clone();
            std::thread::spawn(move || {
                let mut c = role("role_thread_crowd", &name);
                c.env(KIND_ENV, "once");
                run_child(c, Duration::from_secs(300))
            })
        })
        .collect();
    for c in &kids.0 {
        wait_stopped(c);
        signal(c, libc::SIGKILL);
    }
    for c in &mut kids.0 {
        let _ = c.wait();
    }
    for r in runs {
        let run = r.join().unwrap();
        assert!(run.success() && run.stdout.contains("CROWD errors=0"), "{}", run.describe());
    }
    sweep_fully(&st);
    // Reclaimed by this sweep or already by the crowds' own opportunistic sweeps.
    let stats = st.stats();
    assert!(stats.dead_reclaims >= 1, "the killed processes held slots mid-operation: {stats:?}");
    assert_eq!(stats.clients, 0, "no operation in flight, no slot in use");
    assert_healthy(&st);
}
