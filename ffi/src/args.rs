//! The only place C pointers become Rust references.
//!
//! Each helper checks for NULL (giving `GDS_ERR_NULL_ARGUMENT` with the argument's name) and
//! relies on the export's `# Safety` contract for the rest: a non-NULL pointer is valid for
//! what the header says. Exports convert every argument, outputs included, before they do
//! anything, so a bad argument never leaves a half-done operation; outputs are wrapped in
//! [`Out`], which is written only when the export has succeeded.
//!
//! A byte string is a pointer and a length; its pointer may be NULL when the length is 0
//! (some runtimes, .NET among them, pass NULL for an empty array). Every other pointer must
//! be non-NULL.

use crate::status::Fail;
use crate::store::gds_store;
use std::ffi::{CStr, c_char};
use std::mem::MaybeUninit;

/// An output parameter, checked non-NULL, not yet written.
pub(crate) struct Out<'a, T>(&'a mut MaybeUninit<T>);

impl<T> Out<'_, T> {
    pub fn write(self, value: T) {
        self.0.write(value);
    }
}

/// Checks an output pointer.
///
/// # Safety
/// - `p` is NULL, or valid for a write of a `T` and properly aligned, for `'a`.
pub(crate) unsafe fn out<'a, T>(p: *mut T, name: &str) -> Result<Out<'a, T>, Fail> {
    // SAFETY: MaybeUninit<T> has T's layout and any bytes are a valid MaybeUninit<T>; the
    // caller guarantees that a non-NULL `p` is aligned and valid for writes for 'a, and
    // `as_mut` returns None for NULL.
    unsafe { p.cast::<MaybeUninit<T>>().as_mut() }.map(Out).ok_or_else(|| Fail::null(name))
}

/// The store behind a handle.
///
/// # Safety
/// - `p` is NULL or a handle returned by `gds_create`/`gds_open`/`gds_attach*` and not yet
///   passed to `gds_close`, and it stays so for `'a`.
pub(crate) unsafe fn store<'a>(p: *const gds_store) -> Result<&'a engine::Store, Fail> {
    // SAFETY: the caller guarantees a non-NULL `p` is a live handle (a Box<gds_store> leaked
    // by an open call), and `as_ref` returns None for NULL.
    unsafe { p.as_ref() }.map(|h| &h.store).ok_or_else(|| Fail::null("store"))
}

fn check_len(len: usize, name: &str) -> Result<(), Fail> {
    if len > isize::MAX as usize {
        return Err(Fail::invalid(format!("length of `{name}` ({len}) exceeds PTRDIFF_MAX")));
    }
    Ok(())
}

/// A byte string given as pointer and length (NULL allowed when `len` is 0).
///
/// # Safety
/// - `p` is NULL, or valid for reads of `len` bytes, not written by anyone, for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8], Fail> {
    check_len(len, name)?;
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Fail::null(name));
    }
    // SAFETY: non-NULL, `len` > 0 and at most isize::MAX (checked above); the caller
    // guarantees `p` is valid for reads of `len` bytes for 'a; u8 has alignment 1.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A caller buffer given as pointer and capacity (NULL allowed when `len` is 0).
///
/// # Safety
/// - `p` is NULL, or valid for reads and writes of `len` bytes, used by no one else, for `'a`.
pub(crate) unsafe fn bytes_mut<'a>(p: *mut u8, len: usize, name: &str) -> Result<&'a mut [u8], Fail> {
    check_len(len, name)?;
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Fail::null(name));
    }
    // SAFETY: non-NULL, `len` > 0 and at most isize::MAX (checked above); the caller
    // guarantees exclusive access to `len` writable bytes for 'a; u8 has alignment 1.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// A NUL-terminated UTF-8 string (a segment name).
///
/// # Safety
/// - `p` is NULL, or points to a NUL-terminated string that is not written during the call.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(Fail::null(name));
    }
    // SAFETY: non-NULL; the caller guarantees it is NUL-terminated and unchanged meanwhile.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| Fail::invalid(format!("`{name}` is not valid UTF-8: {s:?}")))
}

/// A required callback.
pub(crate) fn callback<F>(f: Option<F>, name: &str) -> Result<F, Fail> {
    f.ok_or_else(|| Fail::null(name))
}
