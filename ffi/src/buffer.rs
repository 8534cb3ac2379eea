//! Memory handed to the caller (`gds_get_alloc`, `gds_lock`, `gds_check`, `gds_shm_dir`):
//! allocated with `malloc` and given back with `gds_buffer_free`, never `free` directly, so
//! that the library can change its allocator without breaking callers.

use crate::panic::guard;
use crate::status::{Fail, gds_status};
use std::ffi::c_void;

/// Copies `bytes` into a new `malloc` block (at least 1 byte, so an empty value still gets a
/// non-NULL pointer). With `nul`, a NUL byte follows the copy (a C string).
fn to_c(bytes: &[u8], nul: bool) -> Result<*mut u8, Fail> {
    let size = bytes.len() + usize::from(nul);
    // SAFETY: malloc has no preconditions; the result is checked for NULL below.
    let p = unsafe { libc::malloc(size.max(1)) }.cast::<u8>();
    if p.is_null() {
        return Err(Fail::new(gds_status::GDS_ERR_OUT_OF_MEMORY, format!("malloc of {size} bytes failed")));
    }
    // SAFETY: `p` is a fresh block of at least `size` bytes, disjoint from `bytes`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        if nul {
            p.add(bytes.len()).write(0);
        }
    }
    Ok(p)
}

/// A block owned by this module until handed over, freed if the export fails after making it.
pub(crate) struct CBuf(*mut u8);

impl CBuf {
    pub fn new(bytes: &[u8], nul: bool) -> Result<CBuf, Fail> {
        to_c(bytes, nul).map(CBuf)
    }

    /// Hands the block to the caller, who frees it with `gds_buffer_free`.
    pub fn into_raw(self) -> *mut u8 {
        let p = self.0;
        std::mem::forget(self);
        p
    }
}

impl Drop for CBuf {
    fn drop(&mut self) {
        // SAFETY: the block came from malloc in `to_c` and was not handed over.
        unsafe { libc::free(self.0.cast()) };
    }
}

/// Frees memory the library allocated for the caller: the value of `gds_get_alloc` and
/// `gds_lock`, the problem text of `gds_check`, the path of `gds_shm_dir`. NULL is a no-op.
/// Freeing the same pointer twice, or a pointer the library did not return, is undefined
/// behaviour.
///
/// Thread safety: any thread (not necessarily the one that received the buffer).
///
/// # Safety
/// - `buf` is NULL or a pointer returned by one of the functions above, not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gds_buffer_free(buf: *mut c_void) {
    guard((), || {
        // SAFETY: the caller guarantees `buf` is NULL (a no-op for free) or a live block from
        // `to_c`, which used malloc.
        unsafe { libc::free(buf) }
    })
}
