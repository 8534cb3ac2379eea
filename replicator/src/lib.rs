//! The `gardenstate` command: administration of session-store segments (this crate's
//! binary), and the replication daemon.
//!
//! Layout, by concern (each folder's `mod.rs` says what its modules do):
//! - `commands`: the administration commands and what they share (command line, attach,
//!   the snapshot format, rendering, units, exit codes);
//! - `replication`: the wire format, the authenticated stream, the primary's follower and the
//!   standby's apply, and the two daemons;
//! - `failover`: the node's roles and the rules that move it, heartbeats, the witness, the
//!   operator's switchover;
//! - `operations`: the daemons' configuration, log, status file and metrics endpoint;
//! - `demo`: replication and failover shown on one machine, with its worker process.
//!
//! Safe code only, over the engine's public API.

#![forbid(unsafe_code)]

pub mod commands;
pub mod demo;
pub mod failover;
// Fuzz target bodies, shared by `fuzz/` and the replay tests (not part of the API).
#[doc(hidden)]
pub mod fuzzing;
pub mod operations;
pub mod replication;
