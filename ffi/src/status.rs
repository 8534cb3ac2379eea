//! Status codes, `gds_strerror`, and the thread-local detailed message.
//!
//! Codes are grouped by tens so a later code joins its group; a code is never renumbered or
//! reused. Codes below 10 are outcomes a correct program meets in normal operation (the key is
//! absent, the feed is caught up); codes from 10 are errors. Only errors set the thread-local
//! message.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};

/// The result of every call that can fail. Values are stable: never renumbered, never
/// reused. Codes below 10 are outcomes, not errors; codes from 10 up are errors.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum gds_status {
    /// Success.
    GDS_OK = 0,
    /// Outcome: the key is absent or expired (`gds_get`, `gds_delete`, `gds_lock`,
    /// `gds_unlock`, ...), or the segment does not exist (`gds_destroy`).
    GDS_NOT_FOUND = 1,
    /// Outcome of `gds_feed_read`: no new change; the cursor is at the head.
    GDS_FEED_EMPTY = 2,
    /// Outcome of `gds_feed_read`: the change at the cursor is reserved but not yet written
    /// (its writer is mid-operation, paused, or died). Retry later.
    GDS_FEED_PENDING = 3,

    /// `gds_add`: the key is already present.
    GDS_ERR_EXISTS = 10,
    /// `gds_compare_and_set`: the entry is at another version. Re-read and retry.
    GDS_ERR_VERSION_MISMATCH = 11,
    /// `gds_lock`: another lock id holds the entry (its id and age are in `*lock_out`).
    GDS_ERR_LOCKED = 12,
    /// `gds_unlock`, `gds_set_and_unlock`: the lock id no longer holds the entry (it was taken
    /// over, or the entry is not locked). The write did not happen.
    GDS_ERR_LOCK_MISMATCH = 13,
    /// A write on a segment in replica or fenced mode. Write on the primary.
    GDS_ERR_READ_ONLY = 14,

    /// No free index slot near the key: more live entries than `max_entries`.
    GDS_ERR_FULL_INDEX = 20,
    /// No free heap block of the record's size class (`capacity_bytes` exhausted).
    GDS_ERR_FULL_HEAP = 21,
    /// Every client slot is taken by a live thread (`max_clients`).
    GDS_ERR_FULL_CLIENTS = 22,
    /// The key is empty or longer than the segment's `max_key`.
    GDS_ERR_KEY_LENGTH = 23,
    /// The value is longer than the segment's `max_value`.
    GDS_ERR_VALUE_LENGTH = 24,
    /// `gds_get`: the buffer is shorter than the value; `*value_len` holds the size needed.
    GDS_ERR_BUFFER_TOO_SMALL = 25,
    /// `gds_feed_read`: the change feed overwrote entries past the cursor; resync with a scan.
    GDS_ERR_FEED_OVERFLOW = 26,

    /// An operating-system call failed (mmap, open, ...), or `gds_create` found no room in the
    /// segment directory to reserve the segment's memory; the message names it (and the fixes).
    GDS_ERR_IO = 30,
    /// `gds_create`: a segment of that name exists already.
    GDS_ERR_SEGMENT_EXISTS = 31,
    /// `gds_attach`: no segment of that name exists.
    GDS_ERR_NO_SEGMENT = 32,
    /// The operating system denied access to the segment file.
    GDS_ERR_PERMISSION = 33,
    /// The segment was made by an incompatible build (byte order, layout version), or
    /// `gds_open` was given other options than it was created with, or it was created before
    /// the host's last reboot or in a time namespace with another monotonic clock.
    GDS_ERR_INCOMPATIBLE = 34,
    /// The segment is damaged. Destroy and recreate it.
    GDS_ERR_CORRUPT = 35,
    /// The segment was still being initialized after 5 s: its creator probably died.
    GDS_ERR_NOT_READY = 36,
    /// Options out of range, or a segment name not of 1-200 characters from `[A-Za-z0-9._-]`.
    GDS_ERR_INVALID_OPTIONS = 37,
    /// The segment file is a symlink, not a regular file, owned by another user, or a sparse
    /// file whose memory is not all reserved.
    GDS_ERR_REFUSED = 38,
    /// The segment was destroyed (`gds_destroy`, `gardenstate destroy --force`) while this
    /// handle was attached: every call on the handle fails so, as nothing written to it would
    /// be read again. Close it and open the store again (`gds_open` creates or attaches the
    /// segment now under the name).
    GDS_ERR_DESTROYED = 39,

    /// A required pointer argument was NULL. Nothing was done.
    GDS_ERR_NULL_ARGUMENT = 40,
    /// An argument is out of its domain: an unknown expiry kind or write mode, a zero TTL, a
    /// name that is not UTF-8, a `struct_size` too small, a length over `PTRDIFF_MAX`.
    GDS_ERR_INVALID_ARGUMENT = 41,
    /// The library panicked (a bug: please report it with the message). The call did not
    /// complete; the handle stays usable, the segment stays consistent.
    GDS_ERR_PANIC = 42,
    /// A buffer for the caller could not be allocated.
    GDS_ERR_OUT_OF_MEMORY = 43,
    /// An engine error this version of the library has no code for (see the message).
    GDS_ERR_UNKNOWN = 49,
}

use gds_status::*;

impl gds_status {
    /// Every code, for `from_code` and the tests.
    pub(crate) const ALL: &[gds_status] = &[
        GDS_OK,
        GDS_NOT_FOUND,
        GDS_FEED_EMPTY,
        GDS_FEED_PENDING,
        GDS_ERR_EXISTS,
        GDS_ERR_VERSION_MISMATCH,
        GDS_ERR_LOCKED,
        GDS_ERR_LOCK_MISMATCH,
        GDS_ERR_READ_ONLY,
        GDS_ERR_FULL_INDEX,
        GDS_ERR_FULL_HEAP,
        GDS_ERR_FULL_CLIENTS,
        GDS_ERR_KEY_LENGTH,
        GDS_ERR_VALUE_LENGTH,
        GDS_ERR_BUFFER_TOO_SMALL,
        GDS_ERR_FEED_OVERFLOW,
        GDS_ERR_IO,
        GDS_ERR_SEGMENT_EXISTS,
        GDS_ERR_NO_SEGMENT,
        GDS_ERR_PERMISSION,
        GDS_ERR_INCOMPATIBLE,
        GDS_ERR_CORRUPT,
        GDS_ERR_NOT_READY,
        GDS_ERR_INVALID_OPTIONS,
        GDS_ERR_REFUSED,
        GDS_ERR_DESTROYED,
        GDS_ERR_NULL_ARGUMENT,
        GDS_ERR_INVALID_ARGUMENT,
        GDS_ERR_PANIC,
        GDS_ERR_OUT_OF_MEMORY,
        GDS_ERR_UNKNOWN,
    ];

    fn from_code(code: i32) -> Option<gds_status> {
        gds_status::ALL.iter().copied().find(|s| *s as i32 == code)
    }

    /// Errors set the thread-local message; outcomes (codes below 10) do not.
    pub(crate) fn is_error(self) -> bool {
        self as i32 >= 10
    }

    fn describe(self) -> &'static CStr {
        match self {
            GDS_OK => c"success",
            GDS_NOT_FOUND => c"not found: the key is absent or expired",
            GDS_FEED_EMPTY => c"feed empty: the cursor is at the head",
            GDS_FEED_PENDING => c"feed pending: the change at the cursor is not yet written",
            GDS_ERR_EXISTS => c"the key already exists",
            GDS_ERR_VERSION_MISMATCH => c"version mismatch: the entry was changed by another writer",
            GDS_ERR_LOCKED => c"the entry is locked by another lock id",
            GDS_ERR_LOCK_MISMATCH => c"the lock id no longer holds this entry",
            GDS_ERR_READ_ONLY => c"the segment is read-only (replica or fenced)",
            GDS_ERR_FULL_INDEX => c"store full: no free index slot (max_entries)",
            GDS_ERR_FULL_HEAP => c"store full: no free heap block of this size (capacity_bytes)",
            GDS_ERR_FULL_CLIENTS => c"store full: every client slot is taken (max_clients)",
            GDS_ERR_KEY_LENGTH => c"key empty or longer than max_key",
            GDS_ERR_VALUE_LENGTH => c"value longer than max_value",
            GDS_ERR_BUFFER_TOO_SMALL => c"buffer too small for the value",
            GDS_ERR_FEED_OVERFLOW => c"change feed overflow: resync with a scan",
            GDS_ERR_IO => c"operating-system error",
            GDS_ERR_SEGMENT_EXISTS => c"the segment already exists",
            GDS_ERR_NO_SEGMENT => c"no such segment",
            GDS_ERR_PERMISSION => c"permission denied on the segment file",
            GDS_ERR_INCOMPATIBLE => c"incompatible segment (other build or other options)",
            GDS_ERR_CORRUPT => c"damaged segment",
            GDS_ERR_NOT_READY => c"segment still initializing: its creator may have died",
            GDS_ERR_INVALID_OPTIONS => c"invalid options or segment name",
            GDS_ERR_REFUSED => c"refusing the segment file (symlink, not a file, other owner)",
            GDS_ERR_DESTROYED => c"the segment was destroyed: close the handle and open the store again",
            GDS_ERR_NULL_ARGUMENT => c"a required pointer argument is NULL",
            GDS_ERR_INVALID_ARGUMENT => c"invalid argument",
            GDS_ERR_PANIC => c"internal error (panic) in libgardenstate",
            GDS_ERR_OUT_OF_MEMORY => c"out of memory",
            GDS_ERR_UNKNOWN => c"engine error without a status code in this library version",
        }
    }
}

/// A failed (or not-OK) call: its status and, for errors, the detailed message.
#[derive(Debug)]
pub(crate) struct Fail {
    pub status: gds_status,
    pub message: String,
}

impl Fail {
    pub fn new(status: gds_status, message: impl Into<String>) -> Fail {
        Fail { status, message: message.into() }
    }

    pub fn null(arg: &str) -> Fail {
        Fail::new(GDS_ERR_NULL_ARGUMENT, format!("argument `{arg}` is NULL"))
    }

    pub fn invalid(message: impl Into<String>) -> Fail {
        Fail::new(GDS_ERR_INVALID_ARGUMENT, message)
    }
}

impl From<engine::Error> for Fail {
    fn from(e: engine::Error) -> Fail {
        use engine::{Error as E, FullKind};
        use std::io::ErrorKind;
        let status = match &e {
            E::NotFound => GDS_NOT_FOUND,
            E::Exists => GDS_ERR_EXISTS,
            E::Full(FullKind::Index) => GDS_ERR_FULL_INDEX,
            E::Full(FullKind::Heap) => GDS_ERR_FULL_HEAP,
            E::Full(FullKind::Clients) => GDS_ERR_FULL_CLIENTS,
            E::KeyTooLarge { .. } => GDS_ERR_KEY_LENGTH,
            E::ValueTooLarge { .. } => GDS_ERR_VALUE_LENGTH,
            E::VersionMismatch { .. } => GDS_ERR_VERSION_MISMATCH,
            E::Locked { .. } => GDS_ERR_LOCKED,
            E::LockMismatch { .. } => GDS_ERR_LOCK_MISMATCH,
            E::ReadOnly => GDS_ERR_READ_ONLY,
            E::BufferTooSmall { .. } => GDS_ERR_BUFFER_TOO_SMALL,
            E::Io { source, .. } => match source.kind() {
                ErrorKind::AlreadyExists => GDS_ERR_SEGMENT_EXISTS,
                ErrorKind::NotFound => GDS_ERR_NO_SEGMENT,
                ErrorKind::PermissionDenied => GDS_ERR_PERMISSION,
                _ => GDS_ERR_IO,
            },
            E::Incompatible { .. } => GDS_ERR_INCOMPATIBLE,
            E::Corrupt { .. } => GDS_ERR_CORRUPT,
            E::NotReady { .. } => GDS_ERR_NOT_READY,
            E::InvalidOptions(_) => GDS_ERR_INVALID_OPTIONS,
            E::Refused { .. } | E::Unreserved { .. } => GDS_ERR_REFUSED,
            E::NoSpace { .. } => GDS_ERR_IO,
            E::OtherBoot { .. } | E::OtherTimeNamespace { .. } => GDS_ERR_INCOMPATIBLE,
            E::Destroyed { .. } => GDS_ERR_DESTROYED,
            _ => GDS_ERR_UNKNOWN,
        };
        Fail::new(status, e.to_string())
    }
}

thread_local! {
    /// The message of the last error on this thread (empty until one happens).
    static MESSAGE: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error message.
pub(crate) fn set_message(message: &str) {
    // A message never contains NUL in practice; if one did, it must not cut the C string.
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // try_with: during thread teardown the slot may already be gone; then there is no one
    // left to read the message.
    let _ = MESSAGE.try_with(|m| *m.borrow_mut() = text);
}

/// A static, human-readable description of a status code: never NULL, never freed. Unknown
/// codes give `"unknown status code"`.
///
/// Thread safety: any thread, any time.
#[unsafe(no_mangle)]
pub extern "C" fn gds_strerror(status: i32) -> *const c_char {
    gds_status::from_code(status).map_or(c"unknown status code", gds_status::describe).as_ptr()
}

/// The detailed message of the most recent call on this thread that returned an error (a
/// status of 10 or more): what was expected, what was found, what to do. Outcomes (codes
/// below 10) and successes leave it unchanged, as errno. Empty (`""`) if no call on this
/// thread has failed.
///
/// The string belongs to the library and stays valid until the next `gds_*` call on the same
/// thread (or the thread's exit): copy it to keep it. Never NULL.
///
/// Thread safety: any thread; each thread has its own message.
#[unsafe(no_mangle)]
pub extern "C" fn gds_last_error_message() -> *const c_char {
    MESSAGE.try_with(|m| m.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_complete() {
        // Every variant declared in this file is in ALL, once, and round-trips.
        let declared: Vec<(String, i32)> = include_str!("status.rs")
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.trim().split_once(" = ")?;
                let value = rest.strip_suffix(',')?.parse().ok()?;
                name.starts_with("GDS_").then(|| (name.to_string(), value))
            })
            .collect();
        assert_eq!(declared.len(), gds_status::ALL.len(), "ALL must list every variant");
        for (name, value) in declared {
            let s = gds_status::from_code(value).unwrap_or_else(|| panic!("{name} is not in ALL"));
            assert_eq!(format!("{s:?}"), name);
            assert!(!s.describe().is_empty());
        }
        assert_eq!(gds_status::from_code(-1), None);
        assert_eq!(gds_status::from_code(4), None);
    }
}
