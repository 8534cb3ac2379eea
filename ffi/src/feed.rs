//! The change feed, for followers such as the replicator: every mutation takes a position in
//! a ring in the segment; a follower keeps its own cursor and re-reads the slot it names.

use crate::args;
use crate::panic::boundary;
use crate::status::{Fail, gds_status, gds_status::*};
use crate::store::gds_store;
use engine::{ChangeKind, FeedRead};

/// What a change records: one of the `GDS_CHANGE_*` values.
pub type gds_change_kind = u32;
/// A reserved position whose operation changed nothing (it lost a race after reserving it).
pub const GDS_CHANGE_NOP: gds_change_kind = 0;
/// A value was written (set, add, compare-and-set, set-and-unlock).
pub const GDS_CHANGE_SET: gds_change_kind = 1;
/// The entry was deleted.
pub const GDS_CHANGE_DELETE: gds_change_kind = 2;
/// The entry's deadline changed (touch, sliding read).
pub const GDS_CHANGE_TOUCH: gds_change_kind = 3;
/// The entry was locked.
pub const GDS_CHANGE_LOCK: gds_change_kind = 4;
/// The entry was unlocked.
pub const GDS_CHANGE_UNLOCK: gds_change_kind = 5;
/// The entry expired and was removed.
pub const GDS_CHANGE_EXPIRE: gds_change_kind = 6;
/// The entry was evicted.
pub const GDS_CHANGE_EVICT: gds_change_kind = 7;

/// One recorded mutation. It names an index slot, not a value: read the slot's current
/// entry with `gds_entry_at`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gds_change {
    /// Feed position (0-based); the cursor after this change is `seq + 1`.
    pub seq: u64,
    /// Version of the record the change produced (0 for removals).
    pub version: u64,
    /// The key's hash (seeded per segment).
    pub key_hash: u64,
    /// Index slot of the key (stable while the key exists).
    pub slot: u32,
    /// A `GDS_CHANGE_*` value.
    pub kind: gds_change_kind,
}

/// Writes to `*head_out` the feed position the next mutation will take. A follower starts
/// from here, then copies the current state with `gds_scan`.
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle; `head_out` is NULL or valid for a `uint64_t` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_feed_head(store: *const gds_store, head_out: *mut u64) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out) = unsafe { (args::store(store)?, args::out(head_out, "head_out")?) };
        out.write(store.feed_head());
        Ok(GDS_OK)
    })
}

/// Reads the change feed at `cursor`.
///
/// Returns `GDS_OK` (`*change_out` is the change; continue at `change_out->seq + 1`);
/// `GDS_FEED_EMPTY` (caught up); `GDS_FEED_PENDING` (its writer is mid-operation, or died:
/// wait, then decide); `GDS_ERR_FEED_OVERFLOW` (lapped by the writers: resync with a scan);
/// `GDS_ERR_NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle; `change_out` is NULL or valid for a `gds_change` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_feed_read(
    store: *const gds_store,
    cursor: u64,
    change_out: *mut gds_change,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out) = unsafe { (args::store(store)?, args::out(change_out, "change_out")?) };
        match store.feed_read(cursor) {
            FeedRead::Change(c) => {
                out.write(gds_change {
                    seq: c.seq,
                    version: c.version,
                    key_hash: c.key_hash,
                    slot: c.slot,
                    kind: kind(c.kind),
                });
                Ok(GDS_OK)
            }
            FeedRead::Empty => Ok(GDS_FEED_EMPTY),
            FeedRead::Pending => Ok(GDS_FEED_PENDING),
            FeedRead::Overflow => Err(Fail::new(
                GDS_ERR_FEED_OVERFLOW,
                format!("change feed overflow at cursor {cursor}: the ring was lapped; resync with gds_scan"),
            )),
        }
    })
}

fn kind(k: ChangeKind) -> gds_change_kind {
    match k {
        ChangeKind::Nop => GDS_CHANGE_NOP,
        ChangeKind::Set => GDS_CHANGE_SET,
        ChangeKind::Delete => GDS_CHANGE_DELETE,
        ChangeKind::Touch => GDS_CHANGE_TOUCH,
        ChangeKind::Lock => GDS_CHANGE_LOCK,
        ChangeKind::Unlock => GDS_CHANGE_UNLOCK,
        ChangeKind::Expire => GDS_CHANGE_EXPIRE,
        ChangeKind::Evict => GDS_CHANGE_EVICT,
    }
}

/// Waits until the write that returned `version` has been applied by the standby (like Redis
/// `WAIT`), for at most `timeout_ms` milliseconds, and writes 1 to `*replicated_out` if it
/// has, 0 if the time ran out (no standby, or it lags). Use it after a write that must
/// survive the loss of this host. Polls shared memory (a few spins, then sleeps of 20 us
/// doubling to 1 ms): it blocks the calling thread only.
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle; `replicated_out` is NULL or valid for a `uint32_t`
///   write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_wait_replicated(
    store: *const gds_store,
    version: u64,
    timeout_ms: u64,
    replicated_out: *mut u32,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out) = unsafe { (args::store(store)?, args::out(replicated_out, "replicated_out")?) };
        let done = store.wait_replicated(version, std::time::Duration::from_millis(timeout_ms));
        out.write(u32::from(done));
        Ok(GDS_OK)
    })
}
