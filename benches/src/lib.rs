//! The gardenstate benchmark harness: gardenstate against the memory floor and its peers
//! (LMDB, Redis, memcached, dashmap), all measured in one run on one machine, reported as
//! ratios (DESIGN.md section 6). The entry point is the `harness` binary:
//!
//! ```sh
//! cargo run --release -p gardenstate-benches --bin harness -- [--quick|--smoke] [--out DIR] [--no-install]
//! ```
//!
//! One module per thing measured (`floor`, `gardenstate`, `lmdb`, `redis`, `memcached`,
//! `dashmap`, `replication`: the replicator's primary and standby daemons), `workload` for what they share (keys, values, clock, percentiles), `servers`
//! for starting peer servers and measuring them in the same shapes, `report` for the table, JSON and goals, `svg` for the plots,
//! `curves` for `--curves` (how the cost grows with sessions, value size, fill, workers and churn).

pub mod curves;
pub mod dashmap;
pub mod floor;
pub mod gardenstate;
pub mod lmdb;
pub mod memcached;
pub mod redis;
pub mod replication;
pub mod report;
pub mod servers;
pub mod svg;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

/// How much to measure: `--smoke` (a test of the harness), `--quick` (< 1 min), full (< 15 min).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub mode: &'static str,
    /// Sessions loaded for 64 B and 1 KiB values.
    pub sessions: u64,
    /// Sessions loaded for 16 KiB values (1M would need 18 GiB).
    pub sessions_16k: u64,
    /// Operations per in-process latency loop.
    pub ops: u64,
    /// Operations per unpipelined loopback loop (Redis, memcached).
    pub net_ops: u64,
    /// Length of each throughput window (2-process, 2-thread and pipelined runs).
    pub window: Duration,
    /// May install missing servers with apt-get (when root).
    pub install: bool,
    pub out: PathBuf,
}

impl Config {
    pub fn full() -> Config {
        Config {
            mode: "full",
            sessions: 1_000_000,
            sessions_16k: 100_000,
            ops: 2_000_000,
            net_ops: 50_000,
            window: Duration::from_secs(3),
            install: true,
            out: PathBuf::from("target/bench-report"),
        }
    }
    pub fn quick() -> Config {
        Config {
            mode: "quick",
            sessions: 100_000,
            sessions_16k: 20_000,
            ops: 300_000,
            net_ops: 5_000,
            window: Duration::from_millis(800),
            ..Config::full()
        }
    }
    pub fn smoke() -> Config {
        Config {
            mode: "smoke",
            sessions: 10_000,
            sessions_16k: 2_000,
            ops: 20_000,
            net_ops: 300,
            window: Duration::from_millis(150),
            ..Config::full()
        }
    }
}
