//! A data node's life: the roles it moves through, and the rules that move it.
//!
//! A node starts as a primary (`gardenstate primary`) or a standby (`gardenstate standby`) and
//! keeps one heartbeat socket (`heartbeat::Beacon`, UDP on its `--listen` address) for its
//! whole life. Then:
//!
//! ```text
//!            promotion (automatic, planned switchover, or `gardenstate promote`)
//!   standby ----------------------------------------------------------------> primary
//!      ^                                                                        |
//!      |   a newer primary (higher epoch) seen steadily for rejoin_after        |
//!      +------------ (at once after a planned switchover) ----------------------+
//! ```
//!
//! Rules (with a witness configured; `config` has the timing rule that makes them safe):
//! - F1. A standby promotes itself only when (a) its replica is complete (it finished a
//!   snapshot and follows the feed: history id non-zero), (b) no TCP frame or heartbeat of
//!   the primary has *arrived* for `failover_after`, and (c) a fresh datagram from the
//!   witness says no heartbeat of a writable primary has arrived there for `failover_after`
//!   either; then (d) it claims the next epoch from the witness, and promotes only to the
//!   epoch the witness grants to it by its node id (W1 in `witness`: each epoch is granted
//!   once, so two standbys can never both promote).
//! - F2. A primary fences itself (writes fail with a read-only error) when it has had no proof
//!   of life from the standby or the witness for `fence_after`, which is shorter than the
//!   standby's wait by at least three heartbeats: when F1 fires, the old primary is
//!   already fenced. It starts fenced, and unfences only on a fresh datagram from a standby
//!   that is still a standby of an epoch not above its own, while that standby acknowledges
//!   its replication stream (a datagram sent just before a promotion can arrive after it; a
//!   promoted standby no longer follows us): a primary never resumes writes
//!   because it hears the witness alone, which could be just after a promotion it has not heard
//!   of yet. After it fenced itself (cut off, or superseded) it unfences only after a warm-up:
//!   that standby answering without a gap of three heartbeats for `rejoin_after`, so a
//!   flapping link does not flap write availability. While writable it keeps the segment's
//!   write lease at `fence_after` past its last proof of a peer (when it sent a heartbeat the
//!   peer echoed, which restarted the peer's wait in (b) or (c)), so if the daemon itself
//!   dies (or is starved of CPU) the workers' writes stop by the same deadline, before any
//!   promotion: `config`, "Why fencing comes first".
//! - F3. A primary that sees a primary of a higher epoch (directly, writable or fenced, or a
//!   writable one through the witness's announced epoch) fences itself at once; one of its
//!   own history seen directly makes it remove the writes no standby acknowledged (the
//!   abandoned history: local readers must not see it); once it has seen that primary
//!   steadily for `rejoin_after` (no flapping), it follows it as a standby, and the snapshot
//!   replaces its content. A fenced newer primary counts too: it fenced because it lost its
//!   peers, and it unfences only when a standby follows it, so two fenced primaries each
//!   waiting for the other would take no writes ever again (seen when the new primary's host
//!   was cut right after a failover). Epochs only grow, so a node with an older epoch never overwrites a newer one
//!   (the standby side refuses a primary of a lower epoch).
//!
//! Without a witness there is no automatic promotion and no fencing (F3 still applies): the
//! operator promotes by hand, or runs a planned switchover.
//!
//! Reloading ([`watch_reloads`]): SIGHUP no longer kills a daemon (its default action). A
//! `reload` thread looks every [`RELOAD_POLL`] for a SIGHUP or a changed modification time of
//! the TLS files, re-reads the certificate, key and CA with every start-up check, and logs
//! what it reloaded or why it kept the previous ones. The next handshakes use the new files;
//! open links keep the certificates they were made with. A SIGHUP also reads the config file
//! again (with the command line the daemon started with) and applies the log level, the log
//! format and `tls_warn_days`; every other setting takes effect at a restart, and a line
//! names each changed one (`config`, Reloading, says why the timings must not change live).

use crate::commands::attach::attach;
use crate::commands::exit::{CmdResult, Failure};
use crate::failover::heartbeat::{Announce, Beacon, FRESH, NodeRole};
use crate::operations::config::{self, Config, DaemonKind, Source};
use crate::operations::log;
use crate::operations::notify::Notifier;
use crate::operations::status::{self, Status};
use crate::replication::transport::Tls;
use crate::{operations::metrics, replication::primary, replication::standby};
use gardenstate::{Store, WriteMode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How often the reload thread looks for a SIGHUP and for changed TLS files.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// Applies the settings `watch_reloads` may change at run time that live outside it.
fn apply_logging(cfg: &Config) {
    log::set_json(cfg.log_json);
    log::set_level(cfg.log_level);
}

/// Applies `cfg`'s logging settings, makes SIGHUP reload instead of kill, and watches the TLS
/// files (module doc, Reloading). A SIGHUP also resolves the settings again from `source`
/// and applies those safe to change at run time (`config`, Reloading). With TLS it also
/// publishes when our certificate expires to `status` (the metric), and warns once a day (and
/// after each reload) while that is less than `tls_warn_days` away.
pub fn watch_reloads(source: Source, mut cfg: Config, status: Option<Arc<Status>>) -> Result<(), Failure> {
    apply_logging(&cfg);
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()).map_err(Failure::error)?;
    let stamps = |t: &Tls| -> Vec<Option<SystemTime>> {
        t.files().iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
    };
    let tls = cfg.tls.clone();
    let mut seen = tls.as_ref().map(stamps);
    let mut warned: Option<Instant> = None;
    let watch = move || {
        loop {
            if let Some(t) = &tls {
                expiry_check(t, status.as_deref(), cfg.tls_warn_days, &mut warned);
            }
            std::thread::sleep(RELOAD_POLL);
            let hupped = hup.swap(false, Ordering::Relaxed);
            let now = tls.as_ref().map(stamps);
            if !hupped && now == seen {
                continue;
            }
            seen = now;
            warned = None;
            if hupped {
                reload_settings(&source, &mut cfg);
            }
            let cause = if hupped { "SIGHUP" } else { "the TLS files changed" };
            if let Some(t) = &tls {
                match t.reload() {
                    Ok(()) => log::info(&format!(
                        "{cause}: reloaded the TLS {t:?}, its key and the CA: the next connections use \
                         them, open links keep theirs"
                    )),
                    Err(e) => log::warn(&format!(
                        "{cause}: TLS reload failed, still using the previous certificates: {e}"
                    )),
                }
            }
        }
    };
    std::thread::Builder::new().name("reload".into()).spawn(watch).map_err(Failure::error)?;
    Ok(())
}

/// On SIGHUP: resolves the settings again, applies those safe to change at run time into
/// `cfg` and logs what changed, and names each changed one that needs a restart (leaving it
/// as it runs). Settings that no longer resolve are logged and `cfg` kept.
fn reload_settings(source: &Source, cfg: &mut Config) {
    let new = match source.resolve() {
        Ok(new) => new,
        Err(e) => {
            log::error(&format!("SIGHUP: settings not reloaded, still running with the previous ones: {e}"));
            return;
        }
    };
    let changes = config::changes(cfg, &new);
    // The line is written at the more detailed of the old and new levels.
    let louder = new.log_level > cfg.log_level;
    cfg.log_level = new.log_level;
    cfg.log_json = new.log_json;
    cfg.tls_warn_days = new.tls_warn_days;
    if louder {
        apply_logging(cfg);
    }
    log::info(&if changes.applied.is_empty() {
        "SIGHUP: no setting changed that applies at run time (log_level, log_format, tls_warn_days); \
         the others take effect at a restart"
            .to_string()
    } else {
        format!("SIGHUP: applied {}; the other settings take effect at a restart", changes.applied.join(", "))
    });
    if !louder {
        apply_logging(cfg);
    }
    for name in &changes.need_restart {
        log::warn(&format!(
            "SIGHUP: {name} changed: it needs a restart to take effect, still running with the previous value"
        ));
    }
    log::debug(&format!("settings now: {cfg:?}"));
}

/// What a role returns: the role to take next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Primary,
    /// Follow the primary at this address; `planned`: after a switchover.
    Follow {
        addr: String,
        planned: bool,
    },
    Exit,
}

/// The node: its settings and its heartbeat socket.
pub struct Node {
    pub cfg: Config,
    pub beacon: Arc<Beacon>,
    pub started: Instant,
    /// Published to the status file (`gardenstate stats`) and `/metrics`.
    pub status: Arc<Status>,
}

impl Node {
    /// Whether automatic failover and fencing are on.
    pub fn has_witness(&self) -> bool {
        self.cfg.witness.is_some()
    }
}

/// Publishes when `t`'s certificate expires, and warns if that is within `warn_days` (at
/// most once a day, `warned` being the last warning).
fn expiry_check(t: &Tls, status: Option<&Status>, warn_days: u32, warned: &mut Option<Instant>) {
    const DAY_MS: f64 = 86_400_000.0;
    let expires = t.expires_unix_ms();
    if let Some(s) = status {
        s.set_cert_expiry(Some(expires));
    }
    let days = (expires as f64 - status::unix_ms_now() as f64) / DAY_MS;
    if days > warn_days as f64 || warned.is_some_and(|at| at.elapsed() < Duration::from_secs(86_400)) {
        return;
    }
    *warned = Some(Instant::now());
    let at = log::timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(expires));
    log::warn(&if days <= 0.0 {
        format!(
            "the TLS {t:?} expired at {at}: peers refuse it; renew it and replace the files (they are \
             reloaded when they change, or on SIGHUP)"
        )
    } else {
        format!(
            "the TLS {t:?} expires in {days:.1} days (at {at}; warning at {warn_days} days, \
             --tls-warn-days): renew it and replace the files (they are reloaded when they change, \
             or on SIGHUP)"
        )
    });
}

/// Runs a data node from its first role until it exits.
pub fn run(source: Source, cfg: Config) -> CmdResult {
    let kind = source.kind;
    let status = Status::new(&cfg.segment);
    watch_reloads(source, cfg.clone(), Some(status.clone()))?;
    let listen = cfg.listen.clone().unwrap_or_else(|| "0.0.0.0:0".into());
    let mut targets: Vec<String> = cfg.witness.iter().cloned().collect();
    targets.extend(cfg.connect.iter().cloned());
    let initial = match kind {
        DaemonKind::Standby => NodeRole::Standby,
        _ => NodeRole::Primary,
    };
    let announce =
        Announce { role: initial, fenced: false, synced: false, claim: false, epoch: 0, history: 0, pos: 0 };
    let beacon =
        Beacon::start(&listen, &targets, cfg.key.clone(), cfg.heartbeat, announce).map_err(Failure::error)?;
    log::info(&format!(
        "heartbeats on {} (UDP) every {:?}{}",
        beacon.local_addr(),
        cfg.heartbeat,
        match &cfg.witness {
            Some(w) => format!(
                ", witness {w}: automatic failover after {:?}, fencing after {:?}",
                cfg.failover_after, cfg.fence_after
            ),
            None => ", no witness: no automatic failover".into(),
        }
    ));
    log::info(&match &cfg.tls {
        Some(t) => {
            format!("replication link: TLS 1.3 with {t:?}, peers' certificates checked against the CA")
        }
        None => "replication link: plaintext TCP (no tls_cert/tls_key/tls_ca)".into(),
    });
    // No role until the role code finds the segment's (a cold primary with a witness starts
    // fenced): the hooks hear the first role the daemon really has, then every change.
    if let Some(program) = &cfg.notify {
        status.set_notifier(Notifier::start(program, &cfg.segment).map_err(Failure::error)?);
        log::info(&format!("notify hook {} runs on every role change", program.display()));
    }
    let _status_file = status::publish_forever(status.clone()).map_err(Failure::error)?;
    if let Some(addr) = &cfg.metrics {
        let store = attach(&cfg.segment).ok().map(Arc::new);
        let bound = metrics::serve(addr, status.clone(), store).map_err(Failure::error)?;
        log::info(&format!("metrics on http://{bound}/metrics"));
    }
    let node = Node { cfg, beacon, started: Instant::now(), status };
    let mut next = match kind {
        DaemonKind::Standby => {
            Next::Follow { addr: node.cfg.connect.clone().expect("config checked"), planned: false }
        }
        _ => Next::Primary,
    };
    let mut cold = true;
    loop {
        next = match next {
            Next::Primary => primary::serve(&node, cold)?,
            Next::Follow { addr, planned } => standby::follow(&node, &addr, planned)?,
            Next::Exit => return Ok(()),
        };
        cold = false;
        log::info(&format!("role change: {next:?}"));
    }
}

/// Attaches the node's segment.
pub fn segment(node: &Node) -> Result<Store, Failure> {
    attach(&node.cfg.segment)
}

/// The primary's guard: F2 (fencing) and F3 (demotion), evaluated once per heartbeat.
pub struct Guard {
    /// We fenced the segment (so we may unfence it); an operator's fence is left alone.
    fenced_by_me: bool,
    /// Since when a newer primary has been seen without a gap, and where.
    newer_since: Option<(Instant, String)>,
    /// When the guard started: the lease's base until a peer proves itself (a just-promoted
    /// node, whose lease starts at `fence_after` from here).
    since: Instant,
    /// The write lease was found lapsed (logged once, until it is renewed or we fence).
    lapsed: bool,
    /// This guard fenced the segment because the primary was cut off or superseded: it is
    /// trusted again only after a warm-up of stable links (F2).
    warm_up: bool,
    /// Since when the standby has answered without a gap, during a warm-up.
    stable_since: Option<Instant>,
    /// The writes no standby acknowledged were removed (F3: a newer primary exists).
    abandoned: bool,
}

/// What the guard decided this round.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Stay,
    Follow(String),
}

impl Guard {
    /// A primary starting cold with a witness begins fenced (F2), until a standby answers;
    /// one that was just promoted (it holds the newest epoch) does not. Without a witness
    /// there is no write lease (a leftover one is cleared).
    pub fn start(node: &Node, store: &Store, cold: bool) -> Guard {
        let mut g = Guard {
            fenced_by_me: false,
            newer_since: None,
            since: Instant::now(),
            lapsed: false,
            warm_up: false,
            stable_since: None,
            abandoned: false,
        };
        store.set_write_lease(if node.has_witness() { Some(node.cfg.fence_after) } else { None });
        if cold && node.has_witness() && store.write_mode() == WriteMode::Writable {
            store.set_write_mode(WriteMode::Fenced);
            g.fenced_by_me = true;
            log::info(
                "fenced until the standby answers (a primary with a witness writes only while it is not cut off)",
            );
        }
        g
    }

    /// One round. `last_ack`: when the standby's TCP connection last proved it alive.
    pub fn round(&mut self, node: &Node, store: &Store, last_ack: Option<Instant>) -> Verdict {
        let epoch = store.epoch();
        let mode = store.write_mode();
        report_peers(node);
        // A lease that ran out while writable: this daemon's rounds were late (CPU starvation,
        // swap, a stop), and workers have been refused since. Said once; `stats` and `/metrics`
        // show the segment as `lease_lapsed`, not writable, meanwhile.
        let lapsed = crate::commands::render::lease_lapsed(store);
        if lapsed && !self.lapsed {
            log::warn(
                "the write lease lapsed: workers' writes are refused (ReadOnly) since it ran out; this \
                 daemon's rounds were late (CPU starvation, swap, or a stopped process?)",
            );
            node.status.event("write lease lapsed: writes refused");
        }
        self.lapsed = lapsed;
        node.status.set_epoch(epoch, store.history_id());
        node.status.set_role(if mode == WriteMode::Writable && !lapsed { "primary" } else { "fenced" });
        node.status.head_at(store.feed_head());
        node.beacon.announce(Announce {
            role: NodeRole::Primary,
            fenced: mode != WriteMode::Writable,
            synced: true,
            claim: false,
            epoch,
            history: store.history_id(),
            pos: store.feed_head(),
        });
        // F3: a primary of a higher epoch, writable or fenced (module doc), seen directly (its
        // address is where to go); the newest if there are several.
        let newer = node
            .beacon
            .peers()
            .into_iter()
            .filter_map(|p| p.alive_within(FRESH).map(|d| (p.serve_addr(), *d)))
            .filter(|(_, d)| d.announce.role == NodeRole::Primary && d.announce.epoch > epoch)
            .max_by_key(|(_, d)| d.announce.epoch);
        let witness = node.beacon.last_alive(NodeRole::Witness).filter(|(_, at)| at.elapsed() <= FRESH);
        let witness_knows_newer = witness.is_some_and(|(d, _)| d.announce.epoch > epoch);
        if newer.is_some() || witness_knows_newer {
            self.fence(node, store, "a primary with a newer epoch exists");
        }
        // Only a newer primary of this very history, seen directly, proves our unacknowledged
        // writes abandoned (the witness's epoch alone could come from another cluster sharing
        // it: fencing on it is safe, deleting is not).
        if !self.abandoned && newer.is_some_and(|(_, d)| d.announce.history == store.history_id()) {
            self.abandoned = true;
            abandon_unacknowledged(node, store);
        }
        match newer {
            Some((addr, d)) => {
                let addr = addr.to_string();
                let since = match &self.newer_since {
                    Some((t, a)) if *a == addr => *t,
                    _ => {
                        log::warn(&format!(
                            "the node at {addr} is a primary with epoch {} (ours is {epoch}): fenced; following it \
                             once it has been primary for {:?}",
                            d.announce.epoch, node.cfg.rejoin_after
                        ));
                        self.newer_since = Some((Instant::now(), addr.clone()));
                        Instant::now()
                    }
                };
                if since.elapsed() >= node.cfg.rejoin_after {
                    return Verdict::Follow(addr);
                }
                return Verdict::Stay;
            }
            None => self.newer_since = None,
        }
        if !node.has_witness() || witness_knows_newer {
            return Verdict::Stay;
        }
        // F2. The lease runs until `fence_after` past the last proof that a peer was alive, the
        // very deadline at which this guard fences: if the daemon dies, or its rounds are
        // starved, the workers' writes stop at the same time as if it had fenced. (Renewing
        // it `fence_after` from *now* would let it outlive that proof by up to twice
        // `fence_after`, past the standby's promotion.)
        //
        // A proof counts here only if the peer's own clock restarted at or after it (config.rs,
        // "Why fencing comes first"): the time we sent a datagram the standby echoed (the
        // standby's F1 clock restarts at every primary datagram it receives), or one the
        // witness echoed that said "writable primary" (the witness's clock counts only those).
        // Not the standby's TCP acknowledgements (`last_ack`, used only to unfence): one can
        // arrive long after the frame it answers, retransmitted after losses, while the
        // standby's wait has been running since that frame.
        let standby = node.beacon.last_alive(NodeRole::Standby);
        let since = node.beacon.writable_since();
        let witness_proof = witness.map(|(_, at)| at).filter(|at| since.is_some_and(|s| *at >= s));
        let heard =
            [standby.map(|(_, at)| at), witness_proof].into_iter().flatten().max().unwrap_or(self.since);
        let left = node.cfg.fence_after.saturating_sub(heard.elapsed());
        if left.is_zero() {
            self.fence(
                node,
                store,
                &format!("neither the standby nor the witness heard for {:?}", heard.elapsed()),
            );
        } else if mode == WriteMode::Writable {
            store.set_write_lease(Some(left));
            if lapsed {
                self.lapsed = false;
                log::info("write lease renewed: writes resumed (a peer was heard within fence_after)");
                node.status.event("write lease renewed");
            }
        } else if self.fenced_by_me {
            // Both a heartbeat saying "standby, of no newer epoch" and acknowledgements on a
            // live replication stream: a datagram sent just before the standby promoted itself
            // can arrive after, but a promoted standby no longer follows us over TCP.
            let steady_standby = standby.is_some_and(|(d, at)| {
                at.elapsed() <= FRESH && d.announce.role == NodeRole::Standby && d.announce.epoch <= epoch
            });
            let following = last_ack.is_some_and(|t| t.elapsed() <= FRESH);
            // The warm-up (after this guard fenced a cut-off primary): the standby must answer
            // without a gap of three heartbeats for `rejoin_after`, the same steadiness F3
            // asks of a newer primary, so a flapping link does not flap write availability.
            let gapless = standby.is_some_and(|(_, at)| at.elapsed() <= 3 * node.cfg.heartbeat);
            let warm_up = node.cfg.rejoin_after;
            let answers = steady_standby && following;
            let ready = if self.warm_up && !(answers && gapless) {
                if self.stable_since.take().is_some() {
                    log::warn("warm-up interrupted: the standby went unheard; writes stay refused");
                }
                false
            } else if !answers {
                false
            } else if !self.warm_up {
                true
            } else {
                let since = *self.stable_since.get_or_insert_with(|| {
                    log::info(&format!(
                        "the standby answers again: warming up, writes resume after {warm_up:?} of stable links"
                    ));
                    Instant::now()
                });
                since.elapsed() >= warm_up
            };
            if ready {
                store.set_write_lease(Some(left));
                store.set_write_mode(WriteMode::Writable);
                self.fenced_by_me = false;
                self.stable_since = None;
                log::info(&format!(
                    "the standby answers: writes resumed (unfenced){}",
                    if self.warm_up { " after the warm-up" } else { "" }
                ));
                self.warm_up = false;
                node.status.event("unfenced: the standby answers");
            }
        }
        Verdict::Stay
    }

    fn fence(&mut self, node: &Node, store: &Store, why: &str) {
        if store.write_mode() == WriteMode::Writable {
            store.set_write_mode(WriteMode::Fenced);
            self.fenced_by_me = true;
            self.warm_up = true;
            self.stable_since = None;
            log::error(&format!("fenced: writes refused: {why}"));
            node.status.event(&format!("fenced: {why}"));
        }
    }

    /// Whether we fenced the segment ourselves.
    pub fn fenced_by_me(&self) -> bool {
        self.fenced_by_me
    }

    /// A planned switchover took writes away; the guard must not give them back.
    pub fn handed_over(&mut self) {
        self.fenced_by_me = false;
    }
}

/// The standby's failover watchdog (F1), evaluated once per heartbeat. `last_frame`: when
/// the primary's TCP stream last delivered a frame. Returns true once it promoted the segment.
pub fn failover_round(node: &Node, store: &Store, last_frame: Option<Instant>, since: Instant) -> bool {
    let epoch = store.epoch();
    let synced = store.history_id() != 0 && store.write_mode() == WriteMode::Replica;
    report_peers(node);
    node.status.set_epoch(epoch, store.history_id());
    let after = node.cfg.failover_after;
    // The arrival of the primary's last datagram (fenced or not), not the echo proof: a
    // datagram that reaches us late restarts this clock late, so every datagram of the
    // primary's that we echo (its write lease rests on those) restarted it at or after it
    // was sent (config.rs, "Why fencing comes first").
    let primary = node.beacon.last_heard(NodeRole::Primary, |_| true);
    let heard = [primary, last_frame].into_iter().flatten().max().unwrap_or(since);
    let witness = node.beacon.last_alive(NodeRole::Witness).filter(|(_, at)| at.elapsed() <= FRESH);
    // F1 (a)-(c): then it claims the next epoch from the witness (W1 in `witness`).
    let eligible = node.has_witness()
        && synced
        && heard.elapsed() >= after
        && witness.is_some_and(|(w, _)| Duration::from_millis(u64::from(w.primary_age_ms)) >= after);
    node.beacon.announce(Announce {
        role: NodeRole::Standby,
        fenced: true,
        synced,
        claim: eligible,
        epoch,
        history: store.history_id(),
        pos: store.replicated_upto(),
    });
    let Some((w, _)) = witness.filter(|_| eligible) else {
        return false;
    };
    // F1 (d): only with the witness's grant of an epoch to this very node, and exactly that
    // epoch: the witness grants each epoch once, so no other node promotes to it.
    let granted = w.announce.claim && w.announce.pos == node.beacon.node_id() && w.announce.history > epoch;
    if !granted {
        return false;
    }
    let new_epoch = store.raise_epoch(w.announce.history);
    announce_primary(node, store);
    store.set_write_mode(WriteMode::Writable);
    node.status.event(&format!("automatic failover: promoted to epoch {new_epoch}"));
    log::warn(&format!(
        "automatic failover: no primary for {:?} here and {} ms at the witness: promoted segment {} to epoch {new_epoch}",
        heard.elapsed(),
        w.primary_age_ms,
        node.cfg.segment
    ));
    true
}

/// F3: a newer primary exists, so the writes here that no standby acknowledged (feed
/// position at or above `replicated_upto`, i.e. version above it) are an abandoned history
/// the new primary never had. They are removed at once, before the node follows anyone:
/// local readers must not see them (they used to, until the snapshot replaced them). What
/// the standby acknowledged is in the new history and stays readable.
fn abandon_unacknowledged(node: &Node, store: &Store) {
    // Writes that saw the segment writable before the fence finish first (or are given up
    // on: a stopped worker), so none lands after the scan.
    let drained = store.drain_writers(Duration::from_secs(1));
    let acked = store.replicated_upto();
    let mut abandoned = Vec::new();
    let scanned = store.scan(|e| {
        if e.meta.version > acked {
            abandoned.push(e.key);
        }
    });
    let removed = abandoned.iter().filter(|k| store.apply_replicated_delete(k).unwrap_or(false)).count();
    let what = format!(
        "abandoned history: removed {removed} entries written here after the standby's last acknowledged \
         position {acked} (the newer primary never had them){}{}",
        if drained { "" } else { "; a writer still inside its write was not waited for" },
        match scanned {
            Ok(()) => String::new(),
            Err(e) => format!("; the scan stopped: {e}"),
        }
    );
    log::warn(&what);
    node.status.event(&what);
}

/// Tells the status which peers proved themselves alive in the last heartbeat period.
fn report_peers(node: &Node) {
    for role in [NodeRole::Primary, NodeRole::Standby, NodeRole::Witness] {
        if node.beacon.last_alive(role).is_some_and(|(_, at)| at.elapsed() <= 2 * node.cfg.heartbeat) {
            node.status.heartbeat_from(role.name());
        }
    }
}

/// Announces this node as the primary of its segment's (new) epoch at once, rather than at
/// the next round: a standby that just promoted itself must not go on saying "standby".
pub fn announce_primary(node: &Node, store: &Store) {
    node.beacon.announce(Announce {
        role: NodeRole::Primary,
        fenced: false,
        synced: true,
        claim: false,
        epoch: store.epoch(),
        history: store.history_id(),
        pos: store.feed_head(),
    });
}
