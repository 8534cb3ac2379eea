//! Handles: options, create/open/attach, close, destroy, the segment's shape and write mode.

use crate::args;
use crate::buffer::CBuf;
use crate::extensible::{self, extensible};
use crate::panic::{boundary, guard};
use crate::status::{Fail, gds_status, gds_status::*};
use engine::{Options, Role, Store, WriteMode};
use std::ffi::c_char;
use std::os::unix::ffi::OsStrExt;

/// An open segment. Opaque: created by `gds_create`, `gds_open`, `gds_attach` or
/// `gds_attach_group`, released by `gds_close`.
///
/// One handle serves every thread of the process, concurrently: open it once per process
/// (before forking, in a prefork server) and share it. A thread holds a client slot of the
/// segment only while it is inside a call, so any number of threads may use it;
/// `max_clients` bounds the calls in flight at once across all processes.
pub struct gds_store {
    pub(crate) store: Store,
    /// Kept by `gds_open_process` for the process: `gds_close` leaves it open.
    kept: bool,
}

/// `gds_options.flags`: when full, evict the entry closest to expiry instead of failing
/// with `GDS_ERR_FULL_*`. Off by default: sessions are not a cache.
pub const GDS_OPTION_EVICT: u32 = 1;

/// `gds_options.flags`: eviction is given explicitly, so `gds_open` checks it against an
/// existing segment, also when `GDS_OPTION_EVICT` is clear ("no eviction"). `GDS_OPTION_EVICT`
/// set is given by itself; with neither bit an existing segment's eviction is accepted
/// either way (a clear bit cannot tell "no eviction" from "not given").
pub const GDS_OPTION_EVICT_GIVEN: u32 = 2;

/// Capacity and behaviour of a segment, fixed when it is created.
///
/// Set `struct_size = sizeof(gds_options)`; a field left 0 takes its default when a segment
/// is created (listed with each field, and written by `gds_options_default`), and is "not
/// given" when `gds_open` attaches to an existing one: only the fields set (non-zero, and
/// `GDS_OPTION_EVICT`, or `GDS_OPTION_EVICT_GIVEN` for "no eviction") are checked. Later versions add fields
/// at the end only; their 0 keeps today's behaviour.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct gds_options {
    /// `sizeof(gds_options)`, set by the caller.
    pub struct_size: u64,
    /// Bytes of heap for records; default 64 MiB, at most 32 GiB. A record takes key +
    /// value + 80 bytes, rounded up to its size class.
    pub capacity_bytes: u64,
    /// Live entries the index is sized for; default 65536, at most 2^31.
    pub max_entries: u64,
    /// Longest value in bytes; default 1 MiB, at most 1 GiB.
    pub max_value: u64,
    /// Change-feed entries kept for followers; default 65536, 16 to 2^28.
    pub feed_len: u64,
    /// Longest key in bytes; default 256, at most 65535.
    pub max_key: u32,
    /// Calls in flight at once, across all processes (idle threads hold no slot); default 512,
    /// at most 16383.
    pub max_clients: u32,
    /// File mode: 0600 (default: the creating user only) or 0660 (also the file's group,
    /// who attach with `gds_attach_group`). Nothing else is accepted.
    pub mode: u32,
    /// `GDS_OPTION_*` bits; default 0 (no eviction, and `gds_open` does not check it).
    pub flags: u32,
}
extensible!(gds_options, 56);

fn or_default<T: PartialEq + Default>(v: T, default: T) -> T {
    if v == T::default() { default } else { v }
}

impl gds_options {
    fn to_engine(self) -> Result<Options, Fail> {
        let known = GDS_OPTION_EVICT | GDS_OPTION_EVICT_GIVEN;
        if self.flags & !known != 0 {
            return Err(Fail::new(
                GDS_ERR_INVALID_OPTIONS,
                format!("invalid options: unknown flags {:#x} in gds_options.flags", self.flags & !known),
            ));
        }
        let d = Options::default();
        Ok(Options {
            capacity_bytes: or_default(self.capacity_bytes, d.capacity_bytes),
            max_entries: or_default(self.max_entries, d.max_entries),
            max_key: or_default(self.max_key, d.max_key),
            max_value: or_default(self.max_value, d.max_value),
            max_clients: or_default(self.max_clients, d.max_clients),
            feed_len: or_default(self.feed_len, d.feed_len),
            evict: self.flags & GDS_OPTION_EVICT != 0,
            mode: or_default(self.mode, d.mode),
        })
    }

    /// `GDS_ERR_INCOMPATIBLE` if an option this caller gave (a non-zero field; eviction when
    /// `GDS_OPTION_EVICT` or `GDS_OPTION_EVICT_GIVEN` is set) differs from segment `name`'s, `i`. The message
    /// names the option, both values, and the ways on that keep the segment's sessions.
    fn check_given(&self, name: &str, i: &engine::Info) -> Result<(), Fail> {
        let sized: [(&str, &str, u64, u64); 6] = [
            ("capacity_bytes", "--capacity", self.capacity_bytes, i.heap_bytes),
            ("max_entries", "--max-entries", self.max_entries, i.max_entries),
            ("max_key", "--max-key", self.max_key.into(), i.max_key),
            ("max_value", "--max-value", self.max_value, i.max_value),
            ("max_clients", "--max-clients", self.max_clients.into(), i.max_clients),
            ("feed_len", "--feed-len", self.feed_len, i.feed_len),
        ];
        let refuse = |opt: &str, want: String, have: String, shape: String| {
            Err(Fail::new(
                GDS_ERR_INCOMPATIBLE,
                format!(
                    "segment {name:?} exists with {opt}={have}, but {opt}={want} was given. To keep its \
                     sessions, either open it without giving {opt} (then the segment's value is accepted) \
                     or with {opt}={have}, or move them to a segment of the new shape: `gardenstate dump \
                     {name} FILE`, then `gardenstate restore NEW_NAME FILE --create {shape}`, and open \
                     NEW_NAME (destroying a segment in use would lose its sessions)"
                ),
            ))
        };
        for (opt, flag, want, have) in sized {
            // capacity_bytes is rounded up to whole heap pages (of the segment's page size).
            let made = match opt {
                "capacity_bytes" => want.div_ceil(i.page_size).max(1).saturating_mul(i.page_size),
                _ => want,
            };
            if want != 0 && made != have {
                return refuse(opt, want.to_string(), have.to_string(), format!("{flag} {want}"));
            }
        }
        let evict = self.flags & GDS_OPTION_EVICT != 0;
        if self.flags & (GDS_OPTION_EVICT | GDS_OPTION_EVICT_GIVEN) != 0 && evict != i.evict {
            let shape = if evict { "--evict" } else { "(without --evict)" };
            return refuse("evict", evict.to_string(), i.evict.to_string(), shape.into());
        }
        Ok(())
    }

    /// `gds_open`'s create-or-attach with these options as given (`opts`: them converted,
    /// defaults filled in): creates `name` with `opts`, or attaches to it checking only the
    /// options given.
    fn open(&self, name: &str, opts: &Options) -> Result<Store, Fail> {
        Store::open_checked(name, opts, |store| self.check_given(name, &store.info()))
    }

    fn from_engine(o: &Options) -> gds_options {
        gds_options {
            struct_size: 0,
            capacity_bytes: o.capacity_bytes,
            max_entries: o.max_entries,
            max_value: o.max_value,
            feed_len: o.feed_len,
            max_key: o.max_key,
            max_clients: o.max_clients,
            mode: o.mode,
            flags: if o.evict { GDS_OPTION_EVICT } else { 0 },
        }
    }
}

/// Fills `*opts` with the default options (what a field left 0 means). Set
/// `opts->struct_size = sizeof(gds_options)` first.
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
/// Thread safety: any thread.
///
/// # Safety
/// - `opts` is NULL or points to a writable `gds_options` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_options_default(opts: *mut gds_options) -> gds_status {
    boundary(|| {
        // SAFETY: the caller guarantees `opts` is NULL or a writable gds_options of its
        // declared struct_size (# Safety above).
        let out = unsafe { extensible::out_struct(opts, "opts") }?;
        out.write(gds_options::from_engine(&Options::default()));
        Ok(GDS_OK)
    })
}

/// Runs one of the engine's open calls and hands the new handle to the caller.
///
/// # Safety
/// - `name` is NULL or a NUL-terminated string; `out` is NULL or valid for a pointer write.
unsafe fn open_with(
    name: *const c_char,
    out: *mut *mut gds_store,
    open: impl FnOnce(&str) -> Result<Store, Fail>,
) -> Result<gds_status, Fail> {
    // SAFETY: forwarded from this function's # Safety.
    let (name, out) = unsafe { (args::c_str(name, "name")?, args::out(out, "store_out")?) };
    let store = open(name)?;
    out.write(Box::into_raw(Box::new(gds_store { store, kept: false })));
    Ok(GDS_OK)
}

/// `open_with` for the calls that take options (`gds_create`, `gds_open`): reads and
/// converts `opts` first (every option is checked, given or defaulted, before anything is
/// created or attached).
///
/// # Safety
/// - As `open_with`; `opts` is NULL or a readable `gds_options` of its declared `struct_size`.
unsafe fn open_with_options(
    name: *const c_char,
    opts: *const gds_options,
    out: *mut *mut gds_store,
    open: fn(&str, &gds_options, &Options) -> Result<Store, Fail>,
) -> Result<gds_status, Fail> {
    // SAFETY: the caller guarantees `opts` is NULL or readable for its struct_size.
    let given = unsafe { extensible::read_in(opts, "opts") }?;
    let opts = given.to_engine()?;
    opts.heap_demand()?;
    // SAFETY: `name` and `out` as in this function's # Safety.
    unsafe { open_with(name, out, |name| open(name, &given, &opts)) }
}

/// Creates the segment `name` with `opts` and opens it: `/dev/shm/<name>`, or
/// `$GARDENSTATE_SHM_DIR/<name>`. A name is 1 to 200 characters from `[A-Za-z0-9._-]`.
///
/// Returns `GDS_OK` (`*store_out` is the new handle); `GDS_ERR_SEGMENT_EXISTS`;
/// `GDS_ERR_INVALID_OPTIONS` (an option out of range, or a bad name); `GDS_ERR_IO`,
/// `GDS_ERR_PERMISSION`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (a name that is
/// not UTF-8, a bad `struct_size`).
/// Thread safety: any thread.
///
/// # Safety
/// - `name` is NULL or a NUL-terminated string.
/// - `opts` is NULL or a readable `gds_options` of its declared `struct_size`.
/// - `store_out` is NULL or valid for writing a `gds_store *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_create(
    name: *const c_char,
    opts: *const gds_options,
    store_out: *mut *mut gds_store,
) -> gds_status {
    // SAFETY: forwarded from # Safety above.
    boundary(|| unsafe {
        open_with_options(name, opts, store_out, |name, _, opts| Ok(Store::create(name, opts)?))
    })
}

/// Opens the segment `name`, creating it with `opts` if it does not exist: the call every
/// worker of a pool makes, however many start at once (exactly one creates it).
///
/// An existing segment is checked against the options given only: a field left 0 (and
/// eviction when neither `GDS_OPTION_EVICT` nor `GDS_OPTION_EVICT_GIVEN` is set) accepts the
/// segment's value, so `opts` with only `struct_size` set attaches to a segment of any shape
/// (one the CLI created with other options, say). An option given with another value than the segment's is refused
/// with `GDS_ERR_INCOMPATIBLE`, whose message (`gds_last_error_message`) names the option,
/// both values, and how to go on without losing the segment's sessions.
///
/// Returns `GDS_OK`; `GDS_ERR_INCOMPATIBLE`; `GDS_ERR_CORRUPT`; `GDS_ERR_NOT_READY`;
/// `GDS_ERR_REFUSED`; and the errors of `gds_create`.
/// Thread safety: any thread.
///
/// # Safety
/// As `gds_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_open(
    name: *const c_char,
    opts: *const gds_options,
    store_out: *mut *mut gds_store,
) -> gds_status {
    // SAFETY: forwarded from # Safety above.
    boundary(|| unsafe {
        open_with_options(name, opts, store_out, |name, given, opts| given.open(name, opts))
    })
}

/// Attaches to the existing segment `name` (owned by this user), waiting up to 5 s for a
/// creator that is still initializing it. Reads the header only (no scan) and validates it.
///
/// Returns `GDS_OK`; `GDS_ERR_NO_SEGMENT`; `GDS_ERR_INCOMPATIBLE`; `GDS_ERR_CORRUPT`;
/// `GDS_ERR_NOT_READY`; `GDS_ERR_REFUSED` (a symlink, another owner: see
/// `gds_attach_group`); `GDS_ERR_PERMISSION`; `GDS_ERR_IO`; `GDS_ERR_INVALID_OPTIONS` (a
/// bad name); `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT`.
/// Thread safety: any thread.
///
/// # Safety
/// - `name` is NULL or a NUL-terminated string.
/// - `store_out` is NULL or valid for writing a `gds_store *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_attach(name: *const c_char, store_out: *mut *mut gds_store) -> gds_status {
    // SAFETY: forwarded from # Safety above.
    boundary(|| unsafe { open_with(name, store_out, |name| Ok(Store::attach(name)?)) })
}

/// As `gds_attach`, but also accepts a segment of another user of this group if it was
/// created with mode 0660.
///
/// Thread safety: any thread.
///
/// # Safety
/// As `gds_attach`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_attach_group(name: *const c_char, store_out: *mut *mut gds_store) -> gds_status {
    // SAFETY: forwarded from # Safety above.
    boundary(|| unsafe { open_with(name, store_out, |name| Ok(Store::attach_group(name)?)) })
}

/// Closes a handle: unmaps the segment (for this process). The segment and its entries stay.
/// NULL is a no-op, and so is a handle of `gds_open_process` (the process keeps it). Closing a handle twice, or using it after closing, is undefined behaviour.
///
/// A child process after `fork()` may close the inherited handle: no client slot is held
/// between calls, so nothing of the parent's is touched.
///
/// Thread safety: no other call may be using `store`, on any thread, during or after this.
///
/// # Safety
/// - `store` is NULL or a live handle, not in use by any other thread, never used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_close(store: *mut gds_store) {
    guard((), || {
        // SAFETY: a non-NULL `store` is a live handle (# Safety above).
        if !store.is_null() && !unsafe { &*store }.kept {
            // SAFETY: a non-NULL `store` not kept by `gds_open_process` is a Box<gds_store>
            // leaked by `open_with`, which the caller gives back exactly once (# Safety above).
            drop(unsafe { Box::from_raw(store) });
        }
    })
}

/// A handle `gds_open_process` keeps for this process.
struct Kept {
    name: String,
    opts: gds_options,
    /// The process that opened it: a forked child never uses its parent's handle.
    pid: u32,
    /// Device and inode of the segment file opened: another file under the name is a
    /// segment destroyed and recreated.
    file: (u64, u64),
    store: *mut gds_store,
}

// SAFETY: `store` is a Box<gds_store> owned by the KEPT list (gds_store is Send + Sync: a
// Store is shared by threads); the list is only touched under its mutex.
unsafe impl Send for Kept {}

impl Drop for Kept {
    fn drop(&mut self) {
        // SAFETY: `store` is the Box `gds_open_process` leaked into this Kept, which owns it
        // (gds_close leaves kept handles alone); a Kept is dropped only when that function
        // replaces it, when by its contract no call uses the handle any more (a forked child
        // may close an inherited handle: gds_close).
        drop(unsafe { Box::from_raw(self.store) });
    }
}

static KEPT: std::sync::Mutex<Vec<Kept>> = std::sync::Mutex::new(Vec::new());

/// Device and inode of the file named `name` in the segment directory, if there is one.
fn file_id(name: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(engine::shm_dir().join(name)).ok().map(|m| (m.dev(), m.ino()))
}

/// As `gds_open`, for a runtime that frees everything between requests (PHP): the handle is
/// kept by the library for this process, and a later call with the same `name` and `opts`
/// returns the same handle (a `getpid` and a `stat`, about a microsecond, instead of mapping
/// the segment again, about 100 us), as long as this process opened it (a child forked from
/// a process that had one opens its own) and the segment file is still the one opened (one
/// destroyed and recreated is opened anew). `gds_close` on it does nothing: the process
/// keeps it until it exits.
///
/// The handle stays valid until a later `gds_open_process` of this process with the same
/// `name` and `opts` finds the segment file replaced: that call closes it. So call it at
/// the start of each request and use the handle only within that request, from one thread
/// per process (PHP), or with calls that never overlap another thread's use of the handle.
/// Calls are serialized (one mutex): not for many threads; and do not fork while another
/// thread is inside it.
///
/// Returns as `gds_open`.
/// Thread safety: see above.
///
/// # Safety
/// As `gds_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_open_process(
    name: *const c_char,
    opts: *const gds_options,
    store_out: *mut *mut gds_store,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (name, given, out) = unsafe {
            (
                args::c_str(name, "name")?,
                extensible::read_in(opts, "opts")?,
                args::out(store_out, "store_out")?,
            )
        };
        let opts = given.to_engine()?;
        opts.heap_demand()?;
        let pid = std::process::id();
        let mut kept = KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut before = file_id(name);
        // A handle replaced here is closed when this call returns, after the new one is
        // made: the two never share an address, so a caller sees the change.
        let mut _replaced = None;
        if let Some(i) = kept.iter().position(|k| k.name == name && k.opts == given) {
            if kept[i].pid == pid && Some(kept[i].file) == before {
                out.write(kept[i].store);
                return Ok(GDS_OK);
            }
            _replaced = Some(kept.swap_remove(i));
        }
        for _ in 0..100 {
            let store = given.open(name, &opts)?;
            let after = file_id(name);
            // The file stat'ed before the open is the one opened unless it changed in between
            // (then open again, to know which one this is). With none before, the one after is
            // the one created or attached to, unless replaced within these microseconds.
            if let Some(file) = after.filter(|f| before.is_none_or(|b| b == *f)) {
                let store = Box::into_raw(Box::new(gds_store { store, kept: true }));
                kept.push(Kept { name: name.to_string(), opts: given, pid, file, store });
                out.write(store);
                return Ok(GDS_OK);
            }
            before = after;
        }
        Err(Fail::new(
            GDS_ERR_NOT_READY,
            format!(
                "segment {name:?} was replaced under every one of 100 opens: call again once it is stable"
            ),
        ))
    })
}

/// Removes the segment `name`. Processes that have it open keep working on their mapping
/// until they close it; a new `gds_open` of the same name creates a new segment.
///
/// Returns `GDS_OK` (removed); `GDS_NOT_FOUND` (there was no such segment);
/// `GDS_ERR_INVALID_OPTIONS` (a bad name); `GDS_ERR_IO`, `GDS_ERR_PERMISSION`;
/// `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT`.
/// Thread safety: any thread.
///
/// # Safety
/// - `name` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_destroy(name: *const c_char) -> gds_status {
    boundary(|| {
        // SAFETY: the caller guarantees `name` is NULL or a NUL-terminated string.
        let name = unsafe { args::c_str(name, "name") }?;
        Ok(if Store::destroy(name)? { GDS_OK } else { GDS_NOT_FOUND })
    })
}

/// The fixed shape of a segment, as created.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gds_info {
    /// `sizeof(gds_info)`, set by the caller; on return, the bytes the library filled.
    pub struct_size: u64,
    /// Size of the segment file in bytes.
    pub segment_bytes: u64,
    /// Bytes of heap for records (capacity rounded up to whole pages).
    pub heap_bytes: u64,
    /// Heap page size in bytes.
    pub page_size: u64,
    /// `max_entries` as created.
    pub max_entries: u64,
    /// Usable index slots (about 1.75 per entry).
    pub index_slots: u64,
    /// Longest key in bytes.
    pub max_key: u64,
    /// Longest value in bytes.
    pub max_value: u64,
    /// Client slots.
    pub max_clients: u64,
    /// Change-feed entries.
    pub feed_len: u64,
    /// Random id of this segment's dataset (changes when the segment is recreated).
    pub dataset_id: u64,
    /// `GDS_OPTION_*` bits the segment was created with.
    pub flags: u64,
}
extensible!(gds_info, 96);

/// Writes the segment's fixed shape to `*info_out` (set its `struct_size` first).
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `info_out` is NULL or a writable `gds_info` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_get_info(store: *const gds_store, info_out: *mut gds_info) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out) = unsafe { (args::store(store)?, extensible::out_struct(info_out, "info_out")?) };
        let i = store.info();
        out.write(gds_info {
            struct_size: 0,
            segment_bytes: i.segment_bytes,
            heap_bytes: i.heap_bytes,
            page_size: i.page_size,
            max_entries: i.max_entries,
            index_slots: i.index_slots,
            max_key: i.max_key,
            max_value: i.max_value,
            max_clients: i.max_clients,
            feed_len: i.feed_len,
            dataset_id: i.dataset_id,
            flags: if i.evict { GDS_OPTION_EVICT.into() } else { 0 },
        });
        Ok(GDS_OK)
    })
}

/// Whether a segment accepts writes: one of the `GDS_WRITE_MODE_*` values.
pub type gds_write_mode = u32;
/// Writes are accepted (the default).
pub const GDS_WRITE_MODE_WRITABLE: gds_write_mode = 0;
/// A standby replica: every write fails with `GDS_ERR_READ_ONLY`; reads work but do not
/// extend sliding deadlines.
pub const GDS_WRITE_MODE_REPLICA: gds_write_mode = 1;
/// A primary that lost its quorum: as `GDS_WRITE_MODE_REPLICA`.
pub const GDS_WRITE_MODE_FENCED: gds_write_mode = 2;

/// Sets the write mode of the segment, for every process using it; refused while a live
/// replication daemon owns the mode (it decides fencing and promotion: read the mode with
/// `gds_get_write_mode`, change it with `gardenstate switchover` or `gardenstate promote`).
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (unknown mode);
/// `GDS_ERR_REFUSED` (a replication daemon owns the write mode).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_set_write_mode(store: *const gds_store, mode: gds_write_mode) -> gds_status {
    boundary(|| {
        // SAFETY: `store` is NULL or a live handle (# Safety above).
        let store = unsafe { args::store(store) }?;
        let mode = match mode {
            GDS_WRITE_MODE_WRITABLE => WriteMode::Writable,
            GDS_WRITE_MODE_REPLICA => WriteMode::Replica,
            GDS_WRITE_MODE_FENCED => WriteMode::Fenced,
            other => {
                return Err(Fail::invalid(format!(
                    "write mode {other}: use GDS_WRITE_MODE_WRITABLE (0), _REPLICA (1) or _FENCED (2)"
                )));
            }
        };
        store.request_write_mode(mode)?;
        Ok(GDS_OK)
    })
}

/// Writes the segment's current write mode (`GDS_WRITE_MODE_*`) to `*mode_out`.
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle; `mode_out` is NULL or valid for a `uint32_t` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_get_write_mode(
    store: *const gds_store,
    mode_out: *mut gds_write_mode,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out) = unsafe { (args::store(store)?, args::out(mode_out, "mode_out")?) };
        out.write(match store.write_mode() {
            WriteMode::Writable => GDS_WRITE_MODE_WRITABLE,
            WriteMode::Replica => GDS_WRITE_MODE_REPLICA,
            WriteMode::Fenced => GDS_WRITE_MODE_FENCED,
        });
        Ok(GDS_OK)
    })
}

/// The role a segment plays for its workers now: one of the `GDS_ROLE_*` values.
pub type gds_role = u32;
/// Writable: writes are accepted.
pub const GDS_ROLE_PRIMARY: gds_role = 0;
/// A standby replica: writes fail with `GDS_ERR_READ_ONLY` until a promotion.
pub const GDS_ROLE_STANDBY: gds_role = 1;
/// A primary that lost its quorum (or was demoted): writes fail with `GDS_ERR_READ_ONLY`.
pub const GDS_ROLE_FENCED: gds_role = 2;
/// Writable, but the replication daemon stopped renewing its write lease (it died or
/// stalls): writes fail with `GDS_ERR_READ_ONLY` until it renews it or a failover ends it.
pub const GDS_ROLE_LEASE_LAPSED: gds_role = 3;

/// Where a segment stands in its replication history, as its workers see it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct gds_replication_state {
    /// `sizeof(gds_replication_state)`, set by the caller; on return, the bytes the library
    /// filled.
    pub struct_size: u64,
    /// The replication epoch: raised by every promotion, never lowered (0: never promoted).
    pub epoch: u64,
    /// Grows on every role change and epoch raise and never moves back: compare it with the
    /// value a worker cached to learn that a failover (or a fence) happened. It does not move
    /// when a write lease lapses; `role` shows that.
    pub changes: u64,
    /// `GDS_ROLE_*`.
    pub role: gds_role,
    /// Zero.
    pub reserved: u32,
}
extensible!(gds_replication_state, 32);

/// Writes the segment's epoch, role and change counter to `*state_out` (set its
/// `struct_size` first). A few atomic loads: cheap enough for every request. An app answers a
/// write that failed with `GDS_ERR_READ_ONLY` (or any request needing writes while the role
/// is not `GDS_ROLE_PRIMARY`) with HTTP 503 and `Retry-After: 1`: a failover or a renewed
/// lease usually gives writes back within a second.
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT` (bad `struct_size`).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `state_out` is NULL or a writable `gds_replication_state` whose `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_get_replication_state(
    store: *const gds_store,
    state_out: *mut gds_replication_state,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, out) = unsafe { (args::store(store)?, extensible::out_struct(state_out, "state_out")?) };
        let s = store.replication_state();
        out.write(gds_replication_state {
            struct_size: 0,
            epoch: s.epoch,
            changes: s.changes,
            role: match s.role {
                Role::Primary => GDS_ROLE_PRIMARY,
                Role::Standby => GDS_ROLE_STANDBY,
                Role::Fenced => GDS_ROLE_FENCED,
                Role::LeaseLapsed => GDS_ROLE_LEASE_LAPSED,
            },
            reserved: 0,
        });
        Ok(GDS_OK)
    })
}

/// Writes to `*path_out` the directory where segments are created (`/dev/shm`, or
/// `$GARDENSTATE_SHM_DIR`), as a NUL-terminated string to free with `gds_buffer_free`.
///
/// Returns `GDS_OK`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_OUT_OF_MEMORY`.
/// Thread safety: any thread (it reads the environment: not concurrently with `setenv`).
///
/// # Safety
/// - `path_out` is NULL or valid for writing a `char *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_shm_dir(path_out: *mut *mut c_char) -> gds_status {
    boundary(|| {
        // SAFETY: `path_out` is NULL or writable (# Safety above).
        let out = unsafe { args::out(path_out, "path_out") }?;
        let dir = engine::shm_dir();
        out.write(CBuf::new(dir.as_os_str().as_bytes(), true)?.into_raw().cast());
        Ok(GDS_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape the CLI gives `gardenstate create s --capacity 3000000 --max-entries 200000
    /// --max-value 65536 --evict` (page size from max_key/max_value, heap in whole pages).
    fn cli_made() -> engine::Info {
        engine::Info {
            segment_bytes: 0,
            heap_bytes: 3_014_656,
            page_size: 131_072,
            max_entries: 200_000,
            index_slots: 0,
            max_key: 256,
            max_value: 65_536,
            max_clients: 512,
            feed_len: 65_536,
            evict: true,
            dataset_id: 1,
        }
    }

    fn given(f: impl FnOnce(&mut gds_options)) -> Result<(), Fail> {
        let mut o = gds_options { struct_size: size_of::<gds_options>() as u64, ..Default::default() };
        f(&mut o);
        o.check_given("s", &cli_made())
    }

    #[test]
    fn options_not_given_accept_what_exists() {
        assert!(given(|_| {}).is_ok());
        // Given and equal; capacity in bytes that round up to the same heap.
        assert!(
            given(|o| {
                o.max_entries = 200_000;
                o.capacity_bytes = 3_000_000;
                o.flags = GDS_OPTION_EVICT;
            })
            .is_ok()
        );
        // The default (no GDS_OPTION_EVICT, 0 elsewhere) says nothing about eviction.
        assert!(given(|o| o.max_value = 65_536).is_ok());
    }

    #[test]
    fn a_given_option_that_differs_names_both_values_and_a_safe_fix() {
        let e = given(|o| o.max_entries = 65_536).unwrap_err();
        assert_eq!(e.status, GDS_ERR_INCOMPATIBLE);
        for part in [
            "segment \"s\" exists with max_entries=200000, but max_entries=65536 was given",
            "open it without giving max_entries",
            "or with max_entries=200000",
            "`gardenstate restore NEW_NAME FILE --create --max-entries 65536`",
        ] {
            assert!(e.message.contains(part), "{part:?} not in {:?}", e.message);
        }
        assert!(!e.message.contains("destroy it"), "{}", e.message);
        let e = given(|o| o.flags = GDS_OPTION_EVICT_GIVEN).unwrap_err();
        assert!(e.message.contains("evict=true, but evict=false was given"), "{}", e.message);
        assert!(e.message.contains("(without --evict)"), "{}", e.message);
        let e = given(|o| o.capacity_bytes = 4 << 20).unwrap_err();
        assert!(e.message.contains("capacity_bytes=3014656, but capacity_bytes=4194304"), "{}", e.message);
    }
}
