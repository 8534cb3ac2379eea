//! libgardenstate: the C ABI of the gardenstate engine.
//!
//! This crate builds `libgardenstate.so` and `libgardenstate.a`; `include/gardenstate.h` is
//! generated from it by a pinned cbindgen (`tests/header.rs` fails when the committed header
//! is stale). The conventions every export follows (ownership, NULL, errors, threading,
//! lifetimes, fork) are written once, in `ffi/README.md`, and copied to the top of the header.
//!
//! How the rules are kept, one module each:
//!
//! - `panic`: the boundary every export goes through: it catches panics (nothing unwinds into
//!   C, nothing aborts the host) and turns a failure into a status plus the thread-local
//!   message;
//! - `args`: the only code that turns C pointers into Rust references: every pointer is
//!   checked for NULL there, and outputs are checked before an operation runs and written
//!   only after it succeeded;
//! - `status`: the stable status codes, `gds_strerror`, the thread-local detailed message;
//! - `extensible`: structs that grow (`struct_size` first);
//! - `version`: version macros, `gds_version()`, the ABI version;
//! - `types`: the fixed-layout types of the data path (`gds_meta`, `gds_lock_info`, expiry);
//! - `buffer`: memory handed to the caller, freed with `gds_buffer_free`;
//! - `store`, `ops`, `maintenance`, `feed`: the exports, grouped as in the header.
//!
//! Exported names are the C names (`gds_*`), hence the lint exceptions below.

#![allow(non_camel_case_types)]
#![deny(missing_docs)]

// The exported modules, in the order their items appear in the header (cbindgen keeps the
// parse order; the blank lines keep rustfmt from sorting them).
mod version;

mod status;

mod store;

mod types;

mod ops;

mod maintenance;

mod feed;

mod buffer;

// Internal: argument checking, the panic boundary, extensible structs.
mod args;
mod extensible;
mod panic;
#[cfg(test)]
mod write_mode_tests;

pub use buffer::gds_buffer_free;
pub use feed::{gds_change, gds_change_kind, gds_feed_head, gds_feed_read, gds_wait_replicated};
pub use maintenance::{
    gds_check, gds_check_report, gds_entry, gds_entry_at, gds_get_stats, gds_scan, gds_scan_fn, gds_stats,
    gds_sweep, gds_sweep_report,
};
pub use ops::{
    gds_add, gds_compare_and_set, gds_delete, gds_get, gds_get_alloc, gds_get_meta, gds_lock, gds_lock_wait,
    gds_set, gds_set_and_unlock, gds_touch, gds_unlock,
};
pub use status::{gds_last_error_message, gds_status, gds_strerror};
pub use store::{
    gds_attach, gds_attach_group, gds_close, gds_create, gds_destroy, gds_get_info,
    gds_get_replication_state, gds_get_write_mode, gds_info, gds_open, gds_open_process, gds_options,
    gds_options_default, gds_replication_state, gds_role, gds_set_write_mode, gds_shm_dir, gds_store,
    gds_write_mode,
};
pub use types::{gds_expiry_kind, gds_lock_info, gds_meta};
pub use version::{gds_abi_version, gds_version, gds_version_number};
