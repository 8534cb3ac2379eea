//! The atomics shim: the algorithm modules import atomics from here, so the same code runs on
//! `std` atomics in production and on `loom`'s model-checked atomics under `cfg(loom)`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Spin hint used inside bounded retry loops (never an unbounded wait on another process).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
