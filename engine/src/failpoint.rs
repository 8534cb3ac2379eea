//! Named failpoints: places in the engine where a test can have the process killed (SIGKILL)
//! at exactly that instruction, to prove the "killed at any instruction" invariant at the
//! points where it is hardest (a record published but its old block not yet freed, a block
//! owned but not yet journaled as published, a segment created but not yet stamped ready).
//!
//! Compiled only with the cargo feature `failpoints`: without it `failpoint!("name")` expands
//! to nothing (zero cost). With it, a failpoint can kill or stall what reaches it:
//! - `GDS_FAILPOINT=name[:n[:action]]` makes the `n`-th hit (default 1) of failpoint `name` in
//!   this process send itself SIGKILL (`kill`, the default) or SIGSTOP (`stop`: the whole
//!   process stalls there, for as long as the test waits before its SIGCONT), or panic there
//!   (`panic`: the operation unwinds, as one does when a caller catches panics). If
//!   `GDS_FAILPOINT_MARK=<path>` is set too, the name is appended to that file just before,
//!   so a test can tell the failpoint it armed was the one that fired.
//! - [`pause`] (in-process) parks only the thread that makes the `n`-th hit, until the test
//!   releases it: a writer stalled at an exact instruction while other threads go on, for
//!   any number of their operations (a stall of any length, without a clock).
//! - [`panic_at`] (in-process) makes the `n`-th hit by one thread panic: the operation
//!   unwinds out of the engine from exactly there, and must leave the segment as a kill would
//!   and give back what a kill's reclaim would (store.rs, "Unwinding").
//!
//! - `GDS_FAULT_ERRNO=site:errno` makes every call at an [`ERRNO_SITES`] site fail with that
//!   errno, for the life of the process: resource exhaustion that lasts (ENOMEM, ENFILE,
//!   EACCES), which a test cannot produce on demand for the one call it is about.
//!
//! Every failpoint name is listed in [`NAMES`] (tests iterate over it, so a failpoint removed
//! from the code but left in the list fails its test, never hit).

/// Every failpoint in the engine, with where it is.
pub const NAMES: &[&str] = &[
    // store.rs, insert of an absent key (table.rs T1)
    "insert.after_inserting", // INSERTING word placed, not yet settled
    "insert.before_flip",     // window scanned, other copies collided, not yet MEMBER
    "insert.after_member",    // flipped to MEMBER, journal (C_J_NEW) not yet cleared
    // store.rs, every write (insert, update, delete)
    "update.after_view", // key looked up and the write decided, nothing taken or journaled
    // store.rs, update of a present key (copy-on-write publish)
    "update.before_publish", // new record written, old one journaled (C_J_OLD), CAS not done
    "update.after_publish",  // CAS done: new record published, old block not yet freed
    // store.rs, delete / expiry / eviction
    "delete.after_journal",   // old record journaled, unpublish CAS not done
    "delete.after_unpublish", // slot EMPTY, old block not yet freed
    // heap.rs
    "heap.take_after_journal", // C_J_NEW names the block, its state CAS not done
    "heap.take_after_own",     // block OWNED, bitmap bit not yet set
    "heap.free_after_state",   // block FREE, bitmap bit still set (hidden until repaired)
    // store.rs, sweep
    "sweep.mid_expire", // one expired entry unpublished, sweeper lease held
    // store.rs, lock takeover
    "lock.takeover_before_publish", // takeover decided, new record not published
    "lock.takeover_after_publish",  // taken over, old record not yet freed
    // store.rs, lock_wait
    "lock_wait.before_sleep", // armed, found the lock held, not yet asleep (lockwait.rs L1)
    // segment.rs, creation
    "create.after_excl", // file created (O_EXCL, mode 0000), header not written / not READY
    "create.after_mode", // header written, final mode set, not yet READY
    "create.after_ready", // READY stamped, create() not yet returned
];

/// The calls `GDS_FAULT_ERRNO` can make fail (see the module comment).
pub const ERRNO_SITES: &[&str] = &[
    "liveness.read_proc", // os.rs: the read of /proc/<pid>/stat that judges a process's liveness
];

#[cfg(feature = "failpoints")]
mod imp {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex, OnceLock};

    /// What an armed failpoint does to the process or thread that hits it.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Action {
        /// SIGKILL to the whole process (the default).
        Kill,
        /// SIGSTOP to the whole process: it stalls there until a SIGCONT (a test's stand-in
        /// for CPU throttling, swap or a debugger).
        Stop,
        /// A panic in the thread that hits it.
        Panic,
    }

    struct Armed {
        name: String,
        nth: u64,
        hits: AtomicU64,
        mark: Option<std::path::PathBuf>,
        action: Action,
    }

    /// `GDS_FAILPOINT=name[:n[:kill|stop]]`: `n`-th hit (default 1), action (default kill).
    fn parse(spec: &str) -> Armed {
        let mut parts = spec.splitn(3, ':');
        let name = parts.next().unwrap_or_default().to_string();
        let nth = parts.next().map_or(1, |k| k.trim().parse().unwrap_or(1));
        let action = match parts.next().map(str::trim) {
            None | Some("kill") => Action::Kill,
            Some("stop") => Action::Stop,
            Some("panic") => Action::Panic,
            Some(other) => panic!("GDS_FAILPOINT {spec:?}: unknown action {other:?} (kill, stop or panic)"),
        };
        let mark = std::env::var_os("GDS_FAILPOINT_MARK").map(Into::into);
        Armed { name, nth: nth.max(1), hits: AtomicU64::new(0), mark, action }
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED.get_or_init(|| std::env::var("GDS_FAILPOINT").ok().map(|s| parse(&s))).as_ref()
    }

    /// A thread stall (see [`pause`]) or panic (see [`panic_at`]) armed from inside the process.
    #[derive(Debug)]
    pub struct Pause {
        name: &'static str,
        nth: u64,
        /// Panic at the hit instead of parking there.
        panics: bool,
        /// Only hits by this thread count (None: any thread of the process).
        thread: Option<std::thread::ThreadId>,
        hits: AtomicU64,
        /// (reached, released)
        state: Mutex<(bool, bool)>,
        cv: Condvar,
    }

    impl Pause {
        /// Blocks until a thread is parked at the failpoint.
        pub fn wait_reached(&self) {
            let mut st = self.state.lock().unwrap();
            while !st.0 {
                st = self.cv.wait(st).unwrap();
            }
        }
        /// Whether a thread is parked (or was, and has been released).
        pub fn reached(&self) -> bool {
            self.state.lock().unwrap().0
        }
        /// Lets the parked thread go on.
        pub fn release(&self) {
            self.state.lock().unwrap().1 = true;
            self.cv.notify_all();
        }
        fn park_here(&self) {
            let mut st = self.state.lock().unwrap();
            st.0 = true;
            self.cv.notify_all();
            while !st.1 {
                st = self.cv.wait(st).unwrap();
            }
        }
    }

    impl Drop for Pause {
        fn drop(&mut self) {
            self.release();
        }
    }

    static ANY_PAUSE: AtomicBool = AtomicBool::new(false);
    fn pauses() -> &'static Mutex<Vec<Arc<Pause>>> {
        static PAUSES: OnceLock<Mutex<Vec<Arc<Pause>>>> = OnceLock::new();
        PAUSES.get_or_init(|| Mutex::new(Vec::new()))
    }

    /// Arms a stall: the `nth` hit (from now, by `thread`, or by any thread of the process if
    /// None) of failpoint `name` parks the hitting thread until [`Pause::release`] (or the
    /// handle is dropped). Other threads run on, so a test can stage "this writer stalled exactly here
    /// while the world moved on". Tests of one binary share the process: name the thread.
    pub fn pause(name: &'static str, nth: u64, thread: Option<std::thread::ThreadId>) -> Arc<Pause> {
        arm(name, nth, thread, false)
    }

    /// Arms a panic: the `nth` hit (from now, by `thread`, or by any thread if None) of
    /// failpoint `name` panics in the hitting thread (once). [`Pause::reached`] tells whether
    /// it fired.
    pub fn panic_at(name: &'static str, nth: u64, thread: Option<std::thread::ThreadId>) -> Arc<Pause> {
        arm(name, nth, thread, true)
    }

    fn arm(name: &'static str, nth: u64, thread: Option<std::thread::ThreadId>, panics: bool) -> Arc<Pause> {
        assert!(super::NAMES.contains(&name), "failpoint {name} is not in failpoint::NAMES");
        let p = Arc::new(Pause {
            name,
            nth: nth.max(1),
            panics,
            thread,
            hits: AtomicU64::new(0),
            state: Mutex::new((false, false)),
            cv: Condvar::new(),
        });
        pauses().lock().unwrap().push(p.clone());
        ANY_PAUSE.store(true, Ordering::SeqCst);
        p
    }

    /// The errno `GDS_FAULT_ERRNO=site:errno` injects at `site`, if it names this one.
    pub fn injected_errno(site: &'static str) -> Option<i32> {
        debug_assert!(
            super::ERRNO_SITES.contains(&site),
            "errno site {site} is not in failpoint::ERRNO_SITES"
        );
        static SPEC: OnceLock<Option<(String, i32)>> = OnceLock::new();
        let spec = SPEC.get_or_init(|| {
            let v = std::env::var("GDS_FAULT_ERRNO").ok()?;
            let (name, errno) = v.rsplit_once(':')?;
            let errno =
                errno.trim().parse().unwrap_or_else(|_| panic!("GDS_FAULT_ERRNO {v:?}: errno is a number"));
            Some((name.to_string(), errno))
        });
        spec.as_ref().filter(|(name, _)| name == site).map(|&(_, errno)| errno)
    }

    /// Called at failpoint `name`: stalls or kills as armed (see the module comment).
    pub fn hit(name: &'static str) {
        debug_assert!(super::NAMES.contains(&name), "failpoint {name} is not in failpoint::NAMES");
        if ANY_PAUSE.load(Ordering::Relaxed) {
            let me = std::thread::current().id();
            let due = {
                let mut all = pauses().lock().unwrap();
                let at = all.iter().position(|p| {
                    p.name == name
                        && p.thread.is_none_or(|t| t == me)
                        && p.hits.fetch_add(1, Ordering::SeqCst) + 1 == p.nth
                });
                at.map(|i| all.swap_remove(i)) // fires once
            };
            if let Some(p) = due {
                if p.panics {
                    p.state.lock().unwrap().0 = true;
                    panic!("failpoint {name}: injected panic");
                }
                p.park_here();
            }
        }
        let Some(a) = armed() else { return };
        if a.name != name || a.hits.fetch_add(1, Ordering::SeqCst) + 1 != a.nth {
            return;
        }
        if let Some(path) = &a.mark {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{name}");
            }
        }
        match a.action {
            Action::Stop => {
                // SAFETY: kill(2) and getpid(2) have no memory-safety preconditions.
                unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
            }
            Action::Panic => panic!("failpoint {name}: injected panic (GDS_FAILPOINT)"),
            Action::Kill => {
                // SAFETY: as above.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                // SIGKILL to oneself is delivered before kill() returns; never go on regardless.
                loop {
                    std::thread::park();
                }
            }
        }
    }
}

#[cfg(feature = "failpoints")]
pub use imp::{Pause, hit, injected_errno, panic_at, pause};

/// `failpoint!("name")`: with the `failpoints` feature, the process may be killed or stalled
/// here (see the module comment); without it, nothing.
macro_rules! failpoint {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    }};
}
pub(crate) use failpoint;
