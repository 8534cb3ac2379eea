//! Handles: options, create/open/attach, close, destroy, the segment's shape and write mode.

use crate::args;
use crate::buffer::CBuf;
use crate::extensible::{self, extensible};
use crate::panic::{boundary, guard};
use crate::status::{Fail, gds_status, gds_status::*};
use engine::{Options, Store, WriteMode};
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
}

/// `gds_options.flags`: when full, evict the entry closest to expiry instead of failing
/// with `GDS_ERR_FULL_*`. Off by default: sessions are not a cache.
pub const GDS_OPTION_EVICT: u32 = 1;

/// Capacity and behaviour of a segment, fixed when it is created.
///
/// Set `struct_size = sizeof(gds_options)`; a field left 0 takes its default (listed with
/// each field, and written by `gds_options_default`). Later versions add fields at the end
/// only; their 0 keeps today's behaviour.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
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
    /// `GDS_OPTION_*` bits; default 0.
    pub flags: u32,
}
extensible!(gds_options, 56);

fn or_default<T: PartialEq + Default>(v: T, default: T) -> T {
    if v == T::default() { default } else { v }
}

impl gds_options {
    fn to_engine(self) -> Result<Options, Fail> {
        if self.flags & !GDS_OPTION_EVICT != 0 {
            return Err(Fail::new(
                GDS_ERR_INVALID_OPTIONS,
                format!(
                    "invalid options: unknown flags {:#x} in gds_options.flags",
                    self.flags & !GDS_OPTION_EVICT
                ),
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
    open: impl FnOnce(&str) -> engine::Result<Store>,
) -> Result<gds_status, Fail> {
    // SAFETY: forwarded from this function's # Safety.
    let (name, out) = unsafe { (args::c_str(name, "name")?, args::out(out, "store_out")?) };
    let store = open(name)?;
    out.write(Box::into_raw(Box::new(gds_store { store })));
    Ok(GDS_OK)
}

/// `open_with` for the calls that take options (`Store::create`, `Store::open`): reads and
/// converts `opts` first.
///
/// # Safety
/// - As `open_with`; `opts` is NULL or a readable `gds_options` of its declared `struct_size`.
unsafe fn open_with_options(
    name: *const c_char,
    opts: *const gds_options,
    out: *mut *mut gds_store,
    open: fn(&str, &Options) -> engine::Result<Store>,
) -> Result<gds_status, Fail> {
    // SAFETY: the caller guarantees `opts` is NULL or readable for its struct_size.
    let opts = unsafe { extensible::read_in(opts, "opts") }?.to_engine()?;
    // SAFETY: `name` and `out` as in this function's # Safety.
    unsafe { open_with(name, out, |name| open(name, &opts)) }
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
    boundary(|| unsafe { open_with_options(name, opts, store_out, Store::create) })
}

/// Opens the segment `name`, creating it with `opts` if it does not exist: the call every
/// worker of a pool makes, however many start at once (exactly one creates it). An existing
/// segment created with other options is refused with `GDS_ERR_INCOMPATIBLE`.
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
    boundary(|| unsafe { open_with_options(name, opts, store_out, Store::open) })
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
    boundary(|| unsafe { open_with(name, store_out, Store::attach) })
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
    boundary(|| unsafe { open_with(name, store_out, Store::attach_group) })
}

/// Closes a handle: unmaps the segment (for this process). The segment and its entries stay.
/// NULL is a no-op. Closing a handle twice, or using it after closing, is undefined behaviour.
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
        if !store.is_null() {
            // SAFETY: a non-NULL `store` is a Box<gds_store> leaked by `open_with`, which
            // the caller gives back exactly once (# Safety above).
            drop(unsafe { Box::from_raw(store) });
        }
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
