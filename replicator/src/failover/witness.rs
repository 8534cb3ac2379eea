//! `gardenstate witness`: the third vote for automatic failover, meant for a third host.
//!
//! It holds no data. It exchanges heartbeats with the data nodes (`heartbeat`), and in every
//! datagram tells them how long ago it last heard a writable primary and a standby, and the
//! highest epoch among the writable primaries it hears. A standby promotes itself only when
//! the witness, too, has lost the primary (F1 in `node`); a primary that can reach neither the
//! standby nor the witness fences itself (F2); a primary that learns from the witness of a
//! newer primary fences itself at once (F3).
//!
//! Epoch grants (W1): a standby that may promote itself by F1 first *claims* the next epoch
//! (the claim flag in its datagrams) and promotes only once the witness's datagrams grant it
//! an epoch by its node id. The witness grants one claimant at a time, each grant an epoch
//! above every epoch it has heard or granted, so two standbys of one primary (a replacement
//! started while the old one still runs) can never both promote, let alone to one epoch. A
//! grant lapses only when its holder has been silent for `failover_after` (a holder that
//! promoted and was then cut off has fenced itself by then, F2) or is heard as the writable
//! primary of that epoch (used). A witness that just started grants nothing for
//! `failover_after` (a node promoted by a grant it made before a restart has fenced itself
//! by then, or it is heard and its epoch counted).
//!
//! One witness per cluster (W2): the witness watches the histories of the writable primaries
//! and synced standbys it hears; more than one means it is shared by two clusters, whose
//! primaries would hide each other's loss and block failover. It says so in an error line
//! (once a minute while it lasts) rather than letting a failover silently never happen.

use crate::commands::cli::WitnessArgs;
use crate::commands::exit::{CmdResult, Failure};
use crate::failover::heartbeat::{Announce, Beacon, FRESH, NodeRole, Peer, age_ms};
use crate::operations::config::{DaemonKind, RoleFlags, Source};
use crate::operations::log;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

pub fn run(a: WitnessArgs) -> CmdResult {
    let role = RoleFlags { peers: a.peers, ..RoleFlags::default() };
    let source = Source { kind: DaemonKind::Witness, role, args: a.daemon };
    let cfg = source.resolve().map_err(Failure::error)?;
    crate::failover::node::watch_reloads(source, cfg.clone(), None)?;
    let listen = cfg.listen.clone().expect("config checked");
    let announce = Announce {
        role: NodeRole::Witness,
        fenced: true,
        synced: false,
        claim: false,
        epoch: 0,
        history: 0,
        pos: 0,
    };
    let beacon = Beacon::start(&listen, &cfg.peers, cfg.key.clone(), cfg.heartbeat, announce)
        .map_err(Failure::error)?;
    log::info(&format!("witness: heartbeats on {} (UDP), peers {:?}", beacon.local_addr(), cfg.peers));
    // Before this process, a previous witness may have echoed the primary's heartbeats (the
    // primary's lease rests on those): "no writable primary heard" counts from our start, never
    // from "never", or a restarted witness would let the standby promote before that lease
    // ends (config.rs, "Why fencing comes first"); and it grants no epoch before
    // failover_after (W1).
    let started = Instant::now();
    let mut was = (false, false);
    let mut grants = Grants::default();
    let mut shared_warned: Option<Instant> = None;
    loop {
        std::thread::sleep(cfg.heartbeat);
        let mut primary: Option<Instant> = None;
        let mut standby: Option<Instant> = None;
        let mut epoch = 0;
        let mut histories = BTreeSet::new();
        let peers = beacon.peers();
        for p in &peers {
            // When a writable primary's datagram arrived (not the echo proof): a late datagram
            // restarts the clock late, so the primary's write lease, which rests on datagrams
            // we echoed, always ends before this clock reaches failover_after (config.rs, "Why
            // fencing comes first").
            if let Some((_, at)) = p.heard.filter(|(d, _)| d.announce.writable()) {
                primary = primary.max(Some(at));
            }
            let Some((d, at)) = p.fresh else { continue };
            let fresh = at.elapsed() <= FRESH;
            grants.heard(d.announce.epoch);
            match d.announce.role {
                NodeRole::Primary if !d.announce.fenced && fresh => {
                    epoch = epoch.max(d.announce.epoch);
                    histories.insert(d.announce.history);
                }
                NodeRole::Standby => {
                    standby = standby.max(Some(at));
                    if fresh && d.announce.synced {
                        histories.insert(d.announce.history);
                    }
                }
                _ => {}
            }
        }
        // Whether the primary is lost is the claimant's judgement (F1: it claims only when this
        // witness's datagrams say no writable primary for its failover_after, and promotes only
        // on a grant that arrives in such a datagram), so a witness configured with other
        // timings never delays a failover.
        let grant = grants.round(&peers, started.elapsed() >= cfg.failover_after, cfg.failover_after);
        beacon.set_view(age_ms(primary.or(Some(started))), age_ms(standby));
        beacon.announce(match grant {
            Some((node, granted)) => Announce { epoch, claim: true, history: granted, pos: node, ..announce },
            None => Announce { epoch, ..announce },
        });
        let now =
            (primary.is_some_and(|t| t.elapsed() <= FRESH), standby.is_some_and(|t| t.elapsed() <= FRESH));
        if now != was {
            let word = |b: bool| if b { "heard" } else { "lost" };
            log::info(&format!("witness: writable primary {}, standby {}", word(now.0), word(now.1)));
            was = now;
        }
        histories.remove(&0);
        if histories.len() > 1 && shared_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            shared_warned = Some(Instant::now());
            let list: Vec<String> = histories.iter().map(|h| format!("{h:016x}")).collect();
            log::error(&format!(
                "witness: nodes of {} histories ({}) use this witness: it serves one cluster only (their \
                 primaries would hide each other's loss and block failover); give each cluster its own witness",
                histories.len(),
                list.join(", ")
            ));
        }
    }
}

/// W1: the epoch grants.
#[derive(Debug, Default)]
pub struct Grants {
    /// The highest epoch heard from any node or granted.
    highest: u64,
    /// The current grant: the holder's node id and the epoch.
    current: Option<(u64, u64)>,
}

impl Grants {
    /// Counts an epoch a node announced.
    pub fn heard(&mut self, epoch: u64) {
        self.highest = self.highest.max(epoch);
    }

    /// One round: keeps, ends or makes the grant; returns the grant to announce. `may_grant`:
    /// the witness has run `failover_after` (a restarted witness grants nothing before).
    pub fn round(&mut self, peers: &[Peer], may_grant: bool, failover_after: Duration) -> Option<(u64, u64)> {
        let holder = |node: u64| peers.iter().filter_map(|p| p.fresh).find(|(d, _)| d.node == node);
        if let Some((node, epoch)) = self.current {
            match holder(node) {
                // Used: it serves (or served) as the primary of the granted epoch or above.
                Some((d, _)) if d.announce.role == NodeRole::Primary && d.announce.epoch >= epoch => {
                    log::info(&format!("witness: node {node:016x} took epoch {epoch} as granted"));
                }
                Some((_, at)) if at.elapsed() < failover_after => return self.current,
                _ => log::warn(&format!(
                    "witness: the grant of epoch {epoch} to node {node:016x} lapsed (silent for {failover_after:?})"
                )),
            }
            self.current = None;
        }
        if !may_grant {
            return None;
        }
        let claimant = peers
            .iter()
            .filter_map(|p| p.fresh)
            // Heard within failover_after: a holder whose grant lapsed for its silence is no
            // claimant, however fresh its last datagram still counts elsewhere.
            .filter(|(d, at)| {
                d.announce.role == NodeRole::Standby
                    && d.announce.claim
                    && at.elapsed() < FRESH.min(failover_after)
            })
            .max_by_key(|(d, at)| (d.announce.pos, *at));
        let (d, _) = claimant?;
        let epoch = self.highest + 1;
        self.highest = epoch;
        self.current = Some((d.node, epoch));
        log::warn(&format!(
            "witness: granted epoch {epoch} to the standby node {:016x} (it claims it: no primary for failover_after); \
             no other node gets this epoch",
            d.node
        ));
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::heartbeat::Datagram;

    fn peer(node: u64, role: NodeRole, claim: bool, epoch: u64, pos: u64, heard: Instant) -> Peer {
        let announce = Announce { role, fenced: false, synced: true, claim, epoch, history: 9, pos };
        let d = Datagram {
            announce,
            from: [1; 32],
            to: [2; 32],
            node,
            seq: 1,
            echo_seq: 0,
            primary_age_ms: 0,
            standby_age_ms: 0,
            listen_port: 0,
        };
        Peer { addr: ([127, 0, 0, 1], node as u16).into(), fresh: Some((d, heard)), heard: Some((d, heard)) }
    }

    #[test]
    fn each_epoch_is_granted_once_to_one_claimant() {
        let after = Duration::from_millis(200);
        let now = Instant::now();
        let mut g = Grants::default();
        g.heard(3);
        // Two claimants: the one with more applied gets epoch 4; nobody else.
        let claimants =
            [peer(1, NodeRole::Standby, true, 3, 10, now), peer(2, NodeRole::Standby, true, 3, 20, now)];
        assert_eq!(g.round(&claimants, false, after), None, "not before failover_after");
        assert_eq!(g.round(&claimants, true, after), Some((2, 4)));
        assert_eq!(
            g.round(&claimants, true, after),
            Some((2, 4)),
            "the grant stands while its holder is heard"
        );
        // The holder goes silent for failover_after: the grant lapses, the next is a new epoch.
        let old = now.checked_sub(after * 2).unwrap();
        let silent =
            [peer(1, NodeRole::Standby, true, 3, 10, now), peer(2, NodeRole::Standby, true, 3, 20, old)];
        assert_eq!(g.round(&silent, true, after), Some((1, 5)));
        // Used: the holder serves as the primary of epoch 5; nothing is granted to a stale claim.
        let used = [peer(1, NodeRole::Primary, false, 5, 10, now)];
        assert_eq!(g.round(&used, true, after), None);
        let again = [peer(2, NodeRole::Standby, true, 3, 20, now)];
        assert_eq!(g.round(&again, true, after), Some((2, 6)), "never epoch 5 twice");
    }
}
