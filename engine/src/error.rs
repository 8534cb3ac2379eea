//! Errors: every variant says what was expected, what was found, and what to do about it.

use std::fmt;
use std::time::Duration;

/// The result type of every engine operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Which resource ran out when the store reports [`Error::Full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullKind {
    /// No free index slot near the key's home bucket (more live entries than `max_entries`).
    Index,
    /// No free block of the record's size class in the heap.
    Heap,
    /// Every client slot held an operation in flight (or a holder whose liveness cannot be
    /// told) for as long as a claim waits (2 s).
    Clients,
}

/// Every way an engine call can fail.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The key is not present (or has expired).
    NotFound,
    /// `add` found the key already present.
    Exists,
    /// The store is full; see [`FullKind`]. Nothing was changed.
    Full(FullKind),
    /// The key is empty or longer than the segment's `max_key`.
    KeyTooLarge { len: usize, max: usize },
    /// The value is longer than the segment's `max_value`.
    ValueTooLarge { len: usize, max: usize },
    /// `compare_and_set` expected another version.
    VersionMismatch { expected: u64, found: u64 },
    /// The entry is locked by another lock id; `age` is how long it has been held.
    Locked { lock_id: u64, age: Duration },
    /// A lock id was presented for an entry that is not locked with it.
    LockMismatch { presented: u64, held: u64 },
    /// The segment refuses writes (a standby replica, or fenced); reads still work.
    ReadOnly,
    /// The caller's buffer is too small; `needed` bytes are required. Nothing was consumed.
    BufferTooSmall { needed: usize },
    /// An operating-system call failed.
    Io { op: &'static str, path: String, source: std::io::Error },
    /// The segment exists but was made by an incompatible build or with other options.
    Incompatible { what: &'static str, expected: String, found: String },
    /// The segment is damaged: a header checksum, an offset or a length is out of bounds.
    Corrupt { what: &'static str, detail: String },
    /// Attaching found a segment that is still being initialized after the wait limit.
    NotReady { waited: Duration },
    /// The options passed to `create` are inconsistent.
    InvalidOptions(String),
    /// The segment file is not ours to open: a symlink, another owner, not a regular file.
    Refused { path: String, reason: String },
    /// `create`: the filesystem of `dir` has no room to reserve the segment's `needed` bytes
    /// (`free` is what it had, if it could tell). Nothing was created.
    NoSpace { dir: String, needed: u64, free: Option<u64> },
    /// The segment file's memory is not all reserved (a sparse file: only `reserved` of its
    /// `size` bytes are allocated): touching a hole could raise SIGBUS once its filesystem
    /// is full, so it is refused.
    Unreserved { path: String, size: u64, reserved: u64 },
    /// The segment was created before this host's last reboot: the CLOCK_MONOTONIC deadlines
    /// in it (expiries, lock times, leases) belong to a clock that restarted.
    OtherBoot { path: String, segment_boot: u64, this_boot: u64 },
    /// The segment was created in a time namespace whose CLOCK_MONOTONIC differs from this
    /// process's (offsets in nanoseconds): every deadline in it would be misread by the
    /// difference.
    OtherTimeNamespace { path: String, segment_offset_ns: i64, this_offset_ns: i64 },
    /// The segment was destroyed (`gardenstate destroy`, `Store::destroy`) while this store was
    /// attached to it: nothing written to it now would ever be read again. Open the store again
    /// (`Store::open` creates or attaches the segment now under that name).
    Destroyed { path: String },
}

/// `bytes` with a readable unit: "73924608 bytes (70.5 MiB)".
fn bytes_text(bytes: u64) -> String {
    format!("{bytes} bytes ({:.1} MiB)", bytes as f64 / (1u64 << 20) as f64)
}

/// Nanoseconds as seconds, with a sign: "+2592000.000 s".
fn offset_text(ns: i64) -> String {
    format!("{:+.3} s", ns as f64 / 1e9)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => write!(f, "key not found"),
            Error::Exists => write!(f, "key already exists"),
            Error::Full(FullKind::Index) => {
                write!(f, "store full: no free index slot near this key; raise max_entries or delete entries")
            }
            Error::Full(FullKind::Heap) => write!(
                f,
                "store full: no free heap block of this record's size; raise the byte capacity, \
                 delete entries, or create the segment with eviction"
            ),
            Error::Full(FullKind::Clients) => {
                write!(
                    f,
                    "store full: every client slot held an operation in flight for 2 s (stopped processes?); raise max_clients"
                )
            }
            Error::KeyTooLarge { len, max } => {
                write!(f, "key of {len} bytes: keys must be 1..={max} bytes")
            }
            Error::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes exceeds the segment's max_value of {max} bytes")
            }
            Error::VersionMismatch { expected, found } => {
                write!(f, "version mismatch: expected {expected}, entry is at {found}")
            }
            Error::Locked { lock_id, age } => {
                write!(f, "entry is locked (lock id {lock_id}, held for {age:?})")
            }
            Error::LockMismatch { presented, held } => {
                write!(f, "lock id {presented} does not hold this entry (held by {held}; 0 = unlocked)")
            }
            Error::ReadOnly => {
                write!(
                    f,
                    "segment is read-only (a standby replica, or a primary that is fenced or whose replication \
                     lease ran out): write on the primary"
                )
            }
            Error::BufferTooSmall { needed } => write!(f, "buffer too small: {needed} bytes needed"),
            Error::Io { op, path, source } => write!(f, "{op} {path}: {source}"),
            Error::Incompatible { what, expected, found } => write!(
                f,
                "incompatible segment: {what}: expected {expected}, found {found}; \
                 destroy it or attach with a matching build"
            ),
            Error::Corrupt { what, detail } => write!(
                f,
                "damaged segment: {what}: {detail}; destroy and recreate it (or resync from the standby)"
            ),
            Error::NotReady { waited } => write!(
                f,
                "segment still initializing after {waited:?}: its creator may have died; destroy it"
            ),
            Error::InvalidOptions(s) => write!(f, "invalid options: {s}"),
            Error::Refused { path, reason } => write!(f, "refusing {path}: {reason}"),
            Error::NoSpace { dir, needed, free } => write!(
                f,
                "no room in {dir} for the segment: it needs {}, {} free (its memory is reserved \
                 when it is created, so that no write can later die of SIGBUS on a full \
                 filesystem). Give {dir} more room (a container's /dev/shm: `docker run \
                 --shm-size=<size>`, or in Kubernetes an emptyDir volume with medium Memory and \
                 a sizeLimit), create a smaller segment (a smaller capacity, max_entries or \
                 feed_len), or create it in a larger tmpfs named by GARDENSTATE_SHM_DIR",
                bytes_text(*needed),
                free.map_or_else(|| "an unknown amount".to_string(), bytes_text)
            ),
            Error::Unreserved { path, size, reserved } => write!(
                f,
                "refusing {path}: only {} of its {} have memory reserved (a sparse file: made \
                 by a build older than layout 2, which did not reserve it, or not by create, or \
                 grown since); using it could kill this \
                 process with SIGBUS once its filesystem fills. Destroy it and create it again: \
                 creation reserves the memory, or says how much room is missing",
                bytes_text(*reserved),
                bytes_text(*size)
            ),
            Error::OtherBoot { path, segment_boot, this_boot } => write!(
                f,
                "refusing {path}: it was created before this host's last reboot (boot id hash \
                 {segment_boot:#018x}, this boot {this_boot:#018x}); the CLOCK_MONOTONIC \
                 deadlines in it (expiries, locks, leases) belong to a clock that restarted. \
                 Destroy it (`gardenstate destroy`) and create it again; a standby's resync \
                 brings its sessions back"
            ),
            Error::OtherTimeNamespace { path, segment_offset_ns, this_offset_ns } => write!(
                f,
                "refusing {path}: it was created in a time namespace whose CLOCK_MONOTONIC is \
                 offset by {} from the host's, and this process's is offset by {}: every \
                 deadline in it (expiries, locks, leases) would be misread by the difference. \
                 Use it from processes of the creator's time namespace (or one with the same \
                 monotonic offset), or give each time namespace its own segment",
                offset_text(*segment_offset_ns),
                offset_text(*this_offset_ns)
            ),
            Error::Destroyed { path } => write!(
                f,
                "segment {path} was destroyed while this process was attached to it: nothing \
                 written to it would be read again, so it is refused. Open the store again (open \
                 creates or attaches the segment now under that name)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Error {
    Error::Corrupt { what, detail: detail.into() }
}
