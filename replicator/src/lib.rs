//! The `gardenstate` command: administration of session-store segments (this crate's
//! binary), and the replication daemon.
//!
//! Layout: `cli` declares the command line; each command group has its module
//! (`segment_cmds`: create/stats/check/destroy, `entry_cmds`: get/set/del/keys, `dump_cmds`:
//! dump/restore); `snapshot` is the dump file format, a pure encoder/decoder with no store
//! in sight (fuzzable, and reusable by the replicator's resync); `escape` prints bytes
//! safely; `render` formats stats for people and as JSON; `units` parses and prints sizes
//! and durations; `progress` is the progress bar; `exit` holds the exit codes.
//!
//! Replication: `frame` is the wire format, `auth` the challenge-response, `follow` the
//! snapshot and change-feed follower, `primary` and `standby` the two roles of a data node
//! and `node` the rules that move a node between them (`promote` is in `segment_cmds`);
//! `heartbeat` the authenticated UDP heartbeats, `witness` the third vote, `switchover` the
//! operator's command, `transport` the link's byte stream (plain TCP or TLS), `config` the daemons' flags and TOML file, `log` their log, `status`
//! their live status (published to a status file that `stats` reads), `metrics` their
//! Prometheus endpoint.
//! `demo` shows them at work on one machine (a primary, a standby, worker processes of
//! simulated traffic, a kill -9 and a failover); `demo_worker` is its worker process.
//!
//! Safe code only, over the engine's public API.

#![forbid(unsafe_code)]

pub mod apply;
pub mod attach;
pub mod auth;
pub mod backlog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod demo_worker;
pub mod dump_cmds;
pub mod entry_cmds;
pub mod escape;
pub mod exit;
pub mod follow;
pub mod frame;
// Fuzz target bodies, shared by `fuzz/` and the replay tests (not part of the API).
#[doc(hidden)]
pub mod fuzzing;
pub mod heartbeat;
pub mod log;
pub mod metrics;
pub mod node;
pub mod primary;
pub mod progress;
pub mod render;
pub mod seal;
pub mod segment_cmds;
pub mod snapshot;
pub mod standby;
pub mod status;
pub mod switchover;
pub mod transport;
pub mod units;
pub mod witness;
