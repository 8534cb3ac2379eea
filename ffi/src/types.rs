//! The fixed-layout types of the data path: entry metadata, lock results, expiry kinds.
//!
//! These structs are frozen for an ABI version (a change means a new `GDS_ABI_VERSION`):
//! they are on the request path, where a `struct_size` handshake would cost every call.
//! Every field has a fixed width and there is no implicit padding, so bindings can declare
//! them field by field.

use crate::status::Fail;
use engine::{Expiry, Meta};
use std::time::Duration;

/// How an entry expires: one of the `GDS_EXPIRY_*` values, with a TTL in milliseconds.
pub type gds_expiry_kind = u32;
/// The entry never expires (until deleted); the TTL argument is ignored.
pub const GDS_EXPIRY_NEVER: gds_expiry_kind = 0;
/// The entry expires `ttl_ms` after this write.
pub const GDS_EXPIRY_AFTER: gds_expiry_kind = 1;
/// The entry expires `ttl_ms` after its last access: reads, `gds_lock` and `gds_unlock` push
/// the deadline out again (ASP.NET session timeout semantics).
pub const GDS_EXPIRY_SLIDING: gds_expiry_kind = 2;

/// `gds_meta.ttl_left_ms` of an entry that never expires.
pub const GDS_TTL_NEVER: u64 = u64::MAX;

/// Metadata of an entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct gds_meta {
    /// The entry's version: changes on every write; pass it to `gds_compare_and_set`.
    pub version: u64,
    /// Length of the value in bytes.
    pub value_len: u64,
    /// Milliseconds left before the entry expires, or `GDS_TTL_NEVER`.
    pub ttl_left_ms: u64,
    /// The id of the session lock holding the entry, or 0 if it is not locked.
    pub lock_id: u64,
    /// How long the lock has been held, in milliseconds (0 if not locked).
    pub lock_age_ms: u64,
}

impl From<Meta> for gds_meta {
    fn from(m: Meta) -> gds_meta {
        gds_meta {
            version: m.version,
            value_len: m.len as u64,
            ttl_left_ms: m.ttl_left.map_or(GDS_TTL_NEVER, millis),
            lock_id: m.lock.map_or(0, |l| l.lock_id),
            lock_age_ms: m.lock.map_or(0, |l| millis(l.age)),
        }
    }
}

/// The session lock reported by `gds_lock`: the lock taken (on `GDS_OK`) or the lock that
/// holds the entry (on `GDS_ERR_LOCKED`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct gds_lock_info {
    /// `GDS_OK`: the id that unlocks the entry. `GDS_ERR_LOCKED`: the holder's lock id.
    pub lock_id: u64,
    /// `GDS_OK`: 0. `GDS_ERR_LOCKED`: how long the holder has held it, in milliseconds.
    pub age_ms: u64,
    /// `GDS_OK`: 1 if the lock was taken over from a holder that timed out or whose process
    /// died, else 0. `GDS_ERR_LOCKED`: 0.
    pub took_over: u32,
    /// Always 0.
    pub reserved: u32,
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The engine's expiry from the C pair (kind, ttl_ms).
pub(crate) fn expiry(kind: gds_expiry_kind, ttl_ms: u64) -> Result<Expiry, Fail> {
    let ttl = || {
        if ttl_ms == 0 {
            return Err(Fail::invalid(
                "ttl_ms is 0: a TTL is at least 1 ms (use GDS_EXPIRY_NEVER for no expiry)",
            ));
        }
        Ok(Duration::from_millis(ttl_ms))
    };
    match kind {
        GDS_EXPIRY_NEVER => Ok(Expiry::Never),
        GDS_EXPIRY_AFTER => Ok(Expiry::After(ttl()?)),
        GDS_EXPIRY_SLIDING => Ok(Expiry::Sliding(ttl()?)),
        other => Err(Fail::invalid(format!(
            "expiry kind {other}: use GDS_EXPIRY_NEVER (0), GDS_EXPIRY_AFTER (1) or GDS_EXPIRY_SLIDING (2)"
        ))),
    }
}
