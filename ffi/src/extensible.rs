//! Structs that can grow: `gds_options` (in) and the reports `gds_info`, `gds_stats`,
//! `gds_sweep_report`, `gds_check_report` (out).
//!
//! Each begins with `uint64_t struct_size`, which the caller sets to `sizeof` the struct as it
//! was compiled (the Windows `cbSize` convention). Later versions add fields only at the end,
//! so the size tells the library which fields the caller knows:
//!
//! - in: fields past the caller's size take their default (zero means default); fields past
//!   the library's size must be zero, or the call fails (the caller asked for something this
//!   library cannot do);
//! - out: the library writes the fields that fit in both, and sets `struct_size` to the
//!   number of bytes it wrote, so a newer caller can see which fields an older library filled.
//!
//! A size below the first version's is refused, and so is one above `MAX_STRUCT_SIZE` (a
//! caller that forgot to set it usually has garbage there).

use crate::status::Fail;
use std::marker::PhantomData;
use std::mem::{MaybeUninit, size_of};

/// Largest `struct_size` accepted: far above any struct here, far below a stray value.
const MAX_STRUCT_SIZE: u64 = 4096;

/// A struct that begins with `struct_size` and grows at the end.
///
/// # Safety
/// Implementors are `#[repr(C)]`, begin with `struct_size: u64` at offset 0, and have only
/// integer fields, so that any bytes (all zeros in particular) are a valid value. Use the
/// `extensible!` macro, which checks the layout at compile time.
pub(crate) unsafe trait Extensible: Copy {
    /// The struct's size in its first version: the smallest `struct_size` accepted. Frozen.
    const V1_SIZE: usize;
    /// The C name, for messages.
    const NAME: &'static str;
    fn set_struct_size(&mut self, n: u64);
}

/// Implements [`Extensible`] for a struct with the given first-version size.
macro_rules! extensible {
    ($t:ident, $v1:expr) => {
        // SAFETY: the assertions below check that `struct_size` is at offset 0 and that the
        // first version fits; the struct's definition (next to this macro call) is repr(C)
        // with u64/u32 fields only, so any bytes are a valid value.
        unsafe impl $crate::extensible::Extensible for $t {
            const V1_SIZE: usize = $v1;
            const NAME: &'static str = stringify!($t);
            fn set_struct_size(&mut self, n: u64) {
                self.struct_size = n;
            }
        }
        const _: () = {
            assert!(std::mem::offset_of!($t, struct_size) == 0);
            assert!(std::mem::size_of::<$t>() >= $v1);
            assert!(std::mem::align_of::<$t>() == 8);
        };
    };
}
pub(crate) use extensible;

fn check_size<T: Extensible>(size: u64) -> Result<usize, Fail> {
    if size < T::V1_SIZE as u64 || size > MAX_STRUCT_SIZE {
        return Err(Fail::invalid(format!(
            "{0}.struct_size is {size}: set it to sizeof({0}) ({1} for this library) before the call",
            T::NAME,
            size_of::<T>()
        )));
    }
    Ok(size as usize)
}

/// Reads the caller's `struct_size` at `p`.
///
/// # Safety
/// - `p` is non-NULL, aligned, and valid for reads of 8 bytes.
unsafe fn read_size<T>(p: *const T) -> u64 {
    // SAFETY: the caller guarantees `p` is aligned and readable for the leading u64.
    unsafe { p.cast::<u64>().read() }
}

/// Reads an extensible input struct: missing fields are zero (their defaults).
///
/// # Safety
/// - `p` is NULL, or aligned and valid for reads of the `struct_size` bytes it declares.
pub(crate) unsafe fn read_in<T: Extensible>(p: *const T, name: &str) -> Result<T, Fail> {
    if p.is_null() {
        return Err(Fail::null(name));
    }
    // SAFETY: non-NULL; the caller guarantees it is aligned and readable (at least the
    // struct_size field, which every version has).
    let size = check_size::<T>(unsafe { read_size(p) })?;
    let known = size.min(size_of::<T>());
    if size > size_of::<T>() {
        // SAFETY: the caller guarantees `size` readable bytes at `p`; this is the part past
        // the fields this library knows.
        let tail =
            unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(size_of::<T>()), size - size_of::<T>()) };
        if let Some(i) = tail.iter().position(|&b| b != 0) {
            return Err(Fail::invalid(format!(
                "{} sets a field at byte {} that libgardenstate {} does not know: \
                 use a newer library, or leave that field 0",
                T::NAME,
                size_of::<T>() + i,
                env!("CARGO_PKG_VERSION")
            )));
        }
    }
    let mut v = MaybeUninit::<T>::zeroed();
    // SAFETY: `known` bytes are readable at `p` (within the caller's size) and writable in
    // `v` (within size_of::<T>()); the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), v.as_mut_ptr().cast::<u8>(), known) };
    // SAFETY: Extensible types are valid for any bytes (trait contract), so zeros followed by
    // the caller's bytes are a valid T.
    Ok(unsafe { v.assume_init() })
}

/// An extensible output struct, checked but not yet written.
pub(crate) struct OutStruct<'a, T> {
    p: *mut T,
    size: usize,
    _borrow: PhantomData<&'a mut T>,
}

impl<T: Extensible> OutStruct<'_, T> {
    /// Writes the fields that fit the caller's struct and sets its `struct_size` to the number
    /// of bytes written.
    pub fn write(self, mut value: T) {
        let n = self.size.min(size_of::<T>());
        value.set_struct_size(n as u64);
        // SAFETY: `out_struct` checked `p` non-NULL, and the caller of `out_struct`
        // guaranteed `size` writable bytes at `p` for 'a; `n` is within both structs.
        unsafe { std::ptr::copy_nonoverlapping((&raw const value).cast::<u8>(), self.p.cast::<u8>(), n) };
    }
}

/// Checks an extensible output struct before the operation runs.
///
/// # Safety
/// - `p` is NULL, or aligned, readable for its `struct_size` field and writable for the
///   `struct_size` bytes it declares, for `'a`.
pub(crate) unsafe fn out_struct<'a, T: Extensible>(p: *mut T, name: &str) -> Result<OutStruct<'a, T>, Fail> {
    if p.is_null() {
        return Err(Fail::null(name));
    }
    // SAFETY: non-NULL; the caller guarantees the struct_size field is readable.
    let size = check_size::<T>(unsafe { read_size(p) })?;
    Ok(OutStruct { p, size, _borrow: PhantomData })
}
