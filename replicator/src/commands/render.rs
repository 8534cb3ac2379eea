//! What `stats`, `check` and `get --meta` print: for a person (aligned labels, units,
//! percentages) and for a program (`--json`: one object whose field names are a stable
//! interface, documented in replicator/README.md, independent of the engine's Rust names).
//!
//! The JSON carries `"schema": 1`; fields may be added within a schema version, never
//! renamed, removed or given another meaning. The `replication` object joins the segment's
//! replication header words with what its daemon publishes in its status file (`status`).

use crate::commands::escape::escape;
use crate::commands::units::{format_bytes, format_count, format_duration, format_percent};
use crate::operations::status::{DaemonState, StatusReport, unix_ms_now};
use gardenstate::{CheckReport, Info, Meta, Stats, WriteMode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

pub const STATS_SCHEMA: u32 = 1;

pub fn write_mode_name(m: WriteMode) -> &'static str {
    match m {
        WriteMode::Writable => "writable",
        WriteMode::Replica => "replica",
        WriteMode::Fenced => "fenced",
    }
}

/// `write_mode` (JSON, `/metrics`) of a writable segment whose write lease ran out: workers'
/// writes fail with `ReadOnly`, so it must never read `writable`.
pub const LEASE_LAPSED: &str = "lease_lapsed";

/// Whether workers' writes are refused by a lapsed write lease although the mode is writable.
pub fn lease_lapsed(store: &gardenstate::Store) -> bool {
    store.write_mode() == WriteMode::Writable && store.write_lease_left() == Some(Duration::ZERO)
}

/// Whether workers' writes succeed: writable, and the write lease (if any) not lapsed.
pub fn takes_writes(store: &gardenstate::Store) -> bool {
    store.write_mode() == WriteMode::Writable && !lease_lapsed(store)
}

/// The write mode as workers meet it (`lapsed`: [`lease_lapsed`]).
pub fn effective_mode_name(m: WriteMode, lapsed: bool) -> &'static str {
    if lapsed && m == WriteMode::Writable { LEASE_LAPSED } else { write_mode_name(m) }
}

/// The same for people.
fn effective_mode_text(m: WriteMode, lapsed: bool) -> &'static str {
    if lapsed && m == WriteMode::Writable { "read-only (lease lapsed)" } else { write_mode_name(m) }
}

/// `stats --json`.
#[derive(Debug, Serialize)]
pub struct StatsJson<'a> {
    pub schema: u32,
    pub segment: &'a str,
    pub path: String,
    pub write_mode: &'static str,
    pub info: InfoJson,
    pub stats: CountersJson,
    pub derived: DerivedJson,
    pub replication: ReplicationJson,
}

#[derive(Debug, Serialize)]
pub struct InfoJson {
    pub segment_bytes: u64,
    pub heap_bytes: u64,
    pub page_size: u64,
    pub max_entries: u64,
    pub index_slots: u64,
    pub max_key: u64,
    pub max_value: u64,
    pub max_clients: u64,
    pub feed_len: u64,
    pub evict: bool,
    /// 16 hex digits: a u64 does not survive a JSON parser that reads numbers as doubles.
    pub dataset_id: String,
}

#[derive(Debug, Serialize)]
pub struct CountersJson {
    pub live_entries: u64,
    pub bytes_used: u64,
    pub bytes_free: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub expirations: u64,
    pub evictions: u64,
    pub touches: u64,
    pub locks: u64,
    pub lock_contentions: u64,
    pub lock_takeovers: u64,
    pub dead_reclaims: u64,
    pub sweeps: u64,
    pub clients: u64,
    pub feed_head: u64,
    pub failed_writes: FailedWritesJson,
}

/// Worker writes that failed, by cause (engine `Stats::failed_*`).
#[derive(Debug, Serialize)]
pub struct FailedWritesJson {
    pub full: u64,
    pub too_large: u64,
    pub read_only: u64,
    pub locked: u64,
}

#[derive(Debug, Serialize)]
pub struct DerivedJson {
    /// hits / (hits + misses); null before the first read.
    pub hit_ratio: Option<f64>,
    /// bytes_used / heap_bytes.
    pub heap_used_ratio: f64,
    /// live_entries / max_entries.
    pub entries_ratio: f64,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

pub fn stats_json<'a>(
    name: &'a str,
    path: String,
    mode: WriteMode,
    info: &Info,
    s: &Stats,
    repl: &Replication,
) -> StatsJson<'a> {
    let reads = s.hits + s.misses;
    StatsJson {
        schema: STATS_SCHEMA,
        segment: name,
        path,
        write_mode: effective_mode_name(mode, repl.lease_lapsed),
        info: InfoJson {
            segment_bytes: info.segment_bytes,
            heap_bytes: info.heap_bytes,
            page_size: info.page_size,
            max_entries: info.max_entries,
            index_slots: info.index_slots,
            max_key: info.max_key,
            max_value: info.max_value,
            max_clients: info.max_clients,
            feed_len: info.feed_len,
            evict: info.evict,
            dataset_id: format!("{:016x}", info.dataset_id),
        },
        stats: CountersJson {
            live_entries: s.live_entries,
            bytes_used: s.bytes_used,
            bytes_free: s.bytes_free,
            hits: s.hits,
            misses: s.misses,
            sets: s.sets,
            deletes: s.deletes,
            expirations: s.expirations,
            evictions: s.evictions,
            touches: s.touches,
            locks: s.locks,
            lock_contentions: s.lock_contentions,
            lock_takeovers: s.lock_takeovers,
            dead_reclaims: s.dead_reclaims,
            sweeps: s.sweeps,
            clients: s.clients,
            feed_head: s.feed_head,
            failed_writes: FailedWritesJson {
                full: s.failed_full,
                too_large: s.failed_too_large,
                read_only: s.failed_read_only,
                locked: s.failed_locked,
            },
        },
        derived: DerivedJson {
            hit_ratio: (reads > 0).then(|| ratio(s.hits, reads)),
            heap_used_ratio: ratio(s.bytes_used, info.heap_bytes),
            entries_ratio: ratio(s.live_entries, info.max_entries),
        },
        replication: replication_json(repl, unix_ms_now()),
    }
}

/// What `stats` knows about a segment's replication: its header words, and its daemon as
/// found through the status file.
#[derive(Debug, Clone)]
pub struct Replication {
    pub mode: WriteMode,
    /// The mode is writable but the write lease ran out ([`lease_lapsed`]).
    pub lease_lapsed: bool,
    pub epoch: u64,
    pub history: u64,
    pub feed_head: u64,
    pub replicated_upto: u64,
    pub status_file: String,
    pub daemon: DaemonState,
}

/// When a peer of a role last sent a valid heartbeat.
#[derive(Debug, Serialize)]
pub struct HeartbeatJson {
    pub unix_ms: u64,
    pub ago_ms: u64,
}

/// The daemon's last notable event.
#[derive(Debug, Serialize)]
pub struct EventJson {
    pub text: String,
    pub unix_ms: u64,
    pub ago_ms: u64,
}

/// `stats --json`'s `replication` object. The segment's own fields are always set; the
/// daemon's are null when there is no readable status file, and are its last report (as of
/// `status_age_ms` ago) when it is stale.
#[derive(Debug, Serialize)]
pub struct ReplicationJson {
    /// "running", "stale" (a status file older than 3 s, or whose pid is gone: the daemon
    /// is not running), "none" (no status file: no daemon), "unreadable".
    pub daemon: &'static str,
    pub daemon_running: bool,
    pub status_file: String,
    pub status_error: Option<String>,
    pub status_age_ms: Option<u64>,
    pub pid: Option<u32>,
    pub pid_alive: Option<bool>,
    pub epoch: u64,
    pub history: String,
    pub feed_head: u64,
    pub replicated_upto: u64,
    /// feed_head - replicated_upto on a writable or fenced segment that has a standby (one
    /// acknowledged a change, or the primary daemon has had one connected); null on a replica
    /// and on a segment never replicated (where it would be the whole feed: a false lag).
    pub unacknowledged: Option<u64>,
    pub role: Option<String>,
    pub daemon_epoch: Option<u64>,
    pub uptime_ms: Option<u64>,
    pub peer: Option<String>,
    pub connected: Option<bool>,
    pub connections: Option<u64>,
    pub lag_entries: Option<u64>,
    pub lag_ms: Option<u64>,
    pub shipped_frames: Option<u64>,
    pub shipped_bytes: Option<u64>,
    pub applied_entries: Option<u64>,
    pub applied_bytes: Option<u64>,
    pub frames_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    pub applied_entries_per_s: Option<f64>,
    pub applied_bytes_per_s: Option<f64>,
    pub rate_window_ms: Option<u64>,
    pub resyncs: Option<u64>,
    pub heartbeats: Option<BTreeMap<String, HeartbeatJson>>,
    pub last_event: Option<EventJson>,
}

fn daemon_word(d: &DaemonState) -> &'static str {
    match d {
        DaemonState::None => "none",
        DaemonState::Unreadable(_) => "unreadable",
        DaemonState::Found { running: true, .. } => "running",
        DaemonState::Found { running: false, .. } => "stale",
    }
}

pub fn replication_json(r: &Replication, now_unix_ms: u64) -> ReplicationJson {
    let report: Option<&StatusReport> = match &r.daemon {
        DaemonState::Found { report, .. } => Some(report),
        _ => None,
    };
    let (age, pid_alive) = match &r.daemon {
        DaemonState::Found { age_ms, pid_alive, .. } => (Some(*age_ms), Some(*pid_alive)),
        _ => (None, None),
    };
    let ago = |t: u64| now_unix_ms.saturating_sub(t);
    let f = |get: fn(&StatusReport) -> u64| report.map(get);
    ReplicationJson {
        daemon: daemon_word(&r.daemon),
        daemon_running: matches!(r.daemon, DaemonState::Found { running: true, .. }),
        status_file: r.status_file.clone(),
        status_error: match &r.daemon {
            DaemonState::Unreadable(e) => Some(e.clone()),
            _ => None,
        },
        status_age_ms: age,
        pid: report.map(|x| x.pid),
        pid_alive,
        epoch: r.epoch,
        history: format!("{:016x}", r.history),
        feed_head: r.feed_head,
        replicated_upto: r.replicated_upto,
        unacknowledged: has_standby(r, report).then(|| r.feed_head.saturating_sub(r.replicated_upto)),
        role: report.map(|x| x.role.clone()),
        daemon_epoch: f(|x| x.epoch),
        uptime_ms: f(|x| x.uptime_ms),
        peer: report.and_then(|x| x.peer.clone()),
        connected: report.map(|x| x.connected),
        connections: f(|x| x.connections),
        lag_entries: report.and_then(|x| x.lag_entries),
        lag_ms: report.and_then(|x| x.lag_ms),
        shipped_frames: f(|x| x.shipped_frames),
        shipped_bytes: f(|x| x.shipped_bytes),
        applied_entries: f(|x| x.applied_entries),
        applied_bytes: f(|x| x.applied_bytes),
        frames_per_s: report.map(|x| x.rates.frames_per_s),
        bytes_per_s: report.map(|x| x.rates.bytes_per_s),
        applied_entries_per_s: report.map(|x| x.rates.applied_entries_per_s),
        applied_bytes_per_s: report.map(|x| x.rates.applied_bytes_per_s),
        rate_window_ms: f(|x| x.rates.window_ms),
        resyncs: f(|x| x.resyncs),
        heartbeats: report.map(|x| {
            x.last_heartbeat_unix_ms
                .iter()
                .map(|(role, &t)| (role.clone(), HeartbeatJson { unix_ms: t, ago_ms: ago(t) }))
                .collect()
        }),
        last_event: report.and_then(|x| x.last_event.as_ref()).map(|e| EventJson {
            text: e.text.clone(),
            unix_ms: e.unix_ms,
            ago_ms: ago(e.unix_ms),
        }),
    }
}

/// Whether `r` is a primary with a standby: not a replica, and a standby acknowledged a change
/// (`replicated_upto` above 0) or its daemon has had a peer connected.
fn has_standby(r: &Replication, report: Option<&StatusReport>) -> bool {
    r.mode != WriteMode::Replica
        && (r.replicated_upto > 0 || report.is_some_and(|x| x.role == "primary" && x.connections > 0))
}

fn ago_text(now_unix_ms: u64, t: u64) -> String {
    format!("{} ago", format_duration(Duration::from_millis(now_unix_ms.saturating_sub(t))))
}

/// The `Replication` section of `stats` for a person.
fn replication_human(t: &mut Table, r: &Replication, now_unix_ms: u64) {
    t.section("Replication");
    let ms = |v: u64| format_duration(Duration::from_millis(v));
    let report = match &r.daemon {
        DaemonState::None => {
            t.row("daemon", format!("no replication daemon (no status file {})", r.status_file));
            None
        }
        DaemonState::Unreadable(e) => {
            t.row("daemon", format!("unknown: {e}"));
            None
        }
        DaemonState::Found { report, age_ms, pid_alive, running } => {
            if *running {
                t.row("daemon", format!("running, pid {} (status {} old)", report.pid, ms(*age_ms)));
            } else {
                let why = if *pid_alive {
                    format!("pid {} exists but stopped publishing: hung?", report.pid)
                } else {
                    format!("pid {} is gone", report.pid)
                };
                t.row(
                    "daemon",
                    format!("NOT RUNNING: status file {} old, {why}; below is its last report", ms(*age_ms)),
                );
            }
            Some(report)
        }
    };
    t.row("write mode", effective_mode_text(r.mode, r.lease_lapsed));
    t.row("epoch", format!("{} (history {:016x})", r.epoch, r.history));
    let report_of = match &r.daemon {
        DaemonState::Found { report, .. } => Some(&**report),
        _ => None,
    };
    if r.mode != WriteMode::Replica && !has_standby(r, report_of) {
        t.row("acknowledged", "no standby has followed this segment");
    } else if r.mode != WriteMode::Replica {
        t.row(
            "acknowledged",
            format!(
                "{} of feed head {} ({} changes not acknowledged by a standby)",
                format_count(r.replicated_upto),
                format_count(r.feed_head),
                format_count(r.feed_head.saturating_sub(r.replicated_upto))
            ),
        );
    }
    let Some(x) = report else { return };
    t.row("role", escape(x.role.as_bytes()));
    if x.epoch != r.epoch {
        t.row("daemon epoch", x.epoch);
    }
    t.row("uptime", ms(x.uptime_ms));
    t.row(
        "peer",
        match &x.peer {
            Some(p) => format!(
                "{}, {}",
                escape(p.as_bytes()),
                if x.connected { "connected" } else { "not connected" }
            ),
            None => "none".into(),
        },
    );
    t.row(
        "lag",
        match (x.lag_entries, x.lag_ms) {
            (Some(e), Some(l)) => format!("{} entries, {}", format_count(e), ms(l)),
            (Some(e), None) => format!("{} entries", format_count(e)),
            _ => "unknown (no acknowledgement yet)".into(),
        },
    );
    let window = if x.rates.window_ms == 0 {
        "(no rate before a second report)".to_string()
    } else {
        format!("over {}", ms(x.rates.window_ms))
    };
    // "N <unit>/s, B/s <window> (total N <unit>, B)": the rates of the last window, then totals.
    let flow = |unit: &str, per_s: f64, bytes_per_s: f64, total: u64, total_bytes: u64| {
        format!(
            "{} {unit}/s, {}/s {window} (total {} {unit}, {})",
            format_count(per_s.round() as u64),
            format_bytes(bytes_per_s.round() as u64),
            format_count(total),
            format_bytes(total_bytes)
        )
    };
    let rates = &x.rates;
    if x.shipped_frames > 0 || x.role == "primary" {
        t.row(
            "shipped",
            flow("frames", rates.frames_per_s, rates.bytes_per_s, x.shipped_frames, x.shipped_bytes),
        );
    }
    if x.applied_entries > 0 || x.role == "standby" {
        let (per_s, bytes_per_s) = (rates.applied_entries_per_s, rates.applied_bytes_per_s);
        t.row("applied", flow("entries", per_s, bytes_per_s, x.applied_entries, x.applied_bytes));
    }
    t.row(
        "heartbeats",
        if x.last_heartbeat_unix_ms.is_empty() {
            "none received".to_string()
        } else {
            x.last_heartbeat_unix_ms
                .iter()
                .map(|(role, &at)| format!("{} {}", escape(role.as_bytes()), ago_text(now_unix_ms, at)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    t.row("resyncs", format_count(x.resyncs));
    if let Some(e) = &x.last_event {
        t.row("last event", format!("{} ({})", escape(e.text.as_bytes()), ago_text(now_unix_ms, e.unix_ms)));
    }
}

/// Two aligned columns under section titles.
struct Table {
    out: String,
}

impl Table {
    fn section(&mut self, title: &str) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        let _ = writeln!(self.out, "{title}");
    }

    fn row(&mut self, label: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "  {label:<16} {value}");
    }
}

/// `stats` for a person.
pub fn stats_human(
    name: &str,
    path: &str,
    mode: WriteMode,
    info: &Info,
    s: &Stats,
    repl: &Replication,
) -> String {
    let mut t = Table { out: String::new() };
    t.section(&format!("Segment {name} ({path})"));
    t.row("write mode", effective_mode_text(mode, repl.lease_lapsed));
    t.row("dataset id", format!("{:016x}", info.dataset_id));

    t.section("Entries");
    t.row(
        "live",
        format!(
            "{} of {} max ({})",
            format_count(s.live_entries),
            format_count(info.max_entries),
            format_percent(s.live_entries, info.max_entries)
        ),
    );
    t.row("index slots", format_count(info.index_slots));

    t.section("Memory");
    t.row(
        "heap used",
        format!("{} ({})", format_bytes(s.bytes_used), format_percent(s.bytes_used, info.heap_bytes)),
    );
    t.row(
        "heap free",
        format!("{} ({})", format_bytes(s.bytes_free), format_percent(s.bytes_free, info.heap_bytes)),
    );
    t.row("heap size", format_bytes(info.heap_bytes));
    t.row("segment size", format_bytes(info.segment_bytes));
    t.row("page size", format_bytes(info.page_size));

    t.section("Operations");
    let reads = s.hits + s.misses;
    t.row("hits", format_count(s.hits));
    t.row("misses", format_count(s.misses));
    t.row(
        "hit ratio",
        if reads == 0 { "n/a (no reads yet)".to_string() } else { format_percent(s.hits, reads) },
    );
    t.row("sets", format_count(s.sets));
    t.row("deletes", format_count(s.deletes));
    t.row("touches", format_count(s.touches));
    t.row("expirations", format_count(s.expirations));
    t.row("evictions", format_count(s.evictions));
    t.row("sweeps", format_count(s.sweeps));
    t.row(
        "failed writes",
        format!(
            "{} full, {} too large, {} read-only, {} locked",
            format_count(s.failed_full),
            format_count(s.failed_too_large),
            format_count(s.failed_read_only),
            format_count(s.failed_locked)
        ),
    );

    t.section("Session locks");
    t.row("taken", format_count(s.locks));
    t.row("contended", format_count(s.lock_contentions));
    t.row("taken over", format_count(s.lock_takeovers));

    t.section("Clients");
    t.row("attached", format!("{} of {} max", format_count(s.clients), format_count(info.max_clients)));
    t.row("dead reclaimed", format_count(s.dead_reclaims));

    t.section("Change feed");
    t.row("head", format_count(s.feed_head));
    t.row("ring length", format_count(info.feed_len));

    t.section("Limits");
    t.row("max key", format_bytes(info.max_key));
    t.row("max value", format_bytes(info.max_value));
    t.row(
        "when full",
        if info.evict { "evict (closest to expiry first)" } else { "fail with \"store full\"" },
    );

    replication_human(&mut t, repl, unix_ms_now());
    t.out
}

/// `check --json`.
#[derive(Debug, Serialize)]
pub struct CheckJson<'a> {
    pub schema: u32,
    pub segment: &'a str,
    pub healthy: bool,
    pub entries: u64,
    pub blocks_in_use: u64,
    pub leaked_blocks: u64,
    pub hidden_free_blocks: u64,
    pub stale_free_bits: u64,
    pub dead_clients: u64,
    /// Suspect states that stayed held by an operation in flight of a live process: not damage.
    pub in_flight: u64,
    pub problems: &'a [String],
}

pub fn check_json<'a>(name: &'a str, r: &'a CheckReport) -> CheckJson<'a> {
    CheckJson {
        schema: STATS_SCHEMA,
        segment: name,
        healthy: r.problems.is_empty(),
        entries: r.entries,
        blocks_in_use: r.blocks_in_use,
        leaked_blocks: r.leaked_blocks,
        hidden_free_blocks: r.hidden_free_blocks,
        stale_free_bits: r.stale_free_bits,
        dead_clients: r.dead_clients,
        in_flight: r.in_flight,
        problems: &r.problems,
    }
}

/// `check` for a person.
pub fn check_human(name: &str, r: &CheckReport) -> String {
    let mut out = String::new();
    if r.problems.is_empty() {
        let _ = writeln!(out, "segment {name} is healthy");
    } else {
        let _ = writeln!(out, "segment {name} is DAMAGED: {} problem(s)", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    let mut t = Table { out: String::new() };
    t.row("entries", format_count(r.entries));
    t.row("blocks in use", format_count(r.blocks_in_use));
    t.row("leaked blocks", format_count(r.leaked_blocks));
    t.row("hidden free", format_count(r.hidden_free_blocks));
    t.row("stale free bits", format!("{} (harmless)", format_count(r.stale_free_bits)));
    t.row("dead clients", format!("{} (the next sweep reclaims them)", format_count(r.dead_clients)));
    t.row("in flight", format!("{} (held by operations in progress: not damage)", format_count(r.in_flight)));
    out + &t.out
}

/// `get --meta`.
pub fn meta_human(m: &Meta) -> String {
    let mut t = Table { out: String::new() };
    t.row("version", m.version);
    t.row("length", format!("{} bytes", format_count(m.len as u64)));
    t.row("ttl", m.ttl_left.map_or("never expires".to_string(), |d| format!("{} left", format_duration(d))));
    t.row(
        "sliding",
        m.sliding
            .map_or("no (fixed deadline)".to_string(), |d| format!("yes, window {}", format_duration(d))),
    );
    t.row(
        "lock",
        m.lock
            .map_or("none".to_string(), |l| format!("id {}, held for {}", l.lock_id, format_duration(l.age))),
    );
    t.out
}
