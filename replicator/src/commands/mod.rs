//! The administration commands (`create`, `stats`, `check`, `destroy`, `promote`, `get`,
//! `set`, `del`, `keys`, `dump`, `restore`) and what they share.
//!
//! `cli` declares the command line; each command group has its module (`segment_cmds`:
//! create/stats/check/destroy/promote, `entry_cmds`: get/set/del/keys, `dump_cmds`:
//! dump/restore); `attach` opens a named segment with the errors a person needs; `snapshot`
//! is the dump file format, a pure encoder/decoder with no store in sight (fuzzable, and the
//! replicator's resync reuses it); `escape` prints bytes safely; `render` formats stats for
//! people and as JSON; `units` parses and prints sizes and durations; `progress` is the
//! progress bar; `exit` holds the exit codes.

pub mod attach;
pub mod cli;
pub mod dump_cmds;
pub mod entry_cmds;
pub mod escape;
pub mod exit;
pub mod progress;
pub mod render;
pub mod segment_cmds;
pub mod snapshot;
pub mod units;
