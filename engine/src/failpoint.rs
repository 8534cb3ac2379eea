//! Named failpoints: places in the engine where a test can have the process killed (SIGKILL)
//! at exactly that instruction, to prove the "killed at any instruction" invariant at the
//! points where it is hardest (a record published but its old block not yet freed, a block
//! owned but not yet journaled as published, a segment created but not yet stamped ready).
//!
//! Compiled only with the cargo feature `failpoints`: without it `failpoint!("name")` expands
//! to nothing (zero cost). With it, `GDS_FAILPOINT=name[:n]` makes the `n`-th hit (default 1)
//! of failpoint `name` in this process send SIGKILL to the process itself. If
//! `GDS_FAILPOINT_MARK=<path>` is set too, the name is appended to that file just before the
//! kill, so a test can tell the failpoint it armed was the one that fired.
//!
//! Every failpoint name is listed in [`NAMES`] (tests iterate over it, so a failpoint removed
//! from the code but left in the list fails its test, never hit).

/// Every failpoint in the engine, with where it is.
pub const NAMES: &[&str] = &[
    // store.rs, insert of an absent key (table.rs T1)
    "insert.after_inserting", // INSERTING word placed, not yet settled
    "insert.before_flip",     // window scanned, other copies collided, not yet MEMBER
    "insert.after_member",    // flipped to MEMBER, journal (C_J_NEW) not yet cleared
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
    // segment.rs, creation
    "create.after_excl", // file created (O_EXCL, mode 0000), header not written / not READY
    "create.after_mode", // header written, final mode set, not yet READY
    "create.after_ready", // READY stamped, create() not yet returned
];

#[cfg(feature = "failpoints")]
mod imp {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Armed {
        name: String,
        nth: u64,
        hits: AtomicU64,
        mark: Option<std::path::PathBuf>,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var("GDS_FAILPOINT").ok()?;
                let (name, nth) = match spec.split_once(':') {
                    Some((n, k)) => (n.to_string(), k.trim().parse().unwrap_or(1)),
                    None => (spec.clone(), 1),
                };
                let mark = std::env::var_os("GDS_FAILPOINT_MARK").map(Into::into);
                Some(Armed { name, nth: nth.max(1), hits: AtomicU64::new(0), mark })
            })
            .as_ref()
    }

    /// Called at failpoint `name`: kills this process if it is the armed one's n-th hit.
    pub fn hit(name: &'static str) {
        debug_assert!(super::NAMES.contains(&name), "failpoint {name} is not in failpoint::NAMES");
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
        // SAFETY: kill(2) and getpid(2) have no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        // SIGKILL to oneself is delivered before kill() returns; never go on regardless.
        loop {
            std::thread::park();
        }
    }
}

#[cfg(feature = "failpoints")]
pub use imp::hit;

/// `failpoint!("name")`: with the `failpoints` feature, the process may be killed here (see
/// the module comment); without it, nothing.
macro_rules! failpoint {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    }};
}
pub(crate) use failpoint;
