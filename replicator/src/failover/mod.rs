//! Failover: which node takes writes, and how that changes.
//!
//! `node` holds the rules that move a data node between the primary and standby roles
//! (`promote` is in `commands::segment_cmds`); `heartbeat` the authenticated UDP heartbeats
//! (`pairing` their per-pair handshake and session keys),
//! `witness` the third vote, `switchover` the operator's planned switchover.

pub mod heartbeat;
pub mod node;
pub mod pairing;
pub mod switchover;
pub mod witness;
