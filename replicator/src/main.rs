//! `gardenstate`: parses the command line and dispatches to the command's module.
//! Exit codes are in `commands/exit.rs` (0 ok, 1 key not found, 2 error, 3 check found problems).

#![forbid(unsafe_code)]

use clap::Parser;
use gardenstate_replicator::commands::cli::{Cli, Command};
use gardenstate_replicator::commands::{dump_cmds, entry_cmds, segment_cmds};
use gardenstate_replicator::demo;
use gardenstate_replicator::failover::{switchover, witness};
use gardenstate_replicator::replication::{primary, standby};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.command.name();
    let result = match cli.command {
        Command::Create(a) => segment_cmds::create(a),
        Command::Stats(a) => segment_cmds::stats(a),
        Command::Check(a) => segment_cmds::check(a),
        Command::Destroy(a) => segment_cmds::destroy(a),
        Command::Get(a) => entry_cmds::get(a),
        Command::Set(a) => entry_cmds::set(a),
        Command::Del(a) => entry_cmds::del(a),
        Command::Keys(a) => entry_cmds::keys(a),
        Command::Dump(a) => dump_cmds::dump(a),
        Command::Restore(a) => dump_cmds::restore(a),
        Command::Primary(a) => primary::run(a),
        Command::Standby(a) => standby::run(a),
        Command::Promote(a) => segment_cmds::promote(a),
        Command::Witness(a) => witness::run(a),
        Command::Switchover(a) => switchover::run(a),
        Command::Demo(a) => demo::run(a),
        Command::DemoWorker(a) => demo::worker::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("gardenstate {name}: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
