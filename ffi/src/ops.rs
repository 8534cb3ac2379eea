//! The data path: reads, writes, and session locks.

// A C function takes its key, value, expiry and outputs as separate arguments.
#![allow(clippy::too_many_arguments)]

use crate::args::{self, Out};
use crate::buffer::CBuf;
use crate::panic::boundary;
use crate::status::{Fail, gds_status, gds_status::*};
use crate::store::gds_store;
use crate::types::{self, gds_expiry_kind, gds_lock_info, gds_meta};
use engine::{Error, Expiry, Store};
use std::time::Duration;

// ---- reads ----------------------------------------------------------------------------------

/// Reads `key` into the caller's buffer `buf` of `buf_len` bytes. A read never returns an
/// expired entry, never waits for a session lock (a locked entry is returned with
/// `meta_out->lock_id` set), and extends a sliding deadline.
///
/// Returns `GDS_OK`: the value is in `buf[0 .. *value_len_out]`, its metadata in
/// `*meta_out`. `GDS_NOT_FOUND`. `GDS_ERR_BUFFER_TOO_SMALL`: `*value_len_out` is the size
/// needed (pass `buf_len` 0 to ask for it); nothing else is written. `GDS_ERR_KEY_LENGTH`;
/// `GDS_ERR_CORRUPT`; `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_NULL_ARGUMENT`.
/// The bytes of `buf` are unspecified after any status but `GDS_OK` (a read that races a
/// writer copies again).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
/// - `buf` is NULL (only if `buf_len` is 0) or writable for `buf_len` bytes.
/// - `value_len_out` is NULL or valid for a `size_t` write; `meta_out` is NULL or valid for a
///   `gds_meta` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_get(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    buf_len: usize,
    value_len_out: *mut usize,
    meta_out: *mut gds_meta,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, key, buf, len_out, meta_out) = unsafe {
            (
                args::store(store)?,
                args::bytes(key, key_len, "key")?,
                args::bytes_mut(buf, buf_len, "buf")?,
                args::out(value_len_out, "value_len_out")?,
                args::out(meta_out, "meta_out")?,
            )
        };
        match store.get_into(key, buf) {
            Ok(Some(meta)) => {
                len_out.write(meta.len);
                meta_out.write(meta.into());
                Ok(GDS_OK)
            }
            Ok(None) => Ok(GDS_NOT_FOUND),
            Err(e @ Error::BufferTooSmall { needed }) => {
                len_out.write(needed);
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// Reads `key` into a buffer the library allocates: on `GDS_OK`, `*value_out` points to
/// `*value_len_out` bytes (a valid pointer even for an empty value) that the caller frees
/// with `gds_buffer_free`. Otherwise as `gds_get`, without `GDS_ERR_BUFFER_TOO_SMALL`; also
/// `GDS_ERR_OUT_OF_MEMORY`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
/// - `value_out`, `value_len_out`, `meta_out` are each NULL or valid for a write of their type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_get_alloc(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    value_out: *mut *mut u8,
    value_len_out: *mut usize,
    meta_out: *mut gds_meta,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, key, value_out, len_out, meta_out) = unsafe {
            (
                args::store(store)?,
                args::bytes(key, key_len, "key")?,
                args::out(value_out, "value_out")?,
                args::out(value_len_out, "value_len_out")?,
                args::out(meta_out, "meta_out")?,
            )
        };
        let Some(entry) = store.get(key)? else { return Ok(GDS_NOT_FOUND) };
        value_out.write(CBuf::new(&entry.value, false)?.into_raw());
        len_out.write(entry.value.len());
        meta_out.write(entry.meta.into());
        Ok(GDS_OK)
    })
}

/// Reads the metadata of `key` without its value (it extends a sliding deadline, as a read).
///
/// Returns `GDS_OK`; `GDS_NOT_FOUND`; `GDS_ERR_KEY_LENGTH`; `GDS_ERR_CORRUPT`;
/// `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
/// - `meta_out` is NULL or valid for a `gds_meta` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_get_meta(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    meta_out: *mut gds_meta,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, key, meta_out) = unsafe {
            (args::store(store)?, args::bytes(key, key_len, "key")?, args::out(meta_out, "meta_out")?)
        };
        let Some(meta) = store.meta_of(key)? else { return Ok(GDS_NOT_FOUND) };
        meta_out.write(meta.into());
        Ok(GDS_OK)
    })
}

// ---- writes ---------------------------------------------------------------------------------

/// The arguments every value write shares, converted.
struct Write<'a> {
    store: &'a Store,
    key: &'a [u8],
    value: &'a [u8],
    expiry: Expiry,
    version_out: Out<'a, u64>,
}

impl Write<'_> {
    /// Converts the shared arguments.
    ///
    /// # Safety
    /// As the `# Safety` of `gds_set`.
    unsafe fn new<'a>(
        store: *const gds_store,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
        expiry: gds_expiry_kind,
        ttl_ms: u64,
        version_out: *mut u64,
    ) -> Result<Write<'a>, Fail> {
        // SAFETY: forwarded from this function's # Safety.
        unsafe {
            Ok(Write {
                store: args::store(store)?,
                key: args::bytes(key, key_len, "key")?,
                value: args::bytes(value, value_len, "value")?,
                expiry: types::expiry(expiry, ttl_ms)?,
                version_out: args::out(version_out, "version_out")?,
            })
        }
    }

    /// Runs the write and reports the new version.
    fn run(
        self,
        op: impl FnOnce(&Store, &[u8], &[u8], Expiry) -> engine::Result<u64>,
    ) -> Result<gds_status, Fail> {
        let version = op(self.store, self.key, self.value, self.expiry)?;
        self.version_out.write(version);
        Ok(GDS_OK)
    }
}

/// Stores `value` under `key`, replacing any current value and dropping any session lock on
/// it. `expiry` is a `GDS_EXPIRY_*` kind; `ttl_ms` (at least 1) is its TTL, ignored for
/// `GDS_EXPIRY_NEVER`. TTLs over 2^32 - 1 ms (49.7 days) are cut to that.
///
/// Returns `GDS_OK` (`*version_out` is the new version); `GDS_ERR_KEY_LENGTH`;
/// `GDS_ERR_VALUE_LENGTH`; `GDS_ERR_FULL_INDEX`, `GDS_ERR_FULL_HEAP`,
/// `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_READ_ONLY`; `GDS_ERR_CORRUPT`; `GDS_ERR_NULL_ARGUMENT`;
/// `GDS_ERR_INVALID_ARGUMENT` (expiry kind, zero TTL).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes; `value` is NULL
///   (only if `value_len` is 0) or readable for `value_len` bytes.
/// - `version_out` is NULL or valid for a `uint64_t` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_set(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    expiry: gds_expiry_kind,
    ttl_ms: u64,
    version_out: *mut u64,
) -> gds_status {
    boundary(|| {
        // SAFETY: forwarded from # Safety above.
        let w = unsafe { Write::new(store, key, key_len, value, value_len, expiry, ttl_ms, version_out) }?;
        w.run(Store::set)
    })
}

/// Stores `value` under `key` only if the key is absent (or expired). As `gds_set`, plus
/// `GDS_ERR_EXISTS`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// As `gds_set`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_add(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    expiry: gds_expiry_kind,
    ttl_ms: u64,
    version_out: *mut u64,
) -> gds_status {
    boundary(|| {
        // SAFETY: forwarded from # Safety above.
        let w = unsafe { Write::new(store, key, key_len, value, value_len, expiry, ttl_ms, version_out) }?;
        w.run(Store::add)
    })
}

/// Stores `value` under `key` only if the entry is at version `expected_version`. As
/// `gds_set`, plus `GDS_NOT_FOUND` (absent or expired) and `GDS_ERR_VERSION_MISMATCH`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// As `gds_set`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_compare_and_set(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    expected_version: u64,
    value: *const u8,
    value_len: usize,
    expiry: gds_expiry_kind,
    ttl_ms: u64,
    version_out: *mut u64,
) -> gds_status {
    boundary(|| {
        // SAFETY: forwarded from # Safety above.
        let w = unsafe { Write::new(store, key, key_len, value, value_len, expiry, ttl_ms, version_out) }?;
        w.run(|s, k, v, e| s.compare_and_set(k, expected_version, v, e))
    })
}

/// Removes `key`.
///
/// Returns `GDS_OK` (a live entry was removed); `GDS_NOT_FOUND`; `GDS_ERR_KEY_LENGTH`;
/// `GDS_ERR_READ_ONLY`; `GDS_ERR_FULL_CLIENTS`; `GDS_ERR_CORRUPT`; `GDS_ERR_NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_delete(store: *const gds_store, key: *const u8, key_len: usize) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, key) = unsafe { (args::store(store)?, args::bytes(key, key_len, "key")?) };
        Ok(if store.delete(key)? { GDS_OK } else { GDS_NOT_FOUND })
    })
}

/// Resets the expiry of `key` to `expiry`/`ttl_ms` from now, keeping its value, version and
/// lock.
///
/// Returns `GDS_OK`; `GDS_NOT_FOUND`; `GDS_ERR_KEY_LENGTH`; `GDS_ERR_READ_ONLY`;
/// `GDS_ERR_FULL_*`; `GDS_ERR_CORRUPT`; `GDS_ERR_NULL_ARGUMENT`; `GDS_ERR_INVALID_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_touch(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    expiry: gds_expiry_kind,
    ttl_ms: u64,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, key) = unsafe { (args::store(store)?, args::bytes(key, key_len, "key")?) };
        Ok(if store.touch(key, types::expiry(expiry, ttl_ms)?)? { GDS_OK } else { GDS_NOT_FOUND })
    })
}

// ---- session locks --------------------------------------------------------------------------

/// Takes the session lock of `key` and reads the entry (ASP.NET `GetItemExclusive`). Never
/// waits (`gds_lock_wait` does). A lock older than `takeover_after_ms`, or whose owner
/// process died, is taken over.
///
/// Returns `GDS_OK`: the lock is ours; `*value_out` / `*value_len_out` hold the value (a
/// buffer to free with `gds_buffer_free`: with the lock already taken, a too-small caller
/// buffer could only fail after the fact), `*meta_out` its metadata, `*lock_out` the lock id
/// that unlocks it and whether it was taken over. `GDS_ERR_LOCKED`: another lock id holds
/// it; only `*lock_out` is written, with the holder's id and age (poll again later, or
/// wait with `gds_lock_wait`).
/// `GDS_NOT_FOUND`; `GDS_ERR_READ_ONLY`; `GDS_ERR_FULL_*`; `GDS_ERR_KEY_LENGTH`;
/// `GDS_ERR_CORRUPT`; `GDS_ERR_OUT_OF_MEMORY` (the lock was released again);
/// `GDS_ERR_NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`. A lock belongs to
/// whoever holds its id, not to a thread or process.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
/// - `value_out`, `value_len_out`, `meta_out`, `lock_out` are each NULL or valid for a write
///   of their type.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_lock(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    takeover_after_ms: u64,
    value_out: *mut *mut u8,
    value_len_out: *mut usize,
    meta_out: *mut gds_meta,
    lock_out: *mut gds_lock_info,
) -> gds_status {
    let takeover_after = Duration::from_millis(takeover_after_ms);
    // SAFETY: the caller's guarantees (# Safety above) are `lock_with`'s.
    unsafe {
        lock_with(store, key, key_len, value_out, value_len_out, meta_out, lock_out, |store, key| {
            store.lock(key, takeover_after)
        })
    }
}

/// `gds_lock`, waiting up to `timeout_ms` while another lock id holds the entry: returns as
/// soon as the holder releases it (unlock, set, delete, expiry: woken directly through a
/// futex word of the segment, within microseconds, in any process) or once it can be taken
/// over (older than `takeover_after_ms`, or its owner process proven dead: checked every
/// 50 ms while the owner is another process). Blocks the calling thread; a timeout of 0 is
/// `gds_lock`. The waiter holds nothing while it sleeps: a thread or process killed in the
/// wait keeps nobody waiting.
///
/// Returns as `gds_lock`: `GDS_OK` (the lock is ours), `GDS_ERR_LOCKED` once `timeout_ms`
/// passed with the lock still held (`*lock_out` names the holder), `GDS_NOT_FOUND` (absent,
/// or deleted or expired during the wait), and the same errors.
/// Thread safety: any thread, concurrently with any call but `gds_close` (which must not run
/// while a wait is in progress).
///
/// # Safety
/// As `gds_lock`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_lock_wait(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    takeover_after_ms: u64,
    timeout_ms: u64,
    value_out: *mut *mut u8,
    value_len_out: *mut usize,
    meta_out: *mut gds_meta,
    lock_out: *mut gds_lock_info,
) -> gds_status {
    let (takeover_after, timeout) =
        (Duration::from_millis(takeover_after_ms), Duration::from_millis(timeout_ms));
    // SAFETY: the caller's guarantees (# Safety above) are `lock_with`'s.
    unsafe {
        lock_with(store, key, key_len, value_out, value_len_out, meta_out, lock_out, |store, key| {
            store.lock_wait(key, takeover_after, timeout)
        })
    }
}

/// The body of `gds_lock` and `gds_lock_wait`: checks the arguments, takes the lock with
/// `take`, and reports it.
///
/// # Safety
/// As `gds_lock`.
#[allow(clippy::too_many_arguments)]
unsafe fn lock_with(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    value_out: *mut *mut u8,
    value_len_out: *mut usize,
    meta_out: *mut gds_meta,
    lock_out: *mut gds_lock_info,
    take: impl FnOnce(&Store, &[u8]) -> engine::Result<Option<engine::Locked>>,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in `gds_lock`'s # Safety.
        let (store, key, value_out, len_out, meta_out, lock_out) = unsafe {
            (
                args::store(store)?,
                args::bytes(key, key_len, "key")?,
                args::out(value_out, "value_out")?,
                args::out(value_len_out, "value_len_out")?,
                args::out(meta_out, "meta_out")?,
                args::out(lock_out, "lock_out")?,
            )
        };
        let locked = match take(store, key) {
            Ok(Some(locked)) => locked,
            Ok(None) => return Ok(GDS_NOT_FOUND),
            Err(e @ Error::Locked { lock_id, age }) => {
                lock_out.write(gds_lock_info {
                    lock_id,
                    age_ms: types::millis(age),
                    took_over: 0,
                    reserved: 0,
                });
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let buf = match CBuf::new(&locked.value, false) {
            Ok(buf) => buf,
            Err(fail) => {
                // Nobody would ever learn the lock id: give the lock back.
                let _ = store.unlock(key, locked.lock_id);
                return Err(fail);
            }
        };
        value_out.write(buf.into_raw());
        len_out.write(locked.value.len());
        meta_out.write(locked.meta.into());
        lock_out.write(gds_lock_info {
            lock_id: locked.lock_id,
            age_ms: 0,
            took_over: u32::from(locked.took_over),
            reserved: 0,
        });
        Ok(GDS_OK)
    })
}

/// Releases the lock `lock_id` on `key`, keeping the value (ASP.NET
/// `ReleaseItemExclusive`).
///
/// Returns `GDS_OK`; `GDS_NOT_FOUND` (the entry expired or was deleted);
/// `GDS_ERR_LOCK_MISMATCH` (the lock was taken over, or the entry is not locked);
/// `GDS_ERR_READ_ONLY`; `GDS_ERR_KEY_LENGTH`; `GDS_ERR_FULL_*`; `GDS_ERR_CORRUPT`;
/// `GDS_ERR_NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// - `store` is NULL or a live handle.
/// - `key` is NULL (only if `key_len` is 0) or readable for `key_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_unlock(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    lock_id: u64,
) -> gds_status {
    boundary(|| {
        // SAFETY: pointer validity as stated in # Safety above.
        let (store, key) = unsafe { (args::store(store)?, args::bytes(key, key_len, "key")?) };
        store.unlock(key, lock_id)?;
        Ok(GDS_OK)
    })
}

/// Stores `value` and releases the lock `lock_id` in one step (ASP.NET
/// `SetAndReleaseItemExclusive`). As `gds_set`, plus `GDS_NOT_FOUND` (the entry expired or
/// was deleted meanwhile) and `GDS_ERR_LOCK_MISMATCH` (the lock was taken over: the write
/// lost).
/// Thread safety: any thread, concurrently with any call but `gds_close`.
///
/// # Safety
/// As `gds_set`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_set_and_unlock(
    store: *const gds_store,
    key: *const u8,
    key_len: usize,
    lock_id: u64,
    value: *const u8,
    value_len: usize,
    expiry: gds_expiry_kind,
    ttl_ms: u64,
    version_out: *mut u64,
) -> gds_status {
    boundary(|| {
        // SAFETY: forwarded from # Safety above.
        let w = unsafe { Write::new(store, key, key_len, value, value_len, expiry, ttl_ms, version_out) }?;
        w.run(|s, k, v, e| s.set_and_unlock(k, lock_id, v, e))
    })
}
