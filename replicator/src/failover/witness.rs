//! `gardenstate witness`: the third vote for automatic failover, meant for a third host.
//!
//! It holds no data. It exchanges heartbeats with the data nodes (`heartbeat`), and in every
//! datagram tells them how long ago it last heard a writable primary and a standby, and the
//! highest epoch among the writable primaries it hears. A standby promotes itself only when
//! the witness, too, has lost the primary (F1 in `node`); a primary that can reach neither the
//! standby nor the witness fences itself (F2); a primary that learns from the witness of a
//! newer primary fences itself at once (F3).

use crate::commands::cli::WitnessArgs;
use crate::commands::exit::{CmdResult, Failure};
use crate::failover::heartbeat::{Announce, Beacon, FRESH, NodeRole, age_ms};
use crate::operations::config::{self, DaemonKind, RoleFlags};
use crate::operations::log;
use std::time::Instant;

pub fn run(a: WitnessArgs) -> CmdResult {
    let role = RoleFlags { peers: a.peers, ..RoleFlags::default() };
    let cfg = config::resolve(DaemonKind::Witness, role, a.daemon).map_err(Failure::error)?;
    log::set_json(cfg.log_json);
    crate::failover::node::watch_reloads(None, None, 0)?;
    let listen = cfg.listen.clone().expect("config checked");
    let announce =
        Announce { role: NodeRole::Witness, fenced: true, synced: false, epoch: 0, history: 0, pos: 0 };
    let beacon = Beacon::start(&listen, &cfg.peers, cfg.key.clone(), cfg.heartbeat, announce)
        .map_err(Failure::error)?;
    log::info(&format!("witness: heartbeats on {} (UDP), peers {:?}", beacon.local_addr(), cfg.peers));
    let mut was = (false, false);
    // Before this process, a previous witness may have echoed the primary's heartbeats (the
    // primary's lease rests on those): "no writable primary heard" counts from our start, never
    // from "never", or a restarted witness would let the standby promote before that lease
    // ends (config.rs, "Why fencing comes first").
    let started = Instant::now();
    loop {
        std::thread::sleep(cfg.heartbeat);
        let mut primary: Option<Instant> = None;
        let mut standby: Option<Instant> = None;
        let mut epoch = 0;
        for p in beacon.peers() {
            // When a writable primary's datagram arrived (not the echo proof): a late datagram
            // restarts the clock late, so the primary's write lease, which rests on datagrams
            // we echoed, always ends before this clock reaches failover_after (config.rs, "Why
            // fencing comes first").
            if let Some((_, at)) = p.heard.filter(|(d, _)| d.announce.writable()) {
                primary = primary.max(Some(at));
            }
            let Some((d, at)) = p.fresh else { continue };
            match d.announce.role {
                NodeRole::Primary if !d.announce.fenced && at.elapsed() <= FRESH => {
                    epoch = epoch.max(d.announce.epoch);
                }
                NodeRole::Standby => standby = standby.max(Some(at)),
                _ => {}
            }
        }
        beacon.set_view(age_ms(primary.or(Some(started))), age_ms(standby));
        beacon.announce(Announce { epoch, ..announce });
        let now =
            (primary.is_some_and(|t| t.elapsed() <= FRESH), standby.is_some_and(|t| t.elapsed() <= FRESH));
        if now != was {
            let word = |b: bool| if b { "heard" } else { "lost" };
            log::info(&format!("witness: writable primary {}, standby {}", word(now.0), word(now.1)));
            was = now;
        }
    }
}
