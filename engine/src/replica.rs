//! What the replicator needs from a segment: its place in a replication history, the
//! standby's acknowledgements (so a writer can wait until a write is safe on two hosts), and
//! writes that bypass the read-only mode of a standby.
//!
//! Header words (layout.rs, each changed with a single atomic operation):
//! - `H_HISTORY_ID`: the dataset history this segment holds. A fresh segment starts its own;
//!   a standby adopts its primary's when it syncs. With `H_EPOCH` it tells two segments'
//!   histories apart (Redis's replication id + offset).
//! - `H_EPOCH`: bumped by every promotion; never decreases (`fetch_max`).
//! - `H_REPL_ACKED`: on a primary, the change-feed position up to which the standby has
//!   applied every change; never decreases. A write's version is its feed position + 1, so
//!   the write is on the standby once `H_REPL_ACKED >= version`.
//! - `H_WRITE_LEASE`: when non-zero, worker writes are refused (`ReadOnly`) once the
//!   monotonic clock passes it. The replication daemon renews it while its primary may take
//!   writes, so a primary whose daemon died stops taking writes that a failover would lose,
//!   as if the daemon had fenced it.
//! - `H_MODE_OWNER` (write-mode ownership): the owner word (pid and start time, clients.rs) of
//!   the replication daemon that owns the write mode, or 0. A daemon stores its own when it
//!   opens the segment (`own_write_mode`), and it is void once that process is gone (a
//!   stopped daemon's word is never cleared: it names a dead process); `request_write_mode`, the
//!   call workers get (and the C ABI's `gds_set_write_mode`), is refused while the process
//!   it names is alive or its liveness cannot be told (only a process proven dead, or a pid
//!   reused by another process, frees it): a worker cannot make a fenced primary or a standby
//!   read writable beside the daemon that decides. The store is one atomic word, so a
//!   daemon killed at any instruction leaves either the old owner or itself. The check and
//!   the store are not one atomic step: a worker that passed the check just before a daemon
//!   started may set the mode once more; the daemon sets the mode itself after owning it.
//!
//! Workers learn about failover from [`Store::replication_state`]: the epoch, the role the
//! segment plays for them now, and a change counter, in a few atomic loads (cheap enough for
//! every request). The counter is the number of write-mode changes (counted in the mode word
//! itself, layout.rs `H_WRITE_MODE`) plus the epoch: both only grow, and each grows with the
//! single atomic operation that makes its change, so the counter moves on every role change
//! (promote, fence, unfence, demote) and every epoch raise, even when the process making
//! it is killed right after. It does not move when a write lease lapses (nothing is written
//! then): the role shows that, computed from the clock at the call.

use crate::error::Error;
use crate::error::Result;
use crate::layout::{
    H_EPOCH, H_HISTORY_ID, H_MODE_OWNER, H_REPL_ACKED, H_WRITE_LEASE, H_WRITE_MODE, WRITE_MODE_REPLICA,
    WRITE_MODE_WRITABLE, write_mode,
};
use crate::os::Liveness;
use crate::record::LockWords;
use crate::segment::Segment;
use crate::store::WriteMode;
use crate::store::{LockInfo, Op, Store};
use crate::sync::Ordering;
use std::time::{Duration, Instant};

/// What the segment is for its workers now (see [`Store::replication_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Writable: workers' writes are accepted.
    Primary,
    /// A standby replica: reads work, writes fail `ReadOnly` until a promotion.
    Standby,
    /// A primary that lost its quorum (or was demoted): writes fail `ReadOnly`.
    Fenced,
    /// Writable, but its replication daemon stopped renewing the write lease (it died or
    /// stalls): writes fail `ReadOnly` until it renews the lease or a failover ends it.
    LeaseLapsed,
}

/// Where the segment stands in its replication history, as workers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationState {
    /// The replication epoch: raised by every promotion, never lowered.
    pub epoch: u64,
    /// The role the segment plays now.
    pub role: Role,
    /// Moves (grows) on every role change and epoch raise, and never moves back: a worker
    /// that cached a value from an older state sees it differ.
    pub changes: u64,
}

impl Store {
    /// The epoch, the role and the change counter, read with three atomic loads (and a clock
    /// read under a write lease): cheap enough to call on every request. The role and the
    /// counter come from the same loads, so a counter always goes with the role and epoch
    /// returned beside it.
    pub fn replication_state(&self) -> ReplicationState {
        let w = self.header_word(H_WRITE_MODE).load(Ordering::Acquire);
        let epoch = self.epoch();
        let role = match write_mode::mode(w) {
            WRITE_MODE_WRITABLE => match self.header_word(H_WRITE_LEASE).load(Ordering::Acquire) {
                lease if lease != 0 && crate::os::now_ms() >= lease => Role::LeaseLapsed,
                _ => Role::Primary,
            },
            WRITE_MODE_REPLICA => Role::Standby,
            _ => Role::Fenced,
        };
        ReplicationState { epoch, role, changes: write_mode::changes(w).wrapping_add(epoch) }
    }

    fn header_word(&self, i: usize) -> &crate::sync::AtomicU64 {
        self.seg.mem.w(i)
    }

    /// The replication epoch (0 for a segment never promoted).
    pub fn epoch(&self) -> u64 {
        self.header_word(H_EPOCH).load(Ordering::Acquire)
    }

    /// Raises the epoch to `epoch` (never lowers it). Returns the epoch now in force.
    pub fn raise_epoch(&self, epoch: u64) -> u64 {
        self.header_word(H_EPOCH).fetch_max(epoch, Ordering::AcqRel).max(epoch)
    }

    /// Sets the write lease to `ttl` from now, or clears it (`None`: no lease, the default).
    pub fn set_write_lease(&self, ttl: Option<Duration>) {
        // Saturating, like TTLs (store.rs `millis_saturating`): `as u64` kept the low bits of
        // the milliseconds, and `Duration::MAX` wrapped to a lease already run out.
        let ms = |d: Duration| crate::store::millis_saturating(d).max(1);
        let v = ttl.map_or(0, |d| crate::os::now_ms().saturating_add(ms(d)));
        self.header_word(H_WRITE_LEASE).store(v, Ordering::Release);
    }

    /// Makes this process the owner of the write mode (a replication daemon's call, before it
    /// sets the mode): from now on other processes' `request_write_mode` is refused while
    /// this one lives.
    pub fn own_write_mode(&self) -> Result<()> {
        let me = self.seg.client_identity()?;
        self.header_word(H_MODE_OWNER).store(me, Ordering::Release);
        Ok(())
    }

    /// The pid of the live process that owns the write mode, if another one does (`None`:
    /// nobody, this process, or an owner proven dead).
    pub fn write_mode_owner(&self) -> Result<Option<u32>> {
        let w = self.header_word(H_MODE_OWNER).load(Ordering::Acquire);
        if w == 0 || w == self.seg.client_identity()? {
            return Ok(None);
        }
        // Unknown liveness counts as alive: "could not tell" is never "dead".
        Ok((Segment::holder_liveness(w) != Liveness::Dead).then(|| Segment::holder_pid(w)))
    }

    /// A worker's change of the write mode: refused (`Error::Refused`) while a live
    /// replication daemon owns it (`own_write_mode`), since the mode then follows that
    /// daemon's decisions (fencing, promotion); otherwise `set_write_mode`.
    pub fn request_write_mode(&self, mode: WriteMode) -> Result<()> {
        if let Some(pid) = self.write_mode_owner()? {
            return Err(Error::Refused {
                path: self.seg.path.display().to_string(),
                reason: format!(
                    "its write mode belongs to the replication daemon (pid {pid}): workers read it and \
                     cannot set it; use `gardenstate switchover` or stop the daemon and `gardenstate promote`"
                ),
            });
        }
        self.set_write_mode(mode);
        Ok(())
    }

    /// How long the write lease has left: `None` without a lease, zero once it expired.
    pub fn write_lease_left(&self) -> Option<Duration> {
        match self.header_word(H_WRITE_LEASE).load(Ordering::Acquire) {
            0 => None,
            d => Some(Duration::from_millis(d.saturating_sub(crate::os::now_ms()))),
        }
    }

    /// The id of the dataset history this segment holds.
    pub fn history_id(&self) -> u64 {
        self.header_word(H_HISTORY_ID).load(Ordering::Acquire)
    }

    /// Adopts another segment's history (a standby syncing from its primary).
    pub fn set_history_id(&self, id: u64) {
        self.header_word(H_HISTORY_ID).store(id, Ordering::Release);
    }

    /// The feed position up to which the standby has applied every change.
    pub fn replicated_upto(&self) -> u64 {
        self.header_word(H_REPL_ACKED).load(Ordering::Acquire)
    }

    /// Records the standby's acknowledgement of every change before feed position `pos`
    /// (the replicator's call; never moves backwards).
    pub fn acknowledge_replicated(&self, pos: u64) {
        self.header_word(H_REPL_ACKED).fetch_max(pos, Ordering::AcqRel);
    }

    /// Waits until the write that returned `version` is on the standby (like Redis `WAIT`),
    /// for at most `timeout`. Returns whether it is. Polls a header word: a few spins, then
    /// sleeps doubling from 20 us to 1 ms, so a waiting writer costs the host nearly nothing.
    pub fn wait_replicated(&self, version: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_micros(20);
        for spin in 0.. {
            if self.replicated_upto() >= version {
                return true;
            }
            if spin < 64 {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(1));
        }
        unreachable!("the loop returns")
    }

    /// The replicator's write of an entry shipped by the primary, accepted in any write mode.
    /// `ttl_left` and `sliding` recreate its expiry; a `lock` is recreated with its id and
    /// age, owned by no local process (so only its age can free it here). Returns the
    /// entry's version in this segment.
    pub fn apply_replicated(
        &self,
        key: &[u8],
        value: &[u8],
        ttl_left: Option<Duration>,
        sliding: Option<Duration>,
        lock: Option<LockInfo>,
    ) -> Result<u64> {
        let now = crate::os::now_ms();
        // The durations come from the network (a primary's frame): saturate, never overflow.
        let ms = |d: Duration| crate::store::millis_saturating(d).max(1);
        let expires = ttl_left.map_or(0, |d| now.saturating_add(ms(d)).min(crate::layout::DEADLINE_MASK));
        let sliding = sliding.map_or(0, |d| ms(d).min(u32::MAX as u64) as u32);
        let lock = lock.map_or(LockWords::default(), |l| LockWords {
            id: l.lock_id,
            time: now.saturating_sub(crate::store::millis_saturating(l.age)),
            pid: 0,
            start: 0,
        });
        self.mutate_as_replicator(key, Op::Apply { value, expires, sliding, lock }).map(|o| o.version)
    }

    /// The replicator's removal of an entry the primary deleted, accepted in any write mode.
    /// Returns whether an entry was there.
    pub fn apply_replicated_delete(&self, key: &[u8]) -> Result<bool> {
        match self.mutate_as_replicator(key, Op::Delete) {
            Ok(_) => Ok(true),
            Err(crate::Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
