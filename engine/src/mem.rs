//! Word-addressed access to the shared segment.
//!
//! Everything the engine keeps in shared memory is an array of 64-bit words accessed only as
//! atomics, including key and value bytes (copied word by word with relaxed loads and stores).
//! That keeps concurrent readers and writers of a reused block data-race free in the Rust memory
//! model, and it lets loom run the same algorithms over a `Vec` of loom atomics.
//!
//! Offsets computed by the engine from validated geometry are indexes here; offsets read from
//! the segment itself are checked by their users before they get here. [`Mem::w`] still checks
//! every index: a bug becomes a panic, never a read outside the mapping.

use crate::sync::AtomicU64;

pub(crate) struct Mem {
    #[cfg(not(loom))]
    base: *const AtomicU64,
    /// Under loom only the words a model declared live exist (every loom atomic costs time in
    /// every explored execution); touching another one panics.
    #[cfg(loom)]
    words_vec: Vec<Option<AtomicU64>>,
    words: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics; `Mem` never hands out
// non-atomic references, so sharing it between threads is as safe as sharing `[AtomicU64]`.
unsafe impl Send for Mem {}
// SAFETY: as above.
unsafe impl Sync for Mem {}

impl Mem {
    /// # Safety
    /// - `base` is 8-byte aligned and valid for reads and writes of `words * 8` bytes for the
    ///   life of the returned `Mem` (the caller keeps the mapping alive).
    /// - The memory is only ever accessed atomically (by any process).
    #[cfg(not(loom))]
    pub(crate) unsafe fn from_raw(base: *mut u8, words: usize) -> Mem {
        debug_assert_eq!(base as usize % 8, 0);
        Mem { base: base as *const AtomicU64, words }
    }

    /// A zeroed in-process memory of `words` words of which those with `live(i)` exist (loom
    /// models of the algorithms).
    #[cfg(all(test, loom))]
    pub(crate) fn zeroed(words: usize, live: impl Fn(usize) -> bool) -> Mem {
        Mem { words_vec: (0..words).map(|i| live(i).then(|| AtomicU64::new(0))).collect(), words }
    }

    /// The word at index `i`. Panics if `i` is out of bounds (an engine bug, not bad data).
    #[inline(always)]
    pub(crate) fn w(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "segment word {i} out of bounds ({})", self.words);
        #[cfg(not(loom))]
        // SAFETY: i < words, and `from_raw`'s contract makes base..base+words valid AtomicU64s.
        unsafe {
            &*self.base.add(i)
        }
        #[cfg(loom)]
        self.words_vec[i]
            .as_ref()
            .unwrap_or_else(|| panic!("segment word {i} is not live in this loom model"))
    }

    /// Copies the words `at..at + out.len().div_ceil(8)` into `out` (native byte order; the
    /// last word truncated to what `out` has room for), with relaxed loads. One bounds check
    /// for the whole range instead of one a word: this is the loop every value read runs.
    /// Panics if the range is out of bounds (an engine bug, as for [`Mem::w`]).
    #[inline]
    pub(crate) fn load_bytes(&self, at: usize, out: &mut [u8]) {
        let n = out.len().div_ceil(8);
        assert!(
            at.checked_add(n).is_some_and(|end| end <= self.words),
            "segment words {at}+{n} out of bounds ({})",
            self.words
        );
        #[cfg(not(loom))]
        // SAFETY: at + n <= words (checked above), and `from_raw`'s contract makes
        // base..base+words valid AtomicU64s for the life of `self`.
        let src = unsafe { core::slice::from_raw_parts(self.base.add(at), n) };
        #[cfg(loom)]
        let src: Vec<&AtomicU64> = (at..at + n).map(|i| self.w(i)).collect();
        let full = out.len() / 8;
        let dst = out.as_mut_ptr();
        for (i, w) in src[..full].iter().enumerate() {
            let v = w.load(crate::sync::Ordering::Relaxed);
            // SAFETY: i < full = out.len() / 8, so bytes i*8..i*8+8 are inside `out`;
            // unaligned writes of plain bytes need no alignment.
            unsafe { dst.add(i * 8).cast::<u64>().write_unaligned(v) };
        }
        let k = out.len() - full * 8;
        if k > 0 {
            let v = src[full].load(crate::sync::Ordering::Relaxed);
            out[full * 8..].copy_from_slice(&v.to_ne_bytes()[..k]);
        }
    }

    /// The `N` words `at..at + N`, with one bounds check for all of them. Panics if the
    /// range is out of bounds (an engine bug, as for [`Mem::w`]).
    #[inline(always)]
    pub(crate) fn words<const N: usize>(&self, at: usize) -> [&AtomicU64; N] {
        assert!(
            at.checked_add(N).is_some_and(|end| end <= self.words),
            "segment words {at}+{N} out of bounds ({})",
            self.words
        );
        #[cfg(not(loom))]
        // SAFETY: at + N <= words (checked above), and `from_raw`'s contract makes
        // base..base+words valid AtomicU64s for the life of `self`.
        let ws = core::array::from_fn(|j| unsafe { &*self.base.add(at + j) });
        #[cfg(loom)]
        let ws = core::array::from_fn(|j| self.w(at + j));
        ws
    }

    /// Asks the CPU to start loading the cache line of word `i` (a hint: out-of-bounds indexes
    /// and other architectures do nothing), for data this operation will use again (an index
    /// bucket).
    #[inline(always)]
    pub(crate) fn prefetch(&self, i: usize) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        self.prefetch_x86::<{ core::arch::x86_64::_MM_HINT_T0 }>(i);
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = i;
    }

    /// `prefetch` for data read once and copied out (a record's value): the non-temporal hint
    /// keeps these lines from displacing the index in the shared cache. A get reads ~17 record
    /// lines and one bucket line; with the records cached normally, a million random gets
    /// evict the 16 MiB index from a 32 MiB L3 and every bucket becomes a DRAM miss.
    #[inline(always)]
    pub(crate) fn prefetch_once(&self, i: usize) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        self.prefetch_x86::<{ core::arch::x86_64::_MM_HINT_NTA }>(i);
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = i;
    }

    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    #[inline(always)]
    fn prefetch_x86<const HINT: i32>(&self, i: usize) {
        if i < self.words {
            // SAFETY: i < words keeps the pointer inside the mapping; a prefetch never faults
            // and has no architectural effect, and SSE is part of the x86_64 baseline.
            unsafe { core::arch::x86_64::_mm_prefetch::<HINT>(self.base.add(i) as *const i8) }
        }
    }
}
