//! The command line: every subcommand and flag, declared with clap's derive API.
//!
//! Only declarations live here; each command group's module does the work. Values that a
//! person types (sizes, counts, durations) are parsed by `units`, so a bad one is refused by
//! clap with the parser's message and exit code 2 before anything touches a segment.
//! KEY, VALUE and PREFIX are `OsString`s: on Unix any bytes but NUL can be passed, and
//! `--escaped` reaches the rest (see `escape`).

use crate::commands::exit::EXIT_CODES_HELP;
use crate::commands::units::{parse_count, parse_duration, parse_size, parse_ttl};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "gardenstate",
    version,
    about = "Administer gardenstate session-store segments (shared memory, /dev/shm/<NAME>)",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a segment (fails if it exists)
    Create(CreateArgs),
    /// Show a segment's counters and shape
    Stats(StatsArgs),
    /// Check every invariant of a segment (exit 3 if it is damaged); run it on a quiet segment
    Check(CheckArgs),
    /// Print the value of a key (exit 1 if absent)
    Get(GetArgs),
    /// Store a value under a key
    Set(SetArgs),
    /// Delete a key (exit 1 if absent)
    Del(DelArgs),
    /// List the keys, one per line, in the table's order (streamed: pipe into `sort` to sort)
    Keys(KeysArgs),
    /// Write every entry, with its TTL, to a snapshot file
    Dump(DumpArgs),
    /// Load a snapshot file written by `dump` into a segment
    Restore(RestoreArgs),
    /// Remove a segment (processes that have it mapped keep their mapping)
    Destroy(DestroyArgs),
    /// Replication daemon, primary side: stream the segment's changes to a standby
    Primary(PrimaryArgs),
    /// Replication daemon, standby side: keep a local replica of a primary's segment
    Standby(StandbyArgs),
    /// Make a standby's segment writable and raise its epoch (stop the standby daemon first)
    Promote(PromoteArgs),
    /// Replication witness: a small third process (meant for a third host) whose vote allows automatic failover
    Witness(WitnessArgs),
    /// Planned switchover: pause writes, let the standby catch up, swap roles (zero loss)
    Switchover(SwitchoverArgs),
    /// Show replication and failover on this machine: a primary, a standby, web traffic, kill -9
    Demo(DemoArgs),
    /// One worker process of `demo` (started by the demo itself)
    #[command(hide = true)]
    DemoWorker(DemoWorkerArgs),
}

impl Command {
    /// The subcommand's name, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Stats(_) => "stats",
            Command::Check(_) => "check",
            Command::Get(_) => "get",
            Command::Set(_) => "set",
            Command::Del(_) => "del",
            Command::Keys(_) => "keys",
            Command::Dump(_) => "dump",
            Command::Restore(_) => "restore",
            Command::Destroy(_) => "destroy",
            Command::Primary(_) => "primary",
            Command::Standby(_) => "standby",
            Command::Promote(_) => "promote",
            Command::Witness(_) => "witness",
            Command::Switchover(_) => "switchover",
            Command::Demo(_) => "demo",
            Command::DemoWorker(_) => "demo-worker",
        }
    }
}

/// The options fixed when a segment is created (`create`, `restore --create`).
#[derive(Debug, Args, Clone, Default)]
pub struct ShapeArgs {
    /// Heap bytes for records [default: 64MiB] (sizes: 4096, 512KiB, 64MiB, 1GiB; K=KiB)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub capacity: Option<u64>,
    /// Live entries the index is sized for [default: 65536]
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_entries: Option<u64>,
    /// Longest key [default: 256]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_key: Option<u64>,
    /// Longest value [default: 1MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_value: Option<u64>,
    /// Threads, across all processes, using the segment at once [default: 512]
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_clients: Option<u64>,
    /// Change-feed entries kept for the replicator [default: 65536]
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub feed_len: Option<u64>,
    /// When full, evict the entry closest to expiry instead of failing
    #[arg(long)]
    pub evict: bool,
    /// Mode 0660: share the segment with this user's group (default 0600)
    #[arg(long)]
    pub group: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Segment name: 1-200 characters from [A-Za-z0-9._-]
    pub name: String,
    #[command(flatten)]
    pub shape: ShapeArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    pub name: String,
    /// Print one JSON object (fields documented in replicator/README.md)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    pub name: String,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub name: String,
    pub key: OsString,
    /// Write the value's exact bytes to stdout (no escaping, no newline)
    #[arg(long, conflicts_with = "meta")]
    pub raw: bool,
    /// Print the entry's version, length, TTL, sliding window and lock instead of its value
    #[arg(long)]
    pub meta: bool,
    /// KEY is in the escaped form `keys` prints (\\, \n, \t, \r, \0, \xHH, \u{HHHH})
    #[arg(short, long)]
    pub escaped: bool,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub name: String,
    pub key: OsString,
    /// The value (or use --file or --stdin)
    #[arg(required_unless_present_any = ["file", "stdin"], conflicts_with_all = ["file", "stdin"])]
    pub value: Option<OsString>,
    /// Read the value from a file
    #[arg(long, value_name = "PATH", conflicts_with = "stdin")]
    pub file: Option<PathBuf>,
    /// Read the value from standard input
    #[arg(long)]
    pub stdin: bool,
    /// Expire the entry this long after the write (500ms, 30s, 20m, 1h; at most 49d); default: never
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
    /// Sliding expiry: every read pushes the deadline out by --ttl again
    #[arg(long, requires = "ttl")]
    pub sliding: bool,
    /// KEY and VALUE are in the escaped form `keys` and `get` print
    #[arg(short, long)]
    pub escaped: bool,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    pub name: String,
    pub key: OsString,
    /// KEY is in the escaped form `keys` prints
    #[arg(short, long)]
    pub escaped: bool,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    pub name: String,
    /// Only keys that start with these bytes
    #[arg(long, value_name = "P")]
    pub prefix: Option<OsString>,
    /// Print at most N keys (the first N found; the scan stops there)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub limit: Option<u64>,
    /// PREFIX is in the escaped form `keys` prints
    #[arg(short, long)]
    pub escaped: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    pub name: String,
    /// The snapshot file to write (replaced atomically; mode 0600), or `-` for standard output
    pub file: PathBuf,
    /// No progress bar, no summary
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    pub name: String,
    /// A snapshot file written by `gardenstate dump`, or `-` for standard input
    pub file: PathBuf,
    /// Create the segment; shape options not given are taken from the dumped segment
    #[arg(long)]
    pub create: bool,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Restore into a segment that holds entries: keys already present keep their value
    #[arg(long, conflicts_with = "create")]
    pub merge: bool,
    /// No progress bar, no summary
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    pub name: String,
    /// Do not ask for confirmation (required when stdin is not a terminal)
    #[arg(long)]
    pub yes: bool,
    /// Destroy it even while processes are attached (their next operation then fails with a
    /// "destroyed" error; reopening creates or attaches the segment then under the name)
    #[arg(long)]
    pub force: bool,
}

/// What every replication daemon (primary, standby, witness) is configured with: flags, or a
/// TOML file (`--config`) whose keys are the flags' long names with `_` for `-`; a flag
/// given on the command line wins over the file. See `config`.
#[derive(Debug, Args, Clone, Default)]
pub struct DaemonArgs {
    /// TOML file with any of these settings (flags override it)
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// File holding the pre-shared key (at least 16 bytes; mode 0600 or stricter)
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// This node's address (HOST:PORT): TCP for standbys when it is primary, and UDP for heartbeats
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The witness's heartbeat address (UDP, HOST:PORT): enables automatic failover and self-fencing
    #[arg(long, value_name = "ADDR")]
    pub witness: Option<String>,
    /// Heartbeat period [default: 50ms]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Standby: promote itself when it and the witness have both lost the primary this long [default: 600ms]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub failover_after: Option<Duration>,
    /// Primary: refuse writes once neither the standby nor the witness was heard this long [default: 400ms]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub fence_after: Option<Duration>,
    /// A primary that finds a newer primary waits this long, seeing it steadily, before following it [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub rejoin_after: Option<Duration>,
    /// Serve Prometheus metrics on HOST:PORT (GET /metrics)
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Run PROGRAM (no shell) with arguments ROLE EPOCH SEGMENT on every role change, e.g. to move a VIP
    #[arg(long, value_name = "PROGRAM")]
    pub notify: Option<PathBuf>,
    /// Primary: the last frames kept so a reconnecting standby resumes without a snapshot [default: 64MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub backlog: Option<u64>,
    /// Log lines as text or as one JSON object each (ts, level, msg) [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// The least serious lines logged: error, warn, info or debug [default: info]
    #[arg(long, value_name = "LEVEL", value_parser = crate::operations::log::Level::NAMES)]
    pub log_level: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS 1.3 on the replication link (TCP): all three, or none for plaintext. Both ends of a
/// link must agree. See `transport`.
#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// This node's certificate chain (PEM), signed by the --tls-ca; it must name the host peers connect to
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM; mode 0600 or stricter)
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) that every peer's certificate must chain to
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Warn (log, and the metric) when this node's certificate expires within N days [default: 14]
    #[arg(long, value_name = "N")]
    pub tls_warn_days: Option<u32>,
}

#[derive(Debug, Args)]
pub struct PrimaryArgs {
    /// The segment to replicate (it must exist and be writable)
    #[arg(long, value_name = "NAME")]
    pub segment: Option<String>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct StandbyArgs {
    /// The local replica segment (created with the primary's shape if missing)
    #[arg(long, value_name = "NAME")]
    pub segment: Option<String>,
    /// The primary's address (HOST:PORT)
    #[arg(long, value_name = "ADDR")]
    pub connect: Option<String>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct WitnessArgs {
    /// The data nodes' addresses (HOST:PORT, UDP); repeat the flag (or list them in the file)
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<String>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// The primary daemon's address (HOST:PORT)
    #[arg(long, value_name = "ADDR")]
    pub primary: String,
    /// File holding the pre-shared key
    #[arg(long, value_name = "PATH")]
    pub key_file: PathBuf,
    // TLS, when the daemons use it: this command's certificate, key and CA.
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The standby's segment
    #[arg(long, value_name = "NAME")]
    pub segment: String,
    /// Promote even a writable segment (raising its epoch) or an incomplete replica
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of simulated traffic before the primary's host "dies"
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Worker processes serving traffic on the primary
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub workers: u32,
    /// Requests per second per worker; 0 = as fast as the machine goes
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub rate: u64,
}

/// The hidden `demo-worker` subcommand: how `demo` starts its workers.
#[derive(Debug, Args)]
pub struct DemoWorkerArgs {
    /// The primary's segment
    #[arg(long, value_name = "NAME")]
    pub segment: String,
    /// This worker's number (1-based; seeds its random numbers and names its orders)
    #[arg(long, value_name = "N")]
    pub worker: u32,
    /// Requests per second; 0 = unpaced
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rate: u64,
    /// Also place orders that wait for the standby (`wait_replicated`)
    #[arg(long)]
    pub critical: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
