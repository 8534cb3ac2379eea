//! Running the daemons: `config` their flags and TOML file, `log` their log, `status` their
//! live status (published to a status file that `stats` reads), `metrics` their Prometheus
//! endpoint, `admission` the bounds on connections that have proved nothing yet.

pub mod admission;
pub mod config;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod status;
