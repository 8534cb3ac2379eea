//! gardenstate: web session state in a lock-free hash table inside a shared-memory segment.
//!
//! Every worker process of a host maps the same segment (`/dev/shm/<name>`) and reads and
//! writes sessions directly: no server, no socket, no syscall on the data path. See the
//! README for the API tour and the segment options; the module comments hold the layout and
//! the invariants:
//!
//! - `layout`: the segment format (regions, word packing, validation on attach);
//! - `segment`: the create-or-attach protocol, permissions, destroy;
//! - `table`: the index and its insert protocol (one MEMBER per key);
//! - `record`: record layout, copy-on-write publishing, optimistic validated reads;
//! - `heap`: the size-class allocator and its crash-safety invariants;
//! - `clients`: client slots held per operation, three-valued liveness, dead-process reclamation;
//! - `lockwait`: lock waits woken by the release (shared futex words in the header);
//! - `feed`: the change feed for the replicator;
//! - `store`: the public operations.
//!
//! Platform: Linux (it relies on `/dev/shm` and `/proc`).

#![deny(missing_debug_implementations)]

mod check;
mod clients;
// Self-verifying values of the two demos (examples/demo.rs, the replicator's `demo`); not part
// of the API.
#[doc(hidden)]
pub mod demo;
mod error;
mod failpoint;
mod feed;
// Fuzz target bodies, shared by `fuzz/` and the replay tests (not part of the API).
#[cfg(not(loom))]
#[doc(hidden)]
pub mod fuzzing;
mod heap;
#[cfg(all(test, not(loom)))]
mod inprocess_tests;
mod layout;
mod lockwait;
#[cfg(all(test, loom))]
mod loom_tests;
mod mem;
mod os;
mod record;
mod replica;
mod segment;
mod stats;
mod store;
mod sync;
mod table;

pub use check::CheckReport;
pub use error::{Error, FullKind, Result};
/// The calls `GDS_FAULT_ERRNO=site:errno` makes fail (tests; feature `failpoints`).
pub use failpoint::ERRNO_SITES as FAULT_ERRNO_SITES;
pub use failpoint::NAMES as FAILPOINTS;
/// In-process thread stalls and panics at named failpoints (tests; feature `failpoints`).
#[cfg(feature = "failpoints")]
pub use failpoint::{Pause as FailpointPause, panic_at as panic_at_failpoint, pause as pause_at_failpoint};
pub use feed::{Change, ChangeKind, FeedRead};
pub use layout::{HeapDemand, Options};
pub use os::Holders;
/// Tests only: moves the calling thread's engine clock forward (TTLs, sliding windows, lock
/// ages), instead of sleeping. Hidden from the documented API; never call it in production.
#[doc(hidden)]
pub use os::advance_clock as advance_clock_for_tests;
pub use replica::{ReplicationState, Role};
pub use stats::Stats;
pub use store::{
    Digest, Entry, Expiry, Info, LockInfo, Locked, Meta, ScanEntry, Store, SweepReport, WriteMode,
};

/// Where segment files are created (`/dev/shm`, or `$GARDENSTATE_SHM_DIR`).
pub fn shm_dir() -> std::path::PathBuf {
    os::shm_dir()
}
